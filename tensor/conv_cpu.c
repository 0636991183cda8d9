/* Convolutions of the CPU backend: see conv_cpu.h for the two methods and when each is used.
 *
 * Winograd F(4x4, 5x5), in the notation of Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks"
 * (2016), with the interpolation points 0, 1, -1, 2, -2, 1/2, -1/2, infinity (those of the common F(6x6, 3x3)):
 * for an output tile Y (4x4) read from an input tile d (8x8) by a kernel g (5x5),
 *     Y = A^T [(G g G^T) . (B^T d B)] A        (. elementwise, 64 products where the direct form takes 400)
 * and, summed over input channels, the 64 elementwise products per tile become 64 GEMMs over tiles x channels:
 *     M[xi][tile, co] = sum over ci of V[xi][tile, ci] U[xi][ci, co],  V = B^T d B,  U = G g G^T.
 * The backward pass is the exact adjoint of that forward pass (so the gradients are those of the function the
 * forward pass computes): dM = A dY A^T; dU[xi] = V[xi]^T dM[xi]; dw = G^T dU G; dV[xi] = dM[xi] U[xi]^T;
 * dx = sum over tiles of B dV B^T. The cnn's conv2 (14x14 outputs) takes 4 x 4 tiles per image, so 16 x 64
 * products per channel pair against 196 x 25 directly: 3.0 times fewer, and 1.7 times fewer than F(2x2, 5x5),
 * whose transforms cost about the same. The price is rounding: the transforms' entries reach 21/4 and 1/90,
 * and test_ops measures the error against a double-precision direct convolution.
 *
 * Tiles are numbered image by image, row by row, and processed WINO_TILES at a time: transform the block's
 * inputs into V, 64 GEMMs, transform the products out, then the next block, so that V and M (about 590 KiB for
 * the cnn's conv2) stay in L2 and nothing of size batch x anything is ever written. */
#include "conv_cpu.h"

#include <cblas.h>
#include <stdint.h>
#include <string.h>

#include "simd_cpu.h"

/* Vectors: VL floats, REGS registers (see simd_cpu.h). */

#define NVMAX (REGS == 32 ? 4 : 2) /* vectors of b's row per kernel call */

/* ---- the GEMM kernel ----
 *
 * c[r, 0:NV*VL] = (add ? c[r, ...] : 0) + sum over k < K of a[r*ars + k*aks] * b[k*ldb + 0:NV*VL], r < R.
 * R x NV accumulators live in registers (R*NV + NV <= 28 of AVX-512's 32), b's row is loaded once per k and
 * a's elements are broadcast: the shape of OpenBLAS's own kernel, without its packing copies, which for these
 * small products (K = 32 or 64, n = 32 or 64, a block of tiles) would cost as much as the arithmetic. a may be
 * read row-major (ars = lda, aks = 1) or transposed (ars = 1, aks = lda). */
static inline __attribute__((always_inline)) void kernel(const int R, const int NV, int K, const float *a,
                                                         ptrdiff_t ars, ptrdiff_t aks, const float *b, ptrdiff_t ldb,
                                                         float *c, ptrdiff_t ldc, bool add)
{
    vf acc[12][NVMAX];
    for (int r = 0; r < R; r++)
        for (int v = 0; v < NV; v++) acc[r][v] = add ? vload(c + r * ldc + v * VL) : (vf){0};
    for (int k = 0; k < K; k++) {
        vf bv[NVMAX];
        for (int v = 0; v < NV; v++) bv[v] = vload(b + k * ldb + v * VL);
        for (int r = 0; r < R; r++) {
            const vf ar = splat(a[r * ars + k * aks]);
            for (int v = 0; v < NV; v++) acc[r][v] += ar * bv[v];
        }
    }
    for (int r = 0; r < R; r++)
        for (int v = 0; v < NV; v++) vstore(c + r * ldc + v * VL, acc[r][v]);
}

/* c[rows, n] (+)= a[rows, K] b[K, n] with a strided as in kernel(); n a multiple of VL, rows a multiple of 2.
 * Column chunks of up to NVMAX vectors, rows in groups of 6 or 12: R * NV + NV stays within REGS - 2. */
