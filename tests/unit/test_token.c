/* tests/unit/test_token.c - token generation, sealing at rest, secret_eq, the key file. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>

#include "tether/token.h"

static int is_b64url(char ch)
{
	return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
	       ch == '-' || ch == '_';
}

static int cmp_tok(const void *a, const void *b)
{
	return strcmp(a, b);
}

/* 43 base64url characters, NUL-terminated, no two alike in 1000 draws. */
static void test_token_new(void **state)
{
	(void)state;
	enum { N = 1000 };
	static char toks[N][TOKEN_LEN + 1];

	for (int i = 0; i < N; i++) {
		memset(toks[i], '!', sizeof(toks[i]));
		token_new(toks[i]);
		assert_int_equal(strlen(toks[i]), TOKEN_LEN);
		for (int j = 0; j < TOKEN_LEN; j++)
			assert_true(is_b64url(toks[i][j]));
	}
	qsort(toks, N, sizeof(toks[0]), cmp_tok);
	for (int i = 1; i < N; i++)
		assert_string_not_equal(toks[i - 1], toks[i]);
	sodium_memzero(toks, sizeof(toks));
}

static void test_seal_open_roundtrip(void **state)
{
	(void)state;
	uint8_t key[TOKEN_KEY_LEN], sealed[TOKEN_SEALED_LEN];
	char tok[TOKEN_LEN + 1], out[TOKEN_LEN + 1];

	randombytes_buf(key, sizeof(key));
	token_new(tok);
	assert_int_equal(token_seal(key, tok, sealed), 0);
	/* the plaintext does not appear in the sealed form */
	assert_null(memmem(sealed, sizeof(sealed), tok, 8));
	memset(out, 'x', sizeof(out));
	assert_int_equal(token_open(key, sealed, out), 0);
	assert_string_equal(out, tok);
	sodium_memzero(out, sizeof(out));
}

static void test_seal_refuses_bad_length(void **state)
{
	(void)state;
	uint8_t key[TOKEN_KEY_LEN] = { 0 }, sealed[TOKEN_SEALED_LEN];
	char tok[TOKEN_LEN + 2];

	memset(tok, 'a', sizeof(tok));
	tok[TOKEN_LEN + 1] = '\0'; /* 44 chars */
	assert_int_equal(token_seal(key, tok, sealed), -EINVAL);
	tok[TOKEN_LEN - 1] = '\0'; /* 42 chars */
	assert_int_equal(token_seal(key, tok, sealed), -EINVAL);
	assert_int_equal(token_seal(key, "", sealed), -EINVAL);
	assert_int_equal(token_seal(key, NULL, sealed), -EINVAL);
}

static void test_open_wrong_key(void **state)
{
	(void)state;
	uint8_t key[TOKEN_KEY_LEN], other[TOKEN_KEY_LEN], sealed[TOKEN_SEALED_LEN];
	char tok[TOKEN_LEN + 1], out[TOKEN_LEN + 1];

	randombytes_buf(key, sizeof(key));
	memcpy(other, key, sizeof(key));
	other[TOKEN_KEY_LEN - 1] ^= 0x80;
	token_new(tok);
	assert_int_equal(token_seal(key, tok, sealed), 0);
	memset(out, 'x', sizeof(out));
	assert_int_equal(token_open(other, sealed, out), -EBADMSG);
	/* nothing of the token is handed out on failure */
	assert_int_equal(out[0], '\0');
	randombytes_buf(other, sizeof(other));
	assert_int_equal(token_open(other, sealed, out), -EBADMSG);
}

/* Every single-bit change of nonce, ciphertext or MAC is caught. */
static void test_open_bit_flips(void **state)
{
	(void)state;
	uint8_t key[TOKEN_KEY_LEN], sealed[TOKEN_SEALED_LEN], bad[TOKEN_SEALED_LEN];
	char tok[TOKEN_LEN + 1], out[TOKEN_LEN + 1];

	randombytes_buf(key, sizeof(key));
	token_new(tok);
	assert_int_equal(token_seal(key, tok, sealed), 0);
	for (size_t i = 0; i < TOKEN_SEALED_LEN; i++) {
		for (unsigned bit = 0; bit < 8; bit++) {
			memcpy(bad, sealed, sizeof(sealed));
			bad[i] ^= (uint8_t)(1u << bit);
			assert_int_equal(token_open(key, bad, out), -EBADMSG);
		}
	}
	assert_int_equal(token_open(key, sealed, out), 0);
	assert_string_equal(out, tok);
}

