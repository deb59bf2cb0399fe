/* server/router.c - the node-local session directory and routing decisions.
 *
 * bare JID -> bound resources, in ROUTER_STRIPES independent hash tables,
 * each behind its own rwlock: routing reads, binds and presence write, and
 * two accounts rarely share a stripe. Entries are copied out under the
 * lock, so callers never hold pointers into the directory. */
#include "tether/router.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#define ROUTER_STRIPES 64

struct res_entry {
	uint16_t worker;
	uint32_t slot, gen;
	int priority;
	int available;
	int congested;
	char *resource;
};

struct account {
	struct account *next;
	uint64_t hash;
	struct res_entry *res;
	unsigned nres, cap;
	char bare[];
};

struct stripe {
	pthread_rwlock_t lock;
	struct account **buckets;
	size_t nbuckets;  /* power of two */
	size_t count;
};

struct router {
	uint8_t hash_key[crypto_shorthash_KEYBYTES]; /* SipHash key: no flooding one chain */
	struct stripe stripes[ROUTER_STRIPES];
};

struct router *router_new(void)
{
	struct router *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	randombytes_buf(r->hash_key, sizeof(r->hash_key));
	for (int i = 0; i < ROUTER_STRIPES; i++) {
		pthread_rwlock_init(&r->stripes[i].lock, NULL);
		r->stripes[i].nbuckets = 64;
		r->stripes[i].buckets = calloc(64, sizeof(struct account *));
		if (!r->stripes[i].buckets) {
			router_free(r);
			return NULL;
		}
	}
	return r;
}

static void account_free(struct account *a)
{
	for (unsigned i = 0; i < a->nres; i++)
		free(a->res[i].resource);
	free(a->res);
	free(a);
}

void router_free(struct router *r)
{
	if (!r)
		return;
	for (int i = 0; i < ROUTER_STRIPES; i++) {
		struct stripe *s = &r->stripes[i];
		for (size_t b = 0; s->buckets && b < s->nbuckets; b++) {
			for (struct account *a = s->buckets[b], *n; a; a = n) {
				n = a->next;
				account_free(a);
			}
		}
		free(s->buckets);
		pthread_rwlock_destroy(&s->lock);
	}
	free(r);
}

static uint64_t hash_bare(const struct router *r, const char *bare)
{
	uint64_t h;
	crypto_shorthash((unsigned char *)&h, (const unsigned char *)bare, strlen(bare), r->hash_key);
	return h;
}

static struct stripe *stripe_of(struct router *r, uint64_t h)
{
	return &r->stripes[h % ROUTER_STRIPES];
}

static struct account *find(struct stripe *s, uint64_t h, const char *bare)
{
	for (struct account *a = s->buckets[(h >> 8) & (s->nbuckets - 1)]; a; a = a->next)
		if (a->hash == h && !strcmp(a->bare, bare))
			return a;
	return NULL;
}

static void grow(struct stripe *s)
{
	size_t n = s->nbuckets * 2;
	struct account **nb = calloc(n, sizeof(*nb));
	if (!nb)
		return; /* keep the longer chains; still correct */
	for (size_t b = 0; b < s->nbuckets; b++) {
		for (struct account *a = s->buckets[b], *next; a; a = next) {
			next = a->next;
			struct account **head = &nb[(a->hash >> 8) & (n - 1)];
			a->next = *head;
			*head = a;
		}
	}
	free(s->buckets);
	s->buckets = nb;
	s->nbuckets = n;
}

static struct account *find_or_add(struct stripe *s, uint64_t h, const char *bare)
{
	struct account *a = find(s, h, bare);
	if (a)
		return a;
	size_t len = strlen(bare);
	a = calloc(1, sizeof(*a) + len + 1);
	if (!a)
		return NULL;
	memcpy(a->bare, bare, len + 1);
	a->hash = h;
	if (s->count >= s->nbuckets)
		grow(s);
	struct account **head = &s->buckets[(h >> 8) & (s->nbuckets - 1)];
	a->next = *head;
	*head = a;
	s->count++;
	return a;
}

static void remove_account(struct stripe *s, struct account *a)
{
	struct account **pp = &s->buckets[(a->hash >> 8) & (s->nbuckets - 1)];
	while (*pp != a)
		pp = &(*pp)->next;
	*pp = a->next;
	s->count--;
	account_free(a);
}

static struct res_entry *find_res(struct account *a, const char *resource)
{
	for (unsigned i = 0; i < a->nres; i++)
		if (!strcmp(a->res[i].resource, resource))
			return &a->res[i];
	return NULL;
}

static void copy_out(const struct res_entry *e, struct route_target *t)
{
	t->worker = e->worker;
	t->slot = e->slot;
	t->gen = e->gen;
	t->priority = e->priority;
	t->available = e->available;
	t->congested = e->congested;
	snprintf(t->resource, sizeof(t->resource), "%s", e->resource);
}

