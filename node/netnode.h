/* The networked node: the gossip core driven by libuv over TCP, with a
 * training thread running the tensor engine.
 *
 * Threads. The loop thread (the caller of mm_node_run) owns every socket,
 * timer and the gossip core. The training thread owns the model and the
 * backend. They exchange small messages through two mailboxes (mailbox.h);
 * the trainer never waits for the network: it copies a snapshot or applies
 * a merge between two steps. */
#ifndef MM_NETNODE_H
#define MM_NETNODE_H

#include <stdbool.h>
#include <stdint.h>

#include "cli.h"
#include "trainer.h"

typedef struct {
    mm_train_config tc;
    const char *listen;        /* "host:port" */
    const char *advertise;     /* "host:port" other nodes reach us at (NULL: listen; port 0: the bound one) */
    mm_cli_list bootstrap;
    const char *key_file;      /* identity; NULL: <checkpoint-dir>/identity.key or ephemeral */
    mm_cli_list netkey_files;  /* the key ring, primary first (<= MM_NETKEYS_MAX); none: the open default network */
    const char *network_id;    /* hex: pin network_id across a key rotation (docs/protocol.md §2.2); NULL: from the primary */
    const char *owner_pub;     /* certs mode: the owner's public key (hex); NULL: key mode */
    const char *cert_file;     /* certs mode: this node's membership certificate */
    const char *revocations_file; /* certs mode: an owner-signed revocation list to start with */
    const char *checkpoint_dir;
    const char *metrics_file;
    int average_every;         /* steps between exchanges */
    float average_seconds;     /* or seconds (0 = by steps only) */
    float throttle;            /* >= 1: run this many times slower */
    float checkpoint_seconds;  /* periodic checkpoint */
    const char *encoding;      /* "f32" | "f16" | "bf16" | "q8" */
    bool weight_samples;
    bool no_clip;              /* turn off per-tensor distance clipping */
    bool json, quiet;
    float join_timeout;        /* seconds to reach a bootstrap peer */
    float linger;              /* after the last epoch, at most this many seconds averaging (without
                                * training) while partners still train; 0: FINAL_ROUNDS exchanges only */
    int crypto_threads;        /* workers besides the loop thread that seal outgoing DATA frames (0: none) */
    int view_per_prefix;       /* view entries per IPv4 /24 or IPv6 /48 (0: MM_VIEW_PER_PREFIX) */
    int conns_per_prefix;      /* connections per IPv4 /24 or IPv6 /48 (0: MM_CONNS_PER_PREFIX) */
    /* The exchange benchmark (murmur exchange-bench): a bare vector of
     * bench_params floats instead of a model, no training. The node with a
     * bootstrap peer times bench_rounds exchanges back to back (after one
     * warm-up) and prints a JSON line; the other serves until it leaves. */
    uint64_t bench_params;
    int bench_rounds;
    int ready_fd;              /* > 0: write "HOST:PORT\n" there once listening */
} mm_node_config;

/* Run a node until it has trained its epochs (then leaves) or is told to
 * stop by SIGINT/SIGTERM. Returns the process exit status. */
int mm_node_run(const mm_node_config *cfg);

#endif
