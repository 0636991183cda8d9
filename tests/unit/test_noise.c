/* Noise handshake: the cacophony known-answer vectors (XX, XXpsk3, IKpsk2,
 * ChaChaPoly and AESGCM, SHA512), murmur's own XXpsk0 transcript, and the
 * failures: wrong psk, tampered messages, low-order points, calls out of
 * turn, bad lengths.
 *
 * MM_WRITE_VECTORS=path: instead of testing, write murmur's XXpsk0
 * transcript (tests/data/noise/murmur_xxpsk0.json) to path; then run
 * tests/data/noise/gen_vectors.py to refresh noise_vectors.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka.h needs the headers above first. */
#include <cmocka.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mm_error.h"
#include "noise.h"
#include "noise_vectors.h"

#define BUF 2048

/* ---- helpers ----------------------------------------------------------- */

static size_t unhex(const char *hex, uint8_t *out, size_t cap)
{
    size_t n = strlen(hex);
    assert_true(n % 2 == 0 && n / 2 <= cap);
    size_t len = 0;
    assert_int_equal(sodium_hex2bin(out, cap, hex, n, NULL, &len, NULL), 0);
    assert_int_equal(len, n / 2);
    return len;
}

static bool aesgcm_available(void)
{
    return crypto_aead_aes256gcm_is_available() != 0;
}

static int pattern_msgs(mm_noise_pattern p)
{
    return p == MM_NOISE_IKPSK2 ? 2 : 3;
}

/* "Noise_<pattern>_25519_<cipher>_SHA512" */
static void parse_name(const char *name, mm_noise_pattern *pattern, mm_noise_cipher *cipher)
{
    static const struct {
        const char *s;
        mm_noise_pattern p;
    } pats[] = {{"XX", MM_NOISE_XX}, {"XXpsk0", MM_NOISE_XXPSK0}, {"XXpsk3", MM_NOISE_XXPSK3}, {"IKpsk2", MM_NOISE_IKPSK2}};
    char buf[64];
    bool found = false;
    for (size_t i = 0; i < sizeof pats / sizeof pats[0] && !found; i++) {
        for (int c = 0; c < 2; c++) {
            snprintf(buf, sizeof buf, "Noise_%s_25519_%s_SHA512", pats[i].s, c == 0 ? "ChaChaPoly" : "AESGCM");
            if (strcmp(buf, name) == 0) {
                *pattern = pats[i].p;
                *cipher = c == 0 ? MM_NOISE_CHACHAPOLY : MM_NOISE_AESGCM;
                found = true;
                break;
            }
        }
    }
    if (!found) fail_msg("unknown protocol %s", name);
}

static void public_key(const uint8_t sk[32], uint8_t pk[32])
{
    assert_int_equal(crypto_scalarmult_curve25519_base(pk, sk), 0);
}

/* ---- known-answer runs ------------------------------------------------- */

/* The cacophony vectors (this copy of them, from mcginty/snow) record as
 * handshake_hash not the final h of Noise section 5.3 but the value h had
 * two MixHash calls before the end of the handshake: for XX (msg3 = s,
 * payload) h before msg3, for XXpsk3 (msg3 = s, psk, payload) and IKpsk2
 * (msg2 = e, psk, payload) h after the message's first token. This holds
 * for every vector here (and for NN), checked against an independent
 * computation; the ciphertexts, whose tags bind every earlier h, all match.
 * So the field is checked as that: h_pre (h before the last message) with
 * the last message's first token mixed in where there are three hashes. */
static void cacophony_hash(mm_noise_pattern p, const uint8_t h_pre[MM_NOISE_HASHLEN], const uint8_t *last,
                           uint8_t out[MM_NOISE_HASHLEN])
{
    size_t n = p == MM_NOISE_XXPSK3 ? 48 : p == MM_NOISE_IKPSK2 ? 32 : 0;
    memcpy(out, h_pre, MM_NOISE_HASHLEN);
    if (n == 0) return;
    crypto_hash_sha512_state st;
    crypto_hash_sha512_init(&st);
    crypto_hash_sha512_update(&st, h_pre, MM_NOISE_HASHLEN);
    crypto_hash_sha512_update(&st, last, n);
    crypto_hash_sha512_final(&st, out);
}

/* Both roles from the vector's keys: every handshake message equals the
 * vector's ciphertext and decrypts to its payload, the handshake hash
 * matches (the final h for murmur's transcripts, cacophony's reading of it
 * for theirs), and the transport messages after Split (message i sent by
 * the initiator iff i is even) match too. */
