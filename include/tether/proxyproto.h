/* include/tether/proxyproto.h - PROXY protocol v1/v2 header parser and trusted-proxy CIDR lists (sans-I/O). */
#ifndef TETHER_PROXYPROTO_H
#define TETHER_PROXYPROTO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define PROXYPROTO_V1_MAX   107 /* the spec's bound on a v1 line, CRLF included */
#define PROXYPROTO_V2_TLVS  512 /* bytes of v2 address block + TLVs we accept (spec allows 65535) */
#define PROXYPROTO_HDR_MAX  (16 + PROXYPROTO_V2_TLVS) /* most bytes a header may take */
#define PROXYPROTO_TRUST_MAX 16 /* CIDR entries in a trusted_proxies list */

/* What parsing the bytes seen so far gave. */
enum proxyproto_rc {
	PROXYPROTO_NEED_MORE = 0, /* a valid prefix: feed more bytes */
	PROXYPROTO_DONE,          /* a full header; see struct proxyproto_hdr */
	PROXYPROTO_ERROR,         /* not a header we accept; see proxyproto_hdr.why */
};

/* A parsed header. */
struct proxyproto_hdr {
	size_t len;               /* bytes the header took (DONE) */
	int local;                /* 1: keep the socket's own address (v2 LOCAL, v1 UNKNOWN) */
	struct sockaddr_storage src; /* the client's address and port (AF_INET/AF_INET6) unless <local> */
	const char *why;          /* ERROR: a static string saying why */
};

/* Parses the start of a connection's bytes, <buf>/<len> (everything received
 * so far, from the first byte). Returns NEED_MORE while <buf> could still be
 * the start of an acceptable header, DONE with <h> filled, or ERROR with
 * <h>->why. Stateless: call again with more bytes appended. Never reads past
 * <len> nor beyond PROXYPROTO_HDR_MAX bytes.
 * v2: command LOCAL -> local (family ignored, as the spec says); PROXY over
 * TCP/IPv4 or TCP/IPv6 -> src; PROXY with family UNSPEC -> local (the spec
 * says: use the real endpoints); UDP or UNIX -> ERROR (an XMPP listener has
 * no use for them); TLVs skipped unread; an address+TLV block over
 * PROXYPROTO_V2_TLVS bytes -> ERROR.
 * v1: "PROXY TCP4|TCP6 src dst sport dport\r\n" strictly (single spaces,
 * decimal ports 0-65535 without leading zeros, inet_pton addresses), or
 * "PROXY UNKNOWN...\r\n" -> local; at most 107 bytes. */
enum proxyproto_rc proxyproto_parse(const uint8_t *buf, size_t len, struct proxyproto_hdr *h);

/* One CIDR block; IPv4 kept as IPv4, so an IPv4-mapped IPv6 peer matches it. */
struct proxyproto_cidr {
	int family;               /* AF_INET or AF_INET6 */
	uint8_t addr[16];         /* network address (first 4 bytes for IPv4) */
	unsigned bits;            /* prefix length */
};

struct proxyproto_trust {
	unsigned n;
	struct proxyproto_cidr cidr[PROXYPROTO_TRUST_MAX];
};

/* Parses "a.b.c.d/n, v6::/n, ..." (commas, optional blanks; a bare address
 * means /32 or /128) into <t>. Host bits set beyond the prefix are refused
 * (likely a typo). Returns NULL, or a static string saying why not with
 * *<at> (if <at> is not NULL) the offset in <s> of the entry at fault. */
const char *proxyproto_trust_parse(struct proxyproto_trust *t, const char *s, size_t *at);

/* 1 if <sa> (AF_INET, AF_INET6, or IPv4-mapped AF_INET6) lies in one of
 * <t>'s blocks, else 0. */
int proxyproto_trusted(const struct proxyproto_trust *t, const struct sockaddr *sa);

/* The first bytes of one connection, until its header is complete: a
 * bounded buffer (only used when a header comes in pieces). */
struct proxyproto_gate {
	size_t have;
	uint8_t buf[PROXYPROTO_HDR_MAX];
};

/* Feeds <len> bytes of <data> to <g>. Returns like proxyproto_parse; on
 * DONE, *<rest> / *<restlen> are the bytes after the header, inside <data>,
 * for the layer above. Bytes are copied into <g> only while a header is
 * incomplete. */
enum proxyproto_rc proxyproto_gate_feed(struct proxyproto_gate *g, const uint8_t *data, size_t len,
					struct proxyproto_hdr *h, const uint8_t **rest, size_t *restlen);

/* Log rate limit: at most one line a second. Returns 1 if a line may be
 * printed now, with *<suppressed> the lines dropped since the last one. */
struct proxyproto_ratelimit {
	uint64_t last_ms;
	unsigned suppressed;
};
int proxyproto_ratelimit_ok(struct proxyproto_ratelimit *r, uint64_t now_ms, unsigned *suppressed);

#endif /* TETHER_PROXYPROTO_H */
