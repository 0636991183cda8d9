/* Little-endian integers in byte buffers, for the fixed-layout formats
 * (certificates, revocation lists, static-key bindings). */
#ifndef MM_BYTES_H
#define MM_BYTES_H

#include <stdint.h>

static inline void mm_put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint64_t mm_get_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

#endif
