/* Parity of the CUDA backend (gpu/backend_cuda.cu) with the CPU backend
 * (tensor/backend_cpu.c), which is the reference: every operation of
 * mm_backend_ops on fresh seeded random inputs, run on both, compared
 * elementwise; then one SGD step of each built-in model on both.
 *
 * Every output buffer is poisoned with NaN (through fill) before the
 * operation, on both backends, and carries GUARD more NaN floats after its
 * end: an element an operation forgets to write stays NaN and fails the
 * comparison, and one it writes past the end shows in the guard.
 *
 * Bounds, |gpu - cpu| <= rtol * scale:
 *   elementwise (fill, bias_act, relu_bwd, im2col, col2im, maxpool, merge,
 *     sgd, adamw): rtol 1e-5, scale = the sum of the magnitudes of the terms
 *     (|c| where nothing can cancel). Both sides round the same expressions
 *     the same way (no FMA), so these are expected to be exact; the test
 *     prints how many elements were not.
 *   gemm: rtol 1e-4, scale = |alpha| sum_k |a||b| + |beta c| (cuBLAS in full
 *     fp32: TF32 would miss this by far).
 *   col_sum: rtol 1e-4, scale = sum over rows of |dy|.
 *   softmax_xent: dlogits rtol 1e-5 with scale |d| + 1/rows; loss 1e-5
 *     relative; correct count exact.
 *   sumsq: the GPU's double accumulation within 1e-12 of an exact host sum,
 *     the CPU's blocked float sums within 1e-4 of it.
 *   model step: per tensor, max |diff| <= 1e-3 max |cpu| for gradients and
 *     1e-4 for parameters after each of two SGD steps.
 *
 * Without CUDA at build time, or without a device at run time, the tests that
 * need one are skipped (cmocka's skip()) and the program passes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#ifndef MM_HAVE_CUDA

static void test_gpu_parity(void **state)
{
    (void)state;
    print_message("gpu parity: built without CUDA (gpu/ not configured): skipped\n");
    skip();
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_gpu_parity)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#else

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "backend_cuda.h"
#include "data.h"
#include "model.h"
#include "mm_rng.h"
#include "optim.h"

enum { GUARD = 16 }; /* NaN floats after every output buffer, which no op may touch */

static mm_backend cpu_be, gpu_be;
static bool have_gpu;
static char gpu_why[256];
static mm_rng rng;

static int setup(void **state)
{
    (void)state;
    if (mm_backend_cpu_init(&cpu_be, 1) != 0) return -1;
    have_gpu = mm_backend_cuda_init(&gpu_be, 0, gpu_why, sizeof gpu_why) == 0;
    if (!have_gpu) print_message("gpu parity: %s: the tests that need a GPU are skipped\n", gpu_why);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (have_gpu) mm_backend_free(&gpu_be);
    mm_backend_free(&cpu_be);
    return 0;
}

/* Start of every test that needs the device: a fresh seed, or skip. */
static void need_gpu(uint64_t seed)
{
    if (!have_gpu) skip();
    mm_rng_seed(&rng, seed);
}

/* The backend met no CUDA error so far. */
static void assert_gpu_ok(void)
{
    char msg[256];
    if (mm_backend_cuda_error(&gpu_be, msg, sizeof msg) != 0) fail_msg("CUDA backend error: %s", msg);
}

/* ---- buffers on both backends ---- */

/* One tensor of n floats (+ GUARD) on each backend. */
typedef struct {
    float *cpu, *gpu;
    size_t n;
} twin;

static void *dev_alloc(mm_backend *be, size_t bytes)
{
    void *p = be->ops->alloc(be, bytes);
    assert_non_null(p);
    return p;
}

/* n floats + GUARD, all NaN, then host's n floats (host NULL: left NaN). */
static twin twin_new(const float *host, size_t n)
{
    twin t = {dev_alloc(&cpu_be, (n + GUARD) * sizeof(float)), dev_alloc(&gpu_be, (n + GUARD) * sizeof(float)), n};
    cpu_be.ops->fill(&cpu_be, t.cpu, n + GUARD, NAN);
    gpu_be.ops->fill(&gpu_be, t.gpu, n + GUARD, NAN);
    if (host) {
        cpu_be.ops->to_device(&cpu_be, t.cpu, host, n * sizeof(float));
        gpu_be.ops->to_device(&gpu_be, t.gpu, host, n * sizeof(float));
    }
    return t;
}

static void twin_free(twin *t)
{
    cpu_be.ops->release(&cpu_be, t->cpu);
    gpu_be.ops->release(&gpu_be, t->gpu);
}

/* Raw bytes on each backend (labels, argmax indices). */
static void dev_pair(void **cpu, void **gpu, const void *host, size_t bytes)
{
    *cpu = dev_alloc(&cpu_be, bytes);
    *gpu = dev_alloc(&gpu_be, bytes);
    cpu_be.ops->to_device(&cpu_be, *cpu, host, bytes);
    gpu_be.ops->to_device(&gpu_be, *gpu, host, bytes);
}

static void *xmalloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    assert_non_null(p);
    return p;
}

/* Host copy of n floats + GUARD. */
static float *download(mm_backend *be, const float *dev, size_t n)
{
    float *h = xmalloc((n + GUARD) * sizeof *h);
    be->ops->to_host(be, h, dev, (n + GUARD) * sizeof *h);
    return h;
}

static float *host_random(size_t n, double lo, double hi)
{
    float *h = xmalloc(n * sizeof *h);
    for (size_t i = 0; i < n; i++) h[i] = (float)(lo + (hi - lo) * mm_rng_uniform(&rng));
    return h;
}

static double *dzalloc(size_t n)
{
    double *p = calloc(n ? n : 1, sizeof *p);
    assert_non_null(p);
    return p;
}

/* Compare the two sides of t: |gpu - cpu| <= rtol * scale[i] (scale NULL:
 * |cpu[i]|) for the n elements, the guards still NaN on both sides. Prints the
 * largest relative difference and the count of inexact elements. */
static void compare(const char *what, const twin *t, const double *scale, double rtol)
{
    float *c = download(&cpu_be, t->cpu, t->n), *g = download(&gpu_be, t->gpu, t->n);
    double worst = 0.0;
    size_t inexact = 0;
    for (size_t i = 0; i < t->n; i++) {
        const double s = scale ? scale[i] : fabs((double)c[i]), d = fabs((double)g[i] - (double)c[i]);
        if (!(d <= rtol * s))
            fail_msg("%s[%zu]: gpu %.9g, cpu %.9g (|diff| %.3g > %.1g x scale %.3g)", what, i, (double)g[i],
                     (double)c[i], d, rtol, s);
        if (memcmp(&g[i], &c[i], sizeof(float)) != 0) inexact++;
        if (s > 0 && d / s > worst) worst = d / s;
    }
    for (size_t i = t->n; i < t->n + GUARD; i++)
        if (!isnan(c[i]) || !isnan(g[i])) fail_msg("%s: guard element %zu written", what, i - t->n);
    print_message("%-36s n=%-9zu max rel diff %.3g, %zu inexact\n", what, t->n, worst, inexact);
    free(c);
    free(g);
}

