"""How good `llama-bench autotune --strategy smart` is, on the real llama-server and the default model.

A small space (threads x ubatch x flash-attn x parallel: 24 points on 2 cores) is searched three ways:
the full grid once (in a shuffled order, so load that drifts during the run does not penalise one
corner), then `smart` and `random` with the same budget (30 % of the grid). For each it prints best / grid
best — the chosen configuration's value *in the grid's own table*, so a lucky measurement
cannot flatter a strategy, plus the strategy's own best figure — and trials / grid size. Goal: smart
>= 0.95 with <= 30 % of the grid's trials. Then the three winners and llama-server's defaults are
re-measured interleaved (autotune's verification: 95 % intervals), and the best configuration's
single-stream generation tok/s is set against llama.cpp's own `llama-bench` tg at the same threads
(the ceiling: no HTTP, no sampling; the ratio says what the server costs).

Usage: .venv/bin/python benchmarks/autotune_efficiency.py [--objective throughput|gen] [--concurrency 2]
       [--budget 7] [--repeats 3] [--server PATH] [--model GGUF] [--llama-bench PATH] [--json FILE]
The machine is shared: the figures are ratios measured in one run; other llama-servers running at the
same time are counted and printed, since they take cores from every trial alike.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tools.llama_bench.outputs import output_path  # noqa: E402
from tools.llama_bench.server.config import ServerConfig  # noqa: E402
from tools.llama_bench.tune.cmd import AutotuneParams, TuneOutcome, run_autotune  # noqa: E402
from tools.llama_bench.tune.journal import Journal  # noqa: E402
from tools.llama_bench.tune.objective import Objective, Workload, make_measure  # noqa: E402
from tools.llama_bench.tune.observer import SilentTuneObserver  # noqa: E402
from tools.llama_bench.tune.search import Budget, BudgetSpent, Eval  # noqa: E402
from tools.llama_bench.tune.space import Candidate, candidate_key, describe  # noqa: E402
from tools.llama_bench.tune.strategies import run_strategy  # noqa: E402
from tools.llama_bench.tune.trial import ServerBase, TrialRunner, TrialStatus  # noqa: E402
from tools.llama_bench.tune.verify import verify  # noqa: E402
from tools.llama_bench.tune.view import PlainView  # noqa: E402

BIN = REPO / "build" / "llama.cpp" / "build" / "bin"
MODEL = REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
SPACE = "threads=1,2;ubatch=128,256,512;fa=on,off;np=1,2"
GRID_SIZE = 24
GOAL_RATIO, GOAL_SHARE = 0.95, 0.30


def run(
    strategy: str,
    args: argparse.Namespace,
    work: Path,
    budget: Optional[int],
    verify_rounds: int,
    name: Optional[str] = None,
) -> TuneOutcome:
    objective = Objective(args.objective)
    conc = args.concurrency if objective is Objective.THROUGHPUT else 1
    workload = Workload(objective, args.prompt, args.output, conc, ctx_size=1024, seed=args.seed)
    template = ServerConfig(binary=str(args.server), model=str(args.model))
    journal = output_path(str(work / f"{name or strategy}.jsonl"), "--journal")
    params = AutotuneParams(
        template=template,
        workload=workload,
        allow_multi_server=True,
        strategy=strategy,
        seed=args.seed + (1000 if name == "grid" else 0),
        budget=Budget(trials=budget) if budget else None,
        repeats=args.repeats,
        space=SPACE,
        verify_rounds=verify_rounds,
        journal=journal,
        ui="plain",
    )
    print(f"\n== {name or strategy} ==", flush=True)
    outcome = run_autotune(params, PlainView())
    if outcome.exit_code == 130:
        raise SystemExit(130)  # Ctrl-C: autotune stopped its server and printed the best so far
    return outcome


def search_best(outcome: TuneOutcome) -> Tuple[Candidate, float, int]:
    trials = [t for t in outcome.trials if t.phase == "search"]
    ok = [t for t in trials if t.ok]
    best = max(ok, key=lambda t: t.mean or 0.0)
    return best.candidate, best.mean or 0.0, sum(1 for t in trials if t.launched)


class Replay:
    """An Evaluator over the grid's own table: a strategy's decisions on exactly the grid's measurements
    (the same noise for everyone), counting the look-ups it needs as its trials."""

    def __init__(self, grid: TuneOutcome, budget: Optional[int]) -> None:
        self.space = grid.space
        self.table = {candidate_key(t.candidate): t for t in grid.trials if t.phase == "search"}
        self.budget = budget
        self.looked: List[str] = []

    def evaluate(self, candidate: Candidate, floor: Optional[float] = None) -> Eval:
        key = candidate_key(candidate)
        trial = self.table[key]
        if key not in self.looked:
            if self.budget is not None and len(self.looked) >= self.budget:
                raise BudgetSpent(f"trial budget of {self.budget} spent")
            self.looked.append(key)
        if not trial.ok:
            return Eval(trial.status)
        return Eval(TrialStatus.OK, trial.mean, trial.spread, len(trial.values))

    def best_value(self) -> float:
        return max(self.table[k].mean or 0.0 for k in self.looked if self.table[k].ok)


def replay(grid: TuneOutcome, objective: Objective, budget: int, seeds: int) -> Dict[str, Any]:
    best = max(t.mean or 0.0 for t in grid.trials if t.ok and t.phase == "search")
    smart_ev = Replay(grid, budget)
    run_strategy("smart", smart_ev, objective)
    smart_free = Replay(grid, None)
    run_strategy("smart", smart_free, objective)
    randoms = []
    for seed in range(seeds):
        ev = Replay(grid, budget)
        run_strategy("random", ev, objective, seed)
        randoms.append(ev.best_value() / best)
    return {
        "smart_ratio": smart_ev.best_value() / best,
        "smart_trials": len(smart_ev.looked),
        "smart_unbudgeted_ratio": smart_free.best_value() / best,
        "smart_unbudgeted_trials": len(smart_free.looked),
        "random_mean_ratio": statistics.fmean(randoms),
        "random_share_at_goal": sum(r >= GOAL_RATIO for r in randoms) / len(randoms),
        "random_seeds": seeds,
    }


def head_to_head(args: argparse.Namespace, work: Path, finalists: List[Candidate], rounds: int) -> Any:
    """The strategies' winners and the defaults, re-measured interleaved (autotune's own verification)."""
    objective = Objective(args.objective)
    conc = args.concurrency if objective is Objective.THROUGHPUT else 1
    workload = Workload(objective, args.prompt, args.output, conc, ctx_size=1024, seed=args.seed)
    runner = TrialRunner(
        ServerBase(ServerConfig(binary=str(args.server), model=str(args.model)), 1024, allow_multi_server=True),
        make_measure(workload),
        _out(work / "h2h-records.jsonl"),
    )
    journal = Journal(_out(work / "h2h.jsonl"), {"head_to_head": True}).open()
    try:
        return verify(runner, journal, SilentTuneObserver(), finalists, rounds, args.repeats)
    finally:
        journal.close()


def _out(path: Path) -> Any:
    out = output_path(str(path), "--json")
    assert out is not None
    return out


def server_gen(args: argparse.Namespace, work: Path, cand: Candidate, repeats: int = 5) -> List[float]:
    """Single-stream generation tok/s of one configuration (tg-like: a tiny prompt, 64 tokens)."""
    single = {k: v for k, v in cand.items() if k != "parallel"}
    workload = Workload(Objective.GEN, 8, 64, 1, ctx_size=1024, seed=args.seed)
    runner = TrialRunner(
        ServerBase(ServerConfig(binary=str(args.server), model=str(args.model)), 1024, allow_multi_server=True),
        make_measure(workload),
        _out(work / "gen-records.jsonl"),
    )
    trial = runner.run(1, single, repeats)
    return trial.values


def llama_bench_tg(args: argparse.Namespace, cand: Candidate, repeats: int = 5) -> Optional[Tuple[float, float]]:
    """llama.cpp's own llama-bench tg64 at the same threads and flash attention: (mean, stddev) tok/s."""
    if not args.llama_bench or not os.access(args.llama_bench, os.X_OK):
        return None
    cmd = [str(args.llama_bench), "-m", str(args.model), "-t", str(cand.get("threads", 2)), "-p", "0", "-n", "64"]
    cmd += ["-r", str(repeats), "-o", "json"]
    if "flash_attn" in cand:
        cmd += ["-fa", str(cand["flash_attn"])]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        print(f"llama-bench failed ({out.returncode}): {out.stderr.strip().splitlines()[-1:]}")
        return None
    rows = json.loads(out.stdout)
    return float(rows[0]["avg_ts"]), float(rows[0]["stddev_ts"])


