/* bench/main.c - tether-bench: command line and the five modes (idle, login, flood, resume, presence).
 *
 * Each mode is a set of mode_ops callbacks driven by net_run_once(); every
 * phase is bounded by a wall-clock limit and every loop by a count.
 */
#include "bench.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

extern char **environ;

struct opts opt = {
	.host = "127.0.0.1",
	.port = 5222,
	.tls = TLS_STARTTLS,
	.domain = "localhost",
	.user_fmt = "user%d",
	.pass_fmt = "pass%d",
	.user_base = 0,
	.users = 0,
	.label = "server",
	.rate = 2000,
	.concurrency = 100,
	.duration = 10,
	.count = 0,
	.window = 16,
	.ack_every = 10,
	.body_size = 0,
	.sources = 4,
	.timeout = 10,
	.settle = 2,
	.hold = 0,
	.sm = 1,
	.tls_tickets = -1,
	.redeliver = 1,
	.resume_kind = RESUME_CLASSIC,
	.resume_on = 1,
	.kill_after_ms = -1,
	.contacts = 50,
	.updates = 1,
};

const struct mode_ops *mode;

/* per-session states of the modes */
enum {
	S_IDLE = 0,     /* not started */
	S_LOGGING,      /* login in progress */
	S_READY,        /* logged in */
	S_FAILED,       /* login failed or the server ended it */
	S_PREP,         /* resume: waiting for its own stanzas to come back */
	S_DROPPED,      /* resume: prepared, connection to be dropped */
	S_RESUMING,     /* resume: <resume/> on its way */
	S_COUNTING,     /* resume: counting redelivered stanzas until <a/> */
	S_DONE,         /* finished */
};

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
	(void)sig;
	interrupted = 1;
}

/* --- shared bookkeeping ------------------------------------------------------- */

#define MAX_REASONS 24
static const char *reason_name[MAX_REASONS];
static long reason_count[MAX_REASONS];
static int nreasons;

static void tally(const char *why)
{
	if (!why)
		why = "unknown";
	for (int i = 0; i < nreasons; i++)
		if (strcmp(reason_name[i], why) == 0) {
			reason_count[i]++;
			return;
		}
	if (nreasons < MAX_REASONS) {
		reason_name[nreasons] = why;
		reason_count[nreasons++] = 1;
	}
}

static const char *end_name(const struct conn *c)
{
	static const char *const names[] = {
		[END_NONE] = "none", [END_LOCAL] = "closed locally", [END_EOF] = "server closed TCP",
		[END_STREAM_CLOSED] = "server closed stream", [END_STREAM_ERROR] = "stream error",
		[END_IO] = "I/O error", [END_PROTO] = "protocol error", [END_TIMEOUT] = "timeout",
	};

	if (c->why)
		return c->why;
	return c->end <= END_TIMEOUT ? names[c->end] : "?";
}

static struct sess *sessions;
static int nsess;
static struct hist lat_login;
static long flights[64];
static long logins_ok, logins_failed, sm_enabled, ended_sessions;
static int inprog, next_start;
static uint64_t ramp_t0;

static void flights_add(int n)
{
	flights[n < 63 ? n : 63]++;
}

static int flights_mode(int *lo, int *hi)
{
	int best = 0;

	*lo = *hi = 0;
	for (int i = 0; i < 64; i++) {
		if (!flights[i])
			continue;
		if (!*lo)
			*lo = i;
		*hi = i;
		if (flights[i] > flights[best])
			best = i;
	}
	return best;
}

static int alloc_sessions(int n)
{
	sessions = calloc((size_t)n, sizeof(*sessions));
	if (!sessions)
		return -1;
	nsess = n;
	for (int i = 0; i < n; i++) {
		sessions[i].idx = i;
		sessions[i].user = opt.user_base + i;
	}
	return 0;
}

static int start_login(struct sess *s)
{
	struct conn *c = conn_open(s);

	if (!c)
		return -1;
	s->t0 = c->t_start;
	s->state = S_LOGGING;
	return 0;
}

/* Starts logins at <opt.rate>/s with at most <opt.concurrency> in progress. */
static void ramp_tick(uint64_t now)
{
	double allowed = (double)(now - ramp_t0) / 1e9 * opt.rate + 1;
	int budget = 10000;      /* per turn: keep the loop responsive */

	while (next_start < nsess && next_start < allowed && inprog < opt.concurrency && budget-- > 0) {
		struct sess *s = &sessions[next_start++];

		if (start_login(s) < 0) {
			s->state = S_FAILED;
			logins_failed++;
			tally("no socket/slot");
			continue;
		}
		inprog++;
	}
}

/* Login finished for <s>: counts it; returns 1 if it was a login. */
static int login_done(struct sess *s)
{
	if (s->state != S_LOGGING)
		return 0;
	s->state = S_READY;
	inprog--;
	logins_ok++;
	hist_add(&lat_login, now_ns() - s->t0);
	flights_add(s->c ? s->c->flights : 0);
	if (s->sm_on)
		sm_enabled++;
	else if (s->c && s->c->why)
		tally(s->c->why);
	return 1;
}

/* A connection ended under <s>: a failed login or an ended session. */
static void login_end(struct sess *s, struct conn *c)
{
	if (s->state == S_LOGGING) {
		s->state = S_FAILED;
		inprog--;
		logins_failed++;
		tally(end_name(c));
	} else if (s->state != S_FAILED && s->state != S_DONE && s->state != S_IDLE) {
		s->state = S_FAILED;
		ended_sessions++;
		tally(end_name(c));
	}
}

static int stop_now(void)
{
	return interrupted || net_stop;
}

/* Runs the loop until <done>() or <max_s> seconds; returns 1 if done. */
static int run_until(int (*done)(void), double max_s)
{
	uint64_t end = now_ns() + (uint64_t)(max_s * 1e9);

	while (!stop_now()) {
		if (done && done())
			return 1;
		if (now_ns() > end)
			return done ? done() : 1;
		net_run_once(10);
	}
	return 0;
}

static int logins_complete(void)
{
	return next_start >= nsess && inprog == 0;
}

static int nothing_live(void)
{
	return net_live() == 0;
}

/* Closes every live session with </stream:stream> and drains, bounded. */
static void close_all(void)
{
	for (int i = 0; i < nsess; i++) {
		struct sess *s = &sessions[i];

		if (s->c && s->c->state != CS_DEAD) {
			struct conn *c = s->c;

			if (c->state == CS_ACTIVE)
				xmpp_close_stream(c);
			else
				conn_close(c, END_LOCAL, NULL);
		}
		if (s->state != S_FAILED)
			s->state = S_DONE;
	}
	run_until(nothing_live, 10);
}

static void print_reasons(void)
{
	for (int i = 0; i < nreasons; i++)
		printf("  %-40s %ld\n", reason_name[i], reason_count[i]);
}

static void json_common(void)
{
	int lo, hi, rt = flights_mode(&lo, &hi);

	json_int("logins_ok", logins_ok);
	json_int("logins_failed", logins_failed);
	json_int("sm_enabled", sm_enabled);
	json_hist_ms("login", &lat_login);
	json_int("login_round_trips", rt);
	json_int("ended_sessions", ended_sessions);
	json_str("tls", opt.tls == TLS_DIRECT ? "direct" : "starttls");
	json_str("mech", opt.mech ? opt.mech : "auto");
	json_counts("errors", reason_name, reason_count, nreasons);
}

static double ms(uint64_t ns)
{
	return (double)ns / 1e6;
}

/* --- idle N ----------------------------------------------------------------- */

static void idle_ready(struct sess *s)
{
	login_done(s);
}

static void idle_tick(uint64_t now)
{
	ramp_tick(now);
	progress("idle: %ld up, %ld failed, %d in progress", logins_ok, logins_failed, inprog);
}

static const struct mode_ops idle_ops = {
	.on_ready = idle_ready,
	.on_end = login_end,
	.on_tick = idle_tick,
};

