"""AMD GPUs through a fake amdsmi module, and NVIDIA + AMD behind one GPU reader."""

from __future__ import annotations

import sys
import types
from typing import Any, Dict, List, Optional

import pytest

from tests.unit.test_power import FakeClock, fake_pynvml
from tools.llama_bench.power.amd import AMDSMI_MISSING_REASON, AmdReader
from tools.llama_bench.power.gpus import GpuReaders
from tools.llama_bench.power.meter import EnergyMeter
from tools.llama_bench.power.nvml import NVML_MISSING_REASON, NvmlReader
from tools.llama_bench.power.rapl import RaplReader
from tools.llama_bench.power.reading import EnergyReading, GpuStats

GIB = 1024**3


class FakeAmdSmiError(Exception):
    pass


def fake_amdsmi(
    energy: Optional[List[Optional[int]]] = None,
    power_w: Optional[List[Any]] = None,
    resolution: float = 15.3,
    init_error: Optional[str] = None,
    old_energy_key: bool = False,
    memory_api: bool = True,
) -> types.ModuleType:
    """An amdsmi stand-in; set mod.energy / mod.power_w entries to change what the GPUs report."""
    mod = types.ModuleType("amdsmi")
    state: Dict[str, Any] = {"init": [], "shutdown": 0}
    mod.energy = list(energy if energy is not None else [None])  # type: ignore[attr-defined]
    mod.power_w = list(power_w if power_w is not None else [None] * len(mod.energy))  # type: ignore[attr-defined]
    mod.state = state  # type: ignore[attr-defined]
    mod.AmdSmiLibraryException = FakeAmdSmiError  # type: ignore[attr-defined]
    mod.AmdSmiInitFlags = types.SimpleNamespace(INIT_AMD_GPUS=2)  # type: ignore[attr-defined]
    mod.AmdSmiMemoryType = types.SimpleNamespace(VRAM=0, VIS_VRAM=1, GTT=2)  # type: ignore[attr-defined]

    def amdsmi_init(flag=None):
        state["init"].append(flag)
        if init_error:
            raise FakeAmdSmiError(init_error)

    def amdsmi_shut_down():
        state["shutdown"] += 1

    def get_energy(h):
        ticks = mod.energy[h]  # type: ignore[attr-defined]
        if ticks is None:
            raise FakeAmdSmiError("AMDSMI_STATUS_NOT_SUPPORTED")
        key = "power" if old_energy_key else "energy_accumulator"
        return {key: ticks, "counter_resolution": resolution, "timestamp": 0}

    def get_power(h):
        watts = mod.power_w[h]  # type: ignore[attr-defined]
        if watts is None:
            raise FakeAmdSmiError("AMDSMI_STATUS_NOT_SUPPORTED")
        return {"current_socket_power": watts, "average_socket_power": "N/A", "gfx_voltage": "N/A"}

    def memory_total(h, mem_type):
        assert mem_type == mod.AmdSmiMemoryType.VRAM  # type: ignore[attr-defined]
        return 192 * GIB

    def memory_usage(h, mem_type):
        return 10 * GIB * (h + 1)

    mod.amdsmi_init = amdsmi_init  # type: ignore[attr-defined]
    mod.amdsmi_shut_down = amdsmi_shut_down  # type: ignore[attr-defined]
    mod.amdsmi_get_processor_handles = lambda: list(range(len(mod.energy)))  # type: ignore[attr-defined]
    asic = {"market_name": "AMD Instinct MI300X", "vendor_id": 4098}
    mod.amdsmi_get_gpu_asic_info = lambda h: asic  # type: ignore[attr-defined]
    activity = {"gfx_activity": 42, "umc_activity": 7, "mm_activity": "N/A"}
    mod.amdsmi_get_gpu_activity = lambda h: activity  # type: ignore[attr-defined]
    vram_mib = {"vram_total": 16 * 1024, "vram_used": 3 * 1024}
    mod.amdsmi_get_gpu_vram_usage = lambda h: vram_mib  # type: ignore[attr-defined]
    if memory_api:
        mod.amdsmi_get_gpu_memory_total = memory_total  # type: ignore[attr-defined]
        mod.amdsmi_get_gpu_memory_usage = memory_usage  # type: ignore[attr-defined]
    mod.amdsmi_get_power_info = get_power  # type: ignore[attr-defined]
    mod.amdsmi_get_energy_count = get_energy  # type: ignore[attr-defined]
    return mod


# --- AmdReader ---------------------------------------------------------------------------------------


def test_without_amdsmi_the_reason_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "amdsmi", None)  # makes `import amdsmi` fail
    reader = AmdReader()
    assert reader.available is False and reader.reason == AMDSMI_MISSING_REASON
    assert reader.gpus() == []
    reading = reader.read_joules()
    assert reading == EnergyReading(None, "amdsmi", False, AMDSMI_MISSING_REASON)


