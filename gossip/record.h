/* The record layer: authenticated, encrypted frames over a byte stream.
 *
 * Frame = 20-byte cleartext header (authenticated as associated data) +
 * ciphertext + 16-byte tag:
 *   len u32 BE   ciphertext + tag bytes (>= 16, <= MM_FRAME_MAX_PLAIN + 16)
 *   type u8      MM_FRAME_CTRL | DATA | END | ABORT | CLOSE
 *   flags u8     0 (reserved)
 *   rsv u16      0
 *   xid u32 BE   exchange id (0 outside exchanges)
 *   offset u64 BE byte offset of a DATA chunk in the exchanged vector, else 0
 * Nonces are an implicit 64-bit counter per direction, never sent: a dropped,
 * repeated, reordered or foreign frame fails its tag. Every MM_REKEY_FRAMES
 * frames a direction's key is replaced by ENCRYPT(k, 2^64-1, "", 0^32)[0:32]
 * (Noise's Rekey), and the old key is wiped. */
#ifndef MM_RECORD_H
#define MM_RECORD_H

#include <sodium.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "limits.h"

typedef enum {
    MM_FRAME_CTRL = 1,  /* a msgpack control message */
    MM_FRAME_DATA = 2,  /* a chunk of an exchanged vector */
    MM_FRAME_END = 3,   /* end of a vector: msgpack {total, chunks, encoding} */
    MM_FRAME_ABORT = 4, /* abandon exchange xid */
    MM_FRAME_CLOSE = 5  /* authenticated goodbye */
} mm_frame_type;

typedef enum { MM_CIPHER_CHACHA = 0, MM_CIPHER_AESGCM = 1 } mm_cipher;

typedef struct {
    uint32_t len; /* ciphertext + tag */
    uint8_t type, flags;
    uint16_t rsv;
    uint32_t xid;
    uint64_t offset;
} mm_frame_hdr;

typedef struct {
    mm_cipher cipher;
    uint8_t key[32]; /* AES-GCM expands it per frame (the libsodium call with the key):
                      * a session keeps 32 bytes per direction, not a 512-byte schedule */
    uint64_t n;      /* next nonce */
} mm_record_dir;

typedef struct {
    mm_record_dir tx, rx;
    uint64_t rekey_every; /* MM_REKEY_FRAMES; tests lower it */
} mm_record;

/* Keys are copied; the caller wipes its copies. rekey_every is set to
 * MM_REKEY_FRAMES (0 would disable rekeying). Returns 0 or MM_ERR_INVALID (an
 * unknown cipher, or AES-GCM where crypto_aead_aes256gcm_is_available() is 0:
 * the process must have called sodium_init(), else AES-GCM reads as absent). */
int mm_record_init(mm_record *r, mm_cipher cipher, const uint8_t tx_key[32], const uint8_t rx_key[32]);
void mm_record_wipe(mm_record *r);

/* Parse and check a header: len within [16, MM_FRAME_MAX_PLAIN + 16] (every
 * type but DATA: <= MM_FRAME_CTRL_MAX + 16), known type, reserved bits zero.
 * Returns 0, MM_ERR_FORMAT (len < 16, unknown type, flags or rsv set) or
 * MM_ERR_LIMIT (len too large). Needs MM_FRAME_HEADER bytes. */
int mm_frame_parse_header(const uint8_t *buf, mm_frame_hdr *h);

/* Seal one frame into out (capacity >= MM_FRAME_HEADER + len + 16); returns
 * the frame's length or a negative mm_err (MM_ERR_LIMIT when the nonce
 * space is exhausted: the connection must close; MM_ERR_INVALID for an
 * unknown type, len over the type's limit or too small a cap). pt may be
 * out + MM_FRAME_HEADER (sealing in place); otherwise they must not overlap. */
long mm_record_seal(mm_record *r, mm_frame_type type, uint32_t xid, uint64_t offset, const uint8_t *pt, size_t len,
                    uint8_t *out, size_t cap);

/* Sealing off the core's thread. mm_record_seal_defer does everything of
 * mm_record_seal that must happen in frame order (the checks, the header,
 * taking the frame's counter and key, rekeying) and leaves the AEAD itself
 * in *job; mm_seal_job_run then seals, a pure function of the job, so jobs
 * may run on any threads in any order and give the bytes mm_record_seal
 * would have. A job holds a copy of the key: wipe it (sodium_memzero) after
 * running it. Until then, pt and out must stay valid and unchanged. */
typedef struct {
    mm_cipher cipher;
    uint8_t key[32];
    uint64_t n;
    const uint8_t *pt;
    size_t len;
    uint8_t *out; /* the frame: header written, ciphertext and tag to come */
} mm_seal_job;

long mm_record_seal_defer(mm_record *r, mm_frame_type type, uint32_t xid, uint64_t offset, const uint8_t *pt,
                          size_t len, uint8_t *out, size_t cap, mm_seal_job *job);
void mm_seal_job_run(const mm_seal_job *job);

/* Open a frame whose header h was parsed from hdr (MM_FRAME_HEADER bytes)
 * and whose ciphertext+tag is ct (h->len bytes), into pt (h->len - 16
 * bytes; may be the final destination, and may equal ct). If the tag fails,
 * libsodium 1.0.18 zeroes pt (both ciphers): no forged plaintext is ever
 * visible, but whatever pt held before is lost. Returns 0, MM_ERR_AUTH (the
 * counter does not advance; the connection must close), MM_ERR_LIMIT (the
 * receive counter reached MM_NONCE_LIMIT) or MM_ERR_FORMAT (h->len bad). */
int mm_record_open(mm_record *r, const mm_frame_hdr *h, const uint8_t *hdr, const uint8_t *ct, uint8_t *pt);

#endif
