/* server/presence.c - RFC 6121 for a bound session: roster requests and pushes, subscriptions, presence to and from contacts, offline delivery.
 *
 * Choices where RFC 6121 leaves one, or where one node makes it simple:
 * - Nothing is cached per session: every presence broadcast reads the
 *   contacts it goes to (just their JIDs and states, store_im.h) through
 *   the stream's store handle. Roster changes are therefore seen at once,
 *   by every resource, without cache invalidation.
 * - A subscription stanza is applied to both rosters in one store step
 *   (the user's outbound and the contact's inbound row of Appendix A), so
 *   a contact that is offline gets its state and its pending request
 *   stored without having a session.
 * - Probes (§4.3) are never sent by clients here (dropped) and never
 *   passed to clients: the server sends one to each bound resource of a
 *   contact the user has a To subscription with, and the contact's session
 *   answers with its last available presence, addressed to the full JID
 *   that came online. Since both rosters change together, the prober's To
 *   is the contact's From: the contact's session does not read its roster
 *   again to authorize the answer.
 * - After an approval, a cancellation or an unsubscription the presence
 *   that must follow (§3.1.5, §3.2.2, §3.3.3) comes from the sessions of
 *   the side whose presence is concerned: they get an internal "probe" or
 *   "gone" message and answer for themselves (internal rmsg types, never
 *   written to a stream).
 * - Roster pushes go to every bound resource of the account as one
 *   serialized stanza; a session passes it on only if its client asked
 *   for the roster (an "interested resource", §2.1.6).
 * - Directed presence (§4.6) is remembered per session (up to [im]
 *   max_directed JIDs) and undone with unavailable presence when the
 *   session becomes unavailable or ends. With a store shared between
 *   nodes the list is written through (c2s_direct_directed), so that the
 *   reaper undoes it for a session whose node died (presence_gone).
 * - Subscription pre-approval (§3.4) is not offered: a <subscribed/> with
 *   nothing to approve is dropped, as Appendix A's tables say.
 * - Blocking (XEP-0191): each session keeps a copy of the blocklist,
 *   loaded at bind without waiting (a stanza in the first loop turn after
 *   bind may pass). A change is applied to the copy of every session when
 *   its push reaches it (the session that made it before the client gets
 *   its result), and the copy is then reloaded. Stanzas are checked when
 *   they reach the blocking user's session (inbound) or leave it
 *   (outbound). With a store shared between nodes, what goes through the
 *   store (tether_deliver: messages, iqs and presence to XEP-0198 queues
 *   and to sessions on other nodes) is checked there, against the stored
 *   list, before it is appended: an entry numbered in a queue is never
 *   dropped at the session. Offline messages and stored subscription
 *   requests from a JID blocked later are filtered when delivered. The
 *   server's own requests (T_GONE: "send the blocked JID your unavailable
 *   presence") are not stanzas from the blocked JID and pass.
 * - Carbons (XEP-0280) go like pushes: one copy to every bound resource of
 *   the account, passed on by the sessions that enabled carbons, except
 *   the one the original came from or went to. A message to the bare JID
 *   that reaches two resources of equal priority is also copied to each
 *   by the other (both asked for carbons, both may see it twice). With a
 *   store shared between nodes, the copy also goes to the account's
 *   sessions on the other nodes, through their inboxes (deliver_others):
 *   this node does not know which of them enabled carbons, so every
 *   eligible message costs one more store call; like pushes, a copy is
 *   sent at most once (a node unreachable for it misses it).
 */
#include "tether/presence.h"
#include "c2s_priv.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tether/carbons.h"
#include "tether/deliver.h"
#include "tether/im.h"
#include "tether/jid.h"
#include "tether/log.h"
#include "tether/offline.h"
#include "tether/roster.h"
#include "tether/store.h"
#include "tether/store_im.h"
#include "tether/sub.h"
#include "tether/worker.h"
#include "tether/xstream.h"

#define T_PUSH  "tether-push"  /* rmsg type: a roster push, for interested resources only */
#define T_GONE  "tether-gone"  /* rmsg type: "send your unavailable presence to m->from" */
#define T_PROBE "probe"        /* a server probe: "send your presence to m->from" */
#define T_CARBON "tether-carbon" /* rmsg type: a XEP-0280 copy, for enabled resources but its source */
#define T_BPUSH "tether-bpush" /* rmsg type: a XEP-0191 push; every session reloads its blocklist */
#define XMLNS_BLOCKING "urn:xmpp:blocking"
#define XMLNS_BLOCKING_ERRORS "urn:xmpp:blocking:errors"

#define IM_F_ROSTER  0x1u      /* the client asked for its roster: it gets pushes */
#define IM_F_OFFLINE 0x2u      /* offline messages were fetched for this session */
#define IM_F_CARBONS 0x4u      /* XEP-0280 enabled */
#define IM_F_INACTIVE 0x8u     /* XEP-0352: the client said <inactive/> */
#define IM_F_FLUSHING 0x10u    /* delivering what CSI held: not held again */
#define CSI_HELD_MAX 1024      /* presences held per inactive session before a flush */
#define IM_F_BLOCKLIST 0x20u   /* XEP-0191: asked for the blocklist, so it gets pushes */
#define IM_F_BLOCKS  0x40u     /* the blocklist cache below has been loaded */
/* What an XEP-0198 resumption restores (presence_sm_save). */
#define IM_F_SAVED (IM_F_ROSTER | IM_F_OFFLINE | IM_F_CARBONS | IM_F_INACTIVE | IM_F_BLOCKLIST)
#define IM_SAVE_VERSION "1"

struct c2s_im {
	unsigned flags;
	struct rmsg *last;        /* the last available presence broadcast: probes get it */
	char **directed;          /* recipients, [im] max_directed at most; grown on demand */
	size_t ndirected, capdirected;
	struct rmsg **held;       /* CSI: presence held, oldest first, one per sender */
	size_t nheld, capheld;
	char **blocked;           /* XEP-0191: the account's blocklist as last loaded */
	size_t nblocked;
	struct block_load *load;  /* the load in flight, if any */
};

/* The context of a blocklist load: the session, until it goes (then NULL,
 * and the result is dropped). Owned by the operation. */
struct block_load {
	struct c2s *s;
};

static struct c2s_im *im_of(struct c2s *s)
{
	if (!s->im)
		s->im = calloc(1, sizeof(*s->im));
	return s->im;
}

static struct store_handle *handle(struct c2s *s)
{
	return s->tp->store ? s->tp->store(s->io) : NULL;
}

void presence_free(struct c2s *s)
{
	struct c2s_im *im = s->im;
	if (!im)
		return;
	rmsg_unref(im->last);
	for (size_t i = 0; i < im->ndirected; i++)
		free(im->directed[i]);
	free(im->directed);
	for (size_t i = 0; i < im->nheld; i++)
		rmsg_unref(im->held[i]);
	free(im->held);
	for (size_t i = 0; i < im->nblocked; i++)
		free(im->blocked[i]);
	free(im->blocked);
	if (im->load)
		im->load->s = NULL;
	free(im);
	s->im = NULL;
}

/* ---- the state a resumption restores (XEP-0198) ------------------------ */

/* The state as bytes: "1" \x01 flags \x01 n \x01 (directed JID \x01) x n,
 * then the last available presence as written (may be empty). \x01 is
 * not allowed in XML nor in a JID, so it cannot occur in the fields. */
void presence_sm_save(struct c2s *s)
{
	struct c2s_im *im = s->im;
	if (!(s->flags & C2S_F_SM) || !im)
		return;
	struct sbuf b = SBUF_INIT;
	int rc = sbuf_printf(&b, IM_SAVE_VERSION "\x01%u\x01%zu\x01", im->flags & IM_F_SAVED,
			     im->ndirected);
	for (size_t i = 0; i < im->ndirected; i++) {
		rc |= sbuf_puts(&b, im->directed[i]);
		rc |= sbuf_append(&b, "\x01", 1);
	}
	if (im->last)
		rc |= sbuf_append(&b, im->last->data, im->last->len);
	if (!rc)
		c2s_sm_im_changed(s, b.data, b.len);
	else
		log_warn("presence: %s: out of memory saving the session's state", s->full);
	sbuf_free(&b);
}

