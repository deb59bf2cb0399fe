/* store/redis.c - the Redis backend of the store: the blocking user operations (tetherctl), and the backend's constructor. */
/*
 * Two paths to one Redis:
 * - This file: the user operations through the FUNCTION library's
 *   tether_user_get / tether_user_put / tether_user_del (see
 *   store/redis_lib.lua for the key layout), and the user list (SCAN). They
 *   BLOCK on hiredis's synchronous API: right for tetherctl, wrong for a
 *   worker. (tetherd still opens this connection: a synchronous
 *   store_user_get() left in a caller works, blocking its worker.)
 * - store/redis_async.c: every operation a worker issues through its store
 *   handle (store.h, store_*_async), sent on the worker's rlink, pipelined,
 *   completed from the worker's loop. The synchronous session and FAST
 *   calls below stay -ENOTSUP: on a worker they would block it, and no
 *   other caller needs them.
 *
 * A user is the hash t:{<bare>}:user with these fields (binary values are
 * raw bytes; Redis strings are binary-safe):
 *   salt            the SCRAM salt (1..16 bytes)
 *   iter            iterations, decimal
 *   stored_sha1     StoredKey, SCRAM-SHA-1 (20 bytes)
 *   server_sha1     ServerKey, SCRAM-SHA-1 (20 bytes)
 *   stored_sha256   StoredKey, SCRAM-SHA-256 (32 bytes)
 *   server_sha256   ServerKey, SCRAM-SHA-256 (32 bytes)
 * A password change (tether_user_put) revokes the account's FAST tokens
 * (t:{<bare>}:fast) and ISR tokens (t:{<bare>}:isr) in the same function;
 * deleting a user (tether_user_del) also deletes its IM data
 * (t:{<bare>}:roster, :off, :block).
 *
 * IM data (store_im.h) goes through the asynchronous path only
 * (store/redis_im.c): the synchronous im_* ops are absent (-ENOTSUP), as
 * tetherctl does not use them.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>
#include <sodium.h>

#include "tether/redis_boot.h"
#include "tether/store.h"

#include "redis_keys.h"

#define KEY_PREFIX RKEY_PREFIX
#define KEY_MAX 1100      /* prefix + {bare} (JID_MAX 3071 is longer, but a bare JID is <= 2047) */

static struct redis_store *rs_of(struct store *st)
{
	return (struct redis_store *)st;
}

/* The three keys of account <bare> that the user functions take. -EINVAL
 * if <bare> is too long for them. */
struct ukeys {
	char user[KEY_MAX + 16], fast[KEY_MAX + 16], isr[KEY_MAX + 16];
};

static int ukeys_make(struct ukeys *k, const char *bare)
{
	if (strlen(bare) > KEY_MAX - 8)
		return -EINVAL;
	snprintf(k->user, sizeof(k->user), KEY_PREFIX "{%s}:user", bare);
	snprintf(k->fast, sizeof(k->fast), KEY_PREFIX "{%s}:fast", bare);
	snprintf(k->isr, sizeof(k->isr), KEY_PREFIX "{%s}:isr", bare);
	return 0;
}

/* Maps an error reply of the library ("ENOENT ...") to -errno. */
static int reply_errno(const redisReply *r)
{
	return rcodec_errno(r->str, r->len);
}

/* After a transport error the context is dead: reconnect once, so a
 * restart of Redis between two tetherctl steps is not fatal. */
static int reconnect(struct redis_store *s)
{
	char err[512];
	redisFree(s->rc);
	s->rc = redis_boot_connect(s->addr, err, sizeof(err));
	return s->rc ? 0 : -EIO;
}

/* Runs one command under the lock; returns the reply (the caller frees it)
 * or NULL with *<rc> = -errno. */
static redisReply *run(struct redis_store *s, int argc, const char **argv, const size_t *lens, int *rc)
{
	redisReply *r = NULL;
	*rc = 0;
	if (!s->rc && reconnect(s)) {
		*rc = -EIO;
		return NULL;
	}
	r = redisCommandArgv(s->rc, argc, argv, lens);
	if (!r) {
		/* Only on a broken connection: nothing was applied, or a
		 * function ran and its reply was lost. Every user function is
		 * idempotent (put replaces, del of a missing user is ENOENT),
		 * so one retry on a fresh connection is safe. */
		if (reconnect(s) == 0)
			r = redisCommandArgv(s->rc, argc, argv, lens);
		if (!r)
			*rc = -EIO;
	}
	return r;
}

