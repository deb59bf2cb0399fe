/* store/redis_boot.c - blocking Redis steps for start-up and tetherctl (never on a worker). */
#include "tether/redis_boot.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <sodium.h>

#include "redis_keys.h"
#include "tether/redis_lib.h"

/* A Redis that was just started answers every command with -LOADING until
 * it has read its AOF or RDB: PING until it is done (at most
 * REDIS_BOOT_LOADING_MS), so that a node started with it (deploy/cluster.sh,
 * a host's boot) waits instead of exiting. 0, or -1 with <err> set. */
static int wait_loaded(redisContext *rc, const char *addr, char *err, size_t errlen)
{
	for (unsigned waited = 0;; waited += 100) {
		redisReply *r = redisCommand(rc, "PING");
		if (!r) {
			snprintf(err, errlen, "redis at %s: PING: %s", addr,
				 rc->errstr[0] ? rc->errstr : "no reply");
			return -1;
		}
		int loading = r->type == REDIS_REPLY_ERROR && !strncmp(r->str, "LOADING", 7);
		freeReplyObject(r);
		if (!loading)
			return 0;
		if (waited >= REDIS_BOOT_LOADING_MS) {
			snprintf(err, errlen, "redis at %s: still loading its dataset after %u s", addr,
				 REDIS_BOOT_LOADING_MS / 1000);
			return -1;
		}
		usleep(100 * 1000);
	}
}

redisContext *redis_boot_connect(const char *addr, char *err, size_t errlen)
{
	struct timeval tv = { REDIS_BOOT_TIMEOUT_MS / 1000, (REDIS_BOOT_TIMEOUT_MS % 1000) * 1000 };
	redisContext *rc;
	if (!strncmp(addr, "unix:", 5)) {
		rc = redisConnectUnixWithTimeout(addr + 5, tv);
	} else {
		/* "host:port" or "[v6]:port": the port follows the last colon. */
		char host[256];
		const char *colon = strrchr(addr, ':');
		char *end;
		long port = colon ? strtol(colon + 1, &end, 10) : -1;
		size_t hl = colon ? (size_t)(colon - addr) : 0;
		if (!colon || *end || port <= 0 || port > 65535 || hl == 0 || hl >= sizeof(host)) {
			snprintf(err, errlen, "redis at %s: not host:port or unix:/path", addr);
			return NULL;
		}
		memcpy(host, addr, hl);
		host[hl] = 0;
		if (host[0] == '[' && host[hl - 1] == ']') {
			memmove(host, host + 1, hl - 2);
			host[hl - 2] = 0;
		}
		rc = redisConnectWithTimeout(host, (int)port, tv);
	}
	if (!rc) {
		snprintf(err, errlen, "redis at %s: out of memory", addr);
		return NULL;
	}
	if (rc->err) {
		snprintf(err, errlen, "redis at %s: cannot connect: %s", addr, rc->errstr);
		redisFree(rc);
		return NULL;
	}
	if (redisSetTimeout(rc, tv) != REDIS_OK) {
		snprintf(err, errlen, "redis at %s: cannot set a timeout", addr);
		redisFree(rc);
		return NULL;
	}
	if (wait_loaded(rc, addr, err, errlen)) {
		redisFree(rc);
		return NULL;
	}
	return rc;
}

/* Runs one command; NULL with <err> set if it failed to run (the context
 * is then unusable) — an error REPLY is returned as a reply. */
static redisReply *cmd(redisContext *rc, int argc, const char **argv, const size_t *lens,
		       char *err, size_t errlen)
{
	redisReply *r = redisCommandArgv(rc, argc, argv, lens);
	if (!r)
		snprintf(err, errlen, "redis: %s: %s", argv[0], rc->errstr[0] ? rc->errstr : "no reply");
	return r;
}

int redis_boot_load(redisContext *rc, int replace, char *err, size_t errlen)
{
	const char *argv[4] = { "FUNCTION", "LOAD" };
	size_t lens[4] = { 8, 4 };
	int argc = 2, ret = -1;
	if (replace) {
		argv[argc] = "REPLACE";
		lens[argc++] = 7;
	}
	argv[argc] = redis_lib_lua;
	lens[argc++] = redis_lib_lua_len;
	redisReply *r = cmd(rc, argc, argv, lens, err, errlen);
	if (!r)
		return -1;
	if (r->type == REDIS_REPLY_STRING && !strcmp(r->str, "tether"))
		ret = 0;
	else if (!replace && r->type == REDIS_REPLY_ERROR && strstr(r->str, "already exists"))
		ret = 0; /* a node (or an earlier tetherctl) loaded it: keep theirs */
	else if (r->type == REDIS_REPLY_ERROR)
		snprintf(err, errlen, "redis: FUNCTION LOAD of the tether library: %s%s", r->str,
			 strstr(r->str, "unknown command") ? " (Redis >= 7.0 is needed)" : "");
	else
		snprintf(err, errlen, "redis: FUNCTION LOAD: unexpected reply type %d", r->type);
	freeReplyObject(r);
	return ret;
}

