"""`./llama-bench benchmark`, `bench`, `compare` and `plot`, run as a user would, against the fake
llama-server: bad input, result files, crash safety, Ctrl-C, and the bench reuse/start paths."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

from tests.helpers import (
    FAKE_SERVER,
    LLAMA_BENCH,
    LiveOutput,
    free_port,
    is_healthy,
    pid_alive,
    run_cli,
    running_server,
    spawn_cli,
    wait_until,
)

QUICK = ("--max-output-tokens", "8", "--num-requests", "2", "--warmup", "1", "--metrics-interval", "0.2")


def one_error_line(res: Any) -> str:
    lines = [line for line in res.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    # `llama-bench: error: ...` from the command, `llama-bench benchmark: error: ...` from its parser.
    assert re.match(r"^llama-bench( [a-z]+)?: error: \S", lines[0]), res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    return lines[0]


def records(path: Path) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def benchmark(port: int, tmp_path: Path, *args: str, timeout: float = 120.0, **kwargs: Any) -> Any:
    return run_cli(
        LLAMA_BENCH,
        "benchmark",
        "--endpoint",
        f"http://127.0.0.1:{port}",
        "--jsonl",
        str(tmp_path / "r.jsonl"),
        *args,
        timeout=timeout,
        **kwargs,
    )


# -- bad input: one clear line on stderr, exit 2 -----------------------------------------------------
@pytest.mark.parametrize("sizes", ["1q", "0", "-5", "", "1k,,2k", "abc"])
def test_bad_prompt_sizes_give_one_line_and_exit_2(sizes: str) -> None:
    res = run_cli(LLAMA_BENCH, "benchmark", f"--prompt-sizes={sizes}", "--endpoint", "http://127.0.0.1:9")
    assert res.returncode == 2, res.stderr
    assert "--prompt-sizes" in one_error_line(res)


def start_args(model_file: Path, port: int) -> list:
    """`bench` arguments that make it start its own fake llama-server on `port`."""
    server = ["--llama-server", str(FAKE_SERVER), "--model", str(model_file)]
    return ["bench", *server, "--port", str(port), "--allow-multi-server"]


def test_negative_size_as_a_separate_argument_is_rejected_too() -> None:
    res = run_cli(LLAMA_BENCH, "benchmark", "--prompt-sizes", "-5", "--endpoint", "http://127.0.0.1:9")
    assert res.returncode == 2
    assert "-5" in one_error_line(res)


@pytest.mark.parametrize("conc", ["0", "-1", "x", ""])
def test_bad_concurrency_gives_one_line_and_exit_2(conc: str) -> None:
    res = run_cli(LLAMA_BENCH, "benchmark", f"--concurrency={conc}", "--endpoint", "http://127.0.0.1:9")
    assert res.returncode == 2
    assert "--concurrency" in one_error_line(res)


def test_bad_number_flags_exit_2_without_traceback() -> None:
    for flag, value in (("--max-output-tokens", "0"), ("--request-rate", "-1"), ("--warmup", "x")):
        res = run_cli(LLAMA_BENCH, "benchmark", flag, value)
        assert res.returncode == 2, (flag, res.stderr)
        assert "Traceback" not in res.stderr and flag in res.stderr


def test_an_endpoint_that_does_not_answer_is_reported_within_the_timeout(tmp_path: Path) -> None:
    start = time.monotonic()
    res = benchmark(free_port(), tmp_path, "--prompt-sizes", "100")
    assert res.returncode == 2
    assert "cannot reach" in one_error_line(res)
    assert time.monotonic() - start < 30


def test_an_endpoint_that_is_not_an_url_is_rejected() -> None:
    res = run_cli(LLAMA_BENCH, "benchmark", "--endpoint", "localhost:11433")
    assert res.returncode == 2 and "--endpoint" in one_error_line(res)


def test_compare_rejects_files_that_are_not_results(tmp_path: Path) -> None:
    bogus = tmp_path / "x.json"
    bogus.write_text("{}", encoding="utf-8")
    res = run_cli(LLAMA_BENCH, "compare", str(bogus), str(tmp_path / "missing.json"))
    assert res.returncode == 2 and "not a llama-bench result" in one_error_line(res)


# -- against the fake server ---------------------------------------------------------------------------
def test_prompt_size_beyond_the_context_is_skipped_or_fails_with_strict(fake_port: int, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    res = benchmark(fake_port, tmp_path, "--prompt-sizes", "100,10k", *QUICK, "--json-out", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "skipping prompt size 10000" in res.stdout
    cells = {c["prompt_size"]: c for c in json.loads(out.read_text(encoding="utf-8"))["cells"]}
    assert cells[100]["status"] == "done"
    assert cells[10000]["status"] == "skipped" and "4096" in cells[10000]["reason"]

    strict = benchmark(fake_port, tmp_path, "--prompt-sizes", "100,10k", "--strict", *QUICK)
    assert strict.returncode == 2
    assert "10000" in one_error_line(strict)


def test_benchmark_writes_versioned_json_csv_and_jsonl(fake_port: int, tmp_path: Path) -> None:
    out, csv_path = tmp_path / "r.json", tmp_path / "r.csv"
    res = benchmark(
        fake_port,
        tmp_path,
        "--prompt-sizes",
        "100,300",
        "--concurrency",
        "1,3",
        "--max-output-tokens",
        "12",
        "--num-requests",
        "3",
        "--seed",
        "7",
        "--metrics-interval",
        "0.1",
        "--json-out",
        str(out),
        "--csv",
        str(csv_path),
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Summary" in res.stdout
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["schema"] == "llama-studio.benchmark/3" and result["status"] == "complete"
    assert result["api"] == "completion" and result["params"]["seed"] == 7
    env = result["environment"]
    assert env["tool"]["name"] == "llama-bench" and env["tool"]["version"]
    server = env["server"]
    assert server["is_llamacpp"] and server["n_ctx"] == 4096 and server["total_slots"] == 2
    assert "build_info" in server and "model_path" in server
    for key in ("cpu_model", "cpu_cores_logical", "ram_total_bytes", "os", "gpus"):
        assert key in env["host"]
    assert result["request_example"]["cache_prompt"] is False and result["request_example"]["ignore_eos"] is True
    assert len(result["cells"]) == 4
    for cell in result["cells"]:
        assert cell["status"] == "done" and cell["requests"]["ok"] == 3
        for stat in ("mean", "p50", "p90", "p99", "min", "max"):
            assert cell["latency"]["ttft_ms"][stat] is not None
            assert cell["latency"]["itl_ms"][stat] is not None
        assert cell["throughput"]["gen_tps"] > 0 and cell["throughput"]["requests_per_s"] > 0
        assert cell["energy"] is not None
    c3 = next(c for c in result["cells"] if c["concurrency"] == 3)
    assert any("server slots" in w for w in c3["warnings"]), c3["warnings"]
    measured = [r for r in result["requests"] if not r["warmup"]]
    [warmup] = [r for r in result["requests"] if r["warmup"]]
    assert (warmup["prompt_tokens_requested"], warmup["max_tokens"]) == (100, 12)  # the first cell's shape
    assert len(measured) == 12
    for rec in measured:
        assert rec["ok"] and rec["prompt_tokens_reported"] == rec["prompt_tokens_requested"]
        assert rec["output_tokens"] == 12 and rec["cache_n"] in (0, None)
    assert result["metrics_series"] and "prompt_tokens_total" in result["metrics_series"][-1]["values"]
    assert len(records(tmp_path / "r.jsonl")) == len(result["requests"])
    rows = csv_path.read_text(encoding="utf-8").splitlines()
    assert len(rows) == 5 and rows[0].startswith("label,prompt_size,concurrency")


@pytest.mark.parametrize("api", ["openai-chat", "openai-completions"])
def test_openai_apis_measure_the_same_way(fake_port: int, tmp_path: Path, api: str) -> None:
    out = tmp_path / "r.json"
    res = benchmark(fake_port, tmp_path, "--api", api, "--prompt-sizes", "200", *QUICK, "--json-out", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["api"] == api
    for rec in (r for r in result["requests"] if not r["warmup"]):
        assert rec["ok"] and rec["output_tokens"] == 8 and rec["ttft_ms"] > 0
        assert rec["prompt_tokens_reported"] == 200, rec


def test_compare_two_runs(fake_port: int, tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for path in (a, b):
        res = benchmark(fake_port, tmp_path, "--prompt-sizes", "100", *QUICK, "--json-out", str(path))
        assert res.returncode == 0, res.stderr
    res = run_cli(LLAMA_BENCH, "compare", str(a), str(b))
    assert res.returncode == 0, res.stderr
    assert "gen tok/s" in res.stdout and "TTFT p50 ms" in res.stdout
    assert re.search(r"[+-]\d+\.\d%", res.stdout), res.stdout  # a relative change per metric


def test_plot_needs_matplotlib_or_writes_a_png(fake_port: int, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    assert benchmark(fake_port, tmp_path, "--prompt-sizes", "100", *QUICK, "--json-out", str(out)).returncode == 0
    res = run_cli(LLAMA_BENCH, "plot", str(out), "--out", str(tmp_path / "p.png"))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert res.returncode != 0 and "matplotlib" in one_error_line(res)
    else:
        assert res.returncode == 0 and (tmp_path / "p.png").stat().st_size > 0


# -- crash safety ------------------------------------------------------------------------------------
def test_server_death_keeps_finished_records_prints_summary_and_fails(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "r.json"
    with running_server(port, "--metrics", "--crash-after", "4", "--token-interval-ms", "2") as server:
        res = benchmark(
            port,
            tmp_path,
            "--prompt-sizes",
            "100,200",
            "--max-output-tokens",
            "8",
            "--num-requests",
            "6",
            "--warmup",
            "0",
            "--json-out",
            str(out),
            "--timeout",
            "20",
        )
        assert wait_until(lambda: server.poll() is not None, 10)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    assert "Summary" in res.stdout and "stopped responding" in res.stderr
    lines = records(tmp_path / "r.jsonl")
    ok = [r for r in lines if r["ok"]]
    assert 1 <= len(ok) <= 4
    failed = [r for r in lines if not r["ok"]]
    assert failed and all(r["error"] for r in failed)
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["status"] == "server-died"
    assert sum(c.get("requests", {}).get("ok", 0) for c in result["cells"]) == len(ok)


def test_ctrl_c_keeps_records_and_prints_the_summary(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "r.json"
    with running_server(port, "--metrics", "--token-interval-ms", "20"):
        live = LiveOutput(
            spawn_cli(
                LLAMA_BENCH,
                "benchmark",
                "--endpoint",
                f"http://127.0.0.1:{port}",
                "--prompt-sizes",
                "100,200,300",
                "--max-output-tokens",
                "20",
                "--num-requests",
                "4",
                "--jsonl",
                str(tmp_path / "r.jsonl"),
                "--json-out",
                str(out),
            )
        )
        try:
            assert live.wait_for("cell p200-c1", 60), live.text()
            live.interrupt()
            code = live.finish(30)
        finally:
            live.kill_group()
        assert is_healthy(port), "Ctrl-C must not touch a server we did not start"
    assert code == 130, live.text()
    text = live.text()
    assert "Summary" in text and "Traceback" not in text
    lines = records(tmp_path / "r.jsonl")
    assert sum(1 for r in lines if r["ok"] and r.get("prompt_size") == 100) == 4
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["status"] == "interrupted"
    statuses = {c["prompt_size"]: c["status"] for c in result["cells"]}
    assert statuses[100] == "done" and statuses[300] == "not run"


# -- bench: reuse or start -------------------------------------------------------------------------
def test_bench_reuses_a_running_server_and_leaves_it_running(tmp_path: Path) -> None:
    port = free_port()
    with running_server(port, "--metrics") as server:
        res = run_cli(
            LLAMA_BENCH,
            "bench",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--prompt-sizes",
            "100,200",
            "--max-output-tokens",
            "16",
            "--jsonl",
            str(tmp_path / "r.jsonl"),
        )
        assert res.returncode == 0, res.stdout + res.stderr
        assert f"Reusing existing llama-server at 127.0.0.1:{port}" in res.stdout
        assert "Starting llama-server" not in res.stdout
        assert server.poll() is None and is_healthy(port)
    ok = [r for r in records(tmp_path / "r.jsonl") if r["ok"] and not r["warmup"]]
    assert len(ok) == 6 and {r["prompt_size"] for r in ok} == {100, 200}


def test_bench_starts_a_server_and_stops_it_afterwards(tmp_path: Path, model_file: Path) -> None:
    port = free_port()
    out = tmp_path / "r.json"
    res = run_cli(
        LLAMA_BENCH,
        *start_args(model_file, port),
        "--prompt-sizes",
        "100,200",
        "--max-output-tokens",
        "16",
        "--json-out",
        str(out),
        "--jsonl",
        str(tmp_path / "r.jsonl"),
        "--",
        "--token-interval-ms",
        "1",
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Starting llama-server" in res.stdout
    env = json.loads(out.read_text(encoding="utf-8"))["environment"]
    server = env["server"]
    assert server["started_by_us"] and "--token-interval-ms" in server["command"]
    assert env["model"]["architecture"] == "llama" and env["model"]["context_length"] == 2048  # its GGUF header
    assert server["memory_estimate"].startswith("RAM ")
    assert not pid_alive(server["pid"]) and not is_healthy(port)


def test_bench_stops_the_server_it_started_on_ctrl_c(tmp_path: Path, model_file: Path) -> None:
    port = free_port()
    live = LiveOutput(
        spawn_cli(
            LLAMA_BENCH,
            *start_args(model_file, port),
            "--prompt-sizes",
            "100,200",
            "--max-output-tokens",
            "50",
            "--num-requests",
            "20",
            "--jsonl",
            str(tmp_path / "r.jsonl"),
            "--",
            "--token-interval-ms",
            "20",
        )
    )
    try:
        assert live.wait_for("cell p100-c1", 60), live.text()
        assert is_healthy(port)
        live.interrupt()
        code = live.finish(60)
    finally:
        live.kill_group()
    assert code == 130, live.text()
    assert "Stopped llama-server" in live.text()
    assert wait_until(lambda: not is_healthy(port), 10)


def test_bench_start_failure_is_reported_and_nothing_is_left(model_file: Path) -> None:
    port = free_port()
    res = run_cli(
        LLAMA_BENCH,
        *start_args(model_file, port),
        "--prompt-sizes",
        "100",
        "--",
        "--fail-start",
    )
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert "exited with code" in res.stderr
    assert not is_healthy(port)


def test_energy_per_cell_from_a_powercap_tree(fake_port: int, tmp_path: Path) -> None:
    import os
    import threading

    domain = tmp_path / "powercap" / "intel-rapl:0"
    domain.mkdir(parents=True)
    (domain / "name").write_text("package-0\n", encoding="utf-8")
    (domain / "max_energy_range_uj").write_text("262143328850\n", encoding="utf-8")
    energy = domain / "energy_uj"
    energy.write_text("1000\n", encoding="utf-8")
    stop = threading.Event()

    def burn() -> None:  # the package uses 1 J every 10 ms while the benchmark runs
        uj = 1000
        tmp = domain / "energy_uj.tmp"
        while not stop.wait(0.01):
            uj += 1_000_000
            tmp.write_text(f"{uj}\n", encoding="utf-8")
            os.replace(tmp, energy)  # atomically, as sysfs would: a reader never sees a half-written value

    thread = threading.Thread(target=burn, daemon=True)
    thread.start()
    out = tmp_path / "r.json"
    env = dict(os.environ, LLAMA_STUDIO_POWERCAP_ROOT=str(tmp_path / "powercap"))
    try:
        res = benchmark(fake_port, tmp_path, "--prompt-sizes", "100", *QUICK, "--json-out", str(out), env=env)
    finally:
        stop.set()
        thread.join()
    assert res.returncode == 0, res.stdout + res.stderr
    cell = json.loads(out.read_text(encoding="utf-8"))["cells"][0]
    assert cell["energy"]["available"], cell["energy"]
    assert cell["energy"]["cpu_j"] > 0 and cell["energy"]["wh"] == pytest.approx(cell["energy"]["total_j"] / 3600)
    assert cell["energy"]["gen_tokens_per_j"] > 0
    assert "Wh" in res.stdout


def test_poisson_arrivals_record_client_queue_time(fake_port: int, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    res = benchmark(
        fake_port,
        tmp_path,
        "--prompt-sizes",
        "100",
        "--max-output-tokens",
        "8",
        "--request-rate",
        "40",
        "--concurrency",
        "2",
        "--num-requests",
        "8",
        "--json-out",
        str(out),
    )
    assert res.returncode == 0, res.stdout + res.stderr
    result = json.loads(out.read_text(encoding="utf-8"))
    measured = [r for r in result["requests"] if not r["warmup"]]
    assert len(measured) == 8 and all(r["ok"] and r["queue_ms"] is not None for r in measured)
    starts = sorted(r["t_s"] for r in measured)
    assert starts[-1] - starts[0] > 0.02  # spread out by the arrival process, not sent at once
    assert result["cells"][0]["latency"]["queue_ms"]["n"] == 8
    assert result["params"]["request_rate"] == 40


def test_a_hung_server_fails_requests_after_the_timeout(tmp_path: Path) -> None:
    port = free_port()
    with running_server(port, "--hang-after", "1", "--token-interval-ms", "2"):
        start = time.monotonic()
        res = benchmark(
            port,
            tmp_path,
            "--prompt-sizes",
            "100",
            "--max-output-tokens",
            "16",
            "--num-requests",
            "3",
            "--warmup",
            "0",
            "--timeout",
            "1",
        )
        elapsed = time.monotonic() - start
    assert res.returncode == 1, res.stdout + res.stderr
    assert "request(s) failed" in res.stderr and "Traceback" not in res.stderr
    lines = records(tmp_path / "r.jsonl")
    assert [r["ok"] for r in lines] == [True, False, False]
    assert all("timed out" in r["error"] for r in lines[1:])
    assert all(r["output_tokens"] == 8 for r in lines[1:])  # half of the tokens came before the stall
    assert elapsed < 60


# -- SLO, workloads, datasets, repeats, server series ---------------------------------------------------
DATA = Path(__file__).resolve().parents[1] / "data"


def measured(result: Dict[str, Any]) -> List[Dict[str, Any]]:
    return [r for r in result["requests"] if not r["warmup"]]


def test_shared_prefix_requests_hit_the_prompt_cache(fake_port: int, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    res = benchmark(
        fake_port, tmp_path, "--workload", "shared-prefix", "--prefix-tokens", "200", "--groups", "2",
        "--prompt-sizes", "300", "--max-output-tokens", "4", "--num-requests", "8", "--json-out", str(out),
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["request_example"]["cache_prompt"] is True and result["workload"]["kind"] == "shared-prefix"
    [cell] = result["cells"]
    # One request at a time, two groups on two slots: each group's first request fills a slot, the rest hit it.
    cache = cell["cache"]
    assert (cache["requests"], cache["hit_requests"]) == (8, 6), cache
    hits = [r for r in measured(result) if r["cache_n"]]
    assert len(hits) == 6 and all(r["cache_n"] >= 200 for r in hits)
    assert all(r["prompt_tokens_reported"] == 300 for r in measured(result))
    assert cell["server_metrics"]["prompt_tokens_cached"] == sum(r["cache_n"] for r in hits)
    # 300 tokens of prefill vs about 100: cached requests answer sooner.
    assert cache["ttft_cached_ms"]["p50"] < cache["ttft_uncached_ms"]["p50"]
    assert not any("prefill speed is overstated" in w for w in cell["warnings"])  # the cache is the point here
    assert "prompt cache: 6/8 requests hit" in res.stdout


def test_multi_turn_sends_each_turn_after_the_previous_answer(fake_port: int, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    res = benchmark(
        fake_port, tmp_path, "--workload", "multi-turn", "--turns", "3", "--prompt-sizes", "100",
        "--max-output-tokens", "8", "--concurrency", "2", "--num-requests", "6", "--json-out", str(out),
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    result = json.loads(out.read_text(encoding="utf-8"))
    recs = measured(result)
    assert len(recs) == 6 and {(r["session"], r["turn"]) for r in recs} == {(s, t) for s in (0, 1) for t in (0, 1, 2)}
    by_turn = {(r["session"], r["turn"]): r for r in recs}
    for (session, turn), rec in by_turn.items():
        assert rec["ok"] and rec["prompt_tokens_reported"] == rec["prompt_tokens_requested"] == 100 + turn * 108
        if turn:
            before = by_turn[(session, turn - 1)]
            assert rec["t_s"] >= before["t_s"] + before["e2e_ms"] / 1000.0  # sent after the answer was in
            # The server kept the previous prompt and its answer (all but the last token) in the slot.
            assert rec["cache_n"] == before["prompt_tokens_requested"] + 8 - 1
    assert result["cells"][0]["cache"]["hit_requests"] == 4


def test_a_dataset_is_replayed_with_exact_lengths(fake_port: int, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    res = benchmark(
        fake_port, tmp_path, "--dataset", str(DATA / "sharegpt_sample.json"), "--concurrency", "2",
        "--max-output-tokens", "64", "--json-out", str(out),
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    result = json.loads(out.read_text(encoding="utf-8"))
    [cell] = result["cells"]
    assert cell["label"] == "dataset-c2" and cell["workload"] == "dataset" and cell["requests"]["ok"] == 12
    recs = measured(result)
    assert len({r["prompt_tokens_requested"] for r in recs}) > 3  # the file's own lengths, not one size
    for rec in recs:
        assert rec["prompt_tokens_reported"] == rec["prompt_tokens_requested"]
        assert rec["output_tokens"] == rec["max_tokens"]  # the recorded answer's length, generated in full
    assert any("2 conversation(s)" in n for n in result["notes"])


def test_a_bad_dataset_is_one_line_naming_the_file_and_the_entry(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt_tokens": 10}\n{"prompt_tokens": -3}\n', encoding="utf-8")
    res = run_cli(LLAMA_BENCH, "benchmark", "--dataset", str(bad), "--endpoint", "http://127.0.0.1:9")
    assert res.returncode == 2
    line = one_error_line(res)
    assert str(bad) in line and "line 2" in line and "prompt_tokens" in line


def test_slots_are_sampled_beside_metrics_on_the_clock_of_the_requests(fake_port: int, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    res = benchmark(
        fake_port, tmp_path, "--prompt-sizes", "100", "--max-output-tokens", "40", "--concurrency", "2",
        "--num-requests", "6", "--metrics-interval", "0.1", "--json-out", str(out),
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    result = json.loads(out.read_text(encoding="utf-8"))
    series = [s for s in result["slots_series"] if s["cell"] == "p100-c2"]
    assert len(series) >= 3 and all(s["total"] == 2 and 0 <= s["busy"] <= 2 for s in series)
    recs = measured(result)
    start, end = min(r["t_s"] for r in recs), max(r["t_s"] + r["e2e_ms"] / 1000.0 for r in recs)
    during = [s for s in series if start < s["t"] < end]
    assert during and max(s["busy"] for s in during) >= 1  # taken while requests were in flight
    assert all(start - 1.0 <= s["t"] <= end + 1.0 for s in series)
    assert result["cells"][0]["server_metrics"]["slots_busy_max"] >= 1
