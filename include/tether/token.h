/* include/tether/token.h - secret tokens (FAST, ISR): generation, encryption at rest, comparison. */
#ifndef TETHER_TOKEN_H
#define TETHER_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#define TOKEN_LEN     43   /* 256 bits from libsodium, base64url without padding */
#define TOKEN_KEY_LEN 32   /* crypto_secretbox_KEYBYTES */
/* Sealed form: nonce (24) || secretbox(token) (TOKEN_LEN + 16). */
#define TOKEN_SEALED_LEN (24 + TOKEN_LEN + 16)

/* A fresh token: 256 bits from libsodium's CSPRNG as base64url text
 * (printable: it is used as the HMAC key in its UTF-8 form). */
void token_new(char out[TOKEN_LEN + 1]);

/* Encrypts <token> (TOKEN_LEN characters) under <key> with a random nonce.
 * Returns 0, or -EINVAL if <token> is not TOKEN_LEN characters. */
int token_seal(const uint8_t key[TOKEN_KEY_LEN], const char *token,
	       uint8_t out[TOKEN_SEALED_LEN]);

/* Decrypts a sealed token into <out> (NUL-terminated). Returns 0, or
 * -EBADMSG if it does not authenticate under <key>. The caller wipes <out>
 * (sodium_memzero) when done. */
int token_open(const uint8_t key[TOKEN_KEY_LEN], const uint8_t in[TOKEN_SEALED_LEN],
	       char out[TOKEN_LEN + 1]);

/* Compares two secrets of <len> bytes in time independent of their
 * contents. Returns 1 if equal. Every secret comparison in tether goes
 * through this (or ht_verify, which uses it). */
int secret_eq(const void *a, const void *b, size_t len);

/* Loads the server's token key from <path>, or creates it (32 random bytes,
 * mode 0600, written atomically) if the file does not exist. Returns 0, or
 * -errno with a message in <err> (a file of the wrong size is an error, not
 * silently replaced). */
int token_key_load(const char *path, uint8_t key[TOKEN_KEY_LEN], char *err, size_t errlen);

#endif /* TETHER_TOKEN_H */
