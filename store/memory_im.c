/* store/memory_im.c - the memory backend's IM data: rosters, subscription states and offline messages, persisted under <dir>/im.
 *
 * One account, two files in <dir>/im (made at the first write), named after a hash of the bare JID
 * (a JID can be 3071 bytes, a file name 255): <hash>.roster holds the
 * version and the items, <hash>.offline the stored messages, so storing
 * a message never rewrites the roster and the other way round. Each file
 * is replaced as a whole like users.db (temporary file, fsync, rename,
 * fsync of the directory): a crash leaves the old or the new version. A
 * change is made in memory, then written; if the write fails it is undone
 * and the caller gets the error, so memory never runs ahead of the disk.
 *
 * Format: lines of space-separated fields; strings are "-" (none) or "b"
 * followed by their base64 (RFC 4648, padded), so names, groups and whole
 * stanzas need no escaping.
 *   tether-im-roster 1 <bare>         tether-im-offline 1 <bare>
 *   ver <n>                           msg <stanza>
 *   item <state> <visible> <jid> <name> <pending> <ngroups> <group>...
 *   block <jid>                       (XEP-0191, in the roster file)
 *
 * Everything sits behind one mutex: roster operations are rare next to
 * stanzas, and the pairs a subscription changes (two accounts) are then
 * changed in one step without lock ordering. Rosters are small (capped by
 * [im] max_roster_items) so items are an array searched linearly. */
#include "memory_im.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "tether/log.h"
#include "tether/sbuf.h"

#define IM_SUBDIR  "im"
#define IM_BUCKETS 4096u
#define NAME_HASH  16     /* bytes of the file-name hash: 32 hex digits */

struct off_msg {
	char *data;
	size_t len;
};

struct acct {
	struct acct *next;
	uint64_t hash;
	uint64_t ver;
	struct im_item *items;
	size_t n, cap;
	struct off_msg *off;
	size_t noff, offcap;
	char **blocked;           /* XEP-0191 */
	size_t nblocked, capblocked;
	char name[2 * NAME_HASH + 1];  /* file name stem */
	char bare[];
};

struct im_table {
	pthread_mutex_t lock;
	char dir[PATH_MAX];
	struct acct *b[IM_BUCKETS];
};

/* ---- items ---------------------------------------------------------------- */

/* Moves <it> to state <s>; a request that is no longer pending is forgotten. */
static void set_state(struct im_item *it, enum sub_state s)
{
	it->state = (uint8_t)s;
	if (!sub_pending_in(s)) {
		free(it->pending);
		it->pending = NULL;
	}
}

/* ---- accounts ------------------------------------------------------------- */

static uint64_t acct_hash(const char *s)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a: bucket choice only */
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return h;
}

static struct acct *acct_find(struct im_table *t, const char *bare)
{
	uint64_t h = acct_hash(bare);
	for (struct acct *a = t->b[h % IM_BUCKETS]; a; a = a->next)
		if (a->hash == h && !strcmp(a->bare, bare))
			return a;
	return NULL;
}

static struct acct *acct_get(struct im_table *t, const char *bare)
{
	struct acct *a = acct_find(t, bare);
	if (a)
		return a;
	size_t len = strlen(bare);
	a = calloc(1, sizeof(*a) + len + 1);
	if (!a)
		return NULL;
	memcpy(a->bare, bare, len + 1);
	a->hash = acct_hash(bare);
	uint8_t h[NAME_HASH];
	crypto_generichash(h, sizeof(h), (const uint8_t *)bare, len, NULL, 0);
	sodium_bin2hex(a->name, sizeof(a->name), h, sizeof(h));
	a->next = t->b[a->hash % IM_BUCKETS];
	t->b[a->hash % IM_BUCKETS] = a;
	return a;
}

static void acct_free(struct acct *a)
{
	for (size_t i = 0; i < a->n; i++)
		im_item_clear(&a->items[i]);
	free(a->items);
	for (size_t i = 0; i < a->noff; i++)
		free(a->off[i].data);
	free(a->off);
	for (size_t i = 0; i < a->nblocked; i++)
		free(a->blocked[i]);
	free(a->blocked);
	free(a);
}

