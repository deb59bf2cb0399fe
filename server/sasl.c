/* server/sasl.c - SASL mechanisms, sans-I/O: PLAIN (RFC 4616) and SCRAM(-PLUS)
 * (RFC 5802, 7677, 9266) checked against the SCRAM store. */
#include "tether/sasl.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/digest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/mem.h>
#include <sodium.h>
#include <stringprep.h>

#include "tether/jid.h"
#include "tether/log.h"
#include "tether/sbuf.h"

/* No legitimate client message comes near this (the biggest is a
 * client-final with a 64-byte channel binding); refusing early bounds the
 * work a client can make us do before authentication. */
#define SASL_MSG_MAX 8192
/* Server nonce: 24 random bytes → 32 base64 characters, no padding, no ','
 * (RFC 5802 asks for a nonce with no ','; 24 bytes is well above 18). */
#define SNONCE_BYTES 24
#define SNONCE_MAX 128
#define HASH_MAX 32

enum sasl_state {
	SASL_ST_FIRST = 0, /* waiting for the first client message */
	SASL_ST_FINAL,     /* SCRAM: server-first sent, waiting for client-final */
	SASL_ST_DONE,      /* verdict given; nothing more is accepted */
};

struct sasl {
	enum sasl_mech mech;
	enum sasl_state state;
	struct sasl_env env;      /* a copy; cb points into the two arrays below */
	uint8_t cb_exporter[SASL_CB_EXPORTER_MAX];
	uint8_t cb_unique[SASL_CB_UNIQUE_MAX];
	int empty_sent;           /* an empty challenge went out for a missing initial response */
	int ok;                   /* SASL_SUCCESS was returned */
	int unknown;              /* SCRAM for a user the store does not know: fail at the proof */
	const uint8_t *cbdata;    /* -PLUS: channel binding bytes (env-owned) */
	size_t cblen;
	char user[JID_PART_MAX + 1]; /* prepared localpart */
	struct user_creds creds;
	int have_creds;           /* sasl_set_creds() gave the lookup's result... */
	int creds_rc;             /* ...which was this (0, -ENOENT, -errno) */
	struct sbuf gs2;          /* gs2-header as received ("n,,", "p=tls-exporter,,") */
	struct sbuf auth;         /* AuthMessage so far: client-first-bare "," server-first */
	struct sbuf nonce;        /* c-nonce + s-nonce */
	char snonce[SNONCE_MAX];  /* forced server nonce (tests), "" = random */
};

static const char *const mech_names[SASL_MECH_COUNT] = {
	[SASL_MECH_SCRAM_SHA_256_PLUS] = "SCRAM-SHA-256-PLUS",
	[SASL_MECH_SCRAM_SHA_256] = "SCRAM-SHA-256",
	[SASL_MECH_SCRAM_SHA_1_PLUS] = "SCRAM-SHA-1-PLUS",
	[SASL_MECH_SCRAM_SHA_1] = "SCRAM-SHA-1",
	[SASL_MECH_PLAIN] = "PLAIN",
};

const char *sasl_mech_name(enum sasl_mech m)
{
	return (unsigned)m < SASL_MECH_COUNT ? mech_names[m] : "";
}

int sasl_mech_parse(const char *name, enum sasl_mech *out)
{
	for (unsigned i = 0; i < SASL_MECH_COUNT; i++) {
		if (strcmp(name, mech_names[i]) == 0) {
			*out = (enum sasl_mech)i;
			return 0;
		}
	}
	return -1;
}

static const char *const cond_names[] = {
#define X(e, s) [e] = s,
	SASL_CONDS(X)
#undef X
};

/* SASL_C_NONE has no element; "not-authorized" is the safe thing to put on
 * the wire should a caller ever ask for it. */
const char *sasl_cond_name(enum sasl_cond c)
{
	if (c <= SASL_C_NONE || (size_t)c >= sizeof(cond_names) / sizeof(cond_names[0]))
		return "not-authorized";
	return cond_names[c];
}

/* ---- base64 ---------------------------------------------------------- */

int sasl_b64_encode(const uint8_t *in, size_t len, struct sbuf *out)
{
	size_t n = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_ORIGINAL);
	if (sbuf_reserve(out, n))
		return -ENOMEM;
	sodium_bin2base64(out->data + out->len, n, in, len, sodium_base64_VARIANT_ORIGINAL);
	out->len += n - 1; /* n counts the NUL that sodium writes */
	return 0;
}

