/* include/tether/store.h - the session store interface: users, and XEP-0198 sessions with their queues. */
#ifndef TETHER_STORE_H
#define TETHER_STORE_H

#include <errno.h>
#include <stddef.h>

#include "tether/scram.h"
#include "tether/store_im.h"
#include "tether/store_sm.h"

struct store;
struct store_handle;

/* One session, as tetherctl sessions shows it (store_ops.sm_list). */
struct store_session_info {
	const char *resource, *sid;
	const char *owner;        /* "<node>.<boot>/<worker>/<slot>/<gen>" */
	int attached;
	uint64_t age_ms;          /* since it was created */
	int64_t expires_in_ms;    /* detached: until it expires (negative: past) */
	uint32_t queued;          /* stanzas not acknowledged */
};

/* A node's inbox notice that is not about a session: leave the cluster
 * (tetherctl drain NODE: the node drains as on SIGTERM). */
#define STORE_NOTICE_DRAIN 9
struct store_op;

/* A backend's operations. Callers use the store_* wrappers below and never
 * include a backend. Functions are thread-safe (workers call them
 * concurrently) and never block on the network. */
struct store_ops {
	int (*user_get)(struct store *st, const char *bare_jid, struct user_creds *out);
	int (*user_put)(struct store *st, const char *bare_jid, const struct user_creds *c);
	int (*user_del)(struct store *st, const char *bare_jid);
	void (*close)(struct store *st);
	/* Calls <fn> once per user with its bare JID, in no particular
	 * order. Optional (NULL: store_user_list() returns -ENOTSUP). */
	int (*user_list)(struct store *st, void (*fn)(void *ud, const char *bare_jid), void *ud);

	/* XEP-0198 sessions (types in store_sm.h). The owner of a session
	 * writes it through; every write carries the epoch the owner got, and
	 * a write from an owner that was taken over fails with -ESTALE. Writes
	 * return 0 or -errno; take and destroy report through their callback
	 * (the memory backend calls it before returning; a networked backend
	 * calls it from the worker's loop later). A callback must not call
	 * back into the store. */
	int (*sm_create)(struct store *st, const struct sm_record *rec, const char *bare,
			 const char *resource);
	/* Appends <e> (the store takes its own reference to e->msg) as the
	 * queue's next entry: the store numbers it (e->seq = out + 1, the
	 * one place where the order of a session's stanzas is fixed) and sets
	 * out. Epoch 0: a delivery by someone else than the owner (another
	 * node), fenced by nothing but the session's existence. -ESTALE fills
	 * <moved_to> with the current owner. */
	int (*sm_append)(struct store *st, const char *id, uint32_t epoch,
			 struct sm_entry *e, struct bus_addr *moved_to);
	/* Releases the queued entries up to <h>; -ERANGE if h acks too much. */
	int (*sm_ack)(struct store *st, const char *id, uint32_t epoch, uint32_t h);
	/* Writes h_in, max, attached, expires_ms and presence of <rec>. */
	int (*sm_update)(struct store *st, const struct sm_record *rec);
	/* Atomically makes <to> the owner of session <id> of account <bare>
	 * (epoch + 1) unless it is unknown, another account's or expired
	 * (-ENOENT, the same for all three) at <now_ms> (monotonic).
	 * With <proof> (XEP-0397 <inst-resume/>) the session's ISR token is
	 * checked and consumed in the same step: a token that does not match
	 * (or no token, another mechanism, an unknown session) gives -EACCES
	 * and destroys the session's token; a match consumes it (proof->resp
	 * gets the responder hash) and the take goes on as without a proof.
	 * So of two attempts with one token, at most one takes the session. */
	int (*sm_take)(struct store *st, const char *id, const char *bare,
		       const struct bus_addr *to, uint64_t now_ms, struct sm_isr_proof *proof,
		       store_sm_take_fn *fn, void *ud);
	/* Removes the session (if <epoch> still matches; 0 = any) and hands
	 * the unacked queue to <fn>. */
	int (*sm_destroy)(struct store *st, const char *id, uint32_t epoch,
			  store_sm_drain_fn *fn, void *ud);
	/* Sets (<set> 1) or clears the ISR token of session <id>; -ESTALE if
	 * <epoch> no longer owns it. */
	int (*sm_set_isr)(struct store *st, const char *id, uint32_t epoch, int set,
			  uint8_t mech, const uint8_t sealed[TOKEN_SEALED_LEN]);

