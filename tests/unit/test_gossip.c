/* The gossip core driven in memory with explicit time: handshake, sessions,
 * averaging semantics, refusals and adversarial cases (SECURITY.md §3, U). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>

#include "gossip_harness.h"
#include "mm_pool.h"

#define N 1000 /* floats per vector: small, but several tensors and > 0 chunks */

static const uint8_t netkey[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                                   17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};
static const mm_gossip_tensor tensors[3] = {{0, 600}, {608, 300}, {912, 88}};

static void net_init(h_net *net, size_t n)
{
    memset(net, 0, sizeof *net);
    net->n = n;
    net->verbose = getenv("MM_VERBOSE") != NULL;
}

/* Two nodes; node 0 joins through node 1. Vectors: x0 = i, x1 = -2i + 7. */
static void two_nodes(h_net *net, uint8_t enc)
{
    net_init(net, N);
    for (int i = 0; i < 2; i++) {
        mm_gossip_config c = h_config(i, netkey, N, 0xab);
        c.encoding = enc;
        c.tensors = tensors;
        c.ntensors = 3;
        assert_int_equal(h_add_node(net, &c, 100 + (uint64_t)i), i);
    }
    for (size_t k = 0; k < N; k++) {
        net->nodes[0].x[k] = (float)k * 0.01f;
        net->nodes[1].x[k] = -0.02f * (float)k + 7.0f;
    }
}

static void connect_and_average(h_net *net)
{
    assert_int_equal(mm_gossip_bootstrap(net->nodes[0].g, net->nodes[1].addr, net->now), 0);
    h_run(net, net->now + MM_MS(10));
    mm_gossip_stats s;
    mm_gossip_get_stats(net->nodes[0].g, &s);
    assert_int_equal(s.sessions, 1);
    assert_int_equal(mm_gossip_average_now(net->nodes[0].g, net->now), 0);
    h_run(net, net->now + MM_MS(50));
}

static void test_handshake_and_exchange(void **state)
{
    (void)state;
    h_net net;
    two_nodes(&net, MM_ENC_F32);
    float a[N], b[N];
    memcpy(a, net.nodes[0].x, sizeof a);
    memcpy(b, net.nodes[1].x, sizeof b);
    connect_and_average(&net);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(h_count_logs(&net.nodes[i], MM_LOG_EXCHANGE, 1, NULL), 1);
        assert_int_equal(net.nodes[i].merges, 1);
        for (size_t k = 0; k < N; k++) {
            float want = a[k] + 0.5f * (b[k] - a[k]);
            if (i == 1) want = b[k] + 0.5f * (a[k] - b[k]);
            assert_true(net.nodes[i].x[k] == want); /* exact: the same float operations */
            assert_true(fabsf(net.nodes[i].x[k] - 0.5f * (a[k] + b[k])) <= 1e-5f * (1.0f + fabsf(a[k]) + fabsf(b[k])));
        }
    }
    /* The session is kept: a second exchange needs no new handshake. */
    mm_gossip_stats s0;
    mm_gossip_get_stats(net.nodes[0].g, &s0);
    assert_int_equal(mm_gossip_average_now(net.nodes[1].g, net.now), 0);
    h_run(&net, net.now + MM_MS(50));
    mm_gossip_stats s1;
    mm_gossip_get_stats(net.nodes[0].g, &s1);
    assert_int_equal(s1.handshakes_ok, s0.handshakes_ok);
    assert_int_equal(s1.exchanges_ok, s0.exchanges_ok + 1);
    h_free_net(&net);
    assert_int_equal(net.allocs, net.frees);
}

