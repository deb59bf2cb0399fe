/* tests/unit/test_store_memory.c - the memory store: CRUD, persistence, atomic
 * replacement of users.db, reload after another process's write. */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "tether/scram.h"
#include "tether/store.h"

static char dir[256];   /* a fresh temporary directory per test */
static char path[300];  /* <dir>/var/users: created by the store */

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/tether-store-XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/var/users", dir);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	char cmd[400];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static struct store *open_ok(void)
{
	char err[256] = "";
	struct store *st = store_open("memory", path, err, sizeof(err));
	if (!st)
		print_error("store_open: %s\n", err);
	assert_non_null(st);
	return st;
}

/* Distinct, cheap credentials (1 iteration) tagged by <tag>. */
static void creds(struct user_creds *c, const char *tag)
{
	assert_int_equal(scram_creds_derive(tag, 1, c), 0);
}

static void db_file(char *buf, size_t len)
{
	snprintf(buf, len, "%s/users.db", path);
}

static void test_crud(void **state)
{
	(void)state;
	struct store *st = open_ok();
	struct user_creds a, b, got;
	creds(&a, "a");
	creds(&b, "b");

	assert_int_equal(store_user_get(st, "alice@example.com", &got), -ENOENT);
	assert_int_equal(store_user_put(st, "alice@example.com", &a), 0);
	assert_int_equal(store_user_get(st, "alice@example.com", &got), 0);
	assert_memory_equal(&got, &a, sizeof(a));
	/* keys are exact strings: the caller prepares them */
	assert_int_equal(store_user_get(st, "Alice@example.com", &got), -ENOENT);
	/* replace */
	assert_int_equal(store_user_put(st, "alice@example.com", &b), 0);
	assert_int_equal(store_user_get(st, "alice@example.com", &got), 0);
	assert_memory_equal(&got, &b, sizeof(b));
	/* delete */
	assert_int_equal(store_user_del(st, "alice@example.com"), 0);
	assert_int_equal(store_user_get(st, "alice@example.com", &got), -ENOENT);
	assert_int_equal(store_user_del(st, "alice@example.com"), -ENOENT);
	/* keys that cannot be written as a field are refused */
	assert_int_equal(store_user_put(st, "a b@example.com", &a), -EINVAL);
	assert_int_equal(store_user_put(st, "a\n@example.com", &a), -EINVAL);
	assert_int_equal(store_user_put(st, "", &a), -EINVAL);
	store_close(st);
	store_close(NULL);
}

static void test_many(void **state)
{
	(void)state;
	struct store *st = open_ok();
	struct user_creds c, got;
	char jid[64];
	creds(&c, "x");
	for (int i = 0; i < 300; i++) { /* crosses several map resizes */
		snprintf(jid, sizeof(jid), "user%d@example.com", i);
		c.iterations = (uint32_t)(1000 + i);
		assert_int_equal(store_user_put(st, jid, &c), 0);
	}
	store_close(st);
	st = open_ok();
	for (int i = 0; i < 300; i++) {
		snprintf(jid, sizeof(jid), "user%d@example.com", i);
		assert_int_equal(store_user_get(st, jid, &got), 0);
		assert_int_equal(got.iterations, 1000 + i);
	}
	for (int i = 0; i < 300; i += 2) {
		snprintf(jid, sizeof(jid), "user%d@example.com", i);
		assert_int_equal(store_user_del(st, jid), 0);
	}
	for (int i = 0; i < 300; i++) {
		snprintf(jid, sizeof(jid), "user%d@example.com", i);
		assert_int_equal(store_user_get(st, jid, &got), i % 2 ? 0 : -ENOENT);
	}
	store_close(st);
}

