"""The shared mechanisms behind the hardening: output files, guarded stdout, sticky stop requests,
total HTTP deadlines, settings validated like flags, and answers checked by type."""

from __future__ import annotations

import argparse
import errno
import io
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import IO, Iterator

import pytest

from tools.llama_bench import settings, stdio, stopping
from tools.llama_bench.argtypes import port_type
from tools.llama_bench.bench.client import StreamParser
from tools.llama_bench.bench.records import Api, RequestSpec
from tools.llama_bench.http import HttpClient, HttpError
from tools.llama_bench.outputs import AppendFile, OutputFailed, OutputPath, output_path, write_atomic
from tools.llama_bench.server import registry
from tools.llama_bench.utils import UserError


# -- outputs ------------------------------------------------------------------------------------------
def test_atomic_write_replaces_a_regular_file_and_keeps_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "r.json"
    target.write_text("old", encoding="utf-8")
    target.chmod(0o640)
    write_atomic(OutputPath("--json-out", target), lambda fh: fh.write("new"))
    assert target.read_text(encoding="utf-8") == "new"
    assert target.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_atomic_write_through_a_symlink_replaces_the_file_not_the_link(tmp_path: Path) -> None:
    real = tmp_path / "real.json"
    real.write_text("old", encoding="utf-8")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    write_atomic(OutputPath("--json-out", link), lambda fh: fh.write("new"))
    assert link.is_symlink() and real.read_text(encoding="utf-8") == "new"


