"""`llama-bench capacity`: its parser (the run flags of args.py and the capacity flags of
capacity_flags.py) and its handler. Only argparse here: the search itself is imported when it runs."""

from __future__ import annotations

import argparse
from typing import Any

from ..argtypes import api_key_type
from ..settings import DEFAULT_HOST, DEFAULT_PORT, setting
from .args import SIZES_HELP, add_run_args, outputs_from_args, params_from_args
from .capacity_flags import add_capacity_args, capacity_command

CAPACITY_HELP = (
    "Finds the highest Poisson request rate (--by rate) or concurrency (--by concurrency) at which --slo holds: "
    "calibrates from the service time of single requests and the server's slots, brackets, bisects to "
    "--precision, re-checks the boundary, and stops a step early once it cannot pass. Prints and stores the "
    "curve (rate -> TTFT/TPOT percentiles, throughput, goodput) and the capacity with its uncertainty."
)


def register(subparsers: Any) -> None:
    """Add `capacity` to llama-bench's subparsers."""
    c = subparsers.add_parser(
        "capacity",
        help="find the highest request rate (or concurrency) at which an SLO holds",
        description=CAPACITY_HELP,
        epilog=SIZES_HELP,
    )
    host = setting("LLAMA_HOST") or DEFAULT_HOST
    port = setting("LLAMA_PORT") or DEFAULT_PORT
    c.add_argument("--endpoint", default=f"http://{host}:{port}", help="server URL (default %(default)s)")
    c.add_argument("--api-key", type=api_key_type, help="API key (default: LLAMA_API_KEY, else OPENAI_API_KEY)")
    add_run_args(c, capacity=True)
    add_capacity_args(c, on_bench=False)
    c.set_defaults(handler=_capacity, capacity=True, capacity_run=True)


def _capacity(args: argparse.Namespace) -> int:
    from ..endpoint import client_api_key, normalize_endpoint

    params = params_from_args(args, normalize_endpoint(args.endpoint), client_api_key(args.api_key))
    command = capacity_command(args, params)
    assert command is not None
    outputs = outputs_from_args(args)
    return command(params, outputs)
