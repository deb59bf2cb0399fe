/* server/xstream.c - the client's XML stream: expat, limits, forbidden XML.
 *
 * Bytes in, callbacks out: the stream header (on_open), each complete
 * top-level element as a tree (on_stanza), the closing tag (on_close).
 * Knows nothing of sockets or of what a stanza means.
 *
 * Decisions taken here (RFC 6120 §11 leaves some room):
 *  - Invalid UTF-8 is <unsupported-encoding/> (as the header and core.md
 *    say), not <not-well-formed/>. expat would only report "invalid token",
 *    which also covers real syntax errors, so we validate UTF-8 ourselves
 *    ahead of expat (a byte-wise DFA, carried across feeds).
 *  - Non-whitespace text between stanzas is <not-well-formed/>.
 *  - An undeclared entity reference (&foo;) is an expat error and so
 *    <not-well-formed/>; DTDs, entity declarations, comments and PIs are
 *    <restricted-xml/>. Without a DTD no entity can ever be declared, so the
 *    only references left are the five predefined ones and &#...; ones.
 *  - An undeclared prefix (<foo:stream>) is <bad-namespace-prefix/>, as in
 *    the RFC 6120 §4.9.3.2 example.
 *  - Positions: "mark" is the stream offset up to which everything is
 *    accounted for: the start of the open top-level element, or else the
 *    end of the last thing seen at stream level (header, stanza, whitespace).
 *    fed - mark is what expat may be holding for the element (or header) in
 *    progress; it never exceeds max_stanza_size + 1 because we never feed
 *    expat more than that allows.
 */
#include "tether/xstream.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* expat.h declares the billion-laughs setters only when the includer
 * defines XML_DTD, which is the library's own build option (on in Debian's
 * and upstream's builds; expat_config.h records it but also defines
 * PACKAGE/VERSION, which we do not want). */
#ifndef XML_DTD
#define XML_DTD 1
#endif
#include <expat.h>
#include <sodium.h>

#include "tether/sbuf.h"

/* Namespace separator handed to expat. 0xFF never occurs in valid UTF-8, so
 * it cannot be part of a name or of a namespace URI (expat rejects URIs that
 * contain the separator anyway). */
#define NS_SEP '\xff'
static const XML_Char ns_sep[] = { NS_SEP, 0 };

struct xstream {
	XML_Parser p;              /* NULL after xstream_trim(): rebuilt on the next feed */
	struct xarena *arena;      /* the tree being built; NULL when trimmed */
	const struct xstream_ops *ops;
	void *ud;
	struct xstream_limits lim;

	enum xstream_err err;      /* sticky until xstream_reset() */
	unsigned level;            /* open elements, stream root included */
	bool halted;               /* XML_StopParser called: ignore further events */
	bool stopped;              /* ...because a callback asked for it */
	bool closed;               /* </stream:stream> seen */
	bool replaying;            /* feeding the synthetic header after a trim */
	bool dflt_ok;              /* header declared xmlns='jabber:client' */
	bool at_start;             /* nothing but whitespace since the stream (re)start */
	bool over_budget;          /* expat asked for more than xml_cap() */
	bool recycle;              /* stopped at a stanza end to rebuild the parser */
	bool stanza_stop;          /* stopped by on_stanza (xstream_continue may go on) */
	size_t xml_bytes;          /* what expat holds for this stream (see mm_*) */
	const char *why;           /* what was wrong, when we (not expat) failed */

	int64_t fed;               /* stream bytes given to expat since the stream start */
	int64_t mark;              /* see the top of the file */
	int64_t stop_at;           /* stream offset just past the stopping element */
	int64_t adj;               /* stream offset - expat's byte index */

	struct xnode *cur;         /* innermost open element of the stanza */
	struct xnode *text;        /* text node being extended, if cur->last_child */
	size_t text_cap;           /* its capacity, NUL excluded */

	unsigned char u8_need;     /* UTF-8 continuation bytes still expected */
	unsigned char u8_lo, u8_hi; /* bounds for the next continuation byte */

	/* "<prefix:stream xmlns...='...'>" rebuilt from the header's namespace
	 * declarations, fed to a fresh parser after a trim so that prefixes
	 * declared on the header (and the closing tag) keep working. */
	struct sbuf decls;
	struct sbuf synth;
};

/* Memory bounds, all proportional to the stanza size limit (so the smaller
 * pre-authentication limit bounds a stranger's connection tightly):
 *  - expat may hold up to 4 stanzas' worth (its buffer doubles, and names
 *    and the tag stack come on top) plus a base for an empty parser;
 *  - past one stanza's worth plus that base, the parser is rebuilt at the
 *    next stanza boundary, which drops its name pool;
 *  - the tree of the stanza in progress may take 4 stanzas' worth (an
 *    element costs ~100 bytes of nodes for as little as 4 bytes of input). */
