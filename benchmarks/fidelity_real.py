"""Fidelity against a real llama-server: our single-stream numbers vs llama.cpp's own llama-bench
and vs the server's own timings.

Each round starts build/llama.cpp/build/bin/llama-server with the default model (same --threads),
runs `./llama-bench benchmark` (one stream, 64 generated tokens, prompts of 128 tokens and of 4
tokens), stops the server, then runs llama.cpp's `llama-bench -m MODEL -t T -p 128 -n 64 -o json`
(also at depth 128) while nothing else competes for the cores. Rounds alternate so this machine's
speed drifts hit both sides alike; ratios are medians of the per-round ratios.

Goals: gen tok/s within 3 % of llama-bench tg and within 2 % of the server's predicted_per_second;
prompt tok/s vs llama-bench pp is reported. Like-for-like: llama-bench tg64 decodes at context
depth 0..64, so it is compared with our 4-token-prompt requests; our 128-token-prompt requests
decode at depth 128..192 and are compared with tg64 @ depth 128.

Usage: .venv/bin/python benchmarks/fidelity_real.py [--threads T] [--requests N] [--rounds R]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.helpers import free_port, running_server  # noqa: E402

SERVER = Path(os.environ.get("LLAMA_STUDIO_REAL_SERVER", REPO / "build/llama.cpp/build/bin/llama-server"))
LLAMA_BENCH_CPP = SERVER.parent / "llama-bench"
MODEL = Path(os.environ.get("LLAMA_STUDIO_REAL_MODEL", REPO / "models/SmolLM2-135M-Instruct.Q4_1.gguf"))
PROMPT, GEN, SHORT = 128, 64, 4


class RoundFailed(Exception):
    pass


def mean(values: List[Optional[float]]) -> Optional[float]:
    data = [v for v in values if v is not None]
    return statistics.fmean(data) if data else None


def run_ours(threads: int, requests: int) -> Dict[str, Any]:
    port = free_port()
    flags = ["-m", str(MODEL), "-t", str(threads), "-c", "2048", "-np", "1", "--metrics"]
    with running_server(port, *flags, binary=SERVER, ready_timeout=120) as proc:
        if proc.poll() is not None:
            raise SystemExit(f"llama-server exited with code {proc.returncode}")
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "r.json"
            bench = [str(REPO / "llama-bench"), "benchmark", "--endpoint", f"http://127.0.0.1:{port}"]
            bench += ["--prompt-sizes", f"{SHORT},{PROMPT}", "--max-output-tokens", str(GEN)]
            bench += ["--num-requests", str(requests)]
            bench += ["--warmup", "2", "--quiet", "--json-out", str(out), "--jsonl", str(Path(tmp) / "r.jsonl")]
            res = subprocess.run(bench, capture_output=True, text=True, timeout=600)
            if res.returncode != 0:
                raise RoundFailed(f"llama-bench benchmark failed ({res.returncode}): {res.stderr.strip()[-300:]}")
            return json.loads(out.read_text(encoding="utf-8"))


def run_llama_bench(threads: int, extra: List[str]) -> List[Dict[str, Any]]:
    cmd = [str(LLAMA_BENCH_CPP), "-m", str(MODEL), "-t", str(threads), *extra, "-o", "json"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr[-2000:]}")
    return json.loads(res.stdout)


def median(values: List[float]) -> float:
    return statistics.median(values)


def pct(r: float) -> str:
    return f"{r:.4f} ({(r - 1) * 100:+.2f} %)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # One core stays free for the client and the server's HTTP thread: with every core busy
    # computing, any other runnable thread stalls the whole thread pool and the noise swamps the
    # differences being measured.
    ap.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 1) - 1))
    ap.add_argument("--requests", type=int, default=8, help="measured requests per round")
    ap.add_argument("--rounds", type=int, default=4, help="alternating rounds of ours and llama-bench")
    args = ap.parse_args()
    for path in (SERVER, LLAMA_BENCH_CPP, MODEL):
        if not path.exists():
            print(f"missing {path}: run ./scripts/setup.sh --yes", file=sys.stderr)
            return 2

    print(f"threads {args.threads}, prompt {PROMPT}, gen {GEN}, {args.rounds} rounds, load {os.getloadavg()[0]:.2f}")
    rows = []
    all_prompt_ok = all_gen_ok = True
    n_reqs = 0
    for rnd in range(args.rounds):
        try:
            result = run_ours(args.threads, args.requests)
        except RoundFailed as exc:  # e.g. another program's `stop-all` took the server down: once more
            print(f"round {rnd + 1}: {exc}; retrying once")
            result = run_ours(args.threads, args.requests)
        reqs = [r for r in result["requests"] if not r["warmup"] and r["ok"]]
        n_reqs += len(reqs)
        all_prompt_ok &= all(
            r["prompt_tokens_reported"] == r["prompt_tokens_requested"] == r["server_prompt_n"] for r in reqs
        )
        all_gen_ok &= all(r["output_tokens"] == GEN for r in reqs)
        long = [r for r in reqs if r["prompt_tokens_requested"] == PROMPT]
        short = [r for r in reqs if r["prompt_tokens_requested"] == SHORT]
        truth = run_llama_bench(args.threads, ["-p", str(PROMPT), "-n", str(GEN), "-d", f"0,{PROMPT}"])
        pp = next(e for e in truth if e["n_prompt"] == PROMPT and e["n_gen"] == 0 and not e.get("n_depth"))
        tg = next(e for e in truth if e["n_gen"] == GEN and e["n_prompt"] == 0 and not e.get("n_depth"))
        tg_d = next(e for e in truth if e["n_gen"] == GEN and e["n_prompt"] == 0 and e.get("n_depth") == PROMPT)
        row = {
            "gen0": mean([r["gen_tps"] for r in short]),
            "server_gen0": mean([r["server_gen_tps"] for r in short]),
            "gen": mean([r["gen_tps"] for r in long]),
            "server_gen": mean([r["server_gen_tps"] for r in long]),
            "pp": mean([r["prompt_tps"] for r in long]),
            "server_pp": mean([r["server_prompt_tps"] for r in long]),
            "lb_tg": tg["avg_ts"],
            "lb_tg_d": tg_d["avg_ts"],
            "lb_pp": pp["avg_ts"],
        }
        rows.append(row)
        print(
            f"round {rnd + 1}: gen@d0 ours {row['gen0']:.2f} server {row['server_gen0']:.2f} llama-bench "
            f"{row['lb_tg']:.2f} | gen@d{PROMPT} ours {row['gen']:.2f} server {row['server_gen']:.2f} llama-bench "
            f"{row['lb_tg_d']:.2f} | pp ours {row['pp']:.1f} server {row['server_pp']:.1f} "
            f"llama-bench {row['lb_pp']:.1f}"
        )

    med = {k: median([r[k] for r in rows if r[k] is not None]) for k in rows[0]}

    def paired(a: str, b: str) -> float:
        return median([r[a] / r[b] for r in rows])

    print()
    print(f"requests measured: {n_reqs}; prompt tokens exact for all: {all_prompt_ok}", end="; ")
    print(f"gen == {GEN} for all: {all_gen_ok}")
    print(f"{'median over rounds (tok/s)':46} {'ours':>9} {'server':>9} {'llama-bench':>12}")
    print(f"{'gen, depth 0 (' + str(SHORT) + '-token prompt) vs tg' + str(GEN):46} ", end="")
    print(f"{med['gen0']:9.2f} {med['server_gen0']:9.2f} {med['lb_tg']:12.2f}")
    print(f"{'gen, depth ' + str(PROMPT) + ' vs tg' + str(GEN) + ' @ d' + str(PROMPT):46} ", end="")
    print(f"{med['gen']:9.2f} {med['server_gen']:9.2f} {med['lb_tg_d']:12.2f}")
    print(f"{'prompt ' + str(PROMPT) + ' vs pp' + str(PROMPT):46} ", end="")
    print(f"{med['pp']:9.2f} {med['server_pp']:9.2f} {med['lb_pp']:12.2f}")
    print("ours: gen = (out-1)/(E2E-TTFT), prompt = prompt_n/TTFT; server: timings.*_per_second")
    print()
    print("ratios (median of per-round ratios)")
    print(f"gen   ours / llama-bench tg64 (depth 0)      = {pct(paired('gen0', 'lb_tg'))}   goal within 3 %")
    print(f"gen   ours / llama-bench tg64 @ d{PROMPT:<4}       = {pct(paired('gen', 'lb_tg_d'))}   goal within 3 %")
    print(f"gen   ours / server predicted_per_second     = {pct(paired('gen0', 'server_gen0'))} (depth 0), ", end="")
    print(f"{pct(paired('gen', 'server_gen'))} (depth {PROMPT})   goal within 2 %")
    print(f"pp    ours / llama-bench pp{PROMPT}              = {pct(paired('pp', 'lb_pp'))}   (report)")
    print(f"pp    server / llama-bench pp{PROMPT}            = {pct(paired('server_pp', 'lb_pp'))}   (report)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
