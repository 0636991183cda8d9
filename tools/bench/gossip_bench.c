/* The gossip core alone, in one process, on one thread: two cores exchange
 * a float32 vector of N parameters (default 100 million) through memory,
 * with everything the production path does (encode, AEAD encrypt, decrypt
 * straight into the receive buffer, finite check, DONE, merge). Printed next
 * to libsodium's raw AEAD throughput on the same chunk size, measured in the
 * same run.
 *
 * usage: gossip_bench [--params N] [--reps R] [--clip]
 * Output: one JSON line. Per direction GB/s = vector bytes / (exchange time / 2),
 * since one thread does both directions' work. */
#define _POSIX_C_SOURCE 200809L
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gossip.h"
#include "mm_pool.h"
#include "mm_rng.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef struct {
    mm_gossip *g;
    mm_rng rng;
    float *x, *snap;
    int merges;
    mm_conn_id conn;
} node;

static node nodes[2];
static uint64_t t_ns;

static void *al(void *c, size_t n)
{
    (void)c;
    return malloc(n);
}

static void fr(void *c, void *p)
{
    (void)c;
    free(p);
}

/* Carry out node i's actions; SENDs go straight into the other core. */
static int drain(int i)
{
    node *me = &nodes[i], *other = &nodes[1 - i];
    mm_action a;
    int n = 0;
    size_t sent = 0;
    uint32_t snap_x = 0, merge_x = 0;
    bool want = false, merged = false;
    while (mm_gossip_next(me->g, &a)) {
        n++;
        switch (a.kind) {
        case MM_ACT_CONNECT:
            other->conn = mm_gossip_accepted(other->g, "127.0.0.1:1", t_ns);
            me->conn = a.conn;
            mm_gossip_connected(me->g, a.conn, t_ns);
            break;
        case MM_ACT_SEND:
            mm_gossip_received(other->g, other->conn, a.data, a.len, t_ns);
            sent += a.len;
            break;
        case MM_ACT_WANT_SNAPSHOT:
            want = true;
            snap_x = a.xid;
            break;
        case MM_ACT_MERGE: {
            const float *p = a.peer, *s = a.snap;
            float *x = me->x, w = a.weight;
            for (uint64_t k = 0; k < a.count; k++) x[k] += w * (p[k] - s[k]);
            merged = true;
            merge_x = a.xid;
            me->merges++;
            break;
        }
        default:
            break;
        }
    }
    if (sent) mm_gossip_sent(me->g, me->conn, sent, t_ns);
    if (merged) mm_gossip_merge_done(me->g, merge_x, t_ns);
    if (want) {
        mm_gossip_snapshot_ready(me->g, snap_x, me->snap, 1000, t_ns);
    }
    return n + (sent > 0) + merged + want;
}

static void run_until_idle(void)
{
    for (int guard = 0; guard < 100000000; guard++) {
        int moved = drain(0) + drain(1);
        if (!moved) return;
        t_ns += 1000;
    }
}

/* Raw libsodium AEAD on the same chunk size, encrypt then decrypt; with
 * stream = false on one chunk-sized buffer (cache-hot), else marching
 * through `total` bytes of memory as an exchange does. */
static void raw_aead(size_t chunk, size_t total, bool aes, bool stream, double *enc_gbs, double *dec_gbs)
{
    size_t span = stream ? total : chunk;
    uint8_t *pt = malloc(span), *ct = malloc(span), tag[16], key[32] = {1}, nonce[12] = {0};
    memset(pt, 7, span);
    memset(ct, 0, span);
    crypto_aead_aes256gcm_state st;
    if (aes) crypto_aead_aes256gcm_beforenm(&st, key);
    size_t reps = total / chunk;
    double t0 = now_s();
    for (size_t r = 0; r < reps; r++) {
        nonce[0] = (uint8_t)r;
        size_t off = stream ? r * chunk : 0;
        if (aes)
            crypto_aead_aes256gcm_encrypt_detached_afternm(ct + off, tag, NULL, pt + off, chunk, NULL, 0, NULL, nonce, &st);
        else
            crypto_aead_chacha20poly1305_ietf_encrypt_detached(ct + off, tag, NULL, pt + off, chunk, NULL, 0, NULL, nonce,
                                                               key);
    }
    double t1 = now_s();
    /* Every decrypt checks the last message's tag over its own chunk: it
     * fails (as the work is the same either way) except for the last. */
    nonce[0] = (uint8_t)(reps - 1);
    for (size_t r = 0; r < reps; r++) {
        size_t off = stream ? r * chunk : 0;
        if (aes)
            (void)!crypto_aead_aes256gcm_decrypt_detached_afternm(pt + off, NULL, ct + off, chunk, tag, NULL, 0, nonce,
                                                                  &st);
        else
            (void)!crypto_aead_chacha20poly1305_ietf_decrypt_detached(pt + off, NULL, ct + off, chunk, tag, NULL, 0,
                                                                      nonce, key);
    }
    double t2 = now_s();
    *enc_gbs = (double)(reps * chunk) / (t1 - t0) / 1e9;
    *dec_gbs = (double)(reps * chunk) / (t2 - t1) / 1e9;
    free(pt);
    free(ct);
}

