"""Search strategies over a Space, all through Evaluator.evaluate (which caches, prunes and budgets).

`smart` (the default, no extra dependency) is coordinate descent from a good start with successive
halving on repeats:

1. Start where llama.cpp users would (the physical cores, one slot per concurrent request, llama-server's
   batch sizes, flash attention on, f16 KV, all layers on the GPU); if that candidate fails, the nearest
   candidates that work.
2. Optimise one parameter at a time, the largest effects first (GPU layers, slots, threads, then batch
   sizes, flash attention, KV type). Ordered parameters are walked: one step to each neighbour, and on
   in the direction that improves until it stops improving (throughput is unimodal in threads and batch
   sizes in practice), so a parameter with many values costs two or three trials, not all of them.
   Choices (flash attention, KV type) try every value. Pruned values are stepped over at no cost; a
   failed one ends the walk in that direction (larger values fail alike, e.g. out of memory).
3. When a parameter changes, the ones optimised before it whose choice was closer than that change's
   gain (plus the noise band) are looked at again in the new context — a 2 % gain from ubatch does not
   re-open a slot count that won by 90 % — until nothing changes, three sweeps at most, or the budget
   is spent.
4. Successive halving on repeats: a candidate first gets one repeat; only one within the noise band of
   the best (5 %, or three times the best's relative spread when that is larger) gets the rest. Clear
   losers cost a third of the time; close calls get every repeat.

`grid` tries every point in order, `random` a seeded shuffle of the grid, `optuna` asks optuna's TPE
sampler (optional: pip install optuna).
"""

from __future__ import annotations

import math
import random
from typing import Dict, List, Mapping, Optional, Sequence, Set, Tuple

from ..utils import require
from .objective import Objective
from .search import BudgetSpent, Eval, Evaluator
from .space import PARAM_BY_NAME, Candidate, ParamKind, candidate_key
from .trial import TrialStatus

STRATEGIES = ("smart", "optuna", "grid", "random")
MIN_BAND = 0.05
MAX_SWEEPS = 3

# The order smart optimises parameters in: the largest effects first.
IMPORTANCE: Dict[Objective, Tuple[str, ...]] = {
    Objective.GEN: (
        "n_gpu_layers", "threads", "flash_attn", "cache_type", "parallel", "ubatch_size", "batch_size", "threads_batch",
    ),
    Objective.PROMPT: (
        "n_gpu_layers", "threads_batch", "ubatch_size", "batch_size", "flash_attn", "threads", "cache_type", "parallel",
    ),
}  # fmt: skip
_CONCURRENT = (
    "n_gpu_layers", "parallel", "threads", "threads_batch", "ubatch_size", "batch_size", "flash_attn", "cache_type",
)  # fmt: skip
for _obj in (Objective.THROUGHPUT, Objective.TOKENS_PER_JOULE, Objective.SLO):
    IMPORTANCE[_obj] = _CONCURRENT


def run_strategy(name: str, ev: Evaluator, objective: Objective, seed: int = 0) -> str:
    """Run a strategy to its end; returns why it ended ('converged', 'trial budget of 7 spent', ...)."""
    try:
        if name == "smart":
            smart(ev, ev.space.start, IMPORTANCE[objective])
            return "converged"
        if name == "grid":
            grid(ev)
            return "grid done"
        if name == "random":
            random_search(ev, seed)
            return "every candidate tried"
        if name == "optuna":
            return optuna_search(ev, seed)
    except BudgetSpent as exc:
        return str(exc)
    raise ValueError(f"unknown strategy {name}")


def require_strategy(name: str) -> None:
    """Fail before any trial when the strategy needs a package that is missing."""
    if name == "optuna":
        require("optuna", "optuna", "--strategy optuna")


# -- smart ---------------------------------------------------------------------------------------------
def _floor(best: Eval) -> Optional[float]:
    if best.mean is None:
        return None
    cv = (best.spread or 0.0) / best.mean if best.mean else 0.0
    return best.mean * (1.0 - max(MIN_BAND, 3.0 * cv))


def _better(new: Eval, best: Eval) -> bool:
    return new.ok and best.mean is not None and new.mean is not None and new.mean > best.mean


def _distance(a: Candidate, b: Candidate, ev: Evaluator) -> float:
    total = 0.0
    for name, values in ev.space.values.items():
        if a.get(name) == b.get(name):
            continue
        if PARAM_BY_NAME[name].kind is ParamKind.INT and a.get(name) in values and b.get(name) in values:
            total += abs(values.index(a[name]) - values.index(b[name]))
        else:
            total += 1.0
    return total


def _first_working(ev: Evaluator, start: Candidate) -> Tuple[Optional[Candidate], Optional[Eval]]:
    """The start point, else the nearest candidate that works."""
    result = ev.evaluate(start)
    if result.ok:
        return start, result
    for cand in sorted(ev.space.grid(), key=lambda c: _distance(c, start, ev)):
        if cand == start:
            continue
        result = ev.evaluate(cand)
        if result.ok:
            return cand, result
    return None, None


