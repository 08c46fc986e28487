"""--repeats: mean and 95 % confidence interval per figure, and `compare` telling a change from noise
(Welch's t-test on repeat values, else a bootstrap on per-request values)."""

from __future__ import annotations

import argparse
import random
from typing import Any, Dict, List

import pytest

from tools.llama_bench.bench import args as bench_args
from tools.llama_bench.bench.cellstats import repeat_summary
from tools.llama_bench.bench.confidence import bootstrap_change, mean_interval, t_quantile, welch_p
from tools.llama_bench.bench.output.console import compare_table
from tools.llama_bench.bench.plan import BenchParams, Cell
from tools.llama_bench.bench.records import Api, RequestRecord
from tools.llama_bench.bench.significance import verdict
from tools.llama_bench.bench.summary import FIELDS


def test_student_t_quantiles_match_the_tables() -> None:
    for df, q in ((1, 12.706), (2, 4.303), (4, 2.776), (9, 2.262), (30, 2.042), (1000, 1.962)):
        assert t_quantile(0.975, df) == pytest.approx(q, abs=1e-3)


def test_mean_interval() -> None:
    ci = mean_interval([10.0, 12.0, 14.0])
    assert ci is not None and ci.n == 3 and ci.mean == 12.0 and ci.stdev == pytest.approx(2.0)
    assert ci.half_width == pytest.approx(4.303 * 2.0 / 3**0.5, rel=1e-3)
    assert ci.low == pytest.approx(12.0 - ci.half_width) and ci.high == pytest.approx(12.0 + ci.half_width)
    one = mean_interval([5.0])
    assert one is not None and one.mean == 5.0 and one.half_width is None
    assert mean_interval([]) is None


def test_welch_t_test() -> None:
    # Reference values from scipy.stats.ttest_ind(..., equal_var=False).
    assert welch_p([1, 2, 3, 4, 5], [2, 3, 4, 5, 6]) == pytest.approx(0.3466, abs=1e-4)
    assert welch_p([10, 11, 12], [20, 21, 22]) == pytest.approx(0.000255, rel=1e-2)
    assert welch_p([1.0, 1.0], [1.0, 1.0]) == 1.0 and welch_p([1.0, 1.0], [2.0, 2.0]) == 0.0
    assert welch_p([1.0], [2.0, 3.0]) is None


def test_bootstrap_interval_of_a_change() -> None:
    rng = random.Random(3)
    a = [[rng.gauss(100, 5)] for _ in range(200)]
    same = [list(c) for c in reversed(a)]  # the same values: no change at all
    shifted = [[rng.gauss(110, 5)] for _ in range(200)]
    median = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
    lo, hi = bootstrap_change(a, same, median) or (0, 0)
    assert lo < 0 < hi
    lo, hi = bootstrap_change(a, shifted, median) or (0, 0)
    assert 5 < lo < hi < 15  # a 10 ms shift, found with its sampling error
    assert bootstrap_change([], shifted, median) is None


def rec(i: int, repeat: int, ttft: float) -> RequestRecord:
    return RequestRecord(
        cell="p100-c1", index=i, api=Api.COMPLETION, warmup=False, ok=True, error=None, http_status=200,
        prompt_tokens_requested=100, max_tokens=8, start_s=float(10 * repeat + i), ttft_ms=ttft, e2e_ms=500.0,
        output_tokens=8, repeat=repeat,
    )  # fmt: skip


def test_every_figure_gets_its_repeat_values_and_an_interval() -> None:
    params = BenchParams(endpoint="http://x", prompt_sizes=[100], concurrency=[1], max_output_tokens=8, repeats=3)
    cell = Cell(0, 100, 1, 4, repeats=3)
    cell.records = [rec(i, r, ttft=100.0 + 10 * r) for r in range(3) for i in range(4)]
    summary = repeat_summary(cell, params)
    assert summary.n == 3
    assert summary.values["ttft_p50"] == [100.0, 110.0, 120.0]
    ci = summary.ci["ttft_p50"]
    assert (
        ci is not None
        and ci.mean == pytest.approx(110.0)
        and ci.half_width == pytest.approx(4.303 * 10 / 3**0.5, rel=1e-3)
    )
    doc = {"repeats": {"ci": {"ttft_p50": {"mean": 110.0, "half_width": 24.8}}, "values": summary.values}}
    assert FIELDS["ttft_p50"].ci(doc) == {"mean": 110.0, "half_width": 24.8}
    assert FIELDS["ttft_p50"].repeat_values(doc) == [100.0, 110.0, 120.0]
    assert FIELDS["gen_tps"].ci({}) is None