#define XML_BASE (64u << 10)
#define TREE_BASE (16u << 10)

const char xstream_why_header[] = "stream header too large";

/* What the element in progress may take: the header's own limit until the
 * header is complete (level 0), the stanza limit after. */
static size_t elem_max(const struct xstream *xs)
{
	size_t h = xs->lim.max_header_size;
	return xs->level == 0 && h && h < xs->lim.max_stanza_size ? h : xs->lim.max_stanza_size;
}

/* The element in progress went over elem_max(): says which limit. */
static void over_limit(struct xstream *xs)
{
	xs->err = XSE_POLICY_VIOLATION;
	if (xs->level == 0 && elem_max(xs) < xs->lim.max_stanza_size)
		xs->why = xstream_why_header;
}

static size_t xml_cap(const struct xstream *xs)
{
	return 4 * xs->lim.max_stanza_size + XML_BASE;
}

static size_t xml_recycle_at(const struct xstream *xs)
{
	return xs->lim.max_stanza_size + XML_BASE;
}

static bool tree_too_big(const struct xstream *xs)
{
	return xarena_bytes(xs->arena) > 4 * xs->lim.max_stanza_size + TREE_BASE;
}

/* ------------------------------------------------------------------------
 * expat's memory, counted per stream
 *
 * A client can make expat hold far more than it sent: every never-seen
 * element or attribute name is interned for the parser's life (6-9 bytes
 * per byte sent), and a tree of empty elements costs ~25 times its input.
 * So expat allocates through us: its live bytes are counted per stream and
 * capped (xml_cap(): a refused allocation is a policy-violation), and a
 * stream whose parser has grown past xml_recycle_at() gets a new parser at
 * the next stanza boundary (the header is replayed, as after a trim).
 *
 * expat's hooks take no context, so the stream being parsed sits in a
 * thread-local (a stream is only ever parsed on its worker's thread), and
 * each block carries a header naming its stream and size, so that a free
 * is charged back to the right stream whatever the thread-local says.
 */
struct mm_hdr {
	struct xstream *xs;
	size_t size;
};
_Static_assert(sizeof(struct mm_hdr) % 16 == 0, "expat's blocks stay 16-byte aligned");

static _Thread_local struct xstream *mm_cur;

static void *mm_malloc(size_t n)
{
	struct xstream *xs = mm_cur;
	if (n > SIZE_MAX - sizeof(struct mm_hdr))
		return NULL;
	if (xs && n > xml_cap(xs) - xs->xml_bytes) {
		xs->over_budget = true;
		return NULL;
	}
	struct mm_hdr *h = malloc(sizeof(*h) + n);
	if (!h)
		return NULL;
	h->xs = xs;
	h->size = n;
	if (xs)
		xs->xml_bytes += n;
	return h + 1;
}

static void mm_free(void *p)
{
	if (!p)
		return;
	struct mm_hdr *h = (struct mm_hdr *)p - 1;
	if (h->xs)
		h->xs->xml_bytes -= h->size;
	free(h);
}

static void *mm_realloc(void *p, size_t n)
{
	if (!p)
		return mm_malloc(n);
	struct mm_hdr *h = (struct mm_hdr *)p - 1;
	struct xstream *xs = h->xs;
	if (n > SIZE_MAX - sizeof(*h))
		return NULL;
	if (xs && n > h->size && n - h->size > xml_cap(xs) - xs->xml_bytes) {
		xs->over_budget = true;
		return NULL;
	}
	size_t old = h->size;
	struct mm_hdr *nh = realloc(h, sizeof(*nh) + n);
	if (!nh)
		return NULL;
	if (xs)
		xs->xml_bytes = xs->xml_bytes - old + n;
	nh->size = n;
	return nh + 1;
}

static const XML_Memory_Handling_Suite mm_suite = { mm_malloc, mm_realloc, mm_free };

static XML_Parser parser_new(struct xstream *xs)
{
	mm_cur = xs;
	XML_Parser p = XML_ParserCreate_MM("UTF-8", &mm_suite, ns_sep);
	mm_cur = NULL;
	return p;
}

static void parser_free(struct xstream *xs)
{
	XML_ParserFree(xs->p);
	xs->p = NULL;
}

static enum XML_Status parse(struct xstream *xs, const char *data, size_t len)
{
	mm_cur = xs;
	enum XML_Status st = XML_Parse(xs->p, data, (int)len, XML_FALSE);
	mm_cur = NULL;
	return st;
}

