"""`llama-run run`: start the server, wait until it is ready, show live stats, always stop it."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from dataclasses import dataclass
from types import FrameType
from typing import List, Optional

from tools.llama_bench.server import ManagedServer
from tools.llama_bench.server_args import config_from_args


class StopRequested(BaseException):
    """SIGTERM or SIGHUP asked us to stop (handled like Ctrl-C). A BaseException, like KeyboardInterrupt,
    so that best-effort `except Exception` blocks in the sampling code cannot swallow it."""


@dataclass
class Session:
    """What a UI loop needs: the server, where it logs, and when to stop."""

    server: ManagedServer
    interval: float
    stats_interval: float
    deadline: Optional[float]  # time.monotonic() at which --duration ends

    def duration_over(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline


def _raise_stop(signum: int, _frame: Optional[FrameType]) -> None:
    raise StopRequested(signal.Signals(signum).name)


def _install_signal_handlers() -> None:
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_stop)


def _ignore_signals() -> None:
    """While stopping, a second Ctrl-C or SIGTERM must not abandon the server half-stopped."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)


def run(args: argparse.Namespace, extra: List[str]) -> int:
    cfg = config_from_args(args, extra)
    server = ManagedServer(cfg, allow_multi_server=args.allow_multi_server)
    use_tui = args.ui == "tui" or (args.ui is None and sys.stdout.isatty())
    _install_signal_handlers()
    user_stop = True
    try:
        print(f"Starting llama-server: {' '.join(server.command)}", flush=True)
        server.start(die_with_us=not args.detach)
        print(f"  pid {server.pid}, log {server.log_path}", flush=True)
        waited = server.wait_ready(args.startup_timeout, on_wait=_loading_notice())
        print(f"llama-server ready at {server.base_url} after {waited:.1f} s", flush=True)
        if args.detach:
            server.detach()
            print(f"Detached: llama-server keeps running (pid {server.pid}); stop it with ./llama-run stop-all")
            return 0
        session = Session(
            server=server,
            interval=args.interval,
            stats_interval=args.stats_interval,
            deadline=time.monotonic() + args.duration if args.duration else None,
        )
        if use_tui:
            from .tui import run_tui

            reason = run_tui(session)
        else:
            from .plain import run_plain

            reason = run_plain(session)
        user_stop = reason != "server-exit"
    except (KeyboardInterrupt, StopRequested):
        print("\nStopping llama-server ...", file=sys.stderr, flush=True)
    finally:
        _ignore_signals()
        if server.proc is not None and not server.detached:
            died = server.poll() is not None
            code = server.stop()
            how = f" ({signal.Signals(-code).name})" if code is not None and code < 0 else ""
            print(f"llama-server exited with code {code}{how}", flush=True)
            if died and user_stop is False and code not in (None, 0):
                return code if code > 0 else 1
    return 0 if user_stop else 1


def _loading_notice():
    """Print a line every 10 s while the model loads, so a long start never looks like a hang."""
    state = {"next": 10.0}

    def notice(waited: float) -> None:
        if waited >= state["next"]:
            print(f"  still loading ... {waited:.0f} s", flush=True)
            state["next"] += 10.0

    return notice
