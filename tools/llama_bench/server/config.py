"""What a llama-server we start is: its binary, model and flags, and the command line they make."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from ..endpoint import server_api_key, url_for
from ..settings import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_STARTUP_TIMEOUT


@dataclass
class ServerConfig:
    binary: str
    model: Optional[str] = None
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    ctx_size: Optional[int] = None
    threads: Optional[int] = None
    parallel: Optional[int] = None
    batch_size: Optional[int] = None
    ubatch_size: Optional[int] = None
    n_gpu_layers: Optional[int] = None
    no_gpu: bool = False
    flash_attn: Optional[str] = None
    api_key: Optional[str] = None
    threads_batch: Optional[int] = None
    cache_type_k: Optional[str] = None  # f16 (llama-server's default), q8_0, q4_0, ...
    cache_type_v: Optional[str] = None
    model_alias: Optional[str] = None  # the name clients see (--alias)
    jinja: Optional[bool] = None  # None: llama-server's default
    chat_template_kwargs: Optional[str] = None  # a JSON object
    fit: Optional[str] = None  # llama-server's own --fit on|off
    models_dir: Optional[str] = None  # router mode: several models, loaded on demand
    extra_args: List[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return url_for(self.host, self.port)

    @property
    def client_api_key(self) -> Optional[str]:
        """The key this server will require (also one given as a raw flag after `--` or LLAMA_ARG_API_KEY)."""
        return server_api_key(self.api_key, self.extra_args)


@dataclass
class LaunchOptions:
    """How to start a server, beyond its own flags."""

    allow_multi_server: bool = False
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT


def build_command(cfg: ServerConfig) -> List[str]:
    cmd = [cfg.binary, "--host", cfg.host, "--port", str(cfg.port), "--metrics"]
    if cfg.model:
        cmd += ["-m", cfg.model]
    if cfg.models_dir:
        cmd += ["--models-dir", cfg.models_dir]
    options = [
        ("-c", cfg.ctx_size),
        ("-t", cfg.threads),
        ("-tb", cfg.threads_batch),
        ("-np", cfg.parallel),
        ("-b", cfg.batch_size),
        ("-ub", cfg.ubatch_size),
        ("-ngl", 0 if cfg.no_gpu else cfg.n_gpu_layers),
        ("-fa", cfg.flash_attn),
        ("-ctk", cfg.cache_type_k),
        ("-ctv", cfg.cache_type_v),
        ("--alias", cfg.model_alias),
        ("--chat-template-kwargs", cfg.chat_template_kwargs),
        ("--fit", cfg.fit),
        ("--api-key", cfg.api_key),
    ]
    for flag, value in options:
        if value is not None:
            cmd += [flag, str(value)]
    if cfg.jinja is not None:
        cmd.append("--jinja" if cfg.jinja else "--no-jinja")
    return cmd + list(cfg.extra_args)
