/* include/tether/worker.h - worker threads: one io_uring each, accept, inbox, timers. */
#ifndef TETHER_WORKER_H
#define TETHER_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <liburing.h>

#include "tether/config.h"
#include "tether/timer.h"
#include "tether/tls.h"

struct conn;
struct rmsg;
struct route_target;
struct sm_owner;
struct router;
struct store;
struct store_handle;

/* What every worker shares; read-only after start but for the atomics. */
struct server {
	struct config cfg;
	struct tls_ctx tls;
	uint8_t token_key[32];     /* seals FAST/ISR tokens at rest (token.h) */
	struct store *store;
	struct router *router;
	struct worker *workers;
	unsigned nworkers;
	atomic_int stopping;       /* SIGTERM seen: workers drain and exit */
};

/* user_data layout: | op:8 | gen:24 | slot:32 | (slot/gen only for conn ops) */
enum ring_op {
	OP_ACCEPT = 1,   /* multishot accept; slot = listener index */
	OP_RECV,         /* multishot recv into the provided-buffer ring */
	OP_SEND,         /* one send per connection at a time */
	OP_TICK,         /* timer wheel tick */
	OP_WAKE,         /* MSG_RING from another thread: drain the inbox */
	OP_IGNORE,       /* completions we do not care about (our MSG_RING sends) */
};

static inline uint64_t ud_pack(unsigned op, uint32_t gen, uint32_t slot)
{
	return (uint64_t)op << 56 | (uint64_t)(gen & 0xffffff) << 32 | slot;
}
static inline unsigned ud_op(uint64_t ud) { return (unsigned)(ud >> 56); }
static inline uint32_t ud_gen(uint64_t ud) { return (uint32_t)(ud >> 32) & 0xffffff; }
static inline uint32_t ud_slot(uint64_t ud) { return (uint32_t)ud; }

enum inbox_kind {
	INBOX_DELIVER = 0, /* put <msg> on the stream of slot/gen */
	INBOX_KICK,        /* end the stream of slot/gen with stream error <cond> */
	INBOX_MOVED,       /* the SM session of slot/gen was resumed elsewhere */
};

/* A cross-thread request. Pushed by any thread, popped by the owner. */
struct inbox_item {
	struct inbox_item *next;
	enum inbox_kind kind;
	uint32_t slot, gen;
	int cond;
	struct rmsg *msg;  /* one reference, owned by the item */
};

#define LISTENER_MAX 2

struct worker {
	struct server *srv;
	unsigned idx;
	pthread_t thread;
	struct io_uring ring;
	/* provided-buffer ring for multishot recv */
	struct io_uring_buf_ring *br;
	uint8_t *bufs;
	unsigned nbufs, buf_size;
	/* listeners: [0] = STARTTLS port, [1] = direct TLS port; -1 if off */
	int lfd[LISTENER_MAX];
	/* connections by slot; gen detects stale CQEs */
	struct conn **conns;
	uint32_t *gens;
	uint32_t nslots, cap_slots;
	uint32_t *free_slots;
	uint32_t nfree;
	unsigned live;               /* connections not yet freed */
	struct conn *flush_list;     /* connections with output to submit */
	struct conn *starved;        /* recv stopped on -ENOBUFS; re-arm later */
	struct timer_wheel wheel;
	struct store_handle *sh;     /* store operations issued here complete in this loop */
	/* inbox: lock-free LIFO push, the owner takes all and reverses */
	_Atomic(struct inbox_item *) inbox;
	atomic_int wake_pending;
	int congested_hit;           /* a delivery just went to a congested session */
	int trim_pending;            /* idle streams freed memory: give it back to the OS */
	struct timer accept_retry[LISTENER_MAX]; /* re-arm accept after EMFILE & co. */
	uint64_t accept_err_logged_ms;
	uint64_t last_trim_ms;
	int draining;                /* shutdown seen by this worker */
	uint64_t drain_deadline_ms;
	int exit_code;
};

/* Creates the ring, buffer ring and listening sockets of worker <idx>.
 * Returns 0, or -1 after logging why (the process then exits). */
int worker_init(struct worker *w, struct server *srv, unsigned idx);

/* Runs the loop in a new thread. */
int worker_start(struct worker *w);

/* Joins the thread and frees everything the worker owns. */
void worker_join(struct worker *w);

/* From any thread: asks every worker to shut down (system-shutdown to all
 * streams, then exit). <from> is the calling worker or NULL. */
void server_stop(struct server *srv);

/* Delivers <m> (the caller's reference is consumed) to the session at
 * <t>. Same worker: at once; other worker: through its inbox and a
 * MSG_RING wake-up sent from <w>'s ring. */
void worker_deliver(struct worker *w, const struct route_target *t, struct rmsg *m);

/* Asks the session at <t> to end with stream error <cond> (e.g. conflict). */
void worker_kick(struct worker *w, const struct route_target *t, int cond);

/* Tells the stream at <owner> that its SM session now lives elsewhere. */
void worker_moved(struct worker *w, const struct sm_owner *owner);

/* Queues <c> for a send at the end of this loop turn. */
void worker_want_flush(struct worker *w, struct conn *c);

/* Gets an SQE, submitting first if the SQ is full. Never NULL. */
struct io_uring_sqe *worker_sqe(struct worker *w);

#endif /* TETHER_WORKER_H */
