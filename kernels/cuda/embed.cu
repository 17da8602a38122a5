// embed.cu - the embedding gather and the row gather before the LM head; twins of
// kernels/cpu/embed.c (exact).
#include "common.cuh"
#include "kernels_cuda.h"

static __global__ void embed_kernel(const uint16_t *table, const int32_t *tokens, int32_t n_tokens,
                                    int32_t dim, float *out)
{
    int32_t t = blockIdx.x;
    if (t >= n_tokens) {
        return;
    }
    const uint16_t *row = table + (size_t)tokens[t] * (size_t)dim;
    for (int32_t d = threadIdx.x; d < dim; d += blockDim.x) {
        out[(size_t)t * (size_t)dim + (size_t)d] = cuda_bf16_to_f32(row[d]);
    }
}

static __global__ void rows_gather_kernel(const float *x, int32_t dim, const int32_t *rows,
                                          int32_t n_out, float *out)
{
    int32_t o = blockIdx.x;
    if (o >= n_out) {
        return;
    }
    const float *src = x + (size_t)rows[o] * (size_t)dim;
    for (int32_t d = threadIdx.x; d < dim; d += blockDim.x) {
        out[(size_t)o * (size_t)dim + (size_t)d] = src[d];
    }
}

extern "C" int kern_cuda_embed_bf16(const uint16_t *table_d, const int32_t *tokens_d,
                                    int32_t n_tokens, int32_t dim, float *out_d, void *stream)
{
    if (n_tokens <= 0) {
        return 0;
    }
    embed_kernel<<<n_tokens, 256, 0, (cudaStream_t)stream>>>(table_d, tokens_d, n_tokens, dim,
                                                             out_d);
    CUDA_CHECK_LAUNCH();
    return 0;
}

extern "C" int kern_cuda_rows_gather_f32(const float *x_d, int32_t dim, const int32_t *rows_d,
                                         int32_t n_out, float *out_d, void *stream)
{
    if (n_out <= 0) {
        return 0;
    }
    rows_gather_kernel<<<n_out, 256, 0, (cudaStream_t)stream>>>(x_d, dim, rows_d, n_out, out_d);
    CUDA_CHECK_LAUNCH();
    return 0;
}
