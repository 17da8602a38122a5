// convert.cu - f16/bf16 to f32 on the GPU; twin of kernels/cpu/convert.c (bit-exact).
#include "common.cuh"
#include "kernels_cuda.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

static __global__ void f16_to_f32_kernel(const uint16_t *src, float *dst, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        __half_raw raw;
        raw.x = src[i];
        dst[i] = __half2float(__half(raw));
    }
}

static __global__ void bf16_to_f32_kernel(const uint16_t *src, float *dst, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        dst[i] = __uint_as_float((unsigned int)src[i] << 16);
    }
}

extern "C" int kern_cuda_f16_to_f32(const uint16_t *src_d, float *dst_d, size_t n, void *stream)
{
    if (n == 0) {
        return 0;
    }
    f16_to_f32_kernel<<<cuda_grid_1d(n, 256), 256, 0, (cudaStream_t)stream>>>(src_d, dst_d, n);
    CUDA_CHECK_LAUNCH();
    return 0;
}

extern "C" int kern_cuda_bf16_to_f32(const uint16_t *src_d, float *dst_d, size_t n, void *stream)
{
    if (n == 0) {
        return 0;
    }
    bf16_to_f32_kernel<<<cuda_grid_1d(n, 256), 256, 0, (cudaStream_t)stream>>>(src_d, dst_d, n);
    CUDA_CHECK_LAUNCH();
    return 0;
}
