"""The lifecycle of a llama-server we start: own session and process group, a parent-death signal,
real readiness, and stop (SIGTERM to the group, grace period, SIGKILL, always reaped)."""

from __future__ import annotations

import os
import signal
import time
from collections import deque
from pathlib import Path
from typing import Callable, List, Optional

from .. import stopping
from ..endpoint import Readiness, check_ready
from ..http import HttpClient, HttpError
from ..settings import state_subdir
from ..utils import ExitStatus, UserError
from . import registry
from .child import OwnedChild
from .config import ServerConfig, build_command
from .ports import check_bindable


class ServerStartError(UserError):
    """llama-server exited or never became ready."""


def log_tail(path: Path, lines: int = 12) -> List[str]:
    try:
        with path.open("r", encoding="utf-8", errors="replace") as fh:
            return [line.rstrip("\n") for line in deque(fh, maxlen=lines)]
    except OSError:
        return []


def explain_exit(code: int, log_path: Path) -> str:
    """One message for a server that exited: the exit code plus the log lines that say why."""
    tail = log_tail(log_path, 200)
    errors = [line for line in tail if "failed to load model" in line or "error" in line.lower()]
    shown = errors[-6:] if errors else tail[-8:]
    details = "\n".join("    " + line for line in shown)
    return f"llama-server exited with code {code} during start-up (log: {log_path})" + (
        f"\n{details}" if details else ""
    )


class ManagedServer(OwnedChild):
    """One llama-server we start and own."""

    def __init__(self, cfg: ServerConfig, allow_multi_server: bool = False, public_port: Optional[int] = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.allow_multi_server = allow_multi_server
        self.public_port = public_port  # where clients reach it when a token-meter proxy sits in front
        self.detached = False
        self.started_at: Optional[float] = None

    @property
    def base_url(self) -> str:
        return self.cfg.base_url

    @property
    def api_key(self) -> Optional[str]:
        return self.cfg.client_api_key

    @property
    def command(self) -> List[str]:
        return build_command(self.cfg)

    def check_can_start(self) -> None:
        from .procs import find_servers

        check_bindable(self.cfg.host, self.cfg.port)
        if not self.allow_multi_server:
            running = find_servers()
            if running:
                first = running[0]
                raise UserError(
                    f"a llama-server is already running (pid {first.pid}, port {first.port}); stop it with "
                    "./llama-run stop-all, reuse it, or pass --allow-multi-server"
                )

    def start(self, die_with_us: bool = True) -> None:
        """Start the server; unless `die_with_us` is False (--detach), it is killed if we die: the
        parent-death signal for the direct child, a watchdog for its whole process group."""
        self.check_can_start()
        logs = state_subdir("logs")
        log_path = logs / f"llama-server-{self.cfg.port}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        cmd = self.command
        self.spawn(cmd, log_path, "server", die_signal=signal.SIGKILL if die_with_us else None)
        assert self.proc is not None
        self.started_at = time.time()
        try:
            registry.register(
                registry.ServerEntry(
                    pid=self.proc.pid,
                    create_time=registry.process_create_time(self.proc.pid) or self.started_at,
                    host=self.cfg.host,
                    port=self.cfg.port,
                    cmdline=cmd,
                    model=self.cfg.model,
                    log_path=str(self.log_path),
                    started_at=self.started_at,
                    owner_pid=os.getpid(),
                    public_port=self.public_port,
                )
            )
        except (OSError, UserError) as exc:
            # A server nobody can find again (ps, stop-all) must not keep running.
            pid = self.proc.pid
            self.stop(grace=5.0)
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise UserError(
                f"could not record the server (pid {pid}) in the registry ({why}); stopped it again. Free "
                "the state directory or pick another with LLAMA_STUDIO_STATE_DIR=DIR",
                ExitStatus.FAILED,
            ) from None

    def wait_ready(self, timeout: float, on_wait: Optional[Callable[[float], None]] = None) -> float:
        """Block until the server is ready (endpoint.check_ready); returns seconds waited."""
        assert self.proc is not None and self.log_path is not None
        client = HttpClient(self.base_url, api_key=self.api_key, timeout=2.0)
        start = time.monotonic()
        try:
            while True:
                stopping.check()
                code = self.proc.poll()
                if code is not None:
                    raise ServerStartError(explain_exit(code, self.log_path), ExitStatus.FAILED)
                check = check_ready(client)
                if check.ready:
                    return time.monotonic() - start
                if check.state is Readiness.UNAUTHORIZED:
                    raise ServerStartError(
                        f"llama-server at {self.base_url} refuses our API key ({check.detail}); pass the key the "
                        "server uses with --api-key",
                        ExitStatus.FAILED,
                    )
                waited = time.monotonic() - start
                if waited > timeout:
                    raise ServerStartError(
                        f"llama-server did not become ready within {timeout:g} s (still loading the model?); "
                        f"raise --startup-timeout or check the log: {self.log_path}",
                        ExitStatus.FAILED,
                    )
                if on_wait:
                    on_wait(waited)
                stopping.wait(0.1)
        finally:
            client.close()

    def props(self) -> object:
        """/props as JSON (None when it does not answer)."""
        client = HttpClient(self.base_url, api_key=self.api_key, timeout=3.0)
        try:
            return client.get_json("/props")
        except HttpError:  # informative only
            return None
        finally:
            client.close()

    def log_lines(self, lines: int = 400) -> List[str]:
        return log_tail(self.log_path, lines) if self.log_path else []

    def detach(self) -> None:
        """Leave the server running after we exit (it already lives in its own session)."""
        self.detached = True
        if self.proc:
            registry.mark_detached(self.proc.pid)
        self.close_log()

    def stop(self, grace: float = 10.0) -> Optional[int]:
        """SIGTERM the process group, wait `grace` s, then SIGKILL (OwnedChild.stop_group); returns the
        exit code, and forgets the server (registry, watchdog)."""
        if self.proc is None or self.detached:
            return None
        code = self.stop_group(grace)
        registry.unregister(self.proc.pid)
        return code
