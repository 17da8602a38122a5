#!/usr/bin/env bash
# Replays every fuzz corpus (tests/fuzz/corpus/NAME/) through its replay binary; a crash or a
# sanitizer report fails. Prints "fuzz-replay: N passed, N failed".
set -u
dir=$1; shift
cd "$(dirname "$0")/../.." || exit 2
passed=0 failed=0
for name in "$@"; do
    corpus=tests/fuzz/corpus/$name
    if [ ! -d "$corpus" ]; then
        echo "fuzz-replay $name: no corpus at $corpus"; failed=$((failed + 1)); continue
    fi
    if out=$("$dir/replay_$name" "$corpus" 2>&1); then
        echo "fuzz-replay $name: $(printf '%s\n' "$out" | tail -n1)"; passed=$((passed + 1))
    else
        printf '%s\n' "$out" | tail -n 40
        echo "fuzz-replay $name: FAILED"; failed=$((failed + 1))
    fi
done
echo "fuzz-replay: $passed passed, $failed failed"
[ $failed -eq 0 ]
