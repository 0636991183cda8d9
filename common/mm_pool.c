#include "mm_pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

struct mm_pool {
    pthread_mutex_t mu;
    pthread_cond_t work, done;
    pthread_t *threads;
    int nthreads;
    bool stop;
    uint64_t generation; /* bumped for every batch */
    /* the batch in progress */
    void (*fn)(void *arg, uint32_t i);
    void *arg;
    uint32_t n;
    atomic_uint next;  /* next index to take */
    uint32_t finished; /* calls returned, under mu */
    int busy;          /* workers inside the batch, under mu */
};

/* Take indices until none is left; returns how many calls this thread made. */
static uint32_t drain(mm_pool *p)
{
    uint32_t made = 0, i;
    while ((i = atomic_fetch_add(&p->next, 1)) < p->n) {
        p->fn(p->arg, i);
        made++;
    }
    return made;
}

static void *worker(void *arg)
{
    mm_pool *p = arg;
    uint64_t seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->generation == seen) pthread_cond_wait(&p->work, &p->mu);
        if (p->stop) break;
        seen = p->generation;
        p->busy++;
        pthread_mutex_unlock(&p->mu);
        uint32_t made = drain(p);
        pthread_mutex_lock(&p->mu);
        p->finished += made;
        if (--p->busy == 0) pthread_cond_broadcast(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

mm_pool *mm_pool_new(int threads)
{
    mm_pool *p = calloc(1, sizeof *p);
    if (!p || threads < 0) {
        free(p);
        return NULL;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work, NULL);
    pthread_cond_init(&p->done, NULL);
    atomic_init(&p->next, 0);
    p->threads = threads ? calloc((size_t)threads, sizeof *p->threads) : NULL;
    if (threads && !p->threads) {
        mm_pool_free(p);
        return NULL;
    }
    for (; p->nthreads < threads; p->nthreads++)
        if (pthread_create(&p->threads[p->nthreads], NULL, worker, p) != 0) {
            mm_pool_free(p);
            return NULL;
        }
    return p;
}

void mm_pool_free(mm_pool *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nthreads; i++) pthread_join(p->threads[i], NULL);
    free(p->threads);
    pthread_cond_destroy(&p->work);
    pthread_cond_destroy(&p->done);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

void mm_pool_run(void *pool, void (*fn)(void *arg, uint32_t i), void *arg, uint32_t n)
{
    mm_pool *p = pool;
    if (n == 0) return;
    if (!p || p->nthreads == 0 || n == 1) {
        for (uint32_t i = 0; i < n; i++) fn(arg, i);
        return;
    }
    pthread_mutex_lock(&p->mu);
    /* Workers still leaving the previous batch see next >= n there and take
     * nothing more; wait until they are out before reusing the fields. */
    while (p->busy) pthread_cond_wait(&p->done, &p->mu);
    p->fn = fn;
    p->arg = arg;
    p->n = n;
    p->finished = 0;
    atomic_store(&p->next, 0);
    p->generation++;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
    uint32_t made = drain(p);
    pthread_mutex_lock(&p->mu);
    p->finished += made;
    while (p->finished < n) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}
