/* server/c2s_flow.c - flow control for streams without XEP-0198: a slow
 * reader slows its senders down instead of being cut off by them.
 *
 * A stream with stream management is held to its queue's bounds (c2s_sm.c).
 * One without has only the transport's output: what the peer has not read
 * yet. Measured in those bytes, against [limits] max_send_queue (the
 * transport closes a connection past it, which a burst from someone else
 * must never cause):
 * - past a quarter, the session is marked congested: whoever routes a
 *   stanza to it stops parsing and reading for a while (c2s_flow_hold), on
 *   any worker, so what it sent next waits in its own stream; the mark
 *   goes below an eighth;
 * - past a half (many senders at once, or a burst from another worker that
 *   came before the mark was seen), a stanza that still arrives goes back
 *   to its sender with resource-constraint (RFC 6120 §8.3.3.18): answered,
 *   never dropped in silence, and the receiver's connection never reaches
 *   the transport's limit because of others (an error, which has nobody
 *   to go back to, goes out up to three quarters, and is dropped past
 *   them: counted and logged);
 * - only the receiver's own failure to read ends its stream: congested
 *   and not a byte drained for [sm] ack_timeout seconds, policy-violation. */
#include "c2s_priv.h"

#include <string.h>

#include "tether/deliver.h"
#include "tether/log.h"
#include "tether/ratelimit.h"
#include "tether/timer.h"

static size_t unsent(const struct c2s *s)
{
	return s->tp->unsent ? s->tp->unsent(s->io) : 0;
}

/* Marks or clears congestion; while congested, the read deadline runs. */
static void flow_update(struct c2s *s, size_t bytes)
{
	size_t max = s->srv->cfg.max_send_queue;
	if (!(s->flags & C2S_F_CONGESTED) && bytes >= max / 4) {
		s->flags |= C2S_F_CONGESTED;
		router_set_congested(s->srv->router, s->bare, s->resource, &s->self, 1);
		s->flow_mark = bytes;
		s->tp->set_timer(s->io, C2S_TIMER_ACK, s->srv->cfg.sm_ack_timeout * 1000u);
	} else if ((s->flags & C2S_F_CONGESTED) && bytes <= max / 8) {
		c2s_sm_uncongest(s);
		s->tp->set_timer(s->io, C2S_TIMER_ACK, 0);
	}
}

/* Past what a stanza may find unsent: half of max_send_queue; an error
 * (a bounce coming back to this stream's own sender) up to three
 * quarters, since it cannot be answered in turn and a burst of them
 * comes in one loop turn, before the flush. */
static int over(const struct c2s *s, const struct rmsg *m, size_t bytes)
{
	size_t max = s->srv->cfg.max_send_queue;
	return bytes + m->len > (strcmp(m->type, "error") ? max / 2 : max / 4 * 3);
}

void c2s_flow_deliver(struct c2s *s, struct rmsg *m)
{
	size_t bytes = unsent(s);
	if (over(s, m, bytes)) {
		static struct ratelimit_log rl;
		uint64_t skipped;
		metrics_inc(M_LIMIT_SEND_QUEUE);
		if (ratelimit_log_due(&rl, timer_now_ms(), &skipped))
			log_info("c2s %s: %zu bytes not read yet: %s (%llu more not logged)", s->full,
				 bytes, strcmp(m->type, "error") ? "stanza returned to its sender" :
				 "error stanza dropped", (unsigned long long)skipped);
		deliver_bounce(s->w, s->srv->cfg.domain, m, STE_RESOURCE_CONSTRAINT);
		rmsg_unref(m);
		flow_update(s, bytes);
		return;
	}
	c2s_count_out(m);
	s->tp->send(s->io, m->data, m->len);
	bytes += m->len;
	rmsg_unref(m);
	flow_update(s, bytes);
}

int c2s_flow_hold(struct c2s *s)
{
	if (!(s->flags & C2S_F_BACKOFF)) {
		s->pause_ms = 0;
		return 0;
	}
	s->flags &= ~C2S_F_BACKOFF;
	if (s->state != C2S_ACTIVE)
		return 0;
	s->pause_ms = s->pause_ms ? s->pause_ms * 2 : C2S_PAUSE_MS;
	if (s->pause_ms > C2S_PAUSE_MAX_MS)
		s->pause_ms = C2S_PAUSE_MAX_MS;
	s->flags |= C2S_F_FLOW | C2S_F_HOLD;
	metrics_inc(M_FLOW_BACKPRESSURE);
	s->tp->pause_read(s->io, s->pause_ms);
	return 1;
}

void c2s_flow_unpaused(struct c2s *s)
{
	if (!(s->flags & C2S_F_FLOW))
		return;
	s->flags &= ~C2S_F_FLOW;
	c2s_unpark(s);
}

void c2s_flow_drained(struct c2s *s)
{
	if (s->flags & C2S_F_CONGESTED)
		flow_update(s, unsent(s));
}

void c2s_flow_timeout(struct c2s *s)
{
	if (!(s->flags & C2S_F_CONGESTED) || s->state != C2S_ACTIVE)
		return;
	size_t bytes = unsent(s);
	if (bytes < s->flow_mark) {
		/* It reads, slowly: another ack_timeout to drain. */
		s->flow_mark = bytes;
		s->tp->set_timer(s->io, C2S_TIMER_ACK, s->srv->cfg.sm_ack_timeout * 1000u);
		return;
	}
	c2s_stream_fail(s, SE_POLICY_VIOLATION, "output not read for too long");
}
