"""What a proxy runs with (`ProxyConfig`), its defaults, and the command line that starts one as a child.

Light on purpose: imported at `--help` time and by the runner, so nothing heavy here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Set
from urllib.parse import urlsplit

from tools.llama_bench.server.ports import check_bindable
from tools.llama_bench.settings import state_base
from tools.llama_bench.utils import StrEnum, UserError

from .defaults import (  # noqa: F401  (re-exported: the proxy's defaults live there)
    DEFAULT_CLIENT_TIMEOUT,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_BODY,
    DEFAULT_PROXY_PORT,
    DEFAULT_READ_TIMEOUT,
    DEFAULT_RECENT,
    DEFAULT_RETENTION_DAYS,
)


class InjectMode(StrEnum):
    """Whether streaming OpenAI requests get `stream_options.include_usage` added upstream."""

    AUTO = "auto"  # only when the upstream is not llama.cpp (llama.cpp always reports timings)
    ALWAYS = "always"
    NEVER = "never"


def _loopback(host: str) -> Set[int]:
    """The address families in which `host` is (or, listening on all, includes) this machine's loopback."""
    if host.startswith("127.") or host == "0.0.0.0":
        return {4}
    if host == "::1":
        return {6}
    if host in ("localhost", "", "::") or host.endswith(".localhost"):  # "::" takes IPv4 too (dual stack)
        return {4, 6}
    return set()


def same_listener(host: str, port: int, upstream: str) -> bool:
    """Whether `upstream` names the proxy's own socket under another name (localhost for 127.0.0.1, a
    loopback address while it listens on all). Names that only DNS knows are caught at run time (upstream.py)."""
    parts = urlsplit(upstream)
    if (parts.port or (443 if parts.scheme == "https" else 80)) != port:
        return False
    up, me = (parts.hostname or "").lower(), host.strip().strip("[]").lower()
    return up == me or bool(_loopback(up) & _loopback(me))


def default_db_path() -> Path:
    return state_base() / "proxy" / "usage.sqlite3"


@dataclass
class ProxyConfig:
    upstream: str  # base URL, already normalized (endpoint.normalize_endpoint)
    host: str = "127.0.0.1"
    port: int = DEFAULT_PROXY_PORT
    api_key: Optional[str] = None  # the proxy's own key: clients must send it
    upstream_api_key: Optional[str] = None  # sent upstream instead of the client's key
    clients_file: Optional[Path] = None
    db_path: Optional[Path] = None  # None: default_db_path()
    history: bool = True  # False: no SQLite history at all
    retention_days: float = DEFAULT_RETENTION_DAYS
    max_body: int = DEFAULT_MAX_BODY
    inject_usage: InjectMode = InjectMode.AUTO
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT
    client_timeout: float = DEFAULT_CLIENT_TIMEOUT
    recent: int = DEFAULT_RECENT
    log_requests: bool = True  # one `[req]` line per finished request on stdout
    parent_pid: Optional[int] = None  # exit when this process is gone (set by ManagedProxy)

    @property
    def database(self) -> Path:
        return self.db_path if self.db_path is not None else default_db_path()

    def check(self) -> None:
        """What must hold before a proxy starts: an upstream that is not the proxy itself, a port it can bind."""
        if same_listener(self.host, self.port, self.upstream):
            raise UserError(f"--upstream {self.upstream} is the proxy's own address; point it at the server")
        if self.max_body < 1024:
            raise UserError("--max-body must be at least 1 KiB")
        check_bindable(self.host, self.port)

    def argv(self) -> List[str]:
        """The flags of `python -m tools.llama_run.proxy` that reproduce this configuration.

        Keys travel in the environment (see process.py), never on the command line where `ps` shows them.
        """
        args = ["--upstream", self.upstream, "--host", self.host, "--port", str(self.port)]
        if self.clients_file is not None:
            args += ["--clients", str(self.clients_file)]
        if not self.history:
            args.append("--no-history")
        elif self.db_path is not None:
            args += ["--db", str(self.db_path)]
        args += ["--retention-days", f"{self.retention_days:g}", "--max-body", str(self.max_body)]
        args += ["--inject-usage", str(self.inject_usage), "--recent", str(self.recent)]
        args += ["--connect-timeout", f"{self.connect_timeout:g}", "--read-timeout", f"{self.read_timeout:g}"]
        args += ["--client-timeout", f"{self.client_timeout:g}"]
        if not self.log_requests:
            args.append("--quiet")
        if self.parent_pid is not None:
            args += ["--parent-pid", str(self.parent_pid)]
        return args
