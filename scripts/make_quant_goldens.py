#!/usr/bin/env python3
"""Golden files for smelt-tensor's quantizers (`smelt_tensor::quantize`).

Run from the repository root:

    /tmp/refenv/v/bin/python scripts/make_quant_goldens.py

Requires (pip): numpy==2.4.6, gguf==0.19.0 (gguf-py). Deterministic (fixed
numpy seed). Writes, under crates/tensor/tests/golden/quantize/:

  <case>.in.f32     the input tensor, little-endian f32, row-major
                    (n_rows x row_len, given in the manifest).
  <case>.<TYPE>.bin gguf-py's bytes for `gguf.quants.quantize(x, TYPE)`
                    (small cases only).
  manifest.json     per case: shape, distribution, and per type either the
                    expected file or the sha256 of the expected bytes (the
                    large case, to keep the fixtures small).

How gguf-py 0.19.0 rounds (what the Rust side must reproduce exactly; all
arithmetic in float32, no fused multiply-add):

  F16   `x.astype(np.float16)`: round to nearest, ties to even.
  BF16  bits + 0x7fff + ((bits >> 16) & 1), then >> 16 (nearest, ties to
        even); NaNs forced quiet. (Smelt refuses NaN/Inf input anyway.)
  Q4_0  m = the element of largest |x| (first one on ties, with its sign),
        d = m / -8, id = 1/d (0 if d == 0),
        q = min(15, trunc(x * id + 8.5)); d stored as f16 (nearest even).
  Q5_0  as Q4_0 with d = m / -16, q = min(31, trunc(x * id + 16.5)).
  Q4_1  d = (max - min) / 15, id = 1/d (0 if d == 0),
        q = min(15, trunc((x - min) * id + 0.5)); d and min as f16.
  Q5_1  as Q4_1 with /31 and min(31, ...).
  Q8_0  d = max|x| / 127, id = 1/d (0 if d == 0),
        q = round-half-away-from-zero(x * id) (gguf's np_roundf).
  The scale used to compute q is the f32 d, not its f16 rounding.

K-quants (Q4_K, Q5_K, Q6_K) are not here: gguf-py cannot quantize them.
"""

import hashlib
import importlib.metadata
import json
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T

OUT = Path(__file__).resolve().parent.parent / "crates" / "tensor" / "tests" / "golden" / "quantize"
SEED = 20250307

ALL_TYPES = [T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1]
FLOAT_TYPES = [T.F32, T.F16, T.BF16]


def random_bits(rng: np.random.Generator, n: int) -> np.ndarray:
    """Finite f32 values from random bit patterns over a wide exponent range,
    with some low halves forced to bf16 rounding ties (0x8000) and near-ties."""
    sign = rng.integers(0, 2, size=n, dtype=np.uint32) << np.uint32(31)
    exp = rng.integers(127 - 40, 127 + 41, size=n, dtype=np.uint32) << np.uint32(23)
    mant = rng.integers(0, 1 << 23, size=n, dtype=np.uint32)
    bits = sign | exp | mant
    bits[::7] = (bits[::7] & np.uint32(0xFFFF0000)) | np.uint32(0x8000)
    bits[3::11] = (bits[3::11] & np.uint32(0xFFFF0000)) | np.uint32(0x7FFF)
    bits[:3] = [0x00000000, 0x80000000, 0x00000001]  # zeros, a subnormal
    return bits.view(np.float32)


