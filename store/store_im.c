/* store/store_im.c - IM data through the store: the synchronous calls over a backend's ops, and their asynchronous versions through a worker's handle. */
#include "tether/store_im.h"
#include "store_op.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tether/jid.h"
#include "tether/rmsg.h"
#include "tether/store.h"

/* ---- items ---------------------------------------------------------------- */

void im_item_clear(struct im_item *it)
{
	free(it->jid);
	free(it->name);
	free(it->pending);
	for (size_t i = 0; i < it->ngroups; i++)
		free(it->groups[i]);
	free(it->groups);
	memset(it, 0, sizeof(*it));
}

static char *dup_or_null(const char *s, int *fail)
{
	if (!s)
		return NULL;
	char *d = strdup(s);
	if (!d)
		*fail = 1;
	return d;
}

int im_item_copy(struct im_item *dst, const struct im_item *src)
{
	int fail = 0;
	memset(dst, 0, sizeof(*dst));
	dst->state = src->state;
	dst->visible = src->visible;
	dst->jid = dup_or_null(src->jid, &fail);
	dst->name = dup_or_null(src->name, &fail);
	dst->pending = dup_or_null(src->pending, &fail);
	if (src->ngroups) {
		dst->groups = calloc(src->ngroups, sizeof(char *));
		if (!dst->groups)
			fail = 1;
		for (size_t i = 0; dst->groups && i < src->ngroups; i++) {
			dst->groups[i] = dup_or_null(src->groups[i], &fail);
			dst->ngroups = i + 1;
		}
	}
	if (fail) {
		im_item_clear(dst);
		return -ENOMEM;
	}
	return 0;
}

void im_change_clear(struct im_change *c)
{
	im_item_clear(&c->item);
	memset(c, 0, sizeof(*c));
}

void im_sub_result_clear(struct im_sub_result *r)
{
	im_change_clear(&r->user);
	im_change_clear(&r->contact);
	memset(r, 0, sizeof(*r));
}

/* ---- synchronous ---------------------------------------------------------- */

int store_im_read(struct store *st, const char *bare, uint64_t *ver, store_im_item_fn *fn,
		  void *ud)
{
	*ver = 0;
	return st->ops->im_read ? st->ops->im_read(st, bare, ver, fn, ud) : -ENOTSUP;
}

int store_im_set(struct store *st, const char *bare, const struct im_item *it,
		 unsigned max_items, struct im_change *out)
{
	memset(out, 0, sizeof(*out));
	return st->ops->im_set ? st->ops->im_set(st, bare, it, max_items, out) : -ENOTSUP;
}

int store_im_remove(struct store *st, const char *bare, const char *jid, struct im_change *out,
		    struct im_change *contact_out)
{
	memset(out, 0, sizeof(*out));
	memset(contact_out, 0, sizeof(*contact_out));
	return st->ops->im_remove ? st->ops->im_remove(st, bare, jid, out, contact_out) : -ENOTSUP;
}

int store_im_sub(struct store *st, const char *user, const char *contact, enum sub_type type,
		 const char *stanza, unsigned max_items, struct im_sub_result *out)
{
	memset(out, 0, sizeof(*out));
	return st->ops->im_sub ? st->ops->im_sub(st, user, contact, type, stanza, max_items, out)
			       : -ENOTSUP;
}

int store_im_offline_add(struct store *st, const char *bare, const char *data, size_t len,
			 unsigned max)
{
	return st->ops->im_offline_add ? st->ops->im_offline_add(st, bare, data, len, max)
				       : -ENOTSUP;
}

int store_im_offline_take(struct store *st, const char *bare, store_im_msg_fn *fn, void *ud)
{
	return st->ops->im_offline_take ? st->ops->im_offline_take(st, bare, fn, ud) : -ENOTSUP;
}

int store_im_blocks(struct store *st, const char *bare, store_im_jid_fn *fn, void *ud)
{
	return st->ops->im_blocks ? st->ops->im_blocks(st, bare, fn, ud) : -ENOTSUP;
}

int store_im_block(struct store *st, const char *bare, enum im_block_op op, char *const *jids,
		   size_t n)
{
	return st->ops->im_block ? st->ops->im_block(st, bare, op, jids, n) : -ENOTSUP;
}

/* ---- asynchronous ---------------------------------------------------------- */

