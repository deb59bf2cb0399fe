/* include/tether/rmsg.h - a routed stanza: serialized bytes in a refcounted buffer. */
#ifndef TETHER_RMSG_H
#define TETHER_RMSG_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

enum rmsg_kind {
	RMSG_MESSAGE = 0,
	RMSG_PRESENCE,
	RMSG_IQ,
};

/* One stanza on its way to one or more sessions, possibly on other workers.
 * Immutable once made; the sender holds one reference per hand-off, each
 * receiver drops one. <data> is the stanza as written to the client stream
 * (jabber:client default namespace). The addressing attributes are kept
 * beside it, so a stanza whose recipient is gone can be re-routed or
 * bounced without parsing it again. */
struct rmsg {
	atomic_uint refs;
	enum rmsg_kind kind;
	size_t len;
	const char *from;  /* sender's full JID (stamped), "" if none */
	const char *to;    /* 'to' as the sender wrote it, "" if none */
	const char *id;    /* "" if none */
	const char *type;  /* "" if none */
	char data[];       /* the stanza, NUL-terminated, then the four strings */
};

/* Copies <len> bytes into a new message with one reference; NULL strings
 * become "". Returns NULL on OOM. */
struct rmsg *rmsg_new(enum rmsg_kind kind, const char *data, size_t len, const char *from,
		      const char *to, const char *id, const char *type);

static inline struct rmsg *rmsg_ref(struct rmsg *m)
{
	atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
	return m;
}

/* Drops a reference; frees on the last one. NULL is fine. */
void rmsg_unref(struct rmsg *m);

#endif /* TETHER_RMSG_H */
