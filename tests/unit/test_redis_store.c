/* tests/unit/test_redis_store.c - the Redis backend's asynchronous operations (store/redis_async.c, store/redis_im.c) on a ring + rlink + store handle, against a real redis-server. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <liburing.h>
#include <sodium.h>

#include "tether/bus.h"
#include "tether/ht.h"
#include "tether/inbox.h"
#include "tether/nodes.h"
#include "tether/rlink.h"
#include "tether/rmsg.h"
#include "tether/scram.h"
#include "tether/store.h"
#include "tether/store_im.h"
#include "tether/sub.h"
#include "tether/timer.h"
#include "tether/token.h"
#include "tether/worker.h"

#include "redis_harness.h"

/* The test owns a ring, a wheel, an rlink and a store handle, and turns the
 * loop as a worker does: submit, wait (up to 10 ms), hand OP_RLINK CQEs to
 * the link, run the wheel, store_poll(). */

static struct rserver srv;

struct env {
	struct io_uring ring;
	struct timer_wheel wheel;
	struct rlink *l;
	struct store *st;
	struct store_handle *h;
};

static struct env E;
static struct store_handle *H;   /* where the helpers issue: E.h, or the memory store's (test_same_as_memory) */
static struct store_handle *MEM; /* polled every turn too when set */
static struct inbox *INBOX;      /* this node's inbox reader, while a test runs one */

static void turn(struct env *e)
{
	struct __kernel_timespec ts = { .tv_sec = 0, .tv_nsec = 10 * 1000000L };
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;
	store_poll(e->h);
	store_flush(e->h); /* the deliveries held this turn (as the worker does) */
	io_uring_submit_and_wait_timeout(&e->ring, &cqe, 1, &ts, NULL);
	io_uring_for_each_cqe(&e->ring, head, cqe) {
		if (ud_op(cqe->user_data) == OP_RLINK)
			rlink_on_cqe(e->l, cqe);
		else if (INBOX && ud_op(cqe->user_data) == OP_INBOX)
			inbox_on_cqe(INBOX, cqe);
		n++;
	}
	io_uring_cq_advance(&e->ring, n);
	timer_wheel_run(&e->wheel);
	store_poll(e->h);
	if (MEM)
		store_poll(MEM);
}

/* Turns until *<flag> >= <want> or <ms> pass. 0 if reached. */
static int run_until(const int *flag, int want, unsigned ms)
{
	uint64_t end = now_ms() + ms;
	while (*flag < want && now_ms() < end)
		turn(&E);
	return *flag >= want ? 0 : -1;
}

static char addr[160];

static void env_open(struct env *e)
{
	char err[256];
	memset(e, 0, sizeof(*e));
	assert_int_equal(io_uring_queue_init(256, &e->ring, 0), 0);
	timer_wheel_init(&e->wheel);
	snprintf(addr, sizeof(addr), "unix:%s", srv.sock);
	e->st = store_open("redis", addr, err, sizeof(err));
	if (!e->st)
		fail_msg("%s", err);
	e->l = rlink_new(&e->ring, &e->wheel, addr, NULL, NULL, err, sizeof(err));
	if (!e->l)
		fail_msg("%s", err);
	assert_non_null(e->h = store_attach(e->st, e->l));
	rlink_start(e->l);
	uint64_t end = now_ms() + 5000;
	while (!rlink_up(e->l) && now_ms() < end)
		turn(e);
	assert_true(rlink_up(e->l));
}

/* The order a worker follows: the link's commands fail (their operations
 * become ready), then the handle goes, then the link. */
static void env_close(struct env *e)
{
	uint64_t end = now_ms() + 5000;
	rlink_stop(e->l);
	while (!rlink_stopped(e->l) && now_ms() < end)
		turn(e);
	assert_true(rlink_stopped(e->l));
	store_detach(e->h);
	rlink_free(e->l);
	io_uring_queue_exit(&e->ring);
	store_close(e->st);
}

/* ---- what the callbacks saw --------------------------------------------- */

#define QMAX 128

struct seen {
	int calls;
	int err;
	int has_rec;
	struct sm_record rec;
	char resource[64];
	char bare[64];
	struct sm_entry q[QMAX];   /* a reference each */
	size_t n;
	int has_resp;
	uint8_t resp[HT_HASH_LEN];
	int has_owner;
	struct bus_addr owner;
	struct fast_slots slots;
	struct user_creds creds;
};

static void seen_clear(struct seen *s)
{
	for (size_t i = 0; i < s->n; i++)
		rmsg_unref(s->q[i].msg);
	memset(s, 0, sizeof(*s));
}

static void on_write(void *ud, int err, const struct bus_addr *owner, const struct sm_entry *e)
{
	struct seen *s = ud;
	(void)e;
	s->calls++;
	s->err = err;
	if (owner) {
		s->has_owner = 1;
		s->owner = *owner;
	}
}

static void on_take(void *ud, int err, const struct sm_record *rec, const char *resource,
		    const struct sm_entry *q, size_t n, const uint8_t *resp)
{
	struct seen *s = ud;
	s->calls++;
	s->err = err;
	if (rec) {
		s->has_rec = 1;
		s->rec = *rec;
	}
	snprintf(s->resource, sizeof(s->resource), "%s", resource ? resource : "");
	assert_true(n <= QMAX);
	for (size_t i = 0; i < n; i++) {
		s->q[i] = q[i];
		rmsg_ref(q[i].msg);
	}
	s->n = n;
	if (resp) {
		s->has_resp = 1;
		memcpy(s->resp, resp, HT_HASH_LEN);
	}
}

static void on_drain(void *ud, int err, const struct sm_record *rec, const char *bare,
		     const char *resource, struct sm_entry *q, size_t n)
{
	struct seen *s = ud;
	s->calls++;
	s->err = err;
	if (rec) {
		s->has_rec = 1;
		s->rec = *rec;
	}
	snprintf(s->resource, sizeof(s->resource), "%s", resource ? resource : "");
	snprintf(s->bare, sizeof(s->bare), "%s", bare ? bare : "");
	assert_true(n <= QMAX);
	for (size_t i = 0; i < n; i++)
		s->q[i] = q[i]; /* the references are ours */
	s->n = n;
}

static void on_fast(void *ud, int err, const struct fast_slots *slots)
{
	struct seen *s = ud;
	s->calls++;
	s->err = err;
	s->slots = *slots;
}

static void on_user(void *ud, int err, const struct user_creds *c)
{
	struct seen *s = ud;
	s->calls++;
	s->err = err;
	if (c)
		s->creds = *c;
}

/* ---- helpers ------------------------------------------------------------- */

static const struct bus_addr A = { BUS_NODE_SELF, 0, 5, 1 };
static const struct bus_addr B = { BUS_NODE_SELF, 1, 7, 3 };

static void new_rec(struct sm_record *r, const struct bus_addr *owner, unsigned max)
{
	memset(r, 0, sizeof(*r));
	sm_new_id(r->id);
	r->owner = *owner;
	r->epoch = 1;
	r->max = max;
	r->attached = 1;
}

static void create(const struct sm_record *r, const char *bare, const char *res)
{
	struct seen s = { 0 };
	assert_non_null(store_sm_create_async(E.h, r, bare, res, on_write, &s));
	assert_int_equal(run_until(&s.calls, 1, 3000), 0);
	assert_int_equal(s.err, 0);
}

static struct rmsg *msg(int i, enum rmsg_kind kind)
{
	char body[128], id[16];
	snprintf(id, sizeof(id), "m%d", i);
	int n = snprintf(body, sizeof(body), "<message to='bob@example.com' id='%s'><body>%d</body></message>",
			 id, i);
	struct rmsg *m = rmsg_new(kind, body, (size_t)n, "alice@example.com/phone",
				  "bob@example.com", id, i % 2 ? "chat" : "");
	assert_non_null(m);
	return m;
}

/* Appends entries <from>..<to> (seq = i), all issued in one turn
 * (pipelined); returns when all completed, each with 0. */
static void append_range(const char *id, uint32_t epoch, int from, int to)
{
	static struct seen s[QMAX];
	int n = to - from + 1, done = 0;
	assert_true(n <= QMAX);
	for (int i = 0; i < n; i++) {
		struct sm_entry e = { .seq = (uint32_t)(from + i), .stamp_ms = 0, .msg = msg(from + i, RMSG_MESSAGE) };
		memset(&s[i], 0, sizeof(s[i]));
		assert_non_null(store_sm_append_async(E.h, id, epoch, &e, on_write, &s[i]));
		rmsg_unref(e.msg); /* the op took its own */
	}
	uint64_t end = now_ms() + 5000;
	while (done < n && now_ms() < end) {
		turn(&E);
		done = 0;
		for (int i = 0; i < n; i++)
			done += s[i].calls;
	}
	assert_int_equal(done, n);
	for (int i = 0; i < n; i++)
		assert_int_equal(s[i].err, 0);
}

static void take(struct seen *s, const char *id, const char *bare, const struct bus_addr *to,
		 const struct sm_isr_proof *proof)
{
	seen_clear(s);
	assert_non_null(store_sm_take_async(E.h, id, bare, to, proof, on_take, s));
	assert_int_equal(run_until(&s->calls, 1, 3000), 0);
}

static int write_err(struct store_op *op, struct seen *s)
{
	assert_non_null(op);
	assert_int_equal(run_until(&s->calls, 1, 3000), 0);
	return s->err;
}

static struct sm_isr_proof proof_for(const char *token, uint8_t mech);
static void fast_tok(struct fast_token *t, uint8_t mech, uint8_t fill);
static const uint8_t tkey[TOKEN_KEY_LEN];

/* ---- the same script on both backends ------------------------------------- */

/* What one step of the script saw, with what legitimately differs left
 * out: expires_ms (each backend's clock), has_isr of a record handed out
 * (the memory record carries the token; Redis keeps it beside the record),
 * entry stamps (the caller's clock vs Redis TIME), FAST version numbers
 * (one counter per table vs one per account: compared as "changed"). */
struct step {
	int err, has_rec, has_owner, has_resp, n;
	struct sm_record rec;
	struct bus_addr owner;
	char resource[64], bare[64];
	uint32_t seq[8];
	int kind[8];
	char data[8][96], attrs[8][96];
	struct fast_slots slots;
};

static void step_from(struct step *st, const struct seen *s)
{
	memset(st, 0, sizeof(*st));
	st->err = s->err;
	st->has_rec = s->has_rec;
	if (s->has_rec) {
		const struct sm_record *r = &s->rec;
		snprintf(st->rec.id, sizeof(st->rec.id), "%s", r->id);
		st->rec.owner = r->owner;
		st->rec.epoch = r->epoch;
		st->rec.c = r->c;
		st->rec.max = r->max;
		st->rec.attached = r->attached;
		st->rec.available = r->available;
		st->rec.priority = r->priority;
	}
	st->has_owner = s->has_owner;
	if (s->has_owner)
		st->owner = s->owner;
	st->has_resp = s->has_resp;
	snprintf(st->resource, sizeof(st->resource), "%s", s->resource);
	snprintf(st->bare, sizeof(st->bare), "%s", s->bare);
	st->n = (int)s->n;
	for (size_t i = 0; i < s->n && i < 8; i++) {
		const struct rmsg *m = s->q[i].msg;
		st->seq[i] = s->q[i].seq;
		st->kind[i] = m->kind;
		snprintf(st->data[i], sizeof(st->data[i]), "%.*s", (int)m->len, m->data);
		snprintf(st->attrs[i], sizeof(st->attrs[i]), "%s|%s|%s|%s", m->from, m->to, m->id, m->type);
	}
	st->slots.fresh = s->slots.fresh;
	st->slots.current = s->slots.current;
	st->slots.version = s->slots.version != 0;
}

#define SCRIPT_STEPS 40

/* Runs the script on <H>, recording each step's result into <out>.
 * Returns the number of steps. */
