"""The autotune search space: parsing --space, the defaults from the machine and the binary's --help,
fixed parameters, constraints, and the help text cache."""

from __future__ import annotations

import os
import stat

import pytest

from tools.llama_bench.tune import machine
from tools.llama_bench.tune.machine import server_help, supported_flags
from tools.llama_bench.tune.space import (
    SpaceInputs,
    build_space,
    default_values,
    describe,
    fixed_from_raw,
    parse_space,
    thread_values,
    violation,
)
from tools.llama_bench.utils import UserError

LLAMA_HELP = """----- common params -----

-h,    --help, --usage                  print usage and exit
-t,    --threads N                      number of CPU threads to use during generation (default: -1)
                                        (env: LLAMA_ARG_THREADS)
-tb,   --threads-batch N                number of threads to use during batch and prompt processing
-b,    --batch-size N                   logical maximum batch size (default: 2048)
-ub,   --ubatch-size N                  physical maximum batch size (default: 512)
-fa,   --flash-attn [on|off|auto]       set Flash Attention use ('on', 'off', or 'auto', default: 'auto')
-ctk,  --cache-type-k TYPE              KV cache data type for K
-ngl,  --gpu-layers, --n-gpu-layers N   max. number of layers to store in VRAM
-np,   --parallel N                     number of server slots (default: -1, -1 = auto)
"""
ALL_FLAGS = supported_flags(LLAMA_HELP)


def inputs(**kw) -> SpaceInputs:
    base = dict(physical_cores=8, logical_cores=16, has_gpu=False, n_layers=30, prefill=False, concurrency=1,
                prompt_size=256, supported=ALL_FLAGS)  # fmt: skip
    base.update(kw)
    return SpaceInputs(**base)


def test_help_flags_are_read_from_the_names_column_only():
    assert {"-t", "--threads", "-tb", "--threads-batch", "-ctk", "--cache-type-k", "--n-gpu-layers"} <= ALL_FLAGS
    assert "--env" not in ALL_FLAGS and "LLAMA_ARG_THREADS" not in ALL_FLAGS


def test_space_text_accepts_aliases_lists_and_ranges():
    space = parse_space("t=1..3; ubatch=512,128,256,128 ;fa=on,off;kv=q8_0;np=2")
    assert space == {
        "threads": [1, 2, 3],
        "ubatch_size": [128, 256, 512],
        "flash_attn": ["on", "off"],
        "cache_type": ["q8_0"],
        "parallel": [2],
    }


@pytest.mark.parametrize(
    "text, message",
    [
        ("threads", "is not NAME=VALUES"),
        ("warp=1,2", "unknown parameter 'warp'"),
        ("fa=maybe", "expected one of on, off, auto"),
        ("threads=two", "expected whole numbers"),
        ("threads=0", "expected a number >= 1"),
        ("ngl=-5", "expected a number >= 0"),  # -ngl 0 is a real choice: all on the CPU
        ("threads=1,,2", "empty value"),
        ("t=1;threads=2", "given twice"),
        ("t=8..1", "expected a range"),
        (";", "no parameter given"),
    ],
)
def test_bad_space_text_is_one_clear_error(text, message):
    with pytest.raises(UserError) as info:
        parse_space(text)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_threads_come_from_the_cores():
    assert thread_values(2, 2) == [1, 2]
    assert thread_values(8, 16) == [1, 2, 4, 8, 16]
    assert thread_values(64, 64) == [8, 16, 32, 64]  # from an eighth of the cores
    assert thread_values(6, 12) == [1, 2, 4, 6, 12]


