/* store/redis_async.c - the Redis backend's asynchronous operations: one FCALL per operation on the worker's rlink (deliveries: one per row of them, redis_deliver.c), decoded into the operation's result.
 *
 * store.c queues every operation a worker issues in one FIFO and completes
 * them in order once each is marked ready; this file is the "submit" half
 * for Redis. rstore_submit() encodes the operation as an FCALL of the
 * library (store/redis_lib.lua) and hands it to the worker's rlink, which
 * pipelines it behind what the worker sent before; the reply callback
 * decodes into the operation's result fields, exactly as the memory
 * backend would fill them, and marks it ready. Nothing here blocks; every
 * command has rlink's deadline. The IM kinds (store_im.h) are handed to
 * store/redis_im.c, which does the same for rosters, subscriptions,
 * offline messages and blocklists.
 *
 * Choices made here:
 * - Errors. An error reply of the library carries its errno name
 *   ("ESTALE a/0/3/1 4"): -ESTALE, -ENOENT, -EACCES, -ERANGE, -EEXIST as the
 *   memory backend returns them. A link that is down (or lost with the
 *   command outstanding) is -ENOTCONN, a deadline -ETIMEDOUT; anything
 *   else Redis says is -EIO.
 * - Sessions are keyed by account (t:{bare}:s:<sid>, for Redis Cluster:
 *   one slot per function), but an owner's writes name a session by id
 *   only (store.h). The backend keeps sid -> bare for the sessions this
 *   node created or took (a striped table shared by the workers: a
 *   session taken by another worker of the node is found there too),
 *   and forgets it when the session is destroyed, or is owned by another
 *   node. A session id is 128 random bits, so an entry never names
 *   someone else's session.
 * - Owners are stored as "<node>.<boot>/<worker>/<slot>/<gen>": the node's
 *   [cluster] name and this run's incarnation (nodes.h, redis_codec.c): an
 *   owner read back by the run that wrote it compares equal to the local
 *   address; one left by an earlier run of the node does not.
 * - Queue entries carry the stanza's kind and addressing attributes (the
 *   meta part, redis_codec.c) beside the payload, as separate FCALL
 *   arguments: the payload is copied once, into rproto's output, and a
 *   takeover rebuilds the routed message without parsing XML.
 * - Times: update sends a TTL (the record's monotonic deadline minus our
 *   monotonic now); Redis turns it into its own TIME. A record read back
 *   has expires_ms 0: Redis's clock is not ours.
 * - ISR (XEP-0397), two steps (the library's header says why the check
 *   cannot run in Lua): read the sealed token (FCALL_RO
 *   tether_sm_isr_get), verify the proof in C with ht_verify_sealed (the
 *   memory backend's check: constant time, a dummy token when there is
 *   none), then either take with the sealed bytes as the CAS proof (the
 *   take consumes the token only if it is still exactly those bytes: of
 *   any number of takes that read one token, at most one succeeds), or
 *   burn the token that failed (tether_sm_isr_burn; -EACCES with the
 *   record). The token is stored as its mech byte then the sealed bytes,
 *   so a token pinned to another channel binding fails like a wrong one.
 * - A take whose operation was cancelled (its stream went away) but that
 *   Redis performed is handed back by rstore_compensate(): detached, with
 *   its previous owner, expiring after its window (tether_sm_release,
 *   check-and-set on the epoch the take gave), so a later resume finds it.
 * - The FUNCTION library: every new connection of the link first sends
 *   FUNCTION LOAD (without REPLACE; rlink_set_hello): a Redis that
 *   restarted without persistence gets it back before the commands queued
 *   behind it run, and a node never swaps the library another node
 *   (maybe newer, during a rolling upgrade) loaded; tetherd's start does
 *   FUNCTION LOAD REPLACE once. A "Function not found" reply (FUNCTION
 *   FLUSH under a live link) loads it again, at most once a second per
 *   worker; the operation that saw it fails with -EIO.
 *
 * The reply callbacks take the operation as <ud>. An operation lives until
 * store_poll() has completed it, so it outlives its command, except when
 * the handle is detached with commands in flight: the worker detaches only
 * once its ring is gone (no callback can run any more), and a test must
 * stop the link first (rlink_stop fails the commands outstanding, marking
 * their operations ready) or free it without running it. */
#include "redis_keys.h"
#include "store_op.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>
#include <sodium.h>

