"""RAPL and NVML energy readers on fake sysfs trees and a fake pynvml module."""

from __future__ import annotations

import builtins
import os
import sys
import types
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from tools.llama_bench.power import rapl
from tools.llama_bench.power.amd import AMDSMI_MISSING_REASON
from tools.llama_bench.power.meter import EnergyMeter, describe, joules_to_wh, tokens_per_joule
from tools.llama_bench.power.nvml import NVML_MISSING_REASON, NvmlReader
from tools.llama_bench.power.rapl import NO_RAPL_REASON, RaplReader
from tools.llama_bench.power.reading import EnergySummary

MAX_RANGE = 262143328850


def add_domain(root: Path, dirname: str, name: str, energy_uj: int, max_range: Optional[int] = MAX_RANGE) -> Path:
    d = root / dirname
    d.mkdir(parents=True)
    (d / "name").write_text(name + "\n", encoding="utf-8")
    (d / "energy_uj").write_text(f"{energy_uj}\n", encoding="utf-8")
    if max_range is not None:
        (d / "max_energy_range_uj").write_text(f"{max_range}\n", encoding="utf-8")
    return d


def set_energy(domain: Path, energy_uj: int) -> None:
    (domain / "energy_uj").write_text(f"{energy_uj}\n", encoding="utf-8")


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# --- RAPL ---------------------------------------------------------------------------------------


def test_missing_powercap_tree_is_unavailable_with_reason(tmp_path):
    reader = RaplReader(str(tmp_path / "nope"))
    assert reader.available is False
    assert reader.reason == NO_RAPL_REASON
    reading = reader.read_joules()
    assert reading.joules is None and reading.available is False and reading.reason == NO_RAPL_REASON


def test_powercap_tree_without_rapl_domains_is_unavailable(tmp_path):
    (tmp_path / "dtpm").mkdir()
    reader = RaplReader(str(tmp_path))
    assert reader.available is False and reader.reason == NO_RAPL_REASON


def test_single_package_counts_joules_since_creation(tmp_path):
    pkg = add_domain(tmp_path, "intel-rapl:0", "package-0", 1_000_000)
    reader = RaplReader(str(tmp_path))
    assert reader.available is True and reader.reason is None
    assert reader.domain_names == ["package-0"]
    set_energy(pkg, 3_500_000)
    reading = reader.read_joules()
    assert reading.available is True and reading.source == "rapl"
    assert reading.joules == pytest.approx(2.5)
    set_energy(pkg, 4_000_000)
    assert reader.read_joules().joules == pytest.approx(3.0)


def test_two_packages_are_summed(tmp_path):
    pkg0 = add_domain(tmp_path, "intel-rapl:0", "package-0", 0)
    pkg1 = add_domain(tmp_path, "intel-rapl:1", "package-1", 5_000_000)
    reader = RaplReader(str(tmp_path))
    assert reader.domain_names == ["package-0", "package-1"]
    set_energy(pkg0, 2_000_000)
    set_energy(pkg1, 8_000_000)
    assert reader.read_joules().joules == pytest.approx(5.0)


def test_subdomains_and_mmio_mirror_are_not_double_counted(tmp_path):
    pkg = add_domain(tmp_path, "intel-rapl:0", "package-0", 0)
    core = add_domain(tmp_path, "intel-rapl:0:0", "core", 0)
    uncore = add_domain(tmp_path, "intel-rapl:0:1", "uncore", 0)
    mmio = add_domain(tmp_path, "intel-rapl-mmio:0", "package-0", 0)
    reader = RaplReader(str(tmp_path))
    assert reader.domain_names == ["package-0"]
    for d in (pkg, core, uncore, mmio):
        set_energy(d, 1_000_000)
    assert reader.read_joules().joules == pytest.approx(1.0)


def test_psys_platform_domain_is_skipped_when_packages_exist(tmp_path):
    pkg = add_domain(tmp_path, "intel-rapl:0", "package-0", 0)
    psys = add_domain(tmp_path, "intel-rapl:1", "psys", 0)
    reader = RaplReader(str(tmp_path))
    assert reader.domain_names == ["package-0"]
    set_energy(pkg, 1_000_000)
    set_energy(psys, 9_000_000)
    assert reader.read_joules().joules == pytest.approx(1.0)


