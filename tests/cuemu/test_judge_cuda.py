"""test_judge_cuda.py - the whole judging path on the CUDA backend, run on cuemu: `judgectl run
--device cuda` (tests/cuemu/README.md) goes through sched_judge, the scheduler's device sampling
and device logprobs, and the judge's score parsing and probabilities.

Usage: test_judge_cuda.py BINDIR   (the judgectl of a CUDA=emu build)

Oracles:
- greedy judging gives the same file with device sampling and logprobs as with
  JUDGED_DEVICE_SAMPLING=0 (logits copied back, the host's sampler and kern_cpu_logprobs): the
  same tokens, and on cuemu the same logprob bits;
- with no GPU (CUEMU_DEVICES=0) `--device cuda` says "falling back to the CPU backend" once and
  writes exactly what `--device cpu` writes;
- `--device cuda:0+1` (one engine over two emulated GPUs, tensor parallel over NCCL) generates
  the same judgments as one GPU;
- a bad --device is refused before anything runs.
"""
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# 2 layers, 4 heads of 16, LLaMA's 32,000-piece tokenizer: short prompts, so the emulated
# kernels take seconds (stories260K's 512 pieces make the template four times longer)
MODEL = os.path.join(ROOT, "tests/fixtures/tiny/v32k-mha-untied-bf16-bin-sharded")
PANDALM = os.path.join(ROOT, "tests/fixtures/pandalm/testset-v1.json")
FAILED = []


def check(name, ok, detail=""):
    print(f"{'ok  ' if ok else 'FAIL'} {name}" + ("" if ok else f": {detail}"))
    if not ok:
        FAILED.append(name)


def run(bindir, spec, *extra, env=None):
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run([os.path.join(bindir, "judgectl"), "run", spec, "--context", "2048",
                        "--kv-mib", "64", *extra], capture_output=True, env=e, timeout=900)
    return p.returncode, p.stderr.decode()


def main():
    bindir = sys.argv[1]
    # two short judgelm-format samples from PandaLM's first answers (about 230 prompt tokens)
    samples = json.load(open(PANDALM))[:2]
    with tempfile.TemporaryDirectory() as d:
        with open(f"{d}/in.jsonl", "w") as f:
            for s in samples:
                f.write(json.dumps({"question_id": s["idx"], "question_body": "Be concise.",
                                    "answer1_body": s["response1"][:60],
                                    "answer2_body": s["response2"][:60]}) + "\n")
        outs = {}
        for name in ("dev", "host", "cpu", "fallback", "tp"):
            with open(f"{d}/{name}.yaml", "w") as f:
                f.write(f"kind: judge\nmodel: {MODEL}\nmodel_id: m\ninput: in.jsonl\n"
                        "input_format: judgelm\nswap: both\nmax_new_tokens: 8\nsampling: greedy\n"
                        "deterministic: true\n"
                        f"output_path: out-{name}.jsonl\n")
        runs = {
            "dev": (["--device", "cuda"], {}),
            "host": (["--device", "cuda"], {"JUDGED_DEVICE_SAMPLING": "0"}),
            "cpu": (["--device", "cpu"], {}),
            "fallback": (["--device", "cuda"], {"CUEMU_DEVICES": "0"}),
            "tp": (["--device", "cuda:0+1"], {"CUEMU_DEVICES": "2"}),
        }
        for name, (extra, env) in runs.items():
            rc, err = run(bindir, f"{d}/{name}.yaml", *extra, env=env)
            check(f"judgectl run ({name}) exits 0", rc == 0, err[-800:])
            outs[name] = (open(f"{d}/out-{name}.jsonl", "rb").read() if rc == 0 else b"", err)
        recs = [json.loads(line) for line in outs["dev"][0].decode().splitlines()]
        check("2 records judged in both orders, no errors",
              len(recs) == 2 and all(r.get("error") is None and r.get("error_swapped") is None
                                     and r["pred_text"] for r in recs),
              [(r.get("error"), r.get("pred_text")) for r in recs])
        check("the CUDA engine ran", "falling back" not in outs["dev"][1], outs["dev"][1][-400:])
        check("device sampling and logprobs = the host's on the same logits",
              outs["dev"][0] == outs["host"][0], "the files differ")
        fb_err = outs["fallback"][1]
        check("no GPU: one fallback line", fb_err.count("falling back to the CPU backend") == 1,
              fb_err[-400:])
        check("no GPU: the CPU's records", outs["fallback"][0] == outs["cpu"][0],
              "the files differ")
        tp = [json.loads(line) for line in outs["tp"][0].decode().splitlines()]
        check("one engine over two GPUs judges as one GPU does",
              [(r["pred_text"], r["pred_text_swapped"]) for r in tp] ==
              [(r["pred_text"], r["pred_text_swapped"]) for r in recs],
              [r["pred_text"] for r in tp])
        check("the tensor-parallel engine ran", "tensor parallel over 2 GPUs" in outs["tp"][1],
              outs["tp"][1][-400:])
        p = subprocess.run([os.path.join(bindir, "judgectl"), "run", f"{d}/dev.yaml", "--device",
                            "tpu"], capture_output=True)
        check("--device tpu is refused", p.returncode == 2 and b"--device: 'tpu'" in p.stderr,
              p.stderr.decode())
    print(f"judge-cuda: {len(FAILED)} failed")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
