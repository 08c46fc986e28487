"""Endpoint policy, in one place: the URL a `--host/--port` or an `--endpoint` means, which API key is
sent, and what "ready" means. Every command that talks to a server goes through here."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Optional
from urllib.parse import urlsplit

from .settings import setting
from .utils import StrEnum, UserError

if TYPE_CHECKING:
    from .http import HttpClient

LOOPBACK = "127.0.0.1"
# What users paste from their client configuration: the server's base URL is what is left.
API_SUFFIXES = ("/v1/chat/completions", "/v1/completions", "/completion", "/v1")


def connect_host(host: Optional[str]) -> str:
    """The address to connect to for a server bound to `host`: wildcards and `localhost` mean loopback
    (`localhost` may resolve to ::1 first while llama-server listens on 127.0.0.1 only)."""
    h = (host or "").strip()
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
    if h in ("", "0.0.0.0", "localhost"):
        return LOOPBACK
    if h == "::":
        return "::1"
    return h


def url_host(host: str) -> str:
    """`host` as it appears in a URL (IPv6 literals in brackets)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def url_for(host: Optional[str], port: int) -> str:
    """Base URL of the server listening on host:port, e.g. http://127.0.0.1:11433."""
    return f"http://{url_host(connect_host(host))}:{port}"


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host in ("localhost", "::1", "0.0.0.0") or host.startswith("127.")


def normalize_endpoint(url: str, flag: str = "--endpoint") -> str:
    """Validate an http(s) URL and return the server's base URL (API paths and trailing / removed)."""
    text = (url or "").strip()
    example = "such as http://127.0.0.1:11433"
    try:
        parts = urlsplit(text)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        raise UserError(f"{flag} must be an http(s) URL {example}, got '{url}'") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"{flag} must be an http(s) URL {example}, got '{url}'")
    try:
        parts.port
    except ValueError:
        raise UserError(f"{flag} has an invalid port: '{url}'") from None
    if parts.query or parts.fragment:
        raise UserError(f"{flag} must be the server's base URL {example}, without '?' or '#': '{url}'")
    path = parts.path.rstrip("/")
    for suffix in API_SUFFIXES:
        if path.endswith(suffix):
            path = path[: -len(suffix)]
            break
    return f"{parts.scheme}://{parts.netloc}{path}"


def check_api_key(key: Optional[str], origin: str = "--api-key") -> Optional[str]:
    """An API key must fit in an HTTP header (latin-1, no control characters); empty means none."""
    if not key:
        return None
    try:
        key.encode("latin-1")
    except UnicodeEncodeError:
        raise UserError(f"{origin} contains characters that cannot be sent in an HTTP header (use ASCII)") from None
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise UserError(f"{origin} contains control characters (a stray newline?)")
    return key


def client_api_key(explicit: Optional[str]) -> Optional[str]:
    """The key sent to a server: --api-key, else LLAMA_API_KEY (environment or .env), else OPENAI_API_KEY."""
    if explicit:
        return check_api_key(explicit)
    for name in ("LLAMA_API_KEY", "OPENAI_API_KEY"):
        value = setting(name) if name == "LLAMA_API_KEY" else os.environ.get(name)
        if value:
            return check_api_key(value, name)
    return None


def _flag_value(args: Iterable[str], flag: str) -> Optional[str]:
    items = list(args)
    for i, arg in enumerate(items):
        if arg == flag and i + 1 < len(items):
            return items[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def server_api_key(explicit: Optional[str], extra_args: Iterable[str] = ()) -> Optional[str]:
    """The key a server we start will require, so our own readiness checks and monitor can send it:
    --api-key, else `--api-key K` among the raw llama-server flags, else LLAMA_ARG_API_KEY (which
    llama-server reads itself)."""
    key = explicit or _flag_value(extra_args, "--api-key") or os.environ.get("LLAMA_ARG_API_KEY")
    return check_api_key(key)


class Readiness(StrEnum):
    READY = "ready"
    LOADING = "loading"  # the port is open, the model is not loaded yet (HTTP 503)
    UNAUTHORIZED = "unauthorized"  # 401/403: a missing or wrong API key
    NOT_A_SERVER = "not-a-server"  # something answers HTTP, but not like llama-server / OpenAI
    UNREACHABLE = "unreachable"  # connection refused, reset or timed out


@dataclass
class ReadyCheck:
    state: Readiness
    detail: str = ""

    @property
    def ready(self) -> bool:
        return self.state is Readiness.READY


def check_ready(client: "HttpClient", timeout: float = 2.0) -> ReadyCheck:
    """Ready = /health answers 200 and /v1/models answers 200.

    The port opens before the model is loaded, and while it loads llama-server answers 503 on both
    (some older builds answer /v1/models early, hence both). An OpenAI-compatible server without
    /health (404) is ready when /v1/models is. /health needs no key on llama-server; /v1/models does.
    """
    from .http import HttpError

    try:
        health = client.get("/health", timeout=timeout).status
        if health == 503:
            return ReadyCheck(Readiness.LOADING, "loading the model (HTTP 503)")
        if health in (401, 403):
            return ReadyCheck(Readiness.UNAUTHORIZED, f"/health answered HTTP {health}")
        models = client.get("/v1/models", timeout=timeout).status
    except HttpError as exc:
        return ReadyCheck(Readiness.UNREACHABLE, str(exc).split(": ", 1)[-1])
    if models == 503:
        return ReadyCheck(Readiness.LOADING, "loading the model (HTTP 503)")
    if models in (401, 403):
        return ReadyCheck(Readiness.UNAUTHORIZED, f"/v1/models answered HTTP {models}")
    if models == 200 and health in (200, 404):
        return ReadyCheck(Readiness.READY)
    return ReadyCheck(Readiness.NOT_A_SERVER, f"/health answered HTTP {health}, /v1/models HTTP {models}")
