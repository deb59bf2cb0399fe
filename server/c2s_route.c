/* server/c2s_route.c - stanzas from a bound client: stamp, address, route (RFC 6120 §10, RFC 6121 §8). */
#include "c2s_priv.h"

#include <stdlib.h>
#include <string.h>

#include "tether/deliver.h"
#include "tether/im.h"
#include "tether/metrics.h"
#include "tether/offline.h"
#include "tether/presence.h"
#include "tether/router.h"
#include "tether/sm.h"
#include "tether/store.h"
#include "tether/xstream.h"

static enum rmsg_kind kind_of(const struct xnode *el)
{
	if (el->name[0] == 'm')
		return RMSG_MESSAGE;
	if (el->name[0] == 'p')
		return RMSG_PRESENCE;
	return RMSG_IQ;
}

void c2s_emit(struct c2s *s, struct rmsg *m)
{
	c2s_count_out(m);
	if (s->flags & C2S_F_SM) {
		c2s_sm_emit(s, m);
		return;
	}
	s->tp->send(s->io, m->data, m->len);
	rmsg_unref(m);
}

void c2s_emit_reply(struct c2s *s, enum rmsg_kind kind, const char *from, const char *type)
{
	if (!s->out.len)
		return;
	if (!(s->flags & C2S_F_SM) || s->out.failed) {
		c2s_send_out(s); /* no queue to keep it in: write it as it is (or fail) */
		return;
	}
	struct rmsg *m = rmsg_new(kind, s->out.data, s->out.len, from, s->full, NULL, type);
	sbuf_reset(&s->out);
	if (m)
		c2s_emit(s, m);
}

/* An error reply to the client's own stanza, from <from>. */
static void bounce(struct c2s *s, struct xnode *el, const char *from, enum stanza_err e)
{
	const char *type = xnode_attr(el, "type");
	if (type && !strcmp(type, "error"))
		return; /* never answer an error with an error */
	sbuf_reset(&s->out);
	im_error_reply(el, from, s->full, e, &s->out);
	c2s_emit_reply(s, kind_of(el), from, "error");
}

/* Serializes <el> (its 'from' already stamped) into a routed message.
 * Without memory for it, the sender gets resource-constraint (or, if even
 * that cannot be built, internal-server-error: c2s_send_out) and NULL. */
static struct rmsg *make_rmsg(struct c2s *s, struct xnode *el, const char *to)
{
	sbuf_reset(&s->out);
	struct rmsg *m = NULL;
	if (!xnode_serialize(el, XMLNS_CLIENT, &s->out) && !s->out.failed)
		m = rmsg_new(kind_of(el), s->out.data, s->out.len, s->full, to,
			     xnode_attr(el, "id"), xnode_attr(el, "type"));
	sbuf_reset(&s->out);
	if (!m)
		bounce(s, el, to, STE_RESOURCE_CONSTRAINT);
	return m;
}

/* A message to a bare JID (or to a full JID not connected): RFC 6121 §8.5. */
static void route_message_bare(struct c2s *s, struct xnode *el, const char *bare, const char *to)
{
	const char *type = xnode_attr(el, "type");
	if (type && !strcmp(type, "groupchat")) {
		bounce(s, el, to, STE_SERVICE_UNAVAILABLE);
		return;
	}
	struct rmsg *m = make_rmsg(s, el, to);
	if (!m)
		return; /* bounced */
	/* A store shared between nodes: into the queues of the account's
	 * sessions wherever they are (c2s_remote.c), this node's router only
	 * for what finds none there. */
	if (c2s_remote_deliver(s, bare, "", m))
		return;
	int congested = 0;
	size_t got = deliver_message_bare(s->w, bare, rmsg_ref(m), &congested);
	if (congested)
		s->flags |= C2S_F_BACKOFF;
	if (got) {
		rmsg_unref(m);
		return;
	}
	if (m && offline_wanted(type) && c2s_store(s)) {
		/* RFC 6121 §8.5.2.2, XEP-0160 (offline.c) */
		offline_store(s->w, s->srv->cfg.domain, bare, m, sm_wall_ms(),
			      STE_SERVICE_UNAVAILABLE);
		return;
	}
	rmsg_unref(m);
	if (!type || strcmp(type, "headline"))
		bounce(s, el, to, STE_SERVICE_UNAVAILABLE);
}

