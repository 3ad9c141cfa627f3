#!/usr/bin/env bash
# Per-kernel GPU time of decode steps (ON THE GPU MACHINE, after
# scripts/gpu-test.sh pack here): runs cuda_decode under Nsight Compute with
# graphs off (so every kernel is its own launch) and the prompt on the
# matrix-vector kernels (SMELT_CUDA_BULK=0, so the prefill step has the
# decode steps' kernels), skips the prefill and two
# warm-up steps (the prefill step has one kernel more: the row gather),
# profiles one decode step, and prints, per kernel name, the
# count, mean and total of gpu__time_duration.
#
#   scripts/gpu-profile.sh MODEL KERNELS_PER_STEP   # e.g. smollm2 153
#
# ncu times each kernel alone (no overlap with its neighbours, as PDL gives
# in a real run), with the clocks left as they are (--clock-control none).
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${SMELT_GPU_BIN:-.gpu/bin}
model=${1:-smollm2}
per=${2:-153}
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
[[ -n "$ncu" ]] || { echo "ncu not found"; exit 1; }
out=${OUT:-/tmp}/profile-$(basename "$model").csv
SMELT_CUDA_GRAPHS=0 SMELT_CUDA_BULK=0 "$ncu" --clock-control none --metrics gpu__time_duration.sum --csv --print-units base \
    --launch-skip $((3 * per + 1)) --launch-count "$per" "$BIN/cuda_decode" "$model" 4 > "$out" 2>/dev/null
python3 - "$out" "$model" <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
head = rows[0]; rows = rows[1:]
ki, ui, vi = head.index("Kernel Name"), head.index("Metric Unit"), head.index("Metric Value")
scale = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3}
t = collections.defaultdict(list)
for r in rows:
    t[r[ki].split("(")[0]].append(float(r[vi].replace(",", "")) * scale.get(r[ui], 1e-3))
total = sum(sum(v) for v in t.values())
print(f"{sys.argv[2]}: {sum(len(v) for v in t.values())} kernels, {total:.1f} us of kernel time per step")
for k, v in sorted(t.items(), key=lambda kv: -sum(kv[1])):
    print(f"  {k:28s} {len(v):4d} x {sum(v)/len(v):7.2f} us = {sum(v):8.1f} us")
PY
