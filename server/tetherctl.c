/* server/tetherctl.c - tetherctl: manage the users of a tetherd store from the shell. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <sodium.h>

#include "tether/bus.h"
#include "tether/config.h"
#include "tether/errors.h"
#include "tether/jid.h"
#include "tether/scram.h"
#include "tether/store.h"

#define PW_MAX 1024

enum cmd {
	CMD_ADDUSER = 0, /* create; fails if the user exists */
	CMD_PASSWD,      /* replace the credentials; fails if the user is missing */
	CMD_DELUSER,     /* remove */
	CMD_LIST,        /* print every user, one per line */
	CMD_IMPORT,      /* create or replace many users from stdin, one write */
	CMD_SESSIONS,    /* list an account's sessions (shared store) */
	CMD_KICK,        /* end an account's sessions, or one resource's */
	CMD_DRAIN,       /* ask a node to drain (as SIGTERM) */
};

#define IMPORT_THREADS 2          /* PBKDF2 is the cost: 2 x 4096 x 2 hashes per user */
#define IMPORT_MAX (64u << 20)    /* bytes of stdin accepted by import */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: tetherctl -c FILE adduser USER@DOMAIN   (password on stdin)\n"
		"       tetherctl -c FILE passwd  USER@DOMAIN   (password on stdin)\n"
		"       tetherctl -c FILE deluser USER@DOMAIN\n"
		"       tetherctl -c FILE list\n"
		"       tetherctl -c FILE import   (lines 'USER@DOMAIN PASSWORD' on stdin)\n"
		"       tetherctl -c FILE sessions USER@DOMAIN\n"
		"       tetherctl -c FILE kick USER@DOMAIN[/RESOURCE]\n"
		"       tetherctl -c FILE drain NODE\n"
		"sessions, kick and drain need [store] backend = redis (a cluster).\n"
		"Exit status: 0 done, 1 failed, 2 bad usage or configuration.\n");
}

/* Reads the first line of stdin into <pw> (size PW_MAX) without stdio, so
 * no copy of the password stays in a FILE buffer; strips the line end.
 * When stdin is a terminal, prompts on stderr with echo off. Returns 0, or
 * -1 with a message printed. */
static int read_password(char *pw)
{
	struct termios old, quiet;
	int tty = isatty(STDIN_FILENO), echo_off = 0;
	size_t len = 0;
	int rc = -1;

	if (tty) {
		fputs("Password: ", stderr);
		if (tcgetattr(STDIN_FILENO, &old) == 0) {
			quiet = old;
			quiet.c_lflag &= ~(tcflag_t)ECHO;
			echo_off = tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet) == 0;
		}
	}
	for (;;) {
		char ch;
		ssize_t n = read(STDIN_FILENO, &ch, 1);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			fprintf(stderr, "tetherctl: reading the password: %s\n", strerror(errno));
			goto out;
		}
		if (n == 0 || ch == '\n')
			break;
		if (len + 1 >= PW_MAX) {
			fprintf(stderr, "tetherctl: password longer than %d bytes\n", PW_MAX - 1);
			goto out;
		}
		pw[len++] = ch;
	}
	if (len && pw[len - 1] == '\r')
		len--;
	pw[len] = 0;
	if (len == 0) {
		fprintf(stderr, "tetherctl: empty password refused\n");
		goto out;
	}
	rc = 0;
out:
	if (echo_off)
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
	if (tty)
		fputs("\n", stderr);
	if (rc)
		sodium_memzero(pw, PW_MAX);
	return rc;
}

/* Prepares <arg> into the bare JID <bare>: it must be local@domain with no
 * resource and the configured domain. Returns 0 or -1 with a message,
 * which names stdin line <lineno> when it is not 0 (import). */
static int user_jid_at(const char *arg, const struct config *cfg, char *bare, size_t len,
		       unsigned lineno)
{
	struct jid j;
	char dom[JID_PART_MAX + 1], where[32] = "";

	if (lineno)
		snprintf(where, sizeof(where), "stdin:%u: ", lineno);
	if (jid_parse(arg, &j) || !j.local[0] || j.resource[0]) {
		fprintf(stderr, "tetherctl: %s'%s' is not a valid user@domain\n", where, arg);
		return -1;
	}
	if (jid_prep_domain(cfg->domain, dom, sizeof(dom)) || strcmp(dom, j.domain) != 0) {
		fprintf(stderr, "tetherctl: %s'%s' is not in the served domain '%s'\n", where, arg,
			cfg->domain);
		return -1;
	}
	if (jid_bare(&j, bare, len) < 0) {
		fprintf(stderr, "tetherctl: %s'%s' is too long\n", where, arg);
		return -1;
	}
	return 0;
}

