/* Tests of the CPU backend's operations (tensor/backend_cpu.c) and of the
 * optimizer driver and schedule (tensor/optim.c): every op against a naive
 * double-precision reference written here, on small seeded random inputs.
 * Tolerances are relative to the magnitude of what is summed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "mm_rng.h"
#include "optim.h"

/* ---- helpers ---- */

static mm_backend be;

static int setup(void **state)
{
    (void)state;
    return mm_backend_cpu_init(&be, 1);
}

static int teardown(void **state)
{
    (void)state;
    mm_backend_free(&be);
    return 0;
}

static float *falloc(size_t n)
{
    float *p = be.ops->alloc(&be, n * sizeof(float));
    assert_non_null(p);
    return p;
}

static double *dalloc(size_t n)
{
    double *p = calloc(n ? n : 1, sizeof *p);
    assert_non_null(p);
    return p;
}

static void release(void *p) { be.ops->release(&be, p); }

/* Uniform in [lo, hi). */
static void fill_uniform(mm_rng *r, float *x, size_t n, double lo, double hi)
{
    for (size_t i = 0; i < n; i++) x[i] = (float)(lo + (hi - lo) * mm_rng_uniform(r));
}

/* |got[i] - ref[i]| <= tol[i] for every i, where tol[i] = rtol * mag[i] + atol
 * (mag = the magnitude of what was summed to make ref[i]; NULL: |ref[i]|). */
static void check_close(const char *what, const float *got, const double *ref, const double *mag, size_t n, double rtol,
                        double atol)
{
    for (size_t i = 0; i < n; i++) {
        double m = mag ? mag[i] : fabs(ref[i]);
        double tol = rtol * m + atol, d = fabs((double)got[i] - ref[i]);
        if (!(d <= tol))
            fail_msg("%s[%zu]: got %.9g, want %.9g (|diff| %.3g > tol %.3g)", what, i, (double)got[i], ref[i], d, tol);
    }
}

static void check_exact(const char *what, const float *got, const float *want, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (memcmp(&got[i], &want[i], sizeof(float)) != 0)
            fail_msg("%s[%zu]: got %.9g, want %.9g", what, i, (double)got[i], (double)want[i]);
}

/* ---- memory ---- */

static void test_alloc_copy(void **state)
{
    (void)state;
    assert_true(be.ops->host_visible);
    assert_string_equal(be.ops->name, "cpu");
    const size_t n = 37;
    float *a = falloc(n);
    assert_int_equal((uintptr_t)a % 64, 0);
    for (size_t i = 0; i < n; i++) assert_true(a[i] == 0.0f);
    be.ops->fill(&be, a, n, 2.5f);
    for (size_t i = 0; i < n; i++) assert_true(a[i] == 2.5f);
    float host[37];
    for (size_t i = 0; i < n; i++) host[i] = (float)i - 3.0f;
    be.ops->to_device(&be, a, host, sizeof host);
    float back[37] = {0};
    be.ops->to_host(&be, back, a, sizeof back);
    check_exact("copy", back, host, n);
    be.ops->sync(&be);
    release(a);
}

/* ---- gemm ---- */

/* One gemm with every ta/tb, leading dimensions above the minimum, and
 * alpha/beta away from 0 and 1; the padding columns of c must stay untouched. */
static void gemm_case(mm_rng *r, bool ta, bool tb, int m, int n, int k)
{
    const float alpha = 0.7f, beta = -1.3f;
    /* op(a) is m x k: stored k x m (ta) or m x k; op(b) is k x n: stored n x k (tb) or k x n. */
    const int arows = ta ? k : m, acols = ta ? m : k, lda = acols + 3;
    const int brows = tb ? n : k, bcols = tb ? k : n, ldb = bcols + 2;
    const int ldc = n + 5;
    float *a = falloc((size_t)arows * lda), *b = falloc((size_t)brows * ldb), *c = falloc((size_t)m * ldc);
    fill_uniform(r, a, (size_t)arows * lda, -1.0, 1.0);
    fill_uniform(r, b, (size_t)brows * ldb, -1.0, 1.0);
    fill_uniform(r, c, (size_t)m * ldc, -1.0, 1.0);
    float *c0 = malloc((size_t)m * ldc * sizeof *c0);
    assert_non_null(c0);
    memcpy(c0, c, (size_t)m * ldc * sizeof *c0);
    double *ref = dalloc((size_t)m * n), *mag = dalloc((size_t)m * n);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = 0.0, sa = 0.0;
            for (int p = 0; p < k; p++) {
                double av = ta ? (double)a[(size_t)p * lda + i] : (double)a[(size_t)i * lda + p];
                double bv = tb ? (double)b[(size_t)j * ldb + p] : (double)b[(size_t)p * ldb + j];
                s += av * bv;
                sa += fabs(av * bv);
            }
            double cv = (double)c0[(size_t)i * ldc + j];
            ref[(size_t)i * n + j] = (double)alpha * s + (double)beta * cv;
            mag[(size_t)i * n + j] = fabs((double)alpha) * sa + fabs((double)beta * cv);
        }
    be.ops->gemm(&be, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    char what[64];
    snprintf(what, sizeof what, "gemm(ta=%d,tb=%d,%dx%dx%d)", ta, tb, m, n, k);
    for (int i = 0; i < m; i++) {
        check_close(what, c + (size_t)i * ldc, ref + (size_t)i * n, mag + (size_t)i * n, (size_t)n, 1e-5, 1e-7);
        /* Columns n..ldc-1 of each row are not part of c. */
        check_exact("gemm padding", c + (size_t)i * ldc + n, c0 + (size_t)i * ldc + n, (size_t)(ldc - n));
    }
    free(c0);
    free(ref);
    free(mag);
    release(a);
    release(b);
    release(c);
}

static void test_gemm(void **state)
{
    (void)state;
    mm_rng r;
    mm_rng_seed(&r, 1);
    static const int sizes[][3] = {{5, 7, 9}, {1, 1, 1}, {37, 29, 53}, {3, 64, 130}};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) gemm_case(&r, ta, tb, sizes[s][0], sizes[s][1], sizes[s][2]);
}

/* ---- elementwise ---- */

