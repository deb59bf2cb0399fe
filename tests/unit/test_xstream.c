/* tests/unit/test_xstream.c - the XML stream layer: splits, limits, hostile XML, stop/reset. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tether/sbuf.h"
#include "tether/xnode.h"
#include "tether/xstream.h"

#define HDR "<stream:stream to='example.com' version='1.0' xml:lang='en' " \
	    "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"

/* A realistic client stream: XML declaration, header, three stanzas with
 * nested children, namespaces (default and prefixed), xml:lang, entities,
 * character references, multibyte UTF-8, CR LF, whitespace keepalives. */
static const char STREAM[] =
	"<?xml version='1.0' encoding='UTF-8'?>\n"
	HDR "\n"
	"  <message to='juliet@example.com/balcony' type='chat' xml:lang='fr' id='m&amp;1'>"
	"<body>Caf\xc3\xa9 &amp; cr\xc3\xa8me &#x41;&lt;&gt; \xf0\x9f\x98\x80 \xe6\x97\xa5</body>"
	"<x:active xmlns:x='http://jabber.org/protocol/chatstates'/>"
	"<data xmlns='urn:example:data'><item n=\"1\">one</item><item n='2'/>"
	"<reset xmlns='jabber:client'/><![CDATA[<raw>&]]></data>"
	"</message>\n"
	"<iq type='get' id='r1'><query xmlns='jabber:iq:roster' ver=''/></iq> \t\r\n \n"
	"<presence><show>away</show><status>line1\r\nline2 &quot;q&quot; &apos;a&apos;</status>"
	"<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='http://x' "
	"ver='QgayPKawpkPSDYmwT/WM94uAlu0='/>"
	"</presence>"
	"</stream:stream>";

static const char EXPECTED[] =
	"<message to='juliet@example.com/balcony' type='chat' xml:lang='fr' id='m&amp;1'>"
	"<body>Caf\xc3\xa9 &amp; cr\xc3\xa8me A&lt;&gt; \xf0\x9f\x98\x80 \xe6\x97\xa5</body>"
	"<active xmlns='http://jabber.org/protocol/chatstates'/>"
	"<data xmlns='urn:example:data'><item n='1'>one</item><item n='2'/>"
	"<reset xmlns='jabber:client'/>&lt;raw&gt;&amp;</data>"
	"</message>\n"
	"<iq type='get' id='r1'><query xmlns='jabber:iq:roster' ver=''/></iq>\n"
	"<presence><show>away</show><status>line1\nline2 &quot;q&quot; &apos;a&apos;</status>"
	"<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='http://x' "
	"ver='QgayPKawpkPSDYmwT/WM94uAlu0='/>"
	"</presence>\n";

/* What the callbacks saw. */
struct rec {
	struct sbuf out;      /* serialized stanzas, one per line */
	int opens, stanzas, closes;
	char to[64], lang[16];
	int stop_open;        /* on_open returns this */
	int stop_at_stanza;   /* on_stanza returns non-zero for this 1-based index */
	int stop_close;
};

static int rec_open(void *ud, struct xnode *hdr)
{
	struct rec *r = ud;
	r->opens++;
	assert_string_equal(hdr->name, "stream");
	assert_string_equal(hdr->ns, XMLNS_STREAM);
	const char *to = xnode_attr(hdr, "to");
	snprintf(r->to, sizeof(r->to), "%s", to ? to : "");
	r->lang[0] = 0;
	for (struct xattr *a = hdr->attrs; a; a = a->next)
		if (a->ns && strcmp(a->ns, XMLNS_XML) == 0 && strcmp(a->name, "lang") == 0)
			snprintf(r->lang, sizeof(r->lang), "%s", a->value);
	return r->stop_open;
}

static int rec_stanza(void *ud, struct xnode *el)
{
	struct rec *r = ud;
	r->stanzas++;
	assert_null(el->parent);
	assert_int_equal(xnode_serialize(el, XMLNS_CLIENT, &r->out), 0);
	assert_int_equal(sbuf_puts(&r->out, "\n"), 0);
	return r->stop_at_stanza == r->stanzas;
}

static int rec_close(void *ud)
{
	struct rec *r = ud;
	r->closes++;
	return r->stop_close;
}

static const struct xstream_ops rec_ops = { rec_open, rec_stanza, rec_close };

static struct xstream *new_xs(struct rec *r, size_t max_size, unsigned max_depth)
{
	struct xstream_limits l = { max_size, max_depth, 0 };
	memset(r, 0, sizeof(*r));
	struct xstream *xs = xstream_new(&l, &rec_ops, r);
	assert_non_null(xs);
	return xs;
}

static enum xfeed_rc feed(struct xstream *xs, const char *s, size_t len)
{
	size_t used = 12345;
	enum xfeed_rc rc = xstream_feed(xs, s, len, &used);
	if (rc == XFEED_OK)
		assert_int_equal(used, len);
	return rc;
}

static enum xfeed_rc feed_str(struct xstream *xs, const char *s)
{
	return feed(xs, s, strlen(s));
}

