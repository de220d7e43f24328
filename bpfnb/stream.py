"""Events from ring buffers and perf buffers, collected in the background.

    s = obj.maps.events.stream()          # the type the program writes (recordtypes.py)
    s = obj.maps.events.stream("struct event", max_rows=100_000)
    s = obj.maps.events.stream(decode={"daddr": "ipv4"})   # see bpfnb/decode.py
    ... the program runs ...
    s.to_df(); s.tail(10); len(s); s.lost
    s.close()                              # or `with ... as s:`

A thread waits on the buffer with epoll and moves records, decoded in numpy batches,
into a bounded buffer (the oldest rows go first, counted in ``dropped``). Streams of one
map with one record type share that thread and its reader, each with a buffer of its
own: a ring buffer has one consumer position, so two readers would split its records
(and a perf event array holds one reader's fds), while shared, every stream receives
every record from its start (a recording and the notebook's own stream, for example):
bpfnb/collector.py. It stops on ``close()``, when the stream is garbage collected,
right before the registry tears its Object down (re-run of its cell, ``%bpf stop``,
exit) and within POLL_INTERVAL of any other destruction, in each case after
collecting what was left in the buffer; the rows stay readable. It holds its own fd
and mappings, so the Object's teardown never waits for it nor pulls memory from under
it.
``to_df()`` and ``tail()`` first have the thread read the buffer once more, so they
hold every record committed before the call.

Lost records (bpfnb/lost.py): objects built by bpfnb count their failed writes per
map; a perf buffer's events count the samples they dropped, read when ``lost`` is
asked; a ring buffer of any other object has ``lost`` None, with ``lost_reason``.
"""

from __future__ import annotations

import time
import weakref

import numpy as np

from .collector import _Collector, _joinable, _share
from .follow import counted, uncounted
from .libbpf import BPFError
from .libbpf.map import PERF_EVENT_ARRAY, RINGBUF
from .libbpf.ringbuf import PerfBuffer, RingBuffer
from .lost import LostCounter
from .registry import registry

DEFAULT_MAX_ROWS = 1_000_000


def _stream_read(s):
    return s._obj(), f"streams/{s.map_name}"


