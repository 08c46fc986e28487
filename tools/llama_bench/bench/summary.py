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
class CellSummary:
    requests: RequestCounts
    checks: Checks
    latency: Dict[str, Optional[Dist]]
    rates: Dict[str, Optional[Dist]]
    throughput: Throughput

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
        value = self.get(cell)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return None
        return float(value)


def _dist_fields(name: str, label: str, unit: str, better: bool) -> List[Field]:
    group = "latency" if name in LATENCY_FIELDS else "rates"
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
    Field("requests_sent", "sent", ("requests", "sent"), "", 0),
    Field("requests_ok", "ok", ("requests", "ok"), "", 0),
    Field("requests_failed", "failed", ("requests", "failed"), "", 0),
    Field("requests_interrupted", "interrupted", ("requests", "interrupted"), "", 0),
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
