/* server/proxyproto.c - PROXY protocol v1/v2 header parser and trusted-proxy CIDR lists.
 *
 * Sans-I/O: bytes in, a verdict out; it knows nothing of sockets or XMPP
 * (conn.c feeds it and acts on the verdict). Spec: HAProxy's
 * doc/proxy-protocol.txt. Where the spec leaves a choice, ours:
 *  - Only the connection's first bytes may be a header, and nothing but a
 *    header may come first: anything else is an ERROR at the first byte
 *    that cannot start one (a TLS ClientHello, "<?xml", ...).
 *  - v2's length field may say up to 65535; we accept an address block plus
 *    TLVs of at most PROXYPROTO_V2_TLVS (512) bytes, so a peer can make us
 *    hold at most 528 bytes. HAProxy sends 12 or 36 address bytes plus a few
 *    TLVs (ALPN, authority, unique id, SSL), well below that.
 *  - TLVs are skipped without being read: we trust nothing in them.
 *  - v2 families: TCP over IPv4/IPv6 give the client's address; UNSPEC
 *    keeps the socket's address (the spec says so); UDP and UNIX are
 *    refused (they cannot describe an XMPP client on TCP).
 *  - v1: strict. One space between fields, addresses through inet_pton of
 *    the family the protocol names, ports decimal 0-65535 without leading
 *    zeros, CRLF within 107 bytes. "UNKNOWN" keeps the socket's address and
 *    ignores the rest of the line, as the spec says.
 *  - Trusted proxies: IPv4 blocks match IPv4 peers and IPv4-mapped IPv6
 *    peers (::ffff:a.b.c.d, what a dual-stack socket reports). */
#include "tether/proxyproto.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

static const uint8_t v2_sig[12] = { 0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A };
static const char v1_sig[] = "PROXY ";

static enum proxyproto_rc refuse(struct proxyproto_hdr *h, const char *why)
{
	h->why = why;
	return PROXYPROTO_ERROR;
}

static void set_src(struct proxyproto_hdr *h, int family, const uint8_t *addr, uint16_t port_be)
{
	memset(&h->src, 0, sizeof(h->src));
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&h->src;
		sin->sin_family = AF_INET;
		memcpy(&sin->sin_addr, addr, 4);
		sin->sin_port = port_be;
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&h->src;
		sin6->sin6_family = AF_INET6;
		memcpy(&sin6->sin6_addr, addr, 16);
		sin6->sin6_port = port_be;
	}
}

/* v2, once the 12-byte signature matched. */
static enum proxyproto_rc parse_v2(const uint8_t *buf, size_t len, struct proxyproto_hdr *h)
{
	if (len < 16)
		return PROXYPROTO_NEED_MORE;
	unsigned ver = buf[12] >> 4, cmd = buf[12] & 0xf, fam = buf[13] >> 4, proto = buf[13] & 0xf;
	size_t alen = (size_t)buf[14] << 8 | buf[15];
	if (ver != 2)
		return refuse(h, "v2: unsupported version");
	if (cmd > 1)
		return refuse(h, "v2: unknown command");
	if (alen > PROXYPROTO_V2_TLVS)
		return refuse(h, "v2: header too long");
	/* Check what we can before waiting for the rest. */
	if (cmd == 1 && fam != 0) {
		if (fam > 3 || proto > 2)
			return refuse(h, "v2: unknown family or protocol");
		if (fam == 3 || proto != 1)
			return refuse(h, "v2: only TCP over IPv4 or IPv6 is accepted");
		if ((fam == 1 && alen < 12) || (fam == 2 && alen < 36))
			return refuse(h, "v2: address block too short");
	}
	if (len < 16 + alen)
		return PROXYPROTO_NEED_MORE;
	h->len = 16 + alen;
	h->local = cmd == 0 || fam == 0;
	if (!h->local) {
		const uint8_t *a = buf + 16;
		uint16_t port_be;
		memcpy(&port_be, a + (fam == 1 ? 8 : 32), 2); /* source port, network order */
		set_src(h, fam == 1 ? AF_INET : AF_INET6, a, port_be);
	}
	return PROXYPROTO_DONE;
}

/* A v1 port: "0" or 1-5 digits without a leading zero, at most 65535. */
static int v1_port(const char *s, size_t n, uint16_t *port_be)
{
	if (n == 0 || n > 5 || (s[0] == '0' && n > 1))
		return -1;
	unsigned v = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v > 65535)
		return -1;
	*port_be = htons((uint16_t)v);
	return 0;
}