static void run_vector(const mm_kat_vector *v, bool cacophony)
{
    mm_noise_pattern pattern;
    mm_noise_cipher cipher;
    parse_name(v->name, &pattern, &cipher);
    uint8_t iprol[256], rprol[256], is[32], ie[32], rs[32], re[32], irs[32], ipsk[32], rpsk[32];
    size_t iprol_len = unhex(v->init_prologue, iprol, sizeof iprol);
    size_t rprol_len = unhex(v->resp_prologue, rprol, sizeof rprol);
    assert_int_equal(unhex(v->init_static, is, 32), 32);
    assert_int_equal(unhex(v->init_ephemeral, ie, 32), 32);
    assert_int_equal(unhex(v->resp_static, rs, 32), 32);
    assert_int_equal(unhex(v->resp_ephemeral, re, 32), 32);
    if (v->init_remote_static) assert_int_equal(unhex(v->init_remote_static, irs, 32), 32);
    if (v->init_psk) assert_int_equal(unhex(v->init_psk, ipsk, 32), 32);
    if (v->resp_psk) assert_int_equal(unhex(v->resp_psk, rpsk, 32), 32);

    mm_noise_hs ini, res;
    assert_int_equal(mm_noise_init(&ini, pattern, cipher, true, iprol, iprol_len, is, v->init_psk ? ipsk : NULL,
                                   v->init_remote_static ? irs : NULL),
                     0);
    assert_int_equal(
        mm_noise_init(&res, pattern, cipher, false, rprol, rprol_len, rs, v->resp_psk ? rpsk : NULL, NULL), 0);
    mm_noise_set_ephemeral(&ini, ie);
    mm_noise_set_ephemeral(&res, re);

    int nhs = pattern_msgs(pattern);
    assert_true(v->n_messages >= (size_t)nhs);
    mm_noise_cs isend, irecv, rsend, rrecv;
    uint8_t payload[BUF], ct[BUF], msg[BUF], out[BUF], h_pre[MM_NOISE_HASHLEN];
    for (size_t i = 0; i < v->n_messages; i++) {
        bool from_init = i % 2 == 0;
        size_t plen = unhex(v->messages[i].payload, payload, sizeof payload);
        size_t clen = unhex(v->messages[i].ciphertext, ct, sizeof ct);
        size_t mlen = 0, olen = 0;
        if ((int)i < nhs) {
            mm_noise_hs *w = from_init ? &ini : &res, *r = from_init ? &res : &ini;
            memcpy(h_pre, w->h, sizeof h_pre);
            assert_int_equal(mm_noise_write(w, payload, plen, msg, sizeof msg, &mlen), 0);
            assert_int_equal(mlen, clen);
            assert_memory_equal(msg, ct, clen);
            assert_int_equal(mm_noise_read(r, msg, mlen, out, sizeof out, &olen), 0);
            assert_int_equal(olen, plen);
            if (plen) assert_memory_equal(out, payload, plen);
            if ((int)i == nhs - 1) {
                assert_true(mm_noise_done(&ini) && mm_noise_done(&res));
                /* The remote statics are the peers' keys. */
                uint8_t pk[32];
                public_key(rs, pk);
                assert_non_null(mm_noise_remote_static(&ini));
                assert_memory_equal(mm_noise_remote_static(&ini), pk, 32);
                public_key(is, pk);
                assert_non_null(mm_noise_remote_static(&res));
                assert_memory_equal(mm_noise_remote_static(&res), pk, 32);

                uint8_t ki[2][32], kr[2][32], hi[MM_NOISE_HASHLEN], hr[MM_NOISE_HASHLEN], hh[MM_NOISE_HASHLEN];
                assert_int_equal(mm_noise_split(&ini, ki[0], ki[1], hi), 0);
                assert_int_equal(mm_noise_split(&res, kr[0], kr[1], hr), 0);
                assert_int_equal(unhex(v->handshake_hash, hh, sizeof hh), MM_NOISE_HASHLEN);
                assert_memory_equal(hi, hr, MM_NOISE_HASHLEN);
                if (cacophony) {
                    uint8_t hc[MM_NOISE_HASHLEN];
                    cacophony_hash(pattern, h_pre, msg, hc);
                    assert_memory_equal(hc, hh, MM_NOISE_HASHLEN);
                } else {
                    assert_memory_equal(hi, hh, MM_NOISE_HASHLEN);
                }
                assert_memory_equal(ki, kr, sizeof ki);
                mm_noise_cs_init(&isend, cipher, ki[0]);
                mm_noise_cs_init(&irecv, cipher, ki[1]);
                mm_noise_cs_init(&rsend, cipher, kr[1]);
                mm_noise_cs_init(&rrecv, cipher, kr[0]);
            }
        } else {
            assert_int_equal(clen, plen + MM_NOISE_TAGLEN);
            assert_int_equal(mm_noise_cs_encrypt(from_init ? &isend : &rsend, payload, plen, msg), 0);
            assert_memory_equal(msg, ct, clen);
            assert_int_equal(mm_noise_cs_decrypt(from_init ? &rrecv : &irecv, msg, clen, out), 0);
            if (plen) assert_memory_equal(out, payload, plen);
        }
    }
    mm_noise_wipe(&ini);
    mm_noise_wipe(&res);
}

static size_t run_vectors(const mm_kat_vector *vs, size_t n, mm_noise_cipher want, bool cacophony)
{
    size_t ran = 0;
    for (size_t i = 0; i < n; i++) {
        mm_noise_pattern p;
        mm_noise_cipher c;
        parse_name(vs[i].name, &p, &c);
        if (c != want) continue;
        run_vector(&vs[i], cacophony);
        print_message("ok %s (%zu messages)\n", vs[i].name, vs[i].n_messages);
        ran++;
    }
    return ran;
}

static void test_cacophony_chachapoly(void **state)
{
    (void)state;
    assert_int_equal(run_vectors(cacophony_vectors, CACOPHONY_COUNT, MM_NOISE_CHACHAPOLY, true), 3);
}

