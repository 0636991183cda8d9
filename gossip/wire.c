/* Control messages: a hand-written msgpack pre-validator, then encoding and
 * decoding of mm_msg with msgpack-c. Each message is [type, fields...] with
 * fields at fixed positions; decoding checks every type, range and length
 * and names the offending field in the error. No I/O. */
#include "wire.h"

#include <msgpack.h>
#include <stdio.h>
#include <string.h>

/* ---- Pre-validator ---------------------------------------------------- */

static uint64_t get_be(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) v = v << 8 | p[i];
    return v;
}

/* What one format byte announces: how many length bytes follow it, then
 * either a fixed payload, a payload whose size is in the length bytes, or a
 * container whose element count is. */
typedef enum { K_FIXED, K_SIZED, K_ARRAY, K_MAP, K_BAD } mp_kind;

typedef struct {
    mp_kind kind;
    size_t lenbytes; /* bytes of the big-endian length/count after the format byte */
    uint64_t fixed;  /* K_FIXED: payload bytes; K_SIZED: extra bytes beyond the length (ext type) */
} mp_fmt;

static mp_fmt classify(uint8_t b)
{
    if (b <= 0x7f || b >= 0xe0) return (mp_fmt){K_FIXED, 0, 0}; /* fixints */
    if (b <= 0x8f) return (mp_fmt){K_MAP, 0, b & 0x0fu};        /* fixmap: count in b */
    if (b <= 0x9f) return (mp_fmt){K_ARRAY, 0, b & 0x0fu};      /* fixarray */
    if (b <= 0xbf) return (mp_fmt){K_FIXED, 0, b & 0x1fu};      /* fixstr */
    switch (b) {
    case 0xc0: case 0xc2: case 0xc3: return (mp_fmt){K_FIXED, 0, 0}; /* nil, false, true */
    case 0xc4: return (mp_fmt){K_SIZED, 1, 0};  /* bin8 */
    case 0xc5: return (mp_fmt){K_SIZED, 2, 0};  /* bin16 */
    case 0xc6: return (mp_fmt){K_SIZED, 4, 0};  /* bin32 */
    case 0xc7: return (mp_fmt){K_SIZED, 1, 1};  /* ext8: + type byte */
    case 0xc8: return (mp_fmt){K_SIZED, 2, 1};  /* ext16 */
    case 0xc9: return (mp_fmt){K_SIZED, 4, 1};  /* ext32 */
    case 0xca: return (mp_fmt){K_FIXED, 0, 4};  /* float32 */
    case 0xcb: return (mp_fmt){K_FIXED, 0, 8};  /* float64 */
    case 0xcc: case 0xd0: return (mp_fmt){K_FIXED, 0, 1}; /* (u)int8 */
    case 0xcd: case 0xd1: return (mp_fmt){K_FIXED, 0, 2}; /* (u)int16 */
    case 0xce: case 0xd2: return (mp_fmt){K_FIXED, 0, 4}; /* (u)int32 */
    case 0xcf: case 0xd3: return (mp_fmt){K_FIXED, 0, 8}; /* (u)int64 */
    case 0xd4: return (mp_fmt){K_FIXED, 0, 2};  /* fixext1: type + 1 */
    case 0xd5: return (mp_fmt){K_FIXED, 0, 3};  /* fixext2 */
    case 0xd6: return (mp_fmt){K_FIXED, 0, 5};  /* fixext4 */
    case 0xd7: return (mp_fmt){K_FIXED, 0, 9};  /* fixext8 */
    case 0xd8: return (mp_fmt){K_FIXED, 0, 17}; /* fixext16 */
    case 0xd9: return (mp_fmt){K_SIZED, 1, 0};  /* str8 */
    case 0xda: return (mp_fmt){K_SIZED, 2, 0};  /* str16 */
    case 0xdb: return (mp_fmt){K_SIZED, 4, 0};  /* str32 */
    case 0xdc: return (mp_fmt){K_ARRAY, 2, 0};  /* array16 */
    case 0xdd: return (mp_fmt){K_ARRAY, 4, 0};  /* array32 */
    case 0xde: return (mp_fmt){K_MAP, 2, 0};    /* map16 */
    case 0xdf: return (mp_fmt){K_MAP, 4, 0};    /* map32 */
    default: return (mp_fmt){K_BAD, 0, 0};      /* 0xc1: never used */
    }
}

