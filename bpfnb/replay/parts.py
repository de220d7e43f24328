"""The parts of a replayed object: maps, their streams, global sections and programs,
each answering at the replay clock, each refusing writes (ReadOnlyError)."""

from __future__ import annotations

import numpy as np

from .. import namespace
from ..follow import counted, uncounted

SNAPSHOT, TIME = "_snapshot", "_time"
_HIST_COLUMNS = ("low", "high", "count")


class ReplayError(Exception):
    """A recording cannot be read or does not hold what was asked."""


class ReadOnlyError(ReplayError, AttributeError):
    """A write (or load, attach) asked of a replayed object: it only shows a recording.
    An AttributeError too, as writing a read-only attribute is."""

    def __init__(self, what: str, obj=None):
        where = f" of {obj.describe()}" if obj is not None else ""
        super().__init__(f"{what}: this is a replay{where}, read-only. Run the cell live "
                         f"(%%bpf NAME, or bpfnb.load(...)) to change what the kernel holds")


class Namespace(namespace.Namespace):
    """A replay's maps or programs: as a live Object's, and read-only."""

    def __setattr__(self, name, value):
        raise ReadOnlyError(f"setting {self._kind} {name!r}")


def read_table(path, what: str):
    """A Parquet file as a pyarrow Table; ReplayError naming ``what`` if it cannot be read."""
    import pyarrow.parquet as pq
    try:
        return pq.read_table(path)
    except FileNotFoundError:
        raise ReplayError(f"{what} is missing: no file {str(path)!r}") from None
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise ReplayError(f"{what} cannot be read from {str(path)!r}: {e}") from None


def _times(table) -> np.ndarray:
    return table.column(TIME).to_numpy() if table.num_rows else np.zeros(0, np.int64)


def rows_until(table, t_ns: int, times: np.ndarray | None = None) -> int:
    """How many leading rows of ``table`` (in receive order) have `_time` <= t_ns
    (``times``: its `_time` column, when already at hand)."""
    return int(np.searchsorted(_times(table) if times is None else times, t_ns,
                               side="right"))


def _in_order(table):
    """The table sorted by `_time` when its rows are not (rows_until needs the order)."""
    t = _times(table)
    if len(t) > 1 and not bool(np.all(t[1:] >= t[:-1])):
        import pyarrow.compute as pc
        return table.take(pc.sort_indices(table, [(TIME, "ascending")]))
    return table


def _plain(table):
    """The recorded rows as the live call made them: without the bookkeeping columns."""
    drop = [c for c in (SNAPSHOT, TIME) if c in table.column_names]
    return table.drop_columns(drop).to_pandas() if drop else table.to_pandas()


def _scalar(value):
    return value.item() if isinstance(value, np.generic) else value


class _Snapshots:
    """A maps/ or hists/ file: the rows of each snapshot, by snapshot number."""

    def __init__(self, table):
        snaps = table.column(SNAPSHOT).to_numpy() if table.num_rows else np.zeros(0, np.int64)
        if len(snaps) > 1 and not bool(np.all(snaps[1:] >= snaps[:-1])):
            order = np.argsort(snaps, kind="stable")
            table, snaps = table.take(order), snaps[order]
        self.table = table
        self.ids, self.starts = np.unique(snaps, return_index=True)
        self.ends = np.append(self.starts[1:], len(snaps)).astype(np.int64)
        times = _times(table)
        self.times = times[self.starts] if len(times) else np.zeros(0, np.int64)

    def rows(self, snapshot: int | None):
        """The rows of ``snapshot`` as a DataFrame (none: the map was empty then)."""
        i = -1 if snapshot is None else int(np.searchsorted(self.ids, snapshot))
        if i < 0 or i >= len(self.ids) or self.ids[i] != snapshot:
            return _plain(self.table.slice(0, 0))
        return _plain(self.table.slice(int(self.starts[i]), int(self.ends[i] - self.starts[i])))


def _map_read(m):
    return m._obj, f"maps/{m.name}"


