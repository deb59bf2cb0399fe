/* server/tls.c - BoringSSL on the ring: a BIO over our buffers, no socket I/O. */
#include "tether/tls.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "tether/metrics.h"
#include "tether/sbuf.h"

static BIO_METHOD *ring_bio_method;

/* BIO read: hand out what a stopped feed left (older), then what the
 * current recv buffer still holds. */
static int bio_read(BIO *b, char *out, int outlen)
{
	struct tls_io *io = BIO_get_data(b);
	BIO_clear_retry_flags(b);
	if (io->held.len) {
		size_t n = io->held.len < (size_t)outlen ? io->held.len : (size_t)outlen;
		memcpy(out, io->held.data, n);
		sbuf_consume(&io->held, n);
		return (int)n;
	}
	if (!io->rx_len) {
		BIO_set_retry_read(b);
		return -1;
	}
	size_t n = io->rx_len < (size_t)outlen ? io->rx_len : (size_t)outlen;
	memcpy(out, io->rx, n);
	io->rx += n;
	io->rx_len -= n;
	return (int)n;
}

/* BIO write: ciphertext goes straight onto the connection's write chain. */
static int bio_write(BIO *b, const char *in, int inlen)
{
	struct tls_io *io = BIO_get_data(b);
	BIO_clear_retry_flags(b);
	if (sbuf_append(io->tx, in, (size_t)inlen))
		return -1;
	return inlen;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	(void)b; (void)num; (void)ptr;
	return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int bio_create(BIO *b)
{
	BIO_set_init(b, 1);
	return 1;
}

/* ALPN (XEP-0368): accept xmpp-client; a client that offers ALPN without it
 * gets no_application_protocol. No ALPN at all is fine (STARTTLS clients). */
static int on_alpn(SSL *ssl, const uint8_t **out, uint8_t *outlen,
		   const uint8_t *in, unsigned inlen, void *arg)
{
	(void)ssl; (void)arg;
	static const char want[] = "xmpp-client";
	for (unsigned i = 0; i < inlen;) {
		unsigned n = in[i];
		if (i + 1 + n > inlen)
			break;
		if (n == sizeof(want) - 1 && !memcmp(in + i + 1, want, n)) {
			*out = in + i + 1;
			*outlen = (uint8_t)n;
			return SSL_TLSEXT_ERR_OK;
		}
		i += 1 + n;
	}
	return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/* The tls-server-end-point hash, one per SSL_CTX, in its ex_data. */
struct endpoint {
	size_t len;
	uint8_t hash[EVP_MAX_MD_SIZE];
};

static int endpoint_idx = -1;

static void endpoint_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int index, long argl,
			  void *argp)
{
	(void)parent, (void)ad, (void)index, (void)argl, (void)argp;
	free(ptr);
}

/* RFC 5929 §4.1: hash the certificate with its signature hash, but MD5 and
 * SHA-1 become SHA-256. */
static int attach_endpoint(SSL_CTX *ctx, X509 *cert)
{
	const EVP_MD *md = NULL;
	int nid = X509_get_signature_nid(cert), md_nid = NID_undef, pk_nid;
	if (OBJ_find_sigid_algs(nid, &md_nid, &pk_nid))
		md = EVP_get_digestbynid(md_nid);
	if (!md || md_nid == NID_md5 || md_nid == NID_sha1)
		md = EVP_sha256();
	struct endpoint *e = calloc(1, sizeof(*e));
	unsigned len = 0;
	if (!e || !X509_digest(cert, md, e->hash, &len) || !SSL_CTX_set_ex_data(ctx, endpoint_idx, e)) {
		free(e);
		return -1;
	}
	e->len = len;
	return 0;
}

static void init_once(void)
{
	ring_bio_method = BIO_meth_new(BIO_TYPE_SOURCE_SINK, "tether-ring");
	BIO_meth_set_read(ring_bio_method, bio_read);
	BIO_meth_set_write(ring_bio_method, bio_write);
	BIO_meth_set_ctrl(ring_bio_method, bio_ctrl);
	BIO_meth_set_create(ring_bio_method, bio_create);
	endpoint_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, endpoint_free);
}

