#!/usr/bin/env python3
"""Dump reference facts about the real GGUF test models, as read by gguf-py,
into small golden JSON files that crates/gguf/tests/real_files.rs compares with.

How to run (from the repository root, after scripts/fetch-assets.sh):
    pip install gguf==0.19.0 numpy        # the reference venv /tmp/refenv/v has both
    /tmp/refenv/v/bin/python scripts/gguf_facts.py

The writer fixture is made first by
    SMELT_REGEN_FIXTURES=1 cargo test -p smelt-gguf --test round_trip

Reads the models from $SMELT_ASSETS or ~/.cache/smelt/assets and writes
crates/gguf/tests/golden/<model>.facts.json. For every metadata key it records
the gguf-py type, the byte length and sha256 of the raw key/value entry, and the
value itself for scalars and short strings; for every tensor its name, dims
(ggml order), type name, absolute data offset, byte size and the sha256 of its
bytes.
"""

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
from gguf import GGUFReader, GGUFValueType

MODELS = [
    "stories260K.gguf",
    "SmolLM2-135M-Instruct.Q4_1.gguf",
    "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
]
# Pseudo-fields gguf-py adds for the header itself.
HEADER_FIELDS = {"GGUF.version", "GGUF.tensor_count", "GGUF.kv_count"}
SHORT_STRING = 64
# Arrays with at most this many leaf values get every leaf recorded.
SHORT_ARRAY = 64
# The file GgufWriter produces in crates/gguf/tests/round_trip.rs; its facts
# prove that gguf-py reads what the writer writes.
WRITER_FIXTURE = "crates/gguf/tests/fixtures/writer_sample.gguf"


def type_name(field):
    t = field.types[0]
    if t == GGUFValueType.ARRAY:
        return "ARRAY[" + "][".join(x.name for x in field.types[1:]) + "]"
    return t.name


def flatten(value):
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in flatten(item)]
    return [value]


def plain(value):
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (np.floating, float)):
        return float(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    return value


def facts(path: Path):
    reader = GGUFReader(path)
    raw = np.asarray(reader.data)
    metadata = []
    for key, field in reader.fields.items():
        if key in HEADER_FIELDS:
            continue
        n_bytes = sum(int(p.nbytes) for p in field.parts)
        entry_bytes = raw[field.offset : field.offset + n_bytes].tobytes()
        entry = {
            "key": key,
            "type": type_name(field),
            "entry_bytes": n_bytes,
            "entry_sha256": hashlib.sha256(entry_bytes).hexdigest(),
        }
        t = field.types[0]
        if t == GGUFValueType.ARRAY:
            leaves = flatten(field.contents())
            entry["len"] = len(leaves)
            if len(leaves) <= SHORT_ARRAY:
                entry["leaves"] = [plain(x) for x in leaves]
        elif t == GGUFValueType.STRING:
            s = field.contents()
            if len(s) <= SHORT_STRING:
                entry["value"] = s
        else:
            entry["value"] = plain(field.contents())
        metadata.append(entry)
    tensors = []
    for t in reader.tensors:
        start = int(t.data_offset)
        n_bytes = int(t.n_bytes)
        tensors.append(
            {
                "name": t.name,
                "dims": [int(d) for d in t.shape],
                "type": t.tensor_type.name,
                "offset": start,
                "n_bytes": n_bytes,
                "sha256": hashlib.sha256(raw[start : start + n_bytes].tobytes()).hexdigest(),
            }
        )
    return {
        "file": path.name,
        "file_len": int(raw.size),
        "version": int(reader.fields["GGUF.version"].contents()),
        "alignment": int(reader.alignment),
        "data_offset": int(reader.data_offset),
        "kv_count": len(metadata),
        "tensor_count": len(tensors),
        "metadata": metadata,
        "tensors": tensors,
    }


def main():
    assets = Path(os.environ.get("SMELT_ASSETS", Path.home() / ".cache/smelt/assets"))
    out_dir = Path(__file__).resolve().parent.parent / "crates/gguf/tests/golden"
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in MODELS:
        path = assets / name
        if not path.exists():
            sys.exit(f"missing {path}: run scripts/fetch-assets.sh first")
        out = out_dir / (Path(name).stem + ".facts.json")
        out.write_text(json.dumps(facts(path), indent=0, ensure_ascii=False) + "\n")
        print(f"wrote {out} ({out.stat().st_size} bytes)")
    fixture = Path(__file__).resolve().parent.parent / WRITER_FIXTURE
    if not fixture.exists():
        sys.exit(f"missing {fixture}: run SMELT_REGEN_FIXTURES=1 cargo test -p smelt-gguf --test round_trip")
    out = out_dir / "writer_sample.facts.json"
    out.write_text(json.dumps(facts(fixture), indent=0, ensure_ascii=False) + "\n")
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
