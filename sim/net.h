/* The simulator's network model (docs/simulator.md, "The network model").
 *
 * Connections are TCP-like byte streams between two nodes, delivered in
 * order. Every node has an uplink and a downlink of given rates (bytes/s):
 *
 *  - uplink: the bytes a node's connections have queued are cut into
 *    segments of at most MM_NET_SEG bytes and sent one at a time at the
 *    upload rate, round-robin over the connections that have bytes waiting
 *    (so concurrent transfers share it fairly, segment by segment). When a
 *    segment has left, the sender's core hears mm_gossip_sent.
 *  - the wire: the segment then travels for the latency of the pair of
 *    regions plus a uniform jitter; arrivals on one connection never
 *    overtake each other (TCP order).
 *  - downlink: arriving segments queue FIFO at the receiver and take
 *    len / download rate each; then the receiver's core gets the bytes.
 *
 * Connecting takes one round trip (the SYN there, the answer back); a node
 * that is down or refuses answers with a reset. A lost segment breaks its
 * connection: the sender hears closed at once, the receiver one latency
 * later (a reset). While two nodes are partitioned, what one sends the other
 * (SYNs included) is held and arrives after the heal, as TCP retransmission
 * would deliver it; the cores' own timeouts decide what survives that long.
 * A closed connection sends a FIN after its last queued byte; the closing
 * side hears closed when the FIN leaves, the other when it arrives.
 *
 * The model never calls a core while another core is being drained: every
 * callback happens from mm_net_handle, at an event's time. */
#ifndef MM_SIM_NET_H
#define MM_SIM_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "gossip.h"
#include "mm_rng.h"

#define MM_NET_SEG (64u << 10) /* bytes per segment */
#define MM_NET_EVENT_BASE 100u /* the model's event kinds are >= this */

/* Callbacks into the nodes, each at the time of the event that causes it. */
typedef struct {
    void *ctx;
    /* A SYN from node `from` reached `node`: the core's new connection id,
     * 0 to refuse. Only called for nodes that are up. */
    mm_conn_id (*accept)(void *ctx, uint32_t node, uint32_t from, uint32_t port);
    /* Carry out what node's core asked for (after accept). */
    void (*drain)(void *ctx, uint32_t node);
    void (*connected)(void *ctx, uint32_t node, mm_conn_id c);
    void (*connect_failed)(void *ctx, uint32_t node, mm_conn_id c);
    void (*received)(void *ctx, uint32_t node, mm_conn_id c, const uint8_t *buf, size_t len);
    void (*sent)(void *ctx, uint32_t node, mm_conn_id c, size_t bytes);
    void (*closed)(void *ctx, uint32_t node, mm_conn_id c);
    /* 0 if a and b can reach each other at now, else when they can again. */
    uint64_t (*blocked_until)(void *ctx, uint32_t a, uint32_t b, uint64_t now);
} mm_net_hooks;

typedef struct {
    uint32_t nodes;
    const uint16_t *region;    /* per node */
    const double *up, *down;   /* per node, bytes/s (> 0) */
    uint32_t nregions;
    const uint64_t *latency;   /* nregions x nregions, ns, row = sender's region */
    uint64_t jitter;           /* ns: each segment gets uniform [0, jitter] more */
    double loss;               /* probability that a segment breaks its connection */
    uint64_t seed;
} mm_net_config;

typedef struct mm_net mm_net;

typedef struct {
    uint64_t bytes;       /* payload bytes that left uplinks */
    uint64_t segments;
    uint64_t connects, refused, broken; /* broken: by loss */
    uint64_t unsent_max; /* the most bytes a core had handed one connection and not yet heard sent */
} mm_net_stats;

mm_net *mm_net_new(const mm_net_config *cfg, const mm_net_hooks *hooks, mm_engine *engine);
void mm_net_free(mm_net *n);

/* Node life. While a node is down nothing reaches it and SYNs to it are
 * refused. mm_net_down tears down its connections abruptly: the other ends
 * hear closed one latency later; nothing more is said to the node. */
void mm_net_up(mm_net *n, uint32_t node);
void mm_net_down(mm_net *n, uint32_t node);

/* The actions of node's core (called while draining it). */
void mm_net_connect(mm_net *n, uint32_t node, mm_conn_id c, uint32_t to);
/* to: the node the address names, or UINT32_MAX if it names none (refused). */
void mm_net_send(mm_net *n, uint32_t node, mm_conn_id c, const uint8_t *data, size_t len);
void mm_net_close(mm_net *n, uint32_t node, mm_conn_id c);

/* Carry out one of the model's events (kind >= MM_NET_EVENT_BASE). */
void mm_net_handle(mm_net *n, const mm_event *ev);

void mm_net_get_stats(const mm_net *n, mm_net_stats *s);
/* Connections currently open or opening (for leak checks). */
uint32_t mm_net_flows(const mm_net *n);
/* Whether an allocation failed (the run is then not to be trusted). */
bool mm_net_failed(const mm_net *n);

#endif
