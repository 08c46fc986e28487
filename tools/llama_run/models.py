"""`llama-run models`: every GGUF in the model folders and download caches, with what its header says."""

from __future__ import annotations

import json
import os
from typing import List, Sequence

from tools.llama_bench.models.catalog import CatalogEntry, find_models, model_dirs
from tools.llama_bench.models.gguf import fmt_count
from tools.llama_bench.utils import ExitStatus, fmt_bytes


def _row(entry: CatalogEntry) -> List[str]:
    info = entry.info
    if info is None:
        return [entry.name, fmt_bytes(entry.size_bytes), "-", "-", "-", "-", f"unreadable: {entry.error}"]
    kind = "projector" if entry.is_mmproj else ""
    return [
        entry.name,
        fmt_bytes(entry.size_bytes),
        info.architecture or "-",
        fmt_count(info.parameters),
        info.quantization or "-",
        str(info.context_length or "-"),
        kind or os.path.dirname(entry.path),
    ]


def list_models(extra_dirs: Sequence[str], as_json: bool = False) -> int:
    dirs = model_dirs(extra_dirs)
    entries = find_models(dirs)
    if as_json:
        print(json.dumps([_as_dict(e) for e in entries], indent=2))
        return ExitStatus.OK
    if not entries:
        looked = ", ".join(str(d) for d in dirs) or "no model folder exists"
        print(f"No GGUF models found (looked in: {looked}).")
        return ExitStatus.OK
    header = ["MODEL", "SIZE", "ARCH", "PARAMS", "QUANT", "CTX", "WHERE"]
    rows = [header] + [_row(e) for e in entries]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)) + "  " + r[-1])
    return ExitStatus.OK


def _as_dict(entry: CatalogEntry) -> dict:
    return {
        "name": entry.name,
        "path": entry.path,
        "files": entry.files,
        "size_bytes": entry.size_bytes,
        "folder": entry.folder,
        "mmproj": entry.is_mmproj,
        "info": entry.info.to_dict() if entry.info else None,
        "error": entry.error,
    }
