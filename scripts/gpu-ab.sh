#!/usr/bin/env bash
# Same-run A/B of kernel variants in one device call: each variant is a
# `SMELT_CUDA_DEFINES` setting of the same binaries, its kernels compiled
# HERE, so the GPU machine compiles nothing and every variant is measured
# on the same warm machine.
#
#   scripts/gpu-ab.sh pack "" "SMELT_W_LD=0" "env:SMELT_DECODE_CHAINED=0"
#       HERE: `scripts/gpu-test.sh pack`, then one kernel cache per variant
#       ("" = the defaults; "env:NAME=VALUE ..." = the default kernels run
#       with those environment variables) into .gpu/cache, packed with the binaries into
#       .gpu/ab/g.tar.xz (~12 MB; carry ".gpu/ab").
#   scripts/gpu-ab.sh
#       ON THE GPU MACHINE: runs the GPU tests of the q8 products and the
#       ops under every variant, then `cuda_decode` for every model,
#       variants alternating, and prints each variant's mean tok/s, its
#       ratio to the first variant, and whether its generated tokens equal
#       the first variant's (a variant meant to change no value must).
#   SMELT_AB_PP=512 SMELT_AB_TESTS="test-bulk_int8" SMELT_AB_MODELS="1b-q4_k_m 8b-q4_k_m" scripts/gpu-ab.sh
#       after `scripts/gpu-ab.sh pack "env:SMELT_CUDA_GEMM_Q8=0"
#       "env:SMELT_CUDA_GEMM_Q8=auto"`: prompt speed of the int8 bulk
#       products against the exact ones (docs/CUDA.md "Session 12").
#   scripts/gpu-ab.sh summary LOG
#       The table again from a saved log (the lines `run` printed).
#
# Environment (run): SMELT_AB_PP (e.g. 512: measure `smelt bench`'s ppN
# prompt speed instead of cuda_decode; the token check then does not apply),
# SMELT_AB_MODELS (default "smollm2 1b-q4_k_m 8b-q4_k_m":
# `smelt synth` presets, written once to /tmp/smelt-ab, or GGUF paths),
# SMELT_AB_REPS (3), SMELT_AB_TOKENS (256), SMELT_AB_TESTS (default
# "test-q8_ops test-ops_vs_reference"; "" skips them; test-fused_ops compiles
# kernel variants of its own on the GPU machine, ~2 minutes a variant, so
# name it only when the change needs it).
set -uo pipefail
cd "$(dirname "$0")/.."
# SMELT_AB_DIR: where the package lives (default .gpu/ab), so a second one
# can be packed while the first waits for a machine.
AB=${SMELT_AB_DIR:-.gpu/ab}

# Reads `AB <variant index> <model> <tok/s> <fingerprint> <host us/step>`
# lines (the host's time a step outside its waits for the GPU); prints a
# table per model: mean tok/s per variant, ratio to variant 0, tokens equal.
summary() {
    awk -v names="$AB/variants" '
        BEGIN { n = 0; while ((getline line < names) > 0) name[n++] = (line == "" ? "(defaults)" : line) }
        $1 == "AB" {
            v = $2; m = $3; key = m SUBSEP v
            sum[key] += $4; cnt[key]++; if ($6 != "" && $6 != "-") { hsum[key] += $6; hcnt[key]++ }
            if (!(m in seen)) { seen[m] = 1; models[nm++] = m }
            if (!(key in fp)) fp[key] = $5
            else if (fp[key] != $5) fp[key] = "varies"
            if (v + 0 > maxv) maxv = v + 0
        }
        END {
            for (i = 0; i < nm; i++) {
                m = models[i]; base = sum[m SUBSEP 0] / cnt[m SUBSEP 0]
                printf "%s\n", m
                for (v = 0; v <= maxv; v++) {
                    key = m SUBSEP v
                    if (!(key in cnt)) continue
                    mean = sum[key] / cnt[key]
                    same = fp[key] == fp[m SUBSEP 0] && fp[key] != "varies" ? "same tokens" : "TOKENS DIFFER"
                    host = key in hcnt ? sprintf(", host %.1f us/step", hsum[key] / hcnt[key]) : ""
                    printf "  %-40s %10.1f tok/s  %.3fx  %s (%d runs%s)\n", (v in name ? name[v] : v), mean, mean / base, same, cnt[key], host
                }
            }
        }' "$1"
}

