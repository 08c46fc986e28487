"""Output files, in one place: every path the user asks us to write (`--json-out`, `--csv`, `--jsonl`,
`monitor --json-out/--jsonl`, `plot --out`, and later outputs) is resolved the same way (`~` expanded
once) and checked before any work starts; a file is replaced atomically (temp file, rename) and only
when the target is a regular file — never a directory, a device, a FIFO or a socket; a write that fails
(disk full, I/O error) loses only that file, leaves no temp file behind and is reported in one line."""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, Dict, List, Optional, Sequence, Tuple, Union

from .utils import UserError


@dataclass(frozen=True)
class OutputPath:
    flag: str  # the flag that named it, for messages
    path: Path  # `~` expanded, absolute

    def __str__(self) -> str:
        return str(self.path)


class OutputFailed(Exception):
    """Writing one output failed; the message is one line naming the flag and the file."""


def _reason(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()


def output_path(text: Optional[str], flag: str) -> Optional[OutputPath]:
    """Validate a path the user gave for an output; None stays None. Raises UserError (exit 2)."""
    if text is None:
        return None
    if not text.strip():
        raise UserError(f"{flag}: the path is empty")
    path = Path(os.path.abspath(os.path.expanduser(text)))
    try:
        st = os.stat(path)  # follows symlinks: what matters is what would be written
    except FileNotFoundError:
        st = None
    except NotADirectoryError:
        raise UserError(f"{flag}: cannot write {path}: {_first_non_dir(path)} is not a directory") from None
    except OSError as exc:
        raise UserError(f"{flag}: cannot use {path}: {_reason(exc)}") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise UserError(f"{flag}: {path} is a directory; give a file name")
        if not stat.S_ISREG(st.st_mode):
            raise UserError(f"{flag}: {path} exists and is not a regular file (a device, FIFO or socket)")
        if not os.access(path, os.W_OK):
            raise UserError(f"{flag}: {path} is not writable")
    parent = Path(os.path.realpath(path)).parent
    if not parent.exists():
        raise UserError(f"{flag}: cannot write {path}: directory {parent} does not exist")
    if not parent.is_dir():
        raise UserError(f"{flag}: cannot write {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{flag}: cannot write {path}: directory {parent} is not writable")
    return OutputPath(flag, path)


def _first_non_dir(path: Path) -> Path:
    for parent in reversed(path.parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return path.parent


def check_distinct(*outputs: Optional[OutputPath], inputs: Sequence[Tuple[str, Union[str, Path, None]]] = ()) -> None:
    """Two outputs may not be the same file (one would overwrite the other), nor may an output be one of
    the files the command reads (`inputs`: (what it is, its path), e.g. ("--dataset", path))."""
    seen: Dict[str, str] = {}
    for what, path in inputs:
        if path is not None:
            seen.setdefault(os.path.realpath(os.path.expanduser(str(path))), what)
    readers = set(seen)
    for out in outputs:
        if out is None:
            continue
        key = os.path.realpath(out.path)
        if key in readers:
            raise UserError(f"{out.flag} {out.path} is the {seen[key]} file it reads; give another file name")
        if key in seen:
            raise UserError(f"{seen[key]} and {out.flag} name the same file: {out.path}")
        seen[key] = out.flag


# What our own files carry near their start: a file of a name we made up is replaced only if it holds this.
PNG_MARKER = b"Software\x00llama-bench"  # the PNG text chunk matplotlib writes from savefig(metadata=...)
PNG_METADATA = {"Software": "llama-bench"}
HTML_MARKER = b"<title>llama-bench report"  # every page report has written starts so, older ones too


def derived_output(text: str, flag: str, marker: bytes) -> OutputPath:
    """An output whose name we made up (from an input's name or a folder): checked like output_path, and a
    file already there is replaced only when we wrote it (`marker` in its first bytes). A user's file that
    happens to have that name is never overwritten."""
    out = output_path(text, flag)
    assert out is not None
    try:
        with open(out.path, "rb") as fh:
            head = fh.read(8192)
    except FileNotFoundError:
        return out
    except OSError as exc:
        raise UserError(f"{flag}: cannot use {out.path}: {_reason(exc)}") from None
    if marker not in head:
        raise UserError(f"{out.path} exists and was not written by llama-bench: give {flag} to choose the file")
    return out


def write_atomic(out: OutputPath, write: Callable[[IO], None], binary: bool = False) -> None:
    """Write the file through a temp file in the same directory and rename it over the target.

    Raises OutputFailed (one line) when the target is no longer a regular file or the write fails;
    the temp file is removed either way, and an existing target is left as it was."""
    target = Path(os.path.realpath(out.path))  # replace the file a symlink points to, not the symlink
    try:
        old = os.stat(target)
    except FileNotFoundError:
        old = None
    except OSError as exc:
        raise OutputFailed(f"{out.flag}: cannot write {out.path}: {_reason(exc)}") from None
    if old is not None and not stat.S_ISREG(old.st_mode):
        raise OutputFailed(f"{out.flag}: {out.path} is not a regular file any more; nothing written")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise OutputFailed(f"{out.flag}: cannot write {out.path}: {_reason(exc)}") from None
    try:
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, (old.st_mode & 0o7777) if old is not None else (0o666 & ~_umask()))
        os.replace(tmp, target)
    except OSError as exc:
        _unlink(tmp)
        raise OutputFailed(f"{out.flag}: could not write {out.path}: {_reason(exc)}") from None
    except BaseException:
        _unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


@dataclass
class AppendFile:
    """A file written line by line as work finishes (JSONL records, monitor samples), flushed each time.

    A failed write (disk full) stops writing this file only: the error is kept in `failed` and the run
    goes on; whatever was flushed before stays."""

    out: OutputPath
    failed: Optional[str] = None
    _fh: Optional[IO[str]] = field(default=None, repr=False)

    def open(self) -> "AppendFile":
        try:
            self._fh = open(self.out.path, "a", encoding="utf-8")
        except OSError as exc:
            raise UserError(f"{self.out.flag}: cannot open {self.out.path}: {_reason(exc)}") from None
        return self

    def write_line(self, line: str) -> None:
        if self._fh is None or self.failed:
            return
        try:
            self._fh.write(line + "\n")
            self._fh.flush()
        except OSError as exc:
            self.failed = f"{self.out.flag}: could not write {self.out.path}: {_reason(exc)} (records up to here kept)"
            self._close()

    def _close(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            try:
                fh.close()
            except OSError as exc:
                self.failed = self.failed or f"{self.out.flag}: could not write {self.out.path}: {_reason(exc)}"

    def close(self) -> None:
        self._close()


def report_failures(prog: str, failures: List[str]) -> None:
    """One line per output that could not be written."""
    for line in failures:
        try:
            print(f"{prog}: error: {line}", file=sys.stderr, flush=True)
        except (OSError, ValueError):
            pass
