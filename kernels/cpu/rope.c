/* rope.c - rotary position embedding (Su et al. 2021) in both q/k row layouts. */
#include "ops.h"

#include <math.h>

void kern_cpu_rope_f32(float *x, int32_t n_heads, int32_t head_dim, int32_t pos, float theta,
                       int half_split)
{
    int32_t half = head_dim / 2;
    for (int32_t i = 0; i < half; i++) {
        /* transformers: inv_freq = 1 / theta^(arange(0, d, 2) / d) in fp32; angle = pos * it */
        float inv_freq = 1.0f / powf(theta, (float)(2 * i) / (float)head_dim);
        float angle = (float)pos * inv_freq;
        float c = cosf(angle), s = sinf(angle);
        for (int32_t h = 0; h < n_heads; h++) {
            float *v = x + (size_t)h * head_dim;
            int32_t a = half_split ? i : 2 * i;
            int32_t b = half_split ? i + half : 2 * i + 1;
            float x0 = v[a], x1 = v[b];
            v[a] = x0 * c - x1 * s;
            v[b] = x1 * c + x0 * s;
        }
    }
}
