"""Service-level objectives: `--slo ttft_p99=2s,tpot_p50=80ms,e2e_p90=20s`, and what a cell's requests
make of them.

What the bounds mean:
- Per request, a term `METRIC_pXX=BOUND` is met when the request's METRIC is at most BOUND. TTFT and E2E
  count from the request's arrival (under --request-rate the client queue time is part of what a user
  waits for); TPOT is the request's own; for ITL it is the request's own pXX over its gaps. A request
  without the figure (one output token: no TPOT, no gaps) meets that term; a failed request meets none.
- A request is *good* when it meets every term. Goodput = good requests (and their generated tokens)
  per second of the cell. Failed requests stay in the denominator; interrupted ones (Ctrl-C, a step the
  capacity search stopped early) are not requests the server was asked to finish and are left out.
- The cell *meets* a term when at least XX % of its requests meet the bound, i.e. when the nearest-rank
  pXX of the metric over every request (failed ones counted as infinitely slow) is at most the bound.
  That value is stored (None when it falls on a failed request), next to the share of requests meeting
  the bound. The latency tables interpolate percentiles over successful requests, so they may differ a
  little from these.
"""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, List, Literal, Optional, Sequence, cast

if TYPE_CHECKING:  # the flag parser stays free of the benchmark's modules
    from .records import RequestRecord
    from .summary import SloSummary

SloMetric = Literal["ttft", "tpot", "itl", "e2e"]
METRICS = ("ttft", "tpot", "itl", "e2e")
_TERM = re.compile(r"^(?P<metric>[a-z0-9]+)_p(?P<pct>\d+(?:\.\d+)?)$", re.ASCII)
_VALUE = re.compile(r"^(?P<num>\d+(?:\.\d+)?|\.\d+)\s*(?P<unit>ms|s)$", re.ASCII)
EXAMPLE = "ttft_p99=2s,tpot_p50=80ms,e2e_p90=20s"


@dataclass(frozen=True)
class SloTerm:
    metric: SloMetric
    percentile: float  # 0 < p <= 100
    bound_ms: float

    @property
    def name(self) -> str:
        return f"{self.metric}_p{self.percentile:g}"

    def __str__(self) -> str:
        return f"{self.name}<={self.bound_ms:g}ms"

    def to_dict(self) -> Dict[str, object]:
        return {"metric": self.metric, "percentile": self.percentile, "bound_ms": self.bound_ms}


@dataclass(frozen=True)
class Slo:
    terms: List[SloTerm] = field(default_factory=list)

    @property
    def text(self) -> str:
        return ",".join(f"{t.name}={t.bound_ms:g}ms" for t in self.terms)

    @property
    def max_percentile(self) -> float:
        return max(t.percentile for t in self.terms)

    def to_dict(self) -> Dict[str, object]:
        return {"spec": self.text, "terms": [t.to_dict() for t in self.terms]}


def parse_slo(text: str) -> Slo:
    """`ttft_p99=2s,tpot_p50=80ms` -> Slo; ValueError with a one-line message for anything else."""
    parts = [p.strip() for p in (text or "").split(",")]
    if not any(parts):
        raise ValueError(f"empty: give bounds such as {EXAMPLE}")
    terms: Dict[str, SloTerm] = {}
    for part in parts:
        if not part:
            raise ValueError(f"'{text}' has an empty entry")
        name, sep, value = part.partition("=")
        m = _TERM.match(name.strip().lower())
        if not sep or m is None:
            raise ValueError(f"'{part}' is not METRIC_pXX=BOUND (example: {EXAMPLE})")
        metric = m.group("metric")
        if metric not in METRICS:
            raise ValueError(f"unknown metric '{metric}' in '{part}': use ttft, tpot, itl or e2e")
        pct = float(m.group("pct"))
        if not 0 < pct <= 100:
            raise ValueError(f"percentile p{m.group('pct')} in '{part}' must be above 0 and at most 100")
        v = _VALUE.match(value.strip().lower())
        if v is None and value.strip().startswith("-"):
            raise ValueError(f"bound in '{part}' must be more than 0")
        if v is None:
            raise ValueError(f"bound '{value.strip()}' in '{part}' needs a unit: e.g. 80ms or 2s")
        bound = float(v.group("num")) * (1000.0 if v.group("unit") == "s" else 1.0)
        if bound <= 0 or not math.isfinite(bound):
            raise ValueError(f"bound in '{part}' must be more than 0")
        term = SloTerm(cast(SloMetric, metric), pct, bound)
        if term.name in terms:
            raise ValueError(f"'{term.name}' is given twice")
        terms[term.name] = term
    return Slo(list(terms.values()))


def slo_type(text: str) -> Slo:
    """The argparse type of --slo (one-line errors)."""
    try:
        return parse_slo(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _nearest_rank(sorted_values: Sequence[float], pct: float) -> float:
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_values) - 1e-9))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def request_value(rec: "RequestRecord", term: SloTerm) -> Optional[float]:
    """The request's figure for the term in ms (inf when it failed, None when it has none)."""
    if not rec.ok:
        return math.inf
    queue = rec.queue_ms or 0.0
    if term.metric == "ttft":
        return None if rec.ttft_ms is None else rec.ttft_ms + queue
    if term.metric == "e2e":
        return None if rec.e2e_ms is None else rec.e2e_ms + queue
    if term.metric == "tpot":
        return rec.tpot_ms
    if not rec.itl_ms:
        return None
    return _nearest_rank(sorted(rec.itl_ms), term.percentile)


def counted(records: Sequence["RequestRecord"]) -> List["RequestRecord"]:
    """The SLO's denominator: measured requests the server was asked to finish (not interrupted)."""
    from .records import CANCELLED_ERRORS

    return [r for r in records if not r.warmup and r.error not in CANCELLED_ERRORS]


def evaluate(records: Sequence["RequestRecord"], slo: Slo, duration_s: Optional[float]) -> "SloSummary":
    """The cell's SLO figures (see the module docstring for the definitions)."""
    from .summary import SloSummary, SloTermResult

    reqs = counted(records)
    good = [True] * len(reqs)
    results: List[SloTermResult] = []
    for term in slo.terms:
        values: List[float] = []
        met_count = 0
        for i, rec in enumerate(reqs):
            value = request_value(rec, term)
            ok = value is None or value <= term.bound_ms
            met_count += ok
            if not ok:
                good[i] = False
            values.append(0.0 if value is None else value)  # no figure: meets the bound
        values.sort()
        pxx = _nearest_rank(values, term.percentile) if values else None
        met = pxx is not None and pxx <= term.bound_ms
        results.append(
            SloTermResult(
                term=term.name,
                metric=term.metric,
                percentile=term.percentile,
                bound_ms=term.bound_ms,
                value_ms=None if pxx is None or math.isinf(pxx) else pxx,
                good_share=met_count / len(reqs) if reqs else None,
                met=met,
            )
        )
    good_recs = [r for r, g in zip(reqs, good) if g]
    seconds = duration_s if duration_s and duration_s > 0 else None
    return SloSummary(
        spec=slo.text,
        requests=len(reqs),
        good=len(good_recs),
        good_share=len(good_recs) / len(reqs) if reqs else None,
        met=bool(reqs) and all(t.met for t in results),
        goodput_rps=len(good_recs) / seconds if seconds else None,
        goodput_gen_tps=sum(r.output_tokens or 0 for r in good_recs) / seconds if seconds else None,
        terms=results,
    )
