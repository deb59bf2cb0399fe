/* tests/unit/test_sub.c - RFC 6121 Appendix A, every row of every table.
 *
 * The tables are copied out of the RFC as data (state, route/deliver, new
 * state); sub.c computes them from four facts instead, so a mistake on
 * either side shows up here. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "tether/sub.h"

#define N  SUB_NONE
#define NO SUB_NONE_PO
#define NI SUB_NONE_PI
#define NB SUB_NONE_POPI
#define T  SUB_TO
#define TI SUB_TO_PI
#define F  SUB_FROM
#define FO SUB_FROM_PO
#define B  SUB_BOTH

struct row {
	enum sub_state from;
	int go;               /* route (outbound) or deliver (inbound) */
	enum sub_state to;    /* == from: "no state change" */
};

/* A.2.1-A.2.4: the user's server, stanzas the user sends. */
static const struct row out_subscribe[] = {
	{ N, 1, NO }, { NO, 1, NO }, { NI, 1, NB }, { NB, 1, NB }, { T, 1, T },
	{ TI, 1, TI }, { F, 1, FO }, { FO, 1, FO }, { B, 1, B },
};
static const struct row out_unsubscribe[] = {
	{ N, 1, N }, { NO, 1, N }, { NI, 1, NI }, { NB, 1, NI }, { T, 1, N },
	{ TI, 1, NI }, { F, 1, F }, { FO, 1, F }, { B, 1, F },
};
static const struct row out_subscribed[] = {
	{ N, 0, N }, { NO, 0, NO }, { NI, 1, F }, { NB, 1, FO }, { T, 0, T },
	{ TI, 1, B }, { F, 0, F }, { FO, 0, FO }, { B, 0, B },
};
static const struct row out_unsubscribed[] = {
	{ N, 0, N }, { NO, 0, NO }, { NI, 1, N }, { NB, 1, NO }, { T, 0, T },
	{ TI, 1, T }, { F, 1, N }, { FO, 1, NO }, { B, 1, T },
};

/* A.3.1-A.3.4: the contact's server, stanzas the contact receives. */
static const struct row in_subscribe[] = {
	{ N, 1, NI }, { NO, 1, NB }, { NI, 0, NI }, { NB, 0, NB }, { T, 1, TI },
	{ TI, 0, TI }, { F, 0, F }, { FO, 0, FO }, { B, 0, B },
};
static const struct row in_unsubscribe[] = {
	{ N, 0, N }, { NO, 0, NO }, { NI, 1, N }, { NB, 1, NO }, { T, 0, T },
	{ TI, 1, T }, { F, 1, N }, { FO, 1, NO }, { B, 1, T },
};
static const struct row in_subscribed[] = {
	{ N, 0, N }, { NO, 1, T }, { NI, 0, NI }, { NB, 1, TI }, { T, 0, T },
	{ TI, 0, TI }, { F, 0, F }, { FO, 1, B }, { B, 0, B },
};
static const struct row in_unsubscribed[] = {
	{ N, 0, N }, { NO, 1, N }, { NI, 0, NI }, { NB, 1, NI }, { T, 1, N },
	{ TI, 1, NI }, { F, 0, F }, { FO, 1, F }, { B, 1, F },
};

static void check(const struct row *rows, enum sub_type t, int inbound)
{
	for (unsigned i = 0; i < SUB_STATE_COUNT; i++) {
		const struct row *r = &rows[i];
		assert_int_equal(r->from, i); /* every state, in A.1's order */
		struct sub_step st = inbound ? sub_inbound(r->from, t) : sub_outbound(r->from, t);
		if (st.next != r->to || st.deliver != r->go) {
			print_error("%s type %d, state %u: got next %d deliver %d, want %d %d\n",
				    inbound ? "inbound" : "outbound", t, i, st.next, st.deliver,
				    r->to, r->go);
			fail();
		}
		/* Only an inbound subscribe from an approved contact is answered
		 * on the user's behalf (RFC 6121 §3.1.3). */
		assert_int_equal(st.auto_subscribed,
				 inbound && t == SUB_SUBSCRIBE && sub_has_from(r->from));
	}
}

static void test_outbound(void **state)
{
	(void)state;
	check(out_subscribe, SUB_SUBSCRIBE, 0);
	check(out_unsubscribe, SUB_UNSUBSCRIBE, 0);
	check(out_subscribed, SUB_SUBSCRIBED, 0);
	check(out_unsubscribed, SUB_UNSUBSCRIBED, 0);
}

static void test_inbound(void **state)
{
	(void)state;
	check(in_subscribe, SUB_SUBSCRIBE, 1);
	check(in_unsubscribe, SUB_UNSUBSCRIBE, 1);
	check(in_subscribed, SUB_SUBSCRIBED, 1);
	check(in_unsubscribed, SUB_UNSUBSCRIBED, 1);
}

/* Both ends of one subscription walk in step: what the user's server does
 * with an outbound stanza, the contact's server mirrors inbound. */
static enum sub_state mirror(enum sub_state s)
{
	static const enum sub_state m[SUB_STATE_COUNT] = {
		[N] = N, [NO] = NI, [NI] = NO, [NB] = NB, [T] = F, [TI] = FO,
		[F] = T, [FO] = TI, [B] = B,
	};
	return m[s];
}

static void test_two_ends_agree(void **state)
{
	(void)state;
	for (unsigned s = 0; s < SUB_STATE_COUNT; s++) {
		for (unsigned t = 0; t < SUB_TYPE_COUNT; t++) {
			struct sub_step out = sub_outbound(s, t);
			if (!out.deliver)
				continue;
			struct sub_step in = sub_inbound(mirror(s), t);
			if (in.auto_subscribed)
				continue; /* the contact had approved already: its state stands */
			assert_int_equal(in.next, mirror(out.next));
		}
	}
}

static void test_attributes(void **state)
{
	(void)state;
	static const char *const attr[SUB_STATE_COUNT] = {
		[N] = "none", [NO] = "none", [NI] = "none", [NB] = "none", [T] = "to",
		[TI] = "to", [F] = "from", [FO] = "from", [B] = "both",
	};
	for (unsigned s = 0; s < SUB_STATE_COUNT; s++) {
		assert_string_equal(sub_attr(s), attr[s]);
		assert_int_equal(sub_asks(s), s == NO || s == NB || s == FO);
		assert_int_equal(sub_pending_in(s), s == NI || s == NB || s == TI);
	}
	assert_int_equal(sub_type_parse("subscribe"), SUB_SUBSCRIBE);
	assert_int_equal(sub_type_parse("unsubscribed"), SUB_UNSUBSCRIBED);
	assert_int_equal(sub_type_parse("probe"), -1);
	assert_int_equal(sub_type_parse(NULL), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_outbound),
		cmocka_unit_test(test_inbound),
		cmocka_unit_test(test_two_ends_agree),
		cmocka_unit_test(test_attributes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
