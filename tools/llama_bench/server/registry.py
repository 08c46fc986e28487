"""A registry of the llama-servers we started, one JSON file per server in the state directory.

Each entry records the pid *and* the process start time: a pid alone can be reused by an unrelated
process after the server exits, so an entry only counts while both still match.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Optional

from ..settings import state_dir


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


def _dir() -> Path:
    path = state_dir() / "servers"
    path.mkdir(parents=True, exist_ok=True)
    return path


def register(entry: ServerEntry) -> Path:
    path = _dir() / f"{entry.pid}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(entry), indent=2), encoding="utf-8")
    os.replace(tmp, path)  # atomic: readers never see half an entry
    return path


def unregister(pid: int) -> None:
    try:
        (_dir() / f"{pid}.json").unlink()
    except FileNotFoundError:
        pass


def mark_detached(pid: int) -> None:
    for entry in entries(prune=False):
        if entry.pid == pid:
            entry.detached = True
            register(entry)


def entries(prune: bool = True) -> List[ServerEntry]:
    """Registered servers that are still alive (same pid and start time); stale files are removed."""
    result = []
    for path in sorted(_dir().glob("*.json")):
        try:
            entry = ServerEntry(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            continue
        if is_same_process(entry.pid, entry.create_time):
            result.append(entry)
        elif prune:
            path.unlink(missing_ok=True)
    return result


def process_create_time(pid: int) -> Optional[float]:
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def is_same_process(pid: int, create_time: float) -> bool:
    current = process_create_time(pid)
    return current is not None and abs(current - create_time) < 0.05
