"""Charts as data (`Chart`, `Series`, `Rule`) and as inline SVG: axes with nice ticks (linear or log),
lines with markers or CDF steps, error bars, reference lines (an SLO bound, a capacity) and a legend.

Pure functions: a Chart in, an SVG string out; every text is escaped. The same Chart objects feed the
matplotlib PNGs (png.py), so both outputs show the same thing.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from html import escape
from typing import Any, Iterable, List, Optional, Sequence, Tuple

# matplotlib's tab10, so the PNGs and the page use the same colours.
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
DASHES = ("", "6 3", "2 3", "8 3 2 3")  # one per result file when several are side by side
RULE_COLOR = "#c0392b"
WIDTH = 640
PLOT_HEIGHT = 300
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 68, 20, 34, 46
LEGEND_ROW = 16
CHAR_W = 6.6  # average glyph width of the 11 px legend font, for laying out rows
MAX_CDF_POINTS = 240

Point = Tuple[float, float]


@dataclass
class Series:
    name: str
    points: List[Point]
    color: int = 0  # index into PALETTE
    dash: int = 0  # index into DASHES
    markers: bool = True
    line: bool = True  # False: markers only (e.g. the steps of a search that passed)
    errors: Optional[List[Optional[Tuple[float, float]]]] = None  # (low, high) per point, e.g. a 95 % CI


@dataclass
class Rule:
    """A reference line: axis "y" is horizontal at `value` (an SLO bound), "x" vertical (a capacity)."""

    axis: str
    value: float
    label: str
    color: str = RULE_COLOR


@dataclass
class Chart:
    key: str  # unique on the page: the element id and the PNG file name
    title: str
    x_label: str
    y_label: str
    series: List[Series]
    rules: List[Rule] = field(default_factory=list)
    x_log: bool = False
    y_log: bool = False
    y_range: Optional[Tuple[float, float]] = None  # fixed y domain (a CDF: 0..100 %)
    y_from_zero: bool = True  # linear y axes start at 0 unless values are negative

    def has_data(self) -> bool:
        return any(usable_points(s.points, self.x_log, self.y_log) for s in self.series)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "chart"


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def wants_log(values: Iterable[float], ratio: float = 20.0) -> bool:
    """A log axis helps when positive values span more than `ratio` (100 .. 100k tokens, 5 ms .. 20 s)."""
    vals = [v for v in values if finite(v)]
    return bool(vals) and min(vals) > 0 and max(vals) / min(vals) > ratio


def cdf_points(values: Iterable[float], max_points: int = MAX_CDF_POINTS) -> List[Point]:
    """Empirical CDF as a step line in percent: (x, share of values <= x); at most `max_points` steps
    (evenly spaced quantiles) so ten thousand requests do not make a huge page."""
    xs = sorted(v for v in values if finite(v))
    n = len(xs)
    if not n:
        return []
    idx = (
        list(range(n))
        if n <= max_points
        else sorted({round(i * (n - 1) / (max_points - 1)) for i in range(max_points)})
    )
    points: List[Point] = [(xs[0], 0.0)]
    prev = 0.0
    for i in idx:
        share = (i + 1) * 100.0 / n
        points += [(xs[i], prev), (xs[i], share)]
        prev = share
    return points


# -- scales ------------------------------------------------------------------------------------------
def _nice_step(raw: float) -> float:
    exp = math.floor(math.log10(raw))
    frac = raw / 10**exp
    nice = 1.0 if frac <= 1 else 2.0 if frac <= 2 else 2.5 if frac <= 2.5 else 5.0 if frac <= 5 else 10.0
    return nice * 10**exp


def linear_ticks(lo: float, hi: float, count: int = 5) -> List[float]:
    """Round tick values covering [lo, hi] (the domain is widened to the outer ticks)."""
    if hi - lo <= 0:
        pad = abs(hi) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    step = _nice_step((hi - lo) / count)
    start, stop = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(i * step, 12) for i in range(start, stop + 1)]


def log_ticks(lo: float, hi: float) -> List[float]:
    """Decades covering [lo, hi]; with 2 and 5 in between when there are few decades."""
    a, b = math.floor(math.log10(lo) + 1e-9), math.ceil(math.log10(hi) - 1e-9)
    if a == b:
        b += 1
    ticks: List[float] = []
    for e in range(a, b + 1):
        for m in (1, 2, 5) if b - a <= 2 else (1,):
            v = m * 10.0**e
            if v <= 10.0**b * (1 + 1e-9):
                ticks.append(v)
    return ticks


def fmt_tick(value: float, step: Optional[float] = None) -> str:
    a = abs(value)
    if a >= 1e6:
        return f"{value / 1e6:g}M"
    if a >= 1e4:
        return f"{value / 1e3:g}k"
    if step is not None and step < 1:
        return f"{value:.{min(6, max(0, -math.floor(math.log10(step))))}f}"
    if a >= 1 or a == 0:
        return f"{value:.0f}" if value == int(value) else f"{value:g}"
    return f"{value:.3g}"


def fmt_value(value: float) -> str:
    """A data value in a tooltip or a rule label: 3-4 significant digits."""
    a = abs(value)
    if a >= 1e5:
        return f"{value:,.0f}"
    return f"{value:.4g}" if a < 1000 else f"{value:.1f}"


@dataclass
class _Axis:
    lo: float
    hi: float
    log: bool
    ticks: List[float]
    start: float  # pixel of lo
    end: float  # pixel of hi

    def px(self, value: float) -> float:
        if self.log:
            frac = (math.log10(value) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        else:
            frac = (value - self.lo) / (self.hi - self.lo)
        return self.start + frac * (self.end - self.start)

    def label(self, value: float) -> str:
        step = None if self.log or len(self.ticks) < 2 else self.ticks[1] - self.ticks[0]
        return fmt_tick(value, step)


def _axis(values: Sequence[float], log: bool, start: float, end: float, fixed: Optional[Tuple[float, float]],
          from_zero: bool) -> _Axis:  # fmt: skip
    if fixed is not None:
        lo, hi = fixed
        return _Axis(lo, hi, False, linear_ticks(lo, hi), start, end)
    vals = [v for v in values if finite(v) and (v > 0 or not log)] or [1.0]
    lo, hi = min(vals), max(vals)
    if log:
        ticks = log_ticks(lo, hi)
        return _Axis(ticks[0], ticks[-1], True, ticks, start, end)
    if from_zero and lo > 0:
        lo = 0.0
    ticks = linear_ticks(lo, hi)
    return _Axis(ticks[0], ticks[-1], False, ticks, start, end)


def usable_points(points: Sequence[Point], x_log: bool, y_log: bool) -> List[Point]:
    return [
        (x, y)
        for x, y in points
        if finite(x) and finite(y) and (x > 0 or not x_log) and (y > 0 or not y_log)  # log axes: positives only
    ]


# -- SVG ---------------------------------------------------------------------------------------------
def _legend_rows(names: Sequence[str], width: float) -> List[List[Tuple[int, float]]]:
    """Legend items (series index, x offset) laid out in rows that fit `width`."""
    rows: List[List[Tuple[int, float]]] = [[]]
    x = 0.0
    for i, name in enumerate(names):
        w = 26 + CHAR_W * len(name) + 14
        if rows[-1] and x + w > width:
            rows.append([])
            x = 0.0
        rows[-1].append((i, x))
        x += w
    return rows if rows[0] else []


def _short(name: str, limit: int = 60) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def svg(chart: Chart) -> str:
    """The chart as one <svg class="chart"> element (responsive: scaled by its viewBox)."""
    e = escape
    series = [(s, usable_points(s.points, chart.x_log, chart.y_log)) for s in chart.series]
    names = [_short(s.name) for s, _ in series]
    plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    rows = _legend_rows(names, plot_w) if len(series) > 1 or (series and series[0][0].name) else []
    height = MARGIN_TOP + PLOT_HEIGHT + MARGIN_BOTTOM + LEGEND_ROW * len(rows) + (6 if rows else 0)
    top, bottom = MARGIN_TOP, MARGIN_TOP + PLOT_HEIGHT
    left, right = MARGIN_LEFT, WIDTH - MARGIN_RIGHT
    xs = [x for _, pts in series for x, _ in pts] + [r.value for r in chart.rules if r.axis == "x"]
    ys = [y for _, pts in series for _, y in pts] + [r.value for r in chart.rules if r.axis == "y"]
    # Error bars do not widen the axes: a wide interval (two repeats) is clipped, the data stays readable.
    xa = _axis(xs, chart.x_log, left, right, None, False)
    ya = _axis(ys, chart.y_log, bottom, top, chart.y_range, chart.y_from_zero)
    key = e(slug(chart.key))
    out = [
        f'<svg class="chart" id="chart-{key}" data-chart="{key}" xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img" '
        f'aria-label="{e(chart.title)}">',
        f"<title>{e(chart.title)}</title>",
        f'<rect class="bg" x="0" y="0" width="{WIDTH}" height="{height}" fill="#fff"/>',
        f'<text class="title" x="{left}" y="20" font-size="14" font-weight="600">{e(chart.title)}</text>',
    ]
    grid, labels = [], []
    for t in xa.ticks:
        px = xa.px(t)
        grid.append(f'<line x1="{px:.1f}" y1="{top}" x2="{px:.1f}" y2="{bottom}"/>')
        labels.append(f'<text x="{px:.1f}" y="{bottom + 16}" text-anchor="middle">{e(xa.label(t))}</text>')
    for t in ya.ticks:
        py = ya.px(t)
        grid.append(f'<line x1="{left}" y1="{py:.1f}" x2="{right}" y2="{py:.1f}"/>')
        labels.append(f'<text x="{left - 6}" y="{py + 4:.1f}" text-anchor="end">{e(ya.label(t))}</text>')
    out.append(f'<g class="grid" stroke="#e5e5e5" stroke-width="1">{"".join(grid)}</g>')
    out.append(
        f'<rect class="frame" x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" '
        'fill="none" stroke="#999"/>'
    )
    out.append(f'<g class="ticks" font-size="11" fill="#333">{"".join(labels)}</g>')
    out.append(
        f'<text class="xlabel" x="{(left + right) / 2:.1f}" y="{bottom + 36}" text-anchor="middle" '
        f'font-size="12">{e(chart.x_label)}{" (log)" if xa.log else ""}</text>'
    )
    out.append(
        f'<text class="ylabel" transform="translate(16 {(top + bottom) / 2:.1f}) rotate(-90)" text-anchor="middle" '
        f'font-size="12">{e(chart.y_label)}{" (log)" if ya.log else ""}</text>'
    )
    out.append(f'<clipPath id="clip-{key}"><rect x="{left}" y="{top - 4}" width="{right - left}" '
               f'height="{bottom - top + 8}"/></clipPath>')  # fmt: skip
    out.append(f'<g clip-path="url(#clip-{key})">')
    for i, (s, pts) in enumerate(series):
        out.append(_series_svg(i, s, pts, xa, ya))
    out.append("</g>")
    for rule in chart.rules:  # outside the clip: a label may reach into the margin
        out.append(_rule_svg(rule, xa, ya, left, right, top, bottom))
    if not any(pts for _, pts in series):
        out.append(f'<text x="{(left + right) / 2:.1f}" y="{(top + bottom) / 2:.1f}" text-anchor="middle" '
                   'fill="#888">no data</text>')  # fmt: skip
    out.append(_legend_svg(series, names, rows, left, bottom + MARGIN_BOTTOM + 4))
    out.append("</svg>")
    return "\n".join(out)


def _series_svg(i: int, s: Series, pts: List[Point], xa: _Axis, ya: _Axis) -> str:
    e = escape
    color = PALETTE[s.color % len(PALETTE)]
    dash = DASHES[s.dash % len(DASHES)]
    dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
    coords = " ".join(f"{xa.px(x):.1f},{ya.px(y):.1f}" for x, y in pts)
    parts = [f'<g class="series" data-series="{i}">']
    if len(pts) > 1 and s.line:
        parts.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="2"{dash_attr}/>')
    for j, (x, y) in enumerate(s.points if s.errors else []):
        err = s.errors[j] if s.errors and j < len(s.errors) else None
        if not err or not finite(x) or not all(finite(v) and (v > 0 or not ya.log) for v in err):
            continue
        px, lo, hi = xa.px(x), ya.px(err[0]), ya.px(err[1])
        parts.append(
            f'<path class="errorbar" d="M{px:.1f},{lo:.1f}V{hi:.1f}M{px - 4:.1f},{lo:.1f}h8M{px - 4:.1f},{hi:.1f}h8" '
            f'stroke="{color}" fill="none"/>'
        )
    if s.markers or len(pts) == 1 or not s.line:
        for x, y in pts:
            tip = f"{s.name}: {fmt_value(x)}, {fmt_value(y)}"
            parts.append(
                f'<circle cx="{xa.px(x):.1f}" cy="{ya.px(y):.1f}" r="3.2" fill="{color}"><title>{e(tip)}</title>'
                "</circle>"
            )
    parts.append("</g>")
    return "".join(parts)


def _rule_svg(rule: Rule, xa: _Axis, ya: _Axis, left: float, right: float, top: float, bottom: float) -> str:
    e = escape
    if rule.axis == "x":
        if not finite(rule.value) or (xa.log and rule.value <= 0):
            return ""
        px = xa.px(rule.value)
        line = f'<line x1="{px:.1f}" y1="{top}" x2="{px:.1f}" y2="{bottom}"/>'
        # The label beside the line, on the side with room for it.
        room = right - px > CHAR_W * len(rule.label) + 8
        anchor = f'x="{px + 4:.1f}"' if room else f'x="{px - 4:.1f}" text-anchor="end"'
        text = f'<text {anchor} y="{top + 12}" font-size="11">{e(rule.label)}</text>'
    else:
        if not finite(rule.value) or (ya.log and rule.value <= 0):
            return ""
        py = ya.px(rule.value)
        line = f'<line x1="{left}" y1="{py:.1f}" x2="{right}" y2="{py:.1f}"/>'
        ty = py - 4 if py - top > 14 else py + 13  # above the line unless it runs along the top
        text = f'<text x="{right - 4}" y="{ty:.1f}" text-anchor="end" font-size="11">{e(rule.label)}</text>'
    return (
        f'<g class="rule" stroke="{rule.color}" fill="{rule.color}" stroke-width="1.5">'
        f'<g stroke-dasharray="5 4">{line}</g><g stroke="none">{text}</g></g>'
    )


def _legend_svg(
    series: List[Tuple[Series, List[Point]]], names: List[str], rows: List[List[Tuple[int, float]]], x0: float,
    y0: float,
) -> str:  # fmt: skip
    if not rows:
        return ""
    e = escape
    parts = ['<g class="legend" font-size="11">']
    for r, row in enumerate(rows):
        y = y0 + r * LEGEND_ROW
        for i, dx in row:
            s = series[i][0]
            color = PALETTE[s.color % len(PALETTE)]
            dash = DASHES[s.dash % len(DASHES)]
            dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
            parts.append(
                f'<g class="legend-item" data-series="{i}" tabindex="0"><title>{e(s.name)} (click: hide/show)</title>'
                f'<line x1="{x0 + dx:.1f}" y1="{y:.1f}" x2="{x0 + dx + 20:.1f}" y2="{y:.1f}" stroke="{color}" '
                f'stroke-width="2"{dash_attr}/><text x="{x0 + dx + 26:.1f}" y="{y + 4:.1f}">{e(names[i])}</text></g>'
            )
    parts.append("</g>")
    return "".join(parts)