/* ---- memory and copies ---- */

static void test_init_errors(void **state)
{
    (void)state;
    mm_backend b;
    char err[256] = "";
    assert_int_equal(mm_backend_cuda_init(&b, -1, err, sizeof err), -1);
    assert_null(b.ops);
    assert_true(strstr(err, "CUDA device") != NULL);
    err[0] = 0;
    assert_int_equal(mm_backend_cuda_init(&b, 1 << 20, err, sizeof err), -1);
    assert_null(b.ops);
    print_message("cuda:%d -> %s\n", 1 << 20, err);
    assert_true(strstr(err, "CUDA device") != NULL);
    /* The CPU backend never reports CUDA errors. */
    assert_int_equal(mm_backend_cuda_error(&cpu_be, err, sizeof err), 0);
}

static void test_copies(void **state)
{
    (void)state;
    need_gpu(1);
    assert_false(gpu_be.ops->host_visible);
    assert_string_equal(gpu_be.ops->name, "cuda");
    /* alloc zeroes */
    const size_t n = 1001;
    float *d = dev_alloc(&gpu_be, (n + GUARD) * sizeof(float)), *h = download(&gpu_be, d, n);
    for (size_t i = 0; i < n + GUARD; i++) assert_true(h[i] == 0.0f);
    free(h);
    /* to_device is asynchronous but src is free on return: overwrite it at once,
     * more times than there are staging buffers. */
    float *src = host_random(n, -1, 1), *want = xmalloc(10 * n * sizeof *want);
    float *bufs[10];
    for (int r = 0; r < 10; r++) {
        bufs[r] = dev_alloc(&gpu_be, n * sizeof(float));
        memcpy(want + (size_t)r * n, src, n * sizeof *src);
        gpu_be.ops->to_device(&gpu_be, bufs[r], src, n * sizeof *src);
        for (size_t i = 0; i < n; i++) src[i] = (float)mm_rng_uniform(&rng);
    }
    float *back = xmalloc(n * sizeof *back);
    for (int r = 0; r < 10; r++) {
        gpu_be.ops->to_host(&gpu_be, back, bufs[r], n * sizeof *back);
        assert_memory_equal(back, want + (size_t)r * n, n * sizeof *back);
        gpu_be.ops->release(&gpu_be, bufs[r]);
    }
    /* An upload above the staging limit (64 MiB) goes straight from the caller's memory. */
    const size_t big = (80u << 20) / sizeof(float);
    float *hb = host_random(big, -1, 1), *db = dev_alloc(&gpu_be, big * sizeof(float)), *bb = xmalloc(big * sizeof *bb);
    gpu_be.ops->to_device(&gpu_be, db, hb, big * sizeof *hb);
    gpu_be.ops->to_host(&gpu_be, bb, db, big * sizeof *bb);
    assert_memory_equal(bb, hb, big * sizeof *bb);
    /* Out of device memory: NULL, and the backend stays usable. */
    assert_null(gpu_be.ops->alloc(&gpu_be, (size_t)1 << 52));
    gpu_be.ops->sync(&gpu_be);
    assert_gpu_ok();
    gpu_be.ops->release(&gpu_be, db);
    gpu_be.ops->release(&gpu_be, d);
    gpu_be.ops->release(&gpu_be, NULL);
    free(hb);
    free(bb);
    free(src);
    free(want);
    free(back);
}

static void test_fill(void **state)
{
    (void)state;
    need_gpu(2);
    static const size_t sizes[] = {1, 255, 257, 3000001};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        twin t = twin_new(NULL, sizes[s]);
        cpu_be.ops->fill(&cpu_be, t.cpu, t.n, -2.75f);
        gpu_be.ops->fill(&gpu_be, t.gpu, t.n, -2.75f);
        compare("fill", &t, NULL, 1e-5);
        twin_free(&t);
    }
    assert_gpu_ok();
}

/* A forced cuBLAS error on a second backend: sticky, reported, later ops inert. */
static void test_sticky_error(void **state)
{
    (void)state;
    need_gpu(3);
    mm_backend b;
    char err[256];
    assert_int_equal(mm_backend_cuda_init(&b, 0, err, sizeof err), 0);
    float *x = dev_alloc(&b, 64 * sizeof(float));
    assert_int_equal(mm_backend_cuda_error(&b, err, sizeof err), 0);
    /* lda 1 < k 8: cuBLAS refuses. */
    b.ops->gemm(&b, false, false, 8, 8, 8, 1.0f, x, 1, x, 8, 0.0f, x, 8);
    assert_int_equal(mm_backend_cuda_error(&b, err, sizeof err), -1);
    print_message("sticky error: %s\n", err);
    assert_non_null(strstr(err, "cublasSgemm"));
    assert_null(b.ops->alloc(&b, 16));
    float host[4] = {1, 2, 3, 4};
    b.ops->to_host(&b, host, x, sizeof host);
    for (int i = 0; i < 4; i++) assert_true(host[i] == 0.0f);
    assert_true(isnan(b.ops->sumsq(&b, x, 64)));
    b.ops->release(&b, x);
    mm_backend_free(&b);
    assert_null(b.ops);
    assert_gpu_ok(); /* the other backend is unaffected */
}

/* ---- gemm ---- */

