/* server/limits.c - per-address connection limits and the authentication guessing rate.
 *
 * Per-address connection counts live in a shtab keyed by the address text;
 * a node exists while the address has connections, so the table holds no
 * more nodes than there are sockets. The pre-auth count is one atomic. The
 * check and the increment happen under the stripe's write lock (per
 * address) and as one fetch_add (pre-auth, undone when over), so two
 * workers accepting from the same address at once cannot both slip in. */
#include "tether/limits.h"

#include <arpa/inet.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tether/config.h"
#include "tether/log.h"
#include "tether/metrics.h"
#include "tether/netaddr.h"
#include "tether/ratelimit.h"
#include "tether/shtab.h"
#include "tether/timer.h"
#include "tether/transport.h"

#define AUTH_MAX_KEYS 100000 /* buckets per table: ~200 bytes each, 20 MB at most */

struct ipcount {
	struct shtab_node n;         /* first: the table links through it */
	unsigned conns;
	char ip[];
};

struct limits {
	unsigned max_per_ip, max_preauth;  /* 0 = no limit */
	struct shtab *ips;
	atomic_uint preauth;
	struct ratelimit *auth_ip, *auth_acct;
	struct ratelimit_log log_hit[LIMITS_AUTH_PER_ACCOUNT + 1];
	struct ratelimit_log log_fail;
};

static const char *const hit_name[] = {
	[LIMITS_CONNS_PER_IP] = "max_conns_per_ip",
	[LIMITS_PREAUTH_CONNS] = "max_preauth_conns",
	[LIMITS_AUTH_PER_IP] = "auth_fail_rate_per_ip",
	[LIMITS_AUTH_PER_ACCOUNT] = "auth_fail_rate_per_account",
};

static const enum metric_id hit_metric[] = {
	[LIMITS_CONNS_PER_IP] = M_LIMIT_CONNS_PER_IP,
	[LIMITS_PREAUTH_CONNS] = M_LIMIT_PREAUTH_CONNS,
	[LIMITS_AUTH_PER_IP] = M_LIMIT_AUTH_PER_IP,
	[LIMITS_AUTH_PER_ACCOUNT] = M_LIMIT_AUTH_PER_ACCOUNT,
};

static int match_ip(const struct shtab_node *n, const char *key)
{
	return !strcmp(((const struct ipcount *)n)->ip, key);
}

struct limits *limits_new(const struct config *cfg)
{
	struct limits *l = calloc(1, sizeof(*l));
	if (!l)
		return NULL;
	l->max_per_ip = cfg->max_conns_per_ip;
	l->max_preauth = cfg->max_preauth_conns;
	l->ips = shtab_new(match_ip, 64);
	l->auth_ip = ratelimit_new(cfg->auth_fail_burst_per_ip, cfg->auth_fail_rate_per_ip, AUTH_MAX_KEYS);
	l->auth_acct = ratelimit_new(cfg->auth_fail_burst_per_account, cfg->auth_fail_rate_per_account,
				     AUTH_MAX_KEYS);
	if (!l->ips || !l->auth_ip || !l->auth_acct) {
		limits_free(l);
		return NULL;
	}
	return l;
}

void limits_free(struct limits *l)
{
	if (!l)
		return;
	shtab_free(l->ips, shtab_node_free);
	ratelimit_free(l->auth_ip);
	ratelimit_free(l->auth_acct);
	free(l);
}

/* Counts a hit of <which> and logs it, at most once a second per limit. */
static void report_hit(struct limits *l, enum limits_hit which, const char *who, unsigned max)
{
	uint64_t suppressed;
	metrics_inc(hit_metric[which]);
	if (!ratelimit_log_due(&l->log_hit[which], timer_now_ms(), &suppressed))
		return;
	if (which == LIMITS_CONNS_PER_IP || which == LIMITS_PREAUTH_CONNS)
		log_warn("limits: connection from %s refused: over %s (%u); %llu more refused "
			 "and not logged since the last line", who, hit_name[which], max,
			 (unsigned long long)suppressed);
	else
		log_warn("limits: authentication attempt from %s refused with temporary-auth-failure: "
			 "over %s; %llu more refused and not logged since the last line", who,
			 hit_name[which], (unsigned long long)suppressed);
}

/* One more socket from <ip>, unless it already has max_conns_per_ip. */
static enum limits_hit ip_add(struct limits *l, const char *ip)
{
	uint64_t h = shtab_hash(l->ips, ip);
	struct shtab_stripe *s = shtab_lock(l->ips, h, SHTAB_WRITE);
	struct ipcount *c = (struct ipcount *)shtab_find(s, h, ip);
	if (!c) {
		size_t len = strlen(ip) + 1;
		c = malloc(sizeof(*c) + len);
		if (c) { /* without memory: not counted (the connection itself will fail soon) */
			c->n.hash = h;
			c->conns = 0;
			memcpy(c->ip, ip, len);
			shtab_insert(s, &c->n);
		}
	}
	enum limits_hit rc = LIMITS_OK;
	if (c && l->max_per_ip && c->conns >= l->max_per_ip)
		rc = LIMITS_CONNS_PER_IP;
	else if (c)
		c->conns++;
	shtab_unlock(s);
	return rc;
}

