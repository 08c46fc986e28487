"""The history: every finished request in a SQLite database in the state directory (WAL, so that `llama-run
usage` reads while the proxy writes). Writes go through one daemon thread, in batches, so the event loop
never waits for the disk. Rows older than the retention are deleted at start-up and every hour.
Prompt and completion texts are never stored; nor are upstream error messages (they may quote a prompt).
"""

from __future__ import annotations

import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import List, Optional, Tuple

from tools.llama_bench.utils import UserError

from .records import RequestRecord

COLUMNS = (
    "started_at",
    "finished_at",
    "client",
    "identity",
    "endpoint",
    "method",
    "model",
    "stream",
    "status",
    "outcome",
    "prompt_tokens",
    "cached_tokens",
    "generated_tokens",
    "ttft_ms",
    "duration_ms",
    "prompt_tps",
    "gen_tps",
    "finish_reason",
    "tokens_source",
    "usage_injected",
    "error_type",
)
SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at REAL NOT NULL, finished_at REAL NOT NULL,
    client TEXT NOT NULL, identity TEXT NOT NULL, endpoint TEXT NOT NULL, method TEXT NOT NULL,
    model TEXT, stream INTEGER NOT NULL, status INTEGER, outcome TEXT NOT NULL,
    prompt_tokens INTEGER, cached_tokens INTEGER, generated_tokens INTEGER,
    ttft_ms REAL, duration_ms REAL, prompt_tps REAL, gen_tps REAL,
    finish_reason TEXT, tokens_source TEXT, usage_injected INTEGER NOT NULL, error_type TEXT
);
CREATE INDEX IF NOT EXISTS requests_finished ON requests (finished_at);
PRAGMA user_version = 1;
PRAGMA application_id = 1819048307;
"""
APPLICATION_ID = 1819048307  # 0x6c6c7573, "llus": this file is a llama-run usage history
INSERT = f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
PRUNE_EVERY = 3600.0
FLUSH_S = 0.5  # at most this much history is lost to a SIGKILL
Row = Tuple[object, ...]


def _open_readonly(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=5.0)


def is_ours(conn: sqlite3.Connection) -> bool:
    """Whether a database is a usage history (or empty): another program's SQLite file is never touched."""
    if conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID:
        return True
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    tables.discard("sqlite_sequence")
    if not tables:
        return True
    columns = {r[1] for r in conn.execute("PRAGMA table_info(requests)")}
    return tables == {"requests"} and columns == {"id", *COLUMNS}  # written before the application id


def connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    """A connection to the history (created with its schema unless `readonly`); UserError when unusable
    or when the file is another program's database (checked read-only, before anything is written)."""
    try:
        if path.exists():
            probe = _open_readonly(path)
            try:
                ours = is_ours(probe)
            finally:
                probe.close()
            if not ours:
                raise UserError(f"{path} is another program's database, not a usage history: give another --db")
        if readonly:
            return _open_readonly(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), timeout=5.0, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a power cut loses the last batch at most
        conn.executescript(SCHEMA)
        return conn
    except (sqlite3.Error, OSError) as exc:
        raise UserError(f"cannot open the usage history {path}: {exc}") from None


def to_row(rec: RequestRecord) -> Row:
    finished = rec.started_at + (rec.duration_ms or 0.0) / 1000.0
    return (
        rec.started_at,
        finished,
        rec.client,
        str(rec.identity),
        str(rec.endpoint),
        rec.method,
        rec.model,
        int(rec.stream),
        rec.status,
        str(rec.outcome),
        rec.prompt_tokens,
        rec.cached_tokens,
        rec.generated_tokens,
        rec.ttft_ms,
        rec.duration_ms,
        rec.prompt_tps,
        rec.gen_tps,
        rec.finish_reason,
        rec.tokens_source,
        int(rec.usage_injected),
        rec.error_type,
    )


class UsageStore:
    """Appends finished requests to the history from a writer thread; a RequestSink.

    `finished` only appends to a list (no wake-up per request); the thread writes what has gathered every
    FLUSH_S seconds, and everything left when it is closed.
    """

    def __init__(self, path: Path, retention_days: float) -> None:
        self.path = path
        self.retention_s = retention_days * 86400.0
        self._conn = connect(path)
        self._rows: List[Row] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._failed = False
        self.prune()

    def start(self) -> None:
        """Start the writer (after tokens_since: the connection is the thread's from then on)."""
        self._thread = threading.Thread(target=self._run, name="usage-store", daemon=True)
        self._thread.start()

    def finished(self, rec: RequestRecord) -> None:
        row = to_row(rec)
        with self._lock:
            self._rows.append(row)

    def tokens_since(self, since: float) -> List[Tuple[str, float, int]]:
        """(client, finished at, prompt + generated tokens) of the requests finished since `since`."""
        sql = (
            "SELECT client, finished_at, COALESCE(prompt_tokens, 0) + COALESCE(generated_tokens, 0) "
            "FROM requests WHERE finished_at >= ?"
        )
        return [(str(c), float(t), int(n)) for c, t, n in self._conn.execute(sql, (since,))]

    def prune(self) -> None:
        with self._conn:
            self._conn.execute("DELETE FROM requests WHERE finished_at < ?", (time.time() - self.retention_s,))

    def close(self, timeout: float = 10.0) -> None:
        """Write what is left, stop the thread, close the database."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._write(self._take())
        self._conn.close()

    def _take(self) -> List[Row]:
        with self._lock:
            rows, self._rows = self._rows, []
        return rows

    def _run(self) -> None:
        next_prune = time.monotonic() + PRUNE_EVERY
        while not self._stop.wait(FLUSH_S):
            self._write(self._take())
            if time.monotonic() >= next_prune:
                next_prune = time.monotonic() + PRUNE_EVERY
                try:
                    self.prune()
                except sqlite3.Error:
                    pass

    def _write(self, batch: List[Row]) -> None:
        if not batch:
            return
        try:
            with self._conn:
                self._conn.executemany(INSERT, batch)
        except sqlite3.Error as exc:
            if not self._failed:  # say it once; metering goes on in memory
                self._failed = True
                print(f"llama-proxy: warning: cannot write the usage history {self.path}: {exc}", file=sys.stderr)