def cell_doc(values: Dict[str, List[float]], ttft: float) -> Dict[str, Any]:
    return {
        "label": "p100-c1", "prompt_size": 100, "concurrency": 1, "status": "done",
        "throughput": {"gen_tps": sum(values["gen_tps"]) / len(values["gen_tps"])},
        "latency": {"ttft_ms": {"p50": ttft}},
        "repeats": {"n": len(values["gen_tps"]), "values": values, "ci": {}},
    }  # fmt: skip


def requests(mean: float, n: int = 60, seed: int = 0) -> List[Dict[str, Any]]:
    rng = random.Random(seed)
    return [{"cell": "p100-c1", "prompt_size": 100, "concurrency": 1, "warmup": False, "ok": True,
             "ttft_ms": rng.gauss(mean, 3.0)} for _ in range(n)]  # fmt: skip


def test_compare_uses_welch_on_repeats_and_a_bootstrap_without_them() -> None:
    a_cell = cell_doc({"gen_tps": [100.0, 101.0, 99.0]}, 50.0)
    b_cell = cell_doc({"gen_tps": [110.0, 111.0, 109.0]}, 50.0)
    a = {"cells": [a_cell], "requests": requests(50.0, seed=1)}
    b = {"cells": [b_cell], "requests": requests(50.0, seed=1)}
    v = verdict(FIELDS["gen_tps"], a, b, a_cell, b_cell)
    assert v.method == "welch" and v.significant and v.p_value is not None and v.p_value < 0.01
    assert "Welch p=" in v.text()
    noise = verdict(FIELDS["ttft_p50"], a, b, a_cell, b_cell)  # no repeat values: per-request bootstrap
    assert noise.method == "bootstrap" and noise.significant is False and "within noise" in noise.text()
    slower = {"cells": [b_cell], "requests": requests(60.0, seed=2)}
    assert verdict(FIELDS["ttft_p50"], a, slower, a_cell, b_cell).significant is True
    single_a, single_b = dict(a_cell, repeats=None), dict(b_cell, repeats=None)
    assert verdict(FIELDS["gen_tps"], a, b, single_a, single_b).text() == "-"  # one run: no spread


def test_the_compare_table_says_which_changes_are_significant() -> None:
    from io import StringIO

    from rich.console import Console

    a_cell = cell_doc({"gen_tps": [100.0, 101.0, 99.0]}, 50.0)
    b_cell = cell_doc({"gen_tps": [110.0, 111.0, 109.0]}, 50.5)
    table = compare_table({"cells": [a_cell], "requests": requests(50.0)}, {"cells": [b_cell]}, "a", "b")
    out = StringIO()
    Console(file=out, width=200).print(table)
    text = out.getvalue()
    assert "significance" in text and "significant (Welch p=" in text and "+10.0%" in text


def test_repeats_and_rounds_are_separate_flags() -> None:
    parser = argparse.ArgumentParser()
    bench_args.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["benchmark", "--repeats", "5", "--rounds", "2"])
    params = bench_args.params_from_args(args, "http://x", None)
    assert (params.repeats, params.rounds) == (5, 2)
    assert params.requests_for(4) == 8  # rounds x concurrency, per repeat
    default = bench_args.params_from_args(parser.parse_args(["benchmark"]), "http://x", None)
    assert (default.repeats, default.rounds, default.prompt_sizes) == (1, 3, [1000, 10000])
    with pytest.raises(SystemExit):
        parser.parse_args(["benchmark", "--rounds", "2", "--num-requests", "5"])
