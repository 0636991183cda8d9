/* The simulated runtime (see sim.h). Layout: nodes and their cores;
 * carrying out the cores' actions; the network's callbacks; node life
 * (start, crash, restart); reports; the run. */
#include "sim.h"

#include <math.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "gossip.h"
#include "mm_rng.h"
#include "net.h"

enum {
    EV_START = 1,
    EV_TICK,
    EV_AVERAGE,
    EV_SNAPSHOT,
    EV_MERGE,
    EV_CRASH,
    EV_SCHED_CRASH,
    EV_RESTART,
    EV_JOIN_CHECK,
    EV_REPORT,
    EV_IDEAL,
    EV_STEP, /* a training workload: a node's work item (a step or an evaluation) ends; a != 0: training begins */
    EV_EVAL, /* a training workload: evaluate every node up */
};

#define SLOTS 8                       /* snapshots lent / merges pending per node (the core runs <= 4 exchanges) */
#define JOIN_CHECK MM_SEC(10)         /* a node with no peer at all bootstraps again this often */
#define PORT 7000
#define SYNC_POLL MM_MS(100)          /* training: node/ checks a newcomer's state sync every tick ... */
#define SYNC_GIVE_UP MM_SEC(30)       /* ... and trains from its own parameters after 3 x its join timeout */
#define CACHE_MIN (64u << 10)        /* freed blocks this large are kept for reuse ... */
#define CACHE_SLOTS 64               /* ... up to this many ... */
#define CACHE_BYTES (64ull << 20)    /* ... and this many bytes */
#define HDR 16                       /* a block's size, in front of it (keeps 16-byte alignment) */

typedef struct {
    bool used;
    uint32_t xid;
    float *p;
} lent;

typedef struct {
    bool used;
    uint32_t xid;
    const float *peer, *snap;
    float w;
    uint64_t count;
} merge;

typedef struct {
    mm_gossip *g; /* NULL while down (and always with a fixed topology) */
    bool up, byz, sybil, colluder;
    uint32_t sybil_k; /* a sybil: its index among them (its address) */
    bool joining, synced; /* a training workload: waiting for the state sync before the first step; it came */
    float *x;
    float *x0;    /* byzantine nodes: the initial vector (what they lend as stale) */
    mm_rng rng;   /* the core's env->random */
    uint8_t sk[64];
    uint64_t incarnation, step, phase; /* step, phase: ns; hand-overs happen at phase + k * step */
    uint32_t epoch; /* bumped at every crash and start: the node's old events go stale */
    uint32_t timer_gen;
    uint64_t timer_at; /* the earliest TICK scheduled, UINT64_MAX if none */
    uint64_t next_step; /* a training workload: the end of the work item under way (0: none, hand over at once) */
    lent snaps[SLOTS];
    merge merges[SLOTS];
} sim_node;

typedef struct {
    const mm_scenario *s;
    const mm_sim_opts *o;
    mm_engine e;
    mm_net *net;
    sim_node *nodes;
    uint32_t n;
    uint64_t end, period, warmup, quiet_from;
    mm_rng rng; /* phases, churn, bootstrap choices */
    mm_gossip_config base;
    mm_gossip_tensor whole; /* the one tensor of the surrogate, for clipping */
    double *mean0;
    uint8_t *pgroup; /* partition p, node i: group (255: in none) */
    uint64_t *p_at, *p_heal;
    uint64_t ex_ok, ex_failed, crashes, restarts, stuck;
    uint32_t nonfinite_max;
    long live_allocs;
    uint64_t core_bytes, core_bytes_peak; /* what all cores hold now, and at most */
    bool oom;
    mm_sim_graph graph; /* fixed topologies */
    /* Sybils (scenario key sybil): node sybil_node[k] is the k-th, at
     * 9.9.9.(1 + k % 250):(PORT + 1 + k / 250); their public keys, sorted,
     * tell an honest node's partners apart. */
    uint32_t nsybil, *sybil_node;
    uint8_t (*sybil_pk)[32];
    uint64_t ex_honest[2], ex_honest_sybil[2]; /* exchanges honest nodes completed, and those with a sybil: [1] those they started */
    /* Eclipse (scenario key eclipse): the colluders' allowlist (their keys
     * and the target's, sorted), the target's view as the run goes, and the
     * exchanges the target started (with a colluder). */
    uint8_t (*collude_pk)[32];
    uint32_t ncollude_pk;
    double eclipse_min, eclipse_end; /* honest share of the target's view: the least seen at a report, the last */
    uint64_t ex_target, ex_target_colluder;
    uint64_t byz_from, byz_until;
    uint64_t violations, merges, ideal_avg;
    char violation[200];
    /* Large blocks (vectors, receive buffers) come and go with every
     * exchange; reusing them spares the kernel zeroing fresh pages. */
    void *cache[CACHE_SLOTS];
    uint32_t ncache;
    uint64_t cache_bytes;
    /* Signature checks that passed, shared by all cores (mm_gossip_set_sig_cache):
     * an open-addressed set of digests, at most half full. */
    uint8_t (*sigs)[MM_SIG_DIGEST];
    size_t nsigs, sigs_cap;
    uint64_t sig_hits, sig_checks;
    uint64_t hs_ok, hs_failed; /* of cores already freed */
    const mm_sim_workload *wl; /* a training workload (NULL: the surrogate) */
    uint64_t ex_ns; /* the durations of the exchange ends that succeeded, summed */
} sim;

/* ------------------------------------------------------------ helpers */

static uint64_t mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* A seed for one purpose (tag) of one node, from the scenario's seed. */
static uint64_t derive(uint64_t seed, uint64_t tag, uint64_t node, uint64_t inc)
{
    return mix64(mix64(mix64(seed ^ mix64(tag)) ^ node) ^ inc);
}

static uint64_t ns(double s) { return (uint64_t)llround(s * 1e9); }

static double exp_draw(mm_rng *r, double mean) { return -mean * log(1.0 - mm_rng_uniform(r)); }

static void push(sim *S, uint32_t kind, uint32_t node, uint64_t t, uint64_t a, uint64_t b)
{
    mm_event ev = {.t = t, .kind = kind, .node = node, .a = a, .b = b};
    if (mm_engine_push(&S->e, &ev) != 0) S->oom = true;
}

/* Node i's address: a /24 of its own (the core keeps at most two view
 * entries per /24), but sybils all share 9.9.9.0/24: 250 hosts, then more
 * listening ports on each. port: PORT for the listening address, else the
 * source port of a connection. */
static void addr_of(const sim *S, uint32_t i, uint32_t port, char out[MM_ADDR_MAX])
{
    const sim_node *nd = &S->nodes[i];
    if (nd->sybil)
        snprintf(out, MM_ADDR_MAX, "9.9.9.%u:%u", 1 + nd->sybil_k % 250, port == PORT ? PORT + 1 + nd->sybil_k / 250 : port);
    else
        snprintf(out, MM_ADDR_MAX, "%u.%u.%u.1:%u", 10 + (i >> 16), (i >> 8) & 255, i & 255, port);
}

/* A decimal number of at most 9 digits at *p, then the character sep
 * (0: the end of the string); advances *p. */
static bool dec(const char **p, char sep, unsigned *v)
{
    const char *s = *p;
    unsigned x = 0;
    int n = 0;
    while (*s >= '0' && *s <= '9' && n < 9) x = x * 10 + (unsigned)(*s++ - '0'), n++;
    if (!n || *s != sep) return false;
    *v = x;
    *p = sep ? s + 1 : s;
    return true;
}

/* The node an address names (as addr_of writes them), UINT32_MAX if none.
 * Parsed by hand: sscanf was 3 % of a 1000-node run. */
