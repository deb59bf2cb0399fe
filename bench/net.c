/* bench/net.c - tether-bench plumbing: io_uring, sockets, TLS via memory BIOs, expat glue.
 *
 * Nothing here knows XMPP beyond "a stream header starts the document and
 * depth-1 elements are what we dispatch"; protocol decisions live in xmpp.c.
 */
#include "bench.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <liburing.h>
#include <openssl/err.h>

/* | op:8 | gen:24 | slot:32 | */
enum { OP_CONNECT = 1, OP_RECV, OP_SEND, };

#define RING_ENTRIES  4096u
#define BUF_COUNT     4096u      /* provided recv buffers (power of two) */
#define BUF_SIZE      16384u     /* one TLS record fits */
#define BUF_GROUP     0
#define OBUF_MIN      4096u

static struct io_uring ring;
static struct io_uring_buf_ring *bring;
static char *bufs;
static struct conn **slots;
static uint32_t nslots;
static uint32_t *free_slots;
static uint32_t nfree;
static unsigned live;
static struct conn *dirty_head;
static SSL_CTX *ssl_ctx;
static struct sockaddr_in server_addr;
static unsigned src_rr;
static unsigned starved;
int net_stop;

static inline uint64_t ud_pack(unsigned op, uint32_t gen, uint32_t slot)
{
	return (uint64_t)op << 56 | (uint64_t)(gen & 0xffffff) << 32 | slot;
}

uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Returns an SQE, submitting what is queued when the SQ is full. */
static struct io_uring_sqe *get_sqe(void)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);

	if (!sqe) {
		io_uring_submit(&ring);
		sqe = io_uring_get_sqe(&ring);
	}
	if (!sqe) {
		fprintf(stderr, "tether-bench: no SQE after submit\n");
		abort();
	}
	return sqe;
}

/* Stores the TLS 1.3 ticket on the session so a reconnect (resume mode) can
 * do an abbreviated handshake, as a real client would. Takes ownership. */
static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
	struct conn *c = SSL_get_app_data(ssl);

	if (!c || !c->s || !opt.tls_tickets)
		return 0;
	if (c->s->tls_sess)
		SSL_SESSION_free(c->s->tls_sess);
	c->s->tls_sess = sess;
	return 1;
}

