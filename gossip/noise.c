/* The Noise protocol framework (revision 34), sections 5, 9 and 12: the
 * CipherState, SymmetricState and HandshakeState objects for DH 25519,
 * hash SHA-512 and cipher ChaChaPoly or AESGCM, over libsodium.
 *
 * Every failure poisons the handshake (hs->failed); every later call but
 * mm_noise_wipe then returns MM_ERR_STATE. Lengths are checked before any
 * state changes, so a short or long message fails with MM_ERR_FORMAT and an
 * output that would not fit fails with MM_ERR_LIMIT. */
#include "noise.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "mm_error.h"

#define NONCELEN 12

/* Handshake tokens. */
enum { TOK_E, TOK_S, TOK_EE, TOK_ES, TOK_SE, TOK_SS, TOK_PSK, TOK_END };

#define MAX_MSGS 3
#define MAX_TOKENS 5

typedef struct {
    const char *name;
    bool psk;              /* a psk handshake: "e" also calls MixKey */
    bool pre_resp_static;  /* pre-message "<- s" */
    int nmsgs;             /* message i is written by the initiator iff i is even */
    unsigned char tok[MAX_MSGS][MAX_TOKENS];
} pattern_def;

static const pattern_def PATTERNS[] = {
    [MM_NOISE_XX] = {"XX",
                     false,
                     false,
                     3,
                     {{TOK_E, TOK_END}, {TOK_E, TOK_EE, TOK_S, TOK_ES, TOK_END}, {TOK_S, TOK_SE, TOK_END}}},
    [MM_NOISE_XXPSK0] = {"XXpsk0",
                         true,
                         false,
                         3,
                         {{TOK_PSK, TOK_E, TOK_END}, {TOK_E, TOK_EE, TOK_S, TOK_ES, TOK_END}, {TOK_S, TOK_SE, TOK_END}}},
    [MM_NOISE_XXPSK3] = {"XXpsk3",
                         true,
                         false,
                         3,
                         {{TOK_E, TOK_END}, {TOK_E, TOK_EE, TOK_S, TOK_ES, TOK_END}, {TOK_S, TOK_SE, TOK_PSK, TOK_END}}},
    [MM_NOISE_IKPSK2] = {"IKpsk2",
                         true,
                         true,
                         2,
                         {{TOK_E, TOK_ES, TOK_S, TOK_SS, TOK_END}, {TOK_E, TOK_EE, TOK_SE, TOK_PSK, TOK_END}}},
};

static bool valid_pattern(int p)
{
    return p >= (int)MM_NOISE_XX && p <= (int)MM_NOISE_IKPSK2;
}

static bool valid_cipher(int c)
{
    return c == (int)MM_NOISE_CHACHAPOLY || c == (int)MM_NOISE_AESGCM;
}

/* ---- CipherState (section 5.1) ---------------------------------------- */

static void make_nonce(mm_noise_cipher cipher, uint64_t n, uint8_t nonce[NONCELEN])
{
    memset(nonce, 0, NONCELEN);
    for (int i = 0; i < 8; i++) {
        uint8_t byte = (uint8_t)(n >> (8 * i));
        if (cipher == MM_NOISE_CHACHAPOLY)
            nonce[4 + i] = byte; /* little-endian */
        else
            nonce[NONCELEN - 1 - i] = byte; /* big-endian */
    }
}

/* ENCRYPT(k, n, ad, plaintext) then n += 1; out gets len + TAGLEN bytes. */
static int cs_encrypt_ad(mm_noise_cs *cs, const uint8_t *ad, size_t adlen, const uint8_t *pt, size_t len,
                         uint8_t *out)
{
    static const uint8_t empty[1];
    if (!pt) pt = empty; /* len == 0 */
    if (!cs->has_k) {
        if (len > 0) memmove(out, pt, len);
        return 0;
    }
    if (cs->n == UINT64_MAX) return MM_ERR_LIMIT; /* 2^64-1 is reserved */
    uint8_t nonce[NONCELEN];
    make_nonce(cs->cipher, cs->n, nonce);
    unsigned long long clen = 0;
    int rc;
    if (cs->cipher == MM_NOISE_CHACHAPOLY) {
        rc = crypto_aead_chacha20poly1305_ietf_encrypt(out, &clen, pt, len, ad, adlen, NULL, nonce, cs->k);
    } else {
        if (!crypto_aead_aes256gcm_is_available()) return MM_ERR_INVALID;
        rc = crypto_aead_aes256gcm_encrypt(out, &clen, pt, len, ad, adlen, NULL, nonce, cs->k);
    }
    if (rc != 0 || clen != (unsigned long long)len + MM_NOISE_TAGLEN) return MM_ERR_INVALID;
    cs->n++;
    return 0;
}

