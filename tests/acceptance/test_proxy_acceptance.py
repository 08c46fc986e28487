"""The token-meter proxy as a process (ManagedProxy, `python -m tools.llama_run.proxy`) in front of the fake
llama-server: transparent to the byte, metered per client, safe by default, and never left behind.

A tap (a TCP relay that keeps every byte) sits between the proxy and the fake where a test must see what
went upstream and what came back, so that "byte for byte" is checked against the server's own bytes.
Every process here is started by the test; ports are free ones, state directories private.
"""

from __future__ import annotations

from http import client as httpclient
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from tests.helpers import REPO, free_port, http, pid_alive, running_server, wait_until
from tools.llama_bench.utils import UserError
from tools.llama_run.proxy.client import ProxyReader
from tools.llama_run.proxy.config import InjectMode, ProxyConfig
from tools.llama_run.proxy.process import ManagedProxy
from tools.llama_run.proxy.records import Outcome

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}

# -- the tap ------------------------------------------------------------------------------------------


@dataclass
class Message:
    start: str  # request line or status line
    headers: Dict[str, str]
    body: bytes  # de-chunked


def parse_messages(data: bytes, responses: bool) -> List[Message]:
    """The HTTP/1.1 messages in one direction of a connection (100 Continue skipped)."""
    out, i = [], 0
    while True:
        end = data.find(b"\r\n\r\n", i)
        if end < 0:
            return out
        lines = data[i:end].decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        i = end + 4
        if lines[0].startswith("HTTP/1.1 100"):
            continue
        body = b""
        if "chunked" in headers.get("transfer-encoding", ""):
            while True:
                nl = data.find(b"\r\n", i)
                if nl < 0:
                    return out + [Message(lines[0], headers, body)]
                size = int(data[i:nl].split(b";")[0], 16)
                body += data[nl + 2 : nl + 2 + size]
                i = nl + 2 + size + 2
                if size == 0:
                    break
        elif "content-length" in headers:
            n = int(headers["content-length"])
            body, i = data[i : i + n], i + n
        elif responses:
            body, i = data[i:], len(data)
        out.append(Message(lines[0], headers, body))


class Tap:
    """A TCP relay to `port` that keeps every byte in both directions, per connection."""

    def __init__(self, port: int) -> None:
        self.upstream = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns: List[Tuple[bytearray, bytearray]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            up, down = bytearray(), bytearray()
            with self.lock:
                self.conns.append((up, down))
            threading.Thread(target=self._pump, args=(client, server, up), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, down), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, buf: bytearray) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self.lock:
                    buf += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
                try:
                    s.shutdown(how)
                except OSError:
                    pass

    def exchange(self, marker: bytes) -> Tuple[Message, Message]:
        """The (request, response) that went upstream for the request whose body holds `marker`."""
        with self.lock:
            conns = [(bytes(u), bytes(d)) for u, d in self.conns]
        for up, down in conns:
            for req, resp in zip(parse_messages(up, False), parse_messages(down, True)):
                if marker in req.body:
                    return req, resp
        raise AssertionError(f"no upstream exchange with {marker!r}")

    def close(self) -> None:
        self.sock.close()


# -- processes --------------------------------------------------------------------------------------


@dataclass
class Fake:
    port: int
    log: Path
    base: str = ""
    proc: Any = None

    def __post_init__(self) -> None:
        self.base = f"http://127.0.0.1:{self.port}"


@contextmanager
def fake_server(tmp: Path, *flags: str) -> Iterator[Fake]:
    port = free_port()
    log = tmp / f"fake-{port}.log"
    args = ("--metrics", "-np", "4", "--token-interval-ms", "2", "--log-file", str(log)) + flags
    with running_server(port, *args) as proc:
        fake = Fake(port, log)
        fake.proc = proc
        yield fake


@contextmanager
def started_proxy(tmp: Path, upstream: str, **changes: Any) -> Iterator[ManagedProxy]:
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cfg = ProxyConfig(upstream=upstream, port=port, db_path=tmp / "usage.sqlite3", log_requests=True)
    proxy = ManagedProxy(replace(cfg, **changes), log_path=tmp / f"proxy-{port}.log")
    proxy.start()
    try:
        proxy.wait_ready(30)
        yield proxy
    finally:
        proxy.stop()


