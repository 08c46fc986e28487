"""`llama-bench monitor`: the headless sampling engine against a server it did not start."""

from __future__ import annotations

import json

from tests.helpers import LLAMA_BENCH, free_port, http, run_cli, running_server


def test_monitor_writes_a_series_that_sees_served_tokens(tmp_path):
    port = free_port()
    out, lines = tmp_path / "series.json", tmp_path / "series.jsonl"
    with running_server(port, "--metrics", "--token-interval-ms", "1"):
        status, _ = http("POST", f"http://127.0.0.1:{port}/completion", {"prompt": "a b c", "n_predict": 30})
        assert status == 200
        res = run_cli(
            LLAMA_BENCH, "monitor", "--endpoint", f"http://127.0.0.1:{port}", "--interval", "0.2", "--duration", "1.5",
            "--json-out", str(out), "--jsonl", str(lines),
        )  # fmt: skip
    assert res.returncode == 0, res.stderr
    series = json.loads(out.read_text(encoding="utf-8"))
    assert series["schema"] == "llama-studio.monitor/1"
    samples = series["samples"]
    assert len(samples) >= 3
    assert len(lines.read_text(encoding="utf-8").splitlines()) == len(samples)
    last = samples[-1]
    assert last["rates"]["gen_tokens_total"] == 30
    assert last["slots"]["total"] >= 1
    assert "p_tok/s" in res.stdout


def test_monitor_of_an_unreachable_endpoint_is_one_clear_line():
    res = run_cli(LLAMA_BENCH, "monitor", "--endpoint", f"http://127.0.0.1:{free_port()}", "--duration", "1")
    assert res.returncode == 2
    assert res.stderr.strip().startswith("llama-bench: error: cannot reach")
    assert len(res.stderr.strip().splitlines()) == 1


def test_monitor_explains_a_server_without_metrics():
    port = free_port()
    with running_server(port):
        res = run_cli(LLAMA_BENCH, "monitor", "--endpoint", f"http://127.0.0.1:{port}", "--duration", "1")
    assert res.returncode == 2
    assert "--metrics" in res.stderr
