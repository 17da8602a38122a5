// cuemu.cc - the CUDA runtime, cuBLAS and NCCL subset judged uses, executed on the CPU, so that
// kernels/cuda/ and engine/backend_cuda.c run their tests on machines without a GPU
// (tests/cuemu/README.md says what this proves and what it cannot).
//
// Kernels: each block runs alone; its CUDA threads are fibers switched only at __syncthreads and
// warp collectives (cuemu.h). CUEMU_ORDER sets the order in which runnable threads resume:
// forward, reverse, random[:seed] (a pass over every thread each time), or warps (one warp runs
// alone until it reaches a block barrier, then the next). A missing barrier shows up as a result
// that depends on the order. A barrier no thread can pass, a collective whose lanes disagree on the
// mask, or a collective waiting for an exited lane aborts with the kernel's name and block.
//
// Memory: device allocations are tracked, filled with 0xff bytes (NaN as f32 and bf16) like the
// garbage a real cudaMalloc returns, and counted against CUEMU_MEM_MIB (default 1024), which
// cudaMemGetInfo reports. Every copy, memset, GEMM operand and collective buffer is checked to lie
// inside one device allocation of the right side (host or device) before anything is written.
//
// Streams run their work at once, in call order. A captured stream records it instead, with its
// arguments by value as CUDA graphs do; calls that are illegal during a capture (synchronous
// copies, allocations, synchronizing the captured stream, work on the legacy stream) invalidate
// it, and cudaStreamEndCapture then fails as it would on a GPU.
#include "include/cublas_v2.h"
#include "include/cuda_bf16.h"
#include "include/cuda_fp16.h"
#include "include/cuda_runtime.h"
#include "include/nccl.h"

#include <algorithm>
#include <atomic>
#include <cblas.h>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <string>
#include <sys/mman.h>
#include <unistd.h>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define CUEMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CUEMU_ASAN 1
#endif
#endif
#ifdef CUEMU_ASAN
#include <sanitizer/common_interface_defs.h>
#endif

#if !defined(__x86_64__) || defined(CUEMU_UCONTEXT)
#define CUEMU_USE_UCONTEXT 1
#include <ucontext.h>
#endif

// ---------------------------------------------------------------------------------------------
// errors and the environment

static thread_local cudaError_t last_error = cudaSuccess;
static thread_local int cur_device = 0;

static cudaError_t fail(cudaError_t e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static cudaError_t fail(cudaError_t e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "cuemu: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    last_error = e;
    return e;
}

[[noreturn]] static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "cuemu: FATAL: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    abort();
}

static long env_long(const char *name, long dflt)
{
    const char *s = getenv(name);
    return s && *s ? strtol(s, nullptr, 10) : dflt;
}

// ---------------------------------------------------------------------------------------------
// device memory

namespace
{
struct allocation {
    size_t size;
    bool device; // false: pinned host memory from cudaMallocHost
    int dev;     // the device it counts against
};
std::mutex mem_mu;
std::map<uintptr_t, allocation> allocs;
size_t dev_used[64]; // per device: each has CUEMU_MEM_MIB of its own

size_t dev_total()
{
    return (size_t)env_long("CUEMU_MEM_MIB", 1024) << 20;
}

// The allocation holding [p, p + n), or nullptr.
const allocation *find_alloc(const void *p, size_t n, uintptr_t *base)
{
    std::lock_guard<std::mutex> g(mem_mu);
    uintptr_t u = (uintptr_t)p;
    auto it = allocs.upper_bound(u);
    if (it == allocs.begin()) {
        return nullptr;
    }
    --it;
    if (u + n > it->first + it->second.size || u + n < u) {
        return nullptr;
    }
    if (base) {
        *base = it->first;
    }
    return &it->second;
}

bool is_device(const void *p, size_t n)
{
    const allocation *a = find_alloc(p, n ? n : 1, nullptr);
    return a && a->device;
}

bool touches_device(const void *p, size_t n)
{
    // any byte of [p, p + n) inside a device allocation
    std::lock_guard<std::mutex> g(mem_mu);
    uintptr_t u = (uintptr_t)p;
    auto it = allocs.upper_bound(u + (n ? n : 1) - 1);
    while (it != allocs.begin()) {
        --it;
        if (it->first + it->second.size <= u) {
            break;
        }
        if (it->second.device) {
            return true;
        }
    }
    return false;
}

// "dst" / "src" of a copy in the given direction.
cudaError_t check_side(const char *what, const char *arg, const void *p, size_t n, bool device)
{
    if (device && !is_device(p, n)) {
        return fail(cudaErrorInvalidValue,
                    "%s: %s %p + %zu bytes is not inside one device allocation", what, arg, p, n);
    }
    if (!device && touches_device(p, n)) {
        return fail(cudaErrorInvalidValue, "%s: %s %p + %zu bytes is device memory, not host", what,
                    arg, p, n);
    }
    return cudaSuccess;
}
} // namespace

// ---------------------------------------------------------------------------------------------
// streams, captures, graphs

typedef std::function<cudaError_t()> op_fn;

struct cuemu_graph {
    std::vector<op_fn> nodes;
};

struct cuemu_graph_exec {
    std::vector<op_fn> nodes;
};

struct cuemu_stream {
    bool capturing = false, invalidated = false;
    cudaStreamCaptureMode mode = cudaStreamCaptureModeGlobal;
    cuemu_graph *graph = nullptr;
};

