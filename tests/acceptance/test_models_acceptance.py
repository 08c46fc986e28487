"""Models the tool understands, as a user meets it: header checks before any start, will-it-fit with a
refusal that says what would fit, model folders and names, and the llama-server flags for models."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import List

import pytest

from tests.gguf_files import write_tiny_gguf
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


def run_args(model: Path, *extra: str) -> List[str]:
    return ["run", "--llama-server", str(FAKE_SERVER), "--model", str(model), "--port", str(free_port()),
            "--allow-multi-server", "--ui", "plain", "--interval", "0.2", "--stats-interval", "0.5",
            *extra]  # fmt: skip


@pytest.fixture
def big_model(tmp_path: Path) -> Path:
    """Metadata of a 64-layer model with 32 KV heads of 128: its KV cache is 1 MiB per token of context."""
    path = tmp_path / "Big-70B-Q4_K_M.gguf"
    return write_tiny_gguf(path, blocks=64, embd=4096, heads=32, kv_heads=32, ctx=131072)


def test_a_model_that_does_not_fit_is_refused_with_the_numbers_and_what_would_fit(
    big_model: Path, isolated_state: Path
) -> None:
    res = run_cli(LLAMA_RUN, *run_args(big_model, "--ctx-size", "1048576"))
    assert res.returncode == 2, res.stdout + res.stderr
    [line] = res.stderr.strip().splitlines()
    assert "does not fit" in line and "GiB" in line
    assert re.search(r"--ctx-size \d+", line) and "--skip-vram-check" in line
    assert "Starting llama-server" not in res.stdout
    assert not (isolated_state / "logs").exists() or not list((isolated_state / "logs").iterdir())


def test_skip_vram_check_starts_anyway_and_says_so(big_model: Path) -> None:
    res = run_cli(LLAMA_RUN, *run_args(big_model, "--ctx-size", "1048576", "--skip-vram-check", "--duration", "1"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "starting anyway: --skip-vram-check" in res.stdout


def test_fit_on_is_passed_through_and_shows_what_the_server_chose(big_model: Path) -> None:
    res = run_cli(LLAMA_RUN, *run_args(big_model, "--fit", "on", "--duration", "1"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "--fit on" in res.stdout.splitlines()[0]
    assert re.search(r"llama-server's --fit chose: ctx \d+ per slot x \d+ slots", res.stdout), res.stdout


@pytest.mark.parametrize(
    "content, needle",
    [(b"<html>404 Not Found</html>", "not a GGUF file"), (b"GGUF\x63\x00\x00\x00" + b"\0" * 64, "version")],
    ids=["html", "unknown-version"],
)
def test_a_file_that_is_not_a_usable_gguf_is_one_line_before_any_start(
    tmp_path: Path, content: bytes, needle: str
) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_bytes(content)
    res = run_cli(LLAMA_RUN, *run_args(bad))
    assert res.returncode == 2
    [line] = res.stderr.strip().splitlines()
    assert needle in line and str(bad) in line
    assert "Starting llama-server" not in res.stdout


def test_start_up_shows_the_model_and_warns_past_the_trained_context(model_file: Path) -> None:
    res = run_cli(LLAMA_RUN, *run_args(model_file, "--ctx-size", "4096", "--duration", "1"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "  model: tiny.gguf · llama" in res.stdout and "ctx 2048" in res.stdout
    assert "  memory: RAM" in res.stdout
    assert "--ctx-size 4096 is above the model's trained context (2048)" in res.stdout


def test_models_lists_every_gguf_found_with_its_header(tmp_path: Path) -> None:
    folder = tmp_path / "zoo"
    folder.mkdir()
    write_tiny_gguf(folder / "Qwen2.5-0.5B-Instruct-Q4_K_M.gguf")
    write_tiny_gguf(folder / "Llama-3.2-1B-Instruct-Q8_0.gguf", ctx=131072)
    (folder / "broken.gguf").write_bytes(b"<html>")
    res = run_cli(LLAMA_RUN, "models", "--model-dir", str(folder))
    assert res.returncode == 0, res.stderr
    rows = {line.split()[0]: line for line in res.stdout.splitlines()[1:]}
    assert {"Qwen2.5-0.5B-Instruct-Q4_K_M.gguf", "Llama-3.2-1B-Instruct-Q8_0.gguf", "broken.gguf"} <= set(rows)
    assert "131072" in rows["Llama-3.2-1B-Instruct-Q8_0.gguf"] and "llama" in rows["Qwen2.5-0.5B-Instruct-Q4_K_M.gguf"]
    assert "unreadable" in rows["broken.gguf"]
    listed = {
        m["name"]: m for m in json.loads(run_cli(LLAMA_RUN, "models", "--model-dir", str(folder), "--json").stdout)
    }
    assert listed["Llama-3.2-1B-Instruct-Q8_0.gguf"]["info"]["context_length"] == 131072
    assert listed["broken.gguf"]["info"] is None and listed["broken.gguf"]["error"]


def test_a_model_is_found_by_name_and_an_ambiguous_name_lists_the_candidates(tmp_path: Path) -> None:
    import os

    folder = tmp_path / "zoo"
    folder.mkdir()
    write_tiny_gguf(folder / "Qwen2.5-0.5B-Instruct-Q4_K_M.gguf")
    write_tiny_gguf(folder / "Qwen2.5-7B-Instruct-Q4_K_M.gguf")
    env = dict(os.environ, LLAMA_MODEL_DIR=str(folder))
    base = ["run", "--llama-server", str(FAKE_SERVER), "--port", str(free_port()), "--allow-multi-server",
            "--ui", "plain", "--duration", "1"]  # fmt: skip
    found = run_cli(LLAMA_RUN, *base, "--model", "qwen2.5-0.5b", env=env)
    assert found.returncode == 0, found.stdout + found.stderr
    assert f"-m {folder}/Qwen2.5-0.5B-Instruct-Q4_K_M.gguf" in found.stdout
    ambiguous = run_cli(LLAMA_RUN, *base, "--model", "qwen2.5", env=env)
    assert ambiguous.returncode == 2
    [line] = ambiguous.stderr.strip().splitlines()
    assert "Qwen2.5-0.5B-Instruct-Q4_K_M.gguf" in line and "Qwen2.5-7B-Instruct-Q4_K_M.gguf" in line


def test_the_model_flags_reach_the_server(model_file: Path) -> None:
    res = run_cli(LLAMA_RUN, *run_args(model_file, "--cache-type-k", "q8_0", "--cache-type-v", "q8_0",
                                       "--model-alias", "my-model", "--jinja", "-tb", "2",
                                       "--chat-template-kwargs", '{"enable_thinking": false}', "--detach"))  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    command = res.stdout.splitlines()[0]
    for flag in ("-ctk q8_0", "-ctv q8_0", "--alias my-model", "-tb 2", "--jinja", '{"enable_thinking": false}'):
        assert flag in command, command
    assert "KV q8_0/q8_0" in res.stdout  # the estimate used the cache types
    pid = server_pid_from(res.stdout)
    assert pid is not None
    try:
        port = re.search(r"--port (\d+)", command)
        assert port
        status, body = http("GET", f"http://127.0.0.1:{port.group(1)}/v1/models")
        assert status == 200 and body["data"][0]["id"] == "my-model"
        ps = run_cli(LLAMA_RUN, "ps")
        row = next(line for line in ps.stdout.splitlines() if line.split()[:1] == [str(pid)])
        assert row.endswith("tiny.gguf (512, F32)"), row  # what the GGUF header says
    finally:
        run_cli(LLAMA_RUN, "stop-all", "--pid", str(pid))
    assert wait_until(lambda: not pid_alive(pid), 10)


@pytest.mark.parametrize(
    "flags, needle",
    [(["--cache-type-k", "q9_9"], "invalid cache type 'q9_9'"), (["--chat-template-kwargs", "[1]"], "JSON object"),
     (["--metrics-url", "localhost:1"], "http(s) URL")],
)  # fmt: skip
def test_bad_model_flag_values_are_one_line(model_file: Path, flags: List[str], needle: str) -> None:
    res = run_cli(LLAMA_RUN, *run_args(model_file, *flags))
    assert res.returncode == 2
    [line] = res.stderr.strip().splitlines()
    assert needle in line


@pytest.mark.parametrize(
    "flags, needle",
    [(["--models-dir", "/nonexistent/dir"], "not a directory"),
     (["--models-dir", "/tmp", "--model", "x.gguf"], "drop --model")],
)  # fmt: skip
def test_router_mode_flags_are_checked(flags: List[str], needle: str) -> None:
    res = run_cli(LLAMA_RUN, "run", "--llama-server", str(FAKE_SERVER), *flags)
    assert res.returncode == 2
    [line] = res.stderr.strip().splitlines()
    assert needle in line


def test_doctor_in_router_mode_asks_for_one_model(model_file: Path) -> None:
    res = run_cli(LLAMA_RUN, "doctor", "--llama-server", str(FAKE_SERVER), "--models-dir", str(model_file.parent))
    assert res.returncode == 2 and "Starting" not in res.stdout
    [line] = res.stderr.strip().splitlines()
    assert "doctor checks one model: pass --model" in line


def test_metrics_url_reads_the_stats_from_another_server(model_file: Path) -> None:
    other = free_port()
    with running_server(other, "--metrics", "--token-interval-ms", "1"):
        live = LiveOutput(spawn_cli(LLAMA_RUN, *run_args(model_file, "--metrics-url", f"http://127.0.0.1:{other}")))
        try:
            assert live.wait_for("[tok] all:", 30), live.text()
            # Tokens generated by the *other* server show up in our stats.
            status, _ = http("POST", f"http://127.0.0.1:{other}/completion", {"prompt": "hi", "n_predict": 41})
            assert status == 200
            assert live.wait_for(" g_tok 41", 15), live.text()
            live.interrupt()
            assert live.finish(30) == 0
        finally:
            live.kill_group()


def test_doctor_shows_the_model_header_and_the_memory_estimate(model_file: Path) -> None:
    res = run_cli(LLAMA_RUN, "doctor", "--llama-server", str(FAKE_SERVER), "--model", str(model_file))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "ok  model header: tiny.gguf · llama" in res.stdout
    assert "ok  memory fits: RAM" in res.stdout
