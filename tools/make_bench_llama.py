#!/usr/bin/env python3
"""make_bench_llama.py - writes a random-weight LLaMA of about 110M parameters (the stories110M
shape: dim 768, 12 layers, 12 heads, ffn 2048, vocab 32000, tied embeddings, fp32) as a Hugging
Face directory (config.json, model.safetensors, tokenizer.model) for the engine benchmarks.

The weights are random (N(0, 0.02), norms 1): speed does not depend on their values. Only numpy
is needed (pip install numpy); the file is written streaming, tensor by tensor.

Usage: python3 tools/make_bench_llama.py OUT_DIR [--dim 768 --layers 12 --heads 12 --ffn 2048]
"""
import argparse
import json
import os
import shutil
import struct

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--kv-heads", type=int, default=12)
    ap.add_argument("--ffn", type=int, default=2048)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--max-pos", type=int, default=1024)
    args = ap.parse_args()
    d, hd = args.dim, args.dim // args.heads
    kv = args.kv_heads * hd
    shapes = [("model.embed_tokens.weight", (args.vocab, d))]
    for l in range(args.layers):
        p = f"model.layers.{l}."
        shapes += [
            (p + "input_layernorm.weight", (d,)),
            (p + "self_attn.q_proj.weight", (d, d)),
            (p + "self_attn.k_proj.weight", (kv, d)),
            (p + "self_attn.v_proj.weight", (kv, d)),
            (p + "self_attn.o_proj.weight", (d, d)),
            (p + "post_attention_layernorm.weight", (d,)),
            (p + "mlp.gate_proj.weight", (args.ffn, d)),
            (p + "mlp.up_proj.weight", (args.ffn, d)),
            (p + "mlp.down_proj.weight", (d, args.ffn)),
        ]
    shapes.append(("model.norm.weight", (d,)))
    header, off = {}, 0
    for name, shape in shapes:
        n = int(np.prod(shape)) * 4
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    hbytes = json.dumps(header, separators=(",", ":")).encode()
    hbytes += b" " * ((8 - len(hbytes) % 8) % 8)
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(110)
    with open(os.path.join(args.out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(hbytes)))
        f.write(hbytes)
        for name, shape in shapes:
            if len(shape) == 1:
                a = np.ones(shape, dtype="<f4")
            else:
                a = (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype("<f4")
            f.write(a.tobytes())
    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "vocab_size": args.vocab, "hidden_size": d, "intermediate_size": args.ffn,
        "num_hidden_layers": args.layers, "num_attention_heads": args.heads,
        "num_key_value_heads": args.kv_heads, "max_position_embeddings": args.max_pos,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": True,
        "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32",
    }
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    shutil.copy(os.path.join(REPO, "tests/fixtures/tokenizer/llama/tokenizer.model"), args.out)
    n_params = sum(int(np.prod(s)) for _, s in shapes)
    print(f"{args.out}: {n_params / 1e6:.1f}M parameters, {off / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
