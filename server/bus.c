/* server/bus.c - session addresses, and deliver/kick/moved to a session wherever it lives.
 *
 * The one place that decides where a session is: on this worker (carried
 * out at once: no allocation, no wake-up), on another worker of this node
 * (its inbox plus a MSG_RING wake-up, worker.c), or on another node
 * (kick and moved: that node's inbox in the store, store_node_notice;
 * deliveries: refused until the cluster routes them). Callers build one struct bus_addr
 * and never look at which case it is. */
#include "tether/bus.h"

#include <errno.h>

#include "tether/rmsg.h"
#include "tether/store.h"
#include "tether/worker.h"

/* Routes <it> to the worker that owns it->to. The item is the caller's;
 * its message reference is passed on, or on error still the caller's. */
static int post(struct worker *w, const struct bus_item *it)
{
	if (it->to.node != BUS_NODE_SELF && (it->kind == BUS_KICK || it->kind == BUS_MOVED)) {
		/* Kick and moved go to the other node's inbox. Stanzas for
		 * another node's sessions never come here: deliver.c routes
		 * them by session id through the store (route to sessions). */
		return w->sh ? store_node_notice(w->sh, &it->to, it->kind, it->cond) : -EHOSTUNREACH;
	}
	if (it->to.node != BUS_NODE_SELF || it->to.worker >= w->srv->nworkers)
		return it->to.node != BUS_NODE_SELF ? -EHOSTUNREACH : -EINVAL;
	struct worker *target = &w->srv->workers[it->to.worker];
	if (target == w) {
		worker_dispatch(w, it);
		return 0;
	}
	return worker_post(w, target, it);
}

/* A request that could not be posted: a message goes back to its sender
 * through the protocol's handler (a bounce), so no stanza vanishes when
 * the inbox copy cannot be allocated. */
static int refused(struct worker *w, const struct bus_item *it, int err)
{
	const struct worker_handlers *h = w->srv->handlers;
	if (it->msg && h && h->undeliverable)
		h->undeliverable(w, it->msg, err);
	else
		rmsg_unref(it->msg);
	return err;
}

int bus_deliver(struct worker *w, const struct bus_addr *to, struct rmsg *m)
{
	struct bus_item it = { .kind = BUS_DELIVER, .to = *to, .msg = m };
	int rc = post(w, &it);
	return rc ? refused(w, &it, rc) : 0;
}

int bus_kick(struct worker *w, const struct bus_addr *to, int cond)
{
	struct bus_item it = { .kind = BUS_KICK, .to = *to, .cond = cond };
	int rc = post(w, &it);
	return rc ? refused(w, &it, rc) : 0;
}

int bus_moved(struct worker *w, const struct bus_addr *to)
{
	struct bus_item it = { .kind = BUS_MOVED, .to = *to };
	int rc = post(w, &it);
	return rc ? refused(w, &it, rc) : 0;
}

int bus_appended(struct worker *w, const struct bus_addr *to, uint32_t seq, struct rmsg *m)
{
	struct bus_item it = { .kind = BUS_APPENDED, .to = *to, .seq = seq, .msg = m };
	if (to->node != BUS_NODE_SELF) { /* only our own inbox says this */
		rmsg_unref(m);
		return -EINVAL;
	}
	return post(w, &it);
}
