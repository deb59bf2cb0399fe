/* tests/unit/test_redis_lib.c - the Redis FUNCTION library (store/redis_lib.lua) against a real redis-server. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tether/redis_proto.h"

#include "redis_harness.h"

#define LIB_PATH "store/redis_lib.lua"

/* Keys of account alice@example.com and her sessions (the layout in the
 * library's header). */
#define B "t:{alice@example.com}"
#define USER B ":user"
#define FAST B ":fast"
#define ISR B ":isr"
#define DIR B ":dir"
#define REC(sid) B ":s:" sid
#define Q(sid) B ":q:" sid

static struct rserver srv;
static char *lib;
static size_t lib_len;

struct conn {
	struct rproto *rp;
	int fd;
};

static void conn_open(struct conn *c)
{
	c->rp = rproto_new(NULL);
	assert_non_null(c->rp);
	c->fd = rs_connect(&srv);
	assert_true(c->fd >= 0);
}

static void conn_close(struct conn *c)
{
	rproto_free(c->rp);
	close(c->fd);
}

static int load_lib(struct conn *c)
{
	struct rcopy r = { 0 };
	const char *argv[] = { "FUNCTION", "LOAD", "REPLACE", lib };
	size_t lens[] = { 8, 4, 7, lib_len };
	int rc = rs_cmdv(c->rp, c->fd, &r, 4, argv, lens);
	if (r.err)
		print_error("FUNCTION LOAD: %s\n", r.str ? r.str : r.err);
	if (!rc && !r.err && (r.type != REDIS_REPLY_STRING || strcmp(r.str, "tether")))
		print_error("FUNCTION LOAD: reply type %d\n", r.type);
	rc = rc || r.err || r.type != REDIS_REPLY_STRING || strcmp(r.str, "tether");
	rcopy_clear(&r);
	return rc ? -1 : 0;
}

/* Asserts that <r> is the error reply starting with <prefix>. */
static void is_err(const struct rcopy *r, const char *prefix)
{
	if (r->err != rproto_err_reply || strncmp(r->str, prefix, strlen(prefix)))
		fail_msg("expected error %s, got %s / %s", prefix, r->err ? r->err : "ok",
			 r->str ? r->str : "(no string)");
}

static void is_ok(const struct rcopy *r)
{
	if (r->err)
		fail_msg("expected success, got %s: %s", r->err, r->str ? r->str : "");
}

static void flushall(struct conn *c)
{
	struct rcopy r = { 0 };
	assert_int_equal(RS_CMD(c->rp, c->fd, &r, "FLUSHALL"), 0);
	is_ok(&r);
	rcopy_clear(&r);
}

/* A fresh session S1 of alice, owner A/0/1/1, resource "phone", resumable
 * for 300 s; epoch 1. */
static void create_s1(struct conn *c)
{
	struct rcopy r = { 0 };
	assert_int_equal(RS_CMD(c->rp, c->fd, &r, "FCALL", "tether_sm_create", "2", REC("S1"), DIR,
				"S1", "A/0/1/1", "phone", "300"), 0);
	is_ok(&r);
	assert_int_equal(r.el[0].integer, 1);
	rcopy_clear(&r);
}

static int setup(void **state)
{
	(void)state;
	struct conn c;
	conn_open(&c);
	flushall(&c);
	assert_int_equal(load_lib(&c), 0);
	conn_close(&c);
	return 0;
}

/* ---- tests -------------------------------------------------------------- */

