/* Admission and session renewal, against whole gossip cores in memory with
 * virtual time (SECURITY.md §2.2, §2.3, §2.5):
 *  - H11: the network key ring and its rotation ({A} -> {A,B} -> {B,A} -> {B});
 *  - L2: per-address half-open and handshake-rate limits, the global half-open
 *    cap (inbound only), loopback;
 *  - session lifetime: a session older than MM_SESSION_LIFETIME is closed
 *    gracefully and handshaken again;
 *  - L7: the outbound reserve (25 % of MM_MAX_CONNS for our own dials).
 * The L7 test needs ~45 cores, so this file asks the harness for more nodes
 * and keeps its h_net on the heap. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka.h needs the headers above first. */
#include <cmocka.h>
#include <math.h>

#define H_MAX_NODES 48
#define H_MAX_LINKS 128
#include "gossip_harness.h"

#define DIM 64

static const uint8_t key_a[32] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16,
                                  17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};
static const uint8_t key_b[32] = {0xb0, 0xb1, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba,
                                  0xbb, 0xbc, 0xbd, 0xbe, 0xbf, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5,
                                  0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xcb, 0xcc, 0xcd, 0xce, 0xcf};

static h_net *net_new(size_t n)
{
    h_net *net = calloc(1, sizeof *net);
    assert_non_null(net);
    net->n = n;
    net->verbose = getenv("MM_VERBOSE") != NULL;
    return net;
}

static void net_done(h_net *net)
{
    h_free_net(net);
    assert_int_equal(net->allocs, net->frees);
    free(net);
}

/* An inbound connection from `from` that sends nothing: the harness plays its
 * socket (it reports the close once the core closes it). Returns whether accepted. */
static bool raw_accept(h_net *net, int node, const char *from)
{
    mm_conn_id c = mm_gossip_accepted(net->nodes[node].g, from, net->now);
    if (c) assert_non_null(h_raw_link(net, node, c));
    return c != 0;
}

static mm_gossip_stats stats(h_net *net, int i)
{
    mm_gossip_stats s;
    mm_gossip_get_stats(net->nodes[i].g, &s);
    return s;
}

/* ------------------------------------------------------------ H11: key ring */

/* The stages of a rotation from A to B: {A}, {A,B}, {B,A}, {B} (primary first). */
enum { RING_A, RING_AB, RING_BA, RING_B, NRINGS };

/* network_id of key A, which every stage keeps (pinned once A is no longer the primary). */
static void nid_of_a(uint8_t nid[32])
{
    crypto_generichash(nid, 32, (const uint8_t *)"murmur-net-v1", 13, key_a, 32);
}

static void set_ring(mm_gossip_config *c, int ring, bool pin)
{
    const uint8_t *primary = ring == RING_A || ring == RING_AB ? key_a : key_b;
    memcpy(c->network_key, primary, 32);
    c->nkeys_more = 0;
    if (ring == RING_AB) memcpy(c->network_keys_more[c->nkeys_more++], key_b, 32);
    if (ring == RING_BA) memcpy(c->network_keys_more[c->nkeys_more++], key_a, 32);
    if (pin) {
        c->network_id_set = true;
        nid_of_a(c->network_id);
    }
}

/* Node `from` (ring rf) dials node `to` (ring rt): whether a session comes up. */
static bool dial_works(int rf, int rt, bool pin)
{
    h_net *net = net_new(DIM);
    for (int i = 0; i < 2; i++) {
        mm_gossip_config c = h_config(i, key_a, DIM, 0xab);
        set_ring(&c, i == 0 ? rf : rt, pin);
        assert_true(h_add_node(net, &c, 100 + (uint64_t)i) >= 0);
    }
    assert_int_equal(mm_gossip_bootstrap(net->nodes[0].g, net->nodes[1].addr, net->now), 0);
    h_run(net, MM_MS(100));
    bool up = stats(net, 0).sessions == 1 && stats(net, 1).sessions == 1 &&
              h_count_logs(&net->nodes[0], MM_LOG_PEER_UP, -1, NULL) == 1;
    if (!up) /* refused at msg1 by the responder, which sent nothing */
        assert_int_equal(h_count_logs(&net->nodes[1], MM_LOG_REFUSED, -1, "does not hold our network key"), 1);
    net_done(net);
    return up;
}

