"""The proxy's configuration: safe defaults, the checks before it starts, and the command line a
ManagedProxy gives its child (which must mean the same configuration again)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from tools.llama_bench.utils import UserError
from tools.llama_run.proxy.app import binds_loopback, warn_if_exposed
from tools.llama_run.proxy.args import add_proxy_args, config_from_args
from tools.llama_run.proxy.config import InjectMode, ProxyConfig


def parse(argv):
    parser = argparse.ArgumentParser()
    add_proxy_args(parser)
    args = parser.parse_args(argv)
    args.extra_server_args = []
    return config_from_args(args)


def test_defaults_are_safe():
    cfg = parse([])
    assert cfg.host == "127.0.0.1" and cfg.api_key is None and cfg.upstream == "http://127.0.0.1:11433"
    assert cfg.max_body >= 8 * 1024 * 1024  # a 128k-token prompt fits
    assert cfg.inject_usage is InjectMode.AUTO and cfg.history


def test_the_childs_command_line_means_the_same_configuration(tmp_path):
    clients = tmp_path / "c.toml"
    clients.write_text("", encoding="utf-8")
    cfg = ProxyConfig(
        upstream="http://10.0.0.2:8080/base",
        host="0.0.0.0",
        port=9000,
        clients_file=clients,
        db_path=tmp_path / "u.db",
        retention_days=7.5,
        max_body=123456,
        inject_usage=InjectMode.NEVER,
        connect_timeout=3,
        read_timeout=30,
        client_timeout=4,
        recent=10,
        log_requests=False,
        parent_pid=4242,
    )
    assert parse(cfg.argv()) == cfg
    assert parse(ProxyConfig(upstream="http://h:1", history=False).argv()) == ProxyConfig(
        upstream="http://h:1", history=False
    )


def test_keys_come_from_the_environment_not_the_command_line(monkeypatch):
    monkeypatch.setenv("LLAMA_PROXY_API_KEY", "k1")
    monkeypatch.setenv("LLAMA_PROXY_UPSTREAM_API_KEY", "k2")
    cfg = parse([])
    assert (cfg.api_key, cfg.upstream_api_key) == ("k1", "k2")
    assert "k1" not in cfg.argv() and "k2" not in cfg.argv()
    with pytest.raises(UserError, match="control characters"):
        parse(["--api-key", "bad\nkey"])


def test_a_proxy_pointed_at_itself_or_with_contradictions_is_refused(tmp_path):
    with pytest.raises(UserError, match="own address"):
        ProxyConfig(upstream="http://127.0.0.1:9000", port=9000).check()
    with pytest.raises(UserError, match="contradict"):
        parse(["--db", str(tmp_path / "x.db"), "--no-history"])
    with pytest.raises(UserError, match="no such file"):
        parse(["--clients", str(tmp_path / "missing.toml")])


@pytest.mark.parametrize(
    "host, loopback", [("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True), ("::1", True), ("0.0.0.0", False)]
)
def test_only_loopback_addresses_count_as_private(host, loopback):
    assert binds_loopback(host) is loopback


def test_listening_beyond_loopback_without_a_key_warns(capsys):
    warn_if_exposed(ProxyConfig(upstream="http://h:1", host="0.0.0.0"))
    assert "warning: listening on 0.0.0.0, not loopback, without --api-key" in capsys.readouterr().err
    warn_if_exposed(ProxyConfig(upstream="http://h:1", host="0.0.0.0", api_key="k"))
    warn_if_exposed(ProxyConfig(upstream="http://h:1"))
    assert capsys.readouterr().err == ""


def test_the_default_history_lives_in_the_state_directory(isolated_state):
    assert ProxyConfig(upstream="http://h:1").database == Path(isolated_state) / "proxy" / "usage.sqlite3"
