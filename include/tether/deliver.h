/* include/tether/deliver.h - delivery to sessions by JID: routing rules, bounces, orphans. */
#ifndef TETHER_DELIVER_H
#define TETHER_DELIVER_H

#include <stddef.h>
#include <stdint.h>

#include "tether/errors.h"

struct bus_addr;
struct rmsg;
struct store_target;
struct worker;

/* Sends <m> to the session bound as <bare>/<resource>. Consumes one
 * reference of <m>. Returns 0, or -ENOENT when no such session is bound. */
int deliver_full(struct worker *w, const char *bare, const char *resource, struct rmsg *m);
/* The same, on any node: a session not bound here is looked for in the
 * shared store's directory (nothing happens if there is none there
 * either). Consumes one reference. Returns 0, or -ENOENT when it is not
 * bound here and no store is shared. */
int deliver_full_any(struct worker *w, const char *bare, const char *resource, struct rmsg *m);

/* <m> to every session of account <bare> on the other nodes, through the
 * shared store (none: nothing happens): unqueued, into their nodes'
 * inboxes, so only for what a session acts on itself (the internal types
 * of presence.c, such as carbons, which each session passes on or drops).
 * Does not consume <m>. Returns 1 if issued, 0 if not (no shared store,
 * out of memory). */
int deliver_others(struct worker *w, const char *bare, struct rmsg *m);

/* RFC 6121 §8.5.2.1.1: a message to a bare JID goes to the available
 * resources with the highest non-negative priority. Consumes one reference.
 * Returns how many got it (0: nobody). If one of them is congested (its
 * queue near its bound) and <congested> is not NULL, sets *<congested> = 1:
 * the sender should back off. */
size_t deliver_message_bare(struct worker *w, const char *bare, struct rmsg *m, int *congested);

/* Presence to every bound resource of <bare> (only the available ones if
 * <only_available>). Consumes one reference. Returns how many got it;
 * <congested> as for deliver_message_bare(). */
size_t deliver_presence(struct worker *w, const char *bare, struct rmsg *m, int only_available,
			int *congested);

/* Returns <m> to its sender as an error stanza with <cond> (never for a
 * stanza of type error). Does not consume <m>. */
void deliver_bounce(struct worker *w, const char *domain, const struct rmsg *m, enum stanza_err cond);

/* A delivery through the shared store reached targets <t> (<n>): the
 * sessions of this node hear of their entry now (the inbox copy that
 * follows is a repeat they ignore), direct ones get it. Returns 1 if it
 * went somewhere; 0 if every target's detached queue was full (then it
 * went back to its sender: a full queue never loses a stanza silently). */
int deliver_told(struct worker *w, const struct store_target *t, size_t n, struct rmsg *m);

/* The completion (store_delivered_fn, <ud> the worker) of a delivery whose
 * stream closed before it completed (store_orphan_deliveries): what the
 * stream would have done, without it. Targets are told; nobody: a
 * session of this node (full JID, else the bare JID's), else a chat or
 * normal message is stored offline (XEP-0160), presence and headlines are
 * dropped, the rest bounced. A sender taken over meanwhile (-ESTALE): its
 * client sends it again where it resumed. */
void deliver_issuer_gone(void *ud, int err, const struct store_target *t, size_t n,
			 struct rmsg *m);

/* A delivery through the shared store completed with <err>: -EACCES means
 * the recipient account blocks <m>'s sender (XEP-0191 §3.4), and nothing
 * was delivered. Then an iq get or set goes back service-unavailable, and
 * anything else is dropped without an error, as on one node
 * (presence.c), and 1 is returned; else 0. Does not consume <m>. */
int deliver_blocked(struct worker *w, int err, const struct rmsg *m);

/* A stanza whose recipient session ended before acknowledging it
 * (XEP-0198 §4, RFC 6121 §8.5.3.2): chat/normal messages go to the
 * account's other resources with a XEP-0203 delay stamp of <stamp_ms>, or
 * back to the sender as recipient-unavailable; iq get/set get
 * service-unavailable; everything else is dropped. Consumes one reference. */
void deliver_orphan(struct worker *w, const char *domain, struct rmsg *m, uint64_t stamp_ms);

/* A delivery reached <stale>, a session that is gone or moved: find the
 * recipient again by the stanza's 'to' and forward it, else treat it as an
 * orphan. Consumes one reference. */
void deliver_stale(struct worker *w, const char *domain, const struct bus_addr *stale,
		   struct rmsg *m);

/* Of the sessions a delivery through the shared store went to (<n>
 * entries of <t>), those without XEP-0198 that live on this node: the
 * store did not write them anywhere (store.h, store_target.direct), so
 * each gets one reference of <m> through the bus now. Does not consume
 * <m>. Returns how many. */
size_t deliver_targets_here(struct worker *w, const struct store_target *t, size_t n,
			    struct rmsg *m);

#endif /* TETHER_DELIVER_H */