static struct im_item *find_item(struct acct *a, const char *jid)
{
	for (size_t i = 0; a && i < a->n; i++)
		if (!strcmp(a->items[i].jid, jid))
			return &a->items[i];
	return NULL;
}

static struct im_item *add_item(struct acct *a, const char *jid)
{
	if (a->n == a->cap) {
		size_t cap = a->cap ? a->cap * 2 : 8;
		struct im_item *n = realloc(a->items, cap * sizeof(*n));
		if (!n)
			return NULL;
		a->items = n;
		a->cap = cap;
	}
	struct im_item *it = &a->items[a->n];
	memset(it, 0, sizeof(*it));
	if (!(it->jid = strdup(jid)))
		return NULL;
	a->n++;
	return it;
}

/* Removes <it>, keeping the others in order (a roster reads back as it was built). */
static void del_item(struct acct *a, struct im_item *it)
{
	size_t i = (size_t)(it - a->items);
	im_item_clear(it);
	memmove(&a->items[i], &a->items[i + 1], (a->n - i - 1) * sizeof(*it));
	a->n--;
}

static size_t count_visible(const struct acct *a)
{
	size_t n = 0;
	for (size_t i = 0; i < a->n; i++)
		n += a->items[i].visible;
	return n;
}

/* An item nobody sees and nothing links: gone. */
static void collect(struct acct *a, const char *jid)
{
	struct im_item *it = find_item(a, jid);
	if (it && !it->visible && it->state == SUB_NONE)
		del_item(a, it);
}

/* A deep copy of an account's roster, to undo a change the disk refused. */
struct snap {
	struct im_item *items;
	size_t n;
	uint64_t ver;
	int taken;
};

static int snap_take(const struct acct *a, struct snap *s)
{
	memset(s, 0, sizeof(*s));
	s->ver = a->ver;
	s->taken = 1;
	if (!a->n)
		return 0;
	if (!(s->items = calloc(a->n, sizeof(*s->items))))
		return -ENOMEM;
	for (size_t i = 0; i < a->n; i++) {
		if (im_item_copy(&s->items[i], &a->items[i])) {
			for (size_t j = 0; j < i; j++)
				im_item_clear(&s->items[j]);
			free(s->items);
			s->items = NULL;
			return -ENOMEM;
		}
		s->n = i + 1;
	}
	return 0;
}

static void snap_drop(struct snap *s)
{
	for (size_t i = 0; i < s->n; i++)
		im_item_clear(&s->items[i]);
	free(s->items);
	memset(s, 0, sizeof(*s));
}

/* Puts the roster of <a> back as <s> had it; <s> is consumed. */
static void snap_restore(struct acct *a, struct snap *s)
{
	if (!s->taken)
		return;
	for (size_t i = 0; i < a->n; i++)
		im_item_clear(&a->items[i]);
	free(a->items);
	a->items = s->items;
	a->n = a->cap = s->n;
	a->ver = s->ver;
	memset(s, 0, sizeof(*s));
}

/* Records in <out> what happened to the visible item <jid> of <a>, which
 * was <was_vis> with state <was>: push, and a new version, if the user
 * sees a difference. Returns 0 or -ENOMEM. */
static int change_finish(struct acct *a, const char *jid, int was_vis, enum sub_state was,
		  struct im_change *out)
{
	const struct im_item *now = find_item(a, jid);
	int vis = now && now->visible;
	out->ver = a->ver;
	if (was_vis && !vis) {
		out->removed = out->pushed = 1;
		out->item.state = (uint8_t)was;
		if (!(out->item.jid = strdup(jid)))
			return -ENOMEM;
	} else if (vis && (!was_vis || strcmp(sub_attr(was), sub_attr(now->state)) ||
			   sub_asks(was) != sub_asks(now->state))) {
		out->pushed = 1;
		if (im_item_copy(&out->item, now))
			return -ENOMEM;
	}
	if (out->pushed)
		out->ver = ++a->ver;
	return 0;
}

/* ---- files ----------------------------------------------------------------- */

