/* tests/unit/test_store_sm.c - the memory backend's XEP-0198 session table
 * (records, queues, epochs, takeover, destroy, ISR tokens) and FAST token
 * table; token revocation when another process changes or deletes a user.
 *
 * memory_sm.c is included so the tests can look at a queue's capacity
 * (memory given back on a full ack); its object is then not linked. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../store/memory_sm.c"

#include "tether/ht.h"
#include "tether/rmsg.h"
#include "tether/scram.h"
#include "tether/store.h"
#include "tether/token.h"

/* ------------------------------------------------------------- helpers */

/* The sealed ISR token of the last sm_table_peek (kept beside the record). */
static uint8_t peeked[TOKEN_SEALED_LEN];

static unsigned refs(struct rmsg *m)
{
	return atomic_load(&m->refs);
}

static struct rmsg *msg(unsigned i)
{
	char data[64], id[16];
	int n = snprintf(data, sizeof(data), "<message id='m%u'><body>%u</body></message>", i, i);
	snprintf(id, sizeof(id), "m%u", i);
	struct rmsg *m = rmsg_new(RMSG_MESSAGE, data, (size_t)n, "bob@x/r", "alice@x/r", id, "chat");
	assert_non_null(m);
	return m;
}

static void rec_init(struct sm_record *r, const char *id, uint32_t epoch, uint32_t out)
{
	memset(r, 0, sizeof(*r));
	snprintf(r->id, sizeof(r->id), "%s", id);
	r->owner = (struct bus_addr){ .worker = 1, .slot = 10, .gen = 100 };
	r->epoch = epoch;
	r->c.out = r->c.acked = out;
	r->max = 300;
	r->attached = 1;
	r->expires_ms = 0;
}

/* Capacity of the ring of session <id> (memory_sm.c internals). */
static size_t cap_of(struct sm_table *t, const char *id)
{
	struct msess *m;
	struct shtab_stripe *s = lock_find(t, id, &m);
	size_t cap = m ? m->cap : 0;
	shtab_unlock(s);
	return cap;
}

static int append(struct sm_table *t, const char *id, uint32_t epoch, uint32_t seq, struct rmsg *m)
{
	struct sm_entry e = { .seq = seq, .stamp_ms = 1000 + seq, .msg = m };
	return sm_table_append(t, id, epoch, &e, NULL);
}

/* What a take or destroy callback saw. */
#define SEEN_MAX 64
struct seen {
	int calls, err;
	int has_rec;
	struct sm_record rec;
	char bare[64], resource[64];
	size_t n;
	uint32_t seq[SEEN_MAX];
	struct rmsg *msg[SEEN_MAX];
	unsigned refs_during[SEEN_MAX];
};

static void on_take(void *ud, int err, const struct sm_record *rec, const char *resource,
		    const struct sm_entry *q, size_t n)
{
	struct seen *s = ud;
	s->calls++;
	s->err = err;
	s->has_rec = rec != NULL;
	if (rec)
		s->rec = *rec;
	snprintf(s->resource, sizeof(s->resource), "%s", resource ? resource : "");
	s->n = n;
	assert_true(n <= SEEN_MAX);
	for (size_t i = 0; i < n; i++) {
		s->seq[i] = q[i].seq;
		s->msg[i] = q[i].msg;
		s->refs_during[i] = refs(q[i].msg);
	}
}

/* Takes over the references, as a real drain must. */
static void on_drain(void *ud, int err, const struct sm_record *rec, const char *bare,
		     const char *resource, struct sm_entry *q, size_t n)
{
	struct seen *s = ud;
	s->calls++;
	s->err = err;
	s->has_rec = rec != NULL;
	if (rec)
		s->rec = *rec;
	snprintf(s->bare, sizeof(s->bare), "%s", bare ? bare : "");
	snprintf(s->resource, sizeof(s->resource), "%s", resource ? resource : "");
	s->n = n;
	assert_true(n <= SEEN_MAX);
	for (size_t i = 0; i < n; i++) {
		s->seq[i] = q[i].seq;
		s->msg[i] = q[i].msg;
		s->refs_during[i] = refs(q[i].msg);
		rmsg_unref(q[i].msg);
	}
}

static const struct bus_addr owner_b = { .worker = 2, .slot = 20, .gen = 200 };

/* ------------------------------------------------------ create / append */

static void test_create_duplicate(void **state)
{
	(void)state;
	struct sm_table *t = sm_table_new();
	struct sm_record r, got;
	assert_non_null(t);
	rec_init(&r, "AAAAAAAAAAAAAAAAAAAAAA", 1, 0);
	assert_int_equal(sm_table_create(t, &r, "alice@x", "phone"), 0);
	r.epoch = 7;
	assert_int_equal(sm_table_create(t, &r, "bob@x", "pc"), -EEXIST);

	/* The first record is untouched by the refused one. */
	assert_int_equal(sm_table_peek(t, r.id, "alice@x", &got, peeked), 0);
	assert_int_equal(got.epoch, 1);
	assert_int_equal(got.owner.worker, 1);
	assert_int_equal(got.owner.slot, 10);
	assert_int_equal(got.owner.gen, 100);
	assert_int_equal(sm_table_peek(t, r.id, "bob@x", &got, peeked), -ENOENT);
	assert_int_equal(sm_table_peek(t, "nope", "alice@x", &got, peeked), -ENOENT);

	/* Many distinct ids: the stripes grow their buckets. */
	for (int i = 0; i < 2000; i++) {
		char id[SM_ID_LEN + 1];
		sm_new_id(id);
		rec_init(&r, id, 1, 0);
		assert_int_equal(sm_table_create(t, &r, "alice@x", "r"), 0);
		assert_int_equal(sm_table_peek(t, id, "alice@x", &got, peeked), 0);
	}
	sm_table_free(t);
}

static void test_append_assigns_out(void **state)
{
	(void)state;
	struct sm_table *t = sm_table_new();
	struct sm_record r, got;
	struct rmsg *m[3];
	rec_init(&r, "s1", 1, 0);
	assert_int_equal(sm_table_create(t, &r, "alice@x", "phone"), 0);

	for (unsigned i = 0; i < 3; i++) {
		m[i] = msg(i);
		assert_int_equal(append(t, "s1", 1, i + 1, m[i]), 0);
		assert_int_equal(refs(m[i]), 2); /* ours and the store's */
		assert_int_equal(sm_table_peek(t, "s1", "alice@x", &got, peeked), 0);
		assert_int_equal(got.c.out, i + 1);
		assert_int_equal(got.c.acked, 0);
	}
	assert_int_equal(sm_table_queued(t, "s1"), 3);
	assert_int_equal(sm_table_queued(t, "nope"), 0);

	struct rmsg *x = msg(99);
	assert_int_equal(append(t, "nope", 1, 1, x), -ENOENT);
	assert_int_equal(refs(x), 1); /* a refused append takes no reference */
	rmsg_unref(x);

	/* Freeing the table drops the store's references. */
	sm_table_free(t);
	for (unsigned i = 0; i < 3; i++) {
		assert_int_equal(refs(m[i]), 1);
		rmsg_unref(m[i]);
	}
}

/* ------------------------------------------------------------------ ack */

