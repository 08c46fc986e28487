"""Console output of a capacity search: one line per step while it runs, the curve, and the answer."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping

from ..capacity import CapacityParams, Outcome, SearchBy, step_passed
from ..plan import BenchParams, Cell
from ..probe import ServerInfo
from ..records import Api, RequestRecord
from .console import fmt, make_console


def _value(by: str, value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g} req/s" if by == SearchBy.RATE else f"concurrency {int(value)}"


class CapacityReporter:
    """The Observer of a capacity search: a line per step (what was tried, whether the SLO held)."""

    def __init__(self, params: BenchParams, cap: CapacityParams, quiet: bool = False) -> None:
        self.params = params
        self.cap = cap
        self.quiet = quiet
        self.console = make_console()

    def server_probed(self, info: ServerInfo, api: Api, notes: List[str]) -> None:
        kind = f"llama.cpp {info.build_info or ''}".strip() if info.is_llamacpp else "OpenAI-compatible server"
        assert self.params.slo is not None
        self.console.print(
            f"Capacity search on {info.endpoint} ({kind}; slots {info.total_slots or '?'}) api={api}: "
            f"highest {self.cap.by} meeting {self.params.slo.text}"
        )
        for n in notes:
            self.console.print(f"[yellow]note:[/] {n}")

    def planned(self, cells: List[Cell], warmup: int) -> None:
        pass

    def cell_started(self, cell: Cell) -> None:
        if not self.quiet:
            step = cell.step or {}
            what = (
                "calibrating: requests one at a time"
                if step.get("phase") == "calibrate"
                else (f"step {step.get('index')} ({step.get('phase')}): {_value(self.cap.by, step.get('value'))}")
            )
            eta = f", about {cell.units / cell.rate:.0f} s" if cell.rate else ""
            self.console.print(f"{what}, {cell.num_requests} request(s){eta} ...")

    def request_done(self, record: RequestRecord) -> None:
        pass

    def cell_done(self, cell: Cell) -> None:
        if self.quiet or cell.summary is None:
            return
        s = cell.summary
        slo = s.slo
        ttft = s.latency.get("ttft_ms")
        tpot = s.latency.get("tpot_ms")
        e2e = s.latency.get("e2e_ms")
        if (cell.step or {}).get("phase") == "calibrate":
            self.console.print(
                f"  service time {fmt(e2e.p50 if e2e else None, 1)} ms per request (E2E p50), "
                f"TTFT {fmt(ttft.p50 if ttft else None, 1)} ms, SLO {'met' if slo and slo.met else 'missed'}"
            )
            return
        verdict = "[green]SLO met[/]" if step_passed(cell) else "[red]SLO missed[/]"
        terms = ", ".join(f"{t.term} {fmt(t.value_ms, 1)} ms" for t in (slo.terms if slo else []))
        self.console.print(
            f"  {verdict}: {terms}; good {fmt((slo.good_share or 0) * 100 if slo else None, 0)}%, "
            f"{fmt(s.throughput.requests_per_s, 3)} req/s done, goodput {fmt(slo.goodput_rps if slo else None, 3)} "
            f"req/s; TTFT p50 {fmt(ttft.p50 if ttft else None, 1)} ms, TPOT p50 {fmt(tpot.p50 if tpot else None, 2)} ms"
        )
        stopped = (cell.step or {}).get("stopped_early")
        if stopped:
            self.console.print(f"  stopped early after {s.requests.sent} of {cell.num_requests}: {stopped}")

    def message(self, text: str) -> None:
        self.console.print(f"[bold yellow]{text}[/]")

    def close(self) -> None:
        pass


CURVE_COLUMNS = (
    "SLO",
    "good %",
    "done req/s",
    "goodput req/s",
    "goodput tok/s",
    "TTFT p50",
    "TTFT p90",
    "TTFT p99",
    "TPOT p50",
    "TPOT p90",
    "deferred",
    "note",
)


VERDICTS = {True: "met", False: "missed", None: "cut short"}  # None: the run stopped during the step


def curve_table(found: Mapping[str, Any]) -> Any:
    """The curve: one row per step, sorted by the rate (or concurrency) tried."""
    from rich.table import Table

    by = str(found.get("by"))
    table = Table(title=f"Capacity curve ({found.get('slo', {}).get('spec')})", title_justify="left")
    for col in ("req/s" if by == SearchBy.RATE else "conc", *CURVE_COLUMNS):
        table.add_column(col, justify="left" if col in ("SLO", "note") else "right")
    points: List[Dict[str, Any]] = list(found.get("curve") or [])
    for p in points:
        share = p.get("slo_good_share")
        table.add_row(
            fmt(p.get("value"), 3) if by == SearchBy.RATE else str(int(p.get("value") or 0)),
            VERDICTS[p.get("passed")],
            fmt(share * 100 if share is not None else None, 0),
            fmt(p.get("requests_per_s"), 3),
            fmt(p.get("goodput_rps"), 3),
            fmt(p.get("goodput_gen_tps"), 1),
            *(fmt(p.get(k), 1) for k in ("ttft_p50", "ttft_p90", "ttft_p99", "tpot_p50", "tpot_p90")),
            fmt(p.get("requests_deferred_max"), 0),
            ("stopped early" if p.get("stopped_early") else "") + (" (recheck)" if p.get("phase") == "recheck" else ""),
        )
    return table


def capacity_line(found: Mapping[str, Any]) -> str:
    by, outcome = str(found.get("by")), found.get("outcome")
    lo, hi = found.get("lower"), found.get("upper")
    slo = (found.get("slo") or {}).get("spec")
    if outcome == Outcome.NONE:
        return f"capacity: 0 — {found.get('reason')} ({slo})"
    if outcome == Outcome.AT_LEAST:
        return f"capacity: at least {_value(by, lo)} — {found.get('reason')} ({slo})"
    if outcome == Outcome.BELOW:
        return f"capacity: below {_value(by, hi)} — {found.get('reason')} ({slo})"
    if lo is None:
        if outcome == Outcome.INCOMPLETE:
            return f"capacity: unknown — incomplete: {found.get('reason')}"
        return f"capacity: unknown — {found.get('reason') or 'no step met the SLO'}"
    rel = found.get("relative_uncertainty")
    bracket = f"the SLO breaks between {_value(by, lo)} and {_value(by, hi)}" if hi else "no upper bound found"
    text = f"capacity: {_value(by, lo)} ({bracket}" + (f", +{rel * 100:.0f}%" if rel else "") + f"; {slo})"
    if outcome == Outcome.INCOMPLETE:
        text += f" — incomplete: {found.get('reason')}"
    return text
