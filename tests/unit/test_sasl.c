/* tests/unit/test_sasl.c - SASL PLAIN and SCRAM(-PLUS): RFC vectors, channel
 * binding, policy, and every malformed or truncated message we can think of. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/digest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sodium.h>

#include "tether/sasl.h"
#include "tether/sbuf.h"
#include "tether/scram.h"

/* ---- fixture: one user in a fake store -------------------------------- */

struct fake_store {
	const char *name;        /* prepared localpart of the only user */
	struct user_creds creds;
	int fail_rc;             /* != 0: every lookup returns this */
	int calls;
	char last[1100];         /* last name looked up */
};

static int get_creds(void *ud, const char *user, struct user_creds *out)
{
	struct fake_store *fs = ud;
	fs->calls++;
	snprintf(fs->last, sizeof(fs->last), "%s", user);
	if (fs->fail_rc)
		return fs->fail_rc;
	if (strcmp(user, fs->name) != 0)
		return -ENOENT;
	*out = fs->creds;
	return 0;
}

static struct fake_store fs;
static struct sasl_env env;
static uint8_t cb_exporter[32], cb_endpoint[32], cb_unique[12];

/* "user"/"pencil" with the salt of the RFC vector for <mech>. */
static void setup_user(const char *name, const char *pw, const char *salt_b64, uint32_t iter)
{
	uint8_t salt[SCRAM_SALT_LEN];
	size_t n = 0;
	assert_int_equal(sodium_base642bin(salt, sizeof(salt), salt_b64, strlen(salt_b64), NULL, &n,
					   NULL, sodium_base64_VARIANT_ORIGINAL), 0);
	fs.name = name;
	assert_int_equal(scram_creds_derive_salt(pw, salt, n, iter, &fs.creds), 0);
}

#define SALT_SHA1 "QSXCR+Q6sek8bf92"
#define SALT_SHA256 "W22ZaJ0SNY7soEsUEjb6gQ=="

static int setup(void **state)
{
	(void)state;
	memset(&fs, 0, sizeof(fs));
	memset(&env, 0, sizeof(env));
	for (unsigned i = 0; i < sizeof(cb_exporter); i++)
		cb_exporter[i] = (uint8_t)i;
	for (unsigned i = 0; i < sizeof(cb_endpoint); i++)
		cb_endpoint[i] = (uint8_t)(0xa0 + i);
	for (unsigned i = 0; i < sizeof(cb_unique); i++)
		cb_unique[i] = (uint8_t)(0x50 + i);
	env.domain = "example.com";
	env.tls = 1;
	env.plus_offered = 1;
	env.cb.tls_exporter = cb_exporter;
	env.cb.tls_exporter_len = sizeof(cb_exporter);
	env.cb.tls_server_end_point = cb_endpoint;
	env.cb.tls_server_end_point_len = sizeof(cb_endpoint);
	env.cb.tls_unique = cb_unique;
	env.cb.tls_unique_len = sizeof(cb_unique);
	env.get_creds = get_creds;
	env.ud = &fs;
	setup_user("user", "pencil", SALT_SHA256, 4096);
	return 0;
}

/* ---- helpers ----------------------------------------------------------- */

static enum sasl_rc step_n(struct sasl *s, const char *msg, size_t len, struct sbuf *out,
			   enum sasl_cond *cond)
{
	sbuf_reset(out);
	return sasl_step(s, (const uint8_t *)msg, len, out, cond);
}

static enum sasl_rc step(struct sasl *s, const char *msg, struct sbuf *out, enum sasl_cond *cond)
{
	return step_n(s, msg, strlen(msg), out, cond);
}

static char *out_str(struct sbuf *b)
{
	if (sbuf_reserve(b, 0))
		fail();
	b->data[b->len] = 0;
	return b->data;
}

static const EVP_MD *md_of(enum sasl_mech m)
{
	return m == SASL_MECH_SCRAM_SHA_1 || m == SASL_MECH_SCRAM_SHA_1_PLUS ? EVP_sha1() : EVP_sha256();
}

/* A SCRAM client, independent of server/sasl.c: from <first_bare> and the
 * server's <sf>, builds the client-final into <out> (c= from <gs2> and
 * <cb>, optional extension <ext> before p=) and the ServerSignature the
 * server must answer with into <v> ("v=..."). */
static void client_final(enum sasl_mech m, const char *pw, const char *gs2, const uint8_t *cb,
			 size_t cblen, const char *first_bare, const char *sf, const char *ext,
			 struct sbuf *out, struct sbuf *v)
{
	const EVP_MD *md = md_of(m);
	size_t hlen = EVP_MD_size(md);
	uint8_t salt[64], salted[32], ckey[32], skey[32], stored[32], sig[32], proof[32], ssig[32];
	size_t saltlen = 0;
	unsigned int n;
	struct sbuf cbind = SBUF_INIT, am = SBUF_INIT;

	const char *r = strstr(sf, "r="), *s = strstr(sf, ",s="), *i = strstr(sf, ",i=");
	assert_non_null(r);
	assert_non_null(s);
	assert_non_null(i);
	assert_int_equal(sodium_base642bin(salt, sizeof(salt), s + 3, (size_t)(i - s - 3), NULL,
					   &saltlen, NULL, sodium_base64_VARIANT_ORIGINAL), 0);
	unsigned iter = (unsigned)atoi(i + 3);
	assert_true(PKCS5_PBKDF2_HMAC(pw, strlen(pw), salt, saltlen, iter, md, hlen, salted));
	HMAC(md, salted, hlen, (const uint8_t *)"Client Key", 10, ckey, &n);
	HMAC(md, salted, hlen, (const uint8_t *)"Server Key", 10, skey, &n);
	EVP_Digest(ckey, hlen, stored, &n, md, NULL);

	sbuf_append(&cbind, gs2, strlen(gs2));
	sbuf_append(&cbind, cb, cblen);
	sbuf_reset(out);
	sbuf_puts(out, "c=");
	sasl_b64_encode((const uint8_t *)cbind.data, cbind.len, out);
	sbuf_puts(out, ",r=");
	sbuf_append(out, r + 2, (size_t)(s - r - 2));
	if (ext)
		sbuf_printf(out, ",%s", ext);
	sbuf_printf(&am, "%s,%s,%s", first_bare, sf, out_str(out));
	HMAC(md, stored, hlen, (const uint8_t *)am.data, am.len, sig, &n);
	for (size_t k = 0; k < hlen; k++)
		proof[k] = ckey[k] ^ sig[k];
	HMAC(md, skey, hlen, (const uint8_t *)am.data, am.len, ssig, &n);
	sbuf_puts(out, ",p=");
	sasl_b64_encode(proof, hlen, out);
	if (v) {
		sbuf_reset(v);
		sbuf_puts(v, "v=");
		sasl_b64_encode(ssig, hlen, v);
	}
	sbuf_free(&cbind);
	sbuf_free(&am);
}

/* Runs a whole SCRAM exchange as a client would and returns the verdict of
 * the final step (or of the first, if it already failed). */
static enum sasl_rc exchange(enum sasl_mech m, const char *gs2, const uint8_t *cb, size_t cblen,
			     const char *bare, const char *pw, const char *ext, enum sasl_cond *cond,
			     struct sasl **keep)
{
	struct sasl *s = sasl_new(m, &env);
	struct sbuf out = SBUF_INIT, final = SBUF_INIT, v = SBUF_INIT, first = SBUF_INIT;
	enum sasl_rc rc;