static int mode_idle(int n)
{
	long before, after;
	int nprocs = 0, ok;
	double per = NAN;

	if (alloc_sessions(n) < 0)
		return 2;
	mode = &idle_ops;
	before = rss_tree_kib(opt.server_pid, &nprocs);
	ramp_t0 = now_ns();
	run_until(logins_complete, (double)n / opt.rate + opt.timeout + 60);
	/* A server slower than the ramp gets more time while it makes
	 * progress: stop after --timeout s without a finished login, or 1 h. */
	for (long seen = -1; !logins_complete() && !stop_now() && seen != logins_ok + logins_failed &&
			     now_ns() - ramp_t0 < 3600ull * 1000000000ull;) {
		seen = logins_ok + logins_failed;
		run_until(logins_complete, opt.timeout);
	}
	run_until(NULL, opt.settle);
	after = rss_tree_kib(opt.server_pid, NULL);
	if (before > 0 && after > 0 && logins_ok > 0)
		per = (double)(after - before) * 1024.0 / (double)logins_ok;
	if (opt.hold > 0)
		run_until(NULL, opt.hold);
	ok = logins_failed == 0 && ended_sessions == 0 && logins_ok == n && !isnan(per) && !stop_now();

	printf("\n== idle %d  [%s]\n", n, opt.label);
	printf("  sessions up            %ld / %d  (failed %ld, SM enabled %ld)\n", logins_ok, n, logins_failed,
	       sm_enabled);
	printf("  server RSS before      %ld KiB (%d processes)\n", before, nprocs);
	printf("  server RSS after       %ld KiB\n", after);
	printf("  per session            %.0f bytes (%.1f KiB)\n", per, per / 1024);
	printf("  login p50/p99/max      %.2f / %.2f / %.2f ms\n", ms(hist_pct(&lat_login, 50)),
	       ms(hist_pct(&lat_login, 99)), ms(lat_login.max));
	printf("  ended by server        %ld\n", ended_sessions);
	if (inprog || next_start < nsess)
		printf("  unfinished             %d in progress, %d not started (time limit)\n", inprog,
		       nsess - next_start);
	print_reasons();
	printf("  result                 %s\n", ok ? "OK" : "FAIL");

	json_begin("idle");
	json_int("sessions_requested", n);
	json_int("sessions", logins_ok);
	json_int("rss_before_kib", before);
	json_int("rss_after_kib", after);
	json_num("bytes_per_session", per);
	json_num("kib_per_session", per / 1024);
	json_int("server_processes", nprocs);
	json_int("in_progress_at_end", inprog);
	json_int("not_started", nsess - next_start);
	json_num("rate_limit", opt.rate);
	json_int("lost", 0);
	json_int("duplicated", 0);
	json_common();
	json_bool("ok", ok);
	json_end();
	close_all();
	return ok ? 0 : 1;
}

/* --- login ------------------------------------------------------------------ */

static uint64_t login_end_at;
static long login_target;
static int login_user_next;

static int login_slot_start(struct sess *s)
{
	uint64_t now = now_ns();

	if (stop_now() || now >= login_end_at || (login_target && logins_ok + logins_failed + inprog >= login_target))
		return 0;
	s->user = opt.user_base + login_user_next++ % opt.users;
	if (start_login(s) < 0) {
		logins_failed++;
		tally("no socket/slot");
		return 0;
	}
	inprog++;
	return 1;
}

static void login_ready(struct sess *s)
{
	struct conn *c = s->c;

	if (!login_done(s))
		return;
	xmpp_close_stream(c);
	s->state = S_IDLE;
	login_slot_start(s);
}

static void login_conn_end(struct sess *s, struct conn *c)
{
	int was = s->state == S_LOGGING;

	login_end(s, c);
	if (was) {
		s->state = S_IDLE;
		login_slot_start(s);
	}
}

static uint64_t warm_until;

/* End of the warm-up: forget what was measured (TLS, PBKDF2 and server
 * caches are warm now) and start the measured window. */
static void login_reset(uint64_t now)
{
	memset(&lat_login, 0, sizeof(lat_login));
	memset(flights, 0, sizeof(flights));
	memset(reason_count, 0, sizeof(reason_count));
	nreasons = 0;
	logins_ok = logins_failed = sm_enabled = ended_sessions = 0;
	ramp_t0 = now;
	login_end_at = now + (uint64_t)((opt.count ? 3600 : opt.duration) * 1e9);
	warm_until = 0;
}

static void login_tick(uint64_t now)
{
	if (warm_until && now >= warm_until)
		login_reset(now);
	/* restart idle slots (after a failure with no socket, for example) */
	for (int i = 0; i < nsess; i++)
		if (sessions[i].state == S_IDLE && !sessions[i].c)
			login_slot_start(&sessions[i]);
	progress("login: %ld ok, %ld failed, %.0f/s", logins_ok, logins_failed,
		 (double)logins_ok / ((double)(now - ramp_t0) / 1e9));
}

static const struct mode_ops login_ops = {
	.on_ready = login_ready,
	.on_end = login_conn_end,
	.on_tick = login_tick,
};

static int logins_over(void)
{
	return inprog == 0 && (now_ns() >= login_end_at ||
			       (login_target && logins_ok + logins_failed >= login_target));
}

static int mode_login(void)
{
	double secs;
	int ok, lo, hi, rt;
	uint64_t t1;

	if (opt.users <= 0)
		opt.users = opt.concurrency;
	if (alloc_sessions(opt.concurrency) < 0)
		return 2;
	mode = &login_ops;
	login_target = opt.count;
	ramp_t0 = now_ns();
	login_end_at = ramp_t0 + (uint64_t)((opt.count ? 3600 : opt.duration) * 1e9);
	if (opt.warmup > 0) {
		warm_until = ramp_t0 + (uint64_t)(opt.warmup * 1e9);
		login_end_at += (uint64_t)(opt.warmup * 1e9);
	}
	for (int i = 0; i < nsess; i++)
		login_slot_start(&sessions[i]);
	run_until(logins_over, (opt.count ? 3600 : opt.duration) + opt.warmup + opt.timeout + 5);
	t1 = now_ns();
	secs = (double)(t1 - ramp_t0) / 1e9;
	run_until(nothing_live, 5);
	rt = flights_mode(&lo, &hi);
	ok = logins_failed == 0 && logins_ok > 0 && !stop_now();

	printf("\n== login  [%s]  concurrency %d, %.1f s\n", opt.label, opt.concurrency, secs);
	printf("  logins                 %ld ok, %ld failed, SM enabled %ld\n", logins_ok, logins_failed,
	       sm_enabled);
	printf("  rate                   %.0f logins/s\n", (double)logins_ok / secs);
	printf("  latency p50/p99/max    %.2f / %.2f / %.2f ms\n", ms(hist_pct(&lat_login, 50)),
	       ms(hist_pct(&lat_login, 99)), ms(lat_login.max));
	printf("  round trips            %d (min %d, max %d; TCP SYN counts as one)\n", rt, lo, hi);
	print_reasons();
	printf("  result                 %s\n", ok ? "OK" : "FAIL");

	json_begin("login");
	json_int("concurrency", opt.concurrency);
	json_num("warmup_s", opt.warmup);
	json_num("seconds", secs);
	json_num("logins_per_s", (double)logins_ok / secs);
	json_int("round_trips_min", lo);
	json_int("round_trips_max", hi);
	json_int("lost", 0);
	json_int("duplicated", 0);
	json_common();
	json_bool("ok", ok);
	json_end();
	return ok ? 0 : 1;
}

/* --- flood P M ---------------------------------------------------------------- */

struct pair {
	struct sess *tx, *rx;
	long sent;              /* messages written by the sender */
	long got;               /* distinct messages the receiver got */
	long dups;
	long reorder;           /* arrived with a sequence below the highest seen */
	long highest;           /* highest sequence seen, -1 none */
	uint8_t *seen;          /* bitmap of M bits */
	uint32_t *out_idx;      /* per sequence: the sender's stanza count before it (for a resend) */
	long resent;            /* messages sent again after the sender's resume */
};

/* --kill-cmd: a dropped session's way back (see "a node killed mid-flood" below) */
#define KILL_TRIES 5
#define KILL_RETRY_NS 200000000ull   /* 200 ms, times the attempt number */

struct kres {
	int tries;              /* connection attempts made for this drop */
	uint64_t t_drop;        /* when its connection ended */
	uint64_t retry_at;      /* next attempt (S_DROPPED) */
	uint32_t h_claimed;     /* the h it resumed with */
	uint32_t h_server;      /* the server's h in <resumed/> */
	int nfirst;
	long first[4];          /* the first stanzas after <resumed/>: message seq, -1 other, -2 presence */
};

static struct pair *pairs;
static int npairs;
static long per_pair;
static struct hist lat_msg;
static uint64_t flood_t0, flood_last;
static int flood_started;
static long flood_total_got;
static long flood_bounced;      /* type='error' messages back at a sender */
static struct kres *kres;       /* per session, for --kill-cmd (below) */
static char *padding;

static void flood_send_one(struct pair *p)
{
	struct sess *s = p->tx;
	uint64_t t = now_ns();

	if (!s->c || s->c->state != CS_ACTIVE)
		return;
	conn_printf(s->c, "<message to='%s' type='chat' id='m%ld'><body>%ld %llu%s</body></message>",
		    p->rx->jid, p->sent, p->sent, (unsigned long long)t, padding);
	p->out_idx[p->sent] = s->out;
	p->sent++;
	s->out++;
	if (opt.ack_every > 0 && s->out % (uint32_t)opt.ack_every == 0)
		xmpp_request_ack(s);
}

/* Windowed: keep at most W in flight end to end. Open loop: keep the
 * sender's own output queue short (the socket decides the pace). */
static void flood_fill(struct pair *p)
{
	int budget = 4096;

	if (!flood_started)
		return;
	if (opt.window > 0) {
		while (p->sent < per_pair && p->sent - p->got - p->dups < opt.window && budget-- > 0)
			flood_send_one(p);
		return;
	}
	while (p->sent < per_pair && p->tx->c && p->tx->c->olen < 65536 && budget-- > 0)
		flood_send_one(p);
}

static void flood_ready(struct sess *s)
{
	if (!login_done(s))
		return;
	/* available presence, as any client sends; the server echoes it to us */
	conn_write(s->c, "<presence/>", 11);
	s->out++;
}

