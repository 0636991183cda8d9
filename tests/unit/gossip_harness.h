/* An in-memory network of gossip cores with explicit time, for unit tests.
 *
 * Every node is a real mm_gossip core; the harness plays the runtime: it
 * carries out CONNECT/SEND/CLOSE between nodes through byte queues, lends
 * snapshots, applies merges with the delta rule, and advances a virtual
 * clock to the earliest deadline when nothing else is pending. Hooks let a
 * test tamper with bytes in flight, re-split reads, or fail allocations. */
#ifndef GOSSIP_HARNESS_H
#define GOSSIP_HARNESS_H

#include <malloc.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gossip.h"
#include "mm_rng.h"

#ifndef H_MAX_NODES /* a test file may ask for more (and then keep its h_net off the stack) */
#define H_MAX_NODES 8
#endif
#ifndef H_MAX_LINKS
#define H_MAX_LINKS 64
#endif
#define H_MAX_SNAPS 8
#define H_MAX_LOGS 256

typedef struct {
    uint8_t *buf;
    size_t len, cap;
} h_fifo;

typedef struct {
    bool used, closed[2];
    int node[2];
    mm_conn_id conn[2];
    h_fifo q[2];     /* q[i]: bytes from node[i] to node[1-i] */
    size_t unsent[2]; /* bytes to report with mm_gossip_sent after delivery */
    bool raw_gone;   /* raw link (node[1] < 0): the core was told it closed */
} h_link;

typedef struct {
    uint32_t xid;
    float *snap;
} h_snap;

typedef struct {
    mm_log_kind kind;
    bool ok;
    char text[160];
} h_log;

typedef struct h_net h_net;

typedef struct {
    mm_gossip *g;
    bool down;
    char addr[MM_ADDR_MAX];
    float *x;
    uint64_t samples;
    mm_rng rng;
    h_snap snaps[H_MAX_SNAPS];
    h_log logs[H_MAX_LOGS];
    int nlogs;
    int merges, syncs;
    uint64_t sent_bytes;
    /* Called when a snapshot is lent: lets a test "train" during an exchange. */
    void (*on_snapshot)(h_net *net, int node, uint32_t xid);
    /* Called after the snapshot was handed over: a hostile node may change
     * what the core will still read from it. */
    void (*after_snapshot)(h_net *net, int node, float *snap);
} h_node;

struct h_net {
    uint64_t now;
    size_t n; /* floats per vector */
    int nnodes;
    h_node nodes[H_MAX_NODES];
    h_link links[H_MAX_LINKS];
    /* allocation accounting and failure injection */
    long allocs, frees, fail_at; /* fail the fail_at-th allocation (1-based); 0 = never */
    size_t live_bytes, peak_bytes; /* what the cores hold (malloc_usable_size: an upper bound) */
    /* tamper hook: may modify bytes in flight from node `from`; called per delivery */
    void (*tamper)(h_net *net, int from, uint8_t *buf, size_t len);
    /* edit hook: like tamper, after it, but may also change the length (drop,
     * duplicate or replace whole frames); f->buf is malloc'ed */
    void (*edit)(h_net *net, int from, h_fifo *f);
    size_t split; /* deliver in pieces of this many bytes (0 = all at once) */
    /* the cores' env.parallel (NULL: serial) */
    void (*parallel)(void *ctx, void (*fn)(void *arg, uint32_t i), void *arg, uint32_t n);
    void *parallel_ctx;
    long stuck;   /* ticks after which a core's deadline was still not in the future */
    bool verbose;
};

static void *h_alloc(void *ctx, size_t n)
{
    h_net *net = ctx;
    if (net->fail_at && net->allocs + 1 == net->fail_at) {
        net->fail_at = -1; /* fail once */
        return NULL;
    }
    void *p = malloc(n);
    if (p) {
        net->allocs++;
        net->live_bytes += malloc_usable_size(p);
        if (net->live_bytes > net->peak_bytes) net->peak_bytes = net->live_bytes;
    }
    return p;
}

static void h_free(void *ctx, void *p)
{
    h_net *net = ctx;
    if (p) {
        net->frees++;
        net->live_bytes -= malloc_usable_size(p);
        free(p);
    }
}