static int script(struct step *out, const char *sid, const char *bare)
{
	struct seen s = { 0 };
	int k = 0;
	struct sm_record r;
	char tok[TOKEN_LEN + 1] = "0123456789012345678901234567890123456789012";
	uint8_t sealed[TOKEN_SEALED_LEN];
	uint8_t nonce[24] = { 0 };
	/* a deterministic seal: both runs must present the same token */
	memcpy(sealed, nonce, 24);
	crypto_secretbox_easy(sealed + 24, (const uint8_t *)tok, TOKEN_LEN, nonce, tkey);
	memset(&r, 0, sizeof(r));
	snprintf(r.id, sizeof(r.id), "%s", sid);
	r.owner = A;
	r.epoch = 1;
	r.max = 300;
	r.attached = 1;
	r.available = 1;
	r.priority = 2;
#define DO(call) do { seen_clear(&s); assert_non_null(call); \
		assert_int_equal(run_until(&s.calls, 1, 3000), 0); step_from(&out[k++], &s); } while (0)
	DO(store_sm_create_async(H, &r, bare, "r1", on_write, &s));
	DO(store_sm_create_async(H, &r, bare, "r1", on_write, &s));
	for (int i = 1; i <= 3; i++) {
		struct sm_entry e = { .seq = (uint32_t)i, .stamp_ms = 1, .msg = msg(i, (enum rmsg_kind)(i - 1)) };
		DO(store_sm_append_async(H, sid, 1, &e, on_write, &s));
		rmsg_unref(e.msg);
	}
	DO(store_sm_ack_async(H, sid, 1, 1, on_write, &s));
	DO(store_sm_ack_async(H, sid, 1, 9, on_write, &s));
	r.c.h_in = 4;
	r.attached = 0;
	r.expires_ms = timer_now_ms() + 300000;
	DO(store_sm_update_async(H, &r, on_write, &s));
	DO(store_sm_set_isr_async(H, sid, 1, 1, HT_EXPR, sealed, on_write, &s));
	DO(store_sm_take_async(H, sid, bare, &B, NULL, on_take, &s));
	struct sm_entry e = { .seq = 4, .stamp_ms = 1, .msg = msg(4, RMSG_MESSAGE) };
	DO(store_sm_append_async(H, sid, 1, &e, on_write, &s));
	rmsg_unref(e.msg);
	DO(store_sm_ack_async(H, sid, 1, 2, on_write, &s));
	DO(store_sm_update_async(H, &r, on_write, &s));
	DO(store_sm_set_isr_async(H, sid, 1, 0, 0, sealed, on_write, &s));
	DO(store_sm_destroy_async(H, sid, 1, on_drain, &s));
	struct sm_isr_proof p = proof_for(tok, HT_ENDP);
	DO(store_sm_take_async(H, sid, bare, &B, &p, on_take, &s));   /* another mechanism */
	p = proof_for(tok, HT_EXPR);
	DO(store_sm_take_async(H, sid, bare, &B, &p, on_take, &s));   /* burnt */
	DO(store_sm_set_isr_async(H, sid, 2, 1, HT_EXPR, sealed, on_write, &s));
	DO(store_sm_take_async(H, sid, bare, &A, &p, on_take, &s));   /* matches */
	DO(store_sm_take_async(H, sid, bare, &A, &p, on_take, &s));   /* consumed */
	DO(store_sm_take_async(H, sid, "other@example.com", &A, NULL, on_take, &s));
	DO(store_sm_ack_async(H, sid, 3, 3, on_write, &s));
	DO(store_sm_destroy_async(H, sid, 3, on_drain, &s));
	DO(store_sm_take_async(H, sid, bare, &A, NULL, on_take, &s));
	DO(store_sm_destroy_async(H, sid, 0, on_drain, &s));
	struct fast_slots in = { 0 };
	fast_tok(&in.fresh, HT_EXPR, 0x44);
	DO(store_fast_get_async(H, bare, "ua", on_fast, &s));
	DO(store_fast_cas_async(H, bare, "ua", &in, on_fast, &s));
	in.version = s.slots.version;
	DO(store_fast_get_async(H, bare, "ua", on_fast, &s));
	struct fast_slots stale = in;
	stale.version = 0;
	DO(store_fast_cas_async(H, bare, "ua", &stale, on_fast, &s));
	struct fast_slots none = { .version = in.version };
	DO(store_fast_cas_async(H, bare, "ua", &none, on_fast, &s));
	DO(store_user_get_async(H, "nobody@example.com", on_user, &s));
#undef DO
	seen_clear(&s);
	assert_true(k <= SCRIPT_STEPS);
	return k;
}

/* ---- tests --------------------------------------------------------------- */

/* The async user lookup goes through rlink and gives what user_put wrote. */
static void test_user_get(void **state)
{
	(void)state;
	struct user_creds c;
	struct seen s = { 0 };
	assert_int_equal(scram_creds_derive("secret", 4096, &c), 0);
	assert_int_equal(store_user_put(E.st, "u1@example.com", &c), 0);
	assert_non_null(store_user_get_async(E.h, "u1@example.com", on_user, &s));
	assert_int_equal(run_until(&s.calls, 1, 3000), 0);
	assert_int_equal(s.err, 0);
	assert_int_equal(s.creds.iterations, 4096);
	assert_memory_equal(s.creds.stored_key_sha256, c.stored_key_sha256, 32);
	assert_memory_equal(s.creds.server_key_sha1, c.server_key_sha1, 20);
	memset(&s, 0, sizeof(s));
	assert_non_null(store_user_get_async(E.h, "nobody@example.com", on_user, &s));
	assert_int_equal(run_until(&s.calls, 1, 3000), 0);
	assert_int_equal(s.err, -ENOENT);
}

/* Each write's result; a take hands out the record before (with the new
 * epoch), the resource, and the queue with payloads and attributes intact. */
