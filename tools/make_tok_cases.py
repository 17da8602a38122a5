#!/usr/bin/env python3
"""make_tok_cases.py - writes the tokenizer oracle cases that tests/unit/test_tokenizer.c checks.

For each model it writes seeded random strings with the ids sentencepiece's EncodeAsIds gives them
(no BOS) and sentencepiece's DecodeIds of those ids, plus random id sequences with their DecodeIds,
as JSON lines in tests/fixtures/tokenizer/sp_cases_NAME.jsonl:

  {"text": "...", "ids": [...], "decoded": "..."}      text is valid UTF-8
  {"hex": "61ff62", "ids": [...], "decoded": "..."}    text bytes, with malformed UTF-8
  {"decode_ids": [...], "decoded": "..."}              decode only

Models: the LLaMA tokenizer.model, stories260K's tok512.model, and variants of tok512 written to
variants/NAME.model that each change one feature (USER_DEFINED pieces, UNUSED pieces, no byte
fallback, no dummy prefix, whitespace kept, whitespace not escaped), and 36 random small models
(sp_cases_random_models.jsonl, one model per line, base64) that mix all of those with score ties
and signed zeros, plus one model built to make signed zeros and denormal scores decide merges. It also writes
tokenizer.json versions of tok512 (variants/tok512_hf*.json: the LLaMA-2 normalizer, and Metaspace
pre-tokenizers) with ids from the Hugging Face tokenizers package, as hf_cases_NAME.jsonl.

Usage: tools/make_tok_cases.py [--seed N] [--out-dir tests/fixtures/tokenizer]
Needs the sentencepiece and tokenizers pip packages. Deterministic for a given seed and versions
(generated with sentencepiece 0.2.3, tokenizers 0.23.3).
"""
import argparse
import base64
import json
import os
import random
import sys

import sentencepiece as spm
import sentencepiece.sentencepiece_model_pb2 as pb
import tokenizers

MODELS = {
    "llama": "tests/fixtures/tokenizer/llama/tokenizer.model",
    "tok512": "tests/fixtures/stories260K/tok512.model",
}

WORDS = (
    "the of and to in is was he for it with as his on be at by I had not are but from or have an "
    "they which one you were her all she there would their we him been has when who will more no "
    "if out so said what up its about into than them can only other new some could time these two "
    "may then do first any my now such like our over man me even most made after also did many "
    "before must through back years where much your way well down should because each just those "
    "people Mr how too little state good very make world still own see men work long get here "
    "between both life being under never day same another know while last might us great old year "
    "off come since against go came right used take three Once upon a time there was little girl "
    "named Lily Tim Sue happy sad dog cat ball park played tree bird sun day mom dad said loved "
    "judge score answer question correct helpful harmless response assistant user rating 1 2 3 4 5 "
    "10 42 100 2024 3.14 1,000 0x1F"
).split()

MULTI = [
    "héllo", "naïve", "café", "über", "straße", "Ærø", "ÅNGSTRÖM", "ça", "señor", "ﬁnal",
    "Привет", "мир", "Ελληνικά", "שלום", "مرحبا", "नमस्ते", "สวัสดี", "გამარჯობა", "Բարեւ",
    "日本語", "中文字符", "東京", "한국어", "ひらがな", "カタカナ", "漢字", "我们", "繁體",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𠜎𠜱𠝹", "Ⅻ", "½", "™", "©", "€", "£", "¥", "°C", "µ", "∑∫√", "→⇒", "✓✗",
]

EMOJI = [
    "🦙", "😀", "😂", "👍", "🔥", "🎉", "❤️", "👨‍👩‍👧‍👦", "🏳️‍🌈", "👍🏽", "🇯🇵", "🇺🇸",
    "🤖", "🧑‍💻", "☕", "⭐", "🌍", "🍕", "🚀", "💯",
]

SPECIAL = [
    "<s>", "</s>", "<unk>", "<pad>", "<0x41>", "<0x0A>", "[INST]", "[/INST]", "<<SYS>>",
    "<|im_start|>", "▁", "▁▁", "\u2581x", "<s", "s>", "</", "<unk", "&lt;s&gt;",
]

SPACES = [" ", "  ", "   ", "    ", "\t", "\n", "\r\n", "\n\n", " \n ", "\t\t", "\u00a0",
          "\u3000", "\u2003", "\u200b", "\ufeff", "\u2028", "\v", "\f", "\r"]