def _stream_read(s):
    return s._map._obj, f"streams/{s.map_name}"


def _globals_read(g):
    return g._obj, "globals"


class ReplayMap:
    """A recorded map: ``to_df()`` / ``hist()`` at the replay clock, ``stream()`` for a
    ring or perf buffer, ``live()``. Writes raise ReadOnlyError."""

    def __init__(self, obj, name: str, info: dict, stream_info: dict | None):
        self._obj = obj
        self.name = name
        self.info = dict(info or {})
        self.stream_info = stream_info
        self.type = self.info.get("type") or ("ringbuf" if stream_info else "hash")
        self.type_name = self.type
        self.key_type = self.info.get("key_type", "")
        self.value_type = self.info.get("value_type", "")
        self.max_entries = self.info.get("max_entries")
        self.percpu = bool(self.info.get("percpu"))
        # How many leading to_df() columns are the key (None in recordings before it).
        self.key_columns = self.info.get("key_columns")
        self._snaps = self._hists = self._records = self._record_times = None
        self._stack_log = None  # stacks/<map>.parquet, read on first use (replay/stacks.py)
        if self.info.get("file"):
            self._snaps = _Snapshots(obj._read(f"map {name!r}", self.info["file"]))
        if self.info.get("hist_file"):
            self._hists = _Snapshots(obj._read(f"histogram {name!r}", self.info["hist_file"]))

    @property
    def object(self):
        return self._obj

    @property
    def is_stream(self) -> bool:
        return self.stream_info is not None

    @property
    def is_tabular(self) -> bool:
        return self._snaps is not None

    @property
    def is_histogram(self) -> bool:
        return self._hists is not None

    def _snapshot_times(self) -> list[int]:
        return [int(t) for s in (self._snaps, self._hists) if s is not None for t in s.times]

    def _last_record_time(self) -> int | None:
        """The newest record's `_time`, from the Parquet statistics (no data read)."""
        import pyarrow.parquet as pq
        try:
            meta = pq.ParquetFile(self._obj.path / self.stream_info["file"]).metadata
        except (OSError, ValueError):
            return None
        names = [meta.schema.column(i).name for i in range(meta.num_columns)]
        if TIME not in names or meta.num_rows == 0:
            return None
        col = names.index(TIME)
        stats = [meta.row_group(g).column(col).statistics for g in range(meta.num_row_groups)]
        if all(s is not None and s.has_min_max for s in stats):
            return max(int(s.max) for s in stats)
        return int(_times(self._stream_table()).max())

    def _stream_table(self):
        if self._records is None:
            what = f"the records of {self.name!r}"
            self._records = _in_order(self._obj._read(what, self.stream_info["file"]))
            self._record_times = _times(self._records)
        return self._records

    def _records_until(self, t_ns: int) -> int:
        self._stream_table()
        return rows_until(self._records, t_ns, self._record_times)

    def _forget(self):
        self._records = self._record_times = None

    # --- reading ----------------------------------------------------------------------

    @counted(_map_read)
    def to_df(self, percpu: str = "sum", decode: dict | None = None):
        """The map's snapshot at the replay clock (the rows of the live to_df() then)."""
        self._obj._check_open()
        if self._snaps is None:
            kind = "ring buffer" if self.is_stream else "map"
            raise ReplayError(f"{self.name!r} is a {kind} with no snapshots in "
                              f"{self._obj.describe()}" +
                              (": read its records with .stream().to_df()" if self.is_stream
                               else ""))
        if percpu != "sum":
            raise ReplayError(f"{self.name}.to_df(percpu={percpu!r}): the recording holds "
                              f"the values as to_df() gave them (per-CPU values summed)")
        df = self._snaps.rows(self._obj._snapshot_now())
        return _decoded(df, decode)

    @counted(_map_read)
    def hist(self, kind: str | None = None, **options):
        """The recorded histogram at the replay clock: bpfnb.hist.Histogram (bars)."""
        from ..hist import Histogram
        self._obj._check_open()
        if self._hists is None:
            raise ReplayError(f"map {self.name!r} was not recorded as a histogram (its "
                              f"types do not make one): read it with .to_df()")
        if kind is not None or options:
            raise ReplayError(f"{self.name}.hist(kind=..., ...): a replay shows the "
                              f"histogram as recorded; its buckets cannot be laid out again")
        df = self._hists.rows(self._obj._snapshot_now())
        h = Histogram(df)
        h.title = self.name
        h.key_columns = tuple(c for c in df.columns if c not in _HIST_COLUMNS)
        h.log2 = _looks_log2(df)
        return h

    def stream(self, type: str | None = None, **options):
        """The recorded records of a ring or perf buffer, up to the replay clock."""
        self._obj._check_open()
        if not self.is_stream:
            raise ReplayError(f"map {self.name!r} is a {self.type}, not a ring buffer or "
                              f"perf event array: read it with .to_df()")
        recorded = self.stream_info.get("record_type")
        if type is not None and recorded and type != recorded:
            raise ReplayError(f"{self.name}.stream({type!r}): the records were recorded "
                              f"as {recorded}")
        unknown = set(options) - {"max_rows", "page_cnt", "decode"}
        if unknown:
            raise TypeError(f"stream() got unexpected options: {', '.join(sorted(unknown))}")
        return ReplayStream(self, options.get("decode"), options.get("max_rows"))

    @counted(_map_read)
    def to_text(self, limit: int | None = None) -> str:
        if self.is_histogram:
            return self.hist().to_text(limit)
        return self.to_df().to_string(max_rows=limit)

    def live(self, kind: str | None = None, *, interval: float = 1.0, **options):
        """A live dashboard of this map at the replay clock (animated with a speed)."""
        from .. import live
        from . import views
        return live.live(views.view_of(self, kind, **options), interval=interval)

    def __bool__(self):  # `if m:` is no read of the notebook's (see bpfnb.follow)
        with uncounted():
            return len(self) > 0

    @counted(_map_read)
    def __len__(self):
        if self.is_stream and self._snaps is None:
            return len(self.stream())
        return len(self.to_df())

    # --- stacks and lookups (replay/stacks.py, replay/lookups.py) ----------------------

    def recorded_frames(self, stack_id: int, pid: int | None = None, *,
                        offsets: bool = False, modules: bool = False) -> list | None:
        """A stack map's frames of ``stack_id`` as named live (None: not in the map);
        bpfnb.symbols.resolve_stacks reads a replayed stack map through it."""
        from .stacks import recorded_frames
        return recorded_frames(self, stack_id, pid, offsets=offsets, modules=modules)

    def recorded_folded(self, **options) -> str:
        from .stacks import recorded_folded
        return recorded_folded(self, **options)

    def folded(self, **options) -> str:
        """Folded stacks of a map counting stacks, from the recorded names."""
        from .. import flame
        return flame.folded_of(self, **options)

    def flame(self, **options):
        """A flame graph (matplotlib Figure) of a map counting stacks."""
        from .. import flame
        return flame.flame(self, **options)

    def __getitem__(self, key):
        from . import lookups
        return lookups.lookup(self, key)

    def get(self, key, default=None):
        from . import lookups
        return lookups.lookup(self, key, default)

    def lookup(self, key, default=None):
        return self.get(key, default)

    def __contains__(self, key):
        from . import lookups
        absent = object()
        return lookups.lookup(self, key, absent) is not absent

    def items(self) -> list:
        from . import lookups
        return lookups.items(self)

    def keys(self) -> list:
        return [k for k, _ in self.items()]

    def values(self) -> list:
        return [v for _, v in self.items()]

    def __iter__(self):
        return iter(self.keys())

    # --- writes -----------------------------------------------------------------------

    def _read_only(self, what):
        raise ReadOnlyError(f"{self.name}.{what}", self._obj)

    def __setitem__(self, key, value):
        self._read_only("__setitem__")

    def __delitem__(self, key):
        self._read_only("__delitem__")

    def update(self, *args, **kwargs):
        self._read_only("update()")

    def delete(self, *args, **kwargs):
        self._read_only("delete()")

    def clear(self):
        """Following reads, a no-op (the reads recorded after it show what it did)."""
        if self._obj._follower is None:
            self._read_only("clear()")

    def __setattr__(self, name, value):
        if name == "max_entries" and "max_entries" in self.__dict__:
            self._read_only("max_entries")
        object.__setattr__(self, name, value)

    def __repr__(self):
        return (f"<bpfnb ReplayMap {self.name!r} {self.type} key {self.key_type or '-'} "
                f"value {self.value_type or '-'}>")