static void test_seal_random_nonce(void **state)
{
	(void)state;
	uint8_t key[TOKEN_KEY_LEN], s1[TOKEN_SEALED_LEN], s2[TOKEN_SEALED_LEN];
	char tok[TOKEN_LEN + 1], o1[TOKEN_LEN + 1], o2[TOKEN_LEN + 1];

	randombytes_buf(key, sizeof(key));
	token_new(tok);
	assert_int_equal(token_seal(key, tok, s1), 0);
	assert_int_equal(token_seal(key, tok, s2), 0);
	assert_memory_not_equal(s1, s2, 24);                 /* nonces */
	assert_memory_not_equal(s1 + 24, s2 + 24, TOKEN_LEN + 16); /* boxes */
	assert_int_equal(token_open(key, s1, o1), 0);
	assert_int_equal(token_open(key, s2, o2), 0);
	assert_string_equal(o1, tok);
	assert_string_equal(o2, tok);
}

static void test_secret_eq(void **state)
{
	(void)state;
	uint8_t a[64], b[64];

	randombytes_buf(a, sizeof(a));
	memcpy(b, a, sizeof(a));
	assert_int_equal(secret_eq(a, b, sizeof(a)), 1);
	assert_int_equal(secret_eq(a, a, sizeof(a)), 1);
	for (size_t i = 0; i < sizeof(a); i++) {
		b[i] ^= 0x01;
		assert_int_equal(secret_eq(a, b, sizeof(a)), 0);
		assert_int_equal(secret_eq(a, b, i), 1); /* the differing byte is past len */
		b[i] ^= 0x01;
	}
	b[7] ^= 0x80;
	assert_int_equal(secret_eq(a, b, sizeof(a)), 0);
	/* length 0: two empty secrets are equal */
	assert_int_equal(secret_eq(a, b, 0), 1);
	assert_int_equal(secret_eq("x", "y", 0), 1);
}

/* Timing sanity check for secret_eq (not a proof: it would catch a plain
 * memcmp, whose time on 4 KiB differs by ~100x between a mismatch at byte 0
 * and one at byte 4095). Samples of batched calls alternate between the two
 * cases so drift hits both; medians shrug off preemption on a busy 2-core
 * box. A failed round is retried, up to 3 rounds. */
enum { TBUF = 4096, SAMPLES = 301, BATCH = 32 };

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static volatile int sink;

static uint64_t time_batch(const uint8_t *a, const uint8_t *b)
{
	uint64_t t0 = now_ns();
	int acc = 0;
	for (int i = 0; i < BATCH; i++)
		acc += secret_eq(a, b, TBUF);
	uint64_t t1 = now_ns();
	sink += acc;
	return t1 - t0;
}

static int cmp_u64(const void *x, const void *y)
{
	uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
	return (a > b) - (a < b);
}

static double timing_ratio(const uint8_t *a, const uint8_t *first, const uint8_t *last)
{
	static uint64_t tf[SAMPLES], tl[SAMPLES];

	for (int i = 0; i < 20; i++) /* warm caches and the CPU clock */
		(void)time_batch(a, (i & 1) ? first : last);
	for (int i = 0; i < SAMPLES; i++) {
		if (i & 1) {
			tf[i] = time_batch(a, first);
			tl[i] = time_batch(a, last);
		} else {
			tl[i] = time_batch(a, last);
			tf[i] = time_batch(a, first);
		}
	}
	qsort(tf, SAMPLES, sizeof(tf[0]), cmp_u64);
	qsort(tl, SAMPLES, sizeof(tl[0]), cmp_u64);
	uint64_t mf = tf[SAMPLES / 2], ml = tl[SAMPLES / 2];
	if (ml == 0)
		ml = 1;
	return (double)mf / (double)ml;
}

static void test_secret_eq_constant_time(void **state)
{
	(void)state;
	static uint8_t a[TBUF], first[TBUF], last[TBUF];
	double ratio = 0;

	randombytes_buf(a, sizeof(a));
	memcpy(first, a, sizeof(a));
	memcpy(last, a, sizeof(a));
	first[0] ^= 0x01;
	last[TBUF - 1] ^= 0x01;

	for (int round = 1; round <= 3; round++) {
		ratio = timing_ratio(a, first, last);
		if (ratio >= 0.5 && ratio <= 2.0)
			return;
		print_message("secret_eq timing round %d: first/last median ratio %.3f, retrying\n",
			      round, ratio);
	}
	fail_msg("secret_eq: first-byte vs last-byte mismatch time ratio %.3f outside [0.5, 2.0]",
		 ratio);
}

/* A fresh temporary directory per key-file test. */
static int setup_dir(void **state)
{
	char *dir = strdup("/tmp/test_token.XXXXXX");
	if (!dir || !mkdtemp(dir)) {
		free(dir);
		return -1;
	}
	*state = dir;
	return 0;
}

static int teardown_dir(void **state)
{
	char *dir = *state, p[512];
	DIR *d = opendir(dir);
	struct dirent *de;

	while (d && (de = readdir(d))) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
		if (unlink(p) == -1)
			rmdir(p);
	}
	if (d)
		closedir(d);
	rmdir(dir);
	free(dir);
	return 0;
}

static int count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;

	assert_non_null(d);
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

