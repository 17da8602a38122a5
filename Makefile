# judged - top-level build.
#
#   make                       bin/judged, bin/judgectl (+ CUDA objects when nvcc is found)
#   make test                  unit tests, fuzz-corpus replay, command-line tests
#   make demo                  the main job on the embedded default
#   make SANITIZER=address     instrumented build in build/asan (also undefined, thread)
#   make CUDA=0                skip CUDA even when nvcc is present (CUDA=1: require it)
#   make CUDA=emu              the CUDA code against cuemu, a CPU emulation of the CUDA runtime,
#                              cuBLAS and NCCL (tests/cuemu/README.md), in build/<variant>-cuemu
#   make test-cuemu            the GPU tests (tests/gpu/test_*.c) on cuemu, in three thread orders
#   make fuzz                  libFuzzer binaries (clang) in build/fuzz
#   make format | format-check | tidy
#
# Objects go to build/<variant>/ with dependency files; warnings are errors when CI=true.

CC        ?= cc
comma     := ,
CUDA      ?= auto
SANITIZER ?=
NVCC      ?= $(shell command -v nvcc 2>/dev/null || { test -x /usr/local/cuda/bin/nvcc && echo /usr/local/cuda/bin/nvcc; })
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))

ifeq ($(SANITIZER),)
VARIANT := release
SANFLAGS :=
else ifeq ($(SANITIZER),address)
VARIANT := asan
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
else ifeq ($(SANITIZER),undefined)
VARIANT := ubsan
SANFLAGS := -fsanitize=undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
else ifeq ($(SANITIZER),thread)
VARIANT := tsan
SANFLAGS := -fsanitize=thread -fno-omit-frame-pointer
else
$(error SANITIZER must be address, undefined or thread)
endif

ifeq ($(CUDA),0)
HAVE_CUDA :=
else ifeq ($(CUDA),emu)
HAVE_CUDA := emu
VARIANT   := $(VARIANT)-cuemu
else ifeq ($(CUDA),1)
ifeq ($(NVCC),)
$(error CUDA=1 but nvcc was not found)
endif
HAVE_CUDA := 1
else
HAVE_CUDA := $(if $(NVCC),1,)
endif

# BUILD may be overridden (parallel work trees); LIB_EXCLUDE drops library sources (patterns).
BUILD  ?= build/$(VARIANT)
BINDIR ?= $(if $(filter release,$(VARIANT)),bin,$(BUILD)/bin)

WARN   := -Wall -Wextra -Wpedantic -Wshadow -Wstrict-prototypes -Wmissing-prototypes
ifeq ($(CI),true)
WARN   += -Werror
endif
OPT    ?= -O2
CFLAGS_ALL := -std=c11 -D_GNU_SOURCE $(OPT) -g $(WARN) $(SANFLAGS) -fopenmp -MMD -MP -I. \
              $(CFLAGS)
LDFLAGS_ALL := $(SANFLAGS) -fopenmp $(LDFLAGS)
# The CPU backend shares one OpenMP team between OpenBLAS and its own loops, so it links the
# OpenMP build of OpenBLAS (Debian libopenblas-openmp-dev), not the default pthreads one whose
# threads would compete with the team (engine/backend_cpu.c, bench/RESULTS.md).
BLAS_DIR    ?= $(firstword $(wildcard /usr/lib/x86_64-linux-gnu/openblas-openmp /usr/lib/aarch64-linux-gnu/openblas-openmp))
BLAS_LIBS   := $(if $(BLAS_DIR),-L$(BLAS_DIR) -Wl$(comma)-rpath$(comma)$(BLAS_DIR)) -lopenblas
LDLIBS_ALL  := $(BLAS_LIBS) -lhiredis -ljansson -lyaml -lm -lpthread $(LDLIBS)

ifeq ($(HAVE_CUDA),emu)
# cuemu: the kernels translated to C++ (tests/cuemu/cu2cc.sh) and the runtime, cuBLAS and NCCL
# headers of tests/cuemu/include, so every HAVE_CUDA path builds and runs on the CPU.
CXX         ?= g++
CFLAGS_ALL  += -DHAVE_CUDA=1 -DHAVE_NCCL=1 -DJUDGED_CUEMU=1 -Itests/cuemu/include
CUEMU_CXXFLAGS := -std=c++17 $(OPT) -g -Wall -Wextra -Wno-unused-function \
               $(if $(filter true,$(CI)),-Werror) $(SANFLAGS) -ffp-contract=off -fno-strict-aliasing \
               -MMD -MP -I. \
               -Ikernels/cuda -Itests/cuemu/include
