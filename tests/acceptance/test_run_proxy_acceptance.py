"""`llama-run run --proxy on`: the token-meter proxy on the public port, llama-server behind it, one
lifecycle for both, and every request metered in the live view and the history."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path
from typing import Dict, List

import pytest

from tests.helpers import (
    FAKE_SERVER,
    LLAMA_RUN,
    LiveOutput,
    free_port,
    http,
    is_healthy,
    pid_alive,
    run_cli,
    spawn_cli,
    wait_until,
)

REQ = re.compile(
    r"^\[req\] (\S+) (\S+) (\d+|-): p_tok (\d+|-) c_tok (\d+|-) g_tok (\d+|-) ttft_ms (\S+) g_tok/s (\S+) "
    r"dur_s (\S+) finish (\S+) outcome (\S+) model (\S+)$"
)


def start(model: Path, port: int, *extra: str) -> LiveOutput:
    args = ["run", "--llama-server", str(FAKE_SERVER), "--model", str(model), "--port", str(port),
            "--allow-multi-server", "--proxy", "on", "--ui", "plain", "--interval", "0.2", "--stats-interval", "0.5",
            *extra]  # fmt: skip
    return LiveOutput(spawn_cli(LLAMA_RUN, *args))


def pids(text: str) -> Dict[str, int]:
    server = re.search(r"^  pid (\d+), log ", text, re.M)
    proxy = re.search(r"token-meter proxy: pid (\d+) on ", text)
    assert server and proxy, text
    return {"server": int(server.group(1)), "proxy": int(proxy.group(1))}


def chat(port: int, client: str, tokens: int, stream: bool) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": tokens, "stream": stream}
    status, _ = http("POST", f"http://127.0.0.1:{port}/v1/chat/completions", body, headers={"X-Client-Name": client})
    assert status == 200


def test_requests_through_the_public_port_are_metered_live_and_in_the_history(model_file: Path) -> None:
    port = free_port()
    live = start(model_file, port)
    try:
        assert live.wait_for(f"ready at http://127.0.0.1:{port} (proxy", 30), live.text()
        procs = pids(live.text())
        chat(port, "editor", 12, stream=True)
        chat(port, "agent", 7, stream=False)
        status, _ = http("POST", f"http://127.0.0.1:{port}/completion", {"prompt": "x", "n_predict": 5})
        assert status == 200
        assert wait_until(lambda: len(live.matching("[req]")) == 3, 15), live.text()
        assert live.wait_for("[proxy] in_flight 0", 10)
        live.interrupt()
        assert live.finish(30) == 0, live.text()
    finally:
        live.kill_group()
    lines: List[re.Match] = [m for m in (REQ.match(x) for x in live.matching("[req]")) if m]
    assert len(lines) == 3, live.matching("[req]")
    by_client = {m.group(1): m for m in lines}
    assert by_client["editor"].group(2) == "/v1/chat/completions" and by_client["editor"].group(6) == "12"
    assert by_client["agent"].group(6) == "7" and by_client["agent"].group(11) == "ok"
    assert any(m.group(2) == "/completion" and m.group(6) == "5" for m in lines)
    # One lifecycle: Ctrl-C stopped the proxy and the server.
    assert not pid_alive(procs["server"]) and not pid_alive(procs["proxy"])
    assert not is_healthy(port)
    usage = json.loads(run_cli(LLAMA_RUN, "usage", "--json").stdout)
    rows = {r["key"]: r for r in usage["rows"]}  # grouped by client
    assert rows["editor"]["generated_tokens"] == 12 and rows["agent"]["generated_tokens"] == 7


def test_sigkill_of_llama_run_leaves_neither_the_server_nor_the_proxy(model_file: Path) -> None:
    port = free_port()
    live = start(model_file, port)
    try:
        assert live.wait_for("ready at", 30), live.text()
        procs = pids(live.text())
        live.proc.send_signal(signal.SIGKILL)
        live.finish()
    finally:
        live.kill_group()
    assert wait_until(lambda: not pid_alive(procs["server"]) and not pid_alive(procs["proxy"]), 15)


def test_ps_and_stop_all_know_the_public_port(model_file: Path) -> None:
    port = free_port()
    live = start(model_file, port)
    try:
        assert live.wait_for("ready at", 30), live.text()
        procs = pids(live.text())
        ps = run_cli(LLAMA_RUN, "ps").stdout
        assert re.search(rf"^\s*{procs['server']}\s+{port}>\d+\s", ps, re.M), ps
        stop = run_cli(LLAMA_RUN, "stop-all", "--port", str(port))
        assert f"pid {procs['server']}: stopped" in stop.stdout, stop.stdout + stop.stderr
        assert live.finish(30) != 0  # the server went away under llama-run: that is a failure for it
    finally:
        live.kill_group()
    assert wait_until(lambda: not pid_alive(procs["proxy"]), 15), "the proxy outlived its server"


@pytest.mark.parametrize(
    "flags, needle",
    [(["--proxy", "on", "--detach"], "--detach leaves only the server running"),
     (["--clients", "/nonexistent.toml"], "--clients needs --proxy on"),
     (["--proxy", "on", "--clients", "/nonexistent.toml"], "no such file"),
     (["--proxy", "on", "--clients", "BAD"], "not valid TOML")],
)  # fmt: skip
def test_proxy_flag_combinations_are_checked_first(
    model_file: Path, tmp_path: Path, flags: List[str], needle: str
) -> None:
    bad = tmp_path / "clients.toml"
    bad.write_text("[clients.alice\nkey = 1\n", encoding="utf-8")  # before the model loads, not after
    flags = [str(bad) if f == "BAD" else f for f in flags]
    args = ["run", "--llama-server", str(FAKE_SERVER), "--model", str(model_file), "--port", str(free_port()),
            "--allow-multi-server", *flags]  # fmt: skip
    res = run_cli(LLAMA_RUN, *args)
    assert res.returncode == 2
    [line] = res.stderr.strip().splitlines()
    assert needle in line and "Starting llama-server" not in res.stdout