static int r_user_get(struct store *st, const char *bare, struct user_creds *out)
{
	struct redis_store *s = rs_of(st);
	struct ukeys k;
	int rc = ukeys_make(&k, bare);
	memset(out, 0, sizeof(*out));
	if (rc)
		return rc;
	const char *argv[] = { "FCALL_RO", "tether_user_get", "1", k.user };
	size_t lens[] = { 8, 15, 1, strlen(k.user) };
	pthread_mutex_lock(&s->lock);
	redisReply *r = run(s, 4, argv, lens, &rc);
	if (r) {
		rc = r->type == REDIS_REPLY_ERROR ? reply_errno(r) : rcodec_creds(r, out);
		/* The reply held the keys: wipe hiredis's copy before freeing it. */
		if (r->type == REDIS_REPLY_ARRAY)
			for (size_t i = 0; i < r->elements; i++)
				if (r->element[i]->str)
					sodium_memzero(r->element[i]->str, r->element[i]->len);
		freeReplyObject(r);
	}
	pthread_mutex_unlock(&s->lock);
	if (rc)
		scram_creds_wipe(out);
	return rc;
}

/* The argv of tether_user_put for <bare>/<c>: 3 + 3 keys + 12 field/values. */
#define PUT_ARGC 18
struct put_args {
	struct ukeys k;
	char iter[16];
	const char *argv[PUT_ARGC];
	size_t lens[PUT_ARGC];
};

static int put_args_make(struct put_args *p, const char *bare, const struct user_creds *c)
{
	int rc = ukeys_make(&p->k, bare);
	if (rc)
		return rc;
	snprintf(p->iter, sizeof(p->iter), "%u", c->iterations);
	const char *argv[PUT_ARGC] = {
		"FCALL", "tether_user_put", "3", p->k.user, p->k.fast, p->k.isr,
		"salt", (const char *)c->salt, "iter", p->iter,
		"stored_sha1", (const char *)c->stored_key_sha1, "server_sha1", (const char *)c->server_key_sha1,
		"stored_sha256", (const char *)c->stored_key_sha256,
		"server_sha256", (const char *)c->server_key_sha256,
	};
	size_t lens[PUT_ARGC] = {
		5, 15, 1, strlen(p->k.user), strlen(p->k.fast), strlen(p->k.isr),
		4, scram_salt_len(c), 4, strlen(p->iter),
		11, 20, 11, 20, 13, 32, 13, 32,
	};
	memcpy(p->argv, argv, sizeof(argv));
	memcpy(p->lens, lens, sizeof(lens));
	return 0;
}

static int r_user_put(struct store *st, const char *bare, const struct user_creds *c)
{
	struct redis_store *s = rs_of(st);
	struct put_args p;
	int rc = put_args_make(&p, bare, c);
	if (rc)
		return rc;
	pthread_mutex_lock(&s->lock);
	redisReply *r = run(s, PUT_ARGC, p.argv, p.lens, &rc);
	if (r) {
		rc = r->type == REDIS_REPLY_ERROR ? reply_errno(r) : 0;
		freeReplyObject(r);
	}
	pthread_mutex_unlock(&s->lock);
	return rc;
}

/* Bulk import: all puts in one MULTI/EXEC, pipelined (one round trip).
 * EXEC runs them back to back, with no other client in between, and a
 * dropped connection before EXEC applies none of them. (Under Redis
 * Cluster a MULTI cannot span slots; there the import would go per user.) */
