/* server/c2s_priv.h - c2s internals shared by c2s.c, c2s_route.c and c2s_sm.c only. */
#ifndef TETHER_C2S_PRIV_H
#define TETHER_C2S_PRIV_H

#include <stdint.h>

#include "tether/bus.h"
#include "tether/c2s.h"
#include "tether/jid.h"
#include "tether/metrics.h"
#include "tether/rmsg.h"
#include "tether/router.h"
#include "tether/sasl.h"
#include "tether/sbuf.h"
#include "tether/server.h"
#include "tether/store_sm.h"
#include "tether/xnode.h"

#define XMLNS_TLS     "urn:ietf:params:xml:ns:xmpp-tls"
#define XMLNS_SASL    "urn:ietf:params:xml:ns:xmpp-sasl"
#define XMLNS_BIND    "urn:ietf:params:xml:ns:xmpp-bind"
#define XMLNS_SASL_CB "urn:xmpp:sasl-cb:0"
#define XMLNS_SASL2   "urn:xmpp:sasl:2"
#define XMLNS_BIND2   "urn:xmpp:bind:0"
#define XMLNS_FAST    "urn:xmpp:fast:0"
#define XMLNS_ISR     "https://xmpp.org/extensions/isr/0"

enum c2s_state {
	C2S_WAIT_STREAM = 0, /* transport up (or restarted), no <stream:stream> yet */
	C2S_WAIT_STARTTLS,   /* plaintext; features sent; only <starttls/> accepted */
	C2S_WAIT_AUTH,       /* TLS up; <auth/> accepted */
	C2S_SASL,            /* SASL exchange running: <response/>, <abort/> */
	C2S_SASL2,           /* SASL2 exchange running: only <response/>, <abort/> */
	C2S_WAIT_BIND,       /* authenticated and restarted; bind, session or resume */
	C2S_ACTIVE,          /* bound; stanzas go to the router */
	C2S_CLOSING,         /* stream over; the session may live on (detached) */
	C2S_STATE_COUNT,
};

#define C2S_F_TLS         0x0001u /* the stream is encrypted */
#define C2S_F_AUTHED      0x0002u /* SASL succeeded */
#define C2S_F_HDR_SENT    0x0004u /* our response header went out on this stream */
#define C2S_F_RESTART     0x0008u /* reset the parser when the feed returns */
#define C2S_F_STARTTLS    0x0010u /* start TLS when the feed returns */
#define C2S_F_BOUND       0x0020u /* registered in the router */
#define C2S_F_AVAILABLE   0x0040u /* sent available presence */
#define C2S_F_PLUS_FAILED 0x0100u /* a -PLUS attempt failed before any proof */
#define C2S_F_SM          0x0200u /* stream management enabled */
#define C2S_F_R_SENT      0x0400u /* our <r/> awaits its <a/> */
#define C2S_F_WANT_R      0x0800u /* send <r/> before the next flush */
#define C2S_F_DETACHED    0x1000u /* no stream: the SM session waits for resumption */
#define C2S_F_GONE        0x2000u /* session ended or moved: nothing left to do */
#define C2S_F_FULL        0x4000u /* queue at its bound: ack_timeout running */
#define C2S_F_CONGESTED   0x8000u /* queue past its high-water mark: senders back off */

#define C2S_PAUSE_MS      20      /* how long a sender to a congested session stops reading */
#define C2S_PAUSE_MAX_MS  160     /* ...doubling up to this while it keeps finding it congested */
#define C2S_STORE_HIGH    1024    /* store operations in flight on a worker above which senders pause */
#define C2S_TRIM_MS       250     /* silence after which an established stream drops its parser */
#define C2S_F_TRIMMED     0x10000u /* parser and scratch freed until the next byte */
#define C2S_F_CLOSE_WAIT  0x20000u /* </stream:stream> came while parked: close once unparked */
#define C2S_PARKED_MAX    4096    /* elements that may wait for one store operation */
#define C2S_QLEN_INLINE   4       /* unacked stanza sizes kept in struct c2s itself */
#define C2S_F_BACKOFF     0x40000u /* a stanza being routed reached a congested session */
#define C2S_F_HOLD        0x80000u /* parsing stopped at the element that started s->op:
				    * the input after it waits in s->held */
