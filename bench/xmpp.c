/* bench/xmpp.c - tether-bench client protocol: stream, STARTTLS, SASL (SCRAM/PLAIN), bind, SM,
 * and the fast ways back: SASL2 + Bind2 + FAST (XEP-0388/0386/0484) and ISR (XEP-0397).
 *
 * Sans-socket: everything goes out through conn_write() and comes in as
 * depth-1 elements from net.c. The flow is the classic RFC 6120 one a
 * mobile client uses: features -> STARTTLS -> SASL -> restart -> bind ->
 * <enable resume='true'/>, or <resume previd h/> instead of bind.
 * With --resume-kind fast the login is one SASL2 <authenticate/> (SCRAM,
 * Bind2 with SM enable, FAST token request) and a resume is one pipelined
 * <authenticate mechanism='HT-SHA-256-NONE'> with <fast/> and <resume/>;
 * with isr the login is classic plus <isr-enable/>, a resume one pipelined
 * <authenticate/> with <inst-resume/>.
 */
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/base64.h>
#include <openssl/digest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/mem.h>
#include <openssl/rand.h>

#define NS_STREAMS "http://etherx.jabber.org/streams"
#define NS_TLS     "urn:ietf:params:xml:ns:xmpp-tls"
#define NS_SASL    "urn:ietf:params:xml:ns:xmpp-sasl"
#define NS_BIND    "urn:ietf:params:xml:ns:xmpp-bind"
#define NS_SM      "urn:xmpp:sm:3"
#define NS_CLIENT  "jabber:client"
#define NS_SASL2   "urn:xmpp:sasl:2"
#define NS_BIND2   "urn:xmpp:bind:0"
#define NS_FAST    "urn:xmpp:fast:0"
#define NS_ISR     "https://xmpp.org/extensions/isr/0"
#define NS_CSI     "urn:xmpp:csi:0"
#define HT_MECH    "HT-SHA-256-NONE"

/* --- small helpers ---------------------------------------------------------- */

/* Expands the one "%d" in <fmt> with <n> (no printf: the pattern is user input). */
static void expand(const char *fmt, int n, char *buf, size_t len)
{
	const char *p = strstr(fmt, "%d");

	if (!p) {
		snprintf(buf, len, "%s", fmt);
		return;
	}
	snprintf(buf, len, "%.*s%d%s", (int)(p - fmt), fmt, n, p + 2);
}

const char *xmpp_user(int user, char *buf, size_t len)
{
	expand(opt.user_fmt, user, buf, len);
	return buf;
}

/* Interned failure reasons: conn->why must outlive the element it came from. */
const char *xmpp_intern(const char *prefix, const char *s)
{
	static char *tab[64];
	static unsigned n;
	char buf[128];

	snprintf(buf, sizeof(buf), "%s%s", prefix, s ? s : "");
	for (unsigned i = 0; i < n; i++)
		if (strcmp(tab[i], buf) == 0)
			return tab[i];
	if (n == sizeof(tab) / sizeof(tab[0]))
		return "other";
	tab[n] = strdup(buf);
	return tab[n] ? tab[n++] : "other";
}

static void send_header(struct conn *c)
{
	char user[128];

	/* SASL2/FAST wants the account in 'from' (XEP-0484 §3.3); the classic
	 * flow keeps the header every client sent before. */
	if (c->s && opt.resume_kind != RESUME_CLASSIC)
		conn_printf(c, "<?xml version='1.0'?><stream:stream from='%s@%s' to='%s' version='1.0' "
			    "xml:lang='en' xmlns='jabber:client' "
			    "xmlns:stream='http://etherx.jabber.org/streams'>",
			    xmpp_user(c->s->user, user, sizeof(user)), opt.domain, opt.domain);
	else
		conn_printf(c, "<?xml version='1.0'?><stream:stream to='%s' version='1.0' xml:lang='en' "
			    "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
			    opt.domain);
	c->state = CS_WAIT_FEATURES;
}

static void send_fast_resume(struct conn *c);

static void fail(struct conn *c, const char *why)
{
	conn_close(c, END_PROTO, why);
}

void xmpp_on_connected(struct conn *c)
{
	if (opt.timeout > 0)
		c->deadline = now_ns() + (uint64_t)(opt.timeout * 1e9);
	send_header(c);
}

