#!/usr/bin/env python3
# make_tiny_llamas.py - generates the tiny random-weight LLaMA checkpoints in tests/fixtures/tiny/.
#
# What: seven LlamaForCausalLM checkpoints (hidden 32-64, 2-4 layers, random weights from fixed
# torch seeds) covering every weight layout the C engine reads: sharded and single PyTorch .bin
# zip-pickles (as transformers 4.28 / torch.save wrote them, the format of BAAI/JudgeLM-7B),
# single and sharded safetensors; bf16, f16 and f32; tied and untied embeddings; MHA, GQA and
# MQA; the real 32000-piece LLaMA vocabulary and llama2.c's 512-piece one; non-default
# rope_theta and both rms_norm_eps values. Each directory gets config.json, tokenizer.model,
# reference.json (config facts, per-tensor FNV-1a 64 hashes of the stored bytes, prompts with
# their sentencepiece ids) and logits.f32 (reference logits of every position of every prompt).
#
# Why: the C weight readers check bit-identity against the hashes, and the C forward pass
# checks its logits against transformers' eager float32 forward over the same stored weights
# (f16/bf16 weights are upcast to f32 first, which is what the engine does).
#
# The script checks itself: it reloads every directory with transformers' from_pretrained and
# requires the same logits as before saving (max abs diff < 1e-5), recomputes the logits with
# an independent float64 implementation written here (catches config keys that transformers
# silently ignores), re-reads each tensor's bytes straight from the files (zip members and
# safetensors offsets, not via torch) for the hashes, and measures how much the logits move
# when a typical engine bug is simulated ("sensitivity" in reference.json).
#
# Rerun (from the repository root; output is byte-identical on rerun on the same machine):
#   pip install torch transformers safetensors sentencepiece
#   python3 tools/make_tiny_llamas.py --out tests/fixtures/tiny
# Written against torch 2.15 and transformers 5.24 (transformers 5 cannot write .bin files any
# more, so the .bin files are written here with torch.save exactly as transformers 4.28's
# save_pretrained(safe_serialization=False) / torch.save(model.state_dict()) did).

import argparse
import collections
import io
import json
import math
import os
import pickle
import pickletools
import shutil
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np
import safetensors
import safetensors.torch
import sentencepiece as spm
import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

REPO = Path(__file__).resolve().parent.parent
LLAMA_TOKENIZER = REPO / "tests/fixtures/tokenizer/llama/tokenizer.model"
TOK512 = REPO / "tests/fixtures/stories260K/tok512.model"
SEED = 20240607
SIZE_LIMIT = 20 * 1000 * 1000

DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
ST_NAMES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}
CFG_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}
STORAGE_DTYPES = {"FloatStorage": "F32", "HalfStorage": "F16", "BFloat16Storage": "BF16"}
ELEM_SIZE = {"F32": 4, "F16": 2, "BF16": 2}

PROMPTS_32K = ["Hello, judge!", "Judge: façade", "Assistant 1 is better."]
PROMPTS_512 = ["Once upon a time, there was", "Lily saw a big red ball.", "Tom's café."]

