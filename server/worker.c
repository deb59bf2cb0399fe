/* server/worker.c - worker threads: one io_uring each, accept, inbox, timers.
 *
 * Each worker owns a ring (SINGLE_ISSUER | DEFER_TASKRUN), its own
 * SO_REUSEPORT listeners with multishot accept, a provided-buffer ring for
 * multishot recv, a timer wheel ticked by a ring timeout, and every
 * connection it accepted. Other threads reach it only through its inbox
 * and an IORING_OP_MSG_RING wake-up. */
#include "tether/worker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "tether/bus.h"
#include "tether/conn.h"
#include "tether/limits.h"
#include "tether/log.h"
#include "tether/metrics.h"
#include "tether/netaddr.h"
#include "tether/proxyproto.h"
#include "tether/cluster.h"
#include "tether/inbox.h"
#include "tether/rlink.h"
#include "tether/rmsg.h"
#include "tether/store.h"

#define RING_SQ_ENTRIES 1024
#define RING_CQ_ENTRIES (8 * RING_SQ_ENTRIES) /* never overflow the CQ */
#define RECV_BUFS 1024       /* power of two */
#define RECV_BUF_SIZE 4096

static __thread struct io_uring *main_ring; /* for wake-ups from non-workers */

static int open_listener(const char *addr)
{
	struct sockaddr_storage ss;
	socklen_t len;
	if (netaddr_parse(addr, &ss, &len)) {
		log_error("listen %s: expected host:port", addr);
		return -1;
	}
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		log_error("listen %s: socket: %s", addr, strerror(errno));
		return -1;
	}
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* One socket per worker on the same port: the kernel spreads accepts. */
	setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, len) == -1 || listen(fd, 4096) == -1) {
		log_error("listen %s: %s", addr, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

static int setup_bufring(struct worker *w)
{
	w->nbufs = RECV_BUFS;
	w->buf_size = RECV_BUF_SIZE;
	size_t ring_bytes = w->nbufs * sizeof(struct io_uring_buf);
	void *mem = mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	if (mem == MAP_FAILED)
		return -errno;
	w->br = mem;
	io_uring_buf_ring_init(w->br);
	struct io_uring_buf_reg reg = {
		.ring_addr = (unsigned long)w->br, .ring_entries = w->nbufs, .bgid = 0,
	};
	int rc = io_uring_register_buf_ring(&w->ring, &reg, 0);
	if (rc)
		return rc;
	w->bufs = malloc((size_t)w->nbufs * w->buf_size);
	if (!w->bufs)
		return -ENOMEM;
	for (unsigned i = 0; i < w->nbufs; i++)
		io_uring_buf_ring_add(w->br, w->bufs + (size_t)i * w->buf_size, w->buf_size,
				      (unsigned short)i, io_uring_buf_ring_mask(w->nbufs), (int)i);
	io_uring_buf_ring_advance(w->br, (int)w->nbufs);
	return 0;
}

/* rlink's state callback: the link's state for /readyz (worker_store_up). */
static void on_rlink_state(void *ud, int up)
{
	struct worker *w = ud;
	atomic_store_explicit(&w->rlink_up, up, memory_order_relaxed);
}

/* A notice from another node for one of our sessions: carried out as if
 * it came from this node (bus.c routes it to the owning worker). */
static void on_inbox(void *ud, int kind, const struct bus_addr *to, int cond, uint32_t seq,
		     struct rmsg *m)
{
	struct worker *w = ud;
	if (kind == STORE_NOTICE_DRAIN) {
		/* tetherctl drain: the same as SIGTERM, which main waits for */
		log_info("inbox: asked to drain (tetherctl drain)");
		kill(getpid(), SIGTERM);
	} else if (kind == BUS_KICK)
		bus_kick(w, to, cond);
	else if (kind == BUS_MOVED)
		bus_moved(w, to);
	else if (kind == BUS_DELIVER)
		bus_deliver(w, to, m); /* a session without a queue: a stale one re-routes it */
	else
		bus_appended(w, to, seq, m);
}

static void on_orphan(void *ud, struct rmsg *m, uint64_t stamp_ms)
{
	struct worker *w = ud;
	w->srv->handlers->orphan(w, m, stamp_ms);
}

static void on_gone(void *ud, const struct cluster_gone *g)
{
	struct worker *w = ud;
	w->srv->handlers->gone(w, g);
}

int worker_init(struct worker *w, struct server *srv, unsigned idx)
{
	memset(w, 0, sizeof(*w));
	w->srv = srv;
	w->idx = idx;
	w->lfd[0] = w->lfd[1] = -1;
	struct io_uring_params p = { 0 };
	/* SINGLE_ISSUER + DEFER_TASKRUN: only this thread submits, completions
	 * run when we wait; CQSIZE: 8x the SQ so multishot bursts never overflow. */
	p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE;
	/* Created here (errors reach main), enabled by the worker thread, which
	 * then is the single issuer. */
	p.flags |= IORING_SETUP_R_DISABLED;
	p.cq_entries = RING_CQ_ENTRIES;
	int rc = io_uring_queue_init_params(RING_SQ_ENTRIES, &w->ring, &p);
	if (rc) {
		log_error("worker %u: io_uring setup failed: %s (tetherd needs Linux >= 6.1 "
			  "with io_uring enabled; check /proc/sys/kernel/io_uring_disabled)",
			  idx, strerror(-rc));
		return -1;
	}
	struct io_uring_probe *probe = io_uring_get_probe_ring(&w->ring);
	int ok = probe && io_uring_opcode_supported(probe, IORING_OP_MSG_RING) &&
		 io_uring_opcode_supported(probe, IORING_OP_RECV) &&
		 io_uring_opcode_supported(probe, IORING_OP_ACCEPT);
	io_uring_free_probe(probe);
	if (!ok) {
		log_error("worker %u: this kernel's io_uring lacks MSG_RING/RECV/ACCEPT", idx);
		return -1;
	}
	rc = setup_bufring(w);
	if (rc) {
		log_error("worker %u: provided buffer ring: %s (needs Linux >= 5.19)", idx, strerror(-rc));
		return -1;
	}
	if (srv->cfg.listen[0] && (w->lfd[0] = open_listener(srv->cfg.listen)) == -1)
		return -1;
	if (srv->cfg.tls_listen[0] && (w->lfd[1] = open_listener(srv->cfg.tls_listen)) == -1)
		return -1;
	timer_wheel_init(&w->wheel);
	if (!strcmp(srv->cfg.store_backend, "redis")) {
		char err[256];
		if (!(w->rlink = rlink_new(&w->ring, &w->wheel, srv->cfg.store_redis, on_rlink_state, w,
					   err, sizeof(err)))) {
			log_error("worker %u: %s", idx, err);
			return -1;
		}
	}
	if (w->rlink && idx == 0 && !(w->cluster = cluster_new(w->rlink, &w->wheel, srv->token_key, on_orphan, on_gone, w))) {
		log_error("worker %u: out of memory", idx);
		return -1;
	}
	if (w->cluster)
		cluster_set_timing(w->cluster, srv->cfg.cluster_lease_ms, srv->cfg.cluster_tick_ms);
	if (w->rlink && idx == 0) {
		char err[256];
		if (!(w->node_inbox = inbox_new(&w->ring, &w->wheel, srv->cfg.store_redis,
					   srv->cfg.cluster_node, on_inbox, w, err, sizeof(err)))) {
			log_error("worker %u: %s", idx, err);
			return -1;
		}
	}
	if (srv->store && !(w->sh = store_attach(srv->store, w->rlink))) {
		log_error("worker %u: out of memory for the store handle", idx);
		return -1;
	}
	return 0;
}

struct io_uring_sqe *worker_sqe(struct worker *w)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);
	while (!sqe) {
		io_uring_submit(&w->ring);
		sqe = io_uring_get_sqe(&w->ring);
	}
	return sqe;
}

