#!/usr/bin/env bash
# Builds the engine benchmark and the 110M random LLaMA it runs on (tools/make_bench_llama.py,
# needs numpy), then runs it. Figures go to bench/RESULTS.md by hand, with the date and machine.
# Usage: bench/engine_bench.sh [--quick]   (model cached in ${BENCH_MODEL_DIR:-/tmp/judged-llama110m})
set -euo pipefail
cd "$(dirname "$0")/.."
model=${BENCH_MODEL_DIR:-/tmp/judged-llama110m}
if [ ! -f "$model/model.safetensors" ]; then
    python3 tools/make_bench_llama.py "$model"
fi
make -s build/release/bench/engine_bench
echo "date: $(date -u +%Y-%m-%dT%H:%MZ)  machine: $(nproc) x $(lscpu | sed -n 's/^Model name: *//p')"
echo "command: build/release/bench/engine_bench $model $*"
build/release/bench/engine_bench "$model" "$@"
