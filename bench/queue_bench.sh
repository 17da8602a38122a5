#!/usr/bin/env bash
# The queue protocol's rates (bench/queue_bench.c) against a private redis-server, once with
# appendfsync always (the recommended setting for job state) and once with everysec.
# Usage: bench/queue_bench.sh [N_SHARDS] [PAYLOAD_BYTES]
set -euo pipefail
cd "$(dirname "$0")/.."
make -s CUDA=0 build/release/bench/queue_bench
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
trap 'redis-cli -p $port shutdown nosave >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
for fsync in always everysec; do
    redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
    rm -rf "$work"/*
    redis-server --port "$port" --dir "$work" --appendonly yes --appendfsync "$fsync" \
        --save '' --daemonize yes --logfile "$work/redis.log"
    for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
    echo "== appendfsync $fsync"
    build/release/bench/queue_bench "redis://127.0.0.1:$port" "${1:-2000}" "${2:-16384}"
done