	/* FAST tokens, keyed by account and user-agent id (XEP-0484: slots
	 * "current" and "new", store_sm.h). get: 0 or -ENOENT (then <out> is
	 * empty with version 0). cas: writes both slots (none valid = delete)
	 * only if the entry's version is still in->version, and sets
	 * in->version to the new one; 0, -ESTALE (written by someone else
	 * since: read again and decide again) or -errno. Tokens of an account
	 * vanish when its password changes or it is deleted, in the step that
	 * changes the user (the memory backend also notices the users.db that
	 * tetherctl rewrites in another process), and a CAS based on a read
	 * from before fails. */
	int (*fast_get)(struct store *st, const char *bare, const char *ua_id, struct fast_slots *out);
	int (*fast_cas)(struct store *st, const char *bare, const char *ua_id, struct fast_slots *in);

	/* Creates or replaces <n> users at once (bulk import), persisted
	 * with one write; all or nothing. Optional (NULL: store_user_put_many()
	 * loops over user_put). */
	int (*user_put_many)(struct store *st, size_t n, const char *const *bares,
			     const struct user_creds *creds);

	/* Asynchronous operations (store_op.h, private to store/). NULL: the
	 * memory backend's way, done by store.c with the calls above. A
	 * networked backend sends <op> on its handle's link (h->link, given to
	 * store_attach) and marks it ready when the reply is in; 0 or -errno
	 * (then the operation fails at once, with that error, in order). */
	int (*submit)(struct store_handle *h, struct store_op *op);
	/* A cancelled operation whose reply comes anyway: undo what it did
	 * if that matters (a take gives the session back). Optional. */
	void (*compensate)(struct store_handle *h, struct store_op *op);
	/* Administration (tetherctl), blocking; optional (NULL: -ENOTSUP,
	 * as with the memory backend, whose sessions live in tetherd's
	 * memory). sm_list: the sessions of account <bare> in the shared
	 * directory. notice: puts notice <kind> (BUS_KICK with <cond>, or
	 * STORE_NOTICE_DRAIN) for the session whose stored owner is <owner>
	 * (NULL for a drain) in the inbox of node <node>. */
	int (*sm_list)(struct store *st, const char *bare,
		       void (*fn)(void *ud, const struct store_session_info *i), void *ud);
	int (*notice)(struct store *st, const char *node, int kind, int cond, const char *owner);
	/* store_attach() made handle <h> (h->link set): a backend prepares
	 * the link (redis: what every new connection sends first). Optional. */
	void (*attach)(struct store_handle *h);
	/* Sends what <submit> held back to send as one command (redis: the
	 * deliveries of a loop turn); store_flush(). Optional. */
	void (*flush)(struct store_handle *h);
	/* store_detach() is freeing <h>: a backend frees what it keeps per
	 * handle (h->backend). Optional. */
	void (*detach)(struct store_handle *h);

	/* IM data: rosters, subscription states, offline messages (the calls
	 * of store_im.h, same arguments and results). Optional: NULL gives
	 * -ENOTSUP (the redis backend: it has IM data, but only through
	 * <submit>, as store_im.h's asynchronous calls). */
	int (*im_read)(struct store *st, const char *bare, uint64_t *ver, store_im_item_fn *fn,
		       void *ud);
	int (*im_set)(struct store *st, const char *bare, const struct im_item *it,
		      unsigned max_items, struct im_change *out);
	int (*im_remove)(struct store *st, const char *bare, const char *jid,
			 struct im_change *out, struct im_change *contact_out);
	int (*im_sub)(struct store *st, const char *user, const char *contact, enum sub_type type,
		      const char *stanza, unsigned max_items, struct im_sub_result *out);
	int (*im_offline_add)(struct store *st, const char *bare, const char *data, size_t len,
			      unsigned max);
	int (*im_offline_take)(struct store *st, const char *bare, store_im_msg_fn *fn, void *ud);
	int (*im_blocks)(struct store *st, const char *bare, store_im_jid_fn *fn, void *ud);
	int (*im_block)(struct store *st, const char *bare, enum im_block_op op,
			char *const *jids, size_t n);
};

