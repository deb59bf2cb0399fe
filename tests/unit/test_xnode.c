/* tests/unit/test_xnode.c - arena, tree helpers, serializer (escaping, namespaces, round trip). */
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

static void test_arena(void **state)
{
	(void)state;
	struct xarena *a = xarena_new();
	assert_non_null(a);
	for (int round = 0; round < 3; round++) {
		/* Small, odd-sized and big allocations: aligned, distinct, writable. */
		char *prev = NULL;
		for (size_t i = 1; i < 3000; i += 7) {
			char *p = xarena_alloc(a, i);
			assert_non_null(p);
			assert_int_equal((uintptr_t)p % 16, 0);
			assert_true(p != prev);
			memset(p, 0xab, i);
			prev = p;
		}
		char *big = xarena_alloc(a, 1 << 20);
		assert_non_null(big);
		memset(big, 1, 1 << 20);
		char *s = xarena_strndup(a, "hello world", 5);
		assert_string_equal(s, "hello");
		void *after = xarena_alloc(a, 8);
		assert_int_equal((uintptr_t)after % 16, 0);
		xarena_reset(a);
	}
	assert_non_null(xarena_alloc(a, 0));
	xarena_free(a);
	xarena_free(NULL);
}

static void test_tree(void **state)
{
	(void)state;
	struct xarena *a = xarena_new();
	struct xnode *iq = xnode_new(a, "jabber:client", "iq");
	assert_non_null(iq);
	assert_int_equal(xnode_set_attr(iq, "type", "result"), 0);
	assert_int_equal(xnode_set_attr(iq, "id", "x1"), 0);
	assert_int_equal(xnode_set_attr(iq, "to", "a@b/c"), 0);
	assert_string_equal(xnode_attr(iq, "type"), "result");
	assert_int_equal(xnode_set_attr(iq, "type", "error"), 0);
	assert_string_equal(xnode_attr(iq, "type"), "error");
	assert_int_equal(xnode_set_attr(iq, "id", NULL), 0);
	assert_null(xnode_attr(iq, "id"));
	assert_int_equal(xnode_set_attr(iq, "nothere", NULL), 0);

	struct xnode *bind = xnode_new(a, "urn:ietf:params:xml:ns:xmpp-bind", "bind");
	struct xnode *jid = xnode_new(a, "urn:ietf:params:xml:ns:xmpp-bind", "jid");
	xnode_append(iq, xnode_new_text(a, " ", 1));
	xnode_append(iq, bind);
	xnode_append(bind, jid);
	xnode_append(jid, xnode_new_text(a, "juliet@example.com", 18));
	xnode_append(jid, xnode_new_text(a, "/balcony", 8));
	xnode_append(iq, xnode_new_text(a, "\n", 1));
	struct xnode *other = xnode_new(a, "urn:x", "bind");
	xnode_append(iq, other);

	assert_ptr_equal(xnode_first_elem(iq), bind);
	assert_ptr_equal(xnode_next_elem(bind), other);
	assert_null(xnode_next_elem(other));
	assert_null(xnode_first_elem(jid));
	assert_ptr_equal(xnode_child(iq, "urn:ietf:params:xml:ns:xmpp-bind", "bind"), bind);
	assert_ptr_equal(xnode_child(iq, "urn:x", "bind"), other);
	assert_ptr_equal(xnode_child(iq, NULL, "bind"), bind);
	assert_null(xnode_child(iq, "urn:y", "bind"));
	assert_string_equal(xnode_text(jid), "juliet@example.com/balcony");
	assert_string_equal(xnode_text(bind), "");
	assert_string_equal(xnode_text(iq), " \n");

	struct sbuf out = SBUF_INIT;
	assert_int_equal(xnode_serialize(iq, "jabber:client", &out), 0);
	assert_string_equal(out.data,
			    "<iq type='error' to='a@b/c'> <bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
			    "<jid>juliet@example.com/balcony</jid></bind>\n<bind xmlns='urn:x'/></iq>");
	/* A subtree: its siblings and parent are not written; xmlns relative to ctx. */
	sbuf_reset(&out);
	assert_int_equal(xnode_serialize(jid, "urn:ietf:params:xml:ns:xmpp-bind", &out), 0);
	assert_string_equal(out.data, "<jid>juliet@example.com/balcony</jid>");
	sbuf_reset(&out);
	assert_int_equal(xnode_serialize(bind, NULL, &out), 0);
	assert_string_equal(out.data, "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>juliet@example.com/balcony</jid></bind>");
	sbuf_free(&out);
	xarena_free(a);
}

static void test_escaping(void **state)
{
	(void)state;
	struct xarena *a = xarena_new();
	struct xnode *m = xnode_new(a, "jabber:client", "message");
	assert_int_equal(xnode_set_attr(m, "to", "a'b\"c<d>&e\tf\ng\rh"), 0);
	xnode_append(m, xnode_new_text(a, "<&>'\"\t\n\r]]>", 11));
	struct xnode *e = xnode_new(a, "", "plain");  /* no namespace inside jabber:client */
	xnode_append(m, e);
	struct sbuf out = SBUF_INIT;
	assert_int_equal(xnode_serialize(m, "jabber:client", &out), 0);
	assert_string_equal(out.data,
			    "<message to='a&apos;b&quot;c&lt;d&gt;&amp;e&#9;f&#10;g&#13;h'>"
			    "&lt;&amp;&gt;&apos;&quot;\t\n&#13;]]&gt;<plain xmlns=''/></message>");
	sbuf_free(&out);
	xarena_free(a);
}