/* Feeds <s> whole and expects stream error <e>. */
static void expect_err(const char *s, enum xstream_err e)
{
	struct rec r;
	struct xstream *xs = new_xs(&r, 4096, 16);
	assert_int_equal(feed_str(xs, s), XFEED_ERR);
	assert_int_equal(xstream_error(xs), e);
	/* Sticky. */
	assert_int_equal(feed_str(xs, " "), XFEED_ERR);
	xstream_free(xs);
	sbuf_free(&r.out);
}

/* ---------------------------------------------------------------- splits */

static void check_whole(struct rec *r)
{
	assert_int_equal(r->opens, 1);
	assert_int_equal(r->closes, 1);
	assert_int_equal(r->stanzas, 3);
	assert_string_equal(r->to, "example.com");
	assert_string_equal(r->lang, "en");
	assert_string_equal(r->out.data, EXPECTED);
}

/* "<m>yyy...</m>", <total> bytes long, in <buf>. */
static const char *make_m(char *buf, size_t total)
{
	memset(buf, 'y', total);
	memcpy(buf, "<m>", 3);
	memcpy(buf + total - 4, "</m>", 4);
	buf[total] = 0;
	return buf;
}

static void test_whole_stream(void **state)
{
	(void)state;
	struct rec r;
	struct xstream *xs = new_xs(&r, 65536, 32);
	assert_int_equal(feed(xs, STREAM, sizeof(STREAM) - 1), XFEED_OK);
	check_whole(&r);
	xstream_free(xs);
	sbuf_free(&r.out);
}

static void test_every_split(void **state)
{
	(void)state;
	const size_t n = sizeof(STREAM) - 1;
	for (size_t i = 0; i <= n; i++) {
		struct rec r;
		struct xstream *xs = new_xs(&r, 65536, 32);
		assert_int_equal(feed(xs, STREAM, i), XFEED_OK);
		assert_int_equal(feed(xs, STREAM + i, n - i), XFEED_OK);
		check_whole(&r);
		xstream_free(xs);
		sbuf_free(&r.out);
	}
}

static void test_byte_at_a_time(void **state)
{
	(void)state;
	const size_t n = sizeof(STREAM) - 1;
	struct rec r;
	struct xstream *xs = new_xs(&r, 65536, 32);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(feed(xs, STREAM + i, 1), XFEED_OK);
	check_whole(&r);
	xstream_free(xs);
	sbuf_free(&r.out);
}

/* Trimming between any two feeds (a no-op while a token is half-parsed)
 * must not change the result. */
/* [limits] max_header_size: a header (from the stream's first byte, so
 * leading whitespace and the XML declaration count) over it is
 * policy-violation, said to be the header's fault; stanzas after a header
 * within it get the stanza limit; the limit applies again after a reset
 * (a restart). What a trim replays is never bigger than the header was. */
static void test_header_size(void **state)
{
	(void)state;
	struct rec r;
	struct xstream_limits l = { 8192, 16, 512 };
	char hdr[2048], m[4096];
	size_t n = (size_t)snprintf(hdr, sizeof(hdr), "<stream:stream xmlns='jabber:client' "
				    "xmlns:stream='" XMLNS_STREAM "'");
	while (n < 600)
		n += (size_t)snprintf(hdr + n, sizeof(hdr) - n, " xmlns:p%zu='urn:x'", n);
	snprintf(hdr + n, sizeof(hdr) - n, ">");

	/* Whole, and byte by byte: refused before the header is complete. */
	for (int split = 0; split < 2; split++) {
		memset(&r, 0, sizeof(r));
		struct xstream *xs = xstream_new(&l, &rec_ops, &r);
		assert_non_null(xs);
		enum xfeed_rc rc = XFEED_OK;
		for (size_t i = 0; i < strlen(hdr) && rc == XFEED_OK; i += split ? 1 : strlen(hdr))
			rc = feed(xs, hdr + i, split ? 1 : strlen(hdr));
		assert_int_equal(rc, XFEED_ERR);
		assert_int_equal(xstream_error(xs), XSE_POLICY_VIOLATION);
		char buf[64];
		assert_ptr_equal(xstream_error_text(xs, buf, sizeof(buf)), xstream_why_header);
		assert_int_equal(r.opens, 0);
		xstream_free(xs);
	}

	/* Leading whitespace counts. */
	memset(&r, 0, sizeof(r));
	struct xstream *xs = xstream_new(&l, &rec_ops, &r);
	memset(m, ' ', 600);
	assert_int_equal(feed(xs, m, 600), XFEED_ERR);
	assert_int_equal(xstream_error(xs), XSE_POLICY_VIOLATION);
	xstream_free(xs);

	/* A header within it; then a stanza of several times the header's
	 * limit is fine, a trim replays the header, and the limit is back
	 * after a restart. */
	memset(&r, 0, sizeof(r));
	xs = xstream_new(&l, &rec_ops, &r);
	assert_int_equal(feed_str(xs, "<?xml version='1.0'?>" HDR), XFEED_OK);
	assert_int_equal(r.opens, 1);
	assert_int_equal(feed_str(xs, make_m(m, 4000)), XFEED_OK);
	xstream_trim(xs);
	assert_int_equal(feed_str(xs, make_m(m, 4000)), XFEED_OK);
	assert_int_equal(r.stanzas, 2);
	assert_int_equal(xstream_reset(xs), 0);
	assert_int_equal(feed_str(xs, hdr), XFEED_ERR);
	assert_int_equal(xstream_error(xs), XSE_POLICY_VIOLATION);
	xstream_free(xs);
	sbuf_free(&r.out);

	/* 0, or one over the stanza limit: the stanza limit. */
	l.max_header_size = 0;
	memset(&r, 0, sizeof(r));
	xs = xstream_new(&l, &rec_ops, &r);
	assert_int_equal(feed_str(xs, hdr), XFEED_OK);
	assert_int_equal(r.opens, 1);
	xstream_free(xs);
	sbuf_free(&r.out);
}

