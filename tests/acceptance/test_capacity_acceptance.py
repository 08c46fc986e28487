"""SLO goodput, repeats with significance, batched events, and `./llama-bench capacity` / `bench --capacity`
against the fake llama-server, whose capacity is known:
N slots that each serve a request in S = prompt / --prompt-tps + (output - 1) x --token-interval-ms (plus
the fake's own few milliseconds per request: the service time the search calibrates), so at most N / S
requests per second, and N concurrent requests before any has to wait. The answers must be within 15 %
of that truth; a step far above it stops early; the curve is stored and printed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict

import pytest

from tests.acceptance.test_bench_acceptance import QUICK, benchmark, measured
from tests.helpers import FAKE_SERVER, LLAMA_BENCH, free_port, is_healthy, run_cli, running_server
from tools.llama_bench.bench.capacity import step_passed
from tools.llama_bench.bench.entrypoint import run_benchmark
from tools.llama_bench.bench.plan import BenchParams, Cell, CellStatus, SilentObserver
from tools.llama_bench.bench.probe import ServerInfo
from tools.llama_bench.bench.saturation import StepWatch
from tools.llama_bench.bench.slo import parse_slo
from tools.llama_bench.outputs import output_path

PROMPT, OUTPUT, PROMPT_TPS, INTERVAL_MS = 200, 8, 4000.0, 20.0
PREFILL_S = PROMPT / PROMPT_TPS
SERVICE_S = PREFILL_S + (OUTPUT - 1) * INTERVAL_MS / 1000.0  # 0.19 s
FAKE = ("--metrics", "--token-interval-ms", str(INTERVAL_MS), "--prompt-tps", str(PROMPT_TPS), "-c", "8192")
SHAPE = ("--prompt-sizes", str(PROMPT), "--max-output-tokens", str(OUTPUT), "--metrics-interval", "0.25")


def one_error_line(res: Any) -> str:
    lines = [line for line in res.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert re.match(r"^llama-bench( [a-z]+)?: error: \S", lines[0]), res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    return lines[0]


def capacity(port: int, tmp_path: Path, *args: str, timeout: float = 300.0) -> Any:
    return run_cli(
        LLAMA_BENCH,
        "capacity",
        "--endpoint",
        f"http://127.0.0.1:{port}",
        *SHAPE,
        "--jsonl",
        str(tmp_path / "r.jsonl"),
        "--json-out",
        str(tmp_path / "cap.json"),
        *args,
        timeout=timeout,
    )


def found(tmp_path: Path) -> Dict[str, Any]:
    return json.loads((tmp_path / "cap.json").read_text(encoding="utf-8"))


def test_rate_capacity_is_slots_over_service_time(tmp_path: Path) -> None:
    slots = 8
    port = free_port()
    with running_server(port, "-np", str(slots), *FAKE):
        # TTFT p90 within the prefill + three service times: holds below N / S, breaks above it.
        res = capacity(port, tmp_path, "--slo", f"ttft_p90={(PREFILL_S + 3 * SERVICE_S) * 1000:.0f}ms")
    assert res.returncode == 0, res.stdout + res.stderr
    result = found(tmp_path)
    cap = result["capacity"]
    assert cap["outcome"] == "found" and cap["by"] == "rate" and cap["slots"] == slots
    assert cap["service_time_s"] == pytest.approx(SERVICE_S, rel=0.25)  # calibrated: the fake's knobs + its overhead
    truth = slots / cap["service_time_s"]  # about 42 req/s
    assert cap["capacity"] == pytest.approx(truth, rel=0.15), cap
    assert cap["lower"] == cap["capacity"] < cap["upper"] <= cap["lower"] * 1.1 + 1e-9
    # The curve: one point per step, sorted by rate, with latency, throughput and goodput.
    curve = cap["curve"]
    assert len(curve) == cap["steps"] >= 3 and [p["value"] for p in curve] == sorted(p["value"] for p in curve)
    assert sorted(p["step"] for p in curve) == list(range(1, len(curve) + 1))  # and the order they ran in
    for point in curve:
        for key in ("ttft_p50", "ttft_p99", "tpot_p50", "requests_per_s", "goodput_rps", "slo_good_share"):
            assert key in point
    assert any(p["phase"] == "recheck" and p["value"] == cap["capacity"] and p["passed"] for p in curve)
    assert all(not p["passed"] for p in curve if p["stopped_early"])
    # Steps are cells with their offered rate; the /slots series is stored beside /metrics.
    steps = [c for c in result["cells"] if c["step"] and c["step"]["phase"] != "calibrate"]
    assert all(c["rate"] == c["step"]["value"] and c["slo"] is not None for c in steps)
    assert result["slots_series"] and max(s["busy"] for s in result["slots_series"]) == slots
    assert result["schema"] == "llama-studio.benchmark/3"
    assert "Capacity curve" in res.stdout and re.search(r"capacity: [\d.]+ req/s \(the SLO breaks between", res.stdout)


class OneStep:
    """A Search of a single step at a fixed rate (what the capacity search does at each step)."""

    def __init__(self, rate: float, requests: int, slots: int) -> None:
        self.rate, self.requests, self.slots = rate, requests, slots
        self._cells: list = []

    @property
    def cells(self) -> list:
        return self._cells

    @property
    def max_concurrency(self) -> int:
        return 64

    def next_cell(self, finished: Any) -> Any:
        if finished is not None:
            return None
        cell = Cell(0, PROMPT, 64, self.requests, rate=self.rate, name="overload")
        cell.step = {"phase": "bracket", "value": self.rate, "passed": None, "stopped_early": None}
        cell.watch = StepWatch(parse_slo(f"ttft_p90={(PREFILL_S + SERVICE_S) * 1000:.0f}ms"), self.slots, True)
        self._cells.append(cell)
        return cell

    def result(self, stop_reason: Any = None) -> Dict[str, Any]:
        return {}


def test_a_step_far_above_capacity_stops_early_and_its_cut_requests_are_not_failures(tmp_path: Path) -> None:
    slots, truth = 2, 2 / SERVICE_S  # about 10 req/s
    port = free_port()
    with running_server(port, "-np", str(slots), *FAKE):
        url = f"http://127.0.0.1:{port}"
        params = BenchParams(url, [PROMPT], [1], OUTPUT, slo=parse_slo("ttft_p90=1s"), energy=False, warmup=0)
        search = OneStep(rate=4 * truth, requests=400, slots=slots)
        jsonl = output_path(str(tmp_path / "r.jsonl"), "--jsonl")
        assert jsonl is not None
        result = run_benchmark(params, SilentObserver(), jsonl, search=lambda info, cells: search)
    [cell] = result.cells
    assert cell.status is CellStatus.DONE and cell.step is not None
    assert "can no longer be met" in (cell.step["stopped_early"] or "") and not step_passed(cell)
    assert cell.summary is not None
    sent = cell.summary.requests.sent
    assert sent < 400  # at 4x capacity the SLO is out of reach long before the planned arrivals are in
    assert cell.summary.requests.failed == 0 and result.failed_requests == 0
    assert cell.summary.requests.cancelled > 0  # in flight when the step stopped: neither ok nor failed
    assert cell.summary.requests.ok + cell.summary.requests.cancelled == sent
    assert isinstance(result.info, ServerInfo)


def test_a_search_cut_short_by_a_dead_server_says_why(tmp_path: Path) -> None:
    port = free_port()
    with running_server(port, "-np", "2", *FAKE, "--crash-after", "40"):
        res = capacity(port, tmp_path, "--slo", "ttft_p90=1s", "--requests-per-step", "30", "--warmup", "0")
    assert res.returncode == 1, res.stdout + res.stderr
    cap = found(tmp_path)["capacity"]
    assert cap["outcome"] == "incomplete" and cap["reason"], cap
    assert "None" not in res.stdout and re.search(r"incomplete: \S", res.stdout), res.stdout


def test_concurrency_capacity_is_the_slot_count(tmp_path: Path) -> None:
    slots = 4
    port = free_port()
    with running_server(port, "-np", str(slots), *FAKE):
        # TTFT p90 within the prefill + half of the wait for a slot (S / N): breaks at N + 1.
        bound = (PREFILL_S + SERVICE_S / (2 * slots)) * 1000
        res = capacity(
            port, tmp_path, "--by", "concurrency", "--slo", f"ttft_p90={bound:.0f}ms", "--requests-per-step", "40"
        )
    assert res.returncode == 0, res.stdout + res.stderr
    cap = found(tmp_path)["capacity"]
    assert cap["outcome"] == "found" and cap["unit"] == "concurrent requests"
    assert cap["capacity"] == pytest.approx(slots, rel=0.15) and cap["upper"] == cap["capacity"] + 1
    assert "capacity: concurrency 4" in res.stdout


def test_bench_capacity_searches_on_a_server_it_starts_and_stops_it(tmp_path: Path, model_file: Path) -> None:
    port = free_port()
    res = run_cli(
        LLAMA_BENCH,
        "bench",
        "--llama-server",
        str(FAKE_SERVER),
        "--model",
        str(model_file),
        "--port",
        str(port),
        "--allow-multi-server",
        "--parallel",
        "2",
        "--capacity",
        "--by",
        "concurrency",
        "--slo",
        f"ttft_p90={(PREFILL_S + SERVICE_S / 4) * 1000:.0f}ms",
        "--requests-per-step",
        "20",
        *SHAPE,
        "--json-out",
        str(tmp_path / "cap.json"),
        "--jsonl",
        str(tmp_path / "r.jsonl"),
        "--",
        *FAKE,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Starting llama-server" in res.stdout and "Stopped llama-server" in res.stdout
    result = found(tmp_path)
    assert result["capacity"]["capacity"] == 2 and result["environment"]["server"]["started_by_us"]
    assert not is_healthy(port)


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["capacity", "--prompt-sizes", "100"], "--slo"),
        (["capacity", "--slo", "ttft_p99=2"], "--slo: bound '2' in 'ttft_p99=2' needs a unit"),
        (["capacity", "--slo", "ttft_p90=1s", "--prompt-sizes", "100,200"], "one prompt size"),
        (["capacity", "--slo", "ttft_p90=1s", "--by", "concurrency", "--max-rate", "5"], "--max-rate needs --by rate"),
        (["capacity", "--slo", "ttft_p90=1s", "--precision", "2"], "--precision"),
        (["bench", "--by", "rate"], "--by needs --capacity"),
        (["bench", "--capacity", "--slo", "ttft_p90=1s", "--concurrency", "4"], "--concurrency does not apply"),
        (["bench", "--capacity"], "needs --slo"),
        (["benchmark", "--slo", "speed_p50=1s"], "unknown metric 'speed'"),
        (["benchmark", "--extra", '{"n_predict": 50}'], "--extra cannot set n_predict: use --max-output-tokens"),
        (["benchmark", "--extra", '{"stream": false}'], "--extra cannot set stream"),
    ],
)
def test_bad_capacity_input_is_one_line_and_exit_2(argv: list, needle: str) -> None:
    target = ["--port", str(free_port())] if argv[0] == "bench" else ["--endpoint", "http://127.0.0.1:9"]
    res = run_cli(LLAMA_BENCH, *argv, *target)
    assert res.returncode == 2, res.stdout + res.stderr
    assert needle in one_error_line(res)


# -- SLO goodput, repeats and compare, batched events (benchmark) ------------------------------------
def test_repeats_give_intervals_and_compare_tells_change_from_noise(fake_port: int, tmp_path: Path) -> None:
    paths = []
    for name, extra in (("a", ("--repeats", "3")), ("b", ("--repeats", "3")), ("c", ()), ("d", ())):
        path = tmp_path / f"{name}.json"
        res = benchmark(fake_port, tmp_path, "--prompt-sizes", "100", *QUICK, "--num-requests", "3", *extra,
                        "--json-out", str(path))  # fmt: skip
        assert res.returncode == 0, res.stdout + res.stderr
        paths.append(path)
    result = json.loads(paths[0].read_text(encoding="utf-8"))
    [cell] = result["cells"]
    assert cell["repeat_count"] == 3 and cell["requests"]["sent"] == 9 and cell["repeats"]["n"] == 3
    assert sorted({r["repeat"] for r in measured(result)}) == [0, 1, 2]
    ci = cell["repeats"]["ci"]["gen_tps"]
    assert len(cell["repeats"]["values"]["gen_tps"]) == 3 and ci["low"] <= ci["mean"] <= ci["high"]
    with_repeats = run_cli(LLAMA_BENCH, "compare", str(paths[0]), str(paths[1]))
    assert with_repeats.returncode == 0 and "Welch p=" in with_repeats.stdout, with_repeats.stdout
    single = run_cli(LLAMA_BENCH, "compare", str(paths[2]), str(paths[3]))
    assert single.returncode == 0 and "bootstrap" in single.stdout and "significance:" in single.stdout


def test_failed_requests_count_against_the_slo(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "r.json"
    with running_server(port, "--hang-after", "3", "--token-interval-ms", "2"):
        res = benchmark(
            port, tmp_path, "--prompt-sizes", "100", "--max-output-tokens", "8", "--num-requests", "5",
            "--warmup", "0", "--timeout", "1", "--slo", "e2e_p50=10s", "--json-out", str(out),
        )  # fmt: skip
    assert res.returncode == 1, res.stdout + res.stderr
    slo = json.loads(out.read_text(encoding="utf-8"))["cells"][0]["slo"]
    assert (slo["requests"], slo["good"]) == (5, 3) and slo["good_share"] == pytest.approx(0.6)
    assert slo["met"] is True  # 3 of 5 good: enough for a p50
    assert slo["goodput_rps"] > 0 and "SLO met" in res.stdout


def test_batched_token_events_are_counted_per_cell(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "r.json"
    with running_server(port, "--token-interval-ms", "0", "-np", "4"):
        res = benchmark(port, tmp_path, "--prompt-sizes", "100", "--max-output-tokens", "200", "--concurrency", "4",
                        "--num-requests", "4", "--json-out", str(out))  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    result = json.loads(out.read_text(encoding="utf-8"))
    batching = result["cells"][0]["batching"]
    recs = measured(result)
    assert batching["events"] == sum(r["content_chunks"] for r in recs) == 800
    assert batching["batched"] == sum(r["batched_chunks"] for r in recs)
    assert batching["share"] == pytest.approx(batching["batched"] / 800)
    zero_gaps = sum(1 for r in recs for g in r["itl_ms"] if g == 0)
    assert batching["batched"] == zero_gaps  # a batched event is exactly a gap of 0
