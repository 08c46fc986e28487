"""llama-server's router mode (`--models-dir`): one front server, one child server per loaded model.

The router answers /metrics and /slots per model (`?model=NAME`) and lists the models with their state
on /v1/models. A scrape reads every loaded model's figures and adds them up; each model's counters are
accumulated on their own, so a model that is unloaded (its counters vanish) or reloaded (they restart
from zero) never looks like the whole server restarting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import quote

from ..http import HttpClient, HttpError
from .metrics import GEN_COUNTER, PROMPT_COUNTER, parse_metrics
from .slots import SlotsSummary, summarize_slots

GAUGES = ("requests_processing", "requests_deferred")


@dataclass
class ModelState:
    """One model of a router: its state and what it is doing."""

    name: str
    status: str  # loaded | loading | unloaded | failed ... as the router says
    requests_processing: Optional[float] = None
    requests_deferred: Optional[float] = None
    slots_busy: Optional[int] = None


def is_router(props: Any) -> bool:
    return isinstance(props, dict) and props.get("role") == "router"


def _models(client: HttpClient) -> List[Tuple[str, str]]:
    data = client.get_json("/v1/models")
    items = data.get("data") if isinstance(data, dict) else None
    out = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            continue
        status = item.get("status")
        value = status.get("value") if isinstance(status, dict) else status
        out.append((item["id"], value if isinstance(value, str) else "unknown"))
    return out


class RouterScraper:
    def __init__(self) -> None:
        self._last: Dict[Tuple[str, str], float] = {}  # (model, counter) -> last raw value
        # counter -> sum of every model's increases since the start. The token counters exist from the
        # first scrape, at zero while no model is loaded: a counter that first appeared with the first
        # loaded model would be taken as its baseline and that model's first requests never counted.
        self._cum: Dict[str, float] = {PROMPT_COUNTER: 0.0, GEN_COUNTER: 0.0}
        self._started = False

    def scrape(self, client: HttpClient) -> Tuple[Dict[str, float], Optional[SlotsSummary], List[ModelState]]:
        """Summed /metrics values, merged /slots and the model list. Raises HttpError when the router
        itself does not answer; a model that fails to answer is shown, not fatal."""
        models = _models(client)
        states: List[ModelState] = []
        gauges = {g: 0.0 for g in GAUGES}
        slots: List[Dict[str, Any]] = []
        seen = set()
        for name, status in models:
            state = ModelState(name, status)
            states.append(state)
            if status != "loaded":
                continue
            values = self._model_metrics(client, name)
            if values is None:
                continue
            seen.add(name)
            for key, raw in values.items():
                if key in GAUGES:
                    gauges[key] += raw
                elif key.endswith("_total"):
                    self._advance(name, key, raw)
            state.requests_processing = values.get("requests_processing")
            state.requests_deferred = values.get("requests_deferred")
            model_slots = self._model_slots(client, name)
            if model_slots is not None:
                slots.extend(model_slots)
                state.slots_busy = summarize_slots(model_slots).busy
        for gone in [k for k in self._last if k[0] not in seen]:
            del self._last[gone]  # unloaded: what it counted stays in the sums
        self._started = True
        values = {**self._cum, **gauges}
        return values, summarize_slots(slots) if slots else None, states

    def _advance(self, model: str, key: str, raw: float) -> None:
        last = self._last.get((model, key))
        # First sight of a model's counter: counted from zero only if the model (re)appeared after the
        # start — a model already loaded when monitoring starts is the baseline, like a plain server.
        delta = 0.0 if last is None and not self._started else (raw if last is None or raw < last else raw - last)
        self._last[(model, key)] = raw
        self._cum[key] = self._cum.get(key, 0.0) + delta

    @staticmethod
    def _model_metrics(client: HttpClient, name: str) -> Optional[Dict[str, float]]:
        try:
            resp = client.get(f"/metrics?model={quote(name)}")
        except HttpError:
            return None
        if resp.status != 200:
            return None
        try:
            return {k: v for k, v in parse_metrics(resp.text).items() if math.isfinite(v)}
        except ValueError:
            return None

    @staticmethod
    def _model_slots(client: HttpClient, name: str) -> Optional[List[Dict[str, Any]]]:
        try:
            data = client.get_json(f"/slots?model={quote(name)}")
        except HttpError:
            return None
        return [s for s in data if isinstance(s, dict)] if isinstance(data, list) else None
