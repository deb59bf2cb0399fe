/* store/memory.c - the "memory" store backend: users in a hash map, persisted
 * to <path>/users.db, shared with tetherctl through atomic renames and flock. */
#include "tether/store.h"

#include "memory_im.h"
#include "memory_sm.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "tether/jid.h"
#include "tether/log.h"
#include "tether/sbuf.h"

/* users.db, one line per user, fields separated by one space:
 *   jid iterations salt_b64 sk1_b64 svk1_b64 sk256_b64 svk256_b64
 * base64 is RFC 4648 with padding. Blank lines and lines starting with '#'
 * are ignored. The file is replaced as a whole (temp file, fsync, rename),
 * so a reader sees the old or the new version, never a mix. */
#define DB_NAME "users.db"
#define LOCK_NAME "users.lock"
#define DB_LINE_MAX (JID_MAX + 512)
#define ITER_MAX 100000000u    /* beyond this a record is corrupt, not slow */
#define CHECK_INTERVAL_MS 1000 /* how stale the view may get vs. tetherctl */

struct entry {
	struct entry *next;
	uint64_t hash;
	struct user_creds c;
	char jid[]; /* prepared bare JID, NUL-terminated */
};

struct map {
	struct entry **b; /* buckets, nb a power of two */
	size_t nb;
	size_t n;
};

/* What identifies one version of users.db: rename() gives a new inode, an
 * in-place edit changes size or mtime. */
struct file_id {
	int exists;
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtim;
};

struct mem {
	struct store base;        /* first: struct store * ↔ struct mem * */
	pthread_rwlock_t lock;    /* guards users and seen */
	struct map users;
	struct file_id seen;      /* users.db as last loaded or written */
	int seen_bad;             /* ...and that version could not be loaded */
	atomic_llong next_check;  /* monotonic ms: stat users.db again after this */
	char db[PATH_MAX];
	char lockpath[PATH_MAX];
	char dir[PATH_MAX];
	struct sm_table *sm;      /* XEP-0198 sessions (memory_sm.c) */
	struct fast_table *fast;  /* XEP-0484 tokens (memory_fast.c) */
	struct im_table *im;      /* rosters, offline messages (memory_im.c) */
};

/* ---- hash map -------------------------------------------------------- */

static uint64_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a: keys are admin-made, not hostile */
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return h;
}

static struct entry **map_slot(struct map *m, const char *jid, uint64_t h)
{
	if (!m->nb)
		return NULL;
	struct entry **pp = &m->b[h & (m->nb - 1)];
	while (*pp && ((*pp)->hash != h || strcmp((*pp)->jid, jid) != 0))
		pp = &(*pp)->next;
	return pp;
}

static struct entry *map_find(struct map *m, const char *jid)
{
	struct entry **pp = map_slot(m, jid, hash_str(jid));
	return pp ? *pp : NULL;
}

static int map_grow(struct map *m)
{
	size_t nb = m->nb ? m->nb * 2 : 64;
	struct entry **b = calloc(nb, sizeof(*b));
	if (!b)
		return -ENOMEM;
	for (size_t i = 0; i < m->nb; i++) {
		struct entry *e = m->b[i], *next;
		for (; e; e = next) {
			next = e->next;
			e->next = b[e->hash & (nb - 1)];
			b[e->hash & (nb - 1)] = e;
		}
	}
	free(m->b);
	m->b = b;
	m->nb = nb;
	return 0;
}

/* Links <e> (not yet in <m>, key absent). */
static int map_link(struct map *m, struct entry *e)
{
	if (m->n >= m->nb && map_grow(m))
		return -ENOMEM;
	struct entry **pp = &m->b[e->hash & (m->nb - 1)];
	e->next = *pp;
	*pp = e;
	m->n++;
	return 0;
}