void xmpp_on_tls_up(struct conn *c)
{
	if (opt.timeout > 0 && !c->deadline)
		c->deadline = now_ns() + (uint64_t)(opt.timeout * 1e9);
	send_header(c);
	/* ISR/FAST: the <authenticate/> rides in the same flight as the
	 * header (and the TLS Finished), without waiting for features. */
	if (c->resume && opt.resume_kind != RESUME_CLASSIC)
		send_fast_resume(c);
}

void xmpp_on_stream_start(struct conn *c, const char **attrs)
{
	(void)c;
	(void)attrs;
}

void xmpp_on_stream_end(struct conn *c)
{
	if (c->state == CS_CLOSING)
		conn_close(c, END_LOCAL, NULL);
	else
		conn_close(c, END_STREAM_CLOSED, "server closed the stream");
}

void xmpp_close_stream(struct conn *c)
{
	if (c->state == CS_DEAD)
		return;
	if (c->s && c->s->sm_on)
		conn_printf(c, "<a xmlns='urn:xmpp:sm:3' h='%u'/>", c->s->h_in);
	conn_write(c, "</stream:stream>", 16);
	c->state = CS_CLOSING;
	c->deadline = now_ns() + 2000000000ull;
	if (c->s && c->s->c == c)
		c->s->c = NULL;       /* the session is over; the socket drains alone */
}

void xmpp_ack(struct sess *s)
{
	if (!s->sm_on || !s->c || s->c->state == CS_DEAD)
		return;
	conn_printf(s->c, "<a xmlns='urn:xmpp:sm:3' h='%u'/>", s->h_in);
	s->since_ack = 0;
}

void xmpp_request_ack(struct sess *s)
{
	if (s->sm_on && s->c && s->c->state != CS_DEAD)
		conn_write(s->c, "<r xmlns='urn:xmpp:sm:3'/>", 26);
}

/* --- SCRAM (RFC 5802), client side ---------------------------------------- */

struct scram {
	const EVP_MD *md;
	char cnonce[33];
	char first_bare[300];
	uint8_t server_sig[EVP_MAX_MD_SIZE];
	unsigned hlen;
};

/* SaltedPassword cache: PBKDF2 costs milliseconds and a real client keeps
 * its keys, so the bench computes each (password, salt, i) once. */
struct skey {
	struct skey *next;
	const EVP_MD *md;
	unsigned iter;
	size_t slen;
	uint8_t salted[EVP_MAX_MD_SIZE];
	char *pass;
	uint8_t salt[];
};

#define SKEY_BUCKETS 65536u
static struct skey *skeys[SKEY_BUCKETS];
static unsigned long pbkdf2_runs;

static uint32_t fnv(const void *p, size_t n, uint32_t h)
{
	const uint8_t *b = p;

	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 16777619u;
	return h;
}

static const uint8_t *salted_password(const EVP_MD *md, const char *pass, const uint8_t *salt,
				      size_t slen, unsigned iter)
{
	uint32_t h = fnv(salt, slen, fnv(pass, strlen(pass), 2166136261u ^ iter));
	struct skey **b = &skeys[h % SKEY_BUCKETS];
	struct skey *k;

	for (k = *b; k; k = k->next)
		if (k->md == md && k->iter == iter && k->slen == slen && memcmp(k->salt, salt, slen) == 0 &&
		    strcmp(k->pass, pass) == 0)
			return k->salted;
	k = malloc(sizeof(*k) + slen);
	if (!k)
		abort();
	k->md = md;
	k->iter = iter;
	k->slen = slen;
	memcpy(k->salt, salt, slen);
	k->pass = strdup(pass);
	if (!PKCS5_PBKDF2_HMAC(pass, strlen(pass), salt, slen, iter, md, EVP_MD_size(md), k->salted))
		abort();
	pbkdf2_runs++;
	k->next = *b;
	*b = k;
	return k->salted;
}

static int b64_encode(const void *in, size_t len, char *out, size_t cap)
{
	size_t need;

	if (!EVP_EncodedLength(&need, len) || need > cap)
		return -1;
	return (int)EVP_EncodeBlock((uint8_t *)out, in, len);
}

static int b64_decode(const char *in, uint8_t *out, size_t cap, size_t *outlen)
{
	size_t n = strlen(in);

	if (!EVP_DecodeBase64(out, outlen, cap, (const uint8_t *)in, n))
		return -1;
	return 0;
}