/* DECRYPT(k, n, ad, ciphertext) then n += 1; out gets len - TAGLEN bytes.
 * On a bad tag n is left as it was and out is zeroed. */
static int cs_decrypt_ad(mm_noise_cs *cs, const uint8_t *ad, size_t adlen, const uint8_t *ct, size_t len,
                         uint8_t *out)
{
    if (!cs->has_k) {
        if (len > 0) memmove(out, ct, len);
        return 0;
    }
    if (len < MM_NOISE_TAGLEN) return MM_ERR_FORMAT;
    if (cs->n == UINT64_MAX) return MM_ERR_LIMIT;
    uint8_t nonce[NONCELEN];
    make_nonce(cs->cipher, cs->n, nonce);
    unsigned long long mlen = 0;
    int rc;
    if (cs->cipher == MM_NOISE_CHACHAPOLY) {
        rc = crypto_aead_chacha20poly1305_ietf_decrypt(out, &mlen, NULL, ct, len, ad, adlen, nonce, cs->k);
    } else {
        if (!crypto_aead_aes256gcm_is_available()) return MM_ERR_INVALID;
        rc = crypto_aead_aes256gcm_decrypt(out, &mlen, NULL, ct, len, ad, adlen, nonce, cs->k);
    }
    if (rc != 0) {
        if (len > MM_NOISE_TAGLEN) sodium_memzero(out, len - MM_NOISE_TAGLEN);
        return MM_ERR_AUTH;
    }
    cs->n++;
    return 0;
}

void mm_noise_cs_init(mm_noise_cs *cs, mm_noise_cipher cipher, const uint8_t k[32])
{
    if (!cs) return;
    sodium_memzero(cs, sizeof *cs); /* no key: encrypt and decrypt refuse */
    if (!k || !valid_cipher((int)cipher)) return;
    if (sodium_init() < 0) return; /* idempotent; AES-GCM's CPU check needs it */
    memcpy(cs->k, k, MM_NOISE_KEYLEN);
    cs->n = 0;
    cs->has_k = true;
    cs->cipher = cipher;
}

int mm_noise_cs_encrypt(mm_noise_cs *cs, const uint8_t *pt, size_t len, uint8_t *out)
{
    if (!cs || !out || (len > 0 && !pt) || !valid_cipher((int)cs->cipher)) return MM_ERR_INVALID;
    if (!cs->has_k) return MM_ERR_STATE; /* transport never sends in clear */
    if (len > MM_NOISE_MAX_MSG - MM_NOISE_TAGLEN) return MM_ERR_LIMIT;
    return cs_encrypt_ad(cs, NULL, 0, pt, len, out);
}

int mm_noise_cs_decrypt(mm_noise_cs *cs, const uint8_t *ct, size_t len, uint8_t *out)
{
    if (!cs || !ct || !valid_cipher((int)cs->cipher)) return MM_ERR_INVALID;
    if (!cs->has_k) return MM_ERR_STATE;
    if (len > MM_NOISE_MAX_MSG || len < MM_NOISE_TAGLEN) return MM_ERR_FORMAT;
    if (!out && len > MM_NOISE_TAGLEN) return MM_ERR_INVALID;
    uint8_t dummy[1];
    return cs_decrypt_ad(cs, NULL, 0, ct, len, out ? out : dummy);
}

/* ---- SymmetricState (section 5.2) ------------------------------------- */

static void hmac_sha512(const uint8_t *key, size_t keylen, const uint8_t *d1, size_t l1, const uint8_t *d2,
                        size_t l2, uint8_t out[MM_NOISE_HASHLEN])
{
    crypto_auth_hmacsha512_state st;
    crypto_auth_hmacsha512_init(&st, key, keylen);
    if (l1) crypto_auth_hmacsha512_update(&st, d1, l1);
    if (l2) crypto_auth_hmacsha512_update(&st, d2, l2);
    crypto_auth_hmacsha512_final(&st, out);
    sodium_memzero(&st, sizeof st);
}

