"""`llama-run run`: start the server, wait until it is ready, show live stats, always stop it."""

from __future__ import annotations

import signal
import sys
import time
from dataclasses import dataclass
from typing import Callable, Literal, Optional

from tools.llama_bench import stdio, stopping
from tools.llama_bench.server.config import LaunchOptions, ServerConfig
from tools.llama_bench.server.managed import ManagedServer
from tools.llama_bench.server.preflight import describe_choice, preflight
from tools.llama_bench.utils import ExitStatus

from .session import Session, StopReason


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


def _live_view(session: Session, use_tui: bool) -> StopReason:
    if use_tui:
        from .tui import run_tui

        return run_tui(session)
    from .plain import run_plain

    return run_plain(session)


def run(opts: RunOptions) -> int:
    server = ManagedServer(opts.config, allow_multi_server=opts.launch.allow_multi_server)
    use_tui = opts.ui == "tui" or (opts.ui is None and sys.stdout.isatty())
    checked = preflight(opts.config, skip_fit_check=opts.skip_vram_check)  # before anything starts
    reason = StopReason.USER
    try:
        print(f"Starting llama-server: {' '.join(server.command)}", flush=True)
        for line in checked.lines():
            print(line, flush=True)
        server.start(die_with_us=not opts.detach)
        print(f"  pid {server.pid}, log {server.log_path}", flush=True)
        waited = server.wait_ready(opts.launch.startup_timeout, on_wait=_loading_notice())
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
        )
        reason = _live_view(session, use_tui)
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM, SIGHUP (tools.llama_bench.stopping)
        print("\nStopping llama-server ...", file=sys.stderr, flush=True)
    finally:
        stopping.ignore()  # a second Ctrl-C must not abandon the server half-stopped
        code = _stop(server)
    if reason is StopReason.SERVER_EXIT:
        # The server died on its own: its exit code, or 1 when it says nothing (killed by a signal).
        return code if code is not None and code > 0 else ExitStatus.FAILED
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
