/* server/c2s_sm.c - XEP-0198 stream management on a c2s stream: enable, acks,
 * detach, resume, and the end of a session with unacked stanzas.
 *
 * The session record and its queue live in the store; this stream is the
 * one writer while it owns the session (the store's epoch rejects writes
 * from an owner that was taken over). Writes go through the worker's store
 * handle, pipelined: none waits for the one before, and their completions
 * come back in order (store.h). Everything the client is sent once SM is
 * on goes through the queue and is written to the socket only once its
 * append completed, so retransmission after a resume is the queue replayed
 * from the client's h, and nothing the client saw is missing from it. The
 * inbound h the client is told (<a/>) waits for the write of that h. */
#include "c2s_priv.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "tether/deliver.h"
#include "tether/ht.h"
#include "tether/log.h"
#include "tether/metrics.h"
#include "tether/presence.h"
#include "tether/ratelimit.h"
#include "tether/store.h"
#include "tether/timer.h"
#include "tether/token.h"
#include "tether/worker.h"

static int attached(const struct c2s *s)
{
	return s->state == C2S_ACTIVE && !(s->flags & (C2S_F_DETACHED | C2S_F_GONE));
}

/* ---- writes ------------------------------------------------------------ */

/* A write of this session failed when the store carried it out. */
static void write_failed(struct c2s *s, int err)
{
	if (s->flags & C2S_F_GONE)
		return;
	if (err == -ESTALE) {
		/* Taken over meanwhile (before the new owner's notice came). */
		c2s_sm_moved(s);
		return;
	}
	static struct ratelimit_log rl;
	uint64_t skipped;
	if (ratelimit_log_due(&rl, timer_now_ms(), &skipped))
		log_warn("sm: %s: session write failed (%s; %llu more not logged)", s->full,
			 strerror(-err), (unsigned long long)skipped);
	if (attached(s))
		c2s_stream_fail(s, SE_INTERNAL_SERVER_ERROR, NULL);
}

/* Completion of create, ack, update and set_isr, with this stream as the
 * context (c2s_free cancels what is still in flight). */
static void on_written(void *ud, int err, const struct bus_addr *owner, const struct sm_entry *e)
{
	(void)owner; (void)e;
	if (err)
		write_failed(ud, err);
}

/* A create that took its resource from a session on another node: that
 * one ends with conflict (RFC 6120 §7.7.2.2: the newer bind wins; the
 * local router already did the same for this node's sessions). */
static void on_created(void *ud, int err, const struct bus_addr *owner, const struct sm_entry *e)
{
	struct c2s *s = ud;
	(void)e;
	if (err)
		write_failed(s, err);
	else if (owner && owner->node != BUS_NODE_SELF)
		bus_kick(s->w, owner, SE_CONFLICT);
}

/* Writes the record (h_in, presence, attachment) through. 0, or -ENOMEM
 * (nothing issued). */
static int write_record(struct c2s *s, store_write_fn *fn)
{
	return store_sm_update_async(c2s_store(s), &s->sm, fn, s) ? 0 : -ENOMEM;
}

/* ---- enable ------------------------------------------------------------ */

static void fail_el(struct sbuf *out, enum stanza_err cond)
{
	sbuf_printf(out, "<failed xmlns='" XMLNS_SM "'><%s xmlns='" XMLNS_STANZAS "'/></failed>",
		    stanza_err_name(cond));
}

/* <h> acknowledges more than was sent: the stream error of XEP-0198 §4,
 * then the stream ends and so does the session (it cannot be trusted). */
static int fail_h_too_high(struct c2s *s, uint32_t h)
{
	sbuf_reset(&s->out);
	sbuf_printf(&s->out, "<stream:error><undefined-condition xmlns='" XMLNS_STREAMS "'/>"
		    "<handled-count-too-high xmlns='" XMLNS_SM "' h='%u' send-count='%u'/>"
		    "<text xmlns='" XMLNS_STREAMS "' xml:lang='en'>You acknowledged %u stanzas, "
		    "but I only sent you %u so far.</text></stream:error>",
		    h, s->sm.c.out, h, s->sm.c.out);
	c2s_send_out(s);
	s->end_mode = C2S_END_SESSION;
	return c2s_stream_fail(s, SE_NONE, NULL); /* the error element is out already */
}

/* The <isr-enable/> inside <enable/> (XEP-0397): a fresh token, sealed
 * into the session record and pinned to the mechanism asked for. Appends
 * <isr-enabled/> to <out>; nothing if the mechanism is not offered here. */
static void isr_enable(struct c2s *s, struct xnode *ie, struct sbuf *out)
{
	enum ht_cb cb;
	char token[TOKEN_LEN + 1];
	uint8_t sealed[TOKEN_SEALED_LEN];
	if (!s->sm.max || ht_mech_parse(xnode_attr(ie, "mechanism"), &cb) || !c2s_ht_offered(s, cb))
		return;
	token_new(token);
	if (!token_seal(s->srv->token_key, token, sealed) &&
	    store_sm_set_isr_async(c2s_store(s), s->sm.id, s->sm.epoch, 1, (uint8_t)cb, sealed,
				   on_written, s)) {
		s->sm.has_isr = 1;
		s->sm.isr_mech = (uint8_t)cb;
		sbuf_printf(out, "<isr-enabled xmlns='" XMLNS_ISR "' token='%s'", token);
		if (s->srv->cfg.isr_location[0]) {
			sbuf_puts(out, " location='");
			sbuf_puts_esc(out, s->srv->cfg.isr_location);
			sbuf_puts(out, "'");
		}
		sbuf_puts(out, "/>");
	}
	sodium_memzero(token, sizeof(token));
}