static void test_session_flow(void **state)
{
	(void)state;
	struct conn c;
	struct rcopy r = { 0 };
	conn_open(&c);
	create_s1(&c);
	/* A second create of the same id is refused. */
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_sm_create", "2", REC("S1"), DIR, "S1", "X", "phone", "300");
	is_err(&r, "EEXIST");

	for (int i = 1; i <= 3; i++) {
		char payload[16];
		snprintf(payload, sizeof(payload), "<m%d/>", i);
		RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_sm_append", "2", REC("S1"), Q("S1"), "1", payload, "0");
		is_ok(&r);
		assert_int_equal(r.el[0].integer, i);
		assert_string_equal(r.el[1].str, "A/0/1/1");
	}
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_sm_ack", "2", REC("S1"), Q("S1"), "1", "2");
	is_ok(&r);
	assert_int_equal(r.integer, 1);
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_sm_ack", "2", REC("S1"), Q("S1"), "1", "5");
	is_err(&r, "ERANGE");
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_sm_ack", "2", REC("S1"), Q("S1"), "1", "x");
	is_err(&r, "EINVAL");
	/* Queue limit: 1 queued, a limit of 1 refuses the next. */
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_sm_append", "2", REC("S1"), Q("S1"), "1", "<x/>", "1");
	is_err(&r, "ENOSPC");

	/* Detached, then taken over by B: epoch 2, the queue holds entry 3. */
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_sm_update", "2", REC("S1"), DIR, "S1", "1", "7", "300",
	       "0", "60000", "1", "5", "IM-STATE");              /* with the IM state */
	is_ok(&r);
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_sm_update", "2", REC("S1"), DIR, "S1", "1", "7", "300",
	       "0", "60000", "1", "5");                          /* without: kept */
	is_ok(&r);
	RS_CMD(c.rp, c.fd, &r, "FCALL_RO", "tether_dir_get", "1", DIR);
	is_ok(&r);
	assert_int_equal(r.n, 2);
	assert_string_equal(r.el[0].str, "phone");
	assert_string_equal(r.el[1].str, "S1|1|5");
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_sm_take", "3", REC("S1"), Q("S1"), ISR, "S1", "B/1/2/3", "");
	is_ok(&r);
	assert_int_equal(r.n, 4);
	assert_string_equal(r.el[2].str, "IM-STATE");         /* the session's IM state */
	assert_int_equal(r.el[3].integer, 1);                 /* node A holds no lease: dead */
	assert_int_equal(r.el[0].el[0].integer, 2);           /* new epoch */
	assert_string_equal(r.el[0].el[1].str, "A/0/1/1");    /* previous owner */
	assert_string_equal(r.el[0].el[2].str, "phone");
	assert_string_equal(r.el[0].el[3].str, "7");          /* h_in */
	assert_string_equal(r.el[0].el[4].str, "3");          /* out */
	assert_string_equal(r.el[0].el[5].str, "2");          /* acked */
	assert_int_equal(r.el[1].n, 1);
	assert_true(!strncmp(r.el[1].el[0].str, "3:", 2));
	assert_non_null(strstr(r.el[1].el[0].str, ":<m3/>"));

	/* The old owner is fenced off, and told who owns it now. */
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_sm_append", "2", REC("S1"), Q("S1"), "1", "<late/>", "0");
	is_err(&r, "ESTALE B/1/2/3 2");
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_sm_ack", "2", REC("S1"), Q("S1"), "1", "3");
	is_err(&r, "ESTALE");
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_sm_update", "2", REC("S1"), DIR, "S1", "1", "7", "300",
	       "1", "0", "1", "0");
	is_err(&r, "ESTALE");
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_sm_set_isr", "2", REC("S1"), ISR, "S1", "1", "tok");
	is_err(&r, "ESTALE");
	/* Delivery from another node: no epoch; returns the owner to notify. */
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_sm_append", "2", REC("S1"), Q("S1"), "0", "<d/>", "0");
	is_ok(&r);
	assert_int_equal(r.el[0].integer, 4);
	assert_string_equal(r.el[1].str, "B/1/2/3");
	/* The new owner's ack with the new epoch. */
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_sm_ack", "2", REC("S1"), Q("S1"), "2", "4");
	is_ok(&r);
	assert_int_equal(r.integer, 0);
	/* Another account's session id names nothing. */
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_sm_take", "3", "t:{bob@example.com}:s:S1",
	       "t:{bob@example.com}:q:S1", "t:{bob@example.com}:isr", "S1", "M", "");
	is_err(&r, "ENOENT");
	rcopy_clear(&r);
	conn_close(&c);
}

/* Sequence numbers wrap at 2^32, and ack counts modulo 2^32. */
static void test_wrap(void **state)
{
	(void)state;
	struct conn c;
	struct rcopy r = { 0 };
	conn_open(&c);
	create_s1(&c);
	RS_CMD(c.rp, c.fd, &r, "HSET", REC("S1"), "out", "4294967294", "acked", "4294967294");
	for (int i = 0; i < 3; i++) {
		RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_sm_append", "2", REC("S1"), Q("S1"), "1", "w", "0");
		is_ok(&r);
		assert_int_equal(r.el[0].integer, i == 0 ? 4294967295LL : i - 1);
	}
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_sm_ack", "2", REC("S1"), Q("S1"), "1", "0");
	is_ok(&r);
	assert_int_equal(r.integer, 1);
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_sm_ack", "2", REC("S1"), Q("S1"), "1", "2");
	is_err(&r, "ERANGE");
	rcopy_clear(&r);
	conn_close(&c);
}

/* MongooseIM#4788: the old owner's cleanup must not delete the session its
 * successor took, nor the successor's directory entry. */
