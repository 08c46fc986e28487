"""Command-line flags shared by every command that starts a llama-server (same names and defaults
in `llama-run` and `llama-bench`), and their translation into a ServerConfig."""

from __future__ import annotations

import argparse
from typing import Any, List, Optional

from .settings import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_STARTUP_TIMEOUT, int_setting, setting


def port_type(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port '{text}': expected a number from 1 to 65535") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {value}: expected a number from 1 to 65535")
    return value


def _number(text: str, cast: type, minimum: float, strict: bool) -> Any:
    """Parse `text` with `cast` and require > minimum (strict) or >= minimum; argparse shows the message."""
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


def add_endpoint_args(parser: argparse.ArgumentParser) -> None:
    """--host/--port/--api-key: where a server listens (ours or an existing one)."""
    parser.add_argument("--host", default=setting("LLAMA_HOST") or DEFAULT_HOST, help="bind/connect address")
    parser.add_argument(
        "--port", type=port_type, default=int_setting("LLAMA_PORT", DEFAULT_PORT), help=f"port ({DEFAULT_PORT})"
    )
    parser.add_argument(
        "--api-key", default=setting("LLAMA_API_KEY"), help="API key the server requires (also LLAMA_API_KEY)"
    )


def add_server_args(parser: argparse.ArgumentParser) -> None:
    """Flags that describe the llama-server to start."""
    g = parser.add_argument_group("llama-server")
    g.add_argument(
        "--llama-server",
        "--server-bin",
        dest="llama_server",
        metavar="PATH",
        help="llama-server binary (else LLAMA_SERVER_BIN, build/llama.cpp/build/bin/llama-server, PATH)",
    )
    g.add_argument("--model", "-m", metavar="GGUF", help="model file (else LLAMA_MODEL from the environment or .env)")
    add_endpoint_args(g)  # type: ignore[arg-type]
    g.add_argument("--ctx-size", "-c", type=non_negative_int, default=int_setting("LLAMA_CTX_SIZE", None))
    g.add_argument("--threads", "-t", type=positive_int, default=int_setting("LLAMA_THREADS", None))
    g.add_argument("--parallel", "-np", type=positive_int, help="number of slots (server default: auto)")
    g.add_argument("--batch-size", "-b", type=positive_int)
    g.add_argument("--ubatch-size", "-ub", type=positive_int)
    g.add_argument("--n-gpu-layers", "-ngl", type=non_negative_int)
    g.add_argument("--no-gpu", action="store_true", help="force CPU inference (-ngl 0)")
    g.add_argument("--flash-attn", "-fa", choices=["on", "off", "auto"])
    g.add_argument(
        "--allow-multi-server", action="store_true", help="start even if another llama-server is already running"
    )
    g.add_argument(
        "--startup-timeout",
        type=positive_float,
        default=DEFAULT_STARTUP_TIMEOUT,
        help=f"seconds to wait for the model to load (default {DEFAULT_STARTUP_TIMEOUT:g})",
    )


def split_extra_args(argv: List[str]) -> "tuple[List[str], List[str]]":
    """Split `... -- extra llama-server flags` into (our args, extra args)."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, []


def config_from_args(args: argparse.Namespace, extra: Optional[List[str]] = None, model_required: bool = True):
    """Resolve binary and model and build a ServerConfig (raises UserError with a clear message)."""
    from .server import ServerConfig, resolve_binary, resolve_model

    extra = list(extra or [])
    model_in_extra = any(a in ("-m", "--model", "-hf", "--hf-repo", "-mu", "--model-url") for a in extra)
    return ServerConfig(
        binary=resolve_binary(args.llama_server),
        model=resolve_model(args.model, required=model_required and not model_in_extra),
        host=args.host,
        port=args.port,
        ctx_size=args.ctx_size,
        threads=args.threads,
        parallel=args.parallel,
        batch_size=args.batch_size,
        ubatch_size=args.ubatch_size,
        n_gpu_layers=args.n_gpu_layers,
        no_gpu=args.no_gpu,
        flash_attn=args.flash_attn,
        api_key=args.api_key,
        extra_args=extra,
    )
