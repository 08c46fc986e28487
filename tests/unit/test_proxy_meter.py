"""The proxy's metering: what one request used, read from the bytes that pass through.

llama.cpp's `timings` win over `usage`; `usage` counts when there are no timings (other servers), on the
final chunk with empty `choices` or on a chunk that still has choices; content chunks are counted live;
malformed input is skipped without losing what can still be read.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List

import pytest

from tools.llama_run.proxy.meter import RequestMeter
from tools.llama_run.proxy.records import (
    ClientTotals,
    Endpoint,
    IdentitySource,
    Outcome,
    RequestRecord,
    req_line,
)

TIMINGS = {
    "cache_n": 3,
    "prompt_n": 28,
    "prompt_ms": 14.0,
    "prompt_per_token_ms": 0.5,
    "prompt_per_second": 2000.0,
    "predicted_n": 4,
    "predicted_ms": 15.0,
    "predicted_per_token_ms": 5.0,
    "predicted_per_second": 200.0,
}
USAGE = {"completion_tokens": 4, "prompt_tokens": 31, "total_tokens": 35, "prompt_tokens_details": {"cached_tokens": 3}}
META = {"created": 1, "id": "chatcmpl-x", "model": "smol", "object": "chat.completion.chunk"}


def meter(endpoint: Endpoint = Endpoint.CHAT) -> RequestMeter:
    rec = RequestRecord(1, "me", IdentitySource.HEADER, endpoint, "POST", started_at=1000.0)
    return RequestMeter(rec, t0=10.0)


def sse(*events: Any) -> bytes:
    return b"".join(b"data: " + (e if isinstance(e, bytes) else json.dumps(e).encode()) + b"\n\n" for e in events)


def chat_delta(text: str) -> Dict[str, Any]:
    return {"choices": [{"finish_reason": None, "index": 0, "delta": {"content": text}}], **META}


def chat_stream(final_extra: Dict[str, Any], usage_chunk: Dict[str, Any] = {}) -> List[Any]:
    role = {"choices": [{"finish_reason": None, "index": 0, "delta": {"role": "assistant", "content": None}}], **META}
    finish = {"choices": [{"finish_reason": "length", "index": 0, "delta": {}}], **META, **final_extra}
    events: List[Any] = [role] + [chat_delta(w) for w in (" a", " b", " c", " d")] + [finish]
    if usage_chunk:
        events.append({"choices": [], **META, **usage_chunk})
    return events + [b"[DONE]"]


def test_a_streamed_chat_is_metered_from_llama_cpp_timings():
    m = meter()
    m.request({"model": "asked-for", "stream": True, "messages": []})
    m.response(200, "text/event-stream")
    for i, event in enumerate(chat_stream({"timings": TIMINGS})):
        m.feed(sse(event), 10.0 + 0.01 * (i + 1))
    rec = m.finish(10.2)
    assert rec.outcome is Outcome.OK and rec.stream
    assert (rec.prompt_tokens, rec.cached_tokens, rec.generated_tokens) == (31, 3, 4)  # prompt_n + cache_n
    assert rec.chunks == 4  # the role-only chunk carries no token
    assert rec.tokens_source == "timings" and rec.gen_tps == 200.0 and rec.prompt_tps == 2000.0
    assert rec.ttft_ms == pytest.approx(20.0) and rec.duration_ms == pytest.approx(200.0)
    assert rec.finish_reason == "length"
    assert rec.model == "smol"  # what the server says it ran beats what the client asked for


def test_timings_are_trusted_over_usage_when_both_come():
    m = meter()
    m.response(200, "text/event-stream")
    wrong = dict(USAGE, completion_tokens=99, prompt_tokens=99)
    m.feed(sse(*chat_stream({}, {"usage": wrong, "timings": TIMINGS})), 10.1)
    rec = m.finish(10.2)
    assert (rec.prompt_tokens, rec.generated_tokens, rec.tokens_source) == (31, 4, "timings")


def test_usage_on_the_final_chunk_with_empty_choices_counts_without_timings():
    m = meter()
    m.response(200, "text/event-stream")
    m.feed(sse(*chat_stream({}, {"usage": USAGE})), 10.1)
    rec = m.finish(10.2)
    assert (rec.prompt_tokens, rec.cached_tokens, rec.generated_tokens) == (31, 3, 4)
    assert rec.tokens_source == "usage" and rec.prompt_tps is None


def test_usage_on_a_chunk_that_still_has_choices_counts_too():
    m = meter(Endpoint.COMPLETIONS)
    m.response(200, "text/event-stream")
    tokens = [{"choices": [{"text": w, "index": 0, "finish_reason": None}], "model": "m"} for w in (" x", " y")]
    last = {"choices": [{"text": "", "index": 0, "finish_reason": "stop"}], "model": "m", "usage": USAGE}
    m.feed(sse(*tokens, last, b"[DONE]"), 10.1)
    rec = m.finish(10.2)
    assert (rec.chunks, rec.generated_tokens, rec.prompt_tokens, rec.finish_reason) == (2, 4, 31, "stop")


def test_llama_cpp_completion_stream_uses_its_stop_chunk():
    m = meter(Endpoint.COMPLETION)
    m.response(200, "text/event-stream")
    chunks = [
        {"index": 0, "content": w, "tokens": [7], "stop": False} for w in (" x", "", " z")
    ]  # "" = held-back UTF-8
    final = {"index": 0, "content": "", "tokens": [], "stop": True, "model": "m", "stop_type": "eos"}
    final |= {"tokens_predicted": 3, "tokens_evaluated": 5, "timings": dict(TIMINGS, predicted_n=3)}
    m.feed(sse(*chunks, final), 10.1)
    rec = m.finish(10.2)
    assert (rec.chunks, rec.generated_tokens, rec.finish_reason, rec.outcome) == (3, 3, "stop", Outcome.OK)


def test_a_json_answer_is_metered_when_it_is_complete():
    m = meter()
    m.request({"messages": [], "model": "asked"})
    m.response(200, "application/json; charset=utf-8")
    body = {"choices": [{"finish_reason": "stop", "index": 0, "message": {"content": "hi"}}], "usage": USAGE}
    raw = json.dumps(body | {"model": "smol", "timings": TIMINGS}).encode()
    m.feed(raw[:20], 10.1)
    m.feed(raw[20:], 10.2)
    rec = m.finish(10.3)
    assert (rec.generated_tokens, rec.prompt_tokens, rec.ttft_ms, rec.stream) == (4, 31, None, False)
    assert rec.outcome is Outcome.OK and rec.finish_reason == "stop"


def test_lines_split_across_reads_are_joined_and_live_counts_move():
    m = meter()
    m.response(200, "text/event-stream")
    data = sse(*chat_stream({"timings": TIMINGS}))
    for i in range(0, len(data), 7):  # every 7 bytes, cutting through lines and JSON
        m.feed(data[i : i + 7], 10.0 + i / 1e4)
        if i == 7 * 60:
            m.live(10.5)
            assert 0 < m.rec.generated_tokens < 4  # the UI sees tokens while the request runs
    rec = m.finish(11.0)
    assert (rec.chunks, rec.generated_tokens, rec.outcome) == (4, 4, Outcome.OK)


def test_malformed_chunks_are_skipped_and_the_rest_still_counts():
    m = meter()
    m.response(200, "text/event-stream")
    m.feed(b'data: {"choices":[{"delta":{"content":"x"}}]\n\n', 10.1)  # truncated JSON, but a content chunk
    m.feed(b"data: {not json at all\n\n: a comment\n\nevent: ping\n\n", 10.2)
    m.feed(b"data: [1, 2]\n\ndata: \n\n", 10.3)
    m.feed(sse(chat_delta(" y"), {"choices": [{"finish_reason": "stop", "delta": {}}], "usage": USAGE}), 10.4)
    m.feed(b"data: [DONE]\n\n", 10.5)
    rec = m.finish(10.6)
    assert (rec.chunks, rec.generated_tokens, rec.outcome) == (2, 4, Outcome.OK)


def test_json_written_with_spaces_is_still_understood():
    m = meter()
    m.response(200, "text/event-stream")
    events = [chat_delta(" a"), {"choices": [{"finish_reason": "stop", "delta": {}}], "usage": USAGE}]
    m.feed(b"".join(b"data: " + json.dumps(e, indent=None).encode() + b"\n\n" for e in events), 10.1)
    rec = m.finish(10.2)
    assert (rec.chunks, rec.finish_reason, rec.generated_tokens) == (1, "stop", 4)


def test_without_any_figures_the_counted_chunks_are_the_output():
    m = meter()
    m.response(200, "text/event-stream")
    m.feed(sse(chat_delta(" a"), chat_delta(" b"), b"[DONE]"), 10.1)
    rec = m.finish(10.2)
    assert (rec.generated_tokens, rec.tokens_source, rec.prompt_tokens) == (2, "counted", None)


def test_a_stream_that_ends_early_is_failed_and_an_error_status_is_an_error():
    m = meter()
    m.response(200, "text/event-stream")
    m.feed(sse(chat_delta(" a")), 10.1)
    rec = m.finish(10.2)
    assert rec.outcome is Outcome.FAILED and "final chunk" in (rec.error or "")

    m = meter()
    m.response(400, "application/json")
    m.feed(b'{"error":{"code":400,"message":"request (5000 tokens) exceeds","type":"exceed_context_size_error"}}', 10.1)
    rec = m.finish(10.2)
    assert rec.outcome is Outcome.ERROR and rec.status == 400
    assert rec.error_type == "exceed_context_size_error" and rec.error and rec.error.startswith("request")


def test_an_error_event_inside_a_stream_is_recorded():
    m = meter()
    m.response(200, "text/event-stream")
    m.feed(sse({"error": {"code": 500, "message": "boom", "type": "server_error"}}), 10.1)
    rec = m.finish(10.2)
    assert (rec.outcome, rec.error, rec.error_type) == (Outcome.ERROR, "boom", "server_error")


def test_generation_speed_is_derived_from_the_stream_when_the_server_gives_none():
    m = meter()
    m.response(200, "text/event-stream")
    for i in range(5):
        m.feed(sse(chat_delta(" w")), 10.0 + 0.1 * (i + 1))
    m.feed(sse({"choices": [{"finish_reason": "length", "delta": {}}]}, b"[DONE]"), 10.6)
    rec = m.finish(10.6)
    assert rec.gen_tps == pytest.approx(10.0)  # 4 gaps of 0.1 s after the first token


def test_records_round_trip_through_json_and_totals_add_up():
    rec = meter().finish(10.5, Outcome.ABORTED, "the client disconnected")
    rec.prompt_tokens, rec.generated_tokens = 10, 5
    back = RequestRecord.from_dict(json.loads(json.dumps(rec.to_dict())))
    assert back == rec and back.outcome is Outcome.ABORTED and back.endpoint is Endpoint.CHAT
    totals = ClientTotals("me")
    totals.add(rec)
    assert (totals.requests, totals.aborted, totals.prompt_tokens, totals.generated_tokens) == (1, 1, 10, 5)
    assert ClientTotals.from_dict(totals.to_dict()) == totals


def test_req_line_is_parseable_like_the_tok_lines():
    rec = RequestRecord(7, "my editor", IdentitySource.HEADER, Endpoint.CHAT, "POST", 1000.0, stream=True)
    rec.status, rec.outcome, rec.model = 200, Outcome.OK, "SmolLM2 135M"
    rec.prompt_tokens, rec.cached_tokens, rec.generated_tokens = 31, 0, 128
    rec.ttft_ms, rec.gen_tps, rec.duration_ms, rec.finish_reason = 45.25, 121.4, 1100.0, "length"
    line = req_line(rec)
    assert line == (
        "[req] my_editor /v1/chat/completions 200: p_tok 31 c_tok 0 g_tok 128 ttft_ms 45.2 g_tok/s 121.40 "
        "dur_s 1.10 finish length outcome ok model SmolLM2_135M"
    )
    head, fields = line.split(": ", 1)
    words = fields.split()
    assert dict(zip(words[::2], words[1::2]))["g_tok"] == "128"
