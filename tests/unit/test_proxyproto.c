/* tests/unit/test_proxyproto.c - PROXY protocol v1/v2 parsing (every byte split), CIDR lists. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "tether/netaddr.h"
#include "tether/proxyproto.h"

static const uint8_t sig[12] = { 0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A };

/* A v2 header: <cmd_fam> bytes 13-14, then <alen> address/TLV bytes. */
static size_t v2(uint8_t *out, uint8_t vc, uint8_t fp, const uint8_t *a, size_t alen)
{
	memcpy(out, sig, 12);
	out[12] = vc;
	out[13] = fp;
	out[14] = (uint8_t)(alen >> 8);
	out[15] = (uint8_t)alen;
	if (alen)
		memcpy(out + 16, a, alen);
	return 16 + alen;
}

static const uint8_t v4_block[12] = { 192, 0, 2, 7, 10, 0, 0, 1, 0xd4, 0x31, 0x14, 0x66 }; /* :54321 -> :5222 */

static void addr_is(const struct proxyproto_hdr *h, const char *want)
{
	char s[64];
	netaddr_format(&h->src, NULL, s);
	assert_string_equal(s, want);
}

/* Parses <buf> whole, then through the gate at every split into two, then
 * byte by byte: the same verdict, the same header, and the bytes after the
 * header handed back exactly. */
static enum proxyproto_rc parse_all_ways(const uint8_t *buf, size_t len, struct proxyproto_hdr *out)
{
	enum proxyproto_rc whole = proxyproto_parse(buf, len, out);
	for (size_t cut = 0; cut <= len; cut++) {
		struct proxyproto_gate g = { .have = 0 };
		struct proxyproto_hdr h;
		const uint8_t *rest = NULL;
		size_t restlen = 0;
		size_t end = cut; /* the rest ends where the segment that completed the header ends */
		enum proxyproto_rc rc = proxyproto_gate_feed(&g, buf, cut, &h, &rest, &restlen);
		if (rc == PROXYPROTO_NEED_MORE && cut < len) {
			end = len;
			rc = proxyproto_gate_feed(&g, buf + cut, len - cut, &h, &rest, &restlen);
		}
		assert_int_equal(rc, whole);
		if (rc == PROXYPROTO_DONE) {
			assert_int_equal(h.len, out->len);
			assert_int_equal(h.local, out->local);
			assert_ptr_equal(rest, buf + h.len);
			assert_int_equal(restlen, end - h.len);
			if (!h.local)
				assert_memory_equal(&h.src, &out->src, sizeof(h.src));
		}
	}
	struct proxyproto_gate g = { .have = 0 };
	struct proxyproto_hdr h;
	const uint8_t *rest = NULL;
	size_t restlen = 0;
	enum proxyproto_rc rc = PROXYPROTO_NEED_MORE;
	size_t i;
	for (i = 0; i < len && rc == PROXYPROTO_NEED_MORE; i++)
		rc = proxyproto_gate_feed(&g, buf + i, 1, &h, &rest, &restlen);
	if (whole != PROXYPROTO_NEED_MORE)
		assert_int_equal(rc, whole);
	if (rc == PROXYPROTO_DONE)
		assert_int_equal(i, out->len);
	return whole;
}

static void test_v2_ipv4(void **state)
{
	(void)state;
	uint8_t b[128];
	size_t n = v2(b, 0x21, 0x11, v4_block, sizeof(v4_block));
	memcpy(b + n, "<?xml", 5); /* what follows the header is left alone */
	struct proxyproto_hdr h;
	assert_int_equal(parse_all_ways(b, n + 5, &h), PROXYPROTO_DONE);
	assert_int_equal(h.len, 28);
	assert_int_equal(h.local, 0);
	addr_is(&h, "192.0.2.7:54321");
	/* Exactly the header, nothing after. */
	assert_int_equal(parse_all_ways(b, n, &h), PROXYPROTO_DONE);
	/* Every proper prefix wants more. */
	for (size_t k = 0; k < n; k++)
		assert_int_equal(proxyproto_parse(b, k, &h), PROXYPROTO_NEED_MORE);
}

