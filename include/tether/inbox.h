/* include/tether/inbox.h - this node's inbox in the cluster store: notices (kick, moved) that other nodes send to its sessions. */
#ifndef TETHER_INBOX_H
#define TETHER_INBOX_H

#include <stddef.h>

#include <liburing.h>

#include "tether/bus.h"
#include "tether/timer.h"

/* With [store] backend = redis, a node reads its inbox (the stream
 * t:{node:<name>}:in, written by store_node_notice on other nodes) on a
 * Redis link of its own, blocking reads that must not stall the worker's
 * pipelined link. It lives on worker 0's ring and timer wheel: the loop
 * passes every CQE whose ud_op() is OP_INBOX to inbox_on_cqe(). Each
 * notice for a session of this node incarnation goes to <fn>; notices for
 * an earlier run of the node (its sessions are gone) are dropped.
 *
 * Reading is in a consumer group of this node incarnation, made at the
 * stream's end when the node starts; each batch is acknowledged once
 * handed to <fn>. After its link comes back the node reads its
 * unacknowledged entries again, then what came meanwhile: at least once.
 * What a dead incarnation left in its group is the reaper's
 * (tether_inbox_reap, cluster.h). */

struct inbox;

/* <kind> BUS_KICK (with <cond>), BUS_MOVED, BUS_APPENDED (entry <seq>
 * with message <m>, one reference for the callee; NULL otherwise),
 * BUS_DELIVER (<m> for a session without a queue, <seq> 0); or
 * STORE_NOTICE_DRAIN (store.h) with <to> NULL: drain this node. */
typedef void inbox_fn(void *ud, int kind, const struct bus_addr *to, int cond, uint32_t seq,
		      struct rmsg *m);

/* NULL with a message in <err> (bad address, out of memory). */
struct inbox *inbox_new(struct io_uring *ring, struct timer_wheel *wheel, const char *redis_addr,
			const char *node, inbox_fn *fn, void *ud, char *err, size_t errlen);
/* Starts reading (from the ring's thread). */
void inbox_start(struct inbox *in);
void inbox_on_cqe(struct inbox *in, const struct io_uring_cqe *cqe);
/* Stops the link (its CQEs must still reach inbox_on_cqe until
 * inbox_stopped()). */
void inbox_stop(struct inbox *in);
int inbox_stopped(const struct inbox *in);
void inbox_free(struct inbox *in);

/* Notices read so far (tests, metrics). */
size_t inbox_count(const struct inbox *in);

#endif /* TETHER_INBOX_H */
