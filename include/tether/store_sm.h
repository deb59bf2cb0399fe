/* include/tether/store_sm.h - types of the stream-management part of the store interface. */
#ifndef TETHER_STORE_SM_H
#define TETHER_STORE_SM_H

#include <stddef.h>
#include <stdint.h>

#include "tether/ht.h"
#include "tether/bus.h"
#include "tether/sm.h"
#include "tether/token.h"

struct rmsg;

/* The record of one SM session (XEP-0198), as the store keeps it. The
 * owner writes it through; another node or worker reads it to resume. */
struct sm_record {
	char id[SM_ID_LEN + 1];
	struct bus_addr owner;   /* the session serving it now */
	uint32_t epoch;          /* +1 on every takeover; writes carry it */
	struct sm_counters c;    /* h_in, out, acked */
	unsigned max;            /* resumption window, seconds (0: not resumable) */
	int attached;            /* a stream is attached right now */
	int available;           /* last broadcast presence */
	uint64_t expires_ms;     /* monotonic ms; meaningful while detached */
	int priority;
	/* Set by a takeover (nothing else reads or writes it): the owner
	 * before was on another node that held no lease any more, i.e. dead. */
	uint8_t owner_dead;
	/* The session has a XEP-0397 ISR token, pinned to mechanism <isr_mech>
	 * (enum ht_cb). The sealed token itself (token.h) is not part of the
	 * record: the store keeps it beside it (written with sm_set_isr, checked
	 * inside a takeover), so a record copied by value, as every stream
	 * carries its own, does not hold TOKEN_SEALED_LEN bytes it never reads.
	 * Tokens die with the session, and on password change or account
	 * deletion. */
	uint8_t has_isr;
	uint8_t isr_mech;
	/* The session's IM state (presence.c's bytes, opaque to the store):
	 * what an XEP-0198 resumption restores besides presence. In a take's
	 * result: the state as stored (borrowed for the callback; NULL: none
	 * was written). In an update: written along if not NULL (copied).
	 * NULL everywhere else: a record copied by value never owns it. */
	const char *im;
	size_t im_len;
};

/* What an <inst-resume/> presents (XEP-0397). The store checks it against
 * the session's token inside the takeover itself (store.h, sm_take), so two
 * attempts with one token cannot both pass a check made before the take. */
#define SM_ISR_CB_MAX 64
struct sm_isr_proof {
	uint8_t mech;                 /* enum ht_cb the client authenticated with */
	const uint8_t *key;           /* the server's token key (TOKEN_KEY_LEN bytes) */
	uint8_t hash[HT_HASH_LEN];    /* the initiator's HMAC (ht.h) */
	uint8_t cb[SM_ISR_CB_MAX];    /* channel-binding data, cb_len bytes */
	size_t cb_len;
	uint8_t resp[HT_HASH_LEN];    /* out: the responder hash, when the token matched */
};

/* XEP-0484 FAST: the two token slots of one (account, user-agent id). */
struct fast_token {
	int valid;
	uint8_t mech;            /* enum ht_cb it is pinned to */
	uint64_t expiry_ms;      /* wall clock (Unix ms) */
	uint8_t sealed[TOKEN_SEALED_LEN];
};

struct fast_slots {
	struct fast_token fresh;    /* issued, never used yet ("new") */
	struct fast_token current;  /* used at least once */
	/* The entry's version as read (0: there was none). Every write gives
	 * the entry a version never used before, in this table, so a
	 * compare-and-set against it cannot succeed on an entry that was
	 * rewritten, revoked or deleted and created again since. */
	uint64_t version;
	/* Write policy, read by fast_cas only: when the write makes a new
	 * entry, the account keeps at most <max_entries> (the least recently
	 * written go first; 0: no cap). Each user-agent id a client invents
	 * is an entry, so without it one account could fill the store. */
	uint32_t max_entries;
	/* Out of fast_cas: other entries of the account evicted by the cap
	 * (expired ones swept on the way are not counted). */
	uint32_t evicted;
};

/* One stanza in a session's queue: sent (or to be sent) and not yet acked. */
struct sm_entry {
	uint32_t seq;            /* its number in the outbound count */
	uint64_t stamp_ms;       /* wall clock when the server took it (XEP-0203) */
	struct rmsg *msg;
};

/* Completion of a write. <err> is 0 or -errno (-ESTALE: the session was
 * taken over, -ENOENT: it no longer exists). */
typedef void store_sm_done_fn(void *ud, int err);

/* Completion of a takeover: on success <rec> is the record as it was
 * before (rec->owner = the previous owner; rec->epoch the new epoch),
 * <resource> its resource, <q>/<n> the queue (borrowed for the call: take a
 * reference to keep one). On -EACCES (an ISR token that did not match a
 * session of the account) <rec> is that session's record after the token
 * was destroyed, or NULL when there was no such session. */
typedef void store_sm_take_fn(void *ud, int err, const struct sm_record *rec,
			      const char *resource, const struct sm_entry *q, size_t n);

/* Completion of a destroy: the last record and the queue; the callee owns
 * the message references in <q> and must drop them. */
typedef void store_sm_drain_fn(void *ud, int err, const struct sm_record *rec,
			       const char *bare, const char *resource, struct sm_entry *q, size_t n);

#endif /* TETHER_STORE_SM_H */
