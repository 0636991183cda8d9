/* Addresses as the per-address limits see them (SECURITY.md §2.5, §2.6).
 *
 * A peer's address is text, "a.b.c.d:port" or "[v6]:port". The limits do not
 * care about one address but about who may control many: an IPv4 /24 or an
 * IPv6 /48 is one "prefix" (one site or provider allocation: view entries,
 * connections and bans are counted per prefix), an IPv4 /32 or an IPv6 /64
 * is one "source" (one host or one customer's subnet: half-open connections
 * and the handshake rate are counted per source). An IPv4-mapped IPv6
 * address (::ffff:a.b.c.d) is the IPv4 address it maps.
 *
 * Loopback (127/8, ::1) has no prefix: every node of a machine shares it, so
 * there each connection is its own source and nothing is capped per prefix.
 * A host name has no prefix either (it is resolved outside the core), and its
 * text is its source. Pure functions: no I/O, no allocation. */
#ifndef MM_ADDR_H
#define MM_ADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint8_t family;  /* 4, 6, or 0: not an IP address literal */
    bool loopback;   /* 127/8 or ::1 */
    uint8_t ip[16];  /* IPv4 in ip[0..3] */
    uint16_t port;
} mm_ip;

/* Parse "a.b.c.d:port" or "[v6]:port" (the port may be absent). Returns 0,
 * or -1 with out->family = 0 if addr is not an IP literal of either form. */
int mm_ip_parse(const char *addr, mm_ip *out);

/* The prefix of addr (/24 or /48) as a key that is never 0, or 0 if addr has
 * none (loopback, a host name, malformed). Equal keys: the same prefix. */
uint64_t mm_addr_prefix(const char *addr);

/* The prefix key as text for a log line: "10.1.2.0/24", "2001:db8:7::/48". */
void mm_addr_prefix_text(uint64_t prefix, char *out, size_t cap);

/* The bytes that identify addr's source, for a keyed hash: the family and
 * the /32 or /64; on loopback and for host names, the whole text (port
 * included). Returns the length written to out (at most 64 + 1). */
size_t mm_addr_source_bytes(const char *addr, uint8_t out[65]);

#endif