#include "tether/bus.h"
#include "tether/ht.h"
#include "tether/jid.h"
#include "tether/log.h"
#include "tether/nodes.h"
#include "tether/redis_lib.h"
#include "tether/rlink.h"
#include "tether/rmsg.h"
#include "tether/shtab.h"
#include "tether/sm.h"
#include "tether/timer.h"

#define CMD_ARGS 20 /* the longest command: tether_deliver, 3 + 2 keys + 12 arguments */
#define META_STACK 512      /* an append's meta part that fits here needs no malloc */
#define RELOAD_EVERY_MS 1000

static struct redis_store *rs_of(struct store_handle *h)
{
	return (struct redis_store *)h->st;
}

/* ---- sid -> bare --------------------------------------------------------- */

struct sidnode {
	struct shtab_node node;  /* first */
	char sid[SM_ID_LEN + 1];
	char bare[];
};

static int sid_match(const struct shtab_node *n, const char *key)
{
	return !strcmp(((const struct sidnode *)n)->sid, key);
}

int rstore_sids_init(struct redis_store *s)
{
	s->sids = shtab_new(sid_match, 64);
	return s->sids ? 0 : -ENOMEM;
}

void rstore_sids_free(struct redis_store *s)
{
	if (s->sids)
		shtab_free(s->sids, shtab_node_free);
	s->sids = NULL;
}

/* Remembers that session <sid> is of account <bare>. 0, -EINVAL, -ENOMEM. */
static int sid_put(struct redis_store *s, const char *sid, const char *bare)
{
	size_t bl = strlen(bare);
	if (strlen(sid) > SM_ID_LEN || bl > RKEY_BARE_MAX)
		return -EINVAL;
	uint64_t hash = shtab_hash(s->sids, sid);
	struct shtab_stripe *st = shtab_lock(s->sids, hash, SHTAB_WRITE);
	int rc = 0;
	if (!shtab_find(st, hash, sid)) {
		struct sidnode *n = malloc(sizeof(*n) + bl + 1);
		if (n) {
			n->node.hash = hash;
			snprintf(n->sid, sizeof(n->sid), "%s", sid);
			memcpy(n->bare, bare, bl + 1);
			shtab_insert(st, &n->node);
		} else {
			rc = -ENOMEM;
		}
	}
	shtab_unlock(st);
	return rc;
}

/* Copies the account of session <sid> into <out>. 0 or -ENOENT. */
static int sid_bare(struct redis_store *s, const char *sid, char out[RKEY_BARE_MAX + 1])
{
	if (strlen(sid) > SM_ID_LEN)
		return -ENOENT;
	uint64_t hash = shtab_hash(s->sids, sid);
	struct shtab_stripe *st = shtab_lock(s->sids, hash, SHTAB_READ);
	struct sidnode *n = (struct sidnode *)shtab_find(st, hash, sid);
	if (n)
		memcpy(out, n->bare, strlen(n->bare) + 1);
	shtab_unlock(st);
	return n ? 0 : -ENOENT;
}

static void sid_drop(struct redis_store *s, const char *sid)
{
	if (strlen(sid) > SM_ID_LEN)
		return;
	uint64_t hash = shtab_hash(s->sids, sid);
	struct shtab_stripe *st = shtab_lock(s->sids, hash, SHTAB_WRITE);
	struct shtab_node *n = shtab_find(st, hash, sid);
	if (n)
		shtab_remove(st, n);
	shtab_unlock(st);
	free(n);
}

/* ---- commands ----------------------------------------------------------- */

struct cmd {
	int argc;
	const char *argv[CMD_ARGS];
	size_t lens[CMD_ARGS];
	char num[5][24];         /* decimal arguments */
};

static void arg(struct cmd *c, const char *p, size_t len)
{
	c->argv[c->argc] = p;
	c->lens[c->argc++] = len;
}

static void arg_s(struct cmd *c, const char *s)
{
	arg(c, s, strlen(s));
}

/* A decimal argument, kept in <c>'s num[<i>]. */
static void arg_u(struct cmd *c, int i, uint64_t v)
{
	int n = snprintf(c->num[i], sizeof(c->num[i]), "%" PRIu64, v);
	arg(c, c->num[i], (size_t)n);
}

static void arg_i(struct cmd *c, int i, int64_t v)
{
	int n = snprintf(c->num[i], sizeof(c->num[i]), "%" PRId64, v);
	arg(c, c->num[i], (size_t)n);
}

/* Issues <c> on the handle's link. 0, or -ENOTCONN (the link is down or
 * broken), -ENOBUFS, -ENOMEM. */
