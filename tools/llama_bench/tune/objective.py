"""What a trial maximises, and one measurement of it through the benchmark engine, in-process.

- gen: single-stream generation tok/s (the client's view: output tokens after the first / decode time);
- prompt: prefill tok/s (the server's own prompt_per_second, one request at a time);
- throughput: total generation tok/s with `--concurrency N` requests in flight;
- tokens-per-joule: tokens per joule at `--concurrency N` (needs RAPL or a GPU energy reader);
- slo: the highest request rate that keeps `--slo ...` (the capacity search of bench/capacity.py).

Each figure is read from the benchmark's cell through bench/summary.FIELDS, the one table of figures.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, Optional

from ..outputs import OutputPath
from ..utils import StrEnum, UserError


class Objective(StrEnum):
    GEN = "gen"
    PROMPT = "prompt"
    THROUGHPUT = "throughput"
    TOKENS_PER_JOULE = "tokens-per-joule"
    SLO = "slo"


OBJECTIVE_ALIASES = {"efficiency": Objective.TOKENS_PER_JOULE}  # paq_llamacpp_studio's name
OBJECTIVE_CHOICES = [o.value for o in Objective] + list(OBJECTIVE_ALIASES)

# The FIELDS key each objective reads from a benchmark cell, and its unit.
FIELD_OF = {
    Objective.GEN: "client_gen_tps_mean",
    Objective.PROMPT: "server_prompt_tps_mean",
    Objective.THROUGHPUT: "gen_tps",
    Objective.TOKENS_PER_JOULE: "tokens_per_j",
}
UNIT_OF = {
    Objective.GEN: "tok/s",
    Objective.PROMPT: "tok/s",
    Objective.THROUGHPUT: "tok/s",
    Objective.TOKENS_PER_JOULE: "tok/J",
    Objective.SLO: "req/s",
}


def objective_from(text: str) -> Objective:
    return OBJECTIVE_ALIASES.get(text) or Objective(text)


@dataclass
class Workload:
    """The requests every trial is measured with (same for all candidates)."""

    objective: Objective
    prompt_size: int
    max_output_tokens: int
    concurrency: int  # requests in flight (1 for gen and prompt)
    ctx_size: int  # tokens every candidate must serve per request
    slo: Optional[str] = None
    task: str = "coding"
    seed: int = 0
    timeout: float = 60.0
    request_deadline: float = 300.0

    @property
    def unit(self) -> str:
        return UNIT_OF[self.objective]

    @property
    def prefill_matters(self) -> bool:
        return self.objective is not Objective.GEN

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        head = f"{self.objective} ({self.unit})"
        conc = f" x {self.concurrency} concurrent" if self.concurrency > 1 else ""
        slo = f", SLO {self.slo}" if self.slo else ""
        return f"{head}: prompt {self.prompt_size} tok, {self.max_output_tokens} out{conc}, ctx {self.ctx_size}{slo}"


@dataclass
class Measured:
    """One repeat: the objective's value, or why there is none."""

    value: Optional[float]
    reason: Optional[str] = None
    server_died: bool = False
    interrupted: bool = False
    info: Any = None  # bench.probe.ServerInfo of the server measured (for the environment manifest)


Measure = Callable[[str, Optional[str], int, OutputPath, Callable[[], bool]], Measured]


def check_available(workload: Workload) -> None:
    """Refuse up front what cannot be measured here (one clear line, before any server starts)."""
    if workload.objective is Objective.TOKENS_PER_JOULE:
        check_energy_sensor()
    if workload.objective is Objective.SLO:
        parse_slo_text(workload.slo)
    elif workload.slo:
        raise UserError("--slo applies to --objective slo only")


def parse_slo_text(text: Optional[str]) -> Any:
    """--slo through bench/slo.py's parser (one line on error)."""
    from ..bench.slo import EXAMPLE, parse_slo

    if not text:
        raise UserError(f"--objective slo needs --slo, e.g. --slo {EXAMPLE}")
    try:
        return parse_slo(text)
    except ValueError as exc:
        raise UserError(f"--slo: {exc}") from None


def check_energy_sensor() -> None:
    from ..power.meter import EnergyMeter

    meter = EnergyMeter()
    try:
        summary = meter.read()
    finally:
        meter.close()
    if summary.cpu_reason and summary.gpu_reason:
        raise UserError(
            "--objective tokens-per-joule needs an energy sensor and none is readable here "
            f"(CPU: {summary.cpu_reason}; GPU: {summary.gpu_reason})"
        )


