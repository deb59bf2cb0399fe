/* server/c2s_sasl2.c - XEP-0388 SASL2 on a c2s stream, with what rides inline:
 * Bind2 (XEP-0386), SM resume/enable (XEP-0198), FAST tokens (XEP-0484) and
 * Instant Stream Resumption (XEP-0397).
 *
 * An <authenticate/> is parsed once into a sasl2_req (the element's tree
 * does not outlive the callback); the mechanism runs (SCRAM/PLAIN through
 * sasl.c, HT-* here against a FAST or ISR token); on success the inline
 * requests are processed and their results go into one <success/>. */
#include "c2s_priv.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "tether/ht.h"
#include "tether/log.h"
#include "tether/metrics.h"
#include "tether/presence.h"
#include "tether/ratelimit.h"
#include "tether/router.h"
#include "tether/sm.h"
#include "tether/store.h"
#include "tether/timer.h"
#include "tether/token.h"
#include "tether/worker.h"
#include "tether/xstream.h"

#define UA_ID_MAX 64   /* a UUID is 36; allow a little more, no more */
#define TAG_MAX   64

struct sasl2_req {
	int ht;                      /* the mechanism is HT-* (FAST or ISR token) */
	enum ht_cb cb;
	char ua_id[UA_ID_MAX + 1];   /* <user-agent id/>, "" if none */
	int has_resume;              /* <resume/> inline or inside <inst-resume/> */
	char previd[SM_ID_LEN + 1];
	uint32_t h;
	int isr;                     /* <inst-resume/> */
	int isr_with_token;          /* ...with-isr-token (default true) */
	int has_bind;                /* Bind2 <bind/> */
	int bind_carbons;            /* ...with XEP-0280 <enable/> inline */
	int bind_inactive;           /* ...with XEP-0352 <inactive/> inline */
	char tag[TAG_MAX + 1];
	struct xarena *arena;        /* holds <enable/> copied out of <bind/> */
	struct xnode *enable;
	int fast;                    /* <fast/>: the token is a FAST token */
	int fast_invalidate;
	int request_token;           /* <request-token mechanism/> */
	enum ht_cb request_cb;
	int fast_used;               /* authenticated with a FAST token (fast_auth wrote the slots) */
	struct sm_resume isr_taken;  /* the session an ISR token or the inline <resume/> took */
	int resume_looked;           /* the inline <resume/>'s take came back */
	struct sbuf resume_failed;   /* ...and failed: the <failed/> it gets */
	int fast_looked;             /* a token for request-token was tried (issue_fast) */
	int has_token;               /* token/token_expiry: a FAST token for <success/> */
	char token[TOKEN_LEN + 1];
	uint64_t token_expiry;
	uint64_t t0_us;              /* when <authenticate/> came (resume latency) */
};

void c2s_sasl2_free(struct c2s *s)
{
	if (!s->req)
		return;
	xarena_free(s->req->arena);
	c2s_sm_drop(&s->req->isr_taken);
	sbuf_free(&s->req->resume_failed);
	sodium_memzero(s->req->token, sizeof(s->req->token));
	free(s->req);
	s->req = NULL;
}

/* ---- features ---------------------------------------------------------- */

static void ht_list(struct c2s *s, struct sbuf *o)
{
	static const enum ht_cb order[] = { HT_EXPR, HT_ENDP, HT_UNIQ, HT_NONE };
	for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++)
		if (c2s_ht_offered(s, order[i]))
			sbuf_printf(o, "<mechanism>%s</mechanism>", ht_mech_name(order[i]));
}

void c2s_sasl2_features(struct c2s *s, struct sbuf *o)
{
	sbuf_puts(o, "<authentication xmlns='" XMLNS_SASL2 "'>");
	c2s_mech_list(s, o);
	sbuf_puts(o, "<inline><sm xmlns='" XMLNS_SM "'/><bind xmlns='" XMLNS_BIND2 "'><inline>"
		  "<feature var='" XMLNS_SM "'/><feature var='urn:xmpp:carbons:2'/>"
		  "<feature var='" XMLNS_CSI "'/></inline></bind><fast xmlns='" XMLNS_FAST "'>");
	ht_list(s, o);
	sbuf_puts(o, "</fast></inline></authentication>");
	c2s_isr_feature(s, o);
}

void c2s_isr_feature(struct c2s *s, struct sbuf *o)
{
	/* Only on TLS streams, which all of ours are by now. */
	sbuf_puts(o, "<isr xmlns='" XMLNS_ISR "'><mechanisms xmlns='" XMLNS_SASL "'>");
	ht_list(s, o);
	sbuf_puts(o, "</mechanisms></isr>");
}

/* ---- replies ----------------------------------------------------------- */

/* SASL2 <failure/> with <cond/>, and <extra> (an SM <failed/>) if given. */
static int failure(struct c2s *s, enum sasl_cond cond, const char *extra)
{
	sbuf_reset(&s->out);
	sbuf_printf(&s->out, "<failure xmlns='" XMLNS_SASL2 "'><%s xmlns='" XMLNS_SASL "'/>%s</failure>",
		    sasl_cond_name(cond), extra ? extra : "");
	c2s_send_out(s);
	sasl_free(s->sasl);
	s->sasl = NULL;
	c2s_sasl2_free(s);
	c2s_set_state(s, C2S_WAIT_AUTH);
	return c2s_count_auth_failure(s, cond, 0);
}