static const char *const conditions[] = {
	[XSE_NONE]                 = "undefined-condition",
	[XSE_NOT_WELL_FORMED]      = "not-well-formed",
	[XSE_RESTRICTED_XML]       = "restricted-xml",
	[XSE_POLICY_VIOLATION]     = "policy-violation",
	[XSE_INVALID_NAMESPACE]    = "invalid-namespace",
	[XSE_BAD_NAMESPACE_PREFIX] = "bad-namespace-prefix",
	[XSE_UNSUPPORTED_ENCODING] = "unsupported-encoding",
	[XSE_NOMEM]                = "internal-server-error",
};

const char *xstream_err_condition(enum xstream_err e)
{
	if ((unsigned)e >= sizeof(conditions) / sizeof(conditions[0]))
		return "undefined-condition";
	return conditions[e];
}

enum xstream_err xstream_error(const struct xstream *xs)
{
	return xs->err;
}

bool xstream_in_element(const struct xstream *xs)
{
	return xs->err == XSE_NONE && xs->level >= 1 && xs->fed > xs->mark;
}

size_t xstream_mem(const struct xstream *xs)
{
	return xs->xml_bytes + (xs->arena ? xarena_bytes(xs->arena) : 0);
}

void xstream_set_limits(struct xstream *xs, const struct xstream_limits *limits)
{
	xs->lim = *limits;
}

const char *xstream_error_text(const struct xstream *xs, char *buf, size_t len)
{
	if (xs->err == XSE_NONE)
		return NULL;
	if (xs->why)
		return xs->why;
	if (!xs->p || XML_GetErrorCode(xs->p) == XML_ERROR_NONE ||
	    XML_GetErrorCode(xs->p) == XML_ERROR_ABORTED)
		return NULL;
	/* expat counts lines and columns of the current stream from 1 and 0. */
	snprintf(buf, len, "%s at line %lu, column %lu", XML_ErrorString(XML_GetErrorCode(xs->p)),
		 (unsigned long)XML_GetCurrentLineNumber(xs->p),
		 (unsigned long)XML_GetCurrentColumnNumber(xs->p) + 1);
	return buf;
}

/* ------------------------------------------------------------------------
 * Small helpers
 */

/* Stream offsets of the current expat event. */
static int64_t ev_start(const struct xstream *xs)
{
	return (int64_t)XML_GetCurrentByteIndex(xs->p) + xs->adj;
}

static int64_t ev_end(const struct xstream *xs)
{
	return ev_start(xs) + XML_GetCurrentByteCount(xs->p);
}

/* Stops the parse for a stream error <e>. Handlers return right after. */
static void fail_why(struct xstream *xs, enum xstream_err e, const char *why)
{
	if (xs->halted)
		return;
	xs->err = e;
	xs->why = why;
	xs->halted = true;
	XML_StopParser(xs->p, XML_FALSE);
}

static void fail(struct xstream *xs, enum xstream_err e)
{
	fail_why(xs, e, NULL);
}

/* A callback returned non-zero: stop right after the current event, whose
 * end is where the caller's next stream starts. */
static void stop_here(struct xstream *xs)
{
	xs->stop_at = ev_end(xs);
	xs->stopped = true;
	xs->halted = true;
	XML_StopParser(xs->p, XML_FALSE);
}

/* Splits an expat name "uri SEP local [SEP prefix]" (or just "local"). */
struct qname {
	const char *uri;
	size_t uri_len;   /* 0 with uri NULL: no namespace */
	const char *local;
	size_t local_len;
	const char *prefix; /* NULL if none */
	size_t prefix_len;
};

static void split_name(const char *s, struct qname *q)
{
	const char *a = strchr(s, NS_SEP);
	memset(q, 0, sizeof(*q));
	if (!a) {
		q->local = s;
		q->local_len = strlen(s);
		return;
	}
	q->uri = s;
	q->uri_len = (size_t)(a - s);
	q->local = a + 1;
	const char *b = strchr(q->local, NS_SEP);
	if (!b) {
		q->local_len = strlen(q->local);
		return;
	}
	q->local_len = (size_t)(b - q->local);
	q->prefix = b + 1;
	q->prefix_len = strlen(q->prefix);
}

static bool eq(const char *s, size_t len, const char *lit)
{
	return strlen(lit) == len && memcmp(s, lit, len) == 0;
}

/* The namespace string for a node: shared with the parent, or one of the
 * common constants, or a copy. Saves a copy per element in practice. */
static const char *ns_string(struct xarena *a, const struct qname *q, const struct xnode *parent)
{
	if (!q->uri)
		return "";
	if (parent && eq(q->uri, q->uri_len, parent->ns))
		return parent->ns;
	if (eq(q->uri, q->uri_len, XMLNS_CLIENT))
		return XMLNS_CLIENT;
	if (eq(q->uri, q->uri_len, XMLNS_STREAM))
		return XMLNS_STREAM;
	return xarena_strndup(a, q->uri, q->uri_len);
}

