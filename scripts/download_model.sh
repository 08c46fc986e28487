#!/usr/bin/env bash
# Get a model and print its path: default | PATH.gguf | hf:OWNER/REPO:FILE.gguf | URL [--sha256 HEX]
set -euo pipefail
REPO_DIR="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
PY="$REPO_DIR/.venv/bin/python"
[[ -x "$PY" ]] || PY="python3"
cd "$REPO_DIR"
exec "$PY" -m tools.llama_bench.models.download "$@"