def test_init_failure_reports_the_missing_driver(monkeypatch):
    monkeypatch.setitem(sys.modules, "amdsmi", fake_amdsmi(init_error="AMDSMI_STATUS_INIT_ERROR"))
    reader = AmdReader()
    assert reader.available is False and reader.reason == "no AMD driver/GPU: AMDSMI_STATUS_INIT_ERROR"


def test_no_gpu_handles_means_no_amd_gpu(monkeypatch):
    mod = fake_amdsmi(energy=[])
    monkeypatch.setitem(sys.modules, "amdsmi", mod)
    reader = AmdReader()
    assert reader.available is False and reader.reason == "no AMD GPU found"
    assert mod.state["shutdown"] == 1  # type: ignore[attr-defined]


def test_gpu_stats_utilisation_vram_and_power(monkeypatch):
    mod = fake_amdsmi(energy=[0, 0], power_w=[310, 95.5])
    monkeypatch.setitem(sys.modules, "amdsmi", mod)
    reader = AmdReader()
    assert mod.state["init"] == [2]  # type: ignore[attr-defined]  # GPUs only
    assert reader.gpus() == [
        GpuStats(0, "AMD Instinct MI300X", 42.0, 10 * GIB, 192 * GIB, 310.0),
        GpuStats(1, "AMD Instinct MI300X", 42.0, 20 * GIB, 192 * GIB, 95.5),
    ]


def test_vram_falls_back_to_the_older_usage_call_in_mib(monkeypatch):
    monkeypatch.setitem(sys.modules, "amdsmi", fake_amdsmi(energy=[0], power_w=[100], memory_api=False))
    [gpu] = AmdReader().gpus()
    assert gpu.mem_used_bytes == 3 * GIB and gpu.mem_total_bytes == 16 * GIB


def test_not_available_values_are_none(monkeypatch):
    mod = fake_amdsmi(energy=[0], power_w=["N/A"])
    mod.amdsmi_get_gpu_activity = lambda h: {"gfx_activity": "N/A"}  # type: ignore[attr-defined]
    mod.amdsmi_get_gpu_asic_info = lambda h: {"market_name": "N/A"}  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "amdsmi", mod)
    [gpu] = AmdReader().gpus()
    assert (gpu.name, gpu.util_percent, gpu.power_w) == ("AMD GPU 0", None, None)


def test_energy_comes_from_the_accumulator_times_its_resolution(monkeypatch):
    mod = fake_amdsmi(energy=[1_000_000, 0], resolution=15.3)  # microjoules per tick
    monkeypatch.setitem(sys.modules, "amdsmi", mod)
    reader = AmdReader()
    mod.energy[:] = [2_000_000, 500_000]  # type: ignore[attr-defined]
    reading = reader.read_joules()
    assert reading.available is True and reading.source == "amdsmi"
    assert reading.joules == pytest.approx((1_000_000 + 500_000) * 15.3 / 1e6)


def test_energy_key_of_older_amdsmi_versions(monkeypatch):
    mod = fake_amdsmi(energy=[0], resolution=1.0, old_energy_key=True)
    monkeypatch.setitem(sys.modules, "amdsmi", mod)
    reader = AmdReader()
    mod.energy[0] = 4_000_000  # type: ignore[attr-defined]
    assert reader.read_joules().joules == pytest.approx(4.0)


def test_a_counter_that_goes_backwards_skips_that_interval(monkeypatch):
    mod = fake_amdsmi(energy=[5_000_000], resolution=1.0)
    monkeypatch.setitem(sys.modules, "amdsmi", mod)
    reader = AmdReader()
    mod.energy[0] = 7_000_000  # type: ignore[attr-defined]
    assert reader.read_joules().joules == pytest.approx(2.0)
    mod.energy[0] = 1_000_000  # type: ignore[attr-defined]  # driver reload
    assert reader.read_joules().joules == pytest.approx(2.0)
    mod.energy[0] = 4_000_000  # type: ignore[attr-defined]
    assert reader.read_joules().joules == pytest.approx(5.0)


def test_power_is_integrated_when_there_is_no_energy_counter(monkeypatch):
    clock = FakeClock()
    mod = fake_amdsmi(energy=[None], power_w=[100])
    monkeypatch.setitem(sys.modules, "amdsmi", mod)
    reader = AmdReader(clock=clock)
    clock.t += 2.0
    mod.power_w[0] = 200  # type: ignore[attr-defined]
    assert reader.read_joules().joules == pytest.approx(300.0)  # (100 W + 200 W) / 2 * 2 s


def test_neither_energy_nor_power_is_unavailable(monkeypatch):
    monkeypatch.setitem(sys.modules, "amdsmi", fake_amdsmi(energy=[None], power_w=[None]))
    reading = AmdReader().read_joules()
    assert reading.available is False and reading.reason == "AMD GPU reports neither energy nor power"


