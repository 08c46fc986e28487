"""Prometheus parsing, token-rate math and /slots summaries."""

from __future__ import annotations

from typing import Dict, Optional

import pytest

from tools.llama_bench.monitor.metrics import MetricsSample, Rate, RateTracker, parse_metrics
from tools.llama_bench.monitor.slots import SlotsSummary, summarize_slots

# /metrics of a freshly started llama-server (see the server reference notes).
REFERENCE_METRICS = """\
# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed, excluding cached tokens
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 0
# HELP llamacpp:prompt_tokens_cached_total Number of prompt tokens reused from the cache
# TYPE llamacpp:prompt_tokens_cached_total counter
llamacpp:prompt_tokens_cached_total 0
# HELP llamacpp:prompt_seconds_total Total time spent processing prompts
# TYPE llamacpp:prompt_seconds_total counter
llamacpp:prompt_seconds_total 0
# HELP llamacpp:tokens_predicted_total Number of generation tokens processed
# TYPE llamacpp:tokens_predicted_total counter
llamacpp:tokens_predicted_total 0
# HELP llamacpp:tokens_predicted_seconds_total Total time spent generating tokens
# TYPE llamacpp:tokens_predicted_seconds_total counter
llamacpp:tokens_predicted_seconds_total 0
# HELP llamacpp:n_decode_total Total number of llama_decode() calls, excluding speculative decoding and multimodal decoding
# TYPE llamacpp:n_decode_total counter
llamacpp:n_decode_total 0
# HELP llamacpp:n_tokens_max Largest observed sequence length (prompt + generation)
# TYPE llamacpp:n_tokens_max counter
llamacpp:n_tokens_max 0
# HELP llamacpp:spec_decode_num_draft_tokens_total Speculative: Total draft tokens generated
# TYPE llamacpp:spec_decode_num_draft_tokens_total counter
llamacpp:spec_decode_num_draft_tokens_total 0
# HELP llamacpp:spec_decode_num_accepted_tokens_total Speculative: Total draft tokens accepted by the target model
# TYPE llamacpp:spec_decode_num_accepted_tokens_total counter
llamacpp:spec_decode_num_accepted_tokens_total 0
# HELP llamacpp:spec_decode_num_drafts_total Speculative: Total speculative decoding verification steps
# TYPE llamacpp:spec_decode_num_drafts_total counter
llamacpp:spec_decode_num_drafts_total 0
# HELP llamacpp:prompt_tokens_seconds Average prompt throughput in tokens/s
# TYPE llamacpp:prompt_tokens_seconds gauge
llamacpp:prompt_tokens_seconds 0
# HELP llamacpp:predicted_tokens_seconds Average generation throughput in tokens/s
# TYPE llamacpp:predicted_tokens_seconds gauge
llamacpp:predicted_tokens_seconds 0
# HELP llamacpp:requests_processing Number of requests processing
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 0
# HELP llamacpp:requests_deferred Number of requests deferred
# TYPE llamacpp:requests_deferred gauge
llamacpp:requests_deferred 0
# HELP llamacpp:n_busy_slots_per_decode Average number of busy slots per llama_decode() call
# TYPE llamacpp:n_busy_slots_per_decode gauge
llamacpp:n_busy_slots_per_decode 0
"""  # noqa: E501 (recorded text, long HELP lines)


def sample(t: float, prompt: Optional[float] = None, gen: Optional[float] = None, **extra: float) -> MetricsSample:
    values: Dict[str, float] = dict(extra)
    if prompt is not None:
        values["prompt_tokens_total"] = prompt
    if gen is not None:
        values["tokens_predicted_total"] = gen
    return MetricsSample(t=t, values=values)


def approx_rate(rate: Rate, prompt: Optional[float], gen: Optional[float]) -> bool:
    def same(a: Optional[float], b: Optional[float]) -> bool:
        return a is None if b is None else a is not None and a == pytest.approx(b)

    return same(rate.prompt_tps, prompt) and same(rate.gen_tps, gen)


# --- parse_metrics ------------------------------------------------------------------------------


