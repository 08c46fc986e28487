"""`llama-run usage`: totals from the proxy's history, by client, model or day, as a table or JSON."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from tools.llama_bench.utils import ExitStatus, StrEnum, UserError

from .config import default_db_path
from .store import connect

USAGE_SCHEMA = "llama-studio.proxy-usage/1"


class GroupBy(StrEnum):
    CLIENT = "client"
    MODEL = "model"
    DAY = "day"


GROUP_SQL = {
    GroupBy.CLIENT: "client",
    GroupBy.MODEL: "COALESCE(model, '-')",
    GroupBy.DAY: "date(finished_at, 'unixepoch', 'localtime')",
}


@dataclass
class UsageParams:
    since_s: Optional[float] = 86400.0  # look back this many seconds; None: everything
    by: GroupBy = GroupBy.CLIENT
    as_json: bool = False
    db_path: Optional[Path] = None  # None: the default history in the state directory


@dataclass
class UsageRow:
    key: str
    requests: int
    errors: int
    aborted: int
    prompt_tokens: int
    cached_tokens: int
    generated_tokens: int
    ttft_ms: Optional[float]  # mean over the streamed requests that had one
    gen_tps: Optional[float]  # generated tokens / time spent generating them


def usage_rows(path: Path, since: Optional[float], by: GroupBy) -> List[UsageRow]:
    """One row per group, largest token use first; [] when there is no history yet."""
    if not path.exists():
        return []
    group = GROUP_SQL[by]
    tokens = "COALESCE(SUM(prompt_tokens), 0) + COALESCE(SUM(generated_tokens), 0)"
    order = "key" if by is GroupBy.DAY else f"{tokens} DESC, key"
    sql = f"""
        SELECT {group} AS key, COUNT(*),
               SUM(outcome IN ('error', 'failed')), SUM(outcome = 'aborted'),
               COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(cached_tokens), 0),
               COALESCE(SUM(generated_tokens), 0), AVG(ttft_ms),
               SUM(CASE WHEN gen_tps > 0 THEN generated_tokens END),
               SUM(CASE WHEN gen_tps > 0 THEN generated_tokens / gen_tps END)
        FROM requests WHERE finished_at >= ?
        GROUP BY key ORDER BY {order}
    """
    conn = connect(path, readonly=True)
    try:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'requests'").fetchone():
            return []  # created, nothing written yet
        rows = conn.execute(sql, (since if since is not None else float("-inf"),)).fetchall()
    except sqlite3.Error as exc:
        raise UserError(f"cannot read the usage history {path}: {exc}") from None
    finally:
        conn.close()
    out = []
    for key, n, errors, aborted, p, c, g, ttft, timed_tokens, gen_s in rows:
        gen_tps = timed_tokens / gen_s if timed_tokens and gen_s else None
        out.append(UsageRow(str(key), n, errors or 0, aborted or 0, p, c, g, ttft, gen_tps))
    return out


def total_of(rows: List[UsageRow]) -> UsageRow:
    timed = [(r.generated_tokens, r.generated_tokens / r.gen_tps) for r in rows if r.gen_tps]
    ttfts = [(r.ttft_ms, r.requests) for r in rows if r.ttft_ms is not None]
    return UsageRow(
        key="total",
        requests=sum(r.requests for r in rows),
        errors=sum(r.errors for r in rows),
        aborted=sum(r.aborted for r in rows),
        prompt_tokens=sum(r.prompt_tokens for r in rows),
        cached_tokens=sum(r.cached_tokens for r in rows),
        generated_tokens=sum(r.generated_tokens for r in rows),
        # weighted by request count: an approximation when some requests had no TTFT
        ttft_ms=sum(t * n for t, n in ttfts) / sum(n for _, n in ttfts) if ttfts else None,
        gen_tps=sum(g for g, _ in timed) / sum(s for _, s in timed) if timed else None,
    )


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def render_table(rows: List[UsageRow], by: GroupBy) -> str:
    head = [str(by), "requests", "errors", "aborted", "prompt", "cached", "generated", "ttft_ms", "gen_tok/s"]
    body = [
        [r.key, r.requests, r.errors, r.aborted, r.prompt_tokens, r.cached_tokens, r.generated_tokens, r.ttft_ms]
        + [r.gen_tps]
        for r in rows + [total_of(rows)]
    ]
    cells = [head] + [[_cell(v) for v in row] for row in body]
    widths = [max(len(row[i]) for row in cells) for i in range(len(head))]

    def fmt(row: List[str]) -> str:
        return "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths)))

    return "\n".join(fmt(row) for row in cells)


def _since_text(since_s: Optional[float]) -> str:
    if since_s is None:
        return "all time"
    start = time.strftime("%Y-%m-%d %H:%M", time.localtime(time.time() - since_s))
    return f"since {start}"


def report(params: UsageParams) -> Dict[str, Any]:
    path = params.db_path or default_db_path()
    since = None if params.since_s is None else time.time() - params.since_s
    rows = usage_rows(path, since, params.by)
    return {
        "schema": USAGE_SCHEMA,
        "db": str(path),
        "since": since,
        "by": str(params.by),
        "rows": [asdict(r) for r in rows],
        "total": asdict(total_of(rows)),
    }


def run_usage(params: UsageParams) -> int:
    data = report(params)
    if params.as_json:
        print(json.dumps(data, indent=2))
        return ExitStatus.OK
    rows = [UsageRow(**r) for r in data["rows"]]
    print(f"usage {_since_text(params.since_s)}, by {params.by} (history: {data['db']})")
    if not rows:
        print("no requests recorded in that period")
        return ExitStatus.OK
    print(render_table(rows, params.by))
    return ExitStatus.OK
