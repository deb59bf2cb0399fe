/* include/tether/sbuf.h - growable byte buffer with XML-escaping appenders. */
#ifndef TETHER_SBUF_H
#define TETHER_SBUF_H

#include <stdarg.h>
#include <stddef.h>

/* A growable buffer. Zero-initialised (SBUF_INIT) is an empty, valid buffer.
 * <data> is always NUL-terminated when len > 0 or cap > 0, so it can be used
 * as a C string if no NUL was appended. */
struct sbuf {
	char *data;
	size_t len;
	size_t cap;
};

#define SBUF_INIT { NULL, 0, 0 }

/* Makes room for <extra> more bytes. Returns 0, or -ENOMEM (buffer untouched). */
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

/* Empties the buffer, keeping its memory. */
static inline void sbuf_reset(struct sbuf *b) { b->len = 0; if (b->data) b->data[0] = 0; }

/* Releases the memory; the buffer is empty and valid afterwards. */
void sbuf_free(struct sbuf *b);

/* Wipes the contents with sodium_memzero, then frees (for secrets). */
void sbuf_free_secret(struct sbuf *b);

#endif /* TETHER_SBUF_H */
