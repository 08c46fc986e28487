"""Per-client limits over sliding windows: requests per minute (counted when a request starts), tokens per
minute and per day (prompt + generated, counted when a request finishes; the day is the last 24 hours and
is seeded from the history at start-up, so a restart does not reset it). Over a limit → a `Refusal` with
the seconds until the window has room again, for `Retry-After`."""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Deque, Dict, Iterable, Optional, Tuple

from .identity import ClientLimits
from .records import RequestRecord

MINUTE = 60.0
DAY = 86400.0


@dataclass
class Refusal:
    kind: str  # "requests" or "tokens" (OpenAI's error types for rate limits)
    message: str
    retry_after: int  # whole seconds, >= 1


@dataclass
class _Window:
    """Events (time, amount) within `span` seconds, with their running sum."""

    span: float
    events: Deque[Tuple[float, int]] = field(default_factory=deque)
    total: int = 0

    def add(self, t: float, amount: int) -> None:
        self.events.append((t, amount))
        self.total += amount

    def expire(self, now: float) -> None:
        cut = now - self.span
        events = self.events
        while events and events[0][0] <= cut:
            self.total -= events.popleft()[1]

    def wait_below(self, limit: int, now: float) -> int:
        """Seconds until the sum drops below `limit` (as the oldest events leave the window)."""
        excess = self.total - limit + 1
        for t, amount in self.events:
            excess -= amount
            if excess <= 0:
                return max(1, math.ceil(t + self.span - now))
        return max(1, math.ceil(self.span))


@dataclass
class _ClientWindows:
    requests: _Window = field(default_factory=lambda: _Window(MINUTE))
    tokens_minute: _Window = field(default_factory=lambda: _Window(MINUTE))
    tokens_day: _Window = field(default_factory=lambda: _Window(DAY))


class Limiter:
    """The windows of every client that has limits; also a RequestSink (tokens count when a request ends)."""

    def __init__(self, limits_of: Callable[[str], ClientLimits], clock: Callable[[], float] = time.time) -> None:
        self.limits_of = limits_of
        self.clock = clock
        self._clients: Dict[str, _ClientWindows] = {}

    def _windows(self, client: str) -> _ClientWindows:
        w = self._clients.get(client)
        if w is None:
            w = self._clients[client] = _ClientWindows()
        return w

    def seed(self, history: Iterable[Tuple[str, float, int]]) -> None:
        """Finished requests of the last day from the store: (client, finished at, tokens)."""
        for client, t, tokens in sorted(history, key=lambda row: row[1]):
            if self.limits_of(client).any:
                w = self._windows(client)
                w.tokens_minute.add(t, tokens)
                w.tokens_day.add(t, tokens)

    def admit(self, client: str, limits: ClientLimits) -> Optional[Refusal]:
        """Check a new request; when it may go ahead it is counted (requests per minute)."""
        if not limits.any:
            return None
        now = self.clock()
        w = self._windows(client)
        for window in (w.requests, w.tokens_minute, w.tokens_day):
            window.expire(now)
        checks = (
            (limits.requests_per_minute, w.requests, "requests", "requests per minute"),
            (limits.tokens_per_minute, w.tokens_minute, "tokens", "tokens per minute"),
            (limits.tokens_per_day, w.tokens_day, "tokens", "tokens per day"),
        )
        for limit, window, kind, what in checks:
            if limit is not None and window.total >= limit:
                wait = window.wait_below(limit, now)
                return Refusal(kind, f"Rate limit reached for client {client}: {window.total}/{limit} {what}", wait)
        w.requests.add(now, 1)
        return None

    def finished(self, rec: RequestRecord) -> None:
        if not self.limits_of(rec.client).any:
            return
        tokens = rec.total_tokens
        if tokens:
            now = self.clock()
            w = self._windows(rec.client)
            w.tokens_minute.add(now, tokens)
            w.tokens_day.add(now, tokens)