@dataclass
class Answer:
    status: int
    headers: Dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    base: str, method: str, path: str, body: Optional[Any] = None, headers: Optional[Dict[str, str]] = None
) -> Answer:
    host, port = base.rsplit("/", 1)[-1].split(":")
    conn = httpclient.HTTPConnection(host, int(port), timeout=30)
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    resp = conn.getresponse()
    answer = Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    conn.close()
    return answer


def requests_of(proxy: ManagedProxy, key: Optional[str] = None) -> Any:
    key = key or proxy.config.api_key
    status, data = http("GET", proxy.base_url + "/proxy/requests?recent=500", headers=_auth(key))
    assert status == 200
    return data


def _auth(key: Optional[str]) -> Dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def finished(proxy: ManagedProxy, n: int) -> List[Dict[str, Any]]:
    """The last n finished requests, oldest first, once they are all in."""
    assert wait_until(lambda: len(requests_of(proxy)["recent"]) >= n, 10)
    return list(reversed(requests_of(proxy)["recent"][:n]))


def body_for(path: str, marker: str, stream: bool, tokens: int = 6) -> Dict[str, Any]:
    if path == "/v1/chat/completions":
        body: Dict[str, Any] = {"messages": [{"role": "user", "content": marker}], "max_tokens": tokens}
    elif path == "/v1/completions":
        body = {"prompt": marker, "max_tokens": tokens}
    else:
        body = {"prompt": marker, "n_predict": tokens}
    return body | {"stream": stream, "cache_prompt": False}


def normalized(body: bytes) -> bytes:
    """What differs between two runs of the same request: ids, clocks, slots, measured times."""
    body = re.sub(rb'"id":"chatcmpl-[A-Za-z0-9]+"', b'"id":"-"', body)
    body = re.sub(rb'"created":\d+', b'"created":0', body)
    body = re.sub(rb'"id_slot":-?\d+', b'"id_slot":0', body)
    return re.sub(rb'"timings":\{[^}]*\}', b'"timings":{}', body)


# -- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Tuple[Fake, Tap, ManagedProxy, ManagedProxy]]:
    """One fake, a tap in front of it, a default proxy and one that always injects include_usage."""
    tmp = tmp_path_factory.mktemp("proxy")
    with fake_server(tmp) as fake:
        tap = Tap(fake.port)
        upstream = f"http://127.0.0.1:{tap.port}"
        with (
            started_proxy(tmp / "a", upstream) as plain,
            started_proxy(tmp / "b", upstream, inject_usage=InjectMode.ALWAYS) as injecting,
        ):
            yield fake, tap, plain, injecting
        tap.close()


PATHS = ["/v1/chat/completions", "/v1/completions", "/completion"]


# -- transparency -----------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("path", PATHS)
def test_answers_pass_through_byte_for_byte(stack, path, stream):
    fake, tap, proxy, _ = stack
    marker = f"passthrough {uuid.uuid4().hex}"
    answer = call(proxy.base_url, "POST", path + "?trace=1", body_for(path, marker, stream))
    sent, got = tap.exchange(marker.encode())
    assert answer.status == 200 and got.start == "HTTP/1.1 200 OK"
    assert answer.body == got.body  # exactly the server's bytes
    assert sent.start == f"POST {path}?trace=1 HTTP/1.1"  # path and query as the client sent them
    assert json.loads(sent.body) == body_for(path, marker, stream)  # not injected: llama.cpp reports timings
    for name, value in got.headers.items():
        if name not in HOP_BY_HOP:
            assert answer.headers.get(name) == value, name
    assert "keep-alive" not in answer.headers  # the server's connection settings are not the client's
    direct = call(fake.base, "POST", path, body_for(path, marker, stream))
    assert normalized(answer.body) == normalized(direct.body)
    if stream:
        assert answer.headers["content-type"] == "text/event-stream"
        assert answer.body.count(b"data: ") >= 6


