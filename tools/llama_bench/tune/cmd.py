"""`llama-bench autotune`: plan the space, search it trial by trial, verify the best against llama-server's
defaults, and hand back the flags (printed, --output, --json-out, --plot, --apply).

Ctrl-C (or SIGTERM/SIGHUP) stops the running trial's server, keeps the journal, prints the best so far,
writes --json-out/--output and exits 130; --apply only happens after a run that was not interrupted.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from .. import stdio, stopping
from ..outputs import OutputFailed, OutputPath, output_path, report_failures
from ..settings import state_subdir
from ..utils import ExitStatus, UserError
from .apply import ApplyTargets, apply, env_values
from .fit import FitChecker, MemoryLimits
from .journal import Journal
from .machine import detect_machine, server_help, supported_flags
from .objective import Workload, check_available, make_measure
from .observer import RunHeader, TuneObserver
from .report import (
    Best,
    best_document,
    best_lines,
    llama_run_command,
    result_document,
    without_secrets,
    write_json,
    write_plot,
)
from .search import Budget, SearchContext, default_budget
from .space import Space, SpaceInputs, build_space, default_values, describe, fixed_from_raw, parse_space
from .strategies import expected_trials, require_strategy, run_strategy
from .trial import ServerBase, TrialRunner, fixed_of, server_config
from .verify import Verification, pick_finalists, verify

PROG = "llama-bench"


@dataclass
class AutotuneParams:
    """Everything that defines an autotune run (the handler in args.py builds it from the flags)."""

    template: Any  # server.config.ServerConfig: binary, model, host, port, fixed flags, raw flags
    workload: Workload
    startup_timeout: float = 300.0
    allow_multi_server: bool = False
    ctx_given: bool = True  # False: workload.ctx_size is our default, lowered to the model's trained context
    strategy: str = "smart"
    seed: int = 0
    budget: Optional[Budget] = None  # None: the strategy's default
    repeats: int = 3
    warmup: int = 1
    space: Optional[str] = None  # --space: replaces the default space
    batch_sizes: Optional[List[int]] = None
    ubatch_sizes: Optional[List[int]] = None
    verify_top: int = 2
    verify_rounds: int = 2
    journal: Optional[OutputPath] = None
    json_out: Optional[OutputPath] = None
    output: Optional[OutputPath] = None
    plot: Optional[OutputPath] = None
    apply: Optional[ApplyTargets] = None
    max_rss: Optional[int] = None
    max_vram: Optional[int] = None
    ui: Optional[str] = None


@dataclass
class TuneOutcome:
    """What run_autotune returns to in-process callers (the benchmark script, tests)."""

    exit_code: int
    best: Optional[Best]
    space: Space
    trials: List[Any] = field(default_factory=list)  # every trial of the journal
    new_trials: List[Any] = field(default_factory=list)  # launched or pruned in this run
    verification: Optional[Verification] = None
    stop_reason: str = ""
    journal: Optional[str] = None


def plan_space(params: AutotuneParams, supported: set, cores: tuple, has_gpu: bool, n_layers: Optional[int]) -> Space:
    """The default space for this objective and machine, overridden by --space / --batch-sizes /
    --ubatch-sizes, without the parameters fixed by flags."""
    tpl, wl = params.template, params.workload
    fixed = {**fixed_of(tpl), **fixed_from_raw(tpl.extra_args)}
    inputs = SpaceInputs(
        physical_cores=cores[0],
        logical_cores=cores[1],
        has_gpu=has_gpu and not tpl.no_gpu,
        n_layers=n_layers,
        prefill=wl.prefill_matters,
        concurrency=wl.concurrency,
        prompt_size=wl.prompt_size,
        supported=supported,
    )
    defaults, start = default_values(inputs)
    overrides = parse_space(params.space) if params.space else {}
    for name, values, flag in (
        ("batch_size", params.batch_sizes, "--batch-sizes"),
        ("ubatch_size", params.ubatch_sizes, "--ubatch-sizes"),
    ):
        if values:
            if name in overrides:
                raise UserError(f"{flag} and --space both give {name.replace('_', '-')}; use one")
            overrides[name] = sorted(set(values))
    space = build_space(defaults, start, overrides, fixed, supported, replace_all=params.space is not None)
    if not space.values:
        raise UserError("nothing to tune: every parameter of the space is fixed by a flag (see --space)")
    return space


def _study(params: AutotuneParams, fixed: Dict[str, Any]) -> Dict[str, Any]:
    tpl = params.template
    try:
        size: Optional[int] = os.path.getsize(tpl.model) if tpl.model else None
    except OSError:
        size = None
    extra = list(tpl.extra_args)
    for i, arg in enumerate(extra[:-1]):
        if arg == "--api-key":
            extra[i + 1] = "***"
    return {
        "model": tpl.model,
        "model_bytes": size,
        "binary": tpl.binary,
        "workload": params.workload.to_dict(),
        "fixed": fixed,
        "extra_args": extra,
    }


def _default_journal() -> OutputPath:
    path = state_subdir("tune") / f"autotune-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.jsonl"
    out = output_path(str(path), "--journal")
    assert out is not None
    return out


def _records_path() -> OutputPath:
    path = state_subdir("tune") / f"records-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.jsonl"
    out = output_path(str(path), "--jsonl")
    assert out is not None
    return out


def run_autotune(params: AutotuneParams, view: Optional[TuneObserver] = None) -> TuneOutcome:
    """The whole autotune run; prints its result and writes the files. Raises UserError for what the
    user can fix before anything is launched."""
    tpl, wl = params.template, params.workload
    if getattr(tpl, "models_dir", None):
        raise UserError("autotune tunes one model: pass --model, not --models-dir")
    check_available(wl)
    require_strategy(params.strategy)
    if params.plot is not None:
        from .report import _pyplot

        _pyplot()  # a missing matplotlib is said before any trial, not after an hour of them
    supported = supported_flags(server_help(tpl.binary))
    machine = detect_machine(gpu=not tpl.no_gpu)
    limits = MemoryLimits(params.max_rss, params.max_vram, machine.ram_available_bytes, machine.gpus)
    fit = FitChecker(tpl.model, wl.ctx_size, machine.has_gpu and not tpl.no_gpu, limits)
    trained = getattr(fit.info, "context_length", None)
    if not params.ctx_given and trained and trained < wl.ctx_size:
        wl = params.workload = dataclasses.replace(wl, ctx_size=trained)
        fit.ctx_size = trained
        if wl.prompt_size + wl.max_output_tokens > trained:
            raise UserError(
                f"prompt {wl.prompt_size} + output {wl.max_output_tokens} tokens do not fit the model's trained "
                f"context of {trained}: lower --prompt-size or --max-output-tokens (or pass --ctx-size)"
            )
    space = plan_space(
        params, supported, (machine.physical_cores, machine.logical_cores), machine.has_gpu, fit.n_layers
    )
    journal = Journal(params.journal or _default_journal(), _study(params, space.fixed)).open()
    base = ServerBase(tpl, wl.ctx_size, params.startup_timeout, params.allow_multi_server)
    runner = TrialRunner(base, make_measure(wl), _records_path(), params.warmup, params.max_rss)
    budget = params.budget or default_budget(params.strategy, space.size)
    notes = []
    if fit.unavailable:
        notes.append(f"no memory estimate ({fit.unavailable}): candidates are not pruned by memory")
    if journal.skipped:
        notes.append(f"{journal.skipped} unreadable line(s) of the journal skipped")
    expected = expected_trials(params.strategy, space.values, space.size)
    if budget.trials is not None:
        expected = min(expected, budget.trials)
    from .view import make_view

    observer: TuneObserver = view if view is not None else make_view(params.ui)
    header = RunHeader(
        workload=wl.describe(),
        unit=wl.unit,
        space=space.describe(),
        names=space.names,
        strategy=params.strategy,
        budget=budget.describe() if budget.trials or budget.seconds or params.strategy != "grid" else "the grid",
        expected_trials=expected,
        journal=str(journal.out),
        resumed=journal.resumed,
        notes=notes,
    )
    ctx = SearchContext(
        space,
        runner,
        journal,
        observer,
        params.repeats,
        budget,
        (lambda c: fit.reason(c, space.fixed)) if fit.info is not None else None,
    )
    started_wall = time.time()
    verification: Optional[Verification] = None
    interrupted = False
    stop_reason = ""
    try:
        observer.started(header)
        stop_reason = run_strategy(params.strategy, ctx, wl.objective, params.seed)
        finalists = pick_finalists(ctx.search_trials, params.verify_top)
        if params.verify_rounds > 0 and finalists:
            observer.message(f"verifying the top {len(finalists)} against llama-server's defaults ...")
            verification = verify(runner, journal, observer, finalists, params.verify_rounds, params.repeats)
    except KeyboardInterrupt:
        interrupted = True
        stop_reason = f"interrupted ({stopping.requested() or 'Ctrl-C'})"
    finally:
        observer.close()
        journal.close()
    best = choose_best(ctx, verification, base, wl.unit)
    outcome = TuneOutcome(
        ExitStatus.OK, best, space, list(journal.trials), list(ctx.new_trials), verification, stop_reason,
        str(journal.out),
    )  # fmt: skip
    failures = [f for f in (journal.failed,) if f]
    _print_result(outcome, ctx, interrupted)
    doc_header = {
        "objective": wl.objective,
        "unit": wl.unit,
        "workload": wl.to_dict(),
        "strategy": params.strategy,
        "seed": params.seed,
        "budget": {"trials": budget.trials, "seconds": budget.seconds},
        "repeats": params.repeats,
        "space": space.to_dict(),
        "journal": str(journal.out),
        "records": str(runner.jsonl),
        "machine": {"physical_cores": machine.physical_cores, "logical_cores": machine.logical_cores},
    }
    failures += _write_outputs(params, outcome, doc_header, started_wall, runner, interrupted)
    if params.apply is not None and best is not None and not interrupted:
        failures += _apply(params, best, base)
    report_failures(PROG, failures)
    outcome.exit_code = _exit_code(outcome, interrupted, failures)
    return outcome


def choose_best(
    ctx: SearchContext, verification: Optional[Verification], base: ServerBase, unit: str
) -> Optional[Best]:
    """The verified best when the verification measured one (the defaults when they were significantly
    better), else the best of the search."""
    fixed = fixed_of(base.template)
    cand, value, low, high, source, number = None, None, None, None, "search", None
    v = verification
    if v is not None and v.best is not None and v.best.interval is not None:
        chosen = v.best
        if v.significant and v.ratio is not None and v.ratio < 1.0 and v.defaults is not None:
            chosen = v.defaults
        ci = chosen.interval
        if ci is not None:
            cand, value, low, high, source = chosen.candidate, ci.mean, ci.low, ci.high, "verified"
    if cand is None:
        top = ctx.best()
        if top is None or top.mean is None:
            return None
        cand, value, number = top.candidate, top.mean, top.number
    assert value is not None
    cfg = server_config(base, cand, base.port)
    from ..server.config import build_command

    return Best(
        candidate=dict(cand),
        fixed=fixed,
        value=value,
        unit=unit,
        source=source,
        low=low,
        high=high,
        ratio_to_defaults=v.ratio if v else None,
        significant=v.significant if v else None,
        verdict=v.verdict if v else None,
        server_command=build_command(cfg),
        run_command=llama_run_command(build_command(cfg), len(base.template.extra_args)),
        trial=number,
    )


def _print_result(outcome: TuneOutcome, ctx: SearchContext, interrupted: bool) -> None:
    trials = [t for t in outcome.trials if t.phase == "search"]
    ok = sum(1 for t in trials if t.ok)
    failed = sum(1 for t in trials if t.launched and not t.ok)
    pruned = sum(1 for t in trials if not t.launched)
    head = "interrupted: best so far" if interrupted else "done"
    stdio.final(
        f"{head}: {ok} ok, {failed} failed, {pruned} pruned of {outcome.space.size} points "
        f"({outcome.stop_reason or 'finished'})"
    )
    if outcome.best is None:
        return
    for line in best_lines(outcome.best):
        stdio.final(line)
    stdio.final(f"journal: {outcome.journal} (rerun with --journal {outcome.journal} to continue)")


def _write_outputs(
    params: AutotuneParams,
    outcome: TuneOutcome,
    header: Dict[str, Any],
    started_wall: float,
    runner: TrialRunner,
    interrupted: bool,
) -> List[str]:
    failures: List[str] = []
    if params.output is not None and outcome.best is not None:
        try:
            write_json(params.output, best_document(outcome.best, params.workload.to_dict()))
            stdio.final(f"best config: {params.output}")
        except OutputFailed as exc:
            failures.append(str(exc))
    if params.json_out is not None:
        env = _environment(runner)
        status = "interrupted" if interrupted else "complete"
        doc = result_document(
            status, outcome.stop_reason, started_wall, header, outcome.trials, outcome.verification, outcome.best, env
        )
        try:
            write_json(params.json_out, doc)
            stdio.final(f"results: {params.json_out}")
        except OutputFailed as exc:
            failures.append(str(exc))
    if params.plot is not None:
        title = f"autotune {params.workload.objective} ({params.workload.unit})"
        try:
            write_plot(params.plot, outcome.trials, outcome.space.names, params.workload.unit, title)
            stdio.final(f"plot: {params.plot}")
        except OutputFailed as exc:
            failures.append(str(exc))
    return failures


def _environment(runner: TrialRunner) -> Dict[str, Any]:
    from ..bench.output.results import environment_manifest, host_manifest
    from ..version import __version__

    if runner.last_info is not None:
        return environment_manifest(runner.last_info, runner.last_started)
    return {"tool": {"name": "llama-bench", "version": __version__}, "server": None, "host": host_manifest()}


def _apply(params: AutotuneParams, best: Best, base: ServerBase) -> List[str]:
    assert params.apply is not None
    tpl = base.template
    cfg = server_config(base, best.candidate, base.port)
    from ..server.config import build_command

    values = env_values(best.candidate, best.fixed, tpl.binary, tpl.model or "", base.port, cfg.ctx_size)
    note = f"{params.workload.objective} {best.value:.4g} {best.unit}, {describe(best.candidate)}"
    try:
        for line in apply(params.apply, values, without_secrets(build_command(cfg)), note):
            stdio.final(line)
    except OutputFailed as exc:
        return [str(exc)]
    return []


def _exit_code(outcome: TuneOutcome, interrupted: bool, failures: List[str]) -> int:
    if interrupted:
        try:
            print(f"{PROG}: interrupted; the journal keeps every finished trial", file=sys.stderr, flush=True)
        except (OSError, ValueError):
            pass
        return ExitStatus.INTERRUPTED
    if outcome.best is None:
        trials = [t for t in outcome.trials if t.phase == "search"]
        first = next((t for t in trials if not t.ok), None)
        why = f"; first: {first.reason}" if first is not None and first.reason else ""
        raise UserError(f"no candidate worked ({len(trials)} tried{why})", ExitStatus.FAILED)
    return ExitStatus.OUTPUT_ERROR if failures else ExitStatus.OK
