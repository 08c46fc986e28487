"""Value parsers shared by every flag of both CLIs (argparse shows their message on one line)."""

from __future__ import annotations

import argparse
from typing import Any, List, Tuple


def port_type(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port '{text}': expected a number from 1 to 65535") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {value}: expected a number from 1 to 65535")
    return value


def _number(text: str, cast: type, minimum: float, strict: bool) -> Any:
    """Parse `text` with `cast` and require > minimum (strict) or >= minimum."""
    bound = f"{'>' if strict else '>='} {minimum:g}"
    kind = "a whole number" if cast is int else "a number"
    try:
        value = cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value '{text}': expected {kind} {bound}") from None
    if not (value > minimum if strict else value >= minimum) or value == float("inf"):
        raise argparse.ArgumentTypeError(f"invalid value {text}: expected {kind} {bound}")
    return value


def positive_int(text: str) -> int:
    return int(_number(text, int, 1, strict=False))


def non_negative_int(text: str) -> int:
    return int(_number(text, int, 0, strict=False))


def positive_float(text: str) -> float:
    return float(_number(text, float, 0, strict=True))


def non_negative_float(text: str) -> float:
    return float(_number(text, float, 0, strict=False))


def any_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value '{text}': expected a whole number") from None


def split_extra_args(argv: List[str]) -> Tuple[List[str], List[str]]:
    """Split `... -- extra llama-server flags` into (our args, extra args)."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, []
