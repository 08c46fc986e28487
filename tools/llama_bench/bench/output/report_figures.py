"""What `llama-bench report` draws: result documents in, `Chart`s out (shared by the HTML page and the PNGs).

Cell figures are read through summary.FIELDS only (`Field.number`, and `Field.ci` for the 95 % interval
over repeats, drawn as error bars); SLO figures are found by key (`*goodput*`, `slo_*`), so ones added to
FIELDS later show up too; the load axis is whichever of `rate`, `concurrency`, `prompt_size` varies most.
Per-request records, `metrics_series`, `slots_series` and `capacity` (capacity.py's curve) are read
tolerantly: what is missing or malformed is left out, never an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from ...utils import as_dict
from ..plan import CellStatus
from ..summary import FIELDS
from .charts import Chart, Rule, Series, cdf_points, finite, fmt_value, wants_log
from .results import load_result

LOAD_KEYS = ("rate", "concurrency", "prompt_size")  # x axis candidates (FIELDS keys); on a tie the first wins
AXIS_LABELS = {"prompt_size": "prompt tokens", "concurrency": "concurrency", "rate": "offered request rate (req/s)"}
GROUP_FORMATS = {"prompt_size": "p{:g}", "concurrency": "c{:g}", "rate": "{:g} req/s"}
CDF_METRICS = (
    ("ttft", "TTFT", "ttft_ms"),
    ("tpot", "TPOT", "tpot_ms"),
    ("itl", "ITL", "itl_ms"),
    ("e2e", "E2E", "e2e_ms"),
)
LATENCY_METRICS = (("ttft", "TTFT"), ("tpot", "TPOT"), ("itl", "ITL"), ("e2e", "E2E"))
SERVER_GEN = (("tokens_predicted_total", "gen tok/s"),)
SERVER_PROMPT = (("prompt_tokens_total", "prompt tok/s"),)
RATE_WINDOW_S = 1.0
SERVER_GAUGES = (
    ("requests_processing", "requests processing"),
    ("requests_deferred", "requests deferred"),
    ("n_busy_slots_per_decode", "busy slots per decode"),
)
GREY = "#888888"
MAX_CELL_RULES = 10  # cell boundaries marked on time charts (one result only; more would clutter)
_BOUND = re.compile(r"^\s*(ttft|tpot|itl|e2e)_?p(\d+(?:\.\d+)?)\s*[=<:]+\s*(\d+(?:\.\d+)?)\s*(ms|s)?\s*$", re.I)


@dataclass
class ReportInput:
    name: str  # legend and column name
    path: str
    doc: Dict[str, Any]


def load_inputs(paths: Sequence[str]) -> List[ReportInput]:
    """Each result through load_result (which validates its structure); names unique and short."""
    docs = [load_result(p) for p in paths]
    return [ReportInput(n, p, d) for n, p, d in zip(_names(paths), paths, docs)]


def _names(paths: Sequence[str]) -> List[str]:
    for names in ([Path(p).stem for p in paths], [f"{Path(p).parent.name}/{Path(p).stem}" for p in paths]):
        if len(set(names)) == len(names):
            return names
    return [f"{i + 1}:{Path(p).stem}" for i, p in enumerate(paths)]


# -- cells -------------------------------------------------------------------------------------------
def all_cells(doc: Dict[str, Any]) -> List[Dict[str, Any]]:
    return [c for c in doc.get("cells") or [] if isinstance(c, dict)]


def measured_cells(doc: Dict[str, Any]) -> List[Dict[str, Any]]:
    return [c for c in all_cells(doc) if FIELDS["status"].get(c) not in (CellStatus.SKIPPED, CellStatus.NOT_RUN)]


def load_cells(doc: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Measured cells that are not steps of a capacity search (those have their own section and axis)."""
    return [c for c in measured_cells(doc) if not c.get("step")]


def slo_keys() -> List[str]:
    """SLO figures of a cell (goodput, share within the SLO), as FIELDS names them."""
    return [k for k in FIELDS if "goodput" in k or k.startswith("slo_")]


