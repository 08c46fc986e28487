"""Prometheus /metrics parsing, token-rate tracking and /slots summaries for llama-server.

llama-server exposes counters such as ``llamacpp:prompt_tokens_total`` and
``llamacpp:tokens_predicted_total``. :class:`RateTracker` turns successive scrapes of those
counters into tokens/s figures: the last interval ("now"), the last 1 and 15 minutes and the
whole session. Other servers' metrics parse too; their names are kept as they are.
"""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass, replace
from typing import Deque, Dict, Optional, Tuple

PREFIX = "llamacpp:"
PROMPT_COUNTER = "prompt_tokens_total"
GEN_COUNTER = "tokens_predicted_total"

WINDOW_1M = 60.0
WINDOW_15M = 900.0

_TYPE_LINE = re.compile(r"^\s*#\s*TYPE\s+(\S+)\s+counter\s*$", re.MULTILINE)


def _strip_prefix(name: str) -> str:
    return name[len(PREFIX) :] if name.startswith(PREFIX) else name


def parse_metrics(text: str) -> Dict[str, float]:
    """Parse Prometheus text exposition into ``{sample name: value}``.

    Keys are sample names without the ``llamacpp:`` prefix (``prompt_tokens_total``,
    ``tokens_predicted_total``, ``requests_processing``, ...); names from other servers stay as
    they are. prometheus_client appends ``_total`` to samples of counters declared without it
    (``llamacpp:n_tokens_max``); that renaming is undone so keys match the text. For a name with
    several labelled samples the unlabelled sample wins, otherwise the first one is kept.
    Empty text gives ``{}``; text that is not Prometheus exposition raises ValueError.
    """
    # Lazy import: this module is loaded at CLI start-up and `--help` must stay fast.
    from prometheus_client.parser import text_string_to_metric_families

    declared_counters = set(_TYPE_LINE.findall(text))
    values: Dict[str, float] = {}
    labelled: Dict[str, bool] = {}
    try:
        for family in text_string_to_metric_families(text):
            # Counters TYPE-declared without "_total" got the suffix added by the parser.
            renamed = (
                family.type == "counter"
                and family.name in declared_counters
                and family.name + "_total" not in declared_counters
            )
            for sample in family.samples:
                name = sample.name
                if renamed and name == family.name + "_total":
                    name = family.name
                key = _strip_prefix(name)
                has_labels = bool(sample.labels)
                if key in values and (has_labels or not labelled[key]):
                    continue
                values[key] = float(sample.value)
                labelled[key] = has_labels
    except Exception as exc:  # the parser raises ValueError, but also IndexError/KeyError on odd input
        first = text.strip().splitlines()[0][:80] if text.strip() else ""
        raise ValueError(f"not Prometheus metrics text (starts with {first!r}): {exc}") from None
    return values


@dataclass
class MetricsSample:
    """One scrape: ``t`` is time.monotonic() when it was taken, ``values`` from parse_metrics()."""

    t: float
    values: Dict[str, float]

    def get(self, name: str) -> Optional[float]:
        """Value of a metric (with or without the ``llamacpp:`` prefix), None when absent."""
        return self.values.get(_strip_prefix(name))


@dataclass
class Rate:
    """Tokens per second for prompt processing and generation; None when unknown."""

    prompt_tps: Optional[float]
    gen_tps: Optional[float]


@dataclass
class RateSet:
    """Rates after one RateTracker.update().

    now          rate over the last interval, or the last burst's rate when that interval was
                 quiet (then now_idle is True); see RateTracker.
    now_idle     True when the last interval brought no new tokens (and the idle grace is over).
    m1, m15      rates over the trailing 60 s / 900 s; all: since the tracker's first sample.
    prompt_tokens, gen_tokens   tokens counted since the tracker's first sample (reset aware).
    prompt_tokens_total, gen_tokens_total   the server's raw counters in this sample.
    now_prompt_tokens, now_gen_tokens   the tokens behind `now`: the last interval's while tokens flow,
                 the last burst's when idle (so counts and rates on one line agree).
    """

    now: Rate
    now_idle: bool
    m1: Rate
    m15: Rate
    all: Rate
    prompt_tokens: int
    gen_tokens: int
    prompt_tokens_total: Optional[int]
    gen_tokens_total: Optional[int]
    now_prompt_tokens: int = 0
    now_gen_tokens: int = 0


