"""Arguments of `llama-bench autotune` and their translation into AutotuneParams (argparse only here:
the tuner is imported when the command runs, so `--help` stays fast)."""

from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING, Any, List, Optional, Tuple

from ..argtypes import any_int, non_negative_int, positive_float, positive_int, token_counts
from ..utils import UserError

if TYPE_CHECKING:
    from .cmd import AutotuneParams

OBJECTIVES = ("gen", "prompt", "throughput", "tokens-per-joule", "slo", "efficiency")
STRATEGIES = ("smart", "optuna", "grid", "random")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE | re.ASCII)
_BUDGET = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h)?\s*$", re.IGNORECASE | re.ASCII)

DESCRIPTION = (
    "Find the fastest llama-server flags for this machine, model and workload: each trial starts the real "
    "server with candidate flags on a free port, measures the objective with the benchmark engine and stops "
    "it; the best are re-measured against llama-server's own defaults."
)
EPILOG = (
    "Space: --space 'threads=1,2;ubatch=128,256,512;fa=on,off;np=1,2;kv=f16,q8_0;tb=2,4;b=512,2048;ngl=0,99' "
    "replaces the default space (defaults: threads 1..cores, flash attention, KV type, plus threads-batch and "
    "batch sizes when prompts matter, slots for concurrent objectives, GPU layers with a GPU; only flags the "
    "binary's --help lists). A server flag such as --threads 4 fixes that parameter. Budget: 20 (trials) or "
    "10m / 90s / 1h. Extra llama-server flags go after `--`."
)


def byte_size(text: str) -> int:
    """'8G', '512M', '1.5GiB', '2000000' -> bytes (binary units)."""
    m = _SIZE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"invalid size '{text}': expected e.g. 8G, 512M or 1.5GiB")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2).lower()]
    value = int(float(m.group(1)) * scale)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"invalid size '{text}': must be more than 0")
    return value


def budget_type(text: str) -> Tuple[Optional[int], Optional[float]]:
    """'20' -> 20 trials; '10m', '90s', '1h' -> seconds."""
    m = _BUDGET.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"invalid budget '{text}': expected trials (20) or a time (10m, 90s, 1h)")
    number, unit = float(m.group(1)), (m.group(2) or "").lower()
    if number <= 0:
        raise argparse.ArgumentTypeError(f"invalid budget '{text}': must be more than 0")
    if not unit:
        if number != int(number):
            raise argparse.ArgumentTypeError(f"invalid budget '{text}': a number of trials is a whole number")
        return int(number), None
    return None, number * {"s": 1, "m": 60, "min": 60, "h": 3600}[unit]


