/* server/ht.c - the HT-SHA-256-* SASL mechanisms (draft-schmaus-kitten-sasl-ht-09), sans-I/O.
 *
 * Wire format (-09, what XEP-0484 FAST clients send; sasl.md §7.2):
 *   initiator-msg = authcid 0x00 HMAC-SHA-256(token, "Initiator" || cb-data)
 *   responder-msg =              HMAC-SHA-256(token, "Responder" || cb-data)
 * The key is the token string's octets as issued (not base64-decoded); cb-data
 * is the raw channel binding (empty for NONE), with no GS2 header. */
#include "tether/ht.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/digest.h>
#include <openssl/hmac.h>
#include <sodium.h>

#include "tether/token.h"

static const char *const mech_names[HT_CB_COUNT] = {
	[HT_NONE] = "HT-SHA-256-NONE",
	[HT_ENDP] = "HT-SHA-256-ENDP",
	[HT_EXPR] = "HT-SHA-256-EXPR",
	[HT_UNIQ] = "HT-SHA-256-UNIQ",
};

const char *ht_mech_name(enum ht_cb cb)
{
	if ((unsigned)cb >= HT_CB_COUNT)
		return NULL;
	return mech_names[cb];
}

/* Exact, case-sensitive match: SASL mechanism names are upper case
 * (RFC 4422 §3.1) and we only ever advertise these spellings. */
int ht_mech_parse(const char *name, enum ht_cb *out)
{
	if (!name)
		return -1;
	for (unsigned i = 0; i < HT_CB_COUNT; i++) {
		if (strcmp(name, mech_names[i]) == 0) {
			*out = (enum ht_cb)i;
			return 0;
		}
	}
	return -1;
}

/* The authcid ends at the FIRST NUL: it cannot contain one, while the HMAC
 * after it may (one in eight initiator messages has a 0x00 in its hash), so
 * splitting at the last NUL, or requiring exactly one, would refuse valid
 * logins. On error <authcid> is left empty (when it has room for that). */
int ht_parse_initiator(const uint8_t *msg, size_t len, char *authcid, size_t authcid_max,
		       uint8_t hash[HT_HASH_LEN])
{
	const uint8_t *nul;
	size_t alen;

	if (authcid_max > 0)
		authcid[0] = '\0';
	if (!msg || len == 0)
		return -EINVAL;
	nul = memchr(msg, 0, len);
	if (!nul)
		return -EINVAL;
	alen = (size_t)(nul - msg);
	if (alen == 0 || alen >= authcid_max)
		return -EINVAL;
	if (len - alen - 1 != HT_HASH_LEN)
		return -EINVAL;
	memcpy(authcid, msg, alen);
	authcid[alen] = '\0';
	memcpy(hash, nul + 1, HT_HASH_LEN);
	return 0;
}

/* HMAC-SHA-256(<token>, <label> || <cb>) into <out>, streamed so that the
 * label and the channel binding are never copied into a temporary. The
 * context holds key-derived state (the inner and outer pads' hash states), so
 * it is cleansed, not just cleaned up. Returns 0, or -ENOMEM (BoringSSL's
 * HMAC fails only on allocation failure). */
static int ht_hmac(const char *token, const char *label, const uint8_t *cb, size_t cb_len,
		   uint8_t out[HT_HASH_LEN])
{
	HMAC_CTX ctx;
	unsigned int outlen = 0;
	int rc = -ENOMEM;

	HMAC_CTX_init(&ctx);
	if (!HMAC_Init_ex(&ctx, token, strlen(token), EVP_sha256(), NULL))
		goto out;
	HMAC_Update(&ctx, (const uint8_t *)label, strlen(label));
	if (cb_len > 0)
		HMAC_Update(&ctx, cb, cb_len);
	if (!HMAC_Final(&ctx, out, &outlen) || outlen != HT_HASH_LEN)
		goto out;
	rc = 0;
out:
	HMAC_CTX_cleanse(&ctx);
	if (rc < 0)
		sodium_memzero(out, HT_HASH_LEN);
	return rc;
}

/* The two public hash functions return void (the interface cannot fail short
 * of an allocation failure inside BoringSSL). Handing back zeros or garbage
 * as a MAC would be a silent protocol failure, so that case aborts. */
static void hmac_or_abort(const char *token, const char *label, const uint8_t *cb,
			  size_t cb_len, uint8_t out[HT_HASH_LEN])
{
	if (ht_hmac(token, label, cb, cb_len, out) < 0) {
		fprintf(stderr, "ht: HMAC-SHA-256 failed (out of memory)\n");
		abort();
	}
}

void ht_initiator_hash(const char *token, const uint8_t *cb, size_t cb_len, uint8_t out[HT_HASH_LEN])
{
	hmac_or_abort(token, "Initiator", cb, cb_len, out);
}

void ht_responder_hash(const char *token, const uint8_t *cb, size_t cb_len, uint8_t out[HT_HASH_LEN])
{
	hmac_or_abort(token, "Responder", cb, cb_len, out);
}

/* Recomputes the initiator hash and compares all HT_HASH_LEN bytes with
 * secret_eq(), whose time does not depend on where they differ. The expected
 * hash is what a client must prove it can produce, so it is wiped before
 * returning. An HMAC failure here is a refusal, not an abort. */
int ht_verify(const char *token, const uint8_t *cb, size_t cb_len, const uint8_t hash[HT_HASH_LEN])
{
	uint8_t expected[HT_HASH_LEN];
	int ok = 0;

	if (ht_hmac(token, "Initiator", cb, cb_len, expected) == 0)
		ok = secret_eq(expected, hash, HT_HASH_LEN);
	sodium_memzero(expected, sizeof(expected));
	return ok;
}

int ht_verify_sealed(const uint8_t *key, const uint8_t *sealed, const uint8_t *cb, size_t cb_len,
		     const uint8_t hash[HT_HASH_LEN], uint8_t resp[HT_HASH_LEN])
{
	char token[TOKEN_LEN + 1];
	/* No token, or one that does not open: compare against a random one
	 * all the same, so every failure costs what a wrong token costs. */
	int usable = sealed && token_open(key, sealed, token) == 0;
	if (!usable)
		token_new(token);
	int ok = ht_verify(token, cb, cb_len, hash) && usable;
	if (ok)
		ht_responder_hash(token, cb, cb_len, resp);
	sodium_memzero(token, sizeof(token));
	return ok;
}
