/* store/redis_proto.c - a sans-I/O Redis client: hiredis as a codec, our own pipelining and timeouts.
 *
 * Decisions (the header says the contract):
 * - hiredis 0.14.1 (Debian 12) is used only for what it does well and
 *   safely without a socket: redisFormatCommandArgv() to encode and the
 *   redisReader to decode RESP2. Its redisContext/redisAsyncContext are not
 *   used: they own the socket, and the async one has no timer hook in 0.14.1
 *   (every command needs a timeout) and would want a poll per connection
 *   instead of one recv on the ring.
 * - Output is a chain of chunks. Bytes handed out by rproto_out() never
 *   move (a chunk is never reallocated), so an io_uring send may be in
 *   flight on them while more commands are appended (STYLE.md §5).
 * - Outstanding commands sit in a FIFO ring; a handle is the command's
 *   sequence number (64 bits, never reused), so the entry of a handle is at
 *   (handle - first handle) and a stale handle is recognised, not misused.
 * - Reply size: hiredis builds objects as it parses, and the reply it is
 *   building is not visible; we count bytes instead. <fed> counts every
 *   byte given to the reader, <mark> the bytes of completed replies (the
 *   reader's unread tail is len - pos); fed - mark is the reply in progress.
 *   hiredis 0.14.1 allocates an array of <n> pointers as soon as it reads
 *   "*<n>", and its allocator aborts on failure (alloc.h:
 *   HIREDIS_OOM_HANDLER), so "*2000000000" alone would kill the process: the
 *   reader's createArray is wrapped to refuse counts that cannot fit in
 *   max_reply (every element takes at least 3 bytes, "+\r\n").
 * - Callbacks may re-enter (issue, cancel, reset). Failing many commands
 *   pops them one at a time from the ring, so a callback that cancels a
 *   later command (its owner went away) is honoured. */
#include "tether/redis_proto.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>
#include <hiredis/read.h>

const char rproto_err_reply[] = "redis error reply";
const char rproto_err_timeout[] = "redis command timed out";
const char rproto_err_closed[] = "redis connection closed";
const char rproto_err_protocol[] = "redis protocol error";
const char rproto_err_toobig[] = "redis reply over the size limit";

/* Output chunks are this big unless one command needs more. */
#define CHUNK_SIZE 16384u
/* Smallest RESP element: "+\r\n". */
#define MIN_ELEMENT_BYTES 3u

struct chunk {
	struct chunk *next;
	size_t cap, len, off; /* off: bytes consumed by the caller */
	char data[];
};

struct pend {
	rproto_fn *fn;
	void *ud;
	uint64_t deadline_ms; /* 0: none */
	int cancelled;
};

struct rproto {
	struct rproto_limits lim;
	redisReader *reader;
	redisReplyObjectFunctions fns; /* hiredis's, with createArray wrapped */
	void *(*create_array)(const redisReadTask *, int);
	int refused;              /* our createArray refused an array */
	uint64_t fed, mark;       /* see the file header */

	struct chunk *head, *tail;
	size_t out_bytes;         /* unconsumed bytes over all chunks */

	struct pend *ring;        /* FIFO of outstanding commands */
	size_t cap, first, count; /* cap: power of two */
	uint64_t first_handle;    /* handle of ring[first] */
	uint64_t next_handle;

	int broken;
	uint64_t gen;             /* +1 per reset: a feed loop notices */
};

/* hiredis's reader asks this for each array; <task>->privdata is our rproto
 * (the reader copies its privdata into every task). */
static void *guarded_array(const redisReadTask *task, int elements)
{
	struct rproto *rp = task->privdata;
	if (elements > 0 && (size_t)elements > rp->lim.max_reply / MIN_ELEMENT_BYTES) {
		rp->refused = 1;
		return NULL; /* the reader reports out of memory and stops */
	}
	return rp->create_array(task, elements);
}

static int reader_open(struct rproto *rp)
{
	redisReader *r = redisReaderCreate();
	if (!r)
		return -ENOMEM;
	/* Keep hiredis's object functions (replies stay plain redisReply, freed
	 * with freeReplyObject) but interpose on createArray. */
	rp->fns = *r->fn;
	rp->create_array = rp->fns.createArray;
	rp->fns.createArray = guarded_array;
	r->fn = &rp->fns;
	r->privdata = rp;
	rp->reader = r;
	rp->refused = 0;
	rp->fed = rp->mark = 0;
	return 0;
}

struct rproto *rproto_new(const struct rproto_limits *lim)
{
	struct rproto *rp = calloc(1, sizeof(*rp));
	if (!rp)
		return NULL;
	if (lim)
		rp->lim = *lim;
	if (!rp->lim.max_out)
		rp->lim.max_out = RPROTO_MAX_OUT_DEFAULT;
	if (!rp->lim.max_reply)
		rp->lim.max_reply = RPROTO_MAX_REPLY_DEFAULT;
	if (!rp->lim.max_pending)
		rp->lim.max_pending = RPROTO_MAX_PENDING_DEFAULT;
	rp->first_handle = rp->next_handle = 1;
	if (reader_open(rp)) {
		free(rp);
		return NULL;
	}
	return rp;
}

