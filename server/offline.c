/* server/offline.c - XEP-0160 offline messages: stored for an account with no available resource, handed back at its next initial presence.
 *
 * A stored record is the message as it will be delivered (with its delay
 * stamp already in, XEP-0203) behind three fields the routing needs if it
 * has to move again (sender, id, type: a message handed to a session that
 * ends unacknowledged is an orphan once more, deliver.c). The fields are
 * separated by \x01, which XML 1.0 does not allow in a document, so it
 * cannot occur in a JID, an attribute or a stanza. */
#include "tether/offline.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tether/deliver.h"
#include "tether/im.h"
#include "tether/log.h"
#include "tether/rmsg.h"
#include "tether/sbuf.h"
#include "tether/server.h"
#include "tether/sm.h"
#include "tether/store.h"
#include "tether/worker.h"

#define SEP '\x01'

int offline_wanted(const char *type)
{
	return im_chat_or_normal(type);
}

int offline_pack(const struct rmsg *m, const char *stanza, size_t len, struct sbuf *out)
{
	int rc = sbuf_puts(out, m->from);
	rc |= sbuf_append(out, "\x01", 1);
	rc |= sbuf_puts(out, m->id);
	rc |= sbuf_append(out, "\x01", 1);
	rc |= sbuf_puts(out, m->type);
	rc |= sbuf_append(out, "\x01", 1);
	rc |= sbuf_append(out, stanza, len);
	return rc ? -ENOMEM : 0;
}

struct rmsg *offline_unpack(const char *bare, const char *data, size_t len)
{
	char *f[3];
	const char *p = data, *end = data + len;
	for (int i = 0; i < 3; i++) {
		const char *q = memchr(p, SEP, (size_t)(end - p));
		if (!q)
			goto bad;
		f[i] = strndup(p, (size_t)(q - p));
		if (!f[i]) {
			while (i--)
				free(f[i]);
			return NULL;
		}
		p = q + 1;
	}
	struct rmsg *m = rmsg_new(RMSG_MESSAGE, p, (size_t)(end - p), f[0], bare, f[1], f[2]);
	for (int i = 0; i < 3; i++)
		free(f[i]);
	return m;
bad:
	log_warn("offline: malformed record for %s dropped", bare);
	return NULL;
}

struct offline_wait {
	struct worker *w;
	const char *domain;   /* the server's: lives as long as the worker */
	struct rmsg *m;
	enum stanza_err otherwise;
};

static void stored_free(void *ud)
{
	struct offline_wait *x = ud;
	rmsg_unref(x->m);
	free(x);
}

static void on_stored(void *ud, int err)
{
	struct offline_wait *x = ud;
	if (err) {
		log_info("offline: message from %s to %s not stored: %s", x->m->from, x->m->to,
			 strerror(-err));
		deliver_bounce(x->w, x->domain, x->m,
			       err == -EDQUOT ? STE_RESOURCE_CONSTRAINT : x->otherwise);
	}
	stored_free(x);
}

void offline_store(struct worker *w, const char *domain, const char *bare, struct rmsg *m,
		   uint64_t stamp_ms, enum stanza_err otherwise)
{
	struct sbuf delayed = SBUF_INIT, rec = SBUF_INIT;
	struct offline_wait *x = NULL;
	struct store_op *op = NULL;
	int rc = stamp_ms == OFFLINE_STAMPED ? sbuf_append(&delayed, m->data, m->len)
					     : sm_add_delay(m->data, m->len, domain, stamp_ms, &delayed);
	if (w->sh && !rc && !offline_pack(m, delayed.data, delayed.len, &rec) &&
	    (x = malloc(sizeof(*x)))) {
		x->w = w;
		x->domain = domain;
		x->m = m;
		x->otherwise = otherwise;
		op = store_im_offline_add_async(w->sh, bare, rec.data, rec.len,
						w->srv->cfg.im_max_offline, on_stored, x);
	}
	sbuf_free(&delayed);
	sbuf_free(&rec);
	if (op) {
		store_im_own_ud(op, stored_free);
		return;
	}
	free(x);
	deliver_bounce(w, domain, m, otherwise);
	rmsg_unref(m);
}
