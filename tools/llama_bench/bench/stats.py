"""Aggregation of per-request records into a cell's typed summary (pure functions, no I/O)."""

from __future__ import annotations

import math
from collections import Counter
from typing import TYPE_CHECKING, Iterable, List, Optional, Sequence

from .records import INTERRUPTED, STEP_STOPPED, RequestRecord
from .summary import (
    LATENCY_FIELDS,
    RATE_FIELDS,
    Batching,
    CacheSummary,
    CellSummary,
    Checks,
    Dist,
    ErrorCount,
    PromptMismatch,
    RequestCounts,
    Throughput,
)

if TYPE_CHECKING:
    from .slo import Slo

CACHE_HIT_SHARE = 0.1  # a request is a cache hit when at least this share of its prompt came from the cache
BATCHED_WARNING_SHARE = 0.25


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


def prompt_of(r: RequestRecord) -> int:
    return r.prompt_tokens_reported if r.prompt_tokens_reported is not None else r.prompt_tokens_requested


def is_cache_hit(r: RequestRecord) -> bool:
    cached = r.cache_n or 0
    return cached > 1 and cached >= CACHE_HIT_SHARE * prompt_of(r)


def cache_summary(ok: Sequence[RequestRecord]) -> CacheSummary:
    hits = [r for r in ok if is_cache_hit(r)]
    prompt = sum(prompt_of(r) for r in ok)
    cached = sum(r.cache_n or 0 for r in ok)
    return CacheSummary(
        requests=len(ok),
        hit_requests=len(hits),
        hit_share=len(hits) / len(ok) if ok else None,
        prompt_tokens=prompt,
        cached_tokens=cached,
        token_share=cached / prompt if prompt else None,
        ttft_cached_ms=describe(r.ttft_ms for r in hits),
        ttft_uncached_ms=describe(r.ttft_ms for r in ok if not is_cache_hit(r)),
    )


def batching(ok: Sequence[RequestRecord]) -> Batching:
    events = sum(r.content_chunks for r in ok)
    batched = sum(r.batched_chunks for r in ok)
    return Batching(events=events, batched=batched, share=batched / events if events else None)


def aggregate(
    records: Sequence[RequestRecord],
    planned: Optional[int] = None,
    slo: Optional["Slo"] = None,
    duration_s: Optional[float] = None,
) -> CellSummary:
    """Everything reported for one cell: counts, checks, latency/rate distributions, throughput, the
    prompt cache, batched token events and (with an SLO) goodput. Per-second figures use `duration_s`
    when given (a cell run several times: the sum of the repeats' durations), else the records' span."""
    measured = [r for r in records if not r.warmup]
    ok = [r for r in measured if r.ok]
    interrupted = [r for r in measured if r.error == INTERRUPTED]
    cancelled = [r for r in measured if r.error == STEP_STOPPED]
    failed = [r for r in measured if not r.ok and r.error not in (INTERRUPTED, STEP_STOPPED)]
    errors = Counter(r.error or "unknown error" for r in failed)
    duration = duration_s if duration_s is not None else span_seconds(measured)

    latency = {name: describe(getattr(r, name) for r in ok) for name in LATENCY_FIELDS if name != "itl_ms"}
    latency["itl_ms"] = describe(g for r in ok for g in r.itl_ms)
    rates = {name: describe(getattr(r, name) for r in ok) for name in RATE_FIELDS}

    prompt_total = sum(prompt_of(r) for r in ok)
    processed = [r.server_prompt_n for r in ok if r.server_prompt_n is not None]
    gen_total = sum(r.output_tokens or 0 for r in ok)
    planned_n = planned if planned is not None else len(measured)
    summary = CellSummary(
        requests=RequestCounts(
            planned=planned_n,
            sent=len(measured),
            ok=len(ok),
            failed=len(failed),
            interrupted=len(interrupted),
            not_sent=max(0, (planned or len(measured)) - len(measured)),
            errors=[ErrorCount(e, c) for e, c in errors.most_common()],
            cancelled=len(cancelled),
        ),
        checks=Checks(
            prompt_mismatches=[
                PromptMismatch(r.index, r.prompt_tokens_requested, r.prompt_tokens_reported)
                for r in ok
                if r.prompt_mismatch
            ],
            prompt_unverified=sum(1 for r in ok if r.prompt_tokens_reported is None),
            prompt_built_unverified=sum(1 for r in measured if not r.prompt_verified),
            cache_hits=sum(1 for r in ok if r.cache_n),
            cache_n_max=max((r.cache_n or 0 for r in ok), default=0),
            stopped_early=sum(1 for r in ok if r.stopped_early),
            output_tokens_min=min((r.output_tokens for r in ok if r.output_tokens is not None), default=None),
            output_sources=dict(Counter(r.output_tokens_source or "none" for r in ok)),
        ),
        latency=latency,
        rates=rates,
        throughput=Throughput(
            duration_s=duration,
            prompt_tokens=prompt_total,
            prompt_tokens_processed=sum(processed) if processed else None,
            gen_tokens=gen_total,
            prompt_tps=_per_s(prompt_total, duration) if ok else None,
            gen_tps=_per_s(gen_total, duration) if ok else None,
            total_tps=_per_s(prompt_total + gen_total, duration) if ok else None,
            requests_per_s=_per_s(len(ok), duration) if ok else None,
        ),
        batching=batching(ok),
        cache=cache_summary(ok),
    )
    if slo is not None:
        from .slo import evaluate

        summary.slo = evaluate(measured, slo, duration)
    return summary


