/* include/tether/store_im.h - IM data through the store: rosters, subscription states, pending requests, offline messages.
 *
 * Types of the IM part of the store interface (RFC 6121 §2-3, XEP-0160,
 * XEP-0237), the synchronous calls over a backend's store_ops, and their
 * asynchronous versions through a worker's store handle (store.h), which
 * is the only way c2s reaches them. Every operation that changes the
 * subscription state of a pair applies both sides (the user's outbound
 * step and the contact's inbound one, RFC 6121 Appendix A) in one step,
 * so the two rosters never disagree and a contact need not be online. */
#ifndef TETHER_STORE_IM_H
#define TETHER_STORE_IM_H

#include <stddef.h>
#include <stdint.h>

#include "tether/sub.h"

struct sm_entry;
struct store;
struct store_handle;
struct store_op;

#define IM_NAME_MAX     1023   /* bytes of an item's name (RFC 6121 §2.3.3: not-acceptable beyond) */
#define IM_GROUP_MAX    1023   /* bytes of one group name */
#define IM_GROUPS_MAX   64     /* groups per item */
#define IM_MAX_ROSTER_DEFAULT  1000
#define IM_MAX_OFFLINE_DEFAULT 500

/* One roster item, as stored. A contact whose only link to the user is a
 * subscription request waiting for an answer (None + Pending In, never put
 * in the roster by the user) is kept with <visible> = 0: RFC 6121 §3.1.3
 * has the server remember the request but not show it as an item. */
struct im_item {
	char *jid;          /* the contact's JID as prepared (normally bare) */
	char *name;         /* NULL: none */
	char **groups;
	size_t ngroups;
	uint8_t state;      /* enum sub_state */
	uint8_t visible;    /* part of the roster the user gets and sees pushed */
	char *pending;      /* Pending In: the request as received (sent again at
	                     * every initial presence until answered), or NULL */
};

/* Frees what <it> owns and zeroes it. */
void im_item_clear(struct im_item *it);
/* Deep copy of <src> into <dst>: 0 or -ENOMEM (then <dst> is cleared). */
int im_item_copy(struct im_item *dst, const struct im_item *src);

/* What one change did to one account's roster, for its roster push. */
struct im_change {
	int pushed;            /* the visible roster changed: push <item> */
	int removed;           /* ...by removing the item (subscription='remove') */
	uint64_t ver;          /* the roster version afterwards */
	struct im_item item;   /* the item afterwards (or as it was, if removed) */
};

/* A subscription stanza of <type> from <user> to <contact> (both bare). */
struct im_sub_result {
	int contact_exists;    /* 0: no such account (nothing of the contact changed) */
	struct sub_step out;   /* the user's side (A.2) */
	struct sub_step in;    /* the contact's side (A.3): valid if out.deliver && contact_exists */
	struct im_change user, contact;
	int auto_subscribed;   /* the contact had approved already: the server answered
	                        * <subscribed/> for it and the user's side took it too */
};

void im_change_clear(struct im_change *c);
void im_sub_result_clear(struct im_sub_result *r);

/* Per-item callback of a roster read, under the backend's lock: copy what
 * you keep, call nothing of the store. */
typedef void store_im_item_fn(void *ud, const struct im_item *it);
/* Per-message callback of an offline take: <data> is the stanza as stored. */
typedef void store_im_msg_fn(void *ud, const char *data, size_t len);

/* ---- synchronous calls (the backend's struct store_ops; store.c and tests) --
 *
 * read: <fn> for every item of <bare> (hidden ones too); *<ver> = version
 * (0 for an account that never had a roster). 0 or -errno; -ENOTSUP when
 * the backend has no synchronous IM calls (redis: its IM data is reached
 * through the asynchronous calls below only).
 * set: creates or updates item <it>->jid with <it>'s name and groups (its
 * state and pending are ignored: an existing item keeps its subscription,
 * a new one starts at None); -EDQUOT when that would make more than
 * <max_items> visible items.
 * remove: drops the item and, as RFC 6121 §2.5.2 requires, cancels the
 * subscriptions both ways (the contact's side takes the unsubscribe and
 * unsubscribed it would have received): -ENOENT if the item is unknown.
 * <out> gets the user's change; <contact_out> the contact's.
 * sub: applies <type> from <user> to <contact>; <stanza> (the request as
 * it goes out, stamped) is kept as the contact's pending request when it
 * makes one; <contact_exists> is judged by the backend. <out> filled.
 * offline add: appends <data> for <bare>; -EDQUOT when <max> are stored,
 * -ENOENT when there is no such account.
 * offline take: hands every stored message of <bare> to <fn>, oldest first,
 * and deletes them in the same step. */
