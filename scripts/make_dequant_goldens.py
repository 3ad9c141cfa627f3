#!/usr/bin/env python3
"""Golden files for smelt-tensor's dequantization reference kernels.

Run from the repository root:

    /tmp/refenv/v/bin/python scripts/make_dequant_goldens.py

Requires (pip): numpy==2.4.6, gguf==0.19.0 (gguf-py, the reference for the
GGUF block formats). The output is deterministic (fixed numpy seed).

For every tensor type Smelt supports it writes, under crates/tensor/tests/golden/:

  <TYPE>.blocks.bin  raw stored blocks: random quant bytes, with the f16 scale
                     fields (d, dmin, m) replaced by random finite halves of
                     magnitude in [1e-3, 1] and random sign; for F16/BF16/F32,
                     random finite values (F16 includes subnormals and zeros).
  <TYPE>.f32.bin     the dequantized values, little-endian f32, as computed by
                     gguf-py's `gguf.quants.dequantize`.
  manifest.json      per type: block count, elements, bytes, and which
                     reference produced the values.

gguf-py 0.19.0 has no Q8_K dequantizer (Q8_K only exists as the activation
format of ggml's K-quant dot products). Its values are derived here from the
format spec with numpy: block = f32 d, i8 qs[256], i16 bsums[16] (sums of each
16 consecutive qs); value = d * qs. The bsums are written consistently with qs.
"""

import importlib.metadata
import json
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES

OUT = Path(__file__).resolve().parent.parent / "crates" / "tensor" / "tests" / "golden"
SEED = 20240611
N_BLOCKS_32 = 16  # blocks per 32-element quantized type
N_BLOCKS_K = 10  # blocks per 256-element (K-quant) type
N_SCALAR = 256  # values per unquantized type

# Byte offsets of the f16 scale fields in each block (per the GGUF block layouts).
F16_FIELDS = {
    T.Q4_0: [0],
    T.Q4_1: [0, 2],
    T.Q5_0: [0],
    T.Q5_1: [0, 2],
    T.Q8_0: [0],
    T.Q2_K: [80, 82],
    T.Q3_K: [108],
    T.Q4_K: [0, 2],
    T.Q5_K: [0, 2],
    T.Q6_K: [208],
}


def sane_scales(rng: np.random.Generator, n: int) -> np.ndarray:
    """n random finite halves with magnitude in [1e-3, 1], random sign."""
    mag = np.exp(rng.uniform(np.log(1e-3), 0.0, n))
    sign = rng.choice(np.array([-1.0, 1.0]), n)
    return (mag * sign).astype(np.float16)


def quant_blocks(rng: np.random.Generator, qtype: T) -> np.ndarray:
    block_elems, type_size = GGML_QUANT_SIZES[qtype]
    n_blocks = N_BLOCKS_32 if block_elems == 32 else N_BLOCKS_K
    blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    for off in F16_FIELDS[qtype]:
        blocks[:, off : off + 2] = sane_scales(rng, n_blocks).reshape(n_blocks, 1).view(np.uint8)
    return blocks


def q8_k_blocks(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    N_BLOCKS = N_BLOCKS_K
    d = (np.exp(rng.uniform(np.log(1e-3), 0.0, N_BLOCKS)) * rng.choice([-1.0, 1.0], N_BLOCKS)).astype(np.float32)
    qs = rng.integers(-128, 128, size=(N_BLOCKS, 256), dtype=np.int8)
    bsums = qs.reshape(N_BLOCKS, 16, 16).astype(np.int16).sum(axis=-1, dtype=np.int16)
    blocks = np.concatenate(
        [d.reshape(N_BLOCKS, 1).view(np.uint8), qs.view(np.uint8), bsums.astype("<i2").view(np.uint8)], axis=1
    )
    assert blocks.shape == (N_BLOCKS, GGML_QUANT_SIZES[T.Q8_K][1])
    values = d.reshape(N_BLOCKS, 1) * qs.astype(np.float32)
    return blocks, values.astype(np.float32)


def f16_values(rng: np.random.Generator) -> np.ndarray:
    bits = rng.integers(0, 1 << 16, size=N_SCALAR, dtype=np.uint16)
    inf_nan = (bits & 0x7C00) == 0x7C00
    bits[inf_nan] ^= 0x4000  # turn Inf/NaN patterns into finite ones
    bits[:4] = [0x0000, 0x8000, 0x0001, 0x83FF]  # zeros and subnormals
    return bits.view(np.float16)


def bf16_bits(rng: np.random.Generator) -> np.ndarray:
    """Finite bf16 bit patterns, exponents within 2^±30 (so dot products stay finite), plus zeros/subnormals."""
    sign = rng.integers(0, 2, size=N_SCALAR, dtype=np.uint16) << 15
    exp = rng.integers(127 - 30, 127 + 31, size=N_SCALAR, dtype=np.uint16) << 7
    mant = rng.integers(0, 1 << 7, size=N_SCALAR, dtype=np.uint16)
    bits = sign | exp | mant
    bits[:4] = [0x0000, 0x8000, 0x0001, 0x807F]
    return bits


def main() -> None:
    rng = np.random.default_rng(SEED)
    OUT.mkdir(parents=True, exist_ok=True)
    manifest = {
        "generator": "scripts/make_dequant_goldens.py",
        "numpy": np.__version__,
        "gguf": importlib.metadata.version("gguf"),
        "seed": SEED,
        "types": {},
    }
    order = [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0,
             T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.Q8_K]
    for qtype in order:
        source = "gguf.quants.dequantize"
        if qtype == T.F32:
            values = (rng.standard_normal(N_SCALAR) * np.exp(rng.uniform(-10, 10, N_SCALAR))).astype(np.float32)
            values[:2] = [0.0, -0.0]
            blocks = values.astype("<f4").view(np.uint8)
            values = gguf.quants.dequantize(blocks, qtype)
        elif qtype == T.F16:
            blocks = f16_values(rng).astype("<f2").view(np.uint8)
            values = gguf.quants.dequantize(blocks, qtype)
        elif qtype == T.BF16:
            blocks = bf16_bits(rng).astype("<u2").view(np.uint8)
            values = gguf.quants.dequantize(blocks, qtype)
        elif qtype == T.Q8_K:
            blocks, values = q8_k_blocks(rng)
            source = "format spec via numpy (gguf-py has no Q8_K dequantizer)"
        else:
            blocks = quant_blocks(rng, qtype)
            values = gguf.quants.dequantize(blocks, qtype)
        values = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
        raw = np.ascontiguousarray(blocks, dtype=np.uint8).reshape(-1)
        block_elems, block_bytes = GGML_QUANT_SIZES[qtype]
        assert raw.size % block_bytes == 0 and values.size == raw.size // block_bytes * block_elems
        assert np.all(np.isfinite(values)), qtype.name
        (OUT / f"{qtype.name}.blocks.bin").write_bytes(raw.tobytes())
        (OUT / f"{qtype.name}.f32.bin").write_bytes(values.astype("<f4").tobytes())
        manifest["types"][qtype.name] = {
            "n_blocks": raw.size // block_bytes,
            "block_elems": block_elems,
            "block_bytes": block_bytes,
            "n_elems": int(values.size),
            "values": source,
        }
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