static void test_ack_releases_in_order(void **state)
{
	(void)state;
	struct sm_table *t = sm_table_new();
	struct sm_record r, got;
	struct rmsg *m[10];
	rec_init(&r, "s1", 1, 0);
	assert_int_equal(sm_table_create(t, &r, "alice@x", "phone"), 0);
	for (unsigned i = 0; i < 10; i++) {
		m[i] = msg(i);
		assert_int_equal(append(t, "s1", 1, i + 1, m[i]), 0);
	}

	assert_int_equal(sm_table_ack(t, "s1", 1, 4), 0);
	assert_int_equal(sm_table_queued(t, "s1"), 6);
	for (unsigned i = 0; i < 10; i++)
		assert_int_equal(refs(m[i]), i < 4 ? 1 : 2);
	assert_int_equal(sm_table_peek(t, "s1", "alice@x", &got, peeked), 0);
	assert_int_equal(got.c.acked, 4);
	assert_int_equal(got.c.out, 10);

	/* The same h again: nothing more goes. Nothing at all: h = acked. */
	assert_int_equal(sm_table_ack(t, "s1", 1, 4), 0);
	assert_int_equal(sm_table_queued(t, "s1"), 6);
	/* Beyond out, or older than the last ack: -ERANGE, queue untouched. */
	assert_int_equal(sm_table_ack(t, "s1", 1, 11), -ERANGE);
	assert_int_equal(sm_table_ack(t, "s1", 1, 3), -ERANGE);
	assert_int_equal(sm_table_ack(t, "s1", 1, 0xFFFFFFFFu), -ERANGE);
	assert_int_equal(sm_table_queued(t, "s1"), 6);
	assert_int_equal(sm_table_peek(t, "s1", "alice@x", &got, peeked), 0);
	assert_int_equal(got.c.acked, 4);
	assert_int_equal(sm_table_ack(t, "nope", 1, 1), -ENOENT);

	assert_int_equal(sm_table_ack(t, "s1", 1, 7), 0);
	for (unsigned i = 0; i < 10; i++)
		assert_int_equal(refs(m[i]), i < 7 ? 1 : 2);

	/* What remains is 8, 9, 10 in order (a takeover hands it out). */
	struct seen s = { 0 };
	assert_int_equal(sm_table_take(t, "s1", "alice@x", &owner_b, 0, NULL, on_take, &s), 0);
	assert_int_equal(s.calls, 1);
	assert_int_equal(s.n, 3);
	for (unsigned i = 0; i < 3; i++) {
		assert_int_equal(s.seq[i], 8 + i);
		assert_ptr_equal(s.msg[i], m[7 + i]);
	}

	assert_int_equal(sm_table_ack(t, "s1", 2, 10), 0);
	assert_int_equal(sm_table_queued(t, "s1"), 0);
	for (unsigned i = 0; i < 10; i++) {
		assert_int_equal(refs(m[i]), 1);
		rmsg_unref(m[i]);
	}
	sm_table_free(t);
}

/* out and acked start 16 below 2^32; 40 stanzas run through the wrap. */
static void test_counter_wrap(void **state)
{
	(void)state;
	struct sm_table *t = sm_table_new();
	struct sm_record r, got;
	struct rmsg *m[40];
	const uint32_t base = 0xFFFFFFF0u;
	rec_init(&r, "wrap", 1, base);
	assert_int_equal(sm_table_create(t, &r, "alice@x", "phone"), 0);
	for (uint32_t i = 0; i < 40; i++) {
		m[i] = msg(i);
		assert_int_equal(append(t, "wrap", 1, base + 1 + i, m[i]), 0);
	}
	assert_int_equal(sm_table_peek(t, "wrap", "alice@x", &got, peeked), 0);
	assert_int_equal(got.c.out, 0x18u); /* 0xFFFFFFF0 + 40 mod 2^32 */

	/* Before the wrap: seq 0xFFFFFFF1..0xFFFFFFF8 go (8 entries). */
	assert_int_equal(sm_table_ack(t, "wrap", 1, 0xFFFFFFF8u), 0);
	assert_int_equal(sm_table_queued(t, "wrap"), 32);
	/* Across it: up to seq 5, i.e. the 15 before 0 and 0..5. */
	assert_int_equal(sm_table_ack(t, "wrap", 1, 5), 0);
	assert_int_equal(sm_table_queued(t, "wrap"), 40 - 21);
	for (unsigned i = 0; i < 40; i++)
		assert_int_equal(refs(m[i]), i < 21 ? 1 : 2);
	/* An h just before the last ack reads as "too many", not as old. */
	assert_int_equal(sm_table_ack(t, "wrap", 1, 0xFFFFFFFFu), -ERANGE);
	assert_int_equal(sm_table_ack(t, "wrap", 1, 0x19u), -ERANGE);
	assert_int_equal(sm_table_queued(t, "wrap"), 19);

	struct seen s = { 0 };
	assert_int_equal(sm_table_take(t, "wrap", "alice@x", &owner_b, 0, NULL, on_take, &s), 0);
	assert_int_equal(s.n, 19);
	for (unsigned i = 0; i < 19; i++) {
		assert_int_equal(s.seq[i], 6 + i);
		assert_ptr_equal(s.msg[i], m[21 + i]);
	}
	assert_int_equal(s.rec.c.out, 0x18u);
	assert_int_equal(s.rec.c.acked, 5);

	assert_int_equal(sm_table_ack(t, "wrap", 2, 0x18u), 0);
	assert_int_equal(sm_table_queued(t, "wrap"), 0);
	for (unsigned i = 0; i < 40; i++) {
		assert_int_equal(refs(m[i]), 1);
		rmsg_unref(m[i]);
	}
	sm_table_free(t);
}

/* The store does not bound a queue (the c2s layer does); a long one works
 * and gives its memory back once fully acked. */
static void test_long_queue_released(void **state)
{
	(void)state;
	enum { N = 10000 };
	struct sm_table *t = sm_table_new();
	struct sm_record r;
	struct rmsg **m = calloc(N, sizeof(*m));
	assert_non_null(m);
	rec_init(&r, "big", 1, 0);
	assert_int_equal(sm_table_create(t, &r, "alice@x", "phone"), 0);
	for (unsigned i = 0; i < N; i++) {
		m[i] = msg(i);
		assert_int_equal(append(t, "big", 1, i + 1, m[i]), 0);
		rmsg_unref(m[i]); /* the store's is the only one left */
	}
	assert_int_equal(sm_table_queued(t, "big"), N);
	assert_true(cap_of(t, "big") >= N);
	for (unsigned i = 0; i < N; i++)
		assert_int_equal(refs(m[i]), 1);

	/* Half: the ring keeps its size. */
	assert_int_equal(sm_table_ack(t, "big", 1, N / 2), 0);
	assert_int_equal(sm_table_queued(t, "big"), N / 2);
	assert_true(cap_of(t, "big") >= N);
	/* All: the memory goes (the freed messages are ASan's to check). */
	assert_int_equal(sm_table_ack(t, "big", 1, N), 0);
	assert_int_equal(sm_table_queued(t, "big"), 0);
	assert_int_equal(cap_of(t, "big"), 0);

	/* And the session is still usable afterwards. */
	struct rmsg *x = msg(1);
	assert_int_equal(append(t, "big", 1, N + 1, x), 0);
	assert_int_equal(sm_table_queued(t, "big"), 1);
	assert_int_equal(cap_of(t, "big"), 8);
	assert_int_equal(sm_table_ack(t, "big", 1, N + 1), 0);
	assert_int_equal(refs(x), 1);
	rmsg_unref(x);
	free(m);
	sm_table_free(t);
}

/* --------------------------------------------------------------- epochs */

static void test_stale_epoch(void **state)
{
	(void)state;
	struct sm_table *t = sm_table_new();
	struct sm_record r, got;
	struct rmsg *a = msg(1), *b = msg(2);
	uint8_t sealed[TOKEN_SEALED_LEN];
	memset(sealed, 0xAB, sizeof(sealed));
	rec_init(&r, "s1", 1, 0);
	assert_int_equal(sm_table_create(t, &r, "alice@x", "phone"), 0);
	assert_int_equal(append(t, "s1", 1, 1, a), 0);

	struct seen s = { 0 };
	assert_int_equal(sm_table_take(t, "s1", "alice@x", &owner_b, 0, NULL, on_take, &s), 0);
	assert_int_equal(s.rec.epoch, 2);

	/* The old owner's writes all fail; append says where the session went. */
	struct bus_addr moved = { 0 };
	struct sm_entry e = { .seq = 2, .msg = b };
	assert_int_equal(sm_table_append(t, "s1", 1, &e, &moved), -ESTALE);
	assert_int_equal(moved.worker, owner_b.worker);
	assert_int_equal(moved.slot, owner_b.slot);
	assert_int_equal(moved.gen, owner_b.gen);
	assert_int_equal(sm_table_append(t, "s1", 1, &e, NULL), -ESTALE); /* NULL is fine */
	assert_int_equal(refs(b), 1);
	assert_int_equal(sm_table_ack(t, "s1", 1, 1), -ESTALE);
	r.c.h_in = 55;
	r.priority = 9;
	assert_int_equal(sm_table_update(t, "s1", 1, &r), -ESTALE);
	assert_int_equal(sm_table_set_isr(t, "s1", 1, 1, 2, sealed), -ESTALE);
	/* A future epoch is as wrong as a past one. */
	assert_int_equal(sm_table_ack(t, "s1", 3, 1), -ESTALE);

	assert_int_equal(sm_table_peek(t, "s1", "alice@x", &got, peeked), 0);
	assert_int_equal(got.epoch, 2);
	assert_int_equal(got.c.h_in, 0);
	assert_int_equal(got.priority, 0);
	assert_int_equal(got.c.out, 1);
	assert_int_equal(got.c.acked, 0);
	assert_int_equal(got.has_isr, 0);
	assert_int_equal(sm_table_queued(t, "s1"), 1);
	assert_int_equal(refs(a), 2);

	/* The new owner's work. */
	assert_int_equal(sm_table_append(t, "s1", 2, &e, &moved), 0);
	assert_int_equal(sm_table_ack(t, "s1", 2, 2), 0);
	assert_int_equal(refs(a), 1);
	assert_int_equal(refs(b), 1);
	assert_int_equal(sm_table_update(t, "s1", 2, &r), 0);
	assert_int_equal(sm_table_peek(t, "s1", "alice@x", &got, peeked), 0);
	assert_int_equal(got.c.h_in, 55);
	assert_int_equal(got.priority, 9);
	rmsg_unref(a);
	rmsg_unref(b);
	sm_table_free(t);
}

