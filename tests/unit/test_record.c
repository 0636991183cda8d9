/* Record layer: round trips for both ciphers, tampering, drops, replays,
 * rekeying, the nonce limit and header validation (SECURITY.md R1-R4, R9,
 * O1, O2, O7). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka.h needs the headers above first. */
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "mm_error.h"
#include "record.h"

static const uint8_t KEY_A[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                                  17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};
static const uint8_t KEY_B[32] = {0xb0, 0xb1, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba,
                                  0xbb, 0xbc, 0xbd, 0xbe, 0xbf, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5,
                                  0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xcb, 0xcc, 0xcd, 0xce, 0xcf};

#define FRAME_CAP (MM_FRAME_HEADER + MM_FRAME_MAX_PLAIN + MM_FRAME_TAG)

static const mm_cipher CIPHERS[] = {MM_CIPHER_CHACHA, MM_CIPHER_AESGCM};
static const char *const CIPHER_NAMES[] = {"ChaCha20-Poly1305", "AES-256-GCM"};

static bool cipher_usable(mm_cipher c)
{
    if (c == MM_CIPHER_AESGCM && !crypto_aead_aes256gcm_is_available()) {
        print_message("AES-256-GCM unavailable on this CPU: skipped\n");
        return false;
    }
    return true;
}

/* Two ends of one session: a sends with KEY_A, b sends with KEY_B. */
static void make_pair(mm_record *a, mm_record *b, mm_cipher c)
{
    assert_int_equal(mm_record_init(a, c, KEY_A, KEY_B), MM_OK);
    assert_int_equal(mm_record_init(b, c, KEY_B, KEY_A), MM_OK);
}

static void fill(uint8_t *p, size_t n, uint8_t seed)
{
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(seed + i * 31 + (i >> 8));
}

/* Parse and open a whole frame; returns the first failure. */
static int open_frame(mm_record *r, const uint8_t *f, size_t flen, mm_frame_hdr *h, uint8_t *pt)
{
    assert_true(flen >= MM_FRAME_HEADER);
    int rc = mm_frame_parse_header(f, h);
    if (rc) return rc;
    if (h->len != flen - MM_FRAME_HEADER) return MM_ERR_FORMAT;
    return mm_record_open(r, h, f, f + MM_FRAME_HEADER, pt);
}

static long seal(mm_record *r, mm_frame_type t, const uint8_t *pt, size_t len, uint8_t *out)
{
    return mm_record_seal(r, t, 7, 0, pt, len, out, FRAME_CAP);
}

static void test_round_trip(void **state)
{
    (void)state;
    uint8_t *pt = malloc(MM_FRAME_MAX_PLAIN), *back = malloc(MM_FRAME_MAX_PLAIN + 1), *f = malloc(FRAME_CAP);
    assert_non_null(pt);
    assert_non_null(back);
    assert_non_null(f);
    fill(pt, MM_FRAME_MAX_PLAIN, 3);
    for (size_t ci = 0; ci < 2; ci++) {
        if (!cipher_usable(CIPHERS[ci])) continue;
        mm_record a, b;
        make_pair(&a, &b, CIPHERS[ci]);
        for (int t = MM_FRAME_CTRL; t <= MM_FRAME_CLOSE; t++) {
            size_t max = t == MM_FRAME_DATA ? MM_FRAME_MAX_PLAIN : MM_FRAME_CTRL_MAX;
            const size_t sizes[] = {0, 1, 17, 4096, max};
            for (size_t si = 0; si < 5; si++) {
                size_t n = sizes[si];
                long fl = mm_record_seal(&a, (mm_frame_type)t, 0x01020304u + (uint32_t)si, 0x1122334455667788ull, pt,
                                         n, f, FRAME_CAP);
                assert_int_equal(fl, (long)(MM_FRAME_HEADER + n + MM_FRAME_TAG));
                mm_frame_hdr h;
                memset(back, 0xee, n + 1);
                assert_int_equal(open_frame(&b, f, (size_t)fl, &h, back), MM_OK);
                assert_int_equal(h.len, n + MM_FRAME_TAG);
                assert_int_equal(h.type, t);
                assert_int_equal(h.xid, 0x01020304u + si);
                assert_true(h.offset == 0x1122334455667788ull);
                if (n) assert_memory_equal(back, pt, n);
                assert_int_equal(back[n], 0xee); /* nothing written past the plaintext */
                /* and the other direction */
                fl = mm_record_seal(&b, (mm_frame_type)t, 0, 0, pt, n, f, FRAME_CAP);
                assert_int_equal(open_frame(&a, f, (size_t)fl, &h, back), MM_OK);
                if (n) assert_memory_equal(back, pt, n);
            }
        }
        /* Header bytes on the wire: big-endian, reserved zero. */
        long fl = mm_record_seal(&a, MM_FRAME_DATA, 0xa1b2c3d4u, 0x0102030405060708ull, pt, 1, f, FRAME_CAP);
        assert_int_equal(fl, MM_FRAME_HEADER + 1 + MM_FRAME_TAG);
        const uint8_t want[MM_FRAME_HEADER] = {0, 0, 0, 17, 2, 0, 0, 0, 0xa1, 0xb2, 0xc3, 0xd4, 1, 2, 3, 4, 5, 6, 7, 8};
        assert_memory_equal(f, want, MM_FRAME_HEADER);
        mm_record_wipe(&a);
        mm_record_wipe(&b);
    }
    free(pt);
    free(back);
    free(f);
}

