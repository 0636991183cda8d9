#include "mm_rng.h"

#include <math.h>
#include <string.h>

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void mm_rng_seed(mm_rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

uint64_t mm_rng_u64(mm_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

uint64_t mm_rng_below(mm_rng *r, uint64_t n)
{
    /* Reject the top partial bucket so every residue is equally likely. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n, x;
    do x = mm_rng_u64(r);
    while (x >= limit);
    return x % n;
}

double mm_rng_uniform(mm_rng *r) { return (double)(mm_rng_u64(r) >> 11) * 0x1.0p-53; }

double mm_rng_normal(mm_rng *r)
{
    /* Box-Muller; u1 in (0, 1] so the log is finite. */
    double u1 = 1.0 - mm_rng_uniform(r), u2 = mm_rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

void mm_rng_shuffle_u32(mm_rng *r, uint32_t *v, uint32_t n)
{
    for (uint32_t i = n; i > 1; i--) {
        uint32_t j = (uint32_t)mm_rng_below(r, i), t = v[i - 1];
        v[i - 1] = v[j];
        v[j] = t;
    }
}

void mm_rng_fill(void *rng, void *buf, size_t n)
{
    uint8_t *b = buf;
    for (size_t i = 0; i < n; i += 8) {
        uint64_t v = mm_rng_u64(rng);
        memcpy(b + i, &v, n - i < 8 ? n - i : 8);
    }
}