/* update writes the owner's fields, never the queue's counters or ownership. */
static void test_update_fields(void **state)
{
	(void)state;
	struct sm_table *t = sm_table_new();
	struct sm_record r, w, got;
	struct rmsg *a = msg(1);
	rec_init(&r, "s1", 1, 0);
	assert_int_equal(sm_table_create(t, &r, "alice@x", "phone"), 0);
	assert_int_equal(append(t, "s1", 1, 1, a), 0);

	w = r;
	w.c.h_in = 12;
	w.c.out = 1000;
	w.c.acked = 999;
	w.max = 60;
	w.attached = 0;
	w.expires_ms = 123456;
	w.available = 1;
	w.priority = -1;
	w.owner = owner_b;
	assert_int_equal(sm_table_update(t, "s1", 1, &w), 0);
	assert_int_equal(sm_table_peek(t, "s1", "alice@x", &got, peeked), 0);
	assert_int_equal(got.c.h_in, 12);
	assert_int_equal(got.c.out, 1);
	assert_int_equal(got.c.acked, 0);
	assert_int_equal(got.max, 60);
	assert_int_equal(got.attached, 0);
	assert_int_equal(got.expires_ms, 123456);
	assert_int_equal(got.available, 1);
	assert_int_equal(got.priority, -1);
	assert_int_equal(got.owner.worker, 1);
	assert_int_equal(got.epoch, 1);
	assert_int_equal(sm_table_update(t, "nope", 1, &w), -ENOENT);
	rmsg_unref(a);
	sm_table_free(t);
}

/* ----------------------------------------------------------------- take */

static void test_take_refused(void **state)
{
	(void)state;
	struct sm_table *t = sm_table_new();
	struct sm_record r, got;
	struct seen s;
	rec_init(&r, "det", 1, 0);
	r.attached = 0;
	r.expires_ms = 5000;
	assert_int_equal(sm_table_create(t, &r, "alice@x", "phone"), 0);

	/* Unknown id. */
	memset(&s, 0, sizeof(s));
	assert_int_equal(sm_table_take(t, "unknown", "alice@x", &owner_b, 0, NULL, on_take, &s), -ENOENT);
	assert_int_equal(s.calls, 1);
	assert_int_equal(s.err, -ENOENT);
	assert_false(s.has_rec);
	assert_int_equal(s.n, 0);

	/* Another account's. */
	memset(&s, 0, sizeof(s));
	assert_int_equal(sm_table_take(t, "det", "mallory@x", &owner_b, 0, NULL, on_take, &s), -ENOENT);
	assert_int_equal(s.calls, 1);
	assert_int_equal(s.err, -ENOENT);
	assert_false(s.has_rec);

	/* Detached past its expiry. */
	memset(&s, 0, sizeof(s));
	assert_int_equal(sm_table_take(t, "det", "alice@x", &owner_b, 5001, NULL, on_take, &s), -ENOENT);
	assert_int_equal(s.calls, 1);
	assert_int_equal(s.err, -ENOENT);
	assert_false(s.has_rec);

	/* None of them changed the record. */
	assert_int_equal(sm_table_peek(t, "det", "alice@x", &got, peeked), 0);
	assert_int_equal(got.epoch, 1);
	assert_int_equal(got.owner.worker, 1);
	assert_int_equal(got.attached, 0);

	/* At the expiry instant itself it is still there. */
	memset(&s, 0, sizeof(s));
	assert_int_equal(sm_table_take(t, "det", "alice@x", &owner_b, 5000, NULL, on_take, &s), 0);
	assert_int_equal(s.err, 0);
	assert_int_equal(s.rec.epoch, 2);

	/* An attached session has no expiry: now_ms does not matter. */
	memset(&s, 0, sizeof(s));
	assert_int_equal(sm_table_take(t, "det", "alice@x", &owner_b, UINT64_MAX, NULL, on_take, &s), 0);
	assert_int_equal(s.rec.epoch, 3);
	sm_table_free(t);
}

/* max = 0: the session was never resumable; nothing can take it. */
static void test_not_resumable(void **state)
{
	(void)state;
	struct sm_table *t = sm_table_new();
	struct sm_record r, got;
	struct seen s = { 0 };
	rec_init(&r, "nores", 1, 0);
	r.max = 0;
	assert_int_equal(sm_table_create(t, &r, "alice@x", "phone"), 0);
	assert_int_equal(sm_table_take(t, "nores", "alice@x", &owner_b, 0, NULL, on_take, &s), -ENOENT);
	assert_int_equal(s.calls, 1);
	assert_int_equal(s.err, -ENOENT);
	r.attached = 0;
	r.expires_ms = UINT64_MAX;
	assert_int_equal(sm_table_update(t, "nores", 1, &r), 0);
	assert_int_equal(sm_table_take(t, "nores", "alice@x", &owner_b, 0, NULL, on_take, &s), -ENOENT);
	assert_int_equal(s.calls, 2);
	assert_int_equal(sm_table_peek(t, "nores", "alice@x", &got, peeked), 0);
	assert_int_equal(got.epoch, 1);
	sm_table_free(t);
}

static void test_take_ok(void **state)
{
	(void)state;
	struct sm_table *t = sm_table_new();
	struct sm_record r, got;
	struct rmsg *m[5];
	rec_init(&r, "s1", 4, 100);
	r.attached = 0;
	r.expires_ms = 10000;
	r.c.h_in = 33;
	r.available = 1;
	r.priority = 5;
	assert_int_equal(sm_table_create(t, &r, "alice@x", "phone"), 0);
	for (unsigned i = 0; i < 5; i++) {
		m[i] = msg(i);
		assert_int_equal(append(t, "s1", 4, 101 + i, m[i]), 0);
	}
	assert_int_equal(sm_table_ack(t, "s1", 4, 101), 0);

	struct seen s = { 0 };
	assert_int_equal(sm_table_take(t, "s1", "alice@x", &owner_b, 9999, NULL, on_take, &s), 0);
	assert_int_equal(s.calls, 1);
	assert_int_equal(s.err, 0);
	/* The record as it was (previous owner), with the epoch to write with. */
	assert_true(s.has_rec);
	assert_string_equal(s.rec.id, "s1");
	assert_int_equal(s.rec.epoch, 5);
	assert_int_equal(s.rec.owner.worker, 1);
	assert_int_equal(s.rec.owner.slot, 10);
	assert_int_equal(s.rec.owner.gen, 100);
	assert_int_equal(s.rec.attached, 0);
	assert_int_equal(s.rec.c.h_in, 33);
	assert_int_equal(s.rec.c.out, 105);
	assert_int_equal(s.rec.c.acked, 101);
	assert_int_equal(s.rec.available, 1);
	assert_int_equal(s.rec.priority, 5);
	assert_string_equal(s.resource, "phone");
	/* The queue in order, borrowed: no reference changed hands. */
	assert_int_equal(s.n, 4);
	for (unsigned i = 0; i < 4; i++) {
		assert_int_equal(s.seq[i], 102 + i);
		assert_ptr_equal(s.msg[i], m[1 + i]);
		assert_int_equal(s.refs_during[i], 2);
		assert_int_equal(refs(m[1 + i]), 2);
	}
	assert_int_equal(sm_table_queued(t, "s1"), 4);

	/* The store now names the new owner, attached, at the new epoch. */
	assert_int_equal(sm_table_peek(t, "s1", "alice@x", &got, peeked), 0);
	assert_int_equal(got.epoch, 5);
	assert_int_equal(got.owner.worker, owner_b.worker);
	assert_int_equal(got.owner.slot, owner_b.slot);
	assert_int_equal(got.owner.gen, owner_b.gen);
	assert_int_equal(got.attached, 1);

	/* An empty queue is handed out as n = 0. */
	assert_int_equal(sm_table_ack(t, "s1", 5, 105), 0);
	memset(&s, 0, sizeof(s));
	assert_int_equal(sm_table_take(t, "s1", "alice@x", &owner_b, 0, NULL, on_take, &s), 0);
	assert_int_equal(s.n, 0);
	assert_int_equal(s.rec.epoch, 6);
	for (unsigned i = 0; i < 5; i++) {
		assert_int_equal(refs(m[i]), 1);
		rmsg_unref(m[i]);
	}
	sm_table_free(t);
}

