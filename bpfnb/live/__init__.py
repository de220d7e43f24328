"""Live dashboards: maps, global variables and event streams as plots that refresh
themselves while the notebook keeps running other cells.

``bpfnb.live(*views, interval=1.0)`` returns a :class:`Dashboard`, an ipywidgets VBox.
A view is one of :class:`TimeSeries`, :class:`TopN`, :class:`Histogram`,
:class:`KeyLines`, :class:`Table`, or a bare source that picks one: a Map (top-N bars;
a table of events for a ring buffer), ``obj.bss`` (its variables as rates), an event
stream (its newest rows) or a callable returning a DataFrame (a table). Maps, globals
and streams of a replay (bpfnb.replay) are sources as a live object's are: a view asks
a source only what both offer (sources.py), and reads at the replay clock.

Drawing: one matplotlib figure rendered with Agg at SCALE (2) device pixels per CSS
pixel, shown at its CSS size (crisp on HiDPI screens). A refresh that finds no view's
data changed draws and sends nothing; otherwise only the views that changed are drawn.
Axes, ticks and labels are drawn only when they change (new limits, new labels); other
frames restore that background and redraw the animated artists in place (blitting),
then encode the pixels to PNG for an ``ipywidgets.Image``, re-compressing only the
bands of rows that changed. A daemon thread per dashboard refreshes it; it ends with
the BPF objects it reads, keeping its last frame (``Dashboard.still()``).

The package: ``sources`` (reading maps, globals, callables), ``scales`` (axis limits,
labels), ``views`` (the View classes), ``draw`` (Agg figure, blitting, ``plot_maps``),
``png`` (PNG encoding), ``dashboard`` (the widget, ``live()``, ``stop_all()``).
Only live/dashboard.py of bpfnb knows about ipywidgets.
"""

from __future__ import annotations

import sys
import types

from .dashboard import WATCH_S, Dashboard, live, stop_all
from .draw import BACKGROUND, ROW_IN, Panels, StaticPlot, plot_maps
from .png import FrameEncoder, png_bytes
from .scales import LABEL_CHARS, bucket_label, nice_ceiling
from .sources import labels_values
from .pick import VIEWS, object_views, view_of
from .views import (BLIT, DPI, LABELS, REDRAW, RELAYOUT, SAME, SCALE, WIDTH_IN, Histogram,
                    KeyLines, Table, TimeSeries, TopN, View)

__all__ = ["live", "stop_all", "Dashboard", "View", "TimeSeries", "TopN", "Histogram",
           "KeyLines", "Table", "VIEWS", "view_of", "object_views", "plot_maps",
           "StaticPlot", "Panels", "png_bytes", "labels_values", "nice_ceiling",
           "bucket_label", "DPI", "SCALE", "WIDTH_IN", "ROW_IN", "BACKGROUND", "SAME",
           "BLIT", "LABELS", "REDRAW", "RELAYOUT", "LABEL_CHARS", "WATCH_S", "FrameEncoder"]


# ``bpfnb.live(...)`` calls the module: the package imports it on first use only.
class _CallableModule(types.ModuleType):
    def __call__(self, *views, **options) -> Dashboard:
        return live(*views, **options)


sys.modules[__name__].__class__ = _CallableModule
