/* tests/unit/test_store.c - per-worker store handles: completions through
 * store_poll() only, in issue order, within the test delay; cancellation;
 * detach with operations pending. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "tether/rmsg.h"
#include "tether/scram.h"
#include "tether/store.h"

static char dir[256];

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/tether-store-async-XXXXXX");
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static struct store *open_ok(void)
{
	char err[256] = "";
	struct store *st = store_open("memory", dir, err, sizeof(err));
	if (!st)
		print_error("store_open: %s\n", err);
	assert_non_null(st);
	return st;
}

#define N 64

struct done {
	int calls;
	int order[N];        /* index of each completion, in completion order */
	int err[N];
	uint64_t turn[N];    /* the poll turn it completed in */
	uint8_t key0[N];     /* first byte of the stored key seen */
};

struct ctx {
	struct done *d;
	int idx;
	uint64_t *turn;
};

static void on_user(void *ud, int err, const struct user_creds *c)
{
	struct ctx *x = ud;
	struct done *d = x->d;
	assert_true(d->calls < N);
	d->order[d->calls] = x->idx;
	d->err[d->calls] = err;
	d->turn[d->calls] = *x->turn;
	d->key0[d->calls] = c ? c->stored_key_sha256[0] : 0;
	assert_true(err ? c == NULL : c != NULL);
	d->calls++;
}

/* Completions only in store_poll, in issue order, each within 1 + delay turns. */
static void run(unsigned delay)
{
	struct store *st = open_ok();
	struct user_creds c;
	assert_int_equal(scram_creds_derive("pw", 1, &c), 0);
	assert_int_equal(store_user_put(st, "alice@x", &c), 0);
	store_set_test_delay(st, delay);
	struct store_handle *h = store_attach(st, NULL);
	assert_non_null(h);
	struct done d = { 0 };
	struct ctx x[N];
	uint64_t turn = 0, issued[N];
	for (int i = 0; i < N; i++) {
		x[i] = (struct ctx){ .d = &d, .idx = i, .turn = &turn };
		issued[i] = turn;
		int before = d.calls;
		assert_non_null(store_user_get_async(h, i % 3 ? "alice@x" : "nobody@x", on_user, &x[i]));
		assert_int_equal(d.calls, before); /* nothing runs inside the call */
		if (i % 8 == 7) {
			turn++;
			store_poll(h);
		}
	}
	while (store_pending(h)) {
		turn++;
		store_poll(h);
		assert_true(turn < 1000);
	}
	assert_int_equal(d.calls, N);
	for (int i = 0; i < N; i++) {
		int k = d.order[i];
		assert_int_equal(k, i);                       /* issue order */
		assert_int_equal(d.err[i], k % 3 ? 0 : -ENOENT);
		if (k % 3)
			assert_int_equal(d.key0[i], c.stored_key_sha256[0]);
		assert_true(d.turn[i] >= issued[k] + 1);    /* never in the issuing turn */
		if (!delay)
			assert_true(d.turn[i] == issued[k] + 1);
	}
	store_detach(h);
	store_close(st);
}

static void test_no_delay(void **state)
{
	(void)state;
	run(0);
}

static void test_delay(void **state)
{
	(void)state;
	for (int i = 0; i < 20; i++)
		run(3);
}

/* A cancelled operation never calls back; a detach with operations still
 * pending calls nothing and leaks nothing (ASan build). */
static void test_cancel_and_detach(void **state)
{
	(void)state;
	struct store *st = open_ok();
	struct user_creds c;
	assert_int_equal(scram_creds_derive("pw", 1, &c), 0);
	assert_int_equal(store_user_put(st, "alice@x", &c), 0);
	store_set_test_delay(st, 3);
	struct store_handle *h = store_attach(st, NULL);
	struct done d = { 0 };
	uint64_t turn = 0;
	struct ctx x[4];
	struct store_op *op[4];
	for (int i = 0; i < 4; i++) {
		x[i] = (struct ctx){ .d = &d, .idx = i, .turn = &turn };
		op[i] = store_user_get_async(h, "alice@x", on_user, &x[i]);
		assert_non_null(op[i]);
	}
	assert_int_equal(store_pending(h), 4);
	store_op_cancel(op[1]);
	store_op_cancel(op[2]);
	assert_int_equal(store_pending(h), 2);
	while (store_pending(h)) {
		turn++;
		store_poll(h);
	}
	assert_int_equal(d.calls, 2);
	assert_int_equal(d.order[0], 0);
	assert_int_equal(d.order[1], 3);

	for (int i = 0; i < 4; i++)
		assert_non_null(store_user_get_async(h, "alice@x", on_user, &x[i]));
	store_detach(h);                  /* pending: dropped without callbacks */
	assert_int_equal(d.calls, 2);
	store_close(st);
}

/* A callback may issue the next operation: it completes at a later turn,
 * not inside the same poll. */
struct chain {
	struct store_handle *h;
	int left;
	uint64_t *turn, last;
};

static void on_chain(void *ud, int err, const struct user_creds *c)
{
	struct chain *ch = ud;
	(void)c;
	assert_int_equal(err, 0);
	assert_true(*ch->turn > ch->last);
	ch->last = *ch->turn;
	if (--ch->left)
		assert_non_null(store_user_get_async(ch->h, "alice@x", on_chain, ch));
}