static void test_seal_refusals(void **state)
{
    (void)state;
    static uint8_t pt[MM_FRAME_MAX_PLAIN + 1], f[FRAME_CAP + 1];
    mm_record a, b;
    make_pair(&a, &b, MM_CIPHER_CHACHA);
    assert_int_equal(mm_record_seal(&a, MM_FRAME_DATA, 0, 0, pt, MM_FRAME_MAX_PLAIN + 1, f, sizeof f), MM_ERR_INVALID);
    assert_int_equal(mm_record_seal(&a, MM_FRAME_CTRL, 0, 0, pt, MM_FRAME_CTRL_MAX + 1, f, sizeof f), MM_ERR_INVALID);
    assert_int_equal(mm_record_seal(&a, (mm_frame_type)0, 0, 0, pt, 1, f, sizeof f), MM_ERR_INVALID);
    assert_int_equal(mm_record_seal(&a, (mm_frame_type)6, 0, 0, pt, 1, f, sizeof f), MM_ERR_INVALID);
    assert_int_equal(mm_record_seal(&a, MM_FRAME_CTRL, 0, 0, pt, 10, f, MM_FRAME_HEADER + 10 + 15), MM_ERR_INVALID);
    assert_int_equal(a.tx.n, 0); /* refusals use no nonce */
    assert_int_equal(mm_record_seal(&a, MM_FRAME_CTRL, 0, 0, pt, 10, f, MM_FRAME_HEADER + 10 + 16), 46);
    assert_int_equal(mm_record_init(&a, (mm_cipher)7, KEY_A, KEY_B), MM_ERR_INVALID);
}

/* Flip every bit of a frame in turn: each copy must fail (header parse or
 * tag), the receiver's state must survive, and the original still opens. */
