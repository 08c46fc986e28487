"""The benchmark engine: warm-up, request scheduling (closed loop or Poisson arrivals), /metrics and
energy sampling per cell, and crash-safe recording (each record goes to the sink as it finishes)."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from typing import Any, Callable, Dict, List, Optional, Set

from .. import stopping
from ..http import HttpClient, HttpError
from .payload import build_body
from .plan import BenchParams, Cell, CellStatus, Observer, RecordSink, RunState, RunStatus, warmup_shape
from .probe import ServerInfo
from .records import INTERRUPTED, SERVER_DIED, Api, RequestRecord, RequestSpec
from .sampler import MetricsSampler
from .stats import aggregate, warnings_for
from .workload import PromptFactory


def _delta(a: Optional[Dict[str, float]], b: Optional[Dict[str, float]], key: str) -> Optional[float]:
    if not a or not b or key not in a or key not in b:
        return None
    return b[key] - a[key] if b[key] >= a[key] else b[key]  # a counter reset means the server restarted


class Runner:
    def __init__(
        self,
        params: BenchParams,
        info: ServerInfo,
        api: Api,
        factory: PromptFactory,
        cells: List[Cell],
        sink: RecordSink,
        observer: Observer,
        alive: Optional[Callable[[], bool]] = None,
    ) -> None:
        self.params = params
        self.info = info
        self.api = api
        self.factory = factory
        self.cells = cells
        self.sink = sink
        self.obs = observer
        self.process_alive = alive  # when we started the server: is its process still running?
        self.state = RunState()
        self.sampler = MetricsSampler(
            params.endpoint, params.api_key, params.metrics_interval, info.metrics, params.energy and info.is_local
        )
        self._inflight: Set["asyncio.Task[RequestRecord]"] = set()
        self._stop = False
        self._stop_event = asyncio.Event()
        self._may_send = asyncio.Event()
        self._may_send.set()
        self._checking: Optional["asyncio.Future[None]"] = None
        self._health = HttpClient(params.endpoint, api_key=params.api_key, timeout=3.0)

    # -- lifecycle ---------------------------------------------------------------------------
    def alive(self) -> bool:
        """The server's process (when ours) runs and /health answers without a server error."""
        if self.process_alive is not None and not self.process_alive():
            return False
        try:
            return self._health.get("/health", timeout=3.0).status < 500
        except HttpError:
            return False

    def request_stop(self, status: RunStatus, reason: str) -> None:
        if self._stop:
            return
        self._stop = True
        self._stop_event.set()
        self.state.status, self.state.stop_reason = status, reason
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
        max_conc = max([c.concurrency for c in self.cells] or [1])
        try:
            async with StreamClient(
                self.params.endpoint,
                self.params.api_key,
                timeout=self.params.timeout,
                deadline=self.params.request_deadline,
                max_connections=max_conc + 4,
            ) as client:
                runnable = [c for c in self.cells if c.status is CellStatus.PENDING]
                self.obs.planned(self.cells, self.params.warmup if runnable else 0)
                if runnable and self.params.warmup:
                    await self._warmup(client)
                for cell in runnable:
                    if self._stop:
                        break
                    await self._run_cell(client, cell)
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
    def _spec(self, size: int, key: str, index: int, cell: str, warmup: bool, max_tokens: int) -> RequestSpec:
        mode_tokens = self.api is not Api.OPENAI_CHAT
        prompt = self.factory.make(size, key)
        payload: Any = prompt.token_ids if (mode_tokens and prompt.token_ids is not None) else prompt.text
        seed = self.params.seed * 100003 + index
        body = build_body(self.api, self.params, self.info, payload, seed)
        if max_tokens != self.params.max_output_tokens:
            body["n_predict" if self.api is Api.COMPLETION else "max_tokens"] = max_tokens
        return RequestSpec(
            index=index,
            api=self.api,
            body=body,
            prompt_tokens=size,
            max_tokens=max_tokens,
            cell=cell,
            warmup=warmup,
            prompt_verified=prompt.verified,
        )

    async def _warmup(self, client: Any) -> None:
        shape = warmup_shape(self.cells, self.params)
        if shape is None:
            return
        size, max_tokens = shape
        loop = asyncio.get_running_loop()
        for i in range(self.params.warmup):
            if self._stop:
                return
            spec = await loop.run_in_executor(None, self._spec, size, f"warmup:{i}", i, "warmup", True, max_tokens)
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
        # Requests are built lazily, a bounded number ahead of the sends: memory does not grow with
        # --num-requests, and what is built before the clock starts keeps tokenizer calls out of the timing.
        source = _SpecSource(self, cell)
        try:
            await source.prefilled()
            if self._stop:
                return
            self.sampler.cell = cell.label
            start_metrics = await self.sampler.scrape_now()
            self.sampler.energy_start()
            self.obs.cell_started(cell)
            if self.params.request_rate:
                await self._open_loop(client, cell, source)
            else:
                workers = min(cell.concurrency, cell.num_requests)
                await asyncio.gather(*(self._closed_loop_worker(client, cell, source) for _ in range(workers)))
        finally:
            source.close()
        end_metrics = await self.sampler.scrape_now()
        self._finish_cell(cell, start_metrics, end_metrics)
        self.sampler.cell = None
        self.obs.cell_done(cell)

    async def _closed_loop_worker(self, client: Any, cell: Cell, source: "_SpecSource") -> None:
        """One of `concurrency` workers: the next request starts as soon as this one's ended."""
        while not self._stop:
            spec = await source.get()
            if spec is None:
                return
            await self._one(client, cell, spec)

    async def _open_loop(self, client: Any, cell: Cell, source: "_SpecSource") -> None:
        """Poisson arrivals: exponential gaps with mean 1/rate, seeded per cell, the first at t=0; at most
        `concurrency` in flight (later arrivals wait, and that wait is their client queue time)."""
        rate = float(self.params.request_rate or 0)
        rng = random.Random(f"{self.params.seed}:arrivals:{cell.label}")
        sem = asyncio.Semaphore(cell.concurrency)
        tasks: Set["asyncio.Task[None]"] = set()
        t0, offset = time.monotonic(), 0.0
        for _ in range(cell.num_requests):
            scheduled = t0 + offset
            offset += rng.expovariate(rate)
            delay = scheduled - time.monotonic()
            if delay > 0:
                try:  # sleep until the arrival time, but wake up at once when the run stops
                    await asyncio.wait_for(self._stop_event.wait(), delay)
                except asyncio.TimeoutError:
                    pass
            if self._stop:
                break
            spec = await source.get()
            if spec is None:
                break
            spec.scheduled = scheduled
            task = asyncio.ensure_future(self._one_limited(sem, client, cell, spec))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*list(tasks))

    async def _one_limited(self, sem: asyncio.Semaphore, client: Any, cell: Cell, spec: RequestSpec) -> None:
        async with sem:
            await self._one(client, cell, spec)

    async def _one(self, client: Any, cell: Cell, spec: RequestSpec) -> None:
        await self._may_send.wait()
        if self._stop:
            return
        rec = await self._send(client, spec)
        if self._stop and rec.error == INTERRUPTED and self.state.status is RunStatus.SERVER_DIED:
            rec.error = SERVER_DIED
        cell.records.append(rec)
        self._record(rec, cell)
        if not rec.ok and rec.error not in (INTERRUPTED, SERVER_DIED):
            await self._check_server(rec)

    def finish_partial(self) -> None:
        """After an abrupt stop: summarise the cell that was running from the records it has."""
        for cell in self.cells:
            if cell.status is CellStatus.PENDING and cell.records:
                self._finish_cell(cell, None, None)

    def _finish_cell(self, cell: Cell, m0: Optional[Dict[str, float]], m1: Optional[Dict[str, float]]) -> None:
        cell.records.sort(key=lambda r: r.index)
        cell.summary = aggregate(cell.records, planned=cell.num_requests)
        cell.warnings.extend(warnings_for(cell.summary, self.params.max_output_tokens))
        if self.state.status is RunStatus.INTERRUPTED:
            cell.status = CellStatus.INTERRUPTED
        elif self.state.status is RunStatus.SERVER_DIED:
            cell.status = CellStatus.ABORTED
        else:
            cell.status = CellStatus.DONE
        samples = self.sampler.cell_samples(cell.label)
        if m0 is not None or samples:

            def peak(key: str) -> Optional[float]:
                vals = [s[key] for s in samples if key in s]
                return max(vals) if vals else None

            cell.server_metrics = {
                "prompt_tokens": _delta(m0, m1, "prompt_tokens_total"),
                "gen_tokens": _delta(m0, m1, "tokens_predicted_total"),
                "requests_deferred_max": peak("requests_deferred"),
                "requests_processing_max": peak("requests_processing"),
                "samples": len(samples),
            }
            deferred = cell.server_metrics["requests_deferred_max"]
            if deferred:
                cell.warnings.append(f"the server deferred up to {deferred:g} request(s) (all slots busy)")
        cell.energy = self._energy(cell)

    def _energy(self, cell: Cell) -> Dict[str, Any]:
        from ..power.meter import joules_to_wh, tokens_per_joule

        if not self.params.energy:
            return {"available": False, "reason": "disabled"}
        if not self.info.is_local:
            return {"available": False, "reason": "the server is not on this machine"}
        summary = self.sampler.energy_read()
        if summary is None or summary.total_joules is None:
            reasons = [] if summary is None else [r for r in (summary.cpu_reason, summary.gpu_reason) if r]
            return {"available": False, "reason": "; ".join(reasons) or "no energy source"}
        tp = cell.summary.throughput if cell.summary else None
        gen = tp.gen_tokens if tp else None
        total = (tp.prompt_tokens if tp else 0) + (gen or 0)
        return {
            "available": True,
            "cpu_j": summary.cpu_joules,
            "gpu_j": summary.gpu_joules,
            "total_j": summary.total_joules,
            "wh": joules_to_wh(summary.total_joules),
            "gen_tokens_per_j": tokens_per_joule(gen, summary.total_joules),
            "tokens_per_j": tokens_per_joule(total, summary.total_joules),
            "cpu_reason": summary.cpu_reason,
            "gpu_reason": summary.gpu_reason,
            "note": "whole machine (client included): RAPL package energy + NVML GPU energy",
        }


