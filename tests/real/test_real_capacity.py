"""A short capacity search on a real llama-server with the default model: it calibrates from what this
machine really does (so a CPU server is not swept at GPU rates), brackets, and ends with an answer
and a curve. Other programs may load the machine, so only the shape of the answer is checked here;
its accuracy against a known truth is checked on the fake server (tests/acceptance)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.helpers import LLAMA_BENCH, free_port, http, run_cli, running_server

pytestmark = pytest.mark.real


@pytest.mark.timeout(900)  # a loaded machine serves a tiny model slowly; the search adapts, the clock does not
def test_a_short_capacity_search_on_the_default_model(tmp_path: Path, real_server, real_model, real_threads) -> None:
    port = free_port()
    out = tmp_path / "cap.json"
    args = ("-m", str(real_model), "-t", real_threads, "-c", "2048", "-np", "2", "--metrics")
    with running_server(port, *args, binary=real_server, ready_timeout=120):
        # An SLO this machine can meet when idle and not under a pile-up: TTFT within one service time of
        # a lone request's, measured now (the machine may be busy with other work).
        t0 = time.monotonic()
        status, body = http(
            "POST",
            f"http://127.0.0.1:{port}/completion",
            {"prompt": "hello " * 30, "n_predict": 4, "cache_prompt": False},
            timeout=120,
        )
        service_ms = (time.monotonic() - t0) * 1000.0
        assert status == 200, body
        bound = body["timings"]["prompt_ms"] + service_ms
        res = run_cli(
            LLAMA_BENCH,
            "capacity",
            "--endpoint",
            f"http://127.0.0.1:{port}",
            "--prompt-sizes",
            "32",
            "--max-output-tokens",
            "4",
            "--warmup",
            "0",
            "--slo",
            f"ttft_p50={bound:.0f}ms",
            "--requests-per-step",
            "6",
            "--precision",
            "0.6",
            "--json-out",
            str(out),
            "--jsonl",
            str(tmp_path / "r.jsonl"),
            timeout=900,
        )
    assert res.returncode == 0, res.stdout + res.stderr
    cap = json.loads(out.read_text(encoding="utf-8"))["capacity"]
    steps = [(p["step"], p["phase"], round(p["rate"], 2), p["passed"], p["ttft_p50"]) for p in cap["curve"]]
    assert cap["outcome"] in ("found", "at-least"), (cap["outcome"], cap["reason"], bound, sorted(steps))
    assert cap["slots"] == 2 and cap["service_time_s"] > 0
    assert cap["initial_estimate"] == pytest.approx(2 / cap["service_time_s"])
    assert cap["capacity"] > 0 and (cap["upper"] is None or cap["upper"] > cap["lower"])
    rates = [p["rate"] for p in cap["curve"]]
    # It started from what it measured: half the estimate (an eighth when the calibration missed the SLO);
    # from there it halves or doubles, so the lowest rate need not be the first.
    first = min(cap["curve"], key=lambda p: p["step"])
    assert first["step"] == 1 and first["phase"] == "bracket"
    assert any(first["rate"] == pytest.approx(cap["initial_estimate"] / k) for k in (2, 8)), cap["curve"]
    assert max(rates) <= cap["initial_estimate"] * 2 ** len(rates)
    for point in cap["curve"]:
        assert point["requests_ok"] > 0 and point["ttft_p50"] > 0 and point["requests_per_s"] > 0
    assert "capacity:" in res.stdout and "Capacity curve" in res.stdout