/* Builds an element from expat's start-tag event. Returns NULL on OOM. */
static struct xnode *make_elem(struct xarena *a, const char *name, const char **atts,
			       const struct xnode *parent)
{
	struct qname q;
	split_name(name, &q);
	struct xnode *n = xarena_alloc(a, sizeof(*n));
	if (!n)
		return NULL;
	memset(n, 0, sizeof(*n));
	n->arena = a;
	n->ns = ns_string(a, &q, parent);
	n->name = xarena_strndup(a, q.local, q.local_len);
	if (!n->ns || !n->name)
		return NULL;

	struct xattr **tail = &n->attrs;
	for (size_t i = 0; atts[i]; i += 2) {
		struct xattr *at = xarena_alloc(a, sizeof(*at));
		if (!at)
			return NULL;
		split_name(atts[i], &q);
		if (!q.uri)
			at->ns = NULL;
		else if (eq(q.uri, q.uri_len, XMLNS_XML))
			at->ns = XMLNS_XML;
		else if (!(at->ns = xarena_strndup(a, q.uri, q.uri_len)))
			return NULL;
		at->name = xarena_strndup(a, q.local, q.local_len);
		at->value = xarena_strndup(a, atts[i + 1], strlen(atts[i + 1]));
		at->next = NULL;
		if (!at->name || !at->value)
			return NULL;
		*tail = at;
		tail = &at->next;
	}
	return n;
}

/* Appends character data to the open element, extending the last text node
 * when the text continues (expat splits text at entities, newlines and
 * feed boundaries; one node per run keeps trees identical for any split).
 * Capacity doubles, so byte-at-a-time input stays linear. */
static int add_text(struct xstream *xs, const char *s, size_t len)
{
	struct xnode *cur = xs->cur;
	struct xnode *t = xs->text;
	if (t && cur->last_child == t) {
		if (len <= xs->text_cap - t->text_len) {
			memcpy(t->text + t->text_len, s, len);
			t->text_len += len;
			t->text[t->text_len] = 0;
			return 0;
		}
		size_t cap = 2 * xs->text_cap;
		if (cap < t->text_len + len)
			cap = t->text_len + len;
		char *nt = xarena_alloc(xs->arena, cap + 1);
		if (!nt)
			return -ENOMEM;
		memcpy(nt, t->text, t->text_len);
		memcpy(nt + t->text_len, s, len);
		t->text = nt;
		t->text_len += len;
		t->text[t->text_len] = 0;
		xs->text_cap = cap;
		return 0;
	}
	t = xarena_alloc(xs->arena, sizeof(*t));
	if (!t)
		return -ENOMEM;
	memset(t, 0, sizeof(*t));
	t->arena = xs->arena;
	t->ns = "";
	if (!(t->text = xarena_strndup(xs->arena, s, len)))
		return -ENOMEM;
	t->text_len = len;
	xnode_append(cur, t);
	xs->text = t;
	xs->text_cap = len;
	return 0;
}

/* ------------------------------------------------------------------------
 * expat handlers
 */

/* The root element: check it, remember its declarations for trims, hand
 * its attributes to on_open. */
static void open_stream(struct xstream *xs, const char *name, const char **atts)
{
	struct qname q;
	split_name(name, &q);
	if (!q.uri || !eq(q.uri, q.uri_len, XMLNS_STREAM) || !eq(q.local, q.local_len, "stream") ||
	    !xs->dflt_ok) {
		fail(xs, XSE_INVALID_NAMESPACE);
		return;
	}
	int64_t end = ev_end(xs);
	if ((uint64_t)end > elem_max(xs)) {
		fail_why(xs, XSE_POLICY_VIOLATION,
			 elem_max(xs) < xs->lim.max_stanza_size ? xstream_why_header : NULL);
		return;
	}
	xs->level = 1;
	xs->mark = end;

	sbuf_reset(&xs->synth);
	if (sbuf_puts(&xs->synth, "<") ||
	    (q.prefix && (sbuf_append(&xs->synth, q.prefix, q.prefix_len) || sbuf_puts(&xs->synth, ":"))) ||
	    sbuf_puts(&xs->synth, "stream") || sbuf_append(&xs->synth, xs->decls.data, xs->decls.len) ||
	    sbuf_puts(&xs->synth, ">")) {
		fail(xs, XSE_NOMEM);
		return;
	}
	sbuf_free(&xs->decls);

	struct xnode *hdr = make_elem(xs->arena, name, atts, NULL);
	if (!hdr) {
		fail(xs, XSE_NOMEM);
		return;
	}
	int rc = xs->ops->on_open ? xs->ops->on_open(xs->ud, hdr) : 0;
	xarena_reset(xs->arena);
	if (rc)
		stop_here(xs);
}