/* v1: the whole line "PROXY ...\r\n" is in <line>/<n> (CRLF excluded). */
static enum proxyproto_rc parse_v1_line(const char *line, size_t n, struct proxyproto_hdr *h)
{
	const char *f[6];
	size_t fl[6], nf = 0, start = 0;
	for (size_t i = 0; i <= n; i++) {
		if (i < n && line[i] != ' ')
			continue;
		if (nf == 6)
			return refuse(h, "v1: too many fields");
		f[nf] = line + start;
		fl[nf++] = i - start;
		start = i + 1;
		if (nf == 2 && fl[1] == 7 && !memcmp(f[1], "UNKNOWN", 7)) {
			h->local = 1; /* the rest of the line is ignored */
			return PROXYPROTO_DONE;
		}
	}
	if (nf != 6)
		return refuse(h, "v1: expected PROXY TCP4|TCP6|UNKNOWN src dst sport dport");
	int family;
	if (fl[1] == 4 && !memcmp(f[1], "TCP4", 4))
		family = AF_INET;
	else if (fl[1] == 4 && !memcmp(f[1], "TCP6", 4))
		family = AF_INET6;
	else
		return refuse(h, "v1: unknown protocol");
	char a[INET6_ADDRSTRLEN];
	uint8_t src[16], dst[16];
	uint16_t sport, dport;
	for (int k = 2; k <= 3; k++) {
		if (fl[k] == 0 || fl[k] >= sizeof(a))
			return refuse(h, "v1: bad address");
		memcpy(a, f[k], fl[k]);
		a[fl[k]] = 0;
		if (inet_pton(family, a, k == 2 ? src : dst) != 1)
			return refuse(h, "v1: bad address");
	}
	if (v1_port(f[4], fl[4], &sport) || v1_port(f[5], fl[5], &dport))
		return refuse(h, "v1: bad port");
	set_src(h, family, src, sport);
	return PROXYPROTO_DONE;
}

static enum proxyproto_rc parse_v1(const uint8_t *buf, size_t len, struct proxyproto_hdr *h)
{
	size_t max = len < PROXYPROTO_V1_MAX ? len : PROXYPROTO_V1_MAX;
	for (size_t i = 0; i < max; i++) {
		if (buf[i] == '\r') {
			if (i + 1 >= len)
				return PROXYPROTO_NEED_MORE;
			if (buf[i + 1] != '\n' || i + 2 > PROXYPROTO_V1_MAX)
				return refuse(h, "v1: bad line end");
			h->len = i + 2;
			h->local = 0;
			return parse_v1_line((const char *)buf, i, h);
		}
		if (buf[i] < 0x20 || buf[i] > 0x7e)
			return refuse(h, "v1: bad character");
	}
	if (len >= PROXYPROTO_V1_MAX)
		return refuse(h, "v1: line too long");
	return PROXYPROTO_NEED_MORE;
}

enum proxyproto_rc proxyproto_parse(const uint8_t *buf, size_t len, struct proxyproto_hdr *h)
{
	h->why = NULL;
	if (len == 0)
		return PROXYPROTO_NEED_MORE;
	if (buf[0] == v2_sig[0]) {
		size_t n = len < sizeof(v2_sig) ? len : sizeof(v2_sig);
		if (memcmp(buf, v2_sig, n))
			return refuse(h, "no PROXY header");
		if (len < sizeof(v2_sig))
			return PROXYPROTO_NEED_MORE;
		return parse_v2(buf, len, h);
	}
	size_t n = len < sizeof(v1_sig) - 1 ? len : sizeof(v1_sig) - 1;
	if (memcmp(buf, v1_sig, n))
		return refuse(h, "no PROXY header");
	if (len < sizeof(v1_sig) - 1)
		return PROXYPROTO_NEED_MORE;
	return parse_v1(buf, len, h);
}

enum proxyproto_rc proxyproto_gate_feed(struct proxyproto_gate *g, const uint8_t *data, size_t len,
					struct proxyproto_hdr *h, const uint8_t **rest, size_t *restlen)
{
	enum proxyproto_rc rc;
	size_t before = g->have;
	if (!g->have) {
		/* The usual case: the whole header in the first segment, no copy. */
		rc = proxyproto_parse(data, len, h);
		if (rc == PROXYPROTO_DONE) {
			*rest = data + h->len;
			*restlen = len - h->len;
			return rc;
		}
		if (rc == PROXYPROTO_ERROR)
			return rc;
	}
	/* Keep at most what a header can take: parse never looks further. */
	size_t room = sizeof(g->buf) - g->have, take = len < room ? len : room;
	memcpy(g->buf + g->have, data, take);
	g->have += take;
	if (before == 0 && len == take)
		return PROXYPROTO_NEED_MORE; /* already parsed these very bytes */
	rc = proxyproto_parse(g->buf, g->have, h);
	if (rc == PROXYPROTO_DONE) {
		/* The header ends inside <data>: every earlier byte was not enough. */
		size_t used = h->len - before;
		*rest = data + used;
		*restlen = len - used;
	} else if (rc == PROXYPROTO_NEED_MORE && g->have == sizeof(g->buf)) {
		return refuse(h, "header too long");
	}
	return rc;
}