static int send_cmd(struct store_handle *h, struct cmd *c, rproto_fn *fn, void *ud)
{
	int rc = rlink_command(h->link, c->argc, c->argv, c->lens, fn, ud, 0, NULL);
	return rc == -EPIPE ? -ENOTCONN : rc;
}

static void on_loaded(const redisReply *r, const char *err, void *ud)
{
	(void)ud;
	if (err == rproto_err_reply && !strstr(r->str, "already exists"))
		log_error("redis: loading the tether FUNCTION library: %s", r->str);
	else if (!err)
		log_info("redis: the tether FUNCTION library was missing: loaded");
}

/* The library went missing under a live link: load it again (rate-limited:
 * every command pipelined behind the one that noticed says the same). */
static void reload(struct rlink *l)
{
	static __thread uint64_t last;
	uint64_t now = timer_now_ms();
	if (last && now - last < RELOAD_EVERY_MS)
		return;
	last = now;
	const char *argv[] = { "FUNCTION", "LOAD", redis_lib_lua };
	size_t lens[] = { 8, 4, redis_lib_lua_len };
	log_warn("redis: the tether FUNCTION library is missing; loading it");
	rlink_command(l, 3, argv, lens, on_loaded, NULL, 0, NULL);
}

/* The result of a reply callback as -errno (0: a reply that is not an
 * error), for operation <op>. */
int rstore_reply_err(struct store_op *op, const redisReply *r, const char *err)
{
	if (!err)
		return 0;
	if (err == rproto_err_reply) {
		if (rcodec_nofunc(r->str, r->len)) {
			reload(op->h->link);
			return -EIO;
		}
		return rcodec_errno(r->str, r->len);
	}
	if (err == rproto_err_timeout)
		return -ETIMEDOUT;
	if (err == rproto_err_closed)
		return -ENOTCONN;
	return -EIO; /* protocol error, reply too big */
}

/* Wipes the strings of reply <r> (secrets: hiredis's copy dies with it). */
static void wipe_reply(const redisReply *r)
{
	if (r->str && r->len)
		sodium_memzero(r->str, r->len);
	for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++)
		wipe_reply(r->element[i]);
}

/* ---- users ----------------------------------------------------------- */

static void on_user(const redisReply *r, const char *err, void *ud)
{
	struct store_user_op *u = ud;
	int rc = rstore_reply_err(&u->op, r, err);
	if (!rc)
		rc = rcodec_creds(r, &u->creds);
	if (r)
		wipe_reply(r);
	if (rc)
		scram_creds_wipe(&u->creds);
	u->err = rc;
	store_op_ready(&u->op);
}

static int submit_user(struct store_handle *h, struct store_user_op *u)
{
	struct cmd c = { 0 };
	char kuser[RKEY_LEN];
	if (rkey(kuser, u->bare, "user", NULL) < 0)
		return -ENOENT; /* no such key can exist */
	arg_s(&c, "FCALL_RO");
	arg_s(&c, "tether_user_get");
	arg_s(&c, "1");
	arg_s(&c, kuser);
	return send_cmd(h, &c, on_user, u);
}

/* ---- take --------------------------------------------------------------- */

/* The IM state a take returned (its reply's third element), copied into
 * <t>: without it (none written, or out of memory) the session resumes
 * with less restored, not at all is not an option once it is taken. */
static void take_im(const redisReply *r, struct store_take_op *t)
{
	const redisReply *im = r->elements >= 3 ? r->element[2] : NULL;
	if (!im || im->type != REDIS_REPLY_STRING || !im->len || !(t->im = malloc(im->len)))
		return;
	memcpy(t->im, im->str, im->len);
	t->rec.im = t->im;
	t->rec.im_len = im->len;
}

static void on_taken(const redisReply *r, const char *err, void *ud)
{
	struct store_take_op *t = ud;
	int rc = rstore_reply_err(&t->op, r, err);
	if (!rc) {
		char res[JID_PART_MAX + 1];
		/* A cancelled take is only undone: its queue is not needed. */
		rc = rcodec_taken(r, t->id, &t->rec, res, sizeof(res), !t->op.cancelled, &t->q, &t->n);
		if (rc == -EINVAL) {
			/* Taken, but the reply is not one we can read: nobody
			 * will use the session; it stays attached to an owner
			 * that is not there, and a later resume takes it. */
			log_error("redis: sm_take of a session of %s: unreadable reply", t->bare);
			rc = -EIO;
		} else if (!rc || rc == -ENOMEM) {
			t->has_rec = 1; /* taken: compensate needs the record */
			if (!rc && !(t->resource = strdup(res)))
				rc = -ENOMEM;
			if (!rc)
				take_im(r, t);
			if (!rc)
				sid_put(rs_of(t->op.h), t->id, t->bare);
		}
	}
	t->err = rc;
	store_op_ready(&t->op);
}

