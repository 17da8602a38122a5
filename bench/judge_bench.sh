#!/usr/bin/env bash
# A local fast-mode JudgeLM job on the 110M random LLaMA (tools/make_bench_llama.py, LLaMA's
# 32000-piece tokenizer): N PandaLM samples (default 200), pairwise, one order. Reports samples/s
# and the share of the run's wall time spent outside the engine's forward passes (the cost of
# scheduling, sampling, detokenizing and the job logic).
# Usage: bench/judge_bench.sh [N]   (model cached in ${BENCH_MODEL_DIR:-/tmp/judged-llama110m})
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-200}
model=${BENCH_MODEL_DIR:-/tmp/judged-llama110m}
if [ ! -f "$model/model.safetensors" ]; then
    python3 tools/make_bench_llama.py "$model"
fi
make -s bin/judgectl
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$work" "$n" <<'PY'
import json, sys
rows = json.load(open("tests/fixtures/pandalm/testset-v1.json"))[: int(sys.argv[2])]
json.dump(rows, open(f"{sys.argv[1]}/samples.json", "w"))
PY
cat > "$work/job.yaml" <<YAML
kind: judge
model: $model
input: samples.json
input_format: pandalm
mode: pair
output: fast
max_new_tokens: 16
output_path: judgments.jsonl
YAML
echo "date: $(date -u +%Y-%m-%dT%H:%MZ)  machine: $(nproc) x $(lscpu | sed -n 's/^Model name: *//p')"
echo "command: bin/judgectl run job.yaml ($n PandaLM samples, fast mode, pair, 110M model)"
bin/judgectl run "$work/job.yaml" --log-level warn 2>&1
