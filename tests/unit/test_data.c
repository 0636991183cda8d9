/* Tests of tensor/data.c: IDX parsing, dataset files, shards and the loader. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "data.h"

/* ---- helpers ---- */

/* An IDX file in memory: header for (type, ndim, dims) then len data bytes
 * (value i % 251 unless data is given). Caller frees. */
static uint8_t *make_idx(uint8_t type, uint8_t ndim, const uint32_t *dims, const uint8_t *data, size_t len,
                         size_t *out_len)
{
    size_t header = 4 + 4 * (size_t)ndim;
    uint8_t *b = malloc(header + len + 1);
    assert_non_null(b);
    b[0] = 0;
    b[1] = 0;
    b[2] = type;
    b[3] = ndim;
    for (unsigned i = 0; i < ndim; i++) {
        b[4 + 4 * i] = (uint8_t)(dims[i] >> 24);
        b[5 + 4 * i] = (uint8_t)(dims[i] >> 16);
        b[6 + 4 * i] = (uint8_t)(dims[i] >> 8);
        b[7 + 4 * i] = (uint8_t)dims[i];
    }
    for (size_t i = 0; i < len; i++) b[header + i] = data ? data[i] : (uint8_t)(i % 251);
    *out_len = header + len;
    return b;
}

static void write_gz(const char *path, const uint8_t *buf, size_t len)
{
    gzFile gz = gzopen(path, "wb");
    assert_non_null(gz);
    if (len) assert_int_equal(gzwrite(gz, buf, (unsigned)len), (int)len);
    assert_int_equal(gzclose(gz), Z_OK);
}

