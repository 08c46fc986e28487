"""What a benchmark run is made of: its parameters, the cells (prompt size x concurrency) with the
ones that cannot run skipped, the run's state, and the Observer that watches it. Output code
(console, result files, plots) depends on these types, never on the runner."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Literal, Optional, Protocol, Tuple

from ..utils import StrEnum, UserError
from .records import Api, RequestRecord
from .summary import CellSummary

if TYPE_CHECKING:
    from .probe import ServerInfo

Task = Literal["coding", "list", "random"]


@dataclass
class BenchParams:
    """Everything that defines a run (stored in the result so it can be repeated)."""

    endpoint: str
    prompt_sizes: List[int]
    concurrency: List[int]
    max_output_tokens: int
    api: Api = Api.AUTO
    api_key: Optional[str] = None
    num_requests: Optional[int] = None
    repeats: int = 3
    temperature: float = 0.0
    request_rate: Optional[float] = None
    warmup: int = 1
    seed: int = 0
    task: Task = "coding"
    api_model: Optional[str] = None
    timeout: float = 300.0  # longest silence from the server within a request
    request_deadline: float = 600.0  # longest a request may take, first byte sent to last byte read
    probe_timeout: float = 10.0
    strict: bool = False
    metrics_interval: float = 1.0
    energy: bool = True
    extra_body: Dict[str, Any] = field(default_factory=dict)

    def requests_for(self, concurrency: int) -> int:
        return self.num_requests if self.num_requests else self.repeats * concurrency

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["api_key"] = "***" if self.api_key else None  # never store secrets in result files
        return d


class CellStatus(StrEnum):
    PENDING = "pending"
    DONE = "done"
    SKIPPED = "skipped"  # cannot run on this server (does not fit the context, ...)
    INTERRUPTED = "interrupted"  # Ctrl-C / SIGTERM while it ran
    ABORTED = "aborted"  # the server died while it ran
    NOT_RUN = "not run"  # the run stopped before it started


@dataclass
class Cell:
    index: int
    prompt_size: int  # tokens per request, as requested
    concurrency: int
    num_requests: int
    status: CellStatus = CellStatus.PENDING
    reason: Optional[str] = None
    warnings: List[str] = field(default_factory=list)
    records: List[RequestRecord] = field(default_factory=list)
    energy: Optional[Dict[str, Any]] = None
    server_metrics: Optional[Dict[str, Any]] = None
    summary: Optional[CellSummary] = None

    @property
    def label(self) -> str:
        return f"p{self.prompt_size}-c{self.concurrency}"

    def to_dict(self) -> Dict[str, Any]:
        return {
            "label": self.label,
            "prompt_size": self.prompt_size,
            "concurrency": self.concurrency,
            "num_requests": self.num_requests,
            "status": self.status,
            "reason": self.reason,
            "warnings": self.warnings,
            "energy": self.energy,
            "server_metrics": self.server_metrics,
            **(self.summary.to_dict() if self.summary else {}),
        }


class RunStatus(StrEnum):
    RUNNING = "running"
    COMPLETE = "complete"
    INTERRUPTED = "interrupted"
    SERVER_DIED = "server-died"


@dataclass
class RunState:
    status: RunStatus = RunStatus.RUNNING
    stop_reason: Optional[str] = None
    warmup_records: List[RequestRecord] = field(default_factory=list)
    started_wall: float = field(default_factory=time.time)
    finished_wall: Optional[float] = None


class Observer(Protocol):
    """What the runner reports while it works (output.console.LiveReporter implements it)."""

    def server_probed(self, info: "ServerInfo", api: Api, notes: List[str]) -> None: ...

    def planned(self, cells: List[Cell], warmup: int) -> None: ...

    def cell_started(self, cell: Cell) -> None: ...

    def request_done(self, record: RequestRecord) -> None: ...

    def cell_done(self, cell: Cell) -> None: ...

    def message(self, text: str) -> None: ...


class SilentObserver:
    """An Observer that shows nothing (in-process callers such as tuners and tests)."""

    def server_probed(self, info: "ServerInfo", api: Api, notes: List[str]) -> None:
        pass

    def planned(self, cells: List[Cell], warmup: int) -> None:
        pass

    def cell_started(self, cell: Cell) -> None:
        pass

    def request_done(self, record: RequestRecord) -> None:
        pass

    def cell_done(self, cell: Cell) -> None:
        pass

    def message(self, text: str) -> None:
        pass


def plan_cells(
    params: BenchParams, n_ctx: Optional[int], total_slots: Optional[int], chat_overhead: Optional[int]
) -> List[Cell]:
    """All cells in run order; those that cannot run are skipped with a reason (or --strict fails)."""
    cells: List[Cell] = []
    for size in params.prompt_sizes:
        reason = None
        need = size + params.max_output_tokens
        if n_ctx and need > n_ctx:
            reason = (
                f"prompt {size} + output {params.max_output_tokens} = {need} tokens does not fit the "
                f"server's context of {n_ctx} tokens per slot"
            )
        elif chat_overhead is not None and size <= chat_overhead:
            reason = f"{size} tokens is not more than the chat template's own {chat_overhead} tokens"
        if reason and params.strict:
            raise UserError(f"prompt size {size}: {reason} (drop --strict to skip it)")
        for conc in params.concurrency:
            cell = Cell(len(cells), size, conc, params.requests_for(conc))
            if reason:
                cell.status, cell.reason = CellStatus.SKIPPED, reason
            elif total_slots and conc > total_slots:
                cell.warnings.append(
                    f"concurrency {conc} > {total_slots} server slots: requests queue in the server "
                    "(see requests_deferred and TTFT)"
                )
            cells.append(cell)
    return cells


def warmup_shape(cells: List[Cell], params: BenchParams) -> Optional[Tuple[int, int]]:
    """(prompt tokens, output tokens) of the warm-up requests: the first cell that will run, so the
    warm-up exercises the same path (prefill size, generation length) as what is measured."""
    first = next((c for c in cells if c.status is CellStatus.PENDING), None)
    return None if first is None else (first.prompt_size, params.max_output_tokens)


class RecordSink(Protocol):
    """Where finished request records go as they complete (output.jsonl.JsonlWriter: flushed at once)."""

    def write(self, record: RequestRecord, cell: Optional[Cell]) -> None: ...
