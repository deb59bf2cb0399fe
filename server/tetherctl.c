/* server/tetherctl.c - tetherctl: manage the users of a tetherd store from the shell. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <sodium.h>

#include "tether/config.h"
#include "tether/jid.h"
#include "tether/scram.h"
#include "tether/store.h"

#define PW_MAX 1024

enum cmd {
	CMD_ADDUSER = 0, /* create; fails if the user exists */
	CMD_PASSWD,      /* replace the credentials; fails if the user is missing */
	CMD_DELUSER,     /* remove */
	CMD_LIST,        /* print every user, one per line */
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: tetherctl -c FILE adduser USER@DOMAIN   (password on stdin)\n"
		"       tetherctl -c FILE passwd  USER@DOMAIN   (password on stdin)\n"
		"       tetherctl -c FILE deluser USER@DOMAIN\n"
		"       tetherctl -c FILE list\n"
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
 * resource and the configured domain. Returns 0 or -1 with a message. */
static int user_jid(const char *arg, const struct config *cfg, char *bare, size_t len)
{
	struct jid j;
	char dom[JID_PART_MAX + 1];

	if (jid_parse(arg, &j) || !j.local[0] || j.resource[0]) {
		fprintf(stderr, "tetherctl: '%s' is not a valid user@domain\n", arg);
		return -1;
	}
	if (jid_prep_domain(cfg->domain, dom, sizeof(dom)) || strcmp(dom, j.domain) != 0) {
		fprintf(stderr, "tetherctl: '%s' is not in the served domain '%s'\n", arg, cfg->domain);
		return -1;
	}
	if (jid_bare(&j, bare, len) < 0) {
		fprintf(stderr, "tetherctl: '%s' is too long\n", arg);
		return -1;
	}
	return 0;
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

int main(int argc, char **argv)
{
	static const char *const cmds[] = {
		[CMD_ADDUSER] = "adduser", [CMD_PASSWD] = "passwd",
		[CMD_DELUSER] = "deluser", [CMD_LIST] = "list",
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
	if (cmd < 0 || argc - optind != (cmd == CMD_LIST ? 1 : 2)) {
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
	if (cmd != CMD_LIST && user_jid(argv[optind + 1], &cfg, bare, sizeof(bare)))
		return 1;
	st = store_open(cfg.store_backend, cfg.store_path, err, sizeof(err));
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
	default:
		rc = do_set(st, (enum cmd)cmd, bare);
		break;
	}
	store_close(st);
	return rc;
}
