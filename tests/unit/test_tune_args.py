"""`llama-bench autotune` flags: what they turn into (AutotuneParams), parsed through llama-bench's own
parser, without running anything."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from tools.llama_bench.tune import args as tune_args
from tools.llama_bench.tune.objective import Objective
from tools.llama_bench.utils import UserError

TUNABLE = "tests/bin/llama-server-tunable"


def parse(*argv: str) -> argparse.Namespace:
    from tools.llama_bench import cli
    from tools.llama_bench.argtypes import split_extra_args

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "autotune" not in sub.choices:  # until cli.py registers it
        tune_args.register(sub)
    ours, extra = split_extra_args(["autotune", "--llama-server", TUNABLE, *argv])
    ns = parser.parse_args(ours)
    ns.extra_server_args = extra
    return ns


def params(model_file, *argv: str):
    return tune_args.params_from_args(parse("--model", str(model_file), *argv))


def test_defaults_follow_the_objective(model_file):
    p = params(model_file)
    assert p.workload.objective is Objective.GEN and p.workload.concurrency == 1
    assert (p.workload.prompt_size, p.workload.max_output_tokens, p.workload.ctx_size) == (256, 64, 4096)
    assert p.strategy == "smart" and p.budget is None and p.repeats == 3 and p.ctx_given is False
    assert params(model_file, "--objective", "throughput").workload.concurrency == 4
    assert params(model_file, "--objective", "prompt").workload.max_output_tokens == 1


def test_the_original_studio_flags_keep_working(model_file, tmp_path):
    p = params(
        model_file, "--objective", "efficiency", "--prompt-tokens", "512", "--batch-sizes", "512,2048",
        "--ubatch-sizes", "128,256", "--duration", "600", "--output", str(tmp_path / "best.json"),
    )  # fmt: skip
    assert p.workload.objective is Objective.TOKENS_PER_JOULE and p.workload.prompt_size == 512
    assert p.batch_sizes == [512, 2048] and p.ubatch_sizes == [128, 256]
    assert p.budget is not None and p.budget.seconds == 600 and p.budget.trials is None
    assert p.output is not None and p.output.path.name == "best.json"


def test_a_server_flag_fixes_its_parameter_but_the_env_threads_do_not(model_file, tmp_path, monkeypatch):
    env = tmp_path / ".env"
    env.write_text("LLAMA_THREADS=7\n", encoding="utf-8")
    monkeypatch.setenv("LLAMA_STUDIO_DOTENV", str(env))
    monkeypatch.setattr("tools.llama_bench.settings._dotenv_cache", None)
    assert params(model_file).template.threads is None  # tuned, not fixed at 7
    p = params(model_file, "--threads", "3", "--", "-ctk", "q8_0")
    assert p.template.threads == 3 and p.template.extra_args == ["-ctk", "q8_0"]


def test_budget_and_outputs_are_checked_before_anything_runs(model_file, tmp_path):
    p = params(model_file, "--budget", "15m", "--journal", str(tmp_path / "j.jsonl"))
    assert p.budget is not None and p.budget.seconds == 900 and p.journal is not None
    with pytest.raises(UserError, match="name the same file"):
        params(model_file, "--json-out", str(tmp_path / "a.json"), "--output", str(tmp_path / "a.json"))
    with pytest.raises(UserError, match="go with --apply"):
        params(model_file, "--env-file", str(tmp_path / ".env"))
    with pytest.raises(UserError, match="directory .* does not exist"):
        params(model_file, "--journal", str(tmp_path / "missing" / "j.jsonl"))


def test_apply_targets_default_to_the_repo_files_but_honour_the_overrides(model_file, tmp_path):
    p = params(model_file, "--apply", "--env-file", str(tmp_path / ".env"), "--start-script", str(tmp_path / "s.sh"))
    assert p.apply is not None and p.apply.env_file.path == tmp_path / ".env"
    with pytest.raises(UserError, match="not a regular file"):  # the test default: LLAMA_STUDIO_DOTENV=/dev/null
        params(model_file, "--apply", "--start-script", str(tmp_path / "s.sh"))


def test_autotune_help_imports_nothing_heavy():
    code = (
        "import sys; from tools.llama_bench import cli; from tools.llama_bench.tune import args as a; "
        "import argparse; p = argparse.ArgumentParser(); a.register(p.add_subparsers()); "
        "heavy = ('rich', 'aiohttp', 'psutil', 'requests', 'tools.llama_bench.tune.cmd'); "
        "print([m for m in heavy if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