static void arm_accept(struct worker *w, unsigned which)
{
	struct io_uring_sqe *sqe = worker_sqe(w);
	io_uring_prep_multishot_accept(sqe, w->lfd[which], NULL, NULL, SOCK_CLOEXEC);
	io_uring_sqe_set_data64(sqe, ud_pack(OP_ACCEPT, 0, which));
}

/* The tick is due TIMER_TICK_MS after it is armed; how much later it runs
 * is the loop's lag (a long batch of CQEs, a slow handler, a starved CPU). */
static void arm_tick(struct worker *w)
{
	static struct __kernel_timespec ts = { .tv_sec = 0, .tv_nsec = TIMER_TICK_MS * 1000000L };
	w->tick_due_us = metrics_now_us() + TIMER_TICK_MS * 1000u;
	struct io_uring_sqe *sqe = worker_sqe(w);
	io_uring_prep_timeout(sqe, &ts, 0, 0);
	io_uring_sqe_set_data64(sqe, ud_pack(OP_TICK, 0, 0));
}

static int alloc_slot(struct worker *w, uint32_t *slot)
{
	if (w->nfree) {
		*slot = w->free_slots[--w->nfree];
		return 0;
	}
	if (w->nslots == w->cap_slots) {
		uint32_t cap = w->cap_slots ? w->cap_slots * 2 : 1024;
		struct conn **c = realloc(w->conns, cap * sizeof(*c));
		if (c)
			w->conns = c;
		uint32_t *g = realloc(w->gens, cap * sizeof(*g));
		if (g)
			w->gens = g;
		uint32_t *f = realloc(w->free_slots, cap * sizeof(*f));
		if (f)
			w->free_slots = f;
		if (!c || !g || !f)
			return -ENOMEM;
		w->cap_slots = cap;
	}
	*slot = w->nslots++;
	w->gens[*slot] = 1;
	return 0;
}