	assert_non_null(s);
	sbuf_printf(&first, "%s%s", gs2, bare);
	rc = step(s, out_str(&first), &out, cond);
	if (rc == SASL_CONTINUE) {
		client_final(m, pw, gs2, cb, cblen, bare, out_str(&out), ext, &final, &v);
		rc = step(s, out_str(&final), &out, cond);
		if (rc == SASL_SUCCESS)
			assert_string_equal(out_str(&out), out_str(&v));
	}
	if (rc == SASL_SUCCESS)
		assert_int_equal(*cond, SASL_C_NONE);
	if (keep)
		*keep = s;
	else
		sasl_free(s);
	sbuf_free(&out);
	sbuf_free(&final);
	sbuf_free(&v);
	sbuf_free(&first);
	return rc;
}

#define FIRST "n=user,r=fyko+d2lbbFgONRv9qkxdawL"

/* ---- RFC vectors ------------------------------------------------------- */

/* Feeds the base64 <wire> message (as c2s would, after decoding) and checks
 * the server's reply against the base64 <reply> (NULL = empty reply). */
static enum sasl_rc step_wire(struct sasl *s, const char *wire, const char *reply, enum sasl_cond *cond)
{
	struct sbuf in = SBUF_INIT, out = SBUF_INIT, b64 = SBUF_INIT;
	assert_int_equal(sasl_b64_decode(wire, strlen(wire), &in), 0);
	enum sasl_rc rc = sasl_step(s, (const uint8_t *)in.data, in.len, &out, cond);
	assert_int_equal(sasl_b64_encode((const uint8_t *)out.data, out.len, &b64), 0);
	if (reply)
		assert_string_equal(out_str(&b64), reply);
	sbuf_free(&in);
	sbuf_free(&out);
	sbuf_free(&b64);
	return rc;
}

static void test_rfc5802(void **state)
{
	(void)state;
	struct sbuf out = SBUF_INIT;
	enum sasl_cond cond;
	setup_user("user", "pencil", SALT_SHA1, 4096);
	env.plus_offered = 0;

	struct sasl *s = sasl_new(SASL_MECH_SCRAM_SHA_1, &env);
	sasl_test_set_nonce(s, "3rfcNHYJY1ZVvWVs7j");
	assert_int_equal(step(s, "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL", &out, &cond), SASL_CONTINUE);
	assert_string_equal(out_str(&out),
			    "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096");
	assert_null(sasl_username(s));
	assert_int_equal(step(s, "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,"
				 "p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=", &out, &cond), SASL_SUCCESS);
	assert_string_equal(out_str(&out), "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=");
	assert_string_equal(sasl_username(s), "user");
	sasl_free(s);

	/* the same on the wire, base64 as in core.md §7 */
	s = sasl_new(SASL_MECH_SCRAM_SHA_1, &env);
	sasl_test_set_nonce(s, "3rfcNHYJY1ZVvWVs7j");
	assert_int_equal(step_wire(s, "biwsbj11c2VyLHI9ZnlrbytkMmxiYkZnT05Sdjlxa3hkYXdM",
				   "cj1meWtvK2QybGJiRmdPTlJ2OXFreGRhd0wzcmZjTkhZSlkxWlZ2V1ZzN2oscz1RU1hDUitRNnNlazhiZjkyLGk9NDA5Ng==",
				   &cond), SASL_CONTINUE);
	assert_int_equal(step_wire(s, "Yz1iaXdzLHI9ZnlrbytkMmxiYkZnT05Sdjlxa3hkYXdMM3JmY05IWUpZMVpWdldWczdqLHA9djBYOHYzQnoyVDBDSkdiSlF5RjBYK0hJNFRzPQ==",
				   "dj1ybUY5cHFWOFM3c3VBb1pXamE0ZEpSa0ZzS1E9", &cond), SASL_SUCCESS);
	sasl_free(s);
	sbuf_free(&out);
}

