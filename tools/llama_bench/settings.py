"""Defaults shared by both CLIs, the repo's `.env`, and where runtime state lives."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional

from .utils import UserError, user_path

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 11433
DEFAULT_STARTUP_TIMEOUT = 300.0
DEFAULT_INTERVAL = 1.0
DEFAULT_STATS_INTERVAL = 5.0
DEFAULT_HTTP_TIMEOUT = 5.0

REPO_DIR = Path(__file__).resolve().parents[2]
BUILT_SERVER = REPO_DIR / "build" / "llama.cpp" / "build" / "bin" / "llama-server"

_dotenv_cache: Optional[Dict[str, "SettingValue"]] = None


class SettingValue(str):
    """A value taken from the environment or `.env`. It is a str, so it can be an argparse default that
    the flag's own type function validates — and a bad one is reported with where it came from."""

    origin: str

    def __new__(cls, value: str, origin: str) -> "SettingValue":
        self = super().__new__(cls, value)
        self.origin = origin
        return self


def dotenv_path() -> Path:
    return Path(os.environ.get("LLAMA_STUDIO_DOTENV") or REPO_DIR / ".env")


def read_dotenv(path: Optional[Path] = None) -> Dict[str, SettingValue]:
    """Parse KEY=VALUE lines of the repo's .env (written by scripts/setup.sh); missing file -> {}."""
    env_path = path or dotenv_path()
    values: Dict[str, SettingValue] = {}
    try:
        raw = env_path.read_bytes()
    except OSError:
        return values
    for number, line_bytes in enumerate(raw.splitlines(), 1):
        try:
            line = line_bytes.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise UserError(f"{env_path}: line {number} is not UTF-8 text; fix or delete that line") from None
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        key = key.strip()
        values[key] = SettingValue(value, f"{key} in {env_path}")
    return values


def setting(name: str) -> Optional[SettingValue]:
    """A setting from the environment, else from .env; empty values count as unset."""
    global _dotenv_cache
    value = os.environ.get(name)
    if value:
        return SettingValue(value, f"environment variable {name}")
    if _dotenv_cache is None:
        _dotenv_cache = read_dotenv()
    return _dotenv_cache.get(name) or None


def setting_default(name: str, fallback: Optional[object]) -> Optional[object]:
    """An argparse default: the setting (as a str the flag's type validates, naming its origin on
    error), else the built-in fallback."""
    value = setting(name)
    return value if value is not None else fallback


def _usable_dir(path: Path, what: str) -> Path:
    hint = "pick another with LLAMA_STUDIO_STATE_DIR=DIR (or XDG_STATE_HOME)"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserError(f"{what} {path} is not a directory; {hint}") from None
    except OSError as exc:
        raise UserError(f"cannot create {what} {path}: {(exc.strerror or str(exc)).lower()}; {hint}") from None
    if not path.is_dir():
        raise UserError(f"{what} {path} is not a directory; {hint}")
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"{what} {path} is not writable; {hint}")
    return path


def state_base() -> Path:
    """Where runtime state lives ($LLAMA_STUDIO_STATE_DIR, else $XDG_STATE_HOME/llama-studio), unchecked."""
    override = os.environ.get("LLAMA_STUDIO_STATE_DIR")
    if override:
        return user_path(override)
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "llama-studio"


def state_dir() -> Path:
    """The state directory (server registry, logs, benchmark records), created if needed; a UserError
    names it and says how to choose another when it cannot be used."""
    return _usable_dir(state_base(), "the state directory")


def state_subdir(name: str) -> Path:
    return _usable_dir(state_dir() / name, "the state directory")