static void test_destroy_fenced(void **state)
{
	(void)state;
	struct conn c;
	struct rcopy r = { 0 };
	conn_open(&c);
	create_s1(&c);
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_sm_take", "3", REC("S1"), Q("S1"), ISR, "S1", "B", "");
	is_ok(&r);
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_sm_destroy", "4", REC("S1"), Q("S1"), ISR, DIR, "S1", "1");
	is_err(&r, "ESTALE B 2");
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_sm_get", "1", REC("S1"));
	is_ok(&r);
	assert_string_equal(r.el[1].str, "B");
	RS_CMD(c.rp, c.fd, &r, "HGET", DIR, "phone");
	assert_string_equal(r.str, "S1|0|0");

	/* A newer bind of the same resource (S2) replaces the entry; destroying
	 * S1 then leaves S2's entry alone. */
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_sm_create", "2", REC("S2"), DIR, "S2", "C", "phone", "300");
	is_ok(&r);
	assert_string_equal(r.el[1].str, "S1"); /* the one to kick */
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_sm_append", "2", REC("S1"), Q("S1"), "2", "<q/>", "0");
	is_ok(&r);
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_sm_destroy", "4", REC("S1"), Q("S1"), ISR, DIR, "S1", "2");
	is_ok(&r);
	assert_int_equal(r.el[1].n, 1); /* the unacked queue, to bounce */
	assert_non_null(strstr(r.el[1].el[0].str, "<q/>"));
	RS_CMD(c.rp, c.fd, &r, "HGET", DIR, "phone");
	assert_string_equal(r.str, "S2|0|0");
	RS_CMD(c.rp, c.fd, &r, "EXISTS", REC("S1"), Q("S1"));
	assert_int_equal(r.integer, 0);
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_sm_destroy", "4", REC("S1"), Q("S1"), ISR, DIR, "S1", "0");
	is_err(&r, "ENOENT");
	/* Epoch 0 (administrator): any epoch. */
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_sm_destroy", "4", REC("S2"), Q("S2"), ISR, DIR, "S2", "0");
	is_ok(&r);
	RS_CMD(c.rp, c.fd, &r, "HLEN", DIR);
	assert_int_equal(r.integer, 0);
	rcopy_clear(&r);
	conn_close(&c);
}

/* Expiry is judged by Redis TIME: a TTL in, a deadline in the record. */
static void test_expiry_redis_time(void **state)
{
	(void)state;
	struct conn c;
	struct rcopy r = { 0 };
	conn_open(&c);
	create_s1(&c);
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_sm_update", "2", REC("S1"), DIR, "S1", "1", "0", "300",
	       "0", "150", "0", "0");
	is_ok(&r);
	RS_CMD(c.rp, c.fd, &r, "TIME");
	long long t = atoll(r.el[0].str) * 1000 + atoll(r.el[1].str) / 1000;
	RS_CMD(c.rp, c.fd, &r, "HGET", REC("S1"), "exp");
	long long exp = atoll(r.str);
	assert_true(exp > t && exp <= t + 150);
	usleep(300000);
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_sm_take", "3", REC("S1"), Q("S1"), ISR, "S1", "B", "");
	is_err(&r, "ENOENT");
	/* Within its window it is taken; attached sessions never expire. */
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_sm_update", "2", REC("S1"), DIR, "S1", "1", "0", "300",
	       "0", "60000", "0", "0");
	is_ok(&r);
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_sm_take", "3", REC("S1"), Q("S1"), ISR, "S1", "B", "");
	is_ok(&r);
	/* Not resumable (max 0): not taken. */
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_sm_update", "2", REC("S1"), DIR, "S1", "2", "0", "0",
	       "1", "0", "0", "0");
	is_ok(&r);
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_sm_take", "3", REC("S1"), Q("S1"), ISR, "S1", "C", "");
	is_err(&r, "ENOENT");
	rcopy_clear(&r);
	conn_close(&c);
}

/* A take says whether the owner it took from was another node's
 * incarnation without a lease (dead: for the takeover metric). */
static void test_take_tells_dead_owner(void **state)
{
	(void)state;
	struct conn c;
	struct rcopy r = { 0 };
	conn_open(&c);
	create_s1(&c);
	RS_CMD(c.rp, c.fd, &r, "SET", "t:{node:A}:lease", "A");
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_sm_take", "3", REC("S1"), Q("S1"), ISR, "S1", "B/0/1/1", "");
	is_ok(&r);
	assert_int_equal(r.el[3].integer, 0); /* A holds its lease: alive */
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_sm_take", "3", REC("S1"), Q("S1"), ISR, "S1", "B/0/2/2", "");
	is_ok(&r);
	assert_int_equal(r.el[3].integer, 0); /* from B itself: never dead */
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_sm_take", "3", REC("S1"), Q("S1"), ISR, "S1", "A/0/3/3", "");
	is_ok(&r);
	assert_int_equal(r.el[3].integer, 1); /* B holds no lease */
	rcopy_clear(&r);
	conn_close(&c);
}

/* One ISR token, eight takes pipelined on eight connections: exactly one
 * wins; the others get EACCES; the token is gone. */
