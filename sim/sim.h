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

#include "gossip.h"
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
    /* Invariants, checked as the run goes (docs/simulator.md, "Fault campaigns"). */
    uint64_t violations;   /* MERGEs that broke an invariant, and honest nodes left holding a non-finite value */
    char violation[200];   /* the first, with its time and node ("" if none) */
    uint64_t merges;       /* MERGE actions applied by honest nodes */
    uint64_t unsent_max;   /* the most bytes one connection had queued at the simulator, not yet sent */
    uint64_t ideal_avg;    /* pairwise averages done (fixed topologies) */
    uint64_t handshakes, handshakes_failed; /* the cores' handshakes_ok and _failed, summed over all lives */
    uint64_t sig_checks, sig_hits; /* Ed25519 checks asked of the shared cache, and answered by it */
    /* With sybils (scenario key sybil), at the end, over the honest nodes up:
     * the most and the mean sybil entries in a view; over the whole run, the
     * share of their completed exchanges that had a sybil partner: [0] of
     * all, [1] of those they started (partners they chose). */
    uint32_t sybils, sybil_view_max;
    double sybil_view_mean, sybil_share[2];
    /* With an eclipse: the honest share of the target's view, the least seen
     * at a report (once it held 8 entries) and at the end; and the share of
     * the exchanges the target started that had a colluder partner. */
    bool eclipse;
    double eclipse_view_min, eclipse_view_end, eclipse_partner_share;
} mm_sim_result;

/* A workload other than the surrogate: the nodes' parameters and their
 * training live outside sim/ (sim/workload_train.c builds one over
 * node/trainer.c); the simulator only calls it. Node i's parameters are
 * params(i), dim floats that snapshots copy and merges change in place. */
typedef struct {
    bool more;     /* the node trains on (else it has finished its epochs) */
    bool average;  /* start an exchange now (every average_every steps) */
    bool evaluated; /* an epoch just ended and was evaluated: */
    uint32_t epoch;
    uint64_t step;
    double acc, loss; /* test accuracy and loss */
    bool next_eval;   /* the node's next work item is an epoch's evaluation (else a step) */
} mm_sim_step_result;

typedef struct {
    void *ctx;
    uint32_t dim;
    float *(*params)(void *ctx, uint32_t i);
    /* Node i's work item that just ended (a step, or an epoch's evaluation). */
    void (*step)(void *ctx, uint32_t i, mm_sim_step_result *r);
    /* Test accuracy of node i now (loss into *loss), on the evaluation set. */
    double (*evaluate)(void *ctx, uint32_t i, double *loss);
    /* A state sync replaced node i's parameters: restart its optimizer's momentum. */
    void (*synced)(void *ctx, uint32_t i);
    /* Examples node i has trained on, lent with its snapshots (node/ weights merges by them). */
    uint64_t (*samples)(void *ctx, uint32_t i);
    /* The model's tensors (the cores clip per tensor); ntensors 0: one. */
    const mm_gossip_tensor *tensors;
    uint32_t ntensors;
} mm_sim_workload;

typedef struct {
    FILE *out;   /* JSON lines (NULL: none) */
    FILE *trace; /* every core's log lines (NULL: none) */
    void *ctx;
    void (*on_report)(void *ctx, const mm_scenario *s, const mm_sim_report *r);
    /* Check every signature in every core (else the cores share a cache of
     * the checks that passed: the same answers, far fewer Ed25519 checks). */
    bool no_sig_cache;
    /* Called every 65536 events with the virtual time (s). */
    void (*progress)(void *ctx, const mm_scenario *s, double t, uint64_t events);
    /* The scenario's training workload (NULL: the surrogate; required when
     * the scenario names one; its dim replaces the scenario's). */
    const mm_sim_workload *workload;
} mm_sim_opts;

/* A fixed topology's graph (adjacency lists; each edge appears at both
 * ends, so a node's degree is off[i + 1] - off[i]). complete has none:
 * every other node is a neighbour. */
typedef struct {
    uint32_t n;
    uint32_t *off, *adj;
} mm_sim_graph;
int mm_sim_graph_build(const mm_scenario *s, mm_sim_graph *g);
void mm_sim_graph_free(mm_sim_graph *g);

/* A campaign's run for one seed: base with its seed replaced and a fault mix
 * drawn from that seed (loss, partitions, crashes and restarts, slow
 * trainers, byzantine nodes), every fault over by 40 % of the duration. */
void mm_sim_campaign_draw(const mm_scenario *base, uint64_t seed, mm_scenario *out);
/* Whether a campaign run kept every invariant and converged (consensus
 * variance of the honest nodes up at the end below MM_SIM_CAMPAIGN_VAR);
 * if not, why (one line). */
#define MM_SIM_CAMPAIGN_VAR 1e-3
bool mm_sim_campaign_verdict(const mm_scenario *s, const mm_sim_result *r, char *why, size_t len);

/* Run one scenario. Returns 0, or a negative mm_err with err filled. */
int mm_sim_run(const mm_scenario *s, const mm_sim_opts *o, mm_sim_result *res, mm_error *err);

#endif
