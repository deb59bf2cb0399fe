/* tests/unit/test_redis_proto.c - the sans-I/O Redis client against a real redis-server. */
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

static struct rserver srv;

/* ---- helpers ------------------------------------------------------------ */

/* Appends a one-line rendering of <r> to <s> (for comparing replays). */
static void render(const redisReply *r, char *s, size_t cap)
{
	size_t l = strlen(s);
	switch (r->type) {
	case REDIS_REPLY_ARRAY:
		snprintf(s + l, cap - l, "[");
		for (size_t i = 0; i < r->elements; i++)
			render(r->element[i], s, cap);
		l = strlen(s);
		snprintf(s + l, cap - l, "]");
		break;
	case REDIS_REPLY_INTEGER:
		snprintf(s + l, cap - l, "i%lld,", r->integer);
		break;
	case REDIS_REPLY_NIL:
		snprintf(s + l, cap - l, "nil,");
		break;
	default:
		snprintf(s + l, cap - l, "t%d:%.*s,", r->type, (int)r->len, r->str);
	}
}

struct log {
	char text[1 << 16];
	unsigned calls;
};

static void log_cb(const redisReply *r, const char *err, void *ud)
{
	struct log *lg = ud;
	size_t l = strlen(lg->text);
	lg->calls++;
	snprintf(lg->text + l, sizeof(lg->text) - l, "%s|", err ? err : "ok");
	if (r)
		render(r, lg->text, sizeof(lg->text));
	l = strlen(lg->text);
	snprintf(lg->text + l, sizeof(lg->text) - l, "\n");
}

static struct rproto *connect_rp(int *fd, const struct rproto_limits *lim)
{
	struct rproto *rp = rproto_new(lim);
	assert_non_null(rp);
	*fd = rs_connect(&srv);
	assert_true(*fd >= 0);
	return rp;
}

/* The mixed command set used for replays: every reply type. */
static const char *const mix[][4] = {
	{ "SET", "k:str", "hello", NULL },
	{ "GET", "k:str", NULL, NULL },
	{ "GET", "k:none", NULL, NULL },
	{ "DEL", "k:list", NULL, NULL },
	{ "RPUSH", "k:list", "a", "bb" },
	{ "LRANGE", "k:list", "0", "-1" },
	{ "INCRBY", "k:n", "-7", NULL },
	{ "HGET", "k:list", "x", NULL },                 /* WRONGTYPE error */
	{ "NOSUCHCOMMAND", NULL, NULL, NULL },           /* ERR unknown command */
	{ "EVAL", "return {1,{'a',{2,'x'}},false,'z'}", "0", NULL }, /* nested, nil */
	{ "PING", NULL, NULL, NULL },                    /* status */
	{ "LRANGE", "k:none", "0", "-1" },               /* empty array */
};
#define NMIX (sizeof(mix) / sizeof(mix[0]))

static void issue_mix(struct rproto *rp, struct log *lg)
{
	for (size_t i = 0; i < NMIX; i++) {
		int argc = 0;
		size_t lens[4];
		while (argc < 4 && mix[i][argc]) {
			lens[argc] = strlen(mix[i][argc]);
			argc++;
		}
		assert_int_equal(rproto_command(rp, argc, (const char **)mix[i], lens, log_cb, lg, 0, NULL), 0);
	}
}

/* ---- tests -------------------------------------------------------------- */

