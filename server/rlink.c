/* server/rlink.c - one Redis connection on a worker's io_uring (see rlink.h).
 *
 * Choices made here:
 * - hiredis is only the codec (redis_proto.c); the socket is ours, and every
 *   byte moves through the worker's ring: IORING_OP_CONNECT, send, recv.
 * - Receive: one plain recv at a time into the link's own 64 KiB buffer,
 *   re-armed after each completion. Not multishot: multishot recv needs
 *   provided buffers, and the worker's buffer ring is sized and tuned for
 *   client connections (an idle client holds none); one Redis socket per
 *   worker would compete with them for it and bring -ENOBUFS handling for a
 *   connection that is never idle. One SQE per batch of replies is
 *   nothing beside the replies themselves, and the buffer is one per worker.
 * - Send: one send in flight, straight from rproto_out(), whose bytes do not
 *   move until consumed; a short send continues from where it stopped.
 *   Commands added while a send is in flight go out with the next one, so
 *   a burst of commands in one loop turn leaves in few sends (pipelining).
 * - Deadlines: one wheel timer, armed for the earliest of the connect
 *   deadline, rproto's next command deadline, or the end of the back-off.
 *   The wheel's resolution (TIMER_TICK_MS) is fine for second-scale
 *   timeouts. A timeout breaks the connection (a late reply would be taken
 *   for the next command's): close, fail everything, reconnect.
 * - Closing waits for every operation of the socket to come back before
 *   rproto_reset() (which frees the output a send may still be reading)
 *   and close(): shutdown() ends a recv or send at once, and a cancel-by-fd
 *   ends a connect that is still trying.
 * - Reconnect with exponential back-off, 50 ms doubling to 2 s, reset by a
 *   successful connect; while backing off, commands are refused at once
 *   (-ENOTCONN) rather than queued: the caller can answer "try later"
 *   (temporary-auth-failure) instead of holding a client for seconds.
 */
#include "tether/rlink.h"

#include <errno.h>
#include <stddef.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "tether/log.h"
#include "tether/netaddr.h"
#include "tether/worker.h"

enum rlink_state {
	RLINK_DOWN = 0,    /* not started */
	RLINK_CONNECTING,  /* connect in flight; commands queue in rproto */
	RLINK_UP,          /* connected: send and recv */
	RLINK_CLOSING,     /* socket shut down; waiting for its CQEs */
	RLINK_BACKOFF,     /* closed; connecting again at retry_at */
};

struct rlink {
	struct io_uring *ring;
	struct timer_wheel *wheel;
	struct rproto *rp;
	rlink_state_fn *state_fn;
	void *ud;
	enum rlink_state state;
	int fd;
	uint32_t gen;              /* +1 per socket: CQEs of an old one are dropped */
	unsigned ud_op;            /* the op of its CQEs' user_data (OP_RLINK by default) */
	unsigned inflight;         /* connect/send/recv SQEs of this socket in the kernel */
	unsigned cancels;          /* cancel SQEs in the kernel (any socket) */
	int sending;               /* a send is in flight */
	int was_up;                /* "up" was told for this socket */
	int stopping;              /* rlink_stop(): no reconnect */
	unsigned connects, attempts;
	uint64_t connect_deadline; /* CONNECTING: give up at this time */
	uint64_t retry_at;         /* BACKOFF: connect again at this time */
	unsigned backoff_ms;       /* the next back-off */
	const char *why;           /* CLOSING: why, for the log */
	struct timer timer;
	/* rlink_set_hello(): sent first on every connection */
	int hello_argc;
	const char **hello_argv;   /* one block: pointers, lengths, bytes */
	size_t *hello_lens;
	rproto_fn *hello_fn;
	void *hello_ud;
	struct sockaddr_storage sa;
	socklen_t salen;
	char addr[128];
	char buf[RLINK_RECV_BUF];
};

static struct io_uring_sqe *get_sqe(struct rlink *l)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(l->ring);
	while (!sqe) { /* SQ full: hand it to the kernel and take a fresh one */
		io_uring_submit(l->ring);
		sqe = io_uring_get_sqe(l->ring);
	}
	return sqe;
}

static void set_data(struct rlink *l, struct io_uring_sqe *sqe, enum rlink_op op)
{
	io_uring_sqe_set_data64(sqe, ud_pack(l->ud_op, l->gen, op));
}

static void on_timer(struct timer *t);