int c2s_sm_enable(struct c2s *s, struct xnode *el, struct sbuf *out)
{
	const struct config *cfg = &s->srv->cfg;
	if (!(s->flags & C2S_F_BOUND) || (s->flags & C2S_F_SM)) {
		/* Before binding, or a second time (XEP-0198 example: <failed/>). */
		fail_el(out, STE_UNEXPECTED_REQUEST);
		return -1;
	}
	int resume = sm_parse_bool(xnode_attr(el, "resume")) == 1 && cfg->sm_max_resume > 0;
	memset(&s->sm, 0, sizeof(s->sm));
	sm_new_id(s->sm.id);
	s->sm.owner = s->self;
	s->sm.epoch = 1;
	s->sm.max = resume ? sm_grant_max(xnode_attr(el, "max"), cfg->sm_max_resume) : 0;
	s->sm.attached = 1;
	s->sm.available = (s->flags & C2S_F_AVAILABLE) != 0;
	s->sm.priority = s->priority;
	/* Answered at once: the writes that follow are pipelined behind the
	 * create, and if it fails the stream ends (write_failed) before the
	 * client was told any h. */
	if (!store_sm_create_async(c2s_store(s), &s->sm, s->bare, s->resource, on_created, s)) {
		fail_el(out, STE_INTERNAL_SERVER_ERROR);
		return -1;
	}
	s->flags |= C2S_F_SM;
	c2s_direct_enabled(s);
	presence_sm_save(s); /* what was set before <enable/>, for a resumption */
	sbuf_printf(out, "<enabled xmlns='" XMLNS_SM "' id='%s'", s->sm.id);
	if (resume) {
		sbuf_printf(out, " resume='true' max='%u'", s->sm.max);
		if (cfg->sm_location[0]) {
			sbuf_puts(out, " location='");
			sbuf_puts_esc(out, cfg->sm_location);
			sbuf_puts(out, "'");
		}
	}
	struct xnode *ie = xnode_child(el, XMLNS_ISR, "isr-enable");
	size_t mark = out->len;
	sbuf_puts(out, ">");
	size_t inner = out->len;
	if (ie)
		isr_enable(s, ie, out);
	if (out->len == inner) {
		out->len = mark; /* nothing inside: self-closing */
		sbuf_puts(out, "/>");
	} else {
		sbuf_puts(out, "</enabled>");
	}
	log_debug("sm: %s enabled id=%s resume=%d max=%u", s->full, s->sm.id, resume, s->sm.max);
	return 0;
}

static int do_enable(struct c2s *s, struct xnode *el)
{
	sbuf_reset(&s->out);
	if (s->state != C2S_ACTIVE) {
		fail_el(&s->out, STE_UNEXPECTED_REQUEST);
		c2s_send_out(s);
		return 0;
	}
	c2s_sm_enable(s, el, &s->out);
	c2s_send_out(s);
	return 0;
}

/* ---- the queue's sizes ----------------------------------------------------- */

/* The ring of stanza sizes and its capacity: inline in the c2s until it
 * outgrows C2S_QLEN_INLINE entries (qlen_cap 0), then on the heap. */
static uint32_t *qlen_ring(struct c2s *s, uint32_t *cap)
{
	*cap = s->qlen_cap ? s->qlen_cap : C2S_QLEN_INLINE;
	return s->qlen_cap ? s->qlen.heap : s->qlen.inl;
}

/* Records a stanza of <len> bytes joining the queue. 0 or -ENOMEM. */
static int qlen_push(struct c2s *s, size_t len)
{
	uint32_t cap, *r = qlen_ring(s, &cap);
	if (s->qlen_n == cap) {
		uint32_t ncap = s->qlen_cap ? s->qlen_cap * 2 : 16;
		uint32_t *q = malloc(ncap * sizeof(*q));
		if (!q)
			return -ENOMEM;
		for (uint32_t i = 0; i < s->qlen_n; i++)
			q[i] = r[(s->qlen_head + i) % cap];
		if (s->qlen_cap)
			free(s->qlen.heap);
		s->qlen.heap = r = q;
		s->qlen_cap = cap = ncap;
		s->qlen_head = 0;
	}
	r[(s->qlen_head + s->qlen_n) % cap] = (uint32_t)len;
	s->qlen_n++;
	s->qbytes += len;
	return 0;
}

/* Back to the inline ring, which the qlen_n sizes left fit in. */
static void qlen_shrink(struct c2s *s)
{
	uint32_t q[C2S_QLEN_INLINE], *heap = s->qlen.heap;
	for (uint32_t i = 0; i < s->qlen_n; i++)
		q[i] = heap[(s->qlen_head + i) % s->qlen_cap];
	free(heap);
	memcpy(s->qlen.inl, q, s->qlen_n * sizeof(*q));
	s->qlen_cap = s->qlen_head = 0;
}

/* The <n> oldest stanzas were acknowledged. */
static void qlen_pop(struct c2s *s, uint32_t n)
{
	uint32_t cap, *r = qlen_ring(s, &cap);
	for (; n && s->qlen_n; n--) {
		s->qbytes -= r[s->qlen_head];
		s->qlen_head = (s->qlen_head + 1) % cap;
		s->qlen_n--;
	}
	/* A stream whose queue drained keeps no heap ring: an idle session
	 * holds nothing for it (the next burst past the inline entries pays
	 * one malloc again). */
	if (s->qlen_cap && s->qlen_n <= C2S_QLEN_INLINE && (!s->qlen_n || s->qlen_cap > 64))
		qlen_shrink(s);
}

struct c2s_held_entry {
	struct c2s_held_entry *next;
	uint32_t seq;
	struct rmsg *msg;   /* one reference */
};

static void qlen_reset(struct c2s *s)
{
	if (s->qlen_cap)
		free(s->qlen.heap);
	s->qlen.heap = NULL;
	s->qlen_cap = s->qlen_head = s->qlen_n = 0;
	s->qbytes = 0;
}