/* The next \x01-terminated field of [*<p>, <end>), NUL-terminated in <out>
 * (<cap> bytes). 0, or -EINVAL. */
static int next_field(const char **p, const char *end, char *out, size_t cap)
{
	const char *q = memchr(*p, '\x01', (size_t)(end - *p));
	if (!q || (size_t)(q - *p) >= cap)
		return -EINVAL;
	memcpy(out, *p, (size_t)(q - *p));
	out[q - *p] = 0;
	*p = q + 1;
	return 0;
}

/* Adds <to> to the directed-presence list, grown on demand (most sessions
 * send none), up to [im] max_directed. 1 if added. */
static int directed_add(struct c2s *s, struct c2s_im *im, const char *to)
{
	size_t max = s->srv->cfg.im_max_directed;
	if (im->ndirected >= max)
		return 0;
	if (im->ndirected == im->capdirected) {
		size_t cap = im->capdirected ? 2 * im->capdirected : 4;
		cap = cap < max ? cap : max;
		char **d = realloc(im->directed, cap * sizeof(*d));
		if (!d)
			return 0;
		im->directed = d;
		im->capdirected = cap;
	}
	if (!(im->directed[im->ndirected] = strdup(to)))
		return 0;
	im->ndirected++;
	return 1;
}

void presence_sm_restore(struct c2s *s, const char *data, size_t len)
{
	struct c2s_im *im = im_of(s);
	const char *p = data, *end = data + len;
	char f[3 * JID_PART_MAX + 3], *e;
	if (!data || !im || !s->full)
		return; /* nothing saved: presence_bound's guess stands */
	if (next_field(&p, end, f, sizeof(f)) || strcmp(f, IM_SAVE_VERSION) ||
	    next_field(&p, end, f, sizeof(f)))
		goto bad;
	unsigned long flags = strtoul(f, &e, 10);
	if (*e || next_field(&p, end, f, sizeof(f)))
		goto bad;
	unsigned long n = strtoul(f, &e, 10);
	if (*e)
		goto bad;
	im->flags = (im->flags & ~IM_F_SAVED) | ((unsigned)flags & IM_F_SAVED);
	for (unsigned long i = 0; i < n; i++) {
		if (next_field(&p, end, f, sizeof(f)))
			goto bad;
		directed_add(s, im, f); /* past [im] max_directed (lowered since): dropped */
	}
	rmsg_unref(im->last);
	im->last = p < end ? rmsg_new(RMSG_PRESENCE, p, (size_t)(end - p), s->full, NULL, NULL, "")
			   : NULL;
	if (im->flags & IM_F_CARBONS)
		router_set_carbons(s->srv->router, s->bare, s->resource, &s->self, 1);
	return;
bad:
	log_warn("presence: %s: the session's saved state is unreadable: not restored", s->full);
}

/* Sets <on> and clears <off> in the session's flags; saved if that
 * changed them. */
static void im_flags(struct c2s *s, unsigned on, unsigned off)
{
	struct c2s_im *im = im_of(s);
	if (!im)
		return;
	unsigned was = im->flags;
	im->flags = (im->flags | on) & ~off;
	if ((was ^ im->flags) & IM_F_SAVED)
		presence_sm_save(s);
}

/* ---- sending ------------------------------------------------------------ */

/* <m> to <jid>: that resource if it is a full JID, else the account's
 * available resources. Consumes <m>. */
static void send_to(struct worker *w, const char *jid, struct rmsg *m)
{
	struct jid *j = malloc(sizeof(*j));
	char bare[2 * JID_PART_MAX + 2];
	if (!j || jid_parse(jid, j) || jid_bare(j, bare, sizeof(bare)) < 0)
		rmsg_unref(m);
	else if (j->resource[0])
		deliver_full_any(w, bare, j->resource, m); /* the asker may be on another node */
	else
		deliver_presence(w, bare, m, 1, NULL);
	free(j);
}

/* <presence type='<type>' from to/> to <to> (see send_to). */
static void send_typed(struct worker *w, const char *from, const char *to, const char *type)
{
	struct sbuf b = SBUF_INIT;
	int rc = sbuf_printf(&b, "<presence type='%s' from='", type);
	rc |= sbuf_puts_esc(&b, from);
	rc |= sbuf_puts(&b, "' to='");
	rc |= sbuf_puts_esc(&b, to);
	rc |= sbuf_puts(&b, "'/>");
	struct rmsg *m = rc ? NULL : rmsg_new(RMSG_PRESENCE, b.data, b.len, from, to, NULL, type);
	sbuf_free(&b);
	if (m)
		send_to(w, to, m);
}

/* An internal request of <type> (T_PROBE, T_GONE) to every bound resource
 * of <whose>: answer to <asker>. */
static void ask(struct worker *w, const char *whose, const char *asker, const char *type)
{
	static const char body[] = "<presence/>"; /* never written: the type says it all */
	struct rmsg *m = rmsg_new(RMSG_PRESENCE, body, sizeof(body) - 1, asker, whose, NULL, type);
	if (m)
		deliver_presence(w, whose, m, 0, NULL);
}

/* A roster push of change <c> to every bound resource of <bare>. */
static void push_change(struct worker *w, const char *bare, const struct im_change *c)
{
	static atomic_uint_fast64_t seq;
	char id[32];
	struct sbuf b = SBUF_INIT;
	if (!c || !c->pushed || !c->item.jid)
		return;
	snprintf(id, sizeof(id), "push%" PRIx64,
		 (uint64_t)atomic_fetch_add_explicit(&seq, 1, memory_order_relaxed));
	if (!roster_push_xml(&b, id, c->ver, &c->item, c->removed)) {
		struct rmsg *m = rmsg_new(RMSG_IQ, b.data, b.len, NULL, NULL, id, T_PUSH);
		if (m)
			deliver_presence(w, bare, m, 0, NULL);
	}
	sbuf_free(&b);
}

/* An error reply to the client's own stanza <el>, from <from>. */
static void refuse_stanza(struct c2s *s, struct xnode *el, const char *from, enum stanza_err e)
{
	const char *type = xnode_attr(el, "type");
	if (type && !strcmp(type, "error"))
		return;
	sbuf_reset(&s->out);
	im_error_reply(el, from, s->full, e, &s->out);
	c2s_emit_reply(s, el->name[0] == 'i' ? RMSG_IQ : RMSG_PRESENCE, from, "error");
}

/* ---- waiting for the store with a copy of the stanza ------------------------ */

/* The context of one parked operation: the stanza copied out of the
 * parser's arena, and what the callback needs. Freed by the callback, or
 * by c2s_free when the operation is cancelled. */
struct wait {
	struct c2s *s;
	struct xarena *a;
	struct xnode *el;
	char *ver;                /* roster get: the client's version */
	char *contact;            /* subscription: the contact's bare JID */
	char *stanza;             /* subscription: as it went out */
	enum sub_type type;
	struct rmsg *m;           /* initial presence: the broadcast */
};

static void wait_free(void *ctx)
{
	struct wait *x = ctx;
	if (!x)
		return;
	xarena_free(x->a);
	free(x->ver);
	free(x->contact);
	free(x->stanza);
	rmsg_unref(x->m);
	free(x);
}

static struct wait *wait_new(struct c2s *s, struct xnode *el)
{
	struct wait *x = calloc(1, sizeof(*x));
	if (!x)
		return NULL;
	x->s = s;
	if (el && (!(x->a = xarena_new()) || !(x->el = xnode_copy(x->a, el)))) {
		wait_free(x);
		return NULL;
	}
	return x;
}

/* Parks the stream on <op> with <x>, or fails the stream if there is no
 * operation (out of memory). */
static void park(struct c2s *s, struct store_op *op, struct wait *x)
{
	if (!op) {
		wait_free(x);
		c2s_stream_fail(s, SE_INTERNAL_SERVER_ERROR, NULL);
		return;
	}
	c2s_park(s, op, x, wait_free);
}

/* ---- roster (§2) ---------------------------------------------------------- */

