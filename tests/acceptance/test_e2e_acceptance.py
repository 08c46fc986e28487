"""End-to-end behaviour of `./llama-run`, run as a user would, against the fake llama-server."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
import unittest
from pathlib import Path

import pytest

from tests.helpers import (
    FAKE_SERVER,
    LLAMA_RUN,
    LiveOutput,
    free_port,
    http,
    pid_alive,
    run_cli,
    running_server,
    server_pid_from,
    spawn_cli,
    wait_until,
)

TOK_LINE = re.compile(r"^\[tok\] (now|1m|15m|all): p_tok/s (\d+\.\d+) g_tok/s (\d+\.\d+) p_tok (\d+) g_tok (\d+)")


@pytest.mark.usefixtures("model_file")
class E2EAcceptanceTests(unittest.TestCase):
    @pytest.fixture(autouse=True)
    def _model(self, model_file: Path) -> None:
        self.model = str(model_file)

    def start_run(self, port: int, *extra: str) -> LiveOutput:
        args = ["run", "--llama-server", str(FAKE_SERVER), "--model", self.model, "--port", str(port)]
        args += ["--ui", "plain", "--interval", "0.2", "--stats-interval", "1", *extra]
        live = LiveOutput(spawn_cli(LLAMA_RUN, *args))
        self.addCleanup(live.kill_group)
        return live

    def test_llama_run_plain_mode_prints_stats_and_exits_cleanly(self) -> None:
        port = free_port()
        live = self.start_run(port)
        self.assertTrue(live.wait_for("[tok] all:", 30), live.text())
        server_pid = server_pid_from(live.text())
        self.assertIsNotNone(server_pid)
        live.interrupt()
        self.assertEqual(live.finish(), 0, live.text())
        out = live.text()
        for prefix in ("[sys] now:", "[sys] 1m:", "[sys] 15m:", "[sys] all:"):
            self.assertIn(prefix, out)
        for line in live.matching("[tok]"):
            self.assertRegex(line, TOK_LINE)
        self.assertRegex(out, r"llama-server exited with code -?\d+")
        self.assertFalse(pid_alive(server_pid), "the server outlived llama-run")

    def test_generated_tokens_per_s_show_up_in_plain_stats(self) -> None:
        port = free_port()
        live = self.start_run(port, "--", "--token-interval-ms", "2")
        self.assertTrue(live.wait_for("[tok] now:", 30), live.text())
        status, body = http("POST", f"http://127.0.0.1:{port}/completion", {"prompt": "hello there", "n_predict": 200})
        self.assertEqual(status, 200, body)
        self.assertTrue(
            wait_until(lambda: any(float(TOK_LINE.match(x).group(3)) > 0 for x in live.matching("[tok] now:")), 15),
            live.text(),
        )
        # Once idle, `now` keeps showing the speed of the last burst instead of dropping to zero.
        self.assertTrue(live.wait_for("(idle, last burst)", 15))
        idle_lines = [x for x in live.matching("[tok] now:") if "idle, last burst" in x]
        self.assertGreater(float(TOK_LINE.match(idle_lines[-1]).group(3)), 0.0)
        all_lines = live.matching("[tok] all:")
        self.assertGreaterEqual(int(TOK_LINE.match(all_lines[-1]).group(5)), 200)
        live.interrupt()
        self.assertEqual(live.finish(), 0)

    def test_duration_stops_the_server_and_exits_zero(self) -> None:
        port = free_port()
        live = self.start_run(port, "--duration", "1.5")
        self.assertEqual(live.finish(60), 0, live.text())
        pid = server_pid_from(live.text())
        self.assertIn("llama-server exited with code", live.text())
        self.assertFalse(pid_alive(pid))

    def test_server_that_dies_on_its_own_gives_nonzero_exit(self) -> None:
        port = free_port()
        live = self.start_run(port, "--", "--crash-after", "0")
        self.assertTrue(live.wait_for("[tok] now:", 30), live.text())
        with self.assertRaises(OSError):  # the server dies mid-request
            http("POST", f"http://127.0.0.1:{port}/completion", {"prompt": "x", "n_predict": 4}, timeout=5)
        self.assertNotEqual(live.finish(30), 0)
        self.assertIn("llama-server exited with code", live.text())

    def test_sigterm_and_sighup_stop_the_server_like_ctrl_c(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            port = free_port()
            live = self.start_run(port)
            self.assertTrue(live.wait_for("ready at", 30), live.text())
            pid = server_pid_from(live.text())
            live.proc.send_signal(sig)
            self.assertEqual(live.finish(), 0, live.text())
            self.assertFalse(pid_alive(pid))

    def test_sigkill_of_llama_run_does_not_leave_the_server_running(self) -> None:
        port = free_port()
        live = self.start_run(port)
        self.assertTrue(live.wait_for("ready at", 30), live.text())
        pid = server_pid_from(live.text())
        live.proc.kill()  # SIGKILL: no handler of ours runs
        live.finish()
        self.assertTrue(wait_until(lambda: not pid_alive(pid), 5), "server survived its parent's SIGKILL")

    def test_ctrl_c_during_model_load_leaves_nothing_running(self) -> None:
        port = free_port()
        live = self.start_run(port, "--", "--load-delay", "30")
        self.assertTrue(live.wait_for("pid ", 30), live.text())
        pid = server_pid_from(live.text())
        time.sleep(0.5)
        live.interrupt()
        self.assertEqual(live.finish(), 0, live.text())
        self.assertFalse(pid_alive(pid))

    def test_port_in_use_is_refused_and_names_the_holder(self) -> None:
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            port = holder.getsockname()[1]
            res = run_cli(
                LLAMA_RUN, "run", "--llama-server", str(FAKE_SERVER), "--model", self.model, "--port", str(port)
            )
        self.assertEqual(res.returncode, 2)
        self.assertIn(f"port {port} is already in use", res.stderr)
        self.assertIn("python", res.stderr)  # the holder, as far as the OS tells us
        self.assertNotIn("Traceback", res.stderr)

    def test_second_server_is_refused_unless_allowed(self) -> None:
        with running_server(free_port()):
            res = run_cli(
                LLAMA_RUN, "run", "--llama-server", str(FAKE_SERVER), "--model", self.model, "--port", str(free_port())
            )
            self.assertEqual(res.returncode, 2, res.stdout + res.stderr)
            self.assertIn("already running", res.stderr)
            self.assertIn("--allow-multi-server", res.stderr)
            ok = run_cli(
                LLAMA_RUN,
                *("run", "--llama-server", str(FAKE_SERVER), "--model", self.model, "--port", str(free_port())),
                *("--allow-multi-server", "--ui", "plain", "--duration", "1"),
            )
            self.assertEqual(ok.returncode, 0, ok.stdout + ok.stderr)

    def test_failed_start_reports_exit_code_and_log_lines(self) -> None:
        res = run_cli(
            LLAMA_RUN, "run", "--llama-server", str(FAKE_SERVER), "--model", self.model, "--port", str(free_port()),
            "--", "--fail-start",
        )  # fmt: skip
        self.assertEqual(res.returncode, 1)
        self.assertIn("exited with code 1", res.stderr)
        self.assertIn("failed to load model", res.stderr)
        self.assertNotIn("Traceback", res.stderr)

    def test_load_longer_than_startup_timeout_is_a_clear_error(self) -> None:
        res = run_cli(
            LLAMA_RUN, "run", "--llama-server", str(FAKE_SERVER), "--model", self.model, "--port", str(free_port()),
            "--startup-timeout", "1", "--", "--load-delay", "20",
        )  # fmt: skip
        self.assertEqual(res.returncode, 1)
        self.assertIn("did not become ready within 1 s", res.stderr)
        self.assertNotIn("Traceback", res.stderr)
        pid = server_pid_from(res.stdout)
        self.assertFalse(pid_alive(pid))

    def test_bad_flag_values_give_one_line_errors(self) -> None:
        for flags, needle in (
            (["--port", "0"], "invalid port 0"),
            (["--port", "abc"], "invalid port 'abc'"),
            (["--interval", "-1"], "--interval"),
            (["--interval", "abc"], "--interval"),
            (["--model", "/nonexistent/model.gguf"], "model file not found"),
            (["--llama-server", "/nonexistent/llama-server"], "llama-server not found"),
        ):
            res = run_cli(LLAMA_RUN, "run", "--llama-server", str(FAKE_SERVER), "--model", self.model, *flags)
            self.assertEqual(res.returncode, 2, (flags, res.stderr))
            error_lines = [x for x in res.stderr.splitlines() if "error" in x]
            self.assertEqual(len(error_lines), 1, res.stderr)
            self.assertIn(needle, res.stderr)
            self.assertNotIn("Traceback", res.stderr)

    def test_no_subcommand_means_run(self) -> None:
        port = free_port()
        live = LiveOutput(
            spawn_cli(
                LLAMA_RUN, "--llama-server", str(FAKE_SERVER), "--model", self.model, "--port", str(port),
                "--ui", "plain", "--duration", "1",
            )  # fmt: skip
        )
        self.assertEqual(live.finish(60), 0, live.text())
        self.assertIn("ready at", live.text())

    def test_detach_leaves_the_server_running_and_ps_lists_it(self) -> None:
        port = free_port()
        res = run_cli(
            LLAMA_RUN, "run", "--llama-server", str(FAKE_SERVER), "--model", self.model, "--port", str(port),
            "--detach",
        )  # fmt: skip
        self.assertEqual(res.returncode, 0, res.stderr)
        pid = server_pid_from(res.stdout)
        try:
            self.assertTrue(pid_alive(pid))
            ps = run_cli(LLAMA_RUN, "ps")
            self.assertIn(str(pid), ps.stdout)
            self.assertIn(str(port), ps.stdout)
            self.assertIn("us", ps.stdout)
        finally:
            stop = run_cli(LLAMA_RUN, "stop-all")
        self.assertEqual(stop.returncode, 0, stop.stdout + stop.stderr)
        self.assertTrue(wait_until(lambda: not pid_alive(pid), 10))


class StopAllTests(unittest.TestCase):
    def test_stop_all_stops_external_server_and_spares_a_decoy(self) -> None:
        port = free_port()
        # A decoy: an unrelated program whose *arguments* mention llama-server.
        decoy = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(60)", "llama-server", "--port", str(port)]
        )
        self.addCleanup(decoy.kill)
        with running_server(port) as server:
            dry = run_cli(LLAMA_RUN, "stop-all", "--dry-run")
            self.assertEqual(dry.returncode, 0)
            self.assertIn("Found llama-server processes:", dry.stdout)
            self.assertIn(str(server.pid), dry.stdout)
            self.assertNotIn(str(decoy.pid), dry.stdout)
            self.assertIsNone(server.poll())

            res = run_cli(LLAMA_RUN, "stop-all")
            self.assertEqual(res.returncode, 0, res.stdout + res.stderr)
            self.assertIn("Found llama-server processes:", res.stdout)
            self.assertIn(f"pid {server.pid}", res.stdout)
            self.assertTrue(wait_until(lambda: server.poll() is not None, 15))
        self.assertIsNone(decoy.poll(), "stop-all touched a process that merely mentions llama-server")

    def test_stop_all_with_nothing_running_exits_zero(self) -> None:
        res = run_cli(LLAMA_RUN, "stop-all")
        self.assertEqual(res.returncode, 0)
        self.assertIn("No llama-server processes found", res.stdout)