static int r_user_put_many(struct store *st, size_t n, const char *const *bares,
			   const struct user_creds *creds)
{
	struct redis_store *s = rs_of(st);
	struct put_args p;
	int rc = 0;
	for (size_t i = 0; i < n; i++) /* refuse a bad key before anything is sent */
		if (ukeys_make(&p.k, bares[i]))
			return -EINVAL;
	pthread_mutex_lock(&s->lock);
	if (!s->rc && reconnect(s)) {
		rc = -EIO;
		goto out;
	}
	redisAppendCommand(s->rc, "MULTI");
	for (size_t i = 0; i < n; i++) {
		put_args_make(&p, bares[i], &creds[i]);
		if (redisAppendCommandArgv(s->rc, PUT_ARGC, p.argv, p.lens) != REDIS_OK) {
			rc = -ENOMEM;
			break;
		}
	}
	if (!rc)
		redisAppendCommand(s->rc, "EXEC");
	else
		redisAppendCommand(s->rc, "DISCARD");
	/* MULTI's +OK, n x +QUEUED, then EXEC's array (or DISCARD's +OK). */
	for (size_t i = 0; i < n + 2; i++) {
		redisReply *r;
		if (redisGetReply(s->rc, (void **)&r) != REDIS_OK) {
			rc = -EIO; /* before EXEC arrived: nothing applied, or unknown */
			redisFree(s->rc);
			s->rc = NULL;
			goto out;
		}
		if (i == n + 1 && !rc) {
			if (r->type != REDIS_REPLY_ARRAY || r->elements != n)
				rc = r->type == REDIS_REPLY_ERROR ? reply_errno(r) : -EIO;
			else
				for (size_t j = 0; j < n && !rc; j++)
					if (r->element[j]->type == REDIS_REPLY_ERROR)
						rc = reply_errno(r->element[j]);
		} else if (r->type == REDIS_REPLY_ERROR && !rc) {
			rc = reply_errno(r); /* a refused queued command: EXEC aborts */
		}
		freeReplyObject(r);
	}
out:
	pthread_mutex_unlock(&s->lock);
	sodium_memzero(&p, sizeof(p));
	return rc;
}

/* Deletes the user, its tokens and its IM data (roster, offline messages,
 * blocklist) in one function. */
static int r_user_del(struct store *st, const char *bare)
{
	struct redis_store *s = rs_of(st);
	struct ukeys k;
	char roster[RKEY_LEN], off[RKEY_LEN], block[RKEY_LEN];
	int rc = ukeys_make(&k, bare);
	if (rc)
		return rc;
	if (rkey(roster, bare, "roster", NULL) < 0 || rkey(off, bare, "off", NULL) < 0 ||
	    rkey(block, bare, "block", NULL) < 0)
		return -EINVAL;
	const char *argv[] = { "FCALL", "tether_user_del", "6", k.user, k.fast, k.isr,
			       roster, off, block };
	size_t lens[9];
	for (int i = 0; i < 9; i++)
		lens[i] = strlen(argv[i]);
	pthread_mutex_lock(&s->lock);
	redisReply *r = run(s, 9, argv, lens, &rc);
	if (r) {
		rc = r->type == REDIS_REPLY_ERROR ? reply_errno(r) : 0;
		freeReplyObject(r);
	}
	pthread_mutex_unlock(&s->lock);
	return rc;
}

/* SCAN over t:{*}:user: not atomic (users added meanwhile may or may not be
 * listed), and SCAN may return a key twice (across a rehash), so <fn> may
 * see a JID twice: tetherctl sorts and drops repeats. */
static int r_user_list(struct store *st, void (*fn)(void *ud, const char *bare_jid), void *ud)
{
	struct redis_store *s = rs_of(st);
	static const char pat[] = KEY_PREFIX "{*}:user";
	char cursor[32] = "0";
	int rc = 0;
	pthread_mutex_lock(&s->lock);
	do {
		const char *argv[] = { "SCAN", cursor, "MATCH", pat, "COUNT", "1000" };
		size_t lens[] = { 4, strlen(cursor), 5, sizeof(pat) - 1, 5, 4 };
		redisReply *r = run(s, 6, argv, lens, &rc);
		if (!r)
			break;
		if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
		    r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_ARRAY ||
		    r->element[0]->len >= sizeof(cursor)) {
			rc = -EIO;
			freeReplyObject(r);
			break;
		}
		memcpy(cursor, r->element[0]->str, r->element[0]->len + 1);
		for (size_t i = 0; i < r->element[1]->elements; i++) {
			const redisReply *k = r->element[1]->element[i];
			size_t pl = sizeof(KEY_PREFIX "{") - 1, sl = sizeof("}:user") - 1;
			char bare[KEY_MAX];
			if (k->type != REDIS_REPLY_STRING || k->len <= pl + sl || k->len - pl - sl >= sizeof(bare))
				continue;
			memcpy(bare, k->str + pl, k->len - pl - sl);
			bare[k->len - pl - sl] = 0;
			fn(ud, bare);
		}
		freeReplyObject(r);
	} while (strcmp(cursor, "0"));
	pthread_mutex_unlock(&s->lock);
	return rc;
}

