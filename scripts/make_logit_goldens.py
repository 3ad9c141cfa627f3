#!/usr/bin/env python3
"""Reference logits and greedy continuations for Smelt's model tests.

Writes one JSON file per real model into crates/model/tests/golden/:
    SmolLM2-135M-Instruct.Q4_1.logits.json
    qwen2.5-coder-0.5b-instruct-q4_k_m.logits.json
    stories260K.logits.json

How to run (one command, CPU only, about 2 minutes and 3 GB of RAM on a 2-core machine):
    /tmp/refenv/v/bin/python scripts/make_logit_goldens.py
        [--assets DIR]   default: $SMELT_ASSETS or ~/.cache/smelt/assets (scripts/fetch-assets.sh)
        [--out DIR]      default: crates/model/tests/golden next to this script
        [--only NAME]    smollm2 | qwen2.5 | stories   (repeatable; default: all three)

Python packages it was generated with (pip install ...):
    torch==2.15.0 (CPU use only)  transformers==5.23.0  accelerate==1.15.0  gguf==0.19.0
    numpy==2.4.6  tokenizers==0.23.3  sentencepiece==0.2.3  jinja2==3.1.6
The versions actually used are written into every golden file ("reference", "versions").

What the reference is
---------------------
HF transformers loads the GGUF itself: `AutoModelForCausalLM.from_pretrained(dir, gguf_file=...,
dtype=float32, attn_implementation="eager")`. For the llama and qwen2 architectures transformers 5.23
takes its "legacy" GGUF path, which dequantizes every tensor to f32 with gguf-py's
`gguf.quants.dequantize` (so the reference sees exactly the weights the quantized file stores, only
unpacked) and builds a plain dense model. The tokenizer is `AutoTokenizer.from_pretrained(dir,
gguf_file=...)`, i.e. also built from the GGUF metadata, and chat prompts are rendered with the GGUF's
own `tokenizer.chat_template`.

Everything runs in float32 on one CPU thread, so the files are reproducible bit for bit on one machine
(and to the printed 6 significant digits on practically any machine).

Independent cross-check: a small numpy forward pass (float64) over gguf-py's dequantized tensors *in
the GGUF's own layout* re-computes every case, and its largest logit difference from transformers is
stored next to each case ("numpy_max_abs_diff"). This pins down conventions the Rust engine needs:

RoPE and the llama Q/K permutation (why the numpy forward rotates different pairs per architecture)
    HF llama checkpoints apply RoPE "rotate-half" style: in each head of size d, element i is paired
    with element i + d/2 (i < d/2), rotated by angle pos * theta^(-2i/d). llama.cpp's
    convert_hf_to_gguf.py permutes the rows of attn_q / attn_k for the llama architecture
    (reshape(n_head, 2, d/2, n_in).swapaxes(1, 2)), so GGUF row 2i of a head is HF row i and GGUF
    row 2i+1 is HF row i + d/2. On the GGUF weights the same rotation therefore pairs the *adjacent*
    elements (2i, 2i+1), still with angle pos * theta^(-2i/d) ("normal" RoPE in ggml terms).
    transformers undoes that permutation when loading (LlamaTensorProcessor._reverse_permute_weights,
    using n_head for Q and n_head_kv for K) and then applies rotate-half.
    The qwen2 converter does NOT permute, and Qwen2 uses rotate-half ("NeoX" RoPE in ggml terms) on
    the rows exactly as stored.
    The numpy forward uses adjacent pairs for llama and half-split pairs for qwen2 on the raw GGUF rows;
    its agreement with transformers (~1e-4 on logits of magnitude ~20) is the evidence.

Other conventions (both architectures): RMSNorm x / sqrt(mean(x^2) + eps) * w; attention scale
1/sqrt(head_dim); grouped-query attention where query head h uses kv head h // (n_head / n_head_kv);
causal mask; SwiGLU FFN down(silu(gate(x)) * up(x)); residuals around both; final RMSNorm then
output.weight, or token_embd.weight when the file has no output.weight (tied, SmolLM2). Qwen2 adds
attn_q/k/v biases. A GGUF tensor with dims [n_in, n_out] is a row-major [n_out, n_in] matrix: y = W x.

stories260K.gguf: its metadata has tokenizer.ggml.padding_token_id = seperator_token_id = 0xFFFFFFFF
("none"), which transformers 5.23 tries to use as a vocabulary index; both the tokenizer
(IndexError) and the model (nn.Embedding padding_idx assertion) fail to load. This script hides
out-of-range special-token ids from transformers' GGUF metadata reader while loading the tokenizer
(see `hide_out_of_range_special_ids`) and passes pad_token_id=None to the model; with that,
transformers loads it normally and the numpy forward agrees with it. The tokenizer transformers builds
from this SentencePiece vocabulary (BPE with merges recovered from the scores) encodes the one logits
case's text; the script checks those ids against a plain score-greedy SentencePiece merge
(`spm_encode`) too.

Position convention in the goldens: for a case with tokens t[0..n), row i of argmax / top_ids /
top_logits / probe_logits / margin is the model's output after reading t[0..=i], i.e. its prediction
of token i+1. No BOS is added for SmolLM2 (tokenizer.ggml.add_bos_token = false) or Qwen2.5 (no BOS
in use); stories260K's case and greedy run start with BOS id 1 (SentencePiece llama convention).
"""

