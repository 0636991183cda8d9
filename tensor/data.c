/* IDX parsing and loading, dataset shards and a shuffling batch loader. */
#include "data.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "mm_rng.h"

/* Upper bound on the bytes of data an IDX header may claim. */
#define IDX_MAX_BYTES ((uint64_t)MM_IDX_MAX_ITEMS * 4096u)
/* Upper bound on a whole (decompressed) file read from disk. */
#define IDX_MAX_FILE ((size_t)512 << 20)
#define IDX_TYPE_U8 0x08
#define NUM_CLASSES 10

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

int mm_idx_parse(mm_idx *out, const uint8_t *buf, size_t len, const char *what, mm_error *err)
{
    if (!what) what = "IDX input";
    if (!out || (!buf && len)) return mm_error_set(err, MM_ERR_INVALID, "%s: no output or no input buffer", what);
    memset(out, 0, sizeof *out);
    if (len < 4)
        return mm_error_set(err, MM_ERR_FORMAT, "%s: too short for an IDX header: %zu bytes, need at least 4", what,
                            len);
    if (buf[0] != 0 || buf[1] != 0)
        return mm_error_set(err, MM_ERR_FORMAT,
                            "%s: not an IDX file: magic starts with 0x%02x 0x%02x, expected 0x00 0x00", what, buf[0],
                            buf[1]);
    uint8_t type = buf[2], ndim = buf[3];
    if (type != IDX_TYPE_U8)
        return mm_error_set(err, MM_ERR_FORMAT, "%s: unsupported IDX element type 0x%02x (only 0x08, unsigned byte)",
                            what, type);
    if (ndim < 1 || ndim > 4)
        return mm_error_set(err, MM_ERR_FORMAT, "%s: unsupported IDX rank %u (must be 1 to 4)", what, ndim);
    size_t header = 4 + 4 * (size_t)ndim;
    if (len < header)
        return mm_error_set(err, MM_ERR_FORMAT, "%s: truncated header: %u dimensions need %zu bytes, file has %zu",
                            what, ndim, header, len);

    /* Product of the dims, refusing anything over the bound (so no overflow).
     * Zero dims count as 1 in the bound, so that 0 x 2^32 x 2^32 (no data, but
     * an absurd shape for anyone multiplying rows by cols) is refused too. */
    uint64_t limit = IDX_MAX_BYTES < SIZE_MAX ? IDX_MAX_BYTES : SIZE_MAX;
    uint64_t total = 1, bound = 1;
    for (unsigned i = 0; i < ndim; i++) {
        uint32_t d = be32(buf + 4 + 4 * i);
        out->dims[i] = d;
        if (d != 0 && bound > limit / d) {
            memset(out, 0, sizeof *out);
            return mm_error_set(err, MM_ERR_LIMIT,
                                "%s: header claims too much data: dimension %u is %u, the product exceeds the limit of "
                                "%llu bytes",
                                what, i, d, (unsigned long long)limit);
        }
        total *= d;
        if (d != 0) bound *= d;
    }
    if (out->dims[0] > MM_IDX_MAX_ITEMS) {
        uint32_t d0 = out->dims[0];
        memset(out, 0, sizeof *out);
        return mm_error_set(err, MM_ERR_LIMIT, "%s: header claims %u items, more than the limit of %u", what, d0,
                            MM_IDX_MAX_ITEMS);
    }
    size_t have = len - header;
    if (have != total) {
        memset(out, 0, sizeof *out);
        if (have < total)
            return mm_error_set(err, MM_ERR_FORMAT, "%s: truncated: header says %llu bytes of data, file has %zu",
                                what, (unsigned long long)total, have);
        return mm_error_set(err, MM_ERR_FORMAT, "%s: %zu bytes of trailing garbage after the %llu bytes of data", what,
                            have - (size_t)total, (unsigned long long)total);
    }
    out->type = type;
    out->ndim = ndim;
    out->data = buf + header;
    out->bytes = (size_t)total;
    return MM_OK;
}

/* zlib's last error for gz, without the "path: " it puts in front. */
static const char *gz_message(gzFile gz, const char *path, int *code)
{
    const char *msg = gzerror(gz, code);
    if (!msg || !*msg) return "unknown zlib error";
    size_t n = strlen(path);
    if (strncmp(msg, path, n) == 0 && msg[n] == ':' && msg[n + 1] == ' ') msg += n + 2;
    return msg;
}

