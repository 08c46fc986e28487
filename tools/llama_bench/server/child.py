"""A child process we start and own — a llama-server, a token-meter proxy: its own session and process
group (a terminal's Ctrl-C reaches us, and we decide how it stops), a parent-death signal so the kernel
ends it if we die even by SIGKILL, a watchdog for the rest of its group (and for a child that ignores or
cannot take that signal: stopped, or stuck), its output in a log file, and stop = SIGTERM to the whole
group, a grace period, SIGKILL, always reaped."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Callable, Dict, List, Optional

from ..utils import UserError
from .watchdog import GroupWatchdog


def death_signal(sig: int, parent: Optional[int] = None) -> Callable[[], None]:
    """A preexec_fn: the kernel sends `sig` to the child when its parent *thread* ends (Linux), so start
    children from the main thread. With `parent`, a parent that died before the signal was armed is
    noticed too (the child exits at once)."""

    def preexec() -> None:
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                libc.prctl(1, sig)  # PR_SET_PDEATHSIG
            except (OSError, AttributeError):
                pass
        if parent is not None and os.getppid() != parent:
            os._exit(1)

    return preexec


class OwnedChild:
    """The process part of something we run: spawn, poll, signal its group, stop."""

    def __init__(self) -> None:
        self.proc: Optional[subprocess.Popen] = None
        self.log_path: Optional[Path] = None
        self._log_fh: Optional[IO[bytes]] = None
        self._watchdog: Optional[GroupWatchdog] = None

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None

    def poll(self) -> Optional[int]:
        return self.proc.poll() if self.proc else None

    def spawn(
        self,
        cmd: List[str],
        log_path: Path,
        what: str,
        die_signal: Optional[int] = signal.SIGKILL,
        env: Optional[Dict[str, str]] = None,
        cwd: Optional[str] = None,
    ) -> None:
        """Start `cmd` with its output in `log_path`; `die_signal` None: it may outlive us (--detach), else
        the kernel sends it that signal when we die and a watchdog stops its whole group."""
        self.log_path = log_path
        try:
            self._log_fh = open(log_path, "ab")
        except OSError as exc:
            raise UserError(f"cannot create the {what} log {log_path}: {(exc.strerror or str(exc)).lower()}") from None
        try:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=self._log_fh,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=death_signal(die_signal, os.getpid()) if die_signal is not None else None,
            )
        except OSError as exc:
            self.close_log()
            raise UserError(f"cannot start {cmd[0]}: {exc.strerror}") from exc
        if die_signal is not None:
            self._watchdog = GroupWatchdog(self.proc.pid)

    def group_alive(self) -> bool:
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def signal_group(self, sig: int) -> None:
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, sig)  # pid == pgid thanks to start_new_session
        except ProcessLookupError:
            pass
        except PermissionError:
            if self.proc.returncode is None:
                self.proc.send_signal(sig)

    def stop_group(self, grace: float) -> Optional[int]:
        """SIGTERM the group, wait `grace` s, then SIGKILL; returns the exit code of the child.

        The whole group: a wrapper script that did not `exec` may exit on SIGTERM while what it started
        lingers; that gets the rest of the grace period, then SIGKILL too."""
        if self.proc is None:
            return None
        deadline = time.monotonic() + grace
        if self.proc.poll() is None or self.group_alive():
            self.signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGKILL)
                self.proc.wait()
            while self.group_alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.group_alive():
                self.signal_group(signal.SIGKILL)
        self.release_watchdog()
        self.close_log()
        return self.proc.returncode

    def release_watchdog(self) -> None:
        """The group is stopped (or left running on purpose): the watchdog goes."""
        if self._watchdog is not None:
            self._watchdog.release()
            self._watchdog = None

    def close_log(self) -> None:
        if self._log_fh:
            self._log_fh.close()
            self._log_fh = None