COMBINING = [chr(c) for c in range(0x300, 0x370)] + ["\u0e31", "\u093f", "\u20dd", "\u0651"]


def rand_char(rng):
    """A random code point from a weighted mix of blocks (no surrogates)."""
    r = rng.random()
    if r < 0.25:
        return chr(rng.randint(0x20, 0x7E))
    if r < 0.35:
        return chr(rng.choice([rng.randint(0x00, 0x1F), 0x7F, rng.randint(0x80, 0x9F)]))
    if r < 0.50:
        return chr(rng.randint(0xA0, 0x24F))
    if r < 0.60:
        return chr(rng.randint(0x370, 0x10FF))
    if r < 0.72:
        return chr(rng.randint(0x3040, 0x30FF) if rng.random() < 0.3 else rng.randint(0x4E00, 0x9FFF))
    if r < 0.78:
        return chr(rng.randint(0xAC00, 0xD7A3))
    if r < 0.85:
        return chr(rng.randint(0x1F300, 0x1FAFF))
    if r < 0.90:
        return chr(rng.randint(0xE000, 0xF8FF))
    if r < 0.95:
        return chr(rng.choice([rng.randint(0x10000, 0x1FFFF), rng.randint(0x20000, 0x2FFFF),
                               rng.randint(0xF0000, 0x10FFFF)]))
    return chr(rng.randint(0x2000, 0x2BFF))


def rand_segment(rng, extra=()):
    r = rng.random()
    if extra and r < 0.15:
        return rng.choice(extra)
    r = rng.random()
    if r < 0.30:
        w = rng.choice(WORDS)
        return w if rng.random() < 0.8 else w.upper() if rng.random() < 0.5 else w.capitalize()
    if r < 0.45:
        return rng.choice(SPACES)
    if r < 0.55:
        return rng.choice(MULTI)
    if r < 0.62:
        return rng.choice(EMOJI)
    if r < 0.68:
        return rng.choice(SPECIAL)
    if r < 0.72:
        return rng.choice(WORDS) + rng.choice(COMBINING)
    if r < 0.80:
        return " " * rng.randint(1, 12)
    return "".join(rand_char(rng) for _ in range(rng.randint(1, 6)))


def rand_text(rng, extra=()):
    n = rng.choice([0, 1, 1, 2, 3, 5, 8, 12, 20, 30])
    parts = []
    for _ in range(n):
        parts.append(rand_segment(rng, extra))
        if rng.random() < 0.5:
            parts.append(" ")
    s = "".join(parts)
    if rng.random() < 0.15:
        s = " " * rng.randint(1, 4) + s
    if rng.random() < 0.15:
        s = s + " " * rng.randint(1, 4)
    return s


def rand_bytes(rng):
    """Valid text with malformed UTF-8 spliced in: stray continuation bytes, truncated sequences,
    overlongs, surrogates, code points above U+10FFFF, 0xFE/0xFF."""
    bad = [b"\x80", b"\xbf", b"\xc0\x80", b"\xc1\xbf", b"\xe0\x80\x80", b"\xed\xa0\x80",
           b"\xed\xbf\xbf", b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80", b"\xfe", b"\xff",
           b"\xe6\x97", b"\xf0\x9f\xa6", b"\xc3", b"\xe2\x96", b"\xef\xbf\xbd"]
    out = b""
    for _ in range(rng.randint(1, 6)):
        out += rand_segment(rng).encode("utf-8")
        if rng.random() < 0.7:
            out += rng.choice(bad)
        elif rng.random() < 0.5:
            out += bytes([rng.randint(0x80, 0xFF)])
    return out


def rand_ids(rng, sp):
    n_vocab = sp.GetPieceSize()
    space_ids = [i for i in range(n_vocab) if sp.IdToPiece(i).startswith("\u2581")]
    byte_ids = [i for i in range(n_vocab) if sp.IsByte(i)]
    special = [i for i in range(n_vocab) if sp.IsControl(i) or sp.IsUnknown(i)]
    ids = []
    for _ in range(rng.randint(0, 12)):
        r = rng.random()
        if r < 0.15 and special:
            ids.append(rng.choice(special))
        elif r < 0.45 and byte_ids:
            ids.append(rng.choice(byte_ids))
        elif r < 0.75 and space_ids:
            ids.append(rng.choice(space_ids))
        else:
            ids.append(rng.randrange(n_vocab))
    return ids