int mm_mp_validate(const uint8_t *buf, size_t len)
{
    /* owed[d]: objects still to read in the container open at depth d;
     * depth 0 is the top level, which owes exactly one object. */
    uint64_t owed[MM_MP_MAX_DEPTH + 1];
    int depth = 0;
    size_t pos = 0;
    owed[0] = 1;
    for (;;) {
        while (depth > 0 && owed[depth] == 0) depth--;
        if (depth == 0 && owed[0] == 0) break;
        owed[depth]--;

        if (pos >= len) return MM_ERR_FORMAT; /* truncated */
        mp_fmt f = classify(buf[pos++]);
        if (f.kind == K_BAD) return MM_ERR_FORMAT;
        if (f.lenbytes > len - pos) return MM_ERR_FORMAT;
        uint64_t n = f.lenbytes ? get_be(buf + pos, f.lenbytes) : f.fixed;
        pos += f.lenbytes;
        size_t rem = len - pos;

        if (f.kind == K_FIXED || f.kind == K_SIZED) {
            uint64_t body = f.kind == K_SIZED ? n + f.fixed : n;
            if (body > rem) return MM_ERR_FORMAT;
            pos += (size_t)body;
            continue;
        }
        /* A container: every element takes at least one byte. */
        if (n > MM_MP_MAX_CONTAINER) return MM_ERR_FORMAT;
        uint64_t items = f.kind == K_MAP ? 2 * n : n;
        if (items > rem) return MM_ERR_FORMAT;
        if (depth == MM_MP_MAX_DEPTH) return MM_ERR_FORMAT;
        owed[++depth] = items;
    }
    return pos == len ? MM_OK : MM_ERR_FORMAT; /* nothing may trail */
}

/* ---- Encoding --------------------------------------------------------- */

typedef struct {
    uint8_t *buf;
    size_t cap, len;
} out_buf;

/* msgpack-c write callback into a fixed buffer: fails instead of growing. */
static int out_write(void *data, const char *p, size_t n)
{
    out_buf *o = data;
    if (n > o->cap - o->len) return -1;
    memcpy(o->buf + o->len, p, n);
    o->len += n;
    return 0;
}

static bool str_ok(const char *s, size_t cap)
{
    return strnlen(s, cap) < cap;
}

static int pack_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    return msgpack_pack_str(pk, n) | msgpack_pack_str_body(pk, s, n);
}

static int pack_bin(msgpack_packer *pk, const uint8_t *b, size_t n)
{
    return msgpack_pack_bin(pk, n) | msgpack_pack_bin_body(pk, b, n);
}

static int pack_addr_rec(msgpack_packer *pk, const mm_addr_rec *r)
{
    return msgpack_pack_array(pk, 4) | pack_bin(pk, r->id, MM_ID_BYTES) | pack_str(pk, r->addr) |
           msgpack_pack_uint64(pk, r->seq) | pack_bin(pk, r->sig, MM_SIG_BYTES);
}

/* Refuse what the decoder would refuse, so every encoding decodes. */
static bool msg_encodable(const mm_msg *m)
{
    switch (m->type) {
    case MM_MSG_HELLO: return str_ok(m->u.hello.self.addr, MM_ADDR_MAX);
    case MM_MSG_EXCH_REQ:
    case MM_MSG_EXCH_ACK: return m->u.exch.encoding <= MM_ENC_Q8 && m->u.exch.kind <= 1;
    case MM_MSG_BUSY:
    case MM_MSG_ERROR: return str_ok(m->u.refuse.text, sizeof m->u.refuse.text);
    case MM_MSG_SHUFFLE:
    case MM_MSG_SHUFFLE_REPLY:
        if (m->u.shuffle.n > MM_SHUFFLE_MAX) return false;
        for (uint32_t i = 0; i < m->u.shuffle.n; i++)
            if (!str_ok(m->u.shuffle.recs[i].addr, MM_ADDR_MAX)) return false;
        return true;
    case MM_MSG_PING:
    case MM_MSG_PONG: return true;
    case MM_MSG_LEAVE: return str_ok(m->u.leave.rec.addr, MM_ADDR_MAX);
    case MM_MSG_END: return m->u.end.encoding <= MM_ENC_Q8;
    case MM_MSG_DONE: return true;
    case MM_MSG_REVOKE:
        if (m->u.revoke.n > MM_REVOKE_MAX) return false;
        for (uint32_t i = 0; i < m->u.revoke.n; i++)
            if (m->u.revoke.e[i].kind > MM_REVOKE_KEY) return false;
        return true;
    }
    return false;
}