int net_init(unsigned max_conns)
{
	struct io_uring_params p;
	struct io_uring_buf_reg reg;
	struct rlimit rl;
	rlim_t want = (rlim_t)max_conns + 256;
	int ret;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < want) {
		rl.rlim_cur = want;
		if (rl.rlim_max < want)
			rl.rlim_max = want;      /* root may raise the hard limit */
		if (setrlimit(RLIMIT_NOFILE, &rl) == -1)
			fprintf(stderr, "tether-bench: cannot raise RLIMIT_NOFILE to %lu: %s\n",
				(unsigned long)want, strerror(errno));
	}

	/* SINGLE_ISSUER|DEFER_TASKRUN: one thread owns the ring and task work
	 * runs when we wait, not on an IPI; CQ 8x the SQ because multishot recv
	 * posts many CQEs per SQE. Older kernels: fall back to plain flags. */
	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE;
	p.cq_entries = RING_ENTRIES * 8;
	ret = io_uring_queue_init_params(RING_ENTRIES, &ring, &p);
	if (ret == -EINVAL) {
		memset(&p, 0, sizeof(p));
		p.flags = IORING_SETUP_CQSIZE;
		p.cq_entries = RING_ENTRIES * 8;
		ret = io_uring_queue_init_params(RING_ENTRIES, &ring, &p);
	}
	if (ret < 0) {
		fprintf(stderr, "tether-bench: io_uring_queue_init: %s\n", strerror(-ret));
		return ret;
	}

	/* Provided buffers for multishot recv: an idle connection holds none. */
	bring = mmap(NULL, BUF_COUNT * sizeof(struct io_uring_buf), PROT_READ | PROT_WRITE,
		     MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	bufs = malloc((size_t)BUF_COUNT * BUF_SIZE);
	if (bring == MAP_FAILED || !bufs) {
		fprintf(stderr, "tether-bench: out of memory for recv buffers\n");
		return -ENOMEM;
	}
	memset(&reg, 0, sizeof(reg));
	reg.ring_addr = (unsigned long)bring;
	reg.ring_entries = BUF_COUNT;
	reg.bgid = BUF_GROUP;
	ret = io_uring_register_buf_ring(&ring, &reg, 0);
	if (ret < 0) {
		fprintf(stderr, "tether-bench: provided buffer rings unsupported (%s); need Linux >= 5.19\n",
			strerror(-ret));
		return ret;
	}
	io_uring_buf_ring_init(bring);
	for (unsigned i = 0; i < BUF_COUNT; i++)
		io_uring_buf_ring_add(bring, bufs + (size_t)i * BUF_SIZE, BUF_SIZE, (unsigned short)i,
				      io_uring_buf_ring_mask(BUF_COUNT), (int)i);
	io_uring_buf_ring_advance(bring, BUF_COUNT);

	nslots = max_conns;
	slots = calloc(nslots, sizeof(*slots));
	free_slots = calloc(nslots, sizeof(*free_slots));
	if (!slots || !free_slots)
		return -ENOMEM;
	for (uint32_t i = 0; i < nslots; i++)
		free_slots[nfree++] = nslots - 1 - i;

	memset(&server_addr, 0, sizeof(server_addr));
	server_addr.sin_family = AF_INET;
	server_addr.sin_port = htons((uint16_t)opt.port);
	if (inet_pton(AF_INET, opt.host, &server_addr.sin_addr) != 1) {
		fprintf(stderr, "tether-bench: --host must be an IPv4 address: %s\n", opt.host);
		return -EINVAL;
	}
	if ((ntohl(server_addr.sin_addr.s_addr) >> 24) != 127) {
		fprintf(stderr, "tether-bench: refusing non-loopback host %s\n", opt.host);
		return -EINVAL;
	}

	/* Certificates are not verified: loopback only, self-signed test certs. */
	ssl_ctx = SSL_CTX_new(TLS_method());
	if (!ssl_ctx)
		return -ENOMEM;
	SSL_CTX_set_min_proto_version(ssl_ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(ssl_ctx, SSL_VERIFY_NONE, NULL);
	SSL_CTX_set_session_cache_mode(ssl_ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
	SSL_CTX_sess_set_new_cb(ssl_ctx, on_new_session);
	return 0;
}

void net_deinit(void)
{
	for (uint32_t i = 0; i < nslots; i++) {
		struct conn *c = slots[i];

		if (c && c->fd >= 0)
			close(c->fd);
	}
	io_uring_queue_exit(&ring);
}

unsigned net_live(void)
{
	return live;
}

/* --- arena for the element being parsed ------------------------------ */

struct ablk {
	struct ablk *next;
	size_t used, cap;
	char data[];
};

static void *arena_alloc(struct conn *c, size_t n)
{
	struct ablk *b = c->arena;

	n = (n + 15) & ~(size_t)15;
	if (!b || b->cap - b->used < n) {
		size_t cap = n > 4096 - sizeof(*b) ? n : 4096 - sizeof(*b);

		b = malloc(sizeof(*b) + cap);
		if (!b)
			abort();
		b->next = c->arena;
		b->used = 0;
		b->cap = cap;
		c->arena = b;
	}
	b->used += n;
	return b->data + b->used - n;
}

static char *arena_strdup(struct conn *c, const char *s, size_t n)
{
	char *p = arena_alloc(c, n + 1);

	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

static void arena_reset(struct conn *c)
{
	struct ablk *b = c->arena;

	while (b) {
		struct ablk *n = b->next;

		free(b);
		b = n;
	}
	c->arena = NULL;
}

const char *xel_attr(const struct xel *e, const char *name)
{
	for (const char **a = e->attrs; a && a[0]; a += 2)
		if (strcmp(a[0], name) == 0)
			return a[1];
	return NULL;
}

struct xel *xel_child(const struct xel *e, const char *ns, const char *name)
{
	for (struct xel *k = e->child; k; k = k->next)
		if (strcmp(k->name, name) == 0 && (!ns || strcmp(k->ns, ns) == 0))
			return k;
	return NULL;
}

/* --- expat glue -------------------------------------------------------- */

static void XMLCALL on_start(void *ud, const XML_Char *name, const XML_Char **attrs)
{
	struct conn *c = ud;
	const char *bar = strchr(name, '|');
	struct xel *e;
	size_t n = 0;

	if (c->state == CS_DEAD)
		return;
	if (c->depth++ == 0) {
		xmpp_on_stream_start(c, (const char **)attrs);
		return;
	}
	e = arena_alloc(c, sizeof(*e));
	memset(e, 0, sizeof(*e));
	if (bar) {
		e->ns = arena_strdup(c, name, (size_t)(bar - name));
		e->name = arena_strdup(c, bar + 1, strlen(bar + 1));
	} else {
		e->ns = "";
		e->name = arena_strdup(c, name, strlen(name));
	}
	while (attrs[n])
		n++;
	e->attrs = arena_alloc(c, (n + 1) * sizeof(char *));
	for (size_t i = 0; i < n; i++)
		e->attrs[i] = arena_strdup(c, attrs[i], strlen(attrs[i]));
	e->attrs[n] = NULL;
	e->parent = c->cur;
	if (c->cur) {
		if (c->cur->last)
			c->cur->last->next = e;
		else
			c->cur->child = e;
		c->cur->last = e;
	}
	c->cur = e;
}

static void XMLCALL on_end(void *ud, const XML_Char *name)
{
	struct conn *c = ud;
	struct xel *e = c->cur;

	(void)name;
	if (c->state == CS_DEAD)
		return;
	if (--c->depth == 0) {
		xmpp_on_stream_end(c);
		return;
	}
	if (!e)
		return;
	c->cur = e->parent;
	if (c->depth == 1) {
		c->in_loop++;
		xmpp_on_element(c, e);
		c->in_loop--;
		c->cur = NULL;
		arena_reset(c);
		if (c->state == CS_DEAD || (c->flags & (CONN_F_RESTART | CONN_F_STARTTLS)))
			XML_StopParser(c->xp, XML_FALSE);
	}
}

static void XMLCALL on_text(void *ud, const XML_Char *s, int len)
{
	struct conn *c = ud;
	struct xel *e = c->cur;

	if (!e || c->state == CS_DEAD)
		return;
	if (e->tlen + (size_t)len + 1 > e->tcap) {
		size_t cap = (e->tlen + (size_t)len + 1) * 2;
		char *t = arena_alloc(c, cap);

		if (e->tlen)
			memcpy(t, e->text, e->tlen);
		e->text = t;
		e->tcap = cap;
	}
	memcpy(e->text + e->tlen, s, (size_t)len);
	e->tlen += (size_t)len;
	e->text[e->tlen] = '\0';
}

static int xml_setup(struct conn *c)
{
	if (!c->xp)
		c->xp = XML_ParserCreateNS("UTF-8", '|');
	else
		XML_ParserReset(c->xp, "UTF-8");
	if (!c->xp)
		return -ENOMEM;
	XML_SetUserData(c->xp, c);
	XML_SetElementHandler(c->xp, on_start, on_end);
	XML_SetCharacterDataHandler(c->xp, on_text);
	XML_SetReturnNSTriplet(c->xp, 0);
	c->depth = 0;
	c->cur = NULL;
	arena_reset(c);
	return 0;
}

/* Feeds plaintext to the parser, then performs the restart/STARTTLS the
 * handlers asked for: the parser is reset only after XML_Parse returns. */
static void xml_feed(struct conn *c, const char *data, size_t len)
{
	enum XML_Status st;

	if (c->s)
		c->s->rx_plain += len;
	st = XML_Parse(c->xp, data, (int)len, XML_FALSE);
	if (c->state == CS_DEAD)
		return;
	if (c->flags & CONN_F_STARTTLS) {
		/* bytes after <proceed/> are dropped, as RFC 6120 5.4.3.3 wants */
		c->flags &= ~(CONN_F_STARTTLS | CONN_F_RESTART);
		xml_setup(c);
		if (conn_start_tls(c) < 0)
			conn_close(c, END_IO, "tls setup");
		return;
	}
	if (c->flags & CONN_F_RESTART) {
		c->flags &= ~CONN_F_RESTART;
		xml_setup(c);
		return;
	}
	if (st == XML_STATUS_ERROR) {
		fprintf(stderr, "tether-bench: xml: %s\n", XML_ErrorString(XML_GetErrorCode(c->xp)));
		conn_close(c, END_PROTO, "not-well-formed");
	}
}

/* --- output ------------------------------------------------------------ */

static void mark_dirty(struct conn *c)
{
	if (c->flags & CONN_F_DIRTY)
		return;
	c->flags |= CONN_F_DIRTY;
	c->dirty_next = dirty_head;
	dirty_head = c;
}

/* Appends raw (wire) bytes to the pending output. A write after bytes came
 * in from the server starts a new client flight. */
static void out_append(struct conn *c, const char *data, size_t len)
{
	if (c->olen + len > c->ocap) {
		size_t cap = c->ocap ? c->ocap : OBUF_MIN;

		while (cap < c->olen + len)
			cap *= 2;
		c->obuf = realloc(c->obuf, cap);
		if (!c->obuf)
			abort();
		c->ocap = cap;
	}
	memcpy(c->obuf + c->olen, data, len);
	c->olen += len;
	if (c->flags & CONN_F_RX_SINCE_TX) {
		c->flags &= ~CONN_F_RX_SINCE_TX;
		c->flights++;
	}
	mark_dirty(c);
}

/* Moves ciphertext BoringSSL produced into the pending output. */
static void tls_drain(struct conn *c)
{
	const uint8_t *p;
	size_t n;

	if (!c->wbio)
		return;
	if (BIO_mem_contents(c->wbio, &p, &n) && n) {
		out_append(c, (const char *)p, n);
		BIO_reset(c->wbio);
	}
}

void conn_write(struct conn *c, const char *data, size_t len)
{
	if (c->state == CS_DEAD || !len)
		return;
	if (c->flags & CONN_F_TLS) {
		int r = SSL_write(c->ssl, data, (int)len);

		if (r <= 0) {
			conn_close(c, END_IO, "SSL_write");
			return;
		}
		tls_drain(c);
	} else {
		out_append(c, data, len);
	}
}

void conn_printf(struct conn *c, const char *fmt, ...)
{
	char buf[2048];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(buf)) {
		conn_close(c, END_PROTO, "output too long");
		return;
	}
	conn_write(c, buf, (size_t)n);
}

/* One send in flight per connection; the pending buffer becomes the
 * in-flight one and is not touched until its CQE. */
static void flush(struct conn *c)
{
	struct io_uring_sqe *sqe;
	char *t;
	size_t cap;

	if (c->state == CS_DEAD || (c->flags & CONN_F_SENDING) || !c->olen || c->state == CS_CONNECTING)
		return;
	t = c->sbuf;
	cap = c->scap;
	c->sbuf = c->obuf;
	c->scap = c->ocap;
	c->slen = c->olen;
	c->soff = 0;
	c->obuf = t;
	c->ocap = cap;
	c->olen = 0;
	sqe = get_sqe();
	io_uring_prep_send(sqe, c->fd, c->sbuf, c->slen, MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, ud_pack(OP_SEND, c->gen, c->slot));
	c->flags |= CONN_F_SENDING;
	c->inflight++;
}

static void maybe_free(struct conn *c);

static void flush_dirty(void)
{
	while (dirty_head) {
		struct conn *c = dirty_head;

		dirty_head = c->dirty_next;
		c->flags &= ~CONN_F_DIRTY;
		flush(c);
		maybe_free(c);
	}
}

/* --- lifecycle ----------------------------------------------------------- */

static void arm_recv(struct conn *c)
{
	struct io_uring_sqe *sqe = get_sqe();

	io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = BUF_GROUP;
	io_uring_sqe_set_data64(sqe, ud_pack(OP_RECV, c->gen, c->slot));
	c->flags |= CONN_F_RX_ARMED;
	c->inflight++;
}

/* Opens a TCP connection for <s> from the next loopback source address.
 * Returns the connection (owned by net.c, freed after its close), or NULL
 * when no slot or socket is available. */
struct conn *conn_open(struct sess *s)
{
	struct sockaddr_in src;
	struct io_uring_sqe *sqe;
	struct conn *c;
	uint32_t slot;
	int one = 1;
	int fd;

	if (!nfree)
		return NULL;
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		fprintf(stderr, "tether-bench: socket: %s\n", strerror(errno));
		return NULL;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* The port is picked at connect() from the 4-tuple, so every source
	 * address gives a full ephemeral range towards the server. */
	setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
	memset(&src, 0, sizeof(src));
	src.sin_family = AF_INET;
	src.sin_addr.s_addr = htonl(0x7f000002u + src_rr++ % (unsigned)opt.sources);
	if (bind(fd, (struct sockaddr *)&src, sizeof(src)) == -1) {
		fprintf(stderr, "tether-bench: bind: %s\n", strerror(errno));
		close(fd);
		return NULL;
	}

	slot = free_slots[--nfree];
	c = slots[slot];
	if (!c) {
		c = calloc(1, sizeof(*c));
		if (!c)
			abort();
		slots[slot] = c;
		c->slot = slot;
	}
	c->gen++;
	c->fd = fd;
	c->flags = 0;
	c->state = CS_CONNECTING;
	c->s = s;
	c->flights = 1;           /* SYN */
	c->t_start = now_ns();
	c->deadline = 0;
	c->end = END_NONE;
	c->why = NULL;
	c->inflight = 0;
	c->olen = c->slen = c->soff = 0;
	c->mech = NULL;
	c->bind_id = 0;
	c->resume = 0;
	c->sm_offered = 0;
	c->isr_offered = 0;
	c->sasl2 = 0;
	c->sasl2_bound = 0;
	c->ht = 0;
	c->in_loop = 0;
	if (xml_setup(c) < 0)
		abort();
	s->c = c;
	live++;

	/* The SQE points at the address until it is submitted, so it lives in
	 * the connection; the port is the session's node (cluster runs). */
	c->peer = server_addr;
	if (s->port > 0)
		c->peer.sin_port = htons((uint16_t)s->port);
	sqe = get_sqe();
	io_uring_prep_connect(sqe, fd, (struct sockaddr *)&c->peer, sizeof(c->peer));
	io_uring_sqe_set_data64(sqe, ud_pack(OP_CONNECT, c->gen, c->slot));
	c->inflight++;
	return c;
}

int conn_start_tls(struct conn *c)
{
	static const uint8_t alpn[] = "\x0bxmpp-client";
	int r;

	c->ssl = SSL_new(ssl_ctx);
	c->rbio = BIO_new(BIO_s_mem());
	c->wbio = BIO_new(BIO_s_mem());
	if (!c->ssl || !c->rbio || !c->wbio)
		return -ENOMEM;
	SSL_set_bio(c->ssl, c->rbio, c->wbio);
	SSL_set_app_data(c->ssl, c);
	SSL_set_connect_state(c->ssl);
	SSL_set_tlsext_host_name(c->ssl, opt.domain);
	if (opt.tls == TLS_DIRECT)
		SSL_set_alpn_protos(c->ssl, alpn, sizeof(alpn) - 1);
	if (opt.tls_tickets && c->s->tls_sess)
		SSL_set_session(c->ssl, c->s->tls_sess);
	c->state = CS_TLS_HANDSHAKE;
	r = SSL_do_handshake(c->ssl);
	if (r <= 0 && SSL_get_error(c->ssl, r) != SSL_ERROR_WANT_READ)
		return -EPROTO;
	tls_drain(c);
	return 0;
}

static void conn_free(struct conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	if (c->ssl)
		SSL_free(c->ssl);      /* frees both BIOs */
	c->ssl = NULL;
	c->rbio = c->wbio = NULL;
	xmpp_conn_free(c);
	arena_reset(c);
	/* keep the parser and buffers for the next user of the slot? No: an
	 * idle client should not make the bench's own RSS grow unbounded. */
	if (c->xp)
		XML_ParserFree(c->xp);
	c->xp = NULL;
	free(c->obuf);
	free(c->sbuf);
	c->obuf = c->sbuf = NULL;
	c->ocap = c->scap = 0;
	c->gen++;
	free_slots[nfree++] = c->slot;
	live--;
}

static void maybe_free(struct conn *c)
{
	if (c->state == CS_DEAD && c->inflight == 0 && c->in_loop == 0 && !(c->flags & CONN_F_DIRTY))
		conn_free(c);
}

/* Ends <c>: shuts the socket (the server sees FIN, not </stream:stream>),
 * tells the mode once, frees when the last CQE is in. */
void conn_close(struct conn *c, enum cend why, const char *what)
{
	struct sess *s = c->s;
	int was_closing = c->state == CS_CLOSING;

	if (c->state == CS_DEAD)
		return;
	c->state = CS_DEAD;
	c->end = why;
	if (what)
		c->why = what;
	if (c->fd >= 0)
		shutdown(c->fd, SHUT_RDWR);
	if (s && s->c == c)
		s->c = NULL;
	if (!(c->flags & CONN_F_ENDED)) {
		c->flags |= CONN_F_ENDED;
		/* a connection we were closing no longer carries the session */
		if (mode->on_end && s && !was_closing)
			mode->on_end(s, c);
	}
	maybe_free(c);
}

void conn_abort(struct conn *c)
{
	conn_close(c, END_LOCAL, "abort");
}

/* --- completions --------------------------------------------------------- */

static void on_connect(struct conn *c, int res)
{
	if (res < 0) {
		c->why = strerror(-res);
		conn_close(c, END_IO, c->why);
		return;
	}
	arm_recv(c);
	c->flags |= CONN_F_RX_SINCE_TX;
	if (opt.tls == TLS_DIRECT) {
		if (conn_start_tls(c) < 0)
			conn_close(c, END_IO, "tls setup");
	} else {
		xmpp_on_connected(c);
	}
}

static void tls_input(struct conn *c)
{
	static char plain[16384];
	int r;

	if (c->state == CS_TLS_HANDSHAKE) {
		r = SSL_do_handshake(c->ssl);
		if (r <= 0) {
			int e = SSL_get_error(c->ssl, r);

			tls_drain(c);
			if (e != SSL_ERROR_WANT_READ)
				conn_close(c, END_IO, "TLS handshake failed");
			return;
		}
		c->flags |= CONN_F_TLS;
		if (SSL_session_reused(c->ssl))
			c->flags |= CONN_F_TLS_REUSED;
		xmpp_on_tls_up(c);
	}
	while (c->state != CS_DEAD) {
		r = SSL_read(c->ssl, plain, sizeof(plain));
		if (r > 0) {
			xml_feed(c, plain, (size_t)r);
			continue;
		}
		switch (SSL_get_error(c->ssl, r)) {
		case SSL_ERROR_WANT_READ:
			break;
		case SSL_ERROR_ZERO_RETURN:
			conn_close(c, END_EOF, "TLS close_notify");
			break;
		default:
			conn_close(c, END_IO, "TLS error");
			break;
		}
		break;
	}
	if (c->state != CS_DEAD)
		tls_drain(c);
}

static void on_recv(struct conn *c, struct io_uring_cqe *cqe)
{
	int res = cqe->res;

	if (!(cqe->flags & IORING_CQE_F_MORE)) {
		c->flags &= ~CONN_F_RX_ARMED;
		c->inflight--;
	}
	if (res == -ENOBUFS) {
		c->flags |= CONN_F_STARVED;
		starved++;
		return;
	}
	if (res <= 0) {
		if (cqe->flags & IORING_CQE_F_BUFFER)
			goto give_back;
		if (c->state != CS_DEAD)
			conn_close(c, res == 0 ? END_EOF : END_IO, res == 0 ? "EOF" : strerror(-res));
		return;
	}
	if (c->state != CS_DEAD) {
		unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
		const char *data = bufs + (size_t)bid * BUF_SIZE;

		c->flags |= CONN_F_RX_SINCE_TX;
		if (c->s)
			c->s->rx_wire += (uint64_t)res;
		c->in_loop++;
		if (c->ssl) {
			if (BIO_write(c->rbio, data, res) != res)
				conn_close(c, END_IO, "BIO_write");
			else
				tls_input(c);
		} else {
			xml_feed(c, data, (size_t)res);
		}
		c->in_loop--;
	}
give_back:
	if (cqe->flags & IORING_CQE_F_BUFFER) {
		unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;

		io_uring_buf_ring_add(bring, bufs + (size_t)bid * BUF_SIZE, BUF_SIZE, (unsigned short)bid,
				      io_uring_buf_ring_mask(BUF_COUNT), 0);
		io_uring_buf_ring_advance(bring, 1);
	}
	if (c->state != CS_DEAD && !(c->flags & CONN_F_RX_ARMED) && !(c->flags & CONN_F_STARVED))
		arm_recv(c);
}

static void on_send(struct conn *c, int res)
{
	c->inflight--;
	c->flags &= ~CONN_F_SENDING;
	if (c->state == CS_DEAD)
		return;
	if (res < 0) {
		conn_close(c, END_IO, strerror(-res));
		return;
	}
	c->soff += (size_t)res;
	if (c->soff < c->slen) {
		struct io_uring_sqe *sqe = get_sqe();

		io_uring_prep_send(sqe, c->fd, c->sbuf + c->soff, c->slen - c->soff, MSG_NOSIGNAL);
		io_uring_sqe_set_data64(sqe, ud_pack(OP_SEND, c->gen, c->slot));
		c->flags |= CONN_F_SENDING;
		c->inflight++;
		return;
	}
	if (c->olen)
		mark_dirty(c);
}

static void handle_cqe(struct io_uring_cqe *cqe)
{
	uint64_t ud = io_uring_cqe_get_data64(cqe);
	unsigned op = (unsigned)(ud >> 56);
	uint32_t gen = (uint32_t)(ud >> 32) & 0xffffff;
	uint32_t slot = (uint32_t)ud;
	struct conn *c = slot < nslots ? slots[slot] : NULL;

	if (!c || (c->gen & 0xffffff) != gen) {
		/* stale: the connection is gone; a buffer still goes back */
		if (cqe->flags & IORING_CQE_F_BUFFER) {
			unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;

			io_uring_buf_ring_add(bring, bufs + (size_t)bid * BUF_SIZE, BUF_SIZE,
					      (unsigned short)bid, io_uring_buf_ring_mask(BUF_COUNT), 0);
			io_uring_buf_ring_advance(bring, 1);
		}
		return;
	}
	c->in_loop++;
	switch (op) {
	case OP_CONNECT:
		c->inflight--;
		if (c->state == CS_CONNECTING)
			on_connect(c, cqe->res);
		break;
	case OP_RECV:
		on_recv(c, cqe);
		break;
	case OP_SEND:
		on_send(c, cqe->res);
		break;
	}
	c->in_loop--;
	maybe_free(c);
}

/* Re-arms receivers that hit -ENOBUFS, scans deadlines. */
static void housekeeping(uint64_t now)
{
	static uint64_t last_scan;

	if (starved) {
		starved = 0;
		for (uint32_t i = 0; i < nslots; i++) {
			struct conn *c = slots[i];

			if (c && c->state != CS_DEAD && c->fd >= 0 && (c->flags & CONN_F_STARVED)) {
				c->flags &= ~CONN_F_STARVED;
				if (!(c->flags & CONN_F_RX_ARMED))
					arm_recv(c);
			}
		}
	}
	if (now - last_scan < 100000000ull)
		return;
	last_scan = now;
	for (uint32_t i = 0; i < nslots; i++) {
		struct conn *c = slots[i];

		if (c && c->state != CS_DEAD && c->fd >= 0 && c->deadline && now > c->deadline) {
			c->in_loop++;
			if (c->state == CS_CLOSING)
				conn_close(c, END_LOCAL, NULL);
			else
				conn_close(c, END_TIMEOUT, "timeout");
			c->in_loop--;
			maybe_free(c);
		}
	}
}

/* One loop turn: flush output, wait up to <wait_ms> for completions, handle
 * them all, housekeeping, mode tick. Returns the number of CQEs handled. */
int net_run_once(unsigned wait_ms)
{
	struct __kernel_timespec ts = { .tv_sec = 0, .tv_nsec = (long long)wait_ms * 1000000ll };
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;
	uint64_t now;

	flush_dirty();
	io_uring_submit_and_wait_timeout(&ring, &cqe, 1, &ts, NULL);
	io_uring_for_each_cqe(&ring, head, cqe) {
		handle_cqe(cqe);
		n++;
	}
	io_uring_cq_advance(&ring, n);
	now = now_ns();
	housekeeping(now);
	if (mode->on_tick)
		mode->on_tick(now);
	flush_dirty();
	io_uring_submit(&ring);
	return (int)n;
}