static void im_release(struct store_op *op)
{
	struct store_im_op *o = (struct store_im_op *)op;
	if (o->ud_free)
		o->ud_free(op->ud);
	o->ud_free = NULL;
	free(o->bare);
	free(o->jid);
	free(o->data);
	im_item_clear(&o->item);
	for (size_t i = 0; o->items && i < o->n; i++)
		im_item_clear(&o->items[i]);
	free(o->items);
	for (size_t i = 0; o->strs && i < o->n; i++)
		free(o->strs[i]);
	free(o->strs);
	free(o->lens);
	free(o->states);
	for (size_t i = 0; i < o->np; i++)
		free(o->pending[i]);
	free(o->pending);
	im_change_clear(&o->change);
	im_change_clear(&o->contact);
	im_sub_result_clear(&o->sub);
	for (size_t i = 0; i < o->nin; i++)
		free(o->in[i]);
	free(o->in);
	o->in = NULL;
	o->nin = 0;
	for (size_t i = 0; i < o->nq; i++)
		rmsg_unref(o->q[i].msg);
	free(o->q);
	free(o->sid);
	o->q = NULL;
	o->sid = NULL;
	o->nq = 0;
	o->bare = o->jid = o->data = NULL;
	o->items = NULL;
	o->strs = o->pending = NULL;
	o->lens = NULL;
	o->states = NULL;
	o->n = o->np = 0;
}

/* Grows <*arr> (elements of <size>) to hold one more; 0 or -ENOMEM. */
static int grow_array(void **arr, size_t size, size_t n, size_t *cap)
{
	if (n < *cap)
		return 0;
	size_t c = *cap ? *cap * 2 : 16;
	void *p = realloc(*arr, c * size);
	if (!p)
		return -ENOMEM;
	*arr = p;
	*cap = c;
	return 0;
}

static void collect_roster(void *ud, const struct im_item *it)
{
	struct store_im_op *o = ud;
	if (!it->visible || o->err)
		return;
	if (grow_array((void **)&o->items, sizeof(*o->items), o->n, &o->cap) ||
	    im_item_copy(&o->items[o->n], it)) {
		o->err = -ENOMEM;
		return;
	}
	free(o->items[o->n].pending); /* the request is not part of the roster */
	o->items[o->n].pending = NULL;
	o->n++;
}

static void collect_contacts(void *ud, const struct im_item *it)
{
	struct store_im_op *o = ud;
	if (o->err)
		return;
	int match = ((o->want & IM_WANT_FROM) && sub_has_from(it->state)) ||
		    ((o->want & IM_WANT_TO) && sub_has_to(it->state));
	if (match) {
		char *j = strdup(it->jid);
		size_t cap = o->cap;
		if (!j || grow_array((void **)&o->strs, sizeof(char *), o->n, &o->cap) ||
		    grow_array((void **)&o->states, 1, o->n, &cap)) {
			free(j);
			o->err = -ENOMEM;
			return;
		}
		o->states[o->n] = it->state;
		o->strs[o->n++] = j;
	}
	if ((o->want & IM_WANT_PENDING) && it->pending) {
		char *p = strdup(it->pending);
		if (!p || grow_array((void **)&o->pending, sizeof(char *), o->np, &o->capp)) {
			free(p);
			o->err = -ENOMEM;
			return;
		}
		o->pending[o->np++] = p;
	}
}

static void collect_msg(void *ud, const char *data, size_t len)
{
	struct store_im_op *o = ud;
	/* Already deleted from the store: a message that cannot be copied
	 * here (out of memory) is lost, and the error says so. */
	char *d = malloc(len + 1);
	if (!d || grow_array((void **)&o->strs, sizeof(char *), o->n, &o->cap) ||
	    grow_array((void **)&o->lens, sizeof(size_t), o->n, &o->capp)) {
		free(d);
		o->err = -ENOMEM;
		return;
	}
	memcpy(d, data, len);
	d[len] = 0;
	o->strs[o->n] = d;
	o->lens[o->n++] = len;
}

static void collect_jid(void *ud, const char *jid)
{
	struct store_im_op *o = ud;
	char *j = o->err ? NULL : strdup(jid);
	if (!j || grow_array((void **)&o->strs, sizeof(char *), o->n, &o->cap)) {
		free(j);
		o->err = -ENOMEM;
		return;
	}
	o->strs[o->n++] = j;
}

