"""Will it fit? llama-server's memory for a model, context, slots, KV-cache types and GPU layers.

Pure functions over ModelInfo, following llama.cpp's own rules (src/llama-context.cpp, llama-kv-cache*.cpp,
llama-model.cpp, tools/server/server.cpp of the build we test against):

- Context: `-c 0` is the trained context; it is padded up to a multiple of 256. `-np -1` (the server's
  default, "auto") means 4 slots *and* a unified KV cache; an explicit `-np N` keeps the cache per slot
  unless `--kv-unified`. The total number of cells is the context either way, it is not multiplied by the
  slots: unified, one stream of n_ctx cells; per slot, N streams of pad256(n_ctx / N) cells (so -c 4096
  -np 3 holds 3 x 1536 cells).
- KV bytes = cells x layers with KV x (K head size x KV heads x bytes(type_k) + V head size x KV heads x
  bytes(type_v)); sliding-window layers hold pad256(min(cells, window x (slots if unified else 1) +
  ubatch)) cells; MLA models (key_length_mla) cache K only. Bytes per element are ggml's block sizes.
- GPU layers: with -ngl G, the output layer and the last G-1 blocks go to the GPU (llama.cpp's
  i_gpu_start = n_layer + 1 - G), token_embd always stays on the CPU; a block's KV cache lives where the
  block does. Tied embeddings (no output.weight) are copied to the GPU for the output layer.
- Compute buffers (flash attention on, llama.cpp's "auto" on the CPU and current GPUs): ubatch x 4 x
  (3 x n_ff + 5 x n_embd) bytes of activations plus the f16 attention mask, ubatch x cells per stream x 2
  (without flash attention the f32 scores: ubatch x cells x 4 x (heads + 1)); fitted on SmolLM2-135M,
  where it gives 18.62 MiB at -c 4096 against the server's 18.64 MiB (16.64/22.64/30.64 at 2k/8k/16k).
  The host also holds the logits, slots x vocab x 4 bytes. Each GPU used gets a compute buffer; the
  host keeps one unless every layer is offloaded.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import List, Optional, Protocol, Sequence, Tuple

from ..utils import UserError, fmt_bytes
from .gguf import ModelInfo

# ggml block size and bytes per block of the KV-cache types llama-server accepts (-ctk/-ctv).
CACHE_TYPES = {
    "f32": (1, 4),
    "f16": (1, 2),
    "bf16": (1, 2),
    "q8_0": (32, 34),
    "q4_0": (32, 18),
    "q4_1": (32, 20),
    "iq4_nl": (32, 18),
    "q5_0": (32, 22),
    "q5_1": (32, 24),
}
AUTO_PARALLEL = 4  # llama-server -np -1
CTX_PAD = 256
# Sliding-window layer patterns llama.cpp hard-codes per architecture (period, dense layer first) when the
# file has a window but no attention.sliding_window_pattern key.
SWA_PATTERNS = {
    "gemma2": (2, False),
    "gemma3": (6, False),
    "gemma3n": (5, False),
    "cohere2": (4, False),
    "gpt-oss": (2, False),
    "llama4": (4, False),
    "exaone4": (4, False),
    "olmo2": (4, False),
}


def bytes_per_element(cache_type: str) -> float:
    """Bytes per element of a KV-cache type, e.g. q8_0 -> 34/32."""
    block, size = _cache_type(cache_type)
    return size / block


def _cache_type(name: str) -> Tuple[int, int]:
    try:
        return CACHE_TYPES[name.lower()]
    except KeyError:
        raise UserError(f"unknown KV cache type '{name}' (llama-server accepts: {', '.join(CACHE_TYPES)})") from None


def _row_bytes(cache_type: str, n: int) -> float:
    block, size = _cache_type(cache_type)
    return n * size / block


def _pad(n: int) -> int:
    return -(-n // CTX_PAD) * CTX_PAD


@dataclass(frozen=True)
class MemoryParams:
    """The server settings the estimate depends on; None means llama-server's default."""

    ctx_size: Optional[int] = None  # None or 0: the trained context
    parallel: Optional[int] = None  # None or < 0: auto (4 slots, unified KV)
    n_gpu_layers: Optional[int] = None  # None or < 0: all when a GPU exists, else 0
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    kv_unified: Optional[bool] = None  # None: unified only when parallel is auto
    has_gpu: bool = False
    n_batch: int = 2048
    n_ubatch: int = 512
    flash_attn: bool = True
    swa_full: bool = False


