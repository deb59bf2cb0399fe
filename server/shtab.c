/* server/shtab.c - a striped hash table: string keys to intrusive nodes, shared by threads.
 *
 * SHTAB_STRIPES independent chained tables, each behind its own rwlock: two
 * keys rarely share a stripe, so threads rarely wait on each other, and a
 * stripe grows alone (no stop-the-world rehash). The low bits of the hash
 * pick the stripe, the bits from 8 up the bucket, so the two are unrelated.
 * The table owns no node: callers embed a shtab_node, allocate and free. */
#include "tether/shtab.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#define SHTAB_STRIPES 64

struct shtab_stripe {
	pthread_rwlock_t lock;
	struct shtab_node **buckets;
	size_t nbuckets;             /* power of two */
	size_t count;
	shtab_match_fn *match;
};

struct shtab {
	uint8_t key[crypto_shorthash_KEYBYTES]; /* SipHash key */
	struct shtab_stripe s[SHTAB_STRIPES];
};

static size_t bucket_of(const struct shtab_stripe *s, uint64_t hash)
{
	return (size_t)(hash >> 8) & (s->nbuckets - 1);
}

struct shtab *shtab_new(shtab_match_fn *match, size_t buckets)
{
	struct shtab *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	randombytes_buf(t->key, sizeof(t->key));
	for (int i = 0; i < SHTAB_STRIPES; i++) {
		struct shtab_stripe *s = &t->s[i];
		pthread_rwlock_init(&s->lock, NULL);
		s->match = match;
		s->nbuckets = buckets;
		s->buckets = calloc(buckets, sizeof(*s->buckets));
		if (!s->buckets) {
			shtab_free(t, NULL);
			return NULL;
		}
	}
	return t;
}

void shtab_node_free(struct shtab_node *n, void *ud)
{
	(void)ud;
	free(n);
}

void shtab_free(struct shtab *t, shtab_node_fn *node_free)
{
	if (!t)
		return;
	for (int i = 0; i < SHTAB_STRIPES; i++) {
		struct shtab_stripe *s = &t->s[i];
		for (size_t b = 0; node_free && s->buckets && b < s->nbuckets; b++)
			for (struct shtab_node *n = s->buckets[b], *next; n; n = next) {
				next = n->next;
				node_free(n, NULL);
			}
		free(s->buckets);
		pthread_rwlock_destroy(&s->lock);
	}
	free(t);
}

uint64_t shtab_hash(const struct shtab *t, const char *key)
{
	uint64_t h;
	crypto_shorthash((unsigned char *)&h, (const unsigned char *)key, strlen(key), t->key);
	return h;
}

struct shtab_stripe *shtab_lock(struct shtab *t, uint64_t hash, enum shtab_mode mode)
{
	struct shtab_stripe *s = &t->s[hash % SHTAB_STRIPES];
	if (mode == SHTAB_WRITE)
		pthread_rwlock_wrlock(&s->lock);
	else
		pthread_rwlock_rdlock(&s->lock);
	return s;
}

void shtab_unlock(struct shtab_stripe *s)
{
	pthread_rwlock_unlock(&s->lock);
}

struct shtab_node *shtab_find(struct shtab_stripe *s, uint64_t hash, const char *key)
{
	for (struct shtab_node *n = s->buckets[bucket_of(s, hash)]; n; n = n->next)
		if (n->hash == hash && s->match(n, key))
			return n;
	return NULL;
}

static void grow(struct shtab_stripe *s)
{
	size_t n = s->nbuckets * 2;
	struct shtab_node **nb = calloc(n, sizeof(*nb));
	if (!nb)
		return; /* keep the longer chains; still correct */
	for (size_t b = 0; b < s->nbuckets; b++)
		for (struct shtab_node *e = s->buckets[b], *next; e; e = next) {
			next = e->next;
			struct shtab_node **head = &nb[(size_t)(e->hash >> 8) & (n - 1)];
			e->next = *head;
			*head = e;
		}
	free(s->buckets);
	s->buckets = nb;
	s->nbuckets = n;
}

void shtab_insert(struct shtab_stripe *s, struct shtab_node *n)
{
	if (s->count >= s->nbuckets)
		grow(s);
	struct shtab_node **head = &s->buckets[bucket_of(s, n->hash)];
	n->next = *head;
	*head = n;
	s->count++;
}

void shtab_remove(struct shtab_stripe *s, struct shtab_node *n)
{
	struct shtab_node **pp = &s->buckets[bucket_of(s, n->hash)];
	while (*pp && *pp != n)
		pp = &(*pp)->next;
	if (!*pp)
		return; /* not in this stripe: a caller bug, but not memory corruption */
	*pp = n->next;
	n->next = NULL;
	s->count--;
}

void shtab_each(struct shtab *t, shtab_node_fn *fn, void *ud)
{
	for (int i = 0; i < SHTAB_STRIPES; i++) {
		struct shtab_stripe *s = &t->s[i];
		pthread_rwlock_wrlock(&s->lock);
		for (size_t b = 0; b < s->nbuckets; b++)
			for (struct shtab_node *n = s->buckets[b]; n; n = n->next)
				fn(n, ud);
		pthread_rwlock_unlock(&s->lock);
	}
}
