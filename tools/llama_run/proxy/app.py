"""The proxy server: safety checks, routing (its own /proxy/ endpoints, metered completions, everything else
passed through), and its life cycle (start, signals, the parent watch, a clean stop that writes the history).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import signal
import sys
from typing import Any, List, Optional

from tools.llama_bench.endpoint import url_for
from tools.llama_bench.utils import ExitStatus, UserError
from tools.llama_bench.version import __version__

from .config import ProxyConfig
from .errors import error_response
from .forward import Forwarder
from .identity import ClientsTable, key_hash, load_clients, request_key
from .ledger import Ledger
from .limits import DAY, Limiter
from .metrics import ProxyMetrics
from .records import METERED_PATHS, RequestRecord, req_line
from .store import UsageStore
from .upstream import Upstream

PUBLIC_PATHS = frozenset(("/health", "/v1/health", "/proxy/health"))  # no key needed, as on llama-server
PARENT_CHECK_S = 0.5
SHUTDOWN_GRACE_S = 2.0


class LineLog:
    """A RequestSink printing one `[req]` line per finished request."""

    def finished(self, rec: RequestRecord) -> None:
        try:
            print(req_line(rec), flush=True)
        except (OSError, ValueError):
            pass  # a closed stdout must not stop the proxy


class ProxyApp:
    def __init__(self, config: ProxyConfig) -> None:
        self.config = config
        self.table = load_clients(config.clients_file) if config.clients_file is not None else ClientsTable()
        self.ledger = Ledger(config.recent, config.upstream)
        self.limiter = Limiter(self.table.limits_for)
        self.metrics = ProxyMetrics(self.ledger)
        self.store: Optional[UsageStore] = None
        if config.history:
            self.store = UsageStore(config.database, config.retention_days)
            self.limiter.seed(self.store.tokens_since(self.limiter.clock() - DAY))
        self.ledger.sinks = [self.metrics, self.limiter]
        if self.store is not None:
            self.ledger.sinks.append(self.store)
        if config.log_requests:
            self.ledger.sinks.append(LineLog())
        self.upstream = Upstream(config)
        self.forwarder = Forwarder(config, self.upstream, self.ledger, self.limiter, self.table)
        self.stop_event: Optional[asyncio.Event] = None

    # -- routing ----------------------------------------------------------------------------------

    def authorized(self, request: Any) -> bool:
        """The proxy's own --api-key, or a key listed in --clients (each client may have its own)."""
        key = request_key(request.headers)
        if key is None:
            return False
        if hmac.compare_digest(key.encode("utf-8"), (self.config.api_key or "").encode("utf-8")):
            return True
        return key_hash(key) in self.table.by_key_hash

    async def handle(self, request: Any) -> Any:
        # Only the upstream is served: absolute URIs (`GET http://other/`), CONNECT and `*` are refused.
        if request.method == "CONNECT":
            return error_response(405, "CONNECT is refused: this proxy only forwards to its upstream", "not_allowed")
        if not request.raw_path.startswith("/"):
            return error_response(
                400, "absolute URIs are refused: this proxy only forwards to its upstream", "invalid_request_error"
            )
        if self.upstream.looped(request.headers):
            return error_response(
                508, "the upstream forwards back to this proxy (a loop): point --upstream at the server", "loop"
            )
        path = request.path
        if self.config.api_key and path not in PUBLIC_PATHS and request.method != "OPTIONS":
            if not self.authorized(request):
                return error_response(401, "Invalid API Key", "authentication_error")
        try:
            if path.startswith("/proxy/"):
                return self.own(request, path)
            endpoint = METERED_PATHS.get(path) if request.method == "POST" else None
            if endpoint is None:
                return await self.forwarder.passthrough(request)
            return await self.forwarder.metered(request, endpoint)
        except (asyncio.CancelledError, ConnectionError):
            raise
        except Exception as exc:  # a bug of ours: one line in the log, a 500 for the client
            print(f"llama-proxy: internal error on {request.method} {path}: {exc!r}", file=sys.stderr, flush=True)
            logging.getLogger("llama-proxy").exception("internal error")
            return error_response(500, f"proxy internal error: {type(exc).__name__}", "server_error")

    def own(self, request: Any, path: str) -> Any:
        from aiohttp import web

        if request.method not in ("GET", "HEAD"):
            return error_response(405, f"{path} only answers GET", "not_allowed")
        if path == "/proxy/health":
            return web.json_response(
                {"status": "ok", "pid": os.getpid(), "upstream": self.config.upstream, "version": __version__}
            )
        if path == "/proxy/requests":
            try:
                recent = max(0, int(request.query.get("recent", 50)))
            except ValueError:
                return error_response(400, "recent must be a whole number", "invalid_request_error")
            return web.Response(
                body=json.dumps(self.ledger.snapshot(recent)).encode("utf-8"), content_type="application/json"
            )
        if path == "/proxy/metrics":
            body, content_type = self.metrics.render()
            return web.Response(body=body, headers={"Content-Type": content_type})
        return error_response(404, f"no such proxy endpoint: {path}", "not_found_error")

    # -- life cycle -------------------------------------------------------------------------------

    async def _watch_parent(self) -> None:
        parent = self.config.parent_pid
        assert parent is not None and self.stop_event is not None
        while not self.stop_event.is_set():
            if os.getppid() != parent:  # reparented: whoever started us is gone (also where no PDEATHSIG)
                print("llama-proxy: the process that started it is gone; stopping", file=sys.stderr, flush=True)
                self.stop_event.set()
                return
            await asyncio.sleep(PARENT_CHECK_S)

    async def _learn_upstream(self) -> None:
        """One early look at the upstream's `Server` header (whether usage needs injecting); best effort."""
        import aiohttp

        try:
            async with self.upstream.session.get(
                self.upstream.url("/health"), timeout=aiohttp.ClientTimeout(total=5)
            ) as resp:
                self.upstream.learn(resp.headers)
        except (aiohttp.ClientError, asyncio.TimeoutError):
            pass  # down for now: learnt from the first answer instead

    async def run(self) -> int:
        from aiohttp import web

        cfg = self.config
        loop = asyncio.get_running_loop()
        self.stop_event = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self.stop_event.set)
        await self.upstream.open()
        await self._learn_upstream()  # before the first client: whether usage must be injected (5 s at most)
        server = web.Server(
            self.handle,
            handler_cancellation=True,  # a client that goes away cancels its request (and the upstream's)
            access_log=None,
            keepalive_timeout=cfg.client_timeout,  # also bounds a request head that never completes
            auto_decompress=False,
            max_field_size=65536,
        )
        runner = web.ServerRunner(server, shutdown_timeout=SHUTDOWN_GRACE_S)
        await runner.setup()
        site = web.TCPSite(runner, cfg.host, cfg.port, backlog=1024, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            await self.upstream.close()
            raise UserError(f"cannot listen on {cfg.host}:{cfg.port}: {exc.strerror}") from None
        tasks: List[Any] = []
        if cfg.parent_pid is not None:
            tasks.append(asyncio.ensure_future(self._watch_parent()))
        history = f"history {cfg.database}" if self.store is not None else "no history"
        print(
            f"llama-proxy listening on {url_for(cfg.host, cfg.port)}, forwarding to {cfg.upstream} ({history})",
            flush=True,
        )
        if self.store is not None:
            self.store.start()
        try:
            await self.stop_event.wait()
        finally:
            for task in tasks:
                task.cancel()
            await runner.cleanup()  # in-flight requests are cancelled: recorded as aborted
            await self.upstream.close()
            if self.store is not None:
                self.store.close()
        return ExitStatus.OK


def binds_loopback(host: str) -> bool:
    h = host.strip().strip("[]")
    return h in ("localhost", "::1") or h.startswith("127.")


def warn_if_exposed(config: ProxyConfig) -> None:
    if not binds_loopback(config.host):
        if not config.api_key:
            print(
                f"llama-proxy: warning: listening on {config.host}, not loopback, without --api-key: anyone who can "
                "reach this port can use the server",
                file=sys.stderr,
                flush=True,
            )


def serve(config: ProxyConfig) -> int:
    """Run the proxy until SIGTERM/SIGINT/SIGHUP (or the parent's death); the exit status."""
    config.check()
    warn_if_exposed(config)
    # aiohttp logs malformed requests from clients with a traceback; they are answered 400 and that is all.
    logging.getLogger("aiohttp").setLevel(logging.CRITICAL)
    app = ProxyApp(config)
    try:
        return asyncio.run(app.run())
    finally:
        sys.stdout.flush()