struct store {
	const struct store_ops *ops;
	/* Bounds of a detached session's queue for deliveries by others
	 * ([sm] max_queue, max_queue_bytes; 0: none), store_set_queue_bounds. */
	unsigned queue_max;
	size_t queue_bytes;
	/* Test mode (store_set_test_delay): every completion through a
	 * handle waits 0 to test_delay extra loop turns. 0 in production. */
	unsigned test_delay;
};

/* Opens backend <backend> ("memory") with its data under directory <path>
 * (created if missing). On error writes a message into <err> and returns
 * NULL. */
struct store *store_open(const char *backend, const char *path, char *err, size_t errlen);

/* Users, keyed by the prepared bare JID "local@domain".
 * get: 0 and <out> filled, -ENOENT, or -errno.
 * put: creates or replaces; persisted (atomically) before it returns 0.
 * del: 0, -ENOENT, or -errno. */
static inline int store_user_get(struct store *st, const char *bare, struct user_creds *out)
{ return st->ops->user_get(st, bare, out); }
static inline int store_user_put(struct store *st, const char *bare, const struct user_creds *c)
{ return st->ops->user_put(st, bare, c); }
static inline int store_user_del(struct store *st, const char *bare)
{ return st->ops->user_del(st, bare); }
/* Creates or replaces the <n> users <bares>[i] with <creds>[i]
 * (tetherctl import). With a backend that has the op: one atomic write,
 * all or nothing, 0 or -errno (-EINVAL for a key that cannot be stored).
 * Without it: user_put in a loop, stopping at the first error (the users
 * before it stay written). The caller keeps <bares> and <creds>. */
static inline int store_user_put_many(struct store *st, size_t n, const char *const *bares,
				      const struct user_creds *creds)
{
	if (st->ops->user_put_many)
		return st->ops->user_put_many(st, n, bares, creds);
	for (size_t i = 0; i < n; i++) {
		int rc = st->ops->user_put(st, bares[i], &creds[i]);
		if (rc)
			return rc;
	}
	return 0;
}
/* Lists users (for tetherctl). 0, -ENOTSUP, or -errno. */
static inline int store_user_list(struct store *st, void (*fn)(void *ud, const char *bare_jid), void *ud)
{ return st->ops->user_list ? st->ops->user_list(st, fn, ud) : -ENOTSUP; }
static inline void store_close(struct store *st)
{ if (st) st->ops->close(st); }

static inline int store_sm_create(struct store *st, const struct sm_record *rec,
				  const char *bare, const char *resource)
{ return st->ops->sm_create(st, rec, bare, resource); }
static inline int store_sm_append(struct store *st, const char *id, uint32_t epoch,
				  struct sm_entry *e, struct bus_addr *moved_to)
{ return st->ops->sm_append(st, id, epoch, e, moved_to); }
static inline int store_sm_ack(struct store *st, const char *id, uint32_t epoch, uint32_t h)
{ return st->ops->sm_ack(st, id, epoch, h); }
static inline int store_sm_update(struct store *st, const struct sm_record *rec)
{ return st->ops->sm_update(st, rec); }
static inline int store_sm_take(struct store *st, const char *id, const char *bare,
				const struct bus_addr *to, uint64_t now_ms, struct sm_isr_proof *proof,
				store_sm_take_fn *fn, void *ud)
{ return st->ops->sm_take(st, id, bare, to, now_ms, proof, fn, ud); }
static inline int store_sm_destroy(struct store *st, const char *id, uint32_t epoch,
				   store_sm_drain_fn *fn, void *ud)
{ return st->ops->sm_destroy(st, id, epoch, fn, ud); }

