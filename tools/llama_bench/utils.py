"""Small shared helpers: user-facing errors, optional dependencies, string enums and formatting."""

from __future__ import annotations

import importlib
import math
from enum import Enum, IntEnum
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, Optional

SETUP_HINT = "run ./scripts/setup.sh (or: python3 -m venv .venv && .venv/bin/pip install -r requirements.txt)"


class ExitStatus(IntEnum):
    """Exit codes of both CLIs (documented in the README)."""

    OK = 0
    FAILED = 1  # requests failed, the server died, a check failed
    BAD_INPUT = 2  # a flag, file or endpoint the user can fix
    MISSING_PACKAGE = 3  # an optional Python package is not installed
    OUTPUT_ERROR = 4  # an output could not be written (stdout lost, a file on a full disk); the rest was done
    INTERRUPTED = 130  # Ctrl-C, SIGTERM or SIGHUP before the work was done


class StrEnum(str, Enum):
    """An Enum whose members are their string values everywhere: f-strings, JSON, comparisons."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class UserError(Exception):
    """A problem the user can fix; the CLI prints the message on one line and exits non-zero."""

    def __init__(self, message: str, exit_code: int = ExitStatus.BAD_INPUT) -> None:
        super().__init__(message)
        self.exit_code = int(exit_code)


def require(module: str, package: Optional[str] = None, purpose: Optional[str] = None) -> ModuleType:
    """Import an optional dependency or raise a UserError that says how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        pkg = package or module
        why = f" (needed for {purpose})" if purpose else ""
        raise UserError(
            f"missing Python package '{pkg}'{why}: pip install {pkg}, or {SETUP_HINT}", ExitStatus.MISSING_PACKAGE
        ) from exc


def as_dict(value: Any) -> Dict[str, Any]:
    """`value` when it is a JSON object, else {} (for reading files and answers we did not write)."""
    return value if isinstance(value, dict) else {}


def parse_token_count(text: str) -> int:
    """Parse '100', '1k', '1.5k', '4096' into a positive token count (k = 1000)."""
    raw = text.strip().lower()
    if not raw:
        raise ValueError("empty size")
    scale = 1
    if raw.endswith("k"):
        scale, raw = 1000, raw[:-1]
    try:
        value = float(raw) * scale
    except ValueError:
        raise ValueError(f"'{text}' is not a size (examples: 100, 1k, 1.5k, 4096)") from None
    if not math.isfinite(value) or value < 1 or value != int(value):
        raise ValueError(f"'{text}' must be a whole number of tokens >= 1")
    return int(value)


def fmt_bytes(n: Optional[float]) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def fmt_float(x: Optional[float], digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def fmt_duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def check_readable_file(path: Any, what: str) -> None:
    """An input the user names must be a regular file when it exists: reading a FIFO or a device would
    block or never end, a directory says nothing (a missing file is left to the reader's own message)."""
    import os
    import stat

    try:
        mode = os.stat(os.path.expanduser(str(path))).st_mode
    except OSError:
        return
    if stat.S_ISDIR(mode):
        raise UserError(f"{what} {path} is a directory, not a file")
    if not stat.S_ISREG(mode):
        raise UserError(f"{what} {path} is not a regular file (a FIFO, device or socket)")


def user_path(text: Any) -> Path:
    """A path the user typed, `~` expanded; `~nosuchuser/x` stays as typed (Path.expanduser would raise)."""
    import os

    return Path(os.path.expanduser(str(text)))
