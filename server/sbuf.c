/* server/sbuf.c - growable byte buffer with XML-escaping appenders. */
#include "tether/sbuf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

int (*sbuf_fail_hook)(size_t size);

/* Marks <b> failed (sticky: sbuf.h) and returns -ENOMEM. */
static int mark_failed(struct sbuf *b)
{
	b->failed = 1;
	return -ENOMEM;
}

/* sbuf_reserve() when the buffer must grow: out of line, so the check in
 * front of every append stays small enough to inline (serializing a
 * stanza is dozens of appends). */
__attribute__((noinline, cold)) static int sbuf_grow(struct sbuf *b, size_t need, size_t extra)
{
	if (need < extra)
		return mark_failed(b); /* wrapped around */
	size_t cap = b->cap ? b->cap : 64;
	while (cap < need)
		cap *= 2;
	if (sbuf_fail_hook && sbuf_fail_hook(cap))
		return mark_failed(b);
	char *p = realloc(b->data, cap);
	if (!p)
		return mark_failed(b);
	b->data = p;
	b->cap = cap;
	return 0;
}

int sbuf_reserve(struct sbuf *b, size_t extra)
{
	size_t need = b->len + extra + 1; /* +1: keep room for a NUL */
	if (need <= b->cap && need > extra)
		return 0;
	return sbuf_grow(b, need, extra);
}

int sbuf_append(struct sbuf *b, const void *p, size_t len)
{
	if (sbuf_reserve(b, len))
		return -ENOMEM;
	if (len)
		memcpy(b->data + b->len, p, len);
	b->len += len;
	b->data[b->len] = 0;
	return 0;
}

int sbuf_puts(struct sbuf *b, const char *s)
{
	return sbuf_append(b, s, strlen(s));
}

int sbuf_vprintf(struct sbuf *b, const char *fmt, va_list ap)
{
	va_list ap2;
	va_copy(ap2, ap);
	int n = vsnprintf(NULL, 0, fmt, ap2);
	va_end(ap2);
	if (n < 0)
		return mark_failed(b);
	if (sbuf_reserve(b, (size_t)n))
		return -ENOMEM;
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	b->len += (size_t)n;
	return 0;
}

int sbuf_printf(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int rc = sbuf_vprintf(b, fmt, ap);
	va_end(ap);
	return rc;
}

int sbuf_append_esc(struct sbuf *b, const char *s, size_t len)
{
	size_t start = 0;
	for (size_t i = 0; i < len; i++) {
		const char *ent;
		switch (s[i]) {
		case '&': ent = "&amp;"; break;
		case '<': ent = "&lt;"; break;
		case '>': ent = "&gt;"; break;
		case '\'': ent = "&apos;"; break;
		case '"': ent = "&quot;"; break;
		default: continue;
		}
		if (sbuf_append(b, s + start, i - start) || sbuf_puts(b, ent))
			return -ENOMEM;
		start = i + 1;
	}
	return sbuf_append(b, s + start, len - start);
}

int sbuf_cat(struct sbuf *b, const struct sbuf *src)
{
	int rc = sbuf_append(b, src->data, src->len);
	if (src->failed)
		return mark_failed(b);
	return rc;
}

int sbuf_puts_esc(struct sbuf *b, const char *s)
{
	return s ? sbuf_append_esc(b, s, strlen(s)) : 0;
}

void sbuf_consume(struct sbuf *b, size_t n)
{
	if (n >= b->len) {
		sbuf_reset(b);
		return;
	}
	memmove(b->data, b->data + n, b->len - n);
	b->len -= n;
	b->data[b->len] = 0;
}

void sbuf_free(struct sbuf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
	b->failed = 0;
}

void sbuf_free_secret(struct sbuf *b)
{
	if (b->data)
		sodium_memzero(b->data, b->cap);
	sbuf_free(b);
}
