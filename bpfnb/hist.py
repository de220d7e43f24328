"""Histograms held in maps, as a :class:`Histogram` DataFrame that prints as bpftrace's bars.

``histogram(map)`` recognises, by the map's BTF types:

* bpf/bpfnb.h's BPFNB_HIST / BPFNB_LHIST (an array indexed by slot) and their keyed
  forms (a hash from ``{key, slot}``); the value type carries the bucket layout;
* libbpf-tools' slot arrays: a value holding ``slots[N]`` (u32 or u64), alone or beside
  other fields (runqlat's ``struct hist { u32 slots[26]; char comm[16]; }``,
  hardirqs' ``struct info { u64 count; ...; u32 slots[20]; }``), in a hash keyed by
  pid, cpu, a disk's ``struct hist_key`` or an irq name, or in an array (one
  histogram per index; a one-entry array is one histogram). One histogram per entry,
  labelled by its key and the value's other fields. Slots are libbpf-tools'
  ``log2l()`` indices (slot 0: 0 and 1; slot k: [2^k, 2^(k+1)); the last one also
  holds everything above), or linear with ``kind="linear", min=, step=``;
* BCC's keyed histograms (a struct key with a ``slot`` field, int values), and plain
  arrays of int counts indexed by a log2 (or, when told, linear) slot.

Per-CPU maps are summed over the CPUs. A map of another shape is refused in one line
that says why. ``is_histogram(map)`` tells, without reading the map, whether its types
say it is a histogram (what the printers of show.py draw as bars).
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pandas.plotting import PlotAccessor

from .frames import (_column, _kind, _leaves, _names, _opaque, _per_cpu_sum, _record_leaves,
                     _sort_order, is_tabular)
from .libbpf.map import ARRAY_TYPES

MAX_LOG2_SLOT = 64      # log2 buckets of 64-bit values end at [2^63, 2^64)
MAX_BUCKETS = 1_000_000  # rows a histogram frame may have (zeros between counts included)
NOT_A_HIST = "a histogram's value is a slot array, e.g. `u32 slots[26]`"
_FRAME_COLUMNS = {"low", "high", "count"}


@dataclass(frozen=True)
class _Layout:
    """How slot numbers map to value ranges."""
    log2: bool
    first: int = 0           # log2: slot i counts [2^(i+first-1), 2^(i+first)), slot 0 from 0
    min: int = 0             # linear: slot i counts [min + i*step, ...) ...
    step: int = 1
    tails: bool = False      # ... shifted by one: slot 0 is < min, the last >= max
    nslots: int = 0          # > 0: the last slot is open-ended (values past it land there)

    def bounds(self, slot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        slot = slot.astype(np.int64)
        if self.log2:
            e = slot + self.first
            low = np.where(slot == 0, 0.0, np.ldexp(1.0, e - 1))
            high = np.ldexp(1.0, e)
        else:
            i = slot - 1 if self.tails else slot
            low = self.min + i.astype(np.float64) * self.step  # no int64 wrap-around
            high = low + self.step
            if self.tails:
                low = np.where(slot == 0, -np.inf, low)
                high = np.where(slot == 0, float(self.min), high)
        if self.nslots:
            high = np.where(slot >= self.nslots - 1, np.inf, high)
        return low, high

    def max_slot(self) -> int | None:
        """The highest slot number whose bounds fit in 64 bits (None: any)."""
        return MAX_LOG2_SLOT - self.first if self.log2 else None


@dataclass(frozen=True)
class _Shape:
    how: str                 # "indexed": the key is the slot; "keyed": a struct key with
                             # a slot field; "slots": the value holds a slot array
    field: str | None        # the value's field holding the count(s); None: the value
    sure: bool               # the types say "histogram" (else only because asked to)


# --- recognising the shape ----------------------------------------------------

def _struct_name(btf, type_id) -> str:
    if btf is None or not type_id:
        return ""
    t = btf.type(btf.resolve(type_id))
    return t.name if t.kind == "struct" else ""


def _is_int(btf, type_id, dtype) -> bool:
    return (dtype.kind in "iu" and dtype.subdtype is None
            and _kind(btf, type_id, dtype)[0] == "num")


def _is_slot_array(dtype) -> bool:
    return (dtype.subdtype is not None and dtype.base.kind in "iu"
            and dtype.base.itemsize >= 2 and len(dtype.shape) == 1 and dtype.shape[0] > 1)


def _fields(btf, type_id) -> dict:
    return {f[0]: f for f in btf.fields(type_id)} if btf is not None and type_id else {}


def _slot_field(btf, map) -> str | None:
    """The value's slot array: "slots" (libbpf-tools), "" (the value is one), or None."""
    dtype = map.value_dtype
    if _is_slot_array(dtype):
        return ""
    f = _fields(btf, map.value_type_id).get("slots")
    if f and not f[3] and _is_slot_array(dtype["slots"]) \
            and _kind(btf, f[1], dtype["slots"].base)[0] == "num":
        return "slots"
    return None


