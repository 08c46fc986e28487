"""What a benchmark run is made of: its parameters, the cells (prompt size x concurrency) with the
ones that cannot run skipped, the order they run in (a Schedule: fixed, or chosen as the run goes by
the capacity search), the run's state, and the Observer that watches it. Output code (console, result
files, plots) depends on these types, never on the runner."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Dict, List, Literal, Optional, Protocol, Tuple

from ..utils import StrEnum, UserError
from .records import Api, RequestRecord
from .summary import CellSummary
from .workloads import Workload, WorkloadKind

if TYPE_CHECKING:
    from .probe import ServerInfo
    from .slo import Slo

Task = Literal["coding", "list", "random"]
DATASET_WARMUP_TOKENS = 64  # a dataset's cells have no one prompt size: the warm-up uses this one


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
    rounds: int = 3  # without num_requests: rounds x concurrency requests per cell
    repeats: int = 1  # every cell run this many times: each figure gets a mean and a 95 % interval
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
    slo: Optional["Slo"] = None
    workload: Workload = field(default_factory=Workload)

    def requests_for(self, concurrency: int) -> int:
        """Requests per cell: --num-requests, else --rounds x concurrency (a dataset: each entry once);
        multi-turn rounds up to whole conversations."""
        wl = self.workload
        if self.num_requests:
            n = self.num_requests
        elif wl.kind is WorkloadKind.DATASET and wl.dataset is not None:
            n = len(wl.dataset.entries)
        else:
            n = self.rounds * concurrency * wl.turns_per_session
        turns = wl.turns_per_session
        return -(-n // turns) * turns

    def to_dict(self) -> Dict[str, Any]:
        slo, workload = self.slo, self.workload
        d = asdict(replace(self, slo=None, workload=Workload()))
        d["api_key"] = "***" if self.api_key else None  # never store secrets in result files
        d["slo"] = slo.to_dict() if slo else None
        d["workload"] = workload.to_dict()
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
    rate: Optional[float] = None  # Poisson arrivals per second (None: closed loop)
    name: Optional[str] = None  # the label, when not p<size>-c<concurrency> (capacity steps)
    workload: str = WorkloadKind.UNIQUE
    turns: int = 1  # requests per conversation (multi-turn)
    repeats: int = 1  # times the cell's requests are run (--repeats)
    step: Optional[Dict[str, Any]] = None  # what the capacity search made of this cell
    watch: Optional["CellWatch"] = field(default=None, repr=False)  # may stop the cell early

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if self.workload == WorkloadKind.DATASET:
            return f"dataset-c{self.concurrency}"
        return f"p{self.prompt_size}-c{self.concurrency}"

    @property
    def units(self) -> int:
        """What the cell schedules: conversations for multi-turn, else requests."""
        return -(-self.num_requests // max(1, self.turns))

    def to_dict(self) -> Dict[str, Any]:
        return {
            "label": self.label,
            "prompt_size": self.prompt_size,
            "concurrency": self.concurrency,
            "rate": self.rate,
            "workload": self.workload,
            "repeat_count": self.repeats,
            "num_requests": self.num_requests,
            "step": self.step,
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


@dataclass
class CellProgress:
    """A running cell as a CellWatch sees it: arrivals so far, what finished, how long the requests
    still in flight (or waiting to be sent) have waited since they arrived, and the server's queue."""

    elapsed_s: float
    planned: int
    arrived: int
    finished: List[RequestRecord]
    waiting_s: List[float]  # per unfinished request: seconds since its arrival
    deferred: List[float]  # requests_deferred samples of this cell so far (oldest first)


class CellWatch(Protocol):
    """Looks at a running cell now and then; a reason (one line) stops the cell early."""

    def check(self, progress: CellProgress) -> Optional[str]: ...


class Schedule(Protocol):
    """The cells of a run, in order: next_cell(None) gives the first, next_cell(done) the one after it;
    None ends the run. A fixed list (StaticSchedule) or a search that picks the next cell from the last."""

    @property
    def cells(self) -> List[Cell]: ...

    @property
    def max_concurrency(self) -> int: ...

    def next_cell(self, finished: Optional[Cell]) -> Optional[Cell]: ...


class Search(Schedule, Protocol):
    """A schedule that searches for something (capacity.CapacitySearch); result() is what it found,
    stored in the result document."""

    def result(self, stop_reason: Optional[str] = None) -> Dict[str, Any]:
        """What it found; `stop_reason`: why the run ended before the search did (Ctrl-C, the server died)."""
        ...


class StaticSchedule:
    """The planned cells that can run, in plan order."""

    def __init__(self, cells: List[Cell]) -> None:
        self._cells = cells
        self._queue = [c for c in cells if c.status is CellStatus.PENDING]

    @property
    def cells(self) -> List[Cell]:
        return self._cells

    @property
    def max_concurrency(self) -> int:
        return max([c.concurrency for c in self._queue] or [1])

    def next_cell(self, finished: Optional[Cell]) -> Optional[Cell]:
        return self._queue.pop(0) if self._queue else None


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


def _size_problem(params: BenchParams, size: int, n_ctx: Optional[int], chat_overhead: Optional[int]) -> Optional[str]:
    wl = params.workload
    turns = wl.turns_per_session
    need = (size + params.max_output_tokens) * turns
    if n_ctx and need > n_ctx:
        if turns > 1:
            return (
                f"{turns} turns of prompt {size} + output {params.max_output_tokens} = {need} tokens do not fit "
                f"the server's context of {n_ctx} tokens per slot"
            )
        return (
            f"prompt {size} + output {params.max_output_tokens} = {need} tokens does not fit the "
            f"server's context of {n_ctx} tokens per slot"
        )
    if chat_overhead is not None and size <= chat_overhead:
        return f"{size} tokens is not more than the chat template's own {chat_overhead} tokens"
    if wl.kind is WorkloadKind.SHARED_PREFIX and wl.prefix_tokens is not None and wl.prefix_tokens >= size:
        return f"the shared prefix of {wl.prefix_tokens} tokens is not shorter than the prompt"
    return None


def plan_cells(
    params: BenchParams, n_ctx: Optional[int], total_slots: Optional[int], chat_overhead: Optional[int]
) -> List[Cell]:
    """All cells in run order; those that cannot run are skipped with a reason (or --strict fails).
    A dataset has one cell per concurrency (its prompt_size is 0: the lengths come from the file)."""
    cells: List[Cell] = []
    wl = params.workload
    sizes = [0] if wl.kind is WorkloadKind.DATASET else params.prompt_sizes
    for size in sizes:
        reason = None if wl.kind is WorkloadKind.DATASET else _size_problem(params, size, n_ctx, chat_overhead)
        if reason and params.strict:
            raise UserError(f"prompt size {size}: {reason} (drop --strict to skip it)")
        for conc in params.concurrency:
            cell = Cell(len(cells), size, conc, params.requests_for(conc), rate=params.request_rate)
            cell.workload, cell.turns, cell.repeats = wl.kind, wl.turns_per_session, params.repeats
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
    if first is None:
        return None
    return (first.prompt_size or DATASET_WARMUP_TOKENS, params.max_output_tokens)


class RecordSink(Protocol):
    """Where finished request records go as they complete (output.jsonl.JsonlWriter: flushed at once)."""

    def write(self, record: RequestRecord, cell: Optional[Cell]) -> None: ...
