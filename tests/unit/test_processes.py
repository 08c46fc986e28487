"""Which processes count as llama-servers, and the registry's protection against pid reuse."""

from __future__ import annotations

import os
import subprocess
import time

from tools.llama_bench.server import registry
from tools.llama_bench.server.procs import StopOutcome, _flag_value, _is_server, stop_process


def test_servers_are_matched_by_program_name_not_by_arguments():
    assert _is_server("llama-server", None, ["llama-server", "-m", "x"])
    assert _is_server("python3", "/usr/bin/python3", ["/opt/llama/bin/llama-server", "--port", "1"])
    assert _is_server("x", "/build/bin/llama-server", [])
    assert not _is_server("vim", "/usr/bin/vim", ["vim", "llama-server"])
    assert not _is_server("bash", "/bin/bash", ["bash", "-c", "llama-server --port 8080"])
    assert not _is_server("grep", "/bin/grep", ["grep", "/usr/bin/llama-server"])


def test_flag_values_are_read_in_both_spellings():
    assert _flag_value(["llama-server", "--port", "8081"], "--port") == "8081"
    assert _flag_value(["llama-server", "--port=8082"], "--port") == "8082"
    assert _flag_value(["llama-server", "-m", "a.gguf"], "-m", "--model") == "a.gguf"
    assert _flag_value(["llama-server"], "--port") is None


def entry_for(pid: int, create_time: float) -> registry.ServerEntry:
    return registry.ServerEntry(
        pid=pid, create_time=create_time, host="127.0.0.1", port=1, cmdline=["x"], model=None,
        log_path="/dev/null", started_at=time.time(), owner_pid=os.getpid(),
    )  # fmt: skip


def test_registry_keeps_live_entries_and_drops_ones_whose_pid_was_reused():
    live = subprocess.Popen(["sleep", "30"])
    try:
        real_start = registry.process_create_time(live.pid)
        registry.register(entry_for(live.pid, real_start))
        assert [e.pid for e in registry.entries()] == [live.pid]
        # Same pid, different start time: the pid now belongs to another process.
        registry.register(entry_for(live.pid, real_start - 1000))
        assert registry.entries() == []
    finally:
        live.kill()
        live.wait()


def test_stop_process_refuses_a_pid_that_now_belongs_to_someone_else():
    bystander = subprocess.Popen(["sleep", "30"])
    try:
        result = stop_process(bystander.pid, create_time=1.0, grace=1)
        assert result.outcome is StopOutcome.GONE
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_stop_process_escalates_to_sigkill_after_the_grace_period():
    stubborn = subprocess.Popen(["bash", "-c", "trap '' TERM; sleep 30 & wait"])
    time.sleep(0.3)
    start = registry.process_create_time(stubborn.pid)
    result = stop_process(stubborn.pid, start, grace=0.5)
    stubborn.wait(5)
    assert result.outcome is StopOutcome.KILLED
