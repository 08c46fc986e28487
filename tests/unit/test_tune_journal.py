"""The autotune journal: one JSON line per trial, flushed at once; a rerun with it continues where the
last one stopped, and a journal of another study is refused."""

from __future__ import annotations

import json
from typing import List, Optional

import pytest

from tools.llama_bench.outputs import output_path
from tools.llama_bench.tune.journal import Journal, read_journal
from tools.llama_bench.tune.objective import Objective
from tools.llama_bench.tune.observer import SilentTuneObserver
from tools.llama_bench.tune.search import Budget, SearchContext
from tools.llama_bench.tune.space import Candidate, Space
from tools.llama_bench.tune.strategies import run_strategy
from tools.llama_bench.tune.trial import FailureKind, Trial, TrialStatus
from tools.llama_bench.utils import UserError

STUDY = {"model": "/m.gguf", "binary": "/llama-server", "workload": {"objective": "gen"}}


def journal(path, study=None) -> Journal:
    out = output_path(str(path), "--journal")
    assert out is not None
    return Journal(out, study or STUDY).open()


class FakeRunner:
    """Stands in for TrialRunner: a known value per candidate, some failing; counts launches."""

    def __init__(self, fails=lambda c: False) -> None:
        self.launched: List[Candidate] = []
        self.fails = fails

    def run(self, number, candidate, repeats, keep_going=None, progress=None, phase="search") -> Trial:
        self.launched.append(dict(candidate))
        if self.fails(candidate):
            return Trial(number, dict(candidate), TrialStatus.FAILED, failure=FailureKind.CRASH, reason="boom")
        value = 10.0 * int(candidate["threads"]) + (5.0 if candidate.get("flash_attn") == "on" else 0.0)
        return Trial(number, dict(candidate), TrialStatus.OK, values=[value] * repeats, phase=phase)


def search(path, runner, budget: Optional[int] = None, strategy: str = "grid") -> SearchContext:
    space = Space({"threads": [1, 2, 3], "flash_attn": ["on", "off"]}, start={"threads": 3, "flash_attn": "on"})
    j = journal(path)
    ctx = SearchContext(space, runner, j, SilentTuneObserver(), 2, Budget(trials=budget))  # type: ignore[arg-type]
    run_strategy(strategy, ctx, Objective.GEN)
    j.close()
    return ctx


def test_every_trial_is_a_flushed_json_line_after_a_header(tmp_path):
    path = tmp_path / "j.jsonl"
    j = journal(path)
    j.append(Trial(1, {"threads": 2}, TrialStatus.OK, values=[3.0, 4.0]))
    lines = path.read_text(encoding="utf-8").splitlines()  # before close: already on disk
    header, trial = json.loads(lines[0]), json.loads(lines[1])
    assert header["type"] == "header" and header["schema"].startswith("llama-studio.autotune-journal/")
    assert header["study"] == STUDY
    assert trial["type"] == "trial" and trial["candidate"] == {"threads": 2} and trial["mean"] == 3.5
    j.close()


def test_a_rerun_continues_without_launching_known_trials_again(tmp_path):
    path = tmp_path / "j.jsonl"
    first = FakeRunner(fails=lambda c: c["threads"] == 2)
    ctx = search(path, first, budget=4)
    assert len(first.launched) == 4
    again = FakeRunner(fails=lambda c: c["threads"] == 2)
    ctx = search(path, again, budget=None)
    assert len(again.launched) == 2  # the 4 journaled ones (one failed) are neither re-run nor retried
    assert {str(c) for c in again.launched}.isdisjoint({str(c) for c in first.launched})
    _, trials, _ = read_journal(str(path))
    assert len(trials) == 6 and [t.number for t in trials] == [1, 2, 3, 4, 5, 6]
    best = ctx.best()
    assert best is not None and best.candidate == {"threads": 3, "flash_attn": "on"}


def test_the_trial_budget_counts_journaled_trials(tmp_path):
    path = tmp_path / "j.jsonl"
    search(path, FakeRunner(), budget=3)
    runner = FakeRunner()
    search(path, runner, budget=3)
    assert runner.launched == []


def test_smart_replays_its_path_from_the_journal(tmp_path):
    path = tmp_path / "j.jsonl"
    first = FakeRunner()
    search(path, first, budget=2, strategy="smart")
    rest = FakeRunner()
    search(path, rest, strategy="smart")
    done = first.launched + rest.launched
    assert len(done) == len({str(c) for c in done})  # nothing measured twice
    assert len(first.launched) == 2 and rest.launched


def test_a_journal_of_another_study_is_refused(tmp_path):
    path = tmp_path / "j.jsonl"
    journal(path).close()
    with pytest.raises(UserError) as info:
        journal(path, {**STUDY, "workload": {"objective": "prompt"}})
    assert "belongs to another study" in str(info.value) and "workload" in str(info.value)


def test_a_line_cut_short_by_a_crash_is_skipped_and_the_next_record_stands_alone(tmp_path):
    path = tmp_path / "j.jsonl"
    j = journal(path)
    j.append(Trial(1, {"threads": 1}, TrialStatus.OK, values=[1.0]))
    j.close()
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('{"type": "trial", "number": 2, "cand')  # killed mid-write
    j = journal(path)
    assert j.resumed == 1 and j.skipped == 1
    j.append(Trial(2, {"threads": 2}, TrialStatus.OK, values=[2.0]))
    j.close()
    _, trials, skipped = read_journal(str(path))
    assert [t.number for t in trials] == [1, 2] and skipped == 1


def test_a_file_that_is_no_journal_is_refused(tmp_path):
    path = tmp_path / "notes.jsonl"
    path.write_text('{"hello": 1}\n', encoding="utf-8")
    with pytest.raises(UserError, match="is not an autotune journal"):
        journal(path)
