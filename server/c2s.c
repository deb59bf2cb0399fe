/* server/c2s.c - the client-to-server stream state machine (RFC 6120).
 *
 * One function per state, chosen by a table; each takes a top-level
 * element and returns 0 to go on or 1 to stop the parser (restart, STARTTLS,
 * close). Anything unexpected is a named stream error. Sockets are the
 * transport's business: we only queue bytes and ask for a close. */
#include "c2s_priv.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "tether/deliver.h"
#include "tether/presence.h"
#include "tether/cluster.h"
#include "tether/ht.h"
#include "tether/im.h"
#include "tether/limits.h"
#include "tether/log.h"
#include "tether/metrics.h"
#include "tether/ratelimit.h"
#include "tether/router.h"
#include "tether/sm.h"
#include "tether/store.h"
#include "tether/timer.h"
#include "tether/worker.h"
#include "tether/xstream.h"

static const char *const state_name[] = {
	[C2S_WAIT_STREAM] = "wait-stream", [C2S_WAIT_STARTTLS] = "wait-starttls",
	[C2S_WAIT_AUTH] = "wait-auth", [C2S_SASL] = "sasl", [C2S_SASL2] = "sasl2",
	[C2S_WAIT_BIND] = "wait-bind",
	[C2S_ACTIVE] = "active", [C2S_CLOSING] = "closing",
};

typedef int c2s_state_fn(struct c2s *s, struct xnode *el);

/* ---- output helpers ---------------------------------------------------- */

void c2s_send_str(struct c2s *s, const char *str)
{
	if (!(s->flags & C2S_F_OOM)) /* after fail_oom's </stream:stream>, nothing */
		s->tp->send(s->io, str, strlen(str));
}

static void close_stream(struct c2s *s);

/* What an allocation failure sends: no allocation of ours, no formatting.
 * The header goes first if ours is not out yet (without an id: we could
 * not make one). */
static const char oom_header[] = "<?xml version='1.0'?><stream:stream xmlns='" XMLNS_CLIENT
	"' xmlns:stream='" XMLNS_STREAM "' version='1.0'>";
static const char oom_error[] = "<stream:error><internal-server-error xmlns='" XMLNS_STREAMS
	"'/></stream:error></stream:stream>";

/* An append to s->out failed (sbuf.h: sticky <failed>), so what it holds
 * has a hole: it is dropped, never sent, and the stream ends with
 * internal-server-error from static strings. C2S_F_OOM keeps it closing
 * whatever the caller goes on to do (c2s_set_state). */
static void fail_oom(struct c2s *s)
{
	sbuf_free(&s->out);
	if (s->flags & C2S_F_OOM)
		return;
	s->flags |= C2S_F_OOM;
	if (s->state == C2S_CLOSING)
		return; /* our </stream:stream> is already out */
	if (!(s->flags & C2S_F_HDR_SENT))
		s->tp->send(s->io, oom_header, sizeof(oom_header) - 1);
	s->flags |= C2S_F_HDR_SENT;
	s->tp->send(s->io, oom_error, sizeof(oom_error) - 1);
	log_warn("c2s %s%s%s: out of memory building output: stream error internal-server-error",
		 s->tp->peer(s->io), s->full ? " " : "", s->full ? s->full : "");
	metrics_inc(M_SE_OTHER);
	close_stream(s);
}

void c2s_send_out(struct c2s *s)
{
	if (s->out.failed || (s->flags & C2S_F_OOM)) {
		fail_oom(s);
		return;
	}
	if (s->out.len)
		s->tp->send(s->io, s->out.data, s->out.len);
	sbuf_reset(&s->out);
	/* Don't keep a big scratch buffer on an idle stream. */
	if (s->out.cap > 8192)
		sbuf_free(&s->out);
}

static void cancel_op(struct c2s *s)
{
	if (!s->op)
		return;
	store_op_cancel(s->op);
	if (s->op_free)
		s->op_free(s->op_ctx);
	c2s_op_done(s);
}

/* The gauges a stream is counted in, one at a time (metrics.h). */
enum c2s_gauge {
	C2S_G_NONE = 0,  /* transport stages (conn.c), restarts, closing */
	C2S_G_PRE_AUTH,  /* SASL offered or running */
	C2S_G_BOUND,     /* bound with a stream: a bound connection, an attached session */
	C2S_G_DETACHED,  /* XEP-0198 session waiting for a resumption */
};

static enum c2s_gauge stage_of(const struct c2s *s)
{
	if ((s->flags & (C2S_F_DETACHED | C2S_F_GONE)) == C2S_F_DETACHED)
		return C2S_G_DETACHED;
	if (s->flags & C2S_F_GONE)
		return C2S_G_NONE;
	switch (s->state) {
	case C2S_WAIT_AUTH:
	case C2S_SASL:
	case C2S_SASL2:
		return C2S_G_PRE_AUTH;
	case C2S_ACTIVE:
		return C2S_G_BOUND;
	default:
		return C2S_G_NONE;
	}
}

static void gauge_add(enum c2s_gauge g, int64_t n)
{
	switch (g) {
	case C2S_G_PRE_AUTH:
		metrics_add(M_CONNS_PRE_AUTH, n);
		break;
	case C2S_G_BOUND:
		metrics_add(M_CONNS_BOUND, n);
		metrics_add(M_SESSIONS_ATTACHED, n);
		break;
	case C2S_G_DETACHED:
		metrics_add(M_SESSIONS_DETACHED, n);
		break;
	case C2S_G_NONE:
		break;
	}
}

void c2s_count_stage(struct c2s *s, int ended)
{
	enum c2s_gauge g = ended ? C2S_G_NONE : stage_of(s);
	if (g == s->gauge)
		return;
	gauge_add(s->gauge, -1);
	gauge_add(g, 1);
	s->gauge = (unsigned char)g;
}

void c2s_set_state(struct c2s *s, enum c2s_state st)
{
	if (s->flags & C2S_F_OOM)
		st = C2S_CLOSING; /* failed for lack of memory (fail_oom): stays closed */
	log_debug("c2s %s: %s -> %s", s->tp->peer(s->io), state_name[s->state], state_name[st]);
	s->state = st;
	c2s_count_stage(s, 0);
	/* An operation that stopped the parse (a SASL lookup, FAST, a take
	 * for a resumption) has nobody to answer once the stream is over:
	 * cancelled now, it never happens (store.h: such operations are
	 * performed when they complete), so a resumption asked for by a
	 * stream that died leaves the session with its previous owner. */
	if (st == C2S_CLOSING && (s->flags & C2S_F_HOLD) && s->op) {
		cancel_op(s);
		s->flags &= ~C2S_F_HOLD;
		sbuf_free_secret(&s->held);
	}
}

static void send_header(struct c2s *s, const char *to_attr)
{
	unsigned char raw[16];
	char id[32];
	randombytes_buf(raw, sizeof(raw));
	sodium_bin2base64(id, sizeof(id), raw, sizeof(raw), sodium_base64_VARIANT_ORIGINAL);
	sbuf_reset(&s->out);
	sbuf_printf(&s->out, "<?xml version='1.0'?><stream:stream xmlns='" XMLNS_CLIENT
		    "' xmlns:stream='" XMLNS_STREAM "' id='%s' from='", id);
	sbuf_puts_esc(&s->out, s->srv->cfg.domain);
	sbuf_puts(&s->out, "'");
	if (to_attr) {
		sbuf_puts(&s->out, " to='");
		sbuf_puts_esc(&s->out, to_attr);
		sbuf_puts(&s->out, "'");
	}
	sbuf_puts(&s->out, " version='1.0' xml:lang='en'>");
	c2s_send_out(s);
	s->flags |= C2S_F_HDR_SENT;
}

static void stream_over(struct c2s *s);
static void lost_release(struct c2s *s);

/* Our side of the stream is written: stop the timers, close after the
 * output is sent, and settle the session's fate. */
static void close_stream(struct c2s *s)
{
	c2s_set_state(s, C2S_CLOSING);
	s->tp->set_timer(s->io, C2S_TIMER_MAIN, 0);
	s->tp->set_timer(s->io, C2S_TIMER_ACK, 0);
	s->tp->close(s->io);
	stream_over(s);
	lost_release(s);
}

