#!/usr/bin/env bash
# Runs cmocka test binaries from the repository root and prints one closing line:
# "unit: N passed, N failed, N skipped". Exits non-zero if any test failed or a binary crashed.
set -u
cd "$(dirname "$0")/.." || exit 2
passed=0 failed=0 skipped=0 crashed=0
for bin in "$@"; do
    out=$(CMOCKA_MESSAGE_OUTPUT=stdout ${TEST_PREFIX:-} "$bin" 2>&1)
    rc=$?
    printf '%s\n' "$out"
    p=$(printf '%s\n' "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | tail -n1)
    f=$(printf '%s\n' "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | tail -n1)
    s=$(printf '%s\n' "$out" | sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p' | tail -n1)
    passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0})); skipped=$((skipped + ${s:-0}))
    if [ $rc -ne 0 ] && [ -z "$f" ]; then
        echo "CRASH: $bin exited with status $rc"
        crashed=$((crashed + 1))
    fi
done
failed=$((failed + crashed))
echo "unit: $passed passed, $failed failed, $skipped skipped"
[ $failed -eq 0 ]
