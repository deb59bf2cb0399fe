/* store/memory_sm.c - the memory backend's SM sessions: records and queues by SM-ID.
 *
 * Sessions sit in the striped hash table the router uses too (shtab.h);
 * every operation is a short critical section on one stripe. A session's
 * queue is a ring of entries, each holding a reference to its routed stanza. */
#include "memory_sm.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "tether/ht.h"
#include "tether/rmsg.h"
#include "tether/shtab.h"

struct msess {
	struct shtab_node node;  /* first: the table's link */
	struct sm_record rec;   /* rec.im is always NULL: the state is <im> */
	uint8_t isr_sealed[TOKEN_SEALED_LEN]; /* the token, with rec.has_isr */
	char *bare, *resource;
	char *im;               /* the IM state last written (sm_record.im), or NULL */
	size_t im_len;
	struct sm_entry *q;     /* ring buffer */
	size_t head, len, cap;  /* cap: power of two */
};

struct sm_table {
	struct shtab *tab;
};

static int sess_match(const struct shtab_node *n, const char *id)
{
	return !strcmp(((const struct msess *)n)->rec.id, id);
}

struct sm_table *sm_table_new(void)
{
	struct sm_table *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->tab = shtab_new(sess_match, 16);
	if (!t->tab) {
		free(t);
		return NULL;
	}
	return t;
}

static void sess_free(struct msess *m)
{
	for (size_t i = 0; i < m->len; i++)
		rmsg_unref(m->q[(m->head + i) & (m->cap - 1)].msg);
	free(m->q);
	free(m->bare);
	free(m->resource);
	free(m->im);
	sodium_memzero(m->isr_sealed, TOKEN_SEALED_LEN);
	free(m);
}

static void sess_node_free(struct shtab_node *n, void *ud)
{
	(void)ud;
	sess_free((struct msess *)n);
}

void sm_table_free(struct sm_table *t)
{
	if (!t)
		return;
	shtab_free(t->tab, sess_node_free);
	free(t);
}

/* Write-locks the stripe of <id> and returns it; *<out> = the session or NULL. */
static struct shtab_stripe *lock_find(struct sm_table *t, const char *id, struct msess **out)
{
	uint64_t h = shtab_hash(t->tab, id);
	struct shtab_stripe *s = shtab_lock(t->tab, h, SHTAB_WRITE);
	*out = (struct msess *)shtab_find(s, h, id);
	return s;
}

int sm_table_create(struct sm_table *t, const struct sm_record *rec, const char *bare,
		    const char *resource)
{
	struct msess *m = calloc(1, sizeof(*m)), *old;
	if (!m)
		return -ENOMEM;
	m->rec = *rec;
	m->rec.im = NULL;
	m->rec.has_isr = 0; /* a token comes with sm_table_set_isr only */
	m->bare = strdup(bare);
	m->resource = strdup(resource);
	m->node.hash = shtab_hash(t->tab, rec->id);
	if (!m->bare || !m->resource) {
		sess_free(m);
		return -ENOMEM;
	}
	struct shtab_stripe *s = lock_find(t, rec->id, &old);
	if (old) {
		shtab_unlock(s);
		sess_free(m);
		return -EEXIST; /* 128 random bits: never, but never silently */
	}
	shtab_insert(s, &m->node);
	shtab_unlock(s);
	return 0;
}

static int push(struct msess *m, const struct sm_entry *e)
{
	if (m->len == m->cap) {
		size_t cap = m->cap ? m->cap * 2 : 8;
		struct sm_entry *q = malloc(cap * sizeof(*q));
		if (!q)
			return -ENOMEM;
		for (size_t i = 0; i < m->len; i++)
			q[i] = m->q[(m->head + i) & (m->cap - 1)];
		free(m->q);
		m->q = q;
		m->head = 0;
		m->cap = cap;
	}
	m->q[(m->head + m->len) & (m->cap - 1)] = *e;
	m->len++;
	return 0;
}

int sm_table_append(struct sm_table *t, const char *id, uint32_t epoch,
		    struct sm_entry *e, struct bus_addr *moved_to)
{
	struct msess *m;
	struct shtab_stripe *s = lock_find(t, id, &m);
	int rc = 0;
	if (!m)
		rc = -ENOENT;
	else if (epoch && m->rec.epoch != epoch) {
		if (moved_to)
			*moved_to = m->rec.owner;
		rc = -ESTALE;
	} else {
		e->seq = m->rec.c.out + 1; /* the store numbers: one order per queue */
		if (!(rc = push(m, e))) {
			rmsg_ref(e->msg);
			m->rec.c.out = e->seq;
		}
	}
	shtab_unlock(s);
	return rc;
}

