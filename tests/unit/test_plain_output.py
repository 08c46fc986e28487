"""The plain-mode stat blocks: line prefixes and field order that scripts rely on."""

from __future__ import annotations

import re
from typing import Tuple

from tools.llama_bench.monitor.metrics import Rate, RateSet
from tools.llama_bench.monitor.sampler import HostStats, ProcessStats, Snapshot
from tools.llama_bench.monitor.slots import SlotsSummary
from tools.llama_bench.monitor.windows import window_stats
from tools.llama_bench.power.reading import EnergySummary
from tools.llama_run.plain import format_block

TOK = re.compile(r"^\[tok\] (now|1m|15m|all): p_tok/s \d+\.\d+ g_tok/s \d+\.\d+ p_tok \d+ g_tok \d+")


def snap(
    elapsed: float,
    prompt: int,
    gen: int,
    now: Rate,
    idle: bool,
    cpu: float = 10.0,
    processing: float = 0.0,
    now_tokens: Tuple[int, int] = (0, 0),
) -> Snapshot:
    """A snapshot whose token counters were quiet (`idle`) or moving; an idle server has no busy slot.
    `now_tokens` are the tokens behind `now` (the last interval's, or the last burst's when idle)."""
    rates = RateSet(
        now=now, now_idle=idle, m1=Rate(1.0, 2.0), m15=Rate(1.0, 2.0), all=Rate(1.0, 2.0),
        prompt_tokens=prompt, gen_tokens=gen, prompt_tokens_total=prompt, gen_tokens_total=gen,
        now_prompt_tokens=now_tokens[0], now_gen_tokens=now_tokens[1],
    )  # fmt: skip
    return Snapshot(
        wall=1000.0 + elapsed,
        elapsed=elapsed,
        rates=rates,
        requests_processing=processing,
        requests_deferred=0.0,
        slots=SlotsSummary(total=4, busy=0 if idle else 1, ctx_fill=0.0 if idle else 0.25),
        process=ProcessStats(cpu_percent=cpu, rss_bytes=100 << 20),
        host=HostStats(cpu_percent=cpu, ram_used_bytes=1 << 30, ram_total_bytes=8 << 30),
        energy_text="energy cpu unavailable: no RAPL",
    )


def test_block_has_four_sys_and_four_tok_lines_in_order():
    snaps = [snap(0, 0, 0, Rate(None, None), False), snap(1, 10, 50, Rate(10.0, 50.0), False, now_tokens=(10, 50))]
    lines = format_block(snaps)
    prefixes = [line.split(":")[0] for line in lines]
    assert prefixes == [
        "[sys] now",
        "[sys] 1m",
        "[sys] 15m",
        "[sys] all",
        "[tok] now",
        "[tok] 1m",
        "[tok] 15m",
        "[tok] all",
    ]
    for line in lines[4:]:
        assert TOK.match(line), line
    assert "p_tok/s 10.00 g_tok/s 50.00 p_tok 10 g_tok 50 (active)" in lines[4]
    assert "slots 1/4 ctx 25%" in lines[4]
    assert "energy cpu unavailable: no RAPL" in lines[0]


def test_idle_now_line_keeps_the_last_burst_rate_and_its_token_counts():
    snaps = [snap(0, 0, 0, Rate(0.0, 0.0), True), snap(1, 10, 80, Rate(20.0, 80.0), True, now_tokens=(10, 80))]
    now_line = format_block(snaps)[4]
    # Like paq_llamacpp_studio's, `now` never decays to zeros when idle: rates and counts of the last burst.
    assert "p_tok/s 20.00 g_tok/s 80.00 p_tok 10 g_tok 80 (idle, last burst)" in now_line


