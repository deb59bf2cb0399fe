/* server/token.c - secret tokens (FAST, ISR): generation, encryption at rest, comparison. */
#include "tether/token.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/mem.h>
#include <sodium.h>

/* The sealed layout in token.h is spelled with literal sizes so the header
 * needs no libsodium; hold libsodium to them here. */
_Static_assert(crypto_secretbox_NONCEBYTES == 24, "TOKEN_SEALED_LEN assumes a 24-byte nonce");
_Static_assert(crypto_secretbox_MACBYTES == 16, "TOKEN_SEALED_LEN assumes a 16-byte MAC");
_Static_assert(crypto_secretbox_KEYBYTES == TOKEN_KEY_LEN, "TOKEN_KEY_LEN != secretbox key size");
_Static_assert(sodium_base64_ENCODED_LEN(32, sodium_base64_VARIANT_URLSAFE_NO_PADDING) ==
	       TOKEN_LEN + 1, "TOKEN_LEN != base64url(32 bytes)");

#define TOKEN_RAW_LEN 32 /* 256 bits: twice the draft's 128-bit floor */

void token_new(char out[TOKEN_LEN + 1])
{
	uint8_t raw[TOKEN_RAW_LEN];

	randombytes_buf(raw, sizeof(raw));
	sodium_bin2base64(out, TOKEN_LEN + 1, raw, sizeof(raw),
			  sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	sodium_memzero(raw, sizeof(raw));
}

/* Layout: nonce || secretbox(token). The nonce is random per seal: 192 bits
 * make collisions under one key negligible, and it means two seals of the
 * same token are unlinkable in the store. */
int token_seal(const uint8_t key[TOKEN_KEY_LEN], const char *token,
	       uint8_t out[TOKEN_SEALED_LEN])
{
	uint8_t *nonce = out, *box = out + crypto_secretbox_NONCEBYTES;

	if (!token || strnlen(token, TOKEN_LEN + 1) != TOKEN_LEN)
		return -EINVAL;
	randombytes_buf(nonce, crypto_secretbox_NONCEBYTES);
	if (crypto_secretbox_easy(box, (const uint8_t *)token, TOKEN_LEN, nonce, key) != 0)
		return -EINVAL; /* cannot happen for this length; don't hand out half a box */
	return 0;
}

/* Decrypts straight into <out>, so no copy of the plaintext is left behind
 * here; libsodium checks the MAC before it writes any plaintext. A token
 * that authenticates but holds a NUL (never sealed by token_seal) is refused
 * too, so callers can trust strlen(out) == TOKEN_LEN. */
int token_open(const uint8_t key[TOKEN_KEY_LEN], const uint8_t in[TOKEN_SEALED_LEN],
	       char out[TOKEN_LEN + 1])
{
	const uint8_t *nonce = in, *box = in + crypto_secretbox_NONCEBYTES;

	if (crypto_secretbox_open_easy((uint8_t *)out, box, TOKEN_LEN + crypto_secretbox_MACBYTES,
				       nonce, key) != 0 ||
	    memchr(out, 0, TOKEN_LEN) != NULL) {
		sodium_memzero(out, TOKEN_LEN + 1);
		return -EBADMSG;
	}
	out[TOKEN_LEN] = '\0';
	return 0;
}

/* CRYPTO_memcmp ORs the XOR of every byte pair: no early exit, no branch on
 * the data. Length 0 compares equal (both sides are the same empty secret). */
int secret_eq(const void *a, const void *b, size_t len)
{
	return CRYPTO_memcmp(a, b, len) == 0;
}

static void set_err(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* Reads the key from an open <fd>. The file must be a regular file of exactly
 * TOKEN_KEY_LEN bytes: a truncated or padded key file means someone edited or
 * damaged it, and silently using (or replacing) it would make every sealed
 * token unreadable. Returns 0, or -errno with <err> set. */
static int read_key(int fd, const char *path, uint8_t key[TOKEN_KEY_LEN], char *err, size_t errlen)
{
	struct stat st;
	size_t got = 0;
	uint8_t extra;
	ssize_t n;

	if (fstat(fd, &st) == -1) {
		int e = errno;
		set_err(err, errlen, "token key %s: %s", path, strerror(e));
		return -e;
	}
	if (!S_ISREG(st.st_mode)) {
		set_err(err, errlen, "token key %s: not a regular file", path);
		return -EINVAL;
	}
	if (st.st_size != TOKEN_KEY_LEN) {
		set_err(err, errlen, "token key %s: %lld bytes, expected exactly %d", path,
			(long long)st.st_size, TOKEN_KEY_LEN);
		return -EINVAL;
	}
	while (got < TOKEN_KEY_LEN) {
		n = read(fd, key + got, TOKEN_KEY_LEN - got);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			int e = errno;
			set_err(err, errlen, "token key %s: %s", path, strerror(e));
			sodium_memzero(key, TOKEN_KEY_LEN);
			return -e;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	/* fstat's size is checked above; this catches a file that changed size
	 * between the two (someone writing it in place). */
	do
		n = read(fd, &extra, 1);
	while (n == -1 && errno == EINTR);
	if (got != TOKEN_KEY_LEN || n != 0) {
		set_err(err, errlen, "token key %s: size changed while reading, expected exactly %d bytes",
			path, TOKEN_KEY_LEN);
		sodium_memzero(key, TOKEN_KEY_LEN);
		sodium_memzero(&extra, sizeof(extra));
		return -EINVAL;
	}
	return 0;
}

static int write_all(int fd, const uint8_t *p, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* fsyncs the directory holding <path>, so the rename that created the key is
 * on disk before any token sealed under it is. */
static int sync_dir(const char *path)
{
	char dir[PATH_MAX];
	const char *slash = strrchr(path, '/');
	int fd, rc = 0;

	if (!slash) {
		strcpy(dir, ".");
	} else if (slash == path) {
		strcpy(dir, "/");
	} else {
		size_t n = (size_t)(slash - path);
		if (n >= sizeof(dir))
			return -ENAMETOOLONG;
		memcpy(dir, path, n);
		dir[n] = '\0';
	}
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd == -1)
		return -errno;
	if (fsync(fd) == -1)
		rc = -errno;
	close(fd);
	return rc;
}

/* Creates <path> holding a fresh key: a temporary in the same directory
 * (same filesystem, so the rename is atomic), O_EXCL and 0600 from the first
 * byte, written, fsynced, then renamed into place without replacing anything
 * (RENAME_NOREPLACE): if another process created the key meanwhile, its key
 * wins and we return -EEXIST so the caller loads it — two processes must
 * never end up sealing under two different keys. Returns 0, -EEXIST, or
 * -errno with <err> set. */
static int create_key(const char *path, uint8_t key[TOKEN_KEY_LEN], char *err, size_t errlen)
{
	char tmp[PATH_MAX];
	uint32_t rnd = randombytes_random();
	int fd, rc, n;

	n = snprintf(tmp, sizeof(tmp), "%s.tmp.%ld.%08x", path, (long)getpid(), rnd);
	if (n < 0 || (size_t)n >= sizeof(tmp)) {
		set_err(err, errlen, "token key %s: path too long", path);
		return -ENAMETOOLONG;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd == -1) {
		rc = -errno;
		set_err(err, errlen, "token key %s: creating %s: %s", path, tmp, strerror(-rc));
		return rc;
	}
	randombytes_buf(key, TOKEN_KEY_LEN);
	/* The umask can only take bits away from 0600; set it exactly anyway so
	 * the mode does not depend on the caller's umask. */
	if (fchmod(fd, 0600) == -1 || (rc = write_all(fd, key, TOKEN_KEY_LEN)) < 0 ||
	    fsync(fd) == -1) {
		rc = -errno;
		set_err(err, errlen, "token key %s: writing %s: %s", path, tmp, strerror(-rc));
		close(fd);
		goto fail;
	}
	if (close(fd) == -1) {
		rc = -errno;
		set_err(err, errlen, "token key %s: writing %s: %s", path, tmp, strerror(-rc));
		goto fail;
	}
	if (renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE) == -1) {
		rc = -errno;
		if (rc == -EEXIST)
			goto fail;
		/* Filesystems without RENAME_NOREPLACE: link() is the other
		 * no-clobber primitive. */
		if (rc == -EINVAL || rc == -ENOSYS) {
			if (link(tmp, path) == 0) {
				unlink(tmp);
				goto done;
			}
			rc = -errno;
			if (rc == -EEXIST)
				goto fail;
		}
		set_err(err, errlen, "token key %s: renaming %s: %s", path, tmp, strerror(-rc));
		goto fail;
	}
done:
	rc = sync_dir(path);
	if (rc < 0) {
		/* The key is in place and readable; only its durability is in
		 * doubt. Report it rather than run with a key that may vanish. */
		set_err(err, errlen, "token key %s: syncing directory: %s", path, strerror(-rc));
		sodium_memzero(key, TOKEN_KEY_LEN);
		return rc;
	}
	return 0;
fail:
	unlink(tmp);
	sodium_memzero(key, TOKEN_KEY_LEN);
	return rc;
}

int token_key_load(const char *path, uint8_t key[TOKEN_KEY_LEN], char *err, size_t errlen)
{
	int fd, rc = -ENOENT;

	if (err && errlen > 0)
		err[0] = '\0';
	/* Two rounds: load; if missing, create; if someone else created it
	 * first (-EEXIST), load theirs. */
	for (int round = 0; round < 2; round++) {
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd != -1) {
			rc = read_key(fd, path, key, err, errlen);
			close(fd);
			return rc;
		}
		if (errno != ENOENT) {
			rc = -errno;
			set_err(err, errlen, "token key %s: %s", path, strerror(-rc));
			return rc;
		}
		rc = create_key(path, key, err, errlen);
		if (rc != -EEXIST)
			return rc;
	}
	/* Only reached when the name exists for rename but not for open: a
	 * dangling symlink, or a key removed again while we created ours. */
	set_err(err, errlen, "token key %s: exists but cannot be opened (dangling symlink?)", path);
	return -EEXIST;
}