static uint32_t node_of(const sim *S, const char *addr)
{
    unsigned a, b, c, d, port;
    const char *p = addr;
    if (!dec(&p, '.', &a) || !dec(&p, '.', &b) || !dec(&p, '.', &c) || !dec(&p, ':', &d) || !dec(&p, 0, &port) ||
        b > 255 || c > 255)
        return UINT32_MAX;
    if (a == 9 && b == 9 && c == 9) { /* a sybil's listening address */
        if (d < 1 || d > 250 || port <= PORT) return UINT32_MAX;
        uint64_t k = (uint64_t)(port - PORT - 1) * 250 + (d - 1);
        return k < S->nsybil ? S->sybil_node[k] : UINT32_MAX;
    }
    if (a < 10 || d != 1 || port != PORT) return UINT32_MAX;
    uint32_t i = ((a - 10) << 16) | (b << 8) | c;
    return i < S->n ? i : UINT32_MAX;
}

static size_t block_size(const void *p) { return *(const size_t *)(const void *)((const uint8_t *)p - HDR); }

static void *block_alloc(sim *S, size_t len)
{
    if (len >= CACHE_MIN)
        for (uint32_t i = 0; i < S->ncache; i++)
            if (block_size((uint8_t *)S->cache[i] + HDR) == len) {
                uint8_t *b = S->cache[i];
                S->cache[i] = S->cache[--S->ncache];
                S->cache_bytes -= len;
                return b + HDR;
            }
    if (len > SIZE_MAX - HDR) return NULL;
    uint8_t *b = malloc(len + HDR);
    if (!b) return NULL;
    memcpy(b, &len, sizeof len);
    return b + HDR;
}

static void block_free(sim *S, void *p)
{
    if (!p) return;
    uint8_t *b = (uint8_t *)p - HDR;
    size_t len = block_size(p);
    if (len >= CACHE_MIN && S->ncache < CACHE_SLOTS && S->cache_bytes + len <= CACHE_BYTES) {
        S->cache[S->ncache++] = b;
        S->cache_bytes += len;
        return;
    }
    free(b);
}

/* The cores' memory, counted: what is left at the end leaked. */
static void *env_alloc(void *ctx, size_t len)
{
    sim *S = ctx;
    void *p = block_alloc(S, len);
    if (p) {
        S->live_allocs++;
        S->core_bytes += len;
        if (S->core_bytes > S->core_bytes_peak) S->core_bytes_peak = S->core_bytes;
    }
    return p;
}

static void env_free(void *ctx, void *p)
{
    sim *S = ctx;
    if (!p) return;
    S->live_allocs--;
    S->core_bytes -= block_size(p);
    block_free(S, p);
}

static bool sig_zero(const uint8_t *d)
{
    for (int k = 0; k < MM_SIG_DIGEST; k++)
        if (d[k]) return false;
    return true;
}

static bool sig_insert(uint8_t (*t)[MM_SIG_DIGEST], size_t cap, const uint8_t *d)
{
    uint64_t h;
    memcpy(&h, d, sizeof h);
    for (size_t i = h & (cap - 1);; i = (i + 1) & (cap - 1)) {
        if (memcmp(t[i], d, MM_SIG_DIGEST) == 0) return false;
        if (sig_zero(t[i])) {
            memcpy(t[i], d, MM_SIG_DIGEST);
            return true;
        }
    }
}

/* The cores' shared cache of signature checks (a digest of all zeros is
 * never remembered: it marks a free slot). */
static bool env_sig_seen(void *ctx, const uint8_t *d, bool add)
{
    sim *S = ctx;
    if (sig_zero(d)) return false;
    if (!add) {
        S->sig_checks++;
        if (!S->sigs) return false;
        uint64_t h;
        memcpy(&h, d, sizeof h);
        for (size_t i = h & (S->sigs_cap - 1);; i = (i + 1) & (S->sigs_cap - 1)) {
            if (memcmp(S->sigs[i], d, MM_SIG_DIGEST) == 0) return ++S->sig_hits, true;
            if (sig_zero(S->sigs[i])) return false;
        }
    }
    if (2 * (S->nsigs + 1) > S->sigs_cap) {
        size_t cap = S->sigs_cap ? 2 * S->sigs_cap : 1024;
        uint8_t(*t)[MM_SIG_DIGEST] = calloc(cap, MM_SIG_DIGEST);
        if (!t) return false; /* not remembered: checked again next time */
        for (size_t i = 0; i < S->sigs_cap; i++)
            if (!sig_zero(S->sigs[i])) sig_insert(t, cap, S->sigs[i]);
        free(S->sigs);
        S->sigs = t;
        S->sigs_cap = cap;
    }
    S->nsigs += sig_insert(S->sigs, S->sigs_cap, d);
    return true;
}

/* The next instant node i's trainer hands something over. */
static uint64_t handover_time(const sim *S, const sim_node *nd)
{
    uint64_t now = S->e.now;
    if (S->wl) return nd->next_step > now ? nd->next_step : now; /* the end of the step under way */
    if (!nd->step) return now;
    if (now <= nd->phase) return nd->phase;
    uint64_t r = (now - nd->phase) % nd->step;
    return r ? now + (nd->step - r) : now;
}

/* ------------------------------------------------------------ actions */

static void arm(sim *S, uint32_t i, uint64_t not_before)
{
    sim_node *nd = &S->nodes[i];
    if (!nd->g) return;
    uint64_t d = mm_gossip_deadline(nd->g);
    if (d == UINT64_MAX) return;
    if (d < not_before) d = not_before;
    if (d >= nd->timer_at) return; /* an earlier TICK is pending: it re-arms */
    nd->timer_at = d;
    push(S, EV_TICK, i, d, ++nd->timer_gen, nd->epoch);
}

static int cmp_pk(const void *a, const void *b) { return memcmp(a, b, 32); }

/* Whether id is one of the n sorted public keys in set (sybils, colluders). */
static bool pk_in(const uint8_t (*set)[32], uint32_t n, const uint8_t *id)
{
    return n && bsearch(id, set, n, 32, cmp_pk) != NULL;
}

static void on_log(sim *S, uint32_t i, const mm_action *a)
{
    if (a->log == MM_LOG_SYNCED) S->nodes[i].synced = true;
    if (a->log == MM_LOG_EXCHANGE) {
        if (a->ok)
            S->ex_ok++, S->ex_ns += a->duration;
        else
            S->ex_failed++;
        if (a->ok && a->initiator && S->s->eclipse_target == (int64_t)i) /* the set holds the target too; never its own partner */
            S->ex_target++, S->ex_target_colluder += pk_in(S->collude_pk, S->ncollude_pk, a->peer_id);
        if (a->ok && S->nsybil && !S->nodes[i].sybil) {
            bool sy = pk_in(S->sybil_pk, S->nsybil, a->peer_id);
            S->ex_honest[0]++, S->ex_honest_sybil[0] += sy;
            if (a->initiator) S->ex_honest[1]++, S->ex_honest_sybil[1] += sy;
        }
    }
    if (S->o->trace) fprintf(S->o->trace, "[%u t=%.6f] %s\n", i, (double)S->e.now / 1e9, a->text); /* purity-ok: the caller's stream */
}

/* Carry out every action node i's core has queued. */
static void drain(sim *S, uint32_t i)
{
    sim_node *nd = &S->nodes[i];
    if (!nd->g) return;
    mm_action a;
    while (mm_gossip_next(nd->g, &a)) {
        switch (a.kind) {
        case MM_ACT_CONNECT:
            mm_net_connect(S->net, i, a.conn, node_of(S, a.addr));
            break;
        case MM_ACT_SEND:
            mm_net_send(S->net, i, a.conn, a.data, a.len);
            break;
        case MM_ACT_CLOSE:
            mm_net_close(S->net, i, a.conn);
            break;
        case MM_ACT_WANT_SNAPSHOT: /* the trainer answers at its next step boundary */
            push(S, EV_SNAPSHOT, i, handover_time(S, nd), a.xid, nd->epoch);
            break;
        case MM_ACT_MERGE: {
            int k = 0;
            while (k < SLOTS && nd->merges[k].used) k++;
            if (k == SLOTS) { /* cannot happen: the core runs at most MM_MAX_EXCHANGES */
                S->oom = true;
                break;
            }
            nd->merges[k] = (merge){true, a.xid, a.peer, a.snap, a.weight, a.count};
            push(S, EV_MERGE, i, handover_time(S, nd), (uint64_t)k, nd->epoch);
            break;
        }
        case MM_ACT_RELEASE:
            for (int k = 0; k < SLOTS; k++)
                if (nd->snaps[k].used && nd->snaps[k].xid == a.xid) {
                    block_free(S, nd->snaps[k].p);
                    nd->snaps[k] = (lent){0};
                }
            break;
        case MM_ACT_LOG:
            on_log(S, i, &a);
            break;
        default:
            break;
        }
    }
}

