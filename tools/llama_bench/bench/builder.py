"""The request builder: a cell's plan turned into RequestSpecs (the bodies of every workload), including
the next turn of a conversation once the previous answer is in."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

from .dataset import Entry
from .payload import build_body
from .plan import BenchParams, Cell
from .records import Api, Capture, RequestRecord, RequestSpec
from .workload import Prompt
from .workloads import WorkloadKind

if TYPE_CHECKING:
    from .probe import ServerInfo
    from .workload import PromptFactory


def prompt_key(cell: Cell, repeat: int, index: int) -> str:
    """The seed key of a request's prompt (repeat 0 keeps the key of results before --repeats)."""
    return f"{cell.label}:{index}" if repeat == 0 else f"{cell.label}:r{repeat}:{index}"


class NoEntryFits(ValueError):
    """No dataset entry fits the server's context."""


class RequestBuilder:
    """RequestSpecs for a run: first requests ahead of time, follow-up turns when an answer is in.

    Called from worker threads (tokenizer calls block); the conversations in progress are shared
    state under a lock."""

    def __init__(self, params: BenchParams, info: "ServerInfo", api: Api, factory: "PromptFactory") -> None:
        self.params = params
        self.info = info
        self.api = api
        self.factory = factory
        self.workload = params.workload
        self._lock = threading.Lock()
        # (cell, repeat, conversation) -> (the last prompt, its answer, new tokens per turn)
        self._turns: Dict[Tuple[str, int, int], Tuple[Prompt, Capture, int]] = {}
        self._entries: Dict[int, Tuple[Prompt, int]] = {}
        self.entries_skipped = 0

    # -- bodies ---------------------------------------------------------------------------------
    def spec(self, prompt: Prompt, index: int, cell: str, warmup: bool, max_tokens: int, **extra: Any) -> RequestSpec:
        payload: Any
        if self.api is Api.OPENAI_CHAT:
            payload = prompt.messages or prompt.text
        else:
            payload = prompt.token_ids if prompt.token_ids is not None else prompt.text
        body = build_body(self.api, self.params, self.info, payload, self.params.seed * 100003 + index)
        if max_tokens != self.params.max_output_tokens:
            body["n_predict" if self.api is Api.COMPLETION else "max_tokens"] = max_tokens
        return RequestSpec(
            index=index,
            api=self.api,
            body=body,
            prompt_tokens=prompt.requested,
            max_tokens=max_tokens,
            cell=cell,
            warmup=warmup,
            prompt_verified=prompt.verified,
            **extra,
        )

    def warmup(self, size: int, max_tokens: int, i: int) -> RequestSpec:
        return self.spec(self.factory.make(size, f"warmup:{i}"), i, "warmup", True, max_tokens)

    # -- the requests of a cell -----------------------------------------------------------------
    def first(self, cell: Cell, unit: int, repeat: int) -> RequestSpec:
        """Request `unit` of the cell (for multi-turn: the first turn of conversation `unit`)."""
        kind = self.workload.kind
        mt = self.params.max_output_tokens
        key = prompt_key(cell, repeat, unit)
        if kind is WorkloadKind.MULTI_TURN:
            turns = self.workload.turns
            prompt = self.factory.make(cell.prompt_size, key)
            capture = Capture()
            with self._lock:
                self._turns[(cell.label, repeat, unit)] = (prompt, capture, cell.prompt_size)
            return self.spec(
                prompt, unit * turns, cell.label, False, mt, repeat=repeat, session=unit, turn=0, capture=capture
            )
        if kind is WorkloadKind.SHARED_PREFIX:
            assert self.workload.prefix_tokens is not None
            group = unit % max(1, self.workload.groups)
            prompt = self.factory.make_shared(cell.prompt_size, key, group, self.workload.prefix_tokens)
        elif kind is WorkloadKind.DATASET:
            prompt, mt = self._entry(unit)
        else:
            prompt = self.factory.make(cell.prompt_size, key)
        return self.spec(prompt, unit, cell.label, False, mt, repeat=repeat)

    def follow_up(self, spec: RequestSpec, rec: RequestRecord) -> Optional[RequestSpec]:
        """The next turn after `rec` answered `spec`, or None when the conversation is over (or broke)."""
        if spec.session is None or spec.turn is None:
            return None
        key = (spec.cell, spec.repeat, spec.session)
        with self._lock:
            state = self._turns.get(key)
        turn = spec.turn + 1
        if state is None or not rec.ok or turn >= self.workload.turns:
            with self._lock:
                self._turns.pop(key, None)
            return None
        prompt, capture, size = state
        answer = (capture.token_ids, "".join(capture.text))
        nxt = self.factory.make_turn(prompt, answer, size, f"{spec.cell}:s{spec.session}:r{spec.repeat}:t{turn}")
        last = turn + 1 >= self.workload.turns
        keep = None if last else Capture()  # the last answer is not needed: nothing is kept for it
        with self._lock:
            if keep is None:
                self._turns.pop(key, None)
            else:
                self._turns[key] = (nxt, keep, size)
        return self.spec(
            nxt,
            spec.index + 1,
            spec.cell,
            False,
            spec.max_tokens,
            repeat=spec.repeat,
            session=spec.session,
            turn=turn,
            capture=keep,
        )

    def remaining_turns(self, spec: RequestSpec) -> int:
        """Turns of the conversation that will not be sent after `spec` failed."""
        if spec.turn is None:
            return 0
        return max(0, self.workload.turns - spec.turn - 1)

    def _entry(self, unit: int) -> Tuple[Prompt, int]:
        """The dataset entry for request `unit` (entries in file order, cycling), skipping entries
        that do not fit the context; prompts and lengths are built once per entry."""
        dataset = self.workload.dataset
        assert dataset is not None and dataset.entries
        n = len(dataset.entries)
        for step in range(n):
            i = (unit + step) % n
            with self._lock:
                built = self._entries.get(i)
            if built is None:
                built = self._build_entry(dataset.entries[i], i)
                with self._lock:
                    self._entries[i] = built
            prompt, out = built
            if out > 0:
                return prompt, out
            if unit < n:
                self.entries_skipped += 1
        raise NoEntryFits(f"no entry of {dataset.path} fits the server's context of {self.info.n_ctx} tokens")

    def _build_entry(self, entry: Entry, i: int) -> Tuple[Prompt, int]:
        if entry.prompt is not None:
            prompt = self.factory.make_text(entry.prompt)
        else:
            assert entry.prompt_tokens is not None
            prompt = self.factory.make(entry.prompt_tokens, f"dataset:{i}")
        if entry.output_tokens is not None:
            out = entry.output_tokens
        elif entry.output_text is not None:
            out = self.factory.count_text(entry.output_text)
        else:
            out = self.params.max_output_tokens
        n_ctx = self.info.n_ctx
        if n_ctx:
            if prompt.requested >= n_ctx - 1:
                return prompt, 0  # does not fit at all: skipped
            out = min(out, n_ctx - prompt.requested - 1)
        return prompt, max(1, out)