long mm_msg_encode(const mm_msg *m, uint8_t *out, size_t cap)
{
    if (!msg_encodable(m)) return MM_ERR_INVALID;
    out_buf o = {out, cap, 0};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &o, out_write);
    int rc = 0;
    switch (m->type) {
    case MM_MSG_HELLO:
        rc = msgpack_pack_array(&pk, 6) | msgpack_pack_uint8(&pk, (uint8_t)m->type) |
             msgpack_pack_uint32(&pk, m->u.hello.version) | pack_bin(&pk, m->u.hello.fingerprint, MM_FP_BYTES) |
             msgpack_pack_uint64(&pk, m->u.hello.params) | msgpack_pack_uint32(&pk, m->u.hello.encodings) |
             pack_addr_rec(&pk, &m->u.hello.self);
        break;
    case MM_MSG_EXCH_REQ:
    case MM_MSG_EXCH_ACK:
        rc = msgpack_pack_array(&pk, 5) | msgpack_pack_uint8(&pk, (uint8_t)m->type) |
             msgpack_pack_uint32(&pk, m->u.exch.xid) | msgpack_pack_uint8(&pk, m->u.exch.encoding) |
             msgpack_pack_uint64(&pk, m->u.exch.samples) | msgpack_pack_uint8(&pk, m->u.exch.kind);
        break;
    case MM_MSG_BUSY:
    case MM_MSG_ERROR:
        rc = msgpack_pack_array(&pk, 4) | msgpack_pack_uint8(&pk, (uint8_t)m->type) |
             msgpack_pack_uint32(&pk, m->u.refuse.xid) | msgpack_pack_uint32(&pk, m->u.refuse.code) |
             pack_str(&pk, m->u.refuse.text);
        break;
    case MM_MSG_SHUFFLE:
    case MM_MSG_SHUFFLE_REPLY:
        rc = msgpack_pack_array(&pk, 2) | msgpack_pack_uint8(&pk, (uint8_t)m->type) |
             msgpack_pack_array(&pk, m->u.shuffle.n);
        for (uint32_t i = 0; i < m->u.shuffle.n; i++) rc |= pack_addr_rec(&pk, &m->u.shuffle.recs[i]);
        break;
    case MM_MSG_PING:
    case MM_MSG_PONG:
        rc = msgpack_pack_array(&pk, 2) | msgpack_pack_uint8(&pk, (uint8_t)m->type) |
             msgpack_pack_uint64(&pk, m->u.ping.nonce);
        break;
    case MM_MSG_LEAVE:
        rc = msgpack_pack_array(&pk, 2) | msgpack_pack_uint8(&pk, (uint8_t)m->type) |
             pack_addr_rec(&pk, &m->u.leave.rec);
        break;
    case MM_MSG_END:
        rc = msgpack_pack_array(&pk, 5) | msgpack_pack_uint8(&pk, (uint8_t)m->type) |
             msgpack_pack_uint32(&pk, m->u.end.xid) | msgpack_pack_uint64(&pk, m->u.end.total_bytes) |
             msgpack_pack_uint32(&pk, m->u.end.chunks) | msgpack_pack_uint8(&pk, m->u.end.encoding);
        break;
    case MM_MSG_DONE:
        rc = msgpack_pack_array(&pk, 2) | msgpack_pack_uint8(&pk, (uint8_t)m->type) |
             msgpack_pack_uint32(&pk, m->u.done.xid);
        break;
    case MM_MSG_REVOKE: /* [13, version, [serial u64 | member key bin32, ...], sig bin64] */
        rc = msgpack_pack_array(&pk, 4) | msgpack_pack_uint8(&pk, (uint8_t)m->type) |
             msgpack_pack_uint64(&pk, m->u.revoke.version) | msgpack_pack_array(&pk, m->u.revoke.n);
        for (uint32_t i = 0; i < m->u.revoke.n; i++) {
            const mm_revoke_entry *en = &m->u.revoke.e[i];
            rc |= en->kind == MM_REVOKE_KEY ? pack_bin(&pk, en->key, MM_ID_BYTES) : msgpack_pack_uint64(&pk, en->serial);
        }
        rc |= pack_bin(&pk, m->u.revoke.sig, MM_SIG_BYTES);
        break;
    }
    if (rc != 0) return MM_ERR_LIMIT; /* out of room */
    return (long)o.len;
}