def test_a_failed_scrape_keeps_the_totals_and_says_there_is_no_data():
    good = snap(1, 10, 80, Rate(20.0, 80.0), False, now_tokens=(10, 80))
    gone = Snapshot(wall=1002, elapsed=2, rates=None, requests_processing=None, requests_deferred=None, slots=None,
                    process=None, host=None, error="server unreachable: connection refused")  # fmt: skip
    lines = format_block([snap(0, 0, 0, Rate(None, None), False), good, gone])
    assert lines[0] == "[warn] server unreachable: connection refused"
    now_line = next(x for x in lines if x.startswith("[tok] now:"))
    all_line = next(x for x in lines if x.startswith("[tok] all:"))
    assert "(no data)" in now_line
    assert "p_tok 10 g_tok 80" in all_line  # the totals survive the failed scrape


def test_a_slow_server_with_requests_processing_is_never_idle():
    # Less than a token per interval: the counters look quiet, but a request is processing.
    busy = snap(1, 10, 80, Rate(20.0, 80.0), True, processing=1.0)
    now_line = format_block([snap(0, 0, 0, Rate(0.0, 0.0), True), busy])[4]
    assert "(active)" in now_line and "idle" not in now_line
    assert "req 1 " in now_line


def test_energy_is_labelled_with_the_sources_it_adds_up():
    def with_energy(elapsed: float, cpu_j: float, gpu_j: float) -> Snapshot:
        s = snap(elapsed, 0, 0, Rate(0.0, 0.0), True)
        s.energy = EnergySummary(cpu_j, gpu_j, cpu_j + gpu_j, None, None, elapsed, None)
        return s

    line = format_block([with_energy(0, 0.0, 0.0), with_energy(2, 10.0, 30.0)])[0]
    assert "energy cpu+gpu 40.0 J (20.0 W)" in line
    cpu_only = snap(2, 0, 0, Rate(0.0, 0.0), True)
    cpu_only.energy = EnergySummary(8.0, None, 8.0, None, "no NVIDIA GPU found", 2, None)
    assert "energy cpu 8.0 J (4.0 W)" in format_block([cpu_only])[0]


def test_first_sample_is_marked_and_prints_zeros():
    now_line = format_block([snap(0, 0, 0, Rate(None, None), False)])[4]
    assert TOK.match(now_line) and "(first sample)" in now_line


def test_window_counts_tokens_since_the_sample_before_the_window():
    snaps = [snap(t, prompt=t * 10, gen=t * 100, now=Rate(1.0, 1.0), idle=False) for t in range(0, 200)]
    one_minute = window_stats(snaps, 60.0)
    assert one_minute is not None
    assert one_minute.gen_tokens == 6000 and one_minute.prompt_tokens == 600
    everything = window_stats(snaps, None)
    assert everything.gen_tokens == 199 * 100


def test_window_averages_cpu_and_reports_the_latest_rss():
    snaps = [snap(0, 0, 0, Rate(None, None), False, cpu=10.0), snap(1, 0, 0, Rate(0, 0), True, cpu=30.0)]
    stats = window_stats(snaps, None)
    assert stats is not None and stats.host_cpu == 20.0 and stats.server_rss_bytes == 100 << 20


def test_missing_rates_and_sensors_still_format():
    bare = Snapshot(wall=0, elapsed=0, rates=None, requests_processing=None, requests_deferred=None, slots=None,
                    process=None, host=None, error="server unreachable: connection refused")  # fmt: skip
    lines = format_block([bare])
    assert lines[0] == "[warn] server unreachable: connection refused"
    assert all(TOK.match(x) for x in lines if x.startswith("[tok]"))


def test_idle_before_any_work_is_just_idle():
    snaps = [snap(0, 0, 0, Rate(None, None), False), snap(1, 0, 0, Rate(0.0, 0.0), True)]
    assert " g_tok 0 (idle) req 0 " in format_block(snaps)[4]


def test_router_mode_adds_a_models_line():
    from tools.llama_bench.monitor.router import ModelState

    s = snap(1, 10, 80, Rate(20.0, 80.0), False, now_tokens=(10, 80))
    s.models = [ModelState("alpha", "loaded", requests_processing=1.0, slots_busy=1), ModelState("beta", "unloaded")]
    assert "[models] alpha loaded req 1 slots 1 · beta unloaded" in format_block([s])
