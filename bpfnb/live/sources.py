"""Reading what a view shows: rows of a Map or of a callable's DataFrame as labels and
numbers, named numbers of ``obj.bss``, and which BPF object a source reads from."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..libbpf import Map
from ..libbpf.object import Globals
from ..stream import EventStream


def _owner(source):
    """The BPF Object a source reads from (None for a callable), for teardown and locking."""
    if isinstance(source, Map):
        return source._obj()
    if isinstance(source, Globals):
        return source._obj
    if isinstance(source, EventStream):
        return source._obj()
    return None


def _source_name(source) -> str:
    if isinstance(source, Map):
        return source.name
    if isinstance(source, Globals):
        return "." + source._section
    if isinstance(source, EventStream):
        return source.map_name
    return getattr(source, "__name__", None) or type(source).__name__


def _frame(source) -> pd.DataFrame:
    """A DataFrame from a map (``to_df()``) or a callable."""
    if isinstance(source, Map):
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


def _key_column_count(dtype: np.dtype) -> int:
    """How many columns map_to_df makes of a key: one per leaf of its (nested) struct."""
    if dtype.names:
        return sum(_key_column_count(dtype.fields[name][0]) for name in dtype.names)
    return 1


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
    if keys is None and isinstance(source, Map):
        keys = list(df.columns[:_key_column_count(source.key_dtype)])
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


def _numbers(source, names) -> dict[str, float]:
    """Named numbers from a Globals section, a Map (total of its values) or a callable."""
    if isinstance(source, Globals):
        return {n: float(getattr(source, n)) for n in names or _numeric_names(source)}
    if isinstance(source, Map):
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


def _numeric_names(g: Globals) -> list[str]:
    return [n for n in g if _is_number(getattr(g, n))]