namespace
{
std::mutex capture_mu;
std::vector<cuemu_stream *> global_captures; // captures in global mode, any thread
thread_local std::vector<cuemu_stream *> my_captures;

void invalidate_all_relevant()
{
    for (cuemu_stream *s : my_captures) {
        s->invalidated = true;
    }
    std::lock_guard<std::mutex> g(capture_mu);
    for (cuemu_stream *s : global_captures) {
        s->invalidated = true;
    }
}

// An operation CUDA forbids while a capture is under way in this thread (or globally).
cudaError_t unsafe_during_capture(const char *what)
{
    bool mine = false;
    for (cuemu_stream *s : my_captures) {
        mine |= s->mode != cudaStreamCaptureModeRelaxed;
    }
    bool global;
    {
        std::lock_guard<std::mutex> g(capture_mu);
        global = !global_captures.empty();
    }
    if (!mine && !global) {
        return cudaSuccess;
    }
    invalidate_all_relevant();
    return fail(cudaErrorStreamCaptureUnsupported, "%s during a stream capture", what);
}

// Runs `op` on `s` now, or records it while `s` is captured.
cudaError_t submit(cudaStream_t s, const char *what, op_fn op)
{
    if (s && s->capturing) {
        if (!s->invalidated) {
            s->graph->nodes.push_back(std::move(op));
        }
        return cudaSuccess;
    }
    if (!s && !my_captures.empty()) {
        invalidate_all_relevant();
        return fail(cudaErrorStreamCaptureImplicit,
                    "%s on the legacy default stream while a stream is captured", what);
    }
    cudaError_t e = op();
    if (e != cudaSuccess) {
        last_error = e;
    }
    return e;
}

cudaError_t run_nodes(const std::vector<op_fn> &nodes)
{
    for (const op_fn &n : nodes) {
        cudaError_t e = n();
        if (e != cudaSuccess) {
            last_error = e;
            return e;
        }
    }
    return cudaSuccess;
}
} // namespace

// ---------------------------------------------------------------------------------------------
// fibers

extern "C" void cuemu_ctx_switch(void **save_sp, void *next_sp);

#ifndef CUEMU_USE_UCONTEXT
// Saves the callee-saved registers of the System V ABI on the current stack, stores the stack
// pointer in *save_sp, and resumes the stack next_sp saved the same way (or prepared by
// fiber_prepare).
__asm__(".text\n"
        ".globl cuemu_ctx_switch\n"
        ".hidden cuemu_ctx_switch\n"
        ".type cuemu_ctx_switch,@function\n"
        "cuemu_ctx_switch:\n"
        "  pushq %rbp\n"
        "  pushq %rbx\n"
        "  pushq %r12\n"
        "  pushq %r13\n"
        "  pushq %r14\n"
        "  pushq %r15\n"
        "  movq %rsp, (%rdi)\n"
        "  movq %rsi, %rsp\n"
        "  popq %r15\n"
        "  popq %r14\n"
        "  popq %r13\n"
        "  popq %r12\n"
        "  popq %rbx\n"
        "  popq %rbp\n"
        "  ret\n"
        ".size cuemu_ctx_switch, .-cuemu_ctx_switch\n");
#endif

namespace cuemu
{

enum fiber_state { RUNNABLE, WAIT_BAR, WAIT_WARP, DONE };

struct fiber {
    void *sp = nullptr;
#ifdef CUEMU_USE_UCONTEXT
    ucontext_t uc;
#endif
    char *stack = nullptr; // lowest usable byte (a guard page lies below)
    size_t stack_size = 0;
    uint3 tid;
    unsigned lin = 0, lane = 0, warp = 0;
    fiber_state state = RUNNABLE;
    void *asan_fake = nullptr;
};

struct warp_state {
    uint32_t exist = 0, live = 0, arrived = 0, expect = 0;
    unsigned gen = 0;
    uint64_t slot[2][32];
};

struct block_run {
    const launch_cfg *cfg;
    const std::function<void()> *body;
    std::vector<fiber> *fibers;
    std::vector<warp_state> warps;
    unsigned n = 0, live = 0, bar_arrived = 0;
    uint64_t serial = 0; // distinct for every block run in the process
    void *sched_sp = nullptr;
#ifdef CUEMU_USE_UCONTEXT
    ucontext_t sched_uc;
#endif
    const void *sched_stack_bottom = nullptr;
    size_t sched_stack_size = 0;
    void *sched_fake = nullptr;
};

// The running CUDA thread and block. Only one kernel runs at a time (launch_mu), but the host
// thread that launched it owns these.
static thread_local fiber *cur;
static thread_local uint3 block_idx;
static thread_local dim3 block_dim, grid_dim;
static thread_local block_run *run;

static std::mutex launch_mu; // one kernel at a time in the process: shared memory is static
static std::vector<fiber> pool;
static std::vector<char> smem_buf;

static size_t stack_bytes()
{
#ifdef CUEMU_ASAN
    return (size_t)env_long("CUEMU_STACK_KIB", 512) << 10;
#else
    return (size_t)env_long("CUEMU_STACK_KIB", 128) << 10;
#endif
}

static void pool_grow(size_t n)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE), sz = stack_bytes();
    while (pool.size() < n) {
        char *m = (char *)mmap(nullptr, sz + page, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED) {
            die("mmap of a %zu-byte fiber stack failed", sz);
        }
        mprotect(m, page, PROT_NONE); // overflow faults instead of corrupting a neighbour
        pool.emplace_back();
        pool.back().stack = m + page;
        pool.back().stack_size = sz;
    }
}

static void asan_start(void **fake, const void *bottom, size_t size)
{
#ifdef CUEMU_ASAN
    __sanitizer_start_switch_fiber(fake, bottom, size);
#else
    (void)fake;
    (void)bottom;
    (void)size;
#endif
}

static void asan_finish(void *fake, const void **old_bottom, size_t *old_size)
{
#ifdef CUEMU_ASAN
    __sanitizer_finish_switch_fiber(fake, old_bottom, old_size);
#else
    (void)fake;
    (void)old_bottom;
    (void)old_size;
#endif
}

static void thread_exited(fiber *f);

// Back to the scheduler; `final` when the fiber is done (its stack is abandoned).
static void to_sched(fiber *f, bool final)
{
    block_run *b = run;
    asan_start(final ? nullptr : &f->asan_fake, b->sched_stack_bottom, b->sched_stack_size);
#ifdef CUEMU_USE_UCONTEXT
    swapcontext(&f->uc, &b->sched_uc);
#else
    cuemu_ctx_switch(&f->sp, b->sched_sp);
#endif
    asan_finish(f->asan_fake, nullptr, nullptr);
}

