"""Uncertainty of a figure: the 95 % confidence interval over repeats (Student's t), Welch's t-test
between two sets of repeats, and a bootstrap interval for the change of a statistic between two samples
of per-request values. Pure functions (stdlib only): no scipy needed."""

from __future__ import annotations

import math
import random
from typing import Callable, List, Optional, Sequence, Tuple

from .summary import Interval

CONFIDENCE = 0.95
ALPHA = 1.0 - CONFIDENCE


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-12:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    ln = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    front = math.exp(ln)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_sf2(t: float, df: float) -> float:
    """Two-sided tail probability P(|T| >= |t|) of Student's t with df degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return betainc(df / 2.0, 0.5, df / (df + t * t))


def t_quantile(p: float, df: float) -> float:
    """The p-quantile (p > 0.5) of Student's t, by bisection on the tail probability."""
    target = 2.0 * (1.0 - p)  # two-sided tail
    lo, hi = 0.0, 1.0
    while t_sf2(hi, df) > target:
        hi *= 2.0
    for _ in range(100):
        mid = (lo + hi) / 2.0
        if t_sf2(mid, df) > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


def mean_interval(values: Sequence[float]) -> Optional[Interval]:
    """Mean and its 95 % confidence interval; no interval with a single value; None without values."""
    data = [float(v) for v in values if v is not None and math.isfinite(v)]
    n = len(data)
    if not n:
        return None
    mean = math.fsum(data) / n
    if n < 2:
        return Interval(n=1, mean=mean, stdev=None, low=None, high=None, half_width=None)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in data) / (n - 1))
    half = t_quantile(1.0 - ALPHA / 2.0, n - 1) * sd / math.sqrt(n)
    return Interval(n=n, mean=mean, stdev=sd, low=mean - half, high=mean + half, half_width=half)


def welch_p(a: Sequence[float], b: Sequence[float]) -> Optional[float]:
    """Two-sided p-value of Welch's t-test (unequal variances) for a difference of the means; None when
    either side has fewer than two values. Identical constant samples give 1.0, different ones 0.0."""
    if len(a) < 2 or len(b) < 2:
        return None
    ma, mb = math.fsum(a) / len(a), math.fsum(b) / len(b)
    va = math.fsum((x - ma) ** 2 for x in a) / (len(a) - 1)
    vb = math.fsum((x - mb) ** 2 for x in b) / (len(b) - 1)
    sa, sb = va / len(a), vb / len(b)
    if sa + sb == 0.0:
        return 1.0 if ma == mb else 0.0
    t = (mb - ma) / math.sqrt(sa + sb)
    df = (sa + sb) ** 2 / ((sa * sa) / (len(a) - 1) + (sb * sb) / (len(b) - 1))
    return t_sf2(t, df)


Statistic = Callable[[List[float]], float]


def bootstrap_change(
    a: Sequence[Sequence[float]],
    b: Sequence[Sequence[float]],
    statistic: Statistic,
    resamples: int = 1000,
    seed: int = 0,
) -> Optional[Tuple[float, float]]:
    """95 % percentile-bootstrap interval of statistic(B) - statistic(A).

    Each sample is a list of clusters (a request's values: one TTFT, or all its ITL gaps); clusters are
    resampled with replacement, so values from one request stay together. None when a side is empty."""
    ca = [list(c) for c in a if c]
    cb = [list(c) for c in b if c]
    if not ca or not cb:
        return None
    rng = random.Random(seed)
    diffs: List[float] = []
    for _ in range(resamples):
        pa = [x for c in rng.choices(ca, k=len(ca)) for x in c]
        pb = [x for c in rng.choices(cb, k=len(cb)) for x in c]
        diffs.append(statistic(pb) - statistic(pa))
    diffs.sort()
    lo = diffs[int(math.floor(ALPHA / 2.0 * (resamples - 1)))]
    hi = diffs[int(math.ceil((1.0 - ALPHA / 2.0) * (resamples - 1)))]
    return lo, hi