LDLIBS_ALL  += -lstdc++
HAVE_NCCL   := 1
else ifneq ($(HAVE_CUDA),)
CFLAGS_ALL  += -DHAVE_CUDA=1 -I$(CUDA_HOME)/include
NVCCFLAGS   ?= -O2 -std=c++17 -gencode arch=compute_80,code=sm_80 \
               -gencode arch=compute_90,code=[sm_90,compute_90]
NVCCFLAGS_ALL := $(NVCCFLAGS) -I. -MMD -MP --compiler-options -Wall,-Wextra
LDLIBS_ALL  += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart -lcublas -lcublasLt \
               -lstdc++
# NCCL (tensor parallel over GPUs) when its header is found: engine/comm_nccl_cuda.c.
HAVE_NCCL   := $(if $(wildcard $(CUDA_HOME)/include/nccl.h /usr/include/nccl.h),1,)
ifneq ($(HAVE_NCCL),)
CFLAGS_ALL  += -DHAVE_NCCL=1
LDLIBS_ALL  += -lnccl
endif
endif

# Library sources: every module below cli/ and daemon/. CUDA host files are named *cuda*.c.
LIB_DIRS    := common kernels/cpu engine scheduler jobs queue
LIB_SRCS    := $(foreach d,$(LIB_DIRS),$(wildcard $(d)/*.c))
ifeq ($(HAVE_CUDA),)
LIB_SRCS    := $(filter-out %cuda.c %cuda_%.c,$(LIB_SRCS))
CU_SRCS     :=
else
CU_SRCS     := $(wildcard kernels/cuda/*.cu)
endif
ifeq ($(HAVE_NCCL),)
LIB_SRCS    := $(filter-out %nccl_cuda.c,$(LIB_SRCS))
endif
LIB_SRCS    := $(filter-out $(LIB_EXCLUDE),$(LIB_SRCS))
LIB_OBJS    := $(LIB_SRCS:%.c=$(BUILD)/%.o) $(CU_SRCS:%.cu=$(BUILD)/%.cu.o) $(BUILD)/gen/gq_lua.o
ifeq ($(HAVE_CUDA),emu)
LIB_OBJS    += $(BUILD)/tests/cuemu/cuemu.o
endif
LIB         := $(BUILD)/libjudged.a

CLI_OBJS    := $(patsubst %.c,$(BUILD)/%.o,$(wildcard cli/*.c))
DAEMON_OBJS := $(patsubst %.c,$(BUILD)/%.o,$(wildcard daemon/*.c))

UNIT_SRCS   := $(wildcard tests/unit/test_*.c)
UNIT_BINS   := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)
GPU_SRCS    := $(wildcard tests/gpu/test_*.c)
GPU_BINS    := $(GPU_SRCS:tests/gpu/%.c=$(BUILD)/tests/gpu_%)
FUZZ_SRCS   := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_NAMES  := $(FUZZ_SRCS:tests/fuzz/fuzz_%.c=%)
REPLAY_BINS := $(FUZZ_NAMES:%=$(BUILD)/fuzz/replay_%)
BENCH_SRCS  := $(wildcard bench/*.c)
BENCH_BINS  := $(BENCH_SRCS:bench/%.c=$(BUILD)/bench/%)

.PHONY: all build-tests test test-unit test-fuzz test-cli test-kernels test-cuemu cuemu-build \
        test-cuemu-all test-cuemu-kernels cuemu-build-all cuemu-build-kernels test-integration test-faults demo fuzz bench clean \
        format format-check tidy

all: $(BINDIR)/judged $(BINDIR)/judgectl

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -c $< -o $@

ifeq ($(HAVE_CUDA),emu)
$(BUILD)/%.cu.o: %.cu tests/cuemu/cu2cc.sh
	@mkdir -p $(dir $@)
	tests/cuemu/cu2cc.sh $< $(BUILD)/$*.cu.cc
	$(CXX) $(CUEMU_CXXFLAGS) -c $(BUILD)/$*.cu.cc -o $@

$(BUILD)/tests/cuemu/cuemu.o: tests/cuemu/cuemu.cc
	@mkdir -p $(dir $@)
	$(CXX) $(CUEMU_CXXFLAGS) -c $< -o $@
else
$(BUILD)/%.cu.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS_ALL) -c $< -o $@
endif

# The Redis Functions library is embedded in the binaries as one C string.
$(BUILD)/gen/gq_lua.c: queue/gq_v1.lua
	@mkdir -p $(dir $@)
	{ echo '/* generated from queue/gq_v1.lua by the Makefile */'; \
	  echo 'extern const char gq_lua_source[];'; echo 'const char gq_lua_source[] ='; \
	  sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/"/' -e 's/$$/\\n"/' $<; echo ';'; } > $@

$(BUILD)/gen/gq_lua.o: $(BUILD)/gen/gq_lua.c
	$(CC) $(CFLAGS_ALL) -Wno-overlength-strings -c $< -o $@

$(LIB): $(LIB_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@
	ar rcs $@ $^

$(BINDIR)/judgectl: $(CLI_OBJS) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) -o $@ $(CLI_OBJS) $(LIB) $(LDLIBS_ALL)

$(BINDIR)/judged: $(DAEMON_OBJS) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) -o $@ $(DAEMON_OBJS) $(LIB) $(LDLIBS_ALL) -lmicrohttpd

