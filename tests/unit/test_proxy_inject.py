"""The invisible include_usage: which requests get it, how the body changes, and how exactly the extra usage
chunk comes out of the stream again (byte for byte, however the network cuts the stream)."""

from __future__ import annotations

import json

import pytest

from tools.llama_run.proxy.config import InjectMode
from tools.llama_run.proxy.inject import UsageStripper, inject_body, is_usage_chunk, raw_member, wants_injection
from tools.llama_run.proxy.records import Endpoint

STREAM = {"stream": True, "messages": [{"role": "user", "content": "hi"}]}
# What llama.cpp sends for one streamed chat, without and with include_usage (timings move to the usage chunk).
ROLE = b'data: {"choices":[{"finish_reason":null,"index":0,"delta":{"role":"assistant","content":null}}],"id":"c"}\n\n'
TOKEN = b'data: {"choices":[{"finish_reason":null,"index":0,"delta":{"content":" hi"}}],"id":"c"}\n\n'
FINISH = b'{"choices":[{"finish_reason":"length","index":0,"delta":{}}],"id":"c"'
TIMINGS = b'{"cache_n":0,"prompt_n":31,"prompt_ms":15.5,"predicted_per_second":199.99999999563443}'
USAGE = b'{"completion_tokens":1,"prompt_tokens":31,"total_tokens":32,"prompt_tokens_details":{"cached_tokens":0}}'
DONE = b"data: [DONE]\n\n"
DIRECT = ROLE + TOKEN + b"data: " + FINISH + b',"timings":' + TIMINGS + b"}\n\n" + DONE
WITH_USAGE = (
    ROLE + TOKEN + b"data: " + FINISH + b"}\n\n"
    + b'data: {"choices":[],"id":"c","usage":' + USAGE + b',"timings":' + TIMINGS + b"}\n\n" + DONE
)  # fmt: skip


@pytest.mark.parametrize(
    "mode, endpoint, body, upstream_is_llama, expected",
    [
        (InjectMode.AUTO, Endpoint.CHAT, STREAM, True, False),  # llama.cpp reports timings anyway
        (InjectMode.AUTO, Endpoint.CHAT, STREAM, False, True),
        (InjectMode.AUTO, Endpoint.COMPLETIONS, STREAM, False, True),
        (InjectMode.ALWAYS, Endpoint.CHAT, STREAM, True, True),
        (InjectMode.ALWAYS, Endpoint.COMPLETION, STREAM, True, False),  # llama.cpp's own API has no such option
        (InjectMode.NEVER, Endpoint.CHAT, STREAM, False, False),
        (InjectMode.ALWAYS, Endpoint.CHAT, {"messages": []}, True, False),  # not streaming
        (InjectMode.ALWAYS, Endpoint.CHAT, STREAM | {"stream_options": {"include_usage": True}}, True, False),
        (InjectMode.ALWAYS, Endpoint.CHAT, STREAM | {"stream_options": {"include_usage": False}}, True, True),
        (InjectMode.ALWAYS, Endpoint.CHAT, None, True, False),  # not JSON: forwarded untouched
    ],
)
def test_which_requests_get_include_usage(mode, endpoint, body, upstream_is_llama, expected):
    assert wants_injection(mode, endpoint, body, upstream_is_llama) is expected


def test_the_body_keeps_the_clients_bytes_and_gains_the_option():
    raw = b'  {"stream": true,\n "messages": [{"role":"user","content":"h\\u00e9"}]}'
    out = inject_body(raw, json.loads(raw))
    assert out == b'  {"stream_options":{"include_usage":true},' + raw[3:]
    assert json.loads(out)["stream_options"] == {"include_usage": True}


def test_an_existing_stream_options_keeps_its_other_settings():
    body = STREAM | {"stream_options": {"include_usage": False, "continuous_usage_stats": True}}
    out = json.loads(inject_body(json.dumps(body).encode(), body))
    assert out["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}
    assert out["messages"] == STREAM["messages"]


def test_only_the_usage_chunk_with_empty_choices_is_recognised():
    assert is_usage_chunk(b' {"choices":[],"usage":{"prompt_tokens":1}}')
    assert not is_usage_chunk(b' {"choices":[{"text":"","finish_reason":"stop"}],"usage":{"prompt_tokens":1}}')
    assert not is_usage_chunk(b' {"choices":[],"usage":null}')
    assert not is_usage_chunk(b' {"choices":[],"usage":{"x":1}')  # cut off: not judged, passed on


def test_raw_member_returns_the_bytes_as_written():
    payload = b'{"a":{"s":"}{\\"x"},"timings":{"n":1.50,"m":{"k":2}},"z":1}'
    assert raw_member(payload, b"timings") == b'{"n":1.50,"m":{"k":2}}'
    assert raw_member(payload, b"a") == b'{"s":"}{\\"x"}'
    assert raw_member(payload, b"missing") is None


def run(stripper: UsageStripper, data: bytes, step: int) -> bytes:
    out = [stripper.feed(data[i : i + step]) for i in range(0, len(data), step)]
    return b"".join(out) + stripper.flush()


@pytest.mark.parametrize("step", [1, 2, 3, 7, 50, 10_000])
def test_llama_cpp_stream_with_usage_becomes_exactly_the_direct_stream(step):
    stripper = UsageStripper(restore_timings=True)
    assert run(stripper, WITH_USAGE, step) == DIRECT
    assert stripper.stripped


@pytest.mark.parametrize("step", [1, 5, 10_000])
def test_an_openai_style_stream_loses_only_the_usage_event(step):
    finish = b"data: " + FINISH + b"}\n\n"
    usage = b'data: {"choices":[],"id":"c","usage":' + USAGE + b"}\n\n"
    stripper = UsageStripper(restore_timings=False)
    assert run(stripper, ROLE + TOKEN + finish + usage + DONE, step) == ROLE + TOKEN + finish + DONE


def test_crlf_line_ends_and_other_sse_fields_pass_unchanged():
    data = b": ping\r\n\r\nevent: message\r\ndata: " + FINISH + b"}\r\n\r\n"
    data += b'data: {"choices":[],"usage":' + USAGE + b"}\r\n\r\ndata: [DONE]\r\n\r\n"
    expected = b": ping\r\n\r\nevent: message\r\ndata: " + FINISH + b"}\r\n\r\ndata: [DONE]\r\n\r\n"
    assert run(UsageStripper(restore_timings=False), data, 4) == expected


def test_nothing_is_held_back_while_tokens_stream():
    stripper = UsageStripper(restore_timings=True)
    assert stripper.feed(ROLE) == ROLE
    assert stripper.feed(TOKEN) == TOKEN  # each complete event leaves at once
    assert stripper.feed(TOKEN[:10]) == b""  # only a line cut in two waits for its end
    assert stripper.feed(TOKEN[10:]) == TOKEN


def test_a_stream_without_a_usage_chunk_is_passed_unchanged():
    for restore in (True, False):
        assert run(UsageStripper(restore_timings=restore), DIRECT, 3) == DIRECT
    broken = ROLE + TOKEN + b"data: " + FINISH + b"}\n\n"  # the upstream stopped after the finish chunk
    assert run(UsageStripper(restore_timings=True), broken, 5) == broken