def _shape(map, kind) -> _Shape:
    """How ``map`` holds a histogram, or TypeError saying why it holds none."""
    name = map.name
    if not is_tabular(map):
        raise TypeError(f"map {name!r} is a {map.type_name}, not a key/value map: "
                        f"not a histogram")
    btf, vt, kt = map.object.btf, map.value_type_id, map.key_type_id
    vname = _struct_name(btf, vt)
    keyed = "slot" in _fields(btf, kt)
    if vname == "bpfnb_hist" or vname.startswith("bpfnb_lhist__"):
        return _Shape("keyed" if keyed else "indexed", "count", True)
    slots = _slot_field(btf, map)
    if slots is not None:
        return _Shape("slots", slots or None, True)
    holds = f"map {name!r} holds {map.value_type} values keyed by {map.key_type}"
    if _is_int(btf, vt, map.value_dtype):
        if keyed:
            return _Shape("keyed", None, True)
        if _is_int(btf, kt, map.key_dtype):
            if (map.type in ARRAY_TYPES and map.max_entries > 1) or kind is not None:
                return _Shape("indexed", None, False)
            if map.type in ARRAY_TYPES:  # hardirqs' `start`: a timestamp, not a count
                raise TypeError(f"{holds}, one entry: not a histogram ({NOT_A_HIST})")
            raise TypeError(f"{holds}: not a histogram ({NOT_A_HIST}); if its keys are "
                            f"slot numbers, say so: .hist(kind='log2')")
    raise TypeError(f"{holds}: not a histogram ({NOT_A_HIST})")


def is_histogram(map) -> bool:
    """Whether the map's types say it holds a histogram (no map read)."""
    try:
        return _shape(map, None).sure
    except TypeError:
        return False


def zero_length_dims(btf, type_id) -> dict:
    """Sizes of the zero-length arrays of a bpfnb.h value type: the constants
    (bounds, steps, k) bpfnb.h keeps there, as ``char name[0][N]`` members."""
    dims = {}
    for m in btf.type(btf.resolve(type_id)).members:
        t = btf.type(btf.resolve(m.type_id))
        if t.kind == "array" and t.nelems == 0:
            dims[m.name] = btf.type(btf.resolve(t.type_id)).nelems
    return dims


def _lhist_params(btf, type_id) -> dict:
    """min/max/step of a BPFNB_LHIST value type."""
    dims = zero_length_dims(btf, type_id)
    lo = dims["bpfnb_min"] - dims["bpfnb_neg_min"]
    return {"min": lo, "max": lo + dims["bpfnb_span"], "step": dims["bpfnb_step"]}


