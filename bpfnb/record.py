"""Recording an Object: its event streams, map snapshots, globals and printk lines,
into a directory of Parquet files and a JSON manifest (bpfnb/replay.py reads it).

    rec = obj.record("run1", seconds=10, interval=1.0)   # in the background
    rec.stop()            # or the seconds limit, or the object's teardown
    rec                   # <Recording 'run1' complete: 10 snapshots, events 12345 rows>

One thread does the work. Every ~50 ms it moves what each stream (one per ring buffer
and perf event array, of the type the program writes, else raw bytes) received into a
buffer of Arrow tables, written as a row group when it holds ROW_GROUP_ROWS rows or is
FLUSH_EVERY s old: memory stays bounded however long it runs. Every ``interval`` s
(and once more at stop) it snapshots every key/value map, the histograms, and the
globals.

The directory (format version 1): manifest.json (state "recording", then "complete"
or "failed" with its error; what was recorded and where: source, cflags, kernel,
BTF checksum, libbpf version, programs, maps, streams with lost counts, start and stop
times); maps/<map>.parquet (the rows of map.to_df() at each snapshot, with `_snapshot`
and `_time`), hists/<map>.parquet (map.hist().df, the same way, for histograms),
streams/<map>.parquet (stream.to_df() rows with `_time`), globals.parquet (one row
per snapshot, even without globals: the snapshots' times; a column per variable,
"bss.total"), output.parquet (obj.output() at stop). `_time` is int64 ns since the
epoch: when the snapshot was taken, or when the recorder moved the record from its
stream (within STREAM_POLL s of its arrival).

A full disk stops the recording before it breaks a file: each write first checks the
free space against the write (at twice the bytes per row the file took so far) and
the footers still to write, writes the rows that fit, and when no more fit stops ("failed", with the error in the manifest and
``rec.error``) with every Parquet file closed and readable. The manifest is rewritten
at stop into the space it reserved when the recording began.
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import json
import os
import shutil
import socket
import threading
import time
import warnings
from pathlib import Path

from .libbpf.map import PERCPU_TYPES, PERF_EVENT_ARRAY, RINGBUF

FORMAT, VERSION = "bpfnb-recording", 1
ROW_GROUP_ROWS = 65536
FLUSH_EVERY = 2.0      # seconds a buffer may wait before it is written
STREAM_POLL = 0.05     # seconds between moves from the streams (the `_time` resolution)
STREAM_MAX_ROWS = 1 << 20  # rows a stream holds between two moves
MANIFEST_RESERVE = 16384   # bytes kept in manifest.json for its rewrite at stop
FOOTER_BYTES = 4096        # a file's footer, beyond its row groups' metadata
ROW_GROUP_META = 200       # footer bytes per row group and column
MIN_RATIO = 0.05           # of the file's bytes to the memory's, assumed at least
VMLINUX_BTF = "/sys/kernel/btf/vmlinux"


class DiskFull(OSError):
    """The recording's file system cannot take the next write."""


