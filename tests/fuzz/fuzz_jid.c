/* tests/fuzz/fuzz_jid.c - libFuzzer target for JID parsing and preparation.
 * Standalone: clang -fsanitize=fuzzer,address -Iinclude -isystem /usr/include/android \
 *   tests/fuzz/fuzz_jid.c -lidn
 * Besides crashes it checks two properties: the ASCII fast paths in jid.c
 * give exactly what libidn's profiles give, and formatting a parsed JID
 * and parsing it again changes nothing. */
#include "../../server/jid.c"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Fast path (the public function) against the libidn profile, for ASCII
 * input where the fast path applies. */
static void check_fast(const char *in, size_t len)
{
	static char fast[JID_PART_MAX + 1], slow[JID_PART_MAX + 1], buf[PREP_BUF];
	int rf, rs, n;

	if (!is_ascii(in, len) || len > PREP_IN_MAX)
		return;
	rf = jid_prep_local(in, fast, sizeof(fast));
	n = prep_slow(in, len, stringprep_xmpp_nodeprep, buf);
	rs = n < 0 ? n : put_part(buf, (size_t)n, slow, sizeof(slow));
	if (rf != rs || (rf == 0 && strcmp(fast, slow) != 0))
		abort();

	rf = jid_prep_resource(in, fast, sizeof(fast));
	n = prep_slow(in, len, stringprep_xmpp_resourceprep, buf);
	rs = n < 0 ? n : put_part(buf, (size_t)n, slow, sizeof(slow));
	if (rf != rs || (rf == 0 && strcmp(fast, slow) != 0))
		abort();

	/* domains: only where the fast path takes the input */
	size_t dlen = len && in[len - 1] == '.' ? len - 1 : len;
	int ace;
	if (dlen && in[0] != '[' && ldh_labels(in, dlen, &ace) && !ace) {
		rf = jid_prep_domain(in, fast, sizeof(fast));
		rs = prep_domain_slow(in, dlen, slow, sizeof(slow));
		if (rf != rs || (rf == 0 && strcmp(fast, slow) != 0))
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char in[JID_MAX * 2 + 1], full[JID_MAX + 1];
	static struct jid a, b;

	if (size > sizeof(in) - 1)
		size = sizeof(in) - 1;
	memcpy(in, data, size);
	in[size] = 0;
	size = strlen(in); /* a C string ends at the first NUL */

	check_fast(in, size);
	if (jid_parse(in, &a) != 0)
		return 0;
	if (jid_full(&a, full, sizeof(full)) < 0)
		abort(); /* every part fits, so the whole must */
	if (jid_parse(full, &b) != 0 || strcmp(a.local, b.local) || strcmp(a.domain, b.domain) ||
	    strcmp(a.resource, b.resource))
		abort();
	return 0;
}