static void XMLCALL on_start(void *ud, const XML_Char *name, const XML_Char **atts)
{
	struct xstream *xs = ud;
	if (xs->halted)
		return;
	if (xs->replaying) {
		xs->level = 1;
		return;
	}
	if (xs->level == 0) {
		open_stream(xs, name, atts);
		return;
	}
	/* The new element sits at depth <level> below the root. */
	if (xs->level > xs->lim.max_depth) {
		fail(xs, XSE_POLICY_VIOLATION);
		return;
	}
	struct xnode *n = make_elem(xs->arena, name, atts, xs->cur);
	if (!n) {
		fail(xs, XSE_NOMEM);
		return;
	}
	if (tree_too_big(xs)) {
		fail_why(xs, XSE_POLICY_VIOLATION, "stanza tree too large");
		return;
	}
	if (xs->level == 1)
		xs->mark = ev_start(xs);
	else
		xnode_append(xs->cur, n);
	xs->cur = n;
	xs->level++;
}

static void XMLCALL on_end(void *ud, const XML_Char *name)
{
	struct xstream *xs = ud;
	(void)name;
	if (xs->halted)
		return;
	if (xs->level == 1) {
		xs->level = 0;
		xs->closed = true;
		xs->mark = ev_end(xs);
		if (xs->ops->on_close && xs->ops->on_close(xs->ud))
			stop_here(xs);
		return;
	}
	xs->level--;
	if (xs->level > 1) {
		xs->cur = xs->cur->parent;
		return;
	}
	/* A whole top-level element. Exact size check: slicing the input bounds
	 * it to max + 1 bytes, this refuses the + 1. */
	int64_t end = ev_end(xs);
	if ((uint64_t)(end - xs->mark) > xs->lim.max_stanza_size) {
		fail(xs, XSE_POLICY_VIOLATION);
		return;
	}
	struct xnode *el = xs->cur;
	xs->cur = NULL;
	xs->text = NULL;
	xs->mark = end;
	int rc = xs->ops->on_stanza ? xs->ops->on_stanza(xs->ud, el) : 0;
	xarena_reset(xs->arena);
	if (rc) {
		stop_here(xs);
		xs->stanza_stop = true;
	} else if (xs->xml_bytes > xml_recycle_at(xs) && !xs->halted) {
		/* xstream_feed() rebuilds the parser and goes on from here. */
		xs->stop_at = end;
		xs->recycle = true;
		xs->halted = true;
		XML_StopParser(xs->p, XML_TRUE);
	}
}

static bool all_space(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r')
			return false;
	return true;
}

static void XMLCALL on_text(void *ud, const XML_Char *s, int len)
{
	struct xstream *xs = ud;
	if (xs->halted || xs->replaying)
		return;
	if (xs->level <= 1) {
		/* Between stanzas: whitespace keepalives only. */
		if (!all_space(s, (size_t)len)) {
			fail_why(xs, XSE_NOT_WELL_FORMED, "text between stanzas");
			return;
		}
		xs->mark = ev_end(xs);
		return;
	}
	if (add_text(xs, s, (size_t)len))
		fail(xs, XSE_NOMEM);
	else if (tree_too_big(xs))
		fail_why(xs, XSE_POLICY_VIOLATION, "stanza tree too large");
}

/* Namespace declarations on the header: the default one must be
 * jabber:client; all of them are recorded for the post-trim replay. */
static void XMLCALL on_ns_decl(void *ud, const XML_Char *prefix, const XML_Char *uri)
{
	struct xstream *xs = ud;
	if (xs->halted || xs->replaying || xs->level != 0)
		return;
	if (!prefix)
		xs->dflt_ok = uri && strcmp(uri, XMLNS_CLIENT) == 0;
	struct sbuf *d = &xs->decls;
	if (sbuf_puts(d, " xmlns") || (prefix && (sbuf_puts(d, ":") || sbuf_puts(d, prefix))) ||
	    sbuf_puts(d, "='") || sbuf_puts_esc(d, uri) || sbuf_puts(d, "'"))
		fail(xs, XSE_NOMEM);
}

static void XMLCALL on_xml_decl(void *ud, const XML_Char *version, const XML_Char *encoding,
				int standalone)
{
	struct xstream *xs = ud;
	(void)version;
	(void)standalone;
	/* The parser is forced to UTF-8 and would ignore the declaration; an
	 * honest peer declaring something else gets told so. */
	if (encoding && strcasecmp(encoding, "UTF-8") != 0)
		fail(xs, XSE_UNSUPPORTED_ENCODING);
}

