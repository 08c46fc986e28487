"""Arguments of `llama-bench report` and their translation into ReportParams (argparse only: the page
and chart code is imported when the command runs, so `llama-bench --help` stays fast)."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    """Add `report` to llama-bench's subparsers."""
    r = subparsers.add_parser(
        "report",
        help="an HTML report (self-contained: charts, tables, environment) of one or more --json-out results",
        description="One self-contained HTML page (no network) of one or more --json-out results side by side: "
        "environment, per-cell tables, throughput and goodput vs load, latency percentiles and CDFs, the "
        "capacity curve with the SLO, server metrics over time. --png writes the same charts as images.",
    )
    r.add_argument("results", nargs="+", metavar="RESULT.json", help="results written by --json-out")
    r.add_argument("--html", metavar="OUT.html", help="the page (default: the first RESULT with .html)")
    r.add_argument(
        "--png",
        metavar="DIR_OR_PREFIX",
        help="also the charts as PNG files: DIR/<chart>.png or PREFIX-<chart>.png (needs: pip install matplotlib)",
    )
    r.set_defaults(handler=_report)


def _report(args: argparse.Namespace) -> int:
    from ..outputs import HTML_MARKER, derived_output, output_path
    from .output.html import ReportParams, default_html_path, report
    from .output.png import png_target

    png = png_target(args.png) if args.png is not None else None
    # Paths are checked before anything is read or drawn; a name we make up never replaces a user's file.
    if args.html is not None or png is not None:
        html = output_path(args.html, "--html")
    else:
        html = derived_output(default_html_path(args.results[0]), "--html", HTML_MARKER)
    return report(ReportParams(results=list(args.results), html=html, png=png))
