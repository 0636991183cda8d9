/* Membership certificates and revocation lists of the `certs` admission
 * mode (SECURITY.md §2.2, docs/protocol.md §3.4): pure functions over bytes,
 * no I/O. The network owner's Ed25519 key signs both; it stays offline (the
 * `murmur cert` commands use it), members only verify.
 *
 * Certificate, 156 bytes, integers little-endian, times in unix seconds:
 *   ver u8 (1) | flags u8 (0) | rsv u16 (0) | network_id[32] | member_pk[32] |
 *   not_before u64 | not_after u64 | serial u64 | sig[64]
 * sig = Ed25519(owner, "murmur-cert-v1" || the 92 bytes before sig). */
#ifndef MM_CERT_H
#define MM_CERT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "limits.h"
#include "wire.h"

#define MM_CERT_VERSION 1
#define MM_CERT_SIGNED 92 /* bytes of the certificate the signature covers (after the domain) */

typedef struct {
    uint8_t ver, flags;
    uint16_t rsv;
    uint8_t network_id[32];
    uint8_t member_pk[MM_ID_BYTES];
    uint64_t not_before, not_after, serial; /* unix seconds; serial: the owner's choice, for revocation */
    uint8_t sig[MM_SIG_BYTES];
} mm_cert;

/* Why a certificate is refused; mm_cert_why names each in words. */
typedef enum {
    MM_CERT_OK = 0,
    MM_CERT_MALFORMED,     /* unknown version, flags or reserved bits */
    MM_CERT_NOT_OWNER,     /* the signature is not the owner's */
    MM_CERT_OTHER_NETWORK, /* network_id is not ours */
    MM_CERT_OTHER_MEMBER,  /* member_pk is not the identity presenting it */
    MM_CERT_NOT_YET_VALID, /* not_before is more than MM_CLOCK_SKEW_S ahead */
    MM_CERT_EXPIRED,       /* not_after is more than MM_CLOCK_SKEW_S behind */
    MM_CERT_TOO_LONG,      /* not_after - not_before > MM_CERT_LIFETIME_MAX_S, or not_after < not_before */
} mm_cert_status;

/* network_id of a certs-mode network: BLAKE2b-256("murmur-net-v1" || owner_pk). */
void mm_cert_network_id(const uint8_t owner_pk[32], uint8_t network_id[32]);

void mm_cert_encode(const mm_cert *c, uint8_t out[MM_CERT_BYTES]);
/* Parse the fixed layout; MM_CERT_MALFORMED for a version, flags or
 * reserved bits this code does not know. The signature is not checked. */
mm_cert_status mm_cert_decode(mm_cert *c, const uint8_t in[MM_CERT_BYTES]);

/* The signed bytes: "murmur-cert-v1" || fields. m holds 14 + MM_CERT_SIGNED. */
size_t mm_cert_message(const mm_cert *c, uint8_t *m);
void mm_cert_sign(mm_cert *c, const uint8_t owner_sk[64]);
bool mm_cert_sig_ok(const mm_cert *c, const uint8_t owner_pk[32]);

/* Everything but the signature: network, member (NULL: not checked),
 * lifetime and the window against wall_s (unix seconds), with the skew. */
mm_cert_status mm_cert_check_fields(const mm_cert *c, const uint8_t network_id[32], const uint8_t *member,
                                    int64_t wall_s);
/* Signature and fields together. */
mm_cert_status mm_cert_check(const mm_cert *c, const uint8_t owner_pk[32], const uint8_t *member, int64_t wall_s);
const char *mm_cert_why(mm_cert_status s);

/* Revocation lists: sig = Ed25519(owner, "murmur-revoke-v1" || network_id ||
 * version u64 || n u32 || per entry: kind u8 || serial u64 | member key[32]).
 * m holds MM_REVLIST_MESSAGE_MAX bytes. */
#define MM_REVLIST_MESSAGE_MAX (16 + 32 + 8 + 4 + MM_REVOKE_MAX * (1 + 32))
size_t mm_revlist_message(const mm_revlist *l, const uint8_t network_id[32], uint8_t *m);
void mm_revlist_sign(mm_revlist *l, const uint8_t owner_sk[64]);
/* Whether the owner signed l for its network (entries well-formed, n in range). */
bool mm_revlist_sig_ok(const mm_revlist *l, const uint8_t owner_pk[32]);
/* Whether l revokes the certificate serial or the member key (either may be NULL). */
bool mm_revlist_revokes(const mm_revlist *l, const uint64_t *serial, const uint8_t *member);

#endif