static inline int store_sm_set_isr(struct store *st, const char *id, uint32_t epoch, int set,
				   uint8_t mech, const uint8_t sealed[TOKEN_SEALED_LEN])
{ return st->ops->sm_set_isr(st, id, epoch, set, mech, sealed); }
static inline int store_fast_get(struct store *st, const char *bare, const char *ua_id,
				 struct fast_slots *out)
{ return st->ops->fast_get(st, bare, ua_id, out); }
static inline int store_fast_cas(struct store *st, const char *bare, const char *ua_id,
				 struct fast_slots *in)
{ return st->ops->fast_cas(st, bare, ua_id, in); }

/* ---- asynchronous operations ---------------------------------------------
 *
 * A worker attaches once and issues operations through its handle; each
 * completes through its callback in store_poll() on that worker, never
 * inside the call that issued it (so a caller never re-enters itself), in
 * the order the operations were issued. A callback's context (<ud>) must
 * be something that stays valid, or the caller must cancel the operation
 * before that context goes away (a connection closed mid-operation cancels
 * what it has pending). The memory backend looks users up at once, under
 * its locks, and defers only the completion; SM takes and FAST reads and
 * writes it performs when they complete (so a cancelled one never
 * happened, see store_sm_take_async). A networked backend does the work in
 * between. */

/* A handle for the calling worker. <link> is the worker's connection to a
 * networked backend (redis: its struct rlink), NULL for the memory
 * backend. NULL on OOM. */
struct store_handle *store_attach(struct store *st, void *link);
/* Cancels what is still pending on <h> (no callback runs) and frees it. */
void store_detach(struct store_handle *h);
/* Frees the finished operations <h> keeps for reuse (after a burst, when
 * the worker hands memory back). */
void store_trim(struct store_handle *h);
/* Sends the operations the backend holds back to send together (the
 * redis backend sends the deliveries issued in a row as one command): the
 * worker calls it once per loop turn, before it waits for completions. A
 * held operation is pending but not sent; anything else issued after it
 * sends it first, so the store sees operations in issue order. */
void store_flush(struct store_handle *h);
/* Runs the completions that are due at this loop turn; the worker calls it
 * once per turn. Callbacks may issue new operations: those complete at a
 * later turn. Returns the number of callbacks run. */
size_t store_poll(struct store_handle *h);
/* Operations issued on <h> that have neither completed nor been
 * cancelled: while > 0 the worker must not sleep without a timeout. */
size_t store_pending(const struct store_handle *h);
/* Operations issued on <h> that wait for the store itself: on a backend
 * that carries them out elsewhere (a networked one), those issued and not
 * answered yet; a sender is paused above a bound of these. The memory
 * backend performs each operation when it is issued (or when it is due,
 * a fixed number of turns later) and completes it at that store_poll()
 * turn: it never falls behind, so 0. */
size_t store_backlog(const struct store_handle *h);
/* 1 when store_poll() would run a completion at the next turn without
 * waiting for anything (the worker must then not sleep). */
int store_turn_due(const struct store_handle *h);
/* Its callback will not run; what its result holds is released. An
 * operation can be cancelled until its callback starts; it is invalid once
 * its callback has run or it was cancelled (forget it in the callback). */
void store_op_cancel(struct store_op *op);
/* Cancels every operation pending on <h> with context <ud> (a stream that
 * closes with writes in flight: they still happen, their callbacks do
 * not run). */
void store_cancel_ud(struct store_handle *h, void *ud);

/* Test mode: every completion waits a random 0..<max_turns> extra loop
 * turns (still in issue order), so tests can find callers that assume a
 * store answers at once. */
static inline void store_set_test_delay(struct store *st, unsigned max_turns)
{ st->test_delay = max_turns; }