static void fiber_main()
{
    block_run *b = run;
    asan_finish(nullptr, &b->sched_stack_bottom, &b->sched_stack_size);
    (*b->body)();
    fiber *f = cur;
    f->state = DONE;
    thread_exited(f);
    to_sched(f, true);
    die("a finished CUDA thread was resumed");
}

static void fiber_prepare(fiber *f)
{
#ifdef CUEMU_USE_UCONTEXT
    getcontext(&f->uc);
    f->uc.uc_stack.ss_sp = f->stack;
    f->uc.uc_stack.ss_size = f->stack_size;
    f->uc.uc_link = nullptr;
    makecontext(&f->uc, fiber_main, 0);
#else
    // a frame as cuemu_ctx_switch leaves it: six registers, then the return address, entered
    // with the stack aligned as after a call
    uintptr_t top = ((uintptr_t)f->stack + f->stack_size) & ~(uintptr_t)15;
    void **sp = (void **)(top - 64);
    for (int i = 0; i < 6; i++) {
        sp[i] = nullptr;
    }
    sp[6] = (void *)fiber_main;
    sp[7] = nullptr;
    f->sp = sp;
#endif
    f->state = RUNNABLE;
    f->asan_fake = nullptr;
}

static void to_fiber(block_run *b, fiber *f)
{
    cur = f;
    asan_start(&b->sched_fake, f->stack, f->stack_size);
#ifdef CUEMU_USE_UCONTEXT
    swapcontext(&b->sched_uc, &f->uc);
#else
    cuemu_ctx_switch(&b->sched_sp, f->sp);
#endif
    asan_finish(b->sched_fake, nullptr, nullptr);
}

static std::string block_name(const block_run *b)
{
    char s[160];
    snprintf(s, sizeof(s), "kernel %s block (%u,%u,%u) of (%u,%u,%u), %u threads", b->cfg->name,
             block_idx.x, block_idx.y, block_idx.z, grid_dim.x, grid_dim.y, grid_dim.z, b->n);
    return s;
}

static void release_bar(block_run *b)
{
    for (unsigned i = 0; i < b->n; i++) {
        fiber &f = (*b->fibers)[i];
        if (f.state == WAIT_BAR) {
            f.state = RUNNABLE;
        }
    }
    b->bar_arrived = 0;
}

static void release_warp(block_run *b, warp_state &w, unsigned warp)
{
    for (unsigned l = 0; l < 32; l++) {
        if (w.expect & (1u << l)) {
            (*b->fibers)[warp * 32 + l].state = RUNNABLE;
        }
    }
    w.arrived = 0;
    w.gen++;
}

static void thread_exited(fiber *f)
{
    block_run *b = run;
    b->live--;
    warp_state &w = b->warps[f->warp];
    w.live &= ~(1u << f->lane);
    if (w.arrived && (w.expect & (1u << f->lane))) {
        die("%s: thread %u exited while its warp waits for it in a collective (mask %08x)",
            block_name(b).c_str(), f->lin, w.expect);
    }
    if (b->bar_arrived && b->bar_arrived == b->live) {
        release_bar(b); // exited threads no longer hold a barrier back, as on the hardware
    }
}

const uint3 &thread_idx()
{
    return cur->tid;
}

const uint3 &block_index()
{
    return block_idx;
}

const dim3 &block_dims()
{
    return block_dim;
}

const dim3 &grid_dims()
{
    return grid_dim;
}

unsigned lane_id()
{
    return cur->lane;
}

void sync_block()
{
    fiber *f = cur;
    block_run *b = run;
    f->state = WAIT_BAR;
    if (++b->bar_arrived == b->live) {
        release_bar(b);
    }
    to_sched(f, false);
}

const uint64_t *warp_exchange(unsigned mask, const void *v, size_t bytes)
{
    fiber *f = cur;
    block_run *b = run;
    warp_state &w = b->warps[f->warp];
    uint32_t bit = 1u << f->lane, want = mask & w.exist;
    if (!(mask & bit)) {
        die("%s: thread %u calls a warp collective whose mask %08x leaves it out",
            block_name(b).c_str(), f->lin, mask);
    }
    if (w.arrived == 0) {
        w.expect = want;
    } else if (w.expect != want) {
        die("%s: lanes of warp %u disagree on a collective's mask (%08x, %08x)",
            block_name(b).c_str(), f->warp, w.expect, want);
    }
    if (want & ~w.live) {
        die("%s: thread %u waits in a warp collective for lanes that have exited (mask %08x, "
            "live %08x)",
            block_name(b).c_str(), f->lin, want, w.live);
    }
    unsigned slot = w.gen & 1u;
    w.slot[slot][f->lane] = 0;
    memcpy(&w.slot[slot][f->lane], v, bytes);
    w.arrived |= bit;
    f->state = WAIT_WARP;
    if (w.arrived == w.expect) {
        release_warp(b, w, f->warp);
    }
    to_sched(f, false);
    // a lane can run ahead by one collective only: slot (gen & 1) stays ours until every lane
    // of the warp has passed the next one
    return w.slot[slot];
}

void *dyn_smem()
{
    return smem_buf.data();
}

