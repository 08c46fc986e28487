"""Search strategies against synthetic objectives with a known optimum (no server): what each one finds,
how many trials it spends, and how it treats candidates that fail or are pruned."""

from __future__ import annotations

import math
import random
from typing import Callable, Dict, List, Optional

import pytest

from tools.llama_bench.tune.objective import Objective
from tools.llama_bench.tune.search import BudgetSpent, Eval
from tools.llama_bench.tune.space import Candidate, Space, candidate_key, violation
from tools.llama_bench.tune.strategies import IMPORTANCE, run_strategy, smart
from tools.llama_bench.tune.trial import TrialStatus
from tools.llama_bench.utils import UserError

# The benchmark's space: threads x ubatch x flash-attn x parallel (24 points).
BENCH_SPACE = {"threads": [1, 2], "ubatch_size": [128, 256, 512], "flash_attn": ["on", "off"], "parallel": [1, 2]}


class Synthetic:
    """An Evaluator over a pure function: noise, failures and a budget like the real thing."""

    def __init__(
        self,
        values: Dict[str, list],
        f: Callable[[Candidate], float],
        start: Optional[Candidate] = None,
        noise: float = 0.0,
        seed: int = 0,
        fails: Callable[[Candidate], bool] = lambda c: False,
        budget: Optional[int] = None,
        fixed: Optional[Dict[str, object]] = None,
    ) -> None:
        self.space = Space(values=dict(values), fixed=dict(fixed or {}), start=dict(start or {}))
        self.f, self.noise, self.fails, self.budget = f, noise, fails, budget
        self.rng = random.Random(seed)
        self.known: Dict[str, Eval] = {}
        self.launched: List[Candidate] = []
        self.pruned: List[Candidate] = []

    def evaluate(self, candidate: Candidate, floor: Optional[float] = None) -> Eval:
        key = candidate_key(candidate)
        if key in self.known:
            found = self.known[key]
            return Eval(found.status, found.mean, found.spread, found.n, cached=True)
        if violation(candidate, self.space.fixed):
            self.pruned.append(candidate)
            self.known[key] = Eval(TrialStatus.PRUNED)
            return self.known[key]
        if self.budget is not None and len(self.launched) >= self.budget:
            raise BudgetSpent(f"trial budget of {self.budget} spent")
        self.launched.append(candidate)
        if self.fails(candidate):
            result = Eval(TrialStatus.FAILED)
        else:
            value = self.f(candidate) * (1.0 + self.rng.gauss(0.0, self.noise))
            result = Eval(TrialStatus.OK, value, self.f(candidate) * self.noise, 3)
        self.known[key] = result
        return result

    def best_true(self) -> float:
        return max(self.f(c) for c in self.space.grid() if not self.fails(c) and not violation(c, self.space.fixed))

    def found_true(self) -> float:
        ok = [(e.mean, k) for k, e in self.known.items() if e.ok]
        best_key = max(ok)[1]
        cand = next(c for c in self.space.grid() if candidate_key(c) == best_key)
        return self.f(cand)


def throughput_like(c: Candidate) -> float:
    """Parallel slots matter most, then threads, a little ubatch and flash attention."""
    value = 100.0 * (1.9 if c["parallel"] == 2 else 1.0) * (1.0 if c["threads"] == 2 else 0.6)
    value *= {128: 0.97, 256: 1.0, 512: 0.98}[c["ubatch_size"]]
    return value * (1.0 if c["flash_attn"] == "on" else 0.93)


def ratio_to_grid(ev: Synthetic) -> float:
    return ev.found_true() / ev.best_true()


def test_smart_meets_the_goal_on_the_benchmark_space_with_a_third_of_the_grid():
    start = {"threads": 2, "ubatch_size": 512, "flash_attn": "on", "parallel": 2}
    for seed in range(20):
        ev = Synthetic(BENCH_SPACE, throughput_like, start=start, noise=0.01, seed=seed)
        run_strategy("smart", ev, Objective.THROUGHPUT, seed)
        assert ratio_to_grid(ev) >= 0.95
        assert len(ev.launched) <= 0.3 * 24