/* H11 (U part): who connects to whom across the stages of a rotation. The
 * initiator dials with its primary; the responder tries every key of its ring. */
static void test_h11_keyring_matrix(void **state)
{
    (void)state;
    static const char *names[NRINGS] = {"{A}", "{A,B}", "{B,A}", "{B}"};
    /* want[i][j]: i's primary is in j's ring */
    static const bool want[NRINGS][NRINGS] = {
        {true, true, true, false}, /* {A} dials with A */
        {true, true, true, false}, /* {A,B} dials with A */
        {false, true, true, true}, /* {B,A} dials with B */
        {false, true, true, true}, /* {B} dials with B */
    };
    for (int i = 0; i < NRINGS; i++)
        for (int j = 0; j < NRINGS; j++) {
            bool got = dial_works(i, j, true);
            if (got != want[i][j]) fail_msg("%s dialling %s: session %s", names[i], names[j], got ? "up" : "refused");
        }
    /* Stages one apart connect both ways; {A} and {B} never. */
    for (int i = 0; i + 1 < NRINGS; i++) assert_true(want[i][i + 1] && want[i + 1][i]);
    /* Without a pinned network_id, a node whose primary is B has another
     * network_id (prologue): even {B,A} -> {A,B} fails. */
    assert_false(dial_works(RING_BA, RING_AB, false));
    /* A ring of more than MM_NETKEYS_MAX keys is refused. */
    h_net *net = net_new(DIM);
    mm_gossip_config c = h_config(0, key_a, DIM, 0xab);
    c.nkeys_more = MM_NETKEYS_MAX;
    assert_int_equal(h_add_node(net, &c, 1), -1);
    net->nnodes = 0;
    free(net->nodes[0].x);
    net_done(net);
}

/* The components of the graph of open sessions among live nodes: 1 if connected. */
static int session_components(h_net *net)
{
    int comp[H_MAX_NODES];
    for (int i = 0; i < net->nnodes; i++) comp[i] = i;
    for (int i = 0; i < net->nnodes; i++) {
        if (net->nodes[i].down) continue;
        mm_gossip_peer_info info[MM_VIEW_SIZE];
        uint32_t n = mm_gossip_peers(net->nodes[i].g, info, MM_VIEW_SIZE);
        for (uint32_t k = 0; k < n; k++) {
            if (!info[k].session) continue;
            for (int j = 0; j < net->nnodes; j++)
                if (!net->nodes[j].down && memcmp(mm_gossip_id(net->nodes[j].g), info[k].id, 32) == 0) {
                    int a = comp[i], b = comp[j];
                    for (int m = 0; m < net->nnodes; m++)
                        if (comp[m] == b) comp[m] = a;
                }
        }
    }
    int n = 0;
    for (int i = 0; i < net->nnodes; i++) {
        if (net->nodes[i].down) continue;
        bool first = true;
        for (int j = 0; j < i; j++)
            if (!net->nodes[j].down && comp[j] == comp[i]) first = false;
        n += first;
    }
    return n;
}

static double spread(h_net *net)
{
    double lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i < net->nnodes; i++) {
        if (net->nodes[i].down) continue;
        lo = fmin(lo, net->nodes[i].x[0]);
        hi = fmax(hi, net->nodes[i].x[0]);
    }
    return hi - lo;
}

/* H11 (several cores through every stage; the simulator has one key per run):
 * 5 nodes averaging every second; each stage restarts them one at a time with
 * the next ring (a rolling restart). After every restart the sessions form
 * one component, no handshake is refused for the key, and the averaging goes
 * on: at the end every node holds the mean. */
