"""The benchmark engine: warm-up, the cells of a Schedule one after another (each --repeats times),
request scheduling (closed loop or Poisson arrivals, conversations turn by turn), /metrics, /slots and
energy sampling, a cell's early stop when its CellWatch says so, and crash-safe recording (each record
goes to the sink as it finishes)."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from typing import Any, Callable, Dict, List, Optional, Set

from .. import stopping
from ..http import HttpClient, HttpError
from .cellstats import finish_cell
from .plan import BenchParams, Cell, CellProgress, Observer, RecordSink, RunState, RunStatus, Schedule
from .probe import ServerInfo
from .records import INTERRUPTED, SERVER_DIED, SESSION_BROKEN, STEP_STOPPED, Api, RequestRecord, RequestSpec
from .sampler import MetricsSampler
from .source import SpecSource
from .builder import RequestBuilder

WATCH_INTERVAL_S = 0.25  # how often a cell's watch looks at it


class Runner:
    def __init__(
        self,
        params: BenchParams,
        info: ServerInfo,
        api: Api,
        builder: RequestBuilder,
        schedule: Schedule,
        sink: RecordSink,
        observer: Observer,
        alive: Optional[Callable[[], bool]] = None,
    ) -> None:
        self.params = params
        self.info = info
        self.api = api
        self.builder = builder
        self.schedule = schedule
        self.sink = sink
        self.obs = observer
        self.process_alive = alive  # when we started the server: is its process still running?
        self.state = RunState()
        self.sampler = MetricsSampler(
            params.endpoint,
            params.api_key,
            params.metrics_interval,
            info.metrics,
            params.energy and info.is_local,
            slots=info.is_llamacpp,
        )
        self._inflight: Set["asyncio.Task[RequestRecord]"] = set()
        self._stop = False
        self.stop_event = asyncio.Event()
        self._cell_stop = asyncio.Event()  # the running cell's watch stopped it
        self._cell_reason: Optional[str] = None
        self._arrivals: Dict[int, float] = {}  # id(spec) -> arrival, for requests not finished yet
        self._arrived = 0
        self._may_send = asyncio.Event()
        self._may_send.set()
        self._checking: Optional["asyncio.Future[None]"] = None
        self._health = HttpClient(params.endpoint, api_key=params.api_key, timeout=3.0)

    @property
    def cells(self) -> List[Cell]:
        return self.schedule.cells

    # -- lifecycle ---------------------------------------------------------------------------
    def alive(self) -> bool:
        """The server's process (when ours) runs and /health answers without a server error."""
        if self.process_alive is not None and not self.process_alive():
            return False
        try:
            return self._health.get("/health", timeout=3.0).status < 500
        except HttpError:
            return False

    def halted(self) -> bool:
        """No new request may start: the run or the running cell was stopped."""
        return self._stop or self._cell_stop.is_set()

    def request_stop(self, status: RunStatus, reason: str) -> None:
        if self._stop:
            return
        self._stop = True
        self.stop_event.set()
        self.state.status, self.state.stop_reason = status, reason
        for task in list(self._inflight):
            task.cancel()

    def stop_cell(self, reason: str) -> None:
        """End the running cell now (its watch says it cannot pass): no new requests, in-flight ones cancelled."""
        if self._cell_stop.is_set() or self._stop:
            return
        self._cell_reason = reason
        self._cell_stop.set()
        for task in list(self._inflight):
            task.cancel()

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> Dict[int, Any]:
        """Ctrl-C, SIGTERM and SIGHUP stop the run gracefully (finished cells are kept); inside the loop
        the handlers run as loop callbacks, so they never interrupt a half-done bookkeeping step."""
        previous: Dict[int, Any] = {}

        def on_signal(signum: int) -> None:
            stopping.request(signum)
            self.obs.message(
                f"{signal.Signals(signum).name}: stopping after recording what finished (press Ctrl-C again to abort)"
            )
            self.request_stop(RunStatus.INTERRUPTED, "interrupted by the user")
            self._restore_signal(loop, signum, previous)  # a second signal interrupts at once

        for sig in stopping.STOP_SIGNALS:
            try:
                previous[sig] = signal.getsignal(sig)
                loop.add_signal_handler(sig, on_signal, sig)
            except (NotImplementedError, RuntimeError, ValueError):
                previous.pop(sig, None)
        return previous

    @staticmethod
    def _restore_signal(loop: asyncio.AbstractEventLoop, sig: int, previous: Dict[int, Any]) -> None:
        if sig in previous:
            loop.remove_signal_handler(sig)  # resets to the default disposition ...
            signal.signal(sig, previous.pop(sig))  # ... so put back what was there before the loop

    async def run(self) -> RunState:
        from .client import StreamClient

        loop = asyncio.get_running_loop()
        previous = self._install_signals(loop)
        if stopping.requested():  # asked to stop while the run was being prepared
            self.request_stop(RunStatus.INTERRUPTED, "interrupted by the user")
        await self.sampler.start()
        try:
            async with StreamClient(
                self.params.endpoint,
                self.params.api_key,
                timeout=self.params.timeout,
                deadline=self.params.request_deadline,
                max_connections=self.schedule.max_concurrency + 4,
            ) as client:
                cell = None if self._stop else self.schedule.next_cell(None)
                self.obs.planned(self.cells, self.params.warmup if cell else 0)
                if cell is not None and self.params.warmup:
                    await self._warmup(client, cell)
                while cell is not None and not self._stop:
                    await self._run_cell(client, cell)
                    cell = None if self._stop else self.schedule.next_cell(cell)
        finally:
            for sig in list(previous):
                self._restore_signal(loop, sig, previous)
            await self.sampler.stop()
            self._health.close()
            self.state.finished_wall = time.time()
        if self.state.status is RunStatus.RUNNING:
            self.state.status = RunStatus.COMPLETE
        return self.state

    # -- requests ----------------------------------------------------------------------------
    async def _warmup(self, client: Any, first: Cell) -> None:
        """Requests of the first cell's shape (prefill size, generation length), not measured."""
        size, max_tokens = first.prompt_size or 64, self.params.max_output_tokens
        loop = asyncio.get_running_loop()
        for i in range(self.params.warmup):
            if self._stop:
                return
            spec = await loop.run_in_executor(None, self.builder.warmup, size, max_tokens, i)
            rec = await self._send(client, spec)
            self.state.warmup_records.append(rec)
            self._record(rec, None)
            if not rec.ok and rec.error != INTERRUPTED:
                await self._check_server(rec)

    def _record(self, rec: RequestRecord, cell: Optional[Cell]) -> None:
        rec.t_s = rec.start_s - self.sampler.t0
        self.sink.write(rec, cell)  # flushed at once: a crash or Ctrl-C keeps this record
        self.obs.request_done(rec)

    async def _send(self, client: Any, spec: RequestSpec) -> RequestRecord:
        # A task of its own so request_stop() can cancel it; send() turns the cancellation into
        # an "interrupted" record instead of raising.
        task = asyncio.ensure_future(client.send(spec))
        self._inflight.add(task)
        try:
            return await task
        finally:
            self._inflight.discard(task)

    async def _check_server(self, rec: RequestRecord) -> None:
        """A request failed at the transport level (or with a 5xx): is the server still there?

        New requests wait while the check runs, so a dead server does not turn every queued
        request into a "connection refused" failure; concurrent failures share one check."""
        if rec.http_status is not None and 400 <= rec.http_status < 500:
            return
        if self._checking is not None:
            await self._checking
            return
        loop = asyncio.get_running_loop()
        self._checking = loop.create_future()
        self._may_send.clear()
        try:
            alive = await loop.run_in_executor(None, self.alive)
        finally:
            self._checking.set_result(None)
            self._checking = None
            self._may_send.set()
        if not alive:
            self.obs.message(f"The server stopped responding ({rec.error}); stopping the run")
            self.request_stop(RunStatus.SERVER_DIED, f"the server stopped responding ({rec.error})")

    async def _run_cell(self, client: Any, cell: Cell) -> None:
        start_metrics: Optional[Dict[str, float]] = None
        for repeat in range(cell.repeats):
            source = SpecSource(self, cell, repeat)
            try:
                await source.prefilled()
                if self._stop:
                    break
                if repeat == 0:
                    self.sampler.cell = cell.label
                    start_metrics = await self.sampler.scrape_now()
                    self.sampler.energy_start()
                    self.obs.cell_started(cell)
                await self._run_repeat(client, cell, source)
            finally:
                source.close()
            if self._cell_stop.is_set():
                break
        if self.sampler.cell != cell.label:  # stopped before it started
            return
        end_metrics = await self.sampler.scrape_now()
        if cell.step is not None and self._cell_reason:
            cell.step["stopped_early"] = self._cell_reason
        self._cell_stop.clear()
        self._cell_reason = None
        finish_cell(cell, self.params, self.info, self.sampler, self.state.status, start_metrics, end_metrics)
        self.sampler.cell = None
        self.obs.cell_done(cell)

    async def _run_repeat(self, client: Any, cell: Cell, source: SpecSource) -> None:
        self._arrivals.clear()
        self._arrived = 0
        watch = asyncio.ensure_future(self._watch(cell)) if cell.watch is not None else None
        try:
            if cell.rate:
                await self._open_loop(client, cell, source)
            else:
                workers = min(cell.concurrency, cell.units)
                await asyncio.gather(*(self._closed_loop_worker(client, cell, source) for _ in range(workers)))
        finally:
            if watch is not None:
                watch.cancel()

    async def _watch(self, cell: Cell) -> None:
        """Every WATCH_INTERVAL_S: show the running cell to its watch; a reason stops the cell."""
        assert cell.watch is not None
        t0 = time.monotonic()
        while not self.halted():
            await asyncio.sleep(WATCH_INTERVAL_S)
            now = time.monotonic()
            progress = CellProgress(
                elapsed_s=now - t0,
                planned=cell.num_requests,
                arrived=self._arrived,
                finished=cell.records,
                waiting_s=[now - t for t in self._arrivals.values()],
                deferred=self.sampler.gauge_now("requests_deferred", cell.label),
            )
            reason = cell.watch.check(progress)
            if reason:
                self.obs.message(f"{cell.label}: stopping the step early: {reason}")
                self.stop_cell(reason)

    async def _closed_loop_worker(self, client: Any, cell: Cell, source: SpecSource) -> None:
        """One of `concurrency` workers: the next request (or conversation) starts as soon as this one's ended."""
        while not self.halted():
            spec = await source.get()
            if spec is None:
                return
            await self._conversation(client, cell, spec)

    async def _open_loop(self, client: Any, cell: Cell, source: SpecSource) -> None:
        """Poisson arrivals: exponential gaps with mean 1/rate, seeded per cell, the first at t=0; at most
        `concurrency` in flight (later arrivals wait, and that wait is their client queue time). For
        multi-turn the arrivals are conversations; their later turns follow their answers."""
        rate = float(cell.rate or 0)
        repeat = f":r{source.repeat}" if source.repeat else ""  # repeat 0 keeps the arrivals of older runs
        rng = random.Random(f"{self.params.seed}:arrivals:{cell.label}{repeat}")
        sem = asyncio.Semaphore(cell.concurrency)
        tasks: Set["asyncio.Task[None]"] = set()
        stop = asyncio.ensure_future(self._either_stop())
        t0, offset = time.monotonic(), 0.0
        try:
            for _ in range(cell.units):
                scheduled = t0 + offset
                offset += rng.expovariate(rate)
                delay = scheduled - time.monotonic()
                if delay > 0:  # sleep until the arrival time, but wake up at once when the run stops
                    await asyncio.wait([stop], timeout=delay)
                if self.halted():
                    break
                spec = await source.get()
                if spec is None:
                    break
                spec.scheduled = scheduled
                self._arrive(spec, scheduled)
                task = asyncio.ensure_future(self._one_limited(sem, client, cell, spec))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*list(tasks))
        finally:
            stop.cancel()

    async def _either_stop(self) -> None:
        run = asyncio.ensure_future(self.stop_event.wait())
        cell = asyncio.ensure_future(self._cell_stop.wait())
        try:
            await asyncio.wait([run, cell], return_when=asyncio.FIRST_COMPLETED)
        finally:
            run.cancel()
            cell.cancel()

    def _arrive(self, spec: RequestSpec, at: float) -> None:
        self._arrivals[id(spec)] = at
        self._arrived += 1

    async def _one_limited(self, sem: asyncio.Semaphore, client: Any, cell: Cell, spec: RequestSpec) -> None:
        async with sem:
            await self._conversation(client, cell, spec)

    async def _conversation(self, client: Any, cell: Cell, spec: Optional[RequestSpec]) -> None:
        """One request, or a conversation turn by turn (each turn built once the previous answer is in)."""
        loop = asyncio.get_running_loop()
        while spec is not None:
            rec = await self._one(client, cell, spec)
            if rec is None or spec.session is None:
                return
            if not rec.ok:
                if rec.error not in (INTERRUPTED, STEP_STOPPED, SERVER_DIED):
                    self._broken(cell, spec, rec)
                return
            if self.halted():
                return
            try:
                spec = await loop.run_in_executor(None, self.builder.follow_up, spec, rec)
            except (HttpError, RuntimeError, ValueError) as exc:
                self.obs.message(f"Cannot build the next turn of {cell.label}: {exc}; stopping the run")
                self.request_stop(RunStatus.SERVER_DIED, f"cannot build requests: {exc}")
                return
            if spec is not None and not cell.rate:
                self._arrive(spec, time.monotonic())

    def _broken(self, cell: Cell, spec: RequestSpec, rec: RequestRecord) -> None:
        """The turns a failed turn leaves unsent are failures too: recorded, never silently dropped."""
        for k in range(1, self.builder.remaining_turns(spec) + 1):
            lost = RequestRecord(
                cell=cell.label,
                index=spec.index + k,
                api=spec.api,
                warmup=False,
                ok=False,
                error=SESSION_BROKEN,
                http_status=None,
                prompt_tokens_requested=0,
                max_tokens=spec.max_tokens,
                start_s=rec.start_s + (rec.e2e_ms or 0.0) / 1000.0,
                repeat=spec.repeat,
                session=spec.session,
                turn=(spec.turn or 0) + k,
            )
            cell.records.append(lost)
            self._record(lost, cell)

    async def _one(self, client: Any, cell: Cell, spec: RequestSpec) -> Optional[RequestRecord]:
        await self._may_send.wait()
        if self.halted():
            self._arrivals.pop(id(spec), None)
            return None
        if id(spec) not in self._arrivals:
            self._arrive(spec, time.monotonic())
        rec = await self._send(client, spec)
        self._arrivals.pop(id(spec), None)
        if rec.error == INTERRUPTED:
            if self._stop and self.state.status is RunStatus.SERVER_DIED:
                rec.error = SERVER_DIED
            elif not self._stop and self._cell_stop.is_set():
                rec.error = STEP_STOPPED
        cell.records.append(rec)
        self._record(rec, cell)
        if not rec.ok and rec.error not in (INTERRUPTED, SERVER_DIED, STEP_STOPPED):
            await self._check_server(rec)
        return rec

    def finish_partial(self) -> None:
        """After an abrupt stop: summarise the cell that was running from the records it has."""
        from .plan import CellStatus

        for cell in self.cells:
            if cell.status is CellStatus.PENDING and cell.records:
                finish_cell(cell, self.params, self.info, self.sampler, self.state.status, None, None)