static struct entry *entry_new(const char *jid, const struct user_creds *c)
{
	size_t len = strlen(jid);
	struct entry *e = malloc(sizeof(*e) + len + 1);
	if (!e)
		return NULL;
	e->next = NULL;
	e->hash = hash_str(jid);
	e->c = *c;
	memcpy(e->jid, jid, len + 1);
	return e;
}

static void entry_free(struct entry *e)
{
	if (!e)
		return;
	scram_creds_wipe(&e->c);
	free(e);
}

static void map_clear(struct map *m)
{
	for (size_t i = 0; i < m->nb; i++) {
		struct entry *e = m->b[i], *next;
		for (; e; e = next) {
			next = e->next;
			entry_free(e);
		}
	}
	free(m->b);
	m->b = NULL;
	m->nb = m->n = 0;
}

/* ---- file format ----------------------------------------------------- */

/* A JID as a file field: non-empty, bounded, no space or control. */
static int jid_field_ok(const char *jid)
{
	size_t len = strlen(jid);
	if (len == 0 || len > JID_MAX)
		return 0;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)jid[i] <= 0x20 || jid[i] == 0x7f)
			return 0;
	return 1;
}

/* Decodes base64 <s> into exactly <len> bytes (or 1..<len> if <exact> is 0).
 * Returns the byte count, or -1. */
static int b64_field(const char *s, uint8_t *out, size_t len, int exact)
{
	size_t n = 0;
	const char *end = NULL;
	size_t slen = strlen(s);
	if (sodium_base642bin(out, len, s, slen, NULL, &n, &end, sodium_base64_VARIANT_ORIGINAL) != 0 ||
	    end != s + slen || n == 0 || (exact && n != len))
		return -1;
	return (int)n;
}

/* Parses one line (NUL-terminated, no newline) into <jid> and <c>.
 * Returns 0, or -1 on bad syntax. */
