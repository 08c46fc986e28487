"""Prompts of an exact token count, made with the server's own tokenizer.

For llama.cpp's /completion and /v1/completions the prompt is a token-ID array, which the server
takes as is, so its length is exact by construction. For chat the text is fitted until the chat
template's output tokenizes (with /apply-template and /tokenize) to exactly the requested count.
Every prompt starts with a prefix unique to the request so no prompt cache can skip prefill.
Everything is deterministic for a given --seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Protocol, Sequence

from ..http import HttpClient

TASKS = ("coding", "list", "random")
DATA_DIR = Path(__file__).resolve().parent / "data"
BLOCK_SEPARATOR = "\n%%\n"
INSTRUCTIONS = {
    "coding": "\n\nRewrite all of the code above with full comments, then write thorough tests for it.",
    "list": "\n\nContinue with a long numbered list of further items like the ones above, one per line.",
    "random": "",
}
# Words for the unique request prefix; any short, common words will do.
PREFIX_WORDS = (
    "amber birch cedar delta ember fjord garnet harbor indigo juniper kestrel lagoon meadow nectar "
    "onyx pepper quartz raven saffron tundra umber violet willow yarrow zephyr basalt cobalt dune "
    "falcon glacier heron iris jasper kelp lichen marble nickel orchid pebble quill reed sorrel thistle"
).split()
MAX_FIT_ROUNDS = 12


class PromptTooSmall(ValueError):
    """The requested size is below what the API adds on its own (e.g. the chat template)."""


class Tokenizer(Protocol):
    def tokenize(self, text: str, add_special: bool = False) -> List[int]: ...

    def detokenize(self, tokens: Sequence[int]) -> str: ...

    def count_chat(self, messages: List[Dict[str, str]]) -> Optional[int]: ...


class ServerTokenizer:
    """llama-server's /tokenize, /detokenize and /apply-template (every call has a timeout)."""

    def __init__(self, client: HttpClient, timeout: float = 60.0) -> None:
        self.client = client
        self.timeout = timeout
        self._chat_mode: Optional[str] = None  # "apply-template" | "input_tokens" | "none"

    def _post(self, path: str, body: Dict) -> Optional[Dict]:
        resp = self.client.post(path, body, timeout=self.timeout)
        if resp.status != 200:
            return None
        data = resp.json()
        return data if isinstance(data, dict) else None

    def tokenize(self, text: str, add_special: bool = False) -> List[int]:
        data = self._post("/tokenize", {"content": text, "add_special": add_special})
        if data is None or not isinstance(data.get("tokens"), list):
            raise RuntimeError("the server's /tokenize did not answer with tokens")
        return [t["id"] if isinstance(t, dict) else int(t) for t in data["tokens"]]

    def detokenize(self, tokens: Sequence[int]) -> str:
        data = self._post("/detokenize", {"tokens": list(tokens)})
        if data is None or not isinstance(data.get("content"), str):
            raise RuntimeError("the server's /detokenize did not answer with content")
        return str(data["content"])

    def count_chat(self, messages: List[Dict[str, str]]) -> Optional[int]:
        """Prompt tokens the server will see for these chat messages; None if it cannot tell us."""
        if self._chat_mode in (None, "apply-template"):
            data = self._post("/apply-template", {"messages": messages})
            if data is not None and isinstance(data.get("prompt"), str):
                self._chat_mode = "apply-template"
                # The server tokenizes the templated text with special tokens on, so do the same.
                return len(self.tokenize(data["prompt"], add_special=True))
            self._chat_mode = "input_tokens"
        if self._chat_mode == "input_tokens":
            data = self._post("/v1/chat/completions/input_tokens", {"messages": messages})
            if data is not None and isinstance(data.get("input_tokens"), int):
                return int(data["input_tokens"])
            self._chat_mode = "none"
        return None


@dataclass
class Prompt:
    """One request's prompt: token IDs, plain text, or chat text (the user message)."""

    requested: int
    token_ids: Optional[List[int]] = None
    text: Optional[str] = None
    counted: Optional[int] = None  # the count our tokenizer check produced (None: unverified)

    @property
    def verified(self) -> bool:
        return self.counted == self.requested


