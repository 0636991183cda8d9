/* Adversarial cases of SECURITY.md §3 (level U) against whole gossip cores,
 * in memory, with virtual time. Each test names its case (H3, R8, E4, ...).
 *
 * Two kinds of attacker:
 *  - on the path between two honest cores: the harness's tamper and edit
 *    hooks flip, drop, duplicate, swap or replace bytes in flight;
 *  - a hostile member ("evil" below): the test itself plays one end of a
 *    connection (a raw link), speaking the protocol with the gossip/ building
 *    blocks (Noise, the record layer, the msgpack encoder), so it can send
 *    exactly the frames an honest core never would: a DATA chunk at a wrong
 *    offset, a forged record, an END that lies.
 * Every refusal is checked by its log text and its effect (connection
 * closed, exchange failed, no merge), and where parameters are involved, the
 * victim's live parameters must be bit-identical afterwards. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka.h needs the headers above first. */
#include <cmocka.h>
#include <float.h>
#include <math.h>

#include "cert.h"
#include "encode.h"
#include "gossip_harness.h"
#include "noise.h"
#include "record.h"

#define N 1000

static const uint8_t netkey[32] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16,
                                   17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};
/* Gaps between the tensors, as in a real layout (tensor/layout.h aligns them). */
static const mm_gossip_tensor tensors[3] = {{0, 600}, {608, 300}, {912, 88}};

/* The network under test: key mode (the default), or certs mode with an
 * owner key and a wall clock (certs_nodes below). net_init resets it. */
static struct {
    bool certs;
    uint8_t owner_sk[64], owner_pk[32];
    int64_t wall_offset_ns; /* what the cores are configured with */
} netmode;

static void net_init(h_net *net, size_t n)
{
    memset(&netmode, 0, sizeof netmode);
    memset(net, 0, sizeof *net);
    net->n = n;
    net->verbose = getenv("MM_VERBOSE") != NULL;
}

static void fill_x(h_net *net, int node, float a, float b)
{
    for (size_t k = 0; k < net->n; k++) net->nodes[node].x[k] = a * (float)k + b;
}

/* Honest nodes 0..n-1 (with the layout above when dim is N), their
 * generators seeded from seed; x_i[k] = (i + 1) * 0.01 k - i. */
static void honest_nodes_seeded(h_net *net, int n, size_t dim, bool clip, uint64_t seed)
{
    net_init(net, dim);
    for (int i = 0; i < n; i++) {
        mm_gossip_config c = h_config(i, netkey, dim, 0xab);
        c.tensors = dim == N ? tensors : NULL;
        c.ntensors = dim == N ? 3 : 0;
        c.clip = clip;
        assert_int_equal(h_add_node(net, &c, seed + (uint64_t)i), i);
        fill_x(net, i, 0.01f * (float)(i + 1), -(float)i);
    }
}

static void honest_nodes(h_net *net, int n, size_t dim, bool clip) { honest_nodes_seeded(net, n, dim, clip, 100); }

static mm_gossip_stats stats(h_net *net, int node)
{
    mm_gossip_stats s;
    mm_gossip_get_stats(net->nodes[node].g, &s);
    return s;
}

/* Whether node has id in its view; its address goes to addr if given. */
static bool in_view(h_net *net, int node, const uint8_t *id, char *addr)
{
    mm_gossip_peer_info info[MM_VIEW_SIZE];
    uint32_t n = mm_gossip_peers(net->nodes[node].g, info, MM_VIEW_SIZE);
    for (uint32_t i = 0; i < n; i++)
        if (memcmp(info[i].id, id, MM_ID_BYTES) == 0) {
            if (addr) snprintf(addr, MM_ADDR_MAX, "%s", info[i].addr);
            return true;
        }
    return false;
}

static bool all_finite(const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return false;
    return true;
}

/* ------------------------------------------------------------ the protocol */

static void put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void network_id(uint8_t nid[32])
{
    if (netmode.certs)
        mm_cert_network_id(netmode.owner_pk, nid);
    else
        crypto_generichash(nid, 32, (const uint8_t *)"murmur-net-v1", 13, netkey, 32);
}

/* Wall time (unix s) as the cores see it. */
static int64_t wall_now(const h_net *net) { return ((int64_t)net->now + netmode.wall_offset_ns) / 1000000000; }

/* An address record (or a leave notice) signed by sk, as docs/protocol.md §5.2. */
static void sign_record(mm_addr_rec *r, const uint8_t sk[64], const char *addr, uint64_t seq, bool leave)
{
    uint8_t nid[32], m[15 + 73 + MM_ADDR_MAX];
    network_id(nid);
    memset(r, 0, sizeof *r);
    crypto_sign_ed25519_sk_to_pk(r->id, sk);
    snprintf(r->addr, sizeof r->addr, "%s", addr);
    r->seq = seq;
    const char *dom = leave ? "murmur-leave-v1" : "murmur-addr-v1";
    size_t n = strlen(dom), alen = strlen(r->addr);
    memcpy(m, dom, n);
    memcpy(m + n, nid, 32);
    memcpy(m + n + 32, r->id, 32);
    put_le64(m + n + 64, seq);
    m[n + 72] = (uint8_t)alen;
    memcpy(m + n + 73, r->addr, alen);
    crypto_sign_detached(r->sig, NULL, m, n + 73 + alen, sk);
}

/* An identity from a seed byte (distinct from h_config's). */
static void identity(uint8_t sk[64], int seed)
{
    uint8_t s[32] = {0}, pk[32];
    s[0] = (uint8_t)seed;
    s[1] = 0xee;
    crypto_sign_seed_keypair(pk, sk, s);
}

/* ------------------------------------------------------- the hostile member */

#define EVIL_BUF (MM_FRAME_HEADER + MM_FRAME_MAX_PLAIN + MM_FRAME_TAG)

typedef struct {
    h_net *net;
    int node; /* the core under attack */
    mm_conn_id conn;
    h_link *link;
    uint8_t sk[64], id[32], s_sk[32];
    char addr[MM_ADDR_MAX];
    uint8_t caps; /* what our handshake payload claims */
    int bind;     /* 0: an honest binding; 1: of another static key; 2: for another network */
    int cipher;   /* record cipher to use; -1: what the core should pick */
    uint64_t bind_not_after; /* our binding's not_after (unix s); 0: a day from now; UINT64_MAX: 0 */
    bool has_cert;           /* append cert to our handshake payload */
    uint8_t cert[MM_CERT_BYTES];
    mm_noise_hs hs;
    mm_record rec;
    uint8_t peer_payload[105 + MM_CERT_BYTES];
    bool keyed;
    /* what the core sent on the session */
    int nmsg[16];    /* CTRL and END messages, by type */
    mm_msg last[16]; /* the last of each type */
    int data_frames, abort_frames, close_frames;
    bool auth_failed; /* a frame of the core's failed our tag: a cipher mismatch */
    uint8_t out[EVIL_BUF], in[EVIL_BUF];
} evil;

static evil *evil_new(h_net *net, int node, int seed, const char *addr)
{
    evil *ev = calloc(1, sizeof *ev);
    assert_non_null(ev);
    ev->net = net;
    ev->node = node;
    identity(ev->sk, seed);
    crypto_sign_ed25519_sk_to_pk(ev->id, ev->sk);
    snprintf(ev->addr, sizeof ev->addr, "%s", addr);
    crypto_generichash(ev->s_sk, 32, ev->id, 32, NULL, 0);
    ev->caps = 0;
    ev->cipher = -1;
    return ev;
}

static mm_gossip *core_of(evil *ev) { return ev->net->nodes[ev->node].g; }

/* Bytes to the core, which then runs until idle (no time passes). */
static void evil_push(evil *ev, const uint8_t *p, size_t n)
{
    mm_gossip_received(core_of(ev), ev->conn, p, n, ev->net->now);
    h_run(ev->net, ev->net->now);
}

static bool evil_closed(const evil *ev) { return ev->link->closed[0]; }

/* The peer hangs up (a FIN or reset, without CLOSE). */
static void evil_fin(evil *ev)
{
    if (!ev->link->raw_gone) {
        ev->link->raw_gone = true;
        mm_gossip_closed(core_of(ev), ev->conn, ev->net->now);
    }
    h_run(ev->net, ev->net->now);
}

static void noise_start(mm_noise_hs *hs, bool initiator, const uint8_t s_sk[32], int seed)
{
    uint8_t nid[32], prologue[40], e[32];
    network_id(nid);
    memcpy(prologue, "murmur/1", 8);
    memcpy(prologue + 8, nid, 32);
    assert_int_equal(mm_noise_init(hs, MM_NOISE_XXPSK0, MM_NOISE_CHACHAPOLY, initiator, prologue, sizeof prologue, s_sk,
                                   netkey, NULL),
                     0);
    memset(e, 0x40 + seed, sizeof e);
    mm_noise_set_ephemeral(hs, e);
}

/* Our handshake payload: identity, static-key binding, not_after, caps, and
 * the certificate if we have one; returns its length (105 or 261). */
static size_t evil_payload(evil *ev, uint8_t *p)
{
    uint8_t nid[32], m[88], s_pk[32];
    uint64_t not_after = ev->bind_not_after ? ev->bind_not_after : (uint64_t)wall_now(ev->net) + 86400;
    if (not_after == UINT64_MAX) not_after = 0; /* the old "for the key's life" */
    network_id(nid);
    crypto_scalarmult_curve25519_base(s_pk, ev->s_sk);
    memcpy(m, "murmur-static-v1", 16);
    if (ev->bind == 1) s_pk[0] ^= 1;
    if (ev->bind == 2) nid[0] ^= 1;
    memcpy(m + 16, nid, 32);
    memcpy(m + 48, s_pk, 32);
    put_le64(m + 80, not_after);
    memcpy(p, ev->id, 32);
    crypto_sign_detached(p + 32, NULL, m, sizeof m, ev->sk);
    put_le64(p + 96, not_after);
    p[104] = ev->caps;
    if (!ev->has_cert) return 105;
    memcpy(p + 105, ev->cert, MM_CERT_BYTES);
    return 105 + MM_CERT_BYTES;
}

/* Open a connection to the core and start our handshake state. */
static void evil_connect(evil *ev)
{
    ev->conn = mm_gossip_accepted(core_of(ev), ev->addr, ev->net->now);
    assert_true(ev->conn != 0);
    ev->link = h_raw_link(ev->net, ev->node, ev->conn);
    assert_non_null(ev->link);
    memset(ev->nmsg, 0, sizeof ev->nmsg);
    ev->data_frames = ev->abort_frames = ev->close_frames = 0;
    ev->auth_failed = ev->keyed = false;
    noise_start(&ev->hs, true, ev->s_sk, ev->node + (int)ev->conn);
}

static void hs_push(evil *ev, mm_noise_hs *hs, const uint8_t *payload, size_t plen, uint8_t *copy, size_t *copy_len)
{
    uint8_t msg[2 + MM_HS_MAX_MSG];
    size_t n;
    assert_int_equal(mm_noise_write(hs, payload, plen, msg + 2, sizeof msg - 2, &n), 0);
    msg[0] = (uint8_t)(n >> 8);
    msg[1] = (uint8_t)n;
    if (copy) memcpy(copy, msg, *copy_len = n + 2);
    evil_push(ev, msg, n + 2);
}

/* Take the next handshake message the core sent; false if there is none. */
static bool hs_take(evil *ev, uint8_t *msg, size_t *len)
{
    h_fifo *q = &ev->link->q[0];
    if (q->len < 2) return false;
    size_t n = (size_t)q->buf[0] << 8 | q->buf[1];
    if (q->len < 2 + n) return false;
    memcpy(msg, q->buf + 2, n);
    *len = n;
    memmove(q->buf, q->buf + 2 + n, q->len - 2 - n);
    q->len -= 2 + n;
    return true;
}

/* Record keys from the Noise split, as the core derives them (core.c, establish). */
static void record_keys(mm_record *rec, mm_noise_hs *hs, mm_cipher cipher, bool initiator)
{
    uint8_t k1[32], k2[32], h[MM_NOISE_HASHLEN], r1[32], r2[32], label[14];
    assert_int_equal(mm_noise_split(hs, k1, k2, h), 0);
    memcpy(label, "murmur-rec-v1", 13);
    label[13] = (uint8_t)cipher;
    crypto_generichash(r1, 32, label, sizeof label, k1, 32);
    crypto_generichash(r2, 32, label, sizeof label, k2, 32);
    assert_int_equal(initiator ? mm_record_init(rec, cipher, r1, r2) : mm_record_init(rec, cipher, r2, r1), 0);
}