/* Both sides ask at the same moment: one exchange happens, not two failures. */
static void test_simultaneous_requests(void **state)
{
    (void)state;
    h_net net;
    two_nodes(&net, MM_ENC_F32);
    mm_gossip_bootstrap(net.nodes[0].g, net.nodes[1].addr, net.now);
    h_run(&net, MM_MS(10));
    assert_int_equal(mm_gossip_average_now(net.nodes[0].g, net.now), 0);
    assert_int_equal(mm_gossip_average_now(net.nodes[1].g, net.now), 0);
    h_run(&net, net.now + MM_MS(100));
    for (int i = 0; i < 2; i++) {
        assert_int_equal(net.nodes[i].merges, 1);
        assert_int_equal(h_count_logs(&net.nodes[i], MM_LOG_EXCHANGE, 1, NULL), 1);
    }
    for (size_t k = 0; k < N; k++) /* both hold the average (up to the last bit) */
        assert_true(fabsf(net.nodes[0].x[k] - net.nodes[1].x[k]) <= 1e-6f * (1.0f + fabsf(net.nodes[0].x[k])));
    h_free_net(&net);
    assert_int_equal(net.allocs, net.frees);
}

/* Training during the exchange: the delta rule keeps the local progress. */
static float delta_k(size_t k) { return 0.125f * (float)(k % 7); }

static void train_during(h_net *net, int node, uint32_t xid)
{
    (void)xid;
    for (size_t k = 0; k < net->n; k++) net->nodes[node].x[k] += delta_k(k);
}

static void test_delta_rule(void **state)
{
    (void)state;
    h_net net;
    two_nodes(&net, MM_ENC_F32);
    float a[N], b[N];
    memcpy(a, net.nodes[0].x, sizeof a);
    memcpy(b, net.nodes[1].x, sizeof b);
    net.nodes[0].on_snapshot = train_during; /* after the snapshot is copied, before the merge */
    connect_and_average(&net);
    for (size_t k = 0; k < N; k++) {
        float live = a[k] + delta_k(k);
        float want = live + 0.5f * (b[k] - a[k]);
        assert_true(net.nodes[0].x[k] == want);
    }
    h_free_net(&net);
}

static void test_encodings(void **state)
{
    (void)state;
    const uint8_t encs[] = {MM_ENC_F16, MM_ENC_BF16, MM_ENC_Q8};
    const float tol[] = {2e-3f, 1.6e-2f, 3e-2f}; /* relative to the vector's magnitude */
    for (int e = 0; e < 3; e++) {
        h_net net;
        two_nodes(&net, encs[e]);
        float a[N], b[N];
        memcpy(a, net.nodes[0].x, sizeof a);
        memcpy(b, net.nodes[1].x, sizeof b);
        connect_and_average(&net);
        for (int i = 0; i < 2; i++) {
            assert_int_equal(h_count_logs(&net.nodes[i], MM_LOG_EXCHANGE, 1, NULL), 1);
            for (size_t k = 0; k < N; k++)
                assert_true(fabsf(net.nodes[i].x[k] - 0.5f * (a[k] + b[k])) <= tol[e] * 14.0f);
        }
        h_free_net(&net);
    }
}

/* R5: DATA frames sealed through env.parallel, by workers finishing in any
 * order, give the byte streams and the averages of a serial core. */
#define PAR_N 300000 /* several frames per send window, in every encoding */

static void par_reverse(void *ctx, void (*fn)(void *arg, uint32_t i), void *arg, uint32_t n)
{
    (void)ctx;
    for (uint32_t i = n; i-- > 0;) fn(arg, i);
}

static crypto_generichash_state par_hash[2];

static void par_tap(h_net *net, int from, uint8_t *buf, size_t len)
{
    (void)net;
    crypto_generichash_update(&par_hash[from], buf, len);
}

/* One exchange; the digests of what each node sent, and node 0's vector. */
static void par_run(uint8_t enc, int mode, uint8_t digest[2][32], float *x0)
{
    h_net net;
    net_init(&net, PAR_N);
    mm_pool *pool = mode == 2 ? mm_pool_new(3) : NULL;
    if (mode == 1) net.parallel = par_reverse;
    if (mode == 2) {
        assert_non_null(pool);
        net.parallel = mm_pool_run;
        net.parallel_ctx = pool;
    }
    net.tamper = par_tap;
    for (int i = 0; i < 2; i++) crypto_generichash_init(&par_hash[i], NULL, 0, 32);
    for (int i = 0; i < 2; i++) {
        mm_gossip_config c = h_config(i, netkey, PAR_N, 0xab);
        c.encoding = enc;
        assert_int_equal(h_add_node(&net, &c, 700 + (uint64_t)i), i);
        for (size_t k = 0; k < PAR_N; k++) net.nodes[i].x[k] = (float)((k * 7919 + (size_t)i * 104729) % 1000) * 1e-3f - 0.5f;
    }
    connect_and_average(&net);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(h_count_logs(&net.nodes[i], MM_LOG_EXCHANGE, 1, NULL), 1);
        crypto_generichash_final(&par_hash[i], digest[i], 32);
    }
    memcpy(x0, net.nodes[0].x, PAR_N * sizeof(float));
    h_free_net(&net);
    assert_int_equal(net.allocs, net.frees);
    mm_pool_free(pool);
}

static void test_parallel_sealing(void **state)
{
    (void)state;
    static float serial[PAR_N], other[PAR_N];
    const uint8_t encs[] = {MM_ENC_F32, MM_ENC_F16, MM_ENC_Q8};
    for (int e = 0; e < 3; e++) {
        uint8_t d0[2][32], d1[2][32];
        par_run(encs[e], 0, d0, serial);
        for (int mode = 1; mode <= 2; mode++) {
            par_run(encs[e], mode, d1, other);
            assert_memory_equal(d0, d1, sizeof d0);
            assert_memory_equal(serial, other, sizeof serial);
        }
    }
}

static void test_wrong_network_key(void **state)
{
    (void)state;
    h_net net;
    net_init(&net, N);
    uint8_t other[32];
    memcpy(other, netkey, 32);
    other[0] ^= 1;
    mm_gossip_config c0 = h_config(0, other, N, 0xab), c1 = h_config(1, netkey, N, 0xab);
    h_add_node(&net, &c0, 1);
    h_add_node(&net, &c1, 2);
    mm_gossip_bootstrap(net.nodes[0].g, net.nodes[1].addr, net.now);
    h_run(&net, MM_SEC(10));
    assert_int_equal(net.nodes[1].sent_bytes, 0); /* the responder never says a word */
    assert_true(h_count_logs(&net.nodes[1], MM_LOG_REFUSED, -1, "network key") >= 1);
    mm_gossip_stats s;
    mm_gossip_get_stats(net.nodes[0].g, &s);
    assert_int_equal(s.sessions, 0);
    h_free_net(&net);
}

static void test_different_model(void **state)
{
    (void)state;
    h_net net;
    net_init(&net, N);
    mm_gossip_config c0 = h_config(0, netkey, N, 0xab), c1 = h_config(1, netkey, N, 0xcd);
    h_add_node(&net, &c0, 1);
    h_add_node(&net, &c1, 2);
    mm_gossip_bootstrap(net.nodes[0].g, net.nodes[1].addr, net.now);
    h_run(&net, MM_SEC(1));
    for (int i = 0; i < 2; i++)
        assert_true(h_count_logs(&net.nodes[i], MM_LOG_REFUSED, -1, "fingerprint") +
                        h_count_logs(&net.nodes[i], MM_LOG_REFUSED, -1, "different model") >=
                    1);
    assert_int_equal(mm_gossip_average_now(net.nodes[0].g, net.now), MM_ERR_STATE);
    h_free_net(&net);
}

/* Tampering: flip one bit in the middle of node 1's stream of DATA. */
static size_t tamper_at;
static void flip_one(h_net *net, int from, uint8_t *buf, size_t len)
{
    (void)net;
    if (from == 1 && tamper_at && len > 2000) {
        buf[tamper_at % len] ^= 0x10;
        tamper_at = 0;
    }
}

