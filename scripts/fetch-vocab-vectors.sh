#!/usr/bin/env bash
# Fetches llama.cpp's tokenizer test vectors (MIT): the vocab-only GGUFs
# `ggml-vocab-*.gguf` with their `.gguf.inp` (inputs, cases separated by a line
# `__ggml_vocab_test__`) and `.gguf.out` (expected ids, one line per case).
# They ship inside the llama-cpp-python 0.3.36 sdist (76.6 MB), pinned by sha256.
# Only the ggml-vocab-* files are extracted, into
# ${SMELT_ASSETS:-~/.cache/smelt/assets}/vocab/. Idempotent: does nothing when
# the files are already there.
#
#   scripts/fetch-vocab-vectors.sh
#
# Needs python3 with venv (pip downloads the sdist; pip prepares an sdist's
# metadata with its build backend, hence scikit-build-core/cmake/ninja in a
# throwaway venv).
set -euo pipefail

ASSETS="${SMELT_ASSETS:-$HOME/.cache/smelt/assets}"
OUT="$ASSETS/vocab"
DL="$ASSETS/downloads"
SDIST="llama_cpp_python-0.3.36.tar.gz"
SHA=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
# Written after a complete extraction; with all 19 vocab files present it means done.
STAMP="$OUT/.extracted-llama-cpp-python-0.3.36"
N_VOCABS=19

if [ -f "$STAMP" ] && [ "$(find "$OUT" -maxdepth 1 -name 'ggml-vocab-*.gguf' | wc -l)" -ge "$N_VOCABS" ]; then
  echo "$OUT"
  exit 0
fi
mkdir -p "$OUT" "$DL"

have_sdist() {
  [ -f "$DL/$SDIST" ] && [ "$(sha256sum "$DL/$SDIST" | cut -d' ' -f1)" = "$SHA" ]
}

if ! have_sdist; then
  echo "fetch-vocab-vectors: downloading llama-cpp-python 0.3.36 sdist (76.6 MB)" >&2
  VENV="$(mktemp -d)/venv"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q scikit-build-core cmake ninja
  "$VENV/bin/pip" download -q --no-deps --no-build-isolation llama-cpp-python==0.3.36 -d "$DL"
  rm -rf "$(dirname "$VENV")"
  got="$(sha256sum "$DL/$SDIST" | cut -d' ' -f1)"
  if [ "$got" != "$SHA" ]; then
    echo "fetch-vocab-vectors: $DL/$SDIST has sha256 $got, expected $SHA" >&2
    rm -f "$DL/$SDIST"
    exit 1
  fi
fi

python3 - "$DL/$SDIST" "$OUT" <<'PY'
import os, shutil, sys, tarfile
sdist, out = sys.argv[1], sys.argv[2]
n = 0
with tarfile.open(sdist, "r:gz") as tar:
    for m in tar.getmembers():
        parts = m.name.split("/")
        # <root>/vendor/llama.cpp/models/ggml-vocab-*
        if not m.isfile() or len(parts) != 5 or parts[1:4] != ["vendor", "llama.cpp", "models"]:
            continue
        name = parts[4]
        if not name.startswith("ggml-vocab-"):
            continue
        dst = os.path.join(out, name)
        if os.path.exists(dst) and os.path.getsize(dst) == m.size:
            n += 1
            continue
        with tar.extractfile(m) as src, open(dst + ".tmp", "wb") as f:
            shutil.copyfileobj(src, f, 1 << 20)
        os.replace(dst + ".tmp", dst)
        n += 1
if n == 0:
    sys.exit("fetch-vocab-vectors: no ggml-vocab-* files found in " + sdist)
print(f"fetch-vocab-vectors: {n} ggml-vocab-* files in {out}", file=sys.stderr)
PY
touch "$STAMP"
echo "$OUT"
