"""Per-request records as JSON lines, appended and flushed as they complete, so a crash loses nothing."""

from __future__ import annotations

import json
from typing import IO, Optional

from ..plan import Cell
from ..records import RequestRecord


class JsonlWriter:
    def __init__(self, path: str, run_id: str) -> None:
        self.path = path
        self.run_id = run_id
        self._fh: IO[str] = open(path, "a", encoding="utf-8")

    def write(self, record: RequestRecord, cell: Optional[Cell]) -> None:
        data = {"run_id": self.run_id, **record.to_dict()}
        if cell is not None:
            data.update(prompt_size=cell.prompt_size, concurrency=cell.concurrency)
        self._fh.write(json.dumps(data) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()
