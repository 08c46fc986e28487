"""`llama-bench monitor`: the sampling engine, headless, against any running server."""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import IO, Any, Dict, Optional

from .http import HttpClient, HttpError
from .monitor import Monitor, Snapshot
from .utils import UserError


def _record(snap: Snapshot) -> Dict[str, Any]:
    data = snap.to_dict()
    data.pop("energy", None)  # the summary object is kept as its text form
    return data


def _line(snap: Snapshot) -> str:
    if snap.error:
        return f"{snap.elapsed:7.1f}s  {snap.error}"
    now = snap.rates.now if snap.rates else None
    p = now.prompt_tps if now and now.prompt_tps is not None else 0.0
    g = now.gen_tps if now and now.gen_tps is not None else 0.0
    idle = " (idle)" if snap.rates and snap.rates.now_idle else ""
    req = snap.requests_processing
    return f"{snap.elapsed:7.1f}s  p_tok/s {p:.2f} g_tok/s {g:.2f}{idle}  req {0 if req is None else int(req)}"


def run_monitor(args: argparse.Namespace) -> int:
    endpoint = args.endpoint.rstrip("/")
    if not endpoint.startswith(("http://", "https://")):
        raise UserError(f"--endpoint must be an http(s) URL, got '{args.endpoint}'")
    api_key = args.api_key or os.environ.get("LLAMA_API_KEY")
    probe = HttpClient(endpoint, api_key=api_key, timeout=5.0)
    try:
        status = probe.get("/metrics").status
    except HttpError as exc:
        raise UserError(f"cannot reach {endpoint}: {exc}") from exc
    finally:
        probe.close()
    if status == 501:
        raise UserError(f"{endpoint} has no metrics: start llama-server with --metrics")
    if status == 401:
        raise UserError(f"{endpoint} requires an API key: pass --api-key")

    jsonl: Optional[IO[str]] = open(args.jsonl, "a", encoding="utf-8") if args.jsonl else None
    monitor = Monitor(endpoint, args.interval, api_key=api_key, history=1_000_000)
    deadline = time.monotonic() + args.duration if args.duration else None
    try:
        next_at = time.monotonic()
        while deadline is None or time.monotonic() < deadline:
            snap = monitor.sample()
            if jsonl:
                jsonl.write(json.dumps(_record(snap)) + "\n")
                jsonl.flush()  # a crash or Ctrl-C keeps every sample taken so far
            if not args.quiet:
                print(_line(snap), flush=True)
            next_at += args.interval
            delay = next_at - time.monotonic()
            if deadline is not None:
                delay = min(delay, deadline - time.monotonic())
            if delay > 0:
                time.sleep(delay)
    except KeyboardInterrupt:
        pass
    finally:
        monitor.stop()
        if jsonl:
            jsonl.close()
        if args.json_out:
            series = [_record(s) for s in monitor.snapshots()]
            with open(args.json_out, "w", encoding="utf-8") as fh:
                json.dump({"schema": "llama-studio.monitor/1", "endpoint": endpoint, "samples": series}, fh, indent=1)
    return 0
