/* The Noise protocol framework's handshake (revision 34), the subset murmur
 * needs: DH 25519, hash SHA-512, cipher ChaChaPoly or AESGCM, patterns XX,
 * XXpsk0 (murmur's own), XXpsk3 and IKpsk2 (for the published test vectors).
 *
 * Pure functions of their inputs: no clock, no I/O, no global randomness.
 * The ephemeral key is handed in by the caller (who draws it from the
 * injected generator), which is also what makes known-answer tests possible.
 *
 * Errors: every failure (bad tag, low-order point, message too short or too
 * long, call out of turn) returns a negative mm_err and poisons the state:
 * only mm_noise_wipe is allowed afterwards. */
#ifndef MM_NOISE_H
#define MM_NOISE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MM_NOISE_DHLEN 32
#define MM_NOISE_HASHLEN 64
#define MM_NOISE_KEYLEN 32
#define MM_NOISE_TAGLEN 16
#define MM_NOISE_MAX_MSG 65535

typedef enum { MM_NOISE_XX, MM_NOISE_XXPSK0, MM_NOISE_XXPSK3, MM_NOISE_IKPSK2 } mm_noise_pattern;
typedef enum { MM_NOISE_CHACHAPOLY, MM_NOISE_AESGCM } mm_noise_cipher;

typedef struct {
    uint8_t k[MM_NOISE_KEYLEN];
    uint64_t n;
    bool has_k;
    mm_noise_cipher cipher;
} mm_noise_cs; /* CipherState */

typedef struct {
    mm_noise_pattern pattern;
    bool initiator;
    bool failed;
    int msg;                 /* index of the next handshake message (0-based) */
    uint8_t ck[MM_NOISE_HASHLEN];
    uint8_t h[MM_NOISE_HASHLEN];
    mm_noise_cs cs;
    uint8_t s_sk[32], s_pk[32];
    uint8_t e_sk[32], e_pk[32];
    uint8_t rs[32], re[32];
    bool has_s, has_e, has_rs, has_re;
    uint8_t psk[32];
    bool has_psk;
} mm_noise_hs;

/* Initialise. protocol name is derived from pattern and cipher
 * ("Noise_XXpsk0_25519_ChaChaPoly_SHA512"). s_sk: our static X25519 secret
 * (required by every pattern here). psk: 32 bytes or NULL (required by psk
 * patterns). rs: the responder's static public key, required for an IK
 * initiator, else NULL. Returns 0 or MM_ERR_INVALID. */
int mm_noise_init(mm_noise_hs *hs, mm_noise_pattern pattern, mm_noise_cipher cipher, bool initiator,
                  const uint8_t *prologue, size_t prologue_len, const uint8_t s_sk[32], const uint8_t *psk,
                  const uint8_t *rs);
/* The same, with our static public key s_pk (= X25519 base point times s_sk)
 * supplied by the caller, or NULL to compute it here. A responder that tries
 * several psks on one msg1 (a key ring) thus does no scalar multiplication
 * before msg1 is authenticated. */
int mm_noise_init_static(mm_noise_hs *hs, mm_noise_pattern pattern, mm_noise_cipher cipher, bool initiator,
                         const uint8_t *prologue, size_t prologue_len, const uint8_t s_sk[32], const uint8_t *s_pk,
                         const uint8_t *psk, const uint8_t *rs);
/* Set the ephemeral secret to use for our next "e" token (must be called
 * before the message that carries it). */
void mm_noise_set_ephemeral(mm_noise_hs *hs, const uint8_t e_sk[32]);

/* Write our next handshake message with payload into out (capacity cap);
 * *outlen gets its length. */
int mm_noise_write(mm_noise_hs *hs, const uint8_t *payload, size_t plen, uint8_t *out, size_t cap, size_t *outlen);
/* Read the peer's next handshake message; its decrypted payload goes to
 * payload (capacity cap), *plen its length. */
int mm_noise_read(mm_noise_hs *hs, const uint8_t *msg, size_t len, uint8_t *payload, size_t cap, size_t *plen);
/* True once every message of the pattern has been written or read. */
bool mm_noise_done(const mm_noise_hs *hs);
/* After the handshake: the two transport keys (initiator->responder,
 * responder->initiator) and the handshake hash h. */
int mm_noise_split(mm_noise_hs *hs, uint8_t k_i2r[32], uint8_t k_r2i[32], uint8_t h[MM_NOISE_HASHLEN]);
/* The remote static public key, once learned (NULL before). */
const uint8_t *mm_noise_remote_static(const mm_noise_hs *hs);
/* Zero every secret. */
void mm_noise_wipe(mm_noise_hs *hs);

/* Transport encryption with a CipherState (for the KATs' transport
 * messages): ENCRYPT/DECRYPT with the counter nonce, ad = empty. */
int mm_noise_cs_encrypt(mm_noise_cs *cs, const uint8_t *pt, size_t len, uint8_t *out);
int mm_noise_cs_decrypt(mm_noise_cs *cs, const uint8_t *ct, size_t len, uint8_t *out);
void mm_noise_cs_init(mm_noise_cs *cs, mm_noise_cipher cipher, const uint8_t k[32]);

#endif
