/* Wire encodings of parameter vectors: conversions against the compiler's
 * own binary16 and exact bf16 rounding, and every refusal of a bad chunk. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <string.h>

#include "encode.h"
#include "mm_rng.h"

static float from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Every float whose magnitude a half can hold, sampled densely across all
 * exponents (subnormal halves included), against _Float16's rounding. */
static void test_f16_matches_compiler(void **state)
{
    (void)state;
    mm_rng r;
    mm_rng_seed(&r, 1);
    for (uint32_t exp = 90; exp < 143; exp++)
        for (int k = 0; k < 4000; k++) {
            uint32_t bits = exp << 23 | (uint32_t)(mm_rng_u64(&r) & 0x7fffff);
            if (k & 1) bits |= 0x80000000u;
            float x = from_bits(bits);
            if (fabsf(x) >= 65504.0f) continue;
            float want = (float)(_Float16)x, got = mm_f16_to_f32(mm_f32_to_f16(x));
            if (got != want && !(got == 0.0f && want == 0.0f)) fail_msg("f16(%a) = %a, want %a", (double)x, (double)got, (double)want);
        }
}

static void test_f16_saturates(void **state)
{
    (void)state;
    assert_true(mm_f16_to_f32(mm_f32_to_f16(1e9f)) == 65504.0f);
    assert_true(mm_f16_to_f32(mm_f32_to_f16(-1e9f)) == -65504.0f);
    assert_true(mm_f16_to_f32(mm_f32_to_f16(INFINITY)) == 65504.0f); /* never an infinity on the wire */
    assert_true(mm_f16_to_f32(mm_f32_to_f16(1e-30f)) == 0.0f);
}

static void test_bf16_rounding(void **state)
{
    (void)state;
    mm_rng r;
    mm_rng_seed(&r, 2);
    for (int k = 0; k < 200000; k++) {
        uint32_t bits = (uint32_t)mm_rng_u64(&r);
        if ((bits & 0x7f800000u) >= 0x7f000000u) continue; /* near overflow / non-finite: saturation */
        float x = from_bits(bits);
        /* exact reference: the nearest of the two bf16 neighbours, ties to even */
        uint32_t lo = bits & 0xffff0000u, hi = lo + 0x10000u;
        double dl = fabs((double)x - (double)from_bits(lo)), dh = fabs((double)from_bits(hi) - (double)x);
        uint32_t want = dl < dh ? lo : dh < dl ? hi : ((lo >> 16) & 1 ? hi : lo);
        float got = mm_bf16_to_f32(mm_f32_to_bf16(x));
        assert_true(got == from_bits(want));
    }
    assert_true(mm_bf16_to_f32(mm_f32_to_bf16(INFINITY)) == from_bits(0x7f7f0000u));
}

static void test_round_trips_and_errors(void **state)
{
    (void)state;
    float v[1000], back[1000];
    uint8_t buf[8 * 1000];
    for (int i = 0; i < 1000; i++) v[i] = sinf((float)i) * 3.0f;
    const float tol[4] = {0.0f, 2e-3f, 1.6e-2f, 3.0f / 127.0f};
    for (uint8_t enc = 0; enc < 4; enc++) {
        size_t n = mm_enc_encode(enc, v, 1000, buf);
        assert_int_equal(n, mm_enc_bytes(enc, 1000));
        assert_int_equal(mm_enc_values(enc, n), 1000);
        assert_int_equal(mm_enc_decode(enc, buf, n, back), 0);
        for (int i = 0; i < 1000; i++) assert_true(fabsf(back[i] - v[i]) <= tol[enc] * (enc == 3 ? 1.0f : fabsf(v[i])) + 1e-7f);
    }
    /* A non-finite value is refused in every encoding. */
    uint8_t b[64];
    uint32_t nan = 0x7fc00000u;
    memcpy(b, &nan, 4);
    assert_int_equal(mm_enc_decode(MM_ENC_F32, b, 4, back), MM_ERR_FORMAT);
    b[0] = 0x00, b[1] = 0x7c; /* f16 +Inf */
    assert_int_equal(mm_enc_decode(MM_ENC_F16, b, 2, back), MM_ERR_FORMAT);
    b[0] = 0x80, b[1] = 0x7f; /* bf16 +Inf */
    assert_int_equal(mm_enc_decode(MM_ENC_BF16, b, 2, back), MM_ERR_FORMAT);
    const float bad_scale[] = {NAN, INFINITY, 0.0f, -1.0f, 1e30f};
    for (int i = 0; i < 5; i++) {
        memcpy(b, &bad_scale[i], 4);
        b[4] = 1;
        assert_int_equal(mm_enc_decode(MM_ENC_Q8, b, 5, back), MM_ERR_FORMAT);
    }
    /* Sizes that hold no whole number of values. */
    assert_int_equal(mm_enc_decode(MM_ENC_F32, b, 3, back), MM_ERR_FORMAT);
    assert_int_equal(mm_enc_decode(MM_ENC_F16, b, 0, back), MM_ERR_FORMAT);
    assert_int_equal(mm_enc_decode(MM_ENC_Q8, b, 4, back), MM_ERR_FORMAT);
    /* -0.0 and subnormals are fine in f32. */
    float ok[2] = {-0.0f, 1e-40f};
    assert_int_equal(mm_enc_check_finite(ok, 2), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16_matches_compiler),
        cmocka_unit_test(test_f16_saturates),
        cmocka_unit_test(test_bf16_rounding),
        cmocka_unit_test(test_round_trips_and_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
