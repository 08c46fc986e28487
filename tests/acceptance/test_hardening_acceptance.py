"""Hostile conditions, as a user meets them: outputs that cannot be written, a terminal that goes away,
signals at any time, endpoints that trickle, bad settings and state, odd hosts, wrapper scripts.
Nothing is lost, nothing overwritten that is not ours, nothing hangs, and every failure is one line."""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator, List

import pytest

from tests.helpers import (
    FAKE_SERVER,
    LLAMA_BENCH,
    LLAMA_RUN,
    REPO,
    LiveOutput,
    free_port,
    http,
    is_healthy,
    pid_alive,
    run_cli,
    running_server,
    server_pid_from,
    spawn_cli,
    wait_until,
)

QUICK = ("--prompt-sizes", "100", "--max-output-tokens", "8", "--num-requests", "2", "--warmup", "1", "--quiet")


@pytest.fixture
def fake_port() -> Iterator[int]:
    port = free_port()
    with running_server(port, "--metrics", "--token-interval-ms", "2"):
        yield port


def bench_args(port: int, tmp_path: Path, *extra: str) -> List[str]:
    return ["benchmark", "--endpoint", f"http://127.0.0.1:{port}", "--jsonl", str(tmp_path / "r.jsonl"), *extra]


def one_line(text: str) -> str:
    lines = [x for x in text.strip().splitlines() if x.strip()]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def shell(command: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `command` in bash with pipefail, from the repo root."""
    return subprocess.run(
        ["bash", "-c", f"set -o pipefail; {command}"], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


# -- 1. output files: checked before the work, never clobbering what is not ours ----------------------
@pytest.mark.parametrize("flag", ["--json-out", "--csv", "--jsonl"])
def test_an_output_path_that_is_a_directory_is_refused_before_anything_runs(tmp_path: Path, flag: str) -> None:
    # The endpoint does not answer: had the run started, the error would be "cannot reach".
    res = run_cli(LLAMA_BENCH, "benchmark", "--endpoint", "http://127.0.0.1:9", flag, str(tmp_path))
    assert res.returncode == 2
    assert f"{flag}: {tmp_path} is a directory" in one_line(res.stderr)


def test_a_missing_parent_or_a_parent_that_is_a_file_is_refused(tmp_path: Path) -> None:
    missing = run_cli(LLAMA_BENCH, "benchmark", "--json-out", str(tmp_path / "no" / "r.json"))
    assert missing.returncode == 2 and "does not exist" in one_line(missing.stderr)
    (tmp_path / "file").write_text("x", encoding="utf-8")
    under_file = run_cli(LLAMA_BENCH, "monitor", "--endpoint", "http://x:1", "--json-out", str(tmp_path / "file" / "s"))
    assert under_file.returncode == 2 and "is not a directory" in one_line(under_file.stderr)


def test_tilde_is_expanded_once_and_the_same_way_for_every_output(tmp_path: Path) -> None:
    env = dict(os.environ, HOME=str(tmp_path))
    res = run_cli(LLAMA_BENCH, "plot", "~/nothing.json", "--out", "~/missing-dir/p.png", env=env)
    assert res.returncode == 2 and f"{tmp_path}/missing-dir" in one_line(res.stderr)


def test_two_outputs_naming_the_same_file_are_refused(tmp_path: Path) -> None:
    target = str(tmp_path / "same")
    res = run_cli(LLAMA_BENCH, "benchmark", "--json-out", target, "--csv", target)
    assert res.returncode == 2 and "name the same file" in one_line(res.stderr)


@pytest.mark.parametrize("flag", ["--json-out", "--csv", "--jsonl"])
def test_an_output_that_is_the_dataset_it_reads_is_refused(tmp_path: Path, flag: str) -> None:
    dataset = tmp_path / "lengths.jsonl"
    dataset.write_bytes((REPO / "tests" / "data" / "lengths_sample.jsonl").read_bytes())
    before = dataset.read_bytes()
    res = run_cli(LLAMA_BENCH, "benchmark", "--endpoint", "http://127.0.0.1:9", "--dataset", str(dataset),
                  flag, str(dataset))  # fmt: skip
    assert res.returncode == 2 and "is the --dataset file it reads" in one_line(res.stderr)
    assert dataset.read_bytes() == before


def test_a_chart_name_made_up_from_the_result_never_replaces_a_users_file(tmp_path: Path) -> None:
    mine = tmp_path / "run.png"
    mine.write_bytes(b"my picture")
    res = run_cli(LLAMA_BENCH, "plot", str(tmp_path / "run.json"))
    assert res.returncode == 2 and "was not written by llama-bench: give --out" in one_line(res.stderr)
    assert mine.read_bytes() == b"my picture"


@pytest.mark.parametrize(
    "argv",
    [["compare", "{fifo}", "{fifo}"], ["report", "{fifo}", "--html", "{tmp}/r.html"], ["plot", "{fifo}", "--out",
     "{tmp}/p.png"], ["benchmark", "--endpoint", "http://127.0.0.1:9", "--dataset", "{fifo}"]],
)  # fmt: skip
def test_an_input_that_is_a_fifo_is_refused_instead_of_read_for_ever(tmp_path: Path, argv: List[str]) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    res = run_cli(LLAMA_BENCH, *(a.format(fifo=fifo, tmp=tmp_path) for a in argv), timeout=30)
    assert res.returncode == 2 and "is not a regular file" in one_line(res.stderr)


@pytest.mark.parametrize("lang", ["C", "C.UTF-8"])
def test_a_server_whose_model_path_is_not_utf8_is_listed_escaped(tmp_path: Path, lang: str) -> None:
    # Any user's server may have such a name: ps must show it, in valid text, whatever the locale.
    weird = os.fsdecode(os.fsencode(str(tmp_path)) + b"/bad\xffname.gguf")
    Path(weird).write_bytes((REPO / "tests" / "data" / "lengths_sample.jsonl").read_bytes()[:16])
    port = free_port()
    env = dict(os.environ, LANG=lang, LC_ALL=lang)
    env.pop("PYTHONIOENCODING", None)
    with running_server(port, "-m", weird):
        res = subprocess.run([str(LLAMA_RUN), "ps"], capture_output=True, timeout=60, env=env)
    assert res.returncode == 0 and b"Traceback" not in res.stderr, res.stderr
    text = res.stdout.decode("utf-8")  # strictly: nothing but valid text
    assert str(port) in text and "bad\\udcffname" in text


def test_a_fifo_is_never_replaced_by_a_file(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    res = run_cli(LLAMA_BENCH, "benchmark", "--endpoint", "http://127.0.0.1:9", "--json-out", str(fifo))
    assert res.returncode == 2 and "not a regular file" in one_line(res.stderr)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


@pytest.mark.skipif(os.geteuid() != 0, reason="creating a device node needs root")
def test_a_device_node_is_never_replaced_by_a_file(tmp_path: Path, fake_port: int) -> None:
    # A private device node in a temp dir (the machine's /dev is never touched): /dev/null's numbers.
    node = tmp_path / "devnode"
    os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    res = run_cli(LLAMA_BENCH, *bench_args(fake_port, tmp_path, *QUICK, "--json-out", str(node)))
    assert res.returncode == 2 and "not a regular file" in one_line(res.stderr)
    assert stat.S_ISCHR(os.lstat(node).st_mode), "the device node was replaced"
    assert not (tmp_path / "r.jsonl").exists(), "nothing may run when an output is refused"


def test_a_write_that_fails_mid_run_loses_only_that_file(tmp_path: Path, fake_port: int) -> None:
    # RLIMIT_FSIZE makes any write past 5 kB fail (EFBIG), as a full disk would: the JSON result is
    # about 11 kB, the CSV about 1 kB, the JSONL about 3 kB.
    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (5000, 5000))

    out, csv = tmp_path / "r.json", tmp_path / "r.csv"
    args = bench_args(fake_port, tmp_path, *QUICK, "--json-out", str(out), "--csv", str(csv))
    res = subprocess.run([str(LLAMA_BENCH), *args], capture_output=True, text=True, timeout=120, preexec_fn=small_files)
    assert res.returncode == 4, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    assert f"--json-out: could not write {out}: file too large" in res.stderr
    assert not out.exists()
    assert csv.read_text(encoding="utf-8").startswith("label,prompt_size")
    assert len((tmp_path / "r.jsonl").read_text(encoding="utf-8").splitlines()) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv", "r.jsonl"], "a temp file was left behind"


def test_an_existing_result_survives_a_failed_rewrite(tmp_path: Path, fake_port: int) -> None:
    out = tmp_path / "r.json"
    out.write_text('{"previous": true}', encoding="utf-8")

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (5000, 5000))

    res = subprocess.run(
        [str(LLAMA_BENCH), *bench_args(fake_port, tmp_path, *QUICK, "--json-out", str(out))],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=small_files,
    )
    assert res.returncode == 4
    assert json.loads(out.read_text(encoding="utf-8")) == {"previous": True}


# -- 2. results survive the terminal -----------------------------------------------------------------
@pytest.mark.parametrize("redirect", [">&-", "| head -1", ">/dev/full"], ids=["closed", "broken-pipe", "full"])
def test_the_benchmark_measures_and_writes_its_files_whatever_happens_to_stdout(
    tmp_path: Path, fake_port: int, redirect: str
) -> None:
    out = tmp_path / "r.json"
    args = " ".join(bench_args(fake_port, tmp_path, "--prompt-sizes", "100,200", "--max-output-tokens", "8",
                               "--num-requests", "3", "--json-out", str(out)))  # fmt: skip
    res = shell(f"./llama-bench {args} {redirect}")
    assert res.returncode == 4, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    assert "standard output was lost" in res.stderr
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["status"] == "complete" and all(c["requests"]["ok"] == 3 for c in result["cells"])


def test_plain_mode_with_a_broken_pipe_still_stops_the_server(tmp_path: Path, model_file: Path) -> None:
    port = free_port()
    cmd = (f"./llama-run run --llama-server {FAKE_SERVER} --model {model_file} --port {port} --allow-multi-server "
           "--ui plain --interval 0.2 --stats-interval 0.5 --duration 3 | head -2")  # fmt: skip
    res = shell(cmd)
    assert res.returncode == 4, res.stdout + res.stderr
    assert "Traceback" not in res.stderr and "standard output was lost" in res.stderr
    assert not is_healthy(port), "the server outlived llama-run"


def test_stop_all_stops_every_server_it_listed_when_its_stdout_is_gone() -> None:
    ports = [free_port(), free_port()]
    with running_server(ports[0]) as one, running_server(ports[1]) as two:
        res = shell(f"./llama-run stop-all --port {ports[0]} --port {ports[1]} >&-")
        assert wait_until(lambda: one.poll() is not None and two.poll() is not None, 15)
    assert res.returncode == 4, res.stderr
    assert "Stopped 2 of 2 llama-server process(es)." in res.stderr  # the outcome still reaches the user


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_in_a_benchmark_keep_the_finished_cells(tmp_path: Path, sig: signal.Signals) -> None:
    port = free_port()
    out = tmp_path / "r.json"
    with running_server(port, "--metrics", "--token-interval-ms", "20"):
        args = bench_args(port, tmp_path, "--prompt-sizes", "100,200,300", "--max-output-tokens", "20",
                          "--num-requests", "4", "--json-out", str(out))  # fmt: skip
        live = LiveOutput(spawn_cli(LLAMA_BENCH, *args))
        try:
            assert live.wait_for("cell p200-c1", 60), live.text()
            live.proc.send_signal(sig)
            code = live.finish(30)
        finally:
            live.kill_group()
    assert code == 130, live.text()
    assert "Summary" in live.text() and "Traceback" not in live.text()
    result = json.loads(out.read_text(encoding="utf-8"))
    statuses = {c["prompt_size"]: c["status"] for c in result["cells"]}
    assert result["status"] == "interrupted" and statuses[100] == "done" and statuses[300] == "not run"


def test_sigterm_ends_monitor_with_its_series_written(tmp_path: Path, fake_port: int) -> None:
    out = tmp_path / "series.json"
    live = LiveOutput(
        spawn_cli(LLAMA_BENCH, "monitor", "--endpoint", f"http://127.0.0.1:{fake_port}", "--interval", "0.2",
                  "--json-out", str(out))  # fmt: skip
    )
    try:
        assert live.wait_for("p_tok/s", 30), live.text()
        live.proc.send_signal(signal.SIGTERM)
        assert live.finish(30) == 0, live.text()
    finally:
        live.kill_group()
    assert json.loads(out.read_text(encoding="utf-8"))["samples"]


def test_sigterm_during_bench_stops_the_server_it_started(tmp_path: Path, model_file: Path) -> None:
    port = free_port()
    args = ["bench", "--llama-server", str(FAKE_SERVER), "--model", str(model_file), "--port", str(port),
            "--allow-multi-server", "--prompt-sizes", "100", "--max-output-tokens", "50", "--num-requests", "20",
            "--jsonl", str(tmp_path / "r.jsonl"), "--", "--token-interval-ms", "20"]  # fmt: skip
    live = LiveOutput(spawn_cli(LLAMA_BENCH, *args))
    try:
        assert live.wait_for("cell p100-c1", 60), live.text()
        live.proc.send_signal(signal.SIGTERM)
        assert live.finish(60) == 130, live.text()
    finally:
        live.kill_group()
    assert "Stopped llama-server" in live.text()
    assert wait_until(lambda: not is_healthy(port), 10)


# -- 3. interruptible and bounded -------------------------------------------------------------------
def test_a_huge_num_requests_starts_at_once_and_ctrl_c_stops_it(tmp_path: Path, fake_port: int) -> None:
    # Requests are built lazily: a million of them cost no time or memory up front.
    out = tmp_path / "r.json"
    args = bench_args(fake_port, tmp_path, "--prompt-sizes", "100", "--max-output-tokens", "4",
                      "--num-requests", "1000000", "--json-out", str(out))  # fmt: skip
    live = LiveOutput(spawn_cli(LLAMA_BENCH, *args))
    try:
        assert live.wait_for("cell p100-c1", 30), live.text()
        jsonl = tmp_path / "r.jsonl"
        assert wait_until(lambda: jsonl.exists() and len(jsonl.read_text(encoding="utf-8").splitlines()) > 3, 30)
        live.interrupt()
        assert live.finish(30) == 130, live.text()
    finally:
        live.kill_group()
    cell = json.loads(out.read_text(encoding="utf-8"))["cells"][0]
    assert cell["status"] == "interrupted" and cell["requests"]["ok"] > 0


def test_a_prompt_size_beyond_any_endpoint_is_refused_at_once() -> None:
    res = run_cli(LLAMA_BENCH, "benchmark", "--prompt-sizes", "100,3000k", "--endpoint", "http://127.0.0.1:9")
    assert res.returncode == 2
    assert one_line(res.stderr).startswith("llama-bench benchmark: error: --prompt-sizes: 3000000 tokens")


def test_a_request_that_trickles_forever_ends_at_its_deadline(tmp_path: Path) -> None:
    port = free_port()
    # A token every 0.4 s never trips the 5 s silence timeout; the 2 s deadline ends each request.
    with running_server(port, "--metrics", "--token-interval-ms", "400"):
        started = time.monotonic()
        res = run_cli(LLAMA_BENCH, *bench_args(port, tmp_path, "--prompt-sizes", "100", "--max-output-tokens", "500",
                                               "--num-requests", "1", "--warmup", "0", "--timeout", "5",
                                               "--request-deadline", "2"))  # fmt: skip
        elapsed = time.monotonic() - started
    assert res.returncode == 1, res.stdout + res.stderr
    [record] = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text(encoding="utf-8").splitlines()]
    assert not record["ok"] and "did not finish within --request-deadline (2 s" in record["error"]
    assert elapsed < 60


class Trickle:
    """A socket that accepts connections and answers one byte of HTTP every 0.5 s, forever."""

    def __init__(self) -> None:
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        import threading

        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        with conn:
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100000:
                if self.stop.wait(0.5):
                    return
                try:
                    conn.send(bytes([byte]))
                except OSError:
                    return

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.fixture
def trickle() -> Iterator[Trickle]:
    server = Trickle()
    yield server
    server.close()


@pytest.mark.parametrize(
    "command",
    [["benchmark", "--prompt-sizes", "100"], ["monitor", "--duration", "1"]],
    ids=["benchmark", "monitor"],
)
def test_an_endpoint_that_trickles_cannot_hang_a_command(trickle: Trickle, command: List[str]) -> None:
    started = time.monotonic()
    res = run_cli(LLAMA_BENCH, command[0], "--endpoint", f"http://127.0.0.1:{trickle.port}", *command[1:])
    assert res.returncode == 2, res.stdout + res.stderr
    assert "timed out" in one_line(res.stderr)
    assert time.monotonic() - started < 40  # the probe's total deadline, not 100000 bytes x 0.5 s


# -- 4. everything read from outside is validated by type ------------------------------------------
def test_a_dotenv_that_is_not_utf8_is_one_line_naming_the_file(tmp_path: Path) -> None:
    env_file = tmp_path / "bad.env"
    env_file.write_bytes(b"LLAMA_PORT=11433\nLLAMA_MODEL=\xff\xfe.gguf\n")
    res = run_cli(LLAMA_RUN, "ps", env=dict(os.environ, LLAMA_STUDIO_DOTENV=str(env_file)))
    assert res.returncode == 2
    assert f"{env_file}: line 2 is not UTF-8" in one_line(res.stderr)


@pytest.mark.parametrize(
    "line, needle",
    [("LLAMA_PORT=abc", "invalid port 'abc'"), ("LLAMA_THREADS=0", "expected a whole number >= 1"),
     ("LLAMA_CTX_SIZE=-1", "expected a whole number >= 0"), ("LLAMA_API_KEY=kéy€", "HTTP header")],
)  # fmt: skip
def test_dotenv_values_get_the_validation_of_their_flag_and_errors_name_file_and_key(
    tmp_path: Path, model_file: Path, line: str, needle: str
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(line + "\n", encoding="utf-8")
    key = line.split("=", 1)[0]
    res = run_cli(LLAMA_RUN, "run", "--llama-server", str(FAKE_SERVER), "--model", str(model_file),
                  env=dict(os.environ, LLAMA_STUDIO_DOTENV=str(env_file)))  # fmt: skip
    assert res.returncode == 2
    err = one_line(res.stderr)
    assert f"{key} in {env_file}" in err and needle in err


def test_corrupt_registry_entries_are_skipped_with_a_warning(isolated_state: Path) -> None:
    servers = isolated_state / "servers"
    servers.mkdir(parents=True)
    (servers / "1.json").write_text("{not json", encoding="utf-8")
    (servers / "2.json").write_text(json.dumps({"pid": "two", "create_time": 1}), encoding="utf-8")
    (servers / "3.json").write_bytes(b"\xff\xfe")
    res = run_cli(LLAMA_RUN, "ps")
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    assert res.stderr.count("warning: skipping registry entry") == 3


@pytest.mark.parametrize(
    "document",
    [{"schema": "llama-studio.benchmark/2", "cells": "x"},
     {"schema": "llama-studio.benchmark/2", "cells": [{"prompt_size": "big", "concurrency": 1, "status": "done"}]},
     {"schema": "llama-studio.benchmark/2", "cells": [], "environment": []}],
)  # fmt: skip
def test_a_damaged_result_file_is_one_line_for_compare_and_plot(tmp_path: Path, document: Any) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    for args in (["compare", str(path), str(path)], ["plot", str(path), "--out", str(tmp_path / "p.png")]):
        res = run_cli(LLAMA_BENCH, *args)
        assert res.returncode == 2 and "damaged llama-bench result" in one_line(res.stderr)


def test_odd_numbers_in_a_result_file_do_not_break_compare(tmp_path: Path) -> None:
    cell = {"prompt_size": 100, "concurrency": 1, "status": "done", "throughput": {"gen_tps": "fast"},
            "latency": {"ttft_ms": {"p50": None}}}  # fmt: skip
    doc = {"schema": "llama-studio.benchmark/2", "cells": [cell], "environment": {"server": "?"}}
    path = tmp_path / "odd.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    res = run_cli(LLAMA_BENCH, "compare", str(path), str(path))
    assert "Traceback" not in res.stderr + res.stdout


@pytest.mark.parametrize("key", ["kéy€", "two\nlines"])
def test_an_api_key_that_cannot_be_sent_is_one_line(key: str) -> None:
    res = run_cli(LLAMA_BENCH, "benchmark", "--api-key", key, "--endpoint", "http://127.0.0.1:9")
    assert res.returncode == 2 and "HTTP header" in one_line(res.stderr) or "control characters" in res.stderr


# -- 5. the state directory and hosts -----------------------------------------------------------------
def test_a_state_dir_that_is_a_file_is_one_line_and_read_only_commands_still_work(
    tmp_path: Path, model_file: Path
) -> None:
    not_a_dir = tmp_path / "state"
    not_a_dir.write_text("x", encoding="utf-8")
    env = dict(os.environ, LLAMA_STUDIO_STATE_DIR=str(not_a_dir))
    res = run_cli(LLAMA_RUN, *["run", "--llama-server", str(FAKE_SERVER), "--model", str(model_file),
                               "--port", str(free_port()), "--allow-multi-server"], env=env)  # fmt: skip
    assert res.returncode == 2
    err = one_line(res.stderr)
    assert str(not_a_dir) in err and "LLAMA_STUDIO_STATE_DIR" in err
    assert run_cli(LLAMA_RUN, "ps", env=env).returncode == 0
    assert run_cli(LLAMA_RUN, "stop-all", "--dry-run", "--port", str(free_port()), env=env).returncode == 0


def test_a_registry_write_that_fails_after_the_start_stops_the_server(isolated_state: Path, model_file: Path) -> None:
    (isolated_state / "servers").write_text("not a directory", encoding="utf-8")
    port = free_port()
    res = run_cli(LLAMA_RUN, "run", "--llama-server", str(FAKE_SERVER), "--model", str(model_file), "--port",
                  str(port), "--allow-multi-server", "--ui", "plain", "--duration", "5")  # fmt: skip
    assert res.returncode == 1, res.stdout + res.stderr
    match = re.search(r"could not record the server \(pid (\d+)\) in the registry", res.stderr)
    assert match and "stopped it again" in res.stderr, res.stderr
    assert not pid_alive(int(match.group(1)))
    assert not is_healthy(port)
    assert not list(isolated_state.glob("**/*.tmp"))


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_ipv6_hosts_work_end_to_end(tmp_path: Path, model_file: Path) -> None:
    port = free_port()
    res = run_cli(LLAMA_RUN, "run", "--llama-server", str(FAKE_SERVER), "--model", str(model_file), "--host", "::1",
                  "--port", str(port), "--allow-multi-server", "--ui", "plain", "--interval", "0.2",
                  "--stats-interval", "0.5", "--duration", "2")  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"ready at http://[::1]:{port}" in res.stdout and "[warn]" not in res.stdout
    with running_server(port, "--host", "::1", "--metrics", wait=False):
        assert wait_until(lambda: _v6_healthy(port), 30)
        bench = run_cli(LLAMA_BENCH, "benchmark", "--endpoint", f"http://[::1]:{port}", *QUICK,
                        "--jsonl", str(tmp_path / "r.jsonl"))  # fmt: skip
    assert bench.returncode == 0, bench.stdout + bench.stderr


def _v6_healthy(port: int) -> bool:
    try:
        return http("GET", f"http://[::1]:{port}/health", timeout=1)[0] == 200
    except OSError:
        return False


@pytest.mark.parametrize(
    "host, needle",
    [("203.0.113.7", "is not available on this machine"), ("no-such-host.invalid", "cannot resolve --host")],
)
def test_a_bind_error_is_reported_as_what_it_is(model_file: Path, host: str, needle: str) -> None:
    res = run_cli(LLAMA_RUN, "run", "--llama-server", str(FAKE_SERVER), "--model", str(model_file), "--host", host,
                  "--port", str(free_port()), "--allow-multi-server")  # fmt: skip
    assert res.returncode == 2
    err = one_line(res.stderr)
    assert needle in err and "in use" not in err


# -- 6. lifecycle corner cases ------------------------------------------------------------------------
def test_sigkill_of_llama_run_takes_down_a_server_started_by_a_wrapper_script(tmp_path: Path, model_file: Path) -> None:
    wrapper = tmp_path / "llama-server"
    wrapper.write_text(f'#!/usr/bin/env bash\n"{FAKE_SERVER}" "$@"\necho wrapper done\n', encoding="utf-8")
    wrapper.chmod(0o755)
    port = free_port()
    live = LiveOutput(spawn_cli(LLAMA_RUN, "run", "--llama-server", str(wrapper), "--model", str(model_file),
                                "--port", str(port), "--allow-multi-server", "--ui", "plain"))  # fmt: skip
    try:
        assert live.wait_for("ready at", 30), live.text()
        assert is_healthy(port)
        live.proc.kill()  # SIGKILL: no handler of ours runs; the real server is a grandchild
        live.finish()
    finally:
        live.kill_group()
    assert wait_until(lambda: not is_healthy(port), 15), "the real server survived llama-run's SIGKILL"


def test_an_api_key_given_as_a_raw_flag_is_used_for_readiness_and_stats(model_file: Path) -> None:
    port = free_port()
    live = LiveOutput(spawn_cli(LLAMA_RUN, *["run", "--llama-server", str(FAKE_SERVER), "--model", str(model_file),
                                             "--port", str(port), "--allow-multi-server", "--ui", "plain",
                                             "--interval", "0.2", "--stats-interval", "0.5", "--duration", "2",
                                             "--", "--api-key", "raw-secret"]))  # fmt: skip
    try:
        assert live.finish(60) == 0, live.text()
    finally:
        live.kill_group()
    assert "ready at" in live.text() and "[tok] now:" in live.text()
    assert "[warn]" not in live.text(), live.text()


def test_an_api_key_from_llama_arg_api_key_is_used_for_readiness_and_stats(model_file: Path) -> None:
    env = dict(os.environ, LLAMA_ARG_API_KEY="env-secret")  # llama-server reads it itself
    port = free_port()
    res = run_cli(LLAMA_RUN, *["run", "--llama-server", str(FAKE_SERVER), "--model", str(model_file),
                               "--port", str(port), "--allow-multi-server", "--ui", "plain", "--interval", "0.2",
                               "--stats-interval", "0.5", "--duration", "2"], env=env)  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert "ready at" in res.stdout and "[tok] now:" in res.stdout and "[warn]" not in res.stdout


def test_a_401_during_start_up_is_an_authentication_error_at_once(model_file: Path) -> None:
    started = time.monotonic()
    res = run_cli(LLAMA_RUN, "run", "--llama-server", str(FAKE_SERVER), "--model", str(model_file), "--port",
                  str(free_port()), "--allow-multi-server", "--api-key", "ours", "--startup-timeout", "60",
                  "--", "--api-key", "theirs")  # fmt: skip
    assert res.returncode == 1
    assert "refuses our API key" in res.stderr
    assert time.monotonic() - started < 30  # at once, not after the 60 s start-up timeout


def test_a_frozen_server_is_shown_as_not_answering_never_as_idle(model_file: Path) -> None:
    port = free_port()
    live = LiveOutput(spawn_cli(LLAMA_RUN, *["run", "--llama-server", str(FAKE_SERVER), "--model", str(model_file),
                                             "--port", str(port), "--allow-multi-server", "--ui", "plain",
                                             "--interval", "0.3", "--stats-interval", "0.6"]))  # fmt: skip
    try:
        assert live.wait_for("[tok] now:", 30), live.text()
        pid = server_pid_from(live.text())
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # frozen: the port accepts, nothing answers
        try:
            assert live.wait_for("[warn] server unreachable", 30), live.text()
            assert live.wait_for("(no data)", 10), live.text()
        finally:
            os.kill(pid, signal.SIGCONT)
        live.interrupt()
        assert live.finish(30) == 0, live.text()
    finally:
        live.kill_group()


# -- 7. plain output like paq_llamacpp_studio's ------------------------------------------------------------
def test_the_final_block_counts_a_request_that_ended_just_before_ctrl_c(model_file: Path) -> None:
    port = free_port()
    live = LiveOutput(spawn_cli(LLAMA_RUN, *["run", "--llama-server", str(FAKE_SERVER), "--model", str(model_file),
                                             "--port", str(port), "--allow-multi-server", "--ui", "plain",
                                             "--interval", "0.2", "--stats-interval", "60"]))  # fmt: skip
    try:
        assert live.wait_for("[tok] all:", 30), live.text()  # the first block; the next one is 60 s away
        status, _ = http("POST", f"http://127.0.0.1:{port}/completion", {"prompt": "hi", "n_predict": 37})
        assert status == 200
        live.interrupt()
        assert live.finish(30) == 0, live.text()
    finally:
        live.kill_group()
    text = live.text()
    final_all = live.matching("[tok] all:")[-1]
    assert "g_tok 37" in final_all, text
    assert text.index(final_all) < text.index("llama-server exited with code")
