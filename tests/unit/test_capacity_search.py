"""The capacity search's decisions, against a simulated server whose SLO holds up to a known value:
calibration, bracket, bisection to --precision, the boundary re-check, the limits, and the early stop
of a step that can no longer pass or is clearly saturated."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

import pytest

from tools.llama_bench.bench.capacity import (
    CapacityParams,
    CapacitySearch,
    Outcome,
    Phase,
    SearchBy,
    check_params,
    requests_per_step,
)
from tools.llama_bench.bench.output.capacity import VERDICTS, capacity_line
from tools.llama_bench.bench.plan import BenchParams, Cell, CellProgress, CellStatus
from tools.llama_bench.bench.probe import ServerInfo
from tools.llama_bench.bench.records import Api, RequestRecord
from tools.llama_bench.bench.saturation import StepWatch
from tools.llama_bench.bench.slo import parse_slo
from tools.llama_bench.bench.stats import aggregate
from tools.llama_bench.utils import UserError

SLO = parse_slo("ttft_p90=1s")


def rec(i: int, ttft: float, e2e: float = 200.0, queue: Optional[float] = None) -> RequestRecord:
    return RequestRecord(
        cell="c", index=i, api=Api.COMPLETION, warmup=False, ok=True, error=None, http_status=200,
        prompt_tokens_requested=100, max_tokens=8, start_s=float(i), ttft_ms=ttft, e2e_ms=e2e, output_tokens=8,
        queue_ms=queue,
    )  # fmt: skip


def params(**kw: Any) -> BenchParams:
    base: Dict[str, Any] = dict(endpoint="http://x", prompt_sizes=[100], concurrency=[1], max_output_tokens=8, slo=SLO)
    base.update(kw)
    return BenchParams(**base)


def search(cap: CapacityParams, slots: int = 4) -> CapacitySearch:
    p = params()
    planned = [Cell(0, 100, 1, 3)]
    return CapacitySearch(p, cap, ServerInfo("http://x", True, total_slots=slots), planned)


def drive(s: CapacitySearch, holds: Callable[[float], bool], calibration_ok: bool = True) -> List[Cell]:
    """Run the search against a server on which the SLO holds exactly where `holds(value)` says."""
    cell = s.next_cell(None)
    done: List[Cell] = []
    while cell is not None:
        step = cell.step or {}
        if step["phase"] == Phase.CALIBRATE:
            good = calibration_ok
        else:
            good = holds(float(step["value"]))
        n = min(cell.num_requests, 20)
        cell.records = [rec(i, 100.0 if good else 5000.0) for i in range(n)]
        cell.summary = aggregate(cell.records, slo=SLO)
        cell.status = CellStatus.DONE
        done.append(cell)
        cell = s.next_cell(cell)
        assert len(done) < 40, "the search does not end"
    return done


def test_calibration_turns_service_time_and_slots_into_the_first_estimate() -> None:
    s = search(CapacityParams())
    calibrate = s.next_cell(None)
    assert calibrate is not None and calibrate.rate is None and calibrate.concurrency == 1
    calibrate.records = [rec(i, 100.0, e2e=250.0) for i in range(3)]
    calibrate.summary = aggregate(calibrate.records, slo=SLO)
    calibrate.status = CellStatus.DONE
    first = s.next_cell(calibrate)
    assert s.service_time_s == pytest.approx(0.25)
    assert s.estimate == pytest.approx(4 / 0.25)  # 4 slots, 0.25 s each
    assert first is not None and first.rate == pytest.approx(8.0)  # the bracket starts at half of it
    assert first.watch is not None and first.concurrency >= 32  # arrivals queue in the server, not in us


@pytest.mark.parametrize("truth", [3.3, 11.0, 16.0, 23.0, 90.0])
def test_rate_search_ends_with_a_narrow_bracket_around_the_truth(truth: float) -> None:
    s = search(CapacityParams(precision=0.1))
    cells = drive(s, lambda v: v <= truth)
    result = s.result()
    assert result["outcome"] == Outcome.FOUND
    lo, hi = result["lower"], result["upper"]
    assert lo <= truth < hi and hi <= lo * 1.1 + 1e-9
    assert result["capacity"] == lo and result["relative_uncertainty"] == pytest.approx(hi / lo - 1)
    phases = [c.step["phase"] for c in cells if c.step]
    assert phases[0] == Phase.CALIBRATE and Phase.RECHECK in phases
    assert [p["value"] for p in result["curve"]] == sorted(p["value"] for p in result["curve"])


def test_a_boundary_that_fails_its_recheck_moves_the_answer_down() -> None:
    seen: Dict[float, int] = {}

    def flaky(v: float) -> bool:  # holds to 12, and holds once more at the first value it passed above 10
        seen[v] = seen.get(v, 0) + 1
        return v <= 10.0 or (v <= 12.0 and seen[v] == 1)

    s = search(CapacityParams(precision=0.1))
    drive(s, flaky)
    result = s.result()
    assert result["outcome"] == Outcome.FOUND and result["capacity"] <= 10.0


def test_max_rate_caps_the_search_and_says_at_least() -> None:
    s = search(CapacityParams(max_rate=5.0))
    cells = drive(s, lambda v: True)
    assert all((c.rate or 0) <= 5.0 for c in cells)
    result = s.result()
    assert result["outcome"] == Outcome.AT_LEAST and result["capacity"] == 5.0
    assert "at least 5 req/s" in capacity_line(result)


def test_an_slo_that_holds_when_a_step_is_one_burst_says_at_least_instead_of_doubling_on() -> None:
    # 4 slots of 0.2 s: the bracket starts at 10 req/s; at 40 req/s a step's 6 arrivals span 0.125 s, less
    # than one service time, so every higher rate would send the same burst.
    s = search(CapacityParams(requests_per_step=6))
    cells = drive(s, lambda v: True)
    result = s.result()
    assert result["outcome"] == Outcome.AT_LEAST and result["capacity"] == pytest.approx(40.0)
    assert [c.rate for c in cells[1:]] == pytest.approx([10.0, 20.0, 40.0])
    assert "arrive within one service time" in (result["reason"] or "")
    assert "at least 40 req/s" in capacity_line(result)


def test_without_a_step_size_the_steps_grow_with_the_rate_and_the_search_still_ends() -> None:
    s = search(CapacityParams(max_steps=40))
    cells = drive(s, lambda v: True)
    result = s.result()
    assert result["outcome"] == Outcome.AT_LEAST and result["capacity"] >= 2000 / 0.2
    assert cells[-1].num_requests == 2000


def test_a_search_the_run_ended_early_is_incomplete_with_the_runs_reason() -> None:
    s = search(CapacityParams())
    first = s.next_cell(None)
    assert first is not None
    first.records = [rec(i, 100.0) for i in range(3)]
    first.summary, first.status = aggregate(first.records, slo=SLO), CellStatus.DONE
    step = s.next_cell(first)  # the first step; Ctrl-C comes during it
    assert step is not None
    step.records = [rec(i, 100.0) for i in range(5)]
    step.summary = aggregate(step.records, slo=SLO)
    step.status = CellStatus.INTERRUPTED
    result = s.result("interrupted by the user")
    assert (result["outcome"], result["reason"]) == (Outcome.INCOMPLETE, "interrupted by the user")
    assert capacity_line(result) == "capacity: unknown — incomplete: interrupted by the user"
    [point] = result["curve"]
    assert point["passed"] is None  # never judged: shown as cut short, not as missed
    assert VERDICTS[point["passed"]] == "cut short"


def test_an_slo_missed_at_a_light_load_means_capacity_zero() -> None:
    s = search(CapacityParams())
    cells = drive(s, lambda v: False, calibration_ok=False)
    assert len(cells) == 2 and cells[1].step is not None and cells[1].step.get("light")
    result = s.result()
    assert result["outcome"] == Outcome.NONE and result["capacity"] == 0.0
    assert capacity_line(result).startswith("capacity: 0")


def test_a_calibration_that_missed_by_chance_does_not_end_the_search() -> None:
    s = search(CapacityParams())
    drive(s, lambda v: v <= 6.0, calibration_ok=False)
    result = s.result()
    assert result["outcome"] == Outcome.FOUND and 5.4 <= result["capacity"] <= 6.0


def test_concurrency_search_finds_the_slot_count_in_whole_steps() -> None:
    s = search(CapacityParams(by=SearchBy.CONCURRENCY), slots=4)
    cells = drive(s, lambda c: c <= 4)
    result = s.result()
    assert result["outcome"] == Outcome.FOUND and result["capacity"] == 4 and result["upper"] == 5
    steps = [c for c in cells if c.step and c.step["phase"] != Phase.CALIBRATE]
    assert steps[0].concurrency == 4 and all(c.rate is None for c in steps)
    assert all(float(c.concurrency) == c.step["value"] for c in steps if c.step)
    assert all(c.num_requests >= 3 * c.concurrency for c in steps)


def test_requests_per_step_follow_the_percentile() -> None:
    assert requests_per_step(50, slots=1) == 30
    assert requests_per_step(90, slots=1) == 100
    assert requests_per_step(99, slots=1) == 1000
    assert requests_per_step(99.9, slots=1) == 1000
    assert requests_per_step(50, slots=16) == 64
    s = search(CapacityParams(requests_per_step=17))
    cells = drive(s, lambda v: v <= 10)
    assert all(c.num_requests == 17 for c in cells if c.step and c.step["phase"] != Phase.CALIBRATE)


def test_a_rate_step_lasts_long_enough_for_an_overload_to_show() -> None:
    s = search(CapacityParams(precision=0.1))
    cells = drive(s, lambda v: v <= 40)
    # ttft_p90 <= 1 s with 100 ms measured: 0.9 s of slack / 0.1 -> at least 9 s per step.
    assert s.min_step_s == pytest.approx(9.0)
    for c in cells[1:]:
        assert c.rate is not None and c.num_requests >= min(2000, c.rate * 9.0)


def test_what_a_search_cannot_do_is_one_line() -> None:
    with pytest.raises(UserError, match="needs --slo"):
        check_params(params(slo=None), CapacityParams())
    with pytest.raises(UserError, match="one prompt size"):
        check_params(params(prompt_sizes=[100, 200]), CapacityParams())
    with pytest.raises(UserError, match="--repeats"):
        check_params(params(repeats=3), CapacityParams())
    with pytest.raises(UserError, match="--precision"):
        check_params(params(), CapacityParams(precision=1.5))


# -- the early stop -------------------------------------------------------------------------------------
def progress(finished: List[RequestRecord], **kw: Any) -> CellProgress:
    base: Dict[str, Any] = dict(elapsed_s=1.0, planned=100, arrived=len(finished), finished=finished, waiting_s=[],
                                deferred=[])  # fmt: skip
    base.update(kw)
    return CellProgress(**base)


def test_a_step_stops_once_more_requests_missed_than_the_percentile_allows() -> None:
    watch = StepWatch(SLO, slots=4, open_loop=True)
    slow = [rec(i, 5000.0) for i in range(10)]  # p90 of 100 allows 10 misses
    assert watch.check(progress(slow)) is None
    reason = watch.check(progress(slow + [rec(10, 5000.0)]))
    assert reason and "can no longer be met" in reason and "11 of 100" in reason


def test_requests_waiting_past_an_e2e_bound_count_as_misses_already() -> None:
    watch = StepWatch(parse_slo("e2e_p50=2s"), slots=4, open_loop=True)
    assert watch.check(progress([], waiting_s=[3.0] * 50)) is None
    assert watch.check(progress([], waiting_s=[3.0] * 51)) is not None


def test_a_queue_that_keeps_growing_with_ttft_and_deferred_is_saturation() -> None:
    loose = parse_slo("ttft_p50=60s")  # never out of reach: only saturation can stop the step
    watch = StepWatch(loose, slots=2, open_loop=True)
    finished: List[RequestRecord] = []
    reason = None
    for tick in range(40):  # 10 s: arrivals at 10/s, completions at 5/s
        t = tick * 0.25
        arrived = int(10 * t)
        while len(finished) < int(5 * t):
            finished.append(rec(len(finished), ttft=100.0 + 200.0 * len(finished)))
        deferred = [float(x) for x in range(tick + 1)]
        reason = watch.check(progress(list(finished), elapsed_s=t, planned=1000, arrived=arrived, deferred=deferred))
        if reason:
            break
    assert reason and reason.startswith("saturated:") and "requests_deferred" in reason
    assert t >= 6.0  # three 2 s windows of growth first


def test_a_steady_queue_or_a_closed_loop_is_not_saturation() -> None:
    loose = parse_slo("ttft_p50=60s")
    for open_loop, grows in ((True, False), (False, True)):
        watch = StepWatch(loose, slots=2, open_loop=open_loop)
        finished: List[RequestRecord] = []
        for tick in range(60):
            t = tick * 0.25
            while len(finished) < int(5 * t):
                finished.append(rec(len(finished), ttft=100.0 + (200.0 * len(finished) if grows else 0.0)))
            arrived = int(10 * t) if grows else len(finished) + 3
            assert watch.check(progress(list(finished), elapsed_s=t, planned=1000, arrived=arrived)) is None


def test_deferred_not_rising_vetoes_saturation() -> None:
    watch = StepWatch(parse_slo("ttft_p50=60s"), slots=2, open_loop=True)
    finished: List[RequestRecord] = []
    for tick in range(60):
        t = tick * 0.25
        while len(finished) < int(5 * t):
            finished.append(rec(len(finished), ttft=100.0 + 200.0 * len(finished)))
        check = progress(list(finished), elapsed_s=t, planned=1000, arrived=int(10 * t), deferred=[0.0] * (tick + 1))
        assert watch.check(check) is None
