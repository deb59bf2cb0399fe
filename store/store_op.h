/* store/store_op.h - asynchronous operations and per-worker handles, shared by store.c and the backends (private to store/). */
#ifndef TETHER_STORE_OP_H
#define TETHER_STORE_OP_H

#include <stdint.h>

#include "tether/store.h"

/* What an operation asks for; a networked backend encodes its command and
 * decodes its reply by kind (its part of the operation follows the header
 * in memory, as the structs below lay it out). */
enum store_op_kind {
	STORE_OP_USER_GET = 1,
	STORE_OP_SM_TAKE,
	STORE_OP_FAST_GET,
	STORE_OP_FAST_CAS,
	STORE_OP_SM_CREATE,
	STORE_OP_SM_APPEND,
	STORE_OP_SM_ACK,
	STORE_OP_SM_UPDATE,
	STORE_OP_SM_SET_ISR,
	STORE_OP_SM_DESTROY,
	STORE_OP_NODE_NOTICE,
	STORE_OP_BARRIER,
	STORE_OP_DELIVER,
	STORE_OP_IM_ROSTER,          /* store_im.h: the whole roster */
	STORE_OP_IM_CONTACTS,        /* contacts by subscription, pending requests */
	STORE_OP_IM_SET,
	STORE_OP_IM_REMOVE,
	STORE_OP_IM_SUB,
	STORE_OP_IM_OFFLINE_ADD,
	STORE_OP_IM_OFFLINE_TAKE,
	STORE_OP_IM_BLOCKS,          /* XEP-0191: read the blocklist */
	STORE_OP_IM_BLOCK,           /* ...change it */
	STORE_OP_IM_OFFLINE_MOVE,    /* offline messages into a XEP-0198 session's queue */
	STORE_OP_DIRECT,             /* a direct session's directory entry */
	STORE_OP_DPRES,              /* a session's directed-presence recipients */
};

/* One operation issued on a handle. It waits in the handle's FIFO and
 * completes in issue order: with the memory backend at the store_poll()
 * turn it is due; with a backend that submits it (store_ops.submit) once
 * its reply is in (<ready>) and everything issued before it completed. */
struct store_op {
	struct store_op *next;
	struct store_handle *h;
	uint64_t due;                           /* memory: the store_poll() turn */
	uint64_t issued_us;                     /* monotonic, for the latency histogram */
	const int *err;                         /* its kind's result, for the error count */
	int cancelled;
	int ready;                              /* submitted: the result is in */
	enum store_op_kind kind;
	void *ud;                               /* the caller's context */
	void (*complete)(struct store_op *op);  /* calls the caller's callback */
	void (*release)(struct store_op *op);   /* drops what the op holds */
};

struct store_handle {
	struct store *st;
	void *link;                     /* the backend's connection of this worker */
	struct store_op *head, **tail;  /* FIFO; <due> never decreases along it */
	uint64_t turn;                  /* store_poll() calls so far */
	uint64_t last_due;
	size_t pending;                 /* issued, not completed, not cancelled */
	/* Finished owner's writes kept for the next ones (two per stanza:
	 * no malloc and free each time). */
	struct store_op *spare;
	unsigned nspare;
	void *backend;                  /* the backend's own state (ops->detach frees it) */
};

/* A backend that submits marks an operation's result in (or failed, with
 * the error stored in its kind's <err>) from its reply callback. */
static inline void store_op_ready(struct store_op *op)
{
	op->ready = 1;
}

/* ---- the operations' own parts --------------------------------------- */

struct store_user_op {
	struct store_op op;     /* first */
	store_user_fn *fn;
	char *bare;
	int err;
	struct user_creds creds;
};

struct store_take_op {
	struct store_op op;     /* first */
	store_sm_taken_fn *fn;
	char *id, *bare;
	struct bus_addr to;
	int has_proof;
	struct sm_isr_proof proof;
	/* the result */
	int err;
	int has_rec;
	struct sm_record rec;
	char *resource;
	char *im;               /* rec.im, copied out of the backend's (or NULL) */
	struct sm_entry *q;     /* a reference to each message */
	size_t n;
};

struct store_fast_op {
	struct store_op op;     /* first */
	store_fast_fn *fn;
	char *bare, *ua_id;
	struct fast_slots slots;  /* in: what a CAS writes; out: what was read or written */
	int err;
};

/* The owner's writes: create, append, ack, update, set_isr. */
struct store_write_op {
	struct store_op op;     /* first */
	store_write_fn *fn;
	struct sm_record rec;   /* create, update: the record; others: id and epoch */
	char *bare, *resource;  /* create */
	struct sm_entry e;      /* append: a reference to e.msg */
	uint32_t h;             /* ack */
	int set;                /* set_isr: 1 set, 0 clear */
	uint8_t isr_mech;       /* set_isr: the token's mechanism (enum ht_cb)... */
	uint8_t isr_sealed[TOKEN_SEALED_LEN]; /* ...and the token, sealed */
	char *im;               /* update: rec.im, copied (or NULL) */
	int err;
	struct bus_addr owner;  /* append -ESTALE: the owner now */
};

