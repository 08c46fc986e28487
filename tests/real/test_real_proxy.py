"""`llama-run run --proxy on` against the real llama-server: chat and completion requests, streamed and
not, go through the proxy, and the proxy meters exactly the token counts llama-server reports."""

from __future__ import annotations

import json
import re
import urllib.request
from typing import Any, Dict, List, Tuple

import pytest

from tests.helpers import LLAMA_RUN, LiveOutput, free_port, http, spawn_cli, wait_until

pytestmark = pytest.mark.real


def sse_events(port: int, path: str, body: Dict[str, Any]) -> List[Dict[str, Any]]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    events = []
    with urllib.request.urlopen(req, timeout=120) as resp:
        for raw in resp:
            line = raw.decode().strip()
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line[6:]))
    return events


def reported(kind: str, answer: Any) -> Tuple[int, int]:
    """(prompt tokens, generated tokens) as llama-server reported them in its own answer."""
    if kind == "stream":
        timings = next(e["timings"] for e in reversed(answer) if e.get("timings"))
    else:
        timings = answer["timings"]
    return timings["prompt_n"] + timings.get("cache_n", 0), timings["predicted_n"]


def test_the_proxy_meters_what_llama_server_reports(real_server, real_model, real_threads):
    port = free_port()
    args = ["run", "--llama-server", str(real_server), "--model", str(real_model), "--port", str(port),
            "-t", real_threads, "-c", "2048", "--allow-multi-server", "--proxy", "on", "--ui", "plain",
            "--interval", "0.5", "--stats-interval", "1"]  # fmt: skip
    live = LiveOutput(spawn_cli(LLAMA_RUN, *args))
    expected = []
    try:
        assert live.wait_for("ready at", 120), live.text()
        chat = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}
        completion = {"prompt": "The capital of France is", "n_predict": 12, "cache_prompt": False}
        for path, body in (("/v1/chat/completions", chat), ("/completion", completion)):
            status, answer = http("POST", f"http://127.0.0.1:{port}{path}", body, timeout=120)
            assert status == 200, answer
            expected.append((path, reported("json", answer)))
            events = sse_events(port, path, {**body, "stream": True})
            expected.append((path, reported("stream", events)))
        assert wait_until(lambda: len(live.matching("[req]")) == 4, 30), live.text()
        status, snap = http("GET", f"http://127.0.0.1:{port}/proxy/requests")
        assert status == 200
        live.interrupt()
        assert live.finish(60) == 0, live.text()
    finally:
        live.kill_group()
    metered = sorted((r["endpoint"], (r["prompt_tokens"], r["generated_tokens"])) for r in snap["recent"])
    assert metered == sorted(expected)
    for line in live.matching("[req]"):
        assert re.match(r"^\[req\] \S+ /\S+ 200: p_tok \d+ c_tok \d+ g_tok \d+ ", line), line