/* ... and re-arm its timer: what follows every call into a core. */
static void settle(sim *S, uint32_t i)
{
    drain(S, i);
    arm(S, i, 0);
}

static bool byz_active(const sim *S, const sim_node *nd)
{
    return nd->byz && S->e.now >= S->byz_from && S->e.now < S->byz_until;
}

/* The coordinate-wise mean and standard deviation of the honest nodes up
 * (what an omniscient attacker knows), in mu and sd (d each). */
static void honest_stats(const sim *S, float *mu, float *sd)
{
    const uint32_t d = S->s->dim;
    uint32_t n = 0;
    for (uint32_t k = 0; k < d; k++) mu[k] = sd[k] = 0;
    for (uint32_t i = 0; i < S->n; i++) {
        const sim_node *h = &S->nodes[i];
        if (!h->up || h->byz) continue;
        n++;
        for (uint32_t k = 0; k < d; k++) { /* Welford, in float: d is large, precision is not the point */
            float delta = h->x[k] - mu[k];
            mu[k] += delta / (float)n;
            sd[k] += delta * (h->x[k] - mu[k]);
        }
    }
    for (uint32_t k = 0; k < d; k++) sd[k] = n > 1 ? sqrtf(sd[k] / (float)(n - 1)) : 0.0f;
}

/* What a byzantine node lends instead of its vector p (a copy of nd->x):
 * the scenario's attack (mm_sim_attack), or the campaign's mix of a
 * non-finite value, huge values, or its stale initial vector. */
static void corrupt(sim *S, const sim_node *nd, float *p)
{
    const uint32_t d = S->s->dim;
    const double sc = S->s->attack_scale;
    switch (S->s->attack) {
    case MM_SIM_ATTACK_MIX:
        break;
    case MM_SIM_ATTACK_SIGNFLIP: {
        float s = sc > 0 ? (float)sc : 1000.0f;
        for (uint32_t k = 0; k < d; k++) p[k] = nd->x0[k] - s * (p[k] - nd->x0[k]);
        return;
    }
    case MM_SIM_ATTACK_NOISE: {
        double s = sc > 0 ? sc : 1.0;
        for (uint32_t k = 0; k < d; k++) p[k] += (float)(s * mm_rng_normal(&S->rng));
        return;
    }
    case MM_SIM_ATTACK_CONSTANT: {
        float s = sc > 0 ? (float)sc : 1.0f;
        for (uint32_t k = 0; k < d; k++) p[k] += s;
        return;
    }
    case MM_SIM_ATTACK_ALIE:
    case MM_SIM_ATTACK_IPM: {
        float *mu = malloc((size_t)d * sizeof *mu), *sd = malloc((size_t)d * sizeof *sd);
        if (!mu || !sd) {
            free(mu), free(sd);
            S->oom = true;
            return;
        }
        honest_stats(S, mu, sd);
        if (S->s->attack == MM_SIM_ATTACK_ALIE) {
            float z = sc > 0 ? (float)sc : 1.0f;
            for (uint32_t k = 0; k < d; k++) p[k] = mu[k] - z * sd[k];
        } else {
            float e = sc > 0 ? (float)sc : 0.5f;
            for (uint32_t k = 0; k < d; k++) p[k] = nd->x0[k] - e * (mu[k] - nd->x0[k]);
        }
        free(mu);
        free(sd);
        return;
    }
    case MM_SIM_ATTACK_STALE:
        memcpy(p, nd->x0, (size_t)d * sizeof *p);
        return;
    }
    switch (mm_rng_below(&S->rng, 4)) {
    case 0:
        p[mm_rng_below(&S->rng, d)] = NAN;
        break;
    case 1:
        p[mm_rng_below(&S->rng, d)] = mm_rng_below(&S->rng, 2) ? INFINITY : -INFINITY;
        break;
    case 2:
        for (uint32_t k = 0; k < d; k++) p[k] = (k & 1) ? -1e30f : 1e30f;
        break;
    default:
        memcpy(p, nd->x0, (size_t)d * sizeof *p);
        break;
    }
}

static void violation(sim *S, uint32_t i, const char *what)
{
    if (!S->violations++)
        snprintf(S->violation, sizeof S->violation, "t = %.6f s, node %u: %s", (double)S->e.now / 1e9, i, what);
}

static bool all_finite(const float *v, uint64_t n)
{
    for (uint64_t k = 0; k < n; k++)
        if (!isfinite(v[k])) return false;
    return true;
}

/* Lend a copy of node i's vector for exchange xid. */
static void on_snapshot(sim *S, uint32_t i, uint32_t xid)
{
    sim_node *nd = &S->nodes[i];
    int k = 0;
    while (k < SLOTS && nd->snaps[k].used) k++;
    float *p = k < SLOTS ? block_alloc(S, (size_t)S->s->dim * sizeof *p) : NULL;
    if (!p) { /* never lent: the core gives the exchange up at its deadline */
        S->oom = true;
        return;
    }
    memcpy(p, nd->x, (size_t)S->s->dim * sizeof *p);
    if (byz_active(S, nd)) corrupt(S, nd, p);
    nd->snaps[k] = (lent){true, xid, p};
    mm_gossip_snapshot_ready(nd->g, xid, p, S->wl ? S->wl->samples(S->wl->ctx, i) : 0, S->e.now);
    settle(S, i);
}

/* The delta rule, as node/ applies it: x += w * (peer - snap); a state sync
 * (snap == NULL) replaces x. */
static void on_merge(sim *S, uint32_t i, uint32_t k)
{
    sim_node *nd = &S->nodes[i];
    merge m = nd->merges[k];
    nd->merges[k].used = false;
    if (!m.used) return;
    float *x = nd->x;
    if (byz_active(S, nd)) { /* a byzantine node keeps what it has */
        mm_gossip_merge_done(nd->g, m.xid, S->e.now);
        settle(S, i);
        return;
    }
    if (!nd->byz) { /* the invariants of an honest node's merge */
        S->merges++;
        if (m.count != S->s->dim)
            violation(S, i, "MERGE of the wrong length");
        else if (m.snap ? !(m.w >= 0.0f && m.w <= 0.5f) : m.w != 1.0f) /* 0: the peer has trained nothing yet */
            violation(S, i, "MERGE weight outside [0, 0.5] (or not 1 for a sync)");
        else if (!all_finite(m.peer, m.count))
            violation(S, i, "MERGE of non-finite peer data");
        if (m.count != S->s->dim) {
            mm_gossip_merge_done(nd->g, m.xid, S->e.now);
            settle(S, i);
            return;
        }
    }
    if (m.snap)
        for (uint64_t j = 0; j < m.count; j++) x[j] += m.w * (m.peer[j] - m.snap[j]);
    else
        memcpy(x, m.peer, m.count * sizeof *x);
    if (!m.snap && S->wl && S->wl->synced) S->wl->synced(S->wl->ctx, i); /* as node/ restarts momentum */
    if (!nd->byz && !all_finite(x, m.count)) violation(S, i, "an honest node holds a non-finite value");
    mm_gossip_merge_done(nd->g, m.xid, S->e.now);
    settle(S, i);
}

/* ------------------------------------------------------------ the network's callbacks */