static void XMLCALL on_doctype(void *ud, const XML_Char *name, const XML_Char *sysid,
			       const XML_Char *pubid, int has_internal_subset)
{
	(void)name, (void)sysid, (void)pubid, (void)has_internal_subset;
	fail(ud, XSE_RESTRICTED_XML);
}

static void XMLCALL on_entity_decl(void *ud, const XML_Char *name, int is_pe, const XML_Char *value,
				   int value_len, const XML_Char *base, const XML_Char *sysid,
				   const XML_Char *pubid, const XML_Char *notation)
{
	(void)name, (void)is_pe, (void)value, (void)value_len, (void)base;
	(void)sysid, (void)pubid, (void)notation;
	fail(ud, XSE_RESTRICTED_XML);
}

static void XMLCALL on_notation_decl(void *ud, const XML_Char *name, const XML_Char *base,
				     const XML_Char *sysid, const XML_Char *pubid)
{
	(void)name, (void)base, (void)sysid, (void)pubid;
	fail(ud, XSE_RESTRICTED_XML);
}

static void XMLCALL on_comment(void *ud, const XML_Char *data)
{
	(void)data;
	fail(ud, XSE_RESTRICTED_XML);
}

static void XMLCALL on_pi(void *ud, const XML_Char *target, const XML_Char *data)
{
	(void)target, (void)data;
	fail(ud, XSE_RESTRICTED_XML);
}

static void XMLCALL on_skipped_entity(void *ud, const XML_Char *name, int is_pe)
{
	(void)name, (void)is_pe;
	fail(ud, XSE_RESTRICTED_XML);
}

/* Every setting a fresh or reset parser needs (XML_ParserReset clears
 * handlers, salt and protections). */
static void setup_parser(struct xstream *xs)
{
	XML_Parser p = xs->p;
	unsigned long salt = 0;
	/* A keyed hash for expat's name tables: no hash-flooding by crafted
	 * attribute names. 0 would mean "let expat pick", so avoid it. */
	randombytes_buf(&salt, sizeof(salt));
	XML_SetHashSalt(p, salt ? salt : 1);
	XML_SetUserData(p, xs);
	XML_SetReturnNSTriplet(p, 1);   /* the root's prefix, for the replay */
	XML_SetParamEntityParsing(p, XML_PARAM_ENTITY_PARSING_NEVER);
	/* Reparse deferral (expat 2.6, backported to Debian's 2.5) holds back a
	 * partial token until twice as many bytes are available: a stanza
	 * completed by a short segment would wait for unrelated later input. */
	XML_SetReparseDeferralEnabled(p, XML_FALSE);
	/* No entity can be declared (the DOCTYPE is refused at its first
	 * token), so this never triggers; it is a second fence. */
	XML_SetBillionLaughsAttackProtectionMaximumAmplification(p, 10.0f);
	XML_SetBillionLaughsAttackProtectionActivationThreshold(p, 1u << 20);

	XML_SetElementHandler(p, on_start, on_end);
	XML_SetCharacterDataHandler(p, on_text);
	XML_SetStartNamespaceDeclHandler(p, on_ns_decl);
	XML_SetXmlDeclHandler(p, on_xml_decl);
	XML_SetStartDoctypeDeclHandler(p, on_doctype);
	XML_SetEntityDeclHandler(p, on_entity_decl);
	XML_SetNotationDeclHandler(p, on_notation_decl);
	XML_SetCommentHandler(p, on_comment);
	XML_SetProcessingInstructionHandler(p, on_pi);
	XML_SetSkippedEntityHandler(p, on_skipped_entity);
}

static enum xstream_err map_expat_error(enum XML_Error e)
{
	switch (e) {
	case XML_ERROR_NO_MEMORY:
		return XSE_NOMEM;
	case XML_ERROR_UNBOUND_PREFIX:
		return XSE_BAD_NAMESPACE_PREFIX;
	case XML_ERROR_UNKNOWN_ENCODING:
	case XML_ERROR_INCORRECT_ENCODING:
		return XSE_UNSUPPORTED_ENCODING;
	case XML_ERROR_AMPLIFICATION_LIMIT_BREACH:
		return XSE_RESTRICTED_XML;
	default:
		return XSE_NOT_WELL_FORMED;
	}
}

/* ------------------------------------------------------------------------
 * UTF-8 validation (RFC 3629: no overlongs, no surrogates, <= U+10FFFF)
 */

/* Returns how many leading bytes of <s> are valid UTF-8 given the state
 * left by the previous feed (a sequence may straddle feeds); < <len> means
 * the byte at that offset is invalid. */