static void test_pipeline_1000(void **state)
{
	(void)state;
	int fd;
	struct rproto *rp = connect_rp(&fd, NULL);
	static struct rcopy r[1000];
	const char *del[] = { "DEL", "ctr" };
	size_t dl[] = { 3, 3 };
	struct rcopy d = { 0 };
	assert_int_equal(rs_cmdv(rp, fd, &d, 2, del, dl), 0);
	for (int i = 0; i < 1000; i++) {
		const char *argv[] = { "INCR", "ctr" };
		size_t lens[] = { 4, 3 };
		assert_int_equal(rproto_command(rp, 2, argv, lens, rcopy_cb, &r[i], now_ms() + 10000, NULL), 0);
	}
	assert_int_equal(rproto_pending(rp), 1000);
	/* All 1000 go out before any reply is read: true pipelining. */
	assert_int_equal(rs_flush(rp, fd), 0);
	assert_int_equal(rs_run(rp, fd, NULL), 0);
	for (int i = 0; i < 1000; i++) {
		assert_int_equal(r[i].called, 1);
		assert_null(r[i].err);
		assert_int_equal(r[i].type, REDIS_REPLY_INTEGER);
		assert_int_equal(r[i].integer, i + 1);
		rcopy_clear(&r[i]);
	}
	rcopy_clear(&d);
	rproto_free(rp);
	close(fd);
}

static void test_reply_types(void **state)
{
	(void)state;
	int fd;
	struct rproto *rp = connect_rp(&fd, NULL);
	struct rcopy c = { 0 };

	assert_int_equal(RS_CMD(rp, fd, &c, "SET", "a", "1"), 0);
	assert_int_equal(c.type, REDIS_REPLY_STATUS);
	assert_string_equal(c.str, "OK");
	assert_int_equal(RS_CMD(rp, fd, &c, "GET", "missing"), 0);
	assert_null(c.err);
	assert_int_equal(c.type, REDIS_REPLY_NIL);
	assert_int_equal(RS_CMD(rp, fd, &c, "INCR", "a"), 0);
	assert_int_equal(c.type, REDIS_REPLY_INTEGER);
	assert_int_equal(c.integer, 2);
	assert_int_equal(RS_CMD(rp, fd, &c, "EVAL", "return {1,'x',false,{3}}", "0"), 0);
	assert_int_equal(c.type, REDIS_REPLY_ARRAY);
	assert_int_equal(c.n, 4);
	assert_int_equal(c.el[0].integer, 1);
	assert_string_equal(c.el[1].str, "x");
	assert_int_equal(c.el[2].type, REDIS_REPLY_NIL);
	assert_int_equal(c.el[3].el[0].integer, 3);
	/* An error reply: err says so, the reply carries the text. */
	assert_int_equal(RS_CMD(rp, fd, &c, "LPUSH", "a", "x"), 0);
	assert_ptr_equal(c.err, rproto_err_reply);
	assert_int_equal(c.type, REDIS_REPLY_ERROR);
	assert_true(!strncmp(c.str, "WRONGTYPE", 9));
	/* Binary-safe arguments and replies. */
	const char *argv[] = { "SET", "bin", "a\0b\r\nc" };
	size_t lens[] = { 3, 3, 6 };
	assert_int_equal(rs_cmdv(rp, fd, &c, 3, argv, lens), 0);
	assert_int_equal(RS_CMD(rp, fd, &c, "GET", "bin"), 0);
	assert_int_equal(c.len, 6);
	assert_memory_equal(c.str, "a\0b\r\nc", 6);
	rcopy_clear(&c);
	rproto_free(rp);
	close(fd);
}

/* The replies to the mixed set, recorded raw, then replayed into fresh
 * rprotos byte by byte and at every split point: the same callbacks with
 * the same results every time. */
