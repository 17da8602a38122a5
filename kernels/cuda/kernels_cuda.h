/* kernels_cuda.h - the extern "C" entries of kernels/cuda/ (plain C: streams travel as void *,
 * so callers need no CUDA headers). Each returns 0 or -EIO after logging the CUDA error.
 * Pointers ending in _d are device memory. */
#ifndef KERNELS_CUDA_H
#define KERNELS_CUDA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* f16 / bf16 bits [n] to f32 [n] on `stream` (a cudaStream_t, NULL for the default stream). */
int kern_cuda_f16_to_f32(const uint16_t *src_d, float *dst_d, size_t n, void *stream);
int kern_cuda_bf16_to_f32(const uint16_t *src_d, float *dst_d, size_t n, void *stream);

#ifdef __cplusplus
}
#endif

#endif
