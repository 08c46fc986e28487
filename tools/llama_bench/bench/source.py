"""The first requests of one cell run (one repeat), built lazily in a worker thread ahead of the sends."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Optional, Protocol

from ..http import HttpError
from .plan import Cell, Observer, RunStatus
from .records import RequestSpec

if TYPE_CHECKING:
    from .builder import RequestBuilder


class Engine(Protocol):
    """What a SpecSource needs of the engine running it (runner.Runner)."""

    builder: "RequestBuilder"
    obs: Observer
    stop_event: asyncio.Event

    def halted(self) -> bool: ...

    def request_stop(self, status: RunStatus, reason: str) -> None: ...


LOOKAHEAD_MAX = 256  # requests built ahead of the sends
LOOKAHEAD_TOKENS = 32_000_000  # ... and no more prompt tokens than this held at once
DATASET_SIZE_GUESS = 1000  # a dataset cell has no one prompt size; its lookahead assumes this one


class SpecSource:
    """The requests of one cell run (for multi-turn: each conversation's first turn), built in order in a
    worker thread (tokenizer calls block), at most `lookahead` ahead of the sends; get() returns None
    when there are no more or the run stops. Memory does not grow with --num-requests, and what is built
    before the clock starts keeps tokenizer calls out of the timing."""

    def __init__(self, runner: Engine, cell: Cell, repeat: int) -> None:
        self.runner = runner
        self.cell = cell
        self.repeat = repeat
        size = cell.prompt_size or DATASET_SIZE_GUESS
        self.lookahead = max(
            1, min(cell.units, max(8, 4 * cell.concurrency), LOOKAHEAD_MAX, LOOKAHEAD_TOKENS // (size * cell.turns))
        )
        self.queue: "asyncio.Queue[Optional[RequestSpec]]" = asyncio.Queue(maxsize=self.lookahead)
        self._full = asyncio.Event()
        self._done = False
        self._task = asyncio.ensure_future(self._produce())

    async def _produce(self) -> None:
        loop = asyncio.get_running_loop()
        runner, cell = self.runner, self.cell
        build = runner.builder.first
        try:
            for i in range(cell.units):
                if runner.halted():
                    break
                try:
                    spec = await loop.run_in_executor(None, build, cell, i, self.repeat)
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
        stop = asyncio.ensure_future(self.runner.stop_event.wait())
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
