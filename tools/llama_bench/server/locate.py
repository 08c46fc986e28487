"""Find the llama-server binary and the model file from flags, the environment, .env and our build."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional, Sequence

from ..settings import BUILT_SERVER, setting
from ..utils import UserError, user_path

SETUP_CMD = "./scripts/setup.sh --yes"


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


def resolve_model(explicit: Optional[str], required: bool = True, model_dirs: Sequence[str] = ()) -> Optional[str]:
    """--model, else LLAMA_MODEL: an existing file, or a unique name (or part of one) of a model in the
    model folders (models/catalog.py). The file must be a readable GGUF (models/gguf.py checks the
    header): a file that is not, truncated or of an unknown version is one line before any start."""
    model = explicit or setting("LLAMA_MODEL")
    origin = "--model" if explicit else "LLAMA_MODEL"
    if not model:
        if required:
            raise UserError(f"no model given: pass --model FILE.gguf or set LLAMA_MODEL (run {SETUP_CMD})")
        return None
    path = user_path(model)
    if not path.exists() and os.sep not in model and not model.startswith("~"):
        from ..models.catalog import model_dirs as folders
        from ..models.catalog import resolve_model_name

        path = Path(resolve_model_name(model, folders(model_dirs)))
    if not path.is_file():
        raise UserError(f"model file not found: {path} (from {origin}; pass --model FILE.gguf, or run {SETUP_CMD})")
    if not os.access(path, os.R_OK):
        raise UserError(f"model file {path} is not readable (from {origin})")
    from ..models.gguf import read_model_info

    read_model_info(path)  # GGUFError: one line saying what is wrong with the file
    return str(path.absolute())