static void test_rfc7677(void **state)
{
	(void)state;
	struct sbuf out = SBUF_INIT;
	enum sasl_cond cond;
	env.plus_offered = 0;

	struct sasl *s = sasl_new(SASL_MECH_SCRAM_SHA_256, &env);
	sasl_test_set_nonce(s, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
	assert_int_equal(step(s, "n,,n=user,r=rOprNGfwEbeRWgbNEkqO", &out, &cond), SASL_CONTINUE);
	assert_string_equal(out_str(&out), "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
					   "s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
	assert_int_equal(step(s, "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
				 "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", &out, &cond), SASL_SUCCESS);
	assert_string_equal(out_str(&out), "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
	sasl_free(s);

	s = sasl_new(SASL_MECH_SCRAM_SHA_256, &env);
	sasl_test_set_nonce(s, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
	assert_int_equal(step_wire(s, "biwsbj11c2VyLHI9ck9wck5HZndFYmVSV2diTkVrcU8=",
				   "cj1yT3ByTkdmd0ViZVJXZ2JORWtxTyVodllEcFdVYTJSYVRDQWZ1eEZJbGopaE5sRiRrMCxzPVcyMlphSjBTTlk3c29Fc1VFamI2Z1E9PSxpPTQwOTY=",
				   &cond), SASL_CONTINUE);
	assert_int_equal(step_wire(s, "Yz1iaXdzLHI9ck9wck5HZndFYmVSV2diTkVrcU8laHZZRHBXVWEyUmFUQ0FmdXhGSWxqKWhObEYkazAscD1kSHpiWmFwV0lrNGpVaE4rVXRlOXl0YWc5empmTUhnc3FtbWl6N0FuZFZRPQ==",
				   "dj02cnJpVFJCaTIzV3BSUi93dHVwK21NaFVaVW4vZEI1bkxUSlJzamw5NUc0PQ==", &cond),
			 SASL_SUCCESS);
	sasl_free(s);
	sbuf_free(&out);
}

/* sasl.md §6.3: RFC 7677 inputs with p=tls-exporter and cb = 00..1f. */
static void test_plus_exporter_vector(void **state)
{
	(void)state;
	struct sbuf out = SBUF_INIT, c = SBUF_INIT, cbind = SBUF_INIT, final = SBUF_INIT;
	enum sasl_cond cond;

	/* c= computed here: b64(gs2-header || cbind-data) */
	sbuf_puts(&cbind, "p=tls-exporter,,");
	sbuf_append(&cbind, cb_exporter, sizeof(cb_exporter));
	sasl_b64_encode((const uint8_t *)cbind.data, cbind.len, &c);
	assert_string_equal(out_str(&c), "cD10bHMtZXhwb3J0ZXIsLAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f");

	struct sasl *s = sasl_new(SASL_MECH_SCRAM_SHA_256_PLUS, &env);
	sasl_test_set_nonce(s, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
	assert_int_equal(step(s, "p=tls-exporter,,n=user,r=rOprNGfwEbeRWgbNEkqO", &out, &cond), SASL_CONTINUE);
	assert_string_equal(out_str(&out), "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
					   "s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
	sbuf_printf(&final, "c=%s,r=rOprNGfwEbeRWgbNEkqO%%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
			    "p=QC6CS20quADQRb3mT99YUH+n3VJxUvzuK0K0E1Vrs2M=", out_str(&c));
	assert_int_equal(step(s, out_str(&final), &out, &cond), SASL_SUCCESS);
	assert_string_equal(out_str(&out), "v=2GiAgapEppLVlUXbxUDksL3VgYHzuqiK5tR4mhJGgvs=");
	sasl_free(s);
	sbuf_free(&out);
	sbuf_free(&c);
	sbuf_free(&cbind);
	sbuf_free(&final);
}

/* ---- channel binding --------------------------------------------------- */

static void test_plus_types(void **state)
{
	(void)state;
	enum sasl_cond cond;
	static const enum sasl_mech plus[] = { SASL_MECH_SCRAM_SHA_256_PLUS, SASL_MECH_SCRAM_SHA_1_PLUS };
	for (unsigned i = 0; i < 2; i++) {
		assert_int_equal(exchange(plus[i], "p=tls-exporter,,", cb_exporter, sizeof(cb_exporter),
					  FIRST, "pencil", NULL, &cond, NULL), SASL_SUCCESS);
		assert_int_equal(exchange(plus[i], "p=tls-server-end-point,,", cb_endpoint,
					  sizeof(cb_endpoint), FIRST, "pencil", NULL, &cond, NULL), SASL_SUCCESS);
		assert_int_equal(exchange(plus[i], "p=tls-unique,,", cb_unique, sizeof(cb_unique),
					  FIRST, "pencil", NULL, &cond, NULL), SASL_SUCCESS);
		/* with an authzid inside the gs2 header */
		assert_int_equal(exchange(plus[i], "p=tls-server-end-point,a=user@example.com,", cb_endpoint,
					  sizeof(cb_endpoint), FIRST, "pencil", NULL, &cond, NULL), SASL_SUCCESS);
		/* wrong password on a PLUS mechanism */
		assert_int_equal(exchange(plus[i], "p=tls-exporter,,", cb_exporter, sizeof(cb_exporter),
					  FIRST, "pencil2", NULL, &cond, NULL), SASL_FAILURE);
		assert_int_equal(cond, SASL_C_NOT_AUTHORIZED);
	}
}

static void test_plus_unavailable(void **state)
{
	(void)state;
	enum sasl_cond cond;
	/* the type exists but this connection has no data for it (TLS 1.3: no tls-unique) */
	env.cb.tls_unique_len = 0;
	assert_int_equal(exchange(SASL_MECH_SCRAM_SHA_256_PLUS, "p=tls-unique,,", cb_unique,
				  sizeof(cb_unique), FIRST, "pencil", NULL, &cond, NULL), SASL_FAILURE);
	assert_int_equal(cond, SASL_C_NOT_AUTHORIZED);
	env.cb.tls_exporter = NULL;
	assert_int_equal(exchange(SASL_MECH_SCRAM_SHA_256_PLUS, "p=tls-exporter,,", cb_exporter,
				  sizeof(cb_exporter), FIRST, "pencil", NULL, &cond, NULL), SASL_FAILURE);
	assert_int_equal(cond, SASL_C_NOT_AUTHORIZED);
	/* unknown type */
	assert_int_equal(exchange(SASL_MECH_SCRAM_SHA_256_PLUS, "p=tls-bogus,,", cb_unique,
				  sizeof(cb_unique), FIRST, "pencil", NULL, &cond, NULL), SASL_FAILURE);
	assert_int_equal(cond, SASL_C_NOT_AUTHORIZED);
	/* cb-name syntax: 1*(ALPHA / DIGIT / "." / "-") */
	assert_int_equal(exchange(SASL_MECH_SCRAM_SHA_256_PLUS, "p=tls_unique,,", cb_unique,
				  sizeof(cb_unique), FIRST, "pencil", NULL, &cond, NULL), SASL_FAILURE);
	assert_int_equal(cond, SASL_C_MALFORMED_REQUEST);
	assert_int_equal(fs.calls, 0); /* refused before any lookup */
}

static void test_cb_mismatch(void **state)
{
	(void)state;
	enum sasl_cond cond;
	uint8_t other[32];
	memcpy(other, cb_endpoint, sizeof(other));
	other[31] ^= 1;
	/* data of another certificate */
	assert_int_equal(exchange(SASL_MECH_SCRAM_SHA_256_PLUS, "p=tls-server-end-point,,", other,
				  sizeof(other), FIRST, "pencil", NULL, &cond, NULL), SASL_FAILURE);
	assert_int_equal(cond, SASL_C_NOT_AUTHORIZED);
	/* data of the other binding type */
	assert_int_equal(exchange(SASL_MECH_SCRAM_SHA_256_PLUS, "p=tls-server-end-point,,", cb_exporter,
				  sizeof(cb_exporter), FIRST, "pencil", NULL, &cond, NULL), SASL_FAILURE);
	assert_int_equal(cond, SASL_C_NOT_AUTHORIZED);
	/* truncated binding data */
	assert_int_equal(exchange(SASL_MECH_SCRAM_SHA_256_PLUS, "p=tls-server-end-point,,", cb_endpoint,
				  sizeof(cb_endpoint) - 1, FIRST, "pencil", NULL, &cond, NULL), SASL_FAILURE);
	assert_int_equal(cond, SASL_C_NOT_AUTHORIZED);
	/* binding data where none belongs (flag n) */
	assert_int_equal(exchange(SASL_MECH_SCRAM_SHA_256, "n,,", cb_endpoint, 4, FIRST, "pencil", NULL,
				  &cond, NULL), SASL_FAILURE);
	assert_int_equal(cond, SASL_C_NOT_AUTHORIZED);

	/* c= that does not repeat the gs2 header as sent */
	struct sasl *s = sasl_new(SASL_MECH_SCRAM_SHA_256, &env);
	struct sbuf out = SBUF_INIT, final = SBUF_INIT;
	assert_int_equal(step(s, "n,a=user@example.com,n=user,r=abc", &out, &cond), SASL_CONTINUE);
	client_final(SASL_MECH_SCRAM_SHA_256, "pencil", "n,,", NULL, 0, "n=user,r=abc", out_str(&out),
		     NULL, &final, NULL);
	assert_int_equal(step(s, out_str(&final), &out, &cond), SASL_FAILURE);
	assert_int_equal(cond, SASL_C_NOT_AUTHORIZED);
	sasl_free(s);
	sbuf_free(&out);
	sbuf_free(&final);
}

static void test_plus_policy(void **state)
{
	(void)state;
	enum sasl_cond cond;
	/* PLUS mechanism without p= */
	assert_int_equal(exchange(SASL_MECH_SCRAM_SHA_256_PLUS, "n,,", NULL, 0, FIRST, "pencil", NULL,
				  &cond, NULL), SASL_FAILURE);
	assert_int_equal(cond, SASL_C_NOT_AUTHORIZED);
	assert_int_equal(exchange(SASL_MECH_SCRAM_SHA_1_PLUS, "y,,", NULL, 0, FIRST, "pencil", NULL,
				  &cond, NULL), SASL_FAILURE);
	assert_int_equal(cond, SASL_C_NOT_AUTHORIZED);
	/* p= with a non-PLUS mechanism */
	assert_int_equal(exchange(SASL_MECH_SCRAM_SHA_256, "p=tls-exporter,,", cb_exporter,
				  sizeof(cb_exporter), FIRST, "pencil", NULL, &cond, NULL), SASL_FAILURE);
	assert_int_equal(cond, SASL_C_NOT_AUTHORIZED);
	assert_int_equal(exchange(SASL_MECH_SCRAM_SHA_1, "p=tls-unique,,", cb_unique,
				  sizeof(cb_unique), FIRST, "pencil", NULL, &cond, NULL), SASL_FAILURE);
	assert_int_equal(cond, SASL_C_NOT_AUTHORIZED);
}

static void test_downgrade(void **state)
{
	(void)state;
	enum sasl_cond cond;
	/* 'y': the client thinks we do not support CB, but we offered -PLUS */
	env.plus_offered = 1;
	assert_int_equal(exchange(SASL_MECH_SCRAM_SHA_256, "y,,", NULL, 0, FIRST, "pencil", NULL,
				  &cond, NULL), SASL_FAILURE);
	assert_int_equal(cond, SASL_C_NOT_AUTHORIZED);
	assert_int_equal(exchange(SASL_MECH_SCRAM_SHA_1, "y,,", NULL, 0, FIRST, "pencil", NULL,
				  &cond, NULL), SASL_FAILURE);
	/* ... and when we did not offer it, 'y' is fine (c=eSws) */
	env.plus_offered = 0;
	assert_int_equal(exchange(SASL_MECH_SCRAM_SHA_256, "y,,", NULL, 0, FIRST, "pencil", NULL,
				  &cond, NULL), SASL_SUCCESS);
	/* 'n' is fine either way */
	assert_int_equal(exchange(SASL_MECH_SCRAM_SHA_256, "n,,", NULL, 0, FIRST, "pencil", NULL,
				  &cond, NULL), SASL_SUCCESS);
	env.plus_offered = 1;
	assert_int_equal(exchange(SASL_MECH_SCRAM_SHA_256, "n,,", NULL, 0, FIRST, "pencil", NULL,
				  &cond, NULL), SASL_SUCCESS);
}

/* ---- credentials ------------------------------------------------------- */

static void test_wrong_password(void **state)
{
	(void)state;
	enum sasl_cond cond;
	struct sasl *s;
	assert_int_equal(exchange(SASL_MECH_SCRAM_SHA_256, "n,,", NULL, 0, FIRST, "Pencil", NULL,
				  &cond, &s), SASL_FAILURE);
	assert_int_equal(cond, SASL_C_NOT_AUTHORIZED);
	assert_null(sasl_username(s));
	sasl_free(s);
	setup_user("user", "pencil", SALT_SHA1, 4096);
	assert_int_equal(exchange(SASL_MECH_SCRAM_SHA_1, "n,,", NULL, 0, FIRST, "", NULL, &cond, NULL),
			 SASL_FAILURE);
	assert_int_equal(cond, SASL_C_NOT_AUTHORIZED);
	assert_int_equal(exchange(SASL_MECH_SCRAM_SHA_1, "n,,", NULL, 0, FIRST, "pencil", NULL, &cond,
				  NULL), SASL_SUCCESS);
}

/* Returns the server-first for <first> (flag n) in a fresh exchange. */
static void server_first(enum sasl_mech m, const char *first, struct sbuf *sf)
{
	enum sasl_cond cond;
	struct sasl *s = sasl_new(m, &env);
	assert_int_equal(step(s, first, sf, &cond), SASL_CONTINUE);
	sasl_free(s);
}

static void test_unknown_user(void **state)
{
	(void)state;
	enum sasl_cond cond;
	struct sbuf a = SBUF_INIT, b = SBUF_INIT, c = SBUF_INIT;

	/* the challenge looks like any other: nonce, a 16-byte salt, i=4096 */
	server_first(SASL_MECH_SCRAM_SHA_256, "n,,n=nobody,r=abc", &a);
	assert_string_equal(fs.last, "nobody");
	assert_true(strncmp(out_str(&a), "r=abc", 5) == 0);
	const char *s = strstr(a.data, ",s="), *i = strstr(a.data, ",i=");
	assert_non_null(s);
	assert_non_null(i);
	assert_int_equal(i - s - 3, 24); /* b64 of 16 bytes */
	assert_string_equal(i, ",i=4096");
	/* the same name gets the same salt (asking twice reveals nothing) ... */
	server_first(SASL_MECH_SCRAM_SHA_256, "n,,n=nobody,r=abc", &b);
	assert_memory_equal(s, strstr(b.data, ",s="), 28);
	/* ... another name another one */
	server_first(SASL_MECH_SCRAM_SHA_256, "n,,n=somebody,r=abc", &c);
	assert_memory_not_equal(s, strstr(c.data, ",s="), 28);
	/* the same name prepared differently is the same user */
	server_first(SASL_MECH_SCRAM_SHA_256, "n,,n=NoBody,r=abc", &b);
	assert_string_equal(fs.last, "nobody");
	assert_memory_equal(s, strstr(b.data, ",s="), 28);

	/* and it fails at the proof, like a wrong password */
	assert_int_equal(exchange(SASL_MECH_SCRAM_SHA_256, "n,,", NULL, 0, "n=nobody,r=abc", "pencil",
				  NULL, &cond, NULL), SASL_FAILURE);
	assert_int_equal(cond, SASL_C_NOT_AUTHORIZED);
	assert_int_equal(exchange(SASL_MECH_SCRAM_SHA_1_PLUS, "p=tls-exporter,,", cb_exporter,
				  sizeof(cb_exporter), "n=nobody,r=abc", "pencil", NULL, &cond, NULL),
			 SASL_FAILURE);
	assert_int_equal(cond, SASL_C_NOT_AUTHORIZED);
	sbuf_free(&a);
	sbuf_free(&b);
	sbuf_free(&c);
}

static void test_backend_error(void **state)
{
	(void)state;
	enum sasl_cond cond;
	fs.fail_rc = -EIO;
	assert_int_equal(exchange(SASL_MECH_SCRAM_SHA_256, "n,,", NULL, 0, FIRST, "pencil", NULL,
				  &cond, NULL), SASL_FAILURE);
	assert_int_equal(cond, SASL_C_TEMPORARY_AUTH_FAILURE);
	fs.fail_rc = -ETIMEDOUT;
	struct sasl *s = sasl_new(SASL_MECH_PLAIN, &env);
	struct sbuf out = SBUF_INIT;
	assert_int_equal(step_n(s, "\0user\0pencil", 12, &out, &cond), SASL_FAILURE);
	assert_int_equal(cond, SASL_C_TEMPORARY_AUTH_FAILURE);
	sasl_free(s);
	sbuf_free(&out);
	/* a record with 0 iterations is unusable: a backend problem */
	fs.fail_rc = 0;
	fs.creds.iterations = 0;
	assert_int_equal(exchange(SASL_MECH_SCRAM_SHA_256, "n,,", NULL, 0, FIRST, "pencil", NULL,
				  &cond, NULL), SASL_FAILURE);
	assert_int_equal(cond, SASL_C_TEMPORARY_AUTH_FAILURE);
}

static void test_authzid(void **state)
{
	(void)state;
	enum sasl_cond cond;
	static const char *const good[] = {
		"n,a=user@example.com,", "n,a=USER@Example.COM,", "n,a=user@example.com.,",
	};
	static const char *const bad[] = {
		"n,a=other@example.com,", "n,a=user@example.org,", "n,a=user@example.com/res,",
		"n,a=example.com,", "n,a=user,", "n,a=us=2Cer@example.com,", "n,a=@example.com,",
		"n,a=user@,",
	};
	for (unsigned i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		assert_int_equal(exchange(SASL_MECH_SCRAM_SHA_256, good[i], NULL, 0, FIRST, "pencil",
					  NULL, &cond, NULL), SASL_SUCCESS);
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(exchange(SASL_MECH_SCRAM_SHA_256, bad[i], NULL, 0, FIRST, "pencil",
					  NULL, &cond, NULL), SASL_FAILURE);
		assert_int_equal(cond, SASL_C_INVALID_AUTHZID);
	}
	/* empty a= is a bad saslname */
	assert_int_equal(exchange(SASL_MECH_SCRAM_SHA_256, "n,a=,", NULL, 0, FIRST, "pencil", NULL,
				  &cond, NULL), SASL_FAILURE);
	assert_int_equal(cond, SASL_C_MALFORMED_REQUEST);
}

static void test_username(void **state)
{
	(void)state;
	enum sasl_cond cond;
	/* =2C and =3D decode to ',' and '=' */
	setup_user("a,b=c", "pencil", SALT_SHA256, 4096);
	assert_int_equal(exchange(SASL_MECH_SCRAM_SHA_256, "n,,", NULL, 0, "n=a=2Cb=3Dc,r=xyz", "pencil",
				  NULL, &cond, NULL), SASL_SUCCESS);
	assert_int_equal(exchange(SASL_MECH_SCRAM_SHA_256, "n,a=a=2Cb=3Dc@example.com,", NULL, 0,
				  "n=a=2Cb=3Dc,r=xyz", "pencil", NULL, &cond, NULL), SASL_SUCCESS);
	/* the name is a localpart: case folded, AuthMessage keeps it as sent */
	setup_user("user", "pencil", SALT_SHA256, 4096);
	struct sasl *s;
	assert_int_equal(exchange(SASL_MECH_SCRAM_SHA_256, "n,,", NULL, 0, "n=UsEr,r=xyz", "pencil",
				  NULL, &cond, &s), SASL_SUCCESS);
	assert_string_equal(sasl_username(s), "user");
	sasl_free(s);
	/* bad escapes */
	static const char *const badenc[] = {
		"n=us=2cer,r=x", "n=us=41er,r=x", "n=user=,r=x", "n=user=2,r=x", "n==,r=x", "n=,r=x",
	};
	for (unsigned i = 0; i < sizeof(badenc) / sizeof(badenc[0]); i++) {
		assert_int_equal(exchange(SASL_MECH_SCRAM_SHA_256, "n,,", NULL, 0, badenc[i], "pencil",
					  NULL, &cond, NULL), SASL_FAILURE);
		assert_int_equal(cond, SASL_C_MALFORMED_REQUEST);
	}
	/* well encoded, but not a valid localpart */
	static const char *const badlocal[] = { "n=a@b,r=x", "n=a b,r=x", "n=a/b,r=x", "n=\xFF,r=x" };
	for (unsigned i = 0; i < sizeof(badlocal) / sizeof(badlocal[0]); i++) {
		assert_int_equal(exchange(SASL_MECH_SCRAM_SHA_256, "n,,", NULL, 0, badlocal[i], "pencil",
					  NULL, &cond, NULL), SASL_FAILURE);
		assert_int_equal(cond, SASL_C_NOT_AUTHORIZED);
	}
}

/* ---- syntax ------------------------------------------------------------ */

static void test_first_malformed(void **state)
{
	(void)state;
	static const char *const bad[] = {
		"x,,n=user,r=abc", "N,,n=user,r=abc", "n,n=user,r=abc", "n,,", "n,,n=user",
		"n,,n=user,", "n,,n=user,r=", "n,,r=abc,n=user", "n,,m=ext,n=user,r=abc",
		"n,,n=user,r=abc,", "n,,n=user,r=abc,1=x", "n,,n=user,r=abc,xx", "n,,n=user,r=abc,=x",
		"p,,n=user,r=abc", "p=,,n=user,r=abc", "n,,n=user,r=ab\x7f", "n,,n=user,r=a b",
		"n,x=y,n=user,r=abc", "n,a=user@example.com", "n,,n=user,,r=abc", ",,n=user,r=abc",
		"n", "y", "p=tls-exporter", "n,,N=user,r=abc", "n,,n=user,R=abc", "n,,n=user,r=abc,m",
		"n,,n=user,r=\xC3\xA9",
	};
	enum sasl_cond cond;
	struct sbuf out = SBUF_INIT;
	env.plus_offered = 0;
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct sasl *s = sasl_new(SASL_MECH_SCRAM_SHA_256, &env);
		enum sasl_rc rc = step(s, bad[i], &out, &cond);
		if (rc != SASL_FAILURE || cond != SASL_C_MALFORMED_REQUEST)
			print_error("accepted: \"%s\"\n", bad[i]);
		assert_int_equal(rc, SASL_FAILURE);
		assert_int_equal(cond, SASL_C_MALFORMED_REQUEST);
		sasl_free(s);
	}
	/* a NUL inside */
	struct sasl *s = sasl_new(SASL_MECH_SCRAM_SHA_256, &env);
	assert_int_equal(step_n(s, "n,,n=user,r=abc\0", 16, &out, &cond), SASL_FAILURE);
	assert_int_equal(cond, SASL_C_MALFORMED_REQUEST);
	sasl_free(s);
	/* optional extensions are ignored, and kept in the AuthMessage */
	assert_int_equal(exchange(SASL_MECH_SCRAM_SHA_256, "n,,", NULL, 0, "n=user,r=abc,x=1,h=,Y=z=",
				  "pencil", NULL, &cond, NULL), SASL_SUCCESS);
	assert_int_equal(fs.calls, 1); /* only the last one got as far as a lookup */
	sbuf_free(&out);
}

/* Every prefix of a valid client-first: it either fails as malformed or,
 * once the nonce has at least one character, is itself a valid message. */
static void test_first_truncated(void **state)
{
	(void)state;
	const char *msgs[] = { "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
			       "p=tls-exporter,a=user@example.com,n=user,r=fyko+d2lbbFgONRv9qkxdawL" };
	enum sasl_mech mechs[] = { SASL_MECH_SCRAM_SHA_1, SASL_MECH_SCRAM_SHA_256_PLUS };
	enum sasl_cond cond;
	struct sbuf out = SBUF_INIT;
	for (unsigned k = 0; k < 2; k++) {
		size_t len = strlen(msgs[k]), valid_from = (size_t)(strstr(msgs[k], "r=") - msgs[k]) + 3;
		for (size_t n = 1; n <= len; n++) {
			struct sasl *s = sasl_new(mechs[k], &env);
			enum sasl_rc rc = step_n(s, msgs[k], n, &out, &cond);
			if (n >= valid_from) {
				assert_int_equal(rc, SASL_CONTINUE);
			} else {
				assert_int_equal(rc, SASL_FAILURE);
				assert_int_equal(cond, SASL_C_MALFORMED_REQUEST);
			}
			sasl_free(s);
		}
	}
	sbuf_free(&out);
}

/* Runs client-first for "user" and returns the server in FINAL state with
 * a valid client-final for it in <final>. */
static struct sasl *at_final(enum sasl_mech m, const char *gs2, const uint8_t *cb, size_t cblen,
			     const char *ext, struct sbuf *final)
{
	enum sasl_cond cond;
	struct sbuf out = SBUF_INIT, first = SBUF_INIT;
	struct sasl *s = sasl_new(m, &env);
	sbuf_printf(&first, "%s%s", gs2, FIRST);
	assert_int_equal(step(s, out_str(&first), &out, &cond), SASL_CONTINUE);
	client_final(m, "pencil", gs2, cb, cblen, FIRST, out_str(&out), ext, final, NULL);
	sbuf_free(&out);
	sbuf_free(&first);
	return s;
}

/* Every prefix of a valid client-final fails; so does every single-bit
 * change anywhere in it. */
static void test_final_truncated_and_flipped(void **state)
{
	(void)state;
	struct sbuf final = SBUF_INIT, out = SBUF_INIT, mod = SBUF_INIT;
	enum sasl_cond cond;
	struct {
		enum sasl_mech m;
		const char *gs2;
		const uint8_t *cb;
		size_t cblen;
		const char *ext;
	} cases[] = {
		{ SASL_MECH_SCRAM_SHA_1, "n,,", NULL, 0, NULL },
		{ SASL_MECH_SCRAM_SHA_256, "n,,", NULL, 0, "x=ext" },
		{ SASL_MECH_SCRAM_SHA_256_PLUS, "p=tls-exporter,,", cb_exporter, sizeof(cb_exporter), NULL },
	};
	for (unsigned k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		struct sasl *s = at_final(cases[k].m, cases[k].gs2, cases[k].cb, cases[k].cblen,
					  cases[k].ext, &final);
		sasl_free(s);
		size_t len = final.len;
		for (size_t n = 0; n < len; n++) {
			s = at_final(cases[k].m, cases[k].gs2, cases[k].cb, cases[k].cblen, cases[k].ext, &final);
			assert_int_equal(step_n(s, final.data, n, &out, &cond), SASL_FAILURE);
			assert_true(cond == SASL_C_MALFORMED_REQUEST || cond == SASL_C_NOT_AUTHORIZED);
			sasl_free(s);
		}
		for (size_t n = 0; n < len; n++) {
			for (unsigned bit = 0; bit < 8; bit += 5) { /* bits 0 and 5 (case) */
				s = at_final(cases[k].m, cases[k].gs2, cases[k].cb, cases[k].cblen,
					     cases[k].ext, &final);
				sbuf_reset(&mod);
				sbuf_append(&mod, final.data, final.len);
				mod.data[n] ^= (char)(1 << bit);
				enum sasl_rc rc = step_n(s, mod.data, mod.len, &out, &cond);
				/* changing a letter inside the extension's value is harmless
				 * to the syntax but breaks the proof all the same */
				if (rc != SASL_FAILURE)
					print_error("accepted with byte %zu bit %u flipped: %s\n", n, bit, mod.data);
				assert_int_equal(rc, SASL_FAILURE);
				sasl_free(s);
			}
		}
		/* and the untouched message still works */
		s = at_final(cases[k].m, cases[k].gs2, cases[k].cb, cases[k].cblen, cases[k].ext, &final);
		assert_int_equal(step(s, final.data, &out, &cond), SASL_SUCCESS);
		sasl_free(s);
	}
	sbuf_free(&final);
	sbuf_free(&out);
	sbuf_free(&mod);
}

static void test_final_malformed(void **state)
{
	(void)state;
	struct sbuf final = SBUF_INIT, out = SBUF_INIT, m = SBUF_INIT;
	enum sasl_cond cond;
	struct sasl *s = at_final(SASL_MECH_SCRAM_SHA_256, "n,,", NULL, 0, NULL, &final);
	/* pick the valid message apart */
	char *c = final.data, *r = strstr(c, ",r=") + 1, *p = strstr(c, ",p=") + 1;
	char cpart[64], rpart[128], ppart[64];
	snprintf(cpart, sizeof(cpart), "%.*s", (int)(r - 1 - c), c);
	snprintf(rpart, sizeof(rpart), "%.*s", (int)(p - 1 - r), r);
	snprintf(ppart, sizeof(ppart), "%s", p);
	sasl_free(s);

	struct {
		const char *fmt;
		enum sasl_cond cond;
	} cases[] = {
		{ "%1$s,%2$s", SASL_C_MALFORMED_REQUEST },              /* no proof */
		{ "%1$s,%2$s,%3$s,x=1", SASL_C_MALFORMED_REQUEST },     /* proof not last */
		{ "%2$s,%1$s,%3$s", SASL_C_MALFORMED_REQUEST },         /* wrong order */
		{ "%1$s,%3$s", SASL_C_MALFORMED_REQUEST },              /* no nonce */
		{ "%2$s,%3$s", SASL_C_MALFORMED_REQUEST },              /* no c= */
		{ "%1$s,%2$s,%3$s,%3$s", SASL_C_MALFORMED_REQUEST },    /* two proofs */
		{ "%1$s,%2$s,,%3$s", SASL_C_MALFORMED_REQUEST },        /* empty attribute */
		{ "%1$s,%2$s,%3$s,", SASL_C_MALFORMED_REQUEST },        /* trailing comma */
		{ "c=b!ws,%2$s,%3$s", SASL_C_MALFORMED_REQUEST },       /* bad base64 */
		{ "c=biw,%2$s,%3$s", SASL_C_MALFORMED_REQUEST },        /* bad base64 length */
		{ "%1$s,%2$s,p=AAAA", SASL_C_MALFORMED_REQUEST },       /* proof of 3 bytes */
		{ "%1$s,%2$s,p=", SASL_C_MALFORMED_REQUEST },           /* empty proof */
		{ "%1$s,%2$s,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ", SASL_C_MALFORMED_REQUEST }, /* no padding */
		{ "%1$s,%2$sX,%3$s", SASL_C_NOT_AUTHORIZED },           /* nonce changed */
		{ "%1$s,r=fyko+d2lbbFgONRv9qkxdawL,%3$s", SASL_C_NOT_AUTHORIZED }, /* client nonce only */
		{ "c=eSws,%2$s,%3$s", SASL_C_NOT_AUTHORIZED },          /* c= of "y,," */
		{ "c=,%2$s,%3$s", SASL_C_NOT_AUTHORIZED },              /* empty c= */
		{ "c=bixh PXVzZXIs,%2$s,%3$s", SASL_C_MALFORMED_REQUEST },
	};
	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		s = at_final(SASL_MECH_SCRAM_SHA_256, "n,,", NULL, 0, NULL, &final);
		sbuf_reset(&m);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
		sbuf_printf(&m, cases[i].fmt, cpart, rpart, ppart);
#pragma GCC diagnostic pop
		enum sasl_rc rc = step(s, out_str(&m), &out, &cond);
		if (rc != SASL_FAILURE || cond != cases[i].cond)
			print_error("case %u: \"%s\" → %d/%d\n", i, m.data, rc, cond);
		assert_int_equal(rc, SASL_FAILURE);
		assert_int_equal(cond, cases[i].cond);
		sasl_free(s);
	}
	sbuf_free(&final);
	sbuf_free(&out);
	sbuf_free(&m);
}

static void test_sequence(void **state)
{
	(void)state;
	struct sbuf out = SBUF_INIT, final = SBUF_INIT;
	enum sasl_cond cond;

	/* no initial response: one empty challenge, then the exchange */
	struct sasl *s = sasl_new(SASL_MECH_SCRAM_SHA_256, &env);
	assert_int_equal(step(s, "", &out, &cond), SASL_CONTINUE);
	assert_int_equal(out.len, 0);
	assert_int_equal(step(s, "n,," FIRST, &out, &cond), SASL_CONTINUE);
	client_final(SASL_MECH_SCRAM_SHA_256, "pencil", "n,,", NULL, 0, FIRST, out_str(&out), NULL,
		     &final, NULL);
	assert_int_equal(step(s, final.data, &out, &cond), SASL_SUCCESS);
	/* nothing after the verdict */
	assert_int_equal(step(s, final.data, &out, &cond), SASL_FAILURE);
	assert_int_equal(cond, SASL_C_MALFORMED_REQUEST);
	assert_string_equal(sasl_username(s), "user"); /* still the verdict given */
	sasl_free(s);

	/* only one empty message is taken as "no initial response" */
	s = sasl_new(SASL_MECH_SCRAM_SHA_256, &env);
	assert_int_equal(step(s, "", &out, &cond), SASL_CONTINUE);
	assert_int_equal(step(s, "", &out, &cond), SASL_FAILURE);
	assert_int_equal(cond, SASL_C_MALFORMED_REQUEST);
	sasl_free(s);

	/* an empty client-final */
	s = sasl_new(SASL_MECH_SCRAM_SHA_256, &env);
	assert_int_equal(step(s, "n,," FIRST, &out, &cond), SASL_CONTINUE);
	assert_int_equal(step(s, "", &out, &cond), SASL_FAILURE);
	assert_int_equal(cond, SASL_C_MALFORMED_REQUEST);
	assert_int_equal(step(s, "n,," FIRST, &out, &cond), SASL_FAILURE); /* over */
	sasl_free(s);
	/* ... also as NULL */
	s = sasl_new(SASL_MECH_SCRAM_SHA_1, &env);
	assert_int_equal(step(s, "n,," FIRST, &out, &cond), SASL_CONTINUE);
	assert_int_equal(sasl_step(s, NULL, 0, &out, &cond), SASL_FAILURE);
	assert_int_equal(cond, SASL_C_MALFORMED_REQUEST);
	sasl_free(s);
	s = sasl_new(SASL_MECH_PLAIN, &env);
	assert_int_equal(sasl_step(s, NULL, 0, &out, &cond), SASL_CONTINUE);
	assert_int_equal(sasl_step(s, NULL, 0, &out, &cond), SASL_FAILURE);
	assert_int_equal(cond, SASL_C_MALFORMED_REQUEST);
	sasl_free(s);

	/* oversized */
	static char big[9000];
	memset(big, 'a', sizeof(big) - 1);
	memcpy(big, "n,,n=user,r=", 12);
	s = sasl_new(SASL_MECH_SCRAM_SHA_256, &env);
	assert_int_equal(step(s, big, &out, &cond), SASL_FAILURE);
	assert_int_equal(cond, SASL_C_MALFORMED_REQUEST);
	sasl_free(s);
	/* but long nonces are fine */
	big[4000] = 0;
	s = sasl_new(SASL_MECH_SCRAM_SHA_256, &env);
	assert_int_equal(step(s, big, &out, &cond), SASL_CONTINUE);
	sasl_free(s);

	/* random server nonces: 32 base64 characters, fresh each time */
	struct sbuf a = SBUF_INIT, b = SBUF_INIT;
	server_first(SASL_MECH_SCRAM_SHA_1, "n,,n=user,r=abc", &a);
	server_first(SASL_MECH_SCRAM_SHA_1, "n,,n=user,r=abc", &b);
	assert_int_equal(strstr(a.data, ",s=") - a.data, 2 + 3 + 32);
	assert_memory_not_equal(a.data, b.data, 37);
	sbuf_free(&a);
	sbuf_free(&b);
	sasl_free(NULL);
	sbuf_free(&out);
	sbuf_free(&final);
}

/* ---- PLAIN ------------------------------------------------------------- */

static enum sasl_rc plain(const char *msg, size_t len, enum sasl_cond *cond, struct sasl **keep)
{
	struct sbuf out = SBUF_INIT;
	struct sasl *s = sasl_new(SASL_MECH_PLAIN, &env);
	enum sasl_rc rc = step_n(s, msg, len, &out, cond);
	if (rc == SASL_SUCCESS)
		assert_int_equal(out.len, 0);
	if (keep)
		*keep = s;
	else
		sasl_free(s);
	sbuf_free(&out);
	return rc;
}

#define P(lit) lit, sizeof(lit) - 1

static void test_plain(void **state)
{
	(void)state;
	enum sasl_cond cond;
	struct sasl *s;

	assert_int_equal(plain(P("\0user\0pencil"), &cond, &s), SASL_SUCCESS);
	assert_string_equal(sasl_username(s), "user");
	sasl_free(s);
	assert_int_equal(plain(P("\0USER\0pencil"), &cond, &s), SASL_SUCCESS);
	assert_string_equal(sasl_username(s), "user");
	sasl_free(s);
	assert_int_equal(plain(P("user@example.com\0user\0pencil"), &cond, NULL), SASL_SUCCESS);
	assert_int_equal(plain(P("User@Example.com\0user\0pencil"), &cond, NULL), SASL_SUCCESS);

	assert_int_equal(plain(P("\0user\0pencil2"), &cond, &s), SASL_FAILURE);
	assert_int_equal(cond, SASL_C_NOT_AUTHORIZED);
	assert_null(sasl_username(s));
	sasl_free(s);
	assert_int_equal(plain(P("\0user\0Pencil"), &cond, NULL), SASL_FAILURE);
	assert_int_equal(cond, SASL_C_NOT_AUTHORIZED);
	assert_int_equal(plain(P("\0nobody\0pencil"), &cond, NULL), SASL_FAILURE);
	assert_int_equal(cond, SASL_C_NOT_AUTHORIZED);
	assert_int_equal(plain(P("\0a@b\0pencil"), &cond, NULL), SASL_FAILURE);
	assert_int_equal(cond, SASL_C_NOT_AUTHORIZED);
	assert_int_equal(plain(P("other@example.com\0user\0pencil"), &cond, NULL), SASL_FAILURE);
	assert_int_equal(cond, SASL_C_INVALID_AUTHZID);
	assert_int_equal(plain(P("user@example.com/r\0user\0pencil"), &cond, NULL), SASL_FAILURE);
	assert_int_equal(cond, SASL_C_INVALID_AUTHZID);

	static const struct {
		const char *m;
		size_t len;
	} bad[] = {
		{ P("user\0pencil") }, { P("userpencil") }, { P("\0user\0pencil\0") },
		{ P("\0\0pencil") }, { P("\0user\0") }, { P("\0\0") }, { P("\0\0\0") }, { P("\0") },
	};
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(plain(bad[i].m, bad[i].len, &cond, NULL), SASL_FAILURE);
		assert_int_equal(cond, SASL_C_MALFORMED_REQUEST);
	}

	/* SASLprep of the presented password: U+2168 → "IX" */
	setup_user("user", "IX", SALT_SHA256, 16);
	assert_int_equal(plain(P("\0user\0\xE2\x85\xA8"), &cond, NULL), SASL_SUCCESS);
	assert_int_equal(plain(P("\0user\0I\xC2\xADX"), &cond, NULL), SASL_SUCCESS);
	assert_int_equal(plain(P("\0user\0I\x07X"), &cond, NULL), SASL_FAILURE);
	assert_int_equal(cond, SASL_C_NOT_AUTHORIZED);
	/* a 12-byte salt (salt_len) is honoured */
	setup_user("user", "pencil", SALT_SHA1, 4096);
	assert_int_equal(plain(P("\0user\0pencil"), &cond, NULL), SASL_SUCCESS);
}

/* Without get_creds the exchange asks for the user (SASL_NEED_CREDS), is
 * given the lookup's result and replays the same message: the RFC 7677
 * vector comes out bit-exact, unknown users and backend failures answer as
 * with a synchronous lookup, and PLAIN works the same way. */
static void test_need_creds(void **state)
{
	(void)state;
	struct sbuf out = SBUF_INIT;
	enum sasl_cond cond;
	const char *first = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
	env.get_creds = NULL;
	env.plus_offered = 0;

	struct sasl *s = sasl_new(SASL_MECH_SCRAM_SHA_256, &env);
	sasl_test_set_nonce(s, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
	assert_int_equal(step(s, first, &out, &cond), SASL_NEED_CREDS);
	assert_int_equal(out.len, 0);
	assert_string_equal(sasl_user(s), "user");
	sasl_set_creds(s, 0, &fs.creds);
	assert_int_equal(step(s, first, &out, &cond), SASL_CONTINUE);
	assert_string_equal(out_str(&out), "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
					   "s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
	assert_int_equal(step(s, "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
				 "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", &out, &cond),
			 SASL_SUCCESS);
	assert_string_equal(out_str(&out), "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
	sasl_free(s);

	/* unknown: a challenge all the same, then not-authorized */
	s = sasl_new(SASL_MECH_SCRAM_SHA_256, &env);
	assert_int_equal(step(s, first, &out, &cond), SASL_NEED_CREDS);
	sasl_set_creds(s, -ENOENT, NULL);
	assert_int_equal(step(s, first, &out, &cond), SASL_CONTINUE);
	sasl_free(s);
	/* backend failure */
	s = sasl_new(SASL_MECH_SCRAM_SHA_256, &env);
	assert_int_equal(step(s, first, &out, &cond), SASL_NEED_CREDS);
	sasl_set_creds(s, -ETIMEDOUT, NULL);
	assert_int_equal(step(s, first, &out, &cond), SASL_FAILURE);
	assert_int_equal(cond, SASL_C_TEMPORARY_AUTH_FAILURE);
	sasl_free(s);
	/* PLAIN */
	s = sasl_new(SASL_MECH_PLAIN, &env);
	assert_int_equal(step_n(s, P("\0user\0pencil"), &out, &cond), SASL_NEED_CREDS);
	sasl_set_creds(s, 0, &fs.creds);
	assert_int_equal(step_n(s, P("\0user\0pencil"), &out, &cond), SASL_SUCCESS);
	assert_string_equal(sasl_username(s), "user");
	sasl_free(s);
	s = sasl_new(SASL_MECH_PLAIN, &env);
	assert_int_equal(step_n(s, P("\0user\0wrong"), &out, &cond), SASL_NEED_CREDS);
	sasl_set_creds(s, 0, &fs.creds);
	assert_int_equal(step_n(s, P("\0user\0wrong"), &out, &cond), SASL_FAILURE);
	assert_int_equal(cond, SASL_C_NOT_AUTHORIZED);
	sasl_free(s);
	sbuf_free(&out);
}

static void test_plain_tls(void **state)
{
	(void)state;
	enum sasl_cond cond;
	struct sbuf out = SBUF_INIT;
	env.tls = 0;
	assert_int_equal(plain(P("\0user\0pencil"), &cond, NULL), SASL_FAILURE);
	assert_int_equal(cond, SASL_C_ENCRYPTION_REQUIRED);
	assert_int_equal(fs.calls, 0);
	/* even with no initial response */
	struct sasl *s = sasl_new(SASL_MECH_PLAIN, &env);
	assert_int_equal(step(s, "", &out, &cond), SASL_FAILURE);
	assert_int_equal(cond, SASL_C_ENCRYPTION_REQUIRED);
	sasl_free(s);
	/* with TLS: empty challenge first, then the message */
	env.tls = 1;
	s = sasl_new(SASL_MECH_PLAIN, &env);
	assert_int_equal(step(s, "", &out, &cond), SASL_CONTINUE);
	assert_int_equal(out.len, 0);
	assert_int_equal(step_n(s, P("\0user\0pencil"), &out, &cond), SASL_SUCCESS);
	sasl_free(s);
	sbuf_free(&out);
}

/* ---- names and base64 -------------------------------------------------- */

static void test_names(void **state)
{
	(void)state;
	enum sasl_mech m;
	for (unsigned i = 0; i < SASL_MECH_COUNT; i++) {
		assert_int_equal(sasl_mech_parse(sasl_mech_name((enum sasl_mech)i), &m), 0);
		assert_int_equal(m, i);
	}
	assert_string_equal(sasl_mech_name(SASL_MECH_SCRAM_SHA_256_PLUS), "SCRAM-SHA-256-PLUS");
	assert_string_equal(sasl_mech_name(SASL_MECH_PLAIN), "PLAIN");
	assert_int_equal(sasl_mech_parse("scram-sha-1", &m), -1);
	assert_int_equal(sasl_mech_parse("DIGEST-MD5", &m), -1);
	assert_int_equal(sasl_mech_parse("", &m), -1);
	assert_string_equal(sasl_cond_name(SASL_C_NOT_AUTHORIZED), "not-authorized");
	assert_string_equal(sasl_cond_name(SASL_C_TEMPORARY_AUTH_FAILURE), "temporary-auth-failure");
	assert_string_equal(sasl_cond_name(SASL_C_ABORTED), "aborted");
	assert_string_equal(sasl_cond_name(SASL_C_INVALID_AUTHZID), "invalid-authzid");
	assert_null(sasl_new(SASL_MECH_COUNT, &env));
}

static void test_b64(void **state)
{
	(void)state;
	struct sbuf b = SBUF_INIT;
	static const struct {
		const char *bin, *b64;
	} v[] = { /* RFC 4648 §10 */
		{ "", "" }, { "f", "Zg==" }, { "fo", "Zm8=" }, { "foo", "Zm9v" },
		{ "foob", "Zm9vYg==" }, { "fooba", "Zm9vYmE=" }, { "foobar", "Zm9vYmFy" },
	};
	for (unsigned i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		sbuf_reset(&b);
		assert_int_equal(sasl_b64_encode((const uint8_t *)v[i].bin, strlen(v[i].bin), &b), 0);
		assert_string_equal(out_str(&b), v[i].b64);
		sbuf_reset(&b);
		assert_int_equal(sasl_b64_decode(v[i].b64, strlen(v[i].b64), &b), 0);
		assert_int_equal(b.len, strlen(v[i].bin));
		assert_memory_equal(b.data ? b.data : "", v[i].bin, b.len);
	}
	/* appends */
	sbuf_reset(&b);
	sbuf_puts(&b, "x=");
	sasl_b64_encode((const uint8_t *)"\xff\xfe", 2, &b);
	assert_string_equal(out_str(&b), "x=//4=");
	/* "=" is zero bytes (RFC 6120) */
	sbuf_reset(&b);
	assert_int_equal(sasl_b64_decode("=", 1, &b), 0);
	assert_int_equal(b.len, 0);
	static const char *const bad[] = {
		"Zg", "Zg=", "Zg===", "Z===", "Zm9v\n", "Zm 9v", "Zm9v!AAA", "Zh==", /* non-zero pad bits */
		"Zm8=Zm8=", "====", "Zm-_",
	};
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		sbuf_reset(&b);
		if (sasl_b64_decode(bad[i], strlen(bad[i]), &b) != -EINVAL)
			print_error("accepted \"%s\"\n", bad[i]);
		assert_int_equal(sasl_b64_decode(bad[i], strlen(bad[i]), &b), -EINVAL);
	}
	sbuf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_rfc5802, setup),
		cmocka_unit_test_setup(test_rfc7677, setup),
		cmocka_unit_test_setup(test_need_creds, setup),
		cmocka_unit_test_setup(test_plus_exporter_vector, setup),
		cmocka_unit_test_setup(test_plus_types, setup),
		cmocka_unit_test_setup(test_plus_unavailable, setup),
		cmocka_unit_test_setup(test_cb_mismatch, setup),
		cmocka_unit_test_setup(test_plus_policy, setup),
		cmocka_unit_test_setup(test_downgrade, setup),
		cmocka_unit_test_setup(test_wrong_password, setup),
		cmocka_unit_test_setup(test_unknown_user, setup),
		cmocka_unit_test_setup(test_backend_error, setup),
		cmocka_unit_test_setup(test_authzid, setup),
		cmocka_unit_test_setup(test_username, setup),
		cmocka_unit_test_setup(test_first_malformed, setup),
		cmocka_unit_test_setup(test_first_truncated, setup),
		cmocka_unit_test_setup(test_final_truncated_and_flipped, setup),
		cmocka_unit_test_setup(test_final_malformed, setup),
		cmocka_unit_test_setup(test_sequence, setup),
		cmocka_unit_test_setup(test_plain, setup),
		cmocka_unit_test_setup(test_plain_tls, setup),
		cmocka_unit_test_setup(test_names, setup),
		cmocka_unit_test_setup(test_b64, setup),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