static void b64_el(struct sbuf *o, const char *name, const uint8_t *data, size_t len)
{
	sbuf_printf(o, "<%s>", name);
	sasl_b64_encode(data, len, o);
	sbuf_printf(o, "</%s>", name);
}

/* ---- parsing <authenticate/> ------------------------------------------- */

static void copy_text(struct xnode *el, char *out, size_t max)
{
	const char *t = el ? xnode_text(el) : NULL;
	if (t && strlen(t) < max)
		memcpy(out, t, strlen(t) + 1);
}

/* Copies <enable/> (and its <isr-enable/>) into the request's arena. */
static void copy_enable(struct sasl2_req *r, struct xnode *en)
{
	if (!r->arena && !(r->arena = xarena_new()))
		return;
	struct xnode *c = xnode_new(r->arena, XMLNS_SM, "enable");
	if (!c)
		return;
	xnode_set_attr(c, "resume", xnode_attr(en, "resume"));
	xnode_set_attr(c, "max", xnode_attr(en, "max"));
	struct xnode *ie = xnode_child(en, XMLNS_ISR, "isr-enable");
	if (ie) {
		struct xnode *ic = xnode_new(r->arena, XMLNS_ISR, "isr-enable");
		if (ic) {
			xnode_set_attr(ic, "mechanism", xnode_attr(ie, "mechanism"));
			xnode_append(c, ic);
		}
	}
	r->enable = c;
}

static int parse_resume(struct sasl2_req *r, struct xnode *res)
{
	const char *previd = xnode_attr(res, "previd");
	if (!previd || strlen(previd) > SM_ID_LEN || sm_parse_u32(xnode_attr(res, "h"), &r->h))
		return -1;
	memcpy(r->previd, previd, strlen(previd) + 1);
	r->has_resume = 1;
	return 0;
}

/* Fills <r> from the children of <el>; <ir> gets the decoded initial
 * response. Returns 0, or a SASL condition for a malformed request. */
static enum sasl_cond parse_authenticate(struct c2s *s, struct xnode *el, struct sasl2_req *r,
					 struct sbuf *ir, int *has_ir)
{
	for (struct xnode *c = xnode_first_elem(el); c; c = xnode_next_elem(c)) {
		if (c2s_is(c, XMLNS_SASL2, "initial-response")) {
			const char *t = xnode_text(c);
			*has_ir = 1;
			/* SASL2 has no "=" rule: empty is empty. */
			if (t && *t && sasl_b64_decode(t, strlen(t), ir))
				return SASL_C_INCORRECT_ENCODING;
		} else if (c2s_is(c, XMLNS_SASL2, "user-agent")) {
			const char *id = xnode_attr(c, "id");
			if (id && strlen(id) <= UA_ID_MAX)
				memcpy(r->ua_id, id, strlen(id) + 1);
		} else if (c2s_is(c, XMLNS_BIND2, "bind")) {
			r->has_bind = 1;
			copy_text(xnode_child(c, XMLNS_BIND2, "tag"), r->tag, sizeof(r->tag));
			struct xnode *en = xnode_child(c, XMLNS_SM, "enable");
			if (en)
				copy_enable(r, en);
			r->bind_carbons = !!xnode_child(c, "urn:xmpp:carbons:2", "enable");
			r->bind_inactive = !!xnode_child(c, XMLNS_CSI, "inactive");
		} else if (c2s_is(c, XMLNS_SM, "resume")) {
			if (parse_resume(r, c))
				return SASL_C_MALFORMED_REQUEST;
		} else if (c2s_is(c, XMLNS_ISR, "inst-resume")) {
			struct xnode *res = xnode_child(c, XMLNS_SM, "resume");
			if (!res || parse_resume(r, res))
				return SASL_C_MALFORMED_REQUEST;
			r->isr = 1;
			r->isr_with_token = sm_parse_bool(xnode_attr(c, "with-isr-token")) != 0;
		} else if (c2s_is(c, XMLNS_FAST, "fast")) {
			r->fast = 1;
			r->fast_invalidate = sm_parse_bool(xnode_attr(c, "invalidate")) == 1;
		} else if (c2s_is(c, XMLNS_FAST, "request-token")) {
			if (ht_mech_parse(xnode_attr(c, "mechanism"), &r->request_cb) ||
			    !c2s_ht_offered(s, r->request_cb))
				return SASL_C_MALFORMED_REQUEST;
			r->request_token = 1;
		}
	}
	return SASL_C_NONE;
}

/* ---- after authentication: inline requests, <success/> ------------------ */

/* A Bind2 resource: "<tag>/<suffix>", the suffix stable per account and
 * user-agent id (a keyed hash that does not reveal the id), random when
 * the client sent no id. */