def test_the_other_endpoints_pass_through_unchanged(stack):
    fake, _, proxy, _ = stack
    for method, path, body in [
        ("GET", "/health", None),
        ("GET", "/v1/models", None),
        ("GET", "/props", None),
        ("POST", "/tokenize", {"content": "hello world, this is a test"}),
        ("POST", "/detokenize", {"tokens": [1, 2, 3]}),
        ("GET", "/no/such/path?x=1", None),
        ("POST", "/completion", b"{not json"),  # the upstream's own 400, forwarded as it is
        ("OPTIONS", "/v1/chat/completions", None),
    ]:
        direct, proxied = call(fake.base, method, path, body), call(proxy.base_url, method, path, body)
        assert (proxied.status, proxied.body) == (direct.status, direct.body), path
    metrics = call(proxy.base_url, "GET", "/metrics")
    assert metrics.status == 200 and b"llamacpp:prompt_tokens_total" in metrics.body
    slots = call(proxy.base_url, "GET", "/slots")
    assert slots.status == 200 and isinstance(slots.json(), list)


def test_usage_injected_upstream_is_invisible_to_the_client(stack):
    fake, tap, _, injecting = stack
    path, marker = "/v1/chat/completions", f"inject {uuid.uuid4().hex}"
    answer = call(injecting.base_url, "POST", path, body_for(path, marker, True))
    sent, got = tap.exchange(marker.encode())
    assert json.loads(sent.body)["stream_options"] == {"include_usage": True}  # asked upstream ...
    usage_event = re.search(rb'data: \{"choices":\[\],.*"usage".*\n\n', got.body)
    assert usage_event is not None  # ... the server sent the usage chunk ...
    assert b'"usage"' not in answer.body  # ... and the client never saw it
    # Byte for byte what llama.cpp sends without usage: its timings back on the finish chunk.
    timings = re.search(rb'"timings":\{[^}]*\}', usage_event.group(0))
    assert timings is not None
    expected = got.body.replace(usage_event.group(0), b"")
    finish = re.search(rb'data: (\{"choices":\[\{"finish_reason":"length".*?)\}\n\n', expected)
    assert finish is not None
    expected = expected.replace(finish.group(0), b"data: " + finish.group(1) + b"," + timings.group(0) + b"}\n\n")
    assert answer.body == expected
    direct = call(fake.base, "POST", path, body_for(path, marker, True))
    assert normalized(answer.body) == normalized(direct.body)
    rec = finished(injecting, 1)[0]
    assert rec["usage_injected"] and rec["prompt_tokens"] is not None and rec["generated_tokens"] == 6


@pytest.mark.parametrize("path", ["/v1/completions", "/completion"])
def test_injection_leaves_the_other_apis_as_they_are(stack, path):
    fake, tap, _, injecting = stack
    marker = f"inject-other {uuid.uuid4().hex}"
    answer = call(injecting.base_url, "POST", path, body_for(path, marker, True))
    sent, got = tap.exchange(marker.encode())
    assert answer.body == got.body  # llama.cpp always puts usage on the last /v1/completions chunk
    assert ("stream_options" in json.loads(sent.body)) == (path == "/v1/completions")


# -- metering ---------------------------------------------------------------------------------------


