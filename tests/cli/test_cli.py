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


def ctl(args, stdin=b"", env=None):
    p = subprocess.run([CTL] + args, input=stdin, capture_output=True, timeout=120, env=env)
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


PANDALM = f"{FIX}/pandalm"
LLMBAR = f"{FIX}/llmbar/LLMBar_Natural.json"

# research/judgelm.md 1.1-1.3, quoted literals
JUDGE_SYSTEM = "You are a helpful and precise assistant for checking the quality of the answer."
JUDGE_PAIR = ("[Question]\n{question}\n\n[The Start of Assistant 1's Answer]\n{answer_1}\n\n"
              "[The End of Assistant 1's Answer]\n\n[The Start of Assistant 2's Answer]\n"
              "{answer_2}\n\n[The End of Assistant 2's Answer]\n\n[System]\n{prompt}\n\n")
JUDGE_INSTRUCTION = (
    "We would like to request your feedback on the performance of two AI assistants in response "
    "to the user question displayed above.\nPlease rate the helpfulness, relevance, accuracy, "
    "level of details of their responses. Each assistant receives an overall score on a scale of "
    "1 to 10, where a higher score indicates better overall performance.\nPlease first output a "
    "single line containing only two values indicating the scores for Assistant 1 and 2, "
    "respectively. The two scores are separated by a space. In the subsequent line, please "
    "provide a comprehensive explanation of your evaluation, avoiding any potential bias and "
    "ensuring that the order in which the responses were presented does not affect your "
    "judgment.")


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def metrics_json(args):
    rc, out, err = ctl(["metrics"] + args + ["--json"])
    return rc, (json.loads(out) if rc == 0 else None), err


def pct(x):
    return round(100 * x, 2)


def test_metrics_pandalm_cross_check():
    # research/judgelm.md 5: PandaLM-7B and GPT-3.5 verdicts vs the majority of the annotators
    labels = f"{PANDALM}/testset-v1.json"
    p7 = json.load(open(f"{PANDALM}/pandalm-7b-testset-v1.json"))
    gpt = json.load(open(f"{PANDALM}/gpt-3.5-turbo-testset-v1.json"))
    as_text = {1: "9 2", 2: "2 9", 0: "5 5"}
    with tempfile.TemporaryDirectory() as d:
        write_jsonl(f"{d}/p7.jsonl", [{"question_id": r["idx"],
                                       "pred_text": as_text[r["pandalm_result"]]} for r in p7])
        rc, m, err = metrics_json(["--pred", f"{d}/p7.jsonl", "--labels", labels])
        check("metrics pandalm-7b", rc == 0 and m["n"] == 999 and
              [pct(m[k]) for k in ("accuracy", "precision", "recall", "f1")] ==
              [66.77, 57.38, 57.50, 57.43], (rc, m, err))
        rc, out, err = ctl(["metrics", "--pred", f"{d}/p7.jsonl", "--labels", labels])
        text = out.decode()
        check("metrics table", rc == 0 and "agreement" in text and "66.77" in text and
              "57.43" in text and "confusion" in text, text + err.decode())
        to_text = {"1": "9 2", "2": "2 9", "Tie": "5 5"}
        write_jsonl(f"{d}/gpt.jsonl", [{"question_id": r["idx"],
                                        "pred_text": to_text[r["gpt_result"]]}
                                       for r in gpt if r["gpt_result"] in to_text])
        rc, m, err = metrics_json(["--pred", f"{d}/gpt.jsonl", "--labels", labels])
        check("metrics gpt-3.5", rc == 0 and m["n"] == 974 and m["n_unmatched_labels"] == 25 and
              [pct(m[k]) for k in ("accuracy", "precision", "recall", "f1")] ==
              [71.56, 53.65, 54.17, 53.31], (rc, m, err))
        # a reversed run: the same verdicts are perfectly inconsistent except for ties
        rc, m, err = metrics_json(["--pred", f"{d}/p7.jsonl", "--labels", labels,
                                   "--reversed", f"{d}/p7.jsonl"])
        ties = sum(1 for r in p7 if r["pandalm_result"] == 0)
        check("metrics --reversed", rc == 0 and abs(m["consistency"] - ties / 999) < 1e-9 and
              abs(m["total_bias"] - (1 - ties / 999)) < 1e-9, (rc, m, err))


