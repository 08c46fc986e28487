"""`llama-bench report`: the SVG charts, what the page shows of each part of a result (real results of
`benchmark`, `benchmark --slo` and `capacity` against the fake server, plus a crafted capacity curve whose
numbers are known), degrading when parts are missing, and the command's paths and messages."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Sequence

import pytest

from tests.helpers import FAKE_SERVER, LLAMA_BENCH, REPO, free_port, run_cli, running_server
from tools.llama_bench.bench.output import charts, report_figures
from tools.llama_bench.bench.output.charts import Chart, Rule, Series, cdf_points, linear_ticks, log_ticks, svg
from tools.llama_bench.bench.output.html import ReportParams, build_sections, render_page, report
from tools.llama_bench.bench.output.png import png_target
from tools.llama_bench.bench.output.results import SCHEMA
from tools.llama_bench.bench.summary import FIELDS, Field
from tools.llama_bench.outputs import output_path
from tools.llama_bench.utils import UserError

# What a plain benchmark result always gives: load charts, CDFs and, with --metrics, the server over time.
BASE_CHARTS = {"gen-tps", "prompt-tps", "requests", "ttft-load", "tpot-load", "e2e-load", "ttft-cdf", "e2e-cdf"}
NEW_CHARTS = {"capacity-latency", "capacity-req", "capacity-tok", "slo"}  # from --slo and a capacity search
SLOTS_CHARTS = {"slots-busy", "slots-fill", "slots-tokens"}  # the /slots series of every benchmark
FAST = ("--token-interval-ms", "2", "--prompt-tps", "20000")  # a quick fake server
# `llama-bench report` through cli.py when it registers the command, else through the same parser plus
# report_args.register (what cli.py's one line does).
# llama-bench in-process, so that a test can hide a package from it first.
ENTRY = "import sys; from tools.llama_bench.cli import main; sys.exit(main(sys.argv[1:]))\n"


def report_cli(*args: str, **kwargs: Any) -> subprocess.CompletedProcess:
    return run_cli(LLAMA_BENCH, "report", *args, **kwargs)


def run_benchmark(port: int, out: Path, *args: str) -> Dict[str, Any]:
    res = run_cli(
        LLAMA_BENCH,
        "benchmark",
        "--endpoint",
        f"http://127.0.0.1:{port}",
        "--prompt-sizes",
        "100,400",
        "--concurrency",
        "1,2,4",
        "--num-requests",
        "6",
        "--max-output-tokens",
        "8",
        "--metrics-interval",
        "0.1",
        "--quiet",
        "--json-out",
        str(out),
        "--jsonl",
        str(out.with_suffix(".jsonl")),
        *args,
    )
    assert res.returncode == 0, res.stderr
    return json.loads(out.read_text(encoding="utf-8"))


def benchmark_results(folder: Path, slots: Sequence[int] = (2, 4)) -> List[Path]:
    """Benchmarks of the fake server (one per slot count), as `benchmark --json-out` writes them."""
    paths = []
    for n in slots:
        port = free_port()
        with running_server(port, "--metrics", "-np", str(n), *FAST, binary=FAKE_SERVER):
            path = folder / f"np{n}.json"
            run_benchmark(port, path)
            paths.append(path)
    return paths


def slo_results(folder: Path) -> List[Path]:
    """`benchmark --slo --repeats 2` and a `capacity` search of the fake server (2 slots): SLO goodput, 95 %
    intervals and the capacity curve."""
    port = free_port()
    with running_server(port, "--metrics", "-np", "2", *FAST, binary=FAKE_SERVER):
        slo = folder / "slo.json"
        run_benchmark(port, slo, "--slo", "ttft_p99=60ms,tpot_p50=20ms", "--repeats", "2")
        capacity = folder / "capacity.json"
        # A bound the fake always meets up to --max-rate: the search ends quickly ("at least 30 req/s").
        res = run_cli(LLAMA_BENCH, "capacity", "--endpoint", f"http://127.0.0.1:{port}", "--prompt-sizes", "100",
                      "--max-output-tokens", "8", "--slo", "ttft_p90=500ms", "--max-rate", "30",
                      "--requests-per-step", "30", "--metrics-interval", "0.2", "--quiet", "--json-out", str(capacity),
                      "--jsonl", str(folder / "capacity.jsonl"))  # fmt: skip
        assert res.returncode == 0, res.stderr
    return [slo, capacity]


@pytest.fixture(scope="module")
def real_results(tmp_path_factory: pytest.TempPathFactory) -> List[Path]:
    return benchmark_results(tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="module")
def real_slo_results(tmp_path_factory: pytest.TempPathFactory) -> List[Path]:
    return slo_results(tmp_path_factory.mktemp("slo"))


def add_new_sections(doc: Dict[str, Any]) -> Dict[str, Any]:
    """A result with an SLO, goodput, intervals over repeats and a capacity curve of known numbers, in the
    shapes `benchmark --slo` and `capacity` write them."""
    doc = copy.deepcopy(doc)
    terms = [{"metric": "ttft", "percentile": 99.0, "bound_ms": 150.0}, {"metric": "tpot", "percentile": 50.0,
             "bound_ms": 20.0}]  # fmt: skip
    doc["params"]["slo"] = {"spec": "ttft_p99=150ms,tpot_p50=20ms", "terms": terms}
    for i, cell in enumerate(doc["cells"]):
        gen = cell["throughput"]["gen_tps"]
        cell["slo"] = {"good_share": 1.0 - 0.1 * i, "goodput_rps": 2.0 - 0.2 * i, "goodput_gen_tps": gen * 0.9}
        cell["slo"].update({"spec": doc["params"]["slo"]["spec"], "met": i < 3, "terms": []})
        interval = {"n": 3, "mean": gen, "stdev": gen * 0.03, "low": gen * 0.95, "high": gen * 1.05}
        cell["repeats"] = {"n": 3, "values": {"gen_tps": [gen * 0.97, gen, gen * 1.03]}, "ci": {"gen_tps": interval}}
    steps = []
    for i, rate in enumerate((0.5, 1.0, 2.0, 3.0, 3.3, 3.6, 4.0)):
        ttft, served = 40 + 10 * rate**2, min(rate, 3.4)
        passed = ttft <= 150
        steps.append(
            {"cell": f"s{i}-r{rate:g}", "phase": "bisect", "value": rate, "rate": rate, "concurrency": 8,
             "passed": passed, "stopped_early": rate >= 4, "requests_sent": 30, "requests_ok": 30,
             "ttft_p50": 0.8 * ttft, "ttft_p99": ttft - 5, "tpot_p50": 5 + rate, "requests_per_s": served,
             "gen_tps": 8 * served, "goodput_rps": served if passed else 0.4, "goodput_gen_tps": 8 * served,
             "slo_good_share": 1.0 if passed else 0.3, "slo_values_ms": {"ttft_p99": ttft, "tpot_p50": 5 + rate}}
        )  # fmt: skip
    doc["capacity"] = {"by": "rate", "unit": "req/s", "slo": doc["params"]["slo"], "outcome": "found",
                       "capacity": 3.3, "lower": 3.3, "upper": 3.6, "steps": len(steps), "curve": steps}  # fmt: skip
    return doc


def add_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SLO figures of FIELDS (added with --slo; here for a build that lacks them)."""
    for f in (
        Field("slo_met", "SLO met", ("slo", "met")),
        Field("slo_good_share", "SLO good share", ("slo", "good_share"), "", 3, True),
        Field("goodput_rps", "goodput req/s", ("slo", "goodput_rps"), "req/s", 3, True),
        Field("goodput_gen_tps", "goodput gen tok/s", ("slo", "goodput_gen_tps"), "tok/s", 1, True),
        Field("rate", "offered req/s", ("rate",), "req/s", 3),
    ):
        if f.key not in FIELDS:
            monkeypatch.setitem(FIELDS, f.key, f)