static void test_bias_act(void **state)
{
    (void)state;
    mm_rng r;
    mm_rng_seed(&r, 2);
    const int rows = 4, cols = 13;
    const size_t n = (size_t)rows * cols;
    float *y = falloc(n), *bias = falloc((size_t)cols), *y0 = falloc(n);
    double *ref = dalloc(n);
    fill_uniform(&r, bias, (size_t)cols, -1.0, 1.0);
    for (int relu = 0; relu < 2; relu++) {
        fill_uniform(&r, y0, n, -2.0, 2.0);
        memcpy(y, y0, n * sizeof *y);
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++) {
                double v = (double)y0[(size_t)i * cols + j] + (double)bias[j];
                ref[(size_t)i * cols + j] = relu && v < 0.0 ? 0.0 : v;
            }
        be.ops->bias_act(&be, y, bias, rows, cols, relu);
        check_close(relu ? "bias_act relu" : "bias_act", y, ref, NULL, n, 1e-6, 1e-7);
        int negatives = 0;
        for (size_t i = 0; i < n; i++) {
            if (relu) assert_true(y[i] >= 0.0f);
            negatives += ref[i] < 0.0;
        }
        if (!relu) assert_true(negatives > 0); /* the inputs do exercise both signs */
    }
    release(y);
    release(bias);
    release(y0);
    free(ref);
}

static void test_relu_bwd(void **state)
{
    (void)state;
    mm_rng r;
    mm_rng_seed(&r, 3);
    const size_t n = 41;
    float *dy = falloc(n), *y = falloc(n), *want = falloc(n);
    fill_uniform(&r, dy, n, -1.0, 1.0);
    fill_uniform(&r, y, n, -1.0, 1.0);
    y[0] = 0.0f; /* the kink: gradient 0 (y is a ReLU output, so 0 means inactive) */
    y[1] = -0.0f;
    y[2] = 1e-30f;
    for (size_t i = 0; i < n; i++) want[i] = y[i] > 0.0f ? dy[i] : 0.0f;
    be.ops->relu_bwd(&be, dy, y, n);
    check_exact("relu_bwd", dy, want, n);
    assert_true(dy[0] == 0.0f && dy[1] == 0.0f && dy[2] != 0.0f);
    release(dy);
    release(y);
    release(want);
}

static void test_col_sum(void **state)
{
    (void)state;
    mm_rng r;
    mm_rng_seed(&r, 4);
    const int rows = 11, cols = 6;
    float *dy = falloc((size_t)rows * cols), *db = falloc((size_t)cols);
    fill_uniform(&r, dy, (size_t)rows * cols, -1.0, 1.0);
    be.ops->fill(&be, db, (size_t)cols, 123.0f); /* must be overwritten, not added to */
    double ref[6], mag[6];
    for (int j = 0; j < cols; j++) {
        ref[j] = mag[j] = 0.0;
        for (int i = 0; i < rows; i++) {
            ref[j] += (double)dy[(size_t)i * cols + j];
            mag[j] += fabs((double)dy[(size_t)i * cols + j]);
        }
    }
    be.ops->col_sum(&be, db, dy, rows, cols);
    check_close("col_sum", db, ref, mag, (size_t)cols, 1e-6, 1e-7);
    release(dy);
    release(db);
}

static void test_merge(void **state)
{
    (void)state;
    mm_rng r;
    mm_rng_seed(&r, 5);
    const size_t n = 37;
    const float w = 0.3f;
    float *x = falloc(n), *a = falloc(n), *b = falloc(n);
    fill_uniform(&r, x, n, -1.0, 1.0);
    fill_uniform(&r, a, n, -1.0, 1.0);
    fill_uniform(&r, b, n, -1.0, 1.0);
    double ref[37], mag[37];
    for (size_t i = 0; i < n; i++) {
        ref[i] = (double)x[i] + (double)w * ((double)a[i] - (double)b[i]);
        mag[i] = fabs((double)x[i]) + fabs((double)w) * (fabs((double)a[i]) + fabs((double)b[i]));
    }
    be.ops->merge(&be, x, a, b, w, n);
    check_close("merge", x, ref, mag, n, 1e-6, 0.0);
    /* w = 0 leaves x exactly as it was; w = 1 with b = x gives a (to rounding). */
    memcpy(b, x, n * sizeof *b);
    be.ops->merge(&be, x, a, b, 0.0f, n);
    check_exact("merge w=0", x, b, n);
    for (size_t i = 0; i < n; i++) {
        ref[i] = (double)a[i];
        mag[i] = fabs((double)a[i]) + 2.0 * fabs((double)x[i]);
    }
    be.ops->merge(&be, x, a, b, 1.0f, n);
    check_close("merge w=1", x, ref, mag, n, 2e-7, 0.0);
    release(x);
    release(a);
    release(b);
}

/* ---- im2col / col2im ---- */

static mm_conv_geom geom(int n, int h, int w, int c, int k, int pad)
{
    return (mm_conv_geom){.n = n, .h = h, .w = w, .c = c, .k = k, .pad = pad, .oh = h + 2 * pad - k + 1,
                          .ow = w + 2 * pad - k + 1};
}

/* Index into x[n,h,w,c] read by element (row, col) of cols, or -1 for padding. */
static long patch_src(const mm_conv_geom *g, size_t row, size_t col)
{
    const int ci = (int)(col % (size_t)g->c), kx = (int)(col / (size_t)g->c % (size_t)g->k),
              ky = (int)(col / ((size_t)g->c * g->k));
    const int ox = (int)(row % (size_t)g->ow), oy = (int)(row / (size_t)g->ow % (size_t)g->oh),
              img = (int)(row / ((size_t)g->ow * g->oh));
    const int iy = oy + ky - g->pad, ix = ox + kx - g->pad;
    if (iy < 0 || iy >= g->h || ix < 0 || ix >= g->w) return -1;
    return (((long)img * g->h + iy) * g->w + ix) * g->c + ci;
}