static mm_conn_id net_accept(void *ctx, uint32_t i, uint32_t from, uint32_t port)
{
    sim *S = ctx;
    char addr[MM_ADDR_MAX];
    addr_of(S, from, port, addr);
    return S->nodes[i].g ? mm_gossip_accepted(S->nodes[i].g, addr, S->e.now) : 0;
}

static void net_drain(void *ctx, uint32_t i) { settle(ctx, i); }

static void net_connected(void *ctx, uint32_t i, mm_conn_id c)
{
    sim *S = ctx;
    if (!S->nodes[i].g) return;
    mm_gossip_connected(S->nodes[i].g, c, S->e.now);
    settle(S, i);
}

static void net_connect_failed(void *ctx, uint32_t i, mm_conn_id c)
{
    sim *S = ctx;
    if (!S->nodes[i].g) return;
    mm_gossip_connect_failed(S->nodes[i].g, c, S->e.now);
    settle(S, i);
}

static void net_received(void *ctx, uint32_t i, mm_conn_id c, const uint8_t *buf, size_t len)
{
    sim *S = ctx;
    if (!S->nodes[i].g) return;
    mm_gossip_received(S->nodes[i].g, c, buf, len, S->e.now);
    settle(S, i);
}

static void net_sent(void *ctx, uint32_t i, mm_conn_id c, size_t bytes)
{
    sim *S = ctx;
    if (!S->nodes[i].g) return;
    mm_gossip_sent(S->nodes[i].g, c, bytes, S->e.now);
    settle(S, i);
}

static void net_closed(void *ctx, uint32_t i, mm_conn_id c)
{
    sim *S = ctx;
    if (!S->nodes[i].g) return;
    mm_gossip_closed(S->nodes[i].g, c, S->e.now);
    settle(S, i);
}

static uint64_t net_blocked(void *ctx, uint32_t a, uint32_t b, uint64_t now)
{
    sim *S = ctx;
    uint64_t until = 0;
    for (uint32_t p = 0; p < S->s->npartitions; p++) {
        if (now < S->p_at[p] || now >= S->p_heal[p]) continue;
        uint8_t ga = S->pgroup[(size_t)p * S->n + a], gb = S->pgroup[(size_t)p * S->n + b];
        if (ga != 255 && gb != 255 && ga != gb && S->p_heal[p] > until) until = S->p_heal[p];
    }
    return until;
}

/* ------------------------------------------------------------ node life */

/* A random node that is up, other than i (and below i if below); UINT32_MAX if none. */
static uint32_t random_up(sim *S, uint32_t i, bool below)
{
    uint32_t range = below ? i : S->n;
    if (range == 0) return UINT32_MAX;
    uint32_t start = (uint32_t)mm_rng_below(&S->rng, range);
    for (uint32_t k = 0; k < range; k++) {
        uint32_t j = (start + k) % range;
        if (j != i && S->nodes[j].g) return j;
    }
    return UINT32_MAX;
}

/* A random node that is up and has a session (a member of the network),
 * other than i; any node up if there is none. Bootstrap lists name members. */
static uint32_t random_member(sim *S, uint32_t i)
{
    uint32_t start = (uint32_t)mm_rng_below(&S->rng, S->n);
    for (uint32_t k = 0; k < S->n; k++) {
        uint32_t j = (start + k) % S->n;
        mm_gossip_stats st;
        if (j == i || !S->nodes[j].g) continue;
        mm_gossip_get_stats(S->nodes[j].g, &st);
        if (st.sessions) return j;
    }
    return random_up(S, i, false);
}

static void bootstrap(sim *S, uint32_t i, uint32_t target)
{
    if (target == UINT32_MAX) return;
    char addr[MM_ADDR_MAX];
    addr_of(S, target, PORT, addr);
    mm_gossip_bootstrap(S->nodes[i].g, addr, S->e.now);
}

static void start_node(sim *S, uint32_t i, bool first)
{
    sim_node *nd = &S->nodes[i];
    if (S->s->topology != MM_SIM_TOPO_PROTOCOL) { /* the ideal model: no core */
        nd->up = true;
        nd->epoch++;
        if (S->s->crash_rate > 0)
            push(S, EV_CRASH, i, S->e.now + ns(exp_draw(&S->rng, 1.0 / S->s->crash_rate)), 0, nd->epoch);
        return;
    }
    mm_gossip_config cfg = S->base;
    memcpy(cfg.identity_sk, nd->sk, sizeof cfg.identity_sk);
    if (nd->colluder) { /* they admit, keep and gossip only each other and the target */
        cfg.allowlist = (const uint8_t(*)[32])S->collude_pk;
        cfg.nallow = S->ncollude_pk;
    }
    addr_of(S, i, PORT, cfg.advertise);
    cfg.incarnation = ++nd->incarnation;
    mm_rng_seed(&nd->rng, derive(S->s->seed, 1, i, nd->incarnation));
    mm_gossip_env env = {.random = mm_rng_fill, .random_ctx = &nd->rng, .alloc = env_alloc, .free = env_free, .alloc_ctx = S};
    nd->g = mm_gossip_new(&cfg, &env, S->e.now);
    sodium_memzero(cfg.identity_sk, sizeof cfg.identity_sk);
    if (!nd->g) {
        S->oom = true;
        return;
    }
    if (!S->o->no_sig_cache) mm_gossip_set_sig_cache(nd->g, env_sig_seen, S);
    nd->up = true;
    nd->epoch++;
    nd->timer_at = UINT64_MAX;
    mm_net_up(S->net, i);
    uint32_t target;
    if (first && S->s->bootstrap == MM_SIM_BOOT_FIRST && i != 0 && S->nodes[0].g)
        target = 0;
    else if (first)
        target = random_up(S, i, true);
    else
        target = random_member(S, i);
    if (target == UINT32_MAX) target = random_up(S, i, false);
    if (nd->colluder && S->nodes[S->s->eclipse_target].g) target = (uint32_t)S->s->eclipse_target; /* at the target */
    bootstrap(S, i, target);
    /* Training: a newcomer takes the network's parameters first, as node/ does
     * (not the first node, nor a restart, which resumes from its checkpoint). */
    nd->joining = S->wl && S->s->join_sync && first && target != UINT32_MAX;
    nd->synced = false;
    if (nd->joining) mm_gossip_request_sync(nd->g, S->e.now);
    settle(S, i);
    /* Each node averages at a random phase of the period, from the warm-up on
     * (a training workload with average_every: every so many steps instead). */
    uint64_t from = S->e.now > S->warmup ? S->e.now : S->warmup;
    if (!S->wl || !S->s->average_every)
        push(S, EV_AVERAGE, i, from + (uint64_t)(mm_rng_uniform(&S->rng) * (double)S->period), 0, nd->epoch);
    if (S->wl) { /* training starts (or resumes from the parameters the node kept) */
        nd->next_step = 0;
        push(S, EV_STEP, i, S->e.now, S->e.now + SYNC_GIVE_UP, nd->epoch); /* a: when a sync is given up */
    }
    push(S, EV_JOIN_CHECK, i, S->e.now + JOIN_CHECK, 0, nd->epoch);
    if (S->s->crash_rate > 0)
        push(S, EV_CRASH, i, S->e.now + ns(exp_draw(&S->rng, 1.0 / S->s->crash_rate)), 0, nd->epoch);
}

/* Crash: the process dies; its connections are reset; the vector stays
 * (as a checkpoint would keep it) for a restart. */
static void crash_node(sim *S, uint32_t i)
{
    sim_node *nd = &S->nodes[i];
    if (!nd->up) return;
    nd->up = false;
    for (int k = 0; k < SLOTS; k++) {
        block_free(S, nd->snaps[k].p);
        nd->snaps[k] = (lent){0};
        nd->merges[k] = (merge){0};
    }
    mm_gossip_stats st;
    mm_gossip_get_stats(nd->g, &st);
    S->hs_ok += st.handshakes_ok;
    S->hs_failed += st.handshakes_failed;
    mm_gossip_free(nd->g);
    nd->g = NULL;
    nd->epoch++;
    nd->timer_at = UINT64_MAX;
    S->crashes++;
    mm_net_down(S->net, i);
}

