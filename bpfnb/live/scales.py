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


LABEL_CHARS = 24   # longer key labels are shown cut: a label's width moves the layout


def _short(label: str) -> str:
    """A key label of at most LABEL_CHARS characters, cut in the middle: the ends of
    keys ("1234 some-command-name", "10.0.0.1:443") tell them apart."""
    if len(label) <= LABEL_CHARS:
        return label
    head = (LABEL_CHARS - 1) * 3 // 5
    return label[:head] + "…" + label[len(label) - (LABEL_CHARS - 1 - head):]


def _widest(ax, texts) -> float:
    """The width in pixels of the widest of ``texts`` (matplotlib Text) as drawn."""
    renderer = ax.figure.canvas.get_renderer()
    return max((t.get_window_extent(renderer).width for t in texts), default=0.0)


def thin_labels(ax, labels: list[str]):
    """Label the x ticks 0..n-1 of ``ax`` with ``labels``, showing every k-th: k such
    that no two shown labels touch at the axes' width (a tick at every bar, so the
    bars still line up with their labels)."""
    ticks = ax.set_xticks(np.arange(len(labels)), labels, fontsize=7)
    texts = [t.label1 for t in ticks]
    renderer = ax.figure.canvas.get_renderer()
    widths = [t.get_window_extent(renderer).width for t in texts]
    # The axes are narrower than their grid cell by the margins: 85% of it.
    room = 0.85 * ax.get_subplotspec().get_position(ax.figure).width \
        * ax.figure.bbox.width / max(len(labels), 1)
    pad = 4 * ax.figure.dpi / 72   # 4 points between neighbours
    k = every_kth([w + pad for w in widths], room)
    for i, text in enumerate(texts):
        text.set_visible(i % k == 0)


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
