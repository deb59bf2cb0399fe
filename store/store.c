/* store/store.c - store_open(): picks a backend by name; per-worker handles
 * through which operations complete asynchronously. */
#include "tether/store.h"
#include "store_op.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "tether/log.h"
#include "tether/metrics.h"
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

/* ---- handles ----------------------------------------------------------- */

struct store_handle *store_attach(struct store *st, void *link)
{
	struct store_handle *h = calloc(1, sizeof(*h));
	if (!h)
		return NULL;
	h->st = st;
	h->link = link;
	h->tail = &h->head;
	if (st->ops->attach)
		st->ops->attach(h);
	return h;
}

/* Finished write operations a handle keeps for reuse: an open-loop flood
 * completes thousands per loop turn (two per stanza), and with fewer kept
 * most of them went through malloc and free again. 320 bytes each: at most
 * ~1.3 MB per worker, handed back by store_trim() when a burst is over. */
#define SPARE_MAX 4096

static int is_write(enum store_op_kind k)
{
	return k == STORE_OP_SM_CREATE || k == STORE_OP_SM_APPEND || k == STORE_OP_SM_ACK ||
	       k == STORE_OP_SM_UPDATE || k == STORE_OP_SM_SET_ISR;
}

static void op_free(struct store_op *op)
{
	if (op->release)
		op->release(op);
	struct store_handle *h = op->h;
	if (h && is_write(op->kind) && h->nspare < SPARE_MAX) {
		op->next = h->spare;
		h->spare = op;
		h->nspare++;
		return;
	}
	free(op);
}

void store_trim(struct store_handle *h)
{
	while (h->spare) {
		struct store_op *op = h->spare;
		h->spare = op->next;
		free(op);
	}
	h->nspare = 0;
}

void store_detach(struct store_handle *h)
{
	if (!h)
		return;
	for (struct store_op *op = h->head, *next; op; op = next) {
		next = op->next;
		op_free(op); /* a write goes to the spares: freed below */
	}
	store_trim(h);
	if (h->st->ops->detach)
		h->st->ops->detach(h);
	free(h);
}

/* Queues <op> behind everything issued before it (one ordered stream per
 * worker, like one connection to a networked store). The memory backend's
 * operations are due one turn from now plus the test delay; a submitting
 * backend sends it now (an error fails it at once, still in order). */
static void op_queue(struct store_handle *h, struct store_op *op, int *err)
{
	op->issued_us = metrics_now_us();
	op->err = err;
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
	if (h->st->ops->submit) {
		int rc = h->st->ops->submit(h, op);
		if (rc) {
			*err = rc;
			op->ready = 1;
		}
	}
}

void store_op_enqueue(struct store_handle *h, struct store_op *op, int *err)
{
	op_queue(h, op, err);
}

static int op_due(const struct store_handle *h, const struct store_op *op, uint64_t turn)
{
	return h->st->ops->submit ? op->ready : op->due <= turn;
}

/* The /metrics series of <kind>: a few kinds share one. */
static const struct {
	enum metric_id ops, errs;
} op_metric[] = {
#define OPM(k, m) [STORE_OP_##k] = { M_STORE_OP_##m, M_STORE_ERR_##m }
	OPM(USER_GET, USER_GET), OPM(SM_TAKE, SM_TAKE), OPM(FAST_GET, FAST), OPM(FAST_CAS, FAST),
	OPM(SM_CREATE, SM_WRITE), OPM(SM_APPEND, SM_APPEND), OPM(SM_ACK, SM_ACK),
	OPM(SM_UPDATE, SM_WRITE), OPM(SM_SET_ISR, SM_WRITE), OPM(SM_DESTROY, SM_DESTROY),
	OPM(NODE_NOTICE, NOTICE), OPM(BARRIER, BARRIER), OPM(DELIVER, DELIVER),
#undef OPM
};

/* A result that says the store could not do its job, as opposed to an
 * answer (not found, taken over, wrong token, ack out of range, exists,
 * not supported by this backend). */
static int op_failed(int err)
{
	return err && err != -ENOENT && err != -ESTALE && err != -EACCES && err != -ERANGE &&
	       err != -EEXIST && err != -ENOTSUP;
}

