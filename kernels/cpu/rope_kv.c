/* rope_kv.c - RoPE (Su et al. 2021) applied while K/V are written into the paged cache; twin of
 * kernels/cuda/rope_kv.cu (see twin.h). */
#include "twin.h"

#include <math.h>
#include <stddef.h>

/* Rotates n_heads heads of x in place by the angles of position pos. */
static void rope_heads(float *x, int32_t n_heads, const struct kern_qkv_shape *s, int32_t pos)
{
    int32_t hd = s->head_dim, half = hd / 2;
    for (int32_t i = 0; i < half; i++) {
        float inv_freq = 1.0f / powf(s->rope_theta, (float)(2 * i) / (float)hd);
        float angle = (float)pos * inv_freq;
        float c = cosf(angle), sn = sinf(angle);
        int32_t a = s->half_split ? i : 2 * i;
        int32_t b = s->half_split ? i + half : 2 * i + 1;
        for (int32_t h = 0; h < n_heads; h++) {
            float *v = x + (size_t)h * (size_t)hd;
            float x0 = v[a], x1 = v[b];
            v[a] = x0 * c - x1 * sn;
            v[b] = x1 * c + x0 * sn;
        }
    }
}

void kern_cpu_rope_kv_write_bf16(float *qkv, const int32_t *pos, const int32_t *slot,
                                 int32_t n_tokens, const struct kern_qkv_shape *s,
                                 uint16_t *k_cache, uint16_t *v_cache)
{
    size_t hd = (size_t)s->head_dim, kv_dim = (size_t)s->n_kv_heads * hd;
    size_t row = ((size_t)s->n_heads + 2 * (size_t)s->n_kv_heads) * hd;
    for (int32_t t = 0; t < n_tokens; t++) {
        float *q = qkv + (size_t)t * row;
        float *k = q + (size_t)s->n_heads * hd;
        const float *v = k + kv_dim;
        rope_heads(q, s->n_heads, s, pos[t]);
        rope_heads(k, s->n_kv_heads, s, pos[t]);
        if (slot[t] < 0) {
            continue;
        }
        for (size_t i = 0; i < kv_dim; i++) {
            k_cache[(size_t)slot[t] * kv_dim + i] = kern_bf16_from_f32(k[i]);
            v_cache[(size_t)slot[t] * kv_dim + i] = kern_bf16_from_f32(v[i]);
        }
    }
}
