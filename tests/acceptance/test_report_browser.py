"""`llama-bench report` in a real headless browser (Debian's chromium, which .ci/run installs): the page
loads from a file with no console error, no exception and no network request, every chart has a non-zero
size and draws its series, the legend toggles a series; a full-page screenshot is kept as a CI artifact
in the state directory ($LLAMA_STUDIO_STATE_DIR/artifacts/).

The browser is driven over the Chrome DevTools Protocol (a websocket, through aiohttp): console and log
entries, exceptions and requests are collected as events while the page loads."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

from tests.unit.test_report_html import (
    BASE_CHARTS,
    NEW_CHARTS,
    SLOTS_CHARTS,
    benchmark_results,
    chart_ids,
    report_cli,
    slo_results,
)

# The session's state directory (the per-test one of conftest.py replaces it while a test runs).
SESSION_STATE = os.environ.get("LLAMA_STUDIO_STATE_DIR")
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
STEP_TIMEOUT = 60.0  # any one browser step (start, command, page load); a CI machine may be slow
CHART_JS = """JSON.stringify(Array.from(document.querySelectorAll("svg.chart")).map(function (el) {
  var r = el.getBoundingClientRect();
  var marks = Array.from(el.querySelectorAll(".series polyline, .series circle")).filter(function (m) {
    var b = m.getBoundingClientRect(); return b.width > 0 || b.height > 0; });
  return {id: el.id, width: r.width, height: r.height, series: el.querySelectorAll(".series").length,
          drawn: marks.length};
}))"""
LEGEND_JS = """(function () {
  var item = document.querySelector("svg.chart .legend-item");
  if (!item) { return false; }
  var series = item.closest("svg").querySelector('.series[data-series="' + item.getAttribute("data-series") + '"]');
  item.dispatchEvent(new MouseEvent("click", {bubbles: true}));
  var hidden = getComputedStyle(series).display === "none";
  item.dispatchEvent(new MouseEvent("click", {bubbles: true}));
  return hidden && getComputedStyle(series).display !== "none";
})()"""


def browser() -> Optional[str]:
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


@dataclass
class PageReport:
    errors: List[str] = field(default_factory=list)  # console errors, exceptions, error log entries
    requests: List[str] = field(default_factory=list)
    charts: List[Dict[str, Any]] = field(default_factory=list)
    legend_toggles: bool = False
    screenshot: bytes = b""


@contextmanager
def headless(binary: str, profile: Path) -> Iterator[str]:
    """A headless chromium on a free port; yields its DevTools websocket URL; stopped (its own process
    group) at the end."""
    log = profile.parent / "chromium.log"
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.Popen(
            [
                binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-extensions", "--no-first-run", "--no-default-browser-check", "--mute-audio",
                f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank",
            ],
            stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + STEP_TIMEOUT
        while not (port_file.is_file() and len(port_file.read_text(encoding="utf-8").split()) >= 2):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(encoding="utf-8", errors="replace")[-2000:]
                raise AssertionError(f"chromium did not start (exit {proc.poll()}):\n{tail}")
            time.sleep(0.1)
        port, path = port_file.read_text(encoding="utf-8").split()[:2]
        yield f"ws://127.0.0.1:{port}{path}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


class Cdp:
    """Commands and events over one DevTools websocket (flat sessions: one socket for every target)."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.next_id = 0
        self.pending: Dict[int, "asyncio.Future[Dict[str, Any]]"] = {}
        self.events: List[Dict[str, Any]] = []
        self.arrived = asyncio.Event()
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        import aiohttp

        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            future = self.pending.pop(data["id"], None) if "id" in data else None
            if future is not None and not future.done():
                future.set_result(data)
            elif "method" in data:
                self.events.append(data)
                self.arrived.set()

    async def send(self, method: str, params: Optional[Dict[str, Any]] = None, session: Optional[str] = None) -> Any:
        self.next_id += 1
        message: Dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        future = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = future
        await self.ws.send_str(json.dumps(message))
        answer = await asyncio.wait_for(future, STEP_TIMEOUT)
        assert "error" not in answer, f"{method}: {answer['error']}"
        return answer.get("result", {})

    async def wait_for(self, method: str) -> Dict[str, Any]:
        deadline = time.monotonic() + STEP_TIMEOUT
        while True:
            found = next((e for e in self.events if e["method"] == method), None)
            if found is not None:
                return found
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), max(0.01, deadline - time.monotonic()))

    async def evaluate(self, session: str, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                      "returnByValue": True}, session)  # fmt: skip
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")


def _errors(events: List[Dict[str, Any]]) -> List[str]:
    out = []
    for event in events:
        params = event.get("params", {})
        if event["method"] == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            out.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
        elif event["method"] == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            what = details.get("exception", {}).get("description") or details.get("text")
            out.append(f"exception: {what} (line {details.get('lineNumber')})")
        elif event["method"] == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            out.append(f"log: {params['entry'].get('text')} ({params['entry'].get('url', '')})")
    return out


