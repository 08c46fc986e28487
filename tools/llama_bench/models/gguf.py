"""What a GGUF model file says about itself: header metadata, without reading the weights.

A small streaming parser over the `gguf` package's definitions (versions, value types, tensor block sizes,
file-type names): `gguf.GGUFReader` decodes every tokenizer string into numpy arrays (seconds for a 50k
vocabulary, see benchmarks/gguf_header.py) and can spin on a corrupt array length; this one skips arrays
by their byte length and checks every length against the file size. Split models (gguf-split's
`NAME-00001-of-00003.gguf`) read as one model from any of their parts.
"""

from __future__ import annotations

import math
import re
import struct
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Dict, List, Optional, Tuple, Union

from ..utils import UserError, user_path

SPLIT_NAME = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")
LEGACY_MAGICS = {b"lmgg": "GGML", b"fmgg": "GGMF", b"tjgg": "GGJT"}
_CHUNK = 1 << 20
_MAX_STRING = 1 << 20  # longer metadata strings are skipped, not kept (a chat template is ~10 KB)
_MAX_KEPT_ARRAY = 4096  # per-layer arrays are kept; tokenizer vocabularies only counted
MAX_BLOCKS = 9999  # the largest models have a few hundred
MAX_KEYS = 65536  # real headers have tens to a few hundred keys
MAX_STRINGS = 16_000_000  # string arrays are walked one by one: vocabularies have up to ~1M entries
MAX_TENSORS = 1_000_000  # real models: hundreds to tens of thousands (MoE with per-expert tensors)


class GGUFError(UserError):
    """A model file that is not a usable GGUF: one line saying what is wrong with which file."""


@dataclass
class ModelInfo:
    """GGUF header facts of one model (all parts of a split model); None where the file does not say."""

    path: str
    files: List[str]
    size_bytes: int
    name: Optional[str] = None
    architecture: Optional[str] = None
    parameters: Optional[int] = None
    quantization: Optional[str] = None  # file-type label, e.g. "Q4_1", "Q4_K_M", "F16"
    file_type: Optional[int] = None  # raw general.file_type
    context_length: Optional[int] = None
    block_count: Optional[int] = None
    embedding_length: Optional[int] = None
    feed_forward_length: Optional[int] = None
    head_count: Optional[int] = None
    head_count_kv: Optional[int] = None  # the largest, when the file gives one per layer
    key_length: Optional[int] = None  # K head size; embedding_length / head_count when absent
    value_length: Optional[int] = None
    expert_count: Optional[int] = None
    expert_used_count: Optional[int] = None
    expert_feed_forward_length: Optional[int] = None
    sliding_window: Optional[int] = None
    vocab_size: Optional[int] = None
    has_chat_template: bool = False
    license: Optional[str] = None
    gguf_version: Optional[int] = None
    tensor_count: int = 0
    # Detail for the memory estimate (models/memory.py); left out of to_dict().
    kv_heads_per_layer: Optional[List[int]] = None
    swa_pattern: Optional[Union[int, List[bool]]] = None
    shared_kv_layers: Optional[int] = None
    is_mla: bool = False
    layer_bytes: List[int] = field(default_factory=list)  # tensor bytes of blk.N.*
    input_bytes: int = 0  # token_embd* (always kept on the CPU by llama.cpp)
    output_bytes: int = 0  # every other tensor outside the blocks (output, output_norm, ...)
    output_tied: bool = False  # no output.weight: llama.cpp reuses token_embd for the output layer

    def short(self) -> str:
        """One line for UIs, e.g. "SmolLM2-135M-Instruct.Q4_1.gguf · llama · 134.5M params · Q4_1 · ctx 8192".

        The file name, not general.name: converters fill that with whatever the training run was called."""
        return " · ".join([Path(self.path).name, self.facts()])

    def facts(self) -> str:
        """What the model is, without its name: "llama · 134.5M params · Q4_1 · ctx 8192"."""
        parts = [self.architecture]
        parts.append(f"{fmt_count(self.parameters)} params" if self.parameters else None)
        parts.append(self.quantization)
        parts.append(f"ctx {self.context_length}" if self.context_length else None)
        if len(self.files) > 1:
            parts.append(f"{len(self.files)} parts")
        return " · ".join(p for p in parts if p)

    def to_dict(self) -> Dict[str, Any]:
        """The summary fields (for --json, manifests); per-layer detail is left out."""
        detail = {"kv_heads_per_layer", "swa_pattern", "layer_bytes", "input_bytes", "output_bytes", "output_tied"}
        return {k: v for k, v in asdict(self).items() if k not in detail}


