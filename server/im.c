/* server/im.c - what the server answers itself: ping, disco, version; stanza errors. */
#include "tether/im.h"

#include <errno.h>
#include <string.h>

#include "tether/sbuf.h"
#include "tether/xnode.h"
#include "tether/xstream.h"

/* Features advertised in disco#info: only what works. */
static const char *const server_features[] = {
	XMLNS_DISCO_INFO,
	XMLNS_DISCO_ITEMS,
	XMLNS_PING,
	XMLNS_VERSION,
	"urn:xmpp:sm:3",  /* XEP-0198: enable, acks, resume (c2s_sm.c) */
	"msgoffline",     /* XEP-0160: offline messages (offline.c) */
	"urn:xmpp:carbons:2", /* XEP-0280: message carbons (presence.c, carbons.c) */
	"urn:xmpp:blocking",  /* XEP-0191: blocking command (presence.c) */
};

/* <iq type='result' id=.. from=.. to=..> without the closing tag. */
static int open_reply(const struct xnode *iq, const char *from, const char *to, struct sbuf *out)
{
	int rc = sbuf_puts(out, "<iq type='result'");
	const char *id = xnode_attr(iq, "id");
	if (id) {
		rc |= sbuf_puts(out, " id='");
		rc |= sbuf_puts_esc(out, id);
		rc |= sbuf_puts(out, "'");
	}
	rc |= sbuf_puts(out, " from='");
	rc |= sbuf_puts_esc(out, from);
	rc |= sbuf_puts(out, "' to='");
	rc |= sbuf_puts_esc(out, to);
	rc |= sbuf_puts(out, "'");
	return rc ? -ENOMEM : 0;
}

static int empty_result(const struct xnode *iq, const char *from, const char *to, struct sbuf *out)
{
	if (open_reply(iq, from, to, out) || sbuf_puts(out, "/>"))
		return -ENOMEM;
	return 0;
}

static int disco_info(const struct xnode *iq, const struct xnode *q, const char *domain,
		      const char *to, struct sbuf *out)
{
	if (xnode_attr(q, "node"))
		return -EINVAL; /* no nodes are served */
	int rc = open_reply(iq, domain, to, out);
	rc |= sbuf_puts(out, "><query xmlns='" XMLNS_DISCO_INFO "'><identity category='server' type='im' name='tether'/>");
	for (size_t i = 0; i < sizeof(server_features) / sizeof(server_features[0]); i++)
		rc |= sbuf_printf(out, "<feature var='%s'/>", server_features[i]);
	rc |= sbuf_puts(out, "</query></iq>");
	return rc ? -ENOMEM : 0;
}

static int version(const struct xnode *iq, const char *domain, const char *to, struct sbuf *out)
{
	int rc = open_reply(iq, domain, to, out);
	rc |= sbuf_puts(out, "><query xmlns='" XMLNS_VERSION "'><name>tether</name><version>"
			TETHER_VERSION "</version></query></iq>");
	return rc ? -ENOMEM : 0;
}

/* <name type='error' id from to> with the original payload, if any. */
static int open_error(const char *name, const char *id, const char *from, const char *to,
		      struct sbuf *out)
{
	int rc = sbuf_printf(out, "<%s type='error'", name);
	if (id) {
		rc |= sbuf_puts(out, " id='");
		rc |= sbuf_puts_esc(out, id);
		rc |= sbuf_puts(out, "'");
	}
	if (from && *from) {
		rc |= sbuf_puts(out, " from='");
		rc |= sbuf_puts_esc(out, from);
		rc |= sbuf_puts(out, "'");
	}
	rc |= sbuf_puts(out, " to='");
	rc |= sbuf_puts_esc(out, to);
	rc |= sbuf_puts(out, "'>");
	return rc;
}

static int close_error(const char *name, enum stanza_err cond, struct sbuf *out)
{
	return sbuf_printf(out, "<error type='%s'><%s xmlns='" XMLNS_STANZAS "'/></error></%s>",
			   stanza_err_type(cond), stanza_err_name(cond), name);
}

int im_error_stanza(const char *name, const char *id, const char *from, const char *to,
		    enum stanza_err cond, const char *payload, size_t payload_len, struct sbuf *out)
{
	int rc = open_error(name, id, from, to, out);
	rc |= sbuf_append(out, payload, payload_len);
	rc |= close_error(name, cond, out);
	return rc ? -ENOMEM : 0;
}

int im_error_reply(const struct xnode *stanza, const char *from, const char *to,
		   enum stanza_err cond, struct sbuf *out)
{
	int rc = open_error(stanza->name, xnode_attr(stanza, "id"), from, to, out);
	/* RFC 6120 §8.3.1 lets the error carry the original payload: for a
	 * message it tells the user which one failed. */
	if (!strcmp(stanza->name, "message"))
		for (const struct xnode *c = xnode_first_elem(stanza); c && !rc; c = xnode_next_elem(c))
			rc |= xnode_serialize(c, XMLNS_CLIENT, out);
	rc |= close_error(stanza->name, cond, out);
	return rc ? -ENOMEM : 0;
}

