"""The user's models: the folders we look in, the GGUF files there, and `--model NAME` resolution.

Folders, in order: --model-dir flags, LLAMA_MODEL_DIR (environment or .env, os.pathsep-separated),
./models and the repo's models/, the huggingface_hub cache (where this llama.cpp's `-hf` downloads go
too, unless LLAMA_CACHE is set) and llama.cpp's own cache (LLAMA_CACHE, else the older flat
~/.cache/llama.cpp). Hub caches keep files as blobs symlinked from snapshots/<revision>/: we list the
snapshot paths and count each real file once.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

from ..settings import REPO_DIR, setting
from ..utils import UserError, user_path
from .gguf import SPLIT_NAME, GGUFError, ModelInfo, read_model_info

MAX_DEPTH = 6  # hub layout: models--org--name/snapshots/<rev>/<subfolder>/file.gguf
SKIPPED_DIRS = {"blobs", "__pycache__", "node_modules"}


@dataclass
class CatalogEntry:
    """One model found on disk: its header, or why it could not be read (the listing goes on)."""

    path: str  # the first part of a split model
    size_bytes: int  # all parts
    folder: str  # the model folder it was found under
    files: List[str] = field(default_factory=list)
    info: Optional[ModelInfo] = None
    error: Optional[str] = None
    is_mmproj: bool = False  # a multimodal projector (--mmproj), not a model to serve on its own

    @property
    def name(self) -> str:
        return Path(self.path).name


def hf_hub_cache() -> Path:
    """huggingface_hub's cache folder (its own constant when installed, else the same environment rules)."""
    try:
        from huggingface_hub import constants

        return Path(constants.HF_HUB_CACHE)
    except Exception:  # not installed (or broken): follow its documented environment variables
        pass
    for var, tail in (("HF_HUB_CACHE", ""), ("HUGGINGFACE_HUB_CACHE", ""), ("HF_HOME", "hub")):
        value = os.environ.get(var)
        if value:
            return user_path(value) / tail
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def llama_cpp_cache() -> Path:
    """llama.cpp's cache folder: LLAMA_CACHE, else ~/.cache/llama.cpp (~/Library/Caches on macOS)."""
    value = os.environ.get("LLAMA_CACHE")
    if value:
        return user_path(value)
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "llama.cpp"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "llama.cpp"


def model_dirs(extra_dirs: Sequence[Union[str, Path]] = ()) -> List[Path]:
    """The folders to look in, existing ones only, first occurrence wins; a --model-dir must exist."""
    candidates: List[Path] = []
    for d in extra_dirs:
        path = user_path(d)
        if not path.is_dir():
            raise UserError(f"--model-dir {d}: no such folder")
        candidates.append(path)
    for d in (setting("LLAMA_MODEL_DIR") or "").split(os.pathsep):
        if d.strip():
            candidates.append(user_path(d.strip()))
    candidates += [Path.cwd() / "models", REPO_DIR / "models", hf_hub_cache(), llama_cpp_cache()]
    seen, dirs = set(), []
    for path in candidates:
        try:
            real = path.resolve()
        except OSError:
            continue
        if real in seen or not path.is_dir():
            continue
        seen.add(real)
        dirs.append(path.absolute())
    return dirs


def _walk(root: Path) -> Iterator[Path]:
    """*.gguf files under root, sorted, following folder symlinks once; hidden folders and blobs skipped."""
    visited = set()

    def walk(folder: Path, depth: int) -> Iterator[Path]:
        try:
            real = folder.resolve()
            if real in visited:
                return
            visited.add(real)
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            try:
                if entry.is_dir():
                    if depth < MAX_DEPTH and not entry.name.startswith(".") and entry.name not in SKIPPED_DIRS:
                        yield from walk(Path(entry.path), depth + 1)
                elif entry.name.lower().endswith(".gguf") and entry.is_file():
                    yield Path(entry.path)
            except OSError:
                continue

    yield from walk(root, 0)


