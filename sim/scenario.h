/* Simulation scenarios: what a YAML scenario file describes, checked
 * (docs/simulator.md lists every key). A file holds one scenario, several
 * (a YAML stream of documents), or a sweep of one over a key's values; each
 * becomes one mm_scenario, a "run". Units inside: seconds, bytes/s. */
#ifndef MM_SIM_SCENARIO_H
#define MM_SIM_SCENARIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mm_error.h"

#define MM_SIM_MAX_REGIONS 16
#define MM_SIM_MAX_PARTITIONS 16
#define MM_SIM_MAX_GROUPS 8
#define MM_SIM_MAX_SEL 16
#define MM_SIM_MAX_CRASHES 32
#define MM_SIM_MAX_NODES 1000000u

/* A set of nodes: the union of up to MM_SIM_MAX_SEL selectors, each a
 * region or a range of node indices. */
typedef struct {
    int32_t region; /* >= 0: every node of this region; else the range */
    uint32_t lo, hi; /* node indices, inclusive */
} mm_sim_sel;

typedef struct {
    uint32_t n;
    mm_sim_sel s[MM_SIM_MAX_SEL];
} mm_sim_set;

typedef struct {
    char name[32];
    uint32_t nodes, first; /* its nodes are first .. first + nodes - 1 */
    double up, down;       /* bytes/s */
    double step;           /* s: parameters are handed over at step boundaries; 0 = at once */
    double train_delay;    /* s: a training workload's nodes start this much later (loading their data) */
} mm_sim_region;

typedef struct {
    double at, heal;
    uint32_t ngroups;
    mm_sim_set groups[MM_SIM_MAX_GROUPS];
} mm_sim_partition;

typedef struct {
    double at, down; /* down < 0: the nodes stay down */
    mm_sim_set nodes;
} mm_sim_crash;

/* How a node first joins: through node 0 (a well-known seed), or through a
 * random node that started before it (the joins then form a tree). */
typedef enum { MM_SIM_BOOT_FIRST = 0, MM_SIM_BOOT_RANDOM = 1 } mm_sim_boot;

/* Who averages with whom. PROTOCOL: the real cores, partners from their own
 * peer sampling. The others are the ideal model on a fixed graph, no
 * protocol: atomic pairwise averages along a uniformly random edge-end
 * (docs/simulator.md, "Fixed topologies"). */
typedef enum {
    MM_SIM_TOPO_PROTOCOL = 0,
    MM_SIM_TOPO_COMPLETE,
    MM_SIM_TOPO_RING,
    MM_SIM_TOPO_TORUS,
    MM_SIM_TOPO_KREGULAR,
    MM_SIM_TOPO_EXPONENTIAL,
} mm_sim_topology;

