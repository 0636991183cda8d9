/* Control messages: round trips of every type, the msgpack pre-validator
 * against hostile inputs, and decode errors that name the field
 * (SECURITY.md M1-M4). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka.h needs the headers above first. */
#include <cmocka.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

static void fill_rec(mm_addr_rec *r, uint8_t seed, const char *addr)
{
    for (int i = 0; i < MM_ID_BYTES; i++) r->id[i] = (uint8_t)(seed + i);
    for (int i = 0; i < MM_SIG_BYTES; i++) r->sig[i] = (uint8_t)(seed * 3 + i);
    snprintf(r->addr, sizeof r->addr, "%s", addr);
    r->seq = 0x0102030405060708ull + seed;
}

/* A filled example of each message type (zeroed first, so memcmp works). */
static void sample(mm_msg *m, mm_msg_type t)
{
    memset(m, 0, sizeof *m);
    m->type = t;
    switch (t) {
    case MM_MSG_HELLO:
        m->u.hello.version = MM_PROTO_VERSION;
        for (int i = 0; i < MM_FP_BYTES; i++) m->u.hello.fingerprint[i] = (uint8_t)(0xf0 ^ i);
        m->u.hello.params = 1234567890123ull;
        m->u.hello.encodings = 0xf;
        fill_rec(&m->u.hello.self, 1, "10.0.0.1:7946");
        break;
    case MM_MSG_EXCH_REQ:
    case MM_MSG_EXCH_ACK:
        m->u.exch.xid = UINT32_MAX;
        m->u.exch.encoding = MM_ENC_Q8;
        m->u.exch.samples = UINT64_MAX;
        m->u.exch.kind = 1;
        break;
    case MM_MSG_BUSY:
    case MM_MSG_ERROR:
        m->u.refuse.xid = 77;
        m->u.refuse.code = MM_REFUSE_FINGERPRINT;
        memset(m->u.refuse.text, 'x', sizeof m->u.refuse.text - 1); /* the longest allowed */
        break;
    case MM_MSG_SHUFFLE:
    case MM_MSG_SHUFFLE_REPLY:
        m->u.shuffle.n = MM_SHUFFLE_MAX;
        for (uint32_t i = 0; i < MM_SHUFFLE_MAX; i++) {
            char a[MM_ADDR_MAX];
            if (i == 0) { /* the longest allowed: 63 bytes */
                memset(a, 'h', sizeof a - 1);
                a[sizeof a - 1] = '\0';
            } else {
                snprintf(a, sizeof a, "[2001:db8::%u]:7946", (unsigned)i);
            }
            fill_rec(&m->u.shuffle.recs[i], (uint8_t)i, a);
        }
        break;
    case MM_MSG_PING:
    case MM_MSG_PONG: m->u.ping.nonce = 0xdeadbeefcafef00dull; break;
    case MM_MSG_LEAVE: fill_rec(&m->u.leave.rec, 9, ""); break;
    case MM_MSG_END:
        m->u.end.xid = 5;
        m->u.end.total_bytes = 1ull << 33;
        m->u.end.chunks = 32768;
        m->u.end.encoding = MM_ENC_BF16;
        break;
    case MM_MSG_DONE: m->u.done.xid = 0x01020304; break;
    case MM_MSG_REVOKE: /* the longest allowed, serials and member keys mixed */
        m->u.revoke.version = 0x0102030405060708ull;
        m->u.revoke.n = MM_REVOKE_MAX;
        for (uint32_t i = 0; i < MM_REVOKE_MAX; i++) {
            mm_revoke_entry *e = &m->u.revoke.e[i];
            e->kind = i % 2 ? MM_REVOKE_KEY : MM_REVOKE_SERIAL;
            if (e->kind == MM_REVOKE_KEY)
                memset(e->key, (int)i, sizeof e->key);
            else
                e->serial = i == 0 ? UINT64_MAX : i;
        }
        memset(m->u.revoke.sig, 0x5c, sizeof m->u.revoke.sig);
        break;
    }
}

static uint8_t g_buf[MM_FRAME_CTRL_MAX];

