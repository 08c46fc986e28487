"""Arguments of `llama-run proxy` and `llama-run usage` (also `python -m tools.llama_run.proxy`), and their
translation into typed parameters (ProxyConfig, UsageParams) for the command code.

Only argparse here: the proxy (aiohttp, prometheus_client) is imported when the command runs, so that
`llama-run --help` stays fast.
"""

from __future__ import annotations

import argparse
import os
import re
from typing import TYPE_CHECKING, Any, Optional

from tools.llama_bench.argtypes import port_type, positive_float, positive_int
from tools.llama_bench.settings import DEFAULT_HOST, DEFAULT_PORT, setting
from tools.llama_bench.utils import UserError, user_path

from .defaults import (
    DEFAULT_CLIENT_TIMEOUT,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_BODY,
    DEFAULT_PROXY_PORT,
    DEFAULT_READ_TIMEOUT,
    DEFAULT_RECENT,
    DEFAULT_RETENTION_DAYS,
    INJECT_MODES,
)

if TYPE_CHECKING:
    from .config import ProxyConfig

# Keys come from the environment when not given as flags (ManagedProxy passes them that way: `ps` shows
# command lines, never environments).
API_KEY_ENV = "LLAMA_PROXY_API_KEY"
UPSTREAM_KEY_ENV = "LLAMA_PROXY_UPSTREAM_API_KEY"
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?)(?:i?b)?\s*$", re.IGNORECASE | re.ASCII)
_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE | re.ASCII)
_SPAN_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
MAX_SPAN_S = 50 * 365.25 * 86400.0


def byte_size(text: str) -> int:
    """'32M', '512k', '1G', '1048576' (binary units) -> bytes."""
    m = _SIZE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"invalid size '{text}': expected bytes, or a number with k, M or G")
    value = float(m.group(1)) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[m.group(2).lower()]
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid size '{text}': must be at least 1 byte")
    return int(value)


def time_span(text: str) -> Optional[float]:
    """'24h', '7d', '30m', '90s', '2w' -> seconds; 'all' -> None (no limit)."""
    if text.strip().lower() == "all":
        return None
    m = _SPAN.match(text)
    if not m or float(m.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"invalid period '{text}': expected e.g. 90s, 30m, 24h, 7d, 2w or all")
    seconds = float(m.group(1)) * _SPAN_UNITS[m.group(2).lower()]
    if seconds > MAX_SPAN_S:  # before 1970 as a start: 'all' says it
        raise argparse.ArgumentTypeError(f"invalid period '{text}': at most 50 years (or all)")
    return seconds


def add_proxy_args(p: argparse.ArgumentParser) -> None:
    host = setting("LLAMA_HOST") or DEFAULT_HOST
    port = setting("LLAMA_PORT") or DEFAULT_PORT
    g = p.add_argument_group("proxy")
    g.add_argument(
        "--upstream",
        default=f"http://{host}:{port}",
        metavar="URL",
        help="the server to forward to, llama-server or any OpenAI-compatible one (default %(default)s)",
    )
    g.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1; others print a warning)")
    g.add_argument("--port", type=port_type, default=DEFAULT_PROXY_PORT, help=f"port ({DEFAULT_PROXY_PORT})")
    g.add_argument("--api-key", help=f"key clients must send to the proxy (default: ${API_KEY_ENV}, else none)")
    g.add_argument(
        "--upstream-api-key",
        metavar="KEY",
        help=f"key sent upstream instead of the client's (default: ${UPSTREAM_KEY_ENV}, else the client's own)",
    )
    g.add_argument("--clients", metavar="FILE", help="TOML or JSON file: client names by API key, per-client limits")
    g.add_argument("--db", metavar="PATH", help="usage history (default: proxy/usage.sqlite3 in the state directory)")
    g.add_argument("--no-history", action="store_true", help="keep no usage history")
    g.add_argument(
        "--retention-days",
        type=positive_float,
        default=DEFAULT_RETENTION_DAYS,
        help=f"delete history older than this ({DEFAULT_RETENTION_DAYS:g})",
    )
    g.add_argument(
        "--max-body", type=byte_size, default=DEFAULT_MAX_BODY, help="largest request body, e.g. 32M (32 MiB)"
    )
    g.add_argument(
        "--inject-usage",
        choices=INJECT_MODES,
        default="auto",
        help="add stream_options.include_usage to streaming OpenAI requests and strip the extra chunk: "
        "auto = only for upstreams other than llama.cpp (default auto)",
    )
    g.add_argument(
        "--connect-timeout",
        type=positive_float,
        default=DEFAULT_CONNECT_TIMEOUT,
        help=f"s ({DEFAULT_CONNECT_TIMEOUT:g})",
    )
    g.add_argument(
        "--read-timeout",
        type=positive_float,
        default=DEFAULT_READ_TIMEOUT,
        help=f"s without a byte from the upstream, e.g. during a long prefill ({DEFAULT_READ_TIMEOUT:g})",
    )
    g.add_argument(
        "--client-timeout",
        type=positive_float,
        default=DEFAULT_CLIENT_TIMEOUT,
        help=f"s for a client's request head and body, and for a client that stops reading "
        f"({DEFAULT_CLIENT_TIMEOUT:g})",
    )
    g.add_argument(
        "--recent",
        type=positive_int,
        default=DEFAULT_RECENT,
        help=f"finished requests kept for /proxy/requests ({DEFAULT_RECENT})",
    )
    g.add_argument("--quiet", action="store_true", help="no [req] line per finished request")
    g.add_argument("--parent-pid", type=positive_int, help=argparse.SUPPRESS)  # set by ManagedProxy


