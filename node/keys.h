/* Key files: a node's Ed25519 identity and a network's pre-shared key.
 *
 * Both are text: a first line naming the kind ("murmur-identity-v1" or
 * "murmur-netkey-v1"), then the key in lowercase hex. They are written
 * atomically with mode 0600; a node refuses to read a key file that group or
 * others may read. */
#ifndef MM_KEYS_H
#define MM_KEYS_H

#include <stdint.h>

#include "mm_error.h"

int mm_key_write_identity(const char *path, mm_error *err);
int mm_key_write_netkey(const char *path, mm_error *err);
/* sk: libsodium's 64-byte Ed25519 secret key (seed || public key). */
int mm_key_read_identity(const char *path, uint8_t sk[64], mm_error *err);
int mm_key_read_netkey(const char *path, uint8_t key[32], mm_error *err);

#endif
