/* Checkpoints: round trip, atomic replace, and refusal of corrupt files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka.h needs the headers above first. */
#include <cmocka.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "mm_rng.h"

#define SENTINEL (-12345.5f)

static char g_dir[64];

static void make_layout(mm_layout *l, const char *model)
{
    mm_layout_init(l, model);
    assert_int_equal(mm_layout_add(l, "w1", 2, (const uint32_t[]){3, 5}), 0);
    assert_int_equal(mm_layout_add(l, "b1", 1, (const uint32_t[]){5}), 1);
    assert_int_equal(mm_layout_add(l, "w2", 2, (const uint32_t[]){5, 2}), 2);
    mm_layout_finish(l);
}

/* Random values in the tensors, zero in the padding. */
static float *random_params(const mm_layout *l, uint64_t seed)
{
    float *p = calloc(l->total, sizeof(float));
    assert_non_null(p);
    mm_rng r;
    mm_rng_seed(&r, seed);
    for (uint32_t i = 0; i < l->n; i++)
        for (size_t e = 0; e < l->t[i].count; e++) p[l->t[i].offset + e] = (float)mm_rng_normal(&r);
    return p;
}

static float *sentinel_params(const mm_layout *l)
{
    float *p = malloc(l->total * sizeof(float));
    assert_non_null(p);
    for (size_t i = 0; i < l->total; i++) p[i] = SENTINEL;
    return p;
}

static void assert_sentinel(const mm_layout *l, const float *p)
{
    for (size_t i = 0; i < l->total; i++) assert_true(p[i] == SENTINEL);
}

static void path_in_dir(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", g_dir, name);
}