/* A config for node i: identity from a seed, the given network key. */
static mm_gossip_config h_config(int i, const uint8_t netkey[32], size_t n, uint8_t fp_byte)
{
    mm_gossip_config c;
    memset(&c, 0, sizeof c);
    uint8_t seed[32] = {0}, pk[32];
    seed[0] = (uint8_t)(i + 1);
    seed[1] = 0x5a;
    crypto_sign_seed_keypair(pk, c.identity_sk, seed);
    memcpy(c.network_key, netkey, 32);
    snprintf(c.advertise, sizeof c.advertise, "127.0.0.1:%d", 7000 + i);
    c.incarnation = 1;
    memset(c.fingerprint, fp_byte, sizeof c.fingerprint);
    c.params = n;
    c.encoding = MM_ENC_F32;
    return c;
}

static int h_add_node(h_net *net, const mm_gossip_config *cfg, uint64_t seed)
{
    int i = net->nnodes++;
    h_node *nd = &net->nodes[i];
    memset(nd, 0, sizeof *nd);
    snprintf(nd->addr, sizeof nd->addr, "%s", cfg->advertise);
    mm_rng_seed(&nd->rng, seed);
    mm_gossip_env env = {.random = mm_rng_fill, .random_ctx = &nd->rng, .alloc = h_alloc, .free = h_free, .alloc_ctx = net,
                         .parallel = net->parallel, .parallel_ctx = net->parallel_ctx};
    nd->g = mm_gossip_new(cfg, &env, net->now);
    nd->x = calloc(net->n, sizeof(float));
    return nd->g ? i : -1;
}

static void h_fifo_push(h_fifo *f, const uint8_t *p, size_t n)
{
    if (f->len + n > f->cap) {
        f->cap = (f->len + n) * 2;
        f->buf = realloc(f->buf, f->cap);
    }
    memcpy(f->buf + f->len, p, n);
    f->len += n;
}

static h_link *h_link_of(h_net *net, int node, mm_conn_id c, int *side)
{
    for (int i = 0; i < H_MAX_LINKS; i++) {
        h_link *l = &net->links[i];
        if (!l->used) continue;
        for (int s = 0; s < 2; s++)
            if (l->node[s] == node && l->conn[s] == c) {
                *side = s;
                return l;
            }
    }
    return NULL;
}

static int h_find_addr(h_net *net, const char *addr)
{
    for (int i = 0; i < net->nnodes; i++)
        if (!net->nodes[i].down && strcmp(net->nodes[i].addr, addr) == 0) return i;
    return -1;
}

static float *h_snap_of(h_node *nd, uint32_t xid, bool take)
{
    for (int i = 0; i < H_MAX_SNAPS; i++)
        if (nd->snaps[i].snap && nd->snaps[i].xid == xid) {
            float *s = nd->snaps[i].snap;
            if (take) nd->snaps[i].snap = NULL;
            return s;
        }
    return NULL;
}

