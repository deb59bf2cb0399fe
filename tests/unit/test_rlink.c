/* tests/unit/test_rlink.c - rlink on a real io_uring against a real redis-server: pipelining, reconnect with back-off, timeouts. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>
#include <liburing.h>

#include "tether/rlink.h"
#include "tether/timer.h"
#include "tether/worker.h"

#include "redis_harness.h"

/* The test owns a ring and a wheel, as a worker does, and runs the same
 * loop shape: submit, wait (up to 10 ms), hand OP_RLINK CQEs to rlink, run
 * the wheel. rlink cannot tell the difference from a worker. */

static struct rserver srv;

struct env {
	struct io_uring ring;
	struct timer_wheel wheel;
	struct rlink *l;
	int ups, downs;
};

static void on_state(void *ud, int up)
{
	struct env *e = ud;
	if (up)
		e->ups++;
	else
		e->downs++;
}

static void turn(struct env *e)
{
	struct __kernel_timespec ts = { .tv_sec = 0, .tv_nsec = 10 * 1000000L };
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;
	io_uring_submit_and_wait_timeout(&e->ring, &cqe, 1, &ts, NULL);
	io_uring_for_each_cqe(&e->ring, head, cqe) {
		if (ud_op(cqe->user_data) == OP_RLINK)
			rlink_on_cqe(e->l, cqe);
		n++;
	}
	io_uring_cq_advance(&e->ring, n);
	timer_wheel_run(&e->wheel);
}

/* Turns the loop until *<flag> >= <want> or <ms> pass. 0 if reached. */
static int run_until(struct env *e, const int *flag, int want, unsigned ms)
{
	uint64_t end = now_ms() + ms;
	while (*flag < want && now_ms() < end)
		turn(e);
	return *flag >= want ? 0 : -1;
}

static void env_open(struct env *e, const char *addr)
{
	char err[256];
	memset(e, 0, sizeof(*e));
	assert_int_equal(io_uring_queue_init(256, &e->ring, 0), 0);
	timer_wheel_init(&e->wheel);
	e->l = rlink_new(&e->ring, &e->wheel, addr, on_state, e, err, sizeof(err));
	if (!e->l)
		fail_msg("%s", err);
	rlink_start(e->l);
}

/* Stops the link, lets its operations come back, frees it: the order a
 * worker follows at shutdown. */
static void env_close(struct env *e)
{
	uint64_t end = now_ms() + 5000;
	rlink_stop(e->l);
	while (!rlink_stopped(e->l) && now_ms() < end)
		turn(e);
	assert_true(rlink_stopped(e->l));
	rlink_free(e->l);
	io_uring_queue_exit(&e->ring);
}

static char *unix_addr(void)
{
	static char a[128];
	snprintf(a, sizeof(a), "unix:%s", srv.sock);
	return a;
}

/* ---- a reply recorder -------------------------------------------------- */

#define NREC 2000
struct rec {
	int n;                 /* callbacks so far */
	long long ints[NREC];  /* integer replies, in callback order */
	const char *errs[NREC];
	void *order[NREC];     /* the ud of each callback, in order */
};

struct slot {
	struct rec *r;
	int idx;
};

static void rec_cb(const redisReply *reply, const char *err, void *ud)
{
	struct slot *s = ud;
	struct rec *r = s->r;
	if (r->n < NREC) {
		r->ints[r->n] = reply && reply->type == REDIS_REPLY_INTEGER ? reply->integer : -1;
		r->errs[r->n] = err;
		r->order[r->n] = s;
	}
	r->n++;
}

static int cmd(struct env *e, struct slot *s, uint64_t timeout_ms, int argc, const char **argv)
{
	size_t lens[8];
	for (int i = 0; i < argc; i++)
		lens[i] = strlen(argv[i]);
	return rlink_command(e->l, argc, argv, lens, rec_cb, s, timeout_ms, NULL);
}

/* ---- tests --------------------------------------------------------------- */

/* 1000 commands issued in one loop turn, before the connect completes:
 * they queue, go out pipelined once connected, and the replies come back
 * in order. */