static void test_h11_rotation_rolling(void **state)
{
    (void)state;
    enum { NN = 5 };
    h_net *net = net_new(DIM);
    int at[NN]; /* the harness index of each logical node's current incarnation */
    double sum = 0;
    for (int i = 0; i < NN; i++) {
        mm_gossip_config c = h_config(i, key_a, DIM, 0xab);
        set_ring(&c, RING_A, false); /* stage 0: nodes as they were, network_id from A */
        c.exchange_period = MM_SEC(1);
        at[i] = h_add_node(net, &c, 7 + (uint64_t)i);
        for (size_t k = 0; k < DIM; k++) net->nodes[at[i]].x[k] = (float)(10 * i);
        sum += 10.0 * i;
    }
    for (int i = 1; i < NN; i++) mm_gossip_bootstrap(net->nodes[at[i]].g, net->nodes[at[0]].addr, net->now);
    h_run(net, MM_SEC(10));
    assert_int_equal(session_components(net), 1);
    for (int stage = RING_AB; stage <= RING_B; stage++)
        for (int i = 0; i < NN; i++) {
            /* restart node i with the next ring, keeping its parameters */
            float x0 = net->nodes[at[i]].x[0];
            h_crash(net, at[i]);
            mm_gossip_config c = h_config(i, key_a, DIM, 0xab);
            set_ring(&c, stage, true); /* pinned: the operator passes --network-id */
            c.exchange_period = MM_SEC(1);
            c.incarnation = 1 + (uint64_t)stage;
            at[i] = h_add_node(net, &c, 1000 + 10 * (uint64_t)stage + (uint64_t)i);
            assert_true(at[i] >= 0);
            for (size_t k = 0; k < DIM; k++) net->nodes[at[i]].x[k] = x0;
            mm_gossip_bootstrap(net->nodes[at[i]].g, net->nodes[at[(i + 1) % NN]].addr, net->now);
            h_run(net, net->now + MM_SEC(8));
            if (session_components(net) != 1)
                fail_msg("stage %d, node %d restarted: the sessions form %d components", stage, i,
                         session_components(net));
        }
    for (int i = 0; i < net->nnodes; i++)
        if (h_count_logs(&net->nodes[i], MM_LOG_REFUSED, -1, "network key") != 0)
            fail_msg("node %d refused a handshake for its key during the rotation", i);
    h_run(net, net->now + MM_SEC(20));
    (void)sum;
    assert_true(spread(net) < 1e-3);
    for (int i = 0; i < NN; i++) assert_true(stats(net, at[i]).exchanges_ok > 0);
    net_done(net);
}

/* ------------------------------------------------------------ L2: per-address limits */

static h_net *lone_node(const char *addr)
{
    h_net *net = net_new(DIM);
    mm_gossip_config c = h_config(0, key_a, DIM, 0xab);
    snprintf(c.advertise, sizeof c.advertise, "%s", addr);
    assert_int_equal(h_add_node(net, &c, 3), 0);
    return net;
}

static int honest_peer(h_net *net, const char *addr)
{
    mm_gossip_config c = h_config(net->nnodes, key_a, DIM, 0xab);
    snprintf(c.advertise, sizeof c.advertise, "%s", addr);
    return h_add_node(net, &c, 50 + (uint64_t)net->nnodes);
}

/* L2 (U): 1000 connections from one address at once: 4 half-open, the rest
 * refused at accept; an honest node still gets in. */
static void test_l2_one_address(void **state)
{
    (void)state;
    h_net *net = lone_node("10.0.0.1:7000");
    int ok = 0;
    for (int i = 0; i < 1000; i++) {
        char from[32];
        snprintf(from, sizeof from, "10.66.6.6:%d", 20000 + i);
        ok += raw_accept(net, 0, from);
    }
    h_run(net, net->now);
    assert_int_equal(ok, MM_HALF_OPEN_PER_IP);
    assert_int_equal(stats(net, 0).half_open, MM_HALF_OPEN_PER_IP);
    assert_int_equal(stats(net, 0).refused, 1000 - MM_HALF_OPEN_PER_IP);
    /* logged once (with a count), not 996 times */
    assert_int_equal(h_count_logs(&net->nodes[0], MM_LOG_REFUSED, -1, "from this address"), 1);
    int p = honest_peer(net, "10.0.1.2:7001");
    assert_int_equal(mm_gossip_bootstrap(net->nodes[p].g, net->nodes[0].addr, net->now), 0);
    h_run(net, net->now + MM_MS(50));
    assert_int_equal(stats(net, p).sessions, 1);
    /* The half-open ones time out and free their slots. */
    h_run(net, net->now + MM_HS_DEADLINE + MM_SEC(1));
    assert_int_equal(stats(net, 0).half_open, 0);
    net_done(net);
}

