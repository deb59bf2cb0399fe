/* server/scram.c - SCRAM key derivation (RFC 5802 §3): SASLprep, PBKDF2, HMAC. */
#include "tether/scram.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/digest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sodium.h>
#include <stringprep.h>

/* Fills the StoredKey/ServerKey pair for one hash from <pw> (already
 * SASLprep'd). <sk>/<svk> are |H| bytes. Returns 0 or -EINVAL (BoringSSL
 * only fails on allocation failure or iterations == 0). */
static int derive_one(const EVP_MD *md, const char *pw, const uint8_t *salt, size_t salt_len,
		      uint32_t iterations, uint8_t *sk, uint8_t *svk)
{
	uint8_t salted[EVP_MAX_MD_SIZE], ckey[EVP_MAX_MD_SIZE];
	size_t hlen = EVP_MD_size(md);
	unsigned int outlen;
	int rc = -EINVAL;

	if (!PKCS5_PBKDF2_HMAC(pw, strlen(pw), salt, salt_len, iterations, md, hlen, salted))
		goto out;
	if (!HMAC(md, salted, hlen, (const uint8_t *)"Client Key", 10, ckey, &outlen) ||
	    !HMAC(md, salted, hlen, (const uint8_t *)"Server Key", 10, svk, &outlen))
		goto out;
	if (!EVP_Digest(ckey, hlen, sk, &outlen, md, NULL))
		goto out;
	rc = 0;
out:
	sodium_memzero(salted, sizeof(salted));
	sodium_memzero(ckey, sizeof(ckey));
	return rc;
}

int scram_creds_derive_salt(const char *password, const uint8_t *salt, size_t salt_len,
			    uint32_t iterations, struct user_creds *out)
{
	char *prepped = NULL;
	int rc = -EINVAL;

	memset(out, 0, sizeof(*out));
	if (!password || !salt || salt_len == 0 || salt_len > SCRAM_SALT_LEN || iterations == 0)
		return -EINVAL;
	/* Stored strings: unassigned code points are refused (RFC 4013 §2.5 via
	 * RFC 3454 §7), so a later Unicode version cannot change what they mean. */
	if (stringprep_profile(password, &prepped, "SASLprep", STRINGPREP_NO_UNASSIGNED) != STRINGPREP_OK)
		goto out;
	if (prepped[0] == 0)
		goto out;
	memcpy(out->salt, salt, salt_len);
	out->salt_len = (uint8_t)salt_len;
	out->iterations = iterations;
	if (derive_one(EVP_sha1(), prepped, salt, salt_len, iterations,
		       out->stored_key_sha1, out->server_key_sha1) ||
	    derive_one(EVP_sha256(), prepped, salt, salt_len, iterations,
		       out->stored_key_sha256, out->server_key_sha256))
		goto out;
	rc = 0;
out:
	if (prepped) {
		sodium_memzero(prepped, strlen(prepped));
		free(prepped);
	}
	if (rc)
		scram_creds_wipe(out);
	return rc;
}

int scram_creds_derive(const char *password, uint32_t iterations, struct user_creds *out)
{
	uint8_t salt[SCRAM_SALT_LEN];

	if (sodium_init() < 0)
		return -EINVAL;
	randombytes_buf(salt, sizeof(salt));
	return scram_creds_derive_salt(password, salt, sizeof(salt), iterations, out);
}

void scram_creds_wipe(struct user_creds *c)
{
	sodium_memzero(c, sizeof(*c));
}