class ReplayStream:
    """Recorded records up to the replay clock; ``to_df()``, ``tail()``, ``lost``,
    ``clear()`` (from now on), ``close()``, as a live EventStream."""

    def __init__(self, map_: ReplayMap, decode: dict | None = None,
                 max_rows: int | None = None):
        if max_rows is not None and max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, not {max_rows}")
        self.max_rows = max_rows
        self._map = map_
        self._obj = _Ref(map_._obj)
        self.map_name = map_.name
        self.type = map_.stream_info.get("record_type")
        self.decode = dict(decode or {})
        self._from = 0
        self.closed = False

    def _span(self) -> tuple[int, int]:
        """(first, end) rows shown: those the live stream held at the read answered
        now (following reads), else from the last clear(), the newest max_rows."""
        follower = self._map._obj._follower
        window = None if follower is None else follower.window(self.map_name)
        if window is not None:
            return window
        end = self._map._records_until(self._map._obj._clock_ns())
        first = self._from
        if self.max_rows is not None:
            first = max(first, end - self.max_rows)
        return first, max(first, end)

    def _rows(self):
        first, end = self._span()
        return self._map._stream_table().slice(first, end - first)

    @property
    def kernel_lost(self) -> int | None:
        return self._map.stream_info.get("lost")

    @property
    def dropped(self) -> int:
        """Rows the recording dropped, plus those pushed out here by ``max_rows``."""
        first, _ = self._span()
        return int(self._map.stream_info.get("dropped") or 0) + max(0, first - self._from)

    @property
    def lost(self) -> int | None:
        kernel = self.kernel_lost
        return None if kernel is None else kernel + self.dropped

    @property
    def running(self) -> bool:
        """True while the replay clock has records left to show."""
        return not self.closed and not self._map._obj.finished

    def __bool__(self):
        with uncounted():
            return len(self) > 0

    @counted(_stream_read)
    def __len__(self):
        return self._rows().num_rows

    @counted(_stream_read)
    def to_df(self, decode: dict | None = None):
        """Every record received by the replay clock, oldest first."""
        self._map._obj._check_open()
        df = _decoded(_plain(self._rows()), {**self.decode, **(decode or {})})
        df.attrs.update(lost=self.lost, dropped=self.dropped)
        return df

    @counted(_stream_read)
    def tail(self, n: int = 10, decode: dict | None = None):
        rows = self._rows()
        start = max(0, rows.num_rows - n)
        return _decoded(_plain(rows.slice(start)), {**self.decode, **(decode or {})})

    def clear(self):
        """Forget the records shown so far: to_df() shows those after the clock."""
        self._from = self._map._records_until(self._map._obj._clock_ns())

    def close(self):
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        with uncounted():  # how a stream prints is no read of its rows
            return f"<bpfnb ReplayStream {self.map_name!r}: {len(self)} records at the clock>"