def write_doc(path: Path, doc: Dict[str, Any]) -> Path:
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def chart_ids(page: str) -> List[str]:
    return re.findall(r'<svg class="chart" id="chart-([a-z0-9-]+)"', page)


def page_of(*paths: Path) -> str:
    inputs = report_figures.load_inputs([str(p) for p in paths])
    return render_page(inputs, build_sections(inputs))


# -- charts ------------------------------------------------------------------------------------------
def test_ticks_are_round_numbers_covering_the_data() -> None:
    assert linear_ticks(0, 87) == [0, 20, 40, 60, 80, 100]
    assert linear_ticks(0.02, 0.09)[0] <= 0.02 and linear_ticks(0.02, 0.09)[-1] >= 0.09
    assert linear_ticks(5, 5)  # a flat series still gets an axis
    assert log_ticks(100, 100000) == [100, 1000, 10000, 100000]
    assert log_ticks(3, 40) == [1, 2, 5, 10, 20, 50, 100]
    assert charts.fmt_tick(10000) == "10k" and charts.fmt_tick(0.25, 0.05) == "0.25"


def test_cdf_is_a_step_line_from_0_to_100_percent_and_stays_small() -> None:
    points = cdf_points([3.0, 1.0, 2.0, 2.0])
    assert points[0] == (1.0, 0.0) and points[-1] == (3.0, 100.0)
    assert [y for _, y in points] == sorted(y for _, y in points)
    big = cdf_points(float(i) for i in range(10000))
    assert len(big) <= 2 * charts.MAX_CDF_POINTS + 1 and big[-1] == (9999.0, 100.0)
    assert cdf_points([float("nan"), None]) == []  # type: ignore[list-item]