#define ACCEPT_BACKOFF_MS 100 /* after EMFILE/ENFILE/ENOMEM: let descriptors free up */

static void accept_retry(struct worker *w, unsigned which)
{
	if (!w->draining && w->lfd[which] != -1)
		arm_accept(w, which);
}

static void on_accept_retry0(struct timer *t)
{
	accept_retry((struct worker *)((char *)t - offsetof(struct worker, accept_retry[0])), 0);
}

static void on_accept_retry1(struct timer *t)
{
	accept_retry((struct worker *)((char *)t - offsetof(struct worker, accept_retry[1])), 1);
}

/* The peer of accepted <fd>: its address alone into <ip> (IPv4-mapped
 * IPv6 written as IPv4, so one host has one key) and "ip:port" into <peer>. */
/* The peer's address for logs and limits; returns 1 if it is a trusted
 * PROXY-protocol proxy, whose clients are only known from their headers. */
static int peer_name(struct worker *w, int fd, char ip[NETADDR_IP_MAX], char peer[NETADDR_PEER_MAX])
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	if (getpeername(fd, (struct sockaddr *)&ss, &sl) == -1)
		ss.ss_family = AF_UNSPEC;
	netaddr_format(&ss, ip, peer);
	return w->srv->cfg.proxy_protocol && ss.ss_family != AF_UNSPEC &&
	       proxyproto_trusted(&w->srv->cfg.trusted, (struct sockaddr *)&ss);
}

