#!/usr/bin/env python3
"""Reference logits and greedy continuations of Gemma-3-270M Q4_K_M for Smelt's model tests.

Writes crates/model/tests/golden/gemma-3-270m-q4_k_m.logits.json in the schema of
scripts/make_logit_goldens.py (whose helpers it imports), read by crates/model/tests/reference_logits.rs.

How to run (CPU only, about a minute and 3 GB of RAM):
    scripts/fetch-assets.sh gemma3
    /tmp/refenv/v/bin/python scripts/make_gemma_goldens.py [--assets DIR] [--out DIR]

Python packages it was generated with (pip install ...): as scripts/make_logit_goldens.py
    torch==2.15.0 (CPU)  transformers==5.23.0  accelerate==1.15.0  gguf==0.19.0  numpy==2.4.6
    tokenizers==0.23.3  sentencepiece==0.2.3  jinja2==3.1.6
The versions actually used are written into the golden file.

What the reference is
---------------------
transformers loads the GGUF itself (`from_pretrained(dir, gguf_file=..., dtype=float32,
attn_implementation="eager")`): gguf-py dequantizes every tensor to f32, and its Gemma tensor processor
subtracts 1 from every `*norm.weight` (llama.cpp's converter stores Gemma's RMSNorm weights as w + 1,
transformers' Gemma3RMSNorm multiplies by 1 + w). The config comes from the GGUF metadata plus
Gemma3TextConfig defaults: sliding window 512 (from gemma3.attention.sliding_window), every 6th layer
global (the default pattern, also llama.cpp's), global RoPE base 1e6 (gemma3.rope.freq_base), local
RoPE base 10000, query_pre_attn_scalar 256 (= head_dim for this size), no soft-capping; the script
asserts these. The tokenizer is built from the GGUF vocabulary too (SentencePiece); every case starts
with BOS (id 2), as llama.cpp and transformers do for Gemma (tokenizer.ggml.add_bos_token = true).

Cases: a short prompt, a paragraph, a chat turn in Gemma's turn format (written out by `gemma_turn`:
this GGUF has no tokenizer.chat_template), and a long
text of more than 512 tokens so that the sliding-window layers drop the oldest positions. Greedy: the
short prompt's plain continuation and a chat answer. Only 16 probe ids are stored per position (the
long case has ~600 positions).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import make_logit_goldens as mlg  # noqa: E402  (sets the thread env vars before torch loads)

import argparse  # noqa: E402
import os  # noqa: E402

import gguf  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

FILE = "gemma-3-270m-q4_k_m.gguf"
GENERATOR = "scripts/make_gemma_goldens.py"
N_PROBES = 16
BOS = 2

LONG_TEXT = " ".join([mlg.PARAGRAPH] * 9)


def gemma_turn(user: str) -> str:
    """One user turn in Gemma's chat format, ready for the model's answer. This GGUF carries no
    tokenizer.chat_template, so the format (that of Gemma 3's published template) is written out."""
    return f"<bos><start_of_turn>user\n{user}<end_of_turn>\n<start_of_turn>model\n"


def case(ref: mlg.Reference, name: str, text: str, tokens: list[int], probes: list[int]) -> dict:
    logits = ref.logits(tokens)
    top = torch.topk(logits, mlg.TOP_K, dim=-1)
    print(f"  case {name}: {len(tokens)} tokens")
    return {
        "name": name,
        "text": text,
        "n_tokens": len(tokens),
        "tokens": tokens,
        "argmax": logits.argmax(-1).tolist(),
        "margin": [mlg.r6(m) for m in (top.values[:, 0] - top.values[:, 1]).tolist()],
        "top_ids": top.indices.tolist(),
        "top_logits": [[mlg.r6(v) for v in row] for row in top.values.tolist()],
        "probe_logits": [[mlg.r6(v) for v in row] for row in logits[:, probes].tolist()],
    }


def main() -> None:
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--assets", type=Path,
                    default=Path(os.environ.get("SMELT_ASSETS", Path.home() / ".cache/smelt/assets")))
    ap.add_argument("--out", type=Path, default=here.parent / "crates/model/tests/golden")
    args = ap.parse_args()
    torch.set_num_threads(1)
    path = args.assets / FILE
    if not path.is_file():
        raise SystemExit(f"{path} is missing: run scripts/fetch-assets.sh gemma3")
    reader = gguf.GGUFReader(str(path))
    assert mlg.gguf_scalar(reader, "general.architecture") == "gemma3"
    assert mlg.gguf_scalar(reader, "tokenizer.ggml.bos_token_id") == BOS
    ref = mlg.Reference(args.assets, FILE, patch_special_ids=False)
    cfg = ref.model.config
    rope = cfg.rope_parameters
    facts = {
        "model_type": cfg.model_type,
        "num_hidden_layers": cfg.num_hidden_layers,
        "sliding_window": cfg.sliding_window,
        "layer_types": cfg.layer_types,
        "rope_parameters": rope,
        "query_pre_attn_scalar": cfg.query_pre_attn_scalar,
        "head_dim": cfg.head_dim,
        "final_logit_softcapping": cfg.final_logit_softcapping,
        "attn_logit_softcapping": cfg.attn_logit_softcapping,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "hidden_activation": cfg.hidden_activation,
    }
    print(f"  config: {facts}")
    assert cfg.sliding_window == 512 and cfg.query_pre_attn_scalar == cfg.head_dim == 256
    assert [t == "full_attention" for t in cfg.layer_types] == [(i + 1) % 6 == 0 for i in range(18)]
    assert rope["full_attention"]["rope_theta"] == 1e6 and rope["sliding_attention"]["rope_theta"] == 1e4
    assert rope["full_attention"]["rope_type"] == "default"
    assert cfg.final_logit_softcapping is None and cfg.attn_logit_softcapping is None

    vocab = cfg.vocab_size
    probes = sorted(np.random.default_rng(mlg.PROBE_SEED).choice(vocab, size=N_PROBES, replace=False).tolist())
    eos = int(mlg.gguf_scalar(reader, "tokenizer.ggml.eos_token_id"))
    end_of_turn = ref.tok.convert_tokens_to_ids("<end_of_turn>")
    stop = [eos] + ([end_of_turn] if isinstance(end_of_turn, int) and end_of_turn != eos else [])

    def enc(text: str) -> list[int]:
        ids = ref.encode(text)
        assert ref.tok.decode(ids) == text, ref.tok.decode(ids)
        return ids

    chat_text = gemma_turn(mlg.CHAT_SINGLE[0]["content"])
    cases = [
        case(ref, "capital_plain", mlg.CAPITAL, [BOS] + enc(mlg.CAPITAL), probes),
        case(ref, "paragraph_plain", mlg.PARAGRAPH, [BOS] + enc(mlg.PARAGRAPH), probes),
        case(ref, "chat_single_user", chat_text, enc(chat_text), probes),
    ]
    long_ids = [BOS] + enc(LONG_TEXT)
    assert len(long_ids) > 512 + 32, len(long_ids)
    cases.append(case(ref, "long_past_sliding_window", LONG_TEXT, long_ids, probes))

    greedy = [mlg.greedy_record(ref, mlg.CAPITAL, [BOS] + enc(mlg.CAPITAL), mlg.GREEDY_TOKENS, [], "plain")]
    chat_q = gemma_turn("What is the capital of France?")
    greedy.append(mlg.greedy_record(ref, chat_q, enc(chat_q), mlg.GREEDY_TOKENS, stop, "chat"))

    v = mlg.versions()
    golden = {
        "model_file": FILE,
        "model_sha256": mlg.sha256_of(path),
        "generator": GENERATOR,
        "reference": (f"transformers {v['transformers']} torch {v['torch']}, gguf_file dequantized f32 "
                      f"(gguf-py {v['gguf']}, norm weights - 1), eager attention, CPU, 1 thread"),
        "versions": v,
        "positions": "row i of argmax/margin/top_*/probe_logits = prediction after tokens[0..=i]",
        "encoding": ("BOS (2) prepended by hand to plain texts encoded with add_special_tokens=False; chat "
                     "texts written in Gemma's turn format (the GGUF has no chat_template), starting with "
                     "<bos>, encoded with special tokens matched"),
        "transformers_config": facts,
        "probe_seed": mlg.PROBE_SEED,
        "probe_ids": probes,
        "cases": cases,
        "greedy": greedy,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / (Path(FILE).stem + ".logits.json")
    out.write_text(mlg.dump(golden) + "\n", encoding="utf-8")
    print(f"  wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
