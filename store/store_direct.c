/* store/store_direct.c - the directory entries of sessions bound without XEP-0198, and sessions' directed-presence recipients, through a worker's handle (cluster).
 *
 * A shared store only: the memory backend serves one node, whose router
 * finds its direct sessions, so there is nothing to write (NULL, nothing
 * issued). The backend that shares (redis) submits the operation; its
 * result is the session a SET replaced, if any (redis_direct.c). The
 * directed-presence recipients of a session (store_dpres_async) live
 * beside its entry or record, for the reaper. */
#include "store_op.h"

#include <stdlib.h>
#include <string.h>

#include "tether/bus.h"
#include "tether/store.h"

static void direct_complete(struct store_op *op)
{
	struct store_direct_op *d = (struct store_direct_op *)op;
	if (d->fn)
		d->fn(op->ud, d->err, d->replaced ? &d->old : NULL, NULL);
}

static void direct_release(struct store_op *op)
{
	struct store_direct_op *d = (struct store_direct_op *)op;
	free(d->bare);
	free(d->resource);
	d->bare = d->resource = NULL;
}

struct store_op *store_direct_async(struct store_handle *h, enum store_direct what,
				    const char *bare, const char *resource,
				    const struct bus_addr *owner, int available, int priority,
				    store_write_fn *fn, void *ud)
{
	if (!store_shared(h))
		return NULL;
	struct store_direct_op *d = calloc(1, sizeof(*d));
	if (!d)
		return NULL;
	d->op.kind = STORE_OP_DIRECT;
	d->op.ud = ud;
	d->op.complete = direct_complete;
	d->op.release = direct_release;
	if (!(d->bare = strdup(bare)) || !(d->resource = strdup(resource))) {
		direct_release(&d->op);
		free(d);
		return NULL;
	}
	d->fn = fn;
	d->what = what;
	d->owner = *owner;
	d->available = available;
	d->priority = priority;
	store_op_enqueue(h, &d->op, &d->err);
	return &d->op;
}

static void dpres_complete(struct store_op *op)
{
	struct store_dpres_op *d = (struct store_dpres_op *)op;
	if (d->fn)
		d->fn(op->ud, d->err, NULL, NULL);
}

static void dpres_release(struct store_op *op)
{
	struct store_dpres_op *d = (struct store_dpres_op *)op;
	free(d->bare);
	free(d->resource);
	free(d->jid);
	d->bare = d->resource = d->jid = NULL;
}

struct store_op *store_dpres_async(struct store_handle *h, enum store_dpres what,
				   const char *bare, const char *sid, const char *resource,
				   const struct bus_addr *owner, const char *jid, unsigned max,
				   store_write_fn *fn, void *ud)
{
	if (!store_shared(h) || (sid && strlen(sid) > SM_ID_LEN))
		return NULL;
	struct store_dpres_op *d = calloc(1, sizeof(*d));
	if (!d)
		return NULL;
	d->op.kind = STORE_OP_DPRES;
	d->op.ud = ud;
	d->op.complete = dpres_complete;
	d->op.release = dpres_release;
	if (!(d->bare = strdup(bare)) || !(d->resource = strdup(sid ? "" : resource)) ||
	    !(d->jid = strdup(jid ? jid : ""))) {
		dpres_release(&d->op);
		free(d);
		return NULL;
	}
	if (sid)
		memcpy(d->sid, sid, strlen(sid) + 1);
	d->fn = fn;
	d->what = what;
	d->owner = *owner;
	d->max = max;
	store_op_enqueue(h, &d->op, &d->err);
	return &d->op;
}