static void im2col_case(mm_rng *r, const mm_conv_geom *g)
{
    const size_t nx = (size_t)g->n * g->h * g->w * g->c, rows = (size_t)g->n * g->oh * g->ow,
                 K = (size_t)g->k * g->k * g->c, ncols = rows * K;
    float *x = falloc(nx), *cols = falloc(ncols), *want = falloc(ncols), *dx = falloc(nx), *y = falloc(ncols);
    fill_uniform(r, x, nx, -1.0, 1.0);
    fill_uniform(r, y, ncols, -1.0, 1.0);
    char what[96];
    snprintf(what, sizeof what, "im2col n=%d h=%d w=%d c=%d k=%d pad=%d", g->n, g->h, g->w, g->c, g->k, g->pad);

    /* im2col: an exact gather; every element is written (the buffer starts as garbage). */
    be.ops->fill(&be, cols, ncols, 777.0f);
    size_t pads = 0;
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < K; j++) {
            long src = patch_src(g, i, j);
            want[i * K + j] = src < 0 ? 0.0f : x[src];
            pads += src < 0;
        }
    if (g->pad > 0) assert_true(pads > 0);
    be.ops->im2col(&be, cols, x, g);
    check_exact(what, cols, want, ncols);

    /* col2im: the scatter-add, dx overwritten. */
    double *ref = dalloc(nx), *mag = dalloc(nx);
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < K; j++) {
            long src = patch_src(g, i, j);
            if (src < 0) continue;
            ref[src] += (double)y[i * K + j];
            mag[src] += fabs((double)y[i * K + j]);
        }
    be.ops->fill(&be, dx, nx, -555.0f);
    be.ops->col2im(&be, dx, y, g);
    snprintf(what, sizeof what, "col2im n=%d h=%d w=%d c=%d k=%d pad=%d", g->n, g->h, g->w, g->c, g->k, g->pad);
    check_close(what, dx, ref, mag, nx, 1e-6, 0.0);

    /* Adjointness: <im2col(x), y> == <x, col2im(y)>, both sums in double. */
    double lhs = 0.0, rhs = 0.0, scale = 0.0;
    for (size_t i = 0; i < ncols; i++) {
        lhs += (double)cols[i] * (double)y[i];
        scale += fabs((double)cols[i] * (double)y[i]);
    }
    for (size_t i = 0; i < nx; i++) rhs += (double)x[i] * (double)dx[i];
    if (!(fabs(lhs - rhs) <= 1e-6 * scale))
        fail_msg("%s: <im2col(x),y> = %.12g but <x,col2im(y)> = %.12g", what, lhs, rhs);

    free(ref);
    free(mag);
    release(x);
    release(cols);
    release(want);
    release(dx);
    release(y);
}

static void test_im2col_col2im(void **state)
{
    (void)state;
    mm_rng r;
    mm_rng_seed(&r, 6);
    const mm_conv_geom gs[] = {
        geom(2, 5, 6, 3, 3, 1), geom(2, 5, 6, 3, 5, 2), geom(2, 5, 6, 3, 3, 0), geom(2, 5, 6, 3, 5, 0),
        geom(1, 7, 4, 2, 3, 2), /* pad > k/2: output larger than input */
        geom(3, 4, 4, 1, 1, 0), geom(1, 28, 28, 1, 5, 2), /* the cnn's first layer */
    };
    for (size_t i = 0; i < sizeof gs / sizeof gs[0]; i++) im2col_case(&r, &gs[i]);
}

/* ---- fused convolution ----
 *
 * conv_fwd and conv_bwd against a direct double-precision convolution. The CPU backend takes Winograd
 * F(4x4, 5x5) for 5x5 kernels with channels in multiples of 16 and im2col + GEMM otherwise; the geometries
 * below cover both, odd output sizes (partial tiles), every padding, output channel counts that exercise each
 * register-blocking shape, and batches whose tiles span several blocks. Outputs start as garbage and the
 * scratch as NaN (its contents must not matter). Tolerances are relative to the magnitudes summed (sum of
 * |terms|): 2e-5 for y, dx and db (measured: at most 5.7e-6), 1e-4 for dw (measured: at most 2.5e-5). dw is
 * the loosest because Winograd sums it in the transformed domain, whose terms are much larger than the direct
 * ones (B's entries reach 21/4 in each dimension) and cancel in G^T dU G. */

/* The largest |got - ref| / mag, to report how close the tolerance is. */
static double worst_ratio(const float *got, const double *ref, const double *mag, size_t n)
{
    double worst = 0.0;
    for (size_t i = 0; i < n; i++)
        if (mag[i] > 0.0) worst = fmax(worst, fabs((double)got[i] - ref[i]) / mag[i]);
    return worst;
}

