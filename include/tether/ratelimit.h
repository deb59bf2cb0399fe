/* include/tether/ratelimit.h - token buckets keyed by string, shared by threads; log lines rate-limited.
 *
 * A bucket holds up to <burst> tokens and gains <rate> tokens a second. An
 * event that is limited (an authentication failure) takes one token; the
 * next attempt is allowed while at least one token is left. A key with no
 * bucket is full: the table only holds keys that had events recently, and
 * a bucket that has refilled completely is dropped by the next sweep.
 * With burst 20 and rate 5: after 20 failures in a row an address gets
 * about 5 attempts a second, each of which may fail and take a token.
 *
 * Time comes from the caller (<now_ms>, any monotonic milliseconds), so
 * the arithmetic is testable. Buckets sit in a shtab (striped locks); a
 * bucket is read and changed under its stripe's write lock.
 */
#ifndef TETHER_RATELIMIT_H
#define TETHER_RATELIMIT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct ratelimit;

#define RATELIMIT_KEY_MAX 128 /* longer keys are cut: callers keep theirs short */

/* A table of buckets of <burst> tokens refilling at <rate> a second (both
 * >= 1), holding at most <max_keys> keys: when full, a sweep drops
 * refilled buckets, and a new key that still finds no room is not
 * tracked (fails open: the limit protects the server, never locks out by
 * itself). Returns NULL on OOM. */
struct ratelimit *ratelimit_new(unsigned burst, unsigned rate, size_t max_keys);

/* Frees <rl> and every bucket; NULL is fine. */
void ratelimit_free(struct ratelimit *rl);

/* 1 if <key> has at least one token at <now_ms> (or no bucket), else 0.
 * Takes nothing. */
int ratelimit_allow(struct ratelimit *rl, const char *key, uint64_t now_ms);

/* 1 if <key> has a bucket at all (it had an event and has not refilled
 * yet), else 0. */
int ratelimit_known(struct ratelimit *rl, const char *key, uint64_t now_ms);

/* Takes one token from <key>'s bucket (created full if absent; the count
 * does not go below zero). */
void ratelimit_hit(struct ratelimit *rl, const char *key, uint64_t now_ms);

/* Drops every bucket that has refilled by <now_ms>. Returns how many.
 * Called by ratelimit_hit() on its own at most every 10 s and when the
 * table is full. */
size_t ratelimit_sweep(struct ratelimit *rl, uint64_t now_ms);

/* Keys held now. */
size_t ratelimit_count(const struct ratelimit *rl);

/* One log line a second at most for one kind of event, with the number of
 * lines it stands for. Zero-initialised is ready. */
struct ratelimit_log {
	_Atomic uint64_t last_ms;     /* when a line was last let through */
	_Atomic uint64_t suppressed;  /* events since then that were not logged */
};

/* 1 if the caller may log its event now (then *<suppressed> = events not
 * logged since the previous line), else 0 (the event is counted as
 * suppressed). At most one caller a second gets 1, across threads. */
int ratelimit_log_due(struct ratelimit_log *l, uint64_t now_ms, uint64_t *suppressed);

#endif /* TETHER_RATELIMIT_H */
