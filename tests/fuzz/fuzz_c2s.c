/* tests/fuzz/fuzz_c2s.c - libFuzzer target for the whole c2s state machine
 * (c2s.c, c2s_sasl2.c, c2s_sm.c, c2s_route.c) behind a fake transport, with
 * the real router, memory store, delivery, bus and worker dispatch code.
 *
 * Standalone: every server/ and store/ source but the two mains is
 * included here (the Makefile's `make fuzz` compiles this file alone).
 *
 * Input: the bytes one or more clients send, on direct-TLS streams (the
 * transport says TLS is up and offers fixed channel bindings). A few bytes
 * that XML never allows act as commands between chunks:
 *   0x00  the current stream's connection is lost; a new stream starts
 *   0x01  a new stream starts; the current one stays open (two clients)
 *   0x02  every armed ack timer fires
 *   0x03  every armed main timer fires (preauth, idle, detached expiry)
 *   0x04  from now on every third buffer allocation (sbuf_fail_hook) fails,
 *         as if memory were out: the streams must close with
 *         internal-server-error or bounce, never crash or leak
 * Each chunk is fed in three pieces (at 1/3 and 2/3). Up to MAX_STREAMS
 * streams share one worker (idx 0) whose slots point at them, so routed
 * stanzas, kicks and "moved" notices reach them synchronously through the
 * bus and the handlers c2s registers, as they do in tetherd for sessions
 * of the same worker.
 *
 * The worker has a store handle in the store's test mode: every completion
 * comes 0-3 turns late (a turn = one chunk fed, or one command), so
 * streams park, and are lost or expire with operations pending.
 *
 * Randomness is a counter reset for every input (libsodium's
 * randombytes_set_implementation), so SM ids, resources and SCRAM nonces
 * are the same on every run of an input: the seed corpus resumes its own
 * sessions by id. Store and router are fresh for every input.
 *
 * Account: alice@localhost, password "pencil" (PLAIN, SCRAM, SASL2). */
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "../../server/bus.c"
#include "../../server/carbons.c"
#include "../../server/c2s.c"
#include "../../server/c2s_direct.c"
#include "../../server/c2s_flow.c"
#include "../../server/c2s_limits.c"
#include "../../server/c2s_remote.c"
#include "../../server/c2s_route.c"
#include "../../server/c2s_sasl2.c"
#include "../../server/c2s_sm.c"
#include "../../server/config.c"
#include "../../server/conn.c"
#include "../../server/deliver.c"
#include "../../server/errors.c"
#define mech_names ht_mech_names
#include "../../server/ht.c"
#undef mech_names
#include "../../server/im.c"
#include "../../server/jid.c"
#include "../../server/limits.c"
#include "../../server/log.c"
#include "../../server/metrics.c"
#include "../../server/netaddr.c"
#include "../../server/offline.c"
#include "../../server/presence.c"
#include "../../server/proxyproto.c"
#include "../../server/ratelimit.c"
#include "../../server/roster.c"
#include "../../server/rmsg.c"
#include "../../server/router.c"
#include "../../server/sasl.c"
#include "../../server/sbuf.c"
#include "../../server/scram.c"
#include "../../server/shtab.c"
#include "../../server/sm.c"
#include "../../server/sub.c"
#include "../../server/timer.c"
#include "../../server/tls.c"
#include "../../server/tls_tickets.c"
#include "../../server/token.c"
#include "../../server/worker.c"
#include "../../server/xnode.c"
#include "../../server/xstream.c"
#include "../../store/memory.c"
#include "../../store/memory_fast.c"
#include "../../store/memory_im.c"
#include "../../store/memory_sm.c"
#include "../../store/store.c"
#include "../../store/store_direct.c"
#include "../../store/store_im.c"

/* The fuzzer runs the memory backend: the Redis pieces that worker.c and
 * store.c reach for [store] backend = redis are stubbed, not linked. */