typedef struct {
    char name[64];
    int run; /* index of this run in its file */
    char sweep_key[32], sweep_value[32]; /* "" unless part of a sweep */
    uint64_t seed;
    uint32_t nodes, dim;
    double duration, period, report_every, start_spread;
    double warmup, quiesce; /* no exchange starts before warmup nor in the last quiesce seconds */
    uint8_t encoding; /* mm_encoding */
    bool clip;
    mm_sim_boot bootstrap;
    uint32_t nregions;
    mm_sim_region regions[MM_SIM_MAX_REGIONS];
    double latency[MM_SIM_MAX_REGIONS][MM_SIM_MAX_REGIONS]; /* s, [from][to] */
    double jitter; /* s */
    double loss;
    uint32_t npartitions;
    mm_sim_partition partitions[MM_SIM_MAX_PARTITIONS];
    double crash_rate, mean_down; /* per node per s; s */
    uint32_t ncrashes;
    mm_sim_crash crashes[MM_SIM_MAX_CRASHES];
    uint8_t topology; /* mm_sim_topology */
    uint32_t k;       /* degree of the k-regular graph (even) */
    uint32_t campaign; /* > 0: a fault campaign of this many seeds (sim.h, mm_sim_campaign_draw) */
    /* Faults the campaign draws (no YAML keys): slow trainers, and byzantine
     * nodes that lend corrupt snapshots from byz_from to byz_until, then
     * crash for good. */
    mm_sim_set slow;
    double slow_step; /* s */
    mm_sim_set byz;
    double byz_from, byz_until;
    /* Or the scenario names them (key attack): what they lend from byz_from
     * on (mm_sim_attack), with attack_scale; they train like the others. */
    uint8_t attack;
    double attack_scale; /* 0: the attack's default (docs/simulator.md) */
    /* Sybil identities (SECURITY.md S1): these nodes run the protocol like
     * the others but all live in one IPv4 /24 (docs/simulator.md). */
    mm_sim_set sybil;
    uint32_t view_per_prefix; /* the cores' setting (0: their default, MM_VIEW_PER_PREFIX) */
    /* Eclipse (SECURITY.md E5; key eclipse): colluders that know, keep and
     * gossip only each other and the target (they run the core with an
     * allowlist of just those), and join through the target. */
    mm_sim_set colluders;
    int64_t eclipse_target; /* -1: no eclipse */
    bool no_view_anchors;   /* key view_anchors: false, the control run */
    /* The workload (docs/simulator.md, "Training workloads"): the surrogate
     * vector, or real training (node/trainer.c) of a model on a shard of
     * Fashion-MNIST, a step taking step_ms of virtual time. */
    uint8_t workload;  /* mm_sim_workload_kind */
    uint8_t partition; /* mm_partition: 0 iid, 1 label */
    double skew;       /* label partition: the share of a shard from its own classes (1: all) */
    uint32_t epochs, batch, average_every; /* batch 0: train's default; average_every 0: every period s */
    double lr, momentum;                   /* lr 0: train's default */
    uint32_t train_samples, eval_samples;  /* first N examples of the training / test set (0: all) */
    double eval_every;  /* s between evaluations of every node up (0: none) */
    double eval_time;   /* s of virtual time an epoch's evaluation takes */
    double train_delay; /* s: every region's default (mm_sim_region.train_delay) */
    bool join_sync;     /* training: a newcomer takes the network's parameters (state sync) before its first step */
    char data[256];     /* the Fashion-MNIST directory ("": the default) */
} mm_scenario;

typedef enum { MM_SIM_WL_SURROGATE = 0, MM_SIM_WL_MLP, MM_SIM_WL_CNN } mm_sim_workload_kind;

/* What byzantine nodes lend instead of their snapshot x (SECURITY.md P1-P7;
 * docs/simulator.md, "Parameter poisoning"). x0: their initial parameters,
 * mu and sigma: the coordinate-wise mean and standard deviation over the
 * honest nodes up (an omniscient attacker), s: attack_scale. */
typedef enum {
    MM_SIM_ATTACK_MIX = 0, /* the campaign's: NaN, +-Inf, +-1e30, or x0, drawn per snapshot */
    MM_SIM_ATTACK_SIGNFLIP,   /* x0 - s (x - x0): its progress reversed and scaled (s = 1000) */
    MM_SIM_ATTACK_NOISE,      /* x + N(0, s^2) per coordinate (s = 1) */
    MM_SIM_ATTACK_CONSTANT,   /* x + s in every coordinate (s = 1) */
    MM_SIM_ATTACK_ALIE,       /* mu - s sigma: "a little is enough" (s = 1) */
    MM_SIM_ATTACK_IPM,        /* x0 - s (mu - x0): against the honest progress (s = 0.5) */
    MM_SIM_ATTACK_STALE,      /* x0: a replay of its first snapshot */
} mm_sim_attack;
extern const char *const mm_sim_attack_names[]; /* indexed by mm_sim_attack, NULL-terminated */
extern const char *const mm_sim_workload_names[]; /* indexed by mm_sim_workload_kind, NULL-terminated */

typedef struct {
    mm_scenario *v;
    size_t n;
} mm_scenario_list;

/* The defaults of every key (one region of 16 nodes). */
void mm_scenario_defaults(mm_scenario *s);

/* Parse YAML text (origin names it in messages). Appends the runs it
 * describes to out. Returns 0, or MM_ERR_FORMAT / MM_ERR_INVALID with a
 * message naming the line and the key. */
int mm_scenario_parse(const char *text, size_t len, const char *origin, mm_scenario_list *out, mm_error *err);
int mm_scenario_load(const char *path, mm_scenario_list *out, mm_error *err);
void mm_scenario_list_free(mm_scenario_list *l);

/* Whether node i belongs to set. */
bool mm_sim_set_has(const mm_scenario *s, const mm_sim_set *set, uint32_t i);
/* The region of node i. */
uint32_t mm_scenario_region_of(const mm_scenario *s, uint32_t i);

const char *mm_encoding_name(uint8_t enc);

#endif