/* Takes the first held entry off the list (the caller frees it). */
static struct c2s_held_entry *held_pop(struct c2s *s)
{
	struct c2s_held_entry *h = s->held_q;
	s->held_q = h->next;
	s->nheld--;
	return h;
}

static void held_free(struct c2s_held_entry *h)
{
	rmsg_unref(h->msg);
	free(h);
}

static void csi_drop(struct c2s *s);

void c2s_sm_free(struct c2s *s)
{
	qlen_reset(s);
	csi_drop(s);
	while (s->held_q)
		held_free(held_pop(s));
}

/* 1 if one more stanza of <len> bytes would pass a bound of the queue. */
static int queue_over(const struct c2s *s, size_t len)
{
	const struct config *cfg = &s->srv->cfg;
	return sm_unacked(&s->sm.c) + s->appends + 1 > cfg->sm_max_queue ||
	       s->qbytes + s->append_bytes + len > cfg->sm_max_queue_bytes;
}

/* ---- acks -------------------------------------------------------------- */

static void arm_ack_timer(struct c2s *s)
{
	const struct config *cfg = &s->srv->cfg;
	if (s->flags & C2S_F_FULL)
		s->tp->set_timer(s->io, C2S_TIMER_ACK, cfg->sm_ack_timeout * 1000u);
	else if (sm_unacked(&s->sm.c) > s->ncsi || s->held_q) /* not for what CSI defers */
		s->tp->set_timer(s->io, C2S_TIMER_ACK, cfg->sm_ack_after_ms);
	else
		s->tp->set_timer(s->io, C2S_TIMER_ACK, 0);
}

static void send_r(struct c2s *s)
{
	s->flags &= ~C2S_F_WANT_R;
	if ((s->flags & C2S_F_R_SENT) || !attached(s))
		return;
	c2s_send_str(s, "<r xmlns='" XMLNS_SM "'/>");
	s->flags |= C2S_F_R_SENT;
}

void c2s_sm_before_flush(struct c2s *s)
{
	send_r(s);
}

/* After the count of unacked stanzas changed: full? want an <r/>? */
static void after_count_change(struct c2s *s, int grew)
{
	const struct config *cfg = &s->srv->cfg;
	uint32_t unacked = sm_unacked(&s->sm.c);
	size_t max_bytes = cfg->sm_max_queue_bytes;
	unsigned was_full = s->flags & C2S_F_FULL;
	if (unacked >= cfg->sm_max_queue || s->qbytes >= max_bytes)
		s->flags |= C2S_F_FULL;
	else
		s->flags &= ~C2S_F_FULL;
	if (!attached(s))
		return;
	/* Flow control with hysteresis: senders back off above 3/4 of the
	 * bound and stop backing off below 1/2 (see c2s_route_stanza). */
	if (!(s->flags & C2S_F_CONGESTED) &&
	    (unacked >= cfg->sm_max_queue / 4 * 3 || s->qbytes >= max_bytes / 4 * 3)) {
		s->flags |= C2S_F_CONGESTED;
		router_set_congested(s->srv->router, s->bare, s->resource, &s->self, 1);
	} else if ((s->flags & C2S_F_CONGESTED) && unacked <= cfg->sm_max_queue / 2 &&
		   s->qbytes <= max_bytes / 2) {
		c2s_sm_uncongest(s);
	}
	/* One <r/> outstanding at a time; a burst gets one, sent at flush. */
	if (!(s->flags & C2S_F_R_SENT) && unacked - s->ncsi >= cfg->sm_ack_every)
		s->flags |= C2S_F_WANT_R;
	if ((s->flags & C2S_F_FULL) != was_full || (grew && unacked == 1) || !grew)
		arm_ack_timer(s);
}

static int on_ack(struct c2s *s, struct xnode *el)
{
	uint32_t h;
	if (sm_parse_u32(xnode_attr(el, "h"), &h))
		return c2s_stream_fail(s, SE_BAD_FORMAT, "<a/> needs a numeric h");
	if (sm_check_h(&s->sm.c, h))
		return fail_h_too_high(s, h);
	metrics_observe(H_SM_QUEUE, sm_unacked(&s->sm.c));
	if (!store_sm_ack_async(c2s_store(s), s->sm.id, s->sm.epoch, h, on_written, s))
		return c2s_stream_fail(s, SE_INTERNAL_SERVER_ERROR, NULL);
	qlen_pop(s, h - s->sm.c.acked);
	s->sm.c.acked = h;
	s->flags &= ~C2S_F_R_SENT;
	after_count_change(s, 0);
	return 0;
}

void c2s_sm_on_ack_timer(struct c2s *s)
{
	if (!attached(s) || !(s->flags & C2S_F_SM))
		return;
	if (s->held_q && ++s->held_ticks > 2) {
		/* A notice of another node's append never came (its inbox was
		 * unreachable): the queue has it. The client gets it by resuming,
		 * so the connection goes as if lost, the session stays. */
		log_warn("sm: %s: entry %u of the queue never announced: closing for a resume",
			 s->full, s->sm.c.out + 1);
		s->tp->close(s->io);
		c2s_on_lost(s);
		return;
	}
	if (s->flags & C2S_F_FULL) {
		/* A full queue left unacknowledged for ack_timeout: the client is
		 * not reading. Detach (resumable) or end; nothing queued is lost. */
		c2s_stream_fail(s, SE_POLICY_VIOLATION, "too many unacknowledged stanzas");
		return;
	}
	if (sm_unacked(&s->sm.c) > s->ncsi && !(s->flags & C2S_F_R_SENT))
		send_r(s);
	if (s->held_q)
		arm_ack_timer(s); /* a gap's ticks go on with nothing else to wait for */
}

/* ---- counting and queueing -------------------------------------------- */

