/* Every limit and timeout of the protocol, with its default, in one place.
 * docs/protocol.md cites these names. Times are in nanoseconds. */
#ifndef MM_LIMITS_H
#define MM_LIMITS_H

#include <stdint.h>

#define MM_MS(x) ((uint64_t)(x) * 1000000ull)
#define MM_SEC(x) ((uint64_t)(x) * 1000000000ull)

/* Handshake */
#define MM_HS_MAX_MSG 1024            /* a handshake message, length prefix excluded */
#define MM_HS_MSG1_LEN 48             /* XXpsk0 msg1: e (32) + tag of the empty payload (16) */
#define MM_HS_DEADLINE MM_SEC(5)      /* from connection open to handshake done */
#define MM_HS_REPLAY_WINDOW MM_SEC(600) /* msg1 ephemerals remembered this long */
#define MM_HS_REPLAY_ENTRIES 65536
#define MM_SIG_DIGEST 16              /* bytes of a signature check's digest (mm_gossip_env.sig_seen) */
#define MM_SESSION_LIFETIME MM_SEC(3600) /* re-handshake after this */
#define MM_NETKEYS_MAX 4              /* network keys in a key ring: the primary and 3 more */

/* Wall time (unix time = monotonic now + mm_gossip_config.wall_offset_ns) */
#define MM_CLOCK_SKEW_S 300               /* seconds of clock difference tolerated in validity windows */
#define MM_BINDING_LIFETIME MM_SEC(86400) /* a static-key binding's not_after: made this far ahead */
#define MM_BINDING_LIFETIME_MAX MM_SEC(7 * 86400) /* a peer's binding reaching further is refused */

/* Membership certificates and revocation (certs mode, SECURITY.md §2.2) */
#define MM_CERT_BYTES 156                 /* the fixed certificate */
#define MM_CERT_LIFETIME_MAX_S (30 * 86400) /* not_after - not_before, at most */
#define MM_CERT_LIFETIME_DEFAULT_S (7 * 86400) /* what `murmur cert issue` gives without --days */
#define MM_REVOKE_MAX 128                 /* entries in a revocation list (serials and member keys) */

/* Record layer */
#define MM_FRAME_HEADER 20
#define MM_FRAME_TAG 16
#define MM_FRAME_MAX_PLAIN (1u << 20)   /* 1 MiB of plaintext per frame */
#define MM_FRAME_CTRL_MAX (64u << 10)   /* CTRL (msgpack) frames */
#define MM_FRAME_DATA_CHUNK (256u << 10) /* DATA frames we send */
#define MM_REKEY_FRAMES (1ull << 16)    /* frames per direction between rekeys */
#define MM_NONCE_LIMIT (UINT64_MAX - 1) /* the sender closes before reaching it */

/* Connections and liveness */
#define MM_MAX_CONNS 128
#define MM_OUTBOUND_RESERVE 32          /* of MM_MAX_CONNS, kept for our own dials (25 %) */
#define MM_MAX_HALF_OPEN 64             /* inbound connections not yet established */
#define MM_HALF_OPEN_PER_IP 4           /* ... from one source: IPv4 /32, IPv6 /64 (docs/protocol.md §3.3) */
#define MM_CONNS_PER_PREFIX 8           /* connections per IPv4 /24 or IPv6 /48 (config: conns_per_prefix) */
#define MM_HS_RATE_PER_IP 20            /* accepted connections per second per source address */
#define MM_HS_BURST_PER_IP 5            /* ... token bucket size (also the initial fill) */
#define MM_IP_BUCKETS 1024              /* source addresses whose bucket is remembered */
#define MM_KEEPALIVE MM_SEC(15)
#define MM_IDLE_CLOSE MM_SEC(60)        /* a session with no traffic is closed */
#define MM_DEAD_AFTER MM_SEC(60)
#define MM_SEND_WINDOW (2u << 20)       /* bytes given to the runtime and not yet written, per connection */

/* Exchanges */
#define MM_EXCH_MIN_RATE (256u << 10)   /* bytes/s assumed for the exchange deadline */
#define MM_EXCH_GRACE MM_SEC(30)
#define MM_EXCH_PROGRESS_WINDOW MM_SEC(10)
#define MM_EXCH_PROGRESS_MIN (64u << 10) /* bytes per window, else abort (slowloris) */
#define MM_MAX_EXCHANGES 4              /* concurrent exchanges per node (memory budget) */

/* State sync */
#define MM_SYNC_SOURCES 3               /* peers a newcomer fetches parameters from */
#define MM_SYNC_TIMEOUT MM_SEC(30)      /* after this, use the sources that answered */
#define MM_SYNC_GATHER MM_SEC(2)        /* wait this long for sessions with enough sources */
#define MM_SYNC_RETRY MM_MS(200)        /* sources failed (busy) and too few answered: ask others after this */

/* Scores and bans */
#define MM_SCORE_BAN (-100.0)           /* below this a peer is banned */
#define MM_BAN_FIRST MM_SEC(600)        /* doubled on each repeat */
#define MM_PENALTY_PROTOCOL 50.0        /* malformed frame or message */
#define MM_PENALTY_INVALID 30.0         /* a refused vector */
#define MM_PENALTY_RATE 5.0             /* a control message over the rate */

/* Control messages and membership */
#define MM_CTRL_RATE 100                /* messages/s per peer */
#define MM_CTRL_BURST 200
#define MM_VIEW_SIZE 32
#define MM_VIEW_ANCHORS (MM_VIEW_SIZE / 2) /* view entries kept for peers we dialled ourselves (eclipse, E5) */
#define MM_SHUFFLE_LEN 8                /* entries sent per shuffle */
#define MM_SHUFFLE_MAX 32               /* entries accepted in one shuffle */
#define MM_SHUFFLE_PERIOD MM_SEC(5)
#define MM_PROBE_PERIOD MM_SEC(2)
#define MM_PROBE_TIMEOUT MM_SEC(3)
#define MM_SUSPECT_TIMEOUT MM_SEC(10)
#define MM_ADDR_MAX 64                  /* bytes of an address string "host:port" */
#define MM_VIEW_PER_PREFIX 2            /* view entries per IPv4 /24 or IPv6 /48 (config: view_per_prefix) */
#define MM_CLIP_HISTORY 32              /* distances remembered per tensor for the adaptive bound */
#define MM_CLIP_MIN_HISTORY 4           /* below this many, no clipping yet */
#define MM_CLIP_REFUSE 8.0              /* distance > 8 tau on most tensors: refuse */
#define MM_CLIP_BOOT 0.25               /* before MM_CLIP_MIN_HISTORY: tau = 0.25 x our own tensor's norm */
#define MM_CLIP_FLOOR 1e-6              /* tau never goes below this */
#define MM_REFUSED_RESYNC 3             /* refused as too far by this many partners in a row: re-sync */

/* msgpack pre-validation */
#define MM_MP_MAX_DEPTH 4
#define MM_MP_MAX_CONTAINER 1024

#endif
