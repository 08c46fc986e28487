"""What the requests of a run look like (`--workload`, `--dataset`); builder.RequestBuilder makes them.

- unique (default): every prompt starts with a prefix of its own and cache_prompt is off, so every
  request pays its full prefill.
- shared-prefix: request i belongs to group i mod --groups; the first --prefix-tokens of its prompt are
  the group's (a system prompt, a RAG document), the rest is its own. cache_prompt is on.
- multi-turn: conversations of --turns requests; turn t+1 is sent after turn t's answer and its prompt
  is the previous prompt, that answer and a new user message of the prompt size. cache_prompt is on.
- dataset: prompts (texts, or lengths) and output lengths replayed from --dataset, in file order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

from ..utils import StrEnum
from .dataset import Dataset


class WorkloadKind(StrEnum):
    UNIQUE = "unique"
    SHARED_PREFIX = "shared-prefix"
    MULTI_TURN = "multi-turn"
    DATASET = "dataset"


WORKLOAD_CHOICES = (WorkloadKind.UNIQUE, WorkloadKind.SHARED_PREFIX, WorkloadKind.MULTI_TURN)


@dataclass
class Workload:
    kind: WorkloadKind = WorkloadKind.UNIQUE
    prefix_tokens: Optional[int] = None  # shared-prefix
    groups: int = 1  # shared-prefix
    turns: int = 1  # multi-turn: requests per conversation
    dataset: Optional[Dataset] = None

    @property
    def cache_prompt(self) -> bool:
        """Whether requests may reuse the server's prompt cache: only where reuse is the point."""
        return self.kind in (WorkloadKind.SHARED_PREFIX, WorkloadKind.MULTI_TURN)

    @property
    def turns_per_session(self) -> int:
        return self.turns if self.kind is WorkloadKind.MULTI_TURN else 1

    def describe(self) -> str:
        if self.kind is WorkloadKind.SHARED_PREFIX:
            return f"shared-prefix ({self.groups} group(s), {self.prefix_tokens} shared tokens)"
        if self.kind is WorkloadKind.MULTI_TURN:
            return f"multi-turn ({self.turns} turns per conversation)"
        if self.kind is WorkloadKind.DATASET and self.dataset is not None:
            return f"dataset {self.dataset.path} ({len(self.dataset.entries)} entries)"
        return str(self.kind)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "kind": self.kind,
            "prefix_tokens": self.prefix_tokens,
            "groups": self.groups,
            "turns": self.turns,
            "dataset": self.dataset.to_dict() if self.dataset else None,
            "cache_prompt": self.cache_prompt,
        }
