"""The one periodic schedule behind every sampling loop (monitor thread, plain UI, `llama-bench monitor`,
the benchmark's /metrics sampler).

Tick k is due at start + k * interval, so a loop whose body takes time does not drift; a tick that
comes late skips the ticks it missed (keeping the phase) instead of firing them in a burst.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from typing import Callable, Optional


class Ticker:
    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        if not interval > 0:
            raise ValueError("interval must be > 0")
        self.interval = float(interval)
        self._clock = clock
        self._next = clock()  # the first tick is due at once
        self._stopped = threading.Event()

    @property
    def next_due(self) -> float:
        return self._next

    def _advance(self, now: float) -> None:
        missed = math.floor((now - self._next) / self.interval) if now > self._next else 0
        self._next += (missed + 1) * self.interval

    def due(self) -> bool:
        """Non-blocking: True (and the schedule advances) when a tick is due now."""
        now = self._clock()
        if now >= self._next:
            self._advance(now)
            return True
        return False

    def wait(self, deadline: Optional[float] = None) -> bool:
        """Block until the next tick (True), or until stop() / `deadline` on the same clock (False)."""
        while not self._stopped.is_set():
            now = self._clock()
            if deadline is not None and now >= deadline:
                return False
            if now >= self._next:
                self._advance(now)
                return True
            until = self._next if deadline is None else min(self._next, deadline)
            self._stopped.wait(until - now)
        return False

    async def wait_async(self) -> None:
        """The same schedule inside an event loop (cancel the task to stop)."""
        now = self._clock()
        if now < self._next:
            await asyncio.sleep(self._next - now)
        self._advance(self._clock())

    def stop(self) -> None:
        """Make wait() return False at once, from any thread."""
        self._stopped.set()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()
