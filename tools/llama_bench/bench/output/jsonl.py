"""Per-request records as JSON lines, appended and flushed as they complete, so a crash loses nothing."""

from __future__ import annotations

import json
from typing import Optional

from ...outputs import AppendFile, OutputPath
from ..plan import Cell
from ..records import RequestRecord


class JsonlWriter:
    def __init__(self, out: OutputPath, run_id: str) -> None:
        self.path = str(out)
        self.run_id = run_id
        self._file = AppendFile(out).open()

    @property
    def failed(self) -> Optional[str]:
        """Why records stopped being written (a full disk), or None."""
        return self._file.failed

    def write(self, record: RequestRecord, cell: Optional[Cell]) -> None:
        data = {"run_id": self.run_id, **record.to_dict()}
        if cell is not None:
            data.update(prompt_size=cell.prompt_size, concurrency=cell.concurrency)
        self._file.write_line(json.dumps(data))

    def close(self) -> None:
        self._file.close()
