"""`llama-bench autotune` on the real llama-server and the default model: a 3-trial search whose --apply
writes a .env (a temp file, never the developer's) that `./llama-run run` then starts the server with."""

from __future__ import annotations

import json
import os

import pytest

from tests.helpers import LLAMA_BENCH, LLAMA_RUN, free_port, run_cli

pytestmark = pytest.mark.real


def test_three_trial_autotune_applies_a_config_llama_run_uses(real_server, real_model, real_threads, tmp_path):
    env, script, out = tmp_path / ".env", tmp_path / "start_server.sh", tmp_path / "tune.json"
    env.write_text("# the developer's own line\nMY_KEY=1\n", encoding="utf-8")
    res = run_cli(
        LLAMA_BENCH, "autotune", "--llama-server", str(real_server), "--model", str(real_model),
        "--allow-multi-server", "--ui", "plain", "--strategy", "grid", "--budget", "3",
        "--space", f"threads=1,{real_threads};fa=on,off", "--prompt-size", "32", "--max-output-tokens", "16",
        "--repeats", "2", "--verify-rounds", "1", "--verify-top", "1", "--ctx-size", "1024",
        "--json-out", str(out), "--apply", "--env-file", str(env), "--start-script", str(script),
        timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads(out.read_text(encoding="utf-8"))
    trials = [t for t in doc["trials"] if t["phase"] == "search"]
    assert len(trials) == 3 and all(t["status"] == "ok" and len(t["values"]) == 2 for t in trials)
    assert all(v > 0 for t in trials for v in t["values"])
    assert doc["verification"]["finalists"][0]["label"] == "defaults"
    assert doc["environment"]["server"]["build_info"]
    best = doc["best"]["params"]

    text = env.read_text(encoding="utf-8")
    assert "MY_KEY=1" in text and f"LLAMA_THREADS={best['threads']}" in text
    assert f"LLAMA_MODEL={real_model}" in text and f"LLAMA_SERVER_BIN={real_server}" in text
    assert f"LLAMA_FLASH_ATTN={best['flash_attn']}" in text and "LLAMA_CTX_SIZE=1024" in text
    assert os.access(script, os.X_OK) and str(real_server) in script.read_text(encoding="utf-8")

    run = run_cli(
        LLAMA_RUN, "run", "--duration", "2", "--ui", "plain", "--allow-multi-server", "--port", str(free_port()),
        env={**os.environ, "LLAMA_STUDIO_DOTENV": str(env)}, timeout=180,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    started = next(line for line in run.stdout.splitlines() if line.startswith("Starting llama-server")).split()
    assert started[started.index("Starting") + 2] == str(real_server)
    assert started[started.index("-m") + 1] == str(real_model)
    assert started[started.index("-t") + 1] == str(best["threads"])
    assert started[started.index("-c") + 1] == "1024"
    assert "llama-server ready" in run.stdout
