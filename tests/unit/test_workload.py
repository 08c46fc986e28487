"""Exact-length prompts: token arrays, chat fitting, unique prefixes, determinism."""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Sequence

import pytest

from tools.llama_bench.bench.workload import TASKS, PromptFactory, PromptTooSmall, corpus_text, load_corpus


class WordTokenizer:
    """Deterministic stand-in for llama-server's tokenizer: one token per word or punctuation mark,
    plus an optional BOS; the chat template wraps the message in a few special tokens."""

    TEMPLATE = "<|im_start|> user\n{content} <|im_end|>\n<|im_start|> assistant\n"

    def __init__(self, bos: bool = False) -> None:
        self.vocab: Dict[str, int] = {}
        self.words: List[str] = []
        self.bos = bos
        self.calls = 0

    def _id(self, piece: str) -> int:
        if piece not in self.vocab:
            self.vocab[piece] = len(self.words) + 10
            self.words.append(piece)
        return self.vocab[piece]

    def tokenize(self, text: str, add_special: bool = False) -> List[int]:
        self.calls += 1
        ids = [self._id(p) for p in re.findall(r"\w+|[^\w\s]", text)]
        return ([1] if self.bos and add_special else []) + ids

    def detokenize(self, tokens: Sequence[int]) -> str:
        return " ".join(self.words[t - 10] for t in tokens if t >= 10)

    def count_chat(self, messages: List[Dict[str, str]]) -> Optional[int]:
        return len(self.tokenize(self.TEMPLATE.format(content=messages[0]["content"]), add_special=True))


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("size", [1, 2, 7, 100, 1000, 5000])
def test_token_prompts_have_the_exact_length(task: str, size: int) -> None:
    factory = PromptFactory(task, seed=1, tokenizer=WordTokenizer(), mode="tokens")
    prompt = factory.make(size, f"cell:{size}")
    assert prompt.token_ids is not None
    assert len(prompt.token_ids) == size
    assert prompt.verified


def test_bos_is_the_first_counted_token_when_the_model_wants_one() -> None:
    factory = PromptFactory("coding", seed=1, tokenizer=WordTokenizer(bos=True), mode="tokens")
    prompt = factory.make(50, "k")
    assert prompt.token_ids is not None and prompt.token_ids[0] == 1 and len(prompt.token_ids) == 50


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("size", [20, 64, 300, 2000])
def test_chat_prompts_fit_the_template_exactly(task: str, size: int) -> None:
    tok = WordTokenizer()
    factory = PromptFactory(task, seed=3, tokenizer=tok, mode="chat")
    prompt = factory.make(size, f"c:{size}")
    assert prompt.text is not None
    assert tok.count_chat([{"role": "user", "content": prompt.text}]) == size
    assert prompt.counted == size and prompt.verified


def test_chat_size_below_the_template_is_refused() -> None:
    factory = PromptFactory("list", seed=3, tokenizer=WordTokenizer(), mode="chat")
    overhead = factory.chat_overhead()
    assert overhead is not None and overhead > 0
    with pytest.raises(PromptTooSmall):
        factory.make(overhead, "x")


def test_prompts_are_unique_per_request_and_deterministic_per_seed() -> None:
    a = PromptFactory("coding", seed=5, tokenizer=WordTokenizer(), mode="tokens")
    b = PromptFactory("coding", seed=5, tokenizer=WordTokenizer(), mode="tokens")
    c = PromptFactory("coding", seed=6, tokenizer=WordTokenizer(), mode="tokens")
    p1, p2 = a.make(200, "cell:0"), a.make(200, "cell:1")
    assert p1.token_ids != p2.token_ids
    # The first tokens differ, so no prompt cache can reuse one request's prefill for another.
    assert p1.token_ids is not None and p2.token_ids is not None
    assert p1.token_ids[:3] != p2.token_ids[:3]
    tok_b = b.tokenizer
    assert tok_b is not None
    assert WordTokenizer.detokenize(a.tokenizer, p1.token_ids) == WordTokenizer.detokenize(  # type: ignore[arg-type]
        tok_b, b.make(200, "cell:0").token_ids or []  # type: ignore[arg-type]
    )
    assert c.make(200, "cell:0").token_ids != p1.token_ids


def test_without_a_tokenizer_prompts_are_marked_unverified() -> None:
    factory = PromptFactory("list", seed=0, tokenizer=None, mode="tokens")
    prompt = factory.make(100, "x")
    assert prompt.text and prompt.token_ids is None
    assert not prompt.verified


def test_corpora_are_realistic_text() -> None:
    code = load_corpus("coding")
    prose = load_corpus("list")
    assert len(code) >= 10 and len(prose) >= 10
    assert any("def " in block for block in code) and any("```" in block for block in code)
    assert any(block.lstrip().startswith(("1.", "-")) or "\n1." in block for block in prose)


def test_corpus_text_is_long_enough_and_seeded() -> None:
    import random

    a = corpus_text("coding", 50000, random.Random(1))
    b = corpus_text("coding", 50000, random.Random(1))
    c = corpus_text("coding", 50000, random.Random(2))
    assert len(a) >= 50000 and a == b and a != c


def test_unknown_task_is_rejected() -> None:
    with pytest.raises(ValueError):
        PromptFactory("poetry", seed=0, tokenizer=None, mode="tokens")
