"""Attribute access over a name -> item dict, as a live Object's ``maps`` and
``progs`` give (bpfnb/libbpf/object.py keeps its own: nothing under libbpf/ imports
the rest of bpfnb), for the objects that stand in for one: a replay, a fleet object."""

from __future__ import annotations


class Namespace:
    """``ns.name``, ``ns["name"]``, ``in``, iteration over the items, ``len``, and
    ``dir()`` for tab completion; a missing name says which there are."""

    def __init__(self, kind: str, items: dict):
        object.__setattr__(self, "_kind", kind)
        object.__setattr__(self, "_items", items)

    def __getattr__(self, name):
        try:
            return self._items[name]
        except KeyError:
            raise AttributeError(f"no {self._kind} named {name!r}; "
                                 f"there are: {', '.join(self._items) or 'none'}") from None

    __getitem__ = __getattr__

    def __dir__(self):
        return list(self._items)

    def __iter__(self):
        return iter(self._items.values())

    def __len__(self):
        return len(self._items)

    def __contains__(self, name):
        return name in self._items

    def __repr__(self):
        return f"<{self._kind}s: {', '.join(self._items) or 'none'}>"
