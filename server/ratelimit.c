/* server/ratelimit.c - token buckets keyed by string, shared by threads; log lines rate-limited.
 *
 * Tokens are counted in thousandths (integer arithmetic, no drift): a
 * bucket gains <rate> thousandths per millisecond, up to burst * 1000.
 * The table is bounded: a sweep (at most every SWEEP_EVERY_MS, or when the
 * table is full, at most once a second) drops buckets that are full again,
 * since a full bucket and no bucket mean the same. Only the sweep frees
 * buckets, and only one thread sweeps at a time. */
#include "tether/ratelimit.h"

#include <stdlib.h>
#include <string.h>

#include "tether/shtab.h"

#define SWEEP_EVERY_MS 10000
#define SWEEP_FULL_MS 1000   /* when full, sweep at most this often */
#define SWEEP_BATCH 4096     /* keys dropped per pass over the table */

struct bucket {
	struct shtab_node n;         /* first: the table links through it */
	uint64_t tokens_m;           /* thousandths of a token */
	uint64_t last_ms;            /* when tokens_m was brought up to date */
	char key[];
};

struct ratelimit {
	struct shtab *t;
	uint64_t cap_m;              /* burst * 1000 */
	uint64_t rate;               /* thousandths per ms = tokens per second */
	size_t max_keys;
	atomic_size_t count;
	_Atomic uint64_t last_sweep_ms;
	atomic_flag sweeping;
};

static int match(const struct shtab_node *n, const char *key)
{
	return !strcmp(((const struct bucket *)n)->key, key);
}

struct ratelimit *ratelimit_new(unsigned burst, unsigned rate, size_t max_keys)
{
	struct ratelimit *rl = calloc(1, sizeof(*rl));
	if (!rl)
		return NULL;
	rl->t = shtab_new(match, 64);
	if (!rl->t) {
		free(rl);
		return NULL;
	}
	rl->cap_m = (uint64_t)(burst ? burst : 1) * 1000;
	rl->rate = rate ? rate : 1;
	rl->max_keys = max_keys;
	atomic_flag_clear(&rl->sweeping);
	return rl;
}

void ratelimit_free(struct ratelimit *rl)
{
	if (!rl)
		return;
	shtab_free(rl->t, shtab_node_free);
	free(rl);
}

/* Brings <b>'s tokens up to <now_ms>. A clock that went back adds nothing. */
static void refill(const struct ratelimit *rl, struct bucket *b, uint64_t now_ms)
{
	if (now_ms <= b->last_ms)
		return;
	uint64_t dt = now_ms - b->last_ms;
	b->last_ms = now_ms;
	if (dt >= rl->cap_m / rl->rate + 1) { /* long enough to fill it whatever it held */
		b->tokens_m = rl->cap_m;
		return;
	}
	b->tokens_m += dt * rl->rate;
	if (b->tokens_m > rl->cap_m)
		b->tokens_m = rl->cap_m;
}

static void cut_key(const char *key, char out[RATELIMIT_KEY_MAX])
{
	size_t n = strnlen(key, RATELIMIT_KEY_MAX - 1);
	memcpy(out, key, n);
	out[n] = 0;
}

enum peek_what {
	PEEK_ALLOW = 0,  /* a token left (a bucket never seen is full) */
	PEEK_KNOWN,      /* the bucket has been drawn on and is not full again */
};

/* Looks at <key>'s bucket brought up to <now_ms>, under its stripe's lock. */
static int peek(struct ratelimit *rl, const char *key, uint64_t now_ms, enum peek_what what)
{
	char k[RATELIMIT_KEY_MAX];
	cut_key(key, k);
	uint64_t h = shtab_hash(rl->t, k);
	struct shtab_stripe *s = shtab_lock(rl->t, h, SHTAB_WRITE);
	struct bucket *b = (struct bucket *)shtab_find(s, h, k);
	int r = what == PEEK_ALLOW;
	if (b) {
		refill(rl, b, now_ms);
		r = what == PEEK_ALLOW ? b->tokens_m >= 1000 : b->tokens_m < rl->cap_m;
	}
	shtab_unlock(s);
	return r;
}

int ratelimit_allow(struct ratelimit *rl, const char *key, uint64_t now_ms)
{
	return peek(rl, key, now_ms, PEEK_ALLOW);
}

