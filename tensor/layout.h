/* The layout of a flat parameter vector: named tensors at offsets.
 *
 * Parameters, gradients and optimizer state of a model each live in one flat
 * float32 buffer; this table says where each named tensor lies in it. Offsets
 * are aligned to MM_LAYOUT_ALIGN floats so every tensor starts on a cache line;
 * the gaps are zero and stay zero. The fingerprint is a hash of the table
 * (names, shapes, offsets, the model name), never of the values: two nodes
 * average only when their fingerprints match. */
#ifndef MM_LAYOUT_H
#define MM_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#define MM_LAYOUT_MAX 32
#define MM_LAYOUT_MAX_DIM 4
#define MM_LAYOUT_NAME 48
#define MM_LAYOUT_ALIGN 16 /* floats */
#define MM_FINGERPRINT_BYTES 16

typedef struct {
    char name[MM_LAYOUT_NAME];
    uint32_t ndim;
    uint32_t shape[MM_LAYOUT_MAX_DIM];
    size_t offset; /* in floats */
    size_t count;  /* product of shape */
} mm_tensor_info;

typedef struct {
    char model[32];
    uint32_t n;
    mm_tensor_info t[MM_LAYOUT_MAX];
    size_t total; /* floats in the flat buffer, padding included */
    uint8_t fingerprint[MM_FINGERPRINT_BYTES];
} mm_layout;

void mm_layout_init(mm_layout *l, const char *model);
/* Append a tensor; returns its index, or -1 if the table is full or a
 * dimension is zero. */
int mm_layout_add(mm_layout *l, const char *name, uint32_t ndim, const uint32_t *shape);
/* Compute the fingerprint; call after the last add. */
void mm_layout_finish(mm_layout *l);
/* Index of the tensor called name, or -1. */
int mm_layout_find(const mm_layout *l, const char *name);
/* 32 lowercase hex digits and a NUL into out[33]. */
void mm_layout_fingerprint_hex(const mm_layout *l, char out[2 * MM_FINGERPRINT_BYTES + 1]);

#endif
