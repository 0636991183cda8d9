/* The compute backend: a table of operations over buffers the backend owns.
 *
 * A model is written once against this table; tensor/backend_cpu.c implements
 * it with OpenBLAS and plain C, gpu/ with cuBLAS and CUDA kernels. Buffers are
 * opaque device pointers (host pointers for the CPU backend): the model code
 * never dereferences them, it only passes them to these operations. All
 * matrices are row-major. Tensors of images are NHWC.
 *
 * Shape comments use B = batch rows, and name every argument's extent. */
#ifndef MM_BACKEND_H
#define MM_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct mm_backend mm_backend;

/* Geometry of a 2-D convolution, stride 1, square kernel, symmetric zero padding. */
typedef struct {
    int n;        /* images */
    int h, w, c;  /* input height, width, channels */
    int k, pad;   /* kernel size, padding */
    int oh, ow;   /* output height, width = h + 2 pad - k + 1 */
} mm_conv_geom;

/* Hyper-parameters of one optimizer step, already scheduled (lr is this step's). */
typedef struct {
    float lr, momentum, weight_decay;
    float grad_scale; /* gradients are multiplied by this first (global-norm clipping) */
    bool nesterov;
    float beta1, beta2, eps;
    float bias1, bias2; /* AdamW bias corrections 1 - beta^t */
} mm_opt_step;

