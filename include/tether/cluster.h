/* include/tether/cluster.h - a node's lease in the shared store, and the reaper of dead nodes' sessions. */
#ifndef TETHER_CLUSTER_H
#define TETHER_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include "tether/timer.h"

/* With [store] backend = redis, worker 0 keeps this node's lease
 * (t:{node:<name>}:lease = its incarnation, renewed every second, expiring
 * CLUSTER_LEASE_MS after the node stops) and competes for the reaper's
 * lease. The node holding it scans the sessions (a bounded batch a second)
 * and reaps those whose owner's lease is gone: an attached session of a
 * dead node becomes detached, resumable for its window; a detached one
 * past its window is removed, <gone> told if it was available, and each
 * stanza of its queue goes to <fn> to be re-routed, stored offline or
 * bounced as RFC 6121 says. Direct entries (sessions without XEP-0198) of
 * dead nodes are removed too, <gone> told for the available ones. Either
 * kind's directed-presence recipients, kept in the store by the stream
 * (redis_lib.lua, DIRECTED PRESENCE), come with <gone> too. And a dead
 * node incarnation's inbox (its consumer group: what it had read and not
 * acknowledged, then what it never read) is drained, CLUSTER_INBOX_BATCH
 * entries a call until empty: each stanza for one of its direct sessions
 * goes to <fn> as an orphan (the resource is unavailable now), the rest
 * is dropped, then the group and, once no group is left, the stream go.
 * The callbacks run on the link's thread. Liveness comes from the
 * lease keys, never from keyspace events (CLUSTER.md). */

#define CLUSTER_LEASE_MS 5000u /* defaults of [cluster] lease_ms, tick_ms */
#define CLUSTER_TICK_MS  1000u
/* Entries of a dead inbox per call: a stanza is at most [limits]
 * max_stanza_size (256 KiB by default), so a reply stays well under
 * rproto's 16 MiB reply limit. */
#define CLUSTER_INBOX_BATCH 32u

struct cluster;
struct rlink;
struct rmsg;

/* A stanza left by a reaped session: one reference for the callee. */
typedef void cluster_orphan_fn(void *ud, struct rmsg *m, uint64_t stamp_ms);
/* A reaped session (with a record, or direct) of account <bare>, bound to
 * <resource>: its unavailable presence is due (RFC 6121 §4.5.2) to its
 * contacts if it had broadcast available presence (<available>), and to
 * the <ndirected> JIDs it had sent directed presence to (§4.6.3). */
struct cluster_gone {
	const char *bare, *resource;
	int available;
	const char *const *directed;
	size_t ndirected;
};
/* Called for a reaped session that was available or had directed presence
 * out, before its stanzas go to the orphan callback. Everything in <g> is
 * borrowed for the call. */
typedef void cluster_gone_fn(void *ud, const struct cluster_gone *g);

#define CLUSTER_TICKET_ROTATE_MS (12u * 3600 * 1000) /* TLS ticket keys, as HAProxy */

/* On <link> (worker 0's Redis link) and <wheel>; nodes_set_self() done.
 * <key> (32 bytes, kept by the caller) seals the TLS ticket keys the nodes
 * share through Redis (they are never there in the clear); every tick the
 * ring is read (made or rotated when due) and handed to tls_tickets_set.
 * NULL on OOM. */
struct cluster *cluster_new(struct rlink *link, struct timer_wheel *wheel, const uint8_t *key,
			    cluster_orphan_fn *fn, cluster_gone_fn *gone, void *ud);
/* The lease's TTL and the tick (renewal and reaper step), in ms, instead
 * of CLUSTER_LEASE_MS and CLUSTER_TICK_MS; <tick_ms> at most half of
 * <lease_ms> (config.c checks). Before cluster_start(). */
void cluster_set_timing(struct cluster *c, unsigned lease_ms, unsigned tick_ms);
/* Starts the ticks (from the thread of the link's ring). */
void cluster_start(struct cluster *c);
/* Stops the ticks; replies still due are dropped (the link stops too). */
void cluster_free(struct cluster *c);

/* Sessions detached or removed by this node's reaper so far (tests). */
size_t cluster_reaped(const struct cluster *c);

#endif /* TETHER_CLUSTER_H */