static void send_a(struct c2s *s)
{
	sbuf_reset(&s->out);
	sbuf_printf(&s->out, "<a xmlns='" XMLNS_SM "' h='%u'/>", s->sm.c.h_in);
	c2s_send_out(s);
}

void c2s_sm_h_done(struct c2s *s)
{
	s->h_writes--;
	if (!s->h_writes && (s->flags & C2S_F_WANT_A)) {
		s->flags &= ~C2S_F_WANT_A;
		if (attached(s))
			send_a(s);
	}
}

static void on_h_written(void *ud, int err, const struct bus_addr *owner, const struct sm_entry *e)
{
	struct c2s *s = ud;
	(void)owner; (void)e;
	if (err) {
		s->h_writes--;
		write_failed(s, err);
		return;
	}
	c2s_sm_h_done(s);
}

void c2s_sm_im_changed(struct c2s *s, const char *im, size_t len)
{
	if (!(s->flags & C2S_F_SM) || (s->flags & C2S_F_GONE))
		return;
	s->sm.im = im; /* for this write only: s->sm never owns it */
	s->sm.im_len = len;
	int rc = write_record(s, on_written);
	s->sm.im = NULL;
	s->sm.im_len = 0;
	if (rc)
		c2s_stream_fail(s, SE_INTERNAL_SERVER_ERROR, NULL);
}

void c2s_sm_presence_changed(struct c2s *s)
{
	/* The record carries the presence into the shared directory, where
	 * other nodes pick the resources a bare-JID message goes to. */
	if ((s->flags & C2S_F_SM) && write_record(s, on_written))
		c2s_stream_fail(s, SE_INTERNAL_SERVER_ERROR, NULL);
}

int c2s_sm_count_in(struct c2s *s)
{
	if (!(s->flags & C2S_F_SM))
		return 0;
	/* Counted now, written once the stanza is routed (c2s_sm_h_write, once
	 * per feed or before an <a/>): after its deliveries on the store's
	 * ordered pipeline, or, on a shared store, in the very call that
	 * appends it to its recipients' queues (c2s_remote.c), so a crash
	 * between the two neither loses it nor has the client send it twice.
	 * The client hears of this h only once that write is done (h_writes). */
	s->sm.c.h_in++;
	s->flags |= C2S_F_H_DIRTY;
	return 0;
}

int c2s_sm_h_write(struct c2s *s)
{
	if (!(s->flags & C2S_F_H_DIRTY))
		return 0;
	s->flags &= ~C2S_F_H_DIRTY;
	if (!(s->flags & C2S_F_SM) || s->flags & C2S_F_GONE)
		return 0;
	if (write_record(s, on_h_written)) {
		c2s_stream_fail(s, SE_INTERNAL_SERVER_ERROR, NULL);
		return 1;
	}
	s->h_writes++;
	return 0;
}

/* ---- CSI: entries written later ------------------------------------------ */

#define CSI_DEFER_MAX 256 /* deferred entries before they are written anyway */

static void csi_drop(struct c2s *s)
{
	while (s->csi_q) {
		struct c2s_held_entry *e = s->csi_q;
		s->csi_q = e->next;
		held_free(e);
	}
	s->csi_last = NULL;
	s->ncsi = 0;
}

void c2s_sm_csi_flush(struct c2s *s)
{
	int send = attached(s);
	while (s->csi_q) {
		struct c2s_held_entry *e = s->csi_q;
		s->csi_q = e->next;
		if (send)
			s->tp->send(s->io, e->msg->data, e->msg->len);
		held_free(e);
	}
	s->csi_last = NULL;
	s->ncsi = 0;
}

/* Writes <m>, the queue's newest entry, or keeps it for later while the
 * client is inactive (XEP-0352): what the store appended did not pass
 * the CSI filter of c2s_deliver, and being numbered, it cannot be
 * dropped. Anything else written flushes what was kept first. Nothing
 * is lost if a deferral fails: the entry is in the queue (a resumption
 * retransmits it), and a deferred entry the client never saw is not
 * acknowledged. */
static void write_entry(struct c2s *s, const struct rmsg *m)
{
	unsigned cap = s->srv->cfg.sm_max_queue / 2;
	struct c2s_held_entry *e;
	if (presence_csi_defers(s, m) && s->ncsi < (cap < CSI_DEFER_MAX ? cap : CSI_DEFER_MAX) &&
	    (e = malloc(sizeof(*e)))) {
		e->next = NULL;
		e->seq = s->sm.c.out;
		e->msg = rmsg_ref((struct rmsg *)m);
		if (s->csi_last)
			s->csi_last->next = e;
		else
			s->csi_q = e;
		s->csi_last = e;
		s->ncsi++;
		return;
	}
	c2s_sm_csi_flush(s);
	s->tp->send(s->io, m->data, m->len);
}

/* The next entry of the queue is known: count it, send it if attached. */
static void advance(struct c2s *s, const struct rmsg *m)
{
	s->sm.c.out++;
	if (qlen_push(s, m->len))
		log_warn("sm: %s: out of memory counting queue bytes", s->full); /* counts low */
	if (attached(s))
		write_entry(s, m);
	after_count_change(s, 1);
}

/* The held entries that come next now, in order. */
static void flush_held(struct c2s *s)
{
	while (s->held_q && s->held_q->seq == s->sm.c.out + 1) {
		struct c2s_held_entry *h = held_pop(s);
		advance(s, h->msg);
		held_free(h);
	}
	if (!s->held_q)
		s->held_ticks = 0;
}