static float bf16_half(uint32_t reg, int hi)
{
    uint32_t u = (hi ? reg >> 16 : reg & 0xffffu) << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// Per warp of the running block: the lanes' a[0..1] (their slots are reused by the third
// exchange) and the product A B, computed once per mma by the first lane that resumes after the
// exchanges (no other lane runs before it has, and none can start the next mma's exchanges
// before every lane has read this one's product).
struct mma_stage {
    uint64_t tag = ~0ull;
    uint64_t a01[32];
    float p[16][8];
};
static mma_stage mstage[32];

void mma_m16n8k16_bf16(float c[4], const uint32_t a[4], const uint32_t b[2])
{
    fiber *f = cur;
    mma_stage &ms = mstage[f->warp];
    memcpy(ms.a01, warp_exchange(0xffffffffu, a, 8), sizeof(ms.a01));
    const uint64_t *a23 = warp_exchange(0xffffffffu, a + 2, 8);
    const uint64_t *bs = warp_exchange(0xffffffffu, b, 8);
    uint64_t tag = (run->serial << 32) | run->warps[f->warp].gen;
    if (ms.tag != tag) {
        float A[16][16], B[16][8];
        for (int l = 0; l < 32; l++) {
            int g = l >> 2, t = l & 3;
            uint32_t ar[4], br[2];
            memcpy(&ar[0], &ms.a01[l], 8);
            memcpy(&ar[2], &a23[l], 8);
            memcpy(br, &bs[l], 8);
            for (int r = 0; r < 4; r++) {
                for (int h = 0; h < 2; h++) {
                    A[g + 8 * (r & 1)][2 * t + 8 * (r >> 1) + h] = bf16_half(ar[r], h);
                }
            }
            for (int r = 0; r < 2; r++) {
                for (int h = 0; h < 2; h++) {
                    B[2 * t + 8 * r + h][g] = bf16_half(br[r], h);
                }
            }
        }
        for (int i = 0; i < 16; i++) {
            for (int j = 0; j < 8; j++) {
                float sum = 0.0f;
                for (int k = 0; k < 16; k++) {
                    sum += A[i][k] * B[k][j]; // bf16 products are exact in fp32
                }
                ms.p[i][j] = sum;
            }
        }
        ms.tag = tag;
    }
    int g = (int)f->lane >> 2, t = (int)f->lane & 3;
    for (int i = 0; i < 4; i++) {
        c[i] += ms.p[g + 8 * (i >> 1)][2 * t + (i & 1)];
    }
}

enum order_mode { ORDER_FORWARD, ORDER_REVERSE, ORDER_RANDOM, ORDER_WARPS };

static order_mode order_from_env(uint64_t *seed)
{
    const char *s = getenv("CUEMU_ORDER");
    *seed = 0x9e3779b97f4a7c15ull;
    if (!s || !*s || strcmp(s, "forward") == 0) {
        return ORDER_FORWARD;
    }
    if (strcmp(s, "reverse") == 0) {
        return ORDER_REVERSE;
    }
    if (strcmp(s, "warps") == 0) {
        return ORDER_WARPS;
    }
    if (strncmp(s, "random", 6) == 0) {
        if (s[6] == ':') {
            *seed ^= strtoull(s + 7, nullptr, 10);
        }
        return ORDER_RANDOM;
    }
    die("CUEMU_ORDER=%s: expected forward, reverse, warps or random[:seed]", s);
}

static void run_block(block_run *b, order_mode mode, uint64_t *rng)
{
    static uint64_t serials;
    b->serial = ++serials;
    std::vector<fiber> &fs = *b->fibers;
    const dim3 &bd = block_dim;
    b->live = b->n;
    b->bar_arrived = 0;
    unsigned n_warps = (b->n + 31) / 32;
    b->warps.assign(n_warps, warp_state());
    for (unsigned i = 0; i < b->n; i++) {
        fiber &f = fs[i];
        f.lin = i;
        f.tid = uint3{ i % bd.x, (i / bd.x) % bd.y, i / (bd.x * bd.y) };
        f.lane = i % 32;
        f.warp = i / 32;
        b->warps[f.warp].exist |= 1u << f.lane;
        fiber_prepare(&f);
    }
    for (warp_state &w : b->warps) {
        w.live = w.exist;
    }
    std::vector<unsigned> order(b->n);
    for (unsigned i = 0; i < b->n; i++) {
        order[i] = mode == ORDER_REVERSE ? b->n - 1 - i : i;
    }
    unsigned done = 0;
    while (done < b->n) {
        if (mode == ORDER_RANDOM) {
            for (unsigned i = b->n - 1; i > 0; i--) {
                *rng ^= *rng << 13;
                *rng ^= *rng >> 7;
                *rng ^= *rng << 17;
                std::swap(order[i], order[*rng % (i + 1)]);
            }
        }
        bool ran = false;
        unsigned lo = 0, hi = b->n;
        if (mode == ORDER_WARPS) {
            // only the lowest warp with a runnable thread: it runs on, collective after
            // collective, until every thread of it waits at a block barrier or has exited
            unsigned k = 0;
            while (k < b->n && fs[k].state != RUNNABLE) {
                k++;
            }
            lo = k / 32 * 32;
            hi = lo + 32 < b->n ? lo + 32 : b->n;
        }
        for (unsigned k = lo; k < hi; k++) {
            fiber &f = fs[order[k]];
            if (f.state == RUNNABLE) {
                to_fiber(b, &f);
                ran = true;
                done += f.state == DONE;
            }
        }
        if (!ran) {
            unsigned at_bar = 0, at_warp = 0;
            for (unsigned i = 0; i < b->n; i++) {
                at_bar += fs[i].state == WAIT_BAR;
                at_warp += fs[i].state == WAIT_WARP;
            }
            die("%s: deadlock: %u threads wait at __syncthreads, %u in warp collectives, %u "
                "have exited",
                block_name(b).c_str(), at_bar, at_warp, done);
        }
    }
}

static cudaError_t execute(const launch_cfg &cfg, const std::function<void()> &body)
{
    std::lock_guard<std::mutex> g(launch_mu);
    uint64_t rng;
    order_mode mode = order_from_env(&rng);
    unsigned n = cfg.block.x * cfg.block.y * cfg.block.z;
    pool_grow(n);
    smem_buf.assign(cfg.smem ? cfg.smem : 1, (char)0xff);
    block_run b;
    b.cfg = &cfg;
    b.body = &body;
    b.fibers = &pool;
    b.n = n;
    run = &b;
    block_dim = cfg.block;
    grid_dim = cfg.grid;
    for (unsigned z = 0; z < cfg.grid.z; z++) {
        for (unsigned y = 0; y < cfg.grid.y; y++) {
            for (unsigned x = 0; x < cfg.grid.x; x++) {
                block_idx = uint3{ x, y, z };
                run_block(&b, mode, &rng);
            }
        }
    }
    run = nullptr;
    cur = nullptr;
    return cudaSuccess;
}

void launch_body(const launch_cfg &cfg, std::function<void()> body)
{
    unsigned long long threads =
        (unsigned long long)cfg.block.x * cfg.block.y * (unsigned long long)cfg.block.z;
    if (threads == 0 || threads > 1024 || cfg.block.z > 64 || cfg.grid.x == 0 || cfg.grid.y == 0 ||
        cfg.grid.z == 0 || cfg.grid.x > 0x7fffffffu || cfg.grid.y > 65535 || cfg.grid.z > 65535) {
        fail(cudaErrorInvalidConfiguration, "launch of %s: grid (%u,%u,%u) block (%u,%u,%u)",
             cfg.name, cfg.grid.x, cfg.grid.y, cfg.grid.z, cfg.block.x, cfg.block.y, cfg.block.z);
        return;
    }
    if (cfg.smem > 48 * 1024) {
        fail(cudaErrorInvalidValue,
             "launch of %s: %zu bytes of dynamic shared memory (48 KiB "
             "without an opt-in)",
             cfg.name, cfg.smem);
        return;
    }
    submit(cfg.stream, cfg.name, [cfg, body]() { return execute(cfg, body); });
}

} // namespace cuemu