def _files(dirs: Sequence[Path]) -> List[Tuple[Path, Path, List[Path]]]:
    """(folder, first part, all parts) per model, each real file once, split parts grouped."""
    seen = set()
    groups: Dict[Tuple[str, str, str], Tuple[Path, Path, List[Path]]] = {}
    found: List[Tuple[Path, Path, List[Path]]] = []
    for folder in dirs:
        for path in _walk(folder):
            try:
                real = os.path.realpath(path)
            except OSError:
                continue
            if real in seen:
                continue
            seen.add(real)
            match = SPLIT_NAME.match(path.name)
            if not match:
                found.append((folder, path, [path]))
                continue
            key = (str(path.parent), match["prefix"], match["count"])
            if key not in groups:
                count = int(match["count"])
                first = path.with_name(f"{match['prefix']}-00001-of-{count:05d}.gguf")
                groups[key] = (folder, first, [])
                found.append(groups[key])
            groups[key][2].append(path)
    return found


def is_mmproj(path: Union[str, Path], info: Optional[ModelInfo] = None) -> bool:
    """A multimodal projector: named mmproj-*.gguf by convention, or of architecture clip."""
    return "mmproj" in Path(path).name.lower() or (info is not None and info.architecture == "clip")


def find_models(dirs: Sequence[Path]) -> List[CatalogEntry]:
    """Every GGUF model in `dirs` with its header; files that cannot be read are listed with the reason."""
    entries = []
    for folder, first, parts in _files(dirs):
        size = 0
        for p in parts:
            try:
                size += p.stat().st_size
            except OSError:
                pass
        entry = CatalogEntry(str(first), size, str(folder), files=[str(p) for p in sorted(parts)])
        try:
            entry.info = read_model_info(first if first.exists() else parts[0])
            entry.files, entry.size_bytes = entry.info.files, entry.info.size_bytes
        except GGUFError as exc:
            entry.error = str(exc)
        except Exception as exc:  # a listing must survive any file: report it, go on
            entry.error = f"{first}: unreadable ({type(exc).__name__}: {exc})"
        entry.is_mmproj = is_mmproj(first, entry.info)
        entries.append(entry)
    return entries


def _stem(path: Path) -> str:
    match = SPLIT_NAME.match(path.name)
    name = match["prefix"] if match else path.name
    return name[: -len(".gguf")] if name.lower().endswith(".gguf") else name


def _listing(paths: Sequence[Path], limit: int = 8) -> str:
    shown = ", ".join(str(p) for p in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def resolve_model_name(text: str, dirs: Sequence[Path]) -> str:
    """A model file from --model: an existing path, else a unique name match in the model folders.

    Case-insensitive tiers, the first tier with matches decides: the file name, then its stem (without
    .gguf or the split suffix), then a substring of the file name. Several matches in that tier: a
    UserError listing them; none in any: a UserError naming the folders searched.
    """
    path = user_path(text)
    if path.is_file():
        return str(path.absolute())
    if os.sep in text or (os.altsep and os.altsep in text):
        raise UserError(f"model file not found: {path}")
    wanted = text.strip().lower()
    if not wanted:
        raise UserError("--model is empty: pass a GGUF file or a model name")
    models = [first for _, first, _ in _files(dirs)]
    if "mmproj" not in wanted:
        models = [m for m in models if not is_mmproj(m)]
    tiers = (
        [m for m in models if m.name.lower() == wanted],
        [m for m in models if _stem(m).lower() == wanted],
        [m for m in models if wanted in m.name.lower()],
    )
    for matches in tiers:
        if len(matches) == 1:
            return str(matches[0])
        if matches:
            raise UserError(
                f"model name '{text}' is ambiguous, {len(matches)} models match: {_listing(matches)} "
                "(pass a longer name or the path)"
            )
    searched = ", ".join(str(d) for d in dirs) or "no model folder exists"
    raise UserError(
        f"no model matches '{text}': not a file, and no GGUF file name contains it "
        f"(searched {searched}; add folders with --model-dir or LLAMA_MODEL_DIR)"
    )
