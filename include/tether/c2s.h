/* include/tether/c2s.h - the client-to-server stream state machine (RFC 6120). */
#ifndef TETHER_C2S_H
#define TETHER_C2S_H

#include <stddef.h>
#include <stdint.h>

#include "tether/errors.h"
#include "tether/transport.h"

struct bus_addr;
struct rmsg;
struct server;
struct worker;

enum c2s_timer {
	C2S_TIMER_MAIN = 0, /* preauth, idle, detached-session expiry */
	C2S_TIMER_ACK,      /* XEP-0198 ack request and ack timeout */
	C2S_TIMER_COUNT,
};
_Static_assert(C2S_TIMER_COUNT <= TRANSPORT_TIMERS, "the transport keeps too few timers");

/* Registers the c2s entry points (struct worker_handlers, worker.h) in
 * <srv>: every connection the workers accept is then a c2s stream. Call
 * before the workers start. */
void c2s_register(struct server *srv);

struct c2s;

/* A new stream on a fresh connection of worker <w>, reached through <tp>
 * with <io>; <self> is its session's address (bus.h). <tls> = 1 on the
 * direct-TLS port. NULL on OOM. The functions below are what
 * c2s_register() hands the worker; they are public for tests and fuzzers. */
struct c2s *c2s_new(struct server *srv, struct worker *w, const struct transport *tp,
		    void *io, const struct bus_addr *self, int tls);

/* Plaintext from the peer (any split). */
enum tp_feed c2s_feed(struct c2s *s, const char *data, size_t len);

/* The transport broke (EOF, reset, TLS failure) or closed. A resumable
 * session detaches (XEP-0198) and keeps its slot; otherwise it ends. */
void c2s_on_lost(struct c2s *s);

/* 1 while the session is detached and needs its slot kept. */
int c2s_is_held(const struct c2s *s);

/* The transport is about to send what is queued: last chance to add to it. */
void c2s_before_flush(struct c2s *s);
/* The transport's pause_read() is over: input held for flow control is
 * parsed now (c2s_flow.c). */
void c2s_flow_unpaused(struct c2s *s);

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
