/* bench/xmpp.c - tether-bench client protocol: stream, STARTTLS, SASL (SCRAM/PLAIN), bind, SM.
 *
 * Sans-socket: everything goes out through conn_write() and comes in as
 * depth-1 elements from net.c. The flow is the classic RFC 6120 one a
 * mobile client uses: features -> STARTTLS -> SASL -> restart -> bind ->
 * <enable resume='true'/>, or <resume previd h/> instead of bind.
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
static const char *intern(const char *prefix, const char *s)
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
	conn_printf(c, "<?xml version='1.0'?><stream:stream to='%s' version='1.0' xml:lang='en' "
		    "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>", opt.domain);
	c->state = CS_WAIT_FEATURES;
}

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
		conn_printf(c, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>", b64);
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
	conn_printf(c, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='%s'>%s</auth>", mech, b64);
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
	conn_printf(c, "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>%s</response>", b64);
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

	if (c->state != CS_WAIT_FEATURES)
		return fail(c, "unexpected features");
	if (!(c->flags & CONN_F_TLS) && starttls) {
		conn_write(c, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>", 51);
		c->state = CS_WAIT_PROCEED;
		return;
	}
	if (!(c->flags & CONN_F_AUTHED)) {
		const char *mech;

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
		conn_close(c, END_PROTO, intern("sasl failure: ", e->child ? e->child->name : "?"));
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
		const char *id = xel_attr(e, "id");
		const char *res = xel_attr(e, "resume");

		s->sm_on = 1;
		s->h_in = s->h_report = s->out = s->acked = s->since_ack = 0;
		free(s->sm_id);
		s->sm_id = NULL;
		if (id && res && (strcmp(res, "true") == 0 || strcmp(res, "1") == 0))
			s->sm_id = strdup(id);
		ready(c);
	} else if (strcmp(e->name, "failed") == 0 && c->state == CS_WAIT_ENABLED) {
		c->why = "sm: enable failed";
		ready(c);
	} else if (strcmp(e->name, "resumed") == 0 && c->state == CS_WAIT_RESUMED) {
		if (h)
			s->acked = (uint32_t)strtoul(h, NULL, 10);
		s->h_in = s->h_report;
		c->state = CS_ACTIVE;
		c->deadline = 0;
		if (mode->on_resumed)
			mode->on_resumed(s, 1);
	} else if (strcmp(e->name, "failed") == 0 && c->state == CS_WAIT_RESUMED) {
		c->why = intern("resume failed: ", e->child ? e->child->name : "?");
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
			conn_close(c, END_STREAM_ERROR, intern("stream error: ", e->child ? e->child->name : "?"));
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
}

void xmpp_stats_print(void)
{
	if (pbkdf2_runs)
		fprintf(stderr, "tether-bench: %lu PBKDF2 computations (cached per password/salt)\n", pbkdf2_runs);
}
