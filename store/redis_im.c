/* store/redis_im.c - the Redis backend's IM operations (store_im.h): rosters, subscriptions, offline messages and blocklists as FCALLs of the library's tether_im_* functions.
 *
 * The submit half of the IM kinds for Redis, beside redis_async.c's for the
 * session kinds: each operation is one FCALL on the worker's rlink
 * (pipelined, with the link's deadline; nothing blocks), and its reply is
 * decoded into the operation's result fields exactly as the memory backend
 * fills them: reads go through the same collectors (store_im.c), so a
 * roster read hands over the visible items only, a contacts read filters
 * by IM_WANT_*, as on memory. The semantics (versions, caps, hidden items,
 * both sides of a subscription in one step) live in store/redis_lib.lua,
 * which repeats memory_im.c's steps; its IM header gives the key layout.
 *
 * Choices made here:
 * - A subscription and a roster removal change two accounts, hence keys of
 *   two hash tags in one function (one Redis runs it; Redis Cluster would
 *   refuse it, like tether_deliver: see the library).
 * - Reads are performed when issued (Redis runs commands as they come), not
 *   when they complete as on memory. For an offline take that matters: a
 *   take whose caller went away (cancelled) deleted the messages all the
 *   same, so rstore_im_compensate() puts them back in front of the list
 *   (tether_im_off_restore), before anything stored since. A reply lost
 *   with the link (-ENOTCONN, -ETIMEDOUT) cannot be told from a take that
 *   did not run: those messages may be lost, as a delivered stanza whose
 *   ack is lost may be. That is why a session with XEP-0198 does not take
 *   them but moves them (tether_im_off_move): into its queue in the same
 *   step, where no lost reply or dead node can lose them.
 * - An account whose bare JID is too long for a key (RKEY_BARE_MAX) gets
 *   -EINVAL: no such account can exist on this backend.
 * - The synchronous im_* calls (store_im_read & co.) stay -ENOTSUP on this
 *   backend: they would block, and only the memory backend's tests and
 *   tools use them. */
#include "redis_keys.h"
#include "store_op.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "tether/log.h"
#include "tether/rlink.h"
#include "tether/store_im.h"

#define ARGS_STACK 16

/* ---- commands ----------------------------------------------------------- */

/* An argument vector of any length: on the stack up to ARGS_STACK. */
struct args {
	int argc, cap;
	const char **argv;
	size_t *lens;
	const char *sargv[ARGS_STACK];
	size_t slens[ARGS_STACK];
	char num[3][24];
};

/* Room for <n> arguments. 0 or -ENOMEM. */
static int args_init(struct args *a, size_t n)
{
	memset(a, 0, offsetof(struct args, sargv));
	a->argv = a->sargv;
	a->lens = a->slens;
	a->cap = ARGS_STACK;
	if (n <= ARGS_STACK)
		return 0;
	const char **argv = n > INT32_MAX ? NULL : calloc(n, sizeof(*argv));
	size_t *lens = argv ? calloc(n, sizeof(*lens)) : NULL;
	if (!lens) {
		free(argv);
		return -ENOMEM;
	}
	a->argv = argv;
	a->lens = lens;
	a->cap = (int)n;
	return 0;
}

static void args_free(struct args *a)
{
	if (a->argv != a->sargv)
		free(a->argv);
	if (a->lens != a->slens)
		free(a->lens);
}

static void arg(struct args *a, const char *p, size_t len)
{
	if (a->argc == a->cap)
		return; /* cannot happen: args_init sized it; the command goes out short and fails */
	a->argv[a->argc] = p;
	a->lens[a->argc++] = len;
}

static void arg_s(struct args *a, const char *s)
{
	arg(a, s, strlen(s));
}

/* A decimal argument, kept in <a>'s num[<i>]. */
static void arg_u(struct args *a, int i, uint64_t v)
{
	int n = snprintf(a->num[i], sizeof(a->num[i]), "%" PRIu64, v);
	arg(a, a->num[i], (size_t)n);
}

static void on_im(const redisReply *r, const char *err, void *ud);

/* Issues <a> for <o> on the handle's link; frees <a>. 0 or -errno. */
static int send_args(struct store_handle *h, struct store_im_op *o, struct args *a)
{
	int rc = rlink_command(h->link, a->argc, a->argv, a->lens, on_im, o, 0, NULL);
	args_free(a);
	return rc == -EPIPE ? -ENOTCONN : rc;
}

