"""`llama-run run`: start the server, wait until it is ready, show live stats, always stop it."""

from __future__ import annotations

import signal
import sys
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Literal, Optional, Tuple

from tools.llama_bench import stdio, stopping
from tools.llama_bench.server.config import LaunchOptions, ServerConfig
from tools.llama_bench.server.managed import ManagedServer
from tools.llama_bench.server.preflight import describe_choice, preflight
from tools.llama_bench.utils import ExitStatus, UserError, user_path

from .session import Session, StopReason

if TYPE_CHECKING:
    from .proxy.process import ManagedProxy


@dataclass
class RunOptions:
    config: ServerConfig
    launch: LaunchOptions
    ui: Optional[Literal["tui", "plain"]] = None  # None: tui on a terminal, else plain
    interval: float = 1.0
    stats_interval: float = 5.0
    duration: Optional[float] = None
    detach: bool = False
    skip_vram_check: bool = False
    metrics_url: Optional[str] = None  # read /metrics and /slots here instead of from the server
    proxy: bool = False  # the token-meter proxy on the public --host/--port, the server behind it
    clients_file: Optional[str] = None  # the proxy's --clients (names and limits by API key)


def _live_view(session: Session, use_tui: bool, proxy: Optional["ManagedProxy"]) -> StopReason:
    if proxy is not None:
        session.companion = proxy  # the views stop when it exits, as when the server does
    if use_tui:
        from .tui import run_tui

        return run_tui(session)
    from .plain import run_plain

    return run_plain(session)


def _behind_proxy(opts: RunOptions) -> Tuple[ServerConfig, Optional["ManagedProxy"]]:
    """With the proxy, llama-server moves to a free port on 127.0.0.1 and the proxy takes the public
    --host/--port (checked before anything starts); clients keep using the public port."""
    if not opts.proxy:
        return opts.config, None
    if opts.detach:
        raise UserError("--detach leaves only the server running: use --proxy off with it")
    from tools.llama_bench.server.ports import check_bindable, free_port

    from .proxy.config import ProxyConfig
    from .proxy.process import ManagedProxy

    public = opts.config
    check_bindable(public.host, public.port)
    internal = replace(public, host="127.0.0.1", port=free_port())
    key = internal.client_api_key
    clients = user_path(opts.clients_file) if opts.clients_file else None
    if clients is not None:
        from .proxy.identity import check_clients

        check_clients(clients)  # a mistake in it is said now, not after the model has loaded
    proxy = ManagedProxy(
        ProxyConfig(
            upstream=internal.base_url,
            host=public.host,
            port=public.port,
            api_key=key,  # clients send the server's key to the proxy, as they would to the server
            upstream_api_key=key,
            clients_file=clients,
            log_requests=False,  # the live view shows the requests itself
        )
    )
    return internal, proxy


def run(opts: RunOptions) -> int:
    checked = preflight(opts.config, skip_fit_check=opts.skip_vram_check)  # before anything starts
    config, proxy = _behind_proxy(opts)
    public_port = opts.config.port if proxy is not None else None
    server = ManagedServer(config, allow_multi_server=opts.launch.allow_multi_server, public_port=public_port)
    use_tui = opts.ui == "tui" or (opts.ui is None and sys.stdout.isatty())
    reason = StopReason.USER
    try:
        print(f"Starting llama-server: {' '.join(server.command)}", flush=True)
        for line in checked.lines():
            print(line, flush=True)
        server.start(die_with_us=not opts.detach)
        print(f"  pid {server.pid}, log {server.log_path}", flush=True)
        if proxy is not None:
            proxy.start()
            print(f"  token-meter proxy: pid {proxy.pid} on {proxy.base_url}, log {proxy.log_path}", flush=True)
        waited = server.wait_ready(opts.launch.startup_timeout, on_wait=_loading_notice())
        if proxy is not None:
            proxy.wait_ready(timeout=30)
            print(f"llama-server ready at {proxy.base_url} (proxy; the server itself: {server.base_url}) "
                  f"after {waited:.1f} s", flush=True)  # fmt: skip
        else:
            print(f"llama-server ready at {server.base_url} after {waited:.1f} s", flush=True)
        if opts.config.fit == "on":
            chosen = describe_choice(server.props(), server.log_lines())
            if chosen:
                print(f"  llama-server's --fit chose: {chosen}", flush=True)
        if opts.detach:
            server.detach()
            print(f"Detached: llama-server keeps running (pid {server.pid}); stop it with ./llama-run stop-all")
            return ExitStatus.OK
        session = Session(
            server=server,
            interval=opts.interval,
            stats_interval=opts.stats_interval,
            deadline=time.monotonic() + opts.duration if opts.duration else None,
            model=checked.info,
            metrics_url=opts.metrics_url,
            proxy_url=proxy.base_url if proxy is not None else None,
        )
        reason = _live_view(session, use_tui, proxy)
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM, SIGHUP (tools.llama_bench.stopping)
        print("\nStopping llama-server ...", file=sys.stderr, flush=True)
    finally:
        stopping.ignore()  # a second Ctrl-C must not abandon the server half-stopped
        if proxy is not None:
            proxy.stop()  # first: clients get "connection refused", not a proxy that cannot reach the server
        code = _stop(server)
    if reason is StopReason.SERVER_EXIT:
        # The server died on its own: its exit code, or 1 when it says nothing (killed by a signal).
        return code if code is not None and code > 0 else ExitStatus.FAILED
    if reason is StopReason.PROXY_EXIT:
        raise UserError("the token-meter proxy exited on its own; the server was stopped (see its log)", 1)
    return ExitStatus.OK


def _stop(server: ManagedServer) -> Optional[int]:
    """Stop the server (unless detached or never started) and say how it exited."""
    if server.proc is None or server.detached:
        return None
    code = server.stop()
    how = f" ({signal.Signals(-code).name})" if code is not None and code < 0 else ""
    stdio.final(f"llama-server exited with code {code}{how}")
    return code


def _loading_notice() -> Callable[[float], None]:
    """Print a line every 10 s while the model loads, so a long start never looks like a hang."""
    state = {"next": 10.0}

    def notice(waited: float) -> None:
        if waited >= state["next"]:
            print(f"  still loading ... {waited:.0f} s", flush=True)
            state["next"] += 10.0

    return notice
