#!/usr/bin/env bash
# Runs the fault tests (tests/faults/test_faults.py) against the binaries in $1 (default bin),
# or only the tests named after it (e.g. DaemonTests FaultTests.test_c_sigstop_past_the_lease),
# with the first python3 that has redis-py (Debian python3-redis), e.g. past a pyenv shim.
set -eu
cd "$(dirname "$0")/../.."
bindir=${1:-bin}
command -v redis-server >/dev/null || { echo "test-faults: redis-server not found" >&2; exit 1; }
py=
for p in "${PYTHON:-}" python3 /usr/bin/python3; do
    if [ -n "$p" ] && "$p" -c 'import redis' 2>/dev/null; then py=$p; break; fi
done
[ -n "$py" ] || { echo "test-faults: no python3 with redis-py (apt install python3-redis)" >&2; exit 1; }
shift || true
exec "$py" tests/faults/test_faults.py "$bindir" "$@"
