/* store/store.c - store_open(): picks a backend by name; per-worker handles
 * through which operations complete asynchronously. */
#include "tether/store.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "tether/rmsg.h"
#include "tether/timer.h"

struct store *store_open(const char *backend, const char *path, char *err, size_t errlen)
{
	if (!backend || !path) {
		snprintf(err, errlen, "store: backend and path are required");
		return NULL;
	}
	if (strcmp(backend, "memory") == 0)
		return store_memory_open(path, err, errlen);
	if (strcmp(backend, "redis") == 0) /* <path> is the address: host:port or unix:/path */
		return store_redis_open(path, err, errlen);
	snprintf(err, errlen, "store: unknown backend '%s' (known: memory, redis)", backend);
	return NULL;
}

/* ---- asynchronous operations ------------------------------------------- */

/* One operation issued on a handle: it sits in the handle's FIFO until the
 * turn it is due, then its completion runs (or, cancelled, only its
 * release). The operation-specific part follows this header in memory. */
struct store_op {
	struct store_op *next;
	struct store_handle *h;
	uint64_t due;                           /* the store_poll() turn it completes at */
	int cancelled;
	void (*complete)(struct store_op *op);  /* calls the caller's callback */
	void (*release)(struct store_op *op);   /* drops what the result holds */
};

struct store_handle {
	struct store *st;
	struct store_op *head, **tail;  /* FIFO; <due> never decreases along it */
	uint64_t turn;                  /* store_poll() calls so far */
	uint64_t last_due;
	size_t pending;                 /* issued, not completed, not cancelled */
};

struct store_handle *store_attach(struct store *st)
{
	struct store_handle *h = calloc(1, sizeof(*h));
	if (!h)
		return NULL;
	h->st = st;
	h->tail = &h->head;
	return h;
}

static void op_free(struct store_op *op)
{
	if (op->release)
		op->release(op);
	free(op);
}

void store_detach(struct store_handle *h)
{
	if (!h)
		return;
	for (struct store_op *op = h->head, *next; op; op = next) {
		next = op->next;
		op_free(op);
	}
	free(h);
}

/* Queues <op>: due one turn from now plus the test delay, and never before
 * an operation issued earlier (one ordered stream per worker, like one
 * connection to a networked store). */
static void op_queue(struct store_handle *h, struct store_op *op)
{
	uint64_t due = h->turn + 1;
	if (h->st->test_delay)
		due += randombytes_uniform(h->st->test_delay + 1);
	if (due < h->last_due)
		due = h->last_due;
	h->last_due = op->due = due;
	op->h = h;
	op->next = NULL;
	*h->tail = op;
	h->tail = &op->next;
	h->pending++;
}

size_t store_poll(struct store_handle *h)
{
	size_t ran = 0;
	h->turn++;
	while (h->head && h->head->due <= h->turn) {
		struct store_op *op = h->head;
		h->head = op->next;
		if (!h->head)
			h->tail = &h->head;
		if (!op->cancelled) {
			h->pending--;
			op->complete(op);
			ran++;
		}
		op_free(op);
	}
	return ran;
}

size_t store_pending(const struct store_handle *h)
{
	return h->pending;
}

void store_op_cancel(struct store_op *op)
{
	if (!op || op->cancelled)
		return;
	op->cancelled = 1;
	op->h->pending--;
	/* Release now: what the result holds (references, secrets) must not
	 * wait for the turn the operation would have completed at. */
	if (op->release) {
		op->release(op);
		op->release = NULL;
	}
}

struct user_op {
	struct store_op op;     /* first */
	store_user_fn *fn;
	void *ud;
	int err;
	struct user_creds creds;
};

static void user_complete(struct store_op *op)
{
	struct user_op *u = (struct user_op *)op;
	u->fn(u->ud, u->err, u->err ? NULL : &u->creds);
}

static void user_release(struct store_op *op)
{
	scram_creds_wipe(&((struct user_op *)op)->creds);
}

struct store_op *store_user_get_async(struct store_handle *h, const char *bare,
				      store_user_fn *fn, void *ud)
{
	struct user_op *u = calloc(1, sizeof(*u));
	if (!u)
		return NULL;
	u->fn = fn;
	u->ud = ud;
	u->op.complete = user_complete;
	u->op.release = user_release;
	u->err = store_user_get(h->st, bare, &u->creds);
	op_queue(h, &u->op);
	return &u->op;
}

/* ---- SM take, performed at completion ----------------------------------- */

struct take_op {
	struct store_op op;     /* first */
	store_sm_taken_fn *fn;
	void *ud;
	char *id, *bare;
	struct bus_addr to;
	int has_proof;
	struct sm_isr_proof proof;
};

/* What the backend's callback hands over from inside its critical section,
 * kept until the caller's callback has run outside it. */
