/* store/redis_codec.c - what the Redis backend writes and reads besides plain strings: owners, queue entries, records, FAST slots, users.
 *
 * Socket-free and allocation-light, so tests/fuzz/fuzz_redis_take.c can
 * feed it any reply. A reply comes from our own library on a Redis we
 * trust, but a node must not crash on a reply another version of the
 * library (or a hand edit) left behind: every field is checked, and what
 * does not parse is -EINVAL, never a guess. */
#include "redis_keys.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "tether/bus.h"
#include "tether/nodes.h"
#include "tether/rmsg.h"

int rkey(char out[RKEY_LEN], const char *bare, const char *what, const char *sid)
{
	size_t bl = strlen(bare);
	if (bl > RKEY_BARE_MAX || strlen(what) > 8 || (sid && strlen(sid) > 40))
		return -EINVAL;
	return snprintf(out, RKEY_LEN, RKEY_PREFIX "{%s}:%s%s%s", bare, what, sid ? ":" : "",
			sid ? sid : "");
}

/* ---- errors ------------------------------------------------------------ */

int rcodec_errno(const char *str, size_t len)
{
	static const struct { const char *code; int err; } map[] = {
		{ "ENOENT", ENOENT }, { "EINVAL", EINVAL }, { "ESTALE", ESTALE },
		{ "EEXIST", EEXIST }, { "EACCES", EACCES }, { "ENOSPC", ENOSPC },
		{ "ERANGE", ERANGE }, { "EBUSY", EBUSY }, { "EDQUOT", EDQUOT },
	};
	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
		size_t cl = strlen(map[i].code);
		/* the code, then the end or a space: "ESTALEX" is not ours */
		if (len >= cl && !memcmp(str, map[i].code, cl) && (len == cl || str[cl] == ' '))
			return -map[i].err;
	}
	return -EIO;
}

int rcodec_nofunc(const char *str, size_t len)
{
	static const char nf[] = "Function not found";
	return len >= sizeof(nf) - 1 && memmem(str, len, nf, sizeof(nf) - 1) != NULL;
}

/* ---- numbers ----------------------------------------------------------- */