def other_servers() -> int:
    from tools.llama_bench.server.procs import find_servers

    return len(find_servers())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objective", choices=("throughput", "gen"), default="throughput")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--budget", type=int, default=math.floor(GOAL_SHARE * GRID_SIZE))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--output", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the head-to-head")
    parser.add_argument("--server", type=Path, default=BIN / "llama-server")
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--llama-bench", type=Path, default=BIN / "llama-bench")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="autotune-bench-"))
    os.environ.setdefault("LLAMA_STUDIO_STATE_DIR", str(work / "state"))
    busy = other_servers()
    load0 = os.getloadavg()[0]
    t0 = time.monotonic()

    # The whole grid in a shuffled order (random with a budget of every point): load that drifts while it
    # runs then spreads over the space instead of penalising the points measured last.
    grid = run("random", args, work, GRID_SIZE, verify_rounds=0, name="grid")
    table = {candidate_key(t.candidate): t.mean for t in grid.trials if t.ok and t.phase == "search"}
    grid_cand, grid_best, grid_trials = search_best(grid)
    figures: Dict[str, Any] = {"grid": {"best": grid_cand, "value": grid_best, "trials": grid_trials}}
    figures["replay"] = replay(grid, Objective(args.objective), args.budget, seeds=200)
    winners = {"grid": grid_cand}
    for strategy in ("smart", "random"):
        outcome = run(strategy, args, work, args.budget, verify_rounds=0)
        cand, own, trials = search_best(outcome)
        in_grid = table.get(candidate_key(cand))
        figures[strategy] = {
            "best": cand,
            "own_value": own,
            "grid_value_of_best": in_grid,
            "ratio_in_grid": (in_grid / grid_best) if in_grid else None,
            "ratio_own": own / grid_best,
            "trials": trials,
            "share": trials / GRID_SIZE,
        }
        winners[strategy] = cand

    distinct: List[Candidate] = []
    for cand in winners.values():
        if candidate_key(cand) not in {candidate_key(c) for c in distinct}:
            distinct.append(cand)
    h2h = head_to_head(args, work, distinct, args.rounds)
    label_of = {candidate_key(c): f"#{i + 1}" for i, c in enumerate(distinct)}
    intervals = {f.label: f.interval for f in h2h.finalists}

    best_cand = winners["smart"]
    gen = server_gen(args, work, best_cand)
    tg = llama_bench_tg(args, best_cand)
    elapsed = time.monotonic() - t0

    unit = "tok/s"
    what = args.objective + (f" at concurrency {args.concurrency}" if args.objective == "throughput" else "")
    print(f"\n== autotune efficiency: {what}, space {SPACE} ({GRID_SIZE} points), budget {args.budget} trials ==")
    print(f"other llama-servers running at the start: {busy} (they share the cores with every trial)")
    spreads = [t.spread / t.mean for t in grid.trials if t.ok and t.phase == "search" and t.mean and t.spread]
    noise = statistics.median(spreads) if spreads else 0.0
    print(
        f"load average at start / end: {load0:.2f} / {os.getloadavg()[0]:.2f}; grid trials' median spread {noise:.0%}"
    )
    print(f"grid best: {describe(grid_cand)} = {grid_best:.1f} {unit} ({grid_trials} trials)")
    for strategy in ("smart", "random"):
        f = figures[strategy]
        ratio = f["ratio_in_grid"]
        verdict = ""
        if strategy == "smart" and ratio is not None:
            ok = ratio >= GOAL_RATIO and f["share"] <= GOAL_SHARE
            verdict = f"  -> {'meets' if ok else 'misses'} the goal (>= {GOAL_RATIO} with <= {GOAL_SHARE:.0%})"
        print(
            f"{strategy:>6}: best {describe(f['best'])}; best/grid best {ratio:.3f} (grid's own figure of it), "
            f"{f['ratio_own']:.3f} (its own); trials/grid {f['trials']}/{GRID_SIZE} = {f['share']:.0%}{verdict}"
        )
    r = figures["replay"]
    print(
        f"replayed on the grid's own measurements (same noise for all): smart {r['smart_ratio']:.3f} of the grid best "
        f"in {r['smart_trials']}/{GRID_SIZE} trials (unbudgeted: {r['smart_unbudgeted_ratio']:.3f} in "
        f"{r['smart_unbudgeted_trials']}); random {r['random_mean_ratio']:.3f} on average, >= {GOAL_RATIO} in "
        f"{r['random_share_at_goal']:.0%} of {r['random_seeds']} seeds"
    )
    print("head-to-head, interleaved (mean, 95 % interval):")
    for f in h2h.finalists:
        ci = intervals[f.label]
        who = [s for s, c in winners.items() if label_of.get(candidate_key(c)) == f.label]
        name = "llama-server defaults" if f.label == "defaults" else f"{describe(f.candidate)} ({', '.join(who)})"
        text = f"{ci.mean:.1f} [{ci.low:.1f}, {ci.high:.1f}]" if ci else f"failed: {f.failure}"
        print(f"  {f.label:>8} {name}: {text}")
    d = intervals.get("defaults")
    smart_ci = intervals.get(label_of[candidate_key(best_cand)])
    grid_ci = intervals.get(label_of[candidate_key(grid_cand)])
    if smart_ci and grid_ci:
        sig = "the intervals overlap" if smart_ci.overlaps(grid_ci) else "significant"
        print(f"head-to-head smart best / grid best: {smart_ci.mean / grid_ci.mean:.3f} ({sig})")
        figures["head_to_head_smart_over_grid"] = smart_ci.mean / grid_ci.mean
    if d and smart_ci:
        sig = "significant" if not smart_ci.overlaps(d) else "not significant (intervals overlap)"
        print(f"smart best vs llama-server defaults: {smart_ci.mean / d.mean:.2f}x, {sig}")
    if gen:
        gen_mean = statistics.fmean(gen)
        line = f"single-stream gen of smart's best (t={best_cand.get('threads')}): {gen_mean:.1f} tok/s"
        if tg:
            line += (
                f"; llama-bench tg64 at the same threads: {tg[0]:.1f} ± {tg[1]:.1f} tok/s; ratio {gen_mean / tg[0]:.2f}"
            )
        print(line)
    print(f"elapsed {elapsed / 60:.1f} min")
    if args.json:
        figures.update(
            head_to_head={
                f.label: (intervals[f.label].to_dict() if intervals[f.label] else None) for f in h2h.finalists
            },
            gen=gen,
            llama_bench_tg=tg,
            other_servers=busy,
            load_start=load0,
            grid_median_spread=noise,
        )
        args.json.write_text(json.dumps(figures, indent=2, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