static void test_v2_ipv6_and_tlvs(void **state)
{
	(void)state;
	uint8_t a[36 + 20], b[128];
	memset(a, 0, sizeof(a));
	inet_pton(AF_INET6, "2001:db8::1", a);
	inet_pton(AF_INET6, "2001:db8::2", a + 16);
	a[32] = 0x01; a[33] = 0xbb; /* 443 */
	a[34] = 0x14; a[35] = 0x66;
	/* TLVs: ALPN "xmpp-client" (type 1), then NOOP (4) with 3 bytes. */
	uint8_t tlv[] = { 0x01, 0x00, 0x0b, 'x', 'm', 'p', 'p', '-', 'c', 'l', 'i', 'e', 'n', 't', 0x04, 0x00, 0x00 };
	memcpy(a + 36, tlv, sizeof(tlv));
	size_t n = v2(b, 0x21, 0x21, a, 36 + sizeof(tlv));
	struct proxyproto_hdr h;
	assert_int_equal(parse_all_ways(b, n, &h), PROXYPROTO_DONE);
	assert_int_equal(h.len, n);
	addr_is(&h, "2001:db8::1:443");
}

static void test_v2_local_unspec(void **state)
{
	(void)state;
	uint8_t b[64];
	struct proxyproto_hdr h;
	/* LOCAL (health checks): no address, keep the socket's. */
	size_t n = v2(b, 0x20, 0x00, NULL, 0);
	assert_int_equal(parse_all_ways(b, n, &h), PROXYPROTO_DONE);
	assert_int_equal(h.len, 16);
	assert_int_equal(h.local, 1);
	/* LOCAL with a family and address block: still local, block skipped. */
	n = v2(b, 0x20, 0x11, v4_block, sizeof(v4_block));
	assert_int_equal(parse_all_ways(b, n, &h), PROXYPROTO_DONE);
	assert_int_equal(h.local, 1);
	assert_int_equal(h.len, 28);
	/* PROXY with UNSPEC: the spec says use the real endpoints. */
	n = v2(b, 0x21, 0x00, NULL, 0);
	assert_int_equal(parse_all_ways(b, n, &h), PROXYPROTO_DONE);
	assert_int_equal(h.local, 1);
}

static void test_v2_refused(void **state)
{
	(void)state;
	uint8_t b[1024], a[600];
	memset(a, 0, sizeof(a));
	struct proxyproto_hdr h;
	size_t n;
	n = v2(b, 0x11, 0x11, v4_block, 12); /* version 1 in the binary form */
	assert_int_equal(parse_all_ways(b, n, &h), PROXYPROTO_ERROR);
	n = v2(b, 0x22, 0x11, v4_block, 12); /* command 2 */
	assert_int_equal(parse_all_ways(b, n, &h), PROXYPROTO_ERROR);
	n = v2(b, 0x21, 0x12, v4_block, 12); /* UDP */
	assert_int_equal(parse_all_ways(b, n, &h), PROXYPROTO_ERROR);
	n = v2(b, 0x21, 0x31, a, 216); /* UNIX stream */
	assert_int_equal(parse_all_ways(b, n, &h), PROXYPROTO_ERROR);
	n = v2(b, 0x21, 0x41, a, 12); /* family 4 */
	assert_int_equal(parse_all_ways(b, n, &h), PROXYPROTO_ERROR);
	n = v2(b, 0x21, 0x11, v4_block, 11); /* IPv4 block too short */
	assert_int_equal(parse_all_ways(b, n, &h), PROXYPROTO_ERROR);
	n = v2(b, 0x21, 0x21, a, 35); /* IPv6 block too short */
	assert_int_equal(parse_all_ways(b, n, &h), PROXYPROTO_ERROR);
	/* Oversized: refused from the length field alone, before the bytes come. */
	n = v2(b, 0x21, 0x11, a, PROXYPROTO_V2_TLVS + 1);
	assert_int_equal(proxyproto_parse(b, 16, &h), PROXYPROTO_ERROR);
	assert_int_equal(parse_all_ways(b, n, &h), PROXYPROTO_ERROR);
	n = v2(b, 0x21, 0x11, a, PROXYPROTO_V2_TLVS); /* the bound itself is fine */
	assert_int_equal(parse_all_ways(b, n, &h), PROXYPROTO_DONE);
	b[0] = 0xff; /* length 0xffff */
	memcpy(b, sig, 12);
	b[14] = 0xff; b[15] = 0xff;
	assert_int_equal(proxyproto_parse(b, 16, &h), PROXYPROTO_ERROR);
	/* A broken signature, at every position. */
	for (size_t i = 0; i < 12; i++) {
		n = v2(b, 0x21, 0x11, v4_block, 12);
		b[i] ^= 0x40;
		assert_int_equal(proxyproto_parse(b, i + 1, &h), PROXYPROTO_ERROR);
		assert_int_equal(parse_all_ways(b, n, &h), PROXYPROTO_ERROR);
	}
}

