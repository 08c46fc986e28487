"""NVIDIA GPU stats and energy through NVML (package nvidia-ml-py, module pynvml), optional."""

from __future__ import annotations

import time
from typing import Any, Callable, List, Optional

from .reading import EnergyReading, GpuStats, one_line

NVML_MISSING_REASON = "nvidia-ml-py not installed (pip install nvidia-ml-py)"


class NvmlReader:
    """NVIDIA GPU stats and energy through NVML (package nvidia-ml-py, module pynvml), optional.

    Energy uses nvmlDeviceGetTotalEnergyConsumption (mJ, Volta and newer) when the GPU supports
    it; otherwise power draw is integrated (trapezoids) between read_joules() calls, so it is
    only as good as the read frequency.
    """

    source = "nvml"

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.available = False
        self.reason: Optional[str] = None
        self._clock = clock
        self._nvml: Any = None
        self._handles: List[Any] = []
        self._energy_base: List[Optional[int]] = []
        self._power_last: List[Optional[float]] = []
        self._joules: List[float] = []
        self._t_last = 0.0
        try:
            import pynvml
        except ImportError:
            self.reason = NVML_MISSING_REASON
            return
        try:
            pynvml.nvmlInit()
        except Exception as exc:  # NVMLError subclasses, or OSError when libnvidia-ml is absent
            self.reason = one_line(f"no NVIDIA driver/GPU: {exc}")
            return
        self._nvml = pynvml
        try:
            count = int(pynvml.nvmlDeviceGetCount())
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except Exception as exc:
            self.reason = one_line(f"no NVIDIA driver/GPU: {exc}")
            self.close()
            return
        if not self._handles:
            self.reason = "no NVIDIA GPU found"
            self.close()
            return
        self.available = True
        self.reset()

    def _call(self, fn_name: str, *args: Any) -> Any:
        # Unsupported queries raise NVMLError (e.g. NOT_SUPPORTED); treat them as "unknown".
        try:
            return getattr(self._nvml, fn_name)(*args)
        except Exception:
            return None

    def _power_w(self, handle: Any) -> Optional[float]:
        milliwatts = self._call("nvmlDeviceGetPowerUsage", handle)
        return None if milliwatts is None else float(milliwatts) / 1000.0

    def reset(self) -> None:
        """Take new baselines: later readings count from now."""
        if not self.available:
            return
        self._energy_base = [self._call("nvmlDeviceGetTotalEnergyConsumption", h) for h in self._handles]
        self._power_last = [
            self._power_w(h) if base is None else None for h, base in zip(self._handles, self._energy_base)
        ]
        self._joules = [0.0] * len(self._handles)
        self._t_last = self._clock()

    def gpus(self) -> List[GpuStats]:
        """Current utilization, memory and power of every GPU ([] when NVML is unavailable)."""
        if not self.available:
            return []
        stats = []
        for index, handle in enumerate(self._handles):
            name = self._call("nvmlDeviceGetName", handle)
            if isinstance(name, bytes):  # older nvidia-ml-py versions return bytes
                name = name.decode("utf-8", "replace")
            util = self._call("nvmlDeviceGetUtilizationRates", handle)
            mem = self._call("nvmlDeviceGetMemoryInfo", handle)
            stats.append(
                GpuStats(
                    index=index,
                    name=str(name) if name is not None else f"GPU {index}",
                    util_percent=float(util.gpu) if util is not None else None,
                    mem_used_bytes=int(mem.used) if mem is not None else None,
                    mem_total_bytes=int(mem.total) if mem is not None else None,
                    power_w=self._power_w(handle),
                )
            )
        return stats

    def read_joules(self) -> EnergyReading:
        """Joules used by all GPUs since creation (or the last reset())."""
        if not self.available:
            return EnergyReading(None, self.source, False, self.reason)
        now = self._clock()
        dt = max(0.0, now - self._t_last)
        self._t_last = now
        measured = False
        for i, handle in enumerate(self._handles):
            base = self._energy_base[i]
            if base is not None:
                total_mj = self._call("nvmlDeviceGetTotalEnergyConsumption", handle)
                if total_mj is not None:
                    self._joules[i] = (int(total_mj) - base) / 1000.0
                measured = True
                continue
            power = self._power_w(handle)
            last = self._power_last[i]
            if power is not None and last is not None:
                self._joules[i] += (power + last) / 2.0 * dt
            if power is not None or last is not None:
                measured = True
            self._power_last[i] = power if power is not None else last
        if not measured:
            return EnergyReading(None, self.source, False, "GPU reports neither energy nor power")
        return EnergyReading(sum(self._joules), self.source, True, None)

    def close(self) -> None:
        """Release NVML; safe to call more than once."""
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass  # shutting down a half-initialised NVML is not worth reporting
        self._nvml = None
        if self.available:
            self.reason = "NVML closed"
        self.available = False