struct store_destroy_op {
	struct store_op op;     /* first */
	store_sm_drain_fn *fn;
	char id[SM_ID_LEN + 1];
	uint32_t epoch;
	int err;
	int has_rec;
	struct sm_record rec;
	char *bare, *resource;
	struct sm_entry *q;     /* the caller's callback takes these references */
	size_t n;
};

/* A notice to another node's inbox (store_node_notice). */
struct store_notice_op {
	struct store_op op;     /* first */
	struct bus_addr to;
	int kind;               /* enum bus_kind: BUS_KICK or BUS_MOVED */
	int cond;
	int err;
};

/* A stanza routed to the sessions of an account (store_deliver_async). */
struct store_deliver_op {
	struct store_op op;     /* first */
	store_delivered_fn *fn;
	char *bare, *resource;
	struct rmsg *msg;       /* one reference */
	char *from_bare;        /* the sender's session whose h_in it writes, or NULL */
	char from_sid[SM_ID_LEN + 1];
	uint32_t from_epoch, from_h;
	int err;
	unsigned batch;         /* redis: the first of a batch sent as one command: its size */
	size_t n;               /* sessions it was appended to */
	struct store_target t[STORE_TARGETS_MAX]; /* the first of them */
};

/* A direct session's directory entry (store_direct_async). */
struct store_direct_op {
	struct store_op op;     /* first */
	store_write_fn *fn;
	enum store_direct what;
	char *bare, *resource;
	struct bus_addr owner;  /* the session */
	int available, priority;
	int err;
	int replaced;           /* SET: <old> is the owner of the session it replaced */
	struct bus_addr old;
};

/* A session's directed-presence recipients (store_dpres_async). */
struct store_dpres_op {
	struct store_op op;     /* first */
	store_write_fn *fn;
	enum store_dpres what;
	char *bare, *resource;  /* <resource>: the direct entry's, "" for a XEP-0198 session */
	char sid[SM_ID_LEN + 1]; /* the XEP-0198 session, "" for a direct one */
	char *jid;
	unsigned max;
	struct bus_addr owner;  /* the stream */
	int err;
};

/* Completes once everything issued before it did (store_barrier_async). */
struct store_barrier_op {
	struct store_op op;     /* first */
	void (*fn)(void *ud);
	int err;
};

/* Queues <op> (filled by its issuer) behind what <h> issued before: the
 * memory backend completes it at a later store_poll() turn, a submitting
 * backend gets it now (*<err> set if that fails). For store_*.c. */
void store_op_enqueue(struct store_handle *h, struct store_op *op, int *err);

/* The IM operations (store_im.h), one layout for all their kinds. */
struct store_im_op {
	struct store_op op;     /* first */
	union {
		store_im_roster_fn *roster;
		store_im_contacts_fn *contacts;
		store_im_change_fn *change;
		store_im_sub_fn *sub;
		store_im_done_fn *done;
		store_im_msgs_fn *msgs;
		store_im_blocks_fn *blocks;
		store_im_moved_fn *moved;
	} fn;
	/* arguments */
	char *bare;             /* the account (sub: the user) */
	char *jid;              /* remove: the item; sub: the contact */
	struct im_item item;    /* set */
	unsigned max;           /* set, sub: max_roster_items; offline add: max_offline */
	unsigned want;          /* contacts: IM_WANT_* */
	enum sub_type type;     /* sub */
	char *data;             /* sub: the stanza; offline add: the message */
	size_t len;
	/* results */
	int err;
	uint64_t ver;
	struct im_item *items;  /* roster: the visible items */
	char **strs;            /* contacts: JIDs; offline take: messages */
	size_t *lens;           /* offline take: their lengths */
	uint8_t *states;        /* contacts: their states */
	size_t n, cap;
	char **pending;         /* contacts: stored requests */
	size_t np, capp;
	struct im_change change, contact;
	struct im_sub_result sub;
	enum im_block_op bop;   /* block */
	char **in;              /* block: the JIDs; offline move (memory): the blocklist */
	size_t nin, capin;
	char *sid;              /* offline move: the session, owned with <epoch> */
	uint32_t epoch;
	struct sm_entry *q;     /* offline move: the entries, one message reference each */
	size_t nq, capq;
	void (*ud_free)(void *ud); /* store_im_own_ud: frees op.ud unless the callback ran */
};

/* For a backend that submits: adds to <o>'s result what a read gives, the
 * way the memory backend's read feeds it (store_im.c), so both hand the
 * caller the same. item: one roster item of a roster read (the visible
 * ones, without their pending request) or of a contacts read (by <o>'s
 * IM_WANT_*). msg: one message of an offline take. jid: one blocklist
 * entry. Out of memory: o->err = -ENOMEM. */
void store_im_collect_item(struct store_im_op *o, const struct im_item *it);
void store_im_collect_msg(struct store_im_op *o, const char *data, size_t len);
void store_im_collect_jid(struct store_im_op *o, const char *jid);
/* entry: one entry an offline move appended (its message reference passes
 * to <o>). 0, or -ENOMEM (o->err set; the reference is dropped). */
int store_im_collect_entry(struct store_im_op *o, const struct sm_entry *e);

#endif /* TETHER_STORE_OP_H */