int mm_idx_read_file(const char *path, uint8_t **buf, size_t *len, mm_error *err)
{
    if (!path || !buf || !len) return mm_error_set(err, MM_ERR_INVALID, "mm_idx_read_file: NULL argument");
    *buf = NULL;
    *len = 0;
    errno = 0;
    gzFile gz = gzopen(path, "rb");
    if (!gz) {
        int e = errno;
        return mm_error_set(err, e == ENOMEM ? MM_ERR_NOMEM : MM_ERR_IO, "%s: cannot open: %s", path,
                            e ? strerror(e) : "gzopen failed");
    }

    /* Grow the buffer by doubling; one byte past the limit tells "too big". */
    size_t cap = 1 << 20, n = 0;
    uint8_t *data = malloc(cap);
    int rc = MM_OK;
    if (!data) {
        rc = mm_error_set(err, MM_ERR_NOMEM, "%s: out of memory reading the file", path);
        goto fail;
    }
    for (;;) {
        if (n == cap) {
            if (cap > IDX_MAX_FILE) {
                rc = mm_error_set(err, MM_ERR_LIMIT, "%s: file is larger than the limit of %zu bytes (decompressed)",
                                  path, IDX_MAX_FILE);
                goto fail;
            }
            size_t ncap = cap * 2 > IDX_MAX_FILE ? IDX_MAX_FILE + 1 : cap * 2;
            uint8_t *nb = realloc(data, ncap);
            if (!nb) {
                rc = mm_error_set(err, MM_ERR_NOMEM, "%s: out of memory reading the file (%zu bytes)", path, ncap);
                goto fail;
            }
            data = nb;
            cap = ncap;
        }
        int got = gzread(gz, data + n, (unsigned)(cap - n));
        if (got < 0) {
            int zerr;
            const char *msg = gz_message(gz, path, &zerr);
            if (zerr == Z_ERRNO)
                rc = mm_error_set(err, MM_ERR_IO, "%s: cannot read: %s", path, strerror(errno));
            else
                rc = mm_error_set(err, MM_ERR_FORMAT, "%s: corrupt gzip stream: %s", path, msg);
            goto fail;
        }
        if (got == 0) break;
        n += (size_t)got;
    }
    /* A gzip stream cut short may end the loop quietly: ask zlib. */
    int zerr;
    const char *msg = gz_message(gz, path, &zerr);
    if (zerr != Z_OK) {
        rc = mm_error_set(err, MM_ERR_FORMAT, "%s: corrupt or truncated gzip stream: %s", path, msg);
        goto fail;
    }
    int crc = gzclose_r(gz);
    gz = NULL;
    if (crc != Z_OK) {
        rc = mm_error_set(err, MM_ERR_FORMAT, "%s: corrupt or truncated gzip stream (zlib error %d at close)", path,
                          crc);
        goto fail;
    }
    *buf = data;
    *len = n;
    return MM_OK;

fail:
    if (gz) gzclose_r(gz);
    free(data);
    return rc;
}

/* <dir>/<split>-<kind>.gz if it exists, else the name without .gz. */
static int find_file(char *out, size_t size, const char *dir, const char *split, const char *kind, mm_error *err)
{
    int w = snprintf(out, size, "%s/%s-%s.gz", dir, split, kind);
    if (w < 0 || (size_t)w >= size)
        return mm_error_set(err, MM_ERR_INVALID, "%s: data directory path too long", dir);
    if (access(out, F_OK) == 0) return MM_OK;
    out[w - 3] = '\0';
    if (access(out, F_OK) == 0) return MM_OK;
    return mm_error_set(err, MM_ERR_IO, "%s: no such file (nor %s.gz)", out, out);
}

/* Read and parse one file; on success *raw holds the bytes idx points into. */
static int load_idx(const char *path, mm_idx *idx, uint8_t **raw, mm_error *err)
{
    size_t len;
    int rc = mm_idx_read_file(path, raw, &len, err);
    if (rc) return rc;
    rc = mm_idx_parse(idx, *raw, len, path, err);
    if (rc) {
        free(*raw);
        *raw = NULL;
    }
    return rc;
}

