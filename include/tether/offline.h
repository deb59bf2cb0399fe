/* include/tether/offline.h - XEP-0160 offline messages: stored for an account with no available resource, handed back at its next initial presence. */
#ifndef TETHER_OFFLINE_H
#define TETHER_OFFLINE_H

#include <stddef.h>
#include <stdint.h>

#include "tether/errors.h"

struct rmsg;
struct sbuf;
struct worker;

/* RFC 6121 §8.5.2.2: whether a message of type <type> ("" = normal) to an
 * account with no available resource is stored (normal, chat) rather
 * than bounced or dropped. */
int offline_wanted(const char *type);

/* Stores message <m> for account <bare>, with a XEP-0203 delay stamp of
 * <stamp_ms> (Unix ms), through <w>'s store handle; consumes a reference.
 * OFFLINE_STAMPED as <stamp_ms>: <m> carries its delay stamp already (an
 * orphan that was stamped before it went looking for another resource)
 * and is stored as it is, so its original stamp survives.
 * When it cannot be stored the sender gets an error, never silence:
 * resource-constraint over [im] max_offline, else <otherwise> (no such
 * account, a backend without offline storage, no store handle, a store
 * error). */
#define OFFLINE_STAMPED UINT64_MAX

void offline_store(struct worker *w, const char *domain, const char *bare, struct rmsg *m,
		   uint64_t stamp_ms, enum stanza_err otherwise);

/* A stored record back into a message for account <bare> (its 'to'), with
 * the sender, id and type it was stored with. NULL: malformed or out of
 * memory. */
struct rmsg *offline_unpack(const char *bare, const char *data, size_t len);

/* The record offline_store writes: <m>'s from, id and type, then
 * <stanza>. Returns 0 or -ENOMEM. */
int offline_pack(const struct rmsg *m, const char *stanza, size_t len, struct sbuf *out);

#endif /* TETHER_OFFLINE_H */
