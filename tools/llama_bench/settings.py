"""Defaults shared by both CLIs, the repo's `.env`, and where runtime state lives."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 11433
DEFAULT_STARTUP_TIMEOUT = 300.0
DEFAULT_INTERVAL = 1.0
DEFAULT_STATS_INTERVAL = 5.0
DEFAULT_HTTP_TIMEOUT = 5.0

REPO_DIR = Path(__file__).resolve().parents[2]
BUILT_SERVER = REPO_DIR / "build" / "llama.cpp" / "build" / "bin" / "llama-server"

_dotenv_cache: Optional[Dict[str, str]] = None


def read_dotenv(path: Optional[Path] = None) -> Dict[str, str]:
    """Parse KEY=VALUE lines of the repo's .env (written by scripts/setup.sh); missing file -> {}."""
    env_path = path or Path(os.environ.get("LLAMA_STUDIO_DOTENV", REPO_DIR / ".env"))
    values: Dict[str, str] = {}
    try:
        text = env_path.read_text(encoding="utf-8")
    except OSError:
        return values
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def setting(name: str) -> Optional[str]:
    """A setting from the environment, else from .env; empty values count as unset."""
    global _dotenv_cache
    value = os.environ.get(name)
    if value:
        return value
    if _dotenv_cache is None:
        _dotenv_cache = read_dotenv()
    return _dotenv_cache.get(name) or None


def int_setting(name: str, default: Optional[int]) -> Optional[int]:
    value = setting(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        return default


def state_dir() -> Path:
    """Directory for the server registry and logs ($XDG_STATE_HOME/llama-studio)."""
    override = os.environ.get("LLAMA_STUDIO_STATE_DIR")
    if override:
        base = Path(override)
    else:
        xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        base = Path(xdg) / "llama-studio"
    base.mkdir(parents=True, exist_ok=True)
    return base