static void test_every_split(void **state)
{
	(void)state;
	int fd;
	struct rproto *rp = connect_rp(&fd, NULL);
	static struct log ref, got;
	struct tap tap = { 0 };

	memset(&ref, 0, sizeof(ref));
	issue_mix(rp, &ref);
	assert_int_equal(rs_run(rp, fd, &tap), 0);
	assert_int_equal(ref.calls, NMIX);
	assert_non_null(strstr(ref.text, "WRONGTYPE"));
	assert_non_null(strstr(ref.text, "[i1,[t1:a,[i2,t1:x,]]nil,t1:z,]"));
	rproto_free(rp);
	close(fd);

	/* byte by byte */
	rp = rproto_new(NULL);
	memset(&got, 0, sizeof(got));
	issue_mix(rp, &got);
	for (size_t i = 0; i < tap.len; i++) {
		assert_int_equal(rproto_feed(rp, tap.buf + i, 1), RPROTO_FEED_OK);
		if (i + 1 < tap.len)
			assert_true(got.calls < NMIX);
	}
	assert_string_equal(got.text, ref.text);
	rproto_free(rp);

	/* every split in two */
	for (size_t k = 0; k <= tap.len; k++) {
		rp = rproto_new(NULL);
		memset(&got, 0, sizeof(got));
		issue_mix(rp, &got);
		assert_int_equal(rproto_feed(rp, tap.buf, k), RPROTO_FEED_OK);
		assert_int_equal(rproto_feed(rp, tap.buf + k, tap.len - k), RPROTO_FEED_OK);
		assert_string_equal(got.text, ref.text);
		assert_int_equal(rproto_pending(rp), 0);
		rproto_free(rp);
	}
	free(tap.buf);
}

/* A cancel that frees the context of a later command, as a closing
 * connection would: the later callback must not run. */
struct canceller {
	struct rproto *rp;
	uint64_t victim;
	int calls;
};
static void cancel_cb(const redisReply *r, const char *err, void *ud)
{
	(void)r;
	(void)err;
	struct canceller *c = ud;
	c->calls++;
	if (c->victim)
		assert_int_equal(rproto_cancel(c->rp, c->victim), 0);
}
static void must_not_run(const redisReply *r, const char *err, void *ud)
{
	(void)r;
	(void)err;
	(void)ud;
	fail_msg("a cancelled command's callback ran");
}

static void test_cancel(void **state)
{
	(void)state;
	int fd;
	struct rproto *rp = connect_rp(&fd, NULL);
	struct rcopy a = { 0 }, c = { 0 };
	uint64_t h1, h2, h3;
	const char *g1[] = { "ECHO", "one" }, *g2[] = { "ECHO", "two" }, *g3[] = { "ECHO", "three" };
	size_t l1[] = { 4, 3 }, l2[] = { 4, 3 }, l3[] = { 4, 5 };

	assert_int_equal(rproto_command(rp, 2, g1, l1, rcopy_cb, &a, 0, &h1), 0);
	assert_int_equal(rproto_command(rp, 2, g2, l2, must_not_run, NULL, 0, &h2), 0);
	assert_int_equal(rproto_command(rp, 2, g3, l3, rcopy_cb, &c, 0, &h3), 0);
	assert_true(h1 < h2 && h2 < h3);
	assert_int_equal(rproto_cancel(rp, h2), 0);
	assert_int_equal(rproto_cancel(rp, h2), -ENOENT);
	assert_int_equal(rproto_pending(rp), 3); /* its reply is still due */
	assert_int_equal(rs_run(rp, fd, NULL), 0);
	assert_string_equal(a.str, "one");
	assert_string_equal(c.str, "three"); /* not "two": no misattribution */
	assert_int_equal(rproto_cancel(rp, h1), -ENOENT); /* completed */
	assert_int_equal(rproto_cancel(rp, 9999), -ENOENT); /* never issued */

	/* Cancelled from inside an earlier callback. */
	struct canceller k = { .rp = rp };
	assert_int_equal(rproto_command(rp, 2, g1, l1, cancel_cb, &k, 0, NULL), 0);
	assert_int_equal(rproto_command(rp, 2, g2, l2, must_not_run, NULL, 0, &k.victim), 0);
	assert_int_equal(rproto_command(rp, 2, g3, l3, rcopy_cb, &c, 0, NULL), 0);
	assert_int_equal(rs_run(rp, fd, NULL), 0);
	assert_int_equal(k.calls, 1);
	assert_string_equal(c.str, "three");
	rcopy_clear(&a);
	rcopy_clear(&c);
	rproto_free(rp);
	close(fd);
}

