/* tests/unit/test_sm.c - XEP-0198 helpers: counters mod 2^32, attribute parsing,
 * SM-IDs, <max>, XEP-0203 delay insertion (checked by re-parsing), stamps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <errno.h>
#include <sodium.h>
#include <time.h>

#include "tether/sbuf.h"
#include "tether/sm.h"
#include "tether/xnode.h"
#include "tether/xstream.h"

/* --------------------------------------------------------------- counters */

static void test_check_h(void **state)
{
	(void)state;
	struct sm_counters c = { .h_in = 0, .out = 10, .acked = 0 };
	assert_int_equal(sm_check_h(&c, 0), 0);
	assert_int_equal(sm_check_h(&c, 1), 0);
	assert_int_equal(sm_check_h(&c, 10), 0);
	assert_int_equal(sm_check_h(&c, 11), -ERANGE);
	assert_int_equal(sm_check_h(&c, 0xFFFFFFFFu), -ERANGE);

	/* After an ack: acking the same again is fine, older is not. */
	c.acked = 4;
	assert_int_equal(sm_check_h(&c, 4), 0);
	assert_int_equal(sm_check_h(&c, 7), 0);
	assert_int_equal(sm_check_h(&c, 10), 0);
	assert_int_equal(sm_check_h(&c, 11), -ERANGE);
	assert_int_equal(sm_check_h(&c, 3), -ERANGE);

	/* Nothing sent yet. */
	struct sm_counters z = { 0, 0, 0 };
	assert_int_equal(sm_check_h(&z, 0), 0);
	assert_int_equal(sm_check_h(&z, 1), -ERANGE);

	/* Around 2^32: sent 0x20 since the last ack, out has wrapped. */
	struct sm_counters w = { .h_in = 0, .out = 0x00000010u, .acked = 0xFFFFFFF0u };
	assert_int_equal(sm_check_h(&w, 0xFFFFFFF0u), 0);
	assert_int_equal(sm_check_h(&w, 0xFFFFFFFFu), 0);
	assert_int_equal(sm_check_h(&w, 0x0u), 0);
	assert_int_equal(sm_check_h(&w, 0x5u), 0);
	assert_int_equal(sm_check_h(&w, 0x10u), 0);
	assert_int_equal(sm_check_h(&w, 0x11u), -ERANGE);
	assert_int_equal(sm_check_h(&w, 0xFFFFFFEFu), -ERANGE);
	assert_int_equal(sm_check_h(&w, 0x80000000u), -ERANGE);

	/* Both at the top, nothing outstanding. */
	struct sm_counters top = { 0, 0xFFFFFFFFu, 0xFFFFFFFFu };
	assert_int_equal(sm_check_h(&top, 0xFFFFFFFFu), 0);
	assert_int_equal(sm_check_h(&top, 0), -ERANGE);
}

static void test_unacked(void **state)
{
	(void)state;
	struct sm_counters c = { 0, 10, 4 };
	assert_int_equal(sm_unacked(&c), 6);
	c.acked = 10;
	assert_int_equal(sm_unacked(&c), 0);
	struct sm_counters w = { 0, 0x00000010u, 0xFFFFFFF0u };
	assert_int_equal(sm_unacked(&w), 0x20);
	struct sm_counters w2 = { 0, 0, 0xFFFFFFFFu };
	assert_int_equal(sm_unacked(&w2), 1);
	struct sm_counters w3 = { 0, 0xFFFFFFFFu, 0 };
	assert_int_equal(sm_unacked(&w3), 0xFFFFFFFFu);
}

/* ---------------------------------------------------------------- parsing */

static void test_parse_bool(void **state)
{
	(void)state;
	assert_int_equal(sm_parse_bool("true"), 1);
	assert_int_equal(sm_parse_bool("1"), 1);
	assert_int_equal(sm_parse_bool("false"), 0);
	assert_int_equal(sm_parse_bool("0"), 0);
	assert_int_equal(sm_parse_bool(NULL), -1);
	assert_int_equal(sm_parse_bool(""), -1);
	assert_int_equal(sm_parse_bool("yes"), -1);
	assert_int_equal(sm_parse_bool("TRUE"), -1); /* xs:boolean is case-sensitive */
	assert_int_equal(sm_parse_bool("truex"), -1);
	assert_int_equal(sm_parse_bool("10"), -1);
	assert_int_equal(sm_parse_bool(" true"), -1);
}

