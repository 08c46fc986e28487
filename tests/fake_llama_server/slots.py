"""The server's slots: their KV caches, the task each one runs, and the queue of requests waiting for one."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from .common import ClientGone


@dataclass
class Task:
    """Progress of the request a slot is processing, as /slots shows it."""

    id: int
    n_prompt: int  # all prompt tokens, cached ones included
    n_cache: int
    limit: int  # -1: no limit
    prefill_start: float
    prefill_end: float
    n_decoded: int = 0


@dataclass
class Slot:
    id: int
    n_ctx: int
    used: bool = False  # a slot that never ran a task shows the short /slots entry, like the real server
    busy: bool = False
    id_task: int = -1
    t_last: float = -1.0
    cache: List[int] = field(default_factory=list)  # tokens left in this slot's KV cache
    params: Dict[str, Any] = field(default_factory=dict)
    task: Optional[Task] = None

    def view(self, now: float, prompt_tps: float) -> Dict[str, Any]:
        base: Dict[str, Any] = {"id": self.id, "n_ctx": self.n_ctx, "speculative": False, "is_processing": self.busy}
        if not self.used:
            return base
        task = self.task
        if task is None:
            n_prompt = processed = cached = decoded = 0
            nxt = {"has_next_token": False, "has_new_line": False, "n_remain": -1, "n_decoded": 0}
        else:
            n_prompt, cached, decoded = task.n_prompt + task.n_decoded, task.n_cache, task.n_decoded
            todo = task.n_prompt - task.n_cache
            # Prompt processing advances over time, as the real slot's batches do.
            done = todo if now >= task.prefill_end else int((now - task.prefill_start) * prompt_tps)
            processed = max(0, min(todo, done))
            remain = task.limit - decoded if task.limit >= 0 else -1
            nxt = {"has_next_token": True, "has_new_line": False, "n_remain": remain, "n_decoded": decoded}
        return base | {
            "id_task": self.id_task,
            "n_prompt_tokens": n_prompt,
            "n_prompt_tokens_processed": processed,
            "n_prompt_tokens_cache": cached,
            "params": self.params,
            "next_token": [nxt],
        }


def common_prefix(a: List[int], b: List[int]) -> int:
    """Length of the shared prefix; bisects with slice comparisons, which run in C."""
    lo, hi = 0, min(len(a), len(b))
    if hi == 0 or a[0] != b[0]:
        return 0
    if a[:hi] == b[:hi]:
        return hi
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


class SlotPool:
    """The server's slots; requests beyond them wait in FIFO order (llama.cpp's deferred queue)."""

    def __init__(self, n_slots: int, n_ctx: int) -> None:
        self.slots = [Slot(i, n_ctx) for i in range(n_slots)]
        self.waiters: Deque[asyncio.Future] = deque()
        self.busy = 0  # kept as a count: it is read for every generated token

    @property
    def deferred(self) -> int:
        return len(self.waiters)

    def pick(self, prompt: List[int], use_cache: bool) -> Tuple[Optional[Slot], str]:
        """Like llama.cpp: the free slot whose cache shares most of the prompt, else the least recently used."""
        free = [s for s in self.slots if not s.busy]
        if not free:
            return None, ""
        if use_cache and prompt:
            best, best_len = None, 0
            for slot in free:
                n = common_prefix(slot.cache, prompt)
                if n > best_len:
                    best, best_len = slot, n
            if best is not None and best_len / len(prompt) > 0.1:
                return (
                    best,
                    f"selected slot by LCP similarity, f_sim_best = {best_len / len(prompt):.3f} (> 0.100 thold)",
                )
        lru = min(free, key=lambda s: (s.t_last, -s.id))
        return lru, f"selected slot by LRU, t_last = {int(lru.t_last * 1e6) if lru.t_last >= 0 else -1}"

    async def acquire(self, prompt: List[int], use_cache: bool, gone: Callable[[], bool]) -> Tuple[Slot, str, bool]:
        """(slot, why it was chosen, whether the request had to wait for it).

        A waiting request whose client hangs up leaves the queue (ClientGone), as in llama.cpp.
        """
        if not self.waiters:
            slot, why = self.pick(prompt, use_cache)
            if slot is not None:
                slot.busy = True
                self.busy += 1
                return slot, why, False
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        try:
            while not fut.done():
                await asyncio.wait([fut], timeout=0.2)
                if not fut.done() and gone():
                    raise ClientGone()
        except (asyncio.CancelledError, ClientGone):
            if fut.done() and not fut.cancelled():
                self.release(fut.result())  # handed a slot just as we gave up: pass it on
            else:
                fut.cancel()
                if fut in self.waiters:
                    self.waiters.remove(fut)
            raise
        return fut.result(), "selected slot freed by a finished task", True

    def release(self, slot: Slot) -> None:
        slot.task = None
        slot.t_last = time.monotonic()
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(slot)  # handed straight to the oldest waiter: it stays busy
                return
        slot.busy = False
        self.busy -= 1
