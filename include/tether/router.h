/* include/tether/router.h - the node-local session directory and routing decisions. */
#ifndef TETHER_ROUTER_H
#define TETHER_ROUTER_H

#include <stddef.h>
#include <stdint.h>

#include "tether/bus.h"

#define ROUTER_MAX_RESOURCES 64   /* bound sessions per account on one node */

/* One bound session as routing sees it: its address and what the routing
 * rules look at. 16 bytes: a copy of every resource of an account fits on
 * the stack. */
struct route_target {
	struct bus_addr addr;
	int8_t priority;    /* from the last available presence (-128..127); 0 before */
	uint8_t available;  /* sent available presence and not unavailable since */
	uint8_t congested;  /* its SM queue is near its bound: senders back off */
	uint8_t carbons;    /* XEP-0280 enabled: gets copies of the account's messages */
};

struct router;

struct router *router_new(void);
void router_free(struct router *r);

/* Binds <bare>/<resource> to session <at>. If that full JID was bound
 * already, the old session's address is copied to <old> and replaced:
 * returns 1 (the caller kicks the old session with <conflict/>). Returns 0
 * if new, -EMLINK when the account has ROUTER_MAX_RESOURCES sessions,
 * -ENOMEM. */
int router_bind(struct router *r, const char *bare, const char *resource,
		const struct bus_addr *at, struct bus_addr *old);

/* Removes the binding if it still belongs to session <at>. */
void router_unbind(struct router *r, const char *bare, const char *resource,
		   const struct bus_addr *at);

/* Records presence of a bound resource. */
void router_set_presence(struct router *r, const char *bare, const char *resource,
			 int available, int priority);

/* Marks the binding (if it still belongs to session <at>) as congested or
 * not: senders that reach it pause their reading briefly. */
void router_set_congested(struct router *r, const char *bare, const char *resource,
			  const struct bus_addr *at, int on);

/* Marks the binding (if it still belongs to session <at>) as wanting
 * XEP-0280 carbons or not. */
void router_set_carbons(struct router *r, const char *bare, const char *resource,
			const struct bus_addr *at, int on);

/* Copies the target of a full JID into <out>. Returns 0 or -ENOENT. */
int router_get_full(struct router *r, const char *bare, const char *resource,
		    struct route_target *out);

/* Copies up to <max> targets of every bound resource of <bare> into <out>
 * (ROUTER_MAX_RESOURCES of them take 1 KiB: a stack array). Returns how many. */
size_t router_get_all(struct router *r, const char *bare, struct route_target *out, size_t max);

/* RFC 6121 §8.5.2.1: which of <n> resources a message to the bare JID
 * goes to: the available ones with the highest non-negative priority, or
 * with <all_non_negative> (headline messages) every available one with a
 * non-negative priority. Writes their indexes into <pick>; returns how
 * many (0: none eligible). */
size_t router_pick_for_message(const struct route_target *t, size_t n, size_t *pick,
			       int all_non_negative);

/* A random resource for clients that let the server choose (base64url,
 * 16 characters, 96 bits from libsodium). */
void router_random_resource(char out[17]);

#endif /* TETHER_ROUTER_H */
