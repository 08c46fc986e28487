"""`llama-bench report --png DIR_OR_PREFIX`: the report's charts as PNG files through matplotlib (optional:
`pip install matplotlib`). The charts are the same `Chart` objects as the HTML page's SVGs.

`--png out/` (or an existing directory) writes out/<chart>.png; `--png out/run` writes out/run-<chart>.png.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Sequence

from ...outputs import PNG_MARKER, PNG_METADATA, derived_output, output_path, write_atomic
from ...utils import UserError, require
from .charts import DASHES, PALETTE, Chart, finite, slug, usable_points

FLAG = "--png"


@dataclass(frozen=True)
class PngTarget:
    directory: Path
    prefix: str  # "" when the target is a directory, else "NAME-"

    def path_for(self, key: str) -> Path:
        return self.directory / f"{self.prefix}{slug(key)}.png"


def png_target(text: str) -> PngTarget:
    """Validate --png before any work: a directory that exists, or a prefix in one (outputs.output_path)."""
    if not text.strip():
        raise UserError(f"{FLAG}: the path is empty")
    path = Path(os.path.abspath(os.path.expanduser(text)))
    if text.endswith(os.sep) or path.is_dir():
        if not path.is_dir():
            raise UserError(f"{FLAG}: directory {path} does not exist")
        if not os.access(path, os.W_OK | os.X_OK):
            raise UserError(f"{FLAG}: directory {path} is not writable")
        return PngTarget(path, "")
    stem = path.name[: -len(".png")] if path.name.lower().endswith(".png") else path.name
    output_path(str(path.parent / f"{stem}-chart.png"), FLAG)  # the folder exists and is writable
    return PngTarget(path.parent, f"{stem}-")


def require_matplotlib() -> None:
    require("matplotlib", "matplotlib", "llama-bench report --png")


def _linestyle(dash: int) -> Any:
    pattern = DASHES[dash % len(DASHES)]
    return "-" if not pattern else (0, tuple(float(x) for x in pattern.split()))


def write_pngs(charts: Sequence[Chart], target: PngTarget) -> List[Path]:
    """One PNG per chart; every path is checked before the first is written."""
    if not charts:
        raise UserError("the results have nothing to chart (no measured cell, record or series)")
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    outs = [derived_output(str(target.path_for(c.key)), FLAG, PNG_MARKER) for c in charts]
    for chart, out in zip(charts, outs):
        assert out is not None
        fig = _figure(plt, chart)
        try:
            write_atomic(out, lambda fh: fig.savefig(fh, format="png", dpi=110, metadata=PNG_METADATA), binary=True)
        finally:
            plt.close(fig)
    return [o.path for o in outs if o is not None]


def _figure(plt: Any, chart: Chart) -> Any:
    fig, ax = plt.subplots(figsize=(7.2, 4.4))
    for s in chart.series:
        color = PALETTE[s.color % len(PALETTE)]
        style = dict(
            color=color, linestyle=_linestyle(s.dash) if s.line else "none", label=s.name or None, linewidth=1.6
        )
        if s.errors:
            rows = [
                (x, y, err)
                for (x, y), err in zip(s.points, s.errors)
                if finite(x) and finite(y) and (x > 0 or not chart.x_log) and (y > 0 or not chart.y_log)
            ]
            if not rows:
                continue
            xs, ys = [r[0] for r in rows], [r[1] for r in rows]
            lows = [y - err[0] if err else 0.0 for _, y, err in rows]
            highs = [err[1] - y if err else 0.0 for _, y, err in rows]
            ax.errorbar(xs, ys, yerr=[lows, highs], marker="o", markersize=3.5, capsize=3, **style)
            continue
        points = usable_points(s.points, chart.x_log, chart.y_log)
        if points:
            marker = "o" if s.markers or not s.line else None
            ax.plot([p[0] for p in points], [p[1] for p in points], marker=marker, markersize=3.5, **style)
    for rule in chart.rules:
        line = ax.axhline if rule.axis == "y" else ax.axvline
        line(rule.value, color=rule.color, linestyle="--", linewidth=1)
        if rule.axis == "y":
            ax.annotate(rule.label, (1, rule.value), xycoords=("axes fraction", "data"), ha="right", va="bottom",
                        fontsize=8, color=rule.color)  # fmt: skip
        else:
            ax.annotate(rule.label, (rule.value, 1), xycoords=("data", "axes fraction"), ha="left", va="top",
                        fontsize=8, color=rule.color, rotation=90)  # fmt: skip
    if chart.x_log:
        ax.set_xscale("log")
    if chart.y_log:
        ax.set_yscale("log")
    if chart.y_range is not None:
        ax.set_ylim(*chart.y_range)
    elif chart.y_from_zero and not chart.y_log:
        ax.set_ylim(bottom=min(0.0, ax.get_ylim()[0]))
    ax.set_title(chart.title, fontsize=11)
    ax.set_xlabel(chart.x_label)
    ax.set_ylabel(chart.y_label)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="x-small")
    fig.tight_layout()
    return fig
