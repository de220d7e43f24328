"""Recording an Object: its event streams, map snapshots, globals and printk lines,
into a directory of Parquet files and a JSON manifest (bpfnb/replay/ reads it).

    rec = obj.record("run1", seconds=10, interval=1.0)   # in the background
    rec.stop()            # or the seconds limit, or the object's teardown
    rec                   # <Recording 'run1' complete: 10 snapshots, events 12345 rows>
    obj.record("lab", reads=True)   # also a snapshot at each read of the notebook's

With ``reads=True`` each read the recording's thread makes of the object (bpfnb.follow:
a global's value, a map's to_df()/hist(), a stream's to_df()...) is counted, and taken as
a snapshot of every map and global whose read part is exactly what the read returned
(a stream's read keeps which recorded rows it held): reads.parquet lists them, in
order, for bpfnb.replay(path, follow="reads") to answer the same reads the same way.

One thread does the work. Every ~50 ms it moves what each stream (one per ring buffer
and perf event array, of the type the program writes, else raw bytes) received into
its spool (bpfnb/record/streams.py: the runs as they came, past SPOOL_MEMORY a byte
copy into streams/.<map>.spool), and turns spooled records into Arrow tables (numeric
records straight from their bytes, field by field: files.StreamColumns) only
when the streams are quiet, a spool grows large, or at the stop: a flood costs the
stream's thread and the producer next to no CPU. Tables go as row groups to a writer
thread when ROW_GROUP_ROWS rows or FLUSH_EVERY s old. Memory stays bounded however
long it runs (STREAM_MAX_BYTES of records per stream between two moves, SPOOL_MEMORY
held, files.WRITE_BACKLOG of row groups waiting; rows past them are dropped,
counted as the stream's ``dropped``). Every ``interval`` s (and once more at stop)
it snapshots every key/value map, the histograms, and the globals.

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
the footers still to write, writes the rows that fit, and when no more fit stops
("failed", with the error in the manifest and ``rec.error``) with every Parquet file
closed and readable. The manifest is rewritten
at stop into the space it reserved when the recording began.
"""

from __future__ import annotations

import errno
import os
import queue
import shutil
import socket
import threading
import time
import warnings
from pathlib import Path

from .. import follow
from ..libbpf.map import PERCPU_TYPES, PERF_EVENT_ARRAY, RINGBUF
from . import manifest
from .files import FOOTER_BYTES, Background, DiskFull, Sink
from .streams import Streams

FORMAT, VERSION = "bpfnb-recording", 1
STREAM_POLL = 0.05     # seconds between moves from the streams (the `_time` resolution)
STREAM_MAX_ROWS = 1 << 20  # rows a stream holds between two moves, at least
STREAM_MAX_BYTES = 128 << 20  # ... and records of up to these bytes
MANIFEST_RESERVE = 16384   # bytes kept in manifest.json for its rewrite at stop