/* L2 (U): the handshake rate per address: a burst of 5, then 20 per second,
 * even when every connection closes at once (so the half-open cap never binds). */
static void test_l2_handshake_rate(void **state)
{
    (void)state;
    h_net *net = lone_node("10.0.0.1:7000");
    mm_gossip *g = net->nodes[0].g;
    int burst = 0;
    for (int i = 0; i < 100; i++) {
        mm_conn_id c = mm_gossip_accepted(g, "10.66.6.6:1", net->now);
        if (c) burst++, mm_gossip_closed(g, c, net->now);
        h_run(net, net->now);
    }
    assert_int_equal(burst, MM_HS_BURST_PER_IP);
    int ok = 0;
    for (int t = 1; t <= 200; t++) { /* every 10 ms for 2 s */
        net->now += MM_MS(10);
        mm_conn_id c = mm_gossip_accepted(g, "10.66.6.6:1", net->now);
        if (c) ok++, mm_gossip_closed(g, c, net->now);
        h_run(net, net->now);
    }
    assert_true(ok >= 2 * MM_HS_RATE_PER_IP - 1 && ok <= 2 * MM_HS_RATE_PER_IP + 1);
    /* another address has its own bucket */
    mm_conn_id c = mm_gossip_accepted(g, "10.66.6.7:1", net->now);
    assert_true(c != 0);
    mm_gossip_closed(g, c, net->now);
    h_run(net, net->now);
    assert_true(h_count_logs(&net->nodes[0], MM_LOG_REFUSED, -1, "handshake rate of this address") >= 1);
    /* The bucket table grows with the sources seen, up to MM_IP_BUCKETS
     * entries (a few dozen bytes each): 5000 more addresses, then 5000 others,
     * and the second 5000 allocate nothing lasting. */
    h_run(net, net->now);
    size_t live = net->live_bytes, after_first = 0;
    for (int i = 0; i < 10000; i++) {
        char from[32];
        snprintf(from, sizeof from, "10.%d.%d.9:1", 100 + i / 250, i % 250);
        mm_conn_id d = mm_gossip_accepted(g, from, net->now);
        if (d) mm_gossip_closed(g, d, net->now);
        h_run(net, net->now);
        net->now += MM_MS(1);
        if (i == 4999) after_first = net->live_bytes;
    }
    h_run(net, net->now);
    assert_true(after_first <= live + MM_IP_BUCKETS * 32);
    assert_true(net->live_bytes <= after_first);
    net_done(net);
}

/* L2 (U): 1000 connections from 1000 addresses: at most MM_MAX_HALF_OPEN; our
 * own dial is not counted against that cap and succeeds during the flood; an
 * honest inbound one succeeds once the flood's handshakes time out. */
static void test_l2_many_addresses(void **state)
{
    (void)state;
    h_net *net = lone_node("10.0.0.1:7000");
    int p = honest_peer(net, "10.0.1.2:7001");
    int ok = 0;
    for (int i = 0; i < 1000; i++) {
        char from[32];
        snprintf(from, sizeof from, "10.%d.%d.%d:4000", 50 + i / 200, (i / 20) % 10, i % 20);
        ok += raw_accept(net, 0, from);
    }
    assert_int_equal(ok, MM_MAX_HALF_OPEN);
    h_run(net, net->now);
    assert_int_equal(stats(net, 0).half_open, MM_MAX_HALF_OPEN);
    /* our dial during the flood */
    assert_int_equal(mm_gossip_bootstrap(net->nodes[0].g, net->nodes[p].addr, net->now), 0);
    h_run(net, net->now + MM_MS(50));
    assert_int_equal(stats(net, 0).sessions, 1);
    assert_int_equal(stats(net, 0).half_open, MM_MAX_HALF_OPEN);
    /* after the deadline: the flood is gone, an inbound honest dial works */
    h_run(net, net->now + MM_HS_DEADLINE + MM_SEC(1));
    assert_int_equal(stats(net, 0).half_open, 0);
    int q = honest_peer(net, "10.0.2.3:7002");
    assert_int_equal(mm_gossip_bootstrap(net->nodes[q].g, net->nodes[0].addr, net->now), 0);
    h_run(net, net->now + MM_MS(50));
    assert_int_equal(stats(net, q).sessions, 1);
    net_done(net);
}

