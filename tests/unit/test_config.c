/* tests/unit/test_config.c - INI loading: defaults, every key, errors naming
 * FILE:LINE and the key, cross-key validation, command-line overrides. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <unistd.h>

#include "tether/config.h"

/* A temporary INI file holding <text>; its path is written to <path>. */
static void write_tmp(char path[64], const char *text)
{
	snprintf(path, 64, "/tmp/tether-test-config-XXXXXX");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	FILE *f = fdopen(fd, "w");
	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
}

/* Loads <text>; returns config_load's result, the message in <err>. */
static int load_text(struct config *cfg, const char *text, char path[64], char *err, size_t errlen)
{
	write_tmp(path, text);
	config_defaults(cfg);
	err[0] = 0;
	int rc = config_load(cfg, path, err, errlen);
	unlink(path);
	return rc;
}

static void check_defaults(const struct config *c)
{
	assert_string_equal(c->domain, "localhost");
	assert_int_equal(c->workers, 0);
	assert_string_equal(c->log_level, "info");
	assert_string_equal(c->listen, "127.0.0.1:5222");
	assert_string_equal(c->tls_listen, "127.0.0.1:5223");
	assert_string_equal(c->cert, "");
	assert_string_equal(c->key, "");
	assert_int_equal(c->dev_cert, 0);
	assert_string_equal(c->store_backend, "memory");
	assert_string_equal(c->store_path, "./var");
	assert_int_equal(c->max_stanza_size, 262144);
	assert_int_equal(c->preauth_max_stanza_size, 16384);
	assert_int_equal(c->max_depth, 64);
	assert_int_equal(c->preauth_timeout, 30);
	assert_int_equal(c->max_auth_failures, 3);
	assert_int_equal(c->max_send_queue, 4194304);
	assert_int_equal(c->idle_timeout, 0);
	assert_int_equal(c->lost_input_timeout, 10);
	assert_int_equal(c->max_fast_per_account, 16);
	assert_int_equal(c->max_header_size, 4096);
}

static void test_defaults(void **state)
{
	(void)state;
	struct config c;
	memset(&c, 0xa5, sizeof(c));
	config_defaults(&c);
	check_defaults(&c);
}

static void test_empty_file(void **state)
{
	(void)state;
	struct config c;
	char path[64], err[512];
	assert_int_equal(load_text(&c, "", path, err, sizeof(err)), 0);
	check_defaults(&c);
	assert_string_equal(c.path, path);
	/* Comments and blank lines only. */
	assert_int_equal(load_text(&c, "; nothing\n\n# also nothing\n[server]\n", path, err,
				   sizeof(err)), 0);
	check_defaults(&c);
}

static void test_every_key(void **state)
{
	(void)state;
	struct config c;
	char path[64], err[512];
	const char *ini =
		"; every key\n"
		"[server]\n"
		"domain = example.org\n"
		"workers = 8\n"
		"log_level = debug\n"
		"\n"
		"[c2s]\n"
		"listen = 0.0.0.0:15222   ; inline comment\n"
		"tls_listen =\n"
		"\n"
		"[tls]\n"
		"cert = /etc/tether/cert.pem\n"
		"key = /etc/tether/key.pem\n"
		"dev_cert = yes\n"
		"\n"
		"[store]\n"
		"backend = memory\n"
		"path = /var/lib/tether\n"
		"\n"
		"[limits]\n"
		"max_stanza_size = 64k\n"
		"max_depth = 32\n"
		"preauth_timeout = 10\n"
		"max_auth_failures = 5\n"
		"max_send_queue = 2m\n"
		"idle_timeout = 600\n"
		"lost_input_timeout = 3\n";
	int rc = load_text(&c, ini, path, err, sizeof(err));
	if (rc)
		fail_msg("load failed: %s", err);
	assert_string_equal(c.path, path);
	assert_string_equal(c.domain, "example.org");
	assert_int_equal(c.workers, 8);
	assert_string_equal(c.log_level, "debug");
	assert_string_equal(c.listen, "0.0.0.0:15222");
	assert_string_equal(c.tls_listen, "");
	assert_string_equal(c.cert, "/etc/tether/cert.pem");
	assert_string_equal(c.key, "/etc/tether/key.pem");
	assert_int_equal(c.dev_cert, 1);
	assert_string_equal(c.store_backend, "memory");
	assert_string_equal(c.store_path, "/var/lib/tether");
	assert_int_equal(c.max_stanza_size, 65536);
	assert_int_equal(c.max_depth, 32);
	assert_int_equal(c.preauth_timeout, 10);
	assert_int_equal(c.max_auth_failures, 5);
	assert_int_equal(c.max_send_queue, 2 * 1024 * 1024);
	assert_int_equal(c.idle_timeout, 600);
	assert_int_equal(c.lost_input_timeout, 3);
}