static void test_cacophony_aesgcm(void **state)
{
    (void)state;
    if (!aesgcm_available()) {
        print_message("AES-GCM is not available on this CPU: skipping its known-answer tests\n");
        skip();
    }
    assert_int_equal(run_vectors(cacophony_vectors, CACOPHONY_COUNT, MM_NOISE_AESGCM, true), 3);
}

/* SECURITY.md 2.3: msg1 is exactly 48 bytes. */
static void assert_msg1_48(const mm_kat_vector *vs, size_t n)
{
    for (size_t i = 0; i < n; i++) assert_int_equal(strlen(vs[i].messages[0].ciphertext), 2 * 48);
}

/* murmur's own handshake: a change that alters the transcript fails here. */
static void test_murmur_transcript(void **state)
{
    (void)state;
    assert_int_equal(MURMUR_COUNT, 2);
    assert_msg1_48(murmur_vectors, MURMUR_COUNT);
    assert_int_equal(run_vectors(murmur_vectors, MURMUR_COUNT, MM_NOISE_CHACHAPOLY, false), 1);
    if (!aesgcm_available()) {
        print_message("AES-GCM is not available on this CPU: skipping the AESGCM transcript\n");
        return;
    }
    assert_int_equal(run_vectors(murmur_vectors, MURMUR_COUNT, MM_NOISE_AESGCM, false), 1);
}

/* ---- murmur's transcript (MM_WRITE_VECTORS) ---------------------------- */

/* Fixed inputs: keys filled with 0x01..0x05, prologue "murmur/1"; msg1 has
 * the empty payload of SECURITY.md 2.3, msg2 and msg3 payloads of the sizes
 * of P without and with a certificate, then four transport messages. */
#define MURMUR_PROLOGUE "murmur/1"
#define MURMUR_MSGS 7

static size_t murmur_payload(int i, uint8_t *p)
{
    static const char *const text[] = {"", "ping", "pong"};
    size_t n = 0;
    switch (i) {
    case 0: n = 0; break;
    case 1:
        n = 105;
        for (size_t j = 0; j < n; j++) p[j] = (uint8_t)(0x10 + j);
        break;
    case 2:
        n = 261;
        for (size_t j = 0; j < n; j++) p[j] = (uint8_t)(0x80 + 3 * j);
        break;
    case 3:
    case 4:
    case 5:
        n = strlen(text[i - 3]);
        memcpy(p, text[i - 3], n);
        break;
    default:
        n = 300;
        for (size_t j = 0; j < n; j++) p[j] = (uint8_t)(j * j + 7);
        break;
    }
    return n;
}

static void fprint_hex(FILE *f, const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++) fprintf(f, "%02x", b[i]);
}

static int write_transcript(FILE *f, mm_noise_cipher cipher)
{
    uint8_t is[32], ie[32], rs[32], re[32], psk[32];
    memset(is, 0x01, 32);
    memset(ie, 0x02, 32);
    memset(rs, 0x03, 32);
    memset(re, 0x04, 32);
    memset(psk, 0x05, 32);
    const uint8_t *prol = (const uint8_t *)MURMUR_PROLOGUE;
    size_t plen_prol = strlen(MURMUR_PROLOGUE);
    mm_noise_hs ini, res;
    if (mm_noise_init(&ini, MM_NOISE_XXPSK0, cipher, true, prol, plen_prol, is, psk, NULL) != 0 ||
        mm_noise_init(&res, MM_NOISE_XXPSK0, cipher, false, prol, plen_prol, rs, psk, NULL) != 0)
        return -1;
    mm_noise_set_ephemeral(&ini, ie);
    mm_noise_set_ephemeral(&res, re);

    uint8_t pl[MURMUR_MSGS][BUF], ct[MURMUR_MSGS][BUF], out[BUF];
    size_t pn[MURMUR_MSGS], cn[MURMUR_MSGS];
    uint8_t ki[32], kr[32], h[MM_NOISE_HASHLEN], ki2[32], kr2[32], h2[MM_NOISE_HASHLEN];
    mm_noise_cs isend, irecv, rsend, rrecv;
    for (int i = 0; i < MURMUR_MSGS; i++) {
        bool from_init = i % 2 == 0;
        pn[i] = murmur_payload(i, pl[i]);
        size_t olen = 0;
        if (i < 3) {
            mm_noise_hs *w = from_init ? &ini : &res, *r = from_init ? &res : &ini;
            if (mm_noise_write(w, pl[i], pn[i], ct[i], BUF, &cn[i]) != 0) return -1;
            if (mm_noise_read(r, ct[i], cn[i], out, sizeof out, &olen) != 0 || olen != pn[i]) return -1;
            if (i == 2) {
                if (mm_noise_split(&ini, ki, kr, h) != 0 || mm_noise_split(&res, ki2, kr2, h2) != 0) return -1;
                if (memcmp(h, h2, sizeof h) != 0 || memcmp(ki, ki2, 32) != 0 || memcmp(kr, kr2, 32) != 0)
                    return -1;
                mm_noise_cs_init(&isend, cipher, ki);
                mm_noise_cs_init(&rrecv, cipher, ki);
                mm_noise_cs_init(&rsend, cipher, kr);
                mm_noise_cs_init(&irecv, cipher, kr);
            }
        } else {
            cn[i] = pn[i] + MM_NOISE_TAGLEN;
            if (mm_noise_cs_encrypt(from_init ? &isend : &rsend, pl[i], pn[i], ct[i]) != 0) return -1;
            if (mm_noise_cs_decrypt(from_init ? &rrecv : &irecv, ct[i], cn[i], out) != 0) return -1;
        }
    }

    fprintf(f, "{\n\"protocol_name\": \"Noise_XXpsk0_25519_%s_SHA512\",\n",
            cipher == MM_NOISE_CHACHAPOLY ? "ChaChaPoly" : "AESGCM");
    const char *side[2] = {"init", "resp"};
    const uint8_t *st[2] = {is, rs}, *eph[2] = {ie, re};
    for (int s = 0; s < 2; s++) {
        fprintf(f, "\"%s_prologue\": \"", side[s]);
        fprint_hex(f, prol, plen_prol);
        fprintf(f, "\",\n\"%s_psks\": [\"", side[s]);
        fprint_hex(f, psk, 32);
        fprintf(f, "\"],\n\"%s_static\": \"", side[s]);
        fprint_hex(f, st[s], 32);
        fprintf(f, "\",\n\"%s_ephemeral\": \"", side[s]);
        fprint_hex(f, eph[s], 32);
        fprintf(f, "\",\n");
    }
    fprintf(f, "\"handshake_hash\": \"");
    fprint_hex(f, h, sizeof h);
    fprintf(f, "\",\n\"messages\": [\n");
    for (int i = 0; i < MURMUR_MSGS; i++) {
        fprintf(f, "{\n\"payload\": \"");
        fprint_hex(f, pl[i], pn[i]);
        fprintf(f, "\",\n\"ciphertext\": \"");
        fprint_hex(f, ct[i], cn[i]);
        fprintf(f, "\"\n}%s\n", i + 1 < MURMUR_MSGS ? "," : "");
    }
    fprintf(f, "]\n}");
    return 0;
}

