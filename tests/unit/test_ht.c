/* tests/unit/test_ht.c - HT-SHA-256-* against sasl.md §8 and an independent HMAC. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/digest.h>
#include <openssl/hmac.h>
#include <sodium.h>

#include "tether/ht.h"

/* sasl.md §8: common inputs */
static const char vec_token[] = "WXZzciBwYmFmdmZnZiBqdmd1IGp2eXFhcmZm";

static void unhex(const char *hex, uint8_t *out, size_t len)
{
	size_t n = 0;
	assert_int_equal(sodium_hex2bin(out, len, hex, strlen(hex), NULL, &n, NULL), 0);
	assert_int_equal(n, len);
}

static size_t unb64(const char *b64, uint8_t *out, size_t max)
{
	size_t n = 0;
	assert_int_equal(sodium_base642bin(out, max, b64, strlen(b64), NULL, &n, NULL,
					   sodium_base64_VARIANT_ORIGINAL), 0);
	return n;
}

/* initiator-msg = "user" NUL initiator-hash, built the way a client would. */
static size_t build_msg(const char *authcid, const uint8_t hash[HT_HASH_LEN], uint8_t *out)
{
	size_t a = strlen(authcid);
	memcpy(out, authcid, a);
	out[a] = 0;
	memcpy(out + a + 1, hash, HT_HASH_LEN);
	return a + 1 + HT_HASH_LEN;
}

/* Checks one sasl.md §8 vector: hashes, the full initiator message bytes
 * against the given base64, the parse of that message, and ht_verify. */
static void check_vector(const uint8_t *cb, size_t cb_len, const char *ihex,
			 const char *imsg_b64, const char *rhex, const char *rmsg_b64)
{
	uint8_t want_i[HT_HASH_LEN], want_r[HT_HASH_LEN], got[HT_HASH_LEN];
	uint8_t want_msg[128], msg[128], r_b64[64], hash[HT_HASH_LEN];
	char authcid[64];
	size_t want_len, len;

	unhex(ihex, want_i, sizeof(want_i));
	unhex(rhex, want_r, sizeof(want_r));

	ht_initiator_hash(vec_token, cb, cb_len, got);
	assert_memory_equal(got, want_i, HT_HASH_LEN);

	want_len = unb64(imsg_b64, want_msg, sizeof(want_msg));
	len = build_msg("user", got, msg);
	assert_int_equal(len, want_len);
	assert_memory_equal(msg, want_msg, len);

	assert_int_equal(ht_parse_initiator(want_msg, want_len, authcid, sizeof(authcid), hash), 0);
	assert_string_equal(authcid, "user");
	assert_memory_equal(hash, want_i, HT_HASH_LEN);
	assert_int_equal(ht_verify(vec_token, cb, cb_len, hash), 1);

	ht_responder_hash(vec_token, cb, cb_len, got);
	assert_memory_equal(got, want_r, HT_HASH_LEN);
	assert_int_equal(unb64(rmsg_b64, r_b64, sizeof(r_b64)), HT_HASH_LEN);
	assert_memory_equal(got, r_b64, HT_HASH_LEN);
}

/* sasl.md §8.1 HT-SHA-256-NONE */
static void test_vector_none(void **state)
{
	(void)state;
	check_vector(NULL, 0,
		     "9097787461a184e0fa84ec00c1381190b6c4d16a8ec4453c7b2ac5e7fcf935ed",
		     "dXNlcgCQl3h0YaGE4PqE7ADBOBGQtsTRao7ERTx7KsXn/Pk17Q==",
		     "4e513409631474863b986c9f3e8c1e27ca29d1d7ab9ed4097e7afd6007bf9c62",
		     "TlE0CWMUdIY7mGyfPoweJ8op0derntQJfnr9YAe/nGI=");
	/* the full initiator-msg hex of §8.1, too */
	uint8_t want[37], got[HT_HASH_LEN], msg[64];
	unhex("7573657200"
	      "9097787461a184e0fa84ec00c1381190b6c4d16a8ec4453c7b2ac5e7fcf935ed", want, sizeof(want));
	ht_initiator_hash(vec_token, (const uint8_t *)"", 0, got);
	assert_int_equal(build_msg("user", got, msg), sizeof(want));
	assert_memory_equal(msg, want, sizeof(want));
}