def interval(cell: Dict[str, Any], key: str) -> Optional[Tuple[float, float]]:
    """The figure's 95 % confidence interval over repeats (Field.ci), None without repeats."""
    ci = getattr(FIELDS[key], "ci", None)  # Field.ci arrives with --repeats; older builds have none
    found = as_dict(ci(cell)) if callable(ci) else {}
    lo, hi = _number(found.get("low")), _number(found.get("high"))
    return (lo, hi) if lo is not None and hi is not None else None


def _unit(key: str) -> str:
    if key in FIELDS:
        return FIELDS[key].unit
    return "tok/s" if "tok" in key else "req/s" if "req" in key or "rps" in key else ""


def _label(key: str) -> str:
    return FIELDS[key].label if key in FIELDS else key.replace("_", " ")


# -- SLO bounds --------------------------------------------------------------------------------------
def _bound_key(metric: Any, percentile: Any) -> Optional[str]:
    pct = _number(float(percentile) if isinstance(percentile, str) else percentile)  # "99" from a spec text
    key = f"{metric}_p{pct:g}" if pct is not None else None
    return key if key and re.fullmatch(r"(ttft|tpot|itl|e2e)_p\d+(\.\d+)?", key) else None


def slo_bounds(doc: Dict[str, Any]) -> Dict[str, float]:
    """The SLO of a result as {"ttft_p99": 2000.0 (ms), ...}: slo.py's {"spec", "terms": [{"metric",
    "percentile", "bound_ms"}]} (or the spec text "ttft_p99=2s,tpot_p50=80ms"), from capacity.slo, slo,
    params.slo or a cell's slo, whichever is there first."""
    cell_slo = next((c["slo"] for c in all_cells(doc) if isinstance(c.get("slo"), dict)), None)
    for raw in (as_dict(doc.get("capacity")).get("slo"), doc.get("slo"), as_dict(doc.get("params")).get("slo"),
                cell_slo):  # fmt: skip
        bounds: Dict[str, float] = {}
        terms = as_dict(raw).get("terms")
        for term in terms if isinstance(terms, list) else []:
            term = as_dict(term)
            key, ms = _bound_key(term.get("metric"), term.get("percentile")), _number(term.get("bound_ms"))
            if key and ms is not None:
                bounds[key] = ms
        spec = raw if isinstance(raw, str) else as_dict(raw).get("spec")
        for part in spec.split(",") if not bounds and isinstance(spec, str) else []:
            m = _BOUND.match(part)
            key = _bound_key(m.group(1).lower(), m.group(2)) if m else None
            if m and key:
                bounds[key] = float(m.group(3)) * (1000.0 if (m.group(4) or "ms").lower() == "s" else 1.0)
        if bounds:
            return bounds
    return {}


def _bound_rules(inputs: Sequence[ReportInput], keys: Iterable[str], axis: str = "y") -> List[Rule]:
    """A line per SLO bound among `keys`; named after its result when several results have an SLO."""
    per_input = [(inp, slo_bounds(inp.doc)) for inp in inputs]
    several = len([b for _, b in per_input if b]) > 1
    rules: List[Rule] = []
    for inp, bounds in per_input:
        for key, ms in bounds.items():
            if key in keys:
                label = f"SLO {key.replace('_', ' ')} ≤ {fmt_value(ms)} ms"
                rules.append(Rule(axis, ms, _join(inp.name if several else "", label)))
    return rules


# -- figures against load (concurrency, rate, prompt size) -----------------------------------------
def dimensions(cells: Sequence[Dict[str, Any]]) -> Tuple[str, List[str]]:
    """The x axis (the load dimension with the most distinct values) and the other dimensions that vary."""
    keys = [k for k in LOAD_KEYS if k in FIELDS]
    counts = {k: len({FIELDS[k].number(c) for c in cells} - {None}) for k in keys}
    x_key = max(keys, key=lambda k: counts[k])
    return x_key, [k for k in keys if k != x_key and counts[k] > 1]


def _group(cell: Dict[str, Any], group_keys: Sequence[str]) -> Tuple[float, ...]:
    return tuple(FIELDS[k].number(cell) or 0.0 for k in group_keys)


