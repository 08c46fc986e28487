"""The one periodic schedule of every sampling loop: drift-free, skips missed ticks, stoppable."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import List

import pytest

from tools.llama_bench.ticker import Ticker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_ticks_are_due_on_a_fixed_grid_whatever_the_loop_body_takes():
    clock = Clock()
    ticker = Ticker(1.0, clock=clock)
    assert ticker.due()  # the first tick is at once
    assert not ticker.due()
    clock.now = 101.3  # the body took 0.3 s longer than one interval: the next tick is still at 102
    assert ticker.due() and ticker.next_due == 102.0
    clock.now = 101.9
    assert not ticker.due()


def test_a_late_tick_skips_the_missed_ones_instead_of_bursting():
    clock = Clock()
    ticker = Ticker(1.0, clock=clock)
    ticker.due()
    clock.now = 104.5  # 3.5 intervals late (a slow scrape)
    assert ticker.due()
    assert ticker.next_due == 105.0  # same phase, no burst of catch-up ticks
    assert not ticker.due()


def test_wait_returns_false_at_the_deadline_and_after_stop():
    ticker = Ticker(10.0)
    assert ticker.wait()  # first tick at once
    start = time.monotonic()
    assert ticker.wait(deadline=start + 0.05) is False
    assert time.monotonic() - start < 5
    threading.Timer(0.05, ticker.stop).start()
    assert ticker.wait() is False and ticker.stopped


def test_wait_keeps_the_period():
    ticker = Ticker(0.05)
    stamps: List[float] = []
    while len(stamps) < 5 and ticker.wait():
        stamps.append(time.monotonic())
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert all(g > 0.03 for g in gaps), gaps


def test_async_wait_follows_the_same_schedule():
    async def main() -> List[float]:
        ticker = Ticker(0.05)
        stamps = []
        for _ in range(3):
            await ticker.wait_async()
            stamps.append(time.monotonic())
        return stamps

    stamps = asyncio.run(main())
    assert stamps[2] - stamps[0] > 0.08


def test_interval_must_be_positive():
    with pytest.raises(ValueError):
        Ticker(0)
