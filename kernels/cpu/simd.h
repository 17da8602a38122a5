/* simd.h - what the vectorized CPU kernels share (internal to kernels/cpu): the AVX2+FMA clone
 * attribute, an 8-lane float vector, and loads, stores and a fixed-order lane sum.
 *
 * On x86-64 with GCC, KERN_CPU_CLONES builds an "x86-64-v3" (AVX2, FMA) copy of a function next
 * to the baseline one and picks it at load time. Not under clang (target_clones with ifuncs
 * breaks its sanitizer builds) nor under ASan or TSan (an instrumented ifunc resolver runs
 * before the sanitizer's runtime is up). Vectors never cross a call: clang rejects
 * AVX-sized values passed to or returned from baseline functions, so loads and stores are macros
 * and the lane sum takes a pointer. */
#ifndef KERNELS_CPU_SIMD_H
#define KERNELS_CPU_SIMD_H

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#define KERN_CPU_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define KERN_CPU_CLONES
#endif

typedef float kern_v8 __attribute__((vector_size(32)));

#define KERN_V8_LOAD(dst, p)  memcpy(&(dst), (p), sizeof(kern_v8))
#define KERN_V8_STORE(p, src) memcpy((p), &(src), sizeof(kern_v8))

/* ((l0 + l4) + (l1 + l5)) + ((l2 + l6) + (l3 + l7)): the same order everywhere. */
static inline float kern_v8_hsum(const kern_v8 *v)
{
    const float *a = (const float *)v;
    return ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
}

#endif
