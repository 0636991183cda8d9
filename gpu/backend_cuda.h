/* The CUDA backend: tensor/backend.h's operations with cuBLAS and CUDA kernels.
 *
 * Same semantics and layouts as the CPU backend (row-major, NHWC, argmax-first
 * ties in maxpool). Buffers are device memory (host_visible is false): copy in
 * with to_device, out with to_host. Every operation is queued on the
 * backend's one CUDA stream and returns at once, except to_host and sumsq,
 * which wait for their result, and release, which waits for the queue to drain
 * before it frees. GEMMs run in full fp32 (no TF32).
 *
 * The ops table returns no errors, so a failed CUDA or cuBLAS call is recorded
 * (the first one, sticky), printed once on stderr, and turns every later
 * operation into a no-op: alloc returns NULL, to_host fills its destination
 * with zero bytes, sumsq returns NaN. mm_backend_cuda_error() reports it. Out
 * of device memory in alloc is not an error of this kind: alloc returns NULL
 * and the backend stays usable. */
#ifndef MM_BACKEND_CUDA_H
#define MM_BACKEND_CUDA_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "backend.h"

/* Open CUDA device `device` (0-based). Returns 0, or -1 with a message in err
 * (errlen bytes, NUL-terminated) when there is no usable device (no driver,
 * no GPU, index out of range) or setting up the stream or cuBLAS fails. */
int mm_backend_cuda_init(mm_backend *be, int device, char *err, size_t errlen);

/* 0 if every operation so far succeeded; else -1 and the first error's
 * message in err (which may be NULL). */
int mm_backend_cuda_error(const mm_backend *be, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
