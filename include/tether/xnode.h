/* include/tether/xnode.h - parsed XML element trees (one stanza) and their serializer. */
#ifndef TETHER_XNODE_H
#define TETHER_XNODE_H

#include <stddef.h>

struct sbuf;
struct xarena;

/* An attribute. <ns> is NULL for unqualified attributes (the usual case);
 * xml:lang has ns "http://www.w3.org/XML/1998/namespace". */
struct xattr {
	const char *name;
	const char *ns;
	const char *value;
	struct xattr *next;
};

/* An element, or a text node when <name> is NULL (then <text>/<text_len>
 * hold the unescaped character data). Every string lives in the arena of the
 * tree; the tree is valid until its owner resets the arena (for stanzas
 * handed out by xstream: until the on_stanza callback returns). */
struct xnode {
	const char *name;   /* local name; NULL for text */
	const char *ns;     /* namespace URI, "" if none */
	struct xattr *attrs;
	struct xnode *parent;
	struct xnode *children;   /* first child (element or text) */
	struct xnode *last_child;
	struct xnode *next;       /* next sibling */
	char *text;               /* text nodes only */
	size_t text_len;
	struct xarena *arena;     /* owning arena, for edits */
};

/* Value of the unqualified attribute <name>, or NULL. */
const char *xnode_attr(const struct xnode *n, const char *name);

/* First child element named <name> in namespace <ns> (NULL <ns> = any). */
struct xnode *xnode_child(const struct xnode *n, const char *ns, const char *name);

/* First child element, and the next element sibling; text nodes are skipped. */
struct xnode *xnode_first_elem(const struct xnode *n);
struct xnode *xnode_next_elem(const struct xnode *n);

/* Concatenated text of the direct text children of <n>, NUL-terminated, in
 * the arena; "" when there is none; NULL only when out of memory. */
const char *xnode_text(struct xnode *n);

/* Sets (adds or replaces) the unqualified attribute <name> to a copy of
 * <value> in the arena; NULL <value> removes it. Returns 0 or -ENOMEM. */
int xnode_set_attr(struct xnode *n, const char *name, const char *value);

/* Appends the XML of <n> and its subtree to <out>. <ctx_ns> is the default
 * namespace in scope where the output goes (e.g. "jabber:client" for a stanza
 * written to a client stream): an xmlns attribute is written only where an
 * element's namespace differs from its parent's (or from <ctx_ns> at the
 * top). Text and attribute values are escaped. Returns 0 or -ENOMEM. */
int xnode_serialize(const struct xnode *n, const char *ctx_ns, struct sbuf *out);

/* A bump allocator for trees. xarena_new() returns NULL when out of memory. */
struct xarena *xarena_new(void);
size_t xarena_bytes(const struct xarena *a);              /* memory held in blocks */
void *xarena_alloc(struct xarena *a, size_t size);           /* 16-byte aligned, NULL on OOM */
char *xarena_strndup(struct xarena *a, const char *s, size_t len);
void xarena_reset(struct xarena *a);  /* frees everything allocated, keeps one block */
void xarena_free(struct xarena *a);

/* Builds a detached element <name xmlns=ns> in <a> (for tests and for
 * composing trees). Returns NULL on OOM. */
struct xnode *xnode_new(struct xarena *a, const char *ns, const char *name);
/* Builds a detached text node holding a copy of <len> bytes of <text> (raw,
 * unescaped) in <a>; like every text node, its text is NUL-terminated at
 * text_len. Returns NULL on OOM. (Added by the xstream layer.) */
struct xnode *xnode_new_text(struct xarena *a, const char *text, size_t len);
/* A deep copy of <n> (attributes, children, text) in <a>, detached (no
 * parent), so it outlives the arena <n> lives in. NULL on OOM (whatever was
 * copied stays in <a> until it is reset). */
struct xnode *xnode_copy(struct xarena *a, const struct xnode *n);
/* Appends <child> to <parent>'s children. */
void xnode_append(struct xnode *parent, struct xnode *child);

#endif /* TETHER_XNODE_H */
