"""Host, server-process, token and energy figures over a trailing window of snapshots (1m, 15m, all)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from .sampler import Snapshot


@dataclass
class WindowStats:
    """Averages (CPU), last values (RAM, RSS) and differences (tokens, joules) over a window."""

    host_cpu: Optional[float]
    server_cpu: Optional[float]
    ram_used_bytes: Optional[int]
    ram_total_bytes: Optional[int]
    server_rss_bytes: Optional[int]
    prompt_tokens: Optional[int]
    gen_tokens: Optional[int]
    energy_joules: Optional[float]
    energy_watts: Optional[float]
    energy_sources: str = ""  # "cpu", "gpu" or "cpu+gpu": what energy_joules adds up


def _mean(values: List[float]) -> Optional[float]:
    return sum(values) / len(values) if values else None


def window_stats(snapshots: List[Snapshot], seconds: Optional[float]) -> Optional[WindowStats]:
    """Aggregate the snapshots of the last `seconds` (None = all of them)."""
    if not snapshots:
        return None
    last = snapshots[-1]
    # The baseline is the newest snapshot at or before the window's start (for a zero-length window,
    # "now", the one before the last); counters (tokens, joules) are differences against it.
    if seconds is None:
        start = 0
    elif seconds <= 0:
        start = len(snapshots) - 1
    else:
        cutoff = last.elapsed - seconds + 1e-9
        start = next((i for i in range(len(snapshots) - 1, -1, -1) if snapshots[i].elapsed <= cutoff), -1) + 1
        start = min(start, len(snapshots) - 1)
    base = snapshots[start - 1] if start > 0 else None
    window = snapshots[start:]
    host = [s.host for s in window if s.host]
    procs = [s.process for s in window if s.process]
    rss = [p.rss_bytes for p in procs if p.rss_bytes is not None]

    # Token counts end at the newest snapshot that has them: a scrape that just failed (server gone or
    # frozen) must not turn the totals into zeros.
    counted_at = next((s for s in reversed(snapshots) if s.rates is not None), None)

    def counted(attr: str) -> Optional[int]:
        end = getattr(counted_at.rates, attr, None) if counted_at and counted_at.rates else None
        if end is None:
            return None
        begin = getattr(base.rates, attr, None) if base and base.rates else None
        return max(0, int(end - (begin or 0)))

    joules = watts = None
    end_j = _joules(last)
    if end_j is not None:
        begin_j = _joules(base) if base else 0.0
        joules = end_j - (begin_j or 0.0)
        span = last.elapsed - (base.elapsed if base else 0.0)
        watts = joules / span if span > 0 else None
    last_host = last.host
    return WindowStats(
        host_cpu=_mean([h.cpu_percent for h in host if h.cpu_percent is not None]),
        server_cpu=_mean([p.cpu_percent for p in procs if p.cpu_percent is not None]),
        ram_used_bytes=last_host.ram_used_bytes if last_host else None,
        ram_total_bytes=last_host.ram_total_bytes if last_host else None,
        server_rss_bytes=rss[-1] if rss else None,
        prompt_tokens=counted("prompt_tokens"),
        gen_tokens=counted("gen_tokens"),
        energy_joules=joules,
        energy_watts=watts,
        energy_sources=_sources(last),
    )


def _joules(snap: Optional[Snapshot]) -> Optional[float]:
    energy = snap.energy if snap else None
    return energy.total_joules if energy is not None else None


def _sources(snap: Snapshot) -> str:
    energy = snap.energy
    if energy is None:
        return ""
    parts = [name for name, j in (("cpu", energy.cpu_joules), ("gpu", energy.gpu_joules)) if j is not None]
    return "+".join(parts)
