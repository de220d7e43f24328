"""Views: what a dashboard panel reads and how it draws it.

A view is one of :class:`TimeSeries`, :class:`TopN`, :class:`Histogram`,
:class:`KeyLines`, :class:`Table`, or a bare source that picks one (pick.py: a Map
gets top-N bars, or a table of events for a ring buffer; ``obj.bss`` its variables as
rates; an event stream or a callable returning a DataFrame a table). Sources are a live
object's parts or a replay's alike (sources.kind_of says which kind, by what it
offers). No ipywidgets here: a
Table takes its HTML widget from dashboard.py. What they read: sources.py; their axes'
limits and labels: scales.py.
"""

from __future__ import annotations

import html
import math
import weakref
from collections import deque

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..libbpf import ObjectClosedError
from .scales import _Scale, _short, _widest, bucket_label, thin_labels, value_axis
from .sources import (GLOBALS, MAP, STREAM, MapCache, _frame, _numbers, _numeric_names,
                      _owner, _source_name, kind_of)

DPI = 72       # CSS pixels per inch: the size a figure is shown at
SCALE = 2      # device pixels per CSS pixel: figures are drawn at DPI * SCALE (HiDPI)
WIDTH_IN = 10.0
# What a view's update() asks of the frame: nothing (what it shows has not changed);
# move its artists only (blit); redraw its y tick labels (other names at the same
# ticks); redraw the axes background too (new limits, legend); or lay the figure out
# again (wider labels).
SAME, BLIT, LABELS, REDRAW, RELAYOUT = -1, 0, 1, 2, 3

# --- views -------------------------------------------------------------------------


class View:
    """One panel of a dashboard.

    ``sample()`` reads the source (in the refresh thread, with the BPF object locked);
    ``update()`` moves the artists and returns what the frame must draw: SAME when
    what it would show is what it showed last (nothing), else BLIT, LABELS, REDRAW
    or RELAYOUT. ``rows`` and ``lost`` feed the status line.
    """

    html = False
    accepts: tuple = (MAP,)   # the kinds of source it reads (sources.kind_of), and callables
    _drawn: tuple = ()        # attributes holding its matplotlib artists

    def __init__(self, source, title: str | None = None):
        kind = kind_of(source)
        if kind not in self.accepts and (kind is not None or not callable(source)):
            kinds = " or ".join([_KIND_NAMES[k] for k in self.accepts]
                                + ["a callable returning a DataFrame"])
            raise TypeError(f"{type(self).__name__} reads {kinds}, "
                            f"not {type(source).__name__}")
        self.title = title or _source_name(source)
        owner = _owner(source)
        # Weak: a dashboard outlives cells, and must not keep a BPF object alive.
        self._owner = None if owner is None else weakref.ref(owner)
        self._section = source._section if kind == GLOBALS else None
        self._source = None if self._section else source   # Globals holds its Object
        self.ax = None
        self.rows = 0
        self.lost = 0
        self._shown = None   # what update() last drew, in a form cheap to compare
        self._cache = MapCache()   # the last reading of a map source
        self._room = 0.0   # pixels: the widest value label the layout has room for

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

    def _same(self, *shown) -> bool:
        """True if ``shown`` (label lists, numpy arrays: what update() is about to
        draw) is what it drew last; else remember it. Arrays compare by their bytes,
        so NaN equals NaN."""
        key = tuple(x.tobytes() if isinstance(x, np.ndarray) else x for x in shown)
        if key == self._shown:
            return True
        self._shown = key
        return False

    def close(self):
        """Release what the view owns (a stream it opened itself)."""

    def release(self):
        """Drop the axes, the artists and the source, keeping what was read (``data``,
        ``history``, ``rows``): a stopped dashboard must not hold a figure or a BPF
        object's maps. Call close() first."""
        self.ax = None
        self._source = None
        self._cache = MapCache()
        for name in self._drawn:
            setattr(self, name, type(getattr(self, name))())

    def _fit_y(self, top: float, need: int) -> int:
        """Move the y limit (``self._scale``) to fit ``top``: the axes are drawn again,
        and the figure laid out again only if the new tick labels are wider than the
        layout made room for (a few times in a dashboard's life: they are short)."""
        if not self._scale.fit(top):
            return need
        self.ax.set_ylim(0, self._scale.top)
        widest = _widest(self.ax, self.ax.yaxis.get_ticklabels())
        if widest > self._room:
            self._room = widest
            return RELAYOUT
        return max(need, REDRAW)