if [[ "${1:-}" == "pack" ]]; then
    set -e
    shift
    [[ $# -ge 1 ]] || { echo "usage: scripts/gpu-ab.sh pack VARIANT_DEFINES..." >&2; exit 2; }
    scripts/gpu-test.sh pack
    eval "$(sed -n '/^find_nvrtc()/,/^}/p' scripts/gpu-test.sh)"
    find_nvrtc || { echo "gpu-ab: NVRTC not found here; cannot precompile the variants" >&2; exit 1; }
    mkdir -p "$AB"
    : > "$AB/variants"
    for v in "$@"; do
        echo "$v" >> "$AB/variants"
        [[ -z "$v" || "$v" == env:* ]] && continue
        echo "gpu-ab: compiling the kernels with SMELT_CUDA_DEFINES=\"$v\""
        SMELT_CUDA_DEFINES="$v" SMELT_CUDA_CACHE=.gpu/cache target/release/examples/cuda_precompile sm_90
    done
    (cd .gpu && tar cf - bin cache) | xz -3 -T2 > "$AB/g.tar.xz"
    ls -la "$AB"
    exit 0
fi

if [[ "${1:-}" == "summary" ]]; then
    summary "$2"
    exit 0
fi

LOG=${OUT:-/tmp}/ab.log
: > "$LOG"
mkdir -p /tmp/smelt-ab/g
xz -dc "$AB/g.tar.xz" | tar xf - -C /tmp/smelt-ab/g
eval "$(sed -n '/^find_nvrtc()/,/^}/p' scripts/gpu-test.sh)"
find_nvrtc > /dev/null || echo "gpu-ab: libnvrtc not found (the cache should still serve)"
export SMELT_CUDA_CACHE=/tmp/smelt-ab/g/cache SMELT_REQUIRE_CUDA=1 SMELT_ALLOW_MISSING_ASSETS=1
B=/tmp/smelt-ab/g/bin
mapfile -t VARIANTS < "$AB/variants"
# Runs a command under a variant: "env:NAME=VALUE ..." sets environment
# variables (the default kernels), anything else is SMELT_CUDA_DEFINES.
variant_env() {
    local v=$1; shift
    if [[ "$v" == env:* ]]; then
        env ${v#env:} "$@"
    else
        SMELT_CUDA_DEFINES="$v" "$@"
    fi
}
echo "gpu: $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null)" | tee -a "$LOG"

for i in "${!VARIANTS[@]}"; do
    for t in ${SMELT_AB_TESTS-test-q8_ops test-ops_vs_reference}; do
        r=$(variant_env "${VARIANTS[$i]}" "$B/$t" 2>&1 | grep -E "^test result|panicked" | tail -1)
        echo "test [${VARIANTS[$i]:-(defaults)}] $t: $r" | tee -a "$LOG"
    done
done

for m in ${SMELT_AB_MODELS:-smollm2 1b-q4_k_m 8b-q4_k_m}; do
    file=$m
    if [[ "$m" != smollm2 && ! -f "$m" ]]; then
        file=/tmp/smelt-ab/$m.gguf
        [[ -f "$file" ]] || "$B/smelt" synth "$m" "$file" > /dev/null || { echo "gpu-ab: cannot write $m" | tee -a "$LOG"; continue; }
    fi
    for _ in $(seq "${SMELT_AB_REPS:-3}"); do
        for i in "${!VARIANTS[@]}"; do
            if [[ -n "${SMELT_AB_PP:-}" ]]; then
                # Prompt speed: `smelt bench`'s ppN t/s (no tokens to compare).
                [[ "$file" == smollm2 ]] && { file=/tmp/smelt-ab/smollm2.gguf; [[ -f "$file" ]] || "$B/smelt" synth smollm2 "$file" > /dev/null; }
                line=$(variant_env "${VARIANTS[$i]}" "$B/smelt" bench "$file" --device cuda -p "$SMELT_AB_PP" -n 0 -r 2 2>&1 | grep -E '\| cuda' | tail -1)
                tps=$(awk -F'|' '{split($8, a, " "); print a[1]}' <<< "$line")
                fp=-
                host=-
            else
                line=$(variant_env "${VARIANTS[$i]}" "$B/cuda_decode" "$file" "${SMELT_AB_TOKENS:-256}" 2>&1 | tail -1)
                tps=$(sed -n 's/.*: \([0-9.]*\) tok\/s.*/\1/p' <<< "$line")
                fp=$(sed -n 's/.*tokens \([0-9a-f]*\)[;)].*/\1/p' <<< "$line")
                host=$(sed -n 's/.*host \([0-9.]*\) us\/step.*/\1/p' <<< "$line")
            fi
            if [[ -z "$tps" ]]; then
                echo "gpu-ab: [${VARIANTS[$i]}] $m: $line" | tee -a "$LOG"
            else
                echo "AB $i $(basename "$m" .gguf) $tps $fp ${host:--}" | tee -a "$LOG"
            fi
        done
    done
done
summary "$LOG"