static void evil_send_frame(evil *ev, mm_frame_type type, uint32_t xid, uint64_t offset, const uint8_t *pt, size_t len)
{
    long n = mm_record_seal(&ev->rec, type, xid, offset, pt, len, ev->out, sizeof ev->out);
    assert_true(n > 0);
    evil_push(ev, ev->out, (size_t)n);
}

static void evil_send(evil *ev, const mm_msg *m)
{
    uint8_t buf[8192];
    long n = mm_msg_encode(m, buf, sizeof buf);
    assert_true(n > 0);
    bool end = m->type == MM_MSG_END;
    evil_send_frame(ev, end ? MM_FRAME_END : MM_FRAME_CTRL, end ? m->u.end.xid : 0, 0, buf, (size_t)n);
}

/* Read every complete frame the core sent us. */
static void evil_poll(evil *ev)
{
    h_fifo *q = &ev->link->q[0];
    size_t pos = 0;
    while (!ev->auth_failed && q->len - pos >= MM_FRAME_HEADER) {
        mm_frame_hdr h;
        assert_int_equal(mm_frame_parse_header(q->buf + pos, &h), 0);
        if (q->len - pos < MM_FRAME_HEADER + h.len) break;
        if (mm_record_open(&ev->rec, &h, q->buf + pos, q->buf + pos + MM_FRAME_HEADER, ev->in) != 0) {
            ev->auth_failed = true;
            break;
        }
        pos += MM_FRAME_HEADER + h.len;
        if (h.type == MM_FRAME_CTRL || h.type == MM_FRAME_END) {
            mm_msg m;
            mm_error err = {0};
            assert_int_equal(mm_msg_decode(&m, ev->in, h.len - MM_FRAME_TAG, &err), 0);
            ev->nmsg[m.type]++;
            ev->last[m.type] = m;
        } else if (h.type == MM_FRAME_DATA) {
            ev->data_frames++;
        } else if (h.type == MM_FRAME_ABORT) {
            ev->abort_frames++;
        } else if (h.type == MM_FRAME_CLOSE) {
            ev->close_frames++;
        }
    }
    memmove(q->buf, q->buf + pos, q->len - pos);
    q->len -= pos;
}

static void evil_hello(evil *ev, uint64_t seq)
{
    mm_msg m = {.type = MM_MSG_HELLO};
    m.u.hello.version = MM_PROTO_VERSION;
    memset(m.u.hello.fingerprint, 0xab, MM_FP_BYTES);
    m.u.hello.params = ev->net->n;
    m.u.hello.encodings = 0xf;
    sign_record(&m.u.hello.self, ev->sk, ev->addr, seq, false);
    evil_send(ev, &m);
    evil_poll(ev);
}

/* The whole handshake, then HELLO both ways. Returns whether a session is up. */
static bool evil_join(evil *ev)
{
    uint8_t msg[MM_HS_MAX_MSG], payload[MM_HS_MAX_MSG], mine[105 + MM_CERT_BYTES];
    size_t len = 0, plen = 0;
    evil_connect(ev);
    hs_push(ev, &ev->hs, NULL, 0, NULL, NULL);
    if (!hs_take(ev, msg, &len)) return false;
    assert_int_equal(mm_noise_read(&ev->hs, msg, len, payload, sizeof payload, &plen), 0);
    assert_int_equal(plen, netmode.certs ? 105 + MM_CERT_BYTES : 105);
    memcpy(ev->peer_payload, payload, plen);
    hs_push(ev, &ev->hs, mine, evil_payload(ev, mine), NULL, NULL);
    if (evil_closed(ev)) return false;
    mm_cipher c = (crypto_aead_aes256gcm_is_available() && (ev->caps & 1) && (payload[104] & 1)) ? MM_CIPHER_AESGCM
                                                                                                 : MM_CIPHER_CHACHA;
    if (ev->cipher >= 0) c = (mm_cipher)ev->cipher;
    record_keys(&ev->rec, &ev->hs, c, true);
    mm_noise_wipe(&ev->hs);
    ev->keyed = true;
    evil_hello(ev, 1);
    return !evil_closed(ev) && !ev->auth_failed && ev->nmsg[MM_MSG_HELLO] == 1;
}

static void evil_free(evil *ev)
{
    mm_record_wipe(&ev->rec);
    free(ev);
}

/* Ask the core for an exchange; it lends a snapshot and streams it back. */
static void evil_request(evil *ev, uint32_t xid, uint8_t enc, uint64_t samples)
{
    mm_msg m = {.type = MM_MSG_EXCH_REQ};
    m.u.exch.xid = xid;
    m.u.exch.encoding = enc;
    m.u.exch.samples = samples;
    m.u.exch.kind = 0;
    evil_send(ev, &m);
    evil_poll(ev);
}

static void evil_data(evil *ev, uint32_t xid, uint64_t offset, const uint8_t *pt, size_t len)
{
    evil_send_frame(ev, MM_FRAME_DATA, xid, offset, pt, len);
    evil_poll(ev);
}

static void evil_end(evil *ev, uint32_t xid, uint64_t total, uint32_t chunks, uint8_t enc)
{
    mm_msg m = {.type = MM_MSG_END};
    m.u.end.xid = xid;
    m.u.end.total_bytes = total;
    m.u.end.chunks = chunks;
    m.u.end.encoding = enc;
    evil_send(ev, &m);
    evil_poll(ev);
}

static void evil_done(evil *ev, uint32_t xid)
{
    mm_msg m = {.type = MM_MSG_DONE};
    m.u.done.xid = xid;
    evil_send(ev, &m);
    evil_poll(ev);
}

/* A core (node 0, clip as given) with a session to a hostile member. */
static evil *core_and_evil(h_net *net, bool clip)
{
    honest_nodes(net, 1, N, clip);
    evil *ev = evil_new(net, 0, 1, "10.66.0.1:9000");
    assert_true(evil_join(ev));
    assert_int_equal(stats(net, 0).sessions, 1);
    return ev;
}

static void finish(h_net *net)
{
    h_free_net(net);
    assert_int_equal(net->allocs, net->frees);
}

/* ============================================================== handshake */

/* H3: one bit flipped at every byte of msg1, msg2 and msg3 (length prefix
 * included): the handshake fails on both sides, no session, no greeting. The
 * receiving side says why (or times out, when the flip made the length
 * prefix promise more bytes). */
static struct {
    int from, nth, seen[2];
    size_t pos;
    uint8_t mask;
} flip;

static void flip_in_message(h_net *net, int from, uint8_t *buf, size_t len)
{
    (void)net;
    if (from == flip.from && ++flip.seen[from] == flip.nth && flip.pos < len) buf[flip.pos] ^= flip.mask;
}

static void run_flip(int from, int nth, size_t pos, uint8_t mask, h_net *net)
{
    honest_nodes(net, 2, 64, false);
    memset(&flip, 0, sizeof flip);
    flip.from = from, flip.nth = nth, flip.pos = pos, flip.mask = mask;
    net->tamper = flip_in_message;
    mm_gossip_bootstrap(net->nodes[0].g, net->nodes[1].addr, net->now);
    h_run(net, MM_HS_DEADLINE + MM_SEC(1));
}

static void test_h3_handshake_bit_flips(void **state)
{
    (void)state;
    /* node 0 dials: its 1st delivery is msg1, node 1's 1st is msg2, node 0's
     * 2nd is msg3 followed by its HELLO frame (only msg3's bytes are hit). */
    const struct {
        int from, nth;
        size_t len;
        int fails; /* the node that must detect it */
    } msgs[3] = {{0, 1, 2 + MM_HS_MSG1_LEN, 1}, {1, 1, 2 + 32 + 48 + 105 + 16, 0}, {0, 2, 2 + 48 + 105 + 16, 1}};
    int runs = 0;
    for (int m = 0; m < 3; m++)
        for (size_t pos = 0; pos < msgs[m].len; pos++) {
            h_net net;
            run_flip(msgs[m].from, msgs[m].nth, pos, (uint8_t)(1u << (pos % 8)), &net);
            for (int i = 0; i < 2; i++) {
                mm_gossip_stats s = stats(&net, i);
                assert_int_equal(s.sessions, 0);
                assert_int_equal(s.view, 0);
                assert_int_equal(h_count_logs(&net.nodes[i], MM_LOG_PEER_UP, -1, NULL), 0);
            }
            int d = msgs[m].fails;
            assert_true(stats(&net, d).handshakes_failed >= 1);
            assert_true(h_count_logs(&net.nodes[d], MM_LOG_REFUSED, -1, NULL) >= 1);
            assert_int_equal(stats(&net, 1).handshakes_ok, 0); /* the responder never completes */
            finish(&net);
            runs++;
        }
    print_message("%d single-bit flips, every one refused\n", runs);
}

/* H7: a zero or small-order e or s, at each place it appears, aborts the
 * handshake at the core: nothing more is sent and no session comes up. The
 * hostile side writes valid Noise messages around the bad point (its tag
 * covers it), so only the DH check can catch it. */
static void small_order_points(uint8_t pts[4][32])
{
    memset(pts, 0, 4 * 32);
    pts[1][0] = 1; /* u = 1, order 4 */
    static const uint8_t order8[32] = {0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3,
                                       0xfa, 0xf1, 0x9f, 0xc4, 0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32,
                                       0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00};
    memcpy(pts[2], order8, 32);
    memset(pts[3], 0xff, 32); /* p - 1, order 2 */
    pts[3][0] = 0xec;
    pts[3][31] = 0x7f;
}

static void test_h7_small_order_keys(void **state)
{
    (void)state;
    uint8_t pts[4][32];
    small_order_points(pts);
    for (int p = 0; p < 4; p++) {
        /* The core responds: a bad e in msg1, or a bad s in msg3. */
        for (int where = 0; where < 2; where++) {
            h_net net;
            honest_nodes(&net, 1, 64, false);
            evil *ev = evil_new(&net, 0, 1, "10.66.0.1:9000");
            evil_connect(ev);
            uint8_t msg[MM_HS_MAX_MSG], payload[MM_HS_MAX_MSG], mine[105];
            size_t len = 0, plen = 0;
            if (where == 0) {
                memcpy(ev->hs.e_pk, pts[p], 32);
                hs_push(ev, &ev->hs, NULL, 0, NULL, NULL);
                assert_int_equal(ev->link->q[0].len, 0); /* no msg2 */
                assert_true(h_count_logs(&net.nodes[0], MM_LOG_REFUSED, -1, "handshake write failed") == 1);
            } else {
                hs_push(ev, &ev->hs, NULL, 0, NULL, NULL);
                assert_true(hs_take(ev, msg, &len));
                assert_int_equal(mm_noise_read(&ev->hs, msg, len, payload, sizeof payload, &plen), 0);
                memcpy(ev->hs.s_pk, pts[p], 32);
                evil_payload(ev, mine);
                hs_push(ev, &ev->hs, mine, sizeof mine, NULL, NULL);
                assert_int_equal(ev->link->q[0].len, 0); /* no HELLO */
                assert_true(h_count_logs(&net.nodes[0], MM_LOG_REFUSED, -1, "failed authentication") == 1);
            }
            assert_true(evil_closed(ev));
            assert_int_equal(stats(&net, 0).handshakes_failed, 1);
            assert_int_equal(stats(&net, 0).handshakes_ok, 0);
            evil_free(ev);
            finish(&net);
        }
        /* The core dials: a bad e or s in msg2; msg3 (with its identity) is
         * never sent. */
        for (int where = 0; where < 2; where++) {
            h_net net;
            honest_nodes(&net, 1, 64, false);
            mm_gossip *g = net.nodes[0].g;
            mm_gossip_bootstrap(g, "10.66.0.2:9000", net.now);
            mm_action a;
            mm_conn_id c = 0;
            while (mm_gossip_next(g, &a))
                if (a.kind == MM_ACT_CONNECT) c = a.conn;
            assert_true(c != 0);
            evil *ev = evil_new(&net, 0, 2, "10.66.0.2:9000");
            ev->conn = c;
            ev->link = h_raw_link(&net, 0, c);
            mm_gossip_connected(g, c, net.now);
            h_run(&net, net.now);
            uint8_t msg[MM_HS_MAX_MSG], payload[MM_HS_MAX_MSG], mine[105];
            size_t len = 0, plen = 0;
            assert_true(hs_take(ev, msg, &len));
            noise_start(&ev->hs, false, ev->s_sk, 9);
            assert_int_equal(mm_noise_read(&ev->hs, msg, len, payload, sizeof payload, &plen), 0);
            memcpy(where == 0 ? ev->hs.e_pk : ev->hs.s_pk, pts[p], 32);
            evil_payload(ev, mine);
            hs_push(ev, &ev->hs, mine, sizeof mine, NULL, NULL);
            assert_int_equal(ev->link->q[0].len, 0); /* no msg3 */
            assert_true(evil_closed(ev));
            assert_true(h_count_logs(&net.nodes[0], MM_LOG_REFUSED, -1, "failed authentication") == 1);
            assert_int_equal(stats(&net, 0).handshakes_failed, 1);
            assert_int_equal(stats(&net, 0).sessions, 0);
            evil_free(ev);
            finish(&net);
        }
    }
}

