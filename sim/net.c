/* The network model (see net.h). Layout: connections ("flows") and their
 * byte queues; segments; the uplink round robin; the events; node life. */
#include "net.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { EV_SYN = MM_NET_EVENT_BASE, EV_SYNACK, EV_UP_DONE, EV_ARRIVE, EV_DELIVER, EV_LOCAL_CLOSED };
enum { SEG_DATA, SEG_FIN, SEG_RST };
#define NIL UINT32_MAX

typedef struct {
    uint8_t *buf;
    size_t head, len, cap; /* waiting bytes: buf[head .. head + len) */
} bytes_q;

/* A connection. Side 0 dialled, side 1 accepted; direction d carries what
 * side d sends. */
typedef struct {
    uint32_t gen; /* bumped when the slot is freed: events of the old flow are dropped */
    bool used, refused;
    uint32_t node[2];
    mm_conn_id conn[2];
    bool live[2];     /* side d's core knows the connection (not yet told closed) */
    bool fin[2];      /* side d closed: a FIN follows its queued bytes */
    bool fin_sent[2];
    bool tx[2];       /* a segment of direction d is on the uplink */
    bool in_rr[2];    /* direction d waits in its node's round robin */
    bytes_q q[2];
    uint64_t unsent[2]; /* given by side d's core, not yet reported sent to it */
    uint64_t last_arrival[2]; /* arrivals in direction d never go back in time */
} flow;

typedef struct {
    uint32_t flow, gen;
    uint8_t dir;
} rr_entry;

typedef struct {
    bool used;
    uint8_t dir, kind;
    uint32_t flow, gen, len, next_free;
    uint8_t *data;
} seg;

typedef struct {
    mm_conn_id c;
    uint32_t flow;
} conn_ref;

typedef struct {
    bool up, sending;
    uint32_t epoch;     /* bumped when the node goes down: its uplink events go stale */
    uint64_t down_free; /* the downlink is busy until then */
    rr_entry *rr;       /* ring of directions with bytes to send */
    uint32_t rr_head, rr_len, rr_cap;
    conn_ref *refs; /* this node's connection ids -> flows */
    uint32_t nrefs, refs_cap;
} net_node;

struct mm_net {
    mm_net_config cfg;
    mm_net_hooks h;
    mm_engine *e;
    mm_rng rng;
    uint16_t *region;
    double *up, *down;
    uint64_t *latency;
    net_node *nodes;
    flow *flows;
    uint32_t nflows, flows_cap, live_flows;
    uint32_t *free_flows, nfree_flows;
    seg *segs;
    uint32_t nsegs, segs_cap, seg_free;
    uint32_t port;
    mm_net_stats st;
    bool oom;
};

/* ------------------------------------------------------------ helpers */

static void *grow(void *p, uint32_t *cap, size_t elem)
{
    uint32_t c = *cap ? *cap * 2 : 16;
    void *q = realloc(p, (size_t)c * elem);
    if (q) *cap = c;
    return q;
}

static void push(mm_net *n, uint32_t kind, uint32_t node, uint64_t t, uint64_t a, uint64_t b)
{
    mm_event ev = {.t = t, .kind = kind, .node = node, .a = a, .b = b};
    if (mm_engine_push(n->e, &ev) != 0) n->oom = true;
}

static uint64_t tx_time(size_t len, double rate) { return len ? (uint64_t)ceil((double)len * 1e9 / rate) : 0; }

/* When a segment leaving side dir of f now arrives at the other side. */
static uint64_t travel(mm_net *n, flow *f, int dir)
{
    uint32_t a = f->node[dir], b = f->node[1 - dir];
    uint64_t t = n->e->now, held = n->h.blocked_until ? n->h.blocked_until(n->h.ctx, a, b, t) : 0;
    if (held > t) t = held;
    t += n->latency[(size_t)n->region[a] * n->cfg.nregions + n->region[b]];
    if (n->cfg.jitter) t += mm_rng_below(&n->rng, n->cfg.jitter + 1);
    if (t < f->last_arrival[dir]) t = f->last_arrival[dir];
    f->last_arrival[dir] = t;
    return t;
}