static int parse_line(char *line, char **jid, struct user_creds *c)
{
	char *f[7], *save = NULL, *end;
	int i = 0, n;

	for (char *t = strtok_r(line, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
		if (i == 7)
			return -1;
		f[i++] = t;
	}
	if (i != 7 || !jid_field_ok(f[0]))
		return -1;
	memset(c, 0, sizeof(*c));
	errno = 0;
	unsigned long it = strtoul(f[1], &end, 10);
	if (errno || *end || f[1][0] < '0' || f[1][0] > '9' || it == 0 || it > ITER_MAX)
		return -1;
	c->iterations = (uint32_t)it;
	if ((n = b64_field(f[2], c->salt, sizeof(c->salt), 0)) < 0)
		return -1;
	c->salt_len = (uint8_t)n;
	if (b64_field(f[3], c->stored_key_sha1, sizeof(c->stored_key_sha1), 1) < 0 ||
	    b64_field(f[4], c->server_key_sha1, sizeof(c->server_key_sha1), 1) < 0 ||
	    b64_field(f[5], c->stored_key_sha256, sizeof(c->stored_key_sha256), 1) < 0 ||
	    b64_field(f[6], c->server_key_sha256, sizeof(c->server_key_sha256), 1) < 0)
		return -1;
	*jid = f[0];
	return 0;
}

static int file_id_get(const char *path, struct file_id *id)
{
	struct stat st;
	memset(id, 0, sizeof(*id));
	if (stat(path, &st) == -1)
		return errno == ENOENT ? 0 : -errno;
	id->exists = 1;
	id->dev = st.st_dev;
	id->ino = st.st_ino;
	id->size = st.st_size;
	id->mtim = st.st_mtim;
	return 0;
}

static int file_id_eq(const struct file_id *a, const struct file_id *b)
{
	if (a->exists != b->exists)
		return 0;
	return !a->exists || (a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
			      a->mtim.tv_sec == b->mtim.tv_sec && a->mtim.tv_nsec == b->mtim.tv_nsec);
}

/* Loads <path> into the empty map <m>, recording what was read in <id>. A
 * missing file is an empty store. Returns 0, or -errno with a message in
 * <err> (<m> is then empty). */
static int db_load(const char *path, struct map *m, struct file_id *id, char *err, size_t errlen)
{
	char line[DB_LINE_MAX];
	struct user_creds c;
	struct stat st;
	unsigned lineno = 0;
	int rc = 0;
	FILE *f = fopen(path, "re");

	memset(id, 0, sizeof(*id));
	if (!f) {
		if (errno == ENOENT)
			return 0;
		rc = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return rc;
	}
	/* Identity from the open file, so a rename racing with us is noticed
	 * at the next check rather than lost. */
	if (fstat(fileno(f), &st) == 0) {
		id->exists = 1;
		id->dev = st.st_dev;
		id->ino = st.st_ino;
		id->size = st.st_size;
		id->mtim = st.st_mtim;
	}
	while (fgets(line, sizeof(line), f)) {
		char *jid;
		size_t len = strlen(line);
		lineno++;
		if (len && line[len - 1] == '\n')
			line[--len] = 0;
		else if (!feof(f))
			goto bad; /* line too long */
		if (len == 0 || line[0] == '#')
			continue;
		if (parse_line(line, &jid, &c))
			goto bad;
		if (map_find(m, jid)) {
			snprintf(err, errlen, "%s:%u: duplicate user %s", path, lineno, jid);
			rc = -EINVAL;
			goto out;
		}
		struct entry *e = entry_new(jid, &c);
		if (!e || map_link(m, e)) {
			free(e);
			snprintf(err, errlen, "%s: out of memory", path);
			rc = -ENOMEM;
			goto out;
		}
	}
	if (ferror(f)) {
		rc = -EIO;
		snprintf(err, errlen, "%s: read error", path);
	}
	goto out;
bad:
	snprintf(err, errlen, "%s:%u: malformed user record", path, lineno);
	rc = -EINVAL;
out:
	scram_creds_wipe(&c);
	sodium_memzero(line, sizeof(line));
	fclose(f);
	if (rc)
		map_clear(m);
	return rc;
}

static int append_b64(struct sbuf *b, const uint8_t *p, size_t len)
{
	char tmp[sodium_base64_ENCODED_LEN(32, sodium_base64_VARIANT_ORIGINAL)];
	if (len > 32)
		return -EINVAL;
	sodium_bin2base64(tmp, sizeof(tmp), p, len, sodium_base64_VARIANT_ORIGINAL);
	return sbuf_puts(b, tmp);
}

/* Writes <m> to users.db: temp file in the same directory (so rename is
 * atomic), fsync, rename over, fsync the directory (so the rename itself
 * survives a crash). Records the new file's identity in <id>. Returns 0 or
 * -errno. */
static int db_write(struct mem *st, const struct map *m, struct file_id *id)
{
	struct sbuf b = SBUF_INIT;
	char tmp[PATH_MAX];
	int fd = -1, dfd = -1, rc = 0;

	for (size_t i = 0; i < m->nb && !rc; i++) {
		for (const struct entry *e = m->b[i]; e && !rc; e = e->next) {
			const struct user_creds *c = &e->c;
			rc = sbuf_printf(&b, "%s %u ", e->jid, (unsigned)c->iterations);
			rc = rc ? rc : append_b64(&b, c->salt, scram_salt_len(c));
			rc = rc ? rc : sbuf_puts(&b, " ");
			rc = rc ? rc : append_b64(&b, c->stored_key_sha1, sizeof(c->stored_key_sha1));
			rc = rc ? rc : sbuf_puts(&b, " ");
			rc = rc ? rc : append_b64(&b, c->server_key_sha1, sizeof(c->server_key_sha1));
			rc = rc ? rc : sbuf_puts(&b, " ");
			rc = rc ? rc : append_b64(&b, c->stored_key_sha256, sizeof(c->stored_key_sha256));
			rc = rc ? rc : sbuf_puts(&b, " ");
			rc = rc ? rc : append_b64(&b, c->server_key_sha256, sizeof(c->server_key_sha256));
			rc = rc ? rc : sbuf_puts(&b, "\n");
		}
	}
	if (rc)
		goto out;
	if (snprintf(tmp, sizeof(tmp), "%s.XXXXXX", st->db) >= (int)sizeof(tmp)) {
		rc = -ENAMETOOLONG;
		goto out;
	}
	fd = mkostemp(tmp, O_CLOEXEC); /* mode 0600 */
	if (fd == -1) {
		rc = -errno;
		goto out;
	}
	for (size_t off = 0; off < b.len;) {
		ssize_t n = write(fd, b.data + off, b.len - off);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			rc = -errno;
			goto unlink;
		}
		off += (size_t)n;
	}
	if (fchmod(fd, 0600) == -1 || fsync(fd) == -1) {
		rc = -errno;
		goto unlink;
	}
	if (close(fd) == -1) {
		fd = -1;
		rc = -errno;
		goto unlink;
	}
	fd = -1;
	if (rename(tmp, st->db) == -1) {
		rc = -errno;
		goto unlink;
	}
	dfd = open(st->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd != -1) {
		fsync(dfd); /* best effort: some filesystems refuse a directory fsync */
		close(dfd);
	}
	rc = file_id_get(st->db, id);
	goto out;
unlink:
	if (fd != -1)
		close(fd);
	unlink(tmp);
out:
	sbuf_free_secret(&b);
	return rc;
}

