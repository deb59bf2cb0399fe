/* include/tether/config.h - the tetherd INI configuration: keys, defaults, loading. */
#ifndef TETHER_CONFIG_H
#define TETHER_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "tether/proxyproto.h"

#define CONFIG_STR_MAX 256
#define CONFIG_NODE_MAX 64   /* bytes of a [cluster] node name: [A-Za-z0-9_-] */

/* Every key of the INI file, with its default (see README "Configuration"). */
struct config {
	char path[CONFIG_STR_MAX];          /* file this was loaded from */
	/* [server] */
	char domain[CONFIG_STR_MAX];        /* domain = localhost */
	unsigned workers;                   /* workers = 0 (one per core) */
	unsigned drain_timeout;             /* drain_timeout = 10 s from SIGTERM to exit at most */
	char log_level[16];                 /* log_level = info */
	/* [c2s] */
	char listen[CONFIG_STR_MAX];        /* listen = 127.0.0.1:5222 (STARTTLS); empty = off */
	char tls_listen[CONFIG_STR_MAX];    /* tls_listen = 127.0.0.1:5223 (direct TLS); empty = off */
	int proxy_protocol;                 /* proxy_protocol = false: PROXY v1/v2 header required first */
	char trusted_proxies[CONFIG_STR_MAX]; /* trusted_proxies = (none): CIDR list the header may come from */
	struct proxyproto_trust trusted;    /* trusted_proxies, parsed */
	/* [tls] */
	char cert[CONFIG_STR_MAX];          /* cert = (none: refuse to start) */
	char key[CONFIG_STR_MAX];           /* key = (none) */
	int dev_cert;                       /* dev_cert = false: log that the cert is self-signed */
	/* [store] */
	char store_backend[32];             /* backend = memory */
	char store_path[CONFIG_STR_MAX];    /* path = ./var */
	char store_redis[CONFIG_STR_MAX];   /* redis = 127.0.0.1:6379, or unix:/path/to/redis.sock */
	int store_backend_line;             /* line of [store] backend (0: default or command line) */
	unsigned store_test_delay;          /* test_delay = 0: completions wait 0..N extra loop turns (tests) */
	/* [limits] */
	size_t max_stanza_size;             /* max_stanza_size = 262144 bytes */
	size_t preauth_max_stanza_size;     /* ...before authentication = 16384 (capped by the above) */
	size_t max_header_size;             /* max_header_size = 4096 bytes of a stream header (capped by the above) */
	unsigned max_depth;                 /* max_depth = 64 element levels */
	unsigned preauth_timeout;           /* preauth_timeout = 30 seconds */
	unsigned max_auth_failures;         /* max_auth_failures = 3 per stream */
	size_t max_send_queue;              /* max_send_queue = 4194304 bytes of unsent output */
	unsigned idle_timeout;              /* idle_timeout = 0 seconds (0 = never) */
	unsigned stanza_timeout;            /* stanza_timeout = 30 seconds from a stanza's first byte to its end */
	unsigned lost_input_timeout;        /* lost_input_timeout = 10 seconds a lost stream's input may wait per store operation */
	/* [sm] XEP-0198 */
	unsigned sm_max_resume;             /* max_resume = 300 seconds a session waits for resumption */
	unsigned sm_max_queue;              /* max_queue = 1000 unacked stanzas per session */
	size_t sm_max_queue_bytes;          /* max_queue_bytes = 1048576 bytes of unacked stanzas per session */
	unsigned sm_ack_every;              /* ack_every = 5: <r/> after this many unacked stanzas */
	unsigned sm_ack_after_ms;           /* ack_after_ms = 1000: <r/> when stanzas wait this long */
	unsigned sm_ack_timeout;            /* ack_timeout = 60 s a full queue may stay unacked */
	char sm_location[CONFIG_STR_MAX];   /* location = (none): host:port for resumption */
	/* [tokens] FAST (XEP-0484) and ISR (XEP-0397) */
	char token_key_file[CONFIG_STR_MAX];/* key_file = <store path>/token.key (created if absent) */
	unsigned fast_lifetime;             /* fast_lifetime = 1209600 s (14 days) */
	char isr_location[CONFIG_STR_MAX];  /* isr_location = (none): direct-TLS host:port for ISR */
	unsigned max_fast_per_account;      /* max_fast_per_account = 16 FAST entries (user-agent ids); oldest evicted */
	char admin_listen[CONFIG_STR_MAX];  /* [admin] listen = host:port of /metrics, /healthz, /readyz; empty = off */
	/* [cluster] */
	char cluster_node[CONFIG_NODE_MAX + 1]; /* node = (none): this node's unique name; required with redis */
	unsigned cluster_lease_ms;          /* lease_ms = 5000: a node whose lease is this old is dead */
	unsigned cluster_tick_ms;           /* tick_ms = 1000: lease renewal and reaper step; <= lease_ms / 2 */
	/* [limits] connections and guessing (limits.h) */
	unsigned max_conns_per_ip;          /* max_conns_per_ip = 100 sockets from one address; 0 = no limit */
	unsigned max_preauth_conns;         /* max_preauth_conns = 10000 unauthenticated, process-wide; 0 = no limit */
	unsigned auth_fail_burst_per_ip;    /* auth_fail_burst_per_ip = 20 failures before the rate applies */
	unsigned auth_fail_rate_per_ip;     /* auth_fail_rate_per_ip = 5 attempts a second after that */
	unsigned auth_fail_burst_per_account; /* auth_fail_burst_per_account = 50 */
	unsigned auth_fail_rate_per_account;  /* auth_fail_rate_per_account = 2 a second */
	/* [im] RFC 6121, XEP-0160 */
	unsigned im_max_roster_items;       /* max_roster_items = 1000 items per roster */
	unsigned im_max_offline;            /* max_offline = 500 messages stored per account */
	unsigned im_max_directed;           /* max_directed = 64 directed-presence recipients per session */
};

/* Fills <cfg> with the defaults. */
void config_defaults(struct config *cfg);

/* Loads <path> over the defaults. On error, writes "FILE:LINE: key: why" into
 * <err> and returns -1; returns 0 on success. Unknown sections or keys are
 * errors, so typos do not pass silently. */
int config_load(struct config *cfg, const char *path, char *err, size_t errlen);

/* Applies "section.key=value" (command-line override). Same error rules. */
int config_set(struct config *cfg, const char *assignment, char *err, size_t errlen);

#endif /* TETHER_CONFIG_H */
