/* store/memory_sm.c - the memory backend's SM sessions: records and queues by SM-ID.
 *
 * Sessions sit in ROUTER-style stripes, each a hash table behind its own
 * mutex; every operation is a short critical section. A session's queue is
 * a ring of entries, each holding a reference to its routed stanza. */
#include "memory_sm.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "tether/ht.h"
#include "tether/rmsg.h"

#define STRIPES 64

struct msess {
	struct msess *next;
	uint64_t hash;
	struct sm_record rec;
	char *bare, *resource;
	struct sm_entry *q;     /* ring buffer */
	size_t head, len, cap;  /* cap: power of two */
};

struct stripe {
	pthread_mutex_t lock;
	struct msess **buckets;
	size_t nbuckets, count;
};

struct sm_table {
	uint8_t key[crypto_shorthash_KEYBYTES];
	struct stripe s[STRIPES];
};

struct sm_table *sm_table_new(void)
{
	struct sm_table *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	randombytes_buf(t->key, sizeof(t->key));
	for (int i = 0; i < STRIPES; i++) {
		pthread_mutex_init(&t->s[i].lock, NULL);
		t->s[i].nbuckets = 16;
		t->s[i].buckets = calloc(16, sizeof(struct msess *));
		if (!t->s[i].buckets) {
			sm_table_free(t);
			return NULL;
		}
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
	free(m);
}

void sm_table_free(struct sm_table *t)
{
	if (!t)
		return;
	for (int i = 0; i < STRIPES; i++) {
		for (size_t b = 0; t->s[i].buckets && b < t->s[i].nbuckets; b++)
			for (struct msess *m = t->s[i].buckets[b], *n; m; m = n) {
				n = m->next;
				sess_free(m);
			}
		free(t->s[i].buckets);
		pthread_mutex_destroy(&t->s[i].lock);
	}
	free(t);
}

static uint64_t hash_id(const struct sm_table *t, const char *id)
{
	uint64_t h;
	crypto_shorthash((unsigned char *)&h, (const unsigned char *)id, strlen(id), t->key);
	return h;
}

/* Locks the stripe of <id> and returns it; *<out> = the session or NULL. */
static struct stripe *lock_find(struct sm_table *t, const char *id, struct msess ***pp_out,
				struct msess **out)
{
	uint64_t h = hash_id(t, id);
	struct stripe *s = &t->s[h % STRIPES];
	pthread_mutex_lock(&s->lock);
	struct msess **pp = &s->buckets[(h >> 8) & (s->nbuckets - 1)];
	while (*pp && ((*pp)->hash != h || strcmp((*pp)->rec.id, id)))
		pp = &(*pp)->next;
	*out = *pp;
	if (pp_out)
		*pp_out = pp;
	return s;
}

static void grow(struct stripe *s)
{
	size_t n = s->nbuckets * 2;
	struct msess **nb = calloc(n, sizeof(*nb));
	if (!nb)
		return;
	for (size_t b = 0; b < s->nbuckets; b++)
		for (struct msess *m = s->buckets[b], *next; m; m = next) {
			next = m->next;
			m->next = nb[(m->hash >> 8) & (n - 1)];
			nb[(m->hash >> 8) & (n - 1)] = m;
		}
	free(s->buckets);
	s->buckets = nb;
	s->nbuckets = n;
}

int sm_table_create(struct sm_table *t, const struct sm_record *rec, const char *bare,
		    const char *resource)
{
	struct msess *m = calloc(1, sizeof(*m)), *old;
	if (!m)
		return -ENOMEM;
	m->rec = *rec;
	m->bare = strdup(bare);
	m->resource = strdup(resource);
	m->hash = hash_id(t, rec->id);
	if (!m->bare || !m->resource) {
		sess_free(m);
		return -ENOMEM;
	}
	struct stripe *s = lock_find(t, rec->id, NULL, &old);
	if (old) {
		pthread_mutex_unlock(&s->lock);
		sess_free(m);
		return -EEXIST; /* 128 random bits: never, but never silently */
	}
	if (s->count >= s->nbuckets)
		grow(s);
	struct msess **head = &s->buckets[(m->hash >> 8) & (s->nbuckets - 1)];
	m->next = *head;
	*head = m;
	s->count++;
	pthread_mutex_unlock(&s->lock);
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
		    const struct sm_entry *e, struct sm_owner *moved_to)
{
	struct msess *m;
	struct stripe *s = lock_find(t, id, NULL, &m);
	int rc = 0;
	if (!m)
		rc = -ENOENT;
	else if (m->rec.epoch != epoch) {
		if (moved_to)
			*moved_to = m->rec.owner;
		rc = -ESTALE;
	} else if (!(rc = push(m, e))) {
		rmsg_ref(e->msg);
		m->rec.c.out = e->seq;
	}
	pthread_mutex_unlock(&s->lock);
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
	struct stripe *s = lock_find(t, id, NULL, &m);
	int rc = 0;
	if (!m)
		rc = -ENOENT;
	else if (m->rec.epoch != epoch)
		rc = -ESTALE;
	else if (sm_check_h(&m->rec.c, h))
		rc = -ERANGE;
	else
		release(m, h);
	pthread_mutex_unlock(&s->lock);
	return rc;
}

int sm_table_update(struct sm_table *t, const char *id, uint32_t epoch, const struct sm_record *rec)
{
	struct msess *m;
	struct stripe *s = lock_find(t, id, NULL, &m);
	int rc = 0;
	if (!m)
		rc = -ENOENT;
	else if (m->rec.epoch != epoch)
		rc = -ESTALE;
	else {
		/* Counters out/acked are the queue's; the rest is the owner's. */
		m->rec.c.h_in = rec->c.h_in;
		m->rec.max = rec->max;
		m->rec.attached = rec->attached;
		m->rec.expires_ms = rec->expires_ms;
		m->rec.available = rec->available;
		m->rec.priority = rec->priority;
	}
	pthread_mutex_unlock(&s->lock);
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
	int ok = ht_verify_sealed(proof->key, usable ? m->rec.isr_sealed : NULL, proof->cb,
				  proof->cb_len, proof->hash, proof->resp) && usable;
	if (m) {
		m->rec.has_isr = 0;
		sodium_memzero(m->rec.isr_sealed, TOKEN_SEALED_LEN);
		*seen = m->rec;
	}
	return ok;
}

int sm_table_take(struct sm_table *t, const char *id, const char *bare, const struct sm_owner *to,
		  uint64_t now_ms, struct sm_isr_proof *proof, store_sm_take_fn *fn, void *ud)
{
	struct msess *m;
	struct sm_record seen;
	struct stripe *s = lock_find(t, id, NULL, &m);
	if (m && strcmp(m->bare, bare))
		m = NULL; /* another account's: as if unknown, and untouched */
	if (proof && !check_isr(m, proof, &seen)) {
		pthread_mutex_unlock(&s->lock);
		fn(ud, -EACCES, m ? &seen : NULL, NULL, NULL, 0);
		return -EACCES;
	}
	/* Unknown, another account's, or expired: the same answer (sm.md §5). */
	if (!m || !m->rec.max || (!m->rec.attached && now_ms > m->rec.expires_ms)) {
		pthread_mutex_unlock(&s->lock);
		fn(ud, -ENOENT, NULL, NULL, NULL, 0);
		return -ENOENT;
	}
	struct sm_record before = m->rec;
	m->rec.owner = *to;
	m->rec.epoch++;
	m->rec.attached = 1;
	/* Hand out the queue in order; the callback runs under the lock so
	 * nothing can be appended between the snapshot and the takeover. */
	struct sm_entry *flat = NULL;
	if (m->len) {
		flat = malloc(m->len * sizeof(*flat));
		for (size_t i = 0; flat && i < m->len; i++)
			flat[i] = m->q[(m->head + i) & (m->cap - 1)];
	}
	int rc = (m->len && !flat) ? -ENOMEM : 0;
	if (rc) {
		m->rec = before; /* an ISR token stays consumed */
		pthread_mutex_unlock(&s->lock);
		fn(ud, rc, NULL, NULL, NULL, 0);
		return rc;
	}
	before.epoch = m->rec.epoch; /* the caller writes with the new epoch */
	fn(ud, 0, &before, m->resource, flat, m->len);
	pthread_mutex_unlock(&s->lock);
	free(flat);
	return 0;
}

int sm_table_destroy(struct sm_table *t, const char *id, uint32_t epoch,
		     store_sm_drain_fn *fn, void *ud)
{
	struct msess **pp, *m;
	struct stripe *s = lock_find(t, id, &pp, &m);
	if (!m || (epoch && m->rec.epoch != epoch)) {
		int rc = m ? -ESTALE : -ENOENT;
		pthread_mutex_unlock(&s->lock);
		if (fn)
			fn(ud, rc, NULL, NULL, NULL, NULL, 0);
		return rc;
	}
	*pp = m->next;
	s->count--;
	pthread_mutex_unlock(&s->lock);
	/* Flatten the queue; the callee now owns the references. */
	struct sm_entry *flat = m->len ? malloc(m->len * sizeof(*flat)) : NULL;
	size_t n = flat ? m->len : 0;
	for (size_t i = 0; i < n; i++)
		flat[i] = m->q[(m->head + i) & (m->cap - 1)];
	if (flat)
		m->len = 0; /* references moved */
	if (fn)
		fn(ud, 0, &m->rec, m->bare, m->resource, flat, n);
	else
		for (size_t i = 0; i < n; i++)
			rmsg_unref(flat[i].msg);
	free(flat);
	sess_free(m);
	return 0;
}

int sm_table_set_isr(struct sm_table *t, const char *id, uint32_t epoch, int set, uint8_t mech,
		     const uint8_t sealed[TOKEN_SEALED_LEN])
{
	struct msess *m;
	struct stripe *s = lock_find(t, id, NULL, &m);
	int rc = 0;
	if (!m)
		rc = -ENOENT;
	else if (m->rec.epoch != epoch)
		rc = -ESTALE;
	else if (set) {
		m->rec.has_isr = 1;
		m->rec.isr_mech = mech;
		memcpy(m->rec.isr_sealed, sealed, TOKEN_SEALED_LEN);
	} else {
		m->rec.has_isr = 0;
		sodium_memzero(m->rec.isr_sealed, TOKEN_SEALED_LEN);
	}
	pthread_mutex_unlock(&s->lock);
	return rc;
}

int sm_table_peek(struct sm_table *t, const char *id, const char *bare, struct sm_record *out)
{
	struct msess *m;
	struct stripe *s = lock_find(t, id, NULL, &m);
	int rc = -ENOENT;
	if (m && !strcmp(m->bare, bare)) {
		*out = m->rec;
		rc = 0;
	}
	pthread_mutex_unlock(&s->lock);
	return rc;
}

void sm_table_revoke_isr(struct sm_table *t, const char *bare)
{
	for (int i = 0; i < STRIPES; i++) {
		struct stripe *s = &t->s[i];
		pthread_mutex_lock(&s->lock);
		for (size_t b = 0; b < s->nbuckets; b++)
			for (struct msess *m = s->buckets[b]; m; m = m->next)
				if (m->rec.has_isr && !strcmp(m->bare, bare)) {
					m->rec.has_isr = 0;
					sodium_memzero(m->rec.isr_sealed, TOKEN_SEALED_LEN);
				}
		pthread_mutex_unlock(&s->lock);
	}
}

size_t sm_table_queued(struct sm_table *t, const char *id)
{
	struct msess *m;
	struct stripe *s = lock_find(t, id, NULL, &m);
	size_t n = m ? m->len : 0;
	pthread_mutex_unlock(&s->lock);
	return n;
}