/* ---- reload ---------------------------------------------------------- */

static long long mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The FAST and ISR tokens of account <bare> die (with the write lock held,
 * so in the step that changes its password or deletes it). */
static void revoke_tokens(struct mem *st, const char *bare, const char *why)
{
	/* debug: in tetherctl, which writes users.db, there are no tokens;
	 * tetherd logs when it notices the new file (revoke_changed). */
	log_debug("store: %s %s: its tokens are revoked", bare, why);
	fast_table_revoke(st->fast, bare);
	sm_table_revoke_isr(st->sm, bare);
}

/* Tokens die with the password (XEP-0484, XEP-0397 stance B): every
 * account of <old> that is gone from <fresh>, or whose keys changed there,
 * loses its FAST and ISR tokens. */
static void revoke_changed(struct mem *st, const struct map *old, struct map *fresh)
{
	for (size_t b = 0; b < old->nb; b++) {
		for (const struct entry *e = old->b[b]; e; e = e->next) {
			const struct entry *n = map_find(fresh, e->jid);
			if (n && sodium_memcmp(n->c.stored_key_sha256, e->c.stored_key_sha256,
					       sizeof(e->c.stored_key_sha256)) == 0)
				continue;
			log_info("store: %s %s: its tokens are revoked", e->jid,
				 n ? "changed password" : "was deleted");
			revoke_tokens(st, e->jid, "reloaded");
		}
	}
}

/* With the write lock held: if users.db is no longer the version we hold,
 * load it. On a load error the old view stays (and the error is returned);
 * the failing version is remembered so it is logged once, not every
 * second, and writes keep failing until someone fixes the file: a put must
 * not silently replace records it could not read. */
static int refresh(struct mem *st)
{
	struct file_id now, loaded;
	struct map fresh = { 0 };
	char err[256];
	int rc = file_id_get(st->db, &now);

	if (rc) {
		log_warn("store: stat %s: %s", st->db, strerror(-rc));
		return rc;
	}
	if (file_id_eq(&now, &st->seen))
		return st->seen_bad ? -EINVAL : 0;
	rc = db_load(st->db, &fresh, &loaded, err, sizeof(err));
	if (rc) {
		log_warn("store: reload failed, keeping %zu users: %s", st->users.n, err);
		st->seen = now;
		st->seen_bad = 1;
		return rc;
	}
	revoke_changed(st, &st->users, &fresh);
	map_clear(&st->users);
	st->users = fresh;
	st->seen = loaded;
	st->seen_bad = 0;
	log_debug("store: reloaded %s: %zu users", st->db, st->users.n);
	return 0;
}

