"""Reading what a view shows: rows of a map or of a callable's DataFrame as labels and
numbers, named numbers of ``obj.bss``, and which BPF object a source reads from.

What a view asks of a source, the same of a live object's parts (bpfnb.loader) and of
a replay's (bpfnb.replay), and nothing else, so one dashboard serves both:

    a map       name, object, to_df(), hist(), stream(), is_tabular, is_histogram,
                is_stream (a ring or perf buffer: records, no entries) and key_columns
                (labels join that many leading columns; None: every column but the
                value); a live map also offers key_dtype and lookup_batch() (an
                unchanged map costs one batch lookup)
    globals     _obj (its object), _section, its names (iterating) and values (getattr)
    a stream    map_name, _obj() (its object), tail(n), lost
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..libbpf.map import ARRAY_TYPES, STACK_TRACE

MAP, GLOBALS, STREAM = "map", "globals", "stream"


def kind_of(source) -> str | None:
    """MAP, GLOBALS or STREAM by what ``source`` offers (see above); None for anything
    else (a callable). Asked of its class: a section's getattr reads a variable."""
    cls = type(source)
    if all(hasattr(cls, a) for a in ("to_df", "hist", "stream")):
        return MAP
    if hasattr(cls, "tail") and hasattr(cls, "to_df"):
        return STREAM
    if hasattr(cls, "_asdict") and "_section" in getattr(source, "__dict__", ()):
        return GLOBALS
    return None


def _owner(source):
    """The BPF object a source reads from (None for a callable), for teardown and locking."""
    kind = kind_of(source)
    if kind == MAP:
        return source.object
    if kind == GLOBALS:
        return source._obj
    if kind == STREAM:
        return source._obj()
    return None


def _source_name(source) -> str:
    kind = kind_of(source)
    if kind == MAP:
        return source.name
    if kind == GLOBALS:
        return "." + source._section
    if kind == STREAM:
        return source.map_name
    return getattr(source, "__name__", None) or type(source).__name__


def _frame(source) -> pd.DataFrame:
    """A DataFrame from a map (``to_df()``) or a callable."""
    if kind_of(source) == MAP:
        return source.to_df()
    if callable(source):
        df = source()
        if isinstance(df, pd.Series):
            df = df.reset_index()
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"{_source_name(source)}() returned {type(df).__name__}, "
                            f"not a pandas DataFrame")
        return df
    raise TypeError(f"cannot read a table from {type(source).__name__}: pass a Map or a "
                    f"callable returning a DataFrame")


def _value_column(df: pd.DataFrame, value: str | None, keys: list) -> str:
    if value is not None:
        if value not in df.columns:
            raise KeyError(f"no column {value!r}; there are: {', '.join(map(str, df.columns))}")
        return value
    for name in ("value", "count"):
        if name in df.columns:
            return name
    numeric = [c for c in df.columns
               if c not in keys and pd.api.types.is_numeric_dtype(df[c])]
    if not numeric:
        raise ValueError(f"no numeric column to plot among: {', '.join(map(str, df.columns))}")
    return numeric[0] if keys else numeric[-1]


def labels_values(source, key=None, value: str | None = None
                  ) -> tuple[list[str], np.ndarray]:
    """Row labels and the numbers to plot from a Map or a callable's DataFrame.

    Labels join the ``key`` columns (default: a map's key columns; for a DataFrame,
    every column but the value): a struct key reads "1234 bash". The number is the
    ``value`` column (default: ``value``, else ``count``, else the first numeric
    column after a map's key, or a DataFrame's last numeric column).
    """
    df = _frame(source)
    keys = [key] if isinstance(key, str) else list(key) if key is not None else None
    n_keys = getattr(source, "key_columns", None) if kind_of(source) == MAP else None
    if keys is None and n_keys:
        keys = list(df.columns[:n_keys])
    vcol = _value_column(df, value, keys or [])
    if keys is None:
        keys = [c for c in df.columns if c != vcol]
    column = df[vcol]
    if not pd.api.types.is_numeric_dtype(column):
        column = pd.to_numeric(column, errors="coerce")
    values = column.to_numpy(dtype=float)
    if not keys:
        return [str(i) for i in df.index], values
    # Plain lists: pandas' astype(str) and row-wise joins cost more than the map read.
    parts = [df[k].tolist() for k in keys]
    if len(parts) == 1:
        return [str(v) for v in parts[0]], values
    return [" ".join(map(str, row)) for row in zip(*parts)], values