/* libsodium checks the alphabet, the padding and that unused trailing bits
 * are zero; with ignore = NULL any whitespace is an error (RFC 6120: no
 * line breaks). We also require it to consume the whole input. */
int sasl_b64_decode(const char *in, size_t len, struct sbuf *out)
{
	size_t max = len / 4 * 3 + 3, binlen = 0;
	const char *end = NULL;

	if (len == 0 || (len == 1 && in[0] == '='))
		return 0;
	if (len % 4 || sbuf_reserve(out, max))
		return len % 4 ? -EINVAL : -ENOMEM;
	if (sodium_base642bin((unsigned char *)out->data + out->len, max, in, len, NULL, &binlen,
			      &end, sodium_base64_VARIANT_ORIGINAL) != 0 || end != in + len)
		return -EINVAL;
	out->len += binlen;
	out->data[out->len] = 0;
	return 0;
}

/* ---- process-wide secrets -------------------------------------------- */

/* Key for fake salts of unknown users, so the salt given for a name is
 * stable (asking twice shows nothing) and cannot be predicted from outside.
 * tetherd derives it from its persistent secret (sasl_set_secret), so it
 * also survives a restart: a salt that changed across restarts would tell
 * unknown names from accounts. Without one it is random per process. */
static uint8_t fake_key[32];
static bool fake_key_set;
static pthread_once_t fake_once = PTHREAD_ONCE_INIT;

static void fake_init(void)
{
	if (sodium_init() < 0)
		abort(); /* no CSPRNG: nothing safe to do */
	if (!fake_key_set)
		randombytes_buf(fake_key, sizeof(fake_key));
}

void sasl_set_secret(const uint8_t secret[32])
{
	static const char label[] = "tether: fake SCRAM salts";
	unsigned int mlen;
	HMAC(EVP_sha256(), secret, 32, (const uint8_t *)label, sizeof(label) - 1, fake_key, &mlen);
	fake_key_set = true;
}

/* Fills <c> with plausible credentials for an unknown <user>: salt =
 * HMAC-SHA-256(fake_key, user), default iterations, random keys. */
static void fake_creds(const char *user, struct user_creds *c)
{
	uint8_t mac[32];
	unsigned int mlen;

	memset(c, 0, sizeof(*c));
	HMAC(EVP_sha256(), fake_key, sizeof(fake_key), (const uint8_t *)user, strlen(user), mac, &mlen);
	memcpy(c->salt, mac, SCRAM_SALT_LEN);
	c->salt_len = SCRAM_SALT_LEN;
	c->iterations = SCRAM_ITER_DEFAULT;
	randombytes_buf(c->stored_key_sha1, sizeof(c->stored_key_sha1));
	randombytes_buf(c->stored_key_sha256, sizeof(c->stored_key_sha256));
	randombytes_buf(c->server_key_sha1, sizeof(c->server_key_sha1));
	randombytes_buf(c->server_key_sha256, sizeof(c->server_key_sha256));
	sodium_memzero(mac, sizeof(mac));
}

/* ---- lifecycle ------------------------------------------------------- */

/* Makes <*p>/<*len> (channel-binding bytes the caller owns) point at a
 * copy in <buf> (<max> bytes); longer data is treated as unavailable. */
static void copy_cb(const uint8_t **p, size_t *len, uint8_t *buf, size_t max)
{
	if (!*p || *len > max) {
		*p = NULL;
		*len = 0;
		return;
	}
	memcpy(buf, *p, *len);
	*p = buf;
}

struct sasl *sasl_new(enum sasl_mech m, const struct sasl_env *env)
{
	struct sasl *s;

	if ((unsigned)m >= SASL_MECH_COUNT)
		return NULL;
	pthread_once(&fake_once, fake_init);
	s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->mech = m;
	s->env = *env;
	copy_cb(&s->env.cb.tls_exporter, &s->env.cb.tls_exporter_len, s->cb_exporter,
		sizeof(s->cb_exporter));
	copy_cb(&s->env.cb.tls_unique, &s->env.cb.tls_unique_len, s->cb_unique, sizeof(s->cb_unique));
	return s;
}

void sasl_test_set_nonce(struct sasl *s, const char *nonce)
{
	size_t len = strlen(nonce);
	if (len == 0 || len >= sizeof(s->snonce))
		return;
	for (size_t i = 0; i < len; i++)
		if (nonce[i] < 0x21 || nonce[i] > 0x7e || nonce[i] == ',')
			return;
	memcpy(s->snonce, nonce, len + 1);
}

