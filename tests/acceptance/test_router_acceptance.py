"""Router mode on the fake server (the fast tier of tests/real/test_real_router.py): `llama-run run --models-dir
DIR` with two models in a folder, a request for each, the live view per model, `ps` marking each model's child
as the router's, and no child left behind by Ctrl-C or a SIGKILL of llama-run."""

from __future__ import annotations

import re
from pathlib import Path
from typing import List

import pytest

from tests.gguf_files import write_tiny_gguf
from tests.helpers import FAKE_SERVER, LLAMA_RUN, LiveOutput, free_port, http, run_cli, running_server
from tests.helpers import children_of, server_pid_from, spawn_cli, wait_until


@pytest.fixture
def two_models(tmp_path: Path) -> Path:
    folder = tmp_path / "zoo"
    folder.mkdir()
    for name in ("alpha", "beta"):
        write_tiny_gguf(folder / f"{name}.gguf", name=name.title())
    (folder / "notes.txt").write_text("not a model\n", encoding="utf-8")
    return folder


def router_args(folder: Path, port: int) -> List[str]:
    return ["run", "--llama-server", str(FAKE_SERVER), "--models-dir", str(folder), "--port", str(port),
            "--allow-multi-server", "--ui", "plain", "--interval", "0.2", "--stats-interval", "0.4"]  # fmt: skip


def ask(port: int, model: str, max_tokens: int = 8):
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens}
    return http("POST", f"http://127.0.0.1:{port}/v1/chat/completions", body)


def test_router_mode_serves_each_model_shows_them_per_model_and_leaves_no_child(two_models: Path) -> None:
    port = free_port()
    live = LiveOutput(spawn_cli(LLAMA_RUN, *router_args(two_models, port)))
    try:
        assert live.wait_for("ready at", 30), live.text()
        assert live.wait_for("[models] alpha unloaded · beta unloaded", 10), live.text()
        for name in ("alpha", "beta"):
            status, answer = ask(port, name)
            assert status == 200, answer
            assert answer["model"] == name
        status, answer = ask(port, "gamma")
        assert status == 400 and "not found" in answer["error"]["message"]
        assert live.wait_for("[models] alpha loaded", 10) and live.wait_for("beta loaded", 10), live.text()
        # Tokens of both models add up on the [tok] line (8 + 8 generated).
        assert wait_until(lambda: re.search(r"\[tok\] all: .* g_tok 16\b", live.text()) is not None, 10), live.text()
        router_pid = server_pid_from(live.text())
        ps = run_cli(LLAMA_RUN, "ps").stdout
        assert len(re.findall(rf"router {router_pid}\b", ps)) == 2, ps
        assert len(children_of(two_models)) == 2
        live.interrupt()
        assert live.finish(30) == 0, live.text()
    finally:
        live.kill_group()
    assert wait_until(lambda: not children_of(two_models), 10), "a model child outlived the router"


def test_sigkill_of_llama_run_takes_the_router_and_its_children_down(two_models: Path) -> None:
    port = free_port()
    proc = spawn_cli(LLAMA_RUN, *router_args(two_models, port))
    live = LiveOutput(proc)
    try:
        assert live.wait_for("ready at", 30), live.text()
        assert ask(port, "alpha", 2)[0] == 200
        assert children_of(two_models)
        proc.kill()  # only llama-run itself: its watchdog must stop the router, and the router's children go too
        live.finish()
    finally:
        live.kill_group()
    assert wait_until(lambda: not children_of(two_models), 15), "the router's children outlived llama-run"


def test_the_router_answers_like_llama_server_without_a_model(two_models: Path) -> None:
    port = free_port()
    with running_server(port, "--models-dir", str(two_models), "--metrics"):
        base = f"http://127.0.0.1:{port}"
        status, props = http("GET", f"{base}/props")
        assert status == 200 and props["role"] == "router"
        status, models = http("GET", f"{base}/v1/models")
        assert [(m["id"], m["status"]["value"]) for m in models["data"]] == [
            ("alpha", "unloaded"),
            ("beta", "unloaded"),
        ]
        status, error = http("GET", f"{base}/metrics")
        assert status == 400 and error["error"]["message"] == "model name is missing from the request"
        assert ask(port, "beta", 3)[0] == 200
        status, metrics = http("GET", f"{base}/metrics?model=beta")
        assert status == 200 and "llamacpp:tokens_predicted_total 3" in str(metrics)
    assert wait_until(lambda: not children_of(two_models), 10), "a model child outlived the router"
