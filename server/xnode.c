/* server/xnode.c - parsed XML element trees: bump arena, tree helpers, serializer. */
#include "tether/xnode.h"

#include <errno.h>
#include <stdalign.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tether/sbuf.h"

/* The attribute namespace written with the reserved "xml:" prefix. Spelled
 * out here (not taken from xstream.h) so that xnode stays below xstream. */
#define NS_XML "http://www.w3.org/XML/1998/namespace"

/* ------------------------------------------------------------------------
 * Arena
 *
 * A list of blocks; allocation bumps a pointer in the newest block. Blocks
 * double from ARENA_BLOCK_MIN up to ARENA_BLOCK_MAX, so a small stanza costs
 * one malloc for the whole connection life and a 256 KiB one a handful.
 * A request larger than half the next block size gets a block of its own
 * that is linked *behind* the current one, so the current block keeps
 * serving small requests (a big text node does not waste the rest of it).
 */

#define ARENA_BLOCK_MIN ((size_t)4096)
#define ARENA_BLOCK_MAX ((size_t)1 << 20)
#define ARENA_ALIGN     ((size_t)16)

struct arena_block {
	struct arena_block *next;
	size_t size;   /* bytes of data[] */
	size_t used;
	alignas(16) unsigned char data[];
};

struct xarena {
	struct arena_block *head;  /* the block we bump in; others follow */
	size_t next_size;          /* data size of the next standard block */
	size_t bytes;              /* data bytes of all blocks held */
};

_Static_assert(alignof(max_align_t) >= ARENA_ALIGN, "malloc must return 16-byte aligned memory");

struct xarena *xarena_new(void)
{
	/* No block yet: it is allocated on first use, so an idle stream whose
	 * arena was trimmed holds only this struct. */
	struct xarena *a = calloc(1, sizeof(*a));
	if (a)
		a->next_size = ARENA_BLOCK_MIN;
	return a;
}

static struct arena_block *block_new(size_t size)
{
	if (size > SIZE_MAX - sizeof(struct arena_block))
		return NULL;
	struct arena_block *b = malloc(sizeof(*b) + size);
	if (!b)
		return NULL;
	b->next = NULL;
	b->size = size;
	b->used = 0;
	return b;
}

/* Returns <size> bytes aligned on <align> (a power of two <= 16). */
static void *arena_alloc(struct xarena *a, size_t size, size_t align)
{
	struct arena_block *b = a->head;
	if (b) {
		size_t off = (b->used + align - 1) & ~(align - 1);
		if (off <= b->size && size <= b->size - off) {
			b->used = off + size;
			return b->data + off;
		}
	}
	if (size > a->next_size / 2 && b) {
		/* Dedicated block, kept behind the current one. */
		struct arena_block *big = block_new(size);
		if (!big)
			return NULL;
		a->bytes += size;
		big->used = size;
		big->next = b->next;
		b->next = big;
		return big->data;
	}
	size_t bsize = a->next_size;
	while (bsize < size)
		bsize *= 2;
	struct arena_block *nb = block_new(bsize);
	if (!nb)
		return NULL;
	a->bytes += bsize;
	if (a->next_size < ARENA_BLOCK_MAX)
		a->next_size *= 2;
	nb->next = b;
	nb->used = size;
	a->head = nb;
	return nb->data;
}

size_t xarena_bytes(const struct xarena *a)
{
	return a->bytes;
}

void *xarena_alloc(struct xarena *a, size_t size)
{
	return arena_alloc(a, size ? size : 1, ARENA_ALIGN);
}

char *xarena_strndup(struct xarena *a, const char *s, size_t len)
{
	if (len == SIZE_MAX)
		return NULL;
	char *p = arena_alloc(a, len + 1, 1);
	if (!p)
		return NULL;
	memcpy(p, s, len);
	p[len] = 0;
	return p;
}

/* Keeps one minimum-size block (the common case: a connection whose stanzas
 * all fit in 4 KiB never mallocs again) and frees the rest. */
void xarena_reset(struct xarena *a)
{
	struct arena_block *keep = NULL, *b = a->head;
	while (b) {
		struct arena_block *next = b->next;
		if (!keep && b->size == ARENA_BLOCK_MIN) {
			keep = b;
			keep->used = 0;
			keep->next = NULL;
		} else {
			free(b);
		}
		b = next;
	}
	a->head = keep;
	a->next_size = keep ? 2 * ARENA_BLOCK_MIN : ARENA_BLOCK_MIN;
	a->bytes = keep ? keep->size : 0;
}

void xarena_free(struct xarena *a)
{
	if (!a)
		return;
	struct arena_block *b = a->head;
	while (b) {
		struct arena_block *next = b->next;
		free(b);
		b = next;
	}
	free(a);
}

