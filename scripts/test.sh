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

# A llama-server the tests did not start -- from another directory, not in our registry, as a user's
# own server would be -- must still be running after each tier: tests never touch what is not theirs.
bystander_dir="$(mktemp -d "${TMPDIR:-/tmp}/llama-studio-bystander.XXXXXX")"
bystander_port="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
(cd "$bystander_dir" && exec "$REPO_DIR/tests/bin/llama-server" --port "$bystander_port" >"$bystander_dir/log" 2>&1) &
bystander_pid=$!
trap 'kill "$bystander_pid" 2>/dev/null || true; rm -rf "$bystander_dir"' EXIT
bystander_up() {
    "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=10)' \
        "http://127.0.0.1:$bystander_port/health" 2>/dev/null
}
for _ in $(seq 1 100); do bystander_up && break; sleep 0.3; done
check_bystander() {
    if ! bystander_up; then
        echo "test.sh: error: the tests stopped a llama-server they did not start (bystander pid $bystander_pid)" >&2
        exit 1
    fi
    echo "bystander llama-server (pid $bystander_pid, port $bystander_port) still running: ok"
}

step "fast tier (fake llama-server)"
"$PY" -m pytest tests/ -m "not real" -q "$@"
check_bystander

if [[ "${LLAMA_STUDIO_SKIP_REAL:-0}" == 1 ]]; then
    step "real tier skipped (LLAMA_STUDIO_SKIP_REAL=1)"
    exit 0
fi
step "real tier: llama.cpp build (cached) and default model"
build_start=$(date +%s)
scripts/build_llama.cpp.sh
echo "llama.cpp ready in $(($(date +%s) - build_start)) s"
export LLAMA_STUDIO_REAL_SERVER="$REPO_DIR/build/llama.cpp/build/bin/llama-server"
export LLAMA_STUDIO_REAL_MODEL="$("$PY" -m tools.llama_bench.models.download default | tail -n 1)"
step "real tier (real llama-server, $(basename "$LLAMA_STUDIO_REAL_MODEL"))"
real_start=$(date +%s)
"$PY" -m pytest tests/ -m real -q "$@"
check_bystander
echo "real tier took $(($(date +%s) - real_start)) s; total $(($(date +%s) - start_ts)) s"
