"""Dashboard views of a replayed object: bpfnb.live's views reading replayed maps at the
replay clock (through callables, which every view accepts), tied to the object so a
dashboard stops when it is destroyed, as for a live one."""

from __future__ import annotations

import weakref

from ..live import views as live_views
from ..live.sources import _is_number

KINDS = ("top", "hist", "lines", "series", "table")


def _tied(view, obj):
    # A callable source has no owner for the view to watch: give it the replay, whose
    # ``state`` turns "destroyed" as a live Object's does (View.alive polls it).
    view._owner = weakref.ref(obj)
    return view


def _numbers(g):
    """The numeric variables of a replayed section, for a time series."""
    def read():
        return {n: v for n, v in g._asdict().items() if _is_number(v)}
    return read


def view_of(m, kind: str | None = None, **options):
    """The view of a replayed map (defaults as for a live map: a table of a ring
    buffer's records, bars of a histogram, top-N of another map)."""
    if kind is None:
        kind = "table" if not m.is_tabular else "hist" if m.is_histogram else "top"
    if kind not in live_views.VIEWS:
        raise ValueError(f"unknown view kind {kind!r}; choose one of {', '.join(KINDS)}")
    options.setdefault("title", m.name)
    if kind == "table" and m.is_stream and not m.is_tabular:
        n = options.pop("n", 20)
        stream = m.stream()
        return _tied(live_views.Table(lambda: stream.tail(n), n, **options), m.object)
    source = (lambda: m.hist().df) if kind == "hist" else m.to_df
    return _tied(live_views.VIEWS[kind](source, **options), m.object)


def object_views(obj) -> list:
    """A view per recorded key/value map and a time series of the numeric .bss/.data
    variables (ring buffers left out, as bpfnb.live.object_views does)."""
    views = [view_of(m) for m in obj.maps if m.is_tabular]
    for section in ("bss", "data"):
        g = obj.globals.get(section)
        if g is not None and _numbers(g)():
            views.append(_tied(live_views.TimeSeries(_numbers(g), title="." + section), obj))
    return views
