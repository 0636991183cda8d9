/* Fuzz target: the XXpsk0 handshake in both roles (SECURITY.md §2.3).
 *
 * A valid transcript between an initiator and a responder with fixed keys is
 * built in-process; the input edits the one message it picks, and the side
 * reading that message must fail cleanly (a poisoned state, no keys). The
 * oracle is exact: every byte of every message is authenticated (msg1's e
 * through the psk, msg2's e through ee), so the handshake completes if and
 * only if the edit changed nothing, and then both sides derive the same keys.
 *
 * Input: [0] bit 0: cipher (ChaChaPoly / AESGCM); bits 1-2: the message to
 * edit (0: msg1, read by the responder; 1: msg2, read by the initiator;
 * 2: msg3, read by the responder; 3: none). [1]: bytes to cut from the end
 * of that message. The rest is XORed into the message from its start; bytes
 * past its end are appended (up to MM_HS_MAX_MSG). */
#include <sodium.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "limits.h"
#include "noise.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fixed_key(uint8_t sk[32], uint8_t fill) { memset(sk, fill, 32); }

/* Apply the edit to msg (length *len, capacity MM_HS_MAX_MSG); returns
 * whether the message changed. */
static bool edit(uint8_t *msg, size_t *len, uint8_t cut, const uint8_t *mask, size_t mlen)
{
    bool changed = false;
    size_t n = *len;
    if (cut) {
        n = cut >= n ? 0 : n - cut;
        changed = true;
    }
    for (size_t i = 0; i < mlen && i < MM_HS_MAX_MSG; i++) {
        if (i < n) {
            changed |= mask[i] != 0;
            msg[i] ^= mask[i];
        } else {
            msg[n++] = mask[i];
            changed = true;
        }
    }
    *len = n;
    return changed;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (sodium_init() < 0) abort();
    if (size < 2) return 0;
    const mm_noise_cipher cipher = data[0] & 1 ? MM_NOISE_AESGCM : MM_NOISE_CHACHAPOLY;
    if (cipher == MM_NOISE_AESGCM && !crypto_aead_aes256gcm_is_available()) return 0;
    const int target = (data[0] >> 1) & 3;
    const uint8_t cut = data[1];
    const uint8_t *mask = data + 2;
    const size_t mlen = size - 2;

    static const uint8_t prologue[] = "murmur/1 fuzz network id";
    uint8_t psk[32], si[32], sr[32], ei[32], er[32];
    memset(psk, 0x42, sizeof psk);
    fixed_key(si, 0x11);
    fixed_key(sr, 0x22);
    fixed_key(ei, 0x33);
    fixed_key(er, 0x44);
    mm_noise_hs I, R;
    if (mm_noise_init(&I, MM_NOISE_XXPSK0, cipher, true, prologue, sizeof prologue, si, psk, NULL) != 0 ||
        mm_noise_init(&R, MM_NOISE_XXPSK0, cipher, false, prologue, sizeof prologue, sr, psk, NULL) != 0)
        abort();
    mm_noise_set_ephemeral(&I, ei);
    mm_noise_set_ephemeral(&R, er);

    static const uint8_t pay_r[105] = {1, 2, 3}, pay_i[105] = {4, 5, 6};
    uint8_t msg[MM_HS_MAX_MSG], pl[MM_HS_MAX_MSG];
    size_t len = 0, plen = 0;
    bool changed = false, ok = true;

    /* msg1: initiator -> responder */
    if (mm_noise_write(&I, NULL, 0, msg, sizeof msg, &len) != 0 || len != MM_HS_MSG1_LEN) abort();
    if (target == 0) changed |= edit(msg, &len, cut, mask, mlen);
    ok = mm_noise_read(&R, msg, len, pl, sizeof pl, &plen) == 0;
    /* msg2: responder -> initiator */
    if (ok) {
        if (mm_noise_write(&R, pay_r, sizeof pay_r, msg, sizeof msg, &len) != 0) abort();
        if (target == 1) changed |= edit(msg, &len, cut, mask, mlen);
        ok = mm_noise_read(&I, msg, len, pl, sizeof pl, &plen) == 0;
        if (ok && (plen != sizeof pay_r || memcmp(pl, pay_r, plen) != 0)) abort(); /* a forged payload */
    }
    /* msg3: initiator -> responder */
    if (ok) {
        if (mm_noise_write(&I, pay_i, sizeof pay_i, msg, sizeof msg, &len) != 0) abort();
        if (target == 2) changed |= edit(msg, &len, cut, mask, mlen);
        ok = mm_noise_read(&R, msg, len, pl, sizeof pl, &plen) == 0;
        if (ok && (plen != sizeof pay_i || memcmp(pl, pay_i, plen) != 0)) abort();
    }
    if (ok == changed) abort(); /* an edit went unnoticed, or a clean run failed */
    if (ok) {
        uint8_t a1[32], a2[32], ha[MM_NOISE_HASHLEN], b1[32], b2[32], hb[MM_NOISE_HASHLEN];
        if (!mm_noise_done(&I) || !mm_noise_done(&R) || mm_noise_split(&I, a1, a2, ha) != 0 ||
            mm_noise_split(&R, b1, b2, hb) != 0)
            abort();
        if (memcmp(a1, b1, 32) || memcmp(a2, b2, 32) || memcmp(ha, hb, sizeof ha)) abort();
    } else {
        /* The side that failed is poisoned: it may not go on. */
        mm_noise_hs *reader = target == 1 ? &I : &R;
        if (mm_noise_write(reader, NULL, 0, msg, sizeof msg, &len) == 0) abort();
    }
    mm_noise_wipe(&I);
    mm_noise_wipe(&R);
    return 0;
}
