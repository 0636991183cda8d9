/* The gossip core: membership, authenticated sessions and parameter
 * averaging, as a state machine that does no I/O (DESIGN.md, "The one rule").
 *
 * The runtime (node/ over libuv, sim/ over virtual time) feeds events in,
 * each with the current monotonic time in nanoseconds, then drains actions
 * with mm_gossip_next() and carries them out. Randomness and memory come from
 * the mm_gossip_env it supplies. The core never blocks and never calls back.
 *
 * Lifetimes. A SEND action's bytes belong to the core and stay valid until
 * the next call of any mm_gossip_* function other than mm_gossip_next. A
 * snapshot lent with mm_gossip_snapshot_ready stays the runtime's and must
 * stay valid and unchanged until the core emits RELEASE for that exchange. A
 * MERGE action's vectors are valid until the runtime calls
 * mm_gossip_merge_done for that exchange.
 *
 * Errors. Functions return 0 or a negative mm_err. A malformed, hostile or
 * failing peer never makes a function fail: it closes that peer's connection
 * (with a CLOSE action and a LOG action saying why) and nothing else changes. */
#ifndef MM_GOSSIP_H
#define MM_GOSSIP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "limits.h"
#include "wire.h"

typedef struct mm_gossip mm_gossip;
typedef uint32_t mm_conn_id; /* 0 is never a valid id */

/* What the runtime supplies. alloc may fail (return NULL): the core then
 * refuses the work that needed the memory, cleanly. */
typedef struct {
    void (*random)(void *ctx, void *buf, size_t n);
    void *random_ctx;
    void *(*alloc)(void *ctx, size_t bytes);
    void (*free)(void *ctx, void *p);
    void *alloc_ctx;
    /* Optional (NULL: the core runs everything itself). Call fn(arg, i) for
     * every i in [0, n), on any threads, in any order, and return when all
     * have returned. The core hands out only pure work through it (sealing
     * and encoding a batch of DATA frames whose counters it has assigned in
     * order), so the bytes sent are those of a serial run. */
    void (*parallel)(void *ctx, void (*fn)(void *arg, uint32_t i), void *arg, uint32_t n);
    void *parallel_ctx;
} mm_gossip_env;

typedef enum { MM_WEIGHT_EQUAL = 0, MM_WEIGHT_SAMPLES = 1 } mm_weighting;

/* A tensor's extent in the flat vector, for per-tensor validation. */
typedef struct {
    uint64_t offset, count; /* in floats */
} mm_gossip_tensor;

typedef struct {
    uint8_t identity_sk[64];  /* Ed25519 secret key (libsodium layout: seed || pk) */
    uint8_t network_key[32];  /* the network's pre-shared key: the key ring's primary, which we dial with */
    /* Key ring (SECURITY.md §2.2, H11): up to MM_NETKEYS_MAX - 1 more keys that
     * an inbound msg1 may also use. A rotation installs the new key here on
     * every node, then makes it the primary (the old one here), then removes
     * the old one. */
    uint8_t network_keys_more[MM_NETKEYS_MAX - 1][32];
    uint32_t nkeys_more;
    /* Key and allowlist modes: if network_id_set, network_id is this instead of
     * the hash of the primary key (docs/protocol.md §2.2). Nodes whose primary
     * key differs (during a rotation) must agree on it: pin the old value. */
    bool network_id_set;
    uint8_t network_id[32];
    char advertise[MM_ADDR_MAX]; /* "host:port" others reach us at ("" = not reachable) */
    uint64_t incarnation;     /* version of our address record; grows on every restart */
    /* Model */
    uint8_t fingerprint[MM_FP_BYTES];
    uint64_t params;          /* floats in the flat vector */
    const mm_gossip_tensor *tensors; /* layout extents (copied), for clipping */
    uint32_t ntensors;
    /* Averaging */
    uint64_t exchange_period; /* ns between exchanges we start; 0 = only on mm_gossip_average_now */
    mm_weighting weighting;
    uint8_t encoding;         /* mm_encoding we ask for */
    bool clip;                /* per-tensor adaptive distance clipping */
    /* Admission: if nallow > 0, only these identities are members. */
    const uint8_t (*allowlist)[32];
    uint32_t nallow;
    /* Admission in certs mode (SECURITY.md §2.2): members hold a certificate
     * (gossip/cert.h) signed by the network owner. network_id is then derived
     * from owner_pk, not from the network key (which stays the Noise PSK). */
    bool certs;
    uint8_t owner_pk[32];
    uint8_t cert[MM_CERT_BYTES]; /* ours: presented in the handshake; must name identity_sk's key */
    const mm_revlist *revocations; /* an owner-signed list to start with (copied), or NULL */
    /* Wall time, which certificates and static-key bindings are checked
     * against: unix time in ns = the `now` of any call + wall_offset_ns. The
     * core reads no clock: node/ sets this from the system clock (and keeps it
     * current with mm_gossip_set_wall_offset), sim/ from its virtual time. */
    int64_t wall_offset_ns;
    uint64_t binding_lifetime; /* ns our static-key binding is valid; 0: MM_BINDING_LIFETIME */
    /* Per-prefix caps (SECURITY.md §2.5, §2.6; gossip/addr.h): view entries
     * and connections (both directions) per IPv4 /24 or IPv6 /48. 0: the
     * defaults MM_VIEW_PER_PREFIX and MM_CONNS_PER_PREFIX. Raise them where
     * many members share a prefix (one data center, one NAT). Loopback is
     * never capped. */
    uint32_t view_per_prefix, conns_per_prefix;
    /* Eclipse defence (SECURITY.md §2.6, E5): up to MM_VIEW_ANCHORS view
     * entries are peers we dialled and found at their address; records that
     * others send never evict them (only their death does). true turns that
     * off, for a control run. */
    bool no_view_anchors;
} mm_gossip_config;