static void write_plain(const char *path, const uint8_t *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (len) assert_int_equal(fwrite(buf, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static uint8_t *read_plain(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    uint8_t *b = malloc(1 << 20);
    assert_non_null(b);
    *len = fread(b, 1, 1 << 20, f);
    fclose(f);
    return b;
}

/* A temporary directory with a split's two files; removed by tmp_cleanup. */
typedef struct {
    char dir[64];
    char images[128];
    char labels[128];
} tmp_split;

static void tmp_make(tmp_split *t, int gz)
{
    strcpy(t->dir, "/tmp/mm_test_data_XXXXXX");
    assert_non_null(mkdtemp(t->dir));
    snprintf(t->images, sizeof t->images, "%s/train-images-idx3-ubyte%s", t->dir, gz ? ".gz" : "");
    snprintf(t->labels, sizeof t->labels, "%s/train-labels-idx1-ubyte%s", t->dir, gz ? ".gz" : "");
}

static void tmp_cleanup(tmp_split *t)
{
    unlink(t->images);
    unlink(t->labels);
    rmdir(t->dir);
}

/* Write n images of rows x cols and labels (label i = i % 10 unless given). */
static void write_split(tmp_split *t, int gz, uint32_t n_images, uint32_t n_labels, const uint8_t *labels)
{
    uint32_t idims[3] = {n_images, 4, 3}, ldims[1] = {n_labels};
    uint8_t lab[256];
    for (uint32_t i = 0; i < n_labels && i < 256; i++) lab[i] = labels ? labels[i] : (uint8_t)(i % 10);
    size_t ilen, llen;
    uint8_t *ib = make_idx(0x08, 3, idims, NULL, (size_t)n_images * 12, &ilen);
    uint8_t *lb = make_idx(0x08, 1, ldims, lab, n_labels, &llen);
    if (gz) {
        write_gz(t->images, ib, ilen);
        write_gz(t->labels, lb, llen);
    } else {
        write_plain(t->images, ib, ilen);
        write_plain(t->labels, lb, llen);
    }
    free(ib);
    free(lb);
}

/* A synthetic in-memory dataset: n 1x1 images, labels balanced over 10. */
static void synth(mm_dataset *ds, uint32_t n)
{
    ds->n = n;
    ds->rows = 1;
    ds->cols = 1;
    ds->images = malloc(n);
    ds->labels = malloc(n);
    assert_non_null(ds->images);
    assert_non_null(ds->labels);
    for (uint32_t i = 0; i < n; i++) {
        ds->images[i] = (uint8_t)(i % 256);
        ds->labels[i] = (uint8_t)(i % 10);
    }
}

/* ---- IDX parsing ---- */

static void test_parse_valid(void **state)
{
    (void)state;
    uint32_t dims[3] = {2, 3, 4};
    size_t len;
    uint8_t *b = make_idx(0x08, 3, dims, NULL, 24, &len);
    mm_idx idx;
    mm_error err = {0};
    assert_int_equal(mm_idx_parse(&idx, b, len, "mem", &err), MM_OK);
    assert_int_equal(idx.type, 0x08);
    assert_int_equal(idx.ndim, 3);
    assert_int_equal(idx.dims[0], 2);
    assert_int_equal(idx.dims[1], 3);
    assert_int_equal(idx.dims[2], 4);
    assert_int_equal(idx.bytes, 24);
    assert_ptr_equal(idx.data, b + 16);
    assert_int_equal(idx.data[23], 23);
    free(b);

    /* 1-D and 4-D, and a zero dimension (no data at all) */
    uint32_t d1[1] = {5}, d4[4] = {1, 2, 1, 3}, d0[2] = {0, 7};
    b = make_idx(0x08, 1, d1, NULL, 5, &len);
    assert_int_equal(mm_idx_parse(&idx, b, len, "mem", &err), MM_OK);
    assert_int_equal(idx.bytes, 5);
    free(b);
    b = make_idx(0x08, 4, d4, NULL, 6, &len);
    assert_int_equal(mm_idx_parse(&idx, b, len, "mem", &err), MM_OK);
    assert_int_equal(idx.ndim, 4);
    free(b);
    b = make_idx(0x08, 2, d0, NULL, 0, &len);
    assert_int_equal(mm_idx_parse(&idx, b, len, "mem", &err), MM_OK);
    assert_int_equal(idx.bytes, 0);
    free(b);
}

/* Parse b, expect code, and that the message names "input.idx" and has word. */
static void expect_parse_error(const uint8_t *b, size_t len, int code, const char *word)
{
    mm_idx idx;
    mm_error err = {0};
    assert_int_equal(mm_idx_parse(&idx, b, len, "input.idx", &err), code);
    assert_int_equal(err.code, code);
    assert_non_null(strstr(err.msg, "input.idx"));
    if (word && !strstr(err.msg, word)) fail_msg("message \"%s\" lacks \"%s\"", err.msg, word);
}

static void test_parse_bad_magic(void **state)
{
    (void)state;
    uint32_t dims[1] = {2};
    size_t len;
    uint8_t *b = make_idx(0x08, 1, dims, NULL, 2, &len);
    b[0] = 0x1f;
    expect_parse_error(b, len, MM_ERR_FORMAT, "magic");
    b[0] = 0;
    b[1] = 0x8b;
    expect_parse_error(b, len, MM_ERR_FORMAT, "magic");
    free(b);
}

static void test_parse_bad_type(void **state)
{
    (void)state;
    uint32_t dims[1] = {2};
    size_t len;
    uint8_t *b = make_idx(0x0D, 1, dims, NULL, 2, &len); /* float */
    expect_parse_error(b, len, MM_ERR_FORMAT, "type");
    b[2] = 0x09; /* signed byte */
    expect_parse_error(b, len, MM_ERR_FORMAT, "0x09");
    free(b);
}

static void test_parse_bad_ndim(void **state)
{
    (void)state;
    uint32_t dims[5] = {1, 1, 1, 1, 1};
    size_t len;
    uint8_t *b = make_idx(0x08, 0, dims, NULL, 0, &len);
    expect_parse_error(b, len, MM_ERR_FORMAT, "rank 0");
    free(b);
    b = make_idx(0x08, 5, dims, NULL, 1, &len);
    expect_parse_error(b, len, MM_ERR_FORMAT, "rank 5");
    free(b);
}

static void test_parse_truncated_header(void **state)
{
    (void)state;
    const uint8_t tiny[3] = {0, 0, 8};
    expect_parse_error(tiny, 3, MM_ERR_FORMAT, "too short");
    expect_parse_error(tiny, 0, MM_ERR_FORMAT, "too short");
    uint32_t dims[3] = {1, 2, 2};
    size_t len;
    uint8_t *b = make_idx(0x08, 3, dims, NULL, 4, &len);
    for (size_t cut = 4; cut < 16; cut++) expect_parse_error(b, cut, MM_ERR_FORMAT, "truncated header");
    free(b);
    /* NULL buffer: an error, not a crash */
    mm_idx idx;
    assert_int_equal(mm_idx_parse(&idx, NULL, 0, "x", NULL), MM_ERR_FORMAT);
    assert_int_equal(mm_idx_parse(&idx, NULL, 10, "x", NULL), MM_ERR_INVALID);
}

static void test_parse_truncated_data(void **state)
{
    (void)state;
    uint32_t dims[3] = {10, 28, 28};
    size_t len;
    uint8_t *b = make_idx(0x08, 3, dims, NULL, 7840, &len);
    mm_idx idx;
    mm_error err = {0};
    assert_int_equal(mm_idx_parse(&idx, b, len - 1, "input.idx", &err), MM_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "truncated"));
    assert_non_null(strstr(err.msg, "7840"));
    assert_non_null(strstr(err.msg, "7839"));
    expect_parse_error(b, 16, MM_ERR_FORMAT, "truncated");
    free(b);
}

static void test_parse_trailing(void **state)
{
    (void)state;
    uint32_t dims[1] = {3};
    size_t len;
    uint8_t *b = make_idx(0x08, 1, dims, NULL, 4, &len); /* one byte too many */
    expect_parse_error(b, len, MM_ERR_FORMAT, "trailing");
    free(b);
}

static void test_parse_overflow(void **state)
{
    (void)state;
    uint32_t dims[4] = {0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu};
    size_t len;
    uint8_t *b = make_idx(0x08, 4, dims, NULL, 16, &len);
    expect_parse_error(b, len, MM_ERR_LIMIT, "limit");
    free(b);
    /* product over the bound without overflowing 64 bits */
    uint32_t big[2] = {100000, 1000000};
    b = make_idx(0x08, 2, big, NULL, 0, &len);
    expect_parse_error(b, len, MM_ERR_LIMIT, "limit");
    free(b);
    /* a huge dimension after a zero one is still refused */
    uint32_t z[3] = {0, 0xFFFFFFFFu, 0xFFFFFFFFu};
    b = make_idx(0x08, 3, z, NULL, 0, &len);
    expect_parse_error(b, len, MM_ERR_LIMIT, NULL);
    free(b);
    /* more items than MM_IDX_MAX_ITEMS */
    uint32_t items[2] = {MM_IDX_MAX_ITEMS + 1, 0};
    b = make_idx(0x08, 2, items, NULL, 0, &len);
    expect_parse_error(b, len, MM_ERR_LIMIT, "items");
    free(b);
}

/* ---- dataset files ---- */

static void test_load_gz(void **state)
{
    (void)state;
    tmp_split t;
    tmp_make(&t, 1);
    write_split(&t, 1, 20, 20, NULL);
    mm_dataset ds;
    mm_error err = {0};
    assert_int_equal(mm_dataset_load(&ds, t.dir, "train", &err), MM_OK);
    assert_int_equal(ds.n, 20);
    assert_int_equal(ds.rows, 4);
    assert_int_equal(ds.cols, 3);
    for (uint32_t i = 0; i < 20; i++) assert_int_equal(ds.labels[i], i % 10);
    for (uint32_t i = 0; i < 240; i++) assert_int_equal(ds.images[i], i % 251);
    mm_dataset_free(&ds);
    assert_null(ds.images);
    mm_dataset_free(&ds); /* twice is harmless */
    tmp_cleanup(&t);
}

static void test_load_plain(void **state)
{
    (void)state;
    tmp_split t;
    tmp_make(&t, 0);
    write_split(&t, 0, 7, 7, NULL);
    mm_dataset ds;
    mm_error err = {0};
    assert_int_equal(mm_dataset_load(&ds, t.dir, "train", &err), MM_OK);
    assert_int_equal(ds.n, 7);
    mm_dataset_free(&ds);
    tmp_cleanup(&t);
}

static void test_load_count_mismatch(void **state)
{
    (void)state;
    tmp_split t;
    tmp_make(&t, 1);
    write_split(&t, 1, 20, 19, NULL);
    mm_dataset ds;
    mm_error err = {0};
    assert_int_equal(mm_dataset_load(&ds, t.dir, "train", &err), MM_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "train-images-idx3-ubyte.gz"));
    assert_non_null(strstr(err.msg, "train-labels-idx1-ubyte.gz"));
    assert_non_null(strstr(err.msg, "20"));
    assert_non_null(strstr(err.msg, "19"));
    assert_null(ds.images);
    tmp_cleanup(&t);
}

static void test_load_bad_label(void **state)
{
    (void)state;
    tmp_split t;
    tmp_make(&t, 1);
    uint8_t lab[5] = {0, 9, 3, 10, 1};
    write_split(&t, 1, 5, 5, lab);
    mm_dataset ds;
    mm_error err = {0};
    assert_int_equal(mm_dataset_load(&ds, t.dir, "train", &err), MM_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "train-labels-idx1-ubyte.gz"));
    assert_non_null(strstr(err.msg, "index 3"));
    tmp_cleanup(&t);
}

