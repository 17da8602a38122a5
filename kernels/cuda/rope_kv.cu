// rope_kv.cu - RoPE applied while K/V are written into the paged cache, one block per token;
// twin of kernels/cpu/rope_kv.c.
#include "common.cuh"
#include "kernels_cuda.h"

static __global__ void rope_kv_kernel(float *qkv, const int32_t *pos, const int32_t *slot,
                                      int32_t n_tokens, struct kern_qkv_shape s, uint16_t *k_cache,
                                      uint16_t *v_cache)
{
    int32_t t = blockIdx.x;
    if (t >= n_tokens) {
        return;
    }
    int32_t hd = s.head_dim, half = hd / 2;
    size_t kv_dim = (size_t)s.n_kv_heads * (size_t)hd;
    float *q = qkv + (size_t)t * ((size_t)s.n_heads + 2 * (size_t)s.n_kv_heads) * (size_t)hd;
    float *k = q + (size_t)s.n_heads * (size_t)hd;
    const float *v = k + kv_dim;
    int32_t sl = slot[t];
    int32_t n_pairs = (s.n_heads + s.n_kv_heads) * half;
    for (int32_t p = threadIdx.x; p < n_pairs; p += blockDim.x) {
        int32_t h = p / half, i = p % half; // heads 0..n_heads-1 are q, the rest k
        float inv_freq = 1.0f / powf(s.rope_theta, (float)(2 * i) / (float)hd);
        float angle = (float)pos[t] * inv_freq;
        float c = cosf(angle), sn = sinf(angle);
        int32_t a = s.half_split ? i : 2 * i;
        int32_t b = s.half_split ? i + half : 2 * i + 1;
        float *row = q + (size_t)h * (size_t)hd; // k heads follow q heads contiguously
        float x0 = row[a], x1 = row[b];
        float y0 = x0 * c - x1 * sn, y1 = x1 * c + x0 * sn;
        row[a] = y0;
        row[b] = y1;
        if (h >= s.n_heads && sl >= 0) {
            size_t base = (size_t)sl * kv_dim + (size_t)(h - s.n_heads) * (size_t)hd;
            k_cache[base + (size_t)a] = cuda_bf16_from_f32(y0);
            k_cache[base + (size_t)b] = cuda_bf16_from_f32(y1);
        }
    }
    if (sl >= 0) {
        for (size_t i = threadIdx.x; i < kv_dim; i += blockDim.x) {
            v_cache[(size_t)sl * kv_dim + i] = cuda_bf16_from_f32(v[i]);
        }
    }
}

extern "C" int kern_cuda_rope_kv_write_bf16(float *qkv_d, const int32_t *pos_d,
                                            const int32_t *slot_d, int32_t n_tokens,
                                            const struct kern_qkv_shape *s, uint16_t *k_cache_d,
                                            uint16_t *v_cache_d, void *stream)
{
    if (n_tokens <= 0) {
        return 0;
    }
    rope_kv_kernel<<<n_tokens, 128, 0, (cudaStream_t)stream>>>(qkv_d, pos_d, slot_d, n_tokens, *s,
                                                               k_cache_d, v_cache_d);
    CUDA_CHECK_LAUNCH();
    return 0;
}
