/* net — socket addresses as the configuration writes them. */
#ifndef DSQ_NET_H
#define DSQ_NET_H

#include <stdbool.h>
#include <sys/socket.h>

/* Parse "HOST:PORT" (IPv4 literal, [IPv6] literal, or localhost; port
 * 0-65535, 0 = any free port). Returns 0 or -1. */
int dsq_parse_addr(const char *s, struct sockaddr_storage *out);

/* True when the address is in 127.0.0.0/8 or is ::1. */
bool dsq_addr_is_loopback(const struct sockaddr_storage *ss);

#endif