static void test_trim_every_split(void **state)
{
	(void)state;
	const size_t n = sizeof(STREAM) - 1;
	struct rec r;
	struct xstream *xs = new_xs(&r, 65536, 32);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(feed(xs, STREAM + i, 1), XFEED_OK);
		xstream_trim(xs);
	}
	check_whole(&r);
	xstream_free(xs);
	sbuf_free(&r.out);

	for (size_t i = 0; i <= n; i++) {
		xs = new_xs(&r, 65536, 32);
		assert_int_equal(feed(xs, STREAM, i), XFEED_OK);
		xstream_trim(xs);
		assert_int_equal(feed(xs, STREAM + i, n - i), XFEED_OK);
		check_whole(&r);
		xstream_free(xs);
		sbuf_free(&r.out);
	}
}

/* After a trim the parser is rebuilt from the header's declarations: a
 * prefix declared there, and an unusual root prefix, still work. */
static void test_trim_prefixes(void **state)
{
	(void)state;
	struct rec r;
	struct xstream *xs = new_xs(&r, 4096, 16);
	assert_int_equal(feed_str(xs, "<s:stream xmlns='jabber:client' xmlns:s='" XMLNS_STREAM "' "
				  "xmlns:e='urn:e&amp;f' to='x'><a/>"), XFEED_OK);
	xstream_trim(xs);
	assert_int_equal(feed_str(xs, "<e:b e:c='1'/>"), XFEED_OK);
	xstream_trim(xs);
	xstream_trim(xs);
	assert_int_equal(feed_str(xs, " <c/> "), XFEED_OK);
	xstream_trim(xs);
	assert_int_equal(feed_str(xs, "</s:stream>"), XFEED_OK);
	assert_int_equal(r.opens, 1);
	assert_int_equal(r.closes, 1);
	assert_string_equal(r.out.data, "<a/>\n<b xmlns='urn:e&amp;f' xmlns:ns0='urn:e&amp;f' ns0:c='1'/>\n<c/>\n");
	xstream_free(xs);
	sbuf_free(&r.out);

	/* Byte positions stay right across a trim: the size limit still counts
	 * from the stanza's first byte. */
	char m[256];
	xs = new_xs(&r, 128, 16);
	assert_int_equal(feed_str(xs, "<stream:stream xmlns='jabber:client' xmlns:stream='" XMLNS_STREAM "'>"), XFEED_OK);
	for (int i = 0; i < 100; i++) {
		xstream_trim(xs);
		assert_int_equal(feed_str(xs, make_m(m, 100)), XFEED_OK);
		assert_int_equal(feed_str(xs, "  \n"), XFEED_OK);
	}
	xstream_trim(xs);
	assert_int_equal(feed_str(xs, make_m(m, 128)), XFEED_OK);
	xstream_trim(xs);
	assert_int_equal(feed_str(xs, make_m(m, 129)), XFEED_ERR);
	assert_int_equal(xstream_error(xs), XSE_POLICY_VIOLATION);
	assert_int_equal(r.stanzas, 101);
	xstream_free(xs);
	sbuf_free(&r.out);
}

static void test_split_utf8(void **state)
{
	(void)state;
	/* U+1F600 (4 bytes) and U+00E9 (2 bytes), cut inside each. */
	const char *parts[] = { HDR "<message><body>a\xf0", "\x9f", ("\x98\x80" "b\xc3"), "\xa9</body></message>" };
	struct rec r;
	struct xstream *xs = new_xs(&r, 4096, 16);
	for (size_t i = 0; i < 4; i++)
		assert_int_equal(feed_str(xs, parts[i]), XFEED_OK);
	assert_string_equal(r.out.data, "<message><body>a\xf0\x9f\x98\x80" "b\xc3\xa9</body></message>\n");
	xstream_free(xs);
	sbuf_free(&r.out);
}

/* ------------------------------------------------------- hostile input */

static void test_doctype(void **state)
{
	(void)state;
	expect_err("<?xml version='1.0'?><!DOCTYPE stream:stream>" HDR, XSE_RESTRICTED_XML);
	expect_err("<!DOCTYPE foo SYSTEM 'file:///etc/passwd'><foo>&xxe;</foo>", XSE_RESTRICTED_XML);
}