/* Move idx's data to the front of raw and shrink it: raw becomes the array. */
static uint8_t *keep_data(uint8_t *raw, const mm_idx *idx)
{
    size_t off = (size_t)(idx->data - raw);
    memmove(raw, raw + off, idx->bytes);
    uint8_t *shrunk = realloc(raw, idx->bytes ? idx->bytes : 1);
    return shrunk ? shrunk : raw;
}

int mm_dataset_load(mm_dataset *ds, const char *dir, const char *split, mm_error *err)
{
    if (!ds || !dir || !split) return mm_error_set(err, MM_ERR_INVALID, "mm_dataset_load: NULL argument");
    memset(ds, 0, sizeof *ds);
    char ipath[4096], lpath[4096];
    int rc = find_file(ipath, sizeof ipath, dir, split, "images-idx3-ubyte", err);
    if (rc) return rc;
    rc = find_file(lpath, sizeof lpath, dir, split, "labels-idx1-ubyte", err);
    if (rc) return rc;

    mm_idx im, lb;
    uint8_t *iraw = NULL, *lraw = NULL;
    rc = load_idx(ipath, &im, &iraw, err);
    if (rc) return rc;
    rc = load_idx(lpath, &lb, &lraw, err);
    if (rc) goto fail;
    if (im.ndim != 3) {
        rc = mm_error_set(err, MM_ERR_FORMAT, "%s: images must have 3 dimensions (n, rows, cols), file has %u",
                          ipath, im.ndim);
        goto fail;
    }
    if (lb.ndim != 1) {
        rc = mm_error_set(err, MM_ERR_FORMAT, "%s: labels must have 1 dimension (n), file has %u", lpath, lb.ndim);
        goto fail;
    }
    if (im.dims[0] != lb.dims[0]) {
        rc = mm_error_set(err, MM_ERR_FORMAT, "%s has %u images but %s has %u labels", ipath, im.dims[0], lpath,
                          lb.dims[0]);
        goto fail;
    }
    if (im.dims[0] == 0 || im.dims[1] == 0 || im.dims[2] == 0) {
        rc = mm_error_set(err, MM_ERR_FORMAT, "%s: empty dataset (%u x %u x %u)", ipath, im.dims[0], im.dims[1],
                          im.dims[2]);
        goto fail;
    }
    for (uint32_t i = 0; i < lb.dims[0]; i++) {
        if (lb.data[i] >= NUM_CLASSES) {
            rc = mm_error_set(err, MM_ERR_FORMAT, "%s: label %u at index %u is out of range (must be < %d)", lpath,
                              lb.data[i], i, NUM_CLASSES);
            goto fail;
        }
    }
    ds->n = im.dims[0];
    ds->rows = im.dims[1];
    ds->cols = im.dims[2];
    ds->images = keep_data(iraw, &im);
    ds->labels = keep_data(lraw, &lb);
    return MM_OK;

fail:
    free(iraw);
    free(lraw);
    return rc;
}

void mm_dataset_free(mm_dataset *ds)
{
    if (!ds) return;
    free(ds->images);
    free(ds->labels);
    memset(ds, 0, sizeof *ds);
}

/* Start of part p when n items are cut into `parts` near-equal parts
 * (parts < 2^32, so n * p fits in 64 bits). */
static uint32_t part_start(uint32_t n, uint64_t p, uint64_t parts) { return (uint32_t)((uint64_t)n * p / parts); }

int mm_dataset_shard(const mm_dataset *ds, uint32_t shard, uint32_t nshards, mm_partition part, uint64_t seed,
                     uint32_t **idx, uint32_t *count, mm_error *err)
{
    return mm_dataset_shard_mixed(ds, shard, nshards, part, 1.0, seed, idx, count, err);
}