/* Sends a stream error and closes (RFC 6120 §4.9): terminal. */
static void count_stream_error(enum stream_err e)
{
	switch (e) {
	case SE_NOT_WELL_FORMED: metrics_inc(M_SE_NOT_WELL_FORMED); break;
	case SE_POLICY_VIOLATION: metrics_inc(M_SE_POLICY_VIOLATION); break;
	case SE_CONNECTION_TIMEOUT: metrics_inc(M_SE_CONNECTION_TIMEOUT); break;
	case SE_NOT_AUTHORIZED: metrics_inc(M_SE_NOT_AUTHORIZED); break;
	case SE_CONFLICT: metrics_inc(M_SE_CONFLICT); break;
	default: metrics_inc(M_SE_OTHER); break;
	}
}

int c2s_stream_fail(struct c2s *s, enum stream_err e, const char *text)
{
	if (s->state == C2S_CLOSING)
		return 1;
	if (!(s->flags & C2S_F_HDR_SENT))
		send_header(s, NULL);
	sbuf_reset(&s->out);
	/* SE_NONE: the caller already wrote a custom <stream:error/>. */
	if (e != SE_NONE) {
		sbuf_printf(&s->out, "<stream:error><%s xmlns='" XMLNS_STREAMS "'/>", stream_err_name(e));
		if (text) {
			sbuf_puts(&s->out, "<text xmlns='" XMLNS_STREAMS "' xml:lang='en'>");
			sbuf_puts_esc(&s->out, text);
			sbuf_puts(&s->out, "</text>");
		}
		sbuf_puts(&s->out, "</stream:error>");
	}
	sbuf_puts(&s->out, "</stream:stream>");
	c2s_send_out(s);
	if (s->flags & C2S_F_OOM)
		return 1; /* fail_oom said internal-server-error instead, and closed */
	log_info("c2s %s%s%s: stream error %s%s%s", s->tp->peer(s->io), s->full ? " " : "",
		 s->full ? s->full : "", stream_err_name(e), text ? ": " : "", text ? text : "");
	count_stream_error(e);
	close_stream(s);
	return 1;
}

/* ---- features ---------------------------------------------------------- */

/* This connection's tls-server-end-point (its certificate's hash, which
 * may differ from the current one after a reload); 0 if none. */
static size_t endpoint(struct c2s *s, const uint8_t **out)
{
	const uint8_t *h = NULL;
	size_t n = s->tp->cb_endpoint ? s->tp->cb_endpoint(s->io, &h) : 0;
	if (out)
		*out = h;
	return n;
}

int c2s_mech_offered(struct c2s *s, enum sasl_mech m)
{
	switch (m) {
	case SASL_MECH_SCRAM_SHA_256_PLUS:
	case SASL_MECH_SCRAM_SHA_1_PLUS:
		/* tls-server-end-point is always there with our certificate. */
		return endpoint(s, NULL) > 0;
	case SASL_MECH_PLAIN:
		return (s->flags & C2S_F_TLS) != 0;
	default:
		return 1;
	}
}

int c2s_ht_offered(struct c2s *s, int cb)
{
	uint8_t tmp[64];
	switch (cb) {
	case HT_NONE:
		return 1;
	case HT_ENDP:
		return endpoint(s, NULL) > 0;
	case HT_EXPR:
		return s->tp->cb_exporter(s->io, tmp) > 0;
	case HT_UNIQ:
		return s->tp->cb_unique(s->io, tmp, sizeof(tmp)) > 0;
	}
	return 0;
}

size_t c2s_cb_data(struct c2s *s, int cb, uint8_t *out, size_t max)
{
	switch (cb) {
	case HT_ENDP: {
		const uint8_t *h;
		size_t n = endpoint(s, &h);
		if (n > max)
			return 0;
		memcpy(out, h, n);
		return n;
	}
	case HT_EXPR:
		return max >= 32 ? s->tp->cb_exporter(s->io, out) : 0;
	case HT_UNIQ:
		return s->tp->cb_unique(s->io, out, max);
	}
	return 0;
}

void c2s_mech_list(struct c2s *s, struct sbuf *o)
{
	for (int m = 0; m < SASL_MECH_COUNT; m++)
		if (c2s_mech_offered(s, (enum sasl_mech)m))
			sbuf_printf(o, "<mechanism>%s</mechanism>", sasl_mech_name((enum sasl_mech)m));
}

void c2s_send_features(struct c2s *s)
{
	struct sbuf *o = &s->out;
	sbuf_puts(o, "<stream:features>");
	if (!(s->flags & C2S_F_TLS)) {
		sbuf_puts(o, "<starttls xmlns='" XMLNS_TLS "'><required/></starttls>");
	} else if (!(s->flags & C2S_F_AUTHED)) {
		sbuf_puts(o, "<mechanisms xmlns='" XMLNS_SASL "'>");
		c2s_mech_list(s, o);
		sbuf_puts(o, "</mechanisms><sasl-channel-binding xmlns='" XMLNS_SASL_CB "'>");
		uint8_t tmp[64];
		if (s->tp->cb_exporter(s->io, tmp))
			sbuf_puts(o, "<channel-binding type='tls-exporter'/>");
		sbuf_puts(o, "<channel-binding type='tls-server-end-point'/>");
		if (s->tp->cb_unique(s->io, tmp, sizeof(tmp)))
			sbuf_puts(o, "<channel-binding type='tls-unique'/>");
		sbuf_puts(o, "</sasl-channel-binding>");
		c2s_sasl2_features(s, o);
	} else {
		sbuf_puts(o, "<bind xmlns='" XMLNS_BIND "'/>"
			  "<session xmlns='" XMLNS_SESSION "'><optional/></session>"
			  "<sm xmlns='" XMLNS_SM "'/>"
			  "<ver xmlns='urn:xmpp:features:rosterver'/>"
			  "<csi xmlns='" XMLNS_CSI "'/>");
		c2s_isr_feature(s, o);
	}
	sbuf_puts(o, "</stream:features>");
	c2s_send_out(s);
}

/* ---- stream header ----------------------------------------------------- */

/* RFC 6120 §4.7.5: "major.minor", two non-negative integers; we speak 1.x
 * (a higher minor is still 1.0 to us). "1.0junk" or "1." are no version. */
static int version_ok(const char *v)
{
	if (!v)
		return 0;
	size_t major = strspn(v, "0123456789");
	if (!major || v[major] != '.')
		return 0;
	size_t minor = strspn(v + major + 1, "0123456789");
	if (!minor || v[major + 1 + minor])
		return 0;
	return strtol(v, NULL, 10) == 1;
}

static int on_open(void *ud, struct xnode *hdr)
{
	struct c2s *s = ud;
	const char *to = xnode_attr(hdr, "to");
	const char *from = xnode_attr(hdr, "from");
	const char *version = xnode_attr(hdr, "version");
	if (s->state != C2S_WAIT_STREAM)
		return c2s_stream_fail(s, SE_NOT_WELL_FORMED, "unexpected stream header");
	/* The client's 'from' is echoed only once TLS protects it, and only if
	 * it is a well-formed JID. */
	struct jid *j = malloc(sizeof(*j));
	const char *echo = NULL;
	if (j && from && (s->flags & C2S_F_TLS) && jid_parse(from, j) == 0)
		echo = from;
	send_header(s, echo);
	char dom[JID_PART_MAX + 1];
	int bad_to = !to || jid_prep_domain(to, dom, sizeof(dom)) || strcmp(dom, s->srv->cfg.domain);
	free(j);
	if (bad_to)
		return c2s_stream_fail(s, SE_HOST_UNKNOWN, NULL);
	/* RFC 6120 §4.7.5: no version = pre-1.0 (no SASL): refused; major > 1 too. */
	if (!version_ok(version))
		return c2s_stream_fail(s, SE_UNSUPPORTED_VERSION, NULL);
	c2s_send_features(s);
	if (!(s->flags & C2S_F_TLS))
		c2s_set_state(s, C2S_WAIT_STARTTLS);
	else if (!(s->flags & C2S_F_AUTHED))
		c2s_set_state(s, C2S_WAIT_AUTH);
	else
		c2s_set_state(s, C2S_WAIT_BIND);
	return 0;
}

