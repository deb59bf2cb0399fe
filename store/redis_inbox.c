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
 *   e    BUS_APPENDED (written by tether_deliver): the entry as queued
 *        ("<seq>:<stamp>:<meta><payload>", its number first); BUS_DELIVER
 *        (tether_deliver, to a session without XEP-0198): the stanza as a
 *        queue entry numbered 0, queued nowhere
 * The deliveries of one call (tether_deliver_many: a node's deliveries of
 * one loop turn) write one entry per node: alone, a notice is as above; k
 * 10 (INBOX_MANY) is an entry of several, each three fields: n (its
 * kind, BUS_APPENDED or BUS_DELIVER), to, e. A node older than that form
 * skips such an entry (k out of its range); a session that misses a notice
 * so finds the gap at the next one, or its client at its resume.
 * The reader runs one XREADGROUP BLOCK at a time on a link of its own, in
 * the consumer group named after this node's incarnation ("<name>.<boot>",
 * made where the stream ends when the node starts: every connection of the
 * link asks for it first), and acknowledges each batch once its entries
 * were handed over (XACK, pipelined before the next read). So what a
 * node read and had not handed over when it died, and what it never read,
 * stays in its group for the reaper (tether_inbox_reap), which gives the
 * stanzas for direct sessions RFC 6121's treatment; and after its link
 * comes back, the node reads its own unacknowledged entries again first
 * (at least once; a repeat of an appended entry is ignored by its
 * number, a repeated direct stanza reaches its client twice). */
#include "tether/inbox.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redis_keys.h"
#include "tether/log.h"
#include "tether/nodes.h"
#include "tether/rlink.h"
#include "tether/rmsg.h"
#include "tether/worker.h"

#define INBOX_BLOCK_MS "1000"    /* one XREADGROUP waits this long for entries */
#define INBOX_TIMEOUT_MS 3000u   /* ...and its reply at most this long */
#define INBOX_COUNT "32"         /* entries: one may carry 64 KiB of notices, and a stanza */
#define INBOX_COUNT_MAX 32
#define INBOX_MANY 10            /* k of an entry of several notices (redis_lib.lua) */

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
	char group[NODES_ID_MAX + 1]; /* this incarnation: its consumer group and consumer */
	char last[48];          /* the id of the last entry read */
	char from[48];          /* what the next read asks for: ">" (new entries), or
				 * the id after which our unacknowledged ones follow */
	int reading;            /* an XREADGROUP is outstanding */
	int need_group;         /* the group is missing (NOGROUP): make it first */
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

/* A notice of <kind> (with <cond>) for the owner <to> (a string reply, or
 * NULL), carrying queue entry <e> (NULL: none), to the callback. */
