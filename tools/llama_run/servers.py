"""`llama-run ps` and `llama-run stop-all`."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from tools.llama_bench.procs import find_servers, stop_process
from tools.llama_bench.utils import fmt_duration


def ps(args: argparse.Namespace) -> int:
    servers = find_servers()
    if args.json:
        rows = [asdict(s) | {"uptime_s": round(s.uptime, 1)} for s in servers]
        print(json.dumps(rows, indent=2))
        return 0
    if not servers:
        print("No llama-server running.")
        return 0
    print(f"{'PID':>7}  {'PORT':>5}  {'UPTIME':>8}  {'BY':<6}  MODEL")
    for s in servers:
        by = "us" if s.ours else "other"
        print(f"{s.pid:>7}  {s.port or '-':>5}  {fmt_duration(s.uptime):>8}  {by:<6}  {s.model or '-'}")
    return 0


def stop_all(args: argparse.Namespace) -> int:
    servers = find_servers()
    if not servers:
        print("No llama-server processes found.")
        return 0
    print("Found llama-server processes:")
    for s in servers:
        print(f"  pid {s.pid}  port {s.port or '-'}  {s.command}")
    if args.dry_run:
        print("Dry run: nothing stopped.")
        return 0
    failed = 0
    for s in servers:
        result = stop_process(s.pid, s.create_time, grace=args.grace)
        print(f"  pid {s.pid}: {result.outcome}")
        failed += result.outcome.startswith("failed")
    print(f"Stopped {len(servers) - failed} of {len(servers)} llama-server process(es).")
    return 1 if failed else 0
