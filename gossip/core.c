/* The gossip core (see gossip.h and docs/protocol.md).
 *
 * Layout of this file: small helpers; the action queue and per-connection
 * output; peers, scores and the view; exchanges; the handshake; frames and
 * control messages; timers; the public entry points. Nothing here reads a
 * clock, touches a socket or a file, or draws from a global random source. */
#include "addr.h"
#include "gossip.h"

#include <math.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cert.h"
#include "bytes.h"
#include "encode.h"
#include "noise.h"
#include "record.h"

#define ACTQ_CAP 512
#define MAX_SCORES 64
#define MAX_TOMBS 64
#define REPLAY_SLOTS 1024 /* msg1 ephemerals remembered: one per slot (the low bits of the key) */
#define HS_PAYLOAD_LEN (32 + 64 + 8 + 1)
#define HS_PAYLOAD_CERT_LEN (HS_PAYLOAD_LEN + MM_CERT_BYTES) /* certs mode: the certificate follows */
#define MAX_PFX_BANS 16 /* IPv4 /24 prefixes banned at once (SECURITY.md S2) */

enum { CONN_FREE, CONN_CONNECTING, CONN_HANDSHAKE, CONN_OPEN };
enum { PEER_ALIVE, PEER_SUSPECT };
enum { EXCH_AVERAGE = 0, EXCH_SYNC = 1 };

typedef struct {
    bool used;
    mm_addr_rec rec;
    int state;
    uint64_t suspect_since, next_probe;
    mm_conn_id conn; /* open session, or 0 */
    uint64_t pfx;    /* mm_addr_prefix(rec.addr), kept with rec (0: none) */
    bool anchor;     /* a peer we dialled and found at its address: not evicted by records (SECURITY.md §2.6) */
} peer;

typedef struct {
    bool used;
    uint8_t id[MM_ID_BYTES];
    double score;
    uint64_t at, ban_until, ban_len;
} score_entry;

typedef struct {
    uint8_t id[MM_ID_BYTES];
    uint64_t seq;
} tomb;

typedef struct {
    bool used;
    uint32_t xid; /* on the wire: chosen by the initiator, unique per connection */
    uint32_t lid; /* ours: unique in this core, the id actions carry */
    uint8_t kind;
    bool initiator;
    mm_conn_id conn;
    uint8_t peer_id[MM_ID_BYTES];
    uint8_t enc;
    bool snap_wanted, have_snap;
    const float *snap;
    uint64_t my_samples, peer_samples;
    bool acked;       /* initiator: ACK received; responder: ACK sent */
    bool send_data;   /* we stream our snapshot */
    uint64_t sent_vals;
    uint32_t sent_chunks;
    uint64_t sent_bytes;
    bool sent_end;
    bool expect_recv; /* the peer streams to us */
    float *recv;
    uint64_t recv_vals;
    uint32_t recv_chunks;
    uint64_t recv_bytes;
    bool recv_end;
    bool validated;   /* the peer's vector passed our checks; DONE sent */
    bool peer_done;   /* the peer's DONE: it accepted ours */
    bool merging;     /* MERGE emitted, waiting for merge_done */
    bool sync_done;   /* sync: vector received and validated, waiting for the others */
    uint64_t started, deadline, window_start, window_bytes;
    /* Clipping's per-tensor sums, taken chunk by chunk as the peer's vector
     * arrives (while it is in cache): dist2[t] = |recv_t - snap_t|^2 and
     * norm2[t] = |snap_t|^2, over the first dist_vals values. */
    double *dist2, *norm2;
    uint64_t dist_vals;
} exch;

typedef struct {
    mm_conn_id id;
    int state;
    bool outbound, expect_known, authed, hello_sent, hello_ok, closing, graceful;
    char addr[MM_ADDR_MAX];
    uint64_t source;    /* inbound: source_key(addr), for the per-address limits */
    uint64_t pfx;       /* mm_addr_prefix(addr): the /24 or /48 (0: none), for the per-prefix cap */
    uint64_t established; /* when the handshake completed (MM_SESSION_LIFETIME) */
    uint8_t expect_id[MM_ID_BYTES];
    uint8_t peer_id[MM_ID_BYTES];
    uint8_t peer_caps;
    mm_noise_hs *hs;
    mm_record rec;
    uint8_t *rx;
    size_t rx_len, rx_cap;
    uint8_t *out;
    size_t out_len, out_cap;
    bool out_lent;
    uint64_t unwritten; /* given to the runtime, not yet reported written */
    uint64_t opened, last_rx, last_tx, last_useful;
    uint32_t xid;       /* local id of the exchange on this connection, 0 if none */
    bool pending_avg;   /* start an exchange once the session is up */
    bool pending_sync;
    double tokens;
    uint64_t tokens_at;
    uint64_t learn_since; /* start of this peer's current shuffle round */
    uint32_t learned;     /* new view entries its shuffles gave us in that round */
    uint64_t expires_s;   /* wall time (unix s) the peer's binding or certificate ends: the session closes */
    bool expires_cert;    /* ...and it is the certificate's */
    bool has_serial;      /* certs mode: the peer's certificate serial, for revocation */
    uint64_t serial;
    uint64_t revs_sent;   /* version of the revocation list sent on this connection */
} conn;

typedef struct {
    double hist[MM_CLIP_HISTORY];
    uint32_t n, pos;
} clip_state;

struct mm_gossip {
    mm_gossip_config cfg;
    mm_gossip_env env;
    mm_gossip_sig_cache sig_seen; /* optional (mm_gossip_set_sig_cache) */
    void *sig_ctx;
    mm_gossip_tensor *tensors;
    clip_state *clips;
    uint8_t id[MM_ID_BYTES];
    uint8_t network_id[32];
    uint8_t static_sk[32], static_pk[32];
    uint8_t binding_sig[MM_SIG_BYTES];
    uint64_t binding_not_after; /* unix s; the binding is made again when half of its life is left */
    mm_revlist *revs;           /* certs mode: the newest owner-signed revocation list, or NULL */
    struct {
        uint64_t pfx;
        uint64_t until;
    } pfx_bans[MAX_PFX_BANS];   /* the /24s of banned identities (SECURITY.md §2.6, S2) */
    mm_addr_rec self;
    bool aes_ok, leaving;
    /* Per-source-address handshake rate (SECURITY.md §2.3, L2): token buckets
     * of up to MM_IP_BUCKETS addresses, grown as sources appear (a simulated
     * node meets a few, a public one many). */
    struct ip_bucket {
        uint64_t key; /* source_key(); 0: unused */
        double tokens;
        uint64_t at;
    } *buckets;
    uint32_t nbuckets, buckets_cap;
    uint8_t source_k[crypto_shorthash_KEYBYTES]; /* keys source_key(), so no one can aim at a collision */
    uint64_t refuse_log_at; /* admission refusals are logged at most once a second... */
    uint32_t refused_quiet; /* ...and counted in between */

    conn **conns; /* slots, each allocated when first used; a NULL or CONN_FREE slot is free */
    uint32_t nconns, conns_cap;
    mm_conn_id next_conn;
    peer peers[MM_VIEW_SIZE];
    score_entry *scores; /* MAX_SCORES, allocated at the first penalty */
    tomb *tombs;         /* MAX_TOMBS, allocated at the first LEAVE */
    uint32_t ntombs;
    exch exchs[MM_MAX_EXCHANGES];
    float *spare; /* one receive buffer kept from the last exchange (saves page faults) */
    uint32_t next_lid;
    /* The msg1 replay cache: as a table of REPLAY_SLOTS direct-mapped slots
     * would hold it, but only its occupied slots, grown on demand. */
    struct replay_entry {
        uint8_t e[8];
        uint64_t at;
        uint32_t slot;
    } *replay;
    uint32_t nreplay, replay_cap;

    /* state sync */
    bool sync_wanted, sync_active, sync_gathered; /* gathered: the wait for sources is over */
    bool sync_expired; /* MM_SYNC_TIMEOUT passed: wait only for the sources' own deadlines */
    uint64_t sync_started, sync_wanted_since;
    uint32_t sync_want;       /* sources this sync waits for: min(live peers, MM_SYNC_SOURCES) */
    uint64_t sync_retry_at;   /* sources failed (busy): ask other sessions then (0: not pending) */

    uint64_t next_exchange, next_shuffle, deadline;
    uint32_t refused_in_a_row; /* our vector refused as too far, by consecutive partners */
    mm_action *q; /* a ring of q_cap (<= ACTQ_CAP) actions, allocated while not empty */
    uint32_t q_head, q_len, q_cap;
    uint8_t *scratch; /* frames decrypted or encoded out of place: allocated as needed, freed in end() */
    size_t scratch_cap;
    mm_gossip_stats st;
};

/* ---------------------------------------------------------------- helpers */

static void *g_alloc(mm_gossip *g, size_t n) { return g->env.alloc(g->env.alloc_ctx, n); }
static void g_free(mm_gossip *g, void *p)
{
    if (p) g->env.free(g->env.alloc_ctx, p);
}

static uint64_t rand_u64(mm_gossip *g)
{
    uint64_t x;
    g->env.random(g->env.random_ctx, &x, sizeof x);
    return x;
}

static uint32_t rand_below(mm_gossip *g, uint32_t n) { return n ? (uint32_t)(rand_u64(g) % n) : 0; }

static void hex8(const uint8_t *id, char out[17]) { sodium_bin2hex(out, 17, id, 8); }

/* Wall time in unix seconds at monotonic now (cfg.wall_offset_ns). */
static int64_t wall_s(const mm_gossip *g, uint64_t now)
{
    int64_t ns = (int64_t)now + g->cfg.wall_offset_ns;
    return ns < 0 ? 0 : ns / 1000000000;
}

/* The monotonic time at which wall time reaches unix second t. */
static uint64_t mono_at(const mm_gossip *g, uint64_t t)
{
    if (t > (uint64_t)INT64_MAX / 1000000000u) return UINT64_MAX;
    int64_t ns = (int64_t)t * 1000000000 - g->cfg.wall_offset_ns;
    return ns < 0 ? 0 : (uint64_t)ns;
}

/* ------------------------------------------------------- the action queue */

static mm_action *push_action(mm_gossip *g, mm_act_kind kind)
{
    if (g->q_len == g->q_cap && g->q_cap < ACTQ_CAP) { /* grow (the ring, unrolled from q_head) */
        uint32_t cap = g->q_cap ? 2 * g->q_cap : 8;
        mm_action *q = g_alloc(g, cap * sizeof *q);
        if (!q) return NULL;
        for (uint32_t i = 0; i < g->q_len; i++) q[i] = g->q[(g->q_head + i) % g->q_cap];
        g_free(g, g->q);
        g->q = q;
        g->q_cap = cap;
        g->q_head = 0;
    }
    if (g->q_len == ACTQ_CAP) {
        /* The runtime drains the queue after every call; a full queue means a
         * bug in the runtime. Drop the oldest LOG rather than anything that
         * carries state. */
        for (uint32_t i = 0; i < g->q_len; i++) {
            mm_action *a = &g->q[(g->q_head + i) % g->q_cap];
            if (a->kind == MM_ACT_LOG) {
                a->kind = MM_ACT_NONE;
                break;
            }
        }
        return NULL;
    }
    mm_action *a = &g->q[(g->q_head + g->q_len++) % g->q_cap];
    memset(a, 0, sizeof *a);
    a->kind = kind;
    return a;
}

