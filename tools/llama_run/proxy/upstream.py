"""The one server the proxy forwards to: a keep-alive connection pool, its URL, whether it is llama.cpp,
which headers are hop-by-hop (never forwarded), and what a failed exchange with it tells the client."""

from __future__ import annotations

import asyncio
import secrets
import sys
from typing import Any, Awaitable, Dict, Optional, Set, Tuple, TypeVar

from .config import ProxyConfig

HOP_BY_HOP = frozenset(
    ("connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te")
    + ("trailer", "transfer-encoding", "upgrade")
)
REQUEST_DROP = HOP_BY_HOP | {"host", "content-length", "expect"}
# Each proxy adds its instance id here on the way up; a request that comes back with it is a loop (an
# upstream that is the proxy under another name, or a chain of proxies that ends at the first).
LOOP_HEADER = "X-Llama-Proxy-Hop"

Failure = Tuple[int, str, str, Dict[str, str]]  # status, message, error type, extra headers
T = TypeVar("T")

if sys.version_info >= (3, 11):

    async def within(seconds: float, awaitable: Awaitable[T]) -> T:
        """`await awaitable`, or asyncio.TimeoutError after `seconds` (3.11+: a timer, no extra task)."""
        async with asyncio.timeout(seconds):
            return await awaitable

else:  # pragma: no cover - Python 3.10

    async def within(seconds: float, awaitable: Awaitable[T]) -> T:
        return await asyncio.wait_for(awaitable, seconds)


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
        self.instance = secrets.token_hex(8)

    def looped(self, headers: Any) -> bool:
        """Whether a request has been through this proxy already."""
        return self.instance in headers.getall(LOOP_HEADER, ())

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
        # The answer's head has a total deadline: a byte now and then (which resets the read timeout)
        # must not hold a request forever. Its body is bounded by silence (a generation may take long).
        deadline = asyncio.get_running_loop().time() + self.config.read_timeout
        headers.add(LOOP_HEADER, self.instance)

        def request() -> Awaitable[Any]:
            return self.session.request(method, url, headers=headers, data=data, allow_redirects=False)

        try:
            return await within(self.config.read_timeout, request())
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            # A pooled keep-alive connection the server had just closed: the request never reached it.
            if not can_retry or isinstance(exc, aiohttp.ClientConnectorError):
                raise
        return await within(deadline - asyncio.get_running_loop().time(), request())


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
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return 504, f"upstream {base} sent nothing for {read_timeout:g} s", "upstream_timeout", {}
    if isinstance(exc, asyncio.TimeoutError):
        return 504, f"upstream {base} did not answer within {read_timeout:g} s", "upstream_timeout", {}
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return 502, f"upstream {base} closed the connection without answering", "upstream_error", {}
    return 502, f"upstream {base} failed: {type(exc).__name__}: {exc}"[:300], "upstream_error", {}
