/* include/tether/presence.h - RFC 6121 for a bound session: roster requests and pushes, subscriptions, presence to and from contacts, offline delivery.
 *
 * The c2s hooks. Each is called from one place in c2s.c / c2s_route.c and
 * reaches the store only through the stream's store handle (store_im.h);
 * without one (unit tests of c2s) they do nothing and c2s behaves as
 * before. */
#ifndef TETHER_PRESENCE_H
#define TETHER_PRESENCE_H

#include <stddef.h>

struct c2s;
struct rmsg;
struct worker;
struct xnode;

/* An iq from the account to itself (no 'to', or its bare JID): handles a
 * jabber:iq:roster get or set (RFC 6121 §2), XEP-0191 blocklist requests
 * (the replies come later, the stream is parked meanwhile) and XEP-0280
 * enable/disable. Returns 1 if handled, 0 to let im.c answer it. */
int presence_own_iq(struct c2s *s, struct xnode *iq);

/* Every stanza from the client, 'from' stamped, <to> its 'to' or NULL,
 * before it is routed: refuses stanzas to a JID the user blocks
 * (XEP-0191: not-acceptable with <blocked/>), makes XEP-0280 sent copies
 * of messages, and for presence handles subscriptions (§3), drops probes
 * (§4.3: only servers probe), refuses unknown types (bad-request) and
 * records directed presence (§4.6). Returns 1 if it took the stanza, 0 to
 * route it as before. */
int presence_outbound(struct c2s *s, struct xnode *el, const char *to);

/* The stream bound a resource: its XEP-0191 blocklist is loaded (through
 * the store handle, not waited for). */
void presence_bound(struct c2s *s);

/* The client's own presence broadcast <m> (no 'to'; available or
 * unavailable) has gone to the account's resources: now to its contacts
 * with a From subscription; with <initial>, probes to those with To,
 * stored subscription requests, and offline messages if the priority is
 * not negative (§4.2, XEP-0160). Consumes a reference of <m>. */
void presence_broadcast(struct c2s *s, struct rmsg *m, int initial);

/* A stanza delivered to this session: answers server probes and
 * "send your unavailable presence" requests, and passes roster pushes on
 * only if the client asked for the roster, and carbons only to a client
 * that enabled them; a message makes received copies (XEP-0280) for the
 * account's other resources. Returns 1 if it consumed <m>,
 * 0 to deliver it as usual. */
int presence_on_deliver(struct c2s *s, struct rmsg *m);

/* A stanza <m> that someone else appended to this session's XEP-0198
 * queue in the shared store (so it did not pass presence_on_deliver): a
 * message makes its received copies (XEP-0280) for the account's other
 * resources, here and on other nodes. <m> stays the caller's. */
void presence_appended(struct c2s *s, const struct rmsg *m);

#define XMLNS_CSI "urn:xmpp:csi:0"

/* A XEP-0352 <active/> or <inactive/> nonza (namespace XMLNS_CSI). While
 * inactive, presence from others is held (the latest per sender), chat
 * states without a body are dropped, and a message with a body flushes
 * what is held, then goes. <active/> flushes everything held, in order.
 * Returns what a c2s state function returns (0, or 1 after a stream error
 * for anything else in that namespace). */
int presence_csi(struct c2s *s, struct xnode *el);

/* With XEP-0198, the session's IM state is written with its record each
 * time it changes, for a resumption on any node to restore: carbons, CSI
 * inactive, whether the client asked for its roster and blocklist (it
 * gets pushes) and had its offline messages, the last available presence
 * (probes are answered with it) and the directed-presence recipients
 * (they get unavailable presence when the session ends). Available and
 * priority are the record's own fields. save: writes it now (nothing
 * without SM). restore: <len> bytes of <im> as a take returned them
 * (NULL: nothing was saved), on a stream that adopted the session and
 * bound its resource. */
void presence_sm_save(struct c2s *s);
void presence_sm_restore(struct c2s *s, const char *im, size_t len);

/* XEP-0352 for an XEP-0198 queue entry that was numbered without passing
 * presence_on_deliver (appended through the shared store): 1 if the
 * client is inactive and <m> is what it need not see at once (presence
 * from others, a chat state without a body). Such an entry is already in
 * the queue, so it is written later, in order, not dropped (c2s_sm.c). */
int presence_csi_defers(struct c2s *s, const struct rmsg *m);

/* Bind2 (XEP-0386) asked inline for XEP-0280 carbons (<carbons>) and/or
 * XEP-0352 <inactive/> (<inactive>) on the session just bound. */
void presence_bind2(struct c2s *s, int carbons, int inactive);

/* The session is ending for good (c2s_end_presence, also on SM expiry):
 * unavailable presence to its directed-presence recipients (whether or
 * not it was available), and to subscribers if it was available. */
void presence_session_end(struct c2s *s);

/* A session of <bare> (full JID <full>) ended without its stream: a node
 * that crashed, found by the cluster's reaper. Its unavailable presence
 * goes, if it was <available>, to the account's resources and to its
 * subscribers, through <w>'s store handle; and to the <ndirected> JIDs of
 * <directed> (its directed presence, as the store kept it), in any case. */
void presence_gone(struct worker *w, const char *bare, const char *full, int available,
		   const char *const *directed, size_t ndirected);

/* Frees the session's IM state (c2s_free). */
void presence_free(struct c2s *s);

#endif /* TETHER_PRESENCE_H */