static void test_persist(void **state)
{
	(void)state;
	struct user_creds a, b, got;
	struct stat sb;
	char db[400];
	creds(&a, "a");
	creds(&b, "b");
	/* a short salt (as in the RFC 5802 vector) survives the round trip */
	static const uint8_t salt12[12] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 };
	assert_int_equal(scram_creds_derive_salt("pencil", salt12, 12, 1, &b), 0);

	struct store *st = open_ok();
	/* the directory was created, private */
	assert_int_equal(stat(path, &sb), 0);
	assert_true(S_ISDIR(sb.st_mode));
	assert_int_equal(sb.st_mode & 0777, 0700);
	assert_int_equal(store_user_put(st, "alice@example.com", &a), 0);
	assert_int_equal(store_user_put(st, "bob@example.com", &b), 0);
	assert_int_equal(store_user_put(st, "carol@example.com", &a), 0);
	assert_int_equal(store_user_del(st, "carol@example.com"), 0);
	store_close(st);

	db_file(db, sizeof(db));
	assert_int_equal(stat(db, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);

	st = open_ok();
	assert_int_equal(store_user_get(st, "alice@example.com", &got), 0);
	assert_memory_equal(&got, &a, sizeof(a));
	assert_int_equal(store_user_get(st, "bob@example.com", &got), 0);
	assert_memory_equal(&got, &b, sizeof(b));
	assert_int_equal(got.salt_len, 12);
	assert_int_equal(store_user_get(st, "carol@example.com", &got), -ENOENT);
	store_close(st);
}

/* The file is replaced, never rewritten in place: a new inode per write,
 * no temporary left behind, and a reader racing with writers only ever
 * sees whole files. */
struct reader {
	const char *db;
	volatile int stop;
	int bad;
	int reads;
};

static void *read_loop(void *arg)
{
	struct reader *r = arg;
	char buf[65536];
	while (!r->stop) {
		FILE *f = fopen(r->db, "r");
		if (!f)
			continue;
		size_t n = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		buf[n] = 0;
		/* complete: ends with a newline, every line has 7 fields */
		if (n == 0 || buf[n - 1] != '\n')
			r->bad++;
		for (char *line = buf; *line;) {
			char *nl = strchr(line, '\n');
			if (!nl)
				break;
			int spaces = 0;
			for (char *p = line; p < nl; p++)
				spaces += *p == ' ';
			if (spaces != 6)
				r->bad++;
			line = nl + 1;
		}
		r->reads++;
	}
	return NULL;
}

static void test_atomic(void **state)
{
	(void)state;
	struct store *st = open_ok();
	struct user_creds c;
	struct stat s1, s2;
	char db[400], jid[64];
	creds(&c, "c");
	db_file(db, sizeof(db));

	assert_int_equal(store_user_put(st, "first@example.com", &c), 0);
	assert_int_equal(stat(db, &s1), 0);
	assert_int_equal(store_user_put(st, "second@example.com", &c), 0);
	assert_int_equal(stat(db, &s2), 0);
	assert_true(s1.st_ino != s2.st_ino); /* renamed over, not rewritten */

	struct reader r = { .db = db };
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, read_loop, &r), 0);
	for (int i = 0; i < 200; i++) {
		snprintf(jid, sizeof(jid), "u%d@example.com", i);
		assert_int_equal(store_user_put(st, jid, &c), 0);
	}
	r.stop = 1;
	pthread_join(t, NULL);
	assert_int_equal(r.bad, 0);
	assert_true(r.reads > 0);

	/* only users.db and users.lock remain: no temp files */
	DIR *d = opendir(path);
	struct dirent *e;
	int others = 0;
	while ((e = readdir(d))) {
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") &&
		    strcmp(e->d_name, "users.db") && strcmp(e->d_name, "users.lock"))
			others++;
	}
	closedir(d);
	assert_int_equal(others, 0);
	store_close(st);
}