@dataclass
class _Point:
    # Cumulative counts since the tracker started (counter resets folded in); None until the
    # counter has been seen once, then carried forward across samples that lack it.
    t: float
    prompt: Optional[float]
    gen: Optional[float]


@dataclass
class _Counter:
    """Reset-aware accumulation of one monotonically increasing server counter."""

    name: str
    last_raw: Optional[float] = None
    cum: Optional[float] = None
    first_t: Optional[float] = None  # when the counter was first seen (its cum is 0 there)

    def advance(self, raw: Optional[float], t: float) -> Optional[float]:
        """Feed a raw value; return the delta since the previous value seen (None if none)."""
        if raw is None:
            return None
        if self.last_raw is None or self.cum is None:
            self.last_raw, self.cum, self.first_t = raw, 0.0, t
            return None
        # A decrease means the server restarted and counts from zero again (Prometheus rate()).
        delta = raw - self.last_raw if raw >= self.last_raw else raw
        self.last_raw = raw
        self.cum += delta
        return delta


def _counter_value(sample: MetricsSample, name: str) -> Optional[float]:
    value = sample.get(name)
    if value is None or not math.isfinite(value) or value < 0:
        return None
    return value


class _Window:
    """Points of the trailing ``seconds``; each point is appended and evicted once (O(1) amortized)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.points: Deque[_Point] = deque()
        self.before: Optional[_Point] = None  # newest point evicted from the window

    def add(self, point: _Point) -> Optional[_Point]:
        """Add the newest point and return the baseline to measure it against (None if none).

        The baseline is the oldest point inside the window; when only the new point is inside
        (sparse samples) it is the newest point before the window, so a rate spans one interval.
        """
        self.points.append(point)
        horizon = point.t - self.seconds
        while self.points[0].t < horizon:
            self.before = self.points.popleft()
        return self.points[0] if self.points[0] is not point else self.before


def _counter_rate(
    counter: _Counter, old: Optional[float], t_old: float, new: Optional[float], t_new: float
) -> Optional[float]:
    if new is None:
        return None
    if old is None:
        # The counter first appeared after the baseline: count from its first sighting (0 there).
        if counter.first_t is None:
            return None
        old, t_old = 0.0, counter.first_t
    if t_new <= t_old:
        return None
    return (new - old) / (t_new - t_old)


class RateTracker:
    """Turns successive /metrics samples into prompt and generation token rates.

    Counters used: ``prompt_tokens_total`` and ``tokens_predicted_total``. A counter that goes
    down means the server restarted: the new value is the delta (Prometheus rate() semantics), so
    rates never go negative. A counter missing from a sample gives None for all its rates in that
    RateSet; its count since start is carried forward.

    - First sample: every rate is None (nothing to compare with yet) and now_idle is False.
    - ``now`` while tokens flow (either counter grew in the last interval): delta / interval,
      now_idle=False.
    - ``now`` after a quiet interval: the rate of the most recent burst (tokens of its
      consecutive active intervals / their summed duration; prompt and generation over the same
      duration) with now_idle=True. Before any work was seen: Rate(0.0, 0.0), now_idle=True.
      A burst ends at the first quiet interval; the next active interval starts a new one.
    - ``m1`` / ``m15``: delta from the oldest sample within the trailing 60 / 900 s (or from the
      sample just before the window when none is inside) divided by the elapsed time; ``all``:
      since the first sample. Windows are bounded deques, so update() is O(1) amortized.
    - A sample whose time is not after the previous one is ignored (the previous rates are
      returned with the raw counter totals of this sample).
    """

    def __init__(self) -> None:
        self._prompt = _Counter(PROMPT_COUNTER)
        self._gen = _Counter(GEN_COUNTER)
        self._w1 = _Window(WINDOW_1M)
        self._w15 = _Window(WINDOW_15M)
        self._first: Optional[_Point] = None
        self._last: Optional[_Point] = None
        self._last_result: Optional[RateSet] = None
        # The current or most recent burst of work.
        self._burst_prompt = 0.0
        self._burst_gen = 0.0
        self._burst_s = 0.0
        self._have_burst = False
        self._in_burst = False

    def update(self, sample: MetricsSample) -> RateSet:
        """Add a sample and return the rates as of that sample."""
        raw_prompt = _counter_value(sample, PROMPT_COUNTER)
        raw_gen = _counter_value(sample, GEN_COUNTER)
        last = self._last
        if last is not None and sample.t <= last.t and self._last_result is not None:
            prev = self._last_result
            return replace(prev, prompt_tokens_total=_as_int(raw_prompt), gen_tokens_total=_as_int(raw_gen))

        d_prompt = self._prompt.advance(raw_prompt, sample.t)
        d_gen = self._gen.advance(raw_gen, sample.t)
        point = _Point(sample.t, self._prompt.cum, self._gen.cum)
        base1 = self._w1.add(point)
        base15 = self._w15.add(point)
        self._last = point
        if self._first is None or last is None:
            self._first = point
            none = Rate(None, None)
            result = RateSet(none, False, none, none, none, 0, 0, _as_int(raw_prompt), _as_int(raw_gen))
            self._last_result = result
            return result

        now, now_idle = self._now(d_prompt, d_gen, sample.t - last.t)
        if now_idle:
            now_tokens = (self._burst_prompt, self._burst_gen) if self._have_burst else (0.0, 0.0)
        else:
            now_tokens = (d_prompt or 0.0, d_gen or 0.0)
        # A counter absent from this sample has no current rate at all.
        present = (raw_prompt is not None, raw_gen is not None)
        result = RateSet(
            now=_mask(now, present),
            now_idle=now_idle,
            m1=_mask(self._between(base1, point), present),
            m15=_mask(self._between(base15, point), present),
            all=_mask(self._between(self._first, point), present),
            prompt_tokens=_as_int(self._prompt.cum) or 0,
            gen_tokens=_as_int(self._gen.cum) or 0,
            prompt_tokens_total=_as_int(raw_prompt),
            gen_tokens_total=_as_int(raw_gen),
            now_prompt_tokens=_as_int(now_tokens[0]) or 0,
            now_gen_tokens=_as_int(now_tokens[1]) or 0,
        )
        self._last_result = result
        return result

    def _between(self, base: Optional[_Point], now: _Point) -> Rate:
        if base is None or base is now:
            return Rate(None, None)
        return Rate(
            _counter_rate(self._prompt, base.prompt, base.t, now.prompt, now.t),
            _counter_rate(self._gen, base.gen, base.t, now.gen, now.t),
        )

    def _now(self, d_prompt: Optional[float], d_gen: Optional[float], dt: float) -> Tuple[Rate, bool]:
        active = (d_prompt or 0.0) > 0 or (d_gen or 0.0) > 0
        if active:
            if not self._in_burst:
                self._burst_prompt = self._burst_gen = self._burst_s = 0.0
            self._burst_prompt += d_prompt or 0.0
            self._burst_gen += d_gen or 0.0
            self._burst_s += dt
            self._have_burst = self._in_burst = True
            return (
                Rate(d_prompt / dt if d_prompt is not None else None, d_gen / dt if d_gen is not None else None),
                False,
            )
        self._in_burst = False
        if not self._have_burst:
            return Rate(0.0, 0.0), True
        return self._burst_rate(), True

    def _burst_rate(self) -> Rate:
        # A counter never seen has no burst rate rather than a misleading 0.
        prompt = self._burst_prompt / self._burst_s if self._prompt.cum is not None else None
        gen = self._burst_gen / self._burst_s if self._gen.cum is not None else None
        return Rate(prompt, gen)


def _mask(rate: Rate, present: Tuple[bool, bool]) -> Rate:
    return Rate(rate.prompt_tps if present[0] else None, rate.gen_tps if present[1] else None)


def _as_int(value: Optional[float]) -> Optional[int]:
    return None if value is None else int(round(value))
