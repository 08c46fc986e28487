"""`--dataset FILE`: prompt and output lengths (and texts, when given) to replay.

Two formats, told apart by their content:
- ShareGPT JSON: a list of `{"conversations": [{"from": "human", "value": ...}, {"from": "gpt", ...}]}`;
  each conversation's first human turn is the prompt and the answer after it gives the output length.
  Conversations without such a pair are skipped (and counted), as other benchmarks do.
- JSON lines (or a JSON list) of `{"prompt": TEXT | "prompt_tokens": N, "output_tokens": M}`;
  `output_tokens` may be left out (then --max-output-tokens).
A file that is neither is refused with one line naming the file and the entry. Lengths are made exact
with the server's tokenizer when the requests are built (workload.PromptFactory).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ..utils import UserError, check_readable_file, user_path

MAX_ENTRIES = 1_000_000
HUMAN_ROLES = ("human", "user")
ANSWER_ROLES = ("gpt", "assistant", "chatgpt", "bing", "bard", "model")


@dataclass
class Entry:
    prompt: Optional[str] = None  # the text to send (exact length from the tokenizer) ...
    prompt_tokens: Optional[int] = None  # ... or a length to build a prompt of
    output_tokens: Optional[int] = None  # generated tokens to ask for (None: from output_text or the default)
    output_text: Optional[str] = None  # the answer the dataset recorded (its token count is the length)


@dataclass
class Dataset:
    path: str
    format: str  # "sharegpt" | "jsonl" | "json"
    entries: List[Entry] = field(default_factory=list)
    skipped: int = 0  # ShareGPT conversations without a human turn followed by an answer

    def to_dict(self) -> Dict[str, Any]:
        return {"path": self.path, "format": self.format, "entries": len(self.entries), "skipped": self.skipped}


def _fail(path: str, where: str, problem: str) -> UserError:
    return UserError(f"--dataset {path}: {where}: {problem}")


def _count(value: Any, path: str, where: str, key: str) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _fail(path, where, f"'{key}' must be a whole number >= 1, not {json.dumps(value)[:40]}")
    return value


def _plain_entry(obj: Any, path: str, where: str) -> Entry:
    if not isinstance(obj, dict):
        raise _fail(path, where, "expected an object with 'prompt' or 'prompt_tokens'")
    prompt = obj.get("prompt")
    tokens = _count(obj.get("prompt_tokens"), path, where, "prompt_tokens")
    if prompt is not None and (not isinstance(prompt, str) or not prompt):
        raise _fail(path, where, "'prompt' must be a non-empty string")
    if prompt is None and tokens is None:
        raise _fail(path, where, "needs 'prompt' (text) or 'prompt_tokens' (a number)")
    output = _count(obj.get("output_tokens"), path, where, "output_tokens")
    return Entry(prompt=prompt, prompt_tokens=None if prompt is not None else tokens, output_tokens=output)


def _sharegpt_entry(obj: Any, path: str, where: str) -> Optional[Entry]:
    if not isinstance(obj, dict) or not isinstance(obj.get("conversations"), list):
        raise _fail(path, where, "expected an object with a 'conversations' list (ShareGPT)")
    turns = obj["conversations"]
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise _fail(path, f"{where}, turn {i}", 'expected {"from": ..., "value": TEXT}')
    for i, turn in enumerate(turns[:-1]):
        answer = turns[i + 1]
        if str(turn.get("from")).lower() in HUMAN_ROLES and str(answer.get("from")).lower() in ANSWER_ROLES:
            if turn["value"].strip() and answer["value"].strip():
                return Entry(prompt=turn["value"], output_text=answer["value"])
    return None


def load_dataset(path: str) -> Dataset:
    """Read and check a dataset file; UserError (one line: the file and the entry) when it is not one."""
    check_readable_file(path, "--dataset")
    try:
        text = user_path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"--dataset {path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"--dataset {path}: cannot read it: {exc}") from None
    stripped = text.lstrip()
    if not stripped:
        raise UserError(f"--dataset {path}: the file is empty")
    if stripped.startswith("["):
        try:
            items = json.loads(text)
        except ValueError as exc:
            raise UserError(f"--dataset {path}: not valid JSON: {exc}") from None
        if not isinstance(items, list) or not items:
            raise UserError(f"--dataset {path}: expected a non-empty list of entries")
        data = _from_list(items, path)
    else:
        data = _from_lines(text, path)
    if not data.entries:
        raise UserError(f"--dataset {path}: no usable entry (ShareGPT conversations need a human turn and an answer)")
    return data


def _from_list(items: List[Any], path: str) -> Dataset:
    if len(items) > MAX_ENTRIES:
        raise UserError(f"--dataset {path}: more than {MAX_ENTRIES} entries")
    first = items[0]
    if isinstance(first, dict) and "conversations" in first:
        data = Dataset(path, "sharegpt")
        for i, obj in enumerate(items):
            entry = _sharegpt_entry(obj, path, f"entry {i}")
            if entry is None:
                data.skipped += 1
            else:
                data.entries.append(entry)
        return data
    return Dataset(path, "json", [_plain_entry(obj, path, f"entry {i}") for i, obj in enumerate(items)])


def _from_lines(text: str, path: str) -> Dataset:
    data = Dataset(path, "jsonl")
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise _fail(path, f"line {n}", f"not valid JSON ({exc})") from None
        data.entries.append(_plain_entry(obj, path, f"line {n}"))
        if len(data.entries) > MAX_ENTRIES:
            raise UserError(f"--dataset {path}: more than {MAX_ENTRIES} entries")
    return data
