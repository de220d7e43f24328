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

# Registered after libbpf.object's own atexit hook, so it runs first (atexit is LIFO):
# teardown callbacks still see live objects.
atexit.register(registry.stop_all)