/* A queue whose ring wrapped (acks moved its head, appends went round):
 * take and destroy hand it out in order, without allocating a copy. */
static void test_take_and_destroy_wrapped_ring(void **state)
{
	(void)state;
	struct sm_table *t = sm_table_new();
	struct sm_record r;
	struct rmsg *m[13];
	rec_init(&r, "w", 1, 0);
	assert_int_equal(sm_table_create(t, &r, "alice@x", "phone"), 0);
	for (unsigned i = 0; i < 8; i++)
		assert_int_equal(append(t, "w", 1, 1 + i, m[i] = msg(i)), 0);
	assert_int_equal(sm_table_ack(t, "w", 1, 6), 0);
	for (unsigned i = 8; i < 13; i++)
		assert_int_equal(append(t, "w", 1, 1 + i, m[i] = msg(i)), 0);
	for (int round = 0; round < 2; round++) { /* the second finds it flat */
		struct seen s = { 0 };
		assert_int_equal(sm_table_take(t, "w", "alice@x", &owner_b, 0, NULL, on_take, &s), 0);
		assert_int_equal(s.n, 7);
		for (unsigned i = 0; i < 7; i++) {
			assert_int_equal(s.seq[i], 7 + i);
			assert_ptr_equal(s.msg[i], m[6 + i]);
		}
	}
	struct seen d = { 0 };
	assert_int_equal(sm_table_destroy(t, "w", 0, on_drain, &d), 0);
	assert_int_equal(d.n, 7);
	for (unsigned i = 0; i < 7; i++)
		assert_int_equal(d.seq[i], 7 + i);
	for (unsigned i = 0; i < 13; i++) {
		assert_int_equal(refs(m[i]), 1);
		rmsg_unref(m[i]);
	}
	sm_table_free(t);
}

/* -------------------------------------------------------------- destroy */

static void test_destroy(void **state)
{
	(void)state;
	struct sm_table *t = sm_table_new();
	struct sm_record r, got;
	struct rmsg *m[5];
	struct seen s = { 0 };
	rec_init(&r, "s1", 1, 0);
	assert_int_equal(sm_table_create(t, &r, "alice@x", "phone"), 0);
	for (unsigned i = 0; i < 5; i++) {
		m[i] = msg(i);
		assert_int_equal(append(t, "s1", 1, i + 1, m[i]), 0);
	}
	assert_int_equal(sm_table_ack(t, "s1", 1, 2), 0);

	/* A stale epoch is refused and the session stays. */
	assert_int_equal(sm_table_destroy(t, "s1", 2, on_drain, &s), -ESTALE);
	assert_int_equal(s.calls, 1);
	assert_int_equal(s.err, -ESTALE);
	assert_int_equal(s.n, 0);
	assert_int_equal(sm_table_queued(t, "s1"), 3);
	assert_int_equal(sm_table_destroy(t, "s1", 2, NULL, NULL), -ESTALE);
	assert_int_equal(sm_table_peek(t, "s1", "alice@x", &got, peeked), 0);

	/* The owner's destroy hands over the unacked entries and their refs. */
	memset(&s, 0, sizeof(s));
	assert_int_equal(sm_table_destroy(t, "s1", 1, on_drain, &s), 0);
	assert_int_equal(s.calls, 1);
	assert_int_equal(s.err, 0);
	assert_true(s.has_rec);
	assert_string_equal(s.rec.id, "s1");
	assert_int_equal(s.rec.c.out, 5);
	assert_int_equal(s.rec.c.acked, 2);
	assert_string_equal(s.bare, "alice@x");
	assert_string_equal(s.resource, "phone");
	assert_int_equal(s.n, 3);
	for (unsigned i = 0; i < 3; i++) {
		assert_int_equal(s.seq[i], 3 + i);
		assert_ptr_equal(s.msg[i], m[2 + i]);
		assert_int_equal(s.refs_during[i], 2); /* the store's, now the callee's */
	}
	for (unsigned i = 0; i < 5; i++)
		assert_int_equal(refs(m[i]), 1); /* the callee dropped what it got */
	assert_int_equal(sm_table_peek(t, "s1", "alice@x", &got, peeked), -ENOENT);
	assert_int_equal(sm_table_queued(t, "s1"), 0);

	/* Gone: -ENOENT, through the callback too. */
	memset(&s, 0, sizeof(s));
	assert_int_equal(sm_table_destroy(t, "s1", 1, on_drain, &s), -ENOENT);
	assert_int_equal(s.calls, 1);
	assert_int_equal(s.err, -ENOENT);
	assert_false(s.has_rec);
	assert_int_equal(sm_table_destroy(t, "unknown", 0, NULL, NULL), -ENOENT);

	/* epoch 0 = whoever owns it; no callback = the store drops the refs. */
	rec_init(&r, "s2", 9, 0);
	assert_int_equal(sm_table_create(t, &r, "alice@x", "pc"), 0);
	for (unsigned i = 0; i < 5; i++)
		assert_int_equal(append(t, "s2", 9, i + 1, m[i]), 0);
	assert_int_equal(sm_table_destroy(t, "s2", 0, NULL, NULL), 0);
	for (unsigned i = 0; i < 5; i++)
		assert_int_equal(refs(m[i]), 1);

	/* An id can be used again once destroyed. */
	assert_int_equal(sm_table_create(t, &r, "alice@x", "pc"), 0);
	for (unsigned i = 0; i < 5; i++)
		rmsg_unref(m[i]);
	sm_table_free(t);
}

/* ------------------------------------------------------------------ ISR */

static void test_isr(void **state)
{
	(void)state;
	struct sm_table *t = sm_table_new();
	struct sm_record r, got;
	uint8_t tok[3][TOKEN_SEALED_LEN], zero[TOKEN_SEALED_LEN] = { 0 };
	const char *ids[3] = { "a1", "a2", "b1" };
	const char *bares[3] = { "alice@x", "alice@x", "bob@x" };
	for (int i = 0; i < 3; i++) {
		memset(tok[i], 0x11 * (i + 1), TOKEN_SEALED_LEN);
		rec_init(&r, ids[i], 1, 0);
		assert_int_equal(sm_table_create(t, &r, bares[i], "r"), 0);
		assert_int_equal(sm_table_set_isr(t, ids[i], 1, 1, (uint8_t)(i + 1), tok[i]), 0);
	}
	for (int i = 0; i < 3; i++) {
		assert_int_equal(sm_table_peek(t, ids[i], bares[i], &got, peeked), 0);
		assert_int_equal(got.has_isr, 1);
		assert_int_equal(got.isr_mech, i + 1);
		assert_memory_equal(peeked, tok[i], TOKEN_SEALED_LEN);
	}
	assert_int_equal(sm_table_set_isr(t, "nope", 1, 1, 1, tok[0]), -ENOENT);

	/* Revoking alice's leaves bob's alone; so does an unknown account. */
	sm_table_revoke_isr(t, "nobody@x");
	sm_table_revoke_isr(t, "alice@x");
	for (int i = 0; i < 3; i++) {
		assert_int_equal(sm_table_peek(t, ids[i], bares[i], &got, peeked), 0);
		if (i < 2) {
			assert_int_equal(got.has_isr, 0);
			assert_memory_equal(peeked, zero, TOKEN_SEALED_LEN);
		} else {
			assert_int_equal(got.has_isr, 1);
			assert_memory_equal(peeked, tok[2], TOKEN_SEALED_LEN);
		}
	}
	/* Not a prefix match. */
	sm_table_revoke_isr(t, "bob@");
	assert_int_equal(sm_table_peek(t, "b1", "bob@x", &got, peeked), 0);
	assert_int_equal(got.has_isr, 1);

	/* Clearing one by hand; the session itself stays. */
	assert_int_equal(sm_table_set_isr(t, "b1", 1, 0, 0, NULL), 0);
	assert_int_equal(sm_table_peek(t, "b1", "bob@x", &got, peeked), 0);
	assert_int_equal(got.has_isr, 0);
	assert_memory_equal(peeked, zero, TOKEN_SEALED_LEN);
	/* A takeover keeps the token (it belongs to the session). */
	assert_int_equal(sm_table_set_isr(t, "a1", 1, 1, 2, tok[0]), 0);
	struct seen s = { 0 };
	assert_int_equal(sm_table_take(t, "a1", "alice@x", &owner_b, 0, NULL, on_take, &s), 0);
	assert_int_equal(s.rec.has_isr, 1);
	assert_int_equal(sm_table_peek(t, "a1", "alice@x", &got, peeked), 0);
	assert_int_equal(got.has_isr, 1);
	assert_memory_equal(peeked, tok[0], TOKEN_SEALED_LEN);
	sm_table_free(t);
}

/* A real sealed token (token.h) for <key>, and the proof a client holding
 * it would present over channel binding <cb> with mechanism <mech>. */
static const uint8_t tkey[TOKEN_KEY_LEN] = { 7, 7, 7 };

static void isr_token(char text[TOKEN_LEN + 1], uint8_t sealed[TOKEN_SEALED_LEN])
{
	token_new(text);
	assert_int_equal(token_seal(tkey, text, sealed), 0);
}

static struct sm_isr_proof proof_for(const char *token, uint8_t mech)
{
	struct sm_isr_proof p = { .mech = mech, .key = tkey, .cb_len = 4 };
	memcpy(p.cb, "cbcb", 4);
	ht_initiator_hash(token, p.cb, p.cb_len, p.hash);
	return p;
}

/* The token is checked and consumed inside the take: a match takes the
 * session (and the token is gone), anything else is -EACCES and destroys
 * the token of a session of the account; another account's session is
 * "unknown" and untouched. */
static void test_take_isr(void **state)
{
	(void)state;
	struct sm_table *t = sm_table_new();
	struct sm_record r, got;
	struct seen s;
	char tok[TOKEN_LEN + 1], other[TOKEN_LEN + 1];
	uint8_t sealed[TOKEN_SEALED_LEN], osealed[TOKEN_SEALED_LEN], resp[HT_HASH_LEN];
	isr_token(tok, sealed);
	isr_token(other, osealed);
	rec_init(&r, "i1", 1, 0);
	r.attached = 0;
	r.expires_ms = 5000;
	assert_int_equal(sm_table_create(t, &r, "alice@x", "phone"), 0);
	assert_int_equal(sm_table_set_isr(t, "i1", 1, 1, 2, sealed), 0);

	/* Unknown id, and another account's session: no record, nothing touched. */
	struct sm_isr_proof p = proof_for(tok, 2);
	memset(&s, 0, sizeof(s));
	assert_int_equal(sm_table_take(t, "nope", "alice@x", &owner_b, 0, &p, on_take, &s), -EACCES);
	assert_int_equal(s.calls, 1);
	assert_false(s.has_rec);
	memset(&s, 0, sizeof(s));
	assert_int_equal(sm_table_take(t, "i1", "mallory@x", &owner_b, 0, &p, on_take, &s), -EACCES);
	assert_false(s.has_rec);
	assert_int_equal(sm_table_peek(t, "i1", "alice@x", &got, peeked), 0);
	assert_int_equal(got.has_isr, 1);

	/* The right token with another mechanism: refused, and the token dies. */
	p = proof_for(tok, 1);
	memset(&s, 0, sizeof(s));
	assert_int_equal(sm_table_take(t, "i1", "alice@x", &owner_b, 0, &p, on_take, &s), -EACCES);
	assert_true(s.has_rec);
	assert_int_equal(s.rec.attached, 0);  /* the caller ends a detached session */
	assert_int_equal(s.rec.has_isr, 0);
	assert_int_equal(sm_table_peek(t, "i1", "alice@x", &got, peeked), 0);
	assert_int_equal(got.has_isr, 0);
	assert_int_equal(got.epoch, 1);
	/* ...so the right one no longer works either. */
	p = proof_for(tok, 2);
	assert_int_equal(sm_table_take(t, "i1", "alice@x", &owner_b, 0, &p, on_take, &s), -EACCES);

	/* A wrong token. */
	assert_int_equal(sm_table_set_isr(t, "i1", 1, 1, 2, sealed), 0);
	p = proof_for(other, 2);
	assert_int_equal(sm_table_take(t, "i1", "alice@x", &owner_b, 0, &p, on_take, &s), -EACCES);
	assert_int_equal(sm_table_peek(t, "i1", "alice@x", &got, peeked), 0);
	assert_int_equal(got.has_isr, 0);

	/* The right token: taken, token consumed, responder hash out. */
	assert_int_equal(sm_table_set_isr(t, "i1", 1, 1, 2, sealed), 0);
	p = proof_for(tok, 2);
	memset(&s, 0, sizeof(s));
	assert_int_equal(sm_table_take(t, "i1", "alice@x", &owner_b, 100, &p, on_take, &s), 0);
	assert_int_equal(s.err, 0);
	assert_int_equal(s.rec.epoch, 2);
	ht_responder_hash(tok, p.cb, p.cb_len, resp);
	assert_memory_equal(p.resp, resp, HT_HASH_LEN);
	assert_int_equal(sm_table_peek(t, "i1", "alice@x", &got, peeked), 0);
	assert_int_equal(got.has_isr, 0);
	assert_int_equal(got.owner.slot, owner_b.slot);
	assert_int_equal(got.attached, 1);
	/* The same token again: refused (and the session, attached, stays). */
	memset(&s, 0, sizeof(s));
	assert_int_equal(sm_table_take(t, "i1", "alice@x", &owner_b, 100, &p, on_take, &s), -EACCES);
	assert_true(s.has_rec);
	assert_int_equal(s.rec.attached, 1);
	assert_int_equal(s.rec.epoch, 2);

	/* The right token for an expired session: -ENOENT, and the token is spent. */
	r.epoch = 2;
	r.attached = 0;
	r.expires_ms = 5000;
	assert_int_equal(sm_table_update(t, "i1", 2, &r), 0);
	assert_int_equal(sm_table_set_isr(t, "i1", 2, 1, 2, sealed), 0);
	memset(&s, 0, sizeof(s));
	assert_int_equal(sm_table_take(t, "i1", "alice@x", &owner_b, 5001, &p, on_take, &s), -ENOENT);
	assert_int_equal(sm_table_peek(t, "i1", "alice@x", &got, peeked), 0);
	assert_int_equal(got.has_isr, 0);
	assert_int_equal(got.epoch, 2);
	sm_table_free(t);
}

struct race {
	struct sm_table *t;
	const char *token;
	pthread_barrier_t *go;
	int rc;
};

static void on_take_quiet(void *ud, int err, const struct sm_record *rec, const char *resource,
			  const struct sm_entry *q, size_t n)
{
	(void)ud; (void)err; (void)rec; (void)resource; (void)q; (void)n;
}

static void *race_take(void *arg)
{
	struct race *r = arg;
	struct sm_isr_proof p = proof_for(r->token, 2);
	pthread_barrier_wait(r->go);
	r->rc = sm_table_take(r->t, "race", "alice@x", &owner_b, 0, &p, on_take_quiet, NULL);
	return NULL;
}

/* Eight threads present one token at once, many times: exactly one takes. */
static void test_take_isr_race(void **state)
{
	(void)state;
	enum { N = 8, ROUNDS = 200 };
	struct sm_table *t = sm_table_new();
	char tok[TOKEN_LEN + 1];
	uint8_t sealed[TOKEN_SEALED_LEN];
	struct sm_record r;
	rec_init(&r, "race", 1, 0);
	assert_int_equal(sm_table_create(t, &r, "alice@x", "phone"), 0);
	for (int round = 0; round < ROUNDS; round++) {
		struct sm_record got;
		pthread_barrier_t go;
		pthread_t th[N];
		struct race rc[N];
		assert_int_equal(sm_table_peek(t, "race", "alice@x", &got, peeked), 0);
		isr_token(tok, sealed);
		assert_int_equal(sm_table_set_isr(t, "race", got.epoch, 1, 2, sealed), 0);
		pthread_barrier_init(&go, NULL, N);
		for (int i = 0; i < N; i++) {
			rc[i] = (struct race){ .t = t, .token = tok, .go = &go };
			assert_int_equal(pthread_create(&th[i], NULL, race_take, &rc[i]), 0);
		}
		int won = 0;
		for (int i = 0; i < N; i++) {
			pthread_join(th[i], NULL);
			if (rc[i].rc == 0)
				won++;
			else
				assert_int_equal(rc[i].rc, -EACCES);
		}
		pthread_barrier_destroy(&go);
		assert_int_equal(won, 1);
		assert_int_equal(sm_table_peek(t, "race", "alice@x", &got, peeked), 0);
		assert_int_equal(got.epoch, (uint32_t)round + 2);
	}
	sm_table_free(t);
}

/* ----------------------------------------------------------------- FAST */

static struct fast_slots slots(int fresh, int current, uint8_t fill)
{
	struct fast_slots s;
	memset(&s, 0, sizeof(s));
	s.fresh.valid = fresh;
	s.fresh.mech = 1;
	/* Far ahead: a write sweeps the account's expired entries. */
	s.fresh.expiry_ms = (UINT64_C(1) << 50) + 1000u + fill;
	memset(s.fresh.sealed, fill, TOKEN_SEALED_LEN);
	s.current.valid = current;
	s.current.mech = 2;
	s.current.expiry_ms = (UINT64_C(1) << 50) + 2000u + fill;
	memset(s.current.sealed, fill ^ 0xFF, TOKEN_SEALED_LEN);
	return s;
}

/* Writes <in> at whatever version the entry has now (a test shortcut). */
static int put(struct fast_table *t, const char *bare, const char *ua, const struct fast_slots *in)
{
	struct fast_slots cur, w = *in;
	fast_table_get(t, bare, ua, &cur);
	w.version = cur.version;
	return fast_table_cas(t, bare, ua, &w);
}

/* Slots equal, versions aside. */
static void assert_slots(const struct fast_slots *got, const struct fast_slots *want)
{
	assert_memory_equal(&got->fresh, &want->fresh, sizeof(want->fresh));
	assert_memory_equal(&got->current, &want->current, sizeof(want->current));
}

static void test_fast_table(void **state)
{
	(void)state;
	struct fast_table *t = fast_table_new();
	struct fast_slots a = slots(1, 0, 0xA1), a2 = slots(0, 1, 0xA2), b = slots(1, 1, 0xB1), got;
	assert_non_null(t);
	assert_int_equal(fast_table_get(t, "alice@x", "ua1", &got), -ENOENT);
	assert_int_equal(got.version, 0);

	assert_int_equal(put(t, "alice@x", "ua1", &a), 0);
	assert_int_equal(fast_table_get(t, "alice@x", "ua1", &got), 0);
	assert_slots(&got, &a);
	assert_true(got.version != 0);
	/* Same bare JID, other user-agent ids: separate entries. */
	assert_int_equal(fast_table_get(t, "alice@x", "ua2", &got), -ENOENT);
	assert_int_equal(fast_table_get(t, "alice@x", "", &got), -ENOENT);
	assert_int_equal(put(t, "alice@x", "ua2", &a2), 0);
	assert_int_equal(put(t, "alice@x", "", &b), 0);
	assert_int_equal(fast_table_get(t, "alice@x", "ua1", &got), 0);
	assert_slots(&got, &a);
	assert_int_equal(fast_table_get(t, "alice@x", "ua2", &got), 0);
	assert_slots(&got, &a2);
	assert_int_equal(fast_table_get(t, "alice@x", "", &got), 0);
	assert_slots(&got, &b);
	/* The key is (bare, ua) as a pair, not their concatenation. */
	assert_int_equal(put(t, "alice@xu", "a1", &b), 0);
	assert_int_equal(fast_table_get(t, "alice@x", "ua1", &got), 0);
	assert_slots(&got, &a);
	assert_int_equal(fast_table_get(t, "alice@xu", "a1", &got), 0);
	assert_slots(&got, &b);
	assert_int_equal(put(t, "bob@x", "ua1", &b), 0);

	/* Replace. */
	assert_int_equal(put(t, "alice@x", "ua1", &a2), 0);
	assert_int_equal(fast_table_get(t, "alice@x", "ua1", &got), 0);
	assert_slots(&got, &a2);

	/* Nothing valid: the entry goes; deleting a missing one is fine. */
	struct fast_slots none = slots(0, 0, 0xEE);
	assert_int_equal(put(t, "alice@x", "ua1", &none), 0);
	assert_int_equal(fast_table_get(t, "alice@x", "ua1", &got), -ENOENT);
	assert_int_equal(put(t, "alice@x", "ua1", &none), 0);
	assert_int_equal(fast_table_get(t, "alice@x", "ua1", &got), -ENOENT);
	assert_int_equal(fast_table_get(t, "alice@x", "ua2", &got), 0);

	/* Revoke by account: all of alice's devices, nobody else's. */
	assert_int_equal(put(t, "alice@x", "ua1", &a), 0);
	fast_table_revoke(t, "alice@x");
	assert_int_equal(fast_table_get(t, "alice@x", "ua1", &got), -ENOENT);
	assert_int_equal(fast_table_get(t, "alice@x", "ua2", &got), -ENOENT);
	assert_int_equal(fast_table_get(t, "alice@x", "", &got), -ENOENT);
	assert_int_equal(fast_table_get(t, "alice@xu", "a1", &got), 0);
	assert_int_equal(fast_table_get(t, "bob@x", "ua1", &got), 0);
	assert_slots(&got, &b);
	fast_table_revoke(t, "nobody@x");
	fast_table_revoke(t, "bob@x");
	assert_int_equal(fast_table_get(t, "bob@x", "ua1", &got), -ENOENT);
	assert_int_equal(fast_table_get(t, "alice@xu", "a1", &got), 0);
	fast_table_free(t);
}

/* Compare-and-set: a write based on an old read fails, whether the entry
 * was rewritten, revoked, or revoked and created again since. */