/* An entry beyond the next: it waits, in seq order, for the gap to close. */
static void hold(struct c2s *s, uint32_t seq, struct rmsg *m)
{
	struct c2s_held_entry **pp = &s->held_q, *h;
	while (*pp && (int32_t)((*pp)->seq - seq) < 0)
		pp = &(*pp)->next;
	if (*pp && (*pp)->seq == seq)
		return; /* known already (a notice repeated) */
	if (!(h = malloc(sizeof(*h)))) {
		log_warn("sm: %s: out of memory holding entry %u: the client gets it on resume",
			 s->full, seq);
		return;
	}
	h->seq = seq;
	h->msg = rmsg_ref(m);
	h->next = *pp;
	*pp = h;
	/* The first entry held starts the gap's ticks; later ones must not
	 * push them back, or a steady flow behind a lost notice would wait
	 * for ever. */
	if (!s->nheld++ && attached(s))
		s->tp->set_timer(s->io, C2S_TIMER_ACK, s->srv->cfg.sm_ack_after_ms);
}

#define HELD_MAX 4096 /* entries a stream keeps ahead of a gap, or before it adopts */

int c2s_sm_known(struct c2s *s, uint32_t seq, struct rmsg *m)
{
	int closing = s->state == C2S_CLOSING && !(s->flags & C2S_F_DETACHED);
	if (s->flags & C2S_F_GONE || closing || s->nheld >= HELD_MAX)
		return 0; /* the queue has it: whoever resumes the session gets it */
	if (!(s->flags & C2S_F_SM)) {
		/* The take that makes this stream the owner has happened, its
		 * reply has not come: the entry waits for adopt (drain_held). */
		hold(s, seq, m);
		return 1;
	}
	uint32_t ahead = seq - s->sm.c.out;
	if (!ahead || ahead > 0x80000000u)
		return 0; /* known already */
	if (ahead > 1) {
		hold(s, seq, m);
		return 1;
	}
	advance(s, m);
	flush_held(s);
	return 1;
}

/* An append came back: the stanza is in the queue, so now it may be sent. */
static void on_appended(void *ud, int err, const struct bus_addr *owner, const struct sm_entry *e)
{
	struct c2s *s = ud;
	s->appends--;
	s->append_bytes -= e->msg->len;
	if (!err) {
		c2s_sm_known(s, e->seq, e->msg);
		return;
	}
	rmsg_ref(e->msg);
	if (err == -ESTALE && owner) {
		/* Resumed elsewhere an instant ago: the new owner queues it. */
		bus_deliver(s->w, owner, e->msg);
	} else if (err == -ESTALE) {
		deliver_stale(s->w, s->srv->cfg.domain, &s->self, e->msg);
	} else {
		static struct ratelimit_log rl;
		uint64_t skipped;
		if (ratelimit_log_due(&rl, timer_now_ms(), &skipped))
			log_warn("sm: %s: queueing failed (%s; %llu more not logged); stanza handled "
				 "as undeliverable", s->full, strerror(-err), (unsigned long long)skipped);
		deliver_orphan(s->w, s->srv->cfg.domain, e->msg, e->stamp_ms);
	}
	write_failed(s, err);
}

void c2s_sm_emit(struct c2s *s, struct rmsg *m)
{
	if (s->flags & C2S_F_GONE) {
		deliver_stale(s->w, s->srv->cfg.domain, &s->self, m);
		return;
	}
	if ((s->flags & C2S_F_DETACHED) && queue_over(s, m->len)) {
		/* Nobody reads a detached queue: what does not fit goes back to
		 * its sender, and the session lives on (a sender must never be
		 * able to end someone else's session). */
		static struct ratelimit_log rl;
		uint64_t skipped;
		metrics_inc(M_LIMIT_SM_QUEUE);
		if (ratelimit_log_due(&rl, timer_now_ms(), &skipped))
			log_info("sm: %s: detached queue full (%u stanzas, %zu bytes): stanza returned "
				 "to its sender (%llu more not logged)", s->full, sm_unacked(&s->sm.c),
				 s->qbytes, (unsigned long long)skipped);
		deliver_bounce(s->w, s->srv->cfg.domain, m, STE_RESOURCE_CONSTRAINT);
		rmsg_unref(m);
		return;
	}
	struct sm_entry e = { .stamp_ms = sm_wall_ms(), .msg = m }; /* the store numbers it */
	if (!store_sm_append_async(c2s_store(s), s->sm.id, s->sm.epoch, &e, on_appended, s)) {
		log_warn("sm: %s: out of memory queueing; stanza handled as undeliverable", s->full);
		deliver_orphan(s->w, s->srv->cfg.domain, m, e.stamp_ms);
		return;
	}
	s->appends++;
	s->append_bytes += m->len;
	rmsg_unref(m); /* the operation holds its own reference */
}

/* ---- detach, expiry, end ----------------------------------------------- */

void c2s_sm_uncongest(struct c2s *s)
{
	if (!(s->flags & C2S_F_CONGESTED))
		return;
	s->flags &= ~C2S_F_CONGESTED;
	router_set_congested(s->srv->router, s->bare, s->resource, &s->self, 0);
}

int c2s_sm_detach(struct c2s *s)
{
	c2s_sm_uncongest(s);
	csi_drop(s); /* in the queue: a resumption retransmits them */
	s->sm.attached = 0;
	s->sm.expires_ms = timer_now_ms() + s->sm.max * 1000ull;
	if (write_record(s, on_written))
		return 0;
	s->flags |= C2S_F_DETACHED;
	s->flags &= ~(C2S_F_R_SENT | C2S_F_WANT_R);
	c2s_count_stage(s, 0);
	s->tp->set_timer(s->io, C2S_TIMER_ACK, 0);
	s->tp->set_timer(s->io, C2S_TIMER_MAIN, s->sm.max * 1000u);
	log_info("session detached jid=%s id=%s unacked=%u resumable for %us", s->full, s->sm.id,
		 sm_unacked(&s->sm.c), s->sm.max);
	return 1;
}

/* The store removed the session (or found it taken over: then <err> is
 * -ESTALE and there is nothing to do); what the client never acknowledged
 * goes to the other resources or back to its senders. <ud> is the worker:
 * the stream may be gone by now. */
