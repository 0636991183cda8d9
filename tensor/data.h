/* Datasets in the IDX format (MNIST, Fashion-MNIST), shards and batches.
 *
 * Files may be gzip-compressed or plain (zlib reads both). Images stay in
 * memory as bytes (47 MB for Fashion-MNIST's training set instead of 188 MB
 * of floats); a batch is converted to float32 as it is drawn. */
#ifndef MM_DATA_H
#define MM_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "mm_error.h"

#define MM_DATA_DEFAULT_DIR "/usr/share/datasets/fashion-mnist"
#define MM_IDX_MAX_ITEMS 10000000u /* refuse headers that claim more */

/* One IDX file parsed from memory. type is the IDX element type (0x08 = u8). */
typedef struct {
    uint8_t type;
    uint8_t ndim;
    uint32_t dims[4];
    const uint8_t *data; /* points into the caller's buffer */
    size_t bytes;
} mm_idx;

/* Parse an in-memory IDX file (already decompressed). Only unsigned-byte
 * tensors of 1 to 4 dimensions are accepted. what names the input in errors. */
int mm_idx_parse(mm_idx *out, const uint8_t *buf, size_t len, const char *what, mm_error *err);

/* Read a whole IDX file (gzip or plain) into *buf (malloc'd, caller frees). */
int mm_idx_read_file(const char *path, uint8_t **buf, size_t *len, mm_error *err);

typedef struct {
    uint32_t n, rows, cols; /* examples and image size */
    uint8_t *images;        /* n * rows * cols, row-major */
    uint8_t *labels;        /* n, each < 10 */
} mm_dataset;

/* Load <dir>/<split>-images-idx3-ubyte(.gz) and <split>-labels-idx1-ubyte(.gz),
 * split being "train" or "t10k". Checks magic, sizes, that the counts agree
 * and that every label is < 10. */
int mm_dataset_load(mm_dataset *ds, const char *dir, const char *split, mm_error *err);
void mm_dataset_free(mm_dataset *ds);

typedef enum { MM_PART_IID, MM_PART_LABEL } mm_partition;

/* The indices of shard `shard` of `nshards` (0-based). IID: a seeded
 * permutation cut into equal parts. LABEL: sorted by label then cut, so each
 * shard sees few classes (non-iid). *idx is malloc'd. */
int mm_dataset_shard(const mm_dataset *ds, uint32_t shard, uint32_t nshards, mm_partition part, uint64_t seed,
                     uint32_t **idx, uint32_t *count, mm_error *err);
/* LABEL with a mix: only the fraction `skew` (in (0, 1]) of each shard comes
 * from its own sorted pieces; the rest of every piece is pooled, shuffled and
 * dealt evenly, so a shard holds mostly its few classes and a little of all.
 * skew = 1 is mm_dataset_shard's LABEL; skew is ignored for IID. Still a
 * partition: every example lands in exactly one shard. */
int mm_dataset_shard_mixed(const mm_dataset *ds, uint32_t shard, uint32_t nshards, mm_partition part, double skew,
                           uint64_t seed, uint32_t **idx, uint32_t *count, mm_error *err);

/* Draws batches over a set of indices, reshuffled every epoch from a seed. */
typedef struct {
    const mm_dataset *ds;
    uint32_t *order; /* owned */
    uint32_t count;
    uint32_t pos;
    uint32_t epoch;
    uint64_t seed;
    float table[256]; /* pixel value -> input value */
} mm_loader;

/* idx may be NULL for the whole dataset; it is copied. */
int mm_loader_init(mm_loader *ld, const mm_dataset *ds, const uint32_t *idx, uint32_t count, uint64_t seed);
void mm_loader_free(mm_loader *ld);
/* Inputs become (pixel/255 - mean) / std (default mean 0, std 1). */
void mm_loader_set_normalization(mm_loader *ld, float mean, float std);
/* Jump to the start of epoch `epoch` (resuming from a checkpoint). */
void mm_loader_start_epoch(mm_loader *ld, uint32_t epoch);
/* Fill up to max examples: x gets rows*cols floats each (pixel/255, then
 * normalised as set); y the
 * labels. Returns how many were filled; 0 means the epoch is over, and the
 * next call starts the next epoch with a fresh shuffle. */
uint32_t mm_loader_next(mm_loader *ld, float *x, int32_t *y, uint32_t max);
/* The same draw as mm_loader_next, as dataset indices into idx[max] instead of converted examples
 * (for a backend that gathers batches itself, mm_backend_ops.gather_u8). */
uint32_t mm_loader_next_indices(mm_loader *ld, uint32_t *idx, uint32_t max);

#endif