static void test_billion_laughs(void **state)
{
	(void)state;
	expect_err("<?xml version='1.0'?>\n"
		   "<!DOCTYPE lolz [\n"
		   " <!ENTITY lol \"lol\">\n"
		   " <!ENTITY lol1 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">\n"
		   " <!ENTITY lol2 \"&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;\">\n"
		   "]>\n"
		   "<stream:stream xmlns='jabber:client' xmlns:stream='" XMLNS_STREAM "'>"
		   "<message><body>&lol2;</body></message>", XSE_RESTRICTED_XML);
}

static void test_comment_pi(void **state)
{
	(void)state;
	expect_err("<!-- hi -->" HDR, XSE_RESTRICTED_XML);
	expect_err(HDR "<!-- hi -->", XSE_RESTRICTED_XML);
	expect_err(HDR "<message><!-- hi --></message>", XSE_RESTRICTED_XML);
	expect_err("<?xml version='1.0'?><?foo bar?>" HDR, XSE_RESTRICTED_XML);
	expect_err(HDR "<message><?foo bar?></message>", XSE_RESTRICTED_XML);
	/* A second XML declaration is not a declaration any more. */
	expect_err(HDR "<?xml version='1.0'?>", XSE_NOT_WELL_FORMED);
}

static void test_entities(void **state)
{
	(void)state;
	expect_err(HDR "<message>&foo;</message>", XSE_NOT_WELL_FORMED);
	expect_err(HDR "<message a='&foo;'/>", XSE_NOT_WELL_FORMED);
	expect_err(HDR "<message>&#0;</message>", XSE_NOT_WELL_FORMED);
	expect_err(HDR "<message>a & b</message>", XSE_NOT_WELL_FORMED);
}

static void test_not_well_formed(void **state)
{
	(void)state;
	expect_err(HDR "<a></b>", XSE_NOT_WELL_FORMED);
	expect_err(HDR "hello", XSE_NOT_WELL_FORMED);
	expect_err(HDR "<a/>  x <b/>", XSE_NOT_WELL_FORMED);
	expect_err(HDR "<a x='1' x='2'/>", XSE_NOT_WELL_FORMED);
	expect_err(HDR "<a>\x01</a>", XSE_NOT_WELL_FORMED);
	expect_err(HDR "</stream:stream><a/>", XSE_NOT_WELL_FORMED);
	expect_err("junk ", XSE_NOT_WELL_FORMED);
}

static void test_namespaces(void **state)
{
	(void)state;
	expect_err("<stream:stream xmlns='jabber:client' xmlns:stream='urn:wrong'>", XSE_INVALID_NAMESPACE);
	expect_err("<stream:features xmlns='jabber:client' xmlns:stream='" XMLNS_STREAM "'>", XSE_INVALID_NAMESPACE);
	expect_err("<stream xmlns='" XMLNS_STREAM "'>", XSE_INVALID_NAMESPACE);
	expect_err("<stream:stream xmlns='jabber:server' xmlns:stream='" XMLNS_STREAM "'>", XSE_INVALID_NAMESPACE);
	expect_err("<stream:stream xmlns:stream='" XMLNS_STREAM "'>", XSE_INVALID_NAMESPACE);
	expect_err("<stream:stream xmlns='' xmlns:stream='" XMLNS_STREAM "'>", XSE_INVALID_NAMESPACE);
	expect_err("<message xmlns='jabber:client'/>", XSE_INVALID_NAMESPACE);
	/* RFC 6120 §4.9.3.2's own example. */
	expect_err("<foobar:stream xmlns='jabber:client' xmlns:stream='" XMLNS_STREAM "'>",
		   XSE_BAD_NAMESPACE_PREFIX);
	expect_err(HDR "<foo:message/>", XSE_BAD_NAMESPACE_PREFIX);

	/* Parse by URI, not by prefix text. */
	struct rec r;
	struct xstream *xs = new_xs(&r, 4096, 16);
	assert_int_equal(feed_str(xs, "<x:stream xmlns='jabber:client' xmlns:x='" XMLNS_STREAM "' to='a'>"
				  "<message xmlns='urn:other'/></x:stream>"), XFEED_OK);
	assert_int_equal(r.opens, 1);
	assert_int_equal(r.closes, 1);
	assert_string_equal(r.out.data, "<message xmlns='urn:other'/>\n");
	xstream_free(xs);
	sbuf_free(&r.out);
}

