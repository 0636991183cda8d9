/* The CPU backend: OpenBLAS for matrix products, plain C loops (written so
 * the compiler vectorises them) for everything else. Single-threaded apart
 * from OpenBLAS's own pool: one compute pool per process (DESIGN.md). */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "conv_cpu.h"
#include "linear_cpu.h"

/* Not declared by every cblas.h. */
extern void openblas_set_num_threads(int num_threads);

static void *cpu_alloc(mm_backend *be, size_t bytes)
{
    (void)be;
    size_t rounded = (bytes + 63) / 64 * 64;
    void *p = aligned_alloc(64, rounded ? rounded : 64);
    if (p) memset(p, 0, rounded ? rounded : 64);
    return p;
}

static void cpu_release(mm_backend *be, void *p)
{
    (void)be;
    free(p);
}

static void cpu_copy(mm_backend *be, void *dst, const void *src, size_t bytes)
{
    (void)be;
    if (bytes) memmove(dst, src, bytes);
}

static void cpu_fill(mm_backend *be, float *x, size_t n, float v)
{
    (void)be;
    for (size_t i = 0; i < n; i++) x[i] = v;
}

static void cpu_sync(mm_backend *be) { (void)be; }

static void cpu_gemm(mm_backend *be, bool ta, bool tb, int m, int n, int k, float alpha, const float *a, int lda,
                     const float *b, int ldb, float beta, float *c, int ldc)
{
    (void)be;
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda,
                b, ldb, beta, c, ldc);
}

static void cpu_bias_act(mm_backend *be, float *restrict y, const float *restrict bias, int rows, int cols, bool relu)
{
    (void)be;
    for (int r = 0; r < rows; r++) {
        float *restrict row = y + (size_t)r * cols;
        if (relu)
            for (int c = 0; c < cols; c++) {
                float v = row[c] + bias[c];
                row[c] = v > 0.0f ? v : 0.0f;
            }
        else
            for (int c = 0; c < cols; c++) row[c] += bias[c];
    }
}