static int tickets_shared; /* tls_tickets_enable() */

void tls_tickets_enable(void)
{
	tickets_shared = 1;
}

/* Counts each completed handshake, full or resumed (it runs inside
 * SSL_read on the connection's worker, so it counts in that worker's shard). */
static void on_info(const SSL *ssl, int where, int ret)
{
	(void)ret;
	if (where & SSL_CB_HANDSHAKE_DONE)
		metrics_inc(SSL_session_reused(ssl) ? M_TLS_RESUMED : M_TLS_FULL);
}

/* A new SSL_CTX for <cert> and <key>: TLS 1.2-1.3, no 0-RTT, ALPN. */
static SSL_CTX *build_ctx(const char *cert, const char *key, char *err, size_t errlen)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	pthread_once(&once, init_once);
	SSL_CTX *ctx = SSL_CTX_new(TLS_method());
	if (!ring_bio_method || endpoint_idx < 0 || !ctx)
		goto fail;
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
	/* 0-RTT data is replayable: never accept it (tls.md). */
	SSL_CTX_set_early_data_enabled(ctx, 0);
	SSL_CTX_set_alpn_select_cb(ctx, on_alpn, NULL);
	SSL_CTX_set_info_callback(ctx, on_info);
	/* No server-side session cache: tickets, whose keys a cluster shares
	 * (tls_tickets.c), or BoringSSL's own per process. */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	if (tickets_shared)
		tls_tickets_attach(ctx);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
		snprintf(err, errlen, "tls: cannot load certificate '%s'", cert);
		goto fail_msg;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
		snprintf(err, errlen, "tls: cannot load key '%s'", key);
		goto fail_msg;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		snprintf(err, errlen, "tls: key '%s' does not match certificate '%s'", key, cert);
		goto fail_msg;
	}
	if (attach_endpoint(ctx, SSL_CTX_get0_certificate(ctx))) {
		snprintf(err, errlen, "tls: cannot hash certificate '%s'", cert);
		goto fail_msg;
	}
	return ctx;
fail:
	snprintf(err, errlen, "tls: out of memory");
fail_msg:
	ERR_clear_error();
	SSL_CTX_free(ctx);
	return NULL;
}

int tls_ctx_init(struct tls_ctx *t, const char *cert, const char *key, char *err, size_t errlen)
{
	SSL_CTX *ctx = build_ctx(cert, key, err, errlen);
	atomic_store(&t->ctx, ctx);
	t->retired = NULL;
	return ctx ? 0 : -1;
}

int tls_ctx_reload(struct tls_ctx *t, const char *cert, const char *key, char *err, size_t errlen)
{
	SSL_CTX *ctx = build_ctx(cert, key, err, errlen);
	if (!ctx)
		return -1;
	SSL_CTX_free(t->retired);
	t->retired = atomic_exchange(&t->ctx, ctx);
	return 0;
}

size_t tls_cb_endpoint(SSL *ssl, const uint8_t **out)
{
	const struct endpoint *e = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), endpoint_idx);
	if (!e)
		return 0;
	*out = e->hash;
	return e->len;
}

void tls_ctx_deinit(struct tls_ctx *t)
{
	SSL_CTX_free(atomic_exchange(&t->ctx, NULL));
	SSL_CTX_free(t->retired);
	t->retired = NULL;
}