static void gemm_case(bool ta, bool tb, int m, int n, int k, float alpha, float beta, int pad, double rtol)
{
    const int arows = ta ? k : m, acols = ta ? m : k, lda = acols + pad;
    const int brows = tb ? n : k, bcols = tb ? k : n, ldb = bcols + pad;
    const int ldc = n + pad;
    float *a = host_random((size_t)arows * lda, -1, 1), *b = host_random((size_t)brows * ldb, -1, 1);
    /* Padding columns of a and b are NaN: reading one would show in c. */
    for (int i = 0; i < arows; i++)
        for (int j = acols; j < lda; j++) a[(size_t)i * lda + j] = NAN;
    for (int i = 0; i < brows; i++)
        for (int j = bcols; j < ldb; j++) b[(size_t)i * ldb + j] = NAN;
    /* c: random where it is read (beta != 0), NaN where it is not and in the padding columns. */
    float *c0 = host_random((size_t)m * ldc, -1, 1);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < ldc; j++)
            if (j >= n || beta == 0.0f) c0[(size_t)i * ldc + j] = NAN;
    twin tw_a = twin_new(a, (size_t)arows * lda), tw_b = twin_new(b, (size_t)brows * ldb);
    twin tw_c = twin_new(c0, (size_t)m * ldc);
    double *scale = dzalloc((size_t)m * ldc);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < ldc; j++) {
            if (j >= n) continue; /* padding */
            double s = 0.0;
            for (int p = 0; p < k; p++) {
                const double av = (double)(ta ? a[(size_t)p * lda + i] : a[(size_t)i * lda + p]);
                const double bv = (double)(tb ? b[(size_t)j * ldb + p] : b[(size_t)p * ldb + j]);
                s += fabs(av * bv);
            }
            scale[(size_t)i * ldc + j] =
                fabs((double)alpha) * s + (beta != 0.0f ? fabs((double)beta * (double)c0[(size_t)i * ldc + j]) : 0.0);
        }
    cpu_be.ops->gemm(&cpu_be, ta, tb, m, n, k, alpha, tw_a.cpu, lda, tw_b.cpu, ldb, beta, tw_c.cpu, ldc);
    gpu_be.ops->gemm(&gpu_be, ta, tb, m, n, k, alpha, tw_a.gpu, lda, tw_b.gpu, ldb, beta, tw_c.gpu, ldc);
    char what[96];
    snprintf(what, sizeof what, "gemm(%c%c %dx%dx%d a=%g b=%g ld+%d)", ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k,
             (double)alpha, (double)beta, pad);
    /* Not compare(): the padding columns of c must stay NaN, on both sides. */
    float *c = download(&cpu_be, tw_c.cpu, tw_c.n), *g = download(&gpu_be, tw_c.gpu, tw_c.n);
    double worst = 0.0;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < ldc; j++) {
            const size_t e = (size_t)i * ldc + j;
            if (j >= n) {
                if (!isnan(c[e]) || !isnan(g[e])) fail_msg("%s: padding column %d of row %d written", what, j, i);
                continue;
            }
            const double d = fabs((double)g[e] - (double)c[e]);
            if (!(d <= rtol * scale[e]))
                fail_msg("%s[%d,%d]: gpu %.9g, cpu %.9g (|diff| %.3g > %.0e x %.3g)", what, i, j, (double)g[e],
                         (double)c[e], d, rtol, scale[e]);
            if (scale[e] > 0 && d / scale[e] > worst) worst = d / scale[e];
        }
    for (size_t e = tw_c.n; e < tw_c.n + GUARD; e++)
        if (!isnan(c[e]) || !isnan(g[e])) fail_msg("%s: guard element written", what);
    print_message("%-36s max |diff| / sum|a||b| %.3g\n", what, worst);
    free(c);
    free(g);
    free(a);
    free(b);
    free(c0);
    free(scale);
    twin_free(&tw_a);
    twin_free(&tw_b);
    twin_free(&tw_c);
}

static void test_gemm(void **state)
{
    (void)state;
    need_gpu(4);
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            gemm_case(ta, tb, 37, 29, 53, 0.7f, -1.3f, 3, 1e-4);
            gemm_case(ta, tb, 37, 29, 53, 1.0f, 0.0f, 0, 1e-4);
            gemm_case(ta, tb, 1, 1, 1, 1.0f, 0.0f, 2, 1e-4);
        }
    /* The models' shapes at batch 128 (mlp) and 8 (cnn): forward, dW, dX. */
    gemm_case(false, false, 128, 512, 784, 1.0f, 0.0f, 0, 1e-4);
    gemm_case(true, false, 784, 512, 128, 1.0f, 0.0f, 0, 1e-4);
    gemm_case(false, true, 128, 784, 512, 1.0f, 0.0f, 0, 1e-4);
    gemm_case(false, false, 8 * 784, 32, 25, 1.0f, 0.0f, 0, 1e-4);
    gemm_case(true, false, 800, 64, 8 * 196, 1.0f, 0.0f, 0, 1e-4);
    gemm_case(false, true, 8 * 196, 800, 64, 1.0f, 0.0f, 0, 1e-4);
    assert_gpu_ok();
}

/* TF32 tensor cores (--tf32): operands rounded to 10-bit mantissas (relative error 2^-11 each),
 * products summed in fp32, so within 2e-3 of sum |a||b|; and back to full fp32 after. */
static void test_gemm_tf32(void **state)
{
    (void)state;
    need_gpu(16);
    assert_non_null(gpu_be.ops->set_tf32);
    assert_int_equal(gpu_be.ops->set_tf32(&gpu_be, true), 0);
    gemm_case(false, false, 128, 512, 784, 1.0f, 0.0f, 0, 2e-3);
    gemm_case(true, false, 784, 512, 128, 1.0f, 0.0f, 0, 2e-3);
    gemm_case(false, true, 128, 784, 512, 0.7f, -1.3f, 3, 2e-3);
    gemm_case(false, false, 64, 2048, 2048, 1.0f, 0.0f, 0, 2e-3);
    assert_int_equal(gpu_be.ops->set_tf32(&gpu_be, false), 0);
    gemm_case(false, false, 128, 512, 784, 1.0f, 0.0f, 0, 1e-4);
    assert_gpu_ok();
}

/* ---- the dataset on the device ---- */

/* gather_u8 against the host loader: the same examples, bit for bit (one table lookup each), at a
 * partial batch and at a batch of Fashion-MNIST's shape; the guards stay NaN. */