int mm_dataset_shard_mixed(const mm_dataset *ds, uint32_t shard, uint32_t nshards, mm_partition part, double skew,
                           uint64_t seed, uint32_t **idx, uint32_t *count, mm_error *err)
{
    if (!ds || !idx || !count) return mm_error_set(err, MM_ERR_INVALID, "mm_dataset_shard: NULL argument");
    *idx = NULL;
    *count = 0;
    uint32_t n = ds->n;
    if (nshards < 1) return mm_error_set(err, MM_ERR_INVALID, "shards: the number of shards must be at least 1");
    if (shard >= nshards)
        return mm_error_set(err, MM_ERR_INVALID, "shards: shard %u does not exist (shards are 0 to %u)", shard,
                            nshards - 1);
    if (nshards > n)
        return mm_error_set(err, MM_ERR_INVALID, "shards: %u shards of a dataset of %u examples leave some empty",
                            nshards, n);
    if (part != MM_PART_IID && part != MM_PART_LABEL)
        return mm_error_set(err, MM_ERR_INVALID, "shards: unknown partition %d", (int)part);
    if (part == MM_PART_LABEL && nshards > UINT32_MAX / 2)
        return mm_error_set(err, MM_ERR_INVALID, "shards: %u shards are too many for a label partition", nshards);
    if (part == MM_PART_LABEL && !ds->labels)
        return mm_error_set(err, MM_ERR_INVALID, "shards: label partition of a dataset without labels");
    if (part == MM_PART_LABEL && !(skew > 0.0 && skew <= 1.0))
        return mm_error_set(err, MM_ERR_INVALID, "shards: skew %g is not in (0, 1]", skew);

    uint32_t *all = malloc((size_t)n * sizeof *all);
    if (!all) return mm_error_set(err, MM_ERR_NOMEM, "shards: out of memory for %u indices", n);
    mm_rng rng;
    mm_rng_seed(&rng, seed);
    uint32_t *out = NULL;
    uint32_t m = 0;

    if (part == MM_PART_IID) {
        for (uint32_t i = 0; i < n; i++) all[i] = i;
        mm_rng_shuffle_u32(&rng, all, n);
        uint32_t a = part_start(n, shard, nshards), b = part_start(n, (uint64_t)shard + 1, nshards);
        m = b - a;
        out = malloc((m ? m : 1) * sizeof *out);
        if (out && m) memcpy(out, all + a, (size_t)m * sizeof *out);
    } else {
        /* Stable counting sort of the indices by label. */
        uint32_t start[257] = {0};
        for (uint32_t i = 0; i < n; i++) start[ds->labels[i] + 1]++;
        for (int c = 0; c < 256; c++) start[c + 1] += start[c];
        for (uint32_t i = 0; i < n; i++) all[start[ds->labels[i]]++] = i;

        /* 2*nshards pieces, dealt two per shard in a seeded order. */
        uint64_t npieces = 2 * (uint64_t)nshards;
        uint64_t *pieces = malloc((size_t)npieces * sizeof *pieces);
        if (!pieces) {
            free(all);
            return mm_error_set(err, MM_ERR_NOMEM, "shards: out of memory for %llu pieces",
                                (unsigned long long)npieces);
        }
        for (uint64_t p = 0; p < npieces; p++) pieces[p] = p;
        for (uint64_t i = npieces; i > 1; i--) {
            uint64_t j = mm_rng_below(&rng, i), t = pieces[i - 1];
            pieces[i - 1] = pieces[j];
            pieces[j] = t;
        }
        uint64_t p0 = pieces[2 * (uint64_t)shard], p1 = pieces[2 * (uint64_t)shard + 1];
        /* Keep the head (skew) of each of our pieces; the tails of all pieces
         * form a pool, shuffled with the same generator and cut evenly. */
        uint32_t a0 = part_start(n, p0, npieces), b0 = part_start(n, p0 + 1, npieces);
        uint32_t a1 = part_start(n, p1, npieces), b1 = part_start(n, p1 + 1, npieces);
        uint32_t h0 = (uint32_t)((double)(b0 - a0) * skew + 0.5), h1 = (uint32_t)((double)(b1 - a1) * skew + 0.5);
        uint32_t *pool = NULL, npool = 0, t0 = 0, t1 = 0;
        if (skew < 1.0) {
            pool = malloc(((size_t)n + 1) * sizeof *pool);
            if (!pool) {
                free(pieces);
                free(all);
                return mm_error_set(err, MM_ERR_NOMEM, "shards: out of memory for %u indices", n);
            }
            for (uint64_t p = 0; p < npieces; p++) {
                uint32_t a = part_start(n, p, npieces), b = part_start(n, p + 1, npieces);
                uint32_t h = (uint32_t)((double)(b - a) * skew + 0.5);
                memcpy(pool + npool, all + a + h, (size_t)(b - a - h) * sizeof *pool);
                npool += b - a - h;
            }
            mm_rng_shuffle_u32(&rng, pool, npool);
            t0 = part_start(npool, shard, nshards);
            t1 = part_start(npool, (uint64_t)shard + 1, nshards);
        }
        free(pieces);
        m = h0 + h1 + (t1 - t0);
        out = malloc((m ? m : 1) * sizeof *out);
        if (out) {
            memcpy(out, all + a0, (size_t)h0 * sizeof *out);
            memcpy(out + h0, all + a1, (size_t)h1 * sizeof *out);
            if (pool) memcpy(out + h0 + h1, pool + t0, (size_t)(t1 - t0) * sizeof *out);
        }
        free(pool);
    }
    free(all);
    if (!out) return mm_error_set(err, MM_ERR_NOMEM, "shards: out of memory for %u indices", m);
    *idx = out;
    *count = m;
    return MM_OK;
}

