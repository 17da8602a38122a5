// paged_attention.cu - causal attention over the paged bf16 KV cache; twins of
// kernels/cpu/paged_attention.c (see kernels/cpu/twin.h for the contract).
//
// Prefill (FlashAttention-style tiling, Dao et al. 2022): one block per (head, run, tile of
// ATTN_TILE_Q queries). The block walks the run's KV blocks in order, staging each block's keys
// and values in shared memory once for all the tile's queries; each warp owns queries of the
// tile, splits head_dim over its lanes, and folds every key into an online softmax in fp32.
//
// Decode (Flash-Decoding): one block per (head, run, split of kv_split keys); its warps take
// keys in turn with their own online state, merged in shared memory into the split's (o, lse);
// a second kernel merges the splits by log-sum-exp. Grid sizes depend only on n_runs and
// max_splits, so a decode step can be captured in a CUDA graph at a bucketed batch size.
#include "common.cuh"
#include "kernels_cuda.h"

#include <math.h>

#define ATTN_WARPS        4
#define ATTN_TILE_Q       8 // queries per prefill block: ATTN_TILE_Q / ATTN_WARPS per warp
#define ATTN_MAX_PER_LANE 8 // head_dim <= 256

// One query's online softmax: running max, running sum, accumulator (lane's dims).
struct attn_online {
    float m, l;
    float acc[ATTN_MAX_PER_LANE];
};

static __device__ __forceinline__ void attn_online_init(attn_online *st)
{
    st->m = -INFINITY;
    st->l = 0.0f;
    for (int c = 0; c < ATTN_MAX_PER_LANE; c++) {
        st->acc[c] = 0.0f;
    }
}

// Folds one key with score s and value v (the lane's dims, from shared or global memory).
static __device__ __forceinline__ void attn_online_add(attn_online *st, float s, const float *vv)
{
    float m_new = fmaxf(st->m, s);
    float corr = expf(st->m - m_new); // 0 for the first key: m = -inf
    float p = expf(s - m_new);
    st->l = st->l * corr + p;
    for (int c = 0; c < ATTN_MAX_PER_LANE; c++) {
        st->acc[c] = st->acc[c] * corr + p * vv[c];
    }
    st->m = m_new;
}

static __global__ void attn_prefill_kernel(const float *q, const uint16_t *k_cache,
                                           const uint16_t *v_cache, struct kern_attn_runs runs,
                                           struct kern_attn_shape s, uint16_t *out)
{
    extern __shared__ float kv_tile[]; // [2][block_size][head_dim]
    int32_t h = blockIdx.x, r = blockIdx.y;
    int32_t hd = s.head_dim, bs = s.block_size, lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    if (r >= runs.n_runs) {
        return;
    }
    int32_t q_len = runs.q_len[r], q0 = blockIdx.z * ATTN_TILE_Q;
    if (q0 >= q_len) {
        return;
    }
    int32_t pos0 = runs.pos0[r], kv_head = h / (s.n_heads / s.n_kv_heads);
    int32_t tile_end = q0 + ATTN_TILE_Q < q_len ? q0 + ATTN_TILE_Q : q_len;
    int32_t n_keys = pos0 + tile_end; // keys the tile's last query sees
    const int32_t *blocks = runs.block_ids + runs.block_indptr[r];
    size_t kv_row = (size_t)s.n_kv_heads * (size_t)hd;
    float scale = 1.0f / sqrtf((float)hd);
    float *k_tile = kv_tile, *v_tile = kv_tile + (size_t)bs * (size_t)hd;

    const int per_warp = ATTN_TILE_Q / ATTN_WARPS;
    attn_online st[ATTN_TILE_Q / ATTN_WARPS];
    float qr[ATTN_TILE_Q / ATTN_WARPS][ATTN_MAX_PER_LANE];
    for (int k = 0; k < per_warp; k++) {
        attn_online_init(&st[k]);
        int32_t qi = q0 + warp * per_warp + k;
        size_t row = (size_t)(runs.q_start[r] + (qi < q_len ? qi : 0));
        for (int c = 0; c < ATTN_MAX_PER_LANE; c++) {
            int32_t d = lane + 32 * c;
            qr[k][c] = d < hd ? q[row * (size_t)s.q_stride + (size_t)h * (size_t)hd + d] : 0.0f;
        }
    }
    for (int32_t j0 = 0; j0 < n_keys; j0 += bs) {
        int32_t n = n_keys - j0 < bs ? n_keys - j0 : bs;
        size_t slot0 = (size_t)blocks[j0 / bs] * (size_t)bs;
        __syncthreads(); // the previous tile is no longer read
        for (int32_t e = threadIdx.x; e < n * hd; e += blockDim.x) {
            int32_t j = e / hd, d = e % hd;
            size_t src = (slot0 + (size_t)j) * kv_row + (size_t)kv_head * (size_t)hd + (size_t)d;
            k_tile[e] = cuda_bf16_to_f32(k_cache[src]);
            v_tile[e] = cuda_bf16_to_f32(v_cache[src]);
        }
        __syncthreads();
        for (int k = 0; k < per_warp; k++) {
            int32_t qi = q0 + warp * per_warp + k;
            if (qi >= q_len) {
                continue; // warp-uniform
            }
            int32_t limit = pos0 + qi + 1 - j0; // causal: keys j0 .. pos0 + qi
            int32_t nk = limit < n ? limit : n;
            for (int32_t j = 0; j < nk; j++) {
                float part = 0.0f, vv[ATTN_MAX_PER_LANE];
                for (int c = 0; c < ATTN_MAX_PER_LANE; c++) {
                    int32_t d = lane + 32 * c;
                    bool in = d < hd;
                    part += in ? qr[k][c] * k_tile[j * hd + d] : 0.0f;
                    vv[c] = in ? v_tile[j * hd + d] : 0.0f;
                }
                attn_online_add(&st[k], cuda_warp_sum(part) * scale, vv);
            }
        }
    }
    for (int k = 0; k < per_warp; k++) {
        int32_t qi = q0 + warp * per_warp + k;
        if (qi >= q_len) {
            continue;
        }
        size_t row = (size_t)(runs.q_start[r] + qi);
        for (int c = 0; c < ATTN_MAX_PER_LANE; c++) {
            int32_t d = lane + 32 * c;
            if (d < hd) {
                out[(row * (size_t)s.n_heads + (size_t)h) * (size_t)hd + (size_t)d] =
                    cuda_bf16_from_f32(st[k].acc[c] / st[k].l);
            }
        }
    }
}

