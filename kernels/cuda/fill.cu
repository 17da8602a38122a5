// fill.cu - Philox-driven random weights on the device (the benchmark's model is made there);
// twin of kernels/cpu/fill.c, bit for bit.
#include "common.cuh"
#include "kernels_cuda.h"

static __device__ float fill_value(size_t i, uint64_t seed, float offset, float scale)
{
    uint32_t c0 = (uint32_t)i, c1 = (uint32_t)((unsigned long long)i >> 32), c2 = 0, c3 = 0;
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    for (int round = 0; round < 10; round++) {
        uint32_t hi0 = __umulhi(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
        uint32_t hi1 = __umulhi(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
        uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
        c1 = lo1;
        c3 = lo0;
        c0 = n0;
        c2 = n2;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    // _rn intrinsics: no fused multiply-add, so the bits match the CPU twin
    return __fadd_rn(offset, __fmul_rn(scale, __fmul_rn((float)c0, 2.0f / 4294967296.0f) - 1.0f));
}

static __global__ void fill_bf16_kernel(uint16_t *dst, size_t n, uint64_t seed, float offset,
                                        float scale)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        dst[i] = cuda_bf16_from_f32(fill_value(i, seed, offset, scale));
    }
}

static __global__ void fill_f32_kernel(float *dst, size_t n, uint64_t seed, float offset,
                                       float scale)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        dst[i] = fill_value(i, seed, offset, scale);
    }
}

extern "C" int kern_cuda_fill_random_bf16(uint16_t *dst_d, size_t n, uint64_t seed, float offset,
                                          float scale, void *stream)
{
    if (n == 0) {
        return 0;
    }
    fill_bf16_kernel<<<cuda_grid_1d(n, 256), 256, 0, (cudaStream_t)stream>>>(dst_d, n, seed, offset,
                                                                             scale);
    CUDA_CHECK_LAUNCH();
    return 0;
}

extern "C" int kern_cuda_fill_random_f32(float *dst_d, size_t n, uint64_t seed, float offset,
                                         float scale, void *stream)
{
    if (n == 0) {
        return 0;
    }
    fill_f32_kernel<<<cuda_grid_1d(n, 256), 256, 0, (cudaStream_t)stream>>>(dst_d, n, seed, offset,
                                                                            scale);
    CUDA_CHECK_LAUNCH();
    return 0;
}
