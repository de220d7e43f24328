"""The aggregation maps of bpf/bpfnb.h (bpftrace's count, sum, min, max, avg, stats,
hist(v, k), tseries) as tidy DataFrames, histograms and bpftrace's JSON output.

``kind(map)`` names a map's aggregation from its value type (``struct bpfnb_count``,
``struct bpfnb_stats``, ``struct bpfnb_histk__<name>`` ...), or None.

``to_df(map, stack_map=None, symbolizer=None)``: one row per key, the CPUs' copies
combined (counts and sums added; min of the mins and max of the maxes of the CPUs that
saw the key). Key columns as ``frames.map_to_df`` names them, then tidied: no column
for ``bpfnb_nokey``; a ``struct bpfnb_comm``/``bpfnb_str`` member ``sender.comm`` is
just ``sender``; a ``bpfnb_kstack``/``bpfnb_ustack`` id becomes the stack's frame
names (innermost first), in a column named as the member (``kstack``/``ustack`` for a
key that is the stack alone). Value columns:

    count -> count            sum -> sum          min -> min      max -> max
    avg   -> avg (float)      stats -> count, sum, min, max, avg
    hist(v, k) -> the Histogram's columns (keys, low, high, count)
    tseries    -> time (wall clock, interval start), value

``histogram(map)``: a ``BPFNB_HISTK`` map as a ``hist.Histogram``.
``to_bpftrace_json(map)``: the line ``bpftrace -f json`` prints for a map.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import frames, hist, symbols
from .libbpf.map import STACK_TRACE

_SCALAR_KINDS = {"bpfnb_count": "count", "bpfnb_sum": "sum", "bpfnb_min": "min",
                 "bpfnb_max": "max", "bpfnb_avg": "avg", "bpfnb_stats": "stats"}
_PREFIX_KINDS = {"bpfnb_histk__": "histk", "bpfnb_tseries__": "tseries",
                 "bpfnb_lhist__": "lhist"}
NOKEY = "bpfnb_nokey"
# What frames.map_to_df hands over to to_df (BPFNB_HIST/LHIST maps keep their slots).
TIDY_KINDS = frozenset({"count", "sum", "min", "max", "avg", "stats", "histk", "tseries"})


def kind(map) -> str | None:
    """The aggregation of a bpfnb.h map: count, sum, min, max, avg, stats, histk,
    tseries, lhist or hist (BPFNB_HIST); None for any other map."""
    name = hist._struct_name(map.object.btf, map.value_type_id)
    if name in _SCALAR_KINDS:
        return _SCALAR_KINDS[name]
    if name == "bpfnb_hist":
        return "hist"
    for prefix, k in _PREFIX_KINDS.items():
        if name.startswith(prefix):
            return k
    return None


def _is_nokey(btf, type_id) -> bool:
    """Whether ``type_id`` is the typedef bpfnb_nokey (a map without a key)."""
    for _ in range(16):
        t = btf.type(type_id)
        if t.kind == "typedef" and t.name == NOKEY:
            return True
        if t.kind not in ("typedef", "const", "volatile", "restrict", "type_tag"):
            return False
        type_id = t.type_id
    return False


# --- per-CPU values combined ------------------------------------------------------

def _combine(kind_: str, values: np.ndarray) -> dict:
    """Per-CPU value records (n, ncpu) -> the aggregation's columns, one row per key."""
    if values.ndim == 1:
        values = values[:, None]
    out = {}
    counts = values["count"].astype(np.int64) if "count" in values.dtype.names else None
    seen = counts > 0 if counts is not None else None
    if kind_ == "count":
        out["count"] = counts.sum(axis=1)
    if kind_ == "sum":
        out["sum"] = values["sum"].astype(np.int64).sum(axis=1)
    if kind_ == "stats":
        out["count"] = counts.sum(axis=1)
        out["sum"] = values["sum"].astype(np.int64).sum(axis=1)
    for field, pick, empty in (("min", np.min, np.iinfo(np.int64).max),
                               ("max", np.max, np.iinfo(np.int64).min)):
        if kind_ in (field, "stats"):
            raw = np.where(seen, values[field].astype(np.int64), empty)
            out[field] = pick(raw, axis=1)
    if kind_ in ("avg", "stats"):
        total = counts.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out["avg"] = values["sum"].astype(np.int64).sum(axis=1) / total
    return out


