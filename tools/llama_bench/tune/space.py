"""The search space of `llama-bench autotune`: which llama-server flags are tuned, over which values, and
which combinations are not worth a launch.

Defaults come from the machine (cores, GPUs) and from the binary (only flags its `--help` lists); the
user narrows or widens them with `--space "threads=1,2;ubatch=128,256,512"` (and the original
paq_llamacpp_studio's `--batch-sizes` / `--ubatch-sizes`). A parameter given as a plain server flag
(`--threads 4`, or `-- -ctk q8_0`) is fixed: every candidate gets it and it is not searched.

Candidates are plain dicts {param name: value}; names follow ServerConfig's fields where it has one.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Set, Tuple, Union

from ..models.memory import CACHE_TYPES
from ..utils import StrEnum, UserError

Value = Union[int, str]
Candidate = Dict[str, Value]

# llama-server's own defaults for the tuned flags (what a candidate without the flag gets).
SERVER_DEFAULT_BATCH = 2048
SERVER_DEFAULT_UBATCH = 512
SAMPLE_THRESHOLD = 4096  # int ranges wider than this are refused (a typo such as 1..100000)


class ParamKind(StrEnum):
    INT = "int"  # ordered: the smart strategy walks to the neighbours
    CHOICE = "choice"  # unordered: every value is tried


@dataclass(frozen=True)
class Param:
    """One tunable llama-server setting."""

    name: str  # canonical name (the ServerConfig field where there is one)
    short: str  # table header
    flags: Tuple[str, ...]  # llama-server flags it sets, each followed by the value
    help_names: Tuple[str, ...]  # names to look for in `llama-server --help`
    kind: ParamKind
    aliases: Tuple[str, ...]
    choices: Tuple[str, ...] = ()


PARAMS: Tuple[Param, ...] = (
    Param("threads", "t", ("-t",), ("--threads",), ParamKind.INT, ("t", "threads")),
    Param(
        "threads_batch", "tb", ("-tb",), ("--threads-batch",), ParamKind.INT, ("tb", "threads-batch", "threads_batch")
    ),
    Param("batch_size", "b", ("-b",), ("--batch-size",), ParamKind.INT, ("b", "batch", "batch-size", "batch_size")),
    Param(
        "ubatch_size",
        "ub",
        ("-ub",),
        ("--ubatch-size",),
        ParamKind.INT,
        ("ub", "ubatch", "ubatch-size", "ubatch_size"),
    ),
    Param("parallel", "np", ("-np",), ("--parallel",), ParamKind.INT, ("np", "parallel")),
    Param(
        "flash_attn",
        "fa",
        ("-fa",),
        ("--flash-attn",),
        ParamKind.CHOICE,
        ("fa", "flash-attn", "flash_attn"),
        ("on", "off", "auto"),
    ),
    Param(
        "cache_type",
        "kv",
        ("-ctk", "-ctv"),
        ("--cache-type-k",),
        ParamKind.CHOICE,
        ("kv", "ctk", "cache-type", "cache_type", "kv-cache"),
        tuple(CACHE_TYPES),
    ),
    Param(
        "n_gpu_layers",
        "ngl",
        ("-ngl",),
        ("--n-gpu-layers", "--gpu-layers"),
        ParamKind.INT,
        ("ngl", "n-gpu-layers", "gpu-layers", "n_gpu_layers"),
    ),
)
PARAM_BY_NAME: Dict[str, Param] = {p.name: p for p in PARAMS}
_ALIASES: Dict[str, Param] = {alias: p for p in PARAMS for alias in (p.name, *p.aliases)}
# Raw llama-server flags (after `--`) that fix a parameter.
RAW_FLAGS: Dict[str, Param] = {
    **{f: p for p in PARAMS for f in p.flags},
    **{f: p for p in PARAMS for f in p.help_names},
    "--cache-type-v": PARAM_BY_NAME["cache_type"],
}


def param(name: str, origin: str = "--space") -> Param:
    """The parameter called `name` (any alias: t, threads, ub, ubatch-size, ...)."""
    found = _ALIASES.get(name.strip().lower())
    if found is None:
        known = ", ".join(p.name.replace("_", "-") for p in PARAMS)
        raise UserError(f"{origin}: unknown parameter '{name}' (known: {known})")
    return found


def candidate_key(candidate: Mapping[str, Value]) -> str:
    """A stable text key for a candidate (journal look-ups, de-duplication)."""
    return json.dumps({k: candidate[k] for k in sorted(candidate)}, sort_keys=True)


def describe(candidate: Mapping[str, Value]) -> str:
    """'t=2 ub=256 fa=on' (in PARAMS order); 'llama-server defaults' for none."""
    parts = [f"{p.short}={candidate[p.name]}" for p in PARAMS if p.name in candidate]
    return " ".join(parts) if parts else "llama-server defaults"


@dataclass
class Space:
    """The values of each searched parameter (PARAMS order), the fixed ones, and the start point."""

    values: Dict[str, List[Value]]
    fixed: Dict[str, Value] = field(default_factory=dict)
    start: Candidate = field(default_factory=dict)

    @property
    def names(self) -> List[str]:
        return [p.name for p in PARAMS if p.name in self.values]

    @property
    def size(self) -> int:
        return math.prod(len(v) for v in self.values.values()) if self.values else 0

    def grid(self) -> Iterator[Candidate]:
        names = self.names
        for combo in itertools.product(*(self.values[n] for n in names)):
            yield dict(zip(names, combo))

    def contains(self, candidate: Mapping[str, Value]) -> bool:
        return set(candidate) == set(self.values) and all(candidate[n] in self.values[n] for n in candidate)

    def describe(self) -> str:
        parts = [f"{PARAM_BY_NAME[n].short}={','.join(str(v) for v in self.values[n])}" for n in self.names]
        return "; ".join(parts) + f" ({self.size} points)"

    def to_dict(self) -> Dict[str, object]:
        return {"values": {n: self.values[n] for n in self.names}, "fixed": dict(self.fixed), "start": dict(self.start)}


# -- parsing -------------------------------------------------------------------------------------------
def _parse_value(p: Param, text: str, origin: str) -> List[Value]:
    raw = text.strip().lower()
    if p.kind is ParamKind.CHOICE:
        if raw not in p.choices:
            raise UserError(f"{origin}: {p.name.replace('_', '-')}={text}: expected one of {', '.join(p.choices)}")
        return [raw]
    if ".." in raw:
        lo_text, _, hi_text = raw.partition("..")
        lo, hi = _int(p, lo_text, origin), _int(p, hi_text, origin)
        if hi < lo or hi - lo > SAMPLE_THRESHOLD:
            raise UserError(f"{origin}: {p.name.replace('_', '-')}={text}: expected a range such as 1..8")
        return list(range(lo, hi + 1))
    return [_int(p, raw, origin)]


def _int(p: Param, text: str, origin: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise UserError(f"{origin}: {p.name.replace('_', '-')}={text}: expected whole numbers such as 1,2,4") from None
    lowest = 0 if p.name == "n_gpu_layers" else 1  # -ngl 0: everything on the CPU
    if value < lowest:
        raise UserError(f"{origin}: {p.name.replace('_', '-')}={text}: expected a number >= {lowest}")
    return value


def parse_values(p: Param, text: str, origin: str) -> List[Value]:
    """'1,2,4' or '1..4' or 'on,off' -> the values, without duplicates; numbers ascending."""
    values: List[Value] = []
    for part in text.split(","):
        if not part.strip():
            raise UserError(f"{origin}: {p.name.replace('_', '-')} has an empty value in '{text}'")
        for value in _parse_value(p, part, origin):
            if value not in values:
                values.append(value)
    if p.kind is ParamKind.INT:
        values.sort(key=int)
    return values


def parse_space(text: str, origin: str = "--space") -> Dict[str, List[Value]]:
    """'threads=1,2;ubatch=128,256,512' -> {'threads': [1, 2], 'ubatch_size': [128, 256, 512]}."""
    out: Dict[str, List[Value]] = {}
    for item in text.split(";"):
        if not item.strip():
            continue
        name, sep, values = item.partition("=")
        if not sep or not values.strip():
            raise UserError(f"{origin}: '{item.strip()}' is not NAME=VALUES (e.g. threads=1,2;ubatch=256,512)")
        p = param(name, origin)
        if p.name in out:
            raise UserError(f"{origin}: {p.name.replace('_', '-')} is given twice")
        out[p.name] = parse_values(p, values, origin)
    if not out:
        raise UserError(f"{origin}: no parameter given (e.g. threads=1,2;ubatch=256,512)")
    return out


def fixed_from_raw(extra: Sequence[str]) -> Dict[str, Value]:
    """Parameters fixed by raw llama-server flags after `--` (e.g. `-- -ctk q8_0 -tb 4`)."""
    fixed: Dict[str, Value] = {}
    for i, arg in enumerate(extra):
        name, has_inline, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        p = RAW_FLAGS.get(name)
        if p is None:
            continue
        value = inline if has_inline else (extra[i + 1] if i + 1 < len(extra) else "")
        if p.kind is ParamKind.INT:
            try:
                fixed[p.name] = int(value)
            except ValueError:
                fixed[p.name] = value
        else:
            fixed[p.name] = value
    return fixed


# -- defaults ------------------------------------------------------------------------------------------
@dataclass
class SpaceInputs:
    """What the default space depends on."""

    physical_cores: int
    logical_cores: int
    has_gpu: bool
    n_layers: Optional[int]  # the model's blocks, when its header says
    prefill: bool  # does the objective depend on prompt processing (tb, b, ub)?
    concurrency: int  # > 1: parallel slots are searched
    prompt_size: int
    supported: Set[str]  # flags this llama-server's --help lists


def _powers_of_two(lo: int, hi: int) -> List[int]:
    out, v = [], 1
    while v <= hi:
        if v >= lo:
            out.append(v)
        v *= 2
    return out


def thread_values(physical: int, logical: int) -> List[int]:
    """1, 2, 4, ... up to the physical cores (from an eighth of them), the cores themselves, and the
    logical CPUs when there are more (hyper-threads sometimes help prompt processing)."""
    physical = max(1, physical)
    values = set(_powers_of_two(max(1, physical // 8), physical)) | {physical}
    if logical > physical:
        values.add(logical)
    return sorted(values)


def default_values(inp: SpaceInputs) -> Tuple[Dict[str, List[Value]], Candidate]:
    """The default space for the objective and machine, and the good start point of the smart strategy:
    threads = the physical cores, llama-server's batch sizes, one slot per concurrent request, flash
    attention on, an f16 KV cache, every layer on the GPU."""
    values: Dict[str, List[Value]] = {}
    start: Candidate = {}
    threads = thread_values(inp.physical_cores, inp.logical_cores)
    values["threads"], start["threads"] = list(threads), inp.physical_cores
    if inp.prefill:
        values["threads_batch"], start["threads_batch"] = list(threads), inp.physical_cores
        top = SERVER_DEFAULT_BATCH if inp.prompt_size <= SERVER_DEFAULT_BATCH else 2 * SERVER_DEFAULT_BATCH
        values["batch_size"], start["batch_size"] = list(_powers_of_two(512, top)), SERVER_DEFAULT_BATCH
        values["ubatch_size"], start["ubatch_size"] = [128, 256, 512, 1024], SERVER_DEFAULT_UBATCH
    if inp.concurrency > 1:
        slots = sorted(set(_powers_of_two(1, inp.concurrency)) | {inp.concurrency})
        values["parallel"], start["parallel"] = list(slots), inp.concurrency
    values["flash_attn"], start["flash_attn"] = ["on", "off"], "on"
    values["cache_type"], start["cache_type"] = ["f16", "q8_0"], "f16"
    if inp.has_gpu:
        n = inp.n_layers
        all_layers = n + 1 if n else 999
        gpu = sorted({0, n // 2, all_layers} if n else {0, all_layers})
        values["n_gpu_layers"], start["n_gpu_layers"] = list(gpu), all_layers
    supported = {name: v for name, v in values.items() if is_supported(PARAM_BY_NAME[name], inp.supported)}
    return supported, {k: v for k, v in start.items() if k in supported}


def is_supported(p: Param, supported: Set[str]) -> bool:
    return any(name in supported for name in p.help_names)


def build_space(
    defaults: Dict[str, List[Value]],
    start: Candidate,
    overrides: Dict[str, List[Value]],
    fixed: Dict[str, Value],
    supported: Set[str],
    replace_all: bool,
) -> Space:
    """The space to search: the defaults (or only the overrides when `replace_all`, as `--space` does),
    overrides winning, fixed parameters taken out; the start point snapped into the space."""
    for name in overrides:
        p = PARAM_BY_NAME[name]
        if name in fixed:
            raise UserError(
                f"{p.name.replace('_', '-')} is both fixed (a server flag) and searched (--space); drop one"
            )
        if not is_supported(p, supported):
            raise UserError(f"--space: this llama-server has no {p.help_names[0]} flag (see llama-server --help)")
    chosen = dict(overrides) if replace_all else {**defaults, **overrides}
    values = {p.name: chosen[p.name] for p in PARAMS if p.name in chosen and p.name not in fixed}
    snapped: Candidate = {}
    for name, vals in values.items():
        want = start.get(name)
        snapped[name] = nearest(PARAM_BY_NAME[name], vals, want) if want is not None else vals[-1]
    return Space(values=values, fixed=dict(fixed), start=snapped)


def nearest(p: Param, values: Sequence[Value], want: Value) -> Value:
    """The value closest to `want` (by ratio for numbers: 3 is nearer 4 than 1)."""
    if want in values:
        return want
    if p.kind is ParamKind.CHOICE or not isinstance(want, int):
        return values[0]
    return min(values, key=lambda v: abs(math.log2(max(int(v), 1) / max(want, 1))))


# -- constraints ---------------------------------------------------------------------------------------
def merged(candidate: Mapping[str, Value], fixed: Mapping[str, Value]) -> Dict[str, Value]:
    return {**fixed, **candidate}


def violation(candidate: Mapping[str, Value], fixed: Mapping[str, Value]) -> Optional[str]:
    """Why a candidate is not worth a launch (a combination llama.cpp refuses or collapses), or None."""
    c = merged(candidate, fixed)
    batch = int(c.get("batch_size", SERVER_DEFAULT_BATCH))
    ubatch = int(c.get("ubatch_size", SERVER_DEFAULT_UBATCH))
    if ubatch > batch:
        return f"ubatch {ubatch} > batch {batch} (llama.cpp clamps it: the same as ubatch {batch})"
    cache = str(c.get("cache_type", "f16"))
    if c.get("flash_attn") == "off" and cache not in ("f16", "f32", "bf16"):
        return f"a quantized V cache ({cache}) needs flash attention; -fa off is refused by llama.cpp"
    return None
