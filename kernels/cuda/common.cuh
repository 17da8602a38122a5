// common.cuh - shared helpers for kernels/cuda/*.cu: error checks after every launch [llm.c],
// bf16 bit conversions matching kernels/cpu/twin.h, and warp/block reductions.
#ifndef KERNELS_CUDA_COMMON_CUH
#define KERNELS_CUDA_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>

// Logs the failing expression with file and line and returns -EIO from the calling function.
#define CUDA_TRY(expr)                                                                \
    do {                                                                              \
        cudaError_t cuda_try_err_ = (expr);                                           \
        if (cuda_try_err_ != cudaSuccess) {                                           \
            fprintf(stderr, "ERROR cuda: %s:%d: %s: %s\n", __FILE__, __LINE__, #expr, \
                    cudaGetErrorString(cuda_try_err_));                               \
            return -EIO;                                                              \
        }                                                                             \
    } while (0)

// Checks the last launch.
#define CUDA_CHECK_LAUNCH() CUDA_TRY(cudaGetLastError())

static inline unsigned int cuda_grid_1d(size_t n, unsigned int block)
{
    size_t g = (n + block - 1) / block;
    return g > 65535u * 32u ? 65535u * 32u : (unsigned int)g;
}

// bf16 bits to f32 (exact) and f32 to bf16 bits rounded to nearest even, as twin.h does.
static __device__ __forceinline__ float cuda_bf16_to_f32(uint16_t b)
{
    return __uint_as_float((unsigned int)b << 16);
}

static __device__ __forceinline__ uint16_t cuda_bf16_from_f32(float f)
{
    return __bfloat16_as_ushort(__float2bfloat16_rn(f));
}

// Sum over the 32 lanes; every lane gets the result.
static __device__ __forceinline__ float cuda_warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1) {
        v += __shfl_xor_sync(0xffffffffu, v, o);
    }
    return v;
}

// Block-wide sum/max of one value per thread (blockDim.x a multiple of 32, at most 1024); every
// thread gets the result. `scratch` holds 32 values of T in shared memory. Templated on the
// element type only.
template <typename T> static __device__ T cuda_block_sum(T v, T *scratch)
{
    for (int o = 16; o > 0; o >>= 1) {
        v += __shfl_xor_sync(0xffffffffu, v, o);
    }
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, n_warps = blockDim.x / 32;
    __syncthreads(); // scratch may still be read by a previous call
    if (lane == 0) {
        scratch[warp] = v;
    }
    __syncthreads();
    T s = 0;
    for (int w = 0; w < n_warps; w++) { // the same order on every thread: same bits
        s += scratch[w];
    }
    return s;
}

static __device__ float cuda_block_max(float v, float *scratch)
{
    for (int o = 16; o > 0; o >>= 1) {
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    }
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, n_warps = blockDim.x / 32;
    __syncthreads();
    if (lane == 0) {
        scratch[warp] = v;
    }
    __syncthreads();
    float m = scratch[0];
    for (int w = 1; w < n_warps; w++) {
        m = fmaxf(m, scratch[w]);
    }
    return m;
}

#endif
