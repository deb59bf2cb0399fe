/* include/tether/worker.h - worker threads: one io_uring each, accept, inbox, timers. */
#ifndef TETHER_WORKER_H
#define TETHER_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <liburing.h>

#include "tether/server.h"
#include "tether/timer.h"
#include "tether/transport.h"

struct bus_addr;
struct bus_item;
struct conn;
struct rlink;
struct inbox;
struct cluster;
struct cluster_gone;
struct rmsg;
struct store_handle;

/* user_data layout: | op:8 | gen:24 | slot:32 | (slot/gen only for conn ops) */
enum ring_op {
	OP_ACCEPT = 1,   /* multishot accept; slot = listener index */
	OP_RECV,         /* multishot recv into the provided-buffer ring */
	OP_SEND,         /* one send per connection at a time */
	OP_TICK,         /* timer wheel tick */
	OP_WAKE,         /* MSG_RING from another thread: drain the inbox */
	OP_IGNORE,       /* completions we do not care about (our MSG_RING sends) */
	OP_RLINK,        /* the worker's Redis link (rlink.h); slot = enum rlink_op, gen = its socket's */
	OP_INBOX,        /* worker 0: the node inbox's Redis link (inbox.h), as OP_RLINK */
};

static inline uint64_t ud_pack(unsigned op, uint32_t gen, uint32_t slot)
{
	return (uint64_t)op << 56 | (uint64_t)(gen & 0xffffff) << 32 | slot;
}
static inline unsigned ud_op(uint64_t ud) { return (unsigned)(ud >> 56); }
static inline uint32_t ud_gen(uint64_t ud) { return (uint32_t)(ud >> 32) & 0xffffff; }
static inline uint32_t ud_slot(uint64_t ud) { return (uint32_t)ud; }

/* The protocol's entry points (c2s registers them in struct server). The
 * worker and the connection call these and nothing else of protocol code.
 * <p> is what open returned for the connection. */
struct worker_handlers {
	/* A connection was accepted on <w> (<tls>: the direct-TLS port); its
	 * session lives at <self>. Returns the protocol state, NULL on OOM
	 * (the connection is then closed). */
	void *(*open)(struct worker *w, const struct transport *tp, void *io,
		      const struct bus_addr *self, int tls);
	/* Plaintext from the peer (any split). */
	enum tp_feed (*feed)(void *p, const char *data, size_t len);
	/* The transport broke or closed; told once. */
	void (*lost)(void *p);
	/* 1 while the session must keep its slot with no transport (detached). */
	int (*held)(const void *p);
	/* A pause_read() is over; reading starts again after this returns
	 * (unless it paused or parked again). */
	void (*unpaused)(void *p);
	/* Output is about to be sent: last chance to add to it. */
	void (*before_flush)(void *p);
	/* Transport timer <which> fired. */
	void (*timeout)(void *p, int which);
	/* Frees the protocol state (after lost and not held). */
	void (*free)(void *p);
	/* Bus items for the session at the connection (bus.h); deliver
	 * consumes one reference of <m>. */
	void (*deliver)(void *p, struct rmsg *m);
	void (*kick)(void *p, int cond);
	void (*moved)(void *p);
	/* Another node appended <m> (borrowed) as entry <seq> of the queue. */
	void (*appended)(void *p, uint32_t seq, struct rmsg *m);
	/* A stanza left in the queue of a session that ended elsewhere (the
	 * reaper): re-route or bounce it (RFC 6121). Consumes <m>. */
	void (*orphan)(struct worker *w, struct rmsg *m, uint64_t stamp_ms);
	/* A session whose node died was removed by the reaper: tell whoever
	 * saw it available, and the recipients of its directed presence
	 * (cluster.h; <g> borrowed for the call). */
	void (*gone)(struct worker *w, const struct cluster_gone *g);
	/* A delivery reached <to>, a slot whose session is gone: find the
	 * recipient again or bounce. Consumes one reference of <m>. */
	void (*stale)(struct worker *w, const struct bus_addr *to, struct rmsg *m);
	/* A delivery could not be handed on (<err>: -ENOMEM for the inbox
	 * copy, -EHOSTUNREACH for another node): tell its sender (a bounce),
	 * never drop it without a word. Consumes one reference of <m>. */
	void (*undeliverable)(struct worker *w, struct rmsg *m, int err);
	/* The server shuts down: end the stream (open or detached). */
	void (*shutdown)(void *p);
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
	struct rlink *rlink;         /* [store] backend = redis: this worker's Redis connection */
	struct inbox *node_inbox;    /* worker 0 with redis: notices from other nodes (inbox.h) */
	struct cluster *cluster;     /* worker 0 with redis: the node's lease, the reaper (cluster.h) */
	atomic_int rlink_up;         /* its state, for /readyz (written by the worker only) */
	/* inbox of bus items: lock-free LIFO push, the owner takes all and reverses */
	_Atomic(struct bus_item *) inbox;
	atomic_int wake_pending;
	int trim_pending;            /* streams freed memory: give it back to the OS (worker_want_trim) */
	struct timer accept_retry[LISTENER_MAX]; /* re-arm accept after EMFILE & co. */
	uint64_t accept_err_logged_ms;
	uint64_t last_trim_ms;
	uint64_t io_bytes;           /* bytes received and sent, ever: the load, for maybe_trim_heap */
	uint64_t io_bytes_at, load_at_ms; /* ...at the start of the current second */
	uint64_t tick_due_us;        /* when the armed tick should run (metrics_now_us) */
	int after_burst;             /* a busy second since the last quiet one */
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

/* Carries out <it> on this worker, for the session at it->to (same node,
 * same worker: bus.c checked). The item stays the caller's; its message
 * reference is passed on. */
void worker_dispatch(struct worker *w, const struct bus_item *it);

/* Copies <it> into <target>'s inbox and wakes it from <w>'s ring. 0 (the
 * item's message reference is passed on), or -ENOMEM (it is still the
 * caller's: bus.c bounces it). */
int worker_post(struct worker *w, struct worker *target, const struct bus_item *it);

/* Streams freed memory: at most once a second the worker hands freed pages
 * back to the OS. */
void worker_want_trim(struct worker *w);

/* Queues <c> for a send at the end of this loop turn. */
void worker_want_flush(struct worker *w, struct conn *c);

/* 1 unless the worker has a Redis link that is down (any thread). */
static inline int worker_store_up(struct worker *w)
{
	return !w->rlink || atomic_load_explicit(&w->rlink_up, memory_order_relaxed);
}

/* Gets an SQE, submitting first if the SQ is full. Never NULL. */
struct io_uring_sqe *worker_sqe(struct worker *w);

#endif /* TETHER_WORKER_H */