$(BUILD)/tests/%: tests/unit/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -o $@ $< $(LIB) $(LDFLAGS_ALL) $(LDLIBS_ALL) -lcmocka

$(BUILD)/tests/gpu_%: tests/gpu/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -o $@ $< $(LIB) $(LDFLAGS_ALL) $(LDLIBS_ALL) -lcmocka

$(BUILD)/fuzz/replay_%: tests/fuzz/fuzz_%.c tests/fuzz/replay_main.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -o $@ $< tests/fuzz/replay_main.c $(LIB) $(LDFLAGS_ALL) $(LDLIBS_ALL)

$(BUILD)/bench/%: bench/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -o $@ $< $(LIB) $(LDFLAGS_ALL) $(LDLIBS_ALL)

test: test-unit test-kernels test-cuemu test-fuzz test-cli test-integration test-faults

# Every test binary, so CI can build in parallel and then run the (timing-sensitive) tests one
# suite at a time.
build-tests: $(UNIT_BINS) $(GPU_BINS) $(REPLAY_BINS) $(BINDIR)/judged $(BINDIR)/judgectl cuemu-build

# cuemu (tests/cuemu/README.md): the GPU tests and cuemu's own against the emulated runtime, in a
# build of their own beside this one ($(BUILD)-cuemu), with CUDA threads resumed in forward
# order, in reverse, and one warp at a time (CUEMU_ORDERS), so that a missing barrier changes a
# result.
CUEMU_MAKE = $(MAKE) --no-print-directory CUDA=emu BUILD=$(BUILD)-cuemu BINDIR=$(BUILD)-cuemu/bin
# CUEMU_SUITE=kernels (CI's sanitizer pass): only the kernel-level tests, linked against the
# kernels and cuemu alone, so that pass does not build the whole library a third time
CUEMU_SUITE ?= all
ifeq ($(HAVE_CUDA),emu)
GPU_BINS    += $(BUILD)/tests/cuemu_test
CUEMU_KLIB  := $(BUILD)/libkernels-cuemu.a
CUEMU_KBINS := $(BUILD)/tests/cuemu_test $(BUILD)/tests/gpu_test_convert \
               $(BUILD)/tests/gpu_test_kernels

$(CUEMU_KLIB): $(filter $(BUILD)/kernels/% $(BUILD)/common/%,$(LIB_OBJS)) \
               $(BUILD)/tests/cuemu/cuemu.o
	rm -f $@
	ar rcs $@ $^

$(BUILD)/tests/cuemu_test: tests/cuemu/test_cuemu.cu tests/cuemu/cu2cc.sh $(CUEMU_KLIB)
	@mkdir -p $(dir $@)
	tests/cuemu/cu2cc.sh $< $(BUILD)/tests/test_cuemu.cu.cc
	$(CXX) $(CUEMU_CXXFLAGS) -o $@ $(BUILD)/tests/test_cuemu.cu.cc $(CUEMU_KLIB) \
	    $(LDFLAGS_ALL) $(LDLIBS_ALL) -lcmocka

