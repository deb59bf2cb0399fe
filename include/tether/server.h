/* include/tether/server.h - what every worker shares: config, TLS, store, router, workers. */
#ifndef TETHER_SERVER_H
#define TETHER_SERVER_H

#include <stdatomic.h>
#include <stdint.h>

#include "tether/config.h"
#include "tether/tls.h"

struct limits;
struct router;
struct store;
struct worker;
struct worker_handlers;

/* Read-only once the workers start, but for the atomics. */
struct server {
	struct config cfg;
	struct tls_ctx tls;
	uint8_t token_key[32];     /* seals FAST/ISR tokens at rest (token.h) */
	struct store *store;
	struct router *router;
	struct worker *workers;
	unsigned nworkers;
	/* The protocol's entry points, registered before the workers start
	 * (c2s_register()); plumbing reaches protocol code only through them. */
	const struct worker_handlers *handlers;
	atomic_int stopping;       /* SIGTERM seen: workers drain and exit */
	struct limits *limits;     /* per-address connections, guessing rate (limits.h) */
};

/* From any thread: asks every worker to shut down (the shutdown handler on
 * every stream, then exit). */
void server_stop(struct server *srv);

#endif /* TETHER_SERVER_H */
