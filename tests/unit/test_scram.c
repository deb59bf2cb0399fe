/* tests/unit/test_scram.c - SCRAM key derivation against RFC 5802 / RFC 7677. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "tether/scram.h"

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

/* RFC 5802 §5: user "user", password "pencil", 12-byte salt, i=4096.
 * Intermediates from sasl.md §6.1. */
static void test_rfc5802_keys(void **state)
{
	(void)state;
	struct user_creds c;
	uint8_t salt[16], sk[20], svk[20];
	size_t n = unb64("QSXCR+Q6sek8bf92", salt, sizeof(salt));
	assert_int_equal(n, 12);
	assert_int_equal(scram_creds_derive_salt("pencil", salt, n, 4096, &c), 0);
	unhex("e9d94660c39d65c38fbad91c358f14da0eef2bd6", sk, sizeof(sk));
	unhex("0fe09258b3ac852ba502cc62ba903eaacdbf7d31", svk, sizeof(svk));
	assert_memory_equal(c.stored_key_sha1, sk, 20);
	assert_memory_equal(c.server_key_sha1, svk, 20);
	assert_int_equal(c.salt_len, 12);
	assert_int_equal(scram_salt_len(&c), 12);
	assert_memory_equal(c.salt, salt, 12);
	assert_int_equal(c.iterations, 4096);
}

/* RFC 7677 §3, intermediates from sasl.md §6.2. */
static void test_rfc7677_keys(void **state)
{
	(void)state;
	struct user_creds c;
	uint8_t salt[16], sk[32], svk[32];
	size_t n = unb64("W22ZaJ0SNY7soEsUEjb6gQ==", salt, sizeof(salt));
	assert_int_equal(n, 16);
	assert_int_equal(scram_creds_derive_salt("pencil", salt, n, 4096, &c), 0);
	unhex("586e5df283e6dceb5c3e791d8b8528ec191e664045ce971792e2e6b5bb13e2a6", sk, sizeof(sk));
	unhex("c1f3cbc1c13a9d35a14c0990eed97629ea225863e566a4314ab99f3f00e5d9d5", svk, sizeof(svk));
	assert_memory_equal(c.stored_key_sha256, sk, 32);
	assert_memory_equal(c.server_key_sha256, svk, 32);
}

static void test_random_salt(void **state)
{
	(void)state;
	struct user_creds a, b;
	assert_int_equal(scram_creds_derive("pencil", 1000, &a), 0);
	assert_int_equal(scram_creds_derive("pencil", 1000, &b), 0);
	assert_int_equal(a.iterations, 1000);
	assert_int_equal(a.salt_len, SCRAM_SALT_LEN);
	assert_memory_not_equal(a.salt, b.salt, SCRAM_SALT_LEN);
	assert_memory_not_equal(a.stored_key_sha256, b.stored_key_sha256, 32);
	/* same salt → same keys */
	struct user_creds c;
	assert_int_equal(scram_creds_derive_salt("pencil", a.salt, SCRAM_SALT_LEN, 1000, &c), 0);
	assert_memory_equal(&a, &c, sizeof(a));
}

/* Derives with a fixed salt so two passwords can be compared. */
static void derive_fixed(const char *pw, struct user_creds *c, int want)
{
	static const uint8_t salt[SCRAM_SALT_LEN] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 };
	assert_int_equal(scram_creds_derive_salt(pw, salt, sizeof(salt), 2, c), want);
}

static void test_saslprep(void **state)
{
	(void)state;
	struct user_creds a, b;
	derive_fixed("IX", &a, 0);
	derive_fixed("I\xC2\xADX", &b, 0);          /* soft hyphen maps to nothing */
	assert_memory_equal(&a, &b, sizeof(a));
	derive_fixed("\xE2\x85\xA8", &b, 0);        /* U+2168 ROMAN NUMERAL NINE → "IX" (NFKC) */
	assert_memory_equal(&a, &b, sizeof(a));
	derive_fixed("a b", &a, 0);
	derive_fixed("a\xC2\xA0" "b", &b, 0);        /* NO-BREAK SPACE → space */
	assert_memory_equal(&a, &b, sizeof(a));
	derive_fixed("Pencil", &b, 0);              /* case is kept */
	derive_fixed("pencil", &a, 0);
	assert_memory_not_equal(a.stored_key_sha256, b.stored_key_sha256, 32);

	derive_fixed("\x07", &a, -EINVAL);          /* control: prohibited */
	derive_fixed("", &a, -EINVAL);              /* empty */
	derive_fixed("\xC2\xAD", &a, -EINVAL);      /* empty after mapping */
	derive_fixed("\xD8\xA7" "a", &a, -EINVAL);  /* bidi: RandALCat mixed with L */
	derive_fixed("\xFF", &a, -EINVAL);          /* not UTF-8 */
}

static void test_bad_args(void **state)
{
	(void)state;
	struct user_creds c;
	uint8_t salt[SCRAM_SALT_LEN + 1] = { 0 };
	assert_int_equal(scram_creds_derive_salt("pw", salt, 0, 10, &c), -EINVAL);
	assert_int_equal(scram_creds_derive_salt("pw", salt, SCRAM_SALT_LEN + 1, 10, &c), -EINVAL);
	assert_int_equal(scram_creds_derive_salt("pw", salt, SCRAM_SALT_LEN, 0, &c), -EINVAL);
	assert_int_equal(scram_creds_derive("pw", 0, &c), -EINVAL);
	/* on failure nothing secret is left in <out> */
	uint8_t zero[sizeof(c)];
	memset(zero, 0, sizeof(zero));
	assert_memory_equal(&c, zero, sizeof(c));
}

static void test_wipe(void **state)
{
	(void)state;
	struct user_creds c;
	uint8_t zero[sizeof(c)];
	memset(zero, 0, sizeof(zero));
	assert_int_equal(scram_creds_derive("pencil", 10, &c), 0);
	scram_creds_wipe(&c);
	assert_memory_equal(&c, zero, sizeof(c));
	c.salt_len = 0;
	assert_int_equal(scram_salt_len(&c), SCRAM_SALT_LEN);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rfc5802_keys),
		cmocka_unit_test(test_rfc7677_keys),
		cmocka_unit_test(test_random_salt),
		cmocka_unit_test(test_saslprep),
		cmocka_unit_test(test_bad_args),
		cmocka_unit_test(test_wipe),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