# config_style: "4.28" = JudgeLM's config.json (no num_key_value_heads, rope_theta, rope_scaling);
#               "4.3x" = Llama-2-era config.json (num_key_value_heads, rope_theta, rope_scaling null).
# format: bin-sharded-4.28 = shards are plain dicts in 4.28 state_dict order with per-layer
#         rotary_emb.inv_freq (float32) buffers; bin = torch.save(model.state_dict())
#         (OrderedDict with _metadata); bin-sharded = OrderedDict slices of model.state_dict(),
#         each keeping _metadata; safetensors / safetensors-sharded as save_pretrained writes them.
VARIANTS = [
    dict(name="v32k-mha-untied-bf16-bin-sharded", vocab=32000, hidden=64, layers=2, heads=4,
         kv_heads=4, ffn=172, tied=False, dtype="bf16", theta=10000.0, eps=1e-6, max_pos=2048,
         format="bin-sharded-4.28", config_style="4.28", shard_bytes=4096000 + 99000 + 20000),
    dict(name="v32k-gqa-tied-f16-safetensors", vocab=32000, hidden=32, layers=2, heads=4,
         kv_heads=2, ffn=88, tied=True, dtype="f16", theta=10000.0, eps=1e-5, max_pos=4096,
         format="safetensors", config_style="4.3x"),
    dict(name="v512-gqa-tied-f32-safetensors-theta500k", vocab=512, hidden=64, layers=2,
         heads=4, kv_heads=2, ffn=172, tied=True, dtype="f32", theta=500000.0, eps=1e-5,
         max_pos=512, format="safetensors", config_style="4.3x"),
    dict(name="v512-mha-untied-f32-bin", vocab=512, hidden=64, layers=2, heads=2, kv_heads=2,
         ffn=160, tied=False, dtype="f32", theta=10000.0, eps=1e-6, max_pos=512, format="bin",
         config_style="4.3x"),
    dict(name="v512-gqa-untied-f32-safetensors-sharded", vocab=512, hidden=64, layers=3,
         heads=8, kv_heads=2, ffn=192, tied=False, dtype="f32", theta=10000.0, eps=1e-5,
         max_pos=512, format="safetensors-sharded", config_style="4.3x", shard_bytes=450000),
    dict(name="v512-mha-tied-f16-bin", vocab=512, hidden=64, layers=4, heads=4, kv_heads=4,
         ffn=150, tied=True, dtype="f16", theta=10000.0, eps=1e-5, max_pos=512, format="bin",
         config_style="4.3x"),
    dict(name="v512-mqa-untied-bf16-bin-sharded", vocab=512, hidden=64, layers=3, heads=4,
         kv_heads=1, ffn=128, tied=False, dtype="bf16", theta=10000.0, eps=1e-6, max_pos=512,
         format="bin-sharded", config_style="4.3x", shard_bytes=250000),
]

# Initialisation: N(0, std) per tensor kind, norms 1 + 0.1 N(0, 1). The projections are larger
# than the usual 0.02 so that attention is peaked and every component (RoPE, its theta, GQA
# head mapping, causal mask, norms, eps) moves the logits by far more than f32 rounding; see
# "sensitivity" in reference.json.
INIT_STD = {"embed_tokens": 0.02, "q_proj": 0.25, "k_proj": 0.25, "v_proj": 0.15,
            "o_proj": 0.15, "gate_proj": 0.15, "up_proj": 0.15, "down_proj": 0.15,
            "lm_head": 0.1}


# ---------------------------------------------------------------------------------------------
# helpers

def fnv1a64(data):
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


def tensor_bytes(t):
    t = t.detach().contiguous().cpu()
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""


def make_config(v):
    return LlamaConfig(
        vocab_size=v["vocab"], hidden_size=v["hidden"], intermediate_size=v["ffn"],
        num_hidden_layers=v["layers"], num_attention_heads=v["heads"],
        num_key_value_heads=v["kv_heads"], max_position_embeddings=v["max_pos"],
        rms_norm_eps=v["eps"], rope_theta=v["theta"], tie_word_embeddings=v["tied"],
        hidden_act="silu", attention_dropout=0.0, attention_bias=False, mlp_bias=False,
        bos_token_id=1, eos_token_id=2, pad_token_id=0 if v["config_style"] == "4.28" else None)


def config_json(v):
    """config.json in the style of the transformers version the variant imitates."""
    c = collections.OrderedDict()
    c["architectures"] = ["LlamaForCausalLM"]
    if v["config_style"] != "4.28":
        c["attention_bias"] = False
    c["bos_token_id"] = 1
    c["eos_token_id"] = 2
    c["hidden_act"] = "silu"
    c["hidden_size"] = v["hidden"]
    c["initializer_range"] = 0.02
    c["intermediate_size"] = v["ffn"]
    c["max_position_embeddings"] = v["max_pos"]
    c["model_type"] = "llama"
    c["num_attention_heads"] = v["heads"]
    c["num_hidden_layers"] = v["layers"]
    if v["config_style"] == "4.28":
        assert v["kv_heads"] == v["heads"] and v["theta"] == 10000.0
        c["pad_token_id"] = 0
    else:
        c["num_key_value_heads"] = v["kv_heads"]
        c["pretraining_tp"] = 1
    c["rms_norm_eps"] = v["eps"]
    if v["config_style"] != "4.28":
        c["rope_scaling"] = None
        c["rope_theta"] = v["theta"]
    c["tie_word_embeddings"] = v["tied"]
    c["torch_dtype"] = CFG_NAMES[DTYPES[v["dtype"]]]
    c["use_cache"] = True
    c["vocab_size"] = v["vocab"]
    return json.dumps(c, indent=2) + "\n"


def init_weights(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied lm_head is not listed separately
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                kind = name.split(".")[-2]
                p.copy_(INIT_STD[kind] * torch.randn(p.shape, generator=g))


def inv_freq(head_dim, theta):
    # as transformers computes it (float32)
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))


# ---------------------------------------------------------------------------------------------
# writers

def state_dict_428(model, v):
    """Plain dict in transformers 4.28 LlamaForCausalLM.state_dict() order, with the per-layer
    rotary_emb.inv_freq buffers 4.28 registered as persistent (float32 in real checkpoints:
    Llama-2-7b-hf's .bin index has total_size 13476839424 = 2 * params + 32 * 64 * 4)."""
    sd = model.state_dict()
    hd = v["hidden"] // v["heads"]
    out = {"model.embed_tokens.weight": sd["model.embed_tokens.weight"]}
    for i in range(v["layers"]):
        p = "model.layers.%d." % i
        for k in ["self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
                  "self_attn.o_proj.weight"]:
            out[p + k] = sd[p + k]
        out[p + "self_attn.rotary_emb.inv_freq"] = inv_freq(hd, v["theta"])
        # 4.28's LlamaMLP declared gate_proj, down_proj, up_proj in that order
        for k in ["mlp.gate_proj.weight", "mlp.down_proj.weight", "mlp.up_proj.weight",
                  "input_layernorm.weight", "post_attention_layernorm.weight"]:
            out[p + k] = sd[p + k]
    out["model.norm.weight"] = sd["model.norm.weight"]
    out["lm_head.weight"] = sd["lm_head.weight"]
    return out


def shard(state, max_bytes):
    """transformers 4.28 shard_checkpoint(): fill shards in order, a new one when the next
    tensor would overflow max_bytes; a tensor sharing storage with an earlier one goes with it."""
    shards, last, total, where = [[]], 0, 0, {}
    for k, t in state.items():
        sid = t.untyped_storage().data_ptr()
        if sid in where:
            shards[where[sid]].append(k)
            continue
        n = t.numel() * t.element_size()
        if last + n > max_bytes and shards[-1]:
            shards.append([])
            last = 0
        shards[-1].append(k)
        last += n
        total += n
        where[sid] = len(shards) - 1
    return shards, total