struct store *store_redis_open(const char *path, char *err, size_t errlen)
{
	(void)path;
	snprintf(err, errlen, "redis: not in the fuzzer");
	return NULL;
}
struct rlink *rlink_new(struct io_uring *ring, struct timer_wheel *wheel, const char *addr,
			rlink_state_fn *state_fn, void *ud, char *err, size_t errlen)
{
	(void)ring, (void)wheel, (void)addr, (void)state_fn, (void)ud;
	snprintf(err, errlen, "redis: not in the fuzzer");
	return NULL;
}
void rlink_start(struct rlink *l) { (void)l; }
void rlink_on_cqe(struct rlink *l, const struct io_uring_cqe *cqe) { (void)l, (void)cqe; }
void rlink_free(struct rlink *l) { (void)l; }
size_t rlink_outstanding(const struct rlink *l) { (void)l; return 0; }
struct inbox *inbox_new(struct io_uring *ring, struct timer_wheel *wheel, const char *redis_addr,
			const char *node, inbox_fn *fn, void *ud, char *err, size_t errlen)
{
	(void)ring, (void)wheel, (void)redis_addr, (void)node, (void)fn, (void)ud;
	snprintf(err, errlen, "redis: not in the fuzzer");
	return NULL;
}
void inbox_start(struct inbox *in) { (void)in; }
void inbox_on_cqe(struct inbox *in, const struct io_uring_cqe *cqe) { (void)in, (void)cqe; }
void inbox_free(struct inbox *in) { (void)in; }
struct cluster *cluster_new(struct rlink *link, struct timer_wheel *wheel, const uint8_t *key,
			    cluster_orphan_fn *fn, cluster_gone_fn *gone, void *ud)
{
	(void)link, (void)wheel, (void)key, (void)fn, (void)gone, (void)ud;
	return NULL;
}
void cluster_set_timing(struct cluster *c, unsigned lease_ms, unsigned tick_ms)
{
	(void)c, (void)lease_ms, (void)tick_ms;
}
void cluster_start(struct cluster *c) { (void)c; }
void cluster_free(struct cluster *c) { (void)c; }

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_STREAMS 4
#define OUT_MAX (1u << 20)

/* ---- deterministic randomness ----------------------------------------- */

static uint64_t rng_state;

static uint64_t rng_next(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull); /* splitmix64 */
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static const char *rng_name(void) { return "fuzz"; }
static uint32_t rng_random(void) { return (uint32_t)rng_next(); }
static void rng_stir(void) {}
static uint32_t rng_uniform(const uint32_t upper) { return upper < 2 ? 0 : rng_random() % upper; }
static int rng_close(void) { return 0; }

static void rng_buf(void *const buf, const size_t size)
{
	uint8_t *p = buf;
	for (size_t i = 0; i < size; i += 8) {
		uint64_t v = rng_next();
		memcpy(p + i, &v, size - i < 8 ? size - i : 8);
	}
}

static struct randombytes_implementation rng_impl = {
	.implementation_name = rng_name, .random = rng_random, .stir = rng_stir,
	.uniform = rng_uniform, .buf = rng_buf, .close = rng_close,
};

/* ---- fake transport ---------------------------------------------------- */

struct fstream {
	struct c2s *s;
	struct conn conn;        /* only .proto is used: what worker.c looks at */
	uint32_t slot, gen;
	int used;                /* c2s_new was called and not yet freed */
	int closed;              /* the state machine asked for a close */
	int lost;                /* c2s_on_lost was called */
	unsigned timer[C2S_TIMER_COUNT];
};

static struct fstream fs[MAX_STREAMS];
static struct server srv;
static struct worker wk;
static struct conn *slots_conns[MAX_STREAMS];
static uint32_t slots_gens[MAX_STREAMS];
static char fz_dir[64];
static struct sbuf fz_out;     /* everything sent, for FUZZ_C2S_DUMP */
static int fz_dump;

static int fz_oom, fz_oom_n; /* 0x04: failing every third allocation */

static int fz_fail_hook(size_t size)
{
	(void)size;
	return fz_oom && ++fz_oom_n % 3 == 0;
}

static void f_send(void *io, const char *data, size_t len)
{
	(void)io;
	int oom = fz_oom;
	fz_oom = 0; /* our own record of the output never fails */
	if (fz_out.len + len > OUT_MAX)
		sbuf_reset(&fz_out);
	sbuf_append(&fz_out, data, len);
	fz_oom = oom;
}

static void f_close(void *io) { ((struct fstream *)io)->closed = 1; }

static void f_set_timer(void *io, int which, unsigned ms)
{
	if (which < 0 || which >= C2S_TIMER_COUNT)
		abort();
	((struct fstream *)io)->timer[which] = ms;
}

static void f_release(void *io) { (void)io; }

static size_t f_cb_exporter(void *io, uint8_t o[32])
{
	(void)io;
	memset(o, 0xE1, 32);
	return 32;
}

