"""The proxy's live state: requests in flight, the most recent finished ones, per-client totals since
start-up, and the sinks that hear about every finished request (metrics, history, limits).

Everything here runs on the event loop's thread; sinks that do I/O hand the work to their own thread.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Deque, Dict, List, Protocol

from .meter import RequestMeter
from .records import SCHEMA, ClientTotals, RequestRecord


class RequestSink(Protocol):
    def finished(self, rec: RequestRecord) -> None: ...


class Ledger:
    def __init__(self, recent: int, upstream: str) -> None:
        self.upstream = upstream
        self.started_at = time.time()
        self.in_flight: Dict[int, RequestMeter] = {}
        self.recent: Deque[RequestRecord] = deque(maxlen=max(1, recent))
        self.clients: Dict[str, ClientTotals] = {}
        self.sinks: List[RequestSink] = []
        self.finished_chunks = 0  # content chunks of finished requests (the live count adds the running ones)
        self._next_id = 1
        self._finished = 0

    def next_id(self) -> int:
        n = self._next_id
        self._next_id += 1
        return n

    def _totals(self, client: str) -> ClientTotals:
        totals = self.clients.get(client)
        if totals is None:
            totals = self.clients[client] = ClientTotals(client)
        return totals

    def begin(self, meter: RequestMeter) -> None:
        self.in_flight[meter.rec.id] = meter
        self._totals(meter.rec.client).in_flight += 1

    def end(self, meter: RequestMeter) -> None:
        rec = meter.rec
        if self.in_flight.pop(rec.id, None) is None:
            return  # ended twice (a refusal after begin): count once
        self._finished += 1
        rec.seq = self._finished
        totals = self._totals(rec.client)
        totals.in_flight -= 1
        totals.add(rec)
        self.recent.append(rec)
        self.finished_chunks += rec.chunks
        for sink in self.sinks:
            sink.finished(rec)

    def streamed_chunks(self) -> int:
        """Content chunks streamed since start-up, the running requests' so far included."""
        return self.finished_chunks + sum(m.rec.chunks for m in self.in_flight.values())

    def snapshot(self, recent: int) -> Dict[str, Any]:
        """The JSON of /proxy/requests."""
        now_mono = time.monotonic()
        running = []
        for meter in self.in_flight.values():
            meter.live(now_mono)
            running.append(meter.rec.to_dict())
        done = list(self.recent)[-recent:] if recent > 0 else []
        return {
            "schema": SCHEMA,
            "now": time.time(),
            "started_at": self.started_at,
            "upstream": self.upstream,
            "streamed_chunks": self.streamed_chunks(),
            "in_flight": running,
            "recent": [rec.to_dict() for rec in reversed(done)],  # the last to finish first
            "clients": [t.to_dict() for t in sorted(self.clients.values(), key=lambda t: t.client)],
        }
