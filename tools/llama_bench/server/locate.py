"""Find the llama-server binary and the model file from flags, the environment, .env and our build."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Optional

from ..settings import BUILT_SERVER, setting
from ..utils import UserError

SETUP_CMD = "./scripts/setup.sh --yes"
GGUF_MAGIC = b"GGUF"


def resolve_binary(explicit: Optional[str] = None) -> str:
    """--llama-server, else LLAMA_SERVER_BIN (environment or .env), else our build, else PATH."""
    if explicit:
        return _check_executable(explicit, "--llama-server")
    from_env = setting("LLAMA_SERVER_BIN")
    if from_env:
        return _check_executable(from_env, "LLAMA_SERVER_BIN")
    if BUILT_SERVER.exists():
        return _check_executable(str(BUILT_SERVER), "the local build")
    on_path = shutil.which("llama-server")
    if on_path:
        return on_path
    raise UserError(
        "llama-server not found (looked at --llama-server, LLAMA_SERVER_BIN, "
        f"{BUILT_SERVER.relative_to(BUILT_SERVER.parents[3])} and PATH); build it with "
        f"./scripts/build_llama.cpp.sh or run {SETUP_CMD}"
    )


def _check_executable(path: str, origin: str) -> str:
    resolved = shutil.which(path) if os.sep not in path else path
    if not resolved or not os.path.isfile(resolved):
        raise UserError(f"llama-server not found at {path} (from {origin}); build it with ./scripts/build_llama.cpp.sh")
    if not os.access(resolved, os.X_OK):
        raise UserError(f"{resolved} (from {origin}) is not executable: chmod +x it")
    return str(Path(resolved).absolute())


def resolve_model(explicit: Optional[str], required: bool = True) -> Optional[str]:
    """--model, else LLAMA_MODEL; the file must exist and be readable. Non-GGUF content only warns."""
    model = explicit or setting("LLAMA_MODEL")
    if not model:
        if required:
            raise UserError(f"no model given: pass --model FILE.gguf or set LLAMA_MODEL (run {SETUP_CMD})")
        return None
    path = Path(model).expanduser()
    if not path.is_file():
        raise UserError(f"model file not found: {path} (pass --model FILE.gguf, or run {SETUP_CMD})")
    try:
        with path.open("rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise UserError(f"model file {path} is not readable: {exc.strerror}") from exc
    if head != GGUF_MAGIC:
        print(
            f"warning: {path} does not look like a GGUF model (starts with {head!r}, expected {GGUF_MAGIC!r})",
            file=sys.stderr,
        )
    return str(path.absolute())