static void test_round_trip(void **state)
{
    (void)state;
    for (int t = MM_MSG_HELLO; t <= MM_MSG_REVOKE; t++) {
        mm_msg m, back;
        mm_error err;
        sample(&m, (mm_msg_type)t);
        long n = mm_msg_encode(&m, g_buf, sizeof g_buf);
        assert_true(n > 0);
        assert_int_equal(mm_mp_validate(g_buf, (size_t)n), MM_OK);
        assert_int_equal(mm_msg_decode(&back, g_buf, (size_t)n, &err), MM_OK);
        assert_memory_equal(&m, &back, sizeof m);
        /* The smallest value of each field too. */
        memset(&m.u, 0, sizeof m.u);
        n = mm_msg_encode(&m, g_buf, sizeof g_buf);
        assert_true(n > 0);
        assert_int_equal(mm_msg_decode(&back, g_buf, (size_t)n, &err), MM_OK);
        assert_memory_equal(&m, &back, sizeof m);
    }
    /* Known bytes: PING [7, 1] and EXCH_REQ [2, 1, 0, 300, 0]. */
    mm_msg m = {.type = MM_MSG_PING, .u.ping.nonce = 1};
    assert_int_equal(mm_msg_encode(&m, g_buf, sizeof g_buf), 3);
    assert_memory_equal(g_buf, ((const uint8_t[]){0x92, 0x07, 0x01}), 3);
    m = (mm_msg){.type = MM_MSG_EXCH_REQ, .u.exch = {.xid = 1, .samples = 300}};
    assert_int_equal(mm_msg_encode(&m, g_buf, sizeof g_buf), 8);
    assert_memory_equal(g_buf, ((const uint8_t[]){0x95, 0x02, 0x01, 0x00, 0xcd, 0x01, 0x2c, 0x00}), 8);
}

static void test_encode_refusals(void **state)
{
    (void)state;
    mm_msg m;
    sample(&m, MM_MSG_EXCH_REQ);
    m.u.exch.encoding = 4;
    assert_int_equal(mm_msg_encode(&m, g_buf, sizeof g_buf), MM_ERR_INVALID);
    sample(&m, MM_MSG_EXCH_ACK);
    m.u.exch.kind = 2;
    assert_int_equal(mm_msg_encode(&m, g_buf, sizeof g_buf), MM_ERR_INVALID);
    sample(&m, MM_MSG_SHUFFLE);
    m.u.shuffle.n = MM_SHUFFLE_MAX + 1;
    assert_int_equal(mm_msg_encode(&m, g_buf, sizeof g_buf), MM_ERR_INVALID);
    sample(&m, MM_MSG_LEAVE);
    memset(m.u.leave.rec.addr, 'a', MM_ADDR_MAX); /* unterminated */
    assert_int_equal(mm_msg_encode(&m, g_buf, sizeof g_buf), MM_ERR_INVALID);
    sample(&m, MM_MSG_ERROR);
    memset(m.u.refuse.text, 'a', sizeof m.u.refuse.text);
    assert_int_equal(mm_msg_encode(&m, g_buf, sizeof g_buf), MM_ERR_INVALID);
    sample(&m, MM_MSG_REVOKE);
    m.u.revoke.n = MM_REVOKE_MAX + 1;
    assert_int_equal(mm_msg_encode(&m, g_buf, sizeof g_buf), MM_ERR_INVALID);
    sample(&m, MM_MSG_REVOKE);
    m.u.revoke.e[3].kind = 2;
    assert_int_equal(mm_msg_encode(&m, g_buf, sizeof g_buf), MM_ERR_INVALID);
    m.type = (mm_msg_type)99;
    assert_int_equal(mm_msg_encode(&m, g_buf, sizeof g_buf), MM_ERR_INVALID);
    /* Out of room, at every capacity short of the full length. */
    sample(&m, MM_MSG_HELLO);
    long full = mm_msg_encode(&m, g_buf, sizeof g_buf);
    assert_true(full > 0);
    for (size_t cap = 0; cap < (size_t)full; cap++) assert_int_equal(mm_msg_encode(&m, g_buf, cap), MM_ERR_LIMIT);
    assert_int_equal(mm_msg_encode(&m, g_buf, (size_t)full), full);
}

