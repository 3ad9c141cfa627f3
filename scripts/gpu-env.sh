#!/usr/bin/env bash
# Sourced on the GPU machine before running Smelt binaries by hand:
# puts libnvrtc on LD_LIBRARY_PATH (as scripts/gpu-test.sh does) and seeds
# the kernel cache from .gpu/cache (made by `scripts/gpu-test.sh pack`).
#   source scripts/gpu-env.sh
eval "$(sed -n '/^find_nvrtc()/,/^}/p' "$(dirname "${BASH_SOURCE[0]}")/gpu-test.sh")"
find_nvrtc || echo "libnvrtc: not found"
export SMELT_CUDA_CACHE="${SMELT_CUDA_CACHE:-/tmp/smelt-cuda-cache}"
mkdir -p "$SMELT_CUDA_CACHE"
cp "$(dirname "${BASH_SOURCE[0]}")"/../.gpu/cache/*.cubin "$SMELT_CUDA_CACHE"/ 2>/dev/null || true