/* Sends the take itself; <proof>/<plen>: the stored ISR token the proof was
 * verified against ("" without a proof). */
static int take_send(struct store_handle *h, struct store_take_op *t, const char *proof,
		     size_t plen)
{
	struct cmd c = { 0 };
	char krec[RKEY_LEN], kq[RKEY_LEN], kisr[RKEY_LEN], owner[RCODEC_OWNER_MAX];
	if (rkey(krec, t->bare, "s", t->id) < 0 || rkey(kq, t->bare, "q", t->id) < 0 ||
	    rkey(kisr, t->bare, "isr", NULL) < 0)
		return -ENOENT; /* a key that cannot exist: an unknown session */
	if (rcodec_owner_fmt(&t->to, owner, sizeof(owner)) < 0)
		return -EINVAL;
	arg_s(&c, "FCALL");
	arg_s(&c, "tether_sm_take");
	arg_s(&c, "3");
	arg_s(&c, krec);
	arg_s(&c, kq);
	arg_s(&c, kisr);
	arg_s(&c, t->id);
	arg_s(&c, owner);
	arg(&c, proof, plen);
	return send_cmd(h, &c, on_taken, t);
}

/* The ISR proof failed: the token is burnt; -EACCES with the record after. */
static void on_burnt(const redisReply *r, const char *err, void *ud)
{
	struct store_take_op *t = ud;
	int rc = rstore_reply_err(&t->op, r, err);
	if (!rc) {
		char res[JID_PART_MAX + 1];
		if (!rcodec_record(r, t->id, &t->rec, res, sizeof(res)))
			t->has_rec = 1;
		rc = -EACCES;
	} else if (rc == -ENOENT) {
		rc = -EACCES; /* no such session of the account: no record */
	}
	t->err = rc;
	store_op_ready(&t->op);
}

static int burn_send(struct store_handle *h, struct store_take_op *t, const char *tok, size_t tl)
{
	struct cmd c = { 0 };
	char krec[RKEY_LEN], kisr[RKEY_LEN];
	if (rkey(krec, t->bare, "s", t->id) < 0 || rkey(kisr, t->bare, "isr", NULL) < 0)
		return -EACCES;
	arg_s(&c, "FCALL");
	arg_s(&c, "tether_sm_isr_burn");
	arg_s(&c, "2");
	arg_s(&c, krec);
	arg_s(&c, kisr);
	arg_s(&c, t->id);
	arg(&c, tok, tl);
	return send_cmd(h, &c, on_burnt, t);
}

/* Step 1's reply: the session's token (mech byte, sealed bytes) or nil.
 * The check runs whatever came back (no token, another mechanism: the
 * same work as a wrong token), then step 2 goes out from here. */
static void on_isr_token(const redisReply *r, const char *err, void *ud)
{
	struct store_take_op *t = ud;
	struct store_handle *h = t->op.h;
	int rc = rstore_reply_err(&t->op, r, err);
	if (rc) {
		t->err = rc;
		store_op_ready(&t->op);
		return;
	}
	const char *tok = r->type == REDIS_REPLY_STRING ? r->str : NULL;
	size_t tl = tok ? r->len : 0;
	int usable = tok && tl == 1 + TOKEN_SEALED_LEN && (uint8_t)tok[0] == t->proof.mech;
	int ok = ht_verify_sealed(t->proof.key, usable ? (const uint8_t *)tok + 1 : NULL,
				  t->proof.cb, t->proof.cb_len, t->proof.hash, t->proof.resp) &&
		 usable;
	if (ok && t->op.cancelled)
		rc = -ECANCELED; /* nobody waits for it: the take does not happen */
	else
		/* A failed attempt burns the token even if its stream is gone:
		 * closing fast must not save a guess from XEP-0397's rule. */
		rc = ok ? take_send(h, t, tok, tl) : burn_send(h, t, tok ? tok : "", tl);
	if (rc) {
		t->err = rc;
		store_op_ready(&t->op);
	}
}