static void v1_ok(const char *line, int local, const char *addr)
{
	struct proxyproto_hdr h;
	char buf[256];
	snprintf(buf, sizeof(buf), "%s<stream:stream>", line);
	assert_int_equal(parse_all_ways((const uint8_t *)buf, strlen(buf), &h), PROXYPROTO_DONE);
	assert_int_equal(h.len, strlen(line));
	assert_int_equal(h.local, local);
	if (addr)
		addr_is(&h, addr);
}

static void v1_bad(const char *line)
{
	struct proxyproto_hdr h;
	assert_int_equal(parse_all_ways((const uint8_t *)line, strlen(line), &h), PROXYPROTO_ERROR);
	assert_non_null(h.why);
}

static void test_v1_examples(void **state)
{
	(void)state;
	v1_ok("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n", 0, "192.168.0.1:56324");
	v1_ok("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
	      0, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff:65535");
	v1_ok("PROXY TCP6 2001:db8::1 ::1 0 5222\r\n", 0, "2001:db8::1:0");
	v1_ok("PROXY UNKNOWN\r\n", 1, NULL);
	v1_ok("PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
	      1, NULL);
	v1_ok("PROXY UNKNOWN whatever follows\r\n", 1, NULL);
}

static void test_v1_refused(void **state)
{
	(void)state;
	v1_bad("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\n");      /* LF alone */
	v1_bad("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\rX");
	v1_bad("PROXY TCP4 192.168.0.1  192.168.0.11 56324 443\r\n");    /* two spaces */
	v1_bad("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443 \r\n");    /* trailing space */
	v1_bad("PROXY TCP4 192.168.0.1 192.168.0.11 56324\r\n");
	v1_bad("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443 1\r\n");
	v1_bad("PROXY TCP4 192.168.0.01 192.168.0.11 56324 443\r\n");   /* leading zero in address */
	v1_bad("PROXY TCP4 192.168.0.1 192.168.0.11 056324 443\r\n");   /* leading zero in port */
	v1_bad("PROXY TCP4 192.168.0.1 192.168.0.11 00 443\r\n");
	v1_bad("PROXY TCP4 192.168.0.1 192.168.0.11 65536 443\r\n");
	v1_bad("PROXY TCP4 192.168.0.1 192.168.0.11 -1 443\r\n");
	v1_bad("PROXY TCP4 192.168.0.1 192.168.0.11 +1 443\r\n");
	v1_bad("PROXY TCP4 ::1 ::1 1 443\r\n");                          /* v6 under TCP4 */
	v1_bad("PROXY TCP6 192.168.0.1 192.168.0.11 1 443\r\n");
	v1_bad("PROXY TCP4 1.2.3 1.2.3.4 1 443\r\n");
	v1_bad("PROXY UDP4 1.2.3.4 1.2.3.4 1 443\r\n");
	v1_bad("PROXY tcp4 1.2.3.4 1.2.3.4 1 443\r\n");
	v1_bad("PROXY \r\n");
	v1_bad("PROXY\r\n");
	v1_bad("proxy TCP4 1.2.3.4 1.2.3.4 1 443\r\n");
	v1_bad("PROXY TCP4 1.2.3.4\t1.2.3.4 1 443\r\n");
	v1_bad("PROXY TCP4 1.2.3.4 1.2.3.4 1 4\x80" "43\r\n");
	v1_bad("<?xml version='1.0'?>");
	v1_bad("\x16\x03\x01\x02\x00\x01"); /* a TLS ClientHello */
	/* Too long: 107 bytes without CRLF, or CRLF past byte 107. */
	char longline[200];
	memset(longline, 'A', sizeof(longline));
	memcpy(longline, "PROXY UNKNOWN ", 14);
	longline[107] = 0;
	v1_bad(longline);
	memcpy(longline + 105, "\r\n", 3);
	v1_ok(longline, 1, NULL); /* exactly 107 */
	memset(longline, 'A', sizeof(longline));
	memcpy(longline, "PROXY UNKNOWN ", 14);
	memcpy(longline + 106, "\r\n", 3);
	v1_bad(longline); /* 108 */
	/* Truncated: a valid prefix only ever asks for more. */
	const char *ok = "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
	struct proxyproto_hdr h;
	for (size_t k = 0; k < strlen(ok); k++)
		assert_int_equal(proxyproto_parse((const uint8_t *)ok, k, &h), PROXYPROTO_NEED_MORE);
}

static void test_gate_bound(void **state)
{
	(void)state;
	/* A v2 header whose bytes trickle in is held in the gate, never more
	 * than PROXYPROTO_HDR_MAX bytes; a huge first segment is not copied. */
	uint8_t big[4096];
	memset(big, 0, sizeof(big));
	size_t n = v2(big, 0x21, 0x11, v4_block, 12);
	(void)n;
	big[14] = 0x01; big[15] = 0x00; /* 256 bytes of block: allowed */
	struct proxyproto_gate g = { .have = 0 };
	struct proxyproto_hdr h;
	const uint8_t *rest;
	size_t restlen;
	assert_int_equal(proxyproto_gate_feed(&g, big, 100, &h, &rest, &restlen), PROXYPROTO_NEED_MORE);
	assert_int_equal(g.have, 100);
	assert_int_equal(proxyproto_gate_feed(&g, big + 100, sizeof(big) - 100, &h, &rest, &restlen),
			 PROXYPROTO_DONE);
	assert_int_equal(h.len, 16 + 256);
	assert_ptr_equal(rest, big + 16 + 256);
	assert_int_equal(restlen, sizeof(big) - 16 - 256);
	assert_true(g.have <= PROXYPROTO_HDR_MAX);
	/* Nothing at all yet. */
	struct proxyproto_gate g2 = { .have = 0 };
	assert_int_equal(proxyproto_gate_feed(&g2, big, 0, &h, &rest, &restlen), PROXYPROTO_NEED_MORE);
}

static struct sockaddr_storage sa(const char *ip)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	if (strchr(ip, ':')) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
		s6->sin6_family = AF_INET6;
		assert_int_equal(inet_pton(AF_INET6, ip, &s6->sin6_addr), 1);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
		s4->sin_family = AF_INET;
		assert_int_equal(inet_pton(AF_INET, ip, &s4->sin_addr), 1);
	}
	return ss;
}

