/* tests/unit/test_c2s.c - the c2s state machine alone: a fake transport
 * below it, a recording bus and a fake store beside it.
 *
 * c2s reaches everything outside itself through three seams:
 *   - the transport (struct transport): here it records the bytes sent,
 *     the timers armed and the close asked for;
 *   - the store (struct store_ops): here one account, alice@localhost with
 *     password "pencil", and no SM sessions;
 *   - the bus (bus.h): this file defines bus_deliver/bus_kick/bus_moved, so
 *     the linker takes them instead of server/bus.c, and with it no worker,
 *     inbox or connection code is linked. What c2s hands the bus is
 *     recorded and checked.
 * The router (server/router.c) is the real one, linked as it is: binding
 * and lookups are part of what a bound stream does. No memory store and no
 * renamed symbols. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <errno.h>
#include <expat.h>
#include <sodium.h>

#include "tether/bus.h"
#include "tether/c2s.h"
#include "tether/config.h"
#include "tether/errors.h"
#include "tether/log.h"
#include "tether/rmsg.h"
#include "tether/router.h"
#include "tether/sbuf.h"
#include "tether/scram.h"
#include "tether/server.h"
#include "tether/store.h"
#include "tether/worker.h"

#define HDR "<?xml version='1.0'?><stream:stream to='localhost' version='1.0' " \
	    "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
#define XMLNS_SASL "urn:ietf:params:xml:ns:xmpp-sasl"
#define PLAIN_OK  "AGFsaWNlAHBlbmNpbA=="   /* \0alice\0pencil */
#define PLAIN_BAD "AGFsaWNlAHdyb25n"       /* \0alice\0wrong */

/* ---- the bus, as c2s sees it ------------------------------------------- */

#define BUS_LOG_MAX 16

struct bus_call {
	enum bus_kind kind;
	struct bus_addr to;
	int cond;
	struct rmsg *msg;  /* BUS_DELIVER: the reference c2s handed over */
};

static struct bus_call bus_log[BUS_LOG_MAX];
static size_t bus_n;

static int record(enum bus_kind kind, const struct bus_addr *to, int cond, struct rmsg *m)
{
	if (bus_n == BUS_LOG_MAX) {
		rmsg_unref(m);
		return -ENOBUFS;
	}
	bus_log[bus_n++] = (struct bus_call){ .kind = kind, .to = *to, .cond = cond, .msg = m };
	return 0;
}

int bus_deliver(struct worker *w, const struct bus_addr *to, struct rmsg *m)
{
	(void)w;
	return record(BUS_DELIVER, to, 0, m);
}

int bus_kick(struct worker *w, const struct bus_addr *to, int cond)
{
	(void)w;
	return record(BUS_KICK, to, cond, NULL);
}

int bus_moved(struct worker *w, const struct bus_addr *to)
{
	(void)w;
	return record(BUS_MOVED, to, 0, NULL);
}

int bus_appended(struct worker *w, const struct bus_addr *to, uint32_t seq, struct rmsg *m)
{
	(void)w; (void)seq;
	return record(BUS_APPENDED, to, 0, m);
}

static void bus_reset(void)
{
	for (size_t i = 0; i < bus_n; i++)
		rmsg_unref(bus_log[i].msg);
	memset(bus_log, 0, sizeof(bus_log));
	bus_n = 0;
}

/* ---- the store: one account, no SM sessions ----------------------------- */

static struct user_creds alice;

static int f_user_get(struct store *st, const char *bare, struct user_creds *out)
{
	(void)st;
	if (strcmp(bare, "alice@localhost"))
		return -ENOENT;
	*out = alice;
	return 0;
}

static int f_sm_create(struct store *st, const struct sm_record *rec, const char *bare,
		       const char *resource)
{
	(void)st; (void)rec; (void)bare; (void)resource;
	return 0;
}

static int f_sm_append(struct store *st, const char *id, uint32_t epoch, struct sm_entry *e,
		       struct bus_addr *moved_to)
{
	(void)st; (void)id; (void)epoch; (void)e; (void)moved_to;
	return 0;
}