static void flood_stanza(struct sess *s, struct xel *e)
{
	struct pair *p = s->mode;
	struct xel *b;
	long seq;
	unsigned long long ts;
	uint64_t now;

	if (s->since_ack >= (uint32_t)opt.ack_every && opt.ack_every > 0)
		xmpp_ack(s);
	if (p && s == p->tx && strcmp(e->name, "message") == 0) {
		const char *type = xel_attr(e, "type");
		struct xel *err = xel_child(e, "jabber:client", "error");

		/* a bounce: the server gave up on one of ours (counted, never retried) */
		if (type && strcmp(type, "error") == 0) {
			flood_bounced++;
			tally(err && err->child ? xmpp_intern("flood: bounced: ", err->child->name)
						: "flood: bounced");
		}
		return;
	}
	b = xel_child(e, "jabber:client", "body");
	if (kres && kres[s->idx].tries && kres[s->idx].nfirst < 4 && s->c && s->c->resume) {
		struct kres *k = &kres[s->idx];

		k->first[k->nfirst++] = strcmp(e->name, "presence") == 0 ? -2
					: b && b->text && sscanf(b->text, "%ld", &seq) == 1 ? seq : -1;
	}
	if (!p || s != p->rx || strcmp(e->name, "message") != 0)
		return;
	if (!b || !b->text || sscanf(b->text, "%ld %llu", &seq, &ts) != 2 || seq < 0 || seq >= per_pair) {
		tally("flood: unexpected message");
		return;
	}
	now = now_ns();
	if (p->seen[seq >> 3] & (1u << (seq & 7))) {
		p->dups++;
	} else {
		p->seen[seq >> 3] |= (uint8_t)(1u << (seq & 7));
		p->got++;
		flood_total_got++;
		hist_add(&lat_msg, now - ts);
	}
	if (seq < p->highest)
		p->reorder++;
	else
		p->highest = seq;
	flood_last = now;
	flood_fill(p);
}

/* --- flood: a node killed mid-flood (--kill-cmd), its sessions resumed elsewhere ---
 *
 * T ms after the flood starts the command runs (/bin/sh -c, not waited for
 * in the loop). From then on a session whose connection ends without us
 * closing it is "dropped": it reconnects to --resume-port and resumes with
 * the h it has handled (a receiver has handled all it got), retrying a
 * connection that fails (refused, reset) up to KILL_TRIES times. A sender
 * that comes back resends every message the server's <resumed h/> does not
 * cover, as a XEP-0198 client must; the receivers' bitmaps then show what
 * was lost or duplicated across the kill. */


static pid_t kill_pid;
static int kill_fired, kill_status = -1;
static uint64_t kill_at;
static long kill_dropped, kill_resumed, kill_failed;
static struct hist lat_kill_resume;

static void kill_run(uint64_t now)
{
	char *argv[] = { "/bin/sh", "-c", (char *)opt.kill_cmd, NULL };
	int rc;

	kill_fired = 1;
	kill_at = now;
	rc = posix_spawn(&kill_pid, "/bin/sh", NULL, NULL, argv, environ);
	if (rc != 0) {
		fprintf(stderr, "tether-bench: --kill-cmd: %s\n", strerror(rc));
		kill_pid = 0;
		kill_status = 127;
	}
	if (!opt.quiet)
		fprintf(stderr, "\ntether-bench: ran --kill-cmd at +%ld ms\n", (long)((now - flood_t0) / 1000000));
}

/* Collects the command's exit status; with <wait_s> > 0 waits that long,
 * then kills it (our own child, by pid). */
static void kill_reap(double wait_s)
{
	uint64_t end = now_ns() + (uint64_t)(wait_s * 1e9);
	int st;

	while (kill_pid > 0) {
		pid_t r = waitpid(kill_pid, &st, WNOHANG);

		if (r == kill_pid) {
			kill_status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
			kill_pid = 0;
			return;
		}
		if (r == -1 && errno != EINTR) {
			kill_pid = 0;
			return;
		}
		if (wait_s <= 0)
			return;
		if (now_ns() > end) {
			kill(kill_pid, SIGKILL);
			wait_s = 0.5;
			end = now_ns() + 500000000ull;
			continue;
		}
		net_run_once(10);
	}
}

static void kill_reconnect(struct sess *s, uint64_t now)
{
	struct kres *k = &kres[s->idx];
	struct conn *c;

	k->tries++;
	s->port = opt.resume_port;
	s->h_report = s->h_in;          /* everything received was handled */
	c = conn_open(s);
	if (!c) {
		k->retry_at = now + KILL_RETRY_NS * (uint64_t)k->tries;
		if (k->tries >= KILL_TRIES) {
			s->state = S_FAILED;
			kill_failed++;
			tally("kill: no socket/slot for the resume");
		}
		return;
	}
	c->resume = 1;
	s->state = S_RESUMING;
}

static void flood_resumed(struct sess *s, int ok)
{
	struct pair *p = s->mode;
	uint64_t now = now_ns();

	if (s->state != S_RESUMING)
		return;
	if (!ok) {
		s->state = S_FAILED;
		kill_failed++;
		tally(s->c && s->c->why ? s->c->why : "resume failed");
		if (s->c)
			conn_close(s->c, END_LOCAL, NULL);
		return;
	}
	kill_resumed++;
	hist_add(&lat_kill_resume, now - kres[s->idx].t_drop);
	kres[s->idx].h_claimed = s->h_report;
	kres[s->idx].h_server = s->acked;
	s->state = S_READY;
	if (p && s == p->tx) {
		/* <resumed h/>: the server handled our first h stanzas; the
		 * messages after them were lost with the node: send them again */
		long k = p->sent;

		while (k > 0 && p->out_idx[k - 1] >= s->acked)
			k--;
		p->resent += p->sent - k;
		p->sent = k;
		s->out = s->acked;
	}
	if (p)
		flood_fill(p);
}

static void flood_tick(uint64_t now)
{
	ramp_tick(now);
	if (flood_started && opt.kill_cmd && !kill_fired &&
	    now - flood_t0 >= (uint64_t)opt.kill_after_ms * 1000000ull)
		kill_run(now);
	if (kill_fired) {
		kill_reap(0);
		for (int i = 0; i < nsess; i++)
			if (sessions[i].state == S_DROPPED && now >= kres[i].retry_at)
				kill_reconnect(&sessions[i], now);
	}
	if (flood_started && opt.window == 0)
		for (int i = 0; i < npairs; i++)
			flood_fill(&pairs[i]);
	if (flood_started)
		progress("flood: %ld / %ld delivered, %.0f msg/s", flood_total_got, (long)npairs * per_pair,
			 (double)flood_total_got / ((double)(now - flood_t0) / 1e9));
	else
		progress("flood: login %ld up, %ld failed", logins_ok, logins_failed);
}

static void flood_end(struct sess *s, struct conn *c)
{
	uint64_t now = now_ns();
	struct kres *k = kres ? &kres[s->idx] : NULL;

	if (kill_fired && s->state == S_READY && s->sm_id && c->end != END_LOCAL) {
		kill_dropped++;
		k->tries = 0;
		k->t_drop = k->retry_at = now;
		s->state = S_DROPPED;
		return;
	}
	if (s->state == S_RESUMING) {
		/* the resume's connection failed before <resumed/>: again, bounded */
		if (k->tries < KILL_TRIES) {
			k->retry_at = now + KILL_RETRY_NS * (uint64_t)k->tries;
			s->state = S_DROPPED;
			return;
		}
		s->state = S_FAILED;
		kill_failed++;
		tally(end_name(c));
		return;
	}
	login_end(s, c);
}

static const struct mode_ops flood_ops = {
	.on_ready = flood_ready,
	.on_resumed = flood_resumed,
	.on_stanza = flood_stanza,
	.on_end = flood_end,
	.on_tick = flood_tick,
};

static int flood_complete(void)
{
	return flood_total_got >= (long)npairs * per_pair;
}

/* For a run that lost or duplicated: which messages, for up to 5 pairs, so
 * a server bug can be looked for in the logs (user names, sequence numbers). */
static void flood_print_losses(void)
{
	int shown = 0;

	for (int i = 0; i < npairs && shown < 5; i++) {
		struct pair *p = &pairs[i];
		char tx[64], rx[64];
		int n = 0;

		if (p->got == per_pair && !p->dups && !p->reorder)
			continue;
		shown++;
		printf("  pair %d %s -> %s: got %ld, dup %ld, reordered %ld, sender sent %ld, resent %ld, acked h %u "
		       "of %u; missing:", i, xmpp_user(p->tx->user, tx, sizeof(tx)),
		       xmpp_user(p->rx->user, rx, sizeof(rx)), p->got, p->dups, p->reorder, p->sent, p->resent,
		       p->tx->acked, p->tx->out);
		for (long q = 0; q < per_pair && n < 8; q++)
			if (!(p->seen[q >> 3] & (1u << (q & 7)))) {
				printf(" %ld", q);
				n++;
			}
		printf("%s\n", n == 8 ? " ..." : "");
		if (kres && (kres[p->tx->idx].tries || kres[p->rx->idx].tries)) {
			const struct kres *kt = &kres[p->tx->idx], *kr = &kres[p->rx->idx];

			printf("    sender resumed: %s, h claimed %u, server's h %u; receiver resumed: %s, h claimed %u, "
			       "server's h %u, then:", kt->tries ? "yes" : "no", kt->h_claimed, kt->h_server,
			       kr->tries ? "yes" : "no", kr->h_claimed, kr->h_server);
			for (int j = 0; j < kr->nfirst; j++)
				printf(" %s%ld", kr->first[j] == -2 ? "presence" : kr->first[j] == -1 ? "other" : "",
				       kr->first[j] < 0 ? 0L : kr->first[j]);
			printf("\n");
		}
	}
}

