"""The streaming client against a tiny in-process SSE server: lines split across reads, HTTP
errors, a server that dies mid-stream, timeouts and cancellation."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Awaitable, Callable, List

import pytest

from tools.llama_bench.bench.client import StreamClient
from tools.llama_bench.bench.records import INTERRUPTED, Api, RequestRecord, RequestSpec

aiohttp = pytest.importorskip("aiohttp")
from aiohttp import web  # noqa: E402


def chunk(i: int) -> bytes:
    return b"data: " + json.dumps({"content": f" t{i}", "tokens": [i], "stop": False}).encode() + b"\n\n"


FINAL = (
    b"data: "
    + json.dumps(
        {
            "content": "",
            "tokens": [],
            "stop": True,
            "stop_type": "limit",
            "tokens_evaluated": 3,
            "timings": {"predicted_n": 5},
        }
    ).encode()
    + b"\n\n"
)


async def serve(
    handler: Callable[[web.Request], Awaitable[Any]], body: Callable[[StreamClient], Awaitable[Any]]
) -> Any:
    app = web.Application()
    app.router.add_post("/completion", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with StreamClient(f"http://127.0.0.1:{port}", timeout=1.0) as client:
            return await body(client)
    finally:
        await runner.cleanup()


def spec(n: int = 5) -> RequestSpec:
    return RequestSpec(
        index=0, api=Api.COMPLETION, body={"prompt": [1, 2, 3], "n_predict": n}, prompt_tokens=3, max_tokens=n
    )


async def stream(request: web.Request, parts: List[bytes], delay: float = 0.0) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for part in parts:
        await resp.write(part)
        if delay:
            await asyncio.sleep(delay)
    await resp.write_eof()
    return resp


def test_lines_split_across_reads_are_reassembled() -> None:
    raw = b"".join(chunk(i) for i in range(5)) + FINAL
    pieces = [raw[i : i + 7] for i in range(0, len(raw), 7)]  # cut mid-line, mid-JSON

    async def handler(request: web.Request) -> web.StreamResponse:
        return await stream(request, pieces, delay=0.001)

    rec: RequestRecord = asyncio.run(serve(handler, lambda c: c.send(spec())))
    assert rec.ok, rec.error
    assert rec.content_chunks == 5 and rec.output_tokens == 5 and len(rec.itl_ms) == 4
    assert rec.prompt_tokens_reported == 3 and not rec.prompt_mismatch


def test_http_error_message_is_kept() -> None:
    async def handler(request: web.Request) -> web.Response:
        err = {"error": {"code": 400, "message": "request (5000 tokens) exceeds the available context size"}}
        return web.json_response(err, status=400)

    rec = asyncio.run(serve(handler, lambda c: c.send(spec())))
    assert not rec.ok and rec.http_status == 400
    assert rec.error == "HTTP 400: request (5000 tokens) exceeds the available context size"


def test_server_dying_mid_stream_is_a_failed_record() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(chunk(0) + chunk(1))
        request.transport.close()  # type: ignore[union-attr]
        return resp

    rec = asyncio.run(serve(handler, lambda c: c.send(spec())))
    assert not rec.ok and rec.error
    assert rec.content_chunks == 2 and rec.output_tokens == 2  # what did arrive is still counted


def test_silence_longer_than_the_timeout_fails_the_request() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await stream(request, [chunk(0), b""], delay=1.6)

    rec = asyncio.run(serve(handler, lambda c: c.send(spec())))
    assert not rec.ok and "timed out" in (rec.error or "")


def test_cancellation_returns_an_interrupted_record() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await stream(request, [chunk(i) for i in range(50)], delay=0.05)

    async def body(client: StreamClient) -> RequestRecord:
        task = asyncio.ensure_future(client.send(spec(50)))
        await asyncio.sleep(0.3)
        task.cancel()
        return await task

    rec = asyncio.run(serve(handler, body))
    assert not rec.ok and rec.error == INTERRUPTED
    assert 0 < rec.content_chunks < 50