static int trusted(const char *list, const char *ip)
{
	struct proxyproto_trust t;
	const char *why = proxyproto_trust_parse(&t, list, NULL);
	if (why)
		fail_msg("'%s': %s", list, why);
	struct sockaddr_storage ss = sa(ip);
	return proxyproto_trusted(&t, (struct sockaddr *)&ss);
}

static void test_cidr(void **state)
{
	(void)state;
	const char *l = "127.0.0.1/32, ::1/128, 10.0.0.0/8";
	assert_true(trusted(l, "127.0.0.1"));
	assert_false(trusted(l, "127.0.0.2"));
	assert_true(trusted(l, "::1"));
	assert_false(trusted(l, "::2"));
	assert_true(trusted(l, "10.255.255.255"));
	assert_true(trusted(l, "10.0.0.0"));
	assert_false(trusted(l, "11.0.0.0"));
	assert_false(trusted(l, "9.255.255.255"));
	/* IPv4-mapped IPv6 peers count as IPv4. */
	assert_true(trusted(l, "::ffff:127.0.0.1"));
	assert_true(trusted(l, "::ffff:10.1.2.3"));
	assert_false(trusted(l, "::ffff:11.1.2.3"));
	assert_false(trusted("::/0", "127.0.0.1")); /* an IPv6 /0 is not IPv4 */
	assert_true(trusted("::/0", "2001:db8::5"));
	assert_true(trusted("0.0.0.0/0", "203.0.113.9"));
	assert_true(trusted("0.0.0.0/0", "::ffff:203.0.113.9"));
	assert_false(trusted("0.0.0.0/0", "2001:db8::5"));
	/* A mapped block in the list is the IPv4 block. */
	assert_true(trusted("::ffff:10.0.0.0/104", "10.9.9.9"));
	assert_false(trusted("::ffff:10.0.0.0/104", "11.9.9.9"));
	/* Odd prefix lengths. */
	assert_true(trusted("192.168.0.0/23", "192.168.1.200"));
	assert_false(trusted("192.168.0.0/23", "192.168.2.1"));
	assert_true(trusted("2001:db8:80::/41", "2001:db8:ff::1"));
	assert_false(trusted("2001:db8:80::/41", "2001:db8:100::1"));
	assert_true(trusted("2001:db8::7", "2001:db8::7")); /* bare = /128 */
	assert_true(trusted("192.0.2.1", "192.0.2.1"));     /* bare = /32 */
	assert_false(trusted("", "127.0.0.1"));              /* empty: trust nobody */

	struct proxyproto_trust t;
	assert_non_null(proxyproto_trust_parse(&t, "10.0.0.1/8", NULL));     /* host bits set */
	assert_non_null(proxyproto_trust_parse(&t, "10.0.0.0/33", NULL));
	assert_non_null(proxyproto_trust_parse(&t, "::/129", NULL));
	assert_non_null(proxyproto_trust_parse(&t, "10.0.0.0/", NULL));
	assert_non_null(proxyproto_trust_parse(&t, "10.0.0.0/08", NULL));
	assert_non_null(proxyproto_trust_parse(&t, "10.0.0.0/-1", NULL));
	assert_non_null(proxyproto_trust_parse(&t, "localhost", NULL));
	assert_non_null(proxyproto_trust_parse(&t, "10.0.0.0/8,", NULL));
	assert_non_null(proxyproto_trust_parse(&t, "10.0.0.0/8,,127.0.0.1", NULL));
	assert_non_null(proxyproto_trust_parse(&t, "::ffff:10.0.0.0/8", NULL));
	assert_null(proxyproto_trust_parse(&t, "  10.0.0.0/8 ,127.0.0.1  ", NULL));
	assert_int_equal(t.n, 2);
	char many[400] = "";
	for (int i = 0; i < 17; i++)
		snprintf(many + strlen(many), sizeof(many) - strlen(many), "%s10.0.0.%d", i ? "," : "", i);
	assert_non_null(proxyproto_trust_parse(&t, many, NULL));
	/* A socket address that is neither IPv4 nor IPv6 is never trusted. */
	struct sockaddr un = { .sa_family = AF_UNIX };
	assert_null(proxyproto_trust_parse(&t, "0.0.0.0/0, ::/0", NULL));
	assert_false(proxyproto_trusted(&t, &un));
}