def fmt_count(n: Optional[int]) -> str:
    """134515008 -> "134.5M", 7241732096 -> "7.2B"."""
    if n is None:
        return "-"
    for scale, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


@dataclass
class _Array:  # a metadata array skipped rather than kept (e.g. the tokenizer's vocabulary)
    item_type: int
    length: int


@dataclass
class _Tensor:
    name: str
    n_elements: int
    n_bytes: Optional[int]  # None for a tensor type the installed gguf package does not know
    type_name: str


@dataclass
class _Header:
    version: int
    fields: Dict[str, Any]
    tensors: List[_Tensor]
    file_size: int


class _Cursor:
    """Buffered little/big-endian reads with EOF as a clean 'truncated' error."""

    def __init__(self, fh: BinaryIO, path: Path, file_size: int) -> None:
        self.fh, self.path, self.file_size = fh, path, file_size
        self.buf = b""
        self.pos = 0  # in buf
        self.base = 0  # file offset of buf[0]
        self.order = "<"

    def offset(self) -> int:
        return self.base + self.pos

    def need(self, n: int) -> None:
        if self.pos + n <= len(self.buf):
            return
        if self.offset() + n > self.file_size:
            raise GGUFError(
                f"{self.path} is truncated: its header runs past the end of the file "
                f"(needs byte {self.offset() + n:,}, file has {self.file_size:,} bytes)"
            )
        rest = self.buf[self.pos :]
        self.base += self.pos
        self.buf, self.pos = rest + self.fh.read(max(n - len(rest), _CHUNK)), 0
        if len(self.buf) < n:  # the file shrank while we read it
            raise GGUFError(f"{self.path} is truncated: could not read {n} bytes at offset {self.offset():,}")

    def unpack(self, fmt: str) -> Tuple[Any, ...]:
        size = struct.calcsize(self.order + fmt)
        self.need(size)
        values = struct.unpack_from(self.order + fmt, self.buf, self.pos)
        self.pos += size
        return values

    def u32(self) -> int:
        return int(self.unpack("I")[0])

    def u64(self) -> int:
        return int(self.unpack("Q")[0])

    def skip(self, n: int) -> None:
        if self.offset() + n > self.file_size:
            self.need(n)  # raises the truncation error
        if self.pos + n <= len(self.buf):
            self.pos += n
        else:
            self.base, self.buf, self.pos = self.offset() + n, b"", 0
            self.fh.seek(self.base)

    def skip_strings(self, count: int) -> None:
        """Skip `count` length-prefixed strings: the hot loop for tokenizer vocabularies."""
        length = struct.Struct(self.order + "Q").unpack_from
        while count:
            buf, pos, end = self.buf, self.pos, len(self.buf) - 8
            while count and pos <= end:
                n = length(buf, pos)[0] + 8
                if pos + n > len(buf):
                    break
                pos += n
                count -= 1
            self.pos = pos
            if count:  # the next string crosses the buffer's end
                self.skip(self.u64())
                count -= 1

    def string(self) -> Optional[str]:
        n = self.u64()
        if n > _MAX_STRING:
            self.skip(n)
            return None
        self.need(n)
        text = self.buf[self.pos : self.pos + n].decode("utf-8", "replace")
        self.pos += n
        return text

    def check_count(self, count: int, min_item_bytes: int, what: str, most: int) -> None:
        if count > most:  # far beyond any real model: a sparse file of any size must not make us read for ever
            raise GGUFError(f"{self.path} is corrupt: it declares {count:,} {what} (real models have far fewer)")
        if count * min_item_bytes > self.file_size - self.offset():
            raise GGUFError(
                f"{self.path} is truncated or corrupt: it declares {count:,} {what}, "
                f"more than the remaining {self.file_size - self.offset():,} bytes can hold"
            )