static void conv_case(mm_rng *r, const mm_conv_geom *g, int oc, bool relu)
{
    const int k = g->k, c = g->c;
    const size_t nx = (size_t)g->n * g->h * g->w * c, nw = (size_t)k * k * c * oc,
                 ny = (size_t)g->n * g->oh * g->ow * oc;
    const size_t nscratch = be.ops->conv_scratch(&be, g, oc);
    float *x = falloc(nx), *w = falloc(nw), *bias = falloc(oc), *y = falloc(ny), *dy = falloc(ny), *dx = falloc(nx),
          *dw = falloc(nw), *db = falloc(oc), *scratch = falloc(nscratch);
    fill_uniform(r, x, nx, -1.0, 1.0);
    fill_uniform(r, w, nw, -0.2, 0.2);
    fill_uniform(r, bias, oc, -0.5, 0.5);
    fill_uniform(r, dy, ny, -1.0, 1.0);
    double *yref = dalloc(ny), *ymag = dalloc(ny), *dxref = dalloc(nx), *dxmag = dalloc(nx), *dwref = dalloc(nw),
           *dwmag = dalloc(nw), *dbref = dalloc(oc), *dbmag = dalloc(oc);
    for (int n = 0; n < g->n; n++)
        for (int oy = 0; oy < g->oh; oy++)
            for (int ox = 0; ox < g->ow; ox++)
                for (int o = 0; o < oc; o++) {
                    const size_t yi = (((size_t)n * g->oh + oy) * g->ow + ox) * oc + (size_t)o;
                    double sum = (double)bias[o], mag = fabs((double)bias[o]);
                    dbref[o] += (double)dy[yi];
                    dbmag[o] += fabs((double)dy[yi]);
                    for (int ky = 0; ky < k; ky++)
                        for (int kx = 0; kx < k; kx++) {
                            const int iy = oy + ky - g->pad, ix = ox + kx - g->pad;
                            if (iy < 0 || iy >= g->h || ix < 0 || ix >= g->w) continue;
                            for (int ci = 0; ci < c; ci++) {
                                const size_t xi = (((size_t)n * g->h + iy) * g->w + ix) * c + (size_t)ci,
                                             wi = (((size_t)ky * k + kx) * c + (size_t)ci) * oc + (size_t)o;
                                sum += (double)x[xi] * (double)w[wi];
                                mag += fabs((double)x[xi] * (double)w[wi]);
                                dxref[xi] += (double)dy[yi] * (double)w[wi];
                                dxmag[xi] += fabs((double)dy[yi] * (double)w[wi]);
                                dwref[wi] += (double)dy[yi] * (double)x[xi];
                                dwmag[wi] += fabs((double)dy[yi] * (double)x[xi]);
                            }
                        }
                    yref[yi] = relu && sum < 0.0 ? 0.0 : sum;
                    ymag[yi] = mag;
                }
    char what[128];
    snprintf(what, sizeof what, "conv n=%d h=%d w=%d c=%d k=%d pad=%d oc=%d relu=%d", g->n, g->h, g->w, c, k, g->pad,
             oc, relu);

    be.ops->fill(&be, scratch, nscratch, NAN);
    be.ops->fill(&be, y, ny, 777.0f);
    be.ops->conv_fwd(&be, y, x, w, bias, relu, g, oc, scratch);
    check_close(what, y, yref, ymag, ny, 2e-5, 0.0);

    be.ops->fill(&be, scratch, nscratch, NAN);
    be.ops->fill(&be, dx, nx, -555.0f);
    be.ops->fill(&be, dw, nw, 333.0f);
    be.ops->fill(&be, db, oc, 444.0f);
    be.ops->conv_bwd(&be, dw, db, dx, dy, x, w, g, oc, scratch);
    check_close("conv_bwd dx", dx, dxref, dxmag, nx, 2e-5, 0.0);
    check_close("conv_bwd dw", dw, dwref, dwmag, nw, 1e-4, 0.0);
    check_close("conv_bwd db", db, dbref, dbmag, (size_t)oc, 2e-5, 0.0);

    /* Without dx (a first layer, which may take another method): dw and db alike. */
    float *dw2 = falloc(nw), *db2 = falloc(oc);
    be.ops->fill(&be, scratch, nscratch, NAN);
    be.ops->fill(&be, dw2, nw, 333.0f);
    be.ops->fill(&be, db2, oc, 444.0f);
    be.ops->conv_bwd(&be, dw2, db2, NULL, dy, x, w, g, oc, scratch);
    check_close("conv_bwd dw without dx", dw2, dwref, dwmag, nw, 1e-4, 0.0);
    check_close("conv_bwd db without dx", db2, dbref, dbmag, (size_t)oc, 2e-5, 0.0);
    print_message("%s: worst error / magnitude: y %.2g, dx %.2g, dw %.2g, db %.2g; without dx: dw %.2g, db %.2g\n",
                  what, worst_ratio(y, yref, ymag, ny), worst_ratio(dx, dxref, dxmag, nx),
                  worst_ratio(dw, dwref, dwmag, nw), worst_ratio(db, dbref, dbmag, (size_t)oc),
                  worst_ratio(dw2, dwref, dwmag, nw), worst_ratio(db2, dbref, dbmag, (size_t)oc));

    double *bufs[] = {yref, ymag, dxref, dxmag, dwref, dwmag, dbref, dbmag};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    float *fbufs[] = {x, w, bias, y, dy, dx, dw, db, scratch, dw2, db2};
    for (size_t i = 0; i < sizeof fbufs / sizeof fbufs[0]; i++) release(fbufs[i]);
}

static void test_conv(void **state)
{
    (void)state;
    mm_rng r;
    mm_rng_seed(&r, 8);
    assert_non_null(be.ops->conv_scratch);
    static const struct {
        int n, h, w, c, k, pad, oc;
    } cs[] = {
        {5, 14, 14, 32, 5, 2, 64}, /* the cnn's conv2: 80 tiles (partial ones at the edges), four blocks */
        {2, 7, 9, 16, 5, 2, 16},   /* odd output sizes: tiles that stick out */
        {1, 9, 8, 16, 5, 0, 32},   /* no padding */
        {2, 6, 5, 16, 5, 1, 48},   /* 48 output channels: three vectors */
        {1, 5, 5, 80, 5, 2, 16},   /* 80 input channels: dx in a chunk of four vectors and one of one */
        {1, 3, 4, 16, 5, 4, 16},   /* pad > k/2: output larger than input */
        {5, 28, 28, 1, 5, 2, 32},  /* the cnn's conv1: direct, and im2col (blocks of 3 images) for dx */
        {2, 9, 17, 1, 5, 1, 64},   /* direct: rows of 14 + 1 outputs, two chunks of 32 channels */
        {1, 8, 8, 1, 5, 0, 32},    /* direct, no padding */
        {2, 6, 5, 3, 3, 1, 7},     /* im2col, odd channel counts */
        {1, 5, 5, 16, 3, 1, 16},   /* 3x3 with channels that Winograd F(2x2, 5x5) would take if it were 5x5 */
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++)
        for (int relu = 0; relu < 2; relu++) {
            mm_conv_geom g = geom(cs[i].n, cs[i].h, cs[i].w, cs[i].c, cs[i].k, cs[i].pad);
            conv_case(&r, &g, cs[i].oc, relu);
        }
}

/* ---- maxpool ---- */

/* ---- fused linear layer ----
 *
 * linear_fwd and linear_bwd against double precision, on shapes that take the CPU backend's own GEMM (out of
 * at least two vectors: panels of 64 columns and a partial last vector, odd row counts for every row-group
 * remainder, K past one packed block) and OpenBLAS (out = 10). Tolerance as for gemm, relative to the
 * magnitudes summed. */
