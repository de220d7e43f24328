"""Key lookups on a replayed map: ``m[key]``, ``key in m``, ``m.get(key)``, ``keys()``,
``values()``, ``items()``, answered from the snapshot the replay shows (the one of the
notebook's last read, following reads; none of these counts as a read, live or
replayed: see bpfnb.follow).

A recorded snapshot holds the rows of to_df(), so a key is found by its columns: the
leading ``key_columns`` the recording names (in older recordings: the column ``key``,
or, beside a scalar ``value``, every other column). A struct key may be given as a tuple in column order, a dict
by column name, or any object with those attributes (what keys() returns: a
namedtuple). A scalar value comes back as a number; a struct value as a dict.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Mapping

from ..follow import uncounted
from .parts import ReplayError, _scalar

_MISSING = object()


def _split(m, df):
    """(key columns, value columns) of the map's frame: the recording says how many
    leading columns the key makes (manifest key_columns); older recordings are read
    by name."""
    cols = [c for c in df.columns if not str(c).startswith("_")]
    if m.key_columns:
        return cols[:m.key_columns], cols[m.key_columns:]
    if "key" in cols:
        return ["key"], [c for c in cols if c != "key"]
    if "value" in cols:
        return [c for c in cols if c != "value"], ["value"]
    raise ReplayError(f"{m.name}[key]: this recording (made before bpfnb kept its key's "
                      f"columns) keeps the rows of to_df(), whose columns "
                      f"({', '.join(map(str, cols))}) do not tell a struct key from a "
                      f"struct value; read it with {m.name}.to_df()")


def _frame(m):
    if m._snaps is None:
        raise ReplayError(f"{m.name!r} is a {m.type}: it has no keys to look up")
    with uncounted():
        df = m.to_df()
    kcols, vcols = _split(m, df)
    return df, kcols, vcols


def _key_type(kcols):
    return namedtuple("Key", [str(c).replace(".", "_") for c in kcols], rename=True)


def _key_of(row, kcols, make):
    return _scalar(row[0]) if len(kcols) == 1 else make(*(_scalar(v) for v in row))


def _wanted(key, kcols) -> tuple:
    if len(kcols) == 1:
        return (key,)
    if isinstance(key, Mapping):
        parts = [key.get(c, key.get(str(c).rsplit(".", 1)[-1], _MISSING)) for c in kcols]
    elif isinstance(key, (tuple, list)):
        parts = list(key) if len(key) == len(kcols) else [_MISSING]
    else:
        parts = [getattr(key, str(c).replace(".", "_"), _MISSING) for c in kcols]
    if any(p is _MISSING for p in parts):
        raise KeyError(f"{key!r}: a key of this map has the fields "
                       f"{', '.join(map(str, kcols))}")
    return tuple(parts)


def _value_of(row, vcols):
    if vcols == ["value"]:
        return _scalar(row[0])
    return {c: _scalar(v) for c, v in zip(vcols, row)}


def lookup(m, key, default=_MISSING):
    df, kcols, vcols = _frame(m)
    want = _wanted(key, kcols)
    hit = df.index == df.index  # all True
    for c, v in zip(kcols, want):
        hit &= (df[c] == v).to_numpy()
    if not hit.any():
        if default is _MISSING:
            raise KeyError(key)
        return default
    return _value_of(df.loc[hit, vcols].iloc[0].tolist(), vcols)


def items(m) -> list:
    df, kcols, vcols = _frame(m)
    make = _key_type(kcols)
    keys = df[kcols].itertuples(index=False, name=None)
    values = df[vcols].itertuples(index=False, name=None)
    return [(_key_of(k, kcols, make), _value_of(v, vcols)) for k, v in zip(keys, values)]