const char *sasl_user(const struct sasl *s)
{
	return s->user;
}

void sasl_set_creds(struct sasl *s, int err, const struct user_creds *creds)
{
	s->have_creds = 1;
	s->creds_rc = err ? err : creds ? 0 : -EIO;
	if (!s->creds_rc)
		s->creds = *creds;
}

const char *sasl_username(const struct sasl *s)
{
	return s->ok ? s->user : NULL;
}

void sasl_free(struct sasl *s)
{
	if (!s)
		return;
	sbuf_free_secret(&s->gs2);
	sbuf_free_secret(&s->auth);
	sbuf_free_secret(&s->nonce);
	sodium_memzero(s, sizeof(*s));
	free(s);
}

/* ---- shared helpers -------------------------------------------------- */

static int is_plus(enum sasl_mech m)
{
	return m == SASL_MECH_SCRAM_SHA_256_PLUS || m == SASL_MECH_SCRAM_SHA_1_PLUS;
}

static const EVP_MD *mech_md(enum sasl_mech m)
{
	return m == SASL_MECH_SCRAM_SHA_1 || m == SASL_MECH_SCRAM_SHA_1_PLUS ? EVP_sha1() : EVP_sha256();
}

/* Looks <user> up through the environment, or takes what sasl_set_creds()
 * gave. Returns 0 (found), -ENOENT, or another -errno; -EINPROGRESS when
 * the caller must look the user up first (SASL_NEED_CREDS). An unusable
 * record counts as a backend failure. */
static int lookup(struct sasl *s)
{
	int rc;
	if (s->env.get_creds)
		rc = s->env.get_creds(s->env.ud, s->user, &s->creds);
	else if (s->have_creds)
		rc = s->creds_rc;
	else
		return -EINPROGRESS;
	if (rc == 0 && s->creds.iterations == 0)
		rc = -EIO;
	if (rc && rc != -ENOENT)
		log_warn("sasl: user store lookup failed: %s", strerror(-rc));
	return rc;
}

/* Checks a non-empty authzid <az> (<len> octets, already decoded): the
 * only identity we allow is the account's own bare JID user@domain. */
static int authzid_ok(const struct sasl *s, const char *az, size_t len)
{
	char buf[JID_MAX + 1], dom[JID_PART_MAX + 1];
	struct jid j;

	if (len > JID_MAX || memchr(az, 0, len))
		return 0;
	memcpy(buf, az, len);
	buf[len] = 0;
	if (jid_parse(buf, &j) || !j.local[0] || j.resource[0])
		return 0;
	if (!s->env.domain || jid_prep_domain(s->env.domain, dom, sizeof(dom)))
		return 0;
	return strcmp(j.local, s->user) == 0 && strcmp(j.domain, dom) == 0;
}

/* ---- PLAIN ----------------------------------------------------------- */

/* Derives StoredKey (SHA-256) from the presented <pw> with the stored
 * salt/iterations and compares in constant time. Returns 1 on a match. */
static int plain_verify(const struct user_creds *c, const char *pw)
{
	uint8_t salted[32], ckey[32], sk[32];
	unsigned int n;
	char *prepped = NULL;
	int ok = 0;

	/* A query string: unassigned code points are allowed (RFC 4013 §2.5). */
	if (stringprep_profile(pw, &prepped, "SASLprep", 0) != STRINGPREP_OK)
		goto out;
	if (!PKCS5_PBKDF2_HMAC(prepped, strlen(prepped), c->salt, scram_salt_len(c), c->iterations,
			       EVP_sha256(), sizeof(salted), salted) ||
	    !HMAC(EVP_sha256(), salted, sizeof(salted), (const uint8_t *)"Client Key", 10, ckey, &n) ||
	    !EVP_Digest(ckey, sizeof(ckey), sk, &n, EVP_sha256(), NULL))
		goto out;
	ok = CRYPTO_memcmp(sk, c->stored_key_sha256, sizeof(sk)) == 0;
out:
	if (prepped) {
		sodium_memzero(prepped, strlen(prepped));
		free(prepped);
	}
	sodium_memzero(salted, sizeof(salted));
	sodium_memzero(ckey, sizeof(ckey));
	sodium_memzero(sk, sizeof(sk));
	return ok;
}