static void bind2_resource(struct c2s *s, const struct sasl2_req *r, char *out, size_t max)
{
	char suffix[17], tag[JID_PART_MAX + 1] = "";
	if (r->ua_id[0]) {
		unsigned char h[12];
		crypto_generichash_state st;
		crypto_generichash_init(&st, s->srv->token_key, sizeof(s->srv->token_key), sizeof(h));
		crypto_generichash_update(&st, (const unsigned char *)s->bare, strlen(s->bare) + 1);
		crypto_generichash_update(&st, (const unsigned char *)r->ua_id, strlen(r->ua_id));
		crypto_generichash_final(&st, h, sizeof(h));
		sodium_bin2base64(suffix, sizeof(suffix), h, sizeof(h),
				  sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	} else {
		router_random_resource(suffix);
	}
	if (r->tag[0] && jid_prep_resource(r->tag, tag, sizeof(tag)))
		tag[0] = 0; /* a tag that is no resourcepart is left out */
	/* A tag too long to leave room for the suffix is dropped. */
	size_t tl = strlen(tag);
	if (tl + 1 + strlen(suffix) >= max)
		tl = 0;
	memcpy(out, tag, tl);
	if (tl)
		out[tl++] = '/';
	memcpy(out + tl, suffix, strlen(suffix) + 1);
}

/* ---- FAST token slots (XEP-0484 0.2.0) ------------------------------------
 *
 * Each (account, user-agent id) has two slots: "new" (issued, not used yet)
 * and "current". A token is issued into "new" and "current" stays valid, as
 * XEP-0484 requires ("MUST NOT invalidate the existing token until the new
 * token is actually used by the client"): a client that lost the <success/>
 * carrying its new token still gets in with the one it has. Logging in with
 * "new" promotes it to "current" (the old current dies); logging in with
 * "current" keeps it. Every change is a compare-and-set against the
 * version read (store.h fast_cas), retried from the read when someone else
 * wrote in between: two logins at once never lose a token one of them was
 * given, nor bring back one the other retired or a password change revoked. */

#define FAST_CAS_TRIES 8

/* Every FAST write carries the per-account cap (store_sm.h max_entries):
 * a user-agent id is whatever the client says, so each new one would
 * otherwise be one more entry for the account, without end. */
static void fast_cap_set(struct c2s *s, struct fast_slots *sl)
{
	sl->max_entries = s->srv->cfg.max_fast_per_account;
}

static struct ratelimit_log fast_cap_log;

/* Entries of <bare> the store evicted for the cap: a limit hit, counted,
 * and logged at most once a second. */
static void fast_cap_report(struct c2s *s, const char *bare, uint32_t evicted)
{
	uint64_t suppressed;
	if (!evicted)
		return;
	metrics_add(M_LIMIT_FAST_PER_ACCOUNT, evicted);
	if (ratelimit_log_due(&fast_cap_log, timer_now_ms(), &suppressed))
		log_info("c2s %s: %s: %u FAST token entr%s evicted, over max_fast_per_account (%u); "
			 "%llu more evictions not logged since the last line", s->tp->peer(s->io), bare,
			 evicted, evicted == 1 ? "y" : "ies", s->srv->cfg.max_fast_per_account,
			 (unsigned long long)suppressed);
}

/* Seals a new token pinned to <cb> into <slot> and keeps its text in the
 * request for <success/>. 0 or -1. */
static int new_token(struct c2s *s, enum ht_cb cb, struct fast_token *slot)
{
	struct sasl2_req *r = s->req;
	token_new(r->token);
	if (token_seal(s->srv->token_key, r->token, slot->sealed)) {
		sodium_memzero(r->token, sizeof(r->token));
		return -1;
	}
	slot->valid = 1;
	slot->mech = (uint8_t)cb;
	slot->expiry_ms = sm_wall_ms() + s->srv->cfg.fast_lifetime * 1000ull;
	r->token_expiry = slot->expiry_ms;
	return 0;
}

/* The <token/> of <success/>, if this login got one. */
static void token_el(struct c2s *s, struct sbuf *o)
{
	struct sasl2_req *r = s->req;
	char stamp[32];
	if (!r->has_token)
		return;
	sm_format_stamp(r->token_expiry, stamp);
	sbuf_printf(o, "<token xmlns='" XMLNS_FAST "' expiry='%s' token='%s'/>", stamp, r->token);
	sodium_memzero(r->token, sizeof(r->token));
	r->has_token = 0;
}

/* A fresh ISR token for the session this stream now owns, replacing the
 * one just used (one-time tokens). Appends token='...' to <o>. */
static int rotate_isr(struct c2s *s, uint8_t cb, struct sbuf *o)
{
	char token[TOKEN_LEN + 1];
	uint8_t sealed[TOKEN_SEALED_LEN];
	int rc = -1;
	token_new(token);
	if (!token_seal(s->srv->token_key, token, sealed) &&
	    store_sm_set_isr_async(c2s_store(s), s->sm.id, s->sm.epoch, 1, cb, sealed, NULL, NULL)) {
		s->sm.has_isr = 1;
		s->sm.isr_mech = cb;
		sbuf_printf(o, " token='%s'", token);
		rc = 0;
	}
	sodium_memzero(token, sizeof(token));
	return rc;
}

/* Everything after a successful authentication as <user>, once the store
 * answered what finish() asked (finish_wait). <extra> is the mechanism's
 * additional data. An ISR token login arrives with its session already
 * taken (r->isr_taken) and s->bare set. */
static int finish_now(struct c2s *s, const char *user, const uint8_t *extra, size_t extra_len)
{
	struct sasl2_req *r = s->req;
	struct sbuf res = SBUF_INIT;   /* inline results */
	struct sm_resume rs;
	int resumed = 0, bound = 0, ret = 0;
	if (!s->bare && asprintf(&s->bare, "%s@%s", user, s->srv->cfg.domain) < 0) {
		s->bare = NULL;
		return c2s_stream_fail(s, SE_INTERNAL_SERVER_ERROR, NULL);
	}
	c2s_set_authed(s, 1);
	metrics_inc(M_AUTH_OK);
	log_info("c2s %s: authenticated as %s (SASL2%s)", s->tp->peer(s->io), s->bare,
		 r->ht ? (r->isr ? ", ISR token" : ", FAST token") : "");
	/* 1. Resumption first (XEP-0198 §7, XEP-0397). */
	if (r->has_resume) {
		struct sbuf failed = SBUF_INIT;
		int rc;
		if (r->isr_taken.t) {
			rs = r->isr_taken;
			r->isr_taken.t = NULL;
			rc = c2s_sm_resume_taken(s, &rs, r->h, &failed, 0);
		} else {
			rc = -1;
			sbuf_append(&failed, r->resume_failed.data, r->resume_failed.len);
		}
		metrics_inc(metrics_resume_id(r->isr ? METRIC_RESUME_ISR : METRIC_RESUME_SASL2, rc == 0,
					      r->isr_taken.other_node));
		if (rc == 0)
			metrics_observe_us(H_RESUME, metrics_now_us() - r->t0_us);
		if (rc > 0) {
			sbuf_free(&failed);
			sbuf_free(&res);
			return 1;
		}
		if (rc < 0 && r->isr && r->isr_with_token && r->ht) {
			/* Stance F: the token authenticated, the resumption failed:
			 * the stream stays unauthenticated, so a stolen token never
			 * yields a second session; the client logs in for real.
			 * Not after a password (or FAST) login: with-isr-token
			 * was moot there, the client proved who it is, and gets
			 * <inst-resume-failed/> inside its <success/>. */
			free(s->bare);
			s->bare = NULL;
			c2s_set_authed(s, 0);
			ret = failure(s, SASL_C_NOT_AUTHORIZED, failed.data);
			sbuf_free(&failed);
			sbuf_free(&res);
			return ret;
		}
		resumed = rc == 0;
		if (r->isr && resumed) {
			sbuf_puts(&res, "<inst-resumed xmlns='" XMLNS_ISR "'");
			rotate_isr(s, r->ht ? (uint8_t)r->cb : s->sm.isr_mech, &res);
			sbuf_puts(&res, ">");
			c2s_sm_resumed_el(s, &res);
			sbuf_puts(&res, "</inst-resumed>");
		} else if (r->isr) {
			sbuf_puts(&res, "<inst-resume-failed xmlns='" XMLNS_ISR "'>");
			sbuf_cat(&res, &failed);
			sbuf_puts(&res, "</inst-resume-failed>");
		} else if (resumed) {
			c2s_sm_resumed_el(s, &res);
		} else {
			sbuf_cat(&res, &failed);
		}
		sbuf_free(&failed);
	}
	/* 2. Bind2, unless resumed. */
	if (!resumed && r->has_bind) {
		char resource[JID_PART_MAX + 1];
		bind2_resource(s, r, resource, sizeof(resource));
		if (c2s_bind_resource(s, resource, 1) == 0) {
			bound = 1;
			sbuf_puts(&res, "<bound xmlns='" XMLNS_BIND2 "'>");
			c2s_set_state(s, C2S_ACTIVE);
			if (r->enable)
				c2s_sm_enable(s, r->enable, &res);
			presence_bind2(s, r->bind_carbons, r->bind_inactive); /* presence.c */
			sbuf_puts(&res, "</bound>");
			s->tp->set_timer(s->io, C2S_TIMER_MAIN, s->srv->cfg.idle_timeout * 1000u);
			log_info("session bound jid=%s worker=%u peer=%s", s->full, s->w->idx,
				 s->tp->peer(s->io));
		}
	}
	/* 3. FAST: a token asked for after another mechanism was written by
	 * issue_fast before (after a FAST login, the slots and the token were
	 * written by the FAST check). */
	token_el(s, &res);
	/* 4. One <success/>: additional data, identity, results. */
	sbuf_reset(&s->out);
	sbuf_puts(&s->out, "<success xmlns='" XMLNS_SASL2 "'>");
	if (extra_len)
		b64_el(&s->out, "additional-data", extra, extra_len);
	sbuf_puts(&s->out, "<authorization-identifier>");
	sbuf_puts_esc(&s->out, (resumed || bound) ? s->full : s->bare);
	sbuf_puts(&s->out, "</authorization-identifier>");
	sbuf_cat(&s->out, &res); /* a hole in <res> fails s->out: c2s_send_out checks */
	sbuf_puts(&s->out, "</success>");
	c2s_send_out(s);
	sbuf_free(&res);
	c2s_sasl2_free(s);
	if (resumed) {
		c2s_sm_retransmit(s, &rs); /* no features: the stream is live */
	} else if (bound) {
		c2s_send_str(s, "<stream:features/>");
	} else {
		c2s_set_state(s, C2S_WAIT_BIND);
		c2s_send_features(s); /* bind, sm, isr: the classic way on */
	}
	return ret;
}

/* ---- what finish_now needs from the store first -------------------------- */

#define FIN_EXTRA_MAX 128  /* additional data: a SCRAM signature or an HT responder hash */

/* finish() waiting for the store: the take of an inline classic <resume/>,
 * then the slots for a FAST token asked for with another mechanism. The
 * context of the pending operation, freed by the step that runs
 * finish_now, or by the cancel when the stream closes first (then the take
 * or the CAS never happened: store.h). */
struct fin_wait {
	struct c2s *s;
	char user[JID_PART_MAX + 1];
	uint8_t extra[FIN_EXTRA_MAX];
	size_t extra_len;
	int tries;
};

static void fin_wait_free(void *ctx)
{
	sodium_memzero(ctx, sizeof(struct fin_wait));
	free(ctx);
}

static void on_fin_taken(void *ud, int err, const struct sm_record *rec, const char *resource,
			 const struct sm_entry *q, size_t n, const uint8_t *resp);
static void on_fin_fast_get(void *ud, int err, const struct fast_slots *sl);

/* Issues the next operation finish_now needs. 1: issued (the stream waits
 * with <x>); 0: nothing left to ask; -1: out of memory. */
static int fin_ask(struct c2s *s, struct fin_wait *x)
{
	struct sasl2_req *r = s->req;
	struct store_op *op;
	if (r->has_resume && !r->isr_taken.t && !r->resume_looked) {
		if (strlen(r->previd) != SM_ID_LEN) {
			/* No id we issue looks like this: no lookup. */
			r->resume_looked = 1;
			sbuf_puts(&r->resume_failed, "<failed xmlns='" XMLNS_SM "'><item-not-found xmlns='"
				  XMLNS_STANZAS "'/></failed>");
			return fin_ask(s, x);
		}
		struct bus_addr to = s->self;
		op = store_sm_take_async(c2s_store(s), r->previd, s->bare, &to, NULL, on_fin_taken, x);
	} else if (r->ua_id[0] && r->request_token && !r->fast_used && !r->fast_looked) {
		op = store_fast_get_async(c2s_store(s), s->bare, r->ua_id, on_fin_fast_get, x);
	} else {
		return 0;
	}
	if (!op)
		return -1;
	c2s_park_stop(s, op, x, fin_wait_free);
	return 1;
}

/* After a callback: the next question, or the answer to the client. */
static void fin_step(struct fin_wait *x)
{
	struct c2s *s = x->s;
	int rc = fin_ask(s, x);
	if (rc > 0)
		return;
	if (rc == 0)
		finish_now(s, x->user, x->extra, x->extra_len);
	else
		c2s_stream_fail(s, SE_INTERNAL_SERVER_ERROR, NULL);
	fin_wait_free(x);
	c2s_unpark(s);
}

static void on_fin_taken(void *ud, int err, const struct sm_record *rec, const char *resource,
			 const struct sm_entry *q, size_t n, const uint8_t *resp)
{
	struct fin_wait *x = ud;
	struct c2s *s = x->s;
	struct sasl2_req *r = s->req;
	(void)resp;
	c2s_op_done(s);
	r->resume_looked = 1;
	c2s_sm_taken(s, r->previd, err, rec, resource, q, n, &r->isr_taken, &r->resume_failed);
	fin_step(x);
}

static void on_fin_fast_cas(void *ud, int err, const struct fast_slots *sl)
{
	struct fin_wait *x = ud;
	struct c2s *s = x->s;
	struct sasl2_req *r = s->req;
	c2s_op_done(s);
	if (err == 0) {
		fast_cap_report(s, s->bare, sl->evicted);
		r->has_token = 1;
		r->fast_looked = 1;
	} else {
		/* Written by someone else since our read: read again (fin_ask). */
		sodium_memzero(r->token, sizeof(r->token));
		if (err != -ESTALE || ++x->tries >= FAST_CAS_TRIES) {
			r->fast_looked = 1;
			log_warn("c2s %s: no FAST token issued for %s", s->tp->peer(s->io), s->bare);
		}
	}
	fin_step(x);
}

/* A new token into the "new" slot; "current" is left as it is. */
static void on_fin_fast_get(void *ud, int err, const struct fast_slots *sl)
{
	struct fin_wait *x = ud;
	struct c2s *s = x->s;
	struct sasl2_req *r = s->req;
	struct fast_slots next = *sl;   /* -ENOENT: empty, version 0 */
	struct store_op *op = NULL;
	(void)err;
	c2s_op_done(s);
	fast_cap_set(s, &next);
	if (!new_token(s, r->request_cb, &next.fresh))
		op = store_fast_cas_async(c2s_store(s), s->bare, r->ua_id, &next, on_fin_fast_cas, x);
	sodium_memzero(&next, sizeof(next));
	if (!op) {
		sodium_memzero(r->token, sizeof(r->token));
		r->fast_looked = 1;
		log_warn("c2s %s: no FAST token issued for %s", s->tp->peer(s->io), s->bare);
		fin_step(x);
		return;
	}
	c2s_park_stop(s, op, x, fin_wait_free);
}

/* finish_now, once the store answered what it needs: the stream waits
 * (returns 1) while it asks. Returns as a state function. */
static int finish(struct c2s *s, const char *user, const uint8_t *extra, size_t extra_len)
{
	struct fin_wait *x = calloc(1, sizeof(*x));
	if (!x || extra_len > sizeof(x->extra)) {
		free(x);
		return c2s_stream_fail(s, SE_INTERNAL_SERVER_ERROR, NULL);
	}
	if (!s->bare && asprintf(&s->bare, "%s@%s", user, s->srv->cfg.domain) < 0) {
		s->bare = NULL;
		free(x);
		return c2s_stream_fail(s, SE_INTERNAL_SERVER_ERROR, NULL);
	}
	x->s = s;
	snprintf(x->user, sizeof(x->user), "%s", user);
	if (extra_len)
		memcpy(x->extra, extra, extra_len);
	x->extra_len = extra_len;
	int rc = fin_ask(s, x);
	if (rc > 0)
		return 1;
	fin_wait_free(x);
	if (rc < 0)
		return c2s_stream_fail(s, SE_INTERNAL_SERVER_ERROR, NULL);
	return finish_now(s, user, extra, extra_len);
}

/* ---- HT-* with a token -------------------------------------------------- */

/* Which slot <hash> matches: 0 "new", 1 "current", -1 none; <*expired>
 * set if the matching token is past its expiry. */
static int fast_match(struct c2s *s, const struct fast_slots *sl, const uint8_t hash[HT_HASH_LEN],
		      const uint8_t *cb, size_t cb_len, uint8_t resp[HT_HASH_LEN], int *expired)
{
	const struct fast_token *cand[2] = { &sl->fresh, &sl->current };
	for (int i = 0; i < 2; i++) {
		char token[TOKEN_LEN + 1];
		if (!cand[i]->valid || cand[i]->mech != s->req->cb ||
		    token_open(s->srv->token_key, cand[i]->sealed, token))
			continue;
		int ok = ht_verify(token, cb, cb_len, hash);
		if (ok)
			ht_responder_hash(token, cb, cb_len, resp);
		sodium_memzero(token, sizeof(token));
		if (ok) {
			*expired = cand[i]->expiry_ms <= sm_wall_ms();
			return i;
		}
	}
	return -1;
}

/* XEP-0484 token auth with the two slots of (account, user agent): the
 * token is checked and its slot updated in one compare-and-set (see the
 * slots section above): "new" is promoted to "current", "current" stays,
 * invalidate empties both; unless invalidate (without <request-token/>)
 * says otherwise the login gets a token for <success/>: the pending "new"
 * one again when the client came with "current" (it never saw it, or it
 * is another connection of the same client: both get the same token, so
 * neither loses it), otherwise a newly issued one in "new". Returns 1, 0
 * (no match; also when the slots kept changing under us), -1 (a match, but
 * expired). */
/* One round of fast_auth on the slots <sl> as read: which slot the hash
 * matches and what to write back. Returns 1 with <next> to write, 0 (no
 * match) or -1 (a match, but expired). *<give> (a token goes into
 * <success/>) may drop to 0 if none could be made. */
static int fast_plan(struct c2s *s, const struct fast_slots *sl, const uint8_t hash[HT_HASH_LEN],
		     const uint8_t *cb, size_t cb_len, uint8_t resp[HT_HASH_LEN], int *give,
		     struct fast_slots *next)
{
	struct sasl2_req *r = s->req;
	enum ht_cb want = r->request_token ? r->request_cb : r->cb;
	int expired = 0;
	int slot = fast_match(s, sl, hash, cb, cb_len, resp, &expired);
	if (slot < 0 || expired)
		return slot < 0 ? 0 : -1;
	*next = *sl;
	if (slot == 0) {            /* "new" used: it becomes "current" */
		next->current = sl->fresh;
		memset(&next->fresh, 0, sizeof(next->fresh));
	}
	if (r->fast_invalidate)
		memset(next, 0, offsetof(struct fast_slots, version));
	int resend = *give && slot == 1 && next->fresh.valid && next->fresh.mech == want &&
		     next->fresh.expiry_ms > sm_wall_ms() + s->srv->cfg.fast_lifetime * 500ull &&
		     token_open(s->srv->token_key, next->fresh.sealed, r->token) == 0;
	if (resend)
		r->token_expiry = next->fresh.expiry_ms;
	else if (*give && new_token(s, want, &next->fresh))
		*give = 0;
	return 1;
}

/* ---- HT-* through the store handle ------------------------------------ */

/* An HT-* authentication waiting for the store (the ISR take with its
 * proof, or FAST's get and compare-and-set): the context of the pending
 * operation, freed by the last callback or, when the stream closes first,
 * with the cancel (then the take or the CAS never happened: store.h). */
struct ht_wait {
	struct c2s *s;
	char user[JID_PART_MAX + 1];
	char bare[2 * JID_PART_MAX + 2];
	uint8_t hash[HT_HASH_LEN], cb[SM_ISR_CB_MAX], resp[HT_HASH_LEN];
	size_t cb_len;
	int tries, give;
};

static void ht_wait_free(void *ctx)
{
	struct ht_wait *x = ctx;
	sodium_memzero(x, sizeof(*x));
	free(x);
}

static void on_isr_taken(void *ud, int err, const struct sm_record *rec, const char *resource,
			 const struct sm_entry *q, size_t n, const uint8_t *resp)
{
	struct ht_wait *x = ud;
	struct c2s *s = x->s;
	struct sbuf failed = SBUF_INIT;
	c2s_op_done(s);
	int rc = c2s_sm_isr_taken(s, x->bare, s->req->previd, err, rec, resource, q, n, &s->req->isr_taken, &failed);
	if (rc == 0 && resp) {
		memcpy(x->resp, resp, HT_HASH_LEN);
		finish(s, x->user, x->resp, sizeof(x->resp));
	} else {
		if (rc == 0)   /* cannot happen: a take with a proof that matched has resp */
			c2s_sm_drop(&s->req->isr_taken);
		metrics_inc(metrics_resume_id(METRIC_RESUME_ISR, 0, s->req->isr_taken.other_node));
		/* Stance F, as in ht_authenticate. */
		free(s->bare);
		s->bare = NULL;
		failure(s, SASL_C_NOT_AUTHORIZED, failed.data);
	}
	sbuf_free(&failed);
	ht_wait_free(x);
	c2s_unpark(s);
}

static void on_fast_get(void *ud, int err, const struct fast_slots *sl);
static void on_fast_cas(void *ud, int err, const struct fast_slots *sl);

/* Reads the slots (again); the answer goes to on_fast_get. */
static int fast_read(struct ht_wait *x)
{
	struct c2s *s = x->s;
	struct store_op *op = store_fast_get_async(s->tp->store(s->io), x->bare, s->req->ua_id,
						   on_fast_get, x);
	if (!op)
		return -ENOMEM;
	c2s_park_stop(s, op, x, ht_wait_free);
	return 0;
}

static void fast_give_up(struct ht_wait *x, enum sasl_cond cond)
{
	struct c2s *s = x->s;
	failure(s, cond, NULL);
	ht_wait_free(x);
	c2s_unpark(s);
}

static void on_fast_get(void *ud, int err, const struct fast_slots *sl)
{
	struct ht_wait *x = ud;
	struct c2s *s = x->s;
	struct fast_slots next;
	(void)err; /* -ENOENT: empty slots, which match nothing */
	c2s_op_done(s);
	int plan = fast_plan(s, sl, x->hash, x->cb, x->cb_len, x->resp, &x->give, &next);
	if (plan <= 0) {
		fast_give_up(x, plan < 0 ? SASL_C_CREDENTIALS_EXPIRED : SASL_C_NOT_AUTHORIZED);
		return;
	}
	fast_cap_set(s, &next);
	struct store_op *op = store_fast_cas_async(s->tp->store(s->io), x->bare, s->req->ua_id, &next,
						   on_fast_cas, x);
	sodium_memzero(&next, sizeof(next));
	if (!op) {
		fast_give_up(x, SASL_C_TEMPORARY_AUTH_FAILURE);
		return;
	}
	c2s_park_stop(s, op, x, ht_wait_free);
}

static void on_fast_cas(void *ud, int err, const struct fast_slots *sl)
{
	struct ht_wait *x = ud;
	struct c2s *s = x->s;
	struct sasl2_req *r = s->req;
	c2s_op_done(s);
	if (err == 0) {
		fast_cap_report(s, x->bare, sl->evicted);
		r->has_token = x->give;
		r->fast_used = 1;
		finish(s, x->user, x->resp, sizeof(x->resp));
		ht_wait_free(x);
		c2s_unpark(s);
		return;
	}
	sodium_memzero(r->token, sizeof(r->token));
	/* Written by someone else since our read: read again, decide again. */
	if (err == -ESTALE && ++x->tries < FAST_CAS_TRIES && fast_read(x) == 0)
		return;
	fast_give_up(x, SASL_C_NOT_AUTHORIZED);
}

/* Starts the HT-* check through the store handle <sh>; the stream parks
 * until it is decided. Returns as a state function. */
static int ht_start_async(struct c2s *s, struct store_handle *sh, const char *user,
			  const char *bare, const uint8_t hash[HT_HASH_LEN], const uint8_t *cb,
			  size_t cb_len)
{
	struct sasl2_req *r = s->req;
	struct ht_wait *x = calloc(1, sizeof(*x));
	if (!x || cb_len > sizeof(x->cb)) {
		free(x);
		return failure(s, x ? SASL_C_NOT_AUTHORIZED : SASL_C_TEMPORARY_AUTH_FAILURE, NULL);
	}
	x->s = s;
	snprintf(x->user, sizeof(x->user), "%s", user);
	snprintf(x->bare, sizeof(x->bare), "%s", bare);
	memcpy(x->hash, hash, HT_HASH_LEN);
	memcpy(x->cb, cb, cb_len);
	x->cb_len = cb_len;
	x->give = r->request_token || !r->fast_invalidate;
	if (r->isr && r->isr_with_token) {
		struct sm_isr_proof p = { .mech = (uint8_t)r->cb, .key = s->srv->token_key };
		memcpy(p.hash, hash, HT_HASH_LEN);
		memcpy(p.cb, cb, cb_len);
		p.cb_len = cb_len;
		struct bus_addr to = s->self;
		struct store_op *op = NULL;
		/* The session is taken in the same step that checks the
		 * token, so the stream needs its JID first. */
		if (asprintf(&s->bare, "%s", bare) < 0)
			s->bare = NULL;
		else
			op = store_sm_take_async(sh, r->previd, bare, &to, &p, on_isr_taken, x);
		sodium_memzero(&p, sizeof(p));
		if (!op) {
			ht_wait_free(x);
			return c2s_stream_fail(s, SE_INTERNAL_SERVER_ERROR, NULL);
		}
		c2s_park_stop(s, op, x, ht_wait_free);
		return 1;
	}
	if (fast_read(x)) {
		ht_wait_free(x);
		return c2s_stream_fail(s, SE_INTERNAL_SERVER_ERROR, NULL);
	}
	return 1;
}

static int ht_authenticate(struct c2s *s, const uint8_t *msg, size_t len)
{
	struct sasl2_req *r = s->req;
	char authcid[JID_PART_MAX + 1], user[JID_PART_MAX + 1], bare[2 * JID_PART_MAX + 2];
	uint8_t hash[HT_HASH_LEN], cb[SM_ISR_CB_MAX];
	if (ht_parse_initiator(msg, len, authcid, sizeof(authcid), hash))
		return failure(s, SASL_C_MALFORMED_REQUEST, NULL);
	if (jid_prep_local(authcid, user, sizeof(user)))
		return failure(s, SASL_C_NOT_AUTHORIZED, NULL);
	snprintf(bare, sizeof(bare), "%s@%s", user, s->srv->cfg.domain);
	size_t cb_len = r->cb == HT_NONE ? 0 : c2s_cb_data(s, r->cb, cb, sizeof(cb));
	if (r->cb != HT_NONE && !cb_len)
		return failure(s, SASL_C_NOT_AUTHORIZED, NULL);
	if (!(r->isr && r->isr_with_token) && (!r->fast || !r->ua_id[0]))
		return failure(s, SASL_C_MALFORMED_REQUEST, NULL); /* HT needs <fast/> + an id */
	int ret = ht_start_async(s, c2s_store(s), user, bare, hash, cb, cb_len);
	sodium_memzero(hash, sizeof(hash));
	return ret;
}

/* ---- entry points ------------------------------------------------------- */

/* The verdict of one SCRAM/PLAIN step (c2s_sasl_step; maybe from the
 * credentials lookup's callback). */
static int scram_done(struct c2s *s, enum sasl_rc rc, struct sbuf *out, enum sasl_cond cond)
{
	int ret = 0;
	if (!s->req) /* cannot happen: nothing frees it while the lookup is pending */
		return c2s_stream_fail(s, SE_INTERNAL_SERVER_ERROR, NULL);
	switch (rc) {
	case SASL_CONTINUE:
		sbuf_reset(&s->out);
		sbuf_puts(&s->out, "<challenge xmlns='" XMLNS_SASL2 "'>");
		sasl_b64_encode((const uint8_t *)out->data, out->len, &s->out);
		sbuf_puts(&s->out, "</challenge>");
		c2s_send_out(s);
		c2s_set_state(s, C2S_SASL2);
		break;
	case SASL_SUCCESS:
		ret = finish(s, sasl_username(s->sasl), (const uint8_t *)out->data, out->len);
		sasl_free(s->sasl);
		s->sasl = NULL;
		break;
	case SASL_FAILURE:
	case SASL_NEED_CREDS:
		ret = failure(s, rc == SASL_FAILURE ? cond : SASL_C_TEMPORARY_AUTH_FAILURE, NULL);
		break;
	}
	return ret;
}

static int scram_step(struct c2s *s, const uint8_t *in, size_t len)
{
	return c2s_sasl_step(s, in, len, scram_done);
}

int c2s_sasl2_authenticate(struct c2s *s, struct xnode *el)
{
	const char *mech = xnode_attr(el, "mechanism");
	struct sbuf ir = SBUF_INIT;
	int has_ir = 0, ret;
	enum sasl_mech m = SASL_MECH_PLAIN;
	if (c2s_auth_refused(s, el))
		return failure(s, SASL_C_TEMPORARY_AUTH_FAILURE, NULL);
	c2s_sasl2_free(s);
	s->req = calloc(1, sizeof(*s->req));
	if (!s->req)
		return c2s_stream_fail(s, SE_INTERNAL_SERVER_ERROR, NULL);
	struct sasl2_req *r = s->req;
	r->t0_us = metrics_now_us();
	if (!mech)
		return failure(s, SASL_C_MALFORMED_REQUEST, NULL);
	if (ht_mech_parse(mech, &r->cb) == 0) {
		if (!c2s_ht_offered(s, r->cb))
			return failure(s, SASL_C_INVALID_MECHANISM, NULL);
		r->ht = 1;
	} else if (sasl_mech_parse(mech, &m) || !c2s_mech_offered(s, m)) {
		return failure(s, SASL_C_INVALID_MECHANISM, NULL);
	}
	enum sasl_cond bad = parse_authenticate(s, el, r, &ir, &has_ir);
	if (bad) {
		sbuf_free_secret(&ir);
		return failure(s, bad, NULL);
	}
	if (r->ht) {
		/* HT is client-first and one round trip: no initial response, no deal. */
		ret = has_ir ? ht_authenticate(s, (const uint8_t *)(ir.data ? ir.data : ""), ir.len)
			     : failure(s, SASL_C_MALFORMED_REQUEST, NULL);
		sbuf_free_secret(&ir);
		return ret;
	}
	s->mech = m;
	s->sasl_steps = 0;
	s->sasl = c2s_sasl_new(s, m);
	if (!s->sasl) {
		sbuf_free_secret(&ir);
		return c2s_stream_fail(s, SE_INTERNAL_SERVER_ERROR, NULL);
	}
	if (!has_ir) {
		c2s_send_str(s, "<challenge xmlns='" XMLNS_SASL2 "'/>");
		c2s_set_state(s, C2S_SASL2);
		return 0;
	}
	ret = scram_step(s, (const uint8_t *)(ir.data ? ir.data : ""), ir.len);
	sbuf_free_secret(&ir);
	return ret;
}

int c2s_sasl2_step(struct c2s *s, struct xnode *el)
{
	if (c2s_is(el, XMLNS_SASL2, "response") && s->sasl) {
		const char *t = xnode_text(el);
		struct sbuf in = SBUF_INIT;
		if (t && *t && sasl_b64_decode(t, strlen(t), &in)) {
			sbuf_free_secret(&in);
			return failure(s, SASL_C_INCORRECT_ENCODING, NULL);
		}
		int ret = scram_step(s, (const uint8_t *)(in.data ? in.data : ""), in.len);
		sbuf_free_secret(&in);
		return ret;
	}
	if (c2s_is(el, XMLNS_SASL2, "abort"))
		return failure(s, SASL_C_ABORTED, NULL);
	/* XEP-0388: nothing else while authenticating; disconnect. */
	if (c2s_is_stanza(el))
		return c2s_stream_fail(s, SE_NOT_AUTHORIZED, NULL);
	return c2s_stream_fail(s, SE_POLICY_VIOLATION, "only <response/> or <abort/> during SASL2");
}