static int put_str(struct sbuf *b, const char *s, size_t len)
{
	if (!s)
		return sbuf_puts(b, " -");
	size_t cap = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_ORIGINAL);
	int rc = sbuf_puts(b, " b");
	if (!rc)
		rc = sbuf_reserve(b, cap);
	if (rc)
		return rc;
	sodium_bin2base64(b->data + b->len, cap, (const unsigned char *)s, len,
			  sodium_base64_VARIANT_ORIGINAL);
	b->len += cap - 1;
	return 0;
}

static int put_cstr(struct sbuf *b, const char *s)
{
	return put_str(b, s, s ? strlen(s) : 0);
}

/* Decodes a field written by put_str into a new NUL-terminated string
 * (*<out> NULL for "-"). Returns 0 or -EINVAL / -ENOMEM. */
static int get_str(const char *tok, char **out, size_t *outlen)
{
	*out = NULL;
	if (outlen)
		*outlen = 0;
	if (!tok)
		return -EINVAL;
	if (!strcmp(tok, "-"))
		return 0;
	if (tok[0] != 'b')
		return -EINVAL;
	size_t tlen = strlen(tok + 1), len = 0;
	char *d = malloc(tlen / 4 * 3 + 4);
	if (!d)
		return -ENOMEM;
	if (sodium_base642bin((unsigned char *)d, tlen / 4 * 3 + 3, tok + 1, tlen, NULL, &len, NULL,
			      sodium_base64_VARIANT_ORIGINAL) || memchr(d, 0, len)) {
		free(d);
		return -EINVAL;
	}
	d[len] = 0;
	*out = d;
	if (outlen)
		*outlen = len;
	return 0;
}

/* Replaces <dir>/<name> by <b> (temp file, fsync, rename, fsync dir), or
 * removes it when <b> is NULL. Returns 0 or -errno. */
static int file_put(const struct im_table *t, const char *name, const struct sbuf *b)
{
	char path[PATH_MAX], tmp[PATH_MAX];
	int fd = -1, rc = 0;
	if (snprintf(path, sizeof(path), "%s/%s", t->dir, name) >= (int)sizeof(path) ||
	    snprintf(tmp, sizeof(tmp), "%s.XXXXXX", path) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	if (!b) {
		if (unlink(path) == -1 && errno != ENOENT)
			return -errno;
		goto sync_dir;
	}
	if (mkdir(t->dir, 0700) == -1 && errno != EEXIST)
		return -errno;
	fd = mkostemp(tmp, O_CLOEXEC); /* mode 0600 */
	if (fd == -1)
		return -errno;
	for (size_t off = 0; off < b->len;) {
		ssize_t n = write(fd, b->data + off, b->len - off);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			rc = -errno;
			goto fail;
		}
		off += (size_t)n;
	}
	if (fsync(fd) == -1) {
		rc = -errno;
		goto fail;
	}
	if (close(fd) == -1) {
		fd = -1;
		rc = -errno;
		goto fail;
	}
	fd = -1;
	if (rename(tmp, path) == -1) {
		rc = -errno;
		goto fail;
	}
sync_dir:;
	int dfd = open(t->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd != -1) {
		fsync(dfd); /* best effort: some filesystems refuse a directory fsync */
		close(dfd);
	}
	return 0;
fail:
	if (fd != -1)
		close(fd);
	unlink(tmp);
	return rc;
}

static int roster_write(const struct im_table *t, const struct acct *a)
{
	struct sbuf b = SBUF_INIT;
	char name[sizeof(a->name) + 8];
	int rc = sbuf_puts(&b, "tether-im-roster 1");
	rc = rc ? rc : put_cstr(&b, a->bare);
	rc = rc ? rc : sbuf_printf(&b, "\nver %llu\n", (unsigned long long)a->ver);
	for (size_t i = 0; i < a->n && !rc; i++) {
		const struct im_item *it = &a->items[i];
		rc = sbuf_printf(&b, "item %u %u", it->state, it->visible);
		rc = rc ? rc : put_cstr(&b, it->jid);
		rc = rc ? rc : put_cstr(&b, it->name);
		rc = rc ? rc : put_cstr(&b, it->pending);
		rc = rc ? rc : sbuf_printf(&b, " %zu", it->ngroups);
		for (size_t g = 0; g < it->ngroups && !rc; g++)
			rc = put_cstr(&b, it->groups[g]);
		rc = rc ? rc : sbuf_puts(&b, "\n");
	}
	for (size_t i = 0; i < a->nblocked && !rc; i++) {
		rc = sbuf_puts(&b, "block");
		rc = rc ? rc : put_cstr(&b, a->blocked[i]);
		rc = rc ? rc : sbuf_puts(&b, "\n");
	}
	snprintf(name, sizeof(name), "%s.roster", a->name);
	if (!rc)
		rc = file_put(t, name, &b);
	sbuf_free(&b);
	return rc;
}