/* Counts <op> as it leaves the queue at <now_us>, cancelled or not: the
 * store did the work either way. */
static void op_count(const struct store_op *op, uint64_t now_us)
{
	if ((size_t)op->kind >= sizeof(op_metric) / sizeof(op_metric[0]) || !op_metric[op->kind].ops)
		return;
	metrics_inc(op_metric[op->kind].ops);
	if (op->err && op_failed(*op->err))
		metrics_inc(op_metric[op->kind].errs);
	metrics_observe_us(H_STORE, now_us - op->issued_us);
}

void store_flush(struct store_handle *h)
{
	if (h->st->ops->flush)
		h->st->ops->flush(h);
}

size_t store_poll(struct store_handle *h)
{
	size_t ran = 0;
	h->turn++;
	if (!h->head || !op_due(h, h->head, h->turn))
		return 0;
	uint64_t now_us = metrics_now_us(); /* one clock read for the turn's completions */
	while (h->head && op_due(h, h->head, h->turn)) {
		struct store_op *op = h->head;
		h->head = op->next;
		if (!h->head)
			h->tail = &h->head;
		op_count(op, now_us);
		if (!op->cancelled) {
			h->pending--;
			op->complete(op);
			ran++;
		} else if (h->st->ops->compensate) {
			h->st->ops->compensate(h, op);
		}
		op_free(op);
	}
	return ran;
}

size_t store_pending(const struct store_handle *h)
{
	return h->pending;
}

size_t store_backlog(const struct store_handle *h)
{
	return h->st->ops->submit ? h->pending : 0;
}

int store_turn_due(const struct store_handle *h)
{
	return h->head && op_due(h, h->head, h->turn + 1);
}

void store_op_cancel(struct store_op *op)
{
	if (!op || op->cancelled)
		return;
	op->cancelled = 1;
	op->h->pending--;
	/* Release now, unless a backend still has to undo it when its reply
	 * comes: what the result holds (references, secrets) must not wait. */
	if (op->release && !op->h->st->ops->compensate) {
		op->release(op);
		op->release = NULL;
	}
}

void store_cancel_ud(struct store_handle *h, void *ud)
{
	for (struct store_op *op = h->head; op; op = op->next)
		if (op->ud == ud && !op->cancelled)
			store_op_cancel(op);
}

void store_orphan_deliveries(struct store_handle *h, void *ud, store_delivered_fn *fn,
			     void *new_ud)
{
	for (struct store_op *op = h->head; op; op = op->next) {
		if (op->ud != ud || op->cancelled || op->kind != STORE_OP_DELIVER)
			continue;
		((struct store_deliver_op *)op)->fn = fn;
		op->ud = new_ud;
	}
}

/* A zeroed operation of <size> bytes and <kind>. */
static void *op_new(size_t size, enum store_op_kind kind, void *ud,
		    void (*complete)(struct store_op *), void (*release)(struct store_op *))
{
	struct store_op *op = calloc(1, size);
	if (!op)
		return NULL;
	op->kind = kind;
	op->ud = ud;
	op->complete = complete;
	op->release = release;
	return op;
}

/* ---- users ------------------------------------------------------------- */

static void user_complete(struct store_op *op)
{
	struct store_user_op *u = (struct store_user_op *)op;
	u->fn(op->ud, u->err, u->err ? NULL : &u->creds);
}

static void user_release(struct store_op *op)
{
	struct store_user_op *u = (struct store_user_op *)op;
	scram_creds_wipe(&u->creds);
	free(u->bare);
	u->bare = NULL;
}

struct store_op *store_user_get_async(struct store_handle *h, const char *bare,
				      store_user_fn *fn, void *ud)
{
	struct store_user_op *u = op_new(sizeof(*u), STORE_OP_USER_GET, ud, user_complete,
					 user_release);
	if (!u)
		return NULL;
	if (!(u->bare = strdup(bare))) {
		op_free(&u->op);
		return NULL;
	}
	u->fn = fn;
	if (!h->st->ops->submit)
		u->err = store_user_get(h->st, bare, &u->creds);
	op_queue(h, &u->op, &u->err);
	return &u->op;
}