static void test_bit_flips(void **state)
{
    (void)state;
    uint8_t pt[64], back[64], f[MM_FRAME_HEADER + 64 + MM_FRAME_TAG], g[sizeof f];
    fill(pt, sizeof pt, 9);
    for (size_t ci = 0; ci < 2; ci++) {
        if (!cipher_usable(CIPHERS[ci])) continue;
        mm_record a, b;
        make_pair(&a, &b, CIPHERS[ci]);
        long fl = mm_record_seal(&a, MM_FRAME_DATA, 3, 64, pt, sizeof pt, f, sizeof f);
        assert_int_equal(fl, (long)sizeof f);
        int auth_fails = 0;
        for (size_t bit = 0; bit < 8 * sizeof f; bit++) {
            memcpy(g, f, sizeof f);
            g[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            memset(back, 0xaa, sizeof back);
            mm_frame_hdr h;
            int rc = open_frame(&b, g, sizeof g, &h, back);
            assert_int_not_equal(rc, MM_OK);
            if (rc == MM_ERR_AUTH) {
                auth_fails++;
                /* libsodium 1.0.18 zeroes the destination on a tag failure
                 * (both ciphers): no forged plaintext is ever visible. */
                for (size_t i = 0; i < sizeof back; i++) assert_int_equal(back[i], 0);
            }
        }
        /* Every ciphertext and tag bit, and the header bits that keep it
         * parseable (xid, offset, some len/type bits), fail the tag. */
        assert_true(auth_fails >= (int)(8 * (64 + MM_FRAME_TAG + 12)));
        assert_int_equal(b.rx.n, 0);
        mm_frame_hdr h;
        assert_int_equal(open_frame(&b, f, sizeof f, &h, back), MM_OK);
        assert_memory_equal(back, pt, sizeof pt);
        print_message("%s: %d of %zu bit flips failed the tag, the rest the header check\n", CIPHER_NAMES[ci],
                      auth_fails, 8 * sizeof f);
    }
}

/* Dropped, duplicated, swapped and foreign frames all fail the tag. */
static void test_sequence_faults(void **state)
{
    (void)state;
    uint8_t pt[32] = {0}, back[32];
    uint8_t f[3][MM_FRAME_HEADER + sizeof pt + MM_FRAME_TAG];
    for (size_t ci = 0; ci < 2; ci++) {
        if (!cipher_usable(CIPHERS[ci])) continue;
        mm_record a, b;
        mm_frame_hdr h;
        /* Identical headers and plaintexts: only the nonce tells them apart. */
        make_pair(&a, &b, CIPHERS[ci]);
        for (int i = 0; i < 3; i++) assert_int_equal(seal(&a, MM_FRAME_CTRL, pt, sizeof pt, f[i]), (long)sizeof f[0]);

        /* dropped: frame 1 where 0 is expected */
        assert_int_equal(open_frame(&b, f[1], sizeof f[1], &h, back), MM_ERR_AUTH);
        /* in order works; duplicate fails */
        assert_int_equal(open_frame(&b, f[0], sizeof f[0], &h, back), MM_OK);
        assert_int_equal(open_frame(&b, f[0], sizeof f[0], &h, back), MM_ERR_AUTH);
        /* swapped: 2 before 1 */
        assert_int_equal(open_frame(&b, f[2], sizeof f[2], &h, back), MM_ERR_AUTH);
        assert_int_equal(open_frame(&b, f[1], sizeof f[1], &h, back), MM_OK);
        assert_int_equal(open_frame(&b, f[2], sizeof f[2], &h, back), MM_OK);

        /* a frame of our own direction reflected back to us */
        mm_record c, d;
        make_pair(&c, &d, CIPHERS[ci]);
        seal(&c, MM_FRAME_CTRL, pt, sizeof pt, f[0]);
        assert_int_equal(open_frame(&c, f[0], sizeof f[0], &h, back), MM_ERR_AUTH);

        /* another session (other keys), same counter */
        uint8_t k1[32], k2[32];
        memcpy(k1, KEY_A, 32);
        memcpy(k2, KEY_B, 32);
        k1[0] ^= 1;
        mm_record e;
        assert_int_equal(mm_record_init(&e, CIPHERS[ci], k1, k2), MM_OK);
        make_pair(&c, &d, CIPHERS[ci]);
        seal(&e, MM_FRAME_CTRL, pt, sizeof pt, f[0]);
        assert_int_equal(open_frame(&d, f[0], sizeof f[0], &h, back), MM_ERR_AUTH);
    }
    /* the same keys under the other cipher */
    if (cipher_usable(MM_CIPHER_AESGCM)) {
        mm_record a, b;
        mm_frame_hdr h;
        assert_int_equal(mm_record_init(&a, MM_CIPHER_CHACHA, KEY_A, KEY_B), MM_OK);
        assert_int_equal(mm_record_init(&b, MM_CIPHER_AESGCM, KEY_B, KEY_A), MM_OK);
        seal(&a, MM_FRAME_CTRL, pt, sizeof pt, f[0]);
        assert_int_equal(open_frame(&b, f[0], sizeof f[0], &h, back), MM_ERR_AUTH);
    }
}

/* Noise's Rekey by hand: ENCRYPT(k, 2^64-1, "", 0^32)[0:32]. */
static void rekey_by_hand(mm_cipher c, const uint8_t k[32], uint8_t out[32])
{
    uint8_t zeros[32] = {0}, ct[32 + 16];
    uint8_t nonce[12] = {0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    if (c == MM_CIPHER_AESGCM)
        crypto_aead_aes256gcm_encrypt(ct, NULL, zeros, 32, NULL, 0, NULL, nonce, k);
    else
        crypto_aead_chacha20poly1305_ietf_encrypt(ct, NULL, zeros, 32, NULL, 0, NULL, nonce, k);
    memcpy(out, ct, 32);
}

static void test_rekey(void **state)
{
    (void)state;
    uint8_t pt[40], back[40], f[MM_FRAME_HEADER + sizeof pt + MM_FRAME_TAG];
    for (size_t ci = 0; ci < 2; ci++) {
        if (!cipher_usable(CIPHERS[ci])) continue;
        mm_record a, b;
        mm_frame_hdr h;
        make_pair(&a, &b, CIPHERS[ci]);
        a.rekey_every = b.rekey_every = 4;
        uint8_t k[32];
        memcpy(k, KEY_A, 32);
        for (int i = 0; i < 1000; i++) {
            fill(pt, sizeof pt, (uint8_t)i);
            assert_int_equal(seal(&a, MM_FRAME_DATA, pt, sizeof pt, f), (long)sizeof f);
            assert_int_equal(open_frame(&b, f, sizeof f, &h, back), MM_OK);
            assert_memory_equal(back, pt, sizeof pt);
            if ((i + 1) % 4 == 0) rekey_by_hand(CIPHERS[ci], k, k);
            assert_memory_equal(a.tx.key, k, 32);
            assert_memory_equal(b.rx.key, k, 32);
        }
        assert_int_equal(a.tx.n, 1000);

        /* The sides disagree on the period: the first frame after the
         * sender's rekey fails. */
        make_pair(&a, &b, CIPHERS[ci]);
        a.rekey_every = 4;
        b.rekey_every = 5;
        for (int i = 0; i < 4; i++) {
            seal(&a, MM_FRAME_DATA, pt, sizeof pt, f);
            assert_int_equal(open_frame(&b, f, sizeof f, &h, back), MM_OK);
        }
        seal(&a, MM_FRAME_DATA, pt, sizeof pt, f);
        assert_int_equal(open_frame(&b, f, sizeof f, &h, back), MM_ERR_AUTH);
    }
}

/* At MM_NONCE_LIMIT the sender refuses; the last allowed nonce still works. */
static void test_nonce_limit(void **state)
{
    (void)state;
    uint8_t pt[8] = {1, 2, 3, 4, 5, 6, 7, 8}, back[8], f[MM_FRAME_HEADER + 8 + MM_FRAME_TAG];
    for (size_t ci = 0; ci < 2; ci++) {
        if (!cipher_usable(CIPHERS[ci])) continue;
        mm_record a, b;
        mm_frame_hdr h;
        make_pair(&a, &b, CIPHERS[ci]);
        a.tx.n = b.rx.n = MM_NONCE_LIMIT - 1;
        assert_int_equal(seal(&a, MM_FRAME_CTRL, pt, sizeof pt, f), (long)sizeof f);
        assert_int_equal(open_frame(&b, f, sizeof f, &h, back), MM_OK);
        assert_memory_equal(back, pt, sizeof pt);
        assert_true(a.tx.n == MM_NONCE_LIMIT);
        assert_int_equal(seal(&a, MM_FRAME_CTRL, pt, sizeof pt, f), MM_ERR_LIMIT);
        assert_int_equal(seal(&a, MM_FRAME_CLOSE, NULL, 0, f), MM_ERR_LIMIT);
        assert_true(a.tx.n == MM_NONCE_LIMIT); /* no nonce is ever reused */
        b.rx.n = MM_NONCE_LIMIT;
        assert_int_equal(mm_record_open(&b, &h, f, f + MM_FRAME_HEADER, back), MM_ERR_LIMIT);
    }
}

/* Decrypting in place (pt == ct) works for both ciphers. */
static void test_in_place(void **state)
{
    (void)state;
    uint8_t pt[300], f[MM_FRAME_HEADER + sizeof pt + MM_FRAME_TAG];
    fill(pt, sizeof pt, 77);
    for (size_t ci = 0; ci < 2; ci++) {
        if (!cipher_usable(CIPHERS[ci])) continue;
        mm_record a, b;
        mm_frame_hdr h;
        make_pair(&a, &b, CIPHERS[ci]);
        /* sealing in place too: the plaintext already sits after the header */
        memcpy(f + MM_FRAME_HEADER, pt, sizeof pt);
        assert_int_equal(mm_record_seal(&a, MM_FRAME_DATA, 1, 0, f + MM_FRAME_HEADER, sizeof pt, f, sizeof f),
                         (long)sizeof f);
        assert_int_equal(mm_frame_parse_header(f, &h), MM_OK);
        assert_int_equal(mm_record_open(&b, &h, f, f + MM_FRAME_HEADER, f + MM_FRAME_HEADER), MM_OK);
        assert_memory_equal(f + MM_FRAME_HEADER, pt, sizeof pt);
    }
}

/* The wire bytes against libsodium called by hand: Noise's nonce layout
 * (4 zero bytes, then the counter, LE for ChaCha and BE for AES-GCM) and
 * the header as associated data. */
static void test_nonce_layout(void **state)
{
    (void)state;
    uint8_t pt[50], f[MM_FRAME_HEADER + sizeof pt + MM_FRAME_TAG], ct[sizeof pt], tag[MM_FRAME_TAG];
    fill(pt, sizeof pt, 5);
    for (size_t ci = 0; ci < 2; ci++) {
        if (!cipher_usable(CIPHERS[ci])) continue;
        mm_record a, b;
        make_pair(&a, &b, CIPHERS[ci]);
        a.tx.n = 0x0102030405060708ull;
        assert_int_equal(mm_record_seal(&a, MM_FRAME_DATA, 1, 2, pt, sizeof pt, f, sizeof f), (long)sizeof f);
        uint8_t nonce[12] = {0};
        for (int i = 0; i < 8; i++)
            nonce[4 + i] = CIPHERS[ci] == MM_CIPHER_AESGCM ? (uint8_t)(i + 1) : (uint8_t)(8 - i);
        if (CIPHERS[ci] == MM_CIPHER_AESGCM)
            crypto_aead_aes256gcm_encrypt_detached(ct, tag, NULL, pt, sizeof pt, f, MM_FRAME_HEADER, NULL, nonce, KEY_A);
        else
            crypto_aead_chacha20poly1305_ietf_encrypt_detached(ct, tag, NULL, pt, sizeof pt, f, MM_FRAME_HEADER, NULL,
                                                               nonce, KEY_A);
        assert_memory_equal(f + MM_FRAME_HEADER, ct, sizeof ct);
        assert_memory_equal(f + MM_FRAME_HEADER + sizeof pt, tag, MM_FRAME_TAG);
    }
}

static void put_hdr(uint8_t *p, uint32_t len, uint8_t type, uint8_t flags, uint16_t rsv)
{
    memset(p, 0, MM_FRAME_HEADER);
    p[0] = (uint8_t)(len >> 24);
    p[1] = (uint8_t)(len >> 16);
    p[2] = (uint8_t)(len >> 8);
    p[3] = (uint8_t)len;
    p[4] = type;
    p[5] = flags;
    p[6] = (uint8_t)(rsv >> 8);
    p[7] = (uint8_t)rsv;
}

static void test_header_parse(void **state)
{
    (void)state;
    uint8_t p[MM_FRAME_HEADER];
    mm_frame_hdr h;
    const uint32_t data_max = MM_FRAME_MAX_PLAIN + MM_FRAME_TAG, ctrl_max = MM_FRAME_CTRL_MAX + MM_FRAME_TAG;

    put_hdr(p, UINT32_MAX, MM_FRAME_DATA, 0, 0);
    assert_int_equal(mm_frame_parse_header(p, &h), MM_ERR_LIMIT);
    put_hdr(p, data_max + 1, MM_FRAME_DATA, 0, 0);
    assert_int_equal(mm_frame_parse_header(p, &h), MM_ERR_LIMIT);
    put_hdr(p, data_max, MM_FRAME_DATA, 0, 0);
    assert_int_equal(mm_frame_parse_header(p, &h), MM_OK);
    assert_int_equal(h.len, data_max);
    for (uint32_t len = 0; len < MM_FRAME_TAG; len++) {
        put_hdr(p, len, MM_FRAME_DATA, 0, 0);
        assert_int_equal(mm_frame_parse_header(p, &h), MM_ERR_FORMAT);
    }
    put_hdr(p, MM_FRAME_TAG, MM_FRAME_CLOSE, 0, 0);
    assert_int_equal(mm_frame_parse_header(p, &h), MM_OK);
    put_hdr(p, 17, MM_FRAME_DATA, 0, 0);
    assert_int_equal(mm_frame_parse_header(p, &h), MM_OK);

    put_hdr(p, 100, 0, 0, 0);
    assert_int_equal(mm_frame_parse_header(p, &h), MM_ERR_FORMAT);
    put_hdr(p, 100, 6, 0, 0);
    assert_int_equal(mm_frame_parse_header(p, &h), MM_ERR_FORMAT);
    put_hdr(p, 100, 0xff, 0, 0);
    assert_int_equal(mm_frame_parse_header(p, &h), MM_ERR_FORMAT);
    for (int bit = 0; bit < 8; bit++) {
        put_hdr(p, 100, MM_FRAME_CTRL, (uint8_t)(1u << bit), 0);
        assert_int_equal(mm_frame_parse_header(p, &h), MM_ERR_FORMAT);
    }
    for (int bit = 0; bit < 16; bit++) {
        put_hdr(p, 100, MM_FRAME_CTRL, 0, (uint16_t)(1u << bit));
        assert_int_equal(mm_frame_parse_header(p, &h), MM_ERR_FORMAT);
    }

    /* Everything but DATA is capped at MM_FRAME_CTRL_MAX of plaintext. */
    for (uint8_t t = MM_FRAME_CTRL; t <= MM_FRAME_CLOSE; t++) {
        put_hdr(p, ctrl_max, t, 0, 0);
        assert_int_equal(mm_frame_parse_header(p, &h), MM_OK);
        put_hdr(p, ctrl_max + 1, t, 0, 0);
        assert_int_equal(mm_frame_parse_header(p, &h), t == MM_FRAME_DATA ? MM_OK : MM_ERR_LIMIT);
    }

    /* Big-endian fields. */
    const uint8_t raw[MM_FRAME_HEADER] = {0, 0, 1, 0, 2, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef,
                                          0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef};
    assert_int_equal(mm_frame_parse_header(raw, &h), MM_OK);
    assert_int_equal(h.len, 256);
    assert_int_equal(h.type, MM_FRAME_DATA);
    assert_int_equal(h.xid, 0xdeadbeefu);
    assert_true(h.offset == 0x0123456789abcdefull);
}

int main(void)
{
    if (sodium_init() < 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),     cmocka_unit_test(test_seal_refusals),
        cmocka_unit_test(test_bit_flips),      cmocka_unit_test(test_sequence_faults),
        cmocka_unit_test(test_rekey),          cmocka_unit_test(test_nonce_limit),
        cmocka_unit_test(test_in_place),       cmocka_unit_test(test_header_parse),
        cmocka_unit_test(test_nonce_layout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