static void test_gather_u8(void **state)
{
    (void)state;
    need_gpu(15);
    const uint32_t N = 1000, rows = 28, cols = 28, px = rows * cols, B = 300;
    mm_dataset ds = {.n = N, .rows = rows, .cols = cols, .images = xmalloc((size_t)N * px), .labels = xmalloc(N)};
    for (size_t i = 0; i < (size_t)N * px; i++) ds.images[i] = (uint8_t)mm_rng_below(&rng, 256);
    for (uint32_t i = 0; i < N; i++) ds.labels[i] = (uint8_t)mm_rng_below(&rng, 10);
    mm_loader ref, dev;
    assert_int_equal(mm_loader_init(&ref, &ds, NULL, N, 9), MM_OK);
    assert_int_equal(mm_loader_init(&dev, &ds, NULL, N, 9), MM_OK);
    mm_loader_set_normalization(&ref, 0.2860f, 0.3530f);
    mm_loader_set_normalization(&dev, 0.2860f, 0.3530f);
    uint8_t *d_img = dev_alloc(&gpu_be, (size_t)N * px), *d_lab = dev_alloc(&gpu_be, N);
    uint32_t *d_idx = dev_alloc(&gpu_be, B * sizeof(uint32_t)), *h_idx = xmalloc(B * sizeof *h_idx);
    float *d_table = dev_alloc(&gpu_be, sizeof dev.table);
    gpu_be.ops->to_device(&gpu_be, d_img, ds.images, (size_t)N * px);
    gpu_be.ops->to_device(&gpu_be, d_lab, ds.labels, N);
    gpu_be.ops->to_device(&gpu_be, d_table, dev.table, sizeof dev.table);
    float *x = dev_alloc(&gpu_be, ((size_t)B * px + GUARD) * sizeof(float));
    int32_t *y = dev_alloc(&gpu_be, (B + GUARD) * sizeof(int32_t));
    float *hx = xmalloc(((size_t)B * px + GUARD) * sizeof *hx), *gx = xmalloc(((size_t)B * px + GUARD) * sizeof *gx);
    int32_t *hy = xmalloc(B * sizeof *hy), *gy = xmalloc((B + GUARD) * sizeof *gy);
    int batches = 0;
    uint32_t k;
    while ((k = mm_loader_next(&ref, hx, hy, B)) > 0) { /* 300, 300, 300, then a partial 100 */
        assert_int_equal(mm_loader_next_indices(&dev, h_idx, B), k);
        gpu_be.ops->fill(&gpu_be, x, (size_t)B * px + GUARD, NAN);
        gpu_be.ops->fill(&gpu_be, (float *)y, B + GUARD, NAN);
        gpu_be.ops->to_device(&gpu_be, d_idx, h_idx, k * sizeof *h_idx);
        gpu_be.ops->gather_u8(&gpu_be, x, y, d_img, d_lab, d_idx, k, px, d_table);
        gpu_be.ops->to_host(&gpu_be, gx, x, ((size_t)B * px + GUARD) * sizeof *gx);
        gpu_be.ops->to_host(&gpu_be, gy, y, (B + GUARD) * sizeof *gy);
        assert_memory_equal(gx, hx, (size_t)k * px * sizeof *gx);
        assert_memory_equal(gy, hy, k * sizeof *gy);
        for (size_t i = (size_t)k * px; i < (size_t)B * px + GUARD; i++)
            if (!isnan(gx[i])) fail_msg("gather_u8: x[%zu] written past the batch of %u", i, k);
        float f;
        for (size_t i = k; i < B + GUARD; i++) {
            memcpy(&f, &gy[i], sizeof f);
            if (!isnan(f)) fail_msg("gather_u8: y[%zu] written past the batch of %u", i, k);
        }
        batches++;
    }
    assert_int_equal(batches, 4);
    print_message("gather_u8                            %d batches of up to %u, bit-identical\n", batches, B);
    void *dev_bufs[] = {d_img, d_lab, d_idx, d_table, x, y};
    for (size_t i = 0; i < sizeof dev_bufs / sizeof dev_bufs[0]; i++) gpu_be.ops->release(&gpu_be, dev_bufs[i]);
    free(hx);
    free(gx);
    free(hy);
    free(gy);
    free(h_idx);
    mm_loader_free(&ref);
    mm_loader_free(&dev);
    free(ds.images);
    free(ds.labels);
    assert_gpu_ok();
}

/* ---- elementwise ---- */

static void test_bias_act(void **state)
{
    (void)state;
    need_gpu(5);
    static const int shapes[][2] = {{1, 1}, {37, 10}, {128, 512}, {3000, 333}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int relu = 0; relu < 2; relu++) {
            const int rows = shapes[s][0], cols = shapes[s][1];
            const size_t n = (size_t)rows * cols;
            float *y = host_random(n, -1, 1), *b = host_random((size_t)cols, -1, 1);
            twin ty = twin_new(y, n), tb = twin_new(b, (size_t)cols);
            double *scale = dzalloc(n);
            for (size_t i = 0; i < n; i++) scale[i] = fabs((double)y[i]) + fabs((double)b[i % (size_t)cols]);
            cpu_be.ops->bias_act(&cpu_be, ty.cpu, tb.cpu, rows, cols, relu);
            gpu_be.ops->bias_act(&gpu_be, ty.gpu, tb.gpu, rows, cols, relu);
            compare(relu ? "bias_act relu" : "bias_act", &ty, scale, 1e-5);
            twin_free(&ty);
            twin_free(&tb);
            free(y);
            free(b);
            free(scale);
        }
    assert_gpu_ok();
}

static void test_relu_bwd(void **state)
{
    (void)state;
    need_gpu(6);
    static const size_t sizes[] = {1, 1000, 2000003};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        const size_t n = sizes[s];
        float *dy = host_random(n, -1, 1), *y = host_random(n, -1, 1);
        for (size_t i = 0; i < n; i += 5) y[i] = 0.0f; /* the boundary: not > 0 */
        twin tdy = twin_new(dy, n), ty = twin_new(y, n);
        cpu_be.ops->relu_bwd(&cpu_be, tdy.cpu, ty.cpu, n);
        gpu_be.ops->relu_bwd(&gpu_be, tdy.gpu, ty.gpu, n);
        compare("relu_bwd", &tdy, NULL, 1e-5);
        twin_free(&tdy);
        twin_free(&ty);
        free(dy);
        free(y);
    }
    assert_gpu_ok();
}

static void test_col_sum(void **state)
{
    (void)state;
    need_gpu(7);
    static const int shapes[][2] = {{0, 5}, {1, 1}, {37, 10}, {128, 512}, {50000, 32}, {1000, 1000}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int rows = shapes[s][0], cols = shapes[s][1];
        float *dy = host_random((size_t)rows * cols, -1, 1);
        twin tdy = twin_new(dy, (size_t)rows * cols), tdb = twin_new(NULL, (size_t)cols);
        double *scale = dzalloc((size_t)cols);
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++) scale[c] += fabs((double)dy[(size_t)r * cols + c]);
        cpu_be.ops->col_sum(&cpu_be, tdb.cpu, tdy.cpu, rows, cols);
        gpu_be.ops->col_sum(&gpu_be, tdb.gpu, tdy.gpu, rows, cols);
        char what[64];
        snprintf(what, sizeof what, "col_sum %dx%d", rows, cols);
        compare(what, &tdb, scale, 1e-4);
        twin_free(&tdy);
        twin_free(&tdb);
        free(dy);
        free(scale);
    }
    assert_gpu_ok();
}

/* ---- convolution helpers and pooling ---- */

static mm_conv_geom geom(int n, int h, int w, int c, int k, int pad)
{
    return (mm_conv_geom){.n = n, .h = h, .w = w, .c = c, .k = k, .pad = pad,
                          .oh = h + 2 * pad - k + 1, .ow = w + 2 * pad - k + 1};
}

