"""What every energy and GPU source reports: the shared reading types, and the GPU reader interface."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Protocol, Union


@dataclass
class EnergyReading:
    """Cumulative energy since the reader's baseline; joules is None when unavailable."""

    joules: Optional[float]
    source: str
    available: bool
    reason: Optional[str] = None


@dataclass
class GpuStats:
    """Point-in-time state of one GPU (NVIDIA or AMD); fields the driver does not report are None."""

    index: int
    name: str
    util_percent: Optional[float]
    mem_used_bytes: Optional[int]
    mem_total_bytes: Optional[int]
    power_w: Optional[float]


class GpuReader(Protocol):
    """A source of GPU stats and energy (NVML, amdsmi, or both: power.gpus); `reason` says why it is unavailable."""

    available: bool
    reason: Optional[str]

    def gpus(self) -> List[GpuStats]: ...

    def read_joules(self) -> EnergyReading: ...

    def reset(self) -> None: ...

    def close(self) -> None: ...


@dataclass
class EnergySummary:
    """Energy since EnergyMeter.start(); values are None where the source is unavailable.

    total_joules sums the sources that are available (None when neither is).
    """

    cpu_joules: Optional[float]
    gpu_joules: Optional[float]
    total_joules: Optional[float]
    cpu_reason: Optional[str]
    gpu_reason: Optional[str]
    elapsed_s: Optional[float]
    cpu_watts: Optional[float]
    gpu_watts: Optional[float] = None

    def to_dict(self) -> Dict[str, Union[float, str, None]]:
        """Short keys for reports: cpu_j, gpu_j, total_j, cpu_reason, gpu_reason, elapsed_s, cpu_w, gpu_w."""
        d = asdict(self)
        return {
            "cpu_j": d["cpu_joules"],
            "gpu_j": d["gpu_joules"],
            "total_j": d["total_joules"],
            "cpu_reason": d["cpu_reason"],
            "gpu_reason": d["gpu_reason"],
            "elapsed_s": d["elapsed_s"],
            "cpu_w": d["cpu_watts"],
            "gpu_w": d["gpu_watts"],
        }


def one_line(text: str) -> str:
    return " ".join(str(text).split())