static void test_load_wrong_rank(void **state)
{
    (void)state;
    tmp_split t;
    tmp_make(&t, 1);
    /* images written as 1-D: valid IDX, wrong shape */
    uint32_t d[1] = {4};
    size_t len;
    uint8_t *b = make_idx(0x08, 1, d, NULL, 4, &len);
    write_gz(t.images, b, len);
    write_gz(t.labels, b, len);
    free(b);
    mm_dataset ds;
    mm_error err = {0};
    assert_int_equal(mm_dataset_load(&ds, t.dir, "train", &err), MM_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "train-images-idx3-ubyte.gz"));
    assert_non_null(strstr(err.msg, "3 dimensions"));
    tmp_cleanup(&t);
}

static void test_load_corrupt_gzip(void **state)
{
    (void)state;
    tmp_split t;
    tmp_make(&t, 1);
    write_split(&t, 1, 50, 50, NULL);
    size_t len;
    uint8_t *b = read_plain(t.images, &len);
    assert_true(len > 30);
    mm_dataset ds;
    mm_error err = {0};

    /* flipped bytes in the deflate stream (after the 10-byte gzip header) */
    for (size_t i = 10; i < len - 8; i++) b[i] ^= 0x5a;
    write_plain(t.images, b, len);
    assert_int_equal(mm_dataset_load(&ds, t.dir, "train", &err), MM_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "train-images-idx3-ubyte.gz"));
    for (size_t i = 10; i < len - 8; i++) b[i] ^= 0x5a;

    /* a valid header followed by garbage */
    memset(b + 10, 0xff, len - 10);
    write_plain(t.images, b, len);
    err.msg[0] = '\0';
    assert_int_equal(mm_dataset_load(&ds, t.dir, "train", &err), MM_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "train-images-idx3-ubyte.gz"));

    /* a stream cut short */
    free(b);
    write_split(&t, 1, 50, 50, NULL);
    b = read_plain(t.images, &len);
    write_plain(t.images, b, len / 2);
    err.msg[0] = '\0';
    assert_int_equal(mm_dataset_load(&ds, t.dir, "train", &err), MM_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "train-images-idx3-ubyte.gz"));

    /* a bad CRC in the trailer */
    b[len - 6] ^= 0x01;
    write_plain(t.images, b, len);
    err.msg[0] = '\0';
    assert_int_equal(mm_dataset_load(&ds, t.dir, "train", &err), MM_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "train-images-idx3-ubyte.gz"));
    free(b);
    tmp_cleanup(&t);
}

