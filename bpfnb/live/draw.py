"""Drawing: views on one matplotlib figure rendered with Agg, at SCALE device pixels
per CSS pixel.

A frame draws only the views whose data changed (none: no frame). Axes, ticks and
labels are drawn only when they change (new limits, new labels); otherwise a view's
cell is restored from the saved background and its animated artists redrawn in place
(blitting). ``plot_maps`` draws a still figure of an object's maps. No widgets here:
the Dashboard encodes (png.py) and displays what this draws.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .png import png_bytes
from .sources import _numeric_names
from .pick import object_views
from .views import (DPI, LABELS, RELAYOUT, REDRAW, SAME, SCALE, WIDTH_IN, TimeSeries, TopN,
                    View)

ROW_IN = 3.0
BACKGROUND = (255, 255, 255)


def _pixels(figure: Figure) -> np.ndarray:
    """The figure's last drawn pixels: a view of Agg's buffer (RGB of its RGBA)."""
    return np.asarray(figure.canvas.buffer_rgba())[..., :3]


# --- drawing -----------------------------------------------------------------------


class Panels:
    """Plot views on one Agg figure, drawn by blitting; HTML views beside it.

    The figure has SCALE device pixels per CSS pixel (crisp on HiDPI screens). Each
    plot owns a cell: its axes and their labels as laid out, the gaps between
    neighbours split in the middle. A frame touches only the cells of views whose data
    changed, and none when no view changed; a view whose labels would leave its cell
    lays the figure out again. No widgets here: ``render()`` gives pixels; Dashboard
    and plot_maps display them.
    """

    def __init__(self, views: list[View], width: float = WIDTH_IN, row: float = ROW_IN):
        self.views = views
        self.plots = [v for v in views if not v.html]
        self.tables = [v for v in views if v.html]
        n = len(self.plots)
        cols = 1 if n <= 1 else 2
        rows = max(1, math.ceil(n / cols))
        self.figure = Figure(figsize=(width, row * rows), dpi=DPI * SCALE,
                             layout="constrained")
        FigureCanvasAgg(self.figure)
        for i, view in enumerate(self.plots):
            view.setup(self.figure.add_subplot(rows, cols, i + 1))
        self._grid = {view: divmod(i, cols) for i, view in enumerate(self.plots)}
        self._shape = rows, cols
        self._cells: dict = {}   # view -> (rows, columns) slices, set at each layout
        self._areas: dict = {}   # the same of each view's axes (where its artists draw)
        self._paper = np.round(np.array(self.figure.get_facecolor()) * 255).astype(np.uint8)
        self._background: np.ndarray | None = None   # RGBA without the animated artists
        self.full_draws = 0   # whole figure laid out and drawn
        self.cell_draws = 0   # one view's axes drawn again (new limits, labels)
        self.label_draws = 0  # one view's y tick labels drawn again
        self.blits = 0        # one view's artists drawn on its background

    @property
    def css_size(self) -> tuple[int, int]:
        """The figure's size in CSS pixels: what an <img> of it should be shown at."""
        w, h = self.figure.canvas.get_width_height()
        return round(w / SCALE), round(h / SCALE)

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
        """Move every artist to its new data and draw the views that changed: the
        frame's (h, w, 4) RGBA pixels (Agg's buffer), or None if no plot changed."""
        needs = {view: view.update(now) for view in self.views}
        if not self.plots:   # tables only: nothing to draw here
            return None
        canvas = self.figure.canvas
        changed = [view for view in self.plots if needs[view] != SAME]
        if not changed:
            return None
        relayout = self._background is None or RELAYOUT in needs.values()
        if not relayout:
            renderer = canvas.get_renderer()
            relayout = not all(self._fits(view, renderer) for view in changed
                               if needs[view] == REDRAW) or \
                not all(self._labels_fit(view, renderer) for view in changed
                        if needs[view] == LABELS)
        if relayout:
            # The whole figure, laid out again (as costly as the drawing itself).
            self.figure.set_layout_engine("constrained")
            canvas.draw()   # animated artists are left out of the background
            self.figure.set_layout_engine("none")
            self._background = np.array(canvas.buffer_rgba())
            self._cells = self._allot(canvas.get_renderer())
            self._areas = {view: _rows_columns(view.ax.bbox, canvas, pad=2)
                           for view in self.plots}
            self.full_draws += 1
            changed = self.plots
        else:
            pixels = np.asarray(canvas.buffer_rgba())
            for view in changed:
                cell = self._cells[view]
                if needs[view] == REDRAW:   # new limits or labels: its axes alone
                    pixels[cell] = self._paper   # the figure's colour
                    view.ax.draw(renderer)
                    self._background[cell] = pixels[cell]
                    self.cell_draws += 1
                    continue
                if needs[view] == LABELS:
                    self._draw_labels(view, pixels, renderer)
                # its plot area as it is without its artists (they are clipped to it)
                area = self._areas[view]
                pixels[area] = self._background[area]
        for view in changed:
            for artist in view.animated():
                if artist.get_visible():
                    view.ax.draw_artist(artist)
        self.blits += len(changed)
        return np.asarray(canvas.buffer_rgba())

    def _allot(self, renderer) -> dict:
        """Each plot's cell in pixels (row and column slices, rows from the top): the
        extent of its axes and labels as laid out, gaps split between neighbours."""
        w, h = self.figure.canvas.get_width_height()
        rows, cols = self._shape
        boxes = {view: view.ax.get_tightbbox(renderer) for view in self.plots}

        def edges(n, lo, hi, size, index):   # boundaries between grid lines, in pixels
            out = [0.0]
            for k in range(1, n):
                before = [hi(b) for v, b in boxes.items() if index(v) == k - 1]
                after = [lo(b) for v, b in boxes.items() if index(v) == k]
                out.append((max(before) + min(after)) / 2 if before and after
                           else k * size / n)
            return out + [float(size)]
        xs = edges(cols, lambda b: b.x0, lambda b: b.x1, w, lambda v: self._grid[v][1])
        # Rows run top-down; display y runs bottom-up.
        ys = edges(rows, lambda b: h - b.y1, lambda b: h - b.y0, h,
                   lambda v: self._grid[v][0])
        cells = {}
        for view, (r, c) in self._grid.items():
            cells[view] = (slice(round(ys[r]), round(ys[r + 1])),
                           slice(round(xs[c]), round(xs[c + 1])))
        return cells

    def _draw_labels(self, view, pixels, renderer):
        """Draw a view's y tick labels again, alone: in the strip left of its axes,
        beside the plot area (what the tick marks near the spine hold is unchanged:
        the same ticks). A third of the cost of drawing its axes."""
        rows, cols = self._cells[view]
        area_rows, area_cols = self._areas[view]
        strip = (slice(area_rows.start + 2, area_rows.stop - 2),   # inside the spines
                 slice(cols.start, area_cols.start - 1))          # and left of them
        kept = pixels[rows, cols].copy()
        pixels[strip] = self._paper
        view.ax.yaxis.draw(renderer)
        drawn = pixels[strip].copy()
        pixels[rows, cols] = kept   # what the axis drew outside the strip is not new
        pixels[strip] = self._background[strip] = drawn
        self.label_draws += 1

    def _labels_fit(self, view, renderer) -> bool:
        """Whether the view's new y tick labels stay in its cell (cheaper than _fits:
        the labels alone)."""
        h = self.figure.canvas.get_width_height()[1]
        rows, cols = self._cells[view]
        for text in view.ax.yaxis.get_ticklabels():
            box = text.get_window_extent(renderer)
            if box.x0 < cols.start or h - box.y1 < rows.start or h - box.y0 > rows.stop:
                return False
        return True

    def _fits(self, view, renderer) -> bool:
        """Whether the view's axes with their new limits and labels stay in its cell."""
        box = view.ax.get_tightbbox(renderer)
        h = self.figure.canvas.get_width_height()[1]
        rows, cols = self._cells[view]
        return (box.x0 >= cols.start and box.x1 <= cols.stop
                and h - box.y1 >= rows.start and h - box.y0 <= rows.stop)

    def close(self):
        """Free the pixel buffers (Agg's renderer, the saved background) now: the
        figure itself waits for the garbage collector, its artists refer to each other."""
        self._background = None
        canvas = self.figure.canvas
        canvas.renderer = None
        canvas._lastKey = None   # a later draw makes a new renderer
        self.figure.clear()


def _rows_columns(bbox, canvas, pad: int = 0) -> tuple[slice, slice]:
    """A display-space box as numpy slices of the figure's pixels (rows from the top),
    grown by ``pad`` pixels and cut to the figure."""
    w, h = canvas.get_width_height()
    return (slice(max(0, math.floor(h - bbox.y1) - pad), min(h, math.ceil(h - bbox.y0) + pad)),
            slice(max(0, math.floor(bbox.x0) - pad), min(w, math.ceil(bbox.x1) + pad)))


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


# --- whole objects ------------------------------------------------------------------


class StaticPlot:
    """A finished figure: shown as PNG by IPython (``_repr_png_``), or ``save(path)``."""

    def __init__(self, figure: Figure, views: list[View]):
        self.figure = figure
        self.views = views

    def png(self) -> bytes:
        self.figure.canvas.draw()
        return png_bytes(_pixels(self.figure))

    def _repr_png_(self):
        """The PNG, shown at its CSS size (its pixels are SCALE times as many)."""
        w, h = self.figure.canvas.get_width_height()
        return self.png(), {"width": round(w / SCALE), "height": round(h / SCALE)}

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
