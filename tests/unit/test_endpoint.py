"""Endpoint policy: URLs from host/port or --endpoint, API-key precedence, and what "ready" means."""

from __future__ import annotations

from typing import Dict, List, Tuple

import pytest

from tools.llama_bench import settings
from tools.llama_bench.endpoint import (
    Readiness,
    check_ready,
    client_api_key,
    connect_host,
    normalize_endpoint,
    server_api_key,
    url_for,
)
from tools.llama_bench.http import HttpError, Response
from tools.llama_bench.utils import UserError


@pytest.mark.parametrize(
    "host, expected",
    [("0.0.0.0", "127.0.0.1"), ("", "127.0.0.1"), ("localhost", "127.0.0.1"), ("::", "::1"), ("10.0.0.5", "10.0.0.5")],
)
def test_a_bind_address_maps_to_the_address_to_connect_to(host: str, expected: str) -> None:
    assert connect_host(host) == expected


def test_urls_bracket_ipv6_addresses() -> None:
    assert url_for("0.0.0.0", 11433) == "http://127.0.0.1:11433"
    assert url_for("::1", 8080) == "http://[::1]:8080"
    assert url_for("[::1]", 8080) == "http://[::1]:8080"


def test_endpoints_are_reduced_to_the_server_base_url() -> None:
    assert normalize_endpoint("http://h:1/") == "http://h:1"
    assert normalize_endpoint(" http://h:1/v1 ") == "http://h:1"
    assert normalize_endpoint("http://h:1/v1/chat/completions") == "http://h:1"
    assert normalize_endpoint("https://h/proxy/llama/completion") == "https://h/proxy/llama"
    assert normalize_endpoint("http://[::1]:8080") == "http://[::1]:8080"


@pytest.mark.parametrize("bad", ["h:1", "localhost:11433", "ftp://h/", "http://", "http://h:99999", "http://h:1/?x=1"])
def test_bad_endpoints_are_one_user_error(bad: str) -> None:
    with pytest.raises(UserError) as exc:
        normalize_endpoint(bad)
    assert "--endpoint" in str(exc.value) and "\n" not in str(exc.value)


def test_client_key_precedence_is_flag_then_llama_then_openai(monkeypatch) -> None:
    monkeypatch.setattr(settings, "_dotenv_cache", {})
    assert client_api_key(None) is None
    monkeypatch.setenv("OPENAI_API_KEY", "openai")
    assert client_api_key(None) == "openai"
    monkeypatch.setenv("LLAMA_API_KEY", "llama")
    assert client_api_key(None) == "llama"
    assert client_api_key("flag") == "flag"


def test_the_key_of_a_server_we_start_is_also_found_in_raw_flags_and_llama_arg_api_key(monkeypatch) -> None:
    assert server_api_key(None, ["-c", "2048"]) is None
    assert server_api_key(None, ["--api-key", "raw"]) == "raw"
    assert server_api_key(None, ["--api-key=raw2"]) == "raw2"
    monkeypatch.setenv("LLAMA_ARG_API_KEY", "envkey")
    assert server_api_key(None, []) == "envkey"
    assert server_api_key("flag", ["--api-key", "raw"]) == "flag"


@pytest.mark.parametrize("key", ["kéy€", "line\nbreak"])
def test_keys_that_cannot_be_sent_in_a_header_are_refused(key: str) -> None:
    with pytest.raises(UserError, match="--api-key"):
        client_api_key(key)


class StubClient:
    """Answers GET paths with fixed statuses; an exception instance is raised instead."""

    def __init__(self, answers: Dict[str, object]) -> None:
        self.answers = answers
        self.timeout = 1.0
        self.asked: List[str] = []

    def get(self, path: str, timeout: float = 1.0) -> Response:
        self.asked.append(path)
        answer = self.answers[path]
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, int)
        return Response(answer, "")


READY_CASES: List[Tuple[Dict[str, object], Readiness]] = [
    ({"/health": 200, "/v1/models": 200}, Readiness.READY),
    ({"/health": 404, "/v1/models": 200}, Readiness.READY),  # an OpenAI-compatible server without /health
    ({"/health": 503, "/v1/models": 503}, Readiness.LOADING),
    ({"/health": 200, "/v1/models": 503}, Readiness.LOADING),  # older builds answer /health early
    ({"/health": 200, "/v1/models": 401}, Readiness.UNAUTHORIZED),
    ({"/health": 404, "/v1/models": 404}, Readiness.NOT_A_SERVER),
    ({"/health": HttpError("GET /health: connection refused")}, Readiness.UNREACHABLE),
]


@pytest.mark.parametrize("answers, state", READY_CASES)
def test_readiness_needs_health_and_models(answers: Dict[str, object], state: Readiness) -> None:
    assert check_ready(StubClient(answers)).state is state  # type: ignore[arg-type]


def test_an_open_port_alone_is_not_ready() -> None:
    check = check_ready(StubClient({"/health": 503}))  # type: ignore[arg-type]
    assert not check.ready and check.state is Readiness.LOADING