/* What a delivery by another node may put in a detached session's queue
 * (store_deliver_async reports a full one instead of writing it). */
static inline void store_set_queue_bounds(struct store *st, unsigned max, size_t bytes)
{ st->queue_max = max; st->queue_bytes = bytes; }

/* store_user_get() through <h>: later, <fn>(<ud>, 0, creds) or (<ud>,
 * -ENOENT or -errno, NULL); <creds> is borrowed for the call (wiped
 * after). Returns the operation, or NULL if it could not be issued (out
 * of memory; then <fn> is never called). */
typedef void store_user_fn(void *ud, int err, const struct user_creds *creds);
struct store_op *store_user_get_async(struct store_handle *h, const char *bare,
				      store_user_fn *fn, void *ud);

/* store_sm_take() through <h>: later, <fn>(<ud>, err, rec, resource, q,
 * n, resp) with the arguments of store_sm_take_fn (borrowed for the call:
 * take a reference to a message to keep it); <resp> is the responder hash
 * when a <proof> matched, else NULL. <id>, <bare>, <to> and <proof> are
 * copied (the proof is wiped with the operation).
 *
 * Orphaned takeovers: the take is performed when the operation completes,
 * right before <fn> runs, not when it is issued. So a cancelled take (the
 * stream that asked for it went away) never happened: the session stays
 * with its previous owner, detached and resumable, instead of belonging to
 * a stream that no longer exists. The memory backend can do that because
 * it answers at once; a networked backend, whose take may already have been
 * applied when the cancel comes, must compensate instead (run the
 * completion in a cancelled mode that hands the session back). Returns the
 * operation, or NULL (out of memory; <fn> is never called). */
typedef void store_sm_taken_fn(void *ud, int err, const struct sm_record *rec,
			       const char *resource, const struct sm_entry *q, size_t n,
			       const uint8_t *resp);
struct store_op *store_sm_take_async(struct store_handle *h, const char *id, const char *bare,
				     const struct bus_addr *to, const struct sm_isr_proof *proof,
				     store_sm_taken_fn *fn, void *ud);

/* FAST (XEP-0484) through <h>, performed when they complete (like the
 * take, so a cancelled compare-and-set never wrote anything).
 * get: later <fn>(<ud>, 0 or -ENOENT, slots) (<slots> borrowed, wiped
 * after). cas: later <fn>(<ud>, 0 / -ESTALE / -errno, slots) with <slots>
 * as written (its new version). <bare>, <ua_id>, <in> are copied. NULL:
 * out of memory. */
typedef void store_fast_fn(void *ud, int err, const struct fast_slots *slots);
struct store_op *store_fast_get_async(struct store_handle *h, const char *bare, const char *ua_id,
				      store_fast_fn *fn, void *ud);
struct store_op *store_fast_cas_async(struct store_handle *h, const char *bare, const char *ua_id,
				      const struct fast_slots *in, store_fast_fn *fn, void *ud);

/* ---- the owner's writes, through <h> ----------------------------------
 *
 * Each is the synchronous call of the same name, issued now (the memory
 * backend performs it at once; a networked one sends it, pipelined behind
 * what this worker issued before) and completed later, in order, with
 * <fn>(<ud>, err, owner, e): 0, -ESTALE (the session was taken over;
 * <owner> is its owner now when known, else NULL), -ENOENT, -ERANGE (ack)
 * or -errno (-ENOTCONN, -ETIMEDOUT: the store cannot be reached); <e> is
 * the entry an append wrote (borrowed), else NULL. A create that took the
 * resource from another session (shared store) gives 0 with <owner> that
 * session's owner: the newer bind wins, the caller has it kicked. <fn> may
 * be NULL. Arguments are copied; append takes its own reference to
 * e->msg. NULL: out of memory (nothing was issued, <fn> never runs). */
typedef void store_write_fn(void *ud, int err, const struct bus_addr *owner,
			    const struct sm_entry *e);
struct store_op *store_sm_create_async(struct store_handle *h, const struct sm_record *rec,
				       const char *bare, const char *resource,
				       store_write_fn *fn, void *ud);
