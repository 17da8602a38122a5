// cuemu.h - the device side of cuemu (tests/cuemu/README.md), for kernels/cuda/*.cu translated
// to C++ by tests/cuemu/cu2cc.sh: CUDA's qualifiers, the thread indices, barriers, warp shuffles
// and the intrinsics the kernels use, and the launch that cu2cc.sh writes for `<<<...>>>`.
//
// Every CUDA thread of a block is a fiber with its own stack; one block runs at a time. A fiber
// runs until it reaches __syncthreads or a warp collective, so those are the only points where
// threads interleave, as on a GPU where nothing else orders them. __shared__ variables are
// statics (one block at a time: one copy per block is all a block can see).
#ifndef CUEMU_H
#define CUEMU_H

#include <functional>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <tuple>
#include <utility>

#define CUEMU 1 // kernels may test for the emulator (a PTX instruction has a C++ stand-in)

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__      static
#define __launch_bounds__(...)

#define __align__(n) __attribute__((aligned(n)))

struct uint3 {
    unsigned int x, y, z;
};

struct alignas(16) uint4 {
    unsigned int x, y, z, w;
};

static inline uint4 make_uint4(unsigned int x, unsigned int y, unsigned int z, unsigned int w)
{
    return uint4{ x, y, z, w };
}

struct dim3 {
    unsigned int x, y, z;
    dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_)
    {
    }
};

namespace cuemu
{

const uint3 &thread_idx();
const uint3 &block_index();
const dim3 &block_dims();
const dim3 &grid_dims();
unsigned lane_id(); // the linear thread index within the block, modulo 32
void sync_block();
// Exchanges `bytes` (<= 8) of every lane of the calling warp named in `mask`; returns the
// warp's slot array (lane -> 8 bytes) valid until this lane's next warp collective.
const uint64_t *warp_exchange(unsigned mask, const void *v, size_t bytes);
void *dyn_smem();

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 as a warp collective, with the fragment
// layout of the PTX ISA (g = lane / 4, t = lane % 4; a register holds two bf16, the lower column
// or row in its low half): a[r] holds A[g + 8 (r & 1)][2t + 8 (r >> 1) + {0, 1}], b[r] holds
// B[2t + 8 r + {0, 1}][g], c[i] is C[g + 8 (i >> 1)][2t + (i & 1)]. c += A B in fp32.
void mma_m16n8k16_bf16(float c[4], const uint32_t a[4], const uint32_t b[2]);

// One kernel launch: grid, block, dynamic shared memory, stream; run() executes (or, while the
// stream is captured, records) `body` once per CUDA thread.
struct launch_cfg {
    const char *name;
    dim3 grid, block;
    size_t smem;
    cudaStream_t stream;
};
void launch_body(const launch_cfg &cfg, std::function<void()> body);

struct launch {
    launch_cfg cfg;
    launch(const char *name, dim3 grid, dim3 block, size_t smem = 0, cudaStream_t stream = nullptr)
        : cfg{ name, grid, block, smem, stream }
    {
    }
    // Arguments convert to the kernel's parameter types here, once, as the CUDA launch does;
    // every thread then gets its own copy.
    template <class... P, class... A> void run(void (*kernel)(P...), A &&...args)
    {
        std::tuple<P...> params(static_cast<P>(std::forward<A>(args))...);
        launch_body(cfg, [kernel, params]() {
            std::tuple<P...> mine = params;
            std::apply(kernel, mine);
        });
    }
};

template <class T> static inline T shfl_xor(unsigned mask, T v, int lane_mask, int width)
{
    static_assert(sizeof(T) <= 8, "cuemu: shuffles move at most 8 bytes");
    const uint64_t *slots = warp_exchange(mask, &v, sizeof(T));
    unsigned lane = lane_id();
    unsigned src = (lane ^ (unsigned)lane_mask) % 32u;
    if ((unsigned)width < 32u) {
        src = (lane & ~((unsigned)width - 1u)) | (src & ((unsigned)width - 1u));
    }
    T r;
    memcpy(&r, &slots[src], sizeof(T));
    return r;
}

} // namespace cuemu

#define threadIdx (cuemu::thread_idx())
#define blockIdx  (cuemu::block_index())
#define blockDim  (cuemu::block_dims())
#define gridDim   (cuemu::grid_dims())

static inline void __syncthreads(void)
{
    cuemu::sync_block();
}

static inline void __syncwarp(unsigned mask = 0xffffffffu)
{
    int none = 0;
    cuemu::warp_exchange(mask, &none, sizeof(none));
}

template <class T>
static inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32)
{
    return cuemu::shfl_xor(mask, v, lane_mask, width);
}

static inline unsigned int __umulhi(unsigned int a, unsigned int b)
{
    return (unsigned int)(((unsigned long long)a * b) >> 32);
}

static inline float __uint_as_float(unsigned int u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline unsigned int __float_as_uint(float f)
{
    unsigned int u;
    memcpy(&u, &f, 4);
    return u;
}

// The _rn intrinsics are never contracted into a fused multiply-add; cu2cc.sh's objects are
// compiled with -ffp-contract=off, so plain operations are not either.
static inline float __fmul_rn(float a, float b)
{
    return a * b;
}

static inline float __fadd_rn(float a, float b)
{
    return a + b;
}

#endif
