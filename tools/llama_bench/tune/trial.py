"""One trial: start llama-server with a candidate's flags on a free port (ManagedServer: own process
group, parent-death signal and watchdog, real readiness), warm up, measure the objective `repeats`
times, and always stop the server.

A trial that fails — the server crashes, runs out of memory, rejects a flag, never becomes ready, or
its requests fail — is recorded with its kind and reason. It is never scored 0 and never retried, and
it never aborts the run. Ctrl-C (a KeyboardInterrupt) stops the server and propagates.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Literal, Optional

from .. import stopping
from ..outputs import OutputPath
from ..utils import StrEnum, UserError
from .objective import Measure, Measured
from .space import Candidate, Value

Phase = Literal["search", "verify"]
SECRET_FLAGS = ("--api-key",)
PORT_ATTEMPTS = 3  # a free port can be taken between choosing it and binding it


class TrialStatus(StrEnum):
    OK = "ok"
    FAILED = "failed"  # launched and failed: see FailureKind
    PRUNED = "pruned"  # never launched: a constraint or the memory estimate says it cannot work


class FailureKind(StrEnum):
    CRASH = "crash"
    OUT_OF_MEMORY = "out-of-memory"
    FLAG_REJECTED = "flag-rejected"
    STARTUP_TIMEOUT = "startup-timeout"
    REQUESTS_FAILED = "requests-failed"
    OVER_LIMIT = "over-limit"  # measured RSS above --max-rss
    CONSTRAINT = "constraint"  # pruned: a combination llama.cpp refuses or collapses
    MEMORY = "memory"  # pruned: the memory estimate does not fit


@dataclass
class Trial:
    """A candidate's trial, as journaled and reported."""

    number: int
    candidate: Candidate
    status: TrialStatus
    values: List[float] = field(default_factory=list)
    failure: Optional[FailureKind] = None
    reason: Optional[str] = None
    phase: Phase = "search"
    label: Optional[str] = None  # verify: "defaults", "#1", ...
    round: Optional[int] = None  # verify round
    command: List[str] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    duration_s: float = 0.0
    ready_s: Optional[float] = None
    rss_bytes: Optional[int] = None
    stopped_early: bool = False  # fewer repeats: clearly below the best (successive halving)
    log_path: Optional[str] = None
    pid: Optional[int] = None  # of the server (stopped when the trial ends)

    @property
    def ok(self) -> bool:
        return self.status is TrialStatus.OK and bool(self.values)

    @property
    def launched(self) -> bool:
        return self.status is not TrialStatus.PRUNED

    @property
    def mean(self) -> Optional[float]:
        return statistics.fmean(self.values) if self.values else None

    @property
    def spread(self) -> Optional[float]:
        """Sample standard deviation of the repeats (0 for one)."""
        if not self.values:
            return None
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d.update(mean=self.mean, spread=self.spread)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Trial":
        known = {f for f in cls.__dataclass_fields__}
        data = {k: v for k, v in d.items() if k in known}
        data["status"] = TrialStatus(data["status"])
        data["failure"] = FailureKind(data["failure"]) if data.get("failure") else None
        data["values"] = [float(v) for v in data.get("values") or []]
        return cls(**data)


@dataclass
class ServerBase:
    """What every candidate's server shares: a ServerConfig template (binary, model, host, key, the fixed
    flags, the raw flags after `--`; the tuned flags unset), the context every candidate must serve per
    request, and how to launch."""

    template: Any  # server.config.ServerConfig
    ctx_size: int  # per request: with -np N slots a server gets -c ctx_size x N (llama.cpp splits it)
    startup_timeout: float = 300.0
    allow_multi_server: bool = False

    @property
    def port(self) -> int:
        """The port of the command we hand back (trials run on free ports)."""
        return int(self.template.port)