static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    assert_true(n >= 0);
    rewind(f);
    uint8_t *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static void write_file(const char *path, const void *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (len) assert_int_equal(fwrite(buf, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static int count_entries(const char *dir, const char *containing)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.' && strstr(e->d_name, containing)) n++;
    closedir(d);
    return n;
}

static int setup_dir(void **state)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/mm_ckpt_test_XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown_dir(void **state)
{
    DIR *d = opendir(g_dir);
    if (!d) return 0;
    struct dirent *e;
    char p[512];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        snprintf(p, sizeof p, "%s/%s", g_dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(g_dir);
    return 0;
}

/* ---- building files by hand ------------------------------------------- */

#define META_FMT(model, version)                                                                      \
    "\"__metadata__\":{\"format\":\"murmur-checkpoint\",\"version\":\"" version "\",\"model\":\"" model \
    "\",\"fingerprint\":\"%s\",\"step\":\"7\",\"samples\":\"8\",\"seed\":\"9\"}"
#define META_OK META_FMT("mlp", "1")
#define T_W1 "\"w1\":{\"dtype\":\"F32\",\"shape\":[3,5],\"data_offsets\":[0,60]}"
#define T_B1 "\"b1\":{\"dtype\":\"F32\",\"shape\":[5],\"data_offsets\":[60,80]}"
#define T_W2 "\"w2\":{\"dtype\":\"F32\",\"shape\":[5,2],\"data_offsets\":[80,120]}"
#define DATA_OK 120

/* 8-byte length, header, data_len bytes of float data (1.0, 2.0, ...). */
static uint8_t *make_file(const char *header, size_t data_len, size_t *len)
{
    size_t n = strlen(header);
    *len = 8 + n + data_len;
    uint8_t *buf = malloc(*len);
    assert_non_null(buf);
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)n >> (8 * i));
    memcpy(buf + 8, header, n);
    for (size_t i = 0; i + 4 <= data_len; i += 4) {
        float v = (float)(i / 4 + 1);
        memcpy(buf + 8 + n + i, &v, 4);
    }
    for (size_t i = data_len / 4 * 4; i < data_len; i++) buf[8 + n + i] = 0;
    return buf;
}

typedef struct {
    mm_layout layout;
    char fp[2 * MM_FINGERPRINT_BYTES + 1];
} fixture;

static void fixture_init(fixture *f)
{
    make_layout(&f->layout, "mlp");
    mm_layout_fingerprint_hex(&f->layout, f->fp);
}

/* Parses buf with the layout into sentinel params; expects refusal with
 * code and a message containing keyword and the file name. */
static void expect_refused(const fixture *f, const uint8_t *buf, size_t len, int code, const char *keyword)
{
    float *p = sentinel_params(&f->layout);
    mm_error err = {0};
    mm_ckpt_meta meta;
    memset(&meta, 0xAB, sizeof meta);
    mm_ckpt_meta meta_before = meta;
    int rc = mm_checkpoint_parse(buf, len, &f->layout, p, &meta, "bad.safetensors", &err);
    if (rc != code || !strstr(err.msg, keyword)) print_error("rc %d, message: %s\n", rc, err.msg);
    assert_int_equal(rc, code);
    assert_int_equal(err.code, code);
    assert_non_null(strstr(err.msg, keyword));
    assert_non_null(strstr(err.msg, "bad.safetensors"));
    assert_sentinel(&f->layout, p);
    assert_memory_equal(&meta, &meta_before, sizeof meta);
    free(p);
}

/* Builds a file from a header format with one %s (the fingerprint). */
#define REFUSE(f, hdr_fmt, data_len, code, keyword)                \
    do {                                                           \
        char h_[2048];                                             \
        snprintf(h_, sizeof h_, hdr_fmt, (f)->fp);                 \
        size_t len_;                                               \
        uint8_t *b_ = make_file(h_, (data_len), &len_);            \
        expect_refused((f), b_, len_, (code), (keyword));          \
        free(b_);                                                  \
    } while (0)

/* ---- tests ------------------------------------------------------------ */

static void test_round_trip(void **state)
{
    mm_layout l;
    make_layout(&l, "mlp");
    float *p = random_params(&l, 42);
    char path[256];
    path_in_dir(path, sizeof path, "rt.safetensors");
    mm_ckpt_meta meta = {.step = 123, .samples = 456, .seed = UINT64_MAX};
    mm_error err = {0};
    assert_int_equal(mm_checkpoint_save(path, &l, p, &meta, &err), 0);

    size_t len;
    uint8_t *file = read_file(path, &len);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | file[i];
    assert_int_equal((8 + n) % 8, 0);
    assert_int_equal(len, 8 + n + 30 * 4);
    free(file);

    float *q = sentinel_params(&l);
    mm_ckpt_meta got;
    assert_int_equal(mm_checkpoint_load(path, &l, q, &got, &err), 0);
    assert_memory_equal(p, q, l.total * sizeof(float)); /* bit-identical, padding zero */
    for (size_t i = l.t[0].count; i < l.t[1].offset; i++) assert_true(q[i] == 0.0f);
    char fp[33];
    mm_layout_fingerprint_hex(&l, fp);
    assert_string_equal(got.model, "mlp");
    assert_string_equal(got.fingerprint, fp);
    assert_int_equal(got.step, 123);
    assert_int_equal(got.samples, 456);
    assert_true(got.seed == UINT64_MAX);
    assert_int_equal(got.version, MM_CKPT_VERSION);

    mm_ckpt_meta rm;
    assert_int_equal(mm_checkpoint_read_meta(path, &rm, &err), 0);
    assert_memory_equal(&rm, &got, sizeof rm);

    /* Without a layout only the container is checked and meta filled. */
    file = read_file(path, &len);
    assert_int_equal(mm_checkpoint_parse(file, len, NULL, NULL, &rm, "x", &err), 0);
    assert_string_equal(rm.model, "mlp");
    free(file);
    free(p);
    free(q);
}

static void test_atomic_replace(void **state)
{
    mm_layout l;
    make_layout(&l, "mlp");
    float *a = random_params(&l, 1), *b = random_params(&l, 2), *q = sentinel_params(&l);
    char path[256];
    path_in_dir(path, sizeof path, "atomic.safetensors");
    mm_error err = {0};
    write_file(path, "old junk", 8);
    assert_int_equal(mm_checkpoint_save(path, &l, a, NULL, &err), 0);
    assert_int_equal(count_entries(g_dir, ".tmp"), 0);
    assert_int_equal(mm_checkpoint_save(path, &l, b, NULL, &err), 0);
    assert_int_equal(count_entries(g_dir, ".tmp"), 0);
    assert_int_equal(count_entries(g_dir, "atomic"), 1);
    assert_int_equal(mm_checkpoint_load(path, &l, q, NULL, &err), 0);
    assert_memory_equal(b, q, l.total * sizeof(float));
    free(a);
    free(b);
    free(q);
}

static void test_save_errors(void **state)
{
    mm_layout l;
    make_layout(&l, "mlp");
    float *p = random_params(&l, 3);
    char path[256];
    path_in_dir(path, sizeof path, "no/such/dir/x.safetensors");
    mm_error err = {0};
    assert_int_equal(mm_checkpoint_save(path, &l, p, NULL, &err), MM_ERR_IO);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "No such file or directory"));

    /* A relative path in the current directory works too (dir is "."). */
    char cwd[512];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(g_dir), 0);
    assert_int_equal(mm_checkpoint_save("rel.safetensors", &l, p, NULL, &err), 0);
    assert_int_equal(chdir(cwd), 0);
    free(p);
}