static void test_im2col_col2im(void **state)
{
    (void)state;
    need_gpu(8);
    const mm_conv_geom gs[] = {geom(8, 28, 28, 1, 5, 2), geom(8, 14, 14, 32, 5, 2), geom(2, 7, 5, 3, 3, 1),
                               geom(2, 6, 9, 2, 3, 0), geom(1, 5, 5, 2, 5, 4), geom(3, 4, 4, 3, 1, 0)};
    for (size_t i = 0; i < sizeof gs / sizeof gs[0]; i++) {
        const mm_conv_geom *g = &gs[i];
        const size_t nx = (size_t)g->n * g->h * g->w * g->c, nc = (size_t)g->n * g->oh * g->ow * g->k * g->k * g->c;
        float *x = host_random(nx, -1, 1), *dc = host_random(nc, -1, 1);
        twin tx = twin_new(x, nx), tcols = twin_new(NULL, nc), tdc = twin_new(dc, nc), tdx = twin_new(NULL, nx);
        cpu_be.ops->im2col(&cpu_be, tcols.cpu, tx.cpu, g);
        gpu_be.ops->im2col(&gpu_be, tcols.gpu, tx.gpu, g);
        cpu_be.ops->col2im(&cpu_be, tdx.cpu, tdc.cpu, g);
        gpu_be.ops->col2im(&gpu_be, tdx.gpu, tdc.gpu, g);
        char what[96];
        snprintf(what, sizeof what, "im2col n%d %dx%dx%d k%d p%d", g->n, g->h, g->w, g->c, g->k, g->pad);
        compare(what, &tcols, NULL, 1e-5);
        /* col2im adds up to k*k terms: scale by their magnitudes. */
        double *scale = dzalloc(nx);
        float *absdc = xmalloc(nc * sizeof *absdc);
        for (size_t j = 0; j < nc; j++) absdc[j] = fabsf(dc[j]);
        cpu_be.ops->col2im(&cpu_be, x, absdc, g); /* host-visible: x reused as output */
        for (size_t j = 0; j < nx; j++) scale[j] = (double)x[j];
        snprintf(what, sizeof what, "col2im n%d %dx%dx%d k%d p%d", g->n, g->h, g->w, g->c, g->k, g->pad);
        compare(what, &tdx, scale, 1e-5);
        twin_free(&tx);
        twin_free(&tcols);
        twin_free(&tdc);
        twin_free(&tdx);
        free(x);
        free(dc);
        free(absdc);
        free(scale);
    }
    assert_gpu_ok();
}

static void test_maxpool(void **state)
{
    (void)state;
    need_gpu(9);
    static const int shapes[][4] = {{8, 28, 28, 32}, {8, 14, 14, 64}, {2, 7, 5, 3}, {1, 2, 2, 1}, {64, 28, 28, 32}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int n = shapes[s][0], h = shapes[s][1], w = shapes[s][2], c = shapes[s][3];
        const size_t nx = (size_t)n * h * w * c, ny = (size_t)n * (h / 2) * (w / 2) * c;
        /* Values on a coarse grid, so windows often hold equal maxima (the first wins). */
        float *x = host_random(nx, 0, 1), *dy = host_random(ny, -1, 1);
        for (size_t i = 0; i < nx; i++) x[i] = floorf(x[i] * 4.0f);
        twin tx = twin_new(x, nx), ty = twin_new(NULL, ny), targ = twin_new(NULL, ny), tdy = twin_new(dy, ny);
        twin tdx = twin_new(NULL, nx);
        cpu_be.ops->maxpool_fwd(&cpu_be, ty.cpu, (uint32_t *)targ.cpu, tx.cpu, n, h, w, c);
        gpu_be.ops->maxpool_fwd(&gpu_be, ty.gpu, (uint32_t *)targ.gpu, tx.gpu, n, h, w, c);
        char what[64];
        snprintf(what, sizeof what, "maxpool_fwd %dx%dx%dx%d", n, h, w, c);
        compare(what, &ty, NULL, 1e-5);
        /* Indices: exactly equal (the NaN guards, as bits, too). */
        uint32_t *ac = (uint32_t *)download(&cpu_be, targ.cpu, ny), *ag = (uint32_t *)download(&gpu_be, targ.gpu, ny);
        for (size_t i = 0; i < ny + GUARD; i++)
            if (ac[i] != ag[i]) fail_msg("%s: arg[%zu] gpu %u, cpu %u", what, i, ag[i], ac[i]);
        /* Backward from the same indices (the CPU's, on both). */
        uint32_t *arg_c, *arg_g;
        dev_pair((void **)&arg_c, (void **)&arg_g, ac, ny * sizeof *ac);
        cpu_be.ops->maxpool_bwd(&cpu_be, tdx.cpu, tdy.cpu, arg_c, ny, nx);
        gpu_be.ops->maxpool_bwd(&gpu_be, tdx.gpu, tdy.gpu, arg_g, ny, nx);
        snprintf(what, sizeof what, "maxpool_bwd %dx%dx%dx%d", n, h, w, c);
        compare(what, &tdx, NULL, 1e-5);
        cpu_be.ops->release(&cpu_be, arg_c);
        gpu_be.ops->release(&gpu_be, arg_g);
        free(ac);
        free(ag);
        twin_free(&tx);
        twin_free(&ty);
        twin_free(&targ);
        twin_free(&tdy);
        twin_free(&tdx);
        free(x);
        free(dy);
    }
    assert_gpu_ok();
}

/* ---- loss and reductions ---- */

static void xent_case(int rows, int cols, double spread, bool grad)
{
    const size_t n = (size_t)rows * cols;
    float *z = host_random(n, -spread, spread);
    int32_t *y = xmalloc((size_t)rows * sizeof *y);
    for (int r = 0; r < rows; r++) y[r] = (int32_t)mm_rng_below(&rng, (uint64_t)cols);
    for (int r = 0; r < rows; r += 7) z[(size_t)r * cols + 1] = z[(size_t)r * cols]; /* ties: the first wins */
    const float stats0[2] = {1.5f, 2.0f};                                            /* += : start non-zero */
    twin tz = twin_new(z, n), td = twin_new(NULL, n), ts = twin_new(stats0, 2);
    int32_t *yc, *yg;
    dev_pair((void **)&yc, (void **)&yg, y, (size_t)rows * sizeof *y);
    cpu_be.ops->softmax_xent(&cpu_be, grad ? td.cpu : NULL, ts.cpu, tz.cpu, yc, rows, cols);
    gpu_be.ops->softmax_xent(&gpu_be, grad ? td.gpu : NULL, ts.gpu, tz.gpu, yg, rows, cols);
    char what[64];
    snprintf(what, sizeof what, "softmax_xent %dx%d", rows, cols);
    if (grad) {
        float *cd = download(&cpu_be, td.cpu, n);
        double *scale = dzalloc(n);
        for (size_t i = 0; i < n; i++) scale[i] = fabs((double)cd[i]) + 1.0 / rows;
        compare(what, &td, scale, 1e-5);
        free(cd);
        free(scale);
    }
    float sc[2], sg[2];
    cpu_be.ops->to_host(&cpu_be, sc, ts.cpu, sizeof sc);
    gpu_be.ops->to_host(&gpu_be, sg, ts.gpu, sizeof sg);
    print_message("%-36s loss gpu %.9g cpu %.9g, correct gpu %.0f cpu %.0f\n", what, (double)sg[0], (double)sc[0],
                  (double)sg[1], (double)sc[1]);
    if (!(fabs((double)sg[0] - (double)sc[0]) <= 1e-5 * fabs((double)sc[0])))
        fail_msg("%s: loss gpu %.9g, cpu %.9g", what, (double)sg[0], (double)sc[0]);
    assert_true(sg[1] == sc[1]);
    cpu_be.ops->release(&cpu_be, yc);
    gpu_be.ops->release(&gpu_be, yg);
    twin_free(&tz);
    twin_free(&td);
    twin_free(&ts);
    free(z);
    free(y);
}

