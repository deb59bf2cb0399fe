/* include/tether/xstream.h - the client's XML stream: expat, limits, forbidden XML. */
#ifndef TETHER_XSTREAM_H
#define TETHER_XSTREAM_H

#include <stdbool.h>
#include <stddef.h>

#include "tether/xnode.h"

#define XMLNS_STREAM "http://etherx.jabber.org/streams"
#define XMLNS_CLIENT "jabber:client"
#define XMLNS_XML    "http://www.w3.org/XML/1998/namespace"

/* Why the stream failed; each maps to one RFC 6120 stream error condition. */
enum xstream_err {
	XSE_NONE = 0,
	XSE_NOT_WELL_FORMED,      /* <not-well-formed/> */
	XSE_RESTRICTED_XML,       /* <restricted-xml/>: DTD, entity decl, comment, PI */
	XSE_POLICY_VIOLATION,     /* <policy-violation/>: stanza too big or too deep */
	XSE_INVALID_NAMESPACE,    /* <invalid-namespace/>: root not stream:stream, default ns not jabber:client */
	XSE_BAD_NAMESPACE_PREFIX, /* <bad-namespace-prefix/> */
	XSE_UNSUPPORTED_ENCODING, /* <unsupported-encoding/>: declared encoding not UTF-8, bad UTF-8 */
	XSE_NOMEM,                /* <internal-server-error/> */
};

/* The stream-error condition name for <e> ("not-well-formed", ...). */
const char *xstream_err_condition(enum xstream_err e);

struct xstream_limits {
	size_t max_stanza_size;  /* bytes of one top-level element, markup included */
	unsigned max_depth;      /* element nesting below the stream root */
	/* Bytes from the stream's start to the end of its header (0, or
	 * more than max_stanza_size: max_stanza_size). The header's
	 * namespace declarations are replayed into every new parser (after
	 * an idle trim or a recycle), so their size is a cost per byte the
	 * client sends afterwards, not once. */
	size_t max_header_size;
};

/* xstream_error_text() when the stream header was over max_header_size
 * (a named constant: compare the pointer). */
extern const char xstream_why_header[];

/* Callbacks, called from inside xstream_feed(). A callback returns 0 to go
 * on, or non-zero to stop parsing right after the current element: then
 * xstream_feed() returns XFEED_STOPPED and the caller decides what to do
 * with the rest of the input (e.g. reset the stream after STARTTLS). */
struct xstream_ops {
	/* The stream header <stream:stream>. <hdr> is an element whose attrs
	 * are the header's attributes (to, from, version, xml:lang, id). Only
	 * called once the root name and namespaces were checked. */
	int (*on_open)(void *ud, struct xnode *hdr);
	/* A complete top-level element (depth 1): a stanza or a nonza. <el>
	 * and its arena are valid until the callback returns. */
	int (*on_stanza)(void *ud, struct xnode *el);
	/* </stream:stream> from the peer. */
	int (*on_close)(void *ud);
};

enum xfeed_rc {
	XFEED_OK = 0,   /* all input consumed */
	XFEED_STOPPED,  /* a callback asked to stop; *used says how far we got */
	XFEED_ERR,      /* stream error; see xstream_error() */
};

struct xstream;

/* Creates a stream parser. <ops> and <ud> are kept; <limits> is copied.
 * Returns NULL on OOM. */
struct xstream *xstream_new(const struct xstream_limits *limits,
			    const struct xstream_ops *ops, void *ud);

/* Parses <len> bytes of <data> (any split: mid-tag, mid-UTF-8 sequence).
 * On XFEED_STOPPED, *<used> = bytes consumed up to and including the element
 * whose callback stopped the parse; on XFEED_OK it is <len>. After
 * XFEED_ERR, further feeds return XFEED_ERR. */
enum xfeed_rc xstream_feed(struct xstream *xs, const char *data, size_t len, size_t *used);

/* Why the last feed failed. */
enum xstream_err xstream_error(const struct xstream *xs);

/* What was wrong, for a log line and the stream error's <text/>: expat's
 * message with line and column ("XML or text declaration not at start of
 * entity at line 1, column 2"), or our own reason. Formats into <buf> when
 * needed; NULL when there is nothing to say beyond the condition. */
const char *xstream_error_text(const struct xstream *xs, char *buf, size_t len);

/* True while bytes of an unfinished top-level element (stanza or nonza)
 * are held: the element began arriving and has not ended yet. */
bool xstream_in_element(const struct xstream *xs);

/* Bytes the stream holds for parsing: expat's (capped at 4 stanza limits
 * plus 64 KiB; past one limit plus 64 KiB the parser is rebuilt at the next
 * stanza boundary) and the tree in progress (capped at 4 limits plus
 * 16 KiB). Going over a cap is a policy-violation. */
size_t xstream_mem(const struct xstream *xs);

/* Replaces the limits, from the next byte on (e.g. the larger stanza limit
 * once the client has authenticated). Callable from a callback. */
void xstream_set_limits(struct xstream *xs, const struct xstream_limits *limits);

/* Forgets everything parsed: the next byte starts a new stream (optional
 * whitespace, which is dropped, an optional XML declaration, then a stream
 * header). Used after STARTTLS and SASL
 * success. Never call it from inside a callback. Returns 0 or -ENOMEM. */
int xstream_reset(struct xstream *xs);

/* After XFEED_STOPPED because a top-level element's callback asked to stop
 * (not the header's, not </stream:stream>), lets the same stream go on:
 * the caller feeds the input from *used on, now or later (e.g. once a store
 * operation the element started has completed). The parser is rebuilt
 * from the stream header on the next feed. Returns 0, or -EINVAL if the
 * stream is not stopped there. Never call it from inside a callback. */
int xstream_continue(struct xstream *xs);

/* Releases parser memory while the stream sits idle between stanzas, if the
 * implementation can rebuild it on the next byte; a no-op otherwise. */
void xstream_trim(struct xstream *xs);

void xstream_free(struct xstream *xs);

#endif /* TETHER_XSTREAM_H */