def test_svg_escapes_every_text_and_draws_rules_legend_and_error_bars() -> None:
    chart = Chart(
        "x<y", 'TTFT "p99" <script>', "rate & more", "ms",
        [Series("<b>a</b>", [(1, 10), (2, 20)], errors=[(9, 11), None]), Series("b", [(1, 5)], dash=1)],
        [Rule("y", 15, "SLO <15 ms"), Rule("x", 1.5, "capacity")],
    )  # fmt: skip
    out = svg(chart)
    assert "<script" not in out and "<b>" not in out
    assert "&lt;script&gt;" in out and "rate &amp; more" in out and "SLO &lt;15 ms" in out
    assert out.count('class="rule"') == 2 and out.count('class="legend-item"') == 2
    assert out.count('class="errorbar"') == 1 and 'stroke-dasharray="6 3"' in out
    assert re.search(r'<svg class="chart" id="chart-x-y"', out)


def test_log_axes_drop_what_they_cannot_show_and_empty_charts_say_so() -> None:
    chart = Chart("c", "t", "x", "y", [Series("s", [(0, 1), (10, 100), (1000, 5)])], x_log=True)
    assert chart.has_data() and "(log)" in svg(chart)
    empty = Chart("e", "t", "x", "y", [Series("s", [(float("inf"), 1)])])
    assert not empty.has_data() and "no data" in svg(empty)


def test_slo_bounds_are_read_from_the_spec_or_the_terms() -> None:
    want = {"ttft_p99": 2000.0, "tpot_p50": 80.0}
    terms = [{"metric": "ttft", "percentile": 99.0, "bound_ms": 2000.0}, {"metric": "tpot", "percentile": 50.0,
             "bound_ms": 80.0}]  # fmt: skip
    assert report_figures.slo_bounds({"slo": {"spec": "ttft_p99=2s,tpot_p50=80ms", "terms": terms}}) == want
    assert report_figures.slo_bounds({"params": {"slo": {"spec": "ttft_p99=2s,tpot_p50=80ms"}}}) == want
    assert report_figures.slo_bounds({"capacity": {"slo": "ttft_p99<=2000ms,tpot_p50=80ms"}}) == want
    assert report_figures.slo_bounds({"cells": [{"slo": {"terms": [{**terms[0], "term": "ttft_p99"}]}}]}) == {
        "ttft_p99": 2000.0
    }
    assert report_figures.slo_bounds({"params": {"slo": 12}, "slo": "nonsense"}) == {}