/* Writes the saslname form of <user> (',' -> =2C, '=' -> =3D). */
static void saslname(const char *user, char *out, size_t cap)
{
	size_t o = 0;

	for (const char *p = user; *p && o + 4 < cap; p++) {
		if (*p == ',') {
			memcpy(out + o, "=2C", 3);
			o += 3;
		} else if (*p == '=') {
			memcpy(out + o, "=3D", 3);
			o += 3;
		} else {
			out[o++] = *p;
		}
	}
	out[o] = '\0';
}

static void send_sasl2_login(struct conn *c, const char *mech, const char *b64);

static void sasl_start(struct conn *c, const char *mech)
{
	char user[128], pass[128], name[200], msg[512], b64[768];
	int n;

	xmpp_user(c->s->user, user, sizeof(user));
	expand(opt.pass_fmt, c->s->user, pass, sizeof(pass));
	c->mech = mech;
	if (strcmp(mech, "PLAIN") == 0) {
		size_t ul = strlen(user), pl = strlen(pass);

		msg[0] = '\0';
		memcpy(msg + 1, user, ul);
		msg[1 + ul] = '\0';
		memcpy(msg + 2 + ul, pass, pl);
		n = b64_encode(msg, 2 + ul + pl, b64, sizeof(b64));
		OPENSSL_cleanse(msg, sizeof(msg));
		OPENSSL_cleanse(pass, sizeof(pass));
		if (n < 0)
			return fail(c, "sasl: encode");
		if (c->sasl2)
			send_sasl2_login(c, "PLAIN", b64);
		else
			conn_printf(c, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>",
				    b64);
		OPENSSL_cleanse(b64, sizeof(b64));
		c->state = CS_WAIT_SASL;
		return;
	}
	OPENSSL_cleanse(pass, sizeof(pass));
	c->scram = calloc(1, sizeof(*c->scram));
	if (!c->scram)
		abort();
	c->scram->md = strcmp(mech, "SCRAM-SHA-256") == 0 ? EVP_sha256() : EVP_sha1();
	c->scram->hlen = (unsigned)EVP_MD_size(c->scram->md);
	{
		uint8_t rnd[18];

		RAND_bytes(rnd, sizeof(rnd));
		b64_encode(rnd, sizeof(rnd), c->scram->cnonce, sizeof(c->scram->cnonce));
	}
	saslname(user, name, sizeof(name));
	snprintf(c->scram->first_bare, sizeof(c->scram->first_bare), "n=%s,r=%s", name, c->scram->cnonce);
	snprintf(msg, sizeof(msg), "n,,%s", c->scram->first_bare);
	if (b64_encode(msg, strlen(msg), b64, sizeof(b64)) < 0)
		return fail(c, "sasl: encode");
	if (c->sasl2)
		send_sasl2_login(c, mech, b64);
	else
		conn_printf(c, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='%s'>%s</auth>", mech,
			    b64);
	c->state = CS_WAIT_SASL;
}

/* Finds "<k>=" at the start of a comma-separated attribute; returns the value
 * and its length. */
static const char *scram_attr(const char *msg, char k, size_t *len)
{
	const char *p = msg;

	while (p && *p) {
		if (p[0] == k && p[1] == '=') {
			const char *e = strchr(p + 2, ',');

			*len = e ? (size_t)(e - p - 2) : strlen(p + 2);
			return p + 2;
		}
		p = strchr(p, ',');
		if (p)
			p++;
	}
	return NULL;
}

