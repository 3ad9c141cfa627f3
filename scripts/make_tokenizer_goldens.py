#!/usr/bin/env python3
"""Reference token ids of the real models' tokenizers, for
crates/text/tests/tokenizer_models.rs -> crates/text/tests/golden/tokenizer_models.json.

Run (models fetched by scripts/fetch-assets.sh):
    /tmp/refenv/v/bin/python scripts/make_tokenizer_goldens.py
Packages: transformers 5.23.0, tokenizers 0.23.3, sentencepiece 0.2.3, gguf 0.19.0
(any recent versions should give the same ids).

References:
- SmolLM2-135M-Instruct and Qwen2.5-Coder-0.5B-Instruct: HF `tokenizers` on the
  GGUF's vocabulary and merges (transformers' `AutoTokenizer.from_pretrained(dir,
  gguf_file=...)`), with the pre-tokenizer and normalizer of each model's published
  tokenizer.json set explicitly (transformers' GGUF converter gives SmolLM2 a plain
  ByteLevel and Qwen2 no NFC normalizer):
    SmolLM2: Sequence[Digits(individual_digits=True), ByteLevel(add_prefix_space=False)]
    Qwen2.5: NFC normalizer; Split(Qwen2 regex, Isolated) + ByteLevel(use_regex=False)
  Ids are `encode(text, add_special_tokens=False)`: special-token strings in the text
  become their ids (Smelt: encode(text, add_special=false, parse_special=true)).
- stories260K (Llama 2 style SentencePiece BPE, 512 pieces): the sentencepiece
  library on a ModelProto built from the GGUF's pieces, scores and types (BPE,
  byte fallback, dummy prefix, identity normalization, whitespace kept as is).
  Ids are `encode(text)` (Smelt: encode(text, add_special=false, parse_special=false)).
Each case also records the reference decode of the ids (skipping special tokens).
"""

import json
import os
import struct
import sys
import tempfile
from pathlib import Path

import gguf
import sentencepiece as spm
from tokenizers import Regex, normalizers, pre_tokenizers
from transformers import AutoTokenizer

ASSETS = Path(os.environ.get("SMELT_ASSETS", Path.home() / ".cache/smelt/assets"))
OUT = Path(__file__).resolve().parent.parent / "crates/text/tests/golden/tokenizer_models.json"

QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

LONG = (
    "In 1969, Apollo 11 landed on the Moon; Neil Armstrong's words were: \"That's one small "
    "step for [a] man, one giant leap for mankind.\" The mission lasted 8 days, 3 hours, 18 "
    "minutes and 35 seconds.\n\n"
    "    def area(r: float) -> float:\n        return 3.14159 * r ** 2  # approx.\n\n"
    "Prices: $12.50, €9,99, ¥1200 — 50% off!!! Email: someone@example.com; "
    "URL: https://example.org/a/b?c=d&e=f#g\n"
    "Mixed scripts: Ελληνικά, русский, עברית, العربية, हिन्दी, 日本語の文章, 한국어 문장.\n"
    "\tTabbed\tcolumns\t1\t22\t333\n"
)

COMMON = [
    "Hello world",
    " Hello  world\n\n\tTabs and   spaces  ",
    "The year 2024 had 365 days; pi is about 3.14159.",
    "I'm sure they'll say \"we've done it\" - don't you think? YOU'RE RIGHT, I'D SAY.",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "Ünïcödé: 你好，世界！ こんにちは 안녕하세요 Привет мир",
    "Emoji: 🚀🦙😶‍🌫️ ✅ and 🤗",
    "   leading and trailing   ",
    "Once upon a time, there was a little girl named Lily. She loved to play outside.",
    "\n\n\n",
    LONG * 3,
]
CHAT = [
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi there!<|im_end|>\n"
    "<|im_start|>assistant\n",
    "text<|endoftext|>more text",
]


def hf_tokenizer(gguf_name):
    with tempfile.TemporaryDirectory() as d:
        os.symlink(ASSETS / gguf_name, Path(d) / gguf_name)
        return AutoTokenizer.from_pretrained(d, gguf_file=gguf_name)


def hf_cases(tok, texts):
    cases = []
    for text in texts:
        ids = tok.encode(text, add_special_tokens=False)
        cases.append({"text": text, "ids": ids, "decoded": tok.decode(ids, skip_special_tokens=True)})
    return cases


def smollm2():
    tok = hf_tokenizer("SmolLM2-135M-Instruct.Q4_1.gguf")
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    return hf_cases(tok, COMMON + CHAT)


def qwen25():
    tok = hf_tokenizer("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
    bt = tok.backend_tokenizer
    bt.normalizer = normalizers.NFC()
    bt.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    return hf_cases(tok, COMMON + CHAT)


# --- a SentencePiece ModelProto, protobuf-encoded by hand (no protobuf package needed)
def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(num, wire, payload):
    key = _varint((num << 3) | wire)
    if wire == 2:
        return key + _varint(len(payload)) + payload
    return key + payload


def sentencepiece_proto(pieces, scores, types):
    msg = bytearray()
    for p, s, t in zip(pieces, scores, types):
        sp = _field(1, 2, p.encode()) + _field(2, 5, struct.pack("<f", s)) + _field(3, 0, _varint(t))
        msg += _field(1, 2, sp)
    trainer = (
        _field(3, 0, _varint(2))  # model_type = BPE
        + _field(4, 0, _varint(len(pieces)))  # vocab_size
        + _field(35, 0, _varint(1))  # byte_fallback
    )
    msg += _field(2, 2, trainer)
    normalizer = (
        _field(1, 2, b"identity")
        + _field(3, 0, _varint(1))  # add_dummy_prefix
        + _field(4, 0, _varint(0))  # remove_extra_whitespaces = false
        + _field(5, 0, _varint(1))  # escape_whitespaces
    )
    msg += _field(3, 2, normalizer)
    return bytes(msg)


def stories():
    r = gguf.GGUFReader(ASSETS / "stories260K.gguf")
    f = r.fields
    pieces = [bytes(f["tokenizer.ggml.tokens"].parts[i]).decode() for i in f["tokenizer.ggml.tokens"].data]
    scores = [float(f["tokenizer.ggml.scores"].parts[i][0]) for i in f["tokenizer.ggml.scores"].data]
    types = [int(f["tokenizer.ggml.token_type"].parts[i][0]) for i in f["tokenizer.ggml.token_type"].data]
    sp = spm.SentencePieceProcessor(model_proto=sentencepiece_proto(pieces, scores, types))
    assert sp.get_piece_size() == len(pieces)
    cases = []
    for text in COMMON:
        ids = sp.encode(text)
        cases.append({"text": text, "ids": ids, "decoded": sp.decode(ids)})
    return cases


def main():
    golden = {
        "smollm2": {"file": "SmolLM2-135M-Instruct.Q4_1.gguf", "cases": smollm2()},
        "qwen2.5": {"file": "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", "cases": qwen25()},
        "stories260K": {"file": "stories260K.gguf", "cases": stories()},
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(golden, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