/* Loopback (127/8): every node of a machine shares 127.0.0.1, so the limits
 * key on the whole address, port included: connections from distinct ports
 * are distinct sources (each real TCP connection), one address:port is one. */
static void test_l2_loopback(void **state)
{
    (void)state;
    h_net *net = lone_node("127.0.0.1:7000");
    int ok = 0;
    for (int i = 0; i < 40; i++) {
        char from[32];
        snprintf(from, sizeof from, "127.0.0.1:%d", 30000 + i);
        ok += raw_accept(net, 0, from);
    }
    assert_int_equal(ok, 40);
    ok = 0;
    for (int i = 0; i < 40; i++) ok += raw_accept(net, 0, "127.0.0.1:5555");
    assert_int_equal(ok, MM_HALF_OPEN_PER_IP);
    h_run(net, net->now + MM_HS_DEADLINE + MM_SEC(1));
    assert_int_equal(stats(net, 0).half_open, 0);
    net_done(net);
}

/* ------------------------------------------------------------ prefixes */

/* §2.5: at most MM_CONNS_PER_PREFIX connections per IPv4 /24 or IPv6 /48,
 * whichever the hosts in it (each /32 or /64 under its own half-open cap);
 * other prefixes are unaffected; the cap is a setting. */
static void test_conns_per_prefix(void **state)
{
    (void)state;
    for (int raised = 0; raised < 2; raised++) {
        h_net *net = net_new(DIM);
        mm_gossip_config c = h_config(0, key_a, DIM, 0xab);
        snprintf(c.advertise, sizeof c.advertise, "10.0.0.1:7000");
        if (raised) c.conns_per_prefix = 12;
        assert_int_equal(h_add_node(net, &c, 3), 0);
        int cap = raised ? 12 : MM_CONNS_PER_PREFIX, ok4 = 0, ok6 = 0;
        for (int i = 1; i <= 20; i++) {
            char from[48];
            snprintf(from, sizeof from, "10.77.1.%d:4000", i);
            ok4 += raw_accept(net, 0, from);
        }
        h_run(net, net->now);
        assert_int_equal(ok4, cap);
        assert_int_equal(h_count_logs(&net->nodes[0], MM_LOG_REFUSED, -1, "connections from 10.77.1.0/24 already"), 1);
        net->now += MM_SEC(2); /* refusals are logged once a second */
        for (int i = 1; i <= 20; i++) {
            char from[48];
            snprintf(from, sizeof from, "[2001:db8:77:%x::1]:4000", i); /* 20 /64s of one /48 */
            ok6 += raw_accept(net, 0, from);
        }
        h_run(net, net->now);
        assert_int_equal(ok6, cap);
        assert_int_equal(h_count_logs(&net->nodes[0], MM_LOG_REFUSED, -1, "from 2001:db8:77::/48 already"), 1);
        net->now += MM_SEC(1); /* 3 s: the half-open ones are still there (MM_HS_DEADLINE) */
        assert_true(raw_accept(net, 0, "10.77.2.1:4000"));
        assert_true(raw_accept(net, 0, "[2001:db8:78::1]:4000"));
        assert_true(raw_accept(net, 0, "[::ffff:10.77.3.1]:4000"));
        assert_false(raw_accept(net, 0, "[::ffff:10.77.1.99]:4000")); /* mapped: the same /24 */
        /* an honest node of a full prefix is refused too; it is let in once
         * the idle connections of its prefix time out */
        int p = honest_peer(net, "10.77.1.200:7001");
        assert_int_equal(mm_gossip_bootstrap(net->nodes[p].g, net->nodes[0].addr, net->now), 0);
        h_run(net, net->now + MM_MS(50));
        assert_int_equal(stats(net, p).sessions, 0);
        h_run(net, net->now + MM_HS_DEADLINE + MM_SEC(1));
        assert_int_equal(stats(net, 0).half_open, 0);
        assert_int_equal(mm_gossip_bootstrap(net->nodes[p].g, net->nodes[0].addr, net->now), 0);
        h_run(net, net->now + MM_MS(50));
        assert_int_equal(stats(net, p).sessions, 1);
        net_done(net);
    }
}