/* The FCALL prologue: <fn> of the library with <nkeys> keys. */
static void fcall(struct args *a, const char *fn, const char *nkeys, int ro)
{
	arg_s(a, ro ? "FCALL_RO" : "FCALL");
	arg_s(a, fn);
	arg_s(a, nkeys);
}

/* ---- replies ------------------------------------------------------------- */

static int is_int(const redisReply *r)
{
	return r && r->type == REDIS_REPLY_INTEGER;
}

static int is_arr(const redisReply *r, size_t n)
{
	return r && r->type == REDIS_REPLY_ARRAY && (n == SIZE_MAX || r->elements == n);
}

/* A copy of string reply <r> (NULL for nil). 0, -EIO (neither, or a string
 * with a NUL in it), -ENOMEM. */
static int str_dup(const redisReply *r, char **out)
{
	*out = NULL;
	if (r->type == REDIS_REPLY_NIL)
		return 0;
	if (r->type != REDIS_REPLY_STRING || memchr(r->str, 0, r->len))
		return -EIO;
	if (!(*out = malloc(r->len + 1)))
		return -ENOMEM;
	memcpy(*out, r->str, r->len);
	(*out)[r->len] = 0;
	return 0;
}

/* One item as the library answers it, {jid, state, visible, name, pending,
 * {groups}}, into <it> (cleared on failure). 0, -EIO, -ENOMEM. */
static int item_decode(const redisReply *r, struct im_item *it)
{
	int rc = -EIO;
	memset(it, 0, sizeof(*it));
	if (!is_arr(r, 6) || !is_int(r->element[1]) || !is_int(r->element[2]) ||
	    r->element[1]->integer < 0 || r->element[1]->integer >= SUB_STATE_COUNT ||
	    !is_arr(r->element[5], SIZE_MAX) || r->element[5]->elements > IM_GROUPS_MAX)
		return -EIO;
	it->state = (uint8_t)r->element[1]->integer;
	it->visible = r->element[2]->integer != 0;
	if ((rc = str_dup(r->element[0], &it->jid)) || !it->jid ||
	    (rc = str_dup(r->element[3], &it->name)) || (rc = str_dup(r->element[4], &it->pending)))
		goto fail;
	const redisReply *g = r->element[5];
	if (g->elements && !(it->groups = calloc(g->elements, sizeof(char *)))) {
		rc = -ENOMEM;
		goto fail;
	}
	for (size_t i = 0; i < g->elements; i++) {
		if ((rc = str_dup(g->element[i], &it->groups[i])))
			goto fail;
		it->ngroups = i + 1;
		if (!it->groups[i]) {
			rc = -EIO;
			goto fail;
		}
	}
	return 0;
fail:
	im_item_clear(it);
	return rc ? rc : -EIO;
}

/* {pushed, removed, version, item or nil} into <c>. 0, -EIO, -ENOMEM. */
static int change_decode(const redisReply *r, struct im_change *c)
{
	memset(c, 0, sizeof(*c));
	if (!is_arr(r, 4) || !is_int(r->element[0]) || !is_int(r->element[1]) ||
	    !is_int(r->element[2]) || r->element[2]->integer < 0)
		return -EIO;
	c->pushed = r->element[0]->integer != 0;
	c->removed = r->element[1]->integer != 0;
	c->ver = (uint64_t)r->element[2]->integer;
	if (r->element[3]->type == REDIS_REPLY_NIL)
		return c->pushed ? -EIO : 0;
	return item_decode(r->element[3], &c->item);
}

/* tether_im_sub's {contact exists, out next, out deliver, in next, in
 * deliver, in auto, auto-subscribed, user's change, contact's change}. */
