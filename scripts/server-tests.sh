#!/usr/bin/env bash
# The server's end-to-end tests: the official `openai` Python client against a
# live `smelt serve` (SmolLM2-135M Q4_1) on loopback. Builds the binary with the
# `test` profile (opt-level 3; it shares the compiled crates of
# `cargo test --workspace`), makes a venv with pinned packages (cached), and
# runs pytest over tests/server/. The tests start and stop their own servers
# on free ports (`--port 0`).
#
#   scripts/server-tests.sh              # everything
#   scripts/server-tests.sh -k load      # extra arguments go to pytest
#
# Env: SMELT_ASSETS (model cache), SMELT_BIN (use this binary, skip the build),
# SMELT_SERVER_VENV (venv dir, default ~/.cache/smelt/server-venv).
set -euo pipefail
cd "$(dirname "$0")/.."

OPENAI_VERSION=3.54.0
PYTEST_VERSION=9.2.0
REQUESTS_VERSION=2.34.2

MODEL="${SMELT_ASSETS:-$HOME/.cache/smelt/assets}/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -f "$MODEL" ]; then
  echo "server-tests: $MODEL is missing: run scripts/fetch-assets.sh" >&2
  exit 1
fi

VENV="${SMELT_SERVER_VENV:-$HOME/.cache/smelt/server-venv}"
STAMP="openai==$OPENAI_VERSION pytest==$PYTEST_VERSION requests==$REQUESTS_VERSION"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.smelt-stamp" 2>/dev/null)" != "$STAMP" ]; then
  echo "server-tests: making the venv $VENV ($STAMP)" >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install -q $STAMP
  echo "$STAMP" > "$VENV/.smelt-stamp"
fi

if [ -z "${SMELT_BIN:-}" ]; then
  cargo build -q --profile test -p smelt-cli --bin smelt
  SMELT_BIN="$PWD/target/debug/smelt"
fi
export SMELT_BIN SMELT_MODEL="$MODEL"

exec "$VENV/bin/python" -m pytest -p no:cacheprovider -q tests/server "$@"