#define C2S_HELD_MAX      (256u * 1024) /* bytes that may wait that way (reading is parked) */
#define C2S_HELD_BP_MAX   (4u << 20) /* ...while the store catches up or flow control holds
				      * the stream: what was in flight
				      * when reading stopped (the worker's receive buffers) */
#define C2S_F_BP          0x200000u /* parked for the store to catch up (store_backpressure) */
#define C2S_F_DIRECT      0x800000u /* bound without XEP-0198: in the shared directory (c2s_direct.c) */
#define C2S_F_H_DIRTY     0x400000u /* h_in counted a stanza, not yet written (c2s_sm_h_write) */
#define C2S_F_WANT_A      0x100000u /* an <r/> waits for the h writes in flight (h_writes) */
#define C2S_F_OOM         0x2000000u /* output could not be built: internal-server-error sent, closing */
#define C2S_F_LOST_WAIT   0x4000000u /* the connection is gone, the input it left waits for
				      * a store operation: processed first (c2s_on_lost), for
				      * at most [limits] lost_input_timeout per operation */
#define C2S_F_FLOW        0x1000000u /* HOLD for flow control: a stanza reached a congested
				      * session; resumes when the pause ends (c2s_flow.c) */
/* Two flags on one bit went unnoticed twice: each bit once, or no build. */
_Static_assert((C2S_F_TLS | C2S_F_AUTHED | C2S_F_HDR_SENT | C2S_F_RESTART | C2S_F_STARTTLS | C2S_F_BOUND | C2S_F_AVAILABLE | C2S_F_PLUS_FAILED | C2S_F_SM | C2S_F_R_SENT | C2S_F_WANT_R | C2S_F_DETACHED | C2S_F_GONE | C2S_F_FULL | C2S_F_CONGESTED | C2S_F_TRIMMED | C2S_F_CLOSE_WAIT | C2S_F_BACKOFF | C2S_F_HOLD | C2S_F_BP | C2S_F_DIRECT | C2S_F_H_DIRTY | C2S_F_WANT_A | C2S_F_OOM | C2S_F_FLOW | C2S_F_LOST_WAIT) ==
	       (C2S_F_TLS + C2S_F_AUTHED + C2S_F_HDR_SENT + C2S_F_RESTART + C2S_F_STARTTLS + C2S_F_BOUND + C2S_F_AVAILABLE + C2S_F_PLUS_FAILED + C2S_F_SM + C2S_F_R_SENT + C2S_F_WANT_R + C2S_F_DETACHED + C2S_F_GONE + C2S_F_FULL + C2S_F_CONGESTED + C2S_F_TRIMMED + C2S_F_CLOSE_WAIT + C2S_F_BACKOFF + C2S_F_HOLD + C2S_F_BP + C2S_F_DIRECT + C2S_F_H_DIRTY + C2S_F_WANT_A + C2S_F_OOM + C2S_F_FLOW + C2S_F_LOST_WAIT),
	       "two C2S_F_ flags share a bit");

/* How a stream ending affects its session. */
enum c2s_end {
	C2S_END_AUTO = 0,  /* detach if resumable, else end */
	C2S_END_SESSION,   /* end the session: unacked stanzas handled, unavailable sent */
	C2S_END_MOVED,     /* the session was resumed elsewhere: touch nothing */
};

struct c2s {
	struct server *srv;
	struct worker *w;
	const struct transport *tp;
	void *io;
	struct bus_addr self;         /* this stream's session, for the router and the bus */
	enum c2s_state state;
	unsigned flags;
	unsigned pause_ms;            /* the last flow-control pause (0: the last stanza found no congestion) */
	size_t flow_mark;             /* unsent bytes when the read deadline was armed (c2s_flow.c) */
	enum c2s_end end_mode;
	unsigned char gauge;          /* the enum c2s_gauge it is counted in (c2s_count_stage) */
	unsigned auth_failures;
	unsigned sasl_steps;          /* messages fed to the running exchange */
	enum sasl_mech mech;
	unsigned nparked;             /* elements in <parked> (below; here it fills a hole) */
	struct xstream *xs;
	struct sasl *sasl;            /* the exchange in progress (it holds its env) */
	char *bare;                   /* user@domain, once authenticated */
	char *full;                   /* user@domain/resource, once bound */
	char *resource;
	int priority;
	uint32_t stanza_since;        /* ms (truncated, odd) a stanza began arriving; 0 = none */
	struct sm_record sm;          /* valid with C2S_F_SM */
	unsigned h_writes;            /* h_in write-throughs in flight: <a h/> waits for them */
	unsigned appends;             /* own queue appends in flight */
	size_t append_bytes;          /* ...and their bytes (the queue's bounds count them) */
	/* Entries of the queue known out of order (another node appended one
	 * whose notice has not come yet), by seq: sent once the gap closes. */
	struct c2s_held_entry *held_q;
	unsigned nheld;
	int held_ticks;               /* ack timer ticks a gap has lasted */
	/* XEP-0352 with XEP-0198: queue entries counted but not written yet
	 * while the client is inactive (c2s_sm.c, presence_csi_defers) */
	struct c2s_held_entry *csi_q, *csi_last;
	unsigned ncsi;
	/* The size of each unacked stanza, oldest first (a ring), and their
	 * sum: the queue's byte bound ([sm] max_queue_bytes). The ring is
	 * <inl> while it fits there (qlen_cap 0: a session with little
	 * unacked holds no allocation, and an idle one none at all), else
	 * <heap> of qlen_cap entries (c2s_sm.c, qlen_*). */
	uint32_t qlen_cap, qlen_head, qlen_n;
	union {
		uint32_t *heap;
		uint32_t inl[C2S_QLEN_INLINE];
	} qlen;
	size_t qbytes;
	struct sasl2_req *req;        /* inline requests of a running SASL2 <authenticate/> */
	struct sbuf out;              /* scratch for building replies */
	/* A store operation in flight (store.h): the stream is parked until
	 * its callback runs. Elements parsed meanwhile wait in <parked>, in
	 * order, and reading is stopped. c2s_free cancels the operation and
	 * frees its context with <op_free>, so no callback outlives us. */
	struct store_op *op;
	void *op_ctx;
	void (*op_free)(void *ctx);
	struct c2s_parked *parked, **parked_tail;
	struct sbuf held;             /* with C2S_F_HOLD: input not parsed yet */
	struct c2s_im *im;            /* presence.c: roster interest, last and directed presence */
};

/* The worker's store handle: every store operation of a stream goes
 * through it, asynchronously. */
static inline struct store_handle *c2s_store(struct c2s *s)
{
	return s->tp->store(s->io);
}

/* c2s.c */
void c2s_send_str(struct c2s *s, const char *str);
void c2s_send_out(struct c2s *s);
int c2s_stream_fail(struct c2s *s, enum stream_err e, const char *text);
int c2s_is(const struct xnode *el, const char *ns, const char *name);
int c2s_is_stanza(const struct xnode *el);
void c2s_set_state(struct c2s *s, enum c2s_state st);
/* Sets or clears C2S_F_AUTHED, and with it the stream's limits: before
 * authentication the stanza limit is [limits] preauth_max_stanza_size. */
void c2s_set_authed(struct c2s *s, int authed);
/* Moves the stream between the stage gauges (pre-auth, bound and attached,
 * detached) after its state or flags changed; <ended>: it is being freed,
 * out of all of them. Called by c2s_set_state and where C2S_F_DETACHED
 * changes, so every gauge returns to its value when sessions end. */
void c2s_count_stage(struct c2s *s, int ended);
/* Binds <resource> to this stream in the router (kicking a same-named
 * session) and records the JID. Returns 0, or a stanza error condition. */
int c2s_bind_resource(struct c2s *s, const char *resource, int kick_old);
/* The session is over: unbind and broadcast unavailable. */
void c2s_end_presence(struct c2s *s);

/* The stream waits for store operation <op>, whose callback gets <ctx>
 * (freed with <ctx_free> if the operation is cancelled): input is parked. */
void c2s_park(struct c2s *s, struct store_op *op, void *ctx, void (*ctx_free)(void *));
/* Like c2s_park, for an element whose state function then returns 1 (stop
 * parsing): the input after it is kept unparsed (C2S_F_HOLD) and fed once
 * the operation has completed, under whatever the callback made of the
 * stream (a SASL success restarts it: those bytes start the new stream). */
void c2s_park_stop(struct c2s *s, struct store_op *op, void *ctx, void (*ctx_free)(void *));
/* From the operation's callback, first: it is no longer pending. */
void c2s_op_done(struct c2s *s);
/* From the operation's callback, last: what waited is processed, in
 * order, until the stream parks again; then reading resumes. */
void c2s_unpark(struct c2s *s);

/* c2s_route.c: stanzas from a bound client. */
void c2s_route_stanza(struct c2s *s, struct xnode *el);
/* Sends one stanza to the client (counted and queued when SM is on).
 * Consumes a reference. */
void c2s_emit(struct c2s *s, struct rmsg *m);
/* Emits the reply built in s->out as a stanza of <kind> from <from>. */
void c2s_emit_reply(struct c2s *s, enum rmsg_kind kind, const char *from, const char *type);

/* c2s.c: feeds the decoded client message <in> to s->sasl and hands the
 * verdict to <done> (with the mechanism's output, and the condition on
 * failure), which returns what a state function returns. When the
 * mechanism needs the user's credentials, they are looked up through the
 * stream's store handle: the stream parks (c2s_park_stop), c2s_sasl_step
 * returns 1, and <done> runs from the lookup's callback with the same
 * message replayed. Without a handle the lookup is synchronous. */
typedef int c2s_sasl_done_fn(struct c2s *s, enum sasl_rc rc, struct sbuf *out, enum sasl_cond cond);
int c2s_sasl_step(struct c2s *s, const uint8_t *in, size_t len, c2s_sasl_done_fn *done);

/* c2s.c: which mechanisms this stream offers. */
int c2s_mech_offered(struct c2s *s, enum sasl_mech m);
/* <mechanism/> for each SASL mechanism offered here, in preference order. */
void c2s_mech_list(struct c2s *s, struct sbuf *o);
int c2s_ht_offered(struct c2s *s, int cb);   /* enum ht_cb */
size_t c2s_cb_data(struct c2s *s, int cb, uint8_t *out, size_t max);
/* A SASL exchange with mechanism <m> on this stream: its environment
 * (domain, TLS, channel binding) is copied into it. NULL on OOM. */
struct sasl *c2s_sasl_new(struct c2s *s, enum sasl_mech m);
/* Counts a failed authentication (not aborts, not -PLUS probes); closes
 * the stream after max_auth_failures. Returns what c2s_stream_fail does. */
int c2s_count_auth_failure(struct c2s *s, enum sasl_cond cond, int probe);
void c2s_send_features(struct c2s *s);

/* c2s_sasl2.c: XEP-0388 SASL2 with Bind2, FAST and ISR inline. */
void c2s_sasl2_features(struct c2s *s, struct sbuf *o);
void c2s_isr_feature(struct c2s *s, struct sbuf *o);
int c2s_sasl2_authenticate(struct c2s *s, struct xnode *el);
int c2s_sasl2_step(struct c2s *s, struct xnode *el);   /* state C2S_SASL2 */
void c2s_sasl2_free(struct c2s *s);

/* c2s_sm.c: XEP-0198. */
struct take_ctx;
/* Counts <m> as handed to this stream's session (tether_stanzas_out_total). */
static inline void c2s_count_out(const struct rmsg *m)
{
	static const enum metric_id out_kind[] = {
		[RMSG_MESSAGE] = M_OUT_MESSAGE, [RMSG_PRESENCE] = M_OUT_PRESENCE, [RMSG_IQ] = M_OUT_IQ,
	};
	metrics_inc(out_kind[m->kind]);
}

struct sm_resume {
	struct take_ctx *t;  /* the queue as taken over */
	uint32_t h;          /* the client's h */
	int other_node;      /* the session's previous owner was on another node */
};
/* Writes <enabled/> (with <isr-enabled/> if asked) or <failed/> to <out>. */
int c2s_sm_enable(struct c2s *s, struct xnode *el, struct sbuf *out);
/* A take for a resumption (store_sm_take_async, without a proof) came
 * back: its callback's arguments in. 0: taken, <r> holds it (finish with
 * c2s_sm_resume_taken, or drop it); -1: <failed/> appended to <fail_out>
 * (unknown, expired or another account's: one answer for all). */
int c2s_sm_taken(struct c2s *s, const char *previd, int err, const struct sm_record *rec,
		 const char *resource, const struct sm_entry *q, size_t n,
		 struct sm_resume *r, struct sbuf *fail_out);
/* XEP-0397: a take with the ISR proof (store.h sm_take checks and
 * consumes the token in the same step) came back: its callback's
 * arguments in. 0: taken, <r> holds it; -EACCES: the token did not
 * authenticate (a real session of the account lost its token, and ends
 * if detached); -ENOENT: the token was right but the session can no
 * longer be resumed (<failed/> appended to <fail_out>); -ENOMEM. Nothing
 * of <r> to free unless 0. */
int c2s_sm_isr_taken(struct c2s *s, const char *bare, const char *previd, int err, const struct sm_record *rec,
		     const char *resource, const struct sm_entry *q, size_t n,
		     struct sm_resume *r, struct sbuf *fail_out);
/* Makes the session taken in <r> this authenticated, unbound stream's.
 * 0: done (the caller writes <resumed/> with c2s_sm_resumed_el, then calls
 * c2s_sm_retransmit); -1: <failed/> appended to <fail_out>; 1: the stream
 * was closed (<classic> h-too-high stream error). */
int c2s_sm_resume_taken(struct c2s *s, struct sm_resume *r, uint32_t h, struct sbuf *fail_out,
			int classic);
void c2s_sm_resumed_el(struct c2s *s, struct sbuf *out);
void c2s_sm_retransmit(struct c2s *s, struct sm_resume *r);
void c2s_sm_drop(struct sm_resume *r);
int c2s_sm_nonza(struct c2s *s, struct xnode *el);  /* an element in urn:xmpp:sm:3 */
int c2s_sm_count_in(struct c2s *s);                 /* before routing a client stanza: 0 or stop */
/* After routing it: writes the counted h_in through unless a delivery
 * carried it (c2s_remote.c clears C2S_F_H_DIRTY). 0, or 1 if the stream
 * failed. */
int c2s_sm_h_write(struct c2s *s);
void c2s_sm_emit(struct c2s *s, struct rmsg *m);
void c2s_sm_before_flush(struct c2s *s);
void c2s_sm_on_ack_timer(struct c2s *s);
/* The stream is gone; returns 1 if the session detached (lives on), 0 if
 * it cannot. (Resumed elsewhere meanwhile: the write finds out, and the
 * session lets go as on c2s_sm_moved.) */
int c2s_sm_detach(struct c2s *s);
/* Ends the SM session: the store removes it if this stream still owns it
 * (the epoch decides, when the write is carried out) and its unacked
 * stanzas are then handled as orphans. A resumption elsewhere that races
 * with the end wins in the store; this side's presence may still say
 * unavailable once (rare: both within one store round trip). */
void c2s_sm_end(struct c2s *s);
void c2s_sm_expired(struct c2s *s);
void c2s_sm_moved(struct c2s *s);
/* This node lets go of the (detached) session without ending it: it lives
 * on in the shared store, resumable on another node (drain). */
void c2s_sm_leave(struct c2s *s);
/* ---- c2s_flow.c: a stream without XEP-0198 that reads slowly -------- */

/* Sends <m> (consumed) to the bound stream, or back to its sender when
 * half of max_send_queue is still unread; marks the session congested
 * past a quarter. */
void c2s_flow_deliver(struct c2s *s, struct rmsg *m);
/* After routing a stanza: if it reached a congested session (BACKOFF),
 * this stream stops for a while, parsing included (the rest of its input
 * waits here, not in the receiver's queue), twice as long as last time if
 * the previous stanza did too (C2S_PAUSE_MS up to C2S_PAUSE_MAX_MS).
 * Returns 1 if it stopped. */
int c2s_flow_hold(struct c2s *s);
/* Output went out (before every flush): clears the marks once drained. */
void c2s_flow_drained(struct c2s *s);
/* The ack timer of a stream without XEP-0198: still over half unread
 * after ack_timeout ends the stream. */
void c2s_flow_timeout(struct c2s *s);

/* Clears the congestion mark (session detached, ended or moved). */
void c2s_sm_uncongest(struct c2s *s);
/* Frees what SM keeps per stream (c2s_free). */
void c2s_sm_free(struct c2s *s);
/* Entry <seq> with message <m> (borrowed) is in this session's queue: it
 * was appended by another node (its inbox says so) or by us. Sent in
 * order; a repeat is ignored. */
int c2s_sm_known(struct c2s *s, uint32_t seq, struct rmsg *m); /* 1: new to it */
/* A write the inbound h waits for is done (h_writes counted it): the
 * client's pending <r/> gets its <a/> once none is left. */
void c2s_sm_h_done(struct c2s *s);
/* The session's presence (available, priority) changed: written through. */
void c2s_sm_presence_changed(struct c2s *s);
/* XEP-0352 <active/>: the queue entries whose writing was deferred while
 * the client was inactive are written now, in order. */
void c2s_sm_csi_flush(struct c2s *s);
/* The session's IM state changed (presence.c): <len> bytes of <im>
 * (copied) are written through with the record, for a resumption to
 * restore. Nothing without SM. */
void c2s_sm_im_changed(struct c2s *s, const char *im, size_t len);

/* c2s_remote.c: with a store shared between nodes, appends message or iq
 * <m> to the queues of the sessions of <bare> (resource <resource>, or ""
 * for the bare JID) wherever they are (store_deliver_async), takes the
 * caller's reference and returns 1; what finds no session goes to this
 * node's router, else is bounced or dropped as RFC 6121 says. 0: no shared
 * store (the caller routes <m> itself, and keeps it). */
int c2s_remote_deliver(struct c2s *s, const char *bare, const char *resource, struct rmsg *m);

/* c2s_direct.c: a session bound without XEP-0198 in the shared
 * directory (no-ops without a shared store). bind: writes its entry
 * (kicks a session of the resource on another node); presence: its
 * available/priority changed; end: removes the entry if still its own;
 * enabled: XEP-0198 was enabled, the session's entry replaced it. */
void c2s_direct_bind(struct c2s *s);
void c2s_direct_presence(struct c2s *s);
void c2s_direct_end(struct c2s *s);
void c2s_direct_enabled(struct c2s *s);
/* c2s_direct.c: the recipients of the session's directed presence
 * (presence.c keeps them in memory) written through to a shared store, so
 * that the reaper can undo that presence if this node dies (store.h,
 * store_dpres_async): <jid> added or removed (<add> 0), or all cleared.
 * No-ops without a shared store, or before the session is in it. */
void c2s_direct_directed(struct c2s *s, const char *jid, int add);
void c2s_direct_undirected(struct c2s *s);

/* c2s_limits.c: 1 if the authentication attempt <el> (SASL <auth/> or
 * SASL2 <authenticate/>) must be refused now with temporary-auth-failure,
 * before any password or token is checked (limits.h). */
int c2s_auth_refused(struct c2s *s, struct xnode *el);

#endif /* TETHER_C2S_PRIV_H */
