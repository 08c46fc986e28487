"""A registry of the llama-servers we started, one JSON file per server in the state directory.

Each entry records the pid *and* the process start time: a pid alone can be reused by an unrelated
process after the server exits, so an entry only counts while both still match. Reading is
forgiving — a corrupt or wrong-typed file is skipped with a warning, and an unusable state directory
means "no entries" (so `ps` and `stop-all --dry-run` still work) — writing is not: it raises.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Set

from ..settings import state_base, state_subdir

_warned: Set[str] = set()


@dataclass
class ServerEntry:
    pid: int
    create_time: float
    host: str
    port: int
    cmdline: List[str]
    model: Optional[str]
    log_path: str
    started_at: float
    owner_pid: int
    detached: bool = False  # left running by `llama-run run --detach`
    public_port: Optional[int] = None  # the token-meter proxy's port in front of it, if any


_TYPES: Dict[str, Any] = {
    "pid": int,
    "create_time": (int, float),
    "host": str,
    "port": int,
    "cmdline": list,
    "model": (str, type(None)),
    "log_path": str,
    "started_at": (int, float),
    "owner_pid": int,
    "detached": bool,
    "public_port": (int, type(None)),
}


def _warn(path: Path, why: str) -> None:
    key = f"{path}:{why}"
    if key not in _warned:
        _warned.add(key)
        print(f"warning: skipping registry entry {path}: {why}", file=sys.stderr)


def entry_from(data: Any) -> ServerEntry:
    """A ServerEntry from parsed JSON; ValueError says what is wrong."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    known = {f.name for f in fields(ServerEntry)}
    values = {k: v for k, v in data.items() if k in known}  # fields of other versions are ignored
    for name, kind in _TYPES.items():
        if name not in values:
            if name in ("detached", "public_port"):
                continue
            raise ValueError(f"missing '{name}'")
        value = values[name]
        if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
            raise ValueError(f"'{name}' has the wrong type")
    if values["pid"] <= 0 or not all(isinstance(a, str) for a in values["cmdline"]):
        raise ValueError("bad pid or command line")
    return ServerEntry(**values)


def _dir() -> Path:
    return state_subdir("servers")


def register(entry: ServerEntry) -> Path:
    """Write the entry atomically (readers never see half of it); no temp file survives a failure."""
    folder = _dir()
    path = folder / f"{entry.pid}.json"
    fd, tmp = tempfile.mkstemp(prefix=f".{entry.pid}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(asdict(entry), fh, indent=2)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def unregister(pid: int) -> None:
    try:
        (state_base() / "servers" / f"{pid}.json").unlink()
    except OSError:
        pass  # gone already, or the state directory is unusable: nothing to forget


def mark_detached(pid: int) -> None:
    for entry in entries(prune=False):
        if entry.pid == pid:
            entry.detached = True
            register(entry)


def entries(prune: bool = True) -> List[ServerEntry]:
    """Registered servers that are still alive (same pid and start time); stale files are removed."""
    folder = state_base() / "servers"
    try:
        paths = sorted(folder.glob("*.json"))
    except OSError:
        return []
    result = []
    for path in paths:
        try:
            entry = entry_from(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            _warn(path, str(exc))
            continue
        except ValueError as exc:
            _warn(path, f"corrupt ({exc})")
            continue
        if is_same_process(entry.pid, entry.create_time):
            result.append(entry)
        elif prune:
            try:
                path.unlink()
            except OSError:
                pass
    return result


def process_create_time(pid: int) -> Optional[float]:
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError, OverflowError):
        return None


def is_same_process(pid: int, create_time: float) -> bool:
    current = process_create_time(pid)
    return current is not None and abs(current - create_time) < 0.05