static int offline_write(const struct im_table *t, const struct acct *a)
{
	struct sbuf b = SBUF_INIT;
	char name[sizeof(a->name) + 8];
	int rc = 0;
	snprintf(name, sizeof(name), "%s.offline", a->name);
	if (!a->noff)
		return file_put(t, name, NULL);
	rc = sbuf_puts(&b, "tether-im-offline 1");
	rc = rc ? rc : put_cstr(&b, a->bare);
	rc = rc ? rc : sbuf_puts(&b, "\n");
	for (size_t i = 0; i < a->noff && !rc; i++) {
		rc = sbuf_puts(&b, "msg");
		rc = rc ? rc : put_str(&b, a->off[i].data, a->off[i].len);
		rc = rc ? rc : sbuf_puts(&b, "\n");
	}
	if (!rc)
		rc = file_put(t, name, &b);
	sbuf_free(&b);
	return rc;
}

static int push_off(struct acct *a, char *data, size_t len)
{
	if (a->noff == a->offcap) {
		size_t cap = a->offcap ? a->offcap * 2 : 8;
		struct off_msg *n = realloc(a->off, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		a->off = n;
		a->offcap = cap;
	}
	a->off[a->noff].data = data;
	a->off[a->noff++].len = len;
	return 0;
}

static int push_block(struct acct *a, char *jid)
{
	if (a->nblocked == a->capblocked) {
		size_t cap = a->capblocked ? a->capblocked * 2 : 8;
		char **n = realloc(a->blocked, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		a->blocked = n;
		a->capblocked = cap;
	}
	a->blocked[a->nblocked++] = jid;
	return 0;
}

/* Parses one "item" line (after the keyword) into a new item of <a>. */
static int parse_item(struct acct *a, char *save)
{
	char *tok[5];
	for (int i = 0; i < 5; i++)
		if (!(tok[i] = strtok_r(NULL, " ", &save)))
			return -EINVAL;
	char *end;
	unsigned long state = strtoul(tok[0], &end, 10);
	if (*end || state >= SUB_STATE_COUNT || (strcmp(tok[1], "0") && strcmp(tok[1], "1")))
		return -EINVAL;
	char *jid;
	int rc = get_str(tok[2], &jid, NULL);
	if (rc || !jid || find_item(a, jid)) {
		free(jid);
		return rc ? rc : -EINVAL;
	}
	struct im_item *it = add_item(a, jid);
	free(jid);
	if (!it)
		return -ENOMEM;
	it->state = (uint8_t)state;
	it->visible = tok[1][0] == '1';
	if ((rc = get_str(tok[3], &it->name, NULL)) || (rc = get_str(tok[4], &it->pending, NULL)))
		return rc;
	char *ng = strtok_r(NULL, " ", &save);
	unsigned long n = ng ? strtoul(ng, &end, 10) : ULONG_MAX;
	if (!ng || *end || n > IM_GROUPS_MAX)
		return -EINVAL;
	if (n && !(it->groups = calloc(n, sizeof(char *))))
		return -ENOMEM;
	for (size_t g = 0; g < n; g++) {
		if ((rc = get_str(strtok_r(NULL, " ", &save), &it->groups[g], NULL)))
			return rc;
		it->ngroups = g + 1;
		if (!it->groups[g])
			return -EINVAL;
	}
	return strtok_r(NULL, " ", &save) ? -EINVAL : 0;
}

/* Loads one file of <dir>/im. */
static int load_file(struct im_table *t, const char *name, char *err, size_t errlen)
{
	char path[PATH_MAX];
	char *line = NULL, *save, *bare = NULL;
	size_t cap = 0;
	unsigned lineno = 0;
	int rc = 0, roster = 0;
	struct acct *a = NULL;
	if (snprintf(path, sizeof(path), "%s/%s", t->dir, name) >= (int)sizeof(path)) {
		snprintf(err, errlen, "%s: path too long", t->dir);
		return -ENAMETOOLONG;
	}
	FILE *f = fopen(path, "re");
	if (!f) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -errno;
	}
	while (getline(&line, &cap, f) != -1) {
		lineno++;
		line[strcspn(line, "\n")] = 0;
		char *kw = strtok_r(line, " ", &save);
		if (!kw)
			continue;
		if (lineno == 1) {
			roster = !strcmp(kw, "tether-im-roster");
			char *v = strtok_r(NULL, " ", &save);
			if ((!roster && strcmp(kw, "tether-im-offline")) || !v || strcmp(v, "1") ||
			    get_str(strtok_r(NULL, " ", &save), &bare, NULL) || !bare ||
			    !(a = acct_get(t, bare))) {
				rc = -EINVAL;
				break;
			}
		} else if (roster && !strcmp(kw, "ver")) {
			char *v = strtok_r(NULL, " ", &save), *end;
			a->ver = v ? strtoull(v, &end, 10) : 0;
			if (!v || *end) {
				rc = -EINVAL;
				break;
			}
		} else if (roster && !strcmp(kw, "item")) {
			if ((rc = parse_item(a, save)))
				break;
		} else if (roster && !strcmp(kw, "block")) {
			char *j;
			if ((rc = get_str(strtok_r(NULL, " ", &save), &j, NULL)) || !j ||
			    (rc = push_block(a, j))) {
				free(j);
				rc = rc ? rc : -EINVAL;
				break;
			}
		} else if (!roster && !strcmp(kw, "msg")) {
			char *data;
			size_t len;
			if ((rc = get_str(strtok_r(NULL, " ", &save), &data, &len)) || !data ||
			    (rc = push_off(a, data, len))) {
				free(data);
				rc = rc ? rc : -EINVAL;
				break;
			}
		} else {
			rc = -EINVAL;
			break;
		}
	}
	if (!rc && (ferror(f) || !a))
		rc = ferror(f) ? -EIO : -EINVAL;
	if (rc)
		snprintf(err, errlen, "%s:%u: %s", path, lineno,
			 rc == -ENOMEM ? "out of memory" : "malformed IM record");
	free(line);
	free(bare);
	fclose(f);
	return rc;
}

static int ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);
	return a > b && !strcmp(s + a - b, suffix);
}