def _show(name: str) -> str:
    """A name from the file, safe for a one-line message (a corrupt file has any bytes there)."""
    return repr(name[:60] + ("..." if len(name) > 60 else ""))


def _value(cur: _Cursor, vtype: int, gg: Any, key: str, depth: int = 0) -> Any:
    vt = gg.GGUFValueType
    scalars = {vt.UINT8: "B", vt.INT8: "b", vt.UINT16: "H", vt.INT16: "h", vt.UINT32: "I", vt.INT32: "i"}
    scalars.update({vt.FLOAT32: "f", vt.UINT64: "Q", vt.INT64: "q", vt.FLOAT64: "d", vt.BOOL: "?"})
    if vtype in scalars:
        return cur.unpack(scalars[vtype])[0]
    if vtype == vt.STRING:
        return cur.string()
    if vtype != vt.ARRAY or depth > 8:
        what = f"unknown value type {vtype}" if vtype != vt.ARRAY else "arrays nested too deep"
        raise GGUFError(f"{cur.path} is corrupt: metadata key {_show(key)} has {what}")
    item_type, length = cur.u32(), cur.u64()
    if item_type in scalars:
        fmt = scalars[item_type]
        size = struct.calcsize(fmt)
        cur.check_count(length, size, f"array items in {_show(key)}", 2**40)  # skipped by one seek
        if length > _MAX_KEPT_ARRAY:
            cur.skip(length * size)
            return _Array(item_type, length)
        return list(cur.unpack(f"{length}{fmt}"))
    cur.check_count(length, 8 if item_type == vt.STRING else 12, f"array items in {_show(key)}", MAX_STRINGS)
    if item_type == vt.STRING and length > 64:
        cur.skip_strings(length)
        return _Array(item_type, length)
    return [_value(cur, item_type, gg, key, depth + 1) for _ in range(length)]


def _read_header(path: Path) -> _Header:
    import gguf as gg

    try:
        with path.open("rb") as fh:
            return _parse(_Cursor(fh, path, path.stat().st_size), gg)
    except FileNotFoundError:
        raise GGUFError(f"model file not found: {path}") from None
    except IsADirectoryError:
        raise GGUFError(f"{path} is a directory, not a GGUF model file") from None
    except OSError as exc:
        raise GGUFError(f"cannot read {path}: {exc.strerror or exc}") from None


