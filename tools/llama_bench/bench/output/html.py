"""`llama-bench report`: one self-contained HTML page (inline CSS, inline SVG, a few lines of inline JS;
no network) for one or more --json-out results side by side, and the same charts as PNGs (png.py).

What it reads, and from where (figures always through summary.FIELDS, results through load_result):
- the environment manifest, params and notes of each result;
- per cell: every FIELDS figure present (so figures added to FIELDS later, such as SLO goodput, show up),
  95 % intervals when FIELDS has `<key>_ci_low` / `<key>_ci_high`;
- the per-request records (`requests`) for the latency CDFs; `metrics_series` for the server over time;
- when present: `slots_series` (/slots over time) and `capacity` (its `curve` or `steps`, the SLO bounds
  in `capacity.slo` or `params.slo`, and the capacity found). Sections without data are left out.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import IO, Any, Dict, List, Optional, Sequence

from ...outputs import OutputFailed, OutputPath, check_distinct, write_atomic
from ...utils import ExitStatus, UserError, as_dict, fmt_bytes
from ...version import __version__
from ..summary import FIELDS
from . import report_figures as figures
from .charts import Chart, svg
from .png import PngTarget

CELL_COLUMNS = (
    "status",
    "workload",
    "rate",
    "repeat_count",
    "requests_ok",
    "requests_failed",
    "duration_s",
    "gen_tps",
    "prompt_tps",
    "total_tps",
    "requests_per_s",
    "ttft_p50",
    "ttft_p99",
    "tpot_p50",
    "itl_p50",
    "e2e_p50",
    "e2e_p99",
    "cache_hit_share",
    "batched_share",
    "requests_deferred_max",
    "energy_wh",
    "gen_tokens_per_j",
)
STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;color:#222;
background:#f6f6f4}
header,main{max-width:1360px;margin:0 auto;padding:12px 20px}
header{border-bottom:1px solid #ddd;background:#fff;max-width:none}
h1{font-size:20px;margin:4px 0} h2{font-size:17px;margin:26px 0 8px} h3{font-size:15px;margin:16px 0 6px}
nav a{margin-right:14px} .muted{color:#666} code{font-size:12px}
table{border-collapse:collapse;background:#fff;font-size:12.5px;margin:6px 0 10px}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
td:first-child{white-space:nowrap} th{background:#f0f0ee}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.scroll{overflow-x:auto}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:14px}
figure.chart-box{margin:0;background:#fff;border:1px solid #ddd;padding:6px}
svg.chart{display:block;width:100%;height:auto;font-family:inherit}
.series.off{display:none} .legend-item{cursor:pointer} .legend-item.off{opacity:.35}
.warn{color:#9a5b00} details{margin:8px 0} summary{cursor:pointer}
"""
# Legend entries hide/show their series; everything else is static SVG.
SCRIPT = """
document.querySelectorAll("svg.chart .legend-item").forEach(function (item) {
  function toggle() {
    var chart = item.closest("svg");
    var series = chart.querySelector('.series[data-series="' + item.getAttribute("data-series") + '"]');
    if (series) { item.classList.toggle("off", series.classList.toggle("off")); }
  }
  item.addEventListener("click", toggle);
  item.addEventListener("keydown", function (ev) {
    if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); toggle(); }
  });
});
"""
CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"


@dataclass
class ReportParams:
    results: List[str]
    html: Optional[OutputPath] = None
    png: Optional[PngTarget] = None


@dataclass
class Section:
    key: str
    title: str
    charts: List[Chart] = field(default_factory=list)
    note: Optional[str] = None


def report(params: ReportParams) -> int:
    """Load the results, build the charts once, write the page and/or the PNGs."""
    from .png import require_matplotlib, write_pngs

    if params.png is not None:
        require_matplotlib()  # before any work: a missing package is one line, nothing half written
    check_distinct(params.html, inputs=[("result", path) for path in params.results])
    inputs = figures.load_inputs(params.results)
    sections = build_sections(inputs)
    try:
        if params.html is not None:
            page = render_page(inputs, sections)

            def dump(fh: IO[str]) -> None:
                fh.write(page)

            write_atomic(params.html, dump)
            print(f"wrote {params.html}", flush=True)
        if params.png is not None:
            written = write_pngs([c for s in sections for c in s.charts], params.png)
            print(f"wrote {len(written)} PNG file(s): {', '.join(str(p) for p in written)}", flush=True)
    except OutputFailed as exc:
        raise UserError(str(exc), ExitStatus.OUTPUT_ERROR) from None
    return ExitStatus.OK


