/* include/tether/jid.h - JIDs (RFC 7622): parse, prepare (libidn stringprep), format. */
#ifndef TETHER_JID_H
#define TETHER_JID_H

#include <stddef.h>

#define JID_PART_MAX 1023   /* RFC 7622: each part at most 1023 octets */
#define JID_MAX (3 * JID_PART_MAX + 2)

/* A prepared JID. Empty strings for absent parts. */
struct jid {
	char local[JID_PART_MAX + 1];
	char domain[JID_PART_MAX + 1];
	char resource[JID_PART_MAX + 1];
};

/* Splits "local@domain/resource" and prepares each part (nodeprep,
 * nameprep + lowercase, resourceprep), checking lengths after preparation,
 * forbidding empty parts where a separator is present. Returns 0, or
 * -EINVAL for a malformed JID. */
int jid_parse(const char *s, struct jid *out);

/* Prepares a single part into <out> (size <outlen>). Return 0 or -EINVAL. */
int jid_prep_local(const char *in, char *out, size_t outlen);
int jid_prep_domain(const char *in, char *out, size_t outlen);
int jid_prep_resource(const char *in, char *out, size_t outlen);

/* Writes "local@domain" (or "domain") into <out>. Returns the length, or -1
 * if it does not fit. */
int jid_bare(const struct jid *j, char *out, size_t outlen);

/* Writes "local@domain/resource" (parts omitted when empty). Same return. */
int jid_full(const struct jid *j, char *out, size_t outlen);

/* Whether item <item> of a blocklist (XEP-0191 §3.4, with XEP-0016's JID
 * matching) covers the prepared JID <jid>: it equals <jid>, its bare JID
 * or its domain. Both as strings, already prepared. */
int jid_item_covers(const char *item, const char *jid);

#endif /* TETHER_JID_H */