/* message = [authzid] NUL authcid NUL passwd (RFC 4616 §2). */
static enum sasl_rc plain_step(struct sasl *s, const uint8_t *in, size_t inlen, enum sasl_cond *cond)
{
	const uint8_t *n1, *n2;
	char pw[SASL_MSG_MAX + 1], cid[SASL_MSG_MAX + 1];
	size_t azlen, cidlen, pwlen;
	enum sasl_rc rc = SASL_FAILURE;
	int found;

	n1 = memchr(in, 0, inlen);
	n2 = n1 ? memchr(n1 + 1, 0, inlen - (size_t)(n1 + 1 - in)) : NULL;
	if (!n2 || memchr(n2 + 1, 0, inlen - (size_t)(n2 + 1 - in))) {
		*cond = SASL_C_MALFORMED_REQUEST;
		return SASL_FAILURE;
	}
	azlen = (size_t)(n1 - in);
	cidlen = (size_t)(n2 - n1 - 1);
	pwlen = inlen - (size_t)(n2 + 1 - in);
	if (cidlen == 0 || pwlen == 0) {
		*cond = SASL_C_MALFORMED_REQUEST;
		return SASL_FAILURE;
	}
	memcpy(cid, n1 + 1, cidlen);
	cid[cidlen] = 0;
	memcpy(pw, n2 + 1, pwlen);
	pw[pwlen] = 0;

	*cond = SASL_C_NOT_AUTHORIZED;
	if (jid_prep_local(cid, s->user, sizeof(s->user)))
		goto out;
	if (azlen && !authzid_ok(s, (const char *)in, azlen)) {
		*cond = SASL_C_INVALID_AUTHZID;
		goto out;
	}
	found = lookup(s);
	if (found == -EINPROGRESS) {
		*cond = SASL_C_NONE;
		rc = SASL_NEED_CREDS;
		goto out;
	}
	if (found == -ENOENT) {
		/* Same work as for a real user, so timing does not tell. */
		fake_creds(s->user, &s->creds);
		plain_verify(&s->creds, pw);
		goto out;
	}
	if (found) {
		*cond = SASL_C_TEMPORARY_AUTH_FAILURE;
		goto out;
	}
	if (!plain_verify(&s->creds, pw))
		goto out;
	*cond = SASL_C_NONE;
	rc = SASL_SUCCESS;
out:
	sodium_memzero(pw, sizeof(pw));
	return rc;
}

/* ---- SCRAM: parsing -------------------------------------------------- */

/* A cursor over one message; attributes are "x=value" separated by ','. */
struct cur {
	const char *p, *end;
};

/* Takes "<letter>=" then everything up to ',' or the end. Returns 0 and
 * sets <v>/<vlen>, or -1 if the next attribute is not <letter>. The ','
 * is not consumed. */
static int take_attr(struct cur *c, char letter, const char **v, size_t *vlen)
{
	if (c->end - c->p < 2 || c->p[0] != letter || c->p[1] != '=')
		return -1;
	c->p += 2;
	*v = c->p;
	while (c->p < c->end && *c->p != ',')
		c->p++;
	*vlen = (size_t)(c->p - *v);
	return 0;
}

static int take_comma(struct cur *c)
{
	if (c->p >= c->end || *c->p != ',')
		return -1;
	c->p++;
	return 0;
}

/* Decodes a saslname: "=2C" → ',', "=3D" → '='; any other '=' is invalid
 * (RFC 5802 §5.1). Output is a C string in <out> (size <outlen>). */
static int saslname_decode(const char *v, size_t len, char *out, size_t outlen)
{
	size_t o = 0;
	for (size_t i = 0; i < len; i++) {
		char ch = v[i];
		if (ch == '=') {
			if (len - i < 3)
				return -1;
			if (v[i + 1] == '2' && v[i + 2] == 'C')
				ch = ',';
			else if (v[i + 1] == '3' && v[i + 2] == 'D')
				ch = '=';
			else
				return -1;
			i += 2;
		}
		if (o + 1 >= outlen)
			return -1;
		out[o++] = ch;
	}
	out[o] = 0;
	return o ? 0 : -1;
}

/* printable = %x21-2B / %x2D-7E */
static int nonce_ok(const char *v, size_t len)
{
	if (len == 0)
		return 0;
	for (size_t i = 0; i < len; i++)
		if (v[i] < 0x21 || v[i] > 0x7e || v[i] == ',')
			return 0;
	return 1;
}

