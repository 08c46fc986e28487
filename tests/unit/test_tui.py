"""The TUI dashboard: pure rendering from synthetic snapshots, its helpers, and the loop's exit reasons."""

from __future__ import annotations

import io
import math
from types import SimpleNamespace
from typing import List, Optional

import pytest
from rich.console import Console

from tools.llama_bench.monitor.metrics import Rate, RateSet
from tools.llama_bench.monitor.sampler import HostStats, ProcessStats, Snapshot
from tools.llama_bench.monitor.slots import SlotsSummary
from tools.llama_bench.power.reading import EnergySummary, GpuStats
from tools.llama_run import tui
from tools.llama_run.dashboard import BLOCKS, StaticInfo, bar, rate_history, render_dashboard, sparkline
from tools.llama_run.logtail import LogTail
from tools.llama_run.session import Session
from tools.llama_run.tui import KeyReader

INFO = StaticInfo(
    model="/models/qwen2.5-0.5b-instruct-q4_k_m.gguf",
    url="http://127.0.0.1:18555",
    pid=4242,
    started_at=1000.0,
    log_path="/tmp/llama-server-18555.log",
)


def rates(prompt: int, gen: int, now: Rate, idle: bool = False) -> RateSet:
    return RateSet(
        now=now, now_idle=idle, m1=Rate(50.25, 20.75), m15=Rate(10.5, 5.5), all=Rate(9.25, 4.75),
        prompt_tokens=prompt, gen_tokens=gen, prompt_tokens_total=prompt, gen_tokens_total=gen,
    )  # fmt: skip


def snap(
    elapsed: float,
    rate_set: Optional[RateSet],
    slots: Optional[SlotsSummary] = None,
    gpus: Optional[List[GpuStats]] = None,
    energy_text: Optional[str] = "energy cpu 12.5 J (4.2 W)",
    error: Optional[str] = None,
    full: bool = True,
) -> Snapshot:
    return Snapshot(
        wall=1000.0 + elapsed,
        elapsed=elapsed,
        rates=rate_set,
        requests_processing=2.0 if full else None,
        requests_deferred=1.0 if full else None,
        slots=slots,
        process=ProcessStats(cpu_percent=95.5, rss_bytes=512 << 20) if full else None,
        host=HostStats(cpu_percent=23.0, ram_used_bytes=3 << 30, ram_total_bytes=16 << 30) if full else None,
        gpus=gpus or [],
        energy_text=energy_text,
        error=error,
    )


def render(snapshots: List[Snapshot], log_lines: Optional[List[str]] = None, width: int = 120, **kw) -> str:
    console = Console(record=True, width=width, file=io.StringIO())
    console.print(render_dashboard(snapshots, log_lines or [], INFO, **kw))
    return console.export_text()


SLOTS = SlotsSummary(total=4, busy=1, n_ctx_per_slot=4096, ctx_used=1024, ctx_fill=0.25, slots_used=[1024, 0, 0, 0])


def busy_history() -> List[Snapshot]:
    return [
        snap(0, rates(0, 0, Rate(None, None))),
        snap(1, rates(100, 40, Rate(100.0, 40.0))),
        snap(2, rates(100, 100, Rate(0.0, 60.0)), slots=SLOTS),
    ]


def test_numbers_header_and_hints_appear():
    text = render(busy_history(), ["srv  update_slots: all slots are idle"], now=1135.0)
    for expected in ("qwen2.5-0.5b-instruct-q4_k_m.gguf", "http://127.0.0.1:18555", "pid 4242", "up 2m15s"):
        assert expected in text
    assert "q quit · Ctrl-C stop" in text
    assert "now (live)" in text
    for number in ("60.0", "50.2", "20.8", "10.5", "5.5", "9.2", "4.8"):  # now, 1m, 15m, all
        assert number in text
    assert "100" in text  # total prompt and generated tokens
    assert "2 processing" in text and "1 deferred" in text
    assert "1/4" in text and "25.0%" in text and "1,024/4,096" in text
    assert "23.0%" in text and "3.0 GiB / 16.0 GiB" in text
    assert "95.5%" in text and "512.0 MiB" in text
    assert "cpu 12.5 J (4.2 W)" in text
    assert "srv  update_slots: all slots are idle" in text
    assert "peak 60.0 tok/s" in text  # gen sparkline: 60 tokens in the last second


def test_idle_now_is_marked_as_last_burst():
    quiet = snap(3, rates(100, 100, Rate(50.0, 50.0), idle=True))
    quiet.requests_processing = 0.0
    text = render(busy_history() + [quiet])
    assert "idle · last burst" in text
    assert "50.0" in text


def test_quiet_counters_with_requests_processing_are_live_not_idle():
    # A slow server: no token in the last interval, but two requests are processing.
    slow = snap(3, rates(100, 100, Rate(50.0, 50.0), idle=True))
    text = render(busy_history() + [slow])
    assert "now (live)" in text
    assert "idle · last burst" not in text