static void notice(struct inbox *in, long kind, long cond, const redisReply *to,
		   const redisReply *e)
{
	struct bus_addr a;
	struct sm_entry qe = { 0 };
	int have_to = to && rcodec_owner_parse(to->str, to->len, &a) == 0;
	int have_e = e && rcodec_entry(e->str, e->len, &qe) == 0;
	int carries = kind == BUS_APPENDED || kind == BUS_DELIVER;
	int ok = have_to && (kind == BUS_KICK || kind == BUS_MOVED || (carries && have_e));
	if (!ok || a.node != BUS_NODE_SELF) {
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
	in->fn(in->ud, (int)kind, &a, (int)cond, qe.seq, m);
}

static int is_field(const redisReply *k, const char *name)
{
	size_t n = strlen(name);
	return k->type == REDIS_REPLY_STRING && k->len == n && !memcmp(k->str, name, n);
}

static const redisReply *str_or_null(const redisReply *v)
{
	return v->type == REDIS_REPLY_STRING ? v : NULL;
}

/* An entry of one notice: k, and c, to, e as its kind has them. */
static void one(struct inbox *in, const redisReply *f)
{
	long kind = -1, cond = 0;
	const redisReply *to = NULL, *e = NULL;
	for (size_t i = 0; i + 1 < f->elements; i += 2) {
		const redisReply *k = f->element[i], *v = f->element[i + 1];
		if (is_field(k, "k") && num_field(v, STORE_NOTICE_DRAIN, &kind))
			kind = -1;
		else if (is_field(k, "e") && !e)
			e = str_or_null(v);
		else if (is_field(k, "c") && num_field(v, 1000, &cond))
			cond = 0;
		else if (is_field(k, "to"))
			to = str_or_null(v);
	}
	if (kind == STORE_NOTICE_DRAIN) { /* tetherctl drain: not about a session */
		in->count++;
		in->fn(in->ud, (int)kind, NULL, 0, 0, NULL);
		return;
	}
	notice(in, kind, cond, to, e);
}

/* An entry of several (k INBOX_MANY): n <kind>, to <owner>, e <entry>
 * per notice, in order. */
static void many(struct inbox *in, const redisReply *f)
{
	for (size_t i = 2; i + 6 <= f->elements; i += 6) {
		redisReply **x = f->element + i;
		long kind = -1;
		if (!is_field(x[0], "n") || num_field(x[1], BUS_APPENDED, &kind) ||
		    !is_field(x[2], "to") || !is_field(x[4], "e")) {
			log_warn("inbox: entry %s: notice %zu is malformed: skipped", in->last, (i - 2) / 6);
			continue;
		}
		notice(in, kind, 0, str_or_null(x[3]), str_or_null(x[5]));
	}
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
	long kind;
	if (f->elements >= 2 && is_field(f->element[0], "k") &&
	    !num_field(f->element[1], INBOX_MANY, &kind) && kind == INBOX_MANY)
		many(in, f);
	else
		one(in, f);
}

static void on_group(const redisReply *r, const char *err, void *ud)
{
	(void)ud;
	if (err == rproto_err_reply && strncmp(r->str, "BUSYGROUP", 9))
		log_warn("inbox: joining its consumer group: %s", r->str);
}

static void on_acked(const redisReply *r, const char *err, void *ud)
{
	(void)ud;
	if (err == rproto_err_reply)
		log_warn("inbox: XACK: %s", r->str);
}

/* Acknowledges the entries of batch <b> (handed over): one XACK. A lost
 * one (link down) has them read again after the reconnect. */
static void ack(struct inbox *in, const redisReply *b)
{
	const char *argv[3 + INBOX_COUNT_MAX] = { "XACK", in->key, in->group };
	size_t lens[3 + INBOX_COUNT_MAX] = { 4, strlen(in->key), strlen(in->group) };
	int argc = 3;
	for (size_t j = 0; j < b->elements && argc < 3 + INBOX_COUNT_MAX; j++) {
		const redisReply *e = b->element[j];
		if (e->type != REDIS_REPLY_ARRAY || e->elements < 1 ||
		    e->element[0]->type != REDIS_REPLY_STRING)
			continue;
		argv[argc] = e->element[0]->str;
		lens[argc++] = e->element[0]->len;
	}
	if (argc > 3)
		rlink_command(in->link, argc, argv, lens, on_acked, in, 0, NULL);
}

/* One stream's batch <b> of a read: handed over, then acknowledged. While
 * reading our own unacknowledged entries again (<from> an id), the next
 * read goes on after the last one, and an empty batch ends that. */
static void batch(struct inbox *in, const redisReply *b)
{
	for (size_t j = 0; j < b->elements; j++)
		entry(in, b->element[j]);
	ack(in, b);
	if (!strcmp(in->from, ">"))
		return;
	/* The last id given, even for an entry trimmed since (no fields:
	 * entry() skips it), so that the re-read moves on. */
	const redisReply *e = b->elements ? b->element[b->elements - 1] : NULL;
	if (e && e->type == REDIS_REPLY_ARRAY && e->elements >= 1 &&
	    e->element[0]->type == REDIS_REPLY_STRING && e->element[0]->len < sizeof(in->from))
		snprintf(in->from, sizeof(in->from), "%.*s", (int)e->element[0]->len, e->element[0]->str);
	else
		snprintf(in->from, sizeof(in->from), ">");
}

static void on_read(const redisReply *r, const char *err, void *ud)
{
	struct inbox *in = ud;
	in->reading = 0;
	if (err) {
		/* Link down or a timeout: read again once it is up (on_state),
		 * first what we were given and did not acknowledge. */
		snprintf(in->from, sizeof(in->from), "0");
		if (err == rproto_err_reply) {
			log_warn("inbox: XREADGROUP: %s", r->str);
			in->need_group = !strncmp(r->str, "NOGROUP", 7);
		}
	} else if (r->type == REDIS_REPLY_ARRAY) {
		for (size_t i = 0; i < r->elements; i++) {
			const redisReply *s = r->element[i];
			if (s->type == REDIS_REPLY_ARRAY && s->elements == 2 &&
			    s->element[1]->type == REDIS_REPLY_ARRAY)
				batch(in, s->element[1]);
		}
	} else if (strcmp(in->from, ">")) {
		snprintf(in->from, sizeof(in->from), ">"); /* nil: none of ours left */
	}
	read_next(in);
}

static void read_next(struct inbox *in)
{
	if (in->reading || in->stopping || !rlink_up(in->link))
		return;
	const char *mk[] = { "XGROUP", "CREATE", in->key, in->group, "$", "MKSTREAM" };
	if (in->need_group && rlink_command_strs(in->link, 6, mk, on_group, in, 0) == 0)
		in->need_group = 0;
	const char *argv[] = { "XREADGROUP", "GROUP", in->group, in->group, "COUNT", INBOX_COUNT,
			       "BLOCK", INBOX_BLOCK_MS, "STREAMS", in->key, in->from };
	if (rlink_command_strs(in->link, 11, argv, on_read, in, INBOX_TIMEOUT_MS) == 0)
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
	snprintf(in->group, sizeof(in->group), "%s.%s", nodes_name(BUS_NODE_SELF), nodes_boot());
	snprintf(in->from, sizeof(in->from), "0");
	/* Every connection first joins the group (tether_inbox_join: the
	 * group if missing, and our consumer, seen now), so the reads behind
	 * it find it and the reaper never takes it for a dead node's. */
	const char *mk[] = { "FCALL", "tether_inbox_join", "1", in->key, in->group };
	size_t lens[5];
	for (int i = 0; i < 5; i++)
		lens[i] = strlen(mk[i]);
	if (rlink_set_hello(in->link, 5, mk, lens, on_group, in)) {
		snprintf(err, errlen, "inbox: out of memory");
		rlink_free(in->link);
		free(in);
		return NULL;
	}
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