static int kill_settled(void)
{
	for (int i = 0; i < nsess; i++)
		if (sessions[i].state == S_DROPPED || sessions[i].state == S_RESUMING)
			return 0;
	return 1;
}

static int flood_stalled(void)
{
	if (flood_complete())
		return 1;
	return opt.timeout > 0 && now_ns() - flood_last > (uint64_t)(opt.timeout * 1e9);
}

static int acks_complete(void)
{
	for (int i = 0; i < npairs; i++) {
		struct sess *s = pairs[i].tx;

		if (s->sm_on && s->c && s->acked != s->out)
			return 0;
	}
	return 1;
}

static int mode_flood(int np, long m)
{
	long lost = 0, dups = 0, reorder = 0, sent = 0, unacked = 0, resent = 0;
	const char *name = opt.window > 0 ? "flood-windowed" : "flood-open";
	double secs;
	int ok;

	if (np <= 0 || m <= 0 || alloc_sessions(2 * np) < 0)
		return 2;
	npairs = np;
	per_pair = m;
	pairs = calloc((size_t)np, sizeof(*pairs));
	padding = calloc(1, (size_t)opt.body_size + 2);
	if (!pairs || !padding)
		return 2;
	if (opt.body_size > 40) {
		padding[0] = ' ';
		memset(padding + 1, 'x', (size_t)opt.body_size - 40);
	}
	for (int i = 0; i < np; i++) {
		pairs[i].tx = &sessions[2 * i];
		pairs[i].rx = &sessions[2 * i + 1];
		pairs[i].highest = -1;
		pairs[i].seen = calloc((size_t)m / 8 + 1, 1);
		pairs[i].out_idx = calloc((size_t)m, sizeof(*pairs[i].out_idx));
		if (!pairs[i].seen || !pairs[i].out_idx)
			return 2;
		if (opt.recv_port > 0)
			pairs[i].rx->port = opt.recv_port;   /* every message crosses nodes */
		sessions[2 * i].mode = sessions[2 * i + 1].mode = &pairs[i];
	}
	kres = calloc((size_t)nsess, sizeof(*kres));
	if (!kres)
		return 2;
	mode = &flood_ops;
	ramp_t0 = now_ns();
	run_until(logins_complete, (double)nsess / opt.rate + opt.timeout + 30);
	if (logins_failed == 0 && !stop_now()) {
		run_until(NULL, 0.5);             /* presence settles */
		flood_started = 1;
		flood_t0 = flood_last = now_ns();
		for (int i = 0; i < np; i++)
			flood_fill(&pairs[i]);
		/* bounded twice: no progress for opt.timeout, or one hour */
		uint64_t hard = now_ns() + 3600ull * 1000000000ull;

		while (!stop_now() && !flood_stalled() && now_ns() < hard)
			net_run_once(10);
		/* a resume still under way (the flood may end while one is) */
		if (kill_fired)
			run_until(kill_settled, opt.timeout);
		for (int i = 0; i < np; i++)
			xmpp_request_ack(pairs[i].tx);
		run_until(acks_complete, 3);
	}
	if (opt.kill_cmd)
		kill_reap(kill_fired ? 5 : 0);
	secs = flood_last > flood_t0 ? (double)(flood_last - flood_t0) / 1e9 : NAN;
	for (int i = 0; i < np; i++) {
		lost += m - pairs[i].got;
		dups += pairs[i].dups;
		reorder += pairs[i].reorder;
		sent += pairs[i].sent;
		resent += pairs[i].resent;
		if (pairs[i].tx->sm_on)
			unacked += (long)(pairs[i].tx->out - pairs[i].tx->acked);
	}
	ok = flood_started && lost == 0 && dups == 0 && reorder == 0 && ended_sessions == 0 && logins_failed == 0 &&
	     !stop_now();
	if (opt.kill_cmd) {
		if (!kill_fired)
			tally("kill: the flood ended before --kill-after-ms");
		if (kill_fired && kill_dropped == 0)
			tally("kill: no session dropped");
		ok = ok && kill_fired && kill_dropped > 0 && kill_failed == 0 && kill_resumed == kill_dropped;
	}

	printf("\n== %s %d x %ld  [%s]  window %d, ack every %d\n", name, np, m, opt.label, opt.window,
	       opt.ack_every);
	printf("  sessions               %ld up, %ld failed, SM enabled %ld\n", logins_ok, logins_failed, sm_enabled);
	if (ok)
		printf("  delivered              %.0f msg/s (%ld in %.2f s)\n", (double)flood_total_got / secs,
		       flood_total_got, secs);
	else
		printf("  delivered              FAIL (%ld of %ld)\n", flood_total_got, (long)np * m);
	printf("  latency p50/p99/max    %.2f / %.2f / %.2f ms\n", ms(hist_pct(&lat_msg, 50)),
	       ms(hist_pct(&lat_msg, 99)), ms(lat_msg.max));
	printf("  lost / dup / reordered %ld / %ld / %ld\n", lost, dups, reorder);
	printf("  sender stanzas unacked %ld\n", unacked);
	printf("  bounced to senders     %ld\n", flood_bounced);
	printf("  ended by server        %ld\n", ended_sessions);
	if (opt.recv_port > 0)
		printf("  nodes                  senders on port %d, receivers on port %d\n", opt.port, opt.recv_port);
	if (opt.kill_cmd) {
		printf("  kill                   %s at +%ld ms (exit %d)\n", kill_fired ? "ran" : "NOT RUN",
		       kill_fired ? (long)((kill_at - flood_t0) / 1000000) : -1L, kill_status);
		printf("  dropped / resumed      %ld / %ld (%ld failed) on port %d\n", kill_dropped, kill_resumed,
		       kill_failed, opt.resume_port);
		printf("  drop -> resumed        p50/p99/max %.2f / %.2f / %.2f ms\n", ms(hist_pct(&lat_kill_resume, 50)),
		       ms(hist_pct(&lat_kill_resume, 99)), ms(lat_kill_resume.max));
		printf("  resent by senders      %ld\n", resent);
	}
	if (lost || dups || reorder)
		flood_print_losses();
	print_reasons();
	printf("  result                 %s\n", ok ? "OK" : "FAIL");

	json_begin(name);
	json_int("pairs", np);
	json_int("messages_per_pair", m);
	json_int("window", opt.window);
	json_int("ack_every", opt.ack_every);
	json_int("sent", sent);
	json_int("delivered", flood_total_got);
	json_num("seconds", secs);
	json_num("msgs_per_s", ok ? (double)flood_total_got / secs : NAN);
	json_hist_ms("latency", &lat_msg);
	json_int("lost", lost);
	json_int("duplicated", dups);
	json_int("reordered", reorder);
	json_int("unacked_by_server", unacked);
	json_int("bounced", flood_bounced);
	if (opt.recv_port > 0) {
		json_int("port", opt.port);
		json_int("recv_port", opt.recv_port);
	}
	if (opt.kill_cmd) {
		json_int("kill_after_ms", opt.kill_after_ms);
		json_int("kill_at_ms", kill_fired ? (long long)((kill_at - flood_t0) / 1000000) : -1);
		json_int("kill_exit", kill_status);
		json_int("resume_port", opt.resume_port);
		json_int("dropped", kill_dropped);
		json_int("resumed", kill_resumed);
		json_int("resume_failed", kill_failed);
		json_hist_ms("drop_to_resumed", &lat_kill_resume);
		json_int("resent", resent);
	}
	json_common();
	json_bool("ok", ok);
	json_end();
	close_all();
	return ok ? 0 : 1;
}

/* --- resume K ----------------------------------------------------------------- */

static struct hist lat_resume;
static long resumes_ok, resumes_failed, redelivered, redeliver_expected, redeliver_dups;
static long resumes_tls_reused;  /* of resumes_ok: abbreviated TLS handshake (ticket accepted) */
static long resume_flights[64];
static int resume_next, resume_inprog, preps_left;
static long resume_round, resume_rounds;
static int resume_phase;        /* 0 login, 1 prep, 2 resume */

static void resume_start_one(struct sess *s)
{
	struct conn *old = s->c, *c;

	/* abrupt: no </stream:stream>, no final <a/>; the server sees a FIN */
	if (old)
		conn_abort(old);
	/* --resume-on 2: back on the node the session is not on, so every
	 * round (not only the first) crosses nodes */
	if (opt.resume_on == 2)
		s->port = s->port == opt.port2 ? opt.port : opt.port2;
	c = conn_open(s);
	if (!c) {
		resumes_failed++;
		tally("no socket/slot");
		s->state = S_FAILED;
		return;
	}
	c->resume = 1;
	s->t0 = c->t_start;
	s->state = S_RESUMING;
	resume_inprog++;
}