static int write_vectors(const char *path)
{
    if (sodium_init() < 0 || !aesgcm_available()) {
        fprintf(stderr, "MM_WRITE_VECTORS needs libsodium with AES-GCM available\n");
        return 1;
    }
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        return 1;
    }
    fprintf(f, "{\n\"source\": \"murmur's own Noise_XXpsk0 transcript, written by tests/unit/test_noise.c "
               "(MM_WRITE_VECTORS): a regression check, not an external known answer\",\n\"vectors\": [\n");
    int rc = write_transcript(f, MM_NOISE_CHACHAPOLY);
    fprintf(f, ",\n");
    if (rc == 0) rc = write_transcript(f, MM_NOISE_AESGCM);
    fprintf(f, "\n]\n}\n");
    if (fclose(f) != 0 || rc != 0) {
        fprintf(stderr, "%s: writing the transcript failed\n", path);
        return 1;
    }
    return 0;
}

/* ---- failures ---------------------------------------------------------- */

static const uint8_t PROLOGUE[] = "murmur/1";

/* The two sides of an XX-family handshake with fixed keys and ephemerals. */
static void setup_pair(mm_noise_hs *ini, mm_noise_hs *res, mm_noise_pattern p, mm_noise_cipher c,
                       uint8_t psk_i, uint8_t psk_r)
{
    uint8_t is[32], rs[32], e[32], ki[32], kr[32];
    memset(is, 0x11, 32);
    memset(rs, 0x22, 32);
    memset(ki, psk_i, 32);
    memset(kr, psk_r, 32);
    bool psk = p != MM_NOISE_XX;
    assert_int_equal(mm_noise_init(ini, p, c, true, PROLOGUE, sizeof PROLOGUE - 1, is, psk ? ki : NULL, NULL), 0);
    assert_int_equal(mm_noise_init(res, p, c, false, PROLOGUE, sizeof PROLOGUE - 1, rs, psk ? kr : NULL, NULL), 0);
    memset(e, 0x33, 32);
    mm_noise_set_ephemeral(ini, e);
    memset(e, 0x44, 32);
    mm_noise_set_ephemeral(res, e);
}

static size_t test_payload(int i, uint8_t *p)
{
    size_t n = i == 0 ? 0 : (size_t)(40 + 30 * i);
    for (size_t j = 0; j < n; j++) p[j] = (uint8_t)(i * 31 + j);
    return n;
}

/* Write message i from its sender and read it at the other side; returns
 * the reader's result, the message in msg. */
static int step(mm_noise_hs *ini, mm_noise_hs *res, int i, uint8_t *msg, size_t *mlen)
{
    uint8_t pl[BUF] = {0}, out[BUF];
    size_t plen = test_payload(i, pl), olen = 0;
    mm_noise_hs *w = i % 2 == 0 ? ini : res, *r = i % 2 == 0 ? res : ini;
    assert_int_equal(mm_noise_write(w, pl, plen, msg, BUF, mlen), 0);
    int rc = mm_noise_read(r, msg, *mlen, out, sizeof out, &olen);
    if (rc == 0) {
        assert_int_equal(olen, plen);
        if (plen) assert_memory_equal(out, pl, plen);
    }
    return rc;
}

static int n_ciphers(void)
{
    return aesgcm_available() ? 2 : 1;
}