def write_index(path, weight_map, total):
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def save_weights(model, v, d):
    sd = model.state_dict()  # OrderedDict with _metadata; tied lm_head aliases embed_tokens
    dt = DTYPES[v["dtype"]]
    fmt = v["format"]
    if fmt.startswith("bin"):
        # cast every floating tensor (not the 4.28 inv_freq buffers, kept float32) to the
        # storage dtype; keep aliasing (tied weights share one storage in the file)
        cast = {}
        def c(t):
            key = t.untyped_storage().data_ptr()
            if key not in cast:
                cast[key] = t.detach().to(dt).contiguous()
            return cast[key].view(t.shape)
        if fmt == "bin-sharded-4.28":
            state = state_dict_428(model, v)
            state = {k: (t if k.endswith("inv_freq") else c(t)) for k, t in state.items()}
            groups, total = shard(state, v["shard_bytes"])
            parts = [{k: state[k] for k in g} for g in groups]  # plain dicts, as 4.28 did
        else:
            state = collections.OrderedDict((k, c(t)) for k, t in sd.items())
            state._metadata = sd._metadata
            if fmt == "bin":
                parts = [state]
            else:
                groups, total = shard(state, v["shard_bytes"])
                parts = []
                for g in groups:
                    part = collections.OrderedDict((k, state[k]) for k in g)
                    part._metadata = sd._metadata
                    parts.append(part)
        if len(parts) == 1:
            torch.save(parts[0], d / "pytorch_model.bin")
            return ["pytorch_model.bin"]
        n = len(parts)
        names = ["pytorch_model-%05d-of-%05d.bin" % (i + 1, n) for i in range(n)]
        wm = {}
        for name, part in zip(names, parts):
            torch.save(part, d / name)
            wm.update({k: name for k in part})
        write_index(d / "pytorch_model.bin.index.json", wm, total)
        return names
    # safetensors: what save_pretrained writes (tied lm_head.weight dropped, metadata format=pt)
    state = collections.OrderedDict(
        (k, t.detach().to(dt).contiguous()) for k, t in sd.items()
        if not (v["tied"] and k == "lm_head.weight"))
    if fmt == "safetensors":
        safetensors.torch.save_file(state, d / "model.safetensors", metadata={"format": "pt"})
        return ["model.safetensors"]
    groups, total = shard(state, v["shard_bytes"])
    n = len(groups)
    names = ["model-%05d-of-%05d.safetensors" % (i + 1, n) for i in range(n)]
    wm = {}
    for name, g in zip(names, groups):
        safetensors.torch.save_file({k: state[k] for k in g}, d / name, metadata={"format": "pt"})
        wm.update({k: name for k in g})
    write_index(d / "model.safetensors.index.json", wm, total)
    return names


# ---------------------------------------------------------------------------------------------
# readers that look at the files' bytes directly (not via torch.load / safetensors)

class _Rebuilt:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


class _RecordingUnpickler(pickle.Unpickler):
    ALLOWED = {("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"),
               ("torch", "FloatStorage"), ("torch", "HalfStorage"), ("torch", "BFloat16Storage")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError("unexpected global %s.%s" % (module, name))
        if name == "OrderedDict":
            return collections.OrderedDict
        if name == "_rebuild_tensor_v2":
            return lambda st, off, size, stride, *rest: _Rebuilt(st, off, size, stride)
        return STORAGE_DTYPES[name]

    def persistent_load(self, pid):
        kind, dtype, key, location, numel = pid
        assert kind == "storage" and location == "cpu"
        return (dtype, key, numel)


def raw_tensors_bin(path, pickle_stats):
    """{name: (dtype, shape, bytes)} from a torch zip: data.pkl decoded by a restricted
    unpickler, bytes sliced out of the archive's data/<key> members."""
    z = zipfile.ZipFile(path)
    names = z.namelist()
    pkl = [n for n in names if n.endswith("/data.pkl")]
    assert len(pkl) == 1, names
    prefix = pkl[0][: -len("data.pkl")]
    raw = z.read(pkl[0])
    for op, arg, _ in pickletools.genops(raw):
        pickle_stats["opcodes"][op.name] = pickle_stats["opcodes"].get(op.name, 0) + 1
        if op.name == "GLOBAL":
            pickle_stats["globals"].add(arg.replace(" ", "."))
    pickle_stats["prefixes"].add(prefix)
    pickle_stats["members"].update(n[len(prefix):] for n in names
                                   if not n[len(prefix):].startswith("data/"))
    obj = _RecordingUnpickler(io.BytesIO(raw)).load()
    pickle_stats["top"].add(type(obj).__name__ + (" with _metadata" if hasattr(obj, "_metadata")
                                                  else ""))
    for info in z.infolist():  # members are stored, and data/ members 64-byte aligned
        assert info.compress_type == zipfile.ZIP_STORED
    out = collections.OrderedDict()
    for k, r in obj.items():
        dtype, key, numel = r.storage
        es = ELEM_SIZE[dtype]
        blob = z.read(prefix + "data/" + key)
        assert len(blob) == numel * es
        n = int(np.prod(r.size)) if r.size else 1
        exp, s = [], 1  # contiguous strides
        for dim in reversed(r.size):
            exp.insert(0, s)
            s *= dim
        assert list(r.stride) == exp, (k, r.stride)
        out[k] = (dtype, list(r.size), blob[r.offset * es:(r.offset + n) * es])
    return out


def raw_tensors_safetensors(path):
    data = path.read_bytes()
    (hlen,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + hlen])
    base = 8 + hlen
    out = collections.OrderedDict()
    for k, info in sorted(header.items(), key=lambda kv: kv[1].get("data_offsets", [0])[0]
                          if kv[0] != "__metadata__" else -1):
        if k == "__metadata__":
            continue
        a, b = info["data_offsets"]
        out[k] = (info["dtype"], info["shape"], data[base + a:base + b])
    return out


