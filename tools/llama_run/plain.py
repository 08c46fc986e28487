"""Plain-text live stats: blocks of `[sys]` and `[tok]` lines that scripts can parse.

The line format stays compatible with paq_llamacpp_studio's: `[tok] now: p_tok/s <float> g_tok/s <float>
p_tok <int> g_tok <int>` comes first on each token line; extra fields follow it.
"""

from __future__ import annotations

from typing import List, Optional

from tools.llama_bench import stopping
from tools.llama_bench.monitor.metrics import Rate
from tools.llama_bench.monitor.sampler import Monitor, Snapshot
from tools.llama_bench.monitor.windows import WindowStats, window_stats
from tools.llama_bench.ticker import Ticker
from tools.llama_bench.utils import fmt_bytes, fmt_float

from .proxy.records import req_line
from .proxyview import ProxyView, proxy_line
from .session import Session, StopReason

WINDOWS = (("now", 0.0), ("1m", 60.0), ("15m", 900.0), ("all", None))


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.1f}%"


def sys_line(label: str, stats: Optional[WindowStats], snap: Snapshot) -> str:
    if stats is None:
        return f"[sys] {label}: no data"
    ram = f"{fmt_bytes(stats.ram_used_bytes)}/{fmt_bytes(stats.ram_total_bytes)}"
    if stats.energy_joules is not None:
        # Name what the joules add up: RAPL (cpu), the GPUs, or both.
        energy = (
            f"energy {stats.energy_sources or 'total'} {stats.energy_joules:.1f} J ({fmt_float(stats.energy_watts)} W)"
        )
    else:
        energy = snap.energy_text or "energy unavailable"
        if not energy.startswith("energy"):
            energy = f"energy {energy}"
    return (
        f"[sys] {label}: cpu {_pct(stats.host_cpu)} ram {ram} srv_cpu {_pct(stats.server_cpu)} "
        f"srv_rss {fmt_bytes(stats.server_rss_bytes)} {energy}"
    )


def tok_line(label: str, rate: Optional[Rate], stats: Optional[WindowStats], snap: Snapshot) -> str:
    p = rate.prompt_tps if rate and rate.prompt_tps is not None else 0.0
    g = rate.gen_tps if rate and rate.gen_tps is not None else 0.0
    p_tok = stats.prompt_tokens if stats and stats.prompt_tokens is not None else 0
    g_tok = stats.gen_tokens if stats and stats.gen_tokens is not None else 0
    if label == "now" and snap.rates is not None:
        # The tokens behind the rates beside them: the last interval's, or the last burst's when idle.
        p_tok, g_tok = snap.rates.now_prompt_tokens, snap.rates.now_gen_tokens
    line = f"[tok] {label}: p_tok/s {p:.2f} g_tok/s {g:.2f} p_tok {p_tok} g_tok {g_tok}"
    if label == "now":
        if snap.error and snap.rates is None:
            line += " (no data)"
        elif rate is None or rate.gen_tps is None:
            line += " (first sample)"
        elif not snap.idle:
            line += " (active)"
        else:
            worked = snap.rates is not None and (snap.rates.prompt_tokens or snap.rates.gen_tokens)
            line += " (idle, last burst)" if worked else " (idle)"
        busy = f"{snap.slots.busy}/{snap.slots.total}" if snap.slots else "-"
        fill = f"{snap.slots.ctx_fill * 100:.0f}%" if snap.slots and snap.slots.ctx_fill is not None else "-"
        line += (
            f" req {fmt_float(snap.requests_processing, 0)} deferred {fmt_float(snap.requests_deferred, 0)}"
            f" slots {busy} ctx {fill}"
        )
    return line


def models_line(snap: Snapshot) -> str:
    """Router mode: `[models] alpha loaded req 1 slots 1 · beta unloaded`."""
    parts = []
    for m in snap.models or []:
        text = f"{m.name} {m.status}"
        if m.requests_processing is not None:
            text += f" req {m.requests_processing:.0f}"
        if m.slots_busy is not None:
            text += f" slots {m.slots_busy}"
        parts.append(text)
    return "[models] " + (" · ".join(parts) if parts else "none")


def format_block(snapshots: List[Snapshot]) -> List[str]:
    snap = snapshots[-1]
    lines: List[str] = []
    if snap.error:
        lines.append(f"[warn] {snap.error}")
    stats = {label: window_stats(snapshots, secs) for label, secs in WINDOWS}
    for label, _ in WINDOWS:
        lines.append(sys_line(label, stats[label], snap))
    rates = snap.rates
    by_label = {"now": rates.now, "1m": rates.m1, "15m": rates.m15, "all": rates.all} if rates else {}
    for label, _ in WINDOWS:
        lines.append(tok_line(label, by_label.get(label), stats[label], snap))
    if snap.models is not None:
        lines.append(models_line(snap))
    for gpu in snap.gpus:
        lines.append(
            f"[gpu] {gpu.index}: util {_pct(gpu.util_percent)} vram {fmt_bytes(gpu.mem_used_bytes)}/"
            f"{fmt_bytes(gpu.mem_total_bytes)} power {fmt_float(gpu.power_w)} W"
        )
    return lines


def run_plain(session: Session) -> StopReason:
    """Sample every interval and print a block every stats interval; returns why it stopped. With the
    token-meter proxy, every finished request is a `[req]` line as it finishes.

    However it stops (Ctrl-C, SIGTERM, --duration, the server exiting), a last sample is taken and a
    final block printed, so a request that finished just before the stop is in the totals."""
    server = session.server
    monitor = Monitor(session.monitor_url, session.interval, api_key=server.api_key, pid=server.pid)
    proxy = ProxyView(session.proxy_url, server.api_key, session.interval) if session.proxy_url else None
    try:
        return _loop(session, monitor, proxy)
    finally:
        _final_block(session, monitor, proxy)
        monitor.stop()
        if proxy is not None:
            proxy.stop()


def _requests(proxy: Optional[ProxyView]) -> None:
    snap = proxy.poll() if proxy is not None else None
    if proxy is not None and snap is not None:
        for rec in proxy.newly_finished(snap):
            print(req_line(rec), flush=True)


def _block(snapshots: List[Snapshot], proxy: Optional[ProxyView]) -> str:
    lines = format_block(snapshots)
    if proxy is not None:
        lines.append(proxy_line(proxy))
    return "\n".join(lines)


def _loop(session: Session, monitor: Monitor, proxy: Optional[ProxyView]) -> StopReason:
    samples, prints = Ticker(session.interval), Ticker(session.stats_interval)
    while True:
        stopping.check()
        gone = session.exited()
        if gone is not None:
            return gone
        if not samples.wait(session.deadline):
            return StopReason.DURATION
        stopping.check()
        gone = session.exited()
        if gone is not None:
            return gone
        monitor.sample()
        _requests(proxy)
        if prints.due():
            print(_block(monitor.snapshots(), proxy), flush=True)


def _final_block(session: Session, monitor: Monitor, proxy: Optional[ProxyView]) -> None:
    stopping.ignore()  # a second Ctrl-C must not cut the final block (the runner stops the server next)
    try:
        if session.server.poll() is None:
            monitor.sample()
            _requests(proxy)
        snapshots = monitor.snapshots()
        if snapshots:
            print(_block(snapshots, proxy), flush=True)
    except Exception as exc:  # the final summary is best effort: the server is stopped whatever happens here
        print(f"[warn] no final stats: {exc}", flush=True)