/* ---- Decoding --------------------------------------------------------- */

static const char *msg_name(uint64_t type)
{
    static const char *const names[] = {
        NULL, "HELLO", "EXCH_REQ", "EXCH_ACK", "BUSY", "SHUFFLE", "SHUFFLE_REPLY",
        "PING", "PONG", "LEAVE", "ERROR", "END", "DONE", "REVOKE",
    };
    return type < sizeof names / sizeof names[0] ? names[type] : NULL;
}

/* Where a field sits, for error messages: message name and field path. */
typedef struct {
    const char *msg;
    mm_error *err;
} dec_ctx;

static int get_uint(const dec_ctx *c, const msgpack_object *o, const char *field, uint64_t max, uint64_t *out)
{
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return mm_error_set(c->err, MM_ERR_FORMAT, "%s: field '%s' must be an unsigned integer", c->msg, field);
    if (o->via.u64 > max)
        return mm_error_set(c->err, MM_ERR_FORMAT, "%s: field '%s' out of range (%llu)", c->msg, field,
                            (unsigned long long)o->via.u64);
    *out = o->via.u64;
    return MM_OK;
}

static int get_u32(const dec_ctx *c, const msgpack_object *o, const char *field, uint32_t *out)
{
    uint64_t v = 0;
    int rc = get_uint(c, o, field, UINT32_MAX, &v);
    if (rc == MM_OK) *out = (uint32_t)v;
    return rc;
}

static int get_u8(const dec_ctx *c, const msgpack_object *o, const char *field, uint8_t max, uint8_t *out)
{
    uint64_t v = 0;
    int rc = get_uint(c, o, field, max, &v);
    if (rc == MM_OK) *out = (uint8_t)v;
    return rc;
}

static int get_bin(const dec_ctx *c, const msgpack_object *o, const char *field, uint8_t *out, uint32_t n)
{
    if (o->type != MSGPACK_OBJECT_BIN)
        return mm_error_set(c->err, MM_ERR_FORMAT, "%s: field '%s' must be bin", c->msg, field);
    if (o->via.bin.size != n)
        return mm_error_set(c->err, MM_ERR_FORMAT, "%s: field '%s' has %u bytes, expected %u", c->msg, field,
                            (unsigned)o->via.bin.size, (unsigned)n);
    memcpy(out, o->via.bin.ptr, n);
    return MM_OK;
}

/* A str of at most cap-1 bytes without NUL, copied NUL-terminated. */
static int get_str(const dec_ctx *c, const msgpack_object *o, const char *field, char *out, size_t cap)
{
    if (o->type != MSGPACK_OBJECT_STR)
        return mm_error_set(c->err, MM_ERR_FORMAT, "%s: field '%s' must be str", c->msg, field);
    size_t n = o->via.str.size;
    if (n >= cap)
        return mm_error_set(c->err, MM_ERR_FORMAT, "%s: field '%s' too long (%zu bytes, max %zu)", c->msg, field, n,
                            cap - 1);
    if (n && memchr(o->via.str.ptr, 0, n))
        return mm_error_set(c->err, MM_ERR_FORMAT, "%s: field '%s' contains NUL", c->msg, field);
    if (n) memcpy(out, o->via.str.ptr, n);
    out[n] = '\0';
    return MM_OK;
}

/* An array of exactly n elements (field NULL: the message itself). */
static int get_array(const dec_ctx *c, const msgpack_object *o, const char *field, uint32_t n)
{
    const char *what = field ? field : "message";
    if (o->type != MSGPACK_OBJECT_ARRAY)
        return mm_error_set(c->err, MM_ERR_FORMAT, "%s: field '%s' must be an array", c->msg, what);
    if (o->via.array.size != n)
        return mm_error_set(c->err, MM_ERR_FORMAT, "%s: field '%s' has wrong arity (%u elements, expected %u)", c->msg,
                            what, (unsigned)o->via.array.size, (unsigned)n);
    return MM_OK;
}