/* ---- SM take, performed at completion ----------------------------------- */

/* The backend's callback, inside its critical section: copy what it hands
 * over, to use once outside. */
static void take_collect(void *ud, int err, const struct sm_record *rec, const char *resource,
			 const struct sm_entry *q, size_t n)
{
	struct store_take_op *t = ud;
	t->err = err;
	if (rec) {
		t->rec = *rec;
		t->rec.im = NULL;
		t->has_rec = 1;
	}
	/* Without its IM state a resumed session still works (it restores
	 * less): out of memory here is not a failed take. */
	if (rec && rec->im && rec->im_len && !err && (t->im = malloc(rec->im_len))) {
		memcpy(t->im, rec->im, rec->im_len);
		t->rec.im = t->im;
	}
	if (resource && !(t->resource = strdup(resource)) && !err)
		t->err = -ENOMEM;
	if (!n || t->err)
		return;
	if (!(t->q = malloc(n * sizeof(*q)))) {
		t->err = -ENOMEM;
		return;
	}
	for (size_t i = 0; i < n; i++) {
		t->q[i] = q[i];
		rmsg_ref(q[i].msg);
	}
	t->n = n;
}

static void take_complete(struct store_op *op)
{
	struct store_take_op *t = (struct store_take_op *)op;
	/* Memory: performed now, with the clock read now (expiry is judged
	 * when the take happens). -ENOMEM after a successful take (copying
	 * what it returned) is not expected on a machine that works; the
	 * session then stays with this stream's address and expires with
	 * nobody holding it. */
	if (!op->h->st->ops->submit)
		store_sm_take(op->h->st, t->id, t->bare, &t->to, timer_now_ms(),
			      t->has_proof ? &t->proof : NULL, take_collect, t);
	int matched = t->has_proof && t->err == 0;
	t->fn(op->ud, t->err, t->has_rec ? &t->rec : NULL, t->resource ? t->resource : "", t->q,
	      t->n, matched ? t->proof.resp : NULL);
}

static void take_release(struct store_op *op)
{
	struct store_take_op *t = (struct store_take_op *)op;
	for (size_t i = 0; i < t->n; i++)
		rmsg_unref(t->q[i].msg);
	free(t->q);
	free(t->resource);
	free(t->id);
	free(t->bare);
	free(t->im);
	t->q = NULL;
	t->n = 0;
	t->resource = t->id = t->bare = t->im = NULL;
	sodium_memzero(&t->proof, sizeof(t->proof));
	sodium_memzero(&t->rec, sizeof(t->rec));
}

struct store_op *store_sm_take_async(struct store_handle *h, const char *id, const char *bare,
				     const struct bus_addr *to, const struct sm_isr_proof *proof,
				     store_sm_taken_fn *fn, void *ud)
{
	struct store_take_op *t = op_new(sizeof(*t), STORE_OP_SM_TAKE, ud, take_complete,
					 take_release);
	if (!t)
		return NULL;
	if (!(t->id = strdup(id)) || !(t->bare = strdup(bare))) {
		op_free(&t->op);
		return NULL;
	}
	t->fn = fn;
	t->to = *to;
	if (proof) {
		t->has_proof = 1;
		t->proof = *proof;
	}
	op_queue(h, &t->op, &t->err);
	return &t->op;
}

/* ---- FAST, performed at completion -------------------------------------- */

static void fast_complete(struct store_op *op)
{
	struct store_fast_op *f = (struct store_fast_op *)op;
	if (!op->h->st->ops->submit)
		f->err = op->kind == STORE_OP_FAST_CAS
			 ? store_fast_cas(op->h->st, f->bare, f->ua_id, &f->slots)
			 : store_fast_get(op->h->st, f->bare, f->ua_id, &f->slots);
	f->fn(op->ud, f->err, &f->slots);
}

static void fast_release(struct store_op *op)
{
	struct store_fast_op *f = (struct store_fast_op *)op;
	free(f->bare);
	free(f->ua_id);
	f->bare = f->ua_id = NULL;
	sodium_memzero(&f->slots, sizeof(f->slots));
}

