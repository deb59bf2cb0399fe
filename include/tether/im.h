/* include/tether/im.h - what the server answers itself: ping, disco, version; stanza errors. */
#ifndef TETHER_IM_H
#define TETHER_IM_H

#include <stddef.h>

#include "tether/errors.h"

struct sbuf;
struct xnode;

#define XMLNS_PING       "urn:xmpp:ping"
#define XMLNS_DISCO_INFO "http://jabber.org/protocol/disco#info"
#define XMLNS_DISCO_ITEMS "http://jabber.org/protocol/disco#items"
#define XMLNS_VERSION    "jabber:iq:version"
#define XMLNS_SESSION    "urn:ietf:params:xml:ns:xmpp-session"
#define XMLNS_ROSTER     "jabber:iq:roster"

#define TETHER_VERSION "0.1.0"

/* Answers an iq addressed to the server's domain from
 * <from> (the sender's full JID): ping, disco#info (exactly what is
 * implemented), disco#items, version, legacy session; anything else gets
 * service-unavailable. Appends the reply to <out>. iq results and errors
 * get no reply (returns 0 and appends nothing). Returns 0 or -ENOMEM. */
int im_server_iq(struct xnode *iq, const char *domain, const char *from, struct sbuf *out);

/* Answers an iq of type get/set addressed to the bare JID <bare> of an
 * account that exists, on the account's behalf, from <bare>: disco#info
 * (identity account/registered) and ping. When <own> is set the sender is
 * the account itself (an iq to its own bare JID or with no 'to', RFC 6120
 * §10.3.3): legacy session, and roster get (an empty roster: none is
 * stored yet). Anything else gets service-unavailable. iq results and
 * errors get no reply. Returns 0 or -ENOMEM. */
int im_account_iq(struct xnode *iq, const char *bare, const char *from, int own,
		  struct sbuf *out);

/* Appends <name type='error' id from to>PAYLOAD<error type><cond/></error></name>;
 * <id> is left out when NULL, <from> when NULL or empty; <payload_len>
 * bytes of <payload> (serialized child elements of the original stanza)
 * are copied as they are. Returns 0 or -ENOMEM. */
int im_error_stanza(const char *name, const char *id, const char *from, const char *to,
		    enum stanza_err cond, const char *payload, size_t payload_len,
		    struct sbuf *out);

/* Appends an error reply to <stanza>: same kind and id, from/to swapped
 * (<from> is who answers, <to> who gets it), type='error', the condition
 * <cond> with its default type; a message keeps its child elements (the
 * body, so the user sees which message failed). Never call it for a
 * stanza of type error. */
int im_error_reply(const struct xnode *stanza, const char *from, const char *to,
		   enum stanza_err cond, struct sbuf *out);

/* Finds the content of the serialized stanza <xml> (what lies between its
 * start and end tags, as our serializer writes them): sets *<off> and
 * *<plen>. Returns 0, or -EINVAL for an empty element. */
int im_stanza_payload(const char *xml, size_t len, size_t *off, size_t *plen);

/* 1 for a message <type> (NULL or "" = normal) that RFC 6121 §8.5 sends
 * on to an account's other resources or offline storage: chat or normal. */
int im_chat_or_normal(const char *type);

#endif /* TETHER_IM_H */
