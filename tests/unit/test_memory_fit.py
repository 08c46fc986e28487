"""Will it fit: KV cache, weights and compute buffers as llama-server allocates them, and the refusal."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest

from tools.llama_bench.models.gguf import ModelInfo
from tools.llama_bench.models.memory import (
    CACHE_TYPES,
    bytes_per_element,
    check_fit,
    estimate_memory,
    estimate_with,
)
from tools.llama_bench.utils import UserError

MIB = 1024**2
GIB = 1024**3
BLOCK = 2_216_448  # tensor bytes of one SmolLM2-135M Q4_1 block
EMBD = 30_081_024  # its token_embd (Q8_0), also used as the output layer (tied)


def smollm2(**changes) -> ModelInfo:
    """The default model's header facts (SmolLM2-135M-Instruct Q4_1), as read_model_info returns them."""
    info = ModelInfo(
        path="models/SmolLM2-135M-Instruct.Q4_1.gguf",
        files=["models/SmolLM2-135M-Instruct.Q4_1.gguf"],
        size_bytes=98_362_432,
        name="SmolLM2 135M",
        architecture="llama",
        parameters=134_515_008,
        quantization="Q4_1",
        context_length=8192,
        block_count=30,
        embedding_length=576,
        feed_forward_length=1536,
        head_count=9,
        head_count_kv=3,
        key_length=64,
        value_length=64,
        vocab_size=49152,
        layer_bytes=[BLOCK] * 30,
        input_bytes=EMBD,
        output_bytes=2304,
        output_tied=True,
    )
    return replace(info, **changes)


def gpu(free: int, total: int = 24 * GIB, index: int = 0) -> SimpleNamespace:
    """What check_fit reads of power.reading.GpuStats."""
    return SimpleNamespace(index=index, name=f"GPU{index}", mem_used_bytes=total - free, mem_total_bytes=total)


# --- KV cache ---------------------------------------------------------------------------------------


def test_kv_cache_matches_the_servers_log_line_for_4096_cells():
    # llama_kv_cache: size = 90.00 MiB (4096 cells, 30 layers, 1/1 seqs), K (f16): 45.00 MiB, V (f16): 45.00 MiB
    est = estimate_memory(smollm2(), ctx_size=4096, parallel=1)
    assert est.kv_bytes == 4096 * 30 * 2 * 3 * 64 * 2 == 90 * MIB
    assert (est.n_ctx, est.n_ctx_seq, est.kv_layers, est.kv_unified) == (4096, 4096, 30, False)


def test_kv_cache_grows_linearly_with_the_context():
    assert estimate_memory(smollm2(), ctx_size=2048, parallel=1).kv_bytes == 45 * MIB
    assert estimate_memory(smollm2(), ctx_size=8192, parallel=1).kv_bytes == 180 * MIB


def test_ctx_zero_or_none_is_the_trained_context():
    for ctx in (0, None):
        est = estimate_memory(smollm2(), ctx_size=ctx, parallel=1)
        assert est.n_ctx == 8192 and est.kv_bytes == 180 * MIB


def test_model_without_a_trained_context_needs_an_explicit_one():
    with pytest.raises(UserError, match="--ctx-size"):
        estimate_memory(smollm2(context_length=None))


def test_context_is_padded_to_256_cells():
    assert estimate_memory(smollm2(), ctx_size=1000, parallel=1).n_ctx == 1024


def test_auto_slots_are_four_sharing_one_unified_cache_of_the_whole_context():
    est = estimate_memory(smollm2(), ctx_size=4096)  # -np -1, the server's default
    assert (est.n_parallel, est.kv_unified, est.n_ctx, est.n_ctx_seq) == (4, True, 4096, 4096)
    assert est.kv_bytes == 90 * MIB  # 4 slots do not multiply the cells


def test_explicit_slots_split_the_context_and_round_each_slot_up():
    four = estimate_memory(smollm2(), ctx_size=4096, parallel=4)
    assert (four.kv_unified, four.n_ctx_seq, four.n_ctx, four.kv_bytes) == (False, 1024, 4096, 90 * MIB)
    three = estimate_memory(smollm2(), ctx_size=4096, parallel=3)  # 4096 / 3 -> 1536 per slot, 4608 cells
    assert (three.n_ctx_seq, three.n_ctx) == (1536, 4608)
    assert three.kv_bytes == pytest.approx(101.25 * MIB)


