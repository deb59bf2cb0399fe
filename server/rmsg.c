/* server/rmsg.c - a routed stanza: serialized bytes in a refcounted buffer. */
#include "tether/rmsg.h"

#include <stdlib.h>
#include <string.h>

struct rmsg *rmsg_new(enum rmsg_kind kind, const char *data, size_t len, const char *from,
		      const char *to, const char *id, const char *type)
{
	const char *s[4] = { from ? from : "", to ? to : "", id ? id : "", type ? type : "" };
	size_t sl[4], extra = 0;
	for (int i = 0; i < 4; i++)
		extra += (sl[i] = strlen(s[i])) + 1;
	/* One allocation per routed stanza, whatever its fan-out. */
	struct rmsg *m = malloc(sizeof(*m) + len + 1 + extra);
	if (!m)
		return NULL;
	atomic_init(&m->refs, 1);
	m->kind = kind;
	m->len = len;
	memcpy(m->data, data, len);
	m->data[len] = 0;
	char *p = m->data + len + 1;
	const char **dst[4] = { &m->from, &m->to, &m->id, &m->type };
	for (int i = 0; i < 4; i++) {
		memcpy(p, s[i], sl[i] + 1);
		*dst[i] = p;
		p += sl[i] + 1;
	}
	return m;
}

void rmsg_unref(struct rmsg *m)
{
	if (m && atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1)
		free(m);
}
