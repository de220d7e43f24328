"""Axis scales and labels: limits that move rarely (so the background is redrawn
rarely), short numbers ("2.5M") and histogram bucket names ("4K-8K")."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.ticker import FuncFormatter


def nice_ceiling(x: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is >= x (x > 0)."""
    power = 10.0 ** math.floor(math.log10(x))
    for step in (1, 2, 2.5, 5):
        if step * power >= x * (1 - 1e-12):
            return step * power
    return 10 * power


class _Scale:
    """An axis limit that moves only when data leaves it (then with room to grow) or
    shrinks below a quarter of it, so the background (ticks, labels) is redrawn rarely."""

    def __init__(self):
        self.top = 1.0

    def fit(self, vmax: float) -> bool:
        if not np.isfinite(vmax) or vmax <= 0:
            return False
        if vmax >= self.top or vmax < self.top / 4:
            top = nice_ceiling(vmax * 1.5)
            changed, self.top = top != self.top, top
            return changed
        return False


def _si(x: float) -> str:
    """1234567 -> '1.23M': short numbers for axis labels."""
    for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= size:
            return f"{x / size:.3g}{unit}"
    return f"{x:.3g}"


def _compact() -> FuncFormatter:
    """Value ticks of bounded width ("2.5M"). One per axis: a formatter keeps the
    axis it was given, so a shared one would keep a stopped dashboard's figure."""
    return FuncFormatter(lambda v, _: _si(v))


def _bound(x: float) -> str:
    """A bucket bound: exact below 10000, powers of two as 4K/2M/1G, else SI."""
    if x < 10000:
        return str(int(x))
    for shift, unit in ((30, "G"), (20, "M"), (10, "K")):
        if x % (1 << shift) == 0:
            return f"{int(x) >> shift}{unit}"
    return _si(x)


def bucket_label(low: float, high: float) -> str:
    if low == -np.inf:
        return f"<{_bound(high)}"
    if high == np.inf:
        return f">={_bound(low)}"
    if high - low == 1:
        return _bound(low)
    return f"{_bound(low)}-{_bound(high)}"
