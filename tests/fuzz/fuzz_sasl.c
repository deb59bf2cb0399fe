/* tests/fuzz/fuzz_sasl.c - libFuzzer target for sasl_step() (PLAIN, SCRAM, -PLUS).
 * Standalone: clang -fsanitize=fuzzer,address -Iinclude -isystem /usr/include/android \
 *   tests/fuzz/fuzz_sasl.c -L... -lcrypto -lsodium -lidn -lpthread
 * Input: byte 0 picks the mechanism, byte 1 the environment (bit 0 TLS,
 * bit 1 -PLUS offered, bits 2-4 which channel bindings exist, bit 5 a
 * failing backend), bytes 2-3 the length of the first message (big
 * endian); the rest is the first message, then the second. The server
 * nonce is forced to "SNONCE" so the fuzzer can learn a matching r=. */
#include "../../server/jid.c"
#include "../../server/log.c"
#include "../../server/sasl.c"
#include "../../server/sbuf.c"
#include "../../server/scram.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct user_creds user_creds;
static const uint8_t cb32[32] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
				  17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32 };

static int get_creds(void *ud, const char *user, struct user_creds *out)
{
	int fail = *(const int *)ud;
	if (fail)
		return -EIO;
	if (strcmp(user, "user") != 0)
		return -ENOENT;
	*out = user_creds;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int init;
	struct sbuf out = SBUF_INIT;
	enum sasl_cond cond;
	int fail;

	if (!init) {
		/* one iteration: PBKDF2 cost would only slow the fuzzer down */
		if (scram_creds_derive_salt("pencil", cb32, 16, 1, &user_creds))
			abort();
		log_threshold = LOG_L_ERROR;
		init = 1;
	}
	if (size < 4)
		return 0;
	uint8_t f = data[1];
	size_t n1 = (size_t)data[2] << 8 | data[3];
	data += 4;
	size -= 4;
	if (n1 > size)
		n1 = size;
	fail = f >> 5 & 1;
	struct sasl_env env = {
		.domain = "example.com",
		.tls = f & 1,
		.plus_offered = f >> 1 & 1,
		.cb = {
			.tls_exporter = cb32, .tls_exporter_len = f & 4 ? 32 : 0,
			.tls_server_end_point = cb32, .tls_server_end_point_len = f & 8 ? 32 : 0,
			.tls_unique = cb32, .tls_unique_len = f & 16 ? 12 : 0,
		},
		.get_creds = get_creds,
		.ud = &fail,
	};
	struct sasl *s = sasl_new((enum sasl_mech)(data[-4] % SASL_MECH_COUNT), &env);
	if (!s)
		return 0;
	sasl_test_set_nonce(s, "SNONCE");
	enum sasl_rc rc = sasl_step(s, data, n1, &out, &cond);
	if (rc == SASL_FAILURE && cond == SASL_C_NONE)
		abort();
	if (rc == SASL_CONTINUE) {
		sbuf_reset(&out);
		rc = sasl_step(s, data + n1, size - n1, &out, &cond);
	}
	if (rc == SASL_SUCCESS && !sasl_username(s))
		abort();
	/* a finished exchange takes nothing more */
	if (rc != SASL_CONTINUE && sasl_step(s, data, size, &out, &cond) != SASL_FAILURE)
		abort();
	sasl_free(s);
	sbuf_free(&out);
	return 0;
}
