/* A small seeded PRNG (xoshiro256**, seeded through splitmix64).
 *
 * Every random choice in murmur draws from an mm_rng that its owner seeded, so
 * a run is reproduced from its seeds. There is no global generator. */
#ifndef MM_RNG_H
#define MM_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t s[4];
} mm_rng;

void mm_rng_seed(mm_rng *r, uint64_t seed);
uint64_t mm_rng_u64(mm_rng *r);
/* Uniform in [0, n), without modulo bias; n > 0. */
uint64_t mm_rng_below(mm_rng *r, uint64_t n);
/* Uniform double in [0, 1). */
double mm_rng_uniform(mm_rng *r);
/* Standard normal (Box-Muller, one draw per call). */
double mm_rng_normal(mm_rng *r);
/* Fill buf with n random bytes. Its signature fits mm_gossip_env.random
 * (ctx is the mm_rng), so a seeded generator can drive a gossip core. */
void mm_rng_fill(void *rng, void *buf, size_t n);
/* Fisher-Yates shuffle of n 32-bit values. */
void mm_rng_shuffle_u32(mm_rng *r, uint32_t *v, uint32_t n);

#endif
