#!/usr/bin/env bash
# The first call of a GPU session that must validate opt-in work within a
# short device budget (docs/CUDA.md "Session 13"): the reduced-precision
# bulk products' tests, their pp512 A/B, then the L2-prefetch decode A/B,
# each step cut to what is left of LIMIT seconds (every log lands in $OUT
# as it goes, so a cut run still reports what it measured).
#
#   HERE:  pip download --no-deps "nvidia-cuda-nvrtc==13.0.*" -d /tmp/nvrtc_whl &&
#          (cd /tmp/nvrtc_whl && unzip -q -o *.whl -d x)    # NVRTC for precompiling
#          SMELT_NVRTC_DIR=/tmp/nvrtc_whl/x/nvidia/cu13/lib scripts/gpu-ab.sh pack ""
#   THERE: LIMIT=400 bash scripts/gpu-first-call.sh      (carry ".gpu/ab")
# Environment: LIMIT (380), TESTS (bulk_int8), TT (test timeout, 120), PP
# (512), MODELS (prompt A/B models), REPS (2), DEC_S (seconds kept for the
# decode A/B, 80), DMODELS (decode A/B models).
START=$(date +%s); LIMIT=${LIMIT:-380}; OUT=${OUT:-/tmp}; export OUT
left() { echo $(( LIMIT - ($(date +%s) - START) )); }
cd "$(dirname "$0")/.."
mkdir -p /tmp/smelt-ab/g
xz -dc .gpu/ab/g.tar.xz | tar xf - -C /tmp/smelt-ab/g
eval "$(sed -n '/^find_nvrtc()/,/^}/p' scripts/gpu-test.sh)"
find_nvrtc
export SMELT_CUDA_CACHE=/tmp/smelt-ab/g/cache SMELT_REQUIRE_CUDA=1 SMELT_ALLOW_MISSING_ASSETS=1
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.max.mem --format=csv
for t in ${TESTS:-bulk_int8}; do
  s=$(date +%s)
  timeout ${TT:-120} /tmp/smelt-ab/g/bin/test-$t --test-threads=1 --nocapture > $OUT/test-$t.log 2>&1; rc=$?
  echo "TEST $t rc=$rc $(( $(date +%s) - s ))s: $(grep -E '^test result' $OUT/test-$t.log | tail -1)"
  grep -E "FAILED|panicked|failed|synthetic" $OUT/test-$t.log | head -12
done
echo "left $(left)s"
printf 'env:SMELT_CUDA_GEMM_Q8=0\nenv:SMELT_CUDA_GEMM_Q8=auto\n' > .gpu/ab/variants
SMELT_AB_PP=${PP:-512} SMELT_AB_TESTS="" SMELT_AB_MODELS="${MODELS:-1b-q4_k_m 8b-q4_k_m 8b-bf16}" SMELT_AB_REPS=${REPS:-2} SMELT_AB_DIR=.gpu/ab timeout $(( $(left) - ${DEC_S:-80} )) scripts/gpu-ab.sh 2>&1 | grep -v "^AB "
cp $OUT/ab.log $OUT/ab-pp.log
scripts/gpu-ab.sh summary $OUT/ab-pp.log
echo "left $(left)s"
[[ $(left) -lt 50 ]] && exit 0
printf 'env:SMELT_CUDA_PREFETCH_MIB=0\nenv:SMELT_CUDA_PREFETCH_MIB=24\n' > .gpu/ab/variants
SMELT_AB_TESTS="" SMELT_AB_MODELS="${DMODELS:-1b-q4_k_m 8b-q4_k_m}" SMELT_AB_REPS=2 SMELT_AB_TOKENS=128 SMELT_AB_DIR=.gpu/ab timeout $(( $(left) - 3 )) scripts/gpu-ab.sh 2>&1 | grep -v "^AB "
scripts/gpu-ab.sh summary $OUT/ab.log
