"""`llama-run`: start and supervise a llama-server with live stats; list and stop servers.

This module only parses arguments and dispatches; the work lives in runner.py, servers.py and llama_bench.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from tools.llama_bench.argtypes import port_type, positive_float, positive_int
from tools.llama_bench.entry import ArgumentParser, main as run_main
from tools.llama_bench.server.args import add_server_args
from tools.llama_bench.settings import DEFAULT_INTERVAL, DEFAULT_STATS_INTERVAL, setting
from tools.llama_bench.utils import UserError
from tools.llama_bench.version import __version__

from .proxy.args import register as register_proxy

PROG = "llama-run"
COMMANDS = ("run", "ps", "stop-all", "doctor", "models", "proxy", "usage")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description="Start a llama-server, wait until it is ready, and show live stats until Ctrl-C.",
        epilog="Without a command, `run` is assumed. Extra llama-server flags go after `--`.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="start a llama-server and show live stats (default)")
    add_server_args(run, fit_check=True)
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
    meter = run.add_argument_group("token-meter proxy")
    meter.add_argument(
        "--proxy",
        choices=["on", "off"],
        default=setting("LLAMA_PROXY") or "off",
        help="meter every request (who, how many tokens, how fast): the proxy takes --host/--port, llama-server "
        "moves behind it (default off; LLAMA_PROXY)",
    )
    meter.add_argument("--clients", metavar="FILE", help="with --proxy on: client names and limits by API key")
    run.set_defaults(handler=_run)

    doctor = sub.add_parser("doctor", help="check that the server binary and model work; print a summary")
    add_server_args(doctor, fit_check=True)
    doctor.set_defaults(handler=_doctor)

    models = sub.add_parser("models", help="list the GGUF models in the model folders and download caches")
    models.add_argument("--model-dir", action="append", metavar="DIR", help="also look here (repeatable)")
    models.add_argument("--json", action="store_true", help="machine-readable output")
    models.set_defaults(handler=_models)

    ps = sub.add_parser("ps", help="list running llama-servers")
    ps.add_argument("--json", action="store_true", help="machine-readable output")
    ps.set_defaults(handler=_ps)

    stop = sub.add_parser("stop-all", help="stop llama-servers of the current user (all, or by --port/--pid)")
    stop.add_argument("--dry-run", action="store_true", help="list what would be stopped")
    stop.add_argument("--port", type=port_type, action="append", help="only the server(s) on this port (repeatable)")
    stop.add_argument("--pid", type=positive_int, action="append", help="only this process (repeatable)")
    stop.add_argument(
        "--timeout",
        "--grace",
        dest="timeout",
        type=positive_float,
        default=10.0,
        help="seconds between SIGTERM and SIGKILL (10)",
    )
    stop.add_argument("--force", action="store_true", help="SIGKILL at once, no grace period")
    stop.set_defaults(handler=_stop_all)
    register_proxy(sub)
    return parser


def normalize_argv(argv: List[str]) -> List[str]:
    """`llama-run` alone, or starting with a flag, means `llama-run run ...`."""
    if not argv:
        return ["run"]
    first = argv[0]
    if first in COMMANDS or first in ("-h", "--help", "--version"):
        return argv
    return ["run"] + argv


def _no_extra(args: argparse.Namespace) -> None:
    if args.extra_server_args:
        raise UserError("extra llama-server flags after -- only apply to `run` and `doctor`")


def _run(args: argparse.Namespace) -> int:
    from tools.llama_bench.server.args import config_from_args, launch_from_args

    from .runner import RunOptions, run

    opts = RunOptions(
        config=config_from_args(args, args.extra_server_args),
        launch=launch_from_args(args),
        ui=args.ui,
        interval=args.interval,
        stats_interval=args.stats_interval,
        duration=args.duration,
        detach=args.detach,
        skip_vram_check=args.skip_vram_check,
        metrics_url=args.metrics_url,
        proxy=args.proxy == "on",
        clients_file=args.clients,
    )
    if args.clients and not opts.proxy:
        raise UserError("--clients needs --proxy on")
    return run(opts)


def _doctor(args: argparse.Namespace) -> int:
    from tools.llama_bench.server.args import config_from_args
    from tools.llama_bench.server.doctor import run_doctor

    return run_doctor(config_from_args(args, args.extra_server_args), args.startup_timeout, args.skip_vram_check)


def _models(args: argparse.Namespace) -> int:
    from .models import list_models

    _no_extra(args)
    return list_models(args.model_dir or [], as_json=args.json)


def _ps(args: argparse.Namespace) -> int:
    from .servers import ps

    _no_extra(args)
    return ps(as_json=args.json)


def _stop_all(args: argparse.Namespace) -> int:
    from .servers import StopFilter, stop_all

    _no_extra(args)
    return stop_all(
        StopFilter(ports=args.port, pids=args.pid), grace=args.timeout, force=args.force, dry_run=args.dry_run
    )


def main(argv: Optional[List[str]] = None) -> int:
    return run_main(PROG, build_parser, normalize_argv(list(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    sys.exit(main())
