"""The benchmark's own /metrics series and energy meter, sampled inside the event loop.

A sampler thread would compete for the GIL with the loop that timestamps streamed chunks, so
scrapes use the loop's own non-blocking HTTP and only store the raw text; parsing waits until
no request is in flight (between cells)."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Dict, List, Optional, Tuple

from ..power.reading import EnergySummary
from ..ticker import Ticker

# The counters and gauges worth keeping per sample (the rest of /metrics is derived or static).
KEEP = (
    "prompt_tokens_total",
    "prompt_tokens_cached_total",
    "tokens_predicted_total",
    "prompt_seconds_total",
    "tokens_predicted_seconds_total",
    "requests_processing",
    "requests_deferred",
    "n_decode_total",
    "n_busy_slots_per_decode",
)


class MetricsSampler:
    """Scrapes /metrics every `interval` s (when the server has it) and drives the energy meter,
    whose NVML power integration needs regular reads."""

    def __init__(self, endpoint: str, api_key: Optional[str], interval: float, enabled: bool, energy: bool) -> None:
        self.url = endpoint.rstrip("/") + "/metrics"
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.interval = interval
        self.enabled = enabled
        self.t0 = time.monotonic()
        self.cell: Optional[str] = None
        self.series: List[Dict[str, Any]] = []
        self._raw: List[Tuple[float, Optional[str], str]] = []
        self._session: Any = None
        self._task: Optional["asyncio.Task[None]"] = None
        self.meter: Any = None
        if energy:
            from ..power.meter import EnergyMeter

            self.meter = EnergyMeter()

    async def start(self) -> None:
        if self.enabled:
            import aiohttp

            timeout = aiohttp.ClientTimeout(total=max(1.0, min(5.0, self.interval * 2)))
            self._session = aiohttp.ClientSession(timeout=timeout, headers=self.headers, trust_env=False)
        if self.enabled or self.meter is not None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self.meter is not None:
            self.meter.close()
        self.parse_pending()

    async def _loop(self) -> None:
        ticker = Ticker(self.interval)
        await ticker.wait_async()  # the first tick is now: the cell boundaries scrape on their own
        while True:
            await ticker.wait_async()
            await self.fetch()
            if self.meter is not None:
                self.meter.read()

    async def fetch(self) -> Optional[str]:
        """One scrape, stored raw; None when /metrics did not answer 200."""
        if self._session is None:
            return None
        try:
            async with self._session.get(self.url) as resp:
                if resp.status != 200:
                    return None
                text = await resp.text()
        except asyncio.CancelledError:
            raise
        except Exception:  # a missed sample is not worth failing the benchmark for
            return None
        self._raw.append((time.monotonic() - self.t0, self.cell, text))
        return text

    async def scrape_now(self) -> Optional[Dict[str, float]]:
        """A sample taken right now and parsed at once (cell boundaries, where nothing is timed)."""
        text = await self.fetch()
        self.parse_pending()
        return self.series[-1]["values"] if text is not None and self.series else None

    def parse_pending(self) -> None:
        from ..monitor.metrics import parse_metrics

        for t, cell, text in self._raw:
            try:
                values = parse_metrics(text)
            except ValueError:
                continue
            self.series.append({"t": round(t, 3), "cell": cell, "values": {k: values[k] for k in KEEP if k in values}})
        self._raw.clear()

    def cell_samples(self, label: str) -> List[Dict[str, float]]:
        self.parse_pending()
        return [s["values"] for s in self.series if s["cell"] == label]

    def energy_start(self) -> None:
        if self.meter is not None:
            self.meter.start()

    def energy_read(self) -> Optional[EnergySummary]:
        return self.meter.read() if self.meter is not None else None
