/* server/rmsg.c - a routed stanza: serialized bytes in a refcounted buffer. */
#include "tether/rmsg.h"

#include <stdlib.h>
#include <string.h>

struct rmsg *rmsg_new(enum rmsg_kind kind, const char *data, size_t len)
{
	struct rmsg *m = malloc(sizeof(*m) + len + 1);
	if (!m)
		return NULL;
	atomic_init(&m->refs, 1);
	m->kind = kind;
	m->len = len;
	memcpy(m->data, data, len);
	m->data[len] = 0;
	return m;
}

void rmsg_unref(struct rmsg *m)
{
	if (m && atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1)
		free(m);
}