class _Ref:
    """Called, gives the object: the weakref.ref shape EventStream._obj has."""

    def __init__(self, obj):
        self._obj = obj

    def __call__(self):
        return self._obj


class ReplayGlobals:
    """The recorded variables of one section (.bss, .data, .rodata), at the clock."""

    def __init__(self, obj, section: str):
        object.__setattr__(self, "_obj", obj)
        object.__setattr__(self, "_section", section)
        prefix = section + "."
        names = [c[len(prefix):] for c in obj._globals_columns() if c.startswith(prefix)]
        object.__setattr__(self, "_shown", names)

    def _row(self) -> int | None:
        table = self._obj._globals_table
        follower = self._obj._follower
        k = None if follower is None else follower.snapshot()
        if k is not None:  # the snapshot of the read answered now
            row = self._obj._globals_row_of().get(k)
            if row is not None:
                return row
        n = rows_until(table, self._obj._clock_ns())
        return n - 1 if n else None

    def __getattr__(self, name):
        if name not in self._shown:
            raise AttributeError(f"no variable {name!r} in .{self._section}; "
                                 f"there are: {', '.join(self._shown) or 'none'}")
        return self._value(name)

    @counted(_globals_read)
    def _value(self, name):
        self._obj._check_open()
        row = self._row()
        if row is None:
            raise ReplayError(f".{self._section}.{name}: the replay clock is before the "
                              f"first snapshot")
        column = self._obj._globals_table.column(f"{self._section}.{name}")
        return _scalar(column[row].as_py())

    def __setattr__(self, name, value):
        if self._obj.state == "opened" and self._section == "rodata":
            return  # configuring a --no-load cell before load(): recorded with its value
        raise ReadOnlyError(f".{self._section}.{name} = ...", self._obj)

    __getitem__ = __getattr__
    __setitem__ = __setattr__

    def __dir__(self):
        return list(self._shown)

    def __iter__(self):
        return iter(self._shown)

    def __len__(self):
        return len(self._shown)

    def __contains__(self, name):
        return name in self._shown

    @counted(_globals_read)
    def _asdict(self) -> dict:
        return {name: getattr(self, name) for name in self._shown}

    def _types(self) -> dict:
        types = (self._obj.manifest.get("globals") or {}).get("variables") or {}
        return {n: types.get(f"{self._section}.{n}", "") for n in self._shown}

    def __repr__(self):
        body = ", ".join(f"{k}={v!r}" for k, v in self._asdict().items())
        return f".{self._section}({body})"