void store_im_collect_item(struct store_im_op *o, const struct im_item *it)
{
	if (o->op.kind == STORE_OP_IM_ROSTER)
		collect_roster(o, it);
	else
		collect_contacts(o, it);
}

void store_im_collect_msg(struct store_im_op *o, const char *data, size_t len)
{
	collect_msg(o, data, len);
}

void store_im_collect_jid(struct store_im_op *o, const char *jid)
{
	collect_jid(o, jid);
}

int store_im_collect_entry(struct store_im_op *o, const struct sm_entry *e)
{
	if (grow_array((void **)&o->q, sizeof(*o->q), o->nq, &o->capq)) {
		rmsg_unref(e->msg);
		return o->err = -ENOMEM;
	}
	o->q[o->nq++] = *e;
	return 0;
}

static void collect_block(void *ud, const char *jid)
{
	struct store_im_op *o = ud;
	char *j = strdup(jid);
	if (!j || grow_array((void **)&o->in, sizeof(char *), o->nin, &o->capin)) {
		free(j);
		o->err = -ENOMEM;
		return;
	}
	o->in[o->nin++] = j;
}

/* Offline record <data> (offline.c: <from>\x01<id>\x01<type>\x01<stanza>)
 * as the message a delivery to <bare> would be; NULL if unreadable or out
 * of memory. Its sender into <from> (<cap> bytes). */
static struct rmsg *record_msg(const char *bare, const char *data, size_t len, char *from,
			       size_t cap)
{
	const char *f[3], *p = data, *end = data + len;
	size_t l[3];
	char id[256], type[32];
	for (int i = 0; i < 3; i++) {
		const char *sep = memchr(p, '\x01', (size_t)(end - p));
		if (!sep)
			return NULL;
		f[i] = p;
		l[i] = (size_t)(sep - p);
		p = sep + 1;
	}
	if (l[0] >= cap || l[1] >= sizeof(id) || l[2] >= sizeof(type))
		return NULL;
	memcpy(from, f[0], l[0]);
	from[l[0]] = 0;
	memcpy(id, f[1], l[1]);
	id[l[1]] = 0;
	memcpy(type, f[2], l[2]);
	type[l[2]] = 0;
	return rmsg_new(RMSG_MESSAGE, p, (size_t)(end - p), from, bare, id, type);
}

/* Whether the account <bare> blocks <from> by one of the <n> <items>. */
static int blocked(const char *bare, const char *from, char *const *items, size_t n)
{
	size_t l = strlen(bare);
	if (!strncmp(from, bare, l) && (!from[l] || from[l] == '/'))
		return 0; /* the account's own JIDs never are */
	for (size_t i = 0; i < n; i++)
		if (jid_item_covers(items[i], from))
			return 1;
	return 0;
}

/* The memory backend's offline move, when it completes (so a cancelled one
 * never happened): the messages are taken, then appended one by one with
 * the owner's epoch; one the session no longer takes (taken over in
 * between) is handed on unnumbered (seq 0), for the caller to route. */
static void move_local(struct store *st, struct store_im_op *o)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	uint64_t now = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
	int rc = store_im_blocks(st, o->bare, collect_block, o);
	if (rc && rc != -ENOTSUP) {
		o->err = rc;
		return;
	}
	if ((rc = store_im_offline_take(st, o->bare, collect_msg, o)))
		o->err = rc;
	for (size_t i = 0; i < o->n; i++) {
		char from[JID_MAX + 1];
		struct bus_addr moved;
		struct rmsg *m = record_msg(o->bare, o->strs[i], o->lens[i], from, sizeof(from));
		if (!m || blocked(o->bare, from, o->in, o->nin)) {
			rmsg_unref(m);
			continue;
		}
		struct sm_entry e = { .stamp_ms = now, .msg = m };
		if (st->ops->sm_append(st, o->sid, o->epoch, &e, &moved))
			e.seq = 0; /* not in the queue: the caller routes it */
		store_im_collect_entry(o, &e);
	}
}