def to_torch(dtype, shape, blob):
    tdt = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}[dtype]
    return torch.frombuffer(bytearray(blob), dtype=tdt).reshape(shape).clone()


# ---------------------------------------------------------------------------------------------
# an independent float64 LLaMA forward (and deliberately broken variants of it)

def ref_forward(w, v, ids, bug=None):
    H, L, nh, nkv = v["hidden"], v["layers"], v["heads"], v["kv_heads"]
    hd = H // nh
    eps, theta = v["eps"], v["theta"]
    if bug == "eps_swapped":
        eps = 1e-5 if eps == 1e-6 else 1e-6
    if bug == "theta_wrong":
        theta = 10000.0 if theta != 10000.0 else 500000.0
    f = lambda k: w[k].double()

    def norm(x, wt):
        if bug == "norm_weight_ignored":
            wt = torch.ones_like(wt)
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * wt

    T = len(ids)
    pos = torch.arange(T, dtype=torch.float64)
    invf = 1.0 / theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    ang = pos[:, None] * invf[None, :]  # [T, hd/2]
    cos, sin = torch.cos(ang), torch.sin(ang)

    def rope(x):  # x [heads, T, hd]
        if bug == "no_rope":
            return x
        if bug == "rope_interleaved":  # Meta / llama2.c pairing (2i, 2i+1)
            a, b = x[..., 0::2], x[..., 1::2]
            out = torch.empty_like(x)
            out[..., 0::2] = a * cos - b * sin
            out[..., 1::2] = a * sin + b * cos
            return out
        a, b = x[..., : hd // 2], x[..., hd // 2:]  # HF pairing (i, i + hd/2)
        return torch.cat([a * cos - b * sin, a * sin + b * cos], -1)

    x = f("model.embed_tokens.weight")[torch.tensor(ids)]
    for i in range(L):
        p = "model.layers.%d." % i
        h = norm(x, f(p + "input_layernorm.weight"))
        q = (h @ f(p + "self_attn.q_proj.weight").T).view(T, nh, hd).transpose(0, 1)
        k = (h @ f(p + "self_attn.k_proj.weight").T).view(T, nkv, hd).transpose(0, 1)
        vv = (h @ f(p + "self_attn.v_proj.weight").T).view(T, nkv, hd).transpose(0, 1)
        q, k = rope(q), rope(k)
        grp = nh // nkv
        kvh = [(hh % nkv) if bug == "gqa_mapping_modulo" else (hh // grp) for hh in range(nh)]
        k, vv = k[kvh], vv[kvh]
        s = q @ k.transpose(1, 2) / math.sqrt(hd)
        if bug != "no_causal_mask":
            s = s.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
        a = torch.softmax(s, -1) @ vv  # [nh, T, hd]
        x = x + a.transpose(0, 1).reshape(T, H) @ f(p + "self_attn.o_proj.weight").T
        h = norm(x, f(p + "post_attention_layernorm.weight"))
        g = h @ f(p + "mlp.gate_proj.weight").T
        u = h @ f(p + "mlp.up_proj.weight").T
        if bug == "gate_up_swapped":
            g, u = u, g
        x = x + (torch.nn.functional.silu(g) * u) @ f(p + "mlp.down_proj.weight").T
    x = norm(x, f("model.norm.weight"))
    head = "model.embed_tokens.weight" if (v["tied"] or bug == "untied_head_ignored") \
        else "lm_head.weight"
    if bug == "untied_head_ignored" and v["tied"]:
        return None
    return x @ f(head).T


BUGS = ["no_rope", "rope_interleaved", "theta_wrong", "eps_swapped", "norm_weight_ignored",
        "no_causal_mask", "gqa_mapping_modulo", "gate_up_swapped", "untied_head_ignored"]


# ---------------------------------------------------------------------------------------------

def hf_logits(model, prompts):
    out = []
    with torch.no_grad():
        for p in prompts:
            out.append(model(torch.tensor([p["ids"]])).logits[0].float())
    return out


def build_variant(v, idx, out_dir, pickle_stats):
    d = out_dir / v["name"]
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    dt = DTYPES[v["dtype"]]

    cfg = make_config(v)
    model = LlamaForCausalLM._from_config(cfg, attn_implementation="eager", dtype=torch.float32)
    init_weights(model, SEED + idx)
    with torch.no_grad():  # round to the storage dtype: the stored weights are the reference
        for p in model.parameters():
            p.copy_(p.to(dt).float())
    model.eval()

    tok_src = LLAMA_TOKENIZER if v["vocab"] == 32000 else TOK512
    shutil.copyfile(tok_src, d / "tokenizer.model")
    sp = spm.SentencePieceProcessor(model_file=str(d / "tokenizer.model"))
    assert sp.vocab_size() == v["vocab"] and sp.bos_id() == 1 and sp.eos_id() == 2
    prompts = []
    for text in (PROMPTS_32K if v["vocab"] == 32000 else PROMPTS_512):
        ids = [sp.bos_id()] + sp.encode(text)
        assert 5 <= len(ids) <= 12, (text, len(ids))
        prompts.append({"text": text, "ids": ids, "n_positions": len(ids)})

    before = hf_logits(model, prompts)

    files = save_weights(model, v, d)
    (d / "config.json").write_text(config_json(v))
    if v["config_style"] == "4.28":
        (d / "generation_config.json").write_text(json.dumps(collections.OrderedDict(
            [("_from_model_config", True), ("bos_token_id", 1), ("eos_token_id", 2),
             ("pad_token_id", 0)]), indent=2) + "\n")

    # 1. transformers reloads the directory and gives the same logits
    re = LlamaForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager")
    re.eval()
    rp = re.config.rope_parameters
    assert rp["rope_theta"] == v["theta"] and rp.get("rope_type", "default") == "default", rp
    assert re.config.num_key_value_heads == v["kv_heads"] and re.config.rms_norm_eps == v["eps"]
    assert re.config.tie_word_embeddings == v["tied"]
    after = hf_logits(re, prompts)
    diff = max((a - b).abs().max().item() for a, b in zip(before, after))
    assert diff < 1e-5, (v["name"], diff)

    # 2. the stored bytes, read without torch, hashed
    tensors = collections.OrderedDict()
    weights = {}
    for fname in files:
        raw = raw_tensors_bin(d / fname, pickle_stats) if fname.endswith(".bin") \
            else raw_tensors_safetensors(d / fname)
        for k, (dtype, shape, blob) in raw.items():
            assert k not in tensors, k
            tensors[k] = collections.OrderedDict(
                [("dtype", dtype), ("shape", shape), ("fnv1a64", fnv1a64(blob)),
                 ("file", fname)])
            weights[k] = to_torch(dtype, shape, blob)
    # every stored tensor matches the model (inv_freq: transformers' formula)
    msd = model.state_dict()
    for k, t in weights.items():
        if k.endswith("rotary_emb.inv_freq"):
            assert torch.equal(t, inv_freq(v["hidden"] // v["heads"], v["theta"])), k
            continue
        assert t.dtype == dt and torch.equal(t.float(), msd[k]), k
    expect = set(msd) - ({"lm_head.weight"} if v["tied"] and "safetensors" in v["format"] else set())
    assert expect == {k for k in weights if not k.endswith("inv_freq")}, v["name"]

    # 3. independent float64 forward from the stored bytes agrees with transformers
    ref_diff = 0.0
    sens = collections.OrderedDict()
    for p, lg in zip(prompts, before):
        r = ref_forward(weights, v, p["ids"])
        ref_diff = max(ref_diff, (r - lg.double()).abs().max().item())
    assert ref_diff < 1e-4, (v["name"], ref_diff)
    for bug in BUGS:
        if bug == "gqa_mapping_modulo" and v["kv_heads"] in (1, v["heads"]):
            continue
        if bug == "untied_head_ignored" and v["tied"]:
            continue
        m = 0.0
        for p, lg in zip(prompts, before):
            m = max(m, (ref_forward(weights, v, p["ids"], bug) - lg.double()).abs().max().item())
        sens[bug] = float("%.4g" % m)

    logits = np.concatenate([lg.numpy().astype("<f4") for lg in before], 0)
    (d / "logits.f32").write_bytes(logits.tobytes())

    hd = v["hidden"] // v["heads"]
    ref = collections.OrderedDict()
    ref["generated_by"] = "tools/make_tiny_llamas.py (torch %s, transformers %s, seed %d)" % (
        torch.__version__, transformers.__version__, SEED + idx)
    ref["config"] = collections.OrderedDict([
        ("vocab", v["vocab"]), ("hidden", v["hidden"]), ("layers", v["layers"]),
        ("heads", v["heads"]), ("kv_heads", v["kv_heads"]), ("head_dim", hd), ("ffn", v["ffn"]),
        ("tied", v["tied"]), ("dtype", ST_NAMES[dt]), ("rope_theta", v["theta"]),
        ("eps", v["eps"]), ("max_pos", v["max_pos"]), ("bos", 1), ("eos", 2),
        ("format", v["format"]), ("files", files)])
    ref["tensors"] = tensors
    ref["prompts"] = prompts
    ref["logits_file"] = "logits.f32"
    ref["logits_layout"] = "[prompt][position][vocab] float32 little-endian"
    ref["logits_note"] = ("prompts are concatenated: prompt i starts at float index "
                          "vocab * sum(n_positions of prompts before i); logits are "
                          "transformers LlamaForCausalLM (eager attention, float32 compute, "
                          "stored weights upcast to float32), one forward pass per prompt")
    ref["check"] = collections.OrderedDict([
        ("reload_max_abs_diff", diff), ("float64_reference_max_abs_diff", float("%.3g" % ref_diff)),
        ("logits_max_abs", float("%.4g" % logits.__abs__().max()))])
    ref["sensitivity"] = sens
    ref["sensitivity_note"] = ("max abs logit change when the float64 reference simulates a bug; "
                               "a tolerance well below the smallest entry catches all of them")
    (d / "reference.json").write_text(json.dumps(ref, indent=1) + "\n")

    for f in d.iterdir():  # safetensors creates its files 0600
        f.chmod(0o644)
    size = sum(f.stat().st_size for f in d.iterdir())
    print("%-44s %-20s %-4s %9d bytes  reload diff %.1e  f64 diff %.1e  min sens %.3g" % (
        v["name"], v["format"], v["dtype"], size, diff, ref_diff, min(sens.values())),
        flush=True)
    return size


def main():
    ap = argparse.ArgumentParser(description="Generate tests/fixtures/tiny (see the header comment).")
    ap.add_argument("--out", default=str(REPO / "tests/fixtures/tiny"))
    ap.add_argument("--only", help="build only the variant with this name")
    args = ap.parse_args()
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stats = {"opcodes": {}, "globals": set(), "prefixes": set(), "members": set(), "top": set()}
    total = 0
    for i, v in enumerate(VARIANTS):
        if args.only and v["name"] != args.only:
            continue
        total += build_variant(v, i, out, stats)
    print("total %d bytes in variant directories" % total)
    print("pickle opcodes:", ", ".join("%s(%d)" % kv for kv in sorted(stats["opcodes"].items())))
    print("pickle globals:", ", ".join(sorted(stats["globals"])))
    print("top-level objects:", ", ".join(sorted(stats["top"])))
    print("zip members besides data/N:", ", ".join(sorted(stats["members"])))
    if not args.only:
        assert total < SIZE_LIMIT, total


if __name__ == "__main__":
    main()
