/* The record layer: frame headers, sealing and opening with a per-direction
 * counter nonce, and Noise's Rekey every rekey_every frames. No I/O: the
 * caller hands in buffers and gets frames or plaintext back. */
#include "record.h"

#include <string.h>

#include "mm_error.h"

static void put_be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (24 - 8 * i));
}

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (56 - 8 * i));
}

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get_be64(const uint8_t *p)
{
    return (uint64_t)get_be32(p) << 32 | get_be32(p + 4);
}

/* Largest plaintext a frame of this type may carry. */
static uint32_t max_plain(uint8_t type)
{
    return type == MM_FRAME_DATA ? MM_FRAME_MAX_PLAIN : MM_FRAME_CTRL_MAX;
}

static bool type_known(uint8_t type)
{
    return type >= MM_FRAME_CTRL && type <= MM_FRAME_CLOSE;
}

/* Noise's nonce: 4 zero bytes, then the counter (ChaChaPoly little-endian,
 * AESGCM big-endian). */
static void make_nonce(mm_cipher c, uint64_t n, uint8_t nonce[12])
{
    memset(nonce, 0, 4);
    if (c == MM_CIPHER_AESGCM) {
        put_be64(nonce + 4, n);
    } else {
        for (int i = 0; i < 8; i++) nonce[4 + i] = (uint8_t)(n >> (8 * i));
    }
}

static void dir_encrypt(const mm_record_dir *d, uint64_t n, const uint8_t *ad, size_t adlen, const uint8_t *pt,
                        size_t len, uint8_t *ct, uint8_t tag[MM_FRAME_TAG])
{
    uint8_t nonce[12];
    make_nonce(d->cipher, n, nonce);
    if (d->cipher == MM_CIPHER_AESGCM)
        crypto_aead_aes256gcm_encrypt_detached(ct, tag, NULL, pt, len, ad, adlen, NULL, nonce, d->key);
    else
        crypto_aead_chacha20poly1305_ietf_encrypt_detached(ct, tag, NULL, pt, len, ad, adlen, NULL, nonce, d->key);
}

static void dir_init(mm_record_dir *d, mm_cipher c, const uint8_t key[32])
{
    d->cipher = c;
    d->n = 0;
    memcpy(d->key, key, 32);
}

/* k' = ENCRYPT(k, 2^64-1, "", 0^32)[0:32]; the old key is wiped. */
static void dir_rekey(mm_record_dir *d)
{
    uint8_t zeros[32] = {0}, next[32], tag[MM_FRAME_TAG];
    dir_encrypt(d, UINT64_MAX, NULL, 0, zeros, sizeof zeros, next, tag);
    sodium_memzero(d->key, sizeof d->key);
    memcpy(d->key, next, 32);
    sodium_memzero(next, sizeof next);
    sodium_memzero(tag, sizeof tag);
}

/* Count one frame in direction d, rekeying at every rekey_every-th. */
static void dir_advance(mm_record_dir *d, uint64_t rekey_every)
{
    d->n++;
    if (rekey_every && d->n % rekey_every == 0) dir_rekey(d);
}

int mm_record_init(mm_record *r, mm_cipher cipher, const uint8_t tx_key[32], const uint8_t rx_key[32])
{
    memset(r, 0, sizeof *r);
    if (cipher != MM_CIPHER_CHACHA && cipher != MM_CIPHER_AESGCM) return MM_ERR_INVALID;
    if (cipher == MM_CIPHER_AESGCM && !crypto_aead_aes256gcm_is_available()) return MM_ERR_INVALID;
    r->rekey_every = MM_REKEY_FRAMES;
    dir_init(&r->tx, cipher, tx_key);
    dir_init(&r->rx, cipher, rx_key);
    return MM_OK;
}

void mm_record_wipe(mm_record *r)
{
    sodium_memzero(r, sizeof *r);
}

