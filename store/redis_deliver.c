/* store/redis_deliver.c - the Redis backend's deliveries to sessions: those a worker issues in a row go as one FCALL tether_deliver_many.
 *
 * A flood of messages between nodes is one delivery per stanza, and on
 * Redis each was one FCALL of tether_deliver: a function call, a dozen
 * commands inside it and an XADD to the owner node's inbox per stanza.
 * Here a delivery is held (rstore_deliver_hold) instead of sent, and the
 * deliveries held in a row go as one call (rstore_deliver_flush): at the
 * end of the worker's loop turn (store_flush), before any other operation
 * of the handle (so Redis sees the handle's operations in issue order),
 * or once BATCH_MAX of them or BATCH_BYTES of stanzas wait. In the
 * library the call is one step: each queue gets its entries in one RPUSH,
 * each sender's session its count in one HSET, each node its notices in
 * one inbox entry. The reply has one element per delivery, each decoded
 * as tether_deliver's reply was.
 *
 * Held deliveries are the last operations of the handle's FIFO, in a row:
 * h->backend's <first> and the <n> - 1 that follow it. Nothing else is
 * submitted without sending them first, so the row is never broken. The
 * arguments are built at flush time into a buffer kept per handle (no
 * allocation per stanza once it has grown); rlink copies them. */
#include "redis_keys.h"
#include "store_op.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tether/bus.h"
#include "tether/nodes.h"
#include "tether/rlink.h"
#include "tether/rmsg.h"

#define BATCH_MAX 128              /* deliveries in one call */
#define BATCH_BYTES (128u << 10)   /* ...and stanza bytes, about */
#define HEAD_ARGS 6                /* FCALL, name, numkeys, max entries, max bytes, self */
#define ONE_KEYS 2                 /* a delivery's keys: directory [, sender's record] */
#define ONE_ARGS 10                /* ...and arguments (redis_lib.lua, deliver_many) */
#define ARGS_MAX (HEAD_ARGS + BATCH_MAX * (ONE_KEYS + ONE_ARGS))

struct rbatch {
	struct store_deliver_op *first; /* the first held delivery, NULL: none */
	unsigned n;
	size_t bytes;
	/* the command being built */
	int argc;
	const char *argv[ARGS_MAX];     /* NULL: at <off> in <text> (it may move while built) */
	size_t lens[ARGS_MAX], off[ARGS_MAX];
	char *text;                     /* keys, numbers, meta parts; kept */
	size_t used, cap;
};

static int reserve(struct rbatch *b, size_t more)
{
	if (b->used + more <= b->cap)
		return 0;
	size_t cap = b->cap ? b->cap : 4096;
	while (cap < b->used + more)
		cap *= 2;
	char *t = realloc(b->text, cap);
	if (!t)
		return -ENOMEM;
	b->text = t;
	b->cap = cap;
	return 0;
}

static void arg_ext(struct rbatch *b, const char *p, size_t len)
{
	b->argv[b->argc] = p;
	b->lens[b->argc++] = len;
}

/* An argument copied into the text. 0 or -ENOMEM. */
static int arg_copy(struct rbatch *b, const char *p, size_t len)
{
	if (reserve(b, len))
		return -ENOMEM;
	memcpy(b->text + b->used, p, len);
	b->argv[b->argc] = NULL;
	b->off[b->argc] = b->used;
	b->lens[b->argc++] = len;
	b->used += len;
	return 0;
}

static int arg_u(struct rbatch *b, uint64_t v)
{
	char n[24];
	return arg_copy(b, n, (size_t)snprintf(n, sizeof(n), "%" PRIu64, v));
}

static int arg_meta(struct rbatch *b, const struct rmsg *m)
{
	size_t ml = rcodec_meta(m, NULL, 0);
	if (reserve(b, ml))
		return -ENOMEM;
	rcodec_meta(m, b->text + b->used, ml);
	b->argv[b->argc] = NULL;
	b->off[b->argc] = b->used;
	b->lens[b->argc++] = ml;
	b->used += ml;
	return 0;
}

