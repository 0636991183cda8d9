/* Membership certificates and revocation lists (see cert.h). No I/O. */
#include "cert.h"

#include <sodium.h>
#include <string.h>

#include "bytes.h"

void mm_cert_network_id(const uint8_t owner_pk[32], uint8_t network_id[32])
{
    uint8_t m[13 + 32];
    memcpy(m, "murmur-net-v1", 13);
    memcpy(m + 13, owner_pk, 32);
    crypto_generichash(network_id, 32, m, sizeof m, NULL, 0);
}

/* The 92 signed bytes of the layout, then the signature. */
static void encode_fields(const mm_cert *c, uint8_t *out)
{
    out[0] = c->ver;
    out[1] = c->flags;
    out[2] = (uint8_t)c->rsv;
    out[3] = (uint8_t)(c->rsv >> 8);
    memcpy(out + 4, c->network_id, 32);
    memcpy(out + 36, c->member_pk, 32);
    mm_put_le64(out + 68, c->not_before);
    mm_put_le64(out + 76, c->not_after);
    mm_put_le64(out + 84, c->serial);
}

void mm_cert_encode(const mm_cert *c, uint8_t out[MM_CERT_BYTES])
{
    encode_fields(c, out);
    memcpy(out + MM_CERT_SIGNED, c->sig, MM_SIG_BYTES);
}

mm_cert_status mm_cert_decode(mm_cert *c, const uint8_t in[MM_CERT_BYTES])
{
    c->ver = in[0];
    c->flags = in[1];
    c->rsv = (uint16_t)(in[2] | in[3] << 8);
    memcpy(c->network_id, in + 4, 32);
    memcpy(c->member_pk, in + 36, 32);
    c->not_before = mm_get_le64(in + 68);
    c->not_after = mm_get_le64(in + 76);
    c->serial = mm_get_le64(in + 84);
    memcpy(c->sig, in + MM_CERT_SIGNED, MM_SIG_BYTES);
    return c->ver == MM_CERT_VERSION && c->flags == 0 && c->rsv == 0 ? MM_CERT_OK : MM_CERT_MALFORMED;
}

size_t mm_cert_message(const mm_cert *c, uint8_t *m)
{
    memcpy(m, "murmur-cert-v1", 14);
    encode_fields(c, m + 14);
    return 14 + MM_CERT_SIGNED;
}

void mm_cert_sign(mm_cert *c, const uint8_t owner_sk[64])
{
    uint8_t m[14 + MM_CERT_SIGNED];
    size_t n = mm_cert_message(c, m);
    crypto_sign_detached(c->sig, NULL, m, n, owner_sk);
}

bool mm_cert_sig_ok(const mm_cert *c, const uint8_t owner_pk[32])
{
    uint8_t m[14 + MM_CERT_SIGNED];
    size_t n = mm_cert_message(c, m);
    return crypto_sign_verify_detached(c->sig, m, n, owner_pk) == 0;
}

mm_cert_status mm_cert_check_fields(const mm_cert *c, const uint8_t network_id[32], const uint8_t *member,
                                    int64_t wall_s)
{
    if (c->ver != MM_CERT_VERSION || c->flags || c->rsv) return MM_CERT_MALFORMED;
    if (memcmp(c->network_id, network_id, 32) != 0) return MM_CERT_OTHER_NETWORK;
    if (member && memcmp(c->member_pk, member, MM_ID_BYTES) != 0) return MM_CERT_OTHER_MEMBER;
    if (c->not_after < c->not_before || c->not_after - c->not_before > MM_CERT_LIFETIME_MAX_S) return MM_CERT_TOO_LONG;
    /* Times past INT64_MAX count as the far future. */
    if (c->not_before > (uint64_t)INT64_MAX || (int64_t)c->not_before > wall_s + MM_CLOCK_SKEW_S)
        return MM_CERT_NOT_YET_VALID;
    if (c->not_after <= (uint64_t)INT64_MAX && (int64_t)c->not_after + MM_CLOCK_SKEW_S <= wall_s) return MM_CERT_EXPIRED;
    return MM_CERT_OK;
}