static int f_sm_ack(struct store *st, const char *id, uint32_t epoch, uint32_t h)
{
	(void)st; (void)id; (void)epoch; (void)h;
	return 0;
}

static int f_sm_update(struct store *st, const struct sm_record *rec)
{
	(void)st; (void)rec;
	return 0;
}

static int f_sm_take(struct store *st, const char *id, const char *bare, const struct bus_addr *to,
		     uint64_t now_ms, struct sm_isr_proof *proof, store_sm_take_fn *fn, void *ud)
{
	(void)st; (void)id; (void)bare; (void)to; (void)now_ms; (void)proof;
	fn(ud, -ENOENT, NULL, NULL, NULL, 0);
	return -ENOENT;
}

static int f_sm_destroy(struct store *st, const char *id, uint32_t epoch, store_sm_drain_fn *fn,
			void *ud)
{
	(void)st; (void)id; (void)epoch;
	if (fn)
		fn(ud, -ENOENT, NULL, NULL, NULL, NULL, 0);
	return -ENOENT;
}

static int f_sm_set_isr(struct store *st, const char *id, uint32_t epoch, int set, uint8_t mech,
			const uint8_t sealed[TOKEN_SEALED_LEN])
{
	(void)st; (void)id; (void)epoch; (void)set; (void)mech; (void)sealed;
	return -ENOENT;
}

static int f_fast_get(struct store *st, const char *bare, const char *ua_id, struct fast_slots *out)
{
	(void)st; (void)bare; (void)ua_id; (void)out;
	return -ENOENT;
}

static int f_fast_cas(struct store *st, const char *bare, const char *ua_id,
		      struct fast_slots *in)
{
	(void)st; (void)bare; (void)ua_id; (void)in;
	return 0;
}

static void f_close_store(struct store *st) { (void)st; }

static const struct store_ops fake_store_ops = {
	.user_get = f_user_get, .close = f_close_store,
	.sm_create = f_sm_create, .sm_append = f_sm_append, .sm_ack = f_sm_ack,
	.sm_update = f_sm_update, .sm_take = f_sm_take, .sm_destroy = f_sm_destroy,
	.sm_set_isr = f_sm_set_isr,
	.fast_get = f_fast_get, .fast_cas = f_fast_cas,
};
static struct store fake_store = { .ops = &fake_store_ops };

/* ---- the transport ------------------------------------------------------ */

struct fconn {
	struct c2s *s;
	struct bus_addr self;
	int tls;
	struct sbuf out;          /* everything sent */
	int closed;               /* close asked for */
	int paused;               /* pause_read calls */
	int trimmed;              /* trim_memory calls */
	unsigned timer[C2S_TIMER_COUNT];
};

/* Allocation failures injected into c2s's buffers (sbuf_fail_hook): the
 * <inject_at>-th allocation fails, or every one from it on (<inject_all>);
 * the test's own buffers (the transport's record) never fail. */
static int inject_on, inject_at, inject_all, inject_n, inject_fired;

static int inject_hook(size_t size)
{
	(void)size;
	if (!inject_on)
		return 0;
	int n = inject_n++;
	int fail = inject_at >= 0 && (inject_all ? n >= inject_at : n == inject_at);
	inject_fired += fail;
	return fail;
}

static void t_send(void *io, const char *data, size_t len)
{
	struct fconn *f = io;
	int on = inject_on;
	inject_on = 0;
	assert_int_equal(sbuf_append(&f->out, data, len), 0);
	inject_on = on;
}

static void t_close(void *io) { ((struct fconn *)io)->closed = 1; }

static void t_set_timer(void *io, int which, unsigned ms)
{
	assert_true(which >= 0 && which < C2S_TIMER_COUNT);
	((struct fconn *)io)->timer[which] = ms;
}

static void t_release(void *io) { (void)io; }
static size_t t_cb_exporter(void *io, uint8_t out[32]) { (void)io; (void)out; return 0; }

static size_t t_cb_unique(void *io, uint8_t *out, size_t outlen)
{
	(void)io; (void)out; (void)outlen;
	return 0;
}

