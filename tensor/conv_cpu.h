/* Convolutions of the CPU backend (conv_cpu.c), behind backend.h's conv_scratch, conv_fwd and conv_bwd.
 *
 * Two methods, picked per geometry:
 *   Winograd F(4x4, 5x5) for 5x5 kernels whose input and output channels are multiples of 16 (the cnn's
 *     conv2): 64 multiplications per 4x4 output tile and channel pair instead of 400, the products done as
 *     64 small GEMMs per block of tiles by a register-blocked kernel, so nothing but a block's transforms
 *     ever leaves the cache.
 *   im2col + OpenBLAS GEMM, a few images at a time (everything else, the cnn's conv1 among them), so the
 *     column matrix stays in cache instead of being materialised for the whole batch.
 * Both are also the backward pass's method; neither keeps state between the forward and the backward
 * pass (what the backward pass needs is recomputed from x and w). */
#ifndef MM_CONV_CPU_H
#define MM_CONV_CPU_H

#include <stdbool.h>
#include <stddef.h>

#include "backend.h"

size_t mm_cpu_conv_scratch(const mm_conv_geom *g, int oc);
void mm_cpu_conv_fwd(float *y, const float *x, const float *w, const float *bias, bool relu, const mm_conv_geom *g,
                     int oc, float *scratch);
void mm_cpu_conv_bwd(float *dw, float *db, float *dx, const float *dy, const float *x, const float *w,
                     const mm_conv_geom *g, int oc, float *scratch);

/* cols[n*oh*ow, k*k*c] from x[n,h,w,c], and its adjoint (dx overwritten): backend.h's im2col and col2im. */
void mm_cpu_im2col(float *cols, const float *x, const mm_conv_geom *g);
void mm_cpu_col2im(float *dx, const float *dcols, const mm_conv_geom *g);

#endif