static void on_destroyed(void *ud, int err, const struct sm_record *rec, const char *bare,
			 const char *resource, struct sm_entry *q, size_t n)
{
	struct worker *w = ud;
	(void)rec; (void)resource;
	if (err == -ENOMEM)
		log_error("sm: %s: out of memory ending a session: its unacked stanzas are lost",
			  bare ? bare : "?");
	for (size_t i = 0; i < n; i++)
		deliver_orphan(w, w->srv->cfg.domain, q[i].msg, q[i].stamp_ms);
	if (n)
		log_info("sm: %s: %zu unacked stanzas handled as undeliverable", bare ? bare : "?", n);
}

void c2s_sm_end(struct c2s *s)
{
	if (!(s->flags & C2S_F_SM))
		return;
	s->flags &= ~C2S_F_SM;
	c2s_sm_uncongest(s);
	/* Unbind first, so re-routed messages go to the other resources. */
	router_unbind(s->srv->router, s->bare, s->resource, &s->self);
	if (!store_sm_destroy_async(c2s_store(s), s->sm.id, s->sm.epoch, on_destroyed, s->w))
		log_error("sm: %s: out of memory ending session %s; it stays in the store until "
			  "restart", s->full, s->sm.id);
}

void c2s_sm_expired(struct c2s *s)
{
	if (s->flags & C2S_F_GONE)
		return;
	log_info("session expired jid=%s id=%s", s->full, s->sm.id);
	s->flags &= ~C2S_F_DETACHED;
	c2s_count_stage(s, 0);
	c2s_sm_end(s);
	c2s_end_presence(s);
	c2s_sm_leave(s);
}

void c2s_sm_leave(struct c2s *s)
{
	if (s->flags & C2S_F_GONE)
		return;
	s->flags &= ~C2S_F_DETACHED;
	s->flags |= C2S_F_GONE;
	c2s_count_stage(s, 0);
	s->tp->set_timer(s->io, C2S_TIMER_MAIN, 0);
	s->tp->release(s->io);
}

void c2s_sm_moved(struct c2s *s)
{
	if (s->flags & C2S_F_GONE)
		return;
	if (s->flags & C2S_F_DETACHED) {
		c2s_sm_leave(s);
		return;
	}
	/* Still open: the usual mobile case. The new stream has the session;
	 * this one ends with conflict, touching nothing (XEP-0198 §5 step 4). */
	s->end_mode = C2S_END_MOVED;
	s->flags |= C2S_F_GONE;
	c2s_stream_fail(s, SE_CONFLICT, NULL);
}

/* ---- resume ------------------------------------------------------------ */

struct take_ctx {
	struct sm_record rec;   /* rec.im is <im> */
	char resource[JID_PART_MAX + 1];
	char *im;               /* the session's IM state, copied (or NULL) */
	struct sm_entry *q;
	size_t n;
	int err;
	int seen;    /* -EACCES named a session of the account: <rec> is it */
};

/* Runs inside the store's critical section: copy, take references, leave. */
static void on_taken(void *ud, int err, const struct sm_record *rec, const char *resource,
		     const struct sm_entry *q, size_t n)
{
	struct take_ctx *t = ud;
	t->err = err;
	if (err == -EACCES && rec) {
		t->rec = *rec;
		t->seen = 1;
	}
	if (err)
		return;
	t->rec = *rec;
	t->rec.im = NULL;
	/* Out of memory for the IM state: resumed with less restored. */
	if (rec->im && rec->im_len && (t->im = malloc(rec->im_len))) {
		memcpy(t->im, rec->im, rec->im_len);
		t->rec.im = t->im;
	}
	snprintf(t->resource, sizeof(t->resource), "%s", resource);
	if (n && !(t->q = malloc(n * sizeof(*q)))) {
		t->err = -ENOMEM;
		return;
	}
	for (size_t i = 0; i < n; i++) {
		t->q[i] = q[i];
		rmsg_ref(q[i].msg);
	}
	t->n = n;
}

static void take_free(struct take_ctx *t)
{
	if (!t)
		return;
	free(t->im);
	free(t->q);
	free(t);
}

/* After a resumption's retransmission: entries announced while the take
 * was under way either came with it (numbers up to out: dropped) or follow
 * it, in order. */
static void drain_held(struct c2s *s)
{
	while (s->held_q && (uint32_t)(s->held_q->seq - s->sm.c.out) - 1 >= 0x80000000u)
		held_free(held_pop(s));
	flush_held(s);
	if (s->held_q && attached(s))
		s->tp->set_timer(s->io, C2S_TIMER_ACK, s->srv->cfg.sm_ack_after_ms);
}

void c2s_sm_resumed_el(struct c2s *s, struct sbuf *out)
{
	sbuf_printf(out, "<resumed xmlns='" XMLNS_SM "' previd='%s' h='%u'/>", s->sm.id, s->sm.c.h_in);
}

void c2s_sm_retransmit(struct c2s *s, struct sm_resume *r)
{
	struct take_ctx *t = r->t;
	/* Everything after the client's h, in order, stamped with when the
	 * server took it (XEP-0203); numbers stay as they were. */
	for (size_t i = 0; t && i < t->n; i++) {
		const struct sm_entry *e = &t->q[i];
		if ((uint32_t)(e->seq - r->h) - 1 < (uint32_t)(s->sm.c.out - r->h)) {
			sbuf_reset(&s->out);
			if (sm_add_delay(e->msg->data, e->msg->len, s->srv->cfg.domain, e->stamp_ms, &s->out))
				s->tp->send(s->io, e->msg->data, e->msg->len);
			else
				c2s_send_out(s);
		}
		rmsg_unref(e->msg);
	}
	sbuf_reset(&s->out);
	take_free(t);
	r->t = NULL;
	drain_held(s);
	after_count_change(s, 0);
}

