/* The CUDA backend (backend_cuda.h): cuBLAS for matrix products, one small
 * kernel per remaining operation, everything queued on one stream.
 *
 * The CPU backend (tensor/backend_cpu.c) is the reference. Elementwise kernels
 * evaluate the same expressions in the same order, and this file is compiled
 * without FMA contraction (--fmad=false, as the CPU side compiles C11 without
 * it), so fill, bias_act, relu_bwd, im2col, col2im, maxpool, the optimizer
 * steps and merge should round exactly as on the CPU (test_gpu_parity counts
 * the elements that do not). GEMMs and reductions sum in a different order
 * and agree to rounding.
 *
 * Kernels use grid-stride loops over a grid of at most kMaxBlocks blocks of
 * kThreads threads. Reductions are deterministic: fixed grids write partial
 * sums to a scratch buffer, and a one-block kernel adds them in order. */
#include "backend_cuda.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#ifndef MM_HAVE_CUDNN
#define MM_HAVE_CUDNN 0
#endif
#if MM_HAVE_CUDNN
#include <cudnn.h>
#include <dlfcn.h>
#endif

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

namespace {

constexpr int kThreads = 256;              /* per block, every kernel; a multiple of 32 (block_sum) */
constexpr size_t kMaxBlocks = 4096;        /* grid-stride loops cover larger ranges */
constexpr size_t kReduceBlocks = 1024;     /* partial sums of sumsq and softmax_xent */
constexpr int kColSumParts = 256;          /* row slices of col_sum */
constexpr int kStages = 4;                 /* pinned buffers that to_device copies through */
constexpr size_t kStageMax = 64u << 20;    /* larger uploads skip staging and wait instead */
constexpr size_t kScratchInit = 1u << 20;  /* partial sums; grown on demand */
constexpr size_t kConvWorkspace = 64u << 20; /* cuDNN workspace, bytes: algorithms needing more are passed over */
constexpr int kConvPlans = 16;             /* cached convolution geometries (layers x batch sizes) */

#if MM_HAVE_CUDNN
/* One convolution geometry's cuDNN descriptors and chosen algorithms. */
struct conv_plan {
    mm_conv_geom g;
    int oc;
    bool used;
    cudnnTensorDescriptor_t x, y;
    cudnnFilterDescriptor_t f;
    cudnnConvolutionDescriptor_t conv;
    cudnnConvolutionFwdAlgo_t fwd;
    cudnnConvolutionBwdDataAlgo_t bwd_data;
    cudnnConvolutionBwdFilterAlgo_t bwd_filter;
};
#endif

/* ---- state and errors ---- */

struct stage_slot {
    void *buf; /* pinned host memory */
    size_t cap;
    cudaEvent_t done; /* recorded after the copy out of buf */
};

struct cuda_state {
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    void *scratch; /* device, partial sums */
    size_t scratch_cap;
    double *result; /* pinned host: sumsq's answer */
    stage_slot stage[kStages];
    int next_stage;
#if MM_HAVE_CUDNN
    cudnnHandle_t dnn; /* created at the first convolution */
    conv_plan plans[kConvPlans];
    int next_plan;
#endif
    bool tf32;   /* set_tf32: GEMMs (and cuDNN convolutions) may use TF32 tensor cores */
    bool ready;  /* init finished: errors from here on are printed */
    bool failed; /* sticky: the first error is in msg */
    char msg[256];
};

cuda_state *state_of(const mm_backend *be) { return static_cast<cuda_state *>(be->impl); }

__attribute__((format(printf, 2, 3))) void fail(cuda_state *s, const char *fmt, ...)
{
    if (s->failed) return;
    s->failed = true;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->msg, sizeof s->msg, fmt, ap);
    va_end(ap);
    if (s->ready) fprintf(stderr, "murmur: CUDA backend: %s (later operations are skipped)\n", s->msg);
}

bool check(cuda_state *s, cudaError_t e, const char *what)
{
    if (e == cudaSuccess) return true;
    fail(s, "%s: %s (%s)", what, cudaGetErrorName(e), cudaGetErrorString(e));
    return false;
}

bool check(cuda_state *s, cublasStatus_t e, const char *what)
{
    if (e == CUBLAS_STATUS_SUCCESS) return true;
    fail(s, "%s: %s (%s)", what, cublasGetStatusName(e), cublasGetStatusString(e));
    return false;
}

#if MM_HAVE_CUDNN
/* cuDNN is loaded with dlopen when MM_CUDA_CONV=cudnn asks for it, so that the backend needs it
 * only then: a machine without cuDNN still trains on its GPU with the im2col path. */
#define MM_CUDNN_FUNCS(X)                                                                                          \
    X(cudnnGetErrorString) X(cudnnCreate) X(cudnnDestroy) X(cudnnSetStream) X(cudnnCreateTensorDescriptor)        \
    X(cudnnDestroyTensorDescriptor) X(cudnnCreateFilterDescriptor) X(cudnnDestroyFilterDescriptor)                \
    X(cudnnCreateConvolutionDescriptor) X(cudnnDestroyConvolutionDescriptor) X(cudnnSetTensor4dDescriptor)        \
    X(cudnnSetFilter4dDescriptor) X(cudnnSetConvolution2dDescriptor) X(cudnnSetConvolutionMathType)               \
    X(cudnnGetConvolutionForwardAlgorithm_v7) X(cudnnGetConvolutionBackwardDataAlgorithm_v7)                      \
    X(cudnnGetConvolutionBackwardFilterAlgorithm_v7) X(cudnnConvolutionForward) X(cudnnConvolutionBackwardData)   \
    X(cudnnConvolutionBackwardFilter)

struct cudnn_api {
#define MM_X(f) decltype(&::f) f;
    MM_CUDNN_FUNCS(MM_X)
#undef MM_X
    bool ok;
    char why[200];
};

#define MM_STR2(x) #x
#define MM_STR(x) MM_STR2(x)