static int user_jid(const char *arg, const struct config *cfg, char *bare, size_t len)
{
	return user_jid_at(arg, cfg, bare, len, 0);
}

struct names {
	char **v;
	size_t n, cap;
	int oom;
};

static void collect(void *ud, const char *jid)
{
	struct names *l = ud;
	if (l->oom)
		return;
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 64;
		char **v = realloc(l->v, cap * sizeof(*v));
		if (!v) {
			l->oom = 1;
			return;
		}
		l->v = v;
		l->cap = cap;
	}
	if (!(l->v[l->n] = strdup(jid))) {
		l->oom = 1;
		return;
	}
	l->n++;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Prints the users sorted, so output is stable for scripts and tests. */
static int do_list(struct store *st)
{
	struct names l = { 0 };
	int rc = store_user_list(st, collect, &l);

	if (rc == 0 && l.oom)
		rc = -ENOMEM;
	if (rc) {
		fprintf(stderr, "tetherctl: list: %s\n", strerror(-rc));
	} else {
		qsort(l.v, l.n, sizeof(*l.v), cmp_str);
		for (size_t i = 0; i < l.n; i++)
			if (i == 0 || strcmp(l.v[i], l.v[i - 1])) /* Redis's SCAN may repeat a key */
				printf("%s\n", l.v[i]);
	}
	for (size_t i = 0; i < l.n; i++)
		free(l.v[i]);
	free(l.v);
	return rc ? 1 : 0;
}

/* adduser/passwd: the existence check and the put are two steps; two
 * tetherctl racing on the same new user both "add" it, the second write
 * wins. Acceptable for an admin tool. */
static int do_set(struct store *st, enum cmd cmd, const char *bare)
{
	struct user_creds c;
	char pw[PW_MAX];
	int rc = store_user_get(st, bare, &c);

	scram_creds_wipe(&c);
	if (cmd == CMD_ADDUSER && rc == 0) {
		fprintf(stderr, "tetherctl: %s already exists\n", bare);
		return 1;
	}
	if (cmd == CMD_PASSWD && rc == -ENOENT) {
		fprintf(stderr, "tetherctl: %s does not exist\n", bare);
		return 1;
	}
	if (rc && rc != -ENOENT) {
		fprintf(stderr, "tetherctl: %s: %s\n", bare, strerror(-rc));
		return 1;
	}
	if (read_password(pw))
		return 1;
	rc = scram_creds_derive(pw, SCRAM_ITER_DEFAULT, &c);
	sodium_memzero(pw, sizeof(pw));
	if (rc) {
		fprintf(stderr, "tetherctl: password refused (SASLprep)\n");
		return 1;
	}
	rc = store_user_put(st, bare, &c);
	scram_creds_wipe(&c);
	if (rc) {
		fprintf(stderr, "tetherctl: %s: %s\n", bare, strerror(-rc));
		return 1;
	}
	fprintf(stderr, "tetherctl: %s %s\n", bare, cmd == CMD_ADDUSER ? "added" : "password changed");
	return 0;
}

static int do_del(struct store *st, const char *bare)
{
	int rc = store_user_del(st, bare);
	if (rc == -ENOENT) {
		fprintf(stderr, "tetherctl: %s does not exist\n", bare);
		return 1;
	}
	if (rc) {
		fprintf(stderr, "tetherctl: %s: %s\n", bare, strerror(-rc));
		return 1;
	}
	fprintf(stderr, "tetherctl: %s deleted\n", bare);
	return 0;
}

/* ---- sessions, kick, drain (shared store) ------------------------------ */

/* kick's USER@DOMAIN[/RESOURCE]: the bare JID and the resource ("" all). */
static int kick_jid(const char *arg, const struct config *cfg, char *bare, size_t len,
		    char resource[JID_PART_MAX + 1])
{
	struct jid j;
	if (jid_parse(arg, &j) || !j.local[0]) {
		fprintf(stderr, "tetherctl: '%s' is not a valid user@domain[/resource]\n", arg);
		return -1;
	}
	snprintf(resource, JID_PART_MAX + 1, "%s", j.resource);
	char b[JID_MAX + 1];
	if (jid_bare(&j, b, sizeof(b)) < 0)
		return -1;
	return user_jid(b, cfg, bare, len);
}

