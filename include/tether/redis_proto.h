/* include/tether/redis_proto.h - a sans-I/O Redis client: hiredis as a codec, our own pipelining and timeouts. */
#ifndef TETHER_REDIS_PROTO_H
#define TETHER_REDIS_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

/* One Redis connection's protocol state, without the connection: commands
 * are encoded with hiredis's redisFormatCommandArgv() into an output buffer
 * the caller sends however it likes (io_uring send on the worker's ring),
 * and the bytes the caller receives are decoded with hiredis's redisReader
 * and matched, in order, to the commands that are outstanding. The module
 * never touches a socket, a clock or a thread: the caller passes the time.
 *
 * Not thread-safe: one rproto belongs to one worker, like the connection.
 *
 * Redis answers the commands of one connection in the order it got them,
 * and a reply carries nothing that names its command; the only thing that
 * matches a reply to its command is its position. Hence:
 * - a cancelled command still owns its place: its reply is read and
 *   dropped, and its callback is never called;
 * - after a timeout the connection is broken for good (a late reply would
 *   be given to the next command): every command outstanding fails, the
 *   rproto refuses new ones, and the caller must close the socket, call
 *   rproto_reset() and reconnect. */

struct rproto;

/* Errors passed to callbacks (compare the pointers, print the strings). */
extern const char rproto_err_reply[];    /* Redis answered with an error reply; see reply->str */
extern const char rproto_err_timeout[];  /* the command's deadline passed */
extern const char rproto_err_closed[];   /* the connection was lost or reset */
extern const char rproto_err_protocol[]; /* the bytes received are not RESP2 */
extern const char rproto_err_toobig[];   /* a reply went over the reply size limit */

/* Called once per command, in the order the commands were issued, unless
 * it was cancelled first. On success <err> is NULL and <reply> is the
 * reply (never an error reply). On an error reply <err> is rproto_err_reply
 * and <reply> is that reply (type REDIS_REPLY_ERROR, reply->str the text).
 * Otherwise <reply> is NULL and <err> says why. <reply> is borrowed: it is
 * freed when the callback returns. The callback may issue and cancel
 * commands, and may call rproto_reset(); it must not call rproto_free(). */
typedef void rproto_fn(const redisReply *reply, const char *err, void *ud);

/* Limits; 0 in a field = its default. */
struct rproto_limits {
	size_t max_out;     /* bytes of encoded commands not yet consumed by the caller */
	size_t max_reply;   /* bytes of one reply (nested arrays count as a whole);
			     * hiredis's objects take up to ~20x the bytes of a
			     * reply of tiny elements (a redisReply per "+\r\n") */
	size_t max_pending; /* commands issued whose reply has not come */
};
#define RPROTO_MAX_OUT_DEFAULT     (4u << 20)
#define RPROTO_MAX_REPLY_DEFAULT   (16u << 20)
#define RPROTO_MAX_PENDING_DEFAULT 65536u

/* A new rproto with limits <lim> (NULL: defaults). NULL on OOM. */
struct rproto *rproto_new(const struct rproto_limits *lim);

/* Frees <rp> and everything it holds. Callbacks of outstanding commands are
 * NOT called: call rproto_reset() first if their owners must hear of it. */
void rproto_free(struct rproto *rp);

/* Encodes the command <argv>[0..<argc>) (lengths <argvlen>, binary-safe) and
 * appends it to the output. <fn>(reply, err, <ud>) runs later, from
 * rproto_feed(), rproto_expire() or rproto_reset(), never from inside this
 * call. <deadline_ms> is on the caller's clock (the one it passes to
 * rproto_expire()); 0 = none (tests and tools only: a worker always sets
 * one). The arguments are copied. On success returns 0 and, if <handle> is
 * not NULL, stores there a handle for rproto_cancel() that is never reused.
 * Errors: -EPIPE (the rproto is broken: reset and reconnect first),
 * -ENOBUFS (output or pending limit reached), -ENOMEM, -EINVAL (argc < 1);
 * then <fn> will never be called. */
int rproto_command(struct rproto *rp, int argc, const char **argv, const size_t *argvlen,
		   rproto_fn *fn, void *ud, uint64_t deadline_ms, uint64_t *handle);

/* The next bytes to send: returns a pointer and stores their count in
 * <len> (0: nothing to send; then the pointer is NULL). The bytes stay at
 * that address, unchanged, until rproto_consumed() has covered them or
 * rproto_reset()/rproto_free() is called, whatever is appended meanwhile:
 * a send may be in flight on them. */
const char *rproto_out(const struct rproto *rp, size_t *len);

/* The caller has sent the first <n> bytes that rproto_out() returned
 * (n <= that length). */
void rproto_consumed(struct rproto *rp, size_t n);

/* Total bytes waiting to be sent (over all chunks, not just rproto_out()'s). */
size_t rproto_out_pending(const struct rproto *rp);

/* Result of rproto_feed(). */
enum rproto_feed_result {
	RPROTO_FEED_OK = 0, /* all input decoded; partial replies wait for more */
	RPROTO_FEED_ERR,    /* protocol error, oversize reply or unsolicited reply:
			     * every outstanding command failed; the rproto is
			     * broken (close, rproto_reset(), reconnect) */
};

/* Decodes <len> received bytes of <data> (copied) and calls the callbacks
 * of the replies completed, in order. On a broken rproto the bytes are
 * ignored and RPROTO_FEED_ERR is returned. If a callback calls
 * rproto_reset(), the rest of <data> is dropped with the old connection. */
enum rproto_feed_result rproto_feed(struct rproto *rp, const char *data, size_t len);

/* Fails the commands whose deadline is <= <now_ms> with rproto_err_timeout;
 * if there was any, all other outstanding commands fail with
 * rproto_err_closed and the rproto is broken. Cancelled commands count:
 * their reply is as late. Returns the number of timed-out commands (> 0:
 * close the connection, rproto_reset(), reconnect). */
size_t rproto_expire(struct rproto *rp, uint64_t now_ms);

/* The earliest deadline among outstanding commands, or 0 if none has one:
 * when the caller's timer for this connection must fire. */
uint64_t rproto_next_deadline(const struct rproto *rp);

/* The connection is gone (or is being replaced): fails every outstanding
 * command with <err> (NULL = rproto_err_closed), drops unsent output and any
 * partial reply, and makes <rp> usable again for a new connection. The
 * caller must have no send in flight on bytes from rproto_out(). */
void rproto_reset(struct rproto *rp, const char *err);

/* Cancels command <handle>: its callback will not be called; its reply is
 * still read and dropped. 0, or -ENOENT if it already completed, was
 * cancelled, or never existed. */
int rproto_cancel(struct rproto *rp, uint64_t handle);

/* Commands issued and not yet completed (cancelled ones included: their
 * replies are still due). */
size_t rproto_pending(const struct rproto *rp);

/* Non-zero after a timeout or a feed error, until rproto_reset(). */
int rproto_broken(const struct rproto *rp);

#endif /* TETHER_REDIS_PROTO_H */