static void test_numbers_and_bools(void **state)
{
	(void)state;
	struct config c;
	char path[64], err[512];
	static const struct { const char *ini; size_t stanza; int dev; } ok[] = {
		{ "[limits]\nmax_stanza_size = 1024\n[tls]\ndev_cert = true\n", 1024, 1 },
		{ "[limits]\nmax_stanza_size = 1K\n[tls]\ndev_cert = TRUE\n", 1024, 1 },
		{ "[limits]\nmax_stanza_size = 2kib\n[tls]\ndev_cert = 1\n", 2048, 1 },
		{ "[limits]\nmax_stanza_size = 1M\n[tls]\ndev_cert = no\n", 1048576, 0 },
		{ "[limits]\nmax_stanza_size = 64MiB\n[tls]\ndev_cert = False\n", 64u << 20, 0 },
		{ "[limits]\nmax_stanza_size = 262144\n[tls]\ndev_cert = 0\n", 262144, 0 },
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		if (load_text(&c, ok[i].ini, path, err, sizeof(err)))
			fail_msg("case %zu: %s", i, err);
		assert_int_equal(c.max_stanza_size, ok[i].stanza);
		assert_int_equal(c.dev_cert, ok[i].dev);
	}
	/* Range edges of an unsigned key. */
	assert_int_equal(load_text(&c, "[server]\nworkers = 256\n", path, err, sizeof(err)), 0);
	assert_int_equal(c.workers, 256);
	assert_int_equal(load_text(&c, "[limits]\nidle_timeout = 604800\n", path, err, sizeof(err)), 0);
	assert_int_equal(c.idle_timeout, 604800);
}

/* Expects config_load(<ini>) to fail with a message containing
 * "<path>:<line>:" and every one of the NULL-terminated <needles>. */
static void expect_load_error(const char *ini, int line, ...)
{
	struct config c;
	char path[64], err[512], where[96];
	assert_int_equal(load_text(&c, ini, path, err, sizeof(err)), -1);
	snprintf(where, sizeof(where), "%s:%d: ", path, line);
	if (strncmp(err, where, strlen(where)))
		fail_msg("'%s' does not start with '%s'", err, where);
	va_list ap;
	va_start(ap, line);
	for (const char *n; (n = va_arg(ap, const char *));)
		if (!strstr(err, n))
			fail_msg("'%s' does not mention '%s'", err, n);
	va_end(ap);
}

static void test_errors(void **state)
{
	(void)state;
	/* Bad numbers. */
	expect_load_error("[server]\ndomain = x\n\n[limits]\nmax_depth = abc\n", 5,
			  "[limits] max_depth", "number", NULL);
	expect_load_error("[limits]\nmax_depth = -4\n", 2, "max_depth", "number", NULL);
	expect_load_error("[limits]\nmax_depth = 12a\n", 2, "max_depth", "number", NULL);
	expect_load_error("[limits]\nmax_depth =\n", 2, "max_depth", NULL);
	expect_load_error("[limits]\nmax_depth = 1k\n", 2, "max_depth", NULL); /* no suffix on counts */
	expect_load_error("[limits]\nmax_stanza_size = 1g\n", 2, "max_stanza_size", NULL);
	expect_load_error("[limits]\nmax_stanza_size = 0x100\n", 2, "max_stanza_size", NULL);
	expect_load_error("[limits]\nmax_send_queue = 99999999999999999999\n", 2,
			  "max_send_queue", NULL);
	expect_load_error("[limits]\nmax_send_queue = 18014398509481984k\n", 2,
			  "max_send_queue", NULL); /* overflows 64 bits once multiplied */
	/* Out of range. */
	expect_load_error("; c\n[limits]\nmax_depth = 2\n", 3, "[limits] max_depth", "out of range", NULL);
	expect_load_error("[limits]\nmax_depth = 1025\n", 2, "max_depth", "out of range", NULL);
	expect_load_error("[limits]\nmax_stanza_size = 1023\n", 2, "max_stanza_size", "out of range", NULL);
	expect_load_error("[limits]\nmax_stanza_size = 65m\n", 2, "max_stanza_size", "out of range", NULL);
	expect_load_error("[server]\nworkers = 257\n", 2, "[server] workers", "out of range", NULL);
	expect_load_error("[limits]\nmax_auth_failures = 0\n", 2, "max_auth_failures", "out of range", NULL);
	expect_load_error("[tokens]\nmax_fast_per_account = 0\n", 2, "[tokens] max_fast_per_account",
			  "out of range", NULL);
	expect_load_error("[tokens]\n\nmax_fast_per_account = 16x\n", 3, "max_fast_per_account",
			  "expected a non-negative number", NULL);
	expect_load_error("[limits]\npreauth_timeout = 4294967297\n", 2, "preauth_timeout", NULL);
	/* Unknown key, unknown section, key before any section. */
	expect_load_error("[server]\ndomain = a\ndomian = b\n", 3, "[server] domian", "unknown key", NULL);
	expect_load_error("[server]\ndomain = a\n[sever]\ndomain = b\n", 4, "[sever] domain", "unknown", NULL);
	expect_load_error("workers = 4\n", 1, "workers", "unknown", NULL);
	expect_load_error("[limits]\ndomain = a\n", 2, "[limits] domain", "unknown", NULL);
	/* Bad bool. */
	expect_load_error("[tls]\n\n\ndev_cert = maybe\n", 4, "[tls] dev_cert", "true or false", NULL);
	expect_load_error("[tls]\ndev_cert = 2\n", 2, "dev_cert", NULL);
	/* Too long for its field (log_level holds 15 characters). */
	expect_load_error("[server]\nlog_level = abcdefghijklmnop\n", 2, "[server] log_level", "too long", NULL);
	/* Syntax error. */
	expect_load_error("[server]\ndomain = a\nthis is not ini\n", 3, NULL);
	expect_load_error("[server\n", 1, NULL);
}

