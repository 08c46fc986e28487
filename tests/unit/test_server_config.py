"""Finding llama-server and the model, and the command line we start it with."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from tests.gguf_files import write_tiny_gguf
from tools.llama_bench.server import locate
from tools.llama_bench.server.config import ServerConfig, build_command
from tools.llama_bench.server.locate import resolve_binary, resolve_model
from tools.llama_bench.server.ports import port_in_use
from tools.llama_bench.utils import UserError


def make_exe(path: Path) -> Path:
    path.write_text("#!/bin/sh\n", encoding="utf-8")
    path.chmod(0o755)
    return path


def test_command_always_enables_metrics_and_maps_every_flag():
    cfg = ServerConfig(
        binary="/bin/llama-server", model="/m.gguf", host="0.0.0.0", port=9000, ctx_size=4096, threads=8,
        parallel=2, batch_size=1024, ubatch_size=256, n_gpu_layers=99, flash_attn="on", api_key="k",
        extra_args=["--cache-type-k", "q8_0"],
    )  # fmt: skip
    cmd = build_command(cfg)
    assert cmd[:6] == ["/bin/llama-server", "--host", "0.0.0.0", "--port", "9000", "--metrics"]
    joined = " ".join(cmd)
    for part in ("-m /m.gguf", "-c 4096", "-t 8", "-np 2", "-b 1024", "-ub 256", "-ngl 99", "-fa on", "--api-key k"):
        assert part in joined
    assert cmd[-2:] == ["--cache-type-k", "q8_0"]
    assert cfg.base_url == "http://127.0.0.1:9000"  # a wildcard bind is reached through loopback


def test_no_gpu_forces_zero_gpu_layers_even_when_layers_are_given():
    cmd = build_command(ServerConfig(binary="b", n_gpu_layers=99, no_gpu=True))
    assert cmd[cmd.index("-ngl") + 1] == "0"


def test_unset_options_are_left_to_llama_server_defaults():
    cmd = build_command(ServerConfig(binary="b"))
    assert cmd == ["b", "--host", "127.0.0.1", "--port", "11433", "--metrics"]


def test_binary_lookup_order_flag_then_env_then_build_then_path(tmp_path, monkeypatch):
    flag_bin = make_exe(tmp_path / "flag-server")
    env_bin = make_exe(tmp_path / "env-server")
    built = make_exe(tmp_path / "built-server")
    path_dir = tmp_path / "path"
    path_dir.mkdir()
    path_bin = make_exe(path_dir / "llama-server")
    monkeypatch.setattr(locate, "BUILT_SERVER", built)
    monkeypatch.setenv("PATH", str(path_dir))
    monkeypatch.setenv("LLAMA_SERVER_BIN", str(env_bin))
    assert resolve_binary(str(flag_bin)) == str(flag_bin)
    assert resolve_binary(None) == str(env_bin)
    monkeypatch.delenv("LLAMA_SERVER_BIN")
    assert resolve_binary(None) == str(built)
    monkeypatch.setattr(locate, "BUILT_SERVER", tmp_path / "missing")
    assert resolve_binary(None) == str(path_bin)


def test_missing_binary_error_names_what_was_searched_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(locate, "BUILT_SERVER", tmp_path / "a" / "b" / "c" / "d" / "llama-server")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UserError) as err:
        resolve_binary(None)
    message = str(err.value)
    assert "LLAMA_SERVER_BIN" in message and "PATH" in message and "build_llama.cpp.sh" in message


def test_non_executable_binary_is_a_clear_error(tmp_path):
    plain = tmp_path / "llama-server"
    plain.write_text("", encoding="utf-8")
    with pytest.raises(UserError, match="not executable"):
        resolve_binary(str(plain))


def test_model_must_exist(tmp_path):
    with pytest.raises(UserError, match="model file not found"):
        resolve_model(str(tmp_path / "nope.gguf"))


def test_model_is_required_unless_told_otherwise():
    with pytest.raises(UserError, match="no model given"):
        resolve_model(None)
    assert resolve_model(None, required=False) is None


def test_a_file_that_is_not_gguf_is_refused_before_any_start(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello", encoding="utf-8")
    with pytest.raises(UserError, match="not a GGUF file") as exc:
        resolve_model(str(bad))
    assert exc.value.exit_code == 2 and "\n" not in str(exc.value)


def test_a_truncated_gguf_is_refused(tmp_path):
    good = write_tiny_gguf(tmp_path / "m.gguf")
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(good.read_bytes()[:100])
    with pytest.raises(UserError, match="truncated"):
        resolve_model(str(cut))


def test_a_gguf_model_passes_silently(tmp_path, capsys):
    good = write_tiny_gguf(tmp_path / "m.gguf")
    assert resolve_model(str(good)) == str(good)
    assert capsys.readouterr().err == ""


def test_a_model_can_be_named_by_a_unique_part_of_its_name(tmp_path, monkeypatch):
    folder = tmp_path / "zoo"
    folder.mkdir()
    write_tiny_gguf(folder / "Qwen2.5-0.5B-Instruct-Q4_K_M.gguf")
    write_tiny_gguf(folder / "Llama-3.2-1B-Instruct-Q8_0.gguf")
    monkeypatch.setenv("LLAMA_MODEL_DIR", str(folder))
    assert resolve_model("qwen2.5") == str(folder / "Qwen2.5-0.5B-Instruct-Q4_K_M.gguf")
    with pytest.raises(UserError, match="Instruct") as exc:
        resolve_model("instruct")  # two candidates: both are listed
    assert "Qwen2.5" in str(exc.value) and "Llama-3.2" in str(exc.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_model_is_a_clear_error(tmp_path):
    locked = write_tiny_gguf(tmp_path / "m.gguf")
    locked.chmod(0)
    with pytest.raises(UserError, match="not readable"):
        resolve_model(str(locked))


def test_port_in_use_detects_a_listener():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert port_in_use("127.0.0.1", sock.getsockname()[1])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free = sock.getsockname()[1]
    assert not port_in_use("127.0.0.1", free)
