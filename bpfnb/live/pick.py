"""Which view a source gets: ``view_of`` (a bare source's default view, or the one
``kind`` names) and ``object_views`` (the views of a whole live object or replay)."""

from __future__ import annotations

from ..follow import uncounted
from .sources import GLOBALS, MAP, _numeric_names, kind_of
from .views import Histogram, KeyLines, Table, TimeSeries, TopN, View


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
    is_map = kind_of(source) == MAP
    if kind is None:
        if is_map:
            kind = ("table" if source.is_stream else "hist" if source.is_histogram
                    else "top")
        elif kind_of(source) == GLOBALS:
            kind = "series"
        else:
            kind = "table"
    if kind not in VIEWS:
        raise ValueError(f"unknown view kind {kind!r}; choose one of {', '.join(VIEWS)}")
    if kind == "table" and is_map and source.is_stream:
        return Table(source.stream(), owns_stream=True, **options)
    return VIEWS[kind](source, **options)


def object_views(obj, maps: list[str] | None = None) -> list[View]:
    """A view per key/value map (a histogram for histogram maps, else top-N bars) and
    a time series of the numeric .bss/.data variables, of a live object or a replay.

    Ring buffers are left out: a second consumer would steal the records of a stream
    the notebook already reads; show one with ``bpfnb.live(stream)`` or
    ``obj.maps.events.live()``. Stack trace maps are left out too (no numbers).
    Finding the numeric variables reads them: no read of the notebook's (bpfnb.follow).
    """
    views: list[View] = []
    for m in obj.maps:
        if (maps is not None and m.name not in maps) or not m.is_tabular \
                or m.type_name == "stack_trace":
            continue
        views.append(Histogram(m) if m.is_histogram else TopN(m))
    with uncounted():
        for section in ("bss", "data"):
            g = obj.globals.get(section)
            if g is not None and _numeric_names(g):
                views.append(TimeSeries(g))
    return views
