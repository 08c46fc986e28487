"""HTTP/1.1 as cpp-httplib speaks it: reading requests (chunked bodies too), response heads, SSE streams."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from .common import dumps

KEEP_ALIVE_S = 5.0  # cpp-httplib's keep-alive timeout and request count per connection
KEEP_ALIVE_MAX = 100

REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}


@dataclass
class Request:
    method: str
    path: str
    query: Dict[str, str]
    version: str
    headers: Dict[str, str]
    body: bytes
    arrival: float  # monotonic time when the whole request had arrived

    @property
    def keep_alive(self) -> bool:
        conn = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return conn == "keep-alive"
        return conn != "close"


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "application/json; charset=utf-8"
    extra_headers: List[Tuple[str, str]] = field(default_factory=list)


async def read_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Optional[Request]:
    """One HTTP/1.x request; None when the client closed the connection between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ", 2)
    headers: Dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            key, value = line.split(":", 1)
            headers[key.strip().lower()] = value.strip()
    path, _, query_text = target.partition("?")
    query = dict(pair.partition("=")[::2] for pair in query_text.split("&") if pair)
    if headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # curl waits a second for this on large bodies
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = await read_chunked(reader)
    else:
        length = int(headers.get("content-length") or 0)
        body = await reader.readexactly(length) if length > 0 else b""
    return Request(method, path, query, version.strip(), headers, body, time.monotonic())


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: List[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass  # trailers
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


def json_response(status: int, obj: Any) -> Response:
    return Response(status, dumps(obj).encode("utf-8"))


def response_head(status: int, headers: List[Tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}"] + [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def connection_header(keep_alive: bool) -> Tuple[str, str]:
    return (
        ("Keep-Alive", f"timeout={int(KEEP_ALIVE_S)}, max={KEEP_ALIVE_MAX}") if keep_alive else ("Connection", "close")
    )


class EventStream:
    """Server-sent events over chunked transfer encoding, one HTTP chunk per event like cpp-httplib."""

    def __init__(
        self, req: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, keep_alive: bool
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.chunked = req.version != "HTTP/1.0"
        self.keep_alive = keep_alive and self.chunked
        self.started = False
        self.origin = req.headers.get("origin", "")

    def start(self) -> None:
        headers = [("Server", "llama.cpp"), ("Access-Control-Allow-Origin", self.origin)]
        headers += [("X-Accel-Buffering", "no"), ("Content-Type", "text/event-stream")]
        if self.chunked:
            headers.append(("Transfer-Encoding", "chunked"))
        headers.append(connection_header(self.keep_alive))
        self.writer.write(response_head(200, headers))
        self.started = True

    def gone(self) -> bool:
        """The client hung up (llama.cpp then cancels the request)."""
        return self.writer.transport.is_closing() or self.reader.at_eof()

    def send(self, event: str) -> None:
        data = f"data: {event}\n\n".encode("utf-8")
        self.writer.write(b"%x\r\n%s\r\n" % (len(data), data) if self.chunked else data)

    def finish(self) -> None:
        if self.chunked:
            self.writer.write(b"0\r\n\r\n")
