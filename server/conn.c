/* server/conn.c - one client connection: recv, TLS, write chain, close.
 *
 * Data path: a multishot recv CQE lends us a provided buffer; its bytes go
 * through TLS (when up) into the protocol's feed handler (worker.h) and the
 * buffer is returned before the handler ends, so an idle connection holds
 * no read buffer. Output is queued as plaintext (ptx), encrypted in one go
 * per loop turn into the write chain (wq), and sent with at most one send
 * in flight. */
#include "tether/conn.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <liburing.h>

#include "tether/bus.h"
#include "tether/limits.h"
#include "tether/log.h"
#include "tether/metrics.h"
#include "tether/netaddr.h"
#include "tether/proxyproto.h"
#include "tether/worker.h"

#define CLOSE_GRACE_MS 5000 /* how long a graceful close may wait for the peer to read */

static void tp_send(void *io, const char *data, size_t len) { conn_send(io, data, len); }
static void tp_close(void *io) { conn_close(io); }

static size_t tp_unsent(void *io)
{
	const struct conn *c = io;
	return c->ptx.len + c->wq.len + c->sending.len - c->sent;
}

static const struct worker_handlers *handlers_of(const struct conn *c)
{
	return c->w->srv->handlers;
}

/* Timer 0 may end the session (preauth, idle, expiry of a detached one):
 * the connection may be freeable afterwards. */
static void on_timer0(struct timer *t)
{
	struct conn *c = (struct conn *)((char *)t - offsetof(struct conn, timer[0]));
	handlers_of(c)->timeout(c->proto, 0);
	conn_maybe_free(c);
}

static void on_timer1(struct timer *t)
{
	struct conn *c = (struct conn *)((char *)t - offsetof(struct conn, timer[1]));
	handlers_of(c)->timeout(c->proto, 1);
}

static void tp_set_timer(void *io, int which, unsigned ms)
{
	struct conn *c = io;
	if (ms)
		timer_arm(&c->w->wheel, &c->timer[which], ms, which == 0 ? on_timer0 : on_timer1);
	else
		timer_cancel(&c->timer[which]);
}

static void on_pause_timer(struct timer *t)
{
	struct conn *c = (struct conn *)((char *)t - offsetof(struct conn, pause_timer));
	c->flags &= ~CONN_F_PAUSED;
	handlers_of(c)->unpaused(c->proto);
	conn_arm_recv(c);
	conn_maybe_free(c); /* what was held may have ended the stream */
}

/* Flow control: stop reading, so the peer's TCP window closes, for <ms>.
 * A fixed short pause and not a wake-up from the receiver, so two clients
 * flooding each other can never wait on each other's acks for ever. */
static void tp_pause_read(void *io, unsigned ms)
{
	struct conn *c = io;
	if (c->flags & (CONN_F_PAUSED | CONN_F_SHUT))
		return;
	c->flags |= CONN_F_PAUSED;
	if (c->flags & CONN_F_RX_ARMED) {
		struct io_uring_sqe *sqe = worker_sqe(c->w);
		io_uring_prep_cancel64(sqe, ud_pack(OP_RECV, c->gen, c->slot), 0);
		io_uring_sqe_set_data64(sqe, ud_pack(OP_IGNORE, 0, 0));
	}
	timer_arm(&c->w->wheel, &c->pause_timer, ms, on_pause_timer);
}

/* c2s waits for the store (<on>) or no longer does: no recv is armed
 * meanwhile. Apart from the flow-control pause, which keeps its own timer. */
static void tp_park_read(void *io, int on)
{
	struct conn *c = io;
	if (!on) {
		c->flags &= ~CONN_F_PARKED;
		if (!(c->flags & CONN_F_STARVED)) /* else rearm_starved() does it */
			conn_arm_recv(c);
		return;
	}
	if (c->flags & (CONN_F_PARKED | CONN_F_SHUT))
		return;
	c->flags |= CONN_F_PARKED;
	if (c->flags & CONN_F_RX_ARMED) {
		struct io_uring_sqe *sqe = worker_sqe(c->w);
		io_uring_prep_cancel64(sqe, ud_pack(OP_RECV, c->gen, c->slot), 0);
		io_uring_sqe_set_data64(sqe, ud_pack(OP_IGNORE, 0, 0));
	}
}

/* The held session is done: free the holder at the end of this turn. */
static void tp_release(void *io)
{
	struct conn *c = io;
	worker_want_flush(c->w, c);
}