int proxyproto_ratelimit_ok(struct proxyproto_ratelimit *r, uint64_t now_ms, unsigned *suppressed)
{
	if (r->last_ms && now_ms - r->last_ms < 1000) {
		r->suppressed++;
		return 0;
	}
	r->last_ms = now_ms ? now_ms : 1;
	*suppressed = r->suppressed;
	r->suppressed = 0;
	return 1;
}

/* One "addr[/bits]" of <s>/<n> into <c>. */
static const char *parse_cidr(struct proxyproto_cidr *c, const char *s, size_t n)
{
	char a[INET6_ADDRSTRLEN + 8];
	if (n == 0)
		return "empty entry";
	if (n >= sizeof(a))
		return "entry too long";
	memcpy(a, s, n);
	a[n] = 0;
	char *slash = strchr(a, '/');
	if (slash)
		*slash = 0;
	memset(c, 0, sizeof(*c));
	if (inet_pton(AF_INET, a, c->addr) == 1) {
		c->family = AF_INET;
		c->bits = 32;
	} else if (inet_pton(AF_INET6, a, c->addr) == 1) {
		c->family = AF_INET6;
		c->bits = 128;
	} else {
		return "expected an IPv4 or IPv6 address, optionally /prefix";
	}
	if (slash) {
		const char *p = slash + 1;
		unsigned v = 0;
		size_t k = strlen(p);
		if (k == 0 || k > 3 || (p[0] == '0' && k > 1) || strspn(p, "0123456789") != k)
			return "bad prefix length";
		for (size_t i = 0; i < k; i++)
			v = v * 10 + (unsigned)(p[i] - '0');
		if (v > c->bits)
			return "prefix length too long for the address family";
		c->bits = v;
	}
	if (c->family == AF_INET6 && IN6_IS_ADDR_V4MAPPED((struct in6_addr *)c->addr)) {
		/* ::ffff:a.b.c.d/n is the IPv4 block a.b.c.d/(n-96). */
		if (c->bits < 96)
			return "an IPv4-mapped block needs a prefix of at least 96";
		memmove(c->addr, c->addr + 12, 4);
		memset(c->addr + 4, 0, 12);
		c->family = AF_INET;
		c->bits -= 96;
	}
	unsigned bytes = c->family == AF_INET ? 4 : 16;
	for (unsigned i = c->bits; i < bytes * 8; i++)
		if (c->addr[i / 8] & (0x80 >> (i % 8)))
			return "address has bits set beyond the prefix";
	return NULL;
}

const char *proxyproto_trust_parse(struct proxyproto_trust *t, const char *s, size_t *at)
{
	const char *s0 = s;
	memset(t, 0, sizeof(*t));
	while (*s) {
		s += strspn(s, " \t");
		if (!*s)
			break;
		size_t n = strcspn(s, ",");
		size_t m = n;
		while (m && (s[m - 1] == ' ' || s[m - 1] == '\t'))
			m--;
		if (at)
			*at = (size_t)(s - s0);
		if (t->n == PROXYPROTO_TRUST_MAX)
			return "too many entries (at most 16)";
		const char *why = parse_cidr(&t->cidr[t->n], s, m);
		if (why)
			return why;
		t->n++;
		s += n;
		if (*s == ',' && !s[1 + strspn(s + 1, " \t")]) {
			if (at)
				*at = (size_t)(s - s0);
			return "empty entry"; /* a trailing comma */
		}
		if (*s == ',')
			s++;
	}
	return NULL;
}

static int prefix_match(const uint8_t *a, const uint8_t *net, unsigned bits)
{
	unsigned full = bits / 8, rem = bits % 8;
	if (memcmp(a, net, full))
		return 0;
	if (rem && ((a[full] ^ net[full]) & (uint8_t)(0xff << (8 - rem))))
		return 0;
	return 1;
}

int proxyproto_trusted(const struct proxyproto_trust *t, const struct sockaddr *sa)
{
	uint8_t a[16];
	int family;
	if (sa->sa_family == AF_INET) {
		family = AF_INET;
		memcpy(a, &((const struct sockaddr_in *)sa)->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6) {
		const struct in6_addr *in6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
		if (IN6_IS_ADDR_V4MAPPED(in6)) {
			family = AF_INET;
			memcpy(a, in6->s6_addr + 12, 4);
		} else {
			family = AF_INET6;
			memcpy(a, in6->s6_addr, 16);
		}
	} else {
		return 0;
	}
	for (unsigned i = 0; i < t->n; i++)
		if (t->cidr[i].family == family && prefix_match(a, t->cidr[i].addr, t->cidr[i].bits))
			return 1;
	return 0;
}