def _group_label(group: Tuple[float, ...], group_keys: Sequence[str]) -> str:
    return " ".join(GROUP_FORMATS[k].format(v) for k, v in zip(group_keys, group))


def _join(*parts: str) -> str:
    return " · ".join(p for p in parts if p)


def _vs_load(key: str, title: str, field_keys: Sequence[str], inputs: Sequence[ReportInput],
             rules: Optional[List[Rule]] = None, log_y: bool = False) -> Optional[Chart]:  # fmt: skip
    per_input = [(inp, load_cells(inp.doc)) for inp in inputs]
    cells = [c for _, cs in per_input for c in cs]
    field_keys = [k for k in field_keys if k in FIELDS and any(FIELDS[k].number(c) is not None for c in cells)]
    if not cells or not field_keys:
        return None
    x_key, group_keys = dimensions(cells)
    groups = sorted({_group(c, group_keys) for c in cells})
    series: List[Series] = []
    for fi, (inp, cs) in enumerate(per_input):
        for gi, group in enumerate(groups):
            members = sorted(
                (c for c in cs if _group(c, group_keys) == group), key=lambda c: FIELDS[x_key].number(c) or 0
            )
            for ki, fkey in enumerate(field_keys):
                points, errors = [], []
                for c in members:
                    x, y = FIELDS[x_key].number(c), FIELDS[fkey].number(c)
                    if x is not None and y is not None:
                        points.append((x, y))
                        errors.append(interval(c, fkey))
                if not points:
                    continue
                name = _join(
                    inp.name if len(inputs) > 1 else "",
                    _group_label(group, group_keys) if len(groups) > 1 else "",
                    _label(fkey) if len(field_keys) > 1 else "",
                )
                series.append(
                    Series(
                        name or _label(fkey),
                        points,
                        color=gi * len(field_keys) + ki,
                        dash=fi,
                        errors=errors if any(errors) else None,
                    )
                )
    units = {_unit(k) for k in field_keys}
    chart = Chart(
        key,
        title,
        AXIS_LABELS[x_key],
        " / ".join(sorted(u for u in units if u)) or "share",
        series,
        rules or [],
        x_log=wants_log([x for s in series for x, _ in s.points]),
        y_log=log_y and wants_log([y for s in series for _, y in s.points], 50.0),
    )
    return chart if chart.has_data() else None


def load_charts(inputs: Sequence[ReportInput]) -> Tuple[List[Chart], List[Chart]]:
    """(throughput and goodput charts, latency charts) against the load dimension."""
    slo = slo_keys()
    tok = [k for k in slo if FIELDS[k].unit == "tok/s"]
    req = [k for k in slo if FIELDS[k].unit == "req/s"]
    other = [k for k in slo if k not in tok and k not in req]
    throughput = [
        _vs_load("gen-tps", "Generation tok/s" + (" and goodput" if tok else ""), ["gen_tps", *tok], inputs),
        _vs_load("prompt-tps", "Prompt tok/s", ["prompt_tps"], inputs),
        _vs_load("requests", "Requests/s" + (" and goodput" if req else ""), ["requests_per_s", *req], inputs),
        _vs_load("slo", "Within the SLO", other, inputs),
        _vs_load("energy", "Generated tokens per joule", ["gen_tokens_per_j"], inputs),
    ]
    latency = []
    loaded = [inp for inp in inputs if load_cells(inp.doc)]  # a capacity search's SLO belongs to its section
    for metric, label in LATENCY_METRICS:
        bounds = [k for inp in loaded for k in slo_bounds(inp.doc) if k.startswith(metric + "_")]
        keys = list(dict.fromkeys([f"{metric}_p50", f"{metric}_p99", *bounds]))
        rules = _bound_rules(loaded, keys)
        latency.append(_vs_load(f"{metric}-load", f"{label} percentiles", keys, inputs, rules, log_y=True))
    return [c for c in throughput if c], [c for c in latency if c]


# -- latency distributions ---------------------------------------------------------------------------
def _records_by_cell(doc: Dict[str, Any]) -> Dict[str, List[Dict[str, Any]]]:
    out: Dict[str, List[Dict[str, Any]]] = {str(FIELDS["label"].get(c)): [] for c in measured_cells(doc)}
    for rec in doc.get("requests") or []:
        if isinstance(rec, dict) and rec.get("ok") is True and not rec.get("warmup") and str(rec.get("cell")) in out:
            out[str(rec.get("cell"))].append(rec)
    return out