static int submit_take(struct store_handle *h, struct store_take_op *t)
{
	if (!t->has_proof)
		return take_send(h, t, "", 0);
	struct cmd c = { 0 };
	char krec[RKEY_LEN], kisr[RKEY_LEN];
	if (rkey(krec, t->bare, "s", t->id) < 0 || rkey(kisr, t->bare, "isr", NULL) < 0)
		return -EACCES;
	arg_s(&c, "FCALL_RO");
	arg_s(&c, "tether_sm_isr_get");
	arg_s(&c, "2");
	arg_s(&c, krec);
	arg_s(&c, kisr);
	arg_s(&c, t->id);
	return send_cmd(h, &c, on_isr_token, t);
}

static void on_released(const redisReply *r, const char *err, void *ud)
{
	(void)ud;
	if (err)
		log_warn("redis: giving back a session nobody resumed: %s",
			 r ? r->str : err);
}

void rstore_compensate(struct store_handle *h, struct store_op *op)
{
	if (op->kind == STORE_OP_IM_OFFLINE_TAKE)
		rstore_im_compensate(h, op);
	if (op->kind != STORE_OP_SM_TAKE)
		return; /* writes stand; reads and CAS results are dropped */
	struct store_take_op *t = (struct store_take_op *)op;
	/* Taken: 0, or -ENOMEM copying what the take returned. Not taken, or
	 * not known to be (a lost reply): nothing to undo safely. */
	if (!t->has_rec || (t->err && t->err != -ENOMEM))
		return;
	struct cmd c = { 0 };
	char krec[RKEY_LEN], owner[RCODEC_OWNER_MAX];
	if (rkey(krec, t->bare, "s", t->id) < 0 ||
	    rcodec_owner_fmt(&t->rec.owner, owner, sizeof(owner)) < 0)
		return;
	arg_s(&c, "FCALL");
	arg_s(&c, "tether_sm_release");
	arg_s(&c, "1");
	arg_s(&c, krec);
	arg_u(&c, 0, t->rec.epoch);
	arg_s(&c, owner);
	int rc = send_cmd(h, &c, on_released, NULL);
	if (rc)
		log_warn("redis: cannot give back session of %s taken by a stream that closed: %s",
			 t->bare, strerror(-rc));
}

/* ---- FAST ------------------------------------------------------------- */

static void on_fast_got(const redisReply *r, const char *err, void *ud)
{
	struct store_fast_op *f = ud;
	int rc = rstore_reply_err(&f->op, r, err);
	memset(&f->slots, 0, sizeof(f->slots));
	if (!rc) {
		int64_t v;
		if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
		    r->element[0]->type != REDIS_REPLY_INTEGER || (v = r->element[0]->integer) < 0)
			rc = -EIO;
		else if (v == 0)
			rc = -ENOENT;
		else if (r->element[1]->type != REDIS_REPLY_STRING ||
			 rcodec_fast_unpack(r->element[1]->str, r->element[1]->len, &f->slots))
			rc = -EIO;
		else
			f->slots.version = (uint64_t)v;
		if (rc == -EIO)
			memset(&f->slots, 0, sizeof(f->slots));
		wipe_reply(r);
	}
	f->err = rc;
	store_op_ready(&f->op);
}

/* The reply of tether_fast_cas: the new version, or {new version, entries
 * the per-account cap evicted} from the library that has the cap. */
static void on_fast_cas(const redisReply *r, const char *err, void *ud)
{
	struct store_fast_op *f = ud;
	int rc = rstore_reply_err(&f->op, r, err);
	if (!rc) {
		const redisReply *v = r;
		f->slots.evicted = 0;
		if (r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
			v = r->element[0];
			if (r->element[1]->type == REDIS_REPLY_INTEGER && r->element[1]->integer > 0)
				f->slots.evicted = (uint32_t)r->element[1]->integer;
		}
		if (v->type != REDIS_REPLY_INTEGER || v->integer < 0)
			rc = -EIO;
		else
			f->slots.version = (uint64_t)v->integer;
	}
	f->err = rc;
	store_op_ready(&f->op);
}

