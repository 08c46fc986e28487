"""What a finished cell is summarised into: its requests' aggregate (pooled over repeats, with a mean
and 95 % interval per repeat), the warnings, the server's own counters and /slots, and the energy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional

from .confidence import mean_interval
from .plan import BenchParams, Cell, CellStatus, RunStatus
from .records import RequestRecord
from .stats import aggregate, span_seconds, warnings_for
from .summary import FIELDS, REPEAT_KEYS, RepeatSummary

if TYPE_CHECKING:
    from .probe import ServerInfo
    from .sampler import MetricsSampler


def _delta(a: Optional[Dict[str, float]], b: Optional[Dict[str, float]], key: str) -> Optional[float]:
    if not a or not b or key not in a or key not in b:
        return None
    return b[key] - a[key] if b[key] >= a[key] else b[key]  # a counter reset means the server restarted


def _by_repeat(records: List[RequestRecord], repeats: int) -> List[List[RequestRecord]]:
    runs: List[List[RequestRecord]] = [[] for _ in range(repeats)]
    for rec in records:
        if 0 <= rec.repeat < repeats:
            runs[rec.repeat].append(rec)
    return runs


def repeat_summary(cell: Cell, params: BenchParams) -> RepeatSummary:
    """Each repeat summarised on its own; every figure of REPEAT_KEYS with its mean and 95 % interval."""
    values: Dict[str, List[Optional[float]]] = {key: [] for key in REPEAT_KEYS}
    runs = [run for run in _by_repeat(cell.records, cell.repeats) if any(not r.warmup for r in run)]
    for run in runs:
        doc = aggregate(run, planned=cell.num_requests, slo=params.slo).to_dict()
        for key in REPEAT_KEYS:
            values[key].append(FIELDS[key].number(doc))
    ci = {key: mean_interval([v for v in vals if v is not None]) for key, vals in values.items()}
    return RepeatSummary(n=len(runs), values=values, ci=ci)


def finish_cell(
    cell: Cell,
    params: BenchParams,
    info: "ServerInfo",
    sampler: "MetricsSampler",
    status: RunStatus,
    m0: Optional[Dict[str, float]],
    m1: Optional[Dict[str, float]],
) -> None:
    cell.records.sort(key=lambda r: (r.repeat, r.index))
    # Over repeats the cell's duration is the sum of theirs: the pauses between them are not measured.
    duration = None
    if cell.repeats > 1:
        spans = [span_seconds([r for r in run if not r.warmup]) for run in _by_repeat(cell.records, cell.repeats)]
        duration = sum(s for s in spans if s is not None)
    cell.summary = aggregate(
        cell.records, planned=cell.num_requests * cell.repeats, slo=params.slo, duration_s=duration
    )
    if cell.repeats > 1:
        cell.summary.repeats = repeat_summary(cell, params)
    cell.warnings.extend(warnings_for(cell.summary, params.max_output_tokens, params.workload.cache_prompt))
    if status is RunStatus.INTERRUPTED:
        cell.status = CellStatus.INTERRUPTED
    elif status is RunStatus.SERVER_DIED:
        cell.status = CellStatus.ABORTED
    else:
        cell.status = CellStatus.DONE
    cell.server_metrics = server_metrics(cell, sampler, m0, m1)
    if cell.server_metrics and cell.server_metrics.get("requests_deferred_max"):
        deferred = cell.server_metrics["requests_deferred_max"]
        cell.warnings.append(f"the server deferred up to {deferred:g} request(s) (all slots busy)")
    cell.energy = energy(cell, params, info, sampler)


def server_metrics(
    cell: Cell, sampler: "MetricsSampler", m0: Optional[Dict[str, float]], m1: Optional[Dict[str, float]]
) -> Optional[Dict[str, Any]]:
    samples = sampler.cell_samples(cell.label)
    slots = sampler.cell_slots(cell.label)
    if m0 is None and not samples and not slots:
        return None

    def peak(key: str) -> Optional[float]:
        vals = [s[key] for s in samples if key in s]
        return max(vals) if vals else None

    busy = [s["busy"] for s in slots]
    return {
        "prompt_tokens": _delta(m0, m1, "prompt_tokens_total"),
        "prompt_tokens_cached": _delta(m0, m1, "prompt_tokens_cached_total"),
        "gen_tokens": _delta(m0, m1, "tokens_predicted_total"),
        "requests_deferred_max": peak("requests_deferred"),
        "requests_processing_max": peak("requests_processing"),
        "samples": len(samples),
        "slots_samples": len(slots),
        "slots_busy_max": max(busy) if busy else None,
        "slots_busy_mean": sum(busy) / len(busy) if busy else None,
    }


def energy(cell: Cell, params: BenchParams, info: "ServerInfo", sampler: "MetricsSampler") -> Dict[str, Any]:
    from ..power.meter import joules_to_wh, tokens_per_joule

    if not params.energy:
        return {"available": False, "reason": "disabled"}
    if not info.is_local:
        return {"available": False, "reason": "the server is not on this machine"}
    summary = sampler.energy_read()
    if summary is None or summary.total_joules is None:
        reasons = [] if summary is None else [r for r in (summary.cpu_reason, summary.gpu_reason) if r]
        return {"available": False, "reason": "; ".join(reasons) or "no energy source"}
    tp = cell.summary.throughput if cell.summary else None
    gen = tp.gen_tokens if tp else None
    total = (tp.prompt_tokens if tp else 0) + (gen or 0)
    return {
        "available": True,
        "cpu_j": summary.cpu_joules,
        "gpu_j": summary.gpu_joules,
        "total_j": summary.total_joules,
        "wh": joules_to_wh(summary.total_joules),
        "gen_tokens_per_j": tokens_per_joule(gen, summary.total_joules),
        "tokens_per_j": tokens_per_joule(total, summary.total_joules),
        "cpu_reason": summary.cpu_reason,
        "gpu_reason": summary.gpu_reason,
        "note": "whole machine (client included): RAPL package energy + NVML GPU energy",
    }