def _values(records: Iterable[Dict[str, Any]], name: str) -> List[float]:
    vals: List[float] = []
    for rec in records:
        value = rec.get(name)
        items = value if isinstance(value, list) else [value]
        vals += [n for v in items for n in [_number(v)] if n is not None]
    return vals


def cdf_charts(inputs: Sequence[ReportInput]) -> List[Chart]:
    """One CDF chart per latency metric; a line per cell (and per result)."""
    by_input = [(inp, _records_by_cell(inp.doc)) for inp in inputs]
    labels = list(dict.fromkeys(lb for _, cells in by_input for lb in cells))
    charts = []
    for metric, label, name in CDF_METRICS:
        series: List[Series] = []
        for fi, (inp, cells) in enumerate(by_input):
            for lb, records in cells.items():
                points = cdf_points(_values(records, name))
                if points:
                    n = len(_values(records, name))
                    title = _join(inp.name if len(inputs) > 1 else "", lb, f"n={n}")
                    series.append(Series(title, points, color=labels.index(lb), dash=fi, markers=False))
        if not series:
            continue
        keys = [k for inp in inputs for k in slo_bounds(inp.doc) if k.startswith(metric + "_")]
        rules = _bound_rules(inputs, keys, axis="x")
        for key in dict.fromkeys(keys):
            pct = float(key.split("_p", 1)[1])
            rules.append(Rule("y", pct, f"p{fmt_value(pct)}", GREY))
        xs = [x for s in series for x, _ in s.points]
        chart = Chart(f"{metric}-cdf", f"{label} distribution", f"{label} (ms)", "% of requests ≤ x", series, rules,
                      x_log=wants_log(xs, 50.0), y_range=(0.0, 100.0))  # fmt: skip
        if chart.has_data():
            charts.append(chart)
    return charts


# -- capacity ----------------------------------------------------------------------------------------
def _number(value: Any) -> Optional[float]:
    return float(value) if not isinstance(value, bool) and finite(value) else None


def _step_figure(step: Dict[str, Any], key: str) -> Optional[float]:
    """A step's figure: through FIELDS when the step is shaped like a cell, else its flat key."""
    value = FIELDS[key].number(step) if key in FIELDS else None
    return value if value is not None else _number(step.get(key))


