/* Fully connected layers of the CPU backend: their three products on a register-blocked GEMM of our own.
 *
 * For the shapes of a training step (rows = a batch of about a hundred, in and out a few hundred) OpenBLAS's
 * sgemm spends much of its time outside its kernel: packing both operands, and for dx = dy w^T transposing w
 * into its packed form. Here only one operand is packed, in blocks that stay in L1, the other is read where it
 * lies (broadcast one element at a time, so its layout costs nothing), and the element-wise work around each
 * product is done on the output while it is still in registers: bias and ReLU after the forward product, the
 * previous layer's ReLU backward after dx, db while dy is being packed for dw. */
#ifndef MM_LINEAR_CPU_H
#define MM_LINEAR_CPU_H

#include <stdbool.h>

/* y[rows,out] = x[rows,in] w[in,out] + bias[out], then ReLU if relu. */
void mm_cpu_linear_fwd(float *y, const float *x, const float *w, const float *bias, int rows, int in, int out,
                       bool relu);
/* From dy[rows,out]: dw[in,out] = x^T dy, db[out] = column sums of dy, and unless dx is NULL
 * dx[rows,in] = dy w^T, times (x > 0) if mask (x the output of a ReLU, whose backward that is). */
void mm_cpu_linear_bwd(float *dw, float *db, float *dx, const float *dy, const float *x, const float *w, int rows,
                       int in, int out, bool mask);

#endif