def test_requests_are_metered_from_the_servers_timings(stack):
    _, _, proxy, _ = stack
    before = len(requests_of(proxy)["recent"])
    chat = body_for("/v1/chat/completions", "hi", True, tokens=5)
    call(proxy.base_url, "POST", "/v1/chat/completions", chat, {"X-Client-Name": "meter-test"})
    call(
        proxy.base_url, "POST", "/completion", {"prompt": [1, 2, 3, 4], "n_predict": 3}, {"X-Client-Name": "meter-test"}
    )
    assert wait_until(lambda: len(requests_of(proxy)["recent"]) >= before + 2, 10)
    chat_rec, completion_rec = finished(proxy, 2)
    assert (chat_rec["client"], chat_rec["identity"], chat_rec["endpoint"]) == (
        "meter-test",
        "header",
        "/v1/chat/completions",
    )
    assert (chat_rec["prompt_tokens"], chat_rec["generated_tokens"], chat_rec["chunks"]) == (31, 5, 5)
    assert chat_rec["tokens_source"] == "timings" and chat_rec["finish_reason"] == "length"
    assert chat_rec["ttft_ms"] > 0 and chat_rec["gen_tps"] > 0 and chat_rec["outcome"] == "ok"
    assert (completion_rec["prompt_tokens"], completion_rec["generated_tokens"], completion_rec["stream"]) == (
        4,
        3,
        False,
    )
    metrics = call(proxy.base_url, "GET", "/proxy/metrics").body.decode()
    assert re.search(r'llama_proxy_tokens_total\{client="meter-test",.*type="generated"\} 8\.0', metrics) is None
    labels = 'client="meter-test",endpoint="/v1/chat/completions",model="fake-model"'
    assert f'llama_proxy_tokens_total{{{labels},type="generated"}} 5.0' in metrics
    assert f'llama_proxy_requests_total{{{labels},status="200"}} 1.0' in metrics
    assert "llama_proxy_ttft_seconds_bucket" in metrics and "llama_proxy_requests_in_flight" in metrics
    reader = ProxyReader(proxy.base_url)
    try:
        snap = reader.fetch(recent=10)
        assert snap is not None and snap.upstream.startswith("http://127.0.0.1:")
        assert snap.recent[1].endpoint == "/v1/chat/completions" and snap.recent[1].outcome is Outcome.OK
        totals = {t.client: t for t in snap.clients}["meter-test"]
        assert (totals.requests, totals.prompt_tokens, totals.generated_tokens) == (2, 35, 8)
        assert [r.seq for r in reader.newly_finished(snap)] == sorted(r.seq for r in snap.recent)
        assert reader.newly_finished(snap) == []
    finally:
        reader.close()


class OpenAIish(BaseHTTPRequestHandler):
    """A server that is not llama.cpp: no timings; usage only in the extra chunk include_usage asks for."""

    protocol_version = "HTTP/1.0"
    seen: List[Dict[str, Any]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        OpenAIish.seen.append(body)
        meta = '"id":"x","object":"chat.completion.chunk","created":1,"model":"other"'
        events = [
            f'{{"choices":[{{"index":0,"delta":{{"content":" w{i}"}},"finish_reason":null}}],{meta}}}' for i in range(3)
        ]
        events.append(f'{{"choices":[{{"index":0,"delta":{{}},"finish_reason":"stop"}}],{meta}}}')
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(
                f'{{"choices":[],{meta},"usage":{{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}}}'
            )
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for e in events + ["[DONE]"]:
            self.wfile.write(f"data: {e}\n\n".encode())
            self.wfile.flush()


def test_a_server_that_is_not_llama_cpp_is_metered_from_usage_it_was_asked_for(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), OpenAIish)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        upstream = f"http://127.0.0.1:{server.server_address[1]}"
        with started_proxy(tmp_path, upstream) as proxy:
            body = {"model": "other", "messages": [{"role": "user", "content": "x"}], "stream": True}
            # The proxy learns at start-up that this is not llama.cpp (its /health answer): auto injects.
            answer = call(proxy.base_url, "POST", "/v1/chat/completions", body)
            OpenAIish.seen.clear()
            direct = call(upstream, "POST", "/v1/chat/completions", body)
            assert answer.body == direct.body and b"usage" not in answer.body
            rec = finished(proxy, 1)[0]
            assert (rec["prompt_tokens"], rec["generated_tokens"], rec["tokens_source"]) == (9, 3, "usage")
            assert rec["usage_injected"] and rec["model"] == "other" and rec["finish_reason"] == "stop"
    finally:
        server.shutdown()


