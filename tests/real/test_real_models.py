"""The default model's real GGUF header, and our memory estimate against what llama-server allocates."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, Optional

import pytest

from tests.helpers import free_port, running_server
from tools.llama_bench.models.gguf import read_model_info
from tools.llama_bench.models.memory import estimate_memory

pytestmark = pytest.mark.real

MIB = 1024**2
# llama_kv_cache: size =   90.00 MiB (  4096 cells,  30 layers,  1/1 seqs), K (f16):   45.00 MiB, V (f16):   45.00 MiB
KV_LINE = re.compile(
    r"llama_kv_cache: size =\s*(?P<mib>[\d.]+) MiB \(\s*(?P<cells>\d+) cells,\s*(?P<layers>\d+) layers,"
    r"\s*(?P<seqs>\d+)/(?P<streams>\d+) seqs\)"
)
COMPUTE_LINE = re.compile(r"CPU compute buffer size =\s*(?P<mib>[\d.]+) MiB")


def test_default_model_header(real_model):
    info = read_model_info(real_model)
    assert info.architecture == "llama"
    assert info.block_count == 30 and info.context_length == 8192
    assert info.embedding_length == 576 and info.head_count == 9 and info.head_count_kv == 3
    assert info.key_length == info.value_length == 64
    assert info.license == "apache-2.0"
    assert info.parameters == pytest.approx(134.5e6, rel=0.001)
    assert info.quantization == "Q4_1"
    assert info.has_chat_template is True and info.gguf_version == 3
    assert info.size_bytes == 98_362_432 and info.files == [str(real_model)]
    assert "134.5M params · Q4_1 · ctx 8192" in info.short()


def test_default_model_header_agrees_with_the_gguf_packages_reader(real_model):
    from gguf import GGUFReader

    info = read_model_info(real_model)
    reader = GGUFReader(str(real_model))
    assert info.tensor_count == len(reader.tensors)
    assert info.parameters == sum(int(t.n_elements) for t in reader.tensors)
    tensor_bytes = sum(int(t.n_bytes) for t in reader.tensors)
    assert sum(info.layer_bytes) + info.input_bytes + info.output_bytes == tensor_bytes
    assert info.vocab_size == len(reader.get_field("tokenizer.ggml.tokens").data)


def server_memory_log(server: Path, model: Path, threads: str, log: Path, *args: str) -> Dict[str, Optional[float]]:
    """Start the real server with verbose logs (-lv 4 prints the KV and compute buffer lines) and read them."""
    with running_server(free_port(), "-m", str(model), "-t", threads, "-lv", "4", "--log-file", str(log), *args,
                        binary=server, ready_timeout=120):  # fmt: skip
        pass
    text = log.read_text(encoding="utf-8", errors="replace")
    kv = KV_LINE.search(text)
    compute = COMPUTE_LINE.search(text)
    assert kv, text[-3000:]
    return {
        "kv_mib": float(kv["mib"]),
        "cells": float(kv["cells"]),
        "layers": float(kv["layers"]),
        "streams": float(kv["streams"]),
        "compute_mib": float(compute["mib"]) if compute else None,
    }


@pytest.mark.parametrize(
    "ctx,parallel,cache_type",
    [(2048, 1, "f16"), (8192, 1, "f16"), (4096, None, "q8_0"), (4096, 3, "f16")],
    ids=["c2048", "c8192", "c4096-auto-slots-q8_0", "c4096-np3"],
)
def test_kv_cache_estimate_matches_the_server_within_10_percent(
    real_server, real_model, real_threads, tmp_path, ctx, parallel, cache_type
):
    args = ["-c", str(ctx), "-ctk", cache_type, "-ctv", cache_type]
    if parallel is not None:
        args += ["-np", str(parallel)]
    real = server_memory_log(real_server, real_model, real_threads, tmp_path / "server.log", *args)
    est = estimate_memory(
        read_model_info(real_model), ctx_size=ctx, parallel=parallel, cache_type_k=cache_type, cache_type_v=cache_type
    )
    ours = est.kv_bytes / MIB
    print(f"-c {ctx} -np {parallel or 'auto'} {cache_type}: server KV {real['kv_mib']:.2f} MiB, ours {ours:.2f} MiB")
    assert ours == pytest.approx(real["kv_mib"], rel=0.10)
    assert est.n_ctx_seq == real["cells"] and est.kv_layers == real["layers"]
    if real["compute_mib"] is not None:
        ours_compute = (est.compute_ram - est.n_parallel * (est.model.vocab_size or 0) * 4) / MIB
        assert ours_compute == pytest.approx(real["compute_mib"], rel=0.25)