static mm_noise_cipher cipher_at(int i)
{
    return i == 0 ? MM_NOISE_CHACHAPOLY : MM_NOISE_AESGCM;
}

static void test_full_handshake(void **state)
{
    (void)state;
    for (int c = 0; c < n_ciphers(); c++) {
        for (int p = MM_NOISE_XX; p <= MM_NOISE_XXPSK3; p++) {
            mm_noise_hs ini, res;
            uint8_t msg[BUF];
            size_t mlen;
            setup_pair(&ini, &res, (mm_noise_pattern)p, cipher_at(c), 7, 7);
            assert_null(mm_noise_remote_static(&ini));
            for (int i = 0; i < 3; i++) {
                assert_false(mm_noise_done(&ini));
                assert_int_equal(step(&ini, &res, i, msg, &mlen), 0);
                if (i == 0 && p == MM_NOISE_XXPSK0) assert_int_equal(mlen, 48); /* SECURITY.md 2.3 */
            }
            assert_true(mm_noise_done(&ini) && mm_noise_done(&res));
            uint8_t a[32], b[32], ha[64], c2[32], d[32], hb[64];
            assert_int_equal(mm_noise_split(&ini, a, b, ha), 0);
            assert_int_equal(mm_noise_split(&res, c2, d, hb), 0);
            assert_memory_equal(a, c2, 32);
            assert_memory_equal(b, d, 32);
            assert_memory_equal(ha, hb, 64);
            assert_memory_not_equal(a, b, 32);
            /* The peers' keys stay readable after Split. */
            uint8_t sk[32], pk[32];
            memset(sk, 0x22, 32);
            public_key(sk, pk);
            assert_non_null(mm_noise_remote_static(&ini));
            assert_memory_equal(mm_noise_remote_static(&ini), pk, 32);
            memset(sk, 0x11, 32);
            public_key(sk, pk);
            assert_non_null(mm_noise_remote_static(&res));
            assert_memory_equal(mm_noise_remote_static(&res), pk, 32);
            /* Split once. */
            assert_int_equal(mm_noise_split(&ini, a, b, ha), MM_ERR_STATE);
            mm_noise_wipe(&ini);
            mm_noise_wipe(&res);
            assert_null(mm_noise_remote_static(&ini));
        }
    }
}

/* A responder with another network key rejects msg1 itself, the message
 * that carries no DH at all. */
static void test_psk_mismatch(void **state)
{
    (void)state;
    for (int c = 0; c < n_ciphers(); c++) {
        mm_noise_hs ini, res;
        uint8_t msg[BUF];
        size_t mlen;
        setup_pair(&ini, &res, MM_NOISE_XXPSK0, cipher_at(c), 1, 2);
        assert_int_equal(step(&ini, &res, 0, msg, &mlen), MM_ERR_AUTH);
        assert_int_equal(mlen, 48);
        assert_false(mm_noise_done(&res));
        /* Poisoned: the responder writes nothing. */
        uint8_t out[BUF];
        size_t olen = 0;
        assert_int_equal(mm_noise_write(&res, NULL, 0, out, sizeof out, &olen), MM_ERR_STATE);
        assert_int_equal(olen, 0);
    }
}

/* Flipping one bit anywhere in msg1, msg2 or msg3 (and cutting or extending
 * the message by a byte) makes the reader fail, never succeed. */
static void test_tamper(void **state)
{
    (void)state;
    for (int c = 0; c < n_ciphers(); c++) {
        for (int k = 0; k < 3; k++) {
            mm_noise_hs ini, res;
            uint8_t msg[BUF], pl[BUF], bad[BUF + 1], out[BUF];
            size_t mlen = 0, olen;
            setup_pair(&ini, &res, MM_NOISE_XXPSK0, cipher_at(c), 9, 9);
            for (int i = 0; i < k; i++) assert_int_equal(step(&ini, &res, i, msg, &mlen), 0);
            mm_noise_hs *w = k % 2 == 0 ? &ini : &res, *r = k % 2 == 0 ? &res : &ini;
            size_t plen = test_payload(k, pl);
            assert_int_equal(mm_noise_write(w, pl, plen, msg, sizeof msg, &mlen), 0);
            const mm_noise_hs saved = *r;
            for (size_t b = 0; b < mlen; b++) {
                memcpy(bad, msg, mlen);
                bad[b] ^= (uint8_t)(1u << (b % 8));
                mm_noise_hs t = saved;
                assert_int_equal(mm_noise_read(&t, bad, mlen, out, sizeof out, &olen), MM_ERR_AUTH);
                assert_false(mm_noise_done(&t));
                assert_int_equal(mm_noise_read(&t, msg, mlen, out, sizeof out, &olen), MM_ERR_STATE);
            }
            mm_noise_hs t = saved;
            assert_true(mm_noise_read(&t, msg, mlen - 1, out, sizeof out, &olen) < 0);
            memcpy(bad, msg, mlen);
            bad[mlen] = 0;
            t = saved;
            assert_true(mm_noise_read(&t, bad, mlen + 1, out, sizeof out, &olen) < 0);
            /* The untouched message still reads. */
            t = saved;
            assert_int_equal(mm_noise_read(&t, msg, mlen, out, sizeof out, &olen), 0);
            assert_int_equal(olen, plen);
        }
    }
}

