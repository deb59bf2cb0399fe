/* tests/fuzz/fuzz_ht.c - libFuzzer target for ht_parse_initiator() + ht_verify().
 * Standalone:
 *   clang -Iinclude -isystem /usr/include/android -std=gnu11 -D_GNU_SOURCE -g -O1 \
 *     -fsanitize=fuzzer,address,undefined tests/fuzz/fuzz_ht.c \
 *     -L/usr/lib/x86_64-linux-gnu/android -Wl,-rpath,/usr/lib/x86_64-linux-gnu/android \
 *     -lssl -lcrypto -lsodium
 * Input: byte 0 picks the authcid buffer size (1..256) and bits of byte 1 the
 * channel binding (none, 12-byte tls-unique-like, 32-byte exporter-like);
 * the rest is the initiator message. Checks the parser's contract (a parsed
 * message is exactly authcid NUL hash, the name fits and has no NUL) and that
 * ht_verify accepts a hash exactly when it equals the real initiator hash. */
#include "../../server/ht.c"
#include "../../server/token.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char fuzz_token[] = "WXZzciBwYmFmdmZnZiBqdmd1IGp2eXFhcmZm";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t cb_data[32] = { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
					     16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28,
					     29, 30, 31 };
	static const size_t cb_lens[4] = { 0, 12, 32, 0 };
	uint8_t hash[HT_HASH_LEN], want[HT_HASH_LEN];
	char authcid[256];
	size_t amax, cb_len, alen;
	const uint8_t *msg;
	size_t len;
	int rc;

	if (size < 2)
		return 0;
	amax = (size_t)data[0] + 1; /* 1..256, never more than sizeof(authcid) */
	cb_len = cb_lens[data[1] & 3];
	msg = data + 2;
	len = size - 2;

	rc = ht_parse_initiator(msg, len, authcid, amax, hash);
	if (rc != 0) {
		if (rc != -EINVAL || authcid[0] != '\0')
			__builtin_trap();
		return 0;
	}
	alen = strlen(authcid);
	if (alen == 0 || alen >= amax || alen + 1 + HT_HASH_LEN != len ||
	    memcmp(authcid, msg, alen) != 0 || msg[alen] != 0 ||
	    memcmp(hash, msg + alen + 1, HT_HASH_LEN) != 0)
		__builtin_trap();

	ht_initiator_hash(fuzz_token, cb_data, cb_len, want);
	if (ht_verify(fuzz_token, cb_data, cb_len, hash) != (memcmp(want, hash, HT_HASH_LEN) == 0))
		__builtin_trap();
	/* the genuine hash always verifies */
	if (ht_verify(fuzz_token, cb_data, cb_len, want) != 1)
		__builtin_trap();
	return 0;
}