struct im_table *im_table_open(const char *dir, char *err, size_t errlen)
{
	struct im_table *t = calloc(1, sizeof(*t));
	if (!t) {
		snprintf(err, errlen, "store: out of memory");
		return NULL;
	}
	if (snprintf(t->dir, sizeof(t->dir), "%s/" IM_SUBDIR, dir) >= (int)sizeof(t->dir)) {
		snprintf(err, errlen, "store: %s: path too long", dir);
		free(t);
		return NULL;
	}
	pthread_mutex_init(&t->lock, NULL);
	DIR *d = opendir(t->dir);
	if (!d && errno == ENOENT)
		return t; /* created at the first write: a store without IM data has no im/ */
	if (!d) {
		snprintf(err, errlen, "store: %s: %s", t->dir, strerror(errno));
		im_table_free(t);
		return NULL;
	}
	struct dirent *e;
	while ((e = readdir(d))) {
		/* Leftover temporary files (a crash before rename) end in
		 * .XXXXXX and are not loaded. */
		if (!ends_with(e->d_name, ".roster") && !ends_with(e->d_name, ".offline"))
			continue;
		if (load_file(t, e->d_name, err, errlen)) {
			closedir(d);
			im_table_free(t);
			return NULL;
		}
	}
	closedir(d);
	return t;
}

void im_table_free(struct im_table *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < IM_BUCKETS; i++)
		for (struct acct *a = t->b[i], *next; a; a = next) {
			next = a->next;
			acct_free(a);
		}
	pthread_mutex_destroy(&t->lock);
	free(t);
}

/* ---- operations ------------------------------------------------------------ */