int store_im_read(struct store *st, const char *bare, uint64_t *ver, store_im_item_fn *fn,
		  void *ud);
int store_im_set(struct store *st, const char *bare, const struct im_item *it,
		 unsigned max_items, struct im_change *out);
int store_im_remove(struct store *st, const char *bare, const char *jid, struct im_change *out,
		    struct im_change *contact_out);
int store_im_sub(struct store *st, const char *user, const char *contact, enum sub_type type,
		 const char *stanza, unsigned max_items, struct im_sub_result *out);
int store_im_offline_add(struct store *st, const char *bare, const char *data, size_t len,
			 unsigned max);
int store_im_offline_take(struct store *st, const char *bare, store_im_msg_fn *fn, void *ud);

/* ---- asynchronous, through a worker's handle ------------------------------
 *
 * Same semantics, completing later, in issue order, through the callback
 * (store.h). Arguments are copied. Each returns the operation, or NULL when
 * it could not be issued (out of memory: the callback never runs). With a
 * backend that submits operations and does not know these kinds, they
 * complete with -ENOTSUP. Writes (set, remove, sub, offline add) are
 * performed when issued, like the SM writes; with the memory backend
 * reads (roster, contacts, offline take) when they complete, so a
 * cancelled offline take never deleted anything; a backend that submits
 * performs them when issued too, and puts back what a cancelled offline
 * take took (redis: store/redis_im.c). */

/* The whole roster: later <fn>(<ud>, err, ver, items, n), the visible items
 * only (borrowed for the call). */
typedef void store_im_roster_fn(void *ud, int err, uint64_t ver, const struct im_item *items,
				size_t n);
struct store_op *store_im_roster_async(struct store_handle *h, const char *bare,
				       store_im_roster_fn *fn, void *ud);

/* Just the JIDs of <bare>'s contacts whose state matches <want> (IM_WANT_*)
 * with their states (enum sub_state), and the pending requests with
 * IM_WANT_PENDING: later <fn>(<ud>, err, jids, states, n, pending, np)
 * (borrowed for the call). Cheap enough for every presence broadcast:
 * names and groups are not copied. */
#define IM_WANT_FROM    1u  /* the contact receives the user's presence (From, Both) */
#define IM_WANT_TO      2u  /* the user receives the contact's (To, Both): probe these */
#define IM_WANT_PENDING 4u  /* stored subscription requests, in <pending> */
typedef void store_im_contacts_fn(void *ud, int err, char *const *jids, const uint8_t *states,
				  size_t n, char *const *pending, size_t np);
struct store_op *store_im_contacts_async(struct store_handle *h, const char *bare, unsigned want,
					 store_im_contacts_fn *fn, void *ud);

/* set / remove: later <fn>(<ud>, err, change, contact_change) (contact_change
 * only for remove, else NULL; borrowed for the call). */
typedef void store_im_change_fn(void *ud, int err, const struct im_change *c,
				const struct im_change *contact);
struct store_op *store_im_set_async(struct store_handle *h, const char *bare,
				    const struct im_item *it, unsigned max_items,
				    store_im_change_fn *fn, void *ud);
struct store_op *store_im_remove_async(struct store_handle *h, const char *bare, const char *jid,
				       store_im_change_fn *fn, void *ud);

/* sub: later <fn>(<ud>, err, result) (borrowed for the call). */
typedef void store_im_sub_fn(void *ud, int err, const struct im_sub_result *r);
struct store_op *store_im_sub_async(struct store_handle *h, const char *user, const char *contact,
				    enum sub_type type, const char *stanza, unsigned max_items,
				    store_im_sub_fn *fn, void *ud);

