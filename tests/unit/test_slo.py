"""--slo: parsing (one-line errors), what a per-request bound means, and the cell's share of good
requests and goodput — failed requests stay in the denominator, interrupted ones do not."""

from __future__ import annotations

import argparse
import math
from typing import Any, Dict

import pytest

from tools.llama_bench.bench.records import INTERRUPTED, STEP_STOPPED, Api, RequestRecord
from tools.llama_bench.bench.slo import parse_slo, request_value, slo_type
from tools.llama_bench.bench.stats import aggregate
from tools.llama_bench.bench.summary import FIELDS


def rec(index: int, ok: bool = True, **kw: Any) -> RequestRecord:
    base: Dict[str, Any] = dict(
        cell="c",
        index=index,
        api=Api.COMPLETION,
        warmup=False,
        ok=ok,
        error=None if ok else "HTTP 500: boom",
        http_status=200 if ok else 500,
        prompt_tokens_requested=100,
        max_tokens=10,
        start_s=float(index),
        ttft_ms=100.0,
        e2e_ms=1000.0,
        tpot_ms=50.0,
        output_tokens=10 if ok else None,
        itl_ms=[50.0] * 9 if ok else [],
    )
    base.update(kw)
    return RequestRecord(**base)


def test_a_spec_lists_metric_percentile_and_bound_in_ms_or_s() -> None:
    slo = parse_slo("ttft_p99=2s, tpot_p50=80ms,e2e_p90=20s,itl_p95=0.5s")
    assert [(t.metric, t.percentile, t.bound_ms) for t in slo.terms] == [
        ("ttft", 99.0, 2000.0),
        ("tpot", 50.0, 80.0),
        ("e2e", 90.0, 20000.0),
        ("itl", 95.0, 500.0),
    ]
    assert slo.text == "ttft_p99=2000ms,tpot_p50=80ms,e2e_p90=20000ms,itl_p95=500ms"
    assert parse_slo("TTFT_P99.9=1.5S").terms[0].percentile == 99.9


@pytest.mark.parametrize(
    "text,needle",
    [
        ("", "empty"),
        ("ttft_p99=2s,,tpot_p50=1s", "empty entry"),
        ("ttft=2s", "METRIC_pXX=BOUND"),
        ("latency_p99=2s", "unknown metric"),
        ("ttft_p0=2s", "above 0"),
        ("ttft_p101=2s", "at most 100"),
        ("ttft_p99=2", "needs a unit"),
        ("ttft_p99=2min", "needs a unit"),
        ("ttft_p99=0ms", "more than 0"),
        ("ttft_p99=-1s", "more than 0"),
        ("ttft_p٩٩=2s", "METRIC_pXX=BOUND"),  # digits are ASCII digits
        ("ttft_p99=1s,ttft_p99=2s", "twice"),
    ],
)
def test_bad_specs_are_one_line_argparse_errors(text: str, needle: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as exc:
        slo_type(text)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_per_request_values_count_ttft_and_e2e_from_arrival() -> None:
    slo = parse_slo("ttft_p90=1s,e2e_p90=1s,tpot_p50=1s,itl_p50=1s")
    r = rec(0, queue_ms=40.0, itl_ms=[1.0, 2.0, 3.0, 100.0])
    ttft, e2e, tpot, itl = (request_value(r, t) for t in slo.terms)
    assert ttft == 140.0 and e2e == 1040.0 and tpot == 50.0
    assert itl == 2.0  # the request's own p50 of its gaps (nearest rank)
    assert all(math.isinf(request_value(rec(1, ok=False), t) or 0) for t in slo.terms)
    assert request_value(rec(2, tpot_ms=None, itl_ms=[]), slo.terms[2]) is None  # one token: no TPOT


def test_failed_requests_are_not_good_and_stay_in_the_denominator() -> None:
    records = [rec(i, ttft_ms=100.0) for i in range(7)]
    records.append(rec(7, ttft_ms=3000.0))  # too slow
    records += [rec(8, ok=False), rec(9, ok=False)]  # failed: not good
    records.append(rec(10, ok=False, error=INTERRUPTED))  # Ctrl-C: not a request the server was asked to finish
    records.append(rec(11, ok=False, error=STEP_STOPPED))
    records.append(rec(12, warmup=True, ttft_ms=9000.0))  # warm-up never counts
    summary = aggregate(records, slo=parse_slo("ttft_p90=2s"), duration_s=10.0)
    slo = summary.slo
    assert slo is not None
    assert (slo.requests, slo.good) == (10, 7)
    assert slo.good_share == pytest.approx(0.7)
    assert slo.goodput_rps == pytest.approx(0.7)  # 7 good requests in 10 s
    assert slo.goodput_gen_tps == pytest.approx(7.0)  # 10 tokens each
    [term] = slo.terms
    # 70 % of requests meet the bound, the p90 needs 90 %: the nearest-rank p90 falls on a failure.
    assert term.good_share == pytest.approx(0.7) and term.value_ms is None and not term.met
    assert not slo.met
    assert FIELDS["goodput_rps"].number(summary.to_dict()) == pytest.approx(0.7)
    assert FIELDS["slo_good_share"].number(summary.to_dict()) == pytest.approx(0.7)


def test_a_term_is_met_when_the_percentile_of_its_requests_meets_the_bound() -> None:
    records = [rec(i, ttft_ms=100.0 + i) for i in range(19)] + [rec(19, ttft_ms=5000.0)]
    p90 = aggregate(records, slo=parse_slo("ttft_p90=1s")).slo
    p99 = aggregate(records, slo=parse_slo("ttft_p99=1s")).slo
    assert p90 is not None and p99 is not None
    # 19 of 20 = 95 % meet 1 s: enough for a p90, not for a p99.
    assert p90.met and p90.terms[0].value_ms == pytest.approx(117.0)
    assert not p99.met and p99.terms[0].value_ms == pytest.approx(5000.0)
    assert p90.good == p99.good == 19  # the per-request verdict does not depend on the percentile


def test_every_term_must_hold_for_a_request_to_be_good() -> None:
    records = [rec(0), rec(1, tpot_ms=200.0), rec(2, ttft_ms=5000.0), rec(3)]
    slo = aggregate(records, slo=parse_slo("ttft_p50=1s,tpot_p50=100ms")).slo
    assert slo is not None
    assert slo.good == 2 and slo.met  # each term alone holds for 3 of 4 requests
    assert [t.good_share for t in slo.terms] == [0.75, 0.75]


def test_no_requests_means_no_verdict() -> None:
    slo = aggregate([], slo=parse_slo("ttft_p50=1s")).slo
    assert slo is not None and slo.requests == 0 and slo.good_share is None and not slo.met
    assert slo.goodput_rps is None