def int_list(text: str) -> List[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid list '{text}': expected numbers such as 128,256,512") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"invalid list '{text}': numbers must be >= 1")
    return values


def register(subparsers: Any) -> None:
    """Add `autotune` to llama-bench's subparsers."""
    from ..server.args import add_server_args

    a = subparsers.add_parser(
        "autotune",
        help="find the fastest llama-server flags for this machine, model and workload",
        description=DESCRIPTION,
        epilog=EPILOG,
    )
    add_server_args(a)
    # A tuned flag given on the command line fixes that parameter; .env's LLAMA_THREADS does not (it is
    # the setting being tuned, not a constraint).
    a.set_defaults(threads=None, handler=_autotune)
    g = a.add_argument_group("autotune")
    g.add_argument("--objective", choices=OBJECTIVES, default="gen", help="what to maximise (default gen)")
    g.add_argument("--slo", metavar="SPEC", help="--objective slo: bounds such as ttft_p99=2s,tpot_p50=100ms")
    g.add_argument(
        "--concurrency", type=positive_int, help="requests in flight for throughput/tokens-per-joule/slo (4 / 1)"
    )
    g.add_argument(
        "--prompt-size",
        "--prompt-tokens",
        dest="prompt_size",
        type=token_counts,
        default=None,
        metavar="N",
        help="prompt tokens per request (default 256)",
    )
    g.add_argument(
        "--max-output-tokens", type=positive_int, help="tokens generated per request (default 64; prompt: 1)"
    )
    g.add_argument("--space", metavar="SPEC", help="the space to search, e.g. 'threads=1,2;ubatch=128,256,512'")
    g.add_argument("--batch-sizes", type=int_list, metavar="LIST", help="batch sizes to try, e.g. 512,1024,2048")
    g.add_argument("--ubatch-sizes", type=int_list, metavar="LIST", help="ubatch sizes to try, e.g. 128,256,512")
    g.add_argument("--strategy", choices=STRATEGIES, default="smart", help="search strategy (default smart)")
    g.add_argument("--budget", type=budget_type, metavar="N|TIME", help="trials (20) or time (10m) for the search")
    g.add_argument("--duration", type=positive_float, metavar="S", help="time budget in seconds (as --budget Ns)")
    g.add_argument("--repeats", type=positive_int, help="measurements per trial (default 3; slo: 1)")
    g.add_argument("--warmup", type=non_negative_int, default=1, help="warm-up requests per trial (default 1)")
    g.add_argument("--verify-top", type=positive_int, default=2, help="finalists re-measured at the end (2)")
    g.add_argument(
        "--verify-rounds", type=non_negative_int, default=2, help="launches per finalist and the defaults (2; 0: none)"
    )
    g.add_argument("--seed", type=any_int, default=0, help="seed for prompts and the random/optuna strategies (0)")
    g.add_argument("--timeout", type=positive_float, default=60.0, help="seconds of silence before a request fails")
    g.add_argument("--max-rss", type=byte_size, metavar="SIZE", help="prune candidates needing more RAM, e.g. 8G")
    g.add_argument("--max-vram", type=byte_size, metavar="SIZE", help="prune candidates needing more GPU memory")
    g.add_argument("--journal", metavar="FILE", help="JSONL journal of every trial; rerun with it to continue")
    g.add_argument("--json-out", metavar="FILE", help="every trial, the verification and the environment as JSON")
    g.add_argument("--output", metavar="FILE", help="the best configuration as JSON")
    g.add_argument("--plot", metavar="FILE.png", help="objective per trial and per parameter (needs matplotlib)")
    g.add_argument("--apply", action="store_true", help="write the best into .env and scripts/start_server.sh")
    g.add_argument("--env-file", metavar="PATH", help="--apply: the .env to update (default: the repo's .env)")
    g.add_argument("--start-script", metavar="PATH", help="--apply: the start script (scripts/start_server.sh)")
    g.add_argument("--ui", choices=("live", "plain"), help="live table on a terminal, else plain lines")


def params_from_args(args: argparse.Namespace) -> "AutotuneParams":
    from ..outputs import check_distinct, output_path
    from ..server.args import config_from_args
    from .apply import DEFAULT_START_SCRIPT, ApplyTargets, check_targets
    from .cmd import AutotuneParams
    from .objective import Objective, Workload, objective_from
    from .search import Budget

    objective = objective_from(args.objective)
    concurrent = objective in (Objective.THROUGHPUT, Objective.TOKENS_PER_JOULE, Objective.SLO)
    if args.concurrency is not None and not concurrent:
        raise UserError(f"--concurrency applies to throughput, tokens-per-joule and slo, not {objective}")
    default_conc = 4 if objective in (Objective.THROUGHPUT, Objective.SLO) else 1
    prompt = args.prompt_size[0] if args.prompt_size else 256
    if args.prompt_size and len(args.prompt_size) > 1:
        raise UserError("--prompt-size takes one size (every trial is measured with the same requests)")
    output_tokens = args.max_output_tokens or (1 if objective is Objective.PROMPT else 64)
    ctx = int(args.ctx_size) if args.ctx_size else 4096
    if prompt + output_tokens > ctx:
        raise UserError(
            f"prompt {prompt} + output {output_tokens} tokens do not fit --ctx-size {ctx}: raise --ctx-size"
        )
    workload = Workload(
        objective=objective,
        prompt_size=prompt,
        max_output_tokens=output_tokens,
        concurrency=args.concurrency or default_conc,
        ctx_size=ctx,
        slo=args.slo,
        seed=args.seed,
        timeout=args.timeout,
        request_deadline=max(300.0, 5 * args.timeout),
    )
    budget = None
    if args.budget is not None or args.duration is not None:
        trials, seconds = args.budget if args.budget is not None else (None, None)
        budget = Budget(trials=trials, seconds=args.duration if args.duration is not None else seconds)
    apply_targets = None
    if args.apply:
        from ..settings import dotenv_path

        env_file = output_path(args.env_file or str(dotenv_path()), "--env-file")
        script = output_path(args.start_script or str(DEFAULT_START_SCRIPT), "--start-script")
        assert env_file is not None and script is not None
        apply_targets = ApplyTargets(env_file, script)
        check_targets(apply_targets)  # before the first trial, not after the whole tune
    elif args.env_file or args.start_script:
        raise UserError("--env-file and --start-script go with --apply")
    template = config_from_args(args, list(args.extra_server_args or []))
    params = AutotuneParams(
        template=template,
        workload=workload,
        startup_timeout=args.startup_timeout,
        allow_multi_server=args.allow_multi_server,
        ctx_given=bool(args.ctx_size),
        strategy=args.strategy,
        seed=args.seed,
        budget=budget,
        repeats=args.repeats or (1 if objective is Objective.SLO else 3),
        warmup=args.warmup,
        space=args.space,
        batch_sizes=args.batch_sizes,
        ubatch_sizes=args.ubatch_sizes,
        verify_top=args.verify_top,
        verify_rounds=args.verify_rounds,
        journal=output_path(args.journal, "--journal"),
        json_out=output_path(args.json_out, "--json-out"),
        output=output_path(args.output, "--output"),
        plot=output_path(args.plot, "--plot"),
        apply=apply_targets,
        max_rss=args.max_rss,
        max_vram=args.max_vram,
        ui=args.ui,
    )
    outs = [params.journal, params.json_out, params.output, params.plot]
    if apply_targets:
        outs += [apply_targets.env_file, apply_targets.start_script]
    check_distinct(*outs)
    return params


def _autotune(args: argparse.Namespace) -> int:
    from .cmd import run_autotune

    return run_autotune(params_from_args(args)).exit_code
