"""The reads a notebook makes of an object, counted in order: a recording made with
``reads=True`` snapshots at each one (bpfnb.record), and a replay with
``follow="reads"`` answers its n-th read with the n-th recorded one (bpfnb.replay),
so the same cells see the same numbers live and replayed.

What counts, in the same public methods of a live object and of a replay: on the
thread that started the recording (or made the replay), each outermost call of

    a global's value    obj.bss.x, obj.bss["x"]; obj.bss._asdict() and print(obj.bss)
    a map               m.to_df(), m.hist(), m.to_text(), len(m)
    a stream            s.to_df(), s.tail(n), len(s)

Reads these make inside (hist() reading the map) belong to it; the printed form of a
map or a stream (its repr) does not count; other threads (dashboards, the recorder,
stream collectors) never count. A read's target is "globals", "maps/<map>" or
"streams/<map>".
"""

from __future__ import annotations

import contextlib
import functools
import threading

_local = threading.local()


def counted(parts):
    """Decorator of a public read of a part of an object: ``parts(part)`` gives (the
    object, the read's target). The object's ``_follower`` (None: nothing counts)
    has ``thread`` and ``read(target, call, part, fn, args, kwargs)``."""
    def decorate(fn):
        call = fn.__name__.strip("_")

        @functools.wraps(fn)
        def read(self, *args, **kwargs):
            if getattr(_local, "inside", False):
                return fn(self, *args, **kwargs)
            obj, target = parts(self)
            follower = getattr(obj, "_follower", None)
            if follower is None or follower.thread != threading.get_ident():
                return fn(self, *args, **kwargs)
            _local.inside = True
            try:
                return follower.read(target, call, self,
                                     lambda: fn(self, *args, **kwargs), args, kwargs)
            finally:
                _local.inside = False
        return read
    return decorate


@contextlib.contextmanager
def uncounted():
    """Reads made inside are no reads of the notebook (a map's printed form)."""
    outer = getattr(_local, "inside", False)
    _local.inside = True
    try:
        yield
    finally:
        _local.inside = outer


def globals_row(obj) -> dict:
    """Every shown variable of .bss, .data, .rodata: {"bss.total": value}."""
    with uncounted():
        return {f"{section}.{var}": value for section in ("bss", "data", "rodata")
                if (g := obj.globals.get(section)) is not None
                for var, value in g._asdict().items()}


class Marks:
    """The reads of a recording's object (``recording._mark`` queues each for the
    recorder's thread), counted on ``thread``.

    A global's read takes the row of every global and answers from it, so the value
    the notebook sees is the one recorded. A plain ``to_df()`` or ``hist()`` keeps a
    copy of its frame (the notebook may change the frame it got). A stream's read
    keeps the rows it held, as rows of the recorded stream (``stream_rows``)."""

    def __init__(self, recording, thread: int):
        self.recording = recording
        self.thread = thread
        self.count = 0

    def read(self, target, call, part, fn, args, kwargs):
        payload, obj = None, self.recording._obj
        if obj is None:  # the recording just ended
            return fn()
        if target == "globals":
            row = globals_row(obj)
            key = f"{part._section}.{args[0]}" if args else None
            if call == "asdict":
                result = {var: row[f"{part._section}.{var}"] for var in part}
            elif key in row:
                result = row[key]
            else:  # an internal variable: reachable by name, never recorded
                result = fn()
            payload = row
        else:
            result = fn()
            plain = not args and not kwargs
            if target.startswith("maps/") and plain and call in ("to_df", "hist"):
                frame = result if call == "to_df" else getattr(result, "df", None)
                payload = None if frame is None else frame.copy()
            elif target.startswith("streams/"):
                payload = self.recording._stream_rows(part, call, result)
        self.recording._mark(target, call, payload)
        return result