// ---------------------------------------------------------------------------------------------
// the runtime API

extern "C" {

const char *cudaGetErrorString(cudaError_t err)
{
    switch (err) {
    case cudaSuccess:
        return "no error";
    case cudaErrorInvalidValue:
        return "invalid argument";
    case cudaErrorMemoryAllocation:
        return "out of memory";
    case cudaErrorInvalidConfiguration:
        return "invalid configuration argument";
    case cudaErrorInvalidDevicePointer:
        return "invalid device pointer";
    case cudaErrorInvalidMemcpyDirection:
        return "invalid copy direction for memcpy";
    case cudaErrorNoDevice:
        return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice:
        return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle:
        return "invalid resource handle";
    case cudaErrorIllegalAddress:
        return "an illegal memory access was encountered";
    case cudaErrorLaunchFailure:
        return "unspecified launch failure";
    case cudaErrorStreamCaptureUnsupported:
        return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated:
        return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureImplicit:
        return "operation would make the legacy stream depend on a capturing blocking stream";
    }
    return "unknown error";
}

cudaError_t cudaGetLastError(void)
{
    cudaError_t e = last_error;
    last_error = cudaSuccess;
    return e;
}

cudaError_t cudaPeekAtLastError(void)
{
    return last_error;
}

static int device_count()
{
    long n = env_long("CUEMU_DEVICES", 1);
    return (int)(n > 64 ? 64 : n);
}

cudaError_t cudaGetDeviceCount(int *count)
{
    *count = device_count();
    if (*count <= 0) {
        *count = 0;
        last_error = cudaErrorNoDevice;
        return cudaErrorNoDevice;
    }
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device)
{
    if (device < 0 || device >= device_count()) {
        return fail(cudaErrorInvalidDevice, "cudaSetDevice(%d) of %d devices", device,
                    device_count());
    }
    cur_device = device;
    return cudaSuccess;
}

cudaError_t cudaGetDevice(int *device)
{
    *device = cur_device;
    return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void)
{
    return unsafe_during_capture("cudaDeviceSynchronize");
}

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes)
{
    std::lock_guard<std::mutex> g(mem_mu);
    size_t total = dev_total();
    *total_bytes = total;
    size_t used = dev_used[cur_device];
    *free_bytes = used < total ? total - used : 0;
    return cudaSuccess;
}

static cudaError_t alloc(void **ptr, size_t size, bool device)
{
    const char *what = device ? "cudaMalloc" : "cudaMallocHost";
    cudaError_t e = unsafe_during_capture(what);
    if (e != cudaSuccess) {
        return e;
    }
    if (!ptr) {
        return fail(cudaErrorInvalidValue, "%s: NULL result pointer", what);
    }
    *ptr = nullptr;
    if (size == 0) {
        return cudaSuccess;
    }
    int dev = cur_device;
    if (device) { // reserved before allocating, so threads on one device cannot overcommit it
        std::lock_guard<std::mutex> g(mem_mu);
        if (dev_used[dev] + size > dev_total()) {
            return fail(cudaErrorMemoryAllocation,
                        "cudaMalloc of %zu bytes on device %d: %zu of %zu bytes (CUEMU_MEM_MIB) "
                        "in use",
                        size, dev, dev_used[dev], dev_total());
        }
        dev_used[dev] += size;
    }
    void *p = nullptr;
    if (posix_memalign(&p, 256, size) != 0) {
        std::lock_guard<std::mutex> g(mem_mu);
        dev_used[dev] -= device ? size : 0;
        return fail(cudaErrorMemoryAllocation, "%s of %zu bytes: out of host memory", what, size);
    }
    memset(p, 0xff, size); // as uninitialized device memory: NaN where read as floats
    std::lock_guard<std::mutex> g(mem_mu);
    allocs[(uintptr_t)p] = allocation{ size, device, dev };
    *ptr = p;
    return cudaSuccess;
}

static cudaError_t release(void *ptr, bool device)
{
    const char *what = device ? "cudaFree" : "cudaFreeHost";
    if (!ptr) {
        return cudaSuccess;
    }
    {
        std::lock_guard<std::mutex> g(mem_mu);
        auto it = allocs.find((uintptr_t)ptr);
        if (it == allocs.end() || it->second.device != device) {
            return fail(cudaErrorInvalidValue, "%s(%p): not the start of a %s allocation", what,
                        ptr, device ? "device" : "pinned host");
        }
        if (device) {
            dev_used[it->second.dev] -= it->second.size;
        }
        allocs.erase(it);
    }
    free(ptr);
    return cudaSuccess;
}

cudaError_t cudaMalloc(void **ptr, size_t size)
{
    return alloc(ptr, size, true);
}

cudaError_t cudaFree(void *ptr)
{
    return release(ptr, true);
}

cudaError_t cudaMallocHost(void **ptr, size_t size)
{
    return alloc(ptr, size, false);
}

cudaError_t cudaFreeHost(void *ptr)
{
    return release(ptr, false);
}