/* Reloads at most once per CHECK_INTERVAL_MS, so the hot path pays one
 * atomic load and, once a second, one stat(). */
static void maybe_refresh(struct mem *st)
{
	long long now = mono_ms();
	if (now < atomic_load_explicit(&st->next_check, memory_order_relaxed))
		return;
	pthread_rwlock_wrlock(&st->lock);
	if (now >= atomic_load_explicit(&st->next_check, memory_order_relaxed)) {
		refresh(st);
		atomic_store_explicit(&st->next_check, now + CHECK_INTERVAL_MS, memory_order_relaxed);
	}
	pthread_rwlock_unlock(&st->lock);
}

/* Before a token is accepted: users.db is checked now, not within the
 * next second, so a token stops working as soon as tetherctl passwd or
 * deluser has returned (one stat() per FAST or ISR login). */
static void refresh_now(struct mem *st)
{
	struct file_id now;
	if (file_id_get(st->db, &now)) {
		maybe_refresh(st);
		return;
	}
	pthread_rwlock_rdlock(&st->lock);
	int same = file_id_eq(&now, &st->seen);
	pthread_rwlock_unlock(&st->lock);
	if (same)
		return;
	pthread_rwlock_wrlock(&st->lock);
	refresh(st);
	atomic_store_explicit(&st->next_check, mono_ms() + CHECK_INTERVAL_MS, memory_order_relaxed);
	pthread_rwlock_unlock(&st->lock);
}

/* Takes the cross-process lock (users.lock) for a read-modify-write.
 * Returns the fd to pass to unlock_file(), or -errno. */
static int lock_file(struct mem *st)
{
	int fd = open(st->lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd == -1)
		return -errno;
	while (flock(fd, LOCK_EX) == -1) {
		if (errno != EINTR) {
			int rc = -errno;
			close(fd);
			return rc;
		}
	}
	return fd;
}

static void unlock_file(int fd)
{
	flock(fd, LOCK_UN);
	close(fd);
}

/* ---- operations ------------------------------------------------------ */

static int mem_user_get(struct store *s, const char *bare, struct user_creds *out)
{
	struct mem *st = (struct mem *)s;
	int rc = -ENOENT;

	maybe_refresh(st);
	pthread_rwlock_rdlock(&st->lock);
	const struct entry *e = map_find(&st->users, bare);
	if (e) {
		*out = e->c;
		rc = 0;
	}
	pthread_rwlock_unlock(&st->lock);
	return rc;
}

/* Creates or replaces <n> users. Order of locks everywhere: rwlock, then
 * users.lock. Under both we first catch up with the file (another process
 * may have written it), change the map, and write once (tetherctl import
 * costs one file rewrite, not n; a single put is n = 1). A key given twice:
 * the last one wins. If anything fails, every change is undone in reverse
 * order, so memory and disk agree. */