static void sasl_challenge(struct conn *c, const char *text)
{
	struct scram *sc = c->scram;
	uint8_t server_first[1024], salt[256];
	uint8_t client_key[EVP_MAX_MD_SIZE], stored_key[EVP_MAX_MD_SIZE], sig[EVP_MAX_MD_SIZE];
	uint8_t server_key[EVP_MAX_MD_SIZE], proof[EVP_MAX_MD_SIZE];
	char pass[128], without_proof[600], auth_msg[2048], final[900], b64[1300], proof64[128];
	const char *r, *s, *i;
	size_t sf_len, rl, sl, il, saltlen;
	const uint8_t *salted;
	unsigned iter, hl = sc ? sc->hlen : 0, ol;

	if (!sc || !text || b64_decode(text, server_first, sizeof(server_first) - 1, &sf_len) < 0)
		return fail(c, "sasl: bad challenge");
	server_first[sf_len] = '\0';
	r = scram_attr((char *)server_first, 'r', &rl);
	s = scram_attr((char *)server_first, 's', &sl);
	i = scram_attr((char *)server_first, 'i', &il);
	if (!r || !s || !i || rl < strlen(sc->cnonce) || memcmp(r, sc->cnonce, strlen(sc->cnonce)) != 0)
		return fail(c, "sasl: bad server-first");
	iter = (unsigned)strtoul(i, NULL, 10);
	{
		char s64[400];

		if (sl >= sizeof(s64))
			return fail(c, "sasl: salt too long");
		memcpy(s64, s, sl);
		s64[sl] = '\0';
		if (b64_decode(s64, salt, sizeof(salt), &saltlen) < 0 || iter == 0 || iter > 1000000)
			return fail(c, "sasl: bad salt/iterations");
	}
	expand(opt.pass_fmt, c->s->user, pass, sizeof(pass));
	salted = salted_password(sc->md, pass, salt, saltlen, iter);
	OPENSSL_cleanse(pass, sizeof(pass));

	snprintf(without_proof, sizeof(without_proof), "c=biws,r=%.*s", (int)rl, r);
	snprintf(auth_msg, sizeof(auth_msg), "%s,%s,%s", sc->first_bare, (char *)server_first, without_proof);

	HMAC(sc->md, salted, hl, (const uint8_t *)"Client Key", 10, client_key, &ol);
	EVP_Digest(client_key, hl, stored_key, NULL, sc->md, NULL);
	HMAC(sc->md, stored_key, hl, (const uint8_t *)auth_msg, strlen(auth_msg), sig, &ol);
	for (unsigned k = 0; k < hl; k++)
		proof[k] = client_key[k] ^ sig[k];
	HMAC(sc->md, salted, hl, (const uint8_t *)"Server Key", 10, server_key, &ol);
	HMAC(sc->md, server_key, hl, (const uint8_t *)auth_msg, strlen(auth_msg), sc->server_sig, &ol);
	OPENSSL_cleanse(client_key, sizeof(client_key));

	b64_encode(proof, hl, proof64, sizeof(proof64));
	snprintf(final, sizeof(final), "%s,p=%s", without_proof, proof64);
	if (b64_encode(final, strlen(final), b64, sizeof(b64)) < 0)
		return fail(c, "sasl: encode");
	conn_printf(c, "<response xmlns='%s'>%s</response>", c->sasl2 ? NS_SASL2 : NS_SASL, b64);
}

/* Checks the server signature (v=) of SCRAM; returns 0 when it matches. */
static int sasl_verify(struct conn *c, const char *text)
{
	struct scram *sc = c->scram;
	uint8_t msg[512], v[EVP_MAX_MD_SIZE];
	const char *p;
	size_t n, vl, vn;
	char v64[128];

	if (!sc)
		return 0;      /* PLAIN */
	if (!text || b64_decode(text, msg, sizeof(msg) - 1, &n) < 0)
		return -1;
	msg[n] = '\0';
	p = scram_attr((char *)msg, 'v', &vl);
	if (!p || vl >= sizeof(v64))
		return -1;
	memcpy(v64, p, vl);
	v64[vl] = '\0';
	if (b64_decode(v64, v, sizeof(v), &vn) < 0 || vn != sc->hlen)
		return -1;
	return CRYPTO_memcmp(v, sc->server_sig, vn) == 0 ? 0 : -1;
}

/* --- SASL2, FAST and ISR (HT-SHA-256-NONE: draft-schmaus-kitten-sasl-ht-09) ---- */

/* A UUID v4 per session, made once: the server keys FAST tokens by it. */
static const char *ua_id(struct sess *s)
{
	if (!s->ua_id[0]) {
		uint8_t u[16];

		RAND_bytes(u, sizeof(u));
		u[6] = (uint8_t)((u[6] & 0x0f) | 0x40);
		u[8] = (uint8_t)((u[8] & 0x3f) | 0x80);
		snprintf(s->ua_id, sizeof(s->ua_id),
			 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1], u[2],
			 u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
	}
	return s->ua_id;
}

static void set_str(char **dst, const char *v)
{
	if (*dst)
		OPENSSL_cleanse(*dst, strlen(*dst));
	free(*dst);
	*dst = v ? strdup(v) : NULL;
}

/* The SASL2 login of --resume-kind fast: SCRAM (or PLAIN) first message,
 * Bind2 with SM enable, and a FAST token request, in one <authenticate/>. */
static void send_sasl2_login(struct conn *c, const char *mech, const char *b64)
{
	conn_printf(c, "<authenticate xmlns='" NS_SASL2 "' mechanism='%s'><initial-response>%s</initial-response>"
		    "<user-agent id='%s'/><bind xmlns='" NS_BIND2 "'><tag>bench</tag>%s</bind>"
		    "<request-token xmlns='" NS_FAST "' mechanism='" HT_MECH "'/></authenticate>",
		    mech, b64, ua_id(c->s), opt.sm ? "<enable xmlns='" NS_SM "' resume='true'/>" : "");
}