struct session_walk {
	struct store *st;
	const char *only;   /* kick: this resource, "" all; NULL: list */
	unsigned n, failed;
};

static void on_session(void *ud, const struct store_session_info *i)
{
	struct session_walk *w = ud;
	if (!w->only) {
		printf("%s\t%s\t%s\t%s\tage %llus\t", i->resource, i->sid, i->owner,
		       i->attached ? "attached" : "detached", (unsigned long long)(i->age_ms / 1000));
		if (!i->attached)
			printf("expires in %llds\t", (long long)(i->expires_in_ms / 1000));
		printf("unacked %u\n", i->queued);
		w->n++;
		return;
	}
	if (w->only[0] && strcmp(w->only, i->resource))
		return;
	/* The owning node ends it, as a bind conflict would (its inbox). */
	if (w->st->ops->notice(w->st, i->owner, BUS_KICK, SE_POLICY_VIOLATION, i->owner))
		w->failed++;
	else
		w->n++;
}

static int no_shared_store(const char *what)
{
	fprintf(stderr, "tetherctl: %s needs [store] backend = redis: with the memory backend, "
		"sessions live in tetherd's own memory\n", what);
	return 1;
}

static int do_sessions(struct store *st, const char *bare, const char *kick)
{
	struct session_walk w = { .st = st, .only = kick };
	if (!st->ops->sm_list || !st->ops->notice)
		return no_shared_store(kick ? "kick" : "sessions");
	int rc = st->ops->sm_list(st, bare, on_session, &w);
	if (rc) {
		fprintf(stderr, "tetherctl: %s: %s\n", bare, strerror(-rc));
		return 1;
	}
	if (kick)
		fprintf(stderr, "tetherctl: %u session(s) of %s kicked%s\n", w.n, bare,
			w.failed ? " (some notices could not be sent)" : "");
	else if (!w.n)
		fprintf(stderr, "tetherctl: %s has no session\n", bare);
	return w.failed || (kick && !w.n);
}

static int do_drain(struct store *st, const char *node)
{
	if (!st->ops->notice)
		return no_shared_store("drain");
	int rc = st->ops->notice(st, node, STORE_NOTICE_DRAIN, 0, NULL);
	if (rc) {
		fprintf(stderr, "tetherctl: drain %s: %s\n", node, strerror(-rc));
		return 1;
	}
	fprintf(stderr, "tetherctl: node %s asked to drain\n", node);
	return 0;
}

/* ---- import ------------------------------------------------------------ */

struct import {
	size_t n;
	char **bares;              /* prepared bare JIDs */
	char **pws;                /* point into the stdin buffer */
	unsigned *lines;           /* stdin line of each user, for messages */
	struct user_creds *creds;
	int *bad;                  /* 1: SASLprep refused the password */
};

struct derive_job {
	struct import *im;
	size_t from, to;
};

static void *derive_range(void *arg)
{
	struct derive_job *j = arg;
	for (size_t i = j->from; i < j->to; i++)
		j->im->bad[i] = scram_creds_derive(j->im->pws[i], SCRAM_ITER_DEFAULT, &j->im->creds[i]) != 0;
	return NULL;
}

/* Reads all of stdin with read(2) (no stdio buffer keeps the passwords)
 * into a NUL-terminated buffer. Returns it, *<len> set, or NULL with a
 * message. The caller wipes and frees it. */
static char *read_all_stdin(size_t *len)
{
	size_t cap = 1 << 16, n = 0;
	char *buf = malloc(cap);

	while (buf) {
		if (n + 1 == cap) {
			char *b;
			if (cap >= IMPORT_MAX) {
				fprintf(stderr, "tetherctl: import: more than %u bytes on stdin\n", IMPORT_MAX);
				goto fail;
			}
			if (!(b = malloc(cap * 2)))
				break;
			memcpy(b, buf, n);
			sodium_memzero(buf, cap);
			free(buf);
			buf = b;
			cap *= 2;
		}
		ssize_t r = read(STDIN_FILENO, buf + n, cap - 1 - n);
		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1) {
			fprintf(stderr, "tetherctl: import: reading stdin: %s\n", strerror(errno));
			goto fail;
		}
		if (r == 0) {
			buf[n] = 0;
			*len = n;
			return buf;
		}
		n += (size_t)r;
	}
	fprintf(stderr, "tetherctl: import: out of memory\n");
	return NULL;