static void reply_empty(struct c2s *s, struct xnode *iq)
{
	const char *id = xnode_attr(iq, "id");
	sbuf_reset(&s->out);
	int rc = sbuf_puts(&s->out, "<iq type='result'");
	if (id) {
		rc |= sbuf_puts(&s->out, " id='");
		rc |= sbuf_puts_esc(&s->out, id);
		rc |= sbuf_puts(&s->out, "'");
	}
	rc |= sbuf_puts(&s->out, " from='");
	rc |= sbuf_puts_esc(&s->out, s->bare);
	rc |= sbuf_puts(&s->out, "' to='");
	rc |= sbuf_puts_esc(&s->out, s->full);
	rc |= sbuf_puts(&s->out, "'/>");
	if (rc)
		sbuf_reset(&s->out);
	c2s_emit_reply(s, RMSG_IQ, s->bare, "result");
}

static void on_roster(void *ud, int err, uint64_t ver, const struct im_item *items, size_t n)
{
	struct wait *x = ud;
	struct c2s *s = x->s;
	char cur[24];
	c2s_op_done(s);
	snprintf(cur, sizeof(cur), "%" PRIu64, ver);
	sbuf_reset(&s->out);
	if (err == -ENOTSUP) {
		/* A backend without rosters (redis, for now): an empty one lets
		 * clients that wait for it go online. */
		roster_result_xml(&s->out, xnode_attr(x->el, "id"), s->bare, s->full, 0, NULL, 0, 0);
		c2s_emit_reply(s, RMSG_IQ, s->bare, "result");
	} else if (err) {
		refuse_stanza(s, x->el, s->bare, STE_INTERNAL_SERVER_ERROR);
	} else {
		/* XEP-0237 §2.4: up to date gets an empty result, and the
		 * client keeps what it has. */
		int same = x->ver && !strcmp(x->ver, cur);
		if (roster_result_xml(&s->out, xnode_attr(x->el, "id"), s->bare, s->full, ver, items,
				      n, same))
			sbuf_reset(&s->out);
		c2s_emit_reply(s, RMSG_IQ, s->bare, "result");
	}
	wait_free(x);
	c2s_unpark(s);
}

/* What a removal implies for the contact (RFC 6121 §2.5.2): the
 * unsubscribe/unsubscribed the user's server sends, and the presence that
 * stops flowing. <c> holds the item as it was. */
static void removed_effects(struct c2s *s, const struct im_change *c, const struct im_change *cc)
{
	const char *cj = c->item.jid;
	enum sub_state old = c->item.state;
	if (strchr(cj, '/'))
		return; /* a full-JID item: subscriptions are between bare JIDs */
	if (sub_has_to(old) || sub_asks(old)) {
		send_typed(s->w, s->bare, cj, "unsubscribe");
		if (sub_has_to(old))
			ask(s->w, cj, s->bare, T_GONE);  /* the contact's presence stops */
	}
	if (sub_has_from(old) || sub_pending_in(old)) {
		send_typed(s->w, s->bare, cj, "unsubscribed");
		if (sub_has_from(old))
			ask(s->w, s->bare, cj, T_GONE);  /* the user's presence stops */
	}
	push_change(s->w, cj, cc);
}

static void on_roster_change(void *ud, int err, const struct im_change *c,
			     const struct im_change *cc)
{
	struct wait *x = ud;
	struct c2s *s = x->s;
	c2s_op_done(s);
	if (err) {
		enum stanza_err e = err == -EDQUOT ? STE_NOT_ALLOWED :
				    err == -ENOENT ? STE_ITEM_NOT_FOUND :
				    err == -ENOTSUP ? STE_SERVICE_UNAVAILABLE : STE_INTERNAL_SERVER_ERROR;
		refuse_stanza(s, x->el, s->bare, e);
	} else {
		push_change(s->w, s->bare, c); /* to every interested resource, this one too (§2.3.2) */
		if (cc)
			removed_effects(s, c, cc);
		reply_empty(s, x->el);
	}
	wait_free(x);
	c2s_unpark(s);
}

/* XEP-0280 §4-5: <enable/> or <disable/>. */
static int carbons_iq(struct c2s *s, struct xnode *iq, struct xnode *q)
{
	const char *type = xnode_attr(iq, "type");
	struct c2s_im *im = im_of(s);
	if (!type || strcmp(type, "set") || xnode_next_elem(q)) {
		refuse_stanza(s, iq, s->bare, STE_BAD_REQUEST);
		return 1;
	}
	if (!im) {
		c2s_stream_fail(s, SE_INTERNAL_SERVER_ERROR, NULL);
		return 1;
	}
	if (!strcmp(q->name, "enable"))
		im_flags(s, IM_F_CARBONS, 0);
	else
		im_flags(s, 0, IM_F_CARBONS);
	router_set_carbons(s->srv->router, s->bare, s->resource, &s->self,
			   !!(im->flags & IM_F_CARBONS));
	reply_empty(s, iq);
	return 1;
}

/* ---- blocking (XEP-0191) ---------------------------------------------------- */

static void set_blocked(struct c2s_im *im, char *const *jids, size_t n)
{
	char **b = n ? calloc(n, sizeof(*b)) : NULL;
	size_t k = 0;
	for (size_t i = 0; (b || !n) && i < n; i++)
		if ((b[k] = strdup(jids[i])))
			k++;
	for (size_t i = 0; i < im->nblocked; i++)
		free(im->blocked[i]);
	free(im->blocked);
	im->blocked = b;
	im->nblocked = k;
	im->flags |= IM_F_BLOCKS;
}

/* Adds <jid> to the copy (<add>) or removes it; 0, or -ENOMEM. */
static int blocked_edit(struct c2s_im *im, const char *jid, int add)
{
	for (size_t i = 0; i < im->nblocked; i++) {
		if (strcmp(im->blocked[i], jid))
			continue;
		if (!add) {
			free(im->blocked[i]);
			memmove(&im->blocked[i], &im->blocked[i + 1],
				(im->nblocked - i - 1) * sizeof(*im->blocked));
			im->nblocked--;
		}
		return 0;
	}
	if (!add)
		return 0;
	char **b = realloc(im->blocked, (im->nblocked + 1) * sizeof(*b));
	if (!b)
		return -ENOMEM;
	im->blocked = b;
	if (!(b[im->nblocked] = strdup(jid)))
		return -ENOMEM;
	im->nblocked++;
	return 0;
}

/* The blocklist push <data> as push_xml wrote it (<block/> or <unblock/>,
 * then <item jid='...'/> only, values escaped by sbuf_append_esc), applied
 * to the session's copy: <block/> adds its items, <unblock/> removes them,
 * or all of them when it has none. So the change is in force for this
 * session when the push reaches it, not a store read later (XEP-0191: once
 * the client has the result, stanzas from a JID it blocked are dropped).
 * Returns 0, or -EINVAL / -ENOMEM: then the copy is unreliable until the
 * reload that follows every push completes. */
static int push_apply(struct c2s_im *im, const char *data, size_t len)
{
	static const char item[] = "<item jid='";
	const char *end = data + len, *p = memmem(data, len, "><", 2);
	if (!p)
		return -EINVAL;
	int add = !strncmp(p + 2, "block ", 6), n = 0;
	if (!add && strncmp(p + 2, "unblock ", 8))
		return -EINVAL;
	while ((p = memmem(p, (size_t)(end - p), item, sizeof(item) - 1))) {
		char jid[3 * JID_PART_MAX + 3];
		size_t k = 0;
		for (p += sizeof(item) - 1; p < end && *p != '\''; p++) {
			static const char *const ent[][2] = {
				{ "&amp;", "&" }, { "&lt;", "<" }, { "&gt;", ">" },
				{ "&apos;", "'" }, { "&quot;", "\"" },
			};
			char c = *p;
			for (size_t e = 0; c == '&' && e < sizeof(ent) / sizeof(ent[0]); e++) {
				size_t l = strlen(ent[e][0]);
				if ((size_t)(end - p) >= l && !memcmp(p, ent[e][0], l)) {
					c = ent[e][1][0];
					p += l - 1;
					break;
				}
			}
			if (k + 1 >= sizeof(jid))
				return -EINVAL;
			jid[k++] = c;
		}
		jid[k] = 0;
		if (p == end || blocked_edit(im, jid, add))
			return p == end ? -EINVAL : -ENOMEM;
		n++;
	}
	if (!add && !n)
		set_blocked(im, NULL, 0); /* unblock-all */
	im->flags |= IM_F_BLOCKS;
	return 0;
}

