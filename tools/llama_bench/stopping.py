"""Stop requests — Ctrl-C, SIGTERM, SIGHUP — handled the same way by every command.

The handler records the request and raises StopRequested (a KeyboardInterrupt) to interrupt what is
running. An exception raised from a signal handler can land anywhere, including inside a finalizer
(`__del__`, a weakref callback) where Python prints and swallows it; so the request is *sticky*:
every loop calls `check()` at its safe points, which raises again until the command has stopped.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Optional

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

_requested: Optional[int] = None
_event = threading.Event()


class StopRequested(KeyboardInterrupt):
    """The user asked us to stop (Ctrl-C, SIGTERM or SIGHUP). A KeyboardInterrupt, so every path that
    handles Ctrl-C handles the other two alike, and best-effort `except Exception` cannot swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _handler(signum: int, _frame: Optional[FrameType]) -> None:
    request(signum)
    raise StopRequested(signum)


def install() -> None:
    """Route Ctrl-C, SIGTERM and SIGHUP to the sticky stop request (main thread only)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _handler)


def request(signum: int) -> None:
    """Record a stop request without raising (event-loop signal handlers use this)."""
    global _requested
    if _requested is None:
        _requested = signum
    _event.set()


def requested() -> Optional[str]:
    """The name of the signal that asked us to stop, or None."""
    return None if _requested is None else signal.Signals(_requested).name


def check() -> None:
    """Raise StopRequested if a stop was requested (call at the safe points of every loop)."""
    if _requested is not None:
        raise StopRequested(_requested)


def wait(seconds: float) -> bool:
    """Sleep up to `seconds`, waking at once on a stop request; True when a stop was requested."""
    return _event.wait(max(0.0, seconds))


def ignore() -> None:
    """While cleaning up, another Ctrl-C or SIGTERM must not abandon the cleanup half-way."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def reset() -> None:
    """Forget a stop request (for tests and in-process callers that keep going)."""
    global _requested
    _requested = None
    _event.clear()