def server_config(base: ServerBase, candidate: Candidate, port: int) -> Any:
    """The ServerConfig of a candidate: the template with the candidate's flags. A setting this build's
    ServerConfig has no field for (-tb, -ctk/-ctv on older builds) goes into extra_args, before the
    user's own raw flags."""
    import dataclasses

    tpl = base.template
    fields = {f.name for f in dataclasses.fields(tpl)}
    slots = candidate.get("parallel", tpl.parallel)
    per_slot = isinstance(slots, int) and slots > 0
    changes: Dict[str, Any] = {"port": port, "ctx_size": base.ctx_size * int(slots) if per_slot else base.ctx_size}
    extra: List[str] = []
    for name in ("threads", "parallel", "batch_size", "ubatch_size", "n_gpu_layers", "flash_attn"):
        if name in candidate:
            changes[name] = candidate[name]
    if "threads_batch" in candidate:
        if "threads_batch" in fields:
            changes["threads_batch"] = candidate["threads_batch"]
        else:
            extra += ["-tb", str(candidate["threads_batch"])]
    if "cache_type" in candidate:
        kv = str(candidate["cache_type"])
        if "cache_type_k" in fields and "cache_type_v" in fields:
            changes.update(cache_type_k=kv, cache_type_v=kv)
        else:
            extra += ["-ctk", kv, "-ctv", kv]
    if tpl.no_gpu:
        changes.pop("n_gpu_layers", None)
    changes["extra_args"] = extra + list(tpl.extra_args)  # the user's raw flags last, unchanged
    return dataclasses.replace(tpl, **changes)


def fixed_of(template: Any) -> Dict[str, Value]:
    """The tuned parameters a template already sets (flags the user gave): they are not searched."""
    fixed: Dict[str, Value] = {}
    for name in ("threads", "parallel", "batch_size", "ubatch_size", "n_gpu_layers", "flash_attn", "threads_batch"):
        value = getattr(template, name, None)
        if value is not None:
            fixed[name] = value
    if getattr(template, "no_gpu", False):
        fixed["n_gpu_layers"] = 0
    kv = getattr(template, "cache_type_k", None) or getattr(template, "cache_type_v", None)
    if kv:
        fixed["cache_type"] = kv
    return fixed


OOM_MARKERS = ("out of memory", "failed to allocate", "unable to allocate", "bad_alloc", "cudamalloc failed")
REJECT_MARKERS = (
    "error while handling argument",
    "invalid argument",
    "unknown argument",
    "failed to create context",
    "failed to initialize the context",
)


def classify_start_failure(log_lines: List[str], code: Optional[int]) -> FailureKind:
    """What a failed start was, from the server's log: out of memory, a refused flag, else a crash."""
    text = "\n".join(log_lines).lower()
    if any(m in text for m in OOM_MARKERS) or code in (-9, 137):
        return FailureKind.OUT_OF_MEMORY
    if any(m in text for m in REJECT_MARKERS):
        return FailureKind.FLAG_REJECTED
    return FailureKind.CRASH


def _short(text: str, limit: int = 300) -> str:
    line = " | ".join(part.strip() for part in text.splitlines() if part.strip())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _key_line(log_lines: List[str]) -> Optional[str]:
    """The log line that says why: the last out-of-memory line, else the last refusal, else the last
    error-ish line, else the last line."""
    for markers in (OOM_MARKERS, REJECT_MARKERS, ("error", "failed", "abort")):
        for line in reversed(log_lines):
            if any(m in line.lower() for m in markers):
                return line.strip()
    return log_lines[-1].strip() if log_lines else None


