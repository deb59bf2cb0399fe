/* include/tether/redis_boot.h - blocking Redis steps for the main thread and tetherctl: connect, load the library, check the cluster key. */
#ifndef TETHER_REDIS_BOOT_H
#define TETHER_REDIS_BOOT_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

/* Everything here BLOCKS (hiredis's synchronous API, with timeouts): it is
 * for tetherd's main thread before any worker runs, and for tetherctl.
 * Workers talk to Redis through rlink (server/rlink.c) on their ring. */

#define REDIS_BOOT_TIMEOUT_MS 2000  /* connect and each command */
#define REDIS_BOOT_LOADING_MS 60000 /* waiting for a Redis loading its dataset */

/* The key under which the token key check value is kept (see
 * redis_boot_check_key). Not hash-tagged with an account: it belongs to
 * the cluster. */
#define REDIS_KEYCHECK_KEY "t:{cluster}:keycheck"

/* Connects to <addr> ("host:port" or "unix:/path") with a timeout, and
 * waits (up to REDIS_BOOT_LOADING_MS) while Redis is still loading its
 * dataset. Returns the context, or NULL with "redis at ADDR: why" in <err>. */
redisContext *redis_boot_connect(const char *addr, char *err, size_t errlen);

/* Loads the FUNCTION library "tether" (store/redis_lib.lua, compiled in).
 * <replace> 1: FUNCTION LOAD REPLACE (tetherd at start: its own version
 * wins); 0: load only if no library "tether" is there yet (tetherctl: an
 * admin tool must not swap the functions under running nodes). Returns 0,
 * or -1 with a message in <err>. */
int redis_boot_load(redisContext *rc, int replace, char *err, size_t errlen);

/* The value that stands for <key> in Redis: HMAC-SHA-256(key, "tether key
 * check") in hex (65 bytes with the NUL). It identifies the key without
 * revealing it: nobody can get the key, or a token, from it. */
void redis_boot_key_check_value(const uint8_t key[32], char out[65]);

/* Makes sure every node seals tokens with the same key: stores the check
 * value of <key> under REDIS_KEYCHECK_KEY if there is none (SET NX), and
 * compares it with what is there. Returns 0 (same key, or first node), 1
 * (this node's key differs: the caller refuses to start; <err> says so)
 * or -1 (Redis error; <err> says which). */
int redis_boot_check_key(redisContext *rc, const uint8_t key[32], char *err, size_t errlen);

/* tetherd's start-up: connect to <addr>, FUNCTION LOAD REPLACE, check the
 * token key. 0, 1 (key mismatch) or -1, with <err> set on non-zero. */
int redis_boot(const char *addr, const uint8_t key[32], char *err, size_t errlen);

/* Takes node <name>'s lease t:{node:<name>}:lease for incarnation
 * <holder> ("<name>.<boot>") with a TTL of <ttl_ms>, before the node
 * serves anyone: a session bound before the first renewal would otherwise
 * belong to a node the reaper takes for dead. 0, 1 (held by another
 * incarnation: an earlier run's lease, still running out) or -1, with
 * <err> set on non-zero. */
int redis_boot_lease(const char *addr, const char *name, const char *holder, unsigned ttl_ms,
		     char *err, size_t errlen);

#endif /* TETHER_REDIS_BOOT_H */
