"""Maps as pandas DataFrames (histograms: hist.py; bpftrace-style printing: show.py).

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
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

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


def key_column_count(dtype: np.dtype) -> int:
    """How many of map_to_df's leading columns a key makes: one per leaf of its
    (nested) struct."""
    if dtype.names:
        return sum(key_column_count(dtype.fields[name][0]) for name in dtype.names)
    return 1


def map_to_df(map, percpu: str = "sum", decode: dict | None = None) -> pd.DataFrame:
    """A snapshot of ``map`` as a DataFrame (see the module docstring for the rules).

    ``decode`` ({column: decoder}, e.g. ``{"daddr": "ipv4"}``) decodes columns the
    way bpf/bpfnb.h's semantic typedefs do (see bpfnb/decode.py)."""
    if map.type == STACK_TRACE:
        from .symbols import stack_map_to_df
        return stack_map_to_df(map)
    from . import aggregate
    if percpu == "sum" and aggregate.kind(map) in aggregate.TIDY_KINDS:
        return aggregate.to_df(map)
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
    return pd.DataFrame(record_columns(records, btf, type_id, decode),
                        index=pd.RangeIndex(len(records)), copy=False)


def record_columns(records: np.ndarray, btf, type_id: int,
                   decode: dict | None = None) -> dict:
    """The columns of ``records_to_df``, by name (numeric ones views of ``records``),
    for consumers building other tables than DataFrames (recordings: Arrow)."""
    leaves = _record_leaves(btf, type_id, records)
    pairs = list(zip(_names(leaves, "value", set()), leaves))
    return decoders.columns(pairs, decode, _column)
