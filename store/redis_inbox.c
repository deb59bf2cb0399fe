/* store/redis_inbox.c - a node's inbox on Redis: notices to its sessions from other nodes (writer: redis_async.c, reader: here).
 *
 * The inbox is the stream t:{node:<name>}:in, one per node name, capped
 * near 10000 entries. An entry is the fields
 *   k    enum bus_kind (BUS_KICK, BUS_MOVED, BUS_APPENDED), decimal
 *   c    the stream error of a kick, decimal
 *   to   the session's owner address as stored (redis_codec.c: it names
 *        the node incarnation, so an entry for an earlier run of the node
 *        is recognised and dropped)
 *   (k 9, STORE_NOTICE_DRAIN, alone: tetherctl drain asks the node to leave)
 *   seq, e   BUS_APPENDED (written by tether_deliver): the entry's number
 *        and the entry as queued ("<seq>:<stamp>:<meta><payload>")
 *   e    BUS_DELIVER (tether_deliver, to a session without XEP-0198): the
 *        stanza as a queue entry numbered 0, queued nowhere
 * The reader runs one XREAD BLOCK at a time on a link of its own and
 * follows the stream from its end. */
#include "tether/inbox.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redis_keys.h"
#include "tether/log.h"
#include "tether/rlink.h"
#include "tether/rmsg.h"
#include "tether/worker.h"

#define INBOX_BLOCK_MS "1000"    /* one XREAD waits this long for entries */
#define INBOX_TIMEOUT_MS 3000u   /* ...and its reply at most this long */
#define INBOX_COUNT "64"

int rinbox_key(char out[RKEY_LEN], const char *node)
{
	size_t n = strcspn(node, "./"); /* the name, without an incarnation or address */
	if (!n || n > NODES_NAME_MAX)
		return -EINVAL;
	return snprintf(out, RKEY_LEN, RKEY_PREFIX "{node:%.*s}:in", (int)n, node);
}

struct inbox {
	struct rlink *link;
	inbox_fn *fn;
	void *ud;
	char key[RKEY_LEN];
	char last[48];          /* the id read up to; "$": from now on */
	int reading;            /* an XREAD is outstanding */
	int stopping;
	size_t count;
};

static void read_next(struct inbox *in);

static int num_field(const redisReply *v, long max, long *out)
{
	char buf[16];
	if (v->type != REDIS_REPLY_STRING || !v->len || v->len >= sizeof(buf))
		return -EINVAL;
	memcpy(buf, v->str, v->len);
	buf[v->len] = 0;
	char *end;
	long n = strtol(buf, &end, 10);
	if (*end || n < 0 || n > max)
		return -EINVAL;
	*out = n;
	return 0;
}

/* One entry: [id, [field, value, ...]]. */
static void entry(struct inbox *in, const redisReply *e)
{
	if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
	    e->element[0]->type != REDIS_REPLY_STRING || e->element[1]->type != REDIS_REPLY_ARRAY)
		return;
	const redisReply *id = e->element[0], *f = e->element[1];
	if (id->len < sizeof(in->last)) {
		memcpy(in->last, id->str, id->len);
		in->last[id->len] = 0;
	}
	long kind = -1, cond = 0;
	struct bus_addr to;
	struct sm_entry qe = { 0 };
	int have_to = 0, have_e = 0;
	for (size_t i = 0; i + 1 < f->elements; i += 2) {
		const redisReply *k = f->element[i], *v = f->element[i + 1];
		if (k->type != REDIS_REPLY_STRING || k->len > 2)
			continue;
		if (!memcmp(k->str, "k", k->len) && num_field(v, STORE_NOTICE_DRAIN, &kind))
			kind = -1;
		else if (!memcmp(k->str, "e", k->len) && v->type == REDIS_REPLY_STRING && !have_e)
			have_e = rcodec_entry(v->str, v->len, &qe) == 0;
		else if (!memcmp(k->str, "c", k->len) && num_field(v, 1000, &cond))
			cond = 0;
		else if (!memcmp(k->str, "to", k->len) && v->type == REDIS_REPLY_STRING)
			have_to = rcodec_owner_parse(v->str, v->len, &to) == 0;
	}
	if (kind == STORE_NOTICE_DRAIN) { /* tetherctl drain: not about a session */
		in->count++;
		in->fn(in->ud, (int)kind, NULL, 0, 0, NULL);
		return;
	}
	int carries = kind == BUS_APPENDED || kind == BUS_DELIVER;
	int ok = have_to && (kind == BUS_KICK || kind == BUS_MOVED || (carries && have_e));
	if (!ok || to.node != BUS_NODE_SELF) {
		/* not a notice, or for an earlier run of this node (its
		 * sessions are gone: a resume gets the entry from the queue) */
		if (!ok)
			log_warn("inbox: entry %s is not a notice: skipped", in->last);
		if (have_e)
			rmsg_unref(qe.msg);
		return;
	}
	struct rmsg *m = NULL;
	if (have_e && carries)
		m = qe.msg;
	else if (have_e)
		rmsg_unref(qe.msg);
	in->count++;
	in->fn(in->ud, (int)kind, &to, (int)cond, qe.seq, m);
}

