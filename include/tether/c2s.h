/* include/tether/c2s.h - the client-to-server stream state machine (RFC 6120). */
#ifndef TETHER_C2S_H
#define TETHER_C2S_H

#include <stddef.h>
#include <stdint.h>

#include "tether/errors.h"

struct rmsg;
struct server;
struct worker;

/* What the state machine needs from its transport; it never sees a socket. */
struct c2s_transport {
	/* Queue bytes for the peer. */
	void (*send)(void *io, const char *data, size_t len);
	/* Send what is queued, then close. */
	void (*close)(void *io);
	/* Arm timer <which> (C2S_TIMER_*) for <ms> (0 cancels); expiry calls
	 * c2s_on_timeout(). Works on a detached session too. */
	void (*set_timer)(void *io, int which, unsigned ms);
	/* The session no longer needs its slot (it was detached and has now
	 * ended or moved): the transport frees everything, later. */
	void (*release)(void *io);
	/* Channel binding data; see tls.h. <len> 0 = not available. */
	size_t (*cb_exporter)(void *io, uint8_t out[32]);
	size_t (*cb_unique)(void *io, uint8_t *out, size_t outlen);
	/* 1 once TLS is established. */
	int (*is_tls)(void *io);
	/* Stop reading from the peer for about <ms> (flow control). */
	void (*pause_read)(void *io, unsigned ms);
	/* Stop reading (<on> 1) until called with 0: a store operation is
	 * pending. Bytes already received may still be fed meanwhile. */
	void (*park_read)(void *io, int on);
	/* "ip:port" of the peer, for logs. */
	const char *(*peer)(void *io);
};

enum c2s_timer {
	C2S_TIMER_MAIN = 0, /* preauth, idle, detached-session expiry */
	C2S_TIMER_ACK,      /* XEP-0198 ack request and ack timeout */
	C2S_TIMER_COUNT,
};

enum c2s_rc {
	C2S_OK = 0,    /* input consumed */
	C2S_STARTTLS,  /* <proceed/> sent: start TLS now, discard the rest */
	C2S_CLOSED,    /* the stream is over: stop reading */
};

struct c2s;

/* A new stream on a fresh connection. <slot>/<gen> identify it for the
 * router. <tls> = 1 on the direct-TLS port. NULL on OOM. */
struct c2s *c2s_new(struct server *srv, struct worker *w, const struct c2s_transport *tp,
		    void *io, uint32_t slot, uint32_t gen, int tls);

/* Plaintext from the peer (any split). */
enum c2s_rc c2s_feed(struct c2s *s, const char *data, size_t len);

/* The transport broke (EOF, reset, TLS failure) or closed. A resumable
 * session detaches (XEP-0198) and keeps its slot; otherwise it ends. */
void c2s_on_lost(struct c2s *s);

/* 1 while the session is detached and needs its slot kept. */
int c2s_is_held(const struct c2s *s);

/* The transport is about to send what is queued: last chance to add to it. */
void c2s_before_flush(struct c2s *s);

/* Timer <which> fired. */
void c2s_on_timeout(struct c2s *s, int which);

/* The SM session was resumed on another stream: this one lets go of it
 * (conflict to a still-open stream) without ending it. */
void c2s_moved(struct c2s *s);

/* A routed stanza for this session (also while detached: it is queued);
 * consumes one reference of <m>. */
void c2s_deliver(struct c2s *s, struct rmsg *m);

/* Ends the stream with stream error <cond> (conflict, system-shutdown). */
void c2s_kick(struct c2s *s, enum stream_err cond);

/* Frees the stream state (after c2s_on_lost or a close). */
void c2s_free(struct c2s *s);

#endif /* TETHER_C2S_H */
