"""Recordings asked for before an object loads: ``%%bpf NAME --no-load --recording
PATH`` opens the object, and its recording (bpfnb.record) starts when ``NAME.load()``
loads it, so the steps taken by hand after it are recorded and replay."""

from __future__ import annotations

import warnings

# Recordings asked for before the object loaded (record_at_load), by object.
_at_load: dict[int, dict] = {}


def record_at_load(obj, path, **options):
    """Record ``obj`` (opened, not loaded yet: ``%%bpf NAME --no-load --recording
    PATH``) from its ``load()`` on; ``options`` as bpfnb.record.record takes them."""
    if obj.state != "opened":
        raise ValueError(f"{obj.name!r} is {obj.state}: record_at_load() is for an object "
                         f"not loaded yet; record it with obj.record(...)")
    _at_load[id(obj)] = dict(options, path=path)


def loaded(obj):
    """``obj`` just loaded: start the recording asked for before (a warning, not an
    error, when it cannot start: the program runs either way)."""
    options = _at_load.pop(id(obj), None)
    if options is None:
        return
    from . import record
    try:
        record(obj, options.pop("path"), **options)
    except Exception as e:
        warnings.warn(f"{obj.name!r} loaded but is not recorded: {type(e).__name__}: {e}",
                      RuntimeWarning, stacklevel=3)


def forget(obj):
    """The object is being destroyed: it will not load."""
    _at_load.pop(id(obj), None)
