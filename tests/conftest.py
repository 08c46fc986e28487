"""Test isolation: each test gets its own state directory and never reads the developer's .env."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def isolated_state(tmp_path_factory, monkeypatch):
    state = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("LLAMA_STUDIO_STATE_DIR", str(state))
    monkeypatch.setenv("LLAMA_STUDIO_DOTENV", os.devnull)
    for name in ("LLAMA_SERVER_BIN", "LLAMA_MODEL", "LLAMA_HOST", "LLAMA_PORT", "LLAMA_CTX_SIZE", "LLAMA_THREADS",
                 "LLAMA_API_KEY", "LLAMA_ARG_API_KEY", "OPENAI_API_KEY"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    yield state


@pytest.fixture
def model_file(tmp_path):
    """The fake server ignores the model, but our own checks read its header: a small real GGUF."""
    from tests.gguf_files import write_tiny_gguf

    return write_tiny_gguf(tmp_path / "tiny.gguf")