static void test_tamper_aborts_and_changes_nothing(void **state)
{
    (void)state;
    h_net net;
    two_nodes(&net, MM_ENC_F32);
    mm_gossip_bootstrap(net.nodes[0].g, net.nodes[1].addr, net.now);
    h_run(&net, MM_MS(10));
    float a[N], b[N];
    memcpy(a, net.nodes[0].x, sizeof a);
    memcpy(b, net.nodes[1].x, sizeof b);
    net.tamper = flip_one;
    tamper_at = 1500;
    mm_gossip_average_now(net.nodes[0].g, net.now);
    h_run(&net, net.now + MM_SEC(1));
    assert_int_equal(h_count_logs(&net.nodes[0], MM_LOG_EXCHANGE, 0, NULL), 1);
    assert_true(h_count_logs(&net.nodes[0], MM_LOG_REFUSED, -1, "authentication") >= 1);
    assert_memory_equal(net.nodes[0].x, a, sizeof a); /* bit-identical */
    assert_memory_equal(net.nodes[1].x, b, sizeof b);
    h_free_net(&net);
    assert_int_equal(net.allocs, net.frees);
}

/* A poisoned peer: node 1 (the initiator) changes its lent snapshot after
 * the core checked it, so what it streams holds a NaN or an infinity. */
static float poison_value;
static size_t poison_at;
static void poison(h_net *net, int node, float *snap)
{
    (void)net;
    (void)node;
    snap[poison_at] = poison_value;
}

static void test_nonfinite_refused(void **state)
{
    (void)state;
    const float bad[] = {NAN, INFINITY, -INFINITY};
    const size_t where[] = {0, N / 2, N - 1};
    for (int v = 0; v < 3; v++)
        for (int w = 0; w < 3; w++) {
            h_net net;
            two_nodes(&net, MM_ENC_F32);
            mm_gossip_bootstrap(net.nodes[0].g, net.nodes[1].addr, net.now);
            h_run(&net, MM_MS(10));
            float a[N];
            memcpy(a, net.nodes[0].x, sizeof a);
            poison_value = bad[v];
            poison_at = where[w];
            net.nodes[1].after_snapshot = poison;
            assert_int_equal(mm_gossip_average_now(net.nodes[1].g, net.now), 0);
            h_run(&net, net.now + MM_SEC(1));
            assert_int_equal(net.nodes[0].merges, 0);
            assert_int_equal(net.nodes[1].merges, 0); /* aborted on both sides */
            assert_true(h_count_logs(&net.nodes[0], MM_LOG_EXCHANGE, 0, "non-finite") == 1);
            assert_memory_equal(net.nodes[0].x, a, sizeof a);
            h_free_net(&net);
        }
}

/* Our own snapshot is not finite: no exchange starts, an error is reported. */
static void test_own_nonfinite(void **state)
{
    (void)state;
    h_net net;
    two_nodes(&net, MM_ENC_F32);
    mm_gossip_bootstrap(net.nodes[0].g, net.nodes[1].addr, net.now);
    h_run(&net, MM_MS(10));
    net.nodes[0].x[3] = NAN;
    mm_gossip_average_now(net.nodes[0].g, net.now);
    h_run(&net, net.now + MM_SEC(1));
    assert_int_equal(net.nodes[1].merges, 0);
    assert_true(h_count_logs(&net.nodes[0], MM_LOG_INFO, -1, "not finite") == 1);
    h_free_net(&net);
}

/* Reads re-split into 1-byte pieces give the same result. */
static void test_one_byte_reads(void **state)
{
    (void)state;
    h_net net1, net2;
    two_nodes(&net1, MM_ENC_F32);
    two_nodes(&net2, MM_ENC_F32);
    net2.split = 1;
    connect_and_average(&net1);
    connect_and_average(&net2);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(net2.nodes[i].merges, 1);
        assert_memory_equal(net1.nodes[i].x, net2.nodes[i].x, N * sizeof(float));
    }
    h_free_net(&net1);
    h_free_net(&net2);
}

/* Fail the i-th allocation for every i over a complete exchange: never a
 * crash, never a leak, and either a full exchange or none. */