/* ------------------------------------------------------------ reports */

/* The honest share of the eclipse target's view now (S->eclipse_end), and
 * the least seen once its view holds 8 entries or more (S->eclipse_min). */
static void eclipse_census(sim *S)
{
    const sim_node *t = &S->nodes[S->s->eclipse_target];
    if (!t->up || !t->g) return;
    mm_gossip_peer_info v[MM_VIEW_SIZE];
    uint32_t n = mm_gossip_peers(t->g, v, MM_VIEW_SIZE), bad = 0;
    for (uint32_t k = 0; k < n; k++) {
        uint32_t j = node_of(S, v[k].addr);
        bad += j < S->n && S->nodes[j].colluder;
    }
    if (!n) return;
    S->eclipse_end = (double)(n - bad) / n;
    if (n >= 8 && S->eclipse_end < S->eclipse_min) S->eclipse_min = S->eclipse_end;
}

static void report(sim *S, mm_sim_report *r)
{
    if (S->s->eclipse_target >= 0) eclipse_census(S);
    const uint32_t d = S->s->dim;
    memset(r, 0, sizeof *r);
    r->t = (double)S->e.now / 1e9;
    mm_net_stats ns_;
    mm_net_get_stats(S->net, &ns_);
    r->bytes = ns_.bytes;
    r->exchanges_ok = S->ex_ok;
    r->exchanges_failed = S->ex_failed;
    r->events = S->e.processed;
    double *m = calloc(d, sizeof *m);
    if (!m) {
        S->oom = true;
        return;
    }
    uint32_t cnt = 0;
    for (uint32_t i = 0; i < S->n; i++) {
        const sim_node *nd = &S->nodes[i];
        if (!nd->up) continue;
        r->alive++;
        if (nd->g) {
            mm_gossip_stats st;
            mm_gossip_get_stats(nd->g, &st);
            r->view += st.view;
            r->sessions += st.sessions;
        }
        bool finite = true;
        for (uint32_t k = 0; k < d && finite; k++) finite = isfinite(nd->x[k]);
        if (!finite) {
            r->nonfinite++;
            continue;
        }
        cnt++;
        for (uint32_t k = 0; k < d; k++) m[k] += (double)nd->x[k];
    }
    if (r->alive) {
        r->view /= r->alive;
        r->sessions /= r->alive;
    }
    if (r->nonfinite > S->nonfinite_max) S->nonfinite_max = r->nonfinite;
    if (cnt) {
        double var = 0, err = 0;
        for (uint32_t k = 0; k < d; k++) m[k] /= cnt;
        for (uint32_t i = 0; i < S->n; i++) {
            const sim_node *nd = &S->nodes[i];
            if (!nd->up) continue;
            bool finite = true;
            for (uint32_t k = 0; k < d && finite; k++) finite = isfinite(nd->x[k]);
            if (!finite) continue;
            for (uint32_t k = 0; k < d; k++) {
                double e = (double)nd->x[k] - m[k];
                var += e * e;
            }
        }
        for (uint32_t k = 0; k < d; k++) err += (m[k] - S->mean0[k]) * (m[k] - S->mean0[k]);
        r->consensus_var = var / ((double)cnt * d);
        r->mean_err = sqrt(err / d);
    }
    free(m);
}

static void line_head(const sim *S, const char *event)
{
    fprintf(S->o->out, "{\"event\":\"%s\",\"run\":%d,\"scenario\":\"%s\"", event, S->s->run, S->s->name); /* purity-ok: the caller's stream */
}

static void print_report(const sim *S, const mm_sim_report *r)
{
    fprintf(S->o->out, /* purity-ok: the caller's stream */
            ",\"t\":%.6g,\"alive\":%u,\"consensus_var\":%.6e,\"mean_err\":%.6e,\"exchanges_ok\":%llu,"
            "\"exchanges_failed\":%llu,\"bytes\":%llu,\"nonfinite\":%u,\"view\":%.2f,\"sessions\":%.2f",
            r->t, r->alive, r->consensus_var, r->mean_err, (unsigned long long)r->exchanges_ok,
            (unsigned long long)r->exchanges_failed, (unsigned long long)r->bytes, r->nonfinite, r->view, r->sessions);
}

static void on_report(sim *S)
{
    mm_sim_report r;
    report(S, &r);
    if (S->o->out) {
        line_head(S, "report");
        print_report(S, &r);
        fputs("}\n", S->o->out);
    }
    if (S->o->on_report) S->o->on_report(S->o->ctx, S->s, &r);
}

static void print_start(const sim *S)
{
    const mm_scenario *s = S->s;
    line_head(S, "start");
    fprintf(S->o->out, /* purity-ok: the caller's stream */
            ",\"seed\":%llu,\"nodes\":%u,\"dim\":%u,\"duration\":%.6g,\"period\":%.6g,\"encoding\":\"%s\","
            "\"regions\":%u,\"loss\":%.6g,\"crash_rate\":%.6g,\"partitions\":%u",
            (unsigned long long)s->seed, s->nodes, s->dim, s->duration, s->period, mm_encoding_name(s->encoding),
            s->nregions, s->loss, s->crash_rate, s->npartitions);
    if (s->sweep_key[0])
        fprintf(S->o->out, ",\"sweep_key\":\"%s\",\"sweep_value\":\"%s\"", s->sweep_key, s->sweep_value); /* purity-ok: the caller's stream */
    if (s->workload != MM_SIM_WL_SURROGATE)
        fprintf(S->o->out, ",\"workload\":\"%s\",\"partition\":\"%s\",\"skew\":%.6g,\"average_every\":%u", /* purity-ok: the caller's stream */
                mm_sim_workload_names[s->workload], s->partition ? "label" : "iid", s->skew, s->average_every);
    fputs("}\n", S->o->out);
}

/* ------------------------------------------------------------ the run */

/* The ideal model on a fixed graph: a uniformly random node and a uniformly
 * random neighbour of it (a uniformly random edge, on a regular graph)
 * replace both their vectors by the average, atomically. */
static void ideal_average(sim *S)
{
    uint32_t i = (uint32_t)mm_rng_below(&S->rng, S->n), j;
    if (S->s->topology == MM_SIM_TOPO_COMPLETE) {
        if (S->n < 2) return;
        j = (uint32_t)mm_rng_below(&S->rng, S->n - 1);
        j += j >= i;
    } else {
        uint32_t deg = S->graph.off[i + 1] - S->graph.off[i];
        if (!deg) return;
        j = S->graph.adj[S->graph.off[i] + mm_rng_below(&S->rng, deg)];
    }
    if (i == j || !S->nodes[i].up || !S->nodes[j].up || net_blocked(S, i, j, S->e.now)) return;
    float *a = S->nodes[i].x, *b = S->nodes[j].x;
    for (uint32_t k = 0; k < S->s->dim; k++) a[k] = b[k] = 0.5f * (a[k] + b[k]);
    S->ideal_avg++;
}

/* A training workload: node i's work item ends (or, begin != 0, training starts;
 * a newcomer waits for its state sync until begin):
 * the trainer computes it now, from the parameters it started with (handovers
 * wait for the item's end, as node/'s training thread serves them between
 * steps), and the next item is scheduled. */