static void on_blocks_loaded(void *ud, int err, char *const *jids, size_t n)
{
	struct block_load *l = ud;
	struct c2s *s = l->s;
	if (s && s->im) {
		if (s->im->load == l)
			s->im->load = NULL;
		if (!err)
			set_blocked(s->im, jids, n);
		else if (err != -ENOTSUP)
			log_warn("blocking: blocklist of %s not read: %s", s->bare, strerror(-err));
	}
	free(l);
}

/* (Re)loads the session's copy of the blocklist; a load in flight is
 * superseded (its result is dropped). */
static void blocks_load(struct c2s *s)
{
	struct c2s_im *im = im_of(s);
	struct store_handle *h = handle(s);
	struct block_load *l = im && h && s->bare ? malloc(sizeof(*l)) : NULL;
	if (!l)
		return;
	l->s = s;
	struct store_op *op = store_im_blocks_async(h, s->bare, on_blocks_loaded, l);
	if (!op) {
		free(l);
		return;
	}
	store_im_own_ud(op, free);
	if (im->load)
		im->load->s = NULL;
	im->load = l;
}

void presence_bound(struct c2s *s)
{
	struct c2s_im *im = im_of(s);
	/* Bound with SM already on: an XEP-0198 resumption (c2s_sm.c adopt).
	 * The state saved with the session (presence_sm_save) is restored
	 * next; for a session that has none, a client that resumes had a
	 * whole session, roster included, so it keeps getting pushes. */
	if (im && (s->flags & C2S_F_SM))
		im->flags |= IM_F_ROSTER;
	blocks_load(s);
}

/* Whether the prepared JID <jid> is blocked: an item equal to it, to its
 * bare JID or to its domain (XEP-0191 §3.4, XEP-0016 matching). */
static int is_blocked(const struct c2s_im *im, const char *jid)
{
	if (!im || !im->nblocked || !jid || !*jid)
		return 0;
	for (size_t i = 0; i < im->nblocked; i++)
		if (jid_item_covers(im->blocked[i], jid))
			return 1;
	return 0;
}

/* Whether <jid> is the account's bare JID or one of its full JIDs. */
static int own_jid(const struct c2s *s, const char *jid)
{
	size_t l = strlen(s->bare);
	return !strncmp(jid, s->bare, l) && (!jid[l] || jid[l] == '/');
}

static void on_blocklist(void *ud, int err, char *const *jids, size_t n)
{
	struct wait *x = ud;
	struct c2s *s = x->s;
	c2s_op_done(s);
	if (err) {
		refuse_stanza(s, x->el, s->bare, err == -ENOTSUP ? STE_SERVICE_UNAVAILABLE :
					   STE_INTERNAL_SERVER_ERROR);
	} else {
		set_blocked(s->im, jids, n);
		const char *id = xnode_attr(x->el, "id");
		sbuf_reset(&s->out);
		int rc = sbuf_puts(&s->out, "<iq type='result'");
		if (id) {
			rc |= sbuf_puts(&s->out, " id='");
			rc |= sbuf_puts_esc(&s->out, id);
			rc |= sbuf_puts(&s->out, "'");
		}
		rc |= sbuf_puts(&s->out, "><blocklist xmlns='" XMLNS_BLOCKING "'>");
		for (size_t i = 0; i < n; i++) {
			rc |= sbuf_puts(&s->out, "<item jid='");
			rc |= sbuf_puts_esc(&s->out, jids[i]);
			rc |= sbuf_puts(&s->out, "'/>");
		}
		rc |= sbuf_puts(&s->out, "</blocklist></iq>");
		if (rc)
			sbuf_reset(&s->out);
		c2s_emit_reply(s, RMSG_IQ, s->bare, "result");
	}
	wait_free(x);
	c2s_unpark(s);
}

/* Parses the items of a <block/> or <unblock/>, each JID prepared, into
 * <x>'s arena. Returns the number of items, or -1 after an error reply. */
static ssize_t block_items(struct c2s *s, struct wait *x, struct xnode *q, char ***out)
{
	size_t n = 0;
	for (struct xnode *it = xnode_first_elem(q); it; it = xnode_next_elem(it))
		n++;
	char **j = n ? xarena_alloc(x->a, n * sizeof(*j)) : NULL;
	struct jid *pj = malloc(sizeof(*pj));
	char buf[3 * JID_PART_MAX + 3];
	size_t k = 0;
	if ((n && !j) || !pj) {
		free(pj);
		c2s_stream_fail(s, SE_INTERNAL_SERVER_ERROR, NULL);
		return -1;
	}
	for (struct xnode *it = xnode_first_elem(q); it; it = xnode_next_elem(it)) {
		const char *v = xnode_attr(it, "jid");
		if (strcmp(it->ns, XMLNS_BLOCKING) || strcmp(it->name, "item") || !v ||
		    jid_parse(v, pj) || jid_full(pj, buf, sizeof(buf)) < 0) {
			free(pj);
			refuse_stanza(s, x->el, s->bare, v && !strcmp(it->name, "item") ?
				   STE_JID_MALFORMED : STE_BAD_REQUEST);
			return -1;
		}
		if (!(j[k++] = xarena_strndup(x->a, buf, strlen(buf)))) {
			free(pj);
			c2s_stream_fail(s, SE_INTERNAL_SERVER_ERROR, NULL);
			return -1;
		}
	}
	free(pj);
	*out = j;
	return (ssize_t)k;
}

/* The push of the change in <q> (its items' JIDs prepared): <block/> or
 * <unblock/> with just the items, the form push_apply reads. */
static int push_xml(struct sbuf *b, const char *id, const struct xnode *q)
{
	int rc = sbuf_printf(b, "<iq type='set' id='%s'><%s xmlns='" XMLNS_BLOCKING "'>", id,
			     q->name);
	for (struct xnode *it = xnode_first_elem(q); it; it = xnode_next_elem(it)) {
		rc |= sbuf_puts(b, "<item jid='");
		rc |= sbuf_puts_esc(b, xnode_attr(it, "jid"));
		rc |= sbuf_puts(b, "'/>");
	}
	rc |= sbuf_printf(b, "</%s></iq>", q->name);
	return rc;
}

static void on_blocked(void *ud, int err)
{
	struct wait *x = ud;
	struct c2s *s = x->s;
	c2s_op_done(s);
	if (err) {
		refuse_stanza(s, x->el, s->bare, err == -EDQUOT ? STE_RESOURCE_CONSTRAINT :
					   err == -ENOTSUP ? STE_SERVICE_UNAVAILABLE :
					   STE_INTERNAL_SERVER_ERROR);
	} else {
		/* §3.3, §3.4: a push to every resource (each applies it to its
		 * copy, this one first, and reloads it; those that asked for the
		 * list get it), then the result. */
		struct xnode *q = xnode_first_elem(x->el);
		static atomic_uint_fast64_t seq;
		char id[32];
		snprintf(id, sizeof(id), "bpush%" PRIx64,
			 (uint64_t)atomic_fetch_add_explicit(&seq, 1, memory_order_relaxed));
		struct sbuf b = SBUF_INIT;
		int rc = push_xml(&b, id, q);
		struct rmsg *m = rc ? NULL : rmsg_new(RMSG_IQ, b.data, b.len, NULL, NULL, id, T_BPUSH);
		if (!m || push_apply(s->im, b.data, b.len))
			blocks_load(s); /* the copy is in doubt until this completes */
		sbuf_free(&b);
		if (m)
			deliver_presence(s->w, s->bare, m, 0, NULL);
		if (!strcmp(q->name, "block")) /* the blocked lose the user's presence */
			for (struct xnode *it = xnode_first_elem(q); it; it = xnode_next_elem(it))
				ask(s->w, s->bare, xnode_attr(it, "jid"), T_GONE);
		reply_empty(s, x->el);
	}
	wait_free(x);
	c2s_unpark(s);
}