def _layout(map, shape: _Shape, kind, min, step) -> _Layout:
    btf = map.object.btf
    name = _struct_name(btf, map.value_type_id)
    if kind not in (None, "log2", "linear"):
        raise ValueError(f"kind={kind!r}: choose 'log2' or 'linear'")
    nslots = 0
    if shape.how == "slots":  # libbpf-tools clamp to the last slot
        dtype = map.value_dtype[shape.field] if shape.field else map.value_dtype
        nslots = dtype.shape[0]
    if kind == "linear" or (kind is None and name.startswith("bpfnb_lhist__")):
        if kind is None:
            p = _lhist_params(btf, map.value_type_id)
            n = (p["max"] - p["min"]) // p["step"] + 2
            return _Layout(False, min=p["min"], step=p["step"], tails=True, nslots=n)
        if not step or step <= 0:
            raise ValueError("a linear histogram needs step > 0 (and min, default 0)")
        return _Layout(False, min=min, step=step, nslots=nslots)
    if name == "bpfnb_hist":
        n = map.max_entries if map.type in ARRAY_TYPES else 65
        return _Layout(True, nslots=n)
    if shape.how == "slots":  # libbpf-tools: log2l(v) slots
        layout = _Layout(True, first=1, nslots=nslots)
        if nslots - 1 > layout.max_slot():
            raise TypeError(f"map {map.name!r}: {nslots} slots are more than log2 buckets "
                            f"of 64-bit values have ({layout.max_slot() + 1}); for linear "
                            f"buckets, .hist(kind='linear', min=..., step=...)")
        return layout
    return _Layout(True)


# --- reading ------------------------------------------------------------------

def histogram(map, kind: str | None = None, *, min: int = 0,
              step: int | None = None) -> "Histogram":
    """The histogram held in ``map`` as a :class:`Histogram` (see the module docstring).

    ``kind`` "log2" or "linear" overrides what the types say; a linear histogram
    counts [min + i*step, min + (i+1)*step) in slot i.
    """
    shape = _shape(map, kind)
    layout = _layout(map, shape, kind, min, step)
    btf = map.object.btf
    keys, values = map.lookup_batch()
    if shape.how == "slots":
        return _slot_arrays(map, layout, shape.field, keys, values)
    counts = values[shape.field] if shape.field else values
    if map.percpu:
        counts = counts.sum(axis=1, dtype=np.int64)
    counts = counts.astype(np.int64)
    kt = map.key_type_id
    if shape.how == "indexed":
        slots = keys.astype(np.int64)
        return _frame(map, layout, slots, counts, np.zeros(len(keys), np.int64), [])
    key_fields = _fields(btf, kt)
    slots = keys["slot"].astype(np.int64)
    if _struct_name(btf, kt).startswith("bpfnb_hist_key__"):
        groups, group_tid, drop = keys["key"], key_fields["key"][1], None
    else:  # BCC: {fields..., slot}; the other fields tell the histograms apart
        groups, group_tid, drop = _opaque(keys).copy().view(keys.dtype), kt, "slot"
        groups["slot"] = 0
    return grouped_frame(map, layout, slots, counts, groups, group_tid, drop)


def grouped_frame(map, layout, slots, counts, groups, group_tid, drop=None) -> "Histogram":
    """One histogram per distinct ``groups`` record (of type ``group_tid``; its field
    ``drop`` left out of the labels), ordered as the map's keys sort."""
    btf = map.object.btf
    raw = _opaque(groups)
    _, first, inverse = np.unique(raw.view(f"S{raw.dtype.itemsize}"),
                                  return_index=True, return_inverse=True)
    reps = raw[first].view(groups.dtype)
    leaves = [leaf for leaf in _record_leaves(btf, group_tid, reps) if leaf.name != drop]
    labels = list(zip(_names(leaves, "key", _FRAME_COLUMNS), leaves))
    order = _sort_order([leaf for leaf in _leaves(btf, group_tid, reps) if leaf.name != drop])
    return _frame(map, layout, slots, counts, inverse.reshape(-1), labels, order)