class Recording:
    """A recording running in the background (see the module's docstring).

    A ring buffer has one reader: a stream the notebook opens on it while it is
    recorded shares its records with the recording (each record goes to one of them).
    ``types`` ({map: "struct x"}) names the record type of a stream whose type the
    object does not tell (else its records stay raw bytes) or that receives several.
    ``path``, ``running``, ``snapshots``, ``rows`` (per stream), ``error`` (None, or
    why it stopped early), ``stop()``."""

    def __init__(self, obj, path, *, seconds: float | None = None, interval: float = 1.0,
                 overwrite: bool = False, types: dict | None = None):
        if not interval > 0:
            raise ValueError(f"interval must be a positive number of seconds, not {interval!r}")
        if seconds is not None and not seconds > 0:
            raise ValueError(f"seconds must be positive (or None: until stop()), not "
                             f"{seconds!r}")
        if obj.state != "loaded":
            raise ValueError(f"{obj.name!r} is {obj.state}: load it before recording")
        self.path = Path(path)
        self.interval, self.seconds = float(interval), seconds
        self.snapshots = 0
        self.rows: dict[str, int] = {}
        self.error: str | None = None
        self._obj = obj
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        busy = [r for r in _recordings.get(id(obj), []) if r.running]
        if busy:
            raise ValueError(f"{obj.name!r} is already being recorded to "
                             f"{str(busy[0].path)!r}: a ring buffer has one reader, so two "
                             f"recordings would split its records; stop that one first")
        self._types = dict(types or {})
        unknown = set(self._types) - {m.name for m in obj.maps
                                      if m.type in (RINGBUF, PERF_EVENT_ARRAY)}
        if unknown:
            raise ValueError(f"types=: {', '.join(sorted(unknown))} is no ring buffer or "
                             f"perf event array of {obj.name!r}")
        created = not self.path.exists()
        self._prepare(overwrite)
        self._started = _now_iso()
        self._sinks: dict[str, _Sink] = {}
        self._streams: dict = {}
        self._skipped: dict[str, str] = {}
        try:
            self._open_streams()
            self._manifest = self._describe()
            _write_manifest(self.path, self._manifest, reserve=MANIFEST_RESERVE)
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name=f"bpfnb-record-{obj.name}")
            _recordings.setdefault(id(obj), []).append(self)
            self._thread.start()
        except BaseException:
            self._close_streams()
            if created:  # nothing was recorded: leave no directory behind
                shutil.rmtree(self.path, ignore_errors=True)
            raise

    # --- start ---------------------------------------------------------------

    def _prepare(self, overwrite: bool):
        p = self.path
        if p.exists() and not p.is_dir():
            raise FileExistsError(f"record: {str(p)!r} is a file, not a recording directory")
        if p.is_dir() and any(p.iterdir()):
            if not overwrite:
                raise FileExistsError(
                    f"record: {str(p)!r} already holds "
                    f"{'a recording' if (p / 'manifest.json').exists() else 'files'}: "
                    f"pass overwrite=True to replace it, or choose another path")
            if not (p / "manifest.json").exists():
                raise FileExistsError(f"record: {str(p)!r} holds files that are not a "
                                      f"recording: overwrite=True only replaces recordings")
            shutil.rmtree(p)
        try:
            for sub in ("", "maps", "hists", "streams"):
                (p / sub).mkdir(parents=True, exist_ok=True)
            probe = p / ".bpfnb-write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise PermissionError(
                e.errno, f"record: cannot write into {str(p)!r} ({e.strerror or e}): "
                         f"choose a directory you can write to") from None

    def _open_streams(self):
        for m in self._obj.maps:
            if m.type not in (RINGBUF, PERF_EVENT_ARRAY):
                continue
            try:
                s = m.stream(self._types.get(m.name), max_rows=STREAM_MAX_ROWS)
            except ValueError as e:  # several record types: the user must name one
                self._skipped[m.name] = str(e)
                warnings.warn(f"record: stream {m.name!r} is not recorded: {e}",
                              RuntimeWarning, stacklevel=4)
                continue
            self._streams[m.name] = s
            self.rows[m.name] = 0
            self._sinks[f"streams/{m.name}"] = _Sink(self.path / "streams" / f"{m.name}.parquet")

    def _describe(self) -> dict:
        from . import frames, hist
        obj = self._obj
        maps = {}
        for m in obj.maps:
            if not frames.is_tabular(m):
                continue
            is_hist = hist.is_histogram(m)
            maps[m.name] = {"type": m.type_name, "key_type": m.key_type,
                            "value_type": m.value_type, "max_entries": m.max_entries,
                            "percpu": m.type in PERCPU_TYPES, "histogram": is_hist,
                            "file": f"maps/{m.name}.parquet",
                            "hist_file": f"hists/{m.name}.parquet" if is_hist else None}
            self._sinks[f"maps/{m.name}"] = _Sink(self.path / "maps" / f"{m.name}.parquet")
            if is_hist:
                self._sinks[f"hists/{m.name}"] = _Sink(self.path / "hists" / f"{m.name}.parquet")
        self._sinks["globals"] = _Sink(self.path / "globals.parquet")
        variables = {f"{section}.{var}": t for section in ("bss", "data", "rodata")
                     if (g := obj.globals.get(section)) is not None
                     for var, t in g._types().items()}
        return {
            "format": FORMAT, "version": VERSION, "state": "recording", "error": None,
            "name": obj.name, "source": getattr(obj, "source", None),
            "source_path": getattr(obj, "source_path", None),
            "cflags": list(getattr(obj, "cflags", ())),
            "kernel_release": os.uname().release, "machine": os.uname().machine,
            "hostname": socket.gethostname(), "btf_sha256": _btf_sha256(),
            "libbpf_version": _libbpf_version(), "bpfnb_version": _bpfnb_version(),
            "started": self._started, "stopped": None, "interval": self.interval,
            "snapshots": 0,
            "programs": [{"name": p.name, "section": p.section, "type": p.type_name,
                          "attached": bool(p.links)} for p in obj.progs],
            "maps": maps,
            "streams": {name: {"file": f"streams/{name}.parquet", "record_type": s.type,
                               "rows": 0, "lost": None, "dropped": 0}
                        for name, s in self._streams.items()},
            "skipped_streams": dict(self._skipped),
            "globals": {"file": "globals.parquet", "variables": variables},
            "output": None,
        }

    # --- the thread ----------------------------------------------------------

    def _run(self):
        start = time.monotonic()
        deadline = None if self.seconds is None else start + self.seconds
        next_snapshot = start
        try:
            while not self._stopping.is_set():
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                if self._obj.state != "loaded":  # destroyed without release()
                    raise RuntimeError(f"{self._obj.name!r} was destroyed while recording")
                self._move_streams()
                if now >= next_snapshot:
                    self._snapshot()
                    next_snapshot = max(next_snapshot + self.interval, now)
                waits = [STREAM_POLL, next_snapshot - time.monotonic()]
                if deadline is not None:
                    waits.append(deadline - time.monotonic())
                self._stopping.wait(max(min(waits), 0))
            self._move_streams()
            self._snapshot()  # the last snapshot: at stop
            self._finish("complete")
        except Exception as e:
            self.error = _error_text(e, self.path)
            warnings.warn(f"recording {str(self.path)!r} stopped: {self.error}",
                          RuntimeWarning)
            self._finish("failed")
        finally:
            mine = _recordings.get(id(self._obj), [])
            if self in mine:
                mine.remove(self)
            self._obj = None  # the recording no longer keeps the object alive

    def _move_streams(self):
        t = time.time_ns()
        for name, s in self._streams.items():
            df = s.take()
            if len(df):
                self.rows[name] += len(df)
            self._sinks[f"streams/{name}"].add(df, self._space, _time=t)

    def _snapshot(self):
        import pandas as pd
        from . import frames, hist
        obj, n, t = self._obj, self.snapshots, time.time_ns()
        for m in obj.maps:
            if not frames.is_tabular(m):
                continue
            df = m.to_df()
            self._sinks[f"maps/{m.name}"].add(df, self._space, _snapshot=n, _time=t)
            if hist.is_histogram(m):
                h = m.hist().df
                self._sinks[f"hists/{m.name}"].add(h, self._space, _snapshot=n, _time=t)
        row = {"_snapshot": n, "_time": t}
        for section in ("bss", "data", "rodata"):
            g = obj.globals.get(section)
            if g is not None:
                row.update({f"{section}.{var}": _scalar(v) for var, v in g._asdict().items()})
        self._sinks["globals"].add(pd.DataFrame([row]), self._space)
        self.snapshots = n + 1

    def _space(self) -> int:
        """Bytes the next write may take: the free space less every footer to come."""
        footers = sum(s.footer_bytes() for s in self._sinks.values())
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize - footers - FOOTER_BYTES

    def _finish(self, state: str):
        self._close_streams()
        m = self._manifest
        for sink in self._sinks.values():
            try:
                sink.close(self._space if state == "complete" else None)
            except Exception as e:
                if state == "complete":
                    warnings.warn(f"recording {str(self.path)!r} stopped: "
                                  f"{_error_text(e, self.path)}", RuntimeWarning)
                state = "failed"
                self.error = self.error or _error_text(e, self.path)
        obj = self._obj
        if obj is not None and obj.state == "loaded":
            try:
                self._record_output(m, state)
            except Exception as e:
                state, self.error = "failed", self.error or _error_text(e, self.path)
        for name, s in self._streams.items():
            self.rows[name] = self._sinks[f"streams/{name}"].written  # what is in the file
            try:
                lost = s.lost
            except Exception:  # the counter's map went with its object: unknown, not 0
                lost = None
            m["streams"][name].update(rows=self.rows[name], lost=lost, dropped=s.dropped)
        m.update(state=state, error=self.error, stopped=_now_iso(), snapshots=self.snapshots)
        try:
            _write_manifest(self.path, m)
        except OSError as e:
            self.error = self.error or _error_text(e, self.path)
            warnings.warn(f"recording {str(self.path)!r}: cannot write its manifest: {e}",
                          RuntimeWarning)

    def _record_output(self, m: dict, state: str):
        """obj.output()'s lines (bpfnb.output keeps the last MAX_LINES), when the
        object's printk lines can be read at all."""
        from . import output
        obj = self._obj
        out = getattr(obj, "_output", None)
        if out is None or out.route in ("none", "unavailable") or state != "complete":
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its "older lines were dropped": in the manifest
            df = output.frame(obj)
        import pandas as pd
        times = df["time"]
        _time = (times.astype("int64") if pd.api.types.is_datetime64_any_dtype(times)
                 else pd.Series(time.time_ns(), index=df.index))
        sink = _Sink(self.path / "output.parquet")
        sink.add(df.assign(_time=_time), self._space)
        sink.close(self._space)
        m["output"] = {"file": "output.parquet", "rows": len(df),
                       "dropped": int(df.attrs.get("dropped", 0))}

    def _close_streams(self):
        for s in self._streams.values():
            s.close()

    # --- control --------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> "Recording":
        """Take the last snapshot, close the files, mark the manifest complete."""
        self._stopping.set()
        if threading.current_thread() is not self._thread:
            self._thread.join()
        return self

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for a ``seconds`` recording to end; True when it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def __repr__(self):
        state = ("recording" if self.running else
                 "failed" if self.error else "complete")
        streams = ", ".join(f"{k} {v} rows" for k, v in self.rows.items())
        text = (f"<Recording {str(self.path)!r} {state}: {self.snapshots} snapshots of "
                f"{len(self._manifest['maps'])} maps"
                + (f", streams: {streams}" if streams else "") + ">")
        return text if not self.error else text[:-1] + f"; error: {self.error}>"


