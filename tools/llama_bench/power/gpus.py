"""Every GPU vendor behind one GpuReader: NVIDIA (NVML) and AMD (amdsmi) side by side."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable, List, Optional, Sequence

from .amd import AmdReader
from .nvml import NvmlReader
from .reading import EnergyReading, GpuReader, GpuStats


class GpuReaders:
    """A GpuReader over several: GPUs listed one after the other, energy summed over the available ones.

    `available` when at least one reader is; otherwise `reason` joins theirs ("nvidia-ml-py not
    installed ...; amdsmi not installed ..."). Indices are renumbered 0, 1, ... across readers.
    """

    source = "gpu"

    def __init__(self, readers: Optional[Sequence[GpuReader]] = None, clock: Callable[[], float] = time.monotonic):
        if readers is None:
            readers = [NvmlReader(clock=clock), AmdReader(clock=clock)]
        self.readers: List[GpuReader] = list(readers)
        self.available = False
        self.reason: Optional[str] = None
        self._refresh()

    def _refresh(self) -> None:
        self.available = any(r.available for r in self.readers)
        reasons = [r.reason for r in self.readers if not r.available and r.reason]
        self.reason = None if self.available else ("; ".join(reasons) or "no GPU reader")

    def gpus(self) -> List[GpuStats]:
        """The GPUs of every available reader, indexed consecutively."""
        stats = [g for r in self.readers if r.available for g in r.gpus()]
        return [replace(g, index=i) for i, g in enumerate(stats)]

    def read_joules(self) -> EnergyReading:
        """Joules of all GPUs since creation (or reset()), summed over the readers that measure."""
        readings = [r.read_joules() for r in self.readers if r.available]
        self._refresh()
        measured = [x for x in readings if x.available and x.joules is not None]
        if not measured:
            reasons = [x.reason for x in readings if x.reason] or ([self.reason] if self.reason else [])
            return EnergyReading(None, self.source, False, "; ".join(reasons) or "no GPU energy")
        source = "+".join(x.source for x in measured)
        return EnergyReading(sum(x.joules or 0.0 for x in measured), source, True, None)

    def reset(self) -> None:
        for r in self.readers:
            r.reset()

    def close(self) -> None:
        """Close every reader; safe to call more than once."""
        for r in self.readers:
            r.close()
        self._refresh()
