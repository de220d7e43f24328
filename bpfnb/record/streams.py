"""A recording's event streams (bpfnb/record/): what each stream received, moved out
every STREAM_POLL and held as it came (Spool: the runs themselves while the recording's
memory budget lasts, past it a byte copy into a spool file beside the Parquet file),
then converted into streams/<map>.parquet (files.Sink) when the streams are
quiet, when a spool grows large, and at the stop. The move is the only work a flood
costs the recorder (no Parquet encoding, no per-record object, no Arrow copy), so the
stream's thread and the producer keep the CPU; memory stays bounded (SPOOL_MEMORY of
records held, past it the disk; SPOOL_MAX bytes waiting, past it the rows stay in the
stream, whose own bound drops the oldest, counted as ``dropped``)."""

from __future__ import annotations

import collections
import functools
import errno
import os
import struct
import time
from pathlib import Path

from .files import DiskFull, Sink, StreamColumns

SPOOL_MEMORY = 256 << 20  # bytes of records held in memory (all streams), past them on disk
SPOOL_QUIET = 1 << 20     # bytes a move may bring for the streams to count as quiet
SPOOL_CONVERT_AT = 512 << 20  # bytes of a spool converted even while its stream floods
SPOOL_MAX = 2 << 30        # ... and past these, its rows wait in the stream (its bound)
SPOOL_CHUNK = 4 << 20      # bytes of records converted at a time (a row group or so)


