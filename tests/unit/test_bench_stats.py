"""Stream parsing (TTFT/ITL/TPOT/output length definitions) and per-cell aggregation."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Tuple

import pytest

from tools.llama_bench.bench.client import StreamParser
from tools.llama_bench.bench.records import INTERRUPTED, Api, RequestRecord, RequestSpec
from tools.llama_bench.bench.stats import aggregate, describe, percentile, relative_change, warnings_for
from tools.llama_bench.bench.summary import ErrorCount

API_COMPLETION, API_OPENAI_CHAT, API_OPENAI_COMPLETIONS = Api.COMPLETION, Api.OPENAI_CHAT, Api.OPENAI_COMPLETIONS

TIMINGS = {
    "cache_n": 0,
    "prompt_n": 100,
    "prompt_ms": 90.0,
    "prompt_per_second": 1111.1,
    "predicted_n": 4,
    "predicted_ms": 30.0,
    "predicted_per_second": 133.3,
}


def feed(api: Api, events: List[Tuple[float, Any]], max_tokens: int = 4, prompt: int = 100) -> RequestRecord:
    """Run SSE lines through the parser; times are seconds after the request started at t=10."""
    spec = RequestSpec(index=0, api=api, body={}, prompt_tokens=prompt, max_tokens=max_tokens, cell="c")
    parser = StreamParser(spec, start=10.0)
    for t, event in events:
        line = b"data: " + (event if isinstance(event, bytes) else json.dumps(event).encode())
        parser.last_byte = 10.0 + t
        parser.feed_line(line, 10.0 + t)
        parser.feed_line(b"", 10.0 + t)
    return parser.record(200)


def chat(delta: Dict[str, Any], finish: Optional[str] = None) -> Dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}], "object": "chat.completion.chunk"}


def test_chat_role_only_chunk_does_not_count_as_first_token() -> None:
    rec = feed(
        API_OPENAI_CHAT,
        [
            (0.050, chat({"role": "assistant", "content": None})),
            (0.100, chat({"content": "Hello"})),
            (0.110, chat({"content": " there"})),
            (0.125, chat({"content": ","})),
            (0.130, chat({"content": " you"})),
            (0.131, chat({}, "length")),
            (
                0.132,
                {"choices": [], "usage": {"completion_tokens": 4, "prompt_tokens": 100}, "timings": TIMINGS},
            ),
            (0.133, b"[DONE]"),
        ],
    )
    assert rec.ok, rec.error
    assert rec.ttft_ms == pytest.approx(100.0)
    assert rec.itl_ms == pytest.approx([10.0, 15.0, 5.0])
    assert rec.e2e_ms == pytest.approx(133.0)
    assert rec.output_tokens == 4 and rec.output_tokens_source == "usage"
    assert rec.tpot_ms == pytest.approx((133.0 - 100.0) / 3)
    assert rec.gen_tps == pytest.approx(3 / 0.033)
    assert rec.prompt_tokens_reported == 100 and rec.prompt_mismatch is False
    assert rec.server_prompt_tps == pytest.approx(1111.1) and rec.server_gen_tps == pytest.approx(133.3)
    assert rec.overhead_ms == pytest.approx(133.0 - 90.0 - 30.0)
    assert rec.ttft_overhead_ms == pytest.approx(10.0)
    assert rec.finish_reason == "length" and rec.stopped_early is False


def test_reasoning_counts_as_generated_and_is_reported_separately() -> None:
    rec = feed(
        API_OPENAI_CHAT,
        [
            (0.010, chat({"role": "assistant", "content": ""})),
            (0.200, chat({"reasoning_content": "Let me"})),
            (0.220, chat({"reasoning_content": " think"})),
            (0.300, chat({"content": "Yes"})),
            (0.310, chat({}, "stop")),
            (0.311, b"[DONE]"),
        ],
        max_tokens=16,
    )
    assert rec.ttft_ms == pytest.approx(200.0)
    assert rec.reasoning_ttft_ms == pytest.approx(200.0)
    assert rec.content_ttft_ms == pytest.approx(300.0)
    assert rec.itl_ms == pytest.approx([20.0, 80.0])
    # No usage in the stream: the chunks were counted, and max_tokens was never used as the length.
    assert rec.output_tokens == 3 and rec.output_tokens_source == "counted"
    assert rec.stopped_early is True


def test_completion_endpoint_uses_timings_and_token_ids() -> None:
    events: List[Tuple[float, Any]] = [
        (0.1 + 0.01 * i, {"content": w, "tokens": [i + 5], "stop": False}) for i, w in enumerate(["a", " b", "", " d"])
    ]
    final = {"content": "", "tokens": [], "stop": True, "stop_type": "limit", "tokens_evaluated": 100}
    final["timings"] = dict(TIMINGS, cache_n=12, prompt_n=88)
    events.append((0.15, final))
    rec = feed(API_COMPLETION, events)
    assert rec.ok
    # A token whose text is held back (partial UTF-8) is still a generated token.
    assert rec.content_chunks == 4 and rec.counted_tokens == 4
    assert rec.ttft_ms == pytest.approx(100.0)
    assert rec.output_tokens == 4 and rec.output_tokens_source == "timings"
    assert rec.cache_n == 12 and rec.server_prompt_n == 88
    assert rec.prompt_tokens_reported == 100 and not rec.prompt_mismatch
    assert rec.finish_reason == "limit"


def test_prompt_mismatch_is_reported() -> None:
    rec = feed(
        API_OPENAI_COMPLETIONS,
        [
            (0.1, {"choices": [{"text": "x", "index": 0, "finish_reason": None}]}),
            (0.2, {"choices": [{"text": "", "index": 0, "finish_reason": "length"}], "usage": {"prompt_tokens": 98}}),
            (0.21, b"[DONE]"),
        ],
        max_tokens=1,
    )
    assert rec.prompt_tokens_reported == 98 and rec.prompt_mismatch is True
    assert rec.output_tokens == 1 and rec.tpot_ms is None  # TPOT needs at least two tokens


def test_stream_cut_short_is_a_failure_not_a_result() -> None:
    rec = feed(API_COMPLETION, [(0.1, {"content": "a", "tokens": [5], "stop": False})])
    assert not rec.ok
    assert "final chunk" in (rec.error or "")


def test_error_event_in_stream_is_recorded() -> None:
    rec = feed(API_OPENAI_CHAT, [(0.1, {"error": {"message": "boom", "code": 500}})])
    assert not rec.ok and rec.error == "boom"


def test_percentiles_match_numpy_linear_interpolation() -> None:
    data = [1.0, 2.0, 3.0, 4.0, 10.0]
    assert percentile(data, 50) == 3.0
    assert percentile(data, 90) == pytest.approx(7.6)
    assert percentile(data, 99) == pytest.approx(9.76)
    assert percentile([5.0], 99) == 5.0
    dist = describe([None, 3.0, 1.0, 2.0])
    assert dist is not None and (dist.n, dist.mean, dist.min, dist.max, dist.p50) == (3, 2.0, 1.0, 3.0, 2.0)
    assert describe([]) is None


def _rec(index: int, ok: bool = True, **kw: Any) -> RequestRecord:
    base: Dict[str, Any] = dict(
        cell="c",
        index=index,
        api=API_COMPLETION,
        warmup=False,
        ok=ok,
        error=None if ok else "HTTP 500: boom",
        http_status=200 if ok else 500,
        prompt_tokens_requested=100,
        max_tokens=10,
        start_s=float(index),
        ttft_ms=100.0,
        e2e_ms=1000.0,
        output_tokens=10 if ok else None,
        prompt_tokens_reported=100 if ok else None,
        itl_ms=[100.0] * 9 if ok else [],
    )
    base.update(kw)
    return RequestRecord(**base)


def test_aggregate_counts_failures_and_computes_throughput() -> None:
    recs = [_rec(0), _rec(1), _rec(2, ok=False, e2e_ms=5.0), _rec(3, error=INTERRUPTED, ok=False, e2e_ms=10.0)]
    recs.append(_rec(9, warmup=True))  # warm-up requests never count
    summary = aggregate(recs, planned=5)
    req = summary.requests
    assert (req.sent, req.ok, req.failed, req.interrupted, req.not_sent) == (4, 2, 1, 1, 1)
    assert req.errors == [ErrorCount("HTTP 500: boom", 1)]
    tp = summary.throughput
    # From the first start (t=0) to the last byte of request 1 (t=1 + 1 s).
    assert tp.duration_s == pytest.approx(3.0 + 0.010)
    assert tp.gen_tokens == 20 and tp.prompt_tokens == 200
    assert tp.gen_tps == pytest.approx(20 / 3.01)
    itl, ttft = summary.latency["itl_ms"], summary.latency["ttft_ms"]
    assert itl is not None and itl.n == 18
    assert ttft is not None and ttft.p50 == 100.0
    warnings = warnings_for(summary, 10)
    assert any("1 request(s) failed" in w for w in warnings)
    assert any("interrupted" in w for w in warnings)


def test_cache_hits_and_early_stops_are_flagged() -> None:
    recs = [_rec(0, cache_n=64), _rec(1, output_tokens=7, stopped_early=True)]
    warnings = warnings_for(aggregate(recs), 10)
    assert any("cached prompt tokens" in w for w in warnings)
    assert any("fewer than 10 tokens" in w for w in warnings)


def test_relative_change() -> None:
    assert relative_change(100.0, 110.0) == pytest.approx(0.1)
    assert relative_change(0.0, 1.0) is None and relative_change(None, 1.0) is None
