"""The Parquet files of a recording (bpfnb/record.py): each written in row groups from a
bounded buffer, checking the free space before each write so a full disk stops the
recording with every file closed and readable."""

from __future__ import annotations

import errno
import time
from pathlib import Path

ROW_GROUP_ROWS = 65536
FLUSH_EVERY = 2.0      # seconds a buffer may wait before it is written
FOOTER_BYTES = 4096        # a file's footer, beyond its row groups' metadata
ROW_GROUP_META = 200       # footer bytes per row group and column
MIN_RATIO = 0.05           # of the file's bytes to the memory's, assumed at least


class DiskFull(OSError):
    """The recording's file system cannot take the next write."""


class Sink:
    """One Parquet file written in row groups from a bounded buffer of tables."""

    def __init__(self, path: Path):
        self.path = path
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

    def add(self, df, space, **constants):
        """Buffer the rows of ``df`` with ``constants`` as int64 columns (``_time``,
        ``_snapshot``: added in Arrow, not by copying the frame)."""
        import numpy as np
        import pyarrow as pa
        if self.empty is None:
            self.empty = df.iloc[:0].assign(**{k: np.int64(0) for k in constants})
        if len(df):
            if self.df_schema is None:
                table = pa.Table.from_pandas(df, preserve_index=False, nthreads=1)
                self.df_schema = _schema(table.schema)
                table = table.cast(self.df_schema)
            else:
                table = pa.Table.from_pandas(df, schema=self.df_schema,
                                             preserve_index=False, nthreads=1)
            for name, value in constants.items():
                table = table.append_column(name, pa.array(np.full(len(table), value,
                                                                   dtype=np.int64)))
            self.schema = self.schema or table.schema
            self.tables.append(table)
            self.buffered += len(df)
        if self.buffered >= ROW_GROUP_ROWS or (
                self.tables and time.monotonic() - self.since >= FLUSH_EVERY):
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
    it makes integer columns 2x slower to write) and keeps statistics only of `_time`
    and `_snapshot` (what replay selects by; the others cost 30% of the write)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    text = [f.name for f in schema if pa.types.is_string(f.type)
            or pa.types.is_large_string(f.type) or pa.types.is_dictionary(f.type)]
    stats = [name for name in ("_time", "_snapshot") if name in schema.names]
    return pq.ParquetWriter(path, schema, use_dictionary=text, write_statistics=stats)