static int mem_user_put_many(struct store *s, size_t n, const char *const *bares,
			     const struct user_creds *creds)
{
	struct undo {
		struct entry *e;
		struct user_creds old; /* valid when !created */
		int created;
	} *u = NULL;
	struct mem *st = (struct mem *)s;
	struct file_id id;
	size_t done = 0;
	int fd, rc;

	for (size_t i = 0; i < n; i++)
		if (!jid_field_ok(bares[i]) || creds[i].iterations == 0 || creds[i].iterations > ITER_MAX)
			return -EINVAL;
	if (n == 0)
		return 0;
	if (!(u = calloc(n, sizeof(*u))))
		return -ENOMEM;
	pthread_rwlock_wrlock(&st->lock);
	fd = lock_file(st);
	if (fd < 0) {
		rc = fd;
		goto out;
	}
	if ((rc = refresh(st)))
		goto unlock;
	for (; done < n; done++) {
		struct entry *e = map_find(&st->users, bares[done]);
		if (e) {
			u[done].old = e->c;
			e->c = creds[done];
		} else {
			e = entry_new(bares[done], &creds[done]);
			if (!e || map_link(&st->users, e)) {
				free(e);
				rc = -ENOMEM;
				break;
			}
			u[done].created = 1;
		}
		e->c.salt_len = (uint8_t)scram_salt_len(&creds[done]);
		u[done].e = e;
	}
	if (rc == 0)
		rc = db_write(st, &st->users, &id);
	if (rc == 0) {
		st->seen = id;
		/* A new password: the account's tokens die in this same step,
		 * before anyone can read the users map again. */
		for (size_t i = 0; i < n; i++)
			if (!u[i].created && sodium_memcmp(u[i].old.stored_key_sha256,
							   u[i].e->c.stored_key_sha256,
							   sizeof(u[i].old.stored_key_sha256)))
				revoke_tokens(st, u[i].e->jid, "changed password");
	} else {
		while (done-- > 0) {
			struct entry *e = u[done].e;
			if (!u[done].created) {
				e->c = u[done].old;
				continue;
			}
			struct entry **pp = map_slot(&st->users, e->jid, e->hash);
			*pp = e->next;
			st->users.n--;
			entry_free(e);
		}
	}
unlock:
	unlock_file(fd);
out:
	pthread_rwlock_unlock(&st->lock);
	sodium_memzero(u, n * sizeof(*u));
	free(u);
	return rc;
}

static int mem_user_put(struct store *s, const char *bare, const struct user_creds *c)
{
	return mem_user_put_many(s, 1, &bare, c);
}

static int mem_user_del(struct store *s, const char *bare)
{
	struct mem *st = (struct mem *)s;
	struct file_id id;
	int fd, rc;

	pthread_rwlock_wrlock(&st->lock);
	fd = lock_file(st);
	if (fd < 0) {
		rc = fd;
		goto out;
	}
	if ((rc = refresh(st)))
		goto unlock;
	struct entry **pp = map_slot(&st->users, bare, hash_str(bare));
	struct entry *e = pp ? *pp : NULL;
	if (!e) {
		rc = -ENOENT;
		goto unlock;
	}
	*pp = e->next;
	st->users.n--;
	rc = db_write(st, &st->users, &id);
	if (rc) {
		e->next = *pp; /* put it back where it was */
		*pp = e;
		st->users.n++;
	} else {
		st->seen = id;
		revoke_tokens(st, e->jid, "was deleted");
		entry_free(e);
	}
unlock:
	unlock_file(fd);
out:
	pthread_rwlock_unlock(&st->lock);
	return rc;
}

/* <fn> runs under the read lock: it must not call back into the store. */
static int mem_user_list(struct store *s, void (*fn)(void *ud, const char *bare_jid), void *ud)
{
	struct mem *st = (struct mem *)s;

	maybe_refresh(st);
	pthread_rwlock_rdlock(&st->lock);
	for (size_t i = 0; i < st->users.nb; i++)
		for (const struct entry *e = st->users.b[i]; e; e = e->next)
			fn(ud, e->jid);
	pthread_rwlock_unlock(&st->lock);
	return 0;
}

static void mem_close(struct store *s)
{
	struct mem *st = (struct mem *)s;
	map_clear(&st->users);
	pthread_rwlock_destroy(&st->lock);
	sm_table_free(st->sm);
	fast_table_free(st->fast);
	im_table_free(st->im);
	free(st);
}

/* ---- SM sessions: in process, completed before returning --------------- */

static int mem_sm_create(struct store *s, const struct sm_record *rec, const char *bare,
			 const char *resource)
{
	return sm_table_create(((struct mem *)s)->sm, rec, bare, resource);
}

static int mem_sm_append(struct store *s, const char *id, uint32_t epoch,
			 struct sm_entry *e, struct bus_addr *moved_to)
{
	return sm_table_append(((struct mem *)s)->sm, id, epoch, e, moved_to);
}

