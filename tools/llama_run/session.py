"""What a live view (TUI or plain lines) gets from the runner: the server, the sampling periods, when
to stop — and why it stopped. The UIs depend on this module, never on the runner."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

from tools.llama_bench.server.managed import ManagedServer
from tools.llama_bench.utils import StrEnum


class StopReason(StrEnum):
    USER = "user"  # q, Ctrl-C, SIGTERM, SIGHUP
    DURATION = "duration"  # --duration is over
    SERVER_EXIT = "server-exit"  # the server exited on its own


@dataclass
class Session:
    """What a UI loop needs: the server, where it logs, and when to stop."""

    server: ManagedServer
    interval: float
    stats_interval: float
    deadline: Optional[float]  # time.monotonic() at which --duration ends

    def duration_over(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline
