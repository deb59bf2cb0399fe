/* server/main.c - tetherd: read the config, start the workers, wait for signals. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "tether/admin.h"
#include "tether/c2s.h"
#include "tether/config.h"
#include "tether/im.h"
#include "tether/jid.h"
#include "tether/limits.h"
#include "tether/log.h"
#include "tether/metrics.h"
#include "tether/nodes.h"
#include "tether/notify.h"
#include "tether/redis_boot.h"
#include "tether/router.h"
#include "tether/sasl.h"
#include "tether/server.h"
#include "tether/store.h"
#include "tether/tls.h"
#include "tether/token.h"
#include "tether/worker.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: tetherd -c FILE [--check] [-o section.key=value]...\n"
		   "  -c, --config FILE   the INI configuration (see README)\n"
		   "      --check         validate the configuration and exit\n"
		   "  -o, --set S.K=V     override one key of the file\n");
}

/* Parses the command line and the config file into <cfg>. Returns 0 to run,
 * 1 if --check passed, or -1 on error (message printed). */
static int load_config(int argc, char **argv, struct config *cfg)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check", no_argument, NULL, 'C' },
		{ "set", required_argument, NULL, 'o' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *path = NULL;
	int check = 0, opt;
	char err[1024];
	char *sets[64];
	int nsets = 0;
	while ((opt = getopt_long(argc, argv, "c:o:h", opts, NULL)) != -1) {
		switch (opt) {
		case 'c': path = optarg; break;
		case 'C': check = 1; break;
		case 'o':
			if (nsets == 64) {
				fprintf(stderr, "tetherd: too many -o options\n");
				return -1;
			}
			sets[nsets++] = optarg;
			break;
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); return -1;
		}
	}
	if (!path || optind != argc) {
		usage(stderr);
		return -1;
	}
	config_defaults(cfg);
	if (config_load(cfg, path, err, sizeof(err))) {
		fprintf(stderr, "tetherd: %s\n", err);
		return -1;
	}
	for (int i = 0; i < nsets; i++) {
		if (config_set(cfg, sets[i], err, sizeof(err))) {
			fprintf(stderr, "tetherd: %s\n", err);
			return -1;
		}
	}
	if (!cfg->cert[0] || !cfg->key[0]) {
		fprintf(stderr, "tetherd: %s: [tls] cert: a certificate and key are required "
			"(make run creates a development one)\n", path);
		return -1;
	}
	/* The domain as JIDs are compared: prepared (lowercase, no trailing dot). */
	char dom[CONFIG_STR_MAX];
	if (jid_prep_domain(cfg->domain, dom, sizeof(dom))) {
		fprintf(stderr, "tetherd: %s: [server] domain: '%s' is not a valid domain\n", path, cfg->domain);
		return -1;
	}
	snprintf(cfg->domain, sizeof(cfg->domain), "%s", dom);
	if (log_level_parse(cfg->log_level, &log_threshold)) {
		fprintf(stderr, "tetherd: %s: [server] log_level: expected error, warn, info or debug\n", path);
		return -1;
	}
	return check;
}

/* Where the token-sealing key lives: [tokens] key_file or <store path>/token.key. */
static void token_key_path(const struct config *cfg, char *out, size_t len)
{
	if (cfg->token_key_file[0])
		snprintf(out, len, "%s", cfg->token_key_file);
	else
		snprintf(out, len, "%s/token.key", cfg->store_path);
}

/* [store] backend = redis: the blocking start-up steps, on this thread
 * before any worker exists: connect (unreachable: exit naming the
 * address), FUNCTION LOAD REPLACE of the compiled-in library, and the
 * check that this node seals tokens with the cluster's key. Then the
 * store: its blocking connection serves tetherctl-style user calls; the
 * workers reach Redis through their own rlink (worker.c) and the store's
 * asynchronous operations (store/redis_async.c). Owner addresses in Redis
 * name this node by [cluster] node (nodes.h). 0, or -1 after logging why. */