static void test_load_missing(void **state)
{
    (void)state;
    tmp_split t;
    tmp_make(&t, 1);
    mm_dataset ds;
    mm_error err = {0};
    assert_int_not_equal(mm_dataset_load(&ds, t.dir, "train", &err), MM_OK);
    assert_non_null(strstr(err.msg, t.dir));
    assert_non_null(strstr(err.msg, "train-images-idx3-ubyte"));
    /* images there, labels missing */
    write_split(&t, 1, 3, 3, NULL);
    unlink(t.labels);
    assert_int_equal(mm_dataset_load(&ds, t.dir, "train", &err), MM_ERR_IO);
    assert_non_null(strstr(err.msg, "train-labels-idx1-ubyte"));
    /* a missing directory */
    assert_int_equal(mm_dataset_load(&ds, "/nonexistent/mm", "t10k", &err), MM_ERR_IO);
    assert_non_null(strstr(err.msg, "/nonexistent/mm/t10k-images-idx3-ubyte"));
    /* mm_idx_read_file on a missing file names it */
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_int_equal(mm_idx_read_file("/nonexistent/x.gz", &buf, &len, &err), MM_ERR_IO);
    assert_non_null(strstr(err.msg, "/nonexistent/x.gz"));
    assert_null(buf);
    tmp_cleanup(&t);
}

