"""The capacity search: the highest Poisson request rate (or concurrency) at which the SLO holds.

1. Calibrate: a few requests one at a time give the service time S; with the server's N slots the
   first estimate is N / S requests/s (or N concurrent requests), so a CPU server is not swept at GPU
   rates. If these requests miss the SLO, one step at a light load (concurrency 1, or an eighth of the
   estimate) decides: when it misses too, the capacity is 0.
2. Bracket: from half the estimate, double while the SLO holds and halve while it does not, until a
   passing and a failing step enclose the boundary (or --max-rate / --max-concurrency passes, or a
   step's arrivals all fall within one service time: a higher rate would send the same burst).
3. Bisect (geometric for rates, integers for concurrency) until the bracket is narrower than
   --precision (10 %: upper <= lower x 1.1).
4. Re-check the boundary: the highest passing step runs again with new arrivals; if it fails now it
   becomes the upper end and the search goes on below it (twice at most).
Each step sends enough requests for the percentile asked (10 beyond it: p99 -> 1000, p90 -> 100,
at least 30), and under a rate it also lasts long enough for an overload of --precision to show: a rate
10 % above capacity adds only about 0.1 s of queueing per second of the step, so a step lasts at least
(the SLO's smallest TTFT/E2E slack over the calibration) / precision, 5 to 120 s (2000 requests at
most); --requests-per-step overrides both. A step stops early once it cannot pass
(saturation.StepWatch). The capacity is the highest rate shown to hold (twice), with the bracket
[lower, upper] as its uncertainty.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from ..argtypes import MAX_CONCURRENCY
from ..utils import StrEnum, UserError
from .plan import BenchParams, Cell, CellStatus
from .saturation import StepWatch
from .summary import FIELDS

if TYPE_CHECKING:
    from .probe import ServerInfo


MIN_STEP_S, MAX_STEP_S = 5.0, 120.0  # how long a rate step lasts at least (see the module docstring)
MAX_STEP_REQUESTS = 2000
NO_SLACK_STEP_S = 10.0  # an SLO without TTFT/E2E bounds: long enough for the saturation watch


class SearchBy(StrEnum):
    RATE = "rate"
    CONCURRENCY = "concurrency"


class Phase(StrEnum):
    CALIBRATE = "calibrate"
    BRACKET = "bracket"
    BISECT = "bisect"
    RECHECK = "recheck"


class Outcome(StrEnum):
    FOUND = "found"  # a bracket [lower, upper] narrower than the precision
    AT_LEAST = "at-least"  # the SLO holds at --max-rate / --max-concurrency
    NONE = "none"  # not even one request at a time meets the SLO
    BELOW = "below"  # fails down to the smallest rate tried
    INCOMPLETE = "incomplete"  # stopped (Ctrl-C, server died, step limit) before the bracket was narrow


@dataclass
class CapacityParams:
    by: SearchBy = SearchBy.RATE
    max_rate: Optional[float] = None
    max_concurrency: Optional[int] = None
    requests_per_step: Optional[int] = None
    precision: float = 0.1  # upper / lower - 1 at which the search stops
    calibration_requests: int = 3
    max_steps: int = 16  # after calibration
    max_rechecks: int = 2

    def to_dict(self) -> Dict[str, Any]:
        return {
            "by": self.by,
            "max_rate": self.max_rate,
            "max_concurrency": self.max_concurrency,
            "requests_per_step": self.requests_per_step,
            "precision": self.precision,
        }


def requests_per_step(percentile: float, slots: int, concurrency: int = 1) -> int:
    """Enough requests that 10 of them lie beyond the percentile, and a few per slot (30 to 1000)."""
    tail = 1.0 - percentile / 100.0
    need = math.ceil(10.0 / tail - 1e-9) if tail > 0 else 1000
    return int(min(1000, max(30, need, 4 * slots, 3 * concurrency)))


def check_params(params: BenchParams, cap: CapacityParams) -> None:
    """What a capacity search cannot do, as one line before anything runs."""
    if params.slo is None:
        raise UserError("a capacity search needs --slo (e.g. --slo ttft_p90=2s,tpot_p50=100ms)")
    if len(params.prompt_sizes) != 1:
        raise UserError("a capacity search uses one prompt size: give --prompt-sizes with a single size")
    if params.repeats != 1:
        raise UserError("--repeats does not apply to a capacity search (it re-checks the boundary itself)")
    if not 0 < cap.precision < 1:
        raise UserError("--precision must be between 0 and 1 (0.1 = the bracket ends within 10 %)")


class CapacitySearch:
    """The Search (plan.Search) behind `llama-bench capacity` and `bench --capacity`."""

    def __init__(self, params: BenchParams, cap: CapacityParams, info: "ServerInfo", planned: List[Cell]) -> None:
        assert params.slo is not None
        self.params = params
        self.cap = cap
        self.slo = params.slo
        self.slots = info.total_slots or 1
        base = next(c for c in planned if c.status is CellStatus.PENDING)
        self.prompt_size = base.prompt_size
        self.workload, self.turns = base.workload, base.turns
        self._cells: List[Cell] = []
        self.service_time_s: Optional[float] = None
        self.estimate: Optional[float] = None
        self.lower: Optional[float] = None  # highest value shown to pass
        self.upper: Optional[float] = None  # lowest value shown to fail
        self.outcome: Optional[Outcome] = None
        self.reason: Optional[str] = None
        self._rechecks = 0
        self._confirmed: Optional[float] = None
        self.open_cap = min(MAX_CONCURRENCY, max(32, 8 * self.slots))  # in flight at once under a rate
        self.n = cap.requests_per_step or requests_per_step(self.slo.max_percentile, self.slots)
        self.min_step_s: Optional[float] = None  # from the calibration
        if cap.by is SearchBy.CONCURRENCY:
            self.max_value: Optional[float] = float(cap.max_concurrency or min(MAX_CONCURRENCY, 64 * self.slots))
        else:
            self.max_value = cap.max_rate

    # -- plan.Schedule ---------------------------------------------------------------------------
    @property
    def cells(self) -> List[Cell]:
        return self._cells

    @property
    def max_concurrency(self) -> int:
        if self.cap.by is SearchBy.CONCURRENCY:
            return int(self.max_value or 1)
        return self.open_cap

    def next_cell(self, finished: Optional[Cell]) -> Optional[Cell]:
        if finished is None:
            return self._cell(Phase.CALIBRATE, None, self.cap.calibration_requests)
        if finished.status is not CellStatus.DONE:  # interrupted, or the server died
            self.outcome = self.outcome or Outcome.INCOMPLETE
            self.reason = self.reason or f"the run stopped ({finished.status})"
            return None
        if finished.step and finished.step["phase"] == Phase.CALIBRATE:
            return self._after_calibration(finished)
        step = finished.step or {}
        passed = step_passed(finished)
        step["passed"] = passed
        value = float(step.get("value") or 0.0)
        recheck, light = step.get("phase") == Phase.RECHECK, bool(step.get("light"))
        return self._decide(value, passed, recheck, light, self._burst(finished))

    # -- the search ------------------------------------------------------------------------------
    def _passed(self, cell: Cell) -> bool:
        return step_passed(cell)

    def _after_calibration(self, cell: Cell) -> Optional[Cell]:
        ok = [r for r in cell.records if r.ok and r.e2e_ms is not None]
        if not ok:
            return self._end(Outcome.INCOMPLETE, "the calibration requests failed")
        self.service_time_s = statistics.median(r.e2e_ms or 0.0 for r in ok) / 1000.0
        self.min_step_s = self._min_step(cell)
        light = not self._passed(cell)  # a few requests missed: make sure with a step at a light load
        if self.cap.by is SearchBy.CONCURRENCY:
            self.estimate = float(self.slots)
            first = 1.0 if light else self._clamp(self.estimate)
        else:
            # Under a rate the arrivals are conversations: each holds a slot for all of its turns.
            self.estimate = self.slots / max(self.service_time_s * max(1, self.turns), 1e-6)
            first = self._clamp(self.estimate / (8.0 if light else 2.0))
        step = self._step(Phase.BRACKET, first)
        if light and step.step is not None:
            step.step["light"] = True
        return step

    def _decide(
        self, value: float, passed: bool, recheck: bool, light: bool = False, burst: bool = False
    ) -> Optional[Cell]:
        if light and not passed:
            return self._end(Outcome.NONE, "the SLO is not met even at a light load (requests one at a time missed it)")
        if passed:
            if recheck:
                self._confirmed = value
            self.lower = value if self.lower is None else max(self.lower, value)
        else:
            self.upper = value if self.upper is None else min(self.upper, value)
            if self.lower is not None and self.lower >= value:  # a recheck failed: look below it
                below = [v for v in self._passing() if v < value]
                self.lower = max(below) if below else None
                self._confirmed = None
        if len(self._cells) - 1 >= self.cap.max_steps:
            return self._end(Outcome.INCOMPLETE, f"stopped after {self.cap.max_steps} steps")
        lo, hi = self.lower, self.upper
        if hi is None:  # nothing failed yet: go up
            assert lo is not None
            if self.max_value is not None and lo >= self.max_value:
                return self._end(Outcome.AT_LEAST, f"the SLO holds at the maximum tried ({self.max_value:g})")
            if burst:  # all of a step's requests arrive at once already: a higher rate is the same step
                return self._end(
                    Outcome.AT_LEAST,
                    f"the SLO holds at {lo:g} req/s, where a step's requests all arrive within one service time:"
                    " a higher rate loads the server no further (more --requests-per-step would)",
                )
            return self._step(Phase.BRACKET, self._clamp(self._up(lo)))
        if lo is None:  # nothing passed yet: go down
            down = self._down(hi)
            if down is None:
                return self._end(Outcome.BELOW, f"the SLO is missed down to {hi:g}")
            return self._step(Phase.BRACKET, down)
        if not self._narrow(lo, hi):
            return self._step(Phase.BISECT, self._middle(lo, hi))
        if self._confirmed == lo or self._rechecks >= self.cap.max_rechecks:
            return self._end(Outcome.FOUND, None)
        self._rechecks += 1
        return self._step(Phase.RECHECK, lo)

    def _burst(self, cell: Cell) -> bool:
        """Whether a rate step's arrivals all fall within one service time: doubling it changes nothing."""
        if self.cap.by is not SearchBy.RATE or not cell.rate or not self.service_time_s:
            return False
        return (cell.num_requests - 1) / cell.rate <= self.service_time_s

    def _min_step(self, calibration: Cell) -> float:
        """Seconds a rate step must last for an overload of --precision to push a TTFT/E2E bound over."""
        slo = calibration.summary.slo if calibration.summary else None
        slack = [
            (t.bound_ms - t.value_ms) / 1000.0
            for t in (slo.terms if slo else [])
            if t.metric in ("ttft", "e2e") and t.value_ms is not None
        ]
        if not slack:
            return NO_SLACK_STEP_S
        return min(MAX_STEP_S, max(MIN_STEP_S, max(0.0, min(slack)) / self.cap.precision))

    def _passing(self) -> List[float]:
        return [float(c.step["value"]) for c in self._cells if c.step and c.step.get("passed")]

    def _up(self, value: float) -> float:
        return value * 2.0 if self.cap.by is SearchBy.RATE else float(max(int(value) + 1, int(value) * 2))

    def _down(self, value: float) -> Optional[float]:
        if self.cap.by is SearchBy.CONCURRENCY:
            return float(max(1, int(value) // 2)) if value > 1 else None
        floor = (self.estimate or value) / 256.0
        return value / 2.0 if value / 2.0 >= floor else None

    def _clamp(self, value: float) -> float:
        if self.max_value is not None:
            value = min(value, self.max_value)
        return float(max(1, round(value))) if self.cap.by is SearchBy.CONCURRENCY else value

    def _narrow(self, lo: float, hi: float) -> bool:
        if self.cap.by is SearchBy.CONCURRENCY:
            return hi - lo <= max(1, math.floor(self.cap.precision * lo))
        return hi <= lo * (1.0 + self.cap.precision)

    def _middle(self, lo: float, hi: float) -> float:
        if self.cap.by is SearchBy.CONCURRENCY:
            return float((int(lo) + int(hi)) // 2)
        return math.sqrt(lo * hi)

    def _end(self, outcome: Outcome, reason: Optional[str]) -> Optional[Cell]:
        self.outcome, self.reason = outcome, reason
        return None

    # -- cells -----------------------------------------------------------------------------------
    def _step(self, phase: Phase, value: float) -> Cell:
        by_rate = self.cap.by is SearchBy.RATE
        conc = self.open_cap if by_rate else int(value)
        if self.cap.requests_per_step:
            n = self.cap.requests_per_step
        elif by_rate:
            long_enough = math.ceil(value * (self.min_step_s or MIN_STEP_S) / max(1, self.turns))
            n = min(MAX_STEP_REQUESTS, max(self.n, long_enough))
        else:
            n = max(self.n, 3 * conc)
        cell = self._cell(phase, value, n, conc)
        cell.watch = StepWatch(self.slo, self.slots, open_loop=by_rate)
        return cell

    def _cell(self, phase: Phase, value: Optional[float], requests: int, conc: int = 1) -> Cell:
        k = len(self._cells)
        by_rate = self.cap.by is SearchBy.RATE
        if phase is Phase.CALIBRATE:
            name = "calibrate"
        else:
            name = f"s{k}-r{value:.4g}" if by_rate else f"s{k}-c{int(value or 1)}"
        turns = max(1, self.turns)
        cell = Cell(
            index=k,
            prompt_size=self.prompt_size,
            concurrency=conc,
            num_requests=-(-requests // turns) * turns,
            rate=value if by_rate and phase is not Phase.CALIBRATE else None,
            name=name,
            workload=self.workload,
            turns=turns,
        )
        cell.step = {"index": k, "phase": phase, "by": self.cap.by, "value": value, "passed": None}
        cell.step["stopped_early"] = None
        self._cells.append(cell)
        return cell

    # -- the result ------------------------------------------------------------------------------
    def result(self, stop_reason: Optional[str] = None) -> Dict[str, Any]:
        """What the document stores under "capacity" (the curve sorted by the value searched)."""
        lo, hi = self.lower, self.upper
        if self.outcome is None:  # the run ended first: it never asked for the next step
            self.outcome, self.reason = Outcome.INCOMPLETE, stop_reason or "the run stopped before the search ended"
        outcome = self.outcome
        capacity = 0.0 if outcome is Outcome.NONE else lo
        return {
            **self.cap.to_dict(),
            "unit": "req/s" if self.cap.by is SearchBy.RATE else "concurrent requests",
            "slo": self.slo.to_dict(),
            "outcome": outcome,
            "reason": self.reason,
            "capacity": capacity,
            "lower": lo,
            "upper": hi,
            "relative_uncertainty": (hi - lo) / lo if lo and hi else None,
            "service_time_s": self.service_time_s,
            "slots": self.slots,
            "initial_estimate": self.estimate,
            "min_step_s": self.min_step_s,
            "steps": len([c for c in self._cells if c.step and c.step["phase"] != Phase.CALIBRATE]),
            "curve": curve(self._cells),
        }


def step_passed(cell: Cell) -> bool:
    """A step passes when the cell meets the SLO and ran to the end (an early stop is a failure)."""
    slo = cell.summary.slo if cell.summary else None
    return bool(slo and slo.met and not (cell.step or {}).get("stopped_early"))


CURVE_KEYS = (
    "ttft_p50",
    "ttft_p90",
    "ttft_p99",
    "tpot_p50",
    "tpot_p90",
    "tpot_p99",
    "e2e_p50",
    "e2e_p90",
    "requests_per_s",
    "gen_tps",
    "goodput_rps",
    "goodput_gen_tps",
    "slo_good_share",
    "requests_deferred_max",
    "slots_busy_mean",
)


def curve(cells: List[Cell]) -> List[Dict[str, Any]]:
    """One point per measured step: the value searched, whether it passed, and the figures (FIELDS keys;
    the SLO's own percentiles, from arrival, under `slo_values_ms`)."""
    points = []
    for cell in cells:
        step = cell.step or {}
        if step.get("phase") == Phase.CALIBRATE or cell.summary is None:
            continue
        doc = cell.to_dict()
        slo = cell.summary.slo
        points.append(
            {
                "cell": cell.label,
                "step": step.get("index"),  # the order it ran in (the curve is sorted by value)
                "phase": step.get("phase"),
                "value": step.get("value"),
                "rate": cell.rate,
                "concurrency": cell.concurrency,
                "passed": step.get("passed"),
                "stopped_early": step.get("stopped_early"),
                "requests_sent": cell.summary.requests.sent,
                "requests_ok": cell.summary.requests.ok,
                **{key: FIELDS[key].number(doc) for key in CURVE_KEYS},
                "slo_values_ms": {t.term: t.value_ms for t in slo.terms} if slo else {},
            }
        )
    return sorted(points, key=lambda p: (p["value"] or 0.0, p["cell"]))
