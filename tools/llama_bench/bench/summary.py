"""A cell's figures as typed records, and the one table that says where each reported figure lives.

The console report, the CSV columns, `compare` and the plots all name figures by a key of FIELDS
(e.g. "ttft_p50"), never by a path of their own; a result file read back from disk (plain dicts) is
looked up through the same table.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

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
    "itl_ms",
)
RATE_FIELDS = ("prompt_tps", "gen_tps", "server_prompt_tps", "server_gen_tps")
STATS = ("mean", "p50", "p90", "p99", "min", "max")


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


@dataclass
class ErrorCount:
    error: str
    count: int


@dataclass
class RequestCounts:
    planned: int
    sent: int
    ok: int
    failed: int
    interrupted: int
    not_sent: int
    errors: List[ErrorCount] = field(default_factory=list)
    cancelled: int = 0  # in flight when a capacity step stopped early (neither ok nor failed)


@dataclass
class PromptMismatch:
    index: int
    requested: int
    server: Optional[int]


@dataclass
class Checks:
    """What makes a cell's numbers more or less trustworthy."""

    prompt_mismatches: List[PromptMismatch]
    prompt_unverified: int  # responses that reported no prompt token count
    prompt_built_unverified: int  # prompts whose length /tokenize could not confirm
    cache_hits: int
    cache_n_max: int
    stopped_early: int
    output_tokens_min: Optional[int]
    output_sources: Dict[str, int]


@dataclass
class Throughput:
    duration_s: Optional[float]
    prompt_tokens: int  # summed over ok requests, as the server reported them (else as requested)
    prompt_tokens_processed: Optional[int]  # timings.prompt_n: without tokens reused from the cache
    gen_tokens: int
    prompt_tps: Optional[float]
    gen_tps: Optional[float]
    total_tps: Optional[float]
    requests_per_s: Optional[float]


@dataclass
class Batching:
    """Token events that arrived in one socket read together with an earlier one: their ITL gap is 0
    by construction (a fast server, or a proxy that buffers), not a measurement of the server."""

    events: int  # content events of ok requests
    batched: int  # ... that shared a socket read with the event before them
    share: Optional[float]


@dataclass
class CacheSummary:
    """Prompt-cache reuse as the responses report it (timings.cache_n / usage cached_tokens).

    A request is a hit when at least 10 % of its prompt (and more than one token) came from the cache."""

    requests: int  # ok requests
    hit_requests: int
    hit_share: Optional[float]
    prompt_tokens: int
    cached_tokens: int
    token_share: Optional[float]  # cached / prompt tokens
    ttft_cached_ms: Optional[Dist]
    ttft_uncached_ms: Optional[Dist]


@dataclass
class SloTermResult:
    term: str  # e.g. "ttft_p99"
    metric: str
    percentile: float
    bound_ms: float
    value_ms: Optional[float]  # nearest-rank pXX over every request; None when it is a failed one
    good_share: Optional[float]  # requests meeting this bound
    met: bool


@dataclass
class SloSummary:
    """The cell against --slo (definitions in slo.py)."""

    spec: str
    requests: int  # the denominator: measured requests, failed ones included, interrupted ones not
    good: int  # requests meeting every bound
    good_share: Optional[float]
    met: bool  # every term met by the cell
    goodput_rps: Optional[float]  # good requests per second of the cell
    goodput_gen_tps: Optional[float]  # generated tokens of good requests per second
    terms: List[SloTermResult] = field(default_factory=list)


@dataclass
class Interval:
    """Mean and 95 % confidence interval (Student's t) of a figure over repeats."""

    n: int
    mean: float
    stdev: Optional[float]  # sample standard deviation; None with one repeat
    low: Optional[float]
    high: Optional[float]
    half_width: Optional[float]


@dataclass
class RepeatSummary:
    """Every figure of REPEAT_KEYS per repeat, and its mean with a 95 % confidence interval."""

    n: int
    values: Dict[str, List[Optional[float]]]
    ci: Dict[str, Optional[Interval]]


