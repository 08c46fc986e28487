"""What a live view (TUI or plain lines) gets from the runner: the server, the sampling periods, when
to stop — and why it stopped. The UIs depend on this module, never on the runner."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from tools.llama_bench.server.managed import ManagedServer
from tools.llama_bench.utils import StrEnum

if TYPE_CHECKING:
    from tools.llama_bench.models.gguf import ModelInfo


class StopReason(StrEnum):
    USER = "user"  # q, Ctrl-C, SIGTERM, SIGHUP
    DURATION = "duration"  # --duration is over
    SERVER_EXIT = "server-exit"  # the server exited on its own
    PROXY_EXIT = "proxy-exit"  # the token-meter proxy exited on its own


@dataclass
class Session:
    """What a UI loop needs: the server, where it logs, and when to stop."""

    server: ManagedServer
    interval: float
    stats_interval: float
    deadline: Optional[float]  # time.monotonic() at which --duration ends
    model: Optional["ModelInfo"] = None  # what the GGUF header says (None in router mode)
    metrics_url: Optional[str] = None  # where /metrics and /slots are read (default: the server)
    proxy_url: Optional[str] = None  # the token-meter proxy in front of the server (clients use this)
    companion: Optional[Any] = None  # a process that must keep running with the server (the proxy): .poll()

    def exited(self) -> Optional[StopReason]:
        """Why the live view must stop now, when a process it depends on has exited."""
        if self.server.poll() is not None:
            return StopReason.SERVER_EXIT
        if self.companion is not None and self.companion.poll() is not None:
            return StopReason.PROXY_EXIT
        return None

    @property
    def public_url(self) -> str:
        return self.proxy_url or self.server.base_url

    @property
    def monitor_url(self) -> str:
        return self.metrics_url or self.server.base_url

    def duration_over(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline
