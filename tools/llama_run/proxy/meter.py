"""Metering one request from the bytes that pass through: the request's JSON body, then the answer (a JSON
body or SSE `data:` lines) of /completion, /v1/completions and /v1/chat/completions.

llama.cpp's `timings` (prompt_n, cache_n, predicted_n, *_per_second) are trusted over `usage`; each figure
falls back to `usage`, then to /completion's own fields, then to the content chunks counted live. Malformed
input is skipped: metering takes what it can and never changes a byte of what is forwarded.

Hot path: a token chunk is recognised by a few substring tests and counted without decoding its JSON; only
the lines that can carry figures (role, finish reason, usage, timings, errors) are parsed.
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Optional, Tuple

from .records import Endpoint, Outcome, RequestRecord

_decode = json.JSONDecoder().decode
# A data line with one of these keys may carry figures (or is not a token): it is decoded.
_PARSE = re.compile(rb'"(?:timings"|usage"|error"|role"|prompt_progress"|stop":true|finish_reason":")')
# Without them, a line with one of these (compact JSON, as llama.cpp writes it) is a content chunk.
_CONTENT = re.compile(rb'"(?:content":"|text":"|reasoning|tool_calls")')
MAX_PENDING = 1024 * 1024  # an SSE line longer than this is not metered
MAX_JSON_BODY = 16 * 1024 * 1024  # a JSON answer longer than this is not metered
STOP_TYPES = {"eos": "stop", "word": "stop", "limit": "length"}  # /completion's stop_type, OpenAI's words


def _int(value: Any) -> Optional[int]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value)


def _float(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _short(text: Any) -> str:
    return " ".join(str(text).split())[:200]


def error_fields(body: bytes) -> Tuple[Optional[str], Optional[str]]:
    """(message, type) of an OpenAI/llama.cpp error body; the message is the text itself when not JSON."""
    text = body[:4000].decode("utf-8", errors="replace").strip()
    if not text:
        return None, None
    try:
        obj = _decode(text)
    except ValueError:
        return _short(text), None
    err = obj.get("error", obj) if isinstance(obj, dict) else obj
    if not isinstance(err, dict):
        return _short(err), None
    kind = err.get("type")
    return _short(err.get("message", err)), kind if isinstance(kind, str) and kind else None


def error_message(body: bytes) -> Optional[str]:
    return error_fields(body)[0]


class RequestMeter:
    """Accumulates one request's figures; `finish` writes them into its RequestRecord."""

    def __init__(self, rec: RequestRecord, t0: float) -> None:
        self.rec = rec
        self.t0 = t0  # monotonic time of the request head
        self.request_model: Optional[str] = None
        self.response_model: Optional[str] = None
        self.timings: Optional[Dict[str, Any]] = None
        self.usage: Optional[Dict[str, Any]] = None
        self.final: Optional[Dict[str, Any]] = None  # /completion's stop chunk or body
        self.done = False  # [DONE], a finish reason, a final /completion chunk or a whole JSON body
        self.first: Optional[float] = None
        self.last: Optional[float] = None
        self.sse = False
        self._pending = b""
        self._body: List[bytes] = []
        self._body_size = 0

    # -- the request ------------------------------------------------------------------------------

    def request(self, obj: Any) -> None:
        if not isinstance(obj, dict):
            return
        model = obj.get("model")
        if isinstance(model, str) and model:
            self.request_model = model
        self.rec.stream = obj.get("stream") is True

    # -- the answer -------------------------------------------------------------------------------

    def response(self, status: int, content_type: str) -> None:
        self.rec.status = status
        self.sse = content_type.startswith("text/event-stream")

    def feed(self, data: bytes, t: float) -> None:
        """A piece of the answer's body, as forwarded, received at monotonic time t."""
        if self.sse:
            self.feed_sse(data, t)
        elif self._body_size <= MAX_JSON_BODY:
            self._body.append(data)
            self._body_size += len(data)

    def feed_sse(self, data: bytes, t: float) -> None:
        if self._pending:
            data = self._pending + data
        start, end = 0, len(data)
        find = data.find
        while start < end:
            nl = find(b"\n", start)
            if nl < 0:
                break
            if data.startswith(b"data:", start):
                self._line(data[start + 5 : nl], t)
            start = nl + 1
        rest = data[start:] if start < end else b""
        self._pending = rest if len(rest) <= MAX_PENDING else b""

    def _line(self, payload: bytes, t: float) -> None:
        if payload[:2] != b" {" and payload[:1] != b"{":
            payload = payload.strip()
            if payload == b"[DONE]":
                self.done = True
                return
            if payload[:1] != b"{":
                return
        if _PARSE.search(payload) is None and _CONTENT.search(payload) is not None:
            self._content(t)
            return
        # Anything else, including an unknown shape or JSON with spaces after the colons, is decoded.
        try:
            obj = _decode(payload.decode("utf-8", errors="replace"))
        except ValueError:
            return
        if isinstance(obj, dict):
            self._object(obj, t, streamed=True)

    def _content(self, t: float) -> None:
        if self.first is None:
            self.first = t
        self.last = t
        self.rec.chunks += 1

    def _object(self, obj: Dict[str, Any], t: float, streamed: bool) -> None:
        """One decoded chunk (streamed) or the whole JSON answer."""
        choices = obj.get("choices")
        if "error" in obj and not choices:
            err = obj["error"]
            if isinstance(err, dict):
                self.rec.error = _short(err.get("message", err))
                kind = err.get("type")
                self.rec.error_type = kind if isinstance(kind, str) and kind else "stream_error"
            else:
                self.rec.error, self.rec.error_type = _short(err), "stream_error"
            return
        if isinstance(choices, list):
            choice = choices[0] if choices and isinstance(choices[0], dict) else {}
            delta = choice.get("delta")
            if streamed and isinstance(delta, dict):
                if delta.get("content") or delta.get("reasoning_content") or delta.get("tool_calls"):
                    self._content(t)
            elif streamed and choice.get("text"):
                self._content(t)
            reason = choice.get("finish_reason")
            if isinstance(reason, str) and reason:
                self.rec.finish_reason = reason
                self.done = True
        elif "content" in obj or "stop" in obj:  # /completion
            if obj.get("stop") is True:
                self.final = obj
                self.done = True
                stop_type = obj.get("stop_type")
                if isinstance(stop_type, str) and stop_type != "none":
                    self.rec.finish_reason = STOP_TYPES.get(stop_type, stop_type)
            elif streamed and (obj.get("content") or obj.get("tokens")):
                self._content(t)
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        timings = obj.get("timings")
        if isinstance(timings, dict):
            self.timings = timings
        model = obj.get("model")
        if isinstance(model, str) and model:
            self.response_model = model

    # -- the end ----------------------------------------------------------------------------------

    def complete(self) -> bool:
        """Whether the answer ended the way a finished answer ends."""
        if self.rec.endpoint is Endpoint.COMPLETION:
            return self.final is not None
        return self.done

    def finish(self, t: float, outcome: Optional[Outcome] = None, error: Optional[str] = None) -> RequestRecord:
        """Fill the record: outcome None means "judge from the answer" (status, completeness)."""
        rec = self.rec
        if not self.sse and self._body and self._body_size <= MAX_JSON_BODY:
            body = b"".join(self._body)
            self._body = []
            if rec.status is not None and rec.status >= 400:
                message, kind = error_fields(body)
                rec.error = rec.error or message
                rec.error_type = rec.error_type or kind
            else:
                try:
                    obj = _decode(body.decode("utf-8", errors="replace"))
                except ValueError:
                    obj = None
                if isinstance(obj, dict):
                    self._object(obj, t, streamed=False)
                    self.done = self.done or "error" not in obj
        if self._pending.startswith(b"data:"):
            self._line(self._pending[5:].rstrip(b"\r"), t)
            self._pending = b""
        rec.duration_ms = (t - self.t0) * 1000.0
        if self.first is not None:
            rec.ttft_ms = (self.first - self.t0) * 1000.0
        rec.model = self.response_model or self.request_model
        self._tokens()
        if error is not None:
            rec.error = error
        if outcome is None:
            if rec.status is not None and rec.status >= 400 or rec.error is not None:
                outcome = Outcome.ERROR
            elif not self.complete():
                outcome = Outcome.FAILED
                rec.error = rec.error or "the answer ended before its final chunk"
            else:
                outcome = Outcome.OK
        rec.outcome = outcome
        return rec

    def live(self, t: float) -> None:
        """Figures of a request still running (duration and tokens so far), for /proxy/requests."""
        rec = self.rec
        rec.duration_ms = (t - self.t0) * 1000.0
        if self.first is not None:
            rec.ttft_ms = (self.first - self.t0) * 1000.0
        rec.generated_tokens = rec.chunks
        rec.model = self.response_model or self.request_model

    def _tokens(self) -> None:
        rec = self.rec
        timings = self.timings or {}
        usage = self.usage or {}
        final = self.final or {}
        details = usage.get("prompt_tokens_details")
        details = details if isinstance(details, dict) else {}
        prompt_n, cache_n = _int(timings.get("prompt_n")), _int(timings.get("cache_n"))
        predicted_n = _int(timings.get("predicted_n"))
        # timings.prompt_n counts only the tokens processed; the cached ones come on top.
        prompt = prompt_n + (cache_n or 0) if prompt_n is not None else None
        rec.prompt_tokens = _first(prompt, _int(usage.get("prompt_tokens")), _int(final.get("tokens_evaluated")))
        rec.cached_tokens = _first(cache_n, _int(details.get("cached_tokens")))
        for value, source in (
            (predicted_n, "timings"),
            (_int(usage.get("completion_tokens")), "usage"),
            (_int(final.get("tokens_predicted")), "final"),
        ):
            if value is not None:
                rec.generated_tokens, rec.tokens_source = value, source
                break
        else:
            rec.generated_tokens = rec.chunks
            rec.tokens_source = "counted" if rec.chunks else None
        rec.prompt_tps = _float(timings.get("prompt_per_second")) or None
        rec.gen_tps = _float(timings.get("predicted_per_second")) or None
        if rec.gen_tps is None and self.first is not None and self.last is not None:
            n = rec.generated_tokens or 0
            if n > 1 and self.last > self.first:
                rec.gen_tps = (n - 1) / (self.last - self.first)


def _first(*values: Optional[int]) -> Optional[int]:
    for value in values:
        if value is not None:
            return value
    return None