static void test_real_dataset(void **state)
{
    (void)state;
    if (access(MM_DATA_DEFAULT_DIR "/train-images-idx3-ubyte.gz", R_OK) != 0 &&
        access(MM_DATA_DEFAULT_DIR "/train-images-idx3-ubyte", R_OK) != 0) {
        print_message("Fashion-MNIST not found in " MM_DATA_DEFAULT_DIR "; skipping\n");
        skip();
    }
    mm_dataset ds;
    mm_error err = {0};
    if (mm_dataset_load(&ds, MM_DATA_DEFAULT_DIR, "train", &err) != MM_OK) fail_msg("%s", err.msg);
    assert_int_equal(ds.n, 60000);
    assert_int_equal(ds.rows, 28);
    assert_int_equal(ds.cols, 28);
    uint32_t per[10] = {0};
    for (uint32_t i = 0; i < ds.n; i++) per[ds.labels[i]]++;
    for (int c = 0; c < 10; c++) assert_int_equal(per[c], 6000);
    mm_dataset_free(&ds);
    if (mm_dataset_load(&ds, MM_DATA_DEFAULT_DIR, "t10k", &err) != MM_OK) fail_msg("%s", err.msg);
    assert_int_equal(ds.n, 10000);
    assert_int_equal(ds.rows, 28);
    assert_int_equal(ds.cols, 28);
    mm_dataset_free(&ds);
}

/* ---- shards ---- */

/* Gather every shard, check each index appears exactly once; sizes out. */
static void check_partition(const mm_dataset *ds, uint32_t nshards, mm_partition part, uint64_t seed,
                            uint32_t *sizes, uint32_t (*labels_per_shard)[10])
{
    uint8_t *seen = calloc(ds->n, 1);
    assert_non_null(seen);
    uint32_t total = 0;
    for (uint32_t s = 0; s < nshards; s++) {
        uint32_t *idx = NULL, count = 0;
        mm_error err = {0};
        assert_int_equal(mm_dataset_shard(ds, s, nshards, part, seed, &idx, &count, &err), MM_OK);
        sizes[s] = count;
        memset(labels_per_shard[s], 0, sizeof labels_per_shard[s]);
        for (uint32_t i = 0; i < count; i++) {
            assert_true(idx[i] < ds->n);
            assert_int_equal(seen[idx[i]], 0);
            seen[idx[i]] = 1;
            labels_per_shard[s][ds->labels[idx[i]]]++;
        }
        total += count;
        free(idx);
    }
    assert_int_equal(total, ds->n);
    free(seen);
}

static int cmp_desc(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

static void test_shard_iid(void **state)
{
    (void)state;
    mm_dataset ds;
    synth(&ds, 1000);
    uint32_t sizes[7], lab[7][10];
    check_partition(&ds, 4, MM_PART_IID, 42, sizes, lab);
    for (int s = 0; s < 4; s++) {
        assert_int_equal(sizes[s], 250);
        for (int c = 0; c < 10; c++) assert_true(lab[s][c] > 0); /* every class */
    }
    check_partition(&ds, 7, MM_PART_IID, 42, sizes, lab);
    for (int s = 0; s < 7; s++) assert_true(sizes[s] == 142 || sizes[s] == 143);

    /* the same seed gives the same shard; another seed another */
    uint32_t *a, *b, *c, na, nb, nc;
    assert_int_equal(mm_dataset_shard(&ds, 1, 4, MM_PART_IID, 7, &a, &na, NULL), MM_OK);
    assert_int_equal(mm_dataset_shard(&ds, 1, 4, MM_PART_IID, 7, &b, &nb, NULL), MM_OK);
    assert_int_equal(mm_dataset_shard(&ds, 1, 4, MM_PART_IID, 8, &c, &nc, NULL), MM_OK);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na * sizeof *a);
    assert_memory_not_equal(a, c, na * sizeof *a);
    free(a);
    free(b);
    free(c);
    /* one shard is the whole dataset */
    check_partition(&ds, 1, MM_PART_IID, 1, sizes, lab);
    assert_int_equal(sizes[0], 1000);
    mm_dataset_free(&ds);
}