static size_t f_cb_unique(void *io, uint8_t *o, size_t outlen)
{
	(void)io;
	if (outlen < 32)
		return 0;
	memset(o, 0x71, 32);
	return 32;
}

static int f_is_tls(void *io) { (void)io; return 1; }
static void f_pause_read(void *io, unsigned ms) { (void)io; (void)ms; }
static void f_park_read(void *io, int on) { (void)io; (void)on; }
static void f_trim_memory(void *io) { (void)io; }
static struct store_handle *f_store(void *io) { (void)io; return wk.sh; }
static size_t f_cb_endpoint(void *io, const uint8_t **out)
{
	static const uint8_t h[32] = { [0 ... 31] = 0xED };
	(void)io;
	*out = h;
	return sizeof(h);
}
static const char *f_peer(void *io) { (void)io; return "fuzz"; }

static const struct transport ftp = {
	.send = f_send, .close = f_close, .set_timer = f_set_timer, .release = f_release,
	.cb_exporter = f_cb_exporter, .cb_unique = f_cb_unique, .is_tls = f_is_tls,
	.pause_read = f_pause_read, .park_read = f_park_read, .trim_memory = f_trim_memory,
	.store = f_store, .cb_endpoint = f_cb_endpoint,
	.peer = f_peer,
};

/* ---- setup ------------------------------------------------------------- */

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb; (void)flag; (void)ftw;
	return remove(p);
}