static struct store_op *fast_issue(struct store_handle *h, enum store_op_kind kind,
				   const char *bare, const char *ua_id,
				   const struct fast_slots *in, store_fast_fn *fn, void *ud)
{
	struct store_fast_op *f = op_new(sizeof(*f), kind, ud, fast_complete, fast_release);
	if (!f)
		return NULL;
	if (!(f->bare = strdup(bare)) || !(f->ua_id = strdup(ua_id))) {
		op_free(&f->op);
		return NULL;
	}
	f->fn = fn;
	if (in)
		f->slots = *in;
	op_queue(h, &f->op, &f->err);
	return &f->op;
}

struct store_op *store_fast_get_async(struct store_handle *h, const char *bare, const char *ua_id,
				      store_fast_fn *fn, void *ud)
{
	return fast_issue(h, STORE_OP_FAST_GET, bare, ua_id, NULL, fn, ud);
}

struct store_op *store_fast_cas_async(struct store_handle *h, const char *bare, const char *ua_id,
				      const struct fast_slots *in, store_fast_fn *fn, void *ud)
{
	return fast_issue(h, STORE_OP_FAST_CAS, bare, ua_id, in, fn, ud);
}

/* ---- the owner's writes, performed when issued --------------------------- */

static void write_complete(struct store_op *op)
{
	struct store_write_op *w = (struct store_write_op *)op;
	const struct bus_addr *owner = NULL;
	if ((w->err == -ESTALE || (!w->err && op->kind == STORE_OP_SM_CREATE)) &&
	    (w->owner.slot || w->owner.gen))
		owner = &w->owner;
	if (w->fn)
		w->fn(op->ud, w->err, owner, op->kind == STORE_OP_SM_APPEND ? &w->e : NULL);
}

static void write_release(struct store_op *op)
{
	struct store_write_op *w = (struct store_write_op *)op;
	if (w->e.msg)
		rmsg_unref(w->e.msg);
	w->e.msg = NULL;
	free(w->bare);
	free(w->resource);
	free(w->im);
	w->bare = w->resource = w->im = NULL;
	w->rec.im = NULL;
	sodium_memzero(w->isr_sealed, sizeof(w->isr_sealed));
}

static struct store_write_op *write_new(struct store_handle *h, enum store_op_kind kind,
					const char *id, uint32_t epoch, store_write_fn *fn, void *ud)
{
	struct store_write_op *w;
	if (h->spare) {
		w = (struct store_write_op *)h->spare;
		h->spare = w->op.next;
		h->nspare--;
		memset(w, 0, sizeof(*w));
		w->op.kind = kind;
		w->op.ud = ud;
		w->op.complete = write_complete;
		w->op.release = write_release;
	} else if (!(w = op_new(sizeof(*w), kind, ud, write_complete, write_release))) {
		return NULL;
	}
	size_t n = strnlen(id, SM_ID_LEN); /* as snprintf would, without its cost per write */
	memcpy(w->rec.id, id, n);
	w->rec.id[n] = 0;
	w->rec.epoch = epoch;
	w->fn = fn;
	return w;
}

/* Memory: performs the write now; then queues its completion. */
static struct store_op *write_issue(struct store_handle *h, struct store_write_op *w)
{
	struct store *st = h->st;
	if (!st->ops->submit) {
		switch (w->op.kind) {
		case STORE_OP_SM_CREATE:
			w->err = store_sm_create(st, &w->rec, w->bare, w->resource);
			break;
		case STORE_OP_SM_APPEND:
			w->err = store_sm_append(st, w->rec.id, w->rec.epoch, &w->e, &w->owner);
			break;
		case STORE_OP_SM_ACK:
			w->err = store_sm_ack(st, w->rec.id, w->rec.epoch, w->h);
			break;
		case STORE_OP_SM_UPDATE:
			w->err = store_sm_update(st, &w->rec);
			break;
		default: /* STORE_OP_SM_SET_ISR */
			w->err = store_sm_set_isr(st, w->rec.id, w->rec.epoch, w->set,
						  w->isr_mech, w->isr_sealed);
			break;
		}
	}
	op_queue(h, &w->op, &w->err);
	return &w->op;
}