static void test_session_ops(void **state)
{
	(void)state;
	struct sm_record r;
	struct seen s = { 0 };
	const char *bare = "alice@example.com";
	new_rec(&r, &A, 300);
	r.available = 1;
	r.priority = -5;
	create(&r, bare, "phone");
	/* the same id again */
	assert_int_equal(write_err(store_sm_create_async(E.h, &r, bare, "phone", on_write, &s), &s), -EEXIST);

	/* three entries of each kind, pipelined */
	enum rmsg_kind kinds[3] = { RMSG_MESSAGE, RMSG_PRESENCE, RMSG_IQ };
	struct seen as[3] = { 0 };
	for (int i = 0; i < 3; i++) {
		struct sm_entry e = { .seq = (uint32_t)i + 1, .msg = msg(i + 1, kinds[i]) };
		assert_non_null(store_sm_append_async(E.h, r.id, 1, &e, on_write, &as[i]));
		rmsg_unref(e.msg);
	}
	assert_int_equal(run_until(&as[2].calls, 1, 3000), 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(as[i].err, 0);

	/* ack: one released; too far is -ERANGE */
	memset(&s, 0, sizeof(s));
	assert_int_equal(write_err(store_sm_ack_async(E.h, r.id, 1, 1, on_write, &s), &s), 0);
	memset(&s, 0, sizeof(s));
	assert_int_equal(write_err(store_sm_ack_async(E.h, r.id, 1, 9, on_write, &s), &s), -ERANGE);

	/* update: detached, h_in 7, presence kept */
	r.c.h_in = 7;
	r.attached = 0;
	r.expires_ms = timer_now_ms() + 300000;
	memset(&s, 0, sizeof(s));
	assert_int_equal(write_err(store_sm_update_async(E.h, &r, on_write, &s), &s), 0);

	/* unknown session id (never created through this node) */
	char other[SM_ID_LEN + 1];
	sm_new_id(other);
	memset(&s, 0, sizeof(s));
	assert_int_equal(write_err(store_sm_ack_async(E.h, other, 1, 0, on_write, &s), &s), -ENOENT);

	struct seen t = { 0 };
	take(&t, r.id, bare, &B, NULL);
	assert_int_equal(t.err, 0);
	assert_true(t.has_rec);
	assert_string_equal(t.rec.id, r.id);
	assert_int_equal(t.rec.epoch, 2);
	assert_true(bus_addr_eq(&t.rec.owner, &A)); /* the owner before, read back equal */
	assert_int_equal(t.rec.c.h_in, 7);
	assert_int_equal(t.rec.c.out, 3);
	assert_int_equal(t.rec.c.acked, 1);
	assert_int_equal(t.rec.max, 300);
	assert_int_equal(t.rec.attached, 0);
	assert_int_equal(t.rec.available, 1);
	assert_int_equal(t.rec.priority, -5);
	assert_string_equal(t.resource, "phone");
	assert_false(t.has_resp);
	assert_int_equal(t.n, 2);
	for (size_t i = 0; i < 2; i++) {
		const struct rmsg *m = t.q[i].msg;
		char want[128], id[16];
		snprintf(id, sizeof(id), "m%zu", i + 2);
		int n = snprintf(want, sizeof(want),
				 "<message to='bob@example.com' id='%s'><body>%zu</body></message>", id, i + 2);
		assert_int_equal(t.q[i].seq, i + 2);
		assert_true(t.q[i].stamp_ms > 1700000000000ull); /* Redis TIME, wall clock */
		assert_int_equal(m->kind, kinds[i + 1]);
		assert_int_equal(m->len, (size_t)n);
		assert_memory_equal(m->data, want, (size_t)n);
		assert_string_equal(m->from, "alice@example.com/phone");
		assert_string_equal(m->to, "bob@example.com");
		assert_string_equal(m->id, id);
		assert_string_equal(m->type, (i + 2) % 2 ? "chat" : "");
	}
	seen_clear(&t);

	/* set_isr by the new owner; destroy hands out the record and queue */
	uint8_t sealed[TOKEN_SEALED_LEN] = { 1, 2, 3 };
	memset(&s, 0, sizeof(s));
	assert_int_equal(write_err(store_sm_set_isr_async(E.h, r.id, 2, 1, HT_EXPR, sealed, on_write, &s), &s), 0);
	memset(&s, 0, sizeof(s));
	assert_non_null(store_sm_destroy_async(E.h, r.id, 2, on_drain, &s));
	assert_int_equal(run_until(&s.calls, 1, 3000), 0);
	assert_int_equal(s.err, 0);
	assert_true(s.has_rec);
	assert_int_equal(s.rec.epoch, 2);
	assert_true(bus_addr_eq(&s.rec.owner, &B));
	assert_string_equal(s.bare, bare);
	assert_string_equal(s.resource, "phone");
	assert_int_equal(s.n, 2);
	assert_int_equal(s.q[0].seq, 2);
	assert_int_equal(s.q[1].msg->kind, RMSG_IQ);
	seen_clear(&s);
	/* gone */
	take(&t, r.id, bare, &B, NULL);
	assert_int_equal(t.err, -ENOENT);
	assert_false(t.has_rec);
	assert_non_null(store_sm_destroy_async(E.h, r.id, 0, on_drain, &s));
	assert_int_equal(run_until(&s.calls, 1, 3000), 0);
	assert_int_equal(s.err, -ENOENT);
	/* another account's session id is unknown */
	new_rec(&r, &A, 300);
	create(&r, bare, "laptop");
	take(&t, r.id, "mallory@example.com", &B, NULL);
	assert_int_equal(t.err, -ENOENT);
	/* not resumable (max 0) */
	new_rec(&r, &A, 0);
	create(&r, bare, "pc");
	take(&t, r.id, bare, &B, NULL);
	assert_int_equal(t.err, -ENOENT);
}

/* After a takeover, the old owner's writes fail with -ESTALE; append
 * names the owner now, also when it is another node. */
static void test_fencing(void **state)
{
	(void)state;
	struct sm_record r;
	struct seen s = { 0 }, t = { 0 };
	const char *bare = "fence@example.com";
	new_rec(&r, &A, 300);
	create(&r, bare, "phone");
	take(&t, r.id, bare, &B, NULL);
	assert_int_equal(t.err, 0);
	seen_clear(&t);

	struct sm_entry e = { .seq = 1, .msg = msg(1, RMSG_MESSAGE) };
	assert_int_equal(write_err(store_sm_append_async(E.h, r.id, 1, &e, on_write, &s), &s), -ESTALE);
	assert_true(s.has_owner);
	assert_true(bus_addr_eq(&s.owner, &B));
	memset(&s, 0, sizeof(s));
	assert_int_equal(write_err(store_sm_ack_async(E.h, r.id, 1, 0, on_write, &s), &s), -ESTALE);
	memset(&s, 0, sizeof(s));
	assert_int_equal(write_err(store_sm_update_async(E.h, &r, on_write, &s), &s), -ESTALE);
	uint8_t sealed[TOKEN_SEALED_LEN] = { 0 };
	memset(&s, 0, sizeof(s));
	assert_int_equal(write_err(store_sm_set_isr_async(E.h, r.id, 1, 1, 0, sealed, on_write, &s), &s), -ESTALE);
	memset(&s, 0, sizeof(s));
	assert_non_null(store_sm_destroy_async(E.h, r.id, 1, on_drain, &s));
	assert_int_equal(run_until(&s.calls, 1, 3000), 0);
	assert_int_equal(s.err, -ESTALE);
	/* the new owner still writes */
	memset(&s, 0, sizeof(s));
	assert_int_equal(write_err(store_sm_append_async(E.h, r.id, 2, &e, on_write, &s), &s), 0);

	/* Taken by node "b": the owner read back is that node's number. */
	struct bus_addr C = { nodes_intern("b"), 2, 9, 4 };
	assert_true(C.node != BUS_NODE_SELF && C.node != NODES_NONE);
	take(&t, r.id, bare, &C, NULL);
	assert_int_equal(t.err, 0);
	assert_true(bus_addr_eq(&t.rec.owner, &B));
	seen_clear(&t);
	memset(&s, 0, sizeof(s));
	assert_int_equal(write_err(store_sm_append_async(E.h, r.id, 2, &e, on_write, &s), &s), -ESTALE);
	assert_true(bus_addr_eq(&s.owner, &C));
	rmsg_unref(e.msg);
}

/* Owners left by a previous run of this node (its name, another or no
 * incarnation) never read back as this node: a slot and generation of
 * theirs may belong to an unrelated stream now. */
static void test_owner_of_previous_run(void **state)
{
	(void)state;
	struct rproto *rp = rproto_new(NULL);
	int fd = rs_connect(&srv);
	struct rcopy c = { 0 };
	const char *bare = "prev@example.com";
	const char *owners[] = { "a.00000000/0/5/1", "a/0/5/1" };
	for (int i = 0; i < 2; i++) {
		char sid[SM_ID_LEN + 1], krec[160], kdir[160];
		sm_new_id(sid);
		snprintf(krec, sizeof(krec), "t:{%s}:s:%s", bare, sid);
		snprintf(kdir, sizeof(kdir), "t:{%s}:dir", bare);
		assert_int_equal(RS_CMD(rp, fd, &c, "FCALL", "tether_sm_create", "2", krec, kdir, sid,
					owners[i], "r", "300"), 0);
		assert_null(c.err);
		struct seen t = { 0 };
		take(&t, sid, bare, &B, NULL);
		assert_int_equal(t.err, 0);
		assert_true(t.rec.owner.node != BUS_NODE_SELF);
		assert_true(t.rec.owner.node != NODES_NONE);
		assert_int_equal(t.rec.owner.slot, 5);
		assert_false(bus_addr_eq(&t.rec.owner, &A));
		seen_clear(&t);
		/* and what this run writes reads back as this node */
		RS_CMD(rp, fd, &c, "HGET", krec, "owner");
		char want[64];
		snprintf(want, sizeof(want), "a.%s/1/7/3", nodes_boot());
		assert_string_equal(c.str, want);
	}
	rcopy_clear(&c);
	rproto_free(rp);
	close(fd);
}

/* Appends complete in order; a take returns them in order; an ack releases
 * exactly the entries up to h. */
static void test_append_order_ack(void **state)
{
	(void)state;
	struct sm_record r;
	struct seen s = { 0 }, t = { 0 };
	const char *bare = "order@example.com";
	new_rec(&r, &A, 300);
	create(&r, bare, "phone");
	append_range(r.id, 1, 1, 100);
	assert_int_equal(write_err(store_sm_ack_async(E.h, r.id, 1, 40, on_write, &s), &s), 0);
	take(&t, r.id, bare, &B, NULL);
	assert_int_equal(t.err, 0);
	assert_int_equal(t.rec.c.out, 100);
	assert_int_equal(t.rec.c.acked, 40);
	assert_int_equal(t.n, 60);
	for (size_t i = 0; i < t.n; i++) {
		char id[16];
		snprintf(id, sizeof(id), "m%zu", i + 41);
		assert_int_equal(t.q[i].seq, i + 41);
		assert_string_equal(t.q[i].msg->id, id);
	}
	seen_clear(&t);
}

static const uint8_t tkey[TOKEN_KEY_LEN] = { 9, 8, 7 };

static struct sm_isr_proof proof_for(const char *token, uint8_t mech)
{
	struct sm_isr_proof p = { .mech = mech, .key = tkey, .cb_len = 4 };
	memcpy(p.cb, "cbcb", 4);
	ht_initiator_hash(token, p.cb, p.cb_len, p.hash);
	return p;
}

/* ISR: a wrong proof is -EACCES with the record and burns the token;
 * eight takes with one valid token at once: exactly one succeeds. */
static void test_isr(void **state)
{
	(void)state;
	struct sm_record r;
	struct seen s = { 0 }, t = { 0 };
	const char *bare = "isr@example.com";
	char tok[TOKEN_LEN + 1], other[TOKEN_LEN + 1];
	uint8_t sealed[TOKEN_SEALED_LEN], resp[HT_HASH_LEN];
	token_new(tok);
	token_new(other);
	assert_int_equal(token_seal(tkey, tok, sealed), 0);
	new_rec(&r, &A, 300);
	create(&r, bare, "phone");
	assert_int_equal(write_err(store_sm_set_isr_async(E.h, r.id, 1, 1, HT_EXPR, sealed, on_write, &s), &s), 0);

	/* no such session: -EACCES, no record */
	char nope[SM_ID_LEN + 1];
	sm_new_id(nope);
	struct sm_isr_proof p = proof_for(tok, HT_EXPR);
	take(&t, nope, bare, &B, &p);
	assert_int_equal(t.err, -EACCES);
	assert_false(t.has_rec);
	/* another mechanism: refused, the token dies */
	p = proof_for(tok, HT_ENDP);
	take(&t, r.id, bare, &B, &p);
	assert_int_equal(t.err, -EACCES);
	assert_true(t.has_rec);
	assert_int_equal(t.rec.epoch, 1);
	assert_int_equal(t.rec.has_isr, 0);
	p = proof_for(tok, HT_EXPR);
	take(&t, r.id, bare, &B, &p);
	assert_int_equal(t.err, -EACCES);
	/* a wrong token */
	memset(&s, 0, sizeof(s));
	assert_int_equal(write_err(store_sm_set_isr_async(E.h, r.id, 1, 1, HT_EXPR, sealed, on_write, &s), &s), 0);
	p = proof_for(other, HT_EXPR);
	take(&t, r.id, bare, &B, &p);
	assert_int_equal(t.err, -EACCES);
	p = proof_for(tok, HT_EXPR);
	take(&t, r.id, bare, &B, &p);
	assert_int_equal(t.err, -EACCES);

	/* eight at once with the right token: one wins */
	memset(&s, 0, sizeof(s));
	assert_int_equal(write_err(store_sm_set_isr_async(E.h, r.id, 1, 1, HT_EXPR, sealed, on_write, &s), &s), 0);
	static struct seen many[8];
	for (int i = 0; i < 8; i++) {
		struct bus_addr to = { BUS_NODE_SELF, 3, (uint32_t)(100 + i), 1 };
		seen_clear(&many[i]);
		p = proof_for(tok, HT_EXPR);
		assert_non_null(store_sm_take_async(E.h, r.id, bare, &to, &p, on_take, &many[i]));
	}
	assert_int_equal(run_until(&many[7].calls, 1, 5000), 0);
	int wins = 0;
	ht_responder_hash(tok, p.cb, p.cb_len, resp);
	for (int i = 0; i < 8; i++) {
		assert_int_equal(many[i].calls, 1);
		if (many[i].err == 0) {
			wins++;
			assert_true(many[i].has_resp);
			assert_memory_equal(many[i].resp, resp, HT_HASH_LEN);
			assert_int_equal(many[i].rec.epoch, 2);
		} else {
			assert_int_equal(many[i].err, -EACCES);
			assert_false(many[i].has_resp);
		}
		seen_clear(&many[i]);
	}
	assert_int_equal(wins, 1);
	/* consumed */
	take(&t, r.id, bare, &B, &p);
	assert_int_equal(t.err, -EACCES);
	seen_clear(&t);
}

static void fast_tok(struct fast_token *t, uint8_t mech, uint8_t fill)
{
	t->valid = 1;
	t->mech = mech;
	t->expiry_ms = 1900000000000ull + fill;
	memset(t->sealed, fill, sizeof(t->sealed));
}

/* FAST: version CAS; a stale version is -ESTALE; an empty write deletes. */
static void test_fast(void **state)
{
	(void)state;
	struct seen s = { 0 };
	const char *bare = "fast@example.com";
	assert_non_null(store_fast_get_async(E.h, bare, "ua1", on_fast, &s));
	assert_int_equal(run_until(&s.calls, 1, 3000), 0);
	assert_int_equal(s.err, -ENOENT);
	assert_int_equal(s.slots.version, 0);
	assert_false(s.slots.fresh.valid);

	struct fast_slots in = { 0 };
	fast_tok(&in.fresh, HT_EXPR, 0x11);
	memset(&s, 0, sizeof(s));
	assert_non_null(store_fast_cas_async(E.h, bare, "ua1", &in, on_fast, &s));
	assert_int_equal(run_until(&s.calls, 1, 3000), 0);
	assert_int_equal(s.err, 0);
	uint64_t v1 = s.slots.version;
	assert_true(v1 > 0);

	memset(&s, 0, sizeof(s));
	assert_non_null(store_fast_get_async(E.h, bare, "ua1", on_fast, &s));
	assert_int_equal(run_until(&s.calls, 1, 3000), 0);
	assert_int_equal(s.err, 0);
	assert_int_equal(s.slots.version, v1);
	assert_true(s.slots.fresh.valid);
	assert_false(s.slots.current.valid);
	assert_int_equal(s.slots.fresh.mech, HT_EXPR);
	assert_int_equal(s.slots.fresh.expiry_ms, in.fresh.expiry_ms);
	assert_memory_equal(s.slots.fresh.sealed, in.fresh.sealed, TOKEN_SEALED_LEN);

	/* rotation: promote fresh to current, based on v1 */
	struct fast_slots next = s.slots;
	next.current = next.fresh;
	fast_tok(&next.fresh, HT_EXPR, 0x22);
	memset(&s, 0, sizeof(s));
	assert_non_null(store_fast_cas_async(E.h, bare, "ua1", &next, on_fast, &s));
	assert_int_equal(run_until(&s.calls, 1, 3000), 0);
	assert_int_equal(s.err, 0);
	uint64_t v2 = s.slots.version;
	assert_true(v2 > v1);
	/* a second writer that read v1: stale */
	in.version = v1;
	memset(&s, 0, sizeof(s));
	assert_non_null(store_fast_cas_async(E.h, bare, "ua1", &in, on_fast, &s));
	assert_int_equal(run_until(&s.calls, 1, 3000), 0);
	assert_int_equal(s.err, -ESTALE);
	/* creating what exists: stale too */
	in.version = 0;
	memset(&s, 0, sizeof(s));
	assert_non_null(store_fast_cas_async(E.h, bare, "ua1", &in, on_fast, &s));
	assert_int_equal(run_until(&s.calls, 1, 3000), 0);
	assert_int_equal(s.err, -ESTALE);
	/* delete */
	struct fast_slots none = { .version = v2 };
	memset(&s, 0, sizeof(s));
	assert_non_null(store_fast_cas_async(E.h, bare, "ua1", &none, on_fast, &s));
	assert_int_equal(run_until(&s.calls, 1, 3000), 0);
	assert_int_equal(s.err, 0);
	assert_int_equal(s.slots.version, 0);
	memset(&s, 0, sizeof(s));
	assert_non_null(store_fast_get_async(E.h, bare, "ua1", on_fast, &s));
	assert_int_equal(run_until(&s.calls, 1, 3000), 0);
	assert_int_equal(s.err, -ENOENT);
}

/* A password change (the blocking user_put, as tetherctl does) revokes the
 * account's FAST and ISR tokens. */
static void test_password_revokes(void **state)
{
	(void)state;
	struct seen s = { 0 }, t = { 0 };
	const char *bare = "pw@example.com";
	struct user_creds c;
	assert_int_equal(scram_creds_derive("one", 4096, &c), 0);
	assert_int_equal(store_user_put(E.st, bare, &c), 0);
	struct fast_slots in = { 0 };
	fast_tok(&in.fresh, HT_EXPR, 0x33);
	assert_non_null(store_fast_cas_async(E.h, bare, "ua", &in, on_fast, &s));
	assert_int_equal(run_until(&s.calls, 1, 3000), 0);
	assert_int_equal(s.err, 0);
	uint64_t v = s.slots.version;

	struct sm_record r;
	char tok[TOKEN_LEN + 1];
	uint8_t sealed[TOKEN_SEALED_LEN];
	token_new(tok);
	assert_int_equal(token_seal(tkey, tok, sealed), 0);
	new_rec(&r, &A, 300);
	create(&r, bare, "phone");
	memset(&s, 0, sizeof(s));
	assert_int_equal(write_err(store_sm_set_isr_async(E.h, r.id, 1, 1, HT_EXPR, sealed, on_write, &s), &s), 0);

	assert_int_equal(scram_creds_derive("two", 4096, &c), 0);
	assert_int_equal(store_user_put(E.st, bare, &c), 0);

	memset(&s, 0, sizeof(s));
	assert_non_null(store_fast_get_async(E.h, bare, "ua", on_fast, &s));
	assert_int_equal(run_until(&s.calls, 1, 3000), 0);
	assert_int_equal(s.err, -ENOENT);
	/* a CAS based on the read from before fails */
	in.version = v;
	memset(&s, 0, sizeof(s));
	assert_non_null(store_fast_cas_async(E.h, bare, "ua", &in, on_fast, &s));
	assert_int_equal(run_until(&s.calls, 1, 3000), 0);
	assert_int_equal(s.err, -ESTALE);
	struct sm_isr_proof p = proof_for(tok, HT_EXPR);
	take(&t, r.id, bare, &B, &p);
	assert_int_equal(t.err, -EACCES);
	/* the session itself stays: a classic resume works */
	take(&t, r.id, bare, &B, NULL);
	assert_int_equal(t.err, 0);
	seen_clear(&t);
}

/* A take cancelled before its reply, that Redis performed: compensated
 * (detached, the previous owner, its epoch), so a later take finds it. */
static void test_cancelled_take(void **state)
{
	(void)state;
	struct sm_record r;
	struct seen s = { 0 }, t = { 0 }, probe = { 0 };
	const char *bare = "cancel@example.com";
	new_rec(&r, &A, 300);
	create(&r, bare, "phone");
	append_range(r.id, 1, 1, 3);

	seen_clear(&t);
	struct store_op *op = store_sm_take_async(E.h, r.id, bare, &B, NULL, on_take, &t);
	assert_non_null(op);
	store_op_cancel(op);
	assert_int_equal(store_pending(E.h), 0);
	/* Two probes: the first completes after the take's reply (so the
	 * compensation was sent), the second after the compensation ran. */
	for (int i = 0; i < 2; i++) {
		memset(&probe, 0, sizeof(probe));
		assert_non_null(store_user_get_async(E.h, "nobody@example.com", on_user, &probe));
		assert_int_equal(run_until(&probe.calls, 1, 3000), 0);
	}
	assert_int_equal(t.calls, 0); /* never called */

	/* The old owner's writes are fenced (the take did happen)... */
	struct sm_entry e = { .seq = 4, .msg = msg(4, RMSG_MESSAGE) };
	assert_int_equal(write_err(store_sm_append_async(E.h, r.id, 1, &e, on_write, &s), &s), -ESTALE);
	rmsg_unref(e.msg);
	/* ...and the session is resumable: detached, owner A, queue intact. */
	struct bus_addr C = { BUS_NODE_SELF, 2, 11, 5 };
	take(&t, r.id, bare, &C, NULL);
	assert_int_equal(t.err, 0);
	assert_int_equal(t.rec.epoch, 3);
	assert_int_equal(t.rec.attached, 0);
	assert_true(bus_addr_eq(&t.rec.owner, &A));
	assert_int_equal(t.n, 3);
	seen_clear(&t);
}

/* Pipelining: 10000 appends of a 200-byte stanza, issued 500 per loop
 * turn, all complete, in order; the rate is printed (no bound asserted: a
 * shared machine). */
static void count_write(void *ud, int err, const struct bus_addr *owner, const struct sm_entry *e)
{
	int *n = ud;
	(void)owner; (void)e;
	assert_int_equal(err, 0);
	(*n)++;
}

static void test_throughput(void **state)
{
	(void)state;
	struct sm_record r;
	const char *bare = "bulk@example.com";
	char body[200];
	memset(body, 'x', sizeof(body));
	memcpy(body, "<message>", 9);
	memcpy(body + sizeof(body) - 10, "</message>", 10);
	new_rec(&r, &A, 300);
	create(&r, bare, "phone");
	struct rmsg *m = rmsg_new(RMSG_MESSAGE, body, sizeof(body), "a@b/c", "d@e", "i", "chat");
	assert_non_null(m);
	int done = 0, issued = 0, total = 10000;
	uint64_t t0 = now_ms();
	while (done < total && now_ms() - t0 < 20000) {
		for (int i = 0; i < 500 && issued < total; i++, issued++) {
			struct sm_entry e = { .seq = (uint32_t)issued + 1, .msg = m };
			assert_non_null(store_sm_append_async(E.h, r.id, 1, &e, count_write, &done));
		}
		turn(&E);
	}
	uint64_t ms = now_ms() - t0;
	rmsg_unref(m);
	assert_int_equal(done, total);
	print_message("%d pipelined appends in %llu ms (%.0f/s)\n", total, (unsigned long long)ms,
		      ms ? total * 1000.0 / (double)ms : 0.0);
	struct seen s = { 0 };
	assert_int_equal(write_err(store_sm_ack_async(E.h, r.id, 1, (uint32_t)total, on_write, &s), &s), 0);
}

/* FUNCTION FLUSH under a live link: the op that sees it fails (-EIO), the
 * library is loaded again, the next op works. */
static void test_function_flush(void **state)
{
	(void)state;
	struct rproto *rp = rproto_new(NULL);
	int fd = rs_connect(&srv);
	struct rcopy c = { 0 };
	assert_int_equal(RS_CMD(rp, fd, &c, "FUNCTION", "FLUSH"), 0);
	rcopy_clear(&c);
	struct sm_record r;
	struct seen s = { 0 };
	new_rec(&r, &A, 300);
	assert_int_equal(write_err(store_sm_create_async(E.h, &r, "flush@example.com", "p", on_write, &s), &s), -EIO);
	/* the reload goes out behind it; the next create finds the library */
	new_rec(&r, &A, 300);
	create(&r, "flush@example.com", "p");
	rproto_free(rp);
	close(fd);
}

/* A paused Redis: the deadline passes, -ETIMEDOUT; the link reconnects. */
static void test_timeout(void **state)
{
	(void)state;
	struct rproto *rp = rproto_new(NULL);
	int fd = rs_connect(&srv);
	struct rcopy c = { 0 };
	assert_int_equal(RS_CMD(rp, fd, &c, "CLIENT", "PAUSE", "2600", "ALL"), 0);
	rcopy_clear(&c);
	struct seen s = { 0 };
	assert_non_null(store_user_get_async(E.h, "nobody@example.com", on_user, &s));
	assert_int_equal(run_until(&s.calls, 1, 5000), 0);
	assert_int_equal(s.err, -ETIMEDOUT);
	rproto_free(rp);
	close(fd);
	uint64_t end = now_ms() + 5000;
	while (!rlink_up(E.l) && now_ms() < end)
		turn(&E);
	/* the pause may still hold the first command of the new link */
	memset(&s, 0, sizeof(s));
	end = now_ms() + 6000;
	do {
		memset(&s, 0, sizeof(s));
		assert_non_null(store_user_get_async(E.h, "nobody@example.com", on_user, &s));
		assert_int_equal(run_until(&s.calls, 1, 5000), 0);
	} while (s.err != -ENOENT && now_ms() < end);
	assert_int_equal(s.err, -ENOENT);
}

/* Redis goes away: operations fail with -ENOTCONN, at once or when the
 * link drops; a Redis that restarts empty gets the library from the link's
 * hello, and sessions work again. */
static void test_restart(void **state)
{
	(void)state;
	struct seen s = { 0 };
	rs_stop(&srv);
	uint64_t end = now_ms() + 5000;
	while (rlink_up(E.l) && now_ms() < end)
		turn(&E);
	assert_false(rlink_up(E.l));
	struct sm_record r;
	new_rec(&r, &A, 300);
	assert_non_null(store_sm_create_async(E.h, &r, "restart@example.com", "p", on_write, &s));
	assert_int_equal(run_until(&s.calls, 1, 3000), 0);
	assert_int_equal(s.err, -ENOTCONN);
	memset(&s, 0, sizeof(s));
	assert_non_null(store_user_get_async(E.h, "u1@example.com", on_user, &s));
	assert_int_equal(run_until(&s.calls, 1, 3000), 0);
	assert_int_equal(s.err, -ENOTCONN);

	rs_start(&srv, 0); /* no AOF, no RDB: empty, without the library */
	end = now_ms() + 5000;
	while (!rlink_up(E.l) && now_ms() < end)
		turn(&E);
	assert_true(rlink_up(E.l));
	new_rec(&r, &A, 300);
	create(&r, "restart@example.com", "p");
	append_range(r.id, 1, 1, 2);
	struct seen t = { 0 };
	take(&t, r.id, "restart@example.com", &B, NULL);
	assert_int_equal(t.err, 0);
	assert_int_equal(t.n, 2);
	seen_clear(&t);
}

static int tok_eq(const struct fast_token *a, const struct fast_token *b)
{
	return a->valid == b->valid && (!a->valid || (a->mech == b->mech && a->expiry_ms == b->expiry_ms &&
						      !memcmp(a->sealed, b->sealed, TOKEN_SEALED_LEN)));
}

/* The asynchronous operations give what the memory backend gives, step
 * by step, for one script of creates, writes, fencing, takes with and
 * without ISR proofs, destroys and FAST compare-and-sets. */
static void test_same_as_memory(void **state)
{
	(void)state;
	char dir[] = "/tmp/tether-memstore-XXXXXX", err[256], sid[SM_ID_LEN + 1];
	assert_non_null(mkdtemp(dir));
	struct store *mst = store_open("memory", dir, err, sizeof(err));
	assert_non_null(mst);
	assert_non_null(MEM = store_attach(mst, NULL));
	static struct step mem[SCRIPT_STEPS], red[SCRIPT_STEPS];
	sm_new_id(sid);
	H = MEM;
	int nm = script(mem, sid, "same@example.com");
	H = E.h;
	int nr = script(red, sid, "same@example.com");
	assert_int_equal(nm, nr);
	for (int i = 0; i < nm; i++) {
		const struct step *a = &mem[i], *b = &red[i];
		/* -ESTALE names the owner now "when known": the memory backend
		 * knows it for append only, Redis for every write. */
		if (a->err != b->err || a->has_rec != b->has_rec || (a->has_owner && !b->has_owner) ||
		    a->has_resp != b->has_resp || a->n != b->n)
			fail_msg("step %d: memory err %d rec %d owner %d resp %d n %d; redis err %d rec %d "
				 "owner %d resp %d n %d", i, a->err, a->has_rec, a->has_owner, a->has_resp,
				 a->n, b->err, b->has_rec, b->has_owner, b->has_resp, b->n);
		if (memcmp(&a->rec, &b->rec, sizeof(a->rec)) || strcmp(a->resource, b->resource) ||
		    strcmp(a->bare, b->bare))
			fail_msg("step %d: records differ: epoch %u/%u owner slot %u/%u h_in %u/%u out %u/%u "
				 "acked %u/%u att %d/%d res %s/%s", i, a->rec.epoch, b->rec.epoch,
				 a->rec.owner.slot, b->rec.owner.slot, a->rec.c.h_in, b->rec.c.h_in,
				 a->rec.c.out, b->rec.c.out, a->rec.c.acked, b->rec.c.acked,
				 a->rec.attached, b->rec.attached, a->resource, b->resource);
		if (a->has_owner && !bus_addr_eq(&a->owner, &b->owner))
			fail_msg("step %d: owners differ", i);
		if (b->has_owner && !a->has_owner && !bus_addr_eq(&b->owner, &B))
			fail_msg("step %d: redis names an owner that is not the one now", i);
		for (int j = 0; j < a->n && j < 8; j++)
			if (a->seq[j] != b->seq[j] || a->kind[j] != b->kind[j] ||
			    strcmp(a->data[j], b->data[j]) || strcmp(a->attrs[j], b->attrs[j]))
				fail_msg("step %d entry %d: %u %d %s %s / %u %d %s %s", i, j, a->seq[j],
					 a->kind[j], a->data[j], a->attrs[j], b->seq[j], b->kind[j],
					 b->data[j], b->attrs[j]);
		if (!tok_eq(&a->slots.fresh, &b->slots.fresh) ||
		    !tok_eq(&a->slots.current, &b->slots.current) || a->slots.version != b->slots.version)
			fail_msg("step %d: FAST slots differ", i);
	}
	store_detach(MEM);
	MEM = NULL;
	H = E.h;
	store_close(mst);
	char cmd[96];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

/* ---- delivery to sessions (tether_deliver) -------------------------------- */

static void on_deliver(void *ud, int err, const struct store_target *t, size_t n, struct rmsg *m)
{
	struct seen *s = ud;
	assert_non_null(m);
	for (size_t i = 0; i < n; i++)
		assert_true(t[i].seq > 0);
	s->calls++;
	s->err = err;
	s->n = n;
}

static size_t deliver(const char *bare, const char *res, int i)
{
	struct seen s = { 0 };
	struct rmsg *m = msg(i, RMSG_MESSAGE);
	assert_non_null(store_deliver_async(E.h, bare, res, m, NULL, on_deliver, &s));
	rmsg_unref(m);
	assert_int_equal(run_until(&s.calls, 1, 3000), 0);
	assert_int_equal(s.err, 0);
	return s.n;
}

/* A stanza for an account goes to its sessions through the directory: a
 * full JID to that resource's session, the bare JID to the available ones
 * of the highest priority; appended to their queues, numbered there after
 * what their owners appended. */
static void test_deliver(void **state)
{
	(void)state;
	const char *bare = "dv@example.com";
	struct sm_record hi, lo, away;
	struct seen t = { 0 };
	new_rec(&hi, &A, 300);
	hi.available = 1;
	hi.priority = 5;
	new_rec(&lo, &B, 300);
	lo.available = 1;
	lo.priority = 1;
	new_rec(&away, &B, 300);
	create(&hi, bare, "phone");
	create(&lo, bare, "desk");
	create(&away, bare, "away");          /* not available: never a bare-JID target */
	append_range(hi.id, 1, 1, 2);         /* the owner's own entries first */
	assert_int_equal(deliver(bare, "", 3), 1);
	assert_int_equal(deliver(bare, "desk", 4), 1);
	assert_int_equal(deliver(bare, "away", 5), 1);
	assert_int_equal(deliver(bare, "gone", 6), 0);
	assert_int_equal(deliver("nobody@example.com", "", 7), 0);
	take(&t, hi.id, bare, &B, NULL);
	assert_int_equal(t.err, 0);
	assert_int_equal(t.n, 3);
	assert_int_equal(t.q[2].seq, 3);
	assert_string_equal(t.q[2].msg->id, "m3");
	assert_string_equal(t.q[2].msg->from, "alice@example.com/phone");
	seen_clear(&t);
	take(&t, lo.id, bare, &A, NULL);
	assert_int_equal(t.n, 1);
	assert_string_equal(t.q[0].msg->id, "m4");
	seen_clear(&t);

	/* The sender's count goes in the same call, fenced by its epoch. */
	struct sm_record snd;
	struct seen d = { 0 };
	new_rec(&snd, &A, 300);
	create(&snd, "snd@example.com", "r");
	struct store_sender from = { "snd@example.com", snd.id, 1, 7 };
	struct rmsg *m = msg(8, RMSG_MESSAGE);
	assert_non_null(store_deliver_async(E.h, bare, "away", m, &from, on_deliver, &d));
	assert_int_equal(run_until(&d.calls, 1, 3000), 0);
	assert_int_equal(d.err, 0);
	assert_int_equal(d.n, 1);
	take(&t, snd.id, "snd@example.com", &B, NULL);   /* epoch 2 now */
	assert_int_equal(t.rec.c.h_in, 7);
	seen_clear(&t);
	seen_clear(&d);
	from.h_in = 8;                                     /* the old owner, epoch 1 */
	assert_non_null(store_deliver_async(E.h, bare, "away", m, &from, on_deliver, &d));
	rmsg_unref(m);
	assert_int_equal(run_until(&d.calls, 1, 3000), 0);
	assert_int_equal(d.err, -ESTALE);
	take(&t, away.id, bare, &A, NULL);
	assert_int_equal(t.n, 2);                          /* m5 and m8 once: not the fenced one */
	seen_clear(&t);
}

/* ---- IM data (store_im.h: store/redis_im.c, tether_im_* in the library) --- */

/* What one IM operation gave, as one line of text: compared between the
 * backends, and with what RFC 6121 says in the tests below. */
struct imseen {
	int calls;
	int err;
	char s[1024];
};

static void put(struct imseen *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct imseen *x, const char *fmt, ...)
{
	size_t l = strlen(x->s);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(x->s + l, sizeof(x->s) - l, fmt, ap);
	va_end(ap);
}

/* "jid/state/visible/name/pending/group|group" */
static void put_item(struct imseen *x, const struct im_item *it)
{
	put(x, " %s/%u/%u/%s/%s/", it->jid ? it->jid : "-", it->state, it->visible,
	    it->name ? it->name : "-", it->pending ? it->pending : "-");
	for (size_t i = 0; i < it->ngroups; i++)
		put(x, "%s%s", i ? "|" : "", it->groups[i]);
}

static void put_change(struct imseen *x, const char *who, const struct im_change *c)
{
	put(x, " %s:p%d,r%d,v%llu", who, c->pushed, c->removed, (unsigned long long)c->ver);
	if (c->pushed)
		put_item(x, &c->item);
}

static void on_im_roster(void *ud, int err, uint64_t ver, const struct im_item *items, size_t n)
{
	struct imseen *x = ud;
	x->calls++;
	x->err = err;
	put(x, "err %d ver %llu n %zu", err, (unsigned long long)ver, n);
	for (size_t i = 0; i < n; i++)
		put_item(x, &items[i]);
}

static void on_im_contacts(void *ud, int err, char *const *jids, const uint8_t *states, size_t n,
			   char *const *pending, size_t np)
{
	struct imseen *x = ud;
	x->calls++;
	x->err = err;
	put(x, "err %d", err);
	for (size_t i = 0; i < n; i++)
		put(x, " %s=%u", jids[i], states[i]);
	for (size_t i = 0; i < np; i++)
		put(x, " pending:%s", pending[i]);
}

static void on_im_change(void *ud, int err, const struct im_change *c,
			 const struct im_change *contact)
{
	struct imseen *x = ud;
	x->calls++;
	x->err = err;
	put(x, "err %d", err);
	if (!err)
		put_change(x, "user", c);
	if (!err && contact)
		put_change(x, "contact", contact);
}

static void on_im_sub(void *ud, int err, const struct im_sub_result *r)
{
	struct imseen *x = ud;
	x->calls++;
	x->err = err;
	put(x, "err %d", err);
	if (err)
		return;
	put(x, " exists %d out %u/%d in %u/%d/%d auto %d", r->contact_exists, r->out.next,
	    r->out.deliver, r->in.next, r->in.deliver, r->in.auto_subscribed, r->auto_subscribed);
	put_change(x, "user", &r->user);
	put_change(x, "contact", &r->contact);
}

static void on_im_done(void *ud, int err)
{
	struct imseen *x = ud;
	x->calls++;
	x->err = err;
	put(x, "err %d", err);
}

static void on_im_msgs(void *ud, int err, char *const *msgs, const size_t *lens, size_t n)
{
	struct imseen *x = ud;
	x->calls++;
	x->err = err;
	put(x, "err %d n %zu", err, n);
	for (size_t i = 0; i < n; i++)
		put(x, " %.*s", (int)lens[i], msgs[i]);
}

static void on_im_blocks(void *ud, int err, char *const *jids, size_t n)
{
	struct imseen *x = ud;
	x->calls++;
	x->err = err;
	put(x, "err %d n %zu", err, n);
	for (size_t i = 0; i < n; i++)
		put(x, " %s", jids[i]);
}

static void im_user(struct store *st, const char *bare)
{
	struct user_creds c;
	assert_int_equal(scram_creds_derive(bare, 1, &c), 0);
	assert_int_equal(store_user_put(st, bare, &c), 0);
	scram_creds_wipe(&c);
}

/* Waits for <x>'s operation <op> and returns its line. */
static const char *im_wait(struct store_op *op, struct imseen *x)
{
	assert_non_null(op);
	assert_int_equal(run_until(&x->calls, 1, 3000), 0);
	return x->s;
}

#define IM_DO(x, call) (memset(&(x), 0, sizeof(x)), im_wait((call), &(x)))

static const char *im_roster(struct imseen *x, const char *bare)
{
	return IM_DO(*x, store_im_roster_async(H, bare, on_im_roster, x));
}

static const char *im_set(struct imseen *x, const char *bare, const char *jid, const char *name,
			  char **groups, size_t ng, unsigned max)
{
	struct im_item it = { .jid = (char *)jid, .name = (char *)name, .groups = groups,
			      .ngroups = ng };
	return IM_DO(*x, store_im_set_async(H, bare, &it, max, on_im_change, x));
}

static const char *im_sub(struct imseen *x, const char *user, const char *contact,
			  enum sub_type t, const char *stanza)
{
	return IM_DO(*x, store_im_sub_async(H, user, contact, t, stanza, 10, on_im_sub, x));
}

static const char *im_remove(struct imseen *x, const char *bare, const char *jid)
{
	return IM_DO(*x, store_im_remove_async(H, bare, jid, on_im_change, x));
}

static const char *im_contacts(struct imseen *x, const char *bare, unsigned want)
{
	return IM_DO(*x, store_im_contacts_async(H, bare, want, on_im_contacts, x));
}

static const char *im_off_add(struct imseen *x, const char *bare, const char *m, unsigned max)
{
	return IM_DO(*x, store_im_offline_add_async(H, bare, m, strlen(m), max, on_im_done, x));
}

static const char *im_off_take(struct imseen *x, const char *bare)
{
	return IM_DO(*x, store_im_offline_take_async(H, bare, on_im_msgs, x));
}

static const char *im_blocks(struct imseen *x, const char *bare)
{
	return IM_DO(*x, store_im_blocks_async(H, bare, on_im_blocks, x));
}

static const char *im_block(struct imseen *x, const char *bare, enum im_block_op op,
			    char **jids, size_t n)
{
	return IM_DO(*x, store_im_block_async(H, bare, op, jids, n, on_im_done, x));
}

#define IM_STEPS 48

/* One IM script on <H>, every step's line into <out>. The accounts
 * <p>a@x, <p>b@x, <p>c@x exist in <st>. Returns the number of steps. */
static int im_script(struct store *st, const char *p, char out[IM_STEPS][1024])
{
	char a[32], b[32], c[32], nobody[32];
	char *g[] = { "Friends", "Work mates" }, *bl[] = { "spam@x", "x", "spam@x", "eve@x/r" };
	struct imseen x;
	int k = 0;
	snprintf(a, sizeof(a), "%sa@x", p);
	snprintf(b, sizeof(b), "%sb@x", p);
	snprintf(c, sizeof(c), "%sc@x", p);
	snprintf(nobody, sizeof(nobody), "%snobody@x", p);
	im_user(st, a);
	im_user(st, b);
	im_user(st, c);
#define STEP(call) do { call; assert_true(k < IM_STEPS); memcpy(out[k++], x.s, sizeof(x.s)); } while (0)
	STEP(im_roster(&x, a));
	STEP(im_set(&x, a, b, "Bob <&>", g, 2, 3));
	STEP(im_set(&x, a, "d@x", NULL, NULL, 0, 3));
	STEP(im_set(&x, a, "e@x", NULL, NULL, 0, 2));             /* over the cap */
	STEP(im_set(&x, a, b, "Bobby", g + 1, 1, 2));             /* an update: fits */
	STEP(im_roster(&x, a));
	STEP(im_sub(&x, a, b, SUB_SUBSCRIBE, "<presence type='subscribe'/>"));
	STEP(im_roster(&x, b));                                    /* the request: hidden */
	STEP(im_contacts(&x, b, IM_WANT_FROM | IM_WANT_TO | IM_WANT_PENDING));
	STEP(im_sub(&x, b, a, SUB_SUBSCRIBED, NULL));
	STEP(im_sub(&x, b, a, SUB_SUBSCRIBE, "<presence type='subscribe' id='2'/>"));
	STEP(im_sub(&x, a, b, SUB_SUBSCRIBED, NULL));
	STEP(im_contacts(&x, a, IM_WANT_FROM));
	STEP(im_contacts(&x, a, IM_WANT_TO | IM_WANT_PENDING));
	STEP(im_sub(&x, a, b, SUB_SUBSCRIBE, "<presence type='subscribe' id='3'/>")); /* approved: auto */
	STEP(im_sub(&x, a, c, SUB_SUBSCRIBE, "<presence type='subscribe' id='4'/>"));
	STEP(im_sub(&x, c, a, SUB_SUBSCRIBE, "<presence type='subscribe' id='5'/>"));
	STEP(im_sub(&x, a, c, SUB_UNSUBSCRIBED, NULL));
	STEP(im_sub(&x, a, nobody, SUB_SUBSCRIBE, "<presence type='subscribe' id='6'/>"));
	STEP(im_sub(&x, a, a, SUB_SUBSCRIBE, "<presence type='subscribe' id='7'/>"));
	STEP(im_sub(&x, a, b, SUB_UNSUBSCRIBE, NULL));
	STEP(im_roster(&x, a));
	STEP(im_roster(&x, b));
	STEP(im_remove(&x, a, b));
	STEP(im_remove(&x, a, b));
	STEP(im_remove(&x, a, nobody));
	STEP(im_roster(&x, b));
	STEP(im_roster(&x, c));
	STEP(im_sub(&x, b, a, SUB_SUBSCRIBED, NULL));             /* nothing to approve */
	STEP(im_off_add(&x, b, "m1", 3));
	STEP(im_off_add(&x, b, "m2 <body/>", 3));
	STEP(im_off_add(&x, b, "m3", 3));
	STEP(im_off_add(&x, b, "m4", 3));
	STEP(im_off_add(&x, nobody, "m5", 3));
	STEP(im_off_add(&x, c, "m6", 0));
	STEP(im_off_take(&x, b));
	STEP(im_off_take(&x, b));
	STEP(im_blocks(&x, a));
	STEP(im_block(&x, a, IM_BLOCK_ADD, bl, 4));
	STEP(im_blocks(&x, a));
	STEP(im_block(&x, a, IM_BLOCK_REMOVE, bl, 1));
	STEP(im_blocks(&x, a));
	STEP(im_block(&x, a, IM_BLOCK_CLEAR, NULL, 0));
	STEP(im_blocks(&x, a));
#undef STEP
	return k;
}

/* The IM script gives the same results, line for line, on both backends:
 * Redis repeats the memory backend's semantics. */
static void test_im_same_as_memory(void **state)
{
	(void)state;
	char dir[] = "/tmp/tether-memim-XXXXXX", err[256];
	assert_non_null(mkdtemp(dir));
	struct store *mst = store_open("memory", dir, err, sizeof(err));
	assert_non_null(mst);
	assert_non_null(MEM = store_attach(mst, NULL));
	static char mem[IM_STEPS][1024], red[IM_STEPS][1024];
	H = MEM;
	int nm = im_script(mst, "same-", mem);
	H = E.h;
	int nr = im_script(E.st, "same-", red);
	assert_int_equal(nm, nr);
	for (int i = 0; i < nm; i++)
		if (strcmp(mem[i], red[i]))
			fail_msg("IM step %d:\n  memory: %s\n  redis:  %s", i, mem[i], red[i]);
	store_detach(MEM);
	MEM = NULL;
	store_close(mst);
	char cmd[96];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

/* RFC 6121 Appendix A on Redis: each subscription stanza changes the
 * user's AND the contact's roster in the one call, the contact offline. */
static void test_im_subscription_both_sides(void **state)
{
	(void)state;
	struct imseen x;
	im_user(E.st, "sa@x");
	im_user(E.st, "sb@x");
	/* the request: the user's side None + Pending Out (visible, ask), the
	 * contact's None + Pending In, hidden, with the stanza kept */
	assert_string_equal(im_sub(&x, "sa@x", "sb@x", SUB_SUBSCRIBE, "<req/>"),
			    "err 0 exists 1 out 1/1 in 2/1/0 auto 0"
			    " user:p1,r0,v1 sb@x/1/1/-/-/ contact:p0,r0,v0");
	assert_string_equal(im_roster(&x, "sb@x"), "err 0 ver 0 n 0");
	assert_string_equal(im_contacts(&x, "sb@x", IM_WANT_PENDING), "err 0 pending:<req/>");
	/* the approval: From at the contact (now an item), To at the user */
	assert_string_equal(im_sub(&x, "sb@x", "sa@x", SUB_SUBSCRIBED, NULL),
			    "err 0 exists 1 out 6/1 in 4/1/0 auto 0"
			    " user:p1,r0,v1 sa@x/6/1/-/-/ contact:p1,r0,v2 sb@x/4/1/-/-/");
	assert_string_equal(im_contacts(&x, "sb@x", IM_WANT_PENDING), "err 0");
	/* and back: Both on both sides */
	im_sub(&x, "sb@x", "sa@x", SUB_SUBSCRIBE, "<req2/>");
	assert_int_equal(x.err, 0);
	assert_string_equal(im_sub(&x, "sa@x", "sb@x", SUB_SUBSCRIBED, NULL),
			    "err 0 exists 1 out 8/1 in 8/1/0 auto 0"
			    " user:p1,r0,v3 sb@x/8/1/-/-/ contact:p1,r0,v3 sa@x/8/1/-/-/");
	assert_string_equal(im_contacts(&x, "sa@x", IM_WANT_FROM | IM_WANT_TO), "err 0 sb@x=8");
	assert_string_equal(im_contacts(&x, "sb@x", IM_WANT_FROM | IM_WANT_TO), "err 0 sa@x=8");
	/* an unknown contact: its server answers unsubscribed, at once */
	assert_string_equal(im_sub(&x, "sa@x", "ghost@x", SUB_SUBSCRIBE, "<r/>"),
			    "err 0 exists 0 out 1/1 in 0/0/0 auto 0"
			    " user:p1,r0,v4 ghost@x/0/1/-/-/ contact:p0,r0,v0");
}

/* Offline messages: appended up to the cap (-EDQUOT beyond), only for an
 * account that exists (-ENOENT), taken oldest first and deleted in the
 * same step; a take whose caller went away puts them back. */
static void test_im_offline(void **state)
{
	(void)state;
	struct imseen x;
	im_user(E.st, "ob@x");
	for (int i = 0; i < 4; i++) {
		char m[16];
		snprintf(m, sizeof(m), "msg-%d", i);
		assert_string_equal(im_off_add(&x, "ob@x", m, 3), i < 3 ? "err 0" : "err -122");
	}
	assert_int_equal(x.err, -EDQUOT);
	im_off_add(&x, "nobody@x", "m", 3);
	assert_int_equal(x.err, -ENOENT);
	assert_string_equal(im_off_take(&x, "ob@x"), "err 0 n 3 msg-0 msg-1 msg-2");
	assert_string_equal(im_off_take(&x, "ob@x"), "err 0 n 0");

	/* cancelled: Redis took them when issued; they come back, in front */
	im_off_add(&x, "ob@x", "kept-1", 5);
	im_off_add(&x, "ob@x", "kept-2", 5);
	memset(&x, 0, sizeof(x));
	struct store_op *op = store_im_offline_take_async(E.h, "ob@x", on_im_msgs, &x);
	assert_non_null(op);
	store_op_cancel(op);
	struct imseen y = { 0 };
	assert_non_null(store_im_offline_add_async(E.h, "ob@x", "later", 5, 5, on_im_done, &y));
	assert_int_equal(run_until(&y.calls, 1, 3000), 0);
	assert_int_equal(x.calls, 0);
	assert_string_equal(im_off_take(&x, "ob@x"), "err 0 n 3 kept-1 kept-2 later");
}

/* A roster set and a remove each bump the version (XEP-0237); the cap
 * counts visible items; a remove cancels the contact's side in the same
 * step; the account's deletion takes its IM data with it. */
static void test_im_roster_set_remove(void **state)
{
	(void)state;
	struct imseen x;
	char *g[] = { "G" };
	im_user(E.st, "ra@x");
	im_user(E.st, "rb@x");
	assert_string_equal(im_roster(&x, "ra@x"), "err 0 ver 0 n 0");
	assert_string_equal(im_set(&x, "ra@x", "rb@x", "B", g, 1, 2),
			    "err 0 user:p1,r0,v1 rb@x/0/1/B/-/G");
	assert_string_equal(im_set(&x, "ra@x", "rc@x", NULL, NULL, 0, 2),
			    "err 0 user:p1,r0,v2 rc@x/0/1/-/-/");
	im_set(&x, "ra@x", "rd@x", NULL, NULL, 0, 2);
	assert_int_equal(x.err, -EDQUOT);
	assert_string_equal(im_roster(&x, "ra@x"),
			    "err 0 ver 2 n 2 rb@x/0/1/B/-/G rc@x/0/1/-/-/");
	assert_string_equal(im_set(&x, "ra@x", "rb@x", NULL, NULL, 0, 2),
			    "err 0 user:p1,r0,v3 rb@x/0/1/-/-/");
	/* subscribed both ways, then removed: the contact's side goes to None */
	im_sub(&x, "ra@x", "rb@x", SUB_SUBSCRIBE, "<s/>");
	im_sub(&x, "rb@x", "ra@x", SUB_SUBSCRIBED, NULL);
	im_sub(&x, "rb@x", "ra@x", SUB_SUBSCRIBE, "<s/>");
	im_sub(&x, "ra@x", "rb@x", SUB_SUBSCRIBED, NULL);
	assert_string_equal(im_contacts(&x, "rb@x", IM_WANT_FROM), "err 0 ra@x=8");
	assert_string_equal(im_remove(&x, "ra@x", "rb@x"),
			    "err 0 user:p1,r1,v7 rb@x/8/1/-/-/ contact:p1,r0,v4 ra@x/0/1/-/-/");
	assert_string_equal(im_roster(&x, "ra@x"), "err 0 ver 7 n 1 rc@x/0/1/-/-/");
	assert_string_equal(im_remove(&x, "ra@x", "rb@x"), "err -2");
	/* deluser: roster, offline messages, blocklist gone with the account */
	char *bl[] = { "z@x" };
	im_block(&x, "ra@x", IM_BLOCK_ADD, bl, 1);
	im_off_add(&x, "ra@x", "m", 5);
	assert_int_equal(store_user_del(E.st, "ra@x"), 0);
	im_user(E.st, "ra@x");
	assert_string_equal(im_roster(&x, "ra@x"), "err 0 ver 0 n 0");
	assert_string_equal(im_blocks(&x, "ra@x"), "err 0 n 0");
	assert_string_equal(im_off_take(&x, "ra@x"), "err 0 n 0");
}

/* ---- direct sessions (bound without XEP-0198) ---------------------------- */

struct dseen {
	int calls, err;
	size_t n;
	struct store_target t[4];
};

static void on_ddeliver(void *ud, int err, const struct store_target *t, size_t n, struct rmsg *m)
{
	struct dseen *s = ud;
	assert_non_null(m);
	s->calls++;
	s->err = err;
	s->n = n;
	memcpy(s->t, t, (n < 4 ? n : 4) * sizeof(*t));
}

static size_t ddeliver(const char *bare, const char *res, struct dseen *s)
{
	memset(s, 0, sizeof(*s));
	struct rmsg *m = msg(1, RMSG_MESSAGE);
	assert_non_null(store_deliver_async(E.h, bare, res, m, NULL, on_ddeliver, s));
	rmsg_unref(m);
	assert_int_equal(run_until(&s->calls, 1, 3000), 0);
	assert_int_equal(s->err, 0);
	return s->n;
}

static int direct(enum store_direct what, const char *bare, const char *res,
		  const struct bus_addr *owner, int avail, int prio, struct seen *s)
{
	memset(s, 0, sizeof(*s));
	return write_err(store_direct_async(E.h, what, bare, res, owner, avail, prio, on_write, s), s);
}

static int dpres(enum store_dpres what, const char *bare, const char *sid, const char *res,
		 const struct bus_addr *owner, const char *jid, struct seen *s)
{
	memset(s, 0, sizeof(*s));
	return write_err(store_dpres_async(E.h, what, bare, sid, res, owner, jid, 2, on_write, s), s);
}

/* A direct entry names its stream; delivery to it goes to its owner node's
 * inbox (not for this node's: the caller hands those over), bare-JID
 * delivery weighs it by presence like any session, only its owner updates
 * or removes it, a newer bind or an <enable/> of another stream replaces it
 * and names the owner to kick, the same stream's <enable/> replaces it
 * silently, and a dead node's entry goes at the first delivery. */
static void test_direct(void **state)
{
	(void)state;
	struct rproto *rp = rproto_new(NULL);
	int fd = rs_connect(&srv);
	struct rcopy c = { 0 };
	struct seen s;
	struct dseen d;
	const char *bare = "direct@example.com", *kdir = "t:{direct@example.com}:dir";
	char self[64], want[96];
	snprintf(self, sizeof(self), "a.%s", nodes_boot());
	struct bus_addr C = { nodes_intern("b.0badcafe"), 2, 9, 4 };
	RS_CMD(rp, fd, &c, "SET", "t:{node:a}:lease", self);
	RS_CMD(rp, fd, &c, "SET", "t:{node:b}:lease", "b.0badcafe");
	RS_CMD(rp, fd, &c, "DEL", "t:{node:a}:in", "t:{node:b}:in");

	assert_int_equal(direct(STORE_DIRECT_SET, bare, "r1", &A, 1, 2, &s), 0);
	assert_false(s.has_owner);
	RS_CMD(rp, fd, &c, "HGET", kdir, "r1");
	snprintf(want, sizeof(want), "~%s/0/5/1|1|2", self);
	assert_string_equal(c.str, want);
	assert_int_equal(ddeliver(bare, "r1", &d), 1);
	assert_true(d.t[0].direct && d.t[0].seq == 0 && bus_addr_eq(&d.t[0].owner, &A));
	RS_CMD(rp, fd, &c, "XLEN", "t:{node:a}:in");
	assert_int_equal(c.integer, 0);                  /* ours: handed over by the caller */

	assert_int_equal(direct(STORE_DIRECT_SET, bare, "r2", &C, 1, 0, &s), 0);
	assert_int_equal(ddeliver(bare, "r2", &d), 1);
	assert_true(d.t[0].direct && bus_addr_eq(&d.t[0].owner, &C));
	RS_CMD(rp, fd, &c, "XLEN", "t:{node:b}:in");
	assert_int_equal(c.integer, 1);                  /* node b's inbox, kind 0 */
	assert_int_equal(ddeliver(bare, "", &d), 1);     /* priority 2 beats 0 */
	assert_true(bus_addr_eq(&d.t[0].owner, &A));

	/* Only the owner updates or removes; a newer bind replaces. */
	assert_int_equal(direct(STORE_DIRECT_SET, bare, "r1", &B, 0, 0, &s), 0);
	assert_true(s.has_owner && bus_addr_eq(&s.owner, &A));
	assert_int_equal(direct(STORE_DIRECT_UPDATE, bare, "r1", &A, 1, 9, &s), 0);
	assert_int_equal(direct(STORE_DIRECT_DEL, bare, "r1", &A, 0, 0, &s), 0);
	RS_CMD(rp, fd, &c, "HGET", kdir, "r1");
	snprintf(want, sizeof(want), "~%s/1/7/3|0|0", self);
	assert_string_equal(c.str, want);
	assert_int_equal(ddeliver(bare, "", &d), 1);     /* r1 unavailable now: r2 */
	assert_true(bus_addr_eq(&d.t[0].owner, &C));

	/* <enable/> on the same stream: no kick; of another stream: kick it. */
	struct sm_record r;
	new_rec(&r, &B, 300);
	memset(&s, 0, sizeof(s));
	assert_int_equal(write_err(store_sm_create_async(E.h, &r, bare, "r1", on_write, &s), &s), 0);
	assert_false(s.has_owner);
	new_rec(&r, &A, 300);
	memset(&s, 0, sizeof(s));
	assert_int_equal(write_err(store_sm_create_async(E.h, &r, bare, "r2", on_write, &s), &s), 0);
	assert_true(s.has_owner && bus_addr_eq(&s.owner, &C));

	/* Removal by owner alone ("": whichever resource names it). */
	assert_int_equal(direct(STORE_DIRECT_SET, bare, "r4", &A, 1, 0, &s), 0);
	assert_int_equal(direct(STORE_DIRECT_DEL, bare, "", &B, 0, 0, &s), 0);
	RS_CMD(rp, fd, &c, "HEXISTS", kdir, "r4");
	assert_int_equal(c.integer, 1);
	assert_int_equal(direct(STORE_DIRECT_DEL, bare, "", &A, 0, 0, &s), 0);
	RS_CMD(rp, fd, &c, "HEXISTS", kdir, "r4");
	assert_int_equal(c.integer, 0);

	/* A dead node's entries: skipped by deliveries, removed by the reaper
	 * (tether_dir_reap), which names the available ones and those with
	 * directed presence out (their unavailable presence is due) after the
	 * account, with the recipients; their sets go too. */
	assert_int_equal(direct(STORE_DIRECT_SET, bare, "r3", &C, 1, 0, &s), 0);
	struct bus_addr D = { C.node, 2, 9, 5 }, F = { C.node, 2, 9, 6 }; /* one stream, one entry */
	assert_int_equal(direct(STORE_DIRECT_SET, bare, "r5", &D, 0, 0, &s), 0);
	assert_int_equal(direct(STORE_DIRECT_SET, bare, "r6", &F, 0, 0, &s), 0);
	assert_int_equal(dpres(STORE_DPRES_ADD, bare, NULL, "r5", &D, "carol@example.com", &s), 0);
	RS_CMD(rp, fd, &c, "DEL", "t:{node:b}:lease");
	assert_int_equal(ddeliver(bare, "r3", &d), 0);
	RS_CMD(rp, fd, &c, "HEXISTS", kdir, "r3");
	assert_int_equal(c.integer, 1);
	RS_CMD(rp, fd, &c, "FCALL", "tether_dir_reap", "1", kdir);
	assert_int_equal(c.type, REDIS_REPLY_ARRAY);
	assert_int_equal(c.n, 3);
	assert_string_equal(c.el[0].str, bare);
	for (size_t i = 1; i < 3; i++) {
		const struct rcopy *e = &c.el[i];
		assert_int_equal(e->n, 3);
		if (!strcmp(e->el[0].str, "r3")) {
			assert_int_equal(e->el[1].integer, 1);
			assert_int_equal(e->el[2].n, 0);
		} else {
			assert_string_equal(e->el[0].str, "r5");
			assert_int_equal(e->el[1].integer, 0);
			assert_int_equal(e->el[2].n, 1);
			assert_string_equal(e->el[2].el[0].str, "carol@example.com");
		}
	}
	RS_CMD(rp, fd, &c, "EXISTS", "t:{direct@example.com}:dp:~b.0badcafe/2/9/5");
	assert_int_equal(c.integer, 0);
	RS_CMD(rp, fd, &c, "HEXISTS", kdir, "r3");
	assert_int_equal(c.integer, 0);
	RS_CMD(rp, fd, &c, "HEXISTS", kdir, "r5");
	assert_int_equal(c.integer, 0);
	RS_CMD(rp, fd, &c, "FCALL", "tether_dir_reap", "1", kdir);
	assert_int_equal(c.type, REDIS_REPLY_INTEGER);
	assert_int_equal(c.integer, 0);
	rcopy_clear(&c);
	rproto_free(rp);
	close(fd);
}

/* Directed-presence recipients (tether_dpres): written only by the stream
 * that owns the session (XEP-0198: the record's owner; direct: the
 * entry's), bounded, removed with the session (destroy, reap, direct
 * del, a bind that replaces a direct entry), renamed when the stream
 * enables XEP-0198. */
static void test_directed_presence(void **state)
{
	(void)state;
	struct rproto *rp = rproto_new(NULL);
	int fd = rs_connect(&srv);
	struct rcopy c = { 0 };
	struct seen s;
	const char *bare = "dp@example.com";
	char key[160], self[64], owner[96];
	snprintf(self, sizeof(self), "a.%s", nodes_boot());
	RS_CMD(rp, fd, &c, "SET", "t:{node:a}:lease", self);

	struct sm_record r;
	new_rec(&r, &A, 300);
	create(&r, bare, "phone");
	snprintf(key, sizeof(key), "t:{%s}:dp:%s", bare, r.id);
	assert_int_equal(dpres(STORE_DPRES_ADD, bare, r.id, "phone", &A, "carol@example.com", &s), 0);
	assert_int_equal(dpres(STORE_DPRES_ADD, bare, r.id, "phone", &A, "dave@example.com/x", &s), 0);
	assert_int_equal(dpres(STORE_DPRES_ADD, bare, r.id, "phone", &A, "eve@example.com", &s),
			 -EDQUOT);                          /* max 2 */
	assert_int_equal(dpres(STORE_DPRES_ADD, bare, r.id, "phone", &B, "eve@example.com", &s), 0);
	RS_CMD(rp, fd, &c, "SCARD", key);
	assert_int_equal(c.integer, 2);                     /* B does not own it: nothing */
	assert_int_equal(dpres(STORE_DPRES_DEL, bare, r.id, "phone", &A, "carol@example.com", &s), 0);
	RS_CMD(rp, fd, &c, "SISMEMBER", key, "dave@example.com/x");
	assert_int_equal(c.integer, 1);
	assert_int_equal(dpres(STORE_DPRES_CLEAR, bare, r.id, "phone", &A, NULL, &s), 0);
	RS_CMD(rp, fd, &c, "EXISTS", key);
	assert_int_equal(c.integer, 0);
	assert_int_equal(dpres(STORE_DPRES_ADD, bare, r.id, "phone", &A, "carol@example.com", &s), 0);
	memset(&s, 0, sizeof(s));
	assert_non_null(store_sm_destroy_async(E.h, r.id, r.epoch, on_drain, &s));
	assert_int_equal(run_until(&s.calls, 1, 3000), 0);
	assert_int_equal(s.err, 0);
	assert_int_equal(s.n, 0);
	RS_CMD(rp, fd, &c, "EXISTS", key);
	assert_int_equal(c.integer, 0);                     /* gone with the session */

	/* A direct session's set: renamed to the session's by its <enable/>,
	 * removed by its end and by a bind that replaced it. */
	snprintf(owner, sizeof(owner), "t:{%s}:dp:~%s/0/5/1", bare, self);
	assert_int_equal(direct(STORE_DIRECT_SET, bare, "desk", &A, 1, 0, &s), 0);
	assert_int_equal(dpres(STORE_DPRES_ADD, bare, NULL, "desk", &A, "carol@example.com", &s), 0);
	RS_CMD(rp, fd, &c, "EXISTS", owner);
	assert_int_equal(c.integer, 1);
	assert_int_equal(direct(STORE_DIRECT_DEL, bare, "desk", &A, 0, 0, &s), 0);
	RS_CMD(rp, fd, &c, "EXISTS", owner);
	assert_int_equal(c.integer, 0);
	assert_int_equal(direct(STORE_DIRECT_SET, bare, "desk", &A, 1, 0, &s), 0);
	assert_int_equal(dpres(STORE_DPRES_ADD, bare, NULL, "desk", &A, "carol@example.com", &s), 0);
	assert_int_equal(direct(STORE_DIRECT_SET, bare, "desk", &B, 1, 0, &s), 0);
	RS_CMD(rp, fd, &c, "EXISTS", owner);
	assert_int_equal(c.integer, 0);
	assert_int_equal(direct(STORE_DIRECT_DEL, bare, "desk", &B, 0, 0, &s), 0);
	assert_int_equal(direct(STORE_DIRECT_SET, bare, "desk", &A, 1, 0, &s), 0);
	assert_int_equal(dpres(STORE_DPRES_ADD, bare, NULL, "desk", &A, "carol@example.com", &s), 0);
	new_rec(&r, &A, 300);
	create(&r, bare, "desk");                           /* <enable/> on the same stream */
	snprintf(key, sizeof(key), "t:{%s}:dp:%s", bare, r.id);
	RS_CMD(rp, fd, &c, "SISMEMBER", key, "carol@example.com");
	assert_int_equal(c.integer, 1);
	RS_CMD(rp, fd, &c, "EXISTS", owner);
	assert_int_equal(c.integer, 0);

	/* The reaper: a session of a dead node, past its window, comes back
	 * with its recipients, and its set goes. */
	char krec[160];
	snprintf(krec, sizeof(krec), "t:{%s}:s:%s", bare, r.id);
	RS_CMD(rp, fd, &c, "HSET", krec, "owner", "b.0badcafe/2/9/4", "att", "0", "exp", "1");
	RS_CMD(rp, fd, &c, "FCALL", "tether_sm_reap", "1", krec);
	assert_int_equal(c.type, REDIS_REPLY_ARRAY);
	assert_int_equal(c.n, 4);
	assert_string_equal(c.el[2].str, bare);
	assert_int_equal(c.el[3].n, 1);
	assert_string_equal(c.el[3].el[0].str, "carol@example.com");
	RS_CMD(rp, fd, &c, "EXISTS", key);
	assert_int_equal(c.integer, 0);
	rcopy_clear(&c);
	rproto_free(rp);
	close(fd);
}

/* A dead node incarnation's inbox (its consumer group): what it read and
 * never acknowledged, then what it never read, comes back in batches,
 * only the stanzas for its own direct sessions (k 0); then the group
 * goes, and the stream once no group is left and the node has no lease.
 * A live incarnation's group is left alone. */
static void test_inbox_reap(void **state)
{
	(void)state;
	struct rproto *rp = rproto_new(NULL);
	int fd = rs_connect(&srv);
	struct rcopy c = { 0 };
	const char *k = "t:{node:z}:in";
	RS_CMD(rp, fd, &c, "DEL", k);
	RS_CMD(rp, fd, &c, "FCALL", "tether_inbox_reap", "1", k, "2", "0");
	assert_int_equal(c.type, REDIS_REPLY_INTEGER);      /* no stream */
	RS_CMD(rp, fd, &c, "FCALL", "tether_inbox_join", "1", k, "z.1");
	assert_int_equal(c.integer, 1);
	RS_CMD(rp, fd, &c, "FCALL", "tether_inbox_join", "1", k, "z.1");
	assert_int_equal(c.integer, 1);                     /* again: BUSYGROUP is fine */
	RS_CMD(rp, fd, &c, "XGROUP", "CREATE", k, "z.2", "$");
	RS_CMD(rp, fd, &c, "SET", "t:{node:z}:lease", "z.2");
	RS_CMD(rp, fd, &c, "XADD", k, "*", "k", "0", "to", "z.1/0/3/1", "e", "0:7:done");
	RS_CMD(rp, fd, &c, "XADD", k, "*", "k", "0", "to", "z.1/0/3/1", "e", "0:7:pending");
	RS_CMD(rp, fd, &c, "XADD", k, "*", "k", "3", "to", "z.1/0/4/1", "seq", "1", "e", "1:7:q");
	RS_CMD(rp, fd, &c, "XADD", k, "*", "k", "0", "to", "z.2/0/3/1", "e", "0:7:theirs");
	RS_CMD(rp, fd, &c, "XADD", k, "*", "k", "0", "to", "z.1/0/3/1", "e", "0:7:unread");
	RS_CMD(rp, fd, &c, "XREADGROUP", "GROUP", "z.1", "z.1", "COUNT", "2", "STREAMS", k, ">");
	char id[48];
	snprintf(id, sizeof(id), "%s", c.el[0].el[1].el[0].el[0].str);
	RS_CMD(rp, fd, &c, "XACK", k, "z.1", id);       /* "done" was handed over */
	/* z.1's consumer read a moment ago: not abandoned yet (a node that
	 * just started reads before it renews its lease) */
	RS_CMD(rp, fd, &c, "FCALL", "tether_inbox_reap", "1", k, "2", "60000");
	assert_int_equal(c.el[0].integer, 0);
	assert_int_equal(c.el[1].n, 0);
	const char *want[] = { "0:7:pending", "0:7:unread" };
	size_t got = 0;
	for (int i = 0; i < 6; i++) {
		RS_CMD(rp, fd, &c, "FCALL", "tether_inbox_reap", "1", k, "2", "0");
		assert_int_equal(c.type, REDIS_REPLY_ARRAY);
		assert_int_equal(c.n, 3);
		assert_string_equal(c.el[2].str, k);
		for (size_t j = 0; j < c.el[1].n; j++) {
			assert_true(got < 2);
			assert_string_equal(c.el[1].el[j].str, want[got++]);
		}
		if (!c.el[0].integer)
			break;
	}
	assert_int_equal(got, 2);
	assert_int_equal(c.el[0].integer, 0);
	RS_CMD(rp, fd, &c, "XINFO", "GROUPS", k);
	assert_int_equal(c.n, 1);                           /* z.2's, alive */
	RS_CMD(rp, fd, &c, "DEL", "t:{node:z}:lease");
	for (int i = 0; i < 8; i++) {
		RS_CMD(rp, fd, &c, "FCALL", "tether_inbox_reap", "1", k, "2", "0");
		if (c.type != REDIS_REPLY_ARRAY)
			break;                                  /* 0: the stream is gone */
		if (c.el[1].n)
			assert_string_equal(c.el[1].el[0].str, "0:7:theirs");
	}
	RS_CMD(rp, fd, &c, "EXISTS", k);
	assert_int_equal(c.integer, 0);
	rcopy_clear(&c);
	rproto_free(rp);
	close(fd);
}

/* ---- deliveries of one turn: one call, one inbox entry per node ---------- */

struct notices {
	int n;
	int kind[8];
	struct bus_addr to[8];
	uint32_t seq[8];
	char id[8][8];
};

static void on_notice(void *ud, int kind, const struct bus_addr *to, int cond, uint32_t seq,
		      struct rmsg *m)
{
	struct notices *l = ud;
	(void)cond;
	if (l->n < 8 && to) {
		l->kind[l->n] = kind;
		l->to[l->n] = *to;
		l->seq[l->n] = seq;
		snprintf(l->id[l->n], sizeof(l->id[0]), "%s", m ? m->id : "");
		l->n++;
	}
	if (m)
		rmsg_unref(m);
}

/* 1 once a client of Redis waits in an XREAD (the inbox reads from the
 * stream's end: what is written before it reads is not its). */
static int xread_waiting(struct rproto *rp, int fd)
{
	struct rcopy c = { 0 };
	RS_CMD(rp, fd, &c, "CLIENT", "LIST");
	int yes = c.str && strstr(c.str, "cmd=xread") != NULL;
	rcopy_clear(&c);
	return yes;
}

static void deliver_from(const char *bare, const char *res, int i, const struct store_sender *from,
			 struct dseen *d)
{
	struct rmsg *m = msg(i, RMSG_MESSAGE);
	assert_non_null(store_deliver_async(E.h, bare, res, m, from, on_ddeliver, d));
	rmsg_unref(m);
}

/* Deliveries issued in one turn go as one FCALL (tether_deliver_many), in
 * order, each with its own result: numbered in their queues, the sender's
 * count written once, a sender taken over refused alone; their notices
 * reach the owner's node as one inbox entry (k 10) that the inbox reader
 * splits in order. One delivery alone writes the single form (k 3). */
static void test_deliver_batched(void **state)
{
	(void)state;
	char err[256];
	struct rproto *rp = rproto_new(NULL);
	int fd = rs_connect(&srv);
	struct rcopy c = { 0 };
	struct notices got = { 0 };
	struct dseen d[6];
	struct sm_record r1, r2, snd;
	memset(d, 0, sizeof(d));
	RS_CMD(rp, fd, &c, "DEL", "t:{node:a}:in");
	INBOX = inbox_new(&E.ring, &E.wheel, addr, "a", on_notice, &got, err, sizeof(err));
	assert_non_null(INBOX);
	inbox_start(INBOX);
	uint64_t end = now_ms() + 3000;
	while (!xread_waiting(rp, fd) && now_ms() < end)
		turn(&E);
	assert_true(xread_waiting(rp, fd));

	new_rec(&r1, &A, 300);
	new_rec(&r2, &B, 300);
	new_rec(&snd, &A, 300);
	create(&r1, "b1@example.com", "r");
	create(&r2, "b2@example.com", "r");
	create(&snd, "snd@example.com", "s");
	struct store_sender from = { "snd@example.com", snd.id, 1, 1 };
	struct store_sender old = { "snd@example.com", snd.id, 9, 3 }; /* not its epoch */
	deliver_from("b1@example.com", "r", 1, &from, &d[0]);
	from.h_in = 2;
	deliver_from("b2@example.com", "r", 2, &from, &d[1]);
	deliver_from("b1@example.com", "r", 3, &old, &d[2]);
	from.h_in = 4;
	deliver_from("b1@example.com", "r", 4, &from, &d[3]);
	deliver_from("b3@example.com", "", 5, &from, &d[4]);
	from.h_in = 6;
	deliver_from("b2@example.com", "r", 6, &from, &d[5]);
	assert_int_equal(run_until(&d[5].calls, 1, 3000), 0);
	for (int i = 0; i < 6; i++)
		assert_int_equal(d[i].calls, 1);
	assert_true(d[0].err == 0 && d[0].n == 1 && d[0].t[0].seq == 1 && bus_addr_eq(&d[0].t[0].owner, &A));
	assert_true(d[1].err == 0 && d[1].n == 1 && d[1].t[0].seq == 1 && bus_addr_eq(&d[1].t[0].owner, &B));
	assert_int_equal(d[2].err, -ESTALE);
	assert_true(d[3].err == 0 && d[3].n == 1 && d[3].t[0].seq == 2);
	assert_true(d[4].err == 0 && d[4].n == 0);          /* nobody there */
	assert_true(d[5].err == 0 && d[5].n == 1 && d[5].t[0].seq == 2);
	char key[96];
	snprintf(key, sizeof(key), "t:{snd@example.com}:s:%s", snd.id);
	RS_CMD(rp, fd, &c, "HGET", key, "h_in");
	assert_string_equal(c.str, "6");                     /* the last count of the row */
	rcopy_clear(&c);
	RS_CMD(rp, fd, &c, "XLEN", "t:{node:a}:in");
	assert_int_equal(c.integer, 1);                      /* one entry for all four */
	rcopy_clear(&c);

	end = now_ms() + 3000;
	while (got.n < 4 && now_ms() < end)
		turn(&E);
	assert_int_equal(got.n, 4);
	static const char *const ids[] = { "m1", "m2", "m4", "m6" };
	static const uint32_t seqs[] = { 1, 1, 2, 2 };
	for (int i = 0; i < 4; i++) {
		assert_int_equal(got.kind[i], BUS_APPENDED);
		assert_int_equal(got.seq[i], seqs[i]);
		assert_string_equal(got.id[i], ids[i]);
		assert_true(bus_addr_eq(&got.to[i], i % 2 ? &B : &A));
	}

	/* alone: the single form, which nodes before the batched one read */
	memset(&d[0], 0, sizeof(d[0]));
	deliver_from("b1@example.com", "r", 7, NULL, &d[0]);
	assert_int_equal(run_until(&d[0].calls, 1, 3000), 0);
	assert_true(d[0].err == 0 && d[0].n == 1 && d[0].t[0].seq == 3);
	RS_CMD(rp, fd, &c, "XREVRANGE", "t:{node:a}:in", "+", "-", "COUNT", "1");
	assert_true(c.n == 1 && c.el[0].n == 2 && c.el[0].el[1].n == 6);
	assert_string_equal(c.el[0].el[1].el[0].str, "k");
	assert_string_equal(c.el[0].el[1].el[1].str, "3");
	rcopy_clear(&c);
	end = now_ms() + 3000;
	while (got.n < 5 && now_ms() < end)
		turn(&E);
	assert_int_equal(got.n, 5);
	assert_true(got.seq[4] == 3 && !strcmp(got.id[4], "m7"));

	inbox_stop(INBOX);
	end = now_ms() + 3000;
	while (!inbox_stopped(INBOX) && now_ms() < end)
		turn(&E);
	assert_true(inbox_stopped(INBOX));
	inbox_free(INBOX);
	INBOX = NULL;
	rproto_free(rp);
	close(fd);
}

static int group_setup(void **state)
{
	(void)state;
	/* As tetherd: the blocking connection (store_user_put) writes to a
	 * socket test_restart's Redis closed; that is an error, not a death. */
	signal(SIGPIPE, SIG_IGN);
	rs_start(&srv, 0);
	assert_int_equal(nodes_set_self("a"), 0);
	env_open(&E);
	H = E.h;
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	env_close(&E);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_user_get),
		cmocka_unit_test(test_session_ops),
		cmocka_unit_test(test_fencing),
		cmocka_unit_test(test_owner_of_previous_run),
		cmocka_unit_test(test_append_order_ack),
		cmocka_unit_test(test_isr),
		cmocka_unit_test(test_fast),
		cmocka_unit_test(test_password_revokes),
		cmocka_unit_test(test_cancelled_take),
		cmocka_unit_test(test_same_as_memory),
		cmocka_unit_test(test_throughput),
		cmocka_unit_test(test_function_flush),
		cmocka_unit_test(test_timeout),
		cmocka_unit_test(test_restart),
		cmocka_unit_test(test_deliver),
		cmocka_unit_test(test_im_same_as_memory),
		cmocka_unit_test(test_im_subscription_both_sides),
		cmocka_unit_test(test_im_offline),
		cmocka_unit_test(test_im_roster_set_remove),
		cmocka_unit_test(test_direct),
		cmocka_unit_test(test_directed_presence),
		cmocka_unit_test(test_inbox_reap),
		cmocka_unit_test(test_deliver_batched),
	};
	if (sodium_init() < 0)
		return 1;
	if (!redis_server_bin()) {
		fprintf(stderr, "SKIP: redis-server not found (apt-get install redis-server, or set REDIS_SERVER)\n");
		return 77;
	}
	int rc = cmocka_run_group_tests(tests, group_setup, group_teardown);
	rs_destroy(&srv);
	return rc;
}