/* Serializing a stanza parsed from a stream, re-parsing that and
 * serializing again gives the same bytes. */
struct rt {
	struct sbuf out;
	int n;
};

static int copy_first; /* serialize a deep copy (xnode_copy) instead */

static int rt_stanza(void *ud, struct xnode *el)
{
	struct rt *r = ud;
	r->n++;
	if (!copy_first)
		return xnode_serialize(el, XMLNS_CLIENT, &r->out);
	struct xarena *a = xarena_new();
	assert_non_null(a);
	struct xnode *c = xnode_copy(a, el);
	assert_non_null(c);
	assert_null(c->parent);
	assert_ptr_equal(c->arena, a);
	int rc = xnode_serialize(c, XMLNS_CLIENT, &r->out);
	xarena_free(a);
	return rc;
}

static const struct xstream_ops rt_ops = { NULL, rt_stanza, NULL };

static void parse_one(const char *stanza, struct sbuf *out)
{
	struct xstream_limits l = { 1 << 16, 32, 0 };
	struct rt r = { SBUF_INIT, 0 };
	struct xstream *xs = xstream_new(&l, &rt_ops, &r);
	assert_non_null(xs);
	static const char hdr[] = "<stream:stream xmlns='jabber:client' xmlns:stream='" XMLNS_STREAM "'>";
	size_t used;
	assert_int_equal(xstream_feed(xs, hdr, strlen(hdr), &used), XFEED_OK);
	assert_int_equal(xstream_feed(xs, stanza, strlen(stanza), &used), XFEED_OK);
	assert_int_equal(r.n, 1);
	xstream_free(xs);
	sbuf_reset(out);
	assert_int_equal(sbuf_append(out, r.out.data, r.out.len), 0);
	sbuf_free(&r.out);
}

static void test_round_trip(void **state)
{
	(void)state;
	static const char *const cases[][2] = {
		{ "<message xml:lang='de' to='x'><body>a &amp; b &lt; c&#13;&#10;d</body></message>",
		  "<message xml:lang='de' to='x'><body>a &amp; b &lt; c&#13;\nd</body></message>" },
		{ "<p:iq xmlns:p='jabber:client' xmlns:q='urn:q' q:attr='v&#9;w' type='get'><q:query/></p:iq>",
		  "<iq xmlns:ns0='urn:q' ns0:attr='v&#9;w' type='get'><query xmlns='urn:q'/></iq>" },
		{ "<a xmlns=''><b xmlns='jabber:client'><c xmlns=''/></b></a>",
		  "<a xmlns=''><b xmlns='jabber:client'><c xmlns=''/></b></a>" },
		{ "<a xmlns:x='urn:x' x:one='1' xmlns:y='urn:y' y:two='2' three='3'/>",
		  "<a xmlns:ns0='urn:x' ns0:one='1' xmlns:ns1='urn:y' ns1:two='2' three='3'/>" },
		{ "<a b='&#x10FFFF;&#xe9;'>\xf4\x8f\xbf\xbf<![CDATA[]]></a>",
		  "<a b='\xf4\x8f\xbf\xbf\xc3\xa9'>\xf4\x8f\xbf\xbf</a>" },
	};
	struct sbuf once = SBUF_INIT, twice = SBUF_INIT;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		parse_one(cases[i][0], &once);
		assert_string_equal(once.data, cases[i][1]);
		parse_one(once.data, &twice);
		assert_string_equal(twice.data, once.data);
	}
	sbuf_free(&once);
	sbuf_free(&twice);
}

/* A deep copy serializes exactly like the original, and lives on in its
 * own arena (the stream's is reset after each stanza). */
static void test_copy(void **state)
{
	(void)state;
	static const char *const cases[] = {
		"<message xml:lang='de' to='x' id='1'><body>a &amp; b</body><x xmlns='urn:x' a='1'>t<y/>u</x></message>",
		"<p:iq xmlns:p='jabber:client' xmlns:q='urn:q' q:attr='v&#9;w' type='get'><q:query/></p:iq>",
		"<presence/>",
	};
	struct sbuf orig = SBUF_INIT, copy = SBUF_INIT;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		copy_first = 0;
		parse_one(cases[i], &orig);
		copy_first = 1;
		parse_one(cases[i], &copy);
		assert_string_equal(copy.data, orig.data);
	}
	copy_first = 0;
	sbuf_free(&orig);
	sbuf_free(&copy);
}

/* A deep hand-built tree: the serializer does not recurse. */
static void test_deep_serialize(void **state)
{
	(void)state;
	struct xarena *a = xarena_new();
	struct xnode *top = xnode_new(a, "urn:d", "d"), *cur = top;
	for (int i = 0; i < 100000; i++) {
		struct xnode *n = xnode_new(a, "urn:d", "d");
		assert_non_null(n);
		xnode_append(cur, n);
		cur = n;
	}
	struct sbuf out = SBUF_INIT;
	assert_int_equal(xnode_serialize(top, "urn:d", &out), 0);
	assert_int_equal(out.len, 100000 * strlen("<d></d>") + strlen("<d/>"));
	assert_memory_equal(out.data + 3 * 100000 - 3, "<d><d/></d>", 11);
	assert_memory_equal(out.data + out.len - 8, "</d></d>", 8);
	sbuf_free(&out);
	xarena_free(a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_arena),
		cmocka_unit_test(test_tree),
		cmocka_unit_test(test_escaping),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_copy),
		cmocka_unit_test(test_deep_serialize),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