static void on_step(sim *S, uint32_t i, uint64_t begin)
{
    sim_node *nd = &S->nodes[i];
    if (begin && nd->joining) { /* as node/'s tick: train once synced and the sync's merge is applied */
        bool pending = false;
        for (int k = 0; k < SLOTS; k++) pending |= nd->merges[k].used;
        if ((!nd->synced || pending) && S->e.now < begin) {
            push(S, EV_STEP, i, S->e.now + SYNC_POLL, begin, nd->epoch);
            return;
        }
        nd->joining = false;
    }
    if (begin) {
        nd->next_step = S->e.now + nd->step;
        push(S, EV_STEP, i, nd->next_step, 0, nd->epoch);
        return;
    }
    mm_sim_step_result r;
    memset(&r, 0, sizeof r);
    S->wl->step(S->wl->ctx, i, &r);
    if (r.evaluated && S->o->out) { /* as node/'s metrics: one line per node and epoch */
        line_head(S, "epoch");
        fprintf(S->o->out, ",\"t\":%.6g,\"node\":%u,\"epoch\":%u,\"step\":%llu,\"acc\":%.4f,\"loss\":%.4f}\n", /* purity-ok: the caller's stream */
                (double)S->e.now / 1e9, i, r.epoch, (unsigned long long)r.step, r.acc, r.loss);
    }
    if (!r.more) {
        nd->next_step = 0;
        return;
    }
    nd->next_step = S->e.now + (r.next_eval ? ns(S->s->eval_time) : nd->step);
    push(S, EV_STEP, i, nd->next_step, 0, nd->epoch);
    if (r.average && S->e.now >= S->warmup && S->e.now < S->quiet_from) { /* as node/: right after the step */
        mm_gossip_average_now(nd->g, S->e.now);
        settle(S, i);
    }
}

/* A training workload: every honest node up evaluated on the test set now
 * (byzantine nodes are left out: their accuracy is not the network's). */
static void on_eval(sim *S)
{
    double sum = 0, lsum = 0, lo = 1, hi = 0;
    uint32_t cnt = 0;
    for (uint32_t i = 0; i < S->n; i++) {
        if (!S->nodes[i].up || S->nodes[i].byz) continue;
        double loss = 0, acc = S->wl->evaluate(S->wl->ctx, i, &loss);
        sum += acc;
        lsum += loss;
        lo = acc < lo ? acc : lo;
        hi = acc > hi ? acc : hi;
        cnt++;
    }
    mm_sim_report r;
    report(S, &r);
    if (!S->o->out) return;
    line_head(S, "eval");
    fprintf(S->o->out, /* purity-ok: the caller's stream */
            ",\"t\":%.6g,\"alive\":%u,\"acc_mean\":%.4f,\"acc_min\":%.4f,\"acc_max\":%.4f,\"loss_mean\":%.4f,"
            "\"consensus_var\":%.6e}\n",
            r.t, cnt, cnt ? sum / cnt : 0.0, cnt ? lo : 0.0, cnt ? hi : 0.0, cnt ? lsum / cnt : 0.0, r.consensus_var);
}

static void dispatch(sim *S, const mm_event *ev)
{
    if (ev->kind >= MM_NET_EVENT_BASE) {
        mm_net_handle(S->net, ev);
        return;
    }
    uint32_t i = ev->node;
    sim_node *nd = &S->nodes[i];
    bool current = nd->up && ev->b == nd->epoch; /* the node is up in the life the event was made for */
    switch (ev->kind) {
    case EV_START:
        start_node(S, i, true);
        break;
    case EV_TICK:
        if (!current || ev->a != nd->timer_gen) break; /* stale: a later or earlier TICK replaced it */
        nd->timer_at = UINT64_MAX;
        if (S->e.now >= mm_gossip_deadline(nd->g)) {
            mm_gossip_tick(nd->g, S->e.now);
            drain(S, i);
            bool stuck = mm_gossip_deadline(nd->g) <= S->e.now; /* would spin a real event loop */
            S->stuck += stuck;
            arm(S, i, stuck ? S->e.now + MM_MS(1) : 0);
        } else {
            arm(S, i, 0);
        }
        break;
    case EV_AVERAGE:
        if (!current || S->e.now >= S->quiet_from) break;
        mm_gossip_average_now(nd->g, S->e.now);
        settle(S, i);
        push(S, EV_AVERAGE, i, S->e.now + S->period, 0, nd->epoch);
        break;
    case EV_SNAPSHOT:
        if (current) on_snapshot(S, i, (uint32_t)ev->a);
        break;
    case EV_MERGE:
        if (current) on_merge(S, i, (uint32_t)ev->a);
        break;
    case EV_CRASH: /* churn: the session ends; the downtime follows */
        if (!current) break;
        crash_node(S, i);
        push(S, EV_RESTART, i, S->e.now + ns(exp_draw(&S->rng, S->s->mean_down)), 0, nd->epoch);
        break;
    case EV_SCHED_CRASH: {
        const mm_sim_crash *c = &S->s->crashes[ev->a];
        if (!nd->up) break;
        crash_node(S, i);
        if (c->down >= 0) push(S, EV_RESTART, i, S->e.now + ns(c->down), 0, nd->epoch);
        break;
    }
    case EV_RESTART:
        if (nd->up || ev->b != nd->epoch) break;
        S->restarts++;
        start_node(S, i, false);
        break;
    case EV_JOIN_CHECK: {
        if (!current) break;
        mm_gossip_stats st;
        mm_gossip_get_stats(nd->g, &st);
        if (st.view == 0 && st.sessions == 0 && st.half_open == 0) { /* not (or no longer) in: try again */
            bootstrap(S, i, random_member(S, i));
            settle(S, i);
        }
        push(S, EV_JOIN_CHECK, i, S->e.now + JOIN_CHECK, 0, nd->epoch);
        break;
    }
    case EV_REPORT: {
        on_report(S);
        uint64_t next = ns((double)(ev->a + 1) * S->s->report_every);
        if (next <= S->end) push(S, EV_REPORT, 0, next, ev->a + 1, 0);
        break;
    }
    case EV_STEP:
        if (current) on_step(S, i, ev->a);
        break;
    case EV_EVAL: {
        on_eval(S);
        uint64_t next = ns((double)(ev->a + 1) * S->s->eval_every);
        if (next <= S->end) push(S, EV_EVAL, 0, next, ev->a + 1, 0);
        break;
    }
    case EV_IDEAL: {
        ideal_average(S);
        uint64_t next = S->warmup + ns((double)(ev->a + 1) * S->s->period / S->n);
        if (next < S->quiet_from && next <= S->end) push(S, EV_IDEAL, 0, next, ev->a + 1, 0);
        break;
    }
    default:
        break;
    }
}