static void test_timeout(void **state)
{
	(void)state;
	int fd;
	struct rproto *rp = connect_rp(&fd, NULL);
	struct rcopy slow = { 0 }, after = { 0 }, c = { 0 };
	const char *blpop[] = { "BLPOP", "nothing-here", "0.3" };
	size_t bl[] = { 5, 12, 3 };
	const char *ping[] = { "PING" };
	size_t pl[] = { 4 };
	uint64_t t0 = now_ms();

	/* A slow command with a short deadline, and one behind it with a long one. */
	assert_int_equal(rproto_command(rp, 3, blpop, bl, rcopy_cb, &slow, t0 + 50, NULL), 0);
	assert_int_equal(rproto_command(rp, 1, ping, pl, rcopy_cb, &after, t0 + 100000, NULL), 0);
	assert_int_equal(rproto_next_deadline(rp), t0 + 50);
	assert_int_equal(rs_flush(rp, fd), 0);
	assert_int_equal(rproto_expire(rp, t0 + 49), 0);
	assert_int_equal(slow.called, 0);
	assert_int_equal(rproto_expire(rp, t0 + 50), 1);
	assert_ptr_equal(slow.err, rproto_err_timeout);
	assert_ptr_equal(after.err, rproto_err_closed);
	assert_int_equal(after.called, 1);
	assert_true(rproto_broken(rp));
	assert_int_equal(rproto_pending(rp), 0);
	assert_int_equal(rproto_next_deadline(rp), 0);
	assert_int_equal(rproto_command(rp, 1, ping, pl, rcopy_cb, &c, 0, NULL), -EPIPE);
	/* The late replies arrive: ignored, they would be misattributed. */
	usleep(400000);
	char buf[256];
	ssize_t n = recv(fd, buf, sizeof(buf), 0);
	assert_true(n > 0);
	assert_int_equal(rproto_feed(rp, buf, (size_t)n), RPROTO_FEED_ERR);
	assert_int_equal(after.called, 1);
	/* The caller reconnects. */
	close(fd);
	rproto_reset(rp, NULL);
	assert_false(rproto_broken(rp));
	fd = rs_connect(&srv);
	assert_int_equal(RS_CMD(rp, fd, &c, "PING"), 0);
	assert_string_equal(c.str, "PONG");
	rcopy_clear(&slow);
	rcopy_clear(&after);
	rcopy_clear(&c);
	rproto_free(rp);
	close(fd);
}

struct reissuer {
	struct rproto *rp;
	struct rcopy *out;
	const char *err;
};
static void reissue_cb(const redisReply *r, const char *err, void *ud)
{
	struct reissuer *x = ud;
	const char *ping[] = { "ECHO", "again" };
	size_t pl[] = { 4, 5 };
	assert_null(r);
	x->err = err;
	assert_int_equal(rproto_command(x->rp, 2, ping, pl, rcopy_cb, x->out, 0, NULL), 0);
}

static void test_reset(void **state)
{
	(void)state;
	int fd;
	struct rproto *rp = connect_rp(&fd, NULL);
	struct rcopy a = { 0 }, again = { 0 };
	const char *ping[] = { "PING" };
	size_t pl[] = { 4 };
	struct reissuer x = { .rp = rp, .out = &again };
	struct canceller k = { .rp = rp };

	assert_int_equal(rproto_command(rp, 1, ping, pl, rcopy_cb, &a, 0, NULL), 0);
	assert_int_equal(rproto_command(rp, 1, ping, pl, cancel_cb, &k, 0, NULL), 0);
	assert_int_equal(rproto_command(rp, 1, ping, pl, must_not_run, NULL, 0, &k.victim), 0);
	assert_int_equal(rproto_command(rp, 1, ping, pl, reissue_cb, &x, 0, NULL), 0);
	assert_true(rproto_out_pending(rp) > 0);
	/* Half a reply from the old connection must not leak into the new one. */
	assert_int_equal(rproto_feed(rp, "+PO", 3), RPROTO_FEED_OK);
	rproto_reset(rp, rproto_err_closed);
	assert_ptr_equal(a.err, rproto_err_closed);
	assert_int_equal(k.calls, 1);
	assert_ptr_equal(x.err, rproto_err_closed);
	/* The command issued from the callback belongs to the new connection. */
	assert_int_equal(rproto_pending(rp), 1);
	assert_int_equal(again.called, 0);
	assert_int_equal(rs_run(rp, fd, NULL), 0);
	assert_string_equal(again.str, "again");
	rcopy_clear(&a);
	rcopy_clear(&again);
	rproto_free(rp);
	close(fd);
}

