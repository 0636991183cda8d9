/* Fuzz target: mm_idx_parse over arbitrary bytes must never crash, and a
 * header it accepts must describe data that lies inside the buffer. */
#include <stdint.h>
#include <stdlib.h>

#include "data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mm_idx idx;
    mm_error err;
    if (mm_idx_parse(&idx, data, size, "fuzz", &err) != MM_OK) return 0;
    /* Touch every byte the parser claims (ASan flags any read outside). */
    uint64_t product = 1, sum = 0;
    for (unsigned i = 0; i < idx.ndim; i++) product *= idx.dims[i];
    if (product != idx.bytes || idx.data + idx.bytes != data + size) abort();
    for (size_t i = 0; i < idx.bytes; i++) sum += idx.data[i];
    if (sum > 255 * (uint64_t)idx.bytes) abort();
    return 0;
}