/* H6 (foreign bindings): msg3 carries a binding signature over another
 * static key, or over the right key for another network: refused at msg3,
 * no session. (Expiry is not checked: the core signs not_after = 0, "for
 * the life of this static key", and has no wall clock.) */
static void test_h6_foreign_binding(void **state)
{
    (void)state;
    for (int bind = 1; bind <= 2; bind++) {
        h_net net;
        honest_nodes(&net, 1, 64, false);
        evil *ev = evil_new(&net, 0, 1, "10.66.0.1:9000");
        ev->bind = bind;
        assert_false(evil_join(ev));
        assert_true(evil_closed(ev));
        assert_int_equal(h_count_logs(&net.nodes[0], MM_LOG_REFUSED, -1, "not bound to its identity"), 1);
        assert_int_equal(stats(&net, 0).handshakes_ok, 0);
        assert_int_equal(h_count_logs(&net.nodes[0], MM_LOG_PEER_UP, -1, NULL), 0);
        evil_free(ev);
        finish(&net);
    }
}

/* H9: an on-path attacker clears the AES-GCM bit of the caps byte. The caps
 * travel inside the encrypted handshake payloads (msg2, msg3), so the only
 * way to reach the bit is to flip the ciphertext bit above it: the payload's
 * tag then fails and the handshake ends. There is no unauthenticated
 * negotiation to downgrade, so no silent fallback to ChaCha20-Poly1305. */
static void test_h9_caps_downgrade(void **state)
{
    (void)state;
    /* The caps byte is the last of the 105-byte payload: msg2 = len(2) e(32)
     * enc-s(48) payload, msg3 = len(2) enc-s(48) payload. */
    const struct {
        int from, nth, refuser;
        size_t pos;
    } at[2] = {{1, 1, 0, 2 + 32 + 48 + 104}, {0, 2, 1, 2 + 48 + 104}};
    for (int i = 0; i < 2; i++) {
        h_net net;
        run_flip(at[i].from, at[i].nth, at[i].pos, 0x01, &net);
        assert_true(h_count_logs(&net.nodes[at[i].refuser], MM_LOG_REFUSED, -1,
                                 "handshake message failed authentication") == 1);
        for (int k = 0; k < 2; k++) {
            assert_int_equal(stats(&net, k).sessions, 0);
            assert_int_equal(h_count_logs(&net.nodes[k], MM_LOG_PEER_UP, -1, NULL), 0);
        }
        finish(&net);
    }
}

/* H10: both nodes dial each other at the same instant: exactly one session
 * survives on each side (the one dialled by the lower identity), and it
 * carries an exchange. */
static void test_h10_simultaneous_open(void **state)
{
    (void)state;
    h_net net;
    honest_nodes(&net, 2, N, false);
    mm_gossip_bootstrap(net.nodes[0].g, net.nodes[1].addr, net.now);
    mm_gossip_bootstrap(net.nodes[1].g, net.nodes[0].addr, net.now);
    h_run(&net, MM_MS(100));
    for (int i = 0; i < 2; i++) {
        assert_int_equal(stats(&net, i).handshakes_ok, 2); /* both handshakes completed... */
        assert_int_equal(stats(&net, i).sessions, 1);      /* ...one session was kept */
    }
    int links = 0;
    for (int k = 0; k < H_MAX_LINKS; k++) links += net.links[k].used;
    assert_int_equal(links, 1);
    assert_int_equal(mm_gossip_average_now(net.nodes[0].g, net.now), 0);
    h_run(&net, net.now + MM_MS(100));
    for (int i = 0; i < 2; i++) assert_int_equal(net.nodes[i].merges, 1);
    finish(&net);
}

/* Y2: a msg3 recorded from one session, replayed in a new session (fresh
 * ephemerals on both sides), fails: msg3 is encrypted under keys that mix
 * in the responder's new ephemeral. */
static void test_y2_old_msg3(void **state)
{
    (void)state;
    h_net net;
    honest_nodes(&net, 1, 64, false);
    evil *ev = evil_new(&net, 0, 1, "10.66.0.1:9000");
    uint8_t msg[MM_HS_MAX_MSG], payload[MM_HS_MAX_MSG], mine[105], old[2 + MM_HS_MAX_MSG];
    size_t len = 0, plen = 0, old_len = 0;
    /* session 1, recording our msg3 */
    evil_connect(ev);
    hs_push(ev, &ev->hs, NULL, 0, NULL, NULL);
    assert_true(hs_take(ev, msg, &len));
    assert_int_equal(mm_noise_read(&ev->hs, msg, len, payload, sizeof payload, &plen), 0);
    evil_payload(ev, mine);
    hs_push(ev, &ev->hs, mine, sizeof mine, old, &old_len);
    assert_false(evil_closed(ev));
    assert_int_equal(stats(&net, 0).handshakes_ok, 1);
    /* session 2: a fresh msg1, the core's fresh msg2, then the old msg3 */
    evil_connect(ev);
    hs_push(ev, &ev->hs, NULL, 0, NULL, NULL);
    assert_true(hs_take(ev, msg, &len));
    mm_gossip_received(core_of(ev), ev->conn, old, old_len, net.now);
    h_run(&net, net.now);
    assert_true(evil_closed(ev));
    assert_int_equal(ev->link->q[0].len, 0); /* no HELLO on the new connection */
    assert_int_equal(h_count_logs(&net.nodes[0], MM_LOG_REFUSED, -1, "handshake message failed authentication"), 1);
    assert_int_equal(stats(&net, 0).handshakes_ok, 1);
    assert_int_equal(stats(&net, 0).handshakes_failed, 1);
    evil_free(ev);
    finish(&net);
}

/* ============================================================ record layer */

/* R2: on a live session, during an exchange, the frames of one delivery
 * (EXCH_ACK, DATA, END) are dropped, duplicated, swapped, or replaced by
 * the same delivery from another session of the same two identities. The
 * counter nonce fails the tag: the connection closes, the exchange is
 * abandoned on both sides, and neither vector changes. */
enum { ED_DROP, ED_DUP, ED_SWAP, ED_CAPTURE, ED_REPLACE };
static struct {
    int mode, from;
    bool armed;
    uint8_t *cap;
    size_t cap_len;
} ed;

static size_t frame_size(const uint8_t *p)
{
    return MM_FRAME_HEADER + ((size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3]);
}

static void edit_frames(h_net *net, int from, h_fifo *f)
{
    (void)net;
    if (!ed.armed || from != ed.from || f->len < MM_FRAME_HEADER) return;
    size_t a = frame_size(f->buf);
    if (f->len <= a) return; /* want two frames or more */
    size_t b = frame_size(f->buf + a);
    ed.armed = false;
    switch (ed.mode) {
    case ED_DROP:
        memmove(f->buf, f->buf + a, f->len - a);
        f->len -= a;
        break;
    case ED_DUP:
        f->buf = realloc(f->buf, f->len + a);
        memmove(f->buf + a, f->buf, f->len);
        f->len += a;
        break;
    case ED_SWAP: {
        uint8_t *t = malloc(a + b);
        memcpy(t, f->buf + a, b);
        memcpy(t + b, f->buf, a);
        memcpy(f->buf, t, a + b);
        free(t);
        break;
    }
    case ED_CAPTURE:
        ed.cap = malloc(f->len);
        memcpy(ed.cap, f->buf, ed.cap_len = f->len);
        break;
    case ED_REPLACE:
        assert_int_equal(f->len, ed.cap_len);
        memcpy(f->buf, ed.cap, f->len);
        break;
    }
}

/* Two honest nodes with a session; node 0 asks node 1 for an exchange with
 * the edit hook armed on node 1's next multi-frame delivery. */
static void edited_exchange(h_net *net, uint64_t seed, int mode)
{
    honest_nodes_seeded(net, 2, N, false, seed);
    mm_gossip_bootstrap(net->nodes[0].g, net->nodes[1].addr, net->now);
    h_run(net, MM_MS(10));
    assert_int_equal(stats(net, 0).sessions, 1);
    net->edit = edit_frames;
    ed.mode = mode;
    ed.from = 1;
    ed.armed = true;
    assert_int_equal(mm_gossip_average_now(net->nodes[0].g, net->now), 0);
    h_run(net, net->now + MM_MS(100));
    assert_false(ed.armed);
}

static void test_r2_frame_sequence(void **state)
{
    (void)state;
    for (int mode = ED_DROP; mode <= ED_REPLACE; mode++) {
        if (mode == ED_CAPTURE) continue;
        if (mode == ED_REPLACE) { /* the same delivery, from a session with other ephemerals */
            h_net other;
            edited_exchange(&other, 500, ED_CAPTURE);
            finish(&other);
        }
        h_net net;
        float x0[N], x1[N];
        honest_nodes(&net, 2, N, false);
        memcpy(x0, net.nodes[0].x, sizeof x0);
        memcpy(x1, net.nodes[1].x, sizeof x1);
        h_free_net(&net);
        edited_exchange(&net, 100, mode);
        assert_int_equal(h_count_logs(&net.nodes[0], MM_LOG_REFUSED, -1, "frame failed authentication"), 1);
        for (int i = 0; i < 2; i++) {
            assert_int_equal(net.nodes[i].merges, 0);
            assert_int_equal(h_count_logs(&net.nodes[i], MM_LOG_EXCHANGE, 0, NULL), 1);
            assert_int_equal(stats(&net, i).sessions, 0);
        }
        assert_memory_equal(net.nodes[0].x, x0, sizeof x0);
        assert_memory_equal(net.nodes[1].x, x1, sizeof x1);
        finish(&net);
    }
    free(ed.cap);
    ed.cap = NULL;
}

/* R6: the record cipher. AES-256-GCM only if both sides set the caps bit
 * (and this CPU has it), else ChaCha20-Poly1305; the other bits of caps do
 * not matter. The hostile member plays each side of the matrix: it can
 * only read the core's HELLO under the expected cipher, and a peer that
 * uses the other one is refused at its first frame (no fallback). */
static void test_r6_cipher_matrix(void **state)
{
    (void)state;
    bool aes = crypto_aead_aes256gcm_is_available() != 0;
    if (!aes) print_message("AES-256-GCM unavailable on this CPU: the core must pick ChaCha20-Poly1305 always\n");
    const uint8_t caps[4] = {0x00, 0x01, 0xfe, 0xff};
    for (int i = 0; i < 4; i++) {
        mm_cipher want = aes && (caps[i] & 1) ? MM_CIPHER_AESGCM : MM_CIPHER_CHACHA;
        h_net net;
        honest_nodes(&net, 1, 64, false);
        evil *ev = evil_new(&net, 0, 1, "10.66.0.1:9000");
        ev->caps = caps[i];
        ev->cipher = (int)want;
        assert_true(evil_join(ev));
        assert_int_equal(ev->peer_payload[104], aes ? 1 : 0); /* what the core claims */
        assert_int_equal(ev->rec.tx.cipher, want);
        evil_free(ev);
        finish(&net);

        mm_cipher wrong = want == MM_CIPHER_AESGCM ? MM_CIPHER_CHACHA : MM_CIPHER_AESGCM;
        if (wrong == MM_CIPHER_AESGCM && !aes) continue;
        honest_nodes(&net, 1, 64, false);
        ev = evil_new(&net, 0, 1, "10.66.0.1:9000");
        ev->caps = caps[i];
        ev->cipher = (int)wrong;
        assert_false(evil_join(ev));
        assert_true(ev->auth_failed); /* we cannot read its HELLO either */
        assert_true(evil_closed(ev));
        assert_int_equal(h_count_logs(&net.nodes[0], MM_LOG_REFUSED, -1, "frame failed authentication"), 1);
        assert_int_equal(h_count_logs(&net.nodes[0], MM_LOG_PEER_UP, -1, NULL), 0);
        evil_free(ev);
        finish(&net);
    }
}