/* sasl.md §8.2 HT-SHA-256-EXPR, cb-data 0x00..0x1f */
static void test_vector_expr(void **state)
{
	(void)state;
	uint8_t cb[32], cbhex[32];
	for (unsigned i = 0; i < sizeof(cb); i++)
		cb[i] = (uint8_t)i;
	unhex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", cbhex, 32);
	assert_memory_equal(cb, cbhex, 32);
	check_vector(cb, sizeof(cb),
		     "0c5745576afeea711960549186a31a65c9f328205ee38b66825b3d4c872b395c",
		     "dXNlcgAMV0VXav7qcRlgVJGGoxplyfMoIF7ji2aCWz1Mhys5XA==",
		     "1260579b34d55aeba4e43062a412db609a0a7153abd218b0f148445c4e83529f",
		     "EmBXmzTVWuuk5DBipBLbYJoKcVOr0hiw8UhEXE6DUp8=");
}

/* Independent computation: one-shot HMAC() over an explicit concatenation,
 * not the streaming path ht.c uses. */
static void ref_hmac(const char *token, const char *label, const uint8_t *cb, size_t cb_len,
		     uint8_t out[HT_HASH_LEN])
{
	uint8_t in[9 + 256];
	unsigned int outlen = 0;
	assert_true(strlen(label) == 9 && cb_len <= 256);
	memcpy(in, label, 9);
	if (cb_len)
		memcpy(in + 9, cb, cb_len);
	assert_non_null(HMAC(EVP_sha256(), token, strlen(token), in, 9 + cb_len, out, &outlen));
	assert_int_equal(outlen, HT_HASH_LEN);
}

static void check_against_ref(const char *token, const uint8_t *cb, size_t cb_len)
{
	uint8_t a[HT_HASH_LEN], b[HT_HASH_LEN], r[HT_HASH_LEN];

	ht_initiator_hash(token, cb, cb_len, a);
	ref_hmac(token, "Initiator", cb, cb_len, b);
	assert_memory_equal(a, b, HT_HASH_LEN);
	assert_int_equal(ht_verify(token, cb, cb_len, b), 1);

	ht_responder_hash(token, cb, cb_len, r);
	ref_hmac(token, "Responder", cb, cb_len, b);
	assert_memory_equal(r, b, HT_HASH_LEN);
	/* the responder hash must never pass as an initiator hash */
	assert_memory_not_equal(a, r, HT_HASH_LEN);
	assert_int_equal(ht_verify(token, cb, cb_len, r), 0);
}

/* ENDP: a SHA-256 certificate hash (32 bytes); UNIQ: a TLS 1.2 Finished
 * verify_data (12 bytes); EXPR with random data; each bound hash differs
 * from the unbound one and from each other binding. */
static void test_endp_uniq_vs_reference(void **state)
{
	(void)state;
	uint8_t endp[32], uniq[12], expr[32], h_none[HT_HASH_LEN], h_endp[HT_HASH_LEN],
		h_uniq[HT_HASH_LEN];
	char tok[44];

	for (unsigned i = 0; i < sizeof(endp); i++)
		endp[i] = (uint8_t)(0xa5 ^ (i * 7));
	for (unsigned i = 0; i < sizeof(uniq); i++)
		uniq[i] = (uint8_t)(0xf0 - i);
	randombytes_buf(expr, sizeof(expr));

	check_against_ref(vec_token, endp, sizeof(endp));
	check_against_ref(vec_token, uniq, sizeof(uniq));
	check_against_ref(vec_token, expr, sizeof(expr));
	check_against_ref(vec_token, NULL, 0);

	/* a longer (SHA-512 certificate) binding and a random token */
	uint8_t endp512[64];
	randombytes_buf(endp512, sizeof(endp512));
	randombytes_buf(tok, sizeof(tok));
	for (unsigned i = 0; i < sizeof(tok) - 1; i++)
		tok[i] = (char)('A' + (uint8_t)tok[i] % 26);
	tok[sizeof(tok) - 1] = '\0';
	check_against_ref(tok, endp512, sizeof(endp512));

	/* the binding is actually part of the MAC */
	ht_initiator_hash(vec_token, NULL, 0, h_none);
	ht_initiator_hash(vec_token, endp, sizeof(endp), h_endp);
	ht_initiator_hash(vec_token, uniq, sizeof(uniq), h_uniq);
	assert_memory_not_equal(h_none, h_endp, HT_HASH_LEN);
	assert_memory_not_equal(h_none, h_uniq, HT_HASH_LEN);
	assert_memory_not_equal(h_endp, h_uniq, HT_HASH_LEN);
	assert_int_equal(ht_verify(vec_token, uniq, sizeof(uniq), h_endp), 0);
	assert_int_equal(ht_verify(vec_token, NULL, 0, h_endp), 0);
	assert_int_equal(ht_verify(vec_token, endp, sizeof(endp) - 1, h_endp), 0);
	assert_int_equal(ht_verify("WXZzciBwYmFmdmZnZiBqdmd1IGp2eXFhcmZn", endp, sizeof(endp),
				   h_endp), 0);
}