/* ------------------------------------------------------------ conn ids */

static void ref_add(mm_net *n, uint32_t node, mm_conn_id c, uint32_t fi)
{
    net_node *nn = &n->nodes[node];
    if (nn->nrefs == nn->refs_cap) {
        conn_ref *r = grow(nn->refs, &nn->refs_cap, sizeof *r);
        if (!r) {
            n->oom = true;
            return;
        }
        nn->refs = r;
    }
    nn->refs[nn->nrefs++] = (conn_ref){c, fi};
}

static void ref_del(mm_net *n, uint32_t node, mm_conn_id c)
{
    net_node *nn = &n->nodes[node];
    for (uint32_t i = 0; i < nn->nrefs; i++)
        if (nn->refs[i].c == c) {
            nn->refs[i] = nn->refs[--nn->nrefs];
            return;
        }
}

/* The flow behind node's connection c and node's side of it, or NULL. */
static flow *flow_of(mm_net *n, uint32_t node, mm_conn_id c, int *side)
{
    net_node *nn = &n->nodes[node];
    for (uint32_t i = 0; i < nn->nrefs; i++)
        if (nn->refs[i].c == c) {
            flow *f = &n->flows[nn->refs[i].flow];
            *side = f->node[0] == node ? 0 : 1;
            return f;
        }
    return NULL;
}

/* ------------------------------------------------------------ flows */

static uint32_t flow_new(mm_net *n)
{
    uint32_t fi;
    if (n->nfree_flows) {
        fi = n->free_flows[--n->nfree_flows];
    } else {
        if (n->nflows == n->flows_cap) {
            uint32_t cap = n->flows_cap;
            flow *f = grow(n->flows, &cap, sizeof *f);
            uint32_t *fr = f ? realloc(n->free_flows, (size_t)cap * sizeof *fr) : NULL;
            if (f) n->flows = f;
            if (!f || !fr) {
                n->oom = true;
                return NIL;
            }
            n->free_flows = fr;
            n->flows_cap = cap;
        }
        fi = n->nflows++;
        n->flows[fi].gen = 0;
    }
    flow *f = &n->flows[fi];
    uint32_t gen = f->gen;
    memset(f, 0, sizeof *f);
    f->gen = gen;
    f->used = true;
    n->live_flows++;
    return fi;
}

static void maybe_free(mm_net *n, uint32_t fi)
{
    flow *f = &n->flows[fi];
    if (!f->used || f->live[0] || f->live[1]) return;
    for (int d = 0; d < 2; d++) free(f->q[d].buf);
    uint32_t gen = f->gen + 1;
    memset(f, 0, sizeof *f);
    f->gen = gen;
    n->free_flows[n->nfree_flows++] = fi;
    n->live_flows--;
}

static bool q_append(bytes_q *q, const uint8_t *p, size_t len)
{
    if (q->head && q->head + q->len + len > q->cap) { /* slide the waiting bytes to the front */
        memmove(q->buf, q->buf + q->head, q->len);
        q->head = 0;
    }
    if (q->len + len > q->cap) {
        size_t cap = q->cap ? q->cap : 256;
        while (cap < q->len + len) cap *= 2;
        uint8_t *b = realloc(q->buf, cap);
        if (!b) return false;
        q->buf = b;
        q->cap = cap;
    }
    memcpy(q->buf + q->head + q->len, p, len);
    q->len += len;
    return true;
}

/* ------------------------------------------------------------ segments */

static uint32_t seg_new(mm_net *n, uint32_t fi, int dir, int kind, size_t len)
{
    if (n->seg_free == NIL) {
        if (n->nsegs == n->segs_cap) {
            seg *s = grow(n->segs, &n->segs_cap, sizeof *s);
            if (!s) {
                n->oom = true;
                return NIL;
            }
            n->segs = s;
        }
        n->segs[n->nsegs].next_free = NIL;
        n->seg_free = n->nsegs++;
    }
    uint32_t si = n->seg_free;
    seg *s = &n->segs[si];
    uint8_t *data = len ? malloc(len) : NULL;
    if (len && !data) {
        n->oom = true;
        return NIL;
    }
    n->seg_free = s->next_free;
    *s = (seg){.used = true, .dir = (uint8_t)dir, .kind = (uint8_t)kind, .flow = fi, .gen = n->flows[fi].gen,
               .len = (uint32_t)len, .next_free = NIL, .data = data};
    return si;
}

