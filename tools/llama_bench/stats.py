"""Aggregation of per-request records into per-cell statistics (pure functions, no I/O)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence

from .client import INTERRUPTED, RequestRecord

# Per-request latency fields (ms) and rates (tok/s) summarised for every cell.
LATENCY_FIELDS = (
    "ttft_ms",
    "content_ttft_ms",
    "reasoning_ttft_ms",
    "tpot_ms",
    "e2e_ms",
    "queue_ms",
    "ttft_overhead_ms",
    "overhead_ms",
)
RATE_FIELDS = ("prompt_tps", "gen_tps", "server_prompt_tps", "server_gen_tps")


@dataclass
class Dist:
    """Summary of a sample: mean, percentiles (linear interpolation, like numpy's default), extremes."""

    n: int
    mean: float
    p50: float
    p90: float
    p99: float
    min: float
    max: float

    def to_dict(self) -> Dict[str, float]:
        return asdict(self)


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """The pct-th percentile of an already sorted, non-empty sequence."""
    if not sorted_values:
        raise ValueError("percentile of an empty sequence")
    if len(sorted_values) == 1:
        return float(sorted_values[0])
    rank = (len(sorted_values) - 1) * pct / 100.0
    lo = math.floor(rank)
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = rank - lo
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac)


def describe(values: Iterable[Optional[float]]) -> Optional[Dist]:
    """Dist of the non-None values; None when there are none."""
    data = sorted(float(v) for v in values if v is not None and math.isfinite(v))
    if not data:
        return None
    return Dist(
        n=len(data),
        mean=math.fsum(data) / len(data),
        p50=percentile(data, 50),
        p90=percentile(data, 90),
        p99=percentile(data, 99),
        min=data[0],
        max=data[-1],
    )


def _dist_dict(values: Iterable[Optional[float]]) -> Optional[Dict[str, float]]:
    dist = describe(values)
    return dist.to_dict() if dist else None


def span_seconds(records: Sequence[RequestRecord]) -> Optional[float]:
    """Wall time from the first request's start to the last byte of the last one."""
    if not records:
        return None
    start = min(r.start_s for r in records)
    end = max(r.start_s + (r.e2e_ms or 0.0) / 1000.0 for r in records)
    return max(0.0, end - start)


def _per_s(total: Optional[float], seconds: Optional[float]) -> Optional[float]:
    if total is None or not seconds or seconds <= 0:
        return None
    return total / seconds


def aggregate(records: Sequence[RequestRecord], planned: Optional[int] = None) -> Dict[str, Any]:
    """Everything reported for one cell: counts, checks, latency/rate distributions, throughput."""
    measured = [r for r in records if not r.warmup]
    ok = [r for r in measured if r.ok]
    interrupted = [r for r in measured if r.error == INTERRUPTED]
    failed = [r for r in measured if not r.ok and r.error != INTERRUPTED]
    errors = Counter(r.error or "unknown error" for r in failed)
    duration = span_seconds(measured)

    latency = {name: _dist_dict(getattr(r, name) for r in ok) for name in LATENCY_FIELDS}
    latency["itl_ms"] = _dist_dict(g for r in ok for g in r.itl_ms)
    rates = {name: _dist_dict(getattr(r, name) for r in ok) for name in RATE_FIELDS}

    prompt_total = sum((r.prompt_tokens if r.prompt_tokens is not None else r.prompt_tokens_requested) for r in ok)
    processed = [r.server_prompt_n for r in ok if r.server_prompt_n is not None]
    gen_total = sum(r.output_tokens or 0 for r in ok)
    mismatches = [
        {"index": r.index, "requested": r.prompt_tokens_requested, "server": r.prompt_tokens}
        for r in ok
        if r.prompt_mismatch
    ]
    early = [r for r in ok if r.stopped_early]
    return {
        "requests": {
            "planned": planned if planned is not None else len(measured),
            "sent": len(measured),
            "ok": len(ok),
            "failed": len(failed),
            "interrupted": len(interrupted),
            "not_sent": max(0, (planned or len(measured)) - len(measured)),
            "errors": [{"error": e, "count": c} for e, c in errors.most_common()],
        },
        "checks": {
            "prompt_mismatches": mismatches,
            "prompt_unverified": sum(1 for r in ok if r.prompt_tokens is None),
            "prompt_built_unverified": sum(1 for r in measured if not r.prompt_verified),
            "cache_hits": sum(1 for r in ok if r.cache_n),
            "cache_n_max": max((r.cache_n or 0 for r in ok), default=0),
            "stopped_early": len(early),
            "output_tokens_min": min((r.output_tokens for r in ok if r.output_tokens is not None), default=None),
            "output_sources": dict(Counter(r.output_tokens_source or "none" for r in ok)),
        },
        "latency": latency,
        "rates": rates,
        "throughput": {
            "duration_s": duration,
            "prompt_tokens": prompt_total,
            "prompt_tokens_processed": sum(processed) if processed else None,
            "gen_tokens": gen_total,
            "prompt_tps": _per_s(prompt_total, duration) if ok else None,
            "gen_tps": _per_s(gen_total, duration) if ok else None,
            "total_tps": _per_s(prompt_total + gen_total, duration) if ok else None,
            "requests_per_s": _per_s(len(ok), duration) if ok else None,
        },
    }


def relative_change(a: Optional[float], b: Optional[float]) -> Optional[float]:
    """(b - a) / a; None when either is unknown or a is zero."""
    if a is None or b is None or a == 0:
        return None
    return (b - a) / abs(a)


def get_path(data: Any, path: str) -> Any:
    """data['a']['b']... for a dotted path; None when any part is missing."""
    cur = data
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def warnings_for(summary: Dict[str, Any], max_tokens: int) -> List[str]:
    """Human-readable flags for what makes a cell's numbers less trustworthy."""
    out: List[str] = []
    req = summary["requests"]
    checks = summary["checks"]
    if req["failed"]:
        out.append(f"{req['failed']} request(s) failed: " + "; ".join(e["error"] for e in req["errors"][:3]))
    if req["interrupted"]:
        out.append(f"{req['interrupted']} request(s) interrupted")
    if checks["prompt_mismatches"]:
        m = checks["prompt_mismatches"][0]
        out.append(
            f"{len(checks['prompt_mismatches'])} prompt length mismatch(es): "
            f"requested {m['requested']}, server counted {m['server']}"
        )
    if checks["prompt_unverified"]:
        out.append(f"{checks['prompt_unverified']} response(s) did not report prompt tokens (length unverified)")
    if checks["cache_hits"]:
        out.append(
            f"{checks['cache_hits']} request(s) reused cached prompt tokens (cache_n up to {checks['cache_n_max']}): "
            "prefill speed is overstated"
        )
    if checks["stopped_early"]:
        out.append(
            f"{checks['stopped_early']} request(s) generated fewer than {max_tokens} tokens "
            f"(min {checks['output_tokens_min']}); real counts used"
        )
    if "counted" in checks["output_sources"]:
        out.append("output length counted from stream chunks (the server reported no usage/timings)")
    return out
