"""CPU (RAPL) plus GPU energy over an interval, and how energy is reported (Wh, tokens per joule)."""

from __future__ import annotations

import time
from typing import Callable, List, Optional

from .gpus import GpuReaders
from .rapl import RaplReader
from .reading import EnergyReading, EnergySummary, GpuReader, GpuStats, one_line


class EnergyMeter:
    """CPU (RAPL) plus GPU (NVML and amdsmi) energy over an interval: start(), then read() as often as wanted.

    The GPU reader also serves GPU stats (`gpus()`), so one NVML/amdsmi handle is opened per meter.

    Readers are created here unless given (``nvml=`` takes any GpuReader; the default is
    `GpuReaders`, NVIDIA and AMD together); ``gpu=False`` skips the GPU libraries entirely. Baselines
    are taken at creation, so read() works without start(). Call close() when done (releases them).
    """

    def __init__(
        self,
        cpu: bool = True,
        gpu: bool = True,
        rapl: Optional[RaplReader] = None,
        nvml: Optional[GpuReader] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self.rapl = rapl if rapl is not None else (RaplReader() if cpu else None)
        self.nvml: Optional[GpuReader] = nvml if nvml is not None else (GpuReaders(clock=clock) if gpu else None)
        self._t0 = clock()

    def start(self) -> None:
        """Begin a new interval: later read() calls count from now."""
        if self.rapl is not None:
            self.rapl.reset()
        if self.nvml is not None:
            self.nvml.reset()
        self._t0 = self._clock()

    def read(self) -> EnergySummary:
        """Energy and average power since start()."""
        elapsed = max(0.0, self._clock() - self._t0)
        cpu = self.rapl.read_joules() if self.rapl is not None else EnergyReading(None, "rapl", False, "disabled")
        gpu = self.nvml.read_joules() if self.nvml is not None else EnergyReading(None, "gpu", False, "disabled")
        parts = [r.joules for r in (cpu, gpu) if r.available and r.joules is not None]
        return EnergySummary(
            cpu_joules=cpu.joules if cpu.available else None,
            gpu_joules=gpu.joules if gpu.available else None,
            total_joules=sum(parts) if parts else None,
            cpu_reason=None if cpu.available else cpu.reason,
            gpu_reason=None if gpu.available else gpu.reason,
            elapsed_s=elapsed,
            cpu_watts=_watts(cpu.joules if cpu.available else None, elapsed),
            gpu_watts=_watts(gpu.joules if gpu.available else None, elapsed),
        )

    def gpus(self) -> List[GpuStats]:
        """Utilisation, memory and power of every GPU, from the meter's own reader ([] without one)."""
        return self.nvml.gpus() if self.nvml is not None else []

    def close(self) -> None:
        if self.nvml is not None:
            self.nvml.close()


def _watts(joules: Optional[float], seconds: float) -> Optional[float]:
    return None if joules is None or seconds <= 0 else joules / seconds


def joules_to_wh(joules: Optional[float]) -> Optional[float]:
    """Joules to watt-hours; None stays None."""
    return None if joules is None else joules / 3600.0


def tokens_per_joule(tokens: Optional[float], joules: Optional[float]) -> Optional[float]:
    """Tokens per joule; None when either is unknown or no energy was measured."""
    if tokens is None or joules is None or joules <= 0:
        return None
    return tokens / joules


def _fmt_joules(joules: float) -> str:
    return f"{joules:.1f} J" if joules < 10_000 else f"{joules / 1000:.1f} kJ"


def _fmt_part(label: str, joules: float, watts: Optional[float]) -> str:
    return f"{label} {_fmt_joules(joules)}" + (f" ({watts:.1f} W)" if watts is not None else "")


def describe(summary: EnergySummary) -> str:
    """One line for status output, e.g. "energy cpu 12.3 J (4.1 W), gpu 50.0 J (16.7 W)".

    The CPU part is always there ("energy cpu unavailable: <reason>" when it cannot be read); the
    GPU part only when GPU energy was measured, so machines without NVIDIA GPUs are not nagged.
    """
    if summary.cpu_joules is not None:
        parts = [_fmt_part("cpu", summary.cpu_joules, summary.cpu_watts)]
    else:
        parts = [f"cpu unavailable: {summary.cpu_reason or 'unknown reason'}"]
    if summary.gpu_joules is not None:
        parts.append(_fmt_part("gpu", summary.gpu_joules, summary.gpu_watts))
    return one_line("energy " + ", ".join(parts))
