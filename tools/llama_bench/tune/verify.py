"""The last word on noise: re-measure the top candidates and llama-server's own defaults, interleaved
(round 1: defaults, #1, #2; round 2: #1, #2, defaults; ...: drift in the machine hits all alike),
and report the best with a 95 % confidence interval and its ratio to the defaults. When the best's
interval overlaps the defaults' it says "no significant gain" instead of crowning noise."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from .journal import Journal
from .observer import TuneObserver
from .space import Candidate, candidate_key, describe
from .trial import Trial, TrialRunner

DEFAULTS_LABEL = "defaults"


@dataclass
class Interval:
    mean: float
    low: float
    high: float
    n: int

    def overlaps(self, other: "Interval") -> bool:
        return self.low <= other.high and other.low <= self.high

    def to_dict(self) -> Dict[str, Any]:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n}


def mean_ci(values: List[float]) -> Optional[Interval]:
    """Mean and two-sided 95 % interval (Student's t, bench/confidence.py); one value: zero width."""
    from ..bench.confidence import mean_interval

    ci = mean_interval(values)
    if ci is None:
        return None
    low = ci.low if ci.low is not None else ci.mean
    high = ci.high if ci.high is not None else ci.mean
    return Interval(ci.mean, low, high, ci.n)


@dataclass
class Finalist:
    label: str
    candidate: Candidate
    trials: List[Trial] = field(default_factory=list)

    @property
    def values(self) -> List[float]:
        return [v for t in self.trials if t.ok for v in t.values]

    @property
    def interval(self) -> Optional[Interval]:
        return mean_ci(self.values)

    @property
    def failure(self) -> Optional[str]:
        failed = [t for t in self.trials if not t.ok]
        return failed[0].reason if failed and not self.values else None

    def to_dict(self) -> Dict[str, Any]:
        ci = self.interval
        return {
            "label": self.label,
            "candidate": self.candidate,
            "description": describe(self.candidate),
            "interval": ci.to_dict() if ci else None,
            "values": self.values,
            "failure": self.failure,
            "trials": [t.number for t in self.trials],
        }


@dataclass
class Verification:
    finalists: List[Finalist]
    best: Optional[Finalist]
    defaults: Optional[Finalist]
    ratio: Optional[float]  # best / defaults, by means
    significant: Optional[bool]  # the intervals do not overlap
    verdict: str

    def to_dict(self) -> Dict[str, Any]:
        return {
            "finalists": [f.to_dict() for f in self.finalists],
            "best": self.best.label if self.best else None,
            "ratio_to_defaults": self.ratio,
            "significant": self.significant,
            "verdict": self.verdict,
        }


def pick_finalists(trials: List[Trial], top: int) -> List[Candidate]:
    """The `top` best distinct candidates of the search (by mean), never the defaults themselves."""
    seen, out = set(), []
    for t in sorted((t for t in trials if t.ok and t.phase == "search"), key=lambda t: -(t.mean or 0.0)):
        key = candidate_key(t.candidate)
        if key in seen or not t.candidate:
            continue
        seen.add(key)
        out.append(dict(t.candidate))
        if len(out) >= top:
            break
    return out


def verify(
    runner: TrialRunner,
    journal: Journal,
    observer: TuneObserver,
    finalists: List[Candidate],
    rounds: int,
    repeats: int,
) -> Verification:
    """Re-measure the finalists and the defaults, `rounds` launches each, in rotating order; verify
    trials already in the journal (a resumed run) are reused."""
    entries = [Finalist(DEFAULTS_LABEL, {})] + [Finalist(f"#{i + 1}", c) for i, c in enumerate(finalists)]
    done: Dict[Tuple[str, int], Trial] = {
        (candidate_key(t.candidate), t.round or 0): t for t in journal.trials if t.phase == "verify"
    }
    for r in range(rounds):
        shift = r % len(entries)
        for entry in entries[shift:] + entries[:shift]:
            key = (candidate_key(entry.candidate), r)
            trial = done.get(key)
            if trial is None:
                number = journal.next_number()
                observer.trial_started(number, entry.candidate, "verify")
                trial = runner.run(number, entry.candidate, repeats, progress=observer.trial_progress, phase="verify")
                trial.label, trial.round = entry.label, r
                journal.append(trial)
                observer.trial_done(trial, None)
            entry.trials.append(trial)
    return judge(entries)


def judge(entries: List[Finalist]) -> Verification:
    defaults = next((e for e in entries if e.label == DEFAULTS_LABEL), None)
    measured = [e for e in entries if e.label != DEFAULTS_LABEL and e.interval is not None]
    best = max(measured, key=lambda e: e.interval.mean if e.interval else 0.0) if measured else None
    if best is None or best.interval is None:
        return Verification(entries, None, defaults, None, None, "no finalist could be measured again")
    d_ci = defaults.interval if defaults else None
    if d_ci is None:
        why = defaults.failure if defaults else None
        verdict = f"llama-server's defaults failed here ({why or 'no value'}); {best.label} is what works"
        return Verification(entries, best, defaults, None, None, verdict)
    ratio = best.interval.mean / d_ci.mean if d_ci.mean else None
    significant = not best.interval.overlaps(d_ci)
    if significant and ratio is not None and ratio < 1.0:
        verdict = f"llama-server's defaults beat every finalist ({best.label} is {ratio:.2f}x them): keep the defaults"
    elif significant:
        verdict = f"{best.label} is {ratio:.2f}x llama-server's defaults (95 % intervals do not overlap)"
    else:
        verdict = (
            f"no significant gain: {best.label} and llama-server's defaults overlap at 95 % (ratio {ratio:.2f}x); "
            "the defaults are as good as anything measured"
        )
    return Verification(entries, best, defaults, ratio, significant, verdict)
