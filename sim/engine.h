/* The simulator's event queue over virtual nanoseconds (DESIGN.md, "The
 * simulator").
 *
 * A binary min-heap ordered by (time, insertion sequence): events scheduled
 * for the same instant run in the order they were scheduled, so a run is a
 * pure function of its inputs. Time jumps from one event to the next. One
 * thread; no clock. */
#ifndef MM_SIM_ENGINE_H
#define MM_SIM_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t t;    /* virtual time, ns */
    uint64_t seq;  /* set by mm_engine_push: breaks ties */
    uint32_t kind; /* the owner's event type */
    uint32_t node; /* the owner's subject (a node index) */
    uint64_t a, b; /* the owner's payload */
} mm_event;

typedef struct {
    mm_event *heap;
    size_t n, cap;
    uint64_t now;       /* time of the last event taken */
    uint64_t seq;       /* next insertion sequence */
    uint64_t processed; /* events taken so far */
} mm_engine;

void mm_engine_init(mm_engine *e);
void mm_engine_free(mm_engine *e);

/* Schedule ev (its t is clamped to now: no event goes into the past).
 * Returns 0 or MM_ERR_NOMEM. */
int mm_engine_push(mm_engine *e, const mm_event *ev);

/* Take the earliest event if its time is <= until: now becomes its time.
 * Returns false (and leaves now alone) when there is none. */
bool mm_engine_pop(mm_engine *e, uint64_t until, mm_event *ev);

/* Time of the earliest event, UINT64_MAX if none. */
uint64_t mm_engine_next_time(const mm_engine *e);

#endif