static __global__ void attn_decode_split_kernel(const float *q, const uint16_t *k_cache,
                                                const uint16_t *v_cache, struct kern_attn_runs runs,
                                                struct kern_attn_shape s, int32_t kv_split,
                                                int32_t max_splits, float *part_o, float *part_lse)
{
    __shared__ float warp_m[ATTN_WARPS], warp_l[ATTN_WARPS];
    __shared__ float warp_acc[ATTN_WARPS][32 * ATTN_MAX_PER_LANE];
    int32_t h = blockIdx.x, r = blockIdx.y, sp = blockIdx.z;
    int32_t hd = s.head_dim, bs = s.block_size, lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    if (r >= runs.n_runs || runs.q_len[r] == 0) {
        return; // a padding run: the merge skips it too
    }
    int32_t n_ctx = runs.pos0[r] + 1, lo = sp * kv_split;
    size_t base = ((size_t)r * (size_t)s.n_heads + (size_t)h) * (size_t)max_splits + (size_t)sp;
    if (lo >= n_ctx) {
        return; // the merge reads only the splits that exist
    }
    int32_t hi = lo + kv_split < n_ctx ? lo + kv_split : n_ctx;
    int32_t kv_head = h / (s.n_heads / s.n_kv_heads);
    const int32_t *blocks = runs.block_ids + runs.block_indptr[r];
    size_t kv_row = (size_t)s.n_kv_heads * (size_t)hd;
    float scale = 1.0f / sqrtf((float)hd);
    size_t qrow = (size_t)runs.q_start[r];
    float qr[ATTN_MAX_PER_LANE];
    for (int c = 0; c < ATTN_MAX_PER_LANE; c++) {
        int32_t d = lane + 32 * c;
        qr[c] = d < hd ? q[qrow * (size_t)s.q_stride + (size_t)h * (size_t)hd + d] : 0.0f;
    }
    attn_online st;
    attn_online_init(&st);
    for (int32_t j = lo + warp; j < hi; j += ATTN_WARPS) {
        size_t slot = (size_t)blocks[j / bs] * (size_t)bs + (size_t)(j % bs);
        const uint16_t *k = k_cache + slot * kv_row + (size_t)kv_head * (size_t)hd;
        const uint16_t *v = v_cache + slot * kv_row + (size_t)kv_head * (size_t)hd;
        float part = 0.0f, vv[ATTN_MAX_PER_LANE];
        for (int c = 0; c < ATTN_MAX_PER_LANE; c++) {
            int32_t d = lane + 32 * c;
            bool in = d < hd;
            part += in ? qr[c] * cuda_bf16_to_f32(k[d]) : 0.0f;
            vv[c] = in ? cuda_bf16_to_f32(v[d]) : 0.0f;
        }
        attn_online_add(&st, cuda_warp_sum(part) * scale, vv);
    }
    if (lane == 0) {
        warp_m[warp] = st.m;
        warp_l[warp] = st.l;
    }
    for (int c = 0; c < ATTN_MAX_PER_LANE; c++) {
        warp_acc[warp][lane + 32 * c] = st.acc[c];
    }
    __syncthreads();
    if (warp != 0) {
        return;
    }
    float m = -INFINITY;
    for (int w = 0; w < ATTN_WARPS; w++) {
        m = fmaxf(m, warp_m[w]);
    }
    float l = 0.0f;
    for (int w = 0; w < ATTN_WARPS; w++) {
        l += warp_l[w] > 0.0f ? warp_l[w] * expf(warp_m[w] - m) : 0.0f;
    }
    for (int c = 0; c < ATTN_MAX_PER_LANE; c++) {
        int32_t d = lane + 32 * c;
        if (d >= hd) {
            continue;
        }
        float o = 0.0f;
        for (int w = 0; w < ATTN_WARPS; w++) {
            o += warp_l[w] > 0.0f ? warp_acc[w][d] * expf(warp_m[w] - m) : 0.0f;
        }
        part_o[base * (size_t)hd + (size_t)d] = o / l;
    }
    if (lane == 0) {
        part_lse[base] = m + logf(l);
    }
}

