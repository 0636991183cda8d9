/* The simulated runtime (DESIGN.md, "The simulator"; docs/simulator.md).
 *
 * Every node is a real mm_gossip core, the code node/ runs, driven in
 * virtual time over the modeled network of net.h. The workload is a
 * surrogate: each node holds a float vector drawn N(0, 1) per coordinate and
 * averages it with peers, so consensus and mass conservation can be
 * measured exactly. A run is a pure function of its scenario: the same
 * scenario and seed give byte-identical output. */
#ifndef MM_SIM_SIM_H
#define MM_SIM_SIM_H

#include <stdint.h>
#include <stdio.h>

#include "mm_error.h"
#include "scenario.h"

/* The state of the network at one instant (over the nodes that are up). */
typedef struct {
    double t;             /* virtual s */
    uint32_t alive;       /* nodes up */
    uint32_t nonfinite;   /* nodes up holding a non-finite value (left out of the statistics) */
    double consensus_var; /* variance of the values around their mean, averaged over coordinates */
    double mean_err;      /* RMS over coordinates of (mean now - initial mean of all nodes) */
    uint64_t exchanges_ok, exchanges_failed; /* exchange ends seen by each side, so far */
    uint64_t bytes;       /* bytes that left uplinks, so far */
    double view, sessions; /* mean view size and open sessions per node up */
    uint64_t events;
} mm_sim_report;

typedef struct {
    mm_sim_report last; /* at the end */
    uint64_t events, crashes, restarts, connects, refused, broken;
    uint64_t stuck;        /* ticks after which a core's deadline stayed in the past (a core bug) */
    uint32_t nonfinite_max; /* most nodes ever holding a non-finite value */
    long leaked;           /* the cores' allocations not freed at the end (0) */
    uint64_t core_bytes_peak; /* the most memory all cores held at once (allocated, not all touched) */
} mm_sim_result;

typedef struct {
    FILE *out;   /* JSON lines (NULL: none) */
    FILE *trace; /* every core's log lines (NULL: none) */
    void *ctx;
    void (*on_report)(void *ctx, const mm_scenario *s, const mm_sim_report *r);
    /* Called every 65536 events with the virtual time (s). */
    void (*progress)(void *ctx, const mm_scenario *s, double t, uint64_t events);
} mm_sim_opts;

/* Run one scenario. Returns 0, or a negative mm_err with err filled. */
int mm_sim_run(const mm_scenario *s, const mm_sim_opts *o, mm_sim_result *res, mm_error *err);

#endif