static void out_free(struct rproto *rp)
{
	for (struct chunk *c = rp->head, *n; c; c = n) {
		n = c->next;
		free(c);
	}
	rp->head = rp->tail = NULL;
	rp->out_bytes = 0;
}

void rproto_free(struct rproto *rp)
{
	if (!rp)
		return;
	out_free(rp);
	if (rp->reader)
		redisReaderFree(rp->reader);
	free(rp->ring);
	free(rp);
}

/* ---- output ---------------------------------------------------------- */

/* Appends <len> bytes; the caller checked the limit. */
static int out_append(struct rproto *rp, const char *data, size_t len)
{
	struct chunk *t = rp->tail;
	/* A chunk with every byte consumed is the only one (rproto_consumed
	 * frees the others); if it is too small, it goes, or rproto_out()
	 * would show it, empty, and hide the chunk behind it. */
	if (t && t->off == t->len && t->cap < len) {
		free(t);
		rp->head = rp->tail = t = NULL;
	}
	if (!t || t->cap - t->len < len) {
		size_t cap = len > CHUNK_SIZE ? len : CHUNK_SIZE;
		struct chunk *c = malloc(sizeof(*c) + cap);
		if (!c)
			return -ENOMEM;
		c->next = NULL;
		c->cap = cap;
		c->len = c->off = 0;
		if (t)
			t->next = c;
		else
			rp->head = c;
		rp->tail = t = c;
	}
	memcpy(t->data + t->len, data, len);
	t->len += len;
	rp->out_bytes += len;
	return 0;
}

const char *rproto_out(const struct rproto *rp, size_t *len)
{
	const struct chunk *c = rp->head;
	if (!c || c->off == c->len) {
		*len = 0;
		return NULL;
	}
	*len = c->len - c->off;
	return c->data + c->off;
}

void rproto_consumed(struct rproto *rp, size_t n)
{
	struct chunk *c = rp->head;
	if (!n)
		return;
	if (!c || n > c->len - c->off)
		abort(); /* more than rproto_out() gave: a caller bug */
	c->off += n;
	rp->out_bytes -= n;
	if (c->off < c->len)
		return;
	if (c->next) {
		rp->head = c->next;
		free(c);
	} else {
		c->off = c->len = 0; /* all sent: the last chunk is reused */
	}
}

size_t rproto_out_pending(const struct rproto *rp)
{
	return rp->out_bytes;
}

/* ---- the ring of outstanding commands ---------------------------------- */

static int ring_push(struct rproto *rp, const struct pend *p)
{
	if (rp->count == rp->cap) {
		size_t cap = rp->cap ? rp->cap * 2 : 64;
		struct pend *r = malloc(cap * sizeof(*r));
		if (!r)
			return -ENOMEM;
		for (size_t i = 0; i < rp->count; i++)
			r[i] = rp->ring[(rp->first + i) & (rp->cap - 1)];
		free(rp->ring);
		rp->ring = r;
		rp->cap = cap;
		rp->first = 0;
	}
	rp->ring[(rp->first + rp->count) & (rp->cap - 1)] = *p;
	rp->count++;
	rp->next_handle++;
	return 0;
}

static struct pend ring_pop(struct rproto *rp)
{
	struct pend p = rp->ring[rp->first];
	rp->first = (rp->first + 1) & (rp->cap - 1);
	rp->count--;
	rp->first_handle++;
	return p;
}

int rproto_command(struct rproto *rp, int argc, const char **argv, const size_t *argvlen,
		   rproto_fn *fn, void *ud, uint64_t deadline_ms, uint64_t *handle)
{
	char *cmd = NULL;
	int len, rc;

	if (argc < 1)
		return -EINVAL;
	if (rp->broken)
		return -EPIPE;
	if (rp->count >= rp->lim.max_pending)
		return -ENOBUFS;
	len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
	if (len < 0)
		return -ENOMEM;
	if ((size_t)len > rp->lim.max_out - rp->out_bytes || rp->out_bytes > rp->lim.max_out) {
		rc = -ENOBUFS;
		goto out;
	}
	/* The ring first: a pushed command with no bytes would wait forever,
	 * bytes with no entry would misattribute every later reply. */
	struct pend p = { .fn = fn, .ud = ud, .deadline_ms = deadline_ms };
	uint64_t h = rp->next_handle;
	if ((rc = ring_push(rp, &p)))
		goto out;
	if ((rc = out_append(rp, cmd, (size_t)len))) {
		rp->count--; /* undo the push: nothing was appended after it */
		rp->next_handle--;
		goto out;
	}
	if (handle)
		*handle = h;
out:
	redisFreeCommand(cmd);
	return rc;
}

int rproto_cancel(struct rproto *rp, uint64_t handle)
{
	if (handle < rp->first_handle || handle - rp->first_handle >= rp->count)
		return -ENOENT;
	struct pend *p = &rp->ring[(rp->first + (handle - rp->first_handle)) & (rp->cap - 1)];
	if (p->cancelled)
		return -ENOENT;
	p->cancelled = 1;
	return 0;
}