/* Carry out every pending action of node i. Returns how many there were. */
static int h_drain(h_net *net, int i)
{
    h_node *nd = &net->nodes[i];
    mm_action a;
    int count = 0;
    /* Merges and snapshots are answered after the drain (a real runtime
     * answers from another thread, later). */
    uint32_t snap_x[32], merge_x[32];
    int nsnap = 0, nmerge = 0;
    while (mm_gossip_next(nd->g, &a)) {
        count++;
        int side;
        h_link *l;
        switch (a.kind) {
        case MM_ACT_CONNECT: {
            int t = h_find_addr(net, a.addr);
            mm_conn_id rc = t >= 0 ? mm_gossip_accepted(net->nodes[t].g, nd->addr, net->now) : 0;
            if (!rc) {
                mm_gossip_connect_failed(nd->g, a.conn, net->now);
                break;
            }
            for (int k = 0; k < H_MAX_LINKS; k++)
                if (!net->links[k].used) {
                    l = &net->links[k];
                    memset(l, 0, sizeof *l);
                    l->used = true;
                    l->node[0] = i, l->conn[0] = a.conn;
                    l->node[1] = t, l->conn[1] = rc;
                    break;
                }
            mm_gossip_connected(nd->g, a.conn, net->now);
            break;
        }
        case MM_ACT_SEND:
            l = h_link_of(net, i, a.conn, &side);
            if (l && !l->closed[side]) {
                h_fifo_push(&l->q[side], a.data, a.len);
                l->unsent[side] += a.len;
                nd->sent_bytes += a.len;
            }
            break;
        case MM_ACT_CLOSE:
            l = h_link_of(net, i, a.conn, &side);
            if (l) l->closed[side] = true;
            break;
        case MM_ACT_WANT_SNAPSHOT:
            if (nsnap < 32) snap_x[nsnap++] = a.xid;
            break;
        case MM_ACT_MERGE:
            if (a.snap)
                for (size_t k = 0; k < a.count; k++) nd->x[k] += a.weight * (a.peer[k] - a.snap[k]);
            else
                memcpy(nd->x, a.peer, a.count * sizeof(float)), nd->syncs++;
            nd->merges++;
            if (nmerge < 32) merge_x[nmerge++] = a.xid;
            break;
        case MM_ACT_RELEASE:
            free(h_snap_of(nd, a.xid, true));
            break;
        case MM_ACT_LOG:
            if (net->verbose) fprintf(stderr, "[%d t=%.3f] %s\n", i, (double)net->now / 1e9, a.text);
            if (nd->nlogs < H_MAX_LOGS) {
                h_log *lg = &nd->logs[nd->nlogs++];
                lg->kind = a.log;
                lg->ok = a.ok;
                snprintf(lg->text, sizeof lg->text, "%s", a.text);
            }
            break;
        default:
            break;
        }
    }
    for (int k = 0; k < nmerge; k++) mm_gossip_merge_done(nd->g, merge_x[k], net->now);
    for (int k = 0; k < nsnap; k++) {
        float *s = malloc(net->n * sizeof(float));
        memcpy(s, nd->x, net->n * sizeof(float));
        for (int j = 0; j < H_MAX_SNAPS; j++)
            if (!nd->snaps[j].snap) {
                nd->snaps[j].snap = s;
                nd->snaps[j].xid = snap_x[k];
                s = NULL;
                break;
            }
        float *lent = h_snap_of(nd, snap_x[k], false);
        if (nd->on_snapshot) nd->on_snapshot(net, i, snap_x[k]);
        mm_gossip_snapshot_ready(nd->g, snap_x[k], lent, nd->samples, net->now);
        if (nd->after_snapshot && lent) nd->after_snapshot(net, i, lent);
        free(s);
    }
    return count + nmerge + nsnap;
}

/* Deliver queued bytes and closes. Returns whether anything moved. */
static bool h_deliver(h_net *net)
{
    bool moved = false;
    for (int k = 0; k < H_MAX_LINKS; k++) {
        h_link *l = &net->links[k];
        if (!l->used) continue;
        if (l->node[1] < 0) { /* raw: the test reads q[0] itself and writes with mm_gossip_received */
            if (l->unsent[0]) {
                mm_gossip_sent(net->nodes[l->node[0]].g, l->conn[0], l->unsent[0], net->now);
                l->unsent[0] = 0;
                moved = true;
            }
            if (l->closed[0] && !l->raw_gone) {
                l->raw_gone = true;
                mm_gossip_closed(net->nodes[l->node[0]].g, l->conn[0], net->now);
                moved = true;
            }
            continue;
        }
        for (int s = 0; s < 2; s++) {
            h_node *to = &net->nodes[l->node[1 - s]];
            if (l->q[s].len && !l->closed[1 - s]) {
                h_fifo f = l->q[s];
                memset(&l->q[s], 0, sizeof l->q[s]);
                if (net->tamper) net->tamper(net, l->node[s], f.buf, f.len);
                if (net->edit) net->edit(net, l->node[s], &f);
                size_t step = net->split ? net->split : f.len;
                for (size_t off = 0; off < f.len; off += step)
                    mm_gossip_received(to->g, l->conn[1 - s], f.buf + off, f.len - off < step ? f.len - off : step,
                                       net->now);
                free(f.buf);
                moved = true;
            } else if (l->q[s].len) {
                free(l->q[s].buf);
                memset(&l->q[s], 0, sizeof l->q[s]);
            }
            if (l->unsent[s]) {
                mm_gossip_sent(net->nodes[l->node[s]].g, l->conn[s], l->unsent[s], net->now);
                l->unsent[s] = 0;
                moved = true;
            }
        }
        if ((l->closed[0] || l->closed[1]) && !l->q[0].len && !l->q[1].len) {
            for (int s = 0; s < 2; s++) mm_gossip_closed(net->nodes[l->node[s]].g, l->conn[s], net->now);
            l->used = false;
            moved = true;
        }
    }
    return moved;
}