def build_sections(inputs: Sequence[figures.ReportInput]) -> List[Section]:
    """The chart sections, each with only the charts that have data."""
    load = figures.load_charts(inputs)
    groups = [
        Section("throughput", "Throughput and goodput vs load", load[0]),
        Section("latency", "Latency vs load", load[1]),
        Section(
            "distributions",
            "Latency distributions (CDF per cell)",
            figures.cdf_charts(inputs),
            "Successful requests only; failed requests are counted in the cell tables.",
        ),
        Section("capacity", "Capacity curve", figures.capacity_charts(inputs), figures.capacity_summary(inputs)),
        Section("server", "Server over time", figures.time_charts(inputs), "t = seconds since the run started."),
    ]
    return [g for g in groups if g.charts]


# -- the page ----------------------------------------------------------------------------------------
def render_page(inputs: Sequence[figures.ReportInput], sections: Sequence[Section]) -> str:
    e = escape
    names = ", ".join(i.name for i in inputs)
    nav = [("environment", "Environment"), ("cells", "Cells")] + [(s.key, s.title) for s in sections]
    nav.append(("figures", "All figures"))
    body = [
        "<header>",
        f"<h1>llama-bench report: {e(names)}</h1>",
        f'<div class="muted">generated {e(time.strftime("%Y-%m-%d %H:%M:%S %z"))} by llama-bench {e(__version__)}'
        f" from {len(inputs)} result file(s); self-contained (no network)</div>",
        "<nav>" + "".join(f'<a href="#{k}">{e(t)}</a>' for k, t in nav) + "</nav>",
        "</header><main>",
        _environment_html(inputs),
        _cells_html(inputs),
    ]
    for section in sections:
        body.append(f'<section id="{section.key}"><h2>{e(section.title)}</h2>')
        if section.note:
            body.append(f'<p class="muted">{e(section.note)}</p>')
        body.append('<div class="charts">')
        body += [f'<figure class="chart-box">{svg(c)}</figure>' for c in section.charts]
        body.append("</div></section>")
    body.append(_all_figures_html(inputs))
    body.append("</main>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<link rel="icon" href="data:,">'
        f"<title>llama-bench report: {e(names)}</title><style>{STYLE}</style></head>\n<body>\n"
        + "\n".join(body)
        + f"\n<script>{SCRIPT}</script>\n</body></html>\n"
    )


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int = 1) -> str:
    """An HTML table of already formatted (unescaped) texts; columns from `numeric_from` right-aligned
    when they look like numbers."""
    e = escape
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    lines = []
    for row in rows:
        cells = []
        for i, text in enumerate(row):
            cls = ' class="num"' if i >= numeric_from and _numeric_text(text) else ""
            cells.append(f"<td{cls}>{e(text)}</td>")
        lines.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(lines)}</tbody></table></div>'


def _numeric_text(text: str) -> bool:
    return bool(text) and (text[0].isdigit() or text[0] in "-+.") and text != "-"


def _scalar(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)) and all(not isinstance(v, (dict, list)) for v in value):
        return ", ".join(_scalar(v) for v in value) or "-"
    if isinstance(value, (dict, list)):
        text = json.dumps(value, separators=(",", ":"), sort_keys=True)
        return text if len(text) <= 400 else text[:399] + "…"
    return str(value)


def environment_rows(doc: Dict[str, Any]) -> Dict[str, str]:
    """The manifest as label -> text, in reading order."""
    env = as_dict(doc.get("environment"))
    rows: Dict[str, str] = {}
    for key in ("schema", "status", "stop_reason", "started_at", "finished_at", "api"):
        rows[key] = _scalar(doc.get(key))
    tool = as_dict(env.get("tool"))
    rows["tool"] = f"{tool.get('name', 'llama-bench')} {tool.get('version', '-')}"
    for key, value in as_dict(env.get("server")).items():
        if key == "props":  # the whole /props answer: too long for a table
            continue
        rows[f"server {key}"] = (
            " ".join(map(str, value)) if key == "command" and isinstance(value, list) else _scalar(value)
        )
    host = as_dict(env.get("host"))
    for key, value in host.items():
        if key == "ram_total_bytes" and isinstance(value, (int, float)):
            rows["host ram"] = fmt_bytes(value)
        elif key == "gpus" and isinstance(value, list):
            rows["host gpus"] = ", ".join(str(as_dict(g).get("name", "?")) for g in value) or "none"
        else:
            rows[f"host {key}"] = _scalar(value)
    return rows


def parameter_rows(doc: Dict[str, Any]) -> Dict[str, str]:
    """What the run was asked to do (its params: workload and SLO included)."""
    return {key: _scalar(value) for key, value in as_dict(doc.get("params")).items()}


