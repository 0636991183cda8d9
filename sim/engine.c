#include "engine.h"

#include <stdlib.h>
#include <string.h>

#include "mm_error.h"

void mm_engine_init(mm_engine *e) { memset(e, 0, sizeof *e); }

void mm_engine_free(mm_engine *e)
{
    free(e->heap);
    memset(e, 0, sizeof *e);
}

/* a runs before b */
static bool before(const mm_event *a, const mm_event *b) { return a->t < b->t || (a->t == b->t && a->seq < b->seq); }

int mm_engine_push(mm_engine *e, const mm_event *ev)
{
    if (e->n == e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 1024;
        mm_event *h = realloc(e->heap, cap * sizeof *h);
        if (!h) return MM_ERR_NOMEM;
        e->heap = h;
        e->cap = cap;
    }
    mm_event x = *ev;
    if (x.t < e->now) x.t = e->now;
    x.seq = e->seq++;
    size_t i = e->n++;
    while (i > 0) { /* sift up */
        size_t parent = (i - 1) / 2;
        if (!before(&x, &e->heap[parent])) break;
        e->heap[i] = e->heap[parent];
        i = parent;
    }
    e->heap[i] = x;
    return MM_OK;
}

bool mm_engine_pop(mm_engine *e, uint64_t until, mm_event *ev)
{
    if (e->n == 0 || e->heap[0].t > until) return false;
    *ev = e->heap[0];
    mm_event last = e->heap[--e->n];
    size_t i = 0;
    for (;;) { /* sift the last element down from the root */
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const mm_event *best = &last;
        if (l < e->n && before(&e->heap[l], best)) m = l, best = &e->heap[l];
        if (r < e->n && before(&e->heap[r], best)) m = r;
        if (m == i) break;
        e->heap[i] = e->heap[m];
        i = m;
    }
    if (e->n) e->heap[i] = last;
    e->now = ev->t;
    e->processed++;
    return true;
}

uint64_t mm_engine_next_time(const mm_engine *e) { return e->n ? e->heap[0].t : UINT64_MAX; }