static struct store_deliver_op *next_of(struct store_deliver_op *d)
{
	return (struct store_deliver_op *)d->op.next;
}

/* The keys of delivery <d>: its directory [, its sender's record]. */
static int add_keys(struct rbatch *b, const struct store_deliver_op *d)
{
	char k[RKEY_LEN];
	int kl = rkey(k, d->bare, "dir", NULL);
	if (kl < 0 || arg_copy(b, k, (size_t)kl))
		return -ENOMEM;
	if (!d->from_bare)
		return 0;
	kl = rkey(k, d->from_bare, "s", d->from_sid);
	return kl < 0 || arg_copy(b, k, (size_t)kl) ? -ENOMEM : 0;
}

/* Whom the recipient's blocklist is checked against (XEP-0191): the
 * stanza's sender, unless it is the account itself (its own JIDs are never
 * blocked) or the stanza is one the session acts on (<unqueued>: a probe,
 * the server's internal types), which the session filters itself. */
static const char *block_subject(const struct store_deliver_op *d, int unqueued)
{
	const char *from = d->msg->from;
	size_t l = strlen(d->bare);
	if (unqueued || (!strncmp(from, d->bare, l) && (!from[l] || from[l] == '/')))
		return "";
	return from;
}

/* Delivery <d>'s ONE_ARGS arguments. */
static int add_args(struct rbatch *b, const struct store_deliver_op *d, const char *self)
{
	const char *type = d->msg->type, *res = d->resource;
	int presence = !strcmp(res, "*") || !strcmp(res, "+");
	/* A probe, and the server's internal types ("tether-*": roster and
	 * blocklist pushes, carbons, "send your unavailable presence"), are
	 * for the session to act on (presence_on_deliver): never queued as
	 * they are for a client to read; the session queues what it writes. */
	int unqueued = !strcmp(type, "probe") || !strncmp(type, "tether-", 7);
	arg_ext(b, d->from_bare ? "2" : "1", 1);
	arg_ext(b, res, strlen(res));
	if (arg_meta(b, d->msg))
		return -ENOMEM;
	arg_ext(b, d->msg->data, d->msg->len);
	/* presence: this node's sessions had it from the local router */
	arg_ext(b, presence ? self : "", presence ? strlen(self) : 0);
	if (arg_u(b, d->from_bare ? d->from_epoch : 0) || arg_u(b, d->from_bare ? d->from_h : 0))
		return -ENOMEM;
	arg_ext(b, !strcmp(type, "headline") ? "1" : "0", 1); /* RFC 6121 §8.5.2.1.2 */
	arg_ext(b, unqueued ? "1" : "0", 1);
	const char *subject = block_subject(d, unqueued); /* -EACCES if the recipient blocks it */
	arg_ext(b, subject, strlen(subject));
	return 0;
}

/* The FCALL of the held deliveries, in <b>->argv. 0 or -ENOMEM. */
static int build(struct store_handle *h, struct rbatch *b, const char *self)
{
	unsigned nkeys = 0;
	b->argc = 0;
	b->used = 0;
	static const char fcall[] = "FCALL", fn[] = "tether_deliver_many";
	arg_ext(b, fcall, sizeof(fcall) - 1);
	arg_ext(b, fn, sizeof(fn) - 1);
	int at_numkeys = b->argc++;
	struct store_deliver_op *d = b->first;
	for (unsigned i = 0; i < b->n; i++, d = next_of(d)) {
		if (add_keys(b, d))
			return -ENOMEM;
		nkeys += d->from_bare ? 2 : 1;
	}
	if (arg_u(b, h->st->queue_max) || arg_u(b, h->st->queue_bytes))
		return -ENOMEM;
	arg_ext(b, self, strlen(self)); /* direct sessions of this node: the caller hands them over */
	d = b->first;
	for (unsigned i = 0; i < b->n; i++, d = next_of(d))
		if (add_args(b, d, self))
			return -ENOMEM;
	char n[16];
	int at = b->argc;
	b->argc = at_numkeys;
	if (arg_copy(b, n, (size_t)snprintf(n, sizeof(n), "%u", nkeys)))
		return -ENOMEM;
	b->argc = at;
	for (int i = 0; i < b->argc; i++)
		if (!b->argv[i])
			b->argv[i] = b->text + b->off[i];
	return 0;
}

