#!/usr/bin/env python3
"""Tiny random-weight HF models, one per architecture family, with transformers' logits.

Writes crates/model/tests/fixtures/<family>/ for family in
    llama    (Llama-3 RoPE scaling, sharded safetensors: model.safetensors.index.json + 2 shards)
    qwen2    (Q/K/V biases, tied embeddings)
    qwen3    (per-head Q/K RMSNorm; BF16 safetensors)
    gemma3   (sandwich norms, GeGLU, scaled embeddings, Q/K norm, (1 + w) norms, query_pre_attn_scalar,
              sliding-window + global layers with their own RoPE bases, linear RoPE scaling on the
              global layers, final logit soft-capping)
    mistral  (sliding window of 5; F16 safetensors)
    phi3     (fused qkv_proj and gate_up_proj, partial rotary 0.5, sliding window of 7)
each holding what `save_pretrained` writes (config.json, safetensors) plus golden.json and a tiny
tokenizer (tokenizer.json, tokenizer_config.json with a chat template; see `write_tokenizer`: byte-level
BPE, Qwen2 pre-tokenizer, 256 tokens = 3 specials + 243 byte symbols + 10 merges), and next to it
crates/model/tests/fixtures/<family>.gguf, the same weights written the way llama.cpp's converter writes
them (see `write_gguf`). golden.json:
    {"family", "tokens": [24 ids], "logits": [[vocab floats] per position], "min_top2_margin", "versions"}
Row i of "logits" is the model's output after reading tokens[0..=i]. The token sequence (24) is longer
than every sliding window, so the windows matter.

How to run (CPU, a few seconds):
    /tmp/refenv/v/bin/python scripts/make_arch_fixtures.py [--out DIR] [--tokenizer-only]
(--tokenizer-only rewrites just the tokenizer files of every family, leaving weights and goldens.)

Python packages it was generated with (pip install ...):
    torch==2.15.0 (CPU)  transformers==5.23.0  safetensors==0.7.0  numpy==2.4.6  gguf==0.19.0
    tokenizers==0.23.3
The versions actually used are written into every golden.json.

The reference runs in float32 with attn_implementation="eager". Weights are re-drawn after
from_config (normal, std 1/sqrt(fan_in) for matrices; norm weights around 1, Gemma's around 0 since
it scales by 1 + w) so that logits are O(1..10) and the argmax at every position is decided by a clear
margin (the first seed, counting from a fixed one per family, whose smallest top-2 gap exceeds 0.01 is
used; the gap and seed are stored). For the BF16/F16 fixtures
the model is rounded to that type, saved, and the reference is computed from the rounded weights
widened back to float32, which is exactly what Smelt reads.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import gguf  # noqa: E402
import safetensors  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402

N_TOKENS = 24
VOCAB = 256
MIN_MARGIN = 0.01

COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    rms_norm_eps=1e-6,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)

FAMILIES = {
    "llama": dict(
        model_type="llama",
        dtype=torch.float32,
        shard="150KB",
        config=dict(
            COMMON,
            tie_word_embeddings=False,
            rope_parameters=dict(
                rope_type="llama3",
                rope_theta=10000.0,
                factor=8.0,
                low_freq_factor=1.0,
                high_freq_factor=4.0,
                original_max_position_embeddings=16,
            ),
        ),
    ),
    "qwen2": dict(
        model_type="qwen2",
        dtype=torch.float32,
        config=dict(COMMON, tie_word_embeddings=True, rope_parameters=dict(rope_type="default", rope_theta=1e6)),
    ),
    "qwen3": dict(
        model_type="qwen3",
        dtype=torch.bfloat16,
        config=dict(COMMON, head_dim=24, tie_word_embeddings=False),
    ),
    "gemma3": dict(
        model_type="gemma3_text",
        dtype=torch.float32,
        config=dict(
            COMMON,
            num_hidden_layers=3,
            head_dim=16,
            query_pre_attn_scalar=24,
            sliding_window=6,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"],
            final_logit_softcapping=5.0,
            tie_word_embeddings=True,
            rope_parameters={
                "full_attention": dict(rope_type="linear", factor=2.0, rope_theta=1e6),
                "sliding_attention": dict(rope_type="default", rope_theta=10000.0),
            },
        ),
    ),
    "mistral": dict(
        model_type="mistral",
        dtype=torch.float16,
        config=dict(COMMON, sliding_window=5, tie_word_embeddings=False),
    ),
    "phi3": dict(
        model_type="phi3",
        dtype=torch.float32,
        config=dict(
            COMMON,
            sliding_window=7,
            tie_word_embeddings=False,
            rope_parameters=dict(rope_type="default", rope_theta=10000.0, partial_rotary_factor=0.5),
        ),
    ),
}


GGUF_ARCH = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gemma3_text": "gemma3",
             "phi3": "phi3"}

GGUF_LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.qkv_proj.weight": "attn_qkv.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.gate_up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "post_feedforward_layernorm.weight": "post_ffw_norm.weight",
    "pre_feedforward_layernorm.weight": "ffn_norm.weight",
}


def write_gguf(model: torch.nn.Module, config, path: Path, dtype) -> None:
    """The model as llama.cpp's convert_hf_to_gguf.py lays it out (facts, not its code):
    llama-arch Q/K rows permuted so RoPE pairs are adjacent (per head, GGUF row 2i = HF row i,
    row 2i+1 = HF row i + d/2); Gemma norm weights stored as w + 1; Phi-3's fused qkv_proj and
    gate_up_proj kept fused as attn_qkv and ffn_up; Llama 3 scaling as per-pair divisors in
    rope_freqs.weight. Two keys llama.cpp does not write for these models carry settings the tiny
    Gemma uses and the real ones do not: gemma3.attention.sliding_window_pattern (llama.cpp: 6) and
    gemma3.attention.scale (llama.cpp: 1/sqrt(head_dim), query_pre_attn_scalar is 24 here)."""
    mt = config.model_type
    arch = GGUF_ARCH[mt]
    w = gguf.GGUFWriter(str(path), arch)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    w.add_block_count(config.num_hidden_layers)
    w.add_context_length(config.max_position_embeddings)
    w.add_embedding_length(config.hidden_size)
    w.add_feed_forward_length(config.intermediate_size)
    w.add_head_count(config.num_attention_heads)
    w.add_head_count_kv(config.num_key_value_heads)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_layer_norm_rms_eps(config.rms_norm_eps)
    rope = config.rope_parameters
    glob = rope.get("full_attention", rope)
    w.add_rope_freq_base(glob["rope_theta"])
    w.add_rope_dimension_count(int(head_dim * glob.get("partial_rotary_factor", 1.0)))
    if glob.get("rope_type") == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(glob["factor"])
    if getattr(config, "sliding_window", None) is not None:
        w.add_sliding_window(config.sliding_window)
    if mt == "gemma3_text":
        types = config.layer_types
        pattern = types.index("full_attention") + 1
        assert types == ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention"
                         for i in range(len(types))]
        w.add_uint32(f"{arch}.attention.sliding_window_pattern", pattern)
        w.add_float32(f"{arch}.attention.scale", config.query_pre_attn_scalar ** -0.5)
        if config.final_logit_softcapping is not None:
            w.add_final_logit_softcapping(config.final_logit_softcapping)
    tensors = {}
    if glob.get("rope_type") == "llama3":
        base = torch.tensor(glob["rope_theta"], dtype=torch.float64)
        inv = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        wavelen = 2 * math.pi / inv
        orig, factor = glob["original_max_position_embeddings"], glob["factor"]
        low, high = glob["low_freq_factor"], glob["high_freq_factor"]
        smooth = (orig / wavelen - low) / (high - low)
        div = torch.where(wavelen < orig / high, torch.ones_like(inv),
                          torch.where(wavelen > orig / low, torch.full_like(inv, factor),
                                      1.0 / ((1 - smooth) / factor + smooth)))
        tensors["rope_freqs.weight"] = div.float().numpy()
    gemma = mt == "gemma3_text"
    for name, p in model.state_dict().items():
        a = p.detach().float()
        if name == "lm_head.weight":
            if config.tie_word_embeddings:
                continue
            out = "output.weight"
        elif name == "model.embed_tokens.weight":
            out = "token_embd.weight"
        elif name == "model.norm.weight":
            out = "output_norm.weight"
        else:
            parts = name.split(".")
            layer, rest = int(parts[2]), ".".join(parts[3:])
            if rest == "post_attention_layernorm.weight":
                part = "post_attention_norm.weight" if gemma else "ffn_norm.weight"
            else:
                part = GGUF_LAYER_NAMES[rest]
            out = f"blk.{layer}.{part}"
            if arch == "llama" and part in ("attn_q.weight", "attn_k.weight"):
                n = config.num_attention_heads if part == "attn_q.weight" else config.num_key_value_heads
                a = a.reshape(n, 2, head_dim // 2, -1).transpose(1, 2).reshape(a.shape)
        if gemma and out.endswith("norm.weight"):
            a = a + 1.0
        arr = a.numpy()
        tensors[out] = arr.astype(np.float16) if (dtype == torch.float16 and arr.ndim == 2) else arr
    for name, arr in tensors.items():
        w.add_tensor(name, np.ascontiguousarray(arr))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# Qwen2's split regex, as its tokenizer.json spells it.
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
SPECIALS = ["<pad>", "<s>", "</s>"]
MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("e", "r"), ("a", "n"), ("Ġ", "a"), ("r", "e"),
          ("o", "n"), ("Ġ", "s")]
CHAT_TEMPLATE = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<s>assistant:{% endif %}")


def byte_symbols() -> list[str]:
    """GPT-2's printable stand-in of each byte (byte-level BPE's alphabet)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    out, extra = {}, 0
    for b in range(256):
        if b in printable:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return [out[b] for b in range(256)]


