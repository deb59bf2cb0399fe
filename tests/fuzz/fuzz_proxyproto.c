/* tests/fuzz/fuzz_proxyproto.c - libFuzzer target for the PROXY protocol parser, the gate and CIDR lists.
 * Besides crashes it checks: the gate gives the same verdict and header
 * for the input split in two as the parser gives for the whole; a header
 * never claims more bytes than it had nor more than PROXYPROTO_HDR_MAX. */
#include "../../server/proxyproto.c"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proxyproto_hdr h, hg;
	enum proxyproto_rc rc = proxyproto_parse(data, size, &h);
	if (rc == PROXYPROTO_DONE && (h.len > size || h.len > PROXYPROTO_HDR_MAX))
		abort();
	if (rc == PROXYPROTO_ERROR && !h.why)
		abort();
	if (rc == PROXYPROTO_NEED_MORE && size >= PROXYPROTO_HDR_MAX)
		abort();

	size_t cut = size ? data[0] % (size + 1) : 0;
	struct proxyproto_gate g = { .have = 0 };
	const uint8_t *rest = NULL;
	size_t restlen = 0;
	enum proxyproto_rc rg = proxyproto_gate_feed(&g, data, cut, &hg, &rest, &restlen);
	size_t end = cut;
	if (rg == PROXYPROTO_NEED_MORE && cut < size) {
		end = size;
		rg = proxyproto_gate_feed(&g, data + cut, size - cut, &hg, &rest, &restlen);
	}
	if (rg != rc)
		abort();
	if (rc == PROXYPROTO_DONE && (hg.len != h.len || hg.local != h.local ||
				      rest != data + h.len || restlen != end - h.len))
		abort();

	/* The same bytes as a trusted_proxies value. */
	char s[256];
	size_t n = size < sizeof(s) - 1 ? size : sizeof(s) - 1;
	memcpy(s, data, n);
	s[n] = 0;
	struct proxyproto_trust t;
	if (!proxyproto_trust_parse(&t, s, NULL) && rc == PROXYPROTO_DONE && !h.local)
		(void)proxyproto_trusted(&t, (struct sockaddr *)&h.src);
	return 0;
}
