/* include/tether/netaddr.h - "host:port" strings to socket addresses. */
#ifndef TETHER_NETADDR_H
#define TETHER_NETADDR_H

#include <sys/socket.h>

/* Parses "a.b.c.d:port" or "[v6]:port" (numeric hosts only: no resolver
 * call, so it never blocks) into <ss>/<len>. Returns 0, or -1 if <s> is
 * not such a string. */
int netaddr_parse(const char *s, struct sockaddr_storage *ss, socklen_t *len);

#endif /* TETHER_NETADDR_H */