static void test_encoding(void **state)
{
	(void)state;
	expect_err("<?xml version='1.0' encoding='ISO-8859-1'?>" HDR, XSE_UNSUPPORTED_ENCODING);
	expect_err("<?xml version='1.0' encoding='UTF-16'?>" HDR, XSE_UNSUPPORTED_ENCODING);
	/* Invalid UTF-8: bad continuation, overlong, surrogate, > U+10FFFF, stray bytes. */
	expect_err(HDR "<m>\xc3\x28</m>", XSE_UNSUPPORTED_ENCODING);
	expect_err(HDR "<m>\xc0\xaf</m>", XSE_UNSUPPORTED_ENCODING);
	expect_err(HDR "<m>\xe0\x80\xaf</m>", XSE_UNSUPPORTED_ENCODING);
	expect_err(HDR "<m>\xed\xa0\x80</m>", XSE_UNSUPPORTED_ENCODING);
	expect_err(HDR "<m>\xf4\x90\x80\x80</m>", XSE_UNSUPPORTED_ENCODING);
	expect_err(HDR "<m a='\xff'/>", XSE_UNSUPPORTED_ENCODING);
	expect_err(HDR "<m>\x80</m>", XSE_UNSUPPORTED_ENCODING);

	struct rec r;
	struct xstream *xs = new_xs(&r, 4096, 16);
	assert_int_equal(feed_str(xs, "<?xml version='1.0' encoding='utf-8'?>" HDR "<a/>"), XFEED_OK);
	assert_int_equal(r.stanzas, 1);
	/* Cut inside a sequence that turns out invalid in the next feed; the
	 * stanza before the bad byte is still delivered. */
	assert_int_equal(feed_str(xs, "<b/><c>\xe2\x82"), XFEED_OK);
	assert_int_equal(feed_str(xs, "x</c>"), XFEED_ERR);
	assert_int_equal(xstream_error(xs), XSE_UNSUPPORTED_ENCODING);
	assert_int_equal(r.stanzas, 2);
	xstream_free(xs);
	sbuf_free(&r.out);
}

/* Feeds <s> in <chunk>-byte pieces until an error; returns the stream
 * offset reached when it came. */
static size_t feed_chunks_until_err(struct xstream *xs, const char *s, size_t len, size_t chunk)
{
	for (size_t off = 0; off < len; off += chunk) {
		size_t n = len - off < chunk ? len - off : chunk;
		if (feed(xs, s + off, n) == XFEED_ERR)
			return off + n;
	}
	return SIZE_MAX;
}

static void test_huge(void **state)
{
	(void)state;
	const size_t max = 1024, big = 1 << 20;
	char *s = malloc(big);
	assert_non_null(s);

	/* Attribute value, text, start tag name, header: all refused once
	 * max bytes of the unfinished element were seen. */
	const char *heads[] = { HDR "<message to='", HDR "<message><body>", HDR "<message><a", HDR " <",
				"<?xml version='1.0'?><stream:stream xmlns='jabber:client' a='", "" };
	for (size_t k = 0; k < sizeof(heads) / sizeof(heads[0]); k++) {
		for (size_t chunk = 1; chunk <= 4096; chunk *= 8) {
			size_t hl = strlen(heads[k]);
			memcpy(s, heads[k], hl);
			memset(s + hl, k == 5 ? ' ' : 'x', big - hl);
			struct rec r;
			struct xstream *xs = new_xs(&r, max, 16);
			size_t at = feed_chunks_until_err(xs, s, big, chunk);
			assert_int_equal(xstream_error(xs), XSE_POLICY_VIOLATION);
			assert_true(at <= strlen(HDR) + 2 + max + chunk);
			xstream_free(xs);
			sbuf_free(&r.out);
		}
	}
	/* The same, in one big feed. */
	struct rec r;
	struct xstream *xs = new_xs(&r, max, 16);
	memcpy(s, HDR "<message><body>", strlen(HDR "<message><body>"));
	assert_int_equal(feed(xs, s, big), XFEED_ERR);
	assert_int_equal(xstream_error(xs), XSE_POLICY_VIOLATION);
	xstream_free(xs);
	sbuf_free(&r.out);
	free(s);
}

/* A stanza of exactly max bytes passes, one more byte does not; the bytes
 * between stanzas do not count. */
static void test_size_boundary(void **state)
{
	(void)state;
	struct rec r;
	struct xstream *xs = new_xs(&r, 16, 16);
	assert_int_equal(feed_str(xs, "<stream:stream xmlns='jabber:client' xmlns:stream='" XMLNS_STREAM "'>"),
			 XFEED_ERR);
	assert_int_equal(xstream_error(xs), XSE_POLICY_VIOLATION);
	xstream_free(xs);

	xs = new_xs(&r, strlen(HDR) + 6, 16);
	assert_int_equal(feed_str(xs, "<?xml version='1.0'?>" HDR), XFEED_ERR);  /* header counts the decl */
	xstream_free(xs);

	xs = new_xs(&r, strlen(HDR), 16);
	assert_int_equal(feed_str(xs, HDR), XFEED_OK);
	for (int i = 0; i < 50; i++)
		assert_int_equal(feed_str(xs, "<m>0123456789</m>          "), XFEED_OK);
	char ok[512], bad[512];
	size_t max = strlen(HDR);
	make_m(ok, max);
	make_m(bad, max + 1);
	assert_int_equal(feed_str(xs, ok), XFEED_OK);
	assert_int_equal(r.stanzas, 51);
	assert_int_equal(feed_str(xs, bad), XFEED_ERR);
	assert_int_equal(xstream_error(xs), XSE_POLICY_VIOLATION);
	assert_int_equal(r.stanzas, 51);
	xstream_free(xs);
	sbuf_free(&r.out);
}