static void gemm(int rows, int n, int K, const float *a, ptrdiff_t ars, ptrdiff_t aks, const float *b, ptrdiff_t ldb,
                 float *c, ptrdiff_t ldc, bool add)
{
    for (int j = 0; j < n; j += NVMAX * VL) {
        const int nv = (n - j) / VL < NVMAX ? (n - j) / VL : NVMAX, full = 2 * nv > NVMAX ? 6 : 12;
        for (int r = 0; r < rows;) {
            /* Groups of `full` rows, then what is left (even) in one group of 2 to 10. */
            const int R = rows - r >= full ? full : rows - r;
            const float *ar = a + r * ars;
            float *cr = c + r * ldc + j;
            /* One instance per shape, so that every loop in kernel() unrolls into registers. */
            switch (R * 8 + nv) {
#define SHAPE(RR, NN)                                                                                                  \
    case RR * 8 + NN: kernel(RR, NN, K, ar, ars, aks, b + j, ldb, cr, ldc, add); break;
                /* clang-format off */
#if NVMAX == 4
                SHAPE(6, 4) SHAPE(4, 4) SHAPE(2, 4)
                SHAPE(6, 3) SHAPE(4, 3) SHAPE(2, 3)
                SHAPE(12, 2) SHAPE(10, 2) SHAPE(8, 2)
#endif
                SHAPE(6, 2) SHAPE(4, 2) SHAPE(2, 2)
                SHAPE(12, 1) SHAPE(10, 1) SHAPE(8, 1) SHAPE(6, 1) SHAPE(4, 1) SHAPE(2, 1)
                /* clang-format on */
#undef SHAPE
            }
            r += R;
        }
    }
}

/* ---- Winograd F(4x4, 5x5) ---- */

enum {
    WM = 4,          /* outputs per tile side */
    WA = 8,          /* inputs per tile side: WM + 5 - 1 */
    XI = WA * WA,    /* transformed positions per tile */
    WINO_TILES = 24, /* tiles per block: a multiple of 12, the GEMM's row groups */
};

/* The one-dimensional transforms on eight (or four, or five) vectors; the 2-D ones apply them to rows, then
 * columns. Written out rather than as matrix products: B^T has 42 non-zeros of 64, and the rows pair up as
 * E +- O (the points +-p), which halves what is left. */

/* t = B^T d */
static inline void wino_bt(vf t[WA], const vf d[WA])
{
    const vf e1 = d[2] - 4.25f * d[4] + d[6], o1 = d[1] - 4.25f * d[3] + d[5];
    const vf e2 = 0.25f * d[2] - 1.25f * d[4] + d[6], o2 = 0.5f * d[1] - 2.5f * d[3] + 2.0f * d[5];
    const vf e3 = 4.0f * d[2] - 5.0f * d[4] + d[6], o3 = 2.0f * d[1] - 2.5f * d[3] + 0.5f * d[5];
    t[0] = d[0] - d[6] + 5.25f * (d[4] - d[2]);
    t[1] = e1 + o1;
    t[2] = e1 - o1;
    t[3] = e2 + o2;
    t[4] = e2 - o2;
    t[5] = e3 + o3;
    t[6] = e3 - o3;
    t[7] = d[7] - d[1] + 5.25f * (d[3] - d[5]);
}

/* d = B t (the adjoint of wino_bt) */
static inline void wino_b(vf d[WA], const vf t[WA])
{
    const vf s1 = t[1] + t[2], d1 = t[1] - t[2], s2 = t[3] + t[4], d2 = t[3] - t[4], s3 = t[5] + t[6], d3 = t[5] - t[6];
    d[0] = t[0];
    d[1] = d1 + 0.5f * d2 + 2.0f * d3 - t[7];
    d[2] = s1 + 0.25f * s2 + 4.0f * s3 - 5.25f * t[0];
    d[3] = 5.25f * t[7] - 4.25f * d1 - 2.5f * (d2 + d3);
    d[4] = 5.25f * t[0] - 4.25f * s1 - 1.25f * s2 - 5.0f * s3;
    d[5] = d1 + 2.0f * d2 + 0.5f * d3 - 5.25f * t[7];
    d[6] = s1 + s2 + s3 - t[0];
    d[7] = t[7];
}

/* y = A^T m */
static inline void wino_at(vf y[WM], const vf m[WA])
{
    const vf s1 = m[1] + m[2], d1 = m[1] - m[2], s2 = m[3] + m[4], d2 = m[3] - m[4], s3 = m[5] + m[6], d3 = m[5] - m[6];
    y[0] = m[0] + s1 + s2 + s3;
    y[1] = d1 + 2.0f * d2 + 0.5f * d3;
    y[2] = s1 + 4.0f * s2 + 0.25f * s3;
    y[3] = d1 + 8.0f * d2 + 0.125f * d3 + m[7];
}