static void fz_cleanup(void)
{
	if (fz_dir[0])
		nftw(fz_dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

static struct store *fz_open_store(void)
{
	char err[256];
	struct store *st = store_open("memory", fz_dir, err, sizeof(err));
	if (!st) {
		fprintf(stderr, "fuzz_c2s: %s\n", err);
		abort();
	}
	return st;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc; (void)argv;
	struct user_creds c;
	fz_dump = getenv("FUZZ_C2S_DUMP") != NULL;
	log_threshold = fz_dump ? LOG_L_DEBUG : LOG_L_ERROR;
	randombytes_set_implementation(&rng_impl);
	if (sodium_init() < 0)
		abort();
	/* sasl.c draws its fake-salt key on first use: draw it now, so the
	 * first input sees the same random stream as every later one. */
	pthread_once(&fake_once, fake_init);
	snprintf(fz_dir, sizeof(fz_dir), "/tmp/fuzz_c2s-XXXXXX");
	if (!mkdtemp(fz_dir))
		abort();
	atexit(fz_cleanup);
	/* 1 iteration: PBKDF2 would only slow the fuzzer down. */
	struct store *st = fz_open_store();
	if (scram_creds_derive("pencil", 1, &c) || store_user_put(st, "alice@localhost", &c))
		abort();
	store_close(st);

	config_defaults(&srv.cfg);
	srv.cfg.sm_max_queue = 12;     /* reach the full/congested paths soon */
	srv.cfg.max_stanza_size = 16384;
	snprintf(srv.cfg.isr_location, sizeof(srv.cfg.isr_location), "localhost:5223");
	memset(srv.token_key, 0x4B, sizeof(srv.token_key));
	srv.workers = &wk;
	srv.nworkers = 1;
	c2s_register(&srv);
	wk.srv = &srv;
	wk.idx = 0;
	wk.lfd[0] = wk.lfd[1] = -1;
	wk.conns = slots_conns;
	wk.gens = slots_gens;
	wk.nslots = wk.cap_slots = MAX_STREAMS;
	for (unsigned i = 0; i < MAX_STREAMS; i++)
		slots_gens[i] = 1;
	return 0;
}

/* ---- one input --------------------------------------------------------- */

static struct fstream *fz_stream_new(void)
{
	for (unsigned i = 0; i < MAX_STREAMS; i++) {
		struct fstream *f = &fs[i];
		if (f->used)
			continue;
		memset(f, 0, sizeof(*f));
		f->slot = i;
		f->gen = slots_gens[i];
		struct bus_addr self = { .node = BUS_NODE_SELF, .worker = 0, .slot = f->slot, .gen = f->gen };
		f->s = c2s_new(&srv, &wk, &ftp, f, &self, 1);
		if (!f->s)
			return NULL;
		f->used = 1;
		f->conn.proto = f->s;
		slots_conns[i] = &f->conn;
		return f;
	}
	return NULL;
}

static void fz_stream_lose(struct fstream *f)
{
	if (f && f->used && !f->lost) {
		f->lost = 1;
		c2s_on_lost(f->s);
	}
}

/* What the worker does at the end of a loop turn: flush (c2s_before_flush),
 * then free what is closed and not held (conn_maybe_free). */
static void fz_end_of_turn(void)
{
	store_poll(wk.sh); /* as the worker: completions at the turn's start */
	for (unsigned i = 0; i < MAX_STREAMS; i++)
		if (fs[i].used && !fs[i].lost && !fs[i].closed)
			c2s_before_flush(fs[i].s);
	for (unsigned i = 0; i < MAX_STREAMS; i++) {
		struct fstream *f = &fs[i];
		if (!f->used)
			continue;
		if (f->closed)
			fz_stream_lose(f);
		if (f->lost && !c2s_is_held(f->s)) {
			c2s_free(f->s);
			f->used = 0;
			f->s = NULL;
			slots_conns[i] = NULL;
			slots_gens[i] = (slots_gens[i] + 1) & 0xffffff;
		}
	}
}

static void fz_fire(int which)
{
	for (unsigned i = 0; i < MAX_STREAMS; i++) {
		struct fstream *f = &fs[i];
		if (f->used && f->timer[which]) {
			f->timer[which] = 0;
			c2s_on_timeout(f->s, which);
		}
	}
}

static void fz_feed(struct fstream *f, const uint8_t *p, size_t len)
{
	size_t cut[4] = { 0, len / 3, 2 * len / 3, len };
	for (int k = 0; k < 3 && f->used && !f->closed && !f->lost; k++) {
		if (cut[k + 1] == cut[k])
			continue;
		enum tp_feed rc = c2s_feed(f->s, (const char *)p + cut[k], cut[k + 1] - cut[k]);
		if (rc == TP_FEED_CLOSED)
			f->closed = 1;
		else if (rc == TP_FEED_STARTTLS)
			abort(); /* never offered on a TLS stream */
	}
	fz_end_of_turn();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	rng_state = 0;
	fz_oom = fz_oom_n = 0;
	sbuf_fail_hook = fz_fail_hook;
	srv.store = fz_open_store();
	store_set_test_delay(srv.store, 3);
	wk.sh = store_attach(srv.store, NULL);
	srv.router = router_new();
	if (!srv.router || !wk.sh)
		abort();
	sbuf_reset(&fz_out);

	struct fstream *cur = fz_stream_new();
	size_t start = 0;
	for (size_t i = 0; i <= size; i++) {
		if (i < size && data[i] > 0x04)
			continue;
		if (cur && i > start)
			fz_feed(cur, data + start, i - start);
		start = i + 1;
		if (i == size)
			break;
		switch (data[i]) {
		case 0x00:
			fz_stream_lose(cur);
			fz_end_of_turn();
			cur = fz_stream_new();
			break;
		case 0x01:
			cur = fz_stream_new();
			break;
		case 0x02:
			fz_fire(C2S_TIMER_ACK);
			fz_end_of_turn();
			break;
		case 0x03:
			fz_fire(C2S_TIMER_MAIN);
			fz_end_of_turn();
			break;
		case 0x04:
			fz_oom = 1;
			break;
		}
	}

	/* What is still pending completes (up to 1 + 3 turns each), then
	 * every connection goes; detached sessions then expire. Memory is
	 * back by then: the teardown is not what 0x04 tests. */
	fz_oom = 0;
	for (int turn = 0; turn < 64 && store_pending(wk.sh); turn++)
		fz_end_of_turn();
	for (unsigned i = 0; i < MAX_STREAMS; i++)
		fz_stream_lose(&fs[i]);
	fz_end_of_turn();
	for (int round = 0; round < MAX_STREAMS + 1; round++) {
		int held = 0;
		for (unsigned i = 0; i < MAX_STREAMS; i++)
			if (fs[i].used && c2s_is_held(fs[i].s)) {
				c2s_on_timeout(fs[i].s, C2S_TIMER_MAIN);
				held = 1;
			}
		fz_end_of_turn();
		if (!held)
			break;
	}
	for (unsigned i = 0; i < MAX_STREAMS; i++)
		if (fs[i].used)
			abort(); /* a session held after its expiry */

	if (fz_dump) {
		fwrite(fz_out.data ? fz_out.data : "", 1, fz_out.len, stdout);
		fputc('\n', stdout);
	}
	store_detach(wk.sh);
	wk.sh = NULL;
	store_close(srv.store);
	router_free(srv.router);
	srv.store = NULL;
	srv.router = NULL;
	return 0;
}