def ties(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Q8_0 rounding ties: each 32-block holds ±127 d (so d = max / 127 is a
    power of two, 1/8, exactly) and multiples of d / 2 elsewhere, so x * id
    lands exactly on n + 0.5 for about half the elements."""
    n_rows, row_len = shape
    x = rng.integers(-253, 254, size=shape).astype(np.float32) / 2
    x = x.reshape(n_rows, row_len // 32, 32)
    x[:, :, 0] = 127 * rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=(n_rows, row_len // 32))
    return (x.reshape(shape) * np.float32(0.125)).astype(np.float32)


def cases(rng: np.random.Generator) -> list[tuple[str, str, np.ndarray, list[T], bool]]:
    """(name, description, data, types, store bytes (else sha256 only))."""
    out = []

    def add(name, desc, data, types=ALL_TYPES, store=True):
        out.append((name, desc, np.ascontiguousarray(data, dtype=np.float32), types, store))

    add("normal", "N(0, 0.02), 7 x 64", rng.normal(0, 0.02, (7, 64)))
    add("uniform", "U(-1, 1), 3 x 96", rng.uniform(-1, 1, (3, 96)))
    x = rng.normal(0, 0.05, (5, 128))
    idx = rng.integers(0, x.size, 12)
    x.reshape(-1)[idx] *= 100  # a few large outliers
    add("outliers", "N(0, 0.05) with 12 values x100, 5 x 128", x)
    add("heavy_tail", "Student-t (df 2) * 0.1, 4 x 64", rng.standard_t(2, (4, 64)) * 0.1)
    add("positive_bias", "N(0.5, 0.1), all-positive blocks, 2 x 256", rng.normal(0.5, 0.1, (2, 256)))
    x = rng.normal(0, 1e-6, (1, 96))  # tiny values: f16 scales become subnormal
    x[0, 32:64] = 0.3  # a constant block (max == min)
    x[0, 64:96] = -0.3 * rng.uniform(0.999, 1.0, 32)  # a near-constant negative block
    add("tiny_and_constant", "1 x 96: tiny N(0, 1e-6); constant 0.3; near-constant -0.3", x)
    add("ties", "rounding ties for Q8_0 (halves of integers), 3 x 64", ties(rng, (3, 64)))
    add("one_block", "U(-3, 3), 1 x 32", rng.uniform(-3, 3, (1, 32)))
    add("many_rows", "N(0, 1), 9 x 32", rng.normal(0, 1, (9, 32)))
    add("float_bits", "random finite f32 bit patterns, 2^-40..2^41, bf16 ties, 5 x 40",
        random_bits(rng, 200).reshape(5, 40), types=[T.F32, T.BF16])
    add("f16_range", "magnitudes 2^-26..2^15 (f16 subnormals to near max), 4 x 50",
        (rng.choice([-1.0, 1.0], (4, 50)) * np.exp2(rng.uniform(-26, 15.9, (4, 50)))), types=FLOAT_TYPES)
    add("large", "N(0, 0.02) rows with per-row scale 10^U(-2, 2), 32 x 512 (sha256 only)",
        rng.normal(0, 0.02, (32, 512)) * np.power(10.0, rng.uniform(-2, 2, (32, 1))), store=False)
    return out


def main() -> None:
    rng = np.random.default_rng(SEED)
    OUT.mkdir(parents=True, exist_ok=True)
    manifest = {
        "generator": "scripts/make_quant_goldens.py",
        "numpy": np.__version__,
        "gguf": importlib.metadata.version("gguf"),
        "seed": SEED,
        "cases": {},
    }
    for name, desc, data, types, store in cases(rng):
        assert np.all(np.isfinite(data)), name
        n_rows, row_len = data.shape
        (OUT / f"{name}.in.f32").write_bytes(data.astype("<f4").tobytes())
        entry = {"description": desc, "n_rows": n_rows, "row_len": row_len, "types": {}}
        for qtype in types:
            q = gguf.quants.quantize(data, qtype)
            raw = np.ascontiguousarray(q).view(np.uint8).reshape(-1).tobytes()
            if store:
                file = f"{name}.{qtype.name}.bin"
                (OUT / file).write_bytes(raw)
                entry["types"][qtype.name] = {"file": file, "n_bytes": len(raw)}
            else:
                entry["types"][qtype.name] = {"sha256": hashlib.sha256(raw).hexdigest(), "n_bytes": len(raw)}
        manifest["cases"][name] = entry
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
