"""Capacity found by `llama-bench capacity` vs the true capacity of the fake llama-server, for three settings.

The fake's truth is known: N slots that each serve one request at a time in S = prompt / --prompt-tps +
(output - 1) x --token-interval-ms, so it completes at most N / S requests per second (and holds N
concurrent requests without queueing). The fake adds a few milliseconds per request of its own (HTTP,
tokenizing, handing a freed slot on), so the "calibrated" truth uses the service time the search
measured one request at a time. The search runs in-process (capacity_cmd.run_capacity, typed
parameters) by rate with an SLO of TTFT p90 <= prefill + 3 S, which holds up to just below N / S and
breaks above it; then by concurrency with TTFT p90 <= prefill + S / (2 N), which breaks as soon as a
request has to wait for a slot (the truth: N). Goal: found within 15 % of the truth from the knobs.

Few slots queue more under Poisson arrivals below N / S (queueing theory: an M/D/N queue), so the
capacity that holds an SLO sits a little under N / S there; many slots approach N / S. By concurrency
the requests run in lock step, so at N + 1 one request in N + 1 waits a whole service time per cycle:
with 16 slots a p90 bound still holds at 17 (1 in 17 waits), which is within the goal.

Each search uses the defaults for its step sizes (a rate step lasts at least the SLO's slack / precision);
--requests-per-step N overrides them, to see how much shorter steps cost in accuracy.

Usage: .venv/bin/python benchmarks/capacity_fake.py [--requests-per-step N]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.helpers import FAKE_SERVER, free_port, running_server  # noqa: E402
from tools.llama_bench.bench.capacity import CapacityParams, SearchBy  # noqa: E402
from tools.llama_bench.bench.capacity_cmd import run_capacity  # noqa: E402
from tools.llama_bench.bench.plan import BenchParams, SilentObserver  # noqa: E402
from tools.llama_bench.bench.slo import parse_slo  # noqa: E402
from tools.llama_bench.outputs import output_path  # noqa: E402

# (slots, token interval ms, prompt tokens/s, prompt tokens, output tokens)
SETTINGS: List[Tuple[int, float, float, int, int]] = [(4, 10.0, 4000.0, 200, 16), (8, 5.0, 2000.0, 100, 20),
                                                      (16, 40.0, 2000.0, 100, 12)]  # fmt: skip


def search(port: int, by: SearchBy, slo: str, prompt: int, output: int, n: Optional[int], tmp: str) -> Dict[str, Any]:
    params = BenchParams(
        endpoint=f"http://127.0.0.1:{port}",
        prompt_sizes=[prompt],
        concurrency=[1],
        max_output_tokens=output,
        slo=parse_slo(slo),
        energy=False,
        metrics_interval=0.5,
    )
    cap = CapacityParams(by=by, requests_per_step=n)
    jsonl = output_path(os.path.join(tmp, f"{port}-{by}.jsonl"), "--jsonl")
    assert jsonl is not None
    result = run_capacity(params, cap, SilentObserver(), jsonl)
    return dict(result.document["capacity"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests-per-step", type=int, default=None)
    args = ap.parse_args()
    if not os.access(FAKE_SERVER, os.X_OK):
        print(f"missing {FAKE_SERVER}", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for slots, interval, tps, prompt, output in SETTINGS:
            prefill = prompt / tps
            service = prefill + (output - 1) * interval / 1000.0
            port = free_port()
            flags = ["-np", str(slots), "-c", "8192", "--metrics", "--token-interval-ms", str(interval)]
            flags += ["--prompt-tps", str(tps)]
            with running_server(port, *flags, binary=FAKE_SERVER, ready_timeout=30):
                t0 = time.monotonic()
                rate_slo = f"ttft_p90={(prefill + 3 * service) * 1000:.0f}ms"
                by_rate = search(port, SearchBy.RATE, rate_slo, prompt, output, args.requests_per_step, tmp)
                t1 = time.monotonic()
                conc_slo = f"ttft_p90={(prefill + service / (2 * slots)) * 1000:.0f}ms"
                by_conc = search(port, SearchBy.CONCURRENCY, conc_slo, prompt, output, args.requests_per_step, tmp)
                t2 = time.monotonic()
            setting = f"-np {slots} --token-interval-ms {interval:g} --prompt-tps {tps:g}, {prompt}+{output} tok"
            rows.append((setting, "rate", rate_slo, slots / service, by_rate, t1 - t0))
            rows.append((setting, "concurrency", conc_slo, float(slots), by_conc, t2 - t1))
    print(f"{'fake setting':52} {'by':11} {'SLO':16} {'true':>8} {'calib.':>8} {'found':>8} {'upper':>8} "
          f"{'found/true':>10} {'steps':>5} {'time':>6}")  # fmt: skip
    misses = 0
    for setting, by, slo, truth, found, seconds in rows:
        value = found.get("capacity")
        ratio = value / truth if value else 0.0
        ok = abs(ratio - 1.0) <= 0.15
        misses += not ok
        upper = found.get("upper")
        measured = found.get("service_time_s")
        calibrated = truth if by == "concurrency" or not measured else found["slots"] / measured
        print(
            f"{setting:52} {by:11} {slo:16} {truth:8.2f} {calibrated:8.2f} {value or 0:8.2f} {upper or 0:8.2f} "
            f"{ratio:10.2f} {found.get('steps'):>5} {seconds:5.0f}s {'ok' if ok else 'MISS'} (goal: within 15%)"
        )
    return 0 if not misses else 1


if __name__ == "__main__":
    sys.exit(main())