static void test_depth(void **state)
{
	(void)state;
	char s[4096];
	for (unsigned depth = 7; depth <= 9; depth++) {
		size_t off = (size_t)snprintf(s, sizeof(s), "%s", HDR);
		for (unsigned i = 0; i < depth; i++)
			off += (size_t)snprintf(s + off, sizeof(s) - off, "<a>");
		for (unsigned i = 0; i < depth; i++)
			off += (size_t)snprintf(s + off, sizeof(s) - off, "</a>");
		struct rec r;
		struct xstream *xs = new_xs(&r, 4096, 8);
		enum xfeed_rc rc = feed_str(xs, s);
		if (depth <= 8) {
			assert_int_equal(rc, XFEED_OK);
			assert_int_equal(r.stanzas, 1);
		} else {
			assert_int_equal(rc, XFEED_ERR);
			assert_int_equal(xstream_error(xs), XSE_POLICY_VIOLATION);
			assert_int_equal(r.stanzas, 0);
		}
		xstream_free(xs);
		sbuf_free(&r.out);
	}
	/* Without closing tags, one byte at a time. */
	struct rec r;
	struct xstream *xs = new_xs(&r, 1 << 20, 64);
	assert_int_equal(feed_str(xs, HDR), XFEED_OK);
	enum xfeed_rc rc = XFEED_OK;
	for (int i = 0; i < 100000 && rc == XFEED_OK; i++)
		rc = feed_str(xs, "<a>");
	assert_int_equal(rc, XFEED_ERR);
	assert_int_equal(xstream_error(xs), XSE_POLICY_VIOLATION);
	xstream_free(xs);
	sbuf_free(&r.out);
}

/* ------------------------------------------------------ stop, used, reset */

static void test_stop_then_garbage(void **state)
{
	(void)state;
	static const char s[] = HDR "<a/><b/>";
	struct rec r;
	struct xstream *xs = new_xs(&r, 4096, 16);
	r.stop_at_stanza = 1;
	size_t used = 0;
	assert_int_equal(xstream_feed(xs, s, strlen(s), &used), XFEED_STOPPED);
	assert_int_equal(used, strlen(HDR "<a/>"));
	assert_int_equal(r.stanzas, 1);
	/* Not reset: the parser is gone, the caller is wrong. */
	assert_int_equal(feed_str(xs, "<c/>"), XFEED_ERR);

	assert_int_equal(xstream_reset(xs), 0);
	assert_int_equal(feed(xs, s + used, strlen(s) - used), XFEED_ERR);
	assert_int_equal(xstream_error(xs), XSE_INVALID_NAMESPACE);
	assert_int_equal(r.stanzas, 1);
	assert_int_equal(r.opens, 1);
	xstream_free(xs);
	sbuf_free(&r.out);
}

/* STARTTLS/SASL-style restart: the client's new header follows in the same
 * read; it must be accepted after the reset, at every split. */
static void test_stop_restart(void **state)
{
	(void)state;
	static const char s[] = "<?xml version='1.0'?>" HDR "\n<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "
				"mechanism='PLAIN'>AGp1bGlldAByMG0zMG15cjBtMzA=</auth>"
				"<?xml version='1.0'?><stream:stream to='b.example' "
				"xmlns='jabber:client' xmlns:stream='" XMLNS_STREAM "'><iq/> ";
	const size_t n = strlen(s), first_end = strlen(s) - strlen(strstr(s, "</auth>")) + 7;

	for (size_t i = 0; i <= n; i++) {
		struct rec r;
		struct xstream *xs = new_xs(&r, 4096, 16);
		r.stop_at_stanza = 1;
		size_t used = 0, rest_off;
		enum xfeed_rc rc = xstream_feed(xs, s, i, &used);
		if (rc == XFEED_OK) {
			assert_int_equal(used, i);
			rc = xstream_feed(xs, s + i, n - i, &used);
			assert_int_equal(rc, XFEED_STOPPED);
			rest_off = i + used;
		} else {
			assert_int_equal(rc, XFEED_STOPPED);
			rest_off = used;
		}
		assert_int_equal(rest_off, first_end);
		assert_int_equal(r.stanzas, 1);
		assert_int_equal(xstream_reset(xs), 0);
		r.stop_at_stanza = 0;
		assert_int_equal(feed(xs, s + rest_off, n - rest_off), XFEED_OK);
		assert_int_equal(r.opens, 2);
		assert_int_equal(r.stanzas, 2);
		assert_string_equal(r.to, "b.example");
		xstream_free(xs);
		sbuf_free(&r.out);
	}
}

/* Whitespace left over from the old stream ("</auth>\n", as go-sendxmpp
 * sends it) before the restarted stream's XML declaration or header is
 * dropped, at every split of the rest. */
