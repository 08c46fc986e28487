"""Energy measurement: CPU package energy from Linux RAPL powercap, GPU energy from NVIDIA NVML.

Both sources are optional. Every reader reports ``available`` and, when it is not, a one-line
``reason`` the user can act on, so callers can show "unavailable: <reason>" instead of failing.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Optional, Union

POWERCAP_ROOT_ENV = "LLAMA_STUDIO_POWERCAP_ROOT"
DEFAULT_POWERCAP_ROOT = "/sys/class/powercap"

NO_RAPL_REASON = "no RAPL powercap interface (not Intel/AMD or not Linux)"
RAPL_PERMISSION_REASON = (
    "RAPL energy_uj is readable by root only since CVE-2020-8694 (Platypus); grant read access with "
    "`sudo chmod o+r /sys/class/powercap/intel-rapl:*/energy_uj` (until reboot; a udev rule makes it "
    "permanent) or run as root"
)
NVML_MISSING_REASON = "nvidia-ml-py not installed (pip install nvidia-ml-py)"

# Top-level RAPL domains only: intel-rapl:N:M subdomains (core, uncore, dram) are parts of or
# alongside the package and intel-rapl-mmio:N mirrors the package, so counting them would add
# the same energy twice. Recent kernels name AMD domains intel-rapl too.
_TOP_LEVEL_DOMAIN = re.compile(r"^(?:intel|amd)-rapl:(\d+)$")


@dataclass
class EnergyReading:
    """Cumulative energy since the reader's baseline; joules is None when unavailable."""

    joules: Optional[float]
    source: str
    available: bool
    reason: Optional[str] = None


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _read_int(path: str) -> int:
    with open(path, encoding="utf-8") as fh:
        return int(fh.read().strip())


def _read_str(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


@dataclass
class _RaplDomain:
    path: str
    name: str
    max_range_uj: Optional[int]
    last_uj: int = 0
    joules: float = 0.0


class RaplReader:
    """CPU package energy from /sys/class/powercap/intel-rapl:N/energy_uj.

    ``root`` defaults to $LLAMA_STUDIO_POWERCAP_ROOT or /sys/class/powercap. Only top-level package
    domains are summed (a ``psys`` platform domain is skipped when package domains exist, since
    it includes them). energy_uj wraps at max_energy_range_uj; each read adds the delta since the
    previous read, adding the range back when the counter wrapped. One wrap between two reads is
    detected, so read at least every few minutes on long runs (a wrap takes ~1 h at 70 W).
    """

    source = "rapl"

    def __init__(self, root: Optional[str] = None) -> None:
        self.root = root or os.environ.get(POWERCAP_ROOT_ENV) or DEFAULT_POWERCAP_ROOT
        self.available = False
        self.reason: Optional[str] = None
        self.domains: List[_RaplDomain] = []
        self._discover()
        if self.domains:
            self.reset()

    @property
    def domain_names(self) -> List[str]:
        """Names of the summed domains, e.g. ["package-0", "package-1"]."""
        return [d.name for d in self.domains]

    def _discover(self) -> None:
        try:
            entries = os.listdir(self.root)
        except OSError:
            self.reason = NO_RAPL_REASON
            return
        found = []
        seen = set()
        for entry in entries:
            match = _TOP_LEVEL_DOMAIN.match(entry)
            if not match:
                continue
            path = os.path.join(self.root, entry)
            real = os.path.realpath(path)
            if real in seen or not os.path.isfile(os.path.join(path, "energy_uj")):
                continue
            seen.add(real)
            name = _read_str(os.path.join(path, "name")) or entry
            try:
                max_range: Optional[int] = _read_int(os.path.join(path, "max_energy_range_uj"))
            except (OSError, ValueError):
                max_range = None
            found.append((int(match.group(1)), _RaplDomain(path=path, name=name, max_range_uj=max_range)))
        found.sort(key=lambda item: item[0])
        domains = [d for _, d in found]
        packages = [d for d in domains if d.name.startswith("package")]
        self.domains = packages or domains
        if not self.domains:
            self.reason = NO_RAPL_REASON

    def _fail(self, exc: Exception, path: str) -> None:
        self.available = False
        if isinstance(exc, PermissionError):
            self.reason = RAPL_PERMISSION_REASON
        else:
            self.reason = _one_line(f"cannot read {path}: {exc}")

    def reset(self) -> None:
        """Take new baselines: later readings count from now."""
        if not self.domains:
            return
        for domain in self.domains:
            path = os.path.join(domain.path, "energy_uj")
            try:
                domain.last_uj = _read_int(path)
            except (OSError, ValueError) as exc:
                self._fail(exc, path)
                return
            domain.joules = 0.0
        self.available = True
        self.reason = None

    def read_joules(self) -> EnergyReading:
        """Joules used by all package domains since creation (or the last reset())."""
        if not self.available:
            return EnergyReading(None, self.source, False, self.reason)
        for domain in self.domains:
            path = os.path.join(domain.path, "energy_uj")
            try:
                current = _read_int(path)
            except (OSError, ValueError) as exc:
                self._fail(exc, path)
                return EnergyReading(None, self.source, False, self.reason)
            delta = current - domain.last_uj
            if delta < 0:
                # The counter wrapped at max_energy_range_uj (without a range, count from zero).
                delta += domain.max_range_uj if domain.max_range_uj else domain.last_uj
            domain.last_uj = current
            domain.joules += delta / 1e6
        return EnergyReading(sum(d.joules for d in self.domains), self.source, True, None)


@dataclass
class GpuStats:
    """Point-in-time state of one NVIDIA GPU; fields the driver does not report are None."""

    index: int
    name: str
    util_percent: Optional[float]
    mem_used_bytes: Optional[int]
    mem_total_bytes: Optional[int]
    power_w: Optional[float]


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
            self.reason = _one_line(f"no NVIDIA driver/GPU: {exc}")
            return
        self._nvml = pynvml
        try:
            count = int(pynvml.nvmlDeviceGetCount())
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except Exception as exc:
            self.reason = _one_line(f"no NVIDIA driver/GPU: {exc}")
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


class EnergyMeter:
    """CPU (RAPL) plus GPU (NVML) energy over an interval: start(), then read() as often as wanted.

    Readers are created here unless given; ``gpu=False`` skips NVML entirely. Baselines are taken
    at creation, so read() works without start(). Call close() when done (releases NVML).
    """

    def __init__(
        self,
        cpu: bool = True,
        gpu: bool = True,
        rapl: Optional[RaplReader] = None,
        nvml: Optional[NvmlReader] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self.rapl = rapl if rapl is not None else (RaplReader() if cpu else None)
        self.nvml = nvml if nvml is not None else (NvmlReader(clock=clock) if gpu else None)
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
        gpu = self.nvml.read_joules() if self.nvml is not None else EnergyReading(None, "nvml", False, "disabled")
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
    return _one_line("energy " + ", ".join(parts))
