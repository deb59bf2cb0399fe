/* include/tether/rlink.h - one Redis connection driven by a worker's io_uring: connect, send, recv, deadlines, reconnect. */
#ifndef TETHER_RLINK_H
#define TETHER_RLINK_H

#include <stddef.h>
#include <stdint.h>

#include <liburing.h>

#include "tether/redis_proto.h"
#include "tether/timer.h"

/* Plumbing: rlink knows sockets, the ring and the protocol codec
 * (redis_proto.h), and nothing of XMPP or of what the commands mean.
 *
 * One rlink per worker. It lives on that worker's ring and timer wheel and
 * is touched only by that thread. Its ring needs nothing special: the
 * worker's does, and so does a plain ring a test sets up itself. The loop
 * that owns the ring passes every CQE whose ud_op() is OP_RLINK to
 * rlink_on_cqe(), and runs the wheel (timer_wheel_run) every tick.
 *
 * Life of the connection:
 *   DOWN ──start──> CONNECTING ──connect CQE ok──> UP
 *     ^                 │ fail / timeout             │ EOF, error, timeout,
 *     │                 v                            v protocol error
 *   BACKOFF <──all CQEs back── CLOSING <─────────────┘
 * CLOSING shuts the socket down and waits until no operation of it is in
 * the kernel (a send may be reading rproto's output buffer), then closes
 * it, fails every outstanding command with rproto_err_closed (or
 * rproto_err_timeout for the one that timed out), tells the state
 * callback "down" if it had said "up", and waits out a back-off that
 * doubles from RLINK_BACKOFF_MIN_MS to RLINK_BACKOFF_MAX_MS (reset by a
 * successful connect) before connecting again. */

struct rlink;

#define RLINK_BACKOFF_MIN_MS  50u
#define RLINK_BACKOFF_MAX_MS  2000u
#define RLINK_CONNECT_TIMEOUT_MS 2000u  /* a TCP connect to a silent host */
#define RLINK_TIMEOUT_DEFAULT_MS 2000u  /* a command's deadline when the caller gives 0 */
#define RLINK_RECV_BUF (64u << 10)

/* Sub-operations in the slot field of an OP_RLINK user_data. */
enum rlink_op {
	RLINK_OP_CONNECT = 0, /* IORING_OP_CONNECT */
	RLINK_OP_SEND,        /* one send at a time, from rproto_out() */
	RLINK_OP_RECV,        /* one plain recv at a time into the link's buffer */
	RLINK_OP_CANCEL,      /* cancel-by-fd when the link closes; result ignored */
};

/* The link went up (<up> 1: connected, commands are being sent) or down
 * (0: it was up and is not any more; commands fail until it is up again).
 * Called from rlink_on_cqe() or a timer, never from rlink_command(). */
typedef void rlink_state_fn(void *ud, int up);

/* A link to <addr> ("host:port" with a numeric host, or "unix:/path") on
 * <ring> and <wheel>. It does nothing until rlink_start(). <state_fn> may
 * be NULL. Returns NULL with a message in <err> for a bad address or OOM. */
struct rlink *rlink_new(struct io_uring *ring, struct timer_wheel *wheel, const char *addr,
			rlink_state_fn *state_fn, void *ud, char *err, size_t errlen);

/* Starts connecting (from the thread that owns the ring). */
void rlink_start(struct rlink *l);

/* Issues a command (see rproto_command for <argv>/<argvlen>, <fn>, <ud>
 * and <handle>) with a deadline <timeout_ms> from now (0: the default).
 * The command is sent at once if the link is up, or once the connect in
 * progress succeeds. Returns 0, -ENOTCONN (the link is down or backing off:
 * <fn> is never called; the caller answers "try later"), or rproto's
 * errors. <fn> is never called from inside this call. */
int rlink_command(struct rlink *l, int argc, const char **argv, const size_t *argvlen,
		  rproto_fn *fn, void *ud, uint64_t timeout_ms, uint64_t *handle);

/* A command every new connection of <l> sends first, ahead of anything
 * issued on the link (what a client's AUTH or SELECT would be; a worker's
 * store: load the FUNCTION library if a restarted Redis lost it, so the
 * commands queued behind it find it). <fn>(reply, err, <ud>) gets its reply
 * on each connection (NULL: ignored). The arguments are copied; a second
 * call replaces the first. Takes effect from the next connect (call it
 * before rlink_start()). 0 or -ENOMEM (nothing changed). */
int rlink_set_hello(struct rlink *l, int argc, const char **argv, const size_t *argvlen,
		    rproto_fn *fn, void *ud);

/* rlink_command for <argc> (at most RLINK_STR_ARGS) NUL-terminated
 * arguments, and no handle. */
#define RLINK_STR_ARGS 16
int rlink_command_strs(struct rlink *l, int argc, const char **argv, rproto_fn *fn, void *ud,
		       uint64_t timeout_ms);

/* Cancels a command issued on <l> (rproto_cancel). 0 or -ENOENT. */
int rlink_cancel(struct rlink *l, uint64_t handle);

/* A second link on one ring: its CQEs carry user_data op <op> instead of
 * OP_RLINK, so the loop can tell the links apart. Before rlink_start(). */
void rlink_set_ud_op(struct rlink *l, unsigned op);

/* Commands issued whose reply has not come (sent or not yet). */
size_t rlink_outstanding(const struct rlink *l);

/* 1 while the link is up. */
int rlink_up(const struct rlink *l);

/* Connections made so far (successful connects), for tests and metrics. */
unsigned rlink_connects(const struct rlink *l);

/* Connect attempts so far (successful or not). */
unsigned rlink_attempts(const struct rlink *l);

/* Closes the link for good: fails what is outstanding (rproto_err_closed),
 * says "down" if it was up, and does not reconnect. The socket's
 * operations come back through rlink_on_cqe(); once rlink_stopped() is
 * true, rlink_free() is safe with the ring still running. */
void rlink_stop(struct rlink *l);
int rlink_stopped(const struct rlink *l);

/* Handles a CQE whose ud_op() is OP_RLINK. */
void rlink_on_cqe(struct rlink *l, const struct io_uring_cqe *cqe);

/* Frees <l>, closing its socket. Outstanding commands are NOT called back.
 * Only once the ring has no operation of <l> any more (a recv may write
 * into the link's buffer): when rlink_stopped(), after
 * io_uring_queue_exit(), or before rlink_start(). */
void rlink_free(struct rlink *l);

#endif /* TETHER_RLINK_H */
