#!/usr/bin/env bash
# The whole test suite, as CI runs it: venv, lint, types, the fast tier (fake llama-server) and the
# real tier (a llama-server built by scripts/build_llama.cpp.sh with the default model).
# LLAMA_STUDIO_SKIP_REAL=1 skips the real tier (never in CI). Extra arguments go to pytest.
set -euo pipefail
REPO_DIR="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
cd "$REPO_DIR"
start_ts=$(date +%s)
step() { echo; echo "==> $* ($(($(date +%s) - start_ts)) s)"; }

step "Python environment"
scripts/setup.sh --deps-only
PY=.venv/bin/python

step "black"
"$PY" -m black --check --quiet tools/ tests/ benchmarks/
step "flake8"
"$PY" -m flake8 tools/ tests/ benchmarks/ --max-line-length=120 --extend-ignore=E203,W503
step "mypy"
"$PY" -m mypy tools/

# Tests must not see or touch the user's own servers' registry or settings.
export LLAMA_STUDIO_STATE_DIR="${LLAMA_STUDIO_STATE_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/llama-studio-test-state.XXXXXX")}"
export LLAMA_STUDIO_DOTENV=/dev/null

step "fast tier (fake llama-server)"
"$PY" -m pytest tests/ -m "not real" -q "$@"

if [[ "${LLAMA_STUDIO_SKIP_REAL:-0}" == 1 ]]; then
    step "real tier skipped (LLAMA_STUDIO_SKIP_REAL=1)"
    exit 0
fi
step "real tier: llama.cpp build (cached) and default model"
build_start=$(date +%s)
scripts/build_llama.cpp.sh
echo "llama.cpp ready in $(($(date +%s) - build_start)) s"
export LLAMA_STUDIO_REAL_SERVER="$REPO_DIR/build/llama.cpp/build/bin/llama-server"
export LLAMA_STUDIO_REAL_MODEL="$("$PY" -m tools.llama_bench.models default | tail -n 1)"
step "real tier (real llama-server, $(basename "$LLAMA_STUDIO_REAL_MODEL"))"
real_start=$(date +%s)
"$PY" -m pytest tests/ -m real -q "$@"
echo "real tier took $(($(date +%s) - real_start)) s; total $(($(date +%s) - start_ts)) s"