int router_bind(struct router *r, const char *bare, const struct route_target *t,
		struct route_target *old)
{
	uint64_t h = hash_bare(r, bare);
	struct stripe *s = stripe_of(r, h);
	int rc = 0;
	pthread_rwlock_wrlock(&s->lock);
	struct account *a = find_or_add(s, h, bare);
	if (!a) {
		rc = -ENOMEM;
		goto out;
	}
	struct res_entry *e = find_res(a, t->resource);
	if (e) {
		copy_out(e, old);
		rc = 1;
	} else {
		if (a->nres >= ROUTER_MAX_RESOURCES) {
			rc = -EMLINK;
			goto out;
		}
		if (a->nres == a->cap) {
			unsigned cap = a->cap ? a->cap * 2 : 2;
			struct res_entry *n = realloc(a->res, cap * sizeof(*n));
			char *res = strdup(t->resource);
			if (!n || !res) {
				if (n)
					a->res = n;
				free(res);
				rc = -ENOMEM;
				goto out;
			}
			a->res = n;
			a->cap = cap;
			a->res[a->nres].resource = res;
		} else {
			a->res[a->nres].resource = strdup(t->resource);
			if (!a->res[a->nres].resource) {
				rc = -ENOMEM;
				goto out;
			}
		}
		e = &a->res[a->nres++];
	}
	e->worker = t->worker;
	e->slot = t->slot;
	e->gen = t->gen;
	e->priority = 0;
	e->available = 0;
	e->congested = 0;
out:
	if (a && !a->nres)
		remove_account(s, a);
	pthread_rwlock_unlock(&s->lock);
	return rc;
}

void router_unbind(struct router *r, const char *bare, const char *resource,
		   uint16_t worker, uint32_t slot, uint32_t gen)
{
	uint64_t h = hash_bare(r, bare);
	struct stripe *s = stripe_of(r, h);
	pthread_rwlock_wrlock(&s->lock);
	struct account *a = find(s, h, bare);
	struct res_entry *e = a ? find_res(a, resource) : NULL;
	if (e && e->worker == worker && e->slot == slot && e->gen == gen) {
		free(e->resource);
		*e = a->res[--a->nres];
		if (!a->nres)
			remove_account(s, a);
	}
	pthread_rwlock_unlock(&s->lock);
}

void router_set_presence(struct router *r, const char *bare, const char *resource,
			 int available, int priority)
{
	uint64_t h = hash_bare(r, bare);
	struct stripe *s = stripe_of(r, h);
	pthread_rwlock_wrlock(&s->lock);
	struct account *a = find(s, h, bare);
	struct res_entry *e = a ? find_res(a, resource) : NULL;
	if (e) {
		e->available = available;
		e->priority = priority;
	}
	pthread_rwlock_unlock(&s->lock);
}

void router_set_congested(struct router *r, const char *bare, const char *resource,
			  uint16_t worker, uint32_t slot, uint32_t gen, int on)
{
	uint64_t h = hash_bare(r, bare);
	struct stripe *s = stripe_of(r, h);
	pthread_rwlock_wrlock(&s->lock);
	struct account *a = find(s, h, bare);
	struct res_entry *e = a ? find_res(a, resource) : NULL;
	if (e && e->worker == worker && e->slot == slot && e->gen == gen)
		e->congested = on;
	pthread_rwlock_unlock(&s->lock);
}

int router_get_full(struct router *r, const char *bare, const char *resource,
		    struct route_target *out)
{
	uint64_t h = hash_bare(r, bare);
	struct stripe *s = stripe_of(r, h);
	int rc = -ENOENT;
	pthread_rwlock_rdlock(&s->lock);
	struct account *a = find(s, h, bare);
	struct res_entry *e = a ? find_res(a, resource) : NULL;
	if (e) {
		copy_out(e, out);
		rc = 0;
	}
	pthread_rwlock_unlock(&s->lock);
	return rc;
}

size_t router_get_all(struct router *r, const char *bare, struct route_target *out, size_t max)
{
	uint64_t h = hash_bare(r, bare);
	struct stripe *s = stripe_of(r, h);
	size_t n = 0;
	pthread_rwlock_rdlock(&s->lock);
	struct account *a = find(s, h, bare);
	for (unsigned i = 0; a && i < a->nres && n < max; i++)
		copy_out(&a->res[i], &out[n++]);
	pthread_rwlock_unlock(&s->lock);
	return n;
}

size_t router_pick_for_message(const struct route_target *t, size_t n, size_t *pick,
			       int all_non_negative)
{
	int best = -1;
	size_t count = 0;
	for (size_t i = 0; i < n; i++)
		if (t[i].available && t[i].priority >= 0 && t[i].priority > best)
			best = t[i].priority;
	if (best < 0)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (t[i].available && (all_non_negative ? t[i].priority >= 0 : t[i].priority == best))
			pick[count++] = i;
	return count;
}

void router_random_resource(char out[17])
{
	unsigned char raw[12];
	randombytes_buf(raw, sizeof(raw));
	sodium_bin2base64(out, 17, raw, sizeof(raw), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}