def test_metrics_label_formats_and_errors():
    with tempfile.TemporaryDirectory() as d:
        # LLMBar: question_id = position
        bar = json.load(open(LLMBAR))
        write_jsonl(f"{d}/bar.jsonl", [{"question_id": i, "pred_text": "8 3"}
                                       for i in range(len(bar))])
        rc, m, err = metrics_json(["--pred", f"{d}/bar.jsonl", "--labels", LLMBAR])
        ones = sum(1 for r in bar if r["label"] == 1)
        check("metrics llmbar", rc == 0 and m["n"] == 100 and
              abs(m["accuracy"] - ones / 100) < 1e-9, (rc, m, err))
        # GPT-4-style texts: unparseable ground truth dropped; a failed prediction is a tie
        write_jsonl(f"{d}/gt.jsonl", [{"question_id": 0, "text": "8 7\nbecause"},
                                      {"question_id": 1, "text": "error"},
                                      {"question_id": 2, "label": 0}])
        write_jsonl(f"{d}/pred.jsonl", [{"question_id": 0, "pred_text": "9 1"},
                                        {"question_id": 1, "pred_text": "9 1"},
                                        {"question_id": 2, "pred_text": "no score"}])
        rc, m, err = metrics_json(["--pred", f"{d}/pred.jsonl", "--labels", f"{d}/gt.jsonl"])
        check("metrics text labels", rc == 0 and m["n"] == 2 and m["accuracy"] == 1.0 and
              m["n_labels_dropped"] == 1 and m["n_pred_failed"] == 1, (rc, m, err))
        rc, _, err = ctl(["metrics", "--pred", f"{d}/pred.jsonl"])
        check("metrics usage", rc == 2 and b"--labels" in err, err)
        with open(f"{d}/bad.jsonl", "w") as f:
            f.write('{"question_id": 0, "pred_text": "1 2"}\n{"pred_text": "1 2"}\n')
        rc, _, err = ctl(["metrics", "--pred", f"{d}/bad.jsonl", "--labels", f"{d}/gt.jsonl"])
        check("metrics bad line named", rc == 1 and b"bad.jsonl:2" in err and
              b"question_id" in err, err)


def render_pair(question, a1, a2):
    body = JUDGE_PAIR.format(question=question, answer_1=a1, answer_2=a2,
                             prompt=JUDGE_INSTRUCTION)
    return JUDGE_SYSTEM + "\n" + body + "### Response:"