static __global__ void attn_decode_merge_kernel(struct kern_attn_runs runs,
                                                struct kern_attn_shape s, int32_t kv_split,
                                                int32_t max_splits, const float *part_o,
                                                const float *part_lse, uint16_t *out)
{
    int32_t h = blockIdx.x, r = blockIdx.y, hd = s.head_dim;
    if (r >= runs.n_runs || runs.q_len[r] == 0) {
        return;
    }
    int32_t n_splits = (runs.pos0[r] + 1 + kv_split - 1) / kv_split;
    size_t base = ((size_t)r * (size_t)s.n_heads + (size_t)h) * (size_t)max_splits;
    float m = -INFINITY;
    for (int32_t sp = 0; sp < n_splits; sp++) {
        m = fmaxf(m, part_lse[base + (size_t)sp]);
    }
    float wsum = 0.0f;
    for (int32_t sp = 0; sp < n_splits; sp++) {
        wsum += expf(part_lse[base + (size_t)sp] - m);
    }
    size_t row = (size_t)runs.q_start[r];
    for (int32_t d = threadIdx.x; d < hd; d += blockDim.x) {
        float o = 0.0f;
        for (int32_t sp = 0; sp < n_splits; sp++) {
            o += expf(part_lse[base + (size_t)sp] - m) *
                 part_o[(base + (size_t)sp) * (size_t)hd + (size_t)d];
        }
        out[(row * (size_t)s.n_heads + (size_t)h) * (size_t)hd + (size_t)d] =
            cuda_bf16_from_f32(o / wsum);
    }
}

static int attn_shape_check(const struct kern_attn_shape *s)
{
    if (s->head_dim > 32 * ATTN_MAX_PER_LANE || s->head_dim <= 0 || s->n_kv_heads <= 0 ||
        s->n_heads % s->n_kv_heads != 0 || s->block_size <= 0) {
        fprintf(stderr, "ERROR cuda: attention: unsupported shape (head_dim %d, heads %d/%d)\n",
                (int)s->head_dim, (int)s->n_heads, (int)s->n_kv_heads);
        return -EINVAL;
    }
    return 0;
}

extern "C" int kern_cuda_attn_prefill_bf16(const float *q_d, const uint16_t *k_cache_d,
                                           const uint16_t *v_cache_d,
                                           const struct kern_attn_runs *runs,
                                           const struct kern_attn_shape *s, int32_t max_q_len,
                                           uint16_t *out_d, void *stream)
{
    int err = attn_shape_check(s);
    if (err || runs->n_runs <= 0 || max_q_len <= 0) {
        return err;
    }
    size_t smem = 2 * (size_t)s->block_size * (size_t)s->head_dim * sizeof(float);
    if (smem > 48 * 1024) {
        fprintf(stderr, "ERROR cuda: attention: block of %d x %d exceeds shared memory\n",
                (int)s->block_size, (int)s->head_dim);
        return -EINVAL;
    }
    dim3 grid((unsigned)s->n_heads, (unsigned)runs->n_runs,
              (unsigned)((max_q_len + ATTN_TILE_Q - 1) / ATTN_TILE_Q));
    attn_prefill_kernel<<<grid, 32 * ATTN_WARPS, smem, (cudaStream_t)stream>>>(
        q_d, k_cache_d, v_cache_d, *runs, *s, out_d);
    CUDA_CHECK_LAUNCH();
    return 0;
}

extern "C" int kern_cuda_attn_decode_bf16(const float *q_d, const uint16_t *k_cache_d,
                                          const uint16_t *v_cache_d,
                                          const struct kern_attn_runs *runs,
                                          const struct kern_attn_shape *s, int32_t kv_split,
                                          int32_t max_splits, float *part_o_d, float *part_lse_d,
                                          uint16_t *out_d, void *stream)
{
    int err = attn_shape_check(s);
    if (err || runs->n_runs <= 0) {
        return err;
    }
    if (kv_split <= 0 || max_splits <= 0) {
        return -EINVAL;
    }
    dim3 grid((unsigned)s->n_heads, (unsigned)runs->n_runs, (unsigned)max_splits);
    attn_decode_split_kernel<<<grid, 32 * ATTN_WARPS, 0, (cudaStream_t)stream>>>(
        q_d, k_cache_d, v_cache_d, *runs, *s, kv_split, max_splits, part_o_d, part_lse_d);
    CUDA_CHECK_LAUNCH();
    dim3 grid2((unsigned)s->n_heads, (unsigned)runs->n_runs);
    attn_decode_merge_kernel<<<grid2, 128, 0, (cudaStream_t)stream>>>(
        *runs, *s, kv_split, max_splits, part_o_d, part_lse_d, out_d);
    CUDA_CHECK_LAUNCH();
    return 0;
}