class Recording:
    """A recording running in the background (see the module's docstring).

    A ring buffer has one reader: a stream the notebook opens on it while it is
    recorded shares its records with the recording (each record goes to one of them).
    ``types`` ({map: "struct x"}) names the record type of a stream whose type the
    object does not tell (else its records stay raw bytes) or that receives several.
    ``reads=True`` counts and snapshots the reads this thread makes (module docstring).
    ``path``, ``running``, ``snapshots``, ``rows`` (per stream), ``reads`` (counted),
    ``error`` (None, or why it stopped early), ``stop()``."""

    def __init__(self, obj, path, *, seconds: float | None = None, interval: float = 1.0,
                 overwrite: bool = False, types: dict | None = None, reads: bool = False):
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
        self.error: str | None = None
        self._obj = obj
        self._stopping = threading.Event()
        self._wake = threading.Event()  # a read waits in the queue, or stop()
        self._reports = None  # stop(progress=...): the conversion's progress, for its thread
        # Held to number and time a read, and to time a snapshot: snapshots stay in
        # the order of their times.
        self._lock = threading.Lock()
        self._queue: list = []
        self._marks = follow.Marks(self, threading.get_ident()) if reads else None
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
        self._started = manifest.now_iso()
        self._sinks: dict[str, Sink] = {}
        self._background = None
        self._streams: dict = {}
        self._spooled = Streams(self._space)
        self.rows = self._spooled.rows
        self._skipped: dict[str, str] = {}
        try:
            self._background = Background(f"bpfnb-record-write-{obj.name}")
            self._spooled.waiting = lambda: self._background.waiting
            self._open_streams()
            self._manifest = self._describe()
            manifest.write_manifest(self.path, self._manifest, reserve=MANIFEST_RESERVE)
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name=f"bpfnb-record-{obj.name}")
            _recordings.setdefault(id(obj), []).append(self)
            self._thread.start()
            if self._marks is not None:
                obj._follower = self._marks
        except BaseException:
            self._close_streams()
            self._spooled.close()
            if self._background is not None:
                self._background.finish()
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
                s = m.stream(self._types.get(m.name), max_rows=_max_rows(m, self._types))
            except ValueError as e:  # several record types: the user must name one
                self._skipped[m.name] = str(e)
                warnings.warn(f"record: stream {m.name!r} is not recorded: {e}",
                              RuntimeWarning, stacklevel=4)
                continue
            self._streams[m.name] = s
            sink = self._sinks[f"streams/{m.name}"] = Sink(
                self.path / "streams" / f"{m.name}.parquet", self._background)
            self._spooled.add(m.name, s, sink, self.path / "streams")

    def _describe(self) -> dict:
        from .. import frames
        obj = self._obj
        maps = {}
        for m in obj.maps:
            if not frames.is_tabular(m):
                continue
            is_hist = m.is_histogram  # bpfnb.hist types, or bpfnb.h's BPFNB_HISTK
            maps[m.name] = {"type": m.type_name, "key_type": m.key_type,
                            "value_type": m.value_type, "max_entries": m.max_entries,
                            "percpu": m.type in PERCPU_TYPES, "histogram": is_hist,
                            "key_columns": m.key_columns,
                            "file": f"maps/{m.name}.parquet",
                            "hist_file": f"hists/{m.name}.parquet" if is_hist else None}
            self._sinks[f"maps/{m.name}"] = Sink(self.path / "maps" / f"{m.name}.parquet",
                                                 self._background)
            if is_hist:
                self._sinks[f"hists/{m.name}"] = Sink(
                    self.path / "hists" / f"{m.name}.parquet", self._background)
        from .stacks import StackNames
        self._stack_names = StackNames(obj)
        for m in self._stack_names.maps:  # what its stack ids name (bpfnb/record/stacks.py)
            (self.path / "stacks").mkdir(exist_ok=True)
            maps[m.name]["stacks_file"] = f"stacks/{m.name}.parquet"
            self._sinks[f"stacks/{m.name}"] = Sink(self.path / "stacks" / f"{m.name}.parquet",
                                                   self._background)
        self._sinks["globals"] = Sink(self.path / "globals.parquet", self._background)
        if self._marks is not None:
            self._sinks["reads"] = Sink(self.path / "reads.parquet", self._background)
        variables = {f"{section}.{var}": t for section in ("bss", "data", "rodata")
                     if (g := obj.globals.get(section)) is not None
                     for var, t in g._types().items()}
        return {
            "format": FORMAT, "version": VERSION, "state": "recording", "error": None,
            "name": obj.name, "source": getattr(obj, "source", None),
            "source_path": getattr(obj, "source_path", None),
            "cflags": list(getattr(obj, "cflags", ())),
            "kernel_release": os.uname().release, "machine": os.uname().machine,
            "hostname": socket.gethostname(), "pid": os.getpid(),
            "btf_sha256": manifest.btf_sha256(),
            "libbpf_version": manifest.libbpf_version(), "bpfnb_version": manifest.bpfnb_version(),
            "started": self._started, "stopped": None, "interval": self.interval,
            "snapshots": 0,
            "programs": [{"name": p.name, "section": p.section, "type": p.type_name,
                          "attached": bool(p.links)} for p in obj.progs],
            "maps": maps,
            "streams": {name: {"file": f"streams/{name}.parquet", "record_type": s.type,
                               "rows": 0, "lost": None, "dropped": 0,
                               "spool": f"streams/.{name}.spool"}
                        for name, s in self._streams.items()},
            "skipped_streams": dict(self._skipped),
            "globals": {"file": "globals.parquet", "variables": variables},
            "output": None,
            "reads": None if self._marks is None else {
                "file": "reads.parquet", "count": 0,
                "thread": threading.current_thread().name},
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
                if self._background.error is not None:
                    raise self._background.error
                self._spooled.move(self._streams)
                self._take_reads()
                if now >= next_snapshot:
                    self._snapshot()
                    next_snapshot = max(next_snapshot + self.interval, now)
                self._spooled.convert(min(now + STREAM_POLL, next_snapshot))
                # every STREAM_POLL from the last move's start: the time a move takes
                # (its writes) is no extra wait while records pile up
                waits = [now + STREAM_POLL - time.monotonic(),
                         next_snapshot - time.monotonic()]
                if deadline is not None:
                    waits.append(deadline - time.monotonic())
                self._wake.wait(max(min(waits), 0))
                self._wake.clear()
            self._end_reads()
            self._close_streams()  # what the buffers hold comes into the streams
            self._spooled.move(self._streams, final=True)
            self._take_reads()
            self._snapshot()  # the last snapshot: at stop
            self._finish("complete")
        except Exception as e:
            self.error = _error_text(e, self.path)
            warnings.warn(f"recording {str(self.path)!r} stopped: {self.error}",
                          RuntimeWarning)
            self._finish("failed")
        finally:
            self._end_reads()
            mine = _recordings.get(id(self._obj), [])
            if self in mine:
                mine.remove(self)
            self._obj = None  # the recording no longer keeps the object alive

    def _snapshot(self, read=None) -> int:
        """Snapshot every map and the globals (at ``read``: its time, and the part it
        read as it read it); its number."""
        import pandas as pd
        from .. import frames
        if read is None:
            with self._lock:  # after the reads queued before it
                queue, self._queue = self._queue, []
                t = time.time_ns()
            self._take_reads(queue)
        else:
            t = read.time
        obj, n = self._obj, self.snapshots
        taken = {}
        for m in obj.maps:
            if not frames.is_tabular(m):
                continue
            took = (read is not None and read.target == f"maps/{m.name}"
                    and read.payload is not None)
            df = taken[m.name] = read.payload if took and read.call == "to_df" else m.to_df()
            self._sinks[f"maps/{m.name}"].add(df, self._space, _snapshot=n, _time=t)
            if m.is_histogram:
                h = read.payload if took and read.call == "hist" else m.hist().df
                self._sinks[f"hists/{m.name}"].add(h, self._space, _snapshot=n, _time=t)
        held = read.stacks if read is not None and read.stacks else {}
        for m in self._stack_names.maps:  # the names of the stacks the rows point to
            names = self._stack_names.changes(m, taken, held.get(m.name))
            self._sinks[f"stacks/{m.name}"].add(names, self._space, _snapshot=n, _time=t)
        values = (read.payload if read is not None and read.target == "globals"
                  else follow.globals_row(obj))
        row = {"_snapshot": n, "_time": t, **{k: _scalar(v) for k, v in values.items()}}
        self._sinks["globals"].add(pd.DataFrame([row]), self._space)
        self.snapshots = n + 1
        return n

    # --- reads (bpfnb.follow) -------------------------------------------------

    def _mark(self, target: str, call: str, payload):
        """A read of the notebook's thread, numbered and timed, for the thread (a map's
        frame keeps the stacks its ids named then: the notebook may clear them next)."""
        stacks = (self._stack_names.held() if payload is not None
                  and target.startswith("maps/") else None)
        with self._lock:
            n = self._marks.count
            self._marks.count += 1
            self._queue.append(_Read(n, time.time_ns(), target, call, payload, stacks))
        self._wake.set()

    def _stream_rows(self, stream, call: str, result) -> tuple[int, int] | None:
        """The rows of the recorded stream (streams/<map>.parquet) that the read of
        ``stream`` answered with: it shares the recorder's reader, so row numbers of
        the reader relate them."""
        from ..collector import last_span
        mine = self._streams.get(stream.map_name)
        if mine is None or mine._collector is not stream._collector:
            return None  # another record type: its own reader, no shared rows
        b = stream._buffer
        span = ((b.base + b.added - result, b.base + b.added) if call == "len"
                else last_span(stream))
        if span is None:
            return None
        offset = mine._buffer.base + mine._buffer.dropped
        return max(span[0] - offset, 0), max(span[1] - offset, 0)

    def _take_reads(self, queue=None):
        """Write the reads queued: a snapshot for each read of a map or a global."""
        if self._marks is None:
            return
        if queue is None:
            with self._lock:
                queue, self._queue = self._queue, []
        if not queue:
            return
        import pandas as pd
        rows = []
        for read in queue:
            snapshot = -1 if read.target.startswith("streams/") else self._snapshot(read)
            first, end = (read.payload if read.target.startswith("streams/")
                          and read.payload is not None else (-1, -1))
            rows.append({"_read": read.n, "_time": read.time, "target": read.target,
                         "call": read.call, "_snapshot": snapshot, "first": first,
                         "end": end})
        self._sinks["reads"].add(pd.DataFrame(rows), self._space)
        self._manifest["reads"]["count"] = queue[-1].n + 1

    def _end_reads(self):
        """Reads stop counting: the object's reads no longer come here."""
        obj = self._obj
        if self._marks is not None and obj is not None and obj._follower is self._marks:
            obj._follower = None

    def _space(self) -> int:
        """Bytes the next write may take: the free space less every footer to come."""
        footers = sum(s.footer_bytes() for s in self._sinks.values())
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize - footers - FOOTER_BYTES

    def _finish(self, state: str):
        self._close_streams()
        m = self._manifest
        for e in self._spooled.finish(self._report):  # whatever stopped it: room is kept
            if state == "complete":
                warnings.warn(f"recording {str(self.path)!r} stopped: "
                              f"{_error_text(e, self.path)}", RuntimeWarning)
            state = "failed"
            self.error = self.error or _error_text(e, self.path)
        failed = self._background.finish()  # what it holds first: files in order
        if failed is not None and state == "complete":
            state, self.error = "failed", _error_text(failed, self.path)
            warnings.warn(f"recording {str(self.path)!r} stopped: {self.error}",
                          RuntimeWarning)
        streams = self._spooled.sinks()
        for sink in self._sinks.values():
            try:
                sink.close(self._space if state == "complete" or sink in streams else None)
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
            m["streams"][name].pop("spool", None)  # converted and removed
        m.update(state=state, error=self.error, stopped=manifest.now_iso(),
                 snapshots=self.snapshots)
        try:
            manifest.write_manifest(self.path, m)
        except OSError as e:
            self.error = self.error or _error_text(e, self.path)
            warnings.warn(f"recording {str(self.path)!r}: cannot write its manifest: {e}",
                          RuntimeWarning)

    def _record_output(self, m: dict, state: str):
        """obj.output()'s lines (bpfnb.output keeps the last MAX_LINES), when the
        object's printk lines can be read at all."""
        from .. import output
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
        sink = Sink(self.path / "output.parquet")
        sink.add(df.assign(_time=_time), self._space)
        sink.close(self._space)
        m["output"] = {"file": "output.parquet", "rows": len(df),
                       "dropped": int(df.attrs.get("dropped", 0))}

    def _report(self, name: str, done: int, held: int):
        reports = self._reports
        if reports is not None:
            reports.put((name, done, held))

    def _close_streams(self):
        for s in self._streams.values():
            s.close()

    # --- control --------------------------------------------------------------

    @property
    def reads(self) -> int:
        """Reads counted so far (0 without reads=True)."""
        return 0 if self._marks is None else self._marks.count

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, progress=None) -> "Recording":
        """Take the last snapshot, convert the records still held, close the files,
        mark the manifest complete. ``progress(stream, rows converted, rows held)`` is
        called on this thread as the conversion goes (from 0 to the rows each stream
        held, one call per chunk), e.g. to show it: %%bpf --record --for does."""
        mine = threading.current_thread() is self._thread
        reports = self._reports = (queue.SimpleQueue() if progress is not None and not mine
                                   else None)
        self._stopping.set()
        self._wake.set()
        if mine:
            return self
        if reports is None:
            self._thread.join()
            return self
        try:
            while self._thread.is_alive() or not reports.empty():
                try:
                    progress(*reports.get(timeout=0.05))
                except queue.Empty:
                    pass
        finally:  # a progress that raised: the conversion goes on, unreported
            self._reports = None
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


