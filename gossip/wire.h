/* Control messages: msgpack encoding and decoding, behind a pre-validator.
 *
 * Every CTRL frame's plaintext is one msgpack array whose first element is
 * the message type; fields follow at fixed positions (docs/protocol.md).
 * Before msgpack-c sees a byte, mm_mp_validate walks the input and checks
 * that every declared length fits the remaining bytes, containers hold at
 * most MM_MP_MAX_CONTAINER elements, nesting is at most MM_MP_MAX_DEPTH and
 * nothing trails the object: msgpack-c would otherwise allocate gigabytes for
 * a five-byte input. */
#ifndef MM_WIRE_H
#define MM_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "limits.h"
#include "mm_error.h"

#define MM_PROTO_VERSION 1
#define MM_ID_BYTES 32   /* Ed25519 public key */
#define MM_SIG_BYTES 64
#define MM_FP_BYTES 16   /* model fingerprint */

/* Check one complete msgpack object in buf[0..len). Returns 0 or MM_ERR_FORMAT. */
int mm_mp_validate(const uint8_t *buf, size_t len);

typedef enum {
    MM_MSG_HELLO = 1,
    MM_MSG_EXCH_REQ = 2,
    MM_MSG_EXCH_ACK = 3,
    MM_MSG_BUSY = 4,
    MM_MSG_SHUFFLE = 5,
    MM_MSG_SHUFFLE_REPLY = 6,
    MM_MSG_PING = 7,
    MM_MSG_PONG = 8,
    MM_MSG_LEAVE = 9,
    MM_MSG_ERROR = 10,
    MM_MSG_END = 11, /* payload of an END frame */
    MM_MSG_DONE = 12, /* "I received your vector and it passed": both merge only after both said so */
    MM_MSG_REVOKE = 13, /* the network owner's revocation list (certs mode), gossiped */
} mm_msg_type;

/* Vector encodings on the wire (bit i of a capability mask = encoding i). */
typedef enum { MM_ENC_F32 = 0, MM_ENC_F16 = 1, MM_ENC_BF16 = 2, MM_ENC_Q8 = 3 } mm_encoding;

/* Refusal codes carried by ERROR and BUSY. */
typedef enum {
    MM_REFUSE_NONE = 0,
    MM_REFUSE_FINGERPRINT = 1, /* different model */
    MM_REFUSE_VERSION = 2,
    MM_REFUSE_BUSY = 3,
    MM_REFUSE_INVALID = 4,     /* the vector failed validation */
    MM_REFUSE_PROTOCOL = 5,    /* a malformed or unexpected message */
    MM_REFUSE_LEAVING = 6,
} mm_refuse_code;

/* A signed address record: who (id) is reachable where (addr), version seq. */
typedef struct {
    uint8_t id[MM_ID_BYTES];
    char addr[MM_ADDR_MAX];
    uint64_t seq;
    uint8_t sig[MM_SIG_BYTES];
} mm_addr_rec;

/* An owner-signed revocation list (certs mode; gossip/cert.h signs and
 * checks it). Each entry revokes a certificate serial or a member key. */
typedef enum { MM_REVOKE_SERIAL = 0, MM_REVOKE_KEY = 1 } mm_revoke_kind;
typedef struct {
    uint8_t kind;   /* mm_revoke_kind */
    uint64_t serial; /* MM_REVOKE_SERIAL */
    uint8_t key[MM_ID_BYTES]; /* MM_REVOKE_KEY */
} mm_revoke_entry;
typedef struct {
    uint64_t version; /* the highest version wins; 0 = no list */
    uint32_t n;
    mm_revoke_entry e[MM_REVOKE_MAX];
    uint8_t sig[MM_SIG_BYTES]; /* by the owner, over mm_revlist_message() */
} mm_revlist;

typedef struct {
    mm_msg_type type;
    union {
        struct { /* HELLO: sent by both sides first thing after the handshake */
            uint32_t version;
            uint8_t fingerprint[MM_FP_BYTES];
            uint64_t params;    /* floats in the vector */
            uint32_t encodings; /* capability mask */
            mm_addr_rec self;   /* our own signed address record */
        } hello;
        struct { /* EXCH_REQ / EXCH_ACK */
            uint32_t xid;
            uint8_t encoding;
            uint64_t samples; /* samples seen, for weighting */
            uint8_t kind;     /* 0 = push-pull average, 1 = state sync (pull only) */
        } exch;
        struct { /* BUSY / ERROR */
            uint32_t xid;
            uint32_t code;
            char text[128];
        } refuse;
        struct { /* SHUFFLE / SHUFFLE_REPLY */
            uint32_t n;
            mm_addr_rec recs[MM_SHUFFLE_MAX];
        } shuffle;
        struct { /* PING / PONG */
            uint64_t nonce;
        } ping;
        struct { /* LEAVE: signed like an address record, with an empty addr */
            mm_addr_rec rec;
        } leave;
        struct { /* DONE */
            uint32_t xid;
        } done;
        struct { /* END */
            uint32_t xid;
            uint64_t total_bytes;
            uint32_t chunks;
            uint8_t encoding;
        } end;
        mm_revlist revoke; /* REVOKE */
    } u;
} mm_msg;

/* Encode m into out (capacity cap); returns the length or a negative mm_err:
 * MM_ERR_INVALID for what decoding would refuse (unknown type, an encoding
 * > 3, kind > 1, a string not NUL-terminated in its array, more than
 * MM_SHUFFLE_MAX records or MM_REVOKE_MAX revocation entries, a revocation
 * entry of an unknown kind), MM_ERR_LIMIT when cap is too small. */
long mm_msg_encode(const mm_msg *m, uint8_t *out, size_t cap);
/* Decode one message; runs mm_mp_validate itself before msgpack-c sees the
 * bytes. Returns 0, MM_ERR_FORMAT (err names the message and field, e.g.
 * "EXCH_REQ: field 'encoding' out of range (7)"; *m is zeroed) or
 * MM_ERR_NOMEM. Strings are copied NUL-terminated. */
int mm_msg_decode(mm_msg *m, const uint8_t *buf, size_t len, mm_error *err);

#endif