/* ---- pre-TLS ----------------------------------------------------------- */

int c2s_is(const struct xnode *el, const char *ns, const char *name)
{
	return el->name && !strcmp(el->name, name) && !strcmp(el->ns, ns);
}

int c2s_is_stanza(const struct xnode *el)
{
	return !strcmp(el->ns, XMLNS_CLIENT) &&
	       (!strcmp(el->name, "message") || !strcmp(el->name, "presence") ||
		!strcmp(el->name, "iq"));
}

static int st_wait_starttls(struct c2s *s, struct xnode *el)
{
	if (c2s_is(el, XMLNS_TLS, "starttls")) {
		c2s_send_str(s, "<proceed xmlns='" XMLNS_TLS "'/>");
		s->flags |= C2S_F_STARTTLS | C2S_F_TLS;
		s->flags &= ~C2S_F_HDR_SENT;
		c2s_set_state(s, C2S_WAIT_STREAM);
		return 1;
	}
	if (c2s_is(el, XMLNS_SASL, "auth")) {
		c2s_send_str(s, "<failure xmlns='" XMLNS_SASL "'><encryption-required/></failure>");
		return 0;
	}
	if (c2s_is_stanza(el))
		return c2s_stream_fail(s, SE_NOT_AUTHORIZED, "STARTTLS is required");
	return c2s_stream_fail(s, SE_UNSUPPORTED_STANZA_TYPE, NULL);
}

/* ---- SASL -------------------------------------------------------------- */

/* The credentials lookup of a SASL step, as a store operation: the
 * decoded client message waits here to be fed again with the answer. Freed
 * by the callback, or by c2s_free when the operation is cancelled. */
struct creds_wait {
	struct c2s *s;
	c2s_sasl_done_fn *done;
	struct sbuf in;
};

static void creds_wait_free(void *ctx)
{
	struct creds_wait *x = ctx;
	sbuf_free_secret(&x->in);
	free(x);
}

/* Steps s->sasl with the lookup's result given, and hands the verdict on. */
static int sasl_again(struct c2s *s, const uint8_t *in, size_t len, int err,
		      const struct user_creds *creds, c2s_sasl_done_fn *done)
{
	struct sbuf out = SBUF_INIT;
	enum sasl_cond cond = SASL_C_NONE;
	sasl_set_creds(s->sasl, err, creds);
	enum sasl_rc rc = sasl_step(s->sasl, in, len, &out, &cond);
	if (rc == SASL_NEED_CREDS) { /* cannot happen: it has them */
		rc = SASL_FAILURE;
		cond = SASL_C_TEMPORARY_AUTH_FAILURE;
	}
	int ret = done(s, rc, &out, cond);
	sbuf_free_secret(&out);
	return ret;
}

static void on_creds(void *ud, int err, const struct user_creds *creds)
{
	struct creds_wait *x = ud;
	struct c2s *s = x->s;
	c2s_op_done(s);
	/* The stream may have ended meanwhile (a kick, a shutdown): the
	 * exchange has nobody to answer. */
	if (s->state != C2S_CLOSING && s->sasl)
		sasl_again(s, (const uint8_t *)(x->in.data ? x->in.data : ""), x->in.len, err, creds,
			   x->done);
	creds_wait_free(x);
	c2s_unpark(s);
}

int c2s_sasl_step(struct c2s *s, const uint8_t *in, size_t len, c2s_sasl_done_fn *done)
{
	struct sbuf out = SBUF_INIT;
	enum sasl_cond cond = SASL_C_NONE;
	char bare[2 * JID_PART_MAX + 2];
	s->sasl_steps++;
	enum sasl_rc rc = sasl_step(s->sasl, in, len, &out, &cond);
	if (rc != SASL_NEED_CREDS) {
		int ret = done(s, rc, &out, cond);
		sbuf_free_secret(&out);
		return ret;
	}
	snprintf(bare, sizeof(bare), "%s@%s", sasl_user(s->sasl), s->srv->cfg.domain);
	struct creds_wait *x = calloc(1, sizeof(*x));
	struct store_op *op = NULL;
	if (x) {
		x->s = s;
		x->done = done;
		if (sbuf_append(&x->in, (const char *)in, len) == 0)
			op = store_user_get_async(c2s_store(s), bare, on_creds, x);
	}
	if (!op) {
		if (x)
			creds_wait_free(x);
		return c2s_stream_fail(s, SE_INTERNAL_SERVER_ERROR, NULL);
	}
	c2s_park_stop(s, op, x, creds_wait_free);
	return 1;
}

static void sasl_reply(struct c2s *s, const char *elem, const struct sbuf *data)
{
	sbuf_reset(&s->out);
	s->out.failed = data->failed; /* a challenge with a hole is never sent */
	/* RFC 6120 §6.4.6: no additional data (PLAIN) is an empty element;
	 * '=' would be additional data of zero length, which none of our
	 * mechanisms sends. */
	if (!data->len) {
		sbuf_printf(&s->out, "<%s xmlns='" XMLNS_SASL "'/>", elem);
	} else {
		sbuf_printf(&s->out, "<%s xmlns='" XMLNS_SASL "'>", elem);
		sasl_b64_encode((const uint8_t *)data->data, data->len, &s->out);
		sbuf_printf(&s->out, "</%s>", elem);
	}
	c2s_send_out(s);
}

int c2s_count_auth_failure(struct c2s *s, enum sasl_cond cond, int probe)
{
	if (cond == SASL_C_ABORTED || probe)
		return 0;
	limits_auth_failed(s->srv->limits, s->tp, s->io, sasl_cond_name(cond), timer_now_ms());
	metrics_inc(M_AUTH_FAIL);
	if (++s->auth_failures >= s->srv->cfg.max_auth_failures)
		return c2s_stream_fail(s, SE_POLICY_VIOLATION, "too many failed authentication attempts");
	return 0;
}

static int sasl_failed(struct c2s *s, enum sasl_cond cond)
{
	/* A -PLUS exchange that fails on its first message never checked a
	 * password: the client asked for a channel binding this connection
	 * lacks (slixmpp <= 1.8 sends tls-unique on TLS 1.3, where it is
	 * undefined). It then saw -PLUS offered, so its later 'y' flag is no
	 * sign of a stripped feature list (RFC 5802 §6): accept it, and don't
	 * count the attempt as a credentials failure. */
	int plus_probe = s->sasl && s->sasl_steps <= 1 && cond != SASL_C_ABORTED &&
			 (s->mech == SASL_MECH_SCRAM_SHA_256_PLUS || s->mech == SASL_MECH_SCRAM_SHA_1_PLUS);
	if (plus_probe)
		s->flags |= C2S_F_PLUS_FAILED;
	sasl_free(s->sasl);
	s->sasl = NULL;
	sbuf_reset(&s->out);
	sbuf_printf(&s->out, "<failure xmlns='" XMLNS_SASL "'><%s/></failure>", sasl_cond_name(cond));
	c2s_send_out(s);
	c2s_set_state(s, C2S_WAIT_AUTH);
	return c2s_count_auth_failure(s, cond, plus_probe);
}

/* The verdict of one SASL step (c2s_sasl_step). */
static int sasl_done(struct c2s *s, enum sasl_rc rc, struct sbuf *out, enum sasl_cond cond)
{
	int ret = 0;
	switch (rc) {
	case SASL_CONTINUE:
		sasl_reply(s, "challenge", out);
		c2s_set_state(s, C2S_SASL);
		break;
	case SASL_SUCCESS:
		sasl_reply(s, "success", out);
		if (asprintf(&s->bare, "%s@%s", sasl_username(s->sasl), s->srv->cfg.domain) < 0)
			s->bare = NULL;
		sasl_free(s->sasl);
		s->sasl = NULL;
		if (!s->bare) {
			s->bare = NULL;
			ret = c2s_stream_fail(s, SE_INTERNAL_SERVER_ERROR, NULL);
			break;
		}
		log_info("c2s %s: authenticated as %s", s->tp->peer(s->io), s->bare);
		metrics_inc(M_AUTH_OK);
		/* RFC 6120 §6.4.6: the client restarts the stream. */
		c2s_set_authed(s, 1);
		s->flags |= C2S_F_RESTART;
		s->flags &= ~C2S_F_HDR_SENT;
		c2s_set_state(s, C2S_WAIT_STREAM);
		ret = 1;
		break;
	case SASL_FAILURE:
	case SASL_NEED_CREDS:
		ret = sasl_failed(s, rc == SASL_FAILURE ? cond : SASL_C_TEMPORARY_AUTH_FAILURE);
		break;
	}
	return ret;
}

