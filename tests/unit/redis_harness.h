/* tests/unit/redis_harness.h - a throw-away redis-server for unit tests, and a blocking loop over rproto. */
#ifndef TETHER_TEST_REDIS_HARNESS_H
#define TETHER_TEST_REDIS_HARNESS_H

/* Test code only: it blocks (poll on a unix socket), which nothing on a
 * worker may do. Each test binary starts its own redis-server in a fresh
 * temporary directory, on a unix socket only (port 0), without RDB saves,
 * and kills it at the end. No redis-server: the binary exits 77 (skip). */

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "tether/redis_proto.h"

struct rserver {
	char dir[40];
	char sock[100];
	pid_t pid;
};

static const char *redis_server_bin(void)
{
	static const char *const cand[] = { "/usr/bin/redis-server", "/usr/local/bin/redis-server" };
	const char *env = getenv("REDIS_SERVER");
	if (env)
		return access(env, X_OK) == 0 ? env : NULL;
	for (size_t i = 0; i < sizeof(cand) / sizeof(cand[0]); i++)
		if (access(cand[i], X_OK) == 0)
			return cand[i];
	return NULL;
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int rs_connect(const struct rserver *s)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -1;
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", s->sock);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == -1) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Starts redis-server in <s>->dir (made if empty), AOF on or off. Exits 77
 * if there is no redis-server, 1 if it does not come up in 10 s. */
static void rs_start(struct rserver *s, int aof)
{
	const char *bin = redis_server_bin();
	if (!bin) {
		fprintf(stderr, "SKIP: redis-server not found (apt-get install redis-server, or set REDIS_SERVER)\n");
		exit(77);
	}
	if (!s->dir[0]) {
		snprintf(s->dir, sizeof(s->dir), "/tmp/tether-redis-XXXXXX");
		if (!mkdtemp(s->dir)) {
			perror("mkdtemp");
			exit(1);
		}
	}
	snprintf(s->sock, sizeof(s->sock), "%s/redis.sock", s->dir);
	char logf[160];
	snprintf(logf, sizeof(logf), "%s/redis.log", s->dir);
	s->pid = fork();
	if (s->pid == -1) {
		perror("fork");
		exit(1);
	}
	if (s->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL); /* a crashed test leaves no server behind */
		execl(bin, bin, "--port", "0", "--unixsocket", s->sock, "--unixsocketperm", "700",
		      "--dir", s->dir, "--save", "", "--appendonly", aof ? "yes" : "no",
		      "--appendfsync", "always", "--daemonize", "no", "--logfile", logf,
		      (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 1000; i++) {
		int fd = rs_connect(s);
		if (fd != -1) {
			/* Accepting is not serving: with an AOF, Redis answers
			 * -LOADING until the dataset is in. Wait for +PONG. */
			char buf[64];
			ssize_t n = 0;
			struct pollfd pfd = { .fd = fd, .events = POLLIN };
			if (send(fd, "PING\r\n", 6, MSG_NOSIGNAL) == 6 && poll(&pfd, 1, 1000) == 1)
				n = recv(fd, buf, sizeof(buf) - 1, 0);
			close(fd);
			if (n >= 5 && !memcmp(buf, "+PONG", 5))
				return;
			usleep(10000);
			continue;
		}
		int st;
		if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
			fprintf(stderr, "redis-server exited at start; see %s\n", logf);
			exit(1);
		}
		usleep(10000);
	}
	fprintf(stderr, "redis-server did not come up; see %s\n", logf);
	exit(1);
}

/* Stops the server (SIGTERM: it writes its AOF and exits) and waits. */
static void rs_stop(struct rserver *s)
{
	if (s->pid <= 0)
		return;
	kill(s->pid, SIGTERM);
	waitpid(s->pid, NULL, 0);
	s->pid = 0;
}

/* Stops the server and removes its directory. */
static void rs_destroy(struct rserver *s)
{
	char cmd[128];
	rs_stop(s);
	if (s->dir[0] && !strncmp(s->dir, "/tmp/tether-redis-", 18)) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", s->dir);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", s->dir);
	}
}