/* R7: the byte stream re-split into reads of 1, 2, 3, 7, ... bytes, or
 * coalesced (everything queued delivered in one read: msg3 with HELLO, ACK
 * with DATA and END): the same sessions, the same merged vectors, bit for
 * bit. */
static void split_run(h_net *net, size_t split)
{
    honest_nodes(net, 2, N, false);
    net->split = split;
    mm_gossip_bootstrap(net->nodes[0].g, net->nodes[1].addr, net->now);
    h_run(net, MM_MS(10));
    assert_int_equal(mm_gossip_average_now(net->nodes[0].g, net->now), 0);
    h_run(net, net->now + MM_MS(50));
    assert_int_equal(mm_gossip_average_now(net->nodes[1].g, net->now), 0);
    h_run(net, net->now + MM_MS(50));
}

static void test_r7_resplit_stream(void **state)
{
    (void)state;
    h_net base;
    split_run(&base, 0);
    for (int i = 0; i < 2; i++) assert_int_equal(base.nodes[i].merges, 2);
    const size_t splits[] = {1, 2, 3, 7, 19, 20, 21, 49, 50, 51, 1000, 4096, 4097, 65536};
    for (size_t s = 0; s < sizeof splits / sizeof splits[0]; s++) {
        h_net net;
        split_run(&net, splits[s]);
        for (int i = 0; i < 2; i++) {
            assert_int_equal(net.nodes[i].merges, 2);
            assert_memory_equal(net.nodes[i].x, base.nodes[i].x, N * sizeof(float));
            assert_int_equal(stats(&net, i).bytes_in, stats(&base, i).bytes_in);
            assert_int_equal(stats(&net, i).handshakes_ok, 1);
        }
        finish(&net);
    }
    finish(&base);
}

/* R8: DATA chunks that do not continue the vector where it stands: past the
 * end, of no whole number of values, repeated, skipped ahead, going back, or
 * overrunning the last value. The chunk is refused before anything is
 * written where it points (ASan builds check no byte lands outside the
 * receive buffer); the exchange is aborted with ABORT and a penalty, and
 * the live parameters are bit-identical. docs/protocol.md §4.4: a semantic
 * DATA error aborts the exchange, not the connection (repeat offenders are
 * banned by the penalty, see S3). */
static void test_r8_data_offsets(void **state)
{
    (void)state;
    static uint8_t pt[4 * N];
    memset(pt, 0x3c, sizeof pt); /* 0x3c3c3c3c: a finite float */
    const struct {
        const char *what;
        uint64_t off[3];
        size_t vals[3];    /* values per chunk; 0 = no chunk */
        size_t bytes_last; /* 0: 4 * vals; else the last chunk's length in bytes */
    } cases[] = {
        {"offset past the end", {N, 0, 0}, {100, 0, 0}, 0},
        {"offset 2^63", {1ull << 63, 0, 0}, {100, 0, 0}, 0},
        {"length of no whole value", {0, 0, 0}, {100, 0, 0}, 401},
        {"repeated", {0, 0, 0}, {100, 100, 0}, 0},
        {"skipped", {0, 200, 0}, {100, 100, 0}, 0},
        {"decreasing", {0, 100, 50}, {100, 100, 100}, 0},
        {"overrunning the vector", {0, 900, 0}, {900, 200, 0}, 0},
        {"offset 1 first", {1, 0, 0}, {100, 0, 0}, 0},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        h_net net;
        evil *ev = core_and_evil(&net, false);
        float x[N];
        memcpy(x, net.nodes[0].x, sizeof x);
        evil_request(ev, 7, MM_ENC_F32, 0);
        assert_int_equal(ev->nmsg[MM_MSG_EXCH_ACK], 1);
        int k = 0;
        for (; k < 3 && cases[c].vals[k]; k++) {
            bool last = k == 2 || !cases[c].vals[k + 1];
            size_t len = last && cases[c].bytes_last ? cases[c].bytes_last : 4 * cases[c].vals[k];
            evil_data(ev, 7, cases[c].off[k], pt, len);
        }
        assert_int_equal(h_count_logs(&net.nodes[0], MM_LOG_EXCHANGE, 0, "data chunk out of sequence or of a bad size"),
                         1);
        assert_int_equal(ev->abort_frames, 1);
        assert_false(evil_closed(ev));
        /* Whatever follows for that exchange is dropped, END included. */
        evil_end(ev, 7, 4 * N, 10, MM_ENC_F32);
        evil_done(ev, 7);
        h_run(&net, net.now + MM_SEC(1));
        assert_int_equal(net.nodes[0].merges, 0);
        assert_memory_equal(net.nodes[0].x, x, sizeof x);
        assert_int_equal(stats(&net, 0).exchanges_failed, 1);
        (void)k;
        evil_free(ev);
        finish(&net);
    }
}

/* O5: the peer streams its whole vector, then hangs up on a frame boundary
 * without END (or after END, before DONE), and without CLOSE: the
 * exchange is discarded as truncated, and the peer is suspected (a FIN is
 * not a goodbye). */
static void test_o5_fin_without_end(void **state)
{
    (void)state;
    for (int with_end = 0; with_end < 2; with_end++) {
        h_net net;
        evil *ev = core_and_evil(&net, false);
        float x[N], v[N];
        memcpy(x, net.nodes[0].x, sizeof x);
        for (size_t k = 0; k < N; k++) v[k] = 1.0f;
        evil_request(ev, 9, MM_ENC_F32, 0);
        static uint8_t pt[4 * N];
        size_t len = mm_enc_encode(MM_ENC_F32, v, N, pt);
        evil_data(ev, 9, 0, pt, len);
        if (with_end) {
            evil_end(ev, 9, len, 1, MM_ENC_F32);
            assert_int_equal(ev->nmsg[MM_MSG_DONE], 1); /* the core accepted it and waits for our DONE */
        }
        evil_fin(ev);
        h_run(&net, net.now + MM_SEC(1));
        assert_int_equal(net.nodes[0].merges, 0);
        assert_memory_equal(net.nodes[0].x, x, sizeof x);
        assert_int_equal(h_count_logs(&net.nodes[0], MM_LOG_EXCHANGE, 0, "connection closed"), 1);
        assert_int_equal(h_count_logs(&net.nodes[0], MM_LOG_INFO, -1, "lost"), 1);
        mm_gossip_peer_info info[4];
        assert_int_equal(mm_gossip_peers(net.nodes[0].g, info, 4), 1);
        assert_true(info[0].suspect);
        evil_free(ev);
        finish(&net);
    }
}

/* O4 (here at unit level): the peer hangs up in the middle of a frame
 * header, or in the middle of a DATA frame's body: the exchange is
 * aborted, nothing merged, and every buffer the partial frame took is
 * freed (finish() checks allocations against frees). */
static void test_o4_fin_mid_frame(void **state)
{
    (void)state;
    const size_t cut[2] = {MM_FRAME_HEADER / 2, MM_FRAME_HEADER + 1000};
    for (int c = 0; c < 2; c++) {
        h_net net;
        evil *ev = core_and_evil(&net, false);
        float x[N];
        memcpy(x, net.nodes[0].x, sizeof x);
        evil_request(ev, 9, MM_ENC_F32, 0);
        static uint8_t pt[4 * N];
        memset(pt, 0x3c, sizeof pt);
        long n = mm_record_seal(&ev->rec, MM_FRAME_DATA, 9, 0, pt, sizeof pt, ev->out, sizeof ev->out);
        assert_true(n > (long)cut[c]);
        evil_push(ev, ev->out, cut[c]);
        evil_fin(ev);
        h_run(&net, net.now + MM_SEC(1));
        assert_int_equal(net.nodes[0].merges, 0);
        assert_memory_equal(net.nodes[0].x, x, sizeof x);
        assert_int_equal(h_count_logs(&net.nodes[0], MM_LOG_EXCHANGE, 0, "connection closed"), 1);
        evil_free(ev);
        finish(&net);
    }
}

/* O6: an END whose total bytes, chunk count or encoding differ from what
 * arrived, or which comes before the last value: refused; the exchange is
 * aborted, nothing is merged. */
static void test_o6_lying_end(void **state)
{
    (void)state;
    const struct {
        const char *what;
        size_t sent; /* values streamed before END */
        int dtotal, dchunks;
        uint8_t enc;
    } cases[] = {
        {"total + 1", N, 1, 0, MM_ENC_F32},   {"total - 4", N, -4, 0, MM_ENC_F32}, {"chunks + 1", N, 0, 1, MM_ENC_F32},
        {"chunks - 1", N, 0, -1, MM_ENC_F32}, {"encoding", N, 0, 0, MM_ENC_F16},   {"encoding q8", N, 0, 0, MM_ENC_Q8},
        {"early", N - 100, 0, 0, MM_ENC_F32},
    };
    float v[N];
    for (size_t k = 0; k < N; k++) v[k] = 0.5f;
    static uint8_t pt[4 * N];
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        h_net net;
        evil *ev = core_and_evil(&net, false);
        float x[N];
        memcpy(x, net.nodes[0].x, sizeof x);
        evil_request(ev, 3, MM_ENC_F32, 0);
        uint64_t total = 0;
        for (size_t off = 0; off < cases[c].sent; off += 500) { /* two chunks when whole */
            size_t n = cases[c].sent - off < 500 ? cases[c].sent - off : 500;
            size_t len = mm_enc_encode(MM_ENC_F32, v + off, n, pt);
            evil_data(ev, 3, off, pt, len);
            total += len;
        }
        uint32_t chunks = (uint32_t)((cases[c].sent + 499) / 500);
        evil_end(ev, 3, (uint64_t)((int64_t)total + cases[c].dtotal), (uint32_t)((int)chunks + cases[c].dchunks),
                 cases[c].enc);
        assert_int_equal(h_count_logs(&net.nodes[0], MM_LOG_EXCHANGE, 0, "END does not match what was received"), 1);
        assert_int_equal(ev->abort_frames, 1);
        assert_int_equal(ev->nmsg[MM_MSG_DONE], 0);
        evil_done(ev, 3);
        h_run(&net, net.now + MM_SEC(1));
        assert_int_equal(net.nodes[0].merges, 0);
        assert_memory_equal(net.nodes[0].x, x, sizeof x);
        evil_free(ev);
        finish(&net);
    }
}

/* ======================================================== message decoding */

/* M2, M3 through a session: a CTRL frame holding 10^4 nested arrays, a
 * string whose length runs past the end, a truncated array, a valid message
 * with a trailing byte, a 1000-entry list: each closes the connection with
 * a named reason, and the core keeps running (no stack growth: the
 * pre-validator does not recurse). */
static void test_m2_m3_hostile_ctrl(void **state)
{
    (void)state;
    static uint8_t deep[10001];
    memset(deep, 0x91, 10000);
    deep[10000] = 0xc0;
    static const uint8_t past_end[] = {0x92, 0x07, 0xd9, 0x10, 'a', 'b'};         /* str8 of 16, 2 present */
    static const uint8_t truncated[] = {0x95, 0x02, 0x01, 0x00};                  /* EXCH_REQ of 5, 3 present */
    static const uint8_t trailing[] = {0x92, 0x07, 0x2a, 0xc0};                   /* PING 42, then nil */
    static const uint8_t huge_bin[] = {0x92, 0x07, 0xc6, 0xff, 0xff, 0xff, 0xff}; /* bin32 of 4 GiB */
    const struct {
        const uint8_t *p;
        size_t n;
    } cases[] = {{deep, sizeof deep},
                 {past_end, sizeof past_end},
                 {truncated, sizeof truncated},
                 {trailing, sizeof trailing},
                 {huge_bin, sizeof huge_bin}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        h_net net;
        evil *ev = core_and_evil(&net, false);
        size_t before = net.live_bytes;
        evil_send_frame(ev, MM_FRAME_CTRL, 0, 0, cases[c].p, cases[c].n);
        assert_true(evil_closed(ev));
        assert_int_equal(h_count_logs(&net.nodes[0], MM_LOG_REFUSED, -1, "malformed control message"), 1);
        assert_true(net.peak_bytes < before + (1u << 20)); /* nothing sized by the input */
        assert_int_equal(stats(&net, 0).sessions, 0);
        evil_free(ev);
        finish(&net);
    }
}

