/* include/tether/tls.h - BoringSSL on the ring: a BIO over our buffers, no socket I/O. */
#ifndef TETHER_TLS_H
#define TETHER_TLS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "tether/sbuf.h"

/* The server's TLS context: certificate and key. New connections take the
 * current SSL_CTX; tls_ctx_reload() swaps in a new one while connections
 * made with the old one keep it (each SSL holds a reference). The
 * channel-binding hash of a certificate (RFC 5929 tls-server-end-point)
 * is computed once per SSL_CTX and travels with it. */
struct tls_ctx {
	_Atomic(SSL_CTX *) ctx;   /* what tls_new() uses; swapped by the main thread */
	SSL_CTX *retired;          /* the one before: freed at the next reload */
};

/* Where the BIO of one connection reads ciphertext from and writes it to.
 * <rx>/<rx_len> point into the recv buffer for the duration of a feed.
 * Zero-initialised, except <tx>. */
struct tls_io {
	const uint8_t *rx;
	size_t rx_len;
	struct sbuf *tx;
	/* private */
	struct sbuf held;   /* ciphertext not yet read when a feed stopped (TLS_STOPPED) */
};

/* Loads <cert> (PEM chain) and <key>; TLS 1.2-1.3 only, no 0-RTT, ALPN
 * "xmpp-client" accepted (a client offering ALPN without it is refused).
 * Returns 0 or -1 with a message in <err>. */
int tls_ctx_init(struct tls_ctx *t, const char *cert, const char *key, char *err, size_t errlen);
void tls_ctx_deinit(struct tls_ctx *t);

/* Loads <cert> and <key> again (SIGHUP) into a new SSL_CTX and makes it
 * the one new connections get; open connections keep theirs. On any error
 * the old context stays and -1 comes back with the reason in <err>. Main
 * thread only. The previous context is released at the following reload
 * (its connections hold their own references), so a worker that has just
 * loaded the pointer never sees it freed. Session tickets issued under the
 * old context do not resume under the new one (one full handshake). */
int tls_ctx_reload(struct tls_ctx *t, const char *cert, const char *key, char *err, size_t errlen);

/* A server-side SSL bound to <io>. NULL on OOM. */
SSL *tls_new(struct tls_ctx *t, struct tls_io *io);

/* Called with each chunk of decrypted application data; return non-zero to
 * stop reading (the remaining ciphertext is kept: see tls_feed). */
typedef int tls_plain_fn(void *ud, const char *data, size_t len);

enum tls_rc {
	TLS_OK = 0,     /* everything consumed */
	TLS_STOPPED,    /* <fn> returned non-zero */
	TLS_CLOSED,     /* peer sent close_notify */
	TLS_FAILED,     /* handshake or record failure: close the socket */
};

/* Feeds <len> bytes of ciphertext: drives the handshake, decrypts, hands
 * plaintext to <fn>. Ciphertext to send (handshake, alerts) is appended to
 * io->tx. On return every input byte is either pulled into the SSL or, when
 * <fn> stopped the feed (TLS_STOPPED), copied into the io's hold, so the
 * caller's buffer is free either way; tls_drain() (or the next feed) goes
 * on from there, in order. TLS_FAILED also when that copy fails (OOM). */
enum tls_rc tls_feed(SSL *ssl, const uint8_t *data, size_t len, tls_plain_fn *fn, void *ud);

/* Continues after TLS_STOPPED: the plaintext the SSL holds, then the held
 * ciphertext. Same results as tls_feed. */
enum tls_rc tls_drain(SSL *ssl, tls_plain_fn *fn, void *ud);

/* 1 if a stopped feed left plaintext or ciphertext to drain. */
int tls_has_held(SSL *ssl);

/* Encrypts <len> bytes into io->tx. Returns 0 or -1. */
int tls_write(SSL *ssl, const void *data, size_t len);

/* Appends a close_notify alert to io->tx. */
void tls_shutdown(SSL *ssl);

/* 1 once the handshake is complete. */
static inline int tls_established(SSL *ssl) { return SSL_is_init_finished(ssl); }

/* Channel binding data (RFC 9266 tls-exporter: 32 bytes, TLS 1.3 only;
 * RFC 5929 tls-unique: TLS 1.2 only). Return the length, or 0 if the
 * binding is not available on this connection. */
size_t tls_cb_exporter(SSL *ssl, uint8_t out[32]);
size_t tls_cb_unique(SSL *ssl, uint8_t *out, size_t outlen);

/* RFC 5929 tls-server-end-point of the certificate <ssl> was made with:
 * points *<out> at the hash (valid while <ssl> lives) and returns its
 * length, or 0. */
size_t tls_cb_endpoint(SSL *ssl, const uint8_t **out);

/* Frees an SSL, wiping its secrets. NULL is fine. */
void tls_free(SSL *ssl);

/* ---- session ticket keys shared by a cluster (tls_tickets.c) ------------ */

#define TLS_TICKET_KEY_LEN 48   /* 16 name, 16 HMAC-SHA256, 16 AES-128 */
#define TLS_TICKET_RING 3
enum { TLS_TICKET_NEXT = 0, TLS_TICKET_CURRENT = 1, TLS_TICKET_PREVIOUS = 2 };

/* Tickets of <ctx> are made and read with the ring (BoringSSL's ticket key
 * callback): a random ring of this process until tls_tickets_set. Every
 * context built from now on gets it too (tls_tickets_enable). */
void tls_tickets_attach(SSL_CTX *ctx);
/* Turns shared tickets on for contexts built after the call (main, before
 * tls_ctx_init, when the store is shared). */
void tls_tickets_enable(void);
/* The cluster's ring {next, current, previous} (thread-safe; copied). */
void tls_tickets_set(const uint8_t keys[TLS_TICKET_RING][TLS_TICKET_KEY_LEN]);
/* 1 once tls_tickets_set was called. */
int tls_tickets_have(void);

#endif /* TETHER_TLS_H */