struct store_op *store_sm_create_async(struct store_handle *h, const struct sm_record *rec,
				       const char *bare, const char *resource,
				       store_write_fn *fn, void *ud)
{
	struct store_write_op *w = write_new(h, STORE_OP_SM_CREATE, rec->id, rec->epoch, fn, ud);
	if (!w)
		return NULL;
	w->rec = *rec;
	w->rec.im = NULL; /* a new session's state comes with its first update */
	if (!(w->bare = strdup(bare)) || !(w->resource = strdup(resource))) {
		op_free(&w->op);
		return NULL;
	}
	return write_issue(h, w);
}

struct store_op *store_sm_append_async(struct store_handle *h, const char *id, uint32_t epoch,
				       const struct sm_entry *e, store_write_fn *fn, void *ud)
{
	struct store_write_op *w = write_new(h, STORE_OP_SM_APPEND, id, epoch, fn, ud);
	if (!w)
		return NULL;
	w->e = *e;
	rmsg_ref(e->msg);
	return write_issue(h, w);
}

struct store_op *store_sm_ack_async(struct store_handle *h, const char *id, uint32_t epoch,
				    uint32_t hval, store_write_fn *fn, void *ud)
{
	struct store_write_op *w = write_new(h, STORE_OP_SM_ACK, id, epoch, fn, ud);
	if (!w)
		return NULL;
	w->h = hval;
	return write_issue(h, w);
}

struct store_op *store_sm_update_async(struct store_handle *h, const struct sm_record *rec,
				       store_write_fn *fn, void *ud)
{
	struct store_write_op *w = write_new(h, STORE_OP_SM_UPDATE, rec->id, rec->epoch, fn, ud);
	if (!w)
		return NULL;
	w->rec = *rec;
	w->rec.im = NULL;
	if (rec->im) {
		if (!(w->im = malloc(rec->im_len ? rec->im_len : 1))) {
			op_free(&w->op);
			return NULL;
		}
		memcpy(w->im, rec->im, rec->im_len);
		w->rec.im = w->im;
	}
	return write_issue(h, w);
}

struct store_op *store_sm_set_isr_async(struct store_handle *h, const char *id, uint32_t epoch,
					int set, uint8_t mech,
					const uint8_t sealed[TOKEN_SEALED_LEN],
					store_write_fn *fn, void *ud)
{
	struct store_write_op *w = write_new(h, STORE_OP_SM_SET_ISR, id, epoch, fn, ud);
	if (!w)
		return NULL;
	w->set = set;
	w->isr_mech = mech;
	if (set)
		memcpy(w->isr_sealed, sealed, TOKEN_SEALED_LEN);
	return write_issue(h, w);
}

/* ---- destroy, performed when issued ------------------------------------- */

static void destroy_collect(void *ud, int err, const struct sm_record *rec, const char *bare,
			    const char *resource, struct sm_entry *q, size_t n)
{
	struct store_destroy_op *d = ud;
	d->err = err;
	if (rec) {
		d->rec = *rec;
		d->rec.im = NULL;
		d->has_rec = 1;
	}
	d->bare = bare ? strdup(bare) : NULL;
	d->resource = resource ? strdup(resource) : NULL;
	if (!n)
		return;
	/* The queue must survive until the completion: one array, allocated
	 * here; on failure the messages are handed over one by one instead
	 * (each bounced by the caller), never dropped. */
	if ((d->q = malloc(n * sizeof(*q)))) {
		memcpy(d->q, q, n * sizeof(*q));
		d->n = n;
		return;
	}
	d->err = -ENOMEM;
	for (size_t i = 0; i < n; i++)
		rmsg_unref(q[i].msg);
}

static void destroy_complete(struct store_op *op)
{
	struct store_destroy_op *d = (struct store_destroy_op *)op;
	struct sm_entry *q = d->q;
	size_t n = d->n;
	d->q = NULL;
	d->n = 0;
	if (d->fn)
		d->fn(op->ud, d->err, d->has_rec ? &d->rec : NULL, d->bare, d->resource, q, n);
	else
		for (size_t i = 0; i < n; i++)
			rmsg_unref(q[i].msg);
	free(q);
}