/* ============================================================ membership */

/* Core (node 0) knows honest node 1 through its HELLO; then a hostile member
 * joins the core. node 1's incarnation (its record's seq) is inc. */
static evil *core_member_evil(h_net *net, uint64_t inc, const uint8_t (*allow)[32], uint32_t nallow)
{
    net_init(net, 64);
    for (int i = 0; i < 2; i++) {
        mm_gossip_config c = h_config(i, netkey, 64, 0xab);
        c.incarnation = i == 1 ? inc : 1;
        if (i == 0) c.allowlist = allow, c.nallow = nallow;
        assert_int_equal(h_add_node(net, &c, 100 + (uint64_t)i), i);
    }
    mm_gossip_bootstrap(net->nodes[1].g, net->nodes[0].addr, net->now);
    h_run(net, MM_MS(10));
    evil *ev = evil_new(net, 0, 1, "10.66.0.1:9000");
    assert_true(evil_join(ev));
    assert_true(in_view(net, 0, mm_gossip_id(net->nodes[1].g), NULL));
    return ev;
}

static void evil_shuffle(evil *ev, const mm_addr_rec *recs, uint32_t n)
{
    mm_msg m = {.type = MM_MSG_SHUFFLE};
    m.u.shuffle.n = n;
    memcpy(m.u.shuffle.recs, recs, n * sizeof *recs);
    evil_send(ev, &m);
    evil_poll(ev);
}

/* E1: a member shuffles a record that names an honest id with the
 * attacker's address, signed by the attacker (it cannot sign as the
 * victim); and one of a new id with a signature that is not its own. Both
 * are dropped (penalty MM_PENALTY_RATE each, no close); a correctly signed
 * record still gets in, so the test can fail. */
static void test_e1_forged_address_record(void **state)
{
    (void)state;
    h_net net;
    evil *ev = core_member_evil(&net, 1, NULL, 0);
    const uint8_t *victim = mm_gossip_id(net.nodes[1].g);
    char before[MM_ADDR_MAX], after[MM_ADDR_MAX];
    assert_true(in_view(&net, 0, victim, before));
    mm_addr_rec recs[3];
    sign_record(&recs[0], ev->sk, "10.66.0.1:9000", 99, false);
    memcpy(recs[0].id, victim, MM_ID_BYTES); /* the victim's id, our signature */
    uint8_t other[64], third[64];
    identity(other, 50);
    identity(third, 51);
    sign_record(&recs[1], other, "10.67.0.1:9000", 1, false);
    recs[1].sig[0] ^= 1; /* a bit off */
    sign_record(&recs[2], third, "10.68.0.1:9000", 1, false);
    evil_shuffle(ev, recs, 3);
    assert_true(in_view(&net, 0, victim, after));
    assert_string_equal(after, before);
    assert_false(in_view(&net, 0, recs[1].id, NULL));
    assert_true(in_view(&net, 0, recs[2].id, NULL)); /* control */
    assert_false(evil_closed(ev));
    assert_int_equal(ev->nmsg[MM_MSG_SHUFFLE_REPLY], 1);
    evil_free(ev);
    finish(&net);
}

/* E2: a genuine but older record of node 1 (lower seq, another address) is
 * replayed: ignored. A newer one replaces it (control). */
static void test_e2_replayed_lower_seq(void **state)
{
    (void)state;
    h_net net;
    evil *ev = core_member_evil(&net, 5, NULL, 0);
    const uint8_t *victim = mm_gossip_id(net.nodes[1].g);
    mm_gossip_config c1 = h_config(1, netkey, 64, 0xab);
    char addr[MM_ADDR_MAX];
    mm_addr_rec r;
    for (uint64_t seq = 1; seq <= 5; seq++) { /* older, and the same seq elsewhere */
        sign_record(&r, c1.identity_sk, "10.77.0.1:7001", seq, false);
        evil_shuffle(ev, &r, 1);
        assert_true(in_view(&net, 0, victim, addr));
        assert_string_equal(addr, net.nodes[1].addr);
    }
    sign_record(&r, c1.identity_sk, "10.77.0.1:7001", 6, false);
    evil_shuffle(ev, &r, 1);
    assert_true(in_view(&net, 0, victim, addr));
    assert_string_equal(addr, "10.77.0.1:7001");
    assert_false(evil_closed(ev));
    evil_free(ev);
    finish(&net);
}

/* E3: a LEAVE for node 1 sent by another member, whether signed by the
 * sender, carrying node 1's own leave notice (replayed from elsewhere), or
 * the sender's own address record passed off as a leave (domain
 * separation): refused as forged, the sender closed and penalised, node 1
 * stays. The protocol has no suspicion message to forge: only the core's
 * own failed probes evict (the control at the end: node 1 crashes and is
 * declared dead by the core itself). */
static void test_e3_forged_leave(void **state)
{
    (void)state;
    mm_gossip_config c1 = h_config(1, netkey, 64, 0xab);
    for (int k = 0; k < 3; k++) {
        h_net net;
        evil *ev = core_member_evil(&net, 1, NULL, 0);
        const uint8_t *victim = mm_gossip_id(net.nodes[1].g);
        mm_msg m = {.type = MM_MSG_LEAVE};
        if (k == 0) {
            sign_record(&m.u.leave.rec, ev->sk, "", 1, true);
            memcpy(m.u.leave.rec.id, victim, MM_ID_BYTES);
        } else if (k == 1) {
            sign_record(&m.u.leave.rec, c1.identity_sk, "", 1, true);
        } else {
            sign_record(&m.u.leave.rec, ev->sk, "", 1, false);
        }
        evil_send(ev, &m);
        assert_true(evil_closed(ev));
        assert_int_equal(h_count_logs(&net.nodes[0], MM_LOG_REFUSED, -1, "forged LEAVE"), 1);
        assert_true(in_view(&net, 0, victim, NULL));
        assert_int_equal(h_count_logs(&net.nodes[0], MM_LOG_PEER_DOWN, -1, NULL), 0);
        if (k == 2) {
            h_run(&net, net.now + MM_SEC(5));
            assert_true(in_view(&net, 0, victim, NULL));
            h_crash(&net, 1);
            h_run(&net, net.now + MM_SUSPECT_TIMEOUT + MM_PROBE_PERIOD + MM_SEC(1));
            assert_false(in_view(&net, 0, victim, NULL));
            char dead[MM_ADDR_MAX + 32];
            snprintf(dead, sizeof dead, "(%s) unreachable: declared dead", net.nodes[1].addr);
            assert_int_equal(h_count_logs(&net.nodes[0], MM_LOG_PEER_DOWN, -1, dead), 1);
            net.nodes[1].down = false;
        }
        evil_free(ev);
        finish(&net);
    }
}

/* Distinct identities in distinct /24s, validly signed. */
static void fresh_records(mm_addr_rec *recs, int n, int base)
{
    for (int i = 0; i < n; i++) {
        uint8_t sk[64];
        char addr[MM_ADDR_MAX];
        identity(sk, base + i);
        snprintf(addr, sizeof addr, "10.%d.%d.1:7000", 100 + (base + i) / 200, (base + i) % 200);
        sign_record(&recs[i], sk, addr, 1, false);
    }
}

/* E4: a shuffle of 1000 entries, or of 33, is refused whole (decode limit
 * MM_SHUFFLE_MAX = 32; the connection closes). Of valid shuffles, at most
 * MM_SHUFFLE_LEN new entries per sender get into the view per
 * MM_SHUFFLE_PERIOD, however many shuffles it sends; past the control-rate
 * burst the sender is penalised until banned. */
static void test_e4_shuffle_flood(void **state)
{
    (void)state;
    static mm_addr_rec recs[40 * 8];
    fresh_records(recs, 40 * 8, 200);
    {
        h_net net;
        evil *ev = core_member_evil(&net, 1, NULL, 0);
        static uint8_t big[3 + 2 + 1000];
        big[0] = 0x92, big[1] = MM_MSG_SHUFFLE, big[2] = 0xdc, big[3] = 0x03, big[4] = 0xe8; /* array16 of 1000 */
        memset(big + 5, 0xc0, 1000);
        evil_send_frame(ev, MM_FRAME_CTRL, 0, 0, big, 5 + 1000);
        assert_true(evil_closed(ev));
        assert_int_equal(h_count_logs(&net.nodes[0], MM_LOG_REFUSED, -1, "has 1000 entries (max 32)"), 1);
        evil_free(ev);
        finish(&net);
    }
    {
        h_net net;
        evil *ev = core_member_evil(&net, 1, NULL, 0);
        mm_msg m = {.type = MM_MSG_SHUFFLE};
        m.u.shuffle.n = MM_SHUFFLE_MAX;
        memcpy(m.u.shuffle.recs, recs, sizeof m.u.shuffle.recs);
        uint8_t buf[8192], frame[8192];
        long n = mm_msg_encode(&m, buf, sizeof buf);
        assert_true(n > 0);
        /* one more record: patch the array16 count 32 -> 33 and append a copy */
        uint8_t *cnt = memchr(buf, 0xdc, 8);
        assert_non_null(cnt);
        assert_int_equal(cnt[2], 32);
        cnt[2] = 33;
        size_t one = ((size_t)n - (size_t)(cnt + 3 - buf)) / 32;
        memcpy(frame, buf, (size_t)n);
        memcpy(frame + n, cnt + 3, one);
        evil_send_frame(ev, MM_FRAME_CTRL, 0, 0, frame, (size_t)n + one);
        assert_true(evil_closed(ev));
        assert_int_equal(h_count_logs(&net.nodes[0], MM_LOG_REFUSED, -1, "has 33 entries (max 32)"), 1);
        assert_int_equal(stats(&net, 0).view, 2);
        evil_free(ev);
        finish(&net);
    }
    {
        h_net net;
        evil *ev = core_member_evil(&net, 1, NULL, 0);
        uint32_t v0 = stats(&net, 0).view; /* node 1 and the attacker */
        /* 40 shuffles of 8 new records within one second (100/s) */
        for (int i = 0; i < 40; i++) {
            evil_shuffle(ev, recs + 8 * i, 8);
            net.now += MM_MS(10);
        }
        uint32_t v1 = stats(&net, 0).view;
        assert_true(v1 - v0 <= MM_SHUFFLE_LEN);
        assert_true(v1 - v0 >= 1);
        assert_false(evil_closed(ev));
        /* next round: again at most MM_SHUFFLE_LEN */
        net.now += MM_SHUFFLE_PERIOD;
        mm_addr_rec more[8];
        fresh_records(more, 8, 900);
        evil_shuffle(ev, more, 8);
        uint32_t v2 = stats(&net, 0).view;
        assert_true(v2 > v1 && v2 - v1 <= MM_SHUFFLE_LEN);
        /* and a burst over the control rate: penalised, then banned */
        for (int i = 0; i < MM_CTRL_BURST + 40 && !evil_closed(ev); i++) {
            mm_msg m = {.type = MM_MSG_SHUFFLE};
            evil_send(ev, &m);
        }
        assert_true(evil_closed(ev));
        assert_int_equal(h_count_logs(&net.nodes[0], MM_LOG_REFUSED, -1, "banned for"), 1);
        evil_free(ev);
        finish(&net);
    }
}

/* E6: with an allowlist, a validly self-signed record of a non-member,
 * shuffled by a member, never enters the view; a member's does. */