static void test_isr_single_use(void **state)
{
	(void)state;
	enum { N = 8 };
	struct conn c[N];
	struct rcopy r[N], x = { 0 };
	memset(r, 0, sizeof(r));
	for (int i = 0; i < N; i++)
		conn_open(&c[i]);
	create_s1(&c[0]);
	RS_CMD(c[0].rp, c[0].fd, &x, "FCALL", "tether_sm_set_isr", "2", REC("S1"), ISR, "S1", "1", "SEALED-1");
	is_ok(&x);
	RS_CMD(c[0].rp, c[0].fd, &x, "FCALL", "tether_sm_isr_get", "2", REC("S1"), ISR, "S1");
	assert_string_equal(x.str, "SEALED-1");
	for (int i = 0; i < N; i++) {
		char owner[16];
		snprintf(owner, sizeof(owner), "N%d", i);
		const char *argv[] = { "FCALL", "tether_sm_take", "3", REC("S1"), Q("S1"), ISR, "S1", owner,
				       "SEALED-1" };
		size_t lens[9];
		for (int k = 0; k < 9; k++)
			lens[k] = strlen(argv[k]);
		assert_int_equal(rproto_command(c[i].rp, 9, argv, lens, rcopy_cb, &r[i], 0, NULL), 0);
	}
	for (int i = 0; i < N; i++)
		assert_int_equal(rs_flush(c[i].rp, c[i].fd), 0);
	int wins = 0, denied = 0;
	for (int i = 0; i < N; i++) {
		assert_int_equal(rs_run(c[i].rp, c[i].fd, NULL), 0);
		if (!r[i].err)
			wins++;
		else if (r[i].err == rproto_err_reply && !strncmp(r[i].str, "EACCES ", 7))
			denied++;
	}
	assert_int_equal(wins, 1);
	assert_int_equal(denied, N - 1);
	RS_CMD(c[0].rp, c[0].fd, &x, "FCALL", "tether_sm_isr_get", "2", REC("S1"), ISR, "S1");
	assert_int_equal(x.type, REDIS_REPLY_NIL);
	RS_CMD(c[0].rp, c[0].fd, &x, "FCALL", "tether_sm_get", "1", REC("S1"));
	assert_string_equal(x.el[0].str, "2"); /* one takeover, one epoch */

	/* A failed proof burns the token it was checked against, not a newer one. */
	RS_CMD(c[0].rp, c[0].fd, &x, "FCALL", "tether_sm_set_isr", "2", REC("S1"), ISR, "S1", "2", "SEALED-2");
	is_ok(&x);
	RS_CMD(c[0].rp, c[0].fd, &x, "FCALL", "tether_sm_isr_burn", "2", REC("S1"), ISR, "S1", "SEALED-1");
	is_ok(&x);
	RS_CMD(c[0].rp, c[0].fd, &x, "FCALL", "tether_sm_isr_get", "2", REC("S1"), ISR, "S1");
	assert_string_equal(x.str, "SEALED-2");
	RS_CMD(c[0].rp, c[0].fd, &x, "FCALL", "tether_sm_isr_burn", "2", REC("S1"), ISR, "S1", "SEALED-2");
	is_ok(&x);
	assert_string_equal(x.el[7].str, "1"); /* att: the caller decides whether to end it */
	RS_CMD(c[0].rp, c[0].fd, &x, "FCALL", "tether_sm_isr_get", "2", REC("S1"), ISR, "S1");
	assert_int_equal(x.type, REDIS_REPLY_NIL);
	RS_CMD(c[0].rp, c[0].fd, &x, "FCALL", "tether_sm_take", "3", REC("S1"), Q("S1"), ISR, "S1", "Z", "SEALED-2");
	is_err(&x, "EACCES");
	/* Unknown session: no token to read. */
	RS_CMD(c[0].rp, c[0].fd, &x, "FCALL", "tether_sm_isr_get", "2", REC("S9"), ISR, "S9");
	assert_int_equal(x.type, REDIS_REPLY_NIL);
	for (int i = 0; i < N; i++) {
		rcopy_clear(&r[i]);
		conn_close(&c[i]);
	}
	rcopy_clear(&x);
}

/* Two CAS on one version, on two connections, pipelined: one wins. A
 * password change revokes FAST and ISR tokens in the same step, and no
 * version is ever given twice. */
