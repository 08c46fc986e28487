"""What the tuner can know before launching anything: this machine's cores, memory and GPUs, and which
flags the llama-server binary has (its `--help`, run once per binary and cached)."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Set

from ..utils import UserError

HELP_TIMEOUT = 30.0
_FLAG = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")
_help_cache: Dict[str, str] = {}


@dataclass
class GpuInfo:
    index: int
    name: str
    mem_total_bytes: Optional[int]
    mem_used_bytes: Optional[int]


@dataclass
class Machine:
    physical_cores: int
    logical_cores: int
    ram_available_bytes: Optional[int]
    gpus: List[GpuInfo] = field(default_factory=list)

    @property
    def has_gpu(self) -> bool:
        return bool(self.gpus)


def detect_machine(gpu: bool = True) -> Machine:
    """Cores and available RAM (psutil) and the GPUs the energy readers see (NVML, amdsmi)."""
    import psutil

    logical = psutil.cpu_count(logical=True) or os.cpu_count() or 1
    physical = psutil.cpu_count(logical=False) or logical
    gpus: List[GpuInfo] = []
    if gpu:
        from ..power.meter import EnergyMeter

        meter = EnergyMeter(cpu=False)
        try:
            gpus = [GpuInfo(g.index, g.name, g.mem_total_bytes, g.mem_used_bytes) for g in meter.gpus()]
        finally:
            meter.close()
    return Machine(physical, logical, psutil.virtual_memory().available, gpus)


def _cache_key(binary: str) -> str:
    real = os.path.realpath(binary)
    try:
        st = os.stat(real)
        stamp = f"{real}|{st.st_size}|{st.st_mtime_ns}"
    except OSError:
        stamp = real
    return hashlib.sha256(stamp.encode("utf-8")).hexdigest()[:20]


def server_help(binary: str) -> str:
    """`llama-server --help`, cached per binary (path, size and modification time) in the state
    directory, so a rerun or a second tune asks the binary only once."""
    from ..settings import state_subdir

    key = _cache_key(binary)
    if key in _help_cache:
        return _help_cache[key]
    try:
        cache_file: Optional[str] = str(state_subdir("tune") / f"help-{key}.txt")
    except UserError:
        cache_file = None  # no state directory: ask the binary every time
    if cache_file:
        try:
            with open(cache_file, "r", encoding="utf-8") as fh:
                text = fh.read()
            if text:
                _help_cache[key] = text
                return text
        except OSError:
            pass
    try:
        out = subprocess.run(
            [binary, "--help"],
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=HELP_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise UserError(f"{binary} --help did not answer within {HELP_TIMEOUT:g} s") from None
    except OSError as exc:
        raise UserError(f"cannot run {binary} --help: {(exc.strerror or str(exc)).lower()}") from None
    text = out.stdout + out.stderr
    if not supported_flags(text):
        raise UserError(f"{binary} --help lists no flags (exit code {out.returncode}); is it a llama-server?")
    _help_cache[key] = text
    if cache_file:
        _write_cache(cache_file, text)
    return text


def _write_cache(path: str, text: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def supported_flags(help_text: str) -> Set[str]:
    """Every flag named at the start of a `--help` entry ('-t,    --threads N' -> {'-t', '--threads'})."""
    flags: Set[str] = set()
    for line in help_text.splitlines():
        head = line.strip()
        if not head.startswith("-"):
            continue
        # The names come before the description, each group separated by two or more spaces.
        for part in re.split(r"\s{2,}", head):
            if not part.startswith("-"):
                break
            flags.update(_FLAG.findall(part))
    return flags
