"""Live dashboards: maps, global variables and event streams as plots that refresh
themselves while the notebook keeps running other cells.

``bpfnb.live(*views, interval=1.0)`` returns a :class:`Dashboard`, an ipywidgets VBox.
A view is one of :class:`TimeSeries`, :class:`TopN`, :class:`Histogram`,
:class:`KeyLines`, :class:`Table`, or a bare source that picks one: a Map (top-N bars;
a table of events for a ring buffer), ``obj.bss`` (its variables as rates), an event
stream (its newest rows) or a callable returning a DataFrame (a table).

Drawing: one matplotlib figure rendered with Agg. Axes, ticks and labels are drawn
only when they change (new limits, new labels); every other frame restores that
background and redraws the animated artists in place (blitting), then encodes the
pixels to PNG for an ``ipywidgets.Image``. A daemon thread per dashboard refreshes it;
it stops by itself when a BPF object it reads is destroyed.

Only this module of bpfnb knows about ipywidgets.
"""

from __future__ import annotations

import atexit
import html
import math
import struct
import sys
import threading
import time
import types
import weakref
import zlib
from collections import deque
from pathlib import Path

import ipywidgets as widgets
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from . import frames
from .libbpf import Map, ObjectClosedError
from .libbpf.map import NO_VALUE_TYPES, PERF_EVENT_ARRAY, STACK_TRACE
from .libbpf.object import Globals
from .stream import EventStream

DPI = 72
WIDTH_IN = 10.0
ROW_IN = 3.0
BACKGROUND = (255, 255, 255)
# What a view's update() asks of the frame: move its artists only (blit); redraw the
# axes background too (new limits, legend); or lay the figure out again (new labels).
BLIT, REDRAW, RELAYOUT = 0, 1, 2
LABEL_CHARS = 24   # longer key labels are cut: a label's width moves the figure layout
WATCH_S = 0.1      # how soon a waiting dashboard notices that its BPF object is gone

# --- PNG ------------------------------------------------------------------------


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def png_bytes(rgb: np.ndarray, level: int = 1) -> bytes:
    """An (h, w, 3) uint8 array as PNG bytes.

    Written by hand (filter 0, zlib level 1): about twice as fast as Pillow's adaptive
    filtering on plot images, which are mostly flat colour anyway.
    """
    h, w, _ = rgb.shape
    rows = np.empty((h, w * 3 + 1), np.uint8)
    rows[:, 0] = 0
    rows[:, 1:] = rgb.reshape(h, w * 3)
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), level))
            + _png_chunk(b"IEND", b""))


def _pixels(figure: Figure) -> np.ndarray:
    """The figure's last drawn pixels: a view of Agg's buffer (RGB of its RGBA)."""
    return np.asarray(figure.canvas.buffer_rgba())[..., :3]


# --- reading sources --------------------------------------------------------------


def _owner(source):
    """The BPF Object a source reads from (None for a callable), for teardown and locking."""
    if isinstance(source, Map):
        return source._obj()
    if isinstance(source, Globals):
        return source._obj
    if isinstance(source, EventStream):
        return source._obj()
    return None


def _source_name(source) -> str:
    if isinstance(source, Map):
        return source.name
    if isinstance(source, Globals):
        return "." + source._section
    if isinstance(source, EventStream):
        return source.map_name
    return getattr(source, "__name__", None) or type(source).__name__


def _frame(source) -> pd.DataFrame:
    """A DataFrame from a map (``to_df()``) or a callable."""
    if isinstance(source, Map):
        return source.to_df()
    if callable(source):
        df = source()
        if isinstance(df, pd.Series):
            df = df.reset_index()
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"{_source_name(source)}() returned {type(df).__name__}, "
                            f"not a pandas DataFrame")
        return df
    raise TypeError(f"cannot read a table from {type(source).__name__}: pass a Map or a "
                    f"callable returning a DataFrame")


def _value_column(df: pd.DataFrame, value: str | None, keys: list) -> str:
    if value is not None:
        if value not in df.columns:
            raise KeyError(f"no column {value!r}; there are: {', '.join(map(str, df.columns))}")
        return value
    for name in ("value", "count"):
        if name in df.columns:
            return name
    numeric = [c for c in df.columns
               if c not in keys and pd.api.types.is_numeric_dtype(df[c])]
    if not numeric:
        raise ValueError(f"no numeric column to plot among: {', '.join(map(str, df.columns))}")
    return numeric[0] if keys else numeric[-1]


def _key_column_count(dtype: np.dtype) -> int:
    """How many columns map_to_df makes of a key: one per leaf of its (nested) struct."""
    if dtype.names:
        return sum(_key_column_count(dtype.fields[name][0]) for name in dtype.names)
    return 1


