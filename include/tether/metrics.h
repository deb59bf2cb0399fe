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
	  "Times a client stream stopped reading to let something slower catch up, by cause.") \
	F(F_RESUMPTIONS, "tether_resumptions_total", "counter", \
	  "XEP-0198 resumptions, by kind (classic <resume/>, ISR, SASL2 inline), result, and " \
	  "whether the session's previous owner was this node or another.") \
	F(F_STORE_OPS, "tether_store_operations_total", "counter", \
	  "Asynchronous store operations completed, by operation.") \
	F(F_STORE_ERRORS, "tether_store_errors_total", "counter", \
	  "Store operations that failed (store unreachable, timeout, out of memory; not " \
	  "answers such as not-found or taken-over), by operation.") \
	F(F_TLS_HANDSHAKES, "tether_tls_handshakes_total", "counter", \
	  "TLS handshakes completed, by whether the session was resumed.") \
	F(F_STANZAS_OUT, "tether_stanzas_out_total", "counter", \
	  "Stanzas handed to client sessions (sent, or queued for a detached one), by kind.") \
	F(F_CONNECTIONS, "tether_connections", "gauge", \
	  "Client connections accepted and not yet freed, by listener.") \
	F(F_CONN_STATES, "tether_connection_states", "gauge", \
	  "Client connections by stage: pre_tls (TLS not established), pre_auth (SASL offered, " \
	  "not yet succeeded), bound (a resource is bound); other stages are brief and not counted.") \
	F(F_SESSIONS, "tether_sessions", "gauge", \
	  "Sessions on this node: attached to a stream, or detached (XEP-0198, waiting for a resumption).") \
	F(F_CLIENT_BYTES, "tether_client_bytes_total", "counter", \
	  "Bytes received from and sent to client sockets (TLS records included), by direction.") \
	F(F_TAKEOVERS, "tether_session_takeovers_total", "counter", \
	  "Resumptions that took a session from another stream, by whether that stream was still " \
	  "attached (it is told to let go: conflict) or detached, the node it was on, and whether " \
	  "that node was alive (owner=dead: its lease had expired; nothing is sent to it).")

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
	S(M_LIMIT_SEND_QUEUE, F_LIMIT_HITS, "limit=\"max_send_queue\"") \
	S(M_STORE_BACKPRESSURE, F_BACKPRESSURE, "cause=\"store\"") \
	S(M_FLOW_BACKPRESSURE, F_BACKPRESSURE, "cause=\"receiver\"") \
	METRIC_RESUME_SERIES(S) \
	METRIC_STORE_SERIES(S) \
	S(M_TLS_FULL, F_TLS_HANDSHAKES, "resumed=\"false\"") \
	S(M_TLS_RESUMED, F_TLS_HANDSHAKES, "resumed=\"true\"") \
	S(M_OUT_MESSAGE, F_STANZAS_OUT, "kind=\"message\"") \
	S(M_OUT_PRESENCE, F_STANZAS_OUT, "kind=\"presence\"") \
	S(M_OUT_IQ, F_STANZAS_OUT, "kind=\"iq\"") \
	S(M_CONNS_STARTTLS, F_CONNECTIONS, "listener=\"starttls\"") \
	S(M_CONNS_DIRECT_TLS, F_CONNECTIONS, "listener=\"direct_tls\"") \
	S(M_CONNS_PRE_TLS, F_CONN_STATES, "state=\"pre_tls\"") \
	S(M_CONNS_PRE_AUTH, F_CONN_STATES, "state=\"pre_auth\"") \
	S(M_CONNS_BOUND, F_CONN_STATES, "state=\"bound\"") \
	S(M_SESSIONS_ATTACHED, F_SESSIONS, "state=\"attached\"") \
	S(M_SESSIONS_DETACHED, F_SESSIONS, "state=\"detached\"") \
	S(M_BYTES_IN, F_CLIENT_BYTES, "direction=\"in\"") \
	S(M_BYTES_OUT, F_CLIENT_BYTES, "direction=\"out\"") \
	S(M_TAKEOVER_ATTACHED_SAME, F_TAKEOVERS, "previous=\"attached\",node=\"same\",owner=\"live\"") \
	S(M_TAKEOVER_ATTACHED_OTHER, F_TAKEOVERS, "previous=\"attached\",node=\"other\",owner=\"live\"") \
	S(M_TAKEOVER_DETACHED_SAME, F_TAKEOVERS, "previous=\"detached\",node=\"same\",owner=\"live\"") \
	S(M_TAKEOVER_DETACHED_OTHER, F_TAKEOVERS, "previous=\"detached\",node=\"other\",owner=\"live\"") \
	S(M_TAKEOVER_ATTACHED_DEAD, F_TAKEOVERS, "previous=\"attached\",node=\"other\",owner=\"dead\"") \
	S(M_TAKEOVER_DETACHED_DEAD, F_TAKEOVERS, "previous=\"detached\",node=\"other\",owner=\"dead\"")