class Streams:
    """The spools of a recording's streams, fed by ``move()`` and converted by
    ``convert()``/``finish()``. ``space()``: the bytes the disk may still take."""

    def __init__(self, space):
        self.space = space
        self.spools: dict[str, Spool] = {}
        self.rows: dict[str, int] = {}  # moved from each stream
        self.memory = Budget(SPOOL_MEMORY)
        self.moved = 0  # bytes the last move brought
        self.waiting = lambda: 0  # bytes of row groups waiting for the writer thread

    def add(self, name: str, stream, sink: Sink, directory: Path):
        self.rows[name] = 0
        self.spools[name] = Spool(directory / f".{name}.spool", StreamColumns(stream),
                                  sink, self.memory)

    def move(self, streams: dict, final: bool = False):
        """Take what each stream received (``final``: also past SPOOL_MAX). A disk
        that cannot take it all, once the spools are converted, takes the rows that
        fit, then DiskFull."""
        t = time.time_ns()
        self.moved = 0
        for name, s in streams.items():
            spool = self.spools[name]
            if spool.pending >= SPOOL_MAX and not final:
                continue
            s._check()
            runs = s._buffer.take()  # no flush(): what comes later, the next move takes
            if not runs:
                continue
            nbytes, rows = Spool.measure(runs)
            full = False
            if not self._room(nbytes, rows):
                self.convert_all()  # Parquet takes fewer bytes, and the spools start over
                while rows and not self._room(nbytes, rows):  # the rows that fit, then stop
                    full, runs = True, _first_rows(runs, rows * 3 // 4)
                    nbytes, rows = Spool.measure(runs)
            if rows:
                spool.add(runs, t)
            self.rows[name] += rows
            self.moved += nbytes
            if full:
                st = os.statvfs(spool.path.parent)
                raise DiskFull(errno.ENOSPC, f"the file system holding "
                                             f"{str(spool.path.parent.parent)!r} is full "
                                             f"({st.f_bavail * st.f_frsize // 1024} KiB "
                                             f"left): the recording stopped")

    def _room(self, nbytes: int, rows: int) -> bool:
        """Whether the disk takes ``nbytes`` more of spool and still every spool's
        conversion (Arrow's bytes: each record and its `_time`, twice over), and what
        waits to be written."""
        spools = self.spools.values()
        pending = sum(sp.pending for sp in spools) + nbytes
        pending_rows = sum(sp.pending_rows for sp in spools) + rows
        waiting = self.waiting() + sum(t.nbytes for sp in spools for t in sp.sink.tables)
        return self.space() >= 2 * (pending + 8 * pending_rows + waiting) + nbytes

    def convert(self, until: float):
        """Turn held records into Parquet rows until ``until`` (monotonic), when the
        last move was small (the CPU is not all the streams') or a spool holds
        SPOOL_CONVERT_AT bytes."""
        for spool in self.spools.values():
            while spool.pending and time.monotonic() < until and (
                    self.moved < SPOOL_QUIET or spool.pending >= SPOOL_CONVERT_AT):
                spool.convert(self.space)
            spool.sink.tick(self.space)

    def convert_all(self):
        for spool in self.spools.values():
            while spool.pending:
                spool.convert(self.space)

    def finish(self, progress=None) -> list:
        """Convert what is held (whatever stopped the recording: the disk has room
        for it), remove the spool files; the exceptions met, if any. ``progress(name,
        rows converted, rows held)``: after each chunk of a stream that held rows."""
        errors = []
        for name, spool in self.spools.items():
            try:
                spool.finish(self.space, None if progress is None else
                             functools.partial(progress, name))
            except Exception as e:
                errors.append(e)
            finally:
                spool.close()
        return errors

    def close(self):
        for spool in self.spools.values():
            spool.close()

    def sinks(self) -> set:
        return {spool.sink for spool in self.spools.values()}


class _Direct:
    """Appends to a spool file through O_DIRECT, from an aligned staging buffer
    (recycled memory): no page cache, so a spill costs the kernel no page to allocate
    and fill (on the test VM a buffered write of new pages took 60x the CPU: 600 ms
    for 256 MiB, against 10 ms). Written STAGE bytes at a time; the tail waits in the
    buffer, and ``sync()`` writes it (padded to a block) before a read of it."""

    BLOCK, STAGE = 4096, 4 << 20

    def __init__(self, path: Path):
        import mmap
        import numpy as np
        self.fd = os.open(path, os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)
        self.mm = mmap.mmap(-1, 2 * self.STAGE)
        self.stage = np.frombuffer(self.mm, np.uint8)
        self.base = 0  # file offset of stage[0] (a multiple of STAGE)
        self.fill = 0  # bytes in the stage

    @property
    def size(self) -> int:
        return self.base + self.fill

    def append(self, parts: list, reader: int):
        """Append ``parts`` (bytes, contiguous arrays); a failed write leaves the
        spool as it was (``reader``: a buffered fd of the file, to reload the tail)."""
        import numpy as np
        old = self.size
        try:
            for b in parts:
                src = (np.frombuffer(b, np.uint8) if isinstance(b, bytes)
                       else b.reshape(-1).view(np.uint8))
                at = 0
                while at < len(src):
                    n = min(len(src) - at, 2 * self.STAGE - self.fill)
                    self.stage[self.fill:self.fill + n] = src[at:at + n]
                    self.fill, at = self.fill + n, at + n
                    if self.fill >= self.STAGE:
                        self._write(self.STAGE)
                        rest = self.fill - self.STAGE
                        self.stage[:rest] = self.stage[self.STAGE:self.fill]
                        self.base, self.fill = self.base + self.STAGE, rest
        except OSError:
            if self.base <= old:  # the stage still holds the old tail
                self.fill = old - self.base
            else:  # written past it: the old tail is in the file
                self.base = old // self.STAGE * self.STAGE
                self.fill = old - self.base
                self.stage[:self.fill] = np.frombuffer(
                    os.pread(reader, self.fill, self.base), np.uint8)
            raise

    def _write(self, n: int):
        n = -(-n // self.BLOCK) * self.BLOCK
        if os.pwrite(self.fd, memoryview(self.mm)[:n], self.base) < n:
            raise OSError(errno.ENOSPC, "short write")

    def sync(self):
        if self.fill:
            self._write(self.fill)

    def close(self):
        os.close(self.fd)
        self.stage = None  # its view of the map: then the map can close
        self.mm.close()


def _first_rows(runs: list, n: int) -> list:
    """The first ``n`` rows of ``runs``."""
    out = []
    for run in runs:
        if n <= 0:
            break
        out.append(run[:n])
        n -= len(out[-1])
    return out


class Budget:
    """Bytes of records the spools of one recording may hold in memory together."""

    def __init__(self, limit: int):
        self.limit, self.held = limit, 0

    def take(self, n: int) -> bool:
        if self.held + n > self.limit:
            return False
        self.held += n
        return True

    def give(self, n: int):
        self.held -= n


class Spool:
    """A recorded stream's records as they arrived, held until they are converted
    into its Parquet file (``convert``), so that Parquet's encoding waits for a quiet
    moment or the stop and a flood costs the stream's thread and the producer little
    CPU: the runs themselves (no copy) while the recording's ``memory`` budget lasts,
    past that in a file beside the Parquet file (a byte copy, ``os.pwritev``, which
    releases the GIL; no per-record object). Once the file holds records, newer ones go there too until
    it is converted (the order stays the arrival's). A frame per run: a header (kind,
    records, payload bytes, receive time in ns), then the records' bytes: FIXED, the
    records of the stream's dtype back to back; SIZED, a u32 length per record, then
    the records. The file starts over (truncated) when all of it is converted."""

    HEADER = struct.Struct("<IIqq")
    FIXED, SIZED = 1, 2

    def __init__(self, path: Path, columns: StreamColumns, sink: Sink, memory: "Budget"):
        self.path = path
        self.columns = columns
        self.sink = sink
        self.memory = memory  # shared by the spools of a recording
        self.held: collections.deque = collections.deque()  # (time, runs, bytes)
        self.held_bytes = 0
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            self.direct = _Direct(path)
        except OSError:  # no O_DIRECT here (tmpfs): written through the page cache
            self.direct = None
        self.size = 0  # bytes in the file
        self.done = 0  # of them converted
        self.pending_rows = 0

    @property
    def pending(self) -> int:
        """Bytes not converted yet (held or in the file)."""
        return self.held_bytes + self.size - self.done

    @staticmethod
    def measure(runs: list) -> tuple[int, int]:
        """The bytes of ``runs``' records (as frames: with their headers) and rows."""
        import numpy as np
        nbytes = sum(Spool.HEADER.size + (run.nbytes if isinstance(run, np.ndarray) else
                                          4 * len(run) + sum(len(r) for r in run))
                     for run in runs)
        return nbytes, sum(len(run) for run in runs)

    def add(self, runs: list, t: int):
        """Hold ``runs`` received at ``t``, or write them to the file (DiskFull when
        it cannot take them: the file stays as it was)."""
        nbytes, rows = self.measure(runs)
        if self.size == self.done and self.memory.take(nbytes):
            self.held.append((t, runs, nbytes))
            self.held_bytes += nbytes
        else:
            self._write(self._frames(runs, t), nbytes)
        self.pending_rows += rows

    def _frames(self, runs: list, t: int) -> list:
        import numpy as np
        iov = []
        for run in runs:
            if isinstance(run, np.ndarray):
                body = [np.ascontiguousarray(run).view(np.uint8)]
                kind = self.FIXED
            else:
                body = [np.array([len(r) for r in run], np.uint32), b"".join(run)]
                kind = self.SIZED
            size = sum(b.nbytes if isinstance(b, np.ndarray) else len(b) for b in body)
            iov.append(self.HEADER.pack(kind, len(run), size, t))
            iov.extend(body)
        return iov

    def _write(self, iov: list, nbytes: int):
        at = self.size
        try:
            if self.direct is not None:
                self.direct.append(iov, self.fd)
                at = self.direct.size
            else:
                for i in range(0, len(iov), 512):  # under IOV_MAX
                    part = iov[i:i + 512]
                    want = sum(len(b) if isinstance(b, bytes) else b.nbytes for b in part)
                    if os.pwritev(self.fd, part, at) < want:  # a regular file: no room
                        raise OSError(errno.ENOSPC, "short write")
                    at += want
        except OSError as e:
            if self.direct is None:
                os.ftruncate(self.fd, self.size)
            if e.errno == errno.ENOSPC:
                raise DiskFull(errno.ENOSPC, f"the file system holding {str(self.path)!r} "
                                             f"is full: the recording stopped") from None
            raise
        self.size = at

    def convert(self, space) -> int:
        """Convert about SPOOL_CHUNK bytes of records (at least one run), oldest first,
        into the Parquet sink; the rows converted."""
        import numpy as np
        limit = SPOOL_CHUNK
        if self.held:
            runs, times, took = [], [], 0
            while self.held and (not runs or took < limit):
                t, more, nbytes = self.held.popleft()
                runs.extend(more)
                times.extend((t, len(run)) for run in more)
                took += nbytes
            self.held_bytes -= took
            self.memory.give(took)
        elif self.size > self.done:
            runs, times = self._read(limit)
        else:
            return 0
        columns, rows = self.columns.columns(runs)
        columns["_time"] = np.repeat(np.array([t for t, _ in times], np.int64),
                                     [n for _, n in times])
        self.pending_rows -= rows
        self.sink.add_columns(columns, rows, space)
        return rows

    def _read(self, limit: int) -> tuple[list, list]:
        """Runs and their (time, rows) from the file's next frames."""
        import numpy as np
        H = self.HEADER.size
        if self.direct is not None and self.done + limit > self.direct.base:
            self.direct.sync()
        block = os.pread(self.fd, min(self.size - self.done, limit), self.done)
        runs, times, pos = [], [], 0
        dtype = self.columns.stream.dtype
        while pos + H <= len(block):
            kind, count, size, t = self.HEADER.unpack_from(block, pos)
            if pos + H + size > len(block):
                if runs:
                    break
                block, pos = os.pread(self.fd, H + size, self.done), 0  # a big frame
                continue
            body = memoryview(block)[pos + H:pos + H + size]
            if kind == self.FIXED:
                runs.append(np.frombuffer(body, dtype=dtype))
            else:
                lengths = np.frombuffer(body[:4 * count], np.uint32)
                ends = np.cumsum(lengths) + 4 * count
                runs.append([bytes(body[e - n:e]) for n, e in zip(lengths.tolist(),
                                                                  ends.tolist())])
            times.append((t, count))
            pos += H + size
        if not runs:
            raise ValueError(f"{str(self.path)!r}: a truncated frame at byte {self.done}")
        self.done += pos
        if self.done == self.size:  # all converted: the file starts over
            os.ftruncate(self.fd, 0)
            self.size = self.done = 0
            if self.direct is not None:
                self.direct.base = self.direct.fill = 0
        return runs, times

    def finish(self, space, progress=None):
        """Convert what is left (``progress(rows converted, rows held)`` after each
        chunk); a stream without rows still gets its (empty) file."""
        held, done = self.pending_rows, 0
        if progress is not None and held:
            progress(0, held)
        while self.pending:
            done += self.convert(space)
            if progress is not None:
                progress(done, held)
        if self.sink.empty is None:
            import numpy as np
            columns, _ = self.columns.columns([])
            self.sink.add_columns({**columns, "_time": np.empty(0, np.int64)}, 0, space)

    def close(self):
        """Close and remove the file; forget what is held (converted, or given up)."""
        self.held.clear()
        self.memory.give(self.held_bytes)
        self.held_bytes = 0
        if self.direct is not None:
            self.direct.close()
            self.direct = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            self.path.unlink(missing_ok=True)