static void test_load_file_errors(void **state)
{
    mm_layout l;
    make_layout(&l, "mlp");
    float *q = sentinel_params(&l);
    mm_error err = {0};
    char path[256];
    mm_ckpt_meta meta;

    path_in_dir(path, sizeof path, "missing.safetensors");
    assert_int_equal(mm_checkpoint_load(path, &l, q, NULL, &err), MM_ERR_IO);
    assert_non_null(strstr(err.msg, "missing.safetensors"));
    assert_int_equal(mm_checkpoint_read_meta(path, &meta, &err), MM_ERR_IO);
    assert_non_null(strstr(err.msg, "No such file"));

    path_in_dir(path, sizeof path, "empty.safetensors");
    write_file(path, "", 0);
    assert_int_equal(mm_checkpoint_load(path, &l, q, NULL, &err), MM_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "too short"));
    assert_non_null(strstr(err.msg, "empty.safetensors"));
    assert_int_equal(mm_checkpoint_read_meta(path, &meta, &err), MM_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "too short"));

    /* Larger than any checkpoint of the layout could be: refused unread. */
    path_in_dir(path, sizeof path, "huge.safetensors");
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fseek(f, (long)(MM_CKPT_MAX_HEADER + 4096), SEEK_SET), 0);
    fputc(0, f);
    fclose(f);
    assert_int_equal(mm_checkpoint_load(path, &l, q, NULL, &err), MM_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "larger"));

    /* A directory is not a checkpoint. */
    assert_int_equal(mm_checkpoint_load(g_dir, &l, q, NULL, &err), MM_ERR_IO);
    assert_sentinel(&l, q);
    free(q);
}

static void test_read_meta(void **state)
{
    mm_layout l;
    make_layout(&l, "mlp");
    float *p = random_params(&l, 4);
    char path[256];
    path_in_dir(path, sizeof path, "meta.safetensors");
    mm_ckpt_meta meta = {.step = 1, .samples = 2, .seed = 3}, got;
    mm_error err = {0};
    assert_int_equal(mm_checkpoint_save(path, &l, p, &meta, &err), 0);
    assert_int_equal(mm_checkpoint_read_meta(path, &got, &err), 0);
    assert_string_equal(got.model, "mlp");
    assert_int_equal(got.step, 1);
    assert_int_equal(got.samples, 2);
    assert_int_equal(got.seed, 3);

    /* Truncated data: the header alone is fine, but offsets past the end are not. */
    size_t len;
    uint8_t *file = read_file(path, &len);
    write_file(path, file, len - 4);
    assert_int_equal(mm_checkpoint_read_meta(path, &got, &err), MM_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "past the end"));
    free(file);
    free(p);
}