/* HKDF(chaining_key, input_key_material, num_outputs) of section 4.3. */
static void hkdf(const uint8_t ck[MM_NOISE_HASHLEN], const uint8_t *ikm, size_t ikmlen, uint8_t *o1, uint8_t *o2,
                 uint8_t *o3)
{
    uint8_t temp[MM_NOISE_HASHLEN], prev[MM_NOISE_HASHLEN];
    const uint8_t one = 1, two = 2, three = 3;
    hmac_sha512(ck, MM_NOISE_HASHLEN, ikm, ikmlen, NULL, 0, temp);
    hmac_sha512(temp, sizeof temp, &one, 1, NULL, 0, prev);
    memcpy(o1, prev, MM_NOISE_HASHLEN);
    hmac_sha512(temp, sizeof temp, prev, sizeof prev, &two, 1, prev);
    memcpy(o2, prev, MM_NOISE_HASHLEN);
    if (o3) {
        hmac_sha512(temp, sizeof temp, prev, sizeof prev, &three, 1, prev);
        memcpy(o3, prev, MM_NOISE_HASHLEN);
    }
    sodium_memzero(temp, sizeof temp);
    sodium_memzero(prev, sizeof prev);
}

static void mix_hash(mm_noise_hs *hs, const uint8_t *data, size_t len)
{
    crypto_hash_sha512_state st;
    crypto_hash_sha512_init(&st);
    crypto_hash_sha512_update(&st, hs->h, MM_NOISE_HASHLEN);
    if (len) crypto_hash_sha512_update(&st, data, len);
    crypto_hash_sha512_final(&st, hs->h);
    sodium_memzero(&st, sizeof st);
}

static void init_key(mm_noise_cs *cs, const uint8_t temp_k[MM_NOISE_HASHLEN])
{
    memcpy(cs->k, temp_k, MM_NOISE_KEYLEN); /* truncated to 32 bytes */
    cs->n = 0;
    cs->has_k = true;
}

static void mix_key(mm_noise_hs *hs, const uint8_t *ikm, size_t len)
{
    uint8_t ck[MM_NOISE_HASHLEN], temp_k[MM_NOISE_HASHLEN];
    hkdf(hs->ck, ikm, len, ck, temp_k, NULL);
    memcpy(hs->ck, ck, sizeof ck);
    init_key(&hs->cs, temp_k);
    sodium_memzero(ck, sizeof ck);
    sodium_memzero(temp_k, sizeof temp_k);
}

static void mix_key_and_hash(mm_noise_hs *hs, const uint8_t *ikm, size_t len)
{
    uint8_t ck[MM_NOISE_HASHLEN], temp_h[MM_NOISE_HASHLEN], temp_k[MM_NOISE_HASHLEN];
    hkdf(hs->ck, ikm, len, ck, temp_h, temp_k);
    memcpy(hs->ck, ck, sizeof ck);
    mix_hash(hs, temp_h, sizeof temp_h);
    init_key(&hs->cs, temp_k);
    sodium_memzero(ck, sizeof ck);
    sodium_memzero(temp_h, sizeof temp_h);
    sodium_memzero(temp_k, sizeof temp_k);
}

/* EncryptAndHash: out gets len (+ TAGLEN once a key exists) bytes. */
static int encrypt_and_hash(mm_noise_hs *hs, const uint8_t *pt, size_t len, uint8_t *out, size_t *outlen)
{
    int rc = cs_encrypt_ad(&hs->cs, hs->h, MM_NOISE_HASHLEN, pt, len, out);
    if (rc != 0) return rc;
    *outlen = len + (hs->cs.has_k ? MM_NOISE_TAGLEN : 0);
    mix_hash(hs, out, *outlen);
    return 0;
}

/* DecryptAndHash: out gets len (- TAGLEN once a key exists) bytes. */
static int decrypt_and_hash(mm_noise_hs *hs, const uint8_t *ct, size_t len, uint8_t *out)
{
    int rc = cs_decrypt_ad(&hs->cs, hs->h, MM_NOISE_HASHLEN, ct, len, out);
    if (rc != 0) return rc;
    mix_hash(hs, ct, len);
    return 0;
}

/* ---- HandshakeState (section 5.3) ------------------------------------- */