/* m = A y (the adjoint of wino_at) */
static inline void wino_a(vf m[WA], const vf y[WM])
{
    const vf e1 = y[0] + y[2], o1 = y[1] + y[3], e2 = y[0] + 4.0f * y[2], o2 = 2.0f * y[1] + 8.0f * y[3];
    const vf e3 = y[0] + 0.25f * y[2], o3 = 0.5f * y[1] + 0.125f * y[3];
    m[0] = y[0];
    m[1] = e1 + o1;
    m[2] = e1 - o1;
    m[3] = e2 + o2;
    m[4] = e2 - o2;
    m[5] = e3 + o3;
    m[6] = e3 - o3;
    m[7] = y[3];
}

/* u = G g */
static inline void wino_g(vf u[WA], const vf g[5])
{
    const vf e1 = g[0] + g[2] + g[4], o1 = g[1] + g[3];
    const vf e2 = g[0] + 4.0f * g[2] + 16.0f * g[4], o2 = 2.0f * g[1] + 8.0f * g[3];
    const vf e3 = 32.0f * g[0] + 8.0f * g[2] + 2.0f * g[4], o3 = 16.0f * g[1] + 4.0f * g[3];
    u[0] = g[0];
    u[1] = (-2.0f / 9) * (e1 + o1);
    u[2] = (-2.0f / 9) * (e1 - o1);
    u[3] = (1.0f / 90) * (e2 + o2);
    u[4] = (1.0f / 90) * (e2 - o2);
    u[5] = (1.0f / 45) * (e3 + o3);
    u[6] = (1.0f / 45) * (e3 - o3);
    u[7] = g[4];
}

/* g = G^T u (the adjoint of wino_g) */
static inline void wino_gt(vf g[5], const vf u[WA])
{
    const vf s1 = (-2.0f / 9) * (u[1] + u[2]), d1 = (-2.0f / 9) * (u[1] - u[2]), s2 = (1.0f / 90) * (u[3] + u[4]),
             d2 = (1.0f / 90) * (u[3] - u[4]), s3 = (1.0f / 45) * (u[5] + u[6]), d3 = (1.0f / 45) * (u[5] - u[6]);
    g[0] = u[0] + s1 + s2 + 32.0f * s3;
    g[1] = d1 + 2.0f * d2 + 16.0f * d3;
    g[2] = s1 + 4.0f * s2 + 8.0f * s3;
    g[3] = d1 + 8.0f * d2 + 4.0f * d3;
    g[4] = s1 + 16.0f * s2 + 2.0f * s3 + u[7];
}

/* Where tile t lies: its image, and the top-left output pixel (the input window starts pad up and left). */
typedef struct {
    int n, oy, ox;
} tile_pos;

static inline tile_pos tile_at(const mm_conv_geom *g, size_t t)
{
    const int tx = (g->ow + WM - 1) / WM, per = tx * ((g->oh + WM - 1) / WM), r = (int)(t % (size_t)per);
    return (tile_pos){.n = (int)(t / (size_t)per), .oy = WM * (r / tx), .ox = WM * (r % tx)};
}

/* U[xi][ci][co] = (G w[.,.,ci,co] G^T)[xi] for the weights w[5,5,c,oc]. */
static void wino_weights(float *U, const float *w, int c, int oc)
{
    for (int ci = 0; ci < c; ci++)
        for (int o = 0; o < oc; o += VL) {
            vf t[5][WA];
            for (int ky = 0; ky < 5; ky++) {
                vf row[5];
                for (int kx = 0; kx < 5; kx++) row[kx] = vload(w + ((size_t)(ky * 5 + kx) * c + ci) * oc + o);
                wino_g(t[ky], row);
            }
            for (int b = 0; b < WA; b++) {
                vf col[5], u[WA];
                for (int ky = 0; ky < 5; ky++) col[ky] = t[ky][b];
                wino_g(u, col);
                for (int a = 0; a < WA; a++) vstore(U + ((size_t)(a * WA + b) * c + ci) * oc + o, u[a]);
            }
        }
}

/* dw[5,5,c,oc] = G^T dU G, the adjoint of wino_weights. */
static void wino_weights_adjoint(float *dw, const float *dU, int c, int oc)
{
    for (int ci = 0; ci < c; ci++)
        for (int o = 0; o < oc; o += VL) {
            vf t[WA][5];
            for (int a = 0; a < WA; a++) {
                vf row[WA];
                for (int b = 0; b < WA; b++) row[b] = vload(dU + ((size_t)(a * WA + b) * c + ci) * oc + o);
                wino_gt(t[a], row);
            }
            for (int kx = 0; kx < 5; kx++) {
                vf col[WA], g[5];
                for (int a = 0; a < WA; a++) col[a] = t[a][kx];
                wino_gt(g, col);
                for (int ky = 0; ky < 5; ky++) vstore(dw + ((size_t)(ky * 5 + kx) * c + ci) * oc + o, g[ky]);
            }
        }
}