static void tp_trim_memory(void *io)
{
	struct conn *c = io;
	worker_want_trim(c->w);
}

static struct store_handle *tp_store(void *io)
{
	struct conn *c = io;
	return c->w->sh;
}

static size_t tp_cb_exporter(void *io, uint8_t out[32])
{
	struct conn *c = io;
	return c->ssl ? tls_cb_exporter(c->ssl, out) : 0;
}

static size_t tp_cb_endpoint(void *io, const uint8_t **out)
{
	struct conn *c = io;
	return c->ssl ? tls_cb_endpoint(c->ssl, out) : 0;
}

static size_t tp_cb_unique(void *io, uint8_t *out, size_t outlen)
{
	struct conn *c = io;
	return c->ssl ? tls_cb_unique(c->ssl, out, outlen) : 0;
}

static int tp_is_tls(void *io)
{
	struct conn *c = io;
	return c->ssl && tls_established(c->ssl);
}

static const char *tp_peer(void *io)
{
	return ((struct conn *)io)->peer;
}

static const char *tp_peer_ip(void *io, char buf[NETADDR_IP_MAX])
{
	return netaddr_peer_ip(((struct conn *)io)->peer, buf);
}

/* The stream left (or rejoined) the unauthenticated: the pre-auth count
 * follows, while the socket is counted. */
static void tp_set_authed(void *io, int authed)
{
	struct conn *c = io;
	if (!(c->flags & CONN_F_AUTHED) == !authed)
		return;
	c->flags ^= CONN_F_AUTHED;
	if (c->flags & CONN_F_COUNTED)
		limits_conn_authed(c->w->srv->limits, authed);
}

static const struct transport transport = {
	.send = tp_send, .close = tp_close, .set_timer = tp_set_timer, .release = tp_release,
	.cb_exporter = tp_cb_exporter, .cb_unique = tp_cb_unique, .cb_endpoint = tp_cb_endpoint,
	.is_tls = tp_is_tls, .peer = tp_peer, .pause_read = tp_pause_read,
	.park_read = tp_park_read, .unsent = tp_unsent,
	.trim_memory = tp_trim_memory, .store = tp_store,
	.peer_ip = tp_peer_ip, .set_authed = tp_set_authed,
};

static int start_tls(struct conn *c)
{
	c->tio.tx = &c->wq;
	c->ssl = tls_new(&c->w->srv->tls, &c->tio);
	return c->ssl ? 0 : -ENOMEM;
}

/* The transport's share of the connection gauges: open by listener from
 * here to conn_maybe_free, pre-TLS until the handshake is done or the
 * socket closes (count_tls_up, count_fd_closed). c2s counts the stages
 * after TLS. */
static void count_open(struct conn *c, int direct_tls)
{
	c->flags |= CONN_F_PRE_TLS | (direct_tls ? CONN_F_DIRECT_TLS : 0);
	metrics_inc(direct_tls ? M_CONNS_DIRECT_TLS : M_CONNS_STARTTLS);
	metrics_inc(M_CONNS_PRE_TLS);
}

static void count_tls_up(struct conn *c)
{
	if ((c->flags & CONN_F_PRE_TLS) && tls_established(c->ssl)) {
		c->flags &= ~CONN_F_PRE_TLS;
		metrics_add(M_CONNS_PRE_TLS, -1);
	}
}

static void count_fd_closed(struct conn *c)
{
	if (c->flags & CONN_F_PRE_TLS) {
		c->flags &= ~CONN_F_PRE_TLS;
		metrics_add(M_CONNS_PRE_TLS, -1);
	}
}

static void count_freed(struct conn *c)
{
	metrics_add(c->flags & CONN_F_DIRECT_TLS ? M_CONNS_DIRECT_TLS : M_CONNS_STARTTLS, -1);
}

struct conn *conn_new(struct worker *w, int fd, uint32_t slot, uint32_t gen, int direct_tls)
{
	struct conn *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->w = w;
	c->fd = fd;
	c->slot = slot;
	c->gen = gen;
	if (direct_tls && start_tls(c))
		goto fail;
	if (w->srv->cfg.proxy_protocol && !(c->pp = malloc(sizeof(*c->pp))))
		goto fail;
	if (c->pp)
		c->pp->have = 0;
	struct bus_addr self = { .node = BUS_NODE_SELF, .worker = (uint16_t)w->idx, .slot = slot, .gen = gen };
	c->proto = w->srv->handlers->open(w, &transport, c, &self, direct_tls);
	if (!c->proto)
		goto fail;
	count_open(c, direct_tls);
	return c;
fail:
	tls_free(c->ssl);
	free(c->pp);
	free(c);
	return NULL;
}

