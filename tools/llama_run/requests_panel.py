"""The token-meter proxy's part of the dashboard: requests in flight and just finished, and what each
client used — a pure function of a /proxy/requests snapshot, like the rest of the dashboard."""

from __future__ import annotations

from typing import List, Optional

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from .proxy.client import ProxySnapshot
from .proxy.records import Outcome, RequestRecord

ROWS = 8  # requests shown: in flight first, then the most recent


def _n(x: Optional[int]) -> str:
    return "-" if x is None else f"{x:,}"


def _f(x: Optional[float], digits: int = 1) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def _status(rec: RequestRecord) -> Text:
    if rec.outcome is Outcome.RUNNING:
        return Text("running", style="bold green")
    style = {Outcome.OK: "green", Outcome.ABORTED: "yellow"}.get(rec.outcome, "red")
    code = f" {rec.status}" if rec.status is not None else ""
    return Text(f"{rec.outcome}{code}", style=style)


def requests_panel(snap: Optional[ProxySnapshot], stream_tps: Optional[float]) -> RenderableType:
    if snap is None:
        return Text("token-meter proxy not answering", style="red")
    rows: List[RequestRecord] = (snap.in_flight + snap.recent)[:ROWS]
    table = Table(box=None, expand=True, pad_edge=False, header_style="bold")
    for col, just in (("client", "left"), ("endpoint", "left"), ("in", "right"), ("cached", "right"),
                      ("out", "right"), ("TTFT ms", "right"), ("tok/s", "right"), ("status", "left")):  # fmt: skip
        table.add_column(col, justify=just, no_wrap=True)  # type: ignore[arg-type]
    for rec in rows:
        table.add_row(
            rec.client,
            str(rec.endpoint),
            _n(rec.prompt_tokens),
            _n(rec.cached_tokens),
            _n(rec.generated_tokens),
            _f(rec.ttft_ms),
            _f(rec.gen_tps),
            _status(rec),
        )
    if not rows:
        table.add_row("(no requests yet)", "", "", "", "", "", "", "")
    live = "-" if stream_tps is None else f"{stream_tps:,.1f}"
    head = Text.assemble(
        (f"{len(snap.in_flight)}", "bold"), " in flight · streaming ", (live, "bold"), " tok/s", style="default"
    )
    clients = [
        Text.assemble(
            (c.client, "bold"),
            f"  {c.requests} req · in {c.prompt_tokens:,} (cached {c.cached_tokens:,}) · out {c.generated_tokens:,}"
            + (f" · {c.errors} failed" if c.errors else "")
            + (f" · {c.in_flight} running" if c.in_flight else ""),
        )
        for c in sorted(snap.clients, key=lambda c: -(c.prompt_tokens + c.generated_tokens))[:4]
    ]
    return Group(head, table, *clients)