/* Arms the timer for whatever the state waits for next. */
static void rearm(struct rlink *l)
{
	uint64_t due = 0, now = timer_now_ms();
	switch (l->state) {
	case RLINK_CONNECTING:
		due = l->connect_deadline; /* queued commands have deadlines too: */
		__attribute__((fallthrough));
	case RLINK_UP: {
		uint64_t d = rproto_next_deadline(l->rp);
		if (d && (!due || d < due))
			due = d;
		break;
	}
	case RLINK_BACKOFF:
		due = l->retry_at;
		break;
	default:
		break;
	}
	if (!due) {
		timer_cancel(&l->timer);
		return;
	}
	timer_arm(l->wheel, &l->timer, due > now ? due - now : 0, on_timer);
}

static void do_connect(struct rlink *l);

/* The socket's last operation is back: close it, fail what is
 * outstanding, say "down", and back off. */
static void finish_close(struct rlink *l)
{
	if (l->fd != -1)
		close(l->fd);
	l->fd = -1;
	l->sending = 0;
	l->state = l->stopping ? RLINK_DOWN : RLINK_BACKOFF; /* callbacks below see the link down */
	l->retry_at = timer_now_ms() + l->backoff_ms;
	l->backoff_ms = l->backoff_ms * 2 > RLINK_BACKOFF_MAX_MS ? RLINK_BACKOFF_MAX_MS : l->backoff_ms * 2;
	rproto_reset(l->rp, NULL);
	if (l->was_up) {
		l->was_up = 0;
		if (l->state_fn)
			l->state_fn(l->ud, 0);
	}
	rearm(l);
}

/* The connection is lost (or must be given up): <why> for the log. */
static void lose(struct rlink *l, const char *why)
{
	if (l->state != RLINK_CONNECTING && l->state != RLINK_UP)
		return;
	if (l->stopping)
		log_debug("redis at %s: closing", l->addr);
	else if (l->was_up)
		log_warn("redis at %s: connection lost: %s; reconnecting", l->addr, why);
	else
		log_debug("redis at %s: connect failed: %s; retrying in %u ms", l->addr, why, l->backoff_ms);
	l->state = RLINK_CLOSING;
	l->why = why;
	timer_cancel(&l->timer);
	if (l->inflight == 0) {
		finish_close(l);
		return;
	}
	/* shutdown() completes a pending recv (EOF) and send (EPIPE) now; the
	 * cancel also stops a connect still waiting for a SYN-ACK. */
	shutdown(l->fd, SHUT_RDWR);
	struct io_uring_sqe *sqe = get_sqe(l);
	io_uring_prep_cancel_fd(sqe, l->fd, IORING_ASYNC_CANCEL_ALL);
	set_data(l, sqe, RLINK_OP_CANCEL);
	l->cancels++;
}

static void arm_recv(struct rlink *l)
{
	struct io_uring_sqe *sqe = get_sqe(l);
	io_uring_prep_recv(sqe, l->fd, l->buf, sizeof(l->buf), 0);
	set_data(l, sqe, RLINK_OP_RECV);
	l->inflight++;
}

/* Sends what rproto has, if the link is up and no send is in flight. */
static void maybe_send(struct rlink *l)
{
	size_t len;
	const char *p;
	if (l->state != RLINK_UP || l->sending || !(p = rproto_out(l->rp, &len)))
		return;
	struct io_uring_sqe *sqe = get_sqe(l);
	io_uring_prep_send(sqe, l->fd, p, len, MSG_NOSIGNAL);
	set_data(l, sqe, RLINK_OP_SEND);
	l->sending = 1;
	l->inflight++;
}

static void hello_ignore(const redisReply *reply, const char *err, void *ud)
{
	(void)reply, (void)err, (void)ud;
}

static void do_connect(struct rlink *l)
{
	int fd = socket(l->sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	l->gen = (l->gen + 1) & 0xffffff;
	l->state = RLINK_CONNECTING;
	l->attempts++;
	l->connect_deadline = timer_now_ms() + RLINK_CONNECT_TIMEOUT_MS;
	if (fd == -1) {
		l->fd = -1;
		lose(l, strerror(errno)); /* EMFILE & co.: back off like any failure */
		return;
	}
	l->fd = fd;
	/* rproto is empty here (reset when the last socket closed; commands
	 * are refused while DOWN or backing off), so the hello goes first. */
	if (l->hello_argc)
		rproto_command(l->rp, l->hello_argc, l->hello_argv, l->hello_lens,
			       l->hello_fn ? l->hello_fn : hello_ignore, l->hello_ud,
			       l->connect_deadline + RLINK_TIMEOUT_DEFAULT_MS, NULL);
	if (l->sa.ss_family != AF_UNIX) {
		int one = 1; /* commands are small and pipelined: no Nagle delay */
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	struct io_uring_sqe *sqe = get_sqe(l);
	io_uring_prep_connect(sqe, fd, (struct sockaddr *)&l->sa, l->salen);
	set_data(l, sqe, RLINK_OP_CONNECT);
	l->inflight++;
	rearm(l);
}

static void on_timer(struct timer *t)
{
	struct rlink *l = (struct rlink *)((char *)t - offsetof(struct rlink, timer));
	uint64_t now = timer_now_ms();
	switch (l->state) {
	case RLINK_BACKOFF:
		if (now >= l->retry_at) {
			do_connect(l);
			return;
		}
		break;
	case RLINK_CONNECTING:
		if (now >= l->connect_deadline) {
			lose(l, "connect timed out");
			return;
		}
		__attribute__((fallthrough));
	case RLINK_UP:
		if (rproto_expire(l->rp, now)) {
			lose(l, "a command timed out");
			return;
		}
		break;
	default:
		return;
	}
	rearm(l);
}

static void on_connect(struct rlink *l, int res)
{
	if (res < 0) {
		lose(l, strerror(-res));
		return;
	}
	l->state = RLINK_UP;
	l->backoff_ms = RLINK_BACKOFF_MIN_MS;
	l->connects++;
	l->was_up = 1;
	log_info("redis at %s: connected", l->addr);
	arm_recv(l);
	maybe_send(l);
	rearm(l);
	if (l->state_fn)
		l->state_fn(l->ud, 1);
}

static void on_send(struct rlink *l, int res)
{
	l->sending = 0;
	if (res <= 0) {
		lose(l, res ? strerror(-res) : "send returned 0");
		return;
	}
	rproto_consumed(l->rp, (size_t)res); /* short: the rest goes next */
	maybe_send(l);
}

static void on_recv(struct rlink *l, int res)
{
	if (res <= 0) {
		lose(l, res ? strerror(-res) : "closed by the server");
		return;
	}
	/* Callbacks run in here; they may issue commands (sent below). */
	if (rproto_feed(l->rp, l->buf, (size_t)res) != RPROTO_FEED_OK) {
		lose(l, "protocol error or reply too big");
		return;
	}
	if (l->state != RLINK_UP)
		return;
	arm_recv(l);
	maybe_send(l);
	rearm(l);
}

void rlink_on_cqe(struct rlink *l, const struct io_uring_cqe *cqe)
{
	enum rlink_op op = (enum rlink_op)ud_slot(cqe->user_data);
	if (op == RLINK_OP_CANCEL) {
		l->cancels--; /* its result does not matter: the socket's own CQEs do */
		return;
	}
	if (ud_gen(cqe->user_data) != l->gen)
		return; /* cannot happen (a socket is closed only once all its CQEs are back); harmless */
	l->inflight--;
	if (l->state == RLINK_CLOSING) {
		if (op == RLINK_OP_SEND)
			l->sending = 0;
		if (l->inflight == 0)
			finish_close(l);
		return;
	}
	switch (op) {
	case RLINK_OP_CONNECT: on_connect(l, cqe->res); break;
	case RLINK_OP_SEND: on_send(l, cqe->res); break;
	case RLINK_OP_RECV: on_recv(l, cqe->res); break;
	default: break;
	}
}

int rlink_command(struct rlink *l, int argc, const char **argv, const size_t *argvlen,
		  rproto_fn *fn, void *ud, uint64_t timeout_ms, uint64_t *handle)
{
	if (l->state != RLINK_UP && l->state != RLINK_CONNECTING)
		return -ENOTCONN;
	uint64_t deadline = timer_now_ms() + (timeout_ms ? timeout_ms : RLINK_TIMEOUT_DEFAULT_MS);
	int rc = rproto_command(l->rp, argc, argv, argvlen, fn, ud, deadline, handle);
	if (rc)
		return rc;
	maybe_send(l);
	/* Only an earlier deadline needs the timer moved; commands issued in
	 * order with one timeout never do after the first. */
	if (!timer_armed(&l->timer) || rproto_next_deadline(l->rp) == deadline)
		rearm(l);
	return 0;
}

int rlink_set_hello(struct rlink *l, int argc, const char **argv, const size_t *argvlen,
		    rproto_fn *fn, void *ud)
{
	size_t bytes = 0;
	for (int i = 0; i < argc; i++)
		bytes += argvlen[i];
	size_t n = (size_t)(argc > 0 ? argc : 0);
	char *blk = malloc(n * (sizeof(char *) + sizeof(size_t)) + bytes + 1);
	if (!blk)
		return -ENOMEM;
	const char **av = (const char **)blk;
	size_t *lens = (size_t *)(blk + n * sizeof(char *));
	char *p = (char *)(lens + n);
	for (size_t i = 0; i < n; i++) {
		memcpy(p, argv[i], argvlen[i]);
		av[i] = p;
		lens[i] = argvlen[i];
		p += argvlen[i];
	}
	free(l->hello_argv);
	l->hello_argv = av;
	l->hello_lens = lens;
	l->hello_argc = (int)n;
	l->hello_fn = fn;
	l->hello_ud = ud;
	return 0;
}

int rlink_command_strs(struct rlink *l, int argc, const char **argv, rproto_fn *fn, void *ud,
		       uint64_t timeout_ms)
{
	size_t lens[RLINK_STR_ARGS];
	if (argc > RLINK_STR_ARGS)
		return -E2BIG;
	for (int i = 0; i < argc; i++)
		lens[i] = strlen(argv[i]);
	return rlink_command(l, argc, argv, lens, fn, ud, timeout_ms, NULL);
}

int rlink_cancel(struct rlink *l, uint64_t handle)
{
	return rproto_cancel(l->rp, handle);
}

size_t rlink_outstanding(const struct rlink *l)
{
	return rproto_pending(l->rp);
}

void rlink_set_ud_op(struct rlink *l, unsigned op)
{
	l->ud_op = op;
}

int rlink_up(const struct rlink *l)
{
	return l->state == RLINK_UP;
}

unsigned rlink_connects(const struct rlink *l)
{
	return l->connects;
}

unsigned rlink_attempts(const struct rlink *l)
{
	return l->attempts;
}

void rlink_stop(struct rlink *l)
{
	l->stopping = 1;
	if (l->state == RLINK_BACKOFF) {
		timer_cancel(&l->timer);
		l->state = RLINK_DOWN;
	}
	lose(l, "stopped");
}

int rlink_stopped(const struct rlink *l)
{
	return l->state == RLINK_DOWN && l->inflight == 0 && l->cancels == 0;
}

void rlink_start(struct rlink *l)
{
	if (l->state == RLINK_DOWN && l->inflight == 0) {
		l->stopping = 0;
		do_connect(l);
	}
}

struct rlink *rlink_new(struct io_uring *ring, struct timer_wheel *wheel, const char *addr,
			rlink_state_fn *state_fn, void *ud, char *err, size_t errlen)
{
	struct rlink *l = calloc(1, sizeof(*l));
	if (!l || !(l->rp = rproto_new(NULL))) {
		snprintf(err, errlen, "redis at %s: out of memory", addr);
		free(l);
		return NULL;
	}
	if (strlen(addr) >= sizeof(l->addr))
		goto bad;
	snprintf(l->addr, sizeof(l->addr), "%s", addr);
	if (!strncmp(addr, "unix:", 5)) {
		struct sockaddr_un *un = (struct sockaddr_un *)&l->sa;
		if (addr[5] != '/' || strlen(addr + 5) >= sizeof(un->sun_path))
			goto bad;
		un->sun_family = AF_UNIX;
		snprintf(un->sun_path, sizeof(un->sun_path), "%s", addr + 5);
		l->salen = sizeof(*un);
	} else if (netaddr_parse(addr, &l->sa, &l->salen)) {
		goto bad;
	}
	l->ud_op = OP_RLINK;
	l->ring = ring;
	l->wheel = wheel;
	l->state_fn = state_fn;
	l->ud = ud;
	l->fd = -1;
	l->backoff_ms = RLINK_BACKOFF_MIN_MS;
	return l;
bad:
	snprintf(err, errlen, "redis at %s: expected host:port (numeric) or unix:/path", addr);
	rproto_free(l->rp);
	free(l);
	return NULL;
}

void rlink_free(struct rlink *l)
{
	if (!l)
		return;
	timer_cancel(&l->timer);
	if (l->fd != -1) {
		/* After io_uring_queue_exit() the kernel cancels the ring's
		 * requests asynchronously; once the socket is shut down, a recv
		 * still pending can receive nothing into <buf>, and a send fails. */
		shutdown(l->fd, SHUT_RDWR);
		close(l->fd);
	}
	rproto_free(l->rp);
	free(l->hello_argv);
	free(l);
}