static int submit_fast(struct store_handle *h, struct store_fast_op *f)
{
	struct cmd c = { 0 };
	char kfast[RKEY_LEN];
	uint8_t blob[RCODEC_FAST_LEN];
	if (rkey(kfast, f->bare, "fast", NULL) < 0)
		return -EINVAL;
	if (f->op.kind == STORE_OP_FAST_GET) {
		arg_s(&c, "FCALL_RO");
		arg_s(&c, "tether_fast_get");
		arg_s(&c, "1");
		arg_s(&c, kfast);
		arg_s(&c, f->ua_id);
		return send_cmd(h, &c, on_fast_got, f);
	}
	int none = !f->slots.fresh.valid && !f->slots.current.valid;
	uint64_t last = 0, now = sm_wall_ms();
	if (!none)
		rcodec_fast_pack(&f->slots, blob);
	if (f->slots.fresh.valid)
		last = f->slots.fresh.expiry_ms;
	if (f->slots.current.valid && f->slots.current.expiry_ms > last)
		last = f->slots.current.expiry_ms;
	arg_s(&c, "FCALL");
	arg_s(&c, "tether_fast_cas");
	arg_s(&c, "1");
	arg_s(&c, kfast);
	arg_s(&c, f->ua_id);
	arg_u(&c, 0, f->slots.version);
	arg(&c, (const char *)blob, none ? 0 : sizeof(blob));
	/* Until the entry's last token expires (wall clock, a TTL for Redis's
	 * TIME), and the per-account cap ([tokens] max_fast_per_account). */
	arg_u(&c, 1, last > now ? last - now : 0);
	arg_u(&c, 2, f->slots.max_entries);
	int rc = send_cmd(h, &c, on_fast_cas, f);
	sodium_memzero(blob, sizeof(blob));
	return rc;
}

/* ---- the owner's writes ------------------------------------------------- */

static void on_written(const redisReply *r, const char *err, void *ud)
{
	struct store_write_op *w = ud;
	int rc = rstore_reply_err(&w->op, r, err);
	/* A create names the session that held the resource before, if
	 * any, and its owner: the newer bind wins, the caller kicks it. */
	if (!rc && w->op.kind == STORE_OP_SM_CREATE && r->type == REDIS_REPLY_ARRAY &&
	    r->elements == 3 && r->element[2]->type == REDIS_REPLY_STRING)
		rcodec_owner_parse(r->element[2]->str, r->element[2]->len, &w->owner);
	/* An append answers {seq, owner}: the store numbers the entry. */
	if (!rc && w->op.kind == STORE_OP_SM_APPEND) {
		if (r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
		    r->element[0]->type == REDIS_REPLY_INTEGER)
			w->e.seq = (uint32_t)r->element[0]->integer;
		else
			rc = -EIO;
	}
	if (rc == -ESTALE) {
		rcodec_stale_owner(r->str, r->len, &w->owner); /* zeroed if unreadable */
		if (w->owner.node != BUS_NODE_SELF)
			sid_drop(rs_of(w->op.h), w->rec.id); /* another node's now */
	}
	w->err = rc;
	store_op_ready(&w->op);
}

