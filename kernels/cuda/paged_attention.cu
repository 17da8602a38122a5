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
#include <stdlib.h>
#include <string.h>

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

// ---- prefill on tensor cores (head_dim 64 or 128) -------------------------------------------
//
// FlashAttention-2's forward (Dao 2023) with mma.sync m16n8k16 bf16 -> fp32: one block of
// MMA_WARPS warps per (head, run, tile of 16 MMA_WARPS queries); warp w owns 16 queries. The
// block walks the run's keys MMA_KEYS at a time, staging K (row-major) and V (transposed) of
// the chunk in shared memory; each warp computes its 16 x MMA_KEYS scores with Q from
// registers, folds them into per-row online softmax state, and accumulates P V with P taken
// straight from the score accumulators (the C fragment of two 8-key tiles is the A fragment of
// one 16-key step). Q and P are rounded to bf16, as every bf16 FlashAttention does; the sums are
// fp32. Fragment layouts are the PTX ISA's (cuemu.h spells them out).

#define MMA_WARPS 4
#define MMA_KEYS  32 // keys per chunk: 4 score tiles of 8, 2 P.V steps of 16
#define MMA_PAD   8  // bf16 of padding per shared row against bank conflicts

static __device__ __forceinline__ void mma_16816(float c[4], const uint32_t a[4],
                                                 const uint32_t b[2])
{
#ifdef CUEMU
    cuemu::mma_m16n8k16_bf16(c, a, b);
#else
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
                 "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

// Two floats as a bf16 pair: the first in the low half.
static __device__ __forceinline__ uint32_t pack_bf16(float lo, float hi)
{
    return (uint32_t)cuda_bf16_from_f32(lo) | ((uint32_t)cuda_bf16_from_f32(hi) << 16);
}

template <int HD>
static __global__ void attn_prefill_mma_kernel(const float *q, const uint16_t *k_cache,
                                               const uint16_t *v_cache, struct kern_attn_runs runs,
                                               struct kern_attn_shape s, uint16_t *out)
{
    __shared__ __align__(16) uint16_t ks[MMA_KEYS][HD + MMA_PAD]; // keys of the chunk, by row
    __shared__ __align__(16) uint16_t vt[HD][MMA_KEYS + MMA_PAD]; // values, transposed
    const int32_t h = blockIdx.x, r = blockIdx.y;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane >> 2, t = lane & 3;
    if (r >= runs.n_runs) {
        return;
    }
    const int32_t q_len = runs.q_len[r], tile0 = blockIdx.z * (16 * MMA_WARPS);
    if (tile0 >= q_len) {
        return;
    }
    const int32_t pos0 = runs.pos0[r], bs = s.block_size;
    const int32_t kv_head = h / (s.n_heads / s.n_kv_heads);
    const int32_t tile_end = tile0 + 16 * MMA_WARPS < q_len ? tile0 + 16 * MMA_WARPS : q_len;
    const int32_t n_keys = pos0 + tile_end; // keys the tile's last query sees
    const int32_t *blocks = runs.block_ids + runs.block_indptr[r];
    const size_t kv_row = (size_t)s.n_kv_heads * HD;
    const float scale = 1.0f / sqrtf((float)HD);
    // this lane's two query rows (g and g + 8 of the warp's 16), -1 past the run
    const int32_t q0 = tile0 + 16 * warp;
    const int32_t qa = q0 + g < q_len ? q0 + g : -1, qb = q0 + g + 8 < q_len ? q0 + g + 8 : -1;
    // Q as A fragments: k-step kk covers dims 16 kk .. 16 kk + 15
    uint32_t qf[HD / 16][4];
    for (int kk = 0; kk < HD / 16; kk++) {
        for (int reg = 0; reg < 4; reg++) {
            int32_t qi = reg & 1 ? qb : qa;
            int d = 16 * kk + 2 * t + 8 * (reg >> 1);
            float x0 = 0.0f, x1 = 0.0f;
            if (qi >= 0) {
                const float *row =
                    q + (size_t)(runs.q_start[r] + qi) * (size_t)s.q_stride + (size_t)h * HD;
                x0 = row[d];
                x1 = row[d + 1];
            }
            qf[kk][reg] = pack_bf16(x0, x1);
        }
    }
    float o[HD / 8][4]; // P V accumulators: dims 8 n + 2t + {0, 1} of rows g (0, 1), g + 8 (2, 3)
    for (int n = 0; n < HD / 8; n++) {
        o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    }
    float m_a = -INFINITY, m_b = -INFINITY, l_a = 0.0f, l_b = 0.0f; // l: this lane's share
    for (int32_t j0 = 0; j0 < n_keys; j0 += MMA_KEYS) {
        __syncthreads(); // the previous chunk is no longer read
        // 8 bf16 (16 bytes) per load: head_dim and the cache's row are multiples of 8
        for (int e = threadIdx.x; e < MMA_KEYS * (HD / 8); e += blockDim.x) {
            int j = e / (HD / 8), d = 8 * (e % (HD / 8));
            int32_t key = j0 + j;
            uint4 kw = make_uint4(0, 0, 0, 0), vw = kw; // keys past the end: zeros, never NaN
            if (key < n_keys) {
                size_t slot = (size_t)blocks[key / bs] * (size_t)bs + (size_t)(key % bs);
                size_t src = slot * kv_row + (size_t)kv_head * HD + (size_t)d;
                kw = *(const uint4 *)(k_cache + src);
                vw = *(const uint4 *)(v_cache + src);
            }
            *(uint4 *)&ks[j][d] = kw;
            const uint32_t vv[4] = { vw.x, vw.y, vw.z, vw.w };
            for (int c = 0; c < 4; c++) {
                vt[d + 2 * c][j] = (uint16_t)(vv[c] & 0xffffu);
                vt[d + 2 * c + 1][j] = (uint16_t)(vv[c] >> 16);
            }
        }
        __syncthreads();
        // scores: 4 tiles of 8 keys; tile n, element i: row g + 8 (i >> 1), key 8 n + 2t + (i & 1)
        float sc[MMA_KEYS / 8][4];
        for (int n = 0; n < MMA_KEYS / 8; n++) {
            sc[n][0] = sc[n][1] = sc[n][2] = sc[n][3] = 0.0f;
            for (int kk = 0; kk < HD / 16; kk++) {
                const uint16_t *kr = &ks[8 * n + g][16 * kk + 2 * t];
                uint32_t b[2] = { (uint32_t)kr[0] | ((uint32_t)kr[1] << 16),
                                  (uint32_t)kr[8] | ((uint32_t)kr[9] << 16) };
                mma_16816(sc[n], qf[kk], b);
            }
        }
        // causal mask, scale, and the rows' new maxima
        float mx_a = -INFINITY, mx_b = -INFINITY;
        for (int n = 0; n < MMA_KEYS / 8; n++) {
            for (int i = 0; i < 4; i++) {
                int32_t qi = i >> 1 ? qb : qa, key = j0 + 8 * n + 2 * t + (i & 1);
                bool ok = qi >= 0 && key <= pos0 + qi;
                sc[n][i] = ok ? sc[n][i] * scale : -INFINITY;
            }
            mx_a = fmaxf(mx_a, fmaxf(sc[n][0], sc[n][1]));
            mx_b = fmaxf(mx_b, fmaxf(sc[n][2], sc[n][3]));
        }
        for (int off = 1; off < 4; off <<= 1) { // the 4 lanes of a group share a row
            mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, off));
            mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, off));
        }
        float mn_a = fmaxf(m_a, mx_a), mn_b = fmaxf(m_b, mx_b);
        // rows that have seen no key yet stay at -inf: no rescale, p = 0
        float corr_a = mn_a == -INFINITY ? 1.0f : expf(m_a - mn_a);
        float corr_b = mn_b == -INFINITY ? 1.0f : expf(m_b - mn_b);
        m_a = mn_a;
        m_b = mn_b;
        l_a *= corr_a;
        l_b *= corr_b;
        for (int n = 0; n < HD / 8; n++) {
            o[n][0] *= corr_a;
            o[n][1] *= corr_a;
            o[n][2] *= corr_b;
            o[n][3] *= corr_b;
        }
        for (int n = 0; n < MMA_KEYS / 8; n++) {
            for (int i = 0; i < 4; i++) {
                float m = i >> 1 ? m_b : m_a;
                float p = sc[n][i] == -INFINITY ? 0.0f : expf(sc[n][i] - m);
                sc[n][i] = p;
            }
            l_a += sc[n][0] + sc[n][1];
            l_b += sc[n][2] + sc[n][3];
        }
        // O += P V: k-step kk covers keys 16 kk .. 16 kk + 15 (score tiles 2 kk and 2 kk + 1)
        for (int kk = 0; kk < MMA_KEYS / 16; kk++) {
            uint32_t pa[4] = { pack_bf16(sc[2 * kk][0], sc[2 * kk][1]),
                               pack_bf16(sc[2 * kk][2], sc[2 * kk][3]),
                               pack_bf16(sc[2 * kk + 1][0], sc[2 * kk + 1][1]),
                               pack_bf16(sc[2 * kk + 1][2], sc[2 * kk + 1][3]) };
            for (int n = 0; n < HD / 8; n++) {
                const uint16_t *vr = &vt[8 * n + g][16 * kk + 2 * t];
                uint32_t b[2] = { (uint32_t)vr[0] | ((uint32_t)vr[1] << 16),
                                  (uint32_t)vr[8] | ((uint32_t)vr[9] << 16) };
                mma_16816(o[n], pa, b);
            }
        }
    }
    for (int off = 1; off < 4; off <<= 1) {
        l_a += __shfl_xor_sync(0xffffffffu, l_a, off);
        l_b += __shfl_xor_sync(0xffffffffu, l_b, off);
    }
    for (int half = 0; half < 2; half++) {
        int32_t qi = half ? qb : qa;
        float l = half ? l_b : l_a;
        if (qi < 0) {
            continue;
        }
        uint16_t *dst = out + ((size_t)(runs.q_start[r] + qi) * (size_t)s.n_heads + (size_t)h) * HD;
        for (int n = 0; n < HD / 8; n++) {
            dst[8 * n + 2 * t] = cuda_bf16_from_f32(o[n][2 * half] / l);
            dst[8 * n + 2 * t + 1] = cuda_bf16_from_f32(o[n][2 * half + 1] / l);
        }
    }
}

// JUDGED_CUDA_ATTN=simt keeps prefill on the CUDA-core kernel above (the tests run both).
static bool attn_mma_disabled(void)
{
    const char *v = getenv("JUDGED_CUDA_ATTN");
    return v && strcmp(v, "simt") == 0;
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
    if ((s->head_dim == 64 || s->head_dim == 128) && !attn_mma_disabled()) {
        dim3 grid((unsigned)s->n_heads, (unsigned)runs->n_runs,
                  (unsigned)((max_q_len + 16 * MMA_WARPS - 1) / (16 * MMA_WARPS)));
        if (s->head_dim == 64) {
            attn_prefill_mma_kernel<64><<<grid, 32 * MMA_WARPS, 0, (cudaStream_t)stream>>>(
                q_d, k_cache_d, v_cache_d, *runs, *s, out_d);
        } else {
            attn_prefill_mma_kernel<128><<<grid, 32 * MMA_WARPS, 0, (cudaStream_t)stream>>>(
                q_d, k_cache_d, v_cache_d, *runs, *s, out_d);
        }
        CUDA_CHECK_LAUNCH();
        return 0;
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