static void test_fast_cas_race(void **state)
{
	(void)state;
	struct conn a, b;
	struct rcopy ra = { 0 }, rb = { 0 }, r = { 0 };
	conn_open(&a);
	conn_open(&b);
	RS_CMD(a.rp, a.fd, &r, "FCALL", "tether_fast_get", "1", FAST, "ua1");
	is_ok(&r);
	assert_int_equal(r.el[0].integer, 0);
	assert_int_equal(r.el[1].type, REDIS_REPLY_NIL);

	const char *wa[] = { "FCALL", "tether_fast_cas", "1", FAST, "ua1", "0", "slots-A", "600000", "16" };
	const char *wb[] = { "FCALL", "tether_fast_cas", "1", FAST, "ua1", "0", "slots-B", "600000", "16" };
	size_t l[9];
	for (int k = 0; k < 9; k++)
		l[k] = strlen(wa[k]);
	assert_int_equal(rproto_command(a.rp, 9, wa, l, rcopy_cb, &ra, 0, NULL), 0);
	assert_int_equal(rproto_command(b.rp, 9, wb, l, rcopy_cb, &rb, 0, NULL), 0);
	assert_int_equal(rs_flush(a.rp, a.fd), 0);
	assert_int_equal(rs_flush(b.rp, b.fd), 0);
	assert_int_equal(rs_run(a.rp, a.fd, NULL), 0);
	assert_int_equal(rs_run(b.rp, b.fd, NULL), 0);
	assert_true(!ra.err != !rb.err);
	struct rcopy *win = ra.err ? &rb : &ra, *lose = ra.err ? &ra : &rb;
	long long v = win->el[0].integer;
	assert_true(v > 0);
	char want[32];
	snprintf(want, sizeof(want), "ESTALE %lld", v);
	is_err(lose, want);
	RS_CMD(a.rp, a.fd, &r, "FCALL", "tether_fast_get", "1", FAST, "ua1");
	assert_int_equal(r.el[0].integer, v);
	assert_string_equal(r.el[1].str, win == &ra ? "slots-A" : "slots-B");

	/* Rotation on the version read. */
	char vs[32];
	snprintf(vs, sizeof(vs), "%lld", v);
	RS_CMD(a.rp, a.fd, &r, "FCALL", "tether_fast_cas", "1", FAST, "ua1", vs, "slots-C", "600000", "16");
	is_ok(&r);
	long long v2 = r.el[0].integer;
	assert_true(v2 > v);

	/* A password change: FAST and ISR tokens go in the same function. */
	create_s1(&a);
	RS_CMD(a.rp, a.fd, &r, "FCALL", "tether_sm_set_isr", "2", REC("S1"), ISR, "S1", "1", "SEALED");
	is_ok(&r);
	RS_CMD(a.rp, a.fd, &r, "FCALL", "tether_user_put", "3", USER, FAST, ISR, "salt", "NaCl", "iter", "4096");
	is_ok(&r);
	RS_CMD(a.rp, a.fd, &r, "FCALL", "tether_fast_get", "1", FAST, "ua1");
	assert_int_equal(r.el[0].integer, 0);
	RS_CMD(a.rp, a.fd, &r, "FCALL", "tether_sm_isr_get", "2", REC("S1"), ISR, "S1");
	assert_int_equal(r.type, REDIS_REPLY_NIL);
	/* A CAS based on a read from before fails... */
	snprintf(vs, sizeof(vs), "%lld", v2);
	RS_CMD(a.rp, a.fd, &r, "FCALL", "tether_fast_cas", "1", FAST, "ua1", vs, "slots-D", "600000", "16");
	is_err(&r, "ESTALE 0");
	/* ...and a new entry gets a version never used before. */
	RS_CMD(a.rp, a.fd, &r, "FCALL", "tether_fast_cas", "1", FAST, "ua1", "0", "slots-E", "600000", "16");
	is_ok(&r);
	assert_true(r.el[0].integer > v2);
	/* Delete: version 0 again, and a CAS on the old version fails. */
	snprintf(vs, sizeof(vs), "%lld", r.el[0].integer);
	RS_CMD(a.rp, a.fd, &r, "FCALL", "tether_fast_cas", "1", FAST, "ua1", vs, "", "600000", "16");
	is_ok(&r);
	assert_int_equal(r.el[0].integer, 0);
	RS_CMD(a.rp, a.fd, &r, "FCALL", "tether_fast_cas", "1", FAST, "ua1", vs, "x", "600000", "16");
	is_err(&r, "ESTALE 0");
	rcopy_clear(&ra);
	rcopy_clear(&rb);
	rcopy_clear(&r);
	conn_close(&a);
	conn_close(&b);
}

/* The cap: a write that makes a new entry evicts the least recently
 * written beyond it (a rewrite refreshes an entry); writes sweep entries
 * whose last token expired, whatever the cap. */
static void test_fast_cap(void **state)
{
	(void)state;
	struct conn a;
	struct rcopy r = { 0 };
	conn_open(&a);
	const char *ua[] = { "ua0", "ua1", "ua2", "ua3" };
	long long ver[4];
	for (int i = 0; i < 3; i++) {
		RS_CMD(a.rp, a.fd, &r, "FCALL", "tether_fast_cas", "1", FAST, ua[i], "0", "s", "600000", "3");
		is_ok(&r);
		ver[i] = r.el[0].integer;
		assert_int_equal(r.el[1].integer, 0);
	}
	/* ua0 used again: now ua1 is the oldest. */
	char vs[32];
	snprintf(vs, sizeof(vs), "%lld", ver[0]);
	RS_CMD(a.rp, a.fd, &r, "FCALL", "tether_fast_cas", "1", FAST, "ua0", vs, "s2", "600000", "3");
	is_ok(&r);
	assert_int_equal(r.el[1].integer, 0);
	RS_CMD(a.rp, a.fd, &r, "FCALL", "tether_fast_cas", "1", FAST, ua[3], "0", "s", "600000", "3");
	is_ok(&r);
	assert_int_equal(r.el[1].integer, 1);
	RS_CMD(a.rp, a.fd, &r, "FCALL", "tether_fast_get", "1", FAST, "ua1");
	assert_int_equal(r.el[0].integer, 0);
	for (int i = 0; i < 4; i++) {
		if (i == 1)
			continue;
		RS_CMD(a.rp, a.fd, &r, "FCALL", "tether_fast_get", "1", FAST, ua[i]);
		assert_true(r.el[0].integer > 0);
	}
	/* Expired entries go at the next write of the account, not counted. */
	RS_CMD(a.rp, a.fd, &r, "FCALL", "tether_fast_cas", "1", FAST, "dead", "0", "s", "0", "0");
	is_ok(&r);
	RS_CMD(a.rp, a.fd, &r, "FCALL", "tether_fast_cas", "1", FAST, "ua1", "0", "s", "600000", "0");
	is_ok(&r);
	assert_int_equal(r.el[1].integer, 0);
	RS_CMD(a.rp, a.fd, &r, "FCALL", "tether_fast_get", "1", FAST, "dead");
	assert_int_equal(r.el[0].integer, 0);
	RS_CMD(a.rp, a.fd, &r, "HLEN", FAST);
	assert_int_equal(r.integer, 1 + 3 * 4); /* "v" and four entries */
	/* A missing cap is an error, not "no cap". */
	RS_CMD(a.rp, a.fd, &r, "FCALL", "tether_fast_cas", "1", FAST, "ua9", "0", "s");
	is_err(&r, "EINVAL not a number");
	rcopy_clear(&r);
	conn_close(&a);
}

