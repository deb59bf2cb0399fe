/* server/deliver.c - delivery to sessions by JID: routing rules, bounces, orphans. */
#include "tether/deliver.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tether/bus.h"
#include "tether/im.h"
#include "tether/jid.h"
#include "tether/log.h"
#include "tether/metrics.h"
#include "tether/offline.h"
#include "tether/rmsg.h"
#include "tether/router.h"
#include "tether/sbuf.h"
#include "tether/sm.h"
#include "tether/store.h"
#include "tether/worker.h"

int deliver_full(struct worker *w, const char *bare, const char *resource, struct rmsg *m)
{
	struct route_target t;
	if (router_get_full(w->srv->router, bare, resource, &t)) {
		rmsg_unref(m);
		return -ENOENT;
	}
	bus_deliver(w, &t.addr, m);
	return 0;
}

/* Hands one reference of <m> to <t>; notes whether <t> is congested. */
static void hand(struct worker *w, const struct route_target *t, struct rmsg *m, int *congested)
{
	if (t->congested && congested)
		*congested = 1;
	bus_deliver(w, &t->addr, rmsg_ref(m));
}

size_t deliver_message_bare(struct worker *w, const char *bare, struct rmsg *m, int *congested)
{
	/* 1 KiB on the worker's stack, not a malloc per stanza; not zeroed:
	 * router_get_all fills the entries it returns. */
	struct route_target t[ROUTER_MAX_RESOURCES];
	size_t pick[ROUTER_MAX_RESOURCES];
	size_t n = router_get_all(w->srv->router, bare, t, ROUTER_MAX_RESOURCES);
	size_t k = router_pick_for_message(t, n, pick, !strcmp(m->type, "headline"));
	for (size_t i = 0; i < k; i++)
		hand(w, &t[pick[i]], m, congested);
	rmsg_unref(m);
	return k;
}

static void on_remote_done(void *ud, int err, const struct store_target *t, size_t n,
			   struct rmsg *m);
static int remote(struct worker *w, const char *bare, const char *res, struct rmsg *m,
		  store_delivered_fn *fn);

int deliver_full_any(struct worker *w, const char *bare, const char *resource, struct rmsg *m)
{
	int rc = deliver_full(w, bare, resource, rmsg_ref(m));
	if (rc == -ENOENT && remote(w, bare, resource, m, on_remote_done))
		rc = 0;
	rmsg_unref(m);
	return rc;
}

int deliver_others(struct worker *w, const char *bare, struct rmsg *m)
{
	return remote(w, bare, "*", m, on_remote_done);
}

size_t deliver_presence(struct worker *w, const char *bare, struct rmsg *m, int only_available,
			int *congested)
{
	struct route_target t[ROUTER_MAX_RESOURCES];
	size_t k = 0;
	size_t n = router_get_all(w->srv->router, bare, t, ROUTER_MAX_RESOURCES);
	for (size_t i = 0; i < n; i++) {
		if (only_available && !t[i].available)
			continue;
		hand(w, &t[i], m, congested);
		k++;
	}
	/* And the account's sessions on other nodes, through the store. */
	remote(w, bare, only_available ? "+" : "*", m, on_remote_done);
	rmsg_unref(m);
	return k;
}

static const char *kind_name(const struct rmsg *m)
{
	return m->kind == RMSG_MESSAGE ? "message" : m->kind == RMSG_IQ ? "iq" : "presence";
}

/* Splits <full> into bare and resource. Returns 0 or -EINVAL. */
static int split(const char *full, struct jid *j, char *bare, size_t barelen)
{
	if (!*full || jid_parse(full, j))
		return -EINVAL;
	return jid_bare(j, bare, barelen) < 0 ? -EINVAL : 0;
}

/* ---- the sessions on other nodes (a store shared between nodes) -------- */

size_t deliver_targets_here(struct worker *w, const struct store_target *t, size_t n,
			    struct rmsg *m)
{
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		if (t[i].direct && t[i].owner.node == BUS_NODE_SELF) {
			bus_deliver(w, &t[i].owner, rmsg_ref(m));
			k++;
		}
	}
	return k;
}

int deliver_told(struct worker *w, const struct store_target *t, size_t n, struct rmsg *m)
{
	size_t full = 0;
	for (size_t i = 0; i < n; i++) {
		if (t[i].full)
			full++;
		else if (t[i].owner.node == BUS_NODE_SELF && !t[i].direct)
			bus_appended(w, &t[i].owner, t[i].seq, rmsg_ref(m));
	}
	deliver_targets_here(w, t, n, m); /* no queue: nothing appended */
	if (full < n)
		return 1;
	metrics_inc(M_LIMIT_SM_QUEUE);
	deliver_bounce(w, w->srv->cfg.domain, m, STE_RESOURCE_CONSTRAINT);
	return 0;
}

