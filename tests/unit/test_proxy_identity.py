"""Who a request belongs to, the --clients file, and per-client limits over sliding windows."""

from __future__ import annotations

import json

import pytest

from tools.llama_bench.utils import ExitStatus, UserError
from tools.llama_run.proxy.identity import (
    ClientLimits,
    ClientsTable,
    clean_name,
    fingerprint,
    identify,
    key_hash,
    load_clients,
    parse_clients,
)
from tools.llama_run.proxy.limits import Limiter
from tools.llama_run.proxy.records import Endpoint, IdentitySource, RequestRecord

TOML = """
[default]
requests_per_minute = 100

[clients.editor]
key = "sk-editor"
requests_per_minute = 2
tokens_per_minute = 1000

[clients.agents]
keys = ["sk-a1", "sk-a2"]
tokens_per_day = 50000

[clients.scripts]   # no key: matches X-Client-Name
tokens_per_minute = 10
"""


def table() -> ClientsTable:
    return parse_clients(
        {
            "default": {"requests_per_minute": 100},
            "clients": {
                "editor": {"key": "sk-editor", "requests_per_minute": 2, "tokens_per_minute": 1000},
                "agents": {"keys": ["sk-a1", "sk-a2"], "tokens_per_day": 50000},
                "hashed": {"key_sha256": key_hash("sk-hashed")},
                "scripts": {"tokens_per_minute": 10},
            },
        },
        "test",
    )


def test_a_listed_key_wins_then_the_name_header_then_the_key_fingerprint_then_the_address():
    t = table()
    listed = identify({"Authorization": "Bearer sk-a2", "X-Client-Name": "not-me"}, "10.0.0.5", t)
    assert (listed.name, listed.source, listed.limits.tokens_per_day) == ("agents", IdentitySource.CLIENTS_FILE, 50000)
    named = identify({"X-Client-Name": "  my chat ui ", "Authorization": "Bearer sk-other"}, "10.0.0.5", t)
    assert (named.name, named.source) == ("my_chat_ui", IdentitySource.HEADER)
    assert identify({"X-Client-Name": "scripts"}, None, t).limits.tokens_per_minute == 10
    keyed = identify({"X-Api-Key": "sk-secret-value"}, "10.0.0.5", t)
    assert keyed.source is IdentitySource.KEY and keyed.name == fingerprint("sk-secret-value")
    assert "secret" not in keyed.name and len(keyed.name) == len("key-") + 12
    assert keyed.limits == t.default
    by_address = identify({}, "10.0.0.5", t)
    assert (by_address.name, by_address.source) == ("10.0.0.5", IdentitySource.ADDRESS)
    assert identify({"Authorization": "Bearer sk-hashed"}, None, t).name == "hashed"


def test_self_declared_names_are_made_safe():
    assert clean_name("a b\tc") == "a_b_c"
    assert clean_name("ünïcode/älpha") == "n_code/_lpha"
    assert clean_name("x" * 100) == "x" * 64
    assert clean_name("   ") is None and clean_name("!!!") is None


def test_the_clients_file_in_toml_and_json(tmp_path):
    toml_path = tmp_path / "clients.toml"
    toml_path.write_text(TOML, encoding="utf-8")
    from_toml = load_clients(toml_path)
    json_path = tmp_path / "clients.json"
    data = {
        "default": {"requests_per_minute": 100},
        "clients": {
            "editor": {"key": "sk-editor", "requests_per_minute": 2, "tokens_per_minute": 1000},
            "agents": {"keys": ["sk-a1", "sk-a2"], "tokens_per_day": 50000},
            "scripts": {"tokens_per_minute": 10},
        },
    }
    json_path.write_text(json.dumps(data), encoding="utf-8")
    assert load_clients(json_path) == from_toml
    assert from_toml.by_key_hash[key_hash("sk-a1")] == "agents"
    assert from_toml.limits["editor"] == ClientLimits(2, 1000, None)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"clients": {"x": {"requests_per_min": 1}}}, "unknown setting 'requests_per_min'"),
        ({"clients": {"x": {"requests_per_minute": 0}}}, "must be a whole number >= 1"),
        ({"clients": {"x": {"tokens_per_day": "lots"}}}, "must be a whole number >= 1"),
        ({"clients": {"a": {"key": "k"}, "b": {"key": "k"}}}, "also listed for 'a'"),
        ({"clients": {"bad name": {}}}, "names may only use"),
        ({"clients": {"x": {"key_sha256": "abc"}}}, "64 hex digits"),
        ({"limits": {}}, "unknown section 'limits'"),
        ([1, 2], "expected a table"),
    ],
)
def test_mistakes_in_the_clients_file_are_one_line_errors(data, message):
    with pytest.raises(UserError) as err:
        parse_clients(data, "--clients f.toml")
    assert message in str(err.value) and "\n" not in str(err.value)
    assert err.value.exit_code == ExitStatus.BAD_INPUT


