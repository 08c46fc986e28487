"""Async streaming client for llama-server's /completion and the OpenAI-compatible endpoints.

One RequestRecord per request. The clock (time.monotonic()) starts when the request body has been
written to the socket; chunk timestamps are taken right after each read from the response body,
before any parsing, so JSON decoding never inflates the measured gaps.
TTFT is the first chunk that carries generated text (a role-only chunk does not count; reasoning
text does), ITL the gaps between such chunks, TPOT = (E2E - TTFT) / (output tokens - 1).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any, Dict, List, Optional

from .records import API_PATHS, INTERRUPTED, Api, RequestRecord, RequestSpec, derive

ERROR_BODY_LIMIT = 2000
READ_SIZE = 64 * 1024
# json.loads on bytes detects the encoding on every call; decoding the str directly is cheaper.
_decode = json.JSONDecoder().decode
STALE_CONNECTION = "stale keep-alive connection"


def _int(value: Any) -> Optional[int]:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _float(value: Any) -> Optional[float]:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _dict(value: Any) -> Optional[Dict[str, Any]]:
    return value if isinstance(value, dict) and value else None


def _str(value: Any) -> Optional[str]:
    return value if isinstance(value, str) and value else None


class StreamParser:
    """Turns SSE `data:` payloads of one response into a RequestRecord (no I/O; unit-testable)."""

    def __init__(self, spec: RequestSpec, start: float) -> None:
        self.spec = spec
        self.start = start
        self.first: Optional[float] = None
        self.first_content: Optional[float] = None
        self.first_reasoning: Optional[float] = None
        self.last_chunk: Optional[float] = None
        self.last_byte = start
        self.gaps: List[float] = []
        self.chunks = 0
        self.batched = 0
        self.capture = spec.capture
        self.counted = 0
        self.usage: Optional[Dict[str, Any]] = None
        self.timings: Optional[Dict[str, Any]] = None
        self.final: Optional[Dict[str, Any]] = None  # /completion's stop chunk
        self.finish_reason: Optional[str] = None
        self.done = False
        self.error: Optional[str] = None
        self.api = spec.api
        self.sent = False  # set when the request body went out; `start` is then reset to that moment

    def feed_line(self, line: bytes, t: float) -> None:
        """One line of the SSE stream (without the newline), received at monotonic time t."""
        if not line.startswith(b"data:"):
            return  # blank separators, comments, `event:` lines
        payload = line[6:] if line.startswith(b"data: ") else line[5:].strip()
        if payload[:1] != b"{":
            payload = payload.strip()
            if payload == b"[DONE]":
                self.done = True
                return
            if not payload:
                return
        try:
            obj = _decode(payload.decode("utf-8"))
        except ValueError:
            self.error = f"malformed stream chunk: {payload[:120]!r}"
            return
        if not isinstance(obj, dict):
            return
        self.feed(obj, t)

    def feed(self, obj: Dict[str, Any], t: float) -> None:
        # Everything read from the server is checked by type: an odd chunk is skipped, never a crash.
        if "error" in obj and not obj.get("choices"):
            err = obj["error"]
            self.error = " ".join(str(err.get("message", err) if isinstance(err, dict) else err).split())[:300]
            return
        if self.api == Api.COMPLETION:
            self._feed_completion(obj, t)
        else:
            self._feed_openai(obj, t)

    def _feed_completion(self, obj: Dict[str, Any], t: float) -> None:
        tokens = obj.get("tokens")
        n = len(tokens) if isinstance(tokens, list) else 0
        text = obj.get("content")
        # A token whose text is held back (incomplete UTF-8) still has its id in `tokens`.
        if n or text:
            self._content(t, n or 1, reasoning=False)
            if self.capture is not None:
                self._keep(tokens if n else None, text)
        if obj.get("stop") is True:
            self.final = obj
            self.done = True
            self.timings = _dict(obj.get("timings")) or self.timings
            self.finish_reason = _str(obj.get("stop_type")) or self.finish_reason

    def _feed_openai(self, obj: Dict[str, Any], t: float) -> None:
        choices = obj.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
        if choice is not None:
            delta = choice.get("delta")
            if isinstance(delta, dict):  # chat
                content = delta.get("content")
                reasoning = delta.get("reasoning_content") or delta.get("reasoning")
                if reasoning:
                    self._content(t, 1, reasoning=True)
                elif content or delta.get("tool_calls"):
                    self._content(t, 1, reasoning=False)
                if self.capture is not None and content:
                    self._keep(None, content)
            elif choice.get("text"):
                self._content(t, 1, reasoning=False)
                if self.capture is not None:
                    self._keep(None, choice.get("text"))
            if _str(choice.get("finish_reason")):
                self.finish_reason = choice["finish_reason"]
        if _dict(obj.get("usage")):
            self.usage = obj["usage"]
        if _dict(obj.get("timings")):
            self.timings = obj["timings"]

    def _keep(self, tokens: Optional[List[Any]], text: Any) -> None:
        assert self.capture is not None
        if tokens:
            self.capture.token_ids.extend(i for i in tokens if isinstance(i, int) and not isinstance(i, bool))
        if isinstance(text, str) and text:
            self.capture.text.append(text)

    def _content(self, t: float, tokens: int, reasoning: bool) -> None:
        if self.first is None:
            self.first = t
        elif self.last_chunk is not None:
            if t == self.last_chunk:  # the same socket read: this gap is 0 by construction
                self.batched += 1
            self.gaps.append(t - self.last_chunk)
        if reasoning:
            if self.first_reasoning is None:
                self.first_reasoning = t
        elif self.first_content is None:
            self.first_content = t
        self.last_chunk = t
        self.chunks += 1
        self.counted += tokens

    def complete(self) -> bool:
        """Whether the stream ended the way the protocol says a finished response ends."""
        if self.api == Api.COMPLETION:
            return self.final is not None
        return self.done or self.finish_reason is not None

    def record(self, http_status: Optional[int], error: Optional[str] = None) -> RequestRecord:
        spec = self.spec
        err = error or self.error
        if err is None and not self.complete():
            err = "stream ended before the final chunk (server died or closed the connection?)"
        rec = RequestRecord(
            cell=spec.cell,
            index=spec.index,
            api=spec.api,
            warmup=spec.warmup,
            ok=err is None,
            error=err,
            http_status=http_status,
            prompt_tokens_requested=spec.prompt_tokens,
            max_tokens=spec.max_tokens,
            start_s=self.start,
            queue_ms=None if spec.scheduled is None else max(0.0, (self.start - spec.scheduled) * 1000.0),
            prompt_verified=spec.prompt_verified,
            content_chunks=self.chunks,
            batched_chunks=self.batched,
            repeat=spec.repeat,
            session=spec.session,
            turn=spec.turn,
            counted_tokens=self.counted,
            finish_reason=self.finish_reason,
        )
        ms = 1000.0
        if self.first is not None:
            rec.ttft_ms = (self.first - self.start) * ms
        if self.first_content is not None:
            rec.content_ttft_ms = (self.first_content - self.start) * ms
        if self.first_reasoning is not None:
            rec.reasoning_ttft_ms = (self.first_reasoning - self.start) * ms
        rec.e2e_ms = (self.last_byte - self.start) * ms
        rec.itl_ms = [g * ms for g in self.gaps]
        self._server_view(rec)
        derive(rec)
        return rec

    def _server_view(self, rec: RequestRecord) -> None:
        usage = self.usage or {}
        timings = self.timings or {}
        final = self.final or {}
        rec.cache_n = _int(timings.get("cache_n"))
        rec.server_prompt_n = _int(timings.get("prompt_n"))
        rec.server_prompt_ms = _float(timings.get("prompt_ms"))
        rec.server_predicted_n = _int(timings.get("predicted_n"))
        rec.server_predicted_ms = _float(timings.get("predicted_ms"))
        rec.server_prompt_tps = _float(timings.get("prompt_per_second"))
        rec.server_gen_tps = _float(timings.get("predicted_per_second"))
        if rec.cache_n is None:
            details = usage.get("prompt_tokens_details")
            if isinstance(details, dict):
                rec.cache_n = _int(details.get("cached_tokens"))
        # Output length: what the server says it generated, else what we counted; never max_tokens.
        for value, source in (
            (usage.get("completion_tokens"), "usage"),
            (timings.get("predicted_n"), "timings"),
            (final.get("tokens_predicted"), "tokens_predicted"),
        ):
            if _int(value) is not None:
                rec.output_tokens, rec.output_tokens_source = _int(value), source
                break
        else:
            if rec.ok or self.counted:
                rec.output_tokens, rec.output_tokens_source = self.counted, "counted"
        # Prompt length as the server saw it; timings.prompt_n excludes tokens reused from the cache.
        prompt_n = rec.server_prompt_n
        for value, source in (
            (usage.get("prompt_tokens"), "usage"),
            (final.get("tokens_evaluated"), "tokens_evaluated"),
            (None if prompt_n is None else prompt_n + (rec.cache_n or 0), "timings"),
        ):
            if _int(value) is not None:
                rec.prompt_tokens_reported, rec.prompt_tokens_source = _int(value), source
                break


def _error_message(status: int, body: bytes) -> str:
    text = body[:ERROR_BODY_LIMIT].decode("utf-8", errors="replace").strip()
    try:
        obj = json.loads(text)
        err = obj.get("error", obj) if isinstance(obj, dict) else obj
        msg = err.get("message") if isinstance(err, dict) else None
        if msg:
            text = str(msg)
    except ValueError:
        pass
    return f"HTTP {status}: {' '.join(text.split())[:300]}" if text else f"HTTP {status}"


def _small_reads(resp: Any) -> None:
    """asyncio reads up to 256 KiB per recv(); a buffer that size is mmap'ed, shrunk and unmapped on
    every read (three extra syscalls per chunk of a stream). 64 KiB buffers come from the heap."""
    transport = getattr(getattr(resp, "connection", None), "transport", None)
    if transport is not None and getattr(transport, "max_size", 0) > READ_SIZE:
        try:
            transport.max_size = READ_SIZE
        except AttributeError:  # a transport without the attribute (e.g. TLS): leave it alone
            pass


async def _on_body_sent(session: Any, ctx: Any, params: Any) -> None:
    parser = ctx.trace_request_ctx
    if isinstance(parser, StreamParser) and not parser.sent:
        parser.sent = True
        parser.start = parser.last_byte = time.monotonic()


def _is_stale(exc: BaseException) -> bool:
    import aiohttp

    return isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)) and not isinstance(
        exc, aiohttp.ClientConnectorError
    )


DEADLINE_EXCEEDED = "did not finish within --request-deadline"


def _exception_message(exc: BaseException, elapsed: float, deadline: Optional[float]) -> str:
    import aiohttp

    if isinstance(exc, asyncio.TimeoutError):
        if deadline is not None and elapsed >= deadline * 0.999:
            return f"{DEADLINE_EXCEEDED} ({deadline:g} s; the server kept sending, too slowly)"
        return "timed out waiting for the server (no data within --timeout)"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server disconnected"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect: {exc.os_error.strerror if exc.os_error else exc}"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "connection closed mid-response"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


class StreamClient:
    """An aiohttp session for many concurrent streaming requests to one server."""

    def __init__(
        self,
        base_url: str,
        api_key: Optional[str] = None,
        timeout: float = 300.0,
        connect_timeout: float = 10.0,
        deadline: Optional[float] = None,
        max_connections: int = 0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.deadline = deadline
        self.max_connections = max_connections
        self.headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self._session: Any = None

    async def __aenter__(self) -> "StreamClient":
        import aiohttp  # lazy: keeps `llama-bench --help` fast

        # Idle connections are dropped before llama-server's own 5 s keep-alive timeout closes them.
        connector = aiohttp.TCPConnector(limit=self.max_connections, ttl_dns_cache=300, keepalive_timeout=2.0)
        # sock_read bounds the silence between two reads, so a hung server is detected quickly; total is
        # the request's whole deadline, so a server that trickles a byte every few seconds cannot hold
        # a request forever either.
        timeout = aiohttp.ClientTimeout(total=self.deadline, sock_connect=self.connect_timeout, sock_read=self.timeout)
        # The clock starts when the request body has been handed to the socket, not when aiohttp
        # begins building the request: its own set-up (~0.5 ms) is client overhead, not latency.
        trace = aiohttp.TraceConfig()
        trace.on_request_chunk_sent.append(_on_body_sent)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=timeout, headers=self.headers, trust_env=False, trace_configs=[trace]
        )
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, spec: RequestSpec) -> RequestRecord:
        """Send one streaming request and always return its record (also when cancelled)."""
        assert self._session is not None, "use `async with StreamClient(...)`"
        url = self.base_url + API_PATHS[spec.api]
        data = json.dumps(spec.body).encode("utf-8")
        rec = await self._attempt(url, data, spec)
        if rec.error == STALE_CONNECTION:
            # A pooled keep-alive connection the server had already closed: the request never
            # reached it, so sending it again on a fresh connection measures the same thing.
            rec = await self._attempt(url, data, spec)
            if rec.error == STALE_CONNECTION:
                rec.error = "server disconnected"
        return rec

    async def _attempt(self, url: str, data: bytes, spec: RequestSpec) -> RequestRecord:
        monotonic = time.monotonic
        start = monotonic()
        parser = StreamParser(spec, start)
        status: Optional[int] = None
        try:
            async with self._session.post(url, data=data, trace_request_ctx=parser) as resp:
                status = resp.status
                if status != 200:
                    body = await resp.content.read(ERROR_BODY_LIMIT)
                    parser.last_byte = monotonic()
                    return parser.record(status, _error_message(status, body))
                if resp.content_type == "application/json":
                    await resp.read()
                    parser.last_byte = monotonic()
                    return parser.record(
                        status, "the server answered with plain JSON, not a stream (stream=true ignored)"
                    )
                _small_reads(resp)
                pending = b""
                feed = parser.feed_line
                # iter_any yields whatever one socket read delivered; every line in it shares the
                # timestamp taken here, before parsing.
                async for chunk in resp.content.iter_any():
                    t = monotonic()
                    parser.last_byte = t
                    if pending:
                        chunk = pending + chunk
                    lines = chunk.split(b"\n")
                    pending = lines.pop()
                    for line in lines:
                        if line.startswith(b"data:"):
                            feed(line.rstrip(b"\r"), t)
                if pending.startswith(b"data:"):
                    feed(pending.rstrip(b"\r"), parser.last_byte)
            return parser.record(status)
        except asyncio.CancelledError:
            # Ctrl-C or a dead server stopped the run: the request is recorded, never dropped.
            parser.last_byte = monotonic()
            return parser.record(status, INTERRUPTED)
        except Exception as exc:  # network errors become a failed record, never a lost one
            parser.last_byte = monotonic()
            if status is None and _is_stale(exc):
                return parser.record(status, STALE_CONNECTION)
            return parser.record(status, _exception_message(exc, parser.last_byte - start, self.deadline))
