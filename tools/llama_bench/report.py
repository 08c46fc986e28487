"""Console output: a progress bar with ETA and a table per cell while running, the summary table,
and `compare` of two result files. JSON/CSV files are written by results.py."""

from __future__ import annotations

import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .benchmark import Cell, Observer
from .client import RequestRecord
from .stats import get_path, relative_change

LATENCY_ROWS = (
    ("TTFT", "latency.ttft_ms", "ms"),
    ("  reasoning TTFT", "latency.reasoning_ttft_ms", "ms"),
    ("TPOT", "latency.tpot_ms", "ms"),
    ("ITL", "latency.itl_ms", "ms"),
    ("E2E", "latency.e2e_ms", "ms"),
    ("client queue", "latency.queue_ms", "ms"),
    ("TTFT - server prompt_ms", "latency.ttft_overhead_ms", "ms"),
    ("E2E - server time", "latency.overhead_ms", "ms"),
    ("prompt tok/s (client)", "rates.prompt_tps", "tok/s"),
    ("prompt tok/s (server)", "rates.server_prompt_tps", "tok/s"),
    ("gen tok/s (client)", "rates.gen_tps", "tok/s"),
    ("gen tok/s (server)", "rates.server_gen_tps", "tok/s"),
)
STATS = ("mean", "p50", "p90", "p99", "min", "max")

# (label, path in a cell, higher is better)
COMPARE_METRICS = (
    ("gen tok/s", "throughput.gen_tps", True),
    ("prompt tok/s", "throughput.prompt_tps", True),
    ("req/s", "throughput.requests_per_s", True),
    ("TTFT p50 ms", "latency.ttft_ms.p50", False),
    ("TTFT p99 ms", "latency.ttft_ms.p99", False),
    ("TPOT p50 ms", "latency.tpot_ms.p50", False),
    ("ITL p50 ms", "latency.itl_ms.p50", False),
    ("ITL p99 ms", "latency.itl_ms.p99", False),
    ("E2E p50 ms", "latency.e2e_ms.p50", False),
    ("server gen tok/s", "rates.server_gen_tps.mean", True),
    ("server prompt tok/s", "rates.server_prompt_tps.mean", True),
    ("Wh", "energy.wh", False),
    ("gen tok/J", "energy.gen_tokens_per_j", True),
)


def make_console(stderr: bool = False) -> Any:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Captured output (pipes, CI logs) gets a wide fixed width so table rows never wrap.
    return Console(file=stream, width=None if stream.isatty() else 180, highlight=False)


def fmt(value: Optional[float], digits: int = 1) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def cell_title(cell: Cell) -> str:
    req = (cell.summary or {}).get("requests", {})
    tp = (cell.summary or {}).get("throughput", {})
    dur = tp.get("duration_s")
    head = f"prompt {cell.prompt_tokens} tok x concurrency {cell.concurrency}"
    if cell.status == "skipped":
        return f"{head}: skipped"
    return f"{head}: {req.get('ok', 0)}/{req.get('planned', 0)} ok in {fmt(dur, 2)} s ({cell.status})"


def cell_table(cell: Cell) -> Any:
    from rich.table import Table

    table = Table(title=cell_title(cell), title_justify="left", expand=False)
    table.add_column("metric")
    table.add_column("unit")
    for s in STATS:
        table.add_column(s, justify="right")
    for label, path, unit in LATENCY_ROWS:
        dist = get_path(cell.summary or {}, path)
        if not dist:
            continue
        digits = 2 if unit == "ms" and (dist.get("p50") or 0) < 100 else 1
        table.add_row(label, unit, *(fmt(dist.get(s), digits) for s in STATS))
    return table


def cell_footer(cell: Cell) -> List[str]:
    tp = (cell.summary or {}).get("throughput", {})
    lines = [
        f"throughput: prompt {fmt(tp.get('prompt_tps'))} tok/s, gen {fmt(tp.get('gen_tps'))} tok/s, "
        f"{fmt(tp.get('requests_per_s'), 3)} req/s"
    ]
    energy = cell.energy or {}
    if energy.get("available"):
        lines.append(
            f"energy: {fmt(energy.get('wh'), 5)} Wh ({fmt(energy.get('total_j'))} J), "
            f"{fmt(energy.get('gen_tokens_per_j'), 3)} gen tok/J, {fmt(energy.get('tokens_per_j'), 3)} tok/J"
        )
    elif energy:
        lines.append(f"energy: unavailable: {energy.get('reason')}")
    sm = cell.server_metrics or {}
    if sm.get("requests_deferred_max") is not None:
        lines.append(
            f"server /metrics: prompt tokens {fmt(sm.get('prompt_tokens'), 0)}, gen tokens "
            f"{fmt(sm.get('gen_tokens'), 0)}, max processing {fmt(sm.get('requests_processing_max'), 0)}, "
            f"max deferred {fmt(sm.get('requests_deferred_max'), 0)}"
        )
    return lines


SUMMARY_COLUMNS: Tuple[Tuple[str, str, int], ...] = (
    ("TTFT p50 ms", "latency.ttft_ms.p50", 1),
    ("TTFT p99 ms", "latency.ttft_ms.p99", 1),
    ("TPOT p50 ms", "latency.tpot_ms.p50", 2),
    ("ITL p50 ms", "latency.itl_ms.p50", 2),
    ("E2E p50 ms", "latency.e2e_ms.p50", 0),
    ("prompt tok/s", "throughput.prompt_tps", 1),
    ("gen tok/s", "throughput.gen_tps", 1),
    ("req/s", "throughput.requests_per_s", 3),
    ("srv pp tok/s", "rates.server_prompt_tps.mean", 1),
    ("srv tg tok/s", "rates.server_gen_tps.mean", 1),
    ("Wh", "energy.wh", 5),
    ("gen tok/J", "energy.gen_tokens_per_j", 3),
)