static void seg_free(mm_net *n, uint32_t si)
{
    seg *s = &n->segs[si];
    free(s->data);
    *s = (seg){.next_free = n->seg_free};
    n->seg_free = si;
}

/* The flow a segment belongs to, if it still exists. */
static flow *seg_flow(mm_net *n, const seg *s)
{
    flow *f = &n->flows[s->flow];
    return f->used && f->gen == s->gen ? f : NULL;
}

/* A FIN or RST leaving side dir now. */
static void send_ctl(mm_net *n, uint32_t fi, int dir, int kind)
{
    uint32_t si = seg_new(n, fi, dir, kind, 0);
    if (si == NIL) return;
    flow *f = &n->flows[fi];
    push(n, EV_ARRIVE, f->node[1 - dir], travel(n, f, dir), si, 0);
}

/* Side dir's FIN leaves: the other side hears closed on arrival, this side now. */
static void send_fin(mm_net *n, uint32_t fi, int dir)
{
    flow *f = &n->flows[fi];
    f->fin_sent[dir] = true;
    send_ctl(n, fi, dir, SEG_FIN);
    f = &n->flows[fi];
    push(n, EV_LOCAL_CLOSED, f->node[dir], n->e->now, (uint64_t)fi * 2 + (uint64_t)dir, f->gen);
}

/* ------------------------------------------------------------ the uplink */

static void rr_push(mm_net *n, uint32_t node, uint32_t fi, int dir)
{
    net_node *nn = &n->nodes[node];
    if (nn->rr_len == nn->rr_cap) {
        uint32_t cap = nn->rr_cap;
        rr_entry *r = grow(NULL, &cap, sizeof *r);
        if (!r) {
            n->oom = true;
            return;
        }
        for (uint32_t i = 0; i < nn->rr_len; i++) r[i] = nn->rr[(nn->rr_head + i) % nn->rr_cap];
        free(nn->rr);
        nn->rr = r;
        nn->rr_cap = cap;
        nn->rr_head = 0;
    }
    nn->rr[(nn->rr_head + nn->rr_len++) % nn->rr_cap] = (rr_entry){fi, n->flows[fi].gen, (uint8_t)dir};
    n->flows[fi].in_rr[dir] = true;
}

/* Put the next segment on node's uplink if it is idle. */
static void start_next(mm_net *n, uint32_t node)
{
    net_node *nn = &n->nodes[node];
    if (nn->sending || !nn->up) return;
    while (nn->rr_len) {
        rr_entry r = nn->rr[nn->rr_head];
        nn->rr_head = (nn->rr_head + 1) % nn->rr_cap;
        nn->rr_len--;
        flow *f = &n->flows[r.flow];
        if (!f->used || f->gen != r.gen) continue;
        f->in_rr[r.dir] = false;
        if (!f->q[r.dir].len || !f->live[r.dir]) continue;
        size_t len = f->q[r.dir].len < MM_NET_SEG ? f->q[r.dir].len : MM_NET_SEG;
        uint32_t si = seg_new(n, r.flow, r.dir, SEG_DATA, len);
        if (si == NIL) return;
        f = &n->flows[r.flow];
        bytes_q *q = &f->q[r.dir];
        memcpy(n->segs[si].data, q->buf + q->head, len);
        q->head += len;
        q->len -= len;
        if (!q->len) { /* drained: an idle connection holds no buffer (10^5 nodes x 30 connections) */
            q->head = 0;
            free(q->buf);
            q->buf = NULL;
            q->cap = 0;
        }
        f->tx[r.dir] = true;
        if (q->len) rr_push(n, node, r.flow, r.dir); /* round robin: to the back */
        nn->sending = true;
        push(n, EV_UP_DONE, node, n->e->now + tx_time(len, n->up[node]), si, nn->epoch);
        return;
    }
}