static void test_parse_u32(void **state)
{
	(void)state;
	uint32_t v = 77;
	assert_int_equal(sm_parse_u32("0", &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(sm_parse_u32("42", &v), 0);
	assert_int_equal(v, 42);
	assert_int_equal(sm_parse_u32("4294967295", &v), 0);
	assert_int_equal(v, 4294967295u);

	v = 77;
	assert_int_equal(sm_parse_u32("4294967296", &v), -1);
	assert_int_equal(sm_parse_u32("18446744073709551616", &v), -1);
	assert_int_equal(sm_parse_u32("-1", &v), -1);
	assert_int_equal(sm_parse_u32("", &v), -1);
	assert_int_equal(sm_parse_u32("12a", &v), -1);
	assert_int_equal(sm_parse_u32("a12", &v), -1);
	assert_int_equal(sm_parse_u32(" 1", &v), -1);
	assert_int_equal(sm_parse_u32("+1", &v), -1);
	assert_int_equal(sm_parse_u32("1 ", &v), -1);
	assert_int_equal(sm_parse_u32(NULL, &v), -1);
	assert_int_equal(v, 77); /* untouched on failure */
}

static void test_grant_max(void **state)
{
	(void)state;
	assert_int_equal(sm_grant_max(NULL, 300), 300);
	assert_int_equal(sm_grant_max("0", 300), 300);
	assert_int_equal(sm_grant_max("60", 300), 60);
	assert_int_equal(sm_grant_max("300", 300), 300);
	assert_int_equal(sm_grant_max("301", 300), 300);
	assert_int_equal(sm_grant_max("4294967295", 300), 300);
	assert_int_equal(sm_grant_max("99999999999", 300), 300);
	assert_int_equal(sm_grant_max("-5", 300), 300);
	assert_int_equal(sm_grant_max("abc", 300), 300);
	assert_int_equal(sm_grant_max("", 300), 300);
	assert_int_equal(sm_grant_max("1", 300), 1);
}

/* ------------------------------------------------------------------- ids */

static int b64url(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_';
}

static void test_new_id(void **state)
{
	(void)state;
	enum { N = 500 };
	static char seen[N][SM_ID_LEN + 1];
	assert_int_equal(SM_ID_LEN, 22);
	for (int i = 0; i < N; i++) {
		char id[SM_ID_LEN + 2];
		memset(id, 'Q', sizeof(id));
		sm_new_id(id);
		assert_int_equal(strlen(id), 22);
		assert_int_equal(id[SM_ID_LEN + 1], 'Q');
		for (int j = 0; j < SM_ID_LEN; j++)
			assert_true(b64url(id[j]));
		for (int j = 0; j < i; j++)
			assert_string_not_equal(id, seen[j]);
		memcpy(seen[i], id, sizeof(seen[i]));
	}
}

/* ---------------------------------------------------------------- stamps */

static void test_format_stamp(void **state)
{
	(void)state;
	char s[32];
	sm_format_stamp(0, s);
	assert_string_equal(s, "1970-01-01T00:00:00.000Z");
	sm_format_stamp(999, s);
	assert_string_equal(s, "1970-01-01T00:00:00.999Z");
	sm_format_stamp(1000, s);
	assert_string_equal(s, "1970-01-01T00:00:01.000Z");
	sm_format_stamp(951782400000ull + 7, s);  /* leap day */
	assert_string_equal(s, "2000-02-29T00:00:00.007Z");
	sm_format_stamp(1795617372123ull, s);
	assert_string_equal(s, "2026-11-25T14:36:12.123Z");
	sm_format_stamp(4102444799999ull, s);
	assert_string_equal(s, "2099-12-31T23:59:59.999Z");

	uint64_t now = sm_wall_ms();
	uint64_t t = (uint64_t)time(NULL) * 1000u;
	assert_true(now + 2000 > t && now < t + 2000);
}

/* ----------------------------------------------------------------- delay */

#define HDR "<stream:stream to='example.com' version='1.0' xmlns='jabber:client' " \
	    "xmlns:stream='http://etherx.jabber.org/streams'>"

struct parsed {
	struct xarena *a;
	struct xnode *el;  /* deep copy of the first stanza */
	int count;
};

static struct xnode *copy_tree(struct xarena *a, const struct xnode *n)
{
	if (!n->name)
		return xnode_new_text(a, n->text, n->text_len);
	struct xnode *c = xnode_new(a, n->ns, n->name);
	assert_non_null(c);
	for (const struct xattr *at = n->attrs; at; at = at->next)
		if (!at->ns)
			assert_int_equal(xnode_set_attr(c, at->name, at->value), 0);
	for (const struct xnode *ch = n->children; ch; ch = ch->next)
		xnode_append(c, copy_tree(a, ch));
	return c;
}

static int p_open(void *ud, struct xnode *hdr)
{
	(void)ud;
	(void)hdr;
	return 0;
}

static int p_stanza(void *ud, struct xnode *el)
{
	struct parsed *p = ud;
	if (!p->count++)
		p->el = copy_tree(p->a, el);
	return 0;
}

static int p_close(void *ud)
{
	(void)ud;
	return 0;
}

static const struct xstream_ops p_ops = { p_open, p_stanza, p_close };

/* Parses <xml> inside a client stream; returns the first stanza (in <a>),
 * or NULL when the XML is not well-formed. *<count> = number of stanzas. */
static struct xnode *parse_xml(struct xarena *a, const char *xml, size_t len, int *count)
{
	struct xstream_limits l = { 1 << 20, 64, 0 };
	struct parsed p = { a, NULL, 0 };
	struct xstream *xs = xstream_new(&l, &p_ops, &p);
	assert_non_null(xs);
	size_t used;
	enum xfeed_rc rc = xstream_feed(xs, HDR, strlen(HDR), &used);
	assert_int_equal(rc, XFEED_OK);
	rc = xstream_feed(xs, xml, len, &used);
	if (rc == XFEED_OK)
		rc = xstream_feed(xs, "</stream:stream>", 16, &used);
	xstream_free(xs);
	if (count)
		*count = p.count;
	return rc == XFEED_OK ? p.el : NULL;
}

static struct xnode *last_elem(const struct xnode *n)
{
	struct xnode *last = NULL;
	for (struct xnode *c = xnode_first_elem(n); c; c = xnode_next_elem(c))
		last = c;
	return last;
}

static void check_delay(struct xnode *d, const char *from, const char *stamp)
{
	assert_non_null(d);
	assert_string_equal(d->name, "delay");
	assert_string_equal(d->ns, XMLNS_DELAY);
	assert_string_equal(xnode_attr(d, "from"), from);
	assert_string_equal(xnode_attr(d, "stamp"), stamp);
	assert_null(d->children);
}

static void test_add_delay_message(void **state)
{
	(void)state;
	const char *in = "<message from='a'><body>x</body></message>";
	struct sbuf out = SBUF_INIT;
	assert_int_equal(sm_add_delay(in, strlen(in), "example.com", 0, &out), 0);
	assert_string_equal(out.data,
			    "<message from='a'><body>x</body>"
			    "<delay xmlns='urn:xmpp:delay' from='example.com' "
			    "stamp='1970-01-01T00:00:00.000Z'/></message>");

	struct xarena *a = xarena_new();
	int count;
	struct xnode *m = parse_xml(a, out.data, out.len, &count);
	assert_non_null(m);
	assert_int_equal(count, 1);
	assert_string_equal(m->name, "message");
	assert_string_equal(m->ns, XMLNS_CLIENT);
	assert_string_equal(xnode_attr(m, "from"), "a");
	struct xnode *body = xnode_first_elem(m);
	assert_string_equal(body->name, "body");
	assert_string_equal(xnode_text(body), "x");
	check_delay(xnode_next_elem(body), "example.com", "1970-01-01T00:00:00.000Z");
	assert_ptr_equal(last_elem(m), xnode_next_elem(body));
	xarena_free(a);
	sbuf_free(&out);
}

static void test_add_delay_presence(void **state)
{
	(void)state;
	const char *in = "<presence from='a'/>";
	struct sbuf out = SBUF_INIT;
	/* Appends: what was in the buffer stays. */
	assert_int_equal(sbuf_puts(&out, "<r xmlns='urn:xmpp:sm:3'/>"), 0);
	assert_int_equal(sm_add_delay(in, strlen(in), "d'&<", 951782400123ull, &out), 0);
	assert_string_equal(out.data,
			    "<r xmlns='urn:xmpp:sm:3'/>"
			    "<presence from='a'><delay xmlns='urn:xmpp:delay' from='d&apos;&amp;&lt;' "
			    "stamp='2000-02-29T00:00:00.123Z'/></presence>");

	struct xarena *a = xarena_new();
	int count;
	/* Skip the <r/>; parse the presence. */
	const char *p = out.data + strlen("<r xmlns='urn:xmpp:sm:3'/>");
	struct xnode *pr = parse_xml(a, p, strlen(p), &count);
	assert_non_null(pr);
	assert_int_equal(count, 1);
	assert_string_equal(pr->name, "presence");
	assert_string_equal(xnode_attr(pr, "from"), "a");
	struct xnode *d = xnode_first_elem(pr);
	check_delay(d, "d'&<", "2000-02-29T00:00:00.123Z");
	assert_null(xnode_next_elem(d));
	xarena_free(a);
	sbuf_free(&out);
}

/* Every shape tether writes: bare self-closing, spaces before '/>', nested
 * self-closing children, entities; the result always re-parses with the
 * delay as last child and the original children before it. */
static void test_add_delay_shapes(void **state)
{
	(void)state;
	static const char *const cases[] = {
		"<presence/>",
		"<iq type='result' id='1'/>",
		"<presence from='a' />",
		"<message><x xmlns='urn:a'/></message>",
		"<message to='b' id='&apos;&lt;'><body>&lt;/message&gt;</body><thread>t</thread></message>",
		"<m>text</m>",
		"<message from='a/b'><body>a/></body></message>",
	};
	static const int nchildren[] = { 0, 0, 0, 1, 2, 0, 1 };
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct sbuf out = SBUF_INIT;
		assert_int_equal(sm_add_delay(cases[i], strlen(cases[i]), "example.com",
					      1000, &out), 0);
		struct xarena *a = xarena_new();
		int count;
		struct xnode *el = parse_xml(a, out.data, out.len, &count);
		if (!el)
			fail_msg("not well-formed: %s", out.data);
		assert_int_equal(count, 1);
		int n = 0;
		struct xnode *last = NULL;
		for (struct xnode *c = xnode_first_elem(el); c; c = xnode_next_elem(c)) {
			n++;
			last = c;
		}
		assert_int_equal(n, nchildren[i] + 1);
		check_delay(last, "example.com", "1970-01-01T00:00:01.000Z");
		xarena_free(a);
		sbuf_free(&out);
	}
	/* Only <len> bytes are looked at: a longer buffer is fine. */
	const char *two = "<presence/><presence/>";
	struct sbuf out = SBUF_INIT;
	assert_int_equal(sm_add_delay(two, 11, "x", 0, &out), 0);
	assert_string_equal(out.data, "<presence><delay xmlns='urn:xmpp:delay' from='x' "
				      "stamp='1970-01-01T00:00:00.000Z'/></presence>");
	sbuf_free(&out);
}

static void test_add_delay_garbage(void **state)
{
	(void)state;
	static const char *const bad[] = {
		"",
		"x",
		"<>",
		"<a>",
		"hello world",
		"<message>",
		"<message from='a'>",
		"<message>x</presence>",
		"<message from='a'><body>x</body></messagf>",
		"<message from='a'><body>x</body>",
		"< />",
		"</message>",
		"message/>",
		"<message/",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct sbuf out = SBUF_INIT;
		int rc = sm_add_delay(bad[i], strlen(bad[i]), "example.com", 0, &out);
		if (rc != -EINVAL)
			fail_msg("'%s': rc %d, out '%s'", bad[i], rc, out.data ? out.data : "");
		sbuf_free(&out);
	}
}

int main(void)
{
	if (sodium_init() < 0)
		return 1;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_check_h),
		cmocka_unit_test(test_unacked),
		cmocka_unit_test(test_parse_bool),
		cmocka_unit_test(test_parse_u32),
		cmocka_unit_test(test_grant_max),
		cmocka_unit_test(test_new_id),
		cmocka_unit_test(test_format_stamp),
		cmocka_unit_test(test_add_delay_message),
		cmocka_unit_test(test_add_delay_presence),
		cmocka_unit_test(test_add_delay_shapes),
		cmocka_unit_test(test_add_delay_garbage),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