def test_missing_data_renders_without_errors():
    # First sample after a failed scrape: no rates, slots, GPU, process or host figures, energy unknown.
    text = render(
        [snap(0, None, energy_text=None, error="server unreachable: connection refused", full=False)], width=120
    )
    assert "server unreachable: connection refused" in text
    assert "error" in text
    assert "slots: no data" in text
    assert "gpu" in text and "none" in text
    assert "unavailable" in text
    assert "(no output yet)" in text


def test_first_sample_rates_and_empty_history():
    text = render([snap(0, rates(0, 0, Rate(None, None)))])
    assert "first sample" in text
    assert "starting monitor" in render([])


def test_energy_unavailable_reason_and_gpu_lines():
    gpu = GpuStats(
        index=0, name="RTX 4090", util_percent=81.0, mem_used_bytes=3 << 30, mem_total_bytes=24 << 30, power_w=250.0
    )
    s = snap(1, rates(0, 0, Rate(0.0, 0.0), idle=True), gpus=[gpu], energy_text="energy cpu unavailable: no RAPL")
    text = render([s])
    assert "unavailable: no RAPL" in text
    assert "RTX 4090" in text and "81.0%" in text and "24.0 GiB" in text and "250 W" in text
    no_gpu = snap(1, None, energy_text="energy cpu unavailable: no RAPL")
    no_gpu.energy = EnergySummary(None, None, None, "no RAPL", "nvidia-ml-py not installed", 1.0, None)
    assert "nvidia-ml-py not installed" in render([no_gpu])


def test_zero_slots_and_unknown_fill():
    text = render([snap(1, None, slots=SlotsSummary())])
    assert "slots: no data" in text
    unknown = SlotsSummary(total=2, busy=2, ctx_fill=None, slots_used=[5, 7])
    assert "2/2" in render([snap(1, None, slots=unknown)])


@pytest.mark.parametrize("width", [60, 80, 100, 140, 200])
def test_any_width_renders(width):
    snaps = busy_history()
    long_line = "x" * 500
    text = render(snaps, [long_line, "\x1b[31merror: load failed\x1b[0m"], width=width)
    assert "error: load failed" in text and "\x1b" not in text
    assert max(len(line) for line in text.splitlines()) <= width


def test_log_fills_the_screen_height():
    lines = [f"log line {i}" for i in range(100)]
    console = Console(width=140, file=io.StringIO())
    tall = console.render_lines(render_dashboard(busy_history(), lines, INFO, height=60), console.options)
    assert len(tall) == 60  # the log panel takes exactly the rows left
    assert "log line 99" in "".join(seg.text for seg in tall[-2])
    assert "log line 91" not in render(busy_history(), lines)  # unknown height: the default few lines
    assert "log line 99" in render(busy_history(), lines)


def test_short_screen_drops_per_slot_rows_first():
    console = Console(width=140, file=io.StringIO())
    dashboard = render_dashboard(busy_history(), ["last log line"], INFO, height=24)
    text = "\n".join("".join(seg.text for seg in line) for line in console.render_lines(dashboard, console.options))
    assert "1/4" in text and "1,024/4,096" not in text
    assert "last log line" in text


def test_sparkline_scaling():
    assert sparkline([]) == ""
    assert sparkline([0, 0, 0]) == BLOCKS[0] * 3
    line = sparkline([0, 1, 4, 8])
    assert line[0] == BLOCKS[0] and line[-1] == BLOCKS[-1]
    assert line[1] != BLOCKS[0]  # tiny but positive stays visible
    assert list(line) == sorted(line)
    assert sparkline([None, 1.0, math.nan]) == " " + BLOCKS[-1] + " "
    assert sparkline([-5, 2]) == BLOCKS[0] + BLOCKS[-1]
    assert sparkline([4.0], top=8.0) == BLOCKS[4]
    assert sparkline([1.0] * 100, width=10) == BLOCKS[-1] * 10
    assert sparkline([1.0], width=0) == ""


def test_rate_history_from_snapshots():
    snaps = [
        snap(0, rates(0, 0, Rate(None, None))),
        snap(2, rates(10, 40, Rate(5.0, 20.0))),
        snap(3, None),  # a failed scrape leaves a gap
        snap(4, rates(10, 40, Rate(0.0, 0.0))),
        snap(5, rates(10, 50, Rate(0.0, 10.0))),
    ]
    assert rate_history(snaps, "gen") == [20.0, None, None, 10.0]
    assert rate_history(snaps, "prompt") == [5.0, None, None, 0.0]
    assert rate_history(snaps, "gen", n=2) == [None, 10.0]
    assert rate_history([], "gen") == []
    # A counter reset seen by the tracker never shows up as a negative rate.
    assert rate_history([snap(0, rates(0, 50, Rate(1, 1))), snap(1, rates(0, 10, Rate(1, 1)))], "gen") == [0.0]


def test_bar():
    assert bar(0.0, 10) == "░" * 10
    assert bar(1.0, 10) == "█" * 10
    assert bar(2.0, 10) == "█" * 10
    assert bar(None, 10) == " " * 10
    assert bar(0.5, 10) == "█" * 5 + "░" * 5
    for f in (0.01, 0.33, 0.99):
        assert len(bar(f, 7)) == 7


