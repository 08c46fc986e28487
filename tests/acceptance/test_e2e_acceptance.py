"""End-to-end behaviour of `./llama-run`, run as a user would, against the fake llama-server.

Every server these tests start is their own: `--allow-multi-server` keeps them independent of any
llama-server the developer runs, and `stop-all` is scoped by `--pid`/`--port` (or runs in a private
PID namespace) so it never touches a process the test did not start.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Iterator, List

import pytest

from tests.helpers import (
    FAKE_SERVER,
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
from tests.isolation import run_in_private_pid_namespace

TOK_LINE = re.compile(r"^\[tok\] (now|1m|15m|all): p_tok/s (\d+\.\d+) g_tok/s (\d+\.\d+) p_tok (\d+) g_tok (\d+)")


def run_args(model: Path, port: int, *extra: str) -> List[str]:
    """`llama-run run` of the fake server on `port`, independent of other running servers."""
    return ["run", "--llama-server", str(FAKE_SERVER), "--model", str(model), "--port", str(port),
            "--allow-multi-server", *extra]  # fmt: skip


@pytest.fixture
def start_run(model_file: Path) -> Iterator:
    """Start `llama-run run --ui plain` in the background; everything it started is killed at the end."""
    started: List[LiveOutput] = []

    def start(port: int, *extra: str) -> LiveOutput:
        args = run_args(model_file, port, "--ui", "plain", "--interval", "0.2", "--stats-interval", "1", *extra)
        started.append(LiveOutput(spawn_cli(LLAMA_RUN, *args)))
        return started[-1]

    yield start
    for live in started:
        live.kill_group()


def test_llama_run_plain_mode_prints_stats_and_exits_cleanly(start_run) -> None:
    live = start_run(free_port())
    assert live.wait_for("[tok] all:", 30), live.text()
    server_pid = server_pid_from(live.text())
    assert server_pid is not None
    live.interrupt()
    assert live.finish() == 0, live.text()
    out = live.text()
    for prefix in ("[sys] now:", "[sys] 1m:", "[sys] 15m:", "[sys] all:"):
        assert prefix in out
    for line in live.matching("[tok]"):
        assert TOK_LINE.match(line), line
    assert re.search(r"llama-server exited with code -?\d+", out)
    assert not pid_alive(server_pid), "the server outlived llama-run"


def test_generated_tokens_per_s_show_up_in_plain_stats(start_run) -> None:
    port = free_port()
    live = start_run(port, "--", "--token-interval-ms", "2")
    assert live.wait_for("[tok] now:", 30), live.text()
    status, body = http("POST", f"http://127.0.0.1:{port}/completion", {"prompt": "hello there", "n_predict": 200})
    assert status == 200, body

    def g_tps(line: str) -> float:
        match = TOK_LINE.match(line)
        assert match, line
        return float(match.group(3))

    assert wait_until(lambda: any(g_tps(x) > 0 for x in live.matching("[tok] now:")), 15), live.text()
    # Once idle, `now` keeps showing the speed of the last burst instead of dropping to zero.
    assert live.wait_for("(idle, last burst)", 15)
    idle_lines = [x for x in live.matching("[tok] now:") if "idle, last burst" in x]
    assert g_tps(idle_lines[-1]) > 0.0
    all_line = TOK_LINE.match(live.matching("[tok] all:")[-1])
    assert all_line and int(all_line.group(5)) >= 200
    live.interrupt()
    assert live.finish() == 0


def test_duration_stops_the_server_and_exits_zero(start_run) -> None:
    live = start_run(free_port(), "--duration", "1.5")
    assert live.finish(60) == 0, live.text()
    pid = server_pid_from(live.text())
    assert "llama-server exited with code" in live.text()
    assert pid is not None and not pid_alive(pid)


def test_server_that_dies_on_its_own_gives_nonzero_exit(start_run) -> None:
    port = free_port()
    live = start_run(port, "--", "--crash-after", "0")
    assert live.wait_for("[tok] now:", 30), live.text()
    with pytest.raises(OSError):  # the server dies mid-request
        http("POST", f"http://127.0.0.1:{port}/completion", {"prompt": "x", "n_predict": 4}, timeout=5)
    assert live.finish(30) != 0
    assert "llama-server exited with code" in live.text()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_stop_the_server_like_ctrl_c(start_run, sig: signal.Signals) -> None:
    live = start_run(free_port())
    assert live.wait_for("ready at", 30), live.text()
    pid = server_pid_from(live.text())
    live.proc.send_signal(sig)
    assert live.finish() == 0, live.text()
    assert pid is not None and not pid_alive(pid)


def test_sigkill_of_llama_run_does_not_leave_the_server_running(start_run) -> None:
    live = start_run(free_port())
    assert live.wait_for("ready at", 30), live.text()
    pid = server_pid_from(live.text())
    live.proc.kill()  # SIGKILL: no handler of ours runs
    live.finish()
    assert pid is not None and wait_until(lambda: not pid_alive(pid), 5), "server survived its parent's SIGKILL"


def test_ctrl_c_during_model_load_leaves_nothing_running(start_run) -> None:
    live = start_run(free_port(), "--", "--load-delay", "30")
    assert live.wait_for("pid ", 30), live.text()
    pid = server_pid_from(live.text())
    time.sleep(0.5)
    live.interrupt()
    assert live.finish() == 0, live.text()
    assert pid is not None and not pid_alive(pid)


def test_port_in_use_is_refused_and_names_the_holder(model_file: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        res = run_cli(LLAMA_RUN, *run_args(model_file, port))
    assert res.returncode == 2
    assert f"port {port} is already in use" in res.stderr
    assert "python" in res.stderr  # the holder, as far as the OS tells us
    assert "Traceback" not in res.stderr


def test_second_server_is_refused_unless_allowed(model_file: Path) -> None:
    # The "other" server is one this test starts, so the refusal does not depend on what else runs.
    with running_server(free_port()):
        base = ["run", "--llama-server", str(FAKE_SERVER), "--model", str(model_file), "--port", str(free_port())]
        res = run_cli(LLAMA_RUN, *base)
        assert res.returncode == 2, res.stdout + res.stderr
        assert "already running" in res.stderr
        assert "--allow-multi-server" in res.stderr
        ok = run_cli(LLAMA_RUN, *run_args(model_file, free_port(), "--ui", "plain", "--duration", "1"))
        assert ok.returncode == 0, ok.stdout + ok.stderr


def test_failed_start_reports_exit_code_and_log_lines(model_file: Path) -> None:
    res = run_cli(LLAMA_RUN, *run_args(model_file, free_port(), "--", "--fail-start"))
    assert res.returncode == 1
    assert "exited with code 1" in res.stderr
    assert "failed to load model" in res.stderr
    assert "Traceback" not in res.stderr


def test_load_longer_than_startup_timeout_is_a_clear_error(model_file: Path) -> None:
    res = run_cli(LLAMA_RUN, *run_args(model_file, free_port(), "--startup-timeout", "1", "--", "--load-delay", "20"))
    assert res.returncode == 1
    assert "did not become ready within 1 s" in res.stderr
    assert "Traceback" not in res.stderr
    pid = server_pid_from(res.stdout)
    assert pid is not None and not pid_alive(pid)


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--port", "0"], "invalid port 0"),
        (["--port", "abc"], "invalid port 'abc'"),
        (["--interval", "-1"], "--interval"),
        (["--interval", "abc"], "--interval"),
        (["--model", "/nonexistent/model.gguf"], "model file not found"),
        (["--llama-server", "/nonexistent/llama-server"], "llama-server not found"),
    ],
)
def test_bad_flag_values_give_one_line_errors(model_file: Path, flags: List[str], needle: str) -> None:
    res = run_cli(LLAMA_RUN, "run", "--llama-server", str(FAKE_SERVER), "--model", str(model_file), *flags)
    assert res.returncode == 2, (flags, res.stderr)
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr  # no usage block, no traceback
    assert re.match(r"^llama-run( run)?: error: ", res.stderr), res.stderr
    assert needle in res.stderr


def test_no_subcommand_means_run(model_file: Path) -> None:
    args = ["--llama-server", str(FAKE_SERVER), "--model", str(model_file), "--port", str(free_port())]
    live = LiveOutput(spawn_cli(LLAMA_RUN, *args, "--allow-multi-server", "--ui", "plain", "--duration", "1"))
    try:
        assert live.finish(60) == 0, live.text()
    finally:
        live.kill_group()
    assert "ready at" in live.text()


def test_detach_leaves_the_server_running_and_ps_lists_it(model_file: Path) -> None:
    port = free_port()
    res = run_cli(LLAMA_RUN, *run_args(model_file, port, "--detach"))
    assert res.returncode == 0, res.stderr
    pid = server_pid_from(res.stdout)
    assert pid is not None
    try:
        assert pid_alive(pid)
        ps = run_cli(LLAMA_RUN, "ps")
        row = next((line.split() for line in ps.stdout.splitlines() if line.split()[:1] == [str(pid)]), None)
        assert row is not None, ps.stdout
        assert row[1] == str(port) and row[3:5] == ["us", "(detached)"], row
        listed = {s["pid"]: s for s in json.loads(run_cli(LLAMA_RUN, "ps", "--json").stdout)}
        assert listed[pid]["ours"] and listed[pid]["detached"] and listed[pid]["owner_pid"]
    finally:
        stop = run_cli(LLAMA_RUN, "stop-all", "--pid", str(pid))
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert wait_until(lambda: not pid_alive(pid), 10)


# -- stop-all ------------------------------------------------------------------------------------------
def decoy_process(port: int) -> subprocess.Popen:
    """An unrelated program whose *arguments* mention llama-server."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "llama-server", "--port", str(port)])