/* Drops queued entries up to and including sequence <h> (mod 2^32). */
static void release(struct msess *m, uint32_t h)
{
	while (m->len) {
		struct sm_entry *e = &m->q[m->head];
		/* e->seq <= h, in modular terms relative to the last ack */
		if ((uint32_t)(e->seq - m->rec.c.acked) > (uint32_t)(h - m->rec.c.acked))
			break;
		rmsg_unref(e->msg);
		m->head = (m->head + 1) & (m->cap - 1);
		m->len--;
	}
	m->rec.c.acked = h;
	/* An empty queue gives its memory back: idle sessions stay small. */
	if (!m->len && m->cap > 8) {
		free(m->q);
		m->q = NULL;
		m->cap = m->head = 0;
	}
}

int sm_table_ack(struct sm_table *t, const char *id, uint32_t epoch, uint32_t h)
{
	struct msess *m;
	struct shtab_stripe *s = lock_find(t, id, &m);
	int rc = 0;
	if (!m)
		rc = -ENOENT;
	else if (m->rec.epoch != epoch)
		rc = -ESTALE;
	else if (sm_check_h(&m->rec.c, h))
		rc = -ERANGE;
	else
		release(m, h);
	shtab_unlock(s);
	return rc;
}

int sm_table_update(struct sm_table *t, const char *id, uint32_t epoch, const struct sm_record *rec)
{
	struct msess *m;
	/* The copy is made before the lock, and freed after it. */
	char *im = rec->im ? malloc(rec->im_len ? rec->im_len : 1) : NULL;
	if (rec->im && !im)
		return -ENOMEM;
	if (im)
		memcpy(im, rec->im, rec->im_len);
	struct shtab_stripe *s = lock_find(t, id, &m);
	int rc = 0;
	if (!m)
		rc = -ENOENT;
	else if (m->rec.epoch != epoch)
		rc = -ESTALE;
	else {
		if (im) {
			char *old = m->im;
			m->im = im;
			m->im_len = rec->im_len;
			im = old;
		}
		/* Counters out/acked are the queue's; the rest is the owner's. */
		m->rec.c.h_in = rec->c.h_in;
		m->rec.max = rec->max;
		m->rec.attached = rec->attached;
		m->rec.expires_ms = rec->expires_ms;
		m->rec.available = rec->available;
		m->rec.priority = rec->priority;
	}
	shtab_unlock(s);
	free(im);
	return rc;
}

/* The ISR check of a takeover, under the stripe lock: <proof> against the
 * token of <m> (NULL: no session of the account). Every failure costs one
 * comparison, like a wrong token (isr.md §8 C). A failed check names a
 * real session: its token dies (XEP-0397 §5), and <seen> gets the record so
 * the caller can end the session if it is detached. A match consumes the
 * token: it can never be used again, whatever happens next. */
static int check_isr(struct msess *m, struct sm_isr_proof *proof, struct sm_record *seen)
{
	int usable = m && m->rec.has_isr && m->rec.isr_mech == proof->mech;
	int ok = ht_verify_sealed(proof->key, usable ? m->isr_sealed : NULL, proof->cb,
				  proof->cb_len, proof->hash, proof->resp) && usable;
	if (m) {
		m->rec.has_isr = 0;
		sodium_memzero(m->isr_sealed, TOKEN_SEALED_LEN);
		*seen = m->rec;
	}
	return ok;
}

static void reverse(struct sm_entry *q, size_t from, size_t to)
{
	while (from + 1 < to) {
		struct sm_entry e = q[from];
		q[from++] = q[--to];
		q[to] = e;
	}
}

/* The queue as one array in order, without allocating (a take or a
 * destroy must not lose a queue for want of memory): the ring rotated in
 * place so that its head is at 0. NULL if empty. */
static struct sm_entry *queue_flat(struct msess *m)
{
	if (!m->len)
		return NULL;
	size_t h = m->head & (m->cap - 1);
	if (h) {
		reverse(m->q, 0, h);
		reverse(m->q, h, m->cap);
		reverse(m->q, 0, m->cap);
		m->head = 0;
	}
	return m->q;
}

