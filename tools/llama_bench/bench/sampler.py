"""The benchmark's own /metrics and /slots series and energy meter, sampled inside the event loop.

A sampler thread would compete for the GIL with the loop that timestamps streamed chunks, so
scrapes use the loop's own non-blocking HTTP and only store the raw text; parsing waits until
no request is in flight (between cells). Both series share the clock of the request records:
`t` is seconds since `t0`, as a record's `t_s` is."""

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

    def __init__(
        self,
        endpoint: str,
        api_key: Optional[str],
        interval: float,
        enabled: bool,
        energy: bool,
        slots: bool = False,
    ) -> None:
        self.url = endpoint.rstrip("/") + "/metrics"
        self.slots_url = endpoint.rstrip("/") + "/slots"
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.interval = interval
        self.enabled = enabled
        self.slots_enabled = slots  # turned off by the first answer that is not 200 (--no-slots)
        self.t0 = time.monotonic()
        self.cell: Optional[str] = None
        self.series: List[Dict[str, Any]] = []
        self.slots_series: List[Dict[str, Any]] = []
        self._raw: List[Tuple[float, Optional[str], str]] = []
        self._raw_slots: List[Tuple[float, Optional[str], str]] = []
        self._session: Any = None
        self._task: Optional["asyncio.Task[None]"] = None
        self.meter: Any = None
        if energy:
            from ..power.meter import EnergyMeter

            self.meter = EnergyMeter()

    async def start(self) -> None:
        if self.enabled or self.slots_enabled:
            import aiohttp

            timeout = aiohttp.ClientTimeout(total=max(1.0, min(5.0, self.interval * 2)))
            self._session = aiohttp.ClientSession(timeout=timeout, headers=self.headers, trust_env=False)
        if self.enabled or self.slots_enabled or self.meter is not None:
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
            await self.fetch_slots()
            if self.meter is not None:
                self.meter.read()

    async def fetch_slots(self) -> None:
        """One /slots sample, stored raw (parsed with the /metrics samples, between cells)."""
        if self._session is None or not self.slots_enabled:
            return
        try:
            async with self._session.get(self.slots_url) as resp:
                if resp.status != 200:
                    self.slots_enabled = False  # disabled on the server (--no-slots) or not llama.cpp
                    return
                text = await resp.text()
        except asyncio.CancelledError:
            raise
        except Exception:
            return
        self._raw_slots.append((time.monotonic() - self.t0, self.cell, text))

    async def fetch(self) -> Optional[str]:
        """One scrape, stored raw; None when /metrics did not answer 200."""
        if self._session is None or not self.enabled:
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
        import json

        from ..monitor.metrics import parse_metrics
        from ..monitor.slots import summarize_slots

        for t, cell, text in self._raw:
            try:
                values = parse_metrics(text)
            except ValueError:
                continue
            self.series.append({"t": round(t, 3), "cell": cell, "values": {k: values[k] for k in KEEP if k in values}})
        self._raw.clear()
        for t, cell, text in self._raw_slots:
            try:
                summary = summarize_slots(json.loads(text))
            except ValueError:
                continue
            self.slots_series.append(
                {
                    "t": round(t, 3),
                    "cell": cell,
                    "total": summary.total,
                    "busy": summary.busy,
                    "ctx_used": summary.ctx_used,
                    "ctx_fill": None if summary.ctx_fill is None else round(summary.ctx_fill, 4),
                    "n_decoded": summary.n_decoded,
                    "slots_used": summary.slots_used,
                }
            )
        self._raw_slots.clear()

    def cell_samples(self, label: str) -> List[Dict[str, float]]:
        self.parse_pending()
        return [s["values"] for s in self.series if s["cell"] == label]

    def cell_slots(self, label: str) -> List[Dict[str, Any]]:
        self.parse_pending()
        return [s for s in self.slots_series if s["cell"] == label]

    def gauge_now(self, name: str, label: str) -> List[float]:
        """One gauge's samples for a running cell, oldest first, read from the raw text without parsing
        the rest (cheap enough to call while requests stream: a few string searches per sample)."""
        needle = f"\nllamacpp:{name} "  # the value line, not the "# HELP llamacpp:..." one
        out: List[float] = []
        for _t, cell, text in self._raw:
            if cell != label:
                continue
            i = text.find(needle)
            if i < 0:
                continue
            end = text.find("\n", i + 1)
            try:
                out.append(float(text[i + len(needle) : end if end >= 0 else None]))
            except ValueError:
                continue
        return out

    def energy_start(self) -> None:
        if self.meter is not None:
            self.meter.start()

    def energy_read(self) -> Optional[EnergySummary]:
        return self.meter.read() if self.meter is not None else None