def test_run_dry_run_prompts():
    testset = json.load(open(f"{PANDALM}/testset-v1.json"))[:50]
    with tempfile.TemporaryDirectory() as d:
        write_jsonl(f"{d}/in.jsonl", testset)
        with open(f"{d}/job.yaml", "w") as f:
            f.write("kind: judge\nmodel: judgelm-7b\ninput: in.jsonl\ninput_format: pandalm\n"
                    "swap: both\n")
        rc, out, err = ctl(["run", f"{d}/job.yaml", "--dry-run"])
        lines = [json.loads(l) for l in out.decode().splitlines()]
        check("run --dry-run", rc == 0 and len(lines) == 100, (rc, err[-300:]))
        ok = True
        for i, rec in enumerate(lines):
            s = testset[i // 2]
            q = s["instruction"] + ("\n\n" + s["input"] if s["input"] else "")
            a1, a2 = s["response1"], s["response2"]
            if i % 2:
                a1, a2 = a2, a1
            want = {"question_id": s["idx"], "order": "swapped" if i % 2 else "original",
                    "prompt": render_pair(q, a1, a2)}
            if rec != want:
                ok = False
                check(f"dry-run line {i}", False, (rec, want))
                break
        check("dry-run prompts byte-identical", ok)
        rc, _, err = ctl(["run", f"{d}/job.yaml", "--dry-run", "-o", f"{d}/prompts.jsonl"])
        check("run --dry-run -o", rc == 0 and
              open(f"{d}/prompts.jsonl", "rb").read() == out, err)
        # single mode ends with the forced "10"
        with open(f"{d}/single.yaml", "w") as f:
            f.write("kind: judge\nmodel: m\ninput: in.jsonl\ninput_format: pandalm\n"
                    "mode: single\n")
        rc, out, err = ctl(["run", f"{d}/single.yaml", "--dry-run"])
        first = json.loads(out.decode().splitlines()[0])
        check("dry-run single", rc == 0 and first["prompt"].endswith("judgment.\n\n### Response:10"),
              err)
        # a model name that is not a directory: a clear error naming the field
        rc, _, err = ctl(["run", f"{d}/job.yaml"])
        check("run with a model name", rc == 1 and b"field 'model'" in err, err)
        with open(f"{d}/bad.yaml", "w") as f:
            f.write("kind: judge\nmodel: m\ninput: in.jsonl\nswap: sometimes\n")
        rc, _, err = ctl(["run", f"{d}/bad.yaml", "--dry-run"])
        check("run bad spec", rc == 1 and b"bad.yaml:4:1: field 'swap'" in err, err)
        rc, _, err = ctl(["run"])
        check("run usage", rc == 2, err)


def test_run_resolves_a_model_name_through_a_config():
    # judgectl run --config resolves a spec's model name through judged.yaml's models:, as judged
    # does; the oracle is the same spec naming the directory itself.
    testset = json.load(open(f"{PANDALM}/testset-v1.json"))[:6]
    spec = ("kind: judge\nmodel: {model}\n{model_id}input: in.jsonl\ninput_format: pandalm\n"
            "swap: both\nmax_new_tokens: 6\ndeterministic: true\noutput_path: {out}\n")
    with tempfile.TemporaryDirectory() as d:
        write_jsonl(f"{d}/in.jsonl", testset)
        for name, model, model_id in (("dir", os.path.abspath(STORIES_HF), "model_id: m\n"),
                                      ("name", "tiny-judge", "model_id: m\n"),
                                      ("noid", "tiny-judge", ""), ("unknown", "huge-judge", "")):
            with open(f"{d}/{name}.yaml", "w") as f:
                f.write(spec.format(model=model, model_id=model_id, out=f"out-{name}.jsonl"))
        with open(f"{d}/judged.yaml", "w") as f:
            f.write(f"models:\n  small: /nonexistent\n"
                    f"  tiny-judge: {{path: {os.path.abspath(STORIES_HF)}}}\n")
        rc, _, err = ctl(["run", f"{d}/dir.yaml", "--context", "2048"])
        check("run with the model directory", rc == 0, err[-300:])
        want = open(f"{d}/out-dir.jsonl", "rb").read()
        check("run with the model directory writes 6 records", len(want.splitlines()) == 6, want)
        rc, _, err = ctl(["run", f"{d}/name.yaml", "--context", "2048", "--config",
                          f"{d}/judged.yaml"])
        check("run --config with a model name", rc == 0, err[-300:])
        check("run --config: byte-identical to the directory",
              open(f"{d}/out-name.jsonl", "rb").read() == want, "outputs differ")
        os.remove(f"{d}/out-name.jsonl")
        # a relative directory is relative to the configuration's folder (not the working one)
        os.makedirs(f"{d}/models")
        os.symlink(os.path.abspath(STORIES_HF), f"{d}/models/tiny")
        with open(f"{d}/rel.yaml", "w") as f:
            f.write("models:\n  tiny-judge: models/tiny\n")
        rc, _, err = ctl(["run", f"{d}/name.yaml", "--context", "2048", "--config",
                          f"{d}/rel.yaml"])
        check("run --config with a relative directory", rc == 0 and
              open(f"{d}/out-name.jsonl", "rb").read() == want, err[-300:])
        os.remove(f"{d}/out-name.jsonl")
        env = dict(os.environ, JUDGED_CONFIG=f"{d}/judged.yaml")
        rc, _, err = ctl(["run", f"{d}/name.yaml", "--context", "2048"], env=env)
        check("run with $JUDGED_CONFIG", rc == 0 and
              open(f"{d}/out-name.jsonl", "rb").read() == want, err[-300:])
        # without model_id, pred_model_id is the name, as judged writes it for this spec
        rc, _, err = ctl(["run", f"{d}/noid.yaml", "--context", "2048"], env=env)
        recs = [json.loads(line) for line in open(f"{d}/out-noid.jsonl")]
        check("run --config: pred_model_id is the name",
              rc == 0 and {r["pred_model_id"] for r in recs} == {"tiny-judge"}, err[-300:])
        # errors name the spec file, the field and the configuration
        env_none = {k: v for k, v in os.environ.items() if k != "JUDGED_CONFIG"}
        rc, _, err = ctl(["run", f"{d}/unknown.yaml", "--config", f"{d}/judged.yaml"])
        check("run --config: unknown name", rc == 1 and
              f"{d}/unknown.yaml: field 'model': 'huge-judge' is neither a model directory nor "
              f"a model name in {d}/judged.yaml (models: small, tiny-judge)".encode() in err, err)
        rc, _, err = ctl(["run", f"{d}/name.yaml"], env=env_none)
        check("run: a model name without a config", rc == 1 and
              f"{d}/name.yaml: field 'model': 'tiny-judge' is not a model directory".encode()
              in err and b"--config" in err, err)
        with open(f"{d}/bad.yaml", "w") as f:
            f.write("models:\n  tiny-judge: {pth: x}\n")
        rc, _, err = ctl(["run", f"{d}/name.yaml", "--config", f"{d}/bad.yaml"])
        check("run --config: a bad models entry names file:line and field", rc == 1 and
              f"{d}/bad.yaml:2:".encode() in err and b"field 'models.tiny-judge.pth'" in err, err)
        rc, _, err = ctl(["run", f"{d}/name.yaml", "--config", f"{d}/missing.yaml"])
        check("run --config: a missing file", rc == 1 and b"missing.yaml" in err, err)


def judge_inputs(d, n=50):
    """judgelm-format records built from the first n PandaLM samples, one file per mode."""
    testset = json.load(open(f"{PANDALM}/testset-v1.json"))[:n]
    rows = []
    for s in testset:
        q = s["instruction"] + ("\n\n" + s["input"] if s["input"] else "")
        rows.append({"question_id": s["idx"], "question_body": q,
                     "answer1_body": s["response1"], "answer2_body": s["response2"],
                     "answer3_body": s["response2"] + " " + s["response1"],
                     "reference": {"text": s["response1"]}})
    write_jsonl(f"{d}/judgelm.jsonl", rows)
    write_jsonl(f"{d}/mmvet.jsonl", [
        {"question_id": r["question_id"], "question": r["question_body"],
         "answer1_body": r["answer2_body"],
         "answer": r["answer1_body"] + "<OR>" + r["answer2_body"]} for r in rows])


def test_run_every_mode_is_batch_invariant():
    # A whole local job on stories260K (context extended to fit PandaLM's prompts) in every
    # mode, twice with very different batch limits: valid JSONL, one record per sample in
    # question_id order, and byte-identical files (JudgeLM sampling, per-sample seeds).
    modes = {
        "pair": "mode: pair\nswap: both\nreference: embedded\n",
        "single": "mode: single\nreference: embedded\n",
        "multi": "mode: multi\nn_answers: 3\n",
        "mmvet": "mode: mmvet\n",
    }
    with tempfile.TemporaryDirectory() as d:
        judge_inputs(d)
        for mode, extra in modes.items():
            outs = []
            for i, limits in enumerate((["--max-batch-tokens", "512", "--max-seqs", "64"],
                                        ["--max-batch-tokens", "80", "--max-seqs", "5"])):
                spec = f"{d}/{mode}{i}.yaml"
                with open(spec, "w") as f:
                    f.write(f"kind: judge\nmodel: {os.path.abspath(STORIES_HF)}\n"
                            f"input: {'mmvet' if mode == 'mmvet' else 'judgelm'}.jsonl\n"
                            f"input_format: judgelm\n{extra}output: fast\n"
                            f"max_new_tokens: 12\ndeterministic: true\n"
                            f"output_path: out-{mode}{i}.jsonl\n")
                rc, _, err = ctl(["run", spec, "--context", "2048"] + limits)
                check(f"run {mode} {limits[1]}", rc == 0, err[-500:])
                outs.append(open(f"{d}/out-{mode}{i}.jsonl", "rb").read())
            recs = [json.loads(l) for l in outs[0].decode().splitlines()]
            ids = [r["question_id"] for r in recs]
            check(f"run {mode}: 50 records in order", len(recs) == 50 and ids == sorted(ids), ids)
            check(f"run {mode}: JudgeLM fields",
                  all({"pred_id", "pred_text", "pred_model_id", "tstamp"} <= r.keys()
                      for r in recs), recs[0].keys())
            check(f"run {mode}: identical across batch limits", outs[0] == outs[1],
                  "outputs differ")
        # labels give metrics at the end of the job
        with open(f"{d}/labels.yaml", "w") as f:
            f.write(f"kind: judge\nmodel: {os.path.abspath(STORIES_HF)}\ninput: judgelm.jsonl\n"
                    f"input_format: judgelm\nlabels: {os.path.abspath(PANDALM)}/testset-v1.json\n"
                    f"max_new_tokens: 4\noutput_path: out-labels.jsonl\n")
        rc, _, err = ctl(["run", f"{d}/labels.yaml", "--context", "2048"])
        check("run with labels prints metrics", rc == 0 and b"metrics (n = 50)" in err, err[-400:])
        # without the longer context the prompts do not fit: every sample is an error record
        rc, _, err = ctl(["run", f"{d}/single0.yaml"])
        recs = [json.loads(l) for l in open(f"{d}/out-single0.jsonl")]
        check("run: prompts beyond the context become error records",
              rc == 0 and b"50 errors" in err and len(recs) == 50, err[-300:])


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