def labels_values(source, key=None, value: str | None = None
                  ) -> tuple[list[str], np.ndarray]:
    """Row labels and the numbers to plot from a Map or a callable's DataFrame.

    Labels join the ``key`` columns (default: a map's key columns; for a DataFrame,
    every column but the value): a struct key reads "1234 bash". The number is the
    ``value`` column (default: ``value``, else ``count``, else the first numeric
    column after a map's key, or a DataFrame's last numeric column).
    """
    df = _frame(source)
    keys = [key] if isinstance(key, str) else list(key) if key is not None else None
    if keys is None and isinstance(source, Map):
        keys = list(df.columns[:_key_column_count(source.key_dtype)])
    vcol = _value_column(df, value, keys or [])
    if keys is None:
        keys = [c for c in df.columns if c != vcol]
    column = df[vcol]
    if not pd.api.types.is_numeric_dtype(column):
        column = pd.to_numeric(column, errors="coerce")
    values = column.to_numpy(dtype=float)
    if not keys:
        return [str(i) for i in df.index], values
    # Plain lists: pandas' astype(str) and row-wise joins cost more than the map read.
    parts = [df[k].tolist() for k in keys]
    if len(parts) == 1:
        return [str(v) for v in parts[0]], values
    return [" ".join(map(str, row)) for row in zip(*parts)], values


def _numbers(source, names) -> dict[str, float]:
    """Named numbers from a Globals section, a Map (total of its values) or a callable."""
    if isinstance(source, Globals):
        return {n: float(getattr(source, n)) for n in names or _numeric_names(source)}
    if isinstance(source, Map):
        _, values = labels_values(source)
        return {source.name: float(np.nansum(values))}
    got = source()
    if isinstance(got, pd.DataFrame):
        got = got.select_dtypes("number").sum()
    if isinstance(got, pd.Series):
        got = got.to_dict()
    if isinstance(got, dict):
        return {str(k): float(v) for k, v in got.items() if names is None or k in names}
    if _is_number(got):
        return {_source_name(source): float(got)}
    raise TypeError(f"{_source_name(source)}() returned {type(got).__name__}: "
                    f"a time series wants a number, a dict of numbers, or a DataFrame")


