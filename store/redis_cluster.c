/* store/redis_cluster.c - the node's lease and the reaper of dead nodes' sessions, on worker 0's Redis link.
 *
 * Every tick ([cluster] tick_ms): renew t:{node:<name>}:lease (holder: the
 * node's incarnation "<name>.<boot>", TTL [cluster] lease_ms), then try the
 * reaper's lease t:{cluster}:reaper. Its holder goes on with one SCAN batch
 * over the session records and one tether_sm_reap per record found, and one
 * over the directories and one tether_dir_reap per directory (direct
 * sessions have no record: their entry is all there is), and one over the
 * node inboxes and tether_inbox_reap per inbox, again at once for the
 * same inbox while it says there is more. The library decides atomically
 * whether the owner is dead and what to do (see redis_lib.lua); what it
 * removed comes back here for RFC 6121's effects: unavailable presence for
 * a session that was available or had sent directed presence (the gone
 * callback), its queued stanzas, and those its dead node had in its inbox
 * for it, to the orphan callback. A full pass takes (keys / SCAN_COUNT)
 * ticks. */
#include "tether/cluster.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "redis_keys.h"
#include "tether/bus.h"
#include "tether/log.h"
#include "tether/rlink.h"
#include "tether/rmsg.h"
#include "tether/tls.h"

#define SCAN_COUNT "500"
#define SESSION_MATCH RKEY_PREFIX "{*}:s:*"
#define DIR_MATCH RKEY_PREFIX "{*}:dir"
#define INBOX_MATCH RKEY_PREFIX "{node:*}:in"
#define REAPER_KEY RKEY_PREFIX "{cluster}:reaper"

struct cluster;

/* One kind of key the reaper goes over: SCAN MATCH <match>, then FCALL
 * <fn> on each key found, its reply to <on_reply>. */
struct pass {
	struct cluster *c;
	const char *match;
	const char *fn;
	const char *const *args;      /* ARGV for <fn> (<nargs>) */
	int nargs;
	rproto_fn *on_reply;
	char cursor[24];              /* SCAN's, "0" at the start of a pass */
	int scanning;                 /* a SCAN is outstanding */
};

struct cluster {
	struct rlink *link;
	struct timer_wheel *wheel;
	struct timer tick;
	cluster_orphan_fn *fn;
	cluster_gone_fn *gone;
	void *ud;
	const uint8_t *key;           /* seals the ticket keys (the token key) */
	char inc[NODES_ID_MAX + 1];   /* "<name>.<boot>": the lease holder */
	char lease_key[RKEY_LEN];
	char ttl[16];
	unsigned tick_ms;
	struct pass sessions, dirs, inboxes;
	char batch[16];               /* CLUSTER_INBOX_BATCH, for tether_inbox_reap */
	char idle[16];                /* ms without a read after which an inbox group
				       * with no lease is abandoned */
	const char *inbox_args[2];    /* batch, idle */
	int warned_busy;
	int warned_tickets;
	size_t reaped;
};

static int command(struct cluster *c, int argc, const char **argv, rproto_fn *fn)
{
	return rlink_command_strs(c->link, argc, argv, fn, c, 0);
}

static void on_node_lease(const redisReply *r, const char *err, void *ud)
{
	struct cluster *c = ud;
	if (err != rproto_err_reply)
		return;
	/* Another incarnation holds our name: two nodes with one name, or
	 * our previous run within its lease's last seconds. */
	if (!c->warned_busy++)
		log_error("cluster: the lease of node name %s is held by another process (%s): "
			  "[cluster] node must be unique", nodes_name(BUS_NODE_SELF), r->str);
}

/* The session's stanzas, handed to the orphan callback in order. */
static void reaped_queue(struct cluster *c, const redisReply *q)
{
	for (size_t i = 0; i < q->elements; i++) {
		struct sm_entry e;
		const redisReply *v = q->element[i];
		if (v->type == REDIS_REPLY_STRING && !rcodec_entry(v->str, v->len, &e))
			c->fn(c->ud, e.msg, e.stamp_ms);
	}
}

/* String element <i> of <r> as a C string in <out> (<size> bytes), or -1
 * when it is not a string or does not fit. */
static int str_at(const redisReply *r, size_t i, char *out, size_t size)
{
	const redisReply *v = r->element[i];
	if (v->type != REDIS_REPLY_STRING || v->len >= size)
		return -1;
	memcpy(out, v->str, v->len);
	out[v->len] = 0;
	return 0;
}