def test_symlinked_sysfs_layout_is_followed(tmp_path):
    devices = tmp_path / "devices" / "virtual" / "powercap" / "intel-rapl"
    pkg = add_domain(devices, "intel-rapl:0", "package-0", 0)
    cls = tmp_path / "class" / "powercap"
    cls.mkdir(parents=True)
    os.symlink(pkg, cls / "intel-rapl:0")
    reader = RaplReader(str(cls))
    set_energy(pkg, 2_000_000)
    assert reader.read_joules().joules == pytest.approx(2.0)


def test_wraparound_adds_the_counter_range(tmp_path):
    pkg = add_domain(tmp_path, "intel-rapl:0", "package-0", 900_000, max_range=1_000_000)
    reader = RaplReader(str(tmp_path))
    set_energy(pkg, 100_000)  # wrapped: 100_000 to the top, 100_000 after
    assert reader.read_joules().joules == pytest.approx(0.2)
    set_energy(pkg, 600_000)
    assert reader.read_joules().joules == pytest.approx(0.7)


def test_reset_starts_counting_from_now(tmp_path):
    pkg = add_domain(tmp_path, "intel-rapl:0", "package-0", 0)
    reader = RaplReader(str(tmp_path))
    set_energy(pkg, 5_000_000)
    reader.reset()
    set_energy(pkg, 6_000_000)
    assert reader.read_joules().joules == pytest.approx(1.0)


def test_powercap_root_can_be_overridden_by_environment(tmp_path, monkeypatch):
    add_domain(tmp_path, "intel-rapl:0", "package-0", 0)
    monkeypatch.setenv("LLAMA_STUDIO_POWERCAP_ROOT", str(tmp_path))
    reader = RaplReader()
    assert reader.root == str(tmp_path)
    assert reader.available is True


def deny_energy_reads(monkeypatch):
    """Make energy_uj unreadable the way a non-root user sees it (root ignores file modes)."""

    def fake_open(path, *args, **kwargs):
        if str(path).endswith("energy_uj"):
            raise PermissionError(13, "Permission denied", str(path))
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(rapl, "open", fake_open, raising=False)


def test_permission_error_explains_platypus_and_how_to_grant_access(tmp_path, monkeypatch):
    add_domain(tmp_path, "intel-rapl:0", "package-0", 0)
    deny_energy_reads(monkeypatch)
    reader = RaplReader(str(tmp_path))
    assert reader.available is False
    assert reader.reason is not None
    assert "CVE-2020-8694" in reader.reason
    assert "sudo chmod o+r /sys/class/powercap/intel-rapl:*/energy_uj" in reader.reason
    assert "udev" in reader.reason
    assert "\n" not in reader.reason
    assert reader.read_joules().joules is None


def test_permission_lost_after_start_makes_reader_unavailable(tmp_path, monkeypatch):
    add_domain(tmp_path, "intel-rapl:0", "package-0", 0)
    reader = RaplReader(str(tmp_path))
    assert reader.available is True
    deny_energy_reads(monkeypatch)
    reading = reader.read_joules()
    assert reading.available is False and "CVE-2020-8694" in (reading.reason or "")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads files regardless of mode")
def test_unreadable_energy_file_reports_permission_reason(tmp_path):
    pkg = add_domain(tmp_path, "intel-rapl:0", "package-0", 0)
    (pkg / "energy_uj").chmod(0o000)
    try:
        reader = RaplReader(str(tmp_path))
        assert reader.available is False and "CVE-2020-8694" in (reader.reason or "")
    finally:
        (pkg / "energy_uj").chmod(0o644)


# --- NVML ---------------------------------------------------------------------------------------


class FakeNVMLError(Exception):
    pass