void conn_arm_recv(struct conn *c)
{
	if (c->flags & (CONN_F_RX_ARMED | CONN_F_SHUT | CONN_F_PAUSED | CONN_F_PARKED))
		return;
	struct io_uring_sqe *sqe = worker_sqe(c->w);
	io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = 0;
	io_uring_sqe_set_data64(sqe, ud_pack(OP_RECV, c->gen, c->slot));
	c->flags |= CONN_F_RX_ARMED;
	c->inflight++;
}

/* The transport is gone: tell the protocol once, then shut the socket. */
static void tell_lost(struct conn *c)
{
	if (!(c->flags & CONN_F_LOST)) {
		c->flags |= CONN_F_LOST;
		handlers_of(c)->lost(c->proto);
	}
}

static void lost(struct conn *c)
{
	tell_lost(c);
	conn_abort(c);
}

/* Plaintext from TLS (or the socket) into the state machine. */
static int feed_plain(void *ud, const char *data, size_t len)
{
	struct conn *c = ud;
	if (c->flags & (CONN_F_CLOSING | CONN_F_SHUT | CONN_F_LOST))
		return 1; /* stop: nothing more is read from a closing stream */
	switch (handlers_of(c)->feed(c->proto, data, len)) {
	case TP_FEED_OK:
		return 0;
	case TP_FEED_STARTTLS:
		/* Bytes after <starttls/> are discarded (command injection). */
		if (start_tls(c)) {
			conn_abort(c);
			return 1;
		}
		return 1;
	case TP_FEED_CLOSED:
		return 1;
	}
	return 1;
}

/* [c2s] proxy_protocol: the connection's first bytes must be a PROXY header
 * (proxyproto.h) from a trusted address; anything else closes it. Returns
 * the bytes after the header (*<len> updated; maybe none), or NULL when
 * nothing is left to feed. The header's source address becomes c->peer. */
static const uint8_t *proxy_gate(struct conn *c, const uint8_t *data, size_t *len)
{
	static _Thread_local struct proxyproto_ratelimit rl;
	struct proxyproto_hdr h;
	const uint8_t *rest = NULL;
	size_t restlen = 0;
	const char *why = NULL;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	unsigned suppressed;

	if (getpeername(c->fd, (struct sockaddr *)&ss, &sl) == -1) {
		/* Reset already (HAProxy's health checks end so): nothing to say. */
		lost(c);
		return NULL;
	}
	if (!proxyproto_trusted(&c->w->srv->cfg.trusted, (struct sockaddr *)&ss))
		why = "not from a trusted proxy";
	else switch (proxyproto_gate_feed(c->pp, data, *len, &h, &rest, &restlen)) {
	case PROXYPROTO_NEED_MORE:
		return NULL;
	case PROXYPROTO_ERROR:
		why = h.why;
		break;
	case PROXYPROTO_DONE:
		if (!h.local) {
			char ip[NETADDR_IP_MAX];
			netaddr_format(&h.src, ip, NULL);
			/* From here the client, not the proxy, meets max_conns_per_ip. */
			if (limits_conn_client(c->w->srv->limits, ip) != LIMITS_OK) {
				lost(c);
				return NULL;
			}
			netaddr_format(&h.src, NULL, c->peer);
			c->flags |= CONN_F_IP_COUNTED;
		}
		if (log_enabled(LOG_L_DEBUG)) {
			char via[NETADDR_PEER_MAX];
			netaddr_format(&ss, NULL, via);
			log_debug("conn %s: PROXY header via %s (%zu bytes%s)", c->peer, via, h.len,
				  h.local ? ", LOCAL: own address kept" : "");
		}
		break;
	}
	free(c->pp);
	c->pp = NULL;
	if (why) {
		if (proxyproto_ratelimit_ok(&rl, timer_now_ms(), &suppressed))
			log_warn("conn %s: PROXY protocol: %s, closing (%u such lines suppressed before this one)",
				 c->peer, why, suppressed);
		lost(c);
		return NULL;
	}
	*len = restlen;
	return restlen ? rest : NULL;
}

