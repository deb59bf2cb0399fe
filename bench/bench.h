/* bench/bench.h - tether-bench: shared types of the XMPP load generator.
 *
 * One thread, one io_uring. bench/net.c owns sockets, the ring and TLS;
 * bench/xmpp.c is the client protocol (stream, STARTTLS, SASL, bind, SM);
 * bench/stats.c holds latency histograms, /proc readers and the reports;
 * bench/main.c parses the command line and runs the modes.
 */
#ifndef TETHER_BENCH_H
#define TETHER_BENCH_H

#include <stddef.h>
#include <stdint.h>

#include <netinet/in.h>

#include <expat.h>
#include <openssl/ssl.h>

/* ------------------------------------------------------------------ */
/* options                                                             */

enum tls_mode {
	TLS_STARTTLS = 0,       /* plaintext stream, then <starttls/> */
	TLS_DIRECT,             /* XEP-0368 direct TLS */
};

/* How a dropped session comes back. ISR and FAST send the stream header
 * and one SASL2 <authenticate/> in the flight that ends the TLS handshake,
 * keyed with an HT-SHA-256-NONE token (no channel binding). Where it comes
 * back (the same node or the other one of a cluster) is opt.resume_on;
 * --resume-kind cross-node is classic with resume_on = 2. */
enum resume_kind {
	RESUME_CLASSIC = 0,     /* TLS, SASL, restart, <resume previd h/> */
	RESUME_ISR,             /* XEP-0397: token from <isr-enabled/>, <inst-resume/> */
	RESUME_FAST,            /* XEP-0484: SASL2 login with a FAST token, inline <resume/> */
};

struct opts {
	const char *host;       /* server address (127.0.0.0/8 only) */
	int port;
	enum tls_mode tls;
	const char *domain;
	const char *user_fmt;   /* printf pattern with one %d, e.g. "user%d" */
	const char *pass_fmt;   /* same; "%d" optional */
	int user_base;          /* first user index */
	int users;              /* size of the user pool (login mode) */
	const char *mech;       /* NULL = auto (SCRAM-SHA-1, SCRAM-SHA-256, PLAIN) */
	const char *label;      /* server label in the reports */
	int server_pid;         /* for RSS (idle mode); 0 = unknown */
	double rate;            /* login ramp, sessions/s */
	int concurrency;        /* logins in progress at once */
	double duration;        /* seconds (login mode) */
	long count;             /* logins (login mode), rounds (resume) */
	int window;             /* flood: messages in flight per pair; 0 = open loop */
	int ack_every;          /* receiver sends <a/> every K stanzas; sender <r/> */
	int body_size;          /* flood: minimum body length */
	int sources;            /* loopback source addresses 127.0.0.2 .. */
	double timeout;         /* seconds without progress before giving up */
	double settle;          /* idle: seconds to wait before the second RSS read */
	double hold;            /* idle: seconds to hold after the RSS read */
	double warmup;          /* login: seconds of logins not measured */
	int sm;                 /* try SM enable */
	int tls_tickets;        /* TLS session resumption on reconnect */
	int redeliver;          /* resume: unacked stanzas left before the drop */
	enum resume_kind resume_kind;
	int quiet;              /* no progress lines */
	/* cluster runs: ports of other nodes, same --tls mode as --port */
	int port2;              /* resume: the second node */
	int resume_on;          /* resume: 1 = the login's node, 2 = the other one (alternating) */
	int recv_port;          /* flood: receivers' node; 0 = --port */
	int resume_port;        /* flood with --kill-cmd: where dropped sessions resume */
	const char *kill_cmd;   /* flood: run by /bin/sh -c, --kill-after-ms after the start */
	long kill_after_ms;
	/* presence mode */
	int contacts;           /* roster size: the ring neighbours i-K/2 .. i+K/2 (even) */
	int updates;            /* presence changes each user broadcasts once all are online */
	int observers;          /* the first K users observe (with --csi: inactive) */
	int csi;                /* observers send XEP-0352 <inactive/> when offered */
	int prewarm;            /* log every user in and out once before measuring */
};

extern struct opts opt;

/* ------------------------------------------------------------------ */
/* time                                                                */

uint64_t now_ns(void);

/* ------------------------------------------------------------------ */
/* XML elements: one top-level element, built while expat parses it.  */