/* HMAC-SHA-256 keyed with the token string's own bytes (not decoded). */
static void ht_hmac(const char *token, const char *label, uint8_t out[32])
{
	unsigned ol = 32;

	HMAC(EVP_sha256(), token, strlen(token), (const uint8_t *)label, strlen(label), out, &ol);
}

/* Checks the HT responder message in <additional-data> (base64 of
 * HMAC(token, "Responder"), cb-data empty). Returns 0 when it matches. */
static int ht_verify_responder(struct conn *c, const char *text)
{
	uint8_t want[32], got[64];
	size_t n;

	if (!c->ht_token || !text || b64_decode(text, got, sizeof(got), &n) < 0 || n != sizeof(want))
		return -1;
	ht_hmac(c->ht_token, "Responder", want);
	return CRYPTO_memcmp(want, got, sizeof(want)) == 0 ? 0 : -1;
}

/* ISR or FAST reconnect: one <authenticate mechanism='HT-SHA-256-NONE'/>
 * keyed with the session's token, carrying the XEP-0198 <resume/>; sent
 * right behind the stream header, before any feature arrives. */
static void send_fast_resume(struct conn *c)
{
	struct sess *s = c->s;
	const char *tok = opt.resume_kind == RESUME_FAST ? s->fast_token : s->isr_token;
	char user[128], b64[256];
	uint8_t msg[128 + 1 + 32];
	size_t ul;

	if (!tok || !s->sm_id) {
		c->why = opt.resume_kind == RESUME_FAST ? "fast: no token" : "isr: no token";
		if (mode->on_resumed)
			mode->on_resumed(s, 0);
		return;
	}
	xmpp_user(s->user, user, sizeof(user));
	ul = strlen(user);
	memcpy(msg, user, ul);
	msg[ul] = 0;
	ht_hmac(tok, "Initiator", msg + ul + 1);
	if (b64_encode(msg, ul + 1 + 32, b64, sizeof(b64)) < 0)
		return fail(c, "ht: encode");
	set_str(&c->ht_token, tok);
	c->ht = 1;
	c->sasl2 = 1;
	if (opt.resume_kind == RESUME_FAST)
		conn_printf(c, "<authenticate xmlns='" NS_SASL2 "' mechanism='" HT_MECH "'>"
			    "<initial-response>%s</initial-response><user-agent id='%s'/>"
			    "<fast xmlns='" NS_FAST "'/><resume xmlns='" NS_SM "' previd='%s' h='%u'/>"
			    "</authenticate>", b64, ua_id(s), s->sm_id, s->h_report);
	else
		conn_printf(c, "<authenticate xmlns='" NS_SASL2 "' mechanism='" HT_MECH "'>"
			    "<initial-response>%s</initial-response><inst-resume xmlns='" NS_ISR "'>"
			    "<resume xmlns='" NS_SM "' previd='%s' h='%u'/></inst-resume></authenticate>",
			    b64, s->sm_id, s->h_report);
	OPENSSL_cleanse(msg, sizeof(msg));
	c->state = CS_WAIT_SASL;
}

/* Does <list> (a <fast/> or <isr/><mechanisms/>) name HT-SHA-256-NONE? */
static int offers_ht(const struct xel *list)
{
	for (const struct xel *m = list ? list->child : NULL; m; m = m->next)
		if (strcmp(m->name, "mechanism") == 0 && m->text && strcmp(m->text, HT_MECH) == 0)
			return 1;
	return 0;
}

/* <enabled/> of XEP-0198 (alone or inside Bind2 <bound/>), with the ISR
 * token if one came. */
static void take_enabled(struct sess *s, struct xel *e)
{
	const char *id = xel_attr(e, "id");
	const char *res = xel_attr(e, "resume");
	struct xel *ie = xel_child(e, NS_ISR, "isr-enabled");

	s->sm_on = 1;
	s->h_in = s->h_report = s->out = s->acked = s->since_ack = 0;
	free(s->sm_id);
	s->sm_id = NULL;
	if (id && res && (strcmp(res, "true") == 0 || strcmp(res, "1") == 0))
		s->sm_id = strdup(id);
	set_str(&s->isr_token, ie ? xel_attr(ie, "token") : NULL);
}