def test_a_failing_write_leaves_the_old_file_and_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "r.json"
    target.write_text("old", encoding="utf-8")

    def disk_full(fh: IO[str]) -> None:
        fh.write("partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OutputFailed, match="--json-out: could not write .*: no space left on device"):
        write_atomic(OutputPath("--json-out", target), disk_full)
    assert target.read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_a_target_that_became_a_fifo_is_not_replaced(tmp_path: Path) -> None:
    target = tmp_path / "r.json"
    checked = output_path(str(target), "--json-out")
    assert checked is not None
    os.mkfifo(target)  # appeared between the check and the write
    with pytest.raises(OutputFailed, match="not a regular file"):
        write_atomic(checked, lambda fh: fh.write("x"))
    assert os.path.exists(target) and not target.is_file()


def test_an_append_file_that_fails_keeps_what_was_written_and_says_so(tmp_path: Path) -> None:
    out = AppendFile(OutputPath("--jsonl", tmp_path / "r.jsonl")).open()
    out.write_line("one")

    class Full(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    assert out._fh is not None
    out._fh.close()
    out._fh = Full()
    out.write_line("two")  # no exception: the run goes on
    out.write_line("three")
    out.close()
    assert out.failed and "--jsonl" in out.failed and "no space left" in out.failed
    assert (tmp_path / "r.jsonl").read_text(encoding="utf-8") == "one\n"


@pytest.mark.parametrize("text", ["", "   "])
def test_an_empty_output_path_is_refused(text: str) -> None:
    with pytest.raises(UserError, match="--csv: the path is empty"):
        output_path(text, "--csv")


# -- stdout -------------------------------------------------------------------------------------------
def test_a_broken_stdout_is_remembered_and_later_writes_are_dropped() -> None:
    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

        def fileno(self) -> int:
            raise io.UnsupportedOperation("no fd")

    guarded = stdio.GuardedStream(Broken())  # type: ignore[arg-type]
    assert guarded.write("hello\n") == 6
    guarded.write("more\n")
    guarded.flush()
    assert guarded.lost == "the reader closed the pipe"


def test_final_lines_reach_stderr_once_stdout_is_lost(monkeypatch, capsys) -> None:
    guarded = stdio.GuardedStream(io.StringIO())  # type: ignore[arg-type]
    guarded.lost = "standard output was closed"
    monkeypatch.setattr(sys, "stdout", guarded)
    stdio.final("Stopped 2 of 2 llama-server process(es).")
    assert "Stopped 2 of 2" in capsys.readouterr().err


# -- stop requests ------------------------------------------------------------------------------------
@pytest.fixture
def clean_stop() -> Iterator[None]:
    stopping.reset()
    yield
    stopping.reset()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def test_a_stop_request_swallowed_by_a_finalizer_is_raised_again_at_the_next_check(clean_stop: None) -> None:
    stopping.install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)  # the handler raises here...
        time.sleep(0.1)
    except stopping.StopRequested:
        pass  # ... and something (a __del__, a weakref callback) swallowed it
    assert stopping.requested() == "SIGTERM"
    with pytest.raises(stopping.StopRequested) as exc:
        stopping.check()
    assert isinstance(exc.value, KeyboardInterrupt)  # every Ctrl-C path handles it


def test_a_stop_request_wakes_a_waiting_loop(clean_stop: None) -> None:
    threading.Timer(0.05, stopping.request, args=(signal.SIGHUP,)).start()
    started = time.monotonic()
    assert stopping.wait(10) is True
    assert time.monotonic() - started < 5


# -- HTTP deadlines -----------------------------------------------------------------------------------
class Dripper:
    def __init__(self, answer: bytes, gap: float) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.answer, self.gap = answer, gap
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.recv(65536)
            for i in range(len(self.answer)):
                try:
                    conn.send(self.answer[i : i + 1])
                except OSError:
                    break
                time.sleep(self.gap)
            conn.close()


def test_a_server_that_trickles_headers_cannot_outlast_the_total_deadline() -> None:
    server = Dripper(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", gap=0.3)
    client = HttpClient(f"http://127.0.0.1:{server.port}", timeout=1.0)
    started = time.monotonic()
    with pytest.raises(HttpError, match="timed out \\(no complete answer within 1 s\\)"):
        client.get("/metrics")
    assert time.monotonic() - started < 3


def test_an_answer_larger_than_the_limit_is_refused() -> None:
    body = b"x" * 5000
    server = Dripper(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + body, gap=0)
    client = HttpClient(f"http://127.0.0.1:{server.port}", timeout=5.0, max_body=1024)
    with pytest.raises(HttpError, match="answer larger than"):
        client.get("/props")


# -- settings validated like flags ----------------------------------------------------------------------
def test_a_setting_from_dotenv_is_validated_by_the_flag_type_and_names_its_origin(tmp_path: Path, monkeypatch) -> None:
    env = tmp_path / ".env"
    env.write_text("LLAMA_PORT=99999\n", encoding="utf-8")
    monkeypatch.setattr(settings, "_dotenv_cache", settings.read_dotenv(env))
    value = settings.setting("LLAMA_PORT")
    with pytest.raises(argparse.ArgumentTypeError) as exc:
        port_type(value)  # type: ignore[arg-type]
    assert str(exc.value).startswith(f"LLAMA_PORT in {env}: invalid port 99999")


# -- answers and files checked by type ------------------------------------------------------------------
@pytest.mark.parametrize(
    "event",
    [{"choices": {"0": {}}}, {"choices": ["x"]}, {"usage": [1, 2]}, {"timings": "fast"},
     {"choices": [{"delta": "text", "finish_reason": 5}]}, {"usage": {"completion_tokens": "many"}}],
)  # fmt: skip
def test_odd_stream_chunks_are_skipped_not_fatal(event: dict) -> None:
    spec = RequestSpec(index=0, api=Api.OPENAI_CHAT, body={}, prompt_tokens=10, max_tokens=4)
    parser = StreamParser(spec, start=0.0)
    parser.feed_line(b"data: " + json.dumps(event).encode(), 0.1)
    parser.feed_line(b"data: [DONE]", 0.2)
    rec = parser.record(200)
    assert rec.output_tokens in (0, None)


@pytest.mark.parametrize(
    "data, why",
    [([], "not a JSON object"), ({"pid": 1}, "missing"), ({"pid": "1", "create_time": 1.0}, "wrong type")],
)
def test_registry_entries_are_checked_by_type(data: object, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        registry.entry_from(data)
