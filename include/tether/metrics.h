/* include/tether/metrics.h - counters, gauges and histograms for /metrics.
 *
 * Every thread that counts owns a shard (one per worker, one for the rest
 * of the process); it writes only its own shard, with relaxed atomic
 * loads and stores (no read-modify-write, no lock: one writer per shard).
 * A scrape sums the shards. So counting costs a plain add on the hot path.
 *
 * A metric is one labelled series of a family: the families and their
 * series are the X-macro lists below, so names, help texts and label sets
 * cannot drift apart. Names follow Prometheus conventions: tether_ prefix,
 * base units, _total on counters, _seconds for time.
 */
#ifndef TETHER_METRICS_H
#define TETHER_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct sbuf;

/* FAMILY(id, name, type, help) */
#define METRIC_FAMILIES(F) \
	F(F_STREAM_ERRORS, "tether_stream_errors_total", "counter", \
	  "Stream errors sent to clients, by condition.") \
	F(F_AUTH, "tether_authentications_total", "counter", \
	  "SASL and SASL2 authentications, by result.") \
	F(F_STANZAS_IN, "tether_stanzas_in_total", "counter", \
	  "Stanzas received from bound clients, by kind.") \
	F(F_SESSIONS_BOUND, "tether_sessions_bound_total", "counter", \
	  "Resources bound (RFC 6120 bind or Bind2).") \
	F(F_LIMIT_HITS, "tether_limit_hits_total", "counter", \
	  "Connections, stanzas or authentication attempts refused by a configured limit, by limit.") \
	F(F_BACKPRESSURE, "tether_backpressure_pauses_total", "counter", \
	  "Times a client stream stopped reading to let something slower catch up, by cause.")

/* SERIES(id, family, labels) - labels as they appear between braces. */
#define METRIC_SERIES(S) \
	S(M_SE_NOT_WELL_FORMED, F_STREAM_ERRORS, "condition=\"not-well-formed\"") \
	S(M_SE_POLICY_VIOLATION, F_STREAM_ERRORS, "condition=\"policy-violation\"") \
	S(M_SE_CONNECTION_TIMEOUT, F_STREAM_ERRORS, "condition=\"connection-timeout\"") \
	S(M_SE_NOT_AUTHORIZED, F_STREAM_ERRORS, "condition=\"not-authorized\"") \
	S(M_SE_CONFLICT, F_STREAM_ERRORS, "condition=\"conflict\"") \
	S(M_SE_OTHER, F_STREAM_ERRORS, "condition=\"other\"") \
	S(M_AUTH_OK, F_AUTH, "result=\"success\"") \
	S(M_AUTH_FAIL, F_AUTH, "result=\"failure\"") \
	S(M_IN_MESSAGE, F_STANZAS_IN, "kind=\"message\"") \
	S(M_IN_PRESENCE, F_STANZAS_IN, "kind=\"presence\"") \
	S(M_IN_IQ, F_STANZAS_IN, "kind=\"iq\"") \
	S(M_BOUND, F_SESSIONS_BOUND, "") \
	S(M_LIMIT_STANZA_SIZE, F_LIMIT_HITS, "limit=\"max_stanza_size\"") \
	S(M_LIMIT_HEADER_SIZE, F_LIMIT_HITS, "limit=\"max_header_size\"") \
	S(M_LIMIT_STANZA_TIMEOUT, F_LIMIT_HITS, "limit=\"stanza_timeout\"") \
	S(M_LIMIT_CONNS_PER_IP, F_LIMIT_HITS, "limit=\"max_conns_per_ip\"") \
	S(M_LIMIT_PREAUTH_CONNS, F_LIMIT_HITS, "limit=\"max_preauth_conns\"") \
	S(M_LIMIT_AUTH_PER_IP, F_LIMIT_HITS, "limit=\"auth_fail_rate_per_ip\"") \
	S(M_LIMIT_AUTH_PER_ACCOUNT, F_LIMIT_HITS, "limit=\"auth_fail_rate_per_account\"") \
	S(M_LIMIT_SM_QUEUE, F_LIMIT_HITS, "limit=\"sm_max_queue\"") \
	S(M_LIMIT_FAST_PER_ACCOUNT, F_LIMIT_HITS, "limit=\"max_fast_per_account\"") \
	S(M_STORE_BACKPRESSURE, F_BACKPRESSURE, "cause=\"store\"")

enum metric_family {
#define METRIC_F_ENUM(id, name, type, help) id,
	METRIC_FAMILIES(METRIC_F_ENUM)
#undef METRIC_F_ENUM
	METRIC_FAMILY_COUNT,
};

enum metric_id {
#define METRIC_S_ENUM(id, fam, labels) id,
	METRIC_SERIES(METRIC_S_ENUM)
#undef METRIC_S_ENUM
	METRIC_COUNT,
};

/* Histograms: fixed upper bounds in seconds, shared by all of them. */
#define METRIC_HISTOGRAMS(H) \
	H(H_RESUME, "tether_resume_duration_seconds", \
	  "Time from a resumption request to the resumed session, by the server's clock.")

enum metric_hist {
#define METRIC_H_ENUM(id, name, help) id,
	METRIC_HISTOGRAMS(METRIC_H_ENUM)
#undef METRIC_H_ENUM
	METRIC_HIST_COUNT,
};

#define METRIC_BUCKETS 12 /* 50 µs .. 5 s, then +Inf */

struct metrics_hist {
	_Atomic uint64_t bucket[METRIC_BUCKETS + 1]; /* per bucket, not cumulative */
	_Atomic uint64_t sum_us;
};

struct metrics_shard {
	_Atomic int64_t v[METRIC_COUNT];
	struct metrics_hist h[METRIC_HIST_COUNT];
} __attribute__((aligned(64)));

/* The calling thread's shard (thread-local); the process shard until
 * metrics_attach() is called on this thread. */
extern _Thread_local struct metrics_shard *metrics_cur;

/* Allocates <nworkers> worker shards plus the process shard. Call once, at
 * start, before any thread counts. Returns 0 or -ENOMEM. */
int metrics_init(unsigned nworkers);

/* Makes worker <idx>'s shard the calling thread's. */
void metrics_attach(unsigned idx);

/* Adds <n> to series <id> in the calling thread's shard. */
static inline void metrics_add(enum metric_id id, int64_t n)
{
	struct metrics_shard *m = metrics_cur;
	if (!m)
		return;
	atomic_store_explicit(&m->v[id], atomic_load_explicit(&m->v[id], memory_order_relaxed) + n,
			      memory_order_relaxed);
}

static inline void metrics_inc(enum metric_id id)
{
	metrics_add(id, 1);
}

/* Records one observation of <us> microseconds in histogram <h>. */
void metrics_observe_us(enum metric_hist h, uint64_t us);

/* Appends the Prometheus text exposition (version 0.0.4) of every series,
 * summed over the shards, plus the process's RSS and open descriptors.
 * Returns 0 or -ENOMEM. */
int metrics_render(struct sbuf *out);

void metrics_free(void);

#endif /* TETHER_METRICS_H */