SSL *tls_new(struct tls_ctx *t, struct tls_io *io)
{
	SSL *ssl = SSL_new(atomic_load(&t->ctx));
	BIO *bio = BIO_new(ring_bio_method);
	if (!ssl || !bio) {
		SSL_free(ssl);
		BIO_free(bio);
		return NULL;
	}
	BIO_set_data(bio, io);
	SSL_set_bio(ssl, bio, bio); /* one BIO both ways; SSL owns it */
	SSL_set_accept_state(ssl);
	/* Idle connections hold no TLS read/write buffers (BoringSSL releases
	 * them anyway), and the handshake configuration (certificate, keys,
	 * callbacks copied per connection) is freed once the handshake is done. */
	SSL_set_mode(ssl, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE);
	SSL_set_shed_handshake_config(ssl, 1);
	return ssl;
}

enum tls_rc tls_drain(SSL *ssl, tls_plain_fn *fn, void *ud)
{
	char plain[16384];
	for (;;) {
		int n = SSL_read(ssl, plain, sizeof(plain));
		if (n > 0) {
			if (fn(ud, plain, (size_t)n))
				return TLS_STOPPED;
			continue;
		}
		switch (SSL_get_error(ssl, n)) {
		case SSL_ERROR_WANT_READ:
		case SSL_ERROR_WANT_WRITE:
			return TLS_OK;
		case SSL_ERROR_ZERO_RETURN:
			return TLS_CLOSED;
		default:
			ERR_clear_error();
			return TLS_FAILED;
		}
	}
}

enum tls_rc tls_feed(SSL *ssl, const uint8_t *data, size_t len, tls_plain_fn *fn, void *ud)
{
	struct tls_io *io = BIO_get_data(SSL_get_rbio(ssl));
	io->rx = data;
	io->rx_len = len;
	enum tls_rc rc = tls_drain(ssl, fn, ud);
	/* SSL_read pulls whole records; keep pulling until the BIO is empty
	 * (BoringSSL buffers internally). */
	while (rc == TLS_OK && io->rx_len)
		rc = tls_drain(ssl, fn, ud);
	/* Stopped with records not yet pulled: they outlive the recv buffer
	 * (which goes back to the kernel), for tls_drain() to resume with. */
	if (rc == TLS_STOPPED && io->rx_len && sbuf_append(&io->held, (const char *)io->rx, io->rx_len))
		rc = TLS_FAILED;
	io->rx = NULL;
	io->rx_len = 0;
	return rc;
}

int tls_write(SSL *ssl, const void *data, size_t len)
{
	const char *p = data;
	while (len) {
		int chunk = len > 16384 ? 16384 : (int)len;
		int n = SSL_write(ssl, p, chunk);
		if (n <= 0) {
			ERR_clear_error();
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

void tls_shutdown(SSL *ssl)
{
	if (SSL_is_init_finished(ssl))
		SSL_shutdown(ssl);
	ERR_clear_error();
}

size_t tls_cb_exporter(SSL *ssl, uint8_t out[32])
{
	static const char label[] = "EXPORTER-Channel-Binding";
	if (SSL_version(ssl) != TLS1_3_VERSION)
		return 0;
	if (SSL_export_keying_material(ssl, out, 32, label, sizeof(label) - 1, NULL, 0, 0) != 1)
		return 0;
	return 32;
}

size_t tls_cb_unique(SSL *ssl, uint8_t *out, size_t outlen)
{
	if (SSL_version(ssl) != TLS1_2_VERSION)
		return 0;
	/* The first Finished of the handshake: the client's, unless resumed. */
	if (SSL_session_reused(ssl))
		return SSL_get_finished(ssl, out, outlen);
	return SSL_get_peer_finished(ssl, out, outlen);
}

int tls_has_held(SSL *ssl)
{
	struct tls_io *io = BIO_get_data(SSL_get_rbio(ssl));
	return io->held.len || SSL_pending(ssl) > 0;
}

void tls_free(SSL *ssl)
{
	if (!ssl)
		return;
	struct tls_io *io = BIO_get_data(SSL_get_rbio(ssl));
	if (io)
		sbuf_free(&io->held);
	SSL_free(ssl);
}