static int start_redis(struct server *srv)
{
	char err[1024], keypath[CONFIG_STR_MAX + 16];
	token_key_path(&srv->cfg, keypath, sizeof(keypath));
	if (!srv->cfg.token_key_file[0] && mkdir(srv->cfg.store_path, 0700) == -1 && errno != EEXIST) {
		log_error("%s: [store] path: %s: %s", srv->cfg.path, srv->cfg.store_path, strerror(errno));
		return -1;
	}
	if (token_key_load(keypath, srv->token_key, err, sizeof(err))) {
		log_error("tokens: %s", err);
		return -1;
	}
	if (redis_boot(srv->cfg.store_redis, srv->token_key, err, sizeof(err))) {
		log_error("%s", err);
		return -1;
	}
	if (nodes_set_self(srv->cfg.cluster_node)) {
		log_error("%s: [cluster] node '%s': not a usable node name", srv->cfg.path,
			  srv->cfg.cluster_node);
		return -1;
	}
	char holder[NODES_ID_MAX + 1];
	snprintf(holder, sizeof(holder), "%s.%s", srv->cfg.cluster_node, nodes_boot());
	int busy = redis_boot_lease(srv->cfg.store_redis, srv->cfg.cluster_node, holder,
				    srv->cfg.cluster_lease_ms, err, sizeof(err));
	if (busy < 0) {
		log_error("%s", err);
		return -1;
	}
	if (busy) /* the cluster's tick says more while it lasts */
		log_warn("%s", err);
	srv->store = store_open("redis", srv->cfg.store_redis, err, sizeof(err));
	if (!srv->store) {
		log_error("store: %s", err);
		return -1;
	}
	log_info("redis at %s: library loaded, token key matches the cluster's (node %s)",
		 srv->cfg.store_redis, srv->cfg.cluster_node);
	return 0;
}

static int start(struct server *srv)
{
	char err[1024];
	/* A cluster shares its TLS ticket keys (through Redis): a client
	 * resumes its TLS session on any node. */
	if (!strcmp(srv->cfg.store_backend, "redis"))
		tls_tickets_enable();
	if (tls_ctx_init(&srv->tls, srv->cfg.cert, srv->cfg.key, err, sizeof(err))) {
		log_error("%s: %s", srv->cfg.path, err);
		return -1;
	}
	if (srv->cfg.dev_cert)
		log_warn("tls: %s is a self-signed development certificate: clients will not "
			 "trust it; configure a real one for production", srv->cfg.cert);
	if (!strcmp(srv->cfg.store_backend, "redis")) {
		if (start_redis(srv))
			return -1;
		store_set_queue_bounds(srv->store, srv->cfg.sm_max_queue, srv->cfg.sm_max_queue_bytes);
	} else {
		srv->store = store_open(srv->cfg.store_backend, srv->cfg.store_path, err, sizeof(err));
		if (srv->store && srv->cfg.store_test_delay) {
			store_set_test_delay(srv->store, srv->cfg.store_test_delay);
			log_warn("store: test mode: every completion is delayed by 0-%u loop turns",
				 srv->cfg.store_test_delay);
		}
		if (!srv->store) {
			log_error("store: %s", err);
			return -1;
		}
		char keypath[CONFIG_STR_MAX + 16];
		token_key_path(&srv->cfg, keypath, sizeof(keypath));
		if (token_key_load(keypath, srv->token_key, err, sizeof(err))) {
			log_error("tokens: %s", err);
			return -1;
		}
	}
	sasl_set_secret(srv->token_key);
	srv->router = router_new();
	c2s_register(srv); /* every accepted connection is a c2s stream */
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	srv->nworkers = srv->cfg.workers ? srv->cfg.workers : (unsigned)(ncpu > 0 ? ncpu : 1);
	srv->workers = calloc(srv->nworkers, sizeof(*srv->workers));
	srv->limits = limits_new(&srv->cfg);
	if (!srv->router || !srv->workers || !srv->limits || metrics_init(srv->nworkers)) {
		log_error("out of memory");
		return -1;
	}
	for (unsigned i = 0; i < srv->nworkers; i++)
		if (worker_init(&srv->workers[i], srv, i))
			return -1;
	return 0;
}

static atomic_int workers_up;

/* SIGHUP: the certificate and key are read again from the configured
 * paths; new connections get them, open ones keep what they have. A bad
 * file keeps the old pair. (The rest of the configuration is not reread.) */