static void test_limits(void **state)
{
	(void)state;
	int fd;
	struct rproto_limits lim = { .max_out = 256, .max_reply = 1024, .max_pending = 4 };
	struct rproto *rp = connect_rp(&fd, &lim);
	struct rcopy c = { 0 };
	char big[2000];
	const char *argv[] = { "SET", "big", big };
	size_t lens[] = { 3, 3, sizeof(big) };
	const char *ping[] = { "PING" };
	size_t pl[] = { 4 };

	memset(big, 'x', sizeof(big));
	/* Output limit: a command bigger than max_out is refused, nothing queued. */
	assert_int_equal(rproto_command(rp, 3, argv, lens, rcopy_cb, &c, 0, NULL), -ENOBUFS);
	assert_int_equal(rproto_pending(rp), 0);
	assert_int_equal(rproto_out_pending(rp), 0);
	/* Pending limit. */
	for (int i = 0; i < 4; i++)
		assert_int_equal(rproto_command(rp, 1, ping, pl, rcopy_cb, &c, 0, NULL), 0);
	assert_int_equal(rproto_command(rp, 1, ping, pl, rcopy_cb, &c, 0, NULL), -ENOBUFS);
	assert_int_equal(rs_run(rp, fd, NULL), 0);
	rproto_free(rp);
	close(fd);

	/* Reply limit: a 2000-byte value through a 1024-byte limit. */
	struct rproto *big_rp = connect_rp(&fd, NULL);
	assert_int_equal(rs_cmdv(big_rp, fd, &c, 3, argv, lens), 0);
	rproto_free(big_rp);
	close(fd);
	lim.max_out = 0;
	rp = connect_rp(&fd, &lim);
	RS_CMD(rp, fd, &c, "GET", "big");
	assert_int_equal(c.called, 1);
	assert_ptr_equal(c.err, rproto_err_toobig);
	assert_true(rproto_broken(rp));
	rproto_free(rp);
	close(fd);

	/* An array count that alone would make hiredis allocate 16 GB. */
	rp = rproto_new(&lim);
	assert_int_equal(rproto_command(rp, 1, ping, pl, rcopy_cb, &c, 0, NULL), 0);
	assert_int_equal(rproto_feed(rp, "*2000000000\r\n", 13), RPROTO_FEED_ERR);
	assert_ptr_equal(c.err, rproto_err_toobig);
	rproto_free(rp);
	/* Many small elements over the limit are caught by the byte count. */
	rp = rproto_new(&lim);
	assert_int_equal(rproto_command(rp, 1, ping, pl, rcopy_cb, &c, 0, NULL), 0);
	assert_int_equal(rproto_feed(rp, "*300\r\n", 6), RPROTO_FEED_OK);
	enum rproto_feed_result fr = RPROTO_FEED_OK;
	for (int i = 0; i < 300 && fr == RPROTO_FEED_OK; i++)
		fr = rproto_feed(rp, ":1\r\n", 4);
	assert_int_equal(fr, RPROTO_FEED_ERR);
	assert_ptr_equal(c.err, rproto_err_toobig);
	rproto_free(rp);
	rcopy_clear(&c);
}