# --- keys -------------------------------------------------------------------------

_SPECIAL = ("bpfnb_comm", "bpfnb_str", "bpfnb_kstack", "bpfnb_ustack")


def _special_members(btf, type_id, prefix="") -> list[tuple[str, str]]:
    """(dotted path, struct name) of every bpfnb.h key struct inside a key type."""
    if btf is None or not type_id:
        return []
    rid = btf.resolve(type_id)
    t = btf.type(rid)
    if t.kind != "struct":
        return []
    if t.name in _SPECIAL:
        return [(prefix[:-1], t.name)]
    out = []
    for name, ftid, _, bits in btf.fields(rid):
        if not bits:
            out += _special_members(btf, ftid, f"{prefix}{name}.")
    return out


def _stack_map(map, stack_map):
    if stack_map is not None:
        return stack_map
    found = [m for m in map.object.maps if m.type == STACK_TRACE]
    if len(found) == 1:
        return found[0]
    if not found:
        raise ValueError(f"map {map.name!r} has stack ids as keys, but its object has no "
                         "stack-trace map: declare one with BPFNB_STACKS(stacks)")
    raise ValueError(f"map {map.name!r} has stack ids as keys and the object has "
                     f"{len(found)} stack-trace maps ({', '.join(m.name for m in found)}):"
                     f" pass the one to resolve through, stack_map=obj.maps.NAME")


def _key_columns(map, keys, *, stack_map=None, symbolizer=None) -> pd.DataFrame:
    """The key columns of ``keys`` (as frames.map_to_df names them), tidied."""
    btf = map.object.btf
    tid = map.key_type_id
    if btf is not None and tid and _is_nokey(btf, tid):
        return pd.DataFrame(index=pd.RangeIndex(len(keys)))
    leaves = frames._record_leaves(btf, tid, keys)
    names = frames._names(leaves, "key", set())
    df = pd.DataFrame({n: frames._column(leaf) for n, leaf in zip(names, leaves)},
                      index=pd.RangeIndex(len(keys)))
    renames, stacks = {}, []
    for path, struct in _special_members(btf, tid):
        dot = f"{path}." if path else ""
        if struct in ("bpfnb_comm", "bpfnb_str") and path:
            renames[dot + struct[len("bpfnb_"):]] = path
        elif struct in ("bpfnb_kstack", "bpfnb_ustack"):
            stacks.append((dot, struct[len("bpfnb_"):]))
    df = df.rename(columns=renames)
    if stacks:
        sm = _stack_map(map, stack_map)
        for dot, which in stacks:
            id_col = f"{dot}{which}_id"
            pid_col = f"{dot}pid" if which == "ustack" else None
            resolved = symbols.resolve_stacks(
                df, sm, kernel_col=id_col if which == "kstack" else "",
                user_col=id_col if which == "ustack" else "", pid_col=pid_col,
                symbolizer=symbolizer)
            at = df.columns.get_loc(id_col)
            df = df.drop(columns=[id_col])
            df.insert(at, dot[:-1] or which, resolved[which])
    return df


# --- frames -----------------------------------------------------------------------

def to_df(map, *, stack_map=None, symbolizer=None) -> pd.DataFrame:
    """The tidy frame of an aggregation map (see the module docstring)."""
    k = kind(map)
    if k is None:
        raise TypeError(f"map {map.name!r} ({map.value_type} values) is not an "
                        "aggregation of bpfnb.h (BPFNB_COUNT, BPFNB_STATS, ...)")
    if k in ("histk", "hist", "lhist"):
        return histogram(map).df
    if k == "tseries":
        return _tseries(map)
    keys, values = map.lookup_batch()
    order = _order(map, keys)
    if order is not None:
        keys, values = frames._opaque(keys)[order].view(keys.dtype), values[order]
    df = _key_columns(map, keys, stack_map=stack_map, symbolizer=symbolizer)
    for name, column in _combine(k, values).items():
        df[name] = column
    return df


