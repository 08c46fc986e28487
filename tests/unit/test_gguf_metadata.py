"""GGUF header metadata: crafted small files written with the gguf package (llama.cpp's writer)."""

from __future__ import annotations

import os
import random
import struct
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import pytest
from gguf import GGUFEndian, GGUFReader, GGUFWriter

from tools.llama_bench.models import gguf as gguf_module
from tools.llama_bench.models.gguf import GGUFError, ModelInfo, fmt_count, read_model_info, split_parts
from tools.llama_bench.utils import ExitStatus, UserError


def write_gguf(
    path: Path,
    arch: str = "llama",
    blocks: int = 2,
    embd: int = 64,
    heads: int = 4,
    kv_heads: Any = 2,
    ctx: int = 2048,
    name: Optional[str] = "Tiny Test",
    file_type: Optional[int] = 0,
    split_max_tensors: int = 0,
    vocab: int = 100,
    extra: Optional[Dict[str, Any]] = None,
    tied: bool = True,
    endianess: GGUFEndian = GGUFEndian.LITTLE,
) -> List[Path]:
    """A small llama-shaped GGUF (F32 tensors) like convert_hf_to_gguf.py writes; returns the files written."""
    writer = GGUFWriter(str(path), arch, split_max_tensors=split_max_tensors, endianess=endianess)
    if name:
        writer.add_name(name)
    writer.add_license("apache-2.0")
    writer.add_block_count(blocks)
    writer.add_context_length(ctx)
    writer.add_embedding_length(embd)
    writer.add_feed_forward_length(4 * embd)
    writer.add_head_count(heads)
    if isinstance(kv_heads, list):
        writer.add_array(f"{arch}.attention.head_count_kv", kv_heads)
    elif kv_heads is not None:
        writer.add_head_count_kv(kv_heads)
    if file_type is not None:
        writer.add_file_type(file_type)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"t{i}" for i in range(vocab)])
    writer.add_token_types([1] * vocab)
    writer.add_chat_template("{% for m in messages %}{{ m.content }}{% endfor %}")
    for key, value in (extra or {}).items():
        if isinstance(value, list):
            writer.add_array(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        else:
            writer.add_string(key, value)
    rng = np.random.default_rng(0)
    writer.add_tensor("token_embd.weight", rng.random((vocab, embd), dtype=np.float32))
    for b in range(blocks):
        for t, shape in (("attn_q", (embd, embd)), ("attn_k", (embd // 2, embd)), ("ffn_up", (4 * embd, embd))):
            writer.add_tensor(f"blk.{b}.{t}.weight", rng.random(shape, dtype=np.float32))
        writer.add_tensor(f"blk.{b}.attn_norm.weight", rng.random((embd,), dtype=np.float32))
    writer.add_tensor("output_norm.weight", rng.random((embd,), dtype=np.float32))
    if not tied:
        writer.add_tensor("output.weight", rng.random((vocab, embd), dtype=np.float32))
    parts = writer.format_shard_names(Path(path)) if split_max_tensors else [Path(path)]
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return parts


def tensor_elements(blocks: int = 2, embd: int = 64, vocab: int = 100, tied: bool = True) -> int:
    per_block = embd * embd + embd // 2 * embd + 4 * embd * embd + embd
    return vocab * embd + blocks * per_block + embd + (0 if tied else vocab * embd)


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.gguf"
    write_gguf(path)
    return path


def expect_error(path: Path, *fragments: str) -> str:
    with pytest.raises(GGUFError) as caught:
        read_model_info(path)
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message
    return message


# --- what a good file says ---------------------------------------------------------------------------


def test_header_fields_of_a_small_model(tiny):
    info = read_model_info(tiny)
    assert isinstance(info, ModelInfo)
    assert info.path == str(tiny) and info.files == [str(tiny)]
    assert info.size_bytes == tiny.stat().st_size
    assert info.name == "Tiny Test" and info.architecture == "llama" and info.license == "apache-2.0"
    assert (info.block_count, info.context_length, info.embedding_length) == (2, 2048, 64)
    assert (info.head_count, info.head_count_kv) == (4, 2)
    assert info.key_length == info.value_length == 16  # embedding_length / head_count when not given
    assert info.feed_forward_length == 256
    assert info.vocab_size == 100  # from the tokenizer's list when there is no <arch>.vocab_size
    assert info.has_chat_template is True
    assert info.gguf_version == 3
    assert info.parameters == tensor_elements()  # no parameter-count key: the tensors' elements
    assert info.quantization == "F32" and info.file_type == 0
    assert info.expert_count is None and info.sliding_window is None


def test_short_line_for_uis_names_the_file_not_general_name(tiny):
    info = read_model_info(tiny)
    assert info.short() == f"{tiny.name} · llama · 51.6K params · F32 · ctx 2048"
    assert info.facts() == "llama · 51.6K params · F32 · ctx 2048"


def test_parameter_counts_read_like_model_cards():
    assert fmt_count(134_515_008) == "134.5M"
    assert fmt_count(7_241_732_096) == "7.2B"
    assert fmt_count(999) == "999"
    assert fmt_count(None) == "-"


def test_file_type_names_come_from_llamas_enum_and_unknown_ones_fall_back_to_the_tensors(tmp_path):
    write_gguf(tmp_path / "q.gguf", file_type=15)
    assert read_model_info(tmp_path / "q.gguf").quantization == "Q4_K_M"
    write_gguf(tmp_path / "none.gguf", file_type=None)
    assert read_model_info(tmp_path / "none.gguf").quantization == "F32"  # the dominant tensor type
    write_gguf(tmp_path / "future.gguf", file_type=999)
    assert read_model_info(tmp_path / "future.gguf").quantization == "F32"


def test_missing_kv_head_count_means_no_grouped_query_attention(tmp_path):
    write_gguf(tmp_path / "mha.gguf", kv_heads=None)
    assert read_model_info(tmp_path / "mha.gguf").head_count_kv == 4


def test_per_layer_kv_heads_keep_the_list_and_report_the_largest(tmp_path):
    write_gguf(tmp_path / "hybrid.gguf", kv_heads=[0, 2])
    info = read_model_info(tmp_path / "hybrid.gguf")
    assert info.kv_heads_per_layer == [0, 2] and info.head_count_kv == 2


def test_architecture_keys_for_experts_windows_and_explicit_head_sizes(tmp_path):
    extra = {
        "llama.expert_count": 8,
        "llama.expert_used_count": 2,
        "llama.attention.sliding_window": 512,
        "llama.attention.key_length": 32,
        "llama.attention.value_length": 24,
        "general.parameter_count": 123_456,
    }
    write_gguf(tmp_path / "moe.gguf", extra=extra)
    info = read_model_info(tmp_path / "moe.gguf")
    assert (info.expert_count, info.expert_used_count, info.sliding_window) == (8, 2, 512)
    assert (info.key_length, info.value_length) == (32, 24)
    assert info.parameters == 123_456  # a declared count wins over summing tensors


def test_tensor_bytes_per_block_for_the_gpu_split(tmp_path):
    write_gguf(tmp_path / "t.gguf", tied=False)
    info = read_model_info(tmp_path / "t.gguf")
    per_block = (64 * 64 + 32 * 64 + 256 * 64 + 64) * 4
    assert info.layer_bytes == [per_block, per_block]
    assert info.input_bytes == 100 * 64 * 4  # token_embd
    assert info.output_bytes == (64 + 100 * 64) * 4  # output_norm + output
    assert info.output_tied is False
    assert read_model_info(write_gguf(tmp_path / "tied.gguf")[0]).output_tied is True


def test_to_dict_is_the_summary_without_per_layer_detail(tiny):
    d = read_model_info(tiny).to_dict()
    assert d["architecture"] == "llama" and d["context_length"] == 2048
    assert "layer_bytes" not in d and "kv_heads_per_layer" not in d


def test_agrees_with_the_gguf_packages_own_reader(tmp_path):
    path = tmp_path / "cmp.gguf"
    write_gguf(path, vocab=300, extra={"llama.attention.sliding_window": 256})
    info = read_model_info(path)
    reader = GGUFReader(str(path))
    assert info.architecture == reader.get_field("general.architecture").contents()
    assert info.context_length == reader.get_field("llama.context_length").contents()
    assert info.sliding_window == reader.get_field("llama.attention.sliding_window").contents()
    assert info.tensor_count == len(reader.tensors)
    assert info.parameters == sum(int(t.n_elements) for t in reader.tensors)
    assert sum(info.layer_bytes) + info.input_bytes + info.output_bytes == sum(int(t.n_bytes) for t in reader.tensors)


@pytest.mark.parametrize("chunk", [1, 7, 64, 333])
def test_reads_the_same_whatever_the_read_size(tmp_path, monkeypatch, chunk):
    # The parser reads in chunks (1 MiB); strings and arrays that cross a chunk's end must not shift anything.
    path = tmp_path / "c.gguf"
    write_gguf(path, vocab=500, kv_heads=[1, 2], extra={"llama.attention.sliding_window": 128})
    expected = read_model_info(path)
    monkeypatch.setattr(gguf_module, "_CHUNK", chunk)
    assert read_model_info(path) == expected


def test_big_endian_files_read_the_same(tmp_path):
    write_gguf(tmp_path / "be.gguf", endianess=GGUFEndian.BIG)
    info = read_model_info(tmp_path / "be.gguf")
    assert (info.block_count, info.context_length, info.head_count_kv, info.name) == (2, 2048, 2, "Tiny Test")


# --- split models ----------------------------------------------------------------------------------


def test_split_model_reads_as_one_from_any_part(tmp_path):
    parts = write_gguf(tmp_path / "big.gguf", split_max_tensors=4)
    assert [p.name for p in parts] == [f"big-{i:05d}-of-00003.gguf" for i in (1, 2, 3)]
    for part in parts:
        info = read_model_info(part)
        assert info.path == str(parts[0])
        assert info.files == [str(p) for p in parts]
        assert info.size_bytes == sum(p.stat().st_size for p in parts)
        assert info.parameters == tensor_elements()  # tensors of every part
        assert info.tensor_count == 10
        assert info.block_count == 2 and info.name == "Tiny Test"  # metadata from the first part
    assert "3 parts" in read_model_info(parts[1]).short()


def test_split_parts_follow_gguf_split_naming(tmp_path):
    assert split_parts(tmp_path / "m-00002-of-00003.gguf") == [
        tmp_path / "m-00001-of-00003.gguf",
        tmp_path / "m-00002-of-00003.gguf",
        tmp_path / "m-00003-of-00003.gguf",
    ]
    assert split_parts(tmp_path / "plain.gguf") == [tmp_path / "plain.gguf"]


def test_missing_split_part_is_one_clear_line(tmp_path):
    parts = write_gguf(tmp_path / "big.gguf", split_max_tensors=4)
    parts[2].unlink()
    expect_error(parts[0], "incomplete", "missing big-00003-of-00003.gguf", "2 of 3 parts")


def test_renamed_part_of_a_split_model_is_refused(tmp_path):
    parts = write_gguf(tmp_path / "big.gguf", split_max_tensors=4)
    renamed = parts[0].rename(tmp_path / "renamed.gguf")
    expect_error(renamed, "one part of a 3-part split model")


# --- what is wrong with a bad file ------------------------------------------------------------------


def test_wrong_magic_shows_the_first_bytes(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    expect_error(path, "is not a GGUF file", "b'PK\\x03\\x04")


def test_legacy_ggml_file_is_named(tmp_path):
    path = tmp_path / "old.bin"
    path.write_bytes(b"tjgg" + b"\0" * 100)
    expect_error(path, "legacy GGJT file")


def test_empty_and_tiny_files(tmp_path):
    (tmp_path / "empty.gguf").write_bytes(b"")
    expect_error(tmp_path / "empty.gguf", "empty (0 bytes)")
    (tmp_path / "gg.gguf").write_bytes(b"GG")
    expect_error(tmp_path / "gg.gguf", "truncated (2 bytes)")


@pytest.mark.parametrize("version,fragment", [(4, "unknown GGUF version 4"), (1, "version 1 is too old")])
def test_unknown_gguf_version(tiny, version, fragment):
    data = bytearray(tiny.read_bytes())
    data[4:8] = struct.pack("<I", version)
    tiny.write_bytes(bytes(data))
    expect_error(tiny, fragment)


def test_file_cut_inside_the_header_is_truncated(tiny):
    data = tiny.read_bytes()
    tiny.write_bytes(data[:300])
    expect_error(tiny, "is truncated", "header runs past the end")


def test_file_cut_inside_the_tensor_data_is_truncated_with_the_missing_size(tiny):
    data = tiny.read_bytes()
    tiny.write_bytes(data[: len(data) - 5000])
    expect_error(tiny, "is truncated", f"the file has {len(data) - 5000:,}", "interrupted download")


def test_absurd_array_length_fails_fast_instead_of_spinning(tmp_path):
    # 2**62 uint8 items: GGUFReader would loop over them; we check the length against the file size.
    body = struct.pack("<IIQQ", 0x46554747, 3, 0, 1)
    key = b"general.junk"
    body += struct.pack("<Q", len(key)) + key + struct.pack("<IIQ", 9, 0, 2**62)
    (tmp_path / "bomb.gguf").write_bytes(body)
    expect_error(tmp_path / "bomb.gguf", "declares", "array items")


@pytest.mark.parametrize("field, count", [("tensors", 10**10), ("metadata keys", 10**10)])
def test_a_sparse_file_declaring_billions_of_entries_is_refused_at_once(tmp_path, field, count):
    # A sparse terabyte has room for any count: the count itself must be believable.
    path = tmp_path / "sparse.gguf"
    n_tensors, n_kv = (count, 0) if field == "tensors" else (0, count)
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv))
    with path.open("r+b") as fh:
        fh.truncate(2**40)
    expect_error(path, "is corrupt", f"{count:,} {field}")


def test_a_split_part_that_is_a_fifo_is_refused_not_read_for_ever(tiny, tmp_path):
    first = tmp_path / "m-00001-of-00002.gguf"
    first.write_bytes(tiny.read_bytes())
    os.mkfifo(tmp_path / "m-00002-of-00002.gguf")
    expect_error(first, "m-00002-of-00002.gguf is not a regular file")


def test_a_split_name_numbered_from_zero_is_one_line(tiny, tmp_path):
    odd = tmp_path / "sp-00000-of-00000.gguf"
    odd.write_bytes(tiny.read_bytes())
    expect_error(odd, "not a valid split model name")


def test_non_finite_numbers_count_as_missing(tmp_path):
    path = tmp_path / "inf.gguf"
    writer = GGUFWriter(str(path), "llama")
    writer.add_float32("llama.context_length", float("inf"))
    writer.add_float32("llama.block_count", float("nan"))
    writer.add_uint32("llama.embedding_length", 64)
    writer.add_tensor("token_embd.weight", np.zeros((4, 64), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    info = read_model_info(path)
    assert info.context_length is None and info.block_count is None


def test_a_home_of_a_user_that_does_not_exist_is_just_a_missing_file():
    expect_error(Path("~nosuchuser-llama/x.gguf"), "model file not found")


def test_missing_file_directory_and_unreadable_file(tmp_path):
    expect_error(tmp_path / "nope.gguf", "model file not found")
    expect_error(tmp_path, "is a directory")


def test_gguf_error_is_a_user_error_with_exit_code_2(tmp_path):
    (tmp_path / "x.gguf").write_bytes(b"nope")
    with pytest.raises(UserError) as caught:
        read_model_info(tmp_path / "x.gguf")
    assert caught.value.exit_code == ExitStatus.BAD_INPUT


def test_no_file_contents_ever_raise_anything_but_gguf_error(tmp_path):
    good = (tmp_path / "seed.gguf", write_gguf(tmp_path / "seed.gguf", vocab=80))[0].read_bytes()
    rng = random.Random(1234)
    path = tmp_path / "fuzz.gguf"
    cases = [good[: rng.randrange(len(good))] for _ in range(60)]  # truncations
    for _ in range(150):  # flipped bytes in the header
        data = bytearray(good)
        for _ in range(rng.randrange(1, 6)):
            data[rng.randrange(4, 3000)] = rng.randrange(256)
        cases.append(bytes(data))
    cases += [b"GGUF" + rng.randbytes(rng.randrange(0, 200)) for _ in range(60)]  # random after the magic
    cases += [b"GGUF\x03\0\0\0" + rng.randbytes(rng.randrange(0, 200)) for _ in range(60)]
    for data in cases:
        path.write_bytes(data)
        try:
            read_model_info(path)
        except GGUFError as exc:
            assert "\n" not in str(exc) and str(path) in str(exc)


def test_keys_of_the_wrong_type_count_as_missing(tmp_path):
    path = tmp_path / "odd.gguf"
    writer = GGUFWriter(str(path), "llama")
    writer.add_string("general.name", "Odd")
    writer.add_string("llama.block_count", "thirty")
    writer.add_array("llama.attention.head_count_kv", ["a", "b"])
    writer.add_bool("llama.context_length", True)
    writer.add_float32("llama.embedding_length", 576.0)
    writer.add_tensor("blk.0.attn_q.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    info = read_model_info(path)
    assert info.block_count is None and info.context_length is None and info.head_count_kv is None
    assert info.kv_heads_per_layer is None
    assert info.embedding_length == 576
    assert info.facts() == "llama · 16 params · F32"