static void test_bad_input(void **state)
{
	(void)state;
	struct rcopy c = { 0 };
	const char *ping[] = { "PING" };
	size_t pl[] = { 4 };
	/* A reply nobody asked for. */
	struct rproto *rp = rproto_new(NULL);
	assert_int_equal(rproto_feed(rp, "+OK\r\n", 5), RPROTO_FEED_ERR);
	assert_true(rproto_broken(rp));
	rproto_free(rp);
	/* Not RESP. */
	rp = rproto_new(NULL);
	assert_int_equal(rproto_command(rp, 1, ping, pl, rcopy_cb, &c, 0, NULL), 0);
	assert_int_equal(rproto_feed(rp, "HTTP/1.1 200 OK\r\n", 17), RPROTO_FEED_ERR);
	assert_ptr_equal(c.err, rproto_err_protocol);
	assert_int_equal(c.called, 1);
	/* Refused while broken; usable after a reset. */
	assert_int_equal(rproto_feed(rp, "+OK\r\n", 5), RPROTO_FEED_ERR);
	rproto_reset(rp, NULL);
	assert_int_equal(rproto_command(rp, 1, ping, pl, rcopy_cb, &c, 0, NULL), 0);
	assert_int_equal(rproto_feed(rp, "+PONG\r\n", 7), RPROTO_FEED_OK);
	assert_null(c.err);
	assert_string_equal(c.str, "PONG");
	assert_int_equal(rproto_command(rp, 0, ping, pl, rcopy_cb, &c, 0, NULL), -EINVAL);
	rproto_free(rp);
	rcopy_clear(&c);
}

/* Output bytes handed out stay where they are while more is appended (an
 * io_uring send may be in flight on them). */
static void test_out_stable(void **state)
{
	(void)state;
	struct rproto *rp = rproto_new(NULL);
	struct rcopy c = { 0 };
	const char *ping[] = { "ECHO", "0123456789" };
	size_t pl[] = { 4, 10 }, len, len2, one;

	assert_int_equal(rproto_command(rp, 2, ping, pl, rcopy_cb, &c, 0, NULL), 0);
	const char *p = rproto_out(rp, &len);
	char copy[64];
	assert_true(len < sizeof(copy));
	memcpy(copy, p, len);
	one = len;
	for (int i = 0; i < 5000; i++)
		assert_int_equal(rproto_command(rp, 2, ping, pl, rcopy_cb, &c, 0, NULL), 0);
	assert_memory_equal(p, copy, len);
	const char *p2 = rproto_out(rp, &len2);
	assert_ptr_equal(p, p2);
	assert_int_equal(rproto_out_pending(rp), one * 5001);
	size_t total = 0;
	while ((p = rproto_out(rp, &len))) {
		total += len;
		rproto_consumed(rp, len);
	}
	assert_int_equal(total, one * 5001);
	assert_true(len2 >= one);
	/* All sent; then a command bigger than a chunk must show. */
	static char big[40000];
	const char *argv[] = { "ECHO", big };
	size_t bl[] = { 4, sizeof(big) };
	assert_int_equal(rproto_command(rp, 2, argv, bl, rcopy_cb, &c, 0, NULL), 0);
	p = rproto_out(rp, &len);
	assert_non_null(p);
	assert_int_equal(len, rproto_out_pending(rp));
	assert_true(len > sizeof(big));
	rproto_free(rp);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pipeline_1000),
		cmocka_unit_test(test_reply_types),
		cmocka_unit_test(test_every_split),
		cmocka_unit_test(test_cancel),
		cmocka_unit_test(test_timeout),
		cmocka_unit_test(test_reset),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_bad_input),
		cmocka_unit_test(test_out_stable),
	};
	rs_start(&srv, 0);
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	rs_destroy(&srv);
	return rc;
}
