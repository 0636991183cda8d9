/* A small pool of worker threads for data-parallel loops.
 *
 * mm_pool_run(pool, fn, arg, n) calls fn(arg, i) for every i in [0, n) on the
 * pool's threads and the caller's, and returns when all calls have returned.
 * Its signature is mm_gossip_env.parallel's: a runtime passes the pool as
 * that hook so the gossip core's sealing spreads over cores. One caller at a
 * time (the runtime's loop thread). */
#ifndef MM_POOL_H
#define MM_POOL_H

#include <stdint.h>

typedef struct mm_pool mm_pool;

/* threads: workers besides the caller (0 is valid: everything runs in the
 * caller). Returns NULL if threads cannot be started. */
mm_pool *mm_pool_new(int threads);
void mm_pool_free(mm_pool *p);
void mm_pool_run(void *pool, void (*fn)(void *arg, uint32_t i), void *arg, uint32_t n);

#endif
