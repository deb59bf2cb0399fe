/* include/tether/carbons.h - XEP-0280 Message Carbons (urn:xmpp:carbons:2): which messages are copied, and the copies' XML. */
#ifndef TETHER_CARBONS_H
#define TETHER_CARBONS_H

#include <stddef.h>

struct sbuf;

#define XMLNS_CARBONS "urn:xmpp:carbons:2"
#define XMLNS_FORWARD "urn:xmpp:forward:0"

/* Whether the serialized message <data> (as tether writes it: elements
 * never prefixed, xmlns first) of type <type> ("" = normal) is copied
 * (XEP-0280 §6): type chat, or normal with a <body/>; never an error,
 * groupchat or headline, never one marked <private/> (§7) or XEP-0334
 * <no-copy/>, never a copy (received or sent, §8). */
int carbons_eligible(const char *data, size_t len, const char *type);

/* Appends the copy of message <data> for the account <bare>: a
 * <message from=bare type><(received|sent) xmlns=carbons:2><forwarded>
 * the message, declared in jabber:client </forwarded>...</message>, with
 * no 'to' (the stream's own JID). Returns 0, -EINVAL if <data> is not a
 * serialized <message>, or -ENOMEM. */
int carbons_wrap(struct sbuf *o, int sent, const char *bare, const char *type, const char *data,
		 size_t len);

#endif /* TETHER_CARBONS_H */