/* Run until virtual time `until` (ns), jumping to deadlines when idle. */
static void h_run(h_net *net, uint64_t until)
{
    for (int guard = 0; guard < 1000000; guard++) {
        bool busy = false;
        for (int i = 0; i < net->nnodes; i++)
            if (!net->nodes[i].down && h_drain(net, i)) busy = true;
        if (h_deliver(net)) busy = true;
        if (busy) continue;
        uint64_t next = UINT64_MAX;
        for (int i = 0; i < net->nnodes; i++)
            if (!net->nodes[i].down) {
                uint64_t d = mm_gossip_deadline(net->nodes[i].g);
                if (d < next) next = d;
            }
        if (next > until) {
            net->now = until;
            return;
        }
        if (next > net->now) net->now = next;
        for (int i = 0; i < net->nnodes; i++)
            if (!net->nodes[i].down && mm_gossip_deadline(net->nodes[i].g) <= net->now) {
                mm_gossip_tick(net->nodes[i].g, net->now);
                /* A deadline that stays in the past would spin a real event loop. */
                if (mm_gossip_deadline(net->nodes[i].g) <= net->now && !h_drain(net, i)) net->stuck++;
            }
    }
}

/* n nodes on one network (vectors of dim floats), all joining through
 * node 0. */
__attribute__((unused)) static void h_star(h_net *net, const uint8_t netkey[32], int n, size_t dim, uint64_t seed)
{
    for (int i = 0; i < n; i++) {
        mm_gossip_config c = h_config(i, netkey, dim, 0xab);
        h_add_node(net, &c, seed + (uint64_t)i);
    }
    for (int i = 1; i < n; i++) mm_gossip_bootstrap(net->nodes[i].g, net->nodes[0].addr, net->now);
}

/* Node i crashes: its links vanish without a CLOSE frame; the others see
 * their connections drop. */
static void h_crash(h_net *net, int i)
{
    net->nodes[i].down = true;
    for (int k = 0; k < H_MAX_LINKS; k++) {
        h_link *l = &net->links[k];
        if (!l->used || (l->node[0] != i && l->node[1] != i)) continue;
        int s = l->node[0] == i ? 1 : 0; /* the surviving side */
        if (l->node[s] >= 0 && l->node[s] != i) mm_gossip_closed(net->nodes[l->node[s]].g, l->conn[s], net->now);
        free(l->q[0].buf);
        free(l->q[1].buf);
        memset(l, 0, sizeof *l);
    }
}

/* A raw link: connection c of node is played by the test, which reads what
 * the core sends from q[0] and feeds bytes in with mm_gossip_received. */
__attribute__((unused)) static h_link *h_raw_link(h_net *net, int node, mm_conn_id c)
{
    for (int k = 0; k < H_MAX_LINKS; k++)
        if (!net->links[k].used) {
            h_link *l = &net->links[k];
            memset(l, 0, sizeof *l);
            l->used = true;
            l->node[0] = node, l->conn[0] = c;
            l->node[1] = -1;
            return l;
        }
    return NULL;
}

static int h_count_logs(const h_node *nd, mm_log_kind kind, int ok, const char *needle)
{
    int n = 0;
    for (int i = 0; i < nd->nlogs; i++)
        if (nd->logs[i].kind == kind && (ok < 0 || nd->logs[i].ok == (ok != 0)) &&
            (!needle || strstr(nd->logs[i].text, needle)))
            n++;
    return n;
}

static void h_free_net(h_net *net)
{
    if (net->stuck) fail_msg("a core's deadline stayed in the past after %ld tick(s)", net->stuck);
    for (int i = 0; i < net->nnodes; i++) {
        h_node *nd = &net->nodes[i];
        mm_gossip_free(nd->g);
        for (int k = 0; k < H_MAX_SNAPS; k++) free(nd->snaps[k].snap);
        free(nd->x);
    }
    for (int k = 0; k < H_MAX_LINKS; k++) {
        free(net->links[k].q[0].buf);
        free(net->links[k].q[1].buf);
    }
}

#endif