#define REJECT(...)                                                              \
    do {                                                                         \
        const uint8_t in_[] = {__VA_ARGS__};                                     \
        assert_int_equal(mm_mp_validate(in_, sizeof in_), MM_ERR_FORMAT);        \
    } while (0)
#define ACCEPT(...)                                                              \
    do {                                                                         \
        const uint8_t in_[] = {__VA_ARGS__};                                     \
        assert_int_equal(mm_mp_validate(in_, sizeof in_), MM_OK);                \
    } while (0)

static void test_validate_hostile(void **state)
{
    (void)state;
    REJECT(0xdd, 0xff, 0xff, 0xff, 0xff); /* array32 of 2^32-1 */
    REJECT(0xdf, 0xff, 0xff, 0xff, 0xff); /* map32 */
    REJECT(0xdb, 0xff, 0xff, 0xff, 0xff); /* str32 */
    REJECT(0xc6, 0xff, 0xff, 0xff, 0xff); /* bin32 */
    REJECT(0xc9, 0xff, 0xff, 0xff, 0xff, 0x01); /* ext32 */
    REJECT(0xdc, 0xff, 0xff);             /* array16 */
    REJECT(0xde, 0xff, 0xff);             /* map16 */
    REJECT(0xda, 0x00, 0x02, 'a');        /* str16 one short */
    REJECT(0xc4, 0x02, 0x00);             /* bin8 one short */
    REJECT(0xc7, 0x01, 0x05);             /* ext8 missing its byte */
    REJECT(0xd8, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0); /* fixext16 one short */
    REJECT(0xcf, 0, 0, 0, 0, 0, 0, 0);    /* uint64 truncated */
    REJECT(0xdd, 0, 0, 0);                /* length itself truncated */
    REJECT(0xc1);
    REJECT(0x91, 0xc1);
    REJECT(0x92, 0x01);                   /* truncated array */
    REJECT(0x81, 0x01);                   /* map missing its value */
    REJECT(0x01, 0x00);                   /* trailing byte */
    REJECT(0x90, 0x90);
    assert_int_equal(mm_mp_validate(NULL, 0), MM_ERR_FORMAT); /* empty */

    /* Depth: 4 nested containers pass, 5 and 10 do not. */
    ACCEPT(0x91, 0x91, 0x91, 0x91, 0x00);
    ACCEPT(0x91, 0x81, 0x00, 0x91, 0x90);
    REJECT(0x91, 0x91, 0x91, 0x91, 0x91, 0x00);
    REJECT(0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x00);
    REJECT(0x81, 0x00, 0x81, 0x00, 0x81, 0x00, 0x81, 0x00, 0x81, 0x00, 0x00);

    /* 10^4 nested arrays, and 10^6: no recursion, no stack growth. */
    for (size_t n = 10000; n <= 1000000; n *= 100) {
        uint8_t *deep = malloc(n + 1);
        assert_non_null(deep);
        memset(deep, 0x91, n);
        deep[n] = 0x00;
        assert_int_equal(mm_mp_validate(deep, n + 1), MM_ERR_FORMAT);
        free(deep);
    }

    /* Container limits: 1024 elements pass, 1025 do not. */
    uint8_t *big = calloc(5 + 2 * 1025, 1);
    assert_non_null(big);
    big[0] = 0xdc, big[1] = 0x04, big[2] = 0x00; /* array16 of 1024 nils-as-zero */
    assert_int_equal(mm_mp_validate(big, 3 + 1024), MM_OK);
    big[2] = 0x01;
    assert_int_equal(mm_mp_validate(big, 3 + 1025), MM_ERR_FORMAT);
    big[0] = 0xdd, big[1] = 0, big[2] = 0, big[3] = 0x04, big[4] = 0x01; /* array32 of 1025 */
    assert_int_equal(mm_mp_validate(big, 5 + 1025), MM_ERR_FORMAT);
    big[0] = 0xde, big[1] = 0x04, big[2] = 0x00; /* map16 of 1024 pairs */
    assert_int_equal(mm_mp_validate(big, 3 + 2048), MM_OK);
    big[2] = 0x01;
    assert_int_equal(mm_mp_validate(big, 3 + 2050), MM_ERR_FORMAT);
    free(big);

    /* A count larger than the bytes left, even below the container cap. */
    REJECT(0xdc, 0x00, 0x10, 0x00, 0x00);

    /* Every truncation of a real message is rejected, the whole accepted. */
    mm_msg m;
    sample(&m, MM_MSG_HELLO);
    long n = mm_msg_encode(&m, g_buf, sizeof g_buf);
    assert_true(n > 0);
    for (long i = 0; i < n; i++) assert_int_equal(mm_mp_validate(g_buf, (size_t)i), MM_ERR_FORMAT);
    assert_int_equal(mm_mp_validate(g_buf, (size_t)n), MM_OK);
    g_buf[n] = 0xc0;
    assert_int_equal(mm_mp_validate(g_buf, (size_t)n + 1), MM_ERR_FORMAT);
}