static int submit_write(struct store_handle *h, struct store_write_op *w)
{
	struct redis_store *s = rs_of(h);
	struct cmd c = { 0 };
	char bare[RKEY_BARE_MAX + 1], krec[RKEY_LEN], k2[RKEY_LEN];
	char owner[RCODEC_OWNER_MAX], mstack[META_STACK], *meta = NULL;
	uint8_t tok[1 + TOKEN_SEALED_LEN];
	const struct sm_record *rec = &w->rec;
	int rc;
	if (w->op.kind == STORE_OP_SM_CREATE) {
		if ((rc = sid_put(s, rec->id, w->bare)))
			return rc;
		snprintf(bare, sizeof(bare), "%s", w->bare);
	} else if (sid_bare(s, rec->id, bare)) {
		return -ENOENT; /* not a session of this node's */
	}
	if (rkey(krec, bare, "s", rec->id) < 0)
		return -EINVAL;
	arg_s(&c, "FCALL");
	switch (w->op.kind) {
	case STORE_OP_SM_CREATE:
		if (rkey(k2, bare, "dir", NULL) < 0 || rcodec_owner_fmt(&rec->owner, owner, sizeof(owner)) < 0)
			return -EINVAL;
		arg_s(&c, "tether_sm_create");
		arg_s(&c, "2");
		arg_s(&c, krec);
		arg_s(&c, k2);
		arg_s(&c, rec->id);
		arg_s(&c, owner);
		arg_s(&c, w->resource);
		arg_u(&c, 0, rec->max);
		arg_u(&c, 1, rec->available ? 1 : 0);
		arg_i(&c, 2, rec->priority);
		break;
	case STORE_OP_SM_APPEND: {
		const struct rmsg *m = w->e.msg;
		size_t ml = rcodec_meta(m, mstack, sizeof(mstack));
		meta = mstack;
		if (ml > sizeof(mstack)) {
			if (!(meta = malloc(ml)))
				return -ENOMEM;
			rcodec_meta(m, meta, ml);
		}
		rkey(k2, bare, "q", rec->id);
		arg_s(&c, "tether_sm_append");
		arg_s(&c, "2");
		arg_s(&c, krec);
		arg_s(&c, k2);
		arg_u(&c, 0, rec->epoch);
		arg(&c, m->data, m->len);   /* the payload: copied once, into rproto */
		arg_s(&c, "0");             /* no queue limit: as the memory backend */
		arg(&c, meta, ml);
		break;
	}
	case STORE_OP_SM_ACK:
		rkey(k2, bare, "q", rec->id);
		arg_s(&c, "tether_sm_ack");
		arg_s(&c, "2");
		arg_s(&c, krec);
		arg_s(&c, k2);
		arg_u(&c, 0, rec->epoch);
		arg_u(&c, 1, w->h);
		break;
	case STORE_OP_SM_UPDATE: {
		uint64_t now = timer_now_ms();
		rkey(k2, bare, "dir", NULL);
		arg_s(&c, "tether_sm_update");
		arg_s(&c, "2");
		arg_s(&c, krec);
		arg_s(&c, k2);
		arg_s(&c, rec->id);
		arg_u(&c, 0, rec->epoch);
		arg_u(&c, 1, rec->c.h_in);
		arg_u(&c, 2, rec->max);
		arg_s(&c, rec->attached ? "1" : "0");
		arg_u(&c, 3, rec->expires_ms > now ? rec->expires_ms - now : 0); /* a TTL */
		arg_s(&c, rec->available ? "1" : "0");
		arg_i(&c, 4, rec->priority);
		if (rec->im)
			arg(&c, rec->im, rec->im_len);
		break;
	}
	default: /* STORE_OP_SM_SET_ISR */
		rkey(k2, bare, "isr", NULL);
		arg_s(&c, "tether_sm_set_isr");
		arg_s(&c, "2");
		arg_s(&c, krec);
		arg_s(&c, k2);
		arg_s(&c, rec->id);
		arg_u(&c, 0, rec->epoch);
		tok[0] = w->isr_mech;
		memcpy(tok + 1, w->isr_sealed, TOKEN_SEALED_LEN);
		arg(&c, (const char *)tok, w->set ? sizeof(tok) : 0);
		break;
	}
	rc = send_cmd(h, &c, on_written, w);
	if (meta != mstack)
		free(meta);
	sodium_memzero(tok, sizeof(tok));
	return rc;
}

/* ---- destroy ------------------------------------------------------------ */

static void on_destroyed(const redisReply *r, const char *err, void *ud)
{
	struct store_destroy_op *d = ud;
	struct redis_store *s = rs_of(d->op.h);
	int rc = rstore_reply_err(&d->op, r, err);
	if (!rc) {
		char res[JID_PART_MAX + 1], bare[RKEY_BARE_MAX + 1];
		rc = rcodec_taken(r, d->id, &d->rec, res, sizeof(res), !d->op.cancelled, &d->q, &d->n);
		if (!rc) {
			d->has_rec = 1;
			d->resource = strdup(res);
			d->bare = sid_bare(s, d->id, bare) ? NULL : strdup(bare);
			if (!d->resource || !d->bare)
				rc = -ENOMEM; /* the queue still goes to the callback */
		} else if (rc == -EINVAL) {
			log_error("redis: sm_destroy of session %s: unreadable reply", d->id);
			rc = -EIO;
		}
	}
	if (!rc || rc == -ENOENT || (rc == -ENOMEM && d->has_rec))
		sid_drop(s, d->id); /* gone from Redis */
	d->err = rc;
	store_op_ready(&d->op);
}

static int submit_destroy(struct store_handle *h, struct store_destroy_op *d)
{
	struct cmd c = { 0 };
	char bare[RKEY_BARE_MAX + 1], krec[RKEY_LEN], kq[RKEY_LEN], kisr[RKEY_LEN], kdir[RKEY_LEN];
	if (sid_bare(rs_of(h), d->id, bare))
		return -ENOENT;
	if (rkey(krec, bare, "s", d->id) < 0 || rkey(kq, bare, "q", d->id) < 0 ||
	    rkey(kisr, bare, "isr", NULL) < 0 || rkey(kdir, bare, "dir", NULL) < 0)
		return -EINVAL;
	arg_s(&c, "FCALL");
	arg_s(&c, "tether_sm_destroy");
	arg_s(&c, "4");
	arg_s(&c, krec);
	arg_s(&c, kq);
	arg_s(&c, kisr);
	arg_s(&c, kdir);
	arg_s(&c, d->id);
	arg_u(&c, 0, d->epoch);
	return send_cmd(h, &c, on_destroyed, d);
}

