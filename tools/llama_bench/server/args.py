"""Command-line flags shared by every command that starts a llama-server (same names and defaults
in `llama-run` and `llama-bench`), and their translation into a ServerConfig."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, List, Optional

from ..argtypes import (
    api_key_type,
    cache_type,
    host_type,
    json_object,
    non_negative_int,
    on_off_auto,
    port_type,
    positive_float,
    positive_int,
    url_type,
)
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


def add_server_args(parser: argparse.ArgumentParser, fit_check: bool = False) -> None:
    """Flags that describe the llama-server to start (`fit_check`: also --skip-vram-check)."""
    g = parser.add_argument_group("llama-server")
    g.add_argument(
        "--llama-server",
        "--server-bin",
        dest="llama_server",
        metavar="PATH",
        help="llama-server binary (else LLAMA_SERVER_BIN, build/llama.cpp/build/bin/llama-server, PATH)",
    )
    g.add_argument(
        "--model",
        "-m",
        metavar="GGUF",
        help="model file, or a unique name/part of a name found in the model folders (else LLAMA_MODEL)",
    )
    g.add_argument(
        "--model-dir",
        action="append",
        metavar="DIR",
        help="also look for models here (repeatable; LLAMA_MODEL_DIR, ./models and the download caches always)",
    )
    g.add_argument("--models-dir", metavar="DIR", help="router mode: serve every GGUF in DIR, loaded on demand")
    g.add_argument("--model-alias", "-a", metavar="NAME", help="the model name clients see (llama-server --alias)")
    add_endpoint_args(g)
    g.add_argument("--ctx-size", "-c", type=non_negative_int, default=setting_default("LLAMA_CTX_SIZE", None))
    g.add_argument("--threads", "-t", type=positive_int, default=setting_default("LLAMA_THREADS", None))
    g.add_argument(
        "--parallel",
        "-np",
        type=positive_int,
        default=setting_default("LLAMA_PARALLEL", None),
        help="number of slots (server default: auto)",
    )
    g.add_argument("--batch-size", "-b", type=positive_int, default=setting_default("LLAMA_BATCH_SIZE", None))
    g.add_argument("--ubatch-size", "-ub", type=positive_int, default=setting_default("LLAMA_UBATCH_SIZE", None))
    g.add_argument("--n-gpu-layers", "-ngl", type=non_negative_int, default=setting_default("LLAMA_N_GPU_LAYERS", None))
    g.add_argument("--no-gpu", action="store_true", help="force CPU inference (-ngl 0)")
    g.add_argument(
        "--flash-attn",
        "-fa",
        type=on_off_auto,
        metavar="on|off|auto",
        default=setting_default("LLAMA_FLASH_ATTN", None),
    )
    g.add_argument(
        "--threads-batch",
        "-tb",
        type=positive_int,
        default=setting_default("LLAMA_THREADS_BATCH", None),
        help="threads for prompt processing",
    )
    for flag, short, key, which in (
        ("--cache-type-k", "-ctk", "LLAMA_CACHE_TYPE_K", "K"),
        ("--cache-type-v", "-ctv", "LLAMA_CACHE_TYPE_V", "V"),
    ):
        g.add_argument(
            flag,
            short,
            type=cache_type,
            metavar="TYPE",
            default=setting_default(key, None),
            help=f"{which} cache type: f16 (default), q8_0, ...",
        )
    jinja = g.add_mutually_exclusive_group()
    jinja.add_argument("--jinja", dest="jinja", action="store_const", const=True, help="use the model's Jinja template")
    jinja.add_argument("--no-jinja", dest="jinja", action="store_const", const=False, help="do not use Jinja")
    g.add_argument("--chat-template-kwargs", type=json_object, metavar="JSON", help="extra chat template parameters")
    g.add_argument("--fit", choices=["on", "off"], help="let llama-server fit unset -c/-ngl to free memory itself")
    g.add_argument(
        "--metrics-url",
        type=url_type,
        metavar="URL",
        help="read /metrics and /slots from this URL instead of the server",
    )
    g.add_argument(
        "--allow-multi-server", action="store_true", help="start even if another llama-server is already running"
    )
    if fit_check:
        g.add_argument(
            "--skip-vram-check", action="store_true", help="start even when the memory estimate says it does not fit"
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
    router = getattr(args, "models_dir", None)
    model_in_extra = any(a in MODEL_FLAGS for a in extra)
    if router and args.model:
        from ..utils import UserError

        raise UserError("--models-dir (router mode) serves every model in the folder: drop --model")
    # In router mode the router finds its models: LLAMA_MODEL from .env must not be passed as well.
    model = (
        None
        if router
        else resolve_model(
            args.model,
            required=model_required and not model_in_extra,
            model_dirs=getattr(args, "model_dir", None) or [],
        )
    )
    return ServerConfig(
        binary=resolve_binary(args.llama_server),
        model=model,
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
        threads_batch=getattr(args, "threads_batch", None),
        cache_type_k=getattr(args, "cache_type_k", None),
        cache_type_v=getattr(args, "cache_type_v", None),
        model_alias=getattr(args, "model_alias", None),
        jinja=getattr(args, "jinja", None),
        chat_template_kwargs=getattr(args, "chat_template_kwargs", None),
        fit=getattr(args, "fit", None),
        models_dir=_models_dir(router),
        extra_args=extra,
    )


def _models_dir(text: Optional[str]) -> Optional[str]:
    if not text:
        return None
    import os

    from ..utils import UserError

    path = os.path.abspath(os.path.expanduser(text))
    if not os.path.isdir(path):
        raise UserError(f"--models-dir {text}: not a directory")
    return path