static cudaError_t check_copy(const char *what, void *dst, const void *src, size_t count,
                              cudaMemcpyKind kind)
{
    if (kind == cudaMemcpyDefault) {
        return cudaSuccess; // any side, as with unified addressing
    }
    if (kind < cudaMemcpyHostToHost || kind > cudaMemcpyDefault) {
        return fail(cudaErrorInvalidMemcpyDirection, "%s: kind %d", what, (int)kind);
    }
    bool dst_dev = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
    bool src_dev = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
    cudaError_t e = check_side(what, "dst", dst, count, dst_dev);
    return e != cudaSuccess ? e : check_side(what, "src", src, count, src_dev);
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t count, cudaMemcpyKind kind)
{
    cudaError_t e = unsafe_during_capture("cudaMemcpy");
    if (e == cudaSuccess && count) {
        e = check_copy("cudaMemcpy", dst, src, count, kind);
    }
    if (e == cudaSuccess && count) {
        memmove(dst, src, count);
    }
    return e;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t count, cudaMemcpyKind kind,
                            cudaStream_t stream)
{
    if (count == 0) {
        return cudaSuccess;
    }
    cudaError_t e = check_copy("cudaMemcpyAsync", dst, src, count, kind);
    if (e != cudaSuccess) {
        return e;
    }
    return submit(stream, "cudaMemcpyAsync", [dst, src, count]() {
        memmove(dst, src, count);
        return cudaSuccess;
    });
}

cudaError_t cudaMemset(void *ptr, int value, size_t count)
{
    cudaError_t e = unsafe_during_capture("cudaMemset");
    if (e == cudaSuccess && count) {
        e = check_side("cudaMemset", "ptr", ptr, count, true);
    }
    if (e == cudaSuccess && count) {
        memset(ptr, value, count);
    }
    return e;
}

cudaError_t cudaMemsetAsync(void *ptr, int value, size_t count, cudaStream_t stream)
{
    if (count == 0) {
        return cudaSuccess;
    }
    cudaError_t e = check_side("cudaMemsetAsync", "ptr", ptr, count, true);
    if (e != cudaSuccess) {
        return e;
    }
    return submit(stream, "cudaMemsetAsync", [ptr, value, count]() {
        memset(ptr, value, count);
        return cudaSuccess;
    });
}

cudaError_t cudaStreamCreate(cudaStream_t *stream)
{
    return cudaStreamCreateWithFlags(stream, cudaStreamDefault);
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned int flags)
{
    (void)flags;
    *stream = new cuemu_stream();
    return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t stream)
{
    if (!stream) {
        return fail(cudaErrorInvalidResourceHandle, "cudaStreamDestroy of the legacy stream");
    }
    if (stream->capturing) {
        return fail(cudaErrorStreamCaptureUnsupported, "cudaStreamDestroy of a captured stream");
    }
    delete stream;
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream)
{
    if (stream && stream->capturing) {
        stream->invalidated = true;
        return fail(cudaErrorStreamCaptureUnsupported,
                    "cudaStreamSynchronize of the stream being captured");
    }
    if (!stream) {
        return unsafe_during_capture("cudaStreamSynchronize of the legacy stream");
    }
    return cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode)
{
    if (!stream) {
        return fail(cudaErrorStreamCaptureUnsupported, "the legacy stream cannot be captured");
    }
    if (stream->capturing) {
        return fail(cudaErrorInvalidValue, "cudaStreamBeginCapture: already capturing");
    }
    stream->capturing = true;
    stream->invalidated = false;
    stream->mode = mode;
    stream->graph = new cuemu_graph();
    my_captures.push_back(stream);
    if (mode == cudaStreamCaptureModeGlobal) {
        std::lock_guard<std::mutex> g(capture_mu);
        global_captures.push_back(stream);
    }
    return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t *graph)
{
    *graph = nullptr;
    if (!stream || !stream->capturing) {
        return fail(cudaErrorInvalidValue, "cudaStreamEndCapture: the stream is not capturing");
    }
    auto &mine = my_captures;
    auto it = std::find(mine.begin(), mine.end(), stream);
    if (it == mine.end()) {
        return fail(cudaErrorStreamCaptureUnsupported,
                    "cudaStreamEndCapture from another thread than the capture's");
    }
    mine.erase(it);
    {
        std::lock_guard<std::mutex> g(capture_mu);
        auto gi = std::find(global_captures.begin(), global_captures.end(), stream);
        if (gi != global_captures.end()) {
            global_captures.erase(gi);
        }
    }
    stream->capturing = false;
    if (stream->invalidated) {
        delete stream->graph;
        stream->graph = nullptr;
        return fail(cudaErrorStreamCaptureInvalidated, "the capture was invalidated");
    }
    *graph = stream->graph;
    stream->graph = nullptr;
    return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph, unsigned long long flags)
{
    (void)flags;
    if (!graph) {
        return fail(cudaErrorInvalidValue, "cudaGraphInstantiate of NULL");
    }
    *exec = new cuemu_graph_exec{ graph->nodes };
    return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream)
{
    if (!exec) {
        return fail(cudaErrorInvalidValue, "cudaGraphLaunch of NULL");
    }
    return submit(stream, "cudaGraphLaunch", [exec]() { return run_nodes(exec->nodes); });
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph)
{
    delete graph;
    return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec)
{
    delete exec;
    return cudaSuccess;
}

// ---------------------------------------------------------------------------------------------
// cuBLAS

struct cuemu_blas {
    cudaStream_t stream = nullptr;
    void *workspace = nullptr;
    size_t workspace_bytes = 0;
};

