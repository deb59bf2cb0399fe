/* server/c2s_remote.c - messages, iqs and directed presence through the
 * shared store: appended to the queues of the recipient's XEP-0198
 * sessions, or handed to its sessions without one, wherever they live.
 *
 * Route to sessions, not connections: with a store shared between nodes,
 * a message or iq for an account goes first to one call (tether_deliver on
 * Redis, with the other deliveries of the loop turn: redis_deliver.c) that
 * finds the target sessions in the account's directory,
 * appends the stanza to each one's queue, which numbers it, and tells the
 * owning node. Sessions of this node are told at once, from the reply;
 * other nodes through their inboxes. A session without XEP-0198 has a
 * direct entry there (c2s_direct.c): the stanza goes to its node's inbox,
 * or, on this node, straight to it through the bus. Only what finds no
 * session there goes to this node's router, then RFC 6121's
 * undeliverable rules. Nothing is forwarded between nodes, and the
 * sender's <a h/> waits for the call (h_writes): what the client is told
 * it handed over is in a queue, so a node killed a moment later loses
 * none of it. */
#include "c2s_priv.h"

#include <string.h>

#include "tether/deliver.h"
#include "tether/im.h"
#include "tether/jid.h"
#include "tether/log.h"
#include "tether/metrics.h"
#include "tether/offline.h"
#include "tether/ratelimit.h"
#include "tether/rmsg.h"
#include "tether/sm.h"
#include "tether/store.h"
#include "tether/timer.h"

/* What finds no session: RFC 6121 §8.5. A chat or normal message for an
 * account (<bare>, NULL if not known) is stored offline (§8.5.2.2,
 * XEP-0160: offline.c, in the shared store), anything else bounced or
 * dropped. <m> stays the caller's. */
static void undeliverable(struct c2s *s, int err, struct rmsg *m, const char *bare)
{
	if (err) {
		static struct ratelimit_log rl;
		uint64_t skipped;
		if (ratelimit_log_due(&rl, timer_now_ms(), &skipped))
			log_warn("c2s %s: delivery through the store failed (%d; %llu more not logged)",
				 s->full, err, (unsigned long long)skipped);
	}
	if (m->kind == RMSG_PRESENCE || !strcmp(m->type, "headline"))
		return; /* nobody to show it to: dropped, as RFC 6121 says */
	if (!err && bare && m->kind == RMSG_MESSAGE && offline_wanted(m->type)) {
		offline_store(s->w, s->srv->cfg.domain, bare, rmsg_ref(m), sm_wall_ms(),
			      STE_SERVICE_UNAVAILABLE);
		return;
	}
	deliver_bounce(s->w, s->srv->cfg.domain, m,
		       err ? STE_INTERNAL_SERVER_ERROR : STE_SERVICE_UNAVAILABLE);
}

static int issue(struct c2s *s, const char *bare, const char *resource, struct rmsg *m);

/* To the account's bare JID: in queues, else this node's sessions without
 * XEP-0198, else undeliverable. */
/* The sender's session was taken over before its stanza was routed: not
 * delivered, and not counted where the session is now; the client sends
 * it again there. */
static int sender_moved(struct c2s *s, int err)
{
	if (err != -ESTALE)
		return 0;
	c2s_sm_moved(s);
	return 1;
}

static void on_delivered_bare(void *ud, int err, const struct store_target *t, size_t n,
			      struct rmsg *m)
{
	struct c2s *s = ud;
	struct jid j; /* ~3 KiB on the stack: the rare path */
	char bare[2 * JID_PART_MAX + 2];
	c2s_sm_h_done(s);
	if (sender_moved(s, err) || deliver_blocked(s->w, err, m))
		return;
	if (!err && n) {
		deliver_told(s->w, t, n, m);
		return;
	}
	if (err || jid_parse(m->to, &j) || jid_bare(&j, bare, sizeof(bare)) < 0) {
		undeliverable(s, err, m, NULL);
		return;
	}
	if (deliver_message_bare(s->w, bare, rmsg_ref(m), NULL))
		return;
	undeliverable(s, 0, m, bare);
}

/* To a full JID: in that session's queue; else that resource on this node
 * without XEP-0198; else a chat or normal message goes to the account's
 * other resources (RFC 6121 §8.5.3.2.1). */
static void on_delivered_full(void *ud, int err, const struct store_target *t, size_t n,
			      struct rmsg *m)
{
	struct c2s *s = ud;
	struct jid j;
	char bare[2 * JID_PART_MAX + 2];
	c2s_sm_h_done(s);
	if (sender_moved(s, err) || deliver_blocked(s->w, err, m))
		return;
	if (!err && n) {
		deliver_told(s->w, t, n, m);
		return;
	}
	if (err || jid_parse(m->to, &j) || jid_bare(&j, bare, sizeof(bare)) < 0) {
		undeliverable(s, err, m, NULL);
		return;
	}
	if (deliver_full(s->w, bare, j.resource, rmsg_ref(m)) == 0)
		return;
	if (m->kind == RMSG_MESSAGE && im_chat_or_normal(m->type))
		issue(s, bare, "", rmsg_ref(m)); /* bounces it itself if it cannot */
	else
		undeliverable(s, 0, m, NULL);
}

/* Takes <m>. 1 if issued (its callback decides), 0 if not (out of memory:
 * <m> bounced). */
static int issue(struct c2s *s, const char *bare, const char *resource, struct rmsg *m)
{
	/* The sender's count, if not written yet, goes in the same call. */
	struct store_sender from = { .bare = s->bare, .sid = s->sm.id, .epoch = s->sm.epoch,
				     .h_in = s->sm.c.h_in };
	int with_h = (s->flags & (C2S_F_H_DIRTY | C2S_F_SM)) == (C2S_F_H_DIRTY | C2S_F_SM);
	struct store_op *op = store_deliver_async(c2s_store(s), bare, resource, m,
						  with_h ? &from : NULL,
						  resource[0] ? on_delivered_full : on_delivered_bare, s);
	if (op && with_h)
		s->flags &= ~C2S_F_H_DIRTY;
	if (!op) {
		deliver_bounce(s->w, s->srv->cfg.domain, m, STE_INTERNAL_SERVER_ERROR);
		rmsg_unref(m);
		return 0;
	}
	rmsg_unref(m); /* the operation holds its own */
	s->h_writes++;
	return 1;
}

int c2s_remote_deliver(struct c2s *s, const char *bare, const char *resource, struct rmsg *m)
{
	if (!store_shared(c2s_store(s)))
		return 0;
	issue(s, bare, resource, m);
	return 1;
}