static void im_complete(struct store_op *op)
{
	struct store_im_op *o = (struct store_im_op *)op;
	struct store *st = op->h->st;
	int local = !st->ops->submit;
	o->ud_free = NULL; /* the callback takes <ud> */
	switch (op->kind) {
	case STORE_OP_IM_ROSTER:
		if (local) {
			int rc = store_im_read(st, o->bare, &o->ver, collect_roster, o);
			o->err = rc ? rc : o->err;
		}
		o->fn.roster(op->ud, o->err, o->ver, o->items, o->err ? 0 : o->n);
		break;
	case STORE_OP_IM_CONTACTS:
		if (local) {
			int rc = store_im_read(st, o->bare, &o->ver, collect_contacts, o);
			o->err = rc ? rc : o->err;
		}
		o->fn.contacts(op->ud, o->err, o->strs, o->states, o->err ? 0 : o->n, o->pending,
			       o->err ? 0 : o->np);
		break;
	case STORE_OP_IM_SET:
		o->fn.change(op->ud, o->err, &o->change, NULL);
		break;
	case STORE_OP_IM_REMOVE:
		o->fn.change(op->ud, o->err, &o->change, &o->contact);
		break;
	case STORE_OP_IM_SUB:
		o->fn.sub(op->ud, o->err, &o->sub);
		break;
	case STORE_OP_IM_OFFLINE_ADD:
	case STORE_OP_IM_BLOCK:
		if (o->fn.done)
			o->fn.done(op->ud, o->err);
		break;
	case STORE_OP_IM_BLOCKS:
		if (local) {
			int rc = store_im_blocks(st, o->bare, collect_jid, o);
			o->err = rc ? rc : o->err;
		}
		o->fn.blocks(op->ud, o->err, o->strs, o->err ? 0 : o->n);
		break;
	case STORE_OP_IM_OFFLINE_MOVE:
		if (local)
			move_local(st, o);
		o->fn.moved(op->ud, o->err, o->q, o->nq);
		break;
	default: /* STORE_OP_IM_OFFLINE_TAKE */
		if (local) {
			int rc = store_im_offline_take(st, o->bare, collect_msg, o);
			o->err = rc ? rc : o->err;
		}
		/* Even with -ENOMEM part way, what was copied is handed on. */
		o->fn.msgs(op->ud, o->err, o->strs, o->lens, o->n);
		break;
	}
}

static struct store_im_op *im_new(enum store_op_kind kind, const char *bare, void *ud)
{
	struct store_im_op *o = calloc(1, sizeof(*o));
	if (!o)
		return NULL;
	o->op.kind = kind;
	o->op.ud = ud;
	o->op.complete = im_complete;
	o->op.release = im_release;
	if (!(o->bare = strdup(bare))) {
		free(o);
		return NULL;
	}
	return o;
}

static void im_drop(struct store_im_op *o)
{
	im_release(&o->op);
	free(o);
}

/* Queues <o>; the memory backend's writes are performed here, now. */
static struct store_op *im_issue(struct store_handle *h, struct store_im_op *o)
{
	struct store *st = h->st;
	if (!st->ops->submit) {
		switch (o->op.kind) {
		case STORE_OP_IM_SET:
			o->err = store_im_set(st, o->bare, &o->item, o->max, &o->change);
			break;
		case STORE_OP_IM_REMOVE:
			o->err = store_im_remove(st, o->bare, o->jid, &o->change, &o->contact);
			break;
		case STORE_OP_IM_SUB:
			o->err = store_im_sub(st, o->bare, o->jid, o->type, o->data, o->max, &o->sub);
			break;
		case STORE_OP_IM_OFFLINE_ADD:
			o->err = store_im_offline_add(st, o->bare, o->data, o->len, o->max);
			break;
		case STORE_OP_IM_BLOCK:
			o->err = store_im_block(st, o->bare, o->bop, o->in, o->nin);
			break;
		default: /* reads: when they complete */
			break;
		}
	}
	store_op_enqueue(h, &o->op, &o->err);
	return &o->op;
}

void store_im_own_ud(struct store_op *op, void (*ud_free)(void *ud))
{
	((struct store_im_op *)op)->ud_free = ud_free;
}

struct store_op *store_im_roster_async(struct store_handle *h, const char *bare,
				       store_im_roster_fn *fn, void *ud)
{
	struct store_im_op *o = im_new(STORE_OP_IM_ROSTER, bare, ud);
	if (!o)
		return NULL;
	o->fn.roster = fn;
	return im_issue(h, o);
}