def test_smart_finds_the_exact_optimum_of_a_noiseless_unimodal_objective():
    values = {"threads": [1, 2, 4, 8, 16], "ubatch_size": [64, 128, 256, 512, 1024], "flash_attn": ["on", "off"]}

    def f(c: Candidate) -> float:
        return 100 / (1 + abs(math.log2(int(c["threads"]) / 4))) / (1 + abs(math.log2(int(c["ubatch_size"]) / 128)))

    ev = Synthetic(values, f, start={"threads": 16, "ubatch_size": 512, "flash_attn": "on"})
    best = smart(ev, ev.space.start, IMPORTANCE[Objective.GEN])
    assert best == {"threads": 4, "ubatch_size": 128, "flash_attn": "on"}
    assert len(ev.launched) < 0.3 * 50  # the walk never visits the far ends


def test_smart_moves_on_from_a_start_that_fails():
    start = {"threads": 2, "ubatch_size": 512, "flash_attn": "on", "parallel": 2}
    ev = Synthetic(BENCH_SPACE, throughput_like, start=start, fails=lambda c: c["ubatch_size"] == 512)
    run_strategy("smart", ev, Objective.THROUGHPUT)
    assert ratio_to_grid(ev) >= 0.95
    assert sum(1 for c in ev.launched if c["ubatch_size"] == 512) <= 2  # never retried, rarely walked into


def test_smart_steps_over_pruned_values_for_free():
    values = {"batch_size": [256, 512], "ubatch_size": [128, 256, 512]}

    def f(c: Candidate) -> float:
        return float(c["batch_size"]) + float(c["ubatch_size"])

    ev = Synthetic(values, f, start={"batch_size": 256, "ubatch_size": 128})
    smart(ev, ev.space.start, IMPORTANCE[Objective.PROMPT])
    assert {"batch_size": 256, "ubatch_size": 512} in ev.pruned  # ubatch > batch: never launched
    assert all(not violation(c, {}) for c in ev.launched)
    assert ev.found_true() == ev.best_true() == 1024


def test_failed_candidates_are_not_retried_and_not_scored():
    ev = Synthetic(BENCH_SPACE, throughput_like, fails=lambda c: c["threads"] == 1)
    run_strategy("grid", ev, Objective.THROUGHPUT)
    keys = [candidate_key(c) for c in ev.launched]
    assert len(keys) == len(set(keys)) == 24
    failed = [e for e in ev.known.values() if e.status is TrialStatus.FAILED]
    assert len(failed) == 12 and all(e.mean is None for e in failed)


def test_grid_is_exhaustive_and_random_respects_the_budget():
    ev = Synthetic(BENCH_SPACE, throughput_like)
    assert run_strategy("grid", ev, Objective.THROUGHPUT) == "grid done"
    assert len(ev.launched) == 24 and ev.found_true() == ev.best_true()
    ev = Synthetic(BENCH_SPACE, throughput_like, budget=7)
    assert run_strategy("random", ev, Objective.THROUGHPUT, seed=3) == "trial budget of 7 spent"
    assert len(ev.launched) == 7


def test_random_is_reproducible_with_its_seed():
    runs = []
    for _ in range(2):
        ev = Synthetic(BENCH_SPACE, throughput_like, budget=5)
        run_strategy("random", ev, Objective.THROUGHPUT, seed=11)
        runs.append(ev.launched)
    assert runs[0] == runs[1]


def test_smart_stops_at_the_budget_and_keeps_the_best_so_far():
    start = {"threads": 1, "ubatch_size": 128, "flash_attn": "off", "parallel": 1}
    ev = Synthetic(BENCH_SPACE, throughput_like, start=start, budget=3)
    assert run_strategy("smart", ev, Objective.THROUGHPUT) == "trial budget of 3 spent"
    assert len(ev.launched) == 3
    assert any(e.ok for e in ev.known.values())


def test_optuna_finds_the_optimum_when_installed():
    pytest.importorskip("optuna")
    ev = Synthetic(BENCH_SPACE, throughput_like, budget=16)
    run_strategy("optuna", ev, Objective.THROUGHPUT, seed=1)
    assert len(ev.launched) <= 16
    assert ratio_to_grid(ev) >= 0.9


def test_optuna_missing_is_one_clear_error():
    try:
        import optuna  # noqa: F401

        pytest.skip("optuna is installed here")
    except ImportError:
        pass
    from tools.llama_bench.tune.strategies import require_strategy

    with pytest.raises(UserError) as info:
        require_strategy("optuna")
    assert "optuna" in str(info.value) and "pip install optuna" in str(info.value)
    assert info.value.exit_code == 3