from __future__ import annotations

import os

# One thread everywhere, before numpy / torch load their BLAS: reproducible reduction order.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import accelerate  # noqa: E402,F401  (transformers needs it for gguf_file; imported to pin its version)
import gguf  # noqa: E402
import numpy as np  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

GENERATOR = "scripts/make_logit_goldens.py"
PROBE_SEED = 0x5EED_2024  # seeds the probe-id choice; never change it, tests index by position
N_PROBES = 64
TOP_K = 8
GREEDY_TOKENS = 48
STORIES_GREEDY_TOKENS = 64

# --------------------------------------------------------------------------------------------------
# Prompts

CAPITAL = "The capital of France is"

PARAGRAPH = (
    "Rivers shape the land over thousands of years. As water flows downhill, it carries sand and "
    "small stones that slowly wear away the rock beneath it. Over time this process carves deep "
    "valleys and canyons, and the soil it carries away builds fertile plains near the sea, where "
    "farmers have grown crops for centuries."
)

CODE = '''def normalize(name: str) -> str:
    """Strip accents: "naïve café" -> "naive cafe" – keep π."""
    table = {"ï": "i", "é": "e"}
    out = []
    for ch in name:
        out.append(table.get(ch, ch))
    return "".join(out)


print(normalize("naïve café – π ≈ 3.14"))
'''

CHAT_SINGLE = [{"role": "user", "content": "What causes the seasons on Earth? Answer in two sentences."}]

CHAT_MULTI = [
    {
        "role": "system",
        "content": "You are a patient tutor who explains science to curious teenagers. "
        "Keep answers short, concrete and friendly, and use everyday examples.",
    },
    {"role": "user", "content": "Why is the sky blue during the day?"},
    {
        "role": "assistant",
        "content": "Sunlight contains every colour. When it passes through the air, tiny gas molecules "
        "scatter the short blue wavelengths much more strongly than the long red ones, so blue light "
        "reaches your eyes from every direction of the sky. That scattered glow is what you see as a "
        "blue sky, even when you look away from the Sun.",
    },
    {
        "role": "user",
        "content": "Then why are sunsets red and orange instead? My friend says it is because the Sun "
        "is cooler in the evening, but that sounds wrong to me. And would the same thing happen on "
        "Mars, where the air is thin and very dusty? Please explain both in a way I could repeat to "
        "my younger brother, who is eight.",
    },
]

STORIES_TEXT = (
    "Once upon a time, there was a little boy named Tom. He had a red ball. One day, he went to the "
    "park with his mom."
)

# --------------------------------------------------------------------------------------------------
# Helpers


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def r6(x: float) -> float:
    """Round to 6 significant digits (what the goldens store)."""
    return float(f"{float(x):.6g}")


def r2(x: float) -> float:
    return float(f"{float(x):.2g}")


def gguf_scalar(reader: gguf.GGUFReader, key: str):
    field = reader.fields.get(key)
    if field is None:
        return None
    return field.contents()