static int blocking_iq(struct c2s *s, struct xnode *iq, struct xnode *q)
{
	const char *type = xnode_attr(iq, "type");
	struct store_handle *h = handle(s);
	struct c2s_im *im = im_of(s);
	int get = type && !strcmp(type, "get");
	if (!h || !im || !type)
		return 0;
	int ok = get ? !strcmp(q->name, "blocklist") :
		       !strcmp(q->name, "block") || !strcmp(q->name, "unblock");
	if (!ok || xnode_next_elem(q)) {
		refuse_stanza(s, iq, s->bare, STE_BAD_REQUEST);
		return 1;
	}
	struct wait *x = wait_new(s, iq);
	if (!x) {
		c2s_stream_fail(s, SE_INTERNAL_SERVER_ERROR, NULL);
		return 1;
	}
	if (get) {
		im_flags(s, IM_F_BLOCKLIST, 0);
		park(s, store_im_blocks_async(h, s->bare, on_blocklist, x), x);
		return 1;
	}
	char **jids = NULL;
	struct xnode *xq = xnode_first_elem(x->el); /* the copy: its strings stay */
	ssize_t n = block_items(s, x, xq, &jids);
	if (n < 0) {
		wait_free(x);
		return 1;
	}
	int block = !strcmp(q->name, "block");
	if (block && !n) {
		wait_free(x);
		refuse_stanza(s, iq, s->bare, STE_BAD_REQUEST); /* §3.3: at least one item */
		return 1;
	}
	/* The items, prepared, replace the client's in the copy: the push
	 * and the presence that follows use them. */
	size_t i = 0;
	for (struct xnode *it = xnode_first_elem(xq); it; it = xnode_next_elem(it))
		if (xnode_set_attr(it, "jid", jids[i++])) {
			park(s, NULL, x);
			return 1;
		}
	enum im_block_op op = block ? IM_BLOCK_ADD : n ? IM_BLOCK_REMOVE : IM_BLOCK_CLEAR;
	park(s, store_im_block_async(h, s->bare, op, jids, (size_t)n, on_blocked, x), x);
	return 1;
}

int presence_own_iq(struct c2s *s, struct xnode *iq)
{
	struct xnode *q = xnode_first_elem(iq);
	const char *type = xnode_attr(iq, "type");
	struct store_handle *h = handle(s);
	if (q && !strcmp(q->ns, XMLNS_CARBONS) && (!strcmp(q->name, "enable") ||
						    !strcmp(q->name, "disable")))
		return carbons_iq(s, iq, q);
	if (q && !strcmp(q->ns, XMLNS_BLOCKING) && type &&
	    (!strcmp(type, "get") || !strcmp(type, "set")))
		return blocking_iq(s, iq, q);
	if (!q || strcmp(q->ns, XMLNS_ROSTER) || strcmp(q->name, "query") || !h || !type)
		return 0;
	int get = !strcmp(type, "get");
	if (!get && strcmp(type, "set"))
		return 0; /* results and errors: nothing to answer */
	if (xnode_next_elem(q)) {
		refuse_stanza(s, iq, s->bare, STE_BAD_REQUEST);
		return 1;
	}
	struct c2s_im *im = im_of(s);
	struct wait *x = im ? wait_new(s, iq) : NULL;
	if (!x) {
		c2s_stream_fail(s, SE_INTERNAL_SERVER_ERROR, NULL);
		return 1;
	}
	if (get) {
		const char *ver = xnode_attr(q, "ver");
		im_flags(s, IM_F_ROSTER, 0);
		if (ver && !(x->ver = strdup(ver))) {
			park(s, NULL, x);
			return 1;
		}
		park(s, store_im_roster_async(h, s->bare, on_roster, x), x);
		return 1;
	}
	struct im_item it;
	int remove;
	enum stanza_err e = roster_parse_set(q, &it, &remove);
	if (e) {
		wait_free(x);
		refuse_stanza(s, iq, s->bare, e);
		return 1;
	}
	struct store_op *op = remove ?
		store_im_remove_async(h, s->bare, it.jid, on_roster_change, x) :
		store_im_set_async(h, s->bare, &it, s->srv->cfg.im_max_roster_items,
				   on_roster_change, x);
	im_item_clear(&it);
	park(s, op, x);
	return 1;
}

/* ---- subscriptions (§3) ---------------------------------------------------- */

static const char *const sub_names[SUB_TYPE_COUNT] = {
	[SUB_SUBSCRIBE] = "subscribe", [SUB_UNSUBSCRIBE] = "unsubscribe",
	[SUB_SUBSCRIBED] = "subscribed", [SUB_UNSUBSCRIBED] = "unsubscribed",
};

/* Everything a subscription stanza of <t> from <user> to <contact> does
 * once both rosters have taken it (result <r>). */
static void sub_effects(struct worker *w, const char *user, const char *contact, enum sub_type t,
			const char *stanza, const struct im_sub_result *r)
{
	push_change(w, user, &r->user);
	if (!r->contact_exists) {
		/* §3.1.3: no such account: the contact's server says unsubscribed. */
		if (t == SUB_SUBSCRIBE)
			send_typed(w, contact, user, "unsubscribed");
		return;
	}
	if (!r->out.deliver)
		return;
	push_change(w, contact, &r->contact);
	if (r->auto_subscribed) {
		/* Approved already: answered for the contact, with its presence. */
		send_typed(w, contact, user, "subscribed");
		ask(w, contact, user, T_PROBE);
		return;
	}
	if (r->in.deliver) {
		/* To the contact's available resources; one that has none finds
		 * a request in its roster's pending list at its next login. */
		struct rmsg *m = rmsg_new(RMSG_PRESENCE, stanza, strlen(stanza), user, contact, NULL,
					  sub_names[t]);
		if (m)
			deliver_presence(w, contact, m, 1, NULL);
	}
	switch (t) {
	case SUB_SUBSCRIBED:   /* §3.1.5: the contact now gets the user's presence */
		ask(w, user, contact, T_PROBE);
		break;
	case SUB_UNSUBSCRIBED: /* §3.2.2: ...no longer */
		ask(w, user, contact, T_GONE);
		break;
	case SUB_UNSUBSCRIBE:  /* §3.3.3: the user no longer gets the contact's */
		ask(w, contact, user, T_GONE);
		break;
	default:
		break;
	}
}

static void on_sub(void *ud, int err, const struct im_sub_result *r)
{
	struct wait *x = ud;
	struct c2s *s = x->s;
	c2s_op_done(s);
	if (err == -EDQUOT)
		refuse_stanza(s, x->el, x->contact, STE_NOT_ALLOWED); /* the roster is full */
	else if (err)
		log_info("presence: %s to %s from %s not applied: %s", sub_names[x->type], x->contact,
			 s->bare, strerror(-err));
	else
		sub_effects(s->w, s->bare, x->contact, x->type, x->stanza, r);
	wait_free(x);
	c2s_unpark(s);
}

static void subscription(struct c2s *s, struct xnode *el, const char *to, enum sub_type t)
{
	struct jid *j = malloc(sizeof(*j));
	char bare[2 * JID_PART_MAX + 2];
	struct store_handle *h = handle(s);
	struct wait *x = NULL;
	if (!j) {
		c2s_stream_fail(s, SE_INTERNAL_SERVER_ERROR, NULL);
		return;
	}
	if (jid_parse(to, j) || jid_bare(j, bare, sizeof(bare)) < 0) {
		refuse_stanza(s, el, to, STE_JID_MALFORMED);
		goto out;
	}
	if (strcmp(j->domain, s->srv->cfg.domain)) {
		refuse_stanza(s, el, to, STE_REMOTE_SERVER_NOT_FOUND); /* no s2s yet */
		goto out;
	}
	if (!j->local[0] || !h || !strcmp(bare, s->bare))
		goto out; /* to a server, or to oneself: nothing to subscribe to */
	/* §3.1.2 and friends: stamped with the user's bare JID, addressed to
	 * the contact's. */
	if (xnode_set_attr(el, "from", s->bare) || xnode_set_attr(el, "to", bare) ||
	    !(x = wait_new(s, el)) || !(x->contact = strdup(bare))) {
		wait_free(x);
		c2s_stream_fail(s, SE_INTERNAL_SERVER_ERROR, NULL);
		goto out;
	}
	x->type = t;
	sbuf_reset(&s->out);
	if (xnode_serialize(el, XMLNS_CLIENT, &s->out) || !(x->stanza = strdup(s->out.data))) {
		sbuf_reset(&s->out);
		park(s, NULL, x);
		goto out;
	}
	sbuf_reset(&s->out);
	park(s, store_im_sub_async(h, s->bare, bare, t, x->stanza, s->srv->cfg.im_max_roster_items,
				   on_sub, x), x);
out:
	free(j);
}