/* Loaded once, on first use (thread-safe: a function-local static). */
const cudnn_api &dnn_api()
{
    static const cudnn_api api = [] {
        cudnn_api a = {};
        const char *lib = "libcudnn.so." MM_STR(CUDNN_MAJOR);
        void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            snprintf(a.why, sizeof a.why, "cannot load %s: %s", lib, dlerror());
            return a;
        }
#define MM_X(f)                                                                                                    \
    a.f = reinterpret_cast<decltype(&::f)>(dlsym(h, #f));                                                          \
    if (!a.f) {                                                                                                    \
        snprintf(a.why, sizeof a.why, "%s has no %s", lib, #f);                                                    \
        return a;                                                                                                  \
    }
        MM_CUDNN_FUNCS(MM_X)
#undef MM_X
        a.ok = true;
        return a;
    }();
    return api;
}

/* DNN(s, f, args...): call cuDNN's f through the loaded table, record its failure under f's name. */
#define DNN(s, f, ...) check((s), dnn_api().f(__VA_ARGS__), #f)

bool check(cuda_state *s, cudnnStatus_t e, const char *what)
{
    if (e == CUDNN_STATUS_SUCCESS) return true;
    fail(s, "%s: %s", what, dnn_api().cudnnGetErrorString(e));
    return false;
}
#endif

/* OK(s, f, args...): call f(args...), record its failure under f's name. */
#define OK(s, f, ...) check((s), f(__VA_ARGS__), #f)

/* The state, ready for an operation: NULL after an error. The current device
 * is per host thread, and a node may drive the backend from a thread other
 * than the one that opened it, so every operation selects it. */
cuda_state *enter(mm_backend *be)
{
    cuda_state *s = state_of(be);
    if (s->failed) return nullptr;
    return OK(s, cudaSetDevice, s->device) ? s : nullptr;
}

size_t blocks_for(size_t n, size_t max_blocks)
{
    const size_t b = (n + kThreads - 1) / kThreads;
    return b < max_blocks ? b : max_blocks;
}

/* Queue kernel over a range of n elements (nothing when n is 0). */
template <typename... P, typename... A>
void launch(cuda_state *s, const char *name, void (*kernel)(P...), size_t n, A... args)
{
    if (n == 0) return;
    kernel<<<(unsigned)blocks_for(n, kMaxBlocks), kThreads, 0, s->stream>>>(args...);
    check(s, cudaGetLastError(), name);
}

/* The scratch buffer, at least count T's; NULL on failure. */
template <typename T> T *scratch(cuda_state *s, size_t count)
{
    const size_t bytes = count * sizeof(T);
    if (bytes > s->scratch_cap) {
        if (s->scratch) { /* queued kernels may still read the old one */
            if (!OK(s, cudaStreamSynchronize, s->stream) || !OK(s, cudaFree, s->scratch)) return nullptr;
            s->scratch = nullptr;
            s->scratch_cap = 0;
        }
        const size_t cap = bytes > kScratchInit ? bytes : kScratchInit;
        if (!OK(s, cudaMalloc, &s->scratch, cap)) return nullptr;
        s->scratch_cap = cap;
    }
    return static_cast<T *>(s->scratch);
}

/* ---- kernels ---- */

/* Kernels that divide their index (bias_act, im2col, col2im, maxpool_fwd)
 * come in two index widths: I = uint32_t when the range is below kNarrow (the
 * common case: 64-bit division is several times slower on the GPU), size_t
 * otherwise. Addresses are always computed in size_t. */
constexpr size_t kNarrow = size_t(1) << 31;

/* Grid-stride loop of index type I over [0, n). */
#define FOR_EACH(I, i, n) \
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (I)gridDim.x * blockDim.x)

/* Sum of v over the block, in thread 0 (blockDim.x a multiple of 32; every
 * thread of the block must call it). */
__device__ double block_sum(double v)
{
    __shared__ double warp_sums[32];
    const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    for (int off = 16; off > 0; off /= 2) v += __shfl_down_sync(0xffffffffu, v, off);
    __syncthreads(); /* a previous call may still be reading warp_sums */
    if (lane == 0) warp_sums[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < blockDim.x / 32 ? warp_sums[lane] : 0.0;
        for (int off = 16; off > 0; off /= 2) v += __shfl_down_sync(0xffffffffu, v, off);
    }
    return v;
}

__global__ void fill_kernel(float *x, size_t n, float v)
{
    FOR_EACH(size_t, i, n) x[i] = v;
}

template <typename I> __global__ void bias_act_kernel(float *y, const float *bias, I n, int cols, bool relu)
{
    FOR_EACH(I, i, n)
    {
        const float v = y[i] + bias[i % (I)cols];
        y[i] = relu ? (v > 0.0f ? v : 0.0f) : v;
    }
}

__global__ void relu_bwd_kernel(float *dy, const float *y, size_t n)
{
    FOR_EACH(size_t, i, n) dy[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

/* col_sum, pass 1: block (x, y) sums columns [32x, 32x + 32) over the rows
 * r = y * 8 + ty (mod 8 * gridDim.y) into part[y, cols]. */
constexpr int kColSumX = 32, kColSumY = 8;
__global__ void col_sum_partial(float *part, const float *dy, int rows, int cols)
{
    __shared__ float acc[kColSumY][kColSumX];
    const int c = blockIdx.x * kColSumX + threadIdx.x;
    float sum = 0.0f;
    if (c < cols)
        for (int r = blockIdx.y * kColSumY + threadIdx.y; r < rows; r += kColSumY * gridDim.y)
            sum += dy[(size_t)r * cols + c];
    acc[threadIdx.y][threadIdx.x] = sum;
    __syncthreads();
    if (threadIdx.y == 0 && c < cols) {
        float t = 0.0f;
        for (int j = 0; j < kColSumY; j++) t += acc[j][threadIdx.x];
        part[(size_t)blockIdx.y * cols + c] = t;
    }
}

/* col_sum, pass 2: db[c] = sum over the parts, in order. */
__global__ void col_sum_final(float *db, const float *part, int parts, int cols)
{
    FOR_EACH(size_t, c, (size_t)cols)
    {
        float t = 0.0f;
        for (int p = 0; p < parts; p++) t += part[(size_t)p * cols + c];
        db[c] = t;
    }
}

/* Element i of im2col's output: row = output pixel (n, oy, ox), column = (ky, kx, ci). */
template <typename I> __host__ __device__ inline float im2col_at(const float *x, const mm_conv_geom &g, I i)
{
    const I kc = (I)(g.k * g.c), rowlen = (I)g.k * kc, row = i / rowlen, col = i - row * rowlen;
    const int ky = (int)(col / kc), kx = (int)(col % kc / (I)g.c), ci = (int)(col % (I)g.c);
    const int ox = (int)(row % (I)g.ow), oy = (int)(row / (I)g.ow % (I)g.oh);
    const size_t n = row / (I)g.ow / (I)g.oh;
    const int iy = oy + ky - g.pad, ix = ox + kx - g.pad;
    if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w) return 0.0f;
    return x[((n * g.h + iy) * g.w + ix) * g.c + ci];
}

/* Element i = (n, iy, ix, ci) of col2im's output: the patches that read it,
 * added in the CPU backend's order (oy, then ox, ascending). */
template <typename I> __host__ __device__ inline float col2im_at(const float *dcols, const mm_conv_geom &g, I i)
{
    const I pixel = i / (I)g.c;
    const int ci = (int)(i % (I)g.c), ix = (int)(pixel % (I)g.w), iy = (int)(pixel / (I)g.w % (I)g.h);
    const size_t n = pixel / (I)g.w / (I)g.h;
    float sum = 0.0f;
    for (int ky = g.k - 1; ky >= 0; ky--) {
        const int oy = iy + g.pad - ky;
        if (oy < 0 || oy >= g.oh) continue;
        for (int kx = g.k - 1; kx >= 0; kx--) {
            const int ox = ix + g.pad - kx;
            if (ox < 0 || ox >= g.ow) continue;
            const size_t row = (n * g.oh + oy) * g.ow + ox;
            sum += dcols[(row * g.k * g.k + (size_t)ky * g.k + kx) * g.c + ci];
        }
    }
    return sum;
}

template <typename I> __global__ void im2col_kernel(float *cols, const float *x, mm_conv_geom g, I n)
{
    FOR_EACH(I, i, n) cols[i] = im2col_at(x, g, i);
}

template <typename I> __global__ void col2im_kernel(float *dx, const float *dcols, mm_conv_geom g, I n)
{
    FOR_EACH(I, i, n) dx[i] = col2im_at(dcols, g, i);
}

/* The index into x of output o's maximum: its 2x2 window in the order
 * (0,0), (0,1), (1,0), (1,1), the first of equal values winning. */
template <typename I> __host__ __device__ inline size_t maxpool_arg(const float *x, I o, int h, int w, int c)
{
    const I oh = (I)(h / 2), ow = (I)(w / 2), pixel = o / (I)c;
    const int ch = (int)(o % (I)c), ox = (int)(pixel % ow), oy = (int)(pixel / ow % oh);
    const size_t img = pixel / ow / oh;
    const size_t q0 = ((img * h + 2 * oy) * w + 2 * ox) * c + ch;
    const size_t q[4] = {q0, q0 + c, q0 + (size_t)w * c, q0 + (size_t)w * c + c};
    size_t best = q[0];
    for (int j = 1; j < 4; j++)
        if (x[q[j]] > x[best]) best = q[j];
    return best;
}

template <typename I>
__global__ void maxpool_fwd_kernel(float *y, uint32_t *arg, const float *x, int h, int w, int c, I n)
{
    FOR_EACH(I, o, n)
    {
        const size_t best = maxpool_arg(x, o, h, w, c);
        y[o] = x[best];
        arg[o] = (uint32_t)best;
    }
}

__global__ void maxpool_bwd_kernel(float *dx, const float *dy, const uint32_t *arg, size_t ny, size_t nx)
{
    FOR_EACH(size_t, i, ny)
    {
        if (arg[i] < nx) dx[arg[i]] = dy[i];
    }
}

/* Row r of softmax_xent: its gradient row (if dlogits), its loss into *loss
 * and 1 into *correct if its argmax (first of equals) is the label. A label
 * outside [0, cols) gives a NaN loss. */
__host__ __device__ inline void softmax_xent_row(float *dlogits, const float *logits, const int32_t *labels, int r,
                                                 int rows, int cols, double *loss, double *correct)
{
    const float *z = logits + (size_t)r * cols;
    int best = 0;
    for (int c = 1; c < cols; c++)
        if (z[c] > z[best]) best = c;
    const float mx = z[best];
    double sum = 0.0;
    for (int c = 0; c < cols; c++) sum += exp((double)(z[c] - mx));
    const int y = labels[r];
    const bool valid = y >= 0 && y < cols;
    *loss = valid ? log(sum) - (double)(z[y] - mx) : (double)NAN;
    *correct = best == y ? 1.0 : 0.0;
    if (dlogits) {
        const float inv = 1.0f / (float)rows;
        float *d = dlogits + (size_t)r * cols;
        for (int c = 0; c < cols; c++) d[c] = ((float)(exp((double)(z[c] - mx)) / sum) - (c == y ? 1.0f : 0.0f)) * inv;
    }
}

/* softmax_xent, pass 1: part[b] = loss and part[gridDim.x + b] = correct
 * count of the rows block b visits. */
__global__ void softmax_xent_kernel(float *dlogits, double *part, const float *logits, const int32_t *labels, int rows,
                                    int cols)
{
    double loss = 0.0, correct = 0.0;
    FOR_EACH(size_t, r, (size_t)rows)
    {
        double l, k;
        softmax_xent_row(dlogits, logits, labels, (int)r, rows, cols, &l, &k);
        loss += l;
        correct += k;
    }
    loss = block_sum(loss);
    correct = block_sum(correct);
    if (threadIdx.x == 0) {
        part[blockIdx.x] = loss;
        part[gridDim.x + blockIdx.x] = correct;
    }
}

/* softmax_xent, pass 2 (one block): stats += the totals, as the CPU backend adds them. */
__global__ void softmax_xent_finish(float *stats, const double *part, int parts)
{
    double loss = 0.0, correct = 0.0;
    for (int i = threadIdx.x; i < parts; i += blockDim.x) {
        loss += part[i];
        correct += part[parts + i];
    }
    loss = block_sum(loss);
    correct = block_sum(correct);
    if (threadIdx.x == 0) {
        stats[0] += (float)loss;
        stats[1] += (float)correct;
    }
}

__global__ void sumsq_kernel(double *part, const float *x, size_t n)
{
    double acc = 0.0;
    FOR_EACH(size_t, i, n) acc += (double)x[i] * (double)x[i];
    acc = block_sum(acc);
    if (threadIdx.x == 0) part[blockIdx.x] = acc;
}

/* One block: *out = sum of part[0, parts). */
__global__ void sum_parts_kernel(double *out, const double *part, int parts)
{
    double acc = 0.0;
    for (int i = threadIdx.x; i < parts; i += blockDim.x) acc += part[i];
    acc = block_sum(acc);
    if (threadIdx.x == 0) *out = acc;
}

__host__ __device__ inline void sgd_at(float *p, const float *g, float *v, size_t i, const mm_opt_step &s)
{
    const float lr = s.lr, mu = s.momentum, wd = s.weight_decay, gs = s.grad_scale;
    if (s.nesterov) {
        const float gi = gs * g[i] + wd * p[i], vi = mu * v[i] + gi;
        v[i] = vi;
        p[i] -= lr * (gi + mu * vi);
    } else {
        const float vi = mu * v[i] + gs * g[i] + wd * p[i];
        v[i] = vi;
        p[i] -= lr * vi;
    }
}

__host__ __device__ inline void adamw_at(float *p, const float *g, float *m, float *v, size_t i, const mm_opt_step &s)
{
    const float b1 = s.beta1, b2 = s.beta2, decay = 1.0f - s.lr * s.weight_decay, gs = s.grad_scale;
    const float step = s.lr / s.bias1, inv_sqrt_b2 = 1.0f / sqrtf(s.bias2);
    const float gi = gs * g[i];
    const float mi = b1 * m[i] + (1.0f - b1) * gi;
    const float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * decay - step * mi / (sqrtf(vi) * inv_sqrt_b2 + s.eps);
}

__global__ void sgd_kernel(float *p, const float *g, float *v, size_t n, mm_opt_step s)
{
    FOR_EACH(size_t, i, n) sgd_at(p, g, v, i, s);
}

__global__ void adamw_kernel(float *p, const float *g, float *m, float *v, size_t n, mm_opt_step s)
{
    FOR_EACH(size_t, i, n) adamw_at(p, g, m, v, i, s);
}

__global__ void merge_kernel(float *x, const float *a, const float *b, float w, size_t n)
{
    FOR_EACH(size_t, i, n) x[i] += w * (a[i] - b[i]);
}

/* A batch from the dataset on the device: the loader's 256-entry table is read once per block. */
template <typename I>
__global__ void gather_u8_kernel(float *x, int32_t *y, const uint8_t *images, const uint8_t *labels, const uint32_t *idx,
                                 I n, I pixels, const float *table)
{
    __shared__ float t[256];
    for (unsigned v = threadIdx.x; v < 256; v += blockDim.x) t[v] = table[v];
    __syncthreads();
    FOR_EACH(I, k, n)
    {
        const I i = k / pixels, j = k - i * pixels;
        const uint32_t e = idx[i];
        x[k] = t[images[(size_t)e * pixels + j]];
        if (j == 0) y[i] = labels[e];
    }
}

/* out[j * rows + i] = in[i * cols + j]: a rows x cols matrix transposed (convolution weights between
 * our [k,k,c,oc] and cuDNN's [oc,k,k,c]). */
__global__ void transpose_kernel(float *out, const float *in, uint32_t rows, uint32_t cols, uint32_t n)
{
    FOR_EACH(uint32_t, e, n)
    {
        const uint32_t i = e / cols, j = e - i * cols;
        out[(size_t)j * rows + i] = in[e];
    }
}

/* ---- operations ---- */

#if MM_HAVE_CUDNN
void drop_plan(conv_plan &p)
{
    if (!p.used) return;
    (void)dnn_api().cudnnDestroyTensorDescriptor(p.x);
    (void)dnn_api().cudnnDestroyTensorDescriptor(p.y);
    (void)dnn_api().cudnnDestroyFilterDescriptor(p.f);
    (void)dnn_api().cudnnDestroyConvolutionDescriptor(p.conv);
    p.used = false;
}

void drop_plans(cuda_state *s)
{
    for (conv_plan &p : s->plans) drop_plan(p);
}
#endif

void cu_destroy(mm_backend *be)
{
    cuda_state *s = state_of(be);
    if (!s) return;
    (void)cudaSetDevice(s->device);
    if (s->stream) (void)cudaStreamSynchronize(s->stream);
    for (stage_slot &slot : s->stage) {
        if (slot.buf) (void)cudaFreeHost(slot.buf);
        if (slot.done) (void)cudaEventDestroy(slot.done);
    }
    if (s->result) (void)cudaFreeHost(s->result);
    if (s->scratch) (void)cudaFree(s->scratch);
    if (s->blas) (void)cublasDestroy(s->blas);
#if MM_HAVE_CUDNN
    drop_plans(s);
    if (s->dnn) (void)dnn_api().cudnnDestroy(s->dnn);
#endif
    if (s->stream) (void)cudaStreamDestroy(s->stream);
    free(s);
    be->impl = nullptr;
}

void *cu_alloc(mm_backend *be, size_t bytes)
{
    cuda_state *s = enter(be);
    if (!s) return nullptr;
    const size_t rounded = bytes ? (bytes + 63) / 64 * 64 : 64;
    void *p = nullptr;
    const cudaError_t e = cudaMalloc(&p, rounded); /* 256-byte aligned */
    if (e == cudaErrorMemoryAllocation) {           /* not sticky: the caller sees NULL */
        (void)cudaGetLastError();
        return nullptr;
    }
    if (!check(s, e, "cudaMalloc")) return nullptr;
    if (!OK(s, cudaMemsetAsync, p, 0, rounded, s->stream)) {
        (void)cudaFree(p);
        return nullptr;
    }
    return p;
}

void cu_release(mm_backend *be, void *p)
{
    if (!p) return;
    cuda_state *s = enter(be);
    if (!s) { /* after an error: free what can be freed, quietly */
        (void)cudaFree(p);
        return;
    }
    /* Queued operations may still use p. */
    if (OK(s, cudaStreamSynchronize, s->stream)) OK(s, cudaFree, p);
}

/* Through a pinned staging buffer, so the copy is asynchronous and src is free
 * for reuse on return, as with the CPU backend's memmove. A slot is reused once
 * its previous copy is done: the host runs at most kStages uploads ahead. */
void cu_to_device(mm_backend *be, void *dst, const void *src, size_t bytes)
{
    cuda_state *s = enter(be);
    if (!s || bytes == 0) return;
    if (bytes > kStageMax) {
        if (OK(s, cudaMemcpyAsync, dst, src, bytes, cudaMemcpyHostToDevice, s->stream))
            OK(s, cudaStreamSynchronize, s->stream);
        return;
    }
    stage_slot &slot = s->stage[s->next_stage];
    s->next_stage = (s->next_stage + 1) % kStages;
    if (!OK(s, cudaEventSynchronize, slot.done)) return;
    if (slot.cap < bytes) {
        if (slot.buf && !OK(s, cudaFreeHost, slot.buf)) return;
        slot.buf = nullptr;
        slot.cap = 0;
        size_t cap = 64u << 10;
        while (cap < bytes) cap *= 2;
        if (!OK(s, cudaMallocHost, &slot.buf, cap)) return;
        slot.cap = cap;
    }
    memcpy(slot.buf, src, bytes);
    if (OK(s, cudaMemcpyAsync, dst, slot.buf, bytes, cudaMemcpyHostToDevice, s->stream))
        OK(s, cudaEventRecord, slot.done, s->stream);
}

void cu_to_host(mm_backend *be, void *dst, const void *src, size_t bytes)
{
    if (bytes == 0) return;
    cuda_state *s = enter(be);
    if (!s || !OK(s, cudaMemcpyAsync, dst, src, bytes, cudaMemcpyDeviceToHost, s->stream) ||
        !OK(s, cudaStreamSynchronize, s->stream))
        memset(dst, 0, bytes);
}

void cu_fill(mm_backend *be, float *x, size_t n, float v)
{
    if (cuda_state *s = enter(be)) launch(s, "fill", fill_kernel, n, x, n, v);
}

void cu_sync(mm_backend *be)
{
    if (cuda_state *s = enter(be)) OK(s, cudaStreamSynchronize, s->stream);
}

/* Row-major c = op(a) op(b) is column-major c^T = op(b)^T op(a)^T: the same
 * buffers, b first, m and n swapped. */
void cu_gemm(mm_backend *be, bool ta, bool tb, int m, int n, int k, float alpha, const float *a, int lda,
             const float *b, int ldb, float beta, float *c, int ldc)
{
    cuda_state *s = enter(be);
    if (!s || m == 0 || n == 0) return;
    OK(s, cublasSgemm, s->blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &alpha, b, ldb,
       a, lda, &beta, c, ldc);
}

int cu_set_tf32(mm_backend *be, bool on)
{
    cuda_state *s = enter(be);
    if (!s || !OK(s, cublasSetMathMode, s->blas, on ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH)) return -1;
    s->tf32 = on;
#if MM_HAVE_CUDNN
    drop_plans(s); /* their algorithms were chosen for the other math */
#endif
    return 0;
}

void cu_gather_u8(mm_backend *be, float *x, int32_t *y, const uint8_t *images, const uint8_t *labels,
                  const uint32_t *idx, uint32_t n, uint32_t pixels, const float *table)
{
    const size_t total = (size_t)n * pixels;
    cuda_state *s = enter(be);
    if (!s || pixels == 0) return;
    if (total < kNarrow)
        launch(s, "gather_u8", gather_u8_kernel<uint32_t>, total, x, y, images, labels, idx, (uint32_t)total, pixels,
               table);
    else
        launch(s, "gather_u8", gather_u8_kernel<size_t>, total, x, y, images, labels, idx, total, (size_t)pixels, table);
}

void cu_bias_act(mm_backend *be, float *y, const float *bias, int rows, int cols, bool relu)
{
    const size_t n = (size_t)rows * cols;
    cuda_state *s = enter(be);
    if (!s) return;
    if (n < kNarrow) launch(s, "bias_act", bias_act_kernel<uint32_t>, n, y, bias, (uint32_t)n, cols, relu);
    else launch(s, "bias_act", bias_act_kernel<size_t>, n, y, bias, n, cols, relu);
}

void cu_relu_bwd(mm_backend *be, float *dy, const float *y, size_t n)
{
    if (cuda_state *s = enter(be)) launch(s, "relu_bwd", relu_bwd_kernel, n, dy, y, n);
}

void cu_col_sum(mm_backend *be, float *db, const float *dy, int rows, int cols)
{
    cuda_state *s = enter(be);
    if (!s || cols <= 0) return;
    /* Slices of at least 64 rows (8 per thread), at most kColSumParts of them. */
    const int parts = rows / 64 < 1 ? 1 : (rows / 64 > kColSumParts ? kColSumParts : rows / 64);
    float *part = scratch<float>(s, (size_t)parts * cols);
    if (!part) return;
    const dim3 grid((unsigned)((cols + kColSumX - 1) / kColSumX), (unsigned)parts), block(kColSumX, kColSumY);
    col_sum_partial<<<grid, block, 0, s->stream>>>(part, dy, rows, cols);
    if (check(s, cudaGetLastError(), "col_sum_partial"))
        launch(s, "col_sum_final", col_sum_final, cols, db, part, parts, cols);
}

void cu_im2col(mm_backend *be, float *cols, const float *x, const mm_conv_geom *g)
{
    const size_t n = (size_t)g->n * g->oh * g->ow * g->k * g->k * g->c;
    cuda_state *s = enter(be);
    if (!s) return;
    if (n < kNarrow) launch(s, "im2col", im2col_kernel<uint32_t>, n, cols, x, *g, (uint32_t)n);
    else launch(s, "im2col", im2col_kernel<size_t>, n, cols, x, *g, n);
}

void cu_col2im(mm_backend *be, float *dx, const float *dcols, const mm_conv_geom *g)
{
    const size_t n = (size_t)g->n * g->h * g->w * g->c;
    cuda_state *s = enter(be);
    if (!s) return;
    if (n < kNarrow) launch(s, "col2im", col2im_kernel<uint32_t>, n, dx, dcols, *g, (uint32_t)n);
    else launch(s, "col2im", col2im_kernel<size_t>, n, dx, dcols, *g, n);
}

void cu_maxpool_fwd(mm_backend *be, float *y, uint32_t *arg, const float *x, int n, int h, int w, int c)
{
    const size_t ny = (size_t)n * (h / 2) * (w / 2) * c;
    cuda_state *s = enter(be);
    if (!s) return;
    if (ny < kNarrow) launch(s, "maxpool_fwd", maxpool_fwd_kernel<uint32_t>, ny, y, arg, x, h, w, c, (uint32_t)ny);
    else launch(s, "maxpool_fwd", maxpool_fwd_kernel<size_t>, ny, y, arg, x, h, w, c, ny);
}

void cu_maxpool_bwd(mm_backend *be, float *dx, const float *dy, const uint32_t *arg, size_t ny, size_t nx)
{
    cuda_state *s = enter(be);
    if (!s || nx == 0) return;
    if (OK(s, cudaMemsetAsync, dx, 0, nx * sizeof *dx, s->stream))
        launch(s, "maxpool_bwd", maxpool_bwd_kernel, ny, dx, dy, arg, ny, nx);
}

/* Accumulates into the device's stats without waiting for the result. */
void cu_softmax_xent(mm_backend *be, float *dlogits, float *stats, const float *logits, const int32_t *labels,
                     int rows, int cols)
{
    cuda_state *s = enter(be);
    if (!s || rows <= 0) return;
    const size_t blocks = blocks_for((size_t)rows, kReduceBlocks);
    double *part = scratch<double>(s, 2 * blocks);
    if (!part) return;
    softmax_xent_kernel<<<(unsigned)blocks, kThreads, 0, s->stream>>>(dlogits, part, logits, labels, rows, cols);
    if (!check(s, cudaGetLastError(), "softmax_xent")) return;
    softmax_xent_finish<<<1, kThreads, 0, s->stream>>>(stats, part, (int)blocks);
    check(s, cudaGetLastError(), "softmax_xent_finish");
}

/* Waits for the answer (NaN after an error). */
double cu_sumsq(mm_backend *be, const float *x, size_t n)
{
    cuda_state *s = enter(be);
    if (!s) return NAN;
    if (n == 0) return 0.0;
    const size_t blocks = blocks_for(n, kReduceBlocks);
    double *part = scratch<double>(s, blocks + 1);
    if (!part) return NAN;
    double *total = part + blocks;
    sumsq_kernel<<<(unsigned)blocks, kThreads, 0, s->stream>>>(part, x, n);
    if (!check(s, cudaGetLastError(), "sumsq")) return NAN;
    sum_parts_kernel<<<1, kThreads, 0, s->stream>>>(total, part, (int)blocks);
    if (!check(s, cudaGetLastError(), "sumsq_total") ||
        !OK(s, cudaMemcpyAsync, s->result, total, sizeof *total, cudaMemcpyDeviceToHost, s->stream) ||
        !OK(s, cudaStreamSynchronize, s->stream))
        return NAN;
    return *s->result;
}

void cu_sgd_step(mm_backend *be, float *p, const float *g, float *v, size_t n, const mm_opt_step *st)
{
    if (cuda_state *s = enter(be)) launch(s, "sgd_step", sgd_kernel, n, p, g, v, n, *st);
}

void cu_adamw_step(mm_backend *be, float *p, const float *g, float *m, float *v, size_t n, const mm_opt_step *st)
{
    if (cuda_state *s = enter(be)) launch(s, "adamw_step", adamw_kernel, n, p, g, m, v, n, *st);
}

void cu_merge(mm_backend *be, float *x, const float *a, const float *b, float w, size_t n)
{
    if (cuda_state *s = enter(be)) launch(s, "merge", merge_kernel, n, x, a, b, w, n);
}

#if MM_HAVE_CUDNN
/* Convolutions through cuDNN (MM_CUDA_CONV=cudnn): NHWC tensors as they are; the weights transposed
 * to cuDNN's [oc,k,k,c] in the caller's scratch, and the weight gradient transposed back. Math is
 * CUDNN_FMA_MATH (true fp32, as the rest of the backend) unless set_tf32. Algorithms come from
 * cuDNN's heuristics, the first deterministic one that needs at most kConvWorkspace bytes (the
 * first that fits otherwise), so a run repeats its bits as the im2col path does. */

size_t weights_of(const mm_conv_geom *g, int oc) { return (size_t)g->k * g->k * g->c * oc; }

/* The scratch layout: transposed weights, transposed weight gradient, then the workspace (256-byte aligned). */
size_t conv_ws_offset(const mm_conv_geom *g, int oc) { return (2 * weights_of(g, oc) + 63) / 64 * 64; }

template <typename P> int pick(cuda_state *s, const P *perf, int got, const char *what)
{
    int fit = -1;
    for (int i = 0; i < got; i++) {
        if (perf[i].status != CUDNN_STATUS_SUCCESS || perf[i].memory > kConvWorkspace) continue;
        if (perf[i].determinism == CUDNN_DETERMINISTIC) return (int)perf[i].algo;
        if (fit < 0) fit = (int)perf[i].algo;
    }
    if (fit < 0) fail(s, "%s: no cuDNN algorithm within %zu MiB of workspace", what, kConvWorkspace >> 20);
    return fit;
}

conv_plan *plan_for(cuda_state *s, const mm_conv_geom *g, int oc)
{
    for (conv_plan &p : s->plans)
        if (p.used && p.oc == oc && memcmp(&p.g, g, sizeof *g) == 0) return &p;
    if (!s->dnn && (!DNN(s, cudnnCreate, &s->dnn) || !DNN(s, cudnnSetStream, s->dnn, s->stream))) return nullptr;
    conv_plan &p = s->plans[s->next_plan++ % kConvPlans];
    drop_plan(p);
    p.g = *g;
    p.oc = oc;
    if (!DNN(s, cudnnCreateTensorDescriptor, &p.x)) return nullptr;
    if (!DNN(s, cudnnCreateTensorDescriptor, &p.y)) {
        (void)dnn_api().cudnnDestroyTensorDescriptor(p.x);
        return nullptr;
    }
    if (!DNN(s, cudnnCreateFilterDescriptor, &p.f)) {
        (void)dnn_api().cudnnDestroyTensorDescriptor(p.x);
        (void)dnn_api().cudnnDestroyTensorDescriptor(p.y);
        return nullptr;
    }
    if (!DNN(s, cudnnCreateConvolutionDescriptor, &p.conv)) {
        (void)dnn_api().cudnnDestroyTensorDescriptor(p.x);
        (void)dnn_api().cudnnDestroyTensorDescriptor(p.y);
        (void)dnn_api().cudnnDestroyFilterDescriptor(p.f);
        return nullptr;
    }
    p.used = true; /* from here drop_plan frees the four descriptors */
    cudnnConvolutionFwdAlgoPerf_t fp[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    cudnnConvolutionBwdDataAlgoPerf_t dp[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    cudnnConvolutionBwdFilterAlgoPerf_t wp[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    int nf = 0, nd = 0, nw = 0;
    const bool ok =
        DNN(s, cudnnSetTensor4dDescriptor, p.x, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, g->n, g->c, g->h, g->w) &&
        DNN(s, cudnnSetTensor4dDescriptor, p.y, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, g->n, oc, g->oh, g->ow) &&
        DNN(s, cudnnSetFilter4dDescriptor, p.f, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NHWC, oc, g->c, g->k, g->k) &&
        DNN(s, cudnnSetConvolution2dDescriptor, p.conv, g->pad, g->pad, 1, 1, 1, 1, CUDNN_CROSS_CORRELATION,
           CUDNN_DATA_FLOAT) &&
        DNN(s, cudnnSetConvolutionMathType, p.conv, s->tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH) &&
        DNN(s, cudnnGetConvolutionForwardAlgorithm_v7, s->dnn, p.x, p.f, p.conv, p.y, CUDNN_CONVOLUTION_FWD_ALGO_COUNT,
           &nf, fp) &&
        DNN(s, cudnnGetConvolutionBackwardDataAlgorithm_v7, s->dnn, p.f, p.y, p.conv, p.x,
           CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &nd, dp) &&
        DNN(s, cudnnGetConvolutionBackwardFilterAlgorithm_v7, s->dnn, p.x, p.y, p.conv, p.f,
           CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &nw, wp);
    const int af = ok ? pick(s, fp, nf, "conv forward") : -1, ad = ok ? pick(s, dp, nd, "conv backward data") : -1,
              aw = ok ? pick(s, wp, nw, "conv backward filter") : -1;
    if (af < 0 || ad < 0 || aw < 0) {
        drop_plan(p);
        return nullptr;
    }
    p.fwd = (cudnnConvolutionFwdAlgo_t)af;
    p.bwd_data = (cudnnConvolutionBwdDataAlgo_t)ad;
    p.bwd_filter = (cudnnConvolutionBwdFilterAlgo_t)aw;
    return &p;
}

size_t cu_conv_scratch(mm_backend *, const mm_conv_geom *g, int oc)
{
    return conv_ws_offset(g, oc) + kConvWorkspace / sizeof(float);
}

void transpose(cuda_state *s, float *out, const float *in, size_t rows, size_t cols)
{
    launch(s, "transpose", transpose_kernel, rows * cols, out, in, (uint32_t)rows, (uint32_t)cols,
           (uint32_t)(rows * cols));
}

/* The state and the plan of a convolution call; NULL after an error or for an empty batch. */
cuda_state *conv_enter(mm_backend *be, const mm_conv_geom *g, int oc, conv_plan **p)
{
    cuda_state *s = enter(be);
    if (!s || g->n == 0) return nullptr;
    *p = plan_for(s, g, oc);
    return *p ? s : nullptr;
}

void cu_conv_fwd(mm_backend *be, float *y, const float *x, const float *w, const float *bias, bool relu,
                 const mm_conv_geom *g, int oc, float *scratch)
{
    conv_plan *p = nullptr;
    cuda_state *s = conv_enter(be, g, oc, &p);
    if (!s) return;
    const size_t K = (size_t)g->k * g->k * g->c;
    float *wt = scratch, *ws = scratch + conv_ws_offset(g, oc);
    const float one = 1.0f, zero = 0.0f;
    transpose(s, wt, w, K, (size_t)oc);
    if (DNN(s, cudnnConvolutionForward, s->dnn, &one, p->x, x, p->f, wt, p->conv, p->fwd, ws, kConvWorkspace, &zero,
           p->y, y))
        cu_bias_act(be, y, bias, g->n * g->oh * g->ow, oc, relu);
}

void cu_conv_bwd(mm_backend *be, float *dw, float *db, float *dx, const float *dy, const float *x, const float *w,
                 const mm_conv_geom *g, int oc, float *scratch)
{
    conv_plan *p = nullptr;
    cuda_state *s = conv_enter(be, g, oc, &p);
    if (!s) return;
    const size_t K = (size_t)g->k * g->k * g->c;
    float *wt = scratch, *dwt = scratch + weights_of(g, oc), *ws = scratch + conv_ws_offset(g, oc);
    const float one = 1.0f, zero = 0.0f;
    cu_col_sum(be, db, dy, g->n * g->oh * g->ow, oc);
    if (dx) {
        transpose(s, wt, w, K, (size_t)oc);
        if (!DNN(s, cudnnConvolutionBackwardData, s->dnn, &one, p->f, wt, p->y, dy, p->conv, p->bwd_data, ws,
                kConvWorkspace, &zero, p->x, dx))
            return;
    }
    if (DNN(s, cudnnConvolutionBackwardFilter, s->dnn, &one, p->x, x, p->y, dy, p->conv, p->bwd_filter, ws,
           kConvWorkspace, &zero, p->f, dwt))
        transpose(s, dw, dwt, (size_t)oc, K);
}
#endif

/* C++17 has no designated initializers: the table is filled in by name here. */
mm_backend_ops make_ops()
{
    mm_backend_ops o = {};
    o.name = "cuda";
    o.host_visible = false;
    o.destroy = cu_destroy;
    o.alloc = cu_alloc;
    o.release = cu_release;
    o.to_device = cu_to_device;
    o.to_host = cu_to_host;
    o.fill = cu_fill;
    o.sync = cu_sync;
    o.gemm = cu_gemm;
    o.bias_act = cu_bias_act;
    o.relu_bwd = cu_relu_bwd;
    o.col_sum = cu_col_sum;
    o.im2col = cu_im2col;
    o.col2im = cu_col2im;
    o.maxpool_fwd = cu_maxpool_fwd;
    o.maxpool_bwd = cu_maxpool_bwd;
    o.softmax_xent = cu_softmax_xent;
    o.sumsq = cu_sumsq;
    o.sgd_step = cu_sgd_step;
    o.adamw_step = cu_adamw_step;
    o.merge = cu_merge;
    o.gather_u8 = cu_gather_u8;
    o.set_tf32 = cu_set_tf32;
    return o;
}

const mm_backend_ops cuda_ops = make_ops();

#if MM_HAVE_CUDNN
mm_backend_ops make_cudnn_ops()
{
    mm_backend_ops o = make_ops();
    o.conv_scratch = cu_conv_scratch;
    o.conv_fwd = cu_conv_fwd;
    o.conv_bwd = cu_conv_bwd;
    return o;
}

/* The same table with convolutions through cuDNN; MM_CUDA_CONV picks it (docs/gpu.md). */
const mm_backend_ops cudnn_ops = make_cudnn_ops();
#endif

bool is_cuda(const mm_backend *be)
{
#if MM_HAVE_CUDNN
    if (be->ops == &cudnn_ops) return true;
#endif
    return be->ops == &cuda_ops;
}

__attribute__((format(printf, 3, 4))) int report(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

} // namespace

extern "C" int mm_backend_cuda_init(mm_backend *be, int device, char *err, size_t errlen)
{
    memset(be, 0, sizeof *be);
    int count = 0;
    const cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return report(err, errlen, "no CUDA device: %s (%s)", cudaGetErrorName(e), cudaGetErrorString(e));
    }
    if (count <= 0) return report(err, errlen, "no CUDA device: the driver reports none");
    if (device < 0 || device >= count)
        return report(err, errlen, "no CUDA device cuda:%d: %d device%s present (cuda:0 to cuda:%d)", device, count,
                      count == 1 ? "" : "s", count - 1);
    cuda_state *s = static_cast<cuda_state *>(calloc(1, sizeof *s));
    if (!s) return report(err, errlen, "out of memory");
    s->device = device;
    be->ops = &cuda_ops;
    const char *conv = getenv("MM_CUDA_CONV");
    if (conv && *conv && strcmp(conv, "im2col") != 0) {
#if MM_HAVE_CUDNN
        if (strcmp(conv, "cudnn") == 0) {
            if (!dnn_api().ok) {
                free(s);
                memset(be, 0, sizeof *be);
                return report(err, errlen, "MM_CUDA_CONV=cudnn: %s", dnn_api().why);
            }
            be->ops = &cudnn_ops;
        } else
#endif
        {
            free(s);
            memset(be, 0, sizeof *be);
            return report(err, errlen, "MM_CUDA_CONV=%s: expected im2col%s", conv, MM_HAVE_CUDNN ? " or cudnn" : "");
        }
    }
    be->threads = 1;
    be->impl = s;
    /* CUBLAS_DEFAULT_MATH: fp32 GEMMs in fp32, no TF32 tensor cores. */
    bool ok = OK(s, cudaSetDevice, device) && OK(s, cudaStreamCreateWithFlags, &s->stream, cudaStreamNonBlocking) &&
              OK(s, cublasCreate, &s->blas) && OK(s, cublasSetStream, s->blas, s->stream) &&
              OK(s, cublasSetMathMode, s->blas, CUBLAS_DEFAULT_MATH) &&
              OK(s, cudaMallocHost, &s->result, sizeof *s->result) && scratch<char>(s, kScratchInit);
    for (stage_slot &slot : s->stage) ok = ok && OK(s, cudaEventCreateWithFlags, &slot.done, cudaEventDisableTiming);
    if (!ok) {
        report(err, errlen, "CUDA device cuda:%d: %s", device, s->msg);
        cu_destroy(be);
        memset(be, 0, sizeof *be);
        return -1;
    }
    s->ready = true;
    return 0;
}

extern "C" int mm_backend_cuda_error(const mm_backend *be, char *err, size_t errlen)
{
    if (!be || !be->ops || !is_cuda(be) || !state_of(be)->failed) return 0;
    return report(err, errlen, "%s", state_of(be)->msg);
}