/* Skips optional extensions ",x=value" up to the end; values are anything
 * but ','. Returns 0 or -1 on bad syntax. */
static int skip_exts(struct cur *c)
{
	while (c->p < c->end) {
		const char *v;
		size_t vlen;
		if (take_comma(c) || c->end - c->p < 2)
			return -1;
		char a = c->p[0];
		if (!((a >= 'a' && a <= 'z') || (a >= 'A' && a <= 'Z')) || take_attr(c, a, &v, &vlen))
			return -1;
	}
	return 0;
}

/* cb-name = 1*(ALPHA / DIGIT / "." / "-"); returns the binding data for
 * the name on this connection, or NULL (unknown type or unavailable). */
static const uint8_t *cb_lookup(const struct sasl_cb *cb, const char *v, size_t len, size_t *outlen)
{
	static const struct {
		const char *name;
		size_t data_off, len_off;
	} types[] = {
		{ "tls-exporter", offsetof(struct sasl_cb, tls_exporter), offsetof(struct sasl_cb, tls_exporter_len) },
		{ "tls-server-end-point", offsetof(struct sasl_cb, tls_server_end_point),
		  offsetof(struct sasl_cb, tls_server_end_point_len) },
		{ "tls-unique", offsetof(struct sasl_cb, tls_unique), offsetof(struct sasl_cb, tls_unique_len) },
	};
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		if (strlen(types[i].name) != len || memcmp(types[i].name, v, len) != 0)
			continue;
		const uint8_t *data = *(const uint8_t *const *)((const char *)cb + types[i].data_off);
		size_t n = *(const size_t *)((const char *)cb + types[i].len_off);
		if (!data || n == 0)
			return NULL;
		*outlen = n;
		return data;
	}
	return NULL;
}

static int cbname_syntax_ok(const char *v, size_t len)
{
	if (len == 0)
		return 0;
	for (size_t i = 0; i < len; i++) {
		char ch = v[i];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '.' || ch == '-'))
			return 0;
	}
	return 1;
}

/* ---- SCRAM: client-first → server-first ------------------------------ */

/* Parses client-first (RFC 5802 §7), applies the channel-binding policy,
 * looks the user up and appends server-first to <out>. */
static enum sasl_rc scram_first(struct sasl *s, const char *in, size_t inlen, struct sbuf *out,
				enum sasl_cond *cond)
{
	struct cur c = { in, in + inlen };
	const char *v, *cbname = NULL, *az = NULL, *cnonce, *bare;
	size_t vlen, cbnlen = 0, azlen = 0, cnlen;
	char flag, name[SASL_MSG_MAX + 1], azbuf[SASL_MSG_MAX + 1];
	uint8_t raw[SNONCE_BYTES];
	int rc;

	*cond = SASL_C_MALFORMED_REQUEST;
	/* gs2-header */
	if (c.p < c.end && (*c.p == 'n' || *c.p == 'y')) {
		flag = *c.p++;
	} else if (take_attr(&c, 'p', &cbname, &cbnlen) == 0) {
		flag = 'p';
		if (!cbname_syntax_ok(cbname, cbnlen))
			return SASL_FAILURE;
	} else {
		return SASL_FAILURE;
	}
	if (take_comma(&c))
		return SASL_FAILURE;
	if (take_attr(&c, 'a', &az, &azlen) == 0 &&
	    saslname_decode(az, azlen, azbuf, sizeof(azbuf)))
		return SASL_FAILURE;
	if (take_comma(&c))
		return SASL_FAILURE;
	/* Again from the start when the message comes back after a lookup. */
	sbuf_reset(&s->gs2);
	if (sbuf_append(&s->gs2, in, (size_t)(c.p - in)))
		goto nomem;
	/* client-first-message-bare; "m=" is a mandatory extension we do not
	 * know, which RFC 5802 says must fail. */
	bare = c.p;
	if (take_attr(&c, 'n', &v, &vlen) || saslname_decode(v, vlen, name, sizeof(name)))
		return SASL_FAILURE;
	if (take_comma(&c) || take_attr(&c, 'r', &cnonce, &cnlen) || !nonce_ok(cnonce, cnlen))
		return SASL_FAILURE;
	if (skip_exts(&c))
		return SASL_FAILURE;