static void test_softmax_xent(void **state)
{
    (void)state;
    need_gpu(10);
    xent_case(1, 10, 3.0, true);
    xent_case(37, 10, 3.0, true);
    xent_case(128, 10, 50.0, true); /* large logits: exp underflows for most classes */
    xent_case(1000, 7, 3.0, false); /* evaluation: stats only */
    xent_case(300000, 10, 3.0, true); /* more rows than one grid's threads */
    assert_gpu_ok();
}

static void test_sumsq(void **state)
{
    (void)state;
    need_gpu(11);
    static const size_t sizes[] = {1, 4096, 4097, 535818, 5000000};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        const size_t n = sizes[s];
        float *x = host_random(n, -2, 2);
        twin t = twin_new(x, n);
        /* Products of floats are exact in double; summed in long double (64-bit
         * mantissa), the reference is within n * 2^-64 relative. */
        long double acc = 0.0L;
        for (size_t i = 0; i < n; i++) acc += (long double)((double)x[i] * (double)x[i]);
        const double exact = (double)acc;
        const double c = cpu_be.ops->sumsq(&cpu_be, t.cpu, n), g = gpu_be.ops->sumsq(&gpu_be, t.gpu, n);
        print_message("sumsq n=%-9zu gpu rel err %.3g, cpu rel err %.3g\n", n, fabs(g - exact) / exact,
                      fabs(c - exact) / exact);
        if (!(fabs(g - exact) <= 1e-12 * exact)) fail_msg("sumsq n=%zu: gpu %.17g, exact %.17g", n, g, exact);
        if (!(fabs(c - g) <= 1e-4 * exact)) fail_msg("sumsq n=%zu: gpu %.17g, cpu %.17g", n, g, c);
        twin_free(&t);
        free(x);
    }
    assert_true(gpu_be.ops->sumsq(&gpu_be, NULL, 0) == 0.0);
    assert_gpu_ok();
}

/* ---- optimizers and merge ---- */

/* scale[i] = |before[i]| + |after_cpu[i] - before[i]|: the old value plus the update. */
static double *update_scale(const float *before, const twin *t)
{
    float *after = download(&cpu_be, t->cpu, t->n);
    double *scale = dzalloc(t->n);
    for (size_t i = 0; i < t->n; i++)
        scale[i] = fabs((double)before[i]) + fabs((double)after[i] - (double)before[i]);
    free(after);
    return scale;
}

static void test_sgd(void **state)
{
    (void)state;
    need_gpu(12);
    static const size_t sizes[] = {1, 1000, 2000003};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
        for (int nesterov = 0; nesterov < 2; nesterov++) {
            const size_t n = sizes[s];
            float *p = host_random(n, -1, 1), *g = host_random(n, -1, 1), *v = host_random(n, -1, 1);
            twin tp = twin_new(p, n), tg = twin_new(g, n), tv = twin_new(v, n);
            const mm_opt_step st = {.lr = 0.05f, .momentum = 0.9f, .weight_decay = 5e-4f, .grad_scale = 0.7f,
                                    .nesterov = nesterov};
            cpu_be.ops->sgd_step(&cpu_be, tp.cpu, tg.cpu, tv.cpu, n, &st);
            gpu_be.ops->sgd_step(&gpu_be, tp.gpu, tg.gpu, tv.gpu, n, &st);
            double *sp = update_scale(p, &tp), *sv = update_scale(v, &tv);
            compare(nesterov ? "sgd_step nesterov p" : "sgd_step p", &tp, sp, 1e-5);
            compare(nesterov ? "sgd_step nesterov v" : "sgd_step v", &tv, sv, 1e-5);
            twin_free(&tp);
            twin_free(&tg);
            twin_free(&tv);
            free(p);
            free(g);
            free(v);
            free(sp);
            free(sv);
        }
    assert_gpu_ok();
}

static void test_adamw(void **state)
{
    (void)state;
    need_gpu(13);
    static const size_t sizes[] = {1, 1000, 2000003};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        const size_t n = sizes[s];
        float *p = host_random(n, -1, 1), *g = host_random(n, -1, 1), *m = host_random(n, -0.1, 0.1);
        float *v = host_random(n, 0, 0.01);
        twin tp = twin_new(p, n), tg = twin_new(g, n), tm = twin_new(m, n), tv = twin_new(v, n);
        const float t = 3.0f;
        const mm_opt_step st = {.lr = 1e-3f, .weight_decay = 0.05f, .grad_scale = 0.9f, .beta1 = 0.9f,
                                .beta2 = 0.999f, .eps = 1e-8f, .bias1 = 1.0f - powf(0.9f, t),
                                .bias2 = 1.0f - powf(0.999f, t)};
        cpu_be.ops->adamw_step(&cpu_be, tp.cpu, tg.cpu, tm.cpu, tv.cpu, n, &st);
        gpu_be.ops->adamw_step(&gpu_be, tp.gpu, tg.gpu, tm.gpu, tv.gpu, n, &st);
        double *sp = update_scale(p, &tp), *sm = update_scale(m, &tm), *sv = update_scale(v, &tv);
        compare("adamw_step p", &tp, sp, 1e-5);
        compare("adamw_step m", &tm, sm, 1e-5);
        compare("adamw_step v", &tv, sv, 1e-5);
        twin_free(&tp);
        twin_free(&tg);
        twin_free(&tm);
        twin_free(&tv);
        free(p);
        free(g);
        free(m);
        free(v);
        free(sp);
        free(sm);
        free(sv);
    }
    assert_gpu_ok();
}

