"""The command line: llama-server's flags that matter here, and the fake's own knobs."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, List, Optional, Tuple

from .common import N_CTX_TRAIN
from .log import Log

AUTO_SLOTS = 4  # what `-np -1` (auto) resolves to


@dataclass
class Options:
    model: str = ""
    models_dir: str = ""  # router mode
    host: str = "127.0.0.1"
    port: int = 8080
    ctx_size: int = 4096
    threads: int = -1
    threads_batch: int = -1
    batch_size: int = 2048
    ubatch_size: int = 512
    parallel: int = -1
    n_gpu_layers: int = -1
    flash_attn: str = "auto"
    metrics: bool = False
    slots: bool = True
    webui: bool = True
    api_keys: List[str] = field(default_factory=list)
    alias: str = ""
    log_file: str = ""
    timeout: int = 3600
    # behaviour knobs of the fake
    prompt_tps: float = 2000.0
    token_interval_ms: float = 5.0
    load_delay: float = 0.0
    fail_start: bool = False
    crash_after: Optional[int] = None
    hang_after: Optional[int] = None
    metrics_update: str = "request"
    ignore_sigterm: bool = False
    # --help / --version
    action: str = ""

    @property
    def n_slots(self) -> int:
        return self.parallel if self.parallel > 0 else AUTO_SLOTS

    @property
    def n_ctx(self) -> int:
        return self.ctx_size if self.ctx_size > 0 else N_CTX_TRAIN


@dataclass
class Flag:
    names: Tuple[str, ...]
    dest: str
    kind: str  # "str", "int", "float", "on" (sets True), "off" (sets False), "keys", "fa", "update", "action"
    metavar: str
    help: str


FLAGS = [
    Flag(("-h", "--help", "--usage"), "action", "action", "", "print usage and exit"),
    Flag(("--version",), "action", "action", "", "show version and build info"),
    Flag(("-m", "--model"), "model", "str", "FNAME", "model path to load"),
    Flag(("--models-dir",), "models_dir", "str", "PATH", "router mode: serve every GGUF in PATH, loaded on demand"),
    Flag(("--host",), "host", "str", "HOST", "IP address to listen on (default: 127.0.0.1)"),
    Flag(("--port",), "port", "int", "PORT", "port to listen (default: 8080)"),
    Flag(("-c", "--ctx-size"), "ctx_size", "int", "N", "size of the prompt context (default: 4096, 0 = from model)"),
    Flag(("-t", "--threads"), "threads", "int", "N", "number of CPU threads (default: -1)"),
    Flag(("-tb", "--threads-batch"), "threads_batch", "int", "N", "threads for batch processing"),
    Flag(("-b", "--batch-size"), "batch_size", "int", "N", "logical maximum batch size (default: 2048)"),
    Flag(("-ub", "--ubatch-size"), "ubatch_size", "int", "N", "physical maximum batch size (default: 512)"),
    Flag(("-np", "--parallel"), "parallel", "int", "N", "number of server slots (default: -1, -1 = auto)"),
    Flag(("-ngl", "--gpu-layers", "--n-gpu-layers"), "n_gpu_layers", "int", "N", "layers to store in VRAM"),
    Flag(("-fa", "--flash-attn"), "flash_attn", "fa", "[on|off|auto]", "set Flash Attention use"),
    Flag(("--metrics",), "metrics", "on", "", "enable prometheus compatible metrics endpoint"),
    Flag(("--slots",), "slots", "on", "", "expose slots monitoring endpoint (default: enabled)"),
    Flag(("--no-slots",), "slots", "off", "", "disable the slots monitoring endpoint"),
    Flag(("--webui", "--ui"), "webui", "on", "", "enable the Web UI"),
    Flag(("--no-webui", "--no-ui"), "webui", "off", "", "disable the Web UI"),
    Flag(("--api-key",), "api_keys", "keys", "KEY", "API key(s) for authentication, comma-separated"),
    Flag(("-a", "--alias"), "alias", "str", "STRING", "model name to be used by the API"),
    Flag(("--log-file",), "log_file", "str", "FNAME", "log to file"),
    Flag(("-to", "--timeout"), "timeout", "int", "N", "server read/write timeout in seconds (default: 3600)"),
    Flag(("--prompt-tps",), "prompt_tps", "float", "F", "fake: prompt processing speed, tokens/s (default: 2000)"),
    Flag(("--token-interval-ms",), "token_interval_ms", "float", "F", "fake: ms between tokens (default: 5)"),
    Flag(("--load-delay",), "load_delay", "float", "S", "fake: seconds spent loading the model (default: 0)"),
    Flag(("--fail-start",), "fail_start", "on", "", "fake: fail to load the model and exit 1"),
    Flag(("--crash-after",), "crash_after", "int", "N", "fake: exit 1 midway through completion request N+1"),
    Flag(("--hang-after",), "hang_after", "int", "N", "fake: completion requests after N stall forever"),
    Flag(("--metrics-update",), "metrics_update", "update", "token|request", "fake: when counters move"),
    Flag(("--ignore-sigterm",), "ignore_sigterm", "on", "", "fake: ignore SIGTERM (only SIGKILL stops it)"),
]
FLAG_BY_NAME = {name: flag for flag in FLAGS for name in flag.names}
FA_VALUES = ("on", "off", "auto")


class UsageError(Exception):
    """A bad value for a known flag: llama.cpp prints an error and exits 1."""


def looks_like_flag(arg: str) -> bool:
    if not arg.startswith("-") or arg == "-":
        return False
    try:
        float(arg)
        return False  # a negative number is a value
    except ValueError:
        return True


def convert(flag: Flag, value: str) -> Any:
    if flag.kind == "int":
        return int(value)
    if flag.kind == "float":
        return float(value)
    if flag.kind == "keys":
        return [key for key in value.split(",") if key]
    if flag.kind == "update" and value not in ("token", "request"):
        raise ValueError(f"expected token or request, got '{value}'")
    return value


def parse_args(argv: List[str], log: Log) -> Options:
    """llama-server's flags (the ones that matter here); unknown flags are ignored with a warning.
    Like llama.cpp, LLAMA_ARG_API_KEY in the environment is the default of --api-key."""
    opts = Options()
    opts.api_keys = [key for key in os.environ.get("LLAMA_ARG_API_KEY", "").split(",") if key]
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        name, has_inline, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        flag = FLAG_BY_NAME.get(name)
        if flag is None:
            # Skip the unknown flag's value too, so it is not mistaken for something else.
            skipped = ""
            if looks_like_flag(arg) and not has_inline and i < len(argv) and not looks_like_flag(argv[i]):
                skipped = f" (and its value '{argv[i]}')"
                i += 1
            log.srv("W", "main", f"ignoring unknown argument '{arg}'{skipped} (fake llama-server)")
            continue
        if flag.kind == "action":
            opts.action = opts.action or ("version" if name == "--version" else "help")
        elif flag.kind in ("on", "off"):
            setattr(opts, flag.dest, flag.kind == "on")
        elif flag.kind == "fa":
            # Older builds had a bare `-fa` switch; newer ones take on|off|auto.
            if has_inline:
                opts.flash_attn = inline
            elif i < len(argv) and argv[i] in FA_VALUES:
                opts.flash_attn = argv[i]
                i += 1
            else:
                opts.flash_attn = "on"
        else:
            if not has_inline and i >= len(argv):
                raise UsageError(f'error while handling argument "{name}": expected value for argument')
            value = inline if has_inline else argv[i]
            i += 0 if has_inline else 1
            try:
                setattr(opts, flag.dest, convert(flag, value))
            except ValueError as exc:
                raise UsageError(f'error while handling argument "{name}": {exc}') from None
    return opts


def usage() -> str:
    lines = ["----- fake llama-server -----", ""]
    for flag in FLAGS:
        names = ", ".join(flag.names)
        head = f"{names} {flag.metavar}".rstrip()
        lines.append(f"{head:<40}{flag.help}")
    return "\n".join(lines) + "\n"