static void ip_del(struct limits *l, const char *ip)
{
	uint64_t h = shtab_hash(l->ips, ip);
	struct shtab_stripe *s = shtab_lock(l->ips, h, SHTAB_WRITE);
	struct ipcount *c = (struct ipcount *)shtab_find(s, h, ip);
	if (c && --c->conns == 0) {
		shtab_remove(s, &c->n);
		free(c);
	}
	shtab_unlock(s);
}

enum limits_hit limits_conn_open(struct limits *l, const char *ip)
{
	if (!l)
		return LIMITS_OK;
	unsigned pre = atomic_fetch_add(&l->preauth, 1) + 1;
	if (l->max_preauth && pre > l->max_preauth) {
		atomic_fetch_sub(&l->preauth, 1);
		report_hit(l, LIMITS_PREAUTH_CONNS, ip ? ip : "a proxy", l->max_preauth);
		return LIMITS_PREAUTH_CONNS;
	}
	enum limits_hit rc = ip ? ip_add(l, ip) : LIMITS_OK;
	if (rc != LIMITS_OK) {
		atomic_fetch_sub(&l->preauth, 1);
		report_hit(l, rc, ip, l->max_per_ip);
	}
	return rc;
}

enum limits_hit limits_conn_client(struct limits *l, const char *ip)
{
	if (!l)
		return LIMITS_OK;
	enum limits_hit rc = ip_add(l, ip);
	if (rc != LIMITS_OK)
		report_hit(l, rc, ip, l->max_per_ip);
	return rc;
}

void limits_conn_authed(struct limits *l, int authed)
{
	if (!l)
		return;
	if (authed)
		atomic_fetch_sub(&l->preauth, 1);
	else
		atomic_fetch_add(&l->preauth, 1); /* already connected: not refused */
}

void limits_conn_close(struct limits *l, const char *ip, int authed)
{
	if (!l)
		return;
	if (!authed)
		atomic_fetch_sub(&l->preauth, 1);
	if (ip)
		ip_del(l, ip);
}

unsigned limits_conns_of(struct limits *l, const char *ip)
{
	uint64_t h = shtab_hash(l->ips, ip);
	struct shtab_stripe *s = shtab_lock(l->ips, h, SHTAB_READ);
	struct ipcount *c = (struct ipcount *)shtab_find(s, h, ip);
	unsigned n = c ? c->conns : 0;
	shtab_unlock(s);
	return n;
}

unsigned limits_preauth_count(struct limits *l)
{
	return atomic_load(&l->preauth);
}

/* The bucket key of an address: IPv6 by its /64 (one host usually has a
 * whole /64), IPv4 as is. */
static void ip_key(const char *ip, char out[INET6_ADDRSTRLEN + 4])
{
	struct in6_addr a6;
	if (ip && strchr(ip, ':') && inet_pton(AF_INET6, ip, &a6) == 1) {
		memset(a6.s6_addr + 8, 0, 8);
		inet_ntop(AF_INET6, &a6, out, INET6_ADDRSTRLEN);
		strcat(out, "/64");
		return;
	}
	snprintf(out, INET6_ADDRSTRLEN + 4, "%s", ip ? ip : "?");
}

static const char *peer_ip(const struct transport *tp, void *io, char buf[NETADDR_IP_MAX])
{
	return tp->peer_ip ? tp->peer_ip(io, buf) : NULL;
}

int limits_auth_refused(struct limits *l, const struct transport *tp, void *io,
			const char *account, uint64_t now_ms)
{
	if (!l)
		return 0;
	char ipbuf[NETADDR_IP_MAX];
	const char *ip = peer_ip(tp, io, ipbuf);
	if (!ip)
		return 0;
	char key[INET6_ADDRSTRLEN + 4];
	ip_key(ip, key);
	enum limits_hit why = LIMITS_OK;
	if (!ratelimit_allow(l->auth_ip, key, now_ms))
		why = LIMITS_AUTH_PER_IP;
	else if (account && ratelimit_known(l->auth_ip, key, now_ms)) {
		/* Only an address that failed itself pays into, and is held
		 * back by, the account's bucket. */
		if (!ratelimit_allow(l->auth_acct, account, now_ms))
			why = LIMITS_AUTH_PER_ACCOUNT;
		else
			ratelimit_hit(l->auth_acct, account, now_ms);
	}
	if (why == LIMITS_OK)
		return 0;
	report_hit(l, why, tp->peer(io), 0);
	return 1;
}

void limits_auth_failed(struct limits *l, const struct transport *tp, void *io,
			const char *why, uint64_t now_ms)
{
	uint64_t suppressed;
	if (l && !strcmp(why, "temporary-auth-failure"))
		return; /* our refusal (or the store's trouble): not a guess */
	char ipbuf[NETADDR_IP_MAX];
	const char *ip = peer_ip(tp, io, ipbuf);
	if (l && ip) {
		char key[INET6_ADDRSTRLEN + 4];
		ip_key(ip, key);
		ratelimit_hit(l->auth_ip, key, now_ms);
	}
	if (!l) {
		log_info("c2s %s: authentication failed: %s", tp->peer(io), why);
		return;
	}
	if (ratelimit_log_due(&l->log_fail, now_ms, &suppressed))
		log_info("c2s %s: authentication failed: %s (%llu more failures not logged since "
			 "the last line)", tp->peer(io), why, (unsigned long long)suppressed);
}