@dataclass
class CellSummary:
    requests: RequestCounts
    checks: Checks
    latency: Dict[str, Optional[Dist]]
    rates: Dict[str, Optional[Dist]]
    throughput: Throughput
    batching: Optional[Batching] = None
    cache: Optional[CacheSummary] = None
    slo: Optional[SloSummary] = None
    repeats: Optional[RepeatSummary] = None

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Field:
    """One reported figure: where it is in a cell's dict, how to show it, and which way is better."""

    key: str
    label: str
    path: Tuple[str, ...]
    unit: str = ""
    digits: int = 1
    higher_is_better: Optional[bool] = None

    def get(self, cell: Mapping[str, Any]) -> Any:
        cur: Any = cell
        for part in self.path:
            if not isinstance(cur, Mapping) or part not in cur:
                return None
            cur = cur[part]
        return cur

    def number(self, cell: Mapping[str, Any]) -> Optional[float]:
        """The figure as a finite number, None when absent or not a number (a result file edited by
        hand or from another tool must not crash a table or a plot)."""
        return _finite(self.get(cell))

    def ci(self, cell: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
        """The figure's mean and 95 % interval over repeats (RepeatSummary.ci), None without repeats."""
        repeats = cell.get("repeats")
        table = repeats.get("ci") if isinstance(repeats, Mapping) else None
        value = table.get(self.key) if isinstance(table, Mapping) else None
        return value if isinstance(value, Mapping) else None

    def repeat_values(self, cell: Mapping[str, Any]) -> List[float]:
        """The figure's value in each repeat (finite numbers only)."""
        repeats = cell.get("repeats")
        table = repeats.get("values") if isinstance(repeats, Mapping) else None
        values = table.get(self.key) if isinstance(table, Mapping) else None
        if not isinstance(values, list):
            return []
        return [v for v in (_finite(x) for x in values) if v is not None]


def _finite(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _dist_fields(name: str, label: str, unit: str, better: bool, group: Optional[str] = None) -> List[Field]:
    group = group or ("latency" if name in LATENCY_FIELDS else "rates")
    return [
        Field(f"{name.rsplit('_', 1)[0]}_{stat}", f"{label} {stat} {unit}", (group, name, stat), unit, 2, better)
        for stat in STATS
    ]


_TABLE: List[Field] = [
    Field("label", "cell", ("label",)),
    Field("prompt_size", "prompt tokens", ("prompt_size",), "tok", 0),
    Field("concurrency", "concurrency", ("concurrency",), "", 0),
    Field("status", "status", ("status",)),
    Field("reason", "reason", ("reason",)),
    Field("workload", "workload", ("workload",)),
    Field("rate", "offered req/s", ("rate",), "req/s", 3),
    Field("repeat_count", "repeats", ("repeat_count",), "", 0),
    Field("requests_sent", "sent", ("requests", "sent"), "", 0),
    Field("requests_ok", "ok", ("requests", "ok"), "", 0),
    Field("requests_failed", "failed", ("requests", "failed"), "", 0),
    Field("requests_interrupted", "interrupted", ("requests", "interrupted"), "", 0),
    Field("requests_cancelled", "cancelled", ("requests", "cancelled"), "", 0),
    Field("duration_s", "duration", ("throughput", "duration_s"), "s", 2),
    Field("prompt_tps", "prompt tok/s", ("throughput", "prompt_tps"), "tok/s", 1, True),
    Field("gen_tps", "gen tok/s", ("throughput", "gen_tps"), "tok/s", 1, True),
    Field("total_tps", "total tok/s", ("throughput", "total_tps"), "tok/s", 1, True),
    Field("requests_per_s", "req/s", ("throughput", "requests_per_s"), "req/s", 3, True),
    *_dist_fields("ttft_ms", "TTFT", "ms", False),
    *_dist_fields("tpot_ms", "TPOT", "ms", False),
    *_dist_fields("itl_ms", "ITL", "ms", False),
    *_dist_fields("e2e_ms", "E2E", "ms", False),
    *_dist_fields("reasoning_ttft_ms", "reasoning TTFT", "ms", False),
    *_dist_fields("queue_ms", "client queue", "ms", False),
    *_dist_fields("overhead_ms", "E2E - server time", "ms", False),
    Field("client_gen_tps_mean", "gen tok/s (client) mean", ("rates", "gen_tps", "mean"), "tok/s", 1, True),
    Field("server_prompt_tps_mean", "server prompt tok/s", ("rates", "server_prompt_tps", "mean"), "tok/s", 1, True),
    Field("server_gen_tps_mean", "server gen tok/s", ("rates", "server_gen_tps", "mean"), "tok/s", 1, True),
    Field("slo_met", "SLO met", ("slo", "met")),
    Field("slo_good_share", "SLO good share", ("slo", "good_share"), "", 3, True),
    Field("goodput_rps", "goodput req/s", ("slo", "goodput_rps"), "req/s", 3, True),
    Field("goodput_gen_tps", "goodput gen tok/s", ("slo", "goodput_gen_tps"), "tok/s", 1, True),
    Field("cache_hit_share", "cache hit share", ("cache", "hit_share"), "", 3),
    Field("cache_token_share", "cached prompt share", ("cache", "token_share"), "", 3),
    *_dist_fields("ttft_cached_ms", "TTFT cached", "ms", False, "cache"),
    *_dist_fields("ttft_uncached_ms", "TTFT uncached", "ms", False, "cache"),
    Field("server_cached_tokens", "server cached tokens", ("server_metrics", "prompt_tokens_cached"), "tok", 0),
    Field("batched_share", "batched token events", ("batching", "share"), "", 3),
    Field("slots_busy_mean", "busy slots mean", ("server_metrics", "slots_busy_mean"), "", 2),
    Field("prompt_mismatches", "prompt mismatches", ("checks", "prompt_mismatches"), "", 0),
    Field("cache_hits", "cache hits", ("checks", "cache_hits"), "", 0),
    Field("stopped_early", "stopped early", ("checks", "stopped_early"), "", 0),
    Field("requests_deferred_max", "max deferred", ("server_metrics", "requests_deferred_max"), "", 0),
    Field("energy_wh", "Wh", ("energy", "wh"), "Wh", 5, False),
    Field("gen_tokens_per_j", "gen tok/J", ("energy", "gen_tokens_per_j"), "tok/J", 3, True),
    Field("tokens_per_j", "tok/J", ("energy", "tokens_per_j"), "tok/J", 3, True),
    Field("energy_unavailable", "energy unavailable", ("energy", "reason")),
]
FIELDS: Dict[str, Field] = {f.key: f for f in _TABLE}
# The figures measured again in every repeat (--repeats), each with a mean and a 95 % interval.
REPEAT_KEYS = tuple(
    f.key
    for f in _TABLE
    if f.higher_is_better is not None and f.path[0] in ("latency", "rates", "throughput", "slo", "cache")
)

# Distribution rows of the per-cell console table: (label, group, name, unit).
DIST_ROWS = (
    ("TTFT", "latency", "ttft_ms", "ms"),
    ("  reasoning TTFT", "latency", "reasoning_ttft_ms", "ms"),
    ("TPOT", "latency", "tpot_ms", "ms"),
    ("ITL", "latency", "itl_ms", "ms"),
    ("E2E", "latency", "e2e_ms", "ms"),
    ("client queue", "latency", "queue_ms", "ms"),
    ("TTFT - server prompt_ms", "latency", "ttft_overhead_ms", "ms"),
    ("E2E - server time", "latency", "overhead_ms", "ms"),
    ("prompt tok/s (client)", "rates", "prompt_tps", "tok/s"),
    ("prompt tok/s (server)", "rates", "server_prompt_tps", "tok/s"),
    ("gen tok/s (client)", "rates", "gen_tps", "tok/s"),
    ("gen tok/s (server)", "rates", "server_gen_tps", "tok/s"),
)


def fields(*keys: str) -> Tuple[Field, ...]:
    return tuple(FIELDS[k] for k in keys)