static void test_shard_label(void **state)
{
    (void)state;
    mm_dataset ds;
    synth(&ds, 1000);
    uint32_t sizes[5], lab[5][10];
    /* 4 shards: 8 pieces of 125 over classes of 100, so a piece spans 2 or 3
     * classes and the 3 largest classes of a shard hold >= 80% of it. */
    for (uint64_t seed = 0; seed < 20; seed++) {
        check_partition(&ds, 4, MM_PART_LABEL, seed, sizes, lab);
        for (int s = 0; s < 4; s++) {
            assert_int_equal(sizes[s], 250);
            int distinct = 0;
            for (int c = 0; c < 10; c++) distinct += lab[s][c] > 0;
            assert_true(distinct <= 6);
            qsort(lab[s], 10, sizeof lab[s][0], cmp_desc);
            assert_true(lab[s][0] + lab[s][1] + lab[s][2] >= 200);
        }
    }
    /* 5 shards: pieces align with classes, so each shard has exactly 2 */
    for (uint64_t seed = 0; seed < 20; seed++) {
        check_partition(&ds, 5, MM_PART_LABEL, seed, sizes, lab);
        for (int s = 0; s < 5; s++) {
            int distinct = 0;
            for (int c = 0; c < 10; c++) distinct += lab[s][c] > 0;
            assert_int_equal(distinct, 2);
            assert_int_equal(sizes[s], 200);
        }
    }
    /* mixed (skew 0.8): still a partition, a quarter each; its own pieces
     * (2-3 classes each) give 200 of 250, the pooled tails the rest. */
    for (uint64_t seed = 0; seed < 20; seed++) {
        uint8_t *seen = calloc(ds.n, 1);
        assert_non_null(seen);
        uint32_t total = 0;
        for (uint32_t s = 0; s < 4; s++) {
            uint32_t *idx = NULL, count = 0, own[10] = {0};
            assert_int_equal(mm_dataset_shard_mixed(&ds, s, 4, MM_PART_LABEL, 0.8, seed, &idx, &count, NULL), MM_OK);
            assert_true(count >= 249 && count <= 251);
            for (uint32_t i = 0; i < count; i++) {
                assert_int_equal(seen[idx[i]], 0);
                seen[idx[i]] = 1;
                if (i < 200) own[ds.labels[idx[i]]]++;
            }
            int distinct = 0;
            for (int c = 0; c < 10; c++) distinct += own[c] > 0;
            assert_true(distinct <= 6); /* the first 200 are the pieces' heads */
            total += count;
            free(idx);
        }
        assert_int_equal(total, ds.n);
        free(seen);
    }
    /* skew 1 is the plain label partition; out of (0, 1] is refused */
    uint32_t *i1 = NULL, *i2 = NULL, n1 = 0, n2 = 0;
    assert_int_equal(mm_dataset_shard_mixed(&ds, 2, 4, MM_PART_LABEL, 1.0, 5, &i1, &n1, NULL), MM_OK);
    assert_int_equal(mm_dataset_shard(&ds, 2, 4, MM_PART_LABEL, 5, &i2, &n2, NULL), MM_OK);
    assert_int_equal(n1, n2);
    assert_memory_equal(i1, i2, n1 * sizeof *i1);
    free(i1);
    free(i2);
    mm_error err = {0};
    uint32_t *ix = NULL, nx = 0;
    assert_int_equal(mm_dataset_shard_mixed(&ds, 0, 4, MM_PART_LABEL, 0.0, 5, &ix, &nx, &err), MM_ERR_INVALID);
    assert_non_null(strstr(err.msg, "skew"));
    assert_int_equal(mm_dataset_shard_mixed(&ds, 0, 4, MM_PART_LABEL, 1.5, 5, &ix, &nx, &err), MM_ERR_INVALID);
    /* as many shards as examples: still a partition */
    mm_dataset small;
    synth(&small, 5);
    check_partition(&small, 5, MM_PART_LABEL, 3, sizes, lab);
    mm_dataset_free(&small);
    mm_dataset_free(&ds);
}

static void test_shard_bad_args(void **state)
{
    (void)state;
    mm_dataset ds;
    synth(&ds, 10);
    uint32_t dummy = 0, *idx = &dummy, count = 99; /* both must be reset */
    mm_error err = {0};
    assert_int_equal(mm_dataset_shard(&ds, 0, 0, MM_PART_IID, 1, &idx, &count, &err), MM_ERR_INVALID);
    assert_null(idx);
    assert_int_equal(count, 0);
    assert_int_equal(mm_dataset_shard(&ds, 4, 4, MM_PART_IID, 1, &idx, &count, &err), MM_ERR_INVALID);
    assert_non_null(strstr(err.msg, "shard 4"));
    assert_int_equal(mm_dataset_shard(&ds, 0, 11, MM_PART_LABEL, 1, &idx, &count, &err), MM_ERR_INVALID);
    assert_int_equal(mm_dataset_shard(&ds, 0, 2, (mm_partition)7, 1, &idx, &count, &err), MM_ERR_INVALID);
    assert_int_equal(mm_dataset_shard(NULL, 0, 2, MM_PART_IID, 1, &idx, &count, &err), MM_ERR_INVALID);
    mm_dataset_free(&ds);
}

