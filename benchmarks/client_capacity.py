"""How many streamed chunks per second the benchmark client sustains, and the CPU it uses doing so.

Starts the fake llama-server (tests/bin/llama-server) with --token-interval-ms 0, sends 64
concurrent streaming /completion requests through tools.llama_bench.bench.client, and prints chunks/s,
the client's CPU time (user+sys of this process) and chunks per client CPU-second. Goal: >= 20,000
chunks/s with the client using <= 1 core. The client and the fake server share this machine's
cores, so chunks per client CPU-second is the client's capacity when the server is the limit.

Usage: .venv/bin/python benchmarks/client_capacity.py [--streams 64] [--tokens 1500] [--rounds 3]
Phase 2 repeats the run with the fake paced to exactly 20,000 chunks/s to show the CPU left over.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import List, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.helpers import FAKE_SERVER, free_port, running_server  # noqa: E402
from tools.llama_bench.bench.client import StreamClient  # noqa: E402
from tools.llama_bench.bench.records import Api, RequestRecord, RequestSpec  # noqa: E402


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def one_round(url: str, streams: int, tokens: int) -> Tuple[List[RequestRecord], float, float]:
    async with StreamClient(url, timeout=120, max_connections=streams + 4) as client:
        specs = [
            RequestSpec(i, Api.COMPLETION, {"prompt": [1, 2, 3, 4], "n_predict": tokens, "stream": True}, 4, tokens)
            for i in range(streams)
        ]
        # Warm the connection pool so connection set-up is not part of the measurement.
        await asyncio.gather(
            *(client.send(RequestSpec(0, Api.COMPLETION, {**s.body, "n_predict": 2}, 4, 2)) for s in specs)
        )
        cpu0, t0 = cpu_seconds(), time.monotonic()
        records = await asyncio.gather(*(client.send(s) for s in specs))
        return list(records), time.monotonic() - t0, cpu_seconds() - cpu0


def phase(streams: int, tokens: int, rounds: int, interval_ms: float) -> List[Tuple[float, float, float]]:
    port = free_port()
    flags = ["-c", "65536", "-np", str(streams), "--token-interval-ms", str(interval_ms), "--prompt-tps", "1000000"]
    results = []
    with running_server(port, *flags, binary=FAKE_SERVER, ready_timeout=30) as proc:
        if proc.poll() is not None:
            raise SystemExit(f"fake llama-server exited with code {proc.returncode}")
        for rnd in range(rounds):
            records, wall, cpu = asyncio.run(one_round(f"http://127.0.0.1:{port}", streams, tokens))
            failed = [r for r in records if not r.ok]
            chunks = sum(r.content_chunks for r in records)
            reported = sum(r.output_tokens or 0 for r in records)
            results.append((chunks / wall, cpu / wall, chunks / cpu if cpu else float("inf")))
            print(
                f"  round {rnd + 1}: {chunks} chunks ({reported} tokens reported) in {wall:.2f} s = "
                f"{chunks / wall:,.0f} chunks/s; client CPU {cpu:.2f} s = {cpu / wall:.2f} cores; "
                f"{chunks / cpu:,.0f} chunks per client CPU-second; failed {len(failed)}"
            )
            if failed:
                print(f"    first error: {failed[0].error}")
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=1500, help="tokens per stream")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if not os.access(FAKE_SERVER, os.X_OK):
        print(f"missing {FAKE_SERVER}", file=sys.stderr)
        return 2
    print(f"phase 1: --token-interval-ms 0 (as fast as the fake can stream), {args.streams} streams")
    results = phase(args.streams, args.tokens, args.rounds, 0.0)
    rate = statistics.median(r[0] for r in results)
    core = statistics.median(r[1] for r in results)
    capacity = statistics.median(r[2] for r in results)
    # Phase 2: the goal's load exactly (20,000 chunks/s over all streams), to show the headroom.
    interval = args.streams / 20000 * 1000.0
    print(f"phase 2: --token-interval-ms {interval:.2f} = 20,000 chunks/s offered over {args.streams} streams")
    paced = phase(args.streams, args.tokens, args.rounds, interval)
    paced_rate = statistics.median(r[0] for r in paced)
    paced_core = statistics.median(r[1] for r in paced)
    print()
    print(f"phase 1 median chunks/s sustained     : {rate:,.0f}   goal >= 20,000: ratio {rate / 20000:.2f}")
    print(f"phase 1 median client CPU (cores)     : {core:.2f}   (the client is the limit when this is 1.00)")
    print(f"phase 1 chunks per client CPU-second  : {capacity:,.0f}")
    print(f"phase 2 chunks/s at the goal's load   : {paced_rate:,.0f}   client CPU {paced_core:.2f} cores (goal <= 1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