fail:
	sodium_memzero(buf, cap);
	free(buf);
	return NULL;
}

/* Splits <buf> into the users of <im>: one "user@domain password" per
 * line (the password is the rest of the line after the blanks that
 * follow the JID; a trailing CR is dropped); blank lines and lines whose
 * first non-blank character is '#' are skipped. Edits <buf> in place.
 * Returns 0, or -1 with a message naming the line. */
static int import_parse(char *buf, const struct config *cfg, struct import *im)
{
	size_t cap = 0;
	unsigned lineno = 0;

	for (char *line = buf, *next; line && *line; line = next) {
		char *nl = strchr(line, '\n'), *sep, *pw, bare[JID_MAX + 1];
		size_t len;

		next = nl ? nl + 1 : NULL;
		if (nl)
			*nl = 0;
		lineno++;
		len = strlen(line);
		if (len && line[len - 1] == '\r')
			line[--len] = 0;
		line += strspn(line, " \t");
		if (!*line || *line == '#')
			continue;
		sep = line + strcspn(line, " \t");
		if (!*sep) {
			fprintf(stderr, "tetherctl: stdin:%u: expected 'user@domain password'\n", lineno);
			return -1;
		}
		*sep = 0;
		pw = sep + 1 + strspn(sep + 1, " \t");
		if (!*pw) {
			fprintf(stderr, "tetherctl: stdin:%u: empty password refused\n", lineno);
			return -1;
		}
		if (strlen(pw) >= PW_MAX) {
			fprintf(stderr, "tetherctl: stdin:%u: password longer than %d bytes\n", lineno, PW_MAX - 1);
			return -1;
		}
		if (user_jid_at(line, cfg, bare, sizeof(bare), lineno))
			return -1;
		if (im->n == cap) {
			size_t c = cap ? cap * 2 : 1024;
			char **b = realloc(im->bares, c * sizeof(*b)), **p;
			if (b)
				im->bares = b;
			p = b ? realloc(im->pws, c * sizeof(*p)) : NULL;
			if (p)
				im->pws = p;
			unsigned *l = p ? realloc(im->lines, c * sizeof(*l)) : NULL;
			if (!l) {
				fprintf(stderr, "tetherctl: import: out of memory\n");
				return -1;
			}
			im->lines = l;
			cap = c;
		}
		if (!(im->bares[im->n] = strdup(bare))) {
			fprintf(stderr, "tetherctl: import: out of memory\n");
			return -1;
		}
		im->pws[im->n] = pw;
		im->lines[im->n] = lineno;
		im->n++;
	}
	return 0;
}

/* import: parse all of stdin first (any bad line and nothing is written),
 * derive the SCRAM credentials on IMPORT_THREADS threads, then one
 * store_user_put_many(): one rewrite of users.db for the whole batch.
 * Existing users get the new password. */
