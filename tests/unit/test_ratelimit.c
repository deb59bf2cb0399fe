/* tests/unit/test_ratelimit.c - token buckets (burst, refill, no refill
 * backwards, keys apart, sweep, the key cap), the once-a-second log gate,
 * and limits.c on top: per-address and pre-auth connection counts, the
 * guessing rate per address and per account. Time is passed in. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "tether/config.h"
#include "tether/limits.h"
#include "tether/ratelimit.h"
#include "tether/transport.h"

#define T0 1000000u /* any start: the clock is the caller's */

static void burst_then_rate(void **state)
{
	(void)state;
	struct ratelimit *rl = ratelimit_new(20, 5, 100);
	assert_non_null(rl);
	assert_true(ratelimit_allow(rl, "a", T0));          /* no bucket: full */
	assert_false(ratelimit_known(rl, "a", T0));
	for (int i = 0; i < 19; i++)
		ratelimit_hit(rl, "a", T0);
	assert_true(ratelimit_allow(rl, "a", T0));          /* one token left */
	assert_true(ratelimit_known(rl, "a", T0));
	ratelimit_hit(rl, "a", T0);
	assert_false(ratelimit_allow(rl, "a", T0));         /* 20 failures: empty */
	assert_false(ratelimit_allow(rl, "a", T0 + 199));   /* 5/s: a token per 200 ms */
	assert_true(ratelimit_allow(rl, "a", T0 + 200));
	ratelimit_hit(rl, "a", T0 + 200);
	assert_false(ratelimit_allow(rl, "a", T0 + 200));
	/* A second of failures as fast as allowed: at most 5 get through. */
	int allowed = 0;
	for (uint64_t t = T0 + 200; t < T0 + 1200; t += 10)
		if (ratelimit_allow(rl, "a", t)) {
			allowed++;
			ratelimit_hit(rl, "a", t);
		}
	assert_true(allowed <= 5);
	assert_true(allowed >= 4);
	/* Other keys are not affected. */
	assert_true(ratelimit_allow(rl, "b", T0 + 1200));
	/* A clock going back adds nothing (and takes nothing). */
	assert_false(ratelimit_allow(rl, "a", T0));
	/* Full again after burst/rate seconds. */
	assert_true(ratelimit_allow(rl, "a", T0 + 1200 + 4000));
	assert_false(ratelimit_known(rl, "a", T0 + 1200 + 4000));
	ratelimit_free(rl);
}

static void sweep_and_cap(void **state)
{
	(void)state;
	struct ratelimit *rl = ratelimit_new(2, 1, 3);
	char k[16];
	for (int i = 0; i < 3; i++) {
		snprintf(k, sizeof(k), "k%d", i);
		ratelimit_hit(rl, k, T0);
		ratelimit_hit(rl, k, T0);
	}
	assert_int_equal(ratelimit_count(rl), 3);
	/* Full table: a new key is not tracked (fails open)... */
	ratelimit_hit(rl, "new", T0);
	ratelimit_hit(rl, "new", T0);
	assert_true(ratelimit_allow(rl, "new", T0));
	assert_int_equal(ratelimit_count(rl), 3);
	assert_false(ratelimit_allow(rl, "k0", T0));
	/* ...until the sweep drops the refilled buckets (2 tokens at 1/s). */
	assert_int_equal(ratelimit_sweep(rl, T0 + 1000), 0);
	assert_int_equal(ratelimit_sweep(rl, T0 + 2000), 3);
	assert_int_equal(ratelimit_count(rl), 0);
	ratelimit_hit(rl, "new", T0 + 2000);
	ratelimit_hit(rl, "new", T0 + 2000);
	assert_false(ratelimit_allow(rl, "new", T0 + 2000));
	/* Long keys are cut, consistently. */
	char longkey[300];
	memset(longkey, 'x', sizeof(longkey) - 1);
	longkey[sizeof(longkey) - 1] = 0;
	ratelimit_hit(rl, longkey, T0 + 2000);
	ratelimit_hit(rl, longkey, T0 + 2000);
	assert_false(ratelimit_allow(rl, longkey, T0 + 2000));
	ratelimit_free(rl);
}

static void log_once_a_second(void **state)
{
	(void)state;
	struct ratelimit_log l = { 0 };
	uint64_t sup = 99;
	assert_true(ratelimit_log_due(&l, T0, &sup));
	assert_int_equal(sup, 0);
	for (int i = 0; i < 7; i++)
		assert_false(ratelimit_log_due(&l, T0 + 10 * (uint64_t)i, &sup));
	assert_false(ratelimit_log_due(&l, T0 + 999, &sup));
	assert_true(ratelimit_log_due(&l, T0 + 1000, &sup));
	assert_int_equal(sup, 8);
	assert_true(ratelimit_log_due(&l, T0 + 5000, &sup));
	assert_int_equal(sup, 0);
}

/* ---- limits.c ---------------------------------------------------------- */

static const char *peer_ip_now;
static const char *t_peer(void *io) { (void)io; return "test:1"; }
static const char *t_peer_ip(void *io, char buf[NETADDR_IP_MAX]) { (void)io; (void)buf; return peer_ip_now; }
static const struct transport tp = { .peer = t_peer, .peer_ip = t_peer_ip };