static void test_users(void **state)
{
	(void)state;
	struct conn c;
	struct rcopy r = { 0 };
	conn_open(&c);
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_user_get", "1", USER);
	is_ok(&r);
	assert_int_equal(r.n, 0);
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_user_put", "3", USER, FAST, ISR, "salt", "s1", "iter", "4096");
	is_ok(&r);
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_user_put", "3", USER, FAST, ISR, "salt", "s2");
	is_ok(&r);
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_user_get", "1", USER);
	assert_int_equal(r.n, 2); /* replaced, not merged */
	assert_string_equal(r.el[1].str, "s2");
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_user_put", "3", USER, FAST, ISR, "odd");
	is_err(&r, "EINVAL");
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_user_del", "3", USER, FAST, ISR);
	is_ok(&r);
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_user_del", "3", USER, FAST, ISR);
	is_err(&r, "ENOENT");
	/* Read-only functions run on FCALL_RO (replicas). */
	RS_CMD(c.rp, c.fd, &r, "FCALL_RO", "tether_user_get", "1", USER);
	is_ok(&r);
	RS_CMD(c.rp, c.fd, &r, "FCALL_RO", "tether_user_put", "3", USER, FAST, ISR, "a", "b");
	assert_ptr_equal(r.err, rproto_err_reply);
	rcopy_clear(&r);
	conn_close(&c);
}

static void test_leases(void **state)
{
	(void)state;
	struct conn c;
	struct rcopy r = { 0 };
	const char *L = "t:{node:a}:lease";
	conn_open(&c);
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_lease_acquire", "1", L, "a#1", "10000");
	is_ok(&r);
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_lease_acquire", "1", L, "a#1", "10000");
	is_ok(&r); /* ours: renewed */
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_lease_acquire", "1", L, "a#2", "10000");
	is_err(&r, "EBUSY a#1 ");
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_lease_renew", "1", L, "a#2", "10000");
	is_err(&r, "ESTALE a#1");
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_lease_release", "1", L, "a#2");
	assert_int_equal(r.integer, 0);
	RS_CMD(c.rp, c.fd, &r, "EXISTS", L);
	assert_int_equal(r.integer, 1);
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_lease_release", "1", L, "a#1");
	assert_int_equal(r.integer, 1);
	/* A lease not renewed runs out, and another may take it. */
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_lease_acquire", "1", L, "a#1", "100");
	is_ok(&r);
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_lease_renew", "1", L, "a#1", "100");
	is_ok(&r);
	usleep(250000);
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_lease_renew", "1", L, "a#1", "100");
	is_err(&r, "ESTALE");
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_lease_acquire", "1", L, "a#2", "10000");
	is_ok(&r);
	rcopy_clear(&r);
	conn_close(&c);
}

/* The library survives FUNCTION LOAD REPLACE (data untouched) and a restart
 * of redis-server with AOF (functions are persisted with the data). */
static void test_survives_reload_and_restart(void **state)
{
	(void)state;
	struct conn c;
	struct rcopy r = { 0 };
	conn_open(&c);
	create_s1(&c);
	assert_int_equal(load_lib(&c), 0);
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_sm_append", "2", REC("S1"), Q("S1"), "1", "<kept/>", "0");
	is_ok(&r);
	conn_close(&c);

	rs_stop(&srv);
	rs_start(&srv, 1);
	conn_open(&c);
	RS_CMD(c.rp, c.fd, &r, "FUNCTION", "LIST", "LIBRARYNAME", "tether");
	is_ok(&r);
	assert_int_equal(r.n, 1);
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_sm_take", "3", REC("S1"), Q("S1"), ISR, "S1", "B", "");
	is_ok(&r);
	assert_int_equal(r.el[1].n, 1);
	assert_non_null(strstr(r.el[1].el[0].str, "<kept/>"));
	rcopy_clear(&r);
	conn_close(&c);
}

static char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	char *buf = malloc(1 << 20);
	if (!buf) {
		fclose(f);
		return NULL;
	}
	*len = fread(buf, 1, (1 << 20) - 1, f);
	buf[*len] = 0;
	fclose(f);
	return buf;
}

/* The extensions the asynchronous backend uses: an append's meta part
 * lands between the entry's header and its payload; create takes the
 * presence; sm_release hands back a session taken by nobody, only if the
 * epoch given is still the session's. */
