"""What a strategy talks to: `evaluate(candidate)` launches a trial — unless the journal already has it,
a constraint or the memory estimate prunes it, or the budget is spent — and says how it went.

Budgets count launched trials (also those read back from the journal: a resumed run continues its
budget) or seconds of searching in this run; a time budget lets the running trial finish.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Protocol

from .journal import Journal
from .observer import TuneObserver
from .space import Candidate, Space, candidate_key, violation
from .trial import FailureKind, Trial, TrialRunner, TrialStatus


class BudgetSpent(Exception):
    """No trial may be launched any more; the strategy ends and the best so far stands."""


@dataclass
class Budget:
    trials: Optional[int] = None
    seconds: Optional[float] = None

    def describe(self) -> str:
        parts = []
        if self.trials is not None:
            parts.append(f"{self.trials} trials")
        if self.seconds is not None:
            parts.append(f"{self.seconds / 60:.1f} min")
        return " or ".join(parts) if parts else "until converged"


@dataclass
class Eval:
    """How one evaluation went, as a strategy sees it."""

    status: TrialStatus
    mean: Optional[float] = None
    spread: Optional[float] = None
    n: int = 0
    cached: bool = False  # answered from the journal or an earlier evaluation: no launch

    @property
    def ok(self) -> bool:
        return self.status is TrialStatus.OK and self.mean is not None


def eval_of(trial: Trial, cached: bool) -> Eval:
    if not trial.ok:
        return Eval(trial.status, cached=cached)
    return Eval(TrialStatus.OK, trial.mean, trial.spread, len(trial.values), cached)


class Evaluator(Protocol):
    """What strategies need (SearchContext, or a synthetic objective in tests)."""

    space: Space

    def evaluate(self, candidate: Candidate, floor: Optional[float] = None) -> Eval: ...


Prune = Callable[[Candidate], Optional[str]]


class SearchContext:
    """Evaluations with the journal as cache, pruning before launch, the budget and the observer."""

    def __init__(
        self,
        space: Space,
        runner: TrialRunner,
        journal: Journal,
        observer: TuneObserver,
        repeats: int,
        budget: Budget,
        fit_reason: Optional[Prune] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.space = space
        self.runner = runner
        self.journal = journal
        self.observer = observer
        self.repeats = repeats
        self.budget = budget
        self.fit_reason = fit_reason
        self.clock = clock
        self.t0 = clock()
        self.known: Dict[str, Trial] = {}
        for trial in journal.trials:
            if trial.phase == "search":
                self.known[candidate_key(trial.candidate)] = trial
        self.new_trials: List[Trial] = []

    # -- what the views and the driver read -----------------------------------------------------------
    @property
    def search_trials(self) -> List[Trial]:
        return [t for t in self.journal.trials if t.phase == "search"]

    @property
    def launched(self) -> int:
        return sum(1 for t in self.search_trials if t.launched)

    def best(self) -> Optional[Trial]:
        ok = [t for t in self.search_trials if t.ok]
        return max(ok, key=lambda t: (t.mean or 0.0, len(t.values))) if ok else None

    def elapsed(self) -> float:
        return self.clock() - self.t0

    def check_budget(self) -> None:
        if self.budget.trials is not None and self.launched >= self.budget.trials:
            raise BudgetSpent(f"trial budget of {self.budget.trials} spent")
        if self.budget.seconds is not None and self.elapsed() >= self.budget.seconds:
            raise BudgetSpent(f"time budget of {self.budget.seconds:g} s spent")

    # -- the one entry point of strategies ------------------------------------------------------------
    def evaluate(self, candidate: Candidate, floor: Optional[float] = None) -> Eval:
        """Evaluate `candidate`; `floor` (successive halving): stop after the first rung when the mean
        is below it — the candidate is clearly behind the best and does not deserve every repeat."""
        key = candidate_key(candidate)
        if key in self.known:
            return eval_of(self.known[key], cached=True)
        reason = violation(candidate, self.space.fixed)
        kind = FailureKind.CONSTRAINT
        if reason is None and self.fit_reason is not None:
            reason, kind = self.fit_reason(candidate), FailureKind.MEMORY
        if reason is not None:
            trial = Trial(self.journal.next_number(), dict(candidate), TrialStatus.PRUNED, failure=kind, reason=reason)
            self._record(trial)
            return eval_of(trial, cached=False)
        self.check_budget()
        number = self.journal.next_number()
        self.observer.trial_started(number, candidate, "search")
        keep_going = None
        if floor is not None and self.repeats > 1:
            keep_going = lambda values: sum(values) / len(values) >= floor  # noqa: E731
        trial = self.runner.run(
            number, candidate, self.repeats, keep_going, progress=self.observer.trial_progress, phase="search"
        )
        self._record(trial)
        return eval_of(trial, cached=False)

    def _record(self, trial: Trial) -> None:
        self.known[candidate_key(trial.candidate)] = trial
        self.journal.append(trial)
        self.new_trials.append(trial)
        self.observer.trial_done(trial, self.best())


def default_budget(strategy: str, grid_size: int) -> Budget:
    """Without --budget: grid runs the grid, smart runs until it converges, random and optuna get the
    smart strategy's goal, 30 % of the grid (at least 8 trials)."""
    if strategy in ("random", "optuna"):
        return Budget(trials=min(grid_size, max(8, math.ceil(0.3 * grid_size))))
    return Budget()
