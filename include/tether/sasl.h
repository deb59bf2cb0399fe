/* include/tether/sasl.h - SASL mechanisms, sans-I/O: bytes in, bytes out, a verdict. */
#ifndef TETHER_SASL_H
#define TETHER_SASL_H

#include <stddef.h>
#include <stdint.h>

#include "tether/scram.h"

struct sbuf;

enum sasl_mech {
	SASL_MECH_SCRAM_SHA_256_PLUS = 0,  /* listed in order of preference */
	SASL_MECH_SCRAM_SHA_256,
	SASL_MECH_SCRAM_SHA_1_PLUS,
	SASL_MECH_SCRAM_SHA_1,
	SASL_MECH_PLAIN,
	SASL_MECH_COUNT,
};

/* "SCRAM-SHA-256-PLUS" ... */
const char *sasl_mech_name(enum sasl_mech m);
/* Returns 0 and sets <out>, or -1 for an unknown name. */
int sasl_mech_parse(const char *name, enum sasl_mech *out);

/* RFC 6120 §6.5 failure conditions, as an X-macro so names cannot drift. */
#define SASL_CONDS(X) \
	X(SASL_C_ABORTED, "aborted") \
	X(SASL_C_ACCOUNT_DISABLED, "account-disabled") \
	X(SASL_C_CREDENTIALS_EXPIRED, "credentials-expired") \
	X(SASL_C_ENCRYPTION_REQUIRED, "encryption-required") \
	X(SASL_C_INCORRECT_ENCODING, "incorrect-encoding") \
	X(SASL_C_INVALID_AUTHZID, "invalid-authzid") \
	X(SASL_C_INVALID_MECHANISM, "invalid-mechanism") \
	X(SASL_C_MALFORMED_REQUEST, "malformed-request") \
	X(SASL_C_MECHANISM_TOO_WEAK, "mechanism-too-weak") \
	X(SASL_C_NOT_AUTHORIZED, "not-authorized") \
	X(SASL_C_TEMPORARY_AUTH_FAILURE, "temporary-auth-failure")

enum sasl_cond {
	SASL_C_NONE = 0,
#define X(e, s) e,
	SASL_CONDS(X)
#undef X
};

/* The element name of <c> ("not-authorized", ...). */
const char *sasl_cond_name(enum sasl_cond c);

enum sasl_rc {
	SASL_CONTINUE = 0, /* <out> holds a challenge; wait for a response */
	SASL_SUCCESS,      /* authenticated; <out> holds additional data (may be empty) */
	SASL_FAILURE,      /* *<cond> says why; the exchange is over */
	SASL_NEED_CREDS,   /* the step needs sasl_user()'s credentials and the
			    * environment has no get_creds: look them up, give
			    * them with sasl_set_creds(), then call sasl_step()
			    * again with the same message. <out> is untouched. */
};

/* Channel binding data of the TLS connection, filled by the caller. A
 * length of 0 means "not available on this connection". */
struct sasl_cb {
	const uint8_t *tls_exporter;        /* RFC 9266, TLS 1.3 only: 32 bytes */
	size_t tls_exporter_len;
	const uint8_t *tls_server_end_point; /* RFC 5929: hash of our certificate */
	size_t tls_server_end_point_len;
	const uint8_t *tls_unique;           /* RFC 5929, TLS 1.2 only */
	size_t tls_unique_len;
};

/* Where a mechanism gets what it needs. Read during every sasl_step(). */
struct sasl_env {
	const char *domain;     /* the served domain; the user is local@domain */
	int tls;                /* 1 if the stream is encrypted (PLAIN needs it) */
	int plus_offered;       /* 1 if -PLUS mechanisms were advertised: a
				 * client gs2 flag 'y' then means a downgrade → fail */
	struct sasl_cb cb;
	/* Looks up the prepared localpart <user>. Returns 0 and fills <out>,
	 * -ENOENT for an unknown user, other -errno for a backend failure
	 * (→ temporary-auth-failure). NULL: the caller looks users up itself,
	 * asynchronously (SASL_NEED_CREDS). */
	int (*get_creds)(void *ud, const char *user, struct user_creds *out);
	void *ud;
};

struct sasl;

/* Starts an exchange with mechanism <m>. <env> is copied, with the
 * channel-binding bytes it points to (exporter and unique up to the sizes
 * below; longer ones count as unavailable); tls_server_end_point and
 * domain must outlive the exchange. Returns NULL on OOM. */
#define SASL_CB_EXPORTER_MAX 32
#define SASL_CB_UNIQUE_MAX 64
struct sasl *sasl_new(enum sasl_mech m, const struct sasl_env *env);

/* Derives the key for unknown users' fake SCRAM salts from the server's
 * persistent <secret>, so they stay the same across restarts. Call once at
 * start, before any exchange; without it the key is random per process. */
void sasl_set_secret(const uint8_t secret[32]);

/* Feeds the client's message (raw bytes, already base64-decoded; the
 * initial response counts as the first message, possibly empty) and appends
 * the server's reply to <out>. Unknown users and wrong passwords both give
 * SASL_C_NOT_AUTHORIZED (SCRAM still sends a plausible challenge for
 * unknown users, so users cannot be enumerated). Secrets are compared in
 * constant time. Returns the verdict; on SASL_FAILURE *<cond> is set. */
enum sasl_rc sasl_step(struct sasl *s, const uint8_t *in, size_t inlen,
		       struct sbuf *out, enum sasl_cond *cond);

/* After SASL_NEED_CREDS: the prepared localpart to look up. */
const char *sasl_user(const struct sasl *s);

/* After SASL_NEED_CREDS: the lookup's result, as get_creds would return it
 * (<err> 0 and <creds>, or -ENOENT / -errno and NULL). <creds> is copied
 * (and wiped with the exchange); the caller keeps its own. The next
 * sasl_step() must get the same message again. */
void sasl_set_creds(struct sasl *s, int err, const struct user_creds *creds);

/* After SASL_SUCCESS: the authenticated, prepared localpart. */
const char *sasl_username(const struct sasl *s);

/* Test hook (added): makes SCRAM use <nonce> as the server nonce part
 * instead of 24 random bytes, so RFC 5802/7677 exchanges can be reproduced
 * bit-exactly. Call before the first sasl_step(). <nonce> is copied; it
 * must be 1..127 printable ASCII characters without ',' (else ignored).
 * Never call this outside tests. */
void sasl_test_set_nonce(struct sasl *s, const char *nonce);

/* Wipes and frees the exchange. NULL is fine. */
void sasl_free(struct sasl *s);

/* Base64 helpers (RFC 4648 §4, no line breaks) on libsodium. decode returns
 * 0, or -EINVAL for bad input; "=" decodes to zero bytes. */
int sasl_b64_encode(const uint8_t *in, size_t len, struct sbuf *out);
int sasl_b64_decode(const char *in, size_t len, struct sbuf *out);

#endif /* TETHER_SASL_H */
