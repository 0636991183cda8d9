/* The CUDA backend's merge (x += w (a - b)) against a device-to-device
 * cudaMemcpy, on the same device in the same run (tools/bench/gpu_bench.sh).
 *
 * Usage: mm_gpu_merge_bench [DEVICE [MIB [REPS]]]
 *   DEVICE: CUDA device index (default 0); MIB: size of each vector (default
 *   256); REPS: operations per timed round (default 50; the best of 5 rounds
 *   counts).
 *
 * Bytes moved per float: merge reads x, a, b and writes x (16); a copy reads
 * and writes once (8). Prints one JSON line:
 *   {"event":"merge_bw","gpu","floats","merge_gb_s","memcpy_gb_s","ratio"}
 * where ratio = merge_gb_s / memcpy_gb_s. */
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "backend_cuda.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cuda_check(cudaError_t e, const char *what)
{
    if (e == cudaSuccess) return 0;
    fprintf(stderr, "merge_bench: %s: %s\n", what, cudaGetErrorString(e));
    return -1;
}

int main(int argc, char **argv)
{
    const int device = argc > 1 ? atoi(argv[1]) : 0;
    const size_t mib = argc > 2 ? strtoull(argv[2], NULL, 10) : 256;
    const int reps = argc > 3 ? atoi(argv[3]) : 50;
    if (mib < 1 || reps < 1) {
        fprintf(stderr, "usage: mm_gpu_merge_bench [DEVICE [MIB [REPS]]]\n");
        return 2;
    }
    mm_backend be;
    char err[256];
    if (mm_backend_cuda_init(&be, device, err, sizeof err) != 0) {
        fprintf(stderr, "merge_bench: %s\n", err);
        return 1;
    }
    const size_t n = (mib << 20) / sizeof(float), bytes = n * sizeof(float);
    float *x = be.ops->alloc(&be, bytes), *a = be.ops->alloc(&be, bytes), *b = be.ops->alloc(&be, bytes);
    if (!x || !a || !b) {
        fprintf(stderr, "merge_bench: out of device memory for 3 x %zu MiB\n", mib);
        return 1;
    }
    be.ops->fill(&be, a, n, 1.0f);
    be.ops->fill(&be, b, n, 0.5f);
    be.ops->merge(&be, x, a, b, 0.25f, n); /* warm-up */
    be.ops->sync(&be);

    double merge_s = 1e30, copy_s = 1e30;
    for (int round = 0; round < 5; round++) {
        double t0 = now_s();
        for (int r = 0; r < reps; r++) be.ops->merge(&be, x, a, b, 0.25f, n);
        be.ops->sync(&be);
        double dt = (now_s() - t0) / reps;
        if (dt < merge_s) merge_s = dt;
    }
    if (cuda_check(cudaMemcpy(a, b, bytes, cudaMemcpyDeviceToDevice), "cudaMemcpy") ||
        cuda_check(cudaDeviceSynchronize(), "cudaDeviceSynchronize"))
        return 1;
    for (int round = 0; round < 5; round++) {
        double t0 = now_s();
        for (int r = 0; r < reps; r++)
            if (cuda_check(cudaMemcpy(a, b, bytes, cudaMemcpyDeviceToDevice), "cudaMemcpy")) return 1;
        if (cuda_check(cudaDeviceSynchronize(), "cudaDeviceSynchronize")) return 1;
        double dt = (now_s() - t0) / reps;
        if (dt < copy_s) copy_s = dt;
    }
    if (mm_backend_cuda_error(&be, err, sizeof err) != 0) {
        fprintf(stderr, "merge_bench: %s\n", err);
        return 1;
    }
    struct cudaDeviceProp prop;
    if (cuda_check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties")) return 1;
    const double merge_gbs = 16.0 * (double)n / merge_s / 1e9, copy_gbs = 8.0 * (double)n / copy_s / 1e9;
    printf("{\"event\":\"merge_bw\",\"gpu\":\"%s\",\"floats\":%zu,\"merge_gb_s\":%.1f,\"memcpy_gb_s\":%.1f,"
           "\"ratio\":%.3f}\n",
           prop.name, n, merge_gbs, copy_gbs, merge_gbs / copy_gbs);
    be.ops->release(&be, x);
    be.ops->release(&be, a);
    be.ops->release(&be, b);
    mm_backend_free(&be);
    return 0;
}