static void test_e6_non_member_records(void **state)
{
    (void)state;
    static uint8_t allow[4][32];
    mm_gossip_config c0 = h_config(0, netkey, 64, 0xab), c1 = h_config(1, netkey, 64, 0xab);
    uint8_t esk[64], msk[64], xsk[64];
    identity(esk, 1); /* evil_new(..., 1, ...) */
    identity(msk, 60);
    identity(xsk, 61);
    memcpy(allow[0], c0.identity_sk + 32, 32);
    memcpy(allow[1], c1.identity_sk + 32, 32);
    memcpy(allow[2], esk + 32, 32);
    memcpy(allow[3], msk + 32, 32);
    h_net net;
    evil *ev = core_member_evil(&net, 1, (const uint8_t(*)[32])allow, 4);
    mm_addr_rec recs[2];
    sign_record(&recs[0], xsk, "10.61.0.1:7000", 1, false);
    sign_record(&recs[1], msk, "10.60.0.1:7000", 1, false);
    evil_shuffle(ev, recs, 2);
    assert_false(in_view(&net, 0, recs[0].id, NULL));
    assert_true(in_view(&net, 0, recs[1].id, NULL));
    /* node 1's shuffles pass it on? It never learned it either. */
    h_run(&net, net.now + MM_SEC(30));
    assert_false(in_view(&net, 0, recs[0].id, NULL));
    evil_free(ev);
    finish(&net);
}

/* ================================================== parameter poisoning */

/* The attacker offers v (n values) in encoding enc, in chunks, and says
 * DONE if the core accepts; returns whether the core merged. */
static bool offer(evil *ev, uint32_t xid, uint8_t enc, const uint8_t *chunks[], const size_t lens[], int nchunks)
{
    h_net *net = ev->net;
    int merges = net->nodes[ev->node].merges;
    evil_request(ev, xid, enc, 0);
    assert_int_equal(ev->nmsg[MM_MSG_EXCH_ACK], 1);
    uint64_t off = 0, total = 0;
    for (int i = 0; i < nchunks; i++) {
        evil_data(ev, xid, off, chunks[i], lens[i]);
        off += mm_enc_values(enc, lens[i]);
        total += lens[i];
    }
    evil_end(ev, xid, total, (uint32_t)nchunks, enc);
    if (ev->nmsg[MM_MSG_DONE]) evil_done(ev, xid);
    h_run(net, net->now + MM_MS(10));
    return net->nodes[ev->node].merges > merges;
}

/* N2: f16 and bf16 values with an all-ones exponent (+-Inf, quiet and
 * signalling NaN) in the first, middle or last chunk; q8 chunk scales that
 * are NaN, +-Inf, +-0, negative, above 2^64 or FLT_MAX. All refused before
 * any merge; live parameters bit-identical; penalty. The limits themselves
 * (a scale of exactly 2^64, a subnormal scale) are accepted. */
static void test_n2_bad_encodings(void **state)
{
    (void)state;
    static uint8_t ch[4][2 * 250];
    const uint16_t halfs[2][4] = {{0x7c00, 0xfc00, 0x7e00, 0x7c01}, {0x7f80, 0xff80, 0x7fc0, 0x7f81}};
    const uint8_t encs[2] = {MM_ENC_F16, MM_ENC_BF16};
    float v[N];
    for (size_t k = 0; k < N; k++) v[k] = 0.25f * (float)(k % 13);
    int runs = 0;
    for (int e = 0; e < 2; e++)
        for (int b = 0; b < 4; b++)
            for (int where = 0; where < 3; where++) {
                h_net net;
                evil *ev = core_and_evil(&net, false);
                float x[N];
                memcpy(x, net.nodes[0].x, sizeof x);
                const uint8_t *p[4];
                size_t lens[4];
                for (int i = 0; i < 4; i++) {
                    lens[i] = mm_enc_encode(encs[e], v + 250 * i, 250, ch[i]);
                    p[i] = ch[i];
                }
                int c = where == 0 ? 0 : where == 1 ? 2 : 3;
                size_t at = where == 0 ? 0 : where == 1 ? 125 : 249;
                ch[c][2 * at] = (uint8_t)halfs[e][b];
                ch[c][2 * at + 1] = (uint8_t)(halfs[e][b] >> 8);
                assert_false(offer(ev, 5, encs[e], p, lens, 4));
                assert_int_equal(h_count_logs(&net.nodes[0], MM_LOG_EXCHANGE, 0, "non-finite"), 1);
                assert_int_equal(ev->abort_frames, 1);
                assert_memory_equal(net.nodes[0].x, x, sizeof x);
                evil_free(ev);
                finish(&net);
                runs++;
            }
    const float scales[] = {NAN, INFINITY, -INFINITY, 0.0f, -0.0f, -1.0f, 0x1.0p65f, FLT_MAX, 0x1.0p64f, 1e-40f};
    for (int s = 0; s < 10; s++) {
        bool ok = s >= 8;
        h_net net;
        evil *ev = core_and_evil(&net, false);
        float x[N];
        memcpy(x, net.nodes[0].x, sizeof x);
        static uint8_t q[4][4 + 250];
        const uint8_t *p[4];
        size_t lens[4];
        for (int i = 0; i < 4; i++) {
            lens[i] = mm_enc_encode(MM_ENC_Q8, v + 250 * i, 250, q[i]);
            p[i] = q[i];
        }
        memcpy(q[2], &scales[s], 4); /* a middle chunk's scale (little-endian host) */
        assert_true(offer(ev, 5, MM_ENC_Q8, p, lens, 4) == ok);
        if (!ok) {
            assert_int_equal(h_count_logs(&net.nodes[0], MM_LOG_EXCHANGE, 0, "non-finite"), 1);
            assert_memory_equal(net.nodes[0].x, x, sizeof x);
        }
        assert_true(all_finite(net.nodes[0].x, N));
        evil_free(ev);
        finish(&net);
        runs++;
    }
    print_message("%d poisoned encodings offered\n", runs);
}

/* N3: FLT_MAX from a peer, with clipping on (the default of node/). The
 * distance is computed in double, so it is finite, and:
 *  - FLT_MAX in every value: too far on every tensor, refused; bit-identical;
 *  - FLT_MAX in one tensor of three: that tensor is clipped to tau (its
 *    change bounded by w * tau), the others merge as usual, nothing is Inf;
 *  - FLT_MAX, then -FLT_MAX, in the padding between tensors (values no
 *    tensor covers, so no clipping bound applies): the padding must not
 *    change, or the second merge overflows to -Inf and the node is then
 *    barred from averaging for good (N4 refuses a non-finite snapshot);
 *  - -0.0 and subnormals (f32 and f16) are ordinary values, accepted. */
static bool in_tensor(size_t k)
{
    for (int t = 0; t < 3; t++)
        if (k >= tensors[t].offset && k < tensors[t].offset + tensors[t].count) return true;
    return false;
}

static bool offer_f32(evil *ev, uint32_t xid, const float *v)
{
    static uint8_t buf[4 * N];
    size_t len = mm_enc_encode(MM_ENC_F32, v, N, buf);
    const uint8_t *p[1] = {buf};
    size_t lens[1] = {len};
    return offer(ev, xid, MM_ENC_F32, p, lens, 1);
}

static void test_n3_extreme_values(void **state)
{
    (void)state;
    float v[N], x[N];
    {
        h_net net;
        evil *ev = core_and_evil(&net, true);
        memcpy(x, net.nodes[0].x, sizeof x);
        for (size_t k = 0; k < N; k++) v[k] = FLT_MAX;
        assert_false(offer_f32(ev, 1, v));
        assert_int_equal(h_count_logs(&net.nodes[0], MM_LOG_EXCHANGE, 0, "too far"), 1);
        assert_memory_equal(net.nodes[0].x, x, sizeof x);
        evil_free(ev);
        finish(&net);
    }
    {
        h_net net;
        evil *ev = core_and_evil(&net, true);
        memcpy(x, net.nodes[0].x, sizeof x);
        double n2 = 0;
        for (size_t k = 0; k < tensors[0].count; k++) n2 += (double)x[k] * (double)x[k];
        double tau = MM_CLIP_BOOT * sqrt(n2); /* no history yet: the bootstrap bound */
        memcpy(v, x, sizeof v);
        for (size_t k = 0; k < tensors[0].count; k++) v[k] = FLT_MAX;
        assert_true(offer_f32(ev, 1, v));
        assert_true(all_finite(net.nodes[0].x, N));
        double d2 = 0;
        for (size_t k = 0; k < N; k++) {
            double d = (double)net.nodes[0].x[k] - (double)x[k];
            if (k < tensors[0].count)
                d2 += d * d;
            else
                assert_true(d == 0.0);
        }
        assert_true(sqrt(d2) <= 0.5 * tau * (1 + 1e-5));
        assert_true(sqrt(d2) >= 0.5 * tau * (1 - 1e-3)); /* clipped to the bound, not refused */
        evil_free(ev);
        finish(&net);
    }
    {
        h_net net;
        evil *ev = core_and_evil(&net, true);
        memcpy(x, net.nodes[0].x, sizeof x);
        for (int round = 0; round < 2; round++) {
            memcpy(v, net.nodes[0].x, sizeof v);
            for (size_t k = 0; k < N; k++)
                if (!in_tensor(k)) v[k] = round ? -FLT_MAX : FLT_MAX;
            offer_f32(ev, 1 + (uint32_t)round, v);
            ev->nmsg[MM_MSG_EXCH_ACK] = ev->nmsg[MM_MSG_DONE] = 0;
        }
        assert_true(all_finite(net.nodes[0].x, N));
        for (size_t k = 0; k < N; k++)
            if (!in_tensor(k)) assert_true(net.nodes[0].x[k] == x[k]);
        evil_free(ev);
        finish(&net);
    }
    for (int e = 0; e < 2; e++) {
        h_net net;
        evil *ev = core_and_evil(&net, true);
        memcpy(v, net.nodes[0].x, sizeof v);
        for (size_t k = 0; k < N; k += 7) v[k] = k % 2 ? -0.0f : 1e-40f;
        if (e == 0) {
            assert_true(offer_f32(ev, 1, v));
        } else {
            static uint8_t h[2 * N];
            size_t len = mm_enc_encode(MM_ENC_F16, v, N, h);
            h[0] = 0x01, h[1] = 0x00; /* the smallest f16 subnormal */
            h[2] = 0x00, h[3] = 0x80; /* -0 */
            const uint8_t *p[1] = {h};
            assert_true(offer(ev, 1, MM_ENC_F16, p, &len, 1));
        }
        assert_true(all_finite(net.nodes[0].x, N));
        evil_free(ev);
        finish(&net);
    }
}

/* ================================================== slowloris, exhaustion */

/* L3: a member trickles its vector at 1 KiB/s. The progress rule (less than
 * MM_EXCH_PROGRESS_MIN in MM_EXCH_PROGRESS_WINDOW) aborts its exchange;
 * an honest node's exchange with the same core, running meanwhile,
 * completes and merges. */
static void test_l3_slow_data(void **state)
{
    (void)state;
    const size_t dim = 16384; /* 64 KiB: 64 s at 1 KiB/s */
    h_net net;
    honest_nodes(&net, 2, dim, false);
    mm_gossip_bootstrap(net.nodes[1].g, net.nodes[0].addr, net.now);
    h_run(&net, MM_MS(10));
    evil *ev = evil_new(&net, 0, 1, "10.66.0.1:9000");
    assert_true(evil_join(ev));
    evil_request(ev, 4, MM_ENC_F32, 0);
    assert_int_equal(ev->nmsg[MM_MSG_EXCH_ACK], 1);
    uint64_t start = net.now;
    assert_int_equal(mm_gossip_average_now(net.nodes[1].g, net.now), 0);
    static uint8_t kib[1024];
    memset(kib, 0x3c, sizeof kib);
    uint64_t off = 0;
    while (!ev->abort_frames && net.now < start + MM_SEC(30)) {
        evil_data(ev, 4, off, kib, sizeof kib);
        off += sizeof kib / 4;
        h_run(&net, net.now + MM_SEC(1));
        evil_poll(ev);
    }
    assert_int_equal(ev->abort_frames, 1);
    assert_true(net.now - start <= MM_EXCH_PROGRESS_WINDOW + MM_SEC(1));
    assert_int_equal(h_count_logs(&net.nodes[0], MM_LOG_EXCHANGE, 0, "too slowly"), 1);
    assert_int_equal(h_count_logs(&net.nodes[0], MM_LOG_EXCHANGE, 1, NULL), 1); /* node 1's */
    assert_int_equal(net.nodes[0].merges, 1);
    assert_int_equal(net.nodes[1].merges, 1);
    assert_false(evil_closed(ev));
    evil_free(ev);
    finish(&net);
}

