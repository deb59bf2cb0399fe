/* tests/integration/strophe_client.c - a libstrophe client (the library of
 * profanity) driven by test_libstrophe.py, to show that its XEP-0198 support
 * gets a dropped session back from tetherd.
 *
 *   strophe_client HOST PORT JID PASSWORD PEER [direct-tls]
 *
 * Logs in over STARTTLS, or TLS from the first byte with "direct-tls"
 * (libstrophe's legacy SSL; the test's self-signed certificate is trusted),
 * stream management on (libstrophe's default), sends available presence
 * and "s1" to PEER. Prints one line per event on stdout:
 *   CONNECTED <bound JID>   logged in, or resumed after a drop
 *   GOT <body>              a message with a body
 *   DROPPED                 the connection went away (after "drop")
 *   BYE                     disconnected for good (after "quit")
 *   FAILED                  a connection ended that was not asked to
 * A message "drop" makes it cut its socket at once (shutdown(2): no
 * </stream:stream>, as when the network goes). It then waits for a line on
 * stdin and reconnects once with libstrophe's stream-management state,
 * which resumes the session; once resumed it sends "s2". A message "quit"
 * ends the stream cleanly. Exits 0 after BYE, 1 after FAILED, 2 on usage.
 *
 * (libstrophe 0.12.2 does not send again a stanza whose write failed when
 * its socket went: it is gone from the client's queue, so the drop here
 * comes with nothing queued. And the state of a reconnect that failed
 * before it was in binds a new session the next time instead of
 * resuming, so the test reconnects once, when the way is clear.) */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <strophe.h>

struct client {
	xmpp_ctx_t *ctx;
	const char *host, *jid, *pass, *peer;
	unsigned short port;
	long flags;        /* XMPP_CONN_FLAG_* */
	int fd;            /* the socket of the current connection */
	int dropping;      /* "drop" came: the disconnect is the drop */
	int quitting;      /* "quit" came */
	int failed;        /* a connection ended that was not asked to */
};

static void say(const char *what, const char *arg)
{
	printf("%s%s%s\n", what, arg ? " " : "", arg ? arg : "");
	fflush(stdout);
}

static void send_body(xmpp_conn_t *conn, struct client *c, const char *body)
{
	xmpp_stanza_t *m = xmpp_message_new(c->ctx, "chat", c->peer, NULL);
	xmpp_message_set_body(m, body);
	xmpp_send(conn, m);
	xmpp_stanza_release(m);
}

static int on_message(xmpp_conn_t *conn, xmpp_stanza_t *stanza, void *ud)
{
	struct client *c = ud;
	char *body = xmpp_message_get_body(stanza);
	if (!body)
		return 1;
	say("GOT", body);
	if (!strcmp(body, "drop")) {
		c->dropping = 1;
		shutdown(c->fd, SHUT_RDWR);
	} else if (!strcmp(body, "quit")) {
		c->quitting = 1;
		xmpp_disconnect(conn);
	}
	xmpp_free(c->ctx, body);
	return 1;
}

/* libstrophe's socket callback has no user data: the one client. */
static struct client *the_client;

static int remember_fd(xmpp_conn_t *conn, void *sock)
{
	(void)conn;
	the_client->fd = *(int *)sock;
	return 0;
}

static void on_conn(xmpp_conn_t *conn, xmpp_conn_event_t ev, int err,
		    xmpp_stream_error_t *se, void *ud)
{
	struct client *c = ud;
	(void)err;
	(void)se;
	if (ev == XMPP_CONN_CONNECT) {
		if (!c->dropping) { /* a resumed session is available already */
			xmpp_stanza_t *p = xmpp_presence_new(c->ctx);
			xmpp_send(conn, p);
			xmpp_stanza_release(p);
		}
		say("CONNECTED", xmpp_conn_get_bound_jid(conn));
		send_body(conn, c, c->dropping ? "s2" : "s1");
		return;
	}
	if (ev == XMPP_CONN_DISCONNECT || ev == XMPP_CONN_FAIL)
		xmpp_stop(c->ctx);
}

/* One connection until it ends (resuming <sm> if given). Returns its
 * stream-management state when it ended with the drop; NULL when it
 * ended for good (c->failed says whether as asked). */
static xmpp_sm_state_t *run(struct client *c, xmpp_sm_state_t *sm)
{
	xmpp_conn_t *conn = xmpp_conn_new(c->ctx);
	xmpp_conn_set_flags(conn, c->flags);
	xmpp_conn_set_jid(conn, c->jid);
	xmpp_conn_set_pass(conn, c->pass);
	xmpp_conn_set_sockopt_callback(conn, remember_fd);
	if (sm)
		xmpp_conn_set_sm_state(conn, sm);
	xmpp_handler_add(conn, on_message, NULL, "message", NULL, c);
	int was_dropping = c->dropping;
	if (xmpp_connect_client(conn, c->host, c->port, on_conn, c) == XMPP_EOK)
		xmpp_run(c->ctx);
	xmpp_sm_state_t *out = NULL;
	if (!c->quitting && c->dropping && !was_dropping)
		out = xmpp_conn_get_sm_state(conn);
	c->failed = !c->quitting && !out;
	xmpp_conn_release(conn);
	return out;
}

int main(int argc, char **argv)
{
	int direct = argc == 7 && !strcmp(argv[6], "direct-tls");
	if (argc != 6 && !direct) {
		fprintf(stderr, "usage: %s HOST PORT JID PASSWORD PEER [direct-tls]\n", argv[0]);
		return 2;
	}
	struct client c = { .host = argv[1], .port = (unsigned short)atoi(argv[2]),
			    .jid = argv[3], .pass = argv[4], .peer = argv[5], .fd = -1,
			    .flags = XMPP_CONN_FLAG_TRUST_TLS | (direct ? XMPP_CONN_FLAG_LEGACY_SSL
									: XMPP_CONN_FLAG_MANDATORY_TLS) };
	the_client = &c;
	signal(SIGPIPE, SIG_IGN); /* libstrophe writes to the cut socket; profanity ignores it too */
	xmpp_initialize();
	c.ctx = xmpp_ctx_new(NULL, getenv("STROPHE_DEBUG") ?
			     xmpp_get_default_logger(XMPP_LEVEL_DEBUG) : NULL);
	xmpp_sm_state_t *sm = run(&c, NULL);
	if (sm) {
		say("DROPPED", NULL);
		char line[64];
		if (fgets(line, sizeof(line), stdin)) {
			run(&c, sm); /* a failed reconnect is FAILED: its state would not resume */
		} else {
			xmpp_free_sm_state(sm);
			c.failed = 1;
		}
	}
	say(c.failed ? "FAILED" : "BYE", NULL);
	xmpp_ctx_free(c.ctx);
	xmpp_shutdown();
	return c.failed ? 1 : 0;
}