static void test_meta_presence_release(void **state)
{
	(void)state;
	struct conn c;
	struct rcopy r = { 0 };
	conn_open(&c);
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_sm_create", "2", REC("S1"), DIR, "S1", "A/0/1/1",
	       "phone", "300", "1", "-3");
	is_ok(&r);
	RS_CMD(c.rp, c.fd, &r, "HGET", DIR, "phone");
	assert_string_equal(r.str, "S1|1|-3");
	const char *argv[] = { "FCALL", "tether_sm_append", "2", REC("S1"), Q("S1"), "1", "<m/>", "0",
			       "0a\0b\0c\0d\0" };
	size_t lens[] = { 5, 16, 1, strlen(REC("S1")), strlen(Q("S1")), 1, 4, 1, 9 };
	assert_int_equal(rs_cmdv(c.rp, c.fd, &r, 9, argv, lens), 0);
	is_ok(&r);
	RS_CMD(c.rp, c.fd, &r, "LINDEX", Q("S1"), "0");
	const char *body = strchr(strchr(r.str, ':') + 1, ':') + 1;
	assert_int_equal(r.len - (size_t)(body - r.str), 13);
	assert_memory_equal(body, "0a\0b\0c\0d\0<m/>", 13);

	/* taken by B (epoch 2); released with a stale epoch: untouched */
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_sm_take", "3", REC("S1"), Q("S1"), ISR, "S1", "B/0/2/2", "");
	is_ok(&r);
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_sm_release", "1", REC("S1"), "1", "A/0/1/1");
	is_err(&r, "ESTALE");
	RS_CMD(c.rp, c.fd, &r, "HMGET", REC("S1"), "owner", "att", "exp");
	assert_string_equal(r.el[0].str, "B/0/2/2");
	assert_string_equal(r.el[1].str, "1");
	/* with the take's epoch: detached, owner A again, expiring in 300 s */
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_sm_release", "1", REC("S1"), "2", "A/0/1/1");
	is_ok(&r);
	RS_CMD(c.rp, c.fd, &r, "HMGET", REC("S1"), "owner", "att", "exp", "epoch");
	assert_string_equal(r.el[0].str, "A/0/1/1");
	assert_string_equal(r.el[1].str, "0");
	assert_true(strtoull(r.el[2].str, NULL, 10) > 1700000000000ull);
	assert_string_equal(r.el[3].str, "2");
	/* resumable by anyone: the next take gets epoch 3 */
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_sm_take", "3", REC("S1"), Q("S1"), ISR, "S1", "C/0/3/3", "");
	is_ok(&r);
	assert_int_equal(r.el[0].el[0].integer, 3);
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_sm_release", "1", REC("S9"), "1", "A/0/1/1");
	is_err(&r, "ENOENT");
	rcopy_clear(&r);
	conn_close(&c);
}

/* tether_deliver with ARGV[12], the sender: a JID alice blocks (itself, its
 * bare JID or its domain) reaches none of her sessions, and the sender's
 * count is written all the same; anyone else's stanza is appended. */
static void test_deliver_blocked(void **state)
{
	(void)state;
	struct conn c;
	struct rcopy r = { 0 };
	conn_open(&c);
	create_s1(&c);
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_sm_create", "2", "t:{bob@example.com}:s:B1",
	       "t:{bob@example.com}:dir", "B1", "A/0/2/1", "b", "300");
	is_ok(&r);
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_im_block", "1", B ":block", "add", "1000",
	       "bob@example.com", "evil.example", "carol@example.com/pc");
	is_ok(&r);
	static const struct { const char *from; int blocked; } cases[] = {
		{ "bob@example.com/b", 1 },          /* by its bare JID */
		{ "bob@example.com", 1 },
		{ "mallory@evil.example/x", 1 },     /* by its domain */
		{ "evil.example", 1 },
		{ "carol@example.com/pc", 1 },       /* by its full JID */
		{ "carol@example.com/phone", 0 },    /* another resource of carol's */
		{ "dave@example.com/d", 0 },
		{ "evil.example.org", 0 },
		{ "", 0 },                           /* nothing to check */
	};
	long long seq = 0;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_deliver", "2", DIR, "t:{bob@example.com}:s:B1",
		       "phone", "", "<m/>", "", "0", "0", "1", "7", "", "0", "0", cases[i].from);
		if (cases[i].blocked) {
			is_err(&r, "EACCES");
		} else {
			is_ok(&r);
			assert_int_equal(r.n, 1);
			assert_int_equal(r.el[0].el[1].integer, ++seq);
		}
		RS_CMD(c.rp, c.fd, &r, "LLEN", Q("S1"));
		assert_int_equal(r.integer, seq);
		RS_CMD(c.rp, c.fd, &r, "HGET", "t:{bob@example.com}:s:B1", "h_in");
		assert_string_equal(r.str, "7");           /* counted, blocked or not */
		RS_CMD(c.rp, c.fd, &r, "HSET", "t:{bob@example.com}:s:B1", "h_in", "0");
	}
	/* A stale sender is fenced before anything else, blocked or not. */
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_deliver", "2", DIR, "t:{bob@example.com}:s:B1",
	       "phone", "", "<m/>", "", "0", "0", "9", "7", "", "0", "0", "bob@example.com/b");
	is_err(&r, "ESTALE");
	/* Without ARGV[12] (an older caller): delivered, as before. */
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_deliver", "1", DIR, "phone", "", "<m/>");
	is_ok(&r);
	assert_int_equal(r.el[0].el[1].integer, ++seq);
	rcopy_clear(&r);
	conn_close(&c);
}

