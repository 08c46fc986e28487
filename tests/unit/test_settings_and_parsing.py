"""`.env` defaults, size parsing, and how the CLIs read their command lines."""

from __future__ import annotations

import pytest

from tools.llama_bench import settings
from tools.llama_bench.argtypes import split_extra_args
from tools.llama_bench.entry import run_cli
from tools.llama_bench.utils import ExitStatus, parse_token_count
from tools.llama_run.cli import build_parser, normalize_argv


def test_dotenv_parsing_handles_comments_quotes_and_export(tmp_path):
    env = tmp_path / ".env"
    env.write_text(
        "# comment\nLLAMA_MODEL='/m/a b.gguf'\nexport LLAMA_PORT=11500\nEMPTY=\nBROKEN LINE\n", encoding="utf-8"
    )
    assert settings.read_dotenv(env) == {"LLAMA_MODEL": "/m/a b.gguf", "LLAMA_PORT": "11500", "EMPTY": ""}


def test_missing_dotenv_is_empty(tmp_path):
    assert settings.read_dotenv(tmp_path / "none") == {}


def test_environment_wins_over_dotenv(tmp_path, monkeypatch):
    env = tmp_path / ".env"
    env.write_text("LLAMA_PORT=1111\n", encoding="utf-8")
    monkeypatch.setattr(settings, "_dotenv_cache", settings.read_dotenv(env))
    assert settings.setting("LLAMA_PORT") == "1111"
    monkeypatch.setenv("LLAMA_PORT", "2222")
    assert settings.setting("LLAMA_PORT") == "2222"


@pytest.mark.parametrize("text,value", [("100", 100), ("1k", 1000), ("1.5k", 1500), ("4096", 4096), (" 2K ", 2000)])
def test_token_counts_accept_k_for_thousands(text, value):
    assert parse_token_count(text) == value


@pytest.mark.parametrize("text", ["1q", "0", "-5", "", "1.5", "abc", "k", "nan", "inf"])
def test_bad_token_counts_are_rejected(text):
    with pytest.raises(ValueError):
        parse_token_count(text)


def test_bare_llama_run_and_leading_flags_mean_run():
    assert normalize_argv([]) == ["run"]
    assert normalize_argv(["--port", "1"]) == ["run", "--port", "1"]
    assert normalize_argv(["stop-all"]) == ["stop-all"]
    assert normalize_argv(["--version"]) == ["--version"]


def test_flags_after_double_dash_go_to_llama_server():
    ours, extra = split_extra_args(["run", "--port", "1", "--", "--cache-type-k", "q8_0", "--", "x"])
    assert ours == ["run", "--port", "1"]
    assert extra == ["--cache-type-k", "q8_0", "--", "x"]


def test_run_defaults_match_the_documented_ones():
    args = build_parser().parse_args(["run"])
    assert (args.host, args.port, args.interval, args.startup_timeout) == ("127.0.0.1", 11433, 1.0, 300.0)
    assert args.ui is None and args.duration is None and not args.detach


def test_a_missing_third_party_package_is_one_line_and_exit_3(capsys):
    def body() -> int:
        raise ModuleNotFoundError("No module named 'aiohttp'", name="aiohttp")

    assert run_cli("llama-bench", body) == ExitStatus.MISSING_PACKAGE
    err = capsys.readouterr().err
    assert err.startswith("llama-bench: error: missing Python package 'aiohttp'") and err.count("\n") == 1


@pytest.mark.parametrize("module", ["tools.llama_bench.no_such_module", "tests.nothing", "json.no_such"])
def test_a_missing_module_of_our_own_or_the_stdlib_is_a_bug_not_a_package_to_install(module):
    def body() -> int:
        raise ModuleNotFoundError(f"No module named '{module}'", name=module)

    with pytest.raises(ModuleNotFoundError):
        run_cli("llama-run", body)


def test_both_clis_dispatch_through_handlers_and_share_exit_statuses():
    from tools.llama_bench.cli import build_parser as bench_parser

    run_parser = build_parser()
    for parser, argv in ((run_parser, ["ps"]), (run_parser, ["stop-all"]), (bench_parser(), ["compare", "a", "b"])):
        assert callable(parser.parse_args(argv).handler)
    assert [int(s) for s in ExitStatus] == [0, 1, 2, 3, 4, 130]  # as documented in the README


def test_stop_all_filters_parse_and_repeat():
    args = build_parser().parse_args(["stop-all", "--port", "8080", "--port", "8081", "--pid", "42", "--force"])
    assert args.port == [8080, 8081] and args.pid == [42] and args.force and args.timeout == 10.0
    assert build_parser().parse_args(["stop-all", "--timeout", "2"]).timeout == 2.0
