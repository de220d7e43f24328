"""The Parquet files of a recording (bpfnb/record/): each written in row groups from a
bounded buffer, checking the free space before each write so a full disk stops the
recording with every file closed and readable; the row groups by a background thread,
so the recorder's moves from the streams never wait for Parquet's encoding."""

from __future__ import annotations

import collections
import errno
import threading
import time
from pathlib import Path

ROW_GROUP_ROWS = 65536
FLUSH_EVERY = 2.0      # seconds a buffer may wait before it is written
FOOTER_BYTES = 4096        # a file's footer, beyond its row groups' metadata
ROW_GROUP_META = 200       # footer bytes per row group and column
MIN_RATIO = 0.05           # of the file's bytes to the memory's, assumed at least
WRITE_BACKLOG = 32 << 20  # bytes of row groups waiting for the background thread


class DiskFull(OSError):
    """The recording's file system cannot take the next write."""


class Sink:
    """One Parquet file written in row groups from a bounded buffer of tables."""

    def __init__(self, path: Path, background: "Background | None" = None):
        self.path = path
        self.background = background  # writes the row groups, else flush() does
        self.tables: list = []
        self.buffered = 0
        self.since = time.monotonic()
        self.writer = None
        self.schema = None
        self.df_schema = None  # of the frames, without the constant columns
        self.empty = None
        self.row_groups = 0
        self.written = 0  # rows
        self.ratio = 1.0  # bytes in the file per byte in memory, with a margin

    def add_columns(self, columns: dict, rows: int, space, **constants):
        """``add()`` of a frame's columns ({name: numpy array, Categorical, Series}, as
        bpfnb.frames.record_columns makes them): straight to Arrow once the first rows
        set the file's types, with no DataFrame in between (a stream's records: 2.5x
        faster). A column the first rows had not is left out; one missing is null."""
        import pyarrow as pa
        if self.df_schema is None or not rows:
            import pandas as pd
            return self.add(pd.DataFrame(columns, index=pd.RangeIndex(rows), copy=False),
                            space, **constants)
        try:
            arrays = [pa.nulls(rows, f.type) if f.name not in columns else
                      pa.array(columns[f.name], type=f.type, from_pandas=True)
                      for f in self.df_schema]
        except (pa.ArrowException, TypeError, ValueError):  # as from_pandas would
            import pandas as pd
            return self.add(pd.DataFrame(columns, index=pd.RangeIndex(rows), copy=False),
                            space, **constants)
        self._buffer(pa.Table.from_arrays(arrays, schema=self.df_schema), space, constants)

    def add(self, df, space, **constants):
        """Buffer the rows of ``df`` with ``constants`` as int64 columns (``_time``,
        ``_snapshot``: added in Arrow, not by copying the frame)."""
        import numpy as np
        import pyarrow as pa
        if self.empty is None:
            self.empty = df.iloc[:0].assign(**{k: np.int64(0) for k in constants})
        table = None
        if len(df):
            if self.df_schema is None:
                table = pa.Table.from_pandas(df, preserve_index=False, nthreads=1)
                self.df_schema = _schema(table.schema)
                table = table.cast(self.df_schema)
            else:
                table = pa.Table.from_pandas(df, schema=self.df_schema,
                                             preserve_index=False, nthreads=1)
        self._buffer(table, space, constants)

    def _buffer(self, table, space, constants: dict):
        import numpy as np
        import pyarrow as pa
        if table is not None:
            for name, value in constants.items():
                table = table.append_column(name, pa.array(np.full(len(table), value,
                                                                   dtype=np.int64)))
            self.schema = self.schema or table.schema
            self.tables.append(table)
            self.buffered += table.num_rows
        if self.buffered >= ROW_GROUP_ROWS or (
                self.tables and time.monotonic() - self.since >= FLUSH_EVERY):
            self.flush(space)

    def tick(self, space):
        """Write the buffer if it is FLUSH_EVERY s old (as an add() would)."""
        if self.tables and time.monotonic() - self.since >= FLUSH_EVERY:
            self.flush(space)

    def flush(self, space):
        """Write the buffer as row groups. ``space()`` says how many bytes may be
        written: a buffer that does not fit is cut to the rows that do (at the encoded
        size per row seen so far, twice over), the rest raises DiskFull."""
        import pyarrow as pa
        self.since = time.monotonic()
        if not self.tables:
            return
        table = pa.concat_tables(self.tables)
        self.tables, self.buffered = [], 0
        if self.background is not None and self.background.running:
            self.background.submit(self, table, space)
        else:
            self._write(table, space)

    def _write(self, table, space):
        while table.num_rows:
            part = table
            if space is not None:
                room = space() - ROW_GROUP_META * table.num_columns
                per_row = max(table.nbytes * self.ratio / table.num_rows, 1.0)
                rows = min(int(room / per_row), table.num_rows) if room > 0 else 0
                if rows < 1:
                    raise DiskFull(errno.ENOSPC,
                                   f"the file system holding {str(self.path)!r} is full "
                                   f"({max(room, 0) // 1024} KiB left, less the files' "
                                   f"footers): the recording stopped")
                part = table.slice(0, rows)
            if self.writer is None:
                self.writer = _writer(self.path, self.schema)
            before = self.path.stat().st_size
            self.writer.write_table(part, row_group_size=part.num_rows)
            grown = self.path.stat().st_size - before
            if part.nbytes:
                self.ratio = min(max(2 * grown / part.nbytes, MIN_RATIO), 1.0)
            self.row_groups += 1
            self.written += part.num_rows
            table = table.slice(part.num_rows)

    def footer_bytes(self) -> int:
        columns = len(self.schema) if self.schema is not None else 1
        return FOOTER_BYTES + self.row_groups * columns * ROW_GROUP_META

    def close(self, space):
        """Write what is buffered (``space`` None: drop it, the disk is full), then the
        footer; a sink that never had rows writes its empty frame."""
        try:
            if space is not None:
                self.flush(space)
        finally:
            self.tables = []
            self._close_writer()

    def _close_writer(self):
        import pyarrow as pa
        if self.writer is None and self.empty is not None:
            table = pa.Table.from_pandas(self.empty, preserve_index=False)
            self.schema = self.schema or _schema(table.schema)
            self.writer = _writer(self.path, self.schema)
        if self.writer is not None:
            writer, self.writer = self.writer, None
            writer.close()