def _parse(cur: _Cursor, gg: Any) -> _Header:
    path, file_size = cur.path, cur.file_size
    head = cur.fh.read(8)
    cur.fh.seek(0)
    if len(head) < 4 and b"GGUF".startswith(head):
        what = "empty (0 bytes)" if not head else f"truncated ({len(head)} bytes)"
        raise GGUFError(f"{path} is {what}, not a GGUF model")
    if head[:4] != b"GGUF":
        legacy = LEGACY_MAGICS.get(head[:4])
        hint = f": a legacy {legacy} file, convert it to GGUF" if legacy else ", expected b'GGUF'"
        raise GGUFError(f"{path} is not a GGUF file (starts with {head!r}{hint})")
    cur.skip(4)
    version = cur.u32()
    if version & 0xFFFF == 0 and version:  # a big-endian GGUF (the format's other byte order)
        cur.order = ">"
        version = struct.unpack(">I", struct.pack("<I", version))[0]
    if version not in (2, gg.GGUF_VERSION):
        why = "version 1 is too old, re-convert the model" if version == 1 else f"known: 2..{gg.GGUF_VERSION}"
        raise GGUFError(f"{path} has unknown GGUF version {version} ({why})")
    n_tensors, n_kv = cur.u64(), cur.u64()
    cur.check_count(n_kv, 13, "metadata keys", MAX_KEYS)
    fields: Dict[str, Any] = {}
    for _ in range(n_kv):
        key = cur.string() or ""
        fields[key] = _value(cur, cur.u32(), gg, key)
    cur.check_count(n_tensors, 24, "tensors", MAX_TENSORS)
    infos = []
    for _ in range(n_tensors):
        name, n_dims = cur.string() or "", cur.u32()
        if n_dims > 8:
            raise GGUFError(f"{path} is corrupt: tensor {_show(name)} has {n_dims} dimensions")
        infos.append((name, cur.unpack(f"{n_dims}Q"), cur.u32(), cur.u64()))
    alignment = fields.get("general.alignment", gg.GGUF_DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise GGUFError(f"{path} is corrupt: general.alignment {alignment!r} is not a power of two")
    data_start = -(-cur.offset() // alignment) * alignment
    tensors, data_end = [], data_start
    for name, dims, ttype, offset in infos:
        n_elements = math.prod(dims)
        try:
            qtype = gg.GGMLQuantizationType(ttype)
            block, type_size = gg.GGML_QUANT_SIZES[qtype]
            n_bytes: Optional[int] = n_elements * type_size // block
            type_name = qtype.name
        except (ValueError, KeyError):
            n_bytes, type_name = None, f"type{ttype}"
        tensors.append(_Tensor(name, n_elements, n_bytes, type_name))
        data_end = max(data_end, data_start + offset + (n_bytes or 0))
    if data_end > file_size:
        raise GGUFError(
            f"{path} is truncated: its tensors need {data_end:,} bytes, the file has {file_size:,} "
            f"({(data_end - file_size) / 2**20:.1f} MiB missing; an interrupted download?)"
        )
    return _Header(version, fields, tensors, file_size)


def split_parts(path: Path) -> List[Path]:
    """All parts of a split model (gguf-split naming) next to `path`; [path] for a single file."""
    match = SPLIT_NAME.match(path.name)
    if not match:
        return [path]
    count = int(match["count"])
    if int(match["no"]) < 1 or int(match["no"]) > count:
        return []
    return [path.with_name(f"{match['prefix']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]


def read_model_info(where: Union[str, Path]) -> ModelInfo:
    """Header metadata of a GGUF model (all parts of a split one); GGUFError says what is wrong."""
    path = user_path(where)
    parts = split_parts(path)
    if not parts:
        raise GGUFError(f"{path} is not a valid split model name (parts are numbered from 00001)")
    for part in parts:  # reading a FIFO or a device would never end
        if part.is_dir():
            raise GGUFError(f"{part} is a directory, not a GGUF file")
        if part.exists() and not part.is_file():
            raise GGUFError(f"{part} is not a regular file (a FIFO or a device)")
    missing = [p.name for p in parts if not p.exists()]
    if missing and path.exists():
        raise GGUFError(
            f"split model {parts[0].name} is incomplete: missing {', '.join(missing)} "
            f"({len(parts) - len(missing)} of {len(parts)} parts in {path.parent})"
        )
    headers = [_read_header(p) for p in parts]
    first = headers[0].fields
    declared = _int(first.get("split.count"))
    if declared is not None and declared != len(parts):
        raise GGUFError(
            f"{path} is one part of a {declared}-part split model, but its name does not say so "
            f"(gguf-split names the parts NAME-00001-of-{declared:05d}.gguf ...)"
        )
    info = _model_info(parts, headers, first, [t for h in headers for t in h.tensors])
    if info.block_count is not None and not 0 < info.block_count <= MAX_BLOCKS:
        raise GGUFError(f"{path} is corrupt: {info.architecture}.block_count is {info.block_count}")
    return info


def _int(value: Any) -> Optional[int]:
    if isinstance(value, list):  # per-layer values: the largest
        value = max((v for v in value if isinstance(v, (int, float))), default=None)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):  # a corrupt or crafted file: as if absent
        return None
    return int(value)


def _str(value: Any) -> Optional[str]:
    return value if isinstance(value, str) and value else None


def _model_info(parts: List[Path], headers: List[_Header], kv: Dict[str, Any], tensors: List[_Tensor]) -> ModelInfo:
    import gguf as gg

    arch = _str(kv.get("general.architecture"))

    def a(key: str) -> Any:
        return kv.get(f"{arch}.{key}")

    info = ModelInfo(path=str(parts[0]), files=[str(p) for p in parts], size_bytes=sum(h.file_size for h in headers))
    info.architecture, info.gguf_version, info.tensor_count = arch, headers[0].version, len(tensors)
    info.name = _str(kv.get("general.name")) or _str(kv.get("general.basename"))
    info.license = _str(kv.get("general.license")) or _str(kv.get("general.license.name"))
    info.has_chat_template = any(k.startswith("tokenizer.chat_template") for k in kv)
    declared = _int(kv.get("general.parameter_count")) or _int(kv.get("general.parameters"))
    info.parameters = declared or (sum(t.n_elements for t in tensors) or None)
    info.file_type = _int(kv.get("general.file_type"))
    info.quantization = _quant_label(info.file_type, tensors, gg)
    info.context_length, info.block_count = _int(a("context_length")), _int(a("block_count"))
    info.embedding_length, info.feed_forward_length = _int(a("embedding_length")), _int(a("feed_forward_length"))
    info.head_count, info.head_count_kv = _int(a("attention.head_count")), _int(a("attention.head_count_kv"))
    kv_heads = a("attention.head_count_kv")
    if isinstance(kv_heads, list) and all(isinstance(v, int) for v in kv_heads):
        info.kv_heads_per_layer = [int(v) for v in kv_heads]
    if info.head_count_kv is None:
        info.head_count_kv = info.head_count  # llama.cpp's default: no grouped-query attention
    default_head = info.embedding_length // info.head_count if info.embedding_length and info.head_count else None
    info.key_length = _int(a("attention.key_length")) or default_head
    info.value_length = _int(a("attention.value_length")) or default_head
    info.is_mla = _int(a("attention.key_length_mla")) is not None and _int(a("attention.value_length_mla")) is not None
    info.expert_count, info.expert_used_count = _int(a("expert_count")), _int(a("expert_used_count"))
    info.expert_feed_forward_length = _int(a("expert_feed_forward_length"))
    info.sliding_window = _int(a("attention.sliding_window")) or None
    pattern = a("attention.sliding_window_pattern")
    info.swa_pattern = [bool(v) for v in pattern] if isinstance(pattern, list) else _int(pattern)
    info.shared_kv_layers = _int(a("attention.shared_kv_layers"))
    tokens = kv.get("tokenizer.ggml.tokens")
    info.vocab_size = _int(a("vocab_size")) or (
        tokens.length if isinstance(tokens, _Array) else len(tokens) if isinstance(tokens, list) else None
    )
    _tensor_bytes(info, tensors)
    return info


def _quant_label(file_type: Optional[int], tensors: List[_Tensor], gg: Any) -> Optional[str]:
    name = {t.value: t.name for t in gg.LlamaFileType}.get(file_type, "GUESSED")
    if name != "GUESSED":  # a type newer than the installed gguf package, or none: the tensors say
        return name.removeprefix("MOSTLY_").removeprefix("ALL_")
    by_type: Counter = Counter()
    for t in tensors:
        by_type[t.type_name] += t.n_bytes or 0
    return by_type.most_common(1)[0][0] if by_type else None


def _tensor_bytes(info: ModelInfo, tensors: List[_Tensor]) -> None:
    layers: Dict[int, int] = {}
    for t in tensors:
        size = t.n_bytes or 0
        block = re.match(r"blk\.(\d{1,4})\.", t.name)  # a corrupt name must not make a huge list
        if block:
            layers[int(block[1])] = layers.get(int(block[1]), 0) + size
        elif t.name.startswith("token_embd"):
            info.input_bytes += size
        else:
            info.output_bytes += size
    n_layers = max(max(layers, default=-1) + 1, min(info.block_count or 0, MAX_BLOCKS))
    info.layer_bytes = [layers.get(i, 0) for i in range(n_layers)]
    info.output_tied = bool(tensors) and not any(t.name == "output.weight" for t in tensors)