def test_reference_text_parses_to_unprefixed_sample_names():
    values = parse_metrics(REFERENCE_METRICS)
    assert set(values) == {
        "prompt_tokens_total",
        "prompt_tokens_cached_total",
        "prompt_seconds_total",
        "tokens_predicted_total",
        "tokens_predicted_seconds_total",
        "n_decode_total",
        "n_tokens_max",
        "spec_decode_num_draft_tokens_total",
        "spec_decode_num_accepted_tokens_total",
        "spec_decode_num_drafts_total",
        "prompt_tokens_seconds",
        "predicted_tokens_seconds",
        "requests_processing",
        "requests_deferred",
        "n_busy_slots_per_decode",
    }
    assert all(v == 0.0 for v in values.values())


def test_counter_values_keep_their_total_suffix():
    text = REFERENCE_METRICS.replace("llamacpp:prompt_tokens_total 0", "llamacpp:prompt_tokens_total 123")
    text = text.replace("llamacpp:tokens_predicted_total 0", "llamacpp:tokens_predicted_total 45")
    values = parse_metrics(text)
    assert values["prompt_tokens_total"] == 123.0
    assert values["tokens_predicted_total"] == 45.0


def test_counter_declared_without_total_keeps_its_name_from_the_text():
    values = parse_metrics("# TYPE llamacpp:n_tokens_max counter\nllamacpp:n_tokens_max 77\n")
    assert values == {"n_tokens_max": 77.0}


def test_metrics_without_llamacpp_prefix_keep_their_names():
    text = "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running 3\nprocess_cpu_seconds_total 1.5\n"
    assert parse_metrics(text) == {"vllm:num_requests_running": 3.0, "process_cpu_seconds_total": 1.5}


def test_labelled_samples_keep_the_first_value():
    text = 'x{model="a"} 2\nx{model="b"} 3\n'
    assert parse_metrics(text) == {"x": 2.0}


def test_unlabelled_sample_wins_over_labelled_ones():
    text = 'x{model="a"} 2\nx 4\nx{model="b"} 3\n'
    assert parse_metrics(text) == {"x": 4.0}


def test_empty_text_gives_no_metrics():
    assert parse_metrics("") == {}


@pytest.mark.parametrize(
    "text",
    [
        "garbage here",
        "<html><body>Not Found</body></html>",
        '{"error":{"code":501,"message":"This server does not support metrics endpoint."}}',
        "llamacpp:prompt_tokens_total {",
    ],
)
def test_unparsable_text_raises_value_error(text):
    with pytest.raises(ValueError, match="not Prometheus metrics text"):
        parse_metrics(text)


def test_sample_get_accepts_names_with_or_without_prefix():
    s = MetricsSample(t=1.0, values=parse_metrics(REFERENCE_METRICS))
    assert s.get("requests_processing") == 0.0
    assert s.get("llamacpp:requests_processing") == 0.0
    assert s.get("no_such_metric") is None


# --- RateTracker --------------------------------------------------------------------------------


def test_first_sample_has_no_rates_yet():
    rs = RateTracker().update(sample(100.0, prompt=10, gen=20))
    for rate in (rs.now, rs.m1, rs.m15, rs.all):
        assert rate == Rate(None, None)
    assert rs.now_idle is False
    assert rs.prompt_tokens == 0 and rs.gen_tokens == 0
    assert rs.prompt_tokens_total == 10 and rs.gen_tokens_total == 20


def test_idle_server_before_any_work_shows_zero_and_idle():
    tracker = RateTracker()
    tracker.update(sample(0.0, prompt=0, gen=0))
    rs = tracker.update(sample(1.0, prompt=0, gen=0))
    assert rs.now == Rate(0.0, 0.0)
    assert rs.now_idle is True
    assert rs.all == Rate(0.0, 0.0)


def test_steady_flow_gives_delta_over_interval():
    tracker = RateTracker()
    tracker.update(sample(0.0, prompt=0, gen=0))
    tracker.update(sample(1.0, prompt=100, gen=20))
    rs = tracker.update(sample(3.0, prompt=100, gen=60))
    assert approx_rate(rs.now, 0.0, 20.0)
    assert rs.now_idle is False
    assert approx_rate(rs.all, 100 / 3, 60 / 3)
    assert rs.prompt_tokens == 100 and rs.gen_tokens == 60


