#!/usr/bin/env bash
# The CUDA backend's GPU test run, in two halves:
#
#   scripts/gpu-test.sh pack   # HERE (no GPU needed): builds the CUDA test
#                              # binaries and the cuda_decode bench in release
#                              # mode and copies them, stripped, into .gpu/bin/
#                              # (ignored through .git/info/exclude); where
#                              # NVRTC is found here, also compiles the kernels
#                              # into .gpu/cache/ (a GPU machine with the same
#                              # NVRTC version then loads them instead of
#                              # compiling; carry .gpu/cache with .gpu/bin).
#   scripts/gpu-test.sh        # ON THE GPU MACHINE: builds nothing; runs every
#                              # CUDA test binary from .gpu/bin/ with the GPU
#                              # required, then the decode bench, and prints a
#                              # pass/fail summary (last line: "N passed, N failed").
#
# On the GPU machine:
#   SMELT_ASSETS  folder holding real models (SmolLM2-135M-Instruct.Q4_1.gguf,
#                 qwen2.5-coder-0.5b-instruct-q4_k_m.gguf); tests whose model is
#                 missing print SKIPPED (SMELT_ALLOW_MISSING_ASSETS=1 is set here,
#                 since the models are larger than what one device call carries).
#   SMELT_GPU_BENCH  space-separated `smelt synth` presets (or GGUF paths) to bench
#                 with `smelt bench --device cuda` (default: smollm2 1b-q4_k_m
#                 8b-q4_k_m 8b-bf16; the random-weight files go to $SMELT_GPU_SYNTH,
#                 default /tmp/smelt-synth, ~22 GB for all four).
# libnvrtc is looked for in the usual CUDA and pip locations when the loader
# does not already find it.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${SMELT_GPU_BIN:-.gpu/bin}
CACHE=$(dirname "$BIN")/cache

# Puts a directory holding libnvrtc on LD_LIBRARY_PATH unless the loader
# already finds one.
find_nvrtc() {
    ldconfig -p 2>/dev/null | grep -q 'libnvrtc\.so' && return 0
    for d in ${SMELT_NVRTC_DIR:-} /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-*/lib64 \
             /opt/torch/.venv/lib/python3*/site-packages/nvidia/cu13/lib \
             /opt/torch/.venv/lib/python3*/site-packages/nvidia/cuda_nvrtc/lib \
             /usr/local/lib/python3*/dist-packages/nvidia/cu13/lib /tmp/nvrtc_whl/x/nvidia/cu13/lib; do
        if compgen -G "$d/libnvrtc.so*" > /dev/null; then
            export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
            echo "libnvrtc: $d"
            return 0
        fi
    done
    return 1
}

if [[ "${1:-}" == "pack" ]]; then
    set -e
    mkdir -p .git/info
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
    rm -rf "$BIN" && mkdir -p "$BIN"
    cargo test -p smelt-cuda --release --no-run --message-format=json 2>/dev/null |
        python3 -c '
import json, sys
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") and m.get("executable"):
        print(m["executable"])' > "$BIN/.tests"
    cargo build -p smelt-cuda --release --example cuda_decode --example cuda_precompile
    cargo build -p smelt-cli --release
    objcopy --strip-debug target/release/smelt "$BIN/smelt"
    while read -r exe; do
        name=$(basename "$exe"); name=${name%-*}
        objcopy --strip-debug "$exe" "$BIN/test-$name"
    done < "$BIN/.tests"
    objcopy --strip-debug target/release/examples/cuda_decode "$BIN/cuda_decode"
    rm "$BIN/.tests"
    rm -rf "$CACHE"
    if find_nvrtc; then
        SMELT_CUDA_CACHE="$CACHE" target/release/examples/cuda_precompile sm_90 || true
        # The kernels with the opt-in step programs (test-step_program).
        SMELT_CUDA_PROGRAM=1 SMELT_CUDA_CACHE="$CACHE" target/release/examples/cuda_precompile sm_90 || true
    fi
    ls -la "$BIN" "$CACHE" 2>/dev/null || true; du -sh "$BIN" "$CACHE" 2>/dev/null || true
    exit 0
