#!/usr/bin/env bash
# Makes one of docs/QUANTIZATION.md's quality tables: for each --type, requantizes BASE with
# `smelt quantize`, then runs `smelt perplexity QUANT TEXT --kl-base BASE` and prints a Markdown row
# (file size, PPL, mean KL(base || quant), top-1 agreement with the base).
#
#   SMELT=path/to/smelt scripts/quant-ppl-table.sh BASE.gguf TEXT CHUNKS [TYPES...]
#
# CHUNKS: how many 512-token chunks to score ("all": the whole text). TEXT: e.g. the output of
# scripts/fetch-eval-text.sh. The quantized files go to a temporary directory, removed at the end.
# Runs on the CPU (--device cpu) with the default f16 KV cache, one type at a time.
set -euo pipefail

SMELT="${SMELT:-smelt}"
BASE="$1"
TEXT="$2"
CHUNKS="$3"
shift 3
TYPES="${*:-f16 bf16 q8_0 q6_k q5_k q5_0 q4_k_m q4_k q4_1 q4_0}"
CHUNK_ARGS=()
[ "$CHUNKS" = all ] || CHUNK_ARGS=(--chunks "$CHUNKS")

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

mb() { awk -v b="$(stat -c %s "$1")" 'BEGIN { printf "%.1f", b / 1e6 }'; }
field() { # field LABEL FILE: the first number after LABEL
  sed -n "s/^$1 *: *\([0-9.]*\).*/\1/p" "$2" | head -n 1
}
field_err() { # field_err LABEL FILE: the number after the ±
  sed -n "s/^$1 *:.*± *\([0-9.]*\).*/\1/p" "$2" | head -n 1
}

"$SMELT" perplexity "$BASE" "$TEXT" --device cpu "${CHUNK_ARGS[@]}" > "$WORK/base.out" 2> "$WORK/base.err"
base_ppl="$(sed -n 's/^Final estimate: PPL = \([0-9.]*\) +\/- \([0-9.]*\)/\1 \2/p' "$WORK/base.out")"
# shellcheck disable=SC2086 # two numbers
base_ppl="$(printf '%.4f ± %.4f' $base_ppl)"
grep '^perplexity:' "$WORK/base.err" >&2

echo "| type | size (MB) | PPL | KL(base ‖ quant) | same top-1 |"
echo "|---|---:|---:|---:|---:|"
echo "| base: $(basename "$BASE") | $(mb "$BASE") | $base_ppl | 0 | 100 % |"
for t in $TYPES; do
  q="$WORK/$t.gguf"
  "$SMELT" quantize "$BASE" "$q" --type "$t" 2> "$WORK/$t.quantize.err"
  "$SMELT" perplexity "$q" "$TEXT" --device cpu "${CHUNK_ARGS[@]}" --kl-base "$BASE" \
    > "$WORK/$t.out" 2> "$WORK/$t.err"
  o="$WORK/$t.out"
  printf '| %s | %s | %.4f ± %.4f | %.5f ± %.5f | %.2f ± %.2f %% |\n' "$t" "$(mb "$q")" \
    "$(field 'Mean PPL(Q)' "$o")" "$(field_err 'Mean PPL(Q)' "$o")" \
    "$(field 'Mean KLD' "$o")" "$(field_err 'Mean KLD' "$o")" \
    "$(field 'Same top p' "$o")" "$(field_err 'Same top p' "$o")"
  rm -f "$q"
done