class MapCache:
    """The last reading of a map, given again while the map's keys and values are the
    same bytes: an unchanged map costs one batch lookup, not a DataFrame."""

    def __init__(self):
        self._bytes: bytes | None = None
        self._got = None
        self._plain: bool | None = None   # integer keys and values: no DataFrame needed

    def _changed(self, source):
        """The map's entries (keys, values arrays) if they changed since the last
        reading, else None."""
        keys, values = source.lookup_batch()
        raw = keys.tobytes() + values.tobytes()   # same length: same number of entries
        if raw == self._bytes:
            return None
        self._bytes = raw
        return keys, values

    def read(self, source, read, *args):
        """``read(*args)``, or what it gave last time if ``source`` is a Map whose
        entries have not changed since (any other source is read every time)."""
        if not _batched(source):
            return read(*args)
        if self._changed(source) is not None:
            self._got = read(*args)
        return self._got

    def labels_values(self, source, key=None, value: str | None = None):
        """``labels_values(source, key, value)``, again only when a map changed; a map
        of integers to integers is read from its batch arrays, without a DataFrame."""
        if not _batched(source):
            return labels_values(source, key, value)
        entries = self._changed(source)
        if entries is None:
            return self._got
        if self._plain is None:
            self._plain = _plain_integers(source)
        if self._plain and key is None and value is None:
            keys, values = entries
            if source.type not in ARRAY_TYPES:   # to_df's order: by key
                order = np.argsort(keys, kind="stable")
                keys, values = keys[order], values[order]
            self._got = [str(k) for k in keys.tolist()], values.astype(float)
        else:
            self._got = labels_values(source, key, value)
        return self._got


def _batched(source) -> bool:
    """Whether a source is a map offering lookup_batch() (a live one; a replayed map
    answers from its snapshots, and is read every time)."""
    return kind_of(source) == MAP and hasattr(source, "lookup_batch")


def _plain_integers(m) -> bool:
    """Whether to_df would show ``m`` as two integer columns, ``key`` and ``value``:
    integer key and value, no enum, no semantic decoder, no bpfnb.h aggregation, not
    per-CPU (to_df sums those)."""
    from .. import aggregate, decode, frames
    if m.percpu or m.type == STACK_TRACE or aggregate.kind(m) in aggregate.TIDY_KINDS:
        return False
    btf = m.object.btf
    for type_id, dtype in ((m.key_type_id, m.key_dtype), (m.value_type_id, m.value_dtype)):
        if dtype.names or dtype.shape or dtype.kind not in "iu":
            return False
        if frames._kind(btf, type_id, dtype) != ("num", ()) or \
                decode.semantic_type(btf, type_id):
            return False
    return True


def _numbers(source, names) -> dict[str, float]:
    """Named numbers from a globals section, a map (total of its values) or a callable."""
    kind = kind_of(source)
    if kind == GLOBALS:
        return {n: float(getattr(source, n)) for n in names or _numeric_names(source)}
    if kind == MAP:
        _, values = labels_values(source)
        return {source.name: float(np.nansum(values))}
    got = source()
    if isinstance(got, pd.DataFrame):
        got = got.select_dtypes("number").sum()
    if isinstance(got, pd.Series):
        got = got.to_dict()
    if isinstance(got, dict):
        return {str(k): float(v) for k, v in got.items() if names is None or k in names}
    if _is_number(got):
        return {_source_name(source): float(got)}
    raise TypeError(f"{_source_name(source)}() returned {type(got).__name__}: "
                    f"a time series wants a number, a dict of numbers, or a DataFrame")


def _is_number(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _numeric_names(g) -> list[str]:
    return [n for n in g if _is_number(getattr(g, n))]
