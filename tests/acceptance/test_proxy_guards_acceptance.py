"""The proxy's guards against what a client or an upstream can do to it: a loop back to itself under any
name, a made-up client name per request, a listed client's name without its key, a body or an answer head
that trickles a byte at a time, databases that are not its history, and a parent killed while the proxy
itself is stopped. Each holds without a traceback and leaves what is not the proxy's untouched."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tests.acceptance.test_proxy_acceptance import (
    PARENT,
    call,
    fake_server,
    finished,
    proxy_cli,
    started_proxy,
    usage_cli,
)
from tests.helpers import LLAMA_RUN, REPO, free_port, pid_alive, wait_until
from tools.llama_run.proxy.identity import OTHER, ClaimedName, ClientsTable, NameBook, identify, parse_clients


def test_a_loop_through_other_proxies_back_to_this_one_is_answered_508(tmp_path):
    # A forwards to B, B forwards to A: the request comes back to A, which says so instead of flooding itself.
    a_port, b_port = free_port(), free_port()
    with (
        started_proxy(tmp_path / "a", f"http://127.0.0.1:{b_port}", port=a_port, history=False),
        started_proxy(tmp_path / "b", f"http://127.0.0.1:{a_port}", port=b_port, history=False),
    ):
        for method, path in (("GET", "/v1/models"), ("POST", "/completion")):
            started = time.monotonic()
            answer = call(f"http://127.0.0.1:{a_port}", method, path, {"prompt": "x"})
            assert answer.status == 508 and answer.json()["error"]["type"] == "loop"
            assert time.monotonic() - started < 10


@pytest.mark.parametrize("host", ["localhost", "127.0.0.2", "0.0.0.0"])
def test_an_upstream_that_is_the_proxys_own_port_under_another_name_is_refused(host):
    port = free_port()
    res = proxy_cli("--upstream", f"http://{host}:{port}", "--port", str(port), "--no-history")
    assert res.code == 2 and res.err.count("\n") == 1 and "the proxy's own address" in res.err, res.err


def test_made_up_client_names_are_kept_apart_only_up_to_a_limit():
    book, table = NameBook(limit=3), ClientsTable()
    names = [identify({"X-Client-Name": f"n{i}"}, "127.0.0.1", table, book).name for i in range(6)]
    assert names == ["n0", "n1", "n2", OTHER, OTHER, OTHER]
    assert identify({"X-Client-Name": "n1"}, None, table, book).name == "n1"  # seen before: still itself
    assert identify({"Authorization": "Bearer sk-random"}, None, table, book).name == OTHER  # keys count too
    listed = parse_clients({"clients": {"team": {"requests_per_minute": 5}}}, "test")
    assert identify({"X-Client-Name": "team"}, None, listed, book).name == "team"  # listed names always


def test_a_listed_clients_name_cannot_be_used_without_its_key(tmp_path):
    clients = tmp_path / "clients.toml"
    clients.write_text(
        textwrap.dedent("""
            [clients.alice]
            key = "sk-alice-secret"
            requests_per_minute = 2
            """),
        encoding="utf-8",
    )
    table = parse_clients({"clients": {"alice": {"key": "sk-alice-secret"}}}, "test")
    with pytest.raises(ClaimedName):
        identify({"X-Client-Name": "alice"}, None, table)
    with fake_server(tmp_path) as fake, started_proxy(tmp_path, fake.base, clients_file=clients) as proxy:
        body = {"prompt": "x", "n_predict": 2}
        for _ in range(2):
            refused = call(proxy.base_url, "POST", "/completion", body, {"X-Client-Name": "alice"})
            assert refused.status == 401 and "listed with a key" in refused.json()["error"]["message"]
        alice = {"Authorization": "Bearer sk-alice-secret"}
        assert call(proxy.base_url, "POST", "/completion", body, alice).status == 200  # her quota is untouched
        assert [r["client"] for r in finished(proxy, 1)] == ["alice"]


def test_a_body_that_trickles_is_cut_off_at_the_client_timeout_in_total(tmp_path):
    with fake_server(tmp_path) as fake, started_proxy(tmp_path, fake.base, client_timeout=2.0) as proxy:
        for path in ("/completion", "/tokenize"):  # read whole (metered), and streamed through
            with socket.create_connection(("127.0.0.1", proxy.config.port), timeout=20) as sock:
                sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".encode())
                started = time.monotonic()
                answer = b""
                sock.settimeout(0.4)
                while time.monotonic() - started < 15 and not answer:
                    try:
                        sock.sendall(b" ")  # a byte every 0.4 s: never silent for the timeout
                        answer = sock.recv(100)
                    except socket.timeout:
                        continue
                    except OSError:
                        break
                assert time.monotonic() - started < 6, path
                assert answer.startswith(b"HTTP/1.1 408 ") or answer == b"", (path, answer)


def trickling_upstream() -> "tuple[socket.socket, int]":
    """A server that sends its answer's head one byte every 0.2 s, for ever."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)

    def serve(conn: socket.socket) -> None:
        try:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 10000:
                conn.sendall(bytes([byte]))
                time.sleep(0.2)
        except OSError:
            pass
        finally:
            conn.close()

    def accept() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return srv, srv.getsockname()[1]