/* One object using every msgpack format is accepted, and msgpack-c agrees. */
static void test_validate_all_formats(void **state)
{
    (void)state;
    static uint8_t b[300000];
    size_t n = 0;
    const uint8_t head[] = {
        0xdc, 0x00, 40,                           /* array16 of 40 */
        0xc0, 0xc2, 0xc3,                         /* nil false true */
        0x00, 0x7f, 0xe0, 0xff,                   /* fixints */
        0xcc, 1, 0xcd, 1, 2, 0xce, 1, 2, 3, 4,    /* uint8/16/32 */
        0xcf, 1, 2, 3, 4, 5, 6, 7, 8,             /* uint64 */
        0xd0, 0x80, 0xd1, 1, 2, 0xd2, 1, 2, 3, 4, /* int8/16/32 */
        0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0,          /* int64 */
        0xca, 0x3f, 0x80, 0, 0,                   /* float32 1.0 */
        0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0,       /* float64 1.0 */
        0xa3, 'a', 'b', 'c',                      /* fixstr */
        0xd9, 2, 'h', 'i',                        /* str8 */
        0xda, 0, 1, 'x',                          /* str16 */
        0xdb, 0, 0, 0, 0,                         /* str32, empty */
        0xc4, 1, 9, 0xc5, 0, 2, 9, 9,             /* bin8, bin16 */
        0xc6, 0, 0, 0, 1, 9,                      /* bin32 */
        0x81, 0x01, 0x02,                         /* fixmap */
        0xde, 0, 1, 0xa1, 'k', 0x90,              /* map16 -> [] */
        0xdf, 0, 0, 0, 1, 0xc0, 0x80,             /* map32 nil -> {} */
        0x92, 0x01, 0x02,                         /* fixarray */
        0xdd, 0, 0, 0, 1, 0x01,                   /* array32 */
        0xd4, 1, 0xaa,                            /* fixext1 */
        0xd5, 1, 0xaa, 0xbb,                      /* fixext2 */
        0xd6, 1, 0, 0, 0, 0,                      /* fixext4 */
        0xd7, 1, 0, 0, 0, 0, 0, 0, 0, 0,          /* fixext8 */
        0xd8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* fixext16 */
        0xc7, 2, 5, 0xaa, 0xbb,                   /* ext8 */
        0xc8, 0, 1, 5, 0xaa,                      /* ext16 */
        0xc9, 0, 0, 0, 0, 5,                      /* ext32, empty */
    };
    memcpy(b, head, sizeof head);
    n = sizeof head;
    /* three large ones: str16 of 300, bin32 of 70000, str32 of 100000 */
    b[n++] = 0xda, b[n++] = 0x01, b[n++] = 0x2c;
    memset(b + n, 'q', 300), n += 300;
    b[n++] = 0xc6, b[n++] = 0, b[n++] = 0x01, b[n++] = 0x11, b[n++] = 0x70;
    memset(b + n, 7, 70000), n += 70000;
    b[n++] = 0xdb, b[n++] = 0, b[n++] = 0x01, b[n++] = 0x86, b[n++] = 0xa0;
    memset(b + n, 'z', 100000), n += 100000;
    assert_int_equal(mm_mp_validate(b, n), MM_OK);

    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    assert_int_equal(msgpack_unpack_next(&up, (const char *)b, n, &off), MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(off, n);
    assert_int_equal(up.data.type, MSGPACK_OBJECT_ARRAY);
    assert_int_equal(up.data.via.array.size, 40);
    msgpack_unpacked_destroy(&up);

    /* Not a message, though: decode names the problem. */
    mm_msg m;
    mm_error err;
    assert_int_equal(mm_msg_decode(&m, b, n, &err), MM_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "type"));
}