static void linear_case(mm_rng *r, int rows, int in, int out, bool relu, bool mask)
{
    const size_t nx = (size_t)rows * in, nw = (size_t)in * out, ny = (size_t)rows * out;
    float *x = falloc(nx), *w = falloc(nw), *bias = falloc(out), *y = falloc(ny), *dy = falloc(ny), *dx = falloc(nx),
          *dw = falloc(nw), *db = falloc(out);
    fill_uniform(r, x, nx, -1.0, 1.0);
    fill_uniform(r, w, nw, -1.0, 1.0);
    fill_uniform(r, bias, out, -1.0, 1.0);
    fill_uniform(r, dy, ny, -1.0, 1.0);
    double *yref = dalloc(ny), *ymag = dalloc(ny), *dxref = dalloc(nx), *dxmag = dalloc(nx), *dwref = dalloc(nw),
           *dwmag = dalloc(nw), *dbref = dalloc(out), *dbmag = dalloc(out);
    for (int i = 0; i < rows; i++)
        for (int o = 0; o < out; o++) {
            const size_t yi = (size_t)i * out + o;
            double s = (double)bias[o], m = fabs((double)bias[o]);
            dbref[o] += (double)dy[yi];
            dbmag[o] += fabs((double)dy[yi]);
            for (int k = 0; k < in; k++) {
                const size_t xi = (size_t)i * in + k, wi = (size_t)k * out + o;
                s += (double)x[xi] * (double)w[wi];
                m += fabs((double)x[xi] * (double)w[wi]);
                dxref[xi] += (double)dy[yi] * (double)w[wi];
                dxmag[xi] += fabs((double)dy[yi] * (double)w[wi]);
                dwref[wi] += (double)x[xi] * (double)dy[yi];
                dwmag[wi] += fabs((double)x[xi] * (double)dy[yi]);
            }
            yref[yi] = relu && !(s > 0.0) ? 0.0 : s;
            ymag[yi] = m;
        }
    if (mask)
        for (size_t i = 0; i < nx; i++)
            if (!(x[i] > 0.0f)) dxref[i] = dxmag[i] = 0.0;
    char what[96];
    snprintf(what, sizeof what, "linear rows=%d in=%d out=%d relu=%d mask=%d", rows, in, out, relu, mask);
    be.ops->fill(&be, y, ny, 777.0f);
    be.ops->linear_fwd(&be, y, x, w, bias, rows, in, out, relu);
    check_close(what, y, yref, ymag, ny, 1e-5, 1e-7);
    be.ops->fill(&be, dx, nx, -555.0f);
    be.ops->fill(&be, dw, nw, 333.0f);
    be.ops->fill(&be, db, out, 444.0f);
    be.ops->linear_bwd(&be, dw, db, dx, dy, x, w, rows, in, out, mask);
    check_close("linear_bwd dx", dx, dxref, dxmag, nx, 1e-5, 1e-7);
    check_close("linear_bwd dw", dw, dwref, dwmag, nw, 1e-5, 1e-7);
    check_close("linear_bwd db", db, dbref, dbmag, (size_t)out, 1e-5, 1e-7);
    be.ops->fill(&be, dw, nw, 333.0f);
    be.ops->linear_bwd(&be, dw, db, NULL, dy, x, w, rows, in, out, mask); /* a first layer: no dx */
    check_close("linear_bwd dw without dx", dw, dwref, dwmag, nw, 1e-5, 1e-7);
    double *bufs[] = {yref, ymag, dxref, dxmag, dwref, dwmag, dbref, dbmag};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    float *fbufs[] = {x, w, bias, y, dy, dx, dw, db};
    for (size_t i = 0; i < sizeof fbufs / sizeof fbufs[0]; i++) release(fbufs[i]);
}

static void test_linear(void **state)
{
    (void)state;
    assert_non_null(be.ops->linear_fwd);
    assert_non_null(be.ops->linear_bwd);
    mm_rng r;
    mm_rng_seed(&r, 7);
    static const int cs[][3] = {
        {128, 784, 512}, /* the mlp's layers */
        {128, 512, 256},
        {128, 256, 10},
        {37, 300, 40},   /* a partial vector (40 = 2 x 16 + 8), K past one block, 6 x 6 + 1 rows */
        {13, 64, 70},    /* two panels, the second of 6 columns; 12 + 1 rows */
        {5, 33, 100},    /* 5 rows: a group smaller than one full */
        {1, 3, 17},
        {4, 20, 10},
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++)
        for (int v = 0; v < 4; v++) linear_case(&r, cs[i][0], cs[i][1], cs[i][2], v & 1, v & 2);
}

static void maxpool_case(mm_rng *r, int n, int h, int w, int c)
{
    const int oh = h / 2, ow = w / 2;
    const size_t nx = (size_t)n * h * w * c, ny = (size_t)n * oh * ow * c;
    float *x = falloc(nx), *y = falloc(ny), *dy = falloc(ny), *dx = falloc(nx);
    uint32_t *arg = be.ops->alloc(&be, ny * sizeof *arg);
    assert_non_null(arg);
    /* Values from a small set so that ties are common. */
    for (size_t i = 0; i < nx; i++) x[i] = (float)mm_rng_below(r, 4) - 1.5f;
    /* And a window of all-equal values per image/channel 0: its argmax is the top-left. */
    for (int i = 0; i < n; i++)
        for (int dyy = 0; dyy < 2; dyy++)
            for (int dxx = 0; dxx < 2; dxx++) x[(((size_t)i * h + dyy) * w + dxx) * c] = 0.5f;
    be.ops->maxpool_fwd(&be, y, arg, x, n, h, w, c);
    size_t ties = 0;
    for (int i = 0; i < n; i++)
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++)
                for (int ch = 0; ch < c; ch++) {
                    /* Window order: (0,0), (0,1), (1,0), (1,1); the first maximum wins. */
                    size_t best = 0;
                    float bv = -INFINITY;
                    int eq = 0;
                    for (int d = 0; d < 4; d++) {
                        size_t idx = (((size_t)i * h + 2 * oy + d / 2) * w + 2 * ox + d % 2) * c + (size_t)ch;
                        if (x[idx] > bv) best = idx, bv = x[idx], eq = 0;
                        else if (x[idx] == bv) eq = 1;
                    }
                    ties += (size_t)eq;
                    size_t o = (((size_t)i * oh + oy) * ow + ox) * c + (size_t)ch;
                    if (arg[o] != best) fail_msg("maxpool arg[%zu] = %u, want %zu", o, arg[o], best);
                    assert_true(y[o] == bv);
                    if (oy == 0 && ox == 0 && ch == 0) assert_int_equal(arg[o], (((size_t)i * h) * w) * c);
                }
    assert_true(ties > 0);

    fill_uniform(r, dy, ny, -1.0, 1.0);
    be.ops->fill(&be, dx, nx, 9.0f); /* overwritten */
    be.ops->maxpool_bwd(&be, dx, dy, arg, ny, nx);
    float *want = calloc(nx, sizeof *want);
    assert_non_null(want);
    for (size_t i = 0; i < ny; i++) want[arg[i]] = dy[i];
    check_exact("maxpool_bwd", dx, want, nx);
    free(want);
    release(x);
    release(y);
    release(dy);
    release(dx);
    release(arg);
}