/* ---- notices to another node's inbox (redis_inbox.c) ------------------- */

static void on_noticed(const redisReply *r, const char *err, void *ud)
{
	struct store_notice_op *n = ud;
	n->err = rstore_reply_err(&n->op, r, err);
	store_op_ready(&n->op);
}

static int submit_notice(struct store_handle *h, struct store_notice_op *n)
{
	struct cmd c = { 0 };
	char key[RKEY_LEN], owner[RCODEC_OWNER_MAX];
	const char *node = nodes_name(n->to.node);
	if (!node || n->to.node == BUS_NODE_SELF || rinbox_key(key, node) < 0 ||
	    rcodec_owner_fmt(&n->to, owner, sizeof(owner)) < 0)
		return -EINVAL;
	arg_s(&c, "XADD");
	arg_s(&c, key);
	arg_s(&c, "MAXLEN");
	arg_s(&c, "~");
	arg_s(&c, RINBOX_MAXLEN);
	arg_s(&c, "*");
	arg_s(&c, "k");
	arg_i(&c, 0, n->kind);
	arg_s(&c, "c");
	arg_i(&c, 1, n->cond);
	arg_s(&c, "to");
	arg_s(&c, owner);
	return send_cmd(h, &c, on_noticed, n);
}

/* A barrier is a PING: its reply comes after those of everything before. */
static void on_pong(const redisReply *r, const char *err, void *ud)
{
	struct store_barrier_op *b = ud;
	b->err = rstore_reply_err(&b->op, r, err);
	store_op_ready(&b->op);
}

/* ---- the hooks ---------------------------------------------------------- */

int rstore_submit(struct store_handle *h, struct store_op *op)
{
	if (!h->link)
		return -ENOTCONN; /* a handle attached without a link (a tool) */
	if (op->kind == STORE_OP_DELIVER) /* sent with the next ones (redis_deliver.c) */
		return rstore_deliver_hold(h, (struct store_deliver_op *)op);
	rstore_deliver_flush(h); /* the deliveries held before it go first */
	switch (op->kind) {
	case STORE_OP_USER_GET:
		return submit_user(h, (struct store_user_op *)op);
	case STORE_OP_SM_TAKE:
		return submit_take(h, (struct store_take_op *)op);
	case STORE_OP_FAST_GET:
	case STORE_OP_FAST_CAS:
		return submit_fast(h, (struct store_fast_op *)op);
	case STORE_OP_SM_CREATE:
	case STORE_OP_SM_APPEND:
	case STORE_OP_SM_ACK:
	case STORE_OP_SM_UPDATE:
	case STORE_OP_SM_SET_ISR:
		return submit_write(h, (struct store_write_op *)op);
	case STORE_OP_SM_DESTROY:
		return submit_destroy(h, (struct store_destroy_op *)op);
	case STORE_OP_NODE_NOTICE:
		return submit_notice(h, (struct store_notice_op *)op);
	case STORE_OP_DIRECT:
		return rstore_submit_direct(h, op);
	case STORE_OP_DPRES:
		return rstore_submit_dpres(h, op);
	case STORE_OP_BARRIER: {
		struct cmd c = { 0 };
		arg_s(&c, "PING");
		return send_cmd(h, &c, on_pong, op);
	}
	case STORE_OP_IM_ROSTER:
	case STORE_OP_IM_CONTACTS:
	case STORE_OP_IM_SET:
	case STORE_OP_IM_REMOVE:
	case STORE_OP_IM_SUB:
	case STORE_OP_IM_OFFLINE_ADD:
	case STORE_OP_IM_OFFLINE_TAKE:
	case STORE_OP_IM_BLOCKS:
	case STORE_OP_IM_BLOCK:
	case STORE_OP_IM_OFFLINE_MOVE:
		return rstore_im_submit(h, op);
	default:
		break; /* kinds this backend does not run: they fail, in order */
	}
	return -ENOTSUP;
}

void rstore_attach(struct store_handle *h)
{
	if (!h->link)
		return;
	const char *argv[] = { "FUNCTION", "LOAD", redis_lib_lua };
	size_t lens[] = { 8, 4, redis_lib_lua_len };
	if (rlink_set_hello(h->link, 3, argv, lens, on_loaded, NULL))
		log_warn("redis: out of memory: a Redis that restarts empty will lack the library");
}
