/* include/tether/sbuf.h - growable byte buffer with XML-escaping appenders. */
#ifndef TETHER_SBUF_H
#define TETHER_SBUF_H

#include <stdarg.h>
#include <stddef.h>

/* A growable buffer. Zero-initialised (SBUF_INIT) is an empty, valid buffer.
 * <data> is always NUL-terminated when len > 0 or cap > 0, so it can be used
 * as a C string if no NUL was appended.
 *
 * <failed> is sticky: set by any append that could not allocate, and
 * cleared only by sbuf_reset() and sbuf_free(). A writer may then make a
 * run of appends without checking each one, and check once where the
 * bytes leave (c2s_send_out): a buffer with <failed> set holds XML with a
 * hole in it, which must never be sent. */
struct sbuf {
	char *data;
	size_t len;
	size_t cap;
	int failed;    /* an append since the last reset failed (ENOMEM) */
};

#define SBUF_INIT { NULL, 0, 0, 0 }

/* Tests only: when set, called with the size of every allocation the
 * buffers make; nonzero makes that allocation fail as if memory were out.
 * NULL (always, outside tests). */
extern int (*sbuf_fail_hook)(size_t size);

/* Makes room for <extra> more bytes. Returns 0, or -ENOMEM (contents
 * untouched, <failed> set). Every appender below fails the same way. */
int sbuf_reserve(struct sbuf *b, size_t extra);

/* Appends <len> bytes of <p>. Returns 0 or -ENOMEM. */
int sbuf_append(struct sbuf *b, const void *p, size_t len);

/* Appends the C string <s>. Returns 0 or -ENOMEM. */
int sbuf_puts(struct sbuf *b, const char *s);

/* Appends printf-formatted text. Returns 0 or -ENOMEM. */
int sbuf_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int sbuf_vprintf(struct sbuf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

/* Appends <len> bytes of <s> escaped for XML text or attribute values
 * (& < > ' " become entities). Returns 0 or -ENOMEM. */
int sbuf_append_esc(struct sbuf *b, const char *s, size_t len);

/* Same for a C string; NULL appends nothing. */
int sbuf_puts_esc(struct sbuf *b, const char *s);

/* Drops the first <n> bytes (memmove). */
void sbuf_consume(struct sbuf *b, size_t n);

/* Appends <src>'s bytes to <b>. When <src> had failed, so has <b>: what it
 * holds from <src> is not all that was written there. Returns 0 or -ENOMEM. */
int sbuf_cat(struct sbuf *b, const struct sbuf *src);

/* Empties the buffer, keeping its memory; clears <failed>. */
static inline void sbuf_reset(struct sbuf *b)
{
	b->len = 0;
	b->failed = 0;
	if (b->data)
		b->data[0] = 0;
}

/* Releases the memory; the buffer is empty and valid afterwards (and
 * <failed> is clear). */
void sbuf_free(struct sbuf *b);

/* Wipes the contents with sodium_memzero, then frees (for secrets). */
void sbuf_free_secret(struct sbuf *b);

#endif /* TETHER_SBUF_H */
