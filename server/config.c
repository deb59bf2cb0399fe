/* server/config.c - parse the INI file (inih) into struct config. */
#include "tether/config.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>

#include <ini.h>

#include "tether/netaddr.h"
#include "tether/proxyproto.h"

enum key_type {
	K_STR = 0, /* bounded string */
	K_UINT,    /* unsigned, decimal */
	K_SIZE,    /* size in bytes, decimal, optional k/m suffix */
	K_BOOL,    /* true/false/yes/no/1/0 */
};

struct key_def {
	const char *section;
	const char *name;
	enum key_type type;
	size_t off;
	size_t size;    /* for K_STR: buffer size */
	uint64_t min, max; /* for numbers */
};

#define STR(sec, key, field) { sec, key, K_STR, offsetof(struct config, field), sizeof(((struct config *)0)->field), 0, 0 }
#define UINT(sec, key, field, lo, hi) { sec, key, K_UINT, offsetof(struct config, field), 0, lo, hi }
#define SIZE(sec, key, field, lo, hi) { sec, key, K_SIZE, offsetof(struct config, field), 0, lo, hi }
#define BOOL(sec, key, field) { sec, key, K_BOOL, offsetof(struct config, field), 0, 0, 1 }

static const struct key_def keys[] = {
	STR("server", "domain", domain),
	UINT("server", "workers", workers, 0, 256),
	UINT("server", "drain_timeout", drain_timeout, 1, 3600),
	STR("server", "log_level", log_level),
	STR("c2s", "listen", listen),
	STR("c2s", "tls_listen", tls_listen),
	BOOL("c2s", "proxy_protocol", proxy_protocol),
	STR("c2s", "trusted_proxies", trusted_proxies),
	STR("tls", "cert", cert),
	STR("tls", "key", key),
	BOOL("tls", "dev_cert", dev_cert),
	STR("store", "backend", store_backend),
	STR("store", "path", store_path),
	STR("store", "redis", store_redis),
	UINT("store", "test_delay", store_test_delay, 0, 3),
	SIZE("limits", "max_stanza_size", max_stanza_size, 1024, 64u << 20),
	SIZE("limits", "preauth_max_stanza_size", preauth_max_stanza_size, 1024, 64u << 20),
	SIZE("limits", "max_header_size", max_header_size, 512, 64u << 20),
	UINT("limits", "max_depth", max_depth, 4, 1024),
	UINT("limits", "preauth_timeout", preauth_timeout, 1, 3600),
	UINT("limits", "max_auth_failures", max_auth_failures, 1, 10),
	SIZE("limits", "max_send_queue", max_send_queue, 65536, 1u << 30),
	UINT("limits", "idle_timeout", idle_timeout, 0, 86400 * 7),
	UINT("limits", "stanza_timeout", stanza_timeout, 1, 3600),
	UINT("limits", "lost_input_timeout", lost_input_timeout, 1, 3600),
	UINT("sm", "max_resume", sm_max_resume, 0, 86400),
	UINT("sm", "max_queue", sm_max_queue, 16, 1000000),
	SIZE("sm", "max_queue_bytes", sm_max_queue_bytes, 4096, 1u << 30),
	UINT("sm", "ack_every", sm_ack_every, 1, 100000),
	UINT("sm", "ack_after_ms", sm_ack_after_ms, 10, 600000),
	UINT("sm", "ack_timeout", sm_ack_timeout, 1, 86400),
	STR("sm", "location", sm_location),
	STR("tokens", "key_file", token_key_file),
	UINT("tokens", "fast_lifetime", fast_lifetime, 60, 86400 * 365),
	STR("tokens", "isr_location", isr_location),
	UINT("tokens", "max_fast_per_account", max_fast_per_account, 1, 10000),
	STR("admin", "listen", admin_listen),
	STR("cluster", "node", cluster_node),
	UINT("cluster", "lease_ms", cluster_lease_ms, 200, 600000),
	UINT("cluster", "tick_ms", cluster_tick_ms, 50, 60000),
	UINT("limits", "max_conns_per_ip", max_conns_per_ip, 0, 10000000),
	UINT("limits", "max_preauth_conns", max_preauth_conns, 0, 10000000),
	UINT("limits", "auth_fail_burst_per_ip", auth_fail_burst_per_ip, 1, 1000000),
	UINT("limits", "auth_fail_rate_per_ip", auth_fail_rate_per_ip, 1, 1000000),
	UINT("limits", "auth_fail_burst_per_account", auth_fail_burst_per_account, 1, 1000000),
	UINT("limits", "auth_fail_rate_per_account", auth_fail_rate_per_account, 1, 1000000),
	UINT("im", "max_roster_items", im_max_roster_items, 1, 100000),
	UINT("im", "max_offline", im_max_offline, 0, 100000),
	UINT("im", "max_directed", im_max_directed, 1, 10000),
};