/* Runs one SASL step on the base64 text of <el>. */
static int sasl_run(struct c2s *s, struct xnode *el)
{
	const char *b64 = xnode_text(el);
	struct sbuf in = SBUF_INIT;
	if (!b64)
		return c2s_stream_fail(s, SE_INTERNAL_SERVER_ERROR, NULL);
	if (sasl_b64_decode(b64, strlen(b64), &in)) {
		sbuf_free_secret(&in);
		return sasl_failed(s, SASL_C_INCORRECT_ENCODING);
	}
	int ret = c2s_sasl_step(s, (const uint8_t *)(in.data ? in.data : ""), in.len, sasl_done);
	sbuf_free_secret(&in);
	return ret;
}

struct sasl *c2s_sasl_new(struct c2s *s, enum sasl_mech m)
{
	uint8_t exporter[SASL_CB_EXPORTER_MAX], unique[SASL_CB_UNIQUE_MAX];
	struct sasl_env env = { .domain = s->srv->cfg.domain, .tls = (s->flags & C2S_F_TLS) != 0 };
	env.plus_offered = c2s_mech_offered(s, SASL_MECH_SCRAM_SHA_256_PLUS) &&
			   !(s->flags & C2S_F_PLUS_FAILED);
	env.cb.tls_exporter_len = s->tp->cb_exporter(s->io, exporter);
	env.cb.tls_exporter = exporter;
	env.cb.tls_server_end_point_len = endpoint(s, &env.cb.tls_server_end_point);
	env.cb.tls_unique_len = s->tp->cb_unique(s->io, unique, sizeof(unique));
	env.cb.tls_unique = unique;
	/* No get_creds: the lookup goes through the store handle
	 * (c2s_sasl_step), asynchronously. */
	struct sasl *x = sasl_new(m, &env); /* copies env and the bytes */
	sodium_memzero(exporter, sizeof(exporter));
	sodium_memzero(unique, sizeof(unique));
	return x;
}

static int do_auth(struct c2s *s, struct xnode *el)
{
	const char *mech = xnode_attr(el, "mechanism");
	enum sasl_mech m;
	if (c2s_auth_refused(s, el))
		return sasl_failed(s, SASL_C_TEMPORARY_AUTH_FAILURE);
	if (!mech)
		return sasl_failed(s, SASL_C_MALFORMED_REQUEST);
	if (sasl_mech_parse(mech, &m) || !c2s_mech_offered(s, m))
		return sasl_failed(s, SASL_C_INVALID_MECHANISM);
	s->mech = m;
	s->sasl_steps = 0;
	s->sasl = c2s_sasl_new(s, m);
	if (!s->sasl)
		return c2s_stream_fail(s, SE_INTERNAL_SERVER_ERROR, NULL);
	const char *text = xnode_text(el);
	if (text && !*text) {
		/* No initial response: an empty challenge asks for it. */
		c2s_send_str(s, "<challenge xmlns='" XMLNS_SASL "'/>");
		c2s_set_state(s, C2S_SASL);
		return 0;
	}
	return sasl_run(s, el);
}

static int st_wait_auth(struct c2s *s, struct xnode *el)
{
	if (c2s_is(el, XMLNS_SASL, "auth"))
		return do_auth(s, el);
	if (c2s_is(el, XMLNS_SASL2, "authenticate"))
		return c2s_sasl2_authenticate(s, el);
	if (!strcmp(el->ns, XMLNS_SM))
		return c2s_stream_fail(s, SE_NOT_AUTHORIZED, NULL); /* SM before auth */
	if (c2s_is(el, XMLNS_TLS, "starttls"))
		return c2s_stream_fail(s, SE_POLICY_VIOLATION, "TLS is already established");
	if (c2s_is_stanza(el))
		return c2s_stream_fail(s, SE_NOT_AUTHORIZED, NULL);
	return c2s_stream_fail(s, SE_UNSUPPORTED_STANZA_TYPE, NULL);
}

static int st_sasl(struct c2s *s, struct xnode *el)
{
	if (c2s_is(el, XMLNS_SASL, "response"))
		return sasl_run(s, el);
	if (c2s_is(el, XMLNS_SASL, "abort"))
		return sasl_failed(s, SASL_C_ABORTED);
	if (c2s_is(el, XMLNS_SASL, "auth")) {
		sasl_free(s->sasl);
		s->sasl = NULL;
		return sasl_failed(s, SASL_C_MALFORMED_REQUEST);
	}
	if (c2s_is_stanza(el))
		return c2s_stream_fail(s, SE_NOT_AUTHORIZED, NULL);
	return c2s_stream_fail(s, SE_UNSUPPORTED_STANZA_TYPE, NULL);
}

/* ---- binding ----------------------------------------------------------- */

static void reply_iq_error(struct c2s *s, struct xnode *iq, enum stanza_err e)
{
	sbuf_reset(&s->out);
	im_error_reply(iq, NULL, s->full ? s->full : s->bare, e, &s->out);
	c2s_send_out(s);
}

int c2s_bind_resource(struct c2s *s, const char *res, int kick_old)
{
	struct bus_addr old;
	int rc = router_bind(s->srv->router, s->bare, res, &s->self, &old);
	if (rc == 1 && kick_old) /* the same full JID was bound: the new session wins */
		bus_kick(s->w, &old, SE_CONFLICT);
	if (rc < 0)
		return STE_RESOURCE_CONSTRAINT;
	free(s->resource);
	free(s->full);
	s->resource = strdup(res);
	if (!s->resource || asprintf(&s->full, "%s/%s", s->bare, res) < 0) {
		s->full = NULL;
		router_unbind(s->srv->router, s->bare, res, &s->self);
		return STE_INTERNAL_SERVER_ERROR;
	}
	s->flags |= C2S_F_BOUND;
	metrics_inc(M_BOUND);
	if (kick_old) /* a new bind, not a resumed XEP-0198 session */
		c2s_direct_bind(s);
	presence_bound(s); /* XEP-0191 blocklist (presence.c) */
	return 0;
}

static int do_bind(struct c2s *s, struct xnode *iq, struct xnode *bind)
{
	char res[JID_PART_MAX + 1];
	struct xnode *r = xnode_child(bind, XMLNS_BIND, "resource");
	const char *want = r ? xnode_text(r) : "";
	if (!want)
		return c2s_stream_fail(s, SE_INTERNAL_SERVER_ERROR, NULL);
	if (*want) {
		if (jid_prep_resource(want, res, sizeof(res))) {
			reply_iq_error(s, iq, STE_BAD_REQUEST);
			return 0;
		}
	} else {
		router_random_resource(res);
	}
	int err = c2s_bind_resource(s, res, 1);
	if (err) {
		reply_iq_error(s, iq, (enum stanza_err)err);
		return 0;
	}
	sbuf_reset(&s->out);
	sbuf_puts(&s->out, "<iq type='result'");
	const char *id = xnode_attr(iq, "id");
	if (id) {
		sbuf_puts(&s->out, " id='");
		sbuf_puts_esc(&s->out, id);
		sbuf_puts(&s->out, "'");
	}
	sbuf_puts(&s->out, "><bind xmlns='" XMLNS_BIND "'><jid>");
	sbuf_puts_esc(&s->out, s->full);
	sbuf_puts(&s->out, "</jid></bind></iq>");
	c2s_send_out(s);
	s->tp->set_timer(s->io, C2S_TIMER_MAIN, s->srv->cfg.idle_timeout * 1000u);
	c2s_set_state(s, C2S_ACTIVE);
	log_info("session bound jid=%s worker=%u peer=%s", s->full, s->self.worker, s->tp->peer(s->io));
	return 0;
}