static void cpu_relu_bwd(mm_backend *be, float *restrict dy, const float *restrict y, size_t n)
{
    (void)be;
    for (size_t i = 0; i < n; i++) dy[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

static void cpu_col_sum(mm_backend *be, float *restrict db, const float *restrict dy, int rows, int cols)
{
    (void)be;
    for (int c = 0; c < cols; c++) db[c] = 0.0f;
    for (int r = 0; r < rows; r++) {
        const float *restrict row = dy + (size_t)r * cols;
        for (int c = 0; c < cols; c++) db[c] += row[c];
    }
}

static void cpu_im2col(mm_backend *be, float *cols, const float *x, const mm_conv_geom *g)
{
    (void)be;
    mm_cpu_im2col(cols, x, g);
}

static void cpu_col2im(mm_backend *be, float *dx, const float *dcols, const mm_conv_geom *g)
{
    (void)be;
    mm_cpu_col2im(dx, dcols, g);
}

static size_t cpu_conv_scratch(mm_backend *be, const mm_conv_geom *g, int oc)
{
    (void)be;
    return mm_cpu_conv_scratch(g, oc);
}

static void cpu_conv_fwd(mm_backend *be, float *y, const float *x, const float *w, const float *bias, bool relu,
                         const mm_conv_geom *g, int oc, float *scratch)
{
    (void)be;
    mm_cpu_conv_fwd(y, x, w, bias, relu, g, oc, scratch);
}

static void cpu_conv_bwd(mm_backend *be, float *dw, float *db, float *dx, const float *dy, const float *x,
                         const float *w, const mm_conv_geom *g, int oc, float *scratch)
{
    (void)be;
    mm_cpu_conv_bwd(dw, db, dx, dy, x, w, g, oc, scratch);
}

static void cpu_linear_fwd(mm_backend *be, float *y, const float *x, const float *w, const float *bias, int rows,
                           int in, int out, bool relu)
{
    (void)be;
    mm_cpu_linear_fwd(y, x, w, bias, rows, in, out, relu);
}

static void cpu_linear_bwd(mm_backend *be, float *dw, float *db, float *dx, const float *dy, const float *x,
                           const float *w, int rows, int in, int out, bool mask)
{
    (void)be;
    mm_cpu_linear_bwd(dw, db, dx, dy, x, w, rows, in, out, mask);
}

static void cpu_maxpool_fwd(mm_backend *be, float *restrict y, uint32_t *restrict arg, const float *restrict x, int n,
                            int h, int w, int c)
{
    (void)be;
    const int oh = h / 2, ow = w / 2;
    for (int i = 0; i < n; i++)
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++) {
                const size_t base = (((size_t)i * h + 2 * oy) * w + 2 * ox) * c;
                const size_t q[4] = {base, base + (size_t)c, base + (size_t)w * c, base + (size_t)w * c + c};
                const size_t o = (((size_t)i * oh + oy) * ow + ox) * c;
                for (int ch = 0; ch < c; ch++) {
                    size_t best = q[0] + ch;
                    for (int j = 1; j < 4; j++)
                        if (x[q[j] + ch] > x[best]) best = q[j] + ch;
                    y[o + ch] = x[best];
                    arg[o + ch] = (uint32_t)best;
                }
            }
}

static void cpu_maxpool_bwd(mm_backend *be, float *restrict dx, const float *restrict dy, const uint32_t *restrict arg,
                            size_t ny, size_t nx)
{
    (void)be;
    /* Clearing dx in one memset and then scattering into it would stream dx through the cache twice. Instead,
     * per chunk of outputs, clear dx from where the previous chunk stopped clearing up to this chunk's largest
     * index, then scatter into that while it is in cache. Correct for any arg: each index is either in the part
     * just cleared or below it (cleared before), and nothing is cleared after it was written. */
    size_t cleared = 0;
    for (size_t i0 = 0; i0 < ny; i0 += 2048) {
        const size_t i1 = ny - i0 < 2048 ? ny : i0 + 2048;
        size_t hi = cleared;
        for (size_t i = i0; i < i1; i++) hi = arg[i] + (size_t)1 > hi ? arg[i] + (size_t)1 : hi;
        if (hi > cleared) memset(dx + cleared, 0, (hi - cleared) * sizeof *dx);
        cleared = hi;
        for (size_t i = i0; i < i1; i++) dx[arg[i]] = dy[i];
    }
    if (nx > cleared) memset(dx + cleared, 0, (nx - cleared) * sizeof *dx);
}

static void cpu_softmax_xent(mm_backend *be, float *dlogits, float *stats, const float *logits, const int32_t *labels,
                             int rows, int cols)
{
    (void)be;
    double loss = 0.0;
    int correct = 0;
    const float inv = 1.0f / (float)rows;
    for (int r = 0; r < rows; r++) {
        const float *z = logits + (size_t)r * cols;
        int best = 0;
        for (int c = 1; c < cols; c++)
            if (z[c] > z[best]) best = c;
        const float mx = z[best];
        double sum = 0.0;
        for (int c = 0; c < cols; c++) sum += exp((double)(z[c] - mx));
        const int y = labels[r];
        loss += log(sum) - (double)(z[y] - mx);
        correct += best == y;
        if (dlogits) {
            float *d = dlogits + (size_t)r * cols;
            for (int c = 0; c < cols; c++)
                d[c] = ((float)(exp((double)(z[c] - mx)) / sum) - (c == y ? 1.0f : 0.0f)) * inv;
        }
    }
    stats[0] += (float)loss;
    stats[1] += (float)correct;
}

static void cpu_sgd_step(mm_backend *be, float *restrict p, const float *restrict g, float *restrict v, size_t n,
                         const mm_opt_step *s)
{
    (void)be;
    const float lr = s->lr, mu = s->momentum, wd = s->weight_decay, gs = s->grad_scale;
    if (s->nesterov)
        for (size_t i = 0; i < n; i++) {
            float gi = gs * g[i] + wd * p[i], vi = mu * v[i] + gi;
            v[i] = vi;
            p[i] -= lr * (gi + mu * vi);
        }
    else
        for (size_t i = 0; i < n; i++) {
            float vi = mu * v[i] + gs * g[i] + wd * p[i];
            v[i] = vi;
            p[i] -= lr * vi;
        }
}

static void cpu_adamw_step(mm_backend *be, float *restrict p, const float *restrict g, float *restrict m,
                           float *restrict v, size_t n, const mm_opt_step *s)
{
    (void)be;
    const float b1 = s->beta1, b2 = s->beta2, decay = 1.0f - s->lr * s->weight_decay, gs = s->grad_scale;
    const float step = s->lr / s->bias1, inv_sqrt_b2 = 1.0f / sqrtf(s->bias2);
    for (size_t i = 0; i < n; i++) {
        const float gi = gs * g[i];
        float mi = b1 * m[i] + (1.0f - b1) * gi;
        float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * decay - step * mi / (sqrtf(vi) * inv_sqrt_b2 + s->eps);
    }
}

static double cpu_sumsq(mm_backend *be, const float *x, size_t n)
{
    (void)be;
    /* Blocks of float sums (vectorisable), combined in double. */
    double total = 0.0;
    for (size_t i = 0; i < n; i += 4096) {
        size_t end = i + 4096 < n ? i + 4096 : n;
        float acc = 0.0f;
        for (size_t j = i; j < end; j++) acc += x[j] * x[j];
        total += (double)acc;
    }
    return total;
}

static void cpu_merge(mm_backend *be, float *restrict x, const float *restrict a, const float *restrict b, float w,
                      size_t n)
{
    (void)be;
    for (size_t i = 0; i < n; i++) x[i] += w * (a[i] - b[i]);
}

static void cpu_gather_u8(mm_backend *be, float *x, int32_t *y, const uint8_t *images, const uint8_t *labels,
                          const uint32_t *idx, uint32_t n, uint32_t pixels, const float *table)
{
    (void)be;
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *src = images + (size_t)idx[i] * pixels;
        float *dst = x + (size_t)i * pixels;
        for (uint32_t j = 0; j < pixels; j++) dst[j] = table[src[j]];
        y[i] = labels[idx[i]];
    }
}