@dataclass
class MemoryEstimate:
    """Bytes llama-server will allocate, split between host RAM and GPU memory."""

    model: ModelInfo
    params: MemoryParams
    n_ctx: int  # total KV cells (all slots)
    n_ctx_seq: int  # cells per slot
    n_parallel: int
    kv_unified: bool
    gpu_layers: int  # effective -ngl, 0 .. block_count + 1
    kv_layers: int
    weights_ram: int
    weights_vram: int
    kv_ram: int
    kv_vram: int
    compute_ram: int
    compute_vram: int  # per GPU used

    @property
    def kv_bytes(self) -> int:
        return self.kv_ram + self.kv_vram

    @property
    def ram_total(self) -> int:
        return self.weights_ram + self.kv_ram + self.compute_ram

    @property
    def vram_total(self) -> int:
        return self.weights_vram + self.kv_vram + self.compute_vram

    @property
    def total(self) -> int:
        return self.ram_total + self.vram_total

    def describe(self) -> str:
        """One line, e.g. "RAM 200.9 MiB (weights 92.1 MiB, KV 90.0 MiB, compute 18.8 MiB) · ctx 4096 x 1 slot ..."."""
        p = self.params
        ram = (
            f"RAM {fmt_bytes(self.ram_total)} (weights {fmt_bytes(self.weights_ram)}, KV {fmt_bytes(self.kv_ram)}, "
            f"compute {fmt_bytes(self.compute_ram)})"
        )
        parts = [ram]
        if self.gpu_layers:
            parts.append(
                f"VRAM {fmt_bytes(self.vram_total)} (weights {fmt_bytes(self.weights_vram)}, "
                f"KV {fmt_bytes(self.kv_vram)}, compute {fmt_bytes(self.compute_vram)})"
            )
        slots = f"{self.n_parallel} slot{'s' if self.n_parallel != 1 else ''}{' unified' if self.kv_unified else ''}"
        parts.append(f"ctx {self.n_ctx} x {slots}, KV {p.cache_type_k}/{p.cache_type_v}")
        parts.append(f"{self.gpu_layers}/{_n_layers(self.model) + 1} layers on GPU")
        return " · ".join(parts)


def estimate_memory(
    info: ModelInfo,
    ctx_size: Optional[int] = None,
    parallel: Optional[int] = None,
    n_gpu_layers: Optional[int] = None,
    cache_type_k: str = "f16",
    cache_type_v: str = "f16",
    kv_unified: Optional[bool] = None,
    *,
    has_gpu: bool = False,
    n_batch: int = 2048,
    n_ubatch: int = 512,
    flash_attn: bool = True,
    swa_full: bool = False,
) -> MemoryEstimate:
    """Memory llama-server will need for `info` with these settings (see the module doc for the rules)."""
    params = MemoryParams(
        ctx_size, parallel, n_gpu_layers, cache_type_k, cache_type_v, kv_unified, has_gpu, n_batch, n_ubatch,
        flash_attn, swa_full,
    )  # fmt: skip
    return estimate_with(info, params)


def _n_layers(info: ModelInfo) -> int:
    return max(info.block_count or 0, len(info.layer_bytes))


def _swa_layers(info: ModelInfo, n_layer: int) -> List[bool]:
    if not info.sliding_window:
        return [False] * n_layer
    pattern = info.swa_pattern
    if isinstance(pattern, list):
        return [bool(pattern[i]) if i < len(pattern) else False for i in range(n_layer)]
    period, dense_first = (
        (pattern, False) if pattern is not None else SWA_PATTERNS.get(info.architecture or "", (1, False))
    )
    if dense_first:
        return [period == 0 or i % period != 0 for i in range(n_layer)]
    return [period == 0 or i % period < period - 1 for i in range(n_layer)]