int im_table_read(struct im_table *t, const char *bare, uint64_t *ver, store_im_item_fn *fn,
		  void *ud)
{
	pthread_mutex_lock(&t->lock);
	struct acct *a = acct_find(t, bare);
	*ver = a ? a->ver : 0;
	for (size_t i = 0; a && i < a->n; i++)
		fn(ud, &a->items[i]);
	pthread_mutex_unlock(&t->lock);
	return 0;
}

static int replace_groups(struct im_item *dst, const struct im_item *src)
{
	struct im_item tmp = { 0 };
	tmp.ngroups = src->ngroups;
	tmp.groups = src->groups;
	tmp.name = src->name;
	struct im_item c;
	if (im_item_copy(&c, &tmp))
		return -ENOMEM;
	for (size_t i = 0; i < dst->ngroups; i++)
		free(dst->groups[i]);
	free(dst->groups);
	free(dst->name);
	dst->groups = c.groups;
	dst->ngroups = c.ngroups;
	dst->name = c.name;
	return 0;
}

int im_table_set(struct im_table *t, const char *bare, const struct im_item *it,
		 unsigned max_items, struct im_change *out)
{
	struct snap s = { 0 };
	int rc;
	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&t->lock);
	struct acct *a = acct_get(t, bare);
	if (!a || (rc = snap_take(a, &s))) {
		rc = -ENOMEM;
		goto out;
	}
	struct im_item *cur = find_item(a, it->jid);
	if ((!cur || !cur->visible) && count_visible(a) >= max_items) {
		rc = -EDQUOT;
		goto out;
	}
	if ((!cur && !(cur = add_item(a, it->jid))) || replace_groups(cur, it)) {
		rc = -ENOMEM;
		goto undo;
	}
	cur->visible = 1;
	out->pushed = 1; /* a set is always pushed (RFC 6121 §2.3.2), changed or not */
	out->ver = ++a->ver;
	if ((rc = im_item_copy(&out->item, cur)) || (rc = roster_write(t, a)))
		goto undo;
	goto out;
undo:
	snap_restore(a, &s);
	im_change_clear(out);
out:
	snap_drop(&s);
	pthread_mutex_unlock(&t->lock);
	return rc;
}

int im_table_remove(struct im_table *t, const char *bare, const char *jid, struct im_change *out,
		    struct im_change *contact_out)
{
	struct snap s = { 0 }, cs = { 0 };
	int rc = 0;
	memset(out, 0, sizeof(*out));
	memset(contact_out, 0, sizeof(*contact_out));
	pthread_mutex_lock(&t->lock);
	struct acct *a = acct_find(t, bare);
	struct im_item *cur = find_item(a, jid);
	if (!cur || !cur->visible) {
		rc = -ENOENT;
		goto out;
	}
	struct acct *c = strcmp(bare, jid) ? acct_find(t, jid) : NULL;
	if (snap_take(a, &s) || (c && snap_take(c, &cs))) {
		rc = -ENOMEM;
		goto out;
	}
	enum sub_state old = cur->state;
	if ((rc = im_item_copy(&out->item, cur)))
		goto undo;
	out->removed = out->pushed = 1;
	del_item(a, cur);
	out->ver = ++a->ver;
	/* RFC 6121 §2.5.2: the removal sends unsubscribe if the user had or
	 * asked for the contact's presence, unsubscribed if the contact had
	 * or asked for the user's; the contact's side takes them in. */
	struct im_item *ci = find_item(c, bare);
	if (ci) {
		int was_vis = ci->visible;
		enum sub_state cwas = ci->state, st = cwas;
		if (sub_has_to(old) || sub_asks(old))
			st = sub_inbound(st, SUB_UNSUBSCRIBE).next;
		if (sub_has_from(old) || sub_pending_in(old))
			st = sub_inbound(st, SUB_UNSUBSCRIBED).next;
		set_state(ci, st);
		collect(c, bare);
		if ((rc = change_finish(c, bare, was_vis, cwas, contact_out)) || (rc = roster_write(t, c)))
			goto undo;
	}
	if ((rc = roster_write(t, a)))
		goto undo;
	goto out;
undo:
	snap_restore(a, &s);
	if (c)
		snap_restore(c, &cs);
	im_change_clear(out);
	im_change_clear(contact_out);
	if (c)
		roster_write(t, c); /* best effort: put the contact's file back as it was */
out:
	snap_drop(&s);
	snap_drop(&cs);
	pthread_mutex_unlock(&t->lock);
	return rc;
}