/* <resumed/> (classic, or inside a SASL2 <success/>): the stream is live. */
static void take_resumed(struct conn *c, struct xel *e)
{
	struct sess *s = c->s;
	const char *h = xel_attr(e, "h");

	if (h)
		s->acked = (uint32_t)strtoul(h, NULL, 10);
	s->h_in = s->h_report;
	c->state = CS_ACTIVE;
	c->deadline = 0;
	if (mode->on_resumed)
		mode->on_resumed(s, 1);
}

static void on_sasl2(struct conn *c, struct xel *e)
{
	struct sess *s = c->s;
	struct xel *ad, *aid, *tok, *bound, *resumed, *failed, *ir, *irf;

	if (c->state != CS_WAIT_SASL || !c->sasl2)
		return fail(c, "unexpected SASL2 element");
	if (strcmp(e->name, "challenge") == 0) {
		if (!c->scram)
			return fail(c, "sasl2: unexpected challenge");
		return sasl_challenge(c, e->text);
	}
	if (strcmp(e->name, "failure") == 0) {
		const char *why = xmpp_intern("sasl2 failure: ", e->child ? e->child->name : "?");

		if (!c->resume)
			return conn_close(c, END_PROTO, why);
		c->why = why;
		if (mode->on_resumed)
			mode->on_resumed(s, 0);
		return;
	}
	if (strcmp(e->name, "success") != 0)
		return fail(c, "unexpected SASL2 element");
	ad = xel_child(e, NS_SASL2, "additional-data");
	if (c->ht) {
		if (ht_verify_responder(c, ad ? ad->text : NULL) < 0)
			return fail(c, "ht: responder hash mismatch");
	} else if (sasl_verify(c, ad ? ad->text : NULL) < 0) {
		return fail(c, "sasl: server signature mismatch");
	}
	free(c->scram);
	c->scram = NULL;
	c->flags |= CONN_F_AUTHED;
	aid = xel_child(e, NS_SASL2, "authorization-identifier");
	tok = xel_child(e, NS_FAST, "token");
	if (tok && xel_attr(tok, "token"))
		set_str(&s->fast_token, xel_attr(tok, "token"));   /* rotated on every use: keep the newest */
	bound = xel_child(e, NS_BIND2, "bound");
	resumed = xel_child(e, NS_SM, "resumed");
	failed = xel_child(e, NS_SM, "failed");
	ir = xel_child(e, NS_ISR, "inst-resumed");
	irf = xel_child(e, NS_ISR, "inst-resume-failed");
	if (ir) {
		set_str(&s->isr_token, xel_attr(ir, "token"));
		resumed = xel_child(ir, NS_SM, "resumed");
	}
	if (irf)
		failed = xel_child(irf, NS_SM, "failed");
	if (c->resume) {
		if (resumed)
			return take_resumed(c, resumed);
		c->why = xmpp_intern("resume failed: ", failed && failed->child ? failed->child->name : "no <resumed/>");
		if (mode->on_resumed)
			mode->on_resumed(s, 0);
		return;
	}
	if (bound) {
		struct xel *en = xel_child(bound, NS_SM, "enabled");

		if (aid && aid->text) {
			free(s->jid);
			s->jid = strdup(aid->text);
		}
		s->sm_on = 0;
		if (en)
			take_enabled(s, en);
		else if (opt.sm)
			c->why = "sm: not enabled in <bound/>";
		c->sasl2_bound = 1;
	}
	c->state = CS_WAIT_FEATURES;       /* features follow, no restart */
}

/* --- features and the state machine ------------------------------------------ */

static const char *pick_mech(struct xel *mechs)
{
	static const char *const pref[] = { "SCRAM-SHA-1", "SCRAM-SHA-256", "PLAIN" };

	for (unsigned i = 0; i < sizeof(pref) / sizeof(pref[0]); i++) {
		if (opt.mech && strcmp(opt.mech, pref[i]) != 0)
			continue;
		for (struct xel *m = mechs->child; m; m = m->next)
			if (strcmp(m->name, "mechanism") == 0 && m->text && strcmp(m->text, pref[i]) == 0)
				return pref[i];
	}
	return NULL;
}

static void ready(struct conn *c)
{
	c->state = CS_ACTIVE;
	c->deadline = 0;
	if (mode->on_ready)
		mode->on_ready(c->s);
}