# -- the page from real results ----------------------------------------------------------------------
def test_a_real_result_gives_every_base_section(real_results: List[Path], tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    assert report(ReportParams([str(real_results[0])], output_path(str(out), "--html"))) == 0
    page = out.read_text(encoding="utf-8")
    ids = set(chart_ids(page))
    assert BASE_CHARTS | SLOTS_CHARTS | {"server-gen", "server-prompt", "server-load"} <= ids, ids
    assert not ids & NEW_CHARTS  # nothing invented for sections the result does not have
    for needle in ("b0-fake", "fake-model", "server total_slots", "<td>concurrency</td><td>1, 2, 4</td>", "p400-c4"):
        assert needle in page
    assert page.count("<tr><td>p") >= 6  # a row per cell
    assert 'id="capacity"' not in page


def test_the_page_is_self_contained(real_results: List[Path]) -> None:
    page = page_of(*real_results)
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    refs = re.findall(r'\b(?:src|href)="([^"]*)"', page)
    assert all(r.startswith(("#", "data:")) for r in refs), refs
    assert re.findall(r"url\(([^)]*)\)", page) and all(u.startswith("#") for u in re.findall(r"url\(([^)]*)\)", page))
    assert "@import" not in page and '<link rel="stylesheet"' not in page and "<img" not in page


def test_several_results_side_by_side(real_results: List[Path]) -> None:
    page = page_of(*real_results)
    assert "<th>np2</th><th>np4</th>" in page  # the manifest: a column per file
    assert "np2 · p100" in page and "np4 · p100" in page  # a series per file in the legends
    assert 'stroke-dasharray="6 3"' in page  # the second file dashed
    assert page.count("<h3>np2: 6 cell(s)</h3>") == 1 and page.count("<h3>np4: 6 cell(s)</h3>") == 1


def test_slo_and_capacity_results_give_their_sections(real_slo_results: List[Path]) -> None:
    page = page_of(*real_slo_results)
    ids = set(chart_ids(page))
    assert NEW_CHARTS <= ids, ids
    assert "Generation tok/s and goodput" in page and "<th>goodput req/s</th>" in page
    assert "SLO ttft p99 ≤ 60 ms" in page and "SLO ttft p90 ≤ 500 ms" in page  # each file's SLO drawn
    assert re.search(r"capacity: capacity [\d.]+ req/s.*, outcome (at-least|found)", page)
    assert 'class="errorbar"' in page and re.search(r"\d \[\d+\.\d+, \d+\.\d+\]</td>", page)  # --repeats: intervals


def test_new_sections_are_drawn_when_present(
    real_results: List[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_fields(monkeypatch)
    doc = add_new_sections(json.loads(real_results[0].read_text(encoding="utf-8")))
    page = page_of(write_doc(tmp_path / "cap.json", doc))
    ids = set(chart_ids(page))
    assert NEW_CHARTS <= ids, ids
    assert "SLO ttft p99 ≤ 150 ms" in page and "capacity 3.3" in page  # the SLO line and the capacity found
    assert "capacity 3.3 req/s (between 3.3 and 3.6), outcome found" in page
    capacity = page.split('id="chart-capacity-latency"')[1].split("</svg>")[0]
    assert "step passed: 3.3, 148.9" in capacity and "step failed: 3.6, 169.6" in capacity  # the SLO's own p99
    assert "goodput req/s" in page and "SLO good share" in page and "SLO met" in page  # columns from FIELDS
    assert 'class="errorbar"' in page and re.search(r"\d+\.\d \[\d+\.\d, \d+\.\d\]", page)  # the 95 % intervals
    ttft_cdf = page.split('id="chart-ttft-cdf"')[1].split("</svg>")[0]
    assert "SLO ttft p99 ≤ 150 ms" in ttft_cdf and ">p99<" in ttft_cdf


def test_missing_or_malformed_parts_leave_their_sections_out(tmp_path: Path) -> None:
    skipped = {"label": "p9-c1", "prompt_size": 9, "concurrency": 1, "status": "skipped", "reason": "too <big>"}
    doc = {
        "schema": SCHEMA,
        "cells": [skipped],
        "environment": None,
        "requests": "x",
        "metrics_series": [1, {"t": "a"}],
    }
    doc.update({"capacity": {"curve": "nope"}, "slots_series": [{"t": None}], "params": {"slo": ["?"]}, "notes": ["n"]})
    page = page_of(write_doc(tmp_path / "odd.json", doc))
    assert chart_ids(page) == []
    assert "too &lt;big&gt;" in page and 'id="environment"' in page and "<li>n</li>" in page


# -- the command -------------------------------------------------------------------------------------
def test_report_command_writes_the_page(real_results: List[Path], tmp_path: Path) -> None:
    out = tmp_path / "both.html"
    res = report_cli(*map(str, real_results), "--html", str(out))
    assert res.returncode == 0, res.stderr
    assert f"wrote {out}" in res.stdout and out.stat().st_size > 10000
    default = tmp_path / "np2.json"
    default.write_bytes(real_results[0].read_bytes())
    assert report_cli(str(default)).returncode == 0 and default.with_suffix(".html").is_file()
    assert report_cli(str(default)).returncode == 0  # its own page of that name: replaced
    # A name made up from the result's never replaces a file the user keeps there.
    notes = tmp_path / "mine.html"
    notes.write_text("MY NOTES", encoding="utf-8")
    (tmp_path / "mine.json").write_bytes(real_results[0].read_bytes())
    kept = report_cli(str(tmp_path / "mine.json"))
    assert kept.returncode == 2 and "was not written by llama-bench" in kept.stderr and "--html" in kept.stderr
    assert notes.read_text(encoding="utf-8") == "MY NOTES"


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.json", "--html", "{tmp}/o.html"], "result file not found"),
        (["{tmp}/bad.json", "--html", "{tmp}/o.html"], "is not a llama-bench result"),
        (["{tmp}/ok.json", "--html", "{tmp}"], "is a directory"),
        (["{tmp}/ok.json", "--html", "{tmp}/no/such/o.html"], "does not exist"),
        (["{tmp}/ok.json", "--html", "{tmp}/ok.json"], "is the result file it reads"),
        (["{tmp}/ok.json", "--png", "{tmp}/no/such/"], "does not exist"),
    ],
)
def test_bad_paths_are_one_line_and_exit_2(tmp_path: Path, args: List[str], message: str) -> None:
    write_doc(tmp_path / "bad.json", {"cells": []})
    write_doc(tmp_path / "ok.json", {"schema": SCHEMA, "cells": []})
    res = report_cli(*(a.format(tmp=tmp_path) for a in args))
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and message in lines[0], res.stderr
    assert lines[0].startswith("llama-bench: error: ") and "Traceback" not in res.stderr
    assert not (tmp_path / "o.html").exists()


def test_png_without_matplotlib_is_one_line_exit_3_and_nothing_written(tmp_path: Path) -> None:
    doc = write_doc(tmp_path / "ok.json", {"schema": SCHEMA, "cells": []})
    hide = "import sys; sys.modules['matplotlib'] = None\n"  # what a machine without matplotlib sees
    args = ["report", str(doc), "--html", str(tmp_path / "o.html"), "--png", str(tmp_path)]
    res = subprocess.run(
        [sys.executable, "-c", hide + ENTRY, *args], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert res.returncode == 3 and "missing Python package 'matplotlib'" in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "o.html").exists()


def test_png_targets_are_a_directory_or_a_prefix(tmp_path: Path) -> None:
    assert png_target(str(tmp_path)).path_for("TTFT cdf") == tmp_path / "ttft-cdf.png"
    assert png_target(str(tmp_path / "run.png")).path_for("e2e-cdf") == tmp_path / "run-e2e-cdf.png"
    with pytest.raises(UserError, match="does not exist"):
        png_target(str(tmp_path / "nope" / "run"))


def test_pngs_are_written_when_matplotlib_is_installed(
    real_results: List[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("matplotlib")
    add_fields(monkeypatch)
    doc = write_doc(tmp_path / "cap.json", add_new_sections(json.loads(real_results[0].read_text(encoding="utf-8"))))
    (tmp_path / "out").mkdir()
    assert report(ReportParams([str(doc), str(real_results[1])], None, png_target(str(tmp_path / "out" / "run")))) == 0
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"run-ttft-cdf.png", "run-capacity-latency.png", "run-gen-tps.png"} <= names, names
    assert all(p.stat().st_size > 5000 for p in (tmp_path / "out").iterdir())


def test_help_stays_light() -> None:
    code = (
        "import sys; from tools.llama_bench.bench import report_args; "
        "assert not [m for m in sys.modules if m.startswith('tools.llama_bench.bench.output')], 'heavy import'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60)


def test_llama_bench_wrapper_offers_report() -> None:
    res = run_cli(LLAMA_BENCH, "report", "--help")
    assert res.returncode == 0 and "--html" in res.stdout and "--png" in res.stdout
