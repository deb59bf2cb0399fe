/* include/tether/conn.h - one client connection: recv, TLS, write chain, close. */
#ifndef TETHER_CONN_H
#define TETHER_CONN_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "tether/netaddr.h"
#include "tether/sbuf.h"
#include "tether/timer.h"
#include "tether/tls.h"
#include "tether/transport.h"

struct io_uring_cqe;
struct proxyproto_gate;
struct worker;

#define CONN_F_RX_ARMED   0x0002u /* a multishot recv is outstanding */
#define CONN_F_TX_BUSY    0x0004u /* a send is in flight */
#define CONN_F_CLOSING    0x0008u /* close once the output is sent */
#define CONN_F_SHUT       0x0010u /* socket shut down; waiting for CQEs */
#define CONN_F_FLUSH      0x0020u /* on the worker's flush list */
#define CONN_F_STARVED    0x0040u /* recv ended with -ENOBUFS */
#define CONN_F_LOST       0x0080u /* the protocol was told the transport is gone */
#define CONN_F_FD_CLOSED  0x0100u /* socket and TLS freed; only the session is held */
#define CONN_F_PAUSED     0x0200u /* reading stopped for flow control */
#define CONN_F_PARKED     0x0400u /* reading stopped: c2s waits for the store */
#define CONN_F_COUNTED    0x0800u /* counted in limits.h (pre-auth) until the socket closes */
#define CONN_F_IP_COUNTED 0x2000u /* ...and against max_conns_per_ip for its address */
#define CONN_F_AUTHED     0x1000u /* the protocol said it authenticated: out of the pre-auth count */
#define CONN_F_DIRECT_TLS 0x4000u /* accepted on the direct-TLS listener (metrics) */
#define CONN_F_PRE_TLS    0x8000u /* counted in tether_connection_states{state="pre_tls"} */

struct conn {
	struct worker *w;
	uint32_t slot, gen;
	int fd;
	unsigned flags;
	int inflight;            /* SQEs whose final CQE has not arrived */
	SSL *ssl;                /* NULL on plaintext (before STARTTLS) */
	struct tls_io tio;
	struct sbuf ptx;         /* plaintext waiting to be encrypted */
	struct sbuf wq;          /* bytes waiting to be sent */
	struct sbuf sending;     /* bytes of the send in flight */
	size_t sent;             /* of <sending>, already sent */
	struct conn *flush_next;
	struct conn *starved_next;
	void *proto;             /* the protocol's state (worker_handlers.open) */
	struct timer timer[TRANSPORT_TIMERS]; /* the protocol's timers */
	struct timer close_timer;/* bounds a graceful close */
	struct timer pause_timer;/* ends a flow-control pause */
	struct proxyproto_gate *pp; /* [c2s] proxy_protocol: until the header is read */
	/* "address:port" (netaddr_format): for logs, and the address alone,
	 * the key of per-address limits, is what comes before its last ':'
	 * (conn_peer_ip), so the address is not kept twice. */
	char peer[NETADDR_PEER_MAX];
};

/* Sets up a connection for accepted socket <fd> on <w> in slot <slot>.
 * <direct_tls>: the TLS handshake comes first. Returns NULL on OOM (the
 * caller closes <fd>). */
struct conn *conn_new(struct worker *w, int fd, uint32_t slot, uint32_t gen, int direct_tls);

/* Arms the multishot recv. */
void conn_arm_recv(struct conn *c);

/* CQE handlers. */
void conn_on_recv(struct conn *c, const struct io_uring_cqe *cqe);
void conn_on_send(struct conn *c, const struct io_uring_cqe *cqe);

/* Queues <len> bytes for the peer (encrypted when TLS is up). */
void conn_send(struct conn *c, const char *data, size_t len);

/* Moves queued output into sends; called by the worker at the end of a turn. */
void conn_flush(struct conn *c);

/* Graceful close: everything queued is sent (TLS close_notify appended),
 * then the socket is shut down; bounded by a 5 s timer. */
void conn_close(struct conn *c);

/* Immediate close: shuts the socket down now, drops pending output. */
void conn_abort(struct conn *c);

/* Frees <c> if it is shut down and no CQE is outstanding. Returns 1 if freed. */
int conn_maybe_free(struct conn *c);

#endif /* TETHER_CONN_H */