/* ---- Decode errors: crafted with msgpack-c's packer. ---- */

static msgpack_sbuffer g_sb;
static msgpack_packer g_pk;

static void begin(uint32_t n, uint64_t type)
{
    msgpack_sbuffer_clear(&g_sb);
    msgpack_pack_array(&g_pk, n);
    msgpack_pack_uint64(&g_pk, type);
}

static void pack_bin(size_t n)
{
    static const uint8_t zeros[MM_SIG_BYTES + 1];
    msgpack_pack_bin(&g_pk, n);
    msgpack_pack_bin_body(&g_pk, zeros, n);
}

static void pack_str(const char *s, size_t n)
{
    msgpack_pack_str(&g_pk, n);
    msgpack_pack_str_body(&g_pk, s, n);
}

static void pack_rec(size_t id_len, const char *addr, size_t addr_len)
{
    msgpack_pack_array(&g_pk, 4);
    pack_bin(id_len);
    pack_str(addr, addr_len);
    msgpack_pack_uint64(&g_pk, 1);
    pack_bin(MM_SIG_BYTES);
}

/* Decoding the buffer fails, and the message contains each of the words. */
static void expect_error(const char *w1, const char *w2)
{
    mm_msg m;
    mm_error err = {0};
    assert_int_equal(mm_mp_validate((const uint8_t *)g_sb.data, g_sb.size), MM_OK);
    int rc = mm_msg_decode(&m, (const uint8_t *)g_sb.data, g_sb.size, &err);
    if (rc == MM_OK) fail_msg("decoded, but expected an error naming '%s' '%s'", w1, w2);
    assert_int_equal(rc, MM_ERR_FORMAT);
    if (!strstr(err.msg, w1) || (w2 && !strstr(err.msg, w2))) fail_msg("error '%s' lacks '%s' / '%s'", err.msg, w1, w2);
}

static void expect_ok(void)
{
    mm_msg m;
    mm_error err = {0};
    int rc = mm_msg_decode(&m, (const uint8_t *)g_sb.data, g_sb.size, &err);
    if (rc != MM_OK) fail_msg("unexpected error: %s", err.msg);
}