/* An unsigned decimal of <len> bytes, at most <max>. 0 or -1. */
static int dec_u64(const char *s, size_t len, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;
	if (!len || len > 20)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		unsigned d = (unsigned)(s[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	if (v > max)
		return -1;
	*out = v;
	return 0;
}

/* A field of a reply that is a number: an integer reply (Lua numbers) or a
 * string (hash values). Signed when <neg> is set. 0 or -1. */
static int field_num(const redisReply *r, int neg, uint64_t max, int64_t *out)
{
	if (r->type == REDIS_REPLY_INTEGER) {
		if ((r->integer < 0 && !neg) || (r->integer >= 0 && (uint64_t)r->integer > max) ||
		    (r->integer < 0 && (uint64_t)-(r->integer + 1) >= max))
			return -1;
		*out = r->integer;
		return 0;
	}
	if (r->type != REDIS_REPLY_STRING || !r->len)
		return -1;
	int minus = neg && r->str[0] == '-';
	uint64_t v;
	if (dec_u64(r->str + minus, r->len - (size_t)minus, max, &v))
		return -1;
	*out = minus ? -(int64_t)v : (int64_t)v;
	return 0;
}

/* ---- owners ------------------------------------------------------------ */

/* Owners name a node incarnation: "<name>.<boot>" (nodes.h; '.' is not
 * in node names). Ours is BUS_NODE_SELF only with our own incarnation: an
 * owner a previous run of this node left behind (slots and generations
 * start again at a restart) is another node's address, so a message meant
 * for it can never reach a stream that happens to hold the same slot and
 * generation now. Other nodes' owners are interned as written. */
int rcodec_owner_fmt(const struct bus_addr *a, char *out, size_t len)
{
	const char *node = nodes_name(a->node);
	int n;
	if (!node || !node[0])
		return -EINVAL;
	if (a->node == BUS_NODE_SELF)
		n = snprintf(out, len, "%s.%s/%u/%u/%u", node, nodes_boot(), a->worker, a->slot, a->gen);
	else
		n = snprintf(out, len, "%s/%u/%u/%u", node, a->worker, a->slot, a->gen);
	return n < 0 || (size_t)n >= len ? -EINVAL : n;
}

/* The number of the node part <s>/<len> of an owner. */
static uint16_t owner_node(const char *s, size_t len)
{
	const char *self = nodes_name(BUS_NODE_SELF), *boot = nodes_boot();
	size_t sl = strlen(self), bl = strlen(boot);
	if (sl && len == sl + 1 + bl && !memcmp(s, self, sl) && s[sl] == '.' &&
	    !memcmp(s + sl + 1, boot, bl))
		return BUS_NODE_SELF;
	if (sl && len == sl && !memcmp(s, self, sl)) {
		/* our name without an incarnation: not written by this run */
		char id[NODES_NAME_MAX + 2];
		memcpy(id, s, len);
		id[len] = '.';
		return nodes_intern_n(id, len + 1);
	}
	return nodes_intern_n(s, len);
}

int rcodec_owner_parse(const char *s, size_t len, struct bus_addr *out)
{
	const char *end = s + len, *p = memchr(s, '/', len);
	uint64_t v[3];
	memset(out, 0, sizeof(*out));
	if (!p || p == s)
		return -EINVAL;
	const char *q = p + 1;
	for (int i = 0; i < 3; i++) {
		const char *e = i < 2 ? memchr(q, '/', (size_t)(end - q)) : end;
		if (!e || dec_u64(q, (size_t)(e - q), i ? UINT32_MAX : UINT16_MAX, &v[i]))
			return -EINVAL;
		q = e + 1;
	}
	uint16_t node = owner_node(s, (size_t)(p - s));
	if (node == NODES_NONE)
		return -EINVAL;
	out->node = node;
	out->worker = (uint16_t)v[0];
	out->slot = (uint32_t)v[1];
	out->gen = (uint32_t)v[2];
	return 0;
}

int rcodec_stale_owner(const char *str, size_t len, struct bus_addr *out)
{
	/* "ESTALE <owner> <epoch>" */
	memset(out, 0, sizeof(*out));
	if (len < 7 || memcmp(str, "ESTALE ", 7))
		return -EINVAL;
	const char *o = str + 7, *sp = memchr(o, ' ', len - 7);
	if (!sp)
		return -EINVAL;
	return rcodec_owner_parse(o, (size_t)(sp - o), out);
}

/* ---- queue entries ----------------------------------------------------- */

size_t rcodec_meta(const struct rmsg *m, char *out, size_t len)
{
	const char *s[4] = { m->from, m->to, m->id, m->type };
	size_t need = 1;
	for (int i = 0; i < 4; i++)
		need += strlen(s[i]) + 1;
	if (need > len)
		return need;
	char *p = out;
	*p++ = (char)('0' + m->kind);
	for (int i = 0; i < 4; i++) {
		size_t l = strlen(s[i]) + 1;
		memcpy(p, s[i], l);
		p += l;
	}
	return need;
}

/* The kind of a stanza written without meta, from its element name. */
static enum rmsg_kind kind_of(const char *s, size_t len)
{
	if (len > 5 && !memcmp(s, "<pres", 5))
		return RMSG_PRESENCE;
	if (len > 3 && !memcmp(s, "<iq", 3))
		return RMSG_IQ;
	return RMSG_MESSAGE;
}

int rcodec_entry(const char *s, size_t len, struct sm_entry *e)
{
	const char *end = s + len, *c1 = memchr(s, ':', len), *c2;
	uint64_t seq, stamp;
	if (!c1 || dec_u64(s, (size_t)(c1 - s), UINT32_MAX, &seq) ||
	    !(c2 = memchr(c1 + 1, ':', (size_t)(end - c1 - 1))) ||
	    dec_u64(c1 + 1, (size_t)(c2 - c1 - 1), UINT64_MAX, &stamp))
		return -EINVAL;
	const char *p = c2 + 1, *attr[4] = { "", "", "", "" };
	enum rmsg_kind kind;
	if (p < end && *p >= '0' && *p <= '0' + RMSG_IQ) {
		kind = (enum rmsg_kind)(*p++ - '0');
		for (int i = 0; i < 4; i++) {
			const char *z = memchr(p, 0, (size_t)(end - p));
			if (!z)
				return -EINVAL;
			attr[i] = p;
			p = z + 1;
		}
	} else {
		kind = kind_of(p, (size_t)(end - p)); /* written without meta */
	}
	struct rmsg *m = rmsg_new(kind, p, (size_t)(end - p), attr[0], attr[1], attr[2], attr[3]);
	if (!m)
		return -ENOMEM;
	e->seq = (uint32_t)seq;
	e->stamp_ms = stamp;
	e->msg = m;
	return 0;
}

/* ---- records ----------------------------------------------------------- */

enum { R_EPOCH = 0, R_OWNER, R_RES, R_HIN, R_OUT, R_ACKED, R_MAX, R_ATT, R_AVAIL, R_PRIO, R_EXP,
       R_COUNT };

int rcodec_record(const redisReply *r, const char *sid, struct sm_record *rec, char *res,
		  size_t reslen)
{
	int64_t v[R_COUNT];
	static const struct { int neg; uint64_t max; } lim[R_COUNT] = {
		[R_EPOCH] = { 0, UINT32_MAX }, [R_HIN] = { 0, UINT32_MAX }, [R_OUT] = { 0, UINT32_MAX },
		[R_ACKED] = { 0, UINT32_MAX }, [R_MAX] = { 0, UINT32_MAX }, [R_ATT] = { 0, 1 },
		[R_AVAIL] = { 0, 1 }, [R_PRIO] = { 1, 128 }, [R_EXP] = { 0, INT64_MAX },
	};
	memset(rec, 0, sizeof(*rec));
	if (r->type != REDIS_REPLY_ARRAY || r->elements != R_COUNT)
		return -EINVAL;
	for (int i = 0; i < R_COUNT; i++)
		if (i != R_OWNER && i != R_RES && field_num(r->element[i], lim[i].neg, lim[i].max, &v[i]))
			return -EINVAL;
	const redisReply *o = r->element[R_OWNER], *rs = r->element[R_RES];
	if (o->type != REDIS_REPLY_STRING || rs->type != REDIS_REPLY_STRING || rs->len >= reslen ||
	    memchr(rs->str, 0, rs->len) || rcodec_owner_parse(o->str, o->len, &rec->owner))
		return -EINVAL;
	memcpy(res, rs->str, rs->len);
	res[rs->len] = 0;
	snprintf(rec->id, sizeof(rec->id), "%s", sid);
	rec->epoch = (uint32_t)v[R_EPOCH];
	rec->c.h_in = (uint32_t)v[R_HIN];
	rec->c.out = (uint32_t)v[R_OUT];
	rec->c.acked = (uint32_t)v[R_ACKED];
	rec->max = (unsigned)v[R_MAX];
	rec->attached = (int)v[R_ATT];
	rec->available = (int)v[R_AVAIL];
	rec->priority = (int)v[R_PRIO];
	return 0;
}

int rcodec_taken(const redisReply *r, const char *sid, struct sm_record *rec, char *res,
		 size_t reslen, int want_q, struct sm_entry **q, size_t *n)
{
	*q = NULL;
	*n = 0;
	if (r->type != REDIS_REPLY_ARRAY || r->elements < 2 || r->elements > 4 ||
	    r->element[1]->type != REDIS_REPLY_ARRAY)
		return -EINVAL;
	int rc = rcodec_record(r->element[0], sid, rec, res, reslen);
	rec->owner_dead = r->elements == 4 && r->element[3]->type == REDIS_REPLY_INTEGER &&
			  r->element[3]->integer == 1;
	const redisReply *l = r->element[1];
	if (rc || !want_q || !l->elements)
		return rc;
	for (size_t i = 0; i < l->elements; i++)
		if (l->element[i]->type != REDIS_REPLY_STRING)
			return -EINVAL;
	struct sm_entry *a = malloc(l->elements * sizeof(*a));
	if (!a)
		return -ENOMEM;
	for (size_t i = 0; i < l->elements; i++) {
		if ((rc = rcodec_entry(l->element[i]->str, l->element[i]->len, &a[i]))) {
			while (i--)
				rmsg_unref(a[i].msg);
			free(a);
			return rc;
		}
	}
	*q = a;
	*n = l->elements;
	return 0;
}

/* ---- FAST -------------------------------------------------------------- */

static void slot_pack(const struct fast_token *t, uint8_t *p)
{
	memset(p, 0, RCODEC_FAST_SLOT);
	if (!t->valid)
		return;
	p[0] = 1;
	p[1] = t->mech;
	for (int i = 0; i < 8; i++)
		p[2 + i] = (uint8_t)(t->expiry_ms >> (56 - 8 * i));
	memcpy(p + 10, t->sealed, TOKEN_SEALED_LEN);
}

static void slot_unpack(const uint8_t *p, struct fast_token *t)
{
	memset(t, 0, sizeof(*t));
	if (p[0] != 1)
		return;
	t->valid = 1;
	t->mech = p[1];
	for (int i = 0; i < 8; i++)
		t->expiry_ms = t->expiry_ms << 8 | p[2 + i];
	memcpy(t->sealed, p + 10, TOKEN_SEALED_LEN);
}

void rcodec_fast_pack(const struct fast_slots *in, uint8_t out[RCODEC_FAST_LEN])
{
	slot_pack(&in->fresh, out);
	slot_pack(&in->current, out + RCODEC_FAST_SLOT);
}

int rcodec_fast_unpack(const char *s, size_t len, struct fast_slots *out)
{
	uint64_t version = out->version;
	if (len != RCODEC_FAST_LEN) {
		memset(out, 0, sizeof(*out));
		out->version = version;
		return -EINVAL;
	}
	slot_unpack((const uint8_t *)s, &out->fresh);
	slot_unpack((const uint8_t *)s + RCODEC_FAST_SLOT, &out->current);
	return 0;
}

/* ---- users ------------------------------------------------------------- */

static int field_copy(uint8_t *dst, size_t want, const redisReply *v)
{
	if (v->type != REDIS_REPLY_STRING || v->len != want)
		return -EIO;
	memcpy(dst, v->str, want);
	return 0;
}

int rcodec_creds(const redisReply *r, struct user_creds *out)
{
	unsigned seen = 0;
	if (r->type != REDIS_REPLY_ARRAY || r->elements % 2)
		return -EIO;
	if (r->elements == 0)
		return -ENOENT;
	memset(out, 0, sizeof(*out));
	for (size_t i = 0; i < r->elements; i += 2) {
		const redisReply *k = r->element[i], *v = r->element[i + 1];
		int rc = 0;
		if (k->type != REDIS_REPLY_STRING)
			return -EIO;
		if (!strcmp(k->str, "salt")) {
			if (v->type != REDIS_REPLY_STRING || v->len < 1 || v->len > SCRAM_SALT_LEN)
				return -EIO;
			memcpy(out->salt, v->str, v->len);
			out->salt_len = (uint8_t)v->len;
			seen |= 1;
		} else if (!strcmp(k->str, "iter")) {
			uint64_t n;
			if (v->type != REDIS_REPLY_STRING || dec_u64(v->str, v->len, UINT32_MAX, &n) || !n)
				return -EIO;
			out->iterations = (uint32_t)n;
			seen |= 2;
		} else if (!strcmp(k->str, "stored_sha1")) {
			rc = field_copy(out->stored_key_sha1, 20, v);
			seen |= 4;
		} else if (!strcmp(k->str, "server_sha1")) {
			rc = field_copy(out->server_key_sha1, 20, v);
			seen |= 8;
		} else if (!strcmp(k->str, "stored_sha256")) {
			rc = field_copy(out->stored_key_sha256, 32, v);
			seen |= 16;
		} else if (!strcmp(k->str, "server_sha256")) {
			rc = field_copy(out->server_key_sha256, 32, v);
			seen |= 32;
		}
		if (rc)
			return rc;
	}
	return seen == 63 ? 0 : -EIO;
}