static int t_is_tls(void *io) { return ((struct fconn *)io)->tls; }
static void t_pause_read(void *io, unsigned ms) { (void)ms; ((struct fconn *)io)->paused++; }
static void t_trim_memory(void *io) { ((struct fconn *)io)->trimmed++; }
static const char *t_peer(void *io) { (void)io; return "test"; }

/* The worker's store handle: completions run when feed() polls it. */
static struct store_handle *fsh;
static struct store_handle *t_store(void *io) { (void)io; return fsh; }

static const struct transport fake_tp = {
	.send = t_send, .close = t_close, .set_timer = t_set_timer, .release = t_release,
	.cb_exporter = t_cb_exporter, .cb_unique = t_cb_unique, .is_tls = t_is_tls,
	.pause_read = t_pause_read, .trim_memory = t_trim_memory, .peer = t_peer,
	.store = t_store,
};

/* ---- fixture ------------------------------------------------------------ */

static struct server srv;
static struct worker wk;

static int setup(void **state)
{
	(void)state;
	memset(&srv, 0, sizeof(srv));
	config_defaults(&srv.cfg);
	srv.store = &fake_store;
	srv.router = router_new();
	srv.workers = &wk;
	srv.nworkers = 1;
	wk.srv = &srv;
	wk.idx = 0;
	bus_reset();
	fsh = store_attach(&fake_store, NULL);
	return srv.router && fsh ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	bus_reset();
	store_detach(fsh);
	fsh = NULL;
	router_free(srv.router);
	srv.router = NULL;
	return 0;
}

static struct fconn *open_stream(uint32_t slot, int tls)
{
	struct fconn *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	f->tls = tls;
	f->self = (struct bus_addr){ .node = BUS_NODE_SELF, .worker = 0, .slot = slot, .gen = 7 };
	f->s = c2s_new(&srv, &wk, &fake_tp, f, &f->self, tls);
	assert_non_null(f->s);
	assert_int_equal(f->timer[C2S_TIMER_MAIN], srv.cfg.preauth_timeout * 1000u); /* preauth */
	return f;
}

static void close_stream(struct fconn *f)
{
	c2s_on_lost(f->s);
	assert_false(c2s_is_held(f->s));
	c2s_free(f->s);
	sbuf_free(&f->out);
	free(f);
}

/* Feeds <xml> and returns what was sent in answer (NUL-terminated, reset
 * for the next call). */
static const char *feed(struct fconn *f, const char *xml, enum tp_feed want)
{
	sbuf_reset(&f->out);
	enum tp_feed got = c2s_feed(f->s, xml, strlen(xml));
	while (store_pending(fsh)) /* the store answers: the stream goes on */
		store_poll(fsh);
	if (got == TP_FEED_OK && f->closed)
		got = TP_FEED_CLOSED; /* closed once the store answered */
	assert_int_equal(got, want);
	assert_int_equal(sbuf_append(&f->out, "", 1), 0);
	f->out.len--;
	return f->out.data;
}

static void assert_has(const char *hay, const char *needle)
{
	if (!strstr(hay, needle))
		fail_msg("expected \"%s\" in \"%s\"", needle, hay);
}

/* TLS stream authenticated as alice with PLAIN and bound to <res>. */
static struct fconn *bound_stream(uint32_t slot, const char *res)
{
	struct fconn *f = open_stream(slot, 1);
	feed(f, HDR, TP_FEED_OK);
	assert_has(feed(f, "<auth xmlns='" XMLNS_SASL "' mechanism='PLAIN'>" PLAIN_OK "</auth>",
			TP_FEED_OK), "<success xmlns='" XMLNS_SASL "'");
	assert_has(feed(f, HDR, TP_FEED_OK), "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>");
	char iq[256];
	snprintf(iq, sizeof(iq), "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
		 "<resource>%s</resource></bind></iq>", res);
	char jid[128];
	snprintf(jid, sizeof(jid), "<jid>alice@localhost/%s</jid>", res);
	assert_has(feed(f, iq, TP_FEED_OK), jid);
	return f;
}

