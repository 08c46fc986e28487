"""What autotune shows while it works: a live rich table of trials with progress and ETA on a terminal,
one plain line per trial otherwise (logs, pipes, CI)."""

from __future__ import annotations

import sys
import time
from typing import Any, List, Optional

from ..utils import fmt_duration
from .observer import RunHeader
from .space import PARAM_BY_NAME, Candidate, describe
from .trial import Trial, TrialStatus

MAX_ROWS = 25  # the live table keeps the latest trials (and the best) in view


def fmt_value(value: Optional[float], spread: Optional[float] = None, unit: str = "") -> str:
    if value is None:
        return "-"
    digits = 3 if abs(value) < 10 else 1
    text = f"{value:.{digits}f}"
    if spread:
        text += f" ± {spread:.{digits}f}"
    return f"{text} {unit}".rstrip()


def outcome(trial: Trial, unit: str) -> str:
    """'103.2 ± 4.1 tok/s (3 repeats)' / 'failed (crash): ...' / 'pruned (constraint): ...'."""
    if trial.ok:
        n = len(trial.values)
        early = ", stopped early: clearly behind" if trial.stopped_early else ""
        return f"{fmt_value(trial.mean, trial.spread, unit)} ({n} repeat{'s' if n != 1 else ''}{early})"
    return f"{trial.status} ({trial.failure or '?'}): {trial.reason or 'no reason given'}"


class Eta:
    """Progress and ETA from the trials seen so far (mean duration of launched trials)."""

    def __init__(self) -> None:
        self.header: Optional[RunHeader] = None
        self.t0 = time.monotonic()
        self.done = 0
        self.durations: List[float] = []

    def start(self, header: RunHeader) -> None:
        self.header, self.done, self.t0 = header, header.resumed, time.monotonic()

    def add(self, trial: Trial) -> None:
        if trial.phase == "search":
            self.done += 1
        if trial.launched:
            self.durations.append(trial.duration_s)

    def eta(self) -> Optional[float]:
        expected = self.header.expected_trials if self.header else None
        if expected is None or not self.durations:
            return None
        return max(0, expected - self.done) * sum(self.durations) / len(self.durations)

    def line(self) -> str:
        expected = self.header.expected_trials if self.header else None
        total = f"/~{expected}" if expected else ""
        eta = self.eta()
        tail = f" · ETA {fmt_duration(eta)}" if eta is not None else ""
        return f"trials {self.done}{total} · elapsed {fmt_duration(time.monotonic() - self.t0)}{tail}"


class PlainView:
    """One line per event, for logs and pipes."""

    def __init__(self) -> None:
        self.eta = Eta()
        self.unit = ""

    def _print(self, line: str) -> None:
        print(line, flush=True)

    def started(self, header: RunHeader) -> None:
        self.eta.start(header)
        self.unit = header.unit
        self._print(f"autotune: {header.workload}")
        self._print(f"space: {header.space} · strategy {header.strategy} · budget {header.budget}")
        resumed = f" (resumed: {header.resumed} trials from it)" if header.resumed else ""
        self._print(f"journal: {header.journal}{resumed}")
        for note in header.notes:
            self._print(f"note: {note}")

    def trial_started(self, number: int, candidate: Candidate, phase: str) -> None:
        pass

    def trial_progress(self, text: str) -> None:
        pass

    def trial_done(self, trial: Trial, best: Optional[Trial]) -> None:
        self.eta.add(trial)
        tag = "verify" if trial.phase == "verify" else "trial"
        what = describe(trial.candidate)
        if trial.phase == "verify":
            what = f"{trial.label} (round {(trial.round or 0) + 1})" + (f" {what}" if trial.candidate else "")
        line = f"[{tag} {trial.number}] {what}: {outcome(trial, self.unit)}"
        if trial.launched:
            line += f" in {trial.duration_s:.1f} s"
        if trial.phase == "search" and best is not None:
            line += f" · best #{best.number} {fmt_value(best.mean, None, self.unit)} · {self.eta.line()}"
        self._print(line)

    def message(self, text: str) -> None:
        self._print(text)

    def close(self) -> None:
        pass


class LiveView:
    """A rich Live table: one row per trial (the latest, plus the best), progress, ETA, what runs now."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console(file=sys.stdout, highlight=False)
        self.eta = Eta()
        self.header: Optional[RunHeader] = None
        self.trials: List[Trial] = []
        self.best: Optional[Trial] = None
        self.now = ""
        self.live = Live(console=self.console, refresh_per_second=4, transient=False, get_renderable=self._render)

    def started(self, header: RunHeader) -> None:
        self.header = header
        self.eta.start(header)
        self.console.print(f"[bold]autotune[/bold]: {header.workload}")
        self.console.print(f"space: {header.space} · strategy {header.strategy} · budget {header.budget}")
        resumed = f" (resumed: {header.resumed} trials from it)" if header.resumed else ""
        self.console.print(f"journal: {header.journal}{resumed}")
        for note in header.notes:
            self.console.print(f"note: {note}")
        self.live.start()

    def trial_started(self, number: int, candidate: Candidate, phase: str) -> None:
        self.now = f"{'verify' if phase == 'verify' else 'trial'} {number}: {describe(candidate)}"

    def trial_progress(self, text: str) -> None:
        self.now = f"{self.now.split(' — ')[0]} — {text}"

    def trial_done(self, trial: Trial, best: Optional[Trial]) -> None:
        self.eta.add(trial)
        self.trials.append(trial)
        if best is not None:
            self.best = best
        self.now = ""

    def message(self, text: str) -> None:
        self.console.print(text)

    def _render(self) -> Any:
        from rich.console import Group
        from rich.table import Table

        header = self.header
        names = header.names if header else []
        unit = header.unit if header else ""
        table = Table(expand=False, title=self.eta.line(), title_justify="left")
        table.add_column("#", justify="right")
        table.add_column("phase")
        for name in names:
            table.add_column(PARAM_BY_NAME[name].short, justify="right")
        table.add_column(f"value ({unit})", justify="right")
        table.add_column("n", justify="right")
        table.add_column("s", justify="right")
        table.add_column("status / reason", overflow="fold", max_width=70)
        rows = self.trials[-MAX_ROWS:]
        if self.best is not None and self.best not in rows:
            rows = [self.best] + rows[1:]
        for t in rows:
            star = "★ " if self.best is not None and t is self.best else ""
            phase = f"{t.label}" if t.phase == "verify" else "search"
            status = "ok" + (" (early stop)" if t.stopped_early else "") if t.ok else f"{t.status}: {t.reason or ''}"
            style = None if t.ok else ("dim" if t.status is TrialStatus.PRUNED else "red")
            table.add_row(
                f"{star}{t.number}",
                phase,
                *(str(t.candidate.get(n, "-")) for n in names),
                fmt_value(t.mean, t.spread),
                str(len(t.values)) if t.values else "-",
                f"{t.duration_s:.1f}" if t.launched else "-",
                status,
                style=style,
            )
        parts: List[Any] = [table]
        if self.now:
            parts.append(f"now: {self.now}")
        return Group(*parts)

    def close(self) -> None:
        if self.live.is_started:
            self.live.stop()
            if not self.console.is_terminal:
                self.console.print()  # rich ends the last render with a newline only on a terminal


def make_view(ui: Optional[str]) -> Any:
    """`live` on a terminal, `plain` otherwise (or as asked)."""
    if ui is None:
        ui = "live" if sys.stdout.isatty() else "plain"
    return LiveView() if ui == "live" else PlainView()
