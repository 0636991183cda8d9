/* Key files: a node's Ed25519 identity and a network's pre-shared key.
 *
 * Both are text: a first line naming the kind ("murmur-identity-v1" or
 * "murmur-netkey-v1"), then the key in lowercase hex. They are written
 * atomically with mode 0600; a node refuses to read a key file that group or
 * others may read. */
#ifndef MM_KEYS_H
#define MM_KEYS_H

#include <stdint.h>

#include "cert.h"
#include "mm_error.h"

int mm_key_write_identity(const char *path, mm_error *err);
int mm_key_write_netkey(const char *path, mm_error *err);
/* sk: libsodium's 64-byte Ed25519 secret key (seed || public key). */
int mm_key_read_identity(const char *path, uint8_t sk[64], mm_error *err);
int mm_key_read_netkey(const char *path, uint8_t key[32], mm_error *err);

/* Membership certificates and revocation lists (certs mode, gossip/cert.h).
 * Text too: "murmur-cert-v1" then the 156-byte certificate in hex;
 * "murmur-revocations-v1" then the REVOKE message (msgpack) in hex. They are
 * not secret (any mode is read) and a newer one replaces the file
 * atomically. Reading checks the format only; the owner's signature is the
 * reader's to check against the owner key it trusts. */
int mm_key_write_cert(const char *path, const uint8_t cert[MM_CERT_BYTES], mm_error *err);
int mm_key_read_cert(const char *path, uint8_t cert[MM_CERT_BYTES], mm_error *err);
int mm_key_write_revocations(const char *path, const mm_revlist *l, mm_error *err);
int mm_key_read_revocations(const char *path, mm_revlist *l, mm_error *err);
/* 64 hex digits -> a 32-byte public key; MM_ERR_FORMAT otherwise. */
int mm_key_parse_pub(const char *hex, uint8_t pk[32]);

#endif
