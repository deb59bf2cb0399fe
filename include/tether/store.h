/* include/tether/store.h - the session store interface: users now; SM state later. */
#ifndef TETHER_STORE_H
#define TETHER_STORE_H

#include <errno.h>
#include <stddef.h>

#include "tether/scram.h"

struct store;

/* A backend's operations. Callers use the store_* wrappers below and never
 * include a backend. Functions are thread-safe (workers call them
 * concurrently) and never block on the network. */
struct store_ops {
	int (*user_get)(struct store *st, const char *bare_jid, struct user_creds *out);
	int (*user_put)(struct store *st, const char *bare_jid, const struct user_creds *c);
	int (*user_del)(struct store *st, const char *bare_jid);
	void (*close)(struct store *st);
	/* Added: calls <fn> once per user with its bare JID, in no particular
	 * order. Optional (NULL: store_user_list() returns -ENOTSUP). */
	int (*user_list)(struct store *st, void (*fn)(void *ud, const char *bare_jid), void *ud);
};

struct store {
	const struct store_ops *ops;
};

/* Opens backend <backend> ("memory") with its data under directory <path>
 * (created if missing). On error writes a message into <err> and returns
 * NULL. */
struct store *store_open(const char *backend, const char *path, char *err, size_t errlen);

/* Users, keyed by the prepared bare JID "local@domain".
 * get: 0 and <out> filled, -ENOENT, or -errno.
 * put: creates or replaces; persisted (atomically) before it returns 0.
 * del: 0, -ENOENT, or -errno. */
static inline int store_user_get(struct store *st, const char *bare, struct user_creds *out)
{ return st->ops->user_get(st, bare, out); }
static inline int store_user_put(struct store *st, const char *bare, const struct user_creds *c)
{ return st->ops->user_put(st, bare, c); }
static inline int store_user_del(struct store *st, const char *bare)
{ return st->ops->user_del(st, bare); }
/* Added: lists users (for tetherctl). 0, -ENOTSUP, or -errno. */
static inline int store_user_list(struct store *st, void (*fn)(void *ud, const char *bare_jid), void *ud)
{ return st->ops->user_list ? st->ops->user_list(st, fn, ud) : -ENOTSUP; }
static inline void store_close(struct store *st)
{ if (st) st->ops->close(st); }

/* Added: backend constructors, called by store_open() only (callers use
 * store_open()). Same contract as store_open(). */
struct store *store_memory_open(const char *path, char *err, size_t errlen);

#endif /* TETHER_STORE_H */
