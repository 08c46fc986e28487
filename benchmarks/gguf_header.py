"""How long reading a GGUF header takes, next to a plain open()+read(4) of the same file, in one run.

Goal: a 40 GB model's header reads in well under a second (it is what `llama-run models` and every
start-up check pay per model), i.e. the cost follows the header (vocabulary, tensor list), not the
weights. Files: the real default model (98 MB) and a synthetic 40 GB one shaped like a 72B model
(80 blocks, 963 tensors, a 152k-token vocabulary and merges) whose tensor data is a sparse hole
(written with gguf.GGUFWriter, then truncate()d to full size; on a filesystem without sparse files it
says so and uses 4 GB). Also shown: the gguf package's own GGUFReader on the same files.
Usage: .venv/bin/python benchmarks/gguf_header.py [--runs 20] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, List, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tools.llama_bench.models.gguf import read_model_info  # noqa: E402

DEFAULT_MODEL = REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
GOAL_S = 1.0


def write_synthetic(path: Path, blocks: int = 80) -> Tuple[int, bool]:
    """A GGUF header shaped like a 72B Q4_K_M model whose tensor data is a hole; (size, sparse?)."""
    import numpy as np
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFWriter

    n_embd, n_kv, n_ff, n_vocab = 8192, 1024, 29440, 152064
    writer = GGUFWriter(str(path), "qwen2")
    writer.add_name("Synthetic 72B")
    writer.add_block_count(blocks)
    writer.add_context_length(32768)
    writer.add_embedding_length(n_embd)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(64)
    writer.add_head_count_kv(8)
    writer.add_file_type(15)  # Q4_K_M
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"tok{i}" for i in range(n_vocab)])
    writer.add_token_types([1] * n_vocab)
    writer.add_token_merges([f"t{i} k{i}" for i in range(n_vocab - 1000)])
    writer.add_chat_template("{% for m in messages %}{{ m.content }}{% endfor %}")
    q4k, f32 = GGMLQuantizationType.Q4_K, GGMLQuantizationType.F32
    matrices = {"attn_q": (n_embd, n_embd), "attn_k": (n_kv, n_embd), "attn_v": (n_kv, n_embd)}
    matrices.update({"attn_output": (n_embd, n_embd), "ffn_gate": (n_ff, n_embd), "ffn_up": (n_ff, n_embd)})
    matrices["ffn_down"] = (n_embd, n_ff)
    tensors: List[Tuple[str, Tuple[int, ...], GGMLQuantizationType]] = [("token_embd.weight", (n_vocab, n_embd), q4k)]
    for b in range(blocks):
        tensors += [(f"blk.{b}.{name}.weight", shape, q4k) for name, shape in matrices.items()]
        tensors += [(f"blk.{b}.{name}.weight", (n_embd,), f32) for name in ("attn_norm", "ffn_norm")]
        tensors += [(f"blk.{b}.{name}.bias", (n,), f32) for name, n in (("attn_q", n_embd), ("attn_k", n_kv))]
        tensors.append((f"blk.{b}.attn_v.bias", (n_kv,), f32))
    tensors += [("output_norm.weight", (n_embd,), f32), ("output.weight", (n_vocab, n_embd), q4k)]
    data = 0
    for name, shape, qtype in tensors:
        block, type_size = GGML_QUANT_SIZES[qtype]
        nbytes = int(np.prod(shape)) * type_size // block
        writer.add_tensor_info(name, shape, np.dtype(np.float32), nbytes, raw_dtype=qtype)
        data += -(-nbytes // 32) * 32
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    assert writer.fout is not None
    header_end = writer.fout[0].tell()
    writer.close()
    size = -(-header_end // 32) * 32 + data
    with open(path, "r+b") as out:
        out.truncate(size)  # the data region: a hole on filesystems with sparse files
    sparse = os.stat(path).st_blocks * 512 < size // 2
    return size, sparse


def timed(fn: Callable[[], object], runs: int) -> float:
    values = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        values.append(time.perf_counter() - start)
    return statistics.median(values)


def open_read4(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(4)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--keep", type=Path, help="write the synthetic file into this folder and keep it")
    args = parser.parse_args()

    start = time.perf_counter()
    import gguf

    import_s = time.perf_counter() - start
    folder = args.keep or Path(tempfile.mkdtemp(prefix="gguf-bench-"))
    big = folder / "synthetic-72b.Q4_K_M.gguf"
    size, sparse = write_synthetic(big)
    if not sparse:
        size, sparse = write_synthetic(big, blocks=8)
        print("this filesystem does not keep sparse files: the synthetic model has 8 blocks (~5 GB), written out")
    files = [("default model", args.model), (f"synthetic {size / 1e9:.0f} GB{' (sparse)' if sparse else ''}", big)]
    print(f"gguf package import (once per process): {import_s * 1000:.0f} ms")
    print(f"{'file':<26} {'open+read(4)':>13} {'read_model_info':>16} {'x base':>9} {'GGUFReader':>11} {'x base':>9}")
    verdicts = []
    for label, path in files:
        if not path.is_file():
            print(f"{label:<26} missing: {path}")
            continue
        read_model_info(path)  # warm the page cache for both
        base = timed(lambda: open_read4(path), args.runs * 10)
        ours = timed(lambda: read_model_info(path), args.runs)
        theirs = timed(lambda: gguf.GGUFReader(str(path)), 1)
        print(
            f"{label:<26} {base * 1e6:>10.0f} us {ours * 1000:>13.1f} ms {ours / base:>9.0f} "
            f"{theirs * 1000:>8.0f} ms {theirs / base:>9.0f}"
        )
        verdicts.append((label, ours, theirs))
    for label, ours, theirs in verdicts:
        print(f"{label}: header read {ours * 1000:.1f} ms ({theirs / ours:.0f}x faster than GGUFReader)")
    worst = max((v[1] for v in verdicts), default=0.0)
    print(f"goal: under {GOAL_S:.0f} s per header -> {'meets' if worst < GOAL_S else 'misses'}")
    if args.keep:
        print(f"synthetic file kept: {big}")
    else:
        big.unlink()
        folder.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