static void resume_pump(void)
{
	int budget = 10000;

	while (resume_phase == 2 && resume_inprog < opt.concurrency && budget-- > 0) {
		struct sess *s;

		if (resume_next >= nsess) {
			if (resume_inprog || ++resume_round >= resume_rounds)
				return;
			resume_next = 0;      /* next round: prepare again */
			resume_phase = 1;
			return;
		}
		s = &sessions[resume_next++];
		if (s->state != S_DROPPED)
			continue;
		resume_start_one(s);
	}
}

/* Sends <opt.redeliver> messages to ourselves and withholds their acks, so
 * the server must redeliver them after the resume. */
static void resume_prep(struct sess *s)
{
	s->mute_acks = 1;
	s->state = S_PREP;
	s->h_report = s->h_in;
	s->since_ack = 0;
	if (opt.redeliver == 0) {
		s->state = S_DROPPED;
		preps_left--;
		return;
	}
	for (int k = 0; k < opt.redeliver; k++) {
		conn_printf(s->c, "<message to='%s' type='chat' id='rd%d'><body>redeliver %d</body></message>", s->jid,
			    k, k);
		s->out++;
	}
}

static const char *const kind_name[] = {
	[RESUME_CLASSIC] = "classic", [RESUME_ISR] = "isr", [RESUME_FAST] = "fast",
};

/* Can <s> come back the way this run measures? */
static int resumable_kind(const struct sess *s)
{
	if (!s->sm_id)
		return 0;
	switch (opt.resume_kind) {
	case RESUME_ISR:
		return s->isr_token != NULL;
	case RESUME_FAST:
		return s->fast_token != NULL;
	default:
		return 1;
	}
}

static void resume_ready(struct sess *s)
{
	login_done(s);
	if (s->state == S_READY && !s->sm_id)
		tally("sm: resumption not offered");
	else if (s->state == S_READY && opt.resume_kind == RESUME_ISR && !s->isr_token)
		tally("isr: not supported (no <isr-enabled/> token)");
	else if (s->state == S_READY && opt.resume_kind == RESUME_FAST && !s->fast_token)
		tally("fast: not supported (no <token/> in <success/>)");
}

static void resume_resumed(struct sess *s, int ok)
{
	uint64_t now = now_ns();

	if (s->state != S_RESUMING)
		return;
	resume_inprog--;
	if (!ok) {
		resumes_failed++;
		tally(s->c && s->c->why ? s->c->why : "resume failed");
		s->state = S_FAILED;
		if (s->c)
			conn_close(s->c, END_LOCAL, NULL);
		resume_pump();
		return;
	}
	resumes_ok++;
	if (s->c->flags & CONN_F_TLS_REUSED)
		resumes_tls_reused++;
	hist_add(&lat_resume, now - s->t0);
	resume_flights[s->c->flights < 63 ? s->c->flights : 63]++;
	redeliver_expected += opt.redeliver;
	s->state = S_COUNTING;
	s->mute_acks = 0;
	s->since_ack = 0;
	xmpp_request_ack(s);     /* its <a/> comes after every redelivered stanza */
	resume_pump();
}

static void resume_stanza(struct sess *s, struct xel *e)
{
	if (strcmp(e->name, "message") != 0)
		return;
	if (s->state == S_PREP) {
		if (s->h_in - s->h_report >= (uint32_t)opt.redeliver) {
			s->state = S_DROPPED;
			preps_left--;
		}
	} else if (s->state == S_COUNTING) {
		redelivered++;
		if (s->since_ack > (uint32_t)opt.redeliver)
			redeliver_dups++;
	}
}

static void resume_ack(struct sess *s, uint32_t h)
{
	(void)h;
	if (s->state != S_COUNTING)
		return;
	xmpp_ack(s);
	s->state = S_READY;
}

static void resume_conn_end(struct sess *s, struct conn *c)
{
	if (s->state == S_DROPPED && c->end == END_LOCAL)
		return;                       /* our own abort */
	if (s->state == S_RESUMING) {
		resume_inprog--;
		resumes_failed++;
		tally(end_name(c));
		s->state = S_FAILED;
		resume_pump();
		return;
	}
	if (s->state == S_PREP)
		preps_left--;
	login_end(s, c);
}

static void resume_tick(uint64_t now)
{
	if (resume_phase == 0)
		ramp_tick(now);
	resume_pump();
	progress("resume: phase %d, %ld resumed, %ld failed", resume_phase, resumes_ok, resumes_failed);
}

static const struct mode_ops resume_ops = {
	.on_ready = resume_ready,
	.on_resumed = resume_resumed,
	.on_stanza = resume_stanza,
	.on_ack = resume_ack,
	.on_end = resume_conn_end,
	.on_tick = resume_tick,
};

static int preps_done(void)
{
	return preps_left <= 0;
}

static int resumes_done(void)
{
	if (resume_inprog)
		return 0;
	for (int i = 0; i < nsess; i++)
		if (sessions[i].state == S_COUNTING)
			return 0;
	return resume_phase != 2 || resume_next >= nsess;
}

static int mode_resume(int k)
{
	uint64_t t0, phase_ns = 0;
	int lo = 0, hi = 0, rt = 0, ok, resumable = 0;
	double secs;

	if (opt.resume_on == 2 && opt.port2 <= 0) {
		fprintf(stderr, "tether-bench: resuming on the other node needs --port2\n");
		return 2;
	}
	if (opt.tls_tickets < 0)
		opt.tls_tickets = 1;
	if (alloc_sessions(k) < 0)
		return 2;
	mode = &resume_ops;
	resume_rounds = opt.count > 0 ? opt.count : 1;
	ramp_t0 = now_ns();
	run_until(logins_complete, (double)k / opt.rate + opt.timeout + 30);
	for (int i = 0; i < k; i++)
		if (sessions[i].state == S_READY && resumable_kind(&sessions[i]))
			resumable++;
	for (resume_round = 0; resume_round < resume_rounds && resumable > 0 && !stop_now();) {
		long round = resume_round;

		resume_phase = 1;
		preps_left = 0;
		for (int i = 0; i < k; i++)
			if ((sessions[i].state == S_READY) && resumable_kind(&sessions[i]) && sessions[i].c) {
				preps_left++;
				resume_prep(&sessions[i]);
			}
		if (!preps_left)
			break;
		run_until(preps_done, opt.timeout);
		resume_phase = 2;
		resume_next = 0;
		t0 = now_ns();
		resume_pump();
		run_until(resumes_done, opt.timeout + (double)k / 100.0 + 10);
		phase_ns += now_ns() - t0;
		if (resume_round == round)
			resume_round++;
	}
	for (int i = 0; i < 64; i++)
		if (resume_flights[i]) {
			if (!lo)
				lo = i;
			hi = i;
			if (resume_flights[i] > resume_flights[rt])
				rt = i;
		}
	secs = (double)phase_ns / 1e9;
	ok = resumable == k && resumes_failed == 0 && resumes_ok == (long)k * resume_rounds &&
	     redelivered == redeliver_expected && redeliver_dups == 0 && ended_sessions == 0 && !stop_now();

	printf("\n== resume %d  [%s]  %s%s, %ld round(s), concurrency %d, TLS tickets %s\n", k, opt.label,
	       kind_name[opt.resume_kind], opt.resume_on == 2 ? " on the other node" : "", resume_rounds,
	       opt.concurrency, opt.tls_tickets ? "on" : "off");
	printf("  sessions               %ld up, %ld failed, resumable %d\n", logins_ok, logins_failed, resumable);
	printf("  resumes                %ld ok, %ld failed\n", resumes_ok, resumes_failed);
	printf("  rate                   %.0f resumes/s\n", secs > 0 ? (double)resumes_ok / secs : 0.0);
	printf("  latency p50/p99/max    %.3f / %.3f / %.3f ms\n", ms(hist_pct(&lat_resume, 50)),
	       ms(hist_pct(&lat_resume, 99)), ms(lat_resume.max));
	printf("  round trips to resumed %d (min %d, max %d)\n", rt, lo, hi);
	if (opt.tls_tickets)
		printf("  TLS ticket accepted    %ld of %ld resumes\n", resumes_tls_reused, resumes_ok);
	printf("  redelivered            %ld of %ld expected (%ld extra)\n", redelivered, redeliver_expected,
	       redeliver_dups);
	print_reasons();
	printf("  result                 %s\n", ok ? "OK" : "FAIL");

	json_begin("resume");
	json_str("resume_kind", kind_name[opt.resume_kind]);
	json_bool("cross_node", opt.resume_on == 2);
	if (opt.resume_on == 2) {
		json_int("port", opt.port);
		json_int("port2", opt.port2);
	}
	json_int("concurrency", opt.concurrency);
	if (resumable == 0)
		json_str("reason", nreasons ? reason_name[0] : "no session could be resumed");
	json_int("sessions", k);
	json_int("resumable", resumable);
	json_int("resumes_ok", resumes_ok);
	json_int("resumes_failed", resumes_failed);
	json_num("seconds", secs);
	json_num("resumes_per_s", secs > 0 ? (double)resumes_ok / secs : NAN);
	json_hist_ms("resume", &lat_resume);
	json_int("round_trips", rt);
	json_int("round_trips_min", lo);
	json_int("round_trips_max", hi);
	json_int("redelivered", redelivered);
	json_int("redeliver_expected", redeliver_expected);
	json_int("lost", redeliver_expected - redelivered > 0 ? redeliver_expected - redelivered : 0);
	json_int("duplicated", redeliver_dups);
	json_int("tls_tickets", opt.tls_tickets);
	json_int("tls_resumed", resumes_tls_reused);
	json_common();
	json_bool("ok", ok);
	json_end();
	close_all();
	return ok ? 0 : 1;
}

