"""The verification after the search: finalists and llama-server's defaults re-measured interleaved, the
best reported with a 95 % interval, and "no significant gain" when the intervals overlap."""

from __future__ import annotations

from typing import Dict, List

from tools.llama_bench.outputs import output_path
from tools.llama_bench.tune.journal import Journal
from tools.llama_bench.tune.observer import SilentTuneObserver
from tools.llama_bench.tune.space import Candidate, candidate_key
from tools.llama_bench.tune.trial import FailureKind, Trial, TrialStatus
from tools.llama_bench.tune.verify import Finalist, judge, mean_ci, pick_finalists, verify


def finalist(label: str, values: List[float], candidate=None) -> Finalist:
    trial = Trial(1, candidate or {"threads": 1}, TrialStatus.OK, values=values, phase="verify")
    return Finalist(label, candidate if candidate is not None else {"threads": len(label)}, [trial])


def test_a_clear_gain_is_reported_with_its_ratio():
    v = judge([finalist("defaults", [50, 51, 49, 50], {}), finalist("#1", [100, 101, 99, 100])])
    assert v.best is not None and v.best.label == "#1"
    assert v.significant is True and abs((v.ratio or 0) - 2.0) < 0.01
    assert "2.00x llama-server's defaults" in v.verdict


def test_overlapping_intervals_are_no_significant_gain():
    v = judge([finalist("defaults", [98, 104, 95, 103], {}), finalist("#1", [101, 99, 106, 100])])
    assert v.significant is False
    assert v.verdict.startswith("no significant gain")


def test_defaults_that_fail_leave_the_best_as_what_works():
    failed = Trial(1, {}, TrialStatus.FAILED, failure=FailureKind.CRASH, reason="boom", phase="verify")
    v = judge([Finalist("defaults", {}, [failed]), finalist("#1", [10, 11])])
    assert v.ratio is None and "defaults failed here (boom)" in v.verdict


def test_defaults_that_win_are_said_so():
    v = judge([finalist("defaults", [100, 101, 99], {}), finalist("#1", [50, 51, 49])])
    assert v.significant is True and (v.ratio or 1) < 1 and "keep the defaults" in v.verdict


def test_the_interval_is_students_t():
    ci = mean_ci([10.0, 12.0, 11.0, 13.0])
    assert ci is not None and ci.n == 4 and ci.mean == 11.5
    assert abs((ci.high - ci.mean) - 3.182 * 1.2910 / 2) < 0.01  # t(0.975, 3) * s / sqrt(n)
    one = mean_ci([5.0])
    assert one is not None and one.low == one.high == 5.0


def test_finalists_are_the_best_distinct_search_candidates():
    trials = [
        Trial(1, {"threads": 1}, TrialStatus.OK, values=[10.0]),
        Trial(2, {"threads": 2}, TrialStatus.OK, values=[30.0]),
        Trial(3, {"threads": 3}, TrialStatus.FAILED),
        Trial(4, {"threads": 4}, TrialStatus.OK, values=[20.0]),
        Trial(5, {}, TrialStatus.OK, values=[99.0]),  # the defaults themselves are measured anyway
    ]
    assert pick_finalists(trials, 2) == [{"threads": 2}, {"threads": 4}]


class RecordingRunner:
    def __init__(self, values: Dict[str, float]) -> None:
        self.values = values
        self.order: List[str] = []

    def run(self, number, candidate: Candidate, repeats, keep_going=None, progress=None, phase="search") -> Trial:
        key = candidate_key(candidate)
        self.order.append(key)
        return Trial(number, dict(candidate), TrialStatus.OK, values=[self.values[key]] * repeats, phase=phase)


def test_finalists_and_defaults_are_measured_interleaved_and_resumed_from_the_journal(tmp_path):
    out = output_path(str(tmp_path / "j.jsonl"), "--journal")
    assert out is not None
    a, b = {"threads": 1}, {"threads": 2}
    runner = RecordingRunner({candidate_key({}): 5.0, candidate_key(a): 9.0, candidate_key(b): 7.0})
    journal = Journal(out, {"s": 1}).open()
    v = verify(runner, journal, SilentTuneObserver(), [a, b], rounds=3, repeats=2)  # type: ignore[arg-type]
    journal.close()
    d, ka, kb = candidate_key({}), candidate_key(a), candidate_key(b)
    assert runner.order == [d, ka, kb, ka, kb, d, kb, d, ka]  # each round starts one later
    assert v.best is not None and v.best.candidate == a and len(v.best.values) == 6
    rerun = RecordingRunner(runner.values)
    journal = Journal(out, {"s": 1}).open()
    again = verify(rerun, journal, SilentTuneObserver(), [a, b], rounds=3, repeats=2)  # type: ignore[arg-type]
    journal.close()
    assert rerun.order == [] and again.verdict == v.verdict