/* V[xi][tt][c] = (B^T d B)[xi] for tile t's input window d (zero outside the image). */
static void wino_input(float *V, const float *x, const mm_conv_geom *g, size_t t, int tt)
{
    const tile_pos p = tile_at(g, t);
    const int c = g->c, iy0 = p.oy - g->pad, ix0 = p.ox - g->pad;
    const float *img = x + (size_t)p.n * g->h * g->w * c;
    for (int ci = 0; ci < c; ci += VL) {
        vf tr[WA][WA];
        for (int i = 0; i < WA; i++) {
            vf d[WA];
            const int iy = iy0 + i;
            for (int j = 0; j < WA; j++) {
                const int ix = ix0 + j;
                const bool in = iy >= 0 && iy < g->h && ix >= 0 && ix < g->w;
                d[j] = in ? vload(img + ((size_t)iy * g->w + ix) * c + ci) : (vf){0};
            }
            wino_bt(tr[i], d);
        }
        for (int b = 0; b < WA; b++) {
            vf col[WA], v[WA];
            for (int i = 0; i < WA; i++) col[i] = tr[i][b];
            wino_bt(v, col);
            for (int a = 0; a < WA; a++) vstore(V + ((size_t)(a * WA + b) * WINO_TILES + tt) * c + ci, v[a]);
        }
    }
}

/* y at tile t = act(A^T M A + bias) from M[xi][tt][oc]; the parts outside the output dropped. */
static void wino_output(float *y, const float *M, const float *bias, bool relu, const mm_conv_geom *g, int oc, size_t t,
                        int tt)
{
    const tile_pos p = tile_at(g, t);
    float *img = y + (size_t)p.n * g->oh * g->ow * oc;
    for (int o = 0; o < oc; o += VL) {
        vf z[WA][WM];
        for (int a = 0; a < WA; a++) {
            vf m[WA];
            for (int b = 0; b < WA; b++) m[b] = vload(M + ((size_t)(a * WA + b) * WINO_TILES + tt) * oc + o);
            wino_at(z[a], m);
        }
        const vf bv = vload(bias + o);
        for (int q = 0; q < WM && p.ox + q < g->ow; q++) {
            vf col[WA], out[WM];
            for (int a = 0; a < WA; a++) col[a] = z[a][q];
            wino_at(out, col);
            for (int r = 0; r < WM && p.oy + r < g->oh; r++) {
                vf v = out[r] + bv;
                if (relu) v = relu_v(v);
                vstore(img + ((size_t)(p.oy + r) * g->ow + p.ox + q) * oc + o, v);
            }
        }
    }
}

/* M[xi][tt][oc] = (A dY A^T)[xi] for tile t's outputs dY of dy (zero outside the output); db += dY summed. */
static void wino_output_adjoint(float *M, float *db, const float *dy, const mm_conv_geom *g, int oc, size_t t, int tt)
{
    const tile_pos p = tile_at(g, t);
    const float *img = dy + (size_t)p.n * g->oh * g->ow * oc;
    for (int o = 0; o < oc; o += VL) {
        vf z[WM][WA], sum = vload(db + o);
        for (int q = 0; q < WM; q++) {
            vf col[WM];
            for (int r = 0; r < WM; r++) {
                const bool in = p.oy + r < g->oh && p.ox + q < g->ow;
                col[r] = in ? vload(img + ((size_t)(p.oy + r) * g->ow + p.ox + q) * oc + o) : (vf){0};
                sum += col[r];
            }
            wino_a(z[q], col);
        }
        vstore(db + o, sum);
        for (int a = 0; a < WA; a++) {
            vf row[WM], m[WA];
            for (int q = 0; q < WM; q++) row[q] = z[q][a];
            wino_a(m, row);
            for (int b = 0; b < WA; b++) vstore(M + ((size_t)(a * WA + b) * WINO_TILES + tt) * oc + o, m[b]);
        }
    }
}

/* dx += B dV B^T over tile t's input window, from dV[xi][tt][c]; the window's part outside the image dropped.
 * The first tile of an image clears that image's dx: tiles come in order, and windows overlap. */