typedef enum {
    MM_ACT_NONE = 0,
    MM_ACT_CONNECT,       /* open a TCP connection to addr; report with connected/connect_failed */
    MM_ACT_SEND,          /* write bytes to conn */
    MM_ACT_CLOSE,         /* close conn (after flushing what was sent) */
    MM_ACT_WANT_SNAPSHOT, /* lend a snapshot of the live parameters for exchange xid */
    MM_ACT_MERGE,         /* x_live += weight * (peer - snap), then call merge_done;
                           * snap == NULL (state sync): x_live = peer */
    MM_ACT_RELEASE,       /* the snapshot of exchange xid is no longer used */
    MM_ACT_LOG,           /* something worth a log line or a metric */
} mm_act_kind;

typedef enum {
    MM_LOG_INFO = 0,
    MM_LOG_PEER_UP,      /* a session is established (peer) */
    MM_LOG_PEER_DOWN,    /* a peer left or was declared dead (peer) */
    MM_LOG_REFUSED,      /* a peer was refused (peer may be zero), text says why */
    MM_LOG_EXCHANGE,     /* an exchange ended (ok, bytes, duration) */
    MM_LOG_SYNCED,       /* state sync finished: parameters were replaced */
} mm_log_kind;

typedef struct {
    mm_act_kind kind;
    mm_conn_id conn;
    uint32_t xid;
    const uint8_t *data; /* SEND */
    size_t len;
    const char *addr;    /* CONNECT */
    const float *peer, *snap; /* MERGE */
    float weight;        /* MERGE */
    uint64_t count;      /* MERGE: floats */
    /* LOG */
    mm_log_kind log;
    bool ok;
    bool initiator;      /* EXCHANGE: we started it (we chose the partner) */
    uint8_t peer_id[MM_ID_BYTES];
    uint64_t bytes_in, bytes_out, duration;
    uint64_t peer_samples; /* EXCHANGE: examples the peer said it had trained on (0: not said) */
    char text[160];
} mm_action;

/* Create a core. Returns NULL if memory is short or cfg is invalid. */
mm_gossip *mm_gossip_new(const mm_gossip_config *cfg, const mm_gossip_env *env, uint64_t now);
void mm_gossip_free(mm_gossip *g);

/* Optional (by default every signature is checked): a cache of the Ed25519
 * checks that passed, shared by the cores of one process (the simulator's
 * 10^5 nodes check the same address records again and again). d is a
 * BLAKE2b digest of signature, key and message; seen returns whether d passed
 * before, and with add set remembers that it passed. A check is a pure
 * function of those bytes, so the cache changes no outcome. */