__attribute__((format(printf, 4, 5))) static void logf_(mm_gossip *g, mm_log_kind kind, const uint8_t *peer_id,
                                                         const char *fmt, ...)
{
    mm_action *a = push_action(g, MM_ACT_LOG);
    if (!a) return;
    a->log = kind;
    if (peer_id) memcpy(a->peer_id, peer_id, MM_ID_BYTES);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->text, sizeof a->text, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------ connections */

static conn *find_conn(mm_gossip *g, mm_conn_id id)
{
    for (uint32_t i = 0; i < g->nconns; i++)
        if (g->conns[i] && g->conns[i]->state != CONN_FREE && g->conns[i]->id == id) return g->conns[i];
    return NULL;
}

static conn *new_conn(mm_gossip *g, bool outbound, const char *addr, uint64_t now)
{
    uint32_t slot = UINT32_MAX, half_open = 0, used = 0;
    for (uint32_t i = 0; i < g->nconns; i++) {
        if (!g->conns[i] || g->conns[i]->state == CONN_FREE) {
            if (slot == UINT32_MAX) slot = i;
        } else {
            used++;
            if (g->conns[i]->state != CONN_OPEN && !g->conns[i]->outbound) half_open++;
        }
    }
    if (used >= MM_MAX_CONNS || (!outbound && half_open >= MM_MAX_HALF_OPEN)) return NULL;
    if (slot == UINT32_MAX) {
        if (g->nconns == MM_MAX_CONNS) return NULL;
        if (g->nconns == g->conns_cap) {
            uint32_t cap = g->conns_cap ? 2 * g->conns_cap : 8;
            conn **p = g_alloc(g, cap * sizeof *p);
            if (!p) return NULL;
            if (g->nconns) memcpy(p, g->conns, g->nconns * sizeof *p);
            g_free(g, g->conns);
            g->conns = p;
            g->conns_cap = cap;
        }
        g->conns[g->nconns] = NULL;
        slot = g->nconns++;
    }
    conn *c = g->conns[slot];
    if (!c && !(c = g->conns[slot] = g_alloc(g, sizeof *c))) return NULL;
    memset(c, 0, sizeof *c);
    c->id = ++g->next_conn ? g->next_conn : ++g->next_conn;
    c->state = outbound ? CONN_CONNECTING : CONN_HANDSHAKE;
    c->outbound = outbound;
    snprintf(c->addr, sizeof c->addr, "%s", addr ? addr : "");
    c->pfx = mm_addr_prefix(c->addr);
    c->opened = c->last_rx = c->last_tx = c->last_useful = c->tokens_at = now;
    c->tokens = MM_CTRL_BURST;
    return c;
}

/* Room for n more output bytes. */
static bool out_reserve(mm_gossip *g, conn *c, size_t n)
{
    if (c->out_len + n <= c->out_cap) return true;
    /* The first frame sizes the buffer: lent buffers stay until the core's
     * next call, so 10^5 simulated nodes each hold one per session it wrote to. */
    size_t cap = c->out_cap ? c->out_cap : c->out_len + n > 64 ? c->out_len + n : 64;
    while (cap < c->out_len + n) cap *= 2;
    uint8_t *p = g_alloc(g, cap);
    if (!p) return false;
    if (c->out_len) memcpy(p, c->out, c->out_len);
    g_free(g, c->out);
    c->out = p;
    c->out_cap = cap;
    return true;
}

/* An idle session (no exchange) keeps no buffer: they are allocated again
 * for the next message. */
static void conn_trim(mm_gossip *g, conn *c)
{
    if (c->xid) return;
    if (!c->out_len && !c->out_lent && c->out) {
        g_free(g, c->out);
        c->out = NULL;
        c->out_cap = 0;
    }
    if (!c->rx_len && c->rx) {
        g_free(g, c->rx);
        c->rx = NULL;
        c->rx_cap = 0;
    }
}

/* A buffer for n bytes decrypted or encoded out of place (freed in end()). */
static uint8_t *scratch(mm_gossip *g, size_t n)
{
    if (g->scratch_cap < n || !g->scratch) { /* n == 0 too: a CLOSE frame has no plaintext */
        g_free(g, g->scratch);
        g->scratch_cap = 0;
        if (!(g->scratch = g_alloc(g, n ? n : 1))) return NULL;
        g->scratch_cap = n;
    }
    return g->scratch;
}

static void conn_free_buffers(mm_gossip *g, conn *c)
{
    if (c->hs) {
        mm_noise_wipe(c->hs);
        g_free(g, c->hs);
        c->hs = NULL;
    }
    mm_record_wipe(&c->rec);
    g_free(g, c->rx);
    g_free(g, c->out);
    c->rx = c->out = NULL;
    c->rx_len = c->rx_cap = c->out_len = c->out_cap = 0;
}

static void abort_exchange(mm_gossip *g, exch *x, bool tell_peer, const char *why, uint64_t now);
static peer *find_peer(mm_gossip *g, const uint8_t *id);
static void mark_suspect(mm_gossip *g, const uint8_t *id, uint64_t now);

/* Close a connection: flush what is queued, then CLOSE. Its exchange is
 * abandoned unless it is already merging (a local operation). */
static void close_conn_(mm_gossip *g, conn *c, bool suspect_peer, bool emit, uint64_t now)
{
    if (c->state == CONN_FREE || c->closing) return;
    c->closing = true;
    if (c->xid) {
        for (int i = 0; i < MM_MAX_EXCHANGES; i++)
            if (g->exchs[i].used && g->exchs[i].lid == c->xid && !g->exchs[i].merging && !g->exchs[i].sync_done)
                abort_exchange(g, &g->exchs[i], false, "connection closed", now);
        c->xid = 0;
    }
    if (c->hello_ok) {
        peer *p = find_peer(g, c->peer_id);
        if (p && p->conn == c->id) p->conn = 0;
        if (suspect_peer) mark_suspect(g, c->peer_id, now);
    }
    if (!emit) return;
    mm_action *a = push_action(g, MM_ACT_CLOSE);
    if (a) a->conn = c->id;
}

static void close_conn(mm_gossip *g, conn *c, bool suspect_peer, uint64_t now)
{
    close_conn_(g, c, suspect_peer, true, now);
}

/* Called once the runtime reports the socket gone, or right after CLOSE. */
static void release_conn(mm_gossip *g, conn *c)
{
    if (c->state == CONN_OPEN && g->st.sessions) g->st.sessions--;
    conn_free_buffers(g, c);
    c->state = CONN_FREE;
}

/* A protocol failure on c: penalise the peer (if known) and close. */
static void penalize(mm_gossip *g, const uint8_t *id, double amount, uint64_t now);

__attribute__((format(printf, 4, 5))) static void fail_conn(mm_gossip *g, conn *c, double penalty, const char *fmt,
                                                            ...)
{
    char text[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    logf_(g, MM_LOG_REFUSED, c->authed ? c->peer_id : NULL, "%s%s%s", c->addr, c->addr[0] ? ": " : "", text);
    if (c->authed && penalty > 0) penalize(g, c->peer_id, penalty, c->last_rx);
    if (c->state != CONN_OPEN) g->st.handshakes_failed++;
    close_conn(g, c, false, c->last_rx);
}

/* ------------------------------------------------------------ frames out */

static bool send_frame(mm_gossip *g, conn *c, mm_frame_type type, uint32_t xid, uint64_t offset, const uint8_t *pt,
                       size_t len)
{
    size_t need = MM_FRAME_HEADER + len + MM_FRAME_TAG;
    if (!out_reserve(g, c, need)) return false;
    long n = mm_record_seal(&c->rec, type, xid, offset, pt, len, c->out + c->out_len, c->out_cap - c->out_len);
    if (n < 0) return false;
    c->out_len += (size_t)n;
    g->st.bytes_out += (uint64_t)n;
    return true;
}

static bool send_msg(mm_gossip *g, conn *c, const mm_msg *m)
{
    uint8_t buf[8192];
    long n = mm_msg_encode(m, buf, sizeof buf);
    if (n < 0) return false;
    return send_frame(g, c, m->type == MM_MSG_END ? MM_FRAME_END : MM_FRAME_CTRL, m->type == MM_MSG_END ? m->u.end.xid : 0,
                      0, buf, (size_t)n);
}

static void send_refusal(mm_gossip *g, conn *c, mm_msg_type type, uint32_t xid, uint32_t code, const char *text)
{
    mm_msg m = {.type = type};
    m.u.refuse.xid = xid;
    m.u.refuse.code = code;
    snprintf(m.u.refuse.text, sizeof m.u.refuse.text, "%s", text);
    send_msg(g, c, &m);
}

/* -------------------------------------------------- scores, bans, the view */

static score_entry *score_of(mm_gossip *g, const uint8_t *id, bool create)
{
    score_entry *free_slot = NULL, *oldest = NULL;
    if (!g->scores) {
        if (!create || !(g->scores = g_alloc(g, MAX_SCORES * sizeof *g->scores))) return NULL;
        memset(g->scores, 0, MAX_SCORES * sizeof *g->scores);
    }
    for (int i = 0; i < MAX_SCORES; i++) {
        score_entry *s = &g->scores[i];
        if (s->used && memcmp(s->id, id, MM_ID_BYTES) == 0) return s;
        if (!s->used && !free_slot) free_slot = s;
        if (s->used && (!oldest || s->at < oldest->at)) oldest = s;
    }
    if (!create) return NULL;
    score_entry *s = free_slot ? free_slot : oldest;
    memset(s, 0, sizeof *s);
    s->used = true;
    memcpy(s->id, id, MM_ID_BYTES);
    return s;
}

/* Scores decay by 0.9 per minute towards zero. */
static void decay(score_entry *s, uint64_t now)
{
    if (now > s->at) s->score *= pow(0.9, (double)(now - s->at) / 60e9);
    s->at = now;
}

/* The /24 (IPv6 /48) of addr is banned until `until` (loopback never: all
 * of a machine's nodes share it; addr.h). */
static void ban_prefix(mm_gossip *g, const char *addr, uint64_t until)
{
    uint64_t pfx = mm_addr_prefix(addr);
    if (!pfx) return;
    int slot = -1;
    for (int i = 0; i < MAX_PFX_BANS && slot < 0; i++)
        if (g->pfx_bans[i].until && g->pfx_bans[i].pfx == pfx) slot = i;
    if (slot < 0) { /* a new prefix takes the place of the ban that ends first */
        slot = 0;
        for (int i = 1; i < MAX_PFX_BANS; i++)
            if (g->pfx_bans[i].until < g->pfx_bans[slot].until) slot = i;
        g->pfx_bans[slot].until = 0;
    }
    g->pfx_bans[slot].pfx = pfx;
    if (until > g->pfx_bans[slot].until) g->pfx_bans[slot].until = until;
    char a[64];
    mm_addr_prefix_text(pfx, a, sizeof a);
    logf_(g, MM_LOG_REFUSED, NULL, "address prefix %s banned with it", a);
}

/* Until when the prefix of addr is banned (0: it is not). */
static uint64_t prefix_banned(const mm_gossip *g, const char *addr, uint64_t now)
{
    uint64_t pfx = mm_addr_prefix(addr);
    if (!pfx) return 0;
    for (int i = 0; i < MAX_PFX_BANS; i++)
        if (g->pfx_bans[i].until > now && g->pfx_bans[i].pfx == pfx) return g->pfx_bans[i].until;
    return 0;
}

static void penalize(mm_gossip *g, const uint8_t *id, double amount, uint64_t now)
{
    score_entry *s = score_of(g, id, true);
    if (!s) return; /* out of memory: no score kept */
    decay(s, now);
    s->score -= amount;
    if (s->score < MM_SCORE_BAN && s->ban_until <= now) {
        s->ban_len = s->ban_len ? 2 * s->ban_len : MM_BAN_FIRST;
        s->ban_until = now + s->ban_len;
        char h[17];
        hex8(id, h);
        logf_(g, MM_LOG_REFUSED, id, "peer %s banned for %llu s (score %.0f)", h,
              (unsigned long long)(s->ban_len / 1000000000ull), s->score);
        for (uint32_t i = 0; i < g->nconns; i++) {
            conn *c = g->conns[i];
            if (c && c->state != CONN_FREE && c->authed && memcmp(c->peer_id, id, MM_ID_BYTES) == 0)
                ban_prefix(g, c->addr, s->ban_until);
            if (c && c->state == CONN_OPEN && c->authed && memcmp(c->peer_id, id, MM_ID_BYTES) == 0)
                close_conn(g, c, false, now);
        }
    }
}

static bool banned(mm_gossip *g, const uint8_t *id, uint64_t now)
{
    score_entry *s = score_of(g, id, false);
    return s && s->ban_until > now;
}

static peer *find_peer(mm_gossip *g, const uint8_t *id)
{
    for (int i = 0; i < MM_VIEW_SIZE; i++)
        if (g->peers[i].used && memcmp(g->peers[i].rec.id, id, MM_ID_BYTES) == 0) return &g->peers[i];
    return NULL;
}

static uint32_t view_size(const mm_gossip *g)
{
    uint32_t n = 0;
    for (int i = 0; i < MM_VIEW_SIZE; i++) n += g->peers[i].used;
    return n;
}

/* The bytes an address record's signature covers. */
static size_t rec_message(const mm_gossip *g, const mm_addr_rec *r, bool leave, uint8_t *out)
{
    static const char addr_dom[] = "murmur-addr-v1", leave_dom[] = "murmur-leave-v1";
    const char *dom = leave ? leave_dom : addr_dom;
    size_t n = strlen(dom), alen = strlen(r->addr);
    memcpy(out, dom, n);
    memcpy(out + n, g->network_id, 32);
    memcpy(out + n + 32, r->id, MM_ID_BYTES);
    mm_put_le64(out + n + 64, r->seq);
    out[n + 72] = (uint8_t)alen;
    memcpy(out + n + 73, r->addr, alen);
    return n + 73 + alen;
}

static void sign_rec(const mm_gossip *g, mm_addr_rec *r, bool leave)
{
    uint8_t m[16 + 73 + MM_ADDR_MAX];
    size_t n = rec_message(g, r, leave, m);
    crypto_sign_detached(r->sig, NULL, m, n, g->cfg.identity_sk);
}

/* An Ed25519 check, through the runtime's cache of checks if it has one
 * (mm_gossip_set_sig_cache): the result is a pure function of the bytes. */
static bool sig_ok(const mm_gossip *g, const uint8_t *sig, const uint8_t *m, size_t n, const uint8_t *pk)
{
    if (!g->sig_seen) return crypto_sign_verify_detached(sig, m, n, pk) == 0;
    uint8_t d[MM_SIG_DIGEST];
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, sizeof d);
    crypto_generichash_update(&st, sig, MM_SIG_BYTES);
    crypto_generichash_update(&st, pk, 32);
    crypto_generichash_update(&st, m, n);
    crypto_generichash_final(&st, d, sizeof d);
    if (g->sig_seen(g->sig_ctx, d, false)) return true;
    if (crypto_sign_verify_detached(sig, m, n, pk) != 0) return false;
    g->sig_seen(g->sig_ctx, d, true);
    return true;
}

static bool rec_valid(const mm_gossip *g, const mm_addr_rec *r, bool leave)
{
    uint8_t m[16 + 73 + MM_ADDR_MAX];
    size_t n = rec_message(g, r, leave, m);
    return sig_ok(g, r->sig, m, n, r->id);
}

/* Whether r is, byte for byte, our own record or one in our view: both were
 * signed or verified before, so verifying r again would give true. */
static bool rec_held(const mm_gossip *g, const mm_addr_rec *r)
{
    const mm_addr_rec *h = &g->self;
    if (memcmp(r->id, g->id, MM_ID_BYTES) != 0) {
        h = NULL;
        for (int i = 0; i < MM_VIEW_SIZE && !h; i++)
            if (g->peers[i].used && memcmp(g->peers[i].rec.id, r->id, MM_ID_BYTES) == 0) h = &g->peers[i].rec;
    }
    return h && h->seq == r->seq && memcmp(h->sig, r->sig, MM_SIG_BYTES) == 0 &&
           strncmp(h->addr, r->addr, MM_ADDR_MAX) == 0;
}

static bool member_allowed(const mm_gossip *g, const uint8_t *id)
{
    if (g->cfg.nallow == 0) return true;
    for (uint32_t i = 0; i < g->cfg.nallow; i++)
        if (memcmp(g->cfg.allowlist[i], id, MM_ID_BYTES) == 0) return true;
    return false;
}

static const tomb *find_tomb(const mm_gossip *g, const uint8_t *id)
{
    for (uint32_t i = 0; i < g->ntombs && i < MAX_TOMBS; i++)
        if (memcmp(g->tombs[i].id, id, MM_ID_BYTES) == 0) return &g->tombs[i];
    return NULL;
}

/* Learn a verified record. Returns the peer entry, or NULL if not kept. */
static peer *learn(mm_gossip *g, const mm_addr_rec *r, bool trusted_live, uint64_t now)
{
    if (memcmp(r->id, g->id, MM_ID_BYTES) == 0 || !r->addr[0] || !member_allowed(g, r->id)) return NULL;
    if (g->revs && mm_revlist_revokes(g->revs, NULL, r->id)) return NULL; /* revoked by key */
    const tomb *t = find_tomb(g, r->id);
    if (t && r->seq <= t->seq) return NULL; /* it left; only a newer incarnation returns */
    peer *p = find_peer(g, r->id);
    if (p) {
        if (r->seq > p->rec.seq) {
            p->rec = *r;
            p->pfx = mm_addr_prefix(r->addr);
        }
        if (trusted_live) p->state = PEER_ALIVE;
        return p;
    }
    uint64_t pfx = mm_addr_prefix(r->addr); /* 0 on loopback: no cap there */
    if (pfx) {
        uint32_t same = 0;
        for (int i = 0; i < MM_VIEW_SIZE; i++)
            if (g->peers[i].used && g->peers[i].pfx == pfx) same++;
        if (same >= g->cfg.view_per_prefix) return NULL;
    }
    int slot = -1;
    for (int i = 0; i < MM_VIEW_SIZE && slot < 0; i++)
        if (!g->peers[i].used) slot = i;
    if (slot < 0) { /* full: replace a random entry without a session that is not an anchor */
        int cand[MM_VIEW_SIZE], nc = 0;
        for (int i = 0; i < MM_VIEW_SIZE; i++)
            if (!g->peers[i].conn && !g->peers[i].anchor) cand[nc++] = i;
        if (!nc) return NULL;
        slot = cand[rand_below(g, (uint32_t)nc)];
    }
    p = &g->peers[slot];
    memset(p, 0, sizeof *p);
    p->used = true;
    p->rec = *r;
    p->pfx = pfx;
    p->state = PEER_ALIVE;
    p->next_probe = now;
    return p;
}

static void forget(mm_gossip *g, peer *p, const char *why)
{
    char h[17];
    hex8(p->rec.id, h);
    logf_(g, MM_LOG_PEER_DOWN, p->rec.id, "peer %s (%s) %s", h, p->rec.addr, why);
    p->used = false;
}

static void mark_suspect(mm_gossip *g, const uint8_t *id, uint64_t now)
{
    peer *p = find_peer(g, id);
    if (p && p->state == PEER_ALIVE) {
        p->state = PEER_SUSPECT;
        p->suspect_since = now;
        p->next_probe = now + MM_PROBE_PERIOD;
    }
}

/* An open, greeted session with id, or NULL. */
static conn *session_of(const mm_gossip *g, const uint8_t *id)
{
    for (uint32_t i = 0; i < g->nconns; i++) {
        conn *c = g->conns[i];
        if (c && c->state == CONN_OPEN && c->hello_ok && !c->closing && memcmp(c->peer_id, id, MM_ID_BYTES) == 0)
            return c;
    }
    return NULL;
}

static conn *dial(mm_gossip *g, const char *addr, const uint8_t *expect, uint64_t now)
{
    conn *c = new_conn(g, true, addr, now);
    if (!c) return NULL;
    if (expect) {
        c->expect_known = true;
        memcpy(c->expect_id, expect, MM_ID_BYTES);
    }
    mm_action *a = push_action(g, MM_ACT_CONNECT);
    if (!a) {
        c->state = CONN_FREE;
        return NULL;
    }
    a->conn = c->id;
    a->addr = c->addr;
    return c;
}

/* A session older than MM_SESSION_LIFETIME starts no exchange: once idle it
 * closes gracefully, and the next use dials again (a fresh handshake: new
 * ephemeral keys, the current binding and certificate, SECURITY.md §2.3). */
static bool session_old(const conn *c, uint64_t now)
{
    return c->authed && now >= c->established + MM_SESSION_LIFETIME;
}

static void retire_session(mm_gossip *g, conn *c, uint64_t now)
{
    char h[17];
    hex8(c->peer_id, h);
    logf_(g, MM_LOG_INFO, c->peer_id, "session with %s is %llu s old: closed, to be handshaken again", h,
          (unsigned long long)((now - c->established) / 1000000000ull));
    send_frame(g, c, MM_FRAME_CLOSE, 0, 0, NULL, 0);
    c->graceful = true;
    close_conn(g, c, false, now);
}

/* A session to peer p, or a dial towards one (NULL if neither is possible). */
static conn *reach(mm_gossip *g, peer *p, uint64_t now)
{
    conn *c = session_of(g, p->rec.id);
    if (c && !c->xid && session_old(c, now)) {
        retire_session(g, c, now);
        c = NULL;
    }
    if (c) return c;
    for (uint32_t i = 0; i < g->nconns; i++) {
        conn *d = g->conns[i];
        if (d && d->state != CONN_FREE && !d->closing && d->outbound && d->expect_known &&
            memcmp(d->expect_id, p->rec.id, MM_ID_BYTES) == 0)
            return d;
    }
    return dial(g, p->rec.addr, p->rec.id, now);
}

/* ---------------------------------------------------------------- exchanges */

/* By the id the runtime knows. */
static exch *find_exch_local(mm_gossip *g, uint32_t lid)
{
    for (int i = 0; i < MM_MAX_EXCHANGES; i++)
        if (g->exchs[i].used && g->exchs[i].lid == lid) return &g->exchs[i];
    return NULL;
}

/* By the id a frame or message on connection c carries. */
static exch *find_exch_wire(mm_gossip *g, mm_conn_id c, uint32_t xid)
{
    for (int i = 0; i < MM_MAX_EXCHANGES; i++)
        if (g->exchs[i].used && g->exchs[i].conn == c && g->exchs[i].xid == xid) return &g->exchs[i];
    return NULL;
}

static exch *new_exch(mm_gossip *g, conn *c, uint8_t kind, bool initiator, uint32_t xid, uint64_t now)
{
    exch *x = NULL;
    for (int i = 0; i < MM_MAX_EXCHANGES && !x; i++)
        if (!g->exchs[i].used) x = &g->exchs[i];
    if (!x) return NULL;
    memset(x, 0, sizeof *x);
    x->used = true;
    x->lid = ++g->next_lid ? g->next_lid : ++g->next_lid;
    x->xid = initiator ? x->lid : xid;
    x->kind = kind;
    x->initiator = initiator;
    x->conn = c->id;
    memcpy(x->peer_id, c->peer_id, MM_ID_BYTES);
    x->enc = g->cfg.encoding;
    x->send_data = kind == EXCH_AVERAGE || !initiator;
    x->expect_recv = kind == EXCH_AVERAGE || initiator;
    x->started = x->window_start = now;
    uint64_t bytes = mm_enc_bytes(x->enc, MM_CHUNK_VALUES) * (g->cfg.params / MM_CHUNK_VALUES + 1);
    x->deadline = now + MM_EXCH_GRACE + bytes / MM_EXCH_MIN_RATE * 1000000000ull;
    if (x->expect_recv) {
        x->recv = g->spare ? g->spare : g_alloc(g, g->cfg.params * sizeof(float));
        g->spare = NULL;
        if (!x->recv) {
            x->used = false;
            return NULL;
        }
    }
    c->xid = x->lid;
    return x;
}

static void free_exch(mm_gossip *g, exch *x)
{
    if (x->snap_wanted || x->have_snap) {
        mm_action *a = push_action(g, MM_ACT_RELEASE);
        if (a) a->xid = x->lid;
    }
    if (x->recv && !g->spare)
        g->spare = x->recv;
    else
        g_free(g, x->recv);
    g_free(g, x->dist2);
    conn *c = find_conn(g, x->conn);
    if (c && c->xid == x->lid) c->xid = 0;
    memset(x, 0, sizeof *x);
}

static void log_exchange(mm_gossip *g, exch *x, bool ok, const char *why, uint64_t now)
{
    mm_action *a = push_action(g, MM_ACT_LOG);
    if (!a) return;
    a->log = MM_LOG_EXCHANGE;
    a->ok = ok;
    a->initiator = x->initiator;
    a->xid = x->lid;
    memcpy(a->peer_id, x->peer_id, MM_ID_BYTES);
    a->bytes_in = x->recv_bytes;
    a->bytes_out = x->sent_bytes;
    a->duration = now - x->started;
    a->peer_samples = x->peer_samples;
    char h[17];
    hex8(x->peer_id, h);
    snprintf(a->text, sizeof a->text, "%s %s with %s: %s", x->kind == EXCH_SYNC ? "sync" : "exchange",
             ok ? "done" : "failed", h, why);
}

static void abort_exchange(mm_gossip *g, exch *x, bool tell_peer, const char *why, uint64_t now)
{
    conn *c = find_conn(g, x->conn);
    if (tell_peer && c && c->state == CONN_OPEN && !c->closing) send_frame(g, c, MM_FRAME_ABORT, x->xid, 0, NULL, 0);
    log_exchange(g, x, false, why, now);
    g->st.exchanges_failed++;
    free_exch(g, x);
}

static void finish_sync(mm_gossip *g, uint64_t now);
static void start_sync(mm_gossip *g, uint64_t now);
static void send_shuffle(mm_gossip *g, conn *c, mm_msg_type type);
static int average_now(mm_gossip *g, uint64_t now);

/* sum of (a[i] - b[i])^2 (b NULL: of a[i]^2) in double. Eight independent
 * partial sums let the compiler vectorise what one running sum serialises on
 * the add latency; the order is fixed, so the result is deterministic. */
static double sum_sq(const float *a, const float *b, uint64_t n)
{
    double acc[8] = {0};
    uint64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) {
            double d = (double)a[i + k] - (b ? (double)b[i + k] : 0.0);
            acc[k] += d * d;
        }
    for (; i < n; i++) {
        double d = (double)a[i] - (b ? (double)b[i] : 0.0);
        acc[0] += d * d;
    }
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

static uint32_t clip_tensors(const mm_gossip *g, const mm_gossip_tensor **tensors)
{
    static const mm_gossip_tensor none = {0, 0};
    *tensors = g->cfg.ntensors ? g->tensors : &none;
    return g->cfg.ntensors == 0 ? 1 : g->cfg.ntensors < 64 ? g->cfg.ntensors : 64;
}

/* Add values [v0, v0 + n) of the peer's vector to clipping's per-tensor
 * sums. Called for every chunk as it arrives, in order; the sums are the
 * same whether a vector is summed on arrival or all at once at its end
 * (clip_vector then walks it in the same chunks). Returns false when out of
 * memory. */
static bool clip_sum(mm_gossip *g, exch *x, uint64_t v0, uint64_t n)
{
    const mm_gossip_tensor *tensors;
    uint32_t nt = clip_tensors(g, &tensors);
    if (!x->dist2) {
        if (!(x->dist2 = g_alloc(g, 2 * (size_t)nt * sizeof *x->dist2))) return false;
        memset(x->dist2, 0, 2 * (size_t)nt * sizeof *x->dist2);
        x->norm2 = x->dist2 + nt;
    }
    for (uint32_t t = 0; t < nt; t++) {
        uint64_t off = g->cfg.ntensors ? tensors[t].offset : 0, cnt = g->cfg.ntensors ? tensors[t].count : g->cfg.params;
        uint64_t lo = off > v0 ? off : v0, hi = off + cnt < v0 + n ? off + cnt : v0 + n;
        if (lo >= hi) continue;
        x->dist2[t] += sum_sq(x->recv + lo, x->snap + lo, hi - lo);
        if (g->clips[t].n < MM_CLIP_MIN_HISTORY) x->norm2[t] += sum_sq(x->snap + lo, NULL, hi - lo);
    }
    x->dist_vals = v0 + n;
    return true;
}

/* The sums of a vector that was not summed on arrival (its snapshot came
 * late, or memory was short then), in the same chunks. */
static bool clip_sum_all(mm_gossip *g, exch *x)
{
    if (x->dist_vals == g->cfg.params && x->dist2) return true;
    const mm_gossip_tensor *tensors;
    uint32_t nt = clip_tensors(g, &tensors);
    if (x->dist2) memset(x->dist2, 0, 2 * (size_t)nt * sizeof *x->dist2);
    x->dist_vals = 0;
    for (uint64_t v = 0; v < g->cfg.params; v += MM_CHUNK_VALUES)
        if (!clip_sum(g, x, v, g->cfg.params - v < MM_CHUNK_VALUES ? g->cfg.params - v : MM_CHUNK_VALUES)) return false;
    return true;
}

/* Per-tensor distance clipping with an adaptive bound (SECURITY.md §2.7).
 * Needs clipping's sums (clip_sum_all).
 * Rewrites recv as snap + clip(recv - snap). Returns false to refuse. */
static bool clip_vector(mm_gossip *g, exch *x)
{
    const float *s = x->snap;
    float *r = x->recv;
    uint32_t far = 0;
    double scale[64];
    const mm_gossip_tensor whole = {0, g->cfg.params}; /* no layout given: one tensor */
    const mm_gossip_tensor *tensors;
    uint32_t nt = clip_tensors(g, &tensors);
    if (!g->cfg.ntensors) tensors = &whole;
    for (uint32_t t = 0; t < nt; t++) {
        double d = sqrt(x->dist2[t]);
        clip_state *cs = &g->clips[t];
        double tau;
        if (cs->n < MM_CLIP_MIN_HISTORY) {
            /* No history yet (a new or restarted node): bound by our own
             * tensor's norm, so a first vector of 1e30s is refused too. */
            tau = MM_CLIP_BOOT * sqrt(x->norm2[t]);
            if (tau < MM_CLIP_FLOOR) tau = MM_CLIP_FLOOR;
        } else {
            double h[MM_CLIP_HISTORY];
            uint32_t n = cs->n;
            memcpy(h, cs->hist, n * sizeof *h);
            for (uint32_t i = 1; i < n; i++) /* insertion sort: n <= 32 */
                for (uint32_t j = i; j > 0 && h[j] < h[j - 1]; j--) {
                    double tmp = h[j];
                    h[j] = h[j - 1];
                    h[j - 1] = tmp;
                }
            tau = 2.0 * (n % 2 ? h[n / 2] : 0.5 * (h[n / 2 - 1] + h[n / 2]));
            if (tau < MM_CLIP_FLOOR) tau = MM_CLIP_FLOOR;
        }
        if (d > MM_CLIP_REFUSE * tau) far++;
        scale[t] = d > tau ? tau / d : 1.0;
        double rec = d < tau ? d : tau;
        cs->hist[cs->pos] = rec;
        cs->pos = (cs->pos + 1) % MM_CLIP_HISTORY;
        if (cs->n < MM_CLIP_HISTORY) cs->n++;
    }
    if (nt && far * 2 > nt) return false;
    for (uint32_t t = 0; t < nt; t++) {
        if (scale[t] >= 1.0) continue;
        const mm_gossip_tensor *tn = &tensors[t];
        float k = (float)scale[t];
        for (uint64_t i = tn->offset; i < tn->offset + tn->count; i++) r[i] = s[i] + k * (r[i] - s[i]);
    }
    /* Values no tensor covers (the layout's alignment padding) mean nothing
     * to the model and no bound applies to them: keep ours. Else a peer
     * could park FLT_MAX there, then -FLT_MAX, and the second merge would
     * overflow to -Inf, which bars us from averaging for good (SECURITY.md
     * N3). Tensors come in layout order; were they not, this keeps more of
     * our own values than needed, never fewer. */
    uint64_t at = 0;
    for (uint32_t t = 0; t <= nt; t++) {
        uint64_t start = t < nt ? tensors[t].offset : g->cfg.params;
        if (start > at) memcpy(r + at, s + at, (size_t)(start - at) * sizeof *r);
        if (t < nt && tensors[t].offset + tensors[t].count > at) at = tensors[t].offset + tensors[t].count;
    }
    return true;
}

/* Both directions complete? Then validate and merge (or park a sync result). */
static void try_finish(mm_gossip *g, exch *x, uint64_t now)
{
    if (x->merging || x->sync_done) return;
    if ((x->expect_recv && !x->recv_end) || (x->send_data && !x->sent_end)) return;
    if (!x->expect_recv) { /* we only served a sync */
        log_exchange(g, x, true, "served", now);
        g->st.exchanges_ok++;
        free_exch(g, x);
        return;
    }
    if (x->kind == EXCH_SYNC) {
        x->sync_done = true;
        finish_sync(g, now);
        return;
    }
    if (!x->validated) {
        if (g->cfg.clip && g->clips && !clip_sum_all(g, x)) {
            abort_exchange(g, x, true, "out of memory", now);
            return;
        }
        if (g->cfg.clip && g->clips && !clip_vector(g, x)) {
            penalize(g, x->peer_id, MM_PENALTY_INVALID, now);
            /* Say why before aborting: a node refused by several peers in a
             * row knows it is the outlier and re-syncs. */
            conn *rc = find_conn(g, x->conn);
            if (rc && rc->state == CONN_OPEN && !rc->closing)
                send_refusal(g, rc, MM_MSG_BUSY, x->xid, MM_REFUSE_INVALID, "too far");
            abort_exchange(g, x, true, "vector refused: too far from ours", now);
            return;
        }
        /* Tell the peer we accept its vector; merge once it says the same of
         * ours, so an exchange is applied on both sides or on neither (but
         * for a failure between the two DONEs). */
        conn *c = find_conn(g, x->conn);
        mm_msg d = {.type = MM_MSG_DONE};
        d.u.done.xid = x->xid;
        if (!c || c->closing || !send_msg(g, c, &d)) {
            abort_exchange(g, x, false, "connection lost before DONE", now);
            return;
        }
        x->validated = true;
    }
    if (!x->peer_done) return;
    float w = 0.5f;
    if (g->cfg.weighting == MM_WEIGHT_SAMPLES && x->my_samples + x->peer_samples > 0) {
        double f = (double)x->peer_samples / ((double)x->my_samples + (double)x->peer_samples);
        w = (float)(f < 0.5 ? f : 0.5);
    }
    mm_action *a = push_action(g, MM_ACT_MERGE);
    if (!a) {
        abort_exchange(g, x, true, "action queue full", now);
        return;
    }
    a->xid = x->lid;
    a->peer = x->recv;
    a->snap = x->snap;
    a->weight = w;
    a->count = g->cfg.params;
    x->merging = true;
}

/* Stream our snapshot while the send window allows. */
/* A DATA frame for a worker: encode (unless the snapshot already is the
 * wire format) into the frame, then seal it in place. */
typedef struct {
    mm_seal_job seal;
    const float *src; /* values to encode into the frame; NULL: seal.pt is the snapshot itself */
    uint8_t *out_pt;  /* where the frame's plaintext goes */
    size_t n;
    uint8_t enc;
} data_job;

static void run_data_job(void *arg, uint32_t i)
{
    data_job *j = (data_job *)arg + i;
    if (j->src) mm_enc_encode(j->enc, j->src, j->n, j->out_pt);
    mm_seal_job_run(&j->seal);
}

#define PUMP_BATCH 32 /* frames handed out at once: a send window of the smallest (q8) chunks */

/* With env.parallel: fill the send window with frames whose headers and
 * counters are assigned here, in order, and whose encoding and sealing the
 * runtime's workers do. Returns false when out of memory or nonces. */
static bool pump_batch(mm_gossip *g, exch *x, conn *c)
{
    data_job jobs[PUMP_BATCH];
    uint32_t k = 0;
    size_t planned = 0;
    for (uint64_t v = x->sent_vals; k < PUMP_BATCH && v < g->cfg.params && c->unwritten + c->out_len + planned < MM_SEND_WINDOW; k++) {
        uint64_t n = g->cfg.params - v < MM_CHUNK_VALUES ? g->cfg.params - v : MM_CHUNK_VALUES;
        planned += MM_FRAME_HEADER + mm_enc_bytes(x->enc, (size_t)n) + MM_FRAME_TAG;
        v += n;
    }
    if (k == 0) return true;
    if (!out_reserve(g, c, planned)) return false;
    bool ok = true;
    uint32_t made = 0;
    for (; made < k; made++) {
        data_job *j = &jobs[made];
        uint64_t n = g->cfg.params - x->sent_vals < MM_CHUNK_VALUES ? g->cfg.params - x->sent_vals : MM_CHUNK_VALUES;
        size_t len = mm_enc_bytes(x->enc, (size_t)n);
        uint8_t *out = c->out + c->out_len;
        j->src = x->snap + x->sent_vals;
        j->n = (size_t)n;
        j->enc = x->enc;
        j->out_pt = out + MM_FRAME_HEADER;
        const uint8_t *pt = j->out_pt;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        if (x->enc == MM_ENC_F32) { /* seal straight from the snapshot */
            pt = (const uint8_t *)j->src;
            j->src = NULL;
        }
#endif
        long fl = mm_record_seal_defer(&c->rec, MM_FRAME_DATA, x->xid, x->sent_vals, pt, len, out,
                                       c->out_cap - c->out_len, &j->seal);
        if (fl < 0) {
            ok = false;
            break;
        }
        c->out_len += (size_t)fl;
        g->st.bytes_out += (uint64_t)fl;
        x->sent_vals += n;
        x->sent_chunks++;
        x->sent_bytes += len;
    }
    /* Even after a failure, the frames that took a counter are sealed: the
     * stream stays what a serial core would have written. */
    g->env.parallel(g->env.parallel_ctx, run_data_job, jobs, made);
    for (uint32_t i = 0; i < made; i++) sodium_memzero(jobs[i].seal.key, sizeof jobs[i].seal.key);
    return ok;
}

static void pump(mm_gossip *g, exch *x, conn *c)
{
    if (!x->send_data || !x->have_snap || !x->acked || x->sent_end || c->closing) return;
    if (g->env.parallel && !pump_batch(g, x, c)) {
        abort_exchange(g, x, true, "out of memory", c->last_tx);
        return;
    }
    while (x->sent_vals < g->cfg.params && c->unwritten + c->out_len < MM_SEND_WINDOW) {
        uint64_t n = g->cfg.params - x->sent_vals;
        if (n > MM_CHUNK_VALUES) n = MM_CHUNK_VALUES;
        const float *src = x->snap + x->sent_vals;
        const uint8_t *pt;
        size_t len;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        if (x->enc == MM_ENC_F32) { /* the snapshot is already the wire format: seal straight from it */
            pt = (const uint8_t *)src;
            len = (size_t)n * 4;
        } else
#endif
        {
            uint8_t *s = scratch(g, mm_enc_bytes(x->enc, (size_t)n));
            if (!s) {
                abort_exchange(g, x, true, "out of memory", c->last_tx);
                return;
            }
            len = mm_enc_encode(x->enc, src, (size_t)n, s);
            pt = s;
        }
        if (!send_frame(g, c, MM_FRAME_DATA, x->xid, x->sent_vals, pt, len)) {
            abort_exchange(g, x, true, "out of memory", c->last_tx);
            return;
        }
        x->sent_vals += n;
        x->sent_chunks++;
        x->sent_bytes += len;
    }
    if (x->sent_vals == g->cfg.params) {
        mm_msg m = {.type = MM_MSG_END};
        m.u.end.xid = x->xid;
        m.u.end.total_bytes = x->sent_bytes;
        m.u.end.chunks = x->sent_chunks;
        m.u.end.encoding = x->enc;
        if (!send_msg(g, c, &m)) {
            abort_exchange(g, x, true, "out of memory", c->last_tx);
            return;
        }
        x->sent_end = true;
    }
}

static void want_snapshot(mm_gossip *g, exch *x)
{
    mm_action *a = push_action(g, MM_ACT_WANT_SNAPSHOT);
    if (a) {
        a->xid = x->lid;
        x->snap_wanted = true;
    }
}

/* Begin an exchange on an open session (we are the initiator). */
static void start_exchange(mm_gossip *g, conn *c, uint8_t kind, uint64_t now)
{
    if (c->xid || session_old(c, now)) return; /* an old session closes (do_timers) */
    exch *x = new_exch(g, c, kind, true, 0, now);
    if (!x) return;
    if (kind == EXCH_SYNC) { /* nothing of ours to send: ask right away */
        mm_msg m = {.type = MM_MSG_EXCH_REQ};
        m.u.exch.xid = x->xid;
        m.u.exch.encoding = x->enc;
        m.u.exch.kind = EXCH_SYNC;
        if (!send_msg(g, c, &m)) abort_exchange(g, x, false, "out of memory", now);
    } else {
        want_snapshot(g, x); /* the request goes out with our sample count once it is lent */
    }
}

static void finish_sync(mm_gossip *g, uint64_t now)
{
    exch *done[MM_SYNC_SOURCES];
    int nd = 0, pending = 0;
    if (!g->sync_active) return;
    for (int i = 0; i < MM_MAX_EXCHANGES; i++) {
        exch *x = &g->exchs[i];
        if (!x->used || x->kind != EXCH_SYNC || !x->initiator) continue;
        if (x->merging) return;
        if (x->sync_done && nd < MM_SYNC_SOURCES)
            done[nd++] = x;
        else if (!x->sync_done)
            pending++;
    }
    bool timed_out = now >= g->sync_started + MM_SYNC_TIMEOUT;
    if (timed_out) g->sync_expired = true;
    if (nd == 0 && pending == 0) { /* every source failed: try again with the next session */
        g->sync_active = false;
        g->sync_wanted = true;
        g->sync_wanted_since = now;
        g->sync_gathered = false;
        logf_(g, MM_LOG_INFO, NULL, "state sync failed; retrying");
        start_sync(g, now);
        return;
    }
    if (nd == 0 || (pending && !timed_out && nd < MM_SYNC_SOURCES)) return;
    if (!pending && !timed_out && nd < (int)g->sync_want) {
        /* Sources failed (busy, most often): one or two answers are not
         * enough where three peers are live, or one poisoned source would
         * be taken whole (SECURITY.md P11). Ask other sessions shortly. */
        if (!g->sync_retry_at) g->sync_retry_at = now + MM_SYNC_RETRY;
        return;
    }
    g->sync_retry_at = 0;
    /* With three sources, the coordinate-wise median: one poisoned source
     * cannot move any coordinate outside the range of the two honest ones. */
    if (nd >= 3) {
        float *a = done[0]->recv, *b = done[1]->recv, *c = done[2]->recv;
        for (uint64_t i = 0; i < g->cfg.params; i++) {
            float lo = a[i] < b[i] ? a[i] : b[i], hi = a[i] < b[i] ? b[i] : a[i];
            a[i] = c[i] < lo ? lo : c[i] > hi ? hi : c[i];
        }
    }
    for (int i = 1; i < nd; i++) {
        log_exchange(g, done[i], true, "sync source", now);
        g->st.exchanges_ok++;
        free_exch(g, done[i]);
    }
    for (int i = 0; i < MM_MAX_EXCHANGES; i++) /* sources still running are no longer needed */
        if (g->exchs[i].used && g->exchs[i].kind == EXCH_SYNC && g->exchs[i].initiator && !g->exchs[i].sync_done)
            abort_exchange(g, &g->exchs[i], true, "sync finished without it", now);
    mm_action *a = push_action(g, MM_ACT_MERGE);
    if (!a) return;
    a->xid = done[0]->lid;
    a->peer = done[0]->recv;
    a->snap = NULL;
    a->weight = 1.0f;
    a->count = g->cfg.params;
    done[0]->merging = true;
    g->sync_active = false;
    logf_(g, MM_LOG_SYNCED, NULL, "state synced from %d peer(s)%s", nd, nd >= 3 ? " (coordinate-wise median)" : "");
}

/* Start sync exchanges on up to max idle, greeted sessions; how many. */
static int sync_ask(mm_gossip *g, int max, uint64_t now)
{
    int started = 0;
    for (uint32_t i = 0; i < g->nconns && started < max; i++) {
        conn *c = g->conns[i];
        if (c && c->state == CONN_OPEN && c->hello_ok && !c->closing && !c->xid) {
            start_exchange(g, c, EXCH_SYNC, now);
            if (c->xid) started++;
        }
    }
    return started;
}

static void start_sync(mm_gossip *g, uint64_t now)
{
    if (g->sync_active || !g->sync_wanted) return;
    /* Wait (briefly) until we have sessions with as many sources as we
     * know live peers, up to MM_SYNC_SOURCES: one source is one point of
     * failure. Dial the ones we know but have no session with. */
    uint32_t live = 0, ready = 0;
    for (int i = 0; i < MM_VIEW_SIZE; i++) {
        peer *p = &g->peers[i];
        if (!p->used || p->state != PEER_ALIVE) continue;
        live++;
        conn *c = session_of(g, p->rec.id);
        if (c && !c->xid)
            ready++;
        else if (!c && live <= MM_SYNC_SOURCES)
            reach(g, p, now);
    }
    uint32_t want = live < MM_SYNC_SOURCES ? live : MM_SYNC_SOURCES;
    if (now >= g->sync_wanted_since + MM_SYNC_GATHER) g->sync_gathered = true;
    if (ready == 0 || (ready < want && !g->sync_gathered)) return;
    if (sync_ask(g, MM_SYNC_SOURCES, now)) {
        g->sync_wanted = false;
        g->sync_active = true;
        g->sync_expired = false;
        g->sync_started = now;
        g->sync_want = want ? want : 1;
        g->sync_retry_at = 0;
    }
}

/* Sources answered too few (finish_sync): ask idle sessions again, up to
 * MM_SYNC_SOURCES sync exchanges in all. Sessions whose source answered
 * still hold that exchange (c->xid), so they are not asked twice. */
static void sync_retry(mm_gossip *g, uint64_t now)
{
    int used = 0;
    for (int i = 0; i < MM_MAX_EXCHANGES; i++)
        used += g->exchs[i].used && g->exchs[i].kind == EXCH_SYNC && g->exchs[i].initiator;
    g->sync_retry_at = 0;
    if (used < MM_SYNC_SOURCES && sync_ask(g, MM_SYNC_SOURCES - used, now)) return;
    g->sync_retry_at = now + MM_SYNC_RETRY; /* every session busy: later (finish_sync ends it at the timeout) */
}

/* ------------------------------------------------------------ handshake */

static size_t binding_message(const mm_gossip *g, const uint8_t *static_pub, uint64_t not_after, uint8_t *m)
{
    static const char dom[] = "murmur-static-v1";
    memcpy(m, dom, 16);
    memcpy(m + 16, g->network_id, 32);
    memcpy(m + 48, static_pub, 32);
    mm_put_le64(m + 80, not_after);
    return 88;
}

/* Our static-key binding, valid for cfg.binding_lifetime of wall time, and
 * made again once half of that is left (we hold the identity key), so every
 * handshake presents one that lasts at least half a lifetime (SECURITY.md H6). */
static void make_binding(mm_gossip *g, uint64_t now)
{
    uint64_t life_s = (g->cfg.binding_lifetime ? g->cfg.binding_lifetime : MM_BINDING_LIFETIME) / 1000000000u;
    uint64_t w = (uint64_t)wall_s(g, now);
    if (life_s < 2) life_s = 2;
    if (g->binding_not_after && w + life_s / 2 < g->binding_not_after) return;
    g->binding_not_after = w + life_s;
    uint8_t m[88];
    size_t n = binding_message(g, g->static_pk, g->binding_not_after, m);
    crypto_sign_detached(g->binding_sig, NULL, m, n, g->cfg.identity_sk);
}

/* Our handshake payload (docs/protocol.md §3.2); returns its length. */
static size_t make_payload(mm_gossip *g, uint8_t *p, uint64_t now)
{
    make_binding(g, now);
    memcpy(p, g->id, 32);
    memcpy(p + 32, g->binding_sig, 64);
    mm_put_le64(p + 96, g->binding_not_after);
    p[104] = g->aes_ok ? 1 : 0;
    if (!g->cfg.certs) return HS_PAYLOAD_LEN;
    memcpy(p + HS_PAYLOAD_LEN, g->cfg.cert, MM_CERT_BYTES);
    return HS_PAYLOAD_CERT_LEN;
}

/* Whether the owner signed l for this network (through the signature cache). */
static bool revlist_ok(const mm_gossip *g, const mm_revlist *l)
{
    if (l->n > MM_REVOKE_MAX) return false;
    for (uint32_t i = 0; i < l->n; i++)
        if (l->e[i].kind > MM_REVOKE_KEY) return false;
    uint8_t m[MM_REVLIST_MESSAGE_MAX];
    size_t n = mm_revlist_message(l, g->network_id, m);
    return sig_ok(g, l->sig, m, n, g->cfg.owner_pk);
}

/* Certs mode: the certificate that ends payload p, of identity p[0..32)
 * (SECURITY.md §2.2, H5). On success c learns its serial and when it ends. */
static bool cert_admits(mm_gossip *g, conn *c, const uint8_t *p, size_t len, int64_t w)
{
    char h[17];
    hex8(p, h);
    if (len != HS_PAYLOAD_CERT_LEN) {
        fail_conn(g, c, 0, "peer %s presented no membership certificate", h);
        return false;
    }
    mm_cert ct;
    uint8_t m[14 + MM_CERT_SIGNED];
    mm_cert_status st = mm_cert_decode(&ct, p + HS_PAYLOAD_LEN);
    if (st == MM_CERT_OK && !sig_ok(g, ct.sig, m, mm_cert_message(&ct, m), g->cfg.owner_pk)) st = MM_CERT_NOT_OWNER;
    if (st == MM_CERT_OK) st = mm_cert_check_fields(&ct, g->network_id, p, w);
    if (st != MM_CERT_OK) {
        fail_conn(g, c, 0, "peer %s: %s", h, mm_cert_why(st));
        return false;
    }
    if (g->revs && mm_revlist_revokes(g->revs, &ct.serial, p)) {
        fail_conn(g, c, 0, "peer %s: certificate revoked (serial %llu)", h, (unsigned long long)ct.serial);
        return false;
    }
    c->has_serial = true;
    c->serial = ct.serial;
    if (ct.not_after + MM_CLOCK_SKEW_S < c->expires_s) {
        c->expires_s = ct.not_after + MM_CLOCK_SKEW_S;
        c->expires_cert = true;
    }
    return true;
}

/* Check the peer's handshake payload; on success fill c->peer_id. */
static bool check_payload(mm_gossip *g, conn *c, const uint8_t *p, size_t len, uint64_t now)
{
    if (len != HS_PAYLOAD_LEN && len != HS_PAYLOAD_CERT_LEN) {
        fail_conn(g, c, 0, "handshake payload of %zu bytes", len);
        return false;
    }
    const uint8_t *rs = mm_noise_remote_static(c->hs);
    uint8_t m[88];
    size_t n = binding_message(g, rs, mm_get_le64(p + 96), m);
    if (!rs || !sig_ok(g, p + 32, m, n, p)) {
        fail_conn(g, c, 0, "the peer's static key is not bound to its identity in this network");
        return false;
    }
    int64_t w = wall_s(g, now);
    uint64_t not_after = mm_get_le64(p + 96);
    if (not_after == 0 || (not_after <= (uint64_t)INT64_MAX - MM_CLOCK_SKEW_S && (int64_t)not_after + MM_CLOCK_SKEW_S <= w)) {
        fail_conn(g, c, 0, "the peer's static-key binding expired");
        return false;
    }
    if (not_after > (uint64_t)w + MM_BINDING_LIFETIME_MAX / 1000000000u + MM_CLOCK_SKEW_S) {
        fail_conn(g, c, 0, "the peer's static-key binding is valid for longer than %llu s",
                  (unsigned long long)(MM_BINDING_LIFETIME_MAX / 1000000000u));
        return false;
    }
    c->expires_s = not_after + MM_CLOCK_SKEW_S;
    c->expires_cert = false;
    if (memcmp(p, g->id, MM_ID_BYTES) == 0) {
        fail_conn(g, c, 0, "connected to ourselves");
        return false;
    }
    if (c->expect_known && memcmp(p, c->expect_id, MM_ID_BYTES) != 0) {
        fail_conn(g, c, 0, "reached a different identity than the one dialled");
        return false;
    }
    if (g->cfg.certs && !cert_admits(g, c, p, len, w)) return false;
    if (!member_allowed(g, p)) {
        fail_conn(g, c, 0, "identity is not a member of this network (allowlist)");
        return false;
    }
    uint64_t pfx_until = prefix_banned(g, c->addr, now);
    if (pfx_until) { /* a fresh identity from a banned /24 starts banned (SECURITY.md S2) */
        score_entry *se = score_of(g, p, true);
        if (se && se->ban_until < pfx_until) se->ban_until = pfx_until;
        fail_conn(g, c, 0, "address prefix is banned");
        return false;
    }
    if (banned(g, p, now)) {
        fail_conn(g, c, 0, "identity is banned");
        return false;
    }
    memcpy(c->peer_id, p, MM_ID_BYTES);
    c->peer_caps = p[104];
    return true;
}

/* After the last handshake message: derive the record keys, greet. */
static void establish(mm_gossip *g, conn *c, uint64_t now)
{
    uint8_t k1[32], k2[32], h[MM_NOISE_HASHLEN], r1[32], r2[32];
    mm_cipher cipher = (g->aes_ok && (c->peer_caps & 1)) ? MM_CIPHER_AESGCM : MM_CIPHER_CHACHA;
    if (mm_noise_split(c->hs, k1, k2, h) != 0) {
        fail_conn(g, c, 0, "handshake split failed");
        return;
    }
    uint8_t label[14] = "murmur-rec-v1";
    label[13] = (uint8_t)cipher;
    crypto_generichash(r1, 32, label, sizeof label, k1, 32);
    crypto_generichash(r2, 32, label, sizeof label, k2, 32);
    int rc = c->outbound ? mm_record_init(&c->rec, cipher, r1, r2) : mm_record_init(&c->rec, cipher, r2, r1);
    sodium_memzero(k1, sizeof k1);
    sodium_memzero(k2, sizeof k2);
    sodium_memzero(r1, sizeof r1);
    sodium_memzero(r2, sizeof r2);
    mm_noise_wipe(c->hs);
    g_free(g, c->hs);
    c->hs = NULL;
    if (rc != 0) {
        fail_conn(g, c, 0, "record layer init failed");
        return;
    }
    c->state = CONN_OPEN;
    c->authed = true;
    c->established = now;
    g->st.sessions++;
    g->st.handshakes_ok++;
    mm_msg m = {.type = MM_MSG_HELLO};
    m.u.hello.version = MM_PROTO_VERSION;
    memcpy(m.u.hello.fingerprint, g->cfg.fingerprint, MM_FP_BYTES);
    m.u.hello.params = g->cfg.params;
    m.u.hello.encodings = 0xf;
    m.u.hello.self = g->self;
    if (!send_msg(g, c, &m)) {
        fail_conn(g, c, 0, "out of memory");
        return;
    }
    c->hello_sent = true;
    (void)now;
}

static bool replay_seen(mm_gossip *g, const uint8_t *e, uint64_t now, bool insert)
{
    /* Keyed by the first bytes of the ephemeral (random, so a fine hash). */
    uint32_t slot = (uint32_t)(mm_get_le64(e) % REPLAY_SLOTS);
    struct replay_entry *r = NULL;
    for (uint32_t i = 0; i < g->nreplay && !r; i++)
        if (g->replay[i].slot == slot) r = &g->replay[i];
    bool seen = r && memcmp(r->e, e + 8, 8) == 0 && r->at + MM_HS_REPLAY_WINDOW > now && r->at != 0;
    if (insert) {
        if (!r && g->nreplay == g->replay_cap) { /* full: drop what has expired (as good as absent), else grow */
            uint32_t k = 0;
            for (uint32_t i = 0; i < g->nreplay; i++)
                if (g->replay[i].at + MM_HS_REPLAY_WINDOW > now) g->replay[k++] = g->replay[i];
            g->nreplay = k;
            if (k == g->replay_cap) {
                uint32_t cap = g->replay_cap ? 2 * g->replay_cap : 4;
                struct replay_entry *p = g_alloc(g, cap * sizeof *p);
                if (p) {
                    if (k) memcpy(p, g->replay, k * sizeof *p);
                    g_free(g, g->replay);
                    g->replay = p;
                    g->replay_cap = cap;
                }
            }
        }
        if (!r && g->nreplay < g->replay_cap) r = &g->replay[g->nreplay++];
        if (r) { /* (out of memory: not remembered) */
            memcpy(r->e, e + 8, 8);
            r->at = now ? now : 1;
            r->slot = slot;
        }
    }
    return seen;
}

static bool hs_send(mm_gossip *g, conn *c, const uint8_t *payload, size_t plen)
{
    uint8_t msg[MM_HS_MAX_MSG];
    size_t n;
    if (mm_noise_write(c->hs, payload, plen, msg, sizeof msg, &n) != 0 || !out_reserve(g, c, n + 2)) return false;
    c->out[c->out_len] = (uint8_t)(n >> 8);
    c->out[c->out_len + 1] = (uint8_t)n;
    memcpy(c->out + c->out_len + 2, msg, n);
    c->out_len += n + 2;
    g->st.bytes_out += n + 2;
    return true;
}

static void set_ephemeral(mm_gossip *g, conn *c)
{
    uint8_t e[32];
    g->env.random(g->env.random_ctx, e, sizeof e);
    mm_noise_set_ephemeral(c->hs, e);
    sodium_memzero(e, sizeof e);
}

/* Key k of the ring: 0 is the primary (cfg.network_key), then cfg.network_keys_more. */
static const uint8_t *ring_key(const mm_gossip *g, uint32_t k)
{
    return k == 0 ? g->cfg.network_key : g->cfg.network_keys_more[k - 1];
}

/* Start c's handshake state with psk (no scalar multiplication: our static
 * public key was computed once, in mm_gossip_new). */
static bool hs_begin(mm_gossip *g, conn *c, bool initiator, const uint8_t *psk)
{
    if (!c->hs && !(c->hs = g_alloc(g, sizeof *c->hs))) return false;
    uint8_t prologue[8 + 32];
    memcpy(prologue, "murmur/1", 8);
    memcpy(prologue + 8, g->network_id, 32);
    if (mm_noise_init_static(c->hs, MM_NOISE_XXPSK0, MM_NOISE_CHACHAPOLY, initiator, prologue, sizeof prologue,
                             g->static_sk, g->static_pk, psk, NULL) != 0)
        return false;
    if (initiator) set_ephemeral(g, c); /* a responder draws its own only once msg1 proved the key */
    return true;
}

/* One complete handshake message from the peer. */
static void hs_message(mm_gossip *g, conn *c, const uint8_t *msg, size_t len, uint64_t now)
{
    uint8_t payload[MM_HS_MAX_MSG], mine[HS_PAYLOAD_CERT_LEN];
    size_t plen;
    if (!c->outbound && !c->hs) { /* msg1 */
        if (len != MM_HS_MSG1_LEN) {
            fail_conn(g, c, 0, "first handshake message of %zu bytes (want %d)", len, MM_HS_MSG1_LEN);
            return;
        }
        if (replay_seen(g, msg, now, false)) {
            fail_conn(g, c, 0, "replayed handshake message");
            return;
        }
        /* The key ring, primary first (SECURITY.md §2.2): each try is
         * symmetric crypto only (hashes, HMACs, one AEAD tag). */
        bool ok = false;
        for (uint32_t k = 0; k <= g->cfg.nkeys_more && !ok; k++) {
            if (!hs_begin(g, c, false, ring_key(g, k))) {
                fail_conn(g, c, 0, "out of memory");
                return;
            }
            ok = mm_noise_read(c->hs, msg, len, payload, sizeof payload, &plen) == 0;
        }
        if (!ok) {
            fail_conn(g, c, 0, "handshake refused: the peer does not hold our network key");
            return;
        }
        replay_seen(g, msg, now, true);
        set_ephemeral(g, c);
        size_t ml = make_payload(g, mine, now);
        if (!hs_send(g, c, mine, ml)) fail_conn(g, c, 0, "handshake write failed");
        return;
    }
    if (!c->hs || mm_noise_read(c->hs, msg, len, payload, sizeof payload, &plen) != 0) {
        fail_conn(g, c, 0, "handshake message failed authentication");
        return;
    }
    if (!check_payload(g, c, payload, plen, now)) return;
    if (c->outbound) { /* msg2 read: answer with msg3 */
        size_t ml = make_payload(g, mine, now);
        if (!hs_send(g, c, mine, ml)) {
            fail_conn(g, c, 0, "handshake write failed");
            return;
        }
    }
    if (mm_noise_done(c->hs)) establish(g, c, now);
}

/* ---------------------------------------------------------- control messages */

/* Our revocation list to c, once per version and connection. */
static void send_revs(mm_gossip *g, conn *c)
{
    if (!g->revs || c->revs_sent >= g->revs->version) return;
    mm_msg m = {.type = MM_MSG_REVOKE};
    m.u.revoke = *g->revs;
    if (send_msg(g, c, &m)) c->revs_sent = g->revs->version;
}

/* A newer owner-signed list (checked by the caller): keep it, close the
 * sessions of the members it revokes, forget them, pass it on to the other
 * sessions (all but from's, which has it). Highest version wins, so the
 * flood ends. */
static void install_revs(mm_gossip *g, const mm_revlist *l, conn *from, uint64_t now)
{
    if (!g->revs && !(g->revs = g_alloc(g, sizeof *g->revs))) return; /* out of memory: not kept */
    *g->revs = *l;
    logf_(g, MM_LOG_INFO, NULL, "revocation list version %llu installed (%u entries)", (unsigned long long)l->version,
          l->n);
    if (from) from->revs_sent = l->version;
    for (uint32_t i = 0; i < g->nconns; i++) {
        conn *c = g->conns[i];
        if (!c || c->state == CONN_FREE || c->closing || !c->authed) continue;
        if (mm_revlist_revokes(l, c->has_serial ? &c->serial : NULL, c->peer_id)) {
            char h[17];
            hex8(c->peer_id, h);
            logf_(g, MM_LOG_REFUSED, c->peer_id, "peer %s revoked by the network owner: session closed", h);
            peer *p = find_peer(g, c->peer_id);
            if (p) p->used = false;
            if (c->state == CONN_OPEN) send_frame(g, c, MM_FRAME_CLOSE, 0, 0, NULL, 0);
            c->graceful = true;
            close_conn(g, c, false, now);
        } else if (c->state == CONN_OPEN && c->hello_ok) {
            send_revs(g, c);
        }
    }
    for (int i = 0; i < MM_VIEW_SIZE; i++)
        if (g->peers[i].used && mm_revlist_revokes(l, NULL, g->peers[i].rec.id)) forget(g, &g->peers[i], "revoked");
}

static void on_hello(mm_gossip *g, conn *c, const mm_msg *m, uint64_t now)
{
    char h[17];
    hex8(c->peer_id, h);
    if (m->u.hello.version != MM_PROTO_VERSION) {
        send_refusal(g, c, MM_MSG_ERROR, 0, MM_REFUSE_VERSION, "protocol version differs");
        fail_conn(g, c, 0, "peer %s speaks protocol version %u, we speak %u", h, m->u.hello.version,
                  MM_PROTO_VERSION);
        return;
    }
    if (memcmp(m->u.hello.fingerprint, g->cfg.fingerprint, MM_FP_BYTES) != 0 || m->u.hello.params != g->cfg.params) {
        char ours[33], theirs[33], text[128];
        sodium_bin2hex(ours, sizeof ours, g->cfg.fingerprint, MM_FP_BYTES);
        sodium_bin2hex(theirs, sizeof theirs, m->u.hello.fingerprint, MM_FP_BYTES);
        snprintf(text, sizeof text, "model fingerprint %.16s differs from ours (%.16s)", ours, theirs);
        send_refusal(g, c, MM_MSG_ERROR, 0, MM_REFUSE_FINGERPRINT, text);
        fail_conn(g, c, 0,
                  "peer %s trains a different model: its fingerprint is %.16s (%llu parameters), ours %.16s "
                  "(%llu); nodes of one network must train the same model",
                  h, theirs, (unsigned long long)m->u.hello.params, ours, (unsigned long long)g->cfg.params);
        return;
    }
    const mm_addr_rec *r = &m->u.hello.self;
    if (memcmp(r->id, c->peer_id, MM_ID_BYTES) != 0 || !rec_valid(g, r, false)) {
        fail_conn(g, c, MM_PENALTY_PROTOCOL, "peer %s sent an address record that is not its own", h);
        return;
    }
    /* One session per identity: with a simultaneous open, keep the
     * connection dialled by the lower identity. */
    conn *other = session_of(g, c->peer_id);
    if (other && other != c) {
        bool c_from_lower = c->outbound == (memcmp(g->id, c->peer_id, MM_ID_BYTES) < 0);
        conn *loser = c_from_lower ? other : c;
        if (!loser->xid) {
            send_frame(g, loser, MM_FRAME_CLOSE, 0, 0, NULL, 0);
            loser->graceful = true;
            close_conn(g, loser, false, now);
            if (loser == c) return;
        }
    }
    c->hello_ok = true;
    peer *p = learn(g, r, true, now);
    if (p) p->conn = c->id;
    if (p && c->outbound && !p->anchor && !g->cfg.no_view_anchors) { /* we chose it and reached it */
        uint32_t anchors = 0;
        for (int i = 0; i < MM_VIEW_SIZE; i++) anchors += g->peers[i].used && g->peers[i].anchor;
        if (anchors < MM_VIEW_ANCHORS) p->anchor = true;
    }
    logf_(g, MM_LOG_PEER_UP, c->peer_id, "session with %s (%s) up", h, r->addr[0] ? r->addr : c->addr);
    send_revs(g, c); /* certs mode: a member that missed a revocation learns it here */
    if (c->outbound) send_shuffle(g, c, MM_MSG_SHUFFLE); /* a newcomer learns the network at once */
    if (c->pending_sync || g->sync_wanted) {
        c->pending_sync = false;
        start_sync(g, now);
    }
    if (c->pending_avg) {
        c->pending_avg = false;
        if (!g->sync_active && !g->sync_wanted) start_exchange(g, c, EXCH_AVERAGE, now);
    }
}

static void send_shuffle(mm_gossip *g, conn *c, mm_msg_type type)
{
    mm_msg m = {.type = type};
    m.u.shuffle.recs[m.u.shuffle.n++] = g->self;
    uint32_t start = rand_below(g, MM_VIEW_SIZE);
    for (uint32_t i = 0; i < MM_VIEW_SIZE && m.u.shuffle.n < MM_SHUFFLE_LEN; i++) {
        peer *p = &g->peers[(start + i) % MM_VIEW_SIZE];
        if (p->used && p->state == PEER_ALIVE && memcmp(p->rec.id, c->peer_id, MM_ID_BYTES) != 0)
            m.u.shuffle.recs[m.u.shuffle.n++] = p->rec;
    }
    send_msg(g, c, &m);
}

static void on_shuffle(mm_gossip *g, conn *c, const mm_msg *m, uint64_t now)
{
    /* At most MM_SHUFFLE_LEN records of a shuffle count, and at most
     * MM_SHUFFLE_LEN new view entries per sender per MM_SHUFFLE_PERIOD: a
     * member that shuffles 100 times a second fills our view no faster than
     * an honest one (SECURITY.md E4). Counted per connection: a new one
     * costs the sender a handshake. */
    uint32_t n = m->u.shuffle.n < MM_SHUFFLE_LEN ? m->u.shuffle.n : MM_SHUFFLE_LEN;
    if (now >= c->learn_since + MM_SHUFFLE_PERIOD) {
        c->learn_since = now;
        c->learned = 0;
    }
    for (uint32_t i = 0; i < n; i++) {
        const mm_addr_rec *r = &m->u.shuffle.recs[i];
        bool known = find_peer(g, r->id) != NULL;
        if (!known && c->learned >= MM_SHUFFLE_LEN) continue; /* over the quota: not even verified */
        if (!rec_held(g, r) && !rec_valid(g, r, false)) {
            penalize(g, c->peer_id, MM_PENALTY_RATE, now);
            continue;
        }
        if (learn(g, r, false, now) && !known) c->learned++;
    }
    if (m->type == MM_MSG_SHUFFLE) send_shuffle(g, c, MM_MSG_SHUFFLE_REPLY);
}

static void on_exch_req(mm_gossip *g, conn *c, const mm_msg *m, uint64_t now)
{
    uint32_t xid = m->u.exch.xid;
    /* Both sides asked at once on this session: the request of the lower
     * identity wins; the other side drops its own (it would average the
     * same two vectors). */
    exch *mine = c->xid ? find_exch_local(g, c->xid) : NULL;
    if (mine && mine->initiator && mine->kind == EXCH_AVERAGE && m->u.exch.kind == EXCH_AVERAGE && !mine->acked &&
        memcmp(c->peer_id, g->id, MM_ID_BYTES) < 0)
        free_exch(g, mine);
    uint32_t busy_exchs = 0;
    for (int i = 0; i < MM_MAX_EXCHANGES; i++) busy_exchs += g->exchs[i].used;
    if (g->leaving || c->xid || busy_exchs >= MM_MAX_EXCHANGES ||
        (m->u.exch.kind == EXCH_AVERAGE && (g->sync_active || g->sync_wanted))) {
        send_refusal(g, c, MM_MSG_BUSY, xid, g->leaving ? MM_REFUSE_LEAVING : MM_REFUSE_BUSY, "busy");
        return;
    }
    if (m->u.exch.samples > (1ull << 53)) {
        penalize(g, c->peer_id, MM_PENALTY_INVALID, now);
        send_refusal(g, c, MM_MSG_BUSY, xid, MM_REFUSE_INVALID, "absurd sample count");
        return;
    }
    exch *x = new_exch(g, c, m->u.exch.kind, false, xid, now);
    if (!x) {
        send_refusal(g, c, MM_MSG_BUSY, xid, MM_REFUSE_BUSY, "out of memory");
        return;
    }
    x->enc = m->u.exch.encoding;
    x->peer_samples = m->u.exch.samples;
    want_snapshot(g, x);
}

static void on_exch_ack(mm_gossip *g, conn *c, const mm_msg *m, uint64_t now)
{
    exch *x = find_exch_wire(g, c->id, m->u.exch.xid);
    if (!x || x->conn != c->id || !x->initiator || x->acked) {
        fail_conn(g, c, MM_PENALTY_PROTOCOL, "unexpected EXCH_ACK");
        return;
    }
    if (m->u.exch.encoding != x->enc || m->u.exch.samples > (1ull << 53)) {
        penalize(g, c->peer_id, MM_PENALTY_INVALID, now);
        abort_exchange(g, x, true, "peer acknowledged with a bad encoding or sample count", now);
        return;
    }
    x->acked = true;
    x->peer_samples = m->u.exch.samples;
    pump(g, x, c);
    try_finish(g, x, now);
}

static void handle_ctrl(mm_gossip *g, conn *c, const uint8_t *pt, size_t len, uint64_t now)
{
    /* Rate limit: a token bucket per connection. */
    c->tokens += (double)(now - c->tokens_at) * MM_CTRL_RATE / 1e9;
    if (c->tokens > MM_CTRL_BURST) c->tokens = MM_CTRL_BURST;
    c->tokens_at = now;
    if (c->tokens < 1.0) {
        penalize(g, c->peer_id, MM_PENALTY_RATE, now);
        return;
    }
    c->tokens -= 1.0;
    mm_msg m;
    mm_error err = {0};
    if (mm_mp_validate(pt, len) != 0 || mm_msg_decode(&m, pt, len, &err) != 0) {
        fail_conn(g, c, MM_PENALTY_PROTOCOL, "malformed control message: %s", err.msg[0] ? err.msg : "bad msgpack");
        return;
    }
    if (!c->hello_ok && m.type != MM_MSG_HELLO && m.type != MM_MSG_ERROR) {
        fail_conn(g, c, MM_PENALTY_PROTOCOL, "message before HELLO");
        return;
    }
    if (m.type != MM_MSG_PING && m.type != MM_MSG_PONG) c->last_useful = now;
    switch (m.type) {
    case MM_MSG_HELLO:
        if (c->hello_ok) {
            fail_conn(g, c, MM_PENALTY_PROTOCOL, "second HELLO");
            return;
        }
        on_hello(g, c, &m, now);
        break;
    case MM_MSG_EXCH_REQ:
        on_exch_req(g, c, &m, now);
        break;
    case MM_MSG_EXCH_ACK:
        on_exch_ack(g, c, &m, now);
        break;
    case MM_MSG_BUSY: {
        exch *x = find_exch_wire(g, c->id, m.u.refuse.xid);
        if (m.u.refuse.code == MM_REFUSE_INVALID && x && x->kind == EXCH_AVERAGE && !x->merging) {
            abort_exchange(g, x, false, "our vector was refused: too far from the peer's", now);
            if (++g->refused_in_a_row >= MM_REFUSED_RESYNC && !g->sync_active && !g->sync_wanted) {
                logf_(g, MM_LOG_INFO, NULL, "refused by %u peers in a row: fetching the network's parameters",
                      g->refused_in_a_row);
                g->refused_in_a_row = 0;
                g->sync_wanted = true;
                g->sync_wanted_since = now;
                g->sync_gathered = false;
            }
        } else if (x && x->conn == c->id && x->initiator) {
            abort_exchange(g, x, false, "peer busy", now);
        }
        break;
    }
    case MM_MSG_ERROR: {
        char h[17];
        hex8(c->peer_id, h);
        logf_(g, MM_LOG_REFUSED, c->peer_id, "peer %s refused us: %s", h, m.u.refuse.text);
        c->graceful = true;
        close_conn(g, c, false, now);
        break;
    }
    case MM_MSG_SHUFFLE:
    case MM_MSG_SHUFFLE_REPLY:
        on_shuffle(g, c, &m, now);
        break;
    case MM_MSG_PING: {
        mm_msg r = {.type = MM_MSG_PONG};
        r.u.ping.nonce = m.u.ping.nonce;
        send_msg(g, c, &r);
        break;
    }
    case MM_MSG_PONG:
        break;
    case MM_MSG_DONE: {
        exch *x = find_exch_wire(g, c->id, m.u.done.xid);
        if (!x || x->conn != c->id || x->kind != EXCH_AVERAGE || x->peer_done || !x->sent_end) {
            fail_conn(g, c, MM_PENALTY_PROTOCOL, "unexpected DONE");
            return;
        }
        x->peer_done = true;
        try_finish(g, x, now);
        break;
    }
    case MM_MSG_LEAVE: {
        const mm_addr_rec *r = &m.u.leave.rec;
        if (memcmp(r->id, c->peer_id, MM_ID_BYTES) != 0 || !rec_valid(g, r, true)) {
            fail_conn(g, c, MM_PENALTY_PROTOCOL, "forged LEAVE");
            return;
        }
        if (!g->tombs) g->tombs = g_alloc(g, MAX_TOMBS * sizeof *g->tombs);
        if (g->tombs) {
            tomb *t = &g->tombs[g->ntombs++ % MAX_TOMBS];
            memcpy(t->id, r->id, MM_ID_BYTES);
            t->seq = r->seq;
        }
        peer *p = find_peer(g, r->id);
        if (p) forget(g, p, "left the network");
        c->graceful = true;
        break;
    }
    case MM_MSG_REVOKE: {
        if (!g->cfg.certs) break; /* no owner key to check it against: ignored */
        uint64_t have = g->revs ? g->revs->version : 0;
        if (m.u.revoke.version <= have) { /* ours or older: ignored (SECURITY.md Y3); a peer behind gets ours */
            if (m.u.revoke.version < have) send_revs(g, c);
            break;
        }
        if (!revlist_ok(g, &m.u.revoke)) {
            fail_conn(g, c, MM_PENALTY_PROTOCOL, "revocation list not signed by the network owner");
            return;
        }
        install_revs(g, &m.u.revoke, c, now);
        break;
    }
    default:
        fail_conn(g, c, MM_PENALTY_PROTOCOL, "unexpected message type %d", (int)m.type);
    }
}

/* --------------------------------------------------------------- frames in */

static void on_data(mm_gossip *g, conn *c, const mm_frame_hdr *h, const uint8_t *hdr, const uint8_t *ct, uint64_t now)
{
    exch *x = find_exch_wire(g, c->id, h->xid);
    if (!x || x->conn != c->id || !x->expect_recv || x->recv_end || x->merging) {
        /* An aborted exchange's frames may still be in flight: decrypt (to
         * keep the nonce sequence) and drop. */
        uint8_t *s = scratch(g, h->len - MM_FRAME_TAG);
        if (!s)
            fail_conn(g, c, 0, "out of memory");
        else if (mm_record_open(&c->rec, h, hdr, ct, s) != 0)
            fail_conn(g, c, 0, "frame failed authentication");
        return;
    }
    size_t bytes = h->len - MM_FRAME_TAG, n = mm_enc_values(x->enc, bytes);
    bool ok_shape = n > 0 && n <= MM_CHUNK_VALUES && h->offset == x->recv_vals && x->recv_vals + n <= g->cfg.params &&
                    mm_enc_bytes(x->enc, n) == bytes;
    uint8_t *dst = NULL;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (ok_shape && x->enc == MM_ENC_F32) dst = (uint8_t *)(x->recv + x->recv_vals); /* decrypt in place */
#endif
    if (!dst && !(dst = scratch(g, bytes))) {
        fail_conn(g, c, 0, "out of memory");
        return;
    }
    if (mm_record_open(&c->rec, h, hdr, ct, dst) != 0) {
        fail_conn(g, c, 0, "frame failed authentication");
        return;
    }
    if (!ok_shape) {
        penalize(g, c->peer_id, MM_PENALTY_PROTOCOL, now);
        abort_exchange(g, x, true, "data chunk out of sequence or of a bad size", now);
        return;
    }
    int rc = dst == g->scratch ? mm_enc_decode(x->enc, dst, bytes, x->recv + x->recv_vals)
                               : mm_enc_check_finite(x->recv + x->recv_vals, n);
    if (rc != 0) {
        penalize(g, c->peer_id, MM_PENALTY_INVALID, now);
        abort_exchange(g, x, true, "vector refused: non-finite value", now);
        return;
    }
    /* Clipping's sums while the chunk is in cache (else clip_vector takes them at the end). */
    if (g->cfg.clip && g->clips && x->kind == EXCH_AVERAGE && x->snap && x->dist_vals == x->recv_vals)
        clip_sum(g, x, x->recv_vals, n);
    x->recv_vals += n;
    x->recv_chunks++;
    x->recv_bytes += bytes;
    x->window_bytes += bytes;
}

static void on_end(mm_gossip *g, conn *c, const uint8_t *pt, size_t len, uint64_t now)
{
    mm_msg m;
    mm_error err = {0};
    if (mm_mp_validate(pt, len) != 0 || mm_msg_decode(&m, pt, len, &err) != 0 || m.type != MM_MSG_END) {
        fail_conn(g, c, MM_PENALTY_PROTOCOL, "malformed END: %s", err.msg);
        return;
    }
    exch *x = find_exch_wire(g, c->id, m.u.end.xid);
    if (!x || x->conn != c->id || !x->expect_recv || x->recv_end) return; /* stale */
    if (m.u.end.total_bytes != x->recv_bytes || m.u.end.chunks != x->recv_chunks || m.u.end.encoding != x->enc ||
        x->recv_vals != g->cfg.params) {
        penalize(g, c->peer_id, MM_PENALTY_PROTOCOL, now);
        abort_exchange(g, x, true, "END does not match what was received", now);
        return;
    }
    x->recv_end = true;
    try_finish(g, x, now);
}

static void handle_frame(mm_gossip *g, conn *c, const mm_frame_hdr *h, const uint8_t *hdr, const uint8_t *ct,
                         uint64_t now)
{
    if (h->type == MM_FRAME_DATA) {
        c->last_useful = now;
        on_data(g, c, h, hdr, ct, now);
        return;
    }
    size_t len = h->len - MM_FRAME_TAG;
    uint8_t *pt = scratch(g, len);
    if (!pt) {
        fail_conn(g, c, 0, "out of memory");
        return;
    }
    if (mm_record_open(&c->rec, h, hdr, ct, pt) != 0) {
        fail_conn(g, c, 0, "frame failed authentication");
        return;
    }
    switch (h->type) {
    case MM_FRAME_CTRL:
        handle_ctrl(g, c, pt, len, now);
        break;
    case MM_FRAME_END:
        on_end(g, c, pt, len, now);
        break;
    case MM_FRAME_ABORT: {
        exch *x = find_exch_wire(g, c->id, h->xid);
        if (x && x->conn == c->id && !x->merging && !x->sync_done) abort_exchange(g, x, false, "peer aborted", now);
        break;
    }
    case MM_FRAME_CLOSE:
        c->graceful = true;
        close_conn(g, c, false, now);
        break;
    default:
        fail_conn(g, c, MM_PENALTY_PROTOCOL, "unknown frame type %u", h->type);
    }
}

/* Consume complete messages from c->rx. */
/* Handle the complete messages at the start of p[0..avail); returns the
 * bytes consumed (a partial message at the end is left). */
static size_t consume(mm_gossip *g, conn *c, const uint8_t *p, size_t avail, uint64_t now)
{
    size_t pos = 0;
    while (c->state != CONN_FREE && !c->closing) {
        const uint8_t *q = p + pos;
        size_t left = avail - pos;
        if (c->state == CONN_HANDSHAKE) {
            if (left < 2) break;
            size_t n = (size_t)q[0] << 8 | q[1];
            if (n > MM_HS_MAX_MSG || n == 0) {
                fail_conn(g, c, 0, "handshake message of %zu bytes", n);
                break;
            }
            if (left < 2 + n) break;
            pos += 2 + n;
            hs_message(g, c, q + 2, n, now);
        } else if (c->state == CONN_OPEN) {
            if (left < MM_FRAME_HEADER) break;
            mm_frame_hdr h;
            if (mm_frame_parse_header(q, &h) != 0) {
                fail_conn(g, c, 0, "malformed frame header");
                break;
            }
            if (left < MM_FRAME_HEADER + h.len) break;
            pos += MM_FRAME_HEADER + h.len;
            handle_frame(g, c, &h, q, q + MM_FRAME_HEADER, now);
        } else {
            break;
        }
    }
    return pos;
}

static void process_rx(mm_gossip *g, conn *c, uint64_t now)
{
    size_t pos = consume(g, c, c->rx, c->rx_len, now);
    if (c->state == CONN_FREE) return;
    if (pos) {
        memmove(c->rx, c->rx + pos, c->rx_len - pos);
        c->rx_len -= pos;
    }
}

/* ----------------------------------------------------------------- timers */

static void recompute_deadline(mm_gossip *g)
{
    uint64_t d = UINT64_MAX;
#define AT(t)                  \
    do {                       \
        uint64_t t_ = (t);     \
        if (t_ < d) d = t_;    \
    } while (0)
    if (!g->leaving) { /* a leaving node starts nothing new (do_timers) */
        if (g->cfg.exchange_period) AT(g->next_exchange);
        AT(g->next_shuffle);
    }
    for (uint32_t i = 0; i < g->nconns; i++) {
        const conn *c = g->conns[i];
        if (!c || c->state == CONN_FREE || c->closing) continue;
        if (c->state != CONN_OPEN || !c->hello_ok)
            AT(c->opened + MM_HS_DEADLINE);
        else { /* the same conditions as do_timers */
            if (c->expires_s) AT(mono_at(g, c->expires_s));
            AT((c->last_rx > c->last_tx ? c->last_rx : c->last_tx) + MM_KEEPALIVE);
            if (!c->xid) AT(c->last_useful + MM_IDLE_CLOSE);
            if (!c->xid) AT(c->established + MM_SESSION_LIFETIME);
            AT(c->last_rx + MM_DEAD_AFTER);
        }
    }
    for (int i = 0; i < MM_MAX_EXCHANGES; i++)
        if (g->exchs[i].used && !g->exchs[i].merging && !g->exchs[i].sync_done) { /* as in do_timers */
            AT(g->exchs[i].deadline);
            AT(g->exchs[i].window_start + MM_EXCH_PROGRESS_WINDOW);
        }
    for (int i = 0; i < MM_VIEW_SIZE; i++)
        if (g->peers[i].used && g->peers[i].state == PEER_SUSPECT) AT(g->peers[i].next_probe);
    if (g->sync_active && !g->sync_expired) AT(g->sync_started + MM_SYNC_TIMEOUT);
    if (g->sync_active && g->sync_retry_at) AT(g->sync_retry_at);
    if (g->sync_wanted && !g->sync_gathered) AT(g->sync_wanted_since + MM_SYNC_GATHER);
#undef AT
    g->deadline = d;
}

static peer *random_live_peer(mm_gossip *g, uint64_t now, bool need_idle)
{
    int cand[MM_VIEW_SIZE], n = 0;
    for (int i = 0; i < MM_VIEW_SIZE; i++) {
        peer *p = &g->peers[i];
        if (!p->used || p->state != PEER_ALIVE || banned(g, p->rec.id, now)) continue;
        if (need_idle) {
            conn *c = session_of(g, p->rec.id);
            if (c && c->xid) continue;
        }
        cand[n++] = i;
    }
    return n ? &g->peers[cand[rand_below(g, (uint32_t)n)]] : NULL;
}

static void do_timers(mm_gossip *g, uint64_t now)
{
    /* Exchanges first: one that ends here frees its connection for the
     * idle check below, in the same tick (else that deadline stays past). */
    for (int i = 0; i < MM_MAX_EXCHANGES; i++) {
        exch *x = &g->exchs[i];
        if (!x->used || x->merging || x->sync_done) continue;
        if (now >= x->deadline) {
            abort_exchange(g, x, true, "deadline passed", now);
        } else if (now >= x->window_start + MM_EXCH_PROGRESS_WINDOW) {
            bool waiting = x->expect_recv && !x->recv_end && x->acked;
            if (waiting && x->window_bytes < MM_EXCH_PROGRESS_MIN) {
                abort_exchange(g, x, true, "peer sends too slowly", now);
                continue;
            }
            x->window_start = now;
            x->window_bytes = 0;
        }
    }
    for (uint32_t i = 0; i < g->nconns; i++) {
        conn *c = g->conns[i];
        if (!c || c->state == CONN_FREE || c->closing) continue;
        if (c->state != CONN_OPEN || !c->hello_ok) { /* handshake and HELLO, both within the deadline */
            if (now >= c->opened + MM_HS_DEADLINE) fail_conn(g, c, 0, "handshake timed out");
            continue;
        }
        uint64_t last = c->last_rx > c->last_tx ? c->last_rx : c->last_tx;
        if (c->expires_s && now >= mono_at(g, c->expires_s)) { /* SECURITY.md §2.3: no session outlives them */
            char h[17];
            hex8(c->peer_id, h);
            logf_(g, MM_LOG_INFO, c->peer_id, "session with %s closed: its %s expired", h,
                  c->expires_cert ? "certificate" : "static-key binding");
            send_frame(g, c, MM_FRAME_CLOSE, 0, 0, NULL, 0);
            c->graceful = true;
            close_conn(g, c, false, now);
        } else if (now >= c->last_rx + MM_DEAD_AFTER) { /* not even our pings are answered */
            logf_(g, MM_LOG_INFO, c->peer_id, "%s stopped answering", c->addr);
            close_conn(g, c, true, now);
        } else if (session_old(c, now) && !c->xid) {
            retire_session(g, c, now);
        } else if (now >= c->last_useful + MM_IDLE_CLOSE && !c->xid) {
            send_frame(g, c, MM_FRAME_CLOSE, 0, 0, NULL, 0);
            c->graceful = true;
            close_conn(g, c, false, now);
        } else if (now >= last + MM_KEEPALIVE && c->hello_ok) {
            mm_msg m = {.type = MM_MSG_PING};
            m.u.ping.nonce = rand_u64(g);
            send_msg(g, c, &m);
            c->last_tx = now;
        }
    }
    for (int i = 0; i < MM_VIEW_SIZE; i++) {
        peer *p = &g->peers[i];
        if (!p->used || p->state != PEER_SUSPECT) continue;
        if (now >= p->suspect_since + MM_SUSPECT_TIMEOUT) {
            forget(g, p, "unreachable: declared dead");
        } else if (now >= p->next_probe) {
            p->next_probe = now + MM_PROBE_PERIOD;
            reach(g, p, now);
        }
    }
    if (g->sync_active && g->sync_retry_at && now >= g->sync_retry_at) sync_retry(g, now);
    if (g->sync_active && now >= g->sync_started + MM_SYNC_TIMEOUT) finish_sync(g, now);
    if (g->leaving) return;
    if (now >= g->next_shuffle) {
        g->next_shuffle = now + MM_SHUFFLE_PERIOD;
        peer *p = random_live_peer(g, now, false);
        if (p) {
            conn *c = session_of(g, p->rec.id);
            if (c)
                send_shuffle(g, c, MM_MSG_SHUFFLE);
            else
                reach(g, p, now);
        }
    }
    if (g->cfg.exchange_period && now >= g->next_exchange) {
        g->next_exchange = now + g->cfg.exchange_period;
        average_now(g, now);
    }
}

/* Every entry point starts here: buffers lent by SEND actions come back. */
static void begin(mm_gossip *g)
{
    for (uint32_t i = 0; i < g->nconns; i++) {
        conn *c = g->conns[i];
        if (!c) continue;
        if (c->state == CONN_FREE) { /* released during an earlier call: no pointer to it is left */
            g_free(g, c);
            g->conns[i] = NULL;
            continue;
        }
        if (c->out_lent) {
            c->out_len = 0;
            c->out_lent = false;
            conn_trim(g, c);
        }
    }
    while (g->nconns && !g->conns[g->nconns - 1]) g->nconns--;
}

/* ... and ends here: pump streams, free closed connections, next deadline. */
static void end(mm_gossip *g, uint64_t now)
{
    for (int i = 0; i < MM_MAX_EXCHANGES; i++) {
        exch *x = &g->exchs[i];
        if (!x->used) continue;
        conn *c = find_conn(g, x->conn);
        if (c && c->state == CONN_OPEN && !c->closing) {
            pump(g, x, c);
            if (x->used) try_finish(g, x, now);
        }
    }
    for (uint32_t i = 0; i < g->nconns; i++) {
        conn *c = g->conns[i];
        if (c && c->out_len && c->state != CONN_FREE) c->last_tx = now;
    }
    uint32_t n = 0, half = 0;
    for (uint32_t i = 0; i < g->nconns; i++) {
        if (!g->conns[i]) continue;
        n += g->conns[i]->state == CONN_OPEN;
        half += g->conns[i]->state == CONN_HANDSHAKE || g->conns[i]->state == CONN_CONNECTING;
    }
    if (g->sync_active) finish_sync(g, now);
    if (g->sync_wanted) start_sync(g, now);
    g->st.sessions = n;
    g->st.half_open = half;
    g->st.view = view_size(g);
    recompute_deadline(g);
    g_free(g, g->scratch);
    g->scratch = NULL;
    g->scratch_cap = 0;
}

/* ------------------------------------------------------------ public API */

mm_gossip *mm_gossip_new(const mm_gossip_config *cfg, const mm_gossip_env *env, uint64_t now)
{
    if (!cfg || !env || !env->random || !env->alloc || !env->free || cfg->params == 0 ||
        cfg->nkeys_more > MM_NETKEYS_MAX - 1 ||
        cfg->params > (1ull << 40) || cfg->encoding > MM_ENC_Q8 || cfg->binding_lifetime > MM_BINDING_LIFETIME_MAX ||
        sodium_init() < 0)
        return NULL;
    mm_gossip *g = env->alloc(env->alloc_ctx, sizeof *g);
    if (!g) return NULL;
    memset(g, 0, sizeof *g);
    g->cfg = *cfg;
    if (!g->cfg.view_per_prefix) g->cfg.view_per_prefix = MM_VIEW_PER_PREFIX;
    if (!g->cfg.conns_per_prefix) g->cfg.conns_per_prefix = MM_CONNS_PER_PREFIX;
    g->env = *env;
    g->cfg.tensors = NULL;
    g->cfg.revocations = NULL;
    g->clips = g_alloc(g, (cfg->ntensors ? cfg->ntensors : 1) * sizeof *g->clips);
    if (!g->clips) {
        mm_gossip_free(g);
        return NULL;
    }
    memset(g->clips, 0, (cfg->ntensors ? cfg->ntensors : 1) * sizeof *g->clips);
    if (cfg->ntensors) {
        g->tensors = g_alloc(g, cfg->ntensors * sizeof *g->tensors);
        if (!g->tensors) {
            mm_gossip_free(g);
            return NULL;
        }
        memcpy(g->tensors, cfg->tensors, cfg->ntensors * sizeof *g->tensors);
        for (uint32_t i = 0; i < cfg->ntensors; i++)
            if (g->tensors[i].offset + g->tensors[i].count > cfg->params) {
                mm_gossip_free(g);
                return NULL;
            }
    }
    crypto_sign_ed25519_sk_to_pk(g->id, cfg->identity_sk);
    if (cfg->certs) { /* our certificate must be the owner's, for us, in this network (its window is the peers' to check) */
        mm_cert_network_id(cfg->owner_pk, g->network_id);
        mm_cert ct;
        if (mm_cert_decode(&ct, cfg->cert) != MM_CERT_OK || memcmp(ct.network_id, g->network_id, 32) != 0 ||
            memcmp(ct.member_pk, g->id, MM_ID_BYTES) != 0 || !mm_cert_sig_ok(&ct, cfg->owner_pk) ||
            (cfg->revocations && cfg->revocations->version && !revlist_ok(g, cfg->revocations))) {
            mm_gossip_free(g);
            return NULL;
        }
        if (cfg->revocations && cfg->revocations->version) {
            if (!(g->revs = g_alloc(g, sizeof *g->revs))) {
                mm_gossip_free(g);
                return NULL;
            }
            *g->revs = *cfg->revocations;
        }
    } else if (cfg->network_id_set) { /* pinned: a key rotation keeps the network's id (protocol.md §2.2) */
        memcpy(g->network_id, cfg->network_id, 32);
    } else {
        crypto_generichash(g->network_id, 32, (const uint8_t *)"murmur-net-v1", 13, cfg->network_key, 32);
    }
    env->random(env->random_ctx, g->static_sk, sizeof g->static_sk);
    crypto_scalarmult_curve25519_base(g->static_pk, g->static_sk);
    crypto_generichash(g->source_k, sizeof g->source_k, (const uint8_t *)"murmur-source-v1", 16, g->static_sk,
                       sizeof g->static_sk); /* no draw of its own: seeded runs replay as before */
    make_binding(g, now);
    memcpy(g->self.id, g->id, MM_ID_BYTES);
    snprintf(g->self.addr, sizeof g->self.addr, "%s", cfg->advertise);
    g->self.seq = cfg->incarnation;
    sign_rec(g, &g->self, false);
    g->aes_ok = crypto_aead_aes256gcm_is_available() != 0;
    g->next_exchange = now + cfg->exchange_period;
    g->next_shuffle = now + MM_SHUFFLE_PERIOD;
    recompute_deadline(g);
    return g;
}

void mm_gossip_free(mm_gossip *g)
{
    if (!g) return;
    for (int i = 0; i < MM_MAX_EXCHANGES; i++)
        if (g->exchs[i].used) {
            g_free(g, g->exchs[i].recv);
            g_free(g, g->exchs[i].dist2);
        }
    for (uint32_t i = 0; i < g->nconns; i++)
        if (g->conns[i]) {
            conn_free_buffers(g, g->conns[i]);
            g_free(g, g->conns[i]);
        }
    g_free(g, g->spare);
    g_free(g, g->conns);
    g_free(g, g->scores);
    g_free(g, g->tombs);
    g_free(g, g->replay);
    g_free(g, g->q);
    g_free(g, g->scratch);
    g_free(g, g->tensors);
    g_free(g, g->clips);
    g_free(g, g->revs);
    g_free(g, g->buckets);
    sodium_memzero(g->static_sk, sizeof g->static_sk);
    sodium_memzero(g->cfg.identity_sk, sizeof g->cfg.identity_sk);
    sodium_memzero(g->cfg.network_key, sizeof g->cfg.network_key);
    sodium_memzero(g->cfg.network_keys_more, sizeof g->cfg.network_keys_more);
    g->env.free(g->env.alloc_ctx, g);
}

const uint8_t *mm_gossip_id(const mm_gossip *g) { return g->id; }

const uint8_t *mm_gossip_network_id(const mm_gossip *g) { return g->network_id; }

void mm_gossip_set_wall_offset(mm_gossip *g, int64_t offset_ns, uint64_t now)
{
    begin(g);
    g->cfg.wall_offset_ns = offset_ns;
    end(g, now);
}

int mm_gossip_set_revocations(mm_gossip *g, const mm_revlist *l, uint64_t now)
{
    if (!g->cfg.certs || !l || l->version <= (g->revs ? g->revs->version : 0)) return MM_ERR_STATE;
    if (!revlist_ok(g, l)) return MM_ERR_AUTH;
    begin(g);
    install_revs(g, l, NULL, now);
    int rc = g->revs && g->revs->version == l->version ? MM_OK : MM_ERR_NOMEM;
    end(g, now);
    return rc;
}

int mm_gossip_set_cert(mm_gossip *g, const uint8_t cert[MM_CERT_BYTES], uint64_t now)
{
    (void)now;
    mm_cert ct;
    if (!g->cfg.certs || mm_cert_decode(&ct, cert) != MM_CERT_OK || memcmp(ct.member_pk, g->id, MM_ID_BYTES) != 0 ||
        memcmp(ct.network_id, g->network_id, 32) != 0 || !mm_cert_sig_ok(&ct, g->cfg.owner_pk))
        return MM_ERR_INVALID;
    memcpy(g->cfg.cert, cert, MM_CERT_BYTES);
    return MM_OK;
}

void mm_gossip_set_sig_cache(mm_gossip *g, mm_gossip_sig_cache seen, void *ctx)
{
    g->sig_seen = seen;
    g->sig_ctx = ctx;
}

int mm_gossip_bootstrap(mm_gossip *g, const char *addr, uint64_t now)
{
    begin(g);
    if (!addr || !*addr || strlen(addr) >= MM_ADDR_MAX) return MM_ERR_INVALID;
    int rc = dial(g, addr, NULL, now) ? MM_OK : MM_ERR_LIMIT;
    end(g, now);
    return rc;
}

int mm_gossip_request_sync(mm_gossip *g, uint64_t now)
{
    begin(g);
    if (!g->sync_wanted && !g->sync_active) {
        g->sync_wanted_since = now;
        g->sync_gathered = false;
    }
    g->sync_wanted = true;
    start_sync(g, now);
    end(g, now);
    return MM_OK;
}

/* The key of a source address for the per-address limits: a keyed hash of
 * its IPv4 /32 or IPv6 /64 (addr.h). On loopback it is the whole address,
 * port included: all the nodes of one machine share 127.0.0.1 (as for the
 * prefix caps, §6.7), so there each TCP connection is its own source. Never 0. */
static uint64_t source_key(const mm_gossip *g, const char *from)
{
    uint8_t src[65], h[crypto_shorthash_BYTES];
    size_t n = mm_addr_source_bytes(from ? from : "", src);
    crypto_shorthash(h, src, n, g->source_k);
    uint64_t k = mm_get_le64(h);
    return k ? k : 1;
}

/* The tokens of bucket b at now (refilled at MM_HS_RATE_PER_IP, up to the burst). */
static double bucket_tokens(const struct ip_bucket *b, uint64_t now)
{
    double t = b->tokens + (double)(now > b->at ? now - b->at : 0) * MM_HS_RATE_PER_IP / 1e9;
    return t < MM_HS_BURST_PER_IP ? t : MM_HS_BURST_PER_IP;
}

/* The token bucket of source key, refilled to now; NULL if out of memory.
 * A new address takes a free slot, else that of an address whose bucket is
 * full again (as good as absent), else that of the one least recently seen. */
static struct ip_bucket *source_bucket(mm_gossip *g, uint64_t key, uint64_t now)
{
    struct ip_bucket *b = NULL, *spare = NULL;
    bool spare_full = false;
    for (uint32_t i = 0; i < g->nbuckets; i++)
        if (g->buckets[i].key == key) {
            b = &g->buckets[i];
            break;
        }
    if (!b && g->nbuckets < MM_IP_BUCKETS) { /* a new source: a new slot while the table may grow */
        if (g->nbuckets == g->buckets_cap) {
            uint32_t cap = g->buckets_cap ? 2 * g->buckets_cap : 8;
            if (cap > MM_IP_BUCKETS) cap = MM_IP_BUCKETS;
            struct ip_bucket *nb = g_alloc(g, cap * sizeof *nb);
            if (!nb) return NULL;
            if (g->nbuckets) memcpy(nb, g->buckets, g->nbuckets * sizeof *nb);
            g_free(g, g->buckets);
            g->buckets = nb;
            g->buckets_cap = cap;
        }
        spare = &g->buckets[g->nbuckets++];
        memset(spare, 0, sizeof *spare);
    }
    for (uint32_t i = 0; i < g->nbuckets && !b && (!spare || spare->key); i++) {
        struct ip_bucket *e = &g->buckets[i];
        if (e->key == key) {
            b = e;
        } else if (!e->key) {
            if (!spare || spare->key) spare = e;
        } else if (!spare || spare->key) {
            bool full = bucket_tokens(e, now) >= MM_HS_BURST_PER_IP;
            if (!spare || (full && !spare_full) || (full == spare_full && e->at < spare->at)) {
                spare = e;
                spare_full = full;
            }
        }
    }
    if (b) {
        b->tokens = bucket_tokens(b, now);
    } else {
        b = spare;
        b->key = key;
        b->tokens = MM_HS_BURST_PER_IP;
    }
    if (now > b->at) b->at = now;
    return b;
}

/* Whether an inbound connection from `from` may open (docs/protocol.md §3.3,
 * "Admission caps at accept"): NULL, or why not. Uses no cryptography but the
 * short hash of source_key. */
static const char *admission_refusal(mm_gossip *g, const char *from, uint64_t key, uint64_t now, char *why,
                                     size_t whylen)
{
    uint64_t pfx_until = from ? prefix_banned(g, from, now) : 0;
    if (pfx_until) { /* SECURITY.md S2: whatever identity it would claim */
        snprintf(why, whylen, "address prefix is banned (for %llu s more)",
                 (unsigned long long)((pfx_until - now) / 1000000000ull));
        return why;
    }
    if (g->leaving) return "leaving";
    uint32_t inbound = 0, half = 0, half_here = 0, same_prefix = 0;
    uint64_t pfx = mm_addr_prefix(from);
    conn *idlest = NULL; /* the inbound session without an exchange that was useful least recently */
    for (uint32_t i = 0; i < g->nconns; i++) {
        conn *c = g->conns[i];
        if (!c || c->state == CONN_FREE || c->closing) continue; /* closing: on its way out */
        same_prefix += pfx && c->pfx == pfx; /* both directions count */
        if (c->outbound) continue;
        inbound++;
        if (c->state != CONN_OPEN) {
            half++;
            half_here += c->source == key;
        } else if (c->hello_ok && !c->xid && (!idlest || c->last_useful < idlest->last_useful)) {
            idlest = c;
        }
    }
    if (half_here >= MM_HALF_OPEN_PER_IP) return "connection refused: too many handshakes in progress from this address";
    if (half >= MM_MAX_HALF_OPEN) return "connection refused: too many handshakes in progress";
    if (same_prefix >= g->cfg.conns_per_prefix) {
        char p[48];
        mm_addr_prefix_text(pfx, p, sizeof p);
        snprintf(why, whylen, "connection refused: %u connections from %s already", same_prefix, p);
        return why;
    }
    bool full = inbound >= MM_MAX_CONNS - MM_OUTBOUND_RESERVE;
    if (full && !idlest) return "connection refused: inbound connections full (the rest is kept for our dials)";
    struct ip_bucket *b = source_bucket(g, key, now);
    if (!b) return "connection refused: out of memory";
    if (b->tokens < 1.0) return "connection refused: handshake rate of this address exceeded";
    if (full) { /* make room: the idlest inbound session goes (it is dialled again when needed) */
        char h[17];
        hex8(idlest->peer_id, h);
        logf_(g, MM_LOG_INFO, idlest->peer_id, "inbound connections full: idle session with %s closed for a newcomer", h);
        send_frame(g, idlest, MM_FRAME_CLOSE, 0, 0, NULL, 0);
        idlest->graceful = true;
        close_conn(g, idlest, false, now);
    }
    return NULL;
}

mm_conn_id mm_gossip_accepted(mm_gossip *g, const char *from, uint64_t now)
{
    begin(g);
    conn *c = NULL;
    char buf[96];
    uint64_t key = source_key(g, from);
    const char *why = admission_refusal(g, from, key, now, buf, sizeof buf);
    if (!why && !(c = new_conn(g, false, from, now))) why = "connection refused: no connection slot";
    if (c) {
        c->source = key;
        source_bucket(g, key, now)->tokens -= 1.0; /* found (not evicted) by admission_refusal just now */
    } else if (strcmp(why, "leaving") != 0) {
        g->st.refused++;
        if (now >= g->refuse_log_at || !g->refuse_log_at) { /* refused before any crypto, logged once a second */
            if (g->refused_quiet)
                logf_(g, MM_LOG_REFUSED, NULL, "%s: %s (and %u more connections refused in the last second)",
                      from ? from : "?", why, g->refused_quiet);
            else
                logf_(g, MM_LOG_REFUSED, NULL, "%s: %s", from ? from : "?", why);
            g->refused_quiet = 0;
            g->refuse_log_at = now + MM_SEC(1);
        } else {
            g->refused_quiet++;
        }
    }
    end(g, now);
    return c ? c->id : 0;
}

void mm_gossip_connected(mm_gossip *g, mm_conn_id id, uint64_t now)
{
    begin(g);
    conn *c = find_conn(g, id);
    if (c && c->state == CONN_CONNECTING && !c->closing) {
        c->state = CONN_HANDSHAKE;
        c->opened = now;
        if (!hs_begin(g, c, true, g->cfg.network_key) || !hs_send(g, c, NULL, 0))
            fail_conn(g, c, 0, "handshake start failed");
    }
    end(g, now);
}

void mm_gossip_connect_failed(mm_gossip *g, mm_conn_id id, uint64_t now)
{
    begin(g);
    conn *c = find_conn(g, id);
    if (c) {
        if (c->expect_known) mark_suspect(g, c->expect_id, now);
        logf_(g, MM_LOG_INFO, c->expect_known ? c->expect_id : NULL, "cannot connect to %s", c->addr);
        release_conn(g, c);
    }
    end(g, now);
}

/* The buffer the message at the start of c->rx needs: its length prefix or
 * frame header first, then the whole message. */
static size_t rx_want(const conn *c)
{
    if (c->state == CONN_OPEN) {
        mm_frame_hdr h;
        if (c->rx_len >= MM_FRAME_HEADER && mm_frame_parse_header(c->rx, &h) == 0) return MM_FRAME_HEADER + h.len;
        return MM_FRAME_HEADER;
    }
    if (c->rx_len >= 2) {
        size_t n = (size_t)c->rx[0] << 8 | c->rx[1];
        if (n && n <= MM_HS_MAX_MSG) return 2 + n;
    }
    return 2;
}

void mm_gossip_received(mm_gossip *g, mm_conn_id id, const uint8_t *buf, size_t len, uint64_t now)
{
    begin(g);
    conn *c = find_conn(g, id);
    if (!c || c->closing || c->state == CONN_CONNECTING) {
        end(g, now);
        return;
    }
    c->last_rx = now;
    g->st.bytes_in += len;
    if (c->rx_len == 0) { /* nothing buffered: whole messages are handled straight from buf */
        size_t used = consume(g, c, buf, len, now);
        buf += used;
        len -= used;
    }
    while (len && !c->closing && c->state != CONN_FREE) {
        /* Buffer at most one message (header + body) beyond what is processed,
         * in a buffer as large as that message (its length once known). */
        size_t want = rx_want(c);
        if (c->rx_cap < want) {
            uint8_t *p = g_alloc(g, want);
            if (!p) {
                fail_conn(g, c, 0, "out of memory");
                break;
            }
            if (c->rx_len) memcpy(p, c->rx, c->rx_len);
            g_free(g, c->rx);
            c->rx = p;
            c->rx_cap = want;
        }
        size_t take = c->rx_cap - c->rx_len < len ? c->rx_cap - c->rx_len : len;
        memcpy(c->rx + c->rx_len, buf, take);
        c->rx_len += take;
        buf += take;
        len -= take;
        process_rx(g, c, now);
        if (take == 0) break;
    }
    if (c->state != CONN_FREE) conn_trim(g, c);
    end(g, now);
}

void mm_gossip_sent(mm_gossip *g, mm_conn_id id, size_t bytes, uint64_t now)
{
    begin(g);
    conn *c = find_conn(g, id);
    if (c) c->unwritten = c->unwritten > bytes ? c->unwritten - bytes : 0;
    end(g, now);
}

void mm_gossip_closed(mm_gossip *g, mm_conn_id id, uint64_t now)
{
    begin(g);
    conn *c = find_conn(g, id);
    if (c) {
        if (!c->closing) {
            bool was_open = c->state == CONN_OPEN && c->hello_ok;
            if (was_open && !c->graceful) {
                char h[17];
                hex8(c->peer_id, h);
                logf_(g, MM_LOG_INFO, c->peer_id, "connection to %s lost", h);
            }
            close_conn_(g, c, was_open && !c->graceful, false, now);
        }
        release_conn(g, c);
    }
    end(g, now);
}

uint64_t mm_gossip_deadline(const mm_gossip *g) { return g->deadline; }

void mm_gossip_tick(mm_gossip *g, uint64_t now)
{
    begin(g);
    do_timers(g, now);
    end(g, now);
}

static int average_now(mm_gossip *g, uint64_t now)
{
    if (g->leaving || g->sync_active || g->sync_wanted) return MM_ERR_STATE;
    uint32_t busy = 0;
    for (int i = 0; i < MM_MAX_EXCHANGES; i++) busy += g->exchs[i].used;
    if (busy >= MM_MAX_EXCHANGES) return MM_ERR_BUSY;
    peer *p = random_live_peer(g, now, true);
    if (!p) return MM_ERR_STATE;
    conn *c = reach(g, p, now);
    if (!c) return MM_ERR_LIMIT;
    if (c->state == CONN_OPEN && c->hello_ok)
        start_exchange(g, c, EXCH_AVERAGE, now);
    else
        c->pending_avg = true;
    return MM_OK;
}

int mm_gossip_average_now(mm_gossip *g, uint64_t now)
{
    begin(g);
    int rc = average_now(g, now);
    end(g, now);
    return rc;
}

void mm_gossip_snapshot_ready(mm_gossip *g, uint32_t xid, const float *snap, uint64_t samples, uint64_t now)
{
    begin(g);
    exch *x = find_exch_local(g, xid);
    if (!x || !x->snap_wanted || x->have_snap) { /* the exchange is gone: give it back */
        mm_action *a = push_action(g, MM_ACT_RELEASE);
        if (a) a->xid = xid;
        end(g, now);
        return;
    }
    if (mm_enc_check_finite(snap, g->cfg.params) != 0) {
        logf_(g, MM_LOG_INFO, NULL, "our own parameters are not finite: no exchange");
        abort_exchange(g, x, true, "own snapshot not finite", now);
        end(g, now);
        return;
    }
    x->snap = snap;
    x->have_snap = true;
    x->my_samples = samples;
    conn *c = find_conn(g, x->conn);
    if (!c || c->state != CONN_OPEN || c->closing) {
        abort_exchange(g, x, false, "connection gone", now);
        end(g, now);
        return;
    }
    mm_msg m = {.type = x->initiator ? MM_MSG_EXCH_REQ : MM_MSG_EXCH_ACK};
    m.u.exch.xid = x->xid;
    m.u.exch.encoding = x->enc;
    m.u.exch.samples = samples;
    m.u.exch.kind = x->kind;
    if (!send_msg(g, c, &m)) {
        abort_exchange(g, x, true, "out of memory", now);
    } else if (!x->initiator) {
        x->acked = true;
        pump(g, x, c);
    }
    end(g, now);
}

void mm_gossip_merge_done(mm_gossip *g, uint32_t xid, uint64_t now)
{
    begin(g);
    exch *x = find_exch_local(g, xid);
    if (x && x->merging) {
        if (x->kind == EXCH_SYNC) x->snap_wanted = false; /* a sync never lent a snapshot */
        g->refused_in_a_row = 0;
        log_exchange(g, x, true, x->kind == EXCH_SYNC ? "state replaced" : "merged", now);
        g->st.exchanges_ok++;
        free_exch(g, x);
    }
    end(g, now);
}

void mm_gossip_leave(mm_gossip *g, uint64_t now)
{
    begin(g);
    g->leaving = true;
    mm_msg m = {.type = MM_MSG_LEAVE};
    memcpy(m.u.leave.rec.id, g->id, MM_ID_BYTES);
    m.u.leave.rec.seq = g->cfg.incarnation;
    sign_rec(g, &m.u.leave.rec, true);
    for (uint32_t i = 0; i < g->nconns; i++) {
        conn *c = g->conns[i];
        if (!c || c->state == CONN_FREE || c->closing) continue;
        if (c->state == CONN_OPEN) {
            if (c->hello_ok) send_msg(g, c, &m);
            send_frame(g, c, MM_FRAME_CLOSE, 0, 0, NULL, 0);
        }
        c->graceful = true;
        close_conn(g, c, false, now);
    }
    end(g, now);
}

bool mm_gossip_next(mm_gossip *g, mm_action *act)
{
    /* Queued bytes go first, so a CLOSE follows the frames before it. */
    for (uint32_t i = 0; i < g->nconns; i++) {
        conn *c = g->conns[i];
        if (c && c->state != CONN_FREE && c->out_len && !c->out_lent) {
            memset(act, 0, sizeof *act);
            act->kind = MM_ACT_SEND;
            act->conn = c->id;
            act->data = c->out;
            act->len = c->out_len;
            c->out_lent = true;
            c->unwritten += c->out_len;
            return true;
        }
    }
    while (g->q_len) {
        *act = g->q[g->q_head];
        g->q_head = (g->q_head + 1) % g->q_cap;
        g->q_len--;
        if (act->kind != MM_ACT_NONE) return true;
    }
    if (g->q) { /* drained: an idle core holds no queue */
        g_free(g, g->q);
        g->q = NULL;
        g->q_cap = g->q_head = 0;
    }
    return false;
}

void mm_gossip_get_stats(const mm_gossip *g, mm_gossip_stats *s) { *s = g->st; }

uint32_t mm_gossip_peers(const mm_gossip *g, mm_gossip_peer_info *out, uint32_t max)
{
    uint32_t n = 0;
    for (int i = 0; i < MM_VIEW_SIZE && n < max; i++) {
        const peer *p = &g->peers[i];
        if (!p->used) continue;
        mm_gossip_peer_info *o = &out[n++];
        memcpy(o->id, p->rec.id, MM_ID_BYTES);
        memcpy(o->addr, p->rec.addr, MM_ADDR_MAX);
        o->suspect = p->state == PEER_SUSPECT;
        o->session = session_of(g, p->rec.id) != NULL;
    }
    return n;
}
