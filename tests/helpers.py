"""Shared test helpers: free ports, the fake and real llama-server, and running the CLI wrappers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional

REPO = Path(__file__).resolve().parents[1]
FAKE_SERVER = REPO / "tests" / "bin" / "llama-server"
LLAMA_RUN = REPO / "llama-run"
LLAMA_BENCH = REPO / "llama-bench"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http(method: str, url: str, body: Optional[dict] = None, timeout: float = 30.0, headers: Optional[dict] = None):
    """(status, parsed JSON or text) without raising on HTTP errors."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    for key, value in (headers or {}).items():
        req.add_header(key, value)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read().decode()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


def wait_until(predicate, timeout: float = 30.0, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def is_healthy(port: int) -> bool:
    try:
        return http("GET", f"http://127.0.0.1:{port}/health", timeout=1.0)[0] == 200
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def server_pids() -> List[int]:
    """Live processes named llama-server (what stop-all and the leak checks look for)."""
    import psutil

    pids = []
    for proc in psutil.process_iter(["pid", "name", "status"]):
        if proc.info["name"] == "llama-server" and proc.info["status"] != psutil.STATUS_ZOMBIE:
            pids.append(proc.info["pid"])
    return pids


@contextmanager
def running_server(
    port: int, *args: str, binary: Path = FAKE_SERVER, ready_timeout: float = 60.0, wait: bool = True
) -> Iterator[subprocess.Popen]:
    """A llama-server started directly (not through our CLI), stopped at the end of the block."""
    proc = subprocess.Popen(
        [str(binary), "--host", "127.0.0.1", "--port", str(port), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        if wait and not wait_until(lambda: is_healthy(port) or proc.poll() is not None, ready_timeout):
            raise RuntimeError(f"server on port {port} not ready")
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def run_cli(tool: Path, *args: str, timeout: float = 120.0, **kwargs) -> subprocess.CompletedProcess:
    # Decoded leniently: other processes on the machine (in `ps` output) may have names that are not UTF-8.
    kwargs.setdefault("errors", "backslashreplace")
    return subprocess.run([str(tool), *args], capture_output=True, text=True, timeout=timeout, **kwargs)


def spawn_cli(tool: Path, *args: str) -> subprocess.Popen:
    """A CLI run in the background with line-buffered text output, in its own process group."""
    return subprocess.Popen(
        [str(tool), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=True,
    )


class LiveOutput:
    """Collects a spawned CLI's output on a thread so tests can wait for lines without blocking."""

    def __init__(self, proc: subprocess.Popen) -> None:
        import threading

        self.proc = proc
        self.lines: List[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def text(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def wait_for(self, needle: str, timeout: float = 30.0) -> bool:
        return wait_until(lambda: needle in self.text(), timeout)

    def matching(self, prefix: str) -> List[str]:
        with self._lock:
            return [line for line in self.lines if line.startswith(prefix)]

    def finish(self, timeout: float = 30.0) -> int:
        code = self.proc.wait(timeout)
        self._thread.join(5)
        return code

    def interrupt(self) -> None:
        """What Ctrl-C in a terminal does: SIGINT to the CLI's process group."""
        os.killpg(self.proc.pid, signal.SIGINT)

    def kill_group(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def server_pid_from(output: str) -> Optional[int]:
    """The pid llama-run prints right after starting the server ("  pid 123, log ...")."""
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("pid ") and ", log " in line:
            return int(line.split()[1].rstrip(","))
    return None


def children_of(folder: Path) -> List[int]:
    """llama-servers (real or fake) serving a model file of `folder`: a router's children, started by the
    test that owns the folder (the router itself has only the folder on its command line)."""
    import psutil

    pids = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        cmd = proc.info["cmdline"] or []
        serves = any(a.endswith(".gguf") and a.startswith(str(folder)) for a in cmd)
        if serves and proc.info["status"] != psutil.STATUS_ZOMBIE:
            pids.append(proc.info["pid"])
    return pids
