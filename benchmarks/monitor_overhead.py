"""CPU cost of llama-run's stats loop: CPU seconds per minute used by the `llama-run` process itself
(not the server) at `--interval 1`, idle and while the server streams tokens, side by side.

Goal: under 1 % of one core (0.6 CPU-s per minute).
Usage: .venv/bin/python benchmarks/monitor_overhead.py [--seconds 30]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.helpers import FAKE_SERVER, free_port, is_healthy, wait_until  # noqa: E402

GOAL_PERCENT = 1.0


def traffic(port: int, stop: threading.Event) -> None:
    body = json.dumps({"prompt": "measure the monitor", "n_predict": 200, "stream": True}).encode()
    while not stop.is_set():
        req = urllib.request.Request(f"http://127.0.0.1:{port}/completion", data=body, method="POST")
        with urllib.request.urlopen(req, timeout=60) as resp:
            for _ in resp:
                pass


def measure(seconds: float, with_traffic: bool, model: str) -> float:
    """CPU seconds per minute of the llama-run process, excluding its start-up."""
    port = free_port()
    cmd = [str(REPO / "llama-run"), "run", "--llama-server", str(FAKE_SERVER), "--model", model]
    cmd += ["--port", str(port), "--ui", "plain", "--interval", "1", "--stats-interval", "5", "--allow-multi-server"]
    cmd += ["--", "--token-interval-ms", "5"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    stop = threading.Event()
    try:
        if not wait_until(lambda: is_healthy(port), 30):
            raise RuntimeError("fake server did not start")
        if with_traffic:
            threading.Thread(target=traffic, args=(port, stop), daemon=True).start()
        me = psutil.Process(proc.pid)
        time.sleep(3)  # let imports and the first samples settle
        before = me.cpu_times()
        start = time.monotonic()
        time.sleep(seconds)
        after = me.cpu_times()
        elapsed = time.monotonic() - start
        used = (after.user - before.user) + (after.system - before.system)
        return used / elapsed * 60
    finally:
        stop.set()
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    with tempfile.NamedTemporaryFile(suffix=".gguf") as model:
        model.write(b"GGUF")
        model.flush()
        idle = measure(args.seconds, False, model.name)
        busy = measure(args.seconds, True, model.name)
    print(f"{'case':<22} {'CPU-s/min':>10} {'% of a core':>12}")
    for name, value in (("idle server", idle), ("streaming server", busy)):
        print(f"{name:<22} {value:>10.3f} {value / 60 * 100:>11.2f}%")
    worst = max(idle, busy) / 60 * 100
    print(f"\nworst case {worst:.2f}% of a core; busy/idle ratio {busy / idle if idle else float('nan'):.2f}")
    print(f"goal: under {GOAL_PERCENT:.0f}% of a core -> {'meets' if worst < GOAL_PERCENT else 'misses'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
