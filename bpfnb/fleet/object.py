"""FleetObject: one BPF object loaded on many engines, with a local Object's surface.

``maps``, ``progs``, ``bss``/``data``/``rodata``, ``status``, ``destroy()``: each
read gathers every live engine's answer and labels it by host; an engine that fails
keeps its error in ``status`` and never costs the other hosts their data.
"""

from __future__ import annotations

import atexit
import threading
import uuid
import weakref

import numpy as np
import pandas as pd

from ..namespace import Namespace
from . import engine
from .client import Reply, is_lost


_live: "weakref.WeakSet[FleetObject]" = weakref.WeakSet()


@atexit.register
def _destroy_all():
    """At exit, tear down on the engines at once rather than when their leases run out."""
    for fo in list(_live):
        fo.destroy()


class FleetError(RuntimeError):
    """No engine could answer: the message has every host's error."""


class FleetObject:
    """A BPF object on every engine of a Fleet (see ``Fleet.load``)."""

    def __init__(self, fleet, image: bytes, options: dict, lease: float):
        self.fleet, self.name, self.lease = fleet, options.get("name"), lease
        self.handle = f"{self.name or 'object'}-{uuid.uuid4().hex[:12]}"
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        # engine id -> why it is out (did not answer, load failed, lost)
        self._errors: dict[int, str] = dict(fleet.errors)
        self.state = "loaded"
        replies = fleet.each(engine.load, self.handle, image, lease, options,
                             ids=self.live_ids)
        layout: dict = {}
        for eid, reply in replies.items():
            if reply.ok:
                layout = layout or reply.value
            else:
                self._errors[eid] = reply.status
        self.skipped = {fleet.hosts[e]: r.value["skipped"] for e, r in replies.items()
                        if r.ok and r.value["skipped"]}
        self._tabular = set(layout.get("tabular", []))
        self.maps = Namespace("map", {n: FleetMap(self, n) for n in layout.get("maps", [])})
        self.progs = Namespace("program", {n: FleetProgram(self, n)
                                        for n in layout.get("progs", [])})
        for section in ("bss", "data", "rodata"):
            variables = layout.get("globals", {}).get(section, [])
            object.__setattr__(self, section, FleetGlobals(self, section, variables))
        if not self.live_ids:
            self.state = "destroyed"
            raise FleetError(f"{self.name!r} loaded on no engine:\n" + self._status_text())
        self._renewer = threading.Thread(target=self._renew, daemon=True,
                                         name=f"bpfnb-fleet-renew-{self.handle}")
        self._renewer.start()
        _live.add(self)

    # --- hosts and their status ------------------------------------------------

    @property
    def live_ids(self) -> list[int]:
        return [e for e in self.fleet.ids if e not in self._errors]

    @property
    def status(self) -> pd.Series:
        """Per host: "ok", or the error (type: message) that took it out."""
        hosts = self.fleet.hosts
        return pd.Series({hosts[e]: self._errors.get(e, "ok") for e in self.fleet.ids},
                         name="status", dtype=object).rename_axis("host")

    def _status_text(self) -> str:
        return "\n".join(f"  {h}: {s}" for h, s in self.status.items())

    def each(self, func, *args) -> dict[int, Reply]:
        """``func(handle, *args)`` on every live engine; engines found lost are marked."""
        if self.state == "destroyed":
            from ..libbpf import ObjectClosedError
            raise ObjectClosedError(f"fleet object {self.name!r} was destroyed")
        replies = self.fleet.each(func, self.handle, *args, ids=self.live_ids)
        with self._lock:
            for eid, reply in replies.items():
                if not reply.ok and is_lost(reply.error):
                    self._errors[eid] = reply.status
        return replies

    def gather(self, func, *args) -> tuple[dict[str, object], dict[str, str]]:
        """Values by host of the engines that answered, and every host's status."""
        replies = self.each(func, *args)
        hosts = self.fleet.hosts
        values = {hosts[e]: r.value for e, r in replies.items() if r.ok}
        status = {hosts[e]: self._errors.get(e, "ok") for e in self.fleet.ids}
        status.update({hosts[e]: r.status for e, r in replies.items()})
        if not values:
            raise FleetError(f"no engine answered for {self.name!r}:\n" +
                             "\n".join(f"  {h}: {s}" for h, s in status.items()))
        return values, status

    # --- lifetime ----------------------------------------------------------------

    def _renew(self):
        """Renew the lease on every live engine a few times per lease, until destroyed."""
        period = self.lease / 3
        while not self._stopped.wait(period):
            replies = self.fleet.each(engine.renew, [self.handle], ids=self.live_ids,
                                      timeout=period)
            with self._lock:
                for eid, reply in replies.items():
                    if reply.ok and reply.value:
                        self._errors[eid] = ("LeaseExpired: the engine destroyed the object: "
                                             "its lease ran out before a renewal arrived")
                    elif not reply.ok and is_lost(reply.error) and \
                            not isinstance(reply.error, TimeoutError):
                        # a late renewal is a busy engine, not a dead one: the next may
                        # arrive; an engine the controller declared dead is out
                        self._errors[eid] = reply.status

    def destroy(self):
        """Tear the object down on every engine. Safe to call more than once."""
        if self.state == "destroyed":
            return
        self.state = "destroyed"
        self._stopped.set()
        replies = self.fleet.each(engine.destroy, self.handle, ids=self.live_ids)
        for eid, reply in replies.items():
            if not reply.ok:
                self._errors[eid] = reply.status
        self._renewer.join(timeout=self.fleet.timeout)
        self.fleet.release(self)

    def detach(self) -> pd.Series:
        """Detach every program on every engine (maps stay readable); status by host."""
        replies = self.each(engine.detach)
        hosts = self.fleet.hosts
        return pd.Series({hosts[e]: r.status for e, r in replies.items()}, name="detach",
                         dtype=object)

    def summary(self) -> pd.DataFrame:
        """Host, engine id, uid, the BPF capabilities it holds and status of each engine:
        what ``%%bpf --engines`` shows."""
        info = [self.fleet.engines.get(e, {}) for e in self.fleet.ids]
        caps = [",".join(c.removeprefix("CAP_").lower() for c in i["capabilities"])
                if "capabilities" in i else None for i in info]
        return pd.DataFrame({"host": [self.fleet.hosts[e] for e in self.fleet.ids],
                             "engine": self.fleet.ids, "uid": [i.get("uid") for i in info],
                             "capabilities": caps, "status": list(self.status)})

    def to_dfs(self) -> dict:
        """Every key/value map's fleet frame, by name."""
        return {m.name: m.to_df() for m in self.maps if m.name in self._tabular}

    def live(self, *, interval: float = 1.0):
        """A live dashboard: each key/value map's total and each .bss number, hosts as
        lines."""
        from .. import live
        views = [live.TimeSeries(m.totals, title=f"{m.name} by host")
                 for m in self.maps if m.name in self._tabular]
        views += [live.TimeSeries(lambda v=v: getattr(self.bss, v), title=f".bss {v} by host")
                  for v in self.bss]
        return live.live(*views, interval=interval, title=self.name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.destroy()

    def __repr__(self):
        ok = len(self.live_ids)
        return (f"<FleetObject {self.name!r} {self.state} on {ok}/{len(self.fleet.ids)} "
                f"hosts>")


def _with_host(frames: dict, status: dict) -> pd.DataFrame:
    """Frames by host -> one frame with a leading ``host`` column; attrs["status"].

    ``host`` is made a categorical from codes: adding a string column to each frame
    and converting it afterwards cost as much as the concatenation itself."""
    hosts = list(status)
    parts = list(frames.values())
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    codes = np.repeat([hosts.index(h) for h in frames], [len(f) for f in parts])
    df.insert(0, "host", pd.Categorical.from_codes(codes.astype(np.int32), categories=hosts))
    df.attrs = {"status": status}
    return df


class FleetMap:
    """A map on every engine: ``to_df()`` gathers them into one frame with ``host``."""

    def __init__(self, obj: FleetObject, name: str):
        self.object, self.name = obj, name

    def _call(self, method: str, *args, **kwargs):
        return self.object.gather(engine.call, "maps", self.name, method, args, kwargs)

    def to_df(self, **options) -> pd.DataFrame:
        """Every host's ``to_df(**options)`` in one frame; ``attrs["status"]`` per host."""
        return _with_host(*self._call("to_df", **options))

    def hist(self, kind: str | None = None, *, by_host: bool = False, **options):
        """The histogram summed over hosts, or (``by_host=True``) one per host."""
        from ..hist import Histogram
        frames, status = self._call("hist", kind, **options)
        first = next(iter(frames.values()))
        keys = tuple(first.key_columns)
        if by_host:
            h = Histogram(_with_host({k: pd.DataFrame(v) for k, v in frames.items()}, status))
            keys = ("host", *keys)
        else:
            both = pd.concat([pd.DataFrame(f) for f in frames.values()], ignore_index=True)
            h = Histogram(both.groupby([*keys, "low", "high"], sort=True, observed=True)
                          ["count"].sum().reset_index())
        h.title, h.key_columns, h.log2 = first.title, keys, first.log2
        h.attrs["status"] = status
        return h

    def stream(self, type: str | None = None, **options):
        """The events of a ring or perf buffer from every host (see FleetStream)."""
        from .stream import FleetStream
        return FleetStream(self, type, **options)

    def totals(self, value: str | None = None) -> pd.Series:
        """The sum of the map's ``value`` column (default: value, else count) by host."""
        df = self.to_df()
        column = value or ("value" if "value" in df.columns else "count")
        return df.groupby("host", observed=False)[column].sum()

    def view(self, kind: str = "series", **options):
        """A bpfnb.live view of the map: "series" (default) draws each host's total as
        a line; "top", "lines" and "table" read the fleet frame (host in each key)."""
        from .. import live
        if kind == "series":
            options.setdefault("title", f"{self.name} by host")
            return live.TimeSeries(self.totals, **options)
        return live.view_of(self.to_df, kind, **options)

    def live(self, kind: str = "series", *, interval: float = 1.0, **options):
        """A live dashboard of :meth:`view`."""
        from .. import live
        return live.live(self.view(kind, **options), interval=interval)

    def __repr__(self):
        return f"<FleetMap {self.name!r} of {self.object.name!r}>"


class FleetProgram:
    """A program on every engine: ``attach_*`` calls run on each; a status per host."""

    def __init__(self, obj: FleetObject, name: str):
        self.object, self.name = obj, name

    def __getattr__(self, method):
        if not (method.startswith("attach") or method == "detach"):
            raise AttributeError(f"fleet program {self.name!r}: only attach_*() and "
                                 f"detach() run on every engine, not {method!r}")

        def run(*args, **kwargs) -> pd.Series:
            replies = self.object.each(engine.call, "progs", self.name, method, args, kwargs)
            hosts = self.object.fleet.hosts
            return pd.Series({hosts[e]: "ok" if r.ok else r.status
                              for e, r in replies.items()}, name=method, dtype=object)
        run.__name__ = method
        return run

    def __repr__(self):
        return f"<FleetProgram {self.name!r} of {self.object.name!r}>"


class FleetGlobals:
    """``fo.bss.v``: a Series of v by host; ``fo.bss.v = x`` sets it on every host."""

    def __init__(self, obj: FleetObject, section: str, variables: list):
        object.__setattr__(self, "_obj", obj)
        object.__setattr__(self, "_section", section)
        object.__setattr__(self, "_variables", list(variables))

    def __getattr__(self, name):
        if name.startswith("_") or name not in self._variables:
            raise AttributeError(f"no variable {name!r} in .{self._section}; there are: "
                                 f"{', '.join(self._variables) or 'none'}")
        values, status = self._obj.gather(engine.get_global, self._section, name)
        s = pd.Series(values, name=name).rename_axis("host")
        s.attrs["status"] = status
        return s

    def __setattr__(self, name, value):
        replies = self._obj.each(engine.set_global, self._section, name, value)
        failed = {self._obj.fleet.hosts[e]: r.status for e, r in replies.items() if not r.ok}
        if failed and len(failed) == len(replies):
            raise FleetError(f"could not set {name} on any host: {failed}")

    def __dir__(self):
        return list(self._variables)

    def __iter__(self):
        return iter(self._variables)

    def __repr__(self):
        return f"<.{self._section} of {self._obj.name!r} on the fleet: {self._variables}>"