static int setup(sim *S, mm_error *err)
{
    const mm_scenario *s = S->s;
    S->n = s->nodes;
    S->end = ns(s->duration);
    S->period = ns(s->period);
    S->warmup = ns(s->warmup);
    S->quiet_from = s->quiesce < s->duration ? ns(s->duration - s->quiesce) : 0;
    mm_rng_seed(&S->rng, derive(s->seed, 2, 0, 0));
    S->nodes = calloc(S->n, sizeof *S->nodes);
    S->mean0 = calloc(s->dim, sizeof *S->mean0);
    S->pgroup = malloc((size_t)s->npartitions * S->n + 1);
    S->p_at = calloc(s->npartitions + 1, sizeof *S->p_at);
    S->p_heal = calloc(s->npartitions + 1, sizeof *S->p_heal);
    uint16_t *region = malloc(S->n * sizeof *region);
    double *up = malloc(S->n * sizeof *up), *down = malloc(S->n * sizeof *down);
    uint64_t *lat = malloc((size_t)s->nregions * s->nregions * sizeof *lat);
    bool ok = S->nodes && S->mean0 && S->pgroup && S->p_at && S->p_heal && region && up && down && lat;
    for (uint32_t i = 0; ok && i < S->n; i++) {
        sim_node *nd = &S->nodes[i];
        uint32_t r = mm_scenario_region_of(s, i);
        region[i] = (uint16_t)r;
        up[i] = s->regions[r].up;
        down[i] = s->regions[r].down;
        nd->step = ns(mm_sim_set_has(s, &s->slow, i) ? s->slow_step : s->regions[r].step);
        nd->byz = mm_sim_set_has(s, &s->byz, i);
        nd->sybil = mm_sim_set_has(s, &s->sybil, i);
        nd->colluder = s->eclipse_target >= 0 && mm_sim_set_has(s, &s->colluders, i);
        if (nd->sybil) nd->sybil_k = S->nsybil++;
        nd->phase = nd->step ? mm_rng_below(&S->rng, nd->step) : 0;
        nd->timer_at = UINT64_MAX;
        if (!(nd->x = S->wl ? S->wl->params(S->wl->ctx, i) : malloc((size_t)s->dim * sizeof *nd->x))) ok = false;
    }
    for (uint32_t a = 0; ok && a < s->nregions; a++)
        for (uint32_t b = 0; b < s->nregions; b++) lat[a * s->nregions + b] = ns(s->latency[a][b]);
    if (ok) {
        mm_net_config nc = {.nodes = S->n, .region = region, .up = up, .down = down, .nregions = s->nregions,
                            .latency = lat, .jitter = ns(s->jitter), .loss = s->loss, .seed = derive(s->seed, 3, 0, 0)};
        mm_net_hooks h = {S, net_accept, net_drain, net_connected, net_connect_failed,
                          net_received, net_sent, net_closed, net_blocked};
        S->net = mm_net_new(&nc, &h, &S->e);
        ok = S->net != NULL;
    }
    free(region);
    free(up);
    free(down);
    free(lat);
    if (!ok) return mm_error_set(err, MM_ERR_NOMEM, "out of memory for %u nodes of dimension %u", S->n, s->dim);

    /* Values: node i draws N(0, 1) per coordinate; the initial mean is known. */
    mm_rng vr;
    mm_rng_seed(&vr, derive(s->seed, 4, 0, 0));
    for (uint32_t i = 0; i < S->n; i++)
        for (uint32_t k = 0; k < s->dim; k++) {
            if (!S->wl) S->nodes[i].x[k] = (float)mm_rng_normal(&vr); /* a workload's parameters are its own */
            S->mean0[k] += (double)S->nodes[i].x[k];
        }
    for (uint32_t k = 0; k < s->dim; k++) S->mean0[k] /= S->n;
    S->byz_from = ns(s->byz_from);
    S->byz_until = ns(s->byz_until);
    for (uint32_t i = 0; i < S->n; i++)
        if (S->nodes[i].byz) {
            if (!(S->nodes[i].x0 = malloc((size_t)s->dim * sizeof(float))))
                return mm_error_set(err, MM_ERR_NOMEM, "out of memory");
            memcpy(S->nodes[i].x0, S->nodes[i].x, (size_t)s->dim * sizeof(float));
        }
    if (s->topology != MM_SIM_TOPO_PROTOCOL && s->topology != MM_SIM_TOPO_COMPLETE &&
        mm_sim_graph_build(s, &S->graph) != 0)
        return mm_error_set(err, MM_ERR_NOMEM, "out of memory for the graph");

    /* Identities from deterministic seeds; one network key; one model. */
    mm_rng kr;
    mm_rng_seed(&kr, derive(s->seed, 5, 0, 0));
    mm_rng_fill(&kr, S->base.network_key, sizeof S->base.network_key);
    for (uint32_t i = 0; i < S->n; i++) {
        uint8_t seed[32], pk[32];
        mm_rng ir;
        mm_rng_seed(&ir, derive(s->seed, 6, i, 0));
        mm_rng_fill(&ir, seed, sizeof seed);
        crypto_sign_seed_keypair(pk, S->nodes[i].sk, seed);
        sodium_memzero(seed, sizeof seed);
    }
    if (S->nsybil) {
        S->sybil_node = malloc(S->nsybil * sizeof *S->sybil_node);
        S->sybil_pk = malloc(S->nsybil * sizeof *S->sybil_pk);
        if (!S->sybil_node || !S->sybil_pk) return mm_error_set(err, MM_ERR_NOMEM, "out of memory");
        for (uint32_t i = 0; i < S->n; i++)
            if (S->nodes[i].sybil) {
                S->sybil_node[S->nodes[i].sybil_k] = i;
                memcpy(S->sybil_pk[S->nodes[i].sybil_k], S->nodes[i].sk + 32, 32);
            }
        qsort(S->sybil_pk, S->nsybil, sizeof *S->sybil_pk, cmp_pk);
    }
    S->base.view_per_prefix = s->view_per_prefix;
    S->base.no_view_anchors = s->no_view_anchors;
    S->eclipse_min = 1.0;
    if (s->eclipse_target >= 0) { /* the colluders' allowlist: each other and the target */
        S->collude_pk = malloc(((size_t)S->n + 1) * sizeof *S->collude_pk);
        if (!S->collude_pk) return mm_error_set(err, MM_ERR_NOMEM, "out of memory");
        for (uint32_t i = 0; i < S->n; i++)
            if (S->nodes[i].colluder || (int64_t)i == s->eclipse_target)
                memcpy(S->collude_pk[S->ncollude_pk++], S->nodes[i].sk + 32, 32);
        qsort(S->collude_pk, S->ncollude_pk, sizeof *S->collude_pk, cmp_pk);
    }
    memset(S->base.fingerprint, 0x5f, sizeof S->base.fingerprint);
    S->base.params = s->dim;
    S->base.encoding = s->encoding;
    S->base.weighting = MM_WEIGHT_EQUAL;
    S->base.clip = s->clip;
    S->whole = (mm_gossip_tensor){0, s->dim};
    S->base.tensors = &S->whole;
    S->base.ntensors = 1;
    if (S->wl) { /* as node/: merges weighted by the examples trained, the model's tensors */
        S->base.weighting = MM_WEIGHT_SAMPLES;
        if (S->wl->ntensors) {
            S->base.tensors = S->wl->tensors;
            S->base.ntensors = S->wl->ntensors;
        }
    }

    for (uint32_t p = 0; p < s->npartitions; p++) {
        S->p_at[p] = ns(s->partitions[p].at);
        S->p_heal[p] = ns(s->partitions[p].heal);
        for (uint32_t i = 0; i < S->n; i++) {
            uint8_t g = 255;
            for (uint32_t k = 0; k < s->partitions[p].ngroups && g == 255; k++)
                if (mm_sim_set_has(s, &s->partitions[p].groups[k], i)) g = (uint8_t)k;
            S->pgroup[(size_t)p * S->n + i] = g;
        }
    }

    /* The schedule: starts, scheduled crashes, reports. */
    for (uint32_t i = 0; i < S->n; i++) /* a training workload's nodes load their data first */
        push(S, EV_START, i, ns(s->start_spread * i / S->n + (S->wl ? s->regions[mm_scenario_region_of(s, i)].train_delay : 0.0)), 0, 0);
    for (uint32_t c = 0; c < s->ncrashes; c++)
        for (uint32_t i = 0; i < S->n; i++)
            if (mm_sim_set_has(s, &s->crashes[c].nodes, i)) push(S, EV_SCHED_CRASH, i, ns(s->crashes[c].at), c, 0);
    push(S, EV_REPORT, 0, 0, 0, 0);
    if (S->wl && s->eval_every > 0) push(S, EV_EVAL, 0, ns(s->eval_every), 1, 0); /* a: the k-th */
    if (s->topology != MM_SIM_TOPO_PROTOCOL) push(S, EV_IDEAL, 0, S->warmup + ns(s->period / S->n), 0, 0);
    return S->oom ? mm_error_set(err, MM_ERR_NOMEM, "out of memory") : 0;
}

