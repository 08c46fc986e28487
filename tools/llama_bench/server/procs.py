"""Find running llama-server processes by executable name and stop them safely."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from ..utils import StrEnum
from . import registry

SERVER_NAMES = frozenset({"llama-server", "llama-server.exe"})


@dataclass
class ServerProcess:
    pid: int
    create_time: float
    cmdline: List[str]
    port: Optional[int]
    model: Optional[str]
    ours: bool
    log_path: Optional[str] = None
    detached: bool = False
    owner_pid: Optional[int] = None  # the llama-run/llama-bench that started it (ours only)
    parent_pid: Optional[int] = None  # the llama-server it was started by (a router's model child)
    public_port: Optional[int] = None  # the token-meter proxy's port in front of it (ours only)

    @property
    def uptime(self) -> float:
        return max(0.0, time.time() - self.create_time)

    @property
    def command(self) -> str:
        return " ".join(self.cmdline)


def _is_server(name: str, exe: Optional[str], cmdline: List[str]) -> bool:
    """Match the program itself, never a mention in some other program's arguments."""
    if name in SERVER_NAMES:
        return True
    if exe and os.path.basename(exe) in SERVER_NAMES:
        return True
    return bool(cmdline) and os.path.basename(cmdline[0]) in SERVER_NAMES


def _flag_value(cmdline: List[str], *names: str) -> Optional[str]:
    for i, arg in enumerate(cmdline):
        for name in names:
            if arg == name and i + 1 < len(cmdline):
                return cmdline[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def _listening_port(proc: object) -> Optional[int]:
    import psutil

    try:
        conns = proc.net_connections(kind="inet")  # type: ignore[attr-defined]
    except (psutil.Error, AttributeError):
        return None
    ports = sorted(c.laddr.port for c in conns if c.status == psutil.CONN_LISTEN and c.laddr)
    return ports[0] if ports else None


def find_servers() -> List[ServerProcess]:
    """llama-servers of the current user: those we registered plus any other found by name."""
    import psutil

    ours: Dict[int, registry.ServerEntry] = {e.pid: e for e in registry.entries()}
    uid = os.getuid() if hasattr(os, "getuid") else None
    found: List[ServerProcess] = []
    parents: Dict[int, Optional[int]] = {}
    for proc in psutil.process_iter(["pid", "name", "exe", "cmdline", "uids", "create_time", "status", "ppid"]):
        info = proc.info
        if info.get("status") == psutil.STATUS_ZOMBIE:
            continue  # already exited; only its parent's missing wait() keeps it listed
        cmdline = info.get("cmdline") or []
        entry = ours.get(info["pid"])
        if entry is None and not _is_server(info.get("name") or "", info.get("exe"), cmdline):
            continue
        if entry is None and uid is not None and info.get("uids") is not None and info["uids"].real != uid:
            continue  # never another user's server
        parents[info["pid"]] = info.get("ppid")
        port_text = _flag_value(cmdline, "--port")
        port = _listening_port(proc) or (int(port_text) if port_text and port_text.isdigit() else None)
        if port is None and entry is None:
            port = 8080  # llama-server's own default when --port is not given
        found.append(
            ServerProcess(
                pid=info["pid"],
                create_time=float(info.get("create_time") or 0.0),
                cmdline=list(cmdline),
                port=entry.port if entry else port,
                model=entry.model if entry else _flag_value(cmdline, "-m", "--model"),
                ours=entry is not None,
                log_path=entry.log_path if entry else None,
                detached=entry.detached if entry else False,
                owner_pid=entry.owner_pid if entry else None,
                public_port=entry.public_port if entry else None,
            )
        )
    pids = {s.pid for s in found}
    for server in found:
        ppid = parents.get(server.pid)
        if ppid in pids:
            server.parent_pid = ppid  # stopping the router stops it too
    return sorted(found, key=lambda p: p.pid)


class StopOutcome(StrEnum):
    STOPPED = "stopped"  # exited after SIGTERM
    KILLED = "killed"  # needed SIGKILL
    GONE = "gone"  # had already exited (or its pid now belongs to another process)
    FAILED = "failed"


@dataclass
class StopResult:
    pid: int
    outcome: StopOutcome
    detail: Optional[str] = None

    def __str__(self) -> str:
        return f"{self.outcome}: {self.detail}" if self.detail else str(self.outcome)


def stop_process(pid: int, create_time: float, grace: float = 10.0, force: bool = False) -> StopResult:
    """SIGTERM, wait up to `grace` seconds, then SIGKILL (`force`: SIGKILL at once) — only if it is
    still the same process."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - create_time) >= 0.05:
            return StopResult(pid, StopOutcome.GONE)  # pid now belongs to someone else: leave it alone
        # psutil re-checks identity before signalling
        proc.send_signal(signal.SIGKILL if force else signal.SIGTERM)
    except psutil.NoSuchProcess:
        return StopResult(pid, StopOutcome.GONE)
    except psutil.AccessDenied:
        return StopResult(pid, StopOutcome.FAILED, "permission denied")
    if _wait_gone(proc, 5.0 if force else grace):
        outcome = StopOutcome.KILLED if force else StopOutcome.STOPPED
    elif force:
        return StopResult(pid, StopOutcome.FAILED, "still running after SIGKILL")
    else:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
        except psutil.AccessDenied:
            return StopResult(pid, StopOutcome.FAILED, "permission denied")
        if not _wait_gone(proc, 5.0):
            return StopResult(pid, StopOutcome.FAILED, "still running after SIGKILL")
        outcome = StopOutcome.KILLED
    registry.unregister(pid)
    return StopResult(pid, outcome)


def _wait_gone(proc: Any, timeout: float) -> bool:
    """True once the process has exited; a zombie (exited, not yet reaped by its parent) counts."""
    import psutil

    deadline = time.monotonic() + timeout
    while True:
        try:
            if not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
