#!/usr/bin/env bash
# tok_bench.sh - tokenizer encode throughput, judged vs the sentencepiece Python package, in one run
# on the same machine, the same text and the same chunking.
#
# The text (~10 MB, written once to $TEXT, default /tmp/judged_tok_bench.txt) mixes the repo's
# fixture texts (stories, licences, model cards, the llama.cpp cases, the oracle case texts), its C
# sources, and seeded random multilingual lines (Latin, Cyrillic, Greek, CJK, Hangul, Arabic,
# Devanagari, emoji, rare characters that need byte fallback). Both sides encode it per 4 KB chunk
# (cut back to a UTF-8 boundary) and per line, no BOS, single thread, best of $REPEAT runs, and the
# ids' CRC-32 must agree. judged is also timed on the LLaMA tokenizer.json.
#
# Usage: bench/tok_bench.sh            (builds build/release/bench/tok_bench if missing)
#   env: TEXT=path REPEAT=3 MB=10 BIN=build/release/bench/tok_bench
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-build/release/bench/tok_bench}
TEXT=${TEXT:-/tmp/judged_tok_bench.txt}
REPEAT=${REPEAT:-3}
MB=${MB:-10}
MODEL=tests/fixtures/tokenizer/llama/tokenizer.model
JSON=tests/fixtures/tokenizer/hf-llama2/tokenizer.json

if [ ! -x "$BIN" ]; then
    make "$BIN" >/dev/null
fi

if [ ! -s "$TEXT" ]; then
    python3 - "$TEXT" "$MB" <<'EOF'
import glob, json, random, sys

out, mb = sys.argv[1], float(sys.argv[2])
rng = random.Random(1234)
paras = []
files = sorted(glob.glob("tests/fixtures/**/*.md", recursive=True) +
               glob.glob("tests/fixtures/**/*.txt", recursive=True) +
               glob.glob("tests/fixtures/**/LICENSE*", recursive=True) +
               glob.glob("tests/fixtures/tokenizer/llamacpp/*.inp"))
for path in files:
    with open(path, encoding="utf-8", errors="replace") as f:
        paras += [p for p in f.read().split("\n\n") if p.strip()]
for path in sorted(glob.glob("tests/fixtures/tokenizer/*_cases_*.jsonl")):
    with open(path, encoding="utf-8") as f:
        for line in f:
            t = json.loads(line).get("text")
            if t:
                paras.append(t)
code = []
for path in sorted(glob.glob("*/*.c") + glob.glob("*/*.h") + glob.glob("*/*/*.c")):
    with open(path, encoding="utf-8", errors="replace") as f:
        code += [p for p in f.read().split("\n\n") if p.strip()]

scripts = [(0x41, 0x7A), (0xC0, 0x17F), (0x400, 0x44F), (0x391, 0x3C9), (0x4E00, 0x9FFF),
           (0xAC00, 0xD7A3), (0x3040, 0x30FF), (0x621, 0x64A), (0x905, 0x939), (0xE01, 0xE30),
           (0x1F300, 0x1F64F), (0x10000, 0x1FFFF)]

def word():
    lo, hi = rng.choice(scripts)
    return "".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 8)))

def multilingual_line():
    return " ".join(word() for _ in range(rng.randint(3, 20))) + rng.choice([".", "!", "?", ""])

target = int(mb * 1e6)
parts, size = [], 0
while size < target:
    r = rng.random()
    if r < 0.55:
        p = rng.choice(paras)
    elif r < 0.75:
        p = rng.choice(code)
    else:
        p = "\n".join(multilingual_line() for _ in range(rng.randint(1, 5)))
    parts.append(p)
    size += len(p.encode("utf-8")) + 2
with open(out, "w", encoding="utf-8") as f:
    f.write("\n\n".join(parts))
EOF
fi

sp_bench() { # mode
    python3 - "$MODEL" "$TEXT" "$1" "$REPEAT" <<'EOF'
import sys, time, zlib
from array import array
import sentencepiece as spm

model, path, mode, repeat = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
sp = spm.SentencePieceProcessor(model_file=model)
data = open(path, "rb").read()
chunks = []
off = 0
while off < len(data):
    if mode == "line":
        end = data.find(b"\n", off)
        end = len(data) if end < 0 else end
        chunks.append(data[off:end])
        off = end + 1
    else:
        end = min(off + 4096, len(data))
        while end < len(data) and end > off + 1 and (data[end] & 0xC0) == 0x80:
            end -= 1
        chunks.append(data[off:end])
        off = end
chunks = [c.decode("utf-8") for c in chunks]
crc, n_tokens = 0, 0
for c in chunks:
    ids = sp.EncodeAsIds(c)
    n_tokens += len(ids)
    crc = zlib.crc32(array("i", ids).tobytes(), crc)
best = 1e30
for _ in range(repeat):
    t0 = time.perf_counter()
    for c in chunks:
        sp.EncodeAsIds(c)
    best = min(best, time.perf_counter() - t0)
print(f"sentencepiece mode={mode} bytes={len(data)} chunks={len(chunks)} tokens={n_tokens} "
      f"crc={crc:08x} best_s={best:.3f} MB/s={len(data) / 1e6 / best:.2f}")
EOF
}

field() { # line key
    printf "%s\n" "$1" | tr " " "\n" | sed -n "s|^$2=||p"
}

echo "tok_bench: $(date -u +%Y-%m-%dT%H:%M:%SZ) $(lscpu | sed -n 's/^Model name: *//p') x$(nproc)"
echo "text: $TEXT ($(wc -c <"$TEXT") bytes), sentencepiece $(python3 -c 'import sentencepiece; print(sentencepiece.__version__)')"
status=0
for mode in 4k line; do
    ours=$("$BIN" "$MODEL" "$TEXT" "$mode" "$REPEAT")
    theirs=$(sp_bench "$mode")
    echo "$ours"
    echo "$theirs"
    if [ "$(field "$ours" crc)" != "$(field "$theirs" crc)" ] ||
        [ "$(field "$ours" tokens)" != "$(field "$theirs" tokens)" ]; then
        echo "MISMATCH: judged and sentencepiece produced different ids ($mode)"
        status=1
    fi
    python3 -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); \
print(f'ratio mode=$mode judged/sentencepiece = {a / b:.2f}x')" \
        "$(field "$ours" MB/s)" "$(field "$theirs" MB/s)"
done
echo "$("$BIN" "$JSON" "$TEXT" 4k "$REPEAT") (tokenizer.json)"
exit $status
