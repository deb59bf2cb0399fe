/* include/tether/sub.h - RFC 6121 presence subscription states (§3, Appendix A).
 *
 * Pure functions, no I/O: the roster code asks what a subscription stanza
 * does to a contact's state, and whether the stanza goes on. */
#ifndef TETHER_SUB_H
#define TETHER_SUB_H

#include <stdbool.h>

/* The nine states of RFC 6121 Appendix A.1, from the user's side: "To" =
 * the user receives the contact's presence, "From" = the contact receives
 * the user's; "Pending Out" = the user asked and waits, "Pending In" = the
 * contact asked and waits. */
enum sub_state {
	SUB_NONE = 0,      /* "None" */
	SUB_NONE_PO,       /* "None + Pending Out" */
	SUB_NONE_PI,       /* "None + Pending In" */
	SUB_NONE_POPI,     /* "None + Pending Out+In" */
	SUB_TO,            /* "To" */
	SUB_TO_PI,         /* "To + Pending In" */
	SUB_FROM,          /* "From" */
	SUB_FROM_PO,       /* "From + Pending Out" */
	SUB_BOTH,          /* "Both" */
	SUB_STATE_COUNT,
};

enum sub_type {
	SUB_SUBSCRIBE = 0,
	SUB_UNSUBSCRIBE,
	SUB_SUBSCRIBED,
	SUB_UNSUBSCRIBED,
	SUB_TYPE_COUNT,
};

struct sub_step {
	enum sub_state next;  /* the state afterwards (the same: "no state change") */
	bool deliver;         /* outbound: route it to the contact; inbound: deliver it to the user */
	bool auto_subscribed; /* inbound subscribe the user already approved: the
	                       * server answers <subscribed/> on the user's behalf */
};

/* The user sent <t> to the contact (Appendix A.2). */
struct sub_step sub_outbound(enum sub_state s, enum sub_type t);

/* The contact sent <t> to the user (Appendix A.3). */
struct sub_step sub_inbound(enum sub_state s, enum sub_type t);

/* The roster item's 'subscription' attribute ("none", "to", "from", "both")
 * and whether it carries ask='subscribe' (Pending Out). */
const char *sub_attr(enum sub_state s);
bool sub_asks(enum sub_state s);

/* "subscribe" & co. to the type; -1 for anything else. */
int sub_type_parse(const char *type);

/* Whether the user receives the contact's presence (To or Both), and
 * whether the contact receives the user's (From or Both). */
bool sub_has_to(enum sub_state s);
bool sub_has_from(enum sub_state s);
/* Whether the contact's request waits for the user's answer (Pending In). */
bool sub_pending_in(enum sub_state s);

#endif /* TETHER_SUB_H */
