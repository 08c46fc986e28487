"""`llama-bench capacity` and `bench --capacity`: run the capacity search (capacity.CapacitySearch) through
run_benchmark, show it step by step, print the curve and the capacity, write the files."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from ..utils import ExitStatus
from .capacity import CapacityParams, CapacitySearch, Outcome
from .cmd import OutputOptions, default_jsonl, exit_status, write_outputs
from .entrypoint import BenchResult, run_benchmark
from .plan import BenchParams, Cell
from .probe import ServerInfo


def run_capacity(
    params: BenchParams,
    cap: CapacityParams,
    observer: Any,
    jsonl_path: Any,
    started: Optional[Dict[str, Any]] = None,
    alive: Optional[Callable[[], bool]] = None,
) -> BenchResult:
    """The search in-process (no console): the document's "capacity" holds the curve and the answer."""

    def make(info: ServerInfo, planned: List[Cell]) -> CapacitySearch:
        return CapacitySearch(params, cap, info, planned)

    return run_benchmark(params, observer, jsonl_path, started=started, alive=alive, search=make)


def capacity(
    params: BenchParams,
    out: OutputOptions,
    started: Optional[Dict[str, Any]] = None,
    alive: Optional[Callable[[], bool]] = None,
    *,
    cap: CapacityParams,
) -> int:
    from .output.capacity import CapacityReporter, capacity_line, curve_table
    from .output.console import make_console

    jsonl_path = out.jsonl or default_jsonl()
    reporter = CapacityReporter(params, cap, quiet=out.quiet)
    try:
        result = run_capacity(params, cap, reporter, jsonl_path, started=started, alive=alive)
    finally:
        reporter.close()
    console = make_console()
    found = result.document.get("capacity") or {}
    if found.get("curve"):
        console.print(curve_table(found))
    for line in result.document.get("notes") or []:
        console.print(f"  note: {line}")
    if found:
        console.print(capacity_line(found))
    failures = write_outputs(result, out, jsonl_path)
    # Failed requests are what a capacity search finds at high load: they miss the SLO, no more.
    code = exit_status(result, failed_requests_fail=False)
    if code == ExitStatus.OK and found.get("outcome") == Outcome.NONE:
        code = ExitStatus.FAILED
    return ExitStatus.OUTPUT_ERROR if failures and code == ExitStatus.OK else code
