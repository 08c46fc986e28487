"""Arguments of `llama-bench benchmark`, `bench`, `compare` and `plot`, and their translation into
typed parameters (BenchParams, OutputOptions) for the command functions in cmd.py (`capacity` and
`bench --capacity`: capacity_args.py).

Only argparse here: the command code (rich, aiohttp, requests) is imported when a command runs,
so `llama-bench --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any, Dict, Optional

from ..argtypes import (
    any_int,
    api_key_type,
    concurrency_list,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    token_counts,
)
from ..settings import DEFAULT_HOST, DEFAULT_PORT, setting
from ..utils import UserError
from .slo import EXAMPLE as SLO_EXAMPLE, slo_type

if TYPE_CHECKING:
    from .cmd import OutputOptions
    from .plan import BenchParams
    from .workloads import Workload

API_CHOICES = ("auto", "completion", "openai-completions", "openai-chat")
TASKS = ("coding", "list", "random")
SIZES_HELP = (
    "Sizes are token counts; k = 1000 (100, 1k, 1.5k, 4096). Prompts are built with the server's own "
    "tokenizer to exactly that many tokens, each with a unique prefix and cache_prompt=false (except for "
    "--workload shared-prefix and multi-turn, which measure the prompt cache)."
)
WORKLOADS = ("unique", "shared-prefix", "multi-turn")
DEFAULT_SIZES = [1000, 10000]
DEFAULT_TURNS = 3


def add_run_args(p: argparse.ArgumentParser, capacity: bool = False) -> None:
    """Flags shared by `benchmark`, `bench` and `capacity` (lists are validated by the command: one clear
    line). `capacity` leaves out what the search decides itself (concurrency, rate, repeats)."""
    g = p.add_argument_group("benchmark")
    g.add_argument(
        "--prompt-sizes",
        type=token_counts,
        default=None,
        metavar="LIST",
        help="prompt sizes in tokens, k = 1000: 100,200 or 1k,1.5k,4096 (default "
        + ("1k; a capacity search takes one size)" if capacity else "1k,10k)"),
    )
    g.add_argument("--max-output-tokens", type=positive_int, default=256, help="tokens generated per request (256)")
    g.add_argument("--temperature", type=non_negative_float, default=0.0, help="sampling temperature (0)")
    g.add_argument(
        "--concurrency",
        type=concurrency_list,
        default=None,
        metavar="LIST",
        help="concurrent requests, e.g. 1,4,16 (default 1)" if not capacity else argparse.SUPPRESS,
    )
    g.add_argument(
        "--request-rate",
        type=positive_float,
        metavar="R",
        help="requests/s with Poisson arrivals (default: unlimited)" if not capacity else argparse.SUPPRESS,
    )
    if not capacity:
        n = g.add_mutually_exclusive_group()
        n.add_argument("--num-requests", type=positive_int, metavar="N", help="requests per cell")
        n.add_argument(
            "--rounds",
            type=positive_int,
            default=3,
            help="without --num-requests: rounds x concurrency requests per cell (default 3; "
            "before --repeats existed this was --repeats)",
        )
        g.add_argument(
            "--repeats",
            type=positive_int,
            default=1,
            metavar="N",
            help="run every cell N times; each figure gets a mean and a 95%% confidence interval, and "
            "`compare` can tell a change from noise (default 1)",
        )
    g.add_argument(
        "--slo",
        type=slo_type,
        required=capacity,
        metavar="SPEC",
        help=f"service-level objective, e.g. {SLO_EXAMPLE} (ttft/tpot/itl/e2e, a percentile, ms or s): per cell "
        "the share of requests meeting every bound, and goodput" + (" (required)" if capacity else ""),
    )
    w = p.add_argument_group("workload")
    w.add_argument(
        "--workload",
        choices=WORKLOADS,
        default="unique",
        help="unique prompts (default); shared-prefix: --groups of requests share their first --prefix-tokens; "
        "multi-turn: conversations of --turns requests, each sent after the previous answer",
    )
    w.add_argument("--prefix-tokens", type=positive_int, metavar="N", help="shared-prefix: tokens shared per group")
    w.add_argument("--groups", type=positive_int, metavar="G", help="shared-prefix: groups of requests (default 1)")
    w.add_argument(
        "--turns",
        type=positive_int,
        metavar="T",
        help=f"multi-turn: requests per conversation (default {DEFAULT_TURNS})",
    )
    w.add_argument(
        "--dataset",
        metavar="FILE",
        help="replay prompts and output lengths from a ShareGPT JSON or a JSONL of "
        '{"prompt" | "prompt_tokens", "output_tokens"} (replaces --prompt-sizes)',
    )
    g.add_argument("--warmup", type=non_negative_int, default=1, help="warm-up requests before the first cell (1)")
    g.add_argument("--seed", type=any_int, default=0, help="seed for prompts, arrivals and sampling (0)")
    g.add_argument(
        "--api",
        choices=API_CHOICES,
        default=None,
        help="completion = llama.cpp /completion, openai-completions = /v1/completions, openai-chat = "
        "/v1/chat/completions (default: completion for llama.cpp, openai-chat otherwise)",
    )
    g.add_argument("--mode", choices=("chat", "completion"), help="compatibility alias: chat = --api openai-chat")
    g.add_argument("--task", choices=TASKS, default="coding", help="prompt text: code, prose lists, random tokens")
    g.add_argument("--api-model", metavar="NAME", help="model name sent in OpenAI requests (default: from /v1/models)")
    g.add_argument("--extra", metavar="JSON", help="extra JSON fields merged into every request body")
    g.add_argument(
        "--timeout",
        type=positive_float,
        default=300.0,
        help="seconds without any data from the server before a request fails (300)",
    )
    g.add_argument(
        "--request-deadline",
        type=positive_float,
        default=600.0,
        metavar="S",
        help="seconds a request may take in all, however steadily data arrives (600)",
    )
    g.add_argument(
        "--metrics-interval", type=positive_float, default=1.0, help="/metrics and /slots sampling period in s (1)"
    )
    g.add_argument("--no-energy", action="store_true", help="do not read RAPL/NVML energy")
    g.add_argument("--strict", action="store_true", help="fail instead of skipping prompt sizes that do not fit")
    g.add_argument("--skip-vram-check", action="store_true", help="skip the check that the model fits in VRAM/RAM")
    g.add_argument("--json-out", metavar="PATH", help="write the full result (versioned JSON)")
    g.add_argument("--csv", metavar="PATH", help="write one CSV row per cell")
    g.add_argument(
        "--jsonl",
        metavar="PATH",
        help="append per-request records as they finish (default: a file in the state directory)",
    )
    g.add_argument("--quiet", action="store_true", help="no progress bar or per-cell tables; summary only")


def register(subparsers: Any) -> None:
    """Add the benchmark commands to llama-bench's subparsers."""
    from ..server.args import add_server_args

    b = subparsers.add_parser(
        "benchmark",
        help="benchmark a running server (llama.cpp or any OpenAI-compatible endpoint)",
        description="Streaming benchmark of a running server: TTFT, ITL, TPOT, E2E, throughput, energy.",
        epilog=SIZES_HELP,
    )
    host = setting("LLAMA_HOST") or DEFAULT_HOST
    port = setting("LLAMA_PORT") or DEFAULT_PORT
    b.add_argument("--endpoint", default=f"http://{host}:{port}", help="server URL (default %(default)s)")
    b.add_argument("--api-key", type=api_key_type, help="API key (default: LLAMA_API_KEY, else OPENAI_API_KEY)")
    add_run_args(b)
    b.set_defaults(handler=_benchmark)

    e = subparsers.add_parser(
        "bench",
        help="benchmark the llama-server on --host/--port, starting one if none is running",
        description="Reuse the llama-server on --host/--port, else start one (stopped afterwards), and benchmark it.",
        epilog=SIZES_HELP + " Extra llama-server flags go after `--`.",
    )
    add_server_args(e)
    add_run_args(e)
    from .capacity_flags import add_capacity_args

    add_capacity_args(e, on_bench=True)
    e.set_defaults(handler=_bench)

    c = subparsers.add_parser(
        "compare",
        help="compare two --json-out results side by side: each change significant or within noise",
        description="Compare two results cell by cell. A change is marked significant by Welch's t-test on the "
        "repeat values (p < 0.05) when both results have --repeats >= 2, else by a 95 percent bootstrap interval of "
        "the change computed from the per-request values (latency and per-request rate figures).",
    )
    c.add_argument("a", metavar="A.json")
    c.add_argument("b", metavar="B.json")
    c.set_defaults(handler=_compare)

    p = subparsers.add_parser("plot", help="plot tok/s and latency of a --json-out result (needs matplotlib)")
    p.add_argument("result", metavar="RESULT.json")
    p.add_argument("--out", metavar="PNG", help="image file (default: RESULT.png)")
    p.set_defaults(handler=_plot)


