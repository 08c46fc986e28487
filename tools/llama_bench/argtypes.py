"""Value parsers shared by every flag of both CLIs (argparse shows their message on one line).

A default taken from the environment or `.env` (settings.SettingValue) goes through the same parser
as the flag, and an error then names where the bad value came from (`LLAMA_PORT in /repo/.env: ...`).
"""

from __future__ import annotations

import argparse
import functools
from typing import Any, Callable, List, Tuple, TypeVar

T = TypeVar("T")

# Beyond any endpoint's context: a size above this is a typo, refused before anything is allocated.
MAX_PROMPT_TOKENS = 2_000_000
MAX_CONCURRENCY = 10_000


def _origin_named(parse: Callable[[str], T]) -> Callable[[str], T]:
    @functools.wraps(parse)
    def wrapper(text: str) -> T:
        try:
            return parse(text)
        except argparse.ArgumentTypeError as exc:
            origin = getattr(text, "origin", None)
            raise argparse.ArgumentTypeError(f"{origin}: {exc}" if origin else str(exc)) from None

    return wrapper


@_origin_named
def port_type(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port '{text}': expected a number from 1 to 65535") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {value}: expected a number from 1 to 65535")
    return value


# No flag means more than this; far larger values only overflow something later (a deque, a timestamp).
MAX_NUMBER = 1e12


def _number(text: str, cast: type, minimum: float, strict: bool) -> Any:
    """Parse `text` with `cast` and require > minimum (strict) or >= minimum, and at most MAX_NUMBER."""
    bound = f"{'>' if strict else '>='} {minimum:g}"
    kind = "a whole number" if cast is int else "a number"
    try:
        value = cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value '{text}': expected {kind} {bound}") from None
    if not (value > minimum if strict else value >= minimum):  # NaN fails this too
        raise argparse.ArgumentTypeError(f"invalid value {text}: expected {kind} {bound}")
    if value > MAX_NUMBER:
        raise argparse.ArgumentTypeError(f"invalid value {text}: expected {kind} {bound} and at most {MAX_NUMBER:g}")
    return value


@_origin_named
def positive_int(text: str) -> int:
    return int(_number(text, int, 1, strict=False))


@_origin_named
def non_negative_int(text: str) -> int:
    return int(_number(text, int, 0, strict=False))


@_origin_named
def positive_float(text: str) -> float:
    return float(_number(text, float, 0, strict=True))


@_origin_named
def non_negative_float(text: str) -> float:
    return float(_number(text, float, 0, strict=False))


@_origin_named
def any_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value '{text}': expected a whole number") from None


@_origin_named
def host_type(text: str) -> str:
    """A host name or address to bind or connect to (IPv6 with or without brackets)."""
    host = text.strip()
    if not host or any(c.isspace() for c in host) or any(c in host for c in "/?#@"):
        raise argparse.ArgumentTypeError(f"invalid host '{text}': expected a name or an address such as 127.0.0.1")
    return host


@_origin_named
def api_key_type(text: str) -> str:
    from .endpoint import check_api_key
    from .utils import UserError

    try:
        return check_api_key(text) or ""
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("--api-key ", "the key ")) from None


@_origin_named
def token_counts(text: str) -> List[int]:
    """'100,200' or '1k,1.5k,4096' (k = 1000) -> token counts."""
    from .utils import parse_token_count

    parts = [p.strip() for p in (text or "").split(",")]
    if not any(parts):
        raise argparse.ArgumentTypeError("empty: give token counts such as 100,200 or 1k,10k")
    sizes = []
    for part in parts:
        if not part:
            raise argparse.ArgumentTypeError(f"'{text}' has an empty entry")
        try:
            size = parse_token_count(part)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        if size > MAX_PROMPT_TOKENS:
            raise argparse.ArgumentTypeError(f"{size} tokens is more than any endpoint takes (max {MAX_PROMPT_TOKENS})")
        sizes.append(size)
    return sizes


@_origin_named
def concurrency_list(text: str) -> List[int]:
    """'1,4,16' -> concurrency levels."""
    parts = [p.strip() for p in (text or "").split(",")]
    if not any(parts):
        raise argparse.ArgumentTypeError("empty: give numbers such as 1,4,16")
    out = []
    for part in parts:
        try:
            value = int(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{part}' is not a whole number (example: 1,4,16)") from None
        if not 1 <= value <= MAX_CONCURRENCY:
            raise argparse.ArgumentTypeError(f"{value} is not allowed: concurrency must be 1 to {MAX_CONCURRENCY}")
        out.append(value)
    return out


@_origin_named
def on_off_auto(text: str) -> str:
    value = text.strip().lower()
    if value not in ("on", "off", "auto"):
        raise argparse.ArgumentTypeError(f"invalid value '{text}': expected on, off or auto")
    return value


@_origin_named
def cache_type(text: str) -> str:
    """A KV-cache type llama-server accepts (-ctk/-ctv)."""
    from .models.memory import CACHE_TYPES as types

    value = text.strip().lower()
    if value not in types:
        raise argparse.ArgumentTypeError(f"invalid cache type '{text}': expected one of {', '.join(types)}")
    return value


@_origin_named
def json_object(text: str) -> str:
    """A JSON object, passed on as its (validated) text."""
    import json

    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object such as '{\"enable_thinking\": false}'")
    return text


@_origin_named
def url_type(text: str) -> str:
    """An http(s) base URL (endpoint.normalize_endpoint's rules)."""
    from .endpoint import normalize_endpoint
    from .utils import UserError

    try:
        return normalize_endpoint(text, flag="the URL")
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def split_extra_args(argv: List[str]) -> Tuple[List[str], List[str]]:
    """Split `... -- extra llama-server flags` into (our args, extra args)."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, []