# ---- variant models: tok512.model with one SentencePiece feature changed -----------------------

def load_proto(path):
    m = pb.ModelProto()
    with open(path, "rb") as f:
        m.ParseFromString(f.read())
    return m


def variant_user(m):
    """USER_DEFINED pieces: appended ones (one with a space) and 'he' turned into one."""
    existing = {p.piece for p in m.pieces}
    for text in ["[INST]", "[/INST]", "<<SYS>>", "a b", "hello", "\u2581x"]:
        assert text not in existing
        p = m.pieces.add()
        p.piece = text
        p.score = 0.0
        p.type = pb.ModelProto.SentencePiece.USER_DEFINED
    for p in m.pieces:
        if p.piece == "he":
            p.type = pb.ModelProto.SentencePiece.USER_DEFINED


def variant_unused(m):
    """UNUSED pieces, some of them intermediate steps of longer merges ('in' -> 'ing')."""
    for p in m.pieces:
        if p.piece in ("in", "nd", "er", "▁the", "ing", "▁h", "ou", "▁wa", "ll", "▁lo"):
            p.type = pb.ModelProto.SentencePiece.UNUSED


def variant_nofb(m):
    """No byte fallback: unknown characters become <unk>, runs of them one <unk>."""
    keep = [p for p in m.pieces if p.type != pb.ModelProto.SentencePiece.BYTE]
    del m.pieces[:]
    m.pieces.extend(keep)
    m.trainer_spec.byte_fallback = False


def variant_noprefix(m):
    m.normalizer_spec.add_dummy_prefix = False


def variant_keepws(m):
    m.normalizer_spec.remove_extra_whitespaces = False


def variant_noescape(m):
    m.normalizer_spec.remove_extra_whitespaces = False
    m.normalizer_spec.escape_whitespaces = False


SP_VARIANTS = {
    "tok512_user": variant_user,
    "tok512_unused": variant_unused,
    "tok512_nofb": variant_nofb,
    "tok512_noprefix": variant_noprefix,
    "tok512_keepws": variant_keepws,
    "tok512_noescape": variant_noescape,
}

USER_EXTRA = ["[INST]", "[/INST]", "<<SYS>>", "a b", "hello", "he", "the", "[INST", "hell", " x"]
UNUSED_EXTRA = ["in", "ing", "sing", "and", "her", "the", "would", "hello", "wall", "look"]


# ---- tokenizer.json built from tok512.model (Hugging Face's slow-converter merge order) --------

def hf_json(m, pre_tokenizer=None):
    vocab = {p.piece: i for i, p in enumerate(m.pieces)}
    normal = {p.piece: p.score for p in m.pieces if p.type == pb.ModelProto.SentencePiece.NORMAL}
    merges = []
    for piece, score in normal.items():
        local = []
        for k in range(1, len(piece)):
            left, right = piece[:k], piece[k:]
            if left in vocab and right in vocab:
                local.append((left, right, score))
        local.sort(key=lambda x: (vocab[x[0]], vocab[x[1]]))
        merges.extend(local)
    merges.sort(key=lambda x: x[2], reverse=True)
    added = [{"id": i, "content": p.piece, "single_word": False, "lstrip": False,
              "rstrip": False, "normalized": False, "special": True}
             for i, p in enumerate(m.pieces)
             if p.type in (pb.ModelProto.SentencePiece.CONTROL, pb.ModelProto.SentencePiece.UNKNOWN)]
    if pre_tokenizer is None:
        normalizer = {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}
    else:
        normalizer = None
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": normalizer, "pre_tokenizer": pre_tokenizer, "post_processor": None,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>",
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": [[a, b] for a, b, _ in merges]},
    }


HF_VARIANTS = {
    "tok512_hf": None,
    "tok512_hf_metaspace": {"type": "Metaspace", "replacement": "\u2581",
                            "prepend_scheme": "first", "split": False},
    "tok512_hf_metaspace_split": {"type": "Metaspace", "replacement": "\u2581",
                                  "prepend_scheme": "always", "split": True},
}