int im_table_sub(struct im_table *t, const char *user, const char *contact, int contact_exists,
		 enum sub_type type, const char *stanza, unsigned max_items,
		 struct im_sub_result *out)
{
	struct snap us = { 0 }, cs = { 0 };
	struct acct *c = NULL;
	int rc = 0;
	memset(out, 0, sizeof(*out));
	out->contact_exists = contact_exists;
	pthread_mutex_lock(&t->lock);
	struct acct *u = acct_get(t, user);
	if (!u || snap_take(u, &us)) {
		rc = -ENOMEM;
		goto out;
	}
	struct im_item *ui = find_item(u, contact);
	int was_vis = ui && ui->visible;
	enum sub_state was = ui ? ui->state : SUB_NONE;
	out->out = sub_outbound(was, type);
	/* A request puts the contact in the roster (§3.1.2); an approval of
	 * a request the user never put there too (§3.1.5). */
	int show = type == SUB_SUBSCRIBE || (type == SUB_SUBSCRIBED && out->out.deliver);
	if (show && !was_vis && count_visible(u) >= max_items) {
		rc = -EDQUOT;
		goto out;
	}
	if (!ui && (show || out->out.next != SUB_NONE) && !(ui = add_item(u, contact))) {
		rc = -ENOMEM;
		goto undo;
	}
	if (ui) {
		set_state(ui, out->out.next);
		ui->visible |= show;
	}
	if (out->out.deliver && contact_exists && strcmp(user, contact)) {
		if (!(c = acct_get(t, contact)) || snap_take(c, &cs)) {
			c = NULL;
			rc = -ENOMEM;
			goto undo;
		}
		struct im_item *ci = find_item(c, user);
		int cwas_vis = ci && ci->visible;
		enum sub_state cwas = ci ? ci->state : SUB_NONE;
		out->in = sub_inbound(cwas, type);
		if (out->in.auto_subscribed) {
			/* §3.1.3: approved already, so the contact's server answers
			 * <subscribed/> and the user's side takes it in. */
			out->auto_subscribed = 1;
			if (ui)
				set_state(ui, sub_inbound(ui->state, SUB_SUBSCRIBED).next);
		} else {
			if (!ci && out->in.next != SUB_NONE && !(ci = add_item(c, user))) {
				rc = -ENOMEM;
				goto undo;
			}
			if (ci) {
				set_state(ci, out->in.next);
				if (type == SUB_SUBSCRIBE && out->in.deliver && stanza) {
					free(ci->pending);
					if (!(ci->pending = strdup(stanza))) {
						rc = -ENOMEM;
						goto undo;
					}
				}
			}
			collect(c, user);
		}
		if ((rc = change_finish(c, user, cwas_vis, cwas, &out->contact)))
			goto undo;
	} else if (!contact_exists && type == SUB_SUBSCRIBE && ui) {
		/* §3.1.3: no such account: its server answers unsubscribed. */
		set_state(ui, sub_inbound(ui->state, SUB_UNSUBSCRIBED).next);
	}
	collect(u, contact);
	if ((rc = change_finish(u, contact, was_vis, was, &out->user)) || (rc = roster_write(t, u)) ||
	    (c && (rc = roster_write(t, c))))
		goto undo;
	goto out;
undo:
	snap_restore(u, &us);
	if (c)
		snap_restore(c, &cs);
	im_sub_result_clear(out);
	roster_write(t, u); /* best effort: the files as they were */
	if (c)
		roster_write(t, c);
out:
	snap_drop(&us);
	snap_drop(&cs);
	pthread_mutex_unlock(&t->lock);
	return rc;
}

int im_table_offline_add(struct im_table *t, const char *bare, const char *data, size_t len,
			 unsigned max)
{
	int rc;
	pthread_mutex_lock(&t->lock);
	struct acct *a = acct_get(t, bare);
	char *copy = a ? malloc(len + 1) : NULL;
	if (!copy) {
		rc = -ENOMEM;
		goto out;
	}
	if (a->noff >= max) {
		free(copy);
		rc = -EDQUOT;
		goto out;
	}
	memcpy(copy, data, len);
	copy[len] = 0;
	if ((rc = push_off(a, copy, len))) {
		free(copy);
		goto out;
	}
	if ((rc = offline_write(t, a)))
		free(a->off[--a->noff].data);
out:
	pthread_mutex_unlock(&t->lock);
	return rc;
}

