"""A watchdog for a server we start: if we die — even by SIGKILL — it stops the server's whole process
group. The parent-death signal covers only our direct child; a `--llama-server` wrapper script that
does not `exec` leaves the real server one level further down, and this catches it too.

The watchdog is a tiny Python process in its own session whose stdin is a pipe only we hold: EOF means
we are gone (or done), and it then sends SIGTERM to the group, waits a grace period and sends SIGKILL.
It exits on its own once the group is empty.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Optional

_CODE = r"""
import os, select, signal, sys, time
pgid, grace = int(sys.argv[1]), float(sys.argv[2])
def alive():
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
while alive():
    ready = select.select([0], [], [], 1.0)[0]
    if ready and not os.read(0, 64):
        break
if alive():
    try:
        os.killpg(pgid, signal.SIGTERM)
    except OSError:
        pass
    end = time.monotonic() + grace
    while alive() and time.monotonic() < end:
        time.sleep(0.05)
    if alive():
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            pass
"""


class GroupWatchdog:
    def __init__(self, pgid: int, grace: float = 5.0) -> None:
        self.pgid = pgid
        self._proc: Optional[subprocess.Popen] = subprocess.Popen(
            [sys.executable, "-S", "-c", _CODE, str(pgid), str(grace)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # out of the terminal's reach and of the group it guards
        )

    def release(self, timeout: float = 3.0) -> None:
        """We stopped the group ourselves: let the watchdog go (closing the pipe) and reap it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(timeout)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