/* ---- administration (tetherctl) ------------------------------------------ */

static int64_t int_of(const redisReply *v)
{
	return v->type == REDIS_REPLY_INTEGER ? v->integer : 0;
}

static int r_sm_list(struct store *st, const char *bare,
		     void (*fn)(void *ud, const struct store_session_info *i), void *ud)
{
	struct redis_store *s = rs_of(st);
	char dir[RKEY_LEN], res[1100], sid[64], owner[256];
	int rc;
	if (rkey(dir, bare, "dir", NULL) < 0)
		return -EINVAL;
	const char *argv[] = { "FCALL_RO", "tether_sessions", "1", dir };
	size_t lens[] = { 8, 15, 1, strlen(dir) };
	pthread_mutex_lock(&s->lock);
	redisReply *r = run(s, 4, argv, lens, &rc);
	pthread_mutex_unlock(&s->lock);
	if (!r)
		return rc;
	rc = r->type == REDIS_REPLY_ERROR ? reply_errno(r) : r->type == REDIS_REPLY_ARRAY ? 0 : -EIO;
	for (size_t i = 0; !rc && i < r->elements; i++) {
		const redisReply *e = r->element[i];
		if (e->type != REDIS_REPLY_ARRAY || e->elements != 8)
			continue;
		snprintf(res, sizeof(res), "%.*s", (int)e->element[0]->len, e->element[0]->str);
		snprintf(sid, sizeof(sid), "%.*s", (int)e->element[1]->len, e->element[1]->str);
		snprintf(owner, sizeof(owner), "%.*s", (int)e->element[2]->len, e->element[2]->str);
		int64_t now = int_of(e->element[7]), since = int_of(e->element[4]);
		struct store_session_info info = {
			.resource = res, .sid = sid, .owner = owner,
			.attached = int_of(e->element[3]) == 1,
			.age_ms = since && now > since ? (uint64_t)(now - since) : 0,
			.expires_in_ms = int_of(e->element[5]) - now,
			.queued = (uint32_t)int_of(e->element[6]),
		};
		fn(ud, &info);
	}
	freeReplyObject(r);
	return rc;
}

static int r_notice(struct store *st, const char *node, int kind, int cond, const char *owner)
{
	struct redis_store *s = rs_of(st);
	char key[RKEY_LEN], k[16], c[16];
	int rc;
	if (rinbox_key(key, node) < 0)
		return -EINVAL;
	snprintf(k, sizeof(k), "%d", kind);
	snprintf(c, sizeof(c), "%d", cond);
	const char *argv[] = { "XADD", key, "MAXLEN", "~", RINBOX_MAXLEN, "*", "k", k, "c", c,
			       "to", owner };
	size_t lens[12];
	int argc = owner ? 12 : 10;
	for (int i = 0; i < argc; i++)
		lens[i] = strlen(argv[i]);
	pthread_mutex_lock(&s->lock);
	redisReply *r = run(s, argc, argv, lens, &rc);
	pthread_mutex_unlock(&s->lock);
	if (!r)
		return rc;
	rc = r->type == REDIS_REPLY_ERROR ? reply_errno(r) : 0;
	freeReplyObject(r);
	return rc;
}

