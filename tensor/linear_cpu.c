/* Fully connected layers of the CPU backend: see linear_cpu.h.
 *
 * One GEMM serves two of the three products, c[m,n] = a[m,k] b[k,n] with a strided either way, b row-major:
 *   forward  y  = x w       a = x  (rows of x),     b = w  (packed by copying rows)
 *   backward dw = x^T dy    a = x^T (columns of x), b = dy (packed by copying rows, db summed there)
 * The third, dx = dy w^T, stays with OpenBLAS (see mm_cpu_linear_bwd), as do products with fewer than two
 * vectors of columns.
 * b is packed KC rows by one panel of PW columns at a time (PW = NVMAX vectors; KC x PW floats = 64 KiB with AVX-512),
 * and every group of R rows of c is then one kernel call over that block: R x NV accumulators in registers,
 * b's packed row loaded once per k, a's elements broadcast where they lie. That is the shape of conv_cpu.c's
 * kernel (and of OpenBLAS's), with b packed so that its block stays in L1 whatever w's row length (a 2 KiB
 * stride puts a block of w's rows in a few cache sets), and with the element-wise work done on the last block's
 * results before they are stored. Columns past n (out = 10) are computed on zero padding and not stored. */
#include "linear_cpu.h"

#include <cblas.h>
#include <stddef.h>
#include <string.h>

#include "simd_cpu.h"

#define NVMAX (REGS == 32 ? 4 : 2) /* vectors per panel of b */
#define PW    (NVMAX * VL)         /* columns per panel */
#ifndef KC
#define KC 256 /* rows of b per packed block */
#endif

/* What to do to c's values once the last block is summed (NULL: store them as they are). */
typedef struct {
    const float *bias; /* + bias[col] (may be NULL) */
    bool relu;         /* then max(., 0) */
} epilogue;

/* The first n floats of p as a vector (the rest 0), and the converse store: a panel's last, partial vector. */
static inline vf vload_n(const float *p, int n)
{
    if (n == VL) return vload(p);
    vf v = {0};
    memcpy(&v, p, (size_t)n * sizeof(float));
    return v;
}

static inline void vstore_n(float *p, vf v, int n)
{
    if (n == VL)
        vstore(p, v);
    else
        memcpy(p, &v, (size_t)n * sizeof(float));
}

/* c[r, 0:NV*VL] = (add ? c[r, ...] : 0) + sum over k < K of a[r*ars + k*aks] * b[k*NV*VL + 0:NV*VL], r < R,
 * then the epilogue e if not NULL; of the last vector only `last` columns are read and stored (c and e's bias
 * are offset to this block's first column). */
static inline __attribute__((always_inline)) void kernel(const int R, const int NV, int K, const float *a,
                                                         ptrdiff_t ars, ptrdiff_t aks, const float *b, float *c,
                                                         ptrdiff_t ldc, bool add, const epilogue *e, int last)
{
    vf acc[12][NVMAX];
    for (int r = 0; r < R; r++)
        for (int v = 0; v < NV; v++) acc[r][v] = (vf){0};
    for (int k = 0; k < K; k++) {
        vf bv[NVMAX];
        for (int v = 0; v < NV; v++) bv[v] = vload(b + (ptrdiff_t)k * NV * VL + v * VL);
        for (int r = 0; r < R; r++) {
            const vf ar = splat(a[r * ars + k * aks]);
            for (int v = 0; v < NV; v++) acc[r][v] += ar * bv[v];
        }
    }
    for (int v = 0; v < NV; v++) {
        const int cnt = v == NV - 1 ? last : VL;
        const vf bias = e && e->bias ? vload_n(e->bias + v * VL, cnt) : (vf){0};
        for (int r = 0; r < R; r++) {
            vf x = acc[r][v];
            float *cp = c + r * ldc + v * VL;
            if (add) x += vload_n(cp, cnt);
            if (e) {
                if (e->bias) x += bias;
                if (e->relu) x = relu_v(x);
            }
            vstore_n(cp, x, cnt);
        }
    }
}