static void test_maxpool(void **state)
{
    (void)state;
    mm_rng r;
    mm_rng_seed(&r, 7);
    maxpool_case(&r, 2, 6, 4, 3);
    maxpool_case(&r, 2, 5, 7, 3); /* odd: the last row and column are dropped */
    maxpool_case(&r, 1, 2, 2, 1);
}

/* ---- softmax cross-entropy ---- */

/* Reference loss sum, correct count and dlogits (may be NULL) in double. */
static void xent_ref(const float *z, const int32_t *labels, int rows, int cols, double *loss, int *correct,
                     double *dlogits)
{
    *loss = 0.0;
    *correct = 0;
    for (int r = 0; r < rows; r++) {
        const float *zr = z + (size_t)r * cols;
        int best = 0;
        for (int c = 1; c < cols; c++)
            if (zr[c] > zr[best]) best = c;
        double mx = (double)zr[best], s = 0.0;
        for (int c = 0; c < cols; c++) s += exp((double)zr[c] - mx);
        *loss += log(s) - ((double)zr[labels[r]] - mx);
        *correct += best == labels[r];
        if (dlogits)
            for (int c = 0; c < cols; c++)
                dlogits[(size_t)r * cols + c] = (exp((double)zr[c] - mx) / s - (c == labels[r])) / rows;
    }
}

static void xent_case(const float *zhost, const int32_t *lhost, int rows, int cols)
{
    const size_t n = (size_t)rows * cols;
    float *z = falloc(n), *d = falloc(n), *stats = falloc(2);
    int32_t *labels = be.ops->alloc(&be, (size_t)rows * sizeof *labels);
    assert_non_null(labels);
    memcpy(z, zhost, n * sizeof *z);
    memcpy(labels, lhost, (size_t)rows * sizeof *labels);
    double loss, *dref = dalloc(n);
    int correct;
    xent_ref(z, labels, rows, cols, &loss, &correct, dref);
    assert_true(isfinite(loss));

    stats[0] = 1.5f;
    stats[1] = 2.0f;
    be.ops->fill(&be, d, n, 42.0f);
    be.ops->softmax_xent(&be, d, stats, z, labels, rows, cols);
    for (size_t i = 0; i < n; i++) assert_true(isfinite(d[i]));
    check_close("dlogits", d, dref, NULL, n, 1e-5, 1e-7);
    double want0 = 1.5 + loss;
    if (!(fabs((double)stats[0] - want0) <= 1e-5 * fabs(want0) + 1e-6))
        fail_msg("loss sum %.9g, want %.9g", (double)stats[0], want0);
    assert_true(stats[1] == 2.0f + (float)correct);
    /* Each row of dlogits sums to 0. */
    for (int r = 0; r < rows; r++) {
        double s = 0.0;
        for (int c = 0; c < cols; c++) s += (double)d[(size_t)r * cols + c];
        assert_true(fabs(s) <= 1e-6);
    }

    /* Evaluation only: dlogits NULL, stats accumulate once more. */
    be.ops->softmax_xent(&be, NULL, stats, z, labels, rows, cols);
    want0 = 1.5 + 2.0 * loss;
    if (!(fabs((double)stats[0] - want0) <= 1e-5 * fabs(want0) + 1e-6))
        fail_msg("loss sum after eval %.9g, want %.9g", (double)stats[0], want0);
    assert_true(stats[1] == 2.0f + 2.0f * (float)correct);

    free(dref);
    release(z);
    release(d);
    release(stats);
    release(labels);
}

static void test_softmax_xent(void **state)
{
    (void)state;
    mm_rng r;
    mm_rng_seed(&r, 8);
    enum { ROWS = 6, COLS = 7 };
    float z[ROWS * COLS];
    int32_t labels[ROWS];
    fill_uniform(&r, z, ROWS * COLS, -3.0, 3.0);
    for (int i = 0; i < ROWS; i++) labels[i] = (int32_t)mm_rng_below(&r, COLS);
    /* Make some predictions right: row 0's label is its argmax. */
    int best = 0;
    for (int c = 1; c < COLS; c++)
        if (z[c] > z[best]) best = c;
    labels[0] = best;
    xent_case(z, labels, ROWS, COLS);

    /* Large logits: no overflow (exp(1000) is inf in double too). */
    for (int i = 0; i < ROWS * COLS; i++) z[i] = 1000.0f + (float)(i % COLS) - 3.0f;
    z[COLS + 2] = -1000.0f;
    xent_case(z, labels, ROWS, COLS);
    /* And exact hand values: logits {1000, 1000}, label 1: loss log 2,
     * dlogits {1/2, -1/2}, argmax 0 (ties go to the first). */
    {
        float *zz = falloc(2), *d = falloc(2), *stats = falloc(2);
        int32_t *y = be.ops->alloc(&be, sizeof *y);
        assert_non_null(y);
        zz[0] = zz[1] = 1000.0f;
        y[0] = 1;
        be.ops->softmax_xent(&be, d, stats, zz, y, 1, 2);
        assert_true(fabs((double)stats[0] - log(2.0)) <= 1e-6);
        assert_true(stats[1] == 0.0f);
        assert_true(fabs((double)d[0] - 0.5) <= 1e-7 && fabs((double)d[1] + 0.5) <= 1e-7);
        y[0] = 0;
        be.ops->softmax_xent(&be, d, stats, zz, y, 1, 2);
        assert_true(stats[1] == 1.0f);
        /* A confident, wrong row: loss = 2000 exactly. */
        zz[0] = 1000.0f;
        zz[1] = -1000.0f;
        y[0] = 1;
        stats[0] = stats[1] = 0.0f;
        be.ops->softmax_xent(&be, d, stats, zz, y, 1, 2);
        assert_true(fabs((double)stats[0] - 2000.0) <= 1e-3);
        assert_true(d[0] == 1.0f && d[1] == -1.0f);
        release(zz);
        release(d);
        release(stats);
        release(y);
    }
}

