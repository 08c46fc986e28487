"""What one benchmark request is: the API it uses, what is sent (RequestSpec) and what was measured
(RequestRecord), plus the figures derived from the raw measurements."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

from ..utils import StrEnum


class Api(StrEnum):
    """The API a benchmark sends requests to; AUTO and NATIVE are choices resolved against the server."""

    AUTO = "auto"  # llama.cpp's /completion on llama.cpp, chat otherwise
    NATIVE = "completion-auto"  # --mode completion: /completion on llama.cpp, /v1/completions otherwise
    COMPLETION = "completion"
    OPENAI_COMPLETIONS = "openai-completions"
    OPENAI_CHAT = "openai-chat"


API_PATHS = {
    Api.COMPLETION: "/completion",
    Api.OPENAI_COMPLETIONS: "/v1/completions",
    Api.OPENAI_CHAT: "/v1/chat/completions",
}
INTERRUPTED = "interrupted before completion"
SERVER_DIED = "aborted: the server stopped responding"
STEP_STOPPED = "cancelled: the step stopped early"  # a capacity step that could no longer pass
SESSION_BROKEN = "not sent: an earlier turn of this conversation failed"
# Requests the server was never asked to finish: they count neither as ok nor as failed.
CANCELLED_ERRORS = frozenset({INTERRUPTED, STEP_STOPPED})


@dataclass
class Capture:
    """What a response generated, kept for the next turn of a conversation (multi-turn workload)."""

    token_ids: List[int] = field(default_factory=list)
    text: List[str] = field(default_factory=list)


@dataclass
class RequestSpec:
    """What to send; `scheduled` is the monotonic arrival time under --request-rate (None: closed loop)."""

    index: int
    api: Api
    body: Dict[str, Any]
    prompt_tokens: int  # requested: the prompt is built to exactly this many tokens
    max_tokens: int
    cell: str = ""
    warmup: bool = False
    scheduled: Optional[float] = None
    prompt_verified: bool = True  # False when the prompt length could not be checked with /tokenize
    repeat: int = 0
    session: Optional[int] = None  # multi-turn: the conversation and the turn in it (0-based)
    turn: Optional[int] = None
    capture: Optional[Capture] = None  # set when the next turn needs this response's output


@dataclass
class RequestRecord:
    """One finished (or failed) request. Times in ms; None where the value is unknown."""

    cell: str
    index: int
    api: Api
    warmup: bool
    ok: bool
    error: Optional[str]
    http_status: Optional[int]
    prompt_tokens_requested: int
    max_tokens: int
    start_s: float  # monotonic clock, seconds
    t_s: Optional[float] = None  # start relative to the beginning of the run (same clock as the metrics series)
    queue_ms: Optional[float] = None  # client-side wait between scheduled arrival and send
    ttft_ms: Optional[float] = None
    content_ttft_ms: Optional[float] = None
    reasoning_ttft_ms: Optional[float] = None
    e2e_ms: Optional[float] = None
    tpot_ms: Optional[float] = None
    itl_ms: List[float] = field(default_factory=list)
    content_chunks: int = 0
    batched_chunks: int = 0  # content events that came in the same socket read as the one before
    output_tokens: Optional[int] = None
    output_tokens_source: Optional[str] = None
    counted_tokens: int = 0
    prompt_tokens_reported: Optional[int] = None  # what the server says it received (incl. cached tokens)
    prompt_tokens_source: Optional[str] = None
    prompt_mismatch: Optional[bool] = None
    prompt_verified: bool = True
    cache_n: Optional[int] = None
    finish_reason: Optional[str] = None
    stopped_early: Optional[bool] = None
    server_prompt_n: Optional[int] = None
    server_prompt_ms: Optional[float] = None
    server_predicted_n: Optional[int] = None
    server_predicted_ms: Optional[float] = None
    server_prompt_tps: Optional[float] = None
    server_gen_tps: Optional[float] = None
    prompt_tps: Optional[float] = None  # client view: prompt tokens / TTFT
    gen_tps: Optional[float] = None  # client view: (output - 1) / (E2E - TTFT)
    overhead_ms: Optional[float] = None  # E2E minus the server's prompt_ms + predicted_ms
    ttft_overhead_ms: Optional[float] = None  # TTFT minus prompt_ms: queueing, HTTP, first send
    repeat: int = 0
    session: Optional[int] = None
    turn: Optional[int] = None

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        for key, value in d.items():
            if isinstance(value, float) and key != "start_s":
                d[key] = round(value, 3)
        d["itl_ms"] = [round(x, 3) for x in self.itl_ms]
        return d


def derive(rec: RequestRecord) -> None:
    """Fill the figures computed from the raw measurements (shared by the stream and tests)."""
    if rec.prompt_tokens_reported is not None:
        rec.prompt_mismatch = rec.prompt_tokens_reported != rec.prompt_tokens_requested
    if rec.output_tokens is not None and rec.ok:
        rec.stopped_early = rec.output_tokens < rec.max_tokens
    out = rec.output_tokens
    if rec.ttft_ms is not None and rec.e2e_ms is not None and out is not None and out > 1:
        decode_ms = rec.e2e_ms - rec.ttft_ms
        rec.tpot_ms = decode_ms / (out - 1)
        rec.gen_tps = (out - 1) / (decode_ms / 1000.0) if decode_ms > 0 else None
    if rec.ttft_ms is not None and rec.ttft_ms > 0:
        n_prompt = rec.server_prompt_n if rec.server_prompt_n is not None else rec.prompt_tokens_reported
        if n_prompt:
            rec.prompt_tps = n_prompt / (rec.ttft_ms / 1000.0)
    if rec.e2e_ms is not None and rec.server_prompt_ms is not None and rec.server_predicted_ms is not None:
        rec.overhead_ms = rec.e2e_ms - rec.server_prompt_ms - rec.server_predicted_ms
    if rec.ttft_ms is not None and rec.server_prompt_ms is not None:
        rec.ttft_overhead_ms = rec.ttft_ms - rec.server_prompt_ms