static void test_fast_cas(void **state)
{
	(void)state;
	struct fast_table *t = fast_table_new();
	struct fast_slots a = slots(1, 0, 0xA1), b = slots(1, 1, 0xB1), r1, r2, w, got;

	/* Creating expects "no entry" (version 0). */
	w = a;
	w.version = 5;
	assert_int_equal(fast_table_cas(t, "alice@x", "ua", &w), -ESTALE);
	assert_int_equal(fast_table_get(t, "alice@x", "ua", &r1), -ENOENT);
	w = a;
	w.version = r1.version;
	assert_int_equal(fast_table_cas(t, "alice@x", "ua", &w), 0);
	assert_true(w.version != 0);
	w.version = 0;
	assert_int_equal(fast_table_cas(t, "alice@x", "ua", &w), -ESTALE); /* exists now */

	/* Two logins read the same version; the second write loses. */
	assert_int_equal(fast_table_get(t, "alice@x", "ua", &r1), 0);
	assert_int_equal(fast_table_get(t, "alice@x", "ua", &r2), 0);
	assert_int_equal(r1.version, r2.version);
	w = b;
	w.version = r1.version;
	assert_int_equal(fast_table_cas(t, "alice@x", "ua", &w), 0);
	uint64_t v = w.version;
	assert_true(v != r1.version);
	w = a;
	w.version = r2.version;
	assert_int_equal(fast_table_cas(t, "alice@x", "ua", &w), -ESTALE);
	assert_int_equal(fast_table_get(t, "alice@x", "ua", &got), 0);
	assert_slots(&got, &b);
	assert_int_equal(got.version, v);

	/* A revocation between read and write: the write does not bring it back. */
	assert_int_equal(fast_table_get(t, "alice@x", "ua", &r1), 0);
	fast_table_revoke(t, "alice@x");
	w = b;
	w.version = r1.version;
	assert_int_equal(fast_table_cas(t, "alice@x", "ua", &w), -ESTALE);
	assert_int_equal(fast_table_get(t, "alice@x", "ua", &got), -ENOENT);

	/* ...nor after the entry was created again (versions are never reused). */
	assert_int_equal(fast_table_get(t, "alice@x", "ua", &r2), -ENOENT);
	w = a;
	w.version = r2.version;
	assert_int_equal(fast_table_cas(t, "alice@x", "ua", &w), 0);
	w = b;
	w.version = r1.version;
	assert_int_equal(fast_table_cas(t, "alice@x", "ua", &w), -ESTALE);
	assert_int_equal(fast_table_get(t, "alice@x", "ua", &got), 0);
	assert_slots(&got, &a);

	/* A delete by CAS, then an old version cannot write either. */
	assert_int_equal(fast_table_get(t, "alice@x", "ua", &r1), 0);
	w = slots(0, 0, 0);
	w.version = r1.version;
	assert_int_equal(fast_table_cas(t, "alice@x", "ua", &w), 0);
	assert_int_equal(w.version, 0);
	w = a;
	w.version = r1.version;
	assert_int_equal(fast_table_cas(t, "alice@x", "ua", &w), -ESTALE);
	fast_table_free(t);
}

/* The cap: a new entry evicts the account's least recently written ones
 * beyond in->max_entries (a rewrite refreshes an entry; other accounts are
 * untouched); every write sweeps entries whose tokens have all expired. */
/* put() with a cap: the number evicted, or -errno. */
static int put_cap(struct fast_table *t, const char *bare, const char *ua, const struct fast_slots *in,
		   uint32_t max)
{
	struct fast_slots cur, w = *in;
	fast_table_get(t, bare, ua, &cur);
	w.version = cur.version;
	w.max_entries = max;
	int rc = fast_table_cas(t, bare, ua, &w);
	return rc ? rc : (int)w.evicted;
}

static void test_fast_cap(void **state)
{
	(void)state;
	struct fast_table *t = fast_table_new();
	struct fast_slots w, got;
	char ua[16];
	assert_non_null(t);
	w = slots(1, 0, 1);
	assert_int_equal(put(t, "bob@x", "ua0", &w), 0);
	for (int i = 0; i < 4; i++) {
		snprintf(ua, sizeof(ua), "ua%d", i);
		w = slots(1, 0, (uint8_t)i);
		assert_int_equal(put_cap(t, "alice@x", ua, &w, 4), 0);
	}
	/* ua0 logs in again: ua1 is now the least recently written. */
	w = slots(0, 1, 9);
	assert_int_equal(put_cap(t, "alice@x", "ua0", &w, 4), 0);
	w = slots(1, 0, 4);
	assert_int_equal(put_cap(t, "alice@x", "ua4", &w, 4), 1);
	assert_int_equal(fast_table_get(t, "alice@x", "ua1", &got), -ENOENT);
	for (int i = 0; i <= 4; i++) {
		snprintf(ua, sizeof(ua), "ua%d", i);
		assert_int_equal(fast_table_get(t, "alice@x", ua, &got), i == 1 ? -ENOENT : 0);
	}
	assert_int_equal(fast_table_get(t, "bob@x", "ua0", &got), 0);

	/* A lower cap (a reload) applies at the next new entry, all at once. */
	w = slots(1, 0, 5);
	assert_int_equal(put_cap(t, "alice@x", "ua5", &w, 2), 3);
	assert_int_equal(fast_table_get(t, "alice@x", "ua4", &got), 0);
	assert_int_equal(fast_table_get(t, "alice@x", "ua5", &got), 0);
	assert_int_equal(fast_table_get(t, "alice@x", "ua0", &got), -ENOENT);

	/* Expired entries go at the account's next write, cap or not, and
	 * are not counted as evicted. */
	w = slots(1, 1, 6);
	w.fresh.expiry_ms = w.current.expiry_ms = 1000;
	assert_int_equal(put(t, "alice@x", "old", &w), 0);
	assert_int_equal(fast_table_get(t, "alice@x", "old", &got), 0);
	w = slots(1, 0, 7);
	assert_int_equal(put_cap(t, "alice@x", "ua4", &w, 0), 0);
	assert_int_equal(fast_table_get(t, "alice@x", "old", &got), -ENOENT);
	assert_int_equal(fast_table_get(t, "alice@x", "ua5", &got), 0);
	fast_table_free(t);
}

/* ------------------------------------------- through store_open("memory") */

static char dir[256];

static int setup_dir(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/tether-store-sm-XXXXXX");
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown_dir(void **state)
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

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };
	while (nanosleep(&ts, &ts) == -1)
		;
}

/* The SM API through the store wrappers: one round trip of each. */
static void test_store_api(void **state)
{
	(void)state;
	struct store *st = open_ok();
	struct sm_record r, got;
	struct rmsg *m[3];
	struct seen s = { 0 };
	struct bus_addr moved;
	rec_init(&r, "api", 1, 0);
	assert_int_equal(store_sm_create(st, &r, "alice@x", "phone"), 0);
	assert_int_equal(store_sm_create(st, &r, "alice@x", "phone"), -EEXIST);
	for (unsigned i = 0; i < 3; i++) {
		m[i] = msg(i);
		struct sm_entry e = { .seq = i + 1, .msg = m[i] };
		assert_int_equal(store_sm_append(st, "api", 1, &e, &moved), 0);
	}
	assert_int_equal(store_sm_ack(st, "api", 1, 4), -ERANGE);
	assert_int_equal(store_sm_ack(st, "api", 1, 1), 0);
	assert_int_equal(refs(m[0]), 1);
	r.c.h_in = 7;
	assert_int_equal(store_sm_update(st, &r), 0);
	assert_int_equal(sm_table_peek(store_memory_sm_table(st), "api", "alice@x", &got, peeked), 0);
	assert_int_equal(got.c.h_in, 7);
	assert_int_equal(store_sm_take(st, "api", "alice@x", &owner_b, 0, NULL, on_take, &s), 0);
	assert_int_equal(s.n, 2);
	assert_int_equal(store_sm_update(st, &r), -ESTALE); /* r.epoch is 1 */
	memset(&s, 0, sizeof(s));
	assert_int_equal(store_sm_destroy(st, "api", 1, on_drain, &s), -ESTALE);
	assert_int_equal(store_sm_destroy(st, "api", 2, on_drain, &s), 0);
	assert_int_equal(s.n, 2);
	for (unsigned i = 0; i < 3; i++) {
		assert_int_equal(refs(m[i]), 1);
		rmsg_unref(m[i]);
	}
	/* A session left in the store is freed with it. */
	struct rmsg *x = msg(9);
	rec_init(&r, "left", 1, 0);
	assert_int_equal(store_sm_create(st, &r, "alice@x", "phone"), 0);
	struct sm_entry e = { .seq = 1, .msg = x };
	assert_int_equal(store_sm_append(st, "left", 1, &e, NULL), 0);
	store_close(st);
	assert_int_equal(refs(x), 1);
	rmsg_unref(x);
}

struct tokens_fixture {
	struct store *st;
	uint8_t isr_a[TOKEN_SEALED_LEN], isr_b[TOKEN_SEALED_LEN];
	struct fast_slots fa1, fa2, fb;
};

