"""`.env` defaults, size parsing, and how the CLIs read their command lines."""

from __future__ import annotations

import pytest

from tools.llama_bench import settings
from tools.llama_bench.server_args import split_extra_args
from tools.llama_bench.utils import parse_token_count
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