static void wino_input_adjoint(float *dx, const float *dV, const mm_conv_geom *g, size_t t, int tt)
{
    const tile_pos p = tile_at(g, t);
    const int c = g->c, iy0 = p.oy - g->pad, ix0 = p.ox - g->pad;
    float *img = dx + (size_t)p.n * g->h * g->w * c;
    if (p.oy == 0 && p.ox == 0) memset(img, 0, (size_t)g->h * g->w * c * sizeof *img);
    for (int ci = 0; ci < c; ci += VL) {
        vf tr[WA][WA];
        for (int a = 0; a < WA; a++) {
            vf v[WA];
            for (int b = 0; b < WA; b++) v[b] = vload(dV + ((size_t)(a * WA + b) * WINO_TILES + tt) * c + ci);
            wino_b(tr[a], v);
        }
        for (int j = 0; j < WA; j++) {
            const int ix = ix0 + j;
            if (ix < 0 || ix >= g->w) continue;
            vf col[WA], d[WA];
            for (int a = 0; a < WA; a++) col[a] = tr[a][j];
            wino_b(d, col);
            for (int i = 0; i < WA; i++) {
                const int iy = iy0 + i;
                if (iy < 0 || iy >= g->h) continue;
                float *px = img + ((size_t)iy * g->w + ix) * c + ci;
                vstore(px, vload(px) + d[i]);
            }
        }
    }
}

static bool use_winograd(const mm_conv_geom *g, int oc) { return g->k == 5 && g->c % VL == 0 && oc % VL == 0; }

/* Scratch of the Winograd path: U, U transposed, dU (XI x c x oc each), then V and M for one block. */
static size_t wino_scratch(const mm_conv_geom *g, int oc)
{
    return (size_t)XI * (3 * (size_t)g->c * oc + (size_t)WINO_TILES * (g->c + oc));
}

static size_t wino_tiles(const mm_conv_geom *g)
{
    return (size_t)g->n * ((g->oh + WM - 1) / WM) * ((g->ow + WM - 1) / WM);
}

static void wino_fwd(float *y, const float *x, const float *w, const float *bias, bool relu, const mm_conv_geom *g,
                     int oc, float *scratch)
{
    const int c = g->c;
    float *U = scratch, *V = U + (size_t)3 * XI * c * oc, *M = V + (size_t)XI * WINO_TILES * c;
    wino_weights(U, w, c, oc);
    const size_t tiles = wino_tiles(g);
    for (size_t t0 = 0; t0 < tiles; t0 += WINO_TILES) {
        const int nt = tiles - t0 < WINO_TILES ? (int)(tiles - t0) : WINO_TILES, rows = (nt + 11) / 12 * 12;
        for (int tt = 0; tt < nt; tt++) wino_input(V, x, g, t0 + (size_t)tt, tt);
        /* Rows past nt hold stale data; their products are never read. */
        for (int xi = 0; xi < XI; xi++)
            gemm(rows, oc, c, V + (size_t)xi * WINO_TILES * c, c, 1, U + (size_t)xi * c * oc, oc,
                 M + (size_t)xi * WINO_TILES * oc, oc, false);
        for (int tt = 0; tt < nt; tt++) wino_output(y, M, bias, relu, g, oc, t0 + (size_t)tt, tt);
    }
}

static void wino_bwd(float *dw, float *db, float *dx, const float *dy, const float *x, const float *w,
                     const mm_conv_geom *g, int oc, float *scratch)
{
    const int c = g->c;
    float *U = scratch, *UT = U + (size_t)XI * c * oc, *dU = UT + (size_t)XI * c * oc;
    float *V = dU + (size_t)XI * c * oc, *M = V + (size_t)XI * WINO_TILES * c;
    if (dx) {
        wino_weights(U, w, c, oc);
        for (int xi = 0; xi < XI; xi++)
            for (int ci = 0; ci < c; ci++)
                for (int o = 0; o < oc; o++) UT[((size_t)xi * oc + o) * c + ci] = U[((size_t)xi * c + ci) * oc + o];
    }
    memset(dU, 0, (size_t)XI * c * oc * sizeof *dU);
    memset(db, 0, (size_t)oc * sizeof *db);
    const size_t tiles = wino_tiles(g);
    for (size_t t0 = 0; t0 < tiles; t0 += WINO_TILES) {
        const int nt = tiles - t0 < WINO_TILES ? (int)(tiles - t0) : WINO_TILES, rows = (nt + 11) / 12 * 12;
        for (int tt = 0; tt < nt; tt++) {
            wino_input(V, x, g, t0 + (size_t)tt, tt);
            wino_output_adjoint(M, db, dy, g, oc, t0 + (size_t)tt, tt);
        }
        /* dU[xi] += V[xi]^T dM[xi]: a read transposed, the sum over exactly the block's nt tiles. */
        for (int xi = 0; xi < XI; xi++)
            gemm(c, oc, nt, V + (size_t)xi * WINO_TILES * c, 1, c, M + (size_t)xi * WINO_TILES * oc, oc,
                 dU + (size_t)xi * c * oc, oc, true);
        if (!dx) continue;
        /* dV[xi] = dM[xi] U[xi]^T, into V (no longer needed). */
        for (int xi = 0; xi < XI; xi++)
            gemm(rows, c, oc, M + (size_t)xi * WINO_TILES * oc, oc, 1, UT + (size_t)xi * oc * c, c,
                 V + (size_t)xi * WINO_TILES * c, c, false);
        for (int tt = 0; tt < nt; tt++) wino_input_adjoint(dx, V, g, t0 + (size_t)tt, tt);
    }
    wino_weights_adjoint(dw, dU, c, oc);
}

