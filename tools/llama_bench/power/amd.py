"""AMD GPU stats and energy through AMD SMI (package amdsmi, shipped with ROCm), optional."""

from __future__ import annotations

import time
from typing import Any, Callable, List, Optional, Tuple

from .reading import EnergyReading, GpuStats, one_line

AMDSMI_MISSING_REASON = "amdsmi not installed (pip install amdsmi; needs ROCm)"
MIB = 1024 * 1024


class AmdReader:
    """AMD GPU stats and energy through amdsmi; same shape as NvmlReader (the GpuReader protocol).

    Energy comes from amdsmi_get_energy_count (an accumulator in units of `counter_resolution`
    microjoules) when the GPU exposes it; otherwise power is integrated (trapezoids) between
    read_joules() calls. Values amdsmi reports as "N/A" (or cannot read) are None.
    """

    source = "amdsmi"

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.available = False
        self.reason: Optional[str] = None
        self._clock = clock
        self._smi: Any = None
        self._handles: List[Any] = []
        self._energy_last: List[Optional[float]] = []
        self._power_last: List[Optional[float]] = []
        self._joules: List[float] = []
        self._t_last = 0.0
        try:
            import amdsmi
        except ImportError:
            self.reason = AMDSMI_MISSING_REASON
            return
        except Exception as exc:  # the bindings load libamd_smi.so at import; a broken ROCm raises anything
            self.reason = one_line(f"amdsmi cannot load the ROCm library: {exc}")
            return
        try:
            flags = getattr(amdsmi, "AmdSmiInitFlags", None)
            if flags is not None and hasattr(flags, "INIT_AMD_GPUS"):
                amdsmi.amdsmi_init(flags.INIT_AMD_GPUS)
            else:
                amdsmi.amdsmi_init()
        except Exception as exc:  # AmdSmiLibraryException: no amdgpu driver, no permission
            self.reason = one_line(f"no AMD driver/GPU: {exc}")
            return
        self._smi = amdsmi
        try:
            self._handles = list(amdsmi.amdsmi_get_processor_handles())
        except Exception as exc:
            self.reason = one_line(f"no AMD driver/GPU: {exc}")
            self.close()
            return
        if not self._handles:
            self.reason = "no AMD GPU found"
            self.close()
            return
        self.available = True
        self.reset()

    def _call(self, fn_name: str, *args: Any) -> Any:
        # Unsupported queries raise AmdSmiLibraryException (NOT_SUPPORTED) or lack the function: "unknown".
        fn = getattr(self._smi, fn_name, None)
        if fn is None:
            return None
        try:
            return fn(*args)
        except Exception:
            return None

    def _vram_type(self) -> Any:
        mem_type = getattr(self._smi, "AmdSmiMemoryType", None)
        return getattr(mem_type, "VRAM", None)

    def _energy_j(self, handle: Any) -> Optional[float]:
        info = self._call("amdsmi_get_energy_count", handle)
        if not isinstance(info, dict):
            return None
        ticks = _number(info.get("energy_accumulator", info.get("power")))  # "power" before ROCm 6.1
        resolution = _number(info.get("counter_resolution"))
        if ticks is None or resolution is None or resolution <= 0:
            return None
        return ticks * resolution / 1e6

    def _power_w(self, handle: Any) -> Optional[float]:
        info = self._call("amdsmi_get_power_info", handle)
        if not isinstance(info, dict):
            return None
        for key in ("socket_power", "current_socket_power", "average_socket_power"):
            watts = _number(info.get(key))
            if watts is not None:
                return watts
        return None

    def _memory(self, handle: Any) -> Tuple[Optional[int], Optional[int]]:
        vram = self._vram_type()
        if vram is not None:
            total = _number(self._call("amdsmi_get_gpu_memory_total", handle, vram))
            used = _number(self._call("amdsmi_get_gpu_memory_usage", handle, vram))
            if total is not None:
                return (None if used is None else int(used)), int(total)
        usage = self._call("amdsmi_get_gpu_vram_usage", handle)  # MiB
        if isinstance(usage, dict):
            total, used = _number(usage.get("vram_total")), _number(usage.get("vram_used"))
            return (None if used is None else int(used * MIB)), (None if total is None else int(total * MIB))
        return None, None

    def _name(self, handle: Any, index: int) -> str:
        for fn, key in (("amdsmi_get_gpu_asic_info", "market_name"), ("amdsmi_get_gpu_board_info", "product_name")):
            info = self._call(fn, handle)
            if isinstance(info, dict) and isinstance(info.get(key), str) and info[key].strip() not in ("", "N/A"):
                return info[key].strip()
        return f"AMD GPU {index}"

    def reset(self) -> None:
        """Take new baselines: later readings count from now."""
        if not self.available:
            return
        self._energy_last = [self._energy_j(h) for h in self._handles]
        self._power_last = [self._power_w(h) if e is None else None for h, e in zip(self._handles, self._energy_last)]
        self._joules = [0.0] * len(self._handles)
        self._t_last = self._clock()

    def gpus(self) -> List[GpuStats]:
        """Current utilisation, VRAM and power of every AMD GPU ([] when amdsmi is unavailable)."""
        if not self.available:
            return []
        stats = []
        for index, handle in enumerate(self._handles):
            activity = self._call("amdsmi_get_gpu_activity", handle)
            util = _number(activity.get("gfx_activity")) if isinstance(activity, dict) else None
            used, total = self._memory(handle)
            stats.append(GpuStats(index, self._name(handle, index), util, used, total, self._power_w(handle)))
        return stats

    def read_joules(self) -> EnergyReading:
        """Joules used by all AMD GPUs since creation (or the last reset())."""
        if not self.available:
            return EnergyReading(None, self.source, False, self.reason)
        now = self._clock()
        dt = max(0.0, now - self._t_last)
        self._t_last = now
        measured = False
        for i, handle in enumerate(self._handles):
            last_energy = self._energy_last[i]
            if last_energy is not None:
                energy = self._energy_j(handle)
                if energy is not None:
                    if energy >= last_energy:  # a counter that went backwards was reset: skip that interval
                        self._joules[i] += energy - last_energy
                    self._energy_last[i] = energy
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
            return EnergyReading(None, self.source, False, "AMD GPU reports neither energy nor power")
        return EnergyReading(sum(self._joules), self.source, True, None)

    def close(self) -> None:
        """Release amdsmi; safe to call more than once."""
        if self._smi is not None:
            try:
                self._smi.amdsmi_shut_down()
            except Exception:
                pass  # shutting down a half-initialised library is not worth reporting
        self._smi = None
        if self.available:
            self.reason = "amdsmi closed"
        self.available = False


def _number(value: Any) -> Optional[float]:
    """amdsmi's numbers, or None for "N/A", missing or non-numeric values."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)