void deliver_issuer_gone(void *ud, int err, const struct store_target *t, size_t n,
			 struct rmsg *m)
{
	struct worker *w = ud;
	struct jid *j;
	char bare[2 * JID_PART_MAX + 2];
	if (err == -ESTALE || deliver_blocked(w, err, m))
		return; /* not delivered; its client sends it again where it resumes */
	if (!err && n) {
		deliver_told(w, t, n, m);
		return;
	}
	if (err || !(j = malloc(sizeof(*j))) || split(m->to, j, bare, sizeof(bare))) {
		if (!err)
			free(j);
		deliver_bounce(w, w->srv->cfg.domain, m, STE_INTERNAL_SERVER_ERROR);
		return;
	}
	int full = j->resource[0] && !deliver_full(w, bare, j->resource, rmsg_ref(m));
	free(j);
	if (full || deliver_message_bare(w, bare, rmsg_ref(m), NULL))
		return;
	if (m->kind == RMSG_PRESENCE || !strcmp(m->type, "headline"))
		return; /* nobody to show it to: dropped, as RFC 6121 says */
	if (m->kind == RMSG_MESSAGE && offline_wanted(m->type))
		offline_store(w, w->srv->cfg.domain, bare, rmsg_ref(m), sm_wall_ms(),
			      STE_SERVICE_UNAVAILABLE);
	else
		deliver_bounce(w, w->srv->cfg.domain, m, STE_SERVICE_UNAVAILABLE);
}

int deliver_blocked(struct worker *w, int err, const struct rmsg *m)
{
	if (err != -EACCES)
		return 0;
	if (m->kind == RMSG_IQ && (!strcmp(m->type, "get") || !strcmp(m->type, "set")))
		deliver_bounce(w, w->srv->cfg.domain, m, STE_SERVICE_UNAVAILABLE);
	return 1;
}

/* Sessions of this node got it from the router already, and the others'
 * nodes are told through their inboxes; a bounce or presence that finds
 * nobody is dropped. A direct session of this node that the router did
 * not find (it was ending) gets it through the bus, which re-routes it. */
static void on_remote_done(void *ud, int err, const struct store_target *t, size_t n,
			   struct rmsg *m)
{
	(void)err;
	deliver_targets_here(ud, t, n, m);
}

/* Appends <m> to the queues of <bare>'s sessions on other nodes, if the
 * store is shared: 1 (then <fn> decides later), 0 (nothing issued). Does
 * not consume <m>. */
static int remote(struct worker *w, const char *bare, const char *res, struct rmsg *m,
		  store_delivered_fn *fn)
{
	return w->sh && store_shared(w->sh) && store_deliver_async(w->sh, bare, res, m, NULL, fn, w);
}

void deliver_bounce(struct worker *w, const char *domain, const struct rmsg *m, enum stanza_err cond)
{
	if (!strcmp(m->type, "error") || !*m->from)
		return; /* never answer an error with an error */
	struct sbuf b = SBUF_INIT;
	const char *from = *m->to ? m->to : domain;
	size_t off = 0, plen = 0; /* a bounced message carries its payload (RFC 6120 §8.3.1) */
	if (m->kind != RMSG_MESSAGE || im_stanza_payload(m->data, m->len, &off, &plen))
		plen = 0;
	int rc = im_error_stanza(kind_name(m), *m->id ? m->id : NULL, from, m->from, cond,
				 m->data + off, plen, &b);
	struct jid *j = malloc(sizeof(*j));
	char bare[2 * JID_PART_MAX + 2];
	if (!rc && j && !split(m->from, j, bare, sizeof(bare))) {
		struct rmsg *e = rmsg_new(m->kind, b.data, b.len, from, m->from, m->id, "error");
		if (e && j->resource[0])
			deliver_full_any(w, bare, j->resource, e); /* the sender may be on another node */
		else if (e)
			rmsg_unref(e);
	}
	free(j);
	sbuf_free(&b);
}

/* An orphaned message (<m>, its delay stamp in already) went to the
 * account's sessions on other nodes: none there either, so stored offline
 * with that stamp, as on one node (deliver_orphan); bounced if it cannot
 * be stored (offline_store), or if the store could not be asked. */
static void on_orphan_sent(void *ud, int err, const struct store_target *t, size_t n,
			   struct rmsg *m)
{
	struct worker *w = ud;
	struct jid *j;
	char bare[2 * JID_PART_MAX + 2];
	if (!err && n) {
		deliver_targets_here(w, t, n, m);
		return;
	}
	if (deliver_blocked(w, err, m))
		return;
	if (!err && (j = malloc(sizeof(*j)))) {
		int bad = split(m->to, j, bare, sizeof(bare));
		free(j);
		if (!bad) {
			offline_store(w, w->srv->cfg.domain, bare, rmsg_ref(m), OFFLINE_STAMPED,
				      STE_RECIPIENT_UNAVAILABLE);
			return;
		}
	}
	deliver_bounce(w, w->srv->cfg.domain, m, STE_RECIPIENT_UNAVAILABLE);
}

