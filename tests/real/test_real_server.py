"""Every user command against a real llama-server (built by our script) running SmolLM2-135M."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.helpers import (
    LLAMA_RUN,
    LiveOutput,
    free_port,
    http,
    pid_alive,
    run_cli,
    running_server,
    server_pid_from,
    spawn_cli,
    wait_until,
)

pytestmark = pytest.mark.real

G_TPS = re.compile(r"^\[tok\] now: p_tok/s (\d+\.\d+) g_tok/s (\d+\.\d+)")


def run_args(server: Path, model: Path, port: int, threads: str, *extra: str) -> list:
    # --allow-multi-server: the user's own llama-servers may run beside the tests.
    return ["run", "--llama-server", str(server), "--model", str(model), "--port", str(port), "-t", threads,
            "--allow-multi-server", *extra]  # fmt: skip


def test_plain_run_shows_generation_speed_and_exits_zero_with_server_gone(real_server, real_model, real_threads):
    port = free_port()
    args = run_args(real_server, real_model, port, real_threads, "--ui", "plain", "--interval", "0.5")
    live = LiveOutput(spawn_cli(LLAMA_RUN, *args, "--stats-interval", "1", "--duration", "20", "-c", "2048"))
    try:
        assert live.wait_for("ready at", 120), live.text()
        pid = server_pid_from(live.text())
        # Ready means ready: the very first request is served, no 503 "Loading model".
        status, body = http(
            "POST", f"http://127.0.0.1:{port}/completion", {"prompt": "Once upon a time", "n_predict": 48}, timeout=60
        )
        assert status == 200, body
        assert body["timings"]["predicted_n"] > 0
        assert wait_until(
            lambda: any(float(G_TPS.match(x).group(2)) > 0 for x in live.matching("[tok] now:")), 20
        ), live.text()
        assert live.finish(60) == 0, live.text()
    finally:
        live.kill_group()
    assert "llama-server exited with code" in live.text()
    assert not pid_alive(pid)


def test_stop_all_stops_a_real_server(real_server, real_model, real_threads):
    port = free_port()
    with running_server(port, "-m", str(real_model), "-t", real_threads, "-c", "1024", binary=real_server) as server:
        res = run_cli(LLAMA_RUN, "stop-all", "--port", str(port))  # never the user's own servers
        assert res.returncode == 0, res.stdout + res.stderr
        assert "Found llama-server processes:" in res.stdout
        assert f"pid {server.pid}" in res.stdout
        assert wait_until(lambda: server.poll() is not None, 15)


def test_prompt_larger_than_context_is_a_clear_error_not_a_hang(real_server, real_model, real_threads):
    port = free_port()
    with running_server(port, "-m", str(real_model), "-t", real_threads, "-c", "4096", binary=real_server):
        started = time.monotonic()
        status, body = http(
            "POST", f"http://127.0.0.1:{port}/completion", {"prompt": list(range(1, 20001)), "n_predict": 4}
        )
        assert time.monotonic() - started < 30  # an error, not a hang (bound generous for a loaded CI box)
        assert status == 400
        assert body["error"]["type"] == "exceed_context_size_error"
        assert body["error"]["n_prompt_tokens"] == 20000


def test_ctrl_c_during_start_leaves_nothing_running(real_server, real_model, real_threads):
    port = free_port()
    live = LiveOutput(spawn_cli(LLAMA_RUN, *run_args(real_server, real_model, port, real_threads, "--ui", "plain")))
    try:
        assert live.wait_for(", log ", 60), live.text()
        pid = server_pid_from(live.text())
        live.interrupt()
        assert live.finish(60) == 0, live.text()
    finally:
        live.kill_group()
    assert wait_until(lambda: not pid_alive(pid), 5)


def test_a_corrupt_model_is_refused_before_the_server_starts(real_server, real_threads, tmp_path):
    bad = tmp_path / "corrupt.gguf"
    bad.write_bytes(b"NOTAGGUF" * 4096)
    res = run_cli(LLAMA_RUN, *run_args(real_server, bad, free_port(), real_threads, "--ui", "plain"))
    assert res.returncode == 2, res.stdout + res.stderr
    assert "is not a GGUF file" in res.stderr and "Traceback" not in res.stderr
    assert "Starting llama-server" not in res.stdout


def test_a_model_cut_short_is_refused_with_what_is_missing(real_server, real_model, real_threads, tmp_path):
    # A valid header whose weights are cut in half (an interrupted download): caught before llama.cpp loads it.
    cut = tmp_path / "cut.gguf"
    with open(real_model, "rb") as src:
        cut.write_bytes(src.read(real_model.stat().st_size // 2))
    res = run_cli(LLAMA_RUN, *run_args(real_server, cut, free_port(), real_threads, "--ui", "plain"))
    assert res.returncode == 2, res.stdout + res.stderr
    assert "truncated" in res.stderr and "Traceback" not in res.stderr


def test_doctor_reports_generation_speed(real_server, real_model, real_threads):
    res = run_cli(
        LLAMA_RUN, "doctor", "--llama-server", str(real_server), "--model", str(real_model), "-t", real_threads,
        timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    match = re.search(r"gen tok/s\s+(\d+\.\d+)", res.stdout)
    assert match and float(match.group(1)) > 0, res.stdout
