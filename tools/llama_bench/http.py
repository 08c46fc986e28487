"""Small synchronous HTTP client for probes and polling. Every exchange — connect, send, headers, body —
has a *total* deadline: a server that trickles a byte every few seconds cannot hold a call longer than
its timeout (a watchdog shuts the socket down at the deadline), and answers are size-bounded."""

from __future__ import annotations

import heapq
import http.client
import itertools
import json
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Set, Tuple
from urllib.parse import urlsplit

from .settings import DEFAULT_HTTP_TIMEOUT

MAX_BODY = 64 << 20  # more than any /metrics, /slots or /props answer; a bigger one is not a server we know


@dataclass
class Response:
    status: int
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


class HttpError(Exception):
    """The server could not be reached or did not answer in time (refused, reset, timed out, too large)."""


class _Watchdog:
    """One daemon thread that shuts down the sockets of exchanges that passed their deadline; a blocked
    recv() in the caller's thread then returns at once."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: List[Tuple[float, int]] = []
        self._socks: Dict[int, socket.socket] = {}
        self.fired: Set[int] = set()
        self._ids = itertools.count()
        self._thread: Optional[threading.Thread] = None

    def arm(self, sock: socket.socket, deadline: float) -> int:
        with self._cond:
            token = next(self._ids)
            self._socks[token] = sock
            heapq.heappush(self._heap, (deadline, token))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="http-deadlines", daemon=True)
                self._thread.start()
            self._cond.notify()
            return token

    def disarm(self, token: int) -> bool:
        """Forget the exchange; True when its deadline had already fired."""
        with self._cond:
            self._socks.pop(token, None)
            if token in self.fired:
                self.fired.discard(token)
                return True
            return False

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][1] not in self._socks:
                    heapq.heappop(self._heap)  # disarmed
                if not self._heap:
                    self._cond.wait()
                    continue
                deadline, token = self._heap[0]
                delay = deadline - time.monotonic()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                heapq.heappop(self._heap)
                sock = self._socks.pop(token, None)
                if sock is not None:
                    self.fired.add(token)
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass


_WATCHDOG = _Watchdog()
# A keep-alive connection the server closed while idle fails like this on reuse; the request never
# reached the server, so it is sent again once on a fresh connection.
_STALE = (http.client.RemoteDisconnected, http.client.BadStatusLine, ConnectionResetError, BrokenPipeError)


class HttpClient:
    """A keep-alive connection to one server; safe to use from several threads (one exchange at a time)."""

    def __init__(
        self,
        base_url: str,
        api_key: Optional[str] = None,
        timeout: float = DEFAULT_HTTP_TIMEOUT,
        max_body: int = MAX_BODY,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_body = max_body
        parts = urlsplit(self.base_url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        self._headers: Dict[str, str] = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._conn: Optional[http.client.HTTPConnection] = None
        self._lock = threading.Lock()

    def request(self, method: str, path: str, body: Optional[Any] = None, timeout: Optional[float] = None) -> Response:
        """One exchange, finished within `timeout` seconds (the client's default when None)."""
        total = timeout or self.timeout
        deadline = time.monotonic() + total
        data = None if body is None else json.dumps(body).encode("utf-8")
        url = self.base_url + path
        with self._lock:
            for attempt in (0, 1):
                reused = self._conn is not None
                try:
                    return self._exchange(method, path, data, deadline)
                except _STALE as exc:
                    self._reset()
                    if reused and attempt == 0 and time.monotonic() < deadline:
                        continue
                    raise HttpError(f"{method} {url}: {_reason(exc, total)}") from exc
                except (OSError, http.client.HTTPException, _TimedOut) as exc:
                    self._reset()
                    raise HttpError(f"{method} {url}: {_reason(exc, total)}") from exc
        raise AssertionError("unreachable")

    def _connect(self, deadline: float) -> http.client.HTTPConnection:
        remaining = max(0.001, deadline - time.monotonic())
        if self._https:
            import ssl

            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                self._host, self._port, timeout=remaining, context=ssl.create_default_context()
            )
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=remaining)
        conn.connect()
        self._conn = conn
        return conn

    def _exchange(self, method: str, path: str, data: Optional[bytes], deadline: float) -> Response:
        conn = self._conn or self._connect(deadline)
        sock = conn.sock
        assert sock is not None
        token = _WATCHDOG.arm(sock, deadline)
        try:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            headers = dict(self._headers)
            if data is not None:
                headers["Content-Type"] = "application/json"
            conn.request(method, self._prefix + path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read(self.max_body + 1)
            too_large = len(raw) > self.max_body
            if too_large or resp.will_close:
                self._reset()
        except (OSError, http.client.HTTPException):
            if _WATCHDOG.disarm(token):
                raise _TimedOut() from None
            raise
        if _WATCHDOG.disarm(token):
            self._reset()
            raise _TimedOut()
        if too_large:
            raise HttpError(f"{method} {self.base_url}{path}: answer larger than {self.max_body >> 20} MiB")
        return Response(resp.status, raw.decode("utf-8", errors="replace"))

    def _reset(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except OSError:
                pass
            self._conn = None

    def get(self, path: str, timeout: Optional[float] = None) -> Response:
        return self.request("GET", path, timeout=timeout)

    def post(self, path: str, body: Any, timeout: Optional[float] = None) -> Response:
        return self.request("POST", path, body=body, timeout=timeout)

    def get_json(self, path: str, timeout: Optional[float] = None) -> Optional[Any]:
        """GET and decode JSON; None when the status is not 200 or the body is not JSON."""
        resp = self.get(path, timeout=timeout)
        if resp.status != 200:
            return None
        try:
            return resp.json()
        except ValueError:
            return None

    def close(self) -> None:
        with self._lock:
            self._reset()


class _TimedOut(Exception):
    pass


def _reason(exc: BaseException, total: float) -> str:
    if isinstance(exc, (_TimedOut, socket.timeout, TimeoutError)):
        return f"timed out (no complete answer within {total:g} s)"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "name or service not known"
    if isinstance(exc, (ConnectionResetError, http.client.RemoteDisconnected, BrokenPipeError)):
        return "connection reset"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    text = str(exc)
    return text.splitlines()[0][:200] if text else type(exc).__name__