def load_corpus(task: str) -> List[str]:
    """Text blocks for a task: realistic code for `coding`, prose and lists otherwise."""
    name = "coding.txt" if task == "coding" else "prose.txt"
    text = (DATA_DIR / name).read_text(encoding="utf-8")
    return [block.strip("\n") for block in text.split(BLOCK_SEPARATOR) if block.strip()]


def corpus_text(task: str, min_chars: int, rng: random.Random) -> str:
    """Corpus blocks in a seeded order, repeated (reshuffled each round) until min_chars is reached."""
    blocks = load_corpus(task)
    parts: List[str] = []
    size = 0
    while size < min_chars:
        order = blocks[:]
        rng.shuffle(order)
        for block in order:
            parts.append(block)
            size += len(block) + 2
    return "\n\n".join(parts)


def unique_prefix(rng: random.Random) -> str:
    """A short random header; its first token differs between requests with high probability."""
    return f"{rng.getrandbits(32):08x} {rng.choice(PREFIX_WORDS)} {rng.choice(PREFIX_WORDS)}: "


class PromptFactory:
    """Builds exact-length prompts for one run; token pools are tokenized once and reused."""

    def __init__(
        self,
        task: str,
        seed: int,
        tokenizer: Optional[Tokenizer],
        mode: str,
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"unknown task '{task}' (choose from {', '.join(TASKS)})")
        if mode not in ("tokens", "chat", "text"):
            raise ValueError(f"unknown prompt mode '{mode}'")
        self.task = task
        self.seed = seed
        self.tokenizer = tokenizer
        self.mode = mode if tokenizer is not None else ("text" if mode == "tokens" else mode)
        self._pool: List[int] = []
        self._vocab: List[int] = []
        self._bos: List[int] = []
        self._instruction: List[int] = []
        self._chat_overhead: Optional[int] = None
        self._prepared = False

    # -- pools -------------------------------------------------------------------------------
    def prepare(self, max_tokens: int) -> None:
        """Tokenize enough corpus text for prompts up to max_tokens (call before timing starts)."""
        if self.tokenizer is None:
            return
        tok = self.tokenizer
        if not self._prepared:
            self._prepared = True
            with_special = tok.tokenize("a", add_special=True)
            plain = tok.tokenize("a", add_special=False)
            # A model that wants BOS gets it as the first of our counted tokens (arrays skip the
            # server's own BOS insertion).
            if len(with_special) > len(plain) and with_special[-len(plain) :] == plain:
                self._bos = with_special[: len(with_special) - len(plain)]
            if INSTRUCTIONS[self.task]:
                self._instruction = tok.tokenize(INSTRUCTIONS[self.task])
        need = max_tokens + 64
        if len(self._pool) >= need:
            return
        rng = random.Random(f"{self.seed}:corpus:{self.task}")
        chars = max(4096, need * 6)
        while True:
            if self.task == "random":
                if not self._vocab:
                    ids = set(tok.tokenize(corpus_text("coding", 20000, rng)))
                    ids |= set(tok.tokenize(corpus_text("list", 20000, rng)))
                    ids -= set(self._bos)
                    self._vocab = sorted(ids)
                self._pool = [rng.choice(self._vocab) for _ in range(need)]
            else:
                self._pool = tok.tokenize(corpus_text(self.task, chars, rng))
            if len(self._pool) >= need:
                return
            chars *= 2

    # -- prompts -----------------------------------------------------------------------------
    def make(self, n_tokens: int, key: str) -> Prompt:
        """The prompt for one request; `key` (cell and index) makes it unique and reproducible."""
        if n_tokens < 1:
            raise ValueError("prompt size must be >= 1")
        rng = random.Random(f"{self.seed}:{key}")
        self.prepare(n_tokens)
        if self.mode == "tokens":
            return self._make_tokens(n_tokens, rng)
        if self.mode == "chat" and self.tokenizer is not None:
            return self._make_chat(n_tokens, rng)
        return self._make_text_estimate(n_tokens, rng)

    def _body(self, rng: random.Random, length: int) -> List[int]:
        self.prepare(length)
        if length <= 0:
            return []
        start = rng.randrange(max(1, len(self._pool) - length))
        return self._pool[start : start + length]

    def _make_tokens(self, n: int, rng: random.Random) -> Prompt:
        assert self.tokenizer is not None
        prefix = self.tokenizer.tokenize(unique_prefix(rng))
        head = self._bos + prefix
        tail = self._instruction if len(head) + len(self._instruction) < n else []
        if len(head) >= n:
            ids = head[:n]
        else:
            ids = head + self._body(rng, n - len(head) - len(tail)) + tail
        return Prompt(requested=n, token_ids=ids, counted=len(ids))

    def _chat_count(self, text: str) -> Optional[int]:
        assert self.tokenizer is not None
        return self.tokenizer.count_chat([{"role": "user", "content": text}])

    def chat_overhead(self) -> Optional[int]:
        """Tokens the chat template adds around an empty user message."""
        if self._chat_overhead is None and self.tokenizer is not None:
            self._chat_overhead = self._chat_count("")
        return self._chat_overhead

    def _make_chat(self, n: int, rng: random.Random) -> Prompt:
        assert self.tokenizer is not None
        overhead = self.chat_overhead()
        if overhead is None:
            return self._make_text_estimate(n, rng)
        if n <= overhead:
            raise PromptTooSmall(
                f"{n} tokens is not more than the chat template's own {overhead} tokens "
                "(use a larger size or --api completion)"
            )
        prefix = unique_prefix(rng)
        instruction = INSTRUCTIONS[self.task]
        budget = n - overhead
        prefix_len = len(self.tokenizer.tokenize(prefix))
        instr_len = len(self._instruction) if instruction else 0
        if prefix_len + instr_len + 4 > budget:
            instruction, instr_len = "", 0
        body = self._body(rng, budget + 64)
        detok = self.tokenizer.detokenize

        def build(k: int) -> str:
            return prefix + (detok(body[:k]) if k > 0 else "") + instruction

        # Re-tokenizing detokenized text can merge or split a token at the seams, so adjust the
        # body length by the observed difference until the count is exact.
        k = max(0, budget - prefix_len - instr_len)
        best_text, best_count = "", None
        tried = set()
        for _ in range(MAX_FIT_ROUNDS):
            tried.add(k)
            text = build(k)
            count = self._chat_count(text)
            if count is None:
                return Prompt(requested=n, text=text)
            if count == n:
                return Prompt(requested=n, text=text, counted=count)
            if best_count is None or abs(count - n) < abs(best_count - n) or (count < n < best_count):
                best_text, best_count = text, count
            k = max(0, min(len(body), k + n - count))
            if k in tried:
                break
        # Too long even without a body (tiny sizes): shorten the prefix one character at a time.
        while best_count is not None and best_count > n and best_text:
            best_text = best_text[:-1]
            c = self._chat_count(best_text)
            if c is None:
                break
            best_count = c
        # Stuck between two lengths: pad the shorter one with tiny pieces of text.
        if best_count is not None and best_count < n:
            text, count = best_text, best_count
            for filler in (" x", ".", " a", "\n", " ok", "-") * 4:
                trial = text + filler
                c = self._chat_count(trial)
                if c is None or c > n:
                    continue
                text, count = trial, c
                if count == n:
                    break
            best_text, best_count = text, count
        return Prompt(requested=n, text=best_text, counted=best_count)

    def _make_text_estimate(self, n: int, rng: random.Random) -> Prompt:
        """No tokenizer on this server: about 4 characters per token, checked later via usage."""
        text = unique_prefix(rng) + corpus_text(self.task if self.task != "random" else "list", n * 5, rng)
        return Prompt(requested=n, text=text[: max(1, n * 4)])