	/* Channel-binding policy (sasl.md §4.2): every mismatch is a
	 * credential problem on the wire, i.e. not-authorized. */
	*cond = SASL_C_NOT_AUTHORIZED;
	if (is_plus(s->mech)) {
		if (flag != 'p')
			return SASL_FAILURE;
		s->cbdata = cb_lookup(&s->env.cb, cbname, cbnlen, &s->cblen);
		if (!s->cbdata)
			return SASL_FAILURE;
	} else if (flag == 'p' || (flag == 'y' && s->env.plus_offered)) {
		return SASL_FAILURE;
	}

	if (jid_prep_local(name, s->user, sizeof(s->user)))
		return SASL_FAILURE;
	if (az && !authzid_ok(s, azbuf, strlen(azbuf))) {
		*cond = SASL_C_INVALID_AUTHZID;
		return SASL_FAILURE;
	}
	rc = lookup(s);
	if (rc == -EINPROGRESS) {
		*cond = SASL_C_NONE;
		return SASL_NEED_CREDS;
	}
	if (rc == -ENOENT) {
		s->unknown = 1;
		fake_creds(s->user, &s->creds);
	} else if (rc) {
		*cond = SASL_C_TEMPORARY_AUTH_FAILURE;
		return SASL_FAILURE;
	}

	/* nonce = c-nonce + s-nonce */
	if (sbuf_append(&s->nonce, cnonce, cnlen))
		goto nomem;
	if (s->snonce[0]) {
		rc = sbuf_puts(&s->nonce, s->snonce);
	} else {
		randombytes_buf(raw, sizeof(raw));
		rc = sasl_b64_encode(raw, sizeof(raw), &s->nonce);
	}
	if (rc)
		goto nomem;
	/* AuthMessage starts with client-first-bare "," server-first; the
	 * server-first goes both there and to <out>. */
	size_t sf = 0;
	if (sbuf_append(&s->auth, bare, (size_t)(c.end - bare)) || sbuf_puts(&s->auth, ",") ||
	    (sf = s->auth.len, sbuf_puts(&s->auth, "r=")) ||
	    sbuf_append(&s->auth, s->nonce.data, s->nonce.len) || sbuf_puts(&s->auth, ",s=") ||
	    sasl_b64_encode(s->creds.salt, scram_salt_len(&s->creds), &s->auth) ||
	    sbuf_printf(&s->auth, ",i=%u", (unsigned)s->creds.iterations) ||
	    sbuf_append(out, s->auth.data + sf, s->auth.len - sf))
		goto nomem;
	*cond = SASL_C_NONE;
	s->state = SASL_ST_FINAL;
	return SASL_CONTINUE;
nomem:
	*cond = SASL_C_TEMPORARY_AUTH_FAILURE;
	return SASL_FAILURE;
}

/* ---- SCRAM: client-final → server-final ------------------------------ */

static enum sasl_rc scram_final(struct sasl *s, const char *in, size_t inlen, struct sbuf *out,
				enum sasl_cond *cond)
{
	const EVP_MD *md = mech_md(s->mech);
	size_t hlen = EVP_MD_size(md);
	const uint8_t *stored = hlen == 20 ? s->creds.stored_key_sha1 : s->creds.stored_key_sha256;
	const uint8_t *server = hlen == 20 ? s->creds.server_key_sha1 : s->creds.server_key_sha256;
	struct cur c = { in, in + inlen };
	struct sbuf cbind = SBUF_INIT, proof = SBUF_INIT;
	const char *cv, *rv, *pv, *xv, *last = NULL;
	size_t cvlen, rvlen, pvlen, xvlen;
	uint8_t sig[HASH_MAX], key[HASH_MAX], hkey[HASH_MAX], ssig[HASH_MAX];
	unsigned int n;
	enum sasl_rc rc = SASL_FAILURE;
	int match;

	*cond = SASL_C_MALFORMED_REQUEST;
	if (take_attr(&c, 'c', &cv, &cvlen) || take_comma(&c) || take_attr(&c, 'r', &rv, &rvlen))
		goto out;
	/* Extensions, then "p=" as the last attribute. */
	for (;;) {
		if (take_comma(&c))
			goto out;
		last = c.p;
		if (take_attr(&c, 'p', &pv, &pvlen) == 0) {
			if (c.p != c.end)
				goto out;
			break;
		}
		/* an extension: skipped, but it stays in the AuthMessage */
		char a = c.end - c.p >= 2 ? c.p[0] : 0;
		if (!((a >= 'a' && a <= 'z') || (a >= 'A' && a <= 'Z')) || take_attr(&c, a, &xv, &xvlen))
			goto out;
	}
	if (sasl_b64_decode(cv, cvlen, &cbind) || sasl_b64_decode(pv, pvlen, &proof) ||
	    proof.len != hlen)
		goto out;