/* p[kk, 0:pw] = b[kk*ldb + jj] for jj < w, 0 for w <= jj < pw; kk < kc. With colsum, also
 * colsum[jj] = (first ? 0 : colsum[jj]) + sum over kk of those values. */
static void pack_b(float *restrict p, const float *restrict b, ptrdiff_t ldb, int kc, int w, int pw,
                   float *restrict colsum, bool first)
{
    float sum[PW] = {0};
    for (int kk = 0; kk < kc; kk++) {
        float *restrict dst = p + (ptrdiff_t)kk * pw;
        const float *restrict src = b + kk * ldb;
        for (int jj = 0; jj < w; jj++) dst[jj] = src[jj];
        for (int jj = w; jj < pw; jj++) dst[jj] = 0.0f;
        if (colsum)
            for (int jj = 0; jj < w; jj++) sum[jj] += src[jj];
    }
    if (colsum)
        for (int jj = 0; jj < w; jj++) colsum[jj] = first ? sum[jj] : colsum[jj] + sum[jj];
}

/* Prefetch part `part` of `parts` of what pack_b(., b, ldb, kc, w, ...) will read: the next block is fetched
 * while this one is multiplied (w's rows are 2 KiB apart, too far for the hardware prefetcher to follow, and
 * w1 does not fit in L2: fetched on demand, the packing waited on L3, up to a third of fc1's time). */
static void prefetch_b(const float *b, ptrdiff_t ldb, int kc, int w, int part, int parts)
{
    for (int i = kc * part / parts; i < kc * (part + 1) / parts; i++) {
        const float *row = b + i * ldb;
        for (int o = 0; o < w; o += 64 / (int)sizeof(float)) __builtin_prefetch(row + o);
        __builtin_prefetch(row + w - 1);
    }
}

/* c[m,n] = a[m,k] b[k,n] (k >= 1), a[i,kk] at a[i*ars + kk*aks], b row-major (ldb); then the
 * epilogue e (NULL: none). With colsum, colsum[n] = column sums of b. */