def write_tokenizer(target: Path) -> None:
    """A byte-level BPE tokenizer of exactly VOCAB tokens: ids 0-2 the specials (pad, bos, eos as
    config.json numbers them), then every byte that can occur in UTF-8 text (0xC0, 0xC1 and
    0xF5-0xFF never do), then 10 merges; Qwen2's pre-tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    never_utf8 = {0xC0, 0xC1, *range(0xF5, 0x100)}
    symbols = [s for b, s in enumerate(byte_symbols()) if b not in never_utf8]
    vocab = SPECIALS + symbols + ["".join(m) for m in MERGES]
    assert len(vocab) == VOCAB and len(set(vocab)) == VOCAB
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(vocab)}, merges=MERGES))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    tok.save(str(target / "tokenizer.json"))
    config = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "add_bos_token": False,
              "chat_template": CHAT_TEMPLATE, "tokenizer_class": "PreTrainedTokenizerFast"}
    (target / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    # The tokenizer must give what was meant: merges applied, specials whole.
    ids = tok.encode("<s>the cat in the sea</s>").ids
    assert ids[0] == 1 and ids[-1] == 2 and vocab.index("Ġthe") in ids, ids


def redraw(model: torch.nn.Module, gemma: bool, gen: torch.Generator) -> None:
    """Weights with O(1) activations: matrices ~ N(0, 1/fan_in), norms near 1 (Gemma: near 0)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[1]))
                if "embed_tokens" in name:
                    p.mul_(1.0 if gemma else math.sqrt(p.shape[1]) * 0.5)
            elif "norm" in name:
                base = 0.0 if gemma else 1.0
                p.copy_(base + 0.3 * torch.randn(p.shape, generator=gen))
            else:  # biases
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))