struct take_result {
	int err;
	int has_rec;
	struct sm_record rec;
	char *resource;
	struct sm_entry *q;
	size_t n;
};

static void take_collect(void *ud, int err, const struct sm_record *rec, const char *resource,
			 const struct sm_entry *q, size_t n)
{
	struct take_result *r = ud;
	r->err = err;
	if (rec) {
		r->rec = *rec;
		r->has_rec = 1;
	}
	if (resource && !(r->resource = strdup(resource)) && !err)
		r->err = -ENOMEM;
	if (!n || r->err)
		return;
	if (!(r->q = malloc(n * sizeof(*q)))) {
		r->err = -ENOMEM;
		return;
	}
	for (size_t i = 0; i < n; i++) {
		r->q[i] = q[i];
		rmsg_ref(q[i].msg);
	}
	r->n = n;
}

static void take_complete(struct store_op *op)
{
	struct take_op *t = (struct take_op *)op;
	struct take_result r = { 0 };
	/* The clock is read now: expiry is judged when the take happens. */
	store_sm_take(op->h->st, t->id, t->bare, &t->to, timer_now_ms(),
		      t->has_proof ? &t->proof : NULL, take_collect, &r);
	/* -ENOMEM after a successful take (copying what it returned) is not
	 * expected on a machine that works; the session then stays with this
	 * stream's address and expires with nobody holding it. */
	int matched = t->has_proof && r.err == 0;
	t->fn(t->ud, r.err, r.has_rec ? &r.rec : NULL, r.resource ? r.resource : "", r.q, r.n,
	      matched ? t->proof.resp : NULL);
	for (size_t i = 0; i < r.n; i++)
		rmsg_unref(r.q[i].msg);
	free(r.q);
	free(r.resource);
	sodium_memzero(&r.rec, sizeof(r.rec));
}

static void take_release(struct store_op *op)
{
	struct take_op *t = (struct take_op *)op;
	free(t->id);
	free(t->bare);
	t->id = t->bare = NULL;
	sodium_memzero(&t->proof, sizeof(t->proof));
}

struct store_op *store_sm_take_async(struct store_handle *h, const char *id, const char *bare,
				     const struct bus_addr *to, const struct sm_isr_proof *proof,
				     store_sm_taken_fn *fn, void *ud)
{
	struct take_op *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->op.release = take_release;
	if (!(t->id = strdup(id)) || !(t->bare = strdup(bare))) {
		take_release(&t->op);
		free(t);
		return NULL;
	}
	t->op.complete = take_complete;
	t->fn = fn;
	t->ud = ud;
	t->to = *to;
	if (proof) {
		t->has_proof = 1;
		t->proof = *proof;
	}
	op_queue(h, &t->op);
	return &t->op;
}

/* ---- FAST, performed at completion -------------------------------------- */

struct fast_op {
	struct store_op op;     /* first */
	store_fast_fn *fn;
	void *ud;
	int cas;
	char *bare, *ua_id;
	struct fast_slots slots;
};

static void fast_complete(struct store_op *op)
{
	struct fast_op *f = (struct fast_op *)op;
	int err = f->cas ? store_fast_cas(op->h->st, f->bare, f->ua_id, &f->slots)
			 : store_fast_get(op->h->st, f->bare, f->ua_id, &f->slots);
	f->fn(f->ud, err, &f->slots);
}

static void fast_release(struct store_op *op)
{
	struct fast_op *f = (struct fast_op *)op;
	free(f->bare);
	free(f->ua_id);
	f->bare = f->ua_id = NULL;
	sodium_memzero(&f->slots, sizeof(f->slots));
}

static struct store_op *fast_issue(struct store_handle *h, int cas, const char *bare,
				   const char *ua_id, const struct fast_slots *in,
				   store_fast_fn *fn, void *ud)
{
	struct fast_op *f = calloc(1, sizeof(*f));
	if (!f)
		return NULL;
	f->op.release = fast_release;
	if (!(f->bare = strdup(bare)) || !(f->ua_id = strdup(ua_id))) {
		fast_release(&f->op);
		free(f);
		return NULL;
	}
	f->op.complete = fast_complete;
	f->fn = fn;
	f->ud = ud;
	f->cas = cas;
	if (in)
		f->slots = *in;
	op_queue(h, &f->op);
	return &f->op;
}

struct store_op *store_fast_get_async(struct store_handle *h, const char *bare, const char *ua_id,
				      store_fast_fn *fn, void *ud)
{
	return fast_issue(h, 0, bare, ua_id, NULL, fn, ud);
}

struct store_op *store_fast_cas_async(struct store_handle *h, const char *bare, const char *ua_id,
				      const struct fast_slots *in, store_fast_fn *fn, void *ud)
{
	return fast_issue(h, 1, bare, ua_id, in, fn, ud);
}
