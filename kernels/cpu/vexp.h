/* vexp.h - exp(x) in fp32 for eight lanes at a time, for softmax and SiLU (internal to
 * kernels/cpu). Cody-Waite range reduction x = n ln2 + r, |r| <= ln2/2, then the degree-7
 * Taylor-like polynomial of Cephes' expf (relative error below 2e-7 on [-87, 88]), and 2^n built
 * in the exponent bits. Inputs below -87.3 give 0-ish denormal-free results, above 88.7 are
 * clamped. The scalar and vector forms compute the same operations in the same order, so a value
 * does not depend on whether it fell in a vector or a tail. */
#ifndef KERNELS_CPU_VEXP_H
#define KERNELS_CPU_VEXP_H

#include "simd.h"

#include <stdint.h>
#include <string.h>

typedef int32_t vexp_i8 __attribute__((vector_size(32)));

#define VEXP_HI     88.3762626647949f
#define VEXP_LO     (-87.3365447505531f)
#define VEXP_LOG2E  1.44269504088896341f
#define VEXP_LN2_HI 0.693359375f
#define VEXP_LN2_LO (-2.12194440e-4f)
#define VEXP_MAGIC  12582912.0f /* 1.5 * 2^23: adding it rounds to an integer */
#define VEXP_P0     1.9875691500e-4f
#define VEXP_P1     1.3981999507e-3f
#define VEXP_P2     8.3334519073e-3f
#define VEXP_P3     4.1665795894e-2f
#define VEXP_P4     1.6666665459e-1f
#define VEXP_P5     5.0000001201e-1f

/* y[0..8) = exp(x[0..8)). Inlined so that it compiles for the caller's target. */
static inline __attribute__((always_inline)) void kern_cpu_exp8(const float *x, float *y)
{
    kern_v8 v, t, n, r, p;
    memcpy(&v, x, sizeof(v));
    /* clamp with bit selects: comparisons give all-ones lanes */
    kern_v8 hi = v - v + VEXP_HI, lo = v - v + VEXP_LO;
    vexp_i8 vb = (vexp_i8)v, over = v > hi, under = v < lo;
    vb = (vb & ~over) | ((vexp_i8)hi & over);
    vb = (vb & ~under) | ((vexp_i8)lo & under);
    v = (kern_v8)vb;
    t = v * VEXP_LOG2E + VEXP_MAGIC;
    n = t - VEXP_MAGIC;
    r = v - n * VEXP_LN2_HI - n * VEXP_LN2_LO;
    p = ((((VEXP_P0 * r + VEXP_P1) * r + VEXP_P2) * r + VEXP_P3) * r + VEXP_P4) * r + VEXP_P5;
    p = p * r * r + r + 1.0f;
    vexp_i8 bits, e;
    memcpy(&bits, &t, sizeof(bits));
    e = (bits - 0x4b400000) + 127; /* the integer n, biased */
    e = e << 23;
    kern_v8 scale;
    memcpy(&scale, &e, sizeof(scale));
    p = p * scale;
    memcpy(y, &p, sizeof(p));
}

/* The same computation for one value. */
static inline float kern_cpu_exp1(float x)
{
    float in[8] = { x }, out[8];
    kern_cpu_exp8(in, out);
    return out[0];
}

#endif