static void on_features(struct conn *c, struct xel *e)
{
	struct xel *starttls = xel_child(e, NS_TLS, "starttls");
	struct xel *mechs = xel_child(e, NS_SASL, "mechanisms");
	struct xel *bind = xel_child(e, NS_BIND, "bind");

	if (c->state == CS_WAIT_SASL && c->ht)
		return;       /* pipelined <authenticate/>: these features crossed it */
	if (c->state != CS_WAIT_FEATURES)
		return fail(c, "unexpected features");
	if (c->sasl2_bound)
		return ready(c);   /* the <stream:features/> after a Bind2 <success/> */
	if (!(c->flags & CONN_F_TLS) && starttls) {
		conn_write(c, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>", 51);
		c->state = CS_WAIT_PROCEED;
		return;
	}
	if (!(c->flags & CONN_F_AUTHED)) {
		const char *mech;

		if (opt.resume_kind == RESUME_FAST) {
			struct xel *a2 = xel_child(e, NS_SASL2, "authentication");
			struct xel *in = a2 ? xel_child(a2, NS_SASL2, "inline") : NULL;

			if (!a2 || !offers_ht(in ? xel_child(in, NS_FAST, "fast") : NULL))
				return fail(c, "fast: SASL2 with FAST " HT_MECH " not offered");
			mech = pick_mech(a2);
			if (!mech)
				return fail(c, "no usable SASL2 mechanism");
			c->sasl2 = 1;
			sasl_start(c, mech);
			return;
		}
		if (!mechs)
			return fail(c, "no SASL offered");
		mech = pick_mech(mechs);
		if (!mech)
			return fail(c, "no usable SASL mechanism");
		sasl_start(c, mech);
		return;
	}
	if (!bind)
		return fail(c, "bind not offered");
	c->sm_offered = xel_child(e, NS_SM, "sm") != NULL;
	c->csi_offered = xel_child(e, NS_CSI, "csi") != NULL;
	{
		struct xel *isr = xel_child(e, NS_ISR, "isr");

		c->isr_offered = isr && offers_ht(xel_child(isr, NS_SASL, "mechanisms"));
	}
	if (c->resume) {
		if (!c->sm_offered || !c->s->sm_id) {
			c->why = "sm: not offered";
			if (mode->on_resumed)
				mode->on_resumed(c->s, 0);
			return;
		}
		conn_printf(c, "<resume xmlns='urn:xmpp:sm:3' previd='%s' h='%u'/>", c->s->sm_id, c->s->h_report);
		c->state = CS_WAIT_RESUMED;
		return;
	}
	c->bind_id++;
	conn_printf(c, "<iq type='set' id='bind%d'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>",
		    c->bind_id);
	c->state = CS_WAIT_BIND;
}

static void on_sasl(struct conn *c, struct xel *e)
{
	if (c->state != CS_WAIT_SASL)
		return fail(c, "unexpected SASL element");
	if (strcmp(e->name, "challenge") == 0) {
		if (!c->scram)
			return fail(c, "sasl: challenge for PLAIN");
		sasl_challenge(c, e->text);
	} else if (strcmp(e->name, "success") == 0) {
		if (sasl_verify(c, e->text) < 0)
			return fail(c, "sasl: server signature mismatch");
		free(c->scram);
		c->scram = NULL;
		c->flags |= CONN_F_AUTHED | CONN_F_RESTART;
		send_header(c);
	} else if (strcmp(e->name, "failure") == 0) {
		conn_close(c, END_PROTO, xmpp_intern("sasl failure: ", e->child ? e->child->name : "?"));
	} else {
		fail(c, "unexpected SASL element");
	}
}

static void on_bound(struct conn *c, struct xel *e)
{
	struct xel *b = xel_child(e, NS_BIND, "bind");
	struct xel *j = b ? xel_child(b, NS_BIND, "jid") : NULL;
	const char *type = xel_attr(e, "type");
	struct sess *s = c->s;

	if (!type || strcmp(type, "result") != 0 || !j || !j->text)
		return fail(c, "bind failed");
	free(s->jid);
	s->jid = strdup(j->text);
	s->sm_on = 0;
	if (opt.sm && c->sm_offered && opt.resume_kind == RESUME_ISR && c->isr_offered) {
		conn_printf(c, "<enable xmlns='" NS_SM "' resume='true'><isr-enable xmlns='" NS_ISR
			    "' mechanism='" HT_MECH "'/></enable>");
		c->state = CS_WAIT_ENABLED;
		return;
	}
	if (opt.resume_kind == RESUME_ISR)
		c->why = "isr: not offered";
	if (opt.sm && c->sm_offered) {
		conn_write(c, "<enable xmlns='urn:xmpp:sm:3' resume='true'/>", 45);
		c->state = CS_WAIT_ENABLED;
		return;
	}
	if (opt.sm)
		c->why = "sm: not offered";
	ready(c);
}

static void on_sm(struct conn *c, struct xel *e)
{
	struct sess *s = c->s;
	const char *h = xel_attr(e, "h");

	if (strcmp(e->name, "r") == 0) {
		if (s->sm_on && !s->mute_acks)
			xmpp_ack(s);
	} else if (strcmp(e->name, "a") == 0) {
		if (h) {
			s->acked = (uint32_t)strtoul(h, NULL, 10);
			if (mode->on_ack)
				mode->on_ack(s, s->acked);
		}
	} else if (strcmp(e->name, "enabled") == 0 && c->state == CS_WAIT_ENABLED) {
		take_enabled(s, e);
		if (opt.resume_kind == RESUME_ISR && !s->isr_token)
			c->why = "isr: no <isr-enabled/> token";
		ready(c);
	} else if (strcmp(e->name, "failed") == 0 && c->state == CS_WAIT_ENABLED) {
		c->why = "sm: enable failed";
		ready(c);
	} else if (strcmp(e->name, "resumed") == 0 && c->state == CS_WAIT_RESUMED) {
		take_resumed(c, e);
	} else if (strcmp(e->name, "failed") == 0 && c->state == CS_WAIT_RESUMED) {
		c->why = xmpp_intern("resume failed: ", e->child ? e->child->name : "?");
		if (mode->on_resumed)
			mode->on_resumed(s, 0);
	}
}

static void on_stanza(struct conn *c, struct xel *e)
{
	struct sess *s = c->s;
	const char *type = xel_attr(e, "type");

	if (c->state == CS_WAIT_BIND && strcmp(e->name, "iq") == 0) {
		char want[32];
		const char *id = xel_attr(e, "id");

		snprintf(want, sizeof(want), "bind%d", c->bind_id);
		if (id && strcmp(id, want) == 0)
			return on_bound(c, e);
	}
	if (s->sm_on) {
		s->h_in++;
		s->since_ack++;
	}
	/* Answer pings and anything else asked of us so the server never waits. */
	if (strcmp(e->name, "iq") == 0 && type && (strcmp(type, "get") == 0 || strcmp(type, "set") == 0)) {
		const char *id = xel_attr(e, "id");
		const char *from = xel_attr(e, "from");

		if (from)
			conn_printf(c, "<iq type='result' id='%s' to='%s'/>", id ? id : "", from);
		else
			conn_printf(c, "<iq type='result' id='%s'/>", id ? id : "");
		if (s->sm_on)
			s->out++;
		return;
	}
	if (mode->on_stanza)
		mode->on_stanza(s, e);
}

void xmpp_on_element(struct conn *c, struct xel *e)
{
	if (!c->s || c->state == CS_CLOSING)
		return;
	if (strcmp(e->ns, NS_STREAMS) == 0) {
		if (strcmp(e->name, "features") == 0)
			on_features(c, e);
		else if (strcmp(e->name, "error") == 0)
			conn_close(c, END_STREAM_ERROR, xmpp_intern("stream error: ", e->child ? e->child->name : "?"));
		return;
	}
	if (strcmp(e->ns, NS_TLS) == 0) {
		if (c->state == CS_WAIT_PROCEED && strcmp(e->name, "proceed") == 0)
			c->flags |= CONN_F_STARTTLS;
		else
			fail(c, "STARTTLS refused");
		return;
	}
	if (strcmp(e->ns, NS_SASL) == 0)
		return on_sasl(c, e);
	if (strcmp(e->ns, NS_SASL2) == 0)
		return on_sasl2(c, e);
	if (strcmp(e->ns, NS_SM) == 0)
		return on_sm(c, e);
	if (strcmp(e->ns, NS_CLIENT) == 0)
		return on_stanza(c, e);
}

void xmpp_conn_free(struct conn *c)
{
	if (c->scram)
		OPENSSL_cleanse(c->scram, sizeof(*c->scram));
	free(c->scram);
	c->scram = NULL;
	set_str(&c->ht_token, NULL);
}

void xmpp_stats_print(void)
{
	if (pbkdf2_runs)
		fprintf(stderr, "tether-bench: %lu PBKDF2 computations (cached per password/salt)\n", pbkdf2_runs);
}