LOOKAHEAD_MAX = 256  # requests built ahead of the sends
LOOKAHEAD_TOKENS = 32_000_000  # ... and no more prompt tokens than this held at once


class _SpecSource:
    """The requests of one cell, built in order in a worker thread (tokenizer calls block), at most
    `lookahead` ahead of the sends; get() returns None when there are no more or the run stops."""

    def __init__(self, runner: Runner, cell: Cell) -> None:
        self.runner = runner
        self.cell = cell
        self.lookahead = max(
            1,
            min(cell.num_requests, max(8, 4 * cell.concurrency), LOOKAHEAD_MAX, LOOKAHEAD_TOKENS // cell.prompt_size),
        )
        self.queue: "asyncio.Queue[Optional[RequestSpec]]" = asyncio.Queue(maxsize=self.lookahead)
        self._full = asyncio.Event()
        self._done = False
        self._task = asyncio.ensure_future(self._produce())

    async def _produce(self) -> None:
        loop = asyncio.get_running_loop()
        runner, cell = self.runner, self.cell
        mt = runner.params.max_output_tokens
        try:
            for i in range(cell.num_requests):
                if runner._stop:
                    break
                try:
                    spec = await loop.run_in_executor(
                        None, runner._spec, cell.prompt_size, f"{cell.label}:{i}", i, cell.label, False, mt
                    )
                except (HttpError, RuntimeError, ValueError) as exc:  # the tokenizer stopped answering
                    runner.obs.message(f"Cannot build request {i} of {cell.label}: {exc}; stopping the run")
                    runner.request_stop(RunStatus.SERVER_DIED, f"cannot build requests: {exc}")
                    break
                await self.queue.put(spec)
                if self.queue.full():
                    self._full.set()
        finally:
            self._done = True
            self._full.set()
            for _ in range(cell.concurrency + 1):  # wake every consumer waiting on an empty queue
                if self.queue.full():
                    break
                self.queue.put_nowait(None)

    async def prefilled(self) -> None:
        """Wait until `lookahead` requests are built (or all of them): the clock starts after this."""
        full = asyncio.ensure_future(self._full.wait())
        stop = asyncio.ensure_future(self.runner._stop_event.wait())
        try:
            await asyncio.wait([full, stop], return_when=asyncio.FIRST_COMPLETED)
        finally:
            full.cancel()
            stop.cancel()

    async def get(self) -> Optional[RequestSpec]:
        if self._done and self.queue.empty():
            return None
        spec = await self.queue.get()
        if spec is None and not self.queue.full():
            self.queue.put_nowait(None)  # pass the end on to the next consumer
        return spec

    def close(self) -> None:
        self._task.cancel()
