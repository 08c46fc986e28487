"""Self-check: the binary runs, the model loads, the server answers and generates; one-screen summary."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from typing import Any, Dict, List, Optional, Tuple

from ..http import HttpClient, HttpError
from ..sysinfo import build_backend, cpu_model, server_version
from ..utils import ExitStatus, UserError
from .config import ServerConfig
from .managed import ManagedServer
from .ports import free_port
from .preflight import preflight


def _completion(client: HttpClient, n_predict: int) -> Dict[str, Any]:
    body = {"prompt": "The capital of France is", "n_predict": n_predict, "cache_prompt": False, "ignore_eos": True}
    resp = client.post("/completion", body, timeout=120)
    if resp.status != 200:
        raise UserError(f"/completion answered HTTP {resp.status}: {resp.text[:200]}", ExitStatus.FAILED)
    data = resp.json()
    if not isinstance(data, dict):
        raise UserError("/completion did not answer with a JSON object", ExitStatus.FAILED)
    return data


def run_doctor(cfg: ServerConfig, startup_timeout: float, skip_vram_check: bool = False) -> int:
    if cfg.models_dir:  # a router answers a completion only for a named model: check one model at a time
        raise UserError("doctor checks one model: pass --model (a file from the folder), not --models-dir")
    # A check must not collide with the user's own server: it runs on a free port of its own.
    cfg = replace(cfg, port=free_port(), ctx_size=cfg.ctx_size or 2048)
    checked = preflight(cfg, skip_fit_check=skip_vram_check)
    rows: List[Tuple[str, str]] = []

    def ok(name: str, value: str) -> None:
        rows.append((name, value))
        print(f"  ok  {name}: {value}", flush=True)

    info = server_version(cfg.binary)
    if info.get("version") is None:
        raise UserError(f"{cfg.binary} --version failed: {info.get('error') or 'no version line'}", ExitStatus.FAILED)
    ok("llama-server", f"{cfg.binary} (version {info['version']})")
    if checked.info is not None:
        ok("model header", checked.info.short())
    if checked.estimate is not None:
        ok("memory fits", checked.estimate.describe())
    for warning in checked.warnings:
        print(f"  warn {warning}", flush=True)
    server = ManagedServer(cfg, allow_multi_server=True)
    gen_tps: Optional[float] = None
    prompt_tps: Optional[float] = None
    try:
        server.start()
        load_s = server.wait_ready(startup_timeout)
        ok("model loads", f"{os.path.basename(cfg.model or '?')} in {load_s:.1f} s")
        client = HttpClient(server.base_url, api_key=server.api_key, timeout=10)
        try:
            if client.get("/health").status != 200:
                raise UserError("/health did not answer 200 after start-up", ExitStatus.FAILED)
            ok("/health", "200")
            first = _completion(client, 4)
            ok("completion", repr(first.get("content", ""))[:60])
            timings = _completion(client, 64).get("timings") or {}
            gen_tps = timings.get("predicted_per_second")
            prompt_tps = timings.get("prompt_per_second")
        except HttpError as exc:
            raise UserError(f"server stopped answering: {exc}", ExitStatus.FAILED) from exc
        finally:
            client.close()
    finally:
        server.stop()
    model_size = os.path.getsize(cfg.model) / 1e6 if cfg.model else 0.0
    print()
    print("llama.cpp studio — setup summary")
    summary = [
        ("llama.cpp", f"{info['version']}  built with {info.get('built_with') or '?'}"),
        ("backend", build_backend(cfg.binary) or ("cpu" if cfg.no_gpu else "as built")),
        ("server", cfg.binary),
        ("model", f"{cfg.model} ({model_size:.0f} MB)"),
        ("model header", checked.info.short() if checked.info else "-"),
        ("CPU", f"{cpu_model()} ({os.cpu_count()} logical cores)"),
        ("threads", str(cfg.threads) if cfg.threads else "llama.cpp default"),
        ("gen tok/s", f"{gen_tps:.1f}" if isinstance(gen_tps, (int, float)) else "-"),
        ("prompt tok/s", f"{prompt_tps:.1f}" if isinstance(prompt_tps, (int, float)) else "-"),
    ]
    width = max(len(k) for k, _ in summary)
    for key, value in summary:
        print(f"  {key:<{width}}  {value}")
    sys.stdout.flush()
    return ExitStatus.OK
