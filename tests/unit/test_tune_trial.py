"""One autotune trial against the tunable fake server (tests/bin/llama-server-tunable), in-process:
the flags a candidate gets, how failures are told apart, and that the server is always stopped."""

from __future__ import annotations

import dataclasses

import pytest

from tests.helpers import REPO, pid_alive
from tools.llama_bench.outputs import output_path
from tools.llama_bench.server.config import ServerConfig, build_command
from tools.llama_bench.tune.objective import Objective, Workload, make_measure
from tools.llama_bench.tune.trial import (
    FailureKind,
    ServerBase,
    Trial,
    TrialRunner,
    TrialStatus,
    classify_start_failure,
    fixed_of,
    server_config,
)

TUNABLE = REPO / "tests" / "bin" / "llama-server-tunable"
SPEED = "opt=t:2,fa:on;base=8;reject=t:3;oom=ub:1024;crash=fa:off;hang=t:5"


def runner_for(tmp_path, model_file, spec: str = SPEED, startup_timeout: float = 30.0) -> TrialRunner:
    template = ServerConfig(binary=str(TUNABLE), model=str(model_file), extra_args=["--speed-model", spec])
    base = ServerBase(template, ctx_size=1024, startup_timeout=startup_timeout, allow_multi_server=True)
    workload = Workload(Objective.GEN, prompt_size=16, max_output_tokens=6, concurrency=1, ctx_size=1024)
    jsonl = output_path(str(tmp_path / "records.jsonl"), "--jsonl")
    assert jsonl is not None
    return TrialRunner(base, make_measure(workload), jsonl, warmup=1)


def test_candidate_flags_reach_the_server_command():
    template = ServerConfig(binary="/bin/llama-server", model="/m.gguf", port=8080, extra_args=["--jinja"])
    base = ServerBase(template, ctx_size=2048)
    cfg = server_config(base, {"threads": 4, "parallel": 3, "cache_type": "q8_0", "threads_batch": 8}, 5555)
    cmd = build_command(cfg)
    assert cmd[cmd.index("--port") + 1] == "5555"
    assert cmd[cmd.index("-c") + 1] == "6144"  # every one of the 3 slots serves 2048 tokens
    assert cmd[cmd.index("-t") + 1] == "4" and cmd[cmd.index("-np") + 1] == "3"
    assert cmd[cmd.index("-tb") + 1] == "8"
    assert cmd[cmd.index("-ctk") + 1] == "q8_0" and cmd[cmd.index("-ctv") + 1] == "q8_0"
    assert cmd[-1] == "--jinja"  # the user's raw flags come last
    defaults = build_command(server_config(base, {}, 5555))
    assert "-t" not in defaults and "-np" not in defaults and defaults[defaults.index("-c") + 1] == "2048"


def test_flags_given_by_the_user_are_fixed():
    fields = {f.name for f in dataclasses.fields(ServerConfig)}
    template = ServerConfig(binary="b", threads=6, no_gpu=True, flash_attn="on")
    fixed = fixed_of(template)
    assert fixed["threads"] == 6 and fixed["flash_attn"] == "on" and fixed["n_gpu_layers"] == 0
    if "cache_type_k" in fields:
        assert fixed_of(dataclasses.replace(template, cache_type_k="q4_0"))["cache_type"] == "q4_0"


@pytest.mark.parametrize(
    "lines, code, kind",
    [
        (["ggml_backend_cpu_buffer_type_alloc_buffer: failed to allocate buffer of size 1"], 1, "out-of-memory"),
        (["CUDA error: out of memory"], 1, "out-of-memory"),
        (["loading ..."], -9, "out-of-memory"),
        (['error while handling argument "-fa": expected on, off or auto'], 1, "flag-rejected"),
        (["error: invalid argument: --warp"], 1, "flag-rejected"),
        (["llama_init_from_model: failed to initialize the context"], 1, "flag-rejected"),
        (["Segmentation fault"], -11, "crash"),
    ],
)
def test_start_failures_are_told_apart_by_the_log(lines, code, kind):
    assert classify_start_failure(lines, code) == FailureKind(kind)


@pytest.mark.slow
def test_a_good_trial_measures_every_repeat_and_stops_the_server(tmp_path, model_file):
    runner = runner_for(tmp_path, model_file)
    trial = runner.run(1, {"threads": 2, "flash_attn": "on"}, repeats=3)
    assert trial.status is TrialStatus.OK and len(trial.values) == 3
    assert 60 < (trial.mean or 0) < 160  # 8 ms per token = 125 tok/s; loose: the machine is shared
    assert trial.spread is not None and trial.ready_s is not None and trial.rss_bytes
    assert "-t" in trial.command and trial.command[trial.command.index("-t") + 1] == "2"
    assert trial.pid is not None and not pid_alive(trial.pid)


@pytest.mark.slow
def test_successive_halving_stops_a_clear_loser_after_one_repeat(tmp_path, model_file):
    runner = runner_for(tmp_path, model_file)
    trial = runner.run(1, {"threads": 4, "flash_attn": "on"}, repeats=3, keep_going=lambda values: False)
    assert trial.ok and len(trial.values) == 1 and trial.stopped_early


@pytest.mark.slow
@pytest.mark.parametrize(
    "candidate, kind, words",
    [
        ({"threads": 3}, FailureKind.FLAG_REJECTED, 'error while handling argument "-t"'),
        ({"ubatch_size": 1024}, FailureKind.OUT_OF_MEMORY, "failed to allocate"),
        ({"threads": 2, "flash_attn": "off"}, FailureKind.CRASH, "died during the measurement"),
    ],
)
def test_a_failed_trial_says_why_and_has_no_score(tmp_path, model_file, candidate, kind, words):
    runner = runner_for(tmp_path, model_file)
    trial = runner.run(1, candidate, repeats=2)
    assert trial.status is TrialStatus.FAILED and trial.failure is kind
    assert words in (trial.reason or "")
    assert trial.values == [] and trial.mean is None
    assert trial.pid is not None and not pid_alive(trial.pid)


@pytest.mark.slow
def test_a_server_that_never_gets_ready_is_a_startup_timeout_and_is_stopped(tmp_path, model_file):
    runner = runner_for(tmp_path, model_file, startup_timeout=1.5)
    trial = runner.run(1, {"threads": 5}, repeats=1)
    assert trial.status is TrialStatus.FAILED and trial.failure is FailureKind.STARTUP_TIMEOUT
    assert "not ready within 1.5 s" in (trial.reason or "")
    assert trial.pid is not None and not pid_alive(trial.pid)


@pytest.mark.slow
def test_max_rss_turns_a_measured_trial_into_a_failure(tmp_path, model_file):
    runner = runner_for(tmp_path, model_file)
    runner.max_rss = 1024  # bytes: nothing fits
    trial = runner.run(1, {"threads": 2, "flash_attn": "on"}, repeats=1)
    assert trial.status is TrialStatus.FAILED and trial.failure is FailureKind.OVER_LIMIT
    assert "> --max-rss" in (trial.reason or "") and trial.values  # measured, but not eligible


def test_trials_round_trip_through_their_dict():
    trial = Trial(3, {"threads": 2}, TrialStatus.FAILED, failure=FailureKind.CRASH, reason="boom")
    again = Trial.from_dict({**trial.to_dict(), "unknown_future_field": 1})
    assert again == trial
