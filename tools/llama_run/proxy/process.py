"""A proxy we start as a child (`python -m tools.llama_run.proxy`) and own: its own session and process
group, a parent-death signal, readiness = its /proxy/health answering with its pid, and stop = SIGTERM,
grace, SIGKILL, always reaped. It never outlives us: the kernel sends it SIGTERM when we die, even by
SIGKILL (Linux), and it also stops by itself when it finds it has been re-parented (everywhere).

SIGTERM rather than SIGKILL as the parent-death signal: the proxy then still writes its history.
PR_SET_PDEATHSIG fires when the *thread* that started the child ends: call `start` from the main thread.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import time
from pathlib import Path
from typing import List, Optional

from tools.llama_bench.endpoint import url_for
from tools.llama_bench.server.child import OwnedChild
from tools.llama_bench.server.managed import log_tail
from tools.llama_bench.settings import REPO_DIR, state_subdir
from tools.llama_bench.utils import ExitStatus, UserError

from .args import API_KEY_ENV, UPSTREAM_KEY_ENV
from .config import ProxyConfig


class ProxyStartError(UserError):
    """The proxy exited during start-up or never answered /proxy/health."""


class ManagedProxy(OwnedChild):
    """One proxy we start and own. `config.parent_pid` is set to our pid when the child starts."""

    def __init__(self, config: ProxyConfig, log_path: Optional[Path] = None, python: Optional[str] = None) -> None:
        super().__init__()
        self.config = config
        self.python = python or sys.executable
        self.log_path = log_path

    @property
    def base_url(self) -> str:
        return url_for(self.config.host, self.config.port)

    @property
    def command(self) -> List[str]:
        return [self.python, "-m", "tools.llama_run.proxy", *self.config.argv()]

    def start(self) -> None:
        """Start the child (checks that the port is free first); wait_ready() tells when it answers."""
        self.config.check()
        self.config = dataclasses.replace(self.config, parent_pid=os.getpid())
        log_path = self.log_path
        if log_path is None:
            logs = state_subdir("logs")
            stamp = time.strftime("%Y%m%d-%H%M%S")
            log_path = logs / f"llama-proxy-{self.config.port}-{stamp}-{os.getpid()}.log"
        env = dict(os.environ)
        env.pop(API_KEY_ENV, None)
        env.pop(UPSTREAM_KEY_ENV, None)
        if self.config.api_key:
            env[API_KEY_ENV] = self.config.api_key
        if self.config.upstream_api_key:
            env[UPSTREAM_KEY_ENV] = self.config.upstream_api_key
        env["PYTHONPATH"] = os.pathsep.join([str(REPO_DIR)] + [p for p in [env.get("PYTHONPATH")] if p])
        # SIGTERM rather than SIGKILL when we die: the proxy then still writes its history.
        self.spawn(self.command, log_path, "proxy", die_signal=signal.SIGTERM, env=env, cwd=str(REPO_DIR))

    def wait_ready(self, timeout: float = 30.0) -> float:
        """Block until /proxy/health answers with the child's pid; seconds waited."""
        from tools.llama_bench.http import HttpClient, HttpError

        assert self.proc is not None and self.log_path is not None
        client = HttpClient(self.base_url, timeout=1.0)
        start = time.monotonic()
        try:
            while True:
                code = self.proc.poll()
                if code is not None:
                    tail = "\n".join("    " + line for line in log_tail(self.log_path, 8))
                    raise ProxyStartError(
                        f"the proxy exited with code {code} during start-up (log: {self.log_path})"
                        + (f"\n{tail}" if tail else ""),
                        ExitStatus.FAILED,
                    )
                try:
                    health = client.get_json("/proxy/health", timeout=1.0)
                except HttpError:
                    health = None
                if isinstance(health, dict) and health.get("pid") == self.proc.pid:
                    return time.monotonic() - start
                if time.monotonic() - start > timeout:
                    raise ProxyStartError(
                        f"the proxy did not answer on {self.base_url} within {timeout:g} s (log: {self.log_path})",
                        ExitStatus.FAILED,
                    )
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self, grace: float = 5.0) -> Optional[int]:
        """SIGTERM the process group, wait `grace` s, then SIGKILL; returns the exit code."""
        return self.stop_group(grace)
