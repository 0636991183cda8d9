/* Checkpoints in the safetensors format.
 *
 * File = u64 little-endian header length N, N bytes of JSON header, raw data.
 * The header maps each tensor name to {"dtype":"F32","shape":[...],
 * "data_offsets":[begin,end]} and "__metadata__" to string values: format
 * ("murmur-checkpoint"), version, model, fingerprint, step, samples, seed.
 * Python's safetensors (or ten lines of numpy) reads it.
 *
 * Writing is atomic: <path>.tmp.<pid>, fsync, rename over path, fsync of the
 * directory. A crash leaves either the old file or the new one. */
#ifndef MM_CHECKPOINT_H
#define MM_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "layout.h"
#include "mm_error.h"

#define MM_CKPT_VERSION 1
#define MM_CKPT_MAX_HEADER (1u << 20) /* header bytes we accept */

typedef struct {
    char model[32];
    char fingerprint[2 * MM_FINGERPRINT_BYTES + 1];
    uint64_t step;
    uint64_t samples;
    uint64_t seed;
    uint32_t version;
} mm_ckpt_meta;

/* Save the tensors of `layout` from the flat buffer `params` (host memory).
 * meta->model and meta->fingerprint are taken from the layout. */
int mm_checkpoint_save(const char *path, const mm_layout *layout, const float *params, const mm_ckpt_meta *meta,
                       mm_error *err);

/* Read only the metadata (to learn which model to build). */
int mm_checkpoint_read_meta(const char *path, mm_ckpt_meta *meta, mm_error *err);

/* Load into params (layout->total floats, host memory). Validates the header
 * bounds, every offset, dtype, that every tensor of the layout is present
 * with its shape, no extra tensors, and the fingerprint. On error params is
 * left untouched. */
int mm_checkpoint_load(const char *path, const mm_layout *layout, float *params, mm_ckpt_meta *meta, mm_error *err);

/* The same validation over a file already in memory (fuzz target, tests).
 * layout may be NULL: then only the container is validated and meta filled. */
int mm_checkpoint_parse(const uint8_t *buf, size_t len, const mm_layout *layout, float *params, mm_ckpt_meta *meta,
                        const char *what, mm_error *err);

#endif
