"""Maps printed the way bpftrace prints them at exit, as text and HTML.

Counters print as ``@name[key]: value`` lines, the largest value first (a struct key
as ``pid 123, comm bash``, a struct value as ``(count 3, bytes 4096)``, a one-entry
array as ``@name: value``); histogram maps (see hist.py) as bpftrace's bars, one per
key. Large maps end with a ``... N more`` line. In HTML, counters are a table sorted
the same way and histograms the same bars.

``printout(map)`` snapshots one map; ``object_printouts(obj)`` every non-empty map of an
object that a person would want to see (not ring buffers, stack maps, nor bpfnb's
internals); ``user_globals(obj)`` its .bss/.data variables, bpfnb's own left out.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import hist
from .frames import _names, _record_leaves, is_tabular
from .libbpf import BPFError
from .libbpf.map import ARRAY_TYPES, STACK_TRACE
from .libbpf.names import is_internal

LIMIT = 20              # counter lines printed before "... N more"


@dataclass
class Printout:
    """One map as printed: a snapshot holding no reference to the map or object."""
    name: str
    text: str
    html: str
    empty: bool

    def __repr__(self):
        return self.text

    def _repr_html_(self):
        return self.html


def printout(map, limit: int | None = None) -> Printout:
    """``map`` as bpftrace prints it (at most ``limit`` counter lines or histograms)."""
    try:
        if hist.is_histogram(map):
            h = map.hist()
            text = h.to_text(limit)
            return Printout(map.name, text, f"<pre>{html.escape(text)}</pre>", not len(h))
        return _counters(map, LIMIT if limit is None else limit)
    except (BPFError, TypeError, ValueError) as e:  # one map never stops the others
        text = f"@{map.name}: not printed: {e}".splitlines()[0]
        return Printout(map.name, text, f"<pre>{html.escape(text)}</pre>", False)


def map_text(map, limit: int | None = None) -> str:
    return printout(map, limit).text


def printable(map) -> bool:
    """Key/value maps a person reads: not stack maps (their ids print in other maps),
    nor bpfnb's internals."""
    return (is_tabular(map) and map.type != STACK_TRACE
            and not is_internal(map.name))


def object_printouts(obj, limit: int | None = None) -> list[Printout]:
    """Every non-empty printable map of ``obj``, in the object's order."""
    outs = (printout(m, limit) for m in obj.maps if printable(m))
    return [p for p in outs if not p.empty]


def user_globals(obj) -> list[tuple[str, str, object]]:
    """(section, variable, value) of the .bss/.data variables the program declared."""
    rows = []
    for section in ("bss", "data"):
        g = obj.globals.get(section)
        if g is not None:
            rows += [(section, var, value) for var, value in g._asdict().items()
                     if not is_internal(var)]
    return rows


# --- counters -------------------------------------------------------------------

def _split(map, df: pd.DataFrame) -> tuple[list[str], list[str]]:
    """The key columns and the value columns of ``map.to_df()``."""
    btf = map.object.btf
    key_leaves = _record_leaves(btf, map.key_type_id, np.zeros(0, map.key_dtype))
    value_leaves = _record_leaves(btf, map.value_type_id, np.zeros(0, map.value_dtype))
    taken = {leaf.name for leaf in key_leaves} & {leaf.name for leaf in value_leaves}
    keys = [c for c in _names(key_leaves, "key", taken) if c in df.columns]
    shown = set(df.columns) - {f"{c}_raw" for c in df.columns}  # decoded: the name only
    values = [c for c in df.columns if c not in keys and c in shown]
    return keys, values


def _nonzero(df: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """Rows with some value that is not 0 (an array entry nobody wrote is all zeros)."""
    keep = np.zeros(len(df), bool)
    for c in columns:
        col = df[c]
        if col.dtype.kind in "iufb":
            keep |= (col != 0).to_numpy()
        else:
            keep |= np.array([bool(np.any(v)) if isinstance(v, np.ndarray) else
                              bool(v) and v != "0" for v in col.astype(object)])
    return keep


def _sort_key(df: pd.DataFrame, values: list[str]) -> str | None:
    """The value column to sort by: the first numeric one."""
    for c in values:
        if df[c].dtype.kind in "iuf":
            return c
    return None


def _fields(row, columns: list[str], bare: str) -> str:
    if columns == [bare]:
        return hist.label_value(row[bare])
    return ", ".join(f"{c} {hist.label_value(row[c])}" for c in columns)


def _counters(map, limit: int) -> Printout:
    df = map.to_df()
    keys, values = _split(map, df)
    name = f"@{map.name}"
    if map.type in ARRAY_TYPES:
        df = df[_nonzero(df, values)]
    if not len(df):
        what = ("no entries" if map.type not in ARRAY_TYPES
                else f"all {map.max_entries} entries are 0")
        return Printout(map.name, f"{name}: {what}", f"<pre>{name}: {what}</pre>", True)
    by = _sort_key(df, values)
    if by is not None:
        df = df.sort_values(by, ascending=False, kind="stable")
    shown = df.head(limit)
    keyless = map.type in ARRAY_TYPES and map.max_entries == 1
    lines = []
    for row in shown.to_dict("records"):
        value = _fields(row, values, "value")
        if values != ["value"]:
            value = f"({value})"
        where = "" if keyless else f"[{_fields(row, keys, 'key')}]"
        lines.append(f"{name}{where}: {value}")
    more = f"... {len(df) - limit} more" if len(df) > limit else ""
    text = "\n".join(lines + ([more] if more else []))
    table = shown[values if keyless else keys + values].to_html(index=False, border=0)
    page = (f"<div class='bpfnb-map'><b>{html.escape(name)}</b>{table}"
            + (f"<p>{html.escape(more)}</p>" if more else "") + "</div>")
    return Printout(map.name, text, page, False)