def config_from_args(args: argparse.Namespace) -> "ProxyConfig":
    from tools.llama_bench.endpoint import check_api_key, normalize_endpoint

    from .config import InjectMode, ProxyConfig

    if getattr(args, "extra_server_args", None):
        raise UserError("extra llama-server flags after -- only apply to `run` and `doctor`")
    if args.db and args.no_history:
        raise UserError("--db and --no-history contradict each other")
    clients = user_path(args.clients) if args.clients else None
    if clients is not None:
        from .identity import check_clients

        check_clients(clients)
    return ProxyConfig(
        upstream=normalize_endpoint(args.upstream, "--upstream"),
        host=args.host,
        port=args.port,
        api_key=check_api_key(args.api_key or os.environ.get(API_KEY_ENV), "--api-key"),
        upstream_api_key=check_api_key(args.upstream_api_key or os.environ.get(UPSTREAM_KEY_ENV), "--upstream-api-key"),
        clients_file=clients,
        db_path=user_path(args.db) if args.db else None,
        history=not args.no_history,
        retention_days=args.retention_days,
        max_body=args.max_body,
        inject_usage=InjectMode(args.inject_usage),
        connect_timeout=args.connect_timeout,
        read_timeout=args.read_timeout,
        client_timeout=args.client_timeout,
        recent=args.recent,
        log_requests=not args.quiet,
        parent_pid=args.parent_pid,
    )


def add_usage_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--since", type=time_span, default=86400.0, metavar="SPAN", help="period: 90s, 30m, 24h, 7d, 2w, all (24h)"
    )
    p.add_argument("--by", choices=("client", "model", "day"), default="client", help="group by (client)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--db", metavar="PATH", help="usage history (default: the proxy's, in the state directory)")


def proxy_command(args: argparse.Namespace) -> int:
    from .app import serve

    return serve(config_from_args(args))


def usage_command(args: argparse.Namespace) -> int:
    from .usage import GroupBy, UsageParams, run_usage

    if getattr(args, "extra_server_args", None):
        raise UserError("extra llama-server flags after -- only apply to `run` and `doctor`")
    params = UsageParams(
        since_s=args.since,
        by=GroupBy(args.by),
        as_json=args.json,
        db_path=user_path(args.db) if args.db else None,
    )
    return run_usage(params)


def register(subparsers: Any) -> None:
    """Add `proxy` and `usage` to llama-run's subparsers."""
    p = subparsers.add_parser(
        "proxy",
        help="run the token-meter proxy in front of a running server",
        description="A transparent proxy that meters tokens per client: /proxy/requests, /proxy/metrics, "
        "a usage history, per-client limits.",
    )
    add_proxy_args(p)
    p.set_defaults(handler=proxy_command)
    u = subparsers.add_parser("usage", help="token usage from the proxy's history, by client, model or day")
    add_usage_args(u)
    u.set_defaults(handler=usage_command)