static int sub_decode(const redisReply *r, struct im_sub_result *s)
{
	memset(s, 0, sizeof(*s));
	if (!is_arr(r, 9))
		return -EIO;
	for (int i = 0; i < 7; i++)
		if (!is_int(r->element[i]))
			return -EIO;
	long long on = r->element[1]->integer, in = r->element[3]->integer;
	if (on < 0 || on >= SUB_STATE_COUNT || in < 0 || in >= SUB_STATE_COUNT)
		return -EIO;
	s->contact_exists = r->element[0]->integer != 0;
	s->out.next = (enum sub_state)on;
	s->out.deliver = r->element[2]->integer != 0;
	s->in.next = (enum sub_state)in;
	s->in.deliver = r->element[4]->integer != 0;
	s->in.auto_subscribed = r->element[5]->integer != 0;
	s->auto_subscribed = (int)r->element[6]->integer;
	int rc = change_decode(r->element[7], &s->user);
	if (!rc)
		rc = change_decode(r->element[8], &s->contact);
	if (rc)
		im_sub_result_clear(s);
	return rc;
}

/* A roster read's {version, {item, ...}}, through the collectors. */
static int read_decode(const redisReply *r, struct store_im_op *o)
{
	if (!is_arr(r, 2) || !is_int(r->element[0]) || r->element[0]->integer < 0 ||
	    !is_arr(r->element[1], SIZE_MAX))
		return -EIO;
	o->ver = (uint64_t)r->element[0]->integer;
	const redisReply *items = r->element[1];
	for (size_t i = 0; i < items->elements && !o->err; i++) {
		struct im_item it;
		int rc = item_decode(items->element[i], &it);
		if (rc)
			return rc;
		store_im_collect_item(o, &it);
		im_item_clear(&it);
	}
	return o->err;
}

/* An array of strings: offline messages or blocked JIDs. */
static int strs_decode(const redisReply *r, struct store_im_op *o)
{
	if (!is_arr(r, SIZE_MAX))
		return -EIO;
	for (size_t i = 0; i < r->elements && !o->err; i++) {
		const redisReply *e = r->element[i];
		if (e->type != REDIS_REPLY_STRING)
			return -EIO;
		if (o->op.kind == STORE_OP_IM_OFFLINE_TAKE) {
			store_im_collect_msg(o, e->str, e->len);
		} else {
			if (memchr(e->str, 0, e->len))
				return -EIO;
			store_im_collect_jid(o, e->str);
		}
	}
	return o->err;
}

/* An offline move's entries, as queued ("<seq>:<stamp>:<meta><stanza>"). */
static int entries_decode(const redisReply *r, struct store_im_op *o)
{
	if (!is_arr(r, SIZE_MAX))
		return -EIO;
	for (size_t i = 0; i < r->elements && !o->err; i++) {
		const redisReply *e = r->element[i];
		struct sm_entry x;
		int rc = e->type == REDIS_REPLY_STRING ? rcodec_entry(e->str, e->len, &x) : -EIO;
		if (rc)
			return rc == -EINVAL ? -EIO : rc;
		store_im_collect_entry(o, &x);
	}
	return o->err;
}

static int decode(const redisReply *r, struct store_im_op *o)
{
	switch (o->op.kind) {
	case STORE_OP_IM_ROSTER:
	case STORE_OP_IM_CONTACTS:
		return read_decode(r, o);
	case STORE_OP_IM_SET:
		return change_decode(r, &o->change);
	case STORE_OP_IM_REMOVE: {
		if (!is_arr(r, 2))
			return -EIO;
		int rc = change_decode(r->element[0], &o->change);
		if (!rc)
			rc = change_decode(r->element[1], &o->contact);
		return rc;
	}
	case STORE_OP_IM_SUB:
		return sub_decode(r, &o->sub);
	case STORE_OP_IM_OFFLINE_TAKE:
	case STORE_OP_IM_BLOCKS:
		return strs_decode(r, o);
	case STORE_OP_IM_OFFLINE_MOVE:
		return entries_decode(r, o);
	default: /* offline add, block: a number */
		return is_int(r) ? 0 : -EIO;
	}
}

static void on_im(const redisReply *r, const char *err, void *ud)
{
	struct store_im_op *o = ud;
	int rc = rstore_reply_err(&o->op, r, err);
	if (!rc)
		rc = decode(r, o);
	if (rc == -EIO && !err)
		log_error("redis: IM operation %d for %s: unreadable reply", o->op.kind, o->bare);
	/* A change that failed half-decoded hands nothing on. */
	if (rc && (o->op.kind == STORE_OP_IM_SET || o->op.kind == STORE_OP_IM_REMOVE)) {
		im_change_clear(&o->change);
		im_change_clear(&o->contact);
	}
	o->err = rc;
	store_op_ready(&o->op);
}

/* ---- operations ---------------------------------------------------------- */

static int submit_read(struct store_handle *h, struct store_im_op *o)
{
	struct args a;
	char kr[RKEY_LEN];
	if (rkey(kr, o->bare, "roster", NULL) < 0)
		return -EINVAL;
	args_init(&a, 5);
	fcall(&a, "tether_im_read", "1", 1);
	arg_s(&a, kr);
	/* the contacts of a presence broadcast: no names or groups */
	arg_s(&a, o->op.kind == STORE_OP_IM_CONTACTS ? "1" : "0");
	return send_args(h, o, &a);
}

static int submit_set(struct store_handle *h, struct store_im_op *o)
{
	struct args a;
	char kr[RKEY_LEN];
	const struct im_item *it = &o->item;
	if (rkey(kr, o->bare, "roster", NULL) < 0)
		return -EINVAL;
	if (args_init(&a, 8 + it->ngroups))
		return -ENOMEM;
	fcall(&a, "tether_im_set", "1", 0);
	arg_s(&a, kr);
	arg_s(&a, it->jid);
	arg_u(&a, 0, o->max);
	arg_s(&a, it->name ? "1" : "0");
	arg_s(&a, it->name ? it->name : "");
	for (size_t i = 0; i < it->ngroups; i++)
		arg_s(&a, it->groups[i]);
	return send_args(h, o, &a);
}

static int submit_remove(struct store_handle *h, struct store_im_op *o)
{
	struct args a;
	char ku[RKEY_LEN], kc[RKEY_LEN];
	if (rkey(ku, o->bare, "roster", NULL) < 0)
		return -EINVAL;
	/* The item is the user himself, or a JID too long to be an account:
	 * there is no contact's side. */
	int two = strcmp(o->bare, o->jid) && rkey(kc, o->jid, "roster", NULL) >= 0;
	args_init(&a, 7);
	fcall(&a, "tether_im_remove", two ? "2" : "1", 0);
	arg_s(&a, ku);
	if (two)
		arg_s(&a, kc);
	arg_s(&a, o->bare);
	arg_s(&a, o->jid);
	return send_args(h, o, &a);
}

static int submit_sub(struct store_handle *h, struct store_im_op *o)
{
	struct args a;
	char ku[RKEY_LEN], kc[RKEY_LEN], kcu[RKEY_LEN];
	if (rkey(ku, o->bare, "roster", NULL) < 0 || rkey(kc, o->jid, "roster", NULL) < 0 ||
	    rkey(kcu, o->jid, "user", NULL) < 0)
		return -EINVAL;
	args_init(&a, 12);
	fcall(&a, "tether_im_sub", "3", 0);
	arg_s(&a, ku);
	arg_s(&a, kc);
	arg_s(&a, kcu);
	arg_s(&a, o->bare);
	arg_s(&a, o->jid);
	arg_u(&a, 0, (uint64_t)o->type);
	arg_s(&a, o->data ? "1" : "0");
	arg_s(&a, o->data ? o->data : "");
	arg_u(&a, 1, o->max);
	return send_args(h, o, &a);
}

static int submit_offline(struct store_handle *h, struct store_im_op *o)
{
	struct args a;
	char koff[RKEY_LEN], kuser[RKEY_LEN];
	if (rkey(koff, o->bare, "off", NULL) < 0 || rkey(kuser, o->bare, "user", NULL) < 0)
		return o->op.kind == STORE_OP_IM_OFFLINE_ADD ? -ENOENT : -EINVAL;
	args_init(&a, 7);
	if (o->op.kind == STORE_OP_IM_OFFLINE_TAKE) {
		fcall(&a, "tether_im_off_take", "1", 0);
		arg_s(&a, koff);
		return send_args(h, o, &a);
	}
	fcall(&a, "tether_im_off_add", "2", 0);
	arg_s(&a, koff);
	arg_s(&a, kuser);
	arg(&a, o->data, o->len);
	arg_u(&a, 0, o->max);
	return send_args(h, o, &a);
}

/* Into the session's queue, in one function (tether_im_off_move): nothing
 * to compensate if the caller goes away, the entries are in the queue. */