typedef struct {
    const char *name;
    bool host_visible; /* buffers are plain host memory */
    void (*destroy)(mm_backend *be); /* may be NULL */

    /* Memory. alloc returns zeroed memory aligned to 64 bytes, or NULL. */
    void *(*alloc)(mm_backend *be, size_t bytes);
    void (*release)(mm_backend *be, void *p);
    void (*to_device)(mm_backend *be, void *dst, const void *src, size_t bytes);
    void (*to_host)(mm_backend *be, void *dst, const void *src, size_t bytes);
    void (*fill)(mm_backend *be, float *x, size_t n, float v);
    /* Wait until every queued operation is done (no-op on CPU). */
    void (*sync)(mm_backend *be);

    /* c[m,n] = alpha * op(a)[m,k] op(b)[k,n] + beta * c[m,n]; ta/tb transpose. */
    void (*gemm)(mm_backend *be, bool ta, bool tb, int m, int n, int k, float alpha, const float *a, int lda,
                 const float *b, int ldb, float beta, float *c, int ldc);
    /* y[rows,cols] += bias[cols], then ReLU if relu. */
    void (*bias_act)(mm_backend *be, float *y, const float *bias, int rows, int cols, bool relu);
    /* dy[n] *= (y[n] > 0): the ReLU backward, in place. */
    void (*relu_bwd)(mm_backend *be, float *dy, const float *y, size_t n);
    /* db[cols] = sum over rows of dy[rows,cols]. */
    void (*col_sum)(mm_backend *be, float *db, const float *dy, int rows, int cols);

    /* cols[n*oh*ow, k*k*c] from x[n,h,w,c]; row = output pixel, column = (ky,kx,ci). */
    void (*im2col)(mm_backend *be, float *cols, const float *x, const mm_conv_geom *g);
    /* dx[n,h,w,c] = sum of dcols[n*oh*ow, k*k*c] over the patches that read it (dx overwritten). */
    void (*col2im)(mm_backend *be, float *dx, const float *dcols, const mm_conv_geom *g);
    /* Optional, all three or none (NULL: the model runs a convolution as im2col, gemm and bias_act itself):
     * a whole convolution with bias and optional ReLU, done however suits the backend; w is [k,k,c,oc].
     * conv_scratch: floats of scratch that conv_fwd and conv_bwd need for geometry g (up to g->n images) and
     *   oc output channels; the caller allocates it, and its contents need not survive between calls.
     * conv_fwd: y[n,oh,ow,oc] = conv(x[n,h,w,c], w) + bias[oc], then ReLU if relu.
     * conv_bwd: from dy[n,oh,ow,oc], the gradient at the convolution's output (the ReLU's backward already
     *   applied), dw[k,k,c,oc], db[oc] and, unless dx is NULL, dx[n,h,w,c], all overwritten; x and w as given
     *   to conv_fwd. */
    size_t (*conv_scratch)(mm_backend *be, const mm_conv_geom *g, int oc);
    void (*conv_fwd)(mm_backend *be, float *y, const float *x, const float *w, const float *bias, bool relu,
                     const mm_conv_geom *g, int oc, float *scratch);
    void (*conv_bwd)(mm_backend *be, float *dw, float *db, float *dx, const float *dy, const float *x, const float *w,
                     const mm_conv_geom *g, int oc, float *scratch);
    /* Optional, both or neither (NULL: the model runs a linear layer as gemm, bias_act, col_sum and relu_bwd):
     * a whole fully connected layer, w[in,out].
     * linear_fwd: y[rows,out] = x[rows,in] w + bias[out], then ReLU if relu.
     * linear_bwd: from dy[rows,out], the gradient at the layer's output (its ReLU's backward already applied),
     *   dw[in,out] = x^T dy, db[out] = column sums of dy and, unless dx is NULL, dx[rows,in] = dy w^T, times
     *   (x > 0) if mask (x being a ReLU's output: that ReLU's backward, which the caller then skips); all
     *   overwritten. */
    void (*linear_fwd)(mm_backend *be, float *y, const float *x, const float *w, const float *bias, int rows, int in,
                       int out, bool relu);
    void (*linear_bwd)(mm_backend *be, float *dw, float *db, float *dx, const float *dy, const float *x,
                       const float *w, int rows, int in, int out, bool mask);
    /* 2x2, stride 2: y[n,h/2,w/2,c] = max of x[n,h,w,c]; arg[i] = index into x of y[i]'s max. */
    void (*maxpool_fwd)(mm_backend *be, float *y, uint32_t *arg, const float *x, int n, int h, int w, int c);
    /* dx[n,h,w,c] = 0 except dx[arg[i]] = dy[i]. */
    void (*maxpool_bwd)(mm_backend *be, float *dx, const float *dy, const uint32_t *arg, size_t ny, size_t nx);
    /* Softmax cross-entropy of logits[rows,cols] against labels[rows]:
     * dlogits = (softmax - onehot) / rows (dlogits may be NULL: evaluation only);
     * stats[0] += summed loss, stats[1] += correct argmax predictions. */
    void (*softmax_xent)(mm_backend *be, float *dlogits, float *stats, const float *logits, const int32_t *labels,
                         int rows, int cols);

    /* Sum of squares of x[n], accumulated in double (for global-norm clipping). */
    double (*sumsq)(mm_backend *be, const float *x, size_t n);
    /* SGD with momentum (PyTorch semantics, optional Nesterov), weight decay coupled:
     * g' = s g + wd p (s = grad_scale); v = mu v + g'; p -= lr (nesterov ? g' + mu v : v). */
    void (*sgd_step)(mm_backend *be, float *p, const float *g, float *v, size_t n, const mm_opt_step *s);
    /* AdamW (decoupled weight decay), on s g. */
    void (*adamw_step)(mm_backend *be, float *p, const float *g, float *m, float *v, size_t n, const mm_opt_step *s);
    /* The averaging merge: x[n] += w * (a[n] - b[n]). */
    void (*merge)(mm_backend *be, float *x, const float *a, const float *b, float w, size_t n);

    /* Optional (NULL: the host converts batches, mm_loader_next): a batch gathered from a dataset
     * kept in the backend's memory, x[i*pixels + j] = table[images[idx[i]*pixels + j]] and
     * y[i] = labels[idx[i]] for i < n. images and labels (bytes), idx and table (256 floats, the
     * loader's) are buffers from alloc. The trainer uses it where buffers are not host-visible. */
    void (*gather_u8)(mm_backend *be, float *x, int32_t *y, const uint8_t *images, const uint8_t *labels,
                      const uint32_t *idx, uint32_t n, uint32_t pixels, const float *table);
    /* Optional (NULL: fp32 only): gemm on TF32 tensor cores (on) or in full fp32 (off, the default).
     * Returns 0, or -1 after a device error. */
    int (*set_tf32)(mm_backend *be, bool on);
} mm_backend_ops;

struct mm_backend {
    const mm_backend_ops *ops;
    int threads;
    void *impl; /* backend-private state */
};

/* The CPU backend; threads is OpenBLAS's thread count (>= 1). */
int mm_backend_cpu_init(mm_backend *be, int threads);
/* The same arithmetic behind a device's interface: host_visible false (callers stage through
 * to_device/to_host) and gather_u8, as the CUDA backend. It runs the node's device code paths
 * (the training set held by the backend, merges through device buffers) on machines without a
 * GPU, and must give the CPU backend's results bit for bit (test_trainer). `--device cpu-staged`. */
int mm_backend_cpu_staged_init(mm_backend *be, int threads);
/* Release the backend's own state (not the buffers it handed out). */
void mm_backend_free(mm_backend *be);

#endif
