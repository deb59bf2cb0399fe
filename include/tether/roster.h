/* include/tether/roster.h - RFC 6121 §2 roster XML: parsing a roster set, writing items, results and pushes (XEP-0237 versions). */
#ifndef TETHER_ROSTER_H
#define TETHER_ROSTER_H

#include <stddef.h>
#include <stdint.h>

#include "tether/errors.h"

struct im_item;
struct sbuf;
struct xnode;

#define XMLNS_ROSTERVER "urn:xmpp:features:rosterver"

/* Parses the <query/> of a roster set (RFC 6121 §2.3-2.5) into <out>
 * (strings owned by <out>: im_item_clear it): exactly one <item/> with a
 * 'jid' (prepared; bare unless a resource was given), an optional 'name'
 * and <group/>s. Sets *<remove> for subscription='remove'; any other
 * 'subscription' or 'ask' value is ignored, as §2.1.2 says. Returns
 * STE_NONE, or the condition to answer with: bad-request (not one item, no
 * or a malformed jid, a duplicate group), not-acceptable (a name or group
 * over IM_NAME_MAX / IM_GROUP_MAX bytes, an empty group, more than
 * IM_GROUPS_MAX groups), internal-server-error (out of memory). */
enum stanza_err roster_parse_set(struct xnode *query, struct im_item *out, int *remove);

/* Appends <item jid name subscription ask?><group/>...</item>; with
 * <removed>, <item jid subscription='remove'/>. Returns 0 or -ENOMEM. */
int roster_item_xml(struct sbuf *o, const struct im_item *it, int removed);

/* Appends the result of a roster get: the <n> items with version <ver>, or
 * with <up_to_date> an empty result (XEP-0237 §2.4). <id> may be NULL. */
int roster_result_xml(struct sbuf *o, const char *id, const char *from, const char *to,
		      uint64_t ver, const struct im_item *items, size_t n, int up_to_date);

/* Appends a roster push of <it> (RFC 6121 §2.1.6), with no 'to' (the
 * stream's own JID) and no 'from' (the account): id <id>, version <ver>. */
int roster_push_xml(struct sbuf *o, const char *id, uint64_t ver, const struct im_item *it,
		    int removed);

#endif /* TETHER_ROSTER_H */