static size_t utf8_scan(struct xstream *xs, const unsigned char *s, size_t len)
{
	unsigned need = xs->u8_need;
	unsigned char lo = xs->u8_lo, hi = xs->u8_hi;
	size_t i = 0;

	while (i < len) {
		if (!need) {
			/* ASCII fast path, 8 bytes at a time. */
			while (len - i >= 8) {
				uint64_t w;
				memcpy(&w, s + i, 8);
				if (w & 0x8080808080808080ull)
					break;
				i += 8;
			}
			if (i == len)
				break;
		}
		unsigned char c = s[i];
		if (need) {
			if (c < lo || c > hi)
				break;
			need--;
			lo = 0x80, hi = 0xbf;
		} else if (c >= 0x80) {
			lo = 0x80, hi = 0xbf;
			if (c >= 0xc2 && c <= 0xdf)
				need = 1;
			else if (c == 0xe0)
				need = 2, lo = 0xa0;
			else if (c == 0xed)
				need = 2, hi = 0x9f;       /* no surrogates */
			else if (c >= 0xe1 && c <= 0xef)
				need = 2;
			else if (c == 0xf0)
				need = 3, lo = 0x90;
			else if (c >= 0xf1 && c <= 0xf3)
				need = 3;
			else if (c == 0xf4)
				need = 3, hi = 0x8f;       /* <= U+10FFFF */
			else
				break;                     /* 80-C1, F5-FF */
		}
		i++;
	}
	xs->u8_need = (unsigned char)need;
	xs->u8_lo = lo;
	xs->u8_hi = hi;
	return i;
}

/* ------------------------------------------------------------------------
 * Lifecycle
 */

static void clear_state(struct xstream *xs)
{
	xs->err = XSE_NONE;
	xs->level = 0;
	xs->halted = xs->stopped = xs->closed = xs->replaying = xs->dflt_ok = false;
	xs->at_start = true;
	xs->why = NULL;
	xs->over_budget = xs->recycle = xs->stanza_stop = false;
	xs->fed = xs->mark = xs->stop_at = xs->adj = 0;
	xs->cur = xs->text = NULL;
	xs->text_cap = 0;
	xs->u8_need = 0;
	xs->u8_lo = 0x80;
	xs->u8_hi = 0xbf;
	sbuf_free(&xs->decls);
	sbuf_free(&xs->synth);
}

struct xstream *xstream_new(const struct xstream_limits *limits,
			    const struct xstream_ops *ops, void *ud)
{
	if (sodium_init() < 0)
		return NULL;
	struct xstream *xs = calloc(1, sizeof(*xs));
	if (!xs)
		return NULL;
	xs->ops = ops;
	xs->ud = ud;
	xs->lim = *limits;
	clear_state(xs);
	xs->arena = xarena_new();
	xs->p = parser_new(xs);
	if (!xs->arena || !xs->p) {
		xstream_free(xs);
		return NULL;
	}
	setup_parser(xs);
	return xs;
}

int xstream_reset(struct xstream *xs)
{
	clear_state(xs);
	if (xs->arena)
		xarena_reset(xs->arena);
	else if (!(xs->arena = xarena_new()))
		return -ENOMEM;
	/* A new parser rather than XML_ParserReset(): a reset keeps the name
	 * pool the old stream grew. */
	if (xs->p)
		parser_free(xs);
	if (!(xs->p = parser_new(xs)))
		return -ENOMEM;
	setup_parser(xs);
	return 0;
}

int xstream_continue(struct xstream *xs)
{
	if (!xs->stopped || !xs->stanza_stop || xs->err != XSE_NONE || xs->level != 1 || !xs->p)
		return -EINVAL;
	/* expat was stopped for good; what it read past the element is the
	 * caller's to feed again. A new parser picks up at the element's end
	 * from the replayed header, as after a trim. */
	parser_free(xs);
	xs->halted = xs->stopped = xs->stanza_stop = false;
	xs->fed = xs->mark = xs->stop_at;
	xs->cur = xs->text = NULL;
	if (xs->arena)
		xarena_reset(xs->arena);
	return 0;
}

/* Between stanzas, with nothing half-parsed, the parser's only state worth
 * keeping is the header's namespace declarations. So we free the parser
 * (and its buffer, which may have grown to the largest stanza seen) and the
 * arena; the next feed builds a new parser and replays a synthetic header
 * with the same prefix and declarations, without calling on_open. */
void xstream_trim(struct xstream *xs)
{
	if (!xs->p || xs->halted || xs->err || xs->level != 1 || xs->fed != xs->mark)
		return;
	parser_free(xs);
	xarena_free(xs->arena);
	xs->arena = NULL;
}

