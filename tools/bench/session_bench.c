/* The CPU cost of one session set-up between two gossip cores, in one
 * process on one thread: the Noise XXpsk0 handshake, both HELLOs and the
 * first shuffle, both sides' work, the cores' creation excluded. Measured
 * with every signature checked, and with the checks answered by a cache (as
 * the simulator's cores share one: mm_gossip_set_sig_cache), which leaves the
 * handshake's own work (X25519, SHA-512/HKDF, AEAD) and the messages.
 * tools/bench/sim_scale.sh multiplies it by the handshakes a run counts.
 *
 * usage: session_bench [--sessions K]     Output: one JSON line. */
#define _POSIX_C_SOURCE 200809L
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gossip.h"
#include "mm_rng.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts); /* CPU time: the machines are shared */
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef struct {
    mm_gossip *g;
    mm_rng rng;
    mm_conn_id conn;
} node;

static node nodes[2];

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

/* Every session here checks the same few signatures. */
static uint8_t seen_d[64][MM_SIG_DIGEST];
static int nseen;
static bool seen(void *ctx, const uint8_t *d, bool add)
{
    (void)ctx;
    for (int i = 0; i < nseen; i++)
        if (memcmp(seen_d[i], d, MM_SIG_DIGEST) == 0) return true;
    if (add && nseen < 64) memcpy(seen_d[nseen++], d, MM_SIG_DIGEST);
    return false;
}

/* Carry out node i's actions; SENDs go straight into the other core. */
static int drain(int i)
{
    node *me = &nodes[i], *other = &nodes[1 - i];
    mm_action a;
    int n = 0;
    size_t sent = 0;
    while (mm_gossip_next(me->g, &a)) {
        n++;
        if (a.kind == MM_ACT_CONNECT) {
            other->conn = mm_gossip_accepted(other->g, "10.0.0.1:40000", 0);
            me->conn = a.conn;
            mm_gossip_connected(me->g, a.conn, 0);
        } else if (a.kind == MM_ACT_SEND) {
            mm_gossip_received(other->g, other->conn, a.data, a.len, 0);
            sent += a.len;
        }
    }
    if (sent) mm_gossip_sent(me->g, me->conn, sent, 0);
    return n;
}

/* Seconds for k session set-ups; *hs: handshakes the cores counted. */
static double sessions(int k, bool cache, uint64_t *hs)
{
    double total = 0;
    mm_gossip_tensor one = {0, 16};
    *hs = 0;
    for (int r = 0; r < k; r++) {
        for (int i = 0; i < 2; i++) {
            node *nd = &nodes[i];
            mm_gossip_config c;
            memset(&c, 0, sizeof c);
            uint8_t seed[32] = {(uint8_t)(i + 1)}, pk[32];
            crypto_sign_seed_keypair(pk, c.identity_sk, seed);
            memset(c.network_key, 9, 32);
            snprintf(c.advertise, sizeof c.advertise, "10.0.%d.1:7000", i);
            c.incarnation = 1;
            c.params = 16;
            c.tensors = &one;
            c.ntensors = 1;
            mm_rng_seed(&nd->rng, (uint64_t)i + 1);
            mm_gossip_env env = {.random = mm_rng_fill, .random_ctx = &nd->rng, .alloc = al, .free = fr};
            nd->g = mm_gossip_new(&c, &env, 0);
            if (!nd->g) return -1;
            if (cache) mm_gossip_set_sig_cache(nd->g, seen, NULL);
        }
        double t0 = now_s();
        mm_gossip_bootstrap(nodes[0].g, "10.0.1.1:7000", 0);
        for (int guard = 0; guard < 1000 && drain(0) + drain(1); guard++) {
        }
        total += now_s() - t0;
        for (int i = 0; i < 2; i++) {
            mm_gossip_stats st;
            mm_gossip_get_stats(nodes[i].g, &st);
            *hs += st.handshakes_ok;
            mm_gossip_free(nodes[i].g);
        }
    }
    return total;
}

int main(int argc, char **argv)
{
    int k = 500;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--sessions") == 0 && i + 1 < argc)
            k = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--sessions K]\n", argv[0]);
            return 2;
        }
    }
    if (sodium_init() < 0 || k < 1) return 1;
    uint64_t hs0, hs1;
    double plain = sessions(k, false, &hs0), cached = sessions(k, true, &hs1);
    if (plain < 0 || cached < 0 || hs0 != 2ull * (uint64_t)k || hs1 != hs0) {
        fprintf(stderr, "a session did not come up (%llu handshakes counted)\n", (unsigned long long)hs0);
        return 1;
    }
    printf("{\"bench\":\"session_setup\",\"sessions\":%d,\"us_per_session\":%.1f,\"us_per_session_sig_cached\":%.1f,"
           "\"us_per_handshake_side_sig_cached\":%.1f}\n",
           k, plain / k * 1e6, cached / k * 1e6, cached / k * 1e6 / 2);
    return 0;
}