def _schema(schema):
    """Columns that were all None in the first rows take str (bytes for `raw`)."""
    import pyarrow as pa
    for i, f in enumerate(schema):
        if pa.types.is_null(f.type):
            schema = schema.set(i, f.with_type(pa.binary() if f.name == "raw" else pa.string()))
    return schema


def _writer(path: Path, schema):
    """A Parquet writer that dictionary-encodes only text (comm, file names, enums:
    it makes integer columns 2x slower to write), delta-encodes integers (sequence
    numbers, times, pids, small counts: 1.6x faster to write than plain and snappy,
    and a fraction of the bytes; random values cost the same) and keeps statistics
    only of `_time` and `_snapshot` (what replay selects by; the others cost 30% of
    the write)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    text = [f.name for f in schema if pa.types.is_string(f.type)
            or pa.types.is_large_string(f.type) or pa.types.is_dictionary(f.type)]
    ints = {f.name: "DELTA_BINARY_PACKED" for f in schema if pa.types.is_integer(f.type)}
    stats = [name for name in ("_time", "_snapshot") if name in schema.names]
    return pq.ParquetWriter(path, schema, use_dictionary=text, write_statistics=stats,
                            column_encoding=ints or None)


class StreamColumns:
    """The columns of a recorded stream's records, for ``Sink.add_columns``.

    A column of ``to_df()`` that is a record field as it is (a number, not decoded) is
    copied field by field from each run into one array: no frame, no concatenation of
    the runs, and Arrow takes the array as it is. A stream with other columns (text,
    enums, arrays, decoded) or runs of records of another size goes through the
    stream's own columns (``stream.columns``)."""

    def __init__(self, stream):
        import numpy as np
        from ..frames import record_columns
        self.stream = stream
        self.fields = None  # [(column, offset, dtype)] when every column is a field
        dtype = stream.dtype
        if dtype is None:
            return
        sample = np.zeros(1, dtype)
        columns = record_columns(sample, stream.btf, stream.type_id, stream.decode)
        base = sample.ctypes.data
        fields = []
        for name, col in columns.items():
            if not (isinstance(col, np.ndarray) and col.ndim == 1
                    and np.shares_memory(col, sample) and col.dtype.kind in "biuf"):
                return
            fields.append((name, col.__array_interface__["data"][0] - base, col.dtype))
        self.fields = fields

    def columns(self, runs: list) -> tuple[dict, int]:
        """The columns of ``runs`` (as ``stream.take_runs()`` gives them), and rows."""
        import numpy as np
        if self.fields is None or any(not isinstance(run, np.ndarray) for run in runs):
            return self.stream.columns(runs)
        rows = sum(len(run) for run in runs)
        out = {}
        for name, offset, dtype in self.fields:
            column, at = np.empty(rows, dtype), 0
            for run in runs:
                column[at:at + len(run)] = np.ndarray(
                    len(run), dtype, buffer=run, offset=offset, strides=(run.strides[0],))
                at += len(run)
            out[name] = column
        return out, rows


class Background:
    """The thread writing sinks' row groups, in order: Parquet's encoding releases the
    GIL, so the recorder keeps moving records from the streams (every STREAM_POLL) and
    the streams keep reading their buffers meanwhile. (Not at a lower CPU priority: a
    descheduled thread holding the GIL would stall the stream threads, and the ring
    buffers overflow.) At most WRITE_BACKLOG bytes wait: beyond, ``submit()`` waits
    (and the streams' own bounds drop rows, counted in the manifest). ``error``: why a
    write failed (no more are written)."""

    def __init__(self, name: str):
        self.error: BaseException | None = None
        self._cond = threading.Condition()
        self._queue: collections.deque = collections.deque()
        self._bytes = 0
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return not self._closing and self.error is None

    @property
    def waiting(self) -> int:
        """Bytes of row groups not yet written."""
        return self._bytes

    def submit(self, sink: Sink, table, space):
        with self._cond:
            self._cond.wait_for(lambda: self._bytes < WRITE_BACKLOG or self.error)
            if self.error is not None:
                raise self.error
            self._queue.append((sink, table, space))
            self._bytes += table.nbytes
            self._cond.notify_all()

    def _run(self):
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._closing)
                if not self._queue:
                    return
                sink, table, space = self._queue[0]
            try:
                sink._write(table, space)
            except BaseException as e:
                with self._cond:
                    self.error = e
                    self._queue.clear()
                    self._bytes = 0
                    self._cond.notify_all()
                return
            with self._cond:
                self._queue.popleft()
                self._bytes -= table.nbytes
                self._cond.notify_all()

    def finish(self) -> BaseException | None:
        """Write what waits and end the thread (sinks then write themselves); the
        error of a write that failed, if one did."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()
        return self.error
