"""The registry: every Object the ``%%bpf`` magic made, by cell name, and its teardown.

One process (one Jupyter kernel) has one registry, ``bpfnb.registry.registry``. It
owns the objects: re-running a cell replaces the object of that name (the magic
attaches the new one before the old one is destroyed, so for a moment both count);
``%bpf stop``, unloading the extension and interpreter exit destroy them. When the kernel
process is killed, the kernel itself detaches everything: links and programs are file
descriptors and nothing is pinned.

A fleet object (``%%bpf NAME --engines``, bpfnb.fleet.FleetObject) is owned the same
way: ``stop`` destroys it on every engine; when this process dies, each engine
destroys it once its lease runs out.

Knowing when an object goes away (for live views):

- poll ``obj.state == "destroyed"``: works for every Object, also one destroyed by
  hand, by garbage collection, or at exit;
- or ``registry.on_teardown(obj, callback)`` for an object the registry owns: the
  callback runs *before* the object is destroyed, so a thread reading its maps or ring
  buffers can stop while they still exist (dashboards and streams do).

What a cell made besides objects (dashboards): the magic tells the registry which cell
runs (``cell_started``); ``adopt(thing)`` ties a thing to it, and the next run of that
cell closes it, since that run replaces the cell's output.
"""

from __future__ import annotations

import atexit
import threading
import time
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Callable

from .libbpf import Object


@dataclass
class Entry:
    name: str
    obj: Object  # or a bpfnb.fleet.FleetObject: the same state and destroy()
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
        # Never held while calling out: a thread may cancel its callback while this
        # thread, holding _lock, waits for it (install -> stop -> callbacks).
        self._callbacks_lock = threading.Lock()
        self._cell = None   # the key of the cell running now
        self._made: dict = {}   # cell key -> weak references to what its last run made

    def install(self, name: str, obj) -> Entry:
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

    def on_teardown(self, obj: Object, callback: Callable[[Object], None]
                    ) -> Callable[[], None]:
        """Call ``callback(obj)`` right before the registry destroys ``obj``. Returns a
        function that cancels it: what stops earlier (a dashboard, a stream) calls it, so
        the callbacks of a long-lived object do not pile up."""
        with self._lock:
            entry = next((e for e in self._entries.values() if e.obj is obj), None)
            if entry is None:
                raise ValueError(f"{obj!r} is not owned by the registry: poll obj.state "
                                 f"instead")
            with self._callbacks_lock:   # a new list: stop() may be going through the old
                entry.callbacks = entry.callbacks + [callback]

        def cancel():
            with self._callbacks_lock:
                entry.callbacks = [c for c in entry.callbacks if c is not callback]
        return cancel

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

    # --- what cells made besides objects ---------------------------------------

    def cell_started(self, key):
        """Cell ``key`` (Jupyter's cell id, else its text) starts running: close what
        its previous run adopted, whose output this run replaces."""
        with self._lock:
            made = self._made.pop(key, [])
            self._cell = key
            for k in [k for k, refs in self._made.items() if all(r() is None for r in refs)]:
                del self._made[k]
        for ref in made:
            thing = ref()
            if thing is not None:
                thing.close()

    def cell_finished(self):
        with self._lock:
            self._cell = None

    def adopt(self, thing) -> bool:
        """Tie ``thing`` (it has ``close()``; held weakly) to the cell running now, if
        any: the next run of that cell closes it."""
        with self._lock:
            if self._cell is None:
                return False
            self._made.setdefault(self._cell, []).append(weakref.ref(thing))
            return True


registry = Registry()

# Registered after libbpf.object's own atexit hook, so it runs first (atexit is LIFO):
# teardown callbacks still see live objects.
atexit.register(registry.stop_all)
