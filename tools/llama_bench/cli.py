"""`llama-bench`: benchmark and monitor llama-server. Parses arguments and dispatches only."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from .argtypes import api_key_type, positive_float
from .bench import args as bench_args, capacity_args, report_args
from .entry import ArgumentParser, main as run_main
from .settings import DEFAULT_INTERVAL
from .tune import args as tune_args
from .version import __version__

PROG = "llama-bench"


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description="Benchmark and monitor llama.cpp's llama-server (or any OpenAI-compatible endpoint).",
        epilog="Sizes accept k = 1000: 100, 1k, 1.5k, 4096.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    bench_args.register(sub)
    capacity_args.register(sub)
    report_args.register(sub)
    tune_args.register(sub)

    mon = sub.add_parser("monitor", help="sample a running server's /metrics, /slots and host stats")
    mon.add_argument("--endpoint", required=True, help="server URL, e.g. http://127.0.0.1:11433")
    mon.add_argument(
        "--api-key", type=api_key_type, help="API key the server requires (default: LLAMA_API_KEY, else OPENAI_API_KEY)"
    )
    mon.add_argument("--interval", type=positive_float, default=DEFAULT_INTERVAL, help="sampling period in s")
    mon.add_argument("--duration", type=positive_float, help="stop after N seconds (default: until Ctrl-C)")
    mon.add_argument("--json-out", metavar="PATH", help="write the whole series as JSON at the end")
    mon.add_argument("--jsonl", metavar="PATH", help="append each sample as a JSON line as it is taken")
    mon.add_argument("--quiet", action="store_true", help="no per-sample line on stdout")
    mon.set_defaults(handler=_monitor)
    return parser


def _monitor(args: argparse.Namespace) -> int:
    from .endpoint import client_api_key, normalize_endpoint
    from .monitor.cmd import MonitorParams, run_monitor
    from .outputs import check_distinct, output_path

    params = MonitorParams(
        endpoint=normalize_endpoint(args.endpoint),
        api_key=client_api_key(args.api_key),
        interval=args.interval,
        duration=args.duration,
        json_out=output_path(args.json_out, "--json-out"),
        jsonl=output_path(args.jsonl, "--jsonl"),
        quiet=args.quiet,
    )
    check_distinct(params.json_out, params.jsonl)
    return run_monitor(params)


def main(argv: Optional[List[str]] = None) -> int:
    return run_main(PROG, build_parser, list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