/* Users alice and bob, each with FAST slots and an SM session with an ISR token. */
static void tokens_setup(struct tokens_fixture *f)
{
	struct user_creds ca, cb;
	struct sm_record r;
	assert_int_equal(scram_creds_derive("alice-pw", 1, &ca), 0);
	assert_int_equal(scram_creds_derive("bob-pw", 1, &cb), 0);
	f->st = open_ok();
	assert_int_equal(store_user_put(f->st, "alice@x", &ca), 0);
	assert_int_equal(store_user_put(f->st, "bob@x", &cb), 0);
	f->fa1 = slots(1, 0, 0x01);
	f->fa2 = slots(1, 1, 0x02);
	f->fb = slots(0, 1, 0x03);
	assert_int_equal(store_fast_cas(f->st, "alice@x", "ua1", &f->fa1), 0);
	assert_int_equal(store_fast_cas(f->st, "alice@x", "ua2", &f->fa2), 0);
	assert_int_equal(store_fast_cas(f->st, "bob@x", "ua1", &f->fb), 0);
	memset(f->isr_a, 0x5A, sizeof(f->isr_a));
	memset(f->isr_b, 0x5B, sizeof(f->isr_b));
	rec_init(&r, "sa", 1, 0);
	assert_int_equal(store_sm_create(f->st, &r, "alice@x", "phone"), 0);
	assert_int_equal(store_sm_set_isr(f->st, "sa", 1, 1, 1, f->isr_a), 0);
	rec_init(&r, "sb", 1, 0);
	assert_int_equal(store_sm_create(f->st, &r, "bob@x", "phone"), 0);
	assert_int_equal(store_sm_set_isr(f->st, "sb", 1, 1, 1, f->isr_b), 0);
}

static void assert_alive(struct store *st, const char *bare, const char *ua,
			 const struct fast_slots *want, const char *sid, const uint8_t *isr)
{
	struct fast_slots got;
	struct sm_record rec;
	assert_int_equal(store_fast_get(st, bare, ua, &got), 0);
	assert_memory_equal(&got, want, sizeof(got));
	assert_int_equal(sm_table_peek(store_memory_sm_table(st), sid, bare, &rec, peeked), 0);
	assert_int_equal(rec.has_isr, 1);
	assert_memory_equal(peeked, isr, TOKEN_SEALED_LEN);
}

static void assert_revoked(struct store *st, const char *bare, const char *sid)
{
	struct fast_slots got;
	struct sm_record rec;
	assert_int_equal(store_fast_get(st, bare, "ua1", &got), -ENOENT);
	assert_int_equal(store_fast_get(st, bare, "ua2", &got), -ENOENT);
	/* the session itself lives on, without its token */
	assert_int_equal(sm_table_peek(store_memory_sm_table(st), sid, bare, &rec, peeked), 0);
	assert_int_equal(rec.has_isr, 0);
}

/* tetherctl (another store instance on the same directory) changes alice's
 * password: the server's instance notices on reload and drops her tokens. */
static void test_revoke_on_password_change(void **state)
{
	(void)state;
	struct tokens_fixture f;
	struct user_creds nc, got;
	tokens_setup(&f);

	/* Within the reload interval nothing is revoked by our own writes. */
	assert_alive(f.st, "alice@x", "ua1", &f.fa1, "sa", f.isr_a);
	assert_alive(f.st, "alice@x", "ua2", &f.fa2, "sa", f.isr_a);

	struct store *ctl = open_ok();
	assert_int_equal(scram_creds_derive("alice-new", 1, &nc), 0);
	assert_int_equal(store_user_put(ctl, "alice@x", &nc), 0);
	store_close(ctl);

	sleep_ms(1100);
	assert_int_equal(store_user_get(f.st, "alice@x", &got), 0);
	assert_memory_equal(got.stored_key_sha256, nc.stored_key_sha256, sizeof(nc.stored_key_sha256));
	assert_revoked(f.st, "alice@x", "sa");
	assert_alive(f.st, "bob@x", "ua1", &f.fb, "sb", f.isr_b);

	/* A write based on a read from before the change fails (no token
	 * comes back to life)... */
	struct fast_slots stale = f.fa1;
	assert_int_equal(store_fast_cas(f.st, "alice@x", "ua1", &stale), -ESTALE);
	/* ...and tokens issued after the change live on through later
	 * reloads that do not touch alice. */
	f.fa1.version = 0;
	assert_int_equal(store_fast_cas(f.st, "alice@x", "ua1", &f.fa1), 0);
	ctl = open_ok();
	struct user_creds cc;
	assert_int_equal(scram_creds_derive("carol-pw", 1, &cc), 0);
	assert_int_equal(store_user_put(ctl, "carol@x", &cc), 0);
	store_close(ctl);
	sleep_ms(1100);
	assert_int_equal(store_user_get(f.st, "carol@x", &got), 0);
	struct fast_slots fs;
	assert_int_equal(store_fast_get(f.st, "alice@x", "ua1", &fs), 0);
	assert_alive(f.st, "bob@x", "ua1", &f.fb, "sb", f.isr_b);
	store_close(f.st);
}

static void test_revoke_on_delete(void **state)
{
	(void)state;
	struct tokens_fixture f;
	struct user_creds got;
	tokens_setup(&f);

	struct store *ctl = open_ok();
	assert_int_equal(store_user_del(ctl, "alice@x"), 0);
	store_close(ctl);

	sleep_ms(1100);
	assert_int_equal(store_user_get(f.st, "alice@x", &got), -ENOENT);
	assert_revoked(f.st, "alice@x", "sa");
	assert_int_equal(store_user_get(f.st, "bob@x", &got), 0);
	assert_alive(f.st, "bob@x", "ua1", &f.fb, "sb", f.isr_b);
	store_close(f.st);
}

/* A token login checks users.db at once: right after tetherctl returns
 * (another store instance), the tokens are gone, without waiting for the
 * once-a-second reload. */
static void test_revoke_seen_at_token_login(void **state)
{
	(void)state;
	struct tokens_fixture f;
	struct user_creds nc;
	struct fast_slots got;
	tokens_setup(&f);
	struct store *ctl = open_ok();
	assert_int_equal(scram_creds_derive("alice-new", 1, &nc), 0);
	assert_int_equal(store_user_put(ctl, "alice@x", &nc), 0);
	assert_int_equal(store_user_del(ctl, "bob@x"), 0);
	store_close(ctl);
	assert_int_equal(store_fast_get(f.st, "alice@x", "ua1", &got), -ENOENT);
	assert_revoked(f.st, "alice@x", "sa");
	assert_revoked(f.st, "bob@x", "sb");
	store_close(f.st);
}

/* A password change or deletion through this very store (not another
 * process) revokes in the same step: no reload interval to wait for. */
static void test_revoke_in_process(void **state)
{
	(void)state;
	struct tokens_fixture f;
	struct user_creds nc;
	tokens_setup(&f);
	assert_int_equal(scram_creds_derive("alice-new", 1, &nc), 0);
	assert_int_equal(store_user_put(f.st, "alice@x", &nc), 0);
	assert_revoked(f.st, "alice@x", "sa");
	assert_alive(f.st, "bob@x", "ua1", &f.fb, "sb", f.isr_b);
	/* The same password again is no change: nothing more to revoke. */
	f.fa1.version = 0;
	assert_int_equal(store_fast_cas(f.st, "alice@x", "ua1", &f.fa1), 0);
	assert_int_equal(store_user_put(f.st, "alice@x", &nc), 0);
	struct fast_slots fs;
	assert_int_equal(store_fast_get(f.st, "alice@x", "ua1", &fs), 0);
	assert_int_equal(store_user_del(f.st, "bob@x"), 0);
	assert_revoked(f.st, "bob@x", "sb");
	store_close(f.st);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_create_duplicate),
		cmocka_unit_test(test_append_assigns_out),
		cmocka_unit_test(test_ack_releases_in_order),
		cmocka_unit_test(test_counter_wrap),
		cmocka_unit_test(test_long_queue_released),
		cmocka_unit_test(test_stale_epoch),
		cmocka_unit_test(test_update_fields),
		cmocka_unit_test(test_take_refused),
		cmocka_unit_test(test_not_resumable),
		cmocka_unit_test(test_take_ok),
		cmocka_unit_test(test_take_and_destroy_wrapped_ring),
		cmocka_unit_test(test_destroy),
		cmocka_unit_test(test_isr),
		cmocka_unit_test(test_take_isr),
		cmocka_unit_test(test_take_isr_race),
		cmocka_unit_test(test_fast_table),
		cmocka_unit_test(test_fast_cas),
		cmocka_unit_test(test_fast_cap),
		cmocka_unit_test_setup_teardown(test_store_api, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_revoke_on_password_change, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_revoke_on_delete, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_revoke_in_process, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_revoke_seen_at_token_login, setup_dir, teardown_dir),
	};
	if (sodium_init() < 0)
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
