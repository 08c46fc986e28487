"""Full-screen live dashboard for `llama-run run --ui tui` (rich Live).

The Monitor samples on its own thread; the main thread only renders (dashboard.render_dashboard) and
reads keys.
"""

from __future__ import annotations

import os
import select
import sys
import termios
import time
import tty
from typing import Any, Iterable, List, Optional, Sequence, TextIO

from rich.console import Console
from rich.live import Live

from tools.llama_bench import stopping
from tools.llama_bench.monitor.sampler import Monitor, Snapshot

from .dashboard import StaticInfo, render_dashboard
from .proxyview import ProxyView
from .requests_panel import requests_panel
from .logtail import LogTail
from .session import Session, StopReason

FRAME_S = 0.25  # key poll / redraw granularity (~4 frames per second at most)


class KeyReader:
    """Single keys without Enter (cbreak mode), inert unless stdin is the terminal's foreground job.

    Ctrl-C keeps working: cbreak leaves signal generation on, so it still raises KeyboardInterrupt.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.fd: Optional[int] = None
        self._saved: Any = None

    def __enter__(self) -> "KeyReader":
        try:
            fd = self.stream.fileno()
            # A background job changing terminal modes would be stopped by SIGTTOU.
            if os.isatty(fd) and os.tcgetpgrp(fd) == os.getpgrp():
                self._saved = termios.tcgetattr(fd)
                tty.setcbreak(fd)
                self.fd = fd
        except Exception:  # termios.error, streams without a descriptor (pytest capture): no keys
            self.fd = None
        return self

    def read(self, timeout: float) -> str:
        """Keys typed within `timeout` seconds ("" if none); just sleeps when keys are off."""
        if self.fd is None:
            time.sleep(max(0.0, timeout))
            return ""
        if not select.select([self.fd], [], [], max(0.0, timeout))[0]:
            return ""
        data = os.read(self.fd, 64)
        if not data:  # hang-up: stop polling a descriptor that is always "ready"
            self.fd = None
        return data.decode("utf-8", "replace")

    def __exit__(self, *exc: object) -> None:
        if self._saved is not None:
            try:
                termios.tcsetattr(self.stream.fileno(), termios.TCSADRAIN, self._saved)
            except (OSError, termios.error, ValueError):
                pass  # the terminal is gone; nothing left to restore
        self._saved = self.fd = None


def _epilogue(snapshots: Sequence[Snapshot], log_lines: Iterable[str], reason: StopReason) -> None:
    """The alternate screen vanishes on exit: leave the totals (and the log on a crash) in the terminal."""
    from .plain import format_block

    if snapshots:
        for line in format_block(list(snapshots)):
            if line.startswith(("[tok] all:", "[sys] all:")):
                print(line, flush=True)
    if reason is StopReason.SERVER_EXIT:
        print("llama-server log tail:", *[f"  {line}" for line in list(log_lines)[-15:]], sep="\n", flush=True)


def _model_summary(session: Session) -> Optional[str]:
    return session.model.facts() if session.model is not None else None


def run_tui(session: Session) -> StopReason:
    """Show the dashboard until q, --duration or the server exiting; returns why it stopped.
    KeyboardInterrupt propagates (the runner stops the server)."""
    server = session.server
    info = StaticInfo(
        model=server.cfg.model,
        url=session.public_url,
        pid=server.pid,
        started_at=server.started_at,
        log_path=str(server.log_path) if server.log_path else None,
        model_summary=_model_summary(session),
    )
    tail = LogTail(server.log_path, lines=200)  # enough to fill a tall terminal
    console = Console()
    monitor = Monitor(session.monitor_url, session.interval, api_key=server.api_key, pid=server.pid)
    proxy = ProxyView(session.proxy_url, server.api_key, session.interval) if session.proxy_url else None
    # The alternate screen is redrawn in place from the top (no clearing, so no flicker) and cropped
    # to the terminal size on every frame, so a resize just changes the next frame.
    live = Live(console=console, screen=True, auto_refresh=False, redirect_stdout=False, redirect_stderr=False)
    snapshots: List[Snapshot] = []
    reason = StopReason.USER
    monitor.start()
    if proxy is not None:
        proxy.start()
    try:
        with KeyReader(sys.stdin) as keys, live:
            drawn: Any = None
            drawn_at = 0.0
            while True:
                stopping.check()
                gone = session.exited()
                if gone is not None:
                    reason = gone
                    break
                if session.duration_over():
                    reason = StopReason.DURATION
                    break
                latest = monitor.latest()
                if latest is not None and (not snapshots or latest is not snapshots[-1]):
                    snapshots = monitor.snapshots()
                tail.poll()
                # Redraw only when something visible changed (new sample, log, size) or, for the uptime,
                # a bit over a second passed (so a 1 s sample and the clock do not both draw a frame):
                # rendering is the costly part of this loop.
                size = console.size
                state = (id(latest), tail.version, size, id(proxy.latest) if proxy is not None else None)
                if state != drawn or time.monotonic() - drawn_at >= 1.0 + FRAME_S:
                    panel = requests_panel(proxy.latest, proxy.stream_tps) if proxy is not None else None
                    frame = render_dashboard(
                        snapshots, tail.lines, info, now=time.time(), height=size.height, requests=panel
                    )
                    live.update(frame, refresh=True)
                    drawn, drawn_at = state, time.monotonic()
                timeout = FRAME_S
                if session.deadline is not None:
                    timeout = min(timeout, session.deadline - time.monotonic())
                if "q" in keys.read(timeout).lower():
                    reason = StopReason.USER
                    break
    finally:
        if proxy is not None:
            proxy.stop()
        stopping.ignore()  # a second Ctrl-C must not cut the summary (the runner stops the server next)
        try:
            if server.poll() is None:
                monitor.sample()  # the totals as of now, not as of the last redraw
            monitor.stop()
            _epilogue(monitor.snapshots(), tail.poll(), reason)
        except Exception:
            monitor.stop()  # a summary must never turn a clean stop into a traceback
    return reason
