/* include/tether/transport.h - what protocol code gets from the connection under it; it never sees a socket. */
#ifndef TETHER_TRANSPORT_H
#define TETHER_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include "tether/netaddr.h"

struct store_handle;

#define TRANSPORT_TIMERS 2 /* timers a transport keeps for its protocol (0 and 1) */

/* What feeding plaintext to the protocol led to. */
enum tp_feed {
	TP_FEED_OK = 0,    /* input consumed */
	TP_FEED_STARTTLS,  /* <proceed/> sent: start TLS now, discard the rest */
	TP_FEED_CLOSED,    /* the stream is over: stop reading */
};

/* Every call takes the <io> the transport handed to the protocol's open
 * handler (worker.h). */
struct transport {
	/* Queue bytes for the peer. */
	void (*send)(void *io, const char *data, size_t len);
	/* Send what is queued, then close. */
	void (*close)(void *io);
	/* Arm timer <which> (< TRANSPORT_TIMERS) for <ms> (0 cancels); expiry
	 * calls the timeout handler. Works on a detached session too. After timer
	 * 0 (the one that can end a session) the transport checks whether the
	 * connection can be freed. */
	void (*set_timer)(void *io, int which, unsigned ms);
	/* The session no longer needs its slot (it was detached and has now
	 * ended or moved): the transport frees everything, later. */
	void (*release)(void *io);
	/* Channel binding data; see tls.h. <len> 0 = not available. */
	size_t (*cb_exporter)(void *io, uint8_t out[32]);
	size_t (*cb_unique)(void *io, uint8_t *out, size_t outlen);
	/* tls-server-end-point of the certificate this connection got:
	 * *<out> points at the hash while the connection lives. */
	size_t (*cb_endpoint)(void *io, const uint8_t **out);
	/* 1 once TLS is established. */
	int (*is_tls)(void *io);
	/* Bytes queued for the peer and not yet handed to the kernel. */
	size_t (*unsent)(void *io);
	/* Stop reading from the peer for about <ms> (flow control). */
	void (*pause_read)(void *io, unsigned ms);
	/* Stop reading (<on> 1) until called with 0: a store operation is
	 * pending. Bytes already received may still be fed meanwhile. */
	void (*park_read)(void *io, int on);
	/* The protocol freed memory it held for this stream: the worker may
	 * give freed pages back to the OS (rate-limited there). */
	void (*trim_memory)(void *io);
	/* The store handle of the loop this stream runs on: operations issued
	 * through it complete in that loop (store.h). NULL: none, use the
	 * store synchronously (tests). */
	struct store_handle *(*store)(void *io);
	/* "ip:port" of the peer, for logs. */
	const char *(*peer)(void *io);
	/* The peer's address alone, canonical text (IPv4-mapped IPv6 as
	 * IPv4): the key of per-address limits (limits.h). Written into <buf>
	 * (the connection keeps it only inside "ip:port"); returns <buf>, or
	 * NULL when there is none. May be NULL. */
	const char *(*peer_ip)(void *io, char buf[NETADDR_IP_MAX]);
	/* The stream authenticated (<authed> 1) or is unauthenticated again
	 * (0): the connection leaves or rejoins the pre-auth count. Idempotent.
	 * May be NULL. */
	void (*set_authed)(void *io, int authed);
};

#endif /* TETHER_TRANSPORT_H */