/* ------------------------------------------------------------------------
 * Trees
 */

struct xnode *xnode_new(struct xarena *a, const char *ns, const char *name)
{
	struct xnode *n = xarena_alloc(a, sizeof(*n));
	if (!n)
		return NULL;
	memset(n, 0, sizeof(*n));
	n->arena = a;
	n->name = xarena_strndup(a, name, strlen(name));
	n->ns = ns ? xarena_strndup(a, ns, strlen(ns)) : "";
	if (!n->name || !n->ns)
		return NULL;
	return n;
}

struct xnode *xnode_new_text(struct xarena *a, const char *text, size_t len)
{
	struct xnode *n = xarena_alloc(a, sizeof(*n));
	if (!n)
		return NULL;
	memset(n, 0, sizeof(*n));
	n->arena = a;
	n->ns = "";
	n->text = xarena_strndup(a, text, len);
	n->text_len = len;
	return n->text ? n : NULL;
}

struct xnode *xnode_copy(struct xarena *a, const struct xnode *n)
{
	struct xnode *c = n->name ? xnode_new(a, n->ns, n->name) : xnode_new_text(a, n->text, n->text_len);
	if (!c)
		return NULL;
	struct xattr **tail = &c->attrs;
	for (const struct xattr *at = n->attrs; at; at = at->next) {
		struct xattr *ca = xarena_alloc(a, sizeof(*ca));
		if (!ca)
			return NULL;
		ca->name = xarena_strndup(a, at->name, strlen(at->name));
		ca->value = xarena_strndup(a, at->value, strlen(at->value));
		ca->ns = at->ns ? xarena_strndup(a, at->ns, strlen(at->ns)) : NULL;
		ca->next = NULL;
		if (!ca->name || !ca->value || (at->ns && !ca->ns))
			return NULL;
		*tail = ca;
		tail = &ca->next;
	}
	for (const struct xnode *k = n->children; k; k = k->next) {
		struct xnode *ck = xnode_copy(a, k);
		if (!ck)
			return NULL;
		xnode_append(c, ck);
	}
	return c;
}

void xnode_append(struct xnode *parent, struct xnode *child)
{
	child->parent = parent;
	child->next = NULL;
	if (parent->last_child)
		parent->last_child->next = child;
	else
		parent->children = child;
	parent->last_child = child;
}

const char *xnode_attr(const struct xnode *n, const char *name)
{
	for (const struct xattr *a = n->attrs; a; a = a->next)
		if ((!a->ns || !*a->ns) && strcmp(a->name, name) == 0)
			return a->value;
	return NULL;
}

struct xnode *xnode_first_elem(const struct xnode *n)
{
	struct xnode *c = n->children;
	while (c && !c->name)
		c = c->next;
	return c;
}

struct xnode *xnode_next_elem(const struct xnode *n)
{
	struct xnode *c = n->next;
	while (c && !c->name)
		c = c->next;
	return c;
}

struct xnode *xnode_child(const struct xnode *n, const char *ns, const char *name)
{
	for (struct xnode *c = xnode_first_elem(n); c; c = xnode_next_elem(c))
		if (strcmp(c->name, name) == 0 && (!ns || strcmp(c->ns, ns) == 0))
			return c;
	return NULL;
}

/* Text nodes built by xstream and xnode_new_text() are NUL-terminated at
 * text_len, so a lone text child is returned as is, without a copy. */
const char *xnode_text(struct xnode *n)
{
	size_t total = 0, count = 0;
	struct xnode *only = NULL;
	for (struct xnode *c = n->children; c; c = c->next) {
		if (c->name)
			continue;
		total += c->text_len;
		count++;
		only = c;
	}
	if (count == 0)
		return "";
	if (count == 1)
		return only->text;
	char *s = arena_alloc(n->arena, total + 1, 1);
	if (!s)
		return NULL;
	size_t off = 0;
	for (struct xnode *c = n->children; c; c = c->next) {
		if (c->name)
			continue;
		memcpy(s + off, c->text, c->text_len);
		off += c->text_len;
	}
	s[off] = 0;
	return s;
}