static void test_log_level_fits(void **state)
{
	(void)state;
	struct config c;
	char path[64], err[512];
	/* 15 characters: the longest that fits with its NUL. */
	assert_int_equal(load_text(&c, "[server]\nlog_level = abcdefghijklmno\n", path, err,
				   sizeof(err)), 0);
	assert_string_equal(c.log_level, "abcdefghijklmno");
}

/* Debian's inih reads lines of at most 199 bytes: the longest key line
 * that fits loads whole. */
static void test_long_string_fits(void **state)
{
	(void)state;
	struct config c;
	char path[64], err[512];
	char ini[1024], val[200];
	memset(val, 'd', 180);
	val[180] = 0;
	snprintf(ini, sizeof(ini), "[server]\ndomain = %s\nworkers = 2\n", val);
	if (load_text(&c, ini, path, err, sizeof(err)))
		fail_msg("180-character domain rejected: %s", err);
	assert_string_equal(c.domain, val);
	assert_int_equal(c.workers, 2);
}

/* A longer line is refused by name instead of being split and misread
 * (a split line once loaded its tail as the value); a value too long for
 * its field, given on the command line, says so. */
static void test_long_string_too_long(void **state)
{
	(void)state;
	struct config c;
	char ini[1024], val[CONFIG_STR_MAX + 1], set[CONFIG_STR_MAX + 32], err[512];
	memset(val, 'd', CONFIG_STR_MAX);
	val[CONFIG_STR_MAX] = 0;
	snprintf(ini, sizeof(ini), "[server]\ndomain = %s\nworkers = 2\n", val);
	expect_load_error(ini, 2, "line too long", NULL, NULL);
	snprintf(ini, sizeof(ini), "[server]\ndomain = %.190s evil.example\n", val);
	expect_load_error(ini, 2, "line too long", NULL, NULL);
	config_defaults(&c);
	snprintf(set, sizeof(set), "server.domain=%s", val);
	assert_int_equal(config_set(&c, set, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "too long"));
}

