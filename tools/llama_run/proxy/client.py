"""A small synchronous reader of a proxy's /proxy/requests for the live views (TUI, plain lines): typed
records, every call bounded by a timeout, None when the proxy does not answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from .records import SCHEMA, ClientTotals, RequestRecord


@dataclass
class ProxySnapshot:
    now: float  # the proxy's Unix time
    started_at: float
    upstream: str
    streamed_chunks: int  # content chunks streamed since start-up (running requests included)
    in_flight: List[RequestRecord] = field(default_factory=list)
    recent: List[RequestRecord] = field(default_factory=list)  # the last to finish first
    clients: List[ClientTotals] = field(default_factory=list)


def parse_snapshot(obj: Any) -> Optional[ProxySnapshot]:
    """The JSON of /proxy/requests as typed records; None when it is not that."""
    if not isinstance(obj, dict) or obj.get("schema") != SCHEMA:
        return None
    try:
        return ProxySnapshot(
            now=float(obj["now"]),
            started_at=float(obj["started_at"]),
            upstream=str(obj["upstream"]),
            streamed_chunks=int(obj.get("streamed_chunks", 0)),
            in_flight=[RequestRecord.from_dict(d) for d in obj.get("in_flight", [])],
            recent=[RequestRecord.from_dict(d) for d in obj.get("recent", [])],
            clients=[ClientTotals.from_dict(d) for d in obj.get("clients", [])],
        )
    except (KeyError, TypeError, ValueError):
        return None


class ProxyReader:
    """Polls one proxy; safe from several threads (HttpClient is). Close it when done."""

    def __init__(self, base_url: str, api_key: Optional[str] = None, timeout: float = 2.0) -> None:
        from tools.llama_bench.http import HttpClient

        self._http = HttpClient(base_url, api_key=api_key, timeout=timeout)
        self.last_seq = 0

    def fetch(self, recent: int = 50) -> Optional[ProxySnapshot]:
        from tools.llama_bench.http import HttpError

        try:
            return parse_snapshot(self._http.get_json(f"/proxy/requests?recent={max(0, recent)}"))
        except HttpError:
            return None

    def newly_finished(self, snap: ProxySnapshot) -> List[RequestRecord]:
        """The finished requests not returned by an earlier call (oldest first): one `[req]` line each.

        Requests that finished and left the `recent` window between two polls are missed: poll at least as
        often as `recent` requests can finish (the proxy keeps --recent, 200 by default).
        """
        new = [rec for rec in reversed(snap.recent) if rec.seq > self.last_seq]
        if new:
            self.last_seq = new[-1].seq
        return new

    def close(self) -> None:
        self._http.close()


def totals_by_client(snap: ProxySnapshot) -> Dict[str, ClientTotals]:
    return {t.client: t for t in snap.clients}
