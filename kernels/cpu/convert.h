/* convert.h - element type conversions to f32 (the CPU reference; kernels/cuda/convert.cu is the
 * fast twin). Both are exact: every f16 and bf16 value has one f32 value. */
#ifndef KERNELS_CPU_CONVERT_H
#define KERNELS_CPU_CONVERT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* IEEE binary16 bits to f32 (subnormals, infinities and NaN payloads preserved). */
float kern_cpu_f16_to_f32_one(uint16_t h);

/* bfloat16 bits to f32: the top half of an f32. */
float kern_cpu_bf16_to_f32_one(uint16_t b);

/* f32 to IEEE binary16 bits, round to nearest even (used by fixture writers and tests). */
uint16_t kern_cpu_f32_to_f16_one(float f);

/* Converts n elements. src [n], dst [n]; may be called from any thread. */
void kern_cpu_f16_to_f32(const uint16_t *src, float *dst, size_t n);
void kern_cpu_bf16_to_f32(const uint16_t *src, float *dst, size_t n);

#ifdef __cplusplus
}
#endif

#endif