static void on_accept(struct worker *w, const struct io_uring_cqe *cqe)
{
	unsigned which = ud_slot(cqe->user_data);
	int more = cqe->flags & IORING_CQE_F_MORE;
	if (cqe->res < 0) {
		if (cqe->res == -ECANCELED)
			return;
		/* Out of descriptors or memory: back off instead of spinning, and
		 * say so at most once a second. */
		uint64_t now = timer_now_ms();
		if (now - w->accept_err_logged_ms >= 1000) {
			w->accept_err_logged_ms = now;
			log_warn("worker %u: accept: %s (retrying every %d ms)", w->idx,
				 strerror(-cqe->res), ACCEPT_BACKOFF_MS);
		}
		if (!more && !w->draining && w->lfd[which] != -1)
			timer_arm(&w->wheel, &w->accept_retry[which], ACCEPT_BACKOFF_MS,
				  which ? on_accept_retry1 : on_accept_retry0);
		return;
	}
	if (!more && !w->draining && w->lfd[which] != -1)
		arm_accept(w, which);
	int fd = cqe->res;
	uint32_t slot;
	char ip[NETADDR_IP_MAX], peer[NETADDR_PEER_MAX];
	/* A trusted proxy's socket counts against the client named in its
	 * PROXY header (conn.c), not against the proxy's own address. */
	const char *per_ip = peer_name(w, fd, ip, peer) ? NULL : ip;
	if (w->draining) {
		close(fd);
		return;
	}
	/* Over a limit: closed before TLS, not a byte written (limits.h). */
	if (limits_conn_open(w->srv->limits, per_ip) != LIMITS_OK) {
		close(fd);
		return;
	}
	if (alloc_slot(w, &slot)) {
		limits_conn_close(w->srv->limits, per_ip, 0);
		close(fd);
		return;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	struct conn *c = conn_new(w, fd, slot, w->gens[slot], which == 1);
	if (!c) {
		limits_conn_close(w->srv->limits, per_ip, 0);
		w->free_slots[w->nfree++] = slot;
		close(fd);
		return;
	}
	c->flags |= CONN_F_COUNTED | (per_ip ? CONN_F_IP_COUNTED : 0);
	memcpy(c->peer, peer, sizeof(c->peer));
	w->conns[slot] = c;
	w->live++;
	log_debug("worker %u: accepted %s (%s)", w->idx, c->peer, which ? "direct TLS" : "STARTTLS");
	conn_arm_recv(c);
}

/* The connection a CQE is for, or NULL if its slot was reused since. */
static struct conn *conn_of(struct worker *w, uint64_t ud)
{
	uint32_t slot = ud_slot(ud);
	if (slot >= w->nslots || w->gens[slot] != ud_gen(ud))
		return NULL;
	return w->conns[slot];
}

void worker_want_flush(struct worker *w, struct conn *c)
{
	if (c->flags & CONN_F_FLUSH)
		return;
	c->flags |= CONN_F_FLUSH;
	c->flush_next = w->flush_list;
	w->flush_list = c;
}

static void flush_all(struct worker *w)
{
	while (w->flush_list) {
		struct conn *c = w->flush_list;
		w->flush_list = c->flush_next;
		c->flags &= ~CONN_F_FLUSH;
		conn_flush(c);
		conn_maybe_free(c);
	}
}

static void rearm_starved(struct worker *w)
{
	struct conn *c = w->starved;
	w->starved = NULL;
	while (c) {
		struct conn *next = c->starved_next;
		c->flags &= ~CONN_F_STARVED;
		conn_arm_recv(c);
		conn_maybe_free(c);
		c = next;
	}
}

/* Sends a wake-up CQE to <target>'s ring, from <w>'s ring if we are a
 * worker, else from this thread's private ring. */
static void wake(struct worker *w, struct worker *target)
{
	if (atomic_exchange(&target->wake_pending, 1))
		return; /* already woken and not yet drained */
	struct io_uring *r = w ? &w->ring : main_ring;
	struct io_uring_sqe *sqe = w ? worker_sqe(w) : io_uring_get_sqe(r);
	if (!sqe)
		return;
	io_uring_prep_msg_ring(sqe, target->ring.ring_fd, 0, ud_pack(OP_WAKE, 0, 0), 0);
	io_uring_sqe_set_data64(sqe, ud_pack(OP_IGNORE, 0, 0));
	sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
	if (!w)
		io_uring_submit(r);
}

static void inbox_push(struct worker *w, struct worker *target, struct bus_item *it)
{
	struct bus_item *head = atomic_load(&target->inbox);
	do
		it->next = head;
	while (!atomic_compare_exchange_weak(&target->inbox, &head, it));
	wake(w, target);
}

void worker_dispatch(struct worker *w, const struct bus_item *it)
{
	const struct worker_handlers *h = w->srv->handlers;
	struct conn *c = NULL;
	if (it->to.slot < w->nslots && w->gens[it->to.slot] == it->to.gen)
		c = w->conns[it->to.slot];
	switch (it->kind) {
	case BUS_DELIVER:
		if (c)
			h->deliver(c->proto, it->msg); /* also while detached: queued */
		else
			h->stale(w, &it->to, it->msg);
		break;
	case BUS_KICK:
		if (c)
			h->kick(c->proto, it->cond);
		break;
	case BUS_MOVED:
		if (c)
			h->moved(c->proto);
		break;
	case BUS_APPENDED:
		/* A session gone from here has the entry in its queue: whoever
		 * resumes it gets it from there. */
		if (c)
			h->appended(c->proto, it->seq, it->msg);
		rmsg_unref(it->msg);
		break;
	}
}

static void drain_inbox(struct worker *w)
{
	atomic_store(&w->wake_pending, 0);
	struct bus_item *list = atomic_exchange(&w->inbox, NULL), *fifo = NULL;
	while (list) { /* reverse: pushes were LIFO */
		struct bus_item *n = list->next;
		list->next = fifo;
		fifo = list;
		list = n;
	}
	while (fifo) {
		struct bus_item *n = fifo->next;
		worker_dispatch(w, fifo);
		free(fifo);
		fifo = n;
	}
}

int worker_post(struct worker *w, struct worker *target, const struct bus_item *it)
{
	struct bus_item *copy = malloc(sizeof(*copy));
	if (!copy)
		return -ENOMEM;
	*copy = *it;
	inbox_push(w, target, copy);
	return 0;
}

/* Stops listening at once, then closes. A pending multishot accept holds
 * the socket open until the ring lets go of it, which the kernel may do
 * after this process is gone; meanwhile, with SO_REUSEPORT, a new tetherd
 * on the same port would share its connections with that dead listener
 * and its clients would be reset. shutdown() takes it out of the port's
 * group now. */
static void close_listener(int fd)
{
	shutdown(fd, SHUT_RDWR);
	close(fd);
}

/* Shutdown, seen by this worker: stop accepting, tell every stream. */
static void begin_drain(struct worker *w)
{
	w->draining = 1;
	w->drain_deadline_ms = timer_now_ms() + w->srv->cfg.drain_timeout * 1000ull;
	for (unsigned i = 0; i < LISTENER_MAX; i++) {
		if (w->lfd[i] == -1)
			continue;
		struct io_uring_sqe *sqe = worker_sqe(w);
		io_uring_prep_cancel64(sqe, ud_pack(OP_ACCEPT, 0, i), 0);
		io_uring_sqe_set_data64(sqe, ud_pack(OP_IGNORE, 0, 0));
		close_listener(w->lfd[i]);
		w->lfd[i] = -1;
	}
	for (uint32_t s = 0; s < w->nslots; s++) {
		struct conn *c = w->conns[s];
		/* Open streams are told; so are detached sessions (they end). */
		if (c && (!(c->flags & (CONN_F_LOST | CONN_F_SHUT)) || w->srv->handlers->held(c->proto)))
			w->srv->handlers->shutdown(c->proto);
	}
}

void worker_want_trim(struct worker *w)
{
	w->trim_pending = 1;
}

/* A second in which a worker moves this many bytes (in and out) is a
 * burst: what it allocates meanwhile (queues, parsers, TLS records) is
 * proportional to them. The first second after it with an eighth of that
 * is its end. */
#define BURST_BYTES (4u << 20)
#define QUIET_BYTES (BURST_BYTES / 8)

/* Once a second: after a burst, the worker has freed what the burst made
 * it allocate (queues, parsers, TLS records) but glibc keeps the pages
 * unless they are at the top of a heap. Sessions that stay busy never go
 * idle (worker_want_trim), so the end of the burst asks for a trim too. */
static void watch_load(struct worker *w, uint64_t now)
{
	if (now - w->load_at_ms < 1000)
		return;
	uint64_t done = w->io_bytes - w->io_bytes_at;
	w->io_bytes_at = w->io_bytes;
	w->load_at_ms = now;
	if (done >= BURST_BYTES) {
		w->after_burst = 1;
	} else if (w->after_burst && done < QUIET_BYTES) {
		w->after_burst = 0;
		w->trim_pending = 1;
		log_debug("worker %u: a burst is over: the heap will be trimmed", w->idx);
	}
}

/* Streams that went idle freed their parsers (worker_want_trim), or a
 * burst ended (watch_load); at most once a second, hand the freed pages
 * back so sessions cost what they hold, not what their handshakes or the
 * burst once needed. */
static void maybe_trim_heap(struct worker *w)
{
	uint64_t now = timer_now_ms();
	watch_load(w, now);
	if (!w->trim_pending || now - w->last_trim_ms < 1000)
		return;
	w->trim_pending = 0;
	w->last_trim_ms = now;
	if (w->sh)
		store_trim(w->sh);
#if !defined(__SANITIZE_ADDRESS__)
	/* Not under ASan: its allocator is not glibc's, malloc_trim would
	 * walk arenas that were never set up. */
	malloc_trim(0);
#endif
}

static void observe_lag(struct worker *w)
{
	uint64_t now = metrics_now_us();
	metrics_observe_us(H_LOOP_LAG, now > w->tick_due_us ? now - w->tick_due_us : 0);
}

static void handle_cqe(struct worker *w, struct io_uring_cqe *cqe)
{
	uint64_t ud = cqe->user_data;
	struct conn *c;
	switch (ud_op(ud)) {
	case OP_ACCEPT:
		on_accept(w, cqe);
		break;
	case OP_RECV:
		if (cqe->res > 0) {
			w->io_bytes += (uint64_t)cqe->res;
			metrics_add(M_BYTES_IN, cqe->res);
		}
		if ((c = conn_of(w, ud)))
			conn_on_recv(c, cqe);
		else if (cqe->flags & IORING_CQE_F_BUFFER) {
			/* Stale: give the buffer back all the same. */
			unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
			io_uring_buf_ring_add(w->br, w->bufs + (size_t)bid * w->buf_size, w->buf_size,
					      (unsigned short)bid, io_uring_buf_ring_mask(w->nbufs), 0);
			io_uring_buf_ring_advance(w->br, 1);
		}
		break;
	case OP_SEND:
		if (cqe->res > 0) {
			w->io_bytes += (uint64_t)cqe->res;
			metrics_add(M_BYTES_OUT, cqe->res);
		}
		if ((c = conn_of(w, ud)))
			conn_on_send(c, cqe);
		break;
	case OP_TICK:
		observe_lag(w);
		timer_wheel_run(&w->wheel);
		arm_tick(w);
		maybe_trim_heap(w);
		break;
	case OP_WAKE:
		drain_inbox(w);
		break;
	case OP_RLINK:
		if (w->rlink)
			rlink_on_cqe(w->rlink, cqe);
		break;
	case OP_INBOX:
		if (w->node_inbox)
			inbox_on_cqe(w->node_inbox, cqe);
		break;
	default:
		break;
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	metrics_attach(w->idx);
	/* SINGLE_ISSUER: enabling the ring makes this thread its issuer. */
	/* liburing 2.3 declares io_uring_enable_rings() but does not export it. */
	if (syscall(__NR_io_uring_register, w->ring.ring_fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0)) {
		log_error("worker %u: enabling the ring: %s", w->idx, strerror(errno));
		w->exit_code = 1;
		return NULL;
	}
	for (unsigned i = 0; i < LISTENER_MAX; i++)
		if (w->lfd[i] != -1)
			arm_accept(w, i);
	arm_tick(w);
	if (w->rlink)
		rlink_start(w->rlink); /* from this thread: the ring's single issuer */
	if (w->node_inbox)
		inbox_start(w->node_inbox);
	if (w->cluster)
		cluster_start(w->cluster);
	for (;;) {
		if (w->sh)
			store_poll(w->sh); /* completions first: they may queue output */
		flush_all(w);
		if (w->sh)
			store_flush(w->sh); /* this turn's deliveries, as one command */
		rearm_starved(w);
		/* Drained: no stream left, and what they wrote to the store is
		 * in it (their sessions live on there). */
		if (w->draining && ((!w->live && (!w->rlink || !rlink_outstanding(w->rlink))) ||
				    timer_now_ms() > w->drain_deadline_ms))
			break;
		/* With store operations pending the loop must turn again without
		 * waiting for a CQE: their completions come from store_poll(). */
		int rc = w->sh && store_turn_due(w->sh) ? io_uring_submit(&w->ring)
						       : io_uring_submit_and_wait(&w->ring, 1);
		if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
			log_error("worker %u: io_uring_submit_and_wait: %s", w->idx, strerror(-rc));
			w->exit_code = 1;
			break;
		}
		struct io_uring_cqe *cqe;
		unsigned head, n = 0;
		io_uring_for_each_cqe(&w->ring, head, cqe) {
			handle_cqe(w, cqe);
			n++;
			/* Completions as soon as they are due, not after the whole
			 * batch: a batch of an open-loop flood is tens of thousands of
			 * stanzas, each waiting for its append (their output, the
			 * operations and the messages they hold, all live at once). */
			if (w->sh && store_turn_due(w->sh))
				store_poll(w->sh);
		}
		io_uring_cq_advance(&w->ring, n);
		if (atomic_load_explicit(&w->inbox, memory_order_relaxed))
			drain_inbox(w); /* its wake-up may come late, or be lost (MSG_RING failed) */
		if (!w->draining && atomic_load(&w->srv->stopping))
			begin_drain(w);
	}
	return NULL;
}

int worker_start(struct worker *w)
{
	int rc = pthread_create(&w->thread, NULL, worker_main, w);
	if (rc) {
		log_error("worker %u: pthread_create: %s", w->idx, strerror(rc));
		return -1;
	}
	return 0;
}

void worker_join(struct worker *w)
{
	pthread_join(w->thread, NULL);
	for (uint32_t s = 0; s < w->nslots; s++) {
		struct conn *c = w->conns[s];
		if (!c)
			continue;
		/* Past the drain deadline: drop what is left. */
		c->flags |= CONN_F_SHUT;
		c->inflight = 0;
		c->flags &= ~(CONN_F_FLUSH | CONN_F_STARVED);
		conn_maybe_free(c);
	}
	struct bus_item *it = atomic_exchange(&w->inbox, NULL);
	while (it) {
		struct bus_item *n = it->next;
		rmsg_unref(it->msg);
		free(it);
		it = n;
	}
	for (unsigned i = 0; i < LISTENER_MAX; i++)
		if (w->lfd[i] != -1)
			close_listener(w->lfd[i]);
	store_detach(w->sh); /* pending operations are cancelled */
	w->sh = NULL;
	io_uring_queue_exit(&w->ring);
	rlink_free(w->rlink); /* after the ring: no recv of it can still land */
	w->rlink = NULL;
	inbox_free(w->node_inbox);
	w->node_inbox = NULL;
	cluster_free(w->cluster); /* after its link: no reply can reach it now */
	w->cluster = NULL;
	if (w->br)
		munmap(w->br, w->nbufs * sizeof(struct io_uring_buf));
	free(w->bufs);
	free(w->conns);
	free(w->gens);
	free(w->free_slots);
}

void server_stop(struct server *srv)
{
	static struct io_uring ring;
	static int have_ring;
	atomic_store(&srv->stopping, 1);
	if (!have_ring && io_uring_queue_init(8, &ring, 0) == 0)
		have_ring = 1;
	if (!have_ring)
		return;
	main_ring = &ring;
	for (unsigned i = 0; i < srv->nworkers; i++) {
		atomic_store(&srv->workers[i].wake_pending, 0);
		wake(NULL, &srv->workers[i]);
		struct io_uring_cqe *cqe;
		/* Reap our own completion; bounded. */
		if (io_uring_peek_cqe(&ring, &cqe) == 0)
			io_uring_cqe_seen(&ring, cqe);
	}
}
