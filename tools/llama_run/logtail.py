"""The last lines of the server's log, read incrementally, cleaned of colour and control codes."""

from __future__ import annotations

import os
import re
from collections import deque
from pathlib import Path
from typing import Deque, List, Optional, Union

LOG_LINES = 8
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def clean_log_line(line: str) -> str:
    """Strip colour codes and control characters that would break the layout."""
    line = line.rstrip("\r\n").rsplit("\r", 1)[-1]  # progress output rewrites the line: keep the final state
    return _CONTROL.sub("", _ANSI.sub("", line).expandtabs(4)).rstrip()


class LogTail:
    """The last lines of a growing log file, read incrementally from a remembered offset."""

    def __init__(self, path: Optional[Union[str, Path]], lines: int = LOG_LINES, max_read: int = 65536) -> None:
        self.path = str(path) if path else None
        self.lines: Deque[str] = deque(maxlen=lines)
        self.max_read = max_read
        self.offset = 0
        self.version = 0  # bumped whenever lines change, so the caller can skip redraws
        self._partial = b""

    def poll(self) -> List[str]:
        if self.path is None:
            return list(self.lines)
        try:
            size = os.path.getsize(self.path)
            if size < self.offset:  # truncated or replaced: start over
                self.offset, self._partial = 0, b""
                self.lines.clear()
            if size > self.offset:
                skip = size - self.offset > self.max_read  # a huge burst: only its end matters
                start = size - self.max_read if skip else self.offset
                with open(self.path, "rb") as fh:
                    fh.seek(start)
                    data = fh.read(size - start)
                self.offset = start + len(data)
                if skip:
                    data, self._partial = data.split(b"\n", 1)[-1], b""
                *complete, self._partial = (self._partial + data).split(b"\n")
                for raw in complete:
                    self.lines.append(clean_log_line(raw.decode("utf-8", "replace")))
                self.version += 1
        except OSError:
            pass  # the log is informative only; a vanished file must not stop the dashboard
        return list(self.lines)