static void test_allocation_failure_sweep(void **state)
{
    (void)state;
    h_net probe;
    two_nodes(&probe, MM_ENC_F32);
    connect_and_average(&probe);
    long total = probe.allocs;
    h_free_net(&probe);
    assert_true(total > 5);
    for (long i = 1; i <= total + 2; i++) {
        h_net net;
        net_init(&net, N);
        net.fail_at = i;
        int ok_nodes = 0;
        for (int k = 0; k < 2; k++) {
            mm_gossip_config c = h_config(k, netkey, N, 0xab);
            c.tensors = tensors;
            c.ntensors = 3;
            ok_nodes += h_add_node(&net, &c, 100 + (uint64_t)k) >= 0;
        }
        if (ok_nodes == 2) {
            float a[N], b[N];
            for (size_t k = 0; k < N; k++) {
                net.nodes[0].x[k] = a[k] = (float)k;
                net.nodes[1].x[k] = b[k] = -(float)k;
            }
            mm_gossip_bootstrap(net.nodes[0].g, net.nodes[1].addr, net.now);
            h_run(&net, MM_MS(10));
            mm_gossip_average_now(net.nodes[0].g, net.now);
            h_run(&net, MM_SEC(100));
            for (int k = 0; k < 2; k++) {
                const float *mine = k ? b : a;
                if (net.nodes[k].merges == 0)
                    assert_memory_equal(net.nodes[k].x, mine, sizeof a);
                else
                    for (size_t j = 0; j < N; j++) assert_true(net.nodes[k].x[j] == 0.0f);
            }
        }
        h_free_net(&net);
        assert_int_equal(net.allocs, net.frees);
    }
}

/* State sync: a newcomer takes the coordinate-wise median of 3 sources. */
static void test_state_sync_median(void **state)
{
    (void)state;
    h_net net;
    net_init(&net, N);
    for (int i = 0; i < 4; i++) {
        mm_gossip_config c = h_config(i, netkey, N, 0xab);
        h_add_node(&net, &c, 10 + (uint64_t)i);
    }
    for (size_t k = 0; k < N; k++) {
        net.nodes[1].x[k] = 1.0f;
        net.nodes[2].x[k] = 1.5f;
        net.nodes[3].x[k] = 1e6f; /* poisoned */
    }
    for (int i = 1; i < 4; i++) mm_gossip_bootstrap(net.nodes[0].g, net.nodes[i].addr, net.now);
    h_run(&net, MM_MS(10));
    mm_gossip_request_sync(net.nodes[0].g, net.now);
    h_run(&net, net.now + MM_SEC(1));
    assert_int_equal(net.nodes[0].syncs, 1);
    assert_int_equal(h_count_logs(&net.nodes[0], MM_LOG_SYNCED, -1, "median"), 1);
    for (size_t k = 0; k < N; k++) assert_true(net.nodes[0].x[k] == 1.5f);
    h_free_net(&net);
    assert_int_equal(net.allocs, net.frees);
}

/* A newcomer that wants to sync but reaches nobody waits quietly: its
 * deadline never stays in the past (h_free_net checks). */
static void test_sync_without_peers(void **state)
{
    (void)state;
    h_net net;
    net_init(&net, 64);
    mm_gossip_config c = h_config(0, netkey, 64, 0xab);
    h_add_node(&net, &c, 5);
    mm_gossip_bootstrap(net.nodes[0].g, "127.0.0.1:1", net.now); /* nobody there */
    mm_gossip_request_sync(net.nodes[0].g, net.now);
    h_run(&net, MM_SEC(30));
    assert_int_equal(net.nodes[0].syncs, 0);
    h_free_net(&net);
}

/* Raw bytes straight into a core, as from a hostile peer: returns the
 * connection id the core gave the "peer" (accepted inbound). */
static mm_conn_id raw_accept(h_net *net, int node)
{
    return mm_gossip_accepted(net->nodes[node].g, "10.9.9.9:4000", net->now);
}

/* Whether node's core asked to close connection c (and drain the rest). */
static bool closed_by_core(h_net *net, int node, mm_conn_id c)
{
    mm_action a;
    bool closed = false;
    while (mm_gossip_next(net->nodes[node].g, &a))
        if (a.kind == MM_ACT_CLOSE && a.conn == c) closed = true;
    return closed;
}