struct store_op *store_sm_append_async(struct store_handle *h, const char *id, uint32_t epoch,
				       const struct sm_entry *e, store_write_fn *fn, void *ud);
struct store_op *store_sm_ack_async(struct store_handle *h, const char *id, uint32_t epoch,
				    uint32_t hval, store_write_fn *fn, void *ud);
struct store_op *store_sm_update_async(struct store_handle *h, const struct sm_record *rec,
				       store_write_fn *fn, void *ud);
struct store_op *store_sm_set_isr_async(struct store_handle *h, const char *id, uint32_t epoch,
					int set, uint8_t mech,
					const uint8_t sealed[TOKEN_SEALED_LEN],
					store_write_fn *fn, void *ud);
/* store_sm_destroy() through <h>: later <fn>(<ud>, err, rec, bare,
 * resource, q, n) as store_sm_drain_fn (the callee owns the references in
 * <q>; if the operation is cancelled they are dropped). */
struct store_op *store_sm_destroy_async(struct store_handle *h, const char *id, uint32_t epoch,
					store_sm_drain_fn *fn, void *ud);

/* ---- notices to another node (cluster) -----------------------------------
 *
 * Puts notice <kind> (BUS_KICK with stream error <cond>, or BUS_MOVED) for
 * session <to>, which lives on another node, in that node's inbox (redis:
 * a stream the node reads, store/redis_inbox.c). At most once: a notice
 * the node misses (it was down, or its link was) changes nothing that
 * fencing does not already decide, since its session's next write fails
 * with -ESTALE. Fire and forget: 0 once issued, -ENOMEM; a failure later
 * is logged. The memory backend has no other node: -ENOTSUP. */
int store_node_notice(struct store_handle *h, const struct bus_addr *to, int kind, int cond);

/* ---- delivery to sessions anywhere (cluster) --------------------------------
 *
 * Route to sessions: appends <m> to the queue of each session of account
 * <bare> that it goes to, found in the shared directory (resource
 * <resource>, or for "" the available resources of the highest
 * non-negative priority; for presence "*" every session and "+" the
 * available ones, except this node's), and tells each owner's node. Later
 * <fn>(<ud>, err, t, n, m) with the sessions it went to (<n> entries of <t>:
 * each one's owner and the entry's number in its queue; 0: none matched,
 * the caller decides: another resource, offline, a bounce) and the message
 * (borrowed). The memory backend has no directory beyond the node's own
 * router: NULL, with nothing issued. NULL also on OOM. */
struct store_target {
	struct bus_addr owner;   /* the session's owner when it was appended to */
	uint32_t seq;            /* the entry's number in that session's queue */
	int full;                /* not appended: a detached queue at its bounds */
	int direct;              /* a session without XEP-0198 (seq 0): its owner's
				  * node hands it over; if that is this node, the
				  * caller does (deliver_targets_here) */
};
#define STORE_TARGETS_MAX 16     /* sessions one delivery reports (more are appended) */
typedef void store_delivered_fn(void *ud, int err, const struct store_target *t, size_t n,
				struct rmsg *m);
/* The sender's SM session, whose inbound count the same call writes
 * (h_in), fenced by its epoch: the count and the routing in one step, so a
 * crash between them neither loses the stanza nor has it sent twice. A
 * sender taken over meanwhile gets -ESTALE and nothing is delivered. */
struct store_sender {
	const char *bare;
	const char *sid;
	uint32_t epoch;
	uint32_t h_in;
};
struct store_op *store_deliver_async(struct store_handle *h, const char *bare,
				     const char *resource, struct rmsg *m,
				     const struct store_sender *from,
				     store_delivered_fn *fn, void *ud);

/* The deliveries (store_deliver_async) of <h> pending with <ud>, whose
 * issuer goes away before they complete: they complete with <fn>(<new_ud>,
 * ...) instead, so that what the store decided (the targets, or nobody:
 * offline storage, a bounce) still happens without their issuer. */
