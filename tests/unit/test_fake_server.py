"""The fake llama-server (tests/bin/llama-server) behaves like the real one where our tools look.

Shapes, errors and metric text follow the recorded reference; the knobs (--load-delay, --fail-start,
--crash-after, --hang-after, --metrics-update) give the failure modes the other tests need.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Any, Iterator, List

import pytest

from tests import fake_llama_server as fake
from tests.helpers import FAKE_SERVER, free_port, http, running_server, wait_until

REFERENCE_METRICS = [
    "prompt_tokens_total counter",
    "prompt_tokens_cached_total counter",
    "prompt_seconds_total counter",
    "tokens_predicted_total counter",
    "tokens_predicted_seconds_total counter",
    "n_decode_total counter",
    "n_tokens_max counter",
    "spec_decode_num_draft_tokens_total counter",
    "spec_decode_num_accepted_tokens_total counter",
    "spec_decode_num_drafts_total counter",
    "prompt_tokens_seconds gauge",
    "predicted_tokens_seconds gauge",
    "requests_processing gauge",
    "requests_deferred gauge",
    "n_busy_slots_per_decode gauge",
]
HI = [{"role": "user", "content": "hi"}]


@dataclass
class Fake:
    base: str
    port: int
    pid: int
    log: Path


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory) -> Iterator[Fake]:
    """One shared fake: 2 slots, metrics on, 2 ms per token, logging to a file."""
    port = free_port()
    log = tmp_path_factory.mktemp("fake") / "server.log"
    with running_server(port, "--metrics", "-np", "2", "--token-interval-ms", "2", "--log-file", str(log)) as proc:
        yield Fake(f"http://127.0.0.1:{port}", port, proc.pid, log)


@pytest.fixture
def server(fake_server: Fake) -> str:
    return fake_server.base


def sse(url: str, body: dict) -> List[Any]:
    """All `data:` payloads of a streamed answer, JSON-decoded except `[DONE]`."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    events = []
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.headers["Content-Type"] == "text/event-stream"
        for raw in resp:
            line = raw.decode().strip()
            if line.startswith("data: "):
                payload = line[len("data: ") :]
                events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def metrics(base: str) -> dict:
    with urllib.request.urlopen(base + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {line.split()[0].split(":", 1)[1]: float(line.split()[1]) for line in text.splitlines() if line[:1] != "#"}


# --- process and command line --------------------------------------------------------------------


def test_process_is_named_llama_server(fake_server):
    import psutil

    proc = psutil.Process(fake_server.pid)  # the wrapper exec's Python: same pid
    assert proc.name() == "llama-server"
    assert proc.cmdline()[0] == "llama-server"


def test_version_exits_zero_with_a_version_line():
    res = subprocess.run([str(FAKE_SERVER), "--version"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0
    assert res.stderr.startswith("version: ")


def test_command_line_defaults_and_llama_cpp_spellings():
    log = fake.Log()
    opts = fake.parse_args([], log)
    assert (opts.port, opts.n_ctx, opts.n_slots, opts.metrics, opts.slots) == (8080, 4096, 4, False, True)
    opts = fake.parse_args(["-c", "0", "-np", "-1", "-fa", "--metrics", "--port=9000"], log)
    assert (opts.n_ctx, opts.n_slots, opts.flash_attn, opts.metrics, opts.port) == (8192, 4, "on", True, 9000)
    opts = fake.parse_args(["-fa", "off", "--api-key", "a,b", "--no-slots", "-ngl", "99"], log)
    assert (opts.flash_attn, opts.api_keys, opts.slots, opts.n_gpu_layers) == ("off", ["a", "b"], False, 99)


def test_unknown_flags_are_skipped_with_their_values():
    opts = fake.parse_args(["-lm", "mmap", "--some-switch", "-c", "2048", "--ctk=q8_0"], fake.Log())
    assert opts.n_ctx == 2048


def test_a_bad_flag_value_fails_like_llama_cpp():
    res = subprocess.run([str(FAKE_SERVER), "--port", "abc"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 1
    assert 'error while handling argument "--port"' in res.stderr


# --- tokenizer -------------------------------------------------------------------------------------


def test_tokenizer_round_trips_any_text():
    vocab = fake.Vocab()
    for text in ("hello world, this is a test", "  spaces\t\tand\n\nnewlines ", "ünïcode 123 don't <|im_end|>x", ""):
        assert vocab.detokenize(vocab.tokenize(text)) == text


def test_tokenizer_pieces_carry_their_leading_space_and_specials_are_one_token():
    vocab = fake.Vocab()
    assert vocab.pieces("hello world, 42") == ["hello", " world", ",", " ", "4", "2"]
    assert vocab.pieces("x <|im_start|>user") == ["x", " ", "<|im_start|>", "user"]
    assert vocab.tokenize("<|im_start|><|im_end|>") == [1, 2]


def test_tokenize_counts_match_what_completions_report(server):
    text = "The quick brown fox jumps over the lazy dog. Again!"
    _, tok = http("POST", server + "/tokenize", {"content": text})
    _, done = http("POST", server + "/completion", {"prompt": text, "n_predict": 1, "cache_prompt": False})
    assert done["timings"]["prompt_n"] == done["tokens_evaluated"] == len(tok["tokens"]) == 12
    _, pieces = http("POST", server + "/tokenize", {"content": "hello world", "with_pieces": True})
    assert [p["piece"] for p in pieces["tokens"]] == ["hello", " world"]
    _, back = http("POST", server + "/detokenize", {"tokens": tok["tokens"]})
    assert back == {"content": text}


def test_chat_prompt_is_smollm2_chatml_and_counts_31_tokens_for_one_word(server):
    _, templated = http("POST", server + "/apply-template", {"messages": HI})
    assert templated["prompt"] == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )
    _, counted = http("POST", server + "/v1/chat/completions/input_tokens", {"messages": HI})
    assert counted == {"input_tokens": 31, "object": "response.input_tokens"}
    _, done = http("POST", server + "/v1/chat/completions", {"messages": HI, "max_tokens": 2, "cache_prompt": False})
    assert done["usage"]["prompt_tokens"] == 31


# --- endpoints ---------------------------------------------------------------------------------------


def test_info_endpoints(server):
    assert http("GET", server + "/health") == (200, {"status": "ok"})
    status, models = http("GET", server + "/v1/models")
    assert status == 200 and models["object"] == "list" and models["data"][0]["id"] == "fake-model"
    _, props = http("GET", server + "/props")
    assert props["total_slots"] == 2 and props["default_generation_settings"]["n_ctx"] == 4096
    assert props["build_info"] == "b0-fake" and props["model_path"] == ""
    status, slots = http("GET", server + "/slots")
    assert status == 200 and [s["id"] for s in slots] == [0, 1] and slots[0]["n_ctx"] == 4096


def test_completion_answers_with_timings_and_stops_at_the_limit(server):
    _, done = http("POST", server + "/completion", {"prompt": "Hello", "n_predict": 4})
    assert done["stop"] is True and done["stop_type"] == "limit" and done["tokens_predicted"] == 4
    assert set(done["timings"]) == {
        "cache_n", "prompt_n", "prompt_ms", "prompt_per_token_ms", "prompt_per_second",
        "predicted_n", "predicted_ms", "predicted_per_token_ms", "predicted_per_second",
    }  # fmt: skip
    assert done["timings"]["predicted_n"] == 4
    assert done["timings"]["predicted_per_token_ms"] >= 1.99  # the configured --token-interval-ms


def test_without_a_limit_it_stops_at_eos_after_16_tokens(server):
    _, done = http("POST", server + "/completion", {"prompt": "Hello"})
    assert (done["stop_type"], done["tokens_predicted"]) == ("eos", 16)
    _, chat = http("POST", server + "/v1/chat/completions", {"messages": HI})
    assert chat["choices"][0]["finish_reason"] == "stop" and chat["usage"]["completion_tokens"] == 16


def test_token_id_prompts_count_exactly(server):
    _, done = http("POST", server + "/completion", {"prompt": list(range(1, 11)), "n_predict": 2})
    assert done["timings"]["prompt_n"] + done["timings"]["cache_n"] == 10
    status, err = http("POST", server + "/completion", {"prompt": [49152], "n_predict": 1})
    assert status == 400 and err["error"]["message"] == "Prompt contains invalid tokens"


def test_openai_answers_carry_usage_and_timings(server):
    _, done = http("POST", server + "/v1/completions", {"prompt": "Hello", "max_tokens": 3})
    assert done["object"] == "text_completion" and done["choices"][0]["finish_reason"] == "length"
    assert done["usage"]["completion_tokens"] == 3 and done["timings"]["predicted_n"] == 3
    _, chat = http("POST", server + "/v1/chat/completions", {"messages": HI, "max_tokens": 3})
    assert chat["object"] == "chat.completion" and chat["choices"][0]["message"]["role"] == "assistant"
    assert chat["usage"]["total_tokens"] == chat["usage"]["prompt_tokens"] + 3


def test_prompt_cache_skips_the_shared_prefix(server):
    prompt = "a prompt that is only used by the prompt cache test"
    n = len(http("POST", server + "/tokenize", {"content": prompt})[1]["tokens"])
    http("POST", server + "/completion", {"prompt": prompt, "n_predict": 1})
    _, again = http("POST", server + "/completion", {"prompt": prompt, "n_predict": 1})
    # Like llama.cpp, at least the last prompt token is evaluated again.
    assert (again["timings"]["cache_n"], again["timings"]["prompt_n"]) == (n - 1, 1)
    _, fresh = http("POST", server + "/completion", {"prompt": prompt, "n_predict": 1, "cache_prompt": False})
    assert (fresh["timings"]["cache_n"], fresh["timings"]["prompt_n"]) == (0, n)


def test_streamed_chat_has_role_chunk_tokens_finish_usage_and_done(server):
    body = {"messages": HI, "max_tokens": 3, "stream": True, "stream_options": {"include_usage": True}}
    events = sse(server + "/v1/chat/completions", body)
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": None}
    pieces = [e["choices"][0]["delta"]["content"] for e in events[1:4]]
    # One token per chunk; the text is deterministic, the same as without streaming.
    _, whole = http("POST", server + "/v1/chat/completions", {"messages": HI, "max_tokens": 3})
    assert "".join(pieces) == whole["choices"][0]["message"]["content"] and all(pieces)
    assert events[4]["choices"][0] == {"finish_reason": "length", "index": 0, "delta": {}}
    assert events[5]["choices"] == [] and events[5]["usage"]["completion_tokens"] == 3 and "timings" in events[5]
    assert events[6] == "[DONE]" and len(events) == 7
    assert all(e["object"] == "chat.completion.chunk" for e in events[:-1])


def test_streamed_completion_ends_with_a_stop_chunk_and_no_done(server):
    events = sse(server + "/completion", {"prompt": "Hello", "n_predict": 3, "stream": True})
    assert [e["tokens_predicted"] for e in events[:3]] == [1, 2, 3]
    assert all(len(e["tokens"]) == 1 and e["stop"] is False for e in events[:3])
    final = events[3]
    assert final["stop"] is True and final["stop_type"] == "limit" and "generation_settings" in final
    assert final["timings"]["predicted_n"] == 3 and len(events) == 4


def test_streamed_openai_completion_ends_with_done(server):
    events = sse(server + "/v1/completions", {"prompt": "Hello", "max_tokens": 2, "stream": True})
    assert [e["choices"][0]["finish_reason"] for e in events[:3]] == [None, None, "length"]
    assert events[2]["usage"]["completion_tokens"] == 2 and events[3] == "[DONE]"


# --- errors ------------------------------------------------------------------------------------------


def test_errors_have_the_reference_bodies(server):
    assert http("GET", server + "/nope") == (
        404,
        {"error": {"message": "File Not Found", "type": "not_found_error", "code": 404}},
    )
    status, err = http("POST", server + "/completion", {"prompt": list(range(1, 5001)), "n_predict": 2})
    assert status == 400 and err == {
        "error": {
            "code": 400,
            "message": "request (5000 tokens) exceeds the available context size (4096 tokens), try increasing it",
            "type": "exceed_context_size_error",
            "n_prompt_tokens": 5000,
            "n_ctx": 4096,
        }
    }
    req = urllib.request.Request(server + "/completion", data=b"{not json", method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=10)
    body = json.loads(info.value.read())
    assert info.value.code == 400 and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith("[json.exception.parse_error.101]")


def test_api_key_guards_everything_but_health_and_flags_switch_endpoints_off():
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with running_server(port, "--api-key", "K", "--no-slots", "--alias", "smol", "--unknown-flag", "7"):
        assert http("GET", base + "/health")[0] == 200
        assert http("GET", base + "/v1/models") == (
            401,
            {"error": {"message": "Invalid API Key", "type": "authentication_error", "code": 401}},
        )
        auth = {"Authorization": "Bearer K"}
        _, models = http("GET", base + "/v1/models", headers=auth)
        assert models["data"][0]["id"] == "smol"
        status, err = http("GET", base + "/slots", headers=auth)
        assert status == 501 and err["error"]["type"] == "not_supported_error"
        status, err = http("GET", base + "/metrics", headers=auth)
        assert status == 501 and "--metrics" in err["error"]["message"]


# --- metrics and slots -------------------------------------------------------------------------------


def test_metrics_text_has_the_reference_names_order_and_types(server):
    with urllib.request.urlopen(server + "/metrics", timeout=10) as resp:
        assert resp.headers["Content-Type"] == "text/plain; version=0.0.4"
        text = resp.read().decode()
    types = [line.split()[2:] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert [f"{name.split(':', 1)[1]} {kind}" for name, kind in types] == REFERENCE_METRICS
    assert sum(line.startswith("# HELP llamacpp:") for line in text.splitlines()) == len(REFERENCE_METRICS)


def test_average_speed_gauges_reset_at_every_scrape(server):
    http("POST", server + "/completion", {"prompt": "speed", "n_predict": 5})
    assert metrics(server)["predicted_tokens_seconds"] > 0
    assert metrics(server)["predicted_tokens_seconds"] == 0


def test_like_llama_cpp_token_counters_move_only_when_a_request_ends_but_slots_show_progress(server):
    before = metrics(server)["tokens_predicted_total"]
    body = {"prompt": "a long story", "n_predict": 5000, "stream": True}
    req = urllib.request.Request(server + "/completion", data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        seen = 0
        for raw in resp:
            seen += raw.startswith(b"data: ")
            if seen == 5:
                break
        during = metrics(server)
        busy = [s for s in http("GET", server + "/slots")[1] if s["is_processing"]]
    assert during["tokens_predicted_total"] == before
    assert during["requests_processing"] == 1
    assert busy[0]["next_token"][0]["n_decoded"] >= 5 and busy[0]["n_prompt_tokens_processed"] == 3
    # Hanging up cancels the request and frees its slot, as in llama.cpp.
    assert wait_until(lambda: metrics(server)["requests_processing"] == 0, 10)


def test_requests_beyond_the_slots_are_deferred(server):
    body = json.dumps({"prompt": "occupy a slot", "n_predict": 5000, "stream": True}).encode()
    streams = [
        urllib.request.urlopen(urllib.request.Request(server + "/completion", data=body, method="POST"), timeout=30)
        for _ in range(2)
    ]
    third = threading.Thread(target=http, args=("POST", server + "/completion", {"prompt": "x", "n_predict": 1}))
    try:
        third.start()
        assert wait_until(lambda: metrics(server)["requests_deferred"] == 1, 10)
        assert metrics(server)["requests_processing"] == 2
    finally:
        for resp in streams:
            resp.close()  # the two streams end; the waiting request gets a slot
    third.join(10)
    assert wait_until(lambda: metrics(server)["requests_deferred"] == 0, 10)


# --- start-up, failures, shutdown --------------------------------------------------------------------


def test_loading_answers_503_until_the_model_is_loaded(model_file):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    loading = {"error": {"message": "Loading model", "type": "unavailable_error", "code": 503}}
    with running_server(port, "-m", str(model_file), "--load-delay", "1.5", wait=False):
        assert wait_until(lambda: _answers(base + "/health"), 10)
        assert http("GET", base + "/health") == (503, loading)
        assert http("GET", base + "/v1/models") == (503, loading)
        assert wait_until(lambda: http("GET", base + "/health")[0] == 200, 10)
        assert http("GET", base + "/v1/models")[1]["data"][0]["id"] == str(model_file)


def _answers(url: str) -> bool:
    try:
        http("GET", url, timeout=1)
        return True
    except OSError:
        return False


@pytest.mark.parametrize("how", ["--fail-start", "missing model"])
def test_model_load_failure_exits_1_with_llama_cpp_lines(how, model_file, tmp_path):
    model = str(tmp_path / "missing.gguf") if how == "missing model" else str(model_file)
    args = [str(FAKE_SERVER), "--port", str(free_port()), "-m", model]
    res = subprocess.run(args + ([how] if how.startswith("--") else []), capture_output=True, text=True, timeout=30)
    assert res.returncode == 1
    lines = res.stderr.splitlines()
    assert lines[-1].endswith("E srv  llama_server: exiting due to model loading error")
    assert any(line.endswith(f"E srv    load_model: failed to load model, '{model}'") for line in lines)


def test_crash_after_kills_the_process_during_the_next_request():
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with running_server(port, "--crash-after", "1") as proc:
        assert http("POST", base + "/completion", {"prompt": "one", "n_predict": 2})[0] == 200
        with pytest.raises((OSError, HTTPException)):
            http("POST", base + "/completion", {"prompt": "two", "n_predict": 8}, timeout=10)
        assert proc.wait(10) == 1


def test_hang_after_stalls_requests_but_the_process_lives_and_stops_on_sigterm(tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "hang.log"
    args = ("--hang-after", "1", "--metrics", "--metrics-update", "request", "--log-file", str(log))
    with running_server(port, *args) as proc:
        assert http("POST", base + "/completion", {"prompt": "one", "n_predict": 4})[0] == 200
        with pytest.raises(OSError):  # timeout: the answer never comes
            http("POST", base + "/completion", {"prompt": "two", "n_predict": 10}, timeout=0.5)
        assert http("GET", base + "/health")[0] == 200
        values = metrics(base)
        assert values["requests_processing"] == 1  # the stalled request keeps its slot
        # With --metrics-update request, tokens count when a request ends, as in current llama.cpp.
        assert values["tokens_predicted_total"] == 4
        started = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(10) == 0
        assert time.monotonic() - started < 5
    assert log.read_text(encoding="utf-8").splitlines()[-1].endswith("cleaning up before exit...")


def test_log_lines_look_like_llama_cpp(fake_server):
    http("POST", fake_server.base + "/completion", {"prompt": "log me", "n_predict": 1})
    text = fake_server.log.read_text(encoding="utf-8")
    assert f"I srv  llama_server: listening on http://127.0.0.1:{fake_server.port}" in text
    assert "I slot print_timing: id " in text and "stop processing: n_tokens = " in text


def test_hanging_up_cancels_the_task_with_llama_cpps_log_lines_and_frees_the_slot(fake_server):
    body = {"prompt": "cancel me please", "n_predict": 5000, "stream": True}
    req = urllib.request.Request(fake_server.base + "/completion", data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        resp.read(300)
        busy = [s for s in http("GET", fake_server.base + "/slots")[1] if s["is_processing"]]
    task = busy[0]["id_task"]

    def lines() -> List[str]:
        return [line for line in fake_server.log.read_text(encoding="utf-8").splitlines() if f"task {task} |" in line
                or line.endswith(f"cancel task, id_task = {task}")]  # fmt: skip

    # What llama-server logs: the HTTP side cancels the task, the slot releases it; no timings are printed.
    assert wait_until(lambda: any("stop processing" in line for line in lines()), 10)
    text = "\n".join(lines())
    assert f" W srv          stop: cancel task, id_task = {task}" in text
    assert "print_timing" not in text
    assert wait_until(lambda: not any(s["is_processing"] for s in http("GET", fake_server.base + "/slots")[1]), 10)


def test_llama_arg_api_key_from_the_environment_is_required_like_the_real_server(tmp_path: Path) -> None:
    port = free_port()
    env = dict(os.environ, LLAMA_ARG_API_KEY="env-secret")
    proc = subprocess.Popen([str(FAKE_SERVER), "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        assert wait_until(lambda: _answers(f"http://127.0.0.1:{port}/health"), 30)
        assert http("GET", f"http://127.0.0.1:{port}/v1/models")[0] == 401
        assert (
            http("GET", f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": "Bearer env-secret"})[0] == 200
        )
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