/* H8: dialling our own address ends in a refusal, never a session. */
static void test_connect_to_self(void **state)
{
    (void)state;
    h_net net;
    net_init(&net, 64);
    mm_gossip_config c = h_config(0, netkey, 64, 0xab);
    h_add_node(&net, &c, 3);
    mm_gossip_bootstrap(net.nodes[0].g, net.nodes[0].addr, net.now);
    h_run(&net, MM_SEC(2));
    assert_true(h_count_logs(&net.nodes[0], MM_LOG_REFUSED, -1, "ourselves") >= 1);
    mm_gossip_stats st;
    mm_gossip_get_stats(net.nodes[0].g, &st);
    assert_int_equal(st.view, 0);
    h_free_net(&net);
}

/* O3: a first handshake message that is not 48 bytes, or one over the
 * limit, closes the connection; nothing is sent back. */
static void test_handshake_lengths(void **state)
{
    (void)state;
    const size_t lens[] = {47, 49, 1025, 0};
    for (int i = 0; i < 4; i++) {
        h_net net;
        net_init(&net, 64);
        mm_gossip_config c = h_config(0, netkey, 64, 0xab);
        h_add_node(&net, &c, 3);
        mm_conn_id id = raw_accept(&net, 0);
        assert_true(id != 0);
        uint8_t msg[2 + 1100];
        memset(msg, 0x41, sizeof msg);
        msg[0] = (uint8_t)(lens[i] >> 8);
        msg[1] = (uint8_t)lens[i];
        mm_gossip_received(net.nodes[0].g, id, msg, 2 + (lens[i] < 1100 ? lens[i] : 1100), net.now);
        assert_true(closed_by_core(&net, 0, id));
        h_free_net(&net);
    }
}

/* L1: a connection that never completes its handshake is closed at the
 * deadline, and its slot is freed. */
static void test_silent_connection_times_out(void **state)
{
    (void)state;
    h_net net;
    net_init(&net, 64);
    mm_gossip_config c = h_config(0, netkey, 64, 0xab);
    h_add_node(&net, &c, 3);
    mm_conn_id id = raw_accept(&net, 0);
    uint8_t one = 0;
    mm_gossip_received(net.nodes[0].g, id, &one, 1, net.now); /* 1 byte, then silence */
    assert_false(closed_by_core(&net, 0, id));
    net.now += MM_HS_DEADLINE - 1;
    mm_gossip_tick(net.nodes[0].g, net.now);
    assert_false(closed_by_core(&net, 0, id));
    net.now += 2;
    mm_gossip_tick(net.nodes[0].g, net.now);
    assert_true(closed_by_core(&net, 0, id));
    mm_gossip_closed(net.nodes[0].g, id, net.now);
    mm_gossip_stats st;
    mm_gossip_get_stats(net.nodes[0].g, &st);
    assert_int_equal(st.half_open, 0);
    h_free_net(&net);
}

/* Y1: a captured msg1 replayed on a new connection is dropped by the cache
 * before any public-key work, and the responder says nothing. */