static int submit_move(struct store_handle *h, struct store_im_op *o)
{
	struct args a;
	char koff[RKEY_LEN], krec[RKEY_LEN], kq[RKEY_LEN], kb[RKEY_LEN];
	if (rkey(koff, o->bare, "off", NULL) < 0 || rkey(krec, o->bare, "s", o->sid) < 0 ||
	    rkey(kq, o->bare, "q", o->sid) < 0 || rkey(kb, o->bare, "block", NULL) < 0)
		return -EINVAL;
	args_init(&a, 9);
	fcall(&a, "tether_im_off_move", "4", 0);
	arg_s(&a, koff);
	arg_s(&a, krec);
	arg_s(&a, kq);
	arg_s(&a, kb);
	arg_u(&a, 0, o->epoch);
	arg_s(&a, o->bare);
	return send_args(h, o, &a);
}

static int submit_block(struct store_handle *h, struct store_im_op *o)
{
	static const char *const ops[] = {
		[IM_BLOCK_ADD] = "add", [IM_BLOCK_REMOVE] = "remove", [IM_BLOCK_CLEAR] = "clear",
	};
	struct args a;
	char kb[RKEY_LEN];
	if (rkey(kb, o->bare, "block", NULL) < 0 || (unsigned)o->bop > IM_BLOCK_CLEAR)
		return -EINVAL;
	if (o->op.kind == STORE_OP_IM_BLOCKS) {
		args_init(&a, 4);
		fcall(&a, "tether_im_blocks", "1", 1);
		arg_s(&a, kb);
		return send_args(h, o, &a);
	}
	if (args_init(&a, 6 + o->nin))
		return -ENOMEM;
	fcall(&a, "tether_im_block", "1", 0);
	arg_s(&a, kb);
	arg_s(&a, ops[o->bop]);
	arg_u(&a, 0, IM_BLOCKLIST_MAX);
	for (size_t i = 0; o->bop != IM_BLOCK_CLEAR && i < o->nin; i++)
		arg_s(&a, o->in[i]);
	return send_args(h, o, &a);
}

int rstore_im_submit(struct store_handle *h, struct store_op *op)
{
	struct store_im_op *o = (struct store_im_op *)op;
	switch (op->kind) {
	case STORE_OP_IM_ROSTER:
	case STORE_OP_IM_CONTACTS:
		return submit_read(h, o);
	case STORE_OP_IM_SET:
		return submit_set(h, o);
	case STORE_OP_IM_REMOVE:
		return submit_remove(h, o);
	case STORE_OP_IM_SUB:
		return submit_sub(h, o);
	case STORE_OP_IM_OFFLINE_ADD:
	case STORE_OP_IM_OFFLINE_TAKE:
		return submit_offline(h, o);
	case STORE_OP_IM_BLOCKS:
	case STORE_OP_IM_BLOCK:
		return submit_block(h, o);
	case STORE_OP_IM_OFFLINE_MOVE:
		return submit_move(h, o);
	default:
		return -ENOTSUP;
	}
}

/* ---- a take nobody used --------------------------------------------------- */

static void on_restored(const redisReply *r, const char *err, void *ud)
{
	char *bare = ud;
	if (err)
		log_warn("redis: offline messages of %s taken by a stream that closed, not put back: %s",
			 bare, r && r->str ? r->str : err);
	free(bare);
}

void rstore_im_compensate(struct store_handle *h, struct store_op *op)
{
	struct store_im_op *o = (struct store_im_op *)op;
	struct args a;
	char koff[RKEY_LEN], *bare;
	if (op->kind != STORE_OP_IM_OFFLINE_TAKE || !o->n || !h->link)
		return;
	if (rkey(koff, o->bare, "off", NULL) < 0 || !(bare = strdup(o->bare)))
		return;
	if (args_init(&a, 4 + o->n)) {
		free(bare);
		log_warn("redis: out of memory: %zu offline messages of %s lost", o->n, o->bare);
		return;
	}
	fcall(&a, "tether_im_off_restore", "1", 0);
	arg_s(&a, koff);
	for (size_t i = 0; i < o->n; i++)
		arg(&a, o->strs[i], o->lens[i]);
	int rc = rlink_command(h->link, a.argc, a.argv, a.lens, on_restored, bare, 0, NULL);
	args_free(&a);
	if (rc) {
		log_warn("redis: cannot put back %zu offline messages of %s: %s", o->n, o->bare,
			 strerror(-rc));
		free(bare);
	}
}