static void test_validate(void **state)
{
	(void)state;
	struct config c;
	char path[64], err[512];
	assert_int_equal(load_text(&c, "[server]\ndomain =\n", path, err, sizeof(err)), -1);
	assert_non_null(strstr(err, path));
	assert_non_null(strstr(err, "domain"));
	assert_int_equal(load_text(&c, "[store]\nbackend = sql\n", path, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "backend"));
	assert_non_null(strstr(err, "sql"));
	/* redis needs [cluster] node; the error names the line of the backend. */
	assert_int_equal(load_text(&c, "[store]\nbackend = redis\n", path, err, sizeof(err)), -1);
	assert_non_null(strstr(err, ":2: [cluster] node:"));
	assert_int_equal(load_text(&c, "[store]\nbackend = redis\n[cluster]\nnode = n-1\n", path, err,
				   sizeof(err)), 0);
	assert_string_equal(c.store_redis, "127.0.0.1:6379");
	assert_string_equal(c.cluster_node, "n-1");
	assert_int_equal(load_text(&c, "[store]\nbackend = redis\nredis = unix:/run/r.sock\n"
				   "[cluster]\nnode = a\n", path, err, sizeof(err)), 0);
	assert_int_equal(load_text(&c, "[store]\nbackend = redis\nredis = 127.0.0.1\n"
				   "[cluster]\nnode = a\n", path, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "[store] redis"));
	assert_int_equal(load_text(&c, "[store]\nbackend = redis\n[cluster]\nnode = a/b\n", path, err,
				   sizeof(err)), -1);
	assert_non_null(strstr(err, "[cluster] node"));
	assert_int_equal(load_text(&c, "[c2s]\nlisten =\ntls_listen =\n", path, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "listen"));
	/* One of the two is enough. */
	assert_int_equal(load_text(&c, "[c2s]\nlisten =\n", path, err, sizeof(err)), 0);
	assert_int_equal(load_text(&c, "[c2s]\ntls_listen =\n", path, err, sizeof(err)), 0);
}

static void test_missing_file(void **state)
{
	(void)state;
	struct config c;
	char err[512];
	config_defaults(&c);
	assert_int_equal(config_load(&c, "/nonexistent/tether.ini", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "/nonexistent/tether.ini"));
}

/* A tiny error buffer truncates, never overflows. */
static void test_small_err(void **state)
{
	(void)state;
	struct config c;
	char path[64], err[8];
	memset(err, 'x', sizeof(err));
	write_tmp(path, "[limits]\nmax_depth = 1\n");
	config_defaults(&c);
	assert_int_equal(config_load(&c, path, err, sizeof(err)), -1);
	unlink(path);
	assert_int_equal(strlen(err), sizeof(err) - 1);
}

static void test_set(void **state)
{
	(void)state;
	struct config c;
	char err[512];
	config_defaults(&c);
	assert_int_equal(config_set(&c, "limits.max_stanza_size=1k", err, sizeof(err)), 0);
	assert_int_equal(c.max_stanza_size, 1024);
	assert_int_equal(config_set(&c, "server.domain=chat.example.org", err, sizeof(err)), 0);
	assert_string_equal(c.domain, "chat.example.org");
	assert_int_equal(config_set(&c, "server.workers=4", err, sizeof(err)), 0);
	assert_int_equal(c.workers, 4);
	assert_int_equal(config_set(&c, "tls.dev_cert=yes", err, sizeof(err)), 0);
	assert_int_equal(c.dev_cert, 1);
	assert_int_equal(config_set(&c, "c2s.listen=[::1]:5222", err, sizeof(err)), 0);
	assert_string_equal(c.listen, "[::1]:5222");
	assert_int_equal(config_set(&c, "tls.cert=a=b.pem", err, sizeof(err)), 0);
	assert_string_equal(c.cert, "a=b.pem");

	/* Garbage. */
	static const char *const bad[] = {
		"", "garbage", "=", ".", ".=", "limits", "limits.max_depth",
		"max_depth=5", "limits=5.0", "limits.max_depth=", "limits.max_depth=abc",
		"limits.max_depth=3", "limits.nope=1", "nope.max_depth=5",
		"tls.dev_cert=perhaps", "server.domain=", "store.backend=sql",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = 0;
		if (config_set(&c, bad[i], err, sizeof(err)) != -1)
			fail_msg("'%s' accepted", bad[i]);
		assert_true(err[0] != 0);
	}
	err[0] = 0;
	assert_int_equal(config_set(&c, "limits.max_depth=3", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "max_depth"));
	assert_non_null(strstr(err, "out of range"));
	err[0] = 0;
	assert_int_equal(config_set(&c, "limits.nope=1", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "nope"));
	err[0] = 0;
	assert_int_equal(config_set(&c, "garbage", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "garbage"));

	/* Failed overrides of numbers left the old values. */
	assert_int_equal(c.max_stanza_size, 1024);
	assert_int_equal(c.workers, 4);
	assert_int_equal(c.dev_cert, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_empty_file),
		cmocka_unit_test(test_every_key),
		cmocka_unit_test(test_numbers_and_bools),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_log_level_fits),
		cmocka_unit_test(test_long_string_fits),
		cmocka_unit_test(test_long_string_too_long),
		cmocka_unit_test(test_validate),
		cmocka_unit_test(test_missing_file),
		cmocka_unit_test(test_small_err),
		cmocka_unit_test(test_set),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
