/* Vectors for the CPU backend's hand-blocked kernels (conv_cpu.c, linear_cpu.c).
 *
 * GCC vector extensions rather than intrinsics, as wide as the target's registers: 16 floats with AVX-512 (the
 * machines this runs on, under -march=native), 8 with AVX, 4 otherwise (a build without -march=native, such as
 * the sanitizer builds); REGS is the number of vector registers, which the register blocking is sized to.
 * Loads and stores are unaligned-safe. The files that use these are compiled with -ffp-contract=fast so that
 * a * b + c is one FMA (C11 mode turns contraction off). */
#ifndef MM_SIMD_CPU_H
#define MM_SIMD_CPU_H

#include <stdint.h>

#if defined(__AVX512F__)
#define VL   16
#define REGS 32
#elif defined(__AVX__)
#define VL   8
#define REGS 16
#else
#define VL   4
#define REGS 16
#endif
typedef float vf __attribute__((vector_size(VL * sizeof(float)), aligned(4), may_alias));
typedef int32_t vi __attribute__((vector_size(VL * sizeof(int32_t)))); /* comparison masks of vf */

static inline vf vload(const float *p) { return *(const vf *)p; }
static inline void vstore(float *p, vf v) { *(vf *)p = v; }
/* s - 0 is s exactly (even -0 and NaN), so this compiles to one broadcast; 0 + s would not fold (0 + -0 = 0). */
static inline vf splat(float s) { return s - (vf){0}; }
/* max(v, 0), except that NaN becomes 0 as in the scalar ReLU (v > 0 ? v : 0). */
static inline vf relu_v(vf v) { return (vf)((vi)v & (v > (vf){0})); }

#endif