static void destroy_release(struct store_op *op)
{
	struct store_destroy_op *d = (struct store_destroy_op *)op;
	for (size_t i = 0; i < d->n; i++)
		rmsg_unref(d->q[i].msg);
	free(d->q);
	free(d->bare);
	free(d->resource);
	d->q = NULL;
	d->n = 0;
	d->bare = d->resource = NULL;
	sodium_memzero(&d->rec, sizeof(d->rec));
}

struct store_op *store_sm_destroy_async(struct store_handle *h, const char *id, uint32_t epoch,
					store_sm_drain_fn *fn, void *ud)
{
	struct store_destroy_op *d = op_new(sizeof(*d), STORE_OP_SM_DESTROY, ud, destroy_complete,
					    destroy_release);
	if (!d)
		return NULL;
	snprintf(d->id, sizeof(d->id), "%s", id);
	d->epoch = epoch;
	d->fn = fn;
	if (!h->st->ops->submit)
		store_sm_destroy(h->st, id, epoch, destroy_collect, d);
	op_queue(h, &d->op, &d->err);
	return &d->op;
}

/* ---- notices to another node -------------------------------------------- */

static void notice_complete(struct store_op *op)
{
	struct store_notice_op *n = (struct store_notice_op *)op;
	if (n->err)
		log_warn("store: a notice to node %u was not sent (%s)", n->to.node,
			 strerror(-n->err));
}

int store_node_notice(struct store_handle *h, const struct bus_addr *to, int kind, int cond)
{
	if (!h->st->ops->submit)
		return -ENOTSUP;
	struct store_notice_op *n = op_new(sizeof(*n), STORE_OP_NODE_NOTICE, NULL, notice_complete,
					   NULL);
	if (!n)
		return -ENOMEM;
	n->to = *to;
	n->kind = kind;
	n->cond = cond;
	op_queue(h, &n->op, &n->err);
	return 0;
}

/* ---- barrier ------------------------------------------------------------ */

static void barrier_complete(struct store_op *op)
{
	((struct store_barrier_op *)op)->fn(op->ud);
}

struct store_op *store_barrier_async(struct store_handle *h, void (*fn)(void *ud), void *ud)
{
	struct store_barrier_op *b = op_new(sizeof(*b), STORE_OP_BARRIER, ud, barrier_complete, NULL);
	if (!b)
		return NULL;
	b->fn = fn;
	op_queue(h, &b->op, &b->err);
	return &b->op;
}

/* ---- delivery through the shared directory -------------------------------- */

static void deliver_complete(struct store_op *op)
{
	struct store_deliver_op *d = (struct store_deliver_op *)op;
	d->fn(op->ud, d->err, d->t, d->n < STORE_TARGETS_MAX ? d->n : STORE_TARGETS_MAX, d->msg);
}

static void deliver_release(struct store_op *op)
{
	struct store_deliver_op *d = (struct store_deliver_op *)op;
	if (d->msg)
		rmsg_unref(d->msg);
	free(d->bare);
	free(d->resource);
	free(d->from_bare);
	d->msg = NULL;
	d->bare = d->resource = d->from_bare = NULL;
}

int store_shared(const struct store_handle *h)
{
	return h->st->ops->submit != NULL;
}

struct store_op *store_deliver_async(struct store_handle *h, const char *bare,
				     const char *resource, struct rmsg *m,
				     const struct store_sender *from,
				     store_delivered_fn *fn, void *ud)
{
	if (!store_shared(h))
		return NULL;
	struct store_deliver_op *d = op_new(sizeof(*d), STORE_OP_DELIVER, ud, deliver_complete,
					    deliver_release);
	if (!d)
		return NULL;
	if (!(d->bare = strdup(bare)) || !(d->resource = strdup(resource ? resource : "")) ||
	    (from && !(d->from_bare = strdup(from->bare)))) {
		op_free(&d->op);
		return NULL;
	}
	if (from) {
		snprintf(d->from_sid, sizeof(d->from_sid), "%s", from->sid);
		d->from_epoch = from->epoch;
		d->from_h = from->h_in;
	}
	d->fn = fn;
	d->msg = rmsg_ref(m);
	op_queue(h, &d->op, &d->err);
	return &d->op;
}