/* ---- im2col + GEMM, a block of images at a time ---- */

void mm_cpu_im2col(float *restrict cols, const float *restrict x, const mm_conv_geom *g)
{
    const int k = g->k, c = g->c, rowlen = k * k * c;
    const size_t span = (size_t)k * c; /* one kernel row of one patch */
    for (int n = 0; n < g->n; n++) {
        const float *img = x + (size_t)n * g->h * g->w * c;
        for (int oy = 0; oy < g->oh; oy++)
            for (int ox = 0; ox < g->ow; ox++) {
                float *restrict out = cols + (((size_t)n * g->oh + oy) * g->ow + ox) * rowlen;
                const int x0 = ox - g->pad;
                for (int ky = 0; ky < k; ky++, out += span) {
                    const int iy = oy + ky - g->pad;
                    if (iy < 0 || iy >= g->h) {
                        memset(out, 0, span * sizeof *out);
                        continue;
                    }
                    /* The in-bounds part of this kernel row is one contiguous run of x. */
                    int lo = x0 < 0 ? -x0 : 0, hi = x0 + k > g->w ? g->w - x0 : k;
                    if (lo > 0) memset(out, 0, (size_t)lo * c * sizeof *out);
                    memcpy(out + (size_t)lo * c, img + ((size_t)iy * g->w + x0 + lo) * c,
                           (size_t)(hi - lo) * c * sizeof *out);
                    if (hi < k) memset(out + (size_t)hi * c, 0, (size_t)(k - hi) * c * sizeof *out);
                }
            }
    }
}

void mm_cpu_col2im(float *restrict dx, const float *restrict dcols, const mm_conv_geom *g)
{
    const int k = g->k, c = g->c, rowlen = k * k * c;
    memset(dx, 0, (size_t)g->n * g->h * g->w * c * sizeof *dx);
    for (int n = 0; n < g->n; n++) {
        float *img = dx + (size_t)n * g->h * g->w * c;
        for (int oy = 0; oy < g->oh; oy++)
            for (int ox = 0; ox < g->ow; ox++) {
                const float *in = dcols + (((size_t)n * g->oh + oy) * g->ow + ox) * rowlen;
                const int x0 = ox - g->pad;
                for (int ky = 0; ky < k; ky++, in += (size_t)k * c) {
                    const int iy = oy + ky - g->pad;
                    if (iy < 0 || iy >= g->h) continue;
                    int lo = x0 < 0 ? -x0 : 0, hi = x0 + k > g->w ? g->w - x0 : k;
                    float *restrict dst = img + ((size_t)iy * g->w + x0 + lo) * c;
                    const float *restrict src = in + (size_t)lo * c;
                    const size_t len = (size_t)(hi - lo) * c;
                    for (size_t i = 0; i < len; i++) dst[i] += src[i];
                }
            }
    }
}

/* Images per block: a column matrix of about 64 Ki floats (256 KiB), which OpenBLAS then packs from L2. */
static int im2col_images(const mm_conv_geom *g)
{
    const size_t per = (size_t)g->oh * g->ow * g->k * g->k * g->c, want = per >= 65536 ? 1 : 65536 / per;
    return want < (size_t)g->n ? (int)want : g->n;
}