def _is_number(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


# --- scales and labels ---------------------------------------------------------------


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


_COMPACT = FuncFormatter(lambda v, _: _si(v))   # value ticks of bounded width: "2.5M"


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


# --- views -------------------------------------------------------------------------


class View:
    """One panel of a dashboard.

    ``sample()`` reads the source (in the refresh thread, with the BPF object locked);
    ``update()`` moves the artists and returns BLIT, REDRAW or RELAYOUT: what else the
    frame must draw. ``rows`` and ``lost`` feed the status line.
    """

    html = False
    accepts: tuple = (Map,)   # the sources it reads, besides callables

    def __init__(self, source, title: str | None = None):
        if not (isinstance(source, self.accepts) or callable(source)):
            kinds = " or ".join(["a " + t.__name__ for t in self.accepts]
                                + ["a callable returning a DataFrame"])
            raise TypeError(f"{type(self).__name__} reads {kinds}, "
                            f"not {type(source).__name__}")
        self.title = title or _source_name(source)
        owner = _owner(source)
        # Weak: a dashboard outlives cells, and must not keep a BPF object alive.
        self._owner = None if owner is None else weakref.ref(owner)
        self._section = source._section if isinstance(source, Globals) else None
        self._source = None if self._section else source   # Globals holds its Object
        self.ax = None
        self.rows = 0
        self.lost = 0

    @property
    def source(self):
        if self._section:
            self.check()
            return getattr(self.owner, self._section)
        return self._source

    @property
    def owner(self):
        """The BPF Object this view reads (None for callables and collected objects)."""
        return None if self._owner is None else self._owner()

    def alive(self) -> bool:
        """False once the BPF object it reads is destroyed (or collected)."""
        obj = self.owner
        return self._owner is None or (obj is not None and obj.state != "destroyed")

    def check(self):
        """Raise ObjectClosedError once the BPF object it reads is destroyed."""
        if not self.alive():
            raise ObjectClosedError(f"the BPF object of view {self.title!r} was destroyed")

    def setup(self, ax):
        if self.ax is not None:
            raise ValueError(f"view {self.title!r} is already in a dashboard: make another")
        self.ax = ax
        ax.set_title(self.title, fontsize=10, loc="left")

    def sample(self, now: float):
        raise NotImplementedError

    def update(self, now: float) -> int:
        raise NotImplementedError

    def animated(self) -> list:
        raise NotImplementedError

    def close(self):
        """Release what the view owns (a stream it opened itself)."""


class TimeSeries(View):
    """Counters or global variables over time, as rates per second (``rate=False``:
    the values themselves).

    ``source``: ``obj.bss`` (``names`` picks variables; default every number), a Map
    (the total of its values), or a callable returning a number, a dict of numbers or a
    DataFrame (its numeric columns summed).
    """

    accepts = (Map, Globals)

    def __init__(self, source, names: list[str] | None = None, *, rate: bool = True,
                 window: float = 60.0, title: str | None = None):
        super().__init__(source, title)
        self.names = list(names) if names else None
        self.rate, self.window = rate, window
        self.history: deque[tuple[float, dict]] = deque()
        self.lines: dict = {}
        self._last: tuple[float, dict] | None = None
        self._scale = _Scale()

    def setup(self, ax):
        super().setup(ax)
        ax.set_xlim(-self.window, 0)
        ax.set_ylim(0, self._scale.top)
        ax.yaxis.set_major_formatter(_COMPACT)
        ax.set_xlabel("seconds ago", fontsize=8)
        ax.set_ylabel("per second" if self.rate else "value", fontsize=8)

    def sample(self, now):
        source = self.source
        if self.names is None and isinstance(source, Globals):
            self.names = _numeric_names(source)   # once: decoding every variable costs
        values = _numbers(source, self.names)
        point = values
        if self.rate:
            if self._last is None:
                self._last = (now, values)
                return
            t0, before = self._last
            dt = max(now - t0, 1e-9)
            point = {k: ((v - before[k]) / dt if k in before and v >= before[k] else np.nan)
                     for k, v in values.items()}
            self._last = (now, values)
        self.history.append((now, point))
        while self.history and self.history[0][0] < now - self.window:
            self.history.popleft()
        self.rows = len(values)

    def update(self, now):
        need = BLIT
        names = list(self.history[-1][1]) if self.history else []
        for name in names:
            if name not in self.lines:
                (self.lines[name],) = self.ax.plot([], [], label=name, animated=True, lw=1.5)
                self.ax.legend(loc="upper left", fontsize=8)
                need = REDRAW
        if not self.history:
            return need
        x = np.fromiter((t - now for t, _ in self.history), float, len(self.history))
        top = 0.0
        for name, line in self.lines.items():
            y = np.fromiter((p.get(name, np.nan) for _, p in self.history), float, len(x))
            line.set_data(x, y)
            if np.isfinite(y).any():
                top = max(top, float(np.nanmax(y)))
        if self._scale.fit(top):
            self.ax.set_ylim(0, self._scale.top)
            need = max(need, REDRAW)
        return need

    def animated(self):
        return list(self.lines.values())


class TopN(View):
    """The ``n`` largest entries of a map (or of a callable's DataFrame) as bars.

    ``key``/``value`` name the label and number columns (default: a map's key and its
    ``value``). ``rate=True`` ranks by growth per second instead of totals. Widths are
    current at every frame; the ranking (which keys, in which order) is redone at most
    every ``rerank`` seconds, so that labels do not flicker on a busy machine.
    """

    def __init__(self, source, n: int = 10, *, key=None, value: str | None = None,
                 rate: bool = False, rerank: float = 1.0, title: str | None = None):
        super().__init__(source, title)
        self.n, self.key, self.value = n, key, value
        self.rate, self.rerank = rate, rerank
        self.labels: list[str] = []
        self.data = pd.DataFrame(columns=["label", "value"])
        self.bars: list = []
        self._prev: tuple[float, dict] | None = None
        self._ranked_at = -math.inf
        self._widest = 0
        self._scale = _Scale()

    def setup(self, ax):
        super().setup(ax)
        self.bars = list(ax.barh(np.arange(self.n), np.zeros(self.n), height=0.7,
                                 animated=True, color="C0"))
        ax.set_ylim(self.n - 0.5, -0.5)   # largest on top
        ax.set_xlim(0, self._scale.top)
        ax.xaxis.set_major_formatter(_COMPACT)
        ax.set_yticks([])
        ax.tick_params(labelsize=8)

    def sample(self, now):
        labels, values = labels_values(self.source, self.key, self.value)
        labels = [label[:LABEL_CHARS] for label in labels]
        self.rows = len(labels)
        current = dict(zip(labels, values))
        if self.rate:
            if self._prev is None:
                self._prev = (now, current)
                return
            t0, before = self._prev
            dt = max(now - t0, 1e-9)
            self._prev = (now, current)
            current = {k: (v - before.get(k, 0.0)) / dt for k, v in current.items()}
        shown = self.data["label"].tolist()
        if now - self._ranked_at >= self.rerank or len(shown) < min(self.n, len(current)):
            keys = list(current)
            vals = np.fromiter(current.values(), float, len(keys))
            order = np.argsort(-np.nan_to_num(vals, nan=-np.inf), kind="stable")[:self.n]
            shown = [keys[i] for i in order]
            self._ranked_at = now
        self.data = pd.DataFrame({"label": shown,
                                  "value": [float(current.get(k, 0.0)) for k in shown]})

    def update(self, now):
        labels = self.data["label"].tolist()
        values = self.data["value"].to_numpy(dtype=float)
        for i, bar in enumerate(self.bars):
            shown = i < len(values)
            bar.set_width(values[i] if shown and np.isfinite(values[i]) else 0.0)
            bar.set_visible(shown)
        need = BLIT
        if labels != self.labels:
            self.labels = labels
            self.ax.set_yticks(np.arange(len(labels)), labels, fontsize=8)
            widest = max(map(len, labels), default=0)
            need = RELAYOUT if widest > self._widest else REDRAW   # wider: new margins
            self._widest = max(widest, self._widest)
        if self._scale.fit(float(np.nanmax(values)) if len(values) else 0.0):
            self.ax.set_xlim(0, self._scale.top)
            need = max(need, REDRAW)
        return need

    def animated(self):
        return self.bars


class Histogram(View):
    """A histogram map (log2 or linear buckets, ``map.hist()``) redrawn in place.

    A callable source returns a DataFrame with ``low``, ``high`` and ``count``. A keyed
    histogram is drawn summed over its keys.
    """

    def __init__(self, source, *, title: str | None = None):
        super().__init__(source, title)
        self.data = pd.DataFrame(columns=["low", "high", "count"])
        self.bars: list = []
        self.buckets: list[str] = []
        self._scale = _Scale()

    def setup(self, ax):
        super().setup(ax)
        ax.set_ylim(0, self._scale.top)
        ax.yaxis.set_major_formatter(_COMPACT)
        ax.tick_params(labelsize=8)
        ax.set_ylabel("count", fontsize=8)

    def sample(self, now):
        df = self.source.hist() if isinstance(self.source, Map) else _frame(self.source)
        missing = {"low", "high", "count"} - set(df.columns)
        if missing:
            raise ValueError(f"histogram of {self.title}: no column {', '.join(sorted(missing))}")
        if len(df.columns) > 3:   # keyed (one per pid, per CPU...): the sum over the keys
            df = pd.DataFrame(df).groupby(["low", "high"], as_index=False, sort=True)["count"].sum()
        self.data = df[["low", "high", "count"]]
        self.rows = len(df)

    def update(self, now):
        buckets = [bucket_label(lo, hi) for lo, hi in zip(self.data["low"], self.data["high"])]
        counts = self.data["count"].to_numpy(dtype=float)
        need = BLIT
        if buckets != self.buckets:
            for bar in self.bars:
                bar.remove()
            x = np.arange(len(buckets))
            self.bars = list(self.ax.bar(x, counts, width=0.85, animated=True, color="C2"))
            self.ax.set_xticks(x, buckets, rotation=45, ha="right", fontsize=7)
            self.ax.set_xlim(-0.5, max(len(buckets), 1) - 0.5)
            self.buckets = buckets
            need = RELAYOUT
        for bar, c in zip(self.bars, counts):
            bar.set_height(c)
        if self._scale.fit(float(counts.max()) if len(counts) else 0.0):
            self.ax.set_ylim(0, self._scale.top)
            need = max(need, REDRAW)
        return need

    def animated(self):
        return self.bars


class KeyLines(View):
    """One line per key over time, for the ``n`` busiest keys of a map.

    Keys are ranked by a moving average of their rate (or value), at most every
    ``rerank`` seconds and with a head start for the keys shown, so the lines do not
    flicker between keys of similar size.
    """

    def __init__(self, source, n: int = 5, *, key=None, value: str | None = None,
                 rate: bool = True, window: float = 60.0, rerank: float = 1.0,
                 title: str | None = None):
        super().__init__(source, title)
        self.n, self.key, self.value = n, key, value
        self.rate, self.window, self.rerank = rate, window, rerank
        self._ranked_at = -math.inf
        self.history: deque[tuple[float, dict]] = deque()
        self.keys: list[str] = []
        self.ranked: list[str] = []
        self.lines: list = []
        self._prev: tuple[float, dict] | None = None
        self._score: dict[str, float] = {}
        self._scale = _Scale()

    def setup(self, ax):
        super().setup(ax)
        self.lines = [ax.plot([], [], animated=True, lw=1.5, color=f"C{i % 10}")[0]
                      for i in range(self.n)]
        ax.set_xlim(-self.window, 0)
        ax.set_ylim(0, self._scale.top)
        ax.yaxis.set_major_formatter(_COMPACT)
        ax.set_xlabel("seconds ago", fontsize=8)
        ax.set_ylabel("per second" if self.rate else "value", fontsize=8)

    def sample(self, now):
        labels, values = labels_values(self.source, self.key, self.value)
        current = dict(zip(labels, values))
        self.rows = len(current)
        point = current
        if self.rate:
            if self._prev is None:
                self._prev = (now, current)
                return
            t0, before = self._prev
            dt = max(now - t0, 1e-9)
            point = {k: (v - before.get(k, 0.0)) / dt for k, v in current.items()}
            self._prev = (now, current)
        for k in set(self._score) - set(point):
            del self._score[k]
        for k, v in point.items():
            self._score[k] = 0.8 * self._score.get(k, v) + 0.2 * v
        if now - self._ranked_at >= self.rerank or len(self.ranked) < min(self.n, len(point)):
            shown = set(self.keys)   # a head start for the keys on screen: no flapping
            self.ranked = sorted(self._score, reverse=True, key=lambda k: self._score[k]
                                 * (1.25 if k in shown else 1.0))[:self.n]
            self._ranked_at = now
        self.history.append((now, {k: point.get(k, np.nan) for k in self.ranked}))
        while self.history and self.history[0][0] < now - self.window:
            self.history.popleft()

    def update(self, now):
        need = BLIT
        ranked = self.ranked
        # Keep a key on its line (and colour) while it stays in the top n.
        if set(ranked) != set(self.keys):
            stay = [k for k in self.keys if k in ranked]
            self.keys = stay + [k for k in ranked if k not in stay]
            shown = self.lines[:len(self.keys)]
            self.ax.legend(shown, self.keys, loc="upper left", fontsize=8)
            need = REDRAW
        if not self.history:
            return need
        x = np.fromiter((t - now for t, _ in self.history), float, len(self.history))
        top = 0.0
        for i, line in enumerate(self.lines):
            if i < len(self.keys):
                y = np.fromiter((p.get(self.keys[i], np.nan) for _, p in self.history),
                                float, len(x))
                line.set_data(x, y)
                if np.isfinite(y).any():
                    top = max(top, float(np.nanmax(y)))
            else:
                line.set_data([], [])
        if self._scale.fit(top):
            self.ax.set_ylim(0, self._scale.top)
            need = max(need, REDRAW)
        return need

    def animated(self):
        return self.lines


class Table(View):
    """The newest ``n`` rows of an event stream, or the first ``n`` rows of a map's or
    a callable's DataFrame, as an HTML table."""

    html = True
    accepts = (Map, EventStream)

    def __init__(self, source, n: int = 20, *, title: str | None = None,
                 owns_stream: bool = False):
        super().__init__(source, title)
        self.n = n
        self.data = pd.DataFrame()
        self._owns_stream = owns_stream
        self.widget = widgets.HTML()

    def sample(self, now):
        if isinstance(self.source, EventStream):
            self.data = self.source.tail(self.n)
            self.lost = int(self.source.lost)
        else:
            self.data = _frame(self.source).head(self.n)
        self.rows = len(self.data)

    def update(self, now):
        body = self.data.to_html(index=False, border=0, max_rows=self.n)
        page = f"<div style='font-size:11px'><b>{html.escape(self.title)}</b>{body}</div>"
        if page != self.widget.value:
            self.widget.value = page
        return BLIT

    def animated(self):
        return []

    def figure(self) -> Figure:
        """The table drawn with matplotlib, for snapshots."""
        rows = self.data.astype(str).values.tolist() or [[""] * max(len(self.data.columns), 1)]
        fig = Figure(figsize=(WIDTH_IN, 0.3 * (len(rows) + 2)), dpi=DPI)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.axis("off")
        ax.set_title(self.title, fontsize=10, loc="left")
        if len(self.data.columns):
            table = ax.table(cellText=rows, colLabels=[str(c) for c in self.data.columns],
                             loc="upper center", cellLoc="left")
            table.auto_set_font_size(False)
            table.set_fontsize(8)
        fig.canvas.draw()
        return fig

    def close(self):
        if self._owns_stream:
            self.source.close()


VIEWS = {"series": TimeSeries, "top": TopN, "hist": Histogram, "lines": KeyLines,
         "table": Table}


def view_of(source, kind: str | None = None, **options) -> View:
    """The view for a source: ``kind`` is one of VIEWS, or None for the default.

    Defaults: a ring buffer / perf buffer map -> a table of its events (from a stream
    the view opens and closes); a histogram map -> a histogram; another map -> top-N
    bars; ``obj.bss`` -> time series; an event stream or a callable -> a table.
    """
    if isinstance(source, View):
        return source
    if kind is None:
        if isinstance(source, Map):
            kind = ("table" if source.type in NO_VALUE_TYPES | {PERF_EVENT_ARRAY}
                    else "hist" if _is_histogram(source) else "top")
        elif isinstance(source, Globals):
            kind = "series"
        else:
            kind = "table"
    if kind not in VIEWS:
        raise ValueError(f"unknown view kind {kind!r}; choose one of {', '.join(VIEWS)}")
    if kind == "table" and isinstance(source, Map) and \
            source.type in NO_VALUE_TYPES | {PERF_EVENT_ARRAY}:
        return Table(source.stream(), owns_stream=True, **options)
    return VIEWS[kind](source, **options)


# --- drawing -----------------------------------------------------------------------


class Panels:
    """Plot views on one Agg figure, drawn by blitting; HTML views beside it.

    No widgets here: ``render()`` gives pixels; Dashboard and plot_maps display them.
    """

    def __init__(self, views: list[View], width: float = WIDTH_IN, row: float = ROW_IN):
        self.views = views
        self.plots = [v for v in views if not v.html]
        self.tables = [v for v in views if v.html]
        n = len(self.plots)
        cols = 1 if n <= 1 else 2
        rows = max(1, math.ceil(n / cols))
        self.figure = Figure(figsize=(width, row * rows), dpi=DPI, layout="constrained")
        FigureCanvasAgg(self.figure)
        for i, view in enumerate(self.plots):
            view.setup(self.figure.add_subplot(rows, cols, i + 1))
        # Each plot's grid cell in pixels (rows from the top), to redraw it alone.
        w, h = self.figure.canvas.get_width_height()
        self._cells = {view: (round(i // cols * h / rows), round((i // cols + 1) * h / rows),
                              round(i % cols * w / cols), round((i % cols + 1) * w / cols))
                       for i, view in enumerate(self.plots)}
        self._paper = np.round(np.array(self.figure.get_facecolor()) * 255).astype(np.uint8)
        self._background = None
        self.full_draws = 0
        self.cell_draws = 0

    def sample(self, now: float):
        for view in self.views:
            view.check()
            obj = view.owner
            if obj is None:
                view.sample(now)
                continue
            with obj.lock:   # Object.destroy() waits until this read is over
                view.check()   # destroyed while we waited for the lock?
                view.sample(now)

    def render(self, now: float) -> np.ndarray | None:
        """Move every artist to its new data; redraw backgrounds only where needed."""
        needs = {view: view.update(now) for view in self.views}
        if not self.plots:   # tables only: nothing to draw here
            return None
        canvas = self.figure.canvas
        redraw = [view for view, need in needs.items() if need == REDRAW]
        if self._background is None or RELAYOUT in needs.values():
            # The whole figure, laid out again (as costly as the drawing itself).
            self.figure.set_layout_engine("constrained")
            canvas.draw()   # animated artists are left out of the background
            self.figure.set_layout_engine("none")
            self._background = canvas.copy_from_bbox(self.figure.bbox)
            self.full_draws += 1
        elif redraw:
            # Only the cells whose limits or labels changed: wipe, draw the axes alone.
            canvas.restore_region(self._background)
            renderer = canvas.get_renderer()
            pixels = np.asarray(canvas.buffer_rgba())
            for view in redraw:
                top, bottom, left, right = self._cells[view]
                pixels[top:bottom, left:right] = self._paper   # the figure's colour
                view.ax.draw(renderer)
            self._background = canvas.copy_from_bbox(self.figure.bbox)
            self.cell_draws += len(redraw)
        else:
            canvas.restore_region(self._background)
        for view in self.plots:
            for artist in view.animated():
                if artist.get_visible():
                    view.ax.draw_artist(artist)
        return _pixels(self.figure)


# --- the dashboard -----------------------------------------------------------------

_running: "weakref.WeakSet[Dashboard]" = weakref.WeakSet()


class Dashboard(widgets.VBox):
    """A live dashboard: plots that refresh every ``interval`` seconds in a thread.

    Controls: pause/resume, stop, the interval, and a status line (refresh rate, rows,
    events lost). It stops by itself when a BPF object it reads is destroyed;
    ``stop()`` ends its thread. ``snapshot(path)`` writes the current view as PNG.
    """

    _stop: threading.Event | None = None   # set at the end of a successful __init__

    def __init__(self, views, interval: float = 1.0, title: str | None = None,
                 start: bool = True):
        self.views = [view_of(v) for v in views]
        if not self.views:
            raise ValueError("a dashboard needs at least one view (a map, obj.bss, a stream...)")
        if interval <= 0:
            raise ValueError("interval must be > 0 seconds")
        self.panels = Panels(self.views)
        self.interval = float(interval)
        self.frames = 0
        self.fps = 0.0
        self.frame_ms = 0.0
        self.error: BaseException | None = None
        self.reason = ""
        self._draw_lock = threading.RLock()
        self._paused = False
        self._thread: threading.Thread | None = None
        self._last_frame = 0.0
        self._gap = 0.0

        self.image = widgets.Image(format="png")
        self.pause_button = widgets.ToggleButton(description="Pause", icon="pause",
                                                 tooltip="pause / resume refreshing")
        self.stop_button = widgets.Button(description="Stop", icon="stop",
                                          tooltip="stop this dashboard for good")
        self.slider = widgets.FloatLogSlider(value=self.interval, base=10, min=-2, max=1,
                                             step=0.05, description="interval (s)",
                                             readout_format=".2f", continuous_update=False)
        self.status = widgets.HTML()
        self.pause_button.observe(self._on_pause, "value")
        self.stop_button.on_click(lambda _: self.stop("stopped"))
        self.slider.observe(self._on_interval, "value")
        header = [widgets.HTML(f"<b>{html.escape(title)}</b>")] if title else []
        controls = widgets.HBox([self.pause_button, self.stop_button, self.slider])
        shown = [self.image] if self.panels.plots else []
        super().__init__(header + [controls] + shown
                         + [v.widget for v in self.panels.tables] + [self.status])
        self._stop = threading.Event()
        self._show_status("ready")
        if start:
            self.start()

    # --- lifecycle -------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> "Dashboard":
        if self._stop.is_set():
            raise RuntimeError("this dashboard was stopped; make a new one with bpfnb.live()")
        if not self.running:
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name=f"bpfnb-live-{id(self):x}")
            _running.add(self)
            self._thread.start()
        return self

    def stop(self, reason: str = "stopped", timeout: float = 5.0):
        """Stop refreshing and end the thread (waits for it up to ``timeout`` s)."""
        if self._stop is None:   # __init__ failed (ipywidgets' __del__ still calls close)
            return
        first = not self._stop.is_set()
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        if first:
            self.reason = reason
            for view in self.views:
                view.close()
            self.pause_button.disabled = self.stop_button.disabled = True
            self.slider.disabled = True
            self._show_status(reason)
        _running.discard(self)

    def close(self):
        """Stop, and close the widgets (they disappear from the notebook)."""
        self.stop()
        boxes = list(self.children)
        while boxes:
            w = boxes.pop()
            boxes.extend(getattr(w, "children", ()))
            w.close()
        super().close()

    def pause(self):
        self._paused = True
        self.pause_button.value = True
        self._show_status("paused")

    def resume(self):
        self._paused = False
        self.pause_button.value = False

    def _on_pause(self, change):
        if change["new"] != self._paused:
            (self.pause if change["new"] else self.resume)()
        self.pause_button.description = "Resume" if change["new"] else "Pause"
        self.pause_button.icon = "play" if change["new"] else "pause"

    def _on_interval(self, change):
        self.interval = float(change["new"])

    def _run(self):
        deadline = time.monotonic()
        while not self._stop.is_set():
            try:
                for view in self.views:   # paused or not
                    view.check()
                if not self._paused:
                    self.refresh()
            except ObjectClosedError as e:
                self.stop(f"stopped: {e}")
                return
            except Exception as e:   # a view's source failed: show it, stop
                self.error = e
                self.stop(f"stopped on error: {type(e).__name__}: {e}")
                return
            deadline = max(deadline + self.interval, time.monotonic())   # no catching up
            self._wait(deadline)

    def _wait(self, deadline: float):
        """Sleep until ``deadline``; wake early on stop() or when a BPF object is gone."""
        while not self._stop.is_set() and all(v.alive() for v in self.views):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._stop.wait(min(left, WATCH_S))

    # --- frames ----------------------------------------------------------------

    def refresh(self):
        """Read every source and draw one frame (the thread calls this; so may you)."""
        with self._draw_lock:
            start = time.monotonic()
            self.panels.sample(start)
            pixels = self.panels.render(start)
            if self.panels.plots:
                self.image.value = png_bytes(pixels)
            end = time.monotonic()
            if self._last_frame:   # a moving average of the gaps, not of 1/gap (biased)
                gap = end - self._last_frame
                self._gap = gap if self.frames < 2 else 0.8 * self._gap + 0.2 * gap
                self.fps = 1.0 / max(self._gap, 1e-6)
            self._last_frame = end
            self.frame_ms = (end - start) * 1000
            self.frames += 1
            if not self._paused and not self._stop.is_set():
                self._show_status("running")

    def _show_status(self, state: str):
        rows = sum(v.rows for v in self.views)
        lost = sum(v.lost for v in self.views)
        color = "#b00" if self.error else "#555"
        lost_html = f"<b style='color:#b00'>{lost:,} lost</b>" if lost else "0 lost"
        self.status.value = (f"<span style='font-size:11px;color:{color}'>{state} · "
                             f"{self.fps:.1f} frames/s · {self.frame_ms:.0f} ms/frame · "
                             f"{rows:,} rows · {lost_html}</span>")

    def snapshot(self, path: str | Path | None = None) -> bytes:
        """The current view (plots, then tables) as PNG bytes; written to ``path`` if given."""
        with self._draw_lock:
            if not self.frames:
                self.refresh()
            # Agg's buffer holds the last frame: only refresh() draws on this figure.
            parts = [_pixels(self.panels.figure).copy()] if self.panels.plots else []
            parts += [_pixels(v.figure()).copy() for v in self.panels.tables]
        data = png_bytes(_stack(parts))
        if path is not None:
            Path(path).write_bytes(data)
        return data

    def __repr__(self):
        state = "running" if self.running else (self.reason or "not started")
        return f"<bpfnb Dashboard: {len(self.views)} views, {state}, {self.frames} frames>"


def _stack(images: list[np.ndarray]) -> np.ndarray:
    """Images one above the other on a white background."""
    width = max(img.shape[1] for img in images)
    padded = []
    for img in images:
        pad = np.empty((img.shape[0], width, 3), np.uint8)
        pad[:] = BACKGROUND
        pad[:, :img.shape[1]] = img
        padded.append(pad)
    return np.concatenate(padded)


def live(*views, interval: float = 1.0, title: str | None = None,
         start: bool = True) -> Dashboard:
    """A live dashboard of ``views`` (View objects, or maps, ``obj.bss``, streams,
    callables returning DataFrames), refreshed every ``interval`` seconds."""
    return Dashboard(views, interval=interval, title=title, start=start)


def stop_all():
    """Stop every running dashboard (kernel shutdown calls this)."""
    for dash in list(_running):
        dash.stop("stopped: shutting down", timeout=1.0)


atexit.register(stop_all)


# --- whole objects ------------------------------------------------------------------


def object_views(obj, maps: list[str] | None = None) -> list[View]:
    """A view per key/value map (a histogram for histogram maps, else top-N bars) and
    a time series of the numeric .bss/.data variables.

    Ring buffers are left out: a second consumer would steal the records of a stream
    the notebook already reads; show one with ``bpfnb.live(stream)`` or
    ``obj.maps.events.live()``. Stack trace maps are left out too (no numbers).
    """
    views: list[View] = []
    for m in obj.maps:
        if (maps is not None and m.name not in maps) or not frames.is_tabular(m) \
                or m.type == STACK_TRACE:
            continue
        views.append(Histogram(m) if _is_histogram(m) else TopN(m))
    for section in ("bss", "data"):
        g = obj.globals.get(section)
        if g is not None and _numeric_names(g):
            views.append(TimeSeries(g))
    return views


def _is_histogram(m: Map) -> bool:
    """bpf/bpfnb.h's histogram maps and libbpf-tools' ``struct hist``, by value type."""
    return (m.value_type.startswith(("struct bpfnb_hist", "struct bpfnb_lhist__"))
            or m.value_type == "struct hist")


def _numeric_names(g: Globals) -> list[str]:
    return [n for n in g if _is_number(getattr(g, n))]


class StaticPlot:
    """A finished figure: shown as PNG by IPython (``_repr_png_``), or ``save(path)``."""

    def __init__(self, figure: Figure, views: list[View]):
        self.figure = figure
        self.views = views

    def png(self) -> bytes:
        self.figure.canvas.draw()
        return png_bytes(_pixels(self.figure))

    _repr_png_ = png

    def save(self, path: str | Path):
        Path(path).write_bytes(self.png())


def plot_maps(obj, maps: list[str] | None = None) -> StaticPlot:
    """One figure of an object's maps as they are now, for ``%%bpf --for`` to end with:
    histogram maps as histograms, other key/value maps as top-N bars, the numeric
    .bss/.data variables as bars."""
    views = [v for v in object_views(obj, maps) if not isinstance(v, TimeSeries)]
    numbers = [(section, name) for section in ("bss", "data") if section in obj.globals
               for name in _numeric_names(obj.globals[section])]
    if numbers:
        def global_variables():
            return pd.DataFrame({"name": [n for _, n in numbers],
                                 "value": [float(getattr(getattr(obj, s), n))
                                           for s, n in numbers]})
        views.append(TopN(global_variables, n=len(numbers), key="name",
                          title="global variables"))
    if not views:
        raise ValueError(f"object {obj.name!r} has no key/value map or numeric global "
                         f"variable to plot")
    panels = Panels(views)
    now = time.monotonic()
    panels.sample(now)
    for view in views:
        view.update(now)
        for artist in view.animated():
            artist.set_animated(False)
    return StaticPlot(panels.figure, views)


# ``bpfnb.live(...)`` calls the module: the package imports it on first use only.
class _CallableModule(types.ModuleType):
    def __call__(self, *views, **options) -> Dashboard:
        return live(*views, **options)


sys.modules[__name__].__class__ = _CallableModule
