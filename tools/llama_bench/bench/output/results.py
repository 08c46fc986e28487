"""Result files: the versioned JSON document (aggregates, per-request records, /metrics and /slots
series, environment manifest, capacity search), one CSV row per cell, and loading results back for
compare/plot/report (older schemas are upgraded on the fly)."""

from __future__ import annotations

import csv
import json
import os
import platform
import time
from dataclasses import asdict
from typing import IO, Any, Dict, List, Optional

from ...outputs import OutputPath, write_atomic
from ...utils import UserError, check_readable_file
from ...version import __version__
from ..plan import BenchParams, Cell, RunState
from ..probe import ServerInfo
from ..summary import FIELDS

SCHEMA = "llama-studio.benchmark/3"
SCHEMA_PREFIX = "llama-studio.benchmark/"

# One CSV column per Field key (the column is named after the key).
CSV_KEYS = [
    "label",
    "prompt_size",
    "concurrency",
    "status",
    "reason",
    "requests_sent",
    "requests_ok",
    "requests_failed",
    "requests_interrupted",
    "workload",
    "rate",
    "repeat_count",
    "duration_s",
    "prompt_tps",
    "gen_tps",
    "total_tps",
    "requests_per_s",
    *(f"{m}_{s}" for m in ("ttft", "tpot", "itl", "e2e") for s in ("mean", "p50", "p90", "p99", "min", "max")),
    "reasoning_ttft_p50",
    "queue_p50",
    "overhead_p50",
    "client_gen_tps_mean",
    "server_prompt_tps_mean",
    "server_gen_tps_mean",
    "slo_good_share",
    "goodput_rps",
    "goodput_gen_tps",
    "cache_hit_share",
    "cache_token_share",
    "ttft_cached_p50",
    "ttft_uncached_p50",
    "batched_share",
    "slots_busy_mean",
    "prompt_mismatches",
    "cache_hits",
    "stopped_early",
    "requests_deferred_max",
    "energy_wh",
    "gen_tokens_per_j",
    "tokens_per_j",
    "energy_unavailable",
]
# Latency columns carry their unit, as before: ttft_p50 -> ttft_p50_ms.
_MS_KEYS = {k for k in CSV_KEYS if FIELDS[k].unit == "ms"}


def csv_name(key: str) -> str:
    return f"{key}_ms" if key in _MS_KEYS else key


def host_manifest() -> Dict[str, Any]:
    """CPU model, cores, RAM, GPUs and OS of this machine."""
    import psutil

    from ...power.gpus import GpuReaders
    from ...sysinfo import cpu_model

    gpus: List[Dict[str, Any]] = []
    reader = GpuReaders()  # NVIDIA and AMD
    try:
        gpus = [asdict(g) for g in reader.gpus()]
        gpu_reason = None if reader.available else reader.reason
    finally:
        reader.close()
    return {
        "cpu_model": cpu_model(),
        "cpu_cores_physical": psutil.cpu_count(logical=False),
        "cpu_cores_logical": psutil.cpu_count(logical=True),
        "ram_total_bytes": psutil.virtual_memory().total,
        "gpus": gpus,
        "gpu_reason": gpu_reason,
        "os": platform.platform(),
        "python": platform.python_version(),
        "hostname": platform.node(),
    }


def model_manifest(path: Optional[str]) -> Optional[Dict[str, Any]]:
    """What the served model's GGUF header says, when the file is on this machine (None otherwise)."""
    if not path or not os.path.isfile(path):
        return None
    from ...models.gguf import read_model_info

    try:
        return read_model_info(path).to_dict()
    except UserError:
        return None


def environment_manifest(info: ServerInfo, started: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    server = info.to_dict()
    server["started_by_us"] = started is not None
    if started:
        server.update(started)
    return {
        "tool": {"name": "llama-bench", "version": __version__},
        "server": server,
        "model": model_manifest(info.model_path),
        "host": host_manifest(),
    }


def build_result(
    params: BenchParams,
    info: ServerInfo,
    api: str,
    cells: List[Cell],
    state: RunState,
    series: List[Dict[str, Any]],
    environment: Dict[str, Any],
    request_example: Optional[Dict[str, Any]],
    notes: List[str],
    jsonl_path: Optional[str],
    slots_series: Optional[List[Dict[str, Any]]] = None,
) -> Dict[str, Any]:
    records = [r.to_dict() for r in state.warmup_records]
    for cell in cells:
        for rec in cell.records:
            records.append({**rec.to_dict(), "prompt_size": cell.prompt_size, "concurrency": cell.concurrency})
    return {
        "schema": SCHEMA,
        "status": state.status,
        "stop_reason": state.stop_reason,
        "started_at": _iso(state.started_wall),
        "finished_at": _iso(state.finished_wall or time.time()),
        "api": api,
        "params": params.to_dict(),
        "workload": params.workload.to_dict(),
        "slo": params.slo.to_dict() if params.slo else None,
        "repeats": params.repeats,
        "request_example": request_example,
        "environment": environment,
        "notes": notes,
        "jsonl": jsonl_path,
        "cells": [c.to_dict() for c in cells],
        "requests": records,
        "metrics_series": series,
        "slots_series": slots_series or [],
    }


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(ts))