/* --- presence N ------------------------------------------------------------- */

/* N users whose rosters are rings: user i has the K users i-K/2 .. i+K/2
 * (not itself, modulo N) as contacts with subscription both, provisioned
 * on the server beforehand (bench/compare does it for each server). Each
 * logs in, gets its roster and sends initial presence (the login storm);
 * once every one is online each sends --updates presence changes (the
 * broadcast storm). The first --observers users log in first; with --csi
 * they send XEP-0352 <inactive/> before their roster, and the bytes they
 * receive during the broadcast storm are what CSI is meant to save. */

#define PR_UPDATE_TAG "pu"      /* <status>pu<seq></status> */

struct psess {
	int observer;           /* one of the first --observers users */
	int inactive;           /* sent <inactive/> */
	int online;             /* roster received, initial presence sent */
	long roster_items;      /* -1 until the roster result */
	uint8_t *seen;          /* contact slots seen available */
	int nseen;
	long avail_got;         /* available presence from contacts (duplicates too) */
	long self_got;          /* its own presence echoed */
	long upd_got;           /* updates from contacts */
	long other_got;         /* presence from anyone else */
	long unavail_got;       /* unavailable presence from contacts */
	uint64_t t_online;
	uint64_t wire0, plain0; /* counters when the broadcast storm began */
	uint64_t wire1, plain1; /* ... and when it ended */
};

static struct psess *ps;
static int pr_half;             /* K/2 */
static int pr_storm;            /* 0 login storm, 1 broadcast storm, 2 over */
static long pr_online, pr_avail_total, pr_upd_total, pr_upd_active;
static long pr_upd_expected;
static uint64_t pr_t0, pr_t_online_last, pr_t_avail_last, pr_t_storm, pr_t_upd_last, pr_last;
static long pr_csi_offered;

/* The contact slot (0 .. K-1) of user <j> in <i>'s roster, or -1. */
static int pr_slot(int i, int j)
{
	int d = ((j - i) % nsess + nsess) % nsess;

	if (d >= 1 && d <= pr_half)
		return d - 1;
	if (d >= nsess - pr_half)
		return pr_half + (nsess - d) - 1;
	return -1;
}

/* The session index of the bare JID at the start of <from>, or -1. */
static int pr_sender(const char *from)
{
	char node[256];
	const char *at = from ? strchr(from, '@') : NULL;
	int u;

	if (!at || (size_t)(at - from) >= sizeof(node))
		return -1;
	memcpy(node, from, (size_t)(at - from));
	node[at - from] = '\0';
	/* the node is --user's pattern with a number for its %d */
	const char *pct = strstr(opt.user_fmt, "%d");
	size_t pre = pct ? (size_t)(pct - opt.user_fmt) : 0;
	char *end;
	long v;

	if (!pct || strncmp(node, opt.user_fmt, pre) != 0 || !isdigit((unsigned char)node[pre]))
		return -1;
	v = strtol(node + pre, &end, 10);
	if (strcmp(end, pct + 2) != 0 || v > INT_MAX)
		return -1;
	u = (int)v - opt.user_base;
	return u >= 0 && u < nsess ? u : -1;
}

static void presence_ready(struct sess *s)
{
	struct psess *p = &ps[s->idx];

	if (!login_done(s))
		return;
	if (s->c->csi_offered)
		pr_csi_offered++;
	if (p->observer && opt.csi && s->c->csi_offered) {
		conn_write(s->c, "<inactive xmlns='urn:xmpp:csi:0'/>", 34);
		p->inactive = 1;        /* a nonza: not counted by SM */
	}
	conn_write(s->c, "<iq type='get' id='roster'><query xmlns='jabber:iq:roster'/></iq>", 65);
	if (s->sm_on)
		s->out++;
}

static void presence_stanza(struct sess *s, struct xel *e)
{
	struct psess *p = &ps[s->idx];
	uint64_t now = now_ns();

	/* an inactive client sends nothing of its own: it answers <r/> only
	 * (some servers, Prosody's mod_csi_simple, flush on any input) */
	if (!p->inactive && opt.ack_every > 0 && s->since_ack >= (uint32_t)opt.ack_every)
		xmpp_ack(s);
	if (strcmp(e->name, "iq") == 0) {
		const char *id = xel_attr(e, "id"), *type = xel_attr(e, "type");
		struct xel *q = xel_child(e, "jabber:iq:roster", "query");

		if (!id || strcmp(id, "roster") != 0 || p->roster_items >= 0)
			return;
		if (!type || strcmp(type, "result") != 0 || !q) {
			tally("presence: roster get failed");
			p->roster_items = 0;
		} else {
			p->roster_items = 0;
			for (struct xel *it = q->child; it; it = it->next)
				if (strcmp(it->name, "item") == 0)
					p->roster_items++;
		}
		conn_write(s->c, "<presence/>", 11);
		if (s->sm_on)
			s->out++;
		p->online = 1;
		p->t_online = now;
		pr_online++;
		pr_t_online_last = pr_last = now;
		return;
	}
	if (strcmp(e->name, "presence") != 0)
		return;
	const char *type = xel_attr(e, "type");
	int j = pr_sender(xel_attr(e, "from")), slot;
	struct xel *st = xel_child(e, "jabber:client", "status");

	pr_last = now;
	if (j == s->idx) {
		p->self_got++;
		return;
	}
	slot = j >= 0 ? pr_slot(s->idx, j) : -1;
	if (slot < 0) {
		p->other_got++;
		return;
	}
	if (type && strcmp(type, "unavailable") == 0) {
		p->unavail_got++;       /* a probe's answer for a contact not online yet */
		return;
	}
	if (type) {
		tally(xmpp_intern("presence: type ", type));
		return;
	}
	if (st && st->text && strncmp(st->text, PR_UPDATE_TAG, 2) == 0) {
		p->upd_got++;
		pr_upd_total++;
		if (!p->inactive)
			pr_upd_active++;
		pr_t_upd_last = now;
		return;
	}
	p->avail_got++;
	pr_avail_total++;
	pr_t_avail_last = now;
	if (!(p->seen[slot >> 3] & (1u << (slot & 7)))) {
		p->seen[slot >> 3] |= (uint8_t)(1u << (slot & 7));
		p->nseen++;
	}
}

static void presence_tick(uint64_t now)
{
	ramp_tick(now);
	if (pr_storm == 0)
		progress("presence: %ld online, %ld failed, %ld presence from contacts", pr_online, logins_failed,
			 pr_avail_total);
	else
		progress("presence: storm %ld / %ld updates to active clients, %.0f/s", pr_upd_active,
			 pr_upd_expected, (double)pr_upd_total / ((double)(now - pr_t_storm) / 1e9));
}

static const struct mode_ops presence_ops = {
	.on_ready = presence_ready,
	.on_stanza = presence_stanza,
	.on_end = login_end,
	.on_tick = presence_tick,
};

/* Every session online and every active one has seen all its contacts. */
static int presence_settled(void)
{
	if (!logins_complete() || pr_online + logins_failed < nsess)
		return 0;
	for (int i = 0; i < nsess; i++)
		if (ps[i].online && !ps[i].inactive && ps[i].nseen < opt.contacts)
			return 0;
	return 1;
}

static int presence_stalled(int (*done)(void))
{
	return done() || now_ns() - pr_last > (uint64_t)(opt.timeout * 1e9);
}

static int pr_login_done(void)
{
	return presence_stalled(presence_settled);
}

static int updates_complete(void)
{
	return pr_upd_active >= pr_upd_expected;
}

static int pr_storm_done(void)
{
	return presence_stalled(updates_complete);
}

static void prewarm_ready(struct sess *s)
{
	if (login_done(s))
		xmpp_close_stream(s->c);
}

static const struct mode_ops prewarm_ops = {
	.on_ready = prewarm_ready,
	.on_end = login_end,
	.on_tick = idle_tick,
};

/* --prewarm: every user logs in once and leaves, unmeasured, so the
 * bench's SCRAM cache holds each user's SaltedPassword (tetherd salts each
 * user apart: without this the bench, not the server, would pace the
 * login storm with a PBKDF2 per user) and the server has read its users
 * once. Returns 0, or -1 if a login failed. */
static int presence_prewarm(int n)
{
	int failed;

	mode = &prewarm_ops;
	ramp_t0 = now_ns();
	run_until(logins_complete, (double)n / opt.rate + opt.timeout + 60);
	failed = logins_failed > 0 || !logins_complete();
	close_all();
	logins_ok = logins_failed = sm_enabled = ended_sessions = 0;
	inprog = next_start = 0;
	memset(&lat_login, 0, sizeof(lat_login));
	memset(flights, 0, sizeof(flights));
	for (int i = 0; i < n; i++) {
		sessions[i].state = S_IDLE;
		sessions[i].rx_wire = sessions[i].rx_plain = 0;
	}
	return failed ? -1 : 0;
}

static int mode_presence(int n)
{
	long seen_min = -1, roster_bad = 0, incomplete = 0, inactive = 0, self = 0, other = 0, unavail = 0;
	long active_n = 0, obs_n = 0, upd_active_expected_each = (long)opt.contacts * opt.updates;
	long lost = 0, dups = 0;
	double obs_plain = 0, obs_wire = 0, act_plain = 0, act_wire = 0, obs_total = 0;
	double login_s = NAN, storm_s = NAN, logins_rate = NAN, avail_rate = NAN, storm_rate = NAN;
	int ok;

	if (opt.contacts < 2 || opt.contacts % 2 || n <= opt.contacts || opt.updates < 0 || opt.observers < 0 ||
	    opt.observers > n) {
		fprintf(stderr, "tether-bench: presence needs an even --contacts K >= 2, N > K, 0 <= --observers <= N\n");
		return 2;
	}
	if (alloc_sessions(n) < 0 || !(ps = calloc((size_t)n, sizeof(*ps))))
		return 2;
	pr_half = opt.contacts / 2;
	for (int i = 0; i < n; i++) {
		ps[i].observer = i < opt.observers;
		ps[i].roster_items = -1;
		if (!(ps[i].seen = calloc((size_t)opt.contacts / 8 + 1, 1)))
			return 2;
		sessions[i].mode = &ps[i];
	}
	if (opt.prewarm && presence_prewarm(n) < 0) {
		fprintf(stderr, "tether-bench: presence: the --prewarm logins did not all succeed\n");
		print_reasons();
		return 1;
	}
	mode = &presence_ops;
	pr_t0 = pr_last = ramp_t0 = now_ns();
	/* the login storm: bounded by no progress for --timeout, and 1 h */
	run_until(pr_login_done, 3600);
	for (int i = 0; i < n; i++)
		inactive += ps[i].inactive;
	if (pr_online == n && !stop_now()) {
		pr_upd_expected = (long)(n - inactive) * upd_active_expected_each;
		for (int i = 0; i < n; i++) {
			ps[i].wire0 = sessions[i].rx_wire;
			ps[i].plain0 = sessions[i].rx_plain;
		}
		pr_storm = 1;
		pr_t_storm = pr_last = now_ns();
		for (int u = 1; u <= opt.updates; u++)
			for (int i = 0; i < n; i++) {
				struct sess *s = &sessions[i];

				if (!s->c || s->c->state != CS_ACTIVE)
					continue;
				conn_printf(s->c, "<presence><show>%s</show><status>" PR_UPDATE_TAG "%d</status></presence>",
					    u % 2 ? "away" : "chat", u);
				if (s->sm_on)
					s->out++;
			}
		run_until(pr_storm_done, 3600);
		/* what the inactive ones get besides: the rest of the flight */
		run_until(NULL, 0.2);
		for (int i = 0; i < n; i++) {
			ps[i].wire1 = sessions[i].rx_wire;
			ps[i].plain1 = sessions[i].rx_plain;
		}
		pr_storm = 2;
	}
	for (int i = 0; i < n; i++) {
		struct psess *p = &ps[i];
		double plain = (double)(p->plain1 - p->plain0), wire = (double)(p->wire1 - p->wire0);

		if (!p->online)
			continue;
		if (p->roster_items != opt.contacts)
			roster_bad++;
		if (!p->inactive) {
			if (seen_min < 0 || p->nseen < seen_min)
				seen_min = p->nseen;
			if (p->nseen < opt.contacts || (pr_storm == 2 && p->upd_got < upd_active_expected_each))
				incomplete++;
			/* each active client gets every contact's every update once */
			if (pr_storm == 2 && p->upd_got < upd_active_expected_each)
				lost += upd_active_expected_each - p->upd_got;
			if (p->upd_got > upd_active_expected_each)
				dups += p->upd_got - upd_active_expected_each;
		}
		self += p->self_got;
		other += p->other_got;
		unavail += p->unavail_got;
		if (p->observer) {
			obs_n++;
			obs_plain += plain;
			obs_wire += wire;
			obs_total += (double)sessions[i].rx_wire;
		} else {
			active_n++;
			act_plain += plain;
			act_wire += wire;
		}
	}
	if (pr_t_online_last > pr_t0 && pr_online)
		login_s = (double)(pr_t_online_last - pr_t0) / 1e9;
	logins_rate = (double)pr_online / login_s;
	if (pr_t_avail_last > pr_t0)
		avail_rate = (double)pr_avail_total / ((double)(pr_t_avail_last - pr_t0) / 1e9);
	if (pr_t_upd_last > pr_t_storm)
		storm_s = (double)(pr_t_upd_last - pr_t_storm) / 1e9;
	storm_rate = (double)pr_upd_total / storm_s;
	ok = pr_online == n && logins_failed == 0 && ended_sessions == 0 && roster_bad == 0 && incomplete == 0 &&
	     pr_storm == 2 && pr_upd_active >= pr_upd_expected && lost == 0 && dups == 0 && !stop_now();

	printf("\n== presence %d users x %d contacts, %d update(s) each  [%s]\n", n, opt.contacts, opt.updates,
	       opt.label);
	printf("  online                 %ld / %d in %.2f s: %.0f logins/s (failed %ld, SM %ld)\n", pr_online, n,
	       login_s, logins_rate, logins_failed, sm_enabled);
	printf("  rosters not of %d      %ld\n", opt.contacts, roster_bad);
	printf("  login storm            %ld available presence from contacts, %.0f/s; fewest contacts seen %ld\n",
	       pr_avail_total, avail_rate, seen_min);
	printf("  broadcast storm        %ld of %ld to active clients (%ld in all) in %.3f s: %.0f presence/s\n",
	       pr_upd_active, pr_upd_expected, pr_upd_total, storm_s, storm_rate);
	printf("  observers              %ld, %s, %ld inactive (CSI offered to %ld of %ld)\n", obs_n,
	       opt.csi ? "--csi" : "no CSI", inactive, pr_csi_offered, logins_ok);
	if (obs_n)
		printf("  bytes per observer     %.0f XML / %.0f on the wire during the storm\n", obs_plain / obs_n,
		       obs_wire / obs_n);
	if (active_n)
		printf("  bytes per other client %.0f XML / %.0f on the wire during the storm\n", act_plain / active_n,
		       act_wire / active_n);
	printf("  updates lost / dup     %ld / %ld (active clients)\n", lost, dups);
	printf("  ended by server        %ld\n", ended_sessions);
	print_reasons();
	printf("  result                 %s\n", ok ? "OK" : "FAIL");

	json_begin("presence");
	json_int("users", n);
	json_int("contacts", opt.contacts);
	json_int("updates", opt.updates);
	json_bool("prewarm", opt.prewarm);
	json_int("online", pr_online);
	json_num("login_seconds", login_s);
	json_num("logins_per_s", logins_rate);
	json_int("rosters_wrong_size", roster_bad);
	json_int("contacts_seen_min", seen_min);
	json_int("sessions_incomplete", incomplete);
	json_int("login_presence", pr_avail_total);
	json_num("login_presence_per_s", avail_rate);
	json_int("updates_expected_active", pr_upd_expected);
	json_int("updates_delivered_active", pr_upd_active);
	json_int("updates_delivered", pr_upd_total);
	json_num("storm_seconds", storm_s);
	json_num("presence_per_s", ok ? storm_rate : NAN);
	json_int("self_presence", self);
	json_int("other_presence", other);
	json_int("unavailable_from_contacts", unavail);
	json_int("lost", lost);
	json_int("duplicated", dups);
	json_int("observers", obs_n);
	json_bool("csi", opt.csi);
	json_int("csi_offered", pr_csi_offered);
	json_int("inactive", inactive);
	json_num("observer_bytes_storm", obs_n ? obs_plain / obs_n : NAN);
	json_num("observer_wire_bytes_storm", obs_n ? obs_wire / obs_n : NAN);
	json_num("observer_wire_bytes_total", obs_n ? obs_total / obs_n : NAN);
	json_num("client_bytes_storm", active_n ? act_plain / active_n : NAN);
	json_num("client_wire_bytes_storm", active_n ? act_wire / active_n : NAN);
	json_common();
	json_bool("ok", ok);
	json_end();
	close_all();
	return ok ? 0 : 1;
}

/* --- command line --------------------------------------------------------------- */