static void test_merge(void **state)
{
    (void)state;
    need_gpu(14);
    static const size_t sizes[] = {1, 1000, 2000003};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        const size_t n = sizes[s];
        const float w = 0.37f;
        float *x = host_random(n, -1, 1), *a = host_random(n, -1, 1), *b = host_random(n, -1, 1);
        twin tx = twin_new(x, n), ta = twin_new(a, n), tb = twin_new(b, n);
        cpu_be.ops->merge(&cpu_be, tx.cpu, ta.cpu, tb.cpu, w, n);
        gpu_be.ops->merge(&gpu_be, tx.gpu, ta.gpu, tb.gpu, w, n);
        double *scale = dzalloc(n);
        for (size_t i = 0; i < n; i++)
            scale[i] = fabs((double)x[i]) + (double)w * (fabs((double)a[i]) + fabs((double)b[i]));
        compare("merge", &tx, scale, 1e-5);
        twin_free(&tx);
        twin_free(&ta);
        twin_free(&tb);
        free(x);
        free(a);
        free(b);
        free(scale);
    }
    assert_gpu_ok();
}

/* ---- the models ---- */

static mm_model *create(const char *name, mm_backend *be, int batch)
{
    mm_model *m = NULL;
    mm_error err = {0};
    if (mm_model_create(&m, name, be, batch, &err) != MM_OK) fail_msg("mm_model_create(%s): %s", name, err.msg);
    return m;
}

/* Per tensor of the layout: max |gpu - cpu| <= rtol * max |cpu|. */
static void compare_tensors(const char *what, const mm_model *mc, const float *c, const float *g, double rtol)
{
    for (uint32_t t = 0; t < mc->layout.n; t++) {
        const mm_tensor_info *ti = &mc->layout.t[t];
        double diff = 0.0, mag = 0.0;
        for (size_t i = ti->offset; i < ti->offset + ti->count; i++) {
            if (!isfinite(g[i]))
                fail_msg("%s %s %s[%zu]: gpu %g", mc->name, what, ti->name, i - ti->offset, (double)g[i]);
            const double d = fabs((double)g[i] - (double)c[i]);
            if (d > diff) diff = d;
            if (fabs((double)c[i]) > mag) mag = fabs((double)c[i]);
        }
        print_message("%s %-12s %-14s max |diff| / max |cpu| = %.3g\n", mc->name, what, ti->name,
                      mag > 0 ? diff / mag : diff);
        if (!(diff <= rtol * mag))
            fail_msg("%s %s %s: max |diff| %.3g > %.1g x max |cpu| %.3g", mc->name, what, ti->name, diff, rtol, mag);
    }
}

static void model_case(const char *name, int batch)
{
    mm_model *mc = create(name, &cpu_be, batch), *mg = create(name, &gpu_be, batch);
    mm_model_init_params(mc, 42);
    mm_model_init_params(mg, 42);
    mm_opt_config oc = mm_opt_defaults();
    oc.clip_norm = 1.0f; /* exercises sumsq */
    mm_optimizer oc_c, oc_g;
    mm_error err = {0};
    assert_int_equal(mm_optimizer_init(&oc_c, &oc, &cpu_be, mc->layout.total, &err), 0);
    assert_int_equal(mm_optimizer_init(&oc_g, &oc, &gpu_be, mg->layout.total, &err), 0);
    const size_t total = mc->layout.total, nx = (size_t)batch * (size_t)mc->in_size;
    float *x = xmalloc(nx * sizeof *x), *pc = xmalloc(total * sizeof *pc), *pg = xmalloc(total * sizeof *pg);
    int32_t *y = xmalloc((size_t)batch * sizeof *y);
    for (int step = 1; step <= 2; step++) {
        for (size_t i = 0; i < nx; i++) x[i] = ((float)mm_rng_uniform(&rng) - MM_INPUT_MEAN) / MM_INPUT_STD;
        for (int i = 0; i < batch; i++) y[i] = (int32_t)mm_rng_below(&rng, (uint64_t)mc->classes);
        mm_model *ms[2] = {mc, mg};
        mm_optimizer *os[2] = {&oc_c, &oc_g};
        for (int k = 0; k < 2; k++) {
            mm_backend *be = ms[k]->be;
            be->ops->to_device(be, ms[k]->x, x, nx * sizeof *x);
            be->ops->to_device(be, ms[k]->y, y, (size_t)batch * sizeof *y);
            mm_model_forward(ms[k], batch);
            mm_model_backward(ms[k], batch);
        }
        cpu_be.ops->to_host(&cpu_be, pc, mc->grads, total * sizeof *pc);
        gpu_be.ops->to_host(&gpu_be, pg, mg->grads, total * sizeof *pg);
        char what[32];
        snprintf(what, sizeof what, "grad %d", step);
        compare_tensors(what, mc, pc, pg, 1e-3);
        for (int k = 0; k < 2; k++) mm_optimizer_step(os[k], ms[k]->params, ms[k]->grads);
        cpu_be.ops->to_host(&cpu_be, pc, mc->params, total * sizeof *pc);
        gpu_be.ops->to_host(&gpu_be, pg, mg->params, total * sizeof *pg);
        snprintf(what, sizeof what, "params %d", step);
        compare_tensors(what, mc, pc, pg, 1e-4);
    }
    float sc[2], sg[2];
    cpu_be.ops->to_host(&cpu_be, sc, mc->stats, sizeof sc);
    gpu_be.ops->to_host(&gpu_be, sg, mg->stats, sizeof sg);
    print_message("%s loss sum gpu %.9g cpu %.9g, correct gpu %.0f cpu %.0f\n", name, (double)sg[0], (double)sc[0],
                  (double)sg[1], (double)sc[1]);
    if (!(fabs((double)sg[0] - (double)sc[0]) <= 1e-5 * fabs((double)sc[0])))
        fail_msg("%s: loss gpu %.9g, cpu %.9g", name, (double)sg[0], (double)sc[0]);
    assert_true(fabs((double)sg[1] - (double)sc[1]) <= 1.0); /* one near-tie argmax may flip */
    assert_gpu_ok();
    mm_optimizer_free(&oc_c);
    mm_optimizer_free(&oc_g);
    mm_model_free(mc);
    mm_model_free(mg);
    free(x);
    free(y);
    free(pc);
    free(pg);
}

static void test_model_mlp(void **state)
{
    (void)state;
    need_gpu(15);
    model_case("mlp", 128);
}

static void test_model_cnn(void **state)
{
    (void)state;
    need_gpu(16);
    model_case("cnn", 32);
}

/* ---- convolutions through cuDNN (MM_CUDA_CONV=cudnn) ---- */

