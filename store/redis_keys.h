/* store/redis_keys.h - the Redis backend's private parts: its struct, key names, reply codec (private to store/). */
#ifndef TETHER_STORE_REDIS_KEYS_H
#define TETHER_STORE_REDIS_KEYS_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "tether/nodes.h"
#include "tether/store.h"

/* ---- keys (the layout is in store/redis_lib.lua's header) ---------------- */

#define RKEY_PREFIX "t:"
#define RKEY_BARE_MAX 1092        /* bytes of a bare JID we make keys for */
#define RKEY_LEN (RKEY_BARE_MAX + 64)

/* Writes key "t:{<bare>}:<what>" (or "t:{<bare>}:<what>:<sid>" when <sid>
 * is not NULL) into <out> (RKEY_LEN bytes) and returns its length, or
 * -EINVAL for a bare JID longer than RKEY_BARE_MAX. */
int rkey(char out[RKEY_LEN], const char *bare, const char *what, const char *sid);
/* Writes the inbox key "t:{node:<name>}:in" of node <node> (a name, an
 * incarnation "<name>.<boot>" or a whole owner address: the name part
 * counts) and returns its length, or -EINVAL. */
int rinbox_key(char out[RKEY_LEN], const char *node);
#define RINBOX_MAXLEN "10000"  /* entries a node's inbox keeps (about: XADD MAXLEN ~) */

/* ---- the backend ------------------------------------------------------- */

struct shtab;

struct redis_store {
	struct store st;        /* first: store_* casts back */
	pthread_mutex_t lock;   /* blocking path: one hiredis context, one caller at a time */
	redisContext *rc;
	char addr[256];
	/* SM id -> bare JID of the sessions this node created or took: the
	 * owner's writes name a session by id only (store.h), and every key
	 * of a session carries its account (redis_async.c). */
	struct shtab *sids;
};

/* redis_async.c: the store_ops hooks of operations through a worker's rlink. */
int rstore_submit(struct store_handle *h, struct store_op *op);
void rstore_compensate(struct store_handle *h, struct store_op *op);
void rstore_attach(struct store_handle *h);
/* A reply callback's result as -errno (0: not an error) for <op>
 * (redis_async.c; also loads the library again if it went missing). */
int rstore_reply_err(struct store_op *op, const redisReply *r, const char *err);

/* redis_im.c: the IM operations (store_im.h), the same hooks for their
 * kinds. submit: 0 or -errno as rstore_submit. compensate: puts back the
 * messages of an offline take whose caller went away. */
int rstore_im_submit(struct store_handle *h, struct store_op *op);
void rstore_im_compensate(struct store_handle *h, struct store_op *op);

/* redis_deliver.c: deliveries (store_deliver_async). hold: the submit of
 * one, held to go with the next ones as one FCALL (0 or -errno as
 * rstore_submit); flush: sends those held (store_flush, and rstore_submit
 * before any other operation); detach: frees what the handle kept. */
struct store_deliver_op;
int rstore_deliver_hold(struct store_handle *h, struct store_deliver_op *d);
void rstore_deliver_flush(struct store_handle *h);
void rstore_deliver_detach(struct store_handle *h);

/* redis_direct.c: submits a STORE_OP_DIRECT (store_direct_async). */
int rstore_submit_direct(struct store_handle *h, struct store_op *op);
/* ...and a STORE_OP_DPRES (store_dpres_async). */
int rstore_submit_dpres(struct store_handle *h, struct store_op *op);
/* The sid table's life, with the store's. 0 or -ENOMEM. */
int rstore_sids_init(struct redis_store *s);
void rstore_sids_free(struct redis_store *s);

/* ---- the codec (redis_codec.c): replies of the library, socket-free ----- */

/* An error reply of the library ("ENOENT no such session", "ESTALE a/0/1/2
 * 3", "EDQUOT roster full") as -errno; -EIO for one that is not ours
 * (Redis's own "ERR ..."). */
int rcodec_errno(const char *str, size_t len);
/* 1 if the error reply says the FUNCTION library is missing (a Redis that
 * restarted without persistence, or a FUNCTION FLUSH). */
int rcodec_nofunc(const char *str, size_t len);

/* Owner addresses as stored: "<node>/<worker>/<slot>/<gen>", <node> being
 * a node incarnation: ours (BUS_NODE_SELF) is "<name>.<boot>" (nodes.h),
 * and only that reads back as BUS_NODE_SELF; any other is interned as
 * written (an owner left by a previous run of this node is not ours).
 * fmt: the length written (NUL-terminated), or -EINVAL (unknown node, or
 * <len> too small). parse: 0, or -EINVAL (<out> zeroed). */
#define RCODEC_OWNER_MAX (NODES_ID_MAX + 3 * 11 + 1)
int rcodec_owner_fmt(const struct bus_addr *a, char *out, size_t len);
int rcodec_owner_parse(const char *s, size_t len, struct bus_addr *out);
/* The owner named by an "ESTALE <owner> <epoch>" error. 0 or -EINVAL. */
int rcodec_stale_owner(const char *str, size_t len, struct bus_addr *out);

/* A queue entry's meta part for <m> (redis_lib.lua, QUEUE ENTRIES): the
 * kind as one digit, then from, to, id and type, each NUL-terminated.
 * Returns its length; writes it into <out> only if it fits in <len>. */
size_t rcodec_meta(const struct rmsg *m, char *out, size_t len);
/* Decodes one queue entry "<seq>:<stamp>:<meta><payload>" into <e> with a
 * new message (one reference). 0, -EINVAL (not an entry), -ENOMEM. */
int rcodec_entry(const char *s, size_t len, struct sm_entry *e);

/* A record in the library's REC order (epoch, owner, res, h_in, out, acked,
 * max, att, avail, prio, exp) into <rec> (id <sid>; no ISR token;
 * expires_ms 0: Redis's clock is not ours) and its resource into <res>
 * (<reslen> bytes, NUL-terminated). 0 or -EINVAL. */
int rcodec_record(const redisReply *r, const char *sid, struct sm_record *rec, char *res,
		  size_t reslen);
/* The {record, queue} reply of destroy, or {record, queue, IM state, dead}
 * of take (the state is read by the caller; rec->owner_dead = dead).
 * <q>/<n>: the entries,
 * each with a reference, in one malloc'd array (NULL, 0 if empty, or when
 * <want_q> is 0). <res> as for rcodec_record. 0, -EINVAL (the reply is not
 * one; nothing is left allocated) or -ENOMEM. */
int rcodec_taken(const redisReply *r, const char *sid, struct sm_record *rec, char *res,
		 size_t reslen, int want_q, struct sm_entry **q, size_t *n);

/* FAST slots as one opaque field: RCODEC_FAST_LEN bytes. */
#define RCODEC_FAST_SLOT (1 + 1 + 8 + TOKEN_SEALED_LEN)
#define RCODEC_FAST_LEN (2 * RCODEC_FAST_SLOT)
void rcodec_fast_pack(const struct fast_slots *in, uint8_t out[RCODEC_FAST_LEN]);
/* 0, or -EINVAL (wrong length; <out> zeroed). out->version is untouched. */
int rcodec_fast_unpack(const char *s, size_t len, struct fast_slots *out);

/* Fills <out> from the HGETALL-shaped array <r> of tether_user_get.
 * -ENOENT for an empty one, -EIO for a record that is not ours. */
int rcodec_creds(const redisReply *r, struct user_creds *out);

#endif /* TETHER_STORE_REDIS_KEYS_H */