/* A lost segment: the connection breaks. The sender hears it now, the
 * receiver when the reset arrives. */
static void break_flow(mm_net *n, uint32_t fi, int dir)
{
    flow *f = &n->flows[fi];
    n->st.broken++;
    for (int d = 0; d < 2; d++) {
        f->q[d].len = f->q[d].head = 0;
        f->fin[d] = f->fin_sent[d] = true;
    }
    if (f->live[1 - dir]) send_ctl(n, fi, dir, SEG_RST);
    f = &n->flows[fi];
    if (f->live[dir]) push(n, EV_LOCAL_CLOSED, f->node[dir], n->e->now, (uint64_t)fi * 2 + (uint64_t)dir, f->gen);
}

/* ------------------------------------------------------------ events */

static void on_syn(mm_net *n, uint32_t fi, uint64_t gen)
{
    flow *f = &n->flows[fi];
    if (!f->used || f->gen != gen) return;
    if (!f->live[0]) { /* the dialler gave up already */
        maybe_free(n, fi);
        return;
    }
    uint32_t to = f->node[1], from = f->node[0];
    mm_conn_id id = 0;
    if (n->nodes[to].up) {
        n->port = n->port % 28000 + 1;
        id = n->h.accept(n->h.ctx, to, from, 32768 + n->port);
    }
    f = &n->flows[fi];
    if (id) {
        f->conn[1] = id;
        f->live[1] = true;
        ref_add(n, to, id, fi);
    } else {
        f->refused = true;
        n->st.refused++;
    }
    push(n, EV_SYNACK, from, travel(n, f, 1), fi, gen);
    if (id && n->h.drain) n->h.drain(n->h.ctx, to);
}

static void on_synack(mm_net *n, uint32_t fi, uint64_t gen)
{
    flow *f = &n->flows[fi];
    if (!f->used || f->gen != gen) return;
    if (!f->live[0]) {
        maybe_free(n, fi);
        return;
    }
    uint32_t node = f->node[0];
    mm_conn_id c = f->conn[0];
    if (f->refused) {
        f->live[0] = false;
        ref_del(n, node, c);
        maybe_free(n, fi);
        n->h.connect_failed(n->h.ctx, node, c);
    } else {
        n->h.connected(n->h.ctx, node, c);
    }
}

static void on_up_done(mm_net *n, uint32_t node, uint32_t si, uint64_t epoch)
{
    net_node *nn = &n->nodes[node];
    if (epoch != nn->epoch) { /* the node went down meanwhile */
        seg_free(n, si);
        return;
    }
    nn->sending = false;
    seg *s = &n->segs[si];
    flow *f = seg_flow(n, s);
    int dir = s->dir;
    if (!f || !f->live[dir]) {
        seg_free(n, si);
        start_next(n, node);
        return;
    }
    uint32_t fi = s->flow, len = s->len;
    mm_conn_id c = f->conn[dir];
    f->tx[dir] = false;
    f->unsent[dir] -= len < f->unsent[dir] ? len : f->unsent[dir];
    n->st.bytes += len;
    n->st.segments++;
    if (n->cfg.loss > 0 && mm_rng_uniform(&n->rng) < n->cfg.loss) {
        seg_free(n, si);
        break_flow(n, fi, dir);
        start_next(n, node);
        return;
    }
    push(n, EV_ARRIVE, f->node[1 - dir], travel(n, f, dir), si, 0);
    if (f->fin[dir] && !f->fin_sent[dir] && !f->q[dir].len) send_fin(n, fi, dir);
    start_next(n, node);
    n->h.sent(n->h.ctx, node, c, len);
}

