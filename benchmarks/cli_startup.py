"""How long `./llama-run --help` takes next to a bare interpreter start, measured in one run.

Goal: `--help` under 150 ms here, i.e. our own imports add little on top of Python's start-up.
Usage: .venv/bin/python benchmarks/cli_startup.py [--runs 30]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import List

REPO = Path(__file__).resolve().parents[1]
GOAL_MS = 150.0


def time_runs(cmd: List[str], runs: int) -> List[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    python = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else "python3"
    cases = {
        "python -c pass": [python, "-c", "pass"],
        "llama-run --help": [str(REPO / "llama-run"), "--help"],
        "llama-run run --help": [str(REPO / "llama-run"), "run", "--help"],
        "llama-bench --help": [str(REPO / "llama-bench"), "--help"],
    }
    # Interleave the cases round by round so machine noise hits them all alike.
    samples = {name: [] for name in cases}  # type: dict
    for _ in range(args.runs):
        for name, cmd in cases.items():
            samples[name] += time_runs(cmd, 1)
    base = statistics.median(samples["python -c pass"])
    print(f"{'command':<24} {'median ms':>10} {'p90 ms':>8} {'x python':>9}")
    for name, values in samples.items():
        med = statistics.median(values)
        p90 = sorted(values)[int(0.9 * (len(values) - 1))]
        print(f"{name:<24} {med:>10.1f} {p90:>8.1f} {med / base:>9.2f}")
    help_ms = statistics.median(samples["llama-run --help"])
    verdict = "meets" if help_ms < GOAL_MS else "misses"
    ratio = help_ms / base
    print(f"\nllama-run --help: {help_ms:.1f} ms median ({ratio:.2f}x python -c pass)")
    print(f"goal: under {GOAL_MS:.0f} ms -> {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
