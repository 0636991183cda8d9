/* Fuzz target: gossip/addr.c over arbitrary text. Addresses come from
 * peers (signed address records, accepted connections), so the parser must
 * never read past the string, and what it accepts must be consistent: a
 * parsed literal has a family, a prefix exactly when it is not loopback,
 * source bytes of its family's length, and a prefix text that names it. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char s[200];
    size_t n = size < sizeof s - 1 ? size : sizeof s - 1;
    memcpy(s, data, n);
    s[n] = '\0'; /* as the core holds addresses: NUL-terminated text */
    mm_ip ip;
    uint8_t src[65];
    char text[64];
    uint64_t pfx = mm_addr_prefix(s);
    size_t sn = mm_addr_source_bytes(s, src);
    if (sn < 1 || sn > 65) abort();
    mm_addr_prefix_text(pfx, text, sizeof text);
    if (!memchr(text, '\0', sizeof text)) abort();
    if (mm_ip_parse(s, &ip) != 0) {
        if (ip.family != 0 || pfx != 0 || src[0] != 0) abort();
        return 0;
    }
    if (ip.family != 4 && ip.family != 6) abort();
    if ((pfx == 0) != ip.loopback) abort();
    if (pfx && (unsigned)(pfx >> 56) != ip.family) abort();
    if (!ip.loopback && (src[0] != ip.family || sn != (ip.family == 4 ? 5u : 9u))) abort();
    if (ip.family == 4 && memcmp(ip.ip + 4, (const uint8_t[12]){0}, 12) != 0) abort();
    return 0;
}