def process_tree_rss(pid: int) -> Optional[int]:
    """Resident memory of a process and its children (a wrapper script's server below it)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total or None


Progress = Callable[[str], None]
KeepGoing = Callable[[List[float]], bool]


class TrialRunner:
    """Runs trials one after the other; each gets its own server on a free port."""

    def __init__(
        self,
        base: ServerBase,
        measure: Measure,
        jsonl: OutputPath,
        warmup: int = 1,
        max_rss: Optional[int] = None,
    ) -> None:
        self.base = base
        self.measure = measure
        self.jsonl = jsonl
        self.warmup = warmup
        self.max_rss = max_rss
        self.last_info: Any = None  # ServerInfo of the last server measured
        self.last_started: Optional[Dict[str, Any]] = None

    def command_for(self, candidate: Candidate, port: Optional[int] = None) -> List[str]:
        from ..server.config import build_command

        return build_command(server_config(self.base, candidate, port or self.base.port))

    def run(
        self,
        number: int,
        candidate: Candidate,
        repeats: int,
        keep_going: Optional[KeepGoing] = None,
        progress: Optional[Progress] = None,
        phase: Phase = "search",
    ) -> Trial:
        """Launch, measure `repeats` times (fewer when `keep_going(values)` says the candidate is
        clearly behind after the first rung), stop. KeyboardInterrupt propagates after the stop."""
        from ..server.managed import ManagedServer, ServerStartError, log_tail
        from ..server.ports import free_port

        say = progress or (lambda text: None)
        trial = Trial(number, dict(candidate), TrialStatus.OK, phase=phase)
        t0 = time.monotonic()
        server: Optional[ManagedServer] = None
        try:
            for attempt in range(PORT_ATTEMPTS):
                stopping.check()
                cfg = server_config(self.base, candidate, free_port(self.base.template.host))
                server = ManagedServer(cfg, allow_multi_server=self.base.allow_multi_server)
                trial.command = redact(server.command)
                say("starting llama-server")
                try:
                    server.start()
                    break
                except ServerStartError:
                    raise
                except UserError as exc:
                    if "already in use" in str(exc) and attempt + 1 < PORT_ATTEMPTS:
                        continue
                    raise
            assert server is not None
            trial.log_path = str(server.log_path) if server.log_path else None
            trial.pid = server.pid
            try:
                trial.ready_s = server.wait_ready(
                    self.base.startup_timeout, on_wait=lambda s: say(f"loading {s:.0f} s")
                )
            except ServerStartError as exc:
                code = server.poll()
                lines = log_tail(Path(server.log_path), 200) if server.log_path else []
                if code is None:
                    trial.failure = FailureKind.STARTUP_TIMEOUT
                    trial.reason = f"not ready within {self.base.startup_timeout:g} s"
                else:
                    trial.failure = classify_start_failure(lines, code)
                    why = _key_line(lines) or _short(str(exc))
                    trial.reason = f"exited with code {code} during start-up: {why}"
                trial.status = TrialStatus.FAILED
                return trial
            self._measure(trial, server, repeats, keep_going, say)
            return trial
        finally:
            if server is not None:
                server.stop(grace=5.0)
            trial.duration_s = time.monotonic() - t0

    def _measure(self, trial: Trial, server: Any, repeats: int, keep_going: Optional[KeepGoing], say: Progress) -> None:
        alive: Callable[[], bool] = lambda: server.poll() is None  # noqa: E731
        first_rung = 1 if keep_going is not None else repeats
        for i in range(repeats):
            stopping.check()
            say(f"repeat {i + 1}/{repeats}")
            result: Measured = self.measure(
                server.base_url, server.api_key, self.warmup if i == 0 else 0, self.jsonl, alive
            )
            if result.info is not None:
                self.last_info = result.info
                self.last_started = {"command": server.command, "pid": server.pid, "log_path": str(server.log_path)}
            if result.interrupted:
                stopping.check()
                raise KeyboardInterrupt
            if result.value is None:
                trial.status = TrialStatus.FAILED
                code = server.poll()
                if result.server_died or code is not None:
                    lines = _log_lines(server)
                    kind = classify_start_failure(lines, code)
                    trial.failure = (
                        FailureKind.OUT_OF_MEMORY if kind is FailureKind.OUT_OF_MEMORY else FailureKind.CRASH
                    )
                    why = _key_line(lines) or result.reason
                    trial.reason = f"the server died during the measurement (exit code {code}): {why}"
                else:
                    trial.failure = FailureKind.REQUESTS_FAILED
                    trial.reason = _short(result.reason or "no value")
                return
            trial.values.append(result.value)
            if keep_going is not None and i + 1 == first_rung and i + 1 < repeats and not keep_going(trial.values):
                trial.stopped_early = True
                break
        self._check_rss(trial, server)

    def _check_rss(self, trial: Trial, server: Any) -> None:
        if server.pid is None:
            return
        trial.rss_bytes = process_tree_rss(server.pid)
        if self.max_rss is not None and trial.rss_bytes is not None and trial.rss_bytes > self.max_rss:
            from ..utils import fmt_bytes

            trial.status = TrialStatus.FAILED
            trial.failure = FailureKind.OVER_LIMIT
            trial.reason = f"server RSS {fmt_bytes(trial.rss_bytes)} > --max-rss {fmt_bytes(self.max_rss)}"


def _log_lines(server: Any) -> List[str]:
    from ..server.managed import log_tail

    return log_tail(Path(server.log_path), 200) if server.log_path else []


def redact(cmd: List[str]) -> List[str]:
    """The command with API keys replaced by *** (for the screen, the journal and result files)."""
    out = list(cmd)
    for i, arg in enumerate(out[:-1]):
        if arg in SECRET_FLAGS:
            out[i + 1] = "***"
    return out