static void feed(struct conn *c, const uint8_t *data, size_t len)
{
	if (c->pp && !(data = proxy_gate(c, data, &len)))
		return;
	if (!c->ssl) {
		feed_plain(c, (const char *)data, len);
		return;
	}
	switch (tls_feed(c->ssl, data, len, feed_plain, c)) {
	case TLS_OK:
	case TLS_STOPPED:
		if (c->flags & CONN_F_PRE_TLS)
			count_tls_up(c);
		break;
	case TLS_CLOSED:
	case TLS_FAILED:
		lost(c);
		return;
	}
	/* Handshake records or alerts may be waiting. */
	if (c->wq.len)
		worker_want_flush(c->w, c);
}

void conn_on_recv(struct conn *c, const struct io_uring_cqe *cqe)
{
	struct worker *w = c->w;
	if (!(cqe->flags & IORING_CQE_F_MORE)) {
		c->flags &= ~CONN_F_RX_ARMED;
		c->inflight--;
	}
	if (cqe->res > 0 && (cqe->flags & IORING_CQE_F_BUFFER)) {
		unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
		uint8_t *buf = w->bufs + (size_t)bid * w->buf_size;
		/* A closing connection reads and drops; TLS and the protocol are done. */
		if (!(c->flags & (CONN_F_SHUT | CONN_F_CLOSING | CONN_F_LOST)))
			feed(c, buf, (size_t)cqe->res);
		/* Give the buffer back before returning: we never keep it. */
		io_uring_buf_ring_add(w->br, buf, w->buf_size, (unsigned short)bid,
				      io_uring_buf_ring_mask(w->nbufs), 0);
		io_uring_buf_ring_advance(w->br, 1);
	} else if (cqe->res == -ENOBUFS) {
		/* Back-pressure, not an error: re-armed when buffers return. */
		if (!(c->flags & CONN_F_STARVED)) {
			c->flags |= CONN_F_STARVED;
			c->starved_next = w->starved;
			w->starved = c;
		}
	} else if (cqe->res == -ECANCELED) {
		/* Only our flow-control pause or parking cancels a recv: not an
		 * error. It may be over already; then the recv is re-armed below. */
	} else if (cqe->res <= 0) {
		/* EOF or error. */
		if (!(c->flags & CONN_F_SHUT))
			lost(c);
	}
	if (!(c->flags & (CONN_F_RX_ARMED | CONN_F_SHUT | CONN_F_STARVED | CONN_F_PAUSED | CONN_F_PARKED)))
		conn_arm_recv(c);
	conn_maybe_free(c);
}

void conn_send(struct conn *c, const char *data, size_t len)
{
	if (c->flags & CONN_F_SHUT)
		return;
	/* TLS begun and not up (a direct-TLS client that never finishes its
	 * handshake, or one after <proceed/>): nothing goes out in the clear,
	 * so what the protocol says then (a timeout's stream error) is
	 * dropped; the close that follows is all the peer gets. */
	if (c->ssl && !tls_established(c->ssl))
		return;
	struct sbuf *b = c->ssl ? &c->ptx : &c->wq;
	if (sbuf_append(b, data, len)) {
		log_warn("conn %s: out of memory queueing output", c->peer);
		conn_abort(c);
		return;
	}
	if (c->ptx.len + c->wq.len + c->sending.len > c->w->srv->cfg.max_send_queue) {
		/* The peer does not read: don't let it hold our memory. */
		log_warn("conn %s: send queue over %zu bytes, closing", c->peer,
			 c->w->srv->cfg.max_send_queue);
		lost(c);
		return;
	}
	worker_want_flush(c->w, c);
}

static void submit_send(struct conn *c)
{
	struct io_uring_sqe *sqe = worker_sqe(c->w);
	io_uring_prep_send(sqe, c->fd, c->sending.data + c->sent, c->sending.len - c->sent,
			   MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, ud_pack(OP_SEND, c->gen, c->slot));
	c->flags |= CONN_F_TX_BUSY;
	c->inflight++;
}

/* Socket shutdown: the multishot recv ends with EOF, the send (if any)
 * completes or fails; the last CQE frees the connection. */
static void shut(struct conn *c)
{
	if (c->flags & CONN_F_SHUT)
		return;
	c->flags |= CONN_F_SHUT;
	timer_cancel(&c->close_timer);
	shutdown(c->fd, SHUT_RDWR);
}