static void on_arrive(mm_net *n, uint32_t node, uint32_t si)
{
    seg *s = &n->segs[si];
    flow *f = seg_flow(n, s);
    if (!f || !f->live[1 - s->dir]) {
        seg_free(n, si);
        return;
    }
    net_node *nn = &n->nodes[node];
    uint64_t start = nn->down_free > n->e->now ? nn->down_free : n->e->now;
    nn->down_free = start + tx_time(s->len, n->down[node]);
    push(n, EV_DELIVER, node, nn->down_free, si, 0);
}

static void on_deliver(mm_net *n, uint32_t node, uint32_t si)
{
    seg *s = &n->segs[si];
    flow *f = seg_flow(n, s);
    int side = 1 - s->dir;
    if (!f || !f->live[side]) {
        seg_free(n, si);
        return;
    }
    uint32_t fi = s->flow;
    mm_conn_id c = f->conn[side];
    if (s->kind == SEG_DATA) {
        uint8_t *data = s->data;
        uint32_t len = s->len;
        s->data = NULL; /* ours until the core has it */
        seg_free(n, si);
        n->h.received(n->h.ctx, node, c, data, len);
        free(data);
        return;
    }
    seg_free(n, si);
    f->live[side] = false;
    f->fin[side] = f->fin_sent[side] = true; /* a reset side sends nothing more */
    f->q[side].len = f->q[side].head = 0;
    ref_del(n, node, c);
    maybe_free(n, fi);
    n->h.closed(n->h.ctx, node, c);
}

static void on_local_closed(mm_net *n, uint32_t node, uint64_t a, uint64_t gen)
{
    uint32_t fi = (uint32_t)(a / 2);
    int side = (int)(a % 2);
    flow *f = &n->flows[fi];
    if (!f->used || f->gen != gen || !f->live[side]) return;
    mm_conn_id c = f->conn[side];
    f->live[side] = false;
    ref_del(n, node, c);
    maybe_free(n, fi);
    n->h.closed(n->h.ctx, node, c);
}

void mm_net_handle(mm_net *n, const mm_event *ev)
{
    switch (ev->kind) {
    case EV_SYN:
        on_syn(n, (uint32_t)ev->a, ev->b);
        break;
    case EV_SYNACK:
        on_synack(n, (uint32_t)ev->a, ev->b);
        break;
    case EV_UP_DONE:
        on_up_done(n, ev->node, (uint32_t)ev->a, ev->b);
        break;
    case EV_ARRIVE:
        on_arrive(n, ev->node, (uint32_t)ev->a);
        break;
    case EV_DELIVER:
        on_deliver(n, ev->node, (uint32_t)ev->a);
        break;
    case EV_LOCAL_CLOSED:
        on_local_closed(n, ev->node, ev->a, ev->b);
        break;
    default:
        break;
    }
}

/* ------------------------------------------------------------ actions */

void mm_net_connect(mm_net *n, uint32_t node, mm_conn_id c, uint32_t to)
{
    n->st.connects++;
    uint32_t fi = flow_new(n);
    if (fi == NIL) return; /* out of memory: the core's handshake deadline gives up */
    flow *f = &n->flows[fi];
    f->node[0] = node;
    f->node[1] = to < n->cfg.nodes ? to : node;
    f->conn[0] = c;
    f->live[0] = true;
    ref_add(n, node, c, fi);
    if (to >= n->cfg.nodes || to == node) { /* nobody there: refused at once */
        f->refused = true;
        n->st.refused++;
        push(n, EV_SYNACK, node, n->e->now, fi, f->gen);
        return;
    }
    push(n, EV_SYN, to, travel(n, f, 0), fi, f->gen);
}

void mm_net_send(mm_net *n, uint32_t node, mm_conn_id c, const uint8_t *data, size_t len)
{
    int side;
    flow *f = flow_of(n, node, c, &side);
    if (!f || !f->live[side] || f->fin[side] || !len) return;
    uint32_t fi = (uint32_t)(f - n->flows);
    if (!q_append(&f->q[side], data, len)) {
        n->oom = true;
        return;
    }
    f->unsent[side] += len;
    if (f->unsent[side] > n->st.unsent_max) n->st.unsent_max = f->unsent[side];
    if (!f->in_rr[side]) rr_push(n, node, fi, side);
    start_next(n, node);
}