/* Presence without 'to': goes to all of the user's own resources. */
static void broadcast_presence(struct c2s *s, struct xnode *el)
{
	const char *type = xnode_attr(el, "type");
	if (type && strcmp(type, "unavailable"))
		return; /* subscription management comes with the roster */
	int avail = !type;
	int initial = avail && !(s->flags & C2S_F_AVAILABLE);
	if (avail) {
		struct xnode *p = xnode_child(el, XMLNS_CLIENT, "priority");
		const char *pt = p ? xnode_text(p) : NULL;
		long prio = pt ? strtol(pt, NULL, 10) : 0;
		s->priority = prio < -128 ? -128 : prio > 127 ? 127 : (int)prio;
		s->flags |= C2S_F_AVAILABLE;
	} else {
		s->flags &= ~C2S_F_AVAILABLE;
	}
	s->sm.available = avail;
	s->sm.priority = s->priority;
	router_set_presence(s->srv->router, s->bare, s->resource, avail, s->priority);
	c2s_sm_presence_changed(s);
	c2s_direct_presence(s);
	struct rmsg *m = make_rmsg(s, el, NULL);
	int congested = 0;
	if (m)
		presence_broadcast(s, rmsg_ref(m), initial); /* contacts (presence.c) */
	if (m)
		deliver_presence(s->w, s->bare, m, 0, &congested);
	if (congested)
		s->flags |= C2S_F_BACKOFF;
}

static void route_to_server(struct c2s *s, struct xnode *el)
{
	if (strcmp(el->name, "iq"))
		return; /* messages and presence to the server itself: nothing to do */
	sbuf_reset(&s->out);
	im_server_iq(el, s->srv->cfg.domain, s->full, &s->out);
	c2s_emit_reply(s, RMSG_IQ, s->srv->cfg.domain, "result");
}

/* An iq without 'to' is handled on behalf of the sender's account, and
 * answered from its bare JID (RFC 6120 §10.3.3, RFC 6121 §2.1.3): clients
 * such as aioxmpp drop a reply from anywhere else as spoofed. */
static void answer_for_account(struct c2s *s, struct xnode *el)
{
	if (presence_own_iq(s, el))
		return; /* roster, carbons (presence.c) */
	sbuf_reset(&s->out);
	im_account_iq(el, s->bare, s->full, 1, &s->out);
	c2s_emit_reply(s, RMSG_IQ, s->bare, "result");
}

/* To a full JID: delivered if bound, else RFC 6121 §8.5.3.2. */
static void route_full(struct c2s *s, struct xnode *el, const char *bare, const char *resource,
		       const char *to)
{
	enum rmsg_kind kind = kind_of(el);
	struct route_target t; /* on the stack: this is the per-stanza path */
	if (store_shared(c2s_store(s))) {
		/* Into the session's queue, or to its stream if it has none,
		 * wherever it is (c2s_remote.c). */
		struct rmsg *m = make_rmsg(s, el, to);
		if (m)
			c2s_remote_deliver(s, bare, resource, m);
		return;
	}
	if (router_get_full(s->srv->router, bare, resource, &t) == 0) {
		struct rmsg *m = make_rmsg(s, el, to);
		if (m && t.congested)
			s->flags |= C2S_F_BACKOFF;
		if (m)
			bus_deliver(s->w, &t.addr, m);
	} else if (kind == RMSG_MESSAGE) {
		route_message_bare(s, el, bare, to);
	} else if (kind == RMSG_IQ) {
		bounce(s, el, to, STE_SERVICE_UNAVAILABLE);
	} /* presence to an absent resource: dropped */
}

/* An iq or message to bare JID <bare>, once we know whether the account
 * <exists>. */
static void route_to_account(struct c2s *s, struct xnode *el, const char *bare, const char *to,
			     int exists)
{
	/* Another account's bare JID answers an iq as one that does not
	 * exist: otherwise a ping or disco#info tells who has an account. */
	if (!exists || (kind_of(el) == RMSG_IQ && strcmp(bare, s->bare))) {
		bounce(s, el, to, STE_SERVICE_UNAVAILABLE);
	} else if (kind_of(el) == RMSG_IQ) {
		if (!strcmp(bare, s->bare) && presence_own_iq(s, el))
			return;
		sbuf_reset(&s->out);
		im_account_iq(el, bare, s->full, !strcmp(bare, s->bare), &s->out);
		c2s_emit_reply(s, RMSG_IQ, bare, "result");
	} else {
		route_message_bare(s, el, bare, to);
	}
}

/* The stanza waiting for the account lookup, copied out of the parser's
 * arena. The context of the store operation: freed by its callback, or by
 * c2s_free when the operation is cancelled. */
struct account_wait {
	struct c2s *s;
	struct xarena *a;
	struct xnode *el;
	char *bare, *to;
};

static void account_wait_free(void *ctx)
{
	struct account_wait *x = ctx;
	xarena_free(x->a);
	free(x);
}