static void usage(void)
{
	fprintf(stderr,
		"usage: tether-bench [options] MODE ARGS\n"
		"modes:\n"
		"  idle N          log in N sessions (SM on), report server RSS per session\n"
		"  login           full logins at --concurrency for --duration s (or --count)\n"
		"  flood P M       P sender->receiver pairs, M messages each (--window W, 0 = open loop)\n"
		"  resume K        K sessions, abrupt drop, XEP-0198 resume (--count rounds)\n"
		"  presence N      N users with ring rosters log in, then broadcast presence\n"
		"options:\n"
		"  --host IP (127.0.0.1)  --port N (5222)  --tls starttls|direct  --domain D (localhost)\n"
		"  --user PATTERN (user%%d)  --pass PATTERN (pass%%d)  --user-base N  --users N (login pool)\n"
		"  --mech SCRAM-SHA-1|SCRAM-SHA-256|PLAIN  --label NAME  --server-pid PID\n"
		"  --rate N (logins/s ramp, 2000)  --concurrency N (100)  --duration S (10)  --count N\n"
		"  --window W (16)  --ack-every K (10)  --body-size B  --sources K (4: 127.0.0.2..)\n"
		"  --timeout S (10)  --settle S (2)  --hold S (0)  --no-sm  --tls-tickets 0|1\n"
		"  --redeliver N (1)  --resume-kind classic|isr|fast|cross-node  --quiet\n"
		"  --warmup S (login: seconds of logins before measuring, 0)\n"
		"presence: --contacts K (50: users i-K/2..i+K/2, provisioned on the server)\n"
		"  --updates U (1: presence changes each after all are online)  --observers N (0: the first N)\n"
		"  --csi (observers send <inactive/> when offered)  --prewarm (log every user in once first)\n"
		"cluster (other nodes' ports, in the same --tls mode as --port):\n"
		"  --port2 N             resume: the second node\n"
		"  --resume-on 1|2       resume: on the login's node (1) or the other one (2; needs --port2);\n"
		"                        --resume-kind cross-node = classic with --resume-on 2\n"
		"  --recv-port N         flood: receivers log in on this node (senders on --port)\n"
		"  --kill-cmd CMD --kill-after-ms T --resume-port N\n"
		"                        flood: run CMD (/bin/sh -c) T ms after the flood starts; sessions\n"
		"                        whose connection then drops resume on port N; lost/dup counted across\n");
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "host", 1, 0, 'H' }, { "port", 1, 0, 'p' }, { "tls", 1, 0, 't' }, { "domain", 1, 0, 'd' },
		{ "user", 1, 0, 'u' }, { "pass", 1, 0, 'P' }, { "user-base", 1, 0, 'b' }, { "users", 1, 0, 'U' },
		{ "mech", 1, 0, 'm' }, { "label", 1, 0, 'l' }, { "server-pid", 1, 0, 'S' }, { "rate", 1, 0, 'r' },
		{ "concurrency", 1, 0, 'c' }, { "duration", 1, 0, 'D' }, { "count", 1, 0, 'n' },
		{ "window", 1, 0, 'w' }, { "ack-every", 1, 0, 'k' }, { "body-size", 1, 0, 'B' },
		{ "sources", 1, 0, 's' }, { "timeout", 1, 0, 'T' }, { "settle", 1, 0, 'e' }, { "hold", 1, 0, 'h' },
		{ "no-sm", 0, 0, 'N' }, { "tls-tickets", 1, 0, 'K' }, { "redeliver", 1, 0, 'R' },
		{ "resume-kind", 1, 0, 'Z' }, { "warmup", 1, 0, 'W' }, { "quiet", 0, 0, 'q' }, { "help", 0, 0, '?' },
		{ "port2", 1, 0, '2' }, { "resume-on", 1, 0, 'o' }, { "recv-port", 1, 0, 'V' },
		{ "resume-port", 1, 0, 'X' }, { "kill-cmd", 1, 0, 'C' }, { "kill-after-ms", 1, 0, 'A' },
		{ "contacts", 1, 0, 'F' }, { "updates", 1, 0, 'G' }, { "observers", 1, 0, 'O' }, { "csi", 0, 0, 'I' },
		{ "prewarm", 0, 0, 'J' },
		{ 0, 0, 0, 0 },
	};
	const char *m;
	unsigned max_conns;
	int ch, rc, n = 0;
	long mm = 0;

	while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (ch) {
		case 'H': opt.host = optarg; break;
		case 'p': opt.port = atoi(optarg); break;
		case 't':
			if (strcmp(optarg, "direct") == 0)
				opt.tls = TLS_DIRECT;
			else if (strcmp(optarg, "starttls") == 0)
				opt.tls = TLS_STARTTLS;
			else
				goto bad;
			break;
		case 'd': opt.domain = optarg; break;
		case 'u': opt.user_fmt = optarg; break;
		case 'P': opt.pass_fmt = optarg; break;
		case 'b': opt.user_base = atoi(optarg); break;
		case 'U': opt.users = atoi(optarg); break;
		case 'm': opt.mech = optarg; break;
		case 'l': opt.label = optarg; break;
		case 'S': opt.server_pid = atoi(optarg); break;
		case 'r': opt.rate = atof(optarg); break;
		case 'c': opt.concurrency = atoi(optarg); break;
		case 'D': opt.duration = atof(optarg); break;
		case 'n': opt.count = atol(optarg); break;
		case 'w': opt.window = atoi(optarg); break;
		case 'k': opt.ack_every = atoi(optarg); break;
		case 'B': opt.body_size = atoi(optarg); break;
		case 's': opt.sources = atoi(optarg); break;
		case 'T': opt.timeout = atof(optarg); break;
		case 'e': opt.settle = atof(optarg); break;
		case 'h': opt.hold = atof(optarg); break;
		case 'N': opt.sm = 0; break;
		case 'K': opt.tls_tickets = atoi(optarg); break;
		case 'R': opt.redeliver = atoi(optarg); break;
		case 'Z':
			if (strcmp(optarg, "classic") == 0)
				opt.resume_kind = RESUME_CLASSIC;
			else if (strcmp(optarg, "isr") == 0)
				opt.resume_kind = RESUME_ISR;
			else if (strcmp(optarg, "fast") == 0)
				opt.resume_kind = RESUME_FAST;
			else if (strcmp(optarg, "cross-node") == 0) {
				opt.resume_kind = RESUME_CLASSIC;   /* classic, on the other node */
				opt.resume_on = 2;
			} else
				goto bad;
			break;
		case 'q': opt.quiet = 1; break;
		case '2': opt.port2 = atoi(optarg); break;
		case 'o':
			opt.resume_on = atoi(optarg);
			if (opt.resume_on != 1 && opt.resume_on != 2)
				goto bad;
			break;
		case 'V': opt.recv_port = atoi(optarg); break;
		case 'X': opt.resume_port = atoi(optarg); break;
		case 'C': opt.kill_cmd = optarg; break;
		case 'A': opt.kill_after_ms = atol(optarg); break;
		case 'W': opt.warmup = atof(optarg); break;
		case 'F': opt.contacts = atoi(optarg); break;
		case 'G': opt.updates = atoi(optarg); break;
		case 'O': opt.observers = atoi(optarg); break;
		case 'I': opt.csi = 1; break;
		case 'J': opt.prewarm = 1; break;
		default: goto bad;
		}
	}
	if (optind >= argc)
		goto bad;
	m = argv[optind++];
	if (opt.rate <= 0 || opt.concurrency <= 0 || opt.sources <= 0 || opt.sources > 250 || opt.redeliver < 0)
		goto bad;
	if (opt.port2 < 0 || opt.port2 > 65535 || opt.recv_port < 0 || opt.recv_port > 65535 ||
	    opt.resume_port < 0 || opt.resume_port > 65535)
		goto bad;
	/* a kill needs somewhere to resume and a time; either alone is a mistake */
	if ((opt.kill_cmd != NULL) != (opt.kill_after_ms >= 0) || (opt.kill_cmd && opt.resume_port <= 0)) {
		fprintf(stderr, "tether-bench: --kill-cmd needs --kill-after-ms and --resume-port\n");
		return 2;
	}
	if (strcmp(m, "idle") == 0 || strcmp(m, "resume") == 0 || strcmp(m, "presence") == 0) {
		if (optind >= argc || (n = atoi(argv[optind])) <= 0)
			goto bad;
	} else if (strcmp(m, "flood") == 0) {
		if (optind + 1 >= argc || (n = atoi(argv[optind])) <= 0 || (mm = atol(argv[optind + 1])) <= 0)
			goto bad;
	} else if (strcmp(m, "login") != 0) {
		goto bad;
	}
	if (opt.tls_tickets < 0 && strcmp(m, "resume") != 0)
		opt.tls_tickets = 0;      /* login measures full handshakes */

	signal(SIGINT, on_sigint);
	signal(SIGTERM, on_sigint);
	signal(SIGPIPE, SIG_IGN);
	max_conns = (unsigned)(strcmp(m, "login") == 0 ? opt.concurrency * 2
							: strcmp(m, "flood") == 0 ? 2 * n : n) * 2 + 64;
	if (net_init(max_conns) < 0)
		return 2;
	if (strcmp(m, "idle") == 0)
		rc = mode_idle(n);
	else if (strcmp(m, "login") == 0)
		rc = mode_login();
	else if (strcmp(m, "flood") == 0)
		rc = mode_flood(n, mm);
	else if (strcmp(m, "presence") == 0)
		rc = mode_presence(n);
	else
		rc = mode_resume(n);
	xmpp_stats_print();
	net_deinit();
	return rc;
bad:
	usage();
	return 2;
}