fi

# ---- on the GPU machine ---------------------------------------------------
find_nvrtc || echo "libnvrtc: not found"
export SMELT_REQUIRE_CUDA=1 SMELT_ALLOW_MISSING_ASSETS=1
export SMELT_CUDA_CACHE="${SMELT_CUDA_CACHE:-/tmp/smelt-cuda-cache}"
if compgen -G "$CACHE/*.cubin" > /dev/null; then
    mkdir -p "$SMELT_CUDA_CACHE" && cp "$CACHE"/*.cubin "$SMELT_CUDA_CACHE"/
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "nvidia-smi: not found"

LOG=${OUT:-/tmp}/gpu-test.log
: > "$LOG"
pass=0; fail=0; skip=0
summary=()
# run_tests LABEL ENV... -- BINARY: runs one test binary, adds it to the summary.
run_tests() {
    local label=$1; shift
    local envs=()
    while [[ $1 != -- ]]; do envs+=("$1"); shift; done
    shift
    local out rc p f s status
    out=$(env "${envs[@]}" "$1" --test-threads=2 --nocapture 2>&1); rc=$?
    printf '==== %s (exit %d)\n%s\n' "$label" "$rc" "$out" >> "$LOG"
    p=$(grep -oE 'test result: [a-zA-Z]+\. [0-9]+ passed' <<< "$out" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+' || echo 0)
    f=$(grep -oE '[0-9]+ failed' <<< "$out" | tail -1 | grep -oE '[0-9]+' || echo 0)
    s=$(grep -c '^SKIPPED' <<< "$out" || true)
    if [[ $rc -ne 0 && $f -eq 0 ]]; then f=1; fi
    pass=$((pass + p - s)); skip=$((skip + s)); fail=$((fail + f))
    status=PASS; [[ $f -gt 0 || $rc -ne 0 ]] && status=FAIL
    summary+=("$(printf '%-4s %-36s %3d passed %3d failed %3d skipped' "$status" "$label" "$((p - s))" "$f" "$s")")
    grep -E '^(SKIPPED|GPU |synthetic |matmul: |[^ ]+\.gguf: (cpu|cuda) )' <<< "$out" | sed 's/^/     /'
    if [[ $status == FAIL ]]; then grep -E 'panicked|^---- |FAILED|error' <<< "$out" | head -20 | sed 's/^/     /'; fi
}
for t in "$BIN"/test-*; do
    [[ -x "$t" ]] && run_tests "$(basename "$t")" -- "$t"
done
# The opt-in step programs against separate launches.
[[ -x "$BIN/test-step_program" ]] && run_tests "test-step_program (SMELT_CUDA_PROGRAM=1)" SMELT_CUDA_PROGRAM=1 -- "$BIN/test-step_program"
# The bulk rows' code products (opt-in) in whole models.
[[ -x "$BIN/test-bulk_model" ]] && run_tests "test-bulk_model (SMELT_CUDA_GEMM_CODES=1)" SMELT_CUDA_GEMM_CODES=1 -- "$BIN/test-bulk_model"
# The model once more with every kernel launched directly (no CUDA graphs).
[[ -x "$BIN/test-model_e2e" ]] && run_tests "test-model_e2e (SMELT_CUDA_GRAPHS=0)" SMELT_CUDA_GRAPHS=0 -- "$BIN/test-model_e2e"

bench=()
# bench_one LABEL ENV... -- MODEL: one cuda_decode run of 256 tokens.
bench_one() {
    local label=$1; shift
    local envs=()
    while [[ $1 != -- ]]; do envs+=("$1"); shift; done
    shift
    local o rc
    o=$(env "${envs[@]}" timeout 300 "$BIN/cuda_decode" "$1" 256 2>&1); rc=$?
    printf '==== cuda_decode %s %s (exit %d)\n%s\n' "$1" "$label" "$rc" "$o" >> "$LOG"
    bench+=("$(tail -1 <<< "$o")${label:+ [$label]}")
}
if [[ -x "$BIN/smelt" ]]; then
    synth=${SMELT_GPU_SYNTH:-/tmp/smelt-synth}
    mkdir -p "$synth"
    for m in ${SMELT_GPU_BENCH:-smollm2 1b-q4_k_m 8b-q4_k_m 8b-bf16}; do
        f=$m
        if [[ ! -f "$m" ]]; then
            f="$synth/$m.gguf"
            [[ -f "$f" ]] || "$BIN/smelt" synth "$m" "$f" >> "$LOG" 2>&1
        fi
        o=$(timeout 300 "$BIN/smelt" bench "$f" --device cuda -p 512 -n 128 -r 2 --membw-mib 4096 2>&1); rc=$?
        printf '==== smelt bench %s (exit %d)\n%s\n' "$m" "$rc" "$o" >> "$LOG"
        if [[ $rc -ne 0 ]]; then fail=$((fail + 1)); bench+=("FAIL smelt bench $m (exit $rc)"); continue; fi
        bench+=("$m: $(grep -E '\| cuda' <<< "$o" | awk -F'|' '{gsub(/ /,"",$7); gsub(/^ +| +$/,"",$8); printf "%s %s tok/s; ", $7, $8}')$(grep -oE 'tg128 reaches [0-9.]+ % of the roofline' <<< "$o")")
    done
    # The reduced-precision bulk products (int8 x, bf16 x for BF16; opt-in,
    # docs/CUDA.md "Session 12", "Session 13") on the prompts of the shapes
    # they are for.
    for m in 1b-q4_k_m 8b-q4_k_m 8b-bf16; do
        f="$synth/$m.gguf"
        [[ -f "$f" ]] || continue
        o=$(SMELT_CUDA_GEMM_Q8=auto timeout 300 "$BIN/smelt" bench "$f" --device cuda -p 512 -n 0 -r 2 2>&1); rc=$?
        printf '==== smelt bench %s SMELT_CUDA_GEMM_Q8=auto (exit %d)\n%s\n' "$m" "$rc" "$o" >> "$LOG"
        if [[ $rc -ne 0 ]]; then fail=$((fail + 1)); bench+=("FAIL smelt bench $m SMELT_CUDA_GEMM_Q8=auto (exit $rc)"); continue; fi
        bench+=("$m [SMELT_CUDA_GEMM_Q8=auto]: $(grep -E '\| cuda' <<< "$o" | awk -F'|' '{gsub(/ /,"",$7); gsub(/^ +| +$/,"",$8); printf "%s %s tok/s; ", $7, $8}')")
    done
fi
if [[ -x "$BIN/cuda_decode" ]]; then
    bench_one "" -- smollm2
    bench_one "SMELT_CUDA_PDL=0" SMELT_CUDA_PDL=0 -- smollm2
    bench_one "SMELT_CUDA_GRAPHS=0" SMELT_CUDA_GRAPHS=0 -- smollm2
    bench_one "SMELT_CUDA_Q8=0" SMELT_CUDA_Q8=0 -- smollm2
    bench_one "SMELT_CUDA_Q8=1" SMELT_CUDA_Q8=1 -- smollm2
    # A server's batch: 64 sequences decoded together (the multi-row kernels).
    o=$(timeout 300 "$BIN/cuda_decode" smollm2 256 64 2>&1); rc=$?
    printf '==== cuda_decode smollm2 256 64 (exit %d)\n%s\n' "$rc" "$o" >> "$LOG"
    bench+=("$(tail -1 <<< "$o") [64 sequences]")
    if [[ -n "${SMELT_ASSETS:-}" && -f "$SMELT_ASSETS/SmolLM2-135M-Instruct.Q4_1.gguf" ]]; then
        bench_one "" -- "$SMELT_ASSETS/SmolLM2-135M-Instruct.Q4_1.gguf"
    fi
fi

echo
echo "==== CUDA GPU test summary ($(date -u +%Y-%m-%dT%H:%MZ))"
printf '%s\n' "${summary[@]}"
[[ ${#bench[@]} -gt 0 ]] && { echo "---- decode bench"; printf '%s\n' "${bench[@]}"; }
echo "full log: $LOG"
echo "cuda: $pass passed, $fail failed, $skip skipped"
[[ $fail -eq 0 ]]
