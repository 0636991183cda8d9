/* Fault campaigns (sim.h; docs/simulator.md, "Fault campaigns"): each seed
 * draws its own mix of faults, all of them over by 40 % of the run, and the
 * run must keep the invariants and converge in what is left. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "gossip.h"
#include "mm_rng.h"
#include "sim.h"

static double draw(mm_rng *r, double lo, double hi) { return lo + (hi - lo) * mm_rng_uniform(r); }

static mm_sim_sel range_sel(uint32_t lo, uint32_t hi) { return (mm_sim_sel){-1, lo, hi}; }

void mm_sim_campaign_draw(const mm_scenario *base, uint64_t seed, mm_scenario *s)
{
    *s = *base;
    s->seed = seed;
    mm_rng r;
    mm_rng_seed(&r, seed ^ 0x63616d706169676eull);
    const uint32_t n = s->nodes;
    const double t0 = 0.1 * s->duration, t1 = 0.4 * s->duration; /* faults happen in [t0, t1] */

    /* Segment loss, for the whole run. */
    s->loss = mm_rng_below(&r, 2) ? draw(&r, 0, 0.01) : 0;

    /* Partitions into two or three groups of consecutive nodes, healed by t1. */
    s->npartitions = n >= 2 ? (uint32_t)mm_rng_below(&r, 3) : 0;
    for (uint32_t p = 0; p < s->npartitions; p++) {
        mm_sim_partition *q = &s->partitions[p];
        memset(q, 0, sizeof *q);
        q->at = draw(&r, t0, t1);
        q->heal = fmin(t1, q->at + draw(&r, 1, 0.25 * s->duration));
        uint32_t a = 1 + (uint32_t)mm_rng_below(&r, n - 1), b = a;
        if (n >= 3 && mm_rng_below(&r, 2)) b = 1 + (uint32_t)mm_rng_below(&r, n - 1);
        uint32_t lo = a < b ? a : b, hi = a < b ? b : a;
        q->groups[q->ngroups++] = (mm_sim_set){1, {range_sel(0, lo - 1)}};
        if (hi > lo) q->groups[q->ngroups++] = (mm_sim_set){1, {range_sel(lo, hi - 1)}};
        q->groups[q->ngroups++] = (mm_sim_set){1, {range_sel(hi, n - 1)}};
    }

    /* Crashes of up to a quarter of the nodes, most restarting by t1. */
    s->ncrashes = (uint32_t)mm_rng_below(&r, 4);
    for (uint32_t c = 0; c < s->ncrashes; c++) {
        mm_sim_crash *k = &s->crashes[c];
        uint32_t len = 1 + (uint32_t)mm_rng_below(&r, n / 4 + 1), lo = (uint32_t)mm_rng_below(&r, n);
        if (lo + len > n) len = n - lo;
        k->nodes = (mm_sim_set){1, {range_sel(lo, lo + len - 1)}};
        k->at = draw(&r, t0, t1);
        k->down = mm_rng_below(&r, 5) ? fmax(0.1, fmin(t1 - k->at, draw(&r, 0.5, 0.2 * s->duration))) : -1;
    }

    /* Slow trainers: a range of nodes serving snapshots and merges late. */
    memset(&s->slow, 0, sizeof s->slow);
    s->slow_step = 0;
    if (mm_rng_below(&r, 2)) {
        uint32_t lo = (uint32_t)mm_rng_below(&r, n), len = 1 + (uint32_t)mm_rng_below(&r, n / 2 + 1);
        s->slow = (mm_sim_set){1, {range_sel(lo, lo + len - 1 < n ? lo + len - 1 : n - 1)}};
        s->slow_step = draw(&r, 0.05, 0.6) * s->period;
    }

    /* Byzantine nodes (never node 0, the seed), from some time in [t0, t1 / 2]
     * to t1, then crashed for good. */
    memset(&s->byz, 0, sizeof s->byz);
    s->byz_from = s->byz_until = 0;
    if (n >= 4 && mm_rng_below(&r, 2) && s->ncrashes < MM_SIM_MAX_CRASHES) {
        uint32_t nb = 1 + (uint32_t)mm_rng_below(&r, n / 8 + 1);
        for (uint32_t b = 0; b < nb && s->byz.n < MM_SIM_MAX_SEL; b++) {
            uint32_t i = 1 + (uint32_t)mm_rng_below(&r, n - 1);
            s->byz.s[s->byz.n++] = range_sel(i, i);
        }
        s->byz_from = draw(&r, t0, 0.5 * t1);
        s->byz_until = t1;
        mm_sim_crash *k = &s->crashes[s->ncrashes++];
        k->nodes = s->byz;
        k->at = t1;
        k->down = -1;
    }
}

bool mm_sim_campaign_verdict(const mm_scenario *s, const mm_sim_result *r, char *why, size_t len)
{
    (void)s;
    if (r->violations)
        snprintf(why, len, "%llu invariant violation(s), first: %s", (unsigned long long)r->violations,
                 r->violation);
    else if (r->nonfinite_max)
        snprintf(why, len, "%u node(s) held a non-finite value", r->nonfinite_max);
    else if (r->stuck)
        snprintf(why, len, "%llu stuck timer(s)", (unsigned long long)r->stuck);
    else if (r->leaked)
        snprintf(why, len, "%ld allocation(s) of the cores not freed", r->leaked);
    else if (r->unsent_max > (uint64_t)MM_SEND_WINDOW + MM_FRAME_HEADER + MM_FRAME_MAX_PLAIN + MM_FRAME_TAG)
        snprintf(why, len, "a connection queued %llu bytes unsent", (unsigned long long)r->unsent_max);
    else if (r->last.alive >= 2 && !(r->last.consensus_var < MM_SIM_CAMPAIGN_VAR))
        snprintf(why, len, "no convergence: consensus variance %.3e at the end (bound %.0e)", r->last.consensus_var,
                 MM_SIM_CAMPAIGN_VAR);
    else {
        if (len) why[0] = 0;
        return true;
    }
    return false;
}
