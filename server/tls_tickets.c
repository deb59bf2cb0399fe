/* server/tls_tickets.c - TLS session ticket keys shared by the nodes of a cluster: a ring of three, used through BoringSSL's ticket key callback.
 *
 * HAProxy's scheme (CLUSTER.md): every node knows {next, current,
 * previous}; tickets are made with "current" and read with any of the
 * three, so a key reaches every node as "next" (decrypt only) before anyone
 * encrypts with it, and a ticket made just before a rotation still resumes
 * after it. A ticket under an older key than "current" is renewed (the
 * callback returns 2). The ring comes from the shared store
 * (store/redis_cluster.c) and lives in this process's memory only; until it
 * has come, a random ring of this process stands in (tickets then resume on
 * this node only, and not after the shared ring arrived). */
#include "tether/tls.h"

#include <pthread.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/ssl.h>
#include <sodium.h>

static pthread_rwlock_t lock = PTHREAD_RWLOCK_INITIALIZER;
static uint8_t ring[TLS_TICKET_RING][TLS_TICKET_KEY_LEN]; /* next, current, previous */
static int have_ring;      /* the shared ring came (tls_tickets_set) */

/* A key: 16 bytes of name, 16 of HMAC-SHA256 key, 16 of AES-128 key. */
#define NAME(k) (k)
#define HMAC_KEY(k) ((k) + 16)
#define AES_KEY(k) ((k) + 32)

void tls_tickets_set(const uint8_t keys[TLS_TICKET_RING][TLS_TICKET_KEY_LEN])
{
	pthread_rwlock_wrlock(&lock);
	memcpy(ring, keys, sizeof(ring));
	have_ring = 1;
	pthread_rwlock_unlock(&lock);
}

int tls_tickets_have(void)
{
	pthread_rwlock_rdlock(&lock);
	int h = have_ring;
	pthread_rwlock_unlock(&lock);
	return h;
}

static int encrypt(uint8_t *key_name, uint8_t *iv, EVP_CIPHER_CTX *cipher, HMAC_CTX *hmac)
{
	const uint8_t *k = ring[TLS_TICKET_CURRENT];
	memcpy(key_name, NAME(k), 16);
	randombytes_buf(iv, 16); /* AES-128-CBC's IV */
	if (!EVP_EncryptInit_ex(cipher, EVP_aes_128_cbc(), NULL, AES_KEY(k), iv) ||
	    !HMAC_Init_ex(hmac, HMAC_KEY(k), 16, EVP_sha256(), NULL))
		return -1;
	return 1;
}

static int decrypt(const uint8_t *key_name, const uint8_t *iv, EVP_CIPHER_CTX *cipher,
		   HMAC_CTX *hmac)
{
	for (int i = 0; i < TLS_TICKET_RING; i++) {
		const uint8_t *k = ring[i];
		if (sodium_memcmp(NAME(k), key_name, 16))
			continue;
		if (!HMAC_Init_ex(hmac, HMAC_KEY(k), 16, EVP_sha256(), NULL) ||
		    !EVP_DecryptInit_ex(cipher, EVP_aes_128_cbc(), NULL, AES_KEY(k), iv))
			return -1;
		return i == TLS_TICKET_CURRENT ? 1 : 2; /* 2: renew it under "current" */
	}
	return 0; /* not ours (another cluster, or older than the ring): full handshake */
}

static int on_ticket_key(SSL *ssl, uint8_t *key_name, uint8_t *iv, EVP_CIPHER_CTX *cipher,
			 HMAC_CTX *hmac, int enc)
{
	(void)ssl;
	pthread_rwlock_rdlock(&lock);
	int rc = enc ? encrypt(key_name, iv, cipher, hmac) : decrypt(key_name, iv, cipher, hmac);
	pthread_rwlock_unlock(&lock);
	return rc;
}

void tls_tickets_attach(SSL_CTX *ctx)
{
	pthread_rwlock_wrlock(&lock);
	if (!have_ring)
		randombytes_buf(ring, sizeof(ring)); /* this process's, until the shared one */
	pthread_rwlock_unlock(&lock);
	SSL_CTX_set_tlsext_ticket_key_cb(ctx, on_ticket_key);
}