static void test_parse_no_nul(void **state)
{
	(void)state;
	uint8_t msg[4 + HT_HASH_LEN + 1], hash[HT_HASH_LEN];
	char authcid[64];

	memset(msg, 'x', sizeof(msg));
	assert_int_equal(ht_parse_initiator(msg, sizeof(msg), authcid, sizeof(authcid), hash), -EINVAL);
	assert_string_equal(authcid, "");
	assert_int_equal(ht_parse_initiator(msg, 0, authcid, sizeof(authcid), hash), -EINVAL);
	assert_int_equal(ht_parse_initiator(NULL, 0, authcid, sizeof(authcid), hash), -EINVAL);
}

static void test_parse_empty_authcid(void **state)
{
	(void)state;
	uint8_t msg[1 + HT_HASH_LEN], hash[HT_HASH_LEN];
	char authcid[64];

	memset(msg, 0x41, sizeof(msg));
	msg[0] = 0;
	assert_int_equal(ht_parse_initiator(msg, sizeof(msg), authcid, sizeof(authcid), hash), -EINVAL);
	/* only a NUL */
	assert_int_equal(ht_parse_initiator(msg, 1, authcid, sizeof(authcid), hash), -EINVAL);
}

/* The hash contains 0x00 bytes (first, middle, last, all): the split is at
 * the first NUL, the rest must be exactly 32 bytes and is returned verbatim. */
static void test_parse_hash_with_nuls(void **state)
{
	(void)state;
	uint8_t h[HT_HASH_LEN], msg[64], hash[HT_HASH_LEN];
	char authcid[64];
	size_t len;

	for (int variant = 0; variant < 4; variant++) {
		for (unsigned i = 0; i < HT_HASH_LEN; i++)
			h[i] = (uint8_t)(i + 1);
		if (variant == 0)
			h[0] = 0;
		else if (variant == 1)
			h[5] = h[17] = 0;
		else if (variant == 2)
			h[HT_HASH_LEN - 1] = 0;
		else
			memset(h, 0, sizeof(h));
		len = build_msg("juliet", h, msg);
		memset(hash, 0xee, sizeof(hash));
		assert_int_equal(ht_parse_initiator(msg, len, authcid, sizeof(authcid), hash), 0);
		assert_string_equal(authcid, "juliet");
		assert_memory_equal(hash, h, HT_HASH_LEN);
	}

	/* A real token whose initiator hash has a 0x00 (about one in eight do):
	 * parse then verify end to end. */
	char tok[8];
	for (unsigned n = 0;; n++) {
		snprintf(tok, sizeof(tok), "t%u", n);
		ht_initiator_hash(tok, NULL, 0, h);
		if (memchr(h, 0, sizeof(h)))
			break;
		assert_true(n < 10000);
	}
	len = build_msg("romeo", h, msg);
	assert_int_equal(ht_parse_initiator(msg, len, authcid, sizeof(authcid), hash), 0);
	assert_string_equal(authcid, "romeo");
	assert_int_equal(ht_verify(tok, NULL, 0, hash), 1);
}

static void test_parse_wrong_hash_len(void **state)
{
	(void)state;
	uint8_t h[64], msg[80], hash[HT_HASH_LEN];
	char authcid[64];
	size_t len;

	memset(h, 0x5a, sizeof(h));
	len = build_msg("user", h, msg); /* 4 + 1 + 32 */
	assert_int_equal(ht_parse_initiator(msg, len, authcid, sizeof(authcid), hash), 0);
	assert_int_equal(ht_parse_initiator(msg, len - 1, authcid, sizeof(authcid), hash), -EINVAL);
	assert_int_equal(ht_parse_initiator(msg, 5, authcid, sizeof(authcid), hash), -EINVAL);
	/* 33 bytes after the NUL */
	msg[len] = 0x5a;
	assert_int_equal(ht_parse_initiator(msg, len + 1, authcid, sizeof(authcid), hash), -EINVAL);
	/* SHA-512-sized hash on a SHA-256 mechanism */
	memcpy(msg + 5, h, sizeof(h));
	assert_int_equal(ht_parse_initiator(msg, 5 + 64, authcid, sizeof(authcid), hash), -EINVAL);
}

/* The draft asks servers to accept authcids of 255 octets and more; the
 * caller's buffer is the only limit (a name of authcid_max - 1 bytes fits,
 * authcid_max does not). */