def fake_pynvml(
    energy_mj: Optional[List[Optional[int]]] = None,
    power_mw: Optional[List[Optional[int]]] = None,
    init_error: Optional[str] = None,
) -> types.ModuleType:
    """A pynvml stand-in; set mod.energy_mj / mod.power_mw entries to change what the GPUs report."""
    mod = types.ModuleType("pynvml")
    state: Dict[str, object] = {"init": 0, "shutdown": 0}
    mod.energy_mj = list(energy_mj or [None])  # type: ignore[attr-defined]
    mod.power_mw = list(power_mw or [None] * len(mod.energy_mj))  # type: ignore[attr-defined]
    mod.state = state  # type: ignore[attr-defined]

    def nvmlInit():
        state["init"] = int(state["init"]) + 1  # type: ignore[call-overload]
        if init_error:
            raise FakeNVMLError(init_error)

    def nvmlShutdown():
        state["shutdown"] = int(state["shutdown"]) + 1  # type: ignore[call-overload]

    def get_energy(h):
        value = mod.energy_mj[h]  # type: ignore[attr-defined]
        if value is None:
            raise FakeNVMLError("Not Supported")
        return value

    def get_power(h):
        value = mod.power_mw[h]  # type: ignore[attr-defined]
        if value is None:
            raise FakeNVMLError("Not Supported")
        return value

    mod.NVMLError = FakeNVMLError  # type: ignore[attr-defined]
    mod.nvmlInit = nvmlInit  # type: ignore[attr-defined]
    mod.nvmlShutdown = nvmlShutdown  # type: ignore[attr-defined]
    mod.nvmlDeviceGetCount = lambda: len(mod.energy_mj)  # type: ignore[attr-defined]
    mod.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    mod.nvmlDeviceGetName = lambda h: b"NVIDIA Fake 4090"  # type: ignore[attr-defined]
    mod.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=87, memory=40)  # type: ignore[attr-defined]
    mod.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(  # type: ignore[attr-defined]
        used=2 * 1024**3, total=24 * 1024**3, free=22 * 1024**3
    )
    mod.nvmlDeviceGetPowerUsage = get_power  # type: ignore[attr-defined]
    mod.nvmlDeviceGetTotalEnergyConsumption = get_energy  # type: ignore[attr-defined]
    return mod


