#!/bin/sh
# cu2cc.sh IN.cu OUT.cc - translates a kernels/cuda source to C++ for cuemu (tests/cuemu/README.md):
# `kernel<<<grid, block, smem, stream>>>(args)` becomes a cuemu::launch, and the dynamic
# `extern __shared__ T name[];` a pointer to the launch's buffer. Lines keep their numbers, and
# #line names the original file, so compiler messages and sanitizer reports point into the .cu.
set -eu
in=$1
out=$2
{
    printf '#line 1 "%s"\n' "$in"
    sed -E \
        -e 's/\b([A-Za-z_][A-Za-z0-9_]*(<[^<>]*>)?)<<<(.*)>>>\(\)/cuemu::launch("\1", \3).run(\1)/' \
        -e 's/\b([A-Za-z_][A-Za-z0-9_]*(<[^<>]*>)?)<<<(.*)>>>\(/cuemu::launch("\1", \3).run(\1, /' \
        -e 's/extern __shared__ ([A-Za-z_][A-Za-z0-9_ ]*[A-Za-z0-9_]) +([A-Za-z_][A-Za-z0-9_]*)\[\];/\1 *\2 = (\1 *)cuemu::dyn_smem();/' \
        "$in"
} >"$out.tmp"
if grep -n '<<<\|extern __shared__' "$out.tmp" >&2; then
    echo "cu2cc.sh: $in: a launch or dynamic shared array this script cannot translate" >&2
    rm -f "$out.tmp"
    exit 1
fi
mv "$out.tmp" "$out"