def _slot_arrays(map, layout, field, keys, values) -> "Histogram":
    """One histogram per entry of a map whose values hold slot arrays."""
    btf = map.object.btf
    counts = values[field] if field else values
    if map.percpu:
        counts = counts.sum(axis=1, dtype=np.int64)
    counts = counts.astype(np.int64)
    n, nslots = counts.shape
    others = []
    if field:  # the value's other fields (comm, pid, totals) label its histogram
        others = [leaf for leaf in _record_leaves(btf, map.value_type_id, values)
                  if leaf.name != field and not leaf.name.startswith(field + ".")]
        if map.percpu:
            others = [_per_cpu_sum(leaf) for leaf in others]
    key_leaves = []
    if not (map.type in ARRAY_TYPES and map.max_entries == 1):
        key_leaves = _record_leaves(btf, map.key_type_id, keys)
    value_names = {leaf.name for leaf in others}
    key_names = _names(key_leaves, "key", _FRAME_COLUMNS | value_names)
    labels = list(zip(key_names, key_leaves))
    labels += zip(_names(others, "value", _FRAME_COLUMNS | set(key_names)), others)
    order = None
    if map.type not in ARRAY_TYPES:
        order = _sort_order(_leaves(btf, map.key_type_id, keys))
    return _frame(map, layout, np.tile(np.arange(nslots), n), counts.reshape(-1),
                  np.repeat(np.arange(n), nslots), labels, order)


def _frame(map, layout, slots, counts, gid, labels, order=None) -> "Histogram":
    """(slot, count, group) triples -> a Histogram, each group's slots contiguous, from
    its lowest non-zero slot to its highest. ``labels``: (column name, leaf) with one
    raw value per group; ``order``: the groups in display order (None: as numbered)."""
    nz = counts > 0
    slots, counts, gid = slots[nz], counts[nz], gid[nz]
    top = layout.max_slot()
    if len(slots) and slots.min() < 0:
        raise TypeError(f"map {map.name!r}: negative slot numbers (down to "
                        f"{int(slots.min())}) hold counts: not a histogram's slots")
    if top is not None and len(slots) and slots.max() > top:
        raise TypeError(f"map {map.name!r}: slot numbers up to {int(slots.max())} hold "
                        f"counts, beyond log2 slots (0..{top}); for linear buckets, "
                        f".hist(kind='linear', min=..., step=...)")
    ngroups_all = (max(len(leaf.raw) for _, leaf in labels) if labels
                   else int(gid.max()) + 1 if len(gid) else 1)
    rank = np.arange(ngroups_all)
    if order is not None:
        rank[order] = np.arange(len(order))
    # Dense numbers for the groups that have counts, in display order.
    present, gid = np.unique(rank[gid], return_inverse=True)
    gid = gid.reshape(-1)
    by_rank = np.empty(ngroups_all, np.int64)
    by_rank[rank] = np.arange(ngroups_all)
    group_of = by_rank[present]          # the original group of each dense one
    ngroups = len(present)
    lo = np.full(ngroups, np.iinfo(np.int64).max)
    hi = np.full(ngroups, -1)
    np.minimum.at(lo, gid, slots)
    np.maximum.at(hi, gid, slots)
    span = hi - lo + 1
    if span.sum() > MAX_BUCKETS:
        raise ValueError(f"map {map.name!r}: {int(span.sum())} buckets from the lowest "
                         f"slot with counts to the highest, more than {MAX_BUCKETS}; "
                         f"for linear buckets, a larger step")
    start = np.cumsum(span) - span
    row_group = np.repeat(np.arange(ngroups), span)
    out_slot = np.arange(span.sum()) - np.repeat(start, span) + np.repeat(lo, span)
    out_count = np.zeros(len(out_slot), np.int64)
    np.add.at(out_count, start[gid] + slots - lo[gid], counts)
    low, high = layout.bounds(out_slot)

    columns = {name: _column(leaf._replace(raw=leaf.raw[group_of[row_group]]))
               for name, leaf in labels}
    columns.update(low=low, high=high, count=out_count)
    h = Histogram(columns)
    h.title, h.key_columns, h.log2 = map.name, tuple(name for name, _ in labels), layout.log2
    return h


# --- showing ------------------------------------------------------------------

_UNITS = ((60, "E"), (50, "P"), (40, "T"), (30, "G"), (20, "M"), (10, "K"))


def _number(v: float, log2: bool) -> str:
    if math.isinf(v):
        return "..."
    v = int(v)
    if log2:
        for shift, unit in _UNITS:
            if v >= 1 << shift and v % (1 << shift) == 0:
                return f"{v >> shift}{unit}"
    return str(v)


