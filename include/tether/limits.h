/* include/tether/limits.h - per-address connection limits and the authentication guessing rate.
 *
 * Connections. Every accepted socket is counted under its source address
 * (shared by all workers: SO_REUSEPORT spreads one address's connections
 * over them) and, until the stream authenticates, in one process-wide
 * pre-authentication count. Over [limits] max_conns_per_ip or
 * max_preauth_conns the worker closes the socket at accept, before TLS
 * and without writing a byte. Addresses are the canonical text of the
 * peer (IPv4-mapped IPv6 is written as IPv4), from transport peer_ip.
 *
 * max_preauth_conns defaults to 10000: a stranger's connection costs its
 * descriptor, its TLS state (~40 KiB in BoringSSL) and at most
 * preauth_max_stanza_size of parser memory (16 KiB), so 10000 of them are
 * under 1 GiB at worst, far below LimitNOFILE in deploy/tetherd.service,
 * and still 100 addresses at their full max_conns_per_ip. Authenticated
 * streams are not limited here; only strangers compete for these slots.
 *
 * Guessing. Token buckets (ratelimit.h):
 *   - per source address (IPv6: per /64, what one host usually has):
 *     burst auth_fail_burst_per_ip (20), refill auth_fail_rate_per_ip
 *     (5/s); every failed attempt takes a token;
 *   - per account: burst auth_fail_burst_per_account (50), refill
 *     auth_fail_rate_per_account (2/s); every attempt on the account from
 *     an address that has failures of its own (its bucket is not full)
 *     takes a token.
 * An attempt is refused (SASL temporary-auth-failure, no password or
 * token checked, no token taken) when its address's bucket is empty, or
 * when it comes from an address with failures and the account's bucket is
 * empty. So someone else's failures never lock out the owner on a clean
 * address, while a distributed guesser gets one free attempt per address
 * and then shares the account's 2 a second with every other address that
 * failed. (Keying by (account, address) instead would not slow a
 * distributed guesser at all.)
 *
 * Every function takes a NULL <l> as "no limits" (unit tests of c2s).
 */
#ifndef TETHER_LIMITS_H
#define TETHER_LIMITS_H

#include <stdint.h>

struct config;
struct transport;

struct limits;

/* Which limit refused something (also its metric and log name). */
enum limits_hit {
	LIMITS_OK = 0,
	LIMITS_CONNS_PER_IP,     /* max_conns_per_ip */
	LIMITS_PREAUTH_CONNS,    /* max_preauth_conns */
	LIMITS_AUTH_PER_IP,      /* auth_fail_*_per_ip */
	LIMITS_AUTH_PER_ACCOUNT, /* auth_fail_*_per_account */
};

/* From the [limits] keys of <cfg>. NULL on OOM. */
struct limits *limits_new(const struct config *cfg);
void limits_free(struct limits *l);

/* A socket from <ip> was accepted. Returns LIMITS_OK (then it is counted,
 * as unauthenticated, until limits_conn_close()), or the limit it is over
 * (nothing counted; the caller closes it). Counts the hit in /metrics and
 * logs it at most once a second per limit, with the number not logged.
 * <ip> NULL: a trusted proxy's socket, counted only as unauthenticated
 * until its PROXY header names the client (limits_conn_client). */
enum limits_hit limits_conn_open(struct limits *l, const char *ip);

/* The PROXY header of a socket counted with limits_conn_open(l, NULL)
 * names client <ip>: counts it against max_conns_per_ip from now on, or
 * returns LIMITS_CONNS_PER_IP (nothing counted; the caller closes). */
enum limits_hit limits_conn_client(struct limits *l, const char *ip);

/* The connection authenticated (<authed> 1) or went back to
 * unauthenticated (0): moves it out of or into the pre-auth count. The
 * caller calls it on changes only. */
void limits_conn_authed(struct limits *l, int authed);

/* The socket of a connection counted by limits_conn_open() is closed;
 * <authed> as last told; <ip> as counted (NULL if no address was). */
void limits_conn_close(struct limits *l, const char *ip, int authed);

/* Counted now: connections from <ip>, and unauthenticated ones (tests). */
unsigned limits_conns_of(struct limits *l, const char *ip);
unsigned limits_preauth_count(struct limits *l);

/* Start of an authentication attempt on the stream at <tp>/<io> for
 * <account> (bare JID, or NULL when not known): 1 = refuse it now with
 * temporary-auth-failure (hit counted and logged, rate-limited), 0 = go on
 * (the account's bucket was charged if the address has failures). */
int limits_auth_refused(struct limits *l, const struct transport *tp, void *io,
			const char *account, uint64_t now_ms);

/* An attempt failed with <why> (a SASL condition name; "temporary-auth-
 * failure" is our own refusal and is not counted): takes a token from
 * the address's bucket and logs the failure, at most one line a second
 * with the number not logged. */
void limits_auth_failed(struct limits *l, const struct transport *tp, void *io,
			const char *why, uint64_t now_ms);

#endif /* TETHER_LIMITS_H */