/* L5: one member sends 50 exchange requests at once: one is served, 49 get
 * BUSY. Five members asking at once: MM_MAX_EXCHANGES are served, the
 * rest get BUSY. Memory grows by at most one receive buffer per served
 * exchange (plus a little for frames). */
static void test_l5_request_spam(void **state)
{
    (void)state;
    {
        h_net net;
        evil *ev = core_and_evil(&net, false);
        size_t base = net.live_bytes;
        net.peak_bytes = base;
        for (uint32_t i = 1; i <= 50; i++) evil_request(ev, i, MM_ENC_F32, 0);
        assert_int_equal(ev->nmsg[MM_MSG_EXCH_ACK], 1);
        assert_int_equal(ev->nmsg[MM_MSG_BUSY], 49);
        assert_int_equal(ev->last[MM_MSG_BUSY].u.refuse.code, MM_REFUSE_BUSY);
        assert_true(net.peak_bytes - base <= N * sizeof(float) + (64u << 10));
        assert_false(evil_closed(ev));
        evil_free(ev);
        finish(&net);
    }
    {
        h_net net;
        honest_nodes(&net, 1, N, false);
        evil *evs[MM_MAX_EXCHANGES + 1];
        for (int i = 0; i <= MM_MAX_EXCHANGES; i++) {
            char addr[MM_ADDR_MAX];
            snprintf(addr, sizeof addr, "10.66.%d.1:9000", i);
            evs[i] = evil_new(&net, 0, 10 + i, addr);
            assert_true(evil_join(evs[i]));
        }
        size_t base = net.live_bytes;
        net.peak_bytes = base;
        int acks = 0, busy = 0;
        for (int i = 0; i <= MM_MAX_EXCHANGES; i++) {
            evil_request(evs[i], 1, MM_ENC_F32, 0);
            acks += evs[i]->nmsg[MM_MSG_EXCH_ACK];
            busy += evs[i]->nmsg[MM_MSG_BUSY];
        }
        assert_int_equal(acks, MM_MAX_EXCHANGES);
        assert_int_equal(busy, 1);
        assert_true(net.peak_bytes - base <= MM_MAX_EXCHANGES * (N * sizeof(float) + (64u << 10)));
        for (int i = 0; i <= MM_MAX_EXCHANGES; i++) evil_free(evs[i]);
        finish(&net);
    }
}

/* ================================================================== scores */

/* S3: a member that sends a malformed message is closed with a penalty of
 * 50; reconnecting (a new handshake, a new connection) does not reset the
 * score: the third offence bans it, and the ban holds at the handshake.
 * After the ban, the decayed score is still kept: one more offence bans it
 * again, for twice as long. (It comes back from another /24 each time: its
 * own /24 is banned with it, S2.) */
static void test_s3_score_survives_reconnect(void **state)
{
    (void)state;
    h_net net;
    honest_nodes(&net, 1, 64, false);
    evil *ev = evil_new(&net, 0, 1, "10.66.0.1:9000");
    static const uint8_t junk[] = {0xc1};
    for (int i = 0; i < 3; i++) {
        assert_true(evil_join(ev));
        evil_send_frame(ev, MM_FRAME_CTRL, 0, 0, junk, sizeof junk);
        assert_true(evil_closed(ev));
        assert_int_equal(h_count_logs(&net.nodes[0], MM_LOG_REFUSED, -1, "banned for 600 s"), i == 2);
        h_run(&net, net.now + MM_SEC(1));
    }
    snprintf(ev->addr, sizeof ev->addr, "10.99.0.1:9000");
    assert_false(evil_join(ev));
    assert_int_equal(h_count_logs(&net.nodes[0], MM_LOG_REFUSED, -1, "identity is banned"), 1);
    h_run(&net, net.now + MM_BAN_FIRST);
    assert_true(evil_join(ev));
    evil_send_frame(ev, MM_FRAME_CTRL, 0, 0, junk, sizeof junk);
    assert_int_equal(h_count_logs(&net.nodes[0], MM_LOG_REFUSED, -1, "banned for 1200 s"), 1);
    evil_free(ev);
    finish(&net);
}


/* ============================================ certs mode (SECURITY.md §2.2) */

#define T0 1700000000ll /* wall time (unix s) at virtual time 0 in these tests */
#define DAY 86400

/* A certificate for member, signed by sk (the owner's unless a test says
 * otherwise), for network nid (NULL: ours). */
static void issue(uint8_t out[MM_CERT_BYTES], const uint8_t sk[64], const uint8_t *nid, const uint8_t member[32],
                  int64_t not_before, int64_t not_after, uint64_t serial)
{
    mm_cert c;
    memset(&c, 0, sizeof c);
    c.ver = MM_CERT_VERSION;
    if (nid)
        memcpy(c.network_id, nid, 32);
    else
        network_id(c.network_id);
    memcpy(c.member_pk, member, 32);
    c.not_before = (uint64_t)not_before;
    c.not_after = (uint64_t)not_after;
    c.serial = serial;
    mm_cert_sign(&c, sk);
    mm_cert_encode(&c, out);
}

/* An owner-signed revocation list: version, then serials (kind 0) or keys. */
static mm_revlist revlist(uint64_t version, int nserial, const uint64_t *serials, const uint8_t *key)
{
    mm_revlist l;
    memset(&l, 0, sizeof l);
    l.version = version;
    for (int i = 0; i < nserial; i++) l.e[l.n++] = (mm_revoke_entry){.kind = MM_REVOKE_SERIAL, .serial = serials[i]};
    if (key) {
        l.e[l.n].kind = MM_REVOKE_KEY;
        memcpy(l.e[l.n++].key, key, 32);
    }
    mm_revlist_sign(&l, netmode.owner_sk);
    return l;
}

/* n honest members (dim 64) of a certs-mode network; member i holds serial
 * 100 + i valid [T0 - 1 h, T0 + 7 days) unless not_after[i] says otherwise;
 * node 0 starts with revs (may be NULL). */
static void certs_nodes(h_net *net, int n, const int64_t *not_after, const mm_revlist *revs)
{
    net_init(net, 64);
    netmode.certs = true;
    identity(netmode.owner_sk, 200);
    crypto_sign_ed25519_sk_to_pk(netmode.owner_pk, netmode.owner_sk);
    netmode.wall_offset_ns = T0 * 1000000000ll;
    for (int i = 0; i < n; i++) {
        mm_gossip_config c = h_config(i, netkey, 64, 0xab);
        c.certs = true;
        memcpy(c.owner_pk, netmode.owner_pk, 32);
        c.wall_offset_ns = netmode.wall_offset_ns;
        issue(c.cert, netmode.owner_sk, NULL, c.identity_sk + 32, T0 - 3600,
              not_after && not_after[i] ? not_after[i] : T0 + 7 * DAY, 100 + (uint64_t)i);
        c.revocations = i == 0 ? revs : NULL;
        assert_int_equal(h_add_node(net, &c, 300 + (uint64_t)i), i);
    }
}

/* H5: the initiator (a hostile holder of the network key) presents no
 * certificate, or one that is expired, not yet valid, for another network,
 * not signed by the owner, for another identity, too long, or revoked (by
 * serial or by key): refused at msg3 with the reason, no session. A valid
 * one is accepted, and the core's msg2 carried its own certificate. */
static void test_h5_certificates(void **state)
{
    (void)state;
    enum { NONE, EXPIRED, NOT_YET, OTHER_NET, NOT_OWNER, OTHER_MEMBER, TOO_LONG, REVOKED_SERIAL, REVOKED_KEY, VALID };
    static const char *const why[] = {
        "presented no membership certificate", "certificate expired", "certificate not yet valid",
        "certificate is for another network",  "certificate not signed by the network owner",
        "certificate names another identity",  "certificate valid for longer than 30 days",
        "certificate revoked (serial 666)",    "certificate revoked (serial 7)", NULL,
    };
    for (int k = NONE; k <= VALID; k++) {
        h_net net;
        certs_nodes(&net, 1, NULL, NULL);
        evil *ev = evil_new(&net, 0, 1, "10.66.0.1:9000");
        uint8_t other_sk[64], other_nid[32], nobody[32] = {9};
        identity(other_sk, 201);
        mm_cert_network_id(other_sk + 32, other_nid);
        int64_t nb = T0 - 3600, na = T0 + DAY;
        uint64_t serial = k == REVOKED_SERIAL ? 666 : 7;
        if (k == EXPIRED) nb = T0 - 10 * DAY, na = T0 - MM_CLOCK_SKEW_S - 1;
        if (k == NOT_YET) nb = T0 + MM_CLOCK_SKEW_S + 60, na = T0 + DAY;
        if (k == TOO_LONG) na = nb + MM_CERT_LIFETIME_MAX_S + 1;
        ev->has_cert = k != NONE;
        issue(ev->cert, k == NOT_OWNER ? other_sk : netmode.owner_sk, k == OTHER_NET ? other_nid : NULL,
              k == OTHER_MEMBER ? nobody : ev->id, nb, na, serial);
        if (k == REVOKED_SERIAL || k == REVOKED_KEY) {
            uint64_t s666 = 666;
            mm_revlist l = revlist(1, k == REVOKED_SERIAL, &s666, k == REVOKED_KEY ? ev->id : NULL);
            assert_int_equal(mm_gossip_set_revocations(net.nodes[0].g, &l, net.now), 0);
        }
        bool up = evil_join(ev);
        if (k == VALID) {
            assert_true(up);
            assert_int_equal(stats(&net, 0).sessions, 1);
            mm_cert mine;
            assert_int_equal(mm_cert_decode(&mine, ev->peer_payload + 105), MM_CERT_OK); /* msg2 carried the core's */
            assert_int_equal(mm_cert_check(&mine, netmode.owner_pk, mm_gossip_id(net.nodes[0].g), wall_now(&net)),
                             MM_CERT_OK);
        } else {
            assert_false(up);
            assert_true(evil_closed(ev));
            if (h_count_logs(&net.nodes[0], MM_LOG_REFUSED, -1, why[k]) != 1)
                fail_msg("case %d: no refusal saying '%s'", k, why[k]);
            assert_int_equal(stats(&net, 0).handshakes_ok, 0);
            assert_int_equal(h_count_logs(&net.nodes[0], MM_LOG_PEER_UP, -1, NULL), 0);
        }
        evil_free(ev);
        finish(&net);
    }
}

/* H5, initiator side: a core dialling a responder whose certificate is not
 * the owner's aborts after msg2 and never sends msg3 (its identity and
 * certificate stay hidden). Two honest cores with valid certificates
 * connect. A core refuses to start with a certificate not its own. */
static void test_h5_responder_certificate(void **state)
{
    (void)state;
    h_net net;
    certs_nodes(&net, 2, NULL, NULL);
    mm_gossip_bootstrap(net.nodes[1].g, net.nodes[0].addr, net.now);
    h_run(&net, MM_MS(100));
    assert_int_equal(stats(&net, 0).sessions, 1);
    assert_int_equal(stats(&net, 1).sessions, 1);
    finish(&net);

    certs_nodes(&net, 2, NULL, NULL);
    mm_gossip_free(net.nodes[0].g); /* node 0 again, with a certificate the owner never signed */
    mm_gossip_config c = h_config(0, netkey, 64, 0xab);
    c.certs = true;
    memcpy(c.owner_pk, netmode.owner_pk, 32);
    c.wall_offset_ns = netmode.wall_offset_ns;
    uint8_t other_sk[64];
    identity(other_sk, 201);
    issue(c.cert, other_sk, NULL, c.identity_sk + 32, T0, T0 + DAY, 1);
    mm_gossip_env env = {.random = mm_rng_fill, .random_ctx = &net.nodes[0].rng, .alloc = h_alloc, .free = h_free,
                         .alloc_ctx = &net};
    assert_null(mm_gossip_new(&c, &env, net.now)); /* refused at start */
    /* and as a renewal */
    mm_gossip_config ok = c;
    issue(ok.cert, netmode.owner_sk, NULL, c.identity_sk + 32, T0, T0 + DAY, 1);
    net.nodes[0].g = mm_gossip_new(&ok, &env, net.now);
    assert_non_null(net.nodes[0].g);
    assert_int_equal(mm_gossip_set_cert(net.nodes[0].g, c.cert, net.now), MM_ERR_INVALID);
    finish(&net);

    /* The responder's certificate expired: the initiator refuses after msg2. */
    int64_t na[2] = {T0 - MM_CLOCK_SKEW_S - 1, 0};
    certs_nodes(&net, 2, na, NULL);
    mm_gossip_bootstrap(net.nodes[1].g, net.nodes[0].addr, net.now);
    h_run(&net, MM_MS(100));
    assert_int_equal(h_count_logs(&net.nodes[1], MM_LOG_REFUSED, -1, "certificate expired"), 1);
    assert_int_equal(stats(&net, 0).handshakes_ok + stats(&net, 1).handshakes_ok, 0);
    assert_int_equal(h_count_logs(&net.nodes[0], MM_LOG_REFUSED, -1, "certificate"), 0); /* msg3 never came */
    finish(&net);
}