void config_defaults(struct config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	snprintf(cfg->domain, sizeof(cfg->domain), "localhost");
	snprintf(cfg->log_level, sizeof(cfg->log_level), "info");
	snprintf(cfg->listen, sizeof(cfg->listen), "127.0.0.1:5222");
	snprintf(cfg->tls_listen, sizeof(cfg->tls_listen), "127.0.0.1:5223");
	snprintf(cfg->store_backend, sizeof(cfg->store_backend), "memory");
	snprintf(cfg->store_path, sizeof(cfg->store_path), "./var");
	snprintf(cfg->store_redis, sizeof(cfg->store_redis), "127.0.0.1:6379");
	cfg->max_stanza_size = 256 * 1024;
	cfg->preauth_max_stanza_size = 16 * 1024;
	cfg->max_header_size = 4096;
	cfg->max_depth = 64;
	cfg->preauth_timeout = 30;
	cfg->stanza_timeout = 30;
	cfg->lost_input_timeout = 10;
	cfg->max_auth_failures = 3;
	cfg->max_send_queue = 4u << 20;
	cfg->sm_max_resume = 300;
	cfg->sm_max_queue = 1000;
	cfg->sm_max_queue_bytes = 1u << 20;
	cfg->drain_timeout = 10;
	cfg->sm_ack_every = 5;
	cfg->sm_ack_after_ms = 1000;
	cfg->sm_ack_timeout = 60;
	cfg->fast_lifetime = 14 * 86400;
	cfg->max_fast_per_account = 16;
	cfg->max_conns_per_ip = 100;
	cfg->max_preauth_conns = 10000;
	cfg->auth_fail_burst_per_ip = 20;
	cfg->auth_fail_rate_per_ip = 5;
	cfg->auth_fail_burst_per_account = 50;
	cfg->auth_fail_rate_per_account = 2;
	cfg->im_max_roster_items = 1000;
	cfg->im_max_offline = 500;
	cfg->im_max_directed = 64;
	cfg->cluster_lease_ms = 5000;
	cfg->cluster_tick_ms = 1000;
}

static int parse_number(const char *v, enum key_type t, uint64_t *out)
{
	char *end;
	errno = 0;
	if (*v == '-' || !*v)
		return -1;
	unsigned long long n = strtoull(v, &end, 10);
	if (errno || end == v)
		return -1;
	if (t == K_SIZE && *end) {
		unsigned long long mul = 0;
		if (!strcasecmp(end, "k") || !strcasecmp(end, "kib"))
			mul = 1024;
		else if (!strcasecmp(end, "m") || !strcasecmp(end, "mib"))
			mul = 1024 * 1024;
		if (!mul || n > UINT64_MAX / mul)
			return -1;
		n *= mul;
		end += strlen(end);
	}
	if (*end)
		return -1;
	*out = n;
	return 0;
}

/* Stores <value> into the field described by <k>. Returns NULL or why not. */
static const char *set_key(struct config *cfg, const struct key_def *k, const char *value)
{
	char *field = (char *)cfg + k->off;
	uint64_t n;
	switch (k->type) {
	case K_STR:
		if (strlen(value) >= k->size)
			return "value too long";
		memcpy(field, value, strlen(value) + 1);
		return NULL;
	case K_BOOL:
		if (!strcasecmp(value, "true") || !strcasecmp(value, "yes") || !strcmp(value, "1"))
			*(int *)field = 1;
		else if (!strcasecmp(value, "false") || !strcasecmp(value, "no") || !strcmp(value, "0"))
			*(int *)field = 0;
		else
			return "expected true or false";
		return NULL;
	case K_UINT:
	case K_SIZE:
		if (parse_number(value, k->type, &n))
			return "expected a non-negative number";
		if (n < k->min || n > k->max)
			return "out of range";
		if (k->type == K_UINT)
			*(unsigned *)field = (unsigned)n;
		else
			*(size_t *)field = (size_t)n;
		return NULL;
	}
	return "bad key type";
}

