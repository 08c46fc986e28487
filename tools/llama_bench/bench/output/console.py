"""Console output: a progress bar with ETA and a table per cell while running, the summary table,
and `compare` of two result files. JSON/CSV files are written by results.py."""

from __future__ import annotations

import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..plan import Cell, CellStatus
from ..probe import ServerInfo
from ..records import Api, RequestRecord
from ..stats import relative_change
from ..summary import DIST_ROWS, STATS, Field, fields

SUMMARY_COLUMNS = fields(
    "ttft_p50",
    "ttft_p99",
    "tpot_p50",
    "itl_p50",
    "e2e_p50",
    "prompt_tps",
    "gen_tps",
    "requests_per_s",
    "server_prompt_tps_mean",
    "server_gen_tps_mean",
    "energy_wh",
    "gen_tokens_per_j",
)
# Short headers for the summary's many columns.
SUMMARY_HEADERS = {"server_prompt_tps_mean": "srv pp tok/s", "server_gen_tps_mean": "srv tg tok/s"}
COMPARE_FIELDS = fields(
    "gen_tps",
    "prompt_tps",
    "requests_per_s",
    "ttft_p50",
    "ttft_p99",
    "tpot_p50",
    "itl_p50",
    "itl_p99",
    "e2e_p50",
    "server_gen_tps_mean",
    "server_prompt_tps_mean",
    "energy_wh",
    "gen_tokens_per_j",
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
    head = f"prompt {cell.prompt_size} tok x concurrency {cell.concurrency}"
    if cell.status is CellStatus.SKIPPED or cell.summary is None:
        return f"{head}: {cell.status}"
    req, tp = cell.summary.requests, cell.summary.throughput
    return f"{head}: {req.ok}/{req.planned} ok in {fmt(tp.duration_s, 2)} s ({cell.status})"


def cell_table(cell: Cell) -> Any:
    from rich.table import Table

    table = Table(title=cell_title(cell), title_justify="left", expand=False)
    table.add_column("metric")
    table.add_column("unit")
    for s in STATS:
        table.add_column(s, justify="right")
    if cell.summary is None:
        return table
    groups = {"latency": cell.summary.latency, "rates": cell.summary.rates}
    for label, group, name, unit in DIST_ROWS:
        dist = groups[group].get(name)
        if dist is None:
            continue
        digits = 2 if unit == "ms" and dist.p50 < 100 else 1
        table.add_row(label, unit, *(fmt(getattr(dist, s), digits) for s in STATS))
    return table


def cell_footer(cell: Cell) -> List[str]:
    tp = cell.summary.throughput if cell.summary else None
    lines = [
        f"throughput: prompt {fmt(tp.prompt_tps if tp else None)} tok/s, gen {fmt(tp.gen_tps if tp else None)} "
        f"tok/s, {fmt(tp.requests_per_s if tp else None, 3)} req/s"
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


def _header(f: Field) -> str:
    return SUMMARY_HEADERS.get(f.key, f.label)


def summary_table(cells: Sequence[Mapping[str, Any]], title: str = "Summary") -> Any:
    """One row per cell (cells as dicts, as stored in the JSON result)."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("prompt", justify="right")
    table.add_column("conc", justify="right")
    table.add_column("ok/sent", justify="right")
    for f in SUMMARY_COLUMNS:
        table.add_column(_header(f), justify="right")
    table.add_column("notes", no_wrap=True)
    for c in cells:
        req = c.get("requests") or {}
        ok = f"{req.get('ok', 0)}/{req.get('sent', 0)}" if req else "-"
        values = [fmt(f.number(c), f.digits) for f in SUMMARY_COLUMNS]
        parts = [] if c.get("status") == CellStatus.DONE else [str(c.get("status"))]
        if c.get("warnings"):
            parts.append(f"{len(c['warnings'])} warning(s)")
        table.add_row(str(c.get("prompt_size")), str(c.get("concurrency")), ok, *values, ", ".join(parts))
    return table


def summary_notes(cells: Sequence[Mapping[str, Any]]) -> List[str]:
    """The reasons and warnings behind the summary's short notes, one line each, without repeats."""
    lines: List[str] = []
    for c in cells:
        head = f"prompt {c.get('prompt_size')} x {c.get('concurrency')}"
        items = ([f"{c.get('status')}: {c.get('reason')}"] if c.get("reason") else []) + list(c.get("warnings") or [])
        for item in items:
            line = f"{head}: {item}"
            if line not in lines:
                lines.append(line)
    return lines


class LiveReporter:
    """The Observer of a console run: progress bar with ETA plus a table per finished cell; plain lines
    when not on a terminal."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.console = make_console()
        self.progress: Any = None
        self.task: Any = None
        self.done = 0
        self.failed = 0

    def server_probed(self, info: ServerInfo, api: Api, notes: List[str]) -> None:
        kind = f"llama.cpp {info.build_info or ''}".strip() if info.is_llamacpp else "OpenAI-compatible server"
        self.console.print(
            f"Benchmarking {info.endpoint} ({kind}; model {info.model_path or info.model_id or '?'}; "
            f"n_ctx {info.n_ctx or '?'}; slots {info.total_slots or '?'}) api={api}"
        )
        for n in notes:
            self.console.print(f"[yellow]note:[/] {n}")

    def planned(self, cells: List[Cell], warmup: int) -> None:
        total = warmup + sum(c.num_requests for c in cells if c.status is CellStatus.PENDING)
        skipped = [c for c in cells if c.status is CellStatus.SKIPPED]
        for size in sorted({c.prompt_size for c in skipped}):
            reason = next(c.reason for c in skipped if c.prompt_size == size)
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


def compare_rows(a: Dict[str, Any], b: Dict[str, Any]) -> List[Tuple[str, Field, Optional[float], Optional[float]]]:
    """(cell, field, value in A, value in B) for cells present in both results."""
    b_cells = {(c.get("prompt_size"), c.get("concurrency")): c for c in b.get("cells", [])}
    rows = []
    for ca in a.get("cells", []):
        key = (ca.get("prompt_size"), ca.get("concurrency"))
        cb = b_cells.get(key)
        if cb is None or CellStatus.SKIPPED in (ca.get("status"), cb.get("status")):
            continue
        for f in COMPARE_FIELDS:
            va, vb = f.number(ca), f.number(cb)
            if va is None and vb is None:
                continue
            rows.append((f"p{key[0]} c{key[1]}", f, va, vb))
    return rows


def compare_table(a: Dict[str, Any], b: Dict[str, Any], name_a: str, name_b: str) -> Any:
    from rich.table import Table

    table = Table(title=f"A = {name_a}   B = {name_b}", title_justify="left")
    for col, just in (("cell", "left"), ("metric", "left"), ("A", "right"), ("B", "right"), ("change", "right")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    last = None
    for cell, f, va, vb in compare_rows(a, b):
        change = relative_change(va, vb)
        text = "-" if change is None else f"{change * 100:+.1f}%"
        if change is not None and abs(change) >= 0.02 and f.higher_is_better is not None:
            good = (change > 0) == f.higher_is_better
            text = f"[{'green' if good else 'red'}]{text}[/]"
        table.add_row(cell if cell != last else "", f.label, fmt(va, 2), fmt(vb, 2), text)
        last = cell
    return table