static void write_file(const char *path, const void *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	close(fd);
}

/* Missing → created 0600 with 32 random bytes, no temporary left behind;
 * loading again gives the same key; the file holds exactly that key. */
static void test_key_create_reload(void **state)
{
	const char *dir = *state;
	char path[512], err[512];
	uint8_t k1[TOKEN_KEY_LEN], k2[TOKEN_KEY_LEN], zero[TOKEN_KEY_LEN] = { 0 }, disk[64];
	struct stat st;
	mode_t old = umask(0); /* the mode must not depend on the umask */

	snprintf(path, sizeof(path), "%s/token.key", dir);
	int rc = token_key_load(path, k1, err, sizeof(err));
	umask(old);
	assert_int_equal(rc, 0);
	assert_memory_not_equal(k1, zero, sizeof(zero));
	assert_int_equal(stat(path, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(st.st_size, TOKEN_KEY_LEN);
	assert_int_equal(count_entries(dir), 1);

	int fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(read(fd, disk, sizeof(disk)), TOKEN_KEY_LEN);
	close(fd);
	assert_memory_equal(disk, k1, TOKEN_KEY_LEN);

	assert_int_equal(token_key_load(path, k2, err, sizeof(err)), 0);
	assert_memory_equal(k1, k2, TOKEN_KEY_LEN);

	/* a token sealed under the first load opens under the second */
	uint8_t sealed[TOKEN_SEALED_LEN];
	char tok[TOKEN_LEN + 1], out[TOKEN_LEN + 1];
	token_new(tok);
	assert_int_equal(token_seal(k1, tok, sealed), 0);
	assert_int_equal(token_open(k2, sealed, out), 0);
	assert_string_equal(out, tok);

	/* a second key file gets a different key */
	snprintf(path, sizeof(path), "%s/other.key", dir);
	assert_int_equal(token_key_load(path, k2, NULL, 0), 0);
	assert_memory_not_equal(k1, k2, TOKEN_KEY_LEN);
}

/* Wrong sizes are errors naming the path, and the file is left alone. */
static void test_key_wrong_size(void **state)
{
	const char *dir = *state;
	char path[512], err[512];
	uint8_t key[TOKEN_KEY_LEN], data[64];
	struct stat st;

	randombytes_buf(data, sizeof(data));
	snprintf(path, sizeof(path), "%s/short.key", dir);
	write_file(path, data, 31);
	err[0] = '\0';
	assert_int_equal(token_key_load(path, key, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, path));
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, 31); /* not replaced */

	snprintf(path, sizeof(path), "%s/long.key", dir);
	write_file(path, data, 33);
	err[0] = '\0';
	assert_int_equal(token_key_load(path, key, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, path));

	snprintf(path, sizeof(path), "%s/empty.key", dir);
	write_file(path, data, 0);
	assert_int_equal(token_key_load(path, key, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, path));

	/* a directory is not a key file */
	snprintf(path, sizeof(path), "%s/adir", dir);
	assert_int_equal(mkdir(path, 0700), 0);
	assert_true(token_key_load(path, key, err, sizeof(err)) < 0);
	assert_non_null(strstr(err, path));

	/* a missing directory: cannot create, error names the path */
	snprintf(path, sizeof(path), "%s/nodir/token.key", dir);
	assert_int_equal(token_key_load(path, key, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, path));

	/* a tiny error buffer is truncated, not overrun */
	char tiny[8];
	memset(tiny, 'z', sizeof(tiny));
	snprintf(path, sizeof(path), "%s/short.key", dir);
	assert_int_equal(token_key_load(path, key, tiny, sizeof(tiny)), -EINVAL);
	assert_int_equal(strlen(tiny), sizeof(tiny) - 1);
}

/* An existing 32-byte file is used as is, whatever its contents. */
static void test_key_existing(void **state)
{
	const char *dir = *state;
	char path[512], err[512];
	uint8_t key[TOKEN_KEY_LEN], data[TOKEN_KEY_LEN];

	for (unsigned i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 3);
	snprintf(path, sizeof(path), "%s/given.key", dir);
	write_file(path, data, sizeof(data));
	assert_int_equal(token_key_load(path, key, err, sizeof(err)), 0);
	assert_memory_equal(key, data, sizeof(data));
}

int main(void)
{
	if (sodium_init() < 0)
		return 1;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_token_new),
		cmocka_unit_test(test_seal_open_roundtrip),
		cmocka_unit_test(test_seal_refuses_bad_length),
		cmocka_unit_test(test_open_wrong_key),
		cmocka_unit_test(test_open_bit_flips),
		cmocka_unit_test(test_seal_random_nonce),
		cmocka_unit_test(test_secret_eq),
		cmocka_unit_test(test_secret_eq_constant_time),
		cmocka_unit_test_setup_teardown(test_key_create_reload, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_key_wrong_size, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_key_existing, setup_dir, teardown_dir),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