/* Tells the gone callback about session <g> (bare and resource set) with
 * <available> and the recipients of its directed presence in <dp> (an
 * array of strings, or NULL), if there is anything to tell. */
static void tell_gone(struct cluster *c, struct cluster_gone *g, int available,
		      const redisReply *dp)
{
	size_t n = dp && dp->type == REDIS_REPLY_ARRAY ? dp->elements : 0, k = 0;
	const char **to = n ? malloc(n * sizeof(*to)) : NULL;
	for (size_t i = 0; to && i < n; i++) {
		const redisReply *v = dp->element[i];
		if (v->type == REDIS_REPLY_STRING && v->len && strlen(v->str) == v->len)
			to[k++] = v->str;
	}
	if (n && !to)
		log_warn("cluster: out of memory: directed presence of %s/%s not undone", g->bare,
			 g->resource);
	g->available = available;
	g->directed = to;
	g->ndirected = k;
	if (available || k)
		c->gone(c->ud, g);
	free(to);
}

/* A session removed with record <rec> (REC order: res 3rd, avail 9th) of
 * account <bare>, which had sent directed presence to <dp>: if it had
 * broadcast available presence, its contacts and the account's other
 * resources hear that it is gone; the recipients of directed presence
 * hear it in any case. */
static void reaped_presence(struct cluster *c, const redisReply *rec, const redisReply *bare,
			    const redisReply *dp)
{
	char b[RKEY_BARE_MAX + 1], res[RKEY_LEN];
	if (rec->elements < 9 || bare->type != REDIS_REPLY_STRING || !bare->len ||
	    bare->len > RKEY_BARE_MAX || str_at(rec, 2, res, sizeof(res)))
		return;
	memcpy(b, bare->str, bare->len);
	b[bare->len] = 0;
	const redisReply *av = rec->element[8];
	struct cluster_gone g = { .bare = b, .resource = res };
	tell_gone(c, &g, av->type == REDIS_REPLY_STRING && !strcmp(av->str, "1"), dp);
}

static void on_reaped(const redisReply *r, const char *err, void *ud)
{
	struct cluster *c = ud;
	if (err) {
		if (err == rproto_err_reply)
			log_warn("cluster: reaping a session: %s", r->str);
		return;
	}
	if (r->type == REDIS_REPLY_INTEGER && r->integer == 1) {
		c->reaped++;
		log_info("cluster: a session of a dead node is detached now (resumable for its window)");
	} else if (r->type == REDIS_REPLY_ARRAY && r->elements >= 2 &&
		   r->element[0]->type == REDIS_REPLY_ARRAY &&
		   r->element[1]->type == REDIS_REPLY_ARRAY) {
		c->reaped++;
		log_info("cluster: a session of a dead node expired: %zu stanzas re-routed or bounced",
			 r->element[1]->elements);
		if (r->elements >= 3)
			reaped_presence(c, r->element[0], r->element[2],
					r->elements >= 4 ? r->element[3] : NULL);
		reaped_queue(c, r->element[1]);
	}
}

/* tether_dir_reap's reply: {bare, {resource, available, {directed...}}...}
 * of the direct sessions of dead nodes that were available or had sent
 * directed presence, or 0. */
static void on_dir_reaped(const redisReply *r, const char *err, void *ud)
{
	struct cluster *c = ud;
	char bare[RKEY_BARE_MAX + 1], res[RKEY_LEN];
	if (err) {
		if (err == rproto_err_reply)
			log_warn("cluster: reaping a directory: %s", r->str);
		return;
	}
	if (r->type != REDIS_REPLY_ARRAY || r->elements < 2 || str_at(r, 0, bare, sizeof(bare)) ||
	    !*bare)
		return;
	log_info("cluster: %zu direct sessions of a dead node removed", r->elements - 1);
	for (size_t i = 1; i < r->elements; i++) {
		const redisReply *e = r->element[i];
		if (e->type != REDIS_REPLY_ARRAY || e->elements != 3 || str_at(e, 0, res, sizeof(res)) ||
		    e->element[1]->type != REDIS_REPLY_INTEGER)
			continue;
		struct cluster_gone g = { .bare = bare, .resource = res };
		tell_gone(c, &g, e->element[1]->integer == 1, e->element[2]);
	}
}