# -- namespace -> typed parameters -------------------------------------------------------------------
def params_from_args(args: argparse.Namespace, endpoint: str, api_key: Optional[str]) -> "BenchParams":
    from .plan import BenchParams
    from .records import Api

    api = Api(args.api) if args.api else Api.AUTO
    if args.mode and not args.api:  # paq_llamacpp_studio's --mode chat|completion
        api = Api.OPENAI_CHAT if args.mode == "chat" else Api.NATIVE
    extra: Dict[str, Any] = {}
    if args.extra:
        try:
            extra = json.loads(args.extra)
        except ValueError as exc:
            raise UserError(f"--extra is not valid JSON: {exc}") from None
        if not isinstance(extra, dict):
            raise UserError("--extra must be a JSON object, e.g. '{\"top_k\": 1}'")
        owned = sorted(set(extra) & set(EXTRA_OWNED))
        if owned:  # the measurement is built on these: a silent override would mislabel every figure
            raise UserError(f"--extra cannot set {owned[0]}: {EXTRA_OWNED[owned[0]]}")
    workload = workload_from_args(args)
    if workload.dataset is not None:
        sizes = [0]
    else:
        sizes = list(args.prompt_sizes or ([1000] if getattr(args, "capacity_run", False) else DEFAULT_SIZES))
    return BenchParams(
        endpoint=endpoint,
        api_key=api_key,
        api=api,
        prompt_sizes=sizes,
        concurrency=list(getattr(args, "concurrency", None) or [1]),
        max_output_tokens=args.max_output_tokens,
        num_requests=getattr(args, "num_requests", None),
        rounds=getattr(args, "rounds", 3),
        repeats=getattr(args, "repeats", 1),
        temperature=args.temperature,
        request_rate=getattr(args, "request_rate", None),
        warmup=args.warmup,
        seed=args.seed,
        task=args.task,
        api_model=args.api_model,
        timeout=args.timeout,
        request_deadline=args.request_deadline,
        strict=args.strict,
        metrics_interval=args.metrics_interval,
        energy=not args.no_energy,
        extra_body=extra,
        slo=args.slo,
        workload=workload,
    )