struct store_op *store_im_contacts_async(struct store_handle *h, const char *bare, unsigned want,
					 store_im_contacts_fn *fn, void *ud)
{
	struct store_im_op *o = im_new(STORE_OP_IM_CONTACTS, bare, ud);
	if (!o)
		return NULL;
	o->fn.contacts = fn;
	o->want = want;
	return im_issue(h, o);
}

struct store_op *store_im_set_async(struct store_handle *h, const char *bare,
				    const struct im_item *it, unsigned max_items,
				    store_im_change_fn *fn, void *ud)
{
	struct store_im_op *o = im_new(STORE_OP_IM_SET, bare, ud);
	if (!o)
		return NULL;
	if (im_item_copy(&o->item, it)) {
		im_drop(o);
		return NULL;
	}
	o->fn.change = fn;
	o->max = max_items;
	return im_issue(h, o);
}

struct store_op *store_im_remove_async(struct store_handle *h, const char *bare, const char *jid,
				       store_im_change_fn *fn, void *ud)
{
	struct store_im_op *o = im_new(STORE_OP_IM_REMOVE, bare, ud);
	if (!o)
		return NULL;
	if (!(o->jid = strdup(jid))) {
		im_drop(o);
		return NULL;
	}
	o->fn.change = fn;
	return im_issue(h, o);
}

struct store_op *store_im_sub_async(struct store_handle *h, const char *user, const char *contact,
				    enum sub_type type, const char *stanza, unsigned max_items,
				    store_im_sub_fn *fn, void *ud)
{
	struct store_im_op *o = im_new(STORE_OP_IM_SUB, user, ud);
	if (!o)
		return NULL;
	if (!(o->jid = strdup(contact)) || (stanza && !(o->data = strdup(stanza)))) {
		im_drop(o);
		return NULL;
	}
	o->fn.sub = fn;
	o->type = type;
	o->max = max_items;
	return im_issue(h, o);
}

struct store_op *store_im_offline_add_async(struct store_handle *h, const char *bare,
					    const char *data, size_t len, unsigned max,
					    store_im_done_fn *fn, void *ud)
{
	struct store_im_op *o = im_new(STORE_OP_IM_OFFLINE_ADD, bare, ud);
	if (!o)
		return NULL;
	if (!(o->data = malloc(len + 1))) {
		im_drop(o);
		return NULL;
	}
	memcpy(o->data, data, len);
	o->data[len] = 0;
	o->len = len;
	o->fn.done = fn;
	o->max = max;
	return im_issue(h, o);
}

struct store_op *store_im_offline_take_async(struct store_handle *h, const char *bare,
					     store_im_msgs_fn *fn, void *ud)
{
	struct store_im_op *o = im_new(STORE_OP_IM_OFFLINE_TAKE, bare, ud);
	if (!o)
		return NULL;
	o->fn.msgs = fn;
	return im_issue(h, o);
}

struct store_op *store_im_offline_move_async(struct store_handle *h, const char *bare,
					     const char *sid, uint32_t epoch,
					     store_im_moved_fn *fn, void *ud)
{
	struct store_im_op *o = im_new(STORE_OP_IM_OFFLINE_MOVE, bare, ud);
	if (!o)
		return NULL;
	if (!(o->sid = strdup(sid))) {
		im_drop(o);
		return NULL;
	}
	o->epoch = epoch;
	o->fn.moved = fn;
	return im_issue(h, o);
}

struct store_op *store_im_blocks_async(struct store_handle *h, const char *bare,
				       store_im_blocks_fn *fn, void *ud)
{
	struct store_im_op *o = im_new(STORE_OP_IM_BLOCKS, bare, ud);
	if (!o)
		return NULL;
	o->fn.blocks = fn;
	return im_issue(h, o);
}

struct store_op *store_im_block_async(struct store_handle *h, const char *bare,
				      enum im_block_op op, char *const *jids, size_t n,
				      store_im_done_fn *fn, void *ud)
{
	struct store_im_op *o = im_new(STORE_OP_IM_BLOCK, bare, ud);
	if (!o)
		return NULL;
	if (n && !(o->in = calloc(n, sizeof(char *)))) {
		im_drop(o);
		return NULL;
	}
	for (size_t i = 0; i < n; i++) {
		if (!(o->in[i] = strdup(jids[i]))) {
			im_drop(o);
			return NULL;
		}
		o->nin = i + 1;
	}
	o->bop = op;
	o->fn.done = fn;
	return im_issue(h, o);
}