struct load_ctx {
	struct config *cfg;
	const char *file;
	FILE *f;
	int lineno;     /* lines read so far: inih here has no INI_HANDLER_LINENO */
	char *err;
	size_t errlen;
	int failed;
};

static int set_one(struct load_ctx *lc, const char *section, const char *name,
		   const char *value, int lineno)
{
	if (lc->failed)
		return 0; /* report the first error, not the last */
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		if (strcmp(keys[i].section, section) || strcmp(keys[i].name, name))
			continue;
		const char *why = set_key(lc->cfg, &keys[i], value);
		size_t at = 0;
		if (!why && keys[i].off == offsetof(struct config, trusted_proxies) &&
		    (why = proxyproto_trust_parse(&lc->cfg->trusted, value, &at))) {
			/* Name the entry at fault: "'10.0.0.1/8': address has bits ...". */
			size_t n = strcspn(value + at, ",");
			if (n)
				snprintf(lc->err, lc->errlen, "%s:%d: [%s] %s: '%.*s': %s", lc->file, lineno,
					 section, name, (int)n, value + at, why);
			else
				snprintf(lc->err, lc->errlen, "%s:%d: [%s] %s: %s (a stray comma?)", lc->file,
					 lineno, section, name, why);
			lc->failed = 1;
			return 0;
		}
		if (!why) {
			if (keys[i].off == offsetof(struct config, store_backend))
				lc->cfg->store_backend_line = lineno;
			return 1;
		}
		snprintf(lc->err, lc->errlen, "%s:%d: [%s] %s: %s", lc->file, lineno, section, name, why);
		lc->failed = 1;
		return 0;
	}
	snprintf(lc->err, lc->errlen, "%s:%d: [%s] %s: unknown key", lc->file, lineno, section, name);
	lc->failed = 1;
	return 0;
}

static int on_ini_key(void *user, const char *section, const char *name, const char *value)
{
	struct load_ctx *lc = user;
	return set_one(lc, section, name, value, lc->lineno);
}

/* fgets that counts lines, so errors can name the line of the key. */
static char *read_line(char *str, int num, void *stream)
{
	struct load_ctx *lc = stream;
	char *r = fgets(str, num, lc->f);
	if (!r)
		return NULL;
	lc->lineno++;
	if (!strchr(r, '\n') && !feof(lc->f)) {
		/* Debian's inih reads at most INI_MAX_LINE (200) bytes a line; a
		 * longer one would be split and misread, so refuse it by name. */
		snprintf(lc->err, lc->errlen, "%s:%d: line too long (at most %d bytes)", lc->file,
			 lc->lineno, num - 2);
		lc->failed = 1;
		return NULL;
	}
	return r;
}

/* Why <a> is not a [store] redis address ("host:port" with a numeric host,
 * or "unix:/absolute/path"), or NULL if it is one. */
static const char *redis_addr_why(const char *a)
{
	struct sockaddr_storage ss;
	socklen_t len;
	if (!strncmp(a, "unix:", 5)) {
		if (a[5] != '/')
			return "expected unix:/absolute/path";
		if (strlen(a + 5) >= sizeof(((struct sockaddr_un *)0)->sun_path))
			return "socket path too long";
		return NULL;
	}
	if (netaddr_parse(a, &ss, &len))
		return "expected host:port (numeric host) or unix:/path/to/redis.sock";
	return NULL;
}