struct xel {
	const char *ns;         /* namespace URI ("" when none) */
	const char *name;       /* local name */
	const char **attrs;     /* name, value, ..., NULL (names "ns|local" if namespaced) */
	struct xel *child;      /* first child */
	struct xel *last;       /* last child (append) */
	struct xel *next;       /* next sibling */
	struct xel *parent;
	char *text;             /* character data directly inside, NUL-terminated */
	size_t tlen;
	size_t tcap;
};

const char *xel_attr(const struct xel *e, const char *name);
struct xel *xel_child(const struct xel *e, const char *ns, const char *name);

/* ------------------------------------------------------------------ */
/* sessions and connections                                            */

/* One logical XMPP session: outlives its connection across a resume. */
struct sess {
	int idx;                /* index in the mode's session table */
	int user;               /* user number (for the %d patterns) */
	int port;               /* node its next connection goes to; 0 = --port */
	struct conn *c;         /* current connection, NULL while detached */
	char *jid;              /* bound full JID */
	char *sm_id;            /* <enabled id> when resumable */
	int sm_on;              /* SM enabled on this session */
	uint32_t h_in;          /* stanzas received and handled */
	uint32_t h_report;      /* the h we will claim on resume */
	uint32_t out;           /* stanzas sent since enable */
	uint32_t acked;         /* last h the server acked */
	uint32_t since_ack;     /* stanzas received since our last <a/> */
	void *mode;             /* per-mode data */
	uint64_t t0;            /* start of the current operation */
	int state;              /* per-mode state */
	SSL_SESSION *tls_sess;  /* ticket for TLS resumption, if kept */
	int mute_acks;          /* do not answer <r/> (resume: simulate loss) */
	char *fast_token;       /* XEP-0484 token (HT-SHA-256-NONE), newest */
	char *isr_token;        /* XEP-0397 token of the SM session, newest */
	char ua_id[37];         /* SASL2 <user-agent id/>: a UUID v4, "" until made */
	uint64_t rx_wire;       /* bytes read from its sockets (TLS records included) */
	uint64_t rx_plain;      /* bytes of XML after TLS, fed to the parser */
};

enum cstate {
	CS_CONNECTING = 0,      /* TCP connect in flight */
	CS_TLS_HANDSHAKE,       /* TLS handshake (direct or after <proceed/>) */
	CS_WAIT_FEATURES,       /* stream header sent, waiting for features */
	CS_WAIT_PROCEED,        /* <starttls/> sent */
	CS_WAIT_SASL,           /* <auth/>, <authenticate/> or <response/> sent */
	CS_WAIT_BIND,           /* bind iq sent */
	CS_WAIT_ENABLED,        /* <enable/> sent */
	CS_WAIT_RESUMED,        /* <resume/> sent */
	CS_ACTIVE,              /* session up */
	CS_CLOSING,             /* </stream:stream> sent, waiting for EOF */
	CS_DEAD,                /* socket shut; freed once no op is in flight */
};

#define CONN_F_TLS        0x0001u  /* TLS layer active */
#define CONN_F_RESTART    0x0002u  /* reset the parser when XML_Parse returns */
#define CONN_F_STARTTLS   0x0004u  /* start TLS when XML_Parse returns */
#define CONN_F_SENDING    0x0008u  /* a send is in flight */
#define CONN_F_RX_ARMED   0x0010u  /* multishot recv armed */
#define CONN_F_DIRTY      0x0020u  /* on the flush list */
#define CONN_F_RX_SINCE_TX 0x0040u /* bytes arrived since our last flight */
#define CONN_F_AUTHED     0x0080u  /* SASL success seen */
#define CONN_F_ENDED      0x0100u  /* close reported to the mode */
#define CONN_F_STARVED    0x0200u  /* recv got -ENOBUFS; re-arm later */
#define CONN_F_TLS_REUSED 0x0400u  /* the handshake resumed a TLS session (ticket accepted) */

/* Why a connection ended (reported to the mode once). */
enum cend {
	END_NONE = 0,
	END_LOCAL,              /* we closed it */
	END_EOF,                /* server closed TCP */
	END_STREAM_CLOSED,      /* server sent </stream:stream> */
	END_STREAM_ERROR,       /* server sent <stream:error/> */
	END_IO,                 /* socket or TLS error */
	END_PROTO,              /* protocol failure (SASL, bind, unexpected) */
	END_TIMEOUT,            /* deadline passed */
};

