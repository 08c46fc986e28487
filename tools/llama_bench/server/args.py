"""Command-line flags shared by every command that starts a llama-server (same names and defaults
in `llama-run` and `llama-bench`), and their translation into a ServerConfig."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, List, Optional

from ..argtypes import api_key_type, host_type, non_negative_int, port_type, positive_float, positive_int
from ..settings import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_STARTUP_TIMEOUT, setting_default

if TYPE_CHECKING:  # imported when a command runs: `--help` only needs argparse
    from .config import LaunchOptions, ServerConfig

MODEL_FLAGS = ("-m", "--model", "-hf", "--hf-repo", "-mu", "--model-url")


def add_endpoint_args(parser: argparse._ActionsContainer) -> None:
    """--host/--port/--api-key: where a server listens (ours or an existing one)."""
    # Defaults from the environment / .env are validated by the flag's own type (bad ones named).
    parser.add_argument(
        "--host", type=host_type, default=setting_default("LLAMA_HOST", DEFAULT_HOST), help="bind/connect address"
    )
    parser.add_argument(
        "--port", type=port_type, default=setting_default("LLAMA_PORT", DEFAULT_PORT), help=f"port ({DEFAULT_PORT})"
    )
    parser.add_argument(
        "--api-key",
        type=api_key_type,
        default=setting_default("LLAMA_API_KEY", None),
        help="API key the server requires (also LLAMA_API_KEY)",
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
    add_endpoint_args(g)
    g.add_argument("--ctx-size", "-c", type=non_negative_int, default=setting_default("LLAMA_CTX_SIZE", None))
    g.add_argument("--threads", "-t", type=positive_int, default=setting_default("LLAMA_THREADS", None))
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


def launch_from_args(args: argparse.Namespace) -> "LaunchOptions":
    from .config import LaunchOptions

    return LaunchOptions(allow_multi_server=args.allow_multi_server, startup_timeout=args.startup_timeout)


def config_from_args(
    args: argparse.Namespace, extra: Optional[List[str]] = None, model_required: bool = True
) -> "ServerConfig":
    """Resolve binary and model and build a ServerConfig (raises UserError with a clear message)."""
    from .config import ServerConfig
    from .locate import resolve_binary, resolve_model

    extra = list(extra or [])
    model_in_extra = any(a in MODEL_FLAGS for a in extra)
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
        api_key=args.api_key or None,
        extra_args=extra,
    )
