/* Vector encodings on the wire, and the checks a received chunk must pass.
 *
 *   F32   4 bytes per value, little-endian IEEE binary32 (bit-exact)
 *   F16   2 bytes, IEEE binary16, round to nearest even; overflow saturates
 *         to the largest finite half (never produces an infinity)
 *   BF16  2 bytes, the top half of binary32, round to nearest even,
 *         saturating likewise
 *   Q8    per chunk: binary32 scale s (> 0, finite), then one signed byte q
 *         per value; value = q * s; s = max|x| / 127 (1 if the chunk is 0)
 *
 * A chunk is at most MM_CHUNK_VALUES values; the decoders refuse any
 * non-finite value (an all-ones exponent) or a bad scale. */
#ifndef MM_ENCODE_H
#define MM_ENCODE_H

#include <stddef.h>
#include <stdint.h>

#include "wire.h"

#define MM_CHUNK_VALUES 65536u

/* Bytes that n values take in encoding enc (one chunk). */
size_t mm_enc_bytes(uint8_t enc, size_t n);
/* Values carried by a chunk of `bytes` bytes, or 0 if no whole number. */
size_t mm_enc_values(uint8_t enc, size_t bytes);
/* Encode n values of src (n <= MM_CHUNK_VALUES) into out; returns bytes. */
size_t mm_enc_encode(uint8_t enc, const float *src, size_t n, uint8_t *out);
/* Decode a chunk into dst; returns 0, or MM_ERR_FORMAT on a non-finite
 * value or bad scale (dst may then be partly written). */
int mm_enc_decode(uint8_t enc, const uint8_t *in, size_t bytes, float *dst);
/* 0 if every value is finite, else MM_ERR_FORMAT. */
int mm_enc_check_finite(const float *v, size_t n);

uint16_t mm_f32_to_f16(float f);
float mm_f16_to_f32(uint16_t h);
uint16_t mm_f32_to_bf16(float f);
float mm_bf16_to_f32(uint16_t h);

#endif