static void test_parse_long_authcid(void **state)
{
	(void)state;
	enum { NAME = 300 };
	uint8_t msg[NAME + 1 + HT_HASH_LEN], hash[HT_HASH_LEN], h[HT_HASH_LEN];
	char authcid[NAME + 1], small[NAME];
	size_t len;

	memset(msg, 'a', NAME);
	msg[NAME] = 0;
	randombytes_buf(h, sizeof(h));
	memcpy(msg + NAME + 1, h, HT_HASH_LEN);
	len = sizeof(msg);

	assert_int_equal(ht_parse_initiator(msg, len, authcid, sizeof(authcid), hash), 0);
	assert_int_equal(strlen(authcid), NAME);
	assert_memory_equal(hash, h, HT_HASH_LEN);

	/* 255 and 256 octets */
	for (size_t n = 255; n <= 256; n++) {
		uint8_t m[256 + 1 + HT_HASH_LEN];
		memset(m, 'b', n);
		m[n] = 0;
		memcpy(m + n + 1, h, HT_HASH_LEN);
		assert_int_equal(ht_parse_initiator(m, n + 1 + HT_HASH_LEN, authcid, sizeof(authcid),
						    hash), 0);
		assert_int_equal(strlen(authcid), n);
	}

	/* too long for the buffer: refused, buffer left empty and not overrun */
	memset(small, 0x7f, sizeof(small));
	assert_int_equal(ht_parse_initiator(msg, len, small, sizeof(small), hash), -EINVAL);
	assert_int_equal(small[0], '\0');
	assert_int_equal(ht_parse_initiator(msg, len, small, 0, hash), -EINVAL);
	assert_int_equal(small[0], '\0');
}

/* ht_verify: the right hash passes, a one-bit flip at every bit of every
 * byte position fails, and so do all-zero and wrong-token hashes. */
static void test_verify_bit_flips(void **state)
{
	(void)state;
	uint8_t cb[32], h[HT_HASH_LEN], bad[HT_HASH_LEN];

	randombytes_buf(cb, sizeof(cb));
	ht_initiator_hash(vec_token, cb, sizeof(cb), h);
	assert_int_equal(ht_verify(vec_token, cb, sizeof(cb), h), 1);
	for (unsigned i = 0; i < HT_HASH_LEN; i++) {
		for (unsigned bit = 0; bit < 8; bit++) {
			memcpy(bad, h, sizeof(h));
			bad[i] ^= (uint8_t)(1u << bit);
			assert_int_equal(ht_verify(vec_token, cb, sizeof(cb), bad), 0);
		}
	}
	memset(bad, 0, sizeof(bad));
	assert_int_equal(ht_verify(vec_token, cb, sizeof(cb), bad), 0);
	/* a flipped bit in the channel binding fails too */
	cb[31] ^= 1;
	assert_int_equal(ht_verify(vec_token, cb, sizeof(cb), h), 0);
	assert_int_equal(ht_verify("", NULL, 0, h), 0);
}

static void test_mech_names(void **state)
{
	(void)state;
	static const char *const want[HT_CB_COUNT] = {
		[HT_NONE] = "HT-SHA-256-NONE", [HT_ENDP] = "HT-SHA-256-ENDP",
		[HT_EXPR] = "HT-SHA-256-EXPR", [HT_UNIQ] = "HT-SHA-256-UNIQ",
	};
	enum ht_cb cb;

	for (int i = 0; i < HT_CB_COUNT; i++) {
		const char *name = ht_mech_name((enum ht_cb)i);
		assert_non_null(name);
		assert_string_equal(name, want[i]);
		cb = HT_CB_COUNT;
		assert_int_equal(ht_mech_parse(name, &cb), 0);
		assert_int_equal(cb, i);
	}
	assert_null(ht_mech_name(HT_CB_COUNT));

	static const char *const refused[] = {
		"HT-SHA-512-NONE", "HT-SHA-256-FOO", "SCRAM-SHA-1", "", "HT-SHA-256-",
		"HT-SHA-256-NONE ", "HT-SHA-256-NONEX", "ht-sha-256-none", "HT-SHA-256-EXP",
		"HT-SHA3-512-EXPR", "PLAIN",
	};
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		cb = HT_ENDP;
		assert_int_equal(ht_mech_parse(refused[i], &cb), -1);
		assert_int_equal(cb, HT_ENDP); /* untouched on failure */
	}
	assert_int_equal(ht_mech_parse(NULL, &cb), -1);
}

int main(void)
{
	if (sodium_init() < 0)
		return 1;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vector_none),
		cmocka_unit_test(test_vector_expr),
		cmocka_unit_test(test_endp_uniq_vs_reference),
		cmocka_unit_test(test_parse_no_nul),
		cmocka_unit_test(test_parse_empty_authcid),
		cmocka_unit_test(test_parse_hash_with_nuls),
		cmocka_unit_test(test_parse_wrong_hash_len),
		cmocka_unit_test(test_parse_long_authcid),
		cmocka_unit_test(test_verify_bit_flips),
		cmocka_unit_test(test_mech_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
