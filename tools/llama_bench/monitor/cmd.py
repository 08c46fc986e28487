"""`llama-bench monitor`: the sampling engine, headless, against any running server."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional

from .. import stopping
from ..endpoint import Readiness, check_ready
from ..http import HttpClient
from ..outputs import AppendFile, OutputFailed, OutputPath, report_failures, write_atomic
from ..ticker import Ticker
from ..utils import ExitStatus, UserError
from .sampler import Monitor, Snapshot

SCHEMA = "llama-studio.monitor/1"


@dataclass
class MonitorParams:
    endpoint: str  # base URL, validated by endpoint.normalize_endpoint
    api_key: Optional[str]
    interval: float
    duration: Optional[float] = None
    json_out: Optional[OutputPath] = None  # validated by outputs.output_path before anything runs
    jsonl: Optional[OutputPath] = None
    quiet: bool = False


def _record(snap: Snapshot) -> Dict[str, Any]:
    data = snap.to_dict()
    data.pop("energy", None)  # the summary object is kept as its text form
    return data


def sample_line(snap: Snapshot) -> str:
    if snap.error:
        return f"{snap.elapsed:7.1f}s  {snap.error}"
    now = snap.rates.now if snap.rates else None
    p = now.prompt_tps if now and now.prompt_tps is not None else 0.0
    g = now.gen_tps if now and now.gen_tps is not None else 0.0
    idle = " (idle)" if snap.idle else ""
    req = snap.requests_processing
    return f"{snap.elapsed:7.1f}s  p_tok/s {p:.2f} g_tok/s {g:.2f}{idle}  req {0 if req is None else int(req)}"


def _check_endpoint(endpoint: str, api_key: Optional[str]) -> None:
    probe = HttpClient(endpoint, api_key=api_key, timeout=5.0)
    try:
        check = check_ready(probe, timeout=5.0)
        if check.state is Readiness.UNREACHABLE:
            raise UserError(f"cannot reach {endpoint}: {check.detail}")
        if check.state is Readiness.UNAUTHORIZED:
            raise UserError(f"{endpoint} requires an API key: pass --api-key")
        status = probe.get("/metrics").status
    finally:
        probe.close()
    if status == 501:
        raise UserError(f"{endpoint} has no metrics: start llama-server with --metrics")
    if status == 401:
        raise UserError(f"{endpoint} requires an API key: pass --api-key")


def run_monitor(params: MonitorParams) -> int:
    _check_endpoint(params.endpoint, params.api_key)
    jsonl = AppendFile(params.jsonl).open() if params.jsonl else None
    monitor = Monitor(params.endpoint, params.interval, api_key=params.api_key, history=1_000_000)
    deadline = time.monotonic() + params.duration if params.duration else None
    ticker = Ticker(params.interval)
    try:
        while ticker.wait(deadline):
            stopping.check()
            snap = monitor.sample()
            if jsonl:
                jsonl.write_line(json.dumps(_record(snap)))  # flushed: a crash or Ctrl-C keeps every sample
            if not params.quiet:
                print(sample_line(snap), flush=True)
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM, SIGHUP: the normal way to end an open-ended monitor
        pass
    finally:
        stopping.ignore()
        monitor.stop()
        failures = []
        if jsonl:
            jsonl.close()
            failures += [jsonl.failed] if jsonl.failed else []
        if params.json_out:
            document = {
                "schema": SCHEMA,
                "endpoint": params.endpoint,
                "samples": [_record(s) for s in monitor.snapshots()],
            }
            try:
                write_atomic(params.json_out, lambda fh: json.dump(document, fh, indent=1))
            except OutputFailed as exc:
                failures.append(str(exc))
        report_failures("llama-bench", failures)
    return ExitStatus.OUTPUT_ERROR if failures else ExitStatus.OK