/* ---- optimizers ---- */

/* Hand-computed: p = 1, g = 0.5 every step, lr 0.1, momentum 0.9, wd 0.1:
 *   plain:    g' = 0.6, v = 0.6, p = 0.94; g' = 0.594, v = 1.134, p = 0.8266;
 *             g' = 0.58266, v = 1.60326, p = 0.666274
 *   nesterov: p = 1 - 0.1 (0.6 + 0.54) = 0.886; then 0.725566; then 0.525363646 */
static void test_sgd_hand(void **state)
{
    (void)state;
    static const double plain[3] = {0.94, 0.8266, 0.666274}, nest[3] = {0.886, 0.725566, 0.525363646};
    for (int nesterov = 0; nesterov < 2; nesterov++) {
        float *p = falloc(1), *g = falloc(1), *v = falloc(1);
        p[0] = 1.0f;
        g[0] = 0.5f;
        mm_opt_step s = {.lr = 0.1f, .momentum = 0.9f, .weight_decay = 0.1f, .nesterov = nesterov, .grad_scale = 1.0f};
        for (int t = 0; t < 3; t++) {
            be.ops->sgd_step(&be, p, g, v, 1, &s);
            double want = nesterov ? nest[t] : plain[t];
            if (!(fabs((double)p[0] - want) <= 1e-6))
                fail_msg("sgd nesterov=%d step %d: p = %.9g, want %.9g", nesterov, t, (double)p[0], want);
        }
        release(p);
        release(g);
        release(v);
    }
}

/* Several steps of SGD through mm_optimizer_* on a vector, against a double
 * reference of the PyTorch rule, with the warm-up schedule in play. */
static void test_sgd_optimizer(void **state)
{
    (void)state;
    mm_rng r;
    mm_rng_seed(&r, 9);
    enum { N = 19, STEPS = 5 };
    for (int variant = 0; variant < 3; variant++) {
        mm_opt_config cfg = mm_opt_defaults();
        cfg.kind = MM_OPT_SGD;
        cfg.lr = 0.2f;
        cfg.momentum = variant == 2 ? 0.0f : 0.8f;
        cfg.nesterov = variant == 1;
        cfg.weight_decay = variant == 2 ? 0.0f : 0.05f;
        cfg.warmup_steps = 2;
        cfg.total_steps = 10;
        cfg.final_frac = 0.1f;
        mm_optimizer o;
        mm_error err;
        assert_int_equal(mm_optimizer_init(&o, &cfg, &be, N, &err), MM_OK);
        float *p = falloc(N), *g = falloc(N);
        fill_uniform(&r, p, N, -1.0, 1.0);
        double rp[N], rv[N] = {0};
        for (int i = 0; i < N; i++) rp[i] = (double)p[i];
        for (int t = 0; t < STEPS; t++) {
            fill_uniform(&r, g, N, -1.0, 1.0);
            double lr = (double)mm_opt_lr(&cfg, (uint64_t)t), mu = (double)cfg.momentum, wd = (double)cfg.weight_decay;
            for (int i = 0; i < N; i++) {
                double gi = (double)g[i] + wd * rp[i];
                rv[i] = mu * rv[i] + gi;
                rp[i] -= lr * (cfg.nesterov ? gi + mu * rv[i] : rv[i]);
            }
            mm_optimizer_step(&o, p, g);
            assert_int_equal(o.t, (uint64_t)t + 1);
            char what[48];
            snprintf(what, sizeof what, "sgd variant %d step %d", variant, t);
            check_close(what, p, rp, NULL, N, 1e-5, 1e-6);
            check_close("sgd momentum", o.v, rv, NULL, N, 1e-5, 1e-6);
        }
        release(p);
        release(g);
        mm_optimizer_free(&o);
    }
    /* Momentum 0, no decay, warm-up 4: step t moves p by exactly lr (t+1)/4 * g. */
    mm_opt_config cfg = mm_opt_defaults();
    cfg.lr = 0.5f;
    cfg.momentum = 0.0f;
    cfg.nesterov = false;
    cfg.weight_decay = 0.0f;
    cfg.warmup_steps = 4;
    mm_optimizer o;
    assert_int_equal(mm_optimizer_init(&o, &cfg, &be, 1, NULL), MM_OK);
    float *p = falloc(1), *g = falloc(1);
    g[0] = 1.0f;
    double want = 0.0;
    for (int t = 0; t < 6; t++) {
        mm_optimizer_step(&o, p, g);
        want -= 0.5 * (t < 4 ? (t + 1) / 4.0 : 1.0);
        assert_true(fabs((double)p[0] - want) <= 1e-6);
    }
    release(p);
    release(g);
    mm_optimizer_free(&o);
}

/* Three AdamW steps through mm_optimizer_* (which supplies bias1/bias2)
 * against PyTorch's rule in double:
 *   m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 *   p = p (1 - lr wd) - lr (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps).
 * eps is large next to sqrt(v) here so its placement matters. */