def relative_change(a: Optional[float], b: Optional[float]) -> Optional[float]:
    """(b - a) / a; None when either is unknown or a is zero."""
    if a is None or b is None or a == 0:
        return None
    return (b - a) / abs(a)


def warnings_for(summary: CellSummary, max_tokens: int, cache_expected: bool = False) -> List[str]:
    """Human-readable flags for what makes a cell's numbers less trustworthy (`cache_expected`: the
    workload reuses the prompt cache on purpose, so cache hits are the point, not a flaw)."""
    out: List[str] = []
    req = summary.requests
    checks = summary.checks
    if req.failed:
        out.append(f"{req.failed} request(s) failed: " + "; ".join(e.error for e in req.errors[:3]))
    if req.interrupted:
        out.append(f"{req.interrupted} request(s) interrupted")
    if req.cancelled:
        out.append(f"{req.cancelled} request(s) cancelled when the step stopped early")
    if checks.prompt_mismatches:
        m = checks.prompt_mismatches[0]
        out.append(
            f"{len(checks.prompt_mismatches)} prompt length mismatch(es): "
            f"requested {m.requested}, server counted {m.server}"
        )
    if checks.prompt_unverified:
        out.append(f"{checks.prompt_unverified} response(s) did not report prompt tokens (length unverified)")
    if checks.cache_hits and not cache_expected:
        out.append(
            f"{checks.cache_hits} request(s) reused cached prompt tokens (cache_n up to {checks.cache_n_max}): "
            "prefill speed is overstated"
        )
    if checks.stopped_early:
        out.append(
            f"{checks.stopped_early} request(s) generated fewer than {max_tokens} tokens "
            f"(min {checks.output_tokens_min}); real counts used"
        )
    batch = summary.batching
    if batch is not None and batch.share is not None and batch.share >= BATCHED_WARNING_SHARE and batch.events >= 20:
        out.append(
            f"{batch.share * 100:.0f}% of token events arrived in one socket read with the event before them "
            "(fast server or buffering proxy): their ITL is 0 by construction, so low ITL percentiles are not "
            "a measurement of the server"
        )
    if "counted" in checks.output_sources:
        out.append("output length counted from stream chunks (the server reported no usage/timings)")
    return out