def test_quantized_cache_uses_ggml_block_sizes():
    assert bytes_per_element("q8_0") == 34 / 32
    q8 = estimate_memory(smollm2(), ctx_size=4096, parallel=1, cache_type_k="q8_0", cache_type_v="q8_0")
    assert q8.kv_bytes == pytest.approx(90 * MIB * 34 / 64)  # 47.81 MiB in the server's log
    k_only = estimate_memory(smollm2(), ctx_size=4096, parallel=1, cache_type_k="q4_0")
    assert k_only.kv_bytes == pytest.approx(45 * MIB * 18 / 64 + 45 * MIB)


def test_cache_type_table_agrees_with_the_gguf_package():
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    for name, (block, size) in CACHE_TYPES.items():
        assert GGML_QUANT_SIZES[GGMLQuantizationType[name.upper()]] == (block, size)


def test_unknown_cache_type_lists_the_accepted_ones():
    with pytest.raises(UserError, match=r"unknown KV cache type 'q3_k'.*f16, bf16, q8_0"):
        estimate_memory(smollm2(), cache_type_k="q3_k")


def test_sliding_window_layers_keep_only_the_window():
    # gemma3: 5 of every 6 layers slide over 512 tokens; with 4 unified slots they hold 4 x 512 + ubatch cells.
    info = smollm2(architecture="gemma3", block_count=6, layer_bytes=[BLOCK] * 6, sliding_window=512)
    est = estimate_memory(info, ctx_size=32768)
    per_cell_layer = 2 * 3 * 64 * 2
    assert est.kv_bytes == (1 * 32768 + 5 * 2560) * per_cell_layer
    full = estimate_memory(info, ctx_size=32768, swa_full=True)
    assert full.kv_bytes == 6 * 32768 * per_cell_layer


def test_explicit_window_pattern_from_the_file_wins():
    info = smollm2(block_count=4, layer_bytes=[BLOCK] * 4, sliding_window=256, swa_pattern=[True, False, True, False])
    est = estimate_memory(info, ctx_size=8192, parallel=1)
    assert est.kv_bytes == (2 * 8192 + 2 * 768) * 2 * 3 * 64 * 2  # pad256(256 + 512 ubatch) = 768


def test_layers_without_kv_heads_have_no_cache_and_mla_caches_k_only():
    hybrid = smollm2(kv_heads_per_layer=[0, 3] * 15)  # e.g. recurrent layers between attention layers
    assert estimate_memory(hybrid, ctx_size=4096, parallel=1).kv_bytes == 45 * MIB
    mla = smollm2(head_count_kv=1, key_length=576, value_length=512, is_mla=True)
    assert estimate_memory(mla, ctx_size=4096, parallel=1).kv_bytes == 4096 * 30 * 576 * 2


# --- weights and GPU layers --------------------------------------------------------------------------


def test_without_a_gpu_everything_is_in_ram():
    est = estimate_memory(smollm2(), ctx_size=4096, parallel=1, n_gpu_layers=99)
    assert est.gpu_layers == 0 and est.vram_total == 0
    assert est.weights_ram == 30 * BLOCK + EMBD + 2304  # 92.10 MiB: the server's CPU_Mapped buffer


def test_all_layers_on_the_gpu_by_default_when_there_is_one():
    est = estimate_memory(smollm2(), ctx_size=4096, parallel=1, has_gpu=True)
    assert est.gpu_layers == 31  # 30 blocks + the output layer
    assert est.kv_vram == 90 * MIB and est.kv_ram == 0
    assert est.weights_ram == EMBD  # token_embd always stays on the CPU
    assert est.weights_vram == 30 * BLOCK + 2304 + EMBD  # tied embeddings are copied for the output layer


