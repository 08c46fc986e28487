"""Small synchronous HTTP helpers (requests) for probes and polling; every call has a timeout."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any, Dict, Optional

from .settings import DEFAULT_HTTP_TIMEOUT


@dataclass
class Response:
    status: int
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


class HttpError(Exception):
    """The server could not be reached (connection refused, timeout, reset)."""


class HttpClient:
    """A keep-alive session for repeated polling of one server; safe to use from several threads."""

    def __init__(self, base_url: str, api_key: Optional[str] = None, timeout: float = DEFAULT_HTTP_TIMEOUT) -> None:
        import requests  # lazy: keeps CLI start-up fast

        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._requests = requests
        self._session = requests.Session()
        self._session.trust_env = False  # a proxy from the environment must never sit between us and localhost
        self._headers: Dict[str, str] = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._lock = threading.Lock()

    def request(self, method: str, path: str, body: Optional[Any] = None, timeout: Optional[float] = None) -> Response:
        url = self.base_url + path
        try:
            with self._lock:
                resp = self._session.request(
                    method, url, json=body, headers=self._headers, timeout=timeout or self.timeout
                )
            return Response(resp.status_code, resp.text)
        except self._requests.RequestException as exc:
            raise HttpError(f"{method} {url}: {_short_reason(exc)}") from exc

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
        self._session.close()


def _short_reason(exc: Exception) -> str:
    text = str(exc)
    for marker in ("Connection refused", "timed out", "Name or service not known", "Connection reset"):
        if marker in text:
            return marker.lower()
    return text.splitlines()[0][:200] if text else type(exc).__name__