class _Sink:
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


def _scalar(value):
    if isinstance(value, (bool, int, float, str)):
        return value
    try:
        import numpy as np
        if isinstance(value, np.generic) and value.shape == ():
            return value.item()
    except ImportError:
        pass
    return str(value)


def _write_manifest(path: Path, manifest: dict, reserve: int = 0):
    """Into the bytes manifest.json already has when it fits (JSON allows trailing
    blanks): a rewrite on a full disk needs no new block; else a new file."""
    text = json.dumps(manifest, indent=1, default=str).encode()
    target = path / "manifest.json"
    try:
        old = target.stat().st_size
    except FileNotFoundError:
        old = 0
    if old and len(text) <= old:
        fd = os.open(target, os.O_WRONLY)
        try:
            os.write(fd, text + b" " * (old - len(text)))
            os.fsync(fd)
        finally:
            os.close(fd)
        return
    tmp = path / ".manifest.json.tmp"
    tmp.write_bytes(text + b"\n" + b" " * reserve)
    os.replace(tmp, target)


def _error_text(e: BaseException, path: Path) -> str:
    if isinstance(e, DiskFull):
        return e.strerror
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return f"the file system of {str(path)!r} is full: {e}"
    return f"{type(e).__name__}: {e}"


def _now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


_btf_digest: list = []


def _btf_sha256() -> str | None:
    """Of the running kernel's BTF (read once: it changes only with the kernel)."""
    if not _btf_digest:
        try:
            with open(VMLINUX_BTF, "rb") as f:
                _btf_digest.append(hashlib.sha256(f.read()).hexdigest())
        except OSError:
            _btf_digest.append(None)
    return _btf_digest[0]


def _libbpf_version() -> str:
    from .libbpf._lib import lib
    return (lib.libbpf_version_string() or b"").decode().lstrip("v")


def _bpfnb_version() -> str | None:
    from importlib import metadata
    try:
        return metadata.version("bpfnb")
    except metadata.PackageNotFoundError:
        return None


# Recordings by object, for release() at the object's teardown.
_recordings: dict[int, list] = {}


def record(obj, path, *, seconds=None, interval=1.0, overwrite=False,
           types=None) -> Recording:
    """``obj.record(...)``: see :class:`Recording`; also ``obj.recording`` after."""
    rec = Recording(obj, path, seconds=seconds, interval=interval, overwrite=overwrite,
                    types=types)
    obj.recording = rec
    return rec


def release(obj):
    """The object is being destroyed: end its recordings (last snapshot first)."""
    for rec in _recordings.pop(id(obj), []):
        rec.stop()
