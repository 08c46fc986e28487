"""Facts about this machine and the llama.cpp build, for summaries and result manifests."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Dict, Optional


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def server_version(binary: str, timeout: float = 20.0) -> Dict[str, Optional[str]]:
    """`llama-server --version` → {'version': 'b11434 (b11434-pypi)', 'built_with': '...'} (None when unknown)."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"version": None, "built_with": None, "error": str(exc)}
    info: Dict[str, Optional[str]] = {"version": None, "built_with": None}
    for line in (out.stdout + out.stderr).splitlines():
        if line.startswith("version:"):
            info["version"] = line.split(":", 1)[1].strip()
        elif line.startswith("built with"):
            info["built_with"] = line[len("built with") :].strip()
    return info


def build_backend(binary: str) -> Optional[str]:
    """The backend recorded by scripts/build_llama.cpp.sh next to the binary it built, if any."""
    stamp = Path(os.path.realpath(binary)).parent.parent / ".complete"
    try:
        for line in stamp.read_text(encoding="utf-8").splitlines():
            if line.startswith("backend="):
                return line.split("=", 1)[1]
    except OSError:
        pass
    return None