def test_reset_counts_from_now(monkeypatch):
    mod = fake_amdsmi(energy=[0], resolution=1.0)
    monkeypatch.setitem(sys.modules, "amdsmi", mod)
    reader = AmdReader()
    mod.energy[0] = 9_000_000  # type: ignore[attr-defined]
    reader.reset()
    mod.energy[0] = 10_000_000  # type: ignore[attr-defined]
    assert reader.read_joules().joules == pytest.approx(1.0)


def test_close_shuts_down_once(monkeypatch):
    mod = fake_amdsmi(energy=[0])
    monkeypatch.setitem(sys.modules, "amdsmi", mod)
    reader = AmdReader()
    reader.close()
    reader.close()
    assert mod.state["shutdown"] == 1  # type: ignore[attr-defined]
    assert reader.available is False and reader.gpus() == []


# --- NVIDIA + AMD ------------------------------------------------------------------------------------


def both(monkeypatch, nvml_energy_mj=(0,), amd_energy=(0, 0)):
    nv = fake_pynvml(energy_mj=list(nvml_energy_mj), power_mw=[150_000] * len(nvml_energy_mj))
    amd = fake_amdsmi(energy=list(amd_energy), power_w=[300] * len(amd_energy), resolution=1.0)
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    monkeypatch.setitem(sys.modules, "amdsmi", amd)
    return nv, amd


def test_gpus_of_both_vendors_are_numbered_one_after_the_other(monkeypatch):
    both(monkeypatch)
    readers = GpuReaders()
    assert readers.available is True and readers.reason is None
    gpus = readers.gpus()
    assert [(g.index, g.name) for g in gpus] == [
        (0, "NVIDIA Fake 4090"),
        (1, "AMD Instinct MI300X"),
        (2, "AMD Instinct MI300X"),
    ]


def test_energy_is_summed_over_the_vendors(monkeypatch):
    nv, amd = both(monkeypatch)
    readers = GpuReaders()
    nv.energy_mj[0] = 40_000  # type: ignore[attr-defined]  # 40 J
    amd.energy[:] = [5_000_000, 1_000_000]  # type: ignore[attr-defined]  # 6 J
    reading = readers.read_joules()
    assert reading.available is True and reading.joules == pytest.approx(46.0)
    assert reading.source == "nvml+amdsmi"


def test_one_vendor_missing_is_not_an_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    amd = fake_amdsmi(energy=[0], resolution=1.0)
    monkeypatch.setitem(sys.modules, "amdsmi", amd)
    readers = GpuReaders()
    assert readers.available is True and readers.reason is None
    assert [g.index for g in readers.gpus()] == [0]
    amd.energy[0] = 3_000_000  # type: ignore[attr-defined]
    assert readers.read_joules().joules == pytest.approx(3.0)


def test_no_vendor_joins_the_reasons(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setitem(sys.modules, "amdsmi", None)
    readers = GpuReaders()
    assert readers.available is False
    assert readers.reason == f"{NVML_MISSING_REASON}; {AMDSMI_MISSING_REASON}"
    assert readers.gpus() == []
    reading = readers.read_joules()
    assert reading.available is False and reading.joules is None and reading.reason == readers.reason


def test_readers_can_be_given_and_close_closes_all(monkeypatch):
    nv, amd = both(monkeypatch)
    readers = GpuReaders([NvmlReader(), AmdReader()])
    readers.close()
    assert nv.state["shutdown"] == 1 and amd.state["shutdown"] == 1  # type: ignore[attr-defined]
    assert readers.available is False


def test_energy_meter_reads_every_vendor_by_default(tmp_path, monkeypatch):
    nv, amd = both(monkeypatch)
    clock = FakeClock()
    meter = EnergyMeter(rapl=RaplReader(str(tmp_path / "no-rapl")), clock=clock)
    assert isinstance(meter.nvml, GpuReaders)
    nv.energy_mj[0] = 10_000  # type: ignore[attr-defined]
    amd.energy[:] = [20_000_000, 0]  # type: ignore[attr-defined]
    clock.t += 2.0
    summary = meter.read()
    assert summary.gpu_joules == pytest.approx(30.0) and summary.gpu_watts == pytest.approx(15.0)
    assert len(meter.gpus()) == 3
    meter.close()
    assert nv.state["shutdown"] == 1 and amd.state["shutdown"] == 1  # type: ignore[attr-defined]


def test_energy_meter_still_takes_one_reader_as_nvml(monkeypatch):
    nv, _ = both(monkeypatch)
    reader = NvmlReader()
    meter = EnergyMeter(cpu=False, nvml=reader)
    assert meter.nvml is reader
    nv.energy_mj[0] = 5_000  # type: ignore[attr-defined]
    assert meter.read().gpu_joules == pytest.approx(5.0)
    meter.close()


def test_energy_meter_without_gpu_libraries_gives_both_reasons(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setitem(sys.modules, "amdsmi", None)
    summary = EnergyMeter(rapl=RaplReader(str(tmp_path / "no-rapl"))).read()
    assert summary.gpu_joules is None
    assert summary.gpu_reason == f"{NVML_MISSING_REASON}; {AMDSMI_MISSING_REASON}"
