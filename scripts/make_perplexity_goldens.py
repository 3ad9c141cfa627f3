#!/usr/bin/env python3
"""Reference perplexities for `smelt perplexity` (crates/cli/tests/perplexity_cli.rs).

Writes crates/cli/tests/fixtures/perplexity/stories260K.ppl.json: the perplexity of stories260K.gguf
over crates/cli/tests/fixtures/perplexity/story.txt (an original story written for this test), computed
with HF transformers on the same GGUF with llama.cpp's perplexity conventions.

How to run (CPU only, well under a minute):
    /tmp/refenv/v/bin/python scripts/make_perplexity_goldens.py
        [--assets DIR]   default: $SMELT_ASSETS or ~/.cache/smelt/assets (scripts/fetch-assets.sh)

Python packages it was generated with (pip install ...):
    torch==2.15.0 (CPU use only)  transformers==5.23.0  gguf==0.19.0  numpy==2.4.6
    tokenizers==0.23.3  sentencepiece==0.2.3
The versions actually used are written into the golden file ("versions").

The conventions (llama.cpp tools/perplexity, `perplexity()`), reproduced here independently of Smelt:
  * the whole text is tokenized once, with BOS prepended when the vocabulary adds one
    (stories260K: SentencePiece "llama" vocabulary, BOS id 1);
  * it is cut into n_chunk = min(--chunks, n_tokens // ctx) non-overlapping chunks of ctx tokens;
    chunk k is tokens[k*ctx : (k+1)*ctx], run from an empty cache, with its first token replaced by BOS;
  * only the second half is scored: with first = ctx // 2, the logits at positions first .. ctx-2
    predict tokens first+1 .. ctx-1 (ctx - 1 - first predictions per chunk);
  * nll = -log softmax(logits)[next token]; PPL = exp(mean nll), and its +/- is llama.cpp's
    PPL * sqrt((mean(nll^2) - mean(nll)^2) / (count - 1)); the running value after each chunk is
    what llama.cpp prints as [1]x,[2]y,...

Loading stories260K with transformers needs the workaround described in make_logit_goldens.py (its
0xFFFFFFFF padding/separator ids are hidden from transformers' GGUF reader; pad_token_id=None). The
token ids transformers' tokenizer produces are checked against a plain score-greedy SentencePiece
merge (make_logit_goldens.spm_encode), i.e. what llama.cpp's tokenizer does on this vocabulary.
Everything runs in float32 on one thread; log-softmax and the sums are in float64.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import gguf  # noqa: E402
import torch  # noqa: E402

SCRIPTS = Path(__file__).resolve().parent
REPO = SCRIPTS.parent
FIXTURES = REPO / "crates" / "cli" / "tests" / "fixtures" / "perplexity"
sys.path.insert(0, str(SCRIPTS))
from make_logit_goldens import hide_out_of_range_special_ids, spm_encode  # noqa: E402

MODEL_FILE = "stories260K.gguf"
TEXT_FILE = "story.txt"
# (ctx, chunk limit or None for all): the cases the Rust test runs.
CASES = [(128, None), (256, 3)]


def perplexity(model, tokens: list[int], bos: int, ctx: int, chunks: int | None) -> dict:
    n_chunk = len(tokens) // ctx
    if chunks is not None:
        n_chunk = min(n_chunk, chunks)
    first = ctx // 2
    nll = nll2 = 0.0
    count = 0
    running = []
    for k in range(n_chunk):
        chunk = list(tokens[k * ctx : (k + 1) * ctx])
        chunk[0] = bos
        with torch.no_grad():
            logits = model(torch.tensor([chunk])).logits[0].double()
        logp = torch.log_softmax(logits, dim=-1)
        for pos in range(first, ctx - 1):
            target = tokens[k * ctx + pos + 1]
            v = -float(logp[pos, target])
            nll += v
            nll2 += v * v
            count += 1
        running.append(math.exp(nll / count))
    mean = nll / count
    var = nll2 / count - mean * mean
    ppl = math.exp(mean)
    return {
        "ctx": ctx,
        "chunks": n_chunk,
        "scored": count,
        "ppl": ppl,
        "ppl_stderr": ppl * math.sqrt(var / (count - 1)),
        "running": running,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_assets = os.environ.get("SMELT_ASSETS") or str(Path.home() / ".cache" / "smelt" / "assets")
    ap.add_argument("--assets", default=default_assets)
    args = ap.parse_args()
    assets = Path(args.assets)
    if not (assets / MODEL_FILE).exists():
        sys.exit(f"missing {assets / MODEL_FILE}: run scripts/fetch-assets.sh")
    torch.set_num_threads(1)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    text = (FIXTURES / TEXT_FILE).read_text(encoding="utf-8")
    with hide_out_of_range_special_ids():
        tok = AutoTokenizer.from_pretrained(str(assets), gguf_file=MODEL_FILE)
        model = AutoModelForCausalLM.from_pretrained(
            str(assets), gguf_file=MODEL_FILE, dtype=torch.float32, attn_implementation="eager", pad_token_id=None
        )
    model.eval()
    tokens = tok(text).input_ids
    bos = tok.bos_token_id
    assert bos == 1 and tokens[0] == bos, (bos, tokens[:4])
    spm = spm_encode(gguf.GGUFReader(str(assets / MODEL_FILE)), text)
    assert tokens[1:] == spm, "transformers' tokenizer disagrees with the SentencePiece merge"
    print(f"{TEXT_FILE}: {len(text)} chars, {len(tokens)} tokens (with BOS)")

    cases = []
    for ctx, chunks in CASES:
        case = perplexity(model, tokens, bos, ctx, chunks)
        print(f"  ctx {ctx}, {case['chunks']} chunks: PPL = {case['ppl']:.4f} +/- {case['ppl_stderr']:.5f}")
        cases.append(case)

    versions = {p: importlib.metadata.version(p) for p in ("torch", "transformers", "gguf", "numpy", "tokenizers")}
    golden = {
        "model": MODEL_FILE,
        "text": TEXT_FILE,
        "reference": "transformers AutoModelForCausalLM.from_pretrained(gguf_file=...), float32, eager attention",
        "versions": versions,
        "n_tokens": len(tokens),
        "cases": cases,
    }
    out = FIXTURES / "stories260K.ppl.json"
    out.write_text(json.dumps(golden, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
