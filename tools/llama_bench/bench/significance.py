"""Is a change between two results real or noise? One verdict per (cell, figure) for `compare`.

- Both cells ran --repeats >= 2: Welch's t-test on the figure's per-repeat values (unequal variances,
  two-sided); significant when p < 0.05.
- Otherwise, for figures computed from per-request values (latency percentiles and means, per-request
  rates): a 95 % bootstrap interval of the change in the statistic, resampling whole requests (an ITL
  sample keeps a request's gaps together); significant when the interval excludes 0.
- Otherwise (a throughput of a single run): no verdict — one run has no spread to judge by.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from .confidence import ALPHA, bootstrap_change, welch_p
from .stats import percentile
from .summary import Field

METHOD_NOTE = (
    "significance: Welch's t-test on repeat values (p < 0.05) when both sides ran --repeats >= 2, else a 95% "
    "bootstrap interval of the change from per-request values; '-' = one run each, no spread to judge by"
)
MAX_BOOTSTRAP_VALUES = 20000  # above this many values a side, fewer resamples keep compare quick


@dataclass
class Verdict:
    significant: Optional[bool]  # None: cannot tell
    method: str  # "welch" | "bootstrap" | "none"
    p_value: Optional[float] = None
    interval: Optional[Tuple[float, float]] = None  # bootstrap: 95 % interval of B - A

    def text(self) -> str:
        if self.significant is None:
            return "-"
        word = "significant" if self.significant else "within noise"
        if self.method == "welch" and self.p_value is not None:
            return f"{word} (Welch p={self.p_value:.3g})"
        if self.interval is not None:
            lo, hi = self.interval
            return f"{word} (bootstrap {lo:+.3g}..{hi:+.3g})"
        return word


def _statistic(stat: str) -> Optional[Callable[[List[float]], float]]:
    if stat == "mean":
        return lambda v: math.fsum(v) / len(v)
    if stat in ("p50", "p90", "p99"):
        pct = float(stat[1:])
        return lambda v: percentile(sorted(v), pct)
    return None


def request_values(result: Mapping[str, Any], cell: Mapping[str, Any], name: str) -> List[List[float]]:
    """Per request of the cell (ok, not warm-up): the values of a record field (lists for itl_ms)."""
    key = (cell.get("prompt_size"), cell.get("concurrency"), cell.get("label"))
    out: List[List[float]] = []
    for rec in result.get("requests") or []:
        if not isinstance(rec, dict) or rec.get("warmup") or not rec.get("ok"):
            continue
        if (rec.get("prompt_size"), rec.get("concurrency")) != key[:2]:
            continue
        if rec.get("cell") not in (None, key[2]):
            continue
        value = rec.get(name)
        values = value if isinstance(value, list) else [value]
        nums = [
            float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        ]
        if nums:
            out.append(nums)
    return out


def verdict(
    field: Field,
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    cell_a: Mapping[str, Any],
    cell_b: Mapping[str, Any],
    cache: Optional[Dict[Any, Any]] = None,
) -> Verdict:
    """The verdict on field's change from cell_a (in result a) to cell_b (in result b)."""
    ra, rb = field.repeat_values(cell_a), field.repeat_values(cell_b)
    if len(ra) >= 2 and len(rb) >= 2:
        p = welch_p(ra, rb)
        if p is not None:
            return Verdict(p < ALPHA, "welch", p_value=p)
    if len(field.path) == 3 and field.path[0] in ("latency", "rates"):
        stat = _statistic(field.path[2])
        if stat is not None:
            name = field.path[1]
            memo = cache if cache is not None else {}
            ka, kb = ("a", id(cell_a), name), ("b", id(cell_b), name)
            va = memo.setdefault(ka, request_values(a, cell_a, name))
            vb = memo.setdefault(kb, request_values(b, cell_b, name))
            size = sum(len(c) for c in va) + sum(len(c) for c in vb)
            resamples = 1000 if size <= MAX_BOOTSTRAP_VALUES else 200
            interval = bootstrap_change(va, vb, stat, resamples=resamples)
            if interval is not None:
                lo, hi = interval
                return Verdict(not (lo <= 0.0 <= hi), "bootstrap", interval=interval)
    return Verdict(None, "none")