static void test_crafted_valid(void **state)
{
    fixture f;
    fixture_init(&f);
    char h[2048];
    snprintf(h, sizeof h, "{" META_OK "," T_W1 "," T_B1 "," T_W2 "}", f.fp);
    size_t len;
    uint8_t *b = make_file(h, DATA_OK, &len);
    float *p = sentinel_params(&f.layout);
    mm_ckpt_meta meta;
    mm_error err = {0};
    assert_int_equal(mm_checkpoint_parse(b, len, &f.layout, p, &meta, "ok", &err), 0);
    assert_true(p[0] == 1.0f && p[14] == 15.0f && p[15] == 0.0f && p[16] == 16.0f && p[32] == 21.0f);
    assert_int_equal(meta.step, 7);
    free(b);

    /* Order of tensors and members, whitespace, escapes and unknown metadata are fine. */
    snprintf(h, sizeof h,
             " { \"w2\" : {\"data_offsets\":[80,120],\"shape\":[5,2],\"dtype\":\"F32\"},\n"
             "\"\\u0062\\u0031\":{\"dtype\":\"F\\u0033\\u0032\",\"shape\":[5],\"data_offsets\":[60,80]}," T_W1
             ",\t\"__metadata__\":{\"format\":\"murmur\\u002dcheckpoint\",\"version\":\"1\",\"model\":\"mlp\","
             "\"fingerprint\":\"%s\",\"step\":\"0\",\"samples\":\"18446744073709551615\",\"seed\":\"9\","
             "\"note\":\"caf\xc3\xa9 \\\"q\\\" \\\\ \\/ \\b\\f\\n\\r\\t\"}}   ",
             f.fp);
    b = make_file(h, DATA_OK, &len);
    assert_int_equal(mm_checkpoint_parse(b, len, &f.layout, p, &meta, "ok", &err), 0);
    assert_true(meta.samples == UINT64_MAX);
    free(b);
    free(p);
}