def test_default_space_depends_on_the_objective():
    gen, start = default_values(inputs())
    assert set(gen) == {"threads", "flash_attn", "cache_type"}
    assert start == {"threads": 8, "flash_attn": "on", "cache_type": "f16"}
    prompt, _ = default_values(inputs(prefill=True, prompt_size=4000))
    assert {"threads_batch", "batch_size", "ubatch_size"} <= set(prompt)
    assert prompt["batch_size"] == [512, 1024, 2048, 4096]  # a prompt above 2048 makes 4096 worth a try
    conc, start = default_values(inputs(prefill=True, concurrency=6))
    assert conc["parallel"] == [1, 2, 4, 6] and start["parallel"] == 6
    gpu, start = default_values(inputs(has_gpu=True, n_layers=30))
    assert gpu["n_gpu_layers"] == [0, 15, 31] and start["n_gpu_layers"] == 31


def test_only_flags_the_binary_has_are_tuned():
    values, start = default_values(inputs(prefill=True, supported={"-t", "--threads", "--flash-attn"}))
    assert set(values) == {"threads", "flash_attn"} and set(start) == {"threads", "flash_attn"}
    with pytest.raises(UserError, match="has no --cache-type-k flag"):
        build_space({}, {}, parse_space("kv=f16,q8_0"), {}, {"--threads"}, replace_all=True)


def test_space_overrides_fixed_parameters_and_the_start():
    defaults, start = default_values(inputs())
    space = build_space(defaults, start, parse_space("threads=2,3"), {"cache_type": "q8_0"}, ALL_FLAGS, False)
    assert space.values == {"threads": [2, 3], "flash_attn": ["on", "off"]}
    assert space.start == {"threads": 3, "flash_attn": "on"}  # 8 cores snapped to the nearest value
    assert space.size == 4 and space.describe() == "t=2,3; fa=on,off (4 points)"
    only = build_space(defaults, start, parse_space("threads=2,3"), {}, ALL_FLAGS, replace_all=True)
    assert only.values == {"threads": [2, 3]}
    with pytest.raises(UserError, match="both fixed"):
        build_space(defaults, start, parse_space("threads=2,3"), {"threads": 4}, ALL_FLAGS, False)


def test_raw_server_flags_fix_parameters():
    assert fixed_from_raw(["-ctk", "q8_0", "--threads-batch=4", "--jinja", "-np", "2"]) == {
        "cache_type": "q8_0",
        "threads_batch": 4,
        "parallel": 2,
    }


def test_constraints_prune_what_llama_cpp_refuses_or_collapses():
    assert "ubatch 1024 > batch 512" in violation({"ubatch_size": 1024, "batch_size": 512}, {})
    assert violation({"ubatch_size": 1024}, {}) is None  # the server's batch is 2048
    assert "needs flash attention" in violation({"flash_attn": "off"}, {"cache_type": "q8_0"})
    assert violation({"flash_attn": "off", "cache_type": "f16", "ubatch_size": 512}, {}) is None


def test_describe_is_short_and_ordered():
    assert describe({"flash_attn": "on", "threads": 2}) == "t=2 fa=on"
    assert describe({}) == "llama-server defaults"


def test_help_text_is_cached_per_binary(tmp_path, monkeypatch):
    machine._help_cache.clear()
    calls = tmp_path / "calls"
    binary = tmp_path / "llama-server"
    binary.write_text(f"#!/bin/sh\necho run >> '{calls}'\ncat <<'EOF'\n{LLAMA_HELP}EOF\n", encoding="utf-8")
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    assert "--threads-batch" in server_help(str(binary))
    machine._help_cache.clear()  # a new process: the file cache in the state directory answers
    assert "--threads-batch" in server_help(str(binary))
    assert calls.read_text(encoding="utf-8").count("run") == 1
    os.utime(binary, ns=(1, 1))  # another build at the same path: asked again
    machine._help_cache.clear()
    server_help(str(binary))
    assert calls.read_text(encoding="utf-8").count("run") == 2


def test_a_binary_without_flags_in_its_help_is_refused(tmp_path):
    machine._help_cache.clear()
    binary = tmp_path / "not-a-server"
    binary.write_text("#!/bin/sh\necho hello\n", encoding="utf-8")
    binary.chmod(0o755)
    with pytest.raises(UserError, match="lists no flags"):
        server_help(str(binary))
