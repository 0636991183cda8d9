#include "encode.h"

#include <math.h>
#include <string.h>

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float float_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

uint16_t mm_f32_to_f16(float f)
{
    uint32_t x = bits_of(f), sign = (x >> 16) & 0x8000u, mag = x & 0x7fffffffu;
    if (mag >= 0x477ff000u) return (uint16_t)(sign | 0x7bffu); /* >= 65520 (and NaN/Inf): largest finite */
    if (mag < 0x38800000u) {                                   /* below the smallest normal half: subnormal */
        if (mag < 0x33000000u) return (uint16_t)sign;          /* rounds to zero */
        uint32_t m = (mag & 0x7fffffu) | 0x800000u;
        int shift = 126 - (int)(mag >> 23); /* value / 2^-24, exponent 102..112: shift 14..24 */
        uint32_t half = m >> shift, rem = m & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1u))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t h = ((mag - 0x38000000u) >> 13), rem = mag & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
    return (uint16_t)(sign | h);
}

float mm_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0) { /* zero or subnormal: man * 2^-24 */
        float v = (float)man * 0x1.0p-24f;
        return sign ? -v : v;
    }
    if (exp == 31) return float_of(sign | 0x7f800000u | (man << 13));
    return float_of(sign | ((exp + 112u) << 23) | (man << 13));
}

uint16_t mm_f32_to_bf16(float f)
{
    uint32_t x = bits_of(f);
    if ((x & 0x7f800000u) == 0x7f800000u) return (uint16_t)(((x >> 16) & 0x8000u) | 0x7f7fu);
    uint32_t r = x + 0x7fffu + ((x >> 16) & 1u);
    if ((r & 0x7f800000u) == 0x7f800000u) return (uint16_t)(((x >> 16) & 0x8000u) | 0x7f7fu); /* saturate */
    return (uint16_t)(r >> 16);
}

float mm_bf16_to_f32(uint16_t h) { return float_of((uint32_t)h << 16); }

size_t mm_enc_bytes(uint8_t enc, size_t n)
{
    switch (enc) {
    case MM_ENC_F32: return 4 * n;
    case MM_ENC_F16:
    case MM_ENC_BF16: return 2 * n;
    case MM_ENC_Q8: return 4 + n;
    }
    return 0;
}

size_t mm_enc_values(uint8_t enc, size_t bytes)
{
    switch (enc) {
    case MM_ENC_F32: return bytes % 4 ? 0 : bytes / 4;
    case MM_ENC_F16:
    case MM_ENC_BF16: return bytes % 2 ? 0 : bytes / 2;
    case MM_ENC_Q8: return bytes > 4 ? bytes - 4 : 0;
    }
    return 0;
}

static void put_le16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static uint16_t get_le16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static void put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

size_t mm_enc_encode(uint8_t enc, const float *src, size_t n, uint8_t *out)
{
    switch (enc) {
    case MM_ENC_F32:
        for (size_t i = 0; i < n; i++) put_le32(out + 4 * i, bits_of(src[i]));
        return 4 * n;
    case MM_ENC_F16:
        for (size_t i = 0; i < n; i++) put_le16(out + 2 * i, mm_f32_to_f16(src[i]));
        return 2 * n;
    case MM_ENC_BF16:
        for (size_t i = 0; i < n; i++) put_le16(out + 2 * i, mm_f32_to_bf16(src[i]));
        return 2 * n;
    case MM_ENC_Q8: {
        float mx = 0.0f;
        for (size_t i = 0; i < n; i++) mx = fabsf(src[i]) > mx ? fabsf(src[i]) : mx;
        float s = mx > 0.0f ? mx / 127.0f : 1.0f;
        put_le32(out, bits_of(s));
        /* Round to nearest even by adding and removing 1.5 * 2^23 (exact for
         * |y| < 2^22; here |y| <= 127): what nearbyintf does in the default
         * rounding mode, but inline, so the loop vectorises. */
        const float magic = 12582912.0f;
        for (size_t i = 0; i < n; i++) {
            float q = (src[i] / s + magic) - magic;
            out[4 + i] = (uint8_t)(int8_t)(q > 127.0f ? 127.0f : q < -127.0f ? -127.0f : q);
        }
        return 4 + n;
    }
    }
    return 0;
}

int mm_enc_check_finite(const float *v, size_t n)
{
    /* An all-ones exponent is Inf or NaN. An integer OR-reduction vectorises. */
    uint32_t bad = 0;
    for (size_t i = 0; i < n; i++) bad |= (uint32_t)((bits_of(v[i]) & 0x7f800000u) == 0x7f800000u);
    return bad ? MM_ERR_FORMAT : 0;
}

int mm_enc_decode(uint8_t enc, const uint8_t *in, size_t bytes, float *dst)
{
    size_t n = mm_enc_values(enc, bytes);
    if (n == 0 || n > MM_CHUNK_VALUES) return MM_ERR_FORMAT;
    switch (enc) {
    case MM_ENC_F32:
        for (size_t i = 0; i < n; i++) dst[i] = float_of(get_le32(in + 4 * i));
        return mm_enc_check_finite(dst, n);
    case MM_ENC_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = get_le16(in + 2 * i);
            if ((h & 0x7c00u) == 0x7c00u) return MM_ERR_FORMAT;
            dst[i] = mm_f16_to_f32(h);
        }
        return 0;
    case MM_ENC_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = get_le16(in + 2 * i);
            if ((h & 0x7f80u) == 0x7f80u) return MM_ERR_FORMAT;
            dst[i] = mm_bf16_to_f32(h);
        }
        return 0;
    case MM_ENC_Q8: {
        float s = float_of(get_le32(in));
        if (!(s > 0.0f) || !isfinite(s) || s > 0x1.0p64f) return MM_ERR_FORMAT;
        for (size_t i = 0; i < n; i++) dst[i] = (float)(int8_t)in[4 + i] * s;
        return mm_enc_check_finite(dst, n);
    }
    }
    return MM_ERR_FORMAT;
}