static void test_refuse_container(void **state)
{
    fixture f;
    fixture_init(&f);
    uint8_t small[16] = {0};
    expect_refused(&f, small, 0, MM_ERR_FORMAT, "too short");
    expect_refused(&f, small, 7, MM_ERR_FORMAT, "too short");

    uint8_t huge[16] = {0, 0, 0, 0, 0, 0, 0, 0x80, '{', '}'};
    expect_refused(&f, huge, sizeof huge, MM_ERR_FORMAT, "over the limit");
    uint8_t past[16] = {100, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
    expect_refused(&f, past, sizeof past, MM_ERR_FORMAT, "past the end of the file");

    size_t len;
    uint8_t *b = make_file("hello", 0, &len);
    expect_refused(&f, b, len, MM_ERR_FORMAT, "not a JSON object");
    free(b);

    /* Truncated JSON: the first half of a valid header. */
    char h[2048];
    snprintf(h, sizeof h, "{" META_OK "," T_W1 "," T_B1 "," T_W2 "}", f.fp);
    h[strlen(h) / 2] = '\0';
    b = make_file(h, 0, &len);
    expect_refused(&f, b, len, MM_ERR_FORMAT, "malformed");
    free(b);
    b = make_file("{", 0, &len);
    expect_refused(&f, b, len, MM_ERR_FORMAT, "ends where");
    free(b);

    b = make_file("{" T_W1 "," T_B1 "," T_W2 "}", DATA_OK, &len);
    expect_refused(&f, b, len, MM_ERR_FORMAT, "no __metadata__");
    free(b);
    REFUSE(&f, "{" META_FMT("mlp", "2") "," T_W1 "," T_B1 "," T_W2 "}", DATA_OK, MM_ERR_FORMAT, "version 2");
    REFUSE(&f, "{" META_FMT("mlp", "x") "," T_W1 "," T_B1 "," T_W2 "}", DATA_OK, MM_ERR_FORMAT, "version");
    REFUSE(&f, "{" META_FMT("mlp", "0") "," T_W1 "," T_B1 "," T_W2 "}", DATA_OK, MM_ERR_FORMAT, "version");
    REFUSE(&f, "{" META_OK "," T_W1 "," T_B1 "," T_W2 "}", DATA_OK + 4, MM_ERR_FORMAT, "trailing data");
    REFUSE(&f, "{" META_OK "," T_W1 "," T_B1 "," T_W2 "} x", DATA_OK, MM_ERR_FORMAT, "after the header");
    REFUSE(&f, "{" META_OK "," T_W1 "," T_B1 "," T_W2 ",}", DATA_OK, MM_ERR_FORMAT, "expected a key");
    REFUSE(&f, "{" META_OK "," T_W1 "," T_B1 "," T_W2 "," T_W1 "}", DATA_OK, MM_ERR_FORMAT, "duplicate tensor 'w1'");
    snprintf(h, sizeof h, "{" META_OK "," META_OK "," T_W1 "," T_B1 "," T_W2 "}", f.fp, f.fp);
    b = make_file(h, DATA_OK, &len);
    expect_refused(&f, b, len, MM_ERR_FORMAT, "duplicate key '__metadata__'");
    free(b);
    REFUSE(&f, "{" META_OK "," T_B1 "," T_W2 ",\"w1\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[3,5],"
               "\"data_offsets\":[0,60]}}",
           DATA_OK, MM_ERR_FORMAT, "duplicate key 'dtype'");
}

static void test_refuse_metadata(void **state)
{
    fixture f;
    fixture_init(&f);
    /* Each metadata field, wrong in turn. */
    REFUSE(&f, "{\"__metadata__\":{\"format\":\"other\",\"version\":\"1\",\"model\":\"mlp\",\"fingerprint\":\"%s\","
               "\"step\":\"7\",\"samples\":\"8\",\"seed\":\"9\"}," T_W1 "," T_B1 "," T_W2 "}",
           DATA_OK, MM_ERR_FORMAT, "format");
    REFUSE(&f, "{\"__metadata__\":{\"version\":\"1\",\"model\":\"mlp\",\"fingerprint\":\"%s\","
               "\"step\":\"7\",\"samples\":\"8\",\"seed\":\"9\"}," T_W1 "," T_B1 "," T_W2 "}",
           DATA_OK, MM_ERR_FORMAT, "lacks 'format'");
    REFUSE(&f, "{\"__metadata__\":{\"format\":\"murmur-checkpoint\",\"version\":\"1\",\"model\":\"mlp\","
               "\"fingerprint\":\"%s\",\"step\":\"-7\",\"samples\":\"8\",\"seed\":\"9\"}," T_W1 "," T_B1 "," T_W2 "}",
           DATA_OK, MM_ERR_FORMAT, "step");
    REFUSE(&f, "{\"__metadata__\":{\"format\":\"murmur-checkpoint\",\"version\":\"1\",\"model\":\"mlp\","
               "\"fingerprint\":\"%s\",\"step\":\"7\",\"samples\":\"18446744073709551616\",\"seed\":\"9\"}," T_W1
               "," T_B1 "," T_W2 "}",
           DATA_OK, MM_ERR_FORMAT, "samples");
    REFUSE(&f, "{\"__metadata__\":{\"format\":\"murmur-checkpoint\",\"version\":\"1\",\"model\":\"mlp\","
               "\"fingerprint\":\"%.31s\",\"step\":\"7\",\"samples\":\"8\",\"seed\":\"9\"}," T_W1 "," T_B1 "," T_W2
               "}",
           DATA_OK, MM_ERR_FORMAT, "hex digits");
    REFUSE(&f, "{\"__metadata__\":{\"format\":\"murmur-checkpoint\",\"version\":1,\"model\":\"mlp\","
               "\"fingerprint\":\"%s\",\"step\":\"7\",\"samples\":\"8\",\"seed\":\"9\"}," T_W1 "," T_B1 "," T_W2 "}",
           DATA_OK, MM_ERR_FORMAT, "not a string");
    REFUSE(&f, "{\"__metadata__\":{\"format\":\"murmur-checkpoint\",\"version\":\"1\",\"model\":\"mlp\","
               "\"fingerprint\":\"%s\",\"step\":\"7\",\"samples\":\"8\",\"seed\":\"9\",\"seed\":\"9\"}," T_W1
               "," T_B1 "," T_W2 "}",
           DATA_OK, MM_ERR_FORMAT, "duplicate key 'seed'");
    REFUSE(&f, "{\"__metadata__\":{\"format\":\"murmur-checkpoint\",\"version\":\"1\",\"model\":\"mlp\","
               "\"fingerprint\":\"%s\",\"step\":\"7\",\"samples\":\"8\",\"seed\":\"9\",\"a\":\"\",\"a\":\"\"}," T_W1
               "," T_B1 "," T_W2 "}",
           DATA_OK, MM_ERR_FORMAT, "duplicate key 'a'");
}

static void test_refuse_tensors(void **state)
{
    fixture f;
    fixture_init(&f);
    const char *w1_f16 = "\"w1\":{\"dtype\":\"F16\",\"shape\":[3,5],\"data_offsets\":[0,60]}";
    char h[2048];
    size_t len;
    uint8_t *b;
    snprintf(h, sizeof h, "{" META_OK ",%s," T_B1 "," T_W2 "}", f.fp, w1_f16);
    b = make_file(h, DATA_OK, &len);
    expect_refused(&f, b, len, MM_ERR_FORMAT, "dtype 'F16'");
    free(b);

    /* Shape says 15 elements, offsets hold 14. */
    REFUSE(&f, "{" META_OK ",\"w1\":{\"dtype\":\"F32\",\"shape\":[3,5],\"data_offsets\":[0,56]}," T_B1 "," T_W2 "}",
           DATA_OK, MM_ERR_FORMAT, "elements by its shape");
    /* Offsets past the data section. */
    REFUSE(&f, "{" META_OK "," T_W1 "," T_B1 ",\"w2\":{\"dtype\":\"F32\",\"shape\":[5,2],\"data_offsets\":[84,124]}}",
           DATA_OK, MM_ERR_FORMAT, "past the end of the data");
    REFUSE(&f, "{" META_OK "," T_W1 "," T_B1 ",\"w2\":{\"dtype\":\"F32\",\"shape\":[5,2],\"data_offsets\":[120,80]}}",
           DATA_OK, MM_ERR_FORMAT, "end before they begin");
    /* Overlap: b1 inside w1. */
    REFUSE(&f, "{" META_OK "," T_W1 ",\"b1\":{\"dtype\":\"F32\",\"shape\":[5],\"data_offsets\":[40,60]}," T_W2 "}",
           DATA_OK, MM_ERR_FORMAT, "overlap");
    /* Missing, extra, reshaped tensors. */
    REFUSE(&f, "{" META_OK "," T_W1 "," T_B1 "}", 80, MM_ERR_MISMATCH, "'w2' of model 'mlp' is missing");
    REFUSE(&f, "{" META_OK "," T_W1 "," T_B1 "," T_W2 ",\"w3\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":["
               "120,124]}}",
           124, MM_ERR_MISMATCH, "'w3' that model 'mlp' lacks");
    REFUSE(&f, "{" META_OK ",\"w1\":{\"dtype\":\"F32\",\"shape\":[5,3],\"data_offsets\":[0,60]}," T_B1 "," T_W2 "}",
           DATA_OK, MM_ERR_MISMATCH, "shape [5,3] in the file but [3,5]");
    REFUSE(&f, "{" META_OK ",\"w1\":{\"dtype\":\"F32\",\"shape\":[15],\"data_offsets\":[0,60]}," T_B1 "," T_W2 "}",
           DATA_OK, MM_ERR_MISMATCH, "shape [15]");
    /* Malformed tensor entries. */
    REFUSE(&f, "{" META_OK ",\"w1\":{\"dtype\":\"F32\",\"shape\":[3.0,5],\"data_offsets\":[0,60]}," T_B1 "," T_W2 "}",
           DATA_OK, MM_ERR_FORMAT, "floating-point");
    REFUSE(&f, "{" META_OK ",\"w1\":{\"dtype\":\"F32\",\"shape\":[3,-5],\"data_offsets\":[0,60]}," T_B1 "," T_W2 "}",
           DATA_OK, MM_ERR_FORMAT, "negative");
    REFUSE(&f, "{" META_OK ",\"w1\":{\"dtype\":\"F32\",\"shape\":[[3],5],\"data_offsets\":[0,60]}," T_B1 "," T_W2 "}",
           DATA_OK, MM_ERR_FORMAT, "expected an integer");
    REFUSE(&f, "{" META_OK ",\"w1\":{\"dtype\":\"F32\",\"shape\":[3,5],\"data_offsets\":[0,60,1]}," T_B1 "," T_W2 "}",
           DATA_OK, MM_ERR_FORMAT, "array longer");
    REFUSE(&f, "{" META_OK ",\"w1\":{\"dtype\":\"F32\",\"shape\":[3,5]}," T_B1 "," T_W2 "}", DATA_OK, MM_ERR_FORMAT,
           "lacks its data_offsets");
    REFUSE(&f, "{" META_OK ",\"w1\":{\"dtype\":\"F32\",\"shape\":[3,5],\"data_offsets\":[0,60],\"x\":1}," T_B1
               "," T_W2 "}",
           DATA_OK, MM_ERR_FORMAT, "unknown field 'x'");
    REFUSE(&f, "{" META_OK ",\"w1\":{\"dtype\":\"F32\",\"shape\":[3,5],\"data_offsets\":[0,9007199254740993]}," T_B1
               "," T_W2 "}",
           DATA_OK, MM_ERR_FORMAT, "2^53");
    REFUSE(&f, "{" META_OK ",\"w1\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],"
               "\"data_offsets\":[0,60]}," T_B1 "," T_W2 "}",
           DATA_OK, MM_ERR_FORMAT, "too large");
    REFUSE(&f, "{" META_OK ",\"\\u00e9\":{}}", 0, MM_ERR_FORMAT, "ASCII");
    REFUSE(&f, "{" META_OK ",\"\xff\":{}}", 0, MM_ERR_FORMAT, "UTF-8");
    REFUSE(&f, "{" META_OK ",\"w1\":[]}", 0, MM_ERR_FORMAT, "an object for the tensor");
}

static void test_refuse_model(void **state)
{
    fixture f;
    fixture_init(&f);
    char h[2048];
    size_t len;
    uint8_t *b;
    snprintf(h, sizeof h, "{" META_OK "," T_W1 "," T_B1 "," T_W2 "}", "00000000000000000000000000000000");
    b = make_file(h, DATA_OK, &len);
    expect_refused(&f, b, len, MM_ERR_MISMATCH, "fingerprint 00000000000000000000000000000000");
    expect_refused(&f, b, len, MM_ERR_MISMATCH, f.fp);
    free(b);
    REFUSE(&f, "{" META_FMT("cnn", "1") "," T_W1 "," T_B1 "," T_W2 "}", DATA_OK, MM_ERR_MISMATCH,
           "model 'cnn'");
    REFUSE(&f, "{" META_FMT("cnn", "1") "," T_W1 "," T_B1 "," T_W2 "}", DATA_OK, MM_ERR_MISMATCH,
           "this model is 'mlp'");

    /* The real case: a checkpoint of another layout. */
    mm_layout other;
    mm_layout_init(&other, "mlp");
    assert_int_equal(mm_layout_add(&other, "w1", 2, (const uint32_t[]){3, 6}), 0);
    mm_layout_finish(&other);
    float *p = random_params(&other, 5);
    char path[256];
    path_in_dir(path, sizeof path, "other.safetensors");
    mm_error err = {0};
    assert_int_equal(mm_checkpoint_save(path, &other, p, NULL, &err), 0);
    uint8_t *file = read_file(path, &len);
    expect_refused(&f, file, len, MM_ERR_MISMATCH, "fingerprint");
    free(file);
    free(p);
}

/* Every single-byte change of the header is refused or loads; never crashes.
 * Refusals leave params untouched. */
static void test_flip_every_header_byte(void **state)
{
    mm_layout l;
    make_layout(&l, "mlp");
    float *p = random_params(&l, 6);
    char path[256];
    path_in_dir(path, sizeof path, "flip.safetensors");
    mm_error err = {0};
    assert_int_equal(mm_checkpoint_save(path, &l, p, NULL, &err), 0);
    size_t len;
    uint8_t *file = read_file(path, &len);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | file[i];
    float *q = sentinel_params(&l);
    const uint8_t flips[] = {0x01, 0x20, 0x80, 0xFF};
    int refused = 0, loaded = 0;
    for (size_t i = 0; i < 8 + n; i++) {
        for (size_t k = 0; k < sizeof flips; k++) {
            uint8_t *copy = malloc(len);
            assert_non_null(copy);
            memcpy(copy, file, len);
            copy[i] ^= flips[k];
            int rc = mm_checkpoint_parse(copy, len, &l, q, NULL, "flip", &err);
            if (rc == 0) {
                loaded++;
                for (size_t e = 0; e < l.total; e++) q[e] = SENTINEL;
            } else {
                refused++;
                assert_true(err.msg[0] != '\0');
                assert_sentinel(&l, q);
            }
            (void)mm_checkpoint_parse(copy, len, NULL, NULL, NULL, "flip", &err);
            free(copy);
        }
    }
    assert_true(refused > 0);
    free(file);
    free(p);
    free(q);
}

/* The file is standard safetensors: an independent numpy reader agrees. */
static void test_python_reader(void **state)
{
    if (system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") != 0) skip();
    char script[1024];
    const char *data = getenv("MM_TEST_DATA");
    if (data) {
        snprintf(script, sizeof script, "%s/../unit/read_safetensors.py", data);
    } else {
        snprintf(script, sizeof script, "%s", __FILE__);
        char *slash = strrchr(script, '/');
        if (!slash) skip();
        snprintf(slash + 1, sizeof script - (size_t)(slash + 1 - script), "read_safetensors.py");
    }
    if (access(script, R_OK) != 0) skip();

    mm_layout l;
    make_layout(&l, "mlp");
    float *p = random_params(&l, 7);
    char path[256];
    path_in_dir(path, sizeof path, "py.safetensors");
    mm_ckpt_meta meta = {.step = 11, .samples = 22, .seed = 33};
    mm_error err = {0};
    assert_int_equal(mm_checkpoint_save(path, &l, p, &meta, &err), 0);

    char cmd[2048];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s' '%s'", script, path);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    char line[256];
    int tensors = 0, meta_lines = 0;
    while (fgets(line, sizeof line, f)) {
        char name[64], dims[64];
        double sum;
        if (strncmp(line, "meta ", 5) == 0) {
            meta_lines++;
            continue;
        }
        assert_int_equal(sscanf(line, "%63s %63s %lf", name, dims, &sum), 3);
        int i = mm_layout_find(&l, name);
        assert_true(i >= 0);
        assert_int_equal(i, tensors); /* layout order */
        double want = 0;
        for (size_t e = 0; e < l.t[i].count; e++) want += (double)p[l.t[i].offset + e];
        assert_true(fabs(sum - want) <= 1e-9 * (1 + fabs(want)));
        tensors++;
    }
    assert_int_equal(pclose(f), 0);
    assert_int_equal(tensors, 3);
    assert_int_equal(meta_lines, 7);
    free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_atomic_replace),
        cmocka_unit_test(test_save_errors),
        cmocka_unit_test(test_load_file_errors),
        cmocka_unit_test(test_read_meta),
        cmocka_unit_test(test_crafted_valid),
        cmocka_unit_test(test_refuse_container),
        cmocka_unit_test(test_refuse_metadata),
        cmocka_unit_test(test_refuse_tensors),
        cmocka_unit_test(test_refuse_model),
        cmocka_unit_test(test_flip_every_header_byte),
        cmocka_unit_test(test_python_reader),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