/* How far the sybils got into the honest nodes' views and exchanges. */
static void sybil_census(sim *S, mm_sim_result *r)
{
    mm_gossip_peer_info v[MM_VIEW_SIZE];
    uint32_t honest = 0, total = 0;
    r->sybils = S->nsybil;
    for (uint32_t i = 0; i < S->n; i++) {
        const sim_node *nd = &S->nodes[i];
        if (nd->sybil || !nd->up || !nd->g) continue;
        uint32_t n = mm_gossip_peers(nd->g, v, MM_VIEW_SIZE), here = 0;
        for (uint32_t k = 0; k < n; k++) {
            uint32_t j = node_of(S, v[k].addr);
            here += j < S->n && S->nodes[j].sybil;
        }
        if (here > r->sybil_view_max) r->sybil_view_max = here;
        total += here;
        honest++;
    }
    r->sybil_view_mean = honest ? (double)total / honest : 0;
    for (int k = 0; k < 2; k++)
        r->sybil_share[k] = S->ex_honest[k] ? (double)S->ex_honest_sybil[k] / (double)S->ex_honest[k] : 0;
}

static void teardown(sim *S)
{
    for (uint32_t i = 0; S->nodes && i < S->n; i++) {
        sim_node *nd = &S->nodes[i];
        for (int k = 0; k < SLOTS; k++) block_free(S, nd->snaps[k].p);
        mm_gossip_free(nd->g);
        if (!S->wl) free(nd->x);
        free(nd->x0);
        sodium_memzero(nd->sk, sizeof nd->sk);
    }
    for (uint32_t i = 0; i < S->ncache; i++) free(S->cache[i]);
    free(S->sigs);
    mm_net_free(S->net);
    mm_engine_free(&S->e);
    free(S->nodes);
    free(S->mean0);
    free(S->pgroup);
    free(S->p_at);
    free(S->p_heal);
    mm_sim_graph_free(&S->graph);
    free(S->sybil_node);
    free(S->sybil_pk);
    free(S->collude_pk);
}

int mm_sim_run(const mm_scenario *s, const mm_sim_opts *o, mm_sim_result *res, mm_error *err)
{
    static const mm_sim_opts none = {0};
    if (sodium_init() < 0) return mm_error_set(err, MM_ERR_INVALID, "libsodium failed to initialise");
    if (s->nodes == 0 || s->dim == 0 || s->nregions == 0 || !(s->period > 0) || !(s->report_every > 0))
        return mm_error_set(err, MM_ERR_INVALID, "scenario '%s' is not valid", s->name);
    if (s->workload != MM_SIM_WL_SURROGATE && !(o && o->workload && o->workload->dim == s->dim))
        return mm_error_set(err, MM_ERR_INVALID, "scenario '%s': workload %s needs its trainers (sim/workload_train.h)",
                            s->name, mm_sim_workload_names[s->workload]);
    sim S;
    memset(&S, 0, sizeof S);
    S.s = s;
    S.o = o ? o : &none;
    S.wl = s->workload != MM_SIM_WL_SURROGATE ? o->workload : NULL;
    mm_engine_init(&S.e);
    int rc = setup(&S, err);
    if (!rc && S.o->out) print_start(&S);
    mm_event ev;
    while (!rc && mm_engine_pop(&S.e, S.end, &ev)) {
        dispatch(&S, &ev);
        if (S.oom || mm_net_failed(S.net)) {
            rc = mm_error_set(err, MM_ERR_NOMEM, "out of memory (or out of snapshot slots) at t = %.3f s",
                              (double)S.e.now / 1e9);
            break;
        }
        if (S.o->progress && (S.e.processed & 0xffff) == 0)
            S.o->progress(S.o->ctx, s, (double)S.e.now / 1e9, S.e.processed);
    }
    if (!rc) {
        S.e.now = S.end;
        mm_sim_result r;
        memset(&r, 0, sizeof r);
        report(&S, &r.last);
        mm_net_stats st;
        mm_net_get_stats(S.net, &st);
        r.events = S.e.processed;
        r.crashes = S.crashes;
        r.restarts = S.restarts;
        r.connects = st.connects;
        r.refused = st.refused;
        r.broken = st.broken;
        r.stuck = S.stuck;
        r.nonfinite_max = S.nonfinite_max;
        r.core_bytes_peak = S.core_bytes_peak;
        r.unsent_max = st.unsent_max;
        if (st.unsent_max > (uint64_t)MM_SEND_WINDOW + MM_FRAME_HEADER + MM_FRAME_MAX_PLAIN + MM_FRAME_TAG)
            violation(&S, 0, "a connection's queue at the simulator exceeded MM_SEND_WINDOW plus one frame");
        r.violations = S.violations;
        memcpy(r.violation, S.violation, sizeof r.violation);
        r.merges = S.merges;
        r.ideal_avg = S.ideal_avg;
        r.handshakes = S.hs_ok;
        r.handshakes_failed = S.hs_failed;
        for (uint32_t i = 0; i < S.n; i++)
            if (S.nodes[i].g) {
                mm_gossip_stats gs;
                mm_gossip_get_stats(S.nodes[i].g, &gs);
                r.handshakes += gs.handshakes_ok;
                r.handshakes_failed += gs.handshakes_failed;
            }
        r.sig_checks = S.sig_checks;
        r.sig_hits = S.sig_hits;
        if (S.nsybil) sybil_census(&S, &r);
        if (s->eclipse_target >= 0) {
            r.eclipse = true;
            r.eclipse_view_min = S.eclipse_min;
            r.eclipse_view_end = S.eclipse_end;
            r.eclipse_partner_share = S.ex_target ? (double)S.ex_target_colluder / (double)S.ex_target : 0;
        }
        if (S.o->out) {
            line_head(&S, "summary");
            if (r.eclipse)
                fprintf(S.o->out, /* purity-ok: the caller's stream */
                        ",\"eclipse_view_honest_min\":%.4f,\"eclipse_view_honest_end\":%.4f,\"eclipse_partner_share\":%.4f",
                        r.eclipse_view_min, r.eclipse_view_end, r.eclipse_partner_share);
            if (r.sybils)
                fprintf(S.o->out, /* purity-ok: the caller's stream */
                        ",\"sybils\":%u,\"sybil_view_max\":%u,\"sybil_view_mean\":%.3f,\"sybil_exchange_share\":%.4f,"
                        "\"sybil_partner_share\":%.4f",
                        r.sybils, r.sybil_view_max, r.sybil_view_mean, r.sybil_share[0], r.sybil_share[1]);
            print_report(&S, &r.last);
            fprintf(S.o->out, /* purity-ok: the caller's stream */
                    ",\"seed\":%llu,\"nodes\":%u,\"events\":%llu,\"connects\":%llu,\"refused\":%llu,\"broken\":%llu,"
                    "\"crashes\":%llu,\"restarts\":%llu,\"nonfinite_max\":%u,\"stuck\":%llu,\"core_mib_peak\":%.1f,"
                    "\"violations\":%llu,\"unsent_max\":%llu",
                    (unsigned long long)s->seed, s->nodes, (unsigned long long)r.events,
                    (unsigned long long)r.connects, (unsigned long long)r.refused, (unsigned long long)r.broken,
                    (unsigned long long)r.crashes, (unsigned long long)r.restarts, r.nonfinite_max,
                    (unsigned long long)r.stuck, (double)r.core_bytes_peak / 1048576.0,
                    (unsigned long long)r.violations, (unsigned long long)r.unsent_max);
            fprintf(S.o->out, ",\"handshakes\":%llu,\"handshakes_failed\":%llu", /* purity-ok: the caller's stream */
                    (unsigned long long)r.handshakes, (unsigned long long)r.handshakes_failed);
            if (S.wl) /* the mean time an exchange took, as node/'s metrics log it (duration_ms) */
                fprintf(S.o->out, ",\"exchange_ms_mean\":%.2f", S.ex_ok ? (double)S.ex_ns / 1e6 / (double)S.ex_ok : 0.0); /* purity-ok: the caller's stream */
            if (s->sweep_key[0])
                fprintf(S.o->out, ",\"sweep_key\":\"%s\",\"sweep_value\":\"%s\"", s->sweep_key, s->sweep_value); /* purity-ok: the caller's stream */
            fputs("}\n", S.o->out);
        }
        teardown(&S);
        r.leaked = S.live_allocs;
        if (res) *res = r;
        return 0;
    }
    teardown(&S);
    return rc;
}