static int rebuild(struct xstream *xs)
{
	if (!xs->arena && !(xs->arena = xarena_new()))
		return -ENOMEM;
	if (!(xs->p = parser_new(xs)))
		return -ENOMEM;
	setup_parser(xs);
	xs->replaying = true;
	xs->level = 0;
	enum XML_Status st = parse(xs, xs->synth.data, xs->synth.len);
	xs->replaying = false;
	if (st != XML_STATUS_OK || xs->level != 1)
		return -ENOMEM;
	xs->adj = xs->fed - (int64_t)xs->synth.len;
	return 0;
}

static enum xfeed_rc feed_expat(struct xstream *xs, const char *data, size_t len, size_t *used);

enum xfeed_rc xstream_feed(struct xstream *xs, const char *data, size_t len, size_t *used)
{
	*used = 0;
	if (xs->err != XSE_NONE)
		return XFEED_ERR;
	if (xs->halted) {
		/* Stopped by a callback and fed again without a reset: the
		 * parser is gone, which is our caller's bug, not the peer's. */
		xs->err = XSE_NOMEM;
		return XFEED_ERR;
	}
	if (!xs->p && rebuild(xs)) {
		xs->err = XSE_NOMEM;
		return XFEED_ERR;
	}
	/* Whitespace before the header of a new or restarted stream is left
	 * over from the previous one (go-sendxmpp sends "</auth>\n" and then
	 * "<?xml ...?>"): the XML declaration must come first for expat, and
	 * RFC 6120 §4.3.3 restarts the stream there, so it is dropped. */
	size_t skip = 0;
	if (xs->at_start) {
		while (skip < len && all_space(data + skip, 1))
			skip++;
		/* Counted as stream bytes expat never sees, so that endless
		 * whitespace still meets the size limit. */
		xs->fed += (int64_t)skip;
		xs->adj += (int64_t)skip;
		if ((uint64_t)(xs->fed - xs->mark) > elem_max(xs)) {
			over_limit(xs);
			return XFEED_ERR;
		}
		if (skip == len) {
			*used = len;
			return XFEED_OK;
		}
		xs->at_start = false;
		data += skip;
		len -= skip;
	}
	enum xfeed_rc rc = feed_expat(xs, data, len, used);
	*used += skip;
	return rc;
}

/* xstream_feed() after the checks: <data> goes to expat in bounded slices. */
static enum xfeed_rc feed_expat(struct xstream *xs, const char *data, size_t len, size_t *used)
{
	size_t good = utf8_scan(xs, (const unsigned char *)data, len);
	const int64_t base = xs->fed;
	size_t off = 0;

	while (off < good) {
		size_t max = elem_max(xs); /* the header's limit, then the stanzas' */
		/* Never hand expat more than the element in progress may still
		 * take (+1 to notice the overflow), so a never-ending tag or text
		 * is refused after max bytes, whatever the caller's chunk size. */
		size_t pending = (size_t)(xs->fed - xs->mark);
		size_t n = good - off;
		if (max - pending < SIZE_MAX && n > max - pending + 1)
			n = max - pending + 1;
		if (n > INT_MAX / 2)
			n = INT_MAX / 2;
		enum XML_Status st = parse(xs, data + off, n);
		if (st == XML_STATUS_SUSPENDED && xs->recycle) {
			/* A stanza ended and the parser had grown: go on with a
			 * new one from just past that stanza (on_end). */
			xs->recycle = xs->halted = false;
			off = (size_t)(xs->stop_at - base);
			xs->fed = xs->stop_at;
			parser_free(xs);
			if (rebuild(xs)) {
				xs->err = XSE_NOMEM;
				return XFEED_ERR;
			}
			continue;
		}
		xs->fed += (int64_t)n;
		off += n;
		if (st != XML_STATUS_OK) {
			if (xs->stopped) {
				int64_t u = xs->stop_at - base;
				*used = u < 0 ? 0 : (size_t)u > len ? len : (size_t)u;
				return XFEED_STOPPED;
			}
			if (xs->err == XSE_NONE)
				xs->err = xs->over_budget ? XSE_POLICY_VIOLATION :
					  map_expat_error(XML_GetErrorCode(xs->p));
			return XFEED_ERR;
		}
		if ((uint64_t)(xs->fed - xs->mark) > elem_max(xs)) {
			over_limit(xs);
			return XFEED_ERR;
		}
	}
	if (good < len) {
		xs->err = XSE_UNSUPPORTED_ENCODING;
		return XFEED_ERR;
	}
	*used = len;
	return XFEED_OK;
}

void xstream_free(struct xstream *xs)
{
	if (!xs)
		return;
	if (xs->p)
		parser_free(xs);
	xarena_free(xs->arena);
	sbuf_free(&xs->decls);
	sbuf_free(&xs->synth);
	free(xs);
}
