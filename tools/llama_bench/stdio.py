"""Standard output that a closed terminal, a broken pipe (`| head -1`) or a full disk cannot turn into a
traceback or an aborted run: the first failed write marks stdout as lost, later writes are dropped, the
command finishes its work (measures, writes its files, stops its servers) and exits with
ExitStatus.OUTPUT_ERROR and one line on stderr."""

from __future__ import annotations

import io
import os
import sys
from typing import Any, Optional, TextIO


class GuardedStream(io.TextIOBase):
    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.lost: Optional[str] = None

    def _lose(self, exc: BaseException) -> None:
        if self.lost is None:
            self.lost = _describe(exc)
        # Point the descriptor at /dev/null so the interpreter's own flush at exit cannot fail again.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass

    def write(self, text: str) -> int:
        if self.lost is None:
            try:
                self._stream.write(text)
            except (OSError, ValueError) as exc:
                self._lose(exc)
        return len(text)

    def flush(self) -> None:
        if self.lost is None:
            try:
                self._stream.flush()
            except (OSError, ValueError) as exc:
                self._lose(exc)

    def isatty(self) -> bool:
        try:
            return self.lost is None and self._stream.isatty()
        except (OSError, ValueError):
            return False

    def fileno(self) -> int:
        return self._stream.fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._stream, "encoding", None) or "utf-8"

    @property
    def errors(self) -> Optional[str]:  # type: ignore[override]
        return getattr(self._stream, "errors", None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BrokenPipeError):
        return "the reader closed the pipe"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def _reopen_closed_descriptors() -> Optional[str]:
    """A command started with `>&-` has no fd 1: the next file we open would become our stdout. Put
    /dev/null there first (what daemons do) and remember that stdout was closed."""
    closed = None
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            devnull = os.open(os.devnull, os.O_RDWR)
            if devnull != fd:
                os.dup2(devnull, fd)
                os.close(devnull)
            if fd == 1:
                closed = "standard output was closed"
    return closed


def install() -> None:
    """Guard sys.stdout for the rest of the process (idempotent)."""
    if isinstance(sys.stdout, GuardedStream):
        return
    closed = _reopen_closed_descriptors()
    if sys.stdout is None:  # Python found fd 1 closed at start-up
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", line_buffering=True)
    if sys.stderr is None:
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8", line_buffering=True)
    for stream in (sys.stdout, sys.stderr):
        # Names from elsewhere (a model path, a process's command line) may not be valid text: shown
        # escaped (\udcff), never a UnicodeEncodeError, never bytes that are not the terminal's encoding.
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    guarded = GuardedStream(sys.stdout)
    guarded.lost = closed
    sys.stdout = guarded


def stdout_lost() -> Optional[str]:
    """Why standard output stopped working, or None while it works."""
    return sys.stdout.lost if isinstance(sys.stdout, GuardedStream) else None


def final(line: str) -> None:
    """A line that must reach the user: on stdout, and on stderr too once stdout is lost."""
    print(line, flush=True)
    if stdout_lost():
        try:
            print(line, file=sys.stderr, flush=True)
        except (OSError, ValueError):
            pass