static void im2col_fwd(float *y, const float *x, const float *w, const float *bias, bool relu, const mm_conv_geom *g,
                       int oc, float *cols)
{
    const int per = g->oh * g->ow, K = g->k * g->k * g->c, blk = im2col_images(g);
    for (int s = 0; s < g->n; s += blk) {
        mm_conv_geom b = *g;
        b.n = g->n - s < blk ? g->n - s : blk;
        float *yb = y + (size_t)s * per * oc;
        mm_cpu_im2col(cols, x + (size_t)s * g->h * g->w * g->c, &b);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, b.n * per, oc, K, 1.0f, cols, K, w, oc, 0.0f, yb, oc);
        /* Bias and ReLU while the block's output is still in cache. */
        for (size_t r = 0; r < (size_t)b.n * per; r++) {
            float *restrict row = yb + r * oc;
            for (int o = 0; o < oc; o++) {
                const float v = row[o] + bias[o];
                row[o] = relu && !(v > 0.0f) ? 0.0f : v;
            }
        }
    }
}

static void im2col_bwd(float *dw, float *db, float *dx, const float *dy, const float *x, const float *w,
                       const mm_conv_geom *g, int oc, float *cols)
{
    const int per = g->oh * g->ow, K = g->k * g->k * g->c, blk = im2col_images(g);
    for (int s = 0; s < g->n; s += blk) {
        mm_conv_geom b = *g;
        b.n = g->n - s < blk ? g->n - s : blk;
        const float *dyb = dy + (size_t)s * per * oc;
        const size_t xoff = (size_t)s * g->h * g->w * g->c;
        /* dw (+)= cols^T dy, with the columns recomputed rather than kept from the forward pass. */
        mm_cpu_im2col(cols, x + xoff, &b);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, oc, b.n * per, 1.0f, cols, K, dyb, oc, s ? 1.0f : 0.0f,
                    dw, oc);
        if (!dx) continue;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, b.n * per, K, oc, 1.0f, dyb, oc, w, oc, 0.0f, cols, K);
        mm_cpu_col2im(dx + xoff, cols, &b);
    }
    for (int o = 0; o < oc; o++) db[o] = 0.0f;
    for (size_t r = 0; r < (size_t)g->n * per; r++)
        for (int o = 0; o < oc; o++) db[o] += dy[r * oc + o];
}

/* ---- a single input channel, 5x5: direct ----
 *
 * With one input channel (the cnn's conv1) im2col + GEMM is a poor fit: K = 25, and the column matrix is 25
 * times the image, copied and then packed again by OpenBLAS. Directly, a row of DR outputs by two vectors of
 * output channels is 2 DR accumulators, each kernel tap one broadcast input per output and two weight vectors.
 * The weight gradient sums, per kernel row, 5 taps x 2 vectors in registers over an image, then adds to dw
 * (a sum in two levels, so its rounding grows with the pixels of an image, not of the batch). The input
 * gradient, which a first layer does not need, is left to the im2col path. */

/* Outputs per register block (2 DR + 2 registers of REGS); the kernel size taken. */
enum { DR = REGS == 32 ? 14 : 6, DK = 5 };

static bool use_direct(const mm_conv_geom *g, int oc) { return g->c == 1 && g->k == DK && oc % (2 * VL) == 0; }

/* The image zero-padded to rows oh + DK - 1 by wp = ow rounded up to DR, + DK - 1: every block reads in bounds. */
static int direct_wp(const mm_conv_geom *g) { return (g->ow + DR - 1) / DR * DR + DK - 1; }
static size_t direct_scratch(const mm_conv_geom *g) { return (size_t)(g->oh + DK - 1) * direct_wp(g); }

static void direct_pad(float *xp, const float *img, const mm_conv_geom *g)
{
    const int wp = direct_wp(g);
    memset(xp, 0, direct_scratch(g) * sizeof *xp);
    for (int iy = 0; iy < g->h; iy++)
        memcpy(xp + (size_t)(iy + g->pad) * wp + g->pad, img + (size_t)iy * g->w, (size_t)g->w * sizeof *xp);
}