/* §2.5: the half-open cap per source covers an IPv6 /64, not one address
 * (a host picks any of its 2^64). */
static void test_l2_ipv6_source(void **state)
{
    (void)state;
    h_net *net = lone_node("[2001:db8::1]:7000");
    int ok = 0;
    for (int i = 1; i <= 30; i++) {
        char from[48];
        snprintf(from, sizeof from, "[2001:db8:5:6:%x::%x]:4000", i, i * 7);
        ok += raw_accept(net, 0, from);
    }
    assert_int_equal(ok, MM_HALF_OPEN_PER_IP);
    assert_true(raw_accept(net, 0, "[2001:db8:5:7::1]:4000")); /* the next /64 */
    h_run(net, net->now + MM_HS_DEADLINE + MM_SEC(1));
    assert_int_equal(stats(net, 0).half_open, 0);
    net_done(net);
}

/* §2.6 (the core's part of S1): at most MM_VIEW_PER_PREFIX view entries per
 * /24 or /48, however many members of it dial us and shuffle; other
 * prefixes and loopback are not capped; the cap is a setting. */
static void test_view_per_prefix(void **state)
{
    (void)state;
    for (int raised = 0; raised < 2; raised++) {
        h_net *net = net_new(DIM);
        mm_gossip_config c = h_config(0, key_a, DIM, 0xab);
        snprintf(c.advertise, sizeof c.advertise, "10.0.0.1:7000");
        if (raised) c.view_per_prefix = 6;
        assert_int_equal(h_add_node(net, &c, 3), 0);
        for (int f = 0; f < 3; f++) /* 5 in one /24, 5 in one /48, 5 in five /24s */
            for (int i = 1; i <= 5; i++) {
                char a[48];
                if (f == 0) snprintf(a, sizeof a, "10.9.9.%d:7000", i);
                if (f == 1) snprintf(a, sizeof a, "[2001:db8:9:%x::1]:7000", i);
                if (f == 2) snprintf(a, sizeof a, "10.%d.1.1:7000", 20 + i);
                int p = honest_peer(net, a);
                assert_true(p > 0);
                assert_int_equal(mm_gossip_bootstrap(net->nodes[p].g, net->nodes[0].addr, net->now), 0);
            }
        h_run(net, net->now + MM_SEC(30)); /* joins, then shuffles spread the records */
        uint32_t per = raised ? 5 : MM_VIEW_PER_PREFIX;
        /* node 0: per from each capped prefix, all 5 of the distinct /24s */
        assert_int_equal(stats(net, 0).view, 2 * per + 5);
        for (int i = 1; i < (int)net->nnodes; i++) assert_true(stats(net, i).view <= 2 * per + 5 + 1);
        net_done(net);
    }
}

/* ------------------------------------------------------------ session lifetime */

/* Two nodes averaging every 10 s for 2.5 h: the session is handshaken again
 * at 1 h and 2 h, closed gracefully (CLOSE frame: no suspicion, nothing
 * "lost"), and the averaging goes on over the new sessions. */
