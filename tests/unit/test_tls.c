/* tests/unit/test_tls.c - the TLS layer over our buffers: a handshake with an
 * in-memory BoringSSL client, and a feed stopped by its reader that resumes
 * without losing ciphertext. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/bio.h>
#include <openssl/err.h>

#include "tether/sbuf.h"
#include "tether/tls.h"

static char dir[256], cert[300], key[300];

static int setup(void **state)
{
	(void)state;
	char cmd[1024];
	snprintf(dir, sizeof(dir), "/tmp/tether-tls-XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
	snprintf(key, sizeof(key), "%s/key.pem", dir);
	snprintf(cmd, sizeof(cmd), "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
		 "-nodes -days 1 -subj /CN=localhost -keyout '%s' -out '%s' >/dev/null 2>&1", key, cert);
	return system(cmd) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

struct peer {
	struct tls_ctx ctx;
	struct sbuf out;          /* server -> client ciphertext */
	struct tls_io io;
	SSL *srv;
	SSL_CTX *cctx;
	SSL *cli;
	BIO *c_in, *c_out;        /* client's read and write BIOs */
	struct sbuf plain;        /* what the server's reader got */
	int stop_after;           /* reader stops after this many chunks (0: never) */
	int chunks;
};

static int reader(void *ud, const char *data, size_t len)
{
	struct peer *p = ud;
	assert_int_equal(sbuf_append(&p->plain, data, len), 0);
	p->chunks++;
	return p->stop_after && p->chunks == p->stop_after;
}

/* Client bytes -> server feed; server bytes -> client. */
static enum tls_rc pump(struct peer *p)
{
	enum tls_rc rc = TLS_OK;
	char buf[65536];
	int n = BIO_read(p->c_out, buf, sizeof(buf));
	if (n > 0)
		rc = tls_feed(p->srv, (const uint8_t *)buf, (size_t)n, reader, p);
	if (p->out.len) {
		BIO_write(p->c_in, p->out.data, (int)p->out.len);
		sbuf_reset(&p->out);
	}
	return rc;
}

static void connect_pair(struct peer *p)
{
	char err[256] = "";
	memset(p, 0, sizeof(*p));
	if (tls_ctx_init(&p->ctx, cert, key, err, sizeof(err)))
		fail_msg("tls_ctx_init: %s", err);
	p->io.tx = &p->out;
	p->srv = tls_new(&p->ctx, &p->io);
	assert_non_null(p->srv);
	p->cctx = SSL_CTX_new(TLS_method());
	p->cli = SSL_new(p->cctx);
	p->c_in = BIO_new(BIO_s_mem());
	p->c_out = BIO_new(BIO_s_mem());
	SSL_set_bio(p->cli, p->c_in, p->c_out);
	SSL_set_connect_state(p->cli);
	for (int i = 0; i < 20 && !(SSL_is_init_finished(p->cli) && tls_established(p->srv)); i++) {
		SSL_do_handshake(p->cli);
		assert_int_equal(pump(p), TLS_OK);
	}
	assert_true(SSL_is_init_finished(p->cli));
	assert_true(tls_established(p->srv));
}

static void disconnect(struct peer *p)
{
	SSL_free(p->cli);
	SSL_CTX_free(p->cctx);
	tls_free(p->srv);
	tls_ctx_deinit(&p->ctx);
	sbuf_free(&p->out);
	sbuf_free(&p->plain);
}

/* Three records arrive in one recv; the reader stops after the first. The
 * rest must come out of tls_drain() later, in order, although the recv
 * buffer was reused in between. */
static void test_stopped_feed_keeps_ciphertext(void **state)
{
	(void)state;
	struct peer p;
	connect_pair(&p);
	assert_int_equal(SSL_write(p.cli, "one.", 4), 4);
	assert_int_equal(SSL_write(p.cli, "two.", 4), 4);
	assert_int_equal(SSL_write(p.cli, "three.", 6), 6);
	char buf[65536];
	int n = BIO_read(p.c_out, buf, sizeof(buf));
	assert_true(n > 0);
	p.stop_after = 1;
	assert_int_equal(tls_feed(p.srv, (const uint8_t *)buf, (size_t)n, reader, &p), TLS_STOPPED);
	memset(buf, 0xEE, sizeof(buf));   /* the recv buffer goes back to the kernel */
	assert_int_equal(p.plain.len, 4);
	assert_memory_equal(p.plain.data, "one.", 4);
	assert_true(tls_has_held(p.srv));

	p.stop_after = 0;
	assert_int_equal(tls_drain(p.srv, reader, &p), TLS_OK);
	assert_int_equal(p.plain.len, 14);
	assert_memory_equal(p.plain.data, "one.two.three.", 14);
	assert_false(tls_has_held(p.srv));

	/* Held bytes come before a later feed's: stop again, then feed more. */
	assert_int_equal(SSL_write(p.cli, "four.", 5), 5);
	assert_int_equal(SSL_write(p.cli, "five.", 5), 5);
	n = BIO_read(p.c_out, buf, sizeof(buf));
	p.chunks = 0;
	p.stop_after = 1;
	assert_int_equal(tls_feed(p.srv, (const uint8_t *)buf, (size_t)n, reader, &p), TLS_STOPPED);
	p.stop_after = 0;
	assert_int_equal(SSL_write(p.cli, "six.", 4), 4);
	n = BIO_read(p.c_out, buf, sizeof(buf));
	assert_int_equal(tls_feed(p.srv, (const uint8_t *)buf, (size_t)n, reader, &p), TLS_OK);
	assert_int_equal(p.plain.len, 28);
	assert_memory_equal(p.plain.data, "one.two.three.four.five.six.", 28);
	disconnect(&p);
}

/* A connection freed while ciphertext is held leaks nothing (ASan). */
static void test_free_with_held(void **state)
{
	(void)state;
	struct peer p;
	connect_pair(&p);
	assert_int_equal(SSL_write(p.cli, "a", 1), 1);
	assert_int_equal(SSL_write(p.cli, "b", 1), 1);
	char buf[4096];
	int n = BIO_read(p.c_out, buf, sizeof(buf));
	p.stop_after = 1;
	assert_int_equal(tls_feed(p.srv, (const uint8_t *)buf, (size_t)n, reader, &p), TLS_STOPPED);
	assert_true(tls_has_held(p.srv));
	disconnect(&p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_stopped_feed_keeps_ciphertext),
		cmocka_unit_test(test_free_with_held),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
