"""FleetStream: one ring or perf buffer's events on every engine, merged with ``host``."""

from __future__ import annotations

import uuid

import pandas as pd

from . import engine


class FleetStream:
    """``fo.maps.events.stream()``: each engine collects its events in the background
    (a bpfnb EventStream there); ``to_df()`` and ``tail()`` bring them here as one frame
    with a leading ``host`` column, ``attrs["status"]`` per host."""

    def __init__(self, fleet_map, type: str | None = None, **options):
        self.map, self.object = fleet_map, fleet_map.object
        self.sid = f"{fleet_map.name}-{uuid.uuid4().hex[:8]}"
        self.opened = {}   # host -> status of opening the stream there
        for eid, reply in self.object.each(engine.stream_open, fleet_map.name, self.sid,
                                           type, options).items():
            self.opened[self.object.fleet.hosts[eid]] = reply.status

    def _gather(self, method: str, *args, **kwargs):
        return self.object.gather(engine.stream_call, self.sid, method, args, kwargs)

    def to_df(self, decode: dict | None = None) -> pd.DataFrame:
        """Every host's events so far: one frame, ``host`` first."""
        from .object import _with_host
        return _with_host(*self._gather("to_df", decode))

    def tail(self, n: int = 10, decode: dict | None = None) -> pd.DataFrame:
        """The last ``n`` events of each host."""
        from .object import _with_host
        return _with_host(*self._gather("tail", n, decode))

    def _by_host(self, what: str) -> pd.Series:
        values, status = self._gather(what)
        s = pd.Series(values, name=what, dtype=object if None in values.values() else None)
        s.attrs["status"] = status
        return s.rename_axis("host")

    @property
    def lost(self) -> pd.Series:
        """Records each host's kernel side failed to write (None where not counted)."""
        return self._by_host("lost")

    @property
    def dropped(self) -> pd.Series:
        """Rows each host's bounded buffer let go (the oldest first)."""
        return self._by_host("dropped")

    def __len__(self):
        return int(self._by_host("len").sum())

    def clear(self):
        self._gather("clear")

    def close(self):
        if self.object.state != "destroyed":
            self.object.each(engine.stream_call, self.sid, "close")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<FleetStream {self.map.name!r} of {self.object.name!r}>"
