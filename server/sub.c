/* server/sub.c - RFC 6121 presence subscription states (Appendix A).
 *
 * A state is four facts: the user receives the contact's presence (To), the
 * contact receives the user's (From), the user's request waits (Pending
 * Out), the contact's request waits (Pending In); To excludes Pending Out
 * and From excludes Pending In, which leaves the nine states of A.1. Each
 * subscription stanza sets or clears some of these facts, and goes on only
 * if it changed something (a subscribe always goes out: the contact may
 * have lost it). Appendix A's tables are written out row by row in
 * tests/unit/test_sub.c and checked against this.
 */
#include "tether/sub.h"

#include <string.h>

enum {
	F_TO = 1,
	F_FROM = 2,
	F_PO = 4,
	F_PI = 8,
};

static const unsigned bits_of[SUB_STATE_COUNT] = {
	[SUB_NONE] = 0,
	[SUB_NONE_PO] = F_PO,
	[SUB_NONE_PI] = F_PI,
	[SUB_NONE_POPI] = F_PO | F_PI,
	[SUB_TO] = F_TO,
	[SUB_TO_PI] = F_TO | F_PI,
	[SUB_FROM] = F_FROM,
	[SUB_FROM_PO] = F_FROM | F_PO,
	[SUB_BOTH] = F_TO | F_FROM,
};

static enum sub_state state_of(unsigned bits)
{
	for (unsigned s = 0; s < SUB_STATE_COUNT; s++)
		if (bits_of[s] == bits)
			return (enum sub_state)s;
	return SUB_NONE; /* unreachable: every transition keeps the invariants */
}

static struct sub_step step(unsigned bits, bool deliver)
{
	struct sub_step r = { state_of(bits), deliver, false };
	return r;
}

struct sub_step sub_outbound(enum sub_state s, enum sub_type t)
{
	unsigned b = bits_of[s];
	switch (t) {
	case SUB_SUBSCRIBE: /* ask, unless the contact already shares presence */
		return step(b & F_TO ? b : b | F_PO, true);
	case SUB_UNSUBSCRIBE: /* stop receiving, or withdraw the request */
		return step(b & ~(F_TO | F_PO), true);
	case SUB_SUBSCRIBED: /* approve a waiting request; nothing to approve: dropped */
		return b & F_PI ? step((b & ~F_PI) | F_FROM, true) : step(b, false);
	case SUB_UNSUBSCRIBED: /* cancel or deny what the contact has or asked */
		return b & (F_FROM | F_PI) ? step(b & ~(F_FROM | F_PI), true) : step(b, false);
	default:
		return step(b, false);
	}
}

struct sub_step sub_inbound(enum sub_state s, enum sub_type t)
{
	unsigned b = bits_of[s];
	struct sub_step r;
	switch (t) {
	case SUB_SUBSCRIBE:
		if (b & F_FROM) { /* already approved: answered for the user */
			r = step(b, false);
			r.auto_subscribed = true;
			return r;
		}
		return b & F_PI ? step(b, false) : step(b | F_PI, true);
	case SUB_UNSUBSCRIBE:
		return b & (F_FROM | F_PI) ? step(b & ~(F_FROM | F_PI), true) : step(b, false);
	case SUB_SUBSCRIBED: /* only an answer to the user's own request counts */
		return b & F_PO ? step((b & ~F_PO) | F_TO, true) : step(b, false);
	case SUB_UNSUBSCRIBED:
		return b & (F_TO | F_PO) ? step(b & ~(F_TO | F_PO), true) : step(b, false);
	default:
		return step(b, false);
	}
}

const char *sub_attr(enum sub_state s)
{
	unsigned b = bits_of[s];
	return (b & F_TO) ? (b & F_FROM ? "both" : "to") : (b & F_FROM ? "from" : "none");
}

bool sub_asks(enum sub_state s)
{
	return bits_of[s] & F_PO;
}

bool sub_has_to(enum sub_state s)
{
	return bits_of[s] & F_TO;
}

bool sub_has_from(enum sub_state s)
{
	return bits_of[s] & F_FROM;
}

bool sub_pending_in(enum sub_state s)
{
	return bits_of[s] & F_PI;
}

int sub_type_parse(const char *type)
{
	static const char *const names[SUB_TYPE_COUNT] = {
		[SUB_SUBSCRIBE] = "subscribe", [SUB_UNSUBSCRIBE] = "unsubscribe",
		[SUB_SUBSCRIBED] = "subscribed", [SUB_UNSUBSCRIBED] = "unsubscribed",
	};
	for (int i = 0; type && i < SUB_TYPE_COUNT; i++)
		if (!strcmp(type, names[i]))
			return i;
	return -1;
}
