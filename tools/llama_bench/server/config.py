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
    options = [
        ("-c", cfg.ctx_size),
        ("-t", cfg.threads),
        ("-np", cfg.parallel),
        ("-b", cfg.batch_size),
        ("-ub", cfg.ubatch_size),
        ("-ngl", 0 if cfg.no_gpu else cfg.n_gpu_layers),
        ("-fa", cfg.flash_attn),
        ("--api-key", cfg.api_key),
    ]
    for flag, value in options:
        if value is not None:
            cmd += [flag, str(value)]
    return cmd + list(cfg.extra_args)
