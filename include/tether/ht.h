/* include/tether/ht.h - the HT-SHA-256-* SASL mechanisms (draft-schmaus-kitten-sasl-ht-09), sans-I/O. */
#ifndef TETHER_HT_H
#define TETHER_HT_H

#include <stddef.h>
#include <stdint.h>

#define HT_HASH_LEN 32   /* SHA-256 */

/* Channel-binding variants. */
enum ht_cb {
	HT_NONE = 0,  /* HT-SHA-256-NONE: no channel binding */
	HT_ENDP,      /* HT-SHA-256-ENDP: tls-server-end-point */
	HT_EXPR,      /* HT-SHA-256-EXPR: tls-exporter (TLS 1.3) */
	HT_UNIQ,      /* HT-SHA-256-UNIQ: tls-unique (TLS 1.2) */
	HT_CB_COUNT,
};

/* "HT-SHA-256-NONE" ... */
const char *ht_mech_name(enum ht_cb cb);
/* Returns 0 and sets <out> for an HT-SHA-256-* name, -1 otherwise. */
int ht_mech_parse(const char *name, enum ht_cb *out);

/* Splits an initiator message "authcid NUL hashed-token" at the first NUL:
 * <authcid> gets a NUL-terminated copy (at most <authcid_max> - 1 bytes,
 * non-empty), <hash> the HT_HASH_LEN bytes after it. Returns 0, or -EINVAL
 * if there is no NUL, the name is empty or too long, or the rest is not
 * exactly HT_HASH_LEN bytes. */
int ht_parse_initiator(const uint8_t *msg, size_t len, char *authcid, size_t authcid_max,
		       uint8_t hash[HT_HASH_LEN]);

/* HMAC-SHA-256(token, "Initiator" || cb) and HMAC-SHA-256(token, "Responder" || cb).
 * <token> is the token string exactly as issued (its UTF-8 octets are the key). */
void ht_initiator_hash(const char *token, const uint8_t *cb, size_t cb_len, uint8_t out[HT_HASH_LEN]);
void ht_responder_hash(const char *token, const uint8_t *cb, size_t cb_len, uint8_t out[HT_HASH_LEN]);

/* Checks a received initiator hash against <token> in constant time
 * (independent of where the bytes differ). Returns 1 if it matches. */
int ht_verify(const char *token, const uint8_t *cb, size_t cb_len, const uint8_t hash[HT_HASH_LEN]);

/* Checks <hash> against the sealed token <sealed> (token.h, opened with the
 * TOKEN_KEY_LEN bytes of <key>) and, on a match, writes the responder hash
 * into <resp>. <sealed> NULL (no token) takes the same path as a wrong
 * token: the comparison runs against a random token, so unknown session,
 * no token and wrong token cost the same. The opened token is wiped.
 * Returns 1 on a match, 0 otherwise. */
int ht_verify_sealed(const uint8_t *key, const uint8_t *sealed, const uint8_t *cb, size_t cb_len,
		     const uint8_t hash[HT_HASH_LEN], uint8_t resp[HT_HASH_LEN]);

#endif /* TETHER_HT_H */