def _error_text(e: BaseException, path: Path) -> str:
    if isinstance(e, DiskFull):
        return e.strerror
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return f"the file system of {str(path)!r} is full: {e}"
    return f"{type(e).__name__}: {e}"


# Recordings by object, for release() at the object's teardown.
_recordings: dict[int, list] = {}


def _max_rows(m, types: dict) -> int:
    """Rows a recorded stream may hold between two moves: STREAM_MAX_BYTES of its
    records (at least STREAM_MAX_ROWS), so a short stall of the writes drops nothing."""
    from ..recordtypes import record_type
    try:
        btf, type_id = record_type(m.object, m, types.get(m.name))
        size = btf.dtype(type_id).itemsize if type_id is not None else 0
    except ValueError:
        size = 0
    return max(STREAM_MAX_ROWS, STREAM_MAX_BYTES // size) if size else STREAM_MAX_ROWS


class _Read:
    """A read queued for the recorder's thread (see Recording._mark)."""
    __slots__ = ("n", "time", "target", "call", "payload", "stacks")

    def __init__(self, n, time_ns, target, call, payload, stacks=None):
        self.n, self.time, self.target, self.call = n, time_ns, target, call
        self.payload, self.stacks = payload, stacks


def record(obj, path, *, seconds=None, interval=1.0, overwrite=False,
           types=None, reads=False) -> Recording:
    """``obj.record(...)``: see :class:`Recording`; also ``obj.recording`` after."""
    rec = Recording(obj, path, seconds=seconds, interval=interval, overwrite=overwrite,
                    types=types, reads=reads)
    obj.recording = rec
    return rec


def release(obj):
    """The object is being destroyed: end its recordings (last snapshot first)."""
    from .start import forget
    forget(obj)  # a recording asked for at its load, which never came
    for rec in _recordings.pop(id(obj), []):
        rec.stop()