def test_nvml_without_nvidia_ml_py_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` fail
    reader = NvmlReader()
    assert reader.available is False
    assert reader.reason == NVML_MISSING_REASON
    assert reader.gpus() == []
    reading = reader.read_joules()
    assert reading.joules is None and reading.source == "nvml" and reading.reason == NVML_MISSING_REASON


def test_nvml_init_failure_reports_missing_driver(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(init_error="Driver Not Loaded"))
    reader = NvmlReader()
    assert reader.available is False
    assert reader.reason == "no NVIDIA driver/GPU: Driver Not Loaded"


def test_nvml_gpu_stats(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(energy_mj=[1000], power_mw=[150_000]))
    reader = NvmlReader()
    [gpu] = reader.gpus()
    assert gpu.index == 0
    assert gpu.name == "NVIDIA Fake 4090"
    assert gpu.util_percent == 87.0
    assert gpu.mem_used_bytes == 2 * 1024**3 and gpu.mem_total_bytes == 24 * 1024**3
    assert gpu.power_w == pytest.approx(150.0)


def test_nvml_energy_uses_total_energy_counter_when_supported(monkeypatch):
    mod = fake_pynvml(energy_mj=[10_000, 0])
    monkeypatch.setitem(sys.modules, "pynvml", mod)
    reader = NvmlReader()
    mod.energy_mj[:] = [25_000, 5_000]  # type: ignore[attr-defined]
    reading = reader.read_joules()
    assert reading.available is True
    assert reading.joules == pytest.approx(20.0)


def test_nvml_energy_integrates_power_when_counter_unsupported(monkeypatch):
    clock = FakeClock()
    mod = fake_pynvml(energy_mj=[None], power_mw=[100_000])
    monkeypatch.setitem(sys.modules, "pynvml", mod)
    reader = NvmlReader(clock=clock)
    clock.t += 2.0
    mod.power_mw[0] = 200_000  # type: ignore[attr-defined]
    assert reader.read_joules().joules == pytest.approx(300.0)  # (100 W + 200 W) / 2 * 2 s
    clock.t += 1.0
    assert reader.read_joules().joules == pytest.approx(500.0)


def test_nvml_close_shuts_down_once_and_is_idempotent(monkeypatch):
    mod = fake_pynvml(energy_mj=[0])
    monkeypatch.setitem(sys.modules, "pynvml", mod)
    reader = NvmlReader()
    reader.close()
    reader.close()
    assert mod.state["shutdown"] == 1  # type: ignore[attr-defined]
    assert reader.available is False


# --- EnergyMeter and helpers ---------------------------------------------------------------------


def test_energy_meter_reports_cpu_joules_and_average_watts(tmp_path):
    pkg = add_domain(tmp_path, "intel-rapl:0", "package-0", 0)
    clock = FakeClock()
    meter = EnergyMeter(gpu=False, rapl=RaplReader(str(tmp_path)), clock=clock)
    set_energy(pkg, 7_000_000)
    meter.start()  # energy before start() is not counted
    set_energy(pkg, 19_300_000)
    clock.t += 3.0
    summary = meter.read()
    assert summary.cpu_joules == pytest.approx(12.3)
    assert summary.cpu_watts == pytest.approx(4.1)
    assert summary.elapsed_s == pytest.approx(3.0)
    assert summary.total_joules == pytest.approx(12.3)
    assert summary.gpu_joules is None and summary.gpu_reason == "disabled"
    assert describe(summary) == "energy cpu 12.3 J (4.1 W)"
    assert summary.to_dict()["cpu_j"] == pytest.approx(12.3)


def test_energy_meter_adds_gpu_energy_to_total(tmp_path, monkeypatch):
    pkg = add_domain(tmp_path, "intel-rapl:0", "package-0", 0)
    mod = fake_pynvml(energy_mj=[0])
    monkeypatch.setitem(sys.modules, "pynvml", mod)
    monkeypatch.setitem(sys.modules, "amdsmi", None)
    clock = FakeClock()
    meter = EnergyMeter(rapl=RaplReader(str(tmp_path)), clock=clock)
    set_energy(pkg, 10_000_000)
    mod.energy_mj[0] = 40_000  # type: ignore[attr-defined]
    clock.t += 2.0
    summary = meter.read()
    assert summary.cpu_joules == pytest.approx(10.0)
    assert summary.gpu_joules == pytest.approx(40.0)
    assert summary.total_joules == pytest.approx(50.0)
    assert describe(summary) == "energy cpu 10.0 J (5.0 W), gpu 40.0 J (20.0 W)"
    meter.close()


def test_energy_meter_without_any_source_has_reasons_and_no_total(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setitem(sys.modules, "amdsmi", None)
    meter = EnergyMeter(rapl=RaplReader(str(tmp_path / "missing")))
    summary = meter.read()
    assert summary.cpu_joules is None and summary.gpu_joules is None and summary.total_joules is None
    assert summary.cpu_reason == NO_RAPL_REASON
    assert summary.gpu_reason == f"{NVML_MISSING_REASON}; {AMDSMI_MISSING_REASON}"  # both vendors say why
    assert summary.cpu_watts is None
    assert describe(summary) == f"energy cpu unavailable: {NO_RAPL_REASON}"


def test_describe_is_a_single_line():
    summary = EnergySummary(None, None, None, "line one\nline two", None, 1.0, None)
    assert describe(summary) == "energy cpu unavailable: line one line two"


def test_joules_to_wh_and_tokens_per_joule_are_none_safe():
    assert joules_to_wh(7200.0) == pytest.approx(2.0)
    assert joules_to_wh(None) is None
    assert tokens_per_joule(500, 250.0) == pytest.approx(2.0)
    assert tokens_per_joule(None, 10.0) is None
    assert tokens_per_joule(10, None) is None
    assert tokens_per_joule(10, 0.0) is None


def test_monitor_opens_one_nvml_handle_for_stats_and_energy_and_closes_it(monkeypatch):
    from tools.llama_bench.monitor.sampler import Monitor

    mod = fake_pynvml(energy_mj=[1000], power_mw=[100_000])
    monkeypatch.setitem(sys.modules, "pynvml", mod)
    monkeypatch.setitem(sys.modules, "amdsmi", None)
    monitor = Monitor("http://127.0.0.1:9", interval=1.0, energy=True)  # nothing listens: sensors still read
    snap = monitor.sample()
    assert [g.name for g in snap.gpus] == ["NVIDIA Fake 4090"]
    assert snap.energy is not None and snap.energy.gpu_joules is not None
    monitor.stop()
    assert mod.state == {"init": 1, "shutdown": 1}  # type: ignore[attr-defined]
