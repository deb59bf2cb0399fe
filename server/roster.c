/* server/roster.c - RFC 6121 §2 roster XML: parsing a roster set, writing items, results and pushes.
 *
 * Choices where RFC 6121 leaves one:
 * - A roster item's 'jid' is kept as prepared; a bare JID is the norm,
 *   a full one is accepted (§2.1.1 allows it) but subscriptions always
 *   use the bare JID.
 * - 'subscription' values other than "remove" and 'ask' in a set are
 *   ignored (§2.1.2.5, §2.1.2.2): the server owns those.
 * - Versions (XEP-0237) are a per-account counter, bumped by every change
 *   the user sees; "up to date" is string equality with it.
 * - Pushes carry no 'to': a stanza from the server without 'to' is for
 *   the stream's own JID (RFC 6120 §8.1.1.1), so one serialized push
 *   serves every resource.
 */
#include "tether/roster.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "tether/im.h"
#include "tether/jid.h"
#include "tether/sbuf.h"
#include "tether/store_im.h"
#include "tether/sub.h"
#include "tether/xnode.h"
#include "tether/xstream.h"

static enum stanza_err parse_groups(struct xnode *item, struct im_item *out)
{
	size_t n = 0;
	for (struct xnode *g = xnode_first_elem(item); g; g = xnode_next_elem(g))
		if (!strcmp(g->ns, XMLNS_ROSTER) && !strcmp(g->name, "group"))
			n++;
	if (!n)
		return STE_NONE;
	if (n > IM_GROUPS_MAX)
		return STE_NOT_ACCEPTABLE;
	if (!(out->groups = calloc(n, sizeof(char *))))
		return STE_INTERNAL_SERVER_ERROR;
	for (struct xnode *g = xnode_first_elem(item); g; g = xnode_next_elem(g)) {
		if (strcmp(g->ns, XMLNS_ROSTER) || strcmp(g->name, "group"))
			continue;
		const char *t = xnode_text(g);
		if (!t)
			return STE_INTERNAL_SERVER_ERROR;
		if (!*t || strlen(t) > IM_GROUP_MAX)
			return STE_NOT_ACCEPTABLE; /* §2.3.3: empty or too long */
		for (size_t i = 0; i < out->ngroups; i++)
			if (!strcmp(out->groups[i], t))
				return STE_BAD_REQUEST; /* §2.3.3: the same group twice */
		if (!(out->groups[out->ngroups] = strdup(t)))
			return STE_INTERNAL_SERVER_ERROR;
		out->ngroups++;
	}
	return STE_NONE;
}

enum stanza_err roster_parse_set(struct xnode *query, struct im_item *out, int *remove)
{
	memset(out, 0, sizeof(*out));
	*remove = 0;
	struct xnode *item = xnode_first_elem(query);
	if (!item || xnode_next_elem(item) || strcmp(item->ns, XMLNS_ROSTER) ||
	    strcmp(item->name, "item"))
		return STE_BAD_REQUEST; /* §2.3.3: exactly one item */
	const char *jid = xnode_attr(item, "jid");
	const char *name = xnode_attr(item, "name");
	const char *sub = xnode_attr(item, "subscription");
	struct jid *j = malloc(sizeof(*j));
	char buf[3 * JID_PART_MAX + 3];
	enum stanza_err e = STE_NONE;
	if (!j)
		return STE_INTERNAL_SERVER_ERROR;
	if (!jid || jid_parse(jid, j) ||
	    (j->resource[0] ? jid_full(j, buf, sizeof(buf)) : jid_bare(j, buf, sizeof(buf))) < 0) {
		e = STE_BAD_REQUEST;
		goto out;
	}
	if (name && strlen(name) > IM_NAME_MAX) {
		e = STE_NOT_ACCEPTABLE;
		goto out;
	}
	*remove = sub && !strcmp(sub, "remove");
	if (!(out->jid = strdup(buf)) || (name && *name && !(out->name = strdup(name)))) {
		e = STE_INTERNAL_SERVER_ERROR;
		goto out;
	}
	if (!*remove)
		e = parse_groups(item, out);
out:
	free(j);
	if (e)
		im_item_clear(out);
	return e;
}

static int attr(struct sbuf *o, const char *name, const char *v)
{
	int rc = sbuf_printf(o, " %s='", name);
	rc |= sbuf_puts_esc(o, v);
	rc |= sbuf_puts(o, "'");
	return rc;
}

int roster_item_xml(struct sbuf *o, const struct im_item *it, int removed)
{
	int rc = sbuf_puts(o, "<item");
	rc |= attr(o, "jid", it->jid);
	if (removed)
		return rc | sbuf_puts(o, " subscription='remove'/>") ? -ENOMEM : 0;
	if (it->name)
		rc |= attr(o, "name", it->name);
	rc |= attr(o, "subscription", sub_attr(it->state));
	if (sub_asks(it->state))
		rc |= sbuf_puts(o, " ask='subscribe'");
	if (!it->ngroups)
		return rc | sbuf_puts(o, "/>") ? -ENOMEM : 0;
	rc |= sbuf_puts(o, ">");
	for (size_t i = 0; i < it->ngroups; i++) {
		rc |= sbuf_puts(o, "<group>");
		rc |= sbuf_puts_esc(o, it->groups[i]);
		rc |= sbuf_puts(o, "</group>");
	}
	rc |= sbuf_puts(o, "</item>");
	return rc ? -ENOMEM : 0;
}

int roster_result_xml(struct sbuf *o, const char *id, const char *from, const char *to,
		      uint64_t ver, const struct im_item *items, size_t n, int up_to_date)
{
	int rc = sbuf_puts(o, "<iq type='result'");
	if (id)
		rc |= attr(o, "id", id);
	rc |= attr(o, "from", from);
	rc |= attr(o, "to", to);
	if (up_to_date)
		return rc | sbuf_puts(o, "/>") ? -ENOMEM : 0;
	rc |= sbuf_printf(o, "><query xmlns='" XMLNS_ROSTER "' ver='%" PRIu64 "'>", ver);
	for (size_t i = 0; i < n && !rc; i++)
		rc |= roster_item_xml(o, &items[i], 0);
	rc |= sbuf_puts(o, "</query></iq>");
	return rc ? -ENOMEM : 0;
}

int roster_push_xml(struct sbuf *o, const char *id, uint64_t ver, const struct im_item *it,
		    int removed)
{
	int rc = sbuf_puts(o, "<iq type='set'");
	rc |= attr(o, "id", id);
	rc |= sbuf_printf(o, "><query xmlns='" XMLNS_ROSTER "' ver='%" PRIu64 "'>", ver);
	rc |= roster_item_xml(o, it, removed);
	rc |= sbuf_puts(o, "</query></iq>");
	return rc ? -ENOMEM : 0;
}