/* A fresh shuffle for the loader's current epoch. */
static void loader_shuffle(mm_loader *ld)
{
    mm_rng r;
    mm_rng_seed(&r, ld->seed ^ (0x9e3779b97f4a7c15ull * ((uint64_t)ld->epoch + 1)));
    mm_rng_shuffle_u32(&r, ld->order, ld->count);
}

int mm_loader_init(mm_loader *ld, const mm_dataset *ds, const uint32_t *idx, uint32_t count, uint64_t seed)
{
    if (!ld) return MM_ERR_INVALID;
    memset(ld, 0, sizeof *ld);
    if (!ds) return MM_ERR_INVALID;
    if (!idx) count = ds->n; /* the whole dataset */
    for (uint32_t i = 0; idx && i < count; i++)
        if (idx[i] >= ds->n) return MM_ERR_INVALID;
    uint32_t *order = malloc((count ? count : 1) * sizeof *order);
    if (!order) return MM_ERR_NOMEM;
    for (uint32_t i = 0; i < count; i++) order[i] = idx ? idx[i] : i;
    ld->ds = ds;
    ld->order = order;
    ld->count = count;
    ld->seed = seed;
    mm_loader_set_normalization(ld, 0.0f, 1.0f);
    loader_shuffle(ld);
    return MM_OK;
}

void mm_loader_set_normalization(mm_loader *ld, float mean, float std)
{
    for (int v = 0; v < 256; v++) ld->table[v] = ((float)v / 255.0f - mean) / std;
}

void mm_loader_start_epoch(mm_loader *ld, uint32_t epoch)
{
    ld->epoch = epoch;
    ld->pos = 0;
    loader_shuffle(ld);
}

void mm_loader_free(mm_loader *ld)
{
    if (!ld) return;
    free(ld->order);
    memset(ld, 0, sizeof *ld);
}

/* The size of the next batch (ld->order[ld->pos..+k)); 0 at the end of an epoch, which it reports
 * once and reshuffles for the next. */
static uint32_t loader_take(mm_loader *ld, uint32_t max)
{
    if (!ld || !ld->ds || max == 0) return 0;
    if (ld->pos >= ld->count) {
        ld->epoch++;
        ld->pos = 0;
        loader_shuffle(ld);
        return 0;
    }
    return ld->count - ld->pos < max ? ld->count - ld->pos : max;
}

uint32_t mm_loader_next_indices(mm_loader *ld, uint32_t *idx, uint32_t max)
{
    uint32_t k = loader_take(ld, max);
    if (k) memcpy(idx, ld->order + ld->pos, (size_t)k * sizeof *idx);
    ld->pos += k;
    return k;
}

uint32_t mm_loader_next(mm_loader *ld, float *x, int32_t *y, uint32_t max)
{
    uint32_t k = loader_take(ld, max);
    if (k == 0) return 0;
    const mm_dataset *ds = ld->ds;
    size_t pixels = (size_t)ds->rows * ds->cols;
    for (uint32_t i = 0; i < k; i++) {
        uint32_t e = ld->order[ld->pos + i];
        if (x) {
            const uint8_t *src = ds->images + (size_t)e * pixels;
            float *dst = x + (size_t)i * pixels;
            for (size_t j = 0; j < pixels; j++) dst[j] = ld->table[src[j]];
        }
        if (y) y[i] = ds->labels[e];
    }
    ld->pos += k;
    return k;
}