$(BUILD)/tests/gpu_test_convert $(BUILD)/tests/gpu_test_kernels: $(BUILD)/tests/gpu_%: \
    tests/gpu/%.c $(CUEMU_KLIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -o $@ $< $(CUEMU_KLIB) $(LDFLAGS_ALL) $(LDLIBS_ALL) -lcmocka

CUEMU_ORDERS ?= forward reverse warps

cuemu-build-kernels: $(CUEMU_KBINS)

cuemu-build-all: $(GPU_BINS) $(BUILD)/bench/gpu_judge $(BINDIR)/judgectl $(BINDIR)/judged

# $(call cuemu_orders,BINARIES): runs them once per thread order
cuemu_orders = for o in $(CUEMU_ORDERS); do echo "cuemu: CUDA threads resumed in $$o order"; \
    CUEMU_DEVICES=4 CUEMU_ORDER=$$o tests/run_unit.sh $(1) || exit 1; done

test-cuemu-kernels: $(CUEMU_KBINS)
	@$(call cuemu_orders,$(CUEMU_KBINS))

# ... then a whole judging job through `judgectl run --device cuda`, a judged with two
# tensor-parallel engines (a fault test against its own redis-server), and the GPU benchmark's
# own smoke test: a small model, fast mode, its invariants checked
test-cuemu-all: $(GPU_BINS) $(BUILD)/bench/gpu_judge $(BINDIR)/judgectl $(BINDIR)/judged
	@$(call cuemu_orders,$(GPU_BINS))
	@python3 tests/cuemu/test_judge_cuda.py $(BINDIR)
	@JUDGED_FAULTS_CUEMU=1 CUEMU_DEVICES=4 CUEMU_MEM_MIB=128 tests/faults/run.sh $(BINDIR) \
	    FaultTests.test_m_tensor_parallel_devices_on_cuemu
	@CUEMU_MEM_MIB=512 $(BUILD)/bench/gpu_judge --shape small --mode fast --samples 12 \
	    --max-seqs 4 --prefill-tokens 256 >$(BUILD)/gpu_judge_smoke.log 2>&1 || \
	    { cat $(BUILD)/gpu_judge_smoke.log; exit 1; }
	@grep '^BENCH fast_decode_tokens' $(BUILD)/gpu_judge_smoke.log

cuemu-build: cuemu-build-$(CUEMU_SUITE)

test-cuemu: test-cuemu-$(CUEMU_SUITE)
else
cuemu-build:
	+@$(CUEMU_MAKE) cuemu-build

test-cuemu:
	+@$(CUEMU_MAKE) test-cuemu
endif

test-unit: $(UNIT_BINS)
	@tests/run_unit.sh $(UNIT_BINS)

test-kernels: $(GPU_BINS)
	@tests/run_unit.sh $(GPU_BINS)

test-fuzz: $(REPLAY_BINS)
	@tests/fuzz/replay.sh $(BUILD)/fuzz $(FUZZ_NAMES)

test-cli: $(BINDIR)/judged $(BINDIR)/judgectl
	@tests/cli/run.sh $(BINDIR)

# Redis protocol and judgectl tests; each starts its own redis-server (needs redis-server and
# python3-redis, no network).
test-integration: $(BINDIR)/judged $(BINDIR)/judgectl
	@tests/integration/run.sh $(BINDIR)

# Fault tests: real judged daemons and redis-servers, killed, paused, drained and restarted
# (tests/faults/test_faults.py). FAULTS=quick runs the subset used under the sanitizers.
# FAULTS_ONLY names a subset of the tests (unittest names).
FAULTS ?= full
FAULTS_ONLY ?=
test-faults: $(BINDIR)/judged $(BINDIR)/judgectl
	@JUDGED_FAULTS=$(FAULTS) tests/faults/run.sh $(BINDIR) $(FAULTS_ONLY)

demo: $(BINDIR)/judgectl $(BINDIR)/judged
	@tools/demo.sh $(BINDIR)

bench: $(BENCH_BINS)

# libFuzzer builds need clang; corpora live in tests/fuzz/corpus/<name>/.
FUZZ_CC     ?= clang
FUZZ_FLAGS  := -std=c11 -D_GNU_SOURCE -O1 -g -I. -fopenmp -fsanitize=fuzzer,address,undefined
FUZZ_LIB_SRCS := $(filter-out %cuda.c %cuda_%.c queue/%,$(LIB_SRCS))
fuzz: $(FUZZ_NAMES:%=build/fuzz/fuzz_%)
build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_LIB_SRCS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_LIB_SRCS) $(BLAS_LIBS) -ljansson -lyaml -lm \
	    -lpthread

clean:
	rm -rf build bin

FORMAT_FILES = $(shell git ls-files '*.c' '*.h' '*.cu' '*.cuh' '*.cc')
format:
	clang-format -i $(FORMAT_FILES)
format-check:
	clang-format --dry-run --Werror $(FORMAT_FILES)
tidy:
	clang-tidy --quiet -checks='-*,readability-braces-around-statements' \
	    --warnings-as-errors='*' $(filter %.c,$(FORMAT_FILES)) -- -std=c11 -D_GNU_SOURCE -I.

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