def test_an_answer_head_that_trickles_is_cut_off_at_the_read_timeout_in_total(tmp_path):
    srv, port = trickling_upstream()
    try:
        with started_proxy(tmp_path, f"http://127.0.0.1:{port}", read_timeout=2.0) as proxy:
            for method, path in (("POST", "/completion"), ("GET", "/v1/models")):
                started = time.monotonic()
                answer = call(proxy.base_url, method, path, {"prompt": "x"} if method == "POST" else None)
                assert time.monotonic() - started < 8
                assert answer.status == 504 and "did not answer within 2 s" in answer.json()["error"]["message"]
            rec = finished(proxy, 1)[0]
            assert (rec["status"], rec["error_type"]) == (504, "upstream_timeout")
    finally:
        srv.close()


def foreign_databases(tmp: Path) -> "list[Path]":
    other = tmp / "other.db"  # a table of the same name, other columns
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE requests (url TEXT, at REAL)")
    unrelated = tmp / "unrelated.db"  # another program's tables
    with sqlite3.connect(unrelated) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
    garbage = tmp / "garbage.db"
    garbage.write_bytes(b"not a database at all\n" * 100)
    return [other, unrelated, garbage]


def test_a_database_that_is_not_its_history_is_refused_and_left_as_it_was(tmp_path):
    for db in foreign_databases(tmp_path):
        before = hashlib.sha256(db.read_bytes()).hexdigest()
        res = proxy_cli("--upstream", "http://127.0.0.1:1", "--port", str(free_port()), "--db", str(db))
        assert res.code == 2 and res.err.count("\n") == 1 and str(db) in res.err, res.err
        usage = usage_cli("--db", str(db))
        assert usage.returncode == 2 and usage.stderr.count("\n") == 1 and "Traceback" not in usage.stderr
        assert hashlib.sha256(db.read_bytes()).hexdigest() == before
        assert not Path(f"{db}-wal").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["proxy", "--upstream", "http://[::1"], "must be an http(s) URL"),
        (["proxy", "--recent", "99999999999999999999"], "at most"),
        (["usage", "--since", "99999999999999999999w"], "at most 50 years"),
    ],
)
def test_odd_values_are_one_line_not_a_traceback(tmp_path, args, message):
    res = subprocess.run([str(LLAMA_RUN), *args], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and message in res.stderr, res.stderr


def test_a_proxy_that_cannot_take_a_signal_still_ends_with_its_parent(tmp_path):
    # Stopped (SIGSTOP) when its parent is SIGKILLed: the parent-death SIGTERM waits, the watchdog's
    # SIGKILL after the grace period does not.
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, f"http://127.0.0.1:{free_port()}", str(free_port()), str(tmp_path / "p.log")],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        start_new_session=True,
    )
    child = None
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        os.kill(child, signal.SIGSTOP)
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait(10)
        assert wait_until(lambda: not pid_alive(child), 20), "the stopped proxy outlived its parent"
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
            parent.wait()
        if child is not None and pid_alive(child):
            os.kill(child, signal.SIGKILL)
