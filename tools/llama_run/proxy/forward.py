"""Forwarding one request to the upstream and its answer back, as it arrives, metered on the way.

Every method, path, query and header (minus hop-by-hop ones) goes up unchanged, and the answer's bytes come
back unchanged, one write per upstream read (an SSE event is never held back, merged or split by us). The
bodies of metered requests are read whole first (bounded by --max-body): their JSON says what to meter and
whether usage must be injected, and llama-server reads a body whole before it starts anyway. Other bodies
stream through. A client that goes away closes the upstream request at once, so llama-server frees the slot.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from typing import Any, AsyncIterator, List, Optional, Tuple

from .config import ProxyConfig
from .errors import error_response, rate_limited
from .identity import ClaimedName, ClientsTable, NameBook, identify
from .inject import UsageStripper, inject_body, wants_injection
from .ledger import Ledger
from .limits import Limiter
from .meter import RequestMeter, error_message
from .records import Endpoint, Outcome, RequestRecord
from .upstream import Upstream, request_headers, response_headers, upstream_failure, within

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_decode = json.JSONDecoder().decode


class BodyTooLarge(Exception):
    pass


@functools.lru_cache(maxsize=None)
def _relay_response() -> Any:
    from aiohttp import web

    class RelayResponse(web.StreamResponse):
        """A streamed response whose head waits for the first body bytes, to leave in the same write."""

        _send_headers_immediately = False

    return RelayResponse


class Forwarder:
    def __init__(
        self, config: ProxyConfig, upstream: Upstream, ledger: Ledger, limiter: Limiter, table: ClientsTable
    ) -> None:
        self.config = config
        self.upstream = upstream
        self.ledger = ledger
        self.limiter = limiter
        self.table = table
        self.names = NameBook()

    # -- request bodies ---------------------------------------------------------------------------

    async def _expect_continue(self, request: Any) -> None:
        if request.headers.get("Expect", "").lower() == "100-continue":
            await request.writer.write(CONTINUE)  # curl waits for it before sending a large body

    async def read_body(self, request: Any) -> bytes:
        limit, timeout = self.config.max_body, self.config.client_timeout
        if request.content_length is not None and request.content_length > limit:
            raise BodyTooLarge()
        await self._expect_continue(request)
        content = request.content
        parts: List[bytes] = []
        size = 0
        deadline = time.monotonic() + timeout  # for the whole body: a byte now and then does not extend it
        while True:
            # What has arrived is taken without waiting (a small body comes with the head): no timer, no task.
            chunk = content.read_nowait()
            if not chunk:
                if content.is_eof():
                    return b"".join(parts)
                chunk = await within(deadline - time.monotonic(), content.readany())
                if not chunk:
                    return b"".join(parts)
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge()
            parts.append(chunk)

    async def _body_stream(self, request: Any, why: List[str]) -> AsyncIterator[bytes]:
        """The body as it arrives, bounded; `why` says what stopped it (the client library wraps our error)."""
        limit, size = self.config.max_body, 0
        deadline = time.monotonic() + self.config.client_timeout  # for the whole body, as in read_body
        while True:
            try:
                chunk = await within(deadline - time.monotonic(), request.content.readany())
            except asyncio.TimeoutError:
                why.append("timeout")
                raise
            if not chunk:
                return
            size += len(chunk)
            if size > limit:
                why.append("too large")
                raise BodyTooLarge()
            yield chunk

    def _too_large(self) -> Any:
        resp = error_response(
            413, f"request body larger than the proxy's --max-body ({self.config.max_body} bytes)", "request_too_large"
        )
        resp.force_close()  # the rest of the body is not read
        return resp

    def _client_timeout(self) -> Any:
        resp = error_response(408, "the request body did not arrive within --client-timeout", "request_timeout")
        resp.force_close()
        return resp

    # -- the upstream's side ----------------------------------------------------------------------

    def _upstream_error(self, exc: BaseException) -> Tuple[Any, str]:
        status, message, kind, headers = upstream_failure(exc, self.upstream.base, self.config.read_timeout)
        return error_response(status, message, kind, headers), kind

    # -- one request ------------------------------------------------------------------------------

    async def passthrough(self, request: Any) -> Any:
        """Anything that is not a metered completion: forwarded, body streamed, not recorded."""
        import aiohttp

        if request.content_length is not None and request.content_length > self.config.max_body:
            return self._too_large()
        data: Any = None
        why: List[str] = []
        headers = request_headers(request.headers, self.upstream.key)
        if request.body_exists:
            await self._expect_continue(request)
            data = self._body_stream(request, why)
            if request.content_length is not None:
                headers["Content-Length"] = str(request.content_length)  # not re-framed as chunked
        try:
            up = await self.upstream.send(request.method, request.raw_path, headers, data, can_retry=data is None)
        except (aiohttp.ClientError, asyncio.TimeoutError, BodyTooLarge) as exc:
            if "too large" in why:
                return self._too_large()
            if "timeout" in why:
                return self._client_timeout()
            return self._upstream_error(exc)[0]
        return await self._relay(request, up, None, False)

    async def metered(self, request: Any, endpoint: Endpoint) -> Any:
        t0 = time.monotonic()
        try:
            who = identify(request.headers, request.remote, self.table, self.names)
        except ClaimedName as exc:
            return error_response(401, str(exc), "authentication_error")
        rec = RequestRecord(
            id=self.ledger.next_id(),
            client=who.name,
            identity=who.source,
            endpoint=endpoint,
            method=request.method,
            started_at=time.time(),
        )
        meter = RequestMeter(rec, t0)
        self.ledger.begin(meter)
        try:
            return await self._metered(request, meter, who.limits)
        except BaseException:
            if rec.outcome is Outcome.RUNNING:  # cancelled: the client went away
                meter.finish(time.monotonic(), Outcome.ABORTED, "the client disconnected")
                rec.error_type = "client_disconnected"
            raise
        finally:
            self.ledger.end(meter)

    def _refused(self, meter: RequestMeter, resp: Any, kind: str) -> Any:
        meter.response(resp.status, "application/json")
        meter.finish(time.monotonic(), Outcome.ERROR, error_message(resp.body) if resp.body else None)
        meter.rec.error_type = kind
        return resp

    async def _metered(self, request: Any, meter: RequestMeter, limits: Any) -> Any:
        import aiohttp

        rec = meter.rec
        refusal = self.limiter.admit(rec.client, limits)
        if refusal is not None:
            return self._refused(meter, rate_limited(refusal), "rate_limit_exceeded")
        try:
            body = await self.read_body(request)
        except BodyTooLarge:
            return self._refused(meter, self._too_large(), "request_too_large")
        except asyncio.TimeoutError:
            return self._refused(meter, self._client_timeout(), "request_timeout")
        obj = None
        if not request.headers.get("Content-Encoding"):
            try:
                obj = _decode(body.decode("utf-8"))
            except (ValueError, UnicodeDecodeError):
                obj = None  # forwarded as it is; the upstream says what is wrong with it
        meter.request(obj)
        if wants_injection(self.config.inject_usage, rec.endpoint, obj, self.upstream.is_llama):
            body = inject_body(body, obj)
            rec.usage_injected = True
        headers = request_headers(request.headers, self.upstream.key)
        try:
            up = await self.upstream.send(request.method, request.raw_path, headers, body, can_retry=True)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            return self._refused(meter, *self._upstream_error(exc))
        return await self._relay(request, up, meter, rec.usage_injected)

    async def _relay(self, request: Any, up: Any, meter: Optional[RequestMeter], injected: bool) -> Any:
        """Stream the upstream's answer to the client; returns the (finished) response."""
        import aiohttp

        self.upstream.learn(up.headers)
        content_type = up.headers.get("Content-Type", "")
        sse = content_type.startswith("text/event-stream")
        stripper = UsageStripper(restore_timings=self.upstream.is_llama) if injected and sse else None
        resp = _relay_response()(
            status=up.status, reason=up.reason, headers=response_headers(up.headers, keep_length=stripper is None)
        )
        if meter is not None:
            meter.response(up.status, content_type)
        monotonic, timeout = time.monotonic, self.config.client_timeout
        transport = request.transport
        try:
            await resp.prepare(request)
            # What came with the upstream's head goes out with ours, in one write; else the head goes now.
            chunk = up.content.read_nowait()
            if not chunk:
                await resp.write(b"")
            read = up.content.readany
            while True:
                if not chunk:
                    chunk = await read()
                    if not chunk:
                        break
                if meter is not None:
                    meter.feed(chunk, monotonic())
                if stripper is not None:
                    chunk = stripper.feed(chunk)
                if not chunk:
                    continue
                if transport is None or transport.get_write_buffer_size() or len(chunk) > 65536:
                    # the client is behind: do not wait for it forever
                    await within(timeout, resp.write(chunk))
                else:
                    await resp.write(chunk)
                chunk = b""
            if stripper is not None:
                tail = stripper.flush()
                if tail:
                    await resp.write(tail)
            await resp.write_eof()
        except (
            aiohttp.ClientPayloadError,
            aiohttp.ServerDisconnectedError,
            aiohttp.ServerTimeoutError,
            aiohttp.ClientOSError,
        ) as exc:
            # The upstream broke off: so does the answer (the client sees a cut stream, as it would directly).
            up.close()
            held = stripper.flush() if stripper is not None else b""
            if held:  # what the client would have had directly before the break
                try:
                    await within(timeout, resp.write(held))
                except (ConnectionError, asyncio.TimeoutError):
                    pass
            if meter is not None:
                why = "went silent" if isinstance(exc, aiohttp.ServerTimeoutError) else "broke off the answer"
                meter.finish(monotonic(), Outcome.FAILED, f"the upstream {why}")
                meter.rec.error_type = "upstream_failed"
            if transport is not None:
                transport.close()
            return resp
        except (ConnectionError, asyncio.TimeoutError) as exc:
            up.close()  # the client is gone or stalled: stop the generation now
            if meter is not None:
                stalled = isinstance(exc, asyncio.TimeoutError)
                meter.finish(
                    monotonic(), Outcome.ABORTED, "the client stopped reading" if stalled else "the client disconnected"
                )
                meter.rec.error_type = "client_stalled" if stalled else "client_disconnected"
            if transport is not None:
                transport.close()
            return resp
        except BaseException:
            up.close()
            raise
        up.release()
        if meter is not None:
            meter.finish(monotonic())
            if meter.rec.outcome is Outcome.ERROR and meter.rec.error_type is None:
                meter.rec.error_type = f"http_{up.status}" if up.status >= 400 else "stream_error"
        return resp
