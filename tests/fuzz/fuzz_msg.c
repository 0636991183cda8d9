/* Fuzz target: CTRL message decoding. mm_mp_validate must accept or refuse
 * any input safely; what validates is decoded; what decodes must re-encode,
 * decode to the same message, and re-encode to the same bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t enc1[MM_FRAME_CTRL_MAX], enc2[MM_FRAME_CTRL_MAX];
    static mm_msg m1, m2;
    mm_error err;
    if (mm_mp_validate(data, size) != MM_OK) return 0;
    if (mm_msg_decode(&m1, data, size, &err) != MM_OK) return 0;
    long n1 = mm_msg_encode(&m1, enc1, sizeof enc1);
    if (n1 <= 0) abort();
    if (mm_mp_validate(enc1, (size_t)n1) != MM_OK) abort();
    if (mm_msg_decode(&m2, enc1, (size_t)n1, &err) != MM_OK) abort();
    if (memcmp(&m1, &m2, sizeof m1) != 0) abort();
    long n2 = mm_msg_encode(&m2, enc2, sizeof enc2);
    if (n2 != n1 || memcmp(enc1, enc2, (size_t)n1) != 0) abort();
    return 0;
}