int main(int argc, char **argv)
{
    uint64_t params = 100000000ull;
    int reps = 3;
    bool clip = false;
    int threads = 0; /* workers besides the caller, for sealing (env.parallel) */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--params") == 0 && i + 1 < argc)
            params = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--clip") == 0)
            clip = true;
        else {
            fprintf(stderr, "usage: %s [--params N] [--reps R] [--clip] [--threads T]\n", argv[0]);
            return 2;
        }
    }
    if (sodium_init() < 0 || params == 0 || reps < 1 || threads < 0) return 1;
    mm_pool *pool = threads > 0 ? mm_pool_new(threads) : NULL;
    if (threads > 0 && !pool) {
        fprintf(stderr, "cannot start %d threads\n", threads);
        return 1;
    }
    uint8_t netkey[32];
    memset(netkey, 9, sizeof netkey);
    mm_gossip_tensor one = {0, params};
    for (int i = 0; i < 2; i++) {
        node *nd = &nodes[i];
        mm_gossip_config c;
        memset(&c, 0, sizeof c);
        uint8_t seed[32] = {(uint8_t)(i + 1)}, pk[32];
        crypto_sign_seed_keypair(pk, c.identity_sk, seed);
        memcpy(c.network_key, netkey, 32);
        snprintf(c.advertise, sizeof c.advertise, "127.0.0.1:%d", 9000 + i);
        c.incarnation = 1;
        c.params = params;
        c.encoding = MM_ENC_F32;
        c.clip = clip;
        c.tensors = &one;
        c.ntensors = 1;
        mm_rng_seed(&nd->rng, (uint64_t)i + 1);
        mm_gossip_env env = {.random = mm_rng_fill, .random_ctx = &nd->rng, .alloc = al, .free = fr,
                             .parallel = pool ? mm_pool_run : NULL, .parallel_ctx = pool};
        nd->g = mm_gossip_new(&c, &env, 0);
        nd->x = malloc(params * sizeof(float));
        nd->snap = malloc(params * sizeof(float));
        if (!nd->g || !nd->x || !nd->snap) {
            fprintf(stderr, "out of memory\n");
            return 1;
        }
        for (uint64_t k = 0; k < params; k++) nd->x[k] = (float)(k % 1000) * 0.001f * (float)(i + 1);
    }
    mm_gossip_bootstrap(nodes[0].g, "127.0.0.1:9001", t_ns);
    run_until_idle();
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        /* Snapshots are copies the runtime makes; that copy is not the core's
         * work, so it happens outside the timed region. */
        for (int i = 0; i < 2; i++) memcpy(nodes[i].snap, nodes[i].x, params * sizeof(float));
        int before = nodes[0].merges;
        double t0 = now_s();
        mm_gossip_average_now(nodes[0].g, t_ns);
        run_until_idle();
        double dt = now_s() - t0;
        if (nodes[0].merges != before + 1) {
            fprintf(stderr, "exchange %d did not complete\n", r);
            return 1;
        }
        if (dt < best) best = dt;
    }
    bool aes = crypto_aead_aes256gcm_is_available() != 0;
    double enc, dec, senc, sdec;
    size_t total = (size_t)params * 4 < ((size_t)1 << 30) ? (size_t)params * 4 : ((size_t)1 << 30);
    raw_aead(256u << 10, total, aes, false, &enc, &dec);
    raw_aead(256u << 10, total, aes, true, &senc, &sdec);
    double bytes = (double)params * 4.0;
    double per_dir = bytes / (best / 2.0) / 1e9;
    /* one direction's work on one thread = seal + open of the same bytes */
    double raw = 1.0 / (1.0 / enc + 1.0 / dec), sraw = 1.0 / (1.0 / senc + 1.0 / sdec);
    printf("{\"bench\":\"gossip_exchange\",\"params\":%llu,\"seal_threads\":%d,\"cipher\":\"%s\",\"clip\":%s,\"exchange_s\":%.3f,"
           "\"per_direction_gb_s\":%.3f,\"raw_hot_seal_gb_s\":%.3f,\"raw_hot_open_gb_s\":%.3f,"
           "\"raw_hot_seal_plus_open_gb_s\":%.3f,\"raw_stream_seal_plus_open_gb_s\":%.3f,"
           "\"fraction_of_raw_hot\":%.3f,\"fraction_of_raw_stream\":%.3f}\n",
           (unsigned long long)params, threads + 1, aes ? "aes256gcm" : "chacha20poly1305", clip ? "true" : "false", best,
           per_dir, enc, dec, raw, sraw, per_dir / raw, per_dir / sraw);
    for (int i = 0; i < 2; i++) {
        mm_gossip_free(nodes[i].g);
        free(nodes[i].x);
        free(nodes[i].snap);
    }
    mm_pool_free(pool);
    return 0;
}
