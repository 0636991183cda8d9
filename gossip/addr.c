/* Address grouping for the per-address limits (addr.h). A small parser of
 * its own: gossip/ may not include <arpa/inet.h> (tests/check_purity.sh). */
#define _GNU_SOURCE /* memrchr */
#include "addr.h"

#include <stdio.h>
#include <string.h>

/* Parse a dotted quad at s..s+n exactly; 0 or -1. */
static int parse_v4(const char *s, size_t n, uint8_t out[4])
{
    size_t i = 0;
    for (int part = 0; part < 4; part++) {
        if (part) {
            if (i >= n || s[i] != '.') return -1;
            i++;
        }
        unsigned v = 0, digits = 0;
        while (i < n && s[i] >= '0' && s[i] <= '9' && digits < 4) {
            v = v * 10 + (unsigned)(s[i] - '0');
            i++, digits++;
        }
        if (!digits || digits > 3 || v > 255 || (digits > 1 && s[i - digits] == '0')) return -1;
        out[part] = (uint8_t)v;
    }
    return i == n ? 0 : -1;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Parse an IPv6 literal at s..s+n exactly (RFC 4291 §2.2: groups of 1-4 hex
 * digits, at most one "::", an optional dotted quad in the last 32 bits; no
 * zone id). 0 or -1. */
static int parse_v6(const char *s, size_t n, uint8_t out[16])
{
    uint16_t g[8];
    int ng = 0, gap = -1; /* gap: the group index where "::" stands */
    size_t i = 0;
    if (n >= 2 && s[0] == ':' && s[1] == ':') {
        gap = 0;
        i = 2;
        if (i == n) goto done;
    } else if (n && s[0] == ':') {
        return -1;
    }
    for (;;) {
        /* a dotted quad may close the address, in the place of two groups */
        size_t j = i;
        while (j < n && s[j] != ':' && s[j] != '.') j++;
        if (j < n && s[j] == '.') {
            size_t end = i;
            while (end < n && s[end] != ':') end++;
            if (end != n || ng > 6) return -1;
            uint8_t q[4];
            if (parse_v4(s + i, n - i, q) != 0) return -1;
            g[ng++] = (uint16_t)(q[0] << 8 | q[1]);
            g[ng++] = (uint16_t)(q[2] << 8 | q[3]);
            break;
        }
        unsigned v = 0;
        int digits = 0;
        while (i < n && hexval(s[i]) >= 0) {
            if (++digits > 4) return -1;
            v = v << 4 | (unsigned)hexval(s[i++]);
        }
        if (!digits || ng == 8) return -1;
        g[ng++] = (uint16_t)v;
        if (i == n) break;
        if (s[i] != ':') return -1;
        i++;
        if (i < n && s[i] == ':') { /* "::" */
            if (gap >= 0) return -1;
            gap = ng;
            i++;
            if (i == n) break;
        } else if (i == n) {
            return -1; /* a trailing single ':' */
        }
    }
done:
    if (gap < 0 ? ng != 8 : ng > 7) return -1;
    memset(out, 0, 16);
    int tail = gap < 0 ? 0 : ng - gap; /* groups after the "::" */
    int head = ng - tail;
    for (int k = 0; k < head; k++) out[2 * k] = (uint8_t)(g[k] >> 8), out[2 * k + 1] = (uint8_t)g[k];
    for (int k = 0; k < tail; k++) {
        int at = 8 - tail + k;
        out[2 * at] = (uint8_t)(g[head + k] >> 8), out[2 * at + 1] = (uint8_t)g[head + k];
    }
    return 0;
}

static int parse_port(const char *s, uint16_t *port)
{
    unsigned v = 0;
    if (!*s) return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || (v = v * 10 + (unsigned)(*s - '0')) > 65535) return -1;
    }
    *port = (uint16_t)v;
    return 0;
}

int mm_ip_parse(const char *addr, mm_ip *out)
{
    memset(out, 0, sizeof *out);
    if (!addr) return -1;
    size_t len = strnlen(addr, 128);
    const char *host = addr, *port = NULL;
    size_t hlen;
    if (addr[0] == '[') {
        const char *close = memchr(addr, ']', len);
        if (!close) return -1;
        host = addr + 1;
        hlen = (size_t)(close - host);
        if (close[1] == ':') port = close + 2;
        else if (close[1]) return -1;
        if (parse_v6(host, hlen, out->ip) != 0) return -1;
        out->family = 6;
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(out->ip, mapped, 12) == 0) { /* ::ffff:a.b.c.d is IPv4 */
            memmove(out->ip, out->ip + 12, 4);
            memset(out->ip + 4, 0, 12);
            out->family = 4;
        }
    } else {
        const char *colon = memchr(addr, ':', len);
        hlen = colon ? (size_t)(colon - addr) : len;
        if (colon) port = colon + 1;
        if (parse_v4(host, hlen, out->ip) != 0) {
            memset(out, 0, sizeof *out);
            return -1;
        }
        out->family = 4;
    }
    if (port && parse_port(port, &out->port) != 0) {
        memset(out, 0, sizeof *out);
        return -1;
    }
    static const uint8_t v6_loop[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    out->loopback = out->family == 4 ? out->ip[0] == 127 : memcmp(out->ip, v6_loop, 16) == 0;
    return 0;
}

uint64_t mm_addr_prefix(const char *addr)
{
    mm_ip ip;
    if (mm_ip_parse(addr, &ip) != 0 || ip.loopback) return 0;
    uint64_t k = (uint64_t)ip.family << 56;
    int bytes = ip.family == 4 ? 3 : 6; /* /24 or /48 */
    for (int i = 0; i < bytes; i++) k |= (uint64_t)ip.ip[i] << (8 * (bytes - 1 - i));
    return k;
}

void mm_addr_prefix_text(uint64_t prefix, char *out, size_t cap)
{
    if (!cap) return;
    unsigned fam = (unsigned)(prefix >> 56);
    if (fam == 4) {
        snprintf(out, cap, "%u.%u.%u.0/24", (unsigned)(prefix >> 16) & 255, (unsigned)(prefix >> 8) & 255,
                 (unsigned)prefix & 255);
    } else if (fam == 6) {
        snprintf(out, cap, "%x:%x:%x::/48", (unsigned)(prefix >> 32) & 0xffff, (unsigned)(prefix >> 16) & 0xffff,
                 (unsigned)prefix & 0xffff);
    } else {
        snprintf(out, cap, "(no prefix)");
    }
}

size_t mm_addr_source_bytes(const char *addr, uint8_t out[65])
{
    mm_ip ip;
    if (mm_ip_parse(addr, &ip) == 0 && !ip.loopback) {
        out[0] = ip.family;
        size_t n = ip.family == 4 ? 4 : 8; /* /32 or /64 */
        memcpy(out + 1, ip.ip, n);
        return 1 + n;
    }
    /* Loopback: the whole text, port included (each local connection is its
     * own source). A host name: the name without its port. Family byte 0
     * keeps both apart from any literal above. */
    size_t n = addr ? strnlen(addr, 64) : 0;
    const char *colon = n ? memrchr(addr, ':', n) : NULL;
    if (!ip.loopback && colon) n = (size_t)(colon - addr);
    out[0] = 0;
    if (n) memcpy(out + 1, addr, n);
    return 1 + n;
}