int im_stanza_payload(const char *xml, size_t len, size_t *off, size_t *plen)
{
	/* Our serializer escapes '>' in attribute values, so the first '>'
	 * ends the start tag; "/>" means no payload. */
	const char *gt = memchr(xml, '>', len);
	const char *lt = len ? memrchr(xml, '<', len) : NULL;
	if (!gt || gt == xml || gt[-1] == '/' || !lt || lt <= gt || lt[1] != '/')
		return -EINVAL;
	*off = (size_t)(gt + 1 - xml);
	*plen = (size_t)(lt - gt - 1);
	return 0;
}

/* The one child of a get/set iq (RFC 6120 §8.2.3), or NULL if not exactly one. */
static struct xnode *iq_payload(const struct xnode *iq)
{
	struct xnode *q = xnode_first_elem(iq);
	if (!q || xnode_next_elem(q))
		return NULL;
	return q;
}

int im_server_iq(struct xnode *iq, const char *domain, const char *from, struct sbuf *out)
{
	const char *type = xnode_attr(iq, "type");
	if (!type || (strcmp(type, "get") && strcmp(type, "set")))
		return 0; /* results and errors are not answered */
	int get = !strcmp(type, "get");
	struct xnode *q = iq_payload(iq);
	if (!q)
		return im_error_reply(iq, domain, from, STE_BAD_REQUEST, out);
	if (!strcmp(q->ns, XMLNS_PING) && !strcmp(q->name, "ping") && get)
		return empty_result(iq, domain, from, out);
	if (!strcmp(q->ns, XMLNS_DISCO_INFO) && !strcmp(q->name, "query") && get) {
		int rc = disco_info(iq, q, domain, from, out);
		if (rc == -EINVAL)
			return im_error_reply(iq, domain, from, STE_ITEM_NOT_FOUND, out);
		return rc;
	}
	if (!strcmp(q->ns, XMLNS_DISCO_ITEMS) && !strcmp(q->name, "query") && get) {
		int rc = open_reply(iq, domain, from, out);
		rc |= sbuf_puts(out, "><query xmlns='" XMLNS_DISCO_ITEMS "'/></iq>");
		return rc ? -ENOMEM : 0;
	}
	if (!strcmp(q->ns, XMLNS_VERSION) && !strcmp(q->name, "query") && get)
		return version(iq, domain, from, out);
	if (!strcmp(q->ns, XMLNS_SESSION) && !strcmp(q->name, "session") && !get)
		return empty_result(iq, domain, from, out);
	/* Roster and everything else: not implemented, and not advertised. */
	return im_error_reply(iq, domain, from, STE_SERVICE_UNAVAILABLE, out);
}

int im_account_iq(struct xnode *iq, const char *bare, const char *from, int own, struct sbuf *out)
{
	const char *type = xnode_attr(iq, "type");
	if (!type || (strcmp(type, "get") && strcmp(type, "set")))
		return 0;
	struct xnode *q = iq_payload(iq);
	if (!q)
		return im_error_reply(iq, bare, from, STE_BAD_REQUEST, out);
	int get = !strcmp(type, "get");
	if (get && !strcmp(q->ns, XMLNS_PING) && !strcmp(q->name, "ping"))
		return empty_result(iq, bare, from, out);
	if (get && !strcmp(q->ns, XMLNS_DISCO_INFO) && !strcmp(q->name, "query") &&
	    !xnode_attr(q, "node")) {
		int rc = open_reply(iq, bare, from, out);
		rc |= sbuf_puts(out, "><query xmlns='" XMLNS_DISCO_INFO "'>"
				"<identity category='account' type='registered'/>"
				"<feature var='" XMLNS_DISCO_INFO "'/></query></iq>");
		return rc ? -ENOMEM : 0;
	}
	if (own && !get && !strcmp(q->ns, XMLNS_SESSION) && !strcmp(q->name, "session"))
		return empty_result(iq, bare, from, out);
	if (own && get && !strcmp(q->ns, XMLNS_ROSTER) && !strcmp(q->name, "query")) {
		/* Only without a store handle (unit tests): with one,
		 * presence.c answers rosters. An empty one lets clients that
		 * wait for it go online. */
		int rc = open_reply(iq, bare, from, out);
		rc |= sbuf_puts(out, "><query xmlns='" XMLNS_ROSTER "'/></iq>");
		return rc ? -ENOMEM : 0;
	}
	return im_error_reply(iq, bare, from, STE_SERVICE_UNAVAILABLE, out);
}

int im_chat_or_normal(const char *type)
{
	return !type || !*type || !strcmp(type, "chat") || !strcmp(type, "normal");
}
