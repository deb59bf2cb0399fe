/* tests/unit/test_roster.c - roster XML (RFC 6121 §2.3 errors, items, results, pushes) and the carbons (XEP-0280) rules and copies, on parsed XML. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tether/carbons.h"
#include "tether/errors.h"
#include "tether/im.h"
#include "tether/roster.h"
#include "tether/sbuf.h"
#include "tether/store_im.h"
#include "tether/xnode.h"
#include "tether/xstream.h"

#define HDR "<stream:stream to='example.com' version='1.0' xmlns='jabber:client' " \
	    "xmlns:stream='http://etherx.jabber.org/streams'>"

struct parsed {
	struct xarena *a;
	struct xnode *el;
	int count;
};

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
		p->el = xnode_copy(p->a, el);
	return 0;
}

static int p_close(void *ud)
{
	(void)ud;
	return 0;
}

static const struct xstream_ops p_ops = { p_open, p_stanza, p_close };

/* The first stanza of <xml> (a copy in <a>), NULL if not well-formed. */
static struct xnode *parse(struct xarena *a, const char *xml)
{
	struct xstream_limits l = { 1 << 20, 64, 0 };
	struct parsed p = { a, NULL, 0 };
	struct xstream *xs = xstream_new(&l, &p_ops, &p);
	size_t used;
	assert_non_null(xs);
	assert_int_equal(xstream_feed(xs, HDR, strlen(HDR), &used), XFEED_OK);
	enum xfeed_rc rc = xstream_feed(xs, xml, strlen(xml), &used);
	xstream_free(xs);
	return rc == XFEED_OK ? p.el : NULL;
}

/* Parses a roster set with <items> inside its query. */
static enum stanza_err set_of(const char *items, struct im_item *it, int *remove)
{
	char buf[8192];
	struct xarena *a = xarena_new();
	snprintf(buf, sizeof(buf), "<iq type='set' id='1'><query xmlns='jabber:iq:roster'>%s"
		 "</query></iq>", items);
	struct xnode *iq = parse(a, buf);
	assert_non_null(iq);
	enum stanza_err e = roster_parse_set(xnode_first_elem(iq), it, remove);
	xarena_free(a);
	return e;
}

static void test_parse_set(void **state)
{
	(void)state;
	struct im_item it;
	int rm;
	assert_int_equal(set_of("<item jid='Juliet@Example.COM' name='J'><group>A</group>"
				"<group>B</group></item>", &it, &rm), STE_NONE);
	assert_string_equal(it.jid, "juliet@example.com"); /* prepared */
	assert_string_equal(it.name, "J");
	assert_int_equal(it.ngroups, 2);
	assert_string_equal(it.groups[1], "B");
	assert_false(rm);
	im_item_clear(&it);

	assert_int_equal(set_of("<item jid='r@x' subscription='remove'/>", &it, &rm), STE_NONE);
	assert_true(rm);
	im_item_clear(&it);
	/* the server owns subscription and ask */
	assert_int_equal(set_of("<item jid='r@x' subscription='both' ask='subscribe'/>", &it, &rm),
			 STE_NONE);
	assert_false(rm);
	assert_int_equal(it.state, SUB_NONE);
	im_item_clear(&it);

	static const struct {
		const char *xml;
		enum stanza_err want;
	} bad[] = {
		{ "", STE_BAD_REQUEST },
		{ "<item jid='a@x'/><item jid='b@x'/>", STE_BAD_REQUEST },
		{ "<item name='no jid'/>", STE_BAD_REQUEST },
		{ "<item jid='a@b@c'/>", STE_BAD_REQUEST },
		{ "<item jid='a@x'><group>g</group><group>g</group></item>", STE_BAD_REQUEST },
		{ "<item jid='a@x'><group/></item>", STE_NOT_ACCEPTABLE },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&it, 0x5a, sizeof(it));
		assert_int_equal(set_of(bad[i].xml, &it, &rm), bad[i].want);
		assert_null(it.jid); /* nothing left to free */
	}
	char big[IM_NAME_MAX + 64];
	char name[IM_NAME_MAX + 2];
	memset(name, 'n', sizeof(name) - 1);
	name[sizeof(name) - 1] = 0;
	snprintf(big, sizeof(big), "<item jid='a@x' name='%s'/>", name);
	assert_int_equal(set_of(big, &it, &rm), STE_NOT_ACCEPTABLE);
}