static void test_restart_leading_space(void **state)
{
	(void)state;
	static const char *const rests[] = {
		"\n<?xml version='1.0'?>" HDR "<iq/>",
		"\n" HDR "<iq/>",
		"<?xml version='1.0'?>" HDR "<iq/>",
		" \r\n\t " HDR "<iq/>",
	};
	for (size_t k = 0; k < sizeof(rests) / sizeof(rests[0]); k++) {
		const char *s = rests[k];
		const size_t n = strlen(s);
		for (size_t i = 0; i <= n; i++) {
			struct rec r;
			struct xstream *xs = new_xs(&r, 4096, 16);
			assert_int_equal(feed_str(xs, HDR), XFEED_OK);
			assert_int_equal(xstream_reset(xs), 0);
			assert_int_equal(feed(xs, s, i), XFEED_OK);
			assert_int_equal(feed(xs, s + i, n - i), XFEED_OK);
			assert_int_equal(r.opens, 2);
			assert_int_equal(r.stanzas, 1);
			xstream_free(xs);
			sbuf_free(&r.out);
		}
	}
	/* Only before the header: after it, text is still not allowed. */
	expect_err("\n" HDR "x", XSE_NOT_WELL_FORMED);
}

/* A not-well-formed stream says what expat found, and where. */
static void test_error_text(void **state)
{
	(void)state;
	struct rec r;
	char buf[160];
	struct xstream *xs = new_xs(&r, 4096, 16);
	assert_null(xstream_error_text(xs, buf, sizeof(buf)));
	assert_int_equal(feed_str(xs, HDR "<a></b>"), XFEED_ERR);
	const char *t = xstream_error_text(xs, buf, sizeof(buf));
	assert_non_null(t);
	assert_non_null(strstr(t, "mismatched tag"));
	assert_non_null(strstr(t, "line 1, column"));
	xstream_free(xs);
	sbuf_free(&r.out);

	xs = new_xs(&r, 4096, 16);
	assert_int_equal(feed_str(xs, HDR "<a/> x"), XFEED_ERR);
	assert_string_equal(xstream_error_text(xs, buf, sizeof(buf)), "text between stanzas");
	xstream_free(xs);
	sbuf_free(&r.out);
}

/* Never-seen names grow expat's name pool for the parser's life: the
 * parser is rebuilt at stanza boundaries, so memory stays bounded, and no
 * stanza is lost or changed across the rebuilds, at any chunk size. */
static void test_name_pool_bounded(void **state)
{
	(void)state;
	const size_t max = 4096, n = 20000;
	struct sbuf in = SBUF_INIT;
	assert_int_equal(sbuf_puts(&in, HDR), 0);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(sbuf_printf(&in, "<n%zu xmlns='urn:x:%zu' a%zu='v'><c%zu/></n%zu>",
					     i, i, i, i, i), 0);
	static const size_t chunks[] = { 7, 1000, 65536 };
	for (size_t k = 0; k < sizeof(chunks) / sizeof(chunks[0]); k++) {
		struct rec r;
		struct xstream *xs = new_xs(&r, max, 16);
		size_t peak = 0;
		for (size_t off = 0; off < in.len; off += chunks[k]) {
			size_t len = in.len - off < chunks[k] ? in.len - off : chunks[k];
			assert_int_equal(feed(xs, in.data + off, len), XFEED_OK);
			if (xstream_mem(xs) > peak)
				peak = xstream_mem(xs);
		}
		assert_int_equal(r.stanzas, n);
		static const char last[] = "<n19999 xmlns='urn:x:19999' a19999='v'><c19999/></n19999>\n";
		assert_true(r.out.len > strlen(last));
		assert_string_equal(r.out.data + r.out.len - strlen(last), last);
		/* Caps: expat 4 * max + 64 KiB, tree 4 * max + 16 KiB. */
		assert_true(peak <= 8 * max + (80u << 10));
		xstream_free(xs);
		sbuf_free(&r.out);
	}
	sbuf_free(&in);
}

/* Elements cost far more as a tree than as input: the tree is capped
 * relative to the stanza limit, before the input limit is reached. */
static void test_tree_bounded(void **state)
{
	(void)state;
	const size_t max = 16384;
	struct sbuf in = SBUF_INIT;
	assert_int_equal(sbuf_puts(&in, HDR "<message>"), 0);
	while (in.len < max - 16)
		assert_int_equal(sbuf_puts(&in, "<a/>"), 0);
	struct rec r;
	struct xstream *xs = new_xs(&r, max, 16);
	assert_int_equal(feed(xs, in.data, in.len), XFEED_ERR);
	assert_int_equal(xstream_error(xs), XSE_POLICY_VIOLATION);
	char buf[64];
	assert_string_equal(xstream_error_text(xs, buf, sizeof(buf)), "stanza tree too large");
	assert_int_equal(r.stanzas, 0);
	xstream_free(xs);
	sbuf_free(&r.out);
	sbuf_free(&in);
}

/* Stop after any stanza, go on later with the rest: the same stanzas come
 * out as from one feed, at every split, however often the stream pauses. */
