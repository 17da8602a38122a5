#!/usr/bin/env bash
# make demo: the main job on the embedded default. A private redis-server in a temporary
# directory, one judged on the CPU backend with the bundled stories260K, and a judging sweep of
# PandaLM samples with labels submitted through judgectl: live progress, then where the results
# are and the metrics table. Everything is stopped and removed at the end.
#
# stories260K is a 260K-parameter story model, not a judge: its score lines do not parse, so
# every judgment counts as a tie. The sweep, the queue and the metrics are what this shows; point
# judged.yaml's models at JudgeLM-7B for real judgments.
set -euo pipefail
bindir=$(cd "${1:-bin}" && pwd)
cd "$(dirname "$0")/.."
root=$PWD
n_samples=${DEMO_SAMPLES:-48}

work=$(mktemp -d /tmp/judged-demo.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis_pid= judged_pid=
cleanup() {
    [ -n "$judged_pid" ] && kill -TERM "$judged_pid" 2>/dev/null && wait "$judged_pid" 2>/dev/null
    [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

echo "== redis-server on 127.0.0.1:$port (data in $work)"
redis-server --port "$port" --bind 127.0.0.1 --dir "$work" --appendonly yes \
    --appendfsync always --save '' --logfile "$work/redis.log" &
redis_pid=$!
for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
export JUDGED_REDIS="redis://127.0.0.1:$port"

cat > "$work/judged.yaml" <<YAML
redis:
  url: redis://127.0.0.1:$port
worker:
  id: demo-worker
  queues: [judge]
  lease_ms: 10000
  poll_ms: 200
engine:
  devices: cpu
  context: 2048       # PandaLM prompts run past stories260K's 512 trained positions
  kv_mib: 256
models:
  stories260K: $root/tests/fixtures/stories260K-hf
log_level: warn
YAML
echo "== judged -c judged.yaml (CPU backend, model stories260K)"
"$bindir/judged" -c "$work/judged.yaml" 2>"$work/judged.log" &
judged_pid=$!

python3 - "$work" "$n_samples" <<'PY'
import json, sys
rows = json.load(open("tests/fixtures/pandalm/testset-v1.json"))[:int(sys.argv[2])]
with open(f"{sys.argv[1]}/samples.jsonl", "w") as f:
    for r in rows:
        f.write(json.dumps(r) + "\n")
PY
cat > "$work/sweep.yaml" <<YAML
kind: judge
name: demo
model: stories260K          # a model name from judged.yaml
input: samples.jsonl
input_format: pandalm
mode: pair
swap: both                  # both answer orders: consistency and position bias
output: fast
max_new_tokens: 8
shard_size: 8
labels: $root/tests/fixtures/pandalm/testset-v1.json
YAML
echo "== judgectl submit sweep.yaml --watch   ($n_samples PandaLM samples, shards of 8)"
sid=$("$bindir/judgectl" submit "$work/sweep.yaml" --watch)
echo "sweep $sid"
echo; echo "== judgectl status $sid"
"$bindir/judgectl" status "$sid"
"$bindir/judgectl" results "$sid" -o "$work/results.jsonl"
echo; echo "== judgectl results $sid -o results.jsonl: $(wc -l <"$work/results.jsonl") records"
python3 - "$work/results.jsonl" <<'PY'
import json, sys
rec = json.loads(open(sys.argv[1]).readline())
print("first record:", {k: rec[k] for k in ("idx", "pred_id", "pred_text", "scores",
                                              "pred_text_swapped") if k in rec})
PY
echo; echo "== judgectl metrics $sid"
"$bindir/judgectl" metrics "$sid"
echo; echo "(the results file and the Redis data are removed now; keep them with a real"
echo " redis-server and judgectl results -o FILE)"
