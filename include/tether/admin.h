/* include/tether/admin.h - the admin HTTP endpoint: /metrics, /healthz, /readyz.
 *
 * libmicrohttpd in a thread of its own: nothing here runs on a worker, and
 * a slow scraper never delays a client. */
#ifndef TETHER_ADMIN_H
#define TETHER_ADMIN_H

#include <stdbool.h>
#include <stddef.h>

struct admin;

/* Tells /readyz whether the node takes clients: workers up, store
 * reachable, not draining. Called on the admin thread; <why> gets a short
 * reason when not ready. */
typedef bool admin_ready_fn(void *ud, char *why, size_t whylen);

/* Serves on <listen> ("host:port", numeric). Returns NULL after writing
 * the reason to <err> (bad address, port in use). */
struct admin *admin_start(const char *listen, admin_ready_fn *ready, void *ud, char *err,
			  size_t errlen);

/* Stops the thread and closes the socket. NULL is fine. */
void admin_stop(struct admin *a);

#endif /* TETHER_ADMIN_H */