static int dh(const uint8_t sk[32], const uint8_t pk[32], uint8_t out[32])
{
    /* -1 when the result is all zeros, i.e. pk has small order. */
    if (crypto_scalarmult_curve25519(out, sk, pk) != 0) {
        sodium_memzero(out, 32);
        return MM_ERR_AUTH;
    }
    return 0;
}

static int fail(mm_noise_hs *hs, int rc)
{
    hs->failed = true;
    return rc;
}

static bool our_turn(const mm_noise_hs *hs, bool writing)
{
    bool initiator_writes = (hs->msg % 2) == 0;
    return writing ? initiator_writes == hs->initiator : initiator_writes != hs->initiator;
}

static bool ready(const mm_noise_hs *hs)
{
    return !hs->failed && valid_pattern((int)hs->pattern) && hs->msg >= 0 && hs->msg < PATTERNS[hs->pattern].nmsgs;
}

/* The length of message hs->msg without its payload, and whether the
 * payload will be encrypted (cs has a key by then). */
static size_t fixed_len(const mm_noise_hs *hs, bool *payload_keyed)
{
    const pattern_def *p = &PATTERNS[hs->pattern];
    bool has_k = hs->cs.has_k;
    size_t n = 0;
    for (const unsigned char *t = p->tok[hs->msg]; *t != TOK_END; t++) {
        switch (*t) {
        case TOK_E:
            n += MM_NOISE_DHLEN;
            if (p->psk) has_k = true;
            break;
        case TOK_S: n += MM_NOISE_DHLEN + (has_k ? MM_NOISE_TAGLEN : 0); break;
        default: has_k = true; break; /* ee, es, se, ss, psk all MixKey */
        }
    }
    *payload_keyed = has_k;
    return n;
}

/* The DH of a token (ee, es, se or ss) from our side: the first letter
 * names the initiator's key, the second the responder's. */
static int token_dh(mm_noise_hs *hs, int tok)
{
    bool init_e = tok == TOK_EE || tok == TOK_ES; /* initiator's key is its e */
    bool resp_e = tok == TOK_EE || tok == TOK_SE; /* responder's key is its e */
    bool local_e = hs->initiator ? init_e : resp_e;
    bool remote_e = hs->initiator ? resp_e : init_e;
    const uint8_t *sk = local_e ? hs->e_sk : hs->s_sk;
    const uint8_t *pk = remote_e ? hs->re : hs->rs;
    bool have = (local_e ? hs->has_e : hs->has_s) && (remote_e ? hs->has_re : hs->has_rs);
    if (!have) return MM_ERR_STATE;
    uint8_t shared[32];
    int rc = dh(sk, pk, shared);
    if (rc == 0) mix_key(hs, shared, sizeof shared);
    sodium_memzero(shared, sizeof shared);
    return rc;
}

int mm_noise_init(mm_noise_hs *hs, mm_noise_pattern pattern, mm_noise_cipher cipher, bool initiator,
                  const uint8_t *prologue, size_t prologue_len, const uint8_t s_sk[32], const uint8_t *psk,
                  const uint8_t *rs)
{
    return mm_noise_init_static(hs, pattern, cipher, initiator, prologue, prologue_len, s_sk, NULL, psk, rs);
}