/* ---- tests -------------------------------------------------------------- */

/* The stream header, at every split, gets our header and the features of a
 * plaintext stream: STARTTLS, required, and nothing else. */
static void test_open_features(void **state)
{
	(void)state;
	size_t len = strlen(HDR);
	for (size_t cut = 0; cut <= len; cut++) {
		struct fconn *f = open_stream(1, 0);
		assert_int_equal(c2s_feed(f->s, HDR, cut), TP_FEED_OK);
		assert_int_equal(c2s_feed(f->s, HDR + cut, len - cut), TP_FEED_OK);
		assert_int_equal(sbuf_append(&f->out, "", 1), 0);
		const char *o = f->out.data;
		assert_has(o, "<stream:stream xmlns='jabber:client'");
		assert_has(o, "from='localhost'");
		assert_has(o, "version='1.0'");
		assert_has(o, "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>"
			      "<required/></starttls></stream:features>");
		assert_null(strstr(o, "mechanisms"));
		assert_false(f->closed);
		close_stream(f);
	}
	assert_int_equal(bus_n, 0);
}

/* Before TLS: <auth/> is refused with encryption-required and the stream
 * stays; a stanza ends the stream; <starttls/> gets <proceed/> and tells
 * the transport to start TLS. */
static void test_starttls_required(void **state)
{
	(void)state;
	struct fconn *f = open_stream(1, 0);
	feed(f, HDR, TP_FEED_OK);
	const char *o = feed(f, "<auth xmlns='" XMLNS_SASL "' mechanism='PLAIN'>" PLAIN_OK "</auth>",
			     TP_FEED_OK);
	assert_string_equal(o, "<failure xmlns='" XMLNS_SASL "'><encryption-required/></failure>");
	assert_false(f->closed);
	o = feed(f, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>", TP_FEED_STARTTLS);
	assert_string_equal(o, "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
	close_stream(f);

	f = open_stream(2, 0);
	feed(f, HDR, TP_FEED_OK);
	o = feed(f, "<message to='bob@localhost'><body>x</body></message>", TP_FEED_CLOSED);
	assert_has(o, "<not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>");
	assert_has(o, "</stream:stream>");
	assert_true(f->closed);
	close_stream(f);
	assert_int_equal(bus_n, 0);
}

/* A wrong password is a SASL failure, not a stream error, until the
 * max_auth_failures-th one, which ends the stream. */
static void test_plain_failure(void **state)
{
	(void)state;
	struct fconn *f = open_stream(1, 1);
	assert_has(feed(f, HDR, TP_FEED_OK), "<mechanism>PLAIN</mechanism>");
	for (unsigned i = 1; i < srv.cfg.max_auth_failures; i++) {
		const char *o = feed(f, "<auth xmlns='" XMLNS_SASL "' mechanism='PLAIN'>" PLAIN_BAD "</auth>",
				     TP_FEED_OK);
		assert_string_equal(o, "<failure xmlns='" XMLNS_SASL "'><not-authorized/></failure>");
		assert_false(f->closed);
	}
	const char *o = feed(f, "<auth xmlns='" XMLNS_SASL "' mechanism='PLAIN'>" PLAIN_BAD "</auth>",
			     TP_FEED_CLOSED);
	assert_has(o, "<failure xmlns='" XMLNS_SASL "'><not-authorized/></failure>");
	assert_has(o, "<policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>");
	assert_true(f->closed);
	close_stream(f);
	assert_int_equal(bus_n, 0);
}

/* A stanza from a bound stream leaves c2s through the bus, addressed to
 * the recipient's session, with 'from' stamped by the server (whatever the
 * client wrote). */
static void test_stanza_to_bus_from_stamped(void **state)
{
	(void)state;
	struct fconn *a = bound_stream(1, "a");
	struct fconn *b = bound_stream(2, "b");
	assert_int_equal(bus_n, 0);

	const char *o = feed(a, "<message to='alice@localhost/b' from='mallory@evil/x' type='chat' id='m1'>"
			     "<body>hi</body></message>", TP_FEED_OK);
	assert_string_equal(o, ""); /* nothing back to the sender */
	assert_int_equal(bus_n, 1);
	struct bus_call *c = &bus_log[0];
	assert_int_equal(c->kind, BUS_DELIVER);
	assert_true(bus_addr_eq(&c->to, &b->self));
	assert_non_null(c->msg);
	assert_int_equal(c->msg->kind, RMSG_MESSAGE);
	assert_string_equal(c->msg->from, "alice@localhost/a");
	assert_string_equal(c->msg->to, "alice@localhost/b");
	assert_string_equal(c->msg->id, "m1");
	assert_string_equal(c->msg->type, "chat");
	assert_has(c->msg->data, "from='alice@localhost/a'");
	assert_has(c->msg->data, "<body>hi</body>");
	assert_null(strstr(c->msg->data, "mallory"));
	assert_int_equal(a->paused, 0);

	/* What the bus brings to b is written to b's stream as it is. */
	sbuf_reset(&b->out);
	c2s_deliver(b->s, rmsg_ref(c->msg));
	assert_int_equal(b->out.len, c->msg->len);
	assert_memory_equal(b->out.data, c->msg->data, c->msg->len);

	close_stream(a);
	close_stream(b);
}

/* Binding a resource that is bound already kicks the old session through
 * the bus with <conflict/>; the new one wins the route. */
static void test_bind_conflict_kicks(void **state)
{
	(void)state;
	struct fconn *a = bound_stream(1, "same");
	struct fconn *b = bound_stream(2, "same");
	assert_int_equal(bus_n, 1);
	assert_int_equal(bus_log[0].kind, BUS_KICK);
	assert_int_equal(bus_log[0].cond, SE_CONFLICT);
	assert_true(bus_addr_eq(&bus_log[0].to, &a->self));
	struct route_target t;
	assert_int_equal(router_get_full(srv.router, "alice@localhost", "same", &t), 0);
	assert_true(bus_addr_eq(&t.addr, &b->self));
	/* What the bus does with the kick: a conflict stream error on a. */
	c2s_kick(a->s, SE_CONFLICT);
	assert_true(a->closed);
	assert_has(a->out.data, "<conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>");
	/* a's late unbind leaves b's route alone. */
	close_stream(a);
	assert_int_equal(router_get_full(srv.router, "alice@localhost", "same", &t), 0);
	assert_true(bus_addr_eq(&t.addr, &b->self));
	close_stream(b);
	assert_int_equal(router_get_full(srv.router, "alice@localhost", "same", &t), -ENOENT);
}

/* Flow control without a side channel: a stanza routed to a session the
 * router marks congested makes the sending stream pause its reading
 * (tp->pause_read), once per stanza; an uncongested one does not. */
static void test_congested_target_pauses_sender(void **state)
{
	(void)state;
	struct fconn *a = bound_stream(1, "a");
	struct fconn *b = bound_stream(2, "b");
	router_set_congested(srv.router, "alice@localhost", "b", &b->self, 1);
	feed(a, "<message to='alice@localhost/b'><body>1</body></message>", TP_FEED_OK);
	assert_int_equal(a->paused, 1);
	assert_int_equal(bus_n, 1);
	/* While paused, what a sends waits in a's own stream, not parsed. */
	feed(a, "<presence/>", TP_FEED_OK);
	assert_int_equal(bus_n, 1);
	/* The pause ends: the broadcast presence reaches b (congested) and a
	 * itself, and a stops again. */
	c2s_flow_unpaused(a->s);
	assert_int_equal(a->paused, 2);
	assert_int_equal(bus_n, 3);
	router_set_congested(srv.router, "alice@localhost", "b", &b->self, 0);
	c2s_flow_unpaused(a->s);
	feed(a, "<message to='alice@localhost/b'><body>2</body></message>", TP_FEED_OK);
	assert_int_equal(a->paused, 2);
	assert_int_equal(bus_n, 4);
	assert_int_equal(b->paused, 0);
	close_stream(a);
	close_stream(b);
}

/* A bound stream lost while its message to a bare JID waits for the
 * account lookup: held (c2s_is_held). */
static struct fconn *lost_with_a_lookup_pending(void)
{
	struct fconn *a = bound_stream(1, "a");
	sbuf_reset(&a->out);
	const char *msg = "<message to='nobody@localhost' type='chat' id='m1'><body>1</body></message>";
	assert_int_equal(c2s_feed(a->s, msg, strlen(msg)), TP_FEED_OK);
	assert_true(store_pending(fsh));
	c2s_on_lost(a->s);
	assert_true(c2s_is_held(a->s));
	return a;
}

/* The connection goes while a message waits for the store (the account
 * lookup of a bare JID): the session is held (c2s_is_held) until the store
 * answers and the message is handled (RFC 6120 §4.4), then let go. A
 * stanza delivered meanwhile is not written to the dead stream. */
static void test_lost_while_waiting_for_the_store(void **state)
{
	(void)state;
	struct fconn *a = lost_with_a_lookup_pending();
	const char *h = "<message from='alice@localhost/b' to='alice@localhost/a' type='headline'>"
			"<body>held-1</body></message>";
	struct rmsg *m = rmsg_new(RMSG_MESSAGE, h, strlen(h), "alice@localhost/b",
				  "alice@localhost/a", "", "headline");
	assert_non_null(m);
	c2s_deliver(a->s, m);
	while (store_pending(fsh))
		store_poll(fsh);
	assert_int_equal(sbuf_append(&a->out, "", 1), 0);
	assert_has(a->out.data, "service-unavailable"); /* the message was handled */
	assert_null(strstr(a->out.data, "held-1"));
	assert_false(c2s_is_held(a->s));
	c2s_free(a->s);
	sbuf_free(&a->out);
	free(a);
}

/* The same, and the store does not answer within [limits]
 * lost_input_timeout: the wait ends there, the session is let go and
 * freed, and the store's late answer finds nothing to run. */
static void test_lost_wait_is_bounded(void **state)
{
	(void)state;
	srv.cfg.lost_input_timeout = 2; /* setup() sets the defaults again */
	struct fconn *a = lost_with_a_lookup_pending();
	assert_int_equal(a->timer[C2S_TIMER_MAIN], 2000u);
	c2s_on_timeout(a->s, C2S_TIMER_MAIN);
	assert_false(c2s_is_held(a->s));
	c2s_free(a->s); /* what the worker does with a holder let go */
	while (store_pending(fsh))
		store_poll(fsh);
	assert_int_equal(sbuf_append(&a->out, "", 1), 0);
	assert_null(strstr(a->out.data, "service-unavailable")); /* dropped, not handled */
	sbuf_free(&a->out);
	free(a);
}

/* An established stream silent for C2S_TRIM_MS drops its parser and tells
 * the transport it freed memory (tp->trim_memory), then waits out the
 * rest of the idle timeout. */
static void test_idle_trim(void **state)
{
	(void)state;
	struct fconn *a = bound_stream(1, "a");
	feed(a, "<presence/>", TP_FEED_OK);
	assert_int_equal(a->timer[C2S_TIMER_MAIN], 250u); /* C2S_TRIM_MS */
	c2s_on_timeout(a->s, C2S_TIMER_MAIN);
	assert_int_equal(a->trimmed, 1);
	assert_false(a->closed);
	/* The next stanza rebuilds the parser and is routed as usual. */
	size_t before = bus_n;
	feed(a, "<message to='alice@localhost/a'><body>x</body></message>", TP_FEED_OK);
	assert_int_equal(bus_n, before + 1);
	close_stream(a);
}

/* Fails unless every stream document in <out> (a new one starts at each
 * XML declaration: restarts) is well-formed as far as it goes, and
 * nothing follows a closed one. */
static void assert_well_formed(const char *out, size_t len)
{
	static const char decl[] = "<?xml version='1.0'?>";
	const char *p = out, *end = out + len;
	assert_true(len == 0 || !strncmp(out, decl, sizeof(decl) - 1));
	while (p < end) {
		const char *next = strstr(p + 1, decl);
		if (!next)
			next = end;
		XML_Parser x = XML_ParserCreate(NULL);
		assert_non_null(x);
		if (XML_Parse(x, p, (int)(next - p), 0) == XML_STATUS_ERROR)
			fail_msg("malformed output (%s) in: %.*s", XML_ErrorString(XML_GetErrorCode(x)),
				 (int)(next - p), p);
		XML_ParserFree(x);
		p = next;
	}
}

/* One session's worth of client input: login, bind, stanzas of each kind,
 * answers built by the server (ping, an error for an unknown account,
 * presence), and the end. */
static const char *const oom_script[] = {
	HDR,
	"<auth xmlns='" XMLNS_SASL "' mechanism='PLAIN'>" PLAIN_OK "</auth>",
	HDR,
	"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>r</resource>"
	"</bind></iq>",
	"<presence><status>here &amp; there</status></presence>",
	"<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>",
	"<message to='alice@localhost/r' id='m'><body>to myself &lt;3</body></message>",
	"<iq type='get' id='v' to='nobody@localhost'><query xmlns='jabber:iq:version'/></iq>",
	"<message to='alice@localhost/gone' type='chat'><body>x</body></message>",
	"</stream:stream>",
};

/* Runs oom_script with allocation <at> failing (and every later one, if
 * <all>). Returns how many allocations c2s made. */
static int run_oom_script(int at, int all, int *saw_ise)
{
	struct fconn *f = open_stream(1, 1);
	inject_at = at;
	inject_all = all;
	inject_n = inject_fired = 0;
	for (size_t i = 0; i < sizeof(oom_script) / sizeof(oom_script[0]) && !f->closed; i++) {
		inject_on = 1;
		c2s_feed(f->s, oom_script[i], strlen(oom_script[i]));
		inject_on = 0;
	}
	assert_well_formed(f->out.data ? f->out.data : "", f->out.len);
	const char *ise = f->out.data ? strstr(f->out.data, "<internal-server-error") : NULL;
	if (ise) {
		/* The stream ends with it, and is closed. */
		static const char tail[] = "<internal-server-error xmlns='urn:ietf:params:xml:ns:"
					   "xmpp-streams'/></stream:error></stream:stream>";
		assert_string_equal(ise, tail);
		assert_true(f->closed);
		*saw_ise += 1;
	}
	if (!inject_fired)
		assert_null(ise);
	int n = inject_n;
	inject_on = 0;
	close_stream(f);
	bus_reset();
	return n;
}

/* Item 10 of the hardening issue: any allocation c2s makes for its output
 * may fail, once or from then on. The client then sees well-formed XML
 * only: the reply as it should be, or <internal-server-error/> and the end
 * of the stream; never a truncated element, never bytes after the end. */
static void test_allocation_failures(void **state)
{
	(void)state;
	int saw_ise = 0;
	sbuf_fail_hook = inject_hook;
	int total = run_oom_script(-1, 0, &saw_ise);
	assert_true(total > 10);
	assert_int_equal(saw_ise, 0);
	for (int at = 0; at < total; at++) {
		run_oom_script(at, 0, &saw_ise);
		run_oom_script(at, 1, &saw_ise);
	}
	sbuf_fail_hook = NULL;
	print_message("%d allocations, %d runs ended in internal-server-error\n", total, saw_ise);
	assert_true(saw_ise > 0);
}

int main(void)
{
	if (sodium_init() < 0)
		return 1;
	log_threshold = LOG_L_ERROR;
	/* 1 iteration: PBKDF2 would only slow the test down. */
	if (scram_creds_derive("pencil", 1, &alice))
		return 1;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_open_features, setup, teardown),
		cmocka_unit_test_setup_teardown(test_starttls_required, setup, teardown),
		cmocka_unit_test_setup_teardown(test_plain_failure, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stanza_to_bus_from_stamped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bind_conflict_kicks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_congested_target_pauses_sender, setup, teardown),
		cmocka_unit_test_setup_teardown(test_idle_trim, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lost_while_waiting_for_the_store, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lost_wait_is_bounded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_allocation_failures, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
