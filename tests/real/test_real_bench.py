"""`llama-bench benchmark` and `bench` against a real llama-server running the default model:
prompt lengths are exact, generation runs to --max-output-tokens, nothing is served from the cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import LLAMA_BENCH, free_port, is_healthy, run_cli, running_server

pytestmark = pytest.mark.real


def bench_json(tmp_path: Path, endpoint: str, *args: str) -> dict:
    out = tmp_path / "result.json"
    res = run_cli(
        LLAMA_BENCH,
        "benchmark",
        "--endpoint",
        endpoint,
        "--json-out",
        str(out),
        "--jsonl",
        str(tmp_path / "r.jsonl"),
        "--quiet",
        *args,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(out.read_text(encoding="utf-8"))


@pytest.mark.parametrize("api,sizes", [("completion", (100, 300, 1000)), ("openai-chat", (64, 300))])
def test_prompt_lengths_are_exact_and_generation_is_complete(
    tmp_path, real_server, real_model, real_threads, api, sizes
):
    port = free_port()
    args = ("-m", str(real_model), "-t", real_threads, "-c", "4096", "--metrics")
    with running_server(port, *args, binary=real_server, ready_timeout=120):
        result = bench_json(
            tmp_path,
            f"http://127.0.0.1:{port}",
            "--api",
            api,
            "--prompt-sizes",
            ",".join(map(str, sizes)),
            "--max-output-tokens",
            "24",
            "--num-requests",
            "2",
            "--concurrency",
            "1,2",
        )
    measured = [r for r in result["requests"] if not r["warmup"]]
    assert len(measured) == 2 * 2 * len(sizes)
    for rec in measured:
        assert rec["ok"], rec
        assert rec["prompt_tokens_reported"] == rec["prompt_tokens_requested"], rec
        assert rec["server_prompt_n"] == rec["prompt_tokens_requested"], rec
        assert not rec["prompt_mismatch"] and rec["cache_n"] == 0
        assert rec["output_tokens"] == 24 and rec["output_tokens_source"] in ("usage", "timings")
        assert len(rec["itl_ms"]) == rec["content_chunks"] - 1
        assert rec["ttft_ms"] > 0 and rec["tpot_ms"] > 0
    assert {c["prompt_size"] for c in result["cells"]} == set(sizes)
    assert all(c["status"] == "done" and not c["checks"]["prompt_mismatches"] for c in result["cells"])
    server = result["environment"]["server"]
    assert server["is_llamacpp"] and server["n_ctx"] and server["build_info"]
    assert result["metrics_series"], "the /metrics series was not sampled"


def test_a_size_beyond_the_context_is_skipped_with_its_reason(tmp_path, real_server, real_model, real_threads):
    port = free_port()
    args = ("-m", str(real_model), "-t", real_threads, "-c", "1024", "-np", "1")
    with running_server(port, *args, binary=real_server, ready_timeout=120):
        result = bench_json(tmp_path, f"http://127.0.0.1:{port}", "--prompt-sizes", "50,5k", "--max-output-tokens", "8")
        strict = run_cli(
            LLAMA_BENCH,
            "benchmark",
            "--endpoint",
            f"http://127.0.0.1:{port}",
            "--prompt-sizes",
            "5k",
            "--strict",
            "--jsonl",
            str(tmp_path / "s.jsonl"),
        )
    cells = {c["prompt_size"]: c for c in result["cells"]}
    assert cells[50]["status"] == "done"
    assert cells[5000]["status"] == "skipped" and "1024" in cells[5000]["reason"]
    assert strict.returncode == 2
    assert len(strict.stderr.strip().splitlines()) == 1 and "5000" in strict.stderr


def test_bench_starts_a_real_server_and_stops_it(tmp_path, real_server, real_model, real_threads):
    port = free_port()
    res = run_cli(
        LLAMA_BENCH,
        "bench",
        "--llama-server",
        str(real_server),
        "--model",
        str(real_model),
        "--port",
        str(port),
        "-t",
        real_threads,
        "-c",
        "2048",
        "--allow-multi-server",  # other servers may run on this machine; ours is still stopped
        "--prompt-sizes",
        "100,200",
        "--max-output-tokens",
        "16",
        "--jsonl",
        str(tmp_path / "r.jsonl"),
        timeout=600,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Starting llama-server" in res.stdout
    assert not is_healthy(port)
    lines = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sum(1 for r in lines if not r["warmup"] and r["ok"]) == 6


DATA = Path(__file__).resolve().parents[1] / "data"


def test_prompt_cache_workloads_are_counted_from_the_real_server(tmp_path, real_server, real_model, real_threads):
    port = free_port()
    args = ("-m", str(real_model), "-t", real_threads, "-c", "4096", "-np", "1", "--metrics")
    with running_server(port, *args, binary=real_server, ready_timeout=120):
        endpoint = f"http://127.0.0.1:{port}"
        shared = bench_json(tmp_path, endpoint, "--workload", "shared-prefix", "--prefix-tokens", "200",
                            "--prompt-sizes", "300", "--max-output-tokens", "8", "--num-requests", "4")  # fmt: skip
        turns = bench_json(tmp_path, endpoint, "--workload", "multi-turn", "--turns", "3", "--prompt-sizes", "64",
                           "--max-output-tokens", "8", "--num-requests", "3")  # fmt: skip
    # One slot: after the first request every one finds the group's 200 tokens in the cache.
    recs = [r for r in shared["requests"] if not r["warmup"]]
    assert all(r["ok"] and r["prompt_tokens_reported"] == 300 for r in recs)
    assert all(r["cache_n"] >= 200 for r in recs[1:]), [r["cache_n"] for r in recs]
    cell = shared["cells"][0]
    assert cell["cache"]["hit_requests"] >= 3 and cell["server_metrics"]["prompt_tokens_cached"] >= 600
    # Each turn's prompt is the previous one and its answer: the server has it all but the new message.
    recs = sorted((r for r in turns["requests"] if not r["warmup"]), key=lambda r: r["turn"])
    assert [r["turn"] for r in recs] == [0, 1, 2] and all(r["ok"] for r in recs)
    for before, rec in zip(recs, recs[1:]):
        assert (
            rec["prompt_tokens_reported"]
            == rec["prompt_tokens_requested"]
            == before["prompt_tokens_requested"] + 8 + 64
        )
        assert rec["cache_n"] >= before["prompt_tokens_requested"]


@pytest.mark.parametrize("api", ["completion", "openai-chat"])
def test_a_dataset_replays_with_lengths_exact_in_the_servers_tokens(
    tmp_path, real_server, real_model, real_threads, api
):
    port = free_port()
    args = ("-m", str(real_model), "-t", real_threads, "-c", "4096", "--metrics")
    with running_server(port, *args, binary=real_server, ready_timeout=120):
        dataset = str(DATA / "sharegpt_sample.json")
        result = bench_json(tmp_path, f"http://127.0.0.1:{port}", "--api", api, "--dataset", dataset, "--concurrency",
                            "2", "--num-requests", "4")  # fmt: skip
    recs = [r for r in result["requests"] if not r["warmup"]]
    assert len(recs) == 4
    for rec in recs:
        assert rec["ok"] and rec["prompt_tokens_reported"] == rec["prompt_tokens_requested"], rec
        assert rec["output_tokens"] == rec["max_tokens"] and rec["cache_n"] == 0
