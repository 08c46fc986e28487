"""The one server the proxy forwards to: a keep-alive connection pool, its URL, whether it is llama.cpp,
which headers are hop-by-hop (never forwarded), and what a failed exchange with it tells the client."""

from __future__ import annotations

import asyncio
from typing import Any, Dict, Optional, Set, Tuple

from .config import ProxyConfig

HOP_BY_HOP = frozenset(
    ("connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te")
    + ("trailer", "transfer-encoding", "upgrade")
)
REQUEST_DROP = HOP_BY_HOP | {"host", "content-length", "expect"}

Failure = Tuple[int, str, str, Dict[str, str]]  # status, message, error type, extra headers


def _listed_in_connection(headers: Any) -> Set[str]:
    """Headers named in `Connection:` are hop-by-hop too (RFC 9110 7.6.1)."""
    names: Set[str] = set()
    for value in headers.getall("Connection", ()):
        names.update(token.strip().lower() for token in value.split(",") if token.strip())
    return names


def request_headers(headers: Any, upstream_key: Optional[str]) -> Any:
    from multidict import CIMultiDict

    drop = REQUEST_DROP | _listed_in_connection(headers)
    out: Any = CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in drop)
    if upstream_key:
        out.popall("Authorization", None)
        out.popall("X-Api-Key", None)
        out["Authorization"] = f"Bearer {upstream_key}"
    return out


def response_headers(headers: Any, keep_length: bool) -> Any:
    from multidict import CIMultiDict

    drop = HOP_BY_HOP | _listed_in_connection(headers)
    if not keep_length:
        drop = drop | {"content-length"}
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in drop)


class Upstream:
    """The one server the proxy forwards to: a keep-alive connection pool, and whether it is llama.cpp."""

    def __init__(self, config: ProxyConfig) -> None:
        self.base = config.upstream.rstrip("/")
        self.key = config.upstream_api_key
        self.config = config
        self.is_llama = True  # until an answer says otherwise (llama-server sends `Server: llama.cpp`)
        self.session: Any = None

    async def open(self) -> None:
        import aiohttp

        # Idle connections are dropped before llama-server's own 5 s keep-alive timeout closes them.
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=2.0, ttl_dns_cache=300)
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.config.connect_timeout, sock_read=self.config.read_timeout
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            auto_decompress=False,  # bytes pass as they are, compressed or not
            trust_env=False,  # an HTTP proxy from the environment must never sit behind us
            cookie_jar=aiohttp.DummyCookieJar(),  # one client's cookies must never reach another
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        )

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    def url(self, raw_path: str) -> Any:
        from yarl import URL

        # The client's path as it came (percent-encoding included), after the upstream's base URL: a path
        # like //other.host/x stays a path on the upstream.
        return URL(self.base + raw_path, encoded=True)

    def learn(self, headers: Any) -> None:
        self.is_llama = headers.get("Server", "").startswith("llama.cpp")

    async def send(self, method: str, raw_path: str, headers: Any, data: Any, can_retry: bool) -> Any:
        import aiohttp

        url = self.url(raw_path)
        try:
            return await self.session.request(method, url, headers=headers, data=data, allow_redirects=False)
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            # A pooled keep-alive connection the server had just closed: the request never reached it.
            if not can_retry or isinstance(exc, aiohttp.ClientConnectorError):
                raise
        return await self.session.request(method, url, headers=headers, data=data, allow_redirects=False)


def upstream_failure(exc: BaseException, base: str, read_timeout: float) -> Failure:
    """A failed exchange with the upstream as the client's answer: never a hang, never a traceback."""
    import aiohttp

    if isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)):
        return (
            503,
            f"upstream {base} is not reachable (down or restarting?)",
            "upstream_unreachable",
            {"Retry-After": "1"},
        )
    if isinstance(exc, (aiohttp.ServerTimeoutError, asyncio.TimeoutError)):
        return 504, f"upstream {base} sent nothing for {read_timeout:g} s", "upstream_timeout", {}
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return 502, f"upstream {base} closed the connection without answering", "upstream_error", {}
    return 502, f"upstream {base} failed: {type(exc).__name__}: {exc}"[:300], "upstream_error", {}