static void test_session_lifetime(void **state)
{
    (void)state;
    h_net *net = net_new(DIM);
    for (int i = 0; i < 2; i++) {
        mm_gossip_config c = h_config(i, key_a, DIM, 0xab);
        c.exchange_period = MM_SEC(10);
        assert_int_equal(h_add_node(net, &c, 77 + (uint64_t)i), i);
        for (size_t k = 0; k < DIM; k++) net->nodes[i].x[k] = (float)i;
    }
    mm_gossip_bootstrap(net->nodes[0].g, net->nodes[1].addr, net->now);
    h_run(net, MM_SESSION_LIFETIME - MM_SEC(1));
    assert_int_equal(stats(net, 0).handshakes_ok, 1);
    uint64_t ex = stats(net, 0).exchanges_ok + stats(net, 1).exchanges_ok;
    assert_true(ex > 300); /* ~2 per 10 s */
    for (int i = 0; i < 2; i++) net->nodes[i].nlogs = 0; /* (the log buffer holds 256 lines) */
    h_run(net, MM_SESSION_LIFETIME + MM_SEC(15));
    /* both ends close it; both may dial again at once (the tie-break keeps one) */
    uint64_t hs1 = stats(net, 0).handshakes_ok;
    assert_true(hs1 >= 2 && hs1 <= 3);
    assert_int_equal(stats(net, 0).sessions, 1);
    assert_true(h_count_logs(&net->nodes[0], MM_LOG_INFO, -1, "to be handshaken again") +
                    h_count_logs(&net->nodes[1], MM_LOG_INFO, -1, "to be handshaken again") >= 1);
    h_run(net, 2 * MM_SESSION_LIFETIME + MM_SESSION_LIFETIME / 2);
    assert_true(stats(net, 0).handshakes_ok > hs1 && stats(net, 0).handshakes_ok <= hs1 + 2);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(h_count_logs(&net->nodes[i], MM_LOG_INFO, -1, "lost"), 0);
        assert_int_equal(h_count_logs(&net->nodes[i], MM_LOG_INFO, -1, "stopped answering"), 0);
        assert_int_equal(stats(net, i).exchanges_failed, 0);
        assert_int_equal(stats(net, i).sessions, 1);
    }
    assert_true(stats(net, 0).exchanges_ok + stats(net, 1).exchanges_ok > 2 * ex);
    net_done(net);
}

/* The snapshot of node 0's exchange is lent only after the 1 h mark: the
 * exchange runs across it. */
static void lend_late(h_net *net, int node, uint32_t xid)
{
    (void)xid;
    if (node != 0) return;
    net->nodes[0].on_snapshot = NULL;
    net->now = MM_SESSION_LIFETIME + MM_MS(5);
    mm_gossip_tick(net->nodes[0].g, net->now); /* the 1 h deadline, with the exchange running */
}

/* An exchange running at the 1 h mark is not cut: the session closes when it
 * ends, and the next exchange dials again. */
static void test_session_lifetime_waits_for_exchange(void **state)
{
    (void)state;
    h_net *net = net_new(DIM);
    for (int i = 0; i < 2; i++) {
        mm_gossip_config c = h_config(i, key_a, DIM, 0xab);
        assert_int_equal(h_add_node(net, &c, 5 + (uint64_t)i), i);
    }
    mm_gossip_bootstrap(net->nodes[0].g, net->nodes[1].addr, net->now);
    h_run(net, MM_MS(10));
    /* keep the session useful (no idle close) until just before 1 h */
    for (uint64_t t = MM_SEC(30); t < MM_SESSION_LIFETIME; t += MM_SEC(30)) {
        h_run(net, t);
        mm_gossip_average_now(net->nodes[0].g, net->now);
    }
    h_run(net, MM_SESSION_LIFETIME - MM_MS(1));
    assert_int_equal(stats(net, 0).sessions, 1);
    int merges = net->nodes[0].merges;
    net->nodes[0].on_snapshot = lend_late;
    assert_int_equal(mm_gossip_average_now(net->nodes[0].g, net->now), 0);
    h_run(net, MM_SESSION_LIFETIME + MM_MS(100));
    assert_true(net->now > MM_SESSION_LIFETIME);
    assert_int_equal(net->nodes[0].merges, merges + 1); /* the exchange finished... */
    assert_int_equal(stats(net, 0).exchanges_failed, 0);
    assert_int_equal(stats(net, 1).exchanges_failed, 0);
    /* ...then the old session closed, gracefully (here the shuffle due at
     * 3600 s, run in the same tick, dialled again at once) */
    assert_int_equal(h_count_logs(&net->nodes[0], MM_LOG_INFO, -1, "to be handshaken again") +
                         h_count_logs(&net->nodes[1], MM_LOG_INFO, -1, "to be handshaken again"),
                     2);
    assert_int_equal(h_count_logs(&net->nodes[1], MM_LOG_INFO, -1, "lost"), 0);
    /* the next use is a fresh session */
    assert_int_equal(mm_gossip_average_now(net->nodes[0].g, net->now), 0);
    h_run(net, net->now + MM_MS(100));
    assert_int_equal(stats(net, 0).handshakes_ok, 2);
    assert_int_equal(stats(net, 0).sessions, 1);
    assert_int_equal(net->nodes[0].merges, merges + 2);
    net_done(net);
}

/* ------------------------------------------------------------ L7: outbound reserve */