class TimeSeries(View):
    """Counters or global variables over time, as rates per second (``rate=False``:
    the values themselves).

    ``source``: ``obj.bss`` (``names`` picks variables; default every number), a Map
    (the total of its values), or a callable returning a number, a dict of numbers or a
    DataFrame (its numeric columns summed).
    """

    accepts = (MAP, GLOBALS)
    _drawn = ("lines",)

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
        value_axis(ax.yaxis)
        ax.tick_params(labelsize=8)
        self._room = _widest(ax, ax.yaxis.get_ticklabels())
        ax.set_xlabel("seconds ago", fontsize=8)
        ax.set_ylabel("per second" if self.rate else "value", fontsize=8)

    def sample(self, now):
        source = self.source
        if self.names is None and kind_of(source) == GLOBALS:
            self.names = _numeric_names(source)   # once: decoding every variable costs
        values = self._cache.read(source, _numbers, source, self.names)
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
        # The newest point alone: a line that only scrolls on shows nothing new.
        newest = self.history[-1][1] if self.history else {}
        if self._same(list(newest), np.fromiter(newest.values(), float, len(newest))):
            return SAME
        need = BLIT
        names = list(newest)
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
        return self._fit_y(top, need)

    def animated(self):
        return list(self.lines.values())


class TopN(View):
    """The ``n`` largest entries of a map (or of a callable's DataFrame) as bars.

    ``key``/``value`` name the label and number columns (default: a map's key and its
    ``value``). ``rate=True`` ranks by growth per second instead of totals. Widths are
    current at every frame; the ranking (which keys, in which order) is redone at most
    every ``rerank`` seconds, so that labels do not flicker on a busy machine.
    """

    _drawn = ("bars",)

    def __init__(self, source, n: int = 10, *, key=None, value: str | None = None,
                 rate: bool = False, rerank: float = 1.0, title: str | None = None):
        super().__init__(source, title)
        self.n, self.key, self.value = n, key, value
        self.rate, self.rerank = rate, rerank
        self.labels: list[str] = []
        self._rows: tuple[list, list] = ([], [])   # the labels and values to show
        self._data: pd.DataFrame | None = None
        self.bars: list = []
        self._prev: tuple[float, dict] | None = None
        self._ranked_at = -math.inf
        self._widest = 0.0   # pixels: the widest key label the layout has room for
        self._scale = _Scale()

    def setup(self, ax):
        super().setup(ax)
        self.bars = list(ax.barh(np.arange(self.n), np.zeros(self.n), height=0.7,
                                 animated=True, color="C0"))
        ax.set_ylim(self.n - 0.5, -0.5)   # largest on top
        ax.set_xlim(0, self._scale.top)
        value_axis(ax.xaxis)
        ax.set_yticks([])
        ax.tick_params(labelsize=8)

    def sample(self, now):
        labels, values = self._cache.labels_values(self.source, self.key,
                                                       self.value)
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
        shown = self._rows[0]
        if now - self._ranked_at >= self.rerank or len(shown) < min(self.n, len(current)):
            keys = list(current)
            vals = np.fromiter(current.values(), float, len(keys))
            order = np.argsort(-np.nan_to_num(vals, nan=-np.inf), kind="stable")[:self.n]
            shown = [keys[i] for i in order]
            self._ranked_at = now
        self._rows = (shown, [float(current.get(k, 0.0)) for k in shown])
        self._data = None

    @property
    def data(self) -> pd.DataFrame:
        """The entries shown: ``label`` and ``value``, largest first."""
        if self._data is None:
            labels, values = self._rows
            self._data = pd.DataFrame({"label": labels,
                                       "value": np.array(values, dtype=float)})
        return self._data

    def update(self, now):
        labels = self._rows[0]
        values = np.array(self._rows[1], dtype=float)
        if self._same(labels, values):
            return SAME
        for i, bar in enumerate(self.bars):
            shown = i < len(values)
            bar.set_width(values[i] if shown and np.isfinite(values[i]) else 0.0)
            bar.set_visible(shown)
        need = BLIT
        if labels != self.labels:
            same_ticks = len(labels) == len(self.labels)
            self.labels = labels
            ticks = self.ax.set_yticks(np.arange(len(labels)), [_short(x) for x in labels],
                                       fontsize=8)
            widest = _widest(self.ax, [t.label1 for t in ticks])
            need = RELAYOUT if widest > self._widest else LABELS if same_ticks else REDRAW
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

    _drawn = ("bars",)

    def __init__(self, source, *, title: str | None = None):
        super().__init__(source, title)
        self.data = pd.DataFrame(columns=["low", "high", "count"])
        self._read = None   # the DataFrame the source gave last
        self._columns: tuple = (np.zeros(0),) * 3   # low, high, count
        self._edges = None   # the buckets' bounds the bars were made for
        self.bars: list = []
        self.buckets: list[str] = []
        self._scale = _Scale()

    def setup(self, ax):
        super().setup(ax)
        ax.set_ylim(0, self._scale.top)
        value_axis(ax.yaxis)
        ax.tick_params(labelsize=8)
        self._room = _widest(ax, ax.yaxis.get_ticklabels())
        ax.set_ylabel("count", fontsize=8)

    def sample(self, now):
        source = self.source
        df = self._cache.read(source, lambda m: m.hist(), source) \
            if kind_of(source) == MAP else _frame(source)
        if df is self._read:   # the map has not changed
            return
        self._read = df
        missing = {"low", "high", "count"} - set(df.columns)
        if missing:
            raise ValueError(f"histogram of {self.title}: no column {', '.join(sorted(missing))}")
        if len(df.columns) > 3:   # keyed (one per pid, per CPU...): the sum over the keys
            df = pd.DataFrame(df).groupby(["low", "high"], as_index=False, sort=True)["count"].sum()
        self.data = df if list(df.columns) == ["low", "high", "count"] else \
            df[["low", "high", "count"]]
        self.rows = len(df)
        self._columns = tuple(df[c].to_numpy(dtype=float) for c in ("low", "high", "count"))

    def update(self, now):
        lows, highs, counts = self._columns
        if self._same(lows, highs, counts):
            return SAME
        need = BLIT
        edges = lows.tobytes() + highs.tobytes()
        if edges != self._edges:   # new buckets: new bars and labels
            self._edges = edges
            buckets = [bucket_label(lo, hi) for lo, hi in zip(lows.tolist(), highs.tolist())]
            for bar in self.bars:
                bar.remove()
            x = np.arange(len(buckets))
            self.bars = list(self.ax.bar(x, counts, width=0.85, animated=True, color="C2"))
            self.ax.set_xlim(-0.5, max(len(buckets), 1) - 0.5)
            thin_labels(self.ax, buckets)
            self.buckets = buckets
            need = RELAYOUT
        for bar, c in zip(self.bars, counts):
            bar.set_height(c)
        return self._fit_y(float(counts.max()) if len(counts) else 0.0, need)

    def animated(self):
        return self.bars