/* ---- presence (§4) ----------------------------------------------------------- */

/* Remembers (<avail>) or forgets directed presence to <to>. */
static void directed(struct c2s *s, const char *to, int avail)
{
	struct c2s_im *im = im_of(s);
	if (!im)
		return;
	for (size_t i = 0; i < im->ndirected; i++) {
		if (strcmp(im->directed[i], to))
			continue;
		if (!avail) {
			free(im->directed[i]);
			im->directed[i] = im->directed[--im->ndirected];
			c2s_direct_directed(s, to, 0);
			presence_sm_save(s);
		}
		return;
	}
	if (avail && directed_add(s, im, to)) {
		c2s_direct_directed(s, to, 1);
		presence_sm_save(s);
	}
}

/* Unavailable presence <m> to every directed-presence recipient; forgets them. */
static void undirect(struct c2s *s, struct rmsg *m)
{
	struct c2s_im *im = s->im;
	for (size_t i = 0; im && i < im->ndirected; i++) {
		struct rmsg *d = rmsg_new(RMSG_PRESENCE, m->data, m->len, m->from, im->directed[i],
					  NULL, "unavailable");
		if (d)
			send_to(s->w, im->directed[i], d);
		free(im->directed[i]);
	}
	if (im && im->ndirected)
		c2s_direct_undirected(s);
	if (im)
		im->ndirected = 0;
}

static int presence_intercept(struct c2s *s, struct xnode *el, const char *to)
{
	const char *type = xnode_attr(el, "type");
	if (!type || !strcmp(type, "unavailable")) {
		if (to && strcmp(to, s->bare) && strcmp(to, s->full))
			directed(s, to, !type);
		return 0;
	}
	if (!strcmp(type, "error"))
		return 0;
	if (!strcmp(type, "probe"))
		return 1; /* §4.3: probing is the server's business */
	int t = sub_type_parse(type);
	if (t < 0) {
		refuse_stanza(s, el, to ? to : s->bare, STE_BAD_REQUEST);
		return 1;
	}
	if (to)
		subscription(s, el, to, (enum sub_type)t);
	return 1;
}

/* The broadcast of an update (or of unavailable presence, also when the
 * session ends): it does not need the session, so the session may be
 * gone when the contacts are known. */
struct bcast {
	struct worker *w;
	struct rmsg *m;
};

static void bcast_free(void *ud)
{
	struct bcast *b = ud;
	rmsg_unref(b->m);
	free(b);
}

static void on_bcast(void *ud, int err, char *const *jids, const uint8_t *states, size_t n,
		     char *const *pending, size_t np)
{
	struct bcast *b = ud;
	(void)pending;
	(void)np;
	for (size_t i = 0; !err && i < n; i++)
		if (sub_has_from(states[i]))
			deliver_presence(b->w, jids[i], rmsg_ref(b->m), 1, NULL);
	bcast_free(b);
}

/* <m> to the available resources of every contact of <bare> with a From
 * subscription, once the store has named them; consumes <m>. */
static void bcast_to(struct worker *w, struct store_handle *h, const char *bare, struct rmsg *m)
{
	struct bcast *b = h ? malloc(sizeof(*b)) : NULL;
	if (b) {
		b->w = w;
		b->m = m;
		struct store_op *op = store_im_contacts_async(h, bare, IM_WANT_FROM, on_bcast, b);
		if (op) {
			store_im_own_ud(op, bcast_free);
			return;
		}
		free(b);
	}
	rmsg_unref(m);
}

static void bcast(struct c2s *s, struct rmsg *m)
{
	bcast_to(s->w, handle(s), s->bare, m);
}

void presence_gone(struct worker *w, const char *bare, const char *full, int available,
		   const char *const *directed, size_t ndirected)
{
	struct sbuf b = SBUF_INIT;
	int rc = sbuf_puts(&b, "<presence type='unavailable' from='");
	rc |= sbuf_puts_esc(&b, full);
	rc |= sbuf_puts(&b, "'/>");
	struct rmsg *m = rc ? NULL : rmsg_new(RMSG_PRESENCE, b.data, b.len, full, NULL, NULL,
					      "unavailable");
	sbuf_free(&b);
	if (!m)
		return;
	for (size_t i = 0; i < ndirected; i++) { /* §4.6.3 */
		struct rmsg *d = rmsg_new(RMSG_PRESENCE, m->data, m->len, full, directed[i], NULL,
					  "unavailable");
		if (d)
			send_to(w, directed[i], d);
	}
	if (!available) {
		rmsg_unref(m);
		return;
	}
	deliver_presence(w, bare, rmsg_ref(m), 0, NULL); /* the account's other resources */
	bcast_to(w, w->sh, bare, m);
}

static void on_offline(void *ud, int err, char *const *msgs, const size_t *lens, size_t n)
{
	struct wait *x = ud;
	struct c2s *s = x->s;
	c2s_op_done(s);
	if (err && err != -ENOTSUP && !n)
		log_warn("offline: messages of %s not read: %s", s->bare, strerror(-err));
	/* Into the session's queue (SM: kept in the store until acked), in
	 * the order they were stored. */
	for (size_t i = 0; i < n; i++) {
		struct rmsg *m = offline_unpack(s->bare, msgs[i], lens[i]);
		if (m)
			c2s_deliver(s, m);
	}
	wait_free(x);
	c2s_unpark(s);
}

/* With XEP-0198 they were moved into the session's queue by the store, in
 * the step that took them out of offline storage: each is an entry this
 * stream learns of, as of one another node appended. */
static void on_offline_moved(void *ud, int err, const struct sm_entry *q, size_t n)
{
	struct wait *x = ud;
	struct c2s *s = x->s;
	c2s_op_done(s);
	if (err && err != -ENOTSUP)
		log_warn("offline: messages of %s not moved to session %s: %s", s->bare, s->sm.id,
			 strerror(-err));
	if (n)
		log_info("offline: %zu messages of %s moved into session %s", n, s->bare, s->sm.id);
	for (size_t i = 0; i < n; i++) {
		struct rmsg *m = q[i].msg;
		if (!q[i].seq) {
			c2s_deliver(s, rmsg_ref(m)); /* not in the queue: routed anew */
		} else if (c2s_sm_known(s, q[i].seq, m)) {
			c2s_count_out(m);
			presence_appended(s, m); /* XEP-0280 copies */
		}
	}
	wait_free(x);
	c2s_unpark(s);
}

/* XEP-0160: offline messages at the first available presence with a
 * non-negative priority. With XEP-0198 the store moves them into this
 * session's queue and out of offline storage in one step (a crash of this
 * node then loses none: they are in the queue, acknowledged or not, for a
 * resumption, or stored offline again when the session ends); without,
 * they are taken and written to the stream as they come. Parks the stream
 * until they are in. */
static void fetch_offline(struct c2s *s)
{
	struct store_handle *h = handle(s);
	struct c2s_im *im = s->im;
	if (s->priority < 0 || !h || !im || (im->flags & IM_F_OFFLINE))
		return;
	struct wait *y = wait_new(s, NULL);
	if (!y)
		return;
	im_flags(s, IM_F_OFFLINE, 0);
	if (s->flags & C2S_F_SM)
		park(s, store_im_offline_move_async(h, s->bare, s->sm.id, s->sm.epoch,
						    on_offline_moved, y), y);
	else
		park(s, store_im_offline_take_async(h, s->bare, on_offline, y), y);
}