size_t rproto_pending(const struct rproto *rp)
{
	return rp->count;
}

int rproto_broken(const struct rproto *rp)
{
	return rp->broken;
}

/* ---- failing commands -------------------------------------------------- */

/* Pops and fails the outstanding commands with handles below <stop>, one at
 * a time (a callback may cancel a later one). Those past their deadline at
 * <now_ms> (0: none is) get rproto_err_timeout, the others <err>. Returns how
 * many timed out. */
static size_t fail_until(struct rproto *rp, uint64_t stop, const char *err, uint64_t now_ms)
{
	size_t timeouts = 0;
	while (rp->count && rp->first_handle < stop) {
		struct pend p = ring_pop(rp);
		int late = now_ms && p.deadline_ms && p.deadline_ms <= now_ms;
		timeouts += late;
		if (!p.cancelled)
			p.fn(NULL, late ? rproto_err_timeout : err, p.ud);
	}
	return timeouts;
}

/* The connection cannot be trusted any more: everything outstanding fails
 * with <err>; new commands are refused until rproto_reset(). */
static void break_conn(struct rproto *rp, const char *err)
{
	rp->broken = 1;
	fail_until(rp, rp->next_handle, err, 0);
}

size_t rproto_expire(struct rproto *rp, uint64_t now_ms)
{
	size_t late = 0;
	for (size_t i = 0; i < rp->count; i++) {
		const struct pend *p = &rp->ring[(rp->first + i) & (rp->cap - 1)];
		late += p->deadline_ms && p->deadline_ms <= now_ms;
	}
	if (!late)
		return 0;
	/* A reply is late, so every later reply is at risk of being read as
	 * someone else's: the connection is done for. */
	rp->broken = 1;
	return fail_until(rp, rp->next_handle, rproto_err_closed, now_ms);
}

uint64_t rproto_next_deadline(const struct rproto *rp)
{
	uint64_t d = 0;
	for (size_t i = 0; i < rp->count; i++) {
		uint64_t x = rp->ring[(rp->first + i) & (rp->cap - 1)].deadline_ms;
		if (x && (!d || x < d))
			d = x;
	}
	return d;
}

void rproto_reset(struct rproto *rp, const char *err)
{
	uint64_t stop = rp->next_handle;
	redisReader *old = rp->reader;

	/* A fresh connection first, so callbacks may issue commands for it. */
	out_free(rp);
	rp->gen++;
	rp->broken = 0;
	if (reader_open(rp)) {
		/* No reader, no way to read a reply: stay broken. */
		rp->reader = NULL;
		rp->broken = 1;
	}
	if (old)
		redisReaderFree(old);
	fail_until(rp, stop, err ? err : rproto_err_closed, 0);
}

/* ---- input ------------------------------------------------------------- */

/* Hands one complete reply to its command. Returns 0, or -1 if the reply
 * was unsolicited (the connection is broken then). */
static int deliver(struct rproto *rp, redisReply *reply)
{
	if (!rp->count) {
		freeReplyObject(reply);
		break_conn(rp, rproto_err_protocol);
		return -1;
	}
	struct pend p = ring_pop(rp);
	if (!p.cancelled)
		p.fn(reply, reply->type == REDIS_REPLY_ERROR ? rproto_err_reply : NULL, p.ud);
	freeReplyObject(reply);
	return 0;
}

enum rproto_feed_result rproto_feed(struct rproto *rp, const char *data, size_t len)
{
	uint64_t gen = rp->gen;

	if (rp->broken || !rp->reader)
		return RPROTO_FEED_ERR;
	if (len && redisReaderFeed(rp->reader, data, len) != REDIS_OK) {
		break_conn(rp, rproto_err_protocol);
		return RPROTO_FEED_ERR;
	}
	rp->fed += len;
	for (;;) {
		void *obj = NULL;
		if (redisReaderGetReply(rp->reader, &obj) != REDIS_OK) {
			break_conn(rp, rp->refused ? rproto_err_toobig : rproto_err_protocol);
			return RPROTO_FEED_ERR;
		}
		if (!obj)
			break;
		uint64_t mark = rp->fed - (rp->reader->len - rp->reader->pos);
		if (mark - rp->mark > rp->lim.max_reply) {
			freeReplyObject(obj);
			break_conn(rp, rproto_err_toobig);
			return RPROTO_FEED_ERR;
		}
		rp->mark = mark;
		if (deliver(rp, obj))
			return RPROTO_FEED_ERR;
		if (rp->gen != gen)
			return RPROTO_FEED_OK; /* reset by a callback: the rest was the old connection's */
		if (rp->broken)
			return RPROTO_FEED_ERR;
	}
	if (rp->fed - rp->mark > rp->lim.max_reply) {
		break_conn(rp, rproto_err_toobig);
		return RPROTO_FEED_ERR;
	}
	return RPROTO_FEED_OK;
}