cublasStatus_t cublasCreate(cublasHandle_t *handle)
{
    *handle = new cuemu_blas();
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t handle)
{
    if (!handle) {
        return CUBLAS_STATUS_NOT_INITIALIZED;
    }
    delete handle;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream)
{
    if (!handle) {
        return CUBLAS_STATUS_NOT_INITIALIZED;
    }
    handle->stream = stream;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetWorkspace(cublasHandle_t handle, void *workspace, size_t bytes)
{
    if (!handle) {
        return CUBLAS_STATUS_NOT_INITIALIZED;
    }
    if (bytes && !is_device(workspace, bytes)) {
        fail(cudaErrorInvalidValue, "cublasSetWorkspace: %p + %zu is not device memory", workspace,
             bytes);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    handle->workspace = workspace;
    handle->workspace_bytes = bytes;
    return CUBLAS_STATUS_SUCCESS;
}

const char *cublasGetStatusString(cublasStatus_t status)
{
    switch (status) {
    case CUBLAS_STATUS_SUCCESS:
        return "the operation completed successfully";
    case CUBLAS_STATUS_NOT_INITIALIZED:
        return "the library was not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED:
        return "the resource allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE:
        return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_EXECUTION_FAILED:
        return "the GPU program failed to execute";
    case CUBLAS_STATUS_NOT_SUPPORTED:
        return "the functionality requested is not supported";
    }
    return "unknown cuBLAS status";
}

static size_t type_size(cudaDataType t)
{
    return t == CUDA_R_32F ? 4 : t == CUDA_R_16F || t == CUDA_R_16BF ? 2 : 0;
}

static float load(const void *p, cudaDataType t, size_t i)
{
    if (t == CUDA_R_32F) {
        return ((const float *)p)[i];
    }
    if (t == CUDA_R_16BF) {
        __nv_bfloat16 h = { ((const uint16_t *)p)[i] };
        return __bfloat162float(h);
    }
    __half_raw r = { ((const uint16_t *)p)[i] };
    return __half2float(__half(r));
}

static void store(void *p, cudaDataType t, size_t i, float v)
{
    if (t == CUDA_R_32F) {
        ((float *)p)[i] = v;
    } else if (t == CUDA_R_16BF) {
        ((uint16_t *)p)[i] = __float2bfloat16_rn(v).x;
    } else {
        // f16 results are not used by judged; refuse them in cublasGemmEx rather than round here
        abort();
    }
}

// Column-major matrix of `rows` x `cols` with leading dimension ld: its extent in elements.
static size_t extent(int rows, int cols, int ld)
{
    return rows == 0 || cols == 0 ? 0 : (size_t)ld * (size_t)(cols - 1) + (size_t)rows;
}

static std::vector<float> to_f32(const void *p, cudaDataType t, size_t n)
{
    std::vector<float> f(n);
    for (size_t i = 0; i < n; i++) {
        f[i] = load(p, t, i);
    }
    return f;
}

cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa,
                            cublasOperation_t transb, int m, int n, int k, const void *alpha,
                            const void *A, cudaDataType Atype, int lda, const void *B,
                            cudaDataType Btype, int ldb, const void *beta, void *C,
                            cudaDataType Ctype, int ldc, cublasComputeType_t computeType,
                            cublasGemmAlgo_t algo)
{
    (void)algo;
    if (!handle) {
        return CUBLAS_STATUS_NOT_INITIALIZED;
    }
    int a_rows = transa == CUBLAS_OP_N ? m : k, a_cols = transa == CUBLAS_OP_N ? k : m;
    int b_rows = transb == CUBLAS_OP_N ? k : n, b_cols = transb == CUBLAS_OP_N ? n : k;
    if ((transa != CUBLAS_OP_N && transa != CUBLAS_OP_T) ||
        (transb != CUBLAS_OP_N && transb != CUBLAS_OP_T) || m < 0 || n < 0 || k < 0 ||
        lda < std::max(1, a_rows) || ldb < std::max(1, b_rows) || ldc < std::max(1, m)) {
        fail(cudaErrorInvalidValue, "cublasGemmEx: op %d/%d m %d n %d k %d lda %d ldb %d ldc %d",
             (int)transa, (int)transb, m, n, k, lda, ldb, ldc);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (!type_size(Atype) || !type_size(Btype) || (Ctype != CUDA_R_32F && Ctype != CUDA_R_16BF) ||
        (computeType != CUBLAS_COMPUTE_32F && computeType != CUBLAS_COMPUTE_32F_FAST_16BF)) {
        fail(cudaErrorInvalidValue, "cublasGemmEx: types A %d B %d C %d compute %d not emulated",
             (int)Atype, (int)Btype, (int)Ctype, (int)computeType);
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    size_t na = extent(a_rows, a_cols, lda), nb = extent(b_rows, b_cols, ldb),
           nc = extent(m, n, ldc);
    struct {
        const char *name;
        const void *p;
        size_t bytes;
    } ops[] = { { "A", A, na * type_size(Atype) },
                { "B", B, nb * type_size(Btype) },
                { "C", C, nc * type_size(Ctype) } };
    for (auto &o : ops) {
        if (o.bytes && !is_device(o.p, o.bytes)) {
            fail(cudaErrorInvalidValue,
                 "cublasGemmEx: %s %p + %zu bytes is not inside one device allocation (m %d n %d "
                 "k %d)",
                 o.name, o.p, o.bytes, m, n, k);
            return CUBLAS_STATUS_INVALID_VALUE;
        }
    }
    float al = *(const float *)alpha, be = *(const float *)beta;
    cudaError_t e = submit(handle->stream, "cublasGemmEx", [=]() {
        if (nc == 0) {
            return cudaSuccess;
        }
        std::vector<float> a = to_f32(A, Atype, na), b = to_f32(B, Btype, nb);
        std::vector<float> c(nc, 0.0f);
        if (be != 0.0f) {
            c = to_f32(C, Ctype, nc);
        }
        if (k > 0) {
            cblas_sgemm(CblasColMajor, transa == CUBLAS_OP_N ? CblasNoTrans : CblasTrans,
                        transb == CUBLAS_OP_N ? CblasNoTrans : CblasTrans, m, n, k, al, a.data(),
                        lda, b.data(), ldb, be, c.data(), ldc);
        } else {
            for (float &x : c) {
                x *= be;
            }
        }
        for (int j = 0; j < n; j++) {
            for (int i = 0; i < m; i++) {
                size_t at = (size_t)j * (size_t)ldc + (size_t)i;
                store(C, Ctype, at, c[at]);
            }
        }
        return cudaSuccess;
    });
    return e == cudaSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}

// ---------------------------------------------------------------------------------------------
// NCCL: the ranks of a communicator are threads of this process (device memory is host memory
// here). A collective runs when its last rank calls it, as NCCL's own would complete then.

} // extern "C"

namespace
{
struct nccl_group {
    int nranks = 0, joined = 0;
    std::mutex mu;
    std::condition_variable cv;
    unsigned gen = 0;
    int arrived = 0;
    std::vector<const void *> sends;
    std::vector<void *> recvs;
};
std::mutex groups_mu;
std::map<std::string, std::shared_ptr<nccl_group>> groups;
std::atomic<unsigned> unique_ids{ 0 };
} // namespace

struct cuemu_nccl {
    int nranks, rank;
    std::shared_ptr<nccl_group> g;
};

extern "C" {

const char *ncclGetErrorString(ncclResult_t result)
{
    switch (result) {
    case ncclSuccess:
        return "no error";
    case ncclUnhandledCudaError:
        return "unhandled cuda error";
    case ncclSystemError:
        return "unhandled system error";
    case ncclInternalError:
        return "internal error";
    case ncclInvalidArgument:
        return "invalid argument";
    case ncclInvalidUsage:
        return "invalid usage";
    }
    return "unknown result code";
}

ncclResult_t ncclGetUniqueId(ncclUniqueId *id)
{
    memset(id, 0, sizeof(*id));
    snprintf(id->internal, sizeof(id->internal), "cuemu:%ld:%u", (long)getpid(),
             unique_ids.fetch_add(1));
    return ncclSuccess;
}

// Blocks until every rank of the id has joined, as ncclCommInitRank does.
ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank)
{
    if (nranks < 1 || rank < 0 || rank >= nranks) {
        fprintf(stderr, "cuemu: ncclCommInitRank: rank %d of %d\n", rank, nranks);
        return ncclInvalidArgument;
    }
    std::string key(id.internal, strnlen(id.internal, sizeof(id.internal)));
    std::shared_ptr<nccl_group> g;
    {
        std::lock_guard<std::mutex> lk(groups_mu);
        std::shared_ptr<nccl_group> &slot = groups[key];
        if (!slot) {
            slot = std::make_shared<nccl_group>();
            slot->nranks = nranks;
            slot->sends.assign((size_t)nranks, nullptr);
            slot->recvs.assign((size_t)nranks, nullptr);
        }
        g = slot;
    }
    if (g->nranks != nranks) {
        fprintf(stderr, "cuemu: ncclCommInitRank: %d ranks, the id's communicator has %d\n", nranks,
                g->nranks);
        return ncclInvalidUsage;
    }
    std::unique_lock<std::mutex> lk(g->mu);
    if (++g->joined == nranks) {
        g->cv.notify_all();
        std::lock_guard<std::mutex> glk(groups_mu);
        groups.erase(key); // every rank holds it now; the id cannot be reused
    }
    g->cv.wait(lk, [&] { return g->joined == g->nranks; });
    *comm = new cuemu_nccl{ nranks, rank, g };
    return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm)
{
    delete comm;
    return ncclSuccess;
}

static size_t nccl_size(ncclDataType_t t)
{
    return t == ncclInt8 ? 1 : t == ncclInt32 || t == ncclFloat32 ? 4 : 0;
}

// One collective: every rank posts its buffers; the last to arrive computes every rank's result
// (sum of float32 sends, or the root's send) while the others wait.
static ncclResult_t nccl_collective(const char *what, const void *sendbuff, void *recvbuff,
                                    size_t count, ncclDataType_t datatype, int root,
                                    ncclComm_t comm, cudaStream_t stream)
{
    size_t bytes = count * nccl_size(datatype);
    if (!comm || !nccl_size(datatype) || (root < 0 && datatype != ncclFloat32)) {
        return ncclInvalidArgument;
    }
    if (bytes && (check_side(what, "sendbuff", sendbuff, bytes, true) != cudaSuccess ||
                  check_side(what, "recvbuff", recvbuff, bytes, true) != cudaSuccess)) {
        return ncclInvalidArgument;
    }
    if (stream && stream->capturing) {
        fprintf(stderr, "cuemu: %s: collectives are not captured in graphs here\n", what);
        return ncclInvalidUsage;
    }
    nccl_group &g = *comm->g;
    std::unique_lock<std::mutex> lk(g.mu);
    unsigned my_gen = g.gen;
    g.sends[(size_t)comm->rank] = sendbuff;
    g.recvs[(size_t)comm->rank] = recvbuff;
    if (++g.arrived == g.nranks) {
        if (root < 0) {
            std::vector<float> sum(count, 0.0f);
            for (int r = 0; r < g.nranks; r++) { // rank order: the same bits on every rank
                const float *x = (const float *)g.sends[(size_t)r];
                for (size_t i = 0; i < count; i++) {
                    sum[i] += x[i];
                }
            }
            for (int r = 0; r < g.nranks; r++) {
                memcpy(g.recvs[(size_t)r], sum.data(), bytes);
            }
        } else {
            std::vector<char> src((const char *)g.sends[(size_t)root],
                                  (const char *)g.sends[(size_t)root] + bytes);
            for (int r = 0; r < g.nranks; r++) {
                memcpy(g.recvs[(size_t)r], src.data(), bytes);
            }
        }
        g.arrived = 0;
        g.gen++;
        g.cv.notify_all();
    } else {
        g.cv.wait(lk, [&] { return g.gen != my_gen; });
    }
    return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void *sendbuff, void *recvbuff, size_t count,
                           ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                           cudaStream_t stream)
{
    if (op != ncclSum || datatype != ncclFloat32) {
        return ncclInvalidArgument;
    }
    return nccl_collective("ncclAllReduce", sendbuff, recvbuff, count, datatype, -1, comm, stream);
}

ncclResult_t ncclBroadcast(const void *sendbuff, void *recvbuff, size_t count,
                           ncclDataType_t datatype, int root, ncclComm_t comm, cudaStream_t stream)
{
    if (!comm || root < 0 || root >= comm->nranks) {
        return ncclInvalidArgument;
    }
    return nccl_collective("ncclBroadcast", sendbuff, recvbuff, count, datatype, root, comm,
                           stream);
}

} // extern "C"