int ratelimit_known(struct ratelimit *rl, const char *key, uint64_t now_ms)
{
	return peek(rl, key, now_ms, PEEK_KNOWN);
}

void ratelimit_hit(struct ratelimit *rl, const char *key, uint64_t now_ms)
{
	char k[RATELIMIT_KEY_MAX];
	cut_key(key, k);
	uint64_t last = atomic_load(&rl->last_sweep_ms);
	if (now_ms >= last + SWEEP_EVERY_MS ||
	    (atomic_load(&rl->count) >= rl->max_keys && now_ms >= last + SWEEP_FULL_MS))
		ratelimit_sweep(rl, now_ms);
	uint64_t h = shtab_hash(rl->t, k);
	struct shtab_stripe *s = shtab_lock(rl->t, h, SHTAB_WRITE);
	struct bucket *b = (struct bucket *)shtab_find(s, h, k);
	if (!b && atomic_load(&rl->count) < rl->max_keys) {
		size_t len = strlen(k) + 1;
		b = malloc(sizeof(*b) + len);
		if (b) { /* without memory: not tracked (fails open, see the header) */
			memcpy(b->key, k, len);
			b->n.hash = h;
			b->tokens_m = rl->cap_m;
			b->last_ms = now_ms;
			shtab_insert(s, &b->n);
			atomic_fetch_add(&rl->count, 1);
		}
	}
	if (b) {
		refill(rl, b, now_ms);
		b->tokens_m = b->tokens_m >= 1000 ? b->tokens_m - 1000 : 0;
	}
	shtab_unlock(s);
}

struct sweep_ctx {
	const struct ratelimit *rl;
	uint64_t now_ms;
	char (*keys)[RATELIMIT_KEY_MAX];
	size_t n;
};

/* Under the stripe lock: note refilled buckets (removing here is not allowed). */
static void note_full(struct shtab_node *n, void *ud)
{
	struct sweep_ctx *sc = ud;
	struct bucket *b = (struct bucket *)n;
	refill(sc->rl, b, sc->now_ms);
	if (b->tokens_m >= sc->rl->cap_m && sc->n < SWEEP_BATCH)
		memcpy(sc->keys[sc->n++], b->key, strlen(b->key) + 1); /* < RATELIMIT_KEY_MAX: cut_key() */
}

size_t ratelimit_sweep(struct ratelimit *rl, uint64_t now_ms)
{
	if (atomic_flag_test_and_set(&rl->sweeping))
		return 0; /* another thread is at it */
	atomic_store(&rl->last_sweep_ms, now_ms);
	struct sweep_ctx sc = { rl, now_ms, malloc((size_t)SWEEP_BATCH * RATELIMIT_KEY_MAX), 0 };
	size_t dropped = 0;
	if (sc.keys) {
		shtab_each(rl->t, note_full, &sc);
		for (size_t i = 0; i < sc.n; i++) {
			uint64_t h = shtab_hash(rl->t, sc.keys[i]);
			struct shtab_stripe *s = shtab_lock(rl->t, h, SHTAB_WRITE);
			struct bucket *b = (struct bucket *)shtab_find(s, h, sc.keys[i]);
			if (b) {
				refill(rl, b, now_ms);
				if (b->tokens_m >= rl->cap_m) { /* not hit since it was noted */
					shtab_remove(s, &b->n);
					free(b);
					atomic_fetch_sub(&rl->count, 1);
					dropped++;
				}
			}
			shtab_unlock(s);
		}
		free(sc.keys);
	}
	atomic_flag_clear(&rl->sweeping);
	return dropped;
}

size_t ratelimit_count(const struct ratelimit *rl)
{
	return atomic_load(&rl->count);
}

int ratelimit_log_due(struct ratelimit_log *l, uint64_t now_ms, uint64_t *suppressed)
{
	uint64_t last = atomic_load(&l->last_ms);
	if ((last && now_ms < last + 1000) ||
	    !atomic_compare_exchange_strong(&l->last_ms, &last, now_ms ? now_ms : 1)) {
		atomic_fetch_add(&l->suppressed, 1);
		return 0;
	}
	*suppressed = atomic_exchange(&l->suppressed, 0);
	return 1;
}