static void reload_certificate(struct server *srv)
{
	char err[512];
	notify_reloading();
	if (tls_ctx_reload(&srv->tls, srv->cfg.cert, srv->cfg.key, err, sizeof(err)))
		log_error("SIGHUP: %s; keeping the current certificate", err);
	else
		log_info("SIGHUP: certificate reloaded from %s", srv->cfg.cert);
	notify_ready("certificate reloaded");
}

/* /readyz: every worker runs, the node is not shutting down, and with
 * [store] backend = redis every worker's link to Redis is up (a node that
 * cannot reach its store cannot log anyone in; the memory store is always
 * reachable). */
static bool node_ready(void *ud, char *why, size_t whylen)
{
	struct server *srv = ud;
	if (!atomic_load(&workers_up)) {
		snprintf(why, whylen, "starting");
		return false;
	}
	if (atomic_load(&srv->stopping)) {
		snprintf(why, whylen, "shutting down");
		return false;
	}
	for (unsigned i = 0; i < srv->nworkers; i++)
		if (!worker_store_up(&srv->workers[i])) {
			snprintf(why, whylen, "worker %u: no connection to redis at %s", i,
				 srv->cfg.store_redis);
			return false;
		}
	return true;
}

/* tether_redis_link_up: 1 when every worker reaches Redis (always with
 * the memory store), read on the admin thread like node_ready does. */
static int64_t redis_link_up(void *ud)
{
	struct server *srv = ud;
	for (unsigned i = 0; i < srv->nworkers; i++)
		if (!worker_store_up(&srv->workers[i]))
			return 0;
	return 1;
}

int main(int argc, char **argv)
{
	static struct server srv;
	int rc = load_config(argc, argv, &srv.cfg);
	if (rc < 0)
		return 2;
	if (rc == 1) {
		printf("%s: configuration OK\n", srv.cfg.path);
		return 0;
	}
	if (sodium_init() < 0) {
		log_error("libsodium failed to initialise");
		return 1;
	}
	/* Signals are taken by this thread with sigwait; workers never see them. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	if (start(&srv))
		return 1;
	metrics_gauge_set(G_REDIS_UP, redis_link_up, &srv);
	/* The admin endpoint first: /readyz answers "starting" until every
	 * worker runs, and a bad [admin] listen stops us before any client. */
	struct admin *admin = NULL;
	if (srv.cfg.admin_listen[0]) {
		char err[256];
		admin = admin_start(srv.cfg.admin_listen, node_ready, &srv, err, sizeof(err));
		if (!admin) {
			log_error("%s: %s", srv.cfg.path, err);
			return 1;
		}
	}
	unsigned started = 0;
	for (; started < srv.nworkers; started++)
		if (worker_start(&srv.workers[started]))
			break;
	if (started == srv.nworkers) {
		atomic_store(&workers_up, 1);
		char status[5 * CONFIG_STR_MAX];
		snprintf(status, sizeof(status), "domain %s, %u workers, c2s %s, direct TLS %s, admin %s",
			 srv.cfg.domain, srv.nworkers, srv.cfg.listen[0] ? srv.cfg.listen : "off",
			 srv.cfg.tls_listen[0] ? srv.cfg.tls_listen : "off",
			 srv.cfg.admin_listen[0] ? srv.cfg.admin_listen : "off");
		log_info("tetherd %s: %s", TETHER_VERSION, status);
		notify_ready(status);
	}
	while (started == srv.nworkers) {
		int sig;
		if (sigwait(&set, &sig))
			continue;
		if (sig == SIGHUP) {
			reload_certificate(&srv);
			continue;
		}
		log_info("%s: shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
		notify_stopping();
		break;
	}
	server_stop(&srv);
	int code = 0;
	for (unsigned i = 0; i < started; i++) {
		worker_join(&srv.workers[i]);
		code |= srv.workers[i].exit_code;
	}
	admin_stop(admin);
	metrics_free();
	store_close(srv.store);
	router_free(srv.router);
	limits_free(srv.limits);
	tls_ctx_deinit(&srv.tls);
	free(srv.workers);
	log_info("tetherd stopped");
	return code;
}