static int st_wait_bind(struct c2s *s, struct xnode *el)
{
	if (c2s_is(el, XMLNS_CLIENT, "iq")) {
		const char *type = xnode_attr(el, "type");
		struct xnode *bind = xnode_child(el, XMLNS_BIND, "bind");
		if (bind && type && !strcmp(type, "set"))
			return do_bind(s, el, bind);
		if (xnode_child(el, XMLNS_SESSION, "session")) {
			sbuf_reset(&s->out);
			if (xnode_attr(el, "to"))
				im_server_iq(el, s->srv->cfg.domain, s->bare, &s->out);
			else /* answered for the account (RFC 6120 §10.3.3) */
				im_account_iq(el, s->bare, s->bare, 1, &s->out);
			c2s_send_out(s);
			return 0;
		}
		return c2s_stream_fail(s, SE_NOT_AUTHORIZED, "bind a resource first");
	}
	if (!strcmp(el->ns, XMLNS_SM))
		return c2s_sm_nonza(s, el);
	if (c2s_is(el, XMLNS_SASL, "auth") || c2s_is(el, XMLNS_SASL2, "authenticate"))
		return c2s_stream_fail(s, SE_POLICY_VIOLATION, "already authenticated");
	if (c2s_is_stanza(el))
		return c2s_stream_fail(s, SE_NOT_AUTHORIZED, "bind a resource first");
	return c2s_stream_fail(s, SE_UNSUPPORTED_STANZA_TYPE, NULL);
}

static void on_store_caught_up(void *ud)
{
	struct c2s *s = ud;
	s->flags &= ~C2S_F_BP;
	c2s_op_done(s);
	c2s_unpark(s);
}

/* A store slower than the clients (Redis over the network) must not get a
 * pipeline longer than it answers within its deadlines: past
 * C2S_STORE_HIGH operations in flight on this worker, the sender stops
 * parsing (its input waits, its socket is not read) until everything
 * issued so far completed. The memory backend never has such a backlog
 * (store_backlog): pausing there only cost a copy of the input and a
 * barrier, hundreds of times in an open-loop flood. Returns 1 if the
 * stream stopped. */
static int store_backpressure(struct c2s *s)
{
	struct store_handle *sh = c2s_store(s);
	if (s->op || store_backlog(sh) <= C2S_STORE_HIGH)
		return 0;
	struct store_op *op = store_barrier_async(sh, on_store_caught_up, s);
	if (!op)
		return 0;
	metrics_inc(M_STORE_BACKPRESSURE);
	s->flags |= C2S_F_BP;
	c2s_park_stop(s, op, NULL, NULL);
	return 1;
}

static int st_active(struct c2s *s, struct xnode *el)
{
	if (c2s_is_stanza(el)) {
		if (c2s_sm_count_in(s))
			return 1; /* the session moved away under us */
		c2s_route_stanza(s, el);
		return s->state == C2S_CLOSING || c2s_flow_hold(s) || store_backpressure(s);
	}
	if (!strcmp(el->ns, XMLNS_SM))
		return c2s_sm_nonza(s, el);
	if (!strcmp(el->ns, XMLNS_CSI))
		return presence_csi(s, el); /* XEP-0352 (presence.c) */
	if (c2s_is(el, XMLNS_SASL, "auth") || c2s_is(el, XMLNS_SASL2, "authenticate"))
		return c2s_stream_fail(s, SE_POLICY_VIOLATION, "already authenticated");
	return c2s_stream_fail(s, SE_UNSUPPORTED_STANZA_TYPE, NULL);
}

static int st_closing(struct c2s *s, struct xnode *el)
{
	(void)s;
	(void)el;
	return 1;
}

static int st_wait_stream(struct c2s *s, struct xnode *el)
{
	(void)el;
	return c2s_stream_fail(s, SE_NOT_WELL_FORMED, NULL);
}

static c2s_state_fn *const state_fn[C2S_STATE_COUNT] = {
	[C2S_WAIT_STREAM] = st_wait_stream,
	[C2S_WAIT_STARTTLS] = st_wait_starttls,
	[C2S_WAIT_AUTH] = st_wait_auth,
	[C2S_SASL] = st_sasl,
	[C2S_SASL2] = c2s_sasl2_step,
	[C2S_WAIT_BIND] = st_wait_bind,
	[C2S_ACTIVE] = st_active,
	[C2S_CLOSING] = st_closing,
};

/* ---- parking while a store operation is pending ------------------------- */

/* An element that arrived while the stream was parked: a copy in its own
 * arena (the parser's is reset after every element). Or a stanza
 * delivered to a session without XEP-0198 that is leaving while it waits
 * (lost_hold): routed again once the session is unbound. */
struct c2s_parked {
	struct c2s_parked *next;
	struct xarena *a;
	struct xnode *el;
	struct rmsg *m;
};

static int park_el(struct c2s *s, struct xnode *el)
{
	struct c2s_parked *p = malloc(sizeof(*p));
	struct xarena *a = p ? xarena_new() : NULL;
	struct xnode *c = a ? xnode_copy(a, el) : NULL;
	if (!c) {
		xarena_free(a);
		free(p);
		return c2s_stream_fail(s, SE_INTERNAL_SERVER_ERROR, NULL);
	}
	p->a = a;
	p->el = c;
	p->m = NULL;
	p->next = NULL;
	*s->parked_tail = p;
	s->parked_tail = &p->next;
	/* Reading stops when the feed returns; this only bounds what one
	 * feed that was already under way can add. */
	if (++s->nparked > C2S_PARKED_MAX)
		return c2s_stream_fail(s, SE_POLICY_VIOLATION, "too many stanzas at once");
	return 0;
}

/* Input left is dropped; deliveries held while the session was leaving
 * (lost_hold) find their recipient again (the session is unbound by now).
 * The list is taken first: a re-route that comes back here (the session
 * still bound after all) is held on a fresh one, not looped on. */
static void drop_parked(struct c2s *s)
{
	struct c2s_parked *p = s->parked;
	s->parked = NULL;
	s->parked_tail = &s->parked;
	s->nparked = 0;
	while (p) {
		struct c2s_parked *next = p->next;
		if (p->m)
			deliver_stale(s->w, s->srv->cfg.domain, &s->self, p->m);
		xarena_free(p->a);
		free(p);
		p = next;
	}
}

void c2s_park(struct c2s *s, struct store_op *op, void *ctx, void (*ctx_free)(void *))
{
	/* One at a time: nothing is dispatched while parked (on_stanza). */
	s->op = op;
	s->op_ctx = ctx;
	s->op_free = ctx_free;
	if (s->tp->park_read)
		s->tp->park_read(s->io, 1);
}

void c2s_park_stop(struct c2s *s, struct store_op *op, void *ctx, void (*ctx_free)(void *))
{
	c2s_park(s, op, ctx, ctx_free);
	s->flags |= C2S_F_HOLD;
}

/* Keeps <len> bytes of <data> for after the pending operation. Returns 0,
 * or 1 once the stream failed (too much, or out of memory). */
static int hold_input(struct c2s *s, const char *data, size_t len)
{
	if (s->held.len + len > ((s->flags & (C2S_F_BP | C2S_F_FLOW)) ? C2S_HELD_BP_MAX : C2S_HELD_MAX)) {
		c2s_stream_fail(s, SE_POLICY_VIOLATION, "too much input at once");
		return 1;
	}
	if (sbuf_append(&s->held, data, len)) {
		c2s_stream_fail(s, SE_INTERNAL_SERVER_ERROR, NULL);
		return 1;
	}
	return 0;
}

/* Feeds what waited under C2S_F_HOLD, once the operation is over; the
 * callback may have restarted the stream (SASL success), so the parser is
 * reset first if it asked for that. */
static void feed_held(struct c2s *s)
{
	struct sbuf in = s->held;
	s->held = (struct sbuf)SBUF_INIT;
	s->flags &= ~C2S_F_HOLD;
	if (s->state != C2S_CLOSING && (s->flags & C2S_F_RESTART)) {
		s->flags &= ~C2S_F_RESTART;
		if (xstream_reset(s->xs))
			c2s_stream_fail(s, SE_INTERNAL_SERVER_ERROR, NULL);
	}
	/* STARTTLS cannot come from here: no store operation starts before
	 * TLS, and after it <starttls/> is a stream error. */
	if (s->state != C2S_CLOSING && in.len &&
	    c2s_feed(s, in.data, in.len) == TP_FEED_STARTTLS)
		c2s_stream_fail(s, SE_INTERNAL_SERVER_ERROR, NULL);
	sbuf_free_secret(&in);
}