@contextlib.contextmanager
def hide_out_of_range_special_ids():
    """Make transformers' GGUF metadata reader drop special-token ids outside the vocabulary.

    stories260K.gguf stores 0xFFFFFFFF ("no such token") for the padding and separator ids; transformers
    5.23 indexes the vocabulary with them and fails. Dropping the key is what "none" means.
    """
    from transformers.integrations.gguf import reader as gguf_reader_mod

    original = gguf_reader_mod.read_gguf_metadata

    def patched(path, *args, **kwargs):
        metadata, names = original(path, *args, **kwargs)
        tokens = metadata.get("tokenizer.ggml.tokens")
        n_vocab = tokens if isinstance(tokens, int) else len(tokens) if tokens is not None else None
        if n_vocab is not None:
            for key in list(metadata):
                if key.startswith("tokenizer.ggml.") and key.endswith("_token_id"):
                    value = metadata[key]
                    if isinstance(value, int) and not 0 <= value < n_vocab:
                        del metadata[key]
        return metadata, names

    gguf_reader_mod.read_gguf_metadata = patched
    try:
        yield
    finally:
        gguf_reader_mod.read_gguf_metadata = original


# --------------------------------------------------------------------------------------------------
# Independent numpy forward over the GGUF tensors as stored (float64 arithmetic)