def _order(map, keys):
    """Row order by key, as frames.map_to_df sorts hash maps."""
    return frames._sort_order(frames._leaves(map.object.btf, map.key_type_id, keys))


def _tseries(map) -> pd.DataFrame:
    btf = map.object.btf
    d = hist.zero_length_dims(btf, map.value_type_id)
    ns = (d["bpfnb_ns_hi"] << 32) | d["bpfnb_ns_lo"]
    _, values = map.lookup_batch()
    intervals = values["interval"].reshape(-1).astype(np.int64)
    sums = values["value"].reshape(-1).astype(np.int64)
    now = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // ns  # bpf_ktime_get_ns's clock
    keep = (intervals > now - map.max_entries) & (intervals <= now) & (intervals > 0)
    intervals, sums = intervals[keep], sums[keep]
    if not len(intervals):
        return pd.DataFrame({"time": pd.Series([], dtype="datetime64[ns]"),
                             "value": pd.Series([], dtype="int64")})
    lo = int(intervals.min())
    span = np.arange(lo, int(intervals.max()) + 1)
    total = np.zeros(len(span), np.int64)
    np.add.at(total, intervals - lo, sums)  # the CPUs' sums of one interval added
    wall = time.time_ns() - time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    return pd.DataFrame({"time": pd.to_datetime(span * ns + wall, unit="ns"),
                         "value": total})