/* The session taken over in <r> becomes this stream's: record, resource,
 * presence, the client's <h>; the previous stream lets go. Returns as
 * c2s_sm_resume. */
static int adopt(struct c2s *s, struct sm_resume *r, uint32_t h, struct sbuf *fail_out, int classic)
{
	struct take_ctx *t = r->t;
	struct bus_addr to = s->self;
	r->h = h;
	s->sm = t->rec;
	s->sm.im = NULL; /* t's: restored below */
	s->sm.im_len = 0;
	s->sm.owner = to;
	s->sm.attached = 1;
	s->flags |= C2S_F_SM;
	/* The previous stream lets go: conflict if open, freed if detached;
	 * a dead node holds nothing and is told nothing. */
	if (!bus_addr_eq(&t->rec.owner, &to)) {
		int other = t->rec.owner.node != BUS_NODE_SELF, dead = other && t->rec.owner_dead;
		metrics_inc(metrics_takeover_id(t->rec.attached, other, dead));
		if (!dead)
			bus_moved(s->w, &t->rec.owner);
	}
	if (c2s_bind_resource(s, t->resource, 0)) {
		c2s_sm_drop(r);
		c2s_stream_fail(s, SE_INTERNAL_SERVER_ERROR, NULL);
		return 1;
	}
	if (t->rec.available) {
		s->flags |= C2S_F_AVAILABLE;
		s->priority = t->rec.priority;
		router_set_presence(s->srv->router, s->bare, s->resource, 1, s->priority);
	}
	presence_sm_restore(s, t->rec.im, t->rec.im_len); /* carbons, CSI, last presence */
	if (sm_check_h(&s->sm.c, h)) {
		/* The client claims more than we sent: the session cannot be
		 * trusted; it ends as on expiry (sm.md §5 step 3). */
		c2s_sm_drop(r);
		s->end_mode = C2S_END_SESSION;
		if (classic) {
			c2s_set_state(s, C2S_ACTIVE);
			fail_h_too_high(s, h);
			return 1;
		}
		c2s_sm_end(s);
		c2s_end_presence(s);
		s->flags &= ~(C2S_F_BOUND | C2S_F_SM);
		s->end_mode = C2S_END_AUTO;
		fail_el(fail_out, STE_UNEXPECTED_REQUEST);
		return -1;
	}
	s->sm.c.acked = h;
	qlen_reset(s);
	for (size_t i = 0; i < t->n; i++)
		if ((uint32_t)(t->q[i].seq - h) - 1 < (uint32_t)(s->sm.c.out - h) &&
		    qlen_push(s, t->q[i].msg->len))
			break; /* out of memory: the byte count runs low, nothing is lost */
	if (!store_sm_ack_async(c2s_store(s), s->sm.id, s->sm.epoch, h, on_written, s) ||
	    write_record(s, on_written)) {
		c2s_stream_fail(s, SE_INTERNAL_SERVER_ERROR, NULL);
		c2s_sm_drop(r);
		return 1;
	}
	s->tp->set_timer(s->io, C2S_TIMER_MAIN, s->srv->cfg.idle_timeout * 1000u);
	c2s_set_state(s, C2S_ACTIVE);
	log_info("session resumed jid=%s worker=%u id=%s h=%u resent=%u", s->full, s->self.worker,
		 s->sm.id, h, s->sm.c.out - h);
	return 0;
}

/* What c2s_sm_isr_taken makes of the take in <t>. */
static int isr_result(struct c2s *s, const char *bare, const char *previd, struct take_ctx *t,
		      struct sm_resume *r, struct sbuf *fail_out)
{
	int err = t->err;
	if (!err) {
		r->t = t;
		return 0;
	}
	if (err == -EACCES && t->seen) {
		/* The right SM-ID with a wrong token: the store destroyed the
		 * token, and a detached session ends as on expiry (XEP-0397 §5). */
		if (!t->rec.attached)
			bus_kick(s->w, &t->rec.owner, SE_NONE);
		log_warn("c2s %s: ISR with a wrong token for %s: token destroyed", s->tp->peer(s->io), bare);
	} else if (err != -EACCES) {
		/* The token was right (and is spent); the session is gone. */
		log_info("sm: %s: ISR resume of %s failed", bare, previd);
		fail_el(fail_out, err == -ENOENT ? STE_ITEM_NOT_FOUND : STE_INTERNAL_SERVER_ERROR);
	}
	take_free(t);
	return err;
}

/* A take's result (a store callback's arguments, borrowed) copied for the
 * stream: a new take_ctx, or NULL when out of memory (*<lost> set if the
 * take had succeeded: it is dropped, the stream cannot adopt it). */
static struct take_ctx *take_copy(struct sm_resume *r, int err, const struct sm_record *rec,
				  const char *resource, const struct sm_entry *q, size_t n,
				  int *lost)
{
	memset(r, 0, sizeof(*r));
	r->other_node = rec && rec->owner.node != BUS_NODE_SELF;
	*lost = 0;
	struct take_ctx *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	on_taken(t, err, rec, resource, q, n);
	if (t->err == -ENOMEM && !err) {
		r->t = t;
		c2s_sm_drop(r);
		*lost = 1;
		return NULL;
	}
	return t;
}

int c2s_sm_isr_taken(struct c2s *s, const char *bare, const char *previd, int err, const struct sm_record *rec,
		     const char *resource, const struct sm_entry *q, size_t n,
		     struct sm_resume *r, struct sbuf *fail_out)
{
	int lost;
	struct take_ctx *t = take_copy(r, err, rec, resource, q, n, &lost);
	if (!t)
		return -ENOMEM;
	return isr_result(s, bare, previd, t, r, fail_out);
}

