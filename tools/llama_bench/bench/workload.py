"""Prompts of an exact token count, made with the server's own tokenizer.

For llama.cpp's /completion and /v1/completions the prompt is a token-ID array, which the server
takes as is, so its length is exact by construction. For chat the text is fitted until the chat
template's output tokenizes (with /apply-template and /tokenize) to exactly the requested count.
Every prompt starts with a prefix unique to the request so no prompt cache can skip prefill — except
where sharing is the point: a group's shared prefix (`make_shared`), a conversation's history
(`make_turn`). Everything is deterministic for a given --seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Protocol, Sequence, Tuple

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
Messages = List[Dict[str, str]]


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
    messages: Optional[Messages] = None  # chat with more than the one user message `text`

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

    def make_shared(self, n_tokens: int, key: str, group: int, prefix_tokens: int) -> Prompt:
        """A prompt whose first `prefix_tokens` are the same for every request of `group` (a system
        prompt, a RAG document), followed by a part unique to the request; n_tokens in all."""
        if not 0 < prefix_tokens < n_tokens:
            raise ValueError(f"the shared prefix ({prefix_tokens}) must be shorter than the prompt ({n_tokens})")
        rng = random.Random(f"{self.seed}:{key}")
        self.prepare(n_tokens)
        shared = random.Random(f"{self.seed}:group:{group}")
        if self.mode == "tokens":
            assert self.tokenizer is not None
            head = (self._bos + self._body(shared, prefix_tokens))[:prefix_tokens]
            ids = head + self._continuation(n_tokens - len(head), rng)
            return Prompt(requested=n_tokens, token_ids=ids, counted=len(ids))
        if self.mode == "chat" and self.tokenizer is not None:
            system = [{"role": "system", "content": self.tokenizer.detokenize(self._body(shared, prefix_tokens))}]
            return self._make_chat(n_tokens, rng, system)
        head_text = corpus_text(self.task if self.task != "random" else "list", prefix_tokens * 5, shared)
        tail = self._make_text_estimate(n_tokens - prefix_tokens, rng).text or ""
        return Prompt(requested=n_tokens, text=head_text[: prefix_tokens * 4] + "\n\n" + tail)

    def make_turn(self, previous: Prompt, answer: Tuple[List[int], str], n_new: int, key: str) -> Prompt:
        """The next turn of a conversation: the previous prompt, the answer it got (token ids and text),
        then a new user message of n_new tokens; the server's prompt cache holds all but the new part."""
        rng = random.Random(f"{self.seed}:{key}")
        ids, text = answer
        if self.mode == "tokens" and previous.token_ids is not None:
            assert self.tokenizer is not None
            history = previous.token_ids + (ids if ids else self.tokenizer.tokenize(text))
            out = history + self._continuation(n_new, rng)
            return Prompt(requested=len(out), token_ids=out, counted=len(out))
        if self.mode == "chat" and self.tokenizer is not None:
            messages = list(previous.messages or [{"role": "user", "content": previous.text or ""}])
            messages.append({"role": "assistant", "content": text})
            base = self.tokenizer.count_chat(messages + [{"role": "user", "content": ""}])
            overhead = self.chat_overhead()
            if base is not None and overhead is not None:
                return self._make_chat(base + max(1, n_new - overhead), rng, messages)
        new = self._make_text_estimate(n_new, rng).text or ""
        if self.mode == "chat":
            messages = list(previous.messages or [{"role": "user", "content": previous.text or ""}])
            messages += [{"role": "assistant", "content": text}, {"role": "user", "content": new}]
            return Prompt(requested=previous.requested + n_new, text=new, messages=messages)
        return Prompt(requested=previous.requested + n_new, text=(previous.text or "") + text + "\n\n" + new)

    def make_text(self, text: str) -> Prompt:
        """A given text as the prompt (a dataset entry); its length is what the tokenizer makes of it."""
        if self.mode == "tokens":
            assert self.tokenizer is not None
            self.prepare(1)
            ids = self._bos + self.tokenizer.tokenize(text)
            return Prompt(requested=len(ids), token_ids=ids, counted=len(ids))
        if self.mode == "chat" and self.tokenizer is not None:
            count = self.tokenizer.count_chat([{"role": "user", "content": text}])
            if count is not None:
                return Prompt(requested=count, text=text, counted=count)
        return Prompt(requested=max(1, len(text) // 4), text=text)

    def count_text(self, text: str) -> int:
        """Tokens of a text (a dataset's answer: its output length); about 4 characters per token
        without a tokenizer."""
        if self.tokenizer is None:
            return max(1, len(text) // 4)
        return len(self.tokenizer.tokenize(text))

    def _continuation(self, n: int, rng: random.Random) -> List[int]:
        """n tokens that start with a unique header and end with the task's instruction (no BOS)."""
        assert self.tokenizer is not None
        if n <= 0:
            return []
        prefix = self.tokenizer.tokenize(unique_prefix(rng))
        tail = self._instruction if len(prefix) + len(self._instruction) < n else []
        if len(prefix) >= n:
            return prefix[:n]
        return prefix + self._body(rng, n - len(prefix) - len(tail)) + tail

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

    def _chat_count(self, text: str, history: Optional[Messages] = None) -> Optional[int]:
        assert self.tokenizer is not None
        return self.tokenizer.count_chat((history or []) + [{"role": "user", "content": text}])

    def chat_overhead(self) -> Optional[int]:
        """Tokens the chat template adds around an empty user message."""
        if self._chat_overhead is None and self.tokenizer is not None:
            self._chat_overhead = self._chat_count("")
        return self._chat_overhead

    def _make_chat(self, n: int, rng: random.Random, history: Optional[Messages] = None) -> Prompt:
        """A user message fitted so that the template applied to history + it is exactly n tokens."""
        assert self.tokenizer is not None
        overhead = self._chat_count("", history) if history else self.chat_overhead()
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
            count = self._chat_count(text, history)
            if count is None:
                return Prompt(requested=n, text=text, messages=_with(history, text))
            if count == n:
                return Prompt(requested=n, text=text, counted=count, messages=_with(history, text))
            if best_count is None or abs(count - n) < abs(best_count - n) or (count < n < best_count):
                best_text, best_count = text, count
            k = max(0, min(len(body), k + n - count))
            if k in tried:
                break
        # Too long even without a body (tiny sizes): shorten the prefix one character at a time.
        while best_count is not None and best_count > n and best_text:
            best_text = best_text[:-1]
            c = self._chat_count(best_text, history)
            if c is None:
                break
            best_count = c
        # Stuck between two lengths: pad the shorter one with tiny pieces of text.
        if best_count is not None and best_count < n:
            text, count = best_text, best_count
            for filler in (" x", ".", " a", "\n", " ok", "-") * 4:
                trial = text + filler
                c = self._chat_count(trial, history)
                if c is None or c > n:
                    continue
                text, count = trial, c
                if count == n:
                    break
            best_text, best_count = text, count
        return Prompt(requested=n, text=best_text, counted=best_count, messages=_with(history, best_text))

    def _make_text_estimate(self, n: int, rng: random.Random) -> Prompt:
        """No tokenizer on this server: about 4 characters per token, checked later via usage."""
        text = unique_prefix(rng) + corpus_text(self.task if self.task != "random" else "list", n * 5, rng)
        return Prompt(requested=n, text=text[: max(1, n * 4)])


def _with(history: Optional[Messages], text: str) -> Optional[Messages]:
    """The whole message list when there is history; None for a lone user message (the body is built from text)."""
    return history + [{"role": "user", "content": text}] if history else None
