"""/proxy/metrics: Prometheus counters and histograms of the metered requests, in the proxy's own registry.

Counters move when a request finishes (per request, never per chunk); the in-flight gauge and the live
count of streamed chunks are read from the ledger at scrape time.
"""

from __future__ import annotations

from typing import Any, Iterator, Tuple

from .ledger import Ledger
from .records import Outcome, RequestRecord

LABELS = ("client", "model", "endpoint")
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


def status_label(rec: RequestRecord) -> str:
    """The HTTP status, or `aborted` / `failed` when the answer did not run to its end."""
    if rec.outcome in (Outcome.ABORTED, Outcome.FAILED):
        return str(rec.outcome)
    return str(rec.status) if rec.status is not None else "none"


class _LiveCollector:
    """In-flight requests per client and streamed chunks, computed when scraped."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        gauge = GaugeMetricFamily(
            "llama_proxy_requests_in_flight", "Metered requests being answered now", labels=["client"]
        )
        for totals in self.ledger.clients.values():
            gauge.add_metric([totals.client], totals.in_flight)
        yield gauge
        yield CounterMetricFamily(
            "llama_proxy_streamed_chunks",
            "Content chunks streamed to clients (about one per generated token), running requests included",
            value=self.ledger.streamed_chunks(),
        )


class ProxyMetrics:
    """A RequestSink that keeps the Prometheus series."""

    def __init__(self, ledger: Ledger) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("llama_proxy_requests", "Metered requests by outcome", LABELS + ("status",), registry=r)
        self.tokens = Counter(
            "llama_proxy_tokens", "Tokens of metered requests (type: prompt, cached, generated)", LABELS + ("type",),
            registry=r,
        )  # fmt: skip
        self.ttft = Histogram(
            "llama_proxy_ttft_seconds", "Time to the first streamed content chunk", LABELS, buckets=TTFT_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.duration = Histogram(
            "llama_proxy_request_duration_seconds", "Request duration, head to last byte", LABELS,
            buckets=DURATION_BUCKETS, registry=r,
        )  # fmt: skip
        r.register(_LiveCollector(ledger))  # type: ignore[arg-type]

    def finished(self, rec: RequestRecord) -> None:
        labels = (rec.client, rec.model or "-", str(rec.endpoint))
        self.requests.labels(*labels, status_label(rec)).inc()
        for kind, value in (("prompt", rec.prompt_tokens), ("cached", rec.cached_tokens)):
            if value:
                self.tokens.labels(*labels, kind).inc(value)
        if rec.generated_tokens:
            self.tokens.labels(*labels, "generated").inc(rec.generated_tokens)
        if rec.ttft_ms is not None:
            self.ttft.labels(*labels).observe(rec.ttft_ms / 1000.0)
        if rec.duration_ms is not None:
            self.duration.labels(*labels).observe(rec.duration_ms / 1000.0)

    def render(self) -> Tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