int c2s_sm_taken(struct c2s *s, const char *previd, int err, const struct sm_record *rec,
		 const char *resource, const struct sm_entry *q, size_t n,
		 struct sm_resume *r, struct sbuf *fail_out)
{
	int lost;
	struct take_ctx *t = take_copy(r, err, rec, resource, q, n, &lost);
	if (lost) {
		fail_el(fail_out, STE_INTERNAL_SERVER_ERROR);
		return -1;
	}
	if (!t || t->err) {
		/* Unknown, expired or another account's: one answer for all. */
		log_info("sm: %s: resume of %s failed", s->bare, previd);
		fail_el(fail_out, t ? STE_ITEM_NOT_FOUND : STE_INTERNAL_SERVER_ERROR);
		take_free(t);
		return -1;
	}
	r->t = t;
	return 0;
}

int c2s_sm_resume_taken(struct c2s *s, struct sm_resume *r, uint32_t h, struct sbuf *fail_out,
			int classic)
{
	return adopt(s, r, h, fail_out, classic);
}

void c2s_sm_drop(struct sm_resume *r)
{
	struct take_ctx *t = r->t;
	for (size_t i = 0; t && i < t->n; i++)
		rmsg_unref(t->q[i].msg);
	take_free(t);
	r->t = NULL;
}

/* Writes the answer to a classic <resume/> whose take is in <r> (or that
 * failed: rc < 0 with <failed/> in s->out). Returns as a state function. */
static int resume_reply(struct c2s *s, int rc, struct sm_resume *r)
{
	if (rc < 0) {
		c2s_send_out(s);
		return 0;
	}
	if (rc > 0)
		return 1;
	sbuf_reset(&s->out);
	c2s_sm_resumed_el(s, &s->out);
	c2s_send_out(s);
	c2s_sm_retransmit(s, r);
	return 0;
}

/* A classic <resume/> waiting for its take (store_sm_take_async): the
 * operation's context, freed by the callback or by the cancel when the
 * stream closes first (then the take never happened: store.h). */
struct resume_wait {
	struct c2s *s;
	uint32_t h;
	char previd[SM_ID_LEN + 1];
	uint64_t t0_us;      /* when the <resume/> came (metrics_now_us) */
};

static void on_resume_taken(void *ud, int err, const struct sm_record *rec, const char *resource,
			    const struct sm_entry *q, size_t n, const uint8_t *resp)
{
	struct resume_wait *x = ud;
	struct c2s *s = x->s;
	struct sm_resume r;
	(void)resp;
	c2s_op_done(s);
	/* The stream is still open: a closing one cancels the operation
	 * (c2s_set_state), so the take has not happened for a dead stream. */
	sbuf_reset(&s->out);
	int rc = c2s_sm_taken(s, x->previd, err, rec, resource, q, n, &r, &s->out);
	if (rc == 0)
		rc = adopt(s, &r, x->h, &s->out, 1);
	metrics_inc(metrics_resume_id(METRIC_RESUME_CLASSIC, rc == 0, r.other_node));
	if (rc == 0)
		metrics_observe_us(H_RESUME, metrics_now_us() - x->t0_us);
	free(x);
	resume_reply(s, rc, &r);
	c2s_unpark(s);
}

static void resume_wait_free(void *ctx)
{
	free(ctx);
}

static int do_resume(struct c2s *s, struct xnode *el)
{
	const char *previd = xnode_attr(el, "previd");
	uint32_t h;
	sbuf_reset(&s->out);
	if (s->state != C2S_WAIT_BIND || (s->flags & C2S_F_BOUND)) {
		fail_el(&s->out, STE_UNEXPECTED_REQUEST);
		c2s_send_out(s);
		return 0;
	}
	if (!previd || sm_parse_u32(xnode_attr(el, "h"), &h)) {
		fail_el(&s->out, STE_BAD_REQUEST);
		c2s_send_out(s);
		return 0;
	}
	if (strlen(previd) != SM_ID_LEN) {
		/* No id we issue looks like this: no lookup, and no 100 KB
		 * string in the log. */
		metrics_inc(metrics_resume_id(METRIC_RESUME_CLASSIC, 0, 0));
		fail_el(&s->out, STE_ITEM_NOT_FOUND);
		c2s_send_out(s);
		return 0;
	}
	/* Parsing stops here until the take completes (c2s_park_stop). */
	struct resume_wait *x = calloc(1, sizeof(*x));
	struct bus_addr to = s->self;
	struct store_op *op = NULL;
	if (x) {
		x->s = s;
		x->h = h;
		x->t0_us = metrics_now_us();
		memcpy(x->previd, previd, sizeof(x->previd));
		op = store_sm_take_async(c2s_store(s), previd, s->bare, &to, NULL, on_resume_taken, x);
	}
	if (!op) {
		free(x);
		return c2s_stream_fail(s, SE_INTERNAL_SERVER_ERROR, NULL);
	}
	c2s_park_stop(s, op, x, resume_wait_free);
	return 1;
}

/* ---- dispatch ---------------------------------------------------------- */

int c2s_sm_nonza(struct c2s *s, struct xnode *el)
{
	if (!strcmp(el->name, "enable"))
		return do_enable(s, el);
	if (!strcmp(el->name, "resume"))
		return do_resume(s, el);
	if (!strcmp(el->name, "r")) {
		if ((s->flags & C2S_F_SM) && attached(s)) {
			if (c2s_sm_h_write(s)) /* the stanzas before it, if not written yet */
				return 1;
			if (s->h_writes)
				s->flags |= C2S_F_WANT_A; /* answered once h is written */
			else
				send_a(s);
		}
		return 0; /* without SM: ignored (sm.md §3) */
	}
	if (!strcmp(el->name, "a"))
		return (s->flags & C2S_F_SM) ? on_ack(s, el) : 0;
	return c2s_stream_fail(s, SE_UNSUPPORTED_STANZA_TYPE, NULL);
}