def test_stop_all_by_port_stops_only_that_server_and_spares_a_decoy() -> None:
    port, other_port = free_port(), free_port()
    decoy = decoy_process(port)
    try:
        with running_server(port) as server, running_server(other_port) as other:
            dry = run_cli(LLAMA_RUN, "stop-all", "--port", str(port), "--dry-run")
            assert dry.returncode == 0
            assert "Found llama-server processes:" in dry.stdout and f"pid {server.pid} " in dry.stdout
            assert str(decoy.pid) not in dry.stdout and str(other.pid) not in dry.stdout
            assert server.poll() is None

            res = run_cli(LLAMA_RUN, "stop-all", "--port", str(port))
            assert res.returncode == 0, res.stdout + res.stderr
            assert f"pid {server.pid}: stopped" in res.stdout
            assert wait_until(lambda: server.poll() is not None, 15)
            assert other.poll() is None, "stop-all --port stopped a server on another port"
        assert decoy.poll() is None, "stop-all touched a process that merely mentions llama-server"
    finally:
        decoy.kill()
        decoy.wait()


def test_stop_all_force_kills_at_once_and_pid_filter_matches_nothing_else() -> None:
    with running_server(free_port(), "--ignore-sigterm") as server:
        res = run_cli(LLAMA_RUN, "stop-all", "--pid", str(server.pid), "--force")
        assert res.returncode == 0, res.stdout + res.stderr
        assert f"pid {server.pid}: killed" in res.stdout
        assert wait_until(lambda: server.poll() is not None, 5)
    nothing = run_cli(LLAMA_RUN, "stop-all", "--pid", str(server.pid))
    assert nothing.returncode == 0 and f"No llama-server processes found with pid {server.pid}" in nothing.stdout


