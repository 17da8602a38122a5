#!/usr/bin/env bash
# End-to-end cost of the queue: the same judge spec run in-process (`judgectl run`) and as a
# sweep through a private redis-server (appendfsync always) and one judged, on the same machine
# in the same run. The sweep is timed from `judgectl submit` to the sweep being done (aggregate
# included, read from the sweep's finished_ms in Redis server time); both give byte-identical
# records, which the script checks.
# Usage: bench/sweep_bench.sh [N_SAMPLES] [SHARD_SIZE]
#        (model: ${BENCH_MODEL_DIR:-/tmp/judged-llama110m}, made by tools/make_bench_llama.py)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-100}
shard=${2:-16}
model=${BENCH_MODEL_DIR:-/tmp/judged-llama110m}
threads=${BENCH_THREADS:-0}
if [ ! -f "$model/model.safetensors" ]; then
    python3 tools/make_bench_llama.py "$model"
fi
make -s CUDA=0 bin/judgectl bin/judged
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
judged_pid=
cleanup() {
    [ -n "$judged_pid" ] && kill -TERM "$judged_pid" 2>/dev/null && wait "$judged_pid" 2>/dev/null
    redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
calc() { python3 -c "print($1)"; }
now() { python3 -c 'import time; print(time.monotonic())'; }
python3 - "$work" "$n" <<'PY'
import json, sys
rows = json.load(open("tests/fixtures/pandalm/testset-v1.json"))[: int(sys.argv[2])]
with open(f"{sys.argv[1]}/samples.jsonl", "w") as f:
    for r in rows:
        f.write(json.dumps(r) + "\n")
PY
cat > "$work/job.yaml" <<YAML
kind: judge
model: $model
input: samples.jsonl
input_format: pandalm
mode: pair
output: fast
max_new_tokens: 16
deterministic: true
shard_size: $shard
YAML
redis-server --port "$port" --dir "$work" --appendonly yes --appendfsync always --save '' \
    --daemonize yes --logfile "$work/redis.log"
for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
n_shards=$(( (n + shard - 1) / shard ))
cat > "$work/judged.yaml" <<YAML
redis: {url: "redis://127.0.0.1:$port"}
worker: {poll_ms: 500, max_shards: $n_shards, watermark_tokens: 100000000, lease_ms: 60000}
engine: {devices: cpu, threads: $threads, kv_mib: 2048, max_batch_tokens: 512, max_seqs: 64}
log_level: warn
YAML
"bin/judged" -c "$work/judged.yaml" 2>"$work/judged.log" &
judged_pid=$!
sleep 1
export JUDGED_REDIS="redis://127.0.0.1:$port"

t0=$(now)
bin/judgectl run "$work/job.yaml" -o "$work/run.jsonl" --threads "$threads" \
    --max-batch-tokens 512 --max-seqs 64 --kv-mib 2048 --log-level warn 2>"$work/run.log"
t_run=$(calc "$(now) - $t0")

# the sweep's end is read from Redis (finished_ms, server time), so the wait loop can poll
# rarely: a process spawned every few ms takes CPU from the engine's OpenMP team
redis_ms() { redis-cli -p "$port" time | python3 -c 'import sys; s, us = sys.stdin.read().split(); print(int(s) * 1000 + int(us) // 1000)'; }
t0_ms=$(redis_ms)
sid=$(bin/judgectl submit "$work/job.yaml" --id bench)
while [ "$(redis-cli -p "$port" hget 'gq:{judge}:sweep:bench' state)" != done ]; do
    sleep 2
done
t_sweep=$(calc "($(redis-cli -p "$port" hget 'gq:{judge}:sweep:bench' finished_ms) - $t0_ms) / 1000")
bin/judgectl results "$sid" -o "$work/sweep.jsonl"
if cmp -s "$work/run.jsonl" "$work/sweep.jsonl"; then same=identical; else same=DIFFERENT; fi

printf 'samples %d, shards of %d, model %s\n' "$n" "$shard" "$model"
printf 'judgectl run (in-process):   %8.2f s  %6.2f samples/s\n' "$t_run" "$(calc "$n / $t_run")"
printf 'sweep through judged:        %8.2f s  %6.2f samples/s\n' "$t_sweep" "$(calc "$n / $t_sweep")"
printf 'records: %s\n' "$same"
printf 'sweep_overhead: %.1f%%\n' "$(calc "100 * ($t_sweep - $t_run) / $t_run")"
