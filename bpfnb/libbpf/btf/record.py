"""Record: what decode() returns for a struct, union or DATASEC (immutable, hashable)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


class _Schema:
    __slots__ = ("name", "fields", "index")

    def __init__(self, name, fields):
        self.name = name
        self.fields = tuple(fields)
        self.index = {f: i for i, f in enumerate(self.fields)}


def _freeze(v):
    if isinstance(v, Record):
        return tuple(_freeze(x) for x in v._values)
    if isinstance(v, (list, tuple)):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, np.ndarray):
        return tuple(_freeze(x) for x in v.tolist())
    if isinstance(v, dict):
        return tuple(_freeze(x) for x in v.values())
    return v


def _unfreeze(v):
    if isinstance(v, Record):
        return v._asdict()
    if isinstance(v, list):
        return [_unfreeze(x) for x in v]
    return v


class Record:
    """A decoded struct/union: ``r.pid``, ``r["pid"]``, ``r[0]``, iteration over
    values, ``_fields``, ``_asdict()`` (recursive), ``_replace(**kw)``.

    Immutable and hashable (hash of the tuple of values, nested records and lists
    turned into tuples), so a Record equals -- and hashes like -- the plain tuple of
    its values; it also equals a dict with the same keys and values.
    """

    __slots__ = ("_schema", "_values", "_raw")

    def __init__(self, name, fields, values=None):
        if values is None:                     # Record(name, {"a": 1, ...})
            if not isinstance(fields, Mapping):
                raise TypeError("Record(name, fields, values) or Record(name, mapping)")
            values = list(fields.values())
            fields = list(fields.keys())
        values = list(values)
        fields = list(fields)
        if len(values) != len(fields):
            raise ValueError(f"Record: {len(fields)} fields but {len(values)} values")
        object.__setattr__(self, "_schema", _Schema(name, fields))
        object.__setattr__(self, "_values", values)
        object.__setattr__(self, "_raw", None)

    @classmethod
    def _make(cls, schema, values, raw=None):
        # raw: the bytes it was decoded from, so that encoding a (_replace()d)
        # record starts from them and rewrites only the fields that changed: exact
        # round trips even for lossy fields (bytes after a NUL, unions, bools)
        r = object.__new__(cls)
        object.__setattr__(r, "_schema", schema)
        object.__setattr__(r, "_values", values)
        object.__setattr__(r, "_raw", raw)
        return r

    @property
    def _fields(self):
        return self._schema.fields

    @property
    def _name(self):
        return self._schema.name

    def __getattr__(self, name):
        try:
            i = self._schema.index[name]
        except (KeyError, AttributeError):
            if name.startswith("__") or name in ("_schema", "_values", "_raw"):
                raise AttributeError(name) from None
            raise AttributeError(
                f"{self._schema.name} has no field {name!r} "
                f"(fields: {', '.join(self._schema.fields)})") from None
        return self._values[i]

    def __setattr__(self, name, value):
        raise AttributeError(f"{self._schema.name} record is immutable; use _replace()")

    def __delattr__(self, name):
        raise AttributeError(f"{self._schema.name} record is immutable")

    def __getitem__(self, key):
        if isinstance(key, str):
            try:
                return self._values[self._schema.index[key]]
            except KeyError:
                raise KeyError(f"{self._schema.name} has no field {key!r} "
                               f"(fields: {', '.join(self._schema.fields)})") from None
        return self._values[key]

    def __contains__(self, value):
        return value in self._values

    def __iter__(self):
        return iter(self._values)

    def __len__(self):
        return len(self._values)

    def __dir__(self):
        return list(self._schema.fields) + ["_fields", "_asdict", "_replace"]

    def _asdict(self):
        return {f: _unfreeze(v) for f, v in zip(self._schema.fields, self._values)}

    def _replace(self, **kw):
        values = list(self._values)
        for k, v in kw.items():
            try:
                values[self._schema.index[k]] = v
            except KeyError:
                raise ValueError(f"{self._schema.name} has no field {k!r}") from None
        return Record._make(self._schema, values, self._raw)

    def __eq__(self, other):
        if isinstance(other, Record):
            return (self._schema.fields == other._schema.fields
                    and self._values == other._values)
        if isinstance(other, Mapping):
            if len(other) != len(self._values):
                return False
            idx = self._schema.index
            for k, v in other.items():
                i = idx.get(k)
                if i is None or not (self._values[i] == v):
                    return False
            return True
        if isinstance(other, (tuple, list)):
            return len(other) == len(self._values) and all(
                a == b for a, b in zip(self._values, other))
        return NotImplemented

    def __ne__(self, other):
        r = self.__eq__(other)
        return r if r is NotImplemented else not r

    def __hash__(self):
        return hash(_freeze(self))

    def __repr__(self):
        inner = ", ".join(f"{f}={v!r}" for f, v in zip(self._schema.fields, self._values))
        return f"{self._schema.name}({inner})"

    def _repr_pretty_(self, p, cycle):
        p.text(repr(self) if not cycle else "...")

    def __reduce__(self):
        return (Record, (self._schema.name, list(self._schema.fields), list(self._values)))

