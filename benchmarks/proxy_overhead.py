"""What the token-meter proxy costs: the same streaming workload direct and through the proxy, interleaved.

For each server (the fake at --token-interval-ms 0 and 5; the real llama-server with --real-server and
--model) and each stream count (1, 16, 64), rounds alternate direct / proxy (ABBA order) against the same
server, with tools.llama_bench.bench.client.StreamClient as the load generator. Reported per cell: TTFT
p50/p99 direct and through the proxy (and the difference), throughput (content chunks/s) and its ratio,
the proxy's CPU time per 1,000 chunks, and the CPU use (in cores) of the server, the proxy and this
client during the proxy rounds, so that the bottleneck can be named. The proxy runs as in production
(ManagedProxy: a child process, history on).

Goals: added TTFT p50 <= 1 ms; >= 98 % of direct throughput at 16 streams; at 64 streams at 0 ms cadence
the proxy is not the bottleneck (state what is).

Usage: .venv/bin/python benchmarks/proxy_overhead.py [--rounds 4] [--tokens 200] [--streams 1,16,64]
       [--cadences 0,5] [--real-server build/llama.cpp/build/bin/llama-server --model models/X.gguf]
       (--cadences '' skips the fake server; --real-threads sets llama-server's -t)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import psutil  # noqa: E402

from tests.helpers import FAKE_SERVER, free_port, running_server  # noqa: E402
from tools.llama_bench.bench.client import StreamClient  # noqa: E402
from tools.llama_bench.bench.records import Api, RequestRecord, RequestSpec  # noqa: E402
from tools.llama_run.proxy.config import ProxyConfig  # noqa: E402
from tools.llama_run.proxy.process import ManagedProxy  # noqa: E402

PROMPT = [1, 2, 3, 4, 5, 6, 7, 8]


@dataclass
class Phase:
    """One round of one side (direct or proxy): its records, wall time and CPU seconds per process."""

    records: List[RequestRecord]
    wall: float
    cpu: Dict[str, float]

    @property
    def chunks(self) -> int:
        return sum(r.content_chunks for r in self.records)


@dataclass
class Cell:
    label: str
    streams: int
    direct: List[Phase] = field(default_factory=list)
    proxied: List[Phase] = field(default_factory=list)


def cpu_of(procs: Dict[str, psutil.Process]) -> Dict[str, float]:
    """CPU seconds so far of each process, and of the whole machine (`machine`: busy time of all cores)."""
    out = {}
    for name, proc in procs.items():
        t = proc.cpu_times()
        out[name] = t.user + t.system
    total = psutil.cpu_times()
    out["machine"] = sum(total) - total.idle - getattr(total, "iowait", 0.0)
    return out


def bottleneck(use: Dict[str, float], cores: int, ratio: float) -> str:
    """What limits a cell, from the cores each process used during the proxy rounds."""
    mine = use["server"] + use["proxy"] + use["client"]
    other = max(0.0, use["machine"] - mine)
    split = ", ".join(f"{k} {use[k]:.2f}" for k in ("server", "proxy", "client"))
    if use["machine"] >= 0.9 * cores:
        return f"all {cores} cores busy ({split}, other processes {other:.2f})"
    top = max(("server", "proxy", "client"), key=lambda k: use[k])
    if use[top] >= 0.9:
        return f"the {top}, at a full core ({split})"
    if ratio >= 0.98:
        return f"the server's pace; the proxy keeps up ({split}, other processes {other:.2f})"
    return f"hand-offs: each chunk wakes server, proxy and client in turn ({split}, other processes {other:.2f})"


def pct(values: List[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


async def one_phase(url: str, streams: int, tokens: int, per_stream: int, procs: Dict[str, psutil.Process]) -> Phase:
    async with StreamClient(url, timeout=300, max_connections=streams + 4) as client:

        def spec(i: int, n: int) -> RequestSpec:
            body = {"prompt": PROMPT, "n_predict": n, "stream": True, "cache_prompt": False, "ignore_eos": True}
            return RequestSpec(i, Api.COMPLETION, body, len(PROMPT), n)

        # Warm the pool (and the proxy's pool behind it) so that connection set-up is not measured.
        await asyncio.gather(*(client.send(spec(i, 2)) for i in range(streams)))

        async def stream(i: int) -> List[RequestRecord]:
            return [await client.send(spec(i, tokens)) for _ in range(per_stream)]

        before, t0 = cpu_of(procs), time.monotonic()
        results = await asyncio.gather(*(stream(i) for i in range(streams)))
        wall, after = time.monotonic() - t0, cpu_of(procs)
    records = [r for rs in results for r in rs]
    failed = [r for r in records if not r.ok]
    if failed:
        print(f"    {len(failed)} failed requests, first: {failed[0].error}", flush=True)
    return Phase(records, wall, {k: after[k] - before[k] for k in after})


def run_cell(
    label: str,
    server_url: str,
    proxy_url: str,
    streams: int,
    tokens: int,
    rounds: int,
    procs: Dict[str, psutil.Process],
) -> Cell:
    cell = Cell(label, streams)
    per_stream = max(1, 16 // streams)  # enough TTFT samples at low concurrency
    for rnd in range(rounds):
        order = [("direct", server_url), ("proxy", proxy_url)]
        if rnd % 2:
            order.reverse()
        for side, url in order:
            phase = asyncio.run(one_phase(url, streams, tokens, per_stream, procs))
            (cell.direct if side == "direct" else cell.proxied).append(phase)
    return cell


def summarize(cell: Cell, cores: int) -> Tuple[str, Dict[str, float]]:
    def ttfts(phases: List[Phase]) -> List[float]:
        return [r.ttft_ms for p in phases for r in p.records if r.ok and r.ttft_ms is not None]

    def rate(phases: List[Phase]) -> float:
        return statistics.median(p.chunks / p.wall for p in phases)

    d_t, p_t = ttfts(cell.direct), ttfts(cell.proxied)
    d_rate, p_rate = rate(cell.direct), rate(cell.proxied)
    chunks = sum(p.chunks for p in cell.proxied)
    proxy_cpu = sum(p.cpu.get("proxy", 0.0) for p in cell.proxied)
    wall = sum(p.wall for p in cell.proxied)
    use = {k: sum(p.cpu.get(k, 0.0) for p in cell.proxied) / wall for k in ("server", "proxy", "client", "machine")}
    d_wall = sum(p.wall for p in cell.direct)
    d_use = {k: sum(p.cpu.get(k, 0.0) for p in cell.direct) / d_wall for k in ("server", "client")}
    fig = {
        "ttft_p50_direct": pct(d_t, 0.5),
        "ttft_p50_proxy": pct(p_t, 0.5),
        "ttft_p99_direct": pct(d_t, 0.99),
        "ttft_p99_proxy": pct(p_t, 0.99),
        "rate_direct": d_rate,
        "rate_proxy": p_rate,
        "cpu_ms_per_1k": proxy_cpu / chunks * 1e6 if chunks else float("nan"),
    }
    d50, p50, d99, p99 = fig["ttft_p50_direct"], fig["ttft_p50_proxy"], fig["ttft_p99_direct"], fig["ttft_p99_proxy"]
    cores_used = (
        f"srv {d_use['server']:.2f}/{use['server']:.2f} prx {use['proxy']:.2f} "
        f"cli {d_use['client']:.2f}/{use['client']:.2f} of {cores}"
    )
    line = (
        f"{cell.label:<10} {cell.streams:>3}  {d50:7.2f} {p50:7.2f} {p50 - d50:+6.2f}  {d99:7.2f} {p99:7.2f} "
        f"{p99 - d99:+6.2f}  {d_rate:9,.0f} {p_rate:9,.0f} {p_rate / d_rate:6.3f}  {fig['cpu_ms_per_1k']:6.1f}  "
        + cores_used
        + f"\n{'':15}limit through the proxy: {bottleneck(use, cores, p_rate / d_rate)}"
    )
    return line, fig


HEADER = (
    "server     str  ttft_p50 (ms): direct proxy added  ttft_p99: direct proxy added   chunks/s: direct     proxy "
    " ratio  cpu/1k  cores used (direct/proxy rounds)"
)


def bench_server(
    label: str, server_url: str, streams_list: List[int], tokens: int, rounds: int, server_pid: int, state: Path
) -> List[str]:
    port = free_port()
    config = ProxyConfig(upstream=server_url, port=port, db_path=state / f"usage-{port}.sqlite3", log_requests=False)
    proxy = ManagedProxy(config, log_path=state / f"proxy-{port}.log")
    proxy.start()
    lines = []
    try:
        proxy.wait_ready(30)
        assert proxy.pid is not None
        procs = {
            "server": psutil.Process(server_pid),
            "proxy": psutil.Process(proxy.pid),
            "client": psutil.Process(os.getpid()),
        }
        for streams in streams_list:
            cell = run_cell(label, server_url, proxy.base_url, streams, tokens, rounds, procs)
            line, _ = summarize(cell, psutil.cpu_count() or 1)
            print(line, flush=True)
            lines.append(line)
    finally:
        proxy.stop()
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=4, help="rounds per side and cell (ABBA order)")
    ap.add_argument("--tokens", type=int, default=200, help="tokens per request")
    ap.add_argument("--streams", default="1,16,64")
    ap.add_argument("--cadences", default="0,5", help="fake server --token-interval-ms values")
    ap.add_argument("--real-server", type=Path, help="a real llama-server binary")
    ap.add_argument("--model", type=Path, help="GGUF model for the real server")
    ap.add_argument("--real-tokens", type=int, default=64)
    ap.add_argument(
        "--real-threads",
        type=int,
        default=max(1, (os.cpu_count() or 2) - 1),
        help="llama-server threads (default: all CPUs but one, left to the proxy and this client)",
    )
    args = ap.parse_args()
    streams_list = [int(s) for s in args.streams.split(",")]
    print(f"{os.cpu_count()} CPUs; {args.rounds} rounds per side; tokens per request {args.tokens}")
    print(HEADER)
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        os.environ.setdefault("LLAMA_STUDIO_STATE_DIR", str(state))
        for cadence in [float(c) for c in args.cadences.split(",") if c]:
            port = free_port()
            n = max(streams_list)
            flags = ["-np", str(n), "-c", str(n * (args.tokens + 64)), "--token-interval-ms", str(cadence)]
            flags += ["--prompt-tps", "1000000"]
            with running_server(port, *flags, binary=FAKE_SERVER, ready_timeout=30) as proc:
                url = f"http://127.0.0.1:{port}"
                bench_server(f"fake {cadence:g}ms", url, streams_list, args.tokens, args.rounds, proc.pid, state)
        if args.real_server and args.model:
            port = free_port()
            n = max(streams_list)
            flags = ["-m", str(args.model), "-np", str(n), "-c", str(n * (args.real_tokens + 64)), "--no-webui"]
            flags += ["-t", str(args.real_threads)]
            with running_server(port, *flags, binary=args.real_server, ready_timeout=300) as proc:
                bench_server(
                    "real", f"http://127.0.0.1:{port}", streams_list, args.real_tokens, args.rounds, proc.pid, state
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