def write_json(out: OutputPath, result: Dict[str, Any]) -> None:
    """Write atomically: a crash or a full disk never leaves a truncated result behind."""

    def dump(fh: IO[str]) -> None:
        json.dump(result, fh, indent=1)
        fh.write("\n")

    write_atomic(out, dump)


def csv_rows(result: Dict[str, Any]) -> List[Dict[str, Any]]:
    rows = []
    for cell in result.get("cells", []):
        row: Dict[str, Any] = {}
        for key in CSV_KEYS:
            value = FIELDS[key].get(cell)
            if isinstance(value, list):
                value = len(value)
            elif isinstance(value, float):
                value = round(value, 4)
            row[csv_name(key)] = "" if value is None else value
        row["warnings"] = " | ".join(cell.get("warnings") or [])
        rows.append(row)
    return rows


def write_csv(out: OutputPath, result: Dict[str, Any]) -> None:
    rows = csv_rows(result)

    def dump(fh: IO[str]) -> None:
        writer = csv.DictWriter(fh, fieldnames=[csv_name(k) for k in CSV_KEYS] + ["warnings"])
        writer.writeheader()
        writer.writerows(rows)

    write_atomic(out, dump)


def _upgrade_v1(data: Dict[str, Any]) -> Dict[str, Any]:
    """Schema 1 called a cell's requested size and a record's server count both `prompt_tokens`."""
    for cell in data.get("cells") or []:
        if isinstance(cell, dict) and "prompt_tokens" in cell and "prompt_size" not in cell:
            cell["prompt_size"] = cell.pop("prompt_tokens")
    for rec in data.get("requests") or []:
        if isinstance(rec, dict) and "prompt_tokens" in rec and "prompt_tokens_reported" not in rec:
            rec["prompt_tokens_reported"] = rec.pop("prompt_tokens")
    data["schema"] = SCHEMA_PREFIX + "2"
    return data


def _upgrade_v2(data: Dict[str, Any]) -> Dict[str, Any]:
    """Schema 2's `params.repeats` meant rounds of `concurrency` requests per cell (now `rounds`); every
    cell ran once, with the unique-prompt workload, and there was no /slots series."""
    params = data.get("params")
    if isinstance(params, dict) and "rounds" not in params:
        params["rounds"] = params.pop("repeats", None)
        params["repeats"] = 1
    data.setdefault("repeats", 1)
    data.setdefault("slots_series", [])
    data.setdefault("workload", {"kind": "unique", "cache_prompt": False})
    for cell in data.get("cells") or []:
        if isinstance(cell, dict):
            cell.setdefault("repeat_count", 1)
            cell.setdefault("workload", "unique")
    data["schema"] = SCHEMA
    return data


def load_result(path: str) -> Dict[str, Any]:
    """A result written by --json-out (schemas 1 and 2 are upgraded on the fly); one clear error for anything else."""
    check_readable_file(path, "result file")
    try:
        with open(path, "r", encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise UserError(f"result file not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {path} as a benchmark result: {exc}") from None
    schema = data.get("schema") if isinstance(data, dict) else None
    if not isinstance(schema, str) or not schema.startswith(SCHEMA_PREFIX):
        raise UserError(f"{path} is not a llama-bench result (written with --json-out)")
    if schema == SCHEMA_PREFIX + "1":
        data = _upgrade_v1(data)
    if data.get("schema") == SCHEMA_PREFIX + "2":
        data = _upgrade_v2(data)
    elif data.get("schema") != SCHEMA:
        raise UserError(f"{path} uses schema {schema}; this version reads {SCHEMA}")
    problem = _structure_problem(data)
    if problem:
        raise UserError(f"{path} is a damaged llama-bench result: {problem}")
    return data


def _structure_problem(data: Dict[str, Any]) -> Optional[str]:
    """What compare/plot rely on, checked by type; None when it holds."""
    cells = data.get("cells")
    if not isinstance(cells, list):
        return "'cells' is not a list"
    for i, cell in enumerate(cells):
        if not isinstance(cell, dict):
            return f"cell {i} is not an object"
        for key in ("prompt_size", "concurrency"):
            value = cell.get(key)
            if isinstance(value, bool) or not isinstance(value, int):
                return f"cell {i} has no whole-number '{key}'"
        if not isinstance(cell.get("status"), str):
            return f"cell {i} has no 'status'"
        for key in ("requests", "latency", "throughput", "rates", "energy", "checks", "slo", "cache", "repeats"):
            if key in cell and cell[key] is not None and not isinstance(cell[key], dict):
                return f"cell {i}: '{key}' is not an object"
    for key in ("environment", "params", "capacity"):
        if key in data and data[key] is not None and not isinstance(data[key], dict):
            return f"'{key}' is not an object"
    return None
