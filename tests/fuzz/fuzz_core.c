/* The whole gossip core, driven by the fuzzer's bytes. The input is a
 * program: each step reads an opcode that chooses an event (a peer connects,
 * bytes arrive on a connection, time passes, a snapshot or merge completes,
 * the next allocation fails, ...). The core must never crash, leak or leave
 * its deadline in the past, whatever arrives. A real responder handshake
 * with the fuzzer's bytes can only get as far as the network key allows, so
 * a second, honest core is also driven: the fuzzer may also deliver the honest
 * peer's bytes, damaged or not. */
#include <sodium.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gossip.h"
#include "mm_rng.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct {
    const uint8_t *p;
    size_t n;
} input;

static int take(input *in)
{
    if (!in->n) return -1;
    in->n--;
    return *in->p++;
}

static long allocs, fail_next;
static void *f_alloc(void *ctx, size_t n)
{
    (void)ctx;
    if (fail_next) {
        fail_next = 0;
        return NULL;
    }
    void *p = malloc(n);
    if (p) allocs++;
    return p;
}
static void f_free(void *ctx, void *p)
{
    (void)ctx;
    if (p) {
        allocs--;
        free(p);
    }
}
#define NV 64

typedef struct {
    mm_gossip *g;
    mm_rng rng;
    float x[NV];
    float snaps[4][NV];
    uint32_t snap_xid[4];
    uint8_t out[1 << 16]; /* last bytes it sent, for the other side */
    size_t out_len;
    mm_conn_id conn;
    uint32_t pend_snap, pend_merge;
} side;

static void drain(side *s)
{
    mm_action a;
    while (mm_gossip_next(s->g, &a)) {
        if (a.kind == MM_ACT_SEND) {
            size_t k = a.len < sizeof s->out - s->out_len ? a.len : sizeof s->out - s->out_len;
            memcpy(s->out + s->out_len, a.data, k);
            s->out_len += k;
        } else if (a.kind == MM_ACT_WANT_SNAPSHOT) {
            s->pend_snap = a.xid;
        } else if (a.kind == MM_ACT_MERGE) {
            for (uint64_t i = 0; i < a.count && i < NV; i++)
                s->x[i] = a.snap ? s->x[i] + a.weight * (a.peer[i] - a.snap[i]) : a.peer[i];
            s->pend_merge = a.xid;
        } else if (a.kind == MM_ACT_CONNECT) {
            s->conn = a.conn;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool init;
    if (!init) {
        if (sodium_init() < 0) abort();
        init = true;
    }
    input in = {data, size};
    side sd[2];
    memset(sd, 0, sizeof sd);
    uint64_t now = 1;
    for (int i = 0; i < 2; i++) {
        mm_gossip_config c;
        memset(&c, 0, sizeof c);
        uint8_t seed[32] = {0}, pk[32];
        seed[0] = (uint8_t)(i + 1);
        crypto_sign_seed_keypair(pk, c.identity_sk, seed);
        memset(c.network_key, 7, 32);
        memcpy(c.advertise, i ? "127.0.0.1:2" : "127.0.0.1:1", 12);
        c.incarnation = 1;
        c.params = NV;
        c.exchange_period = MM_SEC(1);
        c.clip = true;
        mm_rng_seed(&sd[i].rng, (uint64_t)i + 1);
        mm_gossip_env env = {.random = mm_rng_fill, .random_ctx = &sd[i].rng, .alloc = f_alloc, .free = f_free};
        sd[i].g = mm_gossip_new(&c, &env, now);
        if (!sd[i].g) abort();
        for (int k = 0; k < NV; k++) sd[i].x[k] = (float)(k * (i + 1));
    }
    /* side 1 dials side 0; side 0 accepts */
    mm_gossip_bootstrap(sd[1].g, "127.0.0.1:1", now);
    drain(&sd[1]);
    sd[0].conn = mm_gossip_accepted(sd[0].g, "127.0.0.1:2", now);
    mm_gossip_connected(sd[1].g, sd[1].conn, now);
    for (int steps = 0; steps < 2000; steps++) {
        drain(&sd[0]);
        drain(&sd[1]);
        int op = take(&in);
        if (op < 0) break;
        int who = op & 1;
        side *s = &sd[who], *o = &sd[1 - who];
        switch ((op >> 1) % 8) {
        case 0: { /* deliver the other side's bytes, maybe cut, maybe with one byte flipped */
            int cut = take(&in), flip = take(&in);
            size_t n = o->out_len;
            if (cut > 0 && (size_t)cut < n) n = (size_t)cut * n / 256 + 1;
            if (flip > 0 && n) o->out[(size_t)flip % n] ^= (uint8_t)(1u << (flip & 7));
            mm_gossip_received(s->g, s->conn, o->out, n, now);
            memmove(o->out, o->out + n, o->out_len - n);
            o->out_len -= n;
            mm_gossip_sent(o->g, o->conn, n, now);
            break;
        }
        case 1: { /* raw fuzzer bytes arrive */
            int len = take(&in);
            if (len < 0) break;
            size_t n = (size_t)len < in.n ? (size_t)len : in.n;
            mm_gossip_received(s->g, s->conn, in.p, n, now);
            in.p += n, in.n -= n;
            break;
        }
        case 2: /* time passes */
            now += (uint64_t)(take(&in) & 0xff) * MM_MS(100) + 1;
            if (mm_gossip_deadline(s->g) <= now) mm_gossip_tick(s->g, now);
            if (mm_gossip_deadline(s->g) <= now) {
                drain(s);
                if (mm_gossip_deadline(s->g) <= now) abort(); /* it would spin an event loop */
            }
            break;
        case 3:
            mm_gossip_average_now(s->g, now);
            break;
        case 4: /* the trainer lends the snapshot it was asked for */
            if (s->pend_snap) {
                memcpy(s->snaps[0], s->x, sizeof s->x);
                if (take(&in) == 0) s->snaps[0][3] = __builtin_nanf(""); /* a poisoned snapshot */
                mm_gossip_snapshot_ready(s->g, s->pend_snap, s->snaps[0], 10, now);
                s->pend_snap = 0;
            }
            break;
        case 5:
            if (s->pend_merge) mm_gossip_merge_done(s->g, s->pend_merge, now), s->pend_merge = 0;
            break;
        case 6:
            fail_next = 1;
            break;
        case 7:
            if (take(&in) == 0) mm_gossip_leave(s->g, now);
            else mm_gossip_closed(s->g, s->conn, now);
            break;
        }
    }
    for (int i = 0; i < 2; i++) mm_gossip_free(sd[i].g);
    fail_next = 0;
    if (allocs != 0) abort(); /* a leak */
    return 0;
}