static void test_adamw(void **state)
{
    (void)state;
    mm_rng r;
    mm_rng_seed(&r, 10);
    enum { N = 23, STEPS = 3 };
    mm_opt_config cfg = mm_opt_defaults();
    cfg.kind = MM_OPT_ADAMW;
    cfg.lr = 0.01f;
    cfg.weight_decay = 0.1f;
    cfg.beta1 = 0.9f;
    cfg.beta2 = 0.99f;
    cfg.eps = 1e-3f;
    mm_optimizer o;
    mm_error err;
    assert_int_equal(mm_optimizer_init(&o, &cfg, &be, N, &err), MM_OK);
    assert_non_null(o.m);
    assert_non_null(o.v);
    float *p = falloc(N), *g = falloc(N);
    fill_uniform(&r, p, N, -1.0, 1.0);
    double rp[N], rm[N] = {0}, rv[N] = {0}, mmag[N] = {0};
    for (int i = 0; i < N; i++) rp[i] = (double)p[i];
    const double lr = (double)cfg.lr, b1 = (double)cfg.beta1, b2 = (double)cfg.beta2, eps = (double)cfg.eps,
                 wd = (double)cfg.weight_decay;
    for (int t = 1; t <= STEPS; t++) {
        /* Gradients spanning 1e-4 .. 1, both signs. */
        for (int i = 0; i < N; i++) {
            double mag = pow(10.0, -4.0 + 4.0 * mm_rng_uniform(&r));
            g[i] = (float)(mm_rng_uniform(&r) < 0.5 ? -mag : mag);
        }
        double bias1 = 1.0 - pow(b1, t), bias2 = 1.0 - pow(b2, t);
        for (int i = 0; i < N; i++) {
            double gi = (double)g[i];
            rm[i] = b1 * rm[i] + (1.0 - b1) * gi;
            mmag[i] = b1 * mmag[i] + (1.0 - b1) * fabs(gi); /* m can cancel: compare relative to this */
            rv[i] = b2 * rv[i] + (1.0 - b2) * gi * gi;
            rp[i] = rp[i] * (1.0 - lr * wd) - lr * (rm[i] / bias1) / (sqrt(rv[i] / bias2) + eps);
        }
        mm_optimizer_step(&o, p, g);
        /* Each step moves p by at most about lr; allow a 1e-4 relative error on that move. */
        char what[32];
        snprintf(what, sizeof what, "adamw step %d", t);
        check_close(what, p, rp, NULL, N, 1e-6, 1e-4 * lr);
        check_close("adamw m", o.m, rm, mmag, N, 1e-6, 0.0);
        check_close("adamw v", o.v, rv, NULL, N, 1e-5, 1e-15);
    }
    release(p);
    release(g);
    mm_optimizer_free(&o);
    assert_null(o.be);
}

static void test_optimizer_bad_lr(void **state)
{
    (void)state;
    mm_opt_config cfg = mm_opt_defaults();
    mm_optimizer o;
    mm_error err = {0};
    cfg.lr = 0.0f;
    assert_int_equal(mm_optimizer_init(&o, &cfg, &be, 4, &err), MM_ERR_INVALID);
    assert_non_null(strstr(err.msg, "learning rate"));
    cfg.lr = NAN;
    assert_int_equal(mm_optimizer_init(&o, &cfg, &be, 4, &err), MM_ERR_INVALID);
    mm_optimizer_free(&o); /* harmless after a failed init */
}

static void test_lr_schedule(void **state)
{
    (void)state;
    mm_opt_config c = mm_opt_defaults();
    c.lr = 0.1f;
    c.warmup_steps = 10;
    c.total_steps = 110;
    c.final_frac = 0.1f;
    const double lr = (double)c.lr, ff = (double)c.final_frac;
#define LR_AT(t, want) assert_true(fabs((double)mm_opt_lr(&c, (t)) - (want)) <= 1e-6 * lr)
    LR_AT(0, lr / 10.0);             /* linear warm-up from lr/warmup ... */
    LR_AT(4, lr * 5.0 / 10.0);
    LR_AT(9, lr);                    /* ... reaching lr at its last step */
    LR_AT(10, lr);                   /* warm-up end: the cosine starts at lr */
    LR_AT(60, lr * (ff + (1.0 - ff) * 0.5)); /* halfway */
    LR_AT(35, lr * (ff + (1.0 - ff) * 0.5 * (1.0 + cos(3.141592653589793 * 0.25))));
    LR_AT(110, lr * ff);             /* the end */
    LR_AT(1000, lr * ff);            /* and stays there */
    /* Non-increasing after warm-up. */
    for (uint64_t t = 10; t < 120; t++) assert_true(mm_opt_lr(&c, t + 1) <= mm_opt_lr(&c, t));
    /* No decay configured: constant after warm-up. */
    c.total_steps = 0;
    LR_AT(10, lr);
    LR_AT(100000, lr);
    /* No warm-up, cosine to 0. */
    c.warmup_steps = 0;
    c.total_steps = 100;
    c.final_frac = 0.0f;
    LR_AT(0, lr);
    LR_AT(50, lr * 0.5);
    LR_AT(100, 0.0);
#undef LR_AT
}

/* Global-norm clipping: a gradient of norm 10 clipped to 1 moves plain SGD
 * by lr * g / 10; below the bound nothing changes. */
static void test_grad_clipping(void **state)
{
    (void)state;
    mm_opt_config c = mm_opt_defaults();
    c.momentum = 0.0f;
    c.nesterov = false;
    c.weight_decay = 0.0f;
    c.lr = 0.5f;
    c.clip_norm = 1.0f;
    mm_optimizer o;
    assert_int_equal(mm_optimizer_init(&o, &c, &be, 4, NULL), 0);
    float p[4] = {0, 0, 0, 0}, g[4] = {6, 0, 8, 0}; /* norm 10 */
    mm_optimizer_step(&o, p, g);
    assert_true(fabsf(p[0] + 0.5f * 0.6f) < 1e-6f && fabsf(p[2] + 0.5f * 0.8f) < 1e-6f);
    float q[4] = {0, 0, 0, 0}, h[4] = {0.3f, 0, 0.4f, 0}; /* norm 0.5: untouched */
    mm_optimizer_step(&o, q, h);
    assert_true(fabsf(q[0] + 0.5f * 0.3f) < 1e-6f && fabsf(q[2] + 0.5f * 0.4f) < 1e-6f);
    assert_true(fabs(be.ops->sumsq(&be, g, 4) - 100.0) < 1e-9);
    mm_optimizer_free(&o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grad_clipping),
        cmocka_unit_test(test_alloc_copy),
        cmocka_unit_test(test_gemm),
        cmocka_unit_test(test_bias_act),
        cmocka_unit_test(test_relu_bwd),
        cmocka_unit_test(test_col_sum),
        cmocka_unit_test(test_merge),
        cmocka_unit_test(test_im2col_col2im),
        cmocka_unit_test(test_conv),
        cmocka_unit_test(test_linear),
        cmocka_unit_test(test_maxpool),
        cmocka_unit_test(test_softmax_xent),
        cmocka_unit_test(test_sgd_hand),
        cmocka_unit_test(test_sgd_optimizer),
        cmocka_unit_test(test_adamw),
        cmocka_unit_test(test_optimizer_bad_lr),
        cmocka_unit_test(test_lr_schedule),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