static void test_replayed_msg1(void **state)
{
    (void)state;
    h_net net;
    net_init(&net, 64);
    mm_gossip_config c0 = h_config(0, netkey, 64, 0xab), c1 = h_config(1, netkey, 64, 0xab);
    h_add_node(&net, &c0, 1);
    h_add_node(&net, &c1, 2);
    /* node 0 dials; capture its msg1 instead of delivering it */
    mm_gossip_bootstrap(net.nodes[0].g, "10.0.0.1:1", net.now);
    mm_action a;
    mm_conn_id out = 0;
    while (mm_gossip_next(net.nodes[0].g, &a))
        if (a.kind == MM_ACT_CONNECT) out = a.conn;
    mm_gossip_connected(net.nodes[0].g, out, net.now);
    uint8_t msg1[64];
    size_t len = 0;
    while (mm_gossip_next(net.nodes[0].g, &a))
        if (a.kind == MM_ACT_SEND && a.len <= sizeof msg1) memcpy(msg1, a.data, len = a.len);
    assert_int_equal(len, 2 + MM_HS_MSG1_LEN);
    /* first delivery: node 1 answers with msg2 */
    mm_conn_id c1st = raw_accept(&net, 1);
    mm_gossip_received(net.nodes[1].g, c1st, msg1, len, net.now);
    bool answered = false;
    while (mm_gossip_next(net.nodes[1].g, &a)) answered |= a.kind == MM_ACT_SEND && a.conn == c1st;
    assert_true(answered);
    /* the replay: refused, silently */
    mm_conn_id c2nd = raw_accept(&net, 1);
    mm_gossip_received(net.nodes[1].g, c2nd, msg1, len, net.now + MM_SEC(1));
    bool sent = false, closed = false;
    while (mm_gossip_next(net.nodes[1].g, &a)) {
        sent |= a.kind == MM_ACT_SEND && a.conn == c2nd;
        closed |= a.kind == MM_ACT_CLOSE && a.conn == c2nd;
    }
    assert_false(sent);
    assert_true(closed);
    mm_gossip_closed(net.nodes[1].g, c2nd, net.now + MM_SEC(1));
    /* After MM_HS_REPLAY_WINDOW the cache has forgotten it: the responder
     * answers again, but no one holds the ephemeral secret to finish the
     * handshake, so it ends at the handshake deadline, with no session. */
    net.now += MM_HS_REPLAY_WINDOW + MM_SEC(2);
    mm_gossip_tick(net.nodes[1].g, net.now);
    while (mm_gossip_next(net.nodes[1].g, &a))
        if (a.kind == MM_ACT_CLOSE) mm_gossip_closed(net.nodes[1].g, a.conn, net.now);
    mm_conn_id c3rd = raw_accept(&net, 1);
    assert_true(c3rd != 0);
    mm_gossip_received(net.nodes[1].g, c3rd, msg1, len, net.now);
    answered = false;
    while (mm_gossip_next(net.nodes[1].g, &a)) answered |= a.kind == MM_ACT_SEND && a.conn == c3rd;
    assert_true(answered);
    net.now += MM_HS_DEADLINE + MM_SEC(1);
    mm_gossip_tick(net.nodes[1].g, net.now);
    closed = false;
    while (mm_gossip_next(net.nodes[1].g, &a)) closed |= a.kind == MM_ACT_CLOSE && a.conn == c3rd;
    assert_true(closed);
    mm_gossip_stats st;
    mm_gossip_get_stats(net.nodes[1].g, &st);
    assert_int_equal(st.sessions, 0);
    assert_int_equal(st.handshakes_ok, 0);
    h_free_net(&net);
}

/* H5: with an allowlist, a node that holds the network key but is not on
 * the list is refused at msg3; no session on either side. */
static void test_allowlist(void **state)
{
    (void)state;
    h_net net;
    net_init(&net, 64);
    mm_gossip_config c0 = h_config(0, netkey, 64, 0xab), c1 = h_config(1, netkey, 64, 0xab);
    static uint8_t allowed[1][32];
    memcpy(allowed[0], c1.identity_sk + 32, 32); /* only node 1 itself */
    c1.allowlist = (const uint8_t(*)[32])allowed;
    c1.nallow = 1;
    h_add_node(&net, &c0, 1);
    h_add_node(&net, &c1, 2);
    mm_gossip_bootstrap(net.nodes[0].g, net.nodes[1].addr, net.now);
    h_run(&net, MM_SEC(2));
    assert_true(h_count_logs(&net.nodes[1], MM_LOG_REFUSED, -1, "allowlist") >= 1);
    for (int i = 0; i < 2; i++) {
        mm_gossip_stats st;
        mm_gossip_get_stats(net.nodes[i].g, &st);
        assert_int_equal(st.view, 0);
        assert_int_equal(h_count_logs(&net.nodes[i], MM_LOG_PEER_UP, -1, NULL), 0);
    }
    h_free_net(&net);
}

/* H4: dialling a known peer and reaching another identity at its address
 * aborts after msg2: msg3 (with our identity) is never sent. */