/* Every op but the name, host_visible and gather_u8, shared by the two tables. */
#define CPU_OPS_COMMON                                                                                             \
    .alloc = cpu_alloc,                                                                                            \
    .release = cpu_release,                                                                                        \
    .to_device = cpu_copy,                                                                                         \
    .to_host = cpu_copy,                                                                                           \
    .fill = cpu_fill,                                                                                              \
    .sync = cpu_sync,                                                                                              \
    .gemm = cpu_gemm,                                                                                              \
    .bias_act = cpu_bias_act,                                                                                      \
    .relu_bwd = cpu_relu_bwd,                                                                                      \
    .col_sum = cpu_col_sum,                                                                                        \
    .im2col = cpu_im2col,                                                                                          \
    .col2im = cpu_col2im,                                                                                          \
    .conv_scratch = cpu_conv_scratch,                                                                              \
    .conv_fwd = cpu_conv_fwd,                                                                                      \
    .conv_bwd = cpu_conv_bwd,                                                                                      \
    .linear_fwd = cpu_linear_fwd,                                                                                  \
    .linear_bwd = cpu_linear_bwd,                                                                                  \
    .maxpool_fwd = cpu_maxpool_fwd,                                                                                \
    .maxpool_bwd = cpu_maxpool_bwd,                                                                                \
    .softmax_xent = cpu_softmax_xent,                                                                              \
    .sumsq = cpu_sumsq,                                                                                            \
    .sgd_step = cpu_sgd_step,                                                                                      \
    .adamw_step = cpu_adamw_step,                                                                                  \
    .merge = cpu_merge

static const mm_backend_ops cpu_ops = {
    .name = "cpu",
    .host_visible = true,
    CPU_OPS_COMMON,
};

/* The CPU behind a device's interface (mm_backend_cpu_staged_init). */
static const mm_backend_ops cpu_staged_ops = {
    .name = "cpu-staged",
    .host_visible = false,
    .gather_u8 = cpu_gather_u8,
    CPU_OPS_COMMON,
};

int mm_backend_cpu_init(mm_backend *be, int threads)
{
    if (threads < 1) threads = 1;
    openblas_set_num_threads(threads);
    be->ops = &cpu_ops;
    be->threads = threads;
    be->impl = NULL;
    return 0;
}

int mm_backend_cpu_staged_init(mm_backend *be, int threads)
{
    mm_backend_cpu_init(be, threads);
    be->ops = &cpu_staged_ops;
    return 0;
}
