"""Console output: a progress bar with ETA and a table per cell while running, the summary table,
and `compare` of two result files. JSON/CSV files are written by results.py."""

from __future__ import annotations

import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..plan import Cell, CellStatus
from ..probe import ServerInfo
from ..records import Api, RequestRecord
from ..stats import relative_change
from ..summary import DIST_ROWS, FIELDS, STATS, Field, fields

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
    "slo_good_share",
    "goodput_rps",
    "goodput_gen_tps",
)
# Columns the summary adds when a cell has them: SLO figures, the prompt cache.
SLO_COLUMNS = fields("slo_good_share", "goodput_rps")
CACHE_COLUMNS = fields("cache_hit_share", "ttft_cached_p50", "ttft_uncached_p50")
SUMMARY_HEADERS.update(
    slo_good_share="SLO good",
    goodput_rps="goodput req/s",
    cache_hit_share="cache hits",
    ttft_cached_p50="TTFT cached p50",
    ttft_uncached_p50="TTFT uncached p50",
)
# The figures a cell's repeats line shows as mean +- 95 % interval.
REPEAT_LINE = fields("gen_tps", "requests_per_s", "ttft_p50", "ttft_p99", "tpot_p50", "e2e_p50", "goodput_rps")


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
    size = "dataset" if cell.workload == "dataset" else f"prompt {cell.prompt_size} tok"
    head = f"{size} x concurrency {cell.concurrency}" + (f" at {cell.rate:g} req/s" if cell.rate else "")
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
    lines.extend(extra_lines(cell.to_dict()))
    sm = cell.server_metrics or {}
    if sm.get("requests_deferred_max") is not None:
        lines.append(
            f"server /metrics: prompt tokens {fmt(sm.get('prompt_tokens'), 0)}, gen tokens "
            f"{fmt(sm.get('gen_tokens'), 0)}, max processing {fmt(sm.get('requests_processing_max'), 0)}, "
            f"max deferred {fmt(sm.get('requests_deferred_max'), 0)}"
        )
    return lines


def extra_lines(c: Mapping[str, Any]) -> List[str]:
    """SLO, prompt cache, batched events and repeats of a cell (as stored in the JSON result)."""
    lines: List[str] = []
    slo = c.get("slo")
    if isinstance(slo, Mapping):
        terms = ", ".join(
            f"{t.get('term')} {fmt(t.get('value_ms'), 1)} ms {'<=' if t.get('met') else '>'} "
            f"{fmt(t.get('bound_ms'), 0)}"
            for t in slo.get("terms") or []
            if isinstance(t, Mapping)
        )
        lines.append(
            f"SLO {'met' if slo.get('met') else 'missed'} ({terms}): {slo.get('good')}/{slo.get('requests')} good "
            f"({_pct(slo.get('good_share'))}%), goodput "
            f"{fmt(slo.get('goodput_rps'), 3)} req/s, {fmt(slo.get('goodput_gen_tps'))} gen tok/s"
        )
    cache = c.get("cache")
    if isinstance(cache, Mapping) and cache.get("hit_requests"):
        hit_p50, miss_p50 = FIELDS["ttft_cached_p50"].number(c), FIELDS["ttft_uncached_p50"].number(c)
        lines.append(
            f"prompt cache: {cache.get('hit_requests')}/{cache.get('requests')} requests hit, "
            f"{_pct(cache.get('token_share'))}% of prompt tokens cached; "
            f"TTFT p50 cached {fmt(hit_p50, 2)} ms vs uncached {fmt(miss_p50, 2)} ms"
        )
    batch = c.get("batching")
    if isinstance(batch, Mapping) and batch.get("batched"):
        lines.append(
            f"batched token events: {batch.get('batched')}/{batch.get('events')} ({_pct(batch.get('share'))}%) "
            "arrived in one socket read with the one before"
        )
    parts = []
    for f in REPEAT_LINE:
        ci = f.ci(c)
        if ci and isinstance(ci.get("mean"), (int, float)):
            half = ci.get("half_width")
            parts.append(f"{f.label} {fmt(ci['mean'], f.digits)}" + (f" ± {fmt(half, f.digits)}" if half else ""))
    if parts:
        n = (c.get("repeats") or {}).get("n")
        lines.append(f"over {n} repeats (mean ± 95% CI): " + ", ".join(parts))
    return lines


def _pct(share: Any) -> str:
    ok = isinstance(share, (int, float)) and not isinstance(share, bool)
    return fmt(share * 100 if ok else None, 1)


def _header(f: Field) -> str:
    return SUMMARY_HEADERS.get(f.key, f.label)


