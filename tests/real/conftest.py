"""The real tier: a llama-server built by scripts/build_llama.cpp.sh and the default model.

Every module here sets `pytestmark = pytest.mark.real`. Missing prerequisites fail loudly
(CI must never silently skip this tier); LLAMA_STUDIO_SKIP_REAL=1 skips it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import REPO

DEFAULT_SERVER = REPO / "build" / "llama.cpp" / "build" / "bin" / "llama-server"
DEFAULT_MODEL = REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def real_server() -> Path:
    if os.environ.get("LLAMA_STUDIO_SKIP_REAL") == "1":
        pytest.skip("real tier disabled by LLAMA_STUDIO_SKIP_REAL=1")
    path = Path(os.environ.get("LLAMA_STUDIO_REAL_SERVER", DEFAULT_SERVER))
    if not os.access(path, os.X_OK):
        pytest.fail(f"real llama-server missing at {path}: run ./scripts/build_llama.cpp.sh (or scripts/test.sh)")
    return path


@pytest.fixture(scope="session")
def real_model() -> Path:
    if os.environ.get("LLAMA_STUDIO_SKIP_REAL") == "1":
        pytest.skip("real tier disabled by LLAMA_STUDIO_SKIP_REAL=1")
    path = Path(os.environ.get("LLAMA_STUDIO_REAL_MODEL", DEFAULT_MODEL))
    if not path.is_file():
        pytest.fail(f"default model missing at {path}: run ./scripts/download_model.sh default (or scripts/test.sh)")
    return path


@pytest.fixture(scope="session")
def real_threads() -> str:
    return str(min(2, os.cpu_count() or 1))
