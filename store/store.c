/* store/store.c - store_open(): picks a backend by name; per-worker handles
 * through which operations complete asynchronously. */
#include "tether/store.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

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