static void on_account(void *ud, int err, const struct user_creds *creds)
{
	struct account_wait *x = ud;
	struct c2s *s = x->s;
	(void)creds;
	c2s_op_done(s);
	s->flags &= ~C2S_F_BACKOFF;
	route_to_account(s, x->el, x->bare, x->to, err == 0);
	c2s_sm_h_write(s); /* the stanza is routed now: its h may be written */
	account_wait_free(x);
	c2s_flow_hold(s);
	c2s_unpark(s);
}

/* Looks the account up through the worker's store handle: the stream parks
 * until the answer. */
static void lookup_account(struct c2s *s, struct xnode *el, const char *bare, const char *to)
{
	struct account_wait *x = calloc(1, sizeof(*x));
	if (x && (x->a = xarena_new())) {
		x->s = s;
		x->el = xnode_copy(x->a, el);
		x->bare = xarena_strndup(x->a, bare, strlen(bare));
		x->to = xarena_strndup(x->a, to, strlen(to));
	}
	struct store_op *op = x && x->el && x->bare && x->to ?
			      store_user_get_async(c2s_store(s), bare, on_account, x) : NULL;
	if (!op) {
		if (x)
			account_wait_free(x);
		c2s_stream_fail(s, SE_INTERNAL_SERVER_ERROR, NULL);
		return;
	}
	c2s_park(s, op, x, account_wait_free);
}

static void route_bare(struct c2s *s, struct xnode *el, const char *bare, const char *to)
{
	enum rmsg_kind kind = kind_of(el);
	if (kind == RMSG_IQ || kind == RMSG_MESSAGE) {
		lookup_account(s, el, bare, to);
	} else {
		/* Directed presence to an account: its available resources. */
		struct rmsg *m = make_rmsg(s, el, to);
		int congested = 0;
		if (m)
			deliver_presence(s->w, bare, m, 1, &congested);
		if (congested)
			s->flags |= C2S_F_BACKOFF;
	}
}

static void route(struct c2s *s, struct xnode *el);

/* Routes one stanza; if it went to a session whose queue is near its bound,
 * this stream stops reading for a moment (flow control: the sender's TCP
 * window closes instead of the receiver's queue overflowing). */
void c2s_route_stanza(struct c2s *s, struct xnode *el)
{
	static const enum metric_id in_kind[] = {
		[RMSG_MESSAGE] = M_IN_MESSAGE, [RMSG_PRESENCE] = M_IN_PRESENCE, [RMSG_IQ] = M_IN_IQ,
	};
	metrics_inc(in_kind[kind_of(el)]);
	s->flags &= ~C2S_F_BACKOFF;
	route(s, el);
}

static int valid_iq_type(const char *type)
{
	return type && (!strcmp(type, "get") || !strcmp(type, "set") ||
			!strcmp(type, "result") || !strcmp(type, "error"));
}

static void route(struct c2s *s, struct xnode *el)
{
	const char *to = xnode_attr(el, "to");
	enum rmsg_kind kind = kind_of(el);
	if (kind == RMSG_IQ && !valid_iq_type(xnode_attr(el, "type"))) {
		/* RFC 6120 §8.2.3: type is required and one of four. */
		sbuf_reset(&s->out);
		const char *from = to ? to : s->bare; /* no 'to': the account's (RFC 6120 §10.3.3) */
		im_error_reply(el, from, s->full, STE_BAD_REQUEST, &s->out);
		c2s_emit_reply(s, RMSG_IQ, from, "error");
		return;
	}
	/* The server stamps 'from' on everything a client sends. */
	if (xnode_set_attr(el, "from", s->full)) {
		c2s_stream_fail(s, SE_INTERNAL_SERVER_ERROR, NULL);
		return;
	}
	if (presence_outbound(s, el, to))
		return; /* blocking, carbons, subscriptions, probes (presence.c) */
	if (!to) {
		if (kind == RMSG_PRESENCE)
			broadcast_presence(s, el);
		else if (kind == RMSG_IQ)
			answer_for_account(s, el); /* RFC 6120 §10.3.3 */
		else
			route_message_bare(s, el, s->bare, s->bare);
		return;
	}
	struct jid jj, *j = &jj; /* ~3 KiB on the worker's stack, not a malloc per stanza */
	char bare[2 * JID_PART_MAX + 2];
	if (jid_parse(to, j))
		bounce(s, el, to, STE_JID_MALFORMED);
	else if (strcmp(j->domain, s->srv->cfg.domain))
		bounce(s, el, to, STE_REMOTE_SERVER_NOT_FOUND); /* no s2s yet */
	else if (!j->local[0])
		route_to_server(s, el);
	else if (jid_bare(j, bare, sizeof(bare)) < 0)
		bounce(s, el, to, STE_JID_MALFORMED);
	else if (j->resource[0])
		route_full(s, el, bare, j->resource, to);
	else
		route_bare(s, el, bare, to);
}