def bucket_label(low: float, high: float, log2: bool = True) -> str:
    """bpftrace's name of a bucket: ``[4, 8)``, ``[1K, 2K)``, ``[0]``, ``[64, ...)``."""
    if math.isinf(low):
        return f"(..., {_number(high, log2)})"
    if high - low == 1:
        return f"[{_number(low, log2)}]"
    return f"[{_number(low, log2)}, {_number(high, log2)})"


def label_value(v) -> str:
    """A key or field value as bpftrace prints it: strings bare, "" when empty."""
    if isinstance(v, str):
        return v if v else '""'
    if isinstance(v, np.ndarray):
        return str(v.tolist())
    return str(v)


def bars(labels: list[str], counts: list[int], width: int, lw: int = 0,
         cw: int = 0) -> list[str]:
    """bpftrace's ASCII bars, scaled to the largest count; labels at least ``lw`` and
    counts ``cw`` characters wide (to line up several histograms)."""
    lw = max(lw, *map(len, labels), 0)
    cw = max(cw, *(len(str(c)) for c in counts), 0)
    top = max(counts, default=0) or 1
    return [f"{label:<{lw}} {c:>{cw}} |{'@' * (c * width // top):<{width}}|"
            for label, c in zip(labels, counts)]


class _HistPlot(PlotAccessor):
    """``h.plot()`` draws the histogram's bars; ``h.plot.line()`` etc. stay pandas'."""

    def __call__(self, *args, **kwargs):
        if args or "kind" in kwargs or "x" in kwargs or "y" in kwargs:
            return super().__call__(*args, **kwargs)
        return self._parent._plot_bars(**kwargs)