static void test_decode_errors(void **state)
{
    (void)state;
    msgpack_sbuffer_init(&g_sb);
    msgpack_packer_init(&g_pk, &g_sb, msgpack_sbuffer_write);

    /* The exact message for an out-of-range encoding. */
    begin(5, MM_MSG_EXCH_REQ);
    msgpack_pack_uint32(&g_pk, 1);
    msgpack_pack_uint8(&g_pk, 7);
    msgpack_pack_uint64(&g_pk, 1);
    msgpack_pack_uint8(&g_pk, 0);
    {
        mm_msg m;
        mm_error err;
        assert_int_equal(mm_msg_decode(&m, (const uint8_t *)g_sb.data, g_sb.size, &err), MM_ERR_FORMAT);
        assert_string_equal(err.msg, "EXCH_REQ: field 'encoding' out of range (7)");
    }

    /* Arity. */
    begin(4, MM_MSG_EXCH_REQ);
    msgpack_pack_uint32(&g_pk, 1);
    msgpack_pack_uint8(&g_pk, 0);
    msgpack_pack_uint64(&g_pk, 1);
    expect_error("EXCH_REQ", "arity");
    begin(3, MM_MSG_PING);
    msgpack_pack_uint64(&g_pk, 1);
    msgpack_pack_uint64(&g_pk, 1);
    expect_error("PING", "arity");
    begin(2, MM_MSG_LEAVE);
    msgpack_pack_array(&g_pk, 3);
    pack_bin(MM_ID_BYTES);
    pack_str("a", 1);
    msgpack_pack_uint64(&g_pk, 1);
    expect_error("LEAVE", "'rec'");

    /* Top level. */
    msgpack_sbuffer_clear(&g_sb);
    msgpack_pack_array(&g_pk, 0);
    expect_error("message", NULL);
    msgpack_sbuffer_clear(&g_sb);
    msgpack_pack_uint8(&g_pk, 7);
    expect_error("message", NULL);
    begin(2, 99);
    msgpack_pack_uint8(&g_pk, 0);
    expect_error("type", "99");
    begin(2, 0);
    msgpack_pack_uint8(&g_pk, 0);
    expect_error("type", "0");
    msgpack_sbuffer_clear(&g_sb);
    msgpack_pack_array(&g_pk, 2);
    msgpack_pack_int8(&g_pk, -7);
    msgpack_pack_uint8(&g_pk, 0);
    expect_error("type", NULL);

    /* Wrong types. */
    begin(6, MM_MSG_HELLO);
    msgpack_pack_uint32(&g_pk, 1);
    pack_str("0123456789abcdef", MM_FP_BYTES); /* str where bin is expected */
    msgpack_pack_uint64(&g_pk, 1);
    msgpack_pack_uint32(&g_pk, 1);
    pack_rec(MM_ID_BYTES, "a:1", 3);
    expect_error("HELLO", "'fingerprint'");
    begin(5, MM_MSG_EXCH_ACK);
    msgpack_pack_int32(&g_pk, -1); /* negative where unsigned */
    msgpack_pack_uint8(&g_pk, 0);
    msgpack_pack_uint64(&g_pk, 1);
    msgpack_pack_uint8(&g_pk, 0);
    expect_error("EXCH_ACK", "'xid'");
    begin(2, MM_MSG_PONG);
    msgpack_pack_double(&g_pk, 1.0);
    expect_error("PONG", "'nonce'");
    /* REVOKE: an entry neither a serial nor a 32-byte key; too many entries. */
    begin(4, MM_MSG_REVOKE);
    msgpack_pack_uint64(&g_pk, 2);
    msgpack_pack_array(&g_pk, 2);
    msgpack_pack_uint64(&g_pk, 7);
    pack_str("k", 1);
    pack_bin(MM_SIG_BYTES);
    expect_error("REVOKE", "'entries[1]'");
    begin(4, MM_MSG_REVOKE);
    msgpack_pack_uint64(&g_pk, 2);
    msgpack_pack_array(&g_pk, 1);
    pack_bin(31);
    pack_bin(MM_SIG_BYTES);
    expect_error("REVOKE", "'entries[0]'");
    begin(4, MM_MSG_REVOKE);
    msgpack_pack_uint64(&g_pk, 2);
    msgpack_pack_array(&g_pk, MM_REVOKE_MAX + 1);
    for (int i = 0; i <= MM_REVOKE_MAX; i++) msgpack_pack_uint8(&g_pk, 1);
    pack_bin(MM_SIG_BYTES);
    expect_error("REVOKE", "'entries'");
    begin(4, MM_MSG_BUSY);
    msgpack_pack_uint32(&g_pk, 1);
    msgpack_pack_uint32(&g_pk, 1);
    pack_bin(3); /* bin where str is expected */
    expect_error("BUSY", "'text'");
    begin(2, MM_MSG_SHUFFLE);
    msgpack_pack_map(&g_pk, 0);
    expect_error("SHUFFLE", "'recs'");

    /* Out-of-range integers. */
    begin(5, MM_MSG_END);
    msgpack_pack_uint64(&g_pk, 1ull << 32); /* u32 field */
    msgpack_pack_uint64(&g_pk, 1);
    msgpack_pack_uint32(&g_pk, 1);
    msgpack_pack_uint8(&g_pk, 0);
    expect_error("END", "'xid'");
    begin(5, MM_MSG_END);
    msgpack_pack_uint32(&g_pk, 1);
    msgpack_pack_uint64(&g_pk, 1);
    msgpack_pack_uint32(&g_pk, 1);
    msgpack_pack_uint16(&g_pk, 256);
    expect_error("END", "'encoding'");
    begin(5, MM_MSG_EXCH_REQ);
    msgpack_pack_uint32(&g_pk, 1);
    msgpack_pack_uint8(&g_pk, 3);
    msgpack_pack_uint64(&g_pk, 1);
    msgpack_pack_uint8(&g_pk, 2);
    expect_error("EXCH_REQ", "'kind'");
    begin(6, MM_MSG_HELLO);
    msgpack_pack_uint64(&g_pk, UINT64_MAX);
    pack_bin(MM_FP_BYTES);
    msgpack_pack_uint64(&g_pk, 1);
    msgpack_pack_uint32(&g_pk, 1);
    pack_rec(MM_ID_BYTES, "a:1", 3);
    expect_error("HELLO", "'version'");

    /* Lengths of bins and strings. */
    begin(2, MM_MSG_LEAVE);
    pack_rec(MM_ID_BYTES - 1, "a:1", 3);
    expect_error("LEAVE", "'rec.id'");
    begin(2, MM_MSG_LEAVE);
    char longaddr[MM_ADDR_MAX];
    memset(longaddr, 'a', sizeof longaddr);
    pack_rec(MM_ID_BYTES, longaddr, MM_ADDR_MAX);
    expect_error("LEAVE", "'rec.addr'");
    begin(2, MM_MSG_LEAVE);
    pack_rec(MM_ID_BYTES, longaddr, MM_ADDR_MAX - 1);
    expect_ok();
    begin(2, MM_MSG_LEAVE);
    pack_rec(MM_ID_BYTES, "10.0.0.1\0:80", 12);
    expect_error("LEAVE", "NUL");
    begin(4, MM_MSG_ERROR);
    msgpack_pack_uint32(&g_pk, 1);
    msgpack_pack_uint32(&g_pk, 1);
    char text[129];
    memset(text, 't', sizeof text);
    pack_str(text, 128);
    expect_error("ERROR", "'text'");

    /* Shuffles: 32 fine, 33 refused; a bad record is named by index. */
    begin(2, MM_MSG_SHUFFLE_REPLY);
    msgpack_pack_array(&g_pk, MM_SHUFFLE_MAX);
    for (int i = 0; i < MM_SHUFFLE_MAX; i++) pack_rec(MM_ID_BYTES, "h:1", 3);
    expect_ok();
    begin(2, MM_MSG_SHUFFLE);
    msgpack_pack_array(&g_pk, MM_SHUFFLE_MAX + 1);
    for (int i = 0; i < MM_SHUFFLE_MAX + 1; i++) pack_rec(MM_ID_BYTES, "h:1", 3);
    expect_error("SHUFFLE", "'recs'");
    begin(2, MM_MSG_SHUFFLE);
    msgpack_pack_array(&g_pk, 3);
    pack_rec(MM_ID_BYTES, "h:1", 3);
    pack_rec(MM_ID_BYTES, "h:1", 3);
    pack_rec(MM_ID_BYTES, "h\0", 2);
    expect_error("SHUFFLE", "'recs[2].addr'");

    /* Unsigned fields in any encoding: int8 with a positive value, a
     * uint64-encoded small number. */
    msgpack_sbuffer_clear(&g_sb);
    const uint8_t odd[] = {0x92, 0xd0, 0x07, 0xcf, 0, 0, 0, 0, 0, 0, 0, 5};
    msgpack_sbuffer_write(&g_sb, (const char *)odd, sizeof odd);
    mm_msg m;
    mm_error err;
    assert_int_equal(mm_msg_decode(&m, (const uint8_t *)g_sb.data, g_sb.size, &err), MM_OK);
    assert_int_equal(m.type, MM_MSG_PING);
    assert_int_equal(m.u.ping.nonce, 5);

    /* decode runs the validator itself. */
    const uint8_t hostile[] = {0xdd, 0xff, 0xff, 0xff, 0xff};
    assert_int_equal(mm_msg_decode(&m, hostile, sizeof hostile, &err), MM_ERR_FORMAT);

    msgpack_sbuffer_destroy(&g_sb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_encode_refusals),
        cmocka_unit_test(test_validate_hostile),
        cmocka_unit_test(test_validate_all_formats),
        cmocka_unit_test(test_decode_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