def test_quiet_interval_shows_rate_of_last_burst_as_idle():
    tracker = RateTracker()
    tracker.update(sample(0.0, prompt=0, gen=0))
    tracker.update(sample(1.0, prompt=50, gen=10))  # burst: 1 s
    tracker.update(sample(2.0, prompt=50, gen=40))  # burst: 2 s, 50 prompt, 40 gen
    rs = tracker.update(sample(3.0, prompt=50, gen=40))
    assert rs.now_idle is True
    assert approx_rate(rs.now, 25.0, 20.0)
    # Still the same burst after a long pause.
    rs = tracker.update(sample(30.0, prompt=50, gen=40))
    assert rs.now_idle is True
    assert approx_rate(rs.now, 25.0, 20.0)


def test_new_burst_replaces_the_previous_one():
    tracker = RateTracker()
    tracker.update(sample(0.0, prompt=0, gen=0))
    tracker.update(sample(1.0, prompt=0, gen=100))
    tracker.update(sample(2.0, prompt=0, gen=100))  # quiet: burst 1 ended at 100 tok/s
    tracker.update(sample(4.0, prompt=0, gen=120))  # burst 2: 20 tokens over 2 s
    rs = tracker.update(sample(5.0, prompt=0, gen=120))
    assert rs.now_idle is True
    assert approx_rate(rs.now, 0.0, 10.0)


def test_counter_reset_counts_new_value_not_negative():
    tracker = RateTracker()
    tracker.update(sample(0.0, prompt=500, gen=1000))
    tracker.update(sample(1.0, prompt=600, gen=1100))
    rs = tracker.update(sample(2.0, prompt=30, gen=50))  # server restarted
    assert approx_rate(rs.now, 30.0, 50.0)
    assert rs.prompt_tokens == 130 and rs.gen_tokens == 150
    assert rs.prompt_tokens_total == 30 and rs.gen_tokens_total == 50
    for rate in (rs.now, rs.m1, rs.m15, rs.all):
        assert rate.prompt_tps is not None and rate.prompt_tps >= 0
        assert rate.gen_tps is not None and rate.gen_tps >= 0


def test_missing_metrics_give_none_rates():
    tracker = RateTracker()
    tracker.update(sample(0.0, requests_processing=0))
    rs = tracker.update(sample(1.0, requests_processing=1))
    for rate in (rs.now, rs.m1, rs.m15, rs.all):
        assert rate == Rate(None, None)
    assert rs.prompt_tokens == 0 and rs.gen_tokens == 0
    assert rs.prompt_tokens_total is None and rs.gen_tokens_total is None


def test_one_missing_counter_only_blanks_its_own_rates():
    tracker = RateTracker()
    tracker.update(sample(0.0, gen=0))
    rs = tracker.update(sample(1.0, gen=30))
    assert approx_rate(rs.now, None, 30.0)
    assert approx_rate(rs.all, None, 30.0)


def test_counter_dropping_out_of_one_sample_resumes_afterwards():
    tracker = RateTracker()
    tracker.update(sample(0.0, prompt=0, gen=0))
    rs = tracker.update(sample(1.0, prompt=10))
    assert rs.gen_tokens_total is None and rs.now.gen_tps is None
    rs = tracker.update(sample(2.0, prompt=10, gen=40))
    assert rs.gen_tokens == 40
    assert approx_rate(rs.all, 5.0, 20.0)


def test_one_minute_window_uses_only_the_last_60_seconds():
    tracker = RateTracker()

    # 10 tok/s of generation for two minutes, then 1 tok/s for the last minute.
    def gen_at(t: int) -> float:
        return 10.0 * t if t <= 120 else 1200.0 + (t - 120)

    for t in range(0, 181):
        rs = tracker.update(sample(float(t), prompt=0, gen=gen_at(t)))
    assert approx_rate(rs.m1, 0.0, 1.0)
    assert rs.m15.gen_tps == pytest.approx((120 * 10 + 60 * 1) / 180)
    assert rs.all.gen_tps == pytest.approx((120 * 10 + 60 * 1) / 180)


def test_fifteen_minute_window_forgets_older_work():
    tracker = RateTracker()
    tracker.update(sample(0.0, prompt=0, gen=0))
    tracker.update(sample(10.0, prompt=0, gen=10_000))  # early burst
    for t in range(20, 1001, 10):
        rs = tracker.update(sample(float(t), prompt=0, gen=10_000 + (t - 10)))  # 1 tok/s
    assert rs.m15.gen_tps == pytest.approx(1.0)
    assert rs.all.gen_tps == pytest.approx((10_000 + 990) / 1000)