int mm_noise_init_static(mm_noise_hs *hs, mm_noise_pattern pattern, mm_noise_cipher cipher, bool initiator,
                         const uint8_t *prologue, size_t prologue_len, const uint8_t s_sk[32], const uint8_t *s_pk,
                         const uint8_t *psk, const uint8_t *rs)
{
    if (!hs) return MM_ERR_INVALID;
    sodium_memzero(hs, sizeof *hs);
    hs->failed = true; /* until initialised */
    if (!valid_pattern((int)pattern) || !valid_cipher((int)cipher)) return MM_ERR_INVALID;
    const pattern_def *p = &PATTERNS[pattern];
    if (!s_sk || (prologue_len > 0 && !prologue)) return MM_ERR_INVALID;
    if (p->psk != (psk != NULL)) return MM_ERR_INVALID;
    if ((p->pre_resp_static && initiator) != (rs != NULL)) return MM_ERR_INVALID;
    if (sodium_init() < 0) return MM_ERR_INVALID;
    if (cipher == MM_NOISE_AESGCM && !crypto_aead_aes256gcm_is_available()) return MM_ERR_INVALID;

    hs->pattern = pattern;
    hs->initiator = initiator;
    hs->msg = 0;
    hs->cs.cipher = cipher;
    hs->cs.has_k = false;
    memcpy(hs->s_sk, s_sk, 32);
    if (s_pk) /* the caller's, computed once for many handshakes */
        memcpy(hs->s_pk, s_pk, 32);
    else if (crypto_scalarmult_curve25519_base(hs->s_pk, hs->s_sk) != 0) {
        mm_noise_wipe(hs);
        return MM_ERR_INVALID;
    }
    hs->has_s = true;
    if (psk) {
        memcpy(hs->psk, psk, 32);
        hs->has_psk = true;
    }
    if (rs) {
        memcpy(hs->rs, rs, 32);
        hs->has_rs = true;
    }

    /* InitializeSymmetric(protocol_name) */
    char name[64];
    size_t nlen = (size_t)snprintf(name, sizeof name, "Noise_%s_25519_%s_SHA512", p->name,
                                   cipher == MM_NOISE_CHACHAPOLY ? "ChaChaPoly" : "AESGCM");
    if (nlen <= MM_NOISE_HASHLEN) {
        memset(hs->h, 0, MM_NOISE_HASHLEN);
        memcpy(hs->h, name, nlen);
    } else {
        crypto_hash_sha512(hs->h, (const unsigned char *)name, nlen);
    }
    memcpy(hs->ck, hs->h, MM_NOISE_HASHLEN);
    mix_hash(hs, prologue, prologue_len);
    if (p->pre_resp_static) mix_hash(hs, initiator ? hs->rs : hs->s_pk, 32);
    hs->failed = false;
    return 0;
}

/* Our e was sent in our first message: message 0 for the initiator,
 * message 1 for the responder in every pattern here. */
static bool e_sent(const mm_noise_hs *hs)
{
    return hs->initiator ? hs->msg >= 1 : hs->msg >= 2;
}

void mm_noise_set_ephemeral(mm_noise_hs *hs, const uint8_t e_sk[32])
{
    if (!hs || hs->failed) return;
    if (!e_sk || e_sent(hs)) { /* misuse: changing e mid-handshake */
        hs->failed = true;
        return;
    }
    memcpy(hs->e_sk, e_sk, 32);
    hs->has_e = crypto_scalarmult_curve25519_base(hs->e_pk, hs->e_sk) == 0;
    if (!hs->has_e) hs->failed = true;
}

int mm_noise_write(mm_noise_hs *hs, const uint8_t *payload, size_t plen, uint8_t *out, size_t cap, size_t *outlen)
{
    if (!hs) return MM_ERR_INVALID;
    if (!ready(hs) || !our_turn(hs, true)) return fail(hs, MM_ERR_STATE);
    if ((plen > 0 && !payload) || !out || !outlen) return fail(hs, MM_ERR_INVALID);
    bool keyed;
    size_t fixed = fixed_len(hs, &keyed);
    size_t tag = keyed ? MM_NOISE_TAGLEN : 0;
    if (plen > MM_NOISE_MAX_MSG || fixed + plen + tag > MM_NOISE_MAX_MSG) return fail(hs, MM_ERR_LIMIT);
    if (fixed + plen + tag > cap) return fail(hs, MM_ERR_LIMIT);

    const pattern_def *p = &PATTERNS[hs->pattern];
    size_t off = 0, n = 0;
    int rc = 0;
    for (const unsigned char *t = p->tok[hs->msg]; *t != TOK_END && rc == 0; t++) {
        switch (*t) {
        case TOK_E:
            if (!hs->has_e) {
                rc = MM_ERR_STATE; /* mm_noise_set_ephemeral was not called */
                break;
            }
            memcpy(out + off, hs->e_pk, 32);
            off += 32;
            mix_hash(hs, hs->e_pk, 32);
            if (p->psk) mix_key(hs, hs->e_pk, 32);
            break;
        case TOK_S:
            rc = encrypt_and_hash(hs, hs->s_pk, 32, out + off, &n);
            off += n;
            break;
        case TOK_PSK: mix_key_and_hash(hs, hs->psk, 32); break;
        default: rc = token_dh(hs, *t); break;
        }
    }
    if (rc == 0) rc = encrypt_and_hash(hs, payload, plen, out + off, &n);
    if (rc != 0) {
        sodium_memzero(out, cap);
        return fail(hs, rc);
    }
    *outlen = off + n;
    hs->msg++;
    return 0;
}