void store_orphan_deliveries(struct store_handle *h, void *ud, store_delivered_fn *fn,
			     void *new_ud);
/* 1 if the store is shared with other nodes (delivery may go through it). */
int store_shared(const struct store_handle *h);

/* ---- direct sessions: bound without XEP-0198 (cluster) ----------------------
 *
 * A session without a queue is reachable from other nodes through its
 * directory entry in the shared store, which names its stream <owner>
 * (store/redis_lib.lua, DIRECT SESSIONS); store_deliver_async reports it
 * with <direct> set and puts the stanza in the owner node's inbox.
 * SET (at bind): writes the entry for <resource> of <bare> with presence
 * <available>/<priority>; it replaces whatever held the resource, and
 * <fn>(<ud>, 0, old, NULL) names that session's owner if it was another
 * stream's (the newer bind wins: the caller kicks it), else <old> NULL.
 * UPDATE: the presence, only if the entry is still <owner>'s. DEL:
 * check-and-delete, only if the entry is still <owner>'s (<resource> "":
 * any entry of <bare> that names <owner>). Errors as for
 * the owner's writes. Arguments are copied; <fn> may be NULL. NULL: the
 * store is not shared (its single node routes through its own router:
 * nothing to write) or out of memory; nothing was issued. */
enum store_direct {
	STORE_DIRECT_SET = 0,
	STORE_DIRECT_UPDATE,
	STORE_DIRECT_DEL,
};
struct store_op *store_direct_async(struct store_handle *h, enum store_direct what,
				    const char *bare, const char *resource,
				    const struct bus_addr *owner, int available, int priority,
				    store_write_fn *fn, void *ud);

/* ---- directed presence (cluster) ---------------------------------------------
 *
 * The JIDs a session sent directed presence to (RFC 6121 §4.6), which it
 * owes unavailable presence when it ends, kept in a shared store beside
 * the session so that the reaper can send that presence for a session
 * whose node died (cluster.h). The stream keeps the list in memory as well
 * and writes only changes: ADD <jid> (-EDQUOT when <max> are kept), DEL
 * <jid>, CLEAR (its unavailable broadcast undid them all). Written only
 * while <owner> (the stream) owns the session: XEP-0198 session <sid>,
 * or, <sid> NULL, the direct entry of <resource>; else nothing happens (0
 * all the same). The set is removed with the session (its end, expiry or
 * reaping). Errors as for the owner's writes; <fn> may be NULL; arguments
 * are copied. NULL: the store is not shared (one node: its memory is
 * enough) or out of memory; nothing was issued. */
enum store_dpres {
	STORE_DPRES_ADD = 0,
	STORE_DPRES_DEL,
	STORE_DPRES_CLEAR,
};
struct store_op *store_dpres_async(struct store_handle *h, enum store_dpres what,
				   const char *bare, const char *sid, const char *resource,
				   const struct bus_addr *owner, const char *jid, unsigned max,
				   store_write_fn *fn, void *ud);

/* A no-op that completes after everything issued on <h> before it:
 * <fn>(<ud>) then. For back-pressure (a stream stops parsing until the
 * store caught up). NULL: out of memory. */
struct store_op *store_barrier_async(struct store_handle *h, void (*fn)(void *ud), void *ud);

/* Backend constructors, called by store_open() only (callers use
 * store_open()). Same contract as store_open(). */
struct store *store_memory_open(const char *path, char *err, size_t errlen);
/* <path> is the Redis address ("host:port" or "unix:/path"). Connects
 * (blocking) and loads the FUNCTION library if it is missing. The
 * synchronous user calls block (tetherctl); a worker goes through its
 * handle (store_attach with its rlink) and the *_async calls; the
 * synchronous session and FAST calls return -ENOTSUP. Owner addresses
 * name nodes by nodes.h: nodes_set_self() before the first operation. */
struct store *store_redis_open(const char *path, char *err, size_t errlen);

#endif /* TETHER_STORE_H */
