#!/usr/bin/env bash
# Runs the Redis integration tests (the gq_v1 protocol from redis-py, and judgectl's Redis
# commands) against the binaries in $1 (default bin). Each test module starts its own
# redis-server on a free loopback port in a temporary directory; nothing needs the network.
set -eu
cd "$(dirname "$0")/../.."
bindir=${1:-bin}
command -v redis-server >/dev/null || { echo "test-integration: redis-server not found" >&2; exit 1; }
# the first python3 that has redis-py (Debian python3-redis), e.g. past a pyenv shim
py=
for p in "${PYTHON:-}" python3 /usr/bin/python3; do
    if [ -n "$p" ] && "$p" -c 'import redis' 2>/dev/null; then py=$p; break; fi
done
[ -n "$py" ] || { echo "test-integration: no python3 with redis-py (apt install python3-redis)" >&2; exit 1; }
JUDGED_BINDIR=$bindir exec "$py" -m unittest tests/integration/test_protocol.py \
    tests/integration/test_judgectl.py