class Histogram(pd.DataFrame):
    """A histogram as a tidy DataFrame: the label columns of a keyed histogram (its key,
    the value's other fields), then ``low`` (inclusive), ``high`` (exclusive; inf for an
    open-ended last bucket, -inf ``low`` for a below-min one) and ``count``.

    Prints as bpftrace's ASCII bars, one histogram per key, largest total first;
    ``.group(...)`` picks one, ``.groups()`` lists them, ``.plot()`` draws them and
    ``.df`` is the plain DataFrame."""

    _metadata = ["title", "key_columns", "log2"]
    title = ""
    key_columns: tuple = ()
    log2 = True
    BAR_WIDTH = 40
    MAX_GROUPS = 10          # histograms printed before "... N more"

    @property
    def _constructor(self):
        return Histogram

    @property
    def df(self) -> pd.DataFrame:
        return pd.DataFrame(self)

    def _is_whole(self) -> bool:
        return {*_FRAME_COLUMNS, *self.key_columns} <= set(self.columns)

    def _labels(self) -> list[str]:
        return [bucket_label(lo, hi, self.log2) for lo, hi in zip(self["low"], self["high"])]

    def _group_name(self, row: int) -> str:
        """The name of the histogram of ``row`` as bpftrace shows it: ``@name[123, comm
        bash]``; a scalar key (column ``key``) shows its value alone, others their name."""
        base = f"@{self.title}"
        if not self.key_columns:
            return base
        values = [self[c].iat[row] for c in self.key_columns]  # a row would upcast ints
        return base + "[" + ", ".join(label_value(v) if c == "key" else
                                      f"{c} {label_value(v)}"
                                      for c, v in zip(self.key_columns, values)) + "]"

    def _group_names(self) -> list[str]:
        """Per row, the name of its histogram (see _group_name)."""
        starts, ends = self._spans()
        names = [""] * len(self)
        for start, end in zip(starts.tolist(), ends.tolist()):
            names[start:end] = [self._group_name(start)] * (end - start)
        return names

    def _spans(self) -> tuple[np.ndarray, np.ndarray]:
        """Start and end rows of each histogram: runs of equal label columns."""
        n = len(self)
        change = np.zeros(n, bool)
        if n:
            change[0] = True
        for c in self.key_columns:
            col = np.asarray(self[c].astype(object)) if self[c].dtype.kind not in "iufb" \
                else self[c].to_numpy()
            if col.ndim == 1 and n > 1:
                change[1:] |= col[1:] != col[:-1]
        starts = np.flatnonzero(change)
        return starts, np.append(starts[1:], n)

    def groups(self) -> pd.DataFrame:
        """One row per histogram: its label columns and ``total`` (the sum of its counts)."""
        if not self.key_columns:
            return pd.DataFrame({"total": [int(self["count"].sum())]} if len(self)
                                else {"total": []})
        df = pd.DataFrame(self)
        return (df.groupby(list(self.key_columns), sort=False, observed=True)["count"]
                .sum().rename("total").reset_index())

    def group(self, *key, **fields) -> "Histogram":
        """One histogram: ``h.group(123)`` matches the label columns in order (a scalar key
        first), ``h.group(comm="bash")`` by name. KeyError when none matches."""
        if len(key) > len(self.key_columns):
            raise KeyError(f"@{self.title} has {len(self.key_columns)} label columns "
                           f"({', '.join(self.key_columns) or 'none'}), not {len(key)}")
        unknown = set(fields) - set(self.key_columns)
        if unknown:
            raise KeyError(f"@{self.title} has no label column {', '.join(sorted(unknown))}"
                           f"; it has: {', '.join(self.key_columns) or 'none'}")
        want = dict(zip(self.key_columns, key), **fields)
        mask = np.ones(len(self), bool)
        for col, value in want.items():
            mask &= (self[col] == value).to_numpy()
        if not mask.any():
            shown = ", ".join(f"{c}={v!r}" for c, v in want.items())
            raise KeyError(f"no histogram with {shown} in @{self.title}")
        return self[mask]

    def to_text(self, limit: int | None = None) -> str:
        """bpftrace's bars; at most ``limit`` histograms (default MAX_GROUPS), the
        largest totals first, then "... N more"."""
        if not len(self):
            return f"@{self.title}: no counts yet (every slot is 0)"
        limit = self.MAX_GROUPS if limit is None else limit
        counts = self["count"].to_numpy()
        starts, ends = self._spans()
        totals = np.add.reduceat(counts, starts)
        shown = np.argsort(-totals, kind="stable")[:limit]  # largest first, ties in order
        rows = np.concatenate([np.arange(starts[g], ends[g]) for g in shown])
        lows, highs = self["low"].to_numpy(), self["high"].to_numpy()
        labels = {r: bucket_label(lows[r], highs[r], self.log2) for r in rows.tolist()}
        lw = max(map(len, labels.values()))
        cw = len(str(counts[rows].max()))
        lines = []
        for g in shown.tolist():
            lines.append(f"{self._group_name(starts[g])}:")
            span = range(starts[g], ends[g])
            lines += bars([labels[r] for r in span], counts[starts[g]:ends[g]].tolist(),
                          self.BAR_WIDTH, lw, cw)
            lines.append("")
        if len(starts) > limit:
            lines.append(f"... {len(starts) - limit} more")
        else:
            lines.pop()
        return "\n".join(lines)

    def __repr__(self):
        return self.to_text() if self._is_whole() else super().__repr__()

    def _repr_html_(self):
        if not self._is_whole():
            return super()._repr_html_()
        return f"<pre>{html.escape(self.to_text())}</pre>"

    @property
    def plot(self):
        return _HistPlot(self)

    def _plot_bars(self, ax=None, **kwargs):
        import matplotlib.pyplot as plt
        if ax is None:
            _, ax = plt.subplots(figsize=(max(4, 0.35 * self["low"].nunique() + 2), 3))
        ax.set_title(f"@{self.title}")
        if not len(self):
            return ax
        table = pd.DataFrame({"bucket": self._labels(), "low": self["low"],
                              "group": self._group_names(), "count": self["count"]})
        wide = table.pivot_table(index=["low", "bucket"], columns="group", values="count",
                                 aggfunc="sum", fill_value=0, sort=True)
        wide.index = wide.index.get_level_values("bucket")
        wide.plot.bar(ax=ax, width=0.85, legend=bool(self.key_columns), **kwargs)
        ax.set_xlabel("log2 buckets" if self.log2 else "buckets")
        ax.set_ylabel("count")
        return ax
