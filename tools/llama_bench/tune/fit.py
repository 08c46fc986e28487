"""Pruning before launch by memory: llama-server's memory for a candidate, estimated from the GGUF
header (models/gguf.py, models/memory.py), against free RAM and GPU memory and `--max-rss` /
`--max-vram`. A model whose header cannot be read is not pruned by memory (the reason is noted once)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ..utils import UserError, fmt_bytes
from .machine import GpuInfo
from .space import SERVER_DEFAULT_BATCH, SERVER_DEFAULT_UBATCH, Candidate, Value, merged


@dataclass
class MemoryLimits:
    max_rss: Optional[int] = None  # bytes of host RAM a candidate may use
    max_vram: Optional[int] = None  # bytes of GPU memory a candidate may use
    free_ram: Optional[int] = None
    gpus: List[GpuInfo] = field(default_factory=list)


class FitChecker:
    """Says why a candidate will not fit, before it is launched."""

    def __init__(self, model: Optional[str], ctx_size: int, has_gpu: bool, limits: MemoryLimits) -> None:
        self.ctx_size = ctx_size
        self.has_gpu = has_gpu
        self.limits = limits
        self.info: Any = None
        self.unavailable: Optional[str] = None
        if model is None:
            self.unavailable = "no model file"
            return
        try:
            from ..models.gguf import read_model_info

            self.info = read_model_info(model)
        except UserError as exc:
            self.unavailable = str(exc)
        except ImportError as exc:  # the gguf package is missing: no estimate, no pruning
            self.unavailable = f"cannot read the model header ({exc})"

    @property
    def n_layers(self) -> Optional[int]:
        return getattr(self.info, "block_count", None) if self.info is not None else None

    def estimate(self, candidate: Candidate, fixed: Dict[str, Value]) -> Any:
        from ..models.memory import estimate_memory

        c = merged(candidate, fixed)
        slots = c.get("parallel")
        per_slot = isinstance(slots, int) and slots > 0
        return estimate_memory(
            self.info,
            ctx_size=self.ctx_size * int(slots) if per_slot and slots else self.ctx_size,
            parallel=int(slots) if per_slot and slots else None,
            n_gpu_layers=int(c["n_gpu_layers"]) if isinstance(c.get("n_gpu_layers"), int) else None,
            cache_type_k=str(c.get("cache_type", "f16")),
            cache_type_v=str(c.get("cache_type", "f16")),
            has_gpu=self.has_gpu,
            n_batch=int(c.get("batch_size", SERVER_DEFAULT_BATCH)),
            n_ubatch=int(c.get("ubatch_size", SERVER_DEFAULT_UBATCH)),
            flash_attn=c.get("flash_attn") != "off",
        )

    def reason(self, candidate: Candidate, fixed: Dict[str, Value]) -> Optional[str]:
        """Why the candidate cannot fit, or None (also when there is no estimate)."""
        if self.info is None:
            return None
        from ..models.memory import check_fit

        try:
            est = self.estimate(candidate, fixed)
        except UserError as exc:
            return str(exc)
        lim = self.limits
        if lim.max_rss is not None and est.ram_total > lim.max_rss:
            return f"estimated RAM {fmt_bytes(est.ram_total)} > --max-rss {fmt_bytes(lim.max_rss)}"
        if lim.max_vram is not None and est.vram_total > lim.max_vram:
            return f"estimated GPU memory {fmt_bytes(est.vram_total)} > --max-vram {fmt_bytes(lim.max_vram)}"
        verdict = check_fit(est, lim.free_ram, lim.gpus if self.has_gpu else [])
        if not verdict.fits:
            needs = f"needs {fmt_bytes(est.ram_total)} RAM"
            if est.vram_total:
                needs += f" + {fmt_bytes(est.vram_total)} GPU"
            free = "unknown" if lim.free_ram is None else fmt_bytes(lim.free_ram)
            return f"does not fit: {needs} ({free} RAM free)"
        return None