async def inspect(ws_url: str, page_url: str) -> PageReport:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(ws_url, max_msg_size=0, timeout=aiohttp.ClientWSTimeout(ws_close=5)) as ws:
            cdp = Cdp(ws)
            try:
                target = await cdp.send("Target.createTarget", {"url": "about:blank"})
                attached = await cdp.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
                sid = attached["sessionId"]
                for domain in ("Runtime", "Log", "Page", "Network"):
                    await cdp.send(f"{domain}.enable", {}, sid)
                metrics = {"width": 1360, "height": 900, "deviceScaleFactor": 1, "mobile": False}
                await cdp.send("Emulation.setDeviceMetricsOverride", metrics, sid)
                nav = await cdp.send("Page.navigate", {"url": page_url}, sid)
                assert not nav.get("errorText"), nav
                await cdp.wait_for("Page.loadEventFired")
                # Two frames: layout is done and anything the page's script does has happened.
                await cdp.evaluate(sid, "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
                page = PageReport()
                page.charts = json.loads(await cdp.evaluate(sid, CHART_JS))
                page.legend_toggles = bool(await cdp.evaluate(sid, LEGEND_JS))
                size = (await cdp.send("Page.getLayoutMetrics", {}, sid))["cssContentSize"]
                clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 16000), "scale": 1}
                shot = await cdp.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                                 "clip": clip}, sid)  # fmt: skip
                page.screenshot = base64.b64decode(shot["data"])
                page.errors = _errors(cdp.events)
                page.requests = [
                    e["params"]["request"]["url"] for e in cdp.events if e["method"] == "Network.requestWillBeSent"
                ]
                return page
            finally:
                cdp.reader.cancel()


def artifact_dir(tmp_path: Path) -> Path:
    """$LLAMA_STUDIO_STATE_DIR/artifacts of the test run (CI keeps it); a temp folder when unset."""
    folder = Path(SESSION_STATE) / "artifacts" if SESSION_STATE else tmp_path / "artifacts"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def problems(page: PageReport, page_url: str, expected: List[str]) -> List[str]:
    """What the browser saw that a report must not have; [] when the page is right."""
    found = list(page.errors)
    found += [f"network request: {u}" for u in page.requests if u != page_url and not u.startswith("data:")]
    ids = [c["id"] for c in page.charts]
    if ids != [f"chart-{i}" for i in expected]:
        found.append(f"charts on the page {ids} are not the charts written {expected}")
    for chart in page.charts:
        if not (chart["width"] > 100 and chart["height"] > 100):
            found.append(f"{chart['id']} renders at {chart['width']:.0f} x {chart['height']:.0f} px")
        elif chart["series"] == 0 or chart["drawn"] == 0:
            found.append(f"{chart['id']} draws no series")
    if not page.legend_toggles:
        found.append("a legend entry does not hide and show its series")
    if not (page.screenshot.startswith(b"\x89PNG") and len(page.screenshot) > 10000):
        found.append("no screenshot")
    return found


@pytest.fixture(scope="module")
def devtools(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One headless chromium for the module: its DevTools websocket URL."""
    binary = browser()
    if binary is None:
        pytest.skip("no chromium binary on PATH (CI installs Debian's chromium: apt-get install chromium)")
    with headless(binary, tmp_path_factory.mktemp("chromium") / "profile") as ws_url:
        yield ws_url


def load(ws_url: str, page: Path) -> PageReport:
    return asyncio.run(asyncio.wait_for(inspect(ws_url, page.resolve().as_uri()), 4 * STEP_TIMEOUT))


@pytest.fixture
def report_page(tmp_path: Path) -> Path:
    """`llama-bench report` of three real results of the fake server side by side: a benchmark, a
    benchmark with --slo and a capacity search (every section of the page)."""
    paths = [*benchmark_results(tmp_path, slots=(2,)), *slo_results(tmp_path)]
    page = tmp_path / "report.html"
    res = report_cli(*map(str, paths), "--html", str(page))
    assert res.returncode == 0, res.stderr
    return page


def test_report_renders_in_a_headless_browser(devtools: str, report_page: Path, tmp_path: Path) -> None:
    expected = chart_ids(report_page.read_text(encoding="utf-8"))
    assert BASE_CHARTS | NEW_CHARTS | SLOTS_CHARTS | {"server-gen", "server-prompt", "server-load"} <= set(expected)
    page = load(devtools, report_page)
    artifacts = artifact_dir(tmp_path)
    (artifacts / "report-browser.png").write_bytes(page.screenshot)
    shutil.copyfile(report_page, artifacts / "report-browser.html")
    assert problems(page, report_page.resolve().as_uri(), expected) == []


BROKEN = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>broken</title></head><body>
<svg class="chart" id="chart-flat" width="0" height="0"><g class="series"><polyline points="0,0 9,9"/></g></svg>
<svg class="chart" id="chart-empty" width="300" height="200"><g class="series"></g></svg>
<img src="http://127.0.0.1:9/x.png" alt="">
<script>console.error("broken on purpose"); notAFunction();</script>
</body></html>
"""


def test_the_browser_check_catches_errors_flat_charts_and_network(devtools: str, tmp_path: Path) -> None:
    page_file = tmp_path / "broken.html"
    page_file.write_text(BROKEN, encoding="utf-8")
    found = "\n".join(problems(load(devtools, page_file), page_file.resolve().as_uri(), ["flat", "empty"]))
    for needle in ("console: broken on purpose", "exception:", "notAFunction", "network request: http://127.0.0.1:9",
                   "chart-flat renders at 0 x 0 px", "chart-empty draws no series", "legend entry"):  # fmt: skip
        assert needle in found, found