#if MM_HAVE_CUDNN
/* max |gpu - cpu| <= rtol * max |cpu| over the tensor; the guards untouched on both sides. */
static void compare_rel_max(const char *what, const twin *t, double rtol)
{
    float *c = download(&cpu_be, t->cpu, t->n), *g = download(&gpu_be, t->gpu, t->n);
    double mag = 0.0, diff = 0.0;
    for (size_t i = 0; i < t->n; i++)
        if (fabs((double)c[i]) > mag) mag = fabs((double)c[i]);
    for (size_t i = 0; i < t->n; i++) {
        const double d = fabs((double)g[i] - (double)c[i]);
        if (!(d <= rtol * mag))
            fail_msg("%s[%zu]: gpu %.9g, cpu %.9g (|diff| %.3g > %.0e x max |cpu| %.3g)", what, i, (double)g[i],
                     (double)c[i], d, rtol, mag);
        if (d > diff) diff = d;
    }
    for (size_t i = t->n; i < t->n + GUARD; i++)
        if (!isnan(c[i]) || !isnan(g[i])) fail_msg("%s: guard element %zu written", what, i - t->n);
    print_message("%-36s n=%-9zu max |diff| / max |cpu| %.3g\n", what, t->n, mag > 0 ? diff / mag : diff);
    free(c);
    free(g);
}

/* conv_fwd and conv_bwd of the gpu_be in place (the cuDNN table) against the CPU backend's. */
static void conv_case(int n, int h, int w, int c, int k, int pad, int oc, bool relu)
{
    const mm_conv_geom g = {.n = n, .h = h, .w = w, .c = c, .k = k, .pad = pad, .oh = h + 2 * pad - k + 1,
                            .ow = w + 2 * pad - k + 1};
    const size_t nx = (size_t)n * h * w * c, nw = (size_t)k * k * c * oc, ny = (size_t)n * g.oh * g.ow * oc;
    float *hx = host_random(nx, -1, 1), *hw = host_random(nw, -0.2, 0.2), *hb = host_random((size_t)oc, -0.5, 0.5);
    float *hdy = host_random(ny, -1, 1);
    twin x = twin_new(hx, nx), W = twin_new(hw, nw), b = twin_new(hb, (size_t)oc), y = twin_new(NULL, ny);
    twin dy = twin_new(hdy, ny), dw = twin_new(NULL, nw), db = twin_new(NULL, (size_t)oc), dx = twin_new(NULL, nx);
    const size_t sc = cpu_be.ops->conv_scratch(&cpu_be, &g, oc), sg = gpu_be.ops->conv_scratch(&gpu_be, &g, oc);
    float *scpu = dev_alloc(&cpu_be, (sc ? sc : 1) * sizeof(float)), *sgpu = dev_alloc(&gpu_be, sg * sizeof(float));
    cpu_be.ops->conv_fwd(&cpu_be, y.cpu, x.cpu, W.cpu, b.cpu, relu, &g, oc, scpu);
    gpu_be.ops->conv_fwd(&gpu_be, y.gpu, x.gpu, W.gpu, b.gpu, relu, &g, oc, sgpu);
    char what[96];
    snprintf(what, sizeof what, "cudnn conv_fwd n%d %dx%dx%d k%d p%d oc%d%s", n, h, w, c, k, pad, oc, relu ? " relu" : "");
    compare_rel_max(what, &y, 1e-4);
    cpu_be.ops->conv_bwd(&cpu_be, dw.cpu, db.cpu, dx.cpu, dy.cpu, x.cpu, W.cpu, &g, oc, scpu);
    gpu_be.ops->conv_bwd(&gpu_be, dw.gpu, db.gpu, dx.gpu, dy.gpu, x.gpu, W.gpu, &g, oc, sgpu);
    snprintf(what, sizeof what, "cudnn conv_bwd dw n%d %dx%dx%d k%d oc%d", n, h, w, c, k, oc);
    compare_rel_max(what, &dw, 1e-4);
    snprintf(what, sizeof what, "cudnn conv_bwd db n%d %dx%dx%d k%d oc%d", n, h, w, c, k, oc);
    compare_rel_max(what, &db, 1e-4);
    snprintf(what, sizeof what, "cudnn conv_bwd dx n%d %dx%dx%d k%d oc%d", n, h, w, c, k, oc);
    compare_rel_max(what, &dx, 1e-4);
    twin *all[] = {&x, &W, &b, &y, &dy, &dw, &db, &dx};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) twin_free(all[i]);
    cpu_be.ops->release(&cpu_be, scpu);
    gpu_be.ops->release(&gpu_be, sgpu);
    free(hx);
    free(hw);
    free(hb);
    free(hdy);
}
#endif

static void test_conv_cudnn(void **state)
{
    (void)state;
#if MM_HAVE_CUDNN
    need_gpu(17);
    mm_backend dnn;
    char why[256];
    assert_int_equal(setenv("MM_CUDA_CONV", "cudnn", 1), 0);
    const int rc = mm_backend_cuda_init(&dnn, 0, why, sizeof why);
    unsetenv("MM_CUDA_CONV");
    if (rc != 0) fail_msg("MM_CUDA_CONV=cudnn: %s", why);
    assert_non_null(dnn.ops->conv_fwd);
    const mm_backend plain = gpu_be;
    gpu_be = dnn; /* the helpers work on gpu_be */
    conv_case(8, 28, 28, 1, 5, 2, 32, true); /* the cnn's two layers */
    conv_case(8, 14, 14, 32, 5, 2, 64, true);
    conv_case(3, 7, 5, 3, 3, 1, 4, false);   /* odd shapes, no padding */
    conv_case(2, 6, 9, 2, 3, 0, 5, false);
    conv_case(128, 14, 14, 32, 5, 2, 64, true);
    model_case("cnn", 32);                   /* a whole training step */
    assert_gpu_ok();
    gpu_be = plain;
    mm_backend_free(&dnn);
    /* An unknown choice is refused with a message, not a crash. */
    assert_int_equal(setenv("MM_CUDA_CONV", "winograd", 1), 0);
    assert_int_equal(mm_backend_cuda_init(&dnn, 0, why, sizeof why), -1);
    unsetenv("MM_CUDA_CONV");
    print_message("MM_CUDA_CONV=winograd -> %s\n", why);
#else
    skip();
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_errors), cmocka_unit_test(test_copies),      cmocka_unit_test(test_fill),
        cmocka_unit_test(test_sticky_error), cmocka_unit_test(test_gemm),       cmocka_unit_test(test_bias_act),
        cmocka_unit_test(test_relu_bwd),    cmocka_unit_test(test_col_sum),     cmocka_unit_test(test_im2col_col2im),
        cmocka_unit_test(test_maxpool),     cmocka_unit_test(test_softmax_xent), cmocka_unit_test(test_sumsq),
        cmocka_unit_test(test_sgd),         cmocka_unit_test(test_adamw),       cmocka_unit_test(test_merge),
        cmocka_unit_test(test_model_mlp),   cmocka_unit_test(test_model_cnn),    cmocka_unit_test(test_gemm_tf32),
        cmocka_unit_test(test_gather_u8),   cmocka_unit_test(test_conv_cudnn),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

#endif
