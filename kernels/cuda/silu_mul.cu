// silu_mul.cu - SwiGLU's gate on a fused gate/up GEMM output, rounded to bf16 for the down
// projection; twin of kernels/cpu/silu_mul.c.
#include "common.cuh"
#include "kernels_cuda.h"

static __global__ void silu_mul_kernel(const float *gate_up, int32_t n_rows, int32_t n_ff,
                                       uint16_t *out)
{
    size_t n = (size_t)n_rows * (size_t)n_ff;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i / (size_t)n_ff, c = i % (size_t)n_ff;
        float g = gate_up[r * 2 * (size_t)n_ff + c], u = gate_up[r * 2 * (size_t)n_ff + n_ff + c];
        out[i] = cuda_bf16_from_f32(g / (1.0f + expf(-g)) * u);
    }
}

extern "C" int kern_cuda_silu_mul_bf16(const float *gate_up_d, int32_t n_rows, int32_t n_ff,
                                       uint16_t *out_d, void *stream)
{
    size_t n = (size_t)n_rows * (size_t)n_ff;
    if (n == 0) {
        return 0;
    }
    silu_mul_kernel<<<cuda_grid_1d(n, 256), 256, 0, (cudaStream_t)stream>>>(gate_up_d, n_rows, n_ff,
                                                                            out_d);
    CUDA_CHECK_LAUNCH();
    return 0;
}