void conn_flush(struct conn *c)
{
	if (c->flags & CONN_F_SHUT)
		return;
	handlers_of(c)->before_flush(c->proto);
	if (c->ptx.len && c->ssl) {
		if (tls_write(c->ssl, c->ptx.data, c->ptx.len)) {
			lost(c);
			return;
		}
		sbuf_reset(&c->ptx);
	}
	if (!(c->flags & CONN_F_TX_BUSY) && c->wq.len) {
		/* Swap buffers: wq keeps filling while <sending> is in flight. */
		struct sbuf t = c->sending;
		c->sending = c->wq;
		c->wq = t;
		sbuf_reset(&c->wq);
		c->sent = 0;
		submit_send(c);
	}
	if ((c->flags & CONN_F_CLOSING) && !(c->flags & CONN_F_TX_BUSY) && !c->wq.len)
		shut(c);
}

void conn_on_send(struct conn *c, const struct io_uring_cqe *cqe)
{
	c->inflight--;
	c->flags &= ~CONN_F_TX_BUSY;
	if (cqe->res < 0) {
		if (!(c->flags & CONN_F_SHUT))
			lost(c);
		conn_maybe_free(c);
		return;
	}
	c->sent += (size_t)cqe->res;
	if (c->sent < c->sending.len && !(c->flags & CONN_F_SHUT)) {
		submit_send(c); /* short send: the rest */
		return;
	}
	sbuf_reset(&c->sending);
	c->sent = 0;
	conn_flush(c);
	/* Everything went out: an idle connection keeps no output buffers. */
	if (!(c->flags & CONN_F_TX_BUSY) && !c->wq.len && !c->ptx.len) {
		sbuf_free(&c->sending);
		sbuf_free(&c->wq);
		sbuf_free(&c->ptx);
	}
	conn_maybe_free(c);
}

static void on_close_timer(struct timer *t)
{
	struct conn *c = (struct conn *)((char *)t - offsetof(struct conn, close_timer));
	conn_abort(c);
	conn_maybe_free(c);
}

void conn_close(struct conn *c)
{
	if (c->flags & (CONN_F_CLOSING | CONN_F_SHUT))
		return;
	c->flags |= CONN_F_CLOSING;
	if (c->ssl && tls_established(c->ssl)) {
		/* Plaintext first, then the close_notify after it. */
		if (c->ptx.len && !tls_write(c->ssl, c->ptx.data, c->ptx.len))
			sbuf_reset(&c->ptx);
		tls_shutdown(c->ssl);
	}
	timer_arm(&c->w->wheel, &c->close_timer, CLOSE_GRACE_MS, on_close_timer);
	worker_want_flush(c->w, c);
}

void conn_abort(struct conn *c)
{
	shut(c);
}

int conn_maybe_free(struct conn *c)
{
	if (!(c->flags & CONN_F_SHUT) || c->inflight > 0 || (c->flags & (CONN_F_FLUSH | CONN_F_STARVED)))
		return 0;
	struct worker *w = c->w;
	tell_lost(c);
	if (!(c->flags & CONN_F_FD_CLOSED)) {
		/* The socket is done; a detached session may still need the slot. */
		c->flags |= CONN_F_FD_CLOSED;
		timer_cancel(&c->close_timer);
		timer_cancel(&c->pause_timer);
		close(c->fd);
		c->fd = -1;
		if (c->flags & CONN_F_COUNTED) { /* the descriptor is what the limits count */
			c->flags &= ~CONN_F_COUNTED;
			char ip[NETADDR_IP_MAX];
			limits_conn_close(w->srv->limits,
					  c->flags & CONN_F_IP_COUNTED ? netaddr_peer_ip(c->peer, ip) : NULL,
					  (c->flags & CONN_F_AUTHED) != 0);
		}
		count_fd_closed(c);
		tls_free(c->ssl);
		c->ssl = NULL;
		free(c->pp);
		c->pp = NULL;
		sbuf_free(&c->ptx);
		sbuf_free(&c->wq);
		sbuf_free(&c->sending);
	}
	if (handlers_of(c)->held(c->proto))
		return 0;
	for (int i = 0; i < TRANSPORT_TIMERS; i++)
		timer_cancel(&c->timer[i]);
	handlers_of(c)->free(c->proto);
	w->conns[c->slot] = NULL;
	w->gens[c->slot] = (w->gens[c->slot] + 1) & 0xffffff;
	w->free_slots[w->nfree++] = c->slot;
	w->live--;
	count_freed(c);
	free(c);
	return 1;
}
