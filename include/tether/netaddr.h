/* include/tether/netaddr.h - "host:port" strings to socket addresses. */
#ifndef TETHER_NETADDR_H
#define TETHER_NETADDR_H

#include <sys/socket.h>

/* Parses "a.b.c.d:port" or "[v6]:port" (numeric hosts only: no resolver
 * call, so it never blocks) into <ss>/<len>. Returns 0, or -1 if <s> is
 * not such a string. */
int netaddr_parse(const char *s, struct sockaddr_storage *ss, socklen_t *len);

#define NETADDR_IP_MAX 48    /* an address alone, NUL included */
#define NETADDR_PEER_MAX 64  /* "address:port", NUL included */

/* Writes the address of <ss> alone into <ip> (an IPv4-mapped IPv6 address
 * as IPv4, so one client has one spelling) and "address:port" into <peer>;
 * "?" for a family other than IPv4/IPv6. Either may be NULL. */
void netaddr_format(const struct sockaddr_storage *ss, char ip[NETADDR_IP_MAX],
		    char peer[NETADDR_PEER_MAX]);

/* Writes into <ip> the address alone of <peer>, an "address:port" string
 * netaddr_format wrote: what it wrote into <ip> from the same <ss> (all
 * before the last ':'; the port has none, and IPv6 is not bracketed).
 * Returns <ip>. Lets a connection keep one string for both. */
char *netaddr_peer_ip(const char *peer, char ip[NETADDR_IP_MAX]);

#endif /* TETHER_NETADDR_H */