def test_n_gpu_layers_counts_the_output_layer_first_then_the_last_blocks():
    one = estimate_memory(smollm2(), ctx_size=4096, parallel=1, has_gpu=True, n_gpu_layers=1)
    assert one.kv_vram == 0 and one.weights_vram == 2304 + EMBD
    eleven = estimate_memory(smollm2(), ctx_size=4096, parallel=1, has_gpu=True, n_gpu_layers=11)
    assert eleven.kv_vram == 90 * MIB // 3 and eleven.kv_ram == 90 * MIB * 2 // 3  # 10 of 30 blocks
    assert eleven.weights_vram == 10 * BLOCK + 2304 + EMBD
    assert estimate_memory(smollm2(), has_gpu=True, n_gpu_layers=999).gpu_layers == 31


def test_weights_split_evenly_when_the_tensor_sizes_are_unknown():
    info = smollm2(layer_bytes=[], input_bytes=0, output_bytes=0)
    est = estimate_memory(info, ctx_size=4096, parallel=1, has_gpu=True, n_gpu_layers=16)
    assert est.weights_vram == 15 * (98_362_432 // 30)


# --- compute buffers ---------------------------------------------------------------------------------


def test_compute_allowance_is_close_to_what_the_server_reserves():
    # sched_reserve: CPU compute buffer size = 16.64 / 18.64 / 22.64 MiB at -c 2048 / 4096 / 8192 (-np 1)
    logits = 49152 * 4
    for ctx, server_mib in ((2048, 16.64), (4096, 18.64), (8192, 22.64)):
        est = estimate_memory(smollm2(), ctx_size=ctx, parallel=1)
        assert (est.compute_ram - logits) / MIB == pytest.approx(server_mib, rel=0.01)


def test_compute_follows_the_ubatch_and_grows_without_flash_attention():
    small = estimate_memory(smollm2(), ctx_size=4096, parallel=1, n_ubatch=128)
    assert (small.compute_ram - 49152 * 4) / MIB == pytest.approx(4.66, rel=0.01)  # the server: 4.66 MiB
    no_fa = estimate_memory(smollm2(), ctx_size=4096, parallel=1, flash_attn=False)
    assert no_fa.compute_ram > 4 * small.compute_ram  # the server: 87.51 MiB


def test_compute_moves_to_the_gpu_with_the_layers():
    cpu = estimate_memory(smollm2(), ctx_size=4096, parallel=1)
    full = estimate_memory(smollm2(), ctx_size=4096, parallel=1, has_gpu=True)
    part = estimate_memory(smollm2(), ctx_size=4096, parallel=1, has_gpu=True, n_gpu_layers=10)
    assert cpu.compute_vram == 0
    assert full.compute_vram == cpu.compute_ram - 49152 * 4 and full.compute_ram < cpu.compute_ram / 5
    assert part.compute_vram == full.compute_vram and part.compute_ram == cpu.compute_ram


def test_describe_is_one_line_with_units():
    line = estimate_memory(smollm2(), ctx_size=4096, parallel=1).describe()
    assert line.startswith("RAM 200.9 MiB (weights 92.1 MiB, KV 90.0 MiB, compute 18.8 MiB)")
    assert "ctx 4096 x 1 slot" in line and "0/31 layers on GPU" in line and "\n" not in line


# --- the verdict -------------------------------------------------------------------------------------


def test_fits_with_room_to_spare():
    verdict = check_fit(estimate_memory(smollm2(), ctx_size=4096, parallel=1), 8 * GIB, [])
    assert verdict.fits and verdict.ram_fits and verdict.vram_fits
    assert verdict.message.startswith("SmolLM2 135M fits: needs 200.9 MiB RAM (8.0 GiB free)")
    assert verdict.max_ctx is None and verdict.q8_0_fits is None


def test_refusal_names_the_numbers_and_the_largest_context_that_fits():
    est = estimate_memory(smollm2(), ctx_size=8192, parallel=1)
    verdict = check_fit(est, 200 * MIB, [])
    assert not verdict.fits and not verdict.ram_fits
    assert verdict.max_ctx is not None
    assert estimate_memory(smollm2(), ctx_size=verdict.max_ctx, parallel=1).ram_total <= 200 * MIB
    assert estimate_memory(smollm2(), ctx_size=verdict.max_ctx + 256, parallel=1).ram_total > 200 * MIB
    assert verdict.q8_0_fits is False
    msg = verdict.message
    assert "\n" not in msg
    assert "does not fit: needs 294.9 MiB RAM (200.0 MiB free)" in msg
    assert f"would fit: --ctx-size {verdict.max_ctx}" in msg and "--skip-vram-check starts anyway" in msg


def test_refusal_suggests_q8_0_cache_when_that_is_enough():
    verdict = check_fit(estimate_memory(smollm2(), ctx_size=8192, parallel=1), 250 * MIB, [])
    assert verdict.q8_0_fits is True
    assert "--cache-type-k q8_0 --cache-type-v q8_0" in verdict.message


def test_nothing_fits_when_the_weights_alone_are_too_big():
    verdict = check_fit(estimate_memory(smollm2(), ctx_size=4096, parallel=1), 50 * MIB, [])
    assert verdict.max_ctx is None and verdict.q8_0_fits is False
    assert "no smaller context, KV type or GPU split fits" in verdict.message


def test_short_gpu_memory_suggests_fewer_gpu_layers():
    est = estimate_memory(smollm2(), ctx_size=8192, parallel=1, has_gpu=True)
    verdict = check_fit(est, 8 * GIB, [gpu(free=150 * MIB)])
    assert verdict.ram_fits and not verdict.vram_fits and not verdict.fits
    [g] = verdict.gpus
    assert g.need_bytes == est.vram_total and g.free_bytes == 150 * MIB and not g.fits
    ngl = verdict.max_gpu_layers
    assert ngl is not None and 0 < ngl < 31
    assert check_fit(estimate_memory(smollm2(), ctx_size=8192, parallel=1, has_gpu=True, n_gpu_layers=ngl), 8 * GIB,
                     [gpu(free=150 * MIB)]).fits  # fmt: skip
    assert not check_fit(estimate_with(est.model, replace(est.params, n_gpu_layers=ngl + 1)), 8 * GIB,
                         [gpu(free=150 * MIB)]).fits  # fmt: skip
    assert f"--n-gpu-layers {ngl}" in verdict.message and "on GPU 0 (150.0 MiB free)" in verdict.message


def test_fewer_gpu_layers_are_no_way_out_when_ram_cannot_take_the_rest():
    est = estimate_memory(smollm2(), ctx_size=8192, parallel=1, has_gpu=True)
    verdict = check_fit(est, 60 * MIB, [gpu(free=150 * MIB)])
    assert not verdict.fits and verdict.max_gpu_layers is None
    assert "--n-gpu-layers" not in verdict.message


def test_two_gpus_share_the_layers_by_free_memory():
    est = estimate_memory(smollm2(), ctx_size=8192, parallel=1, has_gpu=True)
    verdict = check_fit(est, 8 * GIB, [gpu(free=3 * GIB, index=0), gpu(free=1 * GIB, index=1)])
    first, second = verdict.gpus
    shared = est.weights_vram + est.kv_vram
    assert first.need_bytes == int(shared * 0.75) + est.compute_vram
    assert second.need_bytes == int(shared * 0.25) + est.compute_vram
    assert verdict.fits


def test_unknown_free_memory_is_not_a_refusal():
    est = estimate_memory(smollm2(), ctx_size=8192, parallel=1, has_gpu=True)
    unknown = SimpleNamespace(index=0, name="GPU0", mem_used_bytes=None, mem_total_bytes=None)
    assert check_fit(est, None, [unknown]).fits
    assert "unknown free" in check_fit(est, None, [unknown]).message


def test_a_cpu_only_estimate_ignores_the_gpus():
    est = estimate_memory(smollm2(), ctx_size=4096, parallel=1)
    verdict = check_fit(est, 8 * GIB, [gpu(free=0)])
    assert verdict.fits and verdict.gpus == []


def test_the_message_is_a_user_error_line():
    verdict = check_fit(estimate_memory(smollm2(), ctx_size=8192, parallel=1), 200 * MIB, [])
    error = UserError(verdict.message)
    assert error.exit_code == 2 and str(error) == verdict.message
