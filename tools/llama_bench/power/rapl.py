"""CPU package energy from Linux RAPL powercap (/sys/class/powercap/intel-rapl:N/energy_uj)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import List, Optional

from .reading import EnergyReading, one_line

POWERCAP_ROOT_ENV = "LLAMA_STUDIO_POWERCAP_ROOT"
DEFAULT_POWERCAP_ROOT = "/sys/class/powercap"

NO_RAPL_REASON = "no RAPL powercap interface (not Intel/AMD or not Linux)"
RAPL_PERMISSION_REASON = (
    "RAPL energy_uj is readable by root only since CVE-2020-8694 (Platypus); grant read access with "
    "`sudo chmod o+r /sys/class/powercap/intel-rapl:*/energy_uj` (until reboot; a udev rule makes it "
    "permanent) or run as root"
)
# Top-level RAPL domains only: intel-rapl:N:M subdomains (core, uncore, dram) are parts of or
# alongside the package and intel-rapl-mmio:N mirrors the package, so counting them would add
# the same energy twice. Recent kernels name AMD domains intel-rapl too.
_TOP_LEVEL_DOMAIN = re.compile(r"^(?:intel|amd)-rapl:(\d+)$")


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
            self.reason = one_line(f"cannot read {path}: {exc}")

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