static void on_read(const redisReply *r, const char *err, void *ud)
{
	struct inbox *in = ud;
	in->reading = 0;
	if (err) {
		/* Link down or a timeout: read again once it is up (on_state);
		 * what was sent meanwhile is not seen (at most once). */
		snprintf(in->last, sizeof(in->last), "$");
		if (err == rproto_err_reply)
			log_warn("inbox: XREAD: %s", r->str);
	} else if (r->type == REDIS_REPLY_ARRAY) {
		for (size_t i = 0; i < r->elements; i++) {
			const redisReply *s = r->element[i];
			if (s->type != REDIS_REPLY_ARRAY || s->elements != 2 ||
			    s->element[1]->type != REDIS_REPLY_ARRAY)
				continue;
			for (size_t j = 0; j < s->element[1]->elements; j++)
				entry(in, s->element[1]->element[j]);
		}
	}
	read_next(in);
}

static void read_next(struct inbox *in)
{
	if (in->reading || in->stopping || !rlink_up(in->link))
		return;
	const char *argv[] = { "XREAD", "COUNT", INBOX_COUNT, "BLOCK", INBOX_BLOCK_MS, "STREAMS",
			       in->key, in->last };
	if (rlink_command_strs(in->link, 8, argv, on_read, in, INBOX_TIMEOUT_MS) == 0)
		in->reading = 1;
}

static void on_state(void *ud, int up)
{
	struct inbox *in = ud;
	if (up)
		read_next(in);
}

struct inbox *inbox_new(struct io_uring *ring, struct timer_wheel *wheel, const char *redis_addr,
			const char *node, inbox_fn *fn, void *ud, char *err, size_t errlen)
{
	struct inbox *in = calloc(1, sizeof(*in));
	if (!in) {
		snprintf(err, errlen, "inbox: out of memory");
		return NULL;
	}
	if (rinbox_key(in->key, node) < 0) {
		snprintf(err, errlen, "inbox: bad node name '%s'", node);
		free(in);
		return NULL;
	}
	if (!(in->link = rlink_new(ring, wheel, redis_addr, on_state, in, err, errlen))) {
		free(in);
		return NULL;
	}
	rlink_set_ud_op(in->link, OP_INBOX);
	in->fn = fn;
	in->ud = ud;
	snprintf(in->last, sizeof(in->last), "$");
	return in;
}

void inbox_start(struct inbox *in)
{
	rlink_start(in->link);
}

void inbox_on_cqe(struct inbox *in, const struct io_uring_cqe *cqe)
{
	rlink_on_cqe(in->link, cqe);
}

void inbox_stop(struct inbox *in)
{
	in->stopping = 1;
	rlink_stop(in->link);
}

int inbox_stopped(const struct inbox *in)
{
	return rlink_stopped(in->link);
}

void inbox_free(struct inbox *in)
{
	if (!in)
		return;
	rlink_free(in->link);
	free(in);
}

size_t inbox_count(const struct inbox *in)
{
	return in->count;
}