class EventStream:
    """Records of a ring buffer or perf event array map, collected in the background.

    ``lost`` = ``kernel_lost`` (records that never reached the buffer) + ``dropped``
    (rows pushed out of our buffer by ``max_rows``). ``kernel_lost`` counts, per map,
    the failed writes of an object built by bpfnb (each call site counts towards the
    map it names; a site writing through a pointer variable counts towards every map
    it could be), else a perf buffer's own count of the samples it dropped; it is None
    for a ring buffer of another object (``lost_reason`` says why). It counts from the
    stream's start, or from the object's load for the first stream of a ring buffer
    never read before (that stream also receives the records written before it).
    """

    def __init__(self, map, type: str | None = None, *, max_rows: int = DEFAULT_MAX_ROWS,
                 page_cnt: int = 64, decode: dict | None = None):
        if map.type not in (RINGBUF, PERF_EVENT_ARRAY):
            raise TypeError(f"map {map.name!r} is a {map.type_name}, not a ring buffer or "
                            f"perf event array: read it with .to_df()")
        if max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, not {max_rows}")
        obj = map.object
        self.map_name = map.name
        from .recordtypes import record_type  # DWARF is read only for streams
        self.btf, self.type_id = record_type(obj, map, type)
        self.dtype = self.btf.dtype(self.type_id) if self.type_id is not None else None
        self.type = self.btf.c_name(self.type_id) if self.type_id is not None else None
        self.max_rows = max_rows
        self.decode = dict(decode or {})
        if self.decode:  # a wrong column or decoder fails now, not at the first to_df()
            if self.type_id is None:
                raise ValueError(f"decode=: the records of {map.name!r} have no type to "
                                 f"decode: name it, e.g. .stream('struct event', decode=...)")
            self._frame([], self.decode)
        self._obj = weakref.ref(obj)
        self._closed = False
        collector = _joinable(obj, map, self.dtype)
        if collector is not None:  # another stream reads this map: share its reader
            self._perf = collector.reader if map.type == PERF_EVENT_ARRAY else None
            self._counter = LostCounter(obj, map, self._perf)
            self.lost_reason = self._counter.reason
            self._lost_base = self._kernel_counter()
            self._collector, self._buffer = collector, collector.join(max_rows)
        else:
            if map.type == RINGBUF:
                reader = RingBuffer(map.fd, map.max_entries, self.dtype)
            else:
                reader = PerfBuffer(map.fd, self.dtype, page_cnt)
            self._perf = reader if map.type == PERF_EVENT_ARRAY else None
            try:
                self._counter = LostCounter(obj, map, self._perf)
                self.lost_reason = self._counter.reason
                fresh = map.type == RINGBUF and reader.consumed == 0
                self._lost_base = 0 if fresh else self._kernel_counter()
                self._collector = _Collector(reader, self._obj, f"bpfnb-stream-{map.name}")
                self._buffer = self._collector.join(max_rows)
            except BaseException:
                reader.close()
                raise
            _share(obj, map, self.dtype, self._collector)
            self._collector.start()
        cancel = _close_on_teardown(self, obj)
        # Stops the thread when the stream is dropped without close().
        self._finalizer = weakref.finalize(self, _stop, self._collector, self._buffer, cancel)

    # --- counters -----------------------------------------------------------

    def _kernel_counter(self) -> int | None:
        return self._counter.read()

    @property
    def kernel_lost(self) -> int | None:
        """Records that never reached the buffer since the stream opened (or was
        cleared); None when nothing counts them (see ``lost_reason``)."""
        now = self._kernel_counter()
        return None if now is None else now - self._lost_base

    @property
    def dropped(self) -> int:
        """Rows pushed out of the buffer by ``max_rows``."""
        return self._buffer.dropped

    @property
    def lost(self) -> int | None:
        """``kernel_lost`` + ``dropped``; None when the kernel side is not counted."""
        kernel = self.kernel_lost
        return None if kernel is None else kernel + self.dropped

    @property
    def running(self) -> bool:
        return not self._closed and self._collector.thread.is_alive()

    @counted(_stream_read)
    def __len__(self):
        return self._buffer.rows

    def __bool__(self):  # `if s:` is no read of the notebook's (see bpfnb.follow)
        return self._buffer.rows > 0

    # --- data ---------------------------------------------------------------

    def _check(self):
        if self._collector.error is not None:
            raise BPFError(f"collecting from {self.map_name!r} stopped: "
                           f"{self._collector.error}") from self._collector.error

    @counted(_stream_read)
    def to_df(self, decode: dict | None = None):
        """Every row held, oldest first, as a DataFrame (struct fields as columns).

        ``decode`` ({column: decoder}) adds to the stream's own ``decode=``."""
        self._check()
        self._flush()
        df = self._frame(self._buffer.snapshot(), decode)
        lost = self.lost
        df.attrs.update(lost=lost, dropped=self.dropped)
        if lost is None:
            df.attrs["lost_reason"] = self.lost_reason
        return df

    def export(self, path, format: str | None = None):
        """The rows held to .parquet, .arrow/.feather or .csv (see bpfnb.export)."""
        from . import export
        return export.export(self, path, format)

    @counted(_stream_read)
    def tail(self, n: int = 10, decode: dict | None = None):
        """The newest ``n`` rows as a DataFrame."""
        self._check()
        self._flush()
        return self._frame(self._buffer.snapshot(n), decode)

    def take(self):
        """The rows received since the last ``take()`` (or the start) as a DataFrame,
        then forgotten: for consumers moving records elsewhere in bounded memory
        (bpfnb/record/). ``lost`` keeps counting from the stream's start."""
        self._check()
        self._flush()
        return self._frame(self._buffer.take())

    def take_runs(self) -> list:
        """Like ``take()``, as the runs held: arrays of records (``dtype``), or lists
        of the bytes of records of another size; ``columns(runs)`` makes the frame's
        columns of them. For consumers building other tables (bpfnb/record/)."""
        self._check()
        self._flush()
        return self._buffer.take()

    def columns(self, runs: list) -> tuple[dict, int]:
        """The columns of the frame of ``runs`` ({name: array}), and their length."""
        return self._columns(runs)

    def _flush(self):
        if not self._closed:  # a closed stream of a shared reader receives no more
            self._collector.flush()

    def clear(self):
        """Forget the rows held and start the loss counters over."""
        self._buffer.clear()
        self._lost_base = self._kernel_counter()

    def _frame(self, runs: list, decode: dict | None = None):
        import pandas as pd
        columns, n = self._columns(runs, decode)
        return pd.DataFrame(columns, index=pd.RangeIndex(n), copy=False)

    def _columns(self, runs: list, decode: dict | None = None) -> tuple[dict, int]:
        import pandas as pd
        from . import frames
        if self.type_id is None:
            if decode:
                raise ValueError(f"decode=: the records of {self.map_name!r} have no type "
                                 f"to decode (they stay raw bytes)")
            raw = [r for run in runs for r in run]
            return {"raw": pd.Series(raw, dtype=object)}, len(raw)
        records, raw = _typed_records(runs, self.dtype)
        columns = frames.record_columns(records, self.btf, self.type_id,
                                        {**self.decode, **(decode or {})})
        if raw is not None:
            columns["raw"] = pd.Series(raw, dtype=object)
        return columns, len(records)

    # --- lifetime -----------------------------------------------------------

    def close(self):
        """Stop the thread (collecting what is already in the buffer), free the buffer."""
        self._kernel_counter()  # its last value, while the object may still be there
        self._finalizer()
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        with uncounted():  # how a stream prints is no read of its rows
            return self._text()

    def _text(self):
        state = "running" if self.running else "stopped"
        what = self.type or "raw bytes"
        lost = self.lost
        lost_text = (f"{lost} lost" if lost is not None
                     else f"lost: unknown ({self.lost_reason})")
        return (f"<EventStream {self.map_name!r} of {what}, {state}: {len(self)} rows, "
                f"{lost_text}>")