/* addr_rec = [id bin32, addr str, seq u64, sig bin64]; prefix names it. */
static int get_addr_rec(const dec_ctx *c, const msgpack_object *o, const char *prefix, mm_addr_rec *r)
{
    char f[48];
    int rc = get_array(c, o, prefix, 4);
    if (rc) return rc;
    const msgpack_object *e = o->via.array.ptr;
    snprintf(f, sizeof f, "%s.id", prefix);
    if ((rc = get_bin(c, &e[0], f, r->id, MM_ID_BYTES))) return rc;
    snprintf(f, sizeof f, "%s.addr", prefix);
    if ((rc = get_str(c, &e[1], f, r->addr, sizeof r->addr))) return rc;
    snprintf(f, sizeof f, "%s.seq", prefix);
    if ((rc = get_uint(c, &e[2], f, UINT64_MAX, &r->seq))) return rc;
    snprintf(f, sizeof f, "%s.sig", prefix);
    return get_bin(c, &e[3], f, r->sig, MM_SIG_BYTES);
}

static int decode_fields(const dec_ctx *c, mm_msg *m, const msgpack_object *top)
{
    const msgpack_object *e = top->via.array.ptr;
    int rc;
    switch (m->type) {
    case MM_MSG_HELLO:
        if ((rc = get_array(c, top, NULL, 6))) return rc;
        if ((rc = get_u32(c, &e[1], "version", &m->u.hello.version))) return rc;
        if ((rc = get_bin(c, &e[2], "fingerprint", m->u.hello.fingerprint, MM_FP_BYTES))) return rc;
        if ((rc = get_uint(c, &e[3], "params", UINT64_MAX, &m->u.hello.params))) return rc;
        if ((rc = get_u32(c, &e[4], "encodings", &m->u.hello.encodings))) return rc;
        return get_addr_rec(c, &e[5], "self", &m->u.hello.self);
    case MM_MSG_EXCH_REQ:
    case MM_MSG_EXCH_ACK:
        if ((rc = get_array(c, top, NULL, 5))) return rc;
        if ((rc = get_u32(c, &e[1], "xid", &m->u.exch.xid))) return rc;
        if ((rc = get_u8(c, &e[2], "encoding", MM_ENC_Q8, &m->u.exch.encoding))) return rc;
        if ((rc = get_uint(c, &e[3], "samples", UINT64_MAX, &m->u.exch.samples))) return rc;
        return get_u8(c, &e[4], "kind", 1, &m->u.exch.kind);
    case MM_MSG_BUSY:
    case MM_MSG_ERROR:
        if ((rc = get_array(c, top, NULL, 4))) return rc;
        if ((rc = get_u32(c, &e[1], "xid", &m->u.refuse.xid))) return rc;
        if ((rc = get_u32(c, &e[2], "code", &m->u.refuse.code))) return rc;
        return get_str(c, &e[3], "text", m->u.refuse.text, sizeof m->u.refuse.text);
    case MM_MSG_SHUFFLE:
    case MM_MSG_SHUFFLE_REPLY: {
        if ((rc = get_array(c, top, NULL, 2))) return rc;
        const msgpack_object *l = &e[1];
        if (l->type != MSGPACK_OBJECT_ARRAY)
            return mm_error_set(c->err, MM_ERR_FORMAT, "%s: field 'recs' must be an array", c->msg);
        if (l->via.array.size > MM_SHUFFLE_MAX)
            return mm_error_set(c->err, MM_ERR_FORMAT, "%s: field 'recs' has %u entries (max %u)", c->msg,
                                (unsigned)l->via.array.size, (unsigned)MM_SHUFFLE_MAX);
        m->u.shuffle.n = l->via.array.size;
        for (uint32_t i = 0; i < m->u.shuffle.n; i++) {
            char f[24];
            snprintf(f, sizeof f, "recs[%u]", (unsigned)i);
            if ((rc = get_addr_rec(c, &l->via.array.ptr[i], f, &m->u.shuffle.recs[i]))) return rc;
        }
        return MM_OK;
    }
    case MM_MSG_PING:
    case MM_MSG_PONG:
        if ((rc = get_array(c, top, NULL, 2))) return rc;
        return get_uint(c, &e[1], "nonce", UINT64_MAX, &m->u.ping.nonce);
    case MM_MSG_LEAVE:
        if ((rc = get_array(c, top, NULL, 2))) return rc;
        return get_addr_rec(c, &e[1], "rec", &m->u.leave.rec);
    case MM_MSG_END:
        if ((rc = get_array(c, top, NULL, 5))) return rc;
        if ((rc = get_u32(c, &e[1], "xid", &m->u.end.xid))) return rc;
        if ((rc = get_uint(c, &e[2], "total_bytes", UINT64_MAX, &m->u.end.total_bytes))) return rc;
        if ((rc = get_u32(c, &e[3], "chunks", &m->u.end.chunks))) return rc;
        return get_u8(c, &e[4], "encoding", MM_ENC_Q8, &m->u.end.encoding);
    case MM_MSG_DONE:
        if ((rc = get_array(c, top, NULL, 2))) return rc;
        return get_u32(c, &e[1], "xid", &m->u.done.xid);
    case MM_MSG_REVOKE: {
        if ((rc = get_array(c, top, NULL, 4))) return rc;
        if ((rc = get_uint(c, &e[1], "version", UINT64_MAX, &m->u.revoke.version))) return rc;
        const msgpack_object *l = &e[2];
        if (l->type != MSGPACK_OBJECT_ARRAY)
            return mm_error_set(c->err, MM_ERR_FORMAT, "%s: field 'entries' must be an array", c->msg);
        if (l->via.array.size > MM_REVOKE_MAX)
            return mm_error_set(c->err, MM_ERR_FORMAT, "%s: field 'entries' has %u entries (max %u)", c->msg,
                                (unsigned)l->via.array.size, (unsigned)MM_REVOKE_MAX);
        m->u.revoke.n = l->via.array.size;
        for (uint32_t i = 0; i < m->u.revoke.n; i++) {
            const msgpack_object *o = &l->via.array.ptr[i];
            mm_revoke_entry *en = &m->u.revoke.e[i];
            char f[24];
            snprintf(f, sizeof f, "entries[%u]", (unsigned)i);
            if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
                en->kind = MM_REVOKE_SERIAL;
                en->serial = o->via.u64;
            } else if (o->type == MSGPACK_OBJECT_BIN) {
                en->kind = MM_REVOKE_KEY;
                if ((rc = get_bin(c, o, f, en->key, MM_ID_BYTES))) return rc;
            } else {
                return mm_error_set(c->err, MM_ERR_FORMAT,
                                    "%s: field '%s' must be a serial (unsigned integer) or a member key (bin 32)",
                                    c->msg, f);
            }
        }
        return get_bin(c, &e[3], "sig", m->u.revoke.sig, MM_SIG_BYTES);
    }
    }
    return mm_error_set(c->err, MM_ERR_FORMAT, "message: unknown type %d", (int)m->type);
}

