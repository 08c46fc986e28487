"""What the live views show of the token-meter proxy: its in-flight and recent requests, per-client
totals, and the generation speed measured from the stream itself (content chunks per second)."""

from __future__ import annotations

import threading
import time
from typing import List, Optional

from tools.llama_bench.ticker import Ticker

from .proxy.client import ProxyReader, ProxySnapshot
from .proxy.records import RequestRecord


class ProxyView:
    """Polls one proxy. poll() is synchronous (plain mode); start() runs it on a daemon thread (TUI)."""

    def __init__(self, base_url: str, api_key: Optional[str], interval: float) -> None:
        self.reader = ProxyReader(base_url, api_key=api_key, timeout=max(1.0, min(5.0, interval * 4)))
        self.interval = interval
        self.latest: Optional[ProxySnapshot] = None
        self.stream_tps: Optional[float] = None  # content chunks per second over the last poll
        self._last: Optional[tuple] = None  # (monotonic time, streamed_chunks)
        self._lock = threading.Lock()
        self._ticker = Ticker(interval)
        self._thread: Optional[threading.Thread] = None

    def poll(self) -> Optional[ProxySnapshot]:
        snap = self.reader.fetch()
        now = time.monotonic()
        with self._lock:
            if snap is not None:
                if self._last is not None and now > self._last[0]:
                    self.stream_tps = max(0.0, (snap.streamed_chunks - self._last[1]) / (now - self._last[0]))
                self._last = (now, snap.streamed_chunks)
            self.latest = snap
        return snap

    def newly_finished(self, snap: ProxySnapshot) -> List[RequestRecord]:
        return self.reader.newly_finished(snap)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="proxy-view", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while self._ticker.wait():
            self.poll()

    def stop(self) -> None:
        self._ticker.stop()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.reader.close()


def proxy_line(view: ProxyView) -> str:
    """`[proxy] in_flight 2 streamed_tok/s 121.40 requests 17 clients 3` (or `[proxy] not answering`)."""
    snap = view.latest
    if snap is None:
        return "[proxy] not answering"
    tps = "-" if view.stream_tps is None else f"{view.stream_tps:.2f}"
    done = sum(c.requests for c in snap.clients)
    return f"[proxy] in_flight {len(snap.in_flight)} streamed_tok/s {tps} requests {done} clients {len(snap.clients)}"