/* All zeros, and a point of order 8. */
static void low_order_points(uint8_t pts[2][32])
{
    memset(pts[0], 0, 32);
    assert_int_equal(unhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800", pts[1], 32), 32);
}

static void test_low_order(void **state)
{
    (void)state;
    uint8_t pts[2][32];
    low_order_points(pts);
    for (int c = 0; c < n_ciphers(); c++) {
        for (int p = MM_NOISE_XX; p <= MM_NOISE_XXPSK0; p++) {
            for (int k = 0; k < 2; k++) {
                mm_noise_hs ini, res;
                uint8_t msg[BUF], out[BUF];
                size_t mlen, olen;

                /* The responder's e in msg2: the initiator fails at ee. */
                setup_pair(&ini, &res, (mm_noise_pattern)p, cipher_at(c), 3, 3);
                assert_int_equal(step(&ini, &res, 0, msg, &mlen), 0);
                assert_int_equal(mm_noise_write(&res, NULL, 0, msg, sizeof msg, &mlen), 0);
                memcpy(msg, pts[k], 32);
                assert_int_equal(mm_noise_read(&ini, msg, mlen, out, sizeof out, &olen), MM_ERR_AUTH);
                assert_int_equal(mm_noise_write(&ini, NULL, 0, msg, sizeof msg, &mlen), MM_ERR_STATE);

                /* The initiator's e in msg1 (with a valid psk tag): the
                 * responder fails at ee, before sending anything. */
                setup_pair(&ini, &res, (mm_noise_pattern)p, cipher_at(c), 3, 3);
                memcpy(ini.e_pk, pts[k], 32);
                assert_int_equal(step(&ini, &res, 0, msg, &mlen), 0);
                assert_memory_equal(msg, pts[k], 32);
                mlen = 0;
                assert_int_equal(mm_noise_write(&res, NULL, 0, msg, sizeof msg, &mlen), MM_ERR_AUTH);
                assert_int_equal(mlen, 0);
                assert_false(mm_noise_done(&res));
            }
        }
        /* IKpsk2: a low-order e fails the responder's es while reading msg1;
         * a low-order responder key fails the initiator's es. */
        for (int k = 0; k < 2; k++) {
            uint8_t is[32], rsk[32], rpk[32], psk[32], e[32], msg[BUF], out[BUF];
            size_t mlen, olen;
            memset(is, 0x11, 32);
            memset(rsk, 0x22, 32);
            memset(psk, 0x55, 32);
            memset(e, 0x33, 32);
            public_key(rsk, rpk);
            mm_noise_hs ini, res;
            assert_int_equal(mm_noise_init(&ini, MM_NOISE_IKPSK2, cipher_at(c), true, NULL, 0, is, psk, rpk), 0);
            assert_int_equal(mm_noise_init(&res, MM_NOISE_IKPSK2, cipher_at(c), false, NULL, 0, rsk, psk, NULL), 0);
            mm_noise_set_ephemeral(&ini, e);
            memcpy(ini.e_pk, pts[k], 32);
            assert_int_equal(mm_noise_write(&ini, NULL, 0, msg, sizeof msg, &mlen), 0);
            assert_int_equal(mm_noise_read(&res, msg, mlen, out, sizeof out, &olen), MM_ERR_AUTH);

            assert_int_equal(mm_noise_init(&ini, MM_NOISE_IKPSK2, cipher_at(c), true, NULL, 0, is, psk, pts[k]), 0);
            mm_noise_set_ephemeral(&ini, e);
            assert_int_equal(mm_noise_write(&ini, NULL, 0, msg, sizeof msg, &mlen), MM_ERR_AUTH);
        }
    }
}

static void test_out_of_turn(void **state)
{
    (void)state;
    mm_noise_hs ini, res;
    uint8_t msg[BUF], out[BUF], k1[32], k2[32], h[64];
    size_t mlen, olen;

    /* The initiator cannot start by reading, nor the responder by writing. */
    setup_pair(&ini, &res, MM_NOISE_XXPSK0, MM_NOISE_CHACHAPOLY, 1, 1);
    memset(msg, 0, 48);
    assert_int_equal(mm_noise_read(&ini, msg, 48, out, sizeof out, &olen), MM_ERR_STATE);
    assert_int_equal(mm_noise_write(&ini, NULL, 0, msg, sizeof msg, &mlen), MM_ERR_STATE); /* poisoned */
    assert_int_equal(mm_noise_write(&res, NULL, 0, msg, sizeof msg, &mlen), MM_ERR_STATE);
    assert_int_equal(mm_noise_read(&res, msg, 48, out, sizeof out, &olen), MM_ERR_STATE);

    /* Writing twice in a row. */
    setup_pair(&ini, &res, MM_NOISE_XXPSK0, MM_NOISE_CHACHAPOLY, 1, 1);
    assert_int_equal(mm_noise_write(&ini, NULL, 0, msg, sizeof msg, &mlen), 0);
    assert_int_equal(mm_noise_write(&ini, NULL, 0, msg, sizeof msg, &mlen), MM_ERR_STATE);

    /* Split before done, then anything after done. */
    setup_pair(&ini, &res, MM_NOISE_XXPSK0, MM_NOISE_CHACHAPOLY, 1, 1);
    assert_int_equal(mm_noise_split(&res, k1, k2, h), MM_ERR_STATE);
    setup_pair(&ini, &res, MM_NOISE_XXPSK0, MM_NOISE_CHACHAPOLY, 1, 1);
    assert_int_equal(step(&ini, &res, 0, msg, &mlen), 0);
    assert_int_equal(step(&ini, &res, 1, msg, &mlen), 0);
    assert_int_equal(mm_noise_split(&ini, k1, k2, h), MM_ERR_STATE);
    assert_int_equal(mm_noise_split(&res, k1, k2, h), MM_ERR_STATE);
    assert_false(mm_noise_done(&ini));

    setup_pair(&ini, &res, MM_NOISE_XX, MM_NOISE_CHACHAPOLY, 0, 0);
    for (int i = 0; i < 3; i++) assert_int_equal(step(&ini, &res, i, msg, &mlen), 0);
    assert_int_equal(mm_noise_write(&res, NULL, 0, msg, sizeof msg, &mlen), MM_ERR_STATE);
    assert_int_equal(mm_noise_read(&ini, msg, mlen, out, sizeof out, &olen), MM_ERR_STATE);

    /* No ephemeral set: the first "e" cannot be written. */
    uint8_t s[32];
    memset(s, 0x11, 32);
    assert_int_equal(mm_noise_init(&ini, MM_NOISE_XX, MM_NOISE_CHACHAPOLY, true, NULL, 0, s, NULL, NULL), 0);
    assert_int_equal(mm_noise_write(&ini, NULL, 0, msg, sizeof msg, &mlen), MM_ERR_STATE);

    /* Changing e after sending it poisons the handshake. */
    setup_pair(&ini, &res, MM_NOISE_XX, MM_NOISE_CHACHAPOLY, 0, 0);
    assert_int_equal(step(&ini, &res, 0, msg, &mlen), 0);
    mm_noise_set_ephemeral(&ini, s);
    assert_int_equal(mm_noise_read(&ini, msg, mlen, out, sizeof out, &olen), MM_ERR_STATE);

    /* A wiped state is not a fresh one. */
    mm_noise_wipe(&res);
    assert_int_equal(mm_noise_read(&res, msg, 48, out, sizeof out, &olen), MM_ERR_STATE);
}

static void test_init_args(void **state)
{
    (void)state;
    mm_noise_hs hs;
    uint8_t s[32], k[32];
    memset(s, 0x11, 32);
    memset(k, 0x66, 32);
    const mm_noise_cipher cc = MM_NOISE_CHACHAPOLY;
    assert_int_equal(mm_noise_init(&hs, MM_NOISE_XXPSK0, cc, true, NULL, 0, s, NULL, NULL), MM_ERR_INVALID);
    assert_int_equal(mm_noise_init(&hs, MM_NOISE_XX, cc, true, NULL, 0, s, k, NULL), MM_ERR_INVALID);
    assert_int_equal(mm_noise_init(&hs, MM_NOISE_IKPSK2, cc, true, NULL, 0, s, k, NULL), MM_ERR_INVALID);
    assert_int_equal(mm_noise_init(&hs, MM_NOISE_IKPSK2, cc, false, NULL, 0, s, k, k), MM_ERR_INVALID);
    assert_int_equal(mm_noise_init(&hs, MM_NOISE_XX, cc, true, NULL, 0, s, NULL, k), MM_ERR_INVALID);
    assert_int_equal(mm_noise_init(&hs, MM_NOISE_XX, cc, true, NULL, 0, NULL, NULL, NULL), MM_ERR_INVALID);
    assert_int_equal(mm_noise_init(&hs, MM_NOISE_XX, cc, true, NULL, 4, s, NULL, NULL), MM_ERR_INVALID);
    assert_int_equal(mm_noise_init(&hs, (mm_noise_pattern)9, cc, true, NULL, 0, s, NULL, NULL), MM_ERR_INVALID);
    assert_int_equal(mm_noise_init(&hs, MM_NOISE_XX, (mm_noise_cipher)9, true, NULL, 0, s, NULL, NULL),
                     MM_ERR_INVALID);
    assert_int_equal(mm_noise_init(NULL, MM_NOISE_XX, cc, true, NULL, 0, s, NULL, NULL), MM_ERR_INVALID);
    /* A failed init leaves a poisoned state. */
    uint8_t msg[BUF];
    size_t mlen;
    assert_int_equal(mm_noise_write(&hs, NULL, 0, msg, sizeof msg, &mlen), MM_ERR_STATE);
}

static void test_lengths(void **state)
{
    (void)state;
    mm_noise_hs ini, res;
    static uint8_t big[MM_NOISE_MAX_MSG + 1], pl[MM_NOISE_MAX_MSG], m[MM_NOISE_MAX_MSG], o[MM_NOISE_MAX_MSG];
    uint8_t msg[BUF], out[BUF];
    size_t mlen, olen;

    /* Output capacity one short of msg1. */
    setup_pair(&ini, &res, MM_NOISE_XXPSK0, MM_NOISE_CHACHAPOLY, 1, 1);
    assert_int_equal(mm_noise_write(&ini, NULL, 0, msg, 47, &mlen), MM_ERR_LIMIT);
    /* A payload that cannot fit in a Noise message. */
    setup_pair(&ini, &res, MM_NOISE_XXPSK0, MM_NOISE_CHACHAPOLY, 1, 1);
    memset(big, 0, sizeof big);
    assert_int_equal(mm_noise_write(&ini, big, MM_NOISE_MAX_MSG - 48 + 1, m, sizeof m, &mlen), MM_ERR_LIMIT);
    /* The largest that does. */
    setup_pair(&ini, &res, MM_NOISE_XXPSK0, MM_NOISE_CHACHAPOLY, 1, 1);
    memset(pl, 0xab, sizeof pl);
    assert_int_equal(mm_noise_write(&ini, pl, MM_NOISE_MAX_MSG - 48, m, sizeof m, &mlen), 0);
    assert_int_equal(mlen, MM_NOISE_MAX_MSG);
    /* ... which the reader refuses to put into too small a buffer. */
    mm_noise_hs t = res;
    assert_int_equal(mm_noise_read(&t, m, mlen, o, mlen - 49, &olen), MM_ERR_LIMIT);
    assert_int_equal(mm_noise_read(&res, m, mlen, o, mlen - 48, &olen), 0);
    assert_int_equal(olen, MM_NOISE_MAX_MSG - 48);
    assert_memory_equal(o, pl, olen);

    /* Too short, too long. */
    setup_pair(&ini, &res, MM_NOISE_XXPSK0, MM_NOISE_CHACHAPOLY, 1, 1);
    assert_int_equal(mm_noise_write(&ini, NULL, 0, msg, sizeof msg, &mlen), 0);
    t = res;
    assert_int_equal(mm_noise_read(&t, msg, 47, out, sizeof out, &olen), MM_ERR_FORMAT);
    t = res;
    assert_int_equal(mm_noise_read(&t, big, sizeof big, out, sizeof out, &olen), MM_ERR_FORMAT);
    t = res;
    assert_int_equal(mm_noise_read(&t, msg, 0, out, sizeof out, &olen), MM_ERR_FORMAT);
}

static void test_transport(void **state)
{
    (void)state;
    for (int c = 0; c < n_ciphers(); c++) {
        mm_noise_hs ini, res;
        uint8_t msg[BUF], out[BUF], k1[32], k2[32], h[64];
        size_t mlen;
        setup_pair(&ini, &res, MM_NOISE_XXPSK0, cipher_at(c), 4, 4);
        for (int i = 0; i < 3; i++) assert_int_equal(step(&ini, &res, i, msg, &mlen), 0);
        assert_int_equal(mm_noise_split(&ini, k1, k2, h), 0);
        mm_noise_cs tx, rx;
        mm_noise_cs_init(&tx, cipher_at(c), k1);
        mm_noise_cs_init(&rx, cipher_at(c), k1);
        const uint8_t text[] = "a gossip record";
        uint8_t ct[BUF], ct2[BUF];
        assert_int_equal(mm_noise_cs_encrypt(&tx, text, sizeof text, ct), 0);
        assert_int_equal(mm_noise_cs_encrypt(&tx, text, sizeof text, ct2), 0);
        assert_memory_not_equal(ct, ct2, sizeof text + 16); /* the nonce moved */
        assert_int_equal(tx.n, 2);
        assert_int_equal(mm_noise_cs_decrypt(&rx, ct, sizeof text + 16, out), 0);
        assert_memory_equal(out, text, sizeof text);
        /* Replay of the first message: the nonce has moved on. */
        assert_int_equal(mm_noise_cs_decrypt(&rx, ct, sizeof text + 16, out), MM_ERR_AUTH);
        assert_int_equal(rx.n, 1);
        ct2[3] ^= 1;
        assert_int_equal(mm_noise_cs_decrypt(&rx, ct2, sizeof text + 16, out), MM_ERR_AUTH);
        ct2[3] ^= 1;
        assert_int_equal(mm_noise_cs_decrypt(&rx, ct2, 15, out), MM_ERR_FORMAT);
        assert_int_equal(mm_noise_cs_decrypt(&rx, ct2, sizeof text + 16, out), 0);
        /* An empty message is a bare tag. */
        assert_int_equal(mm_noise_cs_encrypt(&tx, NULL, 0, ct), 0);
        assert_int_equal(mm_noise_cs_decrypt(&rx, ct, 16, NULL), 0);
        /* A CipherState without a key never sends in clear. */
        mm_noise_cs none;
        memset(&none, 0, sizeof none);
        assert_int_equal(mm_noise_cs_encrypt(&none, text, sizeof text, ct), MM_ERR_STATE);
        assert_int_equal(mm_noise_cs_decrypt(&none, ct, 16, out), MM_ERR_STATE);
    }
}

int main(void)
{
    if (sodium_init() < 0) return 1;
    const char *w = getenv("MM_WRITE_VECTORS");
    if (w && *w) return write_vectors(w);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cacophony_chachapoly),
        cmocka_unit_test(test_cacophony_aesgcm),
        cmocka_unit_test(test_murmur_transcript),
        cmocka_unit_test(test_full_handshake),
        cmocka_unit_test(test_psk_mismatch),
        cmocka_unit_test(test_tamper),
        cmocka_unit_test(test_low_order),
        cmocka_unit_test(test_out_of_turn),
        cmocka_unit_test(test_init_args),
        cmocka_unit_test(test_lengths),
        cmocka_unit_test(test_transport),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