static int do_import(struct store *st, const struct config *cfg)
{
	struct import im = { 0 };
	pthread_t th[IMPORT_THREADS];
	struct derive_job jobs[IMPORT_THREADS];
	size_t len = 0, existing = 0;
	int rc = 1, started = 0;
	char *buf = read_all_stdin(&len);

	if (!buf)
		return 1;
	if (import_parse(buf, cfg, &im))
		goto out;
	if (im.n == 0) {
		fprintf(stderr, "tetherctl: import: no users on stdin\n");
		goto out;
	}
	im.creds = calloc(im.n, sizeof(*im.creds));
	im.bad = calloc(im.n, sizeof(*im.bad));
	if (!im.creds || !im.bad) {
		fprintf(stderr, "tetherctl: import: out of memory\n");
		goto out;
	}
	for (int t = 0; t < IMPORT_THREADS; t++) {
		jobs[t] = (struct derive_job){ &im, im.n * (size_t)t / IMPORT_THREADS,
					       im.n * (size_t)(t + 1) / IMPORT_THREADS };
		if (t == 0 || pthread_create(&th[t], NULL, derive_range, &jobs[t]) != 0)
			continue; /* job 0 (or a thread that did not start) runs here */
		started |= 1 << t;
	}
	derive_range(&jobs[0]);
	for (int t = 1; t < IMPORT_THREADS; t++) {
		if (started & (1 << t))
			pthread_join(th[t], NULL);
		else
			derive_range(&jobs[t]);
	}
	for (size_t i = 0; i < im.n; i++) {
		if (im.bad[i]) {
			fprintf(stderr, "tetherctl: stdin:%u: password refused (SASLprep)\n", im.lines[i]);
			goto out;
		}
	}
	for (size_t i = 0; i < im.n; i++) {
		struct user_creds c;
		existing += store_user_get(st, im.bares[i], &c) == 0;
		scram_creds_wipe(&c);
	}
	int err = store_user_put_many(st, im.n, (const char *const *)im.bares, im.creds);
	if (err) {
		fprintf(stderr, "tetherctl: import: %s\n", strerror(-err));
		goto out;
	}
	fprintf(stderr, "tetherctl: imported %zu users (%zu replaced)\n", im.n, existing);
	rc = 0;
out:
	for (size_t i = 0; i < im.n; i++)
		free(im.bares[i]);
	free(im.bares);
	free(im.pws);
	free(im.lines);
	if (im.creds)
		sodium_memzero(im.creds, im.n * sizeof(*im.creds));
	free(im.creds);
	free(im.bad);
	sodium_memzero(buf, len);
	free(buf);
	return rc;
}

int main(int argc, char **argv)
{
	static const char *const cmds[] = {
		[CMD_ADDUSER] = "adduser", [CMD_PASSWD] = "passwd",
		[CMD_DELUSER] = "deluser", [CMD_LIST] = "list", [CMD_IMPORT] = "import",
		[CMD_SESSIONS] = "sessions", [CMD_KICK] = "kick", [CMD_DRAIN] = "drain",
	};
	static struct config cfg; /* large: keep it off the stack */
	const char *cfgpath = NULL;
	char err[512], bare[JID_MAX + 1];
	struct store *st;
	int opt, cmd = -1, rc;

	while ((opt = getopt(argc, argv, "c:h")) != -1) {
		switch (opt) {
		case 'c':
			cfgpath = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (!cfgpath || optind >= argc) {
		usage(stderr);
		return 2;
	}
	for (int i = 0; i < (int)(sizeof(cmds) / sizeof(cmds[0])); i++)
		if (strcmp(argv[optind], cmds[i]) == 0)
			cmd = i;
	if (cmd < 0 || argc - optind != (cmd == CMD_LIST || cmd == CMD_IMPORT ? 1 : 2)) {
		usage(stderr);
		return 2;
	}
	config_defaults(&cfg);
	if (config_load(&cfg, cfgpath, err, sizeof(err))) {
		fprintf(stderr, "tetherctl: %s\n", err);
		return 2;
	}
	if (sodium_init() < 0) {
		fprintf(stderr, "tetherctl: libsodium init failed\n");
		return 1;
	}
	char resource[JID_PART_MAX + 1] = "";
	if (cmd == CMD_KICK ? kick_jid(argv[optind + 1], &cfg, bare, sizeof(bare), resource)
	    : cmd != CMD_LIST && cmd != CMD_IMPORT && cmd != CMD_DRAIN &&
	      user_jid(argv[optind + 1], &cfg, bare, sizeof(bare)))
		return 1;
	/* The memory backend lives in a directory, the Redis one at an address. */
	st = store_open(cfg.store_backend, strcmp(cfg.store_backend, "redis") ? cfg.store_path : cfg.store_redis,
			err, sizeof(err));
	if (!st) {
		fprintf(stderr, "tetherctl: %s\n", err);
		return 1;
	}
	switch (cmd) {
	case CMD_LIST:
		rc = do_list(st);
		break;
	case CMD_DELUSER:
		rc = do_del(st, bare);
		break;
	case CMD_IMPORT:
		rc = do_import(st, &cfg);
		break;
	case CMD_SESSIONS:
	case CMD_KICK:
		rc = do_sessions(st, bare, cmd == CMD_KICK ? resource : NULL);
		break;
	case CMD_DRAIN:
		rc = do_drain(st, argv[optind + 1]);
		break;
	default:
		rc = do_set(st, (enum cmd)cmd, bare);
		break;
	}
	store_close(st);
	return rc;
}