void c2s_op_done(struct c2s *s)
{
	s->op = NULL;
	s->op_ctx = NULL;
	s->op_free = NULL;
}

static void peer_closed(struct c2s *s);

/* ---- a connection lost with input still parked -------------------------- */

/* Bounds the wait: [limits] lost_input_timeout for an operation; the
 * flow-control pause, whose timer went with the socket, is a timer tick
 * here. */
static void lost_wait_arm(struct c2s *s)
{
	if (s->flags & C2S_F_LOST_WAIT)
		s->tp->set_timer(s->io, C2S_TIMER_MAIN,
				 s->op ? s->srv->cfg.lost_input_timeout * 1000u : C2S_PAUSE_MAX_MS);
}

/* The connection went away while input it had sent waited for a store
 * operation: the stanza the operation is for (an account lookup, a
 * roster load), what was parked behind it, the bytes behind a
 * backpressure barrier, a </stream:stream> after them (the sendxmpp
 * pattern: send, close, hang up). RFC 6120 §4.4: what was received before
 * the close is processed. So the session stays (c2s_is_held) and bound
 * until that input is done, its replies going nowhere, and then ends as
 * the loss or the close would have ended it. */
static int lost_wait(struct c2s *s)
{
	if (s->state != C2S_ACTIVE || (s->flags & C2S_F_LOST_WAIT) ||
	    !(s->op || (s->flags & C2S_F_FLOW)))
		return 0;
	log_debug("c2s %s: connection lost: processing what it sent first", s->tp->peer(s->io));
	s->flags |= C2S_F_LOST_WAIT;
	s->tp->set_timer(s->io, C2S_TIMER_ACK, 0);
	lost_wait_arm(s); /* the idle timer's turn is over */
	return 1;
}

static void lost_wait_timeout(struct c2s *s)
{
	if (!s->op && (s->flags & C2S_F_FLOW)) {
		c2s_flow_unpaused(s);
		return;
	}
	log_warn("c2s %s%s%s: connection lost: the store did not answer in %u s, dropping %u parked stanzas",
		 s->tp->peer(s->io), s->full ? " " : "", s->full ? s->full : "",
		 s->srv->cfg.lost_input_timeout, s->nparked);
	c2s_on_lost(s);
}

/* A stanza for a session without XEP-0198 that is leaving while input
 * waits (its connection gone, or its </stream:stream> parked: the peer
 * reads no more): held, in order after that input, and routed again once
 * the session is unbound (drop_parked), since sending it would lose it.
 * Returns 0 if it was not held: too many, or no memory; then the wait is
 * given up and the session unbound. */
static int lost_hold(struct c2s *s, struct rmsg *m)
{
	struct c2s_parked *p = s->nparked < C2S_PARKED_MAX ? calloc(1, sizeof(*p)) : NULL;
	if (!p) {
		if (s->flags & C2S_F_LOST_WAIT)
			c2s_on_lost(s);
		else
			peer_closed(s);
		return 0;
	}
	p->m = m;
	*s->parked_tail = p;
	s->parked_tail = &p->next;
	s->nparked++;
	return 1;
}

/* The stream is over and the session unbound: what is still parked goes
 * (deliveries held by lost_hold routed again), and after a wait for lost
 * input the holder may be freed. */
static void lost_release(struct c2s *s)
{
	drop_parked(s);
	if (!(s->flags & C2S_F_LOST_WAIT))
		return;
	s->flags &= ~C2S_F_LOST_WAIT;
	s->tp->release(s->io);
}

/* The parked elements in order, until one waits again (a store
 * operation, flow control) or ends the stream. Deliveries held meanwhile
 * (lost_hold) stay where they are. */
static void run_parked(struct c2s *s)
{
	struct c2s_parked **pp = &s->parked;
	while (!s->op && *pp && !(s->flags & C2S_F_FLOW)) {
		struct c2s_parked *p = *pp;
		if (!p->el) {
			pp = &p->next;
			continue;
		}
		if (!(*pp = p->next))
			s->parked_tail = pp;
		s->nparked--;
		int stop = s->state == C2S_CLOSING || state_fn[s->state](s, p->el);
		xarena_free(p->a);
		free(p);
		/* Stopped to wait (flow control, the store catching up): the
		 * rest stays parked; stopped for good (a restart, the end):
		 * the rest is dropped. */
		if (stop || s->state == C2S_CLOSING) {
			if (!(s->flags & (C2S_F_FLOW | C2S_F_BP)))
				drop_parked(s);
			return;
		}
	}
}

void c2s_unpark(struct c2s *s)
{
	run_parked(s);
	if (s->op || (s->flags & C2S_F_FLOW)) {
		lost_wait_arm(s);
		return; /* c2s_flow_unpaused or the operation's callback resumes */
	}
	if (s->flags & C2S_F_HOLD) {
		feed_held(s);
		if (s->op || (s->flags & C2S_F_FLOW)) {
			lost_wait_arm(s);
			return;
		}
		if (s->state == C2S_CLOSING)
			return;
	}
	if (s->flags & C2S_F_CLOSE_WAIT) {
		s->flags &= ~C2S_F_CLOSE_WAIT;
		if (s->state != C2S_CLOSING)
			peer_closed(s);
		return;
	}
	if (s->flags & C2S_F_LOST_WAIT) {
		c2s_on_lost(s); /* all it left is done: now the loss */
		return;
	}
	if (s->tp->park_read)
		s->tp->park_read(s->io, 0);
}

static int on_stanza(void *ud, struct xnode *el)
{
	struct c2s *s = ud;
	if (s->op)
		return park_el(s, el);
	return state_fn[s->state](s, el);
}

static int on_close(void *ud)
{
	struct c2s *s = ud;
	if (s->state == C2S_CLOSING)
		return 1;
	if (s->op) {
		s->flags |= C2S_F_CLOSE_WAIT; /* after what is parked */
		return 1;
	}
	peer_closed(s);
	return 1;
}

static void peer_closed(struct c2s *s)
{
	c2s_send_str(s, "</stream:stream>");
	log_debug("c2s %s: closed by peer", s->tp->peer(s->io));
	/* A clean close ends the session for good: no resumption (XEP-0198 §4). */
	s->end_mode = C2S_END_SESSION;
	close_stream(s);
}

static const struct xstream_ops xs_ops = {
	.on_open = on_open, .on_stanza = on_stanza, .on_close = on_close,
};

/* ---- lifecycle --------------------------------------------------------- */

void c2s_set_authed(struct c2s *s, int authed)
{
	const struct config *cfg = &s->srv->cfg;
	/* A stranger gets the small stanza limit: every parser byte it can
	 * make us hold is proportional to it (xstream.c). */
	struct xstream_limits lim = {
		.max_stanza_size = cfg->max_stanza_size, .max_depth = cfg->max_depth,
		.max_header_size = cfg->max_header_size,
	};
	if (s->tp->set_authed)
		s->tp->set_authed(s->io, authed);
	if (authed)
		s->flags |= C2S_F_AUTHED;
	else
		s->flags &= ~C2S_F_AUTHED;
	if (!authed && cfg->preauth_max_stanza_size < lim.max_stanza_size)
		lim.max_stanza_size = cfg->preauth_max_stanza_size;
	xstream_set_limits(s->xs, &lim);
}

struct c2s *c2s_new(struct server *srv, struct worker *w, const struct transport *tp,
		    void *io, const struct bus_addr *self, int tls)
{
	struct c2s *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->srv = srv;
	s->w = w;
	s->tp = tp;
	s->io = io;
	s->self = *self;
	if (tls)
		s->flags |= C2S_F_TLS;
	s->parked_tail = &s->parked;
	s->xs = xstream_new(&(struct xstream_limits){ 0 }, &xs_ops, s);
	if (!s->xs) {
		free(s);
		return NULL;
	}
	c2s_set_authed(s, 0);
	tp->set_timer(io, C2S_TIMER_MAIN, srv->cfg.preauth_timeout * 1000u);
	return s;
}