void deliver_orphan(struct worker *w, const char *domain, struct rmsg *m, uint64_t stamp_ms)
{
	struct jid *j = malloc(sizeof(*j));
	char bare[2 * JID_PART_MAX + 2];
	const char *type = m->type;
	if (!j || split(m->to, j, bare, sizeof(bare)))
		goto out;
	if (m->kind == RMSG_MESSAGE && im_chat_or_normal(type)) {
		struct sbuf b = SBUF_INIT;
		struct rmsg *d = NULL;
		if (!sm_add_delay(m->data, m->len, domain, stamp_ms, &b))
			d = rmsg_new(m->kind, b.data, b.len, m->from, m->to, m->id, m->type);
		sbuf_free(&b);
		if (d)
			rmsg_ref(d); /* one more for the other nodes */
		if (!d || !deliver_message_bare(w, bare, d, NULL)) {
			if (!d || !remote(w, bare, "", d, on_orphan_sent)) {
				/* No available resource: stored offline again
				 * (offline.c), bounced only if that cannot be done. */
				log_debug("deliver: orphaned message from %s to %s stored", m->from,
					  m->to);
				offline_store(w, domain, bare, rmsg_ref(m), stamp_ms,
					      STE_RECIPIENT_UNAVAILABLE);
			}
		}
		if (d)
			rmsg_unref(d);
	} else if (m->kind == RMSG_IQ && (!strcmp(type, "get") || !strcmp(type, "set"))) {
		deliver_bounce(w, domain, m, STE_SERVICE_UNAVAILABLE);
	} /* groupchat, headline, errors, iq results, presence: dropped */
out:
	free(j);
	rmsg_unref(m);
}

/* A bare-JID message whose session was gone finds no other: stored
 * offline, or back to its sender. Consumes <m>. */
static void stale_bare_nobody(struct worker *w, const char *domain, const char *bare,
			      struct rmsg *m)
{
	if (offline_wanted(m->type)) {
		offline_store(w, domain, bare, m, sm_wall_ms(), STE_RECIPIENT_UNAVAILABLE);
		return;
	}
	deliver_bounce(w, domain, m, STE_RECIPIENT_UNAVAILABLE);
	rmsg_unref(m);
}

/* ...and the account's sessions on other nodes (the stale one's entry was
 * removed before this was issued): none there either. */
static void on_stale_bare_sent(void *ud, int err, const struct store_target *t, size_t n,
			       struct rmsg *m)
{
	struct worker *w = ud;
	char bare[2 * JID_PART_MAX + 2];
	if (!err && n) {
		deliver_targets_here(w, t, n, m);
		return;
	}
	if (deliver_blocked(w, err, m))
		return;
	struct jid *j = malloc(sizeof(*j));
	if (j && !split(m->to, j, bare, sizeof(bare)))
		stale_bare_nobody(w, w->srv->cfg.domain, bare, rmsg_ref(m));
	free(j);
}

void deliver_stale(struct worker *w, const char *domain, const struct bus_addr *stale,
		   struct rmsg *m)
{
	struct jid *j = malloc(sizeof(*j));
	struct route_target t;
	char bare[2 * JID_PART_MAX + 2];
	if (!j || split(m->to, j, bare, sizeof(bare))) {
		rmsg_unref(m); /* presence broadcasts carry no 'to': nothing to redo */
		goto out;
	}
	/* If <stale> was a direct session in the shared directory, its entry
	 * goes first (check-and-delete: only an entry that still names
	 * <stale>; whichever resource, as a bare JID or a full JID that fell
	 * back to it does not say), so that a re-route below, issued behind
	 * it on this worker's handle, cannot find it again: the stream ended,
	 * but its own removal may have been lost. */
	if (w->sh)
		store_direct_async(w->sh, STORE_DIRECT_DEL, bare, "", stale, 0, 0, NULL, NULL);
	if (j->resource[0] && !router_get_full(w->srv->router, bare, j->resource, &t) &&
	    !bus_addr_eq(&t.addr, stale)) {
		bus_deliver(w, &t.addr, m); /* the session moved (resumed elsewhere) */
	} else if (m->kind == RMSG_MESSAGE && !j->resource[0]) {
		if (deliver_message_bare(w, bare, rmsg_ref(m), NULL) ||
		    remote(w, bare, "", m, on_stale_bare_sent))
			rmsg_unref(m);
		else
			stale_bare_nobody(w, domain, bare, m);
	} else {
		deliver_orphan(w, domain, m, sm_wall_ms());
	}
out:
	free(j);
}
