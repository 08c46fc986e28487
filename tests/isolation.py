"""Run a test body in a private PID namespace, where the only processes are the ones it starts.

Commands that act on *every* llama-server of the user (`stop-all` without a filter) are tested in
there, so the suite never stops a server the developer runs beside it. Needs util-linux `unshare`
and either root or unprivileged user namespaces; tests skip with the reason when neither is there.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from typing import List

import pytest

from tests.helpers import REPO


@functools.lru_cache(maxsize=1)
def _unshare_prefix() -> List[str]:
    exe = shutil.which("unshare")
    if not exe:
        return []
    for extra in ([], ["--user", "--map-root-user"]):
        cmd = [exe, *extra, "--pid", "--fork", "--mount-proc"]
        try:
            ok = subprocess.run([*cmd, "true"], capture_output=True, timeout=10).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if ok:
            return cmd
    return []


def run_in_private_pid_namespace(code: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    """Run Python `code` (with the repo importable) as the init process of a new PID namespace."""
    prefix = _unshare_prefix()
    if not prefix:
        pytest.skip("needs a private PID namespace (util-linux unshare, root or unprivileged user namespaces)")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [*prefix, sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env
    )