/* Sends everything rproto has queued on <fd>. 0 or -1. */
static int rs_flush(struct rproto *rp, int fd)
{
	size_t len;
	const char *p;
	while ((p = rproto_out(rp, &len))) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n <= 0)
			return -1;
		rproto_consumed(rp, (size_t)n);
	}
	return 0;
}

/* Receives once (up to <timeout_ms>) and feeds rproto; if <tap> is not
 * NULL, appends the raw bytes there (for replaying). Returns bytes read,
 * 0 on timeout, -1 on EOF or error. */
struct tap {
	char *buf;
	size_t len;
};
static ssize_t rs_recv_once(struct rproto *rp, int fd, int timeout_ms, struct tap *tap)
{
	char buf[65536];
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	int r = poll(&pfd, 1, timeout_ms);
	if (r <= 0)
		return r == 0 ? 0 : -1;
	ssize_t n = recv(fd, buf, sizeof(buf), 0);
	if (n <= 0)
		return -1;
	if (tap) {
		char *nb = realloc(tap->buf, tap->len + (size_t)n);
		if (!nb)
			abort();
		memcpy(nb + tap->len, buf, (size_t)n);
		tap->buf = nb;
		tap->len += (size_t)n;
	}
	rproto_feed(rp, buf, (size_t)n);
	return n;
}

/* Sends and receives until nothing is pending (or 10 s pass). 0 or -1. */
static int rs_run(struct rproto *rp, int fd, struct tap *tap)
{
	uint64_t end = now_ms() + 10000;
	while (rproto_pending(rp) && now_ms() < end) {
		if (rs_flush(rp, fd))
			return -1;
		if (rs_recv_once(rp, fd, 100, tap) < 0)
			return -1;
	}
	return rproto_pending(rp) ? -1 : 0;
}

/* ---- a deep copy of a reply, to look at after the callback ---------- */

struct rcopy {
	int type;
	long long integer;
	char *str;
	size_t len;
	size_t n;
	struct rcopy *el;
	const char *err; /* the callback's err */
	int called;
};

static void rcopy_fill(struct rcopy *c, const redisReply *r)
{
	c->type = r->type;
	c->integer = r->integer;
	if (r->str) {
		c->str = malloc(r->len + 1);
		if (!c->str)
			abort();
		memcpy(c->str, r->str, r->len);
		c->str[r->len] = 0;
		c->len = r->len;
	}
	if (r->type == REDIS_REPLY_ARRAY && r->elements) {
		c->n = r->elements;
		c->el = calloc(r->elements, sizeof(*c->el));
		if (!c->el)
			abort();
		for (size_t i = 0; i < r->elements; i++)
			rcopy_fill(&c->el[i], r->element[i]);
	}
}

static void rcopy_clear(struct rcopy *c)
{
	for (size_t i = 0; i < c->n; i++)
		rcopy_clear(&c->el[i]);
	free(c->el);
	free(c->str);
	memset(c, 0, sizeof(*c));
}

/* An rproto_fn that copies into the struct rcopy <ud>. */
static void rcopy_cb(const redisReply *r, const char *err, void *ud)
{
	struct rcopy *c = ud;
	rcopy_clear(c);
	c->called++;
	c->err = err;
	if (r)
		rcopy_fill(c, r);
}

/* Issues a command given as NUL-terminated strings and runs until its reply.
 * <out> is cleared first. Returns 0 or -1. */
static int rs_cmdv(struct rproto *rp, int fd, struct rcopy *out, int argc, const char **argv,
		   const size_t *lens)
{
	size_t l[64];
	if (argc > 64)
		return -1;
	for (int i = 0; i < argc; i++)
		l[i] = lens ? lens[i] : strlen(argv[i]);
	rcopy_clear(out);
	if (rproto_command(rp, argc, argv, l, rcopy_cb, out, now_ms() + 10000, NULL))
		return -1;
	return rs_run(rp, fd, NULL);
}

#define RS_CMD(rp, fd, out, ...)                                                      \
	rs_cmdv((rp), (fd), (out), (int)(sizeof((const char *[]){ __VA_ARGS__ }) /    \
					 sizeof(const char *)),                            \
		(const char *[]){ __VA_ARGS__ }, NULL)

#endif /* TETHER_TEST_REDIS_HARNESS_H */