static void gemm(int m, int n, int k, const float *a, ptrdiff_t ars, ptrdiff_t aks, const float *b, ptrdiff_t ldb,
                 float *c, ptrdiff_t ldc, const epilogue *e, float *colsum)
{
    float pack[KC * PW] __attribute__((aligned(64)));
    for (int j = 0; j < n; j += PW) {
        const int w = n - j < PW ? n - j : PW, nv = (w + VL - 1) / VL, last = w - (nv - 1) * VL;
        epilogue ej;
        if (e) ej = (epilogue){.bias = e->bias ? e->bias + j : NULL, .relu = e->relu};
        for (int k0 = 0; k0 < k; k0 += KC) {
            const int kc = k - k0 < KC ? k - k0 : KC;
            pack_b(pack, b + k0 * ldb + j, ldb, kc, w, nv * VL, colsum ? colsum + j : NULL, k0 == 0);
            const bool add = k0 > 0, fin = k0 + kc >= k;
            /* Row groups of `full`: R * NV accumulators + NV of b within REGS - 2 or so. */
            const int full = 2 * nv > NVMAX ? 6 : 12, groups = (m + full - 1) / full;
            /* The block after this one. */
            int jn = j, k0n = k0 + KC;
            if (k0n >= k) jn += PW, k0n = 0;
            const int wn = n - jn < PW ? n - jn : PW, kcn = k - k0n < KC ? k - k0n : KC;
            for (int r = 0, g = 0; r < m; g++) {
                if (jn < n) prefetch_b(b + k0n * ldb + jn, ldb, kcn, wn, g, groups);
                const int R = m - r >= full ? full : m - r;
                const float *ar = a + r * ars + k0 * aks;
                float *cr = c + r * ldc + j;
                const epilogue *ep = e && fin ? &ej : NULL;
                switch (R * 8 + nv) {
#define SHAPE(RR, NN)                                                                                                  \
    case RR * 8 + NN: kernel(RR, NN, kc, ar, ars, aks, pack, cr, ldc, add, ep, last); break;
                    /* clang-format off */
#if NVMAX == 4
                    SHAPE(6, 4) SHAPE(5, 4) SHAPE(4, 4) SHAPE(3, 4) SHAPE(2, 4) SHAPE(1, 4)
                    SHAPE(6, 3) SHAPE(5, 3) SHAPE(4, 3) SHAPE(3, 3) SHAPE(2, 3) SHAPE(1, 3)
                    SHAPE(12, 2) SHAPE(11, 2) SHAPE(10, 2) SHAPE(9, 2) SHAPE(8, 2) SHAPE(7, 2)
                    SHAPE(6, 2) SHAPE(5, 2) SHAPE(4, 2) SHAPE(3, 2) SHAPE(2, 2) SHAPE(1, 2)
#else
                    SHAPE(6, 2) SHAPE(5, 2) SHAPE(4, 2) SHAPE(3, 2) SHAPE(2, 2) SHAPE(1, 2)
#endif
                    SHAPE(12, 1) SHAPE(11, 1) SHAPE(10, 1) SHAPE(9, 1) SHAPE(8, 1) SHAPE(7, 1)
                    SHAPE(6, 1) SHAPE(5, 1) SHAPE(4, 1) SHAPE(3, 1) SHAPE(2, 1) SHAPE(1, 1)
                    /* clang-format on */
#undef SHAPE
                }
                r += R;
            }
        }
    }
}

/* Below two vectors of columns most of each vector of b would be padding, and OpenBLAS's kernels for narrow
 * products win (the cnn's and mlp's last layers, out = 10: 9 us against 13 for the forward). */
static bool narrow(int out) { return out < 2 * VL; }

void mm_cpu_linear_fwd(float *y, const float *x, const float *w, const float *bias, int rows, int in, int out,
                       bool relu)
{
    if (!narrow(out)) {
        const epilogue e = {.bias = bias, .relu = relu};
        gemm(rows, out, in, x, in, 1, w, out, y, out, &e, NULL);
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, out, in, 1.0f, x, in, w, out, 0.0f, y, out);
    for (int r = 0; r < rows; r++)
        for (int o = 0; o < out; o++) {
            const float v = y[(size_t)r * out + o] + bias[o];
            y[(size_t)r * out + o] = relu && !(v > 0.0f) ? 0.0f : v;
        }
}

void mm_cpu_linear_bwd(float *dw, float *db, float *dx, const float *dy, const float *x, const float *w, int rows,
                       int in, int out, bool mask)
{
    /* dw[in,out] = x^T dy: a = x read down its columns; db summed as dy is packed. */
    if (!narrow(out))
        gemm(in, out, rows, x, 1, in, dy, out, dw, out, NULL, db);
    else {
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, in, out, rows, 1.0f, x, in, dy, out, 0.0f, dw, out);
        for (int o = 0; o < out; o++) db[o] = 0.0f;
        for (int r = 0; r < rows; r++)
            for (int o = 0; o < out; o++) db[o] += dy[(size_t)r * out + o];
    }
    if (!dx) return;
    /* dx[rows,in] = dy w^T: OpenBLAS. Ours would pack w transposed, block by block, and that scalar transpose
     * costs more than the kernel gains (mlp fc2: 383 us against 341). Then the ReLU backward, in one pass. */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, in, out, 1.0f, dy, out, w, out, 0.0f, dx, in);
    if (mask) {
        const size_t n = (size_t)rows * in;
        for (size_t i = 0; i < n; i++) dx[i] = x[i] > 0.0f ? dx[i] : 0.0f;
    }
}