/* tether_inbox_reap's reply: {more, {entry...}, inbox}, or 0. Each entry
 * is a stanza a dead node incarnation had in its inbox for one of its
 * direct sessions, gone with it: an orphan now. While there is more, the
 * same inbox is asked again at once (each call acknowledges what it
 * returned, so this ends). */
static void on_inbox_reaped(const redisReply *r, const char *err, void *ud)
{
	struct cluster *c = ud;
	char key[RKEY_LEN];
	if (err) {
		if (err == rproto_err_reply)
			log_warn("cluster: reaping an inbox: %s", r->str);
		return;
	}
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
	    r->element[0]->type != REDIS_REPLY_INTEGER || r->element[1]->type != REDIS_REPLY_ARRAY)
		return;
	const redisReply *q = r->element[1];
	if (q->elements)
		log_info("cluster: %zu stanzas from a dead node's inbox re-routed, stored or bounced",
			 q->elements);
	for (size_t i = 0; i < q->elements; i++) {
		struct sm_entry e;
		const redisReply *v = q->element[i];
		if (v->type == REDIS_REPLY_STRING && !rcodec_entry(v->str, v->len, &e))
			c->fn(c->ud, e.msg, e.stamp_ms);
	}
	if (r->element[0]->integer == 1 && !str_at(r, 2, key, sizeof(key))) {
		const char *argv[] = { "FCALL", "tether_inbox_reap", "1", key, c->batch, c->idle };
		command(c, 6, argv, on_inbox_reaped);
	}
}

static void on_scan(const redisReply *r, const char *err, void *ud)
{
	struct pass *p = ud;
	p->scanning = 0;
	if (err || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
	    r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_ARRAY) {
		snprintf(p->cursor, sizeof(p->cursor), "0");
		return;
	}
	snprintf(p->cursor, sizeof(p->cursor), "%.*s", (int)r->element[0]->len, r->element[0]->str);
	const redisReply *keys = r->element[1];
	for (size_t i = 0; i < keys->elements; i++) {
		char key[RKEY_LEN];
		if (str_at(keys, i, key, sizeof(key)))
			continue;
		const char *argv[6] = { "FCALL", p->fn, "1", key };
		for (int j = 0; j < p->nargs && j < 2; j++)
			argv[4 + j] = p->args[j];
		command(p->c, 4 + (p->nargs < 2 ? p->nargs : 2), argv, p->on_reply);
	}
}

/* The next SCAN batch of <p>, unless the last one is still out. */
static void scan(struct pass *p)
{
	const char *argv[] = { "SCAN", p->cursor, "MATCH", p->match, "COUNT", SCAN_COUNT };
	if (!p->scanning && rlink_command_strs(p->c->link, 6, argv, on_scan, p, 0) == 0)
		p->scanning = 1;
}

static void on_reaper_lease(const redisReply *r, const char *err, void *ud)
{
	struct cluster *c = ud;
	(void)r;
	if (err)
		return; /* another node reaps */
	scan(&c->sessions);
	scan(&c->dirs);
	scan(&c->inboxes);
}

/* ---- TLS ticket keys -------------------------------------------------- */

#define SEALED_TICKET_LEN (crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES + \
			   TLS_TICKET_KEY_LEN)

static void on_tickets(const redisReply *r, const char *err, void *ud)
{
	struct cluster *c = ud;
	uint8_t ring[TLS_TICKET_RING][TLS_TICKET_KEY_LEN];
	if (err || r->type != REDIS_REPLY_ARRAY || r->elements != TLS_TICKET_RING)
		return;
	for (int i = 0; i < TLS_TICKET_RING; i++) {
		const redisReply *v = r->element[i];
		if (v->type != REDIS_REPLY_STRING || v->len != SEALED_TICKET_LEN ||
		    crypto_secretbox_open_easy(ring[i], (const uint8_t *)v->str + crypto_secretbox_NONCEBYTES,
					       v->len - crypto_secretbox_NONCEBYTES,
					       (const uint8_t *)v->str, c->key)) {
			if (!c->warned_tickets++)
				log_error("cluster: the TLS ticket keys in Redis do not open with this node's "
					  "token key: tickets stay per node");
			sodium_memzero(ring, sizeof(ring));
			return;
		}
	}
	tls_tickets_set(ring);
	sodium_memzero(ring, sizeof(ring));
}

