/* server/carbons.c - XEP-0280 Message Carbons (urn:xmpp:carbons:2): which messages are copied, and the copies' XML.
 *
 * Works on serialized stanzas, which tether writes in one form (xnode.c:
 * no prefixes on elements, xmlns right after the name, '<' always escaped
 * in text and attributes), so a child element is found by its start tag
 * without parsing the message again on every delivery. */
#include "tether/carbons.h"

#include <errno.h>
#include <string.h>

#include "tether/sbuf.h"

/* Whether <data> holds a start tag beginning with <tag> and ending there
 * (followed by ' ', '>' or '/'). */
static int has_tag(const char *data, size_t len, const char *tag)
{
	size_t tl = strlen(tag);
	for (const char *p = data, *end = data + len; p + tl < end;) {
		const char *hit = memmem(p, (size_t)(end - p), tag, tl);
		if (!hit || hit + tl >= end)
			return 0;
		char c = hit[tl];
		if (c == ' ' || c == '>' || c == '/')
			return 1;
		p = hit + 1;
	}
	return 0;
}

int carbons_eligible(const char *data, size_t len, const char *type)
{
	int chat = type && !strcmp(type, "chat");
	int normal = !type || !*type || !strcmp(type, "normal");
	if (!chat && !normal)
		return 0;
	if (normal && !has_tag(data, len, "<body"))
		return 0;
	return !has_tag(data, len, "<private xmlns='" XMLNS_CARBONS "'") &&
	       !has_tag(data, len, "<no-copy xmlns='urn:xmpp:hints'") &&
	       !has_tag(data, len, "<received xmlns='" XMLNS_CARBONS "'") &&
	       !has_tag(data, len, "<sent xmlns='" XMLNS_CARBONS "'");
}

int carbons_wrap(struct sbuf *o, int sent, const char *bare, const char *type, const char *data,
		 size_t len)
{
	static const char open[] = "<message";
	size_t ol = sizeof(open) - 1;
	if (len <= ol || memcmp(data, open, ol) || !strchr(" />", data[ol]))
		return -EINVAL;
	int rc = sbuf_puts(o, "<message from='");
	rc |= sbuf_puts_esc(o, bare);
	rc |= sbuf_puts(o, "'");
	if (type && *type) {
		rc |= sbuf_puts(o, " type='");
		rc |= sbuf_puts_esc(o, type);
		rc |= sbuf_puts(o, "'");
	}
	rc |= sbuf_printf(o, "><%s xmlns='" XMLNS_CARBONS "'><forwarded xmlns='" XMLNS_FORWARD "'>",
			  sent ? "sent" : "received");
	/* The copied message was written inside a jabber:client stream; in
	 * <forwarded/> it must say so itself. */
	rc |= sbuf_append(o, data, ol);
	if (len < ol + 7 || memcmp(data + ol, " xmlns=", 7))
		rc |= sbuf_puts(o, " xmlns='jabber:client'");
	rc |= sbuf_append(o, data + ol, len - ol);
	rc |= sbuf_printf(o, "</forwarded></%s></message>", sent ? "sent" : "received");
	return rc ? -ENOMEM : 0;
}