/* Reply element <r> of delivery <d>: {{resource, seq, owner[, 1: direct]},
 * ...}, each session it went to; or its error. */
static void decode(struct store_deliver_op *d, const redisReply *r)
{
	if (r->type == REDIS_REPLY_ERROR) {
		d->err = rcodec_errno(r->str, r->len);
		return;
	}
	for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
		const redisReply *e = r->element[i];
		struct store_target *t = &d->t[d->n];
		if (d->n == STORE_TARGETS_MAX || e->type != REDIS_REPLY_ARRAY ||
		    e->elements < 3 || e->elements > 4 ||
		    e->element[1]->type != REDIS_REPLY_INTEGER ||
		    e->element[2]->type != REDIS_REPLY_STRING ||
		    rcodec_owner_parse(e->element[2]->str, e->element[2]->len, &t->owner))
			continue;
		t->full = e->element[1]->integer < 0;
		t->seq = t->full ? 0 : (uint32_t)e->element[1]->integer;
		t->direct = e->elements == 4;
		d->n++;
	}
}

/* The reply of a batch: <ud> is its first delivery. */
static void on_delivered(const redisReply *r, const char *err, void *ud)
{
	struct store_deliver_op *d = ud;
	unsigned n = d->batch;
	int rc = rstore_reply_err(&d->op, r, err);
	if (!rc && (r->type != REDIS_REPLY_ARRAY || r->elements != n))
		rc = -EIO;
	for (unsigned i = 0; i < n; i++, d = next_of(d)) {
		d->err = rc;
		if (!rc)
			decode(d, r->element[i]);
		store_op_ready(&d->op);
	}
}

static void fail_all(struct rbatch *b, int rc)
{
	struct store_deliver_op *d = b->first;
	for (unsigned i = 0; i < b->n; i++, d = next_of(d)) {
		d->err = rc;
		store_op_ready(&d->op);
	}
}

void rstore_deliver_flush(struct store_handle *h)
{
	struct rbatch *b = h->backend;
	if (!b || !b->first)
		return;
	char self[NODES_ID_MAX + 2];
	snprintf(self, sizeof(self), "%s.%s", nodes_name(BUS_NODE_SELF), nodes_boot());
	int rc = build(h, b, self);
	if (!rc) {
		b->first->batch = b->n;
		rc = rlink_command(h->link, b->argc, b->argv, b->lens, on_delivered, b->first, 0,
				   NULL);
		if (rc == -EPIPE)
			rc = -ENOTCONN;
	}
	if (rc)
		fail_all(b, rc);
	b->first = NULL;
	b->n = 0;
	b->bytes = 0;
}

int rstore_deliver_hold(struct store_handle *h, struct store_deliver_op *d)
{
	struct rbatch *b = h->backend;
	if (strlen(d->bare) > RKEY_BARE_MAX || (d->from_bare && strlen(d->from_bare) > RKEY_BARE_MAX)) {
		rstore_deliver_flush(h); /* fails now: what was held before goes first */
		return -EINVAL;
	}
	if (!b && !(b = h->backend = calloc(1, sizeof(*b)))) {
		rstore_deliver_flush(h);
		return -ENOMEM;
	}
	if (!b->first)
		b->first = d;
	b->n++;
	b->bytes += d->msg->len;
	if (b->n == BATCH_MAX || b->bytes >= BATCH_BYTES)
		rstore_deliver_flush(h);
	return 0;
}

void rstore_deliver_detach(struct store_handle *h)
{
	struct rbatch *b = h->backend;
	if (b)
		free(b->text);
	free(b);
	h->backend = NULL;
}
