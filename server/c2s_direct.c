/* server/c2s_direct.c - sessions bound without XEP-0198, in the shared directory: reachable from every node.
 *
 * A session without stream management has no record and no queue in the
 * store, but with a store shared between nodes (store_shared) it still
 * needs a directory entry, or a stanza from a client on another node finds
 * nobody. So at bind it writes one that names its stream (store.h,
 * store_direct_async; redis_lib.lua, DIRECT SESSIONS): deliveries through
 * the store put the stanza in this node's inbox, and the bus hands it to
 * the stream by (worker, slot, generation). If the stream is gone by then,
 * the worker's stale handler applies RFC 6121 (deliver_stale). Nothing is
 * kept in the store: a stanza to a session without a queue is as durable
 * as that session.
 *
 * The entry follows the session: its presence (available, priority) at
 * every broadcast, so bare-JID messages and presence fan-out choose among
 * every node's sessions alike; its removal at the end, check-and-delete,
 * so a stream that ends never removes what a newer bind wrote. A newer
 * bind of the same resource on another node replaces the entry and kicks
 * this stream with conflict, and enabling XEP-0198 replaces it with the
 * session (sm_create, same owner: no kick). The memory backend serves one
 * node, whose router finds everything: nothing is written there.
 *
 * Any session in a shared store, direct or XEP-0198, also writes there the
 * JIDs it sent directed presence to (RFC 6121 §4.6; only changes: an add,
 * a removal, a clear), beside its entry or record: if its node dies, the
 * reaper sends them the unavailable presence the stream would have sent
 * (store_dpres_async, redis_lib.lua DIRECTED PRESENCE). The set goes with
 * the session in the store, so the end of a stream writes nothing more. */
#include "c2s_priv.h"

#include "tether/bus.h"
#include "tether/log.h"
#include "tether/store.h"

/* The bind replaced a session of another node's stream: the newer bind
 * wins (RFC 6120 §7.7.2.2; this node's router already kicked ours). */
static void on_set(void *ud, int err, const struct bus_addr *old, const struct sm_entry *e)
{
	struct c2s *s = ud;
	(void)e;
	if (err)
		log_warn("c2s %s: not reachable from other nodes: directory entry not written (%d)",
			 s->full, err);
	else if (old && old->node != BUS_NODE_SELF)
		bus_kick(s->w, old, SE_CONFLICT);
}

static void on_direct_written(void *ud, int err, const struct bus_addr *old, const struct sm_entry *e)
{
	(void)ud; (void)old; (void)e;
	if (err)
		log_warn("direct session: directory entry not updated (%d)", err);
}

void c2s_direct_bind(struct c2s *s)
{
	if (!store_shared(c2s_store(s)))
		return;
	int avail = (s->flags & C2S_F_AVAILABLE) != 0;
	if (store_direct_async(c2s_store(s), STORE_DIRECT_SET, s->bare, s->resource, &s->self,
			       avail, s->priority, on_set, s))
		s->flags |= C2S_F_DIRECT;
	else
		log_warn("c2s %s: out of memory: not reachable from other nodes", s->full);
}

void c2s_direct_presence(struct c2s *s)
{
	if (!(s->flags & C2S_F_DIRECT))
		return;
	int avail = (s->flags & C2S_F_AVAILABLE) != 0;
	if (!store_direct_async(c2s_store(s), STORE_DIRECT_UPDATE, s->bare, s->resource, &s->self,
				avail, s->priority, on_direct_written, NULL))
		log_warn("c2s %s: out of memory: presence not written to the directory", s->full);
}

void c2s_direct_end(struct c2s *s)
{
	if (!(s->flags & C2S_F_DIRECT))
		return;
	s->flags &= ~C2S_F_DIRECT;
	/* If this is lost, the first delivery that finds the entry and then
	 * not the stream removes it (deliver_stale), and a dead node's
	 * entries go with its lease. */
	if (!store_direct_async(c2s_store(s), STORE_DIRECT_DEL, s->bare, s->resource, &s->self, 0,
				0, on_direct_written, NULL))
		log_warn("c2s %s: out of memory: directory entry left behind", s->full);
}

void c2s_direct_enabled(struct c2s *s)
{
	s->flags &= ~C2S_F_DIRECT; /* sm_create replaced the entry with the session's */
}

static void on_dpres_written(void *ud, int err, const struct bus_addr *old, const struct sm_entry *e)
{
	(void)ud; (void)old; (void)e;
	if (err)
		log_warn("directed presence: recipients not written to the store (%d): a crash of "
			 "this node would leave them without unavailable presence", err);
}

/* <what> for the session's set, as its XEP-0198 session (the record's
 * owner fences it) or its direct entry. */
static void dpres(struct c2s *s, enum store_dpres what, const char *jid)
{
	const char *sid = (s->flags & C2S_F_SM) ? s->sm.id : NULL;
	const struct bus_addr *owner = sid ? &s->sm.owner : &s->self;
	if (!sid && !(s->flags & C2S_F_DIRECT))
		return;
	if (!store_dpres_async(c2s_store(s), what, s->bare, sid, s->resource, owner, jid,
			       s->srv->cfg.im_max_directed, on_dpres_written, NULL))
		log_warn("c2s %s: out of memory: directed presence not written to the store", s->full);
}

void c2s_direct_directed(struct c2s *s, const char *jid, int add)
{
	dpres(s, add ? STORE_DPRES_ADD : STORE_DPRES_DEL, jid);
}

void c2s_direct_undirected(struct c2s *s)
{
	dpres(s, STORE_DPRES_CLEAR, NULL);
}