/* Resumptions: kind x result x node, in this order, so that
 * metrics_resume_id() can index them. */
#define METRIC_RESUME_SERIES(S) \
	METRIC_RESUME_KIND(S, CLASSIC, "classic") \
	METRIC_RESUME_KIND(S, ISR, "isr") \
	METRIC_RESUME_KIND(S, SASL2, "sasl2")
#define METRIC_RESUME_KIND(S, K, k) \
	S(M_RESUME_##K##_OK_SAME, F_RESUMPTIONS, "kind=\"" k "\",result=\"ok\",node=\"same\"") \
	S(M_RESUME_##K##_OK_OTHER, F_RESUMPTIONS, "kind=\"" k "\",result=\"ok\",node=\"other\"") \
	S(M_RESUME_##K##_FAILED_SAME, F_RESUMPTIONS, "kind=\"" k "\",result=\"failed\",node=\"same\"") \
	S(M_RESUME_##K##_FAILED_OTHER, F_RESUMPTIONS, "kind=\"" k "\",result=\"failed\",node=\"other\"")

/* Store operations and errors, by operation (store/store_op.h's kinds,
 * a few grouped); store.c maps kinds to them. */
#define METRIC_STORE_SERIES(S) \
	METRIC_STORE_OP(S, USER_GET, "user_get") \
	METRIC_STORE_OP(S, SM_TAKE, "sm_take") \
	METRIC_STORE_OP(S, SM_WRITE, "sm_write") \
	METRIC_STORE_OP(S, SM_APPEND, "sm_append") \
	METRIC_STORE_OP(S, SM_ACK, "sm_ack") \
	METRIC_STORE_OP(S, SM_DESTROY, "sm_destroy") \
	METRIC_STORE_OP(S, FAST, "fast") \
	METRIC_STORE_OP(S, DELIVER, "deliver") \
	METRIC_STORE_OP(S, NOTICE, "node_notice") \
	METRIC_STORE_OP(S, BARRIER, "barrier")
#define METRIC_STORE_OP(S, K, k) \
	S(M_STORE_OP_##K, F_STORE_OPS, "op=\"" k "\"") \
	S(M_STORE_ERR_##K, F_STORE_ERRORS, "op=\"" k "\"")

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

enum metric_resume_kind {
	METRIC_RESUME_CLASSIC = 0,  /* <resume/> on a stream (XEP-0198) */
	METRIC_RESUME_ISR,          /* <inst-resume/> in SASL2 (XEP-0397) */
	METRIC_RESUME_SASL2,        /* <resume/> inline in SASL2 (XEP-0388) */
};

/* The series of a resumption of <kind>: <ok> or failed, the session's
 * previous owner on <other> node or this one. */
static inline enum metric_id metrics_resume_id(enum metric_resume_kind kind, int ok, int other)
{
	return (enum metric_id)(M_RESUME_CLASSIC_OK_SAME + 4 * (int)kind + (ok ? 0 : 2) + !!other);
}

/* The series of a takeover of a session whose previous stream was still
 * <attached> or not, on <other> node or this one, a <dead> one (other). */
static inline enum metric_id metrics_takeover_id(int attached, int other, int dead)
{
	if (dead)
		return attached ? M_TAKEOVER_ATTACHED_DEAD : M_TAKEOVER_DETACHED_DEAD;
	return (enum metric_id)(M_TAKEOVER_ATTACHED_SAME + (attached ? 0 : 2) + !!other);
}

/* Histograms: HIST(id, name, help, bounds). <bounds> names one of the
 * bucket sets in metrics.c: "time" observes microseconds and renders
 * seconds; "count" observes and renders plain numbers. */
#define METRIC_HISTOGRAMS(H) \
	H(H_RESUME, "tether_resume_duration_seconds", \
	  "Time from a resumption request to the resumed session, by the server's clock.", time) \
	H(H_STORE, "tether_store_operation_duration_seconds", \
	  "Time from issuing a store operation to its completion on the worker, all operations.", time) \
	H(H_LOOP_LAG, "tether_worker_loop_lag_seconds", \
	  "How late a worker's timer tick ran (every 50 ms) behind its schedule, all workers.", time) \
	H(H_SM_QUEUE, "tether_sm_queue_depth", \
	  "Unacknowledged stanzas in a session's XEP-0198 queue when the client acknowledges, " \
	  "before the acknowledgement.", count)

enum metric_hist {
#define METRIC_H_ENUM(id, name, help, bounds) id,
	METRIC_HISTOGRAMS(METRIC_H_ENUM)
#undef METRIC_H_ENUM
	METRIC_HIST_COUNT,
};

#define METRIC_BUCKETS 12 /* time: 50 µs .. 5 s; count: 1 .. 5000; then +Inf */

/* Gauges read when scraped, on the admin thread: GAUGE(id, name, help). A
 * gauge with no reader set (metrics_gauge_set) is left out. */
#define METRIC_GAUGES(G) \
	G(G_RSS, "tether_process_resident_memory_bytes", "Resident memory of the process.") \
	G(G_FDS, "tether_process_open_fds", "Open file descriptors of the process.") \
	G(G_REDIS_UP, "tether_redis_link_up", \
	  "1 if every worker's Redis link is up (or the store is not Redis), else 0.")

enum metric_gauge {
#define METRIC_G_ENUM(id, name, help) id,
	METRIC_GAUGES(METRIC_G_ENUM)
#undef METRIC_G_ENUM
	METRIC_GAUGE_COUNT,
};

/* Reads a gauge's value; called on the admin thread while scraping, so it
 * may only read what other threads publish atomically. */
typedef int64_t metrics_gauge_fn(void *ud);

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

/* Monotonic microseconds, for the start and end of an observation. */
uint64_t metrics_now_us(void);

/* Records one observation of <us> microseconds in histogram <h> (a
 * "time" one), or of the number <us> in a "count" one. */
void metrics_observe_us(enum metric_hist h, uint64_t us);

static inline void metrics_observe(enum metric_hist h, uint64_t n)
{
	metrics_observe_us(h, n);
}

/* Makes scrapes read gauge <g> with <fn>(<ud>). Call before the admin
 * endpoint starts (metrics_init sets the process gauges itself). */
void metrics_gauge_set(enum metric_gauge g, metrics_gauge_fn *fn, void *ud);

/* Appends the Prometheus text exposition (version 0.0.4) of every series,
 * summed over the shards, then the histograms and the gauges that have a
 * reader.
 * Returns 0 or -ENOMEM. */
int metrics_render(struct sbuf *out);

void metrics_free(void);

#endif /* TETHER_METRICS_H */