static void test_pipeline(void **state)
{
	(void)state;
	struct env e;
	static struct rec r;
	static struct slot slots[1000];
	memset(&r, 0, sizeof(r));
	env_open(&e, unix_addr());
	const char *del[] = { "DEL", "ctr" }, *incr[] = { "INCR", "ctr" };
	struct slot s0 = { &r, -1 };
	assert_int_equal(cmd(&e, &s0, 5000, 2, del), 0);
	for (int i = 0; i < 1000; i++) {
		slots[i] = (struct slot){ &r, i };
		assert_int_equal(cmd(&e, &slots[i], 5000, 2, incr), 0);
	}
	assert_int_equal(run_until(&e, &r.n, 1001, 5000), 0);
	assert_int_equal(e.ups, 1);
	assert_true(rlink_up(e.l));
	for (int i = 0; i < 1000; i++) {
		assert_null(r.errs[i + 1]);
		assert_ptr_equal(r.order[i + 1], &slots[i]);
		assert_int_equal(r.ints[i + 1], i + 1);
	}
	/* A big value: the send goes out in pieces if the socket wants. */
	size_t big = 1u << 20; /* under rproto max_out (4 MiB) */
	char *v = malloc(big);
	assert_non_null(v);
	memset(v, 'x', big);
	const char *set[] = { "SET", "big", v }, *strlen_[] = { "STRLEN", "big" };
	size_t lens[] = { 3, 3, big };
	struct slot s1 = { &r, -2 }, s2 = { &r, -3 };
	assert_int_equal(rlink_command(e.l, 3, set, lens, rec_cb, &s1, 5000, NULL), 0);
	assert_int_equal(cmd(&e, &s2, 5000, 2, strlen_), 0);
	assert_int_equal(run_until(&e, &r.n, 1003, 5000), 0);
	assert_null(r.errs[1001]);
	assert_int_equal(r.ints[1002], (long long)big);
	free(v);
	env_close(&e);
	assert_int_equal(e.downs, 1);
}

/* Redis goes away while the link is up: the outstanding command fails,
 * "down" is told, commands are refused while backing off, and the link
 * comes back by itself once Redis is back. */
static void test_reconnect(void **state)
{
	(void)state;
	struct env e;
	static struct rec r;
	memset(&r, 0, sizeof(r));
	env_open(&e, unix_addr());
	assert_int_equal(run_until(&e, &e.ups, 1, 5000), 0);
	/* A command that waits in Redis (BLPOP) is outstanding when it dies. */
	const char *blpop[] = { "BLPOP", "nothing", "0" };
	struct slot s0 = { &r, 0 };
	assert_int_equal(cmd(&e, &s0, 30000, 3, blpop), 0);
	for (int i = 0; i < 5; i++)
		turn(&e);
	rs_stop(&srv);
	assert_int_equal(run_until(&e, &e.downs, 1, 5000), 0);
	assert_int_equal(r.n, 1);
	assert_ptr_equal(r.errs[0], rproto_err_closed);
	assert_false(rlink_up(e.l));
	/* While it backs off (no server), commands are refused at once. */
	const char *ping[] = { "PING" };
	struct slot s1 = { &r, 1 };
	uint64_t t0 = now_ms();
	int refused = 0;
	while (now_ms() - t0 < 1000) {
		int rc = cmd(&e, &s1, 1000, 1, ping);
		if (rc == -ENOTCONN)
			refused++;
		turn(&e);
	}
	assert_true(refused > 0);
	/* Back-off 50, 100, 200, 400, 800 ms (+ a tick each): ~5 attempts
	 * in 1 s, not one per loop turn (~100). */
	unsigned attempts = rlink_attempts(e.l);
	assert_true(attempts >= 3 && attempts <= 8);
	rs_start(&srv, 0);
	assert_int_equal(run_until(&e, &e.ups, 2, 5000), 0);
	assert_int_equal(rlink_connects(e.l), 2);
	int before = r.n;
	const char *incr[] = { "INCR", "after" };
	struct slot s2 = { &r, 2 };
	assert_int_equal(cmd(&e, &s2, 2000, 2, incr), 0);
	assert_int_equal(run_until(&e, &r.n, before + 1, 5000), 0);
	assert_null(r.errs[before]);
	assert_int_equal(r.ints[before], 1);
	env_close(&e);
}