/* Fresh keys, sealed, for the ring to be made or rotated with. */
static void ask_tickets(struct cluster *c)
{
	uint8_t fresh[TLS_TICKET_RING][SEALED_TICKET_LEN], k[TLS_TICKET_KEY_LEN];
	const char *argv[8] = { "FCALL", "tether_tickets", "1", RKEY_PREFIX "{cluster}:tickets" };
	size_t lens[8];
	char period[16];
	for (int i = 0; i < TLS_TICKET_RING; i++) {
		randombytes_buf(k, sizeof(k));
		randombytes_buf(fresh[i], crypto_secretbox_NONCEBYTES);
		crypto_secretbox_easy(fresh[i] + crypto_secretbox_NONCEBYTES, k, sizeof(k), fresh[i],
				      c->key);
		argv[4 + i] = (const char *)fresh[i];
		lens[4 + i] = SEALED_TICKET_LEN;
	}
	snprintf(period, sizeof(period), "%u", CLUSTER_TICKET_ROTATE_MS);
	argv[7] = period;
	for (int i = 0; i < 4; i++)
		lens[i] = strlen(argv[i]);
	lens[7] = strlen(period);
	rlink_command(c->link, 8, argv, lens, on_tickets, c, 0, NULL);
	sodium_memzero(k, sizeof(k));
	sodium_memzero(fresh, sizeof(fresh));
}

static void on_tick(struct timer *t)
{
	struct cluster *c = (struct cluster *)((char *)t - offsetof(struct cluster, tick));
	const char *node[] = { "FCALL", "tether_lease_acquire", "1", c->lease_key, c->inc, c->ttl };
	const char *reap[] = { "FCALL", "tether_lease_acquire", "1", REAPER_KEY, c->inc, c->ttl };
	if (rlink_up(c->link)) {
		command(c, 6, node, on_node_lease);
		command(c, 6, reap, on_reaper_lease);
		ask_tickets(c);
	}
	timer_arm(c->wheel, &c->tick, c->tick_ms, on_tick);
}

static void pass_init(struct pass *p, struct cluster *c, const char *match, const char *fn,
		      rproto_fn *on_reply)
{
	p->c = c;
	p->match = match;
	p->fn = fn;
	p->on_reply = on_reply;
	snprintf(p->cursor, sizeof(p->cursor), "0");
}

struct cluster *cluster_new(struct rlink *link, struct timer_wheel *wheel, const uint8_t *key,
			    cluster_orphan_fn *fn, cluster_gone_fn *gone, void *ud)
{
	struct cluster *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->link = link;
	c->wheel = wheel;
	c->fn = fn;
	c->gone = gone;
	c->ud = ud;
	c->key = key;
	const char *self = nodes_name(BUS_NODE_SELF);
	snprintf(c->inc, sizeof(c->inc), "%s.%s", self, nodes_boot());
	snprintf(c->lease_key, sizeof(c->lease_key), RKEY_PREFIX "{node:%s}:lease", self);
	cluster_set_timing(c, CLUSTER_LEASE_MS, CLUSTER_TICK_MS);
	pass_init(&c->sessions, c, SESSION_MATCH, "tether_sm_reap", on_reaped);
	pass_init(&c->dirs, c, DIR_MATCH, "tether_dir_reap", on_dir_reaped);
	pass_init(&c->inboxes, c, INBOX_MATCH, "tether_inbox_reap", on_inbox_reaped);
	snprintf(c->batch, sizeof(c->batch), "%u", CLUSTER_INBOX_BATCH);
	c->inbox_args[0] = c->batch;
	c->inbox_args[1] = c->idle;
	c->inboxes.args = c->inbox_args;
	c->inboxes.nargs = 2;
	return c;
}

void cluster_set_timing(struct cluster *c, unsigned lease_ms, unsigned tick_ms)
{
	snprintf(c->ttl, sizeof(c->ttl), "%u", lease_ms);
	/* A live node's inbox reader reads at least every second (a blocking
	 * read's wait) plus its reply's round trip: a group read from within
	 * the lease's TTL and three seconds more is nobody's to reap. */
	snprintf(c->idle, sizeof(c->idle), "%u", lease_ms + 3000);
	c->tick_ms = tick_ms;
}

void cluster_start(struct cluster *c)
{
	timer_arm(c->wheel, &c->tick, c->tick_ms, on_tick);
}

void cluster_free(struct cluster *c)
{
	if (!c)
		return;
	timer_cancel(&c->tick);
	free(c);
}

size_t cluster_reaped(const struct cluster *c)
{
	return c->reaped;
}