@dataclass(frozen=True)
class Log2kLayout:
    """bpftrace's hist(v, k) slots (see BPFNB_HISTK in bpfnb.h) -> value ranges."""
    k: int
    log2: bool = True

    def lower(self, slot: np.ndarray) -> np.ndarray:
        n = 1 << self.k
        j = np.maximum(slot - 1, 0)
        power = np.maximum((j >> self.k) - 1, 0)
        big = np.ldexp(1.0, power) * (n + (j & (n - 1)))
        return np.where(slot == 0, -np.inf, np.where(slot <= 2 * n, slot - 1.0, big))

    def bounds(self, slot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        slot = slot.astype(np.int64)
        return self.lower(slot), np.where(slot == 0, 0.0, self.lower(slot + 1))

    def max_slot(self) -> int:
        """The highest slot whose lower bound fits in 64 bits."""
        return (65 - self.k) << self.k


def histogram(map) -> hist.Histogram:
    """A BPFNB_HISTK map (bpftrace's hist(v, k)) as a Histogram; other histogram maps
    through hist.histogram."""
    if kind(map) != "histk":
        return hist.histogram(map)
    btf = map.object.btf
    layout = Log2kLayout(hist.zero_length_dims(btf, map.value_type_id)["bpfnb_k"])
    keys, values = map.lookup_batch()
    counts = np.asarray(values["count"], dtype=np.int64)
    if counts.ndim == 2:
        counts = counts.sum(axis=1)
    key_tid = dict((f[0], f[1]) for f in btf.fields(map.key_type_id))["key"]
    slots = keys["slot"].astype(np.int64)
    if _is_nokey(btf, key_tid):
        return hist._frame(map, layout, slots, counts, np.zeros(len(slots), np.int64), [])
    return hist.grouped_frame(map, layout, slots, counts, keys["key"], key_tid)


# --- bpftrace's JSON ------------------------------------------------------------------

def _stack_text(frames_: list) -> str:
    # bpftrace prints a stack as one line per frame, innermost first, indented.
    return "\n" + "".join(f"        {f}\n" for f in frames_)


def _key_texts(df: pd.DataFrame, columns: list) -> list[str] | None:
    """bpftrace's JSON key per row: the key's parts joined with ','."""
    if not columns:
        return None
    parts = []
    for c in columns:
        values = df[c].tolist()
        parts.append([_stack_text(v) if isinstance(v, list) else str(v) for v in values])
    return [",".join(p) for p in zip(*parts)]


_VALUE_COLUMNS = {"count": ["count"], "sum": ["sum"], "min": ["min"], "max": ["max"],
                  "avg": ["avg"], "stats": ["count", "sum", "min", "max", "avg"]}


def _cdiv(a, b) -> int:
    """a / b truncated toward zero, as C (and bpftrace) divide; exact for any int64."""
    a, b = int(a), int(b)
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def _combine_sum_count(map, df) -> dict:
    """The sum and count columns of an avg map, in to_df's row order."""
    keys, values = map.lookup_batch()
    order = _order(map, keys)
    if order is not None:
        values = values[order]
    values = values if values.ndim == 2 else values[:, None]
    return {"sum": values["sum"].astype(np.int64).sum(axis=1),
            "count": values["count"].astype(np.int64).sum(axis=1)}


def _json_number(v):
    v = v.item() if hasattr(v, "item") else v
    return int(v) if isinstance(v, (int, np.integer)) else v


def _buckets(h: pd.DataFrame) -> list[dict]:
    out = []
    for low, high, count in zip(h["low"], h["high"], h["count"]):
        b = {}
        if not math.isinf(low):
            b["min"] = int(low)
        if not math.isinf(high):
            b["max"] = int(high) - 1  # bpftrace's bounds are inclusive
        b["count"] = int(count)
        out.append(b)
    return out


def to_bpftrace_json(map, *, stack_map=None, symbolizer=None) -> str:
    """The JSON line ``bpftrace -f json`` prints for this map at exit:
    ``{"type": "map"|"stats"|"hist", "data": {"@name": value or {key: value}}}``."""
    k = kind(map)
    name = f"@{map.name}"
    if k in ("histk", "hist", "lhist"):
        h = histogram(map)
        keys = list(h.key_columns)
        if not keys:
            data = _buckets(h)
        else:
            texts = np.array(_key_texts(h, keys), dtype=object)
            data = {text: _buckets(group)
                    for text, group in h.df.groupby(texts, sort=False)}
        return json.dumps({"type": "hist", "data": {name: data}})
    if k == "tseries":
        raise TypeError(f"map {map.name!r} is a time series: bpftrace's JSON schema for "
                        "maps and histograms has no form for it; use .to_df().to_json()")
    if k is None:  # any other key/value map: bpftrace's "map" form
        df = frames.map_to_df(map)
        n_key = len(frames._record_leaves(map.object.btf, map.key_type_id,
                                          map.lookup_batch()[0][:0]))
        key_cols, value_cols = list(df.columns[:n_key]), list(df.columns[n_key:])
        kind_type = "map"
    else:
        df = to_df(map, stack_map=stack_map, symbolizer=symbolizer)
        value_cols = _VALUE_COLUMNS[k]
        key_cols = [c for c in df.columns if c not in value_cols]
        kind_type = "stats" if k in ("avg", "stats") else "map"

    def value(row):
        if k == "stats":
            return {"count": int(row["count"]), "average": _cdiv(row["sum"], row["count"]),
                    "total": int(row["sum"])}
        if k == "avg":
            return _cdiv(row["sum"], row["count"])
        if len(value_cols) == 1:
            return _json_number(row[value_cols[0]])
        return {c: _json_number(row[c]) for c in value_cols}

    if k == "avg":  # bpftrace's average is an integer: it needs the sum and count
        df = df.assign(**_combine_sum_count(map, df))
    rows = df.to_dict("records")
    if not rows:  # bpftrace prints nothing for an empty map
        return ""
    texts = _key_texts(df, key_cols)
    data = value(rows[0]) if texts is None else {t: value(r) for t, r in zip(texts, rows)}
    return json.dumps({"type": kind_type, "data": {name: data}})