static int mem_sm_ack(struct store *s, const char *id, uint32_t epoch, uint32_t h)
{
	return sm_table_ack(((struct mem *)s)->sm, id, epoch, h);
}

static int mem_sm_update(struct store *s, const struct sm_record *rec)
{
	return sm_table_update(((struct mem *)s)->sm, rec->id, rec->epoch, rec);
}

static int mem_sm_take(struct store *s, const char *id, const char *bare,
		       const struct bus_addr *to, uint64_t now_ms, struct sm_isr_proof *proof,
		       store_sm_take_fn *fn, void *ud)
{
	if (proof)
		refresh_now((struct mem *)s); /* a password change must be seen first */
	return sm_table_take(((struct mem *)s)->sm, id, bare, to, now_ms, proof, fn, ud);
}

static int mem_sm_destroy(struct store *s, const char *id, uint32_t epoch,
			  store_sm_drain_fn *fn, void *ud)
{
	return sm_table_destroy(((struct mem *)s)->sm, id, epoch, fn, ud);
}

static int mem_sm_set_isr(struct store *s, const char *id, uint32_t epoch, int set, uint8_t mech,
			  const uint8_t sealed[TOKEN_SEALED_LEN])
{
	return sm_table_set_isr(((struct mem *)s)->sm, id, epoch, set, mech, sealed);
}

static int mem_fast_get(struct store *s, const char *bare, const char *ua_id, struct fast_slots *out)
{
	refresh_now((struct mem *)s); /* a password change must be seen first */
	return fast_table_get(((struct mem *)s)->fast, bare, ua_id, out);
}

static int mem_fast_cas(struct store *s, const char *bare, const char *ua_id,
			struct fast_slots *in)
{
	return fast_table_cas(((struct mem *)s)->fast, bare, ua_id, in);
}

/* ---- IM data: memory_im.c, persisted under <path>/im ---------------------- */

static int mem_im_read(struct store *s, const char *bare, uint64_t *ver, store_im_item_fn *fn,
		       void *ud)
{
	return im_table_read(((struct mem *)s)->im, bare, ver, fn, ud);
}

static int mem_im_set(struct store *s, const char *bare, const struct im_item *it,
		      unsigned max_items, struct im_change *out)
{
	return im_table_set(((struct mem *)s)->im, bare, it, max_items, out);
}

static int mem_im_remove(struct store *s, const char *bare, const char *jid,
			 struct im_change *out, struct im_change *contact_out)
{
	return im_table_remove(((struct mem *)s)->im, bare, jid, out, contact_out);
}

static int mem_im_sub(struct store *s, const char *user, const char *contact, enum sub_type type,
		      const char *stanza, unsigned max_items, struct im_sub_result *out)
{
	struct user_creds c;
	int exists = mem_user_get(s, contact, &c) == 0;
	scram_creds_wipe(&c);
	return im_table_sub(((struct mem *)s)->im, user, contact, exists, type, stanza, max_items,
			    out);
}

static int mem_im_offline_add(struct store *s, const char *bare, const char *data, size_t len,
			      unsigned max)
{
	struct user_creds c;
	int rc = mem_user_get(s, bare, &c); /* nothing is kept for nobody */
	scram_creds_wipe(&c);
	if (rc)
		return rc;
	return im_table_offline_add(((struct mem *)s)->im, bare, data, len, max);
}

static int mem_im_offline_take(struct store *s, const char *bare, store_im_msg_fn *fn, void *ud)
{
	return im_table_offline_take(((struct mem *)s)->im, bare, fn, ud);
}

static int mem_im_blocks(struct store *s, const char *bare, store_im_jid_fn *fn, void *ud)
{
	return im_table_blocks(((struct mem *)s)->im, bare, fn, ud);
}