int mm_msg_decode(mm_msg *m, const uint8_t *buf, size_t len, mm_error *err)
{
    memset(m, 0, sizeof *m);
    /* msgpack-c never sees input the pre-validator has not passed. */
    if (mm_mp_validate(buf, len) != MM_OK)
        return mm_error_set(err, MM_ERR_FORMAT, "message: malformed msgpack");

    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    msgpack_unpack_return ur = msgpack_unpack_next(&up, (const char *)buf, len, &off);
    int rc;
    if (ur == MSGPACK_UNPACK_NOMEM_ERROR) {
        rc = mm_error_set(err, MM_ERR_NOMEM, "message: out of memory decoding msgpack");
    } else if (ur != MSGPACK_UNPACK_SUCCESS || off != len) {
        rc = mm_error_set(err, MM_ERR_FORMAT, "message: malformed msgpack");
    } else {
        const msgpack_object *top = &up.data;
        dec_ctx c = {"message", err};
        if (top->type != MSGPACK_OBJECT_ARRAY || top->via.array.size == 0) {
            rc = mm_error_set(err, MM_ERR_FORMAT, "message: not a non-empty array");
        } else if (top->via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
            rc = mm_error_set(err, MM_ERR_FORMAT, "message: field 'type' must be an unsigned integer");
        } else if (!msg_name(top->via.array.ptr[0].via.u64)) {
            rc = mm_error_set(err, MM_ERR_FORMAT, "message: field 'type' unknown (%llu)",
                              (unsigned long long)top->via.array.ptr[0].via.u64);
        } else {
            m->type = (mm_msg_type)top->via.array.ptr[0].via.u64;
            c.msg = msg_name(m->type);
            rc = decode_fields(&c, m, top);
        }
    }
    msgpack_unpacked_destroy(&up);
    if (rc != MM_OK) memset(m, 0, sizeof *m);
    return rc;
}