static void on_initial(void *ud, int err, char *const *jids, const uint8_t *states, size_t n,
		       char *const *pending, size_t np)
{
	struct wait *x = ud;
	struct c2s *s = x->s;
	c2s_op_done(s);
	if (err && err != -ENOTSUP)
		log_warn("presence: contacts of %s not read: %s", s->bare, strerror(-err));
	for (size_t i = 0; !err && i < n; i++) {
		if (sub_has_from(states[i]))  /* §4.2.2: to the subscribers */
			deliver_presence(s->w, jids[i], rmsg_ref(x->m), 1, NULL);
		if (sub_has_to(states[i]))    /* §4.2.1: probes, answered to this resource */
			ask(s->w, jids[i], s->full, T_PROBE);
	}
	/* §3.1.3: requests that came while the user was offline, again at
	 * every login until answered. */
	for (size_t i = 0; !err && i < np; i++) {
		/* Through the delivery filters (a requester blocked since is
		 * not shown). The stanza was stamped by us: its from is a
		 * prepared bare JID, which has no quote in it. */
		char from[3 * JID_PART_MAX + 3] = "";
		const char *f = strstr(pending[i], " from='");
		const char *e = f ? strchr(f + 7, '\'') : NULL;
		if (e && (size_t)(e - f - 7) < sizeof(from)) {
			memcpy(from, f + 7, (size_t)(e - f - 7));
			from[e - f - 7] = 0;
		}
		struct rmsg *m = rmsg_new(RMSG_PRESENCE, pending[i], strlen(pending[i]), from,
					  s->full, NULL, "subscribe");
		if (m)
			c2s_deliver(s, m);
	}
	fetch_offline(s);
	wait_free(x);
	c2s_unpark(s);
}

void presence_broadcast(struct c2s *s, struct rmsg *m, int initial)
{
	struct c2s_im *im = im_of(s);
	int avail = !*m->type;
	if (im) {
		rmsg_unref(im->last);
		im->last = avail ? rmsg_ref(m) : NULL;
	}
	if (!avail)
		undirect(s, m);
	presence_sm_save(s); /* the last presence (and no directed ones if unavailable) */
	struct store_handle *h = handle(s);
	if (!initial || !h) {
		bcast(s, m);
		if (avail)
			fetch_offline(s); /* the first non-negative priority after a negative one */
		return;
	}
	struct wait *x = wait_new(s, NULL);
	if (!x) {
		rmsg_unref(m);
		c2s_stream_fail(s, SE_INTERNAL_SERVER_ERROR, NULL);
		return;
	}
	x->m = m;
	park(s, store_im_contacts_async(h, s->bare, IM_WANT_FROM | IM_WANT_TO | IM_WANT_PENDING,
					on_initial, x), x);
}

/* The account's other resources on this node that enabled carbons, into
 * <t>: how many. Looked up before anything is serialized or scanned, so a
 * stanza of an account without such a resource (the common case on one
 * node) costs no more. */
static size_t carbon_targets(struct c2s *s, struct route_target t[ROUTER_MAX_RESOURCES])
{
	size_t n = router_get_all(s->srv->router, s->bare, t, ROUTER_MAX_RESOURCES), k = 0;
	for (size_t i = 0; i < n; i++)
		if (t[i].carbons && !bus_addr_eq(&t[i].addr, &s->self))
			t[k++] = t[i];
	return k;
}

/* Whether the account may have resources on other nodes: with a shared
 * store this node does not know which of them enabled carbons, so every
 * eligible message is copied to them all and each passes it on or drops
 * it (deliver_filter), as pushes are. */
static int carbon_elsewhere(struct c2s *s)
{
	struct store_handle *h = handle(s);
	return h && store_shared(h);
}

/* A copy of <data> (type <type>) to the <k> resources in <t>, and to the
 * account's sessions on other nodes if <elsewhere>. */
static void carbon(struct c2s *s, const struct route_target *t, size_t k, int elsewhere, int sent,
		   const char *type, const char *data, size_t len)
{
	struct sbuf b = SBUF_INIT;
	struct rmsg *c = NULL;
	if (!carbons_wrap(&b, sent, s->bare, type, data, len))
		c = rmsg_new(RMSG_MESSAGE, b.data, b.len, s->full, NULL, NULL, T_CARBON);
	for (size_t i = 0; c && i < k; i++)
		bus_deliver(s->w, &t[i].addr, rmsg_ref(c));
	if (c && elsewhere)
		deliver_others(s->w, s->bare, c); /* their nodes' inboxes: at most once */
	rmsg_unref(c);
	sbuf_free(&b);
}

static void carbon_sent(struct c2s *s, struct xnode *el)
{
	const char *type = xnode_attr(el, "type");
	struct route_target t[ROUTER_MAX_RESOURCES];
	size_t k;
	int elsewhere;
	if (type && strcmp(type, "chat") && strcmp(type, "normal"))
		return; /* cheap refusals first: no serialization */
	k = carbon_targets(s, t);
	elsewhere = carbon_elsewhere(s);
	if (!k && !elsewhere)
		return;
	sbuf_reset(&s->out);
	if (!xnode_serialize(el, XMLNS_CLIENT, &s->out) &&
	    carbons_eligible(s->out.data, s->out.len, type ? type : ""))
		carbon(s, t, k, elsewhere, 1, type, s->out.data, s->out.len);
	sbuf_reset(&s->out);
}

/* A message received: a copy to the account's other resources with carbons. */
static void carbon_received(struct c2s *s, const struct rmsg *m)
{
	struct route_target t[ROUTER_MAX_RESOURCES];
	size_t k;
	int elsewhere;
	if (!s->full)
		return;
	k = carbon_targets(s, t);
	elsewhere = carbon_elsewhere(s);
	if ((k || elsewhere) && carbons_eligible(m->data, m->len, m->type))
		carbon(s, t, k, elsewhere, 0, m->type, m->data, m->len);
}

void presence_appended(struct c2s *s, const struct rmsg *m)
{
	if (m->kind == RMSG_MESSAGE && strncmp(m->type, "tether-", 7))
		carbon_received(s, m);
}

static int deliver_filter(struct c2s *s, struct rmsg *m);

/* ---- CSI (XEP-0352) ----------------------------------------------------------- */

/* Delivers what is held, oldest first. */
static void csi_flush(struct c2s *s)
{
	struct c2s_im *im = s->im;
	if (!im || !im->nheld)
		return;
	struct rmsg **held = im->held;
	size_t n = im->nheld;
	im->held = NULL;
	im->nheld = im->capheld = 0;
	im->flags |= IM_F_FLUSHING;
	for (size_t i = 0; i < n; i++)
		c2s_deliver(s, held[i]);
	im->flags &= ~IM_F_FLUSHING;
	free(held);
}

/* Holds presence <m> in place of an earlier one from the same sender.
 * Returns 1 if held (consumed), 0 if it must go now. */
static int csi_hold(struct c2s *s, struct rmsg *m)
{
	struct c2s_im *im = s->im;
	for (size_t i = 0; i < im->nheld; i++) {
		if (strcmp(im->held[i]->from, m->from))
			continue;
		rmsg_unref(im->held[i]);
		memmove(&im->held[i], &im->held[i + 1], (im->nheld - i - 1) * sizeof(*im->held));
		im->nheld--;
		break;
	}
	if (im->nheld == im->capheld) {
		if (im->capheld >= CSI_HELD_MAX) {
			csi_flush(s);
			return 0;
		}
		size_t cap = im->capheld ? im->capheld * 2 : 16;
		struct rmsg **n = realloc(im->held, cap * sizeof(*n));
		if (!n)
			return 0;
		im->held = n;
		im->capheld = cap;
	}
	im->held[im->nheld++] = m;
	return 1;
}

/* A chat state notification (XEP-0085) and nothing a user reads. */
static int only_chat_state(const struct rmsg *m)
{
	return !memmem(m->data, m->len, "<body", 5) &&
	       memmem(m->data, m->len, "xmlns='http://jabber.org/protocol/chatstates'", 45);
}

/* What an inactive client gets now: 1 = consumed (held or dropped). */
static int csi_filter(struct c2s *s, struct rmsg *m)
{
	if (m->kind == RMSG_PRESENCE && (!*m->type || !strcmp(m->type, "unavailable")) &&
	    *m->from && strcmp(m->from, s->full ? s->full : ""))
		return csi_hold(s, m); /* not subscription requests: those go now */
	if (m->kind == RMSG_MESSAGE && only_chat_state(m)) {
		rmsg_unref(m);
		return 1;
	}
	if (m->kind == RMSG_MESSAGE)
		csi_flush(s); /* what was held first, then the message */
	return 0;
}

