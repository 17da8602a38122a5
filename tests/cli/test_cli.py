#!/usr/bin/env python3
"""Command-line tests for judgectl, run against the built binary exactly as users call it.

Oracles: llama.cpp's 46 reference tokenizations of the LLaMA vocabulary (computed outside this
project by the Hugging Face tokenizer), the text itself for round trips, and hand-broken copies of
a real model directory for `inspect`. Prints "cli: N passed, N failed"; exits 1 on any failure.
Usage: test_cli.py BINDIR (run from the repository root)."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

BIN = sys.argv[1] if len(sys.argv) > 1 else "bin"
CTL = os.path.join(BIN, "judgectl")
FIX = "tests/fixtures"
LLAMA_SPM = f"{FIX}/tokenizer/llama/tokenizer.model"
LLAMA_JSON = f"{FIX}/tokenizer/hf-llama2/tokenizer.json"
STORIES_HF = f"{FIX}/stories260K-hf"

results = {"passed": 0, "failed": 0}


def check(name, cond, detail=""):
    if cond:
        results["passed"] += 1
    else:
        results["failed"] += 1
        print(f"FAIL {name}: {detail}")


def ctl(args, stdin=b""):
    p = subprocess.run([CTL] + args, input=stdin, capture_output=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


def llamacpp_cases():
    inp = open(f"{FIX}/tokenizer/llamacpp/ggml-vocab-llama-spm.gguf.inp", encoding="utf-8").read()
    texts = inp.split("\n__ggml_vocab_test__\n")[:-1]
    outs = open(f"{FIX}/tokenizer/llamacpp/ggml-vocab-llama-spm.gguf.out").read().split("\n")[:-1]
    assert len(texts) == len(outs) == 46, (len(texts), len(outs))
    return [(t, [int(x) for x in o.split()]) for t, o in zip(texts, outs)]


def test_tokenize_llamacpp_cases():
    for flag, path in (("--tokenizer", LLAMA_SPM), ("--tokenizer", LLAMA_JSON)):
        for i, (text, want) in enumerate(llamacpp_cases()):
            rc, out, err = ctl(["tokenize", flag, path, "--no-bos"], text.encode())
            got = [int(x) for x in out.split()]
            check(f"tokenize {os.path.basename(path)} case {i}", rc == 0 and got == want,
                  f"rc={rc} got={got} want={want} err={err!r}")
            rc, out, _ = ctl(["tokenize", flag, path], text.encode())
            got = [int(x) for x in out.split()]
            check(f"tokenize+bos {os.path.basename(path)} case {i}",
                  rc == 0 and got == [1] + want, f"got={got}")
            check(f"tokenize output format case {i}",
                  out == (" ".join(str(x) for x in [1] + want) + "\n").encode(), repr(out))


def test_detokenize_round_trip():
    for i, (text, ids) in enumerate(llamacpp_cases()):
        for prefix in ([], [1]):
            rc, out, err = ctl(["detokenize", "--tokenizer", LLAMA_SPM],
                               " ".join(str(x) for x in prefix + ids).encode())
            check(f"detokenize case {i} bos={bool(prefix)}",
                  rc == 0 and out.decode("utf-8") == text, f"rc={rc} got={out!r} want={text!r}")


def test_tokenize_model_dir_uses_its_tokenizer():
    # tok512 (stories260K) sets remove_extra_whitespaces: runs of spaces collapse
    rc, a, _ = ctl(["tokenize", "--model", STORIES_HF], b"Once upon a time")
    rc2, b, _ = ctl(["tokenize", "--model", STORIES_HF], b"  Once   upon a time  ")
    check("tokenize --model", rc == 0 and rc2 == 0 and a == b and a.startswith(b"1 "), f"{a} {b}")
    rc, out, _ = ctl(["detokenize", "--model", STORIES_HF], a)
    check("detokenize --model", rc == 0 and out == b"Once upon a time", repr(out))


def test_usage_errors():
    check("no source", ctl(["tokenize"])[0] == 2)
    check("two sources", ctl(["tokenize", "--model", STORIES_HF, "--tokenizer", LLAMA_SPM])[0] == 2)
    check("unknown command", ctl(["frobnicate"])[0] == 2)
    rc, _, err = ctl(["tokenize", "--tokenizer", "/nonexistent/tokenizer.model"])
    check("missing tokenizer file", rc == 1 and b"/nonexistent/tokenizer.model" in err, err)
    rc, _, err = ctl(["tokenize", "--tokenizer", LLAMA_SPM], b"abc\xff\xfe")
    check("invalid utf-8 rejected", rc == 1 and b"byte 3" in err, err)
    rc, _, err = ctl(["detokenize", "--tokenizer", LLAMA_SPM], b"1 15043 banana")
    check("bad id named", rc == 1 and b"token 3" in err and b"banana" in err, err)
    rc, _, err = ctl(["detokenize", "--tokenizer", LLAMA_SPM], b"1 99999")
    check("id out of range", rc == 1 and b"99999" in err, err)


def test_inspect_good_model():
    rc, out, err = ctl(["inspect", STORIES_HF])
    text = out.decode()
    check("inspect exit 0", rc == 0, text + err.decode())
    check("inspect says OK", "check: OK" in text, text)
    # 5 layers x 9 tensors + embed + norm (tied: no lm_head) = 47
    n_tensor_lines = sum(1 for l in text.splitlines() if l.startswith("  model."))
    check("inspect lists every tensor", n_tensor_lines == 47, n_tensor_lines)
    check("inspect shows dtype and shape",
          any("model.embed_tokens.weight" in l and "F32" in l and "[512, 64]" in l
              for l in text.splitlines()), text)
    rc, out, _ = ctl(["inspect", STORIES_HF, "--weights", "model.f16.safetensors"])
    check("inspect f16 weights", rc == 0 and "F16" in out.decode(), out.decode())


def broken_copy(edit):
    d = tempfile.mkdtemp(prefix="judged-cli-")
    for f in os.listdir(STORIES_HF):
        shutil.copy(os.path.join(STORIES_HF, f), d)
    cfg = json.load(open(os.path.join(d, "config.json")))
    edit(cfg, d)
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
    return d


def test_inspect_inconsistent_models():
    cases = [
        ("extra layer", lambda c, d: c.update(num_hidden_layers=6), "model.layers.5."),
        ("wrong ffn", lambda c, d: c.update(intermediate_size=200), "mlp.gate_proj.weight"),
        ("wrong kv heads", lambda c, d: c.update(num_key_value_heads=8), "k_proj.weight"),
        ("untied without lm_head", lambda c, d: c.update(tie_word_embeddings=False),
         "lm_head.weight"),
        ("bad field type", lambda c, d: c.update(hidden_size="64"), "hidden_size"),
        ("weights missing", lambda c, d: os.remove(os.path.join(d, "model.safetensors")),
         "model.safetensors"),
    ]
    for name, edit, needle in cases:
        d = broken_copy(edit)
        try:
            rc, out, err = ctl(["inspect", d])
            text = out.decode() + err.decode()
            check(f"inspect {name}: exit 1", rc == 1, f"rc={rc} {text}")
            check(f"inspect {name}: names {needle}", needle in text and "problem:" in text, text)
        finally:
            shutil.rmtree(d)


STORIES_BIN = f"{FIX}/stories260K/stories260K.bin"
TOK512 = f"{FIX}/stories260K/tok512.model"


def test_generate_reproduces_llama2c():
    # llama2.c `run stories260K.bin -z tok512.bin -t 0.0 -n 200`: 200 greedy tokens from BOS
    want = open(f"{FIX}/stories260K/expected_greedy_n200.txt", encoding="utf-8").read()
    runs = [
        ["--model", STORIES_BIN, "--tokenizer", TOK512],
        ["--model", STORIES_HF],
        ["--model", STORIES_HF, "--weights", "model.f16.safetensors"],
    ]
    for args in runs:
        rc, out, err = ctl(["generate"] + args + ["--prompt", "", "--max-new-tokens", "200",
                                                   "--temperature", "0"])
        check(f"generate {args[1]} {args[-1]}", rc == 0 and out.decode() == want,
              f"rc={rc} err={err[-300:]!r}\ngot={out[:120]!r}...")


def test_generate_logits_match_runc():
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "logits.txt")
        rc, _, err = ctl(["generate", "--model", STORIES_BIN, "--tokenizer", TOK512,
                          "--prompt", "", "--max-new-tokens", "8", "--logits", path])
        check("generate --logits", rc == 0, err)
        got = [l.split() for l in open(path)]
        want = [l.split() for l in open(f"{FIX}/stories260K/derived/runc_logits_first8.txt")]
        check("logits lines", len(got) == 8 and len(want) >= 8, len(got))
        worst = 0.0
        for g, w in zip(got, want):
            check("logits position and input token", g[:2] == w[:2], (g[:2], w[:2]))
            worst = max(worst, max(abs(float(a) - float(b)) for a, b in zip(g[2:], w[2:])))
        check("logits within 1e-4 of run.c", worst <= 1e-4, worst)


def test_generate_stops_and_samples():
    base = ["generate", "--model", STORIES_HF, "--prompt", "Once upon a time"]
    rc, full, _ = ctl(base + ["--max-new-tokens", "60", "--temperature", "0"])
    check("generate greedy", rc == 0 and len(full) > 20, full)
    # a stop string cuts the continuation before it
    rc, cut, _ = ctl(base + ["--max-new-tokens", "60", "--temperature", "0", "--stop", "Lily"])
    check("generate --stop", rc == 0 and b"Lily" in full and cut == full[:full.index(b"Lily")],
          (cut, full))
    # the same seed gives the same sample, another seed (almost surely) another
    a = ctl(base + ["--max-new-tokens", "40", "--temperature", "1", "--seed", "7"])[1]
    b = ctl(base + ["--max-new-tokens", "40", "--temperature", "1", "--seed", "7"])[1]
    c = ctl(base + ["--max-new-tokens", "40", "--temperature", "1", "--seed", "8"])[1]
    check("generate seeded", a == b and a != c, (a, b, c))
    # top-k 1 at any temperature is greedy
    k1 = ctl(base + ["--max-new-tokens", "60", "--temperature", "0.8", "--top-k", "1"])[1]
    check("generate top-k 1", k1 == full, (k1, full))
    rc, _, err = ctl(["generate", "--model", STORIES_BIN, "--prompt", "x"])
    check("llama2.c needs --tokenizer", rc == 2 and b"--tokenizer" in err, err)
    rc, _, err = ctl(base + ["--top-p", "1.5"])
    check("bad top-p", rc == 2 and b"--top-p" in err, err)
    long_prompt = "Once upon a time " * 200  # more than the 512-token context
    rc, _, err = ctl(["generate", "--model", STORIES_HF, "--prompt", long_prompt])
    check("prompt longer than the context", rc == 1 and b"context" in err, err)


def main():
    for name, fn in sorted(globals().items()):
        if name.startswith("test_") and callable(fn):
            before = results["failed"]
            try:
                fn()
            except Exception as e:  # a crash in a test is a failure, not an abort
                results["failed"] += 1
                print(f"FAIL {name}: {type(e).__name__}: {e}")
            print(f"{name}: {'ok' if results['failed'] == before else 'FAILED'}")
    print(f"cli: {results['passed']} passed, {results['failed']} failed")
    sys.exit(1 if results["failed"] else 0)


if __name__ == "__main__":
    main()