class NumpyModel:
    def __init__(self, reader: gguf.GGUFReader, arch: str):
        self.arch = arch
        self.w: dict[str, np.ndarray] = {}
        for t in reader.tensors:
            a = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
            shape = tuple(int(d) for d in reversed(t.shape))  # ggml dims are innermost-first
            self.w[t.name] = a.reshape(shape)
        p = f"{arch}."
        self.n_layer = int(gguf_scalar(reader, p + "block_count"))
        self.n_embd = int(gguf_scalar(reader, p + "embedding_length"))
        self.n_head = int(gguf_scalar(reader, p + "attention.head_count"))
        self.n_kv = int(gguf_scalar(reader, p + "attention.head_count_kv") or self.n_head)
        self.eps = float(gguf_scalar(reader, p + "attention.layer_norm_rms_epsilon"))
        theta = gguf_scalar(reader, p + "rope.freq_base")
        self.theta = float(theta) if theta is not None else 10000.0
        self.head_dim = self.n_embd // self.n_head
        rope_dims = gguf_scalar(reader, p + "rope.dimension_count")
        assert rope_dims is None or int(rope_dims) == self.head_dim, "partial RoPE not handled here"
        # llama: GGUF rows are permuted -> rotate adjacent pairs; qwen2: unpermuted -> rotate halves.
        self.adjacent_pairs = {"llama": True, "qwen2": False}[arch]

    def mat(self, name: str) -> np.ndarray:
        return self.w[name].astype(np.float64)

    def rmsnorm(self, x: np.ndarray, name: str) -> np.ndarray:
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * self.mat(name)

    def rope(self, x: np.ndarray) -> np.ndarray:
        """x: [T, heads, d]; position of row t is t."""
        t_len, _, d = x.shape
        inv_freq = self.theta ** (-np.arange(0, d, 2, dtype=np.float64) / d)  # [d/2]
        ang = np.arange(t_len, dtype=np.float64)[:, None] * inv_freq[None, :]  # [T, d/2]
        cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        if self.adjacent_pairs:
            a, b = x[..., 0::2], x[..., 1::2]
        else:
            a, b = x[..., : d // 2], x[..., d // 2 :]
        ra, rb = a * cos - b * sin, a * sin + b * cos
        out = np.empty_like(x)
        if self.adjacent_pairs:
            out[..., 0::2], out[..., 1::2] = ra, rb
        else:
            out[..., : d // 2], out[..., d // 2 :] = ra, rb
        return out

    def linear(self, x: np.ndarray, name: str) -> np.ndarray:
        y = x @ self.mat(name + ".weight").T
        bias = self.w.get(name + ".bias")
        if bias is not None:
            y = y + bias.astype(np.float64)
        return y

    def forward(self, tokens: list[int]) -> np.ndarray:
        t_len, d = len(tokens), self.head_dim
        x = self.w["token_embd.weight"][tokens].astype(np.float64)
        mask = np.triu(np.full((t_len, t_len), -np.inf), k=1)
        group = self.n_head // self.n_kv
        for layer in range(self.n_layer):
            b = f"blk.{layer}."
            h = self.rmsnorm(x, b + "attn_norm.weight")
            q = self.rope(self.linear(h, b + "attn_q").reshape(t_len, self.n_head, d))
            k = self.rope(self.linear(h, b + "attn_k").reshape(t_len, self.n_kv, d))
            v = self.linear(h, b + "attn_v").reshape(t_len, self.n_kv, d)
            heads = []
            for hd in range(self.n_head):
                kv = hd // group
                s = q[:, hd, :] @ k[:, kv, :].T / math.sqrt(d) + mask
                s = np.exp(s - s.max(axis=-1, keepdims=True))
                s /= s.sum(axis=-1, keepdims=True)
                heads.append(s @ v[:, kv, :])
            x = x + self.linear(np.concatenate(heads, axis=-1), b + "attn_output")
            h = self.rmsnorm(x, b + "ffn_norm.weight")
            gate = self.linear(h, b + "ffn_gate")
            up = self.linear(h, b + "ffn_up")
            x = x + self.linear(gate / (1.0 + np.exp(-gate)) * up, b + "ffn_down")
        x = self.rmsnorm(x, "output_norm.weight")
        out_name = "output.weight" if "output.weight" in self.w else "token_embd.weight"
        return x @ self.mat(out_name).T


# --------------------------------------------------------------------------------------------------
# Reference model (transformers)


class Reference:
    def __init__(self, assets: Path, file_name: str, patch_special_ids: bool):
        ctx = hide_out_of_range_special_ids() if patch_special_ids else contextlib.nullcontext()
        with ctx:
            self.tok = AutoTokenizer.from_pretrained(str(assets), gguf_file=file_name)
            # The config side reads the pad id through another path: override it to "none" there.
            extra = {"pad_token_id": None} if patch_special_ids else {}
            self.model = AutoModelForCausalLM.from_pretrained(
                str(assets), gguf_file=file_name, dtype=torch.float32, attn_implementation="eager", **extra
            )
        self.model.eval()
        # The legacy (gguf-py) path must have been taken: a dense float32 model.
        for name, p in self.model.named_parameters():
            assert p.dtype == torch.float32, f"{name} is {p.dtype}, expected a dense f32 model"

    @torch.no_grad()
    def logits(self, tokens: list[int]) -> torch.Tensor:
        ids = torch.tensor([tokens], dtype=torch.long)
        return self.model(input_ids=ids, use_cache=False).logits[0].float()

    @torch.no_grad()
    def greedy(self, tokens: list[int], n_new: int, stop_ids: list[int]) -> tuple[list[int], list[float]]:
        """Manual argmax loop over the KV cache (prompt in one forward, then one token per step)."""
        out = self.model(input_ids=torch.tensor([tokens]), use_cache=True)
        generated, margins = [], []
        for _ in range(n_new):
            last = out.logits[0, -1].float()
            top2 = torch.topk(last, 2)
            nxt = int(top2.indices[0])
            generated.append(nxt)
            margins.append(float(top2.values[0] - top2.values[1]))
            if nxt in stop_ids:
                break
            out = self.model(
                input_ids=torch.tensor([[nxt]]), past_key_values=out.past_key_values, use_cache=True
            )
        if not stop_ids:
            # Raw continuation past any end token: generate() would stop at the
            # model's configured EOS, so only the manual loop applies.
            return generated, margins
        # The same thing through generate(), as a check of the loop.
        gen = self.model.generate(
            torch.tensor([tokens]),
            attention_mask=torch.ones(1, len(tokens), dtype=torch.long),
            do_sample=False,
            num_beams=1,
            temperature=None,
            top_p=None,
            top_k=None,
            repetition_penalty=None,
            max_new_tokens=n_new,
            min_new_tokens=0,
            eos_token_id=stop_ids,
            pad_token_id=stop_ids[0],
        )[0, len(tokens) :].tolist()
        assert gen == generated, f"generate() {gen} != manual greedy loop {generated}"
        return generated, margins

    def encode(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def chat(self, messages: list[dict]) -> str:
        return self.tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def spm_encode(reader: gguf.GGUFReader, text: str) -> list[int]:
    """SentencePiece BPE as llama.cpp applies it to a "llama" vocabulary (no BOS).

    Spaces become U+2581 and one is prefixed; then the adjacent pair whose concatenation is a vocabulary
    piece with the highest score is merged (leftmost on ties) until none is; leftovers fall back to
    <0xXX> byte tokens. Used only to confirm transformers' encoding of the stories text.
    """
    f_tok, f_score = reader.fields["tokenizer.ggml.tokens"], reader.fields["tokenizer.ggml.scores"]
    pieces = [bytes(f_tok.parts[i]).decode("utf-8") for i in f_tok.data]
    scores = [float(f_score.parts[i][0]) for i in f_score.data]
    vocab = {p: i for i, p in enumerate(pieces)}
    syms = list("\u2581" + text.replace(" ", "\u2581"))
    while True:
        best = None
        for i in range(len(syms) - 1):
            merged = syms[i] + syms[i + 1]
            if merged in vocab and (best is None or scores[vocab[merged]] > best[0]):
                best = (scores[vocab[merged]], i)
        if best is None:
            break
        i = best[1]
        syms[i : i + 2] = [syms[i] + syms[i + 1]]
    out = []
    for sym in syms:
        out += [vocab[sym]] if sym in vocab else [vocab[f"<0x{b:02X}>"] for b in sym.encode("utf-8")]
    return out


def case_record(ref: Reference, np_model: NumpyModel, name: str, text: str, tokens: list[int], probes):
    logits = ref.logits(tokens)  # [T, V]
    top = torch.topk(logits, TOP_K, dim=-1)
    np_logits = np_model.forward(tokens)
    diff = float(np.max(np.abs(np_logits - logits.double().numpy())))
    np_argmax_agree = float(np.mean(np_logits.argmax(-1) == logits.argmax(-1).numpy()))
    print(f"  case {name}: {len(tokens)} tokens, numpy max |diff| {diff:.3g}, argmax agree {np_argmax_agree}")
    # f32 vs f64 over <=30 layers: ~1e-4. A convention error (RoPE pairing, bias, norm) gives O(1).
    assert diff < 5e-3, f"numpy forward disagrees with transformers on {name}: {diff}"
    return {
        "name": name,
        "text": text,
        "n_tokens": len(tokens),
        "tokens": tokens,
        "numpy_max_abs_diff": r2(diff),
        "argmax": logits.argmax(-1).tolist(),
        "margin": [r6(m) for m in (top.values[:, 0] - top.values[:, 1]).tolist()],
        "top_ids": top.indices.tolist(),
        "top_logits": [[r6(v) for v in row] for row in top.values.tolist()],
        "probe_logits": [[r6(v) for v in row] for row in logits[:, probes].tolist()],
    }


def greedy_record(ref: Reference, prompt: str, tokens: list[int], n_new: int, stop_ids: list[int], kind: str):
    generated, margins = ref.greedy(tokens, n_new, stop_ids)
    text = ref.tok.decode(generated, skip_special_tokens=False)
    print(f"  greedy {kind} {prompt!r}: {text!r}")
    return {
        "prompt": prompt,
        "kind": kind,
        "tokens": tokens,
        "max_new_tokens": n_new,
        "stop_ids": stop_ids,
        "stopped_at_stop_id": bool(generated and generated[-1] in stop_ids),
        "generated": generated,
        "margin": [r6(m) for m in margins],
        "text": text,
    }


# --------------------------------------------------------------------------------------------------
# Config mapping check


def config_check(reader: gguf.GGUFReader, arch: str, cfg) -> tuple[dict, dict, list[str]]:
    p = f"{arch}."
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    has_output = "output.weight" in types
    n_tokens = len(reader.fields["tokenizer.ggml.tokens"].data)
    meta = {
        "general.architecture": arch,
        p + "block_count": gguf_scalar(reader, p + "block_count"),
        p + "embedding_length": gguf_scalar(reader, p + "embedding_length"),
        p + "feed_forward_length": gguf_scalar(reader, p + "feed_forward_length"),
        p + "attention.head_count": gguf_scalar(reader, p + "attention.head_count"),
        p + "attention.head_count_kv": gguf_scalar(reader, p + "attention.head_count_kv"),
        p + "attention.layer_norm_rms_epsilon": gguf_scalar(reader, p + "attention.layer_norm_rms_epsilon"),
        p + "rope.freq_base": gguf_scalar(reader, p + "rope.freq_base"),
        p + "rope.dimension_count": gguf_scalar(reader, p + "rope.dimension_count"),
        p + "context_length": gguf_scalar(reader, p + "context_length"),
        p + "vocab_size": gguf_scalar(reader, p + "vocab_size"),
        "tokenizer.ggml.tokens (count)": n_tokens,
        "tokenizer.ggml.model": gguf_scalar(reader, "tokenizer.ggml.model"),
        "tokenizer.ggml.pre": gguf_scalar(reader, "tokenizer.ggml.pre"),
        "tokenizer.ggml.bos_token_id": gguf_scalar(reader, "tokenizer.ggml.bos_token_id"),
        "tokenizer.ggml.eos_token_id": gguf_scalar(reader, "tokenizer.ggml.eos_token_id"),
        "tokenizer.ggml.padding_token_id": gguf_scalar(reader, "tokenizer.ggml.padding_token_id"),
        "tokenizer.ggml.add_bos_token": gguf_scalar(reader, "tokenizer.ggml.add_bos_token"),
        "has output.weight": has_output,
        "token_embd.weight type": types.get("token_embd.weight"),
        "output.weight type": types.get("output.weight"),
    }
    rope_params = getattr(cfg, "rope_parameters", None) or {}
    rope_theta = rope_params.get("rope_theta", getattr(cfg, "rope_theta", None))
    derived = {
        "model_type": cfg.model_type,
        "num_hidden_layers": cfg.num_hidden_layers,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "head_dim": getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": rope_theta,
        "rope_type": rope_params.get("rope_type"),
        "max_position_embeddings": cfg.max_position_embeddings,
        "vocab_size": cfg.vocab_size,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "attention_bias": getattr(cfg, "attention_bias", None),
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id,
        "pad_token_id": cfg.pad_token_id,
    }
    notes = []

    def expect(what: str, got, want):
        ok = got == want
        notes.append(f"{'ok' if ok else 'MISMATCH'}: {what}: transformers {got!r}, GGUF {want!r}")
        return ok

    expect("num_hidden_layers", derived["num_hidden_layers"], meta[p + "block_count"])
    expect("hidden_size", derived["hidden_size"], meta[p + "embedding_length"])
    expect("intermediate_size", derived["intermediate_size"], meta[p + "feed_forward_length"])
    expect("num_attention_heads", derived["num_attention_heads"], meta[p + "attention.head_count"])
    expect("num_key_value_heads", derived["num_key_value_heads"], meta[p + "attention.head_count_kv"])
    expect("rms_norm_eps (the f32 stored, widened to f64)", derived["rms_norm_eps"],
           meta[p + "attention.layer_norm_rms_epsilon"])
    want_theta = meta[p + "rope.freq_base"]
    if want_theta is None:
        notes.append(f"note: GGUF has no {p}rope.freq_base; transformers used {rope_theta!r} "
                     "(the llama default 10000, same as llama.cpp's default)")
    else:
        expect("rope_theta", rope_theta, want_theta)
    rope_dims = meta[p + "rope.dimension_count"]
    expect("head_dim vs rope.dimension_count (full rotary)", derived["head_dim"],
           rope_dims if rope_dims is not None else derived["head_dim"])
    want_vocab = meta[p + "vocab_size"] if meta[p + "vocab_size"] is not None else n_tokens
    expect("vocab_size (GGUF vocab_size key, else token count)", derived["vocab_size"], want_vocab)
    expect("max_position_embeddings vs context_length", derived["max_position_embeddings"],
           meta[p + "context_length"])
    expect("tie_word_embeddings vs (no output.weight)", derived["tie_word_embeddings"], not has_output)
    expect("rope_type", derived["rope_type"], "default")
    if arch == "llama":
        notes.append("rope style: GGUF llama attn_q/attn_k rows are permuted for adjacent-pair RoPE; "
                     "transformers un-permutes them at load (LlamaTensorProcessor) and applies rotate-half. "
                     "The numpy forward rotates adjacent pairs (2i, 2i+1) on the raw GGUF rows and agrees.")
    else:
        notes.append("rope style: qwen2 GGUF rows are not permuted; transformers applies rotate-half "
                     "(pairs i, i+d/2) to them as stored. The numpy forward does the same and agrees.")
    if arch == "qwen2":
        notes.append("qwen2: attn_q/k/v biases present in the GGUF and used (Qwen2 always has them; "
                     "Qwen2Config has no attention_bias key)")
    return meta, derived, notes


# --------------------------------------------------------------------------------------------------
# JSON output: readable, one row of numbers per line


def dump(obj, indent: int = 0) -> str:
    pad, inner = " " * indent, " " * (indent + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{inner}{json.dumps(k)}: {dump(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list):
        if all(not isinstance(v, (dict, list)) for v in obj):
            return "[" + ",".join(dump(v) for v in obj) + "]"
        return "[\n" + ",\n".join(inner + dump(v, indent + 1) for v in obj) + "\n" + pad + "]"
    if isinstance(obj, float):
        assert math.isfinite(obj), obj
        return repr(obj)
    return json.dumps(obj, ensure_ascii=False)


# --------------------------------------------------------------------------------------------------


def versions() -> dict:
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
        "gguf": getattr(gguf, "__version__", None) or _dist_version("gguf"),
        "numpy": np.__version__,
        "tokenizers": tokenizers.__version__,
    }


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def make_golden(assets: Path, out_dir: Path, key: str) -> Path:
    spec = {
        "smollm2": ("SmolLM2-135M-Instruct.Q4_1.gguf", "llama"),
        "qwen2.5": ("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", "qwen2"),
        "stories": ("stories260K.gguf", "llama"),
    }[key]
    file_name, arch = spec
    path = assets / file_name
    if not path.is_file():
        raise SystemExit(f"{path} is missing: run scripts/fetch-assets.sh")
    print(f"== {file_name}")
    reader = gguf.GGUFReader(str(path))
    assert gguf_scalar(reader, "general.architecture") == arch
    ref = Reference(assets, file_name, patch_special_ids=(key == "stories"))
    np_model = NumpyModel(reader, arch)
    meta, derived, notes = config_check(reader, arch, ref.model.config)
    out_w, embd_w = np_model.w.get("output.weight"), np_model.w["token_embd.weight"]
    if out_w is not None and out_w.shape == embd_w.shape:
        delta = float(np.max(np.abs(out_w - embd_w)))
        notes.append(f"output.weight ({meta['output.weight type']}) and token_embd.weight "
                     f"({meta['token_embd.weight type']}) are separate tensors, max |difference| after "
                     f"dequantization {r2(delta)}"
                     + (" (identical: stored twice)" if delta == 0.0 else "")
                     + ": the logits use output.weight, not the embedding")
    for n in notes:
        print("  " + n)

    vocab = ref.model.config.vocab_size
    probes = sorted(np.random.default_rng(PROBE_SEED).choice(vocab, size=N_PROBES, replace=False).tolist())
    eos = int(gguf_scalar(reader, "tokenizer.ggml.eos_token_id"))

    cases, greedy = [], []
    if key == "stories":
        bos = int(gguf_scalar(reader, "tokenizer.ggml.bos_token_id"))
        ids = [bos] + ref.encode(STORIES_TEXT)
        assert ref.tok.decode(ids[1:]) == STORIES_TEXT, ref.tok.decode(ids[1:])
        assert ids[1:] == spm_encode(reader, STORIES_TEXT), "transformers and spm_encode disagree"
        cases.append(case_record(ref, np_model, "story_plain_with_bos", STORIES_TEXT, ids, probes))
        g = greedy_record(ref, "", [bos], STORIES_GREEDY_TOKENS, [eos], "bos_only")
        assert g["text"].startswith(
            "Once upon a time, there was a little girl named Lily. She loved to play outside in the park"
        ), g["text"]
        greedy.append(g)
        encoding = ("BOS (id 1) prepended by hand, then the text encoded with add_special_tokens=False; "
                    "text is what follows BOS")
    else:
        for text in (CAPITAL, PARAGRAPH, CODE):
            assert ref.encode(text) == ref.tok(text)["input_ids"], "tokenizer adds special tokens?"
        chat1, chat2 = ref.chat(CHAT_SINGLE), ref.chat(CHAT_MULTI)
        for name, text in (
            ("capital_plain", CAPITAL),
            ("paragraph_plain", PARAGRAPH),
            ("python_code_unicode_plain", CODE),
            ("chat_single_user", chat1),
            ("chat_multi_turn", chat2),
        ):
            ids = ref.encode(text)
            assert ref.tok.decode(ids) == text, (name, ref.tok.decode(ids))
            cases.append(case_record(ref, np_model, name, text, ids, probes))
        stop = [eos]
        endoftext = ref.tok.convert_tokens_to_ids("<|endoftext|>")
        if isinstance(endoftext, int) and endoftext not in stop and endoftext != ref.tok.unk_token_id:
            stop.append(endoftext)
        # The plain continuation ignores end tokens, so it always runs the
        # full GREEDY_TOKENS (SmolLM2 emits <|im_end|> after 30 tokens).
        cap = greedy_record(ref, CAPITAL, ref.encode(CAPITAL), GREEDY_TOKENS, [], "plain")
        if key == "smollm2":
            assert cap["text"].startswith(" Paris."), cap["text"]
            chat_q = [{"role": "user", "content": "What is the capital of France?"}]
            # The answer above is short; this one runs the full 48 tokens.
            extra_chat = [[{"role": "user",
                            "content": "Give me three tips for staying focused while studying."}]]
        else:
            assert cap["text"].lstrip().startswith("Paris"), cap["text"]
            chat_q = [{"role": "user", "content": "Write a Python function that adds two numbers."}]
            extra_chat = []
        greedy.append(cap)
        for messages in [chat_q] + extra_chat:
            rendered = ref.chat(messages)
            greedy.append(greedy_record(ref, rendered, ref.encode(rendered), GREEDY_TOKENS, stop, "chat"))
        encoding = ("text encoded with add_special_tokens=False (identical to the default here: no BOS); "
                    "chat texts rendered by the GGUF's chat_template via apply_chat_template("
                    "add_generation_prompt=True, tokenize=False); special tokens in the text are matched")

    v = versions()
    golden = {
        "model_file": file_name,
        "model_sha256": sha256_of(path),
        "generator": GENERATOR,
        "reference": (f"transformers {v['transformers']} torch {v['torch']}, gguf_file dequantized f32 "
                      f"(gguf-py {v['gguf']}), eager attention, CPU, 1 thread"
                      + ("; stories260K loaded with out-of-range special-token ids hidden from transformers"
                         if key == "stories" else "")),
        "versions": v,
        "crosscheck": ("numpy_max_abs_diff per case: max |logit| difference between transformers and an "
                       "independent float64 numpy forward over the GGUF tensors as stored (adjacent-pair "
                       "RoPE for llama, half-split for qwen2)"),
        "positions": "row i of argmax/margin/top_*/probe_logits = prediction after tokens[0..=i]",
        "encoding": encoding,
        "greedy_method": ("manual argmax loop with the transformers KV cache (one prompt forward, then one "
                          "token per step), checked equal to model.generate(do_sample=False); stops after "
                          "emitting a stop id; margin = top1 - top2 logit at each step"),
        "gguf_metadata": meta,
        "transformers_config": derived,
        "config_notes": notes,
        "probe_seed": PROBE_SEED,
        "probe_ids": probes,
        "cases": cases,
        "greedy": greedy,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / (Path(file_name).stem + ".logits.json")
    out.write_text(dump(golden) + "\n", encoding="utf-8")
    print(f"  wrote {out} ({out.stat().st_size} bytes)")
    return out


def main() -> None:
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--assets", type=Path,
                    default=Path(os.environ.get("SMELT_ASSETS", Path.home() / ".cache/smelt/assets")))
    ap.add_argument("--out", type=Path, default=here.parent / "crates/model/tests/golden")
    ap.add_argument("--only", action="append", choices=["smollm2", "qwen2.5", "stories"])
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(0)
    for key in args.only or ["stories", "smollm2", "qwen2.5"]:
        make_golden(args.assets, args.out, key)


if __name__ == "__main__":
    main()