static struct limits *limits_with(unsigned per_ip, unsigned preauth)
{
	struct config cfg;
	config_defaults(&cfg);
	cfg.max_conns_per_ip = per_ip;
	cfg.max_preauth_conns = preauth;
	struct limits *l = limits_new(&cfg);
	assert_non_null(l);
	return l;
}

static void conns_per_ip_and_preauth(void **state)
{
	(void)state;
	struct limits *l = limits_with(2, 3);
	assert_int_equal(limits_conn_open(l, "10.0.0.1"), LIMITS_OK);
	assert_int_equal(limits_conn_open(l, "10.0.0.1"), LIMITS_OK);
	assert_int_equal(limits_conn_open(l, "10.0.0.1"), LIMITS_CONNS_PER_IP);
	assert_int_equal(limits_conns_of(l, "10.0.0.1"), 2);
	assert_int_equal(limits_preauth_count(l), 2);
	assert_int_equal(limits_conn_open(l, "10.0.0.2"), LIMITS_OK);
	assert_int_equal(limits_conn_open(l, "10.0.0.3"), LIMITS_PREAUTH_CONNS);
	assert_int_equal(limits_conns_of(l, "10.0.0.3"), 0);
	/* One authenticates: a stranger may come in. */
	limits_conn_authed(l, 1);
	assert_int_equal(limits_conn_open(l, "10.0.0.3"), LIMITS_OK);
	assert_int_equal(limits_preauth_count(l), 3);
	/* Closing (one authed, one not) frees both counts. */
	limits_conn_close(l, "10.0.0.1", 1);
	limits_conn_close(l, "10.0.0.1", 0);
	assert_int_equal(limits_conns_of(l, "10.0.0.1"), 0);
	assert_int_equal(limits_preauth_count(l), 2);
	assert_int_equal(limits_conn_open(l, "10.0.0.1"), LIMITS_OK);
	limits_free(l);
	/* 0 = no limit. */
	l = limits_with(0, 0);
	for (int i = 0; i < 1000; i++)
		assert_int_equal(limits_conn_open(l, "10.0.0.1"), LIMITS_OK);
	limits_free(l);
}

static void guessing_per_ip_and_account(void **state)
{
	(void)state;
	struct limits *l = limits_with(100, 100); /* defaults: 20/5 per ip, 50/2 per account */
	uint64_t t = T0;
	peer_ip_now = "192.0.2.1";
	for (int i = 0; i < 20; i++) {
		assert_false(limits_auth_refused(l, &tp, NULL, "alice@x", t));
		limits_auth_failed(l, &tp, NULL, "not-authorized", t);
	}
	assert_true(limits_auth_refused(l, &tp, NULL, "alice@x", t));
	assert_true(limits_auth_refused(l, &tp, NULL, NULL, t));
	/* Our own refusals are not failures: they take no token. */
	limits_auth_failed(l, &tp, NULL, "temporary-auth-failure", t);
	assert_false(limits_auth_refused(l, &tp, NULL, "alice@x", t + 200));
	/* The owner on another address is not locked out. */
	peer_ip_now = "198.51.100.7";
	assert_false(limits_auth_refused(l, &tp, NULL, "alice@x", t));
	/* IPv6: one /64 is one address for the buckets. */
	peer_ip_now = "2001:db8:1:2::1";
	for (int i = 0; i < 20; i++)
		limits_auth_failed(l, &tp, NULL, "not-authorized", t);
	peer_ip_now = "2001:db8:1:2:ffff::9";
	assert_true(limits_auth_refused(l, &tp, NULL, NULL, t));
	peer_ip_now = "2001:db8:1:3::1";
	assert_false(limits_auth_refused(l, &tp, NULL, NULL, t));
	/* Per account: a distributed guesser's first attempt per address is
	 * free (the address is clean); once every address has failed, their
	 * attempts on bob share his bucket (burst 50) and then are refused,
	 * while a clean address is not. */
	char ip[32];
	for (int i = 0; i < 50; i++) {
		snprintf(ip, sizeof(ip), "203.0.113.%d", i);
		peer_ip_now = ip;
		assert_false(limits_auth_refused(l, &tp, NULL, "bob@x", t));
		limits_auth_failed(l, &tp, NULL, "not-authorized", t);
	}
	for (int i = 0; i < 50; i++) {
		snprintf(ip, sizeof(ip), "203.0.113.%d", i);
		peer_ip_now = ip;
		assert_false(limits_auth_refused(l, &tp, NULL, "bob@x", t));
		limits_auth_failed(l, &tp, NULL, "not-authorized", t);
	}
	peer_ip_now = "203.0.113.3";
	assert_true(limits_auth_refused(l, &tp, NULL, "bob@x", t));
	assert_false(limits_auth_refused(l, &tp, NULL, "carol@x", t)); /* other accounts: fine */
	peer_ip_now = "203.0.113.200";
	assert_false(limits_auth_refused(l, &tp, NULL, "bob@x", t));
	limits_free(l);
	/* NULL limits: nothing is ever refused. */
	assert_false(limits_auth_refused(NULL, &tp, NULL, "bob@x", t));
	assert_int_equal(limits_conn_open(NULL, "x"), LIMITS_OK);
}

int main(void)
{
	if (sodium_init() < 0)
		return 1;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(burst_then_rate),
		cmocka_unit_test(sweep_and_cap),
		cmocka_unit_test(log_once_a_second),
		cmocka_unit_test(conns_per_ip_and_preauth),
		cmocka_unit_test(guessing_per_ip_and_account),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