def test_sparse_samples_measure_window_from_the_sample_just_before_it():
    tracker = RateTracker()
    tracker.update(sample(0.0, prompt=0, gen=0))
    rs = tracker.update(sample(120.0, prompt=0, gen=240))
    assert approx_rate(rs.m1, 0.0, 2.0)


def test_sample_with_non_increasing_time_is_ignored():
    tracker = RateTracker()
    tracker.update(sample(0.0, prompt=0, gen=0))
    first = tracker.update(sample(1.0, prompt=0, gen=10))
    again = tracker.update(sample(1.0, prompt=0, gen=99))
    assert again.now == first.now and again.gen_tokens == first.gen_tokens
    rs = tracker.update(sample(2.0, prompt=0, gen=20))
    assert approx_rate(rs.now, 0.0, 10.0)


def test_history_stays_bounded():
    tracker = RateTracker()
    for t in range(5000):
        tracker.update(sample(float(t), prompt=t, gen=t))
    assert len(tracker._w15.points) <= 901
    assert len(tracker._w1.points) <= 61


# --- /slots ------------------------------------------------------------------------------------


def slot(i: int, processing: bool, n_prompt: int = 0, n_decoded: int = 0, n_ctx: int = 1024) -> dict:
    return {
        "id": i,
        "n_ctx": n_ctx,
        "speculative": False,
        "is_processing": processing,
        "id_task": 7,
        "n_prompt_tokens": n_prompt,
        "n_prompt_tokens_processed": n_prompt,
        "n_prompt_tokens_cache": 0,
        "params": {},
        "next_token": {"has_next_token": processing, "n_remain": -1, "n_decoded": n_decoded},
    }


def test_slots_summary_counts_busy_slots_and_context_in_use():
    summary = summarize_slots([slot(0, True, 100, 28), slot(1, False, 50, 9), slot(2, True, 300, 0), slot(3, False)])
    assert summary.total == 4
    assert summary.busy == 2
    assert summary.n_ctx_per_slot == 1024
    # Current llama-server counts generated tokens into n_prompt_tokens: they are not added twice.
    assert summary.ctx_used == 400
    assert summary.ctx_fill == pytest.approx(400 / 2048)
    assert summary.n_decoded == 28
    assert summary.slots_used == [100, 0, 300, 0]


def test_slots_summary_of_idle_server_is_empty_context():
    summary = summarize_slots([slot(0, False), slot(1, False)])
    assert summary.busy == 0 and summary.ctx_used == 0
    assert summary.ctx_fill == 0.0


def test_slots_summary_without_slots_info_has_no_fill():
    assert summarize_slots([]) == SlotsSummary()
    assert summarize_slots({"error": {"code": 501}}).ctx_fill is None
    assert summarize_slots(None).total == 0


def test_slots_summary_tolerates_older_formats_and_missing_keys():
    old = {"id": 0, "n_ctx": 512, "state": 1, "n_prompt_tokens": 10, "next_token": [{"n_decoded": 5}]}
    bare = {"id": 1, "is_processing": True}
    summary = summarize_slots([old, bare, "junk"])
    assert summary.total == 2
    assert summary.busy == 2
    assert summary.ctx_used == 10
    assert summary.ctx_fill == pytest.approx(10 / 512)


def test_slot_usage_is_capped_at_its_context_size():
    summary = summarize_slots([slot(0, True, 2000, 100, n_ctx=1024)])
    assert summary.ctx_used == 1024
    assert summary.ctx_fill == pytest.approx(1.0)


def test_now_token_counts_agree_with_the_now_rates():
    tracker = RateTracker()
    tracker.update(sample(0.0, prompt=0, gen=0))
    rs = tracker.update(sample(1.0, prompt=10, gen=20))
    assert (rs.now_prompt_tokens, rs.now_gen_tokens) == (10, 20)
    rs = tracker.update(sample(2.0, prompt=10, gen=50))
    assert (rs.now_prompt_tokens, rs.now_gen_tokens) == (0, 30)
    rs = tracker.update(sample(3.0, prompt=10, gen=50))  # quiet: the burst of the last two intervals
    assert rs.now_idle and (rs.now_prompt_tokens, rs.now_gen_tokens) == (10, 50)
    assert approx_rate(rs.now, 5.0, 25.0)