static void test_wrong_identity_at_address(void **state)
{
    (void)state;
    h_net net;
    net_init(&net, 64);
    mm_gossip_config c0 = h_config(0, netkey, 64, 0xab), c1 = h_config(1, netkey, 64, 0xab);
    h_add_node(&net, &c0, 1);
    h_add_node(&net, &c1, 2);
    mm_gossip_bootstrap(net.nodes[0].g, net.nodes[1].addr, net.now);
    h_run(&net, MM_SEC(1));
    /* node 1 vanishes; node 2, another identity, takes its address */
    h_crash(&net, 1);
    mm_gossip_config c2 = h_config(2, netkey, 64, 0xab);
    snprintf(c2.advertise, sizeof c2.advertise, "%s", net.nodes[1].addr);
    h_add_node(&net, &c2, 3);
    h_run(&net, net.now + MM_SEC(8)); /* node 0 probes the suspect peer at its address */
    assert_true(h_count_logs(&net.nodes[0], MM_LOG_REFUSED, -1, "different identity") >= 1);
    assert_int_equal(h_count_logs(&net.nodes[2], MM_LOG_PEER_UP, -1, NULL), 0); /* never learned who dialled */
    net.nodes[1].down = false;
    h_free_net(&net);
}

/* Membership: 6 nodes join through node 0; shuffles spread the records. */
static void test_membership_and_leave(void **state)
{
    (void)state;
    h_net net;
    net_init(&net, 64);
    h_star(&net, netkey, 6, 64, 50);
    h_run(&net, MM_SEC(60));
    for (int i = 0; i < 6; i++) {
        mm_gossip_stats s;
        mm_gossip_get_stats(net.nodes[i].g, &s);
        assert_true(s.view >= 4); /* knows most of the others, not only the bootstrap node */
    }
    /* Node 5 leaves gracefully: whoever has a session learns it at once. */
    mm_gossip_leave(net.nodes[5].g, net.now);
    h_run(&net, net.now + MM_MS(100));
    int told = 0;
    for (int i = 0; i < 5; i++) told += h_count_logs(&net.nodes[i], MM_LOG_PEER_DOWN, -1, "left") > 0;
    assert_true(told >= 1);
    h_free_net(&net);
}

/* A crashed peer is suspected by its own failed probes, then dropped. */
static void test_crash_detected(void **state)
{
    (void)state;
    h_net net;
    net_init(&net, 64);
    h_star(&net, netkey, 3, 64, 70);
    h_run(&net, MM_SEC(30));
    h_crash(&net, 2);
    h_run(&net, net.now + MM_SEC(60));
    assert_true(h_count_logs(&net.nodes[0], MM_LOG_PEER_DOWN, -1, "dead") >= 1);
    mm_gossip_stats s;
    mm_gossip_get_stats(net.nodes[0].g, &s);
    assert_int_equal(s.view, 1);
    net.nodes[2].down = false;
    h_free_net(&net);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_handshake_and_exchange),
        cmocka_unit_test(test_simultaneous_requests),
        cmocka_unit_test(test_delta_rule),
        cmocka_unit_test(test_encodings),
        cmocka_unit_test(test_parallel_sealing),
        cmocka_unit_test(test_wrong_network_key),
        cmocka_unit_test(test_different_model),
        cmocka_unit_test(test_tamper_aborts_and_changes_nothing),
        cmocka_unit_test(test_nonfinite_refused),
        cmocka_unit_test(test_own_nonfinite),
        cmocka_unit_test(test_one_byte_reads),
        cmocka_unit_test(test_allocation_failure_sweep),
        cmocka_unit_test(test_state_sync_median),
        cmocka_unit_test(test_sync_without_peers),
        cmocka_unit_test(test_connect_to_self),
        cmocka_unit_test(test_handshake_lengths),
        cmocka_unit_test(test_silent_connection_times_out),
        cmocka_unit_test(test_replayed_msg1),
        cmocka_unit_test(test_allowlist),
        cmocka_unit_test(test_wrong_identity_at_address),
        cmocka_unit_test(test_membership_and_leave),
        cmocka_unit_test(test_crash_detected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