def make(family: str, spec: dict, out: Path, first_seed: int) -> None:
    """The first seed from `first_seed` on whose argmax margins are all clear."""
    for seed in range(first_seed, first_seed + 100):
        if make_seed(family, spec, out, seed):
            return
    raise SystemExit(f"{family}: no seed gave a top-2 margin of {MIN_MARGIN}")


def make_seed(family: str, spec: dict, out: Path, seed: int) -> bool:
    gen = torch.Generator().manual_seed(seed)
    config = AutoConfig.for_model(spec["model_type"], **spec["config"])
    config._attn_implementation = "eager"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="eager")
    redraw(model, spec["model_type"] == "gemma3_text", gen)
    if config.tie_word_embeddings:
        model.tie_weights()
    # Round to the stored type, then run the reference on exactly those values.
    # Parameters only: buffers such as RoPE's inv_freq stay float32, as they are when
    # transformers loads a BF16/F16 checkpoint.
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(spec["dtype"]).to(torch.float32))
    model = model.eval()
    tokens = torch.randint(3, VOCAB, (N_TOKENS,), generator=gen)
    with torch.no_grad():
        logits = model(tokens[None, :]).logits[0].float()
    top2 = torch.topk(logits, 2, dim=-1).values
    margin = float((top2[:, 0] - top2[:, 1]).min())
    if margin < MIN_MARGIN:
        return False

    target = out / family
    shutil.rmtree(target, ignore_errors=True)
    kwargs = {"max_shard_size": spec["shard"]} if "shard" in spec else {}
    model.to(spec["dtype"]).save_pretrained(target, **kwargs)
    model.to(torch.float32)
    for extra in ("generation_config.json",):
        (target / extra).unlink(missing_ok=True)
    # Next to the directories: the project's .gitignore admits fixtures/*.gguf only.
    write_gguf(model, config, out / f"{family}.gguf", spec["dtype"])
    golden = {
        "family": family,
        "generator": "scripts/make_arch_fixtures.py",
        "seed": seed,
        "stored_dtype": str(spec["dtype"]).removeprefix("torch."),
        "tokens": tokens.tolist(),
        "min_top2_margin": margin,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "safetensors": safetensors.__version__,
            "numpy": np.__version__,
        },
        "logits": [[float(f"{v:.7g}") for v in row] for row in logits.tolist()],
    }
    (target / "golden.json").write_text(json.dumps(golden, separators=(",", ":")) + "\n")
    write_tokenizer(target)
    size = sum(f.stat().st_size for f in target.iterdir())
    print(
        f"{family}: seed {seed}, {size / 1024:.0f} KiB, logits |max| {float(logits.abs().max()):.2f}, "
        f"margin {margin:.4f}"
    )
    return True


def main() -> None:
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=here.parent / "crates/model/tests/fixtures")
    ap.add_argument("--only", action="append", choices=sorted(FAMILIES))
    ap.add_argument("--tokenizer-only", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    for i, (family, spec) in enumerate(FAMILIES.items()):
        if args.only and family not in args.only:
            continue
        if args.tokenizer_only:
            write_tokenizer(args.out / family)
            continue
        make(family, spec, args.out, first_seed=1000 * (i + 1))


if __name__ == "__main__":
    main()