int mm_frame_parse_header(const uint8_t *buf, mm_frame_hdr *h)
{
    h->len = get_be32(buf);
    h->type = buf[4];
    h->flags = buf[5];
    h->rsv = (uint16_t)(buf[6] << 8 | buf[7]);
    h->xid = get_be32(buf + 8);
    h->offset = get_be64(buf + 12);
    if (!type_known(h->type) || h->flags != 0 || h->rsv != 0) return MM_ERR_FORMAT;
    if (h->len < MM_FRAME_TAG) return MM_ERR_FORMAT;
    if (h->len - MM_FRAME_TAG > max_plain(h->type)) return MM_ERR_LIMIT;
    return MM_OK;
}

long mm_record_seal_defer(mm_record *r, mm_frame_type type, uint32_t xid, uint64_t offset, const uint8_t *pt,
                          size_t len, uint8_t *out, size_t cap, mm_seal_job *job)
{
    if (!type_known((uint8_t)type) || len > max_plain((uint8_t)type)) return MM_ERR_INVALID;
    if (cap < MM_FRAME_HEADER + len + MM_FRAME_TAG) return MM_ERR_INVALID;
    if (r->tx.n >= MM_NONCE_LIMIT) return MM_ERR_LIMIT;

    put_be32(out, (uint32_t)(len + MM_FRAME_TAG));
    out[4] = (uint8_t)type;
    out[5] = 0;
    put_be16(out + 6, 0);
    put_be32(out + 8, xid);
    put_be64(out + 12, offset);
    job->cipher = r->tx.cipher;
    memcpy(job->key, r->tx.key, sizeof job->key);
    job->n = r->tx.n;
    job->pt = pt;
    job->len = len;
    job->out = out;
    dir_advance(&r->tx, r->rekey_every);
    return (long)(MM_FRAME_HEADER + len + MM_FRAME_TAG);
}

void mm_seal_job_run(const mm_seal_job *job)
{
    mm_record_dir d = {.cipher = job->cipher, .n = job->n};
    memcpy(d.key, job->key, sizeof d.key);
    uint8_t *out = job->out;
    dir_encrypt(&d, job->n, out, MM_FRAME_HEADER, job->pt, job->len, out + MM_FRAME_HEADER,
                out + MM_FRAME_HEADER + job->len);
    sodium_memzero(d.key, sizeof d.key);
}

long mm_record_seal(mm_record *r, mm_frame_type type, uint32_t xid, uint64_t offset, const uint8_t *pt, size_t len,
                    uint8_t *out, size_t cap)
{
    mm_seal_job job;
    long n = mm_record_seal_defer(r, type, xid, offset, pt, len, out, cap, &job);
    if (n > 0) mm_seal_job_run(&job);
    sodium_memzero(job.key, sizeof job.key);
    return n;
}

int mm_record_open(mm_record *r, const mm_frame_hdr *h, const uint8_t *hdr, const uint8_t *ct, uint8_t *pt)
{
    if (h->len < MM_FRAME_TAG || h->len - MM_FRAME_TAG > MM_FRAME_MAX_PLAIN) return MM_ERR_FORMAT;
    if (r->rx.n >= MM_NONCE_LIMIT) return MM_ERR_LIMIT;

    const mm_record_dir *d = &r->rx;
    size_t len = h->len - MM_FRAME_TAG;
    const uint8_t *tag = ct + len;
    uint8_t nonce[12];
    make_nonce(d->cipher, d->n, nonce);
    int rc;
    if (d->cipher == MM_CIPHER_AESGCM)
        rc = crypto_aead_aes256gcm_decrypt_detached(pt, NULL, ct, len, tag, hdr, MM_FRAME_HEADER, nonce, d->key);
    else
        rc = crypto_aead_chacha20poly1305_ietf_decrypt_detached(pt, NULL, ct, len, tag, hdr, MM_FRAME_HEADER, nonce,
                                                               d->key);
    if (rc != 0) return MM_ERR_AUTH;
    dir_advance(&r->rx, r->rekey_every);
    return MM_OK;
}
