/* Fixed topologies for the ideal model (sim.h, mm_sim_graph; docs/simulator.md,
 * "Fixed topologies"). Every graph is regular, so a uniformly random node and
 * a uniformly random neighbour of it make a uniformly random edge. */
#include <stdlib.h>
#include <string.h>

#include "mm_rng.h"
#include "sim.h"

void mm_sim_graph_free(mm_sim_graph *g)
{
    free(g->off);
    free(g->adj);
    memset(g, 0, sizeof *g);
}

/* The largest r <= sqrt(n) that divides n: the torus is r x (n / r). */
static uint32_t torus_rows(uint32_t n)
{
    uint32_t r = 1;
    for (uint32_t a = 1; (uint64_t)a * a <= n; a++)
        if (n % a == 0) r = a;
    return r;
}

int mm_sim_graph_build(const mm_scenario *s, mm_sim_graph *g)
{
    const uint32_t n = s->nodes;
    uint32_t deg;
    memset(g, 0, sizeof *g);
    switch (s->topology) {
    case MM_SIM_TOPO_RING:
        deg = 2;
        break;
    case MM_SIM_TOPO_TORUS:
        deg = 4;
        break;
    case MM_SIM_TOPO_KREGULAR:
        deg = s->k;
        break;
    case MM_SIM_TOPO_EXPONENTIAL:
        deg = 0;
        for (uint64_t h = 1; h < n; h <<= 1) deg += 2;
        break;
    default:
        return MM_ERR_INVALID;
    }
    g->n = n;
    g->off = malloc(((size_t)n + 1) * sizeof *g->off);
    g->adj = malloc((size_t)n * deg * sizeof *g->adj + 1);
    uint32_t *perm = s->topology == MM_SIM_TOPO_KREGULAR ? malloc((size_t)n * sizeof *perm) : NULL;
    if (!g->off || !g->adj || (s->topology == MM_SIM_TOPO_KREGULAR && !perm)) {
        free(perm);
        mm_sim_graph_free(g);
        return MM_ERR_NOMEM;
    }
    for (uint32_t i = 0; i <= n; i++) g->off[i] = i * deg;
    uint32_t *a = g->adj;
    if (s->topology == MM_SIM_TOPO_RING) {
        for (uint32_t i = 0; i < n; i++) {
            a[2 * i] = (i + 1) % n;
            a[2 * i + 1] = (i + n - 1) % n;
        }
    } else if (s->topology == MM_SIM_TOPO_TORUS) {
        uint32_t r = torus_rows(n), c = n / r;
        for (uint32_t i = 0; i < n; i++) {
            uint32_t y = i / c, x = i % c;
            a[4 * i] = y * c + (x + 1) % c;
            a[4 * i + 1] = y * c + (x + c - 1) % c;
            a[4 * i + 2] = ((y + 1) % r) * c + x;
            a[4 * i + 3] = ((y + r - 1) % r) * c + x;
        }
    } else if (s->topology == MM_SIM_TOPO_EXPONENTIAL) {
        for (uint32_t i = 0; i < n; i++) {
            uint32_t e = 0;
            for (uint64_t h = 1; h < n; h <<= 1) {
                a[(size_t)i * deg + e++] = (uint32_t)((i + h) % n);
                a[(size_t)i * deg + e++] = (uint32_t)((i + n - h % n) % n);
            }
        }
    } else { /* k-regular: the union of k / 2 random Hamiltonian cycles (a multigraph, rarely) */
        mm_rng r;
        mm_rng_seed(&r, s->seed ^ 0x6b72656775ull);
        for (uint32_t c = 0; c < deg / 2; c++) {
            for (uint32_t i = 0; i < n; i++) perm[i] = i;
            for (uint32_t i = n; i > 1; i--) {
                uint32_t j = (uint32_t)mm_rng_below(&r, i), t = perm[i - 1];
                perm[i - 1] = perm[j];
                perm[j] = t;
            }
            for (uint32_t i = 0; i < n; i++) {
                uint32_t u = perm[i], v = perm[(i + 1) % n];
                a[(size_t)u * deg + 2 * c] = v;
                a[(size_t)v * deg + 2 * c + 1] = u;
            }
        }
    }
    free(perm);
    return 0;
}