def _close_on_teardown(stream, obj):
    """Close ``stream`` right before the registry tears ``obj`` down (if it owns it),
    while its ring buffer still exists; the cancel function, or None."""
    if not registry.owns(obj):
        return None
    ref = weakref.ref(stream)   # the registry must not keep a dropped stream alive

    def close(_obj):
        s = ref()
        if s is not None:
            s.close()
    try:
        return registry.on_teardown(obj, close)
    except ValueError:   # torn down meanwhile: the thread notices by itself
        return None


def _stop(collector, buffer, cancel):
    """A stream ends: its buffer leaves the reader, which stops with its last buffer
    (after what is in the ring); a shared one first reads what was committed so far."""
    collector.leave(buffer)
    if cancel is not None:
        cancel()


def _typed_records(runs: list, dtype: np.dtype):
    """A new structured array of the runs' records (the DataFrame's own memory); plus
    a `raw` list when some records had another size.

    Records of another size are cut or zero-padded to the struct, and keep their
    bytes in `raw` (None in the rows that had the struct's size).
    """
    # Concatenated as opaque bytes: numpy copies a structured dtype field by field.
    size = dtype.itemsize
    opaque = np.dtype(f"V{size}")
    odd_sizes = any(isinstance(run, list) for run in runs)
    parts, raw = [np.empty(0, opaque)], []
    for run in runs:
        if isinstance(run, np.ndarray):
            parts.append(run.view(opaque))
            raw.extend([None] * len(run) if odd_sizes else ())
        else:
            fitted = b"".join(r[:size].ljust(size, b"\0") for r in run)
            parts.append(np.frombuffer(fitted, dtype=opaque))
            raw.extend(run)
    return np.concatenate(parts).view(dtype), (raw if odd_sizes else None)


# --- timestamps ---------------------------------------------------------------

_CLOCKS = {"monotonic": time.CLOCK_MONOTONIC, "boottime": time.CLOCK_BOOTTIME}
_offsets: dict[str, int] = {}


def clock_offset(clock: str = "monotonic") -> int:
    """Nanoseconds to add to a ``clock`` reading to get UNIX time (measured once).

    Of several readings of the clock taken around one of the wall clock, the pair
    closest together brackets it best; its midpoint is the clock's value at that
    instant. Later wall clock steps (NTP, date) are not followed.
    """
    if clock not in _CLOCKS:
        raise ValueError(f"clock must be one of {', '.join(_CLOCKS)}, not {clock!r}")
    if clock not in _offsets:
        clk = _CLOCKS[clock]
        best = None
        for _ in range(50):
            before = time.clock_gettime_ns(clk)
            wall = time.time_ns()
            after = time.clock_gettime_ns(clk)
            if best is None or after - before < best[0]:
                best = (after - before, wall - (before + after) // 2)
        _offsets[clock] = best[1]
    return _offsets[clock]


def to_datetime(values, clock: str = "monotonic", tz: str | None = None):
    """bpf_ktime_get_ns() (``clock="monotonic"``) or bpf_ktime_get_boot_ns()
    (``"boottime"``) readings -> datetimes.

    An int gives a pandas Timestamp, a Series a Series (same index), anything else a
    DatetimeIndex. Naive UTC unless ``tz`` names a time zone (e.g. "Europe/Paris").
    """
    import pandas as pd
    offset = clock_offset(clock)
    if isinstance(values, (int, np.integer)):
        out = pd.Timestamp(int(values) + offset, unit="ns")
        return out.tz_localize("UTC").tz_convert(tz) if tz else out
    if isinstance(values, pd.Series):
        ns = values.to_numpy(dtype=np.int64) + offset
        out = pd.Series(pd.to_datetime(ns, unit="ns"), index=values.index, name=values.name)
        return out.dt.tz_localize("UTC").dt.tz_convert(tz) if tz else out
    out = pd.to_datetime(np.asarray(values, dtype=np.int64) + offset, unit="ns")
    return out.tz_localize("UTC").tz_convert(tz) if tz else out
