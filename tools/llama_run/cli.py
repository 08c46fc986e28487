"""`llama-run`: start and supervise a llama-server with live stats; list and stop servers.

This module only parses arguments and dispatches; the work lives in runner.py and llama_bench.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from tools.llama_bench import __version__
from tools.llama_bench.server_args import add_server_args, positive_float, split_extra_args
from tools.llama_bench.settings import DEFAULT_INTERVAL, DEFAULT_STATS_INTERVAL
from tools.llama_bench.entry import run_cli

PROG = "llama-run"
COMMANDS = ("run", "ps", "stop-all", "doctor")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Start a llama-server, wait until it is ready, and show live stats until Ctrl-C.",
        epilog="Without a command, `run` is assumed. Extra llama-server flags go after `--`.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="start a llama-server and show live stats (default)")
    add_server_args(run)
    ui = run.add_argument_group("display")
    ui.add_argument("--ui", choices=["tui", "plain"], help="tui when stdout is a terminal, else plain")
    ui.add_argument(
        "--interval", type=positive_float, default=DEFAULT_INTERVAL, help=f"sampling period in s ({DEFAULT_INTERVAL:g})"
    )
    ui.add_argument(
        "--stats-interval",
        type=positive_float,
        default=DEFAULT_STATS_INTERVAL,
        help=f"plain mode: print a stats block every N s ({DEFAULT_STATS_INTERVAL:g})",
    )
    ui.add_argument("--duration", type=positive_float, help="stop the server after N seconds")
    ui.add_argument("--detach", action="store_true", help="leave the server running in the background and exit")

    doctor = sub.add_parser("doctor", help="check that the server binary and model work; print a summary")
    add_server_args(doctor)

    ps = sub.add_parser("ps", help="list running llama-servers")
    ps.add_argument("--json", action="store_true", help="machine-readable output")

    stop = sub.add_parser("stop-all", help="stop every llama-server of the current user")
    stop.add_argument("--dry-run", action="store_true", help="list what would be stopped")
    stop.add_argument("--grace", type=positive_float, default=10.0, help="seconds between SIGTERM and SIGKILL (10)")
    return parser


def normalize_argv(argv: List[str]) -> List[str]:
    """`llama-run` alone, or starting with a flag, means `llama-run run ...`."""
    if not argv:
        return ["run"]
    first = argv[0]
    if first in COMMANDS or first in ("-h", "--help", "--version"):
        return argv
    return ["run"] + argv


def main(argv: Optional[List[str]] = None) -> int:
    raw = normalize_argv(list(sys.argv[1:] if argv is None else argv))
    ours, extra = split_extra_args(raw)
    args = build_parser().parse_args(ours)
    if extra and args.command not in ("run", "doctor"):
        print(f"{PROG}: error: extra llama-server flags after -- only apply to `run` and `doctor`", file=sys.stderr)
        return 2
    return run_cli(PROG, lambda: dispatch(args, extra))


def dispatch(args: argparse.Namespace, extra: List[str]) -> int:
    if args.command == "run":
        from .runner import run

        return run(args, extra)
    if args.command == "doctor":
        from tools.llama_bench.doctor import run_doctor

        return run_doctor(args, extra)
    from . import servers

    if args.command == "ps":
        return servers.ps(args)
    return servers.stop_all(args)


if __name__ == "__main__":
    sys.exit(main())