static void test_stop_continue(void **state)
{
	(void)state;
	static const char s[] = "<?xml version='1.0'?>" HDR "<a x='1'/><b><c>t</c></b>\n<d/> <e/></stream:stream>";
	const size_t n = strlen(s);
	for (size_t i = 0; i <= n; i++) {
		struct rec r;
		struct xstream *xs = new_xs(&r, 4096, 16);
		size_t off = 0, end = i, pauses = 0;
		while (off < n) {
			r.stop_at_stanza = r.stanzas + 1; /* stop after every stanza */
			size_t used = 0;
			enum xfeed_rc rc = xstream_feed(xs, s + off, end - off, &used);
			if (rc == XFEED_STOPPED && r.stanzas == r.stop_at_stanza) {
				assert_int_equal(xstream_continue(xs), 0);
				off += used;
				pauses++;
				continue;
			}
			assert_int_equal(rc, XFEED_OK);
			off = end;
			end = n;
		}
		assert_int_equal(r.opens, 1);
		assert_int_equal(r.stanzas, 4);
		assert_int_equal(r.closes, 1);
		assert_int_equal(pauses, 4);
		assert_string_equal(r.out.data, "<a x='1'/>\n<b><c>t</c></b>\n<d/>\n<e/>\n");
		xstream_free(xs);
		sbuf_free(&r.out);
	}
	/* Not stopped, or stopped by the header: refused. */
	struct rec r;
	struct xstream *xs = new_xs(&r, 4096, 16);
	assert_int_equal(xstream_continue(xs), -EINVAL);
	r.stop_open = 1;
	size_t used;
	assert_int_equal(xstream_feed(xs, HDR, strlen(HDR), &used), XFEED_STOPPED);
	assert_int_equal(xstream_continue(xs), -EINVAL);
	xstream_free(xs);
	sbuf_free(&r.out);
}

static void test_stop_open_close(void **state)
{
	(void)state;
	static const char s[] = "<?xml version='1.0'?>" HDR "<a/></stream:stream>   ";
	struct rec r;
	struct xstream *xs = new_xs(&r, 4096, 16);
	r.stop_open = 1;
	size_t used = 0;
	assert_int_equal(xstream_feed(xs, s, strlen(s), &used), XFEED_STOPPED);
	assert_int_equal(used, strlen("<?xml version='1.0'?>" HDR));
	assert_int_equal(r.stanzas, 0);

	assert_int_equal(xstream_reset(xs), 0);
	r.stop_open = 0;
	r.stop_close = 1;
	assert_int_equal(xstream_feed(xs, s, strlen(s), &used), XFEED_STOPPED);
	assert_int_equal(used, strlen(s) - 3);
	assert_int_equal(r.opens, 2);
	assert_int_equal(r.stanzas, 1);
	assert_int_equal(r.closes, 1);

	/* Reset after an error gives a working stream again. */
	assert_int_equal(xstream_reset(xs), 0);
	assert_int_equal(feed_str(xs, "<bad/>"), XFEED_ERR);
	assert_int_equal(xstream_reset(xs), 0);
	r.stop_close = 0;
	assert_int_equal(feed_str(xs, s), XFEED_OK);
	assert_int_equal(r.closes, 2);
	xstream_free(xs);
	sbuf_free(&r.out);
}

static void test_conditions(void **state)
{
	(void)state;
	assert_string_equal(xstream_err_condition(XSE_NOT_WELL_FORMED), "not-well-formed");
	assert_string_equal(xstream_err_condition(XSE_RESTRICTED_XML), "restricted-xml");
	assert_string_equal(xstream_err_condition(XSE_POLICY_VIOLATION), "policy-violation");
	assert_string_equal(xstream_err_condition(XSE_INVALID_NAMESPACE), "invalid-namespace");
	assert_string_equal(xstream_err_condition(XSE_BAD_NAMESPACE_PREFIX), "bad-namespace-prefix");
	assert_string_equal(xstream_err_condition(XSE_UNSUPPORTED_ENCODING), "unsupported-encoding");
	assert_string_equal(xstream_err_condition(XSE_NOMEM), "internal-server-error");
	assert_string_equal(xstream_err_condition((enum xstream_err)99), "undefined-condition");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_whole_stream),
		cmocka_unit_test(test_every_split),
		cmocka_unit_test(test_byte_at_a_time),
		cmocka_unit_test(test_trim_every_split),
		cmocka_unit_test(test_trim_prefixes),
		cmocka_unit_test(test_split_utf8),
		cmocka_unit_test(test_doctype),
		cmocka_unit_test(test_billion_laughs),
		cmocka_unit_test(test_comment_pi),
		cmocka_unit_test(test_entities),
		cmocka_unit_test(test_not_well_formed),
		cmocka_unit_test(test_namespaces),
		cmocka_unit_test(test_encoding),
		cmocka_unit_test(test_huge),
		cmocka_unit_test(test_size_boundary),
		cmocka_unit_test(test_depth),
		cmocka_unit_test(test_stop_then_garbage),
		cmocka_unit_test(test_stop_restart),
		cmocka_unit_test(test_stop_open_close),
		cmocka_unit_test(test_stop_continue),
		cmocka_unit_test(test_restart_leading_space),
		cmocka_unit_test(test_error_text),
		cmocka_unit_test(test_name_pool_bounded),
		cmocka_unit_test(test_tree_bounded),
		cmocka_unit_test(test_conditions),
		cmocka_unit_test(test_header_size),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
