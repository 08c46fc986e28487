"""Timing fidelity against the fake llama-server, whose cadence is known exactly.

Starts tests/bin/llama-server with --token-interval-ms 10 and --prompt-tps 4000, runs
`./llama-bench benchmark` (prompt sizes 400 and 2000 tokens = 100 ms and 500 ms of injected
prefill, 64 generated tokens, one stream) and prints measured vs injected values side by side:
ITL p50 and TPOT vs 10 ms (goal: error <= 0.5 ms), TTFT vs the injected prefill time (goal <= 1 ms).
The same requests also go through a plain blocking socket that timestamps recv(): that is what the
fake really sent (its asyncio timer rounds sleeps up to whole milliseconds, and it takes about a
millisecond to parse a request), so "ours - raw" is the benchmark client's own error.

Usage: .venv/bin/python benchmarks/fidelity_fake.py [--interval-ms 10] [--prompt-tps 4000]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.helpers import FAKE_SERVER, free_port, running_server  # noqa: E402

SIZES = (400, 2000)
GEN = 64


def raw_request(port: int, size: int) -> Tuple[float, List[float], float]:
    """Reference: the same request over a plain blocking socket, timestamps straight from recv().

    Returns (TTFT ms, gaps between token events in ms, TPOT ms). What this sees is what the fake
    server really sent, so ours minus this is the benchmark client's own error."""
    body = json.dumps(
        {"prompt": list(range(100, 100 + size)), "n_predict": GEN, "stream": True, "cache_prompt": False}
    ).encode()
    head = "POST /completion HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    head += f"Content-Length: {len(body)}\r\n\r\n"
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf, seen, times = b"", 0, []
    t0 = time.monotonic()
    sock.sendall(head.encode() + body)
    last = t0
    while b'"stop":true' not in buf:
        data = sock.recv(65536)
        t = time.monotonic()
        if not data:
            break
        buf += data
        last = t
        total = buf.count(b"data: ")
        times += [t] * (total - seen)
        seen = total
    sock.close()
    tokens = times[:-1]  # the last event is the final (stop) chunk, not a token
    gaps = [(b - a) * 1000.0 for a, b in zip(tokens, tokens[1:])]
    ttft = (tokens[0] - t0) * 1000.0
    return ttft, gaps, ((last - t0) * 1000.0 - ttft) / (len(tokens) - 1)


def run_raw(port: int, requests: int) -> Dict[int, List[Tuple[float, List[float], float]]]:
    return {size: [raw_request(port, size) for _ in range(requests)] for size in SIZES}


def run_benchmark(port: int, requests: int) -> Dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        cmd = [str(REPO / "llama-bench"), "benchmark", "--endpoint", f"http://127.0.0.1:{port}", "--quiet"]
        cmd += ["--prompt-sizes", ",".join(map(str, SIZES)), "--max-output-tokens", str(GEN)]
        cmd += ["--num-requests", str(requests), "--warmup", "1", "--json-out", str(out)]
        cmd += ["--jsonl", str(Path(tmp) / "r.jsonl")]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if res.returncode != 0:
            raise SystemExit(f"llama-bench benchmark failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
        return json.loads(out.read_text(encoding="utf-8"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--interval-ms", type=float, default=10.0)
    ap.add_argument("--prompt-tps", type=float, default=4000.0)
    ap.add_argument("--requests", type=int, default=5, help="measured requests per prompt size")
    args = ap.parse_args()
    if not os.access(FAKE_SERVER, os.X_OK):
        print(f"missing {FAKE_SERVER}", file=sys.stderr)
        return 2
    port = free_port()
    flags = ["-c", "8192", "--metrics", "--token-interval-ms", str(args.interval_ms)]
    flags += ["--prompt-tps", str(args.prompt_tps)]
    with running_server(port, *flags, binary=FAKE_SERVER, ready_timeout=30) as proc:
        if proc.poll() is not None:
            raise SystemExit(f"fake llama-server exited with code {proc.returncode}")
        result = run_benchmark(port, args.requests)
        raw = run_raw(port, args.requests)

    reqs = [r for r in result["requests"] if not r["warmup"]]
    bad = [r for r in reqs if not r["ok"]]
    if bad:
        print(f"{len(bad)} request(s) failed, first: {bad[0]['error']}", file=sys.stderr)
    ok = [r for r in reqs if r["ok"]]
    itl: List[float] = [g for r in ok for g in r["itl_ms"]]
    tpot = [r["tpot_ms"] for r in ok]
    raw_all = [x for runs in raw.values() for x in runs]
    raw_itl = [g for _, gaps, _ in raw_all for g in gaps]
    raw_tpot = [t for _, _, t in raw_all]
    inj = args.interval_ms
    print(f"fake server: --token-interval-ms {inj:g} --prompt-tps {args.prompt_tps:g}", end="; ")
    print(f"{len(ok)} requests through llama-bench and {len(raw_all)} through a raw socket, {GEN} tokens each")
    print("raw = a plain blocking socket timestamping recv(): what the fake really sent (its timer has ~1 ms steps)")
    print()
    cols = f"{'metric':28} {'injected':>9} {'raw':>9} {'ours':>9} {'ours-raw':>9} {'ours-inj':>9} {'goal':>7}"
    print(cols)

    def row(name: str, injected: float, reference: float, measured: float, goal: float) -> None:
        own, total = measured - reference, measured - injected
        verdict = "ok" if abs(own) <= goal else "MISS"
        print(
            f"{name:28} {injected:9.3f} {reference:9.3f} {measured:9.3f} {own:+9.3f} {total:+9.3f} "
            f"{'<=' + format(goal, 'g'):>7} {verdict} (ours-raw)"
        )

    row("ITL p50 (ms)", inj, statistics.median(raw_itl), statistics.median(itl), 0.5)
    row("ITL mean (ms)", inj, statistics.fmean(raw_itl), statistics.fmean(itl), 0.5)
    row("TPOT mean (ms)", inj, statistics.fmean(raw_tpot), statistics.fmean(tpot), 0.5)
    for size in SIZES:
        cell = [r for r in ok if r["prompt_tokens_requested"] == size]
        prefill = size / args.prompt_tps * 1000.0
        ttft = statistics.median(r["ttft_ms"] for r in cell)
        row(f"TTFT p50, prompt {size} (ms)", prefill, statistics.median(t for t, _, _ in raw[size]), ttft, 1.0)
        server_prompt = statistics.median(r["server_prompt_ms"] for r in cell if r["server_prompt_ms"] is not None)
        print(f"{'  server timings.prompt_ms':28} {prefill:9.3f} {'':9} {server_prompt:9.3f} {'':9} ", end="")
        print(f"{server_prompt - prefill:+9.3f}")
    exact = all(r["prompt_tokens_reported"] == r["prompt_tokens_requested"] and r["output_tokens"] == GEN for r in ok)
    print(f"prompt tokens == requested and output == {GEN} for every request: {exact}")
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