static void test_ratelimit(void **state)
{
	(void)state;
	struct proxyproto_ratelimit r = { 0, 0 };
	unsigned s = 99;
	assert_true(proxyproto_ratelimit_ok(&r, 5000, &s));
	assert_int_equal(s, 0);
	assert_false(proxyproto_ratelimit_ok(&r, 5001, &s));
	assert_false(proxyproto_ratelimit_ok(&r, 5999, &s));
	assert_true(proxyproto_ratelimit_ok(&r, 6000, &s));
	assert_int_equal(s, 2);
}

/* A connection keeps only "address:port": the address alone it derives
 * (netaddr_peer_ip) must be what netaddr_format writes alone, the key of
 * per-address limits, for IPv4, IPv6, IPv4-mapped IPv6 and the longest. */
static void test_peer_ip(void **state)
{
	(void)state;
	static const char *const hosts[] = { "192.0.2.7", "2001:db8::1", "::ffff:198.51.100.9",
					     "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255", "::" };
	for (size_t i = 0; i < sizeof(hosts) / sizeof(hosts[0]); i++) {
		struct sockaddr_storage ss = { 0 };
		if (strchr(hosts[i], '.') && !strchr(hosts[i], ':')) {
			struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
			in4->sin_family = AF_INET;
			in4->sin_port = htons(65535);
			assert_int_equal(inet_pton(AF_INET, hosts[i], &in4->sin_addr), 1);
		} else {
			struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
			in6->sin6_family = AF_INET6;
			in6->sin6_port = htons(5222);
			assert_int_equal(inet_pton(AF_INET6, hosts[i], &in6->sin6_addr), 1);
		}
		char ip[NETADDR_IP_MAX], peer[NETADDR_PEER_MAX], derived[NETADDR_IP_MAX];
		netaddr_format(&ss, ip, peer);
		assert_ptr_equal(netaddr_peer_ip(peer, derived), derived);
		assert_string_equal(derived, ip);
	}
	struct sockaddr_storage unix_ss = { .ss_family = AF_UNIX };
	char ip[NETADDR_IP_MAX], peer[NETADDR_PEER_MAX], derived[NETADDR_IP_MAX];
	netaddr_format(&unix_ss, ip, peer);
	assert_string_equal(netaddr_peer_ip(peer, derived), ip); /* "?" */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_v2_ipv4),
		cmocka_unit_test(test_v2_ipv6_and_tlvs),
		cmocka_unit_test(test_v2_local_unspec),
		cmocka_unit_test(test_v2_refused),
		cmocka_unit_test(test_v1_examples),
		cmocka_unit_test(test_v1_refused),
		cmocka_unit_test(test_gate_bound),
		cmocka_unit_test(test_cidr),
		cmocka_unit_test(test_ratelimit),
		cmocka_unit_test(test_peer_ip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