/* Two handles on one directory stand for tetherd and tetherctl. */
static void test_two_processes(void **state)
{
	(void)state;
	struct store *server = open_ok(), *ctl = open_ok();
	struct user_creds a, b, got;
	creds(&a, "a");
	creds(&b, "b");

	/* tetherctl adds a user; tetherd sees it within a second or so */
	assert_int_equal(store_user_put(ctl, "new@example.com", &a), 0);
	usleep(1100 * 1000);
	assert_int_equal(store_user_get(server, "new@example.com", &got), 0);
	assert_memory_equal(&got, &a, sizeof(a));

	/* a write by tetherd does not lose one by tetherctl it has not seen yet
	 * (put reloads under the file lock first) */
	assert_int_equal(store_user_put(ctl, "other@example.com", &b), 0);
	assert_int_equal(store_user_put(server, "mine@example.com", &a), 0);
	assert_int_equal(store_user_get(server, "other@example.com", &got), 0);
	assert_int_equal(store_user_get(server, "mine@example.com", &got), 0);
	/* and tetherctl, reopening, sees everything */
	store_close(ctl);
	ctl = open_ok();
	assert_int_equal(store_user_get(ctl, "new@example.com", &got), 0);
	assert_int_equal(store_user_get(ctl, "other@example.com", &got), 0);
	assert_int_equal(store_user_get(ctl, "mine@example.com", &got), 0);

	/* deletion propagates too */
	assert_int_equal(store_user_del(ctl, "new@example.com"), 0);
	usleep(1100 * 1000);
	assert_int_equal(store_user_get(server, "new@example.com", &got), -ENOENT);
	/* and a del by tetherd of a user only tetherctl knows about so far */
	assert_int_equal(store_user_put(ctl, "late@example.com", &a), 0);
	assert_int_equal(store_user_del(server, "late@example.com"), 0);
	store_close(server);
	store_close(ctl);
}

static void collect(void *ud, const char *jid)
{
	int *n = ud;
	assert_true(strcmp(jid, "a@example.com") == 0 || strcmp(jid, "b@example.com") == 0);
	(*n)++;
}