static void r_close(struct store *st)
{
	struct redis_store *s = rs_of(st);
	rstore_sids_free(s);
	redisFree(s->rc);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

/* ---- synchronous sessions and tokens: not on this backend ----------------
 * A worker issues them through its handle (redis_async.c); blocking one
 * here would stall every stream of that worker for a round trip. */

static int r_sm_create(struct store *st, const struct sm_record *rec, const char *bare,
		       const char *resource)
{
	(void)st, (void)rec, (void)bare, (void)resource;
	return -ENOTSUP;
}

static int r_sm_append(struct store *st, const char *id, uint32_t epoch, struct sm_entry *e,
		       struct bus_addr *moved_to)
{
	(void)st, (void)id, (void)epoch, (void)e, (void)moved_to;
	return -ENOTSUP;
}

static int r_sm_ack(struct store *st, const char *id, uint32_t epoch, uint32_t h)
{
	(void)st, (void)id, (void)epoch, (void)h;
	return -ENOTSUP;
}

static int r_sm_update(struct store *st, const struct sm_record *rec)
{
	(void)st, (void)rec;
	return -ENOTSUP;
}

static int r_sm_take(struct store *st, const char *id, const char *bare, const struct bus_addr *to,
		     uint64_t now_ms, struct sm_isr_proof *proof, store_sm_take_fn *fn, void *ud)
{
	(void)st, (void)id, (void)bare, (void)to, (void)now_ms, (void)proof, (void)fn, (void)ud;
	return -ENOTSUP;
}

static int r_sm_destroy(struct store *st, const char *id, uint32_t epoch, store_sm_drain_fn *fn,
			void *ud)
{
	(void)st, (void)id, (void)epoch, (void)fn, (void)ud;
	return -ENOTSUP;
}

static int r_sm_set_isr(struct store *st, const char *id, uint32_t epoch, int set, uint8_t mech,
			const uint8_t sealed[TOKEN_SEALED_LEN])
{
	(void)st, (void)id, (void)epoch, (void)set, (void)mech, (void)sealed;
	return -ENOTSUP;
}

static int r_fast_get(struct store *st, const char *bare, const char *ua_id, struct fast_slots *out)
{
	(void)st, (void)bare, (void)ua_id;
	memset(out, 0, sizeof(*out));
	return -ENOTSUP;
}

static int r_fast_cas(struct store *st, const char *bare, const char *ua_id, struct fast_slots *in)
{
	(void)st, (void)bare, (void)ua_id, (void)in;
	return -ENOTSUP;
}

static const struct store_ops redis_ops = {
	.user_get = r_user_get,
	.user_put = r_user_put,
	.user_del = r_user_del,
	.close = r_close,
	.user_list = r_user_list,
	.sm_list = r_sm_list,
	.notice = r_notice,
	.sm_create = r_sm_create,
	.sm_append = r_sm_append,
	.sm_ack = r_sm_ack,
	.sm_update = r_sm_update,
	.sm_take = r_sm_take,
	.sm_destroy = r_sm_destroy,
	.sm_set_isr = r_sm_set_isr,
	.fast_get = r_fast_get,
	.fast_cas = r_fast_cas,
	.user_put_many = r_user_put_many,
	.submit = rstore_submit,
	.compensate = rstore_compensate,
	.attach = rstore_attach,
	.flush = rstore_deliver_flush,
	.detach = rstore_deliver_detach,
};

struct store *store_redis_open(const char *addr, char *err, size_t errlen)
{
	struct redis_store *s = calloc(1, sizeof(*s));
	if (!s) {
		snprintf(err, errlen, "store: out of memory");
		return NULL;
	}
	if (strlen(addr) >= sizeof(s->addr)) {
		snprintf(err, errlen, "redis at %s: address too long", addr);
		goto fail;
	}
	snprintf(s->addr, sizeof(s->addr), "%s", addr);
	s->st.ops = &redis_ops;
	if (rstore_sids_init(s)) {
		snprintf(err, errlen, "store: out of memory");
		goto fail;
	}
	pthread_mutex_init(&s->lock, NULL);
	s->rc = redis_boot_connect(addr, err, errlen);
	if (!s->rc)
		goto fail_lock;
	/* tetherctl may run before any node: load the library if it is not
	 * there, but never replace what a running node loaded. */
	if (redis_boot_load(s->rc, 0, err, errlen))
		goto fail_lock;
	return &s->st;
fail_lock:
	redisFree(s->rc);
	pthread_mutex_destroy(&s->lock);
	rstore_sids_free(s);
fail:
	free(s);
	return NULL;
}