struct scram;

struct conn {
	uint32_t slot;
	uint32_t gen;
	int fd;
	unsigned flags;
	enum cstate state;
	struct sockaddr_in peer; /* where it connects (read when the SQE is submitted) */
	struct sess *s;
	SSL *ssl;
	BIO *rbio, *wbio;       /* memory BIOs: the ring does the socket I/O */
	XML_Parser xp;
	int depth;              /* XML depth; 1 = top-level element */
	struct xel *cur;        /* element under construction */
	char *obuf;             /* pending output */
	size_t olen, ocap;
	char *sbuf;             /* output handed to the kernel */
	size_t slen, soff, scap;
	int inflight;           /* SQEs whose final CQE has not arrived */
	int flights;            /* client->server flights (TCP connect = 1) */
	uint64_t t_start;
	uint64_t deadline;      /* 0 = none */
	struct scram *scram;
	const char *mech;
	const char *why;        /* last failure, a static string */
	enum cend end;
	int bind_id;
	int resume;             /* send <resume/> instead of binding */
	int sm_offered;         /* <sm xmlns='urn:xmpp:sm:3'/> was in the features */
	int isr_offered;        /* <isr/> with HT-SHA-256-NONE in the bind features */
	int csi_offered;        /* <csi xmlns='urn:xmpp:csi:0'/> in the bind features */
	int sasl2;              /* SASL2 (urn:xmpp:sasl:2) on this connection */
	int sasl2_bound;        /* SASL2 <success/> carried <bound/>: features end the login */
	int ht;                 /* HT-SHA-256-NONE sent with this token (verify the responder) */
	char *ht_token;
	int in_loop;            /* inside a handler: do not free */
	void *arena;            /* blocks of the element being parsed */
	struct conn *dirty_next;
};

/* What the running mode is told. All optional. */
struct mode_ops {
	void (*on_ready)(struct sess *s);                 /* bound (+ enabled) */
	void (*on_resumed)(struct sess *s, int ok);       /* <resumed/> or <failed/> */
	void (*on_stanza)(struct sess *s, struct xel *e); /* message/presence/iq */
	void (*on_ack)(struct sess *s, uint32_t h);       /* <a h/> from the server */
	void (*on_end)(struct sess *s, struct conn *c);   /* connection gone */
	void (*on_tick)(uint64_t now);                    /* every loop turn */
};

extern const struct mode_ops *mode;

/* net.c */
int net_init(unsigned max_conns);
void net_deinit(void);
struct conn *conn_open(struct sess *s);
void conn_write(struct conn *c, const char *data, size_t len);
void conn_printf(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void conn_close(struct conn *c, enum cend why, const char *what);
void conn_abort(struct conn *c);
int conn_start_tls(struct conn *c);
int net_run_once(unsigned wait_ms);
unsigned net_live(void);
extern int net_stop;

/* xmpp.c */
void xmpp_on_connected(struct conn *c);
void xmpp_on_tls_up(struct conn *c);
void xmpp_on_element(struct conn *c, struct xel *e);
void xmpp_on_stream_start(struct conn *c, const char **attrs);
void xmpp_on_stream_end(struct conn *c);
void xmpp_ack(struct sess *s);
void xmpp_request_ack(struct sess *s);
void xmpp_close_stream(struct conn *c);
void xmpp_conn_free(struct conn *c);
const char *xmpp_user(int user, char *buf, size_t len);
/* "<prefix><s>" as a string that lives as long as the process (64 at most, then "other"). */
const char *xmpp_intern(const char *prefix, const char *s);
void xmpp_stats_print(void);

/* stats.c */
struct hist {
	uint64_t n;
	uint64_t max;
	uint64_t min;
	double sum;
	uint64_t b[64][64];
};

void hist_add(struct hist *h, uint64_t ns);
uint64_t hist_pct(const struct hist *h, double p);
long rss_tree_kib(int pid, int *nprocs);
void json_begin(const char *mode);
void json_str(const char *k, const char *v);
void json_int(const char *k, long long v);
void json_num(const char *k, double v);
void json_bool(const char *k, int v);
void json_hist_ms(const char *prefix, const struct hist *h);
void json_counts(const char *k, const char *const *names, const long *counts, int n);
void json_end(void);
void progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif /* TETHER_BENCH_H */
