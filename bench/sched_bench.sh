#!/usr/bin/env bash
# Builds the scheduler benchmark and the 110M random LLaMA it runs on (tools/make_bench_llama.py,
# needs numpy), then runs it: one request at a time, static batches of 16 and continuous
# batching on PandaLM judge prompts. Figures go to bench/RESULTS.md by hand, with the date and
# machine. Usage: bench/sched_bench.sh [--requests N] [--max-new-tokens M] [...]
# (model cached in ${BENCH_MODEL_DIR:-/tmp/judged-llama110m})
set -euo pipefail
cd "$(dirname "$0")/.."
model=${BENCH_MODEL_DIR:-/tmp/judged-llama110m}
if [ ! -f "$model/model.safetensors" ]; then
    python3 tools/make_bench_llama.py "$model"
fi
make -s build/release/bench/sched_bench
echo "date: $(date -u +%Y-%m-%dT%H:%MZ)  machine: $(nproc) x $(lscpu | sed -n 's/^Model name: *//p')"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "command: build/release/bench/sched_bench --model $model $*"
build/release/bench/sched_bench --model "$model" "$@"