/* A stanza has begun and not ended: it gets stanza_timeout from its first
 * byte, however slowly the rest trickles in (checked on every feed, and by
 * the timer when the client falls silent). Ends the stream and returns 1
 * when the time is up; otherwise sets *<left> (if given) to what remains. */
static int stanza_overdue(struct c2s *s, uint32_t *left)
{
	uint32_t spent = (uint32_t)timer_now_ms() - s->stanza_since;
	uint32_t limit = s->srv->cfg.stanza_timeout * 1000u;
	if (spent < limit) {
		if (left)
			*left = limit - spent;
		return 0;
	}
	metrics_inc(M_LIMIT_STANZA_TIMEOUT);
	c2s_stream_fail(s, SE_POLICY_VIOLATION, "stanza not completed in time");
	return 1;
}

enum tp_feed c2s_feed(struct c2s *s, const char *data, size_t len)
{
	/* Parsing stopped for a pending operation: bytes received before
	 * reading stopped wait behind those already held. */
	if (s->flags & C2S_F_HOLD) {
		if (s->state != C2S_CLOSING && len)
			hold_input(s, data, len);
		return s->state == C2S_CLOSING ? TP_FEED_CLOSED : TP_FEED_OK;
	}
	while (len && s->state != C2S_CLOSING) {
		size_t used = len;
		enum xfeed_rc rc = xstream_feed(s->xs, data, len, &used);
		if (rc == XFEED_OK)
			break;
		if (rc == XFEED_ERR) {
			enum xstream_err e = xstream_error(s->xs);
			static const enum stream_err map[] = {
				[XSE_NONE] = SE_UNDEFINED_CONDITION,
				[XSE_NOT_WELL_FORMED] = SE_NOT_WELL_FORMED,
				[XSE_RESTRICTED_XML] = SE_RESTRICTED_XML,
				[XSE_POLICY_VIOLATION] = SE_POLICY_VIOLATION,
				[XSE_INVALID_NAMESPACE] = SE_INVALID_NAMESPACE,
				[XSE_BAD_NAMESPACE_PREFIX] = SE_BAD_NAMESPACE_PREFIX,
				[XSE_UNSUPPORTED_ENCODING] = SE_UNSUPPORTED_ENCODING,
				[XSE_NOMEM] = SE_INTERNAL_SERVER_ERROR,
			};
			char why[160];
			const char *text = xstream_error_text(s->xs, why, sizeof(why));
			if (e == XSE_POLICY_VIOLATION && text == xstream_why_header) {
				metrics_inc(M_LIMIT_HEADER_SIZE);
			} else if (e == XSE_POLICY_VIOLATION) {
				text = "stanza too large or too deep";
				metrics_inc(M_LIMIT_STANZA_SIZE);
			}
			c2s_stream_fail(s, map[e], text);
			return TP_FEED_CLOSED;
		}
		/* XFEED_STOPPED: a restart, STARTTLS, the end of the stream or
		 * an element that started a store operation. */
		if ((s->flags & C2S_F_HOLD) && s->state != C2S_CLOSING) {
			if (xstream_continue(s->xs)) {
				c2s_stream_fail(s, SE_INTERNAL_SERVER_ERROR, NULL);
				return TP_FEED_CLOSED;
			}
			if (hold_input(s, data + used, len - used))
				return TP_FEED_CLOSED;
			break;
		}
		if (s->flags & C2S_F_STARTTLS) {
			s->flags &= ~C2S_F_STARTTLS;
			if (xstream_reset(s->xs))
				return c2s_stream_fail(s, SE_INTERNAL_SERVER_ERROR, NULL), TP_FEED_CLOSED;
			return TP_FEED_STARTTLS;
		}
		if (s->flags & C2S_F_RESTART) {
			s->flags &= ~C2S_F_RESTART;
			if (xstream_reset(s->xs))
				return c2s_stream_fail(s, SE_INTERNAL_SERVER_ERROR, NULL), TP_FEED_CLOSED;
			data += used;
			len -= used;
			continue;
		}
		break;
	}
	/* One h write for what this feed routed (parked for an account
	 * lookup: written once that stanza is routed, on_account). */
	if (!s->op && s->state != C2S_CLOSING)
		c2s_sm_h_write(s);
	if (s->state == C2S_CLOSING)
		return TP_FEED_CLOSED;
	/* Between stanzas an established stream keeps no parser: expat and
	 * its buffers are rebuilt on the next byte (xstream.c). */
	if (s->state == C2S_ACTIVE) {
		/* After C2S_TRIM_MS of silence the stream drops its parser and
		 * scratch (c2s_on_timeout); a busy stream keeps them. */
		s->flags &= ~C2S_F_TRIMMED;
		s->tp->set_timer(s->io, C2S_TIMER_MAIN, C2S_TRIM_MS);
	}
	if (!xstream_in_element(s->xs))
		s->stanza_since = 0;
	else if (!s->stanza_since)
		s->stanza_since = ((uint32_t)timer_now_ms() - 1) | 1; /* never 0, never ahead of now */
	else if (stanza_overdue(s, NULL))
		return TP_FEED_CLOSED;
	return TP_FEED_OK;
}

void c2s_end_presence(struct c2s *s)
{
	if (!(s->flags & C2S_F_BOUND))
		return;
	s->flags &= ~C2S_F_BOUND;
	presence_session_end(s); /* contacts and directed presence (RFC 6121 §4.5.2) */
	router_unbind(s->srv->router, s->bare, s->resource, &s->self);
	c2s_direct_end(s);
	if (s->flags & C2S_F_AVAILABLE) {
		/* Tell the other resources this one is gone. */
		s->flags &= ~C2S_F_AVAILABLE;
		sbuf_reset(&s->out);
		sbuf_puts(&s->out, "<presence type='unavailable' from='");
		sbuf_puts_esc(&s->out, s->full);
		sbuf_puts(&s->out, "'/>");
		struct rmsg *m = s->out.failed ? NULL : rmsg_new(RMSG_PRESENCE, s->out.data, s->out.len,
								  s->full, NULL, NULL, "unavailable");
		sbuf_reset(&s->out);
		if (m)
			deliver_presence(s->w, s->bare, m, 0, NULL);
		else
			log_warn("c2s %s: out of memory: unavailable presence not broadcast", s->full);
	}
	log_info("session ended jid=%s", s->full);
}

/* The stream is over; decide the session's fate once (end_mode). */
static void stream_over(struct c2s *s)
{
	if (s->flags & (C2S_F_GONE | C2S_F_DETACHED))
		return;
	if (!(s->flags & C2S_F_BOUND) || s->end_mode == C2S_END_MOVED) {
		s->flags |= C2S_F_GONE;
		return;
	}
	if (s->end_mode == C2S_END_AUTO && (s->flags & C2S_F_SM) && s->sm.max && c2s_sm_detach(s))
		return;
	c2s_sm_end(s);
	c2s_end_presence(s);
	s->flags |= C2S_F_GONE;
}

void c2s_on_lost(struct c2s *s)
{
	if (lost_wait(s))
		return; /* c2s_unpark comes back here once that input is done */
	if (s->state != C2S_CLOSING)
		log_debug("c2s %s: connection lost", s->tp->peer(s->io));
	c2s_set_state(s, C2S_CLOSING);
	s->tp->set_timer(s->io, C2S_TIMER_ACK, 0);
	if (!(s->flags & C2S_F_DETACHED))
		s->tp->set_timer(s->io, C2S_TIMER_MAIN, 0);
	stream_over(s);
	lost_release(s);
}

int c2s_is_held(const struct c2s *s)
{
	if ((s->flags & C2S_F_LOST_WAIT) && s->state != C2S_CLOSING)
		return 1;
	return (s->flags & (C2S_F_DETACHED | C2S_F_GONE)) == C2S_F_DETACHED;
}

void c2s_before_flush(struct c2s *s)
{
	if (s->flags & C2S_F_WANT_R)
		c2s_sm_before_flush(s);
	if (!(s->flags & C2S_F_SM))
		c2s_flow_drained(s);
}

