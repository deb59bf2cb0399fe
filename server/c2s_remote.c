/* server/c2s_remote.c - stanzas for sessions on other nodes: appended to
 * their queues through the shared store, wherever those sessions live.
 *
 * Route to sessions, not connections: the local router knows this node's
 * sessions only; a stanza it has no session for goes to the store, whose
 * directory names every session of the account, and one call
 * (tether_deliver on Redis) appends it to each target session's queue,
 * which numbers it, and tells the owning node. Nothing is forwarded between
 * nodes. The sender's <a h/> waits for that call (h_writes), so what the
 * client is told it handed over is in a queue. */
#include "c2s_priv.h"

#include <string.h>

#include "tether/deliver.h"
#include "tether/jid.h"
#include "tether/log.h"
#include "tether/ratelimit.h"
#include "tether/rmsg.h"
#include "tether/store.h"
#include "tether/timer.h"

static int chat_or_normal(const struct rmsg *m)
{
	return !m->type[0] || !strcmp(m->type, "chat") || !strcmp(m->type, "normal");
}

/* What finds no session: RFC 6121 §8.5 (no offline storage yet). */
static void undeliverable(struct c2s *s, int err, struct rmsg *m)
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
	deliver_bounce(s->w, s->srv->cfg.domain, m,
		       err ? STE_INTERNAL_SERVER_ERROR : STE_SERVICE_UNAVAILABLE);
}

/* To the account's bare JID: done, or undeliverable. */
static void on_delivered_bare(void *ud, int err, size_t n, struct rmsg *m)
{
	struct c2s *s = ud;
	c2s_sm_h_done(s);
	if (err || !n)
		undeliverable(s, err, m);
}

/* To a full JID: a message of type chat or normal whose resource has no
 * session goes to the account's other resources (RFC 6121 §8.5.3.2.1). */
static void on_delivered_full(void *ud, int err, size_t n, struct rmsg *m)
{
	struct c2s *s = ud;
	c2s_sm_h_done(s);
	if (!err && n)
		return;
	struct jid j; /* ~3 KiB on the stack: a rare path */
	char bare[2 * JID_PART_MAX + 2];
	if (!err && m->kind == RMSG_MESSAGE && chat_or_normal(m) && !jid_parse(m->to, &j) &&
	    jid_bare(&j, bare, sizeof(bare)) >= 0) {
		/* As route_message_bare: this node's sessions, then the others'. */
		if (!deliver_message_bare(s->w, bare, rmsg_ref(m), NULL))
			c2s_remote_deliver(s, bare, "", rmsg_ref(m));
		return;
	}
	undeliverable(s, err, m);
}

int c2s_remote_deliver(struct c2s *s, const char *bare, const char *resource, struct rmsg *m)
{
	struct store_handle *sh = c2s_store(s);
	if (!store_shared(sh))
		return 0;
	if (!store_deliver_async(sh, bare, resource, m,
				 resource[0] ? on_delivered_full : on_delivered_bare, s)) {
		deliver_bounce(s->w, s->srv->cfg.domain, m, STE_INTERNAL_SERVER_ERROR);
		rmsg_unref(m);
		return 1;
	}
	rmsg_unref(m); /* the operation holds its own */
	s->h_writes++;
	return 1;
}
