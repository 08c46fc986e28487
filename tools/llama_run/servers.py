"""`llama-run ps` and `llama-run stop-all`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, List, Optional

from tools.llama_bench.server.procs import ServerProcess, StopOutcome, find_servers, stop_process
from tools.llama_bench import stdio
from tools.llama_bench.utils import ExitStatus, fmt_duration

if TYPE_CHECKING:
    from tools.llama_bench.models.gguf import ModelInfo


def _by(s: ServerProcess) -> str:
    if s.parent_pid is not None:
        return f"router {s.parent_pid}"  # a model child of a router (--models-dir)
    if not s.ours:
        return "other"
    return "us (detached)" if s.detached else "us"


def _model_info(path: Optional[str]) -> Optional["ModelInfo"]:
    """What the server's GGUF says (None when unknown or unreadable: ps only informs)."""
    if not path:
        return None
    from tools.llama_bench.models.gguf import read_model_info
    from tools.llama_bench.utils import UserError

    try:
        return read_model_info(path)
    except UserError:
        return None


def _model_text(s: ServerProcess, info: Optional["ModelInfo"]) -> str:
    if not s.model:
        return "-"
    if info is None:
        return s.model
    from tools.llama_bench.models.gguf import fmt_count

    facts = [f for f in (fmt_count(info.parameters) if info.parameters else None, info.quantization) if f]
    return f"{s.model} ({', '.join(facts)})" if facts else s.model


def ps(as_json: bool = False) -> int:
    servers = find_servers()
    infos = {s.pid: _model_info(s.model) for s in servers}
    if as_json:
        rows = []
        for s in servers:
            info = infos[s.pid]
            rows.append(asdict(s) | {"uptime_s": round(s.uptime, 1), "model_info": info.to_dict() if info else None})
        print(json.dumps(rows, indent=2))
        return ExitStatus.OK
    if not servers:
        print("No llama-server running.")
        return ExitStatus.OK
    print(f"{'PID':>7}  {'PORT':>5}  {'UPTIME':>8}  {'BY':<13}  MODEL")
    for s in servers:
        model = _model_text(s, infos[s.pid])
        port = f"{s.public_port}>{s.port}" if s.public_port else str(s.port or "-")  # proxy port > server port
        print(f"{s.pid:>7}  {port:>5}  {fmt_duration(s.uptime):>8}  {_by(s):<13}  {model}")
    return ExitStatus.OK


@dataclass
class StopFilter:
    """Which servers `stop-all` stops: all of the user's, or only those on a port / with a pid."""

    ports: Optional[List[int]] = None
    pids: Optional[List[int]] = None

    def matches(self, s: ServerProcess) -> bool:
        if self.ports is not None and s.port not in self.ports and s.public_port not in self.ports:
            return False  # a server behind the token-meter proxy is found by either port
        return self.pids is None or s.pid in self.pids

    def describe(self) -> str:
        parts = []
        if self.ports is not None:
            parts.append("port " + ", ".join(map(str, self.ports)))
        if self.pids is not None:
            parts.append("pid " + ", ".join(map(str, self.pids)))
        return " and ".join(parts)


def stop_all(flt: StopFilter, grace: float = 10.0, force: bool = False, dry_run: bool = False) -> int:
    servers = [s for s in find_servers() if flt.matches(s)]
    scope = flt.describe()
    if not servers:
        print(f"No llama-server processes found{' with ' + scope if scope else ''}.")
        return ExitStatus.OK
    print("Found llama-server processes:")
    for s in servers:
        print(f"  pid {s.pid}  port {s.port or '-'}  {s.command}")
    if dry_run:
        print("Dry run: nothing stopped.")
        return ExitStatus.OK
    failed = 0
    for s in servers:
        result = stop_process(s.pid, s.create_time, grace=grace, force=force)
        print(f"  pid {s.pid}: {result}")
        failed += result.outcome is StopOutcome.FAILED
    stdio.final(f"Stopped {len(servers) - failed} of {len(servers)} llama-server process(es).")
    return ExitStatus.FAILED if failed else ExitStatus.OK