int mm_noise_read(mm_noise_hs *hs, const uint8_t *msg, size_t len, uint8_t *payload, size_t cap, size_t *plen)
{
    if (!hs) return MM_ERR_INVALID;
    if (!ready(hs) || !our_turn(hs, false)) return fail(hs, MM_ERR_STATE);
    if (!msg || !plen || (cap > 0 && !payload)) return fail(hs, MM_ERR_INVALID);
    bool keyed;
    size_t fixed = fixed_len(hs, &keyed);
    size_t tag = keyed ? MM_NOISE_TAGLEN : 0;
    if (len > MM_NOISE_MAX_MSG || len < fixed + tag) return fail(hs, MM_ERR_FORMAT);
    size_t body = len - fixed - tag;
    if (body > cap) return fail(hs, MM_ERR_LIMIT);

    const pattern_def *p = &PATTERNS[hs->pattern];
    size_t off = 0;
    int rc = 0;
    for (const unsigned char *t = p->tok[hs->msg]; *t != TOK_END && rc == 0; t++) {
        switch (*t) {
        case TOK_E:
            memcpy(hs->re, msg + off, 32);
            hs->has_re = true;
            off += 32;
            mix_hash(hs, hs->re, 32);
            if (p->psk) mix_key(hs, hs->re, 32);
            break;
        case TOK_S: {
            size_t n = 32 + (hs->cs.has_k ? MM_NOISE_TAGLEN : 0);
            uint8_t s[32];
            rc = decrypt_and_hash(hs, msg + off, n, s);
            if (rc == 0) {
                memcpy(hs->rs, s, 32);
                hs->has_rs = true;
            }
            sodium_memzero(s, sizeof s);
            off += n;
            break;
        }
        case TOK_PSK: mix_key_and_hash(hs, hs->psk, 32); break;
        default: rc = token_dh(hs, *t); break;
        }
    }
    uint8_t dummy[1];
    if (rc == 0) rc = decrypt_and_hash(hs, msg + off, len - off, body > 0 ? payload : dummy);
    if (rc != 0) {
        if (cap > 0) sodium_memzero(payload, cap);
        return fail(hs, rc);
    }
    *plen = body;
    hs->msg++;
    return 0;
}

bool mm_noise_done(const mm_noise_hs *hs)
{
    return hs && !hs->failed && valid_pattern((int)hs->pattern) && hs->msg >= PATTERNS[hs->pattern].nmsgs;
}

int mm_noise_split(mm_noise_hs *hs, uint8_t k_i2r[32], uint8_t k_r2i[32], uint8_t h[MM_NOISE_HASHLEN])
{
    if (!hs) return MM_ERR_INVALID;
    if (hs->failed || !valid_pattern((int)hs->pattern) || hs->msg != PATTERNS[hs->pattern].nmsgs)
        return fail(hs, MM_ERR_STATE);
    if (!k_i2r || !k_r2i || !h) return fail(hs, MM_ERR_INVALID);
    uint8_t t1[MM_NOISE_HASHLEN], t2[MM_NOISE_HASHLEN];
    hkdf(hs->ck, NULL, 0, t1, t2, NULL);
    memcpy(k_i2r, t1, MM_NOISE_KEYLEN);
    memcpy(k_r2i, t2, MM_NOISE_KEYLEN);
    memcpy(h, hs->h, MM_NOISE_HASHLEN);
    sodium_memzero(t1, sizeof t1);
    sodium_memzero(t2, sizeof t2);
    /* The handshake is over: drop its secrets, keep what identifies the peer. */
    sodium_memzero(hs->ck, sizeof hs->ck);
    sodium_memzero(&hs->cs, sizeof hs->cs);
    sodium_memzero(hs->s_sk, sizeof hs->s_sk);
    sodium_memzero(hs->e_sk, sizeof hs->e_sk);
    sodium_memzero(hs->psk, sizeof hs->psk);
    hs->has_e = hs->has_psk = false;
    hs->msg++; /* split once */
    return 0;
}

const uint8_t *mm_noise_remote_static(const mm_noise_hs *hs)
{
    return hs && !hs->failed && hs->has_rs ? hs->rs : NULL;
}

void mm_noise_wipe(mm_noise_hs *hs)
{
    if (!hs) return;
    sodium_memzero(hs, sizeof *hs);
    hs->failed = true; /* unusable until mm_noise_init */
}
