#!/usr/bin/env python3
"""gpu_judge_torch.py - the peer for bench/gpu_judge: the same judge workload through PyTorch and
transformers `generate` on the same card.

A LLaMA-7B-shaped LlamaForCausalLM with random bf16 weights is made on the GPU; the prompts are
bench/gpu_judge's (a shared 100-token template, then random tokens, 600-800 tokens in all); each
batch is left-padded and decoded greedily for exactly 5 (fast) or 100 (detailed) new tokens.
Prints "TORCH <mode>_samples_per_s <x>" lines, as tests/gpu/run.sh expects. Runs a subset
(--samples) because transformers is far slower; samples/s is what is compared.
"""
import argparse
import sys
import time


def prompt_len(sample):
    x = (sample * 2654435761 + 12345) & 0xFFFFFFFF
    return 600 + x % 201


def prompt_token(sample, i):
    if i < 100:
        return 3 + (i * 7919) % 31997
    x = ((sample * 2246822519) & 0xFFFFFFFF) ^ ((i * 3266489917) & 0xFFFFFFFF)
    x ^= x >> 15
    return 3 + x % 31997


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--mode", choices=["fast", "detailed", "both"], default="both")
    args = ap.parse_args()
    try:
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM
    except ImportError as e:
        print(f"gpu_judge_torch: {e}: skipped")
        return 0
    if not torch.cuda.is_available():
        print("gpu_judge_torch: no CUDA device: skipped")
        return 0
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                      num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                      max_position_embeddings=2048, pad_token_id=0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
    modes = [("fast", 5), ("detailed", 100)]
    for name, n_gen in modes:
        if args.mode not in ("both", name):
            continue
        t0 = time.time()
        for start in range(0, args.samples, args.batch):
            ids = [[prompt_token(s, i) for i in range(prompt_len(s))]
                   for s in range(start, min(start + args.batch, args.samples))]
            width = max(len(p) for p in ids)
            inp = torch.zeros((len(ids), width), dtype=torch.long)
            mask = torch.zeros((len(ids), width), dtype=torch.long)
            for r, p in enumerate(ids):
                inp[r, width - len(p):] = torch.tensor(p)
                mask[r, width - len(p):] = 1
            with torch.no_grad():
                model.generate(input_ids=inp.cuda(), attention_mask=mask.cuda(), do_sample=False,
                               max_new_tokens=n_gen, min_new_tokens=n_gen, pad_token_id=0)
        torch.cuda.synchronize()
        dt = time.time() - t0
        print(f"TORCH {name}_samples {args.samples}")
        print(f"TORCH {name}_samples_per_s {args.samples / dt:.1f}")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