int im_table_offline_take(struct im_table *t, const char *bare, store_im_msg_fn *fn, void *ud)
{
	int rc = 0;
	pthread_mutex_lock(&t->lock);
	struct acct *a = acct_find(t, bare);
	if (!a || !a->noff)
		goto out;
	struct off_msg *m = a->off;
	size_t n = a->noff, cap = a->offcap;
	a->off = NULL;
	a->noff = a->offcap = 0;
	if ((rc = offline_write(t, a))) {
		a->off = m;
		a->noff = n;
		a->offcap = cap;
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		fn(ud, m[i].data, m[i].len);
		free(m[i].data);
	}
	free(m);
out:
	pthread_mutex_unlock(&t->lock);
	return rc;
}

int im_table_blocks(struct im_table *t, const char *bare, store_im_jid_fn *fn, void *ud)
{
	pthread_mutex_lock(&t->lock);
	struct acct *a = acct_find(t, bare);
	for (size_t i = 0; a && i < a->nblocked; i++)
		fn(ud, a->blocked[i]);
	pthread_mutex_unlock(&t->lock);
	return 0;
}

int im_table_block(struct im_table *t, const char *bare, enum im_block_op op, char *const *jids,
		   size_t n)
{
	int rc = 0;
	char **fresh = NULL, **added = NULL;
	size_t nfresh = 0, nadded = 0;
	pthread_mutex_lock(&t->lock);
	struct acct *a = acct_get(t, bare);
	if (!a) {
		rc = -ENOMEM;
		goto out;
	}
	/* The new list is built beside the old one (sharing its strings), so
	 * a write the disk refuses leaves the old one as it was. */
	size_t cap = (op == IM_BLOCK_CLEAR ? 0 : a->nblocked) + (op == IM_BLOCK_ADD ? n : 0);
	if ((cap && !(fresh = calloc(cap, sizeof(*fresh)))) ||
	    (op == IM_BLOCK_ADD && n && !(added = calloc(n, sizeof(*added))))) {
		rc = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; op != IM_BLOCK_CLEAR && i < a->nblocked; i++) {
		int drop = 0;
		for (size_t j = 0; op == IM_BLOCK_REMOVE && j < n && !drop; j++)
			drop = !strcmp(a->blocked[i], jids[j]);
		if (!drop)
			fresh[nfresh++] = a->blocked[i];
	}
	for (size_t i = 0; op == IM_BLOCK_ADD && i < n; i++) {
		int dup = 0;
		for (size_t j = 0; j < nfresh && !dup; j++)
			dup = !strcmp(fresh[j], jids[i]);
		if (dup)
			continue;
		if (nfresh >= IM_BLOCKLIST_MAX) {
			rc = -EDQUOT;
			goto out;
		}
		if (!(added[nadded] = strdup(jids[i]))) {
			rc = -ENOMEM;
			goto out;
		}
		fresh[nfresh++] = added[nadded++];
	}
	char **old = a->blocked;
	size_t nold = a->nblocked, oldcap = a->capblocked;
	a->blocked = fresh;
	a->nblocked = nfresh;
	a->capblocked = cap;
	if ((rc = roster_write(t, a))) {
		a->blocked = old;
		a->nblocked = nold;
		a->capblocked = oldcap;
		goto out;
	}
	/* In: free the strings that left the list, and the old array. */
	for (size_t i = 0; i < nold; i++) {
		int kept = 0;
		for (size_t j = 0; j < nfresh && !kept; j++)
			kept = fresh[j] == old[i];
		if (!kept)
			free(old[i]);
	}
	free(old);
	fresh = NULL;
	nadded = 0;
out:
	for (size_t i = 0; i < nadded; i++)
		free(added[i]);
	free(added);
	free(fresh);
	pthread_mutex_unlock(&t->lock);
	return rc;
}
