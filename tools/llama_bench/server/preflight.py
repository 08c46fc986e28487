"""Before a server starts: what the model is (GGUF header), whether its context is beyond the trained
one, and whether it fits in free RAM/VRAM with these flags — refused with the numbers and what would
fit, unless `--skip-vram-check` (or llama-server's own `--fit on`, which adjusts unset flags itself)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, List, Optional

from ..utils import UserError
from .config import ServerConfig

if TYPE_CHECKING:  # the gguf reader and the estimate are imported when a server is about to start
    from ..models.gguf import ModelInfo
    from ..models.memory import FitVerdict, MemoryEstimate
    from ..power.reading import GpuStats


@dataclass
class Preflight:
    info: Optional["ModelInfo"] = None
    estimate: Optional["MemoryEstimate"] = None
    verdict: Optional["FitVerdict"] = None
    warnings: List[str] = field(default_factory=list)

    def lines(self) -> List[str]:
        """What the start-up output shows about the model."""
        out = []
        if self.info is not None:
            out.append(f"  model: {self.info.short()}")
        if self.estimate is not None:
            out.append(f"  memory: {self.estimate.describe()}")
        return out + [f"  warning: {w}" for w in self.warnings]


def _has_gpu(cfg: ServerConfig, gpus: List["GpuStats"]) -> bool:
    if cfg.no_gpu or cfg.n_gpu_layers == 0 or not gpus:
        return False
    from ..sysinfo import build_backend

    return build_backend(cfg.binary) not in ("cpu",)  # our build says; an unknown build may use the GPU


def preflight(cfg: ServerConfig, skip_fit_check: bool = False) -> Preflight:
    """Read the model and check the fit; raises UserError (exit 2) when it does not fit."""
    if not cfg.model:
        return Preflight()  # router mode, -hf: llama-server finds the model itself
    import psutil

    from ..models.gguf import read_model_info
    from ..models.memory import check_fit, estimate_memory
    from ..power.gpus import GpuReaders

    info = read_model_info(cfg.model)
    result = Preflight(info=info)
    if cfg.ctx_size and info.context_length and cfg.ctx_size > info.context_length:
        result.warnings.append(
            f"--ctx-size {cfg.ctx_size} is above the model's trained context ({info.context_length}): "
            "expect worse answers past it"
        )
    readers = GpuReaders()
    try:
        gpus = readers.gpus()
    finally:
        readers.close()
    has_gpu = _has_gpu(cfg, gpus)
    result.estimate = estimate_memory(
        info,
        ctx_size=cfg.ctx_size,
        parallel=cfg.parallel,
        n_gpu_layers=0 if cfg.no_gpu else cfg.n_gpu_layers,
        cache_type_k=cfg.cache_type_k or "f16",
        cache_type_v=cfg.cache_type_v or "f16",
        has_gpu=has_gpu,
        n_batch=cfg.batch_size or 2048,
        n_ubatch=cfg.ubatch_size or 512,
        flash_attn=cfg.flash_attn != "off",
    )
    result.verdict = check_fit(result.estimate, int(psutil.virtual_memory().available), gpus if has_gpu else [])
    if not result.verdict.fits:
        if cfg.fit == "on":
            result.warnings.append(f"{result.verdict.message} (llama-server's --fit on adjusts it)")
        elif skip_fit_check:
            result.warnings.append(f"{result.verdict.message} (starting anyway: --skip-vram-check)")
        else:
            raise UserError(result.verdict.message)
    return result


def describe_choice(props: object, log_lines: List[str]) -> Optional[str]:
    """What llama-server chose for itself (its --fit adjusts unset -c/-ngl): from /props and its log."""
    import re

    parts = []
    if isinstance(props, dict):
        settings = props.get("default_generation_settings")
        n_ctx = settings.get("n_ctx") if isinstance(settings, dict) else None
        slots = props.get("total_slots")
        if isinstance(n_ctx, int) and n_ctx > 0:
            parts.append(f"ctx {n_ctx} per slot" + (f" x {slots} slots" if isinstance(slots, int) else ""))
    for line in log_lines:
        match = re.search(r"offloaded (\d+)/(\d+) layers to GPU", line)
        if match:
            parts.append(f"{match.group(1)}/{match.group(2)} layers on the GPU")
    return ", ".join(parts) or None