def test_stop_all_timeout_is_the_grace_before_sigkill() -> None:
    with running_server(free_port(), "--ignore-sigterm") as server:
        started = time.monotonic()
        res = run_cli(LLAMA_RUN, "stop-all", "--pid", str(server.pid), "--timeout", "0.5")
        assert res.returncode == 0, res.stdout + res.stderr
        assert f"pid {server.pid}: killed" in res.stdout
        assert time.monotonic() - started < 9  # far below the default 10 s grace


# The unfiltered stop-all acts on every llama-server of the user: these run in a private PID namespace.
UNFILTERED_STOP_ALL = textwrap.dedent("""
    import json, subprocess, sys, time
    from tests.helpers import FAKE_SERVER, LLAMA_RUN, free_port, is_healthy, run_cli, wait_until
    port = free_port()
    decoy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "llama-server", "--port", str(port)])
    server = subprocess.Popen([str(FAKE_SERVER), "--port", str(port)], stdout=subprocess.DEVNULL)
    assert wait_until(lambda: is_healthy(port), 30)
    dry = run_cli(LLAMA_RUN, "stop-all", "--dry-run")
    res = run_cli(LLAMA_RUN, "stop-all")
    stopped = wait_until(lambda: server.poll() is not None, 15)
    again = run_cli(LLAMA_RUN, "stop-all")
    print(json.dumps({"server": server.pid, "decoy": decoy.pid, "decoy_alive": decoy.poll() is None,
                      "stopped": stopped, "dry": dry.stdout, "res": [res.returncode, res.stdout],
                      "again": [again.returncode, again.stdout]}))
    decoy.kill()
    """)


def test_unfiltered_stop_all_stops_every_server_and_spares_a_decoy() -> None:
    proc = run_in_private_pid_namespace(UNFILTERED_STOP_ALL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert f"pid {out['server']} " in out["dry"] and f"pid {out['decoy']} " not in out["dry"]
    assert out["res"][0] == 0 and f"pid {out['server']}: stopped" in out["res"][1]
    assert out["stopped"] and out["decoy_alive"]
    assert out["again"] == [0, "No llama-server processes found.\n"]