void mm_net_close(mm_net *n, uint32_t node, mm_conn_id c)
{
    int side;
    flow *f = flow_of(n, node, c, &side);
    if (!f || !f->live[side] || f->fin[side]) return;
    f->fin[side] = true;
    if (!f->q[side].len && !f->tx[side]) send_fin(n, (uint32_t)(f - n->flows), side);
}

/* ------------------------------------------------------------ node life */

void mm_net_up(mm_net *n, uint32_t node)
{
    net_node *nn = &n->nodes[node];
    nn->up = true;
    nn->down_free = n->e->now;
}

void mm_net_down(mm_net *n, uint32_t node)
{
    net_node *nn = &n->nodes[node];
    nn->up = false;
    nn->sending = false;
    nn->epoch++;
    nn->rr_len = nn->rr_head = 0;
    nn->nrefs = 0;
    for (uint32_t fi = 0; fi < n->nflows; fi++) {
        flow *f = &n->flows[fi];
        if (!f->used) continue;
        for (int s = 0; s < 2; s++) {
            if (f->node[s] != node || !f->live[s]) continue;
            f->live[s] = false;
            f->fin[s] = f->fin_sent[s] = true;
            f->tx[s] = f->in_rr[s] = false;
            f->q[s].len = f->q[s].head = 0;
            if (f->live[1 - s]) send_ctl(n, fi, s, SEG_RST); /* the kernel resets its sockets */
            f = &n->flows[fi];
        }
        maybe_free(n, fi);
    }
}

/* ------------------------------------------------------------ life cycle */

mm_net *mm_net_new(const mm_net_config *cfg, const mm_net_hooks *hooks, mm_engine *engine)
{
    if (!cfg->nodes || !cfg->nregions) return NULL;
    mm_net *n = calloc(1, sizeof *n);
    if (!n) return NULL;
    n->cfg = *cfg;
    n->h = *hooks;
    n->e = engine;
    n->seg_free = NIL;
    mm_rng_seed(&n->rng, cfg->seed);
    size_t nn = cfg->nodes, nr = (size_t)cfg->nregions * cfg->nregions;
    n->region = malloc(nn * sizeof *n->region);
    n->up = malloc(nn * sizeof *n->up);
    n->down = malloc(nn * sizeof *n->down);
    n->latency = malloc(nr * sizeof *n->latency);
    n->nodes = calloc(nn, sizeof *n->nodes);
    if (!n->region || !n->up || !n->down || !n->latency || !n->nodes) {
        mm_net_free(n);
        return NULL;
    }
    memcpy(n->region, cfg->region, nn * sizeof *n->region);
    memcpy(n->up, cfg->up, nn * sizeof *n->up);
    memcpy(n->down, cfg->down, nn * sizeof *n->down);
    memcpy(n->latency, cfg->latency, nr * sizeof *n->latency);
    n->cfg.region = n->region;
    n->cfg.up = n->up;
    n->cfg.down = n->down;
    n->cfg.latency = n->latency;
    return n;
}

void mm_net_free(mm_net *n)
{
    if (!n) return;
    for (uint32_t i = 0; i < n->nsegs; i++) free(n->segs[i].data);
    for (uint32_t i = 0; i < n->nflows; i++)
        for (int d = 0; d < 2; d++) free(n->flows[i].q[d].buf);
    if (n->nodes)
        for (uint32_t i = 0; i < n->cfg.nodes; i++) {
            free(n->nodes[i].rr);
            free(n->nodes[i].refs);
        }
    free(n->segs);
    free(n->flows);
    free(n->free_flows);
    free(n->nodes);
    free(n->region);
    free(n->up);
    free(n->down);
    free(n->latency);
    free(n);
}

void mm_net_get_stats(const mm_net *n, mm_net_stats *s) { *s = n->st; }
uint32_t mm_net_flows(const mm_net *n) { return n->live_flows; }
bool mm_net_failed(const mm_net *n) { return n->oom; }
