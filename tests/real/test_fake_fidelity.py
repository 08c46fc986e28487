"""The fake llama-server must not drift from the real one: same requests, same response shapes.

A shape is the set of keys with their JSON types (numbers are one type: llama.cpp prints 0 for a float
that happens to be whole). Every key the real server sends must exist in the fake's answer with the same
type; large nested settings objects are compared at their top level only.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from tests.helpers import FAKE_SERVER, free_port, http, running_server

pytestmark = pytest.mark.real

SHALLOW = {"params", "generation_settings", "default_generation_settings", "next_token", "chat_template_caps"}


def kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if value is None:
        return "null"
    return type(value).__name__


def shape(value: Any, path: str = "$") -> Dict[str, str]:
    """Flatten into {json-path: type}; list items are merged under `[]`."""
    out = {path: kind(value)}
    if isinstance(value, dict) and path.rsplit(".", 1)[-1] not in SHALLOW:
        for key, item in value.items():
            out.update(shape(item, f"{path}.{key}"))
    elif isinstance(value, dict):
        for key, item in value.items():
            out[f"{path}.{key}"] = kind(item)
    elif isinstance(value, list) and value:
        for item in value[:3]:
            out.update(shape(item, f"{path}[]"))
    return out


def missing_in_fake(real: Any, fake: Any, ignore: Tuple[str, ...] = ()) -> List[str]:
    real_shape, fake_shape = shape(real), shape(fake)
    problems = []
    for key, typ in real_shape.items():
        if any(key.startswith(prefix) for prefix in ignore):
            continue
        if key not in fake_shape:
            problems.append(f"{key} missing")
        elif fake_shape[key] != typ and "null" not in (typ, fake_shape[key]):
            problems.append(f"{key}: real {typ}, fake {fake_shape[key]}")
    return problems


def sse_events(url: str, body: dict) -> Iterator[Any]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        for raw in resp:
            line = raw.decode().strip()
            if line.startswith("data: "):
                payload = line[len("data: ") :]
                yield payload if payload == "[DONE]" else json.loads(payload)


@pytest.fixture(scope="module")
def pair(real_server, real_model, real_threads):
    """(real base URL, fake base URL), both with 4096 context and metrics on."""
    real_port, fake_port = free_port(), free_port()
    common = ("-c", "4096", "--metrics", "-t", real_threads)
    with running_server(real_port, "-m", str(real_model), *common, binary=real_server):
        with running_server(fake_port, "-m", str(real_model), *common, binary=FAKE_SERVER):
            yield f"http://127.0.0.1:{real_port}", f"http://127.0.0.1:{fake_port}"


GETS = ["/health", "/v1/models", "/props", "/slots", "/does-not-exist"]
POSTS = [
    ("/tokenize", {"content": "hello world, this is a test"}),
    ("/tokenize", {"content": "hello world", "with_pieces": True}),
    ("/detokenize", {"tokens": [28120, 905]}),
    ("/apply-template", {"messages": [{"role": "user", "content": "hi"}]}),
    ("/completion", {"prompt": "Hello", "n_predict": 4, "cache_prompt": False}),
    ("/completion", {"prompt": list(range(1, 11)), "n_predict": 2}),
    ("/completion", {"prompt": list(range(1, 5001)), "n_predict": 2}),
    ("/v1/completions", {"prompt": "Hello", "max_tokens": 4}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}),
]


@pytest.mark.parametrize("path", GETS)
def test_get_endpoints_have_the_real_shape(pair, path):
    (real_status, real), (fake_status, fake) = (http("GET", base + path) for base in pair)
    assert fake_status == real_status
    ignore = ("$[].params", "$[].next_token", "$.default_generation_settings", "$.chat_template", "$.webui")
    assert missing_in_fake(real, fake, ignore) == []


@pytest.mark.parametrize("path,body", POSTS, ids=[f"{p}-{i}" for i, (p, _) in enumerate(POSTS)])
def test_post_endpoints_have_the_real_shape(pair, path, body):
    (real_status, real), (fake_status, fake) = (http("POST", base + path, body) for base in pair)
    assert fake_status == real_status, (real, fake)
    # Token ids and text differ (the fake has its own tokenizer); keys and types must not.
    assert missing_in_fake(real, fake, ("$.generation_settings",)) == []


def test_bad_json_and_api_key_errors_match(pair):
    real, fake = pair
    for base in pair:
        req = urllib.request.Request(base + "/completion", data=b"{not json", method="POST")
        try:
            urllib.request.urlopen(req, timeout=10)
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read())
            assert exc.code == 400 and body["error"]["type"] == "invalid_request_error"
        else:
            pytest.fail(f"{base} accepted bad JSON")


@pytest.mark.parametrize(
    "path,body",
    [
        ("/completion", {"prompt": "Hello", "n_predict": 3, "stream": True}),
        ("/v1/completions", {"prompt": "Hello", "max_tokens": 3, "stream": True}),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "stream": True}
            | {"stream_options": {"include_usage": True}},
        ),
    ],
)
def test_streaming_chunks_have_the_real_shape_and_order(pair, path, body):
    real_events, fake_events = (list(sse_events(base + path, body)) for base in pair)
    assert (real_events[-1] == "[DONE]") == (fake_events[-1] == "[DONE]")
    real_json = [e for e in real_events if e != "[DONE]"]
    fake_json = [e for e in fake_events if e != "[DONE]"]
    assert len(fake_json) == len(real_json)
    for real_chunk, fake_chunk in zip(real_json, fake_json):
        assert missing_in_fake(real_chunk, fake_chunk, ("$.generation_settings",)) == []


def test_metrics_have_the_real_names_types_and_help(pair):
    texts = []
    for base in pair:
        with urllib.request.urlopen(base + "/metrics", timeout=10) as resp:
            texts.append(resp.read().decode())
    real_meta, fake_meta = ([x for x in t.splitlines() if x.startswith("#")] for t in texts)
    assert fake_meta == real_meta