def test_log_tail_reads_incrementally(tmp_path):
    path = tmp_path / "server.log"
    path.write_bytes(b"one\ntwo\nthr")
    tail = LogTail(path, lines=3)
    assert tail.poll() == ["one", "two"]
    assert tail.offset == path.stat().st_size
    version = tail.version
    assert tail.poll() == ["one", "two"] and tail.version == version  # nothing new, nothing re-read
    with open(path, "ab") as fh:
        fh.write(b"ee\n\x1b[32mfour\x1b[0m\tx\nfive\r\nprogress 10%\rprogress 100%\n")
    assert tail.poll() == ["four    x", "five", "progress 100%"]
    assert tail.lines[0] == "four    x"
    path.write_bytes(b"restarted\n")  # truncated: start over
    assert tail.poll() == ["restarted"]


def test_log_tail_skips_huge_bursts_and_missing_files(tmp_path):
    path = tmp_path / "big.log"
    path.write_bytes(b"".join(b"line %d\n" % i for i in range(10000)))
    tail = LogTail(path, lines=2, max_read=1000)
    assert tail.poll() == ["line 9998", "line 9999"]
    assert LogTail(tmp_path / "missing.log").poll() == []
    assert LogTail(None).poll() == []


def test_key_reader_without_tty_is_inert():
    with KeyReader(io.StringIO()) as keys:
        assert keys.fd is None
        assert keys.read(0) == ""


class _StubMonitor:
    def __init__(self, *args, **kwargs) -> None:
        self.history = [snap(0, rates(0, 0, Rate(None, None))), snap(1, rates(10, 20, Rate(10.0, 20.0)))]
        self.stopped = False

    def start(self) -> None:
        pass

    def latest(self) -> Snapshot:
        return self.history[-1]

    def snapshots(self) -> List[Snapshot]:
        return list(self.history)

    def stop(self) -> None:
        self.stopped = True


def _session(tmp_path, exit_code: Optional[int], deadline: Optional[float]) -> Session:
    log = tmp_path / "server.log"
    log.write_text("main: model loaded\nsrv  operator(): crashed\n", encoding="utf-8")
    server = SimpleNamespace(
        cfg=SimpleNamespace(model="m.gguf", api_key=None),
        api_key=None,
        base_url="http://127.0.0.1:1",
        pid=123,
        started_at=1000.0,
        log_path=log,
        poll=lambda: exit_code,
    )
    return Session(server=server, interval=0.1, stats_interval=1.0, deadline=deadline)  # type: ignore[arg-type]


@pytest.fixture
def stub_monitor(monkeypatch):
    made: List[_StubMonitor] = []

    def factory(*args, **kwargs):
        made.append(_StubMonitor())
        return made[-1]

    monkeypatch.setattr(tui, "Monitor", factory)
    return made


def test_run_tui_reports_server_exit_with_log_tail(tmp_path, stub_monitor, capsys):
    assert tui.run_tui(_session(tmp_path, exit_code=1, deadline=None)) == "server-exit"
    assert stub_monitor[0].stopped
    out = capsys.readouterr().out
    assert "srv  operator(): crashed" in out
    assert "[tok] all:" in out


def test_run_tui_stops_at_duration(tmp_path, stub_monitor):
    assert tui.run_tui(_session(tmp_path, exit_code=None, deadline=0.0)) == "duration"
    assert stub_monitor[0].stopped


def test_the_proxy_panel_shows_requests_and_client_totals():
    from tools.llama_run.proxy.client import ProxySnapshot
    from tools.llama_run.proxy.records import ClientTotals, Endpoint, IdentitySource, Outcome, RequestRecord
    from tools.llama_run.requests_panel import requests_panel

    running = RequestRecord(1, "agent", IdentitySource.HEADER, Endpoint.CHAT, "POST", 1000.0, stream=True,
                            prompt_tokens=512, generated_tokens=40, ttft_ms=85.0)  # fmt: skip
    done = RequestRecord(2, "editor", IdentitySource.KEY, Endpoint.COMPLETION, "POST", 990.0, status=200,
                         outcome=Outcome.OK, prompt_tokens=31, cached_tokens=16, generated_tokens=12,
                         ttft_ms=18.6, gen_tps=200.0, seq=1)  # fmt: skip
    snap = ProxySnapshot(now=1001.0, started_at=900.0, upstream="http://127.0.0.1:1", streamed_chunks=52,
                         in_flight=[running], recent=[done],
                         clients=[ClientTotals("editor", requests=1, prompt_tokens=31, cached_tokens=16,
                                               generated_tokens=12)])  # fmt: skip
    text = render(busy_history(), requests=requests_panel(snap, 121.4))
    assert "requests (token-meter proxy)" in text and "1 in flight · streaming 121.4 tok/s" in text
    assert "agent" in text and "running" in text and "512" in text
    assert "editor" in text and "ok 200" in text and "18.6" in text and "200.0" in text
    assert "1 req · in 31 (cached 16) · out 12" in text
    assert "token-meter proxy not answering" in render(busy_history(), requests=requests_panel(None, None))
