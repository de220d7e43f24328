"""Axis scales and labels: limits that move rarely (so the background is redrawn
rarely), short numbers ("2.5M") a few to an axis, histogram bucket names ("4K-8K")
and how many of them fit side by side."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.ticker import FuncFormatter, MaxNLocator


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


def _few() -> MaxNLocator:
    """At most 5 intervals at 1/2/2.5/5 steps: with limits of those steps (_Scale),
    labels of at most 4 characters ("7.5M") with room between them."""
    return MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10])


def value_axis(axis):
    """Short value labels, a few of them, on a matplotlib Axis."""
    axis.set_major_locator(_few())
    axis.set_major_formatter(_compact())


def every_kth(widths: list[float], room: float) -> int:
    """Show every k-th of labels ``widths`` wide (pixels) placed ``room`` pixels apart,
    the smallest k at which neighbours shown never touch."""
    if not widths or room <= 0:
        return 1
    return max(1, math.ceil(max(widths) / room))


def _bound(x: float) -> str:
    """A bucket bound: exact below 1024, multiples of 1024 as 4K/2M/1G, exact below
    10000, else SI."""
    if x < 1024 or (x < 10000 and x % 1024):
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