class ReplayProgram:
    """A recorded program: its name, section, type and whether it was attached."""

    autoload = True
    links: tuple = ()   # nothing is attached in a replay

    def __init__(self, obj, info: dict):
        self._obj = obj
        self.name = info.get("name", "")
        self.section = info.get("section", "")
        self.type = info.get("type", "")
        self.attached = bool(info.get("attached"))

    @property
    def hook(self) -> str:
        return self.section

    def __getattr__(self, name):
        if name.startswith("attach"):
            if self._obj._follower is not None:  # following reads: see Replay
                return lambda *args, **kwargs: ()
            raise ReadOnlyError(f"{self.name}.{name}()", self._obj)
        raise AttributeError(f"a replayed program has no {name!r}")

    def detach(self):
        """Nothing is attached: a no-op, as for a live program that is not attached."""
        return self

    def __repr__(self):
        was = "attached" if self.attached else "not attached"
        return f"<bpfnb ReplayProgram {self.name!r} {self.section} ({was} when recorded)>"


def _looks_log2(df) -> bool:
    """Whether recorded buckets are log2 ([2^k, 2^(k+1)), slot 0 from 0): how they print."""
    lows, highs = df["low"].to_numpy(dtype=float), df["high"].to_numpy(dtype=float)
    finite = np.isfinite(highs) & np.isfinite(lows) & (lows > 0)
    return bool(np.all(highs[finite] == 2 * lows[finite]))


def _decoded(df, decode: dict | None):
    """``decode=`` on a replayed frame: bpfnb.decode's number decoders on its columns."""
    if not decode:
        return df
    from .. import decode as decoders
    asked = decoders.check(decode, df.columns)
    raws = {}
    for name, how in asked.items():
        if how in decoders.CHAR_DECODERS:
            raise ReplayError(f"decode={{{name!r}: {how!r}}}: the recording holds the "
                              f"column as text already")
        raw = df[name].to_numpy()
        df[name] = decoders._decode(name, raw, how)
        raws[name + decoders.RAW_SUFFIX] = raw
    for name, raw in raws.items():
        df[name] = raw
    return df
