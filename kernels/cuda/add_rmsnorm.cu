// add_rmsnorm.cu - the residual add fused with RMSNorm and the bf16 rounding of the next GEMM's
// input, one block per row; twin of kernels/cpu/add_rmsnorm.c.
#include "common.cuh"
#include "kernels_cuda.h"

#define ADD_RMSNORM_THREADS 256

static __global__ void add_rmsnorm_kernel(float *x, const float *delta, const float *w,
                                          uint16_t *out, int32_t n_rows, int32_t dim, float eps)
{
    __shared__ float scratch[32];
    int32_t r = blockIdx.x;
    if (r >= n_rows) {
        return;
    }
    float *xr = x + (size_t)r * (size_t)dim;
    float ss = 0.0f;
    for (int32_t i = threadIdx.x; i < dim; i += blockDim.x) {
        float v = xr[i];
        if (delta) {
            v += delta[(size_t)r * (size_t)dim + (size_t)i];
            xr[i] = v;
        }
        ss += v * v;
    }
    ss = cuda_block_sum<float>(ss, scratch);
    float scale = 1.0f / sqrtf(ss / (float)dim + eps);
    for (int32_t i = threadIdx.x; i < dim; i += blockDim.x) {
        out[(size_t)r * (size_t)dim + (size_t)i] = cuda_bf16_from_f32(xr[i] * scale * w[i]);
    }
}

extern "C" int kern_cuda_add_rmsnorm_bf16(float *x_d, const float *delta_d, const float *w_d,
                                          uint16_t *out_d, int32_t n_rows, int32_t dim, float eps,
                                          void *stream)
{
    if (n_rows <= 0) {
        return 0;
    }
    add_rmsnorm_kernel<<<n_rows, ADD_RMSNORM_THREADS, 0, (cudaStream_t)stream>>>(
        x_d, delta_d, w_d, out_d, n_rows, dim, eps);
    CUDA_CHECK_LAUNCH();
    return 0;
}