int presence_csi_defers(struct c2s *s, const struct rmsg *m)
{
	if (!s->im || !(s->im->flags & IM_F_INACTIVE) || (s->im->flags & IM_F_FLUSHING))
		return 0;
	if (m->kind == RMSG_PRESENCE)
		return (!*m->type || !strcmp(m->type, "unavailable")) && *m->from &&
		       strcmp(m->from, s->full ? s->full : "");
	return m->kind == RMSG_MESSAGE && only_chat_state(m);
}

int presence_csi(struct c2s *s, struct xnode *el)
{
	struct c2s_im *im = im_of(s);
	if (!im)
		return c2s_stream_fail(s, SE_INTERNAL_SERVER_ERROR, NULL);
	if (!strcmp(el->name, "inactive")) {
		im_flags(s, IM_F_INACTIVE, 0);
	} else if (!strcmp(el->name, "active")) {
		im_flags(s, 0, IM_F_INACTIVE);
		c2s_sm_csi_flush(s); /* numbered before what csi_flush appends */
		csi_flush(s);
	} else {
		return c2s_stream_fail(s, SE_UNSUPPORTED_STANZA_TYPE, NULL);
	}
	return 0;
}

void presence_bind2(struct c2s *s, int carbons, int inactive)
{
	struct c2s_im *im = im_of(s);
	if (!im)
		return;
	if (carbons) {
		im_flags(s, IM_F_CARBONS, 0);
		router_set_carbons(s->srv->router, s->bare, s->resource, &s->self, 1);
	}
	if (inactive)
		im_flags(s, IM_F_INACTIVE, 0);
}

/* ---- delivery ------------------------------------------------------------------- */

/* XEP-0191 §3.5: a stanza to a blocked JID comes back not-acceptable,
 * with the blocking condition. */
static void refuse_blocked(struct c2s *s, struct xnode *el, const char *to)
{
	const char *type = xnode_attr(el, "type");
	const char *id = xnode_attr(el, "id");
	if (type && !strcmp(type, "error"))
		return;
	sbuf_reset(&s->out);
	int rc = sbuf_printf(&s->out, "<%s type='error'", el->name);
	if (id) {
		rc |= sbuf_puts(&s->out, " id='");
		rc |= sbuf_puts_esc(&s->out, id);
		rc |= sbuf_puts(&s->out, "'");
	}
	rc |= sbuf_puts(&s->out, " from='");
	rc |= sbuf_puts_esc(&s->out, to);
	rc |= sbuf_puts(&s->out, "' to='");
	rc |= sbuf_puts_esc(&s->out, s->full);
	rc |= sbuf_printf(&s->out, "'><error type='cancel'><not-acceptable xmlns='" XMLNS_STANZAS
			  "'/><blocked xmlns='" XMLNS_BLOCKING_ERRORS "'/></error></%s>", el->name);
	if (rc)
		sbuf_reset(&s->out);
	c2s_emit_reply(s, el->name[0] == 'm' ? RMSG_MESSAGE :
			  el->name[0] == 'p' ? RMSG_PRESENCE : RMSG_IQ, to, "error");
}

int presence_outbound(struct c2s *s, struct xnode *el, const char *to)
{
	if (to && s->im && s->im->nblocked) {
		struct jid *j = malloc(sizeof(*j));
		char buf[3 * JID_PART_MAX + 3];
		int hit = j && !jid_parse(to, j) && jid_full(j, buf, sizeof(buf)) >= 0 &&
			  !own_jid(s, buf) && is_blocked(s->im, buf);
		free(j);
		if (hit) {
			refuse_blocked(s, el, to);
			return 1;
		}
	}
	if (el->name[0] == 'm') {
		carbon_sent(s, el);
		return 0;
	}
	if (el->name[0] == 'p')
		return presence_intercept(s, el, to);
	return 0;
}

int presence_on_deliver(struct c2s *s, struct rmsg *m)
{
	if (s->im && (s->im->flags & IM_F_FLUSHING))
		return 0; /* held and filtered already */
	int rc = deliver_filter(s, m);
	if (!rc && s->im && (s->im->flags & IM_F_INACTIVE))
		rc = csi_filter(s, m);
	return rc;
}

/* Probes, pushes, carbons: what the session consumes, answers or drops
 * before CSI looks at what is left. */
static int deliver_filter(struct c2s *s, struct rmsg *m)
{
	/* XEP-0191 §3.5: nothing from a blocked JID (the account's own
	 * resources excepted); an iq request is answered for the user. */
	if (s->im && s->im->nblocked && strcmp(m->type, T_GONE) && !own_jid(s, m->from) &&
	    is_blocked(s->im, m->from)) {
		if (m->kind == RMSG_IQ && (!strcmp(m->type, "get") || !strcmp(m->type, "set")))
			deliver_bounce(s->w, s->srv->cfg.domain, m, STE_SERVICE_UNAVAILABLE);
		rmsg_unref(m);
		return 1;
	}
	if (m->kind == RMSG_IQ && !strcmp(m->type, T_BPUSH)) {
		struct c2s_im *im = im_of(s);
		if (im && push_apply(im, m->data, m->len))
			log_warn("blocking: %s: push not applied (%zu bytes): reloading", s->full ?
				 s->full : s->bare, m->len);
		blocks_load(s); /* and the list as stored, in case a push was missed */
		if (s->im && (s->im->flags & IM_F_BLOCKLIST))
			return 0;
		rmsg_unref(m);
		return 1;
	}
	if (m->kind == RMSG_MESSAGE) {
		if (!strcmp(m->type, T_CARBON)) {
			if (s->im && (s->im->flags & IM_F_CARBONS) && s->full && strcmp(m->from, s->full))
				return 0;
			rmsg_unref(m);
			return 1;
		}
		carbon_received(s, m);
		return 0;
	}
	if (m->kind == RMSG_IQ) {
		if (strcmp(m->type, T_PUSH))
			return 0;
		if (s->im && (s->im->flags & IM_F_ROSTER))
			return 0; /* an interested resource */
		rmsg_unref(m);
		return 1;
	}
	if (m->kind != RMSG_PRESENCE)
		return 0;
	int probe = !strcmp(m->type, T_PROBE), gone = !strcmp(m->type, T_GONE);
	if (!probe && !gone)
		return 0;
	if ((s->flags & C2S_F_AVAILABLE) && s->full && *m->from) {
		struct sbuf b = SBUF_INIT;
		struct rmsg *r = NULL;
		if (probe && s->im && s->im->last) {
			r = rmsg_new(RMSG_PRESENCE, s->im->last->data, s->im->last->len, s->full,
				     m->from, NULL, "");
		} else {
			int rc = sbuf_puts(&b, probe ? "<presence from='" :
					   "<presence type='unavailable' from='");
			rc |= sbuf_puts_esc(&b, s->full);
			rc |= sbuf_puts(&b, "'/>");
			if (!rc)
				r = rmsg_new(RMSG_PRESENCE, b.data, b.len, s->full, m->from, NULL,
					     probe ? "" : "unavailable");
		}
		sbuf_free(&b);
		if (r)
			send_to(s->w, m->from, r);
	}
	rmsg_unref(m);
	return 1;
}

void presence_session_end(struct c2s *s)
{
	int avail = !!(s->flags & C2S_F_AVAILABLE);
	/* RFC 6121 §4.6.3, §4.6.4: directed presence is undone when the
	 * session ends, also if it never broadcast available presence (a
	 * client may send directed presence while unavailable, §4.6.1). */
	if (!s->full || (!avail && !(s->im && s->im->ndirected)))
		return;
	struct sbuf b = SBUF_INIT;
	int rc = sbuf_puts(&b, "<presence type='unavailable' from='");
	rc |= sbuf_puts_esc(&b, s->full);
	rc |= sbuf_puts(&b, "'/>");
	struct rmsg *m = rc ? NULL : rmsg_new(RMSG_PRESENCE, b.data, b.len, s->full, NULL, NULL,
					      "unavailable");
	sbuf_free(&b);
	if (!m)
		return;
	undirect(s, m);
	if (avail)
		bcast(s, m); /* the contacts */
	else
		rmsg_unref(m);
	if (s->im) {
		rmsg_unref(s->im->last);
		s->im->last = NULL;
	}
}