# ---- random small models: every SentencePiece rule at once, with score ties and signed zeros -----

RANDOM_ALPHABET = ["a", "b", "c", "d", "\u2581", " ", "\u00e9", "\u65e5", "<", ">", "s", "\t"]


def random_model(rng):
    """A small BPE model: some characters missing, multi-character NORMAL / UNUSED / USER_DEFINED
    pieces over a tiny alphabet, scores from a small set (ties, -0.0 vs 0.0), random byte fallback
    and normalizer flags."""
    SP = pb.ModelProto.SentencePiece
    m = pb.ModelProto()
    m.trainer_spec.model_type = pb.TrainerSpec.BPE
    m.trainer_spec.byte_fallback = rng.random() < 0.5
    m.normalizer_spec.add_dummy_prefix = rng.random() < 0.7
    m.normalizer_spec.remove_extra_whitespaces = rng.random() < 0.5
    m.normalizer_spec.escape_whitespaces = rng.random() < 0.8
    seen = set()

    def add(text, typ, score=0.0):
        if text and text not in seen:
            seen.add(text)
            p = m.pieces.add()
            p.piece, p.type, p.score = text, typ, score

    add("<unk>", SP.UNKNOWN)
    add("<s>", SP.CONTROL)
    add("</s>", SP.CONTROL)
    if m.trainer_spec.byte_fallback:
        for i in range(256):
            add("<0x%02X>" % i, SP.BYTE)
    scores = [0.0, -0.0, 0.0, -0.0, -1.0, -2.0, -0.5, -1.5, 1e-45, -1e-45]
    for c in RANDOM_ALPHABET:
        if c != " " and rng.random() < 0.85:
            add(c, SP.NORMAL, rng.choice(scores))
    for _ in range(rng.randint(5, 60)):
        text = "".join(rng.choice(RANDOM_ALPHABET) for _ in range(rng.randint(2, 5)))
        r = rng.random()
        add(text, SP.NORMAL if r < 0.75 else SP.UNUSED if r < 0.9 else SP.USER_DEFINED,
            rng.choice(scores))
    return m


def random_model_cases(seed, n_models, n_texts):
    """One line per model: {"model": base64 ModelProto, "cases": [{"hex", "ids", "decoded"}]}."""
    lines = []
    for k in range(n_models):
        rng = random.Random(f"{seed}-random-{k}")
        m = random_model(rng)
        blob = m.SerializeToString()
        sp = spm.SentencePieceProcessor(model_proto=blob)
        cases = []
        for _ in range(n_texts):
            text = "".join(rng.choice(RANDOM_ALPHABET + ["x", "  ", "<s>", "\u00a0"])
                           for _ in range(rng.randint(0, 25))).encode("utf-8")
            if rng.random() < 0.1:
                text += b"\xff"
            ids = sp.EncodeAsIds(text)
            cases.append({"hex": text.hex(), "ids": ids, "decoded": sp.DecodeIds(ids)})
        lines.append({"model": base64.b64encode(blob).decode("ascii"), "cases": cases})
    # And one where every merge contends with a signed zero or a denormal: sentencepiece ranks
    # -0.0 below 0.0 and 1e-45 above it (the scores' bit order), which plain float ties would not.
    SP = pb.ModelProto.SentencePiece
    m = pb.ModelProto()
    m.trainer_spec.model_type = pb.TrainerSpec.BPE
    m.normalizer_spec.add_dummy_prefix = False
    for text, typ, score in [("<unk>", SP.UNKNOWN, 0.0), ("<s>", SP.CONTROL, 0.0),
                             ("</s>", SP.CONTROL, 0.0), ("a", SP.NORMAL, -5.0),
                             ("b", SP.NORMAL, -5.0), ("c", SP.NORMAL, -5.0), ("d", SP.NORMAL, -5.0),
                             ("ab", SP.NORMAL, -0.0), ("bc", SP.NORMAL, 0.0),
                             ("cd", SP.NORMAL, -1e-45), ("da", SP.NORMAL, 1e-45),
                             ("ba", SP.NORMAL, 0.0), ("cb", SP.NORMAL, -0.0)]:
        p = m.pieces.add()
        p.piece, p.type, p.score = text, typ, score
    blob = m.SerializeToString()
    sp = spm.SentencePieceProcessor(model_proto=blob)
    rng = random.Random(f"{seed}-signed-zero")
    cases = []
    for _ in range(n_texts):
        text = "".join(rng.choice("abcd") for _ in range(rng.randint(3, 9))).encode()
        ids = sp.EncodeAsIds(text)
        cases.append({"hex": text.hex(), "ids": ids, "decoded": sp.DecodeIds(ids)})
    lines.append({"model": base64.b64encode(blob).decode("ascii"), "cases": cases})
    return lines


