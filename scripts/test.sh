#!/usr/bin/env bash
# Runs Smelt's whole test suite: fetches the pinned models and tokenizer
# vectors (sha256-checked, cached in ~/.cache/smelt/assets), checks formatting
# and lints, runs every Rust test, then the server's end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-assets.sh
scripts/fetch-vocab-vectors.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace -- --nocapture 2>&1 | tee "${SMELT_TEST_LOG:-/dev/null}"
# The server against the official openai Python client (makes its own venv).
scripts/server-tests.sh
