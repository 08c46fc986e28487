"""A proxy we start as a child (`python -m tools.llama_run.proxy`) and own: its own session and process
group, a parent-death signal, readiness = its /proxy/health answering with its pid, and stop = SIGTERM,
grace, SIGKILL, always reaped. It never outlives us: the kernel sends it SIGTERM when we die, even by
SIGKILL (Linux), and it also stops by itself when it finds it has been re-parented (everywhere).

SIGTERM rather than SIGKILL as the parent-death signal: the proxy then still writes its history.
PR_SET_PDEATHSIG fires when the *thread* that started the child ends: call `start` from the main thread.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Callable, List, Optional

from tools.llama_bench.endpoint import url_for
from tools.llama_bench.server.managed import log_tail
from tools.llama_bench.settings import REPO_DIR, state_subdir
from tools.llama_bench.utils import ExitStatus, UserError

from .args import API_KEY_ENV, UPSTREAM_KEY_ENV
from .config import ProxyConfig


class ProxyStartError(UserError):
    """The proxy exited during start-up or never answered /proxy/health."""


def _die_with_parent(parent: int) -> Callable[[], None]:
    def preexec() -> None:
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
            except (OSError, AttributeError):
                pass
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return preexec


class ManagedProxy:
    """One proxy we start and own. `config.parent_pid` is set to our pid when the child starts."""

    def __init__(self, config: ProxyConfig, log_path: Optional[Path] = None, python: Optional[str] = None) -> None:
        self.config = config
        self.python = python or sys.executable
        self.log_path = log_path
        self.proc: Optional[subprocess.Popen] = None
        self._log_fh: Optional[IO[bytes]] = None

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None

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
        if self.log_path is None:
            logs = state_subdir("logs")
            stamp = time.strftime("%Y%m%d-%H%M%S")
            self.log_path = logs / f"llama-proxy-{self.config.port}-{stamp}-{os.getpid()}.log"
        env = dict(os.environ)
        env.pop(API_KEY_ENV, None)
        env.pop(UPSTREAM_KEY_ENV, None)
        if self.config.api_key:
            env[API_KEY_ENV] = self.config.api_key
        if self.config.upstream_api_key:
            env[UPSTREAM_KEY_ENV] = self.config.upstream_api_key
        env["PYTHONPATH"] = os.pathsep.join([str(REPO_DIR)] + [p for p in [env.get("PYTHONPATH")] if p])
        try:
            self._log_fh = open(self.log_path, "ab")
        except OSError as exc:
            raise UserError(
                f"cannot create the proxy log {self.log_path}: {(exc.strerror or str(exc)).lower()}"
            ) from None
        try:
            self.proc = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=self._log_fh,
                stderr=subprocess.STDOUT,
                cwd=str(REPO_DIR),
                env=env,
                start_new_session=True,  # its own process group: a terminal's Ctrl-C reaches us, and we stop it
                preexec_fn=_die_with_parent(os.getpid()),
            )
        except OSError as exc:
            self._close_log()
            raise UserError(f"cannot start the proxy ({self.python}): {exc.strerror}") from exc

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

    def poll(self) -> Optional[int]:
        return self.proc.poll() if self.proc else None

    def stop(self, grace: float = 5.0) -> Optional[int]:
        """SIGTERM the process group, wait `grace` s, then SIGKILL; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.proc.wait()
        self._close_log()
        return self.proc.returncode

    def _signal_group(self, sig: int) -> None:
        assert self.proc is not None
        if self.proc.returncode is not None:
            return  # reaped: the pid may belong to someone else by now
        try:
            os.killpg(self.proc.pid, sig)  # pid == pgid thanks to start_new_session
        except ProcessLookupError:
            pass
        except PermissionError:
            self.proc.send_signal(sig)

    def _close_log(self) -> None:
        if self._log_fh:
            self._log_fh.close()
            self._log_fh = None