/* ---- loader ---- */

/* One epoch of ld, batches of b; returns the visit order in out (n items). */
static void run_epoch(mm_loader *ld, uint32_t b, uint32_t *out, uint32_t n)
{
    float *x = malloc(b * sizeof *x);
    int32_t *y = malloc(b * sizeof *y);
    assert_non_null(x);
    assert_non_null(y);
    uint32_t got = 0, k;
    while ((k = mm_loader_next(ld, x, y, b)) > 0) {
        assert_true(got + k <= n);
        for (uint32_t i = 0; i < k; i++) {
            /* synth: image i is i % 256, label i % 10; recover i via order */
            uint32_t e = ld->order[ld->pos - k + i];
            assert_int_equal(y[i], (int32_t)(e % 10));
            assert_true(x[i] == (float)(e % 256) / 255.0f);
            out[got + i] = e;
        }
        got += k;
    }
    assert_int_equal(got, n);
    free(x);
    free(y);
}

static void test_loader_epochs(void **state)
{
    (void)state;
    mm_dataset ds;
    synth(&ds, 100);
    mm_loader ld;
    assert_int_equal(mm_loader_init(&ld, &ds, NULL, 0, 5), MM_OK);
    assert_int_equal(ld.count, 100);
    uint32_t e0[100], e1[100], seen[100] = {0};
    run_epoch(&ld, 32, e0, 100); /* 32+32+32+4 */
    assert_int_equal(ld.epoch, 1);
    for (int i = 0; i < 100; i++) seen[e0[i]]++;
    for (int i = 0; i < 100; i++) assert_int_equal(seen[i], 1);
    run_epoch(&ld, 32, e1, 100);
    assert_int_equal(ld.epoch, 2);
    assert_memory_not_equal(e0, e1, sizeof e0);
    memset(seen, 0, sizeof seen);
    for (int i = 0; i < 100; i++) seen[e1[i]]++;
    for (int i = 0; i < 100; i++) assert_int_equal(seen[i], 1);
    mm_loader_free(&ld);

    /* the same seed replays the same orders */
    uint32_t r0[100], r1[100];
    assert_int_equal(mm_loader_init(&ld, &ds, NULL, 0, 5), MM_OK);
    run_epoch(&ld, 7, r0, 100);
    run_epoch(&ld, 100, r1, 100);
    assert_memory_equal(e0, r0, sizeof e0);
    assert_memory_equal(e1, r1, sizeof e1);
    mm_loader_free(&ld);
    /* a different seed, a different order */
    assert_int_equal(mm_loader_init(&ld, &ds, NULL, 0, 6), MM_OK);
    run_epoch(&ld, 50, r0, 100);
    assert_memory_not_equal(e0, r0, sizeof e0);
    mm_loader_free(&ld);
    mm_dataset_free(&ds);
}

static void test_loader_subset_partial(void **state)
{
    (void)state;
    mm_dataset ds;
    synth(&ds, 300);
    uint32_t idx[10] = {3, 255, 17, 99, 100, 101, 0, 299, 42, 8};
    mm_loader ld;
    assert_int_equal(mm_loader_init(&ld, &ds, idx, 10, 1), MM_OK);
    float x[4];
    int32_t y[4];
    assert_int_equal(mm_loader_next(&ld, x, y, 4), 4);
    assert_int_equal(mm_loader_next(&ld, x, y, 4), 4);
    assert_int_equal(mm_loader_next(&ld, x, y, 4), 2); /* partial */
    assert_int_equal(mm_loader_next(&ld, x, y, 4), 0); /* epoch over, once */
    assert_int_equal(mm_loader_next(&ld, x, y, 4), 4); /* next epoch */
    mm_loader_free(&ld);
    assert_null(ld.order);

    /* the subset is visited exactly */
    uint32_t order[10];
    assert_int_equal(mm_loader_init(&ld, &ds, idx, 10, 2), MM_OK);
    run_epoch(&ld, 3, order, 10);
    for (int i = 0; i < 10; i++) {
        int found = 0;
        for (int j = 0; j < 10; j++) found += order[j] == idx[i];
        assert_int_equal(found, 1);
    }
    mm_loader_free(&ld);

    /* an out-of-range index is refused */
    uint32_t bad[2] = {1, 300};
    assert_int_equal(mm_loader_init(&ld, &ds, bad, 2, 1), MM_ERR_INVALID);
    assert_null(ld.order);
    mm_dataset_free(&ds);
}

/* mm_loader_next_indices draws what mm_loader_next draws: the same examples in the same order,
 * the same partial batch and end-of-epoch report, across a reshuffle. */
static void test_loader_indices(void **state)
{
    (void)state;
    mm_dataset ds;
    synth(&ds, 300);
    uint32_t sub[37];
    for (uint32_t i = 0; i < 37; i++) sub[i] = (i * 7 + 3) % 300;
    mm_loader a, b;
    assert_int_equal(mm_loader_init(&a, &ds, sub, 37, 5), MM_OK);
    assert_int_equal(mm_loader_init(&b, &ds, sub, 37, 5), MM_OK);
    const size_t px = (size_t)ds.rows * ds.cols;
    float *x = malloc(8 * px * sizeof *x);
    assert_non_null(x);
    int32_t y[8];
    uint32_t idx[8];
    int batches = 0, ends = 0;
    for (int call = 0; call < 14; call++) { /* two epochs of 5 batches, each ended by a 0 */
        uint32_t ka = mm_loader_next(&a, x, y, 8), kb = mm_loader_next_indices(&b, idx, 8);
        assert_int_equal(ka, kb);
        if (ka == 0) {
            ends++;
            continue;
        }
        batches++;
        for (uint32_t i = 0; i < ka; i++) {
            assert_int_equal(y[i], ds.labels[idx[i]]);
            for (size_t j = 0; j < px; j++) assert_true(x[i * px + j] == a.table[ds.images[idx[i] * px + j]]);
        }
    }
    assert_int_equal(batches, 12);
    assert_int_equal(ends, 2);
    assert_int_equal(mm_loader_next_indices(&b, idx, 0), 0);
    free(x);
    mm_loader_free(&a);
    mm_loader_free(&b);
    mm_dataset_free(&ds);
}

static void test_loader_scaling(void **state)
{
    (void)state;
    uint8_t img[2 * 3] = {0, 255, 128, 1, 254, 51};
    uint8_t lab[2] = {9, 0};
    mm_dataset ds = {.n = 2, .rows = 1, .cols = 3, .images = img, .labels = lab};
    mm_loader ld;
    uint32_t one = 0;
    assert_int_equal(mm_loader_init(&ld, &ds, &one, 1, 0), MM_OK);
    float x[3];
    int32_t y[1];
    assert_int_equal(mm_loader_next(&ld, x, y, 8), 1);
    assert_true(x[0] == 0.0f);
    assert_true(x[1] == 1.0f);
    assert_true(x[2] == 128.0f / 255.0f);
    assert_int_equal(y[0], 9);
    mm_loader_free(&ld);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_valid),
        cmocka_unit_test(test_loader_indices),
        cmocka_unit_test(test_parse_bad_magic),
        cmocka_unit_test(test_parse_bad_type),
        cmocka_unit_test(test_parse_bad_ndim),
        cmocka_unit_test(test_parse_truncated_header),
        cmocka_unit_test(test_parse_truncated_data),
        cmocka_unit_test(test_parse_trailing),
        cmocka_unit_test(test_parse_overflow),
        cmocka_unit_test(test_load_gz),
        cmocka_unit_test(test_load_plain),
        cmocka_unit_test(test_load_count_mismatch),
        cmocka_unit_test(test_load_bad_label),
        cmocka_unit_test(test_load_wrong_rank),
        cmocka_unit_test(test_load_corrupt_gzip),
        cmocka_unit_test(test_load_missing),
        cmocka_unit_test(test_real_dataset),
        cmocka_unit_test(test_shard_iid),
        cmocka_unit_test(test_shard_label),
        cmocka_unit_test(test_shard_bad_args),
        cmocka_unit_test(test_loader_epochs),
        cmocka_unit_test(test_loader_subset_partial),
        cmocka_unit_test(test_loader_scaling),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