def test_unreadable_or_broken_files_are_user_errors(tmp_path):
    broken = tmp_path / "c.toml"
    broken.write_text("[clients\n", encoding="utf-8")
    with pytest.raises(UserError, match="not valid TOML"):
        load_clients(broken)
    with pytest.raises(UserError, match="No such file"):
        load_clients(tmp_path / "missing.json")


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def finished(client: str, tokens: int) -> RequestRecord:
    rec = RequestRecord(1, client, IdentitySource.HEADER, Endpoint.CHAT, "POST", 0.0)
    rec.prompt_tokens, rec.generated_tokens = tokens - 1, 1
    return rec


def test_requests_per_minute_refuse_with_the_wait_until_the_oldest_leaves_the_window():
    clock = Clock()
    limits = ClientLimits(requests_per_minute=2)
    limiter = Limiter(lambda name: limits, clock)
    assert limiter.admit("c", limits) is None
    clock.t += 10
    assert limiter.admit("c", limits) is None
    clock.t += 5
    refusal = limiter.admit("c", limits)
    assert refusal is not None and refusal.kind == "requests" and refusal.retry_after == 45
    assert "2/2 requests per minute" in refusal.message
    clock.t += 45
    assert limiter.admit("c", limits) is None  # the first request left the window
    assert limiter.admit("other", limits) is None  # clients are counted apart


def test_tokens_count_when_requests_finish_per_minute_and_per_day():
    clock = Clock()
    limits = ClientLimits(tokens_per_minute=100, tokens_per_day=250)
    limiter = Limiter(lambda name: limits, clock)
    limiter.finished(finished("c", 60))
    assert limiter.admit("c", limits) is None  # 60 < 100
    clock.t += 30
    limiter.finished(finished("c", 60))
    refusal = limiter.admit("c", limits)
    assert refusal is not None and refusal.kind == "tokens" and refusal.retry_after == 30
    clock.t += 31
    assert limiter.admit("c", limits) is None
    limiter.finished(finished("c", 140))
    clock.t += 120  # the minute is clear; the day is not: 260 >= 250
    refusal = limiter.admit("c", limits)
    assert refusal is not None and "tokens per day" in refusal.message
    assert refusal.retry_after == pytest.approx(86400 - 181, abs=1)


def test_the_day_is_seeded_from_the_history_so_a_restart_does_not_reset_it():
    clock = Clock()
    limits = ClientLimits(tokens_per_day=1000)
    limiter = Limiter(lambda name: limits if name == "c" else ClientLimits(), clock)
    limiter.seed([("c", clock.t - 3600, 600), ("c", clock.t - 60, 500), ("free", clock.t, 10**6)])
    refusal = limiter.admit("c", limits)
    assert refusal is not None and "1100/1000 tokens per day" in refusal.message


def test_clients_without_limits_cost_nothing():
    limiter = Limiter(lambda name: ClientLimits())
    for _ in range(1000):
        assert limiter.admit("c", ClientLimits()) is None
        limiter.finished(finished("c", 10))
    assert limiter._clients == {}
