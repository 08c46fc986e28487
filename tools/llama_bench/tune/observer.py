"""What the autotune run reports while it works (view.py implements it for terminals and plain lines)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, List, Optional, Protocol

from .space import Candidate

if TYPE_CHECKING:
    from .trial import Trial


@dataclass
class RunHeader:
    """What the views print before the first trial."""

    workload: str  # Workload.describe()
    unit: str
    space: str  # Space.describe()
    names: List[str]  # searched parameters, table columns
    strategy: str
    budget: str
    expected_trials: Optional[int]  # for progress and ETA (None: unknown)
    journal: str
    resumed: int  # trials read back from the journal
    notes: List[str]


class TuneObserver(Protocol):
    def started(self, header: RunHeader) -> None: ...

    def trial_started(self, number: int, candidate: Candidate, phase: str) -> None: ...

    def trial_progress(self, text: str) -> None: ...

    def trial_done(self, trial: "Trial", best: Optional["Trial"]) -> None: ...

    def message(self, text: str) -> None: ...

    def close(self) -> None: ...


class SilentTuneObserver:
    """Shows nothing (in-process callers, tests, the benchmark script)."""

    def started(self, header: RunHeader) -> None:
        pass

    def trial_started(self, number: int, candidate: Candidate, phase: str) -> None:
        pass

    def trial_progress(self, text: str) -> None:
        pass

    def trial_done(self, trial: "Trial", best: Optional["Trial"]) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass
