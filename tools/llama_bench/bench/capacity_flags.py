"""The capacity-search flags (one definition for `llama-bench capacity` and `bench --capacity`) and their
translation into CapacityParams. Only argparse here: the search itself is imported when it runs."""

from __future__ import annotations

import argparse
import functools
from typing import TYPE_CHECKING, Optional

from ..argtypes import positive_float, positive_int
from ..utils import UserError

if TYPE_CHECKING:
    from .capacity import CapacityParams
    from .cmd import Command
    from .plan import BenchParams

# Flags whose values the search chooses; with --capacity they would be ignored, so they are refused.
_SEARCH_OWNS = (
    ("concurrency", "--concurrency"),
    ("request_rate", "--request-rate"),
    ("num_requests", "--num-requests"),
)


def add_capacity_args(p: argparse.ArgumentParser, on_bench: bool) -> None:
    g = p.add_argument_group("capacity search" + (" (with --capacity)" if on_bench else ""))
    if on_bench:
        g.add_argument(
            "--capacity",
            action="store_true",
            help="search the capacity under --slo instead of running the cells (as `llama-bench capacity`)",
        )
    g.add_argument("--by", choices=("rate", "concurrency"), default=None, help="what to search (default rate)")
    g.add_argument("--max-rate", type=positive_float, metavar="R", help="highest request rate to try (req/s)")
    g.add_argument(
        "--max-concurrency", type=positive_int, metavar="N", help="highest concurrency to try (default 64 x slots)"
    )
    g.add_argument(
        "--requests-per-step",
        type=positive_int,
        metavar="N",
        help="requests per step (default: 10 beyond the SLO's highest percentile, e.g. 100 for p90, at least 30; "
        "a rate step also lasts long enough for an overload of --precision to show, 5 to 120 s)",
    )
    g.add_argument(
        "--precision",
        type=positive_float,
        default=None,
        metavar="F",
        help="stop when the bracket is this narrow: upper <= lower x (1 + F) (default 0.1)",
    )


def capacity_params_from_args(args: argparse.Namespace) -> "CapacityParams":
    from .capacity import CapacityParams, SearchBy

    return CapacityParams(
        by=SearchBy(args.by or "rate"),
        max_rate=args.max_rate,
        max_concurrency=args.max_concurrency,
        requests_per_step=args.requests_per_step,
        precision=0.1 if args.precision is None else args.precision,
    )


def capacity_command(args: argparse.Namespace, params: "BenchParams") -> Optional["Command"]:
    """The command that runs the search when --capacity is given (None: the ordinary benchmark); every
    capacity flag without --capacity, and every flag the search owns with it, is one line."""
    given = [f for f, v in (("--by", args.by), ("--max-rate", args.max_rate), ("--precision", args.precision),
                            ("--max-concurrency", args.max_concurrency),
                            ("--requests-per-step", args.requests_per_step)) if v is not None]  # fmt: skip
    if not getattr(args, "capacity", False):
        if given:
            raise UserError(f"{given[0]} needs --capacity (or use `llama-bench capacity`)")
        return None
    for dest, flag in _SEARCH_OWNS:
        if getattr(args, dest, None) is not None:
            raise UserError(f"{flag} does not apply to a capacity search (the search chooses it)")
    cap = capacity_params_from_args(args)
    if cap.by.value == "rate" and cap.max_concurrency is not None:
        raise UserError("--max-concurrency needs --by concurrency (--max-rate bounds a rate search)")
    if cap.by.value == "concurrency" and cap.max_rate is not None:
        raise UserError("--max-rate needs --by rate (--max-concurrency bounds a concurrency search)")
    from .capacity import check_params
    from .capacity_cmd import capacity

    check_params(params, cap)
    return functools.partial(capacity, cap=cap)