def capacity_of(doc: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """A result's capacity search (capacity.py's `capacity`): {"by", "unit", "steps": [(x, step)], "value",
    "low", "high", "outcome"}; None without a curve."""
    cap = as_dict(doc.get("capacity"))
    steps = next((cap[k] for k in ("curve", "steps", "points") if isinstance(cap.get(k), list)), None)
    if not steps:
        return None
    by = "concurrency" if str(cap.get("by")) == "concurrency" else "rate"
    x_keys = ("value", "concurrency") if by == "concurrency" else ("value", "rate", "request_rate")
    points = []
    for step in steps:
        step = as_dict(step)
        x = next((v for v in (_step_figure(step, k) for k in x_keys) if v is not None), None)
        if x is not None:
            points.append((x, step))
    found = as_dict(cap.get("capacity"))  # a number, or {"value", "low", "high"}
    value = _number(found.get("value")) if found else _number(cap.get("capacity"))
    low = _number(found.get("low", cap.get("lower", cap.get("low"))))
    high = _number(found.get("high", cap.get("upper", cap.get("high"))))
    unit = str(cap.get("unit") or ("concurrent requests" if by == "concurrency" else "req/s"))
    return {"by": by, "unit": unit, "steps": sorted(points, key=lambda p: p[0]), "value": value, "low": low,
            "high": high, "outcome": cap.get("outcome")}  # fmt: skip


def capacity_summary(inputs: Sequence[ReportInput]) -> Optional[str]:
    lines = []
    for inp in inputs:
        cap = capacity_of(inp.doc)
        if cap is None:
            continue
        found = "not found" if cap["value"] is None else f"{fmt_value(cap['value'])} {cap['unit']}"
        if cap["low"] is not None and cap["high"] is not None:
            found += f" (between {fmt_value(cap['low'])} and {fmt_value(cap['high'])})"
        if cap["outcome"]:
            found += f", outcome {cap['outcome']}"
        bounds = ", ".join(f"{k} ≤ {fmt_value(v)} ms" for k, v in slo_bounds(inp.doc).items()) or "no SLO recorded"
        lines.append(f"{inp.name}: capacity {found}; {len(cap['steps'])} steps; SLO {bounds}")
    return "; ".join(lines) or None


def _slo_value(step: Dict[str, Any], key: str) -> Optional[float]:
    """The SLO's own percentile of a step (from arrival, failed requests counted) when stored, else FIELDS'."""
    own = _number(as_dict(step.get("slo_values_ms")).get(key))
    return own if own is not None else _step_figure(step, key)


def capacity_charts(inputs: Sequence[ReportInput]) -> List[Chart]:
    """The curve: latency against the load searched with the SLO bounds and the capacity found (steps that
    passed and failed marked), and throughput with goodput."""
    caps = [(inp, cap) for inp in inputs for cap in [capacity_of(inp.doc)] if cap is not None]
    if not caps:
        return []
    x_label = "concurrency" if caps[0][1]["by"] == "concurrency" else "offered request rate (req/s)"
    bounds = list(dict.fromkeys(k for inp, _ in caps for k in slo_bounds(inp.doc)))
    lat_keys = bounds or ["ttft_p50", "ttft_p99", "tpot_p50", "tpot_p99"]
    step_keys = {k for _, cap in caps for _, step in cap["steps"] for k in step}
    good = list(dict.fromkeys([*slo_keys(), *sorted(k for k in step_keys if "goodput" in k)]))
    req = [k for k in ["requests_per_s", *good] if _unit(k) == "req/s"]
    tok = [k for k in ["gen_tps", *good] if _unit(k) == "tok/s"]
    charts = []
    for key, title, y_label, keys in (
        ("capacity-latency", "Capacity: latency vs load, with the SLO", "ms", lat_keys),
        ("capacity-req", "Capacity: requests/s and goodput", "req/s", req),
        ("capacity-tok", "Capacity: gen tok/s and goodput", "tok/s", tok),
    ):
        latency = key == "capacity-latency"
        series: List[Series] = []
        rules = _bound_rules(inputs, keys) if latency else []
        for fi, (inp, cap) in enumerate(caps):
            who = inp.name if len(caps) > 1 else ""
            figure = _slo_value if latency else _step_figure
            for ki, fkey in enumerate(keys):
                points = [(x, y) for x, step in cap["steps"] for y in [figure(step, fkey)] if y is not None]
                if points:
                    series.append(Series(_join(who, _label(fkey)), points, ki, fi))
            if latency and keys:
                for passed, name, color in ((True, "step passed", 2), (False, "step failed", 3)):
                    marks = [(x, y) for x, step in cap["steps"] if step.get("passed") is passed
                             for y in [figure(step, keys[0])] if y is not None]  # fmt: skip
                    if marks:
                        series.append(Series(_join(who, name), marks, color, fi, line=False))
            if cap["value"] is not None:
                rules.append(Rule("x", cap["value"], _join(who, f"capacity {fmt_value(cap['value'])}"), "#2c3e50"))
        log_y = latency and wants_log([y for s in series for _, y in s.points], 50.0)
        chart = Chart(key, title, x_label, y_label, series, rules, y_log=log_y)
        if chart.has_data():
            charts.append(chart)
    return charts


# -- over time: /metrics and /slots ------------------------------------------------------------------
def _samples(raw: Any) -> List[Tuple[float, Optional[str], Dict[str, Any]]]:
    """(t, cell, values) of a series; a sample carries its values under "values" or flat."""
    out = []
    for sample in raw if isinstance(raw, list) else []:
        sample = as_dict(sample)
        t = _number(sample.get("t"))
        values = as_dict(sample.get("values")) or {k: v for k, v in sample.items() if k not in ("t", "cell")}
        if t is not None:
            cell = sample.get("cell")
            out.append((t, str(cell) if cell is not None else None, values))
    return sorted(out, key=lambda s: s[0])


def _cell_rules(samples: Sequence[Tuple[float, Optional[str], Dict[str, Any]]]) -> List[Rule]:
    starts: Dict[str, float] = {}
    for t, cell, _ in samples:
        if cell and cell not in starts:
            starts[cell] = t
    return [Rule("x", t, cell, GREY) for cell, t in starts.items()] if len(starts) <= MAX_CELL_RULES else []


def _rate_points(
    samples: Sequence[Tuple[float, Optional[str], Dict[str, Any]]], name: str
) -> List[Tuple[float, float]]:
    """A counter's rate at each sample, over the last RATE_WINDOW_S (or the sample before, when sampled
    more slowly): llama-server updates its counters per request, so shorter windows are all spikes."""
    counter = [(t, v) for t, _, values in samples for v in [_number(values.get(name))] if v is not None]
    points = []
    start = 0
    for i in range(1, len(counter)):
        t, v = counter[i]
        if v < counter[i - 1][1]:  # the server restarted its counters
            start = i
            continue
        while start + 1 < i and t - counter[start + 1][0] >= RATE_WINDOW_S:
            start += 1
        t0, v0 = counter[start]
        if t > t0:
            points.append((t, (v - v0) / (t - t0)))
    return points


def time_charts(inputs: Sequence[ReportInput]) -> List[Chart]:
    metrics = [(inp, _samples(inp.doc.get("metrics_series"))) for inp in inputs]
    slots = [(inp, _samples(inp.doc.get("slots_series"))) for inp in inputs]
    one = len(inputs) == 1
    charts = []

    def series_of(per_input: Sequence[Tuple[ReportInput, Any]], names: Sequence[Tuple[str, str]], rate: bool,
                  percent: bool = False) -> List[Series]:  # fmt: skip
        out = []
        for fi, (inp, samples) in enumerate(per_input):
            for ni, (name, label) in enumerate(names):
                if rate:
                    points = _rate_points(samples, name)
                else:
                    points = [(t, v) for t, _, vals in samples for v in [_number(vals.get(name))] if v is not None]
                    if percent and points and max(v for _, v in points) <= 1.0:  # a fraction: show it in %
                        points = [(t, v * 100.0) for t, v in points]
                if points:
                    out.append(Series(_join("" if one else inp.name, label), points, color=ni, dash=fi, markers=False))
        return out

    rules = _cell_rules(metrics[0][1]) if one else []
    slot_keys = list(
        dict.fromkeys(k for _, ss in slots for _, _, vals in ss for k, v in vals.items() if _number(v) is not None)
    )
    # Three scales: a share (context fill), token counts, slot counts.
    fill = [(k, k.replace("_", " ") + " %") for k in slot_keys if "fill" in k]
    tokens = [(k, k.replace("_", " ")) for k in slot_keys if "fill" not in k and ("ctx" in k or "decoded" in k)]
    count = [(k, k.replace("_", " ")) for k in slot_keys if k not in {name for name, _ in fill + tokens}]
    for key, title, y_label, series, chart_rules in (
        (
            "server-gen",
            "Server generation tok/s (/metrics, 1 s window)",
            "tok/s",
            series_of(metrics, SERVER_GEN, True),
            rules,
        ),
        (
            "server-prompt",
            "Server prompt tok/s (/metrics, 1 s window)",
            "tok/s",
            series_of(metrics, SERVER_PROMPT, True),
            rules,
        ),
        ("server-load", "Server requests (from /metrics)", "requests", series_of(metrics, SERVER_GAUGES, False), rules),
        (
            "slots-busy",
            "/slots over time",
            "slots",
            series_of(slots, count, False),
            _cell_rules(slots[0][1]) if one else [],
        ),
        ("slots-fill", "/slots context fill", "%", series_of(slots, fill, False, percent=True), []),
        ("slots-tokens", "/slots tokens in use", "tokens", series_of(slots, tokens, False), []),
    ):
        chart = Chart(key, title, "t (s)", y_label, series, chart_rules)
        if chart.has_data():
            charts.append(chart)
    return charts