def _side_by_side(inputs: Sequence[figures.ReportInput], per_file: List[Dict[str, str]]) -> str:
    labels: List[str] = []
    for rows in per_file:
        labels += [k for k in rows if k not in labels]
    return _table(["", *(i.name for i in inputs)], [[k, *(r.get(k, "-") for r in per_file)] for k in labels], 99)


def _environment_html(inputs: Sequence[figures.ReportInput]) -> str:
    table = _side_by_side(inputs, [environment_rows(i.doc) for i in inputs])
    params = _side_by_side(inputs, [parameter_rows(i.doc) for i in inputs])
    table += f"<details><summary>Run parameters</summary>{params}</details>"
    files = "".join(f"<li><b>{escape(i.name)}</b>: <code>{escape(i.path)}</code></li>" for i in inputs)
    notes = ""
    for inp in inputs:
        lines = [str(n) for n in inp.doc.get("notes") or []]
        if lines:
            notes += f"<h3>Notes: {escape(inp.name)}</h3><ul>" + "".join(f"<li>{escape(n)}</li>" for n in lines)
            notes += "</ul>"
    return f'<section id="environment"><h2>Environment</h2><ul>{files}</ul>{table}{notes}</section>'


def format_figure(cell: Dict[str, Any], key: str) -> str:
    """A cell's figure as text: FIELDS decides digits; a 95 % interval is shown when FIELDS has one."""
    f = FIELDS[key]
    number = f.number(cell)
    if number is None:
        value = f.get(cell)
        if isinstance(value, list):
            return str(len(value))
        if isinstance(value, bool):
            return "yes" if value else "no"
        return "-" if value is None or isinstance(value, dict) else str(value)
    text = f"{number:,.{f.digits}f}" if abs(number) >= 100000 else f"{number:.{f.digits}f}"
    interval = figures.interval(cell, key)
    return f"{text} [{interval[0]:.{f.digits}f}, {interval[1]:.{f.digits}f}]" if interval else text


def cell_columns(cells: Sequence[Dict[str, Any]]) -> List[str]:
    """The summary columns that have a value in some cell, SLO/goodput figures included."""
    split = CELL_COLUMNS.index("ttft_p50")
    keys = list(dict.fromkeys([*CELL_COLUMNS[:split], *figures.slo_keys(), *CELL_COLUMNS[split:]]))
    return [k for k in keys if k in FIELDS and any(FIELDS[k].get(c) is not None for c in cells)]


def _cells_html(inputs: Sequence[figures.ReportInput]) -> str:
    parts = ['<section id="cells"><h2>Cells</h2>']
    for inp in inputs:
        cells = figures.all_cells(inp.doc)
        parts.append(f"<h3>{escape(inp.name)}: {len(cells)} cell(s)</h3>")
        if not cells:
            parts.append('<p class="muted">no cells</p>')
            continue
        keys = cell_columns(cells)
        header = ["cell", *(_header(k) for k in keys)]
        rows = [[str(FIELDS["label"].get(c) or "-"), *(format_figure(c, k) for k in keys)] for c in cells]
        parts.append(_table(header, rows))
        warnings = [(FIELDS["label"].get(c), w) for c in cells for w in (c.get("warnings") or [])]
        warnings += [(FIELDS["label"].get(c), FIELDS["reason"].get(c)) for c in cells if FIELDS["reason"].get(c)]
        if warnings:
            parts.append(
                '<ul class="warn">' + "".join(f"<li>{escape(str(lb))}: {escape(str(w))}</li>" for lb, w in warnings)
            )
            parts.append("</ul>")
    parts.append("</section>")
    return "".join(parts)


def _header(key: str) -> str:
    f = FIELDS[key]
    return f.label if not f.unit or f.unit in f.label else f"{f.label} {f.unit}"


def _all_figures_html(inputs: Sequence[figures.ReportInput]) -> str:
    """Every FIELDS figure of every cell, one column per cell (collapsed: it is long)."""
    parts = ['<section id="figures"><h2>All figures</h2>']
    for inp in inputs:
        cells = figures.all_cells(inp.doc)
        keys = [k for k in FIELDS if k != "label" and any(FIELDS[k].get(c) is not None for c in cells)]
        if not cells:
            continue
        header = ["figure", *(str(FIELDS["label"].get(c) or "-") for c in cells)]
        rows = [[_header(k), *(format_figure(c, k) for c in cells)] for k in keys]
        parts.append(f"<details><summary>{escape(inp.name)}: {len(keys)} figures x {len(cells)} cells</summary>")
        parts.append(_table(header, rows) + "</details>")
    parts.append("</section>")
    return "".join(parts)


def default_html_path(result: str) -> str:
    return str(Path(result).with_suffix(".html"))