/* tether_im_off_move: alice's offline messages become entries of her
 * session's queue and leave offline storage in one step, numbered after
 * what was there, with the meta a delivery writes; a message from a JID
 * she blocks is dropped, her own never; a stale epoch moves nothing. */
static void test_offline_move(void **state)
{
	(void)state;
	struct conn c;
	struct rcopy r = { 0 };
	conn_open(&c);
	create_s1(&c);
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_sm_append", "2", REC("S1"), Q("S1"), "1", "<m0/>", "0");
	is_ok(&r);
	static const char *const recs[] = {
		"bob@example.com/b\x01id1\x01" "chat\x01<message>1</message>",
		"mallory@evil.example/x\x01\x01normal\x01<message>blocked</message>",
		"alice@example.com/pc\x01id3\x01" "chat\x01<message>own</message>",
		"not a record",
	};
	for (size_t i = 0; i < 4; i++) {
		RS_CMD(c.rp, c.fd, &r, "RPUSH", B ":off", recs[i]);
		is_ok(&r);
	}
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_im_block", "1", B ":block", "add", "1000",
	       "evil.example", "alice@example.com");
	is_ok(&r);
	const char *keys[] = { B ":off", REC("S1"), Q("S1"), B ":block" };
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_im_off_move", "4", keys[0], keys[1], keys[2], keys[3],
	       "2", "alice@example.com");
	is_err(&r, "ESTALE");                               /* not the owner's epoch */
	RS_CMD(c.rp, c.fd, &r, "LLEN", B ":off");
	assert_int_equal(r.integer, 4);                     /* untouched */
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_im_off_move", "4", keys[0], keys[1], keys[2], keys[3],
	       "1", "alice@example.com");
	is_ok(&r);
	assert_int_equal(r.n, 2);
	static const char meta1[] = "0bob@example.com/b\0alice@example.com\0id1\0chat\0<message>1</message>";
	const char *body = strchr(strchr(r.el[0].str, ':') + 1, ':') + 1;
	assert_true(!strncmp(r.el[0].str, "2:", 2));
	assert_int_equal(r.el[0].len - (size_t)(body - r.el[0].str), sizeof(meta1) - 1);
	assert_memory_equal(body, meta1, sizeof(meta1) - 1);
	assert_true(!strncmp(r.el[1].str, "3:", 2));
	assert_non_null(memmem(r.el[1].str, r.el[1].len, "own</message>", 13));
	RS_CMD(c.rp, c.fd, &r, "EXISTS", B ":off");
	assert_int_equal(r.integer, 0);                     /* gone from offline storage */
	RS_CMD(c.rp, c.fd, &r, "LLEN", Q("S1"));
	assert_int_equal(r.integer, 3);
	RS_CMD(c.rp, c.fd, &r, "HGET", REC("S1"), "out");
	assert_string_equal(r.str, "3");
	/* acknowledged like any entry: the queue's byte count goes back to 0 */
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_sm_ack", "2", REC("S1"), Q("S1"), "1", "3");
	is_ok(&r);
	RS_CMD(c.rp, c.fd, &r, "HGET", REC("S1"), "qb");
	assert_string_equal(r.str, "0");
	/* nothing stored: nothing moved */
	RS_CMD(c.rp, c.fd, &r, "FCALL", "tether_im_off_move", "4", keys[0], keys[1], keys[2], keys[3],
	       "1", "alice@example.com");
	is_ok(&r);
	assert_int_equal(r.n, 0);
	rcopy_clear(&r);
	conn_close(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_session_flow, setup),
		cmocka_unit_test_setup(test_wrap, setup),
		cmocka_unit_test_setup(test_destroy_fenced, setup),
		cmocka_unit_test_setup(test_expiry_redis_time, setup),
		cmocka_unit_test_setup(test_take_tells_dead_owner, setup),
		cmocka_unit_test_setup(test_isr_single_use, setup),
		cmocka_unit_test_setup(test_fast_cas_race, setup),
		cmocka_unit_test_setup(test_fast_cap, setup),
		cmocka_unit_test_setup(test_users, setup),
		cmocka_unit_test_setup(test_leases, setup),
		cmocka_unit_test_setup(test_meta_presence_release, setup),
		cmocka_unit_test_setup(test_survives_reload_and_restart, setup),
		cmocka_unit_test_setup(test_deliver_blocked, setup),
		cmocka_unit_test_setup(test_offline_move, setup),
	};
	lib = read_file(LIB_PATH, &lib_len);
	if (!lib) {
		fprintf(stderr, "cannot read %s (run from the repository root)\n", LIB_PATH);
		return 1;
	}
	/* AOF from the start: the restart test needs the data on disk. */
	rs_start(&srv, 1);
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	rs_destroy(&srv);
	free(lib);
	return rc;
}
