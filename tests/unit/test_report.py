"""Result files and tables: CSV rows, compare, loading, plan/skip logic, argument parsing."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any, Dict

import pytest

from tools.llama_bench.bench import args as bench_args
from tools.llama_bench.argtypes import concurrency_list, token_counts
from tools.llama_bench.bench.output.console import compare_rows, compare_table, summary_notes, summary_table
from tools.llama_bench.bench.output.results import SCHEMA, csv_rows, load_result, write_csv, write_json
from tools.llama_bench.bench.payload import build_body
from tools.llama_bench.bench.plan import BenchParams, CellStatus, plan_cells, warmup_shape
from tools.llama_bench.bench.probe import ServerInfo, choose_api
from tools.llama_bench.bench.records import Api
from tools.llama_bench.bench.summary import FIELDS
from tools.llama_bench.endpoint import normalize_endpoint
from tools.llama_bench.outputs import OutputPath
from tools.llama_bench.utils import UserError


def cell(prompt: int, conc: int, gen_tps: float, ttft: float, status: str = "done") -> Dict[str, Any]:
    return {
        "label": f"p{prompt}-c{conc}",
        "prompt_size": prompt,
        "concurrency": conc,
        "status": status,
        "reason": None if status == "done" else "does not fit",
        "warnings": [],
        "requests": {"planned": 3, "sent": 3, "ok": 3, "failed": 0, "interrupted": 0},
        "throughput": {"gen_tps": gen_tps, "prompt_tps": 1000.0, "requests_per_s": 1.0, "duration_s": 3.0},
        "latency": {"ttft_ms": {"mean": ttft, "p50": ttft, "p90": ttft, "p99": ttft, "min": ttft, "max": ttft}},
        "checks": {"prompt_mismatches": [], "cache_hits": 0, "stopped_early": 0},
        "energy": {"available": False, "reason": "no RAPL"},
    }


def result(*cells: Dict[str, Any]) -> Dict[str, Any]:
    return {"schema": SCHEMA, "cells": list(cells), "api": "completion", "environment": {}}


def test_csv_has_one_row_per_cell(tmp_path: Path) -> None:
    res = result(cell(100, 1, 50.0, 20.0), cell(1000, 1, 40.0, 200.0), cell(5000, 1, 0, 0, status="skipped"))
    rows = csv_rows(res)
    assert [r["prompt_size"] for r in rows] == [100, 1000, 5000]
    assert rows[0]["gen_tps"] == 50.0 and rows[0]["ttft_p50_ms"] == 20.0
    assert rows[2]["status"] == "skipped" and rows[2]["reason"] == "does not fit"
    assert rows[0]["energy_unavailable"] == "no RAPL"
    path = tmp_path / "r.csv"
    write_csv(OutputPath("--csv", path), res)
    assert path.read_text(encoding="utf-8").count("\n") == 4


def test_compare_matches_cells_and_computes_relative_change() -> None:
    a = result(cell(100, 1, 50.0, 20.0), cell(200, 1, 45.0, 30.0))
    b = result(cell(100, 1, 55.0, 18.0), cell(300, 1, 45.0, 30.0))
    rows = compare_rows(a, b)
    assert {r[0] for r in rows} == {"p100 c1"}
    by_metric = {r[1].label: r for r in rows}
    assert by_metric["gen tok/s"][2:] == (50.0, 55.0)
    table = compare_table(a, b, "a.json", "b.json")
    from rich.console import Console

    out = io.StringIO()
    Console(file=out, width=200).print(table)
    text = out.getvalue()
    assert "+10.0%" in text and "-10.0%" in text


def test_summary_table_and_notes_render() -> None:
    from rich.console import Console

    cells = [cell(100, 1, 50.0, 20.0), cell(5000, 1, 0, 0, status="skipped")]
    out = io.StringIO()
    Console(file=out, width=250).print(summary_table(cells))
    assert "skipped" in out.getvalue()
    assert summary_notes(cells) == ["prompt 5000 x 1: skipped: does not fit"]


def test_json_roundtrip_and_schema_check(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    write_json(OutputPath("--json-out", path), result(cell(100, 1, 50.0, 20.0)))
    assert load_result(str(path))["cells"][0]["prompt_size"] == 100
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"hello": 1}), encoding="utf-8")
    with pytest.raises(UserError, match="not a llama-bench result"):
        load_result(str(other))
    with pytest.raises(UserError, match="not found"):
        load_result(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{", encoding="utf-8")
    with pytest.raises(UserError, match="cannot read"):
        load_result(str(bad))


def test_schema_1_results_are_read_with_the_new_names(tmp_path: Path) -> None:
    # Schema 1 called the cell's requested size and the record's server count both "prompt_tokens".
    old = {
        "schema": "llama-studio.benchmark/1",
        "cells": [{"prompt_tokens": 100, "concurrency": 1, "status": "done"}],
        "requests": [{"prompt_tokens": 98, "prompt_tokens_requested": 100}],
    }
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old), encoding="utf-8")
    data = load_result(str(path))
    assert data["schema"] == SCHEMA
    assert data["cells"][0]["prompt_size"] == 100 and "prompt_tokens" not in data["cells"][0]
    assert data["requests"][0]["prompt_tokens_reported"] == 98


@pytest.mark.parametrize("text", ["1q", "0", "-5", "", " , ", "1,,2", "1.5", "abc", "3000k", "1e12"])
def test_bad_prompt_sizes_are_one_line_errors(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as exc:
        token_counts(text)
    assert str(exc.value) and "\n" not in str(exc.value)


def test_prompt_sizes_accept_k_suffix() -> None:
    assert token_counts("100,200") == [100, 200]
    assert token_counts("1k, 10k,1.5k,4096") == [1000, 10000, 1500, 4096]


@pytest.mark.parametrize("text", ["0", "-1", "x", "", "1,0", "10001"])
def test_bad_concurrency_is_a_one_line_error(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        concurrency_list(text)


def test_endpoint_normalisation() -> None:
    assert normalize_endpoint("http://h:1/") == "http://h:1"
    assert normalize_endpoint("http://h:1/v1") == "http://h:1"
    assert normalize_endpoint("http://h:1/v1/chat/completions") == "http://h:1"
    with pytest.raises(UserError):
        normalize_endpoint("h:1")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llama-bench")
    bench_args.register(parser.add_subparsers(dest="command"))
    return parser


def test_register_adds_the_commands_with_handlers() -> None:
    parser = _parser()
    for argv in (["benchmark"], ["bench"], ["compare", "a", "b"], ["plot", "r.json"]):
        args = parser.parse_args(argv)
        assert callable(args.handler)
    args = parser.parse_args(["bench", "--port", "1234", "--prompt-sizes", "100,200", "--max-output-tokens", "16"])
    assert args.port == 1234 and args.prompt_sizes == [100, 200] and args.max_output_tokens == 16
    assert args.no_gpu is False and args.startup_timeout > 0 and args.llama_server is None


def test_plan_skips_sizes_that_do_not_fit_and_flags_slots() -> None:
    info = ServerInfo(endpoint="http://x", is_llamacpp=True, n_ctx=4096, total_slots=2)
    params = BenchParams(endpoint="http://x", prompt_sizes=[100, 4000], concurrency=[1, 4], max_output_tokens=256)
    cells = plan_cells(params, info.n_ctx, info.total_slots, None)
    assert [(c.prompt_size, c.concurrency, c.status) for c in cells] == [
        (100, 1, CellStatus.PENDING),
        (100, 4, CellStatus.PENDING),
        (4000, 1, CellStatus.SKIPPED),
        (4000, 4, CellStatus.SKIPPED),
    ]
    assert "4256" in (cells[2].reason or "") and "4096" in (cells[2].reason or "")
    assert any("server slots" in w for w in cells[1].warnings)
    assert cells[0].num_requests == 3 and cells[1].num_requests == 12
    params.strict = True
    with pytest.raises(UserError, match="4000"):
        plan_cells(params, info.n_ctx, info.total_slots, None)


def test_warm_up_has_the_shape_of_the_first_cell_that_runs() -> None:
    params = BenchParams(endpoint="http://x", prompt_sizes=[8000, 300, 100], concurrency=[1], max_output_tokens=64)
    cells = plan_cells(params, n_ctx=4096, total_slots=1, chat_overhead=None)  # 8000 is skipped
    assert warmup_shape(cells, params) == (300, 64)
    for c in cells:
        c.status = CellStatus.SKIPPED
    assert warmup_shape(cells, params) is None


def test_request_bodies_disable_the_cache_and_eos_on_llamacpp_only() -> None:
    params = BenchParams(endpoint="http://x", prompt_sizes=[10], concurrency=[1], max_output_tokens=32)
    llama = ServerInfo(endpoint="http://x", is_llamacpp=True, model_id="m")
    other = ServerInfo(endpoint="http://x", is_llamacpp=False, model_id="gpt")
    body = build_body(Api.COMPLETION, params, llama, [1, 2, 3], seed=1)
    assert body["n_predict"] == 32 and body["cache_prompt"] is False and body["ignore_eos"] is True
    chat = build_body(Api.OPENAI_CHAT, params, other, "hi", seed=1)
    assert chat["max_tokens"] == 32 and chat["model"] == "gpt" and "ignore_eos" not in chat
    assert chat["stream_options"] == {"include_usage": True}
    assert choose_api(Api.AUTO, llama) == "completion" and choose_api(Api.AUTO, other) == "openai-chat"
    assert choose_api(Api.NATIVE, other) == "openai-completions"
    with pytest.raises(UserError):
        choose_api(Api.COMPLETION, other)


def test_plot_series_group_by_the_other_dimension() -> None:
    from tools.llama_bench.bench.output.plot import series_by

    cells = [cell(1000, 1, 40.0, 200.0), cell(100, 1, 50.0, 20.0), cell(100, 4, 90.0, 30.0)]
    cells.append(cell(9000, 1, 0, 0, status="skipped"))
    series = series_by(cells, "prompt_size", "concurrency", FIELDS["gen_tps"])
    assert series == {1: [(100, 50.0), (1000, 40.0)], 4: [(100, 90.0)]}


def test_plot_writes_a_png_when_matplotlib_is_installed(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from tools.llama_bench.bench.output.plot import plot_result

    out = tmp_path / "p.png"
    plot_result(result(cell(100, 1, 50.0, 20.0), cell(1000, 1, 40.0, 200.0)), OutputPath("--out", out))
    assert out.stat().st_size > 1000


def test_schema_2_results_are_read_with_rounds_and_no_repeats(tmp_path: Path) -> None:
    # Schema 2's params.repeats meant rounds of `concurrency` requests; every cell ran once.
    old = {
        "schema": "llama-studio.benchmark/2",
        "params": {"repeats": 3, "num_requests": None},
        "cells": [{"prompt_size": 100, "concurrency": 1, "status": "done"}],
    }
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old), encoding="utf-8")
    data = load_result(str(path))
    assert data["schema"] == SCHEMA == "llama-studio.benchmark/3"
    assert data["params"]["rounds"] == 3 and data["params"]["repeats"] == 1
    assert data["cells"][0]["repeat_count"] == 1 and data["cells"][0]["workload"] == "unique"
    assert data["slots_series"] == [] and data["repeats"] == 1


def test_csv_and_summary_carry_slo_cache_and_batching_figures() -> None:
    from rich.console import Console

    c = cell(100, 1, 50.0, 20.0)
    c["slo"] = {"met": True, "good": 3, "requests": 3, "good_share": 1.0, "goodput_rps": 1.0, "goodput_gen_tps": 9.0,
                "terms": [{"term": "ttft_p90", "value_ms": 20.0, "bound_ms": 100.0, "met": True}]}  # fmt: skip
    c["cache"] = {"requests": 3, "hit_requests": 2, "hit_share": 0.667, "token_share": 0.5,
                  "ttft_cached_ms": {"p50": 5.0}, "ttft_uncached_ms": {"p50": 20.0}}  # fmt: skip
    c["batching"] = {"events": 30, "batched": 3, "share": 0.1}
    [row] = csv_rows(result(c))
    assert row["goodput_rps"] == 1.0 and row["slo_good_share"] == 1.0 and row["batched_share"] == 0.1
    assert row["ttft_cached_p50_ms"] == 5.0 and row["ttft_uncached_p50_ms"] == 20.0 and row["cache_hit_share"] == 0.667
    out = io.StringIO()
    Console(file=out, width=300).print(summary_table([c]))
    text = out.getvalue()
    assert "goodput req/s" in text and "cache hits" in text and "TTFT cached p50" in text