int xnode_set_attr(struct xnode *n, const char *name, const char *value)
{
	struct xattr **pp = &n->attrs;
	for (; *pp; pp = &(*pp)->next) {
		struct xattr *a = *pp;
		if ((a->ns && *a->ns) || strcmp(a->name, name) != 0)
			continue;
		if (!value) {
			*pp = a->next;
			return 0;
		}
		const char *v = xarena_strndup(n->arena, value, strlen(value));
		if (!v)
			return -ENOMEM;
		a->value = v;
		return 0;
	}
	if (!value)
		return 0;
	/* *pp is now the tail link: new attributes keep document order. */
	struct xattr *a = xarena_alloc(n->arena, sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->name = xarena_strndup(n->arena, name, strlen(name));
	a->value = xarena_strndup(n->arena, value, strlen(value));
	a->ns = NULL;
	a->next = NULL;
	if (!a->name || !a->value)
		return -ENOMEM;
	*pp = a;
	return 0;
}

/* ------------------------------------------------------------------------
 * Serializer
 */

/* Appends <s> escaped. sbuf_append_esc() handles & < > ' "; on top of that
 * a CR (which a parser would turn into LF) is written as &#13;, and in
 * attribute values TAB and LF too (attribute-value normalization would turn
 * them into spaces), so a tree survives serialize -> parse unchanged. */
static int put_esc(struct sbuf *out, const char *s, size_t len, int attr)
{
	size_t start = 0;
	for (size_t i = 0; i < len; i++) {
		const char *ent;
		switch (s[i]) {
		case '\r': ent = "&#13;"; break;
		case '\n': if (!attr) continue; ent = "&#10;"; break;
		case '\t': if (!attr) continue; ent = "&#9;"; break;
		default: continue;
		}
		if (sbuf_append_esc(out, s + start, i - start) || sbuf_puts(out, ent))
			return -ENOMEM;
		start = i + 1;
	}
	return sbuf_append_esc(out, s + start, len - start);
}

static int put_attr(struct sbuf *out, const char *prefix, const char *name, const char *value)
{
	if (sbuf_puts(out, " ") || (prefix && (sbuf_puts(out, prefix) || sbuf_puts(out, ":"))) ||
	    sbuf_puts(out, name) || sbuf_puts(out, "='") ||
	    put_esc(out, value, strlen(value), 1) || sbuf_puts(out, "'"))
		return -ENOMEM;
	return 0;
}

/* Writes the start tag of <n> (without the closing '>'). <inherited> is the
 * default namespace in scope. Attributes in a namespace other than the XML
 * one get a per-attribute prefix "nsN" declared on the element itself: the
 * elements never use prefixes, so these cannot clash with anything. */
static int open_tag(struct sbuf *out, const struct xnode *n, const char *inherited)
{
	const char *ns = n->ns ? n->ns : "";
	if (sbuf_puts(out, "<") || sbuf_puts(out, n->name))
		return -ENOMEM;
	if (strcmp(ns, inherited) != 0 && put_attr(out, NULL, "xmlns", ns))
		return -ENOMEM;
	unsigned i = 0;
	for (const struct xattr *a = n->attrs; a; a = a->next, i++) {
		if (!a->ns || !*a->ns) {
			if (put_attr(out, NULL, a->name, a->value))
				return -ENOMEM;
		} else if (strcmp(a->ns, NS_XML) == 0) {
			if (put_attr(out, "xml", a->name, a->value))
				return -ENOMEM;
		} else {
			char pfx[16];
			snprintf(pfx, sizeof(pfx), "ns%u", i);
			if (sbuf_printf(out, " xmlns:%s='", pfx) ||
			    put_esc(out, a->ns, strlen(a->ns), 1) || sbuf_puts(out, "'") ||
			    put_attr(out, pfx, a->name, a->value))
				return -ENOMEM;
		}
	}
	return 0;
}

/* Iterative walk (parent/next links), so a hand-built tree of any depth
 * cannot overflow the stack. <n>'s own parent and siblings are never
 * visited even if <n> sits inside a bigger tree. */
int xnode_serialize(const struct xnode *n, const char *ctx_ns, struct sbuf *out)
{
	const struct xnode *cur = n;
	const char *top_ns = ctx_ns ? ctx_ns : "";

	for (;;) {
		/* Enter <cur>. */
		if (!cur->name) {
			if (put_esc(out, cur->text, cur->text_len, 0))
				return -ENOMEM;
		} else {
			const char *inh = cur == n ? top_ns : (cur->parent->ns ? cur->parent->ns : "");
			if (open_tag(out, cur, inh))
				return -ENOMEM;
			if (cur->children) {
				if (sbuf_puts(out, ">"))
					return -ENOMEM;
				cur = cur->children;
				continue;
			}
			if (sbuf_puts(out, "/>"))
				return -ENOMEM;
		}
		/* Leave <cur> and every ancestor whose last child we just left. */
		for (;;) {
			if (cur == n)
				return 0;
			if (cur->next) {
				cur = cur->next;
				break;
			}
			cur = cur->parent;
			if (sbuf_puts(out, "</") || sbuf_puts(out, cur->name) || sbuf_puts(out, ">"))
				return -ENOMEM;
		}
	}
}