static void direct_fwd(float *y, const float *x, const float *w, const float *bias, bool relu, const mm_conv_geom *g,
                       int oc, float *xp)
{
    const int wp = direct_wp(g);
    for (int n = 0; n < g->n; n++) {
        direct_pad(xp, x + (size_t)n * g->h * g->w, g);
        float *img = y + (size_t)n * g->oh * g->ow * oc;
        for (int oy = 0; oy < g->oh; oy++)
            for (int ox = 0; ox < g->ow; ox += DR)
                for (int o = 0; o < oc; o += 2 * VL) {
                    vf acc[DR][2];
                    for (int r = 0; r < DR; r++) acc[r][0] = acc[r][1] = (vf){0};
                    for (int ky = 0; ky < DK; ky++) {
                        const float *row = xp + (size_t)(oy + ky) * wp + ox;
                        for (int kx = 0; kx < DK; kx++) {
                            const float *wk = w + (size_t)(ky * DK + kx) * oc + o;
                            const vf w0 = vload(wk), w1 = vload(wk + VL);
                            for (int r = 0; r < DR; r++) {
                                const vf a = splat(row[r + kx]);
                                acc[r][0] += a * w0;
                                acc[r][1] += a * w1;
                            }
                        }
                    }
                    const vf b0 = vload(bias + o), b1 = vload(bias + o + VL);
                    for (int r = 0; r < DR && ox + r < g->ow; r++) {
                        float *out = img + ((size_t)oy * g->ow + ox + r) * oc + o;
                        const vf v0 = acc[r][0] + b0, v1 = acc[r][1] + b1;
                        vstore(out, relu ? relu_v(v0) : v0);
                        vstore(out + VL, relu ? relu_v(v1) : v1);
                    }
                }
    }
}

static void direct_bwd(float *dw, float *db, const float *dy, const float *x, const mm_conv_geom *g, int oc, float *xp)
{
    const int wp = direct_wp(g);
    memset(dw, 0, (size_t)DK * DK * oc * sizeof *dw);
    memset(db, 0, (size_t)oc * sizeof *db);
    for (int n = 0; n < g->n; n++) {
        direct_pad(xp, x + (size_t)n * g->h * g->w, g);
        const float *dimg = dy + (size_t)n * g->oh * g->ow * oc;
        for (int o = 0; o < oc; o += 2 * VL)
            for (int ky = 0; ky < DK; ky++) {
                vf acc[DK][2], s0 = (vf){0}, s1 = (vf){0};
                for (int kx = 0; kx < DK; kx++) acc[kx][0] = acc[kx][1] = (vf){0};
                for (int oy = 0; oy < g->oh; oy++) {
                    const float *row = xp + (size_t)(oy + ky) * wp;
                    for (int ox = 0; ox < g->ow; ox++) {
                        const float *d = dimg + ((size_t)oy * g->ow + ox) * oc + o;
                        const vf d0 = vload(d), d1 = vload(d + VL);
                        for (int kx = 0; kx < DK; kx++) {
                            const vf a = splat(row[ox + kx]);
                            acc[kx][0] += a * d0;
                            acc[kx][1] += a * d1;
                        }
                        s0 += d0; /* db, needed once but cheaper here than in a pass of its own */
                        s1 += d1;
                    }
                }
                for (int kx = 0; kx < DK; kx++) {
                    float *dk = dw + (size_t)(ky * DK + kx) * oc + o;
                    vstore(dk, vload(dk) + acc[kx][0]);
                    vstore(dk + VL, vload(dk + VL) + acc[kx][1]);
                }
                if (ky == 0) {
                    vstore(db + o, vload(db + o) + s0);
                    vstore(db + o + VL, vload(db + o + VL) + s1);
                }
            }
    }
}

/* ---- entry points ---- */

size_t mm_cpu_conv_scratch(const mm_conv_geom *g, int oc)
{
    if (use_winograd(g, oc)) return wino_scratch(g, oc);
    const size_t cols = (size_t)im2col_images(g) * g->oh * g->ow * g->k * g->k * g->c;
    return use_direct(g, oc) && direct_scratch(g) > cols ? direct_scratch(g) : cols;
}

void mm_cpu_conv_fwd(float *y, const float *x, const float *w, const float *bias, bool relu, const mm_conv_geom *g,
                     int oc, float *scratch)
{
    if (use_winograd(g, oc))
        wino_fwd(y, x, w, bias, relu, g, oc, scratch);
    else if (use_direct(g, oc))
        direct_fwd(y, x, w, bias, relu, g, oc, scratch);
    else
        im2col_fwd(y, x, w, bias, relu, g, oc, scratch);
}

void mm_cpu_conv_bwd(float *dw, float *db, float *dx, const float *dy, const float *x, const float *w,
                     const mm_conv_geom *g, int oc, float *scratch)
{
    if (use_winograd(g, oc))
        wino_bwd(dw, db, dx, dy, x, w, g, oc, scratch);
    else if (use_direct(g, oc) && !dx)
        direct_bwd(dw, db, dy, x, g, oc, scratch);
    else
        im2col_bwd(dw, db, dx, dy, x, w, g, oc, scratch);
}