/* A command past its deadline fails with rproto_err_timeout, the others
 * outstanding with rproto_err_closed, and the link reconnects. */
static void test_timeout(void **state)
{
	(void)state;
	struct env e;
	static struct rec r;
	memset(&r, 0, sizeof(r));
	env_open(&e, unix_addr());
	assert_int_equal(run_until(&e, &e.ups, 1, 5000), 0);
	const char *blpop[] = { "BLPOP", "nothing", "5" }, *ping[] = { "PING" };
	struct slot s0 = { &r, 0 }, s1 = { &r, 1 };
	uint64_t t0 = now_ms();
	assert_int_equal(cmd(&e, &s0, 200, 3, blpop), 0);
	assert_int_equal(cmd(&e, &s1, 5000, 1, ping), 0);
	assert_int_equal(run_until(&e, &r.n, 2, 3000), 0);
	uint64_t took = now_ms() - t0;
	assert_ptr_equal(r.errs[0], rproto_err_timeout);
	assert_ptr_equal(r.errs[1], rproto_err_closed);
	assert_true(took >= 200 && took < 1000); /* 200 ms on a 50 ms wheel */
	assert_int_equal(run_until(&e, &e.ups, 2, 5000), 0);
	assert_int_equal(e.downs, 1);
	struct slot s2 = { &r, 2 };
	assert_int_equal(cmd(&e, &s2, 2000, 1, ping), 0);
	assert_int_equal(run_until(&e, &r.n, 3, 3000), 0);
	assert_null(r.errs[2]);
	env_close(&e);
}

/* TCP: a refused connect backs off; a real TCP server connects. */
static void test_tcp(void **state)
{
	(void)state;
	struct env e;
	static struct rec r;
	memset(&r, 0, sizeof(r));
	/* Nobody on this port: refused, retried with back-off, never up. */
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t al = sizeof(a);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
	unsigned port = ntohs(a.sin_port);
	close(fd); /* free again: connecting to it is refused */
	char addr[64];
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
	env_open(&e, addr);
	uint64_t t0 = now_ms();
	while (now_ms() - t0 < 500)
		turn(&e);
	assert_int_equal(e.ups, 0);
	assert_true(rlink_attempts(e.l) >= 2 && rlink_attempts(e.l) <= 6);
	env_close(&e);

	/* Redis on TCP, through CONFIG SET port on the test server. */
	struct rproto *rp = rproto_new(NULL);
	int cfd = rs_connect(&srv);
	struct rcopy c = { 0 };
	char p[16];
	snprintf(p, sizeof(p), "%u", port);
	assert_int_equal(RS_CMD(rp, cfd, &c, "CONFIG", "SET", "port", p), 0);
	rcopy_clear(&c);
	rproto_free(rp);
	close(cfd);
	env_open(&e, addr);
	assert_int_equal(run_until(&e, &e.ups, 1, 5000), 0);
	const char *ping[] = { "PING" };
	struct slot s = { &r, 0 };
	assert_int_equal(cmd(&e, &s, 2000, 1, ping), 0);
	assert_int_equal(run_until(&e, &r.n, 1, 3000), 0);
	assert_null(r.errs[0]);
	env_close(&e);
}

static void test_bad_address(void **state)
{
	(void)state;
	struct io_uring ring;
	struct timer_wheel wheel;
	char err[256];
	timer_wheel_init(&wheel);
	assert_int_equal(io_uring_queue_init(8, &ring, 0), 0);
	assert_null(rlink_new(&ring, &wheel, "localhost:6379", NULL, NULL, err, sizeof(err)));
	assert_non_null(strstr(err, "localhost:6379"));
	assert_null(rlink_new(&ring, &wheel, "unix:relative", NULL, NULL, err, sizeof(err)));
	io_uring_queue_exit(&ring);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bad_address),
		cmocka_unit_test(test_pipeline),
		cmocka_unit_test(test_timeout),
		cmocka_unit_test(test_reconnect),
		cmocka_unit_test(test_tcp),
	};
	rs_start(&srv, 0);
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	rs_destroy(&srv);
	return rc;
}