def _columns(cells: Sequence[Mapping[str, Any]]) -> Tuple[Field, ...]:
    cols = SUMMARY_COLUMNS
    if any(isinstance(c.get("slo"), Mapping) for c in cells):
        cols += SLO_COLUMNS
    if any(isinstance(c.get("cache"), Mapping) and (c["cache"].get("hit_requests") or 0) > 0 for c in cells):
        cols += CACHE_COLUMNS
    return cols


def summary_table(cells: Sequence[Mapping[str, Any]], title: str = "Summary") -> Any:
    """One row per cell (cells as dicts, as stored in the JSON result)."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("prompt", justify="right")
    table.add_column("conc", justify="right")
    table.add_column("ok/sent", justify="right")
    columns = _columns(cells)
    for f in columns:
        table.add_column(_header(f), justify="right")
    table.add_column("notes", no_wrap=True)
    for c in cells:
        req = c.get("requests") or {}
        ok = f"{req.get('ok', 0)}/{req.get('sent', 0)}" if req else "-"
        values = [fmt(f.number(c), f.digits) for f in columns]
        parts = [] if c.get("status") == CellStatus.DONE else [str(c.get("status"))]
        if c.get("warnings"):
            parts.append(f"{len(c['warnings'])} warning(s)")
        size = "dataset" if c.get("workload") == "dataset" else str(c.get("prompt_size"))
        table.add_row(size, str(c.get("concurrency")), ok, *values, ", ".join(parts))
    return table


def summary_notes(cells: Sequence[Mapping[str, Any]]) -> List[str]:
    """The reasons and warnings behind the summary's short notes, one line each, without repeats."""
    lines: List[str] = []
    for c in cells:
        head = f"prompt {c.get('prompt_size')} x {c.get('concurrency')}"
        items = ([f"{c.get('status')}: {c.get('reason')}"] if c.get("reason") else []) + list(c.get("warnings") or [])
        items += [line for line in extra_lines(c) if line.startswith("over ")]
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
        total = warmup + sum(c.num_requests * c.repeats for c in cells if c.status is CellStatus.PENDING)
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


Pair = Tuple[str, Field, Dict[str, Any], Dict[str, Any]]


def _pairs(a: Dict[str, Any], b: Dict[str, Any]) -> List[Pair]:
    """(cell name, field, cell in A, cell in B) for cells present in both results (by prompt size and
    concurrency) and figures at least one of them has."""
    b_cells = {(c.get("prompt_size"), c.get("concurrency")): c for c in b.get("cells", [])}
    out = []
    for ca in a.get("cells", []):
        key = (ca.get("prompt_size"), ca.get("concurrency"))
        cb = b_cells.get(key)
        if cb is None or CellStatus.SKIPPED in (ca.get("status"), cb.get("status")):
            continue
        for f in COMPARE_FIELDS:
            if f.number(ca) is None and f.number(cb) is None:
                continue
            out.append((f"p{key[0]} c{key[1]}", f, ca, cb))
    return out


def compare_rows(a: Dict[str, Any], b: Dict[str, Any]) -> List[Tuple[str, Field, Optional[float], Optional[float]]]:
    """(cell, field, value in A, value in B) for cells present in both results."""
    return [(name, f, f.number(ca), f.number(cb)) for name, f, ca, cb in _pairs(a, b)]


def compare_table(a: Dict[str, Any], b: Dict[str, Any], name_a: str, name_b: str) -> Any:
    """A, B, the relative change and whether it is significant (significance.verdict) per figure; only
    significant changes are coloured (green better, red worse)."""
    from rich.table import Table

    from ..significance import verdict

    table = Table(title=f"A = {name_a}   B = {name_b}", title_justify="left")
    columns = (("cell", "left"), ("metric", "left"), ("A", "right"), ("B", "right"), ("change", "right"))
    for col, just in columns + (("significance", "left"),):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    last = None
    memo: Dict[Any, Any] = {}
    for cell, f, ca, cb in _pairs(a, b):
        va, vb = f.number(ca), f.number(cb)
        change = relative_change(va, vb)
        judged = verdict(f, a, b, ca, cb, memo)
        text = "-" if change is None else f"{change * 100:+.1f}%"
        colour = judged.significant if judged.significant is not None else (change is not None and abs(change) >= 0.02)
        if change is not None and colour and f.higher_is_better is not None:
            good = (change > 0) == f.higher_is_better
            text = f"[{'green' if good else 'red'}]{text}[/]"
        table.add_row(cell if cell != last else "", f.label, fmt(va, 2), fmt(vb, 2), text, judged.text())
        last = cell
    return table