def make_measure(workload: Workload) -> Measure:
    """The function that measures one repeat of `workload` against a running server."""
    if workload.objective is Objective.SLO:
        return lambda endpoint, key, warmup, jsonl, alive: measure_slo(workload, endpoint, key, warmup, jsonl, alive)
    return lambda endpoint, key, warmup, jsonl, alive: measure_bench(workload, endpoint, key, warmup, jsonl, alive)


def bench_params(workload: Workload, endpoint: str, api_key: Optional[str], warmup: int) -> Any:
    from ..bench.plan import BenchParams

    return BenchParams(
        endpoint=endpoint,
        api_key=api_key,
        prompt_sizes=[workload.prompt_size],
        concurrency=[workload.concurrency],
        max_output_tokens=workload.max_output_tokens,
        num_requests=workload.concurrency,  # one round of requests per repeat: the repeats give the spread
        warmup=warmup,
        seed=workload.seed,
        task=workload.task,  # type: ignore[arg-type]
        timeout=workload.timeout,
        request_deadline=workload.request_deadline,
        energy=workload.objective is Objective.TOKENS_PER_JOULE,
    )


def measure_bench(
    workload: Workload,
    endpoint: str,
    api_key: Optional[str],
    warmup: int,
    jsonl: OutputPath,
    alive: Callable[[], bool],
) -> Measured:
    """One repeat through run_benchmark: a single cell, its figure read through FIELDS."""
    from ..bench.entrypoint import run_benchmark
    from ..bench.plan import RunStatus, SilentObserver
    from ..bench.summary import FIELDS

    result = run_benchmark(bench_params(workload, endpoint, api_key, warmup), SilentObserver(), jsonl, alive=alive)
    status = result.state.status
    if status is RunStatus.INTERRUPTED:
        return Measured(None, "interrupted", interrupted=True, info=result.info)
    if status is RunStatus.SERVER_DIED:
        return Measured(None, result.state.stop_reason or "the server died", server_died=True, info=result.info)
    cells = result.document.get("cells") or []
    if not cells:
        return Measured(None, "no cell was measured", info=result.info)
    cell = cells[0]
    if cell.get("status") != "done":
        return Measured(None, f"the benchmark cell was {cell.get('status')}: {cell.get('reason')}", info=result.info)
    if result.failed_requests:
        errors = (cell.get("requests") or {}).get("errors") or []
        first = errors[0].get("error") if errors and isinstance(errors[0], dict) else None
        why = f": {first}" if first else ""
        return Measured(None, f"{result.failed_requests} request(s) failed{why}", info=result.info)
    figure = FIELDS[FIELD_OF[workload.objective]]
    value = figure.number(cell)
    if value is None or value <= 0:
        extra = ""
        if workload.objective is Objective.TOKENS_PER_JOULE:
            extra = f" ({FIELDS['energy_unavailable'].get(cell) or 'no energy measured'})"
        return Measured(None, f"the run gave no {figure.label}{extra}", info=result.info)
    return Measured(value, info=result.info)


def measure_slo(
    workload: Workload,
    endpoint: str,
    api_key: Optional[str],
    warmup: int,
    jsonl: OutputPath,
    alive: Callable[[], bool],
) -> Measured:
    """One capacity search (bench/capacity.py): the highest Poisson request rate at which the SLO holds."""
    from ..bench.capacity import CapacityParams
    from ..bench.capacity_cmd import run_capacity
    from ..bench.plan import RunStatus, SilentObserver

    params = bench_params(workload, endpoint, api_key, warmup)
    params.slo = parse_slo_text(workload.slo)
    result = run_capacity(params, CapacityParams(), SilentObserver(), jsonl, alive=alive)
    status = result.state.status
    if status is RunStatus.INTERRUPTED:
        return Measured(None, "interrupted", interrupted=True, info=result.info)
    if status is RunStatus.SERVER_DIED:
        return Measured(None, result.state.stop_reason or "the server died", server_died=True, info=result.info)
    found = result.document.get("capacity") or {}
    value = found.get("capacity")
    if found.get("outcome") in ("none", "incomplete") or not isinstance(value, (int, float)) or value <= 0:
        why = found.get("reason") or "no request rate keeps the SLO"
        return Measured(None, f"capacity search: {why}", info=result.info)
    return Measured(float(value), info=result.info)
