// common.cuh - shared helpers for kernels/cuda/*.cu: error checks after every launch [llm.c].
#ifndef KERNELS_CUDA_COMMON_CUH
#define KERNELS_CUDA_COMMON_CUH

#include <cuda_runtime.h>
#include <errno.h>
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

#endif
