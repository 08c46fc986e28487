"""The usage history (SQLite, WAL) and `llama-run usage`: rows survive a restart, old ones are pruned, texts
are never stored, and the report groups by client, model or day, as a table or JSON."""

from __future__ import annotations

import argparse
import json
import sqlite3
import time

import pytest

from tools.llama_run.proxy.args import byte_size, register, time_span
from tools.llama_run.proxy.records import Endpoint, IdentitySource, Outcome, RequestRecord
from tools.llama_run.proxy.store import UsageStore
from tools.llama_run.proxy.usage import GroupBy, UsageParams, report, run_usage, usage_rows


def rec(client: str, model: str, prompt: int, gen: int, ago: float = 0.0, **kw) -> RequestRecord:
    r = RequestRecord(0, client, IdentitySource.HEADER, Endpoint.CHAT, "POST", time.time() - ago - 1.0)
    r.model, r.prompt_tokens, r.cached_tokens, r.generated_tokens = model, prompt, 0, gen
    r.status, r.outcome, r.duration_ms, r.ttft_ms, r.gen_tps = 200, Outcome.OK, 1000.0, 50.0, 100.0
    r.error = "the upstream quoted: SECRET PROMPT TEXT"  # live view only, never stored
    for key, value in kw.items():
        setattr(r, key, value)
    return r


def fill(path, records) -> None:
    store = UsageStore(path, retention_days=30)
    store.start()
    for r in records:
        store.finished(r)
    store.close()


def test_finished_requests_survive_a_restart_and_texts_are_never_stored(tmp_path):
    db = tmp_path / "usage.sqlite3"
    fill(db, [rec("editor", "m1", 100, 10)])
    fill(db, [rec("editor", "m1", 50, 5), rec("agent", "m2", 10, 1, outcome=Outcome.ABORTED)])  # "restart"
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    rows = conn.execute("SELECT * FROM requests").fetchall()
    assert len(rows) == 3
    assert not any("SECRET" in str(v) for row in rows for v in row)
    columns = {r[1] for r in conn.execute("PRAGMA table_info(requests)")}
    assert not columns & {"prompt", "messages", "content", "text", "error"}
    by_client = {r.key: r for r in usage_rows(db, None, GroupBy.CLIENT)}
    assert (by_client["editor"].requests, by_client["editor"].prompt_tokens, by_client["editor"].generated_tokens) == (
        2,
        150,
        15,
    )
    assert by_client["agent"].aborted == 1


def test_retention_deletes_old_rows_at_start_up(tmp_path):
    db = tmp_path / "usage.sqlite3"
    fill(db, [rec("old", "m", 1, 1, ago=40 * 86400), rec("new", "m", 1, 1)])
    UsageStore(db, retention_days=30).close()
    assert [r.key for r in usage_rows(db, None, GroupBy.CLIENT)] == ["new"]


def test_the_tokens_of_the_last_day_seed_the_limits(tmp_path):
    db = tmp_path / "usage.sqlite3"
    fill(db, [rec("c", "m", 90, 10, ago=2 * 86400), rec("c", "m", 40, 2)])
    store = UsageStore(db, retention_days=30)
    rows = store.tokens_since(time.time() - 86400)
    store.close()
    assert [(c, n) for c, _, n in rows] == [("c", 42)]


def test_usage_groups_by_client_model_and_day_since_a_period(tmp_path):
    db = tmp_path / "usage.sqlite3"
    fill(
        db,
        [
            rec("a", "m1", 100, 20),
            rec("a", "m2", 10, 2),
            rec("b", "m1", 1, 1, status=500, outcome=Outcome.ERROR),
            rec("b", "m1", 1000, 100, ago=3 * 86400),
        ],
    )
    by_model = usage_rows(db, time.time() - 86400, GroupBy.MODEL)
    assert [(r.key, r.requests, r.prompt_tokens) for r in by_model] == [("m1", 2, 101), ("m2", 1, 10)]
    by_day = usage_rows(db, None, GroupBy.DAY)
    assert len(by_day) == 2 and by_day[0].key < by_day[1].key and sum(r.requests for r in by_day) == 4
    clients = report(UsageParams(since_s=86400, by=GroupBy.CLIENT, db_path=db))
    assert [r["key"] for r in clients["rows"]] == ["a", "b"]
    assert clients["total"]["requests"] == 3 and clients["total"]["errors"] == 1
    assert clients["total"]["gen_tps"] == pytest.approx(100.0)


def test_usage_prints_a_table_or_json_and_handles_no_history(tmp_path, capsys):
    db = tmp_path / "usage.sqlite3"
    assert run_usage(UsageParams(db_path=db)) == 0
    assert "no requests recorded" in capsys.readouterr().out
    fill(db, [rec("editor", "m1", 100, 10)])
    assert run_usage(UsageParams(db_path=db)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split() == ["client", "requests", "errors", "aborted", "prompt", "cached", "generated", "ttft_ms"] + [
        "gen_tok/s"
    ]
    assert out[2].split()[:7] == ["editor", "1", "0", "0", "100", "0", "10"] and out[-1].startswith("total")
    assert run_usage(UsageParams(db_path=db, as_json=True, since_s=None)) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["schema"] == "llama-studio.proxy-usage/1" and data["since"] is None
    assert data["rows"][0]["generated_tokens"] == 10


def test_periods_and_sizes_parse_like_the_other_flags():
    assert time_span("24h") == 86400 and time_span("90s") == 90 and time_span("1.5d") == 1.5 * 86400
    assert time_span("all") is None
    assert byte_size("32M") == 32 * 1024**2 and byte_size("512k") == 512 * 1024 and byte_size("1GiB") == 1024**3
    for bad in ("", "24", "-1h", "soon"):
        with pytest.raises(argparse.ArgumentTypeError):
            time_span(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        byte_size("lots")


def test_the_commands_register_on_a_parser_and_build_typed_parameters(tmp_path):
    from tools.llama_run.proxy.args import config_from_args
    from tools.llama_run.proxy.config import InjectMode

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["proxy", "--upstream", "http://127.0.0.1:9/v1/", "--port", "9001", "--max-body", "1M"])
    args.extra_server_args = []
    cfg = config_from_args(args)
    assert (cfg.upstream, cfg.port, cfg.max_body, cfg.inject_usage) == (
        "http://127.0.0.1:9",
        9001,
        2**20,
        InjectMode.AUTO,
    )
    assert cfg.history and cfg.host == "127.0.0.1" and cfg.api_key is None
    args = parser.parse_args(["usage", "--since", "7d", "--by", "model", "--json", "--db", str(tmp_path / "u.db")])
    assert (args.since, args.by, args.json) == (7 * 86400, "model", True) and args.handler.__name__ == "usage_command"