def test_concurrent_clients_are_metered_separately(stack):
    _, _, proxy, _ = stack
    names = [f"client-{i}" for i in range(4)]
    errors: List[BaseException] = []

    def work(name: str, n: int) -> None:
        try:
            for _ in range(n):
                body = body_for("/completion", f"{name} story", True, tokens=10)
                assert call(proxy.base_url, "POST", "/completion", body, {"X-Client-Name": name}).status == 200
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(name, i + 1)) for i, name in enumerate(names)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    totals = {c["client"]: c for c in requests_of(proxy)["clients"]}
    for i, name in enumerate(names):
        assert (totals[name]["requests"], totals[name]["generated_tokens"], totals[name]["in_flight"]) == (
            i + 1,
            10 * (i + 1),
            0,
        )
        assert totals[name]["prompt_tokens"] == 4 * (i + 1)  # "client-N story": client, -, N, story


# -- failures ---------------------------------------------------------------------------------------


def test_a_client_that_hangs_up_frees_the_upstream_slot(tmp_path):
    with fake_server(tmp_path, "--token-interval-ms", "5") as fake, started_proxy(tmp_path, fake.base) as proxy:
        conn = httpclient.HTTPConnection("127.0.0.1", proxy.config.port, timeout=30)
        body = {"prompt": "a very long story", "n_predict": 100000, "stream": True}
        conn.request("POST", "/completion", body=json.dumps(body), headers={"X-Client-Name": "quitter"})
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read(600)  # a few tokens arrived
        assert any(s["is_processing"] for s in http("GET", fake.base + "/slots")[1])
        conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()
        # llama-server stops generating at once and says so; the slot is free for the next request.
        assert wait_until(lambda: "cancel task, id_task = " in fake.log.read_text(encoding="utf-8"), 10)
        assert wait_until(lambda: not any(s["is_processing"] for s in http("GET", fake.base + "/slots")[1]), 10)
        rec = finished(proxy, 1)[0]
        assert (rec["client"], rec["outcome"], rec["error_type"]) == ("quitter", "aborted", "client_disconnected")
        assert 0 < rec["generated_tokens"] < 100000 and rec["chunks"] == rec["generated_tokens"]