/* offline add: later <fn>(<ud>, err) with 0, -EDQUOT (full) or -errno. */
typedef void store_im_done_fn(void *ud, int err);
struct store_op *store_im_offline_add_async(struct store_handle *h, const char *bare,
					    const char *data, size_t len, unsigned max,
					    store_im_done_fn *fn, void *ud);

/* offline take: later <fn>(<ud>, err, msgs, lens, n), oldest first, already
 * deleted from the store (borrowed for the call: copy what you keep). */
typedef void store_im_msgs_fn(void *ud, int err, char *const *msgs, const size_t *lens, size_t n);
struct store_op *store_im_offline_take_async(struct store_handle *h, const char *bare,
					     store_im_msgs_fn *fn, void *ud);

/* offline move: for a session with XEP-0198, the offline messages of <bare>
 * become entries of session <sid>'s queue (owned with <epoch>), oldest
 * first, and leave offline storage in the same step (redis: one function;
 * memory: when the operation completes, under the store's locks), so none
 * is ever only in flight to a node that may die: what the client does not
 * acknowledge stays in the queue for a resumption or, when the session
 * ends, is stored offline again like any unacknowledged message
 * (deliver_orphan). A message whose sender <bare> blocks (XEP-0191) is
 * dropped. Stored records are offline.c's (<from>\x01<id>\x01<type>\x01
 * <stanza>): the store reads the sender and builds each entry's message
 * from them. Later <fn>(<ud>, err, q, n): the entries in queue order with
 * their numbers (borrowed for the call: take a reference to keep a
 * message); an entry with seq 0 is a message the store could not append
 * (the session was taken over meanwhile; memory backend), which the caller
 * routes as a new stanza. -ESTALE: nothing was moved (another stream owns
 * the session), -ENOENT: no such session. */
typedef void store_im_moved_fn(void *ud, int err, const struct sm_entry *q, size_t n);
struct store_op *store_im_offline_move_async(struct store_handle *h, const char *bare,
					     const char *sid, uint32_t epoch,
					     store_im_moved_fn *fn, void *ud);

/* ---- XEP-0191 blocklists -------------------------------------------------
 *
 * blocks: <fn> for every JID <bare> blocks (prepared: a full JID, a bare
 * JID or a domain). block: IM_BLOCK_ADD or IM_BLOCK_REMOVE the <n> <jids>
 * (already there / not there: no error), or IM_BLOCK_CLEAR them all;
 * -EDQUOT when the list would be longer than IM_BLOCKLIST_MAX. 0 or
 * -errno; -ENOTSUP without IM data. Async like the others: the read at
 * completion, the change when issued. */
#define IM_BLOCKLIST_MAX 1000
enum im_block_op {
	IM_BLOCK_ADD = 0,
	IM_BLOCK_REMOVE,
	IM_BLOCK_CLEAR,
};
typedef void store_im_jid_fn(void *ud, const char *jid);
int store_im_blocks(struct store *st, const char *bare, store_im_jid_fn *fn, void *ud);
int store_im_block(struct store *st, const char *bare, enum im_block_op op, char *const *jids,
		   size_t n);
typedef void store_im_blocks_fn(void *ud, int err, char *const *jids, size_t n);
struct store_op *store_im_blocks_async(struct store_handle *h, const char *bare,
				       store_im_blocks_fn *fn, void *ud);
struct store_op *store_im_block_async(struct store_handle *h, const char *bare,
				      enum im_block_op op, char *const *jids, size_t n,
				      store_im_done_fn *fn, void *ud);

/* Hands <ud> of IM operation <op> to the operation: if its callback never
 * runs (cancelled, or the handle detached at shutdown), <ud_free>(ud) is
 * called when the operation is released. For contexts that belong to no
 * connection (a broadcast from a session that has ended). */
void store_im_own_ud(struct store_op *op, void (*ud_free)(void *ud));

#endif /* TETHER_STORE_IM_H */
