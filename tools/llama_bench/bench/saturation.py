"""When a capacity step can stop early: its SLO can no longer be met, or the server is clearly saturated.

Two tests, both conservative (a step near the boundary runs to the end):
- the SLO is out of reach: more requests already miss a bound than the percentile allows for the whole
  step (finished ones, plus requests waiting longer than an E2E bound), so no outcome of the rest can
  make it pass;
- saturation (Poisson arrivals only): the backlog of arrived-but-unfinished requests grew in each of the
  last three 2-second windows, by at least twice the slot count in all, to more than four times the slot
  count; TTFT from arrival of the latest requests is three times that of the first ones; and the server's
  requests_deferred is rising (when it has /metrics) — the queue is growing without bound, so the offered
  rate is above what the server sustains. (At a load right at capacity a queue also wanders upwards for
  a while; the thresholds leave such a step to run to the end.)
"""

from __future__ import annotations

import math
import statistics
from typing import TYPE_CHECKING, List, Optional, Tuple

from .records import CANCELLED_ERRORS

if TYPE_CHECKING:
    from .plan import CellProgress
    from .slo import Slo

BACKLOG_WINDOW_S = 2.0  # the backlog must have grown over each of the last WINDOWS such windows
WINDOWS = 3
TTFT_GROWTH = 3.0  # latest TTFT (from arrival) at least this many times the first ones
MIN_FINISHED = 8


class StepWatch:
    """The CellWatch of one capacity step."""

    def __init__(self, slo: "Slo", slots: int, open_loop: bool) -> None:
        self.slo = slo
        self.slots = max(1, slots)
        self.open_loop = open_loop
        self._backlog: List[Tuple[float, int]] = []
        self._seen = 0  # records already judged (records are only ever appended while the cell runs)
        self._bad = [0] * len(slo.terms)
        self._ttft: List[float] = []  # TTFT from arrival of ok requests, in finishing order

    def check(self, progress: "CellProgress") -> Optional[str]:
        """Called every WATCH_INTERVAL_S in the event loop: only the records new since the last call are
        looked at, so a long step costs no more per call than a short one."""
        return self._out_of_reach(progress) or (self._saturated(progress) if self.open_loop else None)

    def _out_of_reach(self, p: "CellProgress") -> Optional[str]:
        from .slo import request_value

        for rec in p.finished[self._seen :]:
            if rec.warmup or rec.error in CANCELLED_ERRORS:
                continue
            for i, term in enumerate(self.slo.terms):
                value = request_value(rec, term)
                if value is not None and value > term.bound_ms:
                    self._bad[i] += 1
            if rec.ok and rec.ttft_ms is not None:
                self._ttft.append(rec.ttft_ms + (rec.queue_ms or 0.0))
        self._seen = len(p.finished)
        for i, term in enumerate(self.slo.terms):
            allowed = p.planned - math.ceil(term.percentile / 100.0 * p.planned - 1e-9)
            bad = self._bad[i]
            if term.metric == "e2e":
                bad += sum(1 for w in p.waiting_s if w * 1000.0 > term.bound_ms)
            if bad > allowed:
                return (
                    f"the SLO can no longer be met: {bad} of {p.planned} requests already miss "
                    f"{term.name} <= {term.bound_ms:g} ms (at most {allowed} may)"
                )
        return None

    def _saturated(self, p: "CellProgress") -> Optional[str]:
        backlog = p.arrived - len(p.finished)
        self._backlog.append((p.elapsed_s, backlog))
        history = [self._at(p.elapsed_s - k * BACKLOG_WINDOW_S) for k in range(WINDOWS, 0, -1)]
        if any(h is None for h in history) or backlog <= max(4, 4 * self.slots):
            return None
        points = [h for h in history if h is not None] + [backlog]
        if any(b <= a for a, b in zip(points, points[1:])) or backlog - points[0] < 2 * self.slots:
            return None
        before = points[0]
        ttft = self._ttft
        if len(ttft) < MIN_FINISHED:
            return None
        quarter = max(2, len(ttft) // 4)
        first, last = statistics.median(ttft[:quarter]), statistics.median(ttft[-quarter:])
        if last < TTFT_GROWTH * max(first, 1.0):
            return None
        if p.deferred:
            if not (p.deferred[-1] > p.deferred[0] and p.deferred[-1] >= 1):
                return None
            deferred = f", requests_deferred up to {max(p.deferred):g}"
        else:
            deferred = " (no /metrics: requests_deferred unknown)"
        return (
            f"saturated: the queue grew from {before} to {backlog} requests in {WINDOWS * BACKLOG_WINDOW_S:g} s, "
            f"TTFT from arrival from {first:.0f} to {last:.0f} ms{deferred}"
        )

    def _at(self, t: float) -> Optional[int]:
        """The backlog at (just before) time t, None when the cell is younger than that."""
        if t < 0:
            return None
        best = None
        for when, value in self._backlog:
            if when > t:
                break
            best = value
        return best
