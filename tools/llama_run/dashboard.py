"""The dashboard of `llama-run run --ui tui`: everything drawn comes from `render_dashboard()`, a pure
function of the snapshots, log lines and static server info, so the layout is unit-tested without a
terminal."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.panel import Panel
from rich.segment import SegmentLines
from rich.table import Table
from rich.text import Text

from tools.llama_bench.monitor.sampler import Snapshot
from tools.llama_bench.utils import fmt_bytes, fmt_duration

from .logtail import LOG_LINES, clean_log_line

BLOCKS = "▁▂▃▄▅▆▇█"
HISTORY = 60  # sparkline samples
KEY_HINTS = "q quit · Ctrl-C stop"
STACK_BELOW = 100  # columns under which side-by-side panels are stacked


@dataclass
class StaticInfo:
    """What does not change while the dashboard runs."""

    model: Optional[str]
    url: str
    pid: Optional[int]
    started_at: Optional[float]  # wall-clock start of the server
    log_path: Optional[str] = None
    model_summary: Optional[str] = None  # from the GGUF header: architecture, size, quantization, context


# -- small pure helpers ----------------------------------------------------------------------------


def sparkline(values: Sequence[Optional[float]], width: int = HISTORY, top: Optional[float] = None) -> str:
    """One block character per value (the last `width` values), scaled to `top` or the largest value.

    Zero maps to the lowest block and any positive value to at least the second, so a short burst
    stays visible next to a big one; unknown values (None, NaN) are blanks.
    """
    vals = list(values)[-width:] if width > 0 else []
    known = [v for v in vals if v is not None and math.isfinite(v)]
    peak = top if top is not None else max(known, default=0.0)
    out = []
    for v in vals:
        if v is None or not math.isfinite(v):
            out.append(" ")
        elif v <= 0 or peak <= 0:
            out.append(BLOCKS[0])
        else:
            out.append(BLOCKS[max(1, min(len(BLOCKS) - 1, math.ceil(v / peak * (len(BLOCKS) - 1))))])
    return "".join(out)


def rate_history(snapshots: Sequence[Snapshot], kind: str, n: int = HISTORY) -> List[Optional[float]]:
    """Tokens/s between consecutive snapshots ("gen" or "prompt"), the last `n` intervals.

    Uses the tracker's reset-aware counts, so idle intervals are 0 (unlike `now`, which keeps the
    last burst's rate) and an interval without metrics is None.
    """
    attr = "gen_tokens" if kind == "gen" else "prompt_tokens"
    recent = list(snapshots)[-(n + 1) :]
    out: List[Optional[float]] = []
    for a, b in zip(recent, recent[1:]):
        dt = b.elapsed - a.elapsed
        if a.rates is None or b.rates is None or dt <= 0:
            out.append(None)
        else:
            out.append(max(0.0, (getattr(b.rates, attr) - getattr(a.rates, attr)) / dt))
    return out


def bar(fraction: Optional[float], width: int = 20) -> str:
    """A horizontal fill bar with eighth-block resolution; unknown fraction gives blanks."""
    if fraction is None or not math.isfinite(fraction):
        return " " * width
    eighths = round(max(0.0, min(1.0, fraction)) * width * 8)
    full, part = divmod(eighths, 8)
    text = "█" * full + (" ▏▎▍▌▋▊▉"[part] if part and full < width else "")
    return text + "░" * (width - len(text))


def _tps(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:,.1f}"


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.1f}%"


# -- rendering -------------------------------------------------------------------------------------


class _AtWidth:
    """A renderable built when rendered, once the available width (and console) are known."""

    def __init__(self, build: Callable[[Console, ConsoleOptions], RenderResult]) -> None:
        self.build = build

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        return self.build(console, options)


def _sparks(rows: Sequence[Tuple[str, List[Optional[float]], str]]) -> _AtWidth:
    """Labelled sparklines (label, values, style) with as many recent samples as the width allows."""

    def build(console: Console, options: ConsoleOptions) -> RenderResult:
        label_w = max((len(label) for label, _, _ in rows), default=0)
        for label, values, style in rows:
            suffix = f" peak {_tps(max((v for v in values if v is not None), default=None))} tok/s"
            width = max(0, min(HISTORY, options.max_width - label_w - 1 - len(suffix)))
            spark = (sparkline(values, width).rjust(width), style)
            yield Text.assemble((label.ljust(label_w) + " ", "bold"), spark, (suffix, "dim"), no_wrap=True)

    return _AtWidth(build)


def _fields(parts: Sequence[Text], gap: str = "   ") -> _AtWidth:
    """Header fields on one line when they fit, else split over two (never a field broken)."""

    def build(console: Console, options: ConsoleOptions) -> RenderResult:
        fits = sum(p.cell_len for p in parts) + len(gap) * (len(parts) - 1) <= options.max_width
        half = len(parts) if fits else (len(parts) + 1) // 2
        for group in (parts[:half], parts[half:]):
            if group:
                yield Text(gap, no_wrap=True, overflow="ellipsis").join(group)

    return _AtWidth(build)


def _row(panels: Sequence[Tuple[str, RenderableType, int]]) -> _AtWidth:
    """Panels (title, body, width ratio) side by side with equal heights, or stacked when narrow."""

    def build(console: Console, options: ConsoleOptions) -> RenderResult:
        if options.max_width < STACK_BELOW:
            yield from (Panel(body, title=title, title_align="left") for title, body, _ in panels)
            return
        total = sum(r for _, _, r in panels)
        widths = [max(8, options.max_width * r // total) for _, _, r in panels]
        widths[-1] = max(8, options.max_width - sum(widths[:-1]))
        # Render each body once (inside borders and padding) to learn the tallest; a plain grid of
        # panels would leave ragged bottom edges.
        bodies = [
            console.render_lines(b, options.update(width=w - 4, height=None)) for (_, b, _), w in zip(panels, widths)
        ]
        height = max(len(lines) for lines in bodies) + 2
        grid = Table.grid()
        for w in widths:
            grid.add_column(width=w)
        boxed = [SegmentLines(lines, new_lines=True) for lines in bodies]
        grid.add_row(*[Panel(b, title=t, title_align="left", height=height) for (t, _, _), b in zip(panels, boxed)])
        yield grid

    return _AtWidth(build)


def server_state(snap: Optional[Snapshot]) -> Text:
    if snap is None:
        return Text("● starting monitor", style="yellow")
    if snap.error:
        return Text("● error", style="bold red")
    busy_slots = snap.slots.busy if snap.slots else 0
    processing = int(snap.requests_processing or 0)
    if processing or busy_slots:
        return Text(f"● busy ({max(processing, busy_slots)} processing)", style="bold green")
    return Text("● ready, idle", style="green")


def _header(snap: Optional[Snapshot], info: StaticInfo, now: Optional[float]) -> Panel:
    uptime = None if info.started_at is None or now is None else max(0.0, now - info.started_at)
    model = os.path.basename(info.model) if info.model else "(no model)"
    parts = [
        Text.assemble(("llama-server ", "bold"), server_state(snap)),
        Text(f"pid {info.pid if info.pid is not None else '-'}   up {fmt_duration(uptime)}"),
        Text(model, style="bold cyan"),
        *([Text(info.model_summary, style="cyan")] if info.model_summary else []),
        Text(info.url, style="underline"),
    ]
    body: RenderableType = _fields(parts)
    if snap is not None and snap.error:
        body = Group(body, Text(snap.error, style="red"))
    return Panel(body, title="llama-run", title_align="left", subtitle=KEY_HINTS, subtitle_align="right")


def _tokens(snapshots: Sequence[Snapshot]) -> RenderableType:
    snap = snapshots[-1] if snapshots else None
    rates = snap.rates if snap else None
    if rates is None:
        now_label = "now"
    elif rates.now.gen_tps is None and rates.now.prompt_tps is None:
        now_label = "now (first sample)"
    else:
        worked = rates.prompt_tokens or rates.gen_tokens
        idle = bool(snap and snap.idle)
        now_label = "now (live)" if not idle else "now (idle · last burst)" if worked else "now (idle)"
    table = Table(box=None, expand=True, pad_edge=False, header_style="bold")
    table.add_column("tok/s")
    table.add_column(now_label, justify="right", style="yellow" if snap and snap.idle else "bold green")
    for label in ("1m", "15m", "all"):
        table.add_column(label, justify="right")
    table.add_column("tokens", justify="right")
    for name, attr, total in (("prompt", "prompt_tps", "prompt_tokens"), ("generation", "gen_tps", "gen_tokens")):
        cells = [getattr(r, attr) for r in ((rates.now, rates.m1, rates.m15, rates.all) if rates else ())]
        cells += [None] * (4 - len(cells))
        table.add_row(name, *[_tps(c) for c in cells], f"{getattr(rates, total):,}" if rates else "-")
    history = [("gen", rate_history(snapshots, "gen"), "green"), ("prompt", rate_history(snapshots, "prompt"), "cyan")]
    return Group(table, Text(""), _sparks(history))


def _slots(snap: Optional[Snapshot], per_slot_rows: bool = True) -> RenderableType:
    lines: List[RenderableType] = []
    if snap is not None:
        req = "-" if snap.requests_processing is None else f"{snap.requests_processing:.0f}"
        deferred = "-" if snap.requests_deferred is None else f"{snap.requests_deferred:.0f}"
        lines.append(Text.assemble("requests ", (req, "bold"), " processing · ", (deferred, "bold"), " deferred"))
    for m in (snap.models or []) if snap else []:
        busy = f" · {m.requests_processing:.0f} processing" if m.requests_processing is not None else ""
        style = "green" if m.status == "loaded" else "dim"
        lines.append(Text.assemble("model ", (m.name, "bold"), " ", (m.status, style), busy))
    slots = snap.slots if snap else None
    if slots is None or slots.total == 0:
        lines.append(Text("slots: no data (/slots disabled or unavailable)", style="dim"))
        return Group(*lines)
    fill = slots.ctx_fill
    lines.append(Text.assemble("slots ", (f"{slots.busy}/{slots.total}", "bold"), " busy"))
    fill_pct = _pct(None if fill is None else fill * 100)
    of = " of busy slots" if slots.busy else ""  # fill is measured over the busy slots only
    lines.append(Text.assemble("ctx fill ", (bar(fill, 16), "magenta"), f" {fill_pct}{of}"))
    if not per_slot_rows:
        return Group(*lines)
    table = Table(box=None, pad_edge=False, header_style="bold", padding=(0, 1))
    for col in ("slot", "state", "ctx used"):
        table.add_column(col, justify="left" if col == "state" else "right", no_wrap=True)
    table.add_column("", no_wrap=True, overflow="crop")  # the bar gives way first
    shown = slots.slots_used[:8]
    per_slot = slots.n_ctx_per_slot
    for i, used in enumerate(shown):
        frac = used / per_slot if per_slot else None
        size = f"{used:,}/{per_slot:,}" if per_slot else f"{used:,}"
        state = Text("busy", style="green") if used else Text("idle", style="dim")
        table.add_row(str(i), state, size, Text(bar(frac, 12), style="magenta"))
    lines.append(table)
    if len(slots.slots_used) > len(shown):
        lines.append(Text(f"… {len(slots.slots_used) - len(shown)} more slots", style="dim"))
    return Group(*lines)


def _system(snap: Optional[Snapshot]) -> RenderableType:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    host = snap.host if snap else None
    proc = snap.process if snap else None
    cpu = host.cpu_percent if host else None
    grid.add_row("host cpu", Text.assemble((bar(None if cpu is None else cpu / 100, 10), "blue"), f" {_pct(cpu)}"))
    if host and host.ram_used_bytes is not None and host.ram_total_bytes:
        ram = Text.assemble(
            (bar(host.ram_used_bytes / host.ram_total_bytes, 10), "blue"),
            f" {fmt_bytes(host.ram_used_bytes)} / {fmt_bytes(host.ram_total_bytes)}",
        )
    else:
        ram = Text("-")
    grid.add_row("host ram", ram)
    grid.add_row(
        "server", f"cpu {_pct(proc.cpu_percent if proc else None)} · rss {fmt_bytes(proc.rss_bytes if proc else None)}"
    )
    gpus = snap.gpus if snap else []
    for gpu in gpus:
        vram = f"{fmt_bytes(gpu.mem_used_bytes)} / {fmt_bytes(gpu.mem_total_bytes)}"
        power = "-" if gpu.power_w is None else f"{gpu.power_w:.0f} W"
        grid.add_row(f"gpu {gpu.index}", f"{gpu.name}: util {_pct(gpu.util_percent)} · vram {vram} · {power}")
    if not gpus:
        reason = getattr(snap.energy, "gpu_reason", None) if snap else None
        grid.add_row("gpu", Text(f"none ({reason})" if reason else "none", style="dim"))
    energy = (snap.energy_text if snap else None) or "unavailable: no reading yet"
    energy = energy[len("energy ") :] if energy.startswith("energy ") else energy
    grid.add_row("energy", Text(energy, style="yellow" if "unavailable" in energy else ""))
    return grid


def _log(lines: Sequence[str], rows: int = LOG_LINES, pad: bool = False) -> Group:
    texts = []
    for raw in list(lines)[-rows:] if rows > 0 else []:
        line = clean_log_line(raw)
        low = line.lower()
        style = "red" if "error" in low or "failed" in low else "yellow" if "warn" in low else "dim"
        texts.append(Text(line, style=style, no_wrap=True, overflow="ellipsis"))
    texts = texts or [Text("(no output yet)", style="dim")]
    if pad:  # keep the panel's bottom edge at the bottom of the screen while the log is short
        texts += [Text("")] * (rows - len(texts))
    return Group(*texts)


def render_dashboard(
    snapshots: Sequence[Snapshot],
    log_lines: Sequence[str],
    info: StaticInfo,
    now: Optional[float] = None,
    height: Optional[int] = None,
    requests: Optional[RenderableType] = None,
) -> RenderableType:
    """The whole screen; `now` (wall clock, for the uptime) defaults to the newest snapshot's time.
    With the screen `height` the log tail fills the rows the panels leave, else it shows LOG_LINES.
    `requests` is the token-meter proxy's panel (requests_panel.requests_panel), when it runs."""
    snap = snapshots[-1] if snapshots else None
    if now is None and snap is not None:
        now = snap.wall
    extra = [Panel(requests, title="requests (token-meter proxy)", title_align="left")] if requests else []
    tops = [
        Group(
            _header(snap, info, now),
            Panel(_tokens(snapshots), title="tokens", title_align="left"),
            _row([("requests & slots", _slots(snap, per_slot_rows=full), 2), ("system", _system(snap), 3)]),
            *extra,
        )
        for full in (True, False)
    ]
    title = f"server log · {info.log_path}" if info.log_path else "server log"

    def build(console: Console, options: ConsoleOptions) -> RenderResult:
        # The height comes as an argument: rich drops options.height inside the Group Live wraps us in.
        # On a short screen the compact panels (no per-slot rows) leave the log some room.
        lines = console.render_lines(tops[0], options.update(height=None), pad=False)
        if height is not None and len(lines) + 2 + LOG_LINES // 2 > height:
            lines = console.render_lines(tops[1], options.update(height=None), pad=False)
        yield SegmentLines(lines, new_lines=True)
        rows = LOG_LINES if height is None else max(LOG_LINES // 2, height - len(lines) - 2)
        yield Panel(_log(log_lines, rows, pad=height is not None), title=title, title_align="left")

    return _AtWidth(build)
