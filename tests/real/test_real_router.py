"""Router mode against the real llama-server: `llama-run run --models-dir DIR` with two models in a
folder, a request for each, the live view per model, and no child server left behind."""

from __future__ import annotations

import re
import shutil
from pathlib import Path


import pytest

from tests.helpers import LLAMA_RUN, LiveOutput, children_of, free_port, http, run_cli, spawn_cli, wait_until

pytestmark = pytest.mark.real


@pytest.fixture
def two_models(tmp_path: Path, real_model: Path) -> Path:
    folder = tmp_path / "zoo"
    folder.mkdir()
    for name in ("alpha", "beta"):
        shutil.copyfile(real_model, folder / f"{name}.gguf")
    return folder


def test_router_mode_serves_each_model_shows_them_and_leaves_no_child(real_server, two_models, real_threads):
    port = free_port()
    args = ["run", "--llama-server", str(real_server), "--models-dir", str(two_models), "--port", str(port),
            "-t", real_threads, "-c", "1024", "--allow-multi-server", "--ui", "plain", "--interval", "0.3",
            "--stats-interval", "0.6"]  # fmt: skip
    live = LiveOutput(spawn_cli(LLAMA_RUN, *args))
    try:
        assert live.wait_for("ready at", 120), live.text()
        for name in ("alpha", "beta"):
            body = {"model": name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 12}
            status, answer = http("POST", f"http://127.0.0.1:{port}/v1/chat/completions", body, timeout=120)
            assert status == 200, answer
            assert answer["model"] == name
        assert live.wait_for("[models] alpha loaded", 30) and live.wait_for("beta loaded", 30), live.text()
        assert wait_until(
            lambda: re.search(r"\[tok\] all: .* g_tok 2[0-9]\b", live.text()) is not None, 30
        ), live.text()
        ps = run_cli(LLAMA_RUN, "ps").stdout
        assert len(re.findall(r"router \d+", ps)) == 2, ps  # each model child, marked as the router's
        assert len(children_of(two_models)) == 2
        live.interrupt()
        assert live.finish(60) == 0, live.text()
    finally:
        live.kill_group()
    assert wait_until(lambda: not children_of(two_models), 15), "a model child outlived the router"


def test_sigkill_of_llama_run_takes_the_router_and_its_children_down(real_server, two_models, real_threads):
    port = free_port()
    args = ["run", "--llama-server", str(real_server), "--models-dir", str(two_models), "--port", str(port),
            "-t", real_threads, "-c", "1024", "--allow-multi-server", "--ui", "plain"]  # fmt: skip
    live = LiveOutput(spawn_cli(LLAMA_RUN, *args))
    try:
        assert live.wait_for("ready at", 120), live.text()
        body = {"model": "alpha", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        assert http("POST", f"http://127.0.0.1:{port}/v1/chat/completions", body, timeout=120)[0] == 200
        assert children_of(two_models)
        live.proc.kill()
        live.finish()
    finally:
        live.kill_group()
    assert wait_until(lambda: not children_of(two_models), 20), "the router's children outlived llama-run"