/* Checks the combination of keys once everything is read. */
static int validate(struct config *cfg, char *err, size_t errlen)
{
	if (!cfg->domain[0]) {
		snprintf(err, errlen, "%s: [server] domain: must not be empty", cfg->path);
		return -1;
	}
	if (strcmp(cfg->store_backend, "memory") && strcmp(cfg->store_backend, "redis")) {
		snprintf(err, errlen, "%s:%d: [store] backend: unknown backend '%s' (have: memory, redis)",
			 cfg->path, cfg->store_backend_line, cfg->store_backend);
		return -1;
	}
	if (!strcmp(cfg->store_backend, "redis")) {
		const char *why = redis_addr_why(cfg->store_redis);
		if (why) {
			snprintf(err, errlen, "%s: [store] redis: '%s': %s", cfg->path, cfg->store_redis, why);
			return -1;
		}
		/* The node's name is part of every session's owner and of its
		 * lease key: two nodes with one name would fence each other. */
		if (!cfg->cluster_node[0]) {
			snprintf(err, errlen, "%s:%d: [cluster] node: required with [store] backend = redis "
				 "(a name unique to this node)", cfg->path, cfg->store_backend_line);
			return -1;
		}
		if (strspn(cfg->cluster_node, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
			   "0123456789_-") != strlen(cfg->cluster_node)) {
			snprintf(err, errlen, "%s: [cluster] node: '%s': only letters, digits, '_' and '-'",
				 cfg->path, cfg->cluster_node);
			return -1;
		}
	}
	/* A node renews its lease every tick: one late tick must not let it
	 * lapse, or the reaper would take a live node for dead. */
	if (cfg->cluster_tick_ms > cfg->cluster_lease_ms / 2) {
		snprintf(err, errlen, "%s: [cluster] tick_ms: %u is more than half of [cluster] "
			 "lease_ms (%u): a live node's lease could lapse", cfg->path,
			 cfg->cluster_tick_ms, cfg->cluster_lease_ms);
		return -1;
	}
	/* A resumed session's queue is written out at once (with delay
	 * stamps): it must always fit the send limit, or it could never be
	 * resumed. */
	if (cfg->sm_max_queue_bytes > cfg->max_send_queue / 2) {
		snprintf(err, errlen, "%s: [sm] max_queue_bytes: %zu is more than half of [limits] "
			 "max_send_queue (%zu): a full queue could never be resumed", cfg->path,
			 cfg->sm_max_queue_bytes, cfg->max_send_queue);
		return -1;
	}
	if (cfg->proxy_protocol && !cfg->trusted.n) {
		snprintf(err, errlen, "%s: [c2s] proxy_protocol: needs [c2s] trusted_proxies "
			 "(the addresses of the proxies, e.g. 127.0.0.1/32)", cfg->path);
		return -1;
	}
	if (!cfg->listen[0] && !cfg->tls_listen[0]) {
		snprintf(err, errlen, "%s: [c2s] listen: neither listen nor tls_listen is set", cfg->path);
		return -1;
	}
	return 0;
}

int config_load(struct config *cfg, const char *path, char *err, size_t errlen)
{
	struct load_ctx lc = { cfg, path, NULL, 0, err, errlen, 0 };
	snprintf(cfg->path, sizeof(cfg->path), "%s", path);
	lc.f = fopen(path, "r");
	if (!lc.f) {
		snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
		return -1;
	}
	int rc = ini_parse_stream(read_line, &lc, on_ini_key, &lc);
	fclose(lc.f);
	if (lc.failed)
		return -1;
	if (rc != 0) {
		snprintf(err, errlen, "%s:%d: syntax error (expected [section] or key = value)", path, rc);
		return -1;
	}
	return validate(cfg, err, errlen);
}

int config_set(struct config *cfg, const char *assignment, char *err, size_t errlen)
{
	char buf[CONFIG_STR_MAX + 64];
	snprintf(buf, sizeof(buf), "%s", assignment);
	char *eq = strchr(buf, '='), *dot = strchr(buf, '.');
	if (!eq || !dot || dot > eq) {
		snprintf(err, errlen, "override '%s': expected section.key=value", assignment);
		return -1;
	}
	*eq = *dot = 0;
	struct load_ctx lc = { cfg, "command line", NULL, 0, err, errlen, 0 };
	set_one(&lc, buf, dot + 1, eq + 1, 0);
	return lc.failed ? -1 : validate(cfg, err, errlen);
}
