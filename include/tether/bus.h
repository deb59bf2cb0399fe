/* include/tether/bus.h - session addresses, and deliver/kick/moved to a session wherever it lives. */
#ifndef TETHER_BUS_H
#define TETHER_BUS_H

#include <stdint.h>

struct rmsg;
struct worker;

#define BUS_NODE_SELF 0 /* the node we run on; other nodes are numbered by nodes.h */

/* Where one session lives. A slot is reused once its session is freed, and
 * then has another generation: a message to a stale address reaches the
 * worker, which sees the mismatch and hands it back to protocol code (the
 * "stale" handler, worker.h) instead of to the slot's new owner. */
struct bus_addr {
	uint16_t node;    /* BUS_NODE_SELF, or another cluster node (nodes.h) */
	uint16_t worker;  /* index of the owning worker on that node */
	uint32_t slot;    /* the worker's connection slot */
	uint32_t gen;     /* the slot's generation when the session took it */
};

static inline int bus_addr_eq(const struct bus_addr *a, const struct bus_addr *b)
{
	return a->node == b->node && a->worker == b->worker && a->slot == b->slot && a->gen == b->gen;
}

enum bus_kind {
	BUS_DELIVER = 0, /* put <msg> on the session's stream (queued while detached) */
	BUS_KICK,        /* end the session's stream with stream error <cond> */
	BUS_MOVED,       /* the session's SM state was resumed elsewhere */
	BUS_APPENDED,    /* another node appended <msg> to the session's queue as entry <seq> */
};

/* One request to a session, as it travels to the owning worker. */
struct bus_item {
	struct bus_item *next; /* inbox link (worker.c) */
	enum bus_kind kind;
	struct bus_addr to;
	int cond;              /* BUS_KICK: enum stream_err */
	uint32_t seq;          /* BUS_APPENDED: the entry's number */
	struct rmsg *msg;      /* BUS_DELIVER, BUS_APPENDED: one reference, owned by the item */
};

/* The calls below decide where <to> is. This worker (<w>): carried out at
 * once, before returning, with no allocation. Another worker of this node:
 * copied into its inbox and woken with a MSG_RING from <w>'s ring. Another
 * node: kick and moved go to that node's inbox through the store
 * (store_node_notice); a delivery is -EHOSTUNREACH, because stanzas for
 * another node's sessions are addressed by session id and appended to the
 * session's queue in the store (deliver.c), never handed between nodes.
 * Each returns 0, or -errno when the request was dropped. */

/* Delivers <m> to session <to>. Consumes the caller's reference of <m>,
 * also on error. */
int bus_deliver(struct worker *w, const struct bus_addr *to, struct rmsg *m);

/* Ends the stream of session <to> with stream error <cond>; SE_NONE:
 * end the session only if it is detached (errors.h). */
int bus_kick(struct worker *w, const struct bus_addr *to, int cond);

/* Tells session <to> that its SM session was resumed on another stream. */
int bus_moved(struct worker *w, const struct bus_addr *to);

/* Tells session <to> (of this node) that another node appended <m> to its
 * queue as entry <seq> (that node's notice came through our inbox).
 * Consumes the caller's reference of <m>. */
int bus_appended(struct worker *w, const struct bus_addr *to, uint32_t seq, struct rmsg *m);

#endif /* TETHER_BUS_H */