static void test_item_and_push_xml(void **state)
{
	(void)state;
	char *groups[] = { "F&F" };
	struct im_item it = { .jid = "b@x", .name = "<Bob>", .groups = groups, .ngroups = 1,
			      .state = SUB_NONE_PO };
	struct sbuf o = SBUF_INIT;
	assert_int_equal(roster_push_xml(&o, "p1", 7, &it, 0), 0);
	struct xarena *a = xarena_new();
	struct xnode *iq = parse(a, o.data);
	assert_non_null(iq);
	struct xnode *q = xnode_first_elem(iq);
	assert_string_equal(xnode_attr(q, "ver"), "7");
	struct xnode *item = xnode_first_elem(q);
	assert_string_equal(xnode_attr(item, "name"), "<Bob>");
	assert_string_equal(xnode_attr(item, "subscription"), "none");
	assert_string_equal(xnode_attr(item, "ask"), "subscribe");
	assert_string_equal(xnode_text(xnode_first_elem(item)), "F&F");
	assert_null(xnode_attr(iq, "to"));
	sbuf_reset(&o);
	assert_int_equal(roster_push_xml(&o, "p2", 8, &it, 1), 0);
	assert_non_null(strstr(o.data, "<item jid='b@x' subscription='remove'/>"));
	sbuf_reset(&o);
	assert_int_equal(roster_result_xml(&o, "g", "a@x", "a@x/r", 8, &it, 1, 1), 0);
	assert_string_equal(o.data, "<iq type='result' id='g' from='a@x' to='a@x/r'/>");
	sbuf_free(&o);
	xarena_free(a);
}

static void test_carbons(void **state)
{
	(void)state;
#define E(xml, type) carbons_eligible(xml, strlen(xml), type)
	assert_true(E("<message type='chat'><composing xmlns='x'/></message>", "chat"));
	assert_true(E("<message><body>hi</body></message>", ""));
	assert_false(E("<message><subject>s</subject></message>", "normal"));
	assert_false(E("<message type='headline'><body>x</body></message>", "headline"));
	assert_false(E("<message type='groupchat'><body>x</body></message>", "groupchat"));
	assert_false(E("<message type='error'><body>x</body></message>", "error"));
	assert_false(E("<message><body>x</body><private xmlns='urn:xmpp:carbons:2'/></message>",
		       "chat"));
	assert_false(E("<message><body>x</body><no-copy xmlns='urn:xmpp:hints'/></message>",
		       "chat"));
	assert_false(E("<message><received xmlns='urn:xmpp:carbons:2'><forwarded/></received>"
		       "</message>", "chat"));
	/* text that looks like markup is escaped, so it never matches */
	assert_true(E("<message><body>&lt;private xmlns='urn:xmpp:carbons:2'/&gt;</body></message>",
		      "chat"));
	assert_false(E("<message><bodyx/></message>", ""));
#undef E
	const char *m = "<message from='b@x/r' to='a@x/1' type='chat'><body>hi</body></message>";
	struct sbuf o = SBUF_INIT;
	assert_int_equal(carbons_wrap(&o, 0, "a@x", "chat", m, strlen(m)), 0);
	struct xarena *a = xarena_new();
	struct xnode *outer = parse(a, o.data);
	assert_non_null(outer);
	assert_string_equal(xnode_attr(outer, "from"), "a@x");
	struct xnode *rcv = xnode_child(outer, XMLNS_CARBONS, "received");
	assert_non_null(rcv);
	struct xnode *fwd = xnode_child(rcv, XMLNS_FORWARD, "forwarded");
	assert_non_null(fwd);
	struct xnode *inner = xnode_child(fwd, XMLNS_CLIENT, "message");
	assert_non_null(inner);
	assert_string_equal(xnode_attr(inner, "from"), "b@x/r");
	assert_int_equal(carbons_wrap(&o, 1, "a@x", "", "<iq/>", 5), -EINVAL);
	sbuf_free(&o);
	xarena_free(a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_set),
		cmocka_unit_test(test_item_and_push_xml),
		cmocka_unit_test(test_carbons),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