def summary_table(cells: Sequence[Dict[str, Any]], title: str = "Summary") -> Any:
    """One row per cell (cells as dicts, as stored in the JSON result)."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("prompt", justify="right")
    table.add_column("conc", justify="right")
    table.add_column("ok/sent", justify="right")
    for name, _, _ in SUMMARY_COLUMNS:
        table.add_column(name, justify="right")
    table.add_column("notes", no_wrap=True)
    for c in cells:
        req = c.get("requests") or {}
        ok = f"{req.get('ok', 0)}/{req.get('sent', 0)}" if req else "-"
        values = [fmt(get_path(c, path), digits) for _, path, digits in SUMMARY_COLUMNS]
        parts = [] if c.get("status") == "done" else [str(c.get("status"))]
        if c.get("warnings"):
            parts.append(f"{len(c['warnings'])} warning(s)")
        table.add_row(str(c.get("prompt_tokens")), str(c.get("concurrency")), ok, *values, ", ".join(parts))
    return table


def summary_notes(cells: Sequence[Dict[str, Any]]) -> List[str]:
    """The reasons and warnings behind the summary's short notes, one line each, without repeats."""
    lines: List[str] = []
    for c in cells:
        head = f"prompt {c.get('prompt_tokens')} x {c.get('concurrency')}"
        items = ([f"{c.get('status')}: {c.get('reason')}"] if c.get("reason") else []) + list(c.get("warnings") or [])
        for item in items:
            line = f"{head}: {item}"
            if line not in lines:
                lines.append(line)
    return lines


class LiveReporter(Observer):
    """Progress bar with ETA plus a table per finished cell; plain lines when not on a terminal."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.console = make_console()
        self.progress: Any = None
        self.task: Any = None
        self.done = 0
        self.failed = 0

    def planned(self, cells: List[Cell], warmup: int) -> None:
        total = warmup + sum(c.num_requests for c in cells if c.status == "pending")
        skipped = [c for c in cells if c.status == "skipped"]
        for size in sorted({c.prompt_tokens for c in skipped}):
            reason = next(c.reason for c in skipped if c.prompt_tokens == size)
            self.console.print(f"[yellow]skipping prompt size {size}:[/] {reason}")
        if self.quiet or not self.console.is_terminal:
            if not self.quiet:
                self.console.print(f"{total} request(s) in {len(cells) - len(skipped)} cell(s)")
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        from rich.progress import TimeRemainingColumn

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("failed {task.fields[failed]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.task = self.progress.add_task("warm-up" if warmup else "running", total=total, failed=0)
        self.progress.start()

    def cell_started(self, cell: Cell) -> None:
        if self.progress is not None:
            self.progress.update(self.task, description=cell.label)
        elif not self.quiet:
            self.console.print(f"cell {cell.label}: {cell.num_requests} request(s), concurrency {cell.concurrency}")

    def request_done(self, record: RequestRecord) -> None:
        self.done += 1
        if not record.ok:
            self.failed += 1
        if self.progress is not None:
            self.progress.update(self.task, advance=1, failed=self.failed)

    def cell_done(self, cell: Cell) -> None:
        if self.quiet:
            return
        self.console.print(cell_table(cell))
        for line in cell_footer(cell):
            self.console.print("  " + line)
        for warning in cell.warnings:
            self.console.print(f"  [yellow]warning:[/] {warning}")

    def message(self, text: str) -> None:
        self.console.print(f"[bold yellow]{text}[/]")

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def compare_rows(a: Dict[str, Any], b: Dict[str, Any]) -> List[Tuple[str, str, Optional[float], Optional[float]]]:
    """(cell, metric, value in A, value in B) for cells present in both results."""
    b_cells = {(c.get("prompt_tokens"), c.get("concurrency")): c for c in b.get("cells", [])}
    rows = []
    for ca in a.get("cells", []):
        key = (ca.get("prompt_tokens"), ca.get("concurrency"))
        cb = b_cells.get(key)
        if cb is None or "skipped" in (ca.get("status"), cb.get("status")):
            continue
        for label, path, _ in COMPARE_METRICS:
            va, vb = get_path(ca, path), get_path(cb, path)
            if va is None and vb is None:
                continue
            rows.append((f"p{key[0]} c{key[1]}", label, va, vb))
    return rows


def compare_table(a: Dict[str, Any], b: Dict[str, Any], name_a: str, name_b: str) -> Any:
    from rich.table import Table

    better = {label: hib for label, _, hib in COMPARE_METRICS}
    table = Table(title=f"A = {name_a}   B = {name_b}", title_justify="left")
    for col, just in (("cell", "left"), ("metric", "left"), ("A", "right"), ("B", "right"), ("change", "right")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    last = None
    for cell, metric, va, vb in compare_rows(a, b):
        change = relative_change(va, vb)
        text = "-" if change is None else f"{change * 100:+.1f}%"
        if change is not None and abs(change) >= 0.02:
            good = (change > 0) == better[metric]
            text = f"[{'green' if good else 'red'}]{text}[/]"
        table.add_row(cell if cell != last else "", metric, fmt(va, 2), fmt(vb, 2), text)
        last = cell
    return table
