"""What a metered request is (`RequestRecord`), per-client totals, and their JSON form.

The proxy serves these as /proxy/requests; `client.py` reads them back into the same dataclasses, so the
shape is defined once, here. Times: `started_at` is Unix time; durations are in ms; None = unknown.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, Optional

from tools.llama_bench.utils import StrEnum

SCHEMA = "llama-studio.proxy-requests/1"


class Endpoint(StrEnum):
    """The metered APIs (llama.cpp's aliases map onto these)."""

    COMPLETION = "/completion"
    COMPLETIONS = "/v1/completions"
    CHAT = "/v1/chat/completions"


# Every path llama-server answers for those APIs.
METERED_PATHS: Dict[str, Endpoint] = {
    "/completion": Endpoint.COMPLETION,
    "/completions": Endpoint.COMPLETION,
    "/v1/completions": Endpoint.COMPLETIONS,
    "/chat/completions": Endpoint.CHAT,
    "/v1/chat/completions": Endpoint.CHAT,
}


class Outcome(StrEnum):
    RUNNING = "running"
    OK = "ok"
    ERROR = "error"  # an error status (from the upstream, or the proxy's own 413/429/502/503/504)
    ABORTED = "aborted"  # the client went away before the answer was complete
    FAILED = "failed"  # the upstream broke off mid-answer or went silent


class IdentitySource(StrEnum):
    CLIENTS_FILE = "clients-file"  # an API key listed in --clients
    HEADER = "header"  # X-Client-Name
    KEY = "key"  # fingerprint of an unlisted API key
    ADDRESS = "address"  # the client's IP address


@dataclass
class RequestRecord:
    id: int  # in order of arrival
    client: str
    identity: IdentitySource
    endpoint: Endpoint
    method: str
    started_at: float  # Unix time when the request head arrived
    stream: bool = False
    model: Optional[str] = None
    status: Optional[int] = None  # HTTP status sent to the client
    outcome: Outcome = Outcome.RUNNING
    ttft_ms: Optional[float] = None  # first streamed content chunk
    duration_ms: Optional[float] = None  # so far, while running
    prompt_tokens: Optional[int] = None  # all of the prompt, cached tokens included
    cached_tokens: Optional[int] = None
    generated_tokens: Optional[int] = None  # while running: content chunks so far
    chunks: int = 0  # streamed content chunks, counted live
    prompt_tps: Optional[float] = None
    gen_tps: Optional[float] = None
    finish_reason: Optional[str] = None  # stop, length, ... (llama.cpp's stop_type mapped the same way)
    tokens_source: Optional[str] = None  # timings, usage, final (tokens_predicted), counted
    usage_injected: bool = False
    error: Optional[str] = None  # for the live view only: an upstream's message may quote the request
    error_type: Optional[str] = None  # what the history keeps: e.g. invalid_request_error, upstream_unreachable
    seq: int = 0  # in order of finishing (1, 2, ...); 0 while running

    @property
    def total_tokens(self) -> int:
        return (self.prompt_tokens or 0) + (self.generated_tokens or 0)

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        for key in ("ttft_ms", "duration_ms", "prompt_tps", "gen_tps"):
            if d[key] is not None:
                d[key] = round(d[key], 3)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "RequestRecord":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in d.items() if k in known}
        values["identity"] = IdentitySource(values.get("identity", IdentitySource.ADDRESS))
        values["endpoint"] = Endpoint(values["endpoint"])
        values["outcome"] = Outcome(values.get("outcome", Outcome.RUNNING))
        return cls(**values)


@dataclass
class ClientTotals:
    """Everything one client did since the proxy started (finished requests; `in_flight` = running now)."""

    client: str
    requests: int = 0
    errors: int = 0  # outcome error or failed
    aborted: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    generated_tokens: int = 0
    in_flight: int = 0
    last_seen: Optional[float] = None  # Unix time

    def add(self, rec: RequestRecord) -> None:
        self.requests += 1
        self.errors += rec.outcome in (Outcome.ERROR, Outcome.FAILED)
        self.aborted += rec.outcome is Outcome.ABORTED
        self.prompt_tokens += rec.prompt_tokens or 0
        self.cached_tokens += rec.cached_tokens or 0
        self.generated_tokens += rec.generated_tokens or 0
        self.last_seen = rec.started_at + (rec.duration_ms or 0.0) / 1000.0

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "ClientTotals":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def _word(text: Optional[str]) -> str:
    return "-" if not text else "_".join(text.split())


def _num(x: Optional[float], digits: int) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def req_line(rec: RequestRecord) -> str:
    """One finished request as a plain, parseable line (what `[req]` lines in plain mode show).

    `[req] <client> <endpoint> <status>: p_tok <int> c_tok <int> g_tok <int> ttft_ms <f> g_tok/s <f> dur_s <f>
    finish <reason> outcome <outcome> model <model>`; unknown values are `-`; the client name has no spaces.
    """
    status = "-" if rec.status is None else str(rec.status)
    ints = [("p_tok", rec.prompt_tokens), ("c_tok", rec.cached_tokens), ("g_tok", rec.generated_tokens)]
    parts = [f"{name} {'-' if value is None else value}" for name, value in ints]
    parts += [f"ttft_ms {_num(rec.ttft_ms, 1)}", f"g_tok/s {_num(rec.gen_tps, 2)}"]
    parts += [f"dur_s {_num(None if rec.duration_ms is None else rec.duration_ms / 1000.0, 2)}"]
    parts += [f"finish {rec.finish_reason or '-'}", f"outcome {rec.outcome}", f"model {_word(rec.model)}"]
    return f"[req] {_word(rec.client)} {rec.endpoint} {status}: " + " ".join(parts)
