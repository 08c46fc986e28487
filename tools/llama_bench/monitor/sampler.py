"""The sampling engine behind llama-run's live stats and `llama-bench monitor`.

Every interval it scrapes the server's Prometheus /metrics and /slots, the server process (CPU, RSS),
the host, the GPU and CPU energy, and turns counters into rates with a RateTracker.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from ..http import HttpClient, HttpError
from ..power.reading import EnergySummary, GpuStats
from ..ticker import Ticker
from .metrics import GEN_COUNTER, MetricsSample, RateSet, RateTracker, parse_metrics
from .router import ModelState, RouterScraper, is_router
from .slots import SlotsSummary, summarize_slots


@dataclass
class ProcessStats:
    cpu_percent: Optional[float]
    rss_bytes: Optional[int]


@dataclass
class HostStats:
    cpu_percent: Optional[float]
    ram_used_bytes: Optional[int]
    ram_total_bytes: Optional[int]


@dataclass
class Snapshot:
    wall: float
    elapsed: float
    rates: Optional[RateSet]
    requests_processing: Optional[float]
    requests_deferred: Optional[float]
    slots: Optional[SlotsSummary]
    process: Optional[ProcessStats]
    host: Optional[HostStats]
    gpus: List[GpuStats] = field(default_factory=list)
    energy_text: Optional[str] = None
    energy: Optional[EnergySummary] = None
    error: Optional[str] = None
    models: Optional[List[ModelState]] = None  # router mode: every model and what it is doing

    @property
    def busy(self) -> bool:
        """Requests are being processed or slots are busy (whatever the token counters say)."""
        return bool(self.requests_processing) or bool(self.slots and self.slots.busy)

    @property
    def idle(self) -> bool:
        """No tokens in the last interval and nothing processing: a slow server that emits less than a
        token per interval is busy, not idle."""
        return bool(self.rates and self.rates.now_idle) and not self.busy

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


class Monitor:
    """Samples one llama-server; `sample()` is synchronous, `start()` runs it on a daemon thread."""

    def __init__(
        self,
        base_url: str,
        interval: float = 1.0,
        api_key: Optional[str] = None,
        pid: Optional[int] = None,
        history: int = 900,
        energy: bool = True,
        on_sample: Optional[Callable[[Snapshot], None]] = None,
    ) -> None:
        self.client = HttpClient(base_url, api_key=api_key, timeout=max(1.0, min(5.0, interval * 4)))
        self.interval = interval
        self.pid = pid
        self.on_sample = on_sample
        self.tracker = RateTracker()
        self.history: Deque[Snapshot] = deque(maxlen=history)
        self._lock = threading.Lock()
        self._ticker = Ticker(interval)
        self._thread: Optional[threading.Thread] = None
        self._t0 = time.monotonic()
        self._proc: Any = None
        self._slots_supported = True
        self._gen_counter: Optional[float] = None
        self._gen_live = 0.0
        self._energy_meter: Any = None
        self._router: Optional[RouterScraper] = None
        self._kind_known = False
        self._init_probes(energy)

    def _init_probes(self, energy: bool) -> None:
        import psutil

        psutil.cpu_percent(None)  # prime: the first call has no interval to measure against
        if self.pid:
            try:
                self._proc = psutil.Process(self.pid)
                self._proc.cpu_percent(None)
            except psutil.Error:
                self._proc = None
        if energy:
            from ..power.meter import EnergyMeter

            # One meter, one GPU reader: it serves both the energy and the per-GPU stats.
            self._energy_meter = EnergyMeter()
            self._energy_meter.start()

    # -- sampling ------------------------------------------------------------------------------
    def _detect_router(self) -> None:
        """Once: a router (`--models-dir`) answers /metrics per model only, so it is scraped per model."""
        if self._kind_known:
            return
        try:
            props = self.client.get_json("/props")
        except HttpError:
            return  # not answering yet: ask again next time
        self._kind_known = True
        if is_router(props):
            self._router = RouterScraper()

    def _scrape(self) -> Tuple[Dict[str, float], Optional[SlotsSummary], Optional[str], Optional[List[ModelState]]]:
        if self._router is not None:
            try:
                summed, merged, models = self._router.scrape(self.client)
                return summed, merged, None, models
            except HttpError as exc:
                return {}, None, f"server unreachable: {exc}", None
        error: Optional[str] = None
        values: Dict[str, float] = {}
        try:
            resp = self.client.get("/metrics")
            if resp.status == 200:
                # NaN/inf gauges (a broken exporter) would show as "nan" everywhere: drop them.
                values = {k: v for k, v in parse_metrics(resp.text).items() if math.isfinite(v)}
            elif resp.status == 501:
                error = "metrics disabled: start llama-server with --metrics"
            else:
                error = f"/metrics answered HTTP {resp.status}"
        except HttpError as exc:
            error = f"server unreachable: {exc}"
        except ValueError as exc:
            error = f"bad /metrics text: {exc}"
        # /slots after /metrics: a request that ends in between is then never counted twice.
        slots = self._sample_slots() if error is None or values else None
        return values, slots, error, None

    def sample(self) -> Snapshot:
        now = time.monotonic()
        rates: Optional[RateSet] = None
        self._detect_router()
        values, slots, error, models = self._scrape()
        if values:
            rates = self.tracker.update(MetricsSample(t=now, values=self._live_counters(values, slots)))
        snap = Snapshot(
            wall=time.time(),
            elapsed=now - self._t0,
            rates=rates,
            requests_processing=values.get("requests_processing"),
            requests_deferred=values.get("requests_deferred"),
            slots=slots,
            process=self._sample_process(),
            host=self._sample_host(),
            error=error,
            models=models,
        )
        self._sample_power(snap)
        with self._lock:
            self.history.append(snap)
        return snap

    def _live_counters(self, values: Dict[str, float], slots: Optional[SlotsSummary]) -> Dict[str, float]:
        """llama-server adds a request's generated tokens to tokens_predicted_total only when it ends;
        adding the tokens decoded so far by busy slots makes generation visible while it happens.
        The sum is kept monotonic (a request finishing between the two scrapes must not look like a
        counter reset); a drop of the server's own counter is a real restart and restarts the sum."""
        counter = values.get(GEN_COUNTER)
        if counter is None:
            return values
        live = counter + (slots.n_decoded if slots else 0)
        if self._gen_counter is not None and counter < self._gen_counter:
            self._gen_live = live
        else:
            self._gen_live = max(self._gen_live, live)
        self._gen_counter = counter
        return {**values, GEN_COUNTER: self._gen_live}

    def _sample_slots(self) -> Optional[SlotsSummary]:
        if not self._slots_supported:
            return None
        try:
            resp = self.client.get("/slots")
        except HttpError:
            return None
        if resp.status == 501:
            self._slots_supported = False  # --no-slots: stop asking every interval
            return None
        if resp.status != 200:
            return None
        try:
            data = resp.json()
        except ValueError:
            return None
        return summarize_slots(data) if isinstance(data, list) else None

    def _sample_process(self) -> Optional[ProcessStats]:
        if self._proc is None:
            return None
        import psutil

        try:
            with self._proc.oneshot():
                return ProcessStats(self._proc.cpu_percent(None), self._proc.memory_info().rss)
        except psutil.Error:
            return None

    @staticmethod
    def _sample_host() -> HostStats:
        import psutil

        mem = psutil.virtual_memory()
        return HostStats(psutil.cpu_percent(None), int(mem.total - mem.available), int(mem.total))

    def _sample_power(self, snap: Snapshot) -> None:
        if self._energy_meter is None:
            return
        from ..power.meter import describe

        try:
            snap.energy = self._energy_meter.read()
            snap.energy_text = describe(snap.energy)
            snap.gpus = self._energy_meter.gpus()
        except Exception as exc:  # best-effort sensors must never stop the stats loop
            snap.energy_text = f"energy unavailable: {exc}"

    # -- background thread ---------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="llama-monitor", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while self._ticker.wait():
            snap = self.sample()
            if self.on_sample:
                self.on_sample(snap)

    def latest(self) -> Optional[Snapshot]:
        with self._lock:
            return self.history[-1] if self.history else None

    def snapshots(self) -> List[Snapshot]:
        with self._lock:
            return list(self.history)

    def stop(self) -> None:
        self._ticker.stop()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.client.close()
        if self._energy_meter is not None:
            self._energy_meter.close()
            self._energy_meter = None