	/* Channel binding: gs2-header exactly as received, then cbind-data. */
	*cond = SASL_C_NOT_AUTHORIZED;
	if (cbind.len != s->gs2.len + s->cblen ||
	    memcmp(cbind.data, s->gs2.data, s->gs2.len) != 0 ||
	    (s->cblen && CRYPTO_memcmp(cbind.data + s->gs2.len, s->cbdata, s->cblen) != 0))
		goto out;
	if (rvlen != s->nonce.len || memcmp(rv, s->nonce.data, rvlen) != 0)
		goto out;

	/* AuthMessage = client-first-bare "," server-first "," client-final-without-proof */
	if (sbuf_puts(&s->auth, ",") || sbuf_append(&s->auth, in, (size_t)(last - 1 - in))) {
		*cond = SASL_C_TEMPORARY_AUTH_FAILURE;
		goto out;
	}
	if (!HMAC(md, stored, hlen, (const uint8_t *)s->auth.data, s->auth.len, sig, &n))
		goto fail_tmp;
	for (size_t i = 0; i < hlen; i++)
		key[i] = (uint8_t)proof.data[i] ^ sig[i];
	if (!EVP_Digest(key, hlen, hkey, &n, md, NULL))
		goto fail_tmp;
	match = CRYPTO_memcmp(hkey, stored, hlen) == 0;
	if (!match || s->unknown)
		goto out;
	if (!HMAC(md, server, hlen, (const uint8_t *)s->auth.data, s->auth.len, ssig, &n))
		goto fail_tmp;
	if (sbuf_puts(out, "v=") || sasl_b64_encode(ssig, hlen, out))
		goto fail_tmp;
	*cond = SASL_C_NONE;
	rc = SASL_SUCCESS;
	goto out;
fail_tmp:
	*cond = SASL_C_TEMPORARY_AUTH_FAILURE;
out:
	sbuf_free(&cbind);
	sbuf_free_secret(&proof);
	sodium_memzero(sig, sizeof(sig));
	sodium_memzero(key, sizeof(key));
	sodium_memzero(hkey, sizeof(hkey));
	sodium_memzero(ssig, sizeof(ssig));
	return rc;
}

/* ---- dispatch -------------------------------------------------------- */

enum sasl_rc sasl_step(struct sasl *s, const uint8_t *in, size_t inlen,
		       struct sbuf *out, enum sasl_cond *cond)
{
	enum sasl_rc rc;

	*cond = SASL_C_NONE;
	if (s->state == SASL_ST_DONE) {
		*cond = SASL_C_MALFORMED_REQUEST;
		return SASL_FAILURE;
	}
	if (s->mech == SASL_MECH_PLAIN && !s->env.tls) {
		*cond = SASL_C_ENCRYPTION_REQUIRED;
		s->state = SASL_ST_DONE;
		return SASL_FAILURE;
	}
	/* No initial response: answer with an empty challenge, once. */
	if (s->state == SASL_ST_FIRST && inlen == 0 && !s->empty_sent) {
		s->empty_sent = 1;
		return SASL_CONTINUE;
	}
	/* Beyond that first empty message, an empty one is always malformed
	 * (and <in> may then be NULL). */
	if (inlen == 0 || inlen > SASL_MSG_MAX ||
	    (s->mech != SASL_MECH_PLAIN && memchr(in, 0, inlen))) {
		*cond = SASL_C_MALFORMED_REQUEST;
		s->state = SASL_ST_DONE;
		return SASL_FAILURE;
	}
	if (s->mech == SASL_MECH_PLAIN)
		rc = plain_step(s, in, inlen, cond);
	else if (s->state == SASL_ST_FIRST)
		rc = scram_first(s, (const char *)in, inlen, out, cond);
	else
		rc = scram_final(s, (const char *)in, inlen, out, cond);
	if (rc != SASL_CONTINUE && rc != SASL_NEED_CREDS)
		s->state = SASL_ST_DONE;
	if (rc == SASL_SUCCESS)
		s->ok = 1;
	return rc;
}