def estimate_with(info: ModelInfo, params: MemoryParams) -> MemoryEstimate:
    """estimate_memory() for a MemoryParams (used by check_fit to try other settings)."""
    p = params
    for t in (p.cache_type_k, p.cache_type_v):
        _cache_type(t)
    ctx = p.ctx_size or info.context_length
    if not ctx or ctx < 0:
        raise UserError(f"{info.path} does not say its trained context length: pass --ctx-size N")
    auto = p.parallel is None or p.parallel < 0
    n_par = AUTO_PARALLEL if auto else max(1, p.parallel or 1)
    unified = True if auto else bool(p.kv_unified)
    n_ctx = _pad(ctx)
    if unified:
        n_ctx_seq, streams = n_ctx, 1
    else:
        n_ctx_seq, streams = _pad(n_ctx // n_par), n_par
        if n_ctx_seq == 0:
            raise UserError(f"--ctx-size {ctx} is too small for {n_par} slots (each slot needs at least 1 cell)")
        n_ctx = n_ctx_seq * n_par
    ubatch = min(p.n_ubatch, min(n_ctx, p.n_batch))

    n_layer = _n_layers(info)
    if p.has_gpu and (p.n_gpu_layers is None or p.n_gpu_layers < 0):
        ngl = n_layer + 1
    else:
        ngl = min(max(p.n_gpu_layers or 0, 0), n_layer + 1) if p.has_gpu else 0
    gpu_start = n_layer + 1 - ngl

    # Weights: per block from the tensor sizes, else the file split evenly.
    if sum(info.layer_bytes):
        layer_bytes = list(info.layer_bytes) + [0] * (n_layer - len(info.layer_bytes))
        input_bytes, output_bytes = info.input_bytes, info.output_bytes
    else:
        layer_bytes = [info.size_bytes // max(n_layer, 1)] * n_layer
        input_bytes = output_bytes = 0
    on_gpu = [ngl > 0 and il >= gpu_start for il in range(n_layer)]
    w_vram = sum(b for b, g in zip(layer_bytes, on_gpu) if g)
    w_ram = sum(layer_bytes) - w_vram + input_bytes
    if ngl >= 1:
        w_vram += output_bytes + (input_bytes if info.output_tied else 0)
    else:
        w_ram += output_bytes

    # KV cache, layer by layer.
    swa = _swa_layers(info, n_layer)
    swa_cells = n_ctx_seq
    if info.sliding_window and not p.swa_full:
        swa_cells = _pad(min(n_ctx_seq, info.sliding_window * (n_par if unified else 1) + ubatch))
    kv_ram = kv_vram = 0.0
    kv_layers = 0
    own_kv = n_layer - (info.shared_kv_layers or 0)
    for il in range(min(info.block_count or n_layer, own_kv)):
        heads = info.kv_heads_per_layer[il] if info.kv_heads_per_layer and il < len(info.kv_heads_per_layer) else None
        heads = info.head_count_kv if heads is None else heads
        if not heads or not info.key_length:
            continue
        cells = (swa_cells if swa[il] else n_ctx_seq) * streams
        k = _row_bytes(p.cache_type_k, info.key_length * heads)
        v = 0.0 if info.is_mla else _row_bytes(p.cache_type_v, (info.value_length or info.key_length) * heads)
        kv_layers += 1
        if on_gpu[il]:
            kv_vram += cells * (k + v)
        else:
            kv_ram += cells * (k + v)

    # Compute buffers.
    embd = info.embedding_length or 0
    n_ff = max(info.feed_forward_length or 0, (info.expert_feed_forward_length or 0) * (info.expert_used_count or 0))
    n_ff = n_ff or 4 * embd
    compute = ubatch * 4 * (3 * n_ff + 5 * embd)
    if p.flash_attn:
        compute += ubatch * n_ctx_seq * 2
    else:
        compute += ubatch * n_ctx_seq * 4 * ((info.head_count or 1) + 1)
    logits = n_par * (info.vocab_size or 0) * 4
    if ngl == 0:
        c_ram, c_vram = compute, 0
    elif ngl >= n_layer + 1:
        c_ram, c_vram = 2 * ubatch * embd * 4, compute
    else:
        c_ram, c_vram = compute, compute
    return MemoryEstimate(
        info, p, n_ctx, n_ctx_seq, n_par, unified, ngl, kv_layers, int(w_ram), int(w_vram), int(kv_ram),
        int(kv_vram), int(c_ram + logits), int(c_vram),
    )  # fmt: skip


class GpuMemory(Protocol):
    """What check_fit needs of a GPU (power.reading.GpuStats has it)."""

    index: int
    name: str
    mem_used_bytes: Optional[int]
    mem_total_bytes: Optional[int]


@dataclass
class GpuFit:
    index: int
    name: str
    free_bytes: Optional[int]  # None when the driver does not say
    need_bytes: int
    fits: bool


@dataclass
class FitVerdict:
    """Whether an estimate fits the free memory, and when not, what would."""

    fits: bool
    estimate: MemoryEstimate
    free_ram_bytes: Optional[int]
    ram_fits: bool
    vram_fits: bool
    gpus: List[GpuFit]
    max_ctx: Optional[int] = None  # the largest --ctx-size that fits with the other settings unchanged
    q8_0_fits: Optional[bool] = None  # would --cache-type-k/-v q8_0 fit (None: already that small)
    max_gpu_layers: Optional[int] = None  # the most --n-gpu-layers that fit, when GPU memory is short
    message: str = ""


def _gpu_fits(est: MemoryEstimate, gpus: Sequence[GpuMemory]) -> List[GpuFit]:
    if not est.gpu_layers or not gpus:
        return []
    free = [None if g.mem_total_bytes is None else g.mem_total_bytes - (g.mem_used_bytes or 0) for g in gpus]
    known = sum(f for f in free if f is not None and f > 0)
    fits = []
    for g, f in zip(gpus, free):
        # llama.cpp splits layers in proportion to each device's free memory; each device gets a compute buffer.
        share = (est.weights_vram + est.kv_vram) * (f / known if known and f and f > 0 else 1.0 / len(gpus))
        need = int(share) + est.compute_vram
        fits.append(GpuFit(g.index, g.name, f, need, f is None or need <= f))
    return fits


def _fits(est: MemoryEstimate, free_ram: Optional[int], gpus: Sequence[GpuMemory]) -> Tuple[bool, bool, List[GpuFit]]:
    ram_ok = free_ram is None or est.ram_total <= free_ram
    per_gpu = _gpu_fits(est, gpus)
    return ram_ok, all(g.fits for g in per_gpu), per_gpu


def _try(est: MemoryEstimate, free_ram: Optional[int], gpus: Sequence[GpuMemory], **changes: object) -> bool:
    try:
        other = estimate_with(est.model, replace(est.params, **changes))  # type: ignore[arg-type]
    except UserError:
        return False
    ram_ok, vram_ok, _ = _fits(other, free_ram, gpus)
    return ram_ok and vram_ok


def check_fit(estimate: MemoryEstimate, free_ram_bytes: Optional[int], gpus: Sequence[GpuMemory]) -> FitVerdict:
    """Compare an estimate with free RAM and free GPU memory; suggest what would fit when it does not."""
    ram_ok, vram_ok, per_gpu = _fits(estimate, free_ram_bytes, gpus)
    verdict = FitVerdict(ram_ok and vram_ok, estimate, free_ram_bytes, ram_ok, vram_ok, per_gpu)
    if not verdict.fits:
        lo, hi = 1, estimate.n_ctx // CTX_PAD - 1  # in units of 256 cells, below what was asked
        while lo <= hi:
            mid = (lo + hi) // 2
            if _try(estimate, free_ram_bytes, gpus, ctx_size=mid * CTX_PAD):
                verdict.max_ctx, lo = mid * CTX_PAD, mid + 1
            else:
                hi = mid - 1
        q8 = bytes_per_element("q8_0")
        p = estimate.params
        if bytes_per_element(p.cache_type_k) > q8 or bytes_per_element(p.cache_type_v) > q8:
            verdict.q8_0_fits = _try(estimate, free_ram_bytes, gpus, cache_type_k="q8_0", cache_type_v="q8_0")
        if not vram_ok:
            # Fewer GPU layers need less VRAM but more RAM: the most layers that fit the GPUs, if RAM takes the rest.
            lo, hi, best = 0, estimate.gpu_layers - 1, 0
            while lo <= hi:
                mid = (lo + hi) // 2
                if _fits(estimate_with(estimate.model, replace(estimate.params, n_gpu_layers=mid)), None, gpus)[1]:
                    best, lo = mid, mid + 1
                else:
                    hi = mid - 1
            if _try(estimate, free_ram_bytes, gpus, n_gpu_layers=best):
                verdict.max_gpu_layers = best
    verdict.message = _message(verdict)
    return verdict


def _message(v: FitVerdict) -> str:
    est = v.estimate
    name = est.model.name or est.model.path
    free = "unknown" if v.free_ram_bytes is None else fmt_bytes(v.free_ram_bytes)
    needs = [f"{fmt_bytes(est.ram_total)} RAM ({free} free)"]
    for g in v.gpus:
        gfree = "unknown" if g.free_bytes is None else fmt_bytes(g.free_bytes)
        needs.append(f"{fmt_bytes(g.need_bytes)} on GPU {g.index} ({gfree} free)")
    detail = (
        f"weights {fmt_bytes(est.weights_ram + est.weights_vram)}, KV {fmt_bytes(est.kv_bytes)} "
        f"for {est.n_ctx} cells {est.params.cache_type_k}/{est.params.cache_type_v}, "
        f"compute {fmt_bytes(est.compute_ram + est.compute_vram)}"
    )
    if v.fits:
        return f"{name} fits: needs {' and '.join(needs)}; {detail}"
    options = []
    if v.max_ctx:
        options.append(f"--ctx-size {v.max_ctx}")
    if v.q8_0_fits:
        options.append("--cache-type-k q8_0 --cache-type-v q8_0")
    if v.max_gpu_layers is not None:
        options.append(f"--n-gpu-layers {v.max_gpu_layers}")
    would = f"would fit: {' or '.join(options)}" if options else "no smaller context, KV type or GPU split fits"
    return f"{name} does not fit: needs {' and '.join(needs)} ({detail}); {would}; --skip-vram-check starts anyway"