def test_an_upstream_that_is_down_answers_503_at_once(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    with started_proxy(tmp_path, dead) as proxy:
        for path, stream in (("/v1/chat/completions", True), ("/completion", False), ("/health", False)):
            started = time.monotonic()
            answer = call(proxy.base_url, "POST" if path != "/health" else "GET", path, body_for(path, "x", stream))
            assert time.monotonic() - started < 10  # never a hang
            assert answer.status == 503 and answer.headers["retry-after"] == "1"
            err = answer.json()["error"]
            assert err["type"] == "upstream_unreachable" and err["code"] == 503 and dead in err["message"]
        rec = finished(proxy, 2)[-1]
        assert (rec["outcome"], rec["status"], rec["error_type"]) == ("error", 503, "upstream_unreachable")


def test_an_upstream_that_stalls_is_cut_off_after_the_read_timeout(tmp_path):
    with (
        fake_server(tmp_path, "--hang-after", "0") as fake,
        started_proxy(tmp_path, fake.base, read_timeout=1.0) as proxy,
    ):
        answer = call(proxy.base_url, "POST", "/completion", {"prompt": "x", "n_predict": 4})
        assert answer.status == 504 and answer.json()["error"]["type"] == "upstream_timeout"
        conn = httpclient.HTTPConnection("127.0.0.1", proxy.config.port, timeout=30)
        conn.request("POST", "/completion", body=json.dumps({"prompt": "x", "n_predict": 40, "stream": True}))
        resp = conn.getresponse()
        assert resp.status == 200
        with pytest.raises(httpclient.IncompleteRead):  # cut off, as the client would see it directly
            resp.read()
        conn.close()
        rec = finished(proxy, 1)[0]
        assert (rec["outcome"], rec["error_type"]) == ("failed", "upstream_failed") and rec["chunks"] == 20


def test_bodies_beyond_max_body_are_refused_and_large_ones_stream_through(tmp_path):
    with fake_server(tmp_path) as fake:
        with started_proxy(tmp_path, fake.base, max_body=64 * 1024) as proxy:
            big = {"prompt": "word " * 20000, "n_predict": 1}
            for path in ("/completion", "/tokenize"):
                answer = call(proxy.base_url, "POST", path, big)
                assert answer.status == 413 and answer.json()["error"]["type"] == "request_too_large"
            for path in ("/completion", "/tokenize"):  # metered (read whole) and passed through (streamed)
                sock = socket.create_connection(("127.0.0.1", proxy.config.port), timeout=10)
                sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
                chunk = b"x" * 32768
                try:
                    for _ in range(4):
                        sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                except OSError:
                    pass  # the proxy may close before the rest is sent
                assert sock.recv(65536).startswith(b"HTTP/1.1 413 "), path
                sock.close()
            small = b'{"content":"hello world"}'
            sock = socket.create_connection(("127.0.0.1", proxy.config.port), timeout=10)
            sock.sendall(b"POST /tokenize HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            sock.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(small), small))
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")  # a chunked upload streams through
            sock.close()
        with started_proxy(tmp_path, fake.base) as proxy:  # default --max-body: a 128k-token prompt fits
            prompt = " ".join(["tok"] * 130_000)
            answer = call(proxy.base_url, "POST", "/completion", {"prompt": prompt, "n_predict": 1})
            assert answer.status == 400 and b"exceeds the available context size" in answer.body
            rec = finished(proxy, 1)[0]
            assert (rec["outcome"], rec["error_type"]) == ("error", "exceed_context_size_error")


def test_slow_clients_are_cut_off_after_the_client_timeout(tmp_path):
    with fake_server(tmp_path, "--token-interval-ms", "0", "-c", "1000000") as fake:  # more than any buffer holds
        with started_proxy(tmp_path, fake.base, client_timeout=1.0) as proxy:
            port = proxy.config.port
            # A request head that never ends (slowloris): the connection is closed.
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(b"POST /completion HTTP/1.1\r\nHost: x\r\n")
                assert sock.recv(100) == b""
            # A body that stops half-way: 408.
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(b"POST /completion HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
                assert sock.recv(100).startswith(b"HTTP/1.1 408 ")
            # A client that stops reading a stream: given up, and the generation stops.
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            body = json.dumps({"prompt": "x", "n_predict": 10_000_000, "stream": True}).encode()
            head = f"POST /completion HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
            sock.sendall(head.encode() + body)
            try:
                assert wait_until(
                    lambda: any(r["error_type"] == "client_stalled" for r in requests_of(proxy)["recent"]), 30
                )
                assert wait_until(lambda: "cancel task" in fake.log.read_text(encoding="utf-8"), 10)
            finally:
                sock.close()


def raw_exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        out = b""
        while b"\r\n\r\n" not in out:
            part = sock.recv(65536)
            if not part:
                break
            out += part
        return out


def test_it_is_no_open_relay(stack):
    _, tap, proxy, _ = stack
    with tap.lock:
        before = sum(len(u) for u, _ in tap.conns)
    absolute = raw_exchange(proxy.config.port, b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert absolute.startswith(b"HTTP/1.1 400 ")
    connect = raw_exchange(proxy.config.port, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    assert connect.startswith(b"HTTP/1.1 405 ")
    with tap.lock:
        assert sum(len(u) for u, _ in tap.conns) == before  # nothing of that went anywhere
    marker = uuid.uuid4().hex
    answer = raw_exchange(proxy.config.port, f"GET //evil.example/{marker} HTTP/1.1\r\nHost: evil\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 404 ")  # a path on the upstream, nothing else
    with tap.lock:
        assert any(f"GET //evil.example/{marker} HTTP/1.1".encode() in bytes(u) for u, _ in tap.conns)


def test_the_proxys_own_key_guards_everything_but_health(tmp_path):
    clients = tmp_path / "clients.json"
    clients.write_text(json.dumps({"clients": {"editor": {"key": "sk-editor"}}}), encoding="utf-8")
    config = {"api_key": "sekrit", "clients_file": clients}
    with fake_server(tmp_path) as fake, started_proxy(tmp_path, fake.base, **config) as proxy:
        assert call(proxy.base_url, "GET", "/health").status == 200
        assert call(proxy.base_url, "GET", "/proxy/health").status == 200
        for path in ("/v1/models", "/proxy/requests", "/proxy/metrics"):
            refused = call(proxy.base_url, "GET", path)
            assert refused.status == 401 and refused.json()["error"]["type"] == "authentication_error"
            assert call(proxy.base_url, "GET", path, headers={"Authorization": "Bearer nope"}).status == 401
            assert call(proxy.base_url, "GET", path, headers={"Authorization": "Bearer sekrit"}).status == 200
        assert call(proxy.base_url, "GET", "/v1/models", headers={"X-Api-Key": "sekrit"}).status == 200
        # A client of --clients comes in with its own key, and is known by it.
        body = {"prompt": "mine", "n_predict": 2}
        assert call(proxy.base_url, "POST", "/completion", body, {"Authorization": "Bearer sk-editor"}).status == 200
        assert finished(proxy, 1)[0]["client"] == "editor"
        assert "sekrit" not in " ".join(psutil_cmdline(proxy.pid))  # keys travel in the environment


def psutil_cmdline(pid: Optional[int]) -> List[str]:
    import psutil

    assert pid is not None
    return psutil.Process(pid).cmdline()


# -- identity and limits ----------------------------------------------------------------------------


def test_clients_are_named_by_key_and_held_to_their_limits(tmp_path):
    clients = tmp_path / "clients.toml"
    clients.write_text(
        textwrap.dedent("""
            [clients.editor]
            key = "sk-editor"
            requests_per_minute = 2
            """),
        encoding="utf-8",
    )
    with fake_server(tmp_path) as fake, started_proxy(tmp_path, fake.base, clients_file=clients) as proxy:
        body = {"prompt": "limit me", "n_predict": 2}
        editor = {"Authorization": "Bearer sk-editor", "X-Client-Name": "pretending"}
        assert [call(proxy.base_url, "POST", "/completion", body, editor).status for _ in range(2)] == [200, 200]
        refused = call(proxy.base_url, "POST", "/completion", body, editor)
        assert refused.status == 429 and 1 <= int(refused.headers["retry-after"]) <= 60
        err = refused.json()["error"]
        assert (err["code"], err["type"]) == ("rate_limit_exceeded", "requests") and "editor" in err["message"]
        assert call(proxy.base_url, "POST", "/completion", body, {"Authorization": "Bearer sk-other"}).status == 200
        recs = finished(proxy, 4)
        assert [(r["client"], r["status"]) for r in recs[:3]] == [("editor", 200), ("editor", 200), ("editor", 429)]
        assert recs[3]["client"].startswith("key-") and "sk-other" not in json.dumps(requests_of(proxy))
        assert recs[2]["error_type"] == "rate_limit_exceeded"


# -- history ----------------------------------------------------------------------------------------

USAGE_CLI = """
import sys
from tools.llama_bench.entry import ArgumentParser, main
from tools.llama_run.proxy.args import register

def build():
    parser = ArgumentParser(prog="llama-run")
    register(parser.add_subparsers(dest="command"))
    return parser

sys.exit(main("llama-run", build, sys.argv[1:]))
"""


def usage_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", USAGE_CLI, "usage", *args], capture_output=True, text=True, timeout=60, cwd=REPO
    )


def test_the_history_survives_a_restart_and_usage_reports_it(tmp_path):
    db = tmp_path / "history.sqlite3"
    with fake_server(tmp_path) as fake:
        for run, name in ((1, "first-run"), (2, "second-run")):
            with started_proxy(tmp_path, fake.base, db_path=db) as proxy:
                for _ in range(run):
                    body = {"prompt": [1, 2, 3], "n_predict": 4}
                    assert call(proxy.base_url, "POST", "/completion", body, {"X-Client-Name": name}).status == 200
                finished(proxy, run)
        # Stopped while a request runs (Ctrl-C, SIGTERM): that request is in the history too, as aborted.
        with started_proxy(tmp_path, fake.base, db_path=db) as proxy:
            conn = httpclient.HTTPConnection("127.0.0.1", proxy.config.port, timeout=30)
            body = json.dumps({"prompt": "endless", "n_predict": 100000, "stream": True})
            conn.request("POST", "/completion", body=body, headers={"X-Client-Name": "cut-short"})
            assert conn.getresponse().read(200)
            assert proxy.stop() == 0
            conn.close()
    res = usage_cli("--db", str(db), "--json")
    assert res.returncode == 0, res.stderr
    rows = {r["key"]: r for r in json.loads(res.stdout)["rows"]}
    assert (rows["first-run"]["requests"], rows["second-run"]["requests"]) == (1, 2)
    assert rows["second-run"]["generated_tokens"] == 8 and rows["second-run"]["prompt_tokens"] == 6
    assert rows["cut-short"]["aborted"] == 1 and rows["cut-short"]["generated_tokens"] > 0
    table = usage_cli("--db", str(db), "--by", "model", "--since", "1h")
    assert table.returncode == 0 and "fake-model" in table.stdout and "total" in table.stdout
    bad = usage_cli("--since", "soon")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "invalid period" in bad.stderr


# -- the process ------------------------------------------------------------------------------------

PARENT = """
import sys, time
from tools.llama_run.proxy.config import ProxyConfig
from tools.llama_run.proxy.process import ManagedProxy
from pathlib import Path
config = ProxyConfig(upstream=sys.argv[1], port=int(sys.argv[2]), history=False)
proxy = ManagedProxy(config, log_path=Path(sys.argv[3]))
proxy.start()
proxy.wait_ready(30)
print(proxy.pid, flush=True)
time.sleep(600)
"""


def test_a_managed_proxy_never_outlives_its_parent_even_after_sigkill(tmp_path):
    port = free_port()
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, f"http://127.0.0.1:{free_port()}", str(port), str(tmp_path / "p.log")],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        start_new_session=True,
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert "tools.llama_run.proxy" in psutil_cmdline(child) and pid_alive(child)
        os.killpg(parent.pid, signal.SIGKILL)  # the parent's own group: the proxy lives in another session
        parent.wait(10)
        assert wait_until(lambda: not pid_alive(child), 10)
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
            parent.wait()


def test_a_managed_proxy_starts_answers_and_stops(tmp_path):
    with fake_server(tmp_path) as fake:
        with started_proxy(tmp_path, fake.base) as proxy:
            assert proxy.poll() is None and proxy.log_path is not None
            with pytest.raises(UserError, match="already in use"):
                ManagedProxy(replace(proxy.config, parent_pid=None), log_path=tmp_path / "x.log").start()
            assert call(proxy.base_url, "GET", "/proxy/health").json()["pid"] == proxy.pid
        assert proxy.poll() == 0  # SIGTERM: a clean stop
        assert "llama-proxy listening on" in proxy.log_path.read_text(encoding="utf-8")


@dataclass
class Cli:
    code: int
    out: str
    err: str = field(default="")


def proxy_cli(*args: str, timeout: float = 30) -> Cli:
    res = subprocess.run(
        [sys.executable, "-m", "tools.llama_run.proxy", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    return Cli(res.returncode, res.stdout, res.stderr)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--upstream", "ftp://x"], "--upstream must be an http(s) URL"),
        (["--port", "0"], "--port: invalid port 0"),
        (["--max-body", "lots"], "invalid size"),
        (["--clients", "/no/such/file.toml"], "no such file"),
        (["--inject-usage", "sometimes"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_status_2(args, message):
    res = proxy_cli(*args)
    assert res.code == 2 and res.err.count("\n") == 1 and message in res.err, res.err
    assert res.err.startswith("llama-proxy: error: ")


def test_a_port_in_use_is_said_as_it_is(tmp_path):
    with fake_server(tmp_path) as fake:
        res = proxy_cli("--upstream", "http://127.0.0.1:1", "--port", str(fake.port), "--no-history")
        assert res.code == 2 and "already in use" in res.err and res.err.count("\n") == 1
