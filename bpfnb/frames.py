"""Maps as pandas DataFrames, and histograms.

``map_to_df(map, percpu="sum")`` snapshots a key/value map with batch lookups into
numpy arrays of the BTF dtype, then turns each field into a column, vectorised:

* one row per entry; key columns, then value columns. A scalar key or value is the
  column ``key`` / ``value``; struct fields keep their C names, nested ones joined
  with ``.`` (``where.x``). A name found on both sides becomes ``key.<name>`` and
  ``value.<name>``.
* ``char[N]`` -> ``str`` (up to the first NUL), except a char array with a sibling
  ``<name>_size``/``_len``/``_count`` field: the list of its NUL-separated strings
  (execsnoop's ``args``). Fields typed with bpf/bpfnb.h's semantic typedefs
  (``bpfnb_ipv4_t``, ``bpfnb_errno_t``...), or named in ``decode=``, are decoded,
  their numbers kept in ``<name>_raw`` columns after the others (see
  bpfnb/decode.py).
* Enums -> ``pandas.Categorical`` whose categories are all the enumerator names; a value no enumerator has stays
  visible as the category ``"<number>"`` rather than turning into NaN. Bitfields
  -> ints (or enum / bool), in declaration order. Other arrays -> an object column
  holding one numpy array per row (arrays of enums stay ints).
* Hash maps are sorted by key (numeric order, strings bytewise), so a snapshot looks
  the same from one run to the next; array maps come in index order.
* Per-CPU maps: ``percpu="sum"`` adds numeric fields over the CPUs (ints widen to 64
  bits; strings, enums, bools, pointers and semantic types come from the first CPU
  where the field is non-zero); ``"columns"`` gives each value column per CPU, ``count[0]``,
  ``count[1]`` ...; ``"rows"`` gives one row per entry and CPU with a ``cpu`` column.

``histogram(map)`` reads the histogram maps of ``bpf/bpfnb.h`` (BPFNB_HIST,
BPFNB_LHIST and their keyed forms), libbpf-tools' ``struct hist { u32 slots[N]; }``
values, and plain arrays of counts indexed by a log2 (or, when told, linear) slot.
It returns a :class:`Histogram`: a DataFrame with ``low``, ``high``, ``count`` (and
the key columns of a keyed histogram) that prints as bpftrace's ASCII bars.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
from pandas.plotting import PlotAccessor

from . import decode as decoders
from .libbpf.map import (ARRAY, ARRAY_TYPES, HASH, LRU_HASH, LRU_PERCPU_HASH,
                         PERCPU_ARRAY, PERCPU_HASH, PERF_EVENT_ARRAY, RINGBUF, STACK_TRACE)

LPM_TRIE, CGROUP_STORAGE, PERCPU_CGROUP_STORAGE = 11, 19, 21
# Maps whose entries are key -> value records a snapshot can list.
TABULAR_TYPES = {HASH, ARRAY, PERCPU_HASH, PERCPU_ARRAY, STACK_TRACE, LRU_HASH,
                 LRU_PERCPU_HASH, LPM_TRIE, CGROUP_STORAGE, PERCPU_CGROUP_STORAGE}
PERCPU_MODES = ("sum", "columns", "rows")


def is_tabular(map) -> bool:
    """Whether ``map`` holds key/value entries a DataFrame can show (not a ring
    buffer, perf event array, program array, map of maps...)."""
    return map.type in TABULAR_TYPES and map.key_size > 0


# --- fields -> columns --------------------------------------------------------

class _Leaf(NamedTuple):
    """One column-to-be: raw values of shape (rows, [cpus,] *array dims)."""
    name: str                  # dotted path; "" for a scalar key or value
    offset: int                # byte offset in the record: orders bitfields among fields
    raw: np.ndarray
    kind: str                  # "num", "enum", "str", "bool", "ptr", "bytes"
    enum: tuple = ()           # ((name, value), ...) of an enum
    decoder: str = ""          # a bpfnb.h semantic typedef's decoder (see decode.py)


def _kind(btf, type_id, dtype) -> tuple[str, tuple]:
    if dtype.kind == "S":
        return "str", ()
    if dtype.kind == "b":
        return "bool", ()
    if dtype.kind == "V":
        return "bytes", ()
    if btf is not None and type_id:
        t = btf.type(btf.resolve(type_id))
        if t.kind in ("enum", "enum64"):
            return "enum", tuple(t.values)
        if t.kind == "ptr":
            return "ptr", ()
    return "num", ()


def _leaves(btf, type_id, arr, prefix="", offset=0) -> list:
    """The leaves of records ``arr`` of BTF type ``type_id`` (0: no BTF)."""
    if btf is not None and type_id:
        rid = btf.resolve(type_id)
        if btf.type(rid).kind in ("struct", "union"):
            out = []
            for name, ftid, foff, bits in btf.fields(rid):
                if not bits:
                    out += _leaves(btf, ftid, arr[name], f"{prefix}{name}.", offset + foff)
            return out
    # numpy already moved array dimensions into arr.shape: (rows, [cpus,] *dims)
    kind, enum = _kind(btf, type_id, arr.dtype)
    return [_Leaf(prefix[:-1], offset, arr, kind, enum, decoders.semantic_type(btf, type_id))]


def _opaque(arr: np.ndarray) -> np.ndarray:
    """The same records as opaque bytes. Copies, takes and repeats of a structured
    array drop (or leave garbage in) the bytes no field covers, such as bitfields."""
    return arr.view(np.dtype((np.void, arr.dtype.itemsize)))


def _record_leaves(btf, type_id, arr) -> list:
    """Leaves of records, bitfields included, in declaration (offset) order."""
    leaves = _leaves(btf, type_id, arr)
    bitfields = btf.bitfields(type_id) if btf is not None and type_id else []
    if bitfields:
        values = btf.unpack_bitfields(type_id, _opaque(arr).reshape(-1).view(arr.dtype))
        for bf in bitfields:
            rt = btf.type(btf.resolve(bf.type_id))
            if rt.kind in ("enum", "enum64"):
                kind, enum = "enum", tuple(rt.values)
            else:
                kind, enum = ("bool" if rt.encoding == "bool" else "num"), ()
            raw = values[bf.name].reshape(arr.shape)
            leaves.append(_Leaf(bf.name, bf.byte_offset,
                                raw.astype(bool) if kind == "bool" else raw, kind, enum))
        leaves.sort(key=lambda leaf: leaf.offset)  # stable: fields before bitfields
    return leaves


def _strings(raw: np.ndarray) -> np.ndarray:
    """char[N] values (numpy 'S') -> str, cut at the first NUL like C."""
    n = raw.dtype.itemsize
    if n == 0:
        return np.full(raw.shape, "", dtype=object)
    b = np.ascontiguousarray(raw).view(np.uint8).reshape(-1, n)
    # Zero every byte from the first NUL on (stack garbage may follow it).
    b = np.where(np.logical_or.accumulate(b == 0, axis=1), np.uint8(0), b)
    if not (b >= 0x80).any():  # ASCII: each byte widened is its UCS-4 character
        return b.astype(np.uint32).view(f"U{n}").reshape(raw.shape)
    return np.char.decode(b.view(f"S{n}").reshape(raw.shape), "utf-8", "replace")


def _categorical(raw: np.ndarray, enum: tuple) -> pd.Categorical:
    names = [name for name, _ in enum]
    bits = raw.dtype.itemsize * 8
    first = {}
    for i, (_, value) in enumerate(enum):
        value &= (1 << bits) - 1  # an enumerator as the field's bits read it
        if raw.dtype.kind == "i" and value >> (bits - 1):
            value -= 1 << bits
        first.setdefault(value, i)
    known = np.array(sorted(first), dtype=raw.dtype)
    codes = np.full(raw.shape, -1, dtype=np.int64)
    if len(known):
        pos = np.minimum(np.searchsorted(known, raw), len(known) - 1)
        hit = known[pos] == raw
        codes[hit] = np.array([first[v] for v in known.tolist()])[pos[hit]]
    unknown = codes < 0
    if unknown.any():
        extra = np.unique(raw[unknown])
        codes[unknown] = len(names) + np.searchsorted(extra, raw[unknown])
        names += [str(v) for v in extra.tolist()]
    return pd.Categorical.from_codes(codes, categories=names)


def _column(leaf: _Leaf):
    """Raw values of shape (rows, *array dims) -> a DataFrame column."""
    raw = leaf.raw
    if leaf.kind == "str":
        raw = _strings(raw)
    elif leaf.kind == "enum" and raw.ndim == 1:
        return _categorical(raw, leaf.enum)
    elif leaf.kind == "bytes" and raw.ndim == 1:
        return pd.Series(raw.tolist(), dtype=object)
    if raw.ndim == 1:
        return raw
    return pd.Series(list(np.ascontiguousarray(raw)), dtype=object)


def _per_cpu_sum(leaf: _Leaf) -> _Leaf:
    raw = leaf.raw
    if leaf.kind == "num" and not leaf.decoder:  # addresses, times... do not add up
        return leaf._replace(raw=raw.sum(axis=1))
    n, ncpu = raw.shape[:2]
    if n == 0:
        return leaf._replace(raw=raw[:, 0])
    nonzero = np.ascontiguousarray(raw).view(np.uint8).reshape(n, ncpu, -1).any(axis=2)
    return leaf._replace(raw=raw[np.arange(n), nonzero.argmax(axis=1)])


def _names(leaves: list, side: str, taken: set) -> list:
    out = []
    for leaf in leaves:
        if not leaf.name:
            out.append(side)
        elif leaf.name in taken:
            out.append(f"{side}.{leaf.name}")
        else:
            out.append(leaf.name)
    return out


def _sort_order(leaves: list) -> np.ndarray | None:
    """Row order sorting by the sortable key leaves (first leaf first)."""
    cols = [leaf.raw for leaf in leaves if leaf.raw.ndim == 1 and leaf.kind != "bytes"]
    if len(cols) == 1:  # numpy's SIMD quicksort: ~6x faster than lexsort on 1M u32
        return np.argsort(cols[0])
    return np.lexsort(cols[::-1]) if cols else None


def map_to_df(map, percpu: str = "sum", decode: dict | None = None) -> pd.DataFrame:
    """A snapshot of ``map`` as a DataFrame (see the module docstring for the rules).

    ``decode`` ({column: decoder}, e.g. ``{"daddr": "ipv4"}``) decodes columns the
    way bpf/bpfnb.h's semantic typedefs do (see bpfnb/decode.py)."""
    if map.type == STACK_TRACE:
        from .symbols import stack_map_to_df
        return stack_map_to_df(map)
    if percpu not in PERCPU_MODES:
        raise ValueError(f"percpu={percpu!r}: choose one of {', '.join(PERCPU_MODES)}")
    if not is_tabular(map):
        raise TypeError(f"map {map.name!r} is a {map.type_name}, not a key/value map"
                        + (": read it with .stream()"
                           if map.type in (RINGBUF, PERF_EVENT_ARRAY) else ""))
    btf = map.object.btf
    keys, values = map.lookup_batch()
    kdt, vdt = keys.dtype, values.dtype
    mode = percpu if map.percpu else None
    ncpu = values.shape[1] if map.percpu else 1
    if map.type not in ARRAY_TYPES:
        order = _sort_order(_leaves(btf, map.key_type_id, keys))
        if order is not None:
            keys, values = _opaque(keys)[order].view(kdt), _opaque(values)[order].view(vdt)
    if mode == "rows":
        keys = np.repeat(_opaque(keys), ncpu).view(kdt)
        values = _opaque(values).reshape(-1).view(vdt)
    key_leaves = _record_leaves(btf, map.key_type_id, keys)
    value_leaves = _record_leaves(btf, map.value_type_id, values)
    if mode == "sum":
        value_leaves = [_per_cpu_sum(leaf) for leaf in value_leaves]

    key_set = {leaf.name for leaf in key_leaves}
    value_set = {leaf.name for leaf in value_leaves}
    taken = (key_set & value_set) | ({"cpu"} if mode == "rows" else set())
    pairs = list(zip(_names(key_leaves, "key", taken), key_leaves))
    if mode == "rows":
        cpus = np.tile(np.arange(ncpu, dtype=np.int64), len(keys) // ncpu)
        pairs.append(("cpu", _Leaf("cpu", 0, cpus, "num")))
    for name, leaf in zip(_names(value_leaves, "value", taken), value_leaves):
        if mode == "columns":
            pairs += [(f"{name}[{cpu}]", leaf._replace(raw=leaf.raw[:, cpu]))
                      for cpu in range(ncpu)]
        else:
            pairs.append((name, leaf))
    return pd.DataFrame(decoders.columns(pairs, decode, _column))


def records_to_df(records: np.ndarray, btf, type_id: int,
                  decode: dict | None = None) -> pd.DataFrame:
    """Records of BTF type ``type_id`` (a structured array, e.g. ring buffer events)
    as a DataFrame, one row each, with the column rules (and ``decode``) of
    ``map_to_df``.

    Numeric columns are views of ``records`` (no copy: a DataFrame would otherwise
    copy each field), so hand over an array nothing else writes to."""
    leaves = _record_leaves(btf, type_id, records)
    pairs = list(zip(_names(leaves, "value", set()), leaves))
    return pd.DataFrame(decoders.columns(pairs, decode, _column),
                        index=pd.RangeIndex(len(records)), copy=False)


# --- histograms ---------------------------------------------------------------

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
            low = (self.min + i * self.step).astype(np.float64)
            high = low + self.step
            if self.tails:
                low = np.where(slot == 0, -np.inf, low)
                high = np.where(slot == 0, float(self.min), high)
        if self.nslots:
            high = np.where(slot >= self.nslots - 1, np.inf, high)
        return low, high


def _struct_name(btf, type_id) -> str:
    if btf is None or not type_id:
        return ""
    t = btf.type(btf.resolve(type_id))
    return t.name if t.kind == "struct" else ""


def _lhist_params(btf, type_id) -> dict:
    """min/max/step of a BPFNB_LHIST value type: sizes of its zero-length arrays."""
    dims = {}
    for m in btf.type(btf.resolve(type_id)).members:
        t = btf.type(btf.resolve(m.type_id))
        if t.kind == "array" and t.nelems == 0:
            dims[m.name] = btf.type(btf.resolve(t.type_id)).nelems
    lo = dims["bpfnb_min"] - dims["bpfnb_neg_min"]
    return {"min": lo, "max": lo + dims["bpfnb_span"], "step": dims["bpfnb_step"]}


def _is_int(btf, type_id, dtype) -> bool:
    return (dtype.kind in "iu" and dtype.subdtype is None
            and _kind(btf, type_id, dtype)[0] == "num")


def _counts_field(btf, map):
    """(field name or None, 'scalar'|'slots') of the counts in the value type."""
    vt = map.value_type_id
    name = _struct_name(btf, vt)
    dtype = map.value_dtype
    if name == "bpfnb_hist" or name.startswith("bpfnb_lhist__"):
        return "count", "scalar"
    if _is_int(btf, vt, dtype):
        return None, "scalar"
    fields = btf.fields(vt) if btf is not None and vt else []
    if len(fields) == 1 and not fields[0][3]:
        sub = dtype[fields[0][0]]
        if sub.subdtype is not None and sub.base.kind in "iu" and len(sub.shape) == 1:
            return fields[0][0], "slots"
    raise TypeError(f"map {map.name!r} ({map.value_type} values) is not a histogram: "
                    "use BPFNB_HIST/BPFNB_LHIST of bpfnb.h, or counts indexed by slot "
                    "(an array map of ints, or a value holding one int array slots[N])")


def _layout(btf, map, kind, min, step, counts_shape) -> _Layout:
    name = _struct_name(btf, map.value_type_id)
    if kind not in (None, "log2", "linear"):
        raise ValueError(f"kind={kind!r}: choose 'log2' or 'linear'")
    if kind == "linear" or (kind is None and name.startswith("bpfnb_lhist__")):
        if kind is None:
            p = _lhist_params(btf, map.value_type_id)
            n = (p["max"] - p["min"]) // p["step"] + 2
            return _Layout(False, min=p["min"], step=p["step"], tails=True, nslots=n)
        if not step or step <= 0:
            raise ValueError("a linear histogram needs step > 0 (and min, default 0)")
        return _Layout(False, min=min, step=step)
    if name == "bpfnb_hist":
        n = map.max_entries if map.type in ARRAY_TYPES else 65
        return _Layout(True, nslots=n)
    if counts_shape == "slots":  # libbpf-tools: log2l(v) slots, clamped to the last one
        return _Layout(True, first=1, nslots=map.value_dtype[0].shape[0])
    return _Layout(True)


def histogram(map, kind: str | None = None, *, min: int = 0,
              step: int | None = None) -> "Histogram":
    """The histogram held in ``map`` as a :class:`Histogram`.

    Maps of bpfnb.h describe themselves. Otherwise counts indexed by slot are read as
    log2 (slot 0: the value 0, slot k: [2^(k-1), 2^k); libbpf-tools' ``slots[N]``:
    slot k: [2^k, 2^(k+1)) with 0 in slot 0), or, with ``kind="linear"``, slot i as
    [min + i*step, min + (i+1)*step). A struct key with a ``slot`` field (bpfnb.h's
    keyed forms, BCC's) gives one histogram per value of its other fields.
    """
    btf = map.object.btf
    field, shape = _counts_field(btf, map)
    layout = _layout(btf, map, kind, min, step, shape)
    keys, values = map.lookup_batch()
    counts = values[field] if field else values
    if map.percpu:
        counts = counts.sum(axis=1)
    counts = np.asarray(counts, dtype=np.int64)

    kt = map.key_type_id
    key_fields = {f[0]: f[1] for f in btf.fields(kt)} if btf is not None and kt else {}
    groups, group_tid, drop = None, kt, None
    if shape == "slots":  # one histogram per entry
        n, nslots = counts.shape
        slots = np.tile(np.arange(nslots), n)
        if not (map.type in ARRAY_TYPES and map.max_entries == 1):
            groups = np.repeat(_opaque(keys), nslots).view(keys.dtype)
        counts = counts.reshape(-1)
    elif "slot" in key_fields:  # keyed: {key, slot} of bpfnb.h, {fields..., slot} of BCC
        slots = keys["slot"]
        if _struct_name(btf, kt).startswith("bpfnb_hist_key__"):
            groups, group_tid = keys["key"], key_fields["key"]
        else:
            groups, drop = _opaque(keys).copy().view(keys.dtype), "slot"
            groups["slot"] = 0  # the other fields tell the histograms apart
    elif _is_int(btf, kt, map.key_dtype):
        slots = keys
    else:
        raise TypeError(f"map {map.name!r}: its key {map.key_type} is not a slot number "
                        "nor a struct with a 'slot' field")
    return _histogram_frame(map.name, btf, layout, slots.astype(np.int64), counts,
                            groups, group_tid, drop)


def _histogram_frame(title, btf, layout, slots, counts, groups, group_tid, drop):
    """Long (group, slot, count) triples -> a Histogram, each group's slots contiguous."""
    def group_leaves(records, how=_leaves):
        leaves = how(btf, group_tid, records.view(group_dtype))
        return [leaf for leaf in leaves if leaf.name != drop]

    nz = counts > 0
    slots, counts = slots[nz], counts[nz]
    if groups is None:
        gid, reps = np.zeros(len(slots), np.int64), None
    else:
        group_dtype = groups.dtype
        groups = _opaque(groups)[nz]
        _, first, inverse = np.unique(groups.view(f"S{groups.dtype.itemsize}"),
                                      return_index=True, return_inverse=True)
        reps = groups[first]
        order = _sort_order(group_leaves(reps))
        if order is None:
            order = np.arange(len(reps))
        rank = np.empty(len(order), np.int64)
        rank[order] = np.arange(len(order))
        gid, reps = rank[inverse.reshape(-1)], reps[order]
    ngroups = int(gid.max()) + 1 if len(gid) else 0
    # Every slot between a group's lowest and highest non-zero one, zeros included.
    lo = np.full(ngroups, np.iinfo(np.int64).max)
    hi = np.full(ngroups, -1)
    np.minimum.at(lo, gid, slots)
    np.maximum.at(hi, gid, slots)
    span = hi - lo + 1
    start = np.cumsum(span) - span
    row_group = np.repeat(np.arange(ngroups), span)
    out_slot = np.arange(span.sum()) - np.repeat(start, span) + np.repeat(lo, span)
    out_count = np.zeros(len(out_slot), np.int64)
    np.add.at(out_count, start[gid] + slots - lo[gid], counts)
    low, high = layout.bounds(out_slot)

    columns = {}
    key_columns = []
    if reps is not None:
        leaves = group_leaves(reps[row_group], _record_leaves)
        names = _names(leaves, "key", {"low", "high", "count"})
        key_columns = names
        columns.update(zip(names, (_column(leaf) for leaf in leaves)))
    columns.update(low=low, high=high, count=out_count)
    h = Histogram(columns)
    h.title, h.key_columns, h.log2 = title, tuple(key_columns), layout.log2
    return h


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


def _label(low: float, high: float, log2: bool) -> str:
    if math.isinf(low):
        return f"(..., {_number(high, log2)})"
    if high - low == 1:
        return f"[{_number(low, log2)}]"
    return f"[{_number(low, log2)}, {_number(high, log2)})"


class _HistPlot(PlotAccessor):
    """``h.plot()`` draws the histogram's bars; ``h.plot.line()`` etc. stay pandas'."""

    def __call__(self, *args, **kwargs):
        if args or "kind" in kwargs or "x" in kwargs or "y" in kwargs:
            return super().__call__(*args, **kwargs)
        return self._parent._plot_bars(**kwargs)


class Histogram(pd.DataFrame):
    """A histogram as a DataFrame: ``low`` (inclusive), ``high`` (exclusive; inf for an
    open-ended last bucket, -inf ``low`` for a below-min one), ``count``, preceded by
    the key columns of a keyed histogram. Prints as ASCII bars; ``.plot()`` draws
    them; ``.df`` is the plain DataFrame."""

    _metadata = ["title", "key_columns", "log2"]
    title = ""
    key_columns: tuple = ()
    log2 = True
    BAR_WIDTH = 40

    @property
    def _constructor(self):
        return Histogram

    @property
    def df(self) -> pd.DataFrame:
        return pd.DataFrame(self)

    def _is_whole(self) -> bool:
        return {"low", "high", "count", *self.key_columns} <= set(self.columns)

    def _labels(self) -> list[str]:
        return [_label(lo, hi, self.log2) for lo, hi in zip(self["low"], self["high"])]

    def _group_names(self) -> list[str]:
        """Per row, its key as bpftrace shows it: ``@name[k1, k2]``."""
        base = f"@{self.title}"
        if not self.key_columns:
            return [base] * len(self)
        cols = [self[c].tolist() for c in self.key_columns]
        return [f"{base}[{', '.join(str(v) for v in vals)}]" for vals in zip(*cols)]

    def to_text(self) -> str:
        if not len(self):
            return f"@{self.title}: no counts"
        labels = self._labels()
        counts = self["count"].tolist()
        groups = self._group_names()
        lw = max(map(len, labels))
        cw = max(len(str(c)) for c in counts)
        lines, start = [], 0
        for end in range(1, len(self) + 1):
            if end < len(self) and groups[end] == groups[start]:
                continue
            top = max(counts[start:end]) or 1
            lines.append(f"{groups[start]}:")
            for i in range(start, end):
                bar = "@" * (counts[i] * self.BAR_WIDTH // top)
                lines.append(f"{labels[i]:<{lw}} {counts[i]:>{cw}} "
                             f"|{bar:<{self.BAR_WIDTH}}|")
            lines.append("")
            start = end
        return "\n".join(lines[:-1])

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