def write_cases(out, lines):
    with open(out, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
    print(f"{out}: {len(lines)} cases, {os.path.getsize(out)} bytes", file=sys.stderr)


FIXED = ["", " ", "  ", "\n", "Hello world", " Hello world", "<s>", "</s> <unk>", "\u2581",
         "a\u2581", "\u00a0", "🦙 llama"]


def sp_cases(sp, rng, n_text, n_bytes, n_decode, extra=()):
    lines = []
    for s in FIXED + list(extra) + [rand_text(rng, extra) for _ in range(n_text)]:
        ids = sp.EncodeAsIds(s)
        lines.append({"text": s, "ids": ids, "decoded": sp.DecodeIds(ids)})
    for _ in range(n_bytes):
        b = rand_bytes(rng)
        ids = sp.EncodeAsIds(b)
        lines.append({"hex": b.hex(), "ids": ids, "decoded": sp.DecodeIds(ids)})
    for _ in range(n_decode):
        ids = rand_ids(rng, sp)
        lines.append({"decode_ids": ids, "decoded": sp.DecodeIds(ids)})
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=20240611)
    ap.add_argument("--out-dir", default="tests/fixtures/tokenizer")
    args = ap.parse_args()
    print(f"sentencepiece {spm.__version__}, tokenizers {tokenizers.__version__}", file=sys.stderr)

    for name, path in MODELS.items():
        sp = spm.SentencePieceProcessor(model_file=path)
        rng = random.Random(f"{args.seed}-{name}")
        write_cases(os.path.join(args.out_dir, f"sp_cases_{name}.jsonl"),
                    sp_cases(sp, rng, 820, 120, 250))

    vdir = os.path.join(args.out_dir, "variants")
    os.makedirs(vdir, exist_ok=True)
    for name, change in SP_VARIANTS.items():
        m = load_proto(MODELS["tok512"])
        change(m)
        path = os.path.join(vdir, f"{name}.model")
        with open(path, "wb") as f:
            f.write(m.SerializeToString())
        sp = spm.SentencePieceProcessor(model_file=path)
        rng = random.Random(f"{args.seed}-{name}")
        extra = USER_EXTRA if name == "tok512_user" else UNUSED_EXTRA if name == "tok512_unused" else ()
        write_cases(os.path.join(args.out_dir, f"sp_cases_{name}.jsonl"),
                    sp_cases(sp, rng, 200, 30, 50, extra))

    write_cases(os.path.join(args.out_dir, "sp_cases_random_models.jsonl"),
                random_model_cases(args.seed, 36, 20))

    # Hugging Face oracles: ids from the tokenizers package (special tokens left out of its
    # added_tokens so that "<s>" in the text stays text, as in judged), decoded text from
    # sentencepiece with tok512's pieces and remove_extra_whitespaces off (judged decodes every
    # tokenizer with SentencePiece's rules).
    decoder_sp = spm.SentencePieceProcessor(model_file=os.path.join(vdir, "tok512_keepws.model"))
    for name, pre in HF_VARIANTS.items():
        j = hf_json(load_proto(MODELS["tok512"]), pre)
        path = os.path.join(vdir, f"{name}.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(j, f, ensure_ascii=False, separators=(",", ":"))
        bare = dict(j, added_tokens=[])
        hf = tokenizers.Tokenizer.from_str(json.dumps(bare))
        rng = random.Random(f"{args.seed}-{name}")
        lines = []
        for s in FIXED + [rand_text(rng) for _ in range(250)]:
            ids = hf.encode(s, add_special_tokens=False).ids
            lines.append({"text": s, "ids": ids, "decoded": decoder_sp.DecodeIds(ids)})
        write_cases(os.path.join(args.out_dir, f"hf_cases_{name}.jsonl"), lines)


if __name__ == "__main__":
    main()
