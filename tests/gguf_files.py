"""Small but real GGUF files for tests (written with the gguf package, llama.cpp's own writer)."""

from __future__ import annotations

from pathlib import Path


def write_tiny_gguf(
    path: Path,
    name: str = "Tiny Test",
    ctx: int = 2048,
    blocks: int = 2,
    embd: int = 16,
    heads: int = 4,
    kv_heads: int = 2,
) -> Path:
    """A llama-shaped model of a few kB: its metadata says `blocks` layers of `embd` wide, but only the
    token embedding is stored (16 wide), enough for the header checks and the memory estimate."""
    import numpy as np
    from gguf import GGUFWriter

    vocab = 32
    writer = GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_block_count(blocks)
    writer.add_context_length(ctx)
    writer.add_embedding_length(embd)
    writer.add_feed_forward_length(4 * embd)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_file_type(0)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"t{i}" for i in range(vocab)])
    writer.add_chat_template("{% for m in messages %}{{ m.content }}{% endfor %}")
    writer.add_tensor("token_embd.weight", np.zeros((vocab, 16), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
