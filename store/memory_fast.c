/* store/memory_fast.c - the memory backend's FAST token slots by (account, user-agent id).
 *
 * Every change is a compare-and-set on the entry's version (store_sm.h,
 * struct fast_slots): a login reads the slots, decides (promote the token
 * it used, issue a new one) and writes back only if nobody wrote in
 * between. Versions come from one counter per table, so an entry that was
 * revoked and created again never matches a version read before.
 *
 * An account's entries are bounded: every write sweeps the account's
 * entries whose tokens have all expired, and a write that makes a new
 * entry evicts the least recently written ones beyond in->max_entries. A
 * user-agent id is whatever the client says, so without the cap one
 * account could make entries without end (and every login of the account
 * walks them: the chain is per account). */
#include "memory_sm.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

struct fentry {
	struct fentry *next;
	uint64_t hash;        /* of the bare JID: revocation finds an account's entries */
	struct fast_slots slots; /* slots.version: this entry's version */
	size_t bare_len;
	char key[];           /* bare NUL ua_id NUL */
};

/* Entries hashed by bare JID (one per device per account), behind one
 * mutex: logins are rare next to stanzas, but a list scan per login grew
 * with every token issued (it was 30% of a FAST resume profile). */
#define FAST_BUCKETS 4096u

struct fast_table {
	pthread_mutex_t lock;
	uint64_t clock;       /* the last version given out */
	uint8_t key[crypto_shorthash_KEYBYTES];
	struct fentry *b[FAST_BUCKETS];
};

struct fast_table *fast_table_new(void)
{
	struct fast_table *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	pthread_mutex_init(&t->lock, NULL);
	randombytes_buf(t->key, sizeof(t->key));
	return t;
}

static uint64_t bare_hash(const struct fast_table *t, const char *bare)
{
	uint64_t h;
	crypto_shorthash((unsigned char *)&h, (const unsigned char *)bare, strlen(bare), t->key);
	return h;
}

static void fentry_free(struct fentry *e)
{
	sodium_memzero(&e->slots, sizeof(e->slots));
	free(e);
}

void fast_table_free(struct fast_table *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < FAST_BUCKETS; i++)
		for (struct fentry *e = t->b[i], *n; e; e = n) {
			n = e->next;
			fentry_free(e);
		}
	pthread_mutex_destroy(&t->lock);
	free(t);
}

static struct fentry **find(struct fast_table *t, uint64_t h, const char *bare, const char *ua_id)
{
	struct fentry **pp = &t->b[h % FAST_BUCKETS];
	for (; *pp; pp = &(*pp)->next)
		if ((*pp)->hash == h && !strcmp((*pp)->key, bare) &&
		    !strcmp((*pp)->key + (*pp)->bare_len + 1, ua_id))
			break;
	return pp;
}

int fast_table_get(struct fast_table *t, const char *bare, const char *ua_id, struct fast_slots *out)
{
	uint64_t h = bare_hash(t, bare);
	pthread_mutex_lock(&t->lock);
	struct fentry *e = *find(t, h, bare, ua_id);
	if (e)
		*out = e->slots;
	else
		memset(out, 0, sizeof(*out)); /* version 0: "no entry", for a CAS that creates it */
	pthread_mutex_unlock(&t->lock);
	return e ? 0 : -ENOENT;
}

static uint64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Whether a token of <sl> can still be used at <now> (Unix ms). */
static int slots_live(const struct fast_slots *sl, uint64_t now)
{
	return (sl->fresh.valid && sl->fresh.expiry_ms > now) ||
	       (sl->current.valid && sl->current.expiry_ms > now);
}

/* Frees the entries of <bare> (hash <h>) with nothing live left, then,
 * while the account has more than <max> entries (0: no cap; <keep>, the
 * entry just written, counts and is never chosen), the one written least
 * recently: versions come from one clock, so the lowest is the oldest.
 * Called with the lock held. Returns how many were evicted by the cap. */
static uint32_t trim_account(struct fast_table *t, uint64_t h, const char *bare,
			     const struct fentry *keep, uint32_t max)
{
	uint64_t now = wall_ms();
	uint32_t evicted = 0;
	for (;;) {
		struct fentry **oldest = NULL, *e;
		size_t n = keep != NULL;
		for (struct fentry **pp = &t->b[h % FAST_BUCKETS]; (e = *pp);) {
			if (e == keep || e->hash != h || strcmp(e->key, bare)) {
				pp = &e->next;
			} else if (!slots_live(&e->slots, now)) {
				*pp = e->next;   /* swept: <pp> now points at the next one */
				fentry_free(e);
			} else {
				n++;
				if (!oldest || e->slots.version < (*oldest)->slots.version)
					oldest = pp;
				pp = &e->next;
			}
		}
		if (!max || n <= max || !oldest)
			return evicted;
		e = *oldest;
		*oldest = e->next;
		fentry_free(e);
		evicted++;
	}
}

/* Writes <in>'s slots if the entry's version is still in->version (0: there
 * must be no entry); slots with nothing valid delete the entry. On success
 * in->version is the new version (0 after a delete). A successful write
 * sweeps the account's expired entries and, when it made a new entry,
 * applies in->max_entries (in->evicted: how many went). Returns 0, -ESTALE
 * if the entry changed since it was read, or -ENOMEM. */
int fast_table_cas(struct fast_table *t, const char *bare, const char *ua_id, struct fast_slots *in)
{
	int rc = 0;
	uint64_t h = bare_hash(t, bare);
	pthread_mutex_lock(&t->lock);
	struct fentry **pp = find(t, h, bare, ua_id), *e = *pp;
	int created = 0;
	in->evicted = 0;
	if ((e ? e->slots.version : 0) != in->version) {
		rc = -ESTALE;
	} else if (!in->fresh.valid && !in->current.valid) {
		if (e) {
			*pp = e->next;
			fentry_free(e);
			e = NULL;
		}
		in->version = 0;
	} else if (e) {
		e->slots = *in;
		e->slots.version = in->version = ++t->clock;
	} else {
		size_t bl = strlen(bare), ul = strlen(ua_id);
		e = calloc(1, sizeof(*e) + bl + ul + 2);
		if (!e) {
			rc = -ENOMEM;
		} else {
			memcpy(e->key, bare, bl + 1);
			memcpy(e->key + bl + 1, ua_id, ul + 1);
			e->bare_len = bl;
			e->hash = h;
			e->slots = *in;
			e->slots.version = in->version = ++t->clock;
			e->next = t->b[h % FAST_BUCKETS];
			t->b[h % FAST_BUCKETS] = e;
			created = 1;
		}
	}
	if (rc == 0)
		in->evicted = trim_account(t, h, bare, e, created ? in->max_entries : 0);
	pthread_mutex_unlock(&t->lock);
	return rc;
}

void fast_table_revoke(struct fast_table *t, const char *bare)
{
	uint64_t h = bare_hash(t, bare);
	pthread_mutex_lock(&t->lock);
	for (struct fentry **pp = &t->b[h % FAST_BUCKETS]; *pp;) {
		struct fentry *e = *pp;
		if (e->hash == h && !strcmp(e->key, bare)) {
			*pp = e->next;
			fentry_free(e);
		} else {
			pp = &e->next;
		}
	}
	pthread_mutex_unlock(&t->lock);
}