static void test_chain(void **state)
{
	(void)state;
	struct store *st = open_ok();
	struct user_creds c;
	assert_int_equal(scram_creds_derive("pw", 1, &c), 0);
	assert_int_equal(store_user_put(st, "alice@x", &c), 0);
	struct store_handle *h = store_attach(st, NULL);
	uint64_t turn = 0;
	struct chain ch = { .h = h, .left = 5, .turn = &turn };
	assert_non_null(store_user_get_async(h, "alice@x", on_chain, &ch));
	while (store_pending(h)) {
		turn++;
		assert_true(store_poll(h) <= 1);
	}
	assert_int_equal(ch.left, 0);
	assert_int_equal(turn, 5);
	store_detach(h);
	store_close(st);
}

/* ---- the owner's writes -------------------------------------------------- */

struct wlog {
	int n;
	int err[N];
	uint32_t seq[N];       /* append: the entry's number */
	int owner_known[N];
};

static void on_write(void *ud, int err, const struct bus_addr *owner, const struct sm_entry *e)
{
	struct wlog *l = ud;
	assert_true(l->n < N);
	l->err[l->n] = err;
	l->seq[l->n] = e ? e->seq : 0;
	l->owner_known[l->n] = owner != NULL;
	l->n++;
}

static struct wlog drained_log;
static size_t drained_n;

static void on_drain(void *ud, int err, const struct sm_record *rec, const char *bare,
		     const char *resource, struct sm_entry *q, size_t n)
{
	(void)ud; (void)rec; (void)bare; (void)resource;
	drained_log.err[drained_log.n++] = err;
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(q[i].seq, i + 1);
		rmsg_unref(q[i].msg);
	}
	drained_n = n;
}

static void on_take(void *ud, int err, const struct sm_record *rec, const char *resource,
		    const struct sm_entry *q, size_t n, const uint8_t *resp)
{
	(void)rec; (void)resource; (void)q; (void)resp;
	int *got = ud;
	*got = err ? err : (int)n;
}

static void poll_all(struct store_handle *h)
{
	for (int i = 0; i < 16 && store_pending(h); i++)
		store_poll(h);
	assert_int_equal(store_pending(h), 0);
}

/* Writes complete in order, later; an owner that was taken over gets
 * -ESTALE with the new owner; cancelled callbacks do not run but their
 * writes happened; destroy hands over the queue. */
static void test_writes(void **state)
{
	(void)state;
	struct store *st = open_ok();
	store_set_test_delay(st, 2);
	struct store_handle *h = store_attach(st, NULL);
	assert_non_null(h);
	struct sm_record rec = { .epoch = 1, .max = 60, .attached = 1,
				 .owner = { .slot = 1, .gen = 1 } };
	memset(rec.id, 'a', SM_ID_LEN);
	struct wlog l = { 0 };
	assert_non_null(store_sm_create_async(h, &rec, "a@x", "r", on_write, &l));
	for (int i = 0; i < 3; i++) {
		struct rmsg *m = rmsg_new(RMSG_MESSAGE, "<message/>", 10, "", "", "", "");
		struct sm_entry e = { .seq = (uint32_t)i + 1, .msg = m };
		assert_non_null(store_sm_append_async(h, rec.id, 1, &e, on_write, &l));
		rmsg_unref(m); /* the operation holds its own */
	}
	assert_int_equal(l.n, 0); /* never inside the call */
	poll_all(h);
	assert_int_equal(l.n, 4);
	for (int i = 0; i < 4; i++)
		assert_int_equal(l.err[i], 0);
	assert_int_equal(l.seq[1], 1);
	assert_int_equal(l.seq[3], 3);

	/* Another stream takes it over: the old owner's writes are fenced. */
	int got = -1;
	struct bus_addr b = { .slot = 2, .gen = 1 };
	assert_non_null(store_sm_take_async(h, rec.id, "a@x", &b, NULL, on_take, &got));
	poll_all(h);
	assert_int_equal(got, 3);
	struct rmsg *m = rmsg_new(RMSG_MESSAGE, "<message/>", 10, "", "", "", "");
	struct sm_entry e = { .seq = 4, .msg = m };
	assert_non_null(store_sm_append_async(h, rec.id, 1, &e, on_write, &l));
	assert_non_null(store_sm_ack_async(h, rec.id, 1, 1, on_write, &l));
	poll_all(h);
	assert_int_equal(l.err[4], -ESTALE);
	assert_true(l.owner_known[4]);
	assert_int_equal(l.err[5], -ESTALE);

	/* Cancelled by context: no callback, but the write happened. */
	e.seq = 4;
	assert_non_null(store_sm_append_async(h, rec.id, 2, &e, on_write, &l));
	rmsg_unref(m);
	store_cancel_ud(h, &l);
	poll_all(h);
	assert_int_equal(l.n, 6);
	assert_non_null(store_sm_destroy_async(h, rec.id, 2, on_drain, NULL));
	poll_all(h);
	assert_int_equal(drained_log.err[0], 0);
	assert_int_equal(drained_n, 4);
	store_detach(h);
	store_close(st);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_no_delay, setup, teardown),
		cmocka_unit_test_setup_teardown(test_delay, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cancel_and_detach, setup, teardown),
		cmocka_unit_test_setup_teardown(test_chain, setup, teardown),
		cmocka_unit_test_setup_teardown(test_writes, setup, teardown),
	};
	if (sodium_init() < 0)
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