int sm_table_take(struct sm_table *t, const char *id, const char *bare, const struct bus_addr *to,
		  uint64_t now_ms, struct sm_isr_proof *proof, store_sm_take_fn *fn, void *ud)
{
	struct msess *m;
	struct sm_record seen;
	struct shtab_stripe *s = lock_find(t, id, &m);
	if (m && strcmp(m->bare, bare))
		m = NULL; /* another account's: as if unknown, and untouched */
	if (proof && !check_isr(m, proof, &seen)) {
		shtab_unlock(s);
		fn(ud, -EACCES, m ? &seen : NULL, NULL, NULL, 0);
		return -EACCES;
	}
	/* Unknown, another account's, or expired: the same answer (sm.md §5). */
	if (!m || !m->rec.max || (!m->rec.attached && now_ms > m->rec.expires_ms)) {
		shtab_unlock(s);
		fn(ud, -ENOENT, NULL, NULL, NULL, 0);
		return -ENOENT;
	}
	struct sm_record before = m->rec;
	m->rec.owner = *to;
	m->rec.epoch++;
	m->rec.attached = 1;
	/* Hand out the queue in order; the callback runs under the lock so
	 * nothing can be appended between the snapshot and the takeover. */
	struct sm_entry *flat = queue_flat(m);
	before.epoch = m->rec.epoch; /* the caller writes with the new epoch */
	before.im = m->im;           /* borrowed: the callback runs under the lock */
	before.im_len = m->im_len;
	fn(ud, 0, &before, m->resource, flat, m->len);
	shtab_unlock(s);
	return 0;
}

int sm_table_destroy(struct sm_table *t, const char *id, uint32_t epoch,
		     store_sm_drain_fn *fn, void *ud)
{
	struct msess *m;
	struct shtab_stripe *s = lock_find(t, id, &m);
	if (!m || (epoch && m->rec.epoch != epoch)) {
		int rc = m ? -ESTALE : -ENOENT;
		shtab_unlock(s);
		if (fn)
			fn(ud, rc, NULL, NULL, NULL, NULL, 0);
		return rc;
	}
	shtab_remove(s, &m->node);
	shtab_unlock(s);
	/* The queue in order; the callee now owns the references. */
	size_t n = m->len;
	struct sm_entry *flat = queue_flat(m);
	m->len = 0; /* references moved */
	if (fn)
		fn(ud, 0, &m->rec, m->bare, m->resource, flat, n);
	else
		for (size_t i = 0; i < n; i++)
			rmsg_unref(flat[i].msg);
	sess_free(m);
	return 0;
}

int sm_table_set_isr(struct sm_table *t, const char *id, uint32_t epoch, int set, uint8_t mech,
		     const uint8_t sealed[TOKEN_SEALED_LEN])
{
	struct msess *m;
	struct shtab_stripe *s = lock_find(t, id, &m);
	int rc = 0;
	if (!m)
		rc = -ENOENT;
	else if (m->rec.epoch != epoch)
		rc = -ESTALE;
	else if (set) {
		m->rec.has_isr = 1;
		m->rec.isr_mech = mech;
		memcpy(m->isr_sealed, sealed, TOKEN_SEALED_LEN);
	} else {
		m->rec.has_isr = 0;
		sodium_memzero(m->isr_sealed, TOKEN_SEALED_LEN);
	}
	shtab_unlock(s);
	return rc;
}

int sm_table_peek(struct sm_table *t, const char *id, const char *bare, struct sm_record *out,
		  uint8_t sealed[TOKEN_SEALED_LEN])
{
	struct msess *m;
	struct shtab_stripe *s = lock_find(t, id, &m);
	int rc = -ENOENT;
	if (m && !strcmp(m->bare, bare)) {
		*out = m->rec;
		if (sealed)
			memcpy(sealed, m->isr_sealed, TOKEN_SEALED_LEN);
		rc = 0;
	}
	shtab_unlock(s);
	return rc;
}

static void revoke_one(struct shtab_node *n, void *bare)
{
	struct msess *m = (struct msess *)n;
	if (m->rec.has_isr && !strcmp(m->bare, bare)) {
		m->rec.has_isr = 0;
		sodium_memzero(m->isr_sealed, TOKEN_SEALED_LEN);
	}
}

void sm_table_revoke_isr(struct sm_table *t, const char *bare)
{
	shtab_each(t->tab, revoke_one, (void *)bare);
}

size_t sm_table_queued(struct sm_table *t, const char *id)
{
	struct msess *m;
	struct shtab_stripe *s = lock_find(t, id, &m);
	size_t n = m ? m->len : 0;
	shtab_unlock(s);
	return n;
}
