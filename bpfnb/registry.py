"""The registry: every Object the ``%%bpf`` magic made, by cell name, and its teardown.

One process (one Jupyter kernel) has one registry, ``bpfnb.registry.registry``. It
owns the objects: re-running a cell replaces the object of that name (the magic
attaches the new one before the old one is destroyed, so for a moment both count);
``%bpf stop``, unloading the extension and interpreter exit destroy them. When the kernel
process is killed, the kernel itself detaches everything: links and programs are file
descriptors and nothing is pinned.

Knowing when an object goes away (for live views):

- poll ``obj.state == "destroyed"``: works for every Object, also one destroyed by
  hand, by garbage collection, or at exit;
- or ``registry.on_teardown(obj, callback)`` for an object the registry owns: the
  callback runs *before* the object is destroyed, so a thread reading its maps or ring
  buffers can stop while they still exist.
"""

from __future__ import annotations

import atexit
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

from .libbpf import Object


@dataclass
class Entry:
    name: str
    obj: Object
    created: float = field(default_factory=time.monotonic)  # for ages
    callbacks: list = field(default_factory=list)

    @property
    def age(self) -> float:
        return time.monotonic() - self.created


class Registry:
    """Objects by name; ``install`` replaces, ``stop`` destroys."""

    def __init__(self):
        self._entries: dict[str, Entry] = {}
        self._lock = threading.RLock()

    def install(self, name: str, obj: Object) -> Entry:
        """Own ``obj`` under ``name``, destroying the object that had the name."""
        with self._lock:
            old = self._entries.get(name)
            if old is not None and old.obj is obj:
                return old
            if old is not None:
                self.stop(name)
            entry = self._entries[name] = Entry(name, obj)
            return entry

    def get(self, name: str) -> Object | None:
        with self._lock:
            entry = self._entries.get(name)
            return entry.obj if entry is not None else None

    def entries(self) -> list[Entry]:
        """Live entries; objects destroyed by other means are forgotten here."""
        with self._lock:
            for name in [n for n, e in self._entries.items() if e.obj.state == "destroyed"]:
                del self._entries[name]
            return list(self._entries.values())

    def names(self) -> list[str]:
        return [e.name for e in self.entries()]

    def owns(self, obj: Object) -> bool:
        with self._lock:
            return any(e.obj is obj for e in self._entries.values())

    def on_teardown(self, obj: Object, callback: Callable[[Object], None]):
        """Call ``callback(obj)`` right before the registry destroys ``obj``."""
        with self._lock:
            for entry in self._entries.values():
                if entry.obj is obj:
                    entry.callbacks.append(callback)
                    return
        raise ValueError(f"{obj!r} is not owned by the registry: poll obj.state instead")

    def stop(self, name: str) -> bool:
        """Destroy the object called ``name``; False if there was none."""
        with self._lock:
            entry = self._entries.pop(name, None)
        if entry is None:
            return False
        for callback in entry.callbacks:
            try:
                callback(entry.obj)
            except Exception as e:  # one failing view must not keep programs attached
                warnings.warn(f"teardown callback {callback!r} of {name!r} failed: {e!r}",
                              RuntimeWarning, stacklevel=2)
        entry.obj.destroy()
        return True

    def stop_all(self) -> list[str]:
        with self._lock:
            names = list(self._entries)
        return [n for n in names if self.stop(n)]


registry = Registry()

LIST_COLUMNS = ["name", "state", "program", "hook", "runs", "events_per_s", "ns_per_run",
                "cpu_pct", "maps", "age_s"]


def objects_frame(reg: Registry | None = None, wait: bool = True):
    """The live objects, one row per program, with what each costs (what ``%bpf list``
    shows): runs counted while BPF stats are on, events/s and share of one CPU since
    the previous look (``wait``: a first look waits a moment for them; see
    bpfnb.overhead), mean ns per run. Integers stay integers (pandas' Int64: <NA>
    where unknown)."""
    import pandas as pd
    from . import overhead
    entries = (reg or registry).entries()
    costs = overhead.measure([e.obj for e in entries], wait=wait)
    rows = []
    for entry, cost in zip(entries, costs):
        obj = entry.obj
        progs = [p for p in obj.progs if p.autoload]
        maps = ", ".join(m.name for m in obj.maps)
        common = {"name": entry.name, "maps": maps, "age_s": round(entry.age, 1)}
        for p in progs or [None]:
            c = cost.get(p.name) if p is not None else None
            rows.append({**common,
                         "state": ("attached" if p is not None and p.links else obj.state),
                         "program": "" if p is None else p.name,
                         "hook": "" if p is None else p.hook,
                         "runs": None if c is None else c.runs,
                         "events_per_s": None if c is None or c.per_s is None
                         else round(c.per_s, 1),
                         "ns_per_run": None if c is None else c.ns_per_run,
                         "cpu_pct": None if c is None or c.cpu_pct is None
                         else round(c.cpu_pct, 3)})
    df = pd.DataFrame(rows, columns=LIST_COLUMNS)
    return df.astype({"runs": "Int64", "ns_per_run": "Int64", "events_per_s": "float64",
                      "cpu_pct": "float64"})

# Registered after libbpf.object's own atexit hook, so it runs first (atexit is LIFO):
# teardown callbacks still see live objects.
atexit.register(registry.stop_all)