/* H6 (expiry): a binding whose not_after is past (beyond the skew) is
 * refused; so is one without expiry (0) and one reaching past the longest
 * lifetime. The core's own binding is valid for MM_BINDING_LIFETIME and
 * made again once half of it is gone. */
static void test_h6_binding_expiry(void **state)
{
    (void)state;
    const struct {
        uint64_t not_after; /* wall time is 1000 s */
        const char *why;
    } cases[] = {
        {1000 - MM_CLOCK_SKEW_S, "static-key binding expired"},
        {UINT64_MAX, "static-key binding expired"}, /* evil_payload: not_after = 0, "no expiry" */
        {1000 + MM_BINDING_LIFETIME_MAX / 1000000000u + MM_CLOCK_SKEW_S + 1, "valid for longer than"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        h_net net;
        honest_nodes(&net, 1, 64, false);
        h_run(&net, MM_SEC(1000));
        evil *ev = evil_new(&net, 0, 1, "10.66.0.1:9000");
        ev->bind_not_after = cases[i].not_after;
        assert_false(evil_join(ev));
        assert_int_equal(h_count_logs(&net.nodes[0], MM_LOG_REFUSED, -1, cases[i].why), 1);
        assert_int_equal(stats(&net, 0).handshakes_ok, 0);
        evil_free(ev);
        finish(&net);
    }
    /* Within the skew: accepted. The core's own binding: a day ahead, renewed at half life. */
    h_net net;
    honest_nodes(&net, 1, 64, false);
    evil *ev = evil_new(&net, 0, 1, "10.66.0.1:9000");
    ev->bind_not_after = 1; /* wall time is 0 here: 1 s ahead */
    h_run(&net, MM_SEC(MM_CLOCK_SKEW_S - 10));
    assert_true(evil_join(ev));
    uint64_t first = 0, second = 0;
    for (int i = 0; i < 8; i++) first |= (uint64_t)ev->peer_payload[96 + i] << (8 * i);
    assert_int_equal(first, MM_BINDING_LIFETIME / 1000000000u);
    h_run(&net, MM_BINDING_LIFETIME / 2 + MM_SEC(10));
    /* the session ended when our 1 s binding did (with the skew), before the idle timer */
    assert_int_equal(h_count_logs(&net.nodes[0], MM_LOG_INFO, -1, "closed: its static-key binding expired"), 1);
    ev->bind_not_after = 0;
    assert_true(evil_join(ev));
    for (int i = 0; i < 8; i++) second |= (uint64_t)ev->peer_payload[96 + i] << (8 * i);
    assert_int_equal(second, (uint64_t)wall_now(&net) + MM_BINDING_LIFETIME / 1000000000u);
    evil_free(ev);
    finish(&net);
}

/* Y3 (expired certificate) and the expiry timer: node 1's certificate ends
 * at T0 + 50 s (with the skew). Its session with node 0 is up before, closed
 * at that instant by node 0, and the same certificate is refused after. */
static void test_y3_expired_certificate(void **state)
{
    (void)state;
    h_net net;
    int64_t na[2] = {0, T0 + 50 - MM_CLOCK_SKEW_S};
    certs_nodes(&net, 2, na, NULL);
    mm_gossip_bootstrap(net.nodes[1].g, net.nodes[0].addr, net.now);
    h_run(&net, MM_SEC(49));
    assert_int_equal(stats(&net, 0).sessions, 1);
    assert_int_equal(h_count_logs(&net.nodes[0], MM_LOG_INFO, -1, "its certificate expired"), 0);
    h_run(&net, MM_SEC(50) + MM_MS(1));
    assert_int_equal(h_count_logs(&net.nodes[0], MM_LOG_INFO, -1, "its certificate expired"), 1);
    assert_int_equal(stats(&net, 0).sessions, 0);
    /* node 1 comes back with the same certificate: refused */
    mm_gossip_bootstrap(net.nodes[1].g, net.nodes[0].addr, net.now);
    h_run(&net, net.now + MM_SEC(1));
    assert_true(h_count_logs(&net.nodes[0], MM_LOG_REFUSED, -1, "certificate expired") >= 1);
    assert_int_equal(stats(&net, 0).sessions, 0);
    finish(&net);
}

/* Y3 (older revocation list) and revocation mid-session: nodes 0, 1, 2 (1
 * and 2 joined through 0) and a hostile member. Node 0 holds list v2. The
 * member sends v1 revoking node 1: ignored. It sends a forged v9: closed,
 * penalised. A member sends v3 revoking node 1: node 0 closes node 1's
 * session, forgets it, passes v3 to node 2, and refuses node 1 after. */
static void test_y3_revocation_lists(void **state)
{
    (void)state;
    h_net net;
    mm_revlist v2;
    certs_nodes(&net, 3, NULL, NULL);
    uint64_t s999 = 999, s101 = 101;
    v2 = revlist(2, 1, &s999, NULL);
    assert_int_equal(mm_gossip_set_revocations(net.nodes[0].g, &v2, net.now), 0);
    assert_int_equal(mm_gossip_set_revocations(net.nodes[0].g, &v2, net.now), MM_ERR_STATE); /* not newer */
    for (int i = 1; i < 3; i++) mm_gossip_bootstrap(net.nodes[i].g, net.nodes[0].addr, net.now);
    h_run(&net, MM_MS(100));
    assert_int_equal(stats(&net, 0).sessions, 2);
    /* node 0 handed v2 to both on HELLO */
    for (int i = 1; i < 3; i++) assert_int_equal(h_count_logs(&net.nodes[i], MM_LOG_INFO, -1, "version 2 installed"), 1);

    evil *ev = evil_new(&net, 0, 1, "10.66.0.1:9000");
    ev->has_cert = true;
    issue(ev->cert, netmode.owner_sk, NULL, ev->id, T0 - 60, T0 + DAY, 50);
    assert_true(evil_join(ev));
    assert_int_equal(ev->nmsg[MM_MSG_REVOKE], 1);
    assert_int_equal(ev->last[MM_MSG_REVOKE].u.revoke.version, 2);

    mm_msg m = {.type = MM_MSG_REVOKE};
    m.u.revoke = revlist(1, 1, &s101, NULL); /* older: ignored */
    evil_send(ev, &m);
    evil_poll(ev);
    assert_false(evil_closed(ev));
    assert_int_equal(stats(&net, 0).sessions, 3);
    assert_int_equal(h_count_logs(&net.nodes[0], MM_LOG_REFUSED, -1, "revoked"), 0);

    m.u.revoke = revlist(3, 1, &s101, NULL); /* newer: node 1 (serial 101) goes */
    evil_send(ev, &m);
    evil_poll(ev);
    h_run(&net, net.now + MM_MS(100));
    assert_false(evil_closed(ev));
    assert_int_equal(h_count_logs(&net.nodes[0], MM_LOG_REFUSED, -1, "revoked by the network owner"), 1);
    assert_int_equal(h_count_logs(&net.nodes[1], MM_LOG_REFUSED, -1, "out of memory"), 0); /* a clean CLOSE */
    assert_false(in_view(&net, 0, mm_gossip_id(net.nodes[1].g), NULL));
    assert_int_equal(h_count_logs(&net.nodes[2], MM_LOG_INFO, -1, "version 3 installed"), 1);
    assert_int_equal(ev->nmsg[MM_MSG_REVOKE], 1); /* not sent back to where it came from */
    /* node 1 tries again: refused at the handshake */
    mm_gossip_bootstrap(net.nodes[1].g, net.nodes[0].addr, net.now);
    h_run(&net, net.now + MM_MS(100));
    assert_true(h_count_logs(&net.nodes[0], MM_LOG_REFUSED, -1, "certificate revoked (serial 101)") >= 1);
    assert_int_equal(stats(&net, 0).sessions, 2); /* node 2 and the member */

    /* forged: signed by another key */
    identity(netmode.owner_sk, 201); /* revlist signs with this "owner" key */
    m.u.revoke = revlist(9, 0, NULL, NULL);
    evil_send(ev, &m);
    assert_true(evil_closed(ev));
    assert_int_equal(h_count_logs(&net.nodes[0], MM_LOG_REFUSED, -1, "revocation list not signed by the network owner"),
                     1);
    evil_free(ev);
    finish(&net);
}

/* S2: a member banned for misbehaving from 10.66.0.1 takes its /24 with it:
 * a fresh identity from 10.66.0.77 is refused at accept, before any crypto;
 * one from another /24 is not; when the ban ends, the prefix is welcome. */
static void test_s2_prefix_ban(void **state)
{
    (void)state;
    h_net net;
    honest_nodes(&net, 1, 64, false);
    evil *ev = evil_new(&net, 0, 1, "10.66.0.1:9000");
    static const uint8_t junk[] = {0xc1};
    for (int i = 0; i < 3; i++) {
        assert_true(evil_join(ev));
        evil_send_frame(ev, MM_FRAME_CTRL, 0, 0, junk, sizeof junk);
        h_run(&net, net.now + MM_SEC(1));
    }
    assert_int_equal(h_count_logs(&net.nodes[0], MM_LOG_REFUSED, -1, "address prefix 10.66.0.0/24 banned"), 1);
    assert_int_equal(mm_gossip_accepted(net.nodes[0].g, "10.66.0.77:9001", net.now), 0);
    h_run(&net, net.now);
    assert_int_equal(h_count_logs(&net.nodes[0], MM_LOG_REFUSED, -1, "10.66.0.77:9001: address prefix is banned"), 1);
    evil *fresh = evil_new(&net, 0, 2, "10.67.0.1:9000");
    assert_true(evil_join(fresh));
    evil_free(fresh);
    h_run(&net, net.now + MM_BAN_FIRST);
    fresh = evil_new(&net, 0, 3, "10.66.0.77:9001");
    assert_true(evil_join(fresh));
    evil_free(fresh);
    evil_free(ev);
    finish(&net);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_h3_handshake_bit_flips),
        cmocka_unit_test(test_h7_small_order_keys),
        cmocka_unit_test(test_h6_foreign_binding),
        cmocka_unit_test(test_h9_caps_downgrade),
        cmocka_unit_test(test_h10_simultaneous_open),
        cmocka_unit_test(test_y2_old_msg3),
        cmocka_unit_test(test_r2_frame_sequence),
        cmocka_unit_test(test_r6_cipher_matrix),
        cmocka_unit_test(test_r7_resplit_stream),
        cmocka_unit_test(test_r8_data_offsets),
        cmocka_unit_test(test_o5_fin_without_end),
        cmocka_unit_test(test_o4_fin_mid_frame),
        cmocka_unit_test(test_o6_lying_end),
        cmocka_unit_test(test_m2_m3_hostile_ctrl),
        cmocka_unit_test(test_e1_forged_address_record),
        cmocka_unit_test(test_e2_replayed_lower_seq),
        cmocka_unit_test(test_e3_forged_leave),
        cmocka_unit_test(test_e4_shuffle_flood),
        cmocka_unit_test(test_e6_non_member_records),
        cmocka_unit_test(test_n2_bad_encodings),
        cmocka_unit_test(test_n3_extreme_values),
        cmocka_unit_test(test_l3_slow_data),
        cmocka_unit_test(test_l5_request_spam),
        cmocka_unit_test(test_s3_score_survives_reconnect),
        cmocka_unit_test(test_h5_certificates),
        cmocka_unit_test(test_h5_responder_certificate),
        cmocka_unit_test(test_h6_binding_expiry),
        cmocka_unit_test(test_y3_expired_certificate),
        cmocka_unit_test(test_y3_revocation_lists),
        cmocka_unit_test(test_s2_prefix_ban),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