void c2s_on_timeout(struct c2s *s, int which)
{
	if (which == C2S_TIMER_MAIN && (s->flags & C2S_F_LOST_WAIT)) {
		lost_wait_timeout(s);
		return;
	}
	if (which == C2S_TIMER_ACK) {
		if (s->flags & C2S_F_SM)
			c2s_sm_on_ack_timer(s);
		else
			c2s_flow_timeout(s);
		return;
	}
	if (s->flags & C2S_F_DETACHED) {
		c2s_sm_expired(s);
		return;
	}
	unsigned idle_ms = s->srv->cfg.idle_timeout * 1000u;
	uint32_t left;
	if (s->state == C2S_ACTIVE && s->stanza_since) {
		if (!stanza_overdue(s, &left))
			s->tp->set_timer(s->io, C2S_TIMER_MAIN, left);
		return;
	}
	if (s->state == C2S_ACTIVE && !(s->flags & C2S_F_TRIMMED)) {
		/* Idle: expat and its buffers are rebuilt on the next byte. */
		xstream_trim(s->xs);
		sbuf_free(&s->out);
		s->flags |= C2S_F_TRIMMED;
		s->tp->trim_memory(s->io);
		if (idle_ms)
			s->tp->set_timer(s->io, C2S_TIMER_MAIN,
					 idle_ms > C2S_TRIM_MS ? idle_ms - C2S_TRIM_MS : 1);
		return;
	}
	if (s->state == C2S_ACTIVE && !idle_ms)
		return;
	c2s_stream_fail(s, SE_CONNECTION_TIMEOUT, NULL);
}

void c2s_deliver(struct c2s *s, struct rmsg *m)
{
	if (presence_on_deliver(s, m))
		return; /* probes, roster pushes nobody asked for */
	if (s->flags & C2S_F_SM) {
		c2s_count_out(m);
		c2s_sm_emit(s, m); /* queued even while detached */
		return;
	}
	if (s->state == C2S_ACTIVE) {
		if (!(s->flags & (C2S_F_LOST_WAIT | C2S_F_CLOSE_WAIT))) {
			c2s_flow_deliver(s, m); /* sent, or back to its sender */
			return;
		}
		if (lost_hold(s, m))
			return; /* leaving: routed again once it is unbound */
	}
	/* The session is over: find the recipient again or bounce. */
	deliver_stale(s->w, s->srv->cfg.domain, &s->self, m);
}

void c2s_kick(struct c2s *s, enum stream_err cond)
{
	if (cond == SE_NONE) {
		/* "End it if detached" (a wrong ISR token named this session). */
		if (s->flags & C2S_F_DETACHED)
			c2s_sm_expired(s);
		return;
	}
	if (s->flags & C2S_F_DETACHED) {
		/* Shutdown or a replacing login: the waiting session ends now. */
		c2s_sm_expired(s);
		return;
	}
	/* A conflict from a new bind, or a shutdown, ends the session for good. */
	s->end_mode = C2S_END_SESSION;
	c2s_stream_fail(s, cond, NULL);
}

void c2s_moved(struct c2s *s)
{
	c2s_sm_moved(s);
}

void c2s_free(struct c2s *s)
{
	if (!s)
		return;
	c2s_count_stage(s, 1);
	cancel_op(s);
	/* Writes in flight still happen; their callbacks must not run. A
	 * delivery still routes its stanza (or stores it offline) without us. */
	store_orphan_deliveries(c2s_store(s), s, deliver_issuer_gone, s->w);
	store_cancel_ud(c2s_store(s), s);
	c2s_sm_free(s);
	drop_parked(s);
	sbuf_free_secret(&s->held);
	xstream_free(s->xs);
	sasl_free(s->sasl);
	c2s_sasl2_free(s);
	presence_free(s);
	free(s->bare);
	free(s->full);
	free(s->resource);
	sbuf_free(&s->out);
	free(s);
}

/* ---- the worker's entry points ------------------------------------------ */

static void *h_open(struct worker *w, const struct transport *tp, void *io,
		    const struct bus_addr *self, int tls)
{
	return c2s_new(w->srv, w, tp, io, self, tls);
}

static enum tp_feed h_feed(void *p, const char *data, size_t len) { return c2s_feed(p, data, len); }
static void h_lost(void *p) { c2s_on_lost(p); }
static int h_held(const void *p) { return c2s_is_held(p); }
static void h_before_flush(void *p) { c2s_before_flush(p); }
static void h_unpaused(void *p) { c2s_flow_unpaused(p); }
static void h_timeout(void *p, int which) { c2s_on_timeout(p, which); }
static void h_free(void *p) { c2s_free(p); }
static void h_deliver(void *p, struct rmsg *m) { c2s_deliver(p, m); }
static void h_kick(void *p, int cond) { c2s_kick(p, (enum stream_err)cond); }
static void h_moved(void *p) { c2s_moved(p); }
static void h_appended(void *p, uint32_t seq, struct rmsg *m)
{
	if (c2s_sm_known(p, seq, m)) {
		c2s_count_out(m); /* once: a local entry is also announced by the inbox */
		presence_appended(p, m); /* XEP-0280 copies */
	}
}
/* The node shuts down. With a store shared between nodes a resumable
 * session outlives it: the transport closes without </stream:stream> (not
 * with <reset/>, which forbids TLS session resumption, RFC 6120
 * §4.9.3.16), the session detaches into the store, this node lets go of
 * it, and the client resumes it on another node with nothing lost. Other
 * sessions end with system-shutdown. */
static void h_shutdown(void *p)
{
	struct c2s *s = p;
	if (!store_shared(c2s_store(s)) || !(s->flags & C2S_F_SM) || !s->sm.max) {
		c2s_kick(s, SE_SYSTEM_SHUTDOWN);
		return;
	}
	if (!(s->flags & (C2S_F_DETACHED | C2S_F_GONE))) {
		log_info("c2s %s: draining: closing for a resume elsewhere", s->tp->peer(s->io));
		s->tp->close(s->io);
		c2s_on_lost(s);
	}
	if (s->flags & C2S_F_DETACHED)
		c2s_sm_leave(s);
}

static void h_stale(struct worker *w, const struct bus_addr *to, struct rmsg *m)
{
	deliver_stale(w, w->srv->cfg.domain, to, m);
}

static void h_orphan(struct worker *w, struct rmsg *m, uint64_t stamp_ms)
{
	deliver_orphan(w, w->srv->cfg.domain, m, stamp_ms);
}

/* RFC 6121 §4.5.2 and §4.6.3 for a session that ended with its node (the reaper). */
static void h_gone(struct worker *w, const struct cluster_gone *g)
{
	char full[JID_MAX + 1];
	int n = snprintf(full, sizeof(full), "%s/%s", g->bare, g->resource);
	if (n > 0 && (size_t)n < sizeof(full))
		presence_gone(w, g->bare, full, g->available, g->directed, g->ndirected);
}

/* A stanza the bus could not hand on: its sender hears of it. Out of
 * memory is resource-constraint (wait: it may pass later); a node we
 * cannot reach, recipient-unavailable. */
static void h_undeliverable(struct worker *w, struct rmsg *m, int err)
{
	static struct ratelimit_log log_rl;
	uint64_t suppressed;
	if (ratelimit_log_due(&log_rl, timer_now_ms(), &suppressed))
		log_warn("deliver: %s from %s to %s not handed on (%s): bounced; %llu more since the "
			 "last line", m->kind == RMSG_MESSAGE ? "message" : m->kind == RMSG_IQ ? "iq" :
			 "presence", m->from, m->to, strerror(-err), (unsigned long long)suppressed);
	deliver_bounce(w, w->srv->cfg.domain, m,
		       err == -ENOMEM ? STE_RESOURCE_CONSTRAINT : STE_RECIPIENT_UNAVAILABLE);
	rmsg_unref(m);
}

static const struct worker_handlers entry_points = {
	.open = h_open, .feed = h_feed, .lost = h_lost, .held = h_held,
	.before_flush = h_before_flush, .unpaused = h_unpaused, .timeout = h_timeout, .free = h_free,
	.deliver = h_deliver, .kick = h_kick, .moved = h_moved, .stale = h_stale,
	.appended = h_appended, .orphan = h_orphan, .gone = h_gone, .undeliverable = h_undeliverable,
	.shutdown = h_shutdown,
};

void c2s_register(struct server *srv)
{
	srv->handlers = &entry_points;
}
