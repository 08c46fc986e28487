"""llama.cpp's log lines."""

from __future__ import annotations

import sys
import time
from typing import Optional, TextIO


class Log:
    """llama.cpp's log format: `M.SS.mmm.uuu L component func: message`, on stderr (and --log-file)."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.file: Optional[TextIO] = None

    def stamp(self) -> str:
        us = int((time.monotonic() - self.t0) * 1e6)
        minutes, us = divmod(us, 60_000_000)
        seconds, us = divmod(us, 1_000_000)
        return f"{minutes}.{seconds:02d}.{us // 1000:03d}.{us % 1000:03d}"

    def line(self, level: str, text: str) -> None:
        out = f"{self.stamp()} {level} {text}\n"
        for stream in (sys.stderr, self.file):
            if stream is None:
                continue
            try:
                stream.write(out)
                stream.flush()
            except (OSError, ValueError):
                pass  # a closed pipe or file must not take the server down

    def srv(self, level: str, func: str, msg: str) -> None:
        self.line(level, f"srv  {func:>12.12}: {msg}")

    def slot(self, level: str, func: str, slot_id: int, task: int, msg: str) -> None:
        self.line(level, f"slot {func:>12.12}: id {slot_id:>2} | task {task} | {msg}")