class KeyLines(View):
    """One line per key over time, for the ``n`` busiest keys of a map.

    Keys are ranked by a moving average of their rate (or value), at most every
    ``rerank`` seconds and with a head start for the keys shown, so the lines do not
    flicker between keys of similar size.
    """

    _drawn = ("lines",)

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
        value_axis(ax.yaxis)
        ax.tick_params(labelsize=8)
        self._room = _widest(ax, ax.yaxis.get_ticklabels())
        ax.set_xlabel("seconds ago", fontsize=8)
        ax.set_ylabel("per second" if self.rate else "value", fontsize=8)

    def sample(self, now):
        labels, values = self._cache.labels_values(self.source, self.key,
                                                       self.value)
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
        # The newest point of the ranked keys alone: scrolling on shows nothing new.
        newest = self.history[-1][1] if self.history else {}
        if self._same(self.ranked, np.fromiter(newest.values(), float, len(newest))):
            return SAME
        need = BLIT
        ranked = self.ranked
        # Keep a key on its line (and colour) while it stays in the top n.
        if set(ranked) != set(self.keys):
            stay = [k for k in self.keys if k in ranked]
            self.keys = stay + [k for k in ranked if k not in stay]
            shown = self.lines[:len(self.keys)]
            self.ax.legend(shown, [_short(k) for k in self.keys], loc="upper left",
                           fontsize=8)
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
        return self._fit_y(top, need)

    def animated(self):
        return self.lines


class Table(View):
    """The newest ``n`` rows of an event stream, or the first ``n`` rows of a map's or
    a callable's DataFrame, as an HTML table."""

    html = True
    accepts = (MAP, STREAM)

    def __init__(self, source, n: int = 20, *, title: str | None = None,
                 owns_stream: bool = False):
        super().__init__(source, title)
        self.n = n
        self.data = pd.DataFrame()
        self._owns_stream = owns_stream
        self._paged: pd.DataFrame | None = None   # the rows the page shows
        self.page = ""   # the HTML the dashboard shows (views know no widgets)

    def sample(self, now):
        if kind_of(self.source) == STREAM:
            self.data = self.source.tail(self.n)
            self.lost = self.source.lost  # None: not counted (a prebuilt ring buffer)
        else:
            self.data = _frame(self.source).head(self.n)
        self.rows = len(self.data)

    def update(self, now):
        if self._paged is not None and self.data.equals(self._paged):
            return SAME
        self._paged = self.data
        body = self.data.to_html(index=False, border=0, max_rows=self.n)
        self.page = f"<div style='font-size:11px'><b>{html.escape(self.title)}</b>{body}</div>"
        return BLIT

    def animated(self):
        return []

    def figure(self) -> Figure:
        """The table drawn with matplotlib, for snapshots."""
        rows = self.data.astype(str).values.tolist() or [[""] * max(len(self.data.columns), 1)]
        fig = Figure(figsize=(WIDTH_IN, 0.3 * (len(rows) + 2)), dpi=DPI * SCALE)
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


_KIND_NAMES = {MAP: "a map", GLOBALS: "a globals section (obj.bss)", STREAM: "an event stream"}
