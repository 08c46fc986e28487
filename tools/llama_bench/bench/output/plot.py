"""`llama-bench plot`: tok/s and latency against prompt size and concurrency (matplotlib, optional)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Dict, List, Tuple

from ...outputs import PNG_METADATA, OutputPath, write_atomic
from ...utils import UserError, as_dict, require
from ..plan import CellStatus
from ..summary import Field, fields

PANELS = tuple(
    zip(
        ("generation tok/s (all requests)", "prompt tok/s (all requests)", "TTFT p50 (ms)", "TPOT p50 (ms)"),
        fields("gen_tps", "prompt_tps", "ttft_p50", "tpot_p50"),
    )
)


def series_by(
    cells: List[Dict[str, Any]], x_key: str, group_key: str, metric: Field
) -> Dict[Any, List[Tuple[Any, float]]]:
    """{group value: [(x, y), ...]} sorted by x, for measured cells that have the metric."""
    out: Dict[Any, List[Tuple[Any, float]]] = defaultdict(list)
    for cell in cells:
        value = metric.number(cell)
        if cell.get("status") == CellStatus.SKIPPED or value is None:
            continue
        out[cell[group_key]].append((cell[x_key], float(value)))
    return {k: sorted(v) for k, v in sorted(out.items())}


def plot_result(result: Dict[str, Any], out: OutputPath) -> None:
    require("matplotlib", "matplotlib", "llama-bench plot")
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    from matplotlib.ticker import ScalarFormatter

    cells = [c for c in result.get("cells", []) if c.get("status") != CellStatus.SKIPPED]
    if not cells:
        raise UserError("the result has no measured cell to plot")
    sizes = {c["prompt_size"] for c in cells}
    concs = {c["concurrency"] for c in cells}
    # Plot against whichever dimension varies more; the other one gives the lines.
    if len(concs) > len(sizes):
        x_key, group_key, x_label, group_label = "concurrency", "prompt_size", "concurrency", "prompt"
    else:
        x_key, group_key, x_label, group_label = "prompt_size", "concurrency", "prompt tokens", "conc"
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    for ax, (title, metric) in zip(axes.flat, PANELS):
        for group, points in series_by(cells, x_key, group_key, metric).items():
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o", label=f"{group_label} {group}")
        ax.set_title(title)
        ax.set_xlabel(x_label)
        if x_key == "prompt_size" and max(sizes) / max(1, min(sizes)) > 20:
            ax.set_xscale("log")  # 100 .. 100k spans three decades
            ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    server = as_dict(as_dict(result.get("environment")).get("server"))
    model = str(server.get("model_path") or server.get("model_id") or "").rsplit("/", 1)[-1]
    fig.suptitle(f"llama-bench {result.get('started_at', '')}  {model}  api={result.get('api')}", fontsize=10)
    fig.tight_layout()
    try:
        write_atomic(out, lambda fh: fig.savefig(fh, format="png", dpi=110, metadata=PNG_METADATA), binary=True)
    finally:
        plt.close(fig)
