/* include/tether/scram.h - SCRAM key derivation and the stored credentials of a user. */
#ifndef TETHER_SCRAM_H
#define TETHER_SCRAM_H

#include <stddef.h>
#include <stdint.h>

#define SCRAM_SALT_LEN 16
#define SCRAM_ITER_DEFAULT 4096

/* What the server keeps per user (RFC 5802 §5): never the password. One salt
 * and iteration count, keys for both hashes. */
struct user_creds {
	uint8_t salt[SCRAM_SALT_LEN];
	uint32_t iterations;
	uint8_t stored_key_sha1[20];
	uint8_t server_key_sha1[20];
	uint8_t stored_key_sha256[32];
	uint8_t server_key_sha256[32];
	/* Added: bytes of <salt> in use, 1..SCRAM_SALT_LEN; 0 means SCRAM_SALT_LEN,
	 * so a zeroed-then-filled record keeps working. Lets test vectors with
	 * shorter salts (RFC 5802: 12 bytes) be represented. */
	uint8_t salt_len;
};

/* The salt length in use in <c> (resolves the 0 default). */
static inline size_t scram_salt_len(const struct user_creds *c)
{ return c->salt_len && c->salt_len <= SCRAM_SALT_LEN ? c->salt_len : SCRAM_SALT_LEN; }

/* Derives <out> from <password> (SASLprep'd first; a password SASLprep
 * refuses is an error) with a fresh random salt from libsodium and
 * <iterations>. Returns 0, or -EINVAL. */
int scram_creds_derive(const char *password, uint32_t iterations, struct user_creds *out);

/* Same with a given salt (for test vectors). <salt_len> must be
 * 1..SCRAM_SALT_LEN; it is recorded in <out>->salt_len. */
int scram_creds_derive_salt(const char *password, const uint8_t *salt, size_t salt_len,
			    uint32_t iterations, struct user_creds *out);

/* Wipes <c> (sodium_memzero). */
void scram_creds_wipe(struct user_creds *c);

#endif /* TETHER_SCRAM_H */