/* L7 (U): inbound connections fill the 75 % (40 idle member sessions from 40
 * addresses, then half-open ones): further accepts take the place of the
 * idlest session or are refused, inbound never passes MM_MAX_CONNS -
 * MM_OUTBOUND_RESERVE, and our own dial and averaging still work. */
static void test_l7_outbound_reserve(void **state)
{
    (void)state;
    enum { SQUAT = 40 };
    const uint32_t in_max = MM_MAX_CONNS - MM_OUTBOUND_RESERVE;
    h_net *net = lone_node("10.0.0.1:7000");
    int p = honest_peer(net, "10.0.1.2:7001");
    for (int i = 0; i < SQUAT; i++) {
        /* members that advertise no address (the victim's view stays clear of
         * them) and sit idle; each comes from its own address */
        mm_gossip_config c = h_config(2 + i, key_a, DIM, 0xab);
        c.advertise[0] = 0;
        int k = h_add_node(net, &c, 900 + (uint64_t)i);
        assert_true(k >= 0);
        snprintf(net->nodes[k].addr, sizeof net->nodes[k].addr, "10.9.%d.1:9000", i);
        mm_gossip_bootstrap(net->nodes[k].g, net->nodes[0].addr, net->now);
    }
    h_run(net, net->now + MM_MS(100));
    assert_int_equal(stats(net, 0).sessions, SQUAT);
    /* half-open connections from other addresses up to the inbound limit */
    int ok = 0;
    for (uint32_t i = 0; i < in_max - SQUAT; i++) {
        char from[32];
        snprintf(from, sizeof from, "10.8.%u.1:1", i);
        ok += raw_accept(net, 0, from);
    }
    assert_int_equal(ok, in_max - SQUAT);
    h_run(net, net->now);
    assert_int_equal(stats(net, 0).sessions + stats(net, 0).half_open, in_max);
    /* One more inbound: an idle session makes room for it (closed with CLOSE). */
    assert_true(raw_accept(net, 0, "10.7.0.1:1"));
    h_run(net, net->now + MM_MS(10));
    assert_int_equal(h_count_logs(&net->nodes[0], MM_LOG_INFO, -1, "closed for a newcomer"), 1);
    assert_int_equal(stats(net, 0).sessions + stats(net, 0).half_open, in_max);
    /* With the half-open cap reached, more are refused (no crypto done). */
    for (int i = 0; i < 100; i++) {
        char from[32];
        snprintf(from, sizeof from, "10.6.%d.1:1", i);
        ok += raw_accept(net, 0, from);
    }
    h_run(net, net->now);
    assert_true(stats(net, 0).sessions + stats(net, 0).half_open <= in_max);
    /* Our dial uses the reserve, and averaging goes on with the honest peer. */
    assert_int_equal(mm_gossip_bootstrap(net->nodes[0].g, net->nodes[p].addr, net->now), 0);
    h_run(net, net->now + MM_MS(50));
    assert_int_equal(stats(net, p).sessions, 1);
    assert_int_equal(stats(net, 0).sessions + stats(net, 0).half_open, in_max + 1);
    for (size_t k = 0; k < DIM; k++) net->nodes[p].x[k] = 2.0f;
    assert_int_equal(mm_gossip_average_now(net->nodes[0].g, net->now), 0); /* its view holds p only */
    h_run(net, net->now + MM_MS(100));
    assert_int_equal(net->nodes[0].merges, 1);
    assert_true(fabsf(net->nodes[0].x[0] - 1.0f) < 1e-6f);
    net_done(net);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_h11_keyring_matrix),
        cmocka_unit_test(test_h11_rotation_rolling),
        cmocka_unit_test(test_l2_one_address),
        cmocka_unit_test(test_l2_handshake_rate),
        cmocka_unit_test(test_l2_many_addresses),
        cmocka_unit_test(test_l2_loopback),
        cmocka_unit_test(test_conns_per_prefix),
        cmocka_unit_test(test_l2_ipv6_source),
        cmocka_unit_test(test_view_per_prefix),
        cmocka_unit_test(test_session_lifetime),
        cmocka_unit_test(test_session_lifetime_waits_for_exchange),
        cmocka_unit_test(test_l7_outbound_reserve),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