def workload_from_args(args: argparse.Namespace) -> "Workload":
    """--workload and its flags, checked together (one line for a combination that makes no sense)."""
    from .workloads import Workload, WorkloadKind

    kind = WorkloadKind(args.workload)
    if args.prefix_tokens is not None or args.groups is not None:
        if kind is not WorkloadKind.SHARED_PREFIX:
            flag = "--prefix-tokens" if args.prefix_tokens is not None else "--groups"
            raise UserError(f"{flag} needs --workload shared-prefix")
    if args.turns is not None and kind is not WorkloadKind.MULTI_TURN:
        raise UserError("--turns needs --workload multi-turn")
    if args.dataset is not None:
        from .dataset import load_dataset

        if kind is not WorkloadKind.UNIQUE:
            raise UserError(f"--dataset replays its own prompts: it cannot be combined with --workload {kind}")
        if args.prompt_sizes is not None:
            raise UserError("--dataset replaces --prompt-sizes (the lengths come from the file)")
        return Workload(kind=WorkloadKind.DATASET, dataset=load_dataset(args.dataset))
    if kind is WorkloadKind.SHARED_PREFIX:
        if args.prefix_tokens is None:
            raise UserError("--workload shared-prefix needs --prefix-tokens N (the tokens each group shares)")
        return Workload(kind=kind, prefix_tokens=args.prefix_tokens, groups=args.groups or 1)
    if kind is WorkloadKind.MULTI_TURN:
        turns = DEFAULT_TURNS if args.turns is None else args.turns
        if turns < 2:
            raise UserError("--turns must be at least 2 (one turn is --workload unique)")
        return Workload(kind=kind, turns=turns)
    return Workload()


EXTRA_OWNED = {
    "prompt": "the prompts come from --prompt-sizes / --workload / --dataset",
    "messages": "the prompts come from --prompt-sizes / --workload / --dataset",
    "n_predict": "use --max-output-tokens",
    "max_tokens": "use --max-output-tokens",
    "max_completion_tokens": "use --max-output-tokens",
    "stream": "requests are always streamed (TTFT and ITL are measured from the stream)",
}


def outputs_from_args(args: argparse.Namespace) -> "OutputOptions":
    """The output files, each checked before anything runs (outputs.output_path)."""
    from ..outputs import check_distinct, output_path
    from .cmd import OutputOptions

    out = OutputOptions(
        json_out=output_path(args.json_out, "--json-out"),
        csv=output_path(args.csv, "--csv"),
        jsonl=output_path(args.jsonl, "--jsonl"),
        quiet=args.quiet,
    )
    check_distinct(out.json_out, out.csv, out.jsonl, inputs=[("--dataset", getattr(args, "dataset", None))])
    return out


# -- handlers: typed parameters in, the command function called -----------------------------------
def _benchmark(args: argparse.Namespace) -> int:
    from ..endpoint import client_api_key, normalize_endpoint
    from .cmd import benchmark

    params = params_from_args(args, normalize_endpoint(args.endpoint), client_api_key(args.api_key))
    outputs = outputs_from_args(args)
    return benchmark(params, outputs)


def _bench(args: argparse.Namespace) -> int:
    from ..endpoint import client_api_key, server_api_key, url_for
    from ..server.args import config_from_args, launch_from_args
    from .capacity_flags import capacity_command
    from .cmd import bench

    extra = list(args.extra_server_args or [])
    api_key = server_api_key(args.api_key, extra) or client_api_key(None)
    # Everything is validated before anything starts.
    args.capacity_run = bool(args.capacity)
    params = params_from_args(args, url_for(args.host, args.port), api_key)
    command = capacity_command(args, params)  # `bench --capacity`: the capacity search on this server
    outputs = outputs_from_args(args)
    return bench(
        params,
        outputs,
        args.host,
        args.port,
        lambda: config_from_args(args, extra),
        launch_from_args(args),
        skip_vram_check=args.skip_vram_check,
        command=command,
    )


def _compare(args: argparse.Namespace) -> int:
    from .cmd import compare

    return compare(args.a, args.b)


def _plot(args: argparse.Namespace) -> int:
    from .cmd import plot

    return plot(args.result, args.out)
