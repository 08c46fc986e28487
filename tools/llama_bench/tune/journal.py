"""The journal: every trial of an autotune run, one JSON line each, appended and flushed as it finishes.

Line 1 is a header naming the study (model, binary, objective, workload, fixed flags); every later line is
a trial (`"type": "trial"`, search or verify phase) as Trial.to_dict() writes it. Rerunning with the same
`--journal FILE` continues: the trials in it are not launched again (failed and pruned ones neither),
the strategy replays them and goes on from there. A journal of another study is refused; a line cut short
by a crash is skipped.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, List, Optional, Tuple

from ..outputs import AppendFile, OutputPath
from ..utils import UserError, as_dict
from .trial import Trial

SCHEMA = "llama-studio.autotune-journal/1"


def study_mismatch(old: Dict[str, Any], new: Dict[str, Any]) -> Optional[str]:
    """The first setting in which two studies differ ('objective: gen here, throughput in the journal')."""
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            return f"{key}: {_show(new.get(key))} here, {_show(old.get(key))} in the journal"
    return None


def _show(value: Any) -> str:
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)


def read_journal(path: str) -> Tuple[Optional[Dict[str, Any]], List[Trial], int]:
    """(header, trials, lines skipped) of an existing journal; (None, [], 0) for a missing or empty file."""
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        return None, [], 0
    except OSError as exc:
        raise UserError(f"--journal: cannot read {path}: {(exc.strerror or str(exc)).lower()}") from None
    lines = [line for line in lines if line.strip()]
    if not lines:
        return None, [], 0
    try:
        header = as_dict(json.loads(lines[0]))
    except ValueError:
        header = {}
    if header.get("type") != "header" or not str(header.get("schema", "")).startswith("llama-studio.autotune-journal/"):
        raise UserError(f"--journal: {path} is not an autotune journal (its first line is no journal header)")
    trials: List[Trial] = []
    skipped = 0
    for line in lines[1:]:
        try:
            data = as_dict(json.loads(line))
            if data.get("type") != "trial":
                continue
            trials.append(Trial.from_dict(data))
        except (ValueError, TypeError, KeyError):
            skipped += 1  # a line cut short by a crash, or edited by hand
    return header, trials, skipped


class Journal:
    """Trials of one study: those read from the file at start, and each new one appended at once."""

    def __init__(self, out: OutputPath, study: Dict[str, Any]) -> None:
        self.out = out
        self.study = study
        self.trials: List[Trial] = []
        self.resumed = 0  # trials read back from the file
        self.skipped = 0
        self._file: Optional[AppendFile] = None

    def open(self) -> "Journal":
        header, trials, skipped = read_journal(str(self.out.path))
        if header is not None:
            why = study_mismatch(as_dict(header.get("study")), self.study)
            if why:
                raise UserError(
                    f"--journal: {self.out.path} belongs to another study ({why}); "
                    "use another file or the same settings"
                )
        needs_newline = header is not None and not _ends_with_newline(str(self.out.path))
        self._file = AppendFile(self.out).open()
        if needs_newline:
            self._file.write_line("")  # finish a line a crash cut short, so the next record stands alone
        if header is None:
            self._file.write_line(
                json.dumps(
                    {"type": "header", "schema": SCHEMA, "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                     "study": self.study}  # fmt: skip
                )
            )
        self.trials, self.resumed, self.skipped = trials, len(trials), skipped
        return self

    @property
    def failed(self) -> Optional[str]:
        return self._file.failed if self._file else None

    def next_number(self) -> int:
        return max((t.number for t in self.trials), default=0) + 1

    def append(self, trial: Trial) -> None:
        self.trials.append(trial)
        if self._file is not None:
            self._file.write_line(json.dumps({"type": "trial", **trial.to_dict()}))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _ends_with_newline(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() == 0:
                return True
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) == b"\n"
    except OSError:
        return True
