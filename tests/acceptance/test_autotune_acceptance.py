"""`./llama-bench autotune`, run as a user would, against a fake llama-server whose speed depends on its
flags (tests/bin/llama-server-tunable --speed-model: a known optimum, flag values that crash or are
refused): what each strategy finds, failed and pruned candidates, resume, Ctrl-C, --apply, the files."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Dict, List

import pytest

from tests.helpers import (
    LLAMA_BENCH,
    LLAMA_RUN,
    REPO,
    LiveOutput,
    free_port,
    pid_alive,
    run_cli,
    spawn_cli,
    wait_until,
)

TUNABLE = REPO / "tests" / "bin" / "llama-server-tunable"
# Quick trials: 8 tokens at 5 ms (at the optimum) after a 16-token prompt.
QUICK = ("--max-output-tokens", "8", "--prompt-size", "16", "--ui", "plain", "--allow-multi-server")


def autotune(model: Path, speed: str, *args: str, timeout: float = 240.0, **kwargs: Any) -> Any:
    return run_cli(
        LLAMA_BENCH,
        "autotune",
        "--llama-server",
        str(TUNABLE),
        "--model",
        str(model),
        *QUICK,
        *args,
        "--",
        "--speed-model",
        speed,
        timeout=timeout,
        **kwargs,
    )


def one_error_line(res: Any) -> str:
    lines = [line for line in res.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert re.match(r"^llama-bench( [a-z]+)?: error: \S", lines[0]), res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    return lines[0]


def load(path: Path) -> Dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def search_trials(doc: Dict[str, Any]) -> List[Dict[str, Any]]:
    return [t for t in doc["trials"] if t["phase"] == "search"]


def launched(doc: Dict[str, Any]) -> List[Dict[str, Any]]:
    return [t for t in search_trials(doc) if t["status"] != "pruned"]


# -- finding the optimum --------------------------------------------------------------------------------
@pytest.mark.slow
def test_smart_finds_the_optimum_in_a_fraction_of_the_grid_and_records_failures(model_file, tmp_path):
    out, best = tmp_path / "tune.json", tmp_path / "best.json"
    res = autotune(
        model_file,
        "opt=t:4,ub:256,fa:on;base=5;w=0.6;reject=t:8;oom=ub:1024",
        "--space",
        "threads=1,2,4,8;ubatch=128,256,512,1024;fa=on,off",
        "--verify-rounds",
        "1",
        "--json-out",
        str(out),
        "--output",
        str(best),
    )
    assert res.returncode == 0, res.stdout + res.stderr
    doc = load(out)
    assert doc["schema"] == "llama-studio.autotune/1" and doc["strategy"] == "smart"
    assert doc["best"]["params"] == {"threads": 4, "ubatch_size": 256, "flash_attn": "on"}
    trials = launched(doc)
    assert len(trials) <= 0.5 * 32  # the grid has 32 points
    keys = [json.dumps(t["candidate"], sort_keys=True) for t in trials]
    assert len(keys) == len(set(keys))  # nothing launched twice: failures are never retried
    failures = {t["failure"] for t in trials if t["status"] == "failed"}
    assert failures <= {"flag-rejected", "out-of-memory"} and failures
    for t in trials:
        if t["status"] == "failed":
            assert t["values"] == [] and t["mean"] is None and t["reason"]
    assert "best: t=4 ub=256 fa=on" in res.stdout
    assert re.search(r"llama-server: .*llama-server-tunable .*-t 4 -ub 256 -fa on", res.stdout)
    assert "llama-run:    ./llama-run run --llama-server" in res.stdout and "--threads 4" in res.stdout
    assert doc["verification"]["best"] == "#1" and doc["best"]["source"] == "verified"
    assert doc["best"]["ratio_to_defaults"] > 1.2  # the fake's defaults (t 4, ub 512, fa auto) are slower
    assert doc["environment"]["host"]["cpu_cores_logical"] and doc["environment"]["server"]["build_info"]
    saved = load(best)
    assert saved["params"] == doc["best"]["params"] and saved["server_command"].startswith(str(TUNABLE))


@pytest.mark.slow
@pytest.mark.parametrize("strategy, budget", [("grid", None), ("random", "4")])
def test_grid_and_random_strategies(model_file, tmp_path, strategy, budget):
    out = tmp_path / "tune.json"
    extra = ["--budget", budget] if budget else []
    res = autotune(
        model_file,
        "opt=t:2,fa:on;base=5;w=1",
        "--strategy",
        strategy,
        "--space",
        "t=1,2,4;fa=on,off",
        "--verify-rounds",
        "0",
        "--json-out",
        str(out),
        *extra,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    doc = load(out)
    assert len(launched(doc)) == (6 if strategy == "grid" else 4)
    if strategy == "grid":
        assert doc["best"]["params"] == {"threads": 2, "flash_attn": "on"}
        assert doc["stop_reason"] == "grid done"
    else:
        assert doc["stop_reason"] == "trial budget of 4 spent"


def test_optuna_without_optuna_is_one_line_before_any_trial(model_file):
    try:
        import optuna  # noqa: F401

        pytest.skip("optuna is installed here")
    except ImportError:
        pass
    res = autotune(model_file, "base=5", "--strategy", "optuna")
    assert res.returncode == 3
    assert "missing Python package 'optuna'" in one_error_line(res) and "pip install optuna" in res.stderr


# -- pruning ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_pruned_candidates_are_recorded_and_never_launched(model_file, tmp_path):
    journal = tmp_path / "j.jsonl"
    res = autotune(
        model_file,
        "opt=b:512,ub:512;base=5",
        "--strategy",
        "grid",
        "--space",
        "b=256,512;ub=128,512",
        "--verify-rounds",
        "0",
        "--journal",
        str(journal),
    )
    assert res.returncode == 0, res.stdout + res.stderr
    trials = [json.loads(line) for line in journal.read_text(encoding="utf-8").splitlines()[1:]]
    pruned = [t for t in trials if t["status"] == "pruned"]
    assert [t["candidate"] for t in pruned] == [{"batch_size": 256, "ubatch_size": 512}]
    assert pruned[0]["failure"] == "constraint" and "ubatch 512 > batch 256" in pruned[0]["reason"]
    assert pruned[0]["command"] == [] and pruned[0]["duration_s"] == 0.0
    assert "pruned (constraint)" in res.stdout


def test_the_memory_estimate_prunes_before_launch(model_file, tmp_path):
    res = autotune(model_file, "base=5", "--space", "t=1,2", "--max-rss", "1K", "--json-out", str(tmp_path / "t.json"))
    assert res.returncode == 1
    assert "no candidate worked" in one_error_line(res)
    doc = load(tmp_path / "t.json")
    assert {t["status"] for t in doc["trials"]} == {"pruned"}
    assert all("> --max-rss 1.0 KiB" in t["reason"] and t["failure"] == "memory" for t in doc["trials"])


# -- resume and Ctrl-C --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_rerun_with_the_journal_continues(model_file, tmp_path):
    journal, out = tmp_path / "j.jsonl", tmp_path / "tune.json"
    args = ("--strategy", "grid", "--space", "t=1,2,4", "--verify-rounds", "0", "--journal", str(journal))
    first = autotune(model_file, "opt=t:4;base=5", *args, "--budget", "2")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "trial budget of 2 spent" in first.stdout
    second = autotune(model_file, "opt=t:4;base=5", *args, "--json-out", str(out))
    assert second.returncode == 0, second.stdout + second.stderr
    assert "resumed: 2 trials" in second.stdout
    assert len(re.findall(r"^\[trial \d+\]", second.stdout, re.M)) == 1  # only the third point is new
    doc = load(out)
    assert [t["number"] for t in doc["trials"]] == [1, 2, 3]
    assert doc["best"]["params"] == {"threads": 4}
    other = autotune(model_file, "opt=t:4;base=5", *args, "--objective", "prompt")
    assert other.returncode == 2 and "belongs to another study" in one_error_line(other)


def _server_children(pid: int) -> List[int]:
    import psutil

    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
    out = []
    for kid in kids:
        try:
            if kid.name() == "llama-server" and kid.status() != psutil.STATUS_ZOMBIE:
                out.append(kid.pid)
        except psutil.Error:
            pass
    return out


@pytest.mark.slow
def test_ctrl_c_stops_the_running_server_keeps_the_journal_and_prints_the_best_so_far(model_file, tmp_path):
    journal = tmp_path / "j.jsonl"
    proc = spawn_cli(
        LLAMA_BENCH, "autotune", "--llama-server", str(TUNABLE), "--model", str(model_file), *QUICK,
        "--strategy", "grid", "--space", "t=1,2", "--journal", str(journal), "--json-out", str(tmp_path / "t.json"),
        "--", "--speed-model", "opt=t:1;base=5;hang=t:2",
    )  # fmt: skip
    out = LiveOutput(proc)
    try:
        assert out.wait_for("[trial 1]", 60), out.text()
        # Trial 2's server loads forever: wait until it runs, then Ctrl-C the command.
        assert wait_until(lambda: len(_server_children(proc.pid)) == 1, 30), out.text()
        servers = _server_children(proc.pid)
        out.interrupt()
        code = out.finish(60)
    finally:
        out.kill_group()
    text = out.text()
    assert code == 130, text
    assert all(not pid_alive(pid) for pid in servers)
    assert "interrupted: best so far" in text and "best: t=1" in text
    lines = journal.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 and json.loads(lines[1])["candidate"] == {"threads": 1}  # the finished trial
    assert load(tmp_path / "t.json")["status"] == "interrupted"


# -- --apply --------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_apply_writes_env_and_start_script_that_llama_run_then_uses(model_file, tmp_path):
    env, script = tmp_path / ".env", tmp_path / "start_server.sh"
    env.write_text("# mine\nLLAMA_THREADS=8\nOTHER=kept\n", encoding="utf-8")
    res = autotune(
        model_file,
        "opt=t:2;base=5",
        "--strategy",
        "grid",
        "--space",
        "t=1,2",
        "--verify-rounds",
        "0",
        "--port",
        "12345",
        "--apply",
        "--env-file",
        str(env),
        "--start-script",
        str(script),
    )
    assert res.returncode == 0, res.stdout + res.stderr
    text = env.read_text(encoding="utf-8")
    assert "# mine\nLLAMA_THREADS=2\nOTHER=kept\n" in text
    assert f"LLAMA_SERVER_BIN={TUNABLE}" in text and f"LLAMA_MODEL={model_file}" in text
    assert "LLAMA_PORT=12345" in text and "LLAMA_CTX_SIZE=2048" in text  # the tiny model's trained context
    body = script.read_text(encoding="utf-8")
    assert body.startswith("#!/usr/bin/env bash\n# Generated by llama-bench autotune") and os.access(script, os.X_OK)
    assert " -t 2 " in body and body.rstrip().endswith('"$@"')
    # llama-run picks the settings up from that .env.
    run = run_cli(
        LLAMA_RUN, "run", "--duration", "1", "--ui", "plain", "--allow-multi-server", "--port", str(free_port()),
        env={**os.environ, "LLAMA_STUDIO_DOTENV": str(env)}, timeout=60,
    )  # fmt: skip
    started = next(line for line in run.stdout.splitlines() if line.startswith("Starting llama-server")).split()
    assert str(TUNABLE) in started and str(model_file) in started, run.stdout
    assert started[started.index("-t") + 1] == "2" and started[started.index("-c") + 1] == "2048"


def test_apply_never_writes_a_device_or_the_default_env_in_tests(model_file):
    res = autotune(model_file, "base=5", "--apply", "--start-script", os.devnull)  # LLAMA_STUDIO_DOTENV=/dev/null
    assert res.returncode == 2 and "is not a regular file" in one_error_line(res)


# -- what cannot be measured here -------------------------------------------------------------------------------
def test_tokens_per_joule_without_an_energy_sensor_is_one_line_up_front(model_file):
    from tools.llama_bench.power.meter import EnergyMeter

    meter = EnergyMeter()
    summary = meter.read()
    meter.close()
    if not (summary.cpu_reason and summary.gpu_reason):
        pytest.skip("this machine has an energy sensor")
    for objective in ("tokens-per-joule", "efficiency"):
        res = autotune(model_file, "base=5", "--objective", objective)
        assert res.returncode == 2 and "needs an energy sensor" in one_error_line(res)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--space", "warp=1"], "unknown parameter 'warp'"),
        (["--space", "t=1,2", "--threads", "2"], "both fixed"),
        (["--objective", "slo"], "needs --slo"),
        (["--slo", "ttft_p99=1s"], "--slo applies to --objective slo only"),
        (["--concurrency", "4"], "--concurrency applies to throughput"),
        (["--prompt-size", "5000"], "do not fit --ctx-size 4096"),
        (["--budget", "soon"], "invalid budget"),
        (["--max-rss", "lots"], "invalid size"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(model_file, args, message):
    res = autotune(model_file, "base=5", *args)
    assert res.returncode == 2 and message in one_error_line(res)


def test_plot_without_matplotlib_fails_before_any_trial(model_file, tmp_path):
    try:
        import matplotlib  # noqa: F401

        pytest.skip("matplotlib is installed here")
    except ImportError:
        pass
    res = autotune(model_file, "base=5", "--plot", str(tmp_path / "p.png"))
    assert res.returncode == 3 and "matplotlib" in one_error_line(res)
    assert "[trial" not in res.stdout


# -- the SLO objective ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_slo_objective_finds_the_known_capacity(model_file, tmp_path):
    """10 tokens at 10 ms (x1.2 for 2 slots) per request: about slots / 0.1 s requests/s keep TTFT p90 under
    300 ms, so 4 slots win with a capacity near 40 req/s."""
    out = tmp_path / "tune.json"
    res = autotune(
        model_file,
        "opt=np:4;base=10;w=0.2",
        "--objective",
        "slo",
        "--slo",
        "ttft_p90=300ms",
        "--space",
        "np=2,4",
        "--max-output-tokens",
        "10",
        "--repeats",
        "1",
        "--verify-rounds",
        "0",
        "--json-out",
        str(out),
        timeout=280,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    doc = load(out)
    assert doc["unit"] == "req/s" and doc["best"]["params"] == {"parallel": 4}
    assert 15 < doc["best"]["value"] < 60  # the capacity search's answer, near 4 / 0.1 s
    by_np = {t["candidate"]["parallel"]: t["mean"] for t in launched(doc)}
    assert by_np[4] > by_np[2]