static void test_list(void **state)
{
	(void)state;
	struct store *st = open_ok();
	struct user_creds c;
	int n = 0;
	creds(&c, "c");
	assert_int_equal(store_user_list(st, collect, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(store_user_put(st, "a@example.com", &c), 0);
	assert_int_equal(store_user_put(st, "b@example.com", &c), 0);
	assert_int_equal(store_user_list(st, collect, &n), 0);
	assert_int_equal(n, 2);
	store_close(st);
}

static void write_file(const char *content)
{
	char db[400], cmd[400];
	snprintf(cmd, sizeof(cmd), "mkdir -p '%s'", path);
	assert_int_equal(system(cmd), 0);
	db_file(db, sizeof(db));
	FILE *f = fopen(db, "w");
	assert_non_null(f);
	fputs(content, f);
	fclose(f);
}

static void open_fails(const char *content, const char *want)
{
	char err[256] = "";
	write_file(content);
	struct store *st = store_open("memory", path, err, sizeof(err));
	assert_null(st);
	if (!strstr(err, want))
		print_error("error \"%s\" lacks \"%s\"\n", err, want);
	assert_non_null(strstr(err, want));
}

#define K20 "AAAAAAAAAAAAAAAAAAAAAAAAAAA="
#define K32 "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
#define SALT "AAAAAAAAAAAAAAAAAAAAAA=="

static void test_file_format(void **state)
{
	(void)state;
	struct user_creds got;
	/* a hand-written file with a comment and a blank line loads */
	write_file("# users\n\nu@example.com 4096 " SALT " " K20 " " K20 " " K32 " " K32 "\n");
	struct store *st = open_ok();
	assert_int_equal(store_user_get(st, "u@example.com", &got), 0);
	assert_int_equal(got.iterations, 4096);
	assert_int_equal(got.salt_len, 16);
	store_close(st);

	open_fails("u@example.com 4096 " SALT " " K20 " " K20 " " K32 "\n", ":1: malformed");
	open_fails("# x\nu@example.com 0 " SALT " " K20 " " K20 " " K32 " " K32 "\n", ":2: malformed");
	open_fails("u@example.com -1 " SALT " " K20 " " K20 " " K32 " " K32 "\n", ":1: malformed");
	open_fails("u@example.com 4096 " SALT " " K32 " " K20 " " K32 " " K32 "\n", ":1: malformed");
	open_fails("u@example.com 4096 !!!! " K20 " " K20 " " K32 " " K32 "\n", ":1: malformed");
	open_fails("u@example.com 4096 " SALT " " K20 " " K20 " " K32 " " K32 " extra\n", ":1: malformed");
	open_fails("u@example.com 4096 " SALT " " K20 " " K20 " " K32 " " K32 "\n"
		   "u@example.com 4096 " SALT " " K20 " " K20 " " K32 " " K32 "\n", ":2: duplicate");

	/* a bad file written behind a running store's back: old view kept */
	write_file("u@example.com 4096 " SALT " " K20 " " K20 " " K32 " " K32 "\n");
	st = open_ok();
	write_file("garbage\n");
	usleep(1100 * 1000);
	assert_int_equal(store_user_get(st, "u@example.com", &got), 0);
	/* ... and a put refuses to overwrite what it cannot read */
	assert_int_equal(store_user_put(st, "v@example.com", &got), -EINVAL);
	store_close(st);
}

static void test_open_errors(void **state)
{
	(void)state;
	char err[256] = "";
	assert_null(store_open("redis-ng", path, err, sizeof(err)));
	assert_non_null(strstr(err, "unknown backend"));
	/* a file where the directory should be */
	char file[400];
	snprintf(file, sizeof(file), "%s/plainfile", dir);
	FILE *f = fopen(file, "w");
	assert_non_null(f);
	fclose(f);
	assert_null(store_open("memory", file, err, sizeof(err)));
	snprintf(file, sizeof(file), "%s/plainfile/sub", dir);
	assert_null(store_open("memory", file, err, sizeof(err)));
}

/* Bulk import: one call, replaces existing users, last duplicate wins,
 * persisted; a bad key refuses the whole batch; the wrapper falls back to
 * user_put when a backend has no user_put_many. */
static void test_put_many(void **state)
{
	(void)state;
	struct store *st = open_ok();
	enum { N = 500 };
	static char names[N + 1][64];
	const char *bares[N + 1];
	static struct user_creds cs[N + 1];
	struct user_creds old, got;
	creds(&old, "old");
	assert_int_equal(store_user_put(st, "user7@example.com", &old), 0);
	for (int i = 0; i < N; i++) {
		snprintf(names[i], sizeof(names[i]), "user%d@example.com", i);
		bares[i] = names[i];
		creds(&cs[i], names[i]);
		cs[i].iterations = (uint32_t)(2000 + i);
	}
	/* a duplicate of user3 at the end: it wins */
	bares[N] = "user3@example.com";
	creds(&cs[N], "dup");
	cs[N].iterations = 99;
	assert_int_equal(store_user_put_many(st, N + 1, bares, cs), 0);
	assert_int_equal(store_user_get(st, "user7@example.com", &got), 0);
	assert_int_equal(got.iterations, 2007);
	assert_int_equal(store_user_get(st, "user3@example.com", &got), 0);
	assert_int_equal(got.iterations, 99);
	store_close(st);

	st = open_ok();
	for (int i = 0; i < N; i++) {
		assert_int_equal(store_user_get(st, names[i], &got), 0);
		assert_int_equal(got.iterations, i == 3 ? 99 : 2000 + i);
		if (i != 3)
			assert_memory_equal(got.stored_key_sha256, cs[i].stored_key_sha256,
					    sizeof(got.stored_key_sha256));
	}
	/* all or nothing: one unstorable key and nothing changes */
	const char *bad[2] = { "fresh@example.com", "a b@example.com" };
	assert_int_equal(store_user_put_many(st, 2, bad, cs), -EINVAL);
	assert_int_equal(store_user_get(st, "fresh@example.com", &got), -ENOENT);
	assert_int_equal(store_user_put_many(st, 0, bares, cs), 0);

	/* the wrapper without the op: a loop of user_put */
	const struct store_ops *ops = st->ops;
	struct store_ops plain = *ops;
	plain.user_put_many = NULL;
	st->ops = &plain;
	const char *two[2] = { "x@example.com", "y@example.com" };
	assert_int_equal(store_user_put_many(st, 2, two, cs), 0);
	st->ops = ops;
	assert_int_equal(store_user_get(st, "y@example.com", &got), 0);
	assert_int_equal(got.iterations, cs[1].iterations);
	store_close(st);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_crud, setup, teardown),
		cmocka_unit_test_setup_teardown(test_many, setup, teardown),
		cmocka_unit_test_setup_teardown(test_persist, setup, teardown),
		cmocka_unit_test_setup_teardown(test_atomic, setup, teardown),
		cmocka_unit_test_setup_teardown(test_two_processes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_list, setup, teardown),
		cmocka_unit_test_setup_teardown(test_file_format, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_put_many, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
