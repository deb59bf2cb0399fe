/* include/tether/sm.h - XEP-0198 stream management: counters, ids, wire helpers (sans-I/O). */
#ifndef TETHER_SM_H
#define TETHER_SM_H

#include <stddef.h>
#include <stdint.h>

struct sbuf;

#define XMLNS_SM    "urn:xmpp:sm:3"
#define XMLNS_DELAY "urn:xmpp:delay"
#define SM_ID_LEN   22   /* 128 bits from libsodium, base64url without padding */

/* Counters of one SM session (XEP-0198 §4). All arithmetic is mod 2^32. */
struct sm_counters {
	uint32_t h_in;    /* client stanzas handled since <enable/> */
	uint32_t out;     /* stanzas sent (queued) to the client since <enabled/> */
	uint32_t acked;   /* the last h the client acknowledged */
};

/* Stanzas sent but not yet acknowledged. */
static inline uint32_t sm_unacked(const struct sm_counters *c) { return c->out - c->acked; }

/* Checks an <a h/> (or the h of <resume/>): returns 0 if <h> acknowledges
 * between nothing and everything sent since the last ack, -ERANGE if it
 * acknowledges more than was sent (handled-count-too-high) — a stale h
 * older than the last ack also lands there, as the XEP's modular rule says. */
int sm_check_h(const struct sm_counters *c, uint32_t h);

/* Parses xs:boolean ("true", "1", "false", "0"). Returns 1, 0, or -1. */
int sm_parse_bool(const char *s);

/* Parses an unsignedInt attribute. Returns 0 or -1. */
int sm_parse_u32(const char *s, uint32_t *out);

/* A fresh SM-ID: 128 bits from libsodium, base64url, NUL-terminated. */
void sm_new_id(char out[SM_ID_LEN + 1]);

/* The <max> the server grants: the client's request capped by <cap>; a
 * missing or zero request gets <cap>. */
unsigned sm_grant_max(const char *requested, unsigned cap);

/* Appends <stanza> with a XEP-0203 <delay from=domain stamp=UTC/> inserted
 * as its last child. <stanza> is one serialized element as tether writes
 * it (<x .../> or <x ...>...</x>). Returns 0, -EINVAL if it is not such an
 * element, or -ENOMEM. */
int sm_add_delay(const char *stanza, size_t len, const char *domain, uint64_t stamp_ms,
		 struct sbuf *out);

/* Formats <stamp_ms> (Unix ms, UTC) as XEP-0082 "2026-11-25T14:29:32.123Z". */
void sm_format_stamp(uint64_t stamp_ms, char out[32]);

/* Unix time in milliseconds (wall clock, for delay stamps). */
uint64_t sm_wall_ms(void);

#endif /* TETHER_SM_H */