static int mem_im_block(struct store *s, const char *bare, enum im_block_op op,
			char *const *jids, size_t n)
{
	return im_table_block(((struct mem *)s)->im, bare, op, jids, n);
}

struct sm_table *store_memory_sm_table(struct store *s)
{
	return ((struct mem *)s)->sm;
}

static const struct store_ops mem_ops = {
	.user_get = mem_user_get,
	.user_put = mem_user_put,
	.user_del = mem_user_del,
	.close = mem_close,
	.user_list = mem_user_list,
	.sm_create = mem_sm_create,
	.sm_append = mem_sm_append,
	.sm_ack = mem_sm_ack,
	.sm_update = mem_sm_update,
	.sm_take = mem_sm_take,
	.sm_destroy = mem_sm_destroy,
	.sm_set_isr = mem_sm_set_isr,
	.fast_get = mem_fast_get,
	.fast_cas = mem_fast_cas,
	.user_put_many = mem_user_put_many,
	.im_read = mem_im_read,
	.im_set = mem_im_set,
	.im_remove = mem_im_remove,
	.im_sub = mem_im_sub,
	.im_offline_add = mem_im_offline_add,
	.im_offline_take = mem_im_offline_take,
	.im_blocks = mem_im_blocks,
	.im_block = mem_im_block,
};

/* mkdir -p with mode 0700 for what we create; an existing directory is
 * left as it is. */
static int mkdirs(const char *path)
{
	char p[PATH_MAX];
	size_t len = strlen(path);
	struct stat sb;

	if (len == 0 || len >= sizeof(p))
		return -ENAMETOOLONG;
	memcpy(p, path, len + 1);
	for (size_t i = 1; i <= len; i++) {
		if (p[i] != '/' && p[i] != 0)
			continue;
		char save = p[i];
		p[i] = 0;
		if (mkdir(p, 0700) == -1 && errno != EEXIST)
			return -errno;
		p[i] = save;
	}
	if (stat(path, &sb) == -1)
		return -errno;
	return S_ISDIR(sb.st_mode) ? 0 : -ENOTDIR;
}

struct store *store_memory_open(const char *path, char *err, size_t errlen)
{
	struct mem *st;
	int rc;

	if (sodium_init() < 0) {
		snprintf(err, errlen, "store: libsodium init failed");
		return NULL;
	}
	rc = mkdirs(path);
	if (rc) {
		snprintf(err, errlen, "store: %s: %s", path, strerror(-rc));
		return NULL;
	}
	st = calloc(1, sizeof(*st));
	if (!st) {
		snprintf(err, errlen, "store: out of memory");
		return NULL;
	}
	st->base.ops = &mem_ops;
	if (snprintf(st->dir, sizeof(st->dir), "%s", path) >= (int)sizeof(st->dir) ||
	    snprintf(st->db, sizeof(st->db), "%s/" DB_NAME, path) >= (int)sizeof(st->db) ||
	    snprintf(st->lockpath, sizeof(st->lockpath), "%s/" LOCK_NAME, path) >= (int)sizeof(st->lockpath)) {
		snprintf(err, errlen, "store: %s: path too long", path);
		free(st);
		return NULL;
	}
	if (pthread_rwlock_init(&st->lock, NULL) != 0) {
		snprintf(err, errlen, "store: rwlock init failed");
		free(st);
		return NULL;
	}
	if (db_load(st->db, &st->users, &st->seen, err, errlen)) {
		pthread_rwlock_destroy(&st->lock);
		free(st);
		return NULL;
	}
	atomic_init(&st->next_check, mono_ms() + CHECK_INTERVAL_MS);
	st->sm = sm_table_new();
	st->fast = fast_table_new();
	if (!st->sm || !st->fast) {
		snprintf(err, errlen, "store: out of memory");
		mem_close(&st->base);
		return NULL;
	}
	if (!(st->im = im_table_open(path, err, errlen))) {
		mem_close(&st->base);
		return NULL;
	}
	return &st->base;
}