typedef bool (*mm_gossip_sig_cache)(void *ctx, const uint8_t d[MM_SIG_DIGEST], bool add);
void mm_gossip_set_sig_cache(mm_gossip *g, mm_gossip_sig_cache seen, void *ctx);

/* The runtime's wall clock moved against its monotonic one (NTP, a
 * suspend): unix time in ns = now + offset_ns from now on. */
void mm_gossip_set_wall_offset(mm_gossip *g, int64_t offset_ns, uint64_t now);
/* Certs mode: install a newer revocation list (the owner's signature is
 * checked; sessions of revoked members close, every other session gets the
 * list). Returns MM_OK, MM_ERR_STATE if the core is not in certs mode or
 * holds this version or a newer one, MM_ERR_AUTH if the owner did not sign it. */
int mm_gossip_set_revocations(mm_gossip *g, const mm_revlist *l, uint64_t now);
/* Certs mode: a renewed certificate of ours, for the handshakes to come.
 * MM_ERR_INVALID if it is malformed, not the owner's, or not for us. */
int mm_gossip_set_cert(mm_gossip *g, const uint8_t cert[MM_CERT_BYTES], uint64_t now);

/* Our identity (Ed25519 public key). */
const uint8_t *mm_gossip_id(const mm_gossip *g);
/* The network_id in use (docs/protocol.md §2.2): 32 bytes. */
const uint8_t *mm_gossip_network_id(const mm_gossip *g);

/* Try to join through a member at addr ("host:port"). */
int mm_gossip_bootstrap(mm_gossip *g, const char *addr, uint64_t now);
/* Before training: fetch the parameters from peers (state sync); a SYNCED
 * log and a MERGE with weight 1 follow when done. */
int mm_gossip_request_sync(mm_gossip *g, uint64_t now);

/* Connections. accepted returns the id of a new inbound connection (0 if we
 * refuse it: close it at once). from is the peer's address, for limits. */
mm_conn_id mm_gossip_accepted(mm_gossip *g, const char *from, uint64_t now);
void mm_gossip_connected(mm_gossip *g, mm_conn_id c, uint64_t now);
void mm_gossip_connect_failed(mm_gossip *g, mm_conn_id c, uint64_t now);
void mm_gossip_received(mm_gossip *g, mm_conn_id c, const uint8_t *buf, size_t len, uint64_t now);
/* bytes of what SEND actions gave for c have been written to the socket:
 * the core keeps at most MM_SEND_WINDOW bytes unwritten per connection. */
void mm_gossip_sent(mm_gossip *g, mm_conn_id c, size_t bytes, uint64_t now);
void mm_gossip_closed(mm_gossip *g, mm_conn_id c, uint64_t now);

/* Timers: call tick when now >= mm_gossip_deadline(g). */
uint64_t mm_gossip_deadline(const mm_gossip *g);
void mm_gossip_tick(mm_gossip *g, uint64_t now);

/* Averaging. average_now starts an exchange with a random live peer (if
 * none is running with it). samples: examples this node has trained on. */
int mm_gossip_average_now(mm_gossip *g, uint64_t now);
void mm_gossip_snapshot_ready(mm_gossip *g, uint32_t xid, const float *snap, uint64_t samples, uint64_t now);
void mm_gossip_merge_done(mm_gossip *g, uint32_t xid, uint64_t now);

/* Leave gracefully: announce to every session, close them. */
void mm_gossip_leave(mm_gossip *g, uint64_t now);

/* Drain the next action; false when there is none. */
bool mm_gossip_next(mm_gossip *g, mm_action *act);

/* Counters, for status and metrics. */
typedef struct {
    uint32_t view, sessions, half_open;
    uint64_t exchanges_ok, exchanges_failed, bytes_in, bytes_out;
    uint64_t handshakes_ok, handshakes_failed, refused;
} mm_gossip_stats;
void mm_gossip_get_stats(const mm_gossip *g, mm_gossip_stats *s);

/* The view, for status displays: up to max entries into out; returns how many. */
typedef struct {
    uint8_t id[MM_ID_BYTES];
    char addr[MM_ADDR_MAX];
    bool suspect; /* our own probes failed lately */
    bool session; /* an open, greeted session */
} mm_gossip_peer_info;
uint32_t mm_gossip_peers(const mm_gossip *g, mm_gossip_peer_info *out, uint32_t max);

#endif