def _margin(best: Eval, others: List[Eval]) -> float:
    """How clearly the chosen value won: its mean over the runner-up's, minus 1 (inf: no runner-up)."""
    means = [o.mean for o in others if o.ok and o.mean is not None and o is not best]
    if not means or best.mean is None or max(means) <= 0:
        return math.inf
    return best.mean / max(means) - 1.0


def _walk(ev: Evaluator, current: Candidate, cur: Eval, name: str) -> Tuple[Candidate, Eval, float]:
    """Optimise one ordered parameter: neighbours first, then on while it improves."""
    values = ev.space.values[name]
    index = values.index(current[name])
    best_c, best = current, cur
    seen = [cur]
    for step in (-1, 1):
        j, moved = index + step, False
        while 0 <= j < len(values):
            cand = {**best_c, name: values[j]}
            result = ev.evaluate(cand, _floor(best))
            if result.status is TrialStatus.PRUNED:
                j += step  # free: step over it
                continue
            seen.append(result)
            if not _better(result, best):
                break
            best_c, best, moved = cand, result, True
            j += step
        if moved:
            break  # unimodal: the other direction is worse
    return best_c, best, _margin(best, seen)


def _choose(ev: Evaluator, current: Candidate, cur: Eval, name: str) -> Tuple[Candidate, Eval, float]:
    """Optimise one unordered parameter: every value."""
    best_c, best = current, cur
    seen = [cur]
    for value in ev.space.values[name]:
        if value == current[name]:
            continue
        cand = {**current, name: value}
        result = ev.evaluate(cand, _floor(best))
        seen.append(result)
        if _better(result, best):
            best_c, best = cand, result
    return best_c, best, _margin(best, seen)


def smart(ev: Evaluator, start: Candidate, order: Sequence[str]) -> Optional[Candidate]:
    """Coordinate descent from `start` (see the module docstring); returns the best candidate found."""
    space = ev.space
    names = [n for n in order if n in space.values] + [n for n in space.names if n not in order]
    names = [n for n in names if len(space.values[n]) > 1]
    start = {n: (start[n] if start.get(n) in space.values[n] else space.values[n][-1]) for n in space.names}
    current, cur = _first_working(ev, start)
    if current is None or cur is None:
        return None
    dirty: Set[str] = set(names)
    margins: Dict[str, float] = {}
    for _sweep in range(MAX_SWEEPS):
        if not dirty:
            break
        for name in names:
            if name not in dirty:
                continue
            dirty.discard(name)
            optimise = _walk if PARAM_BY_NAME[name].kind is ParamKind.INT else _choose
            new_c, new, margins[name] = optimise(ev, current, cur, name)
            if new_c != current and new.mean is not None and cur.mean:
                gain = new.mean / cur.mean - 1.0
                current, cur = new_c, new
                # Re-open what this change could plausibly flip: parameters decided by less than it gained.
                dirty |= {n for n in names if n != name and margins.get(n, 0.0) < gain + MIN_BAND}
    return current


# -- the others ----------------------------------------------------------------------------------------
def grid(ev: Evaluator) -> None:
    for cand in ev.space.grid():
        ev.evaluate(cand)


def random_search(ev: Evaluator, seed: int) -> None:
    cands = list(ev.space.grid())
    random.Random(seed).shuffle(cands)
    for cand in cands:
        ev.evaluate(cand)


def optuna_search(ev: Evaluator, seed: int) -> str:
    """optuna's TPE sampler over the space (every parameter categorical); failed and pruned trials are
    told as such, never as a score."""
    optuna = require("optuna", "optuna", "--strategy optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    state = optuna.trial.TrialState
    names, size = ev.space.names, ev.space.size
    seen: Set[str] = set()
    stale = 0
    while len(seen) < size and stale < 20 + size:  # TPE proposes seen points again near the end
        asked = study.ask()
        cand: Candidate = {n: asked.suggest_categorical(n, list(ev.space.values[n])) for n in names}
        key = candidate_key(cand)
        stale = stale + 1 if key in seen else 0
        seen.add(key)
        try:
            result = ev.evaluate(cand)
        except BaseException:
            study.tell(asked, state=state.FAIL)
            raise
        if result.ok:
            study.tell(asked, result.mean)
        else:
            study.tell(asked, state=state.PRUNED if result.status is TrialStatus.PRUNED else state.FAIL)
    if len(seen) < size:
        return f"optuna kept proposing tried candidates ({len(seen)} of {size} tried)"
    return "every candidate tried"


def expected_trials(name: str, values: Mapping[str, Sequence[object]], grid_size: int) -> int:
    """A rough trial count for progress and ETA: one smart sweep, or the grid."""
    if name == "smart":
        return min(grid_size, 1 + sum(max(0, len(v) - 1) for v in values.values()))
    return grid_size