void redis_boot_key_check_value(const uint8_t key[32], char out[65])
{
	static const char label[] = "tether key check";
	uint8_t mac[crypto_auth_hmacsha256_BYTES];
	crypto_auth_hmacsha256_state st;
	crypto_auth_hmacsha256_init(&st, key, 32);
	crypto_auth_hmacsha256_update(&st, (const uint8_t *)label, sizeof(label) - 1);
	crypto_auth_hmacsha256_final(&st, mac);
	sodium_memzero(&st, sizeof(st));
	sodium_bin2hex(out, 65, mac, sizeof(mac));
}

int redis_boot_check_key(redisContext *rc, const uint8_t key[32], char *err, size_t errlen)
{
	char mine[65];
	redis_boot_key_check_value(key, mine);
	/* SET NX ... GET (Redis >= 7.0): one round trip, and the value that
	 * stands there afterwards is either ours or the one we got back. */
	const char *argv[] = { "SET", REDIS_KEYCHECK_KEY, mine, "NX", "GET" };
	size_t lens[] = { 3, strlen(REDIS_KEYCHECK_KEY), 64, 2, 3 };
	redisReply *r = cmd(rc, 5, argv, lens, err, errlen);
	int ret = -1;
	if (!r)
		return -1;
	if (r->type == REDIS_REPLY_NIL) {
		ret = 0; /* first node: our value is the cluster's now */
	} else if (r->type == REDIS_REPLY_STRING) {
		if (r->len == 64 && sodium_memcmp(r->str, mine, 64) == 0) {
			ret = 0;
		} else {
			snprintf(err, errlen, "this node's token key differs from the cluster's: every "
				 "node must use the same [tokens] key_file (copy it from a running node; "
				 "Redis key %s holds the cluster's key check)", REDIS_KEYCHECK_KEY);
			ret = 1;
		}
	} else if (r->type == REDIS_REPLY_ERROR) {
		snprintf(err, errlen, "redis: SET %s: %s", REDIS_KEYCHECK_KEY, r->str);
	} else {
		snprintf(err, errlen, "redis: SET %s: unexpected reply type %d", REDIS_KEYCHECK_KEY, r->type);
	}
	freeReplyObject(r);
	return ret;
}

int redis_boot(const char *addr, const uint8_t key[32], char *err, size_t errlen)
{
	redisContext *rc = redis_boot_connect(addr, err, errlen);
	int ret = -1;
	if (!rc)
		return -1;
	if (redis_boot_load(rc, 1, err, errlen))
		goto out;
	ret = redis_boot_check_key(rc, key, err, errlen);
out:
	if (ret < 0) { /* name the server: there may be several in a config's history */
		char why[512];
		snprintf(why, sizeof(why), "%s", err);
		snprintf(err, errlen, "redis at %s: %s", addr, why);
	}
	redisFree(rc);
	return ret;
}

int redis_boot_lease(const char *addr, const char *name, const char *holder, unsigned ttl_ms,
		     char *err, size_t errlen)
{
	char key[128], ttl[16];
	if (snprintf(key, sizeof(key), RKEY_PREFIX "{node:%s}:lease", name) >= (int)sizeof(key)) {
		snprintf(err, errlen, "node name too long");
		return -1;
	}
	snprintf(ttl, sizeof(ttl), "%u", ttl_ms);
	redisContext *rc = redis_boot_connect(addr, err, errlen);
	if (!rc)
		return -1;
	const char *argv[] = { "FCALL", "tether_lease_acquire", "1", key, holder, ttl };
	size_t lens[6];
	for (int i = 0; i < 6; i++)
		lens[i] = strlen(argv[i]);
	redisReply *r = cmd(rc, 6, argv, lens, err, errlen);
	int ret = r ? 0 : -1;
	if (r && r->type == REDIS_REPLY_ERROR) {
		snprintf(err, errlen, "redis: lease of node %s: %s", name, r->str);
		ret = 1;
	}
	freeReplyObject(r);
	redisFree(rc);
	return ret;
}