mm_cert_status mm_cert_check(const mm_cert *c, const uint8_t owner_pk[32], const uint8_t *member, int64_t wall_s)
{
    uint8_t nid[32];
    mm_cert_network_id(owner_pk, nid);
    if (c->ver != MM_CERT_VERSION || c->flags || c->rsv) return MM_CERT_MALFORMED;
    if (!mm_cert_sig_ok(c, owner_pk)) return MM_CERT_NOT_OWNER;
    return mm_cert_check_fields(c, nid, member, wall_s);
}

const char *mm_cert_why(mm_cert_status s)
{
    switch (s) {
    case MM_CERT_OK: return "valid";
    case MM_CERT_MALFORMED: return "malformed certificate (unknown version, flags or reserved bits)";
    case MM_CERT_NOT_OWNER: return "certificate not signed by the network owner";
    case MM_CERT_OTHER_NETWORK: return "certificate is for another network";
    case MM_CERT_OTHER_MEMBER: return "certificate names another identity";
    case MM_CERT_NOT_YET_VALID: return "certificate not yet valid";
    case MM_CERT_EXPIRED: return "certificate expired";
    case MM_CERT_TOO_LONG: return "certificate valid for longer than 30 days";
    }
    return "certificate refused";
}

size_t mm_revlist_message(const mm_revlist *l, const uint8_t network_id[32], uint8_t *m)
{
    uint32_t n = l->n < MM_REVOKE_MAX ? l->n : MM_REVOKE_MAX;
    size_t k = 0;
    memcpy(m, "murmur-revoke-v1", 16);
    k += 16;
    memcpy(m + k, network_id, 32);
    k += 32;
    mm_put_le64(m + k, l->version);
    k += 8;
    for (int i = 0; i < 4; i++) m[k++] = (uint8_t)(n >> (8 * i));
    for (uint32_t i = 0; i < n; i++) {
        const mm_revoke_entry *e = &l->e[i];
        m[k++] = e->kind;
        if (e->kind == MM_REVOKE_KEY) {
            memcpy(m + k, e->key, 32);
            k += 32;
        } else {
            mm_put_le64(m + k, e->serial);
            k += 8;
        }
    }
    return k;
}

void mm_revlist_sign(mm_revlist *l, const uint8_t owner_sk[64])
{
    uint8_t nid[32], m[MM_REVLIST_MESSAGE_MAX];
    mm_cert_network_id(owner_sk + 32, nid);
    size_t n = mm_revlist_message(l, nid, m);
    crypto_sign_detached(l->sig, NULL, m, n, owner_sk);
}

bool mm_revlist_sig_ok(const mm_revlist *l, const uint8_t owner_pk[32])
{
    if (l->n > MM_REVOKE_MAX) return false;
    for (uint32_t i = 0; i < l->n; i++)
        if (l->e[i].kind > MM_REVOKE_KEY) return false;
    uint8_t nid[32], m[MM_REVLIST_MESSAGE_MAX];
    mm_cert_network_id(owner_pk, nid);
    size_t n = mm_revlist_message(l, nid, m);
    return crypto_sign_verify_detached(l->sig, m, n, owner_pk) == 0;
}

bool mm_revlist_revokes(const mm_revlist *l, const uint64_t *serial, const uint8_t *member)
{
    for (uint32_t i = 0; i < l->n && i < MM_REVOKE_MAX; i++) {
        const mm_revoke_entry *e = &l->e[i];
        if (e->kind == MM_REVOKE_SERIAL && serial && e->serial == *serial) return true;
        if (e->kind == MM_REVOKE_KEY && member && memcmp(e->key, member, MM_ID_BYTES) == 0) return true;
    }
    return false;
}
