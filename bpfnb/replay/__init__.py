"""bpfnb.replay(path): a recording (see bpfnb.record, format in RECORDING.md) as a read-only
object with the surface of a live one, needing no privilege, clang, BTF or libbpf.

    obj = bpfnb.replay("labs/rec/02")          # the clock at the end: everything visible
    obj.maps.counts.to_df()                     # the last snapshot
    obj.maps.events.stream().to_df()            # every record
    obj = bpfnb.replay("labs/rec/02", speed=1)  # the clock runs with wall time: .live() animates
    obj.seek(2.5); obj.bss.total                # the value 2.5 s after the first snapshot
    obj = bpfnb.replay("labs/rec/02", follow="reads")  # the n-th read sees the n-th recorded

``follow="reads"`` (a recording made with reads=True, as ``%%bpf NAME --recording PATH``
makes them) answers each read the notebook makes as the same read did live (see
bpfnb/replay/follow.py); ``follow="clock"`` (the default) answers at the clock.

The clock (``obj.clock``) counts seconds from the first snapshot (or the recording's start
when it has none). At clock t a map answers with its last snapshot taken at or before t, a
stream with the records received by then, a global with its value at that snapshot.
``can_load_here()`` tells whether this process could run the cell live instead (what
``%%bpf NAME --recording PATH`` decides with).

Nothing here imports bpfnb.libbpf (which opens libbpf.so): ``.hist()`` and ``.live()``
import bpfnb.hist and bpfnb.live, which do.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import socket
import time
import threading
from datetime import datetime, timezone
from pathlib import Path

from .follow import ReadCursor
from .parts import (Namespace, ReadOnlyError, ReplayError, ReplayGlobals, ReplayMap,
                    ReplayProgram, _plain, read_table, rows_until)

FORMAT, VERSION = "bpfnb-recording", 1
SECTIONS = ("bss", "data", "rodata")
_STATE = "replay"   # obj.state of a replayed object (live ones: opened, loaded, destroyed)

__all__ = ["replay", "Replay", "ReplayError", "ReadOnlyError", "can_load_here", "choose",
           "cell_summary", "read_manifest", "describe"]


def read_manifest(path: str | os.PathLike) -> dict:
    """The manifest of the recording at ``path``, checked: ReplayError says what is wrong."""
    path = Path(path)
    file = path / "manifest.json"
    if not path.is_dir():
        raise ReplayError(f"no recording at {str(path)!r}: a recording is a directory "
                          f"holding manifest.json (make one with %%bpf NAME --record PATH)")
    try:
        manifest = json.loads(file.read_text())
    except FileNotFoundError:
        raise ReplayError(f"{str(path)!r} is not a bpfnb recording: it has no "
                          f"manifest.json") from None
    except (OSError, ValueError) as e:
        raise ReplayError(f"cannot read {str(file)!r}: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ReplayError(f"{str(file)!r} is not a bpfnb recording manifest "
                          f"(its format is not {FORMAT!r})")
    if manifest.get("version") != VERSION:
        raise ReplayError(f"{str(path)!r} is a recording of format version "
                          f"{manifest.get('version')!r}; this bpfnb reads version {VERSION}: "
                          f"upgrade bpfnb")
    if (why := unfinished(manifest, path)) is not None:
        raise ReplayError(why)
    return manifest


def unfinished(manifest: dict, path) -> str | None:
    """Why the recording at ``path`` (its manifest says "recording") cannot be read:
    still being recorded, or its process ended without stopping it (its Parquet files
    were never closed: what they held is lost); None when it was finished."""
    if manifest.get("state") != "recording":
        return None
    pid, host = manifest.get("pid"), manifest.get("hostname")
    here = host == socket.gethostname() and isinstance(pid, int)
    if here and _alive(pid):
        return (f"{str(path)!r} is still being recorded (by process {pid}): stop that "
                f"recording (rec.stop(), %bpf stop NAME) before replaying it")
    who = f"the process that recorded it (pid {pid} on {host})"
    how = ("ended without stopping it (killed, or crashed)" if here else
           "did not stop it (or is still recording there)")
    return (f"{str(path)!r} is an unfinished recording: {who} {how}, so its Parquet "
            f"files were never closed: the snapshots, stream records and globals it took "
            f"since {manifest.get('started')} are lost; its manifest.json still describes "
            f"the object (source, programs, maps). Record again, ending with rec.stop(), "
            f"%bpf stop NAME or --for S")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True



def describe(manifest: dict, path) -> str:
    """One line: "recording labs/rec/02 (recorded 2026-12-01 on host X)"."""
    started = str(manifest.get("started") or "")[:10] or "at an unknown date"
    host = manifest.get("hostname") or "an unknown host"
    state = manifest.get("state")
    tail = "" if state == "complete" else (
        ", unfinished" if state == "recording" else
        f", stopped early: {manifest.get('error') or 'failed'}")
    return f"recording {path} (recorded {started} on {host}{tail})"


class Replay:
    """A recorded object: ``maps``, ``progs``, ``bss``/``data``/``rodata``, ``globals``,
    ``to_dfs()``, ``output()``, ``live()``, ``clock``/``seek()``, ``destroy()``, ``with``.

    Read-only: attaching, loading, writing a map or a global raise ReadOnlyError.
    Following reads, the calls that change what the kernel does (``load()``,
    ``attach()``, ``progs.X.attach_*()``, ``detach()``, a map's ``clear()``) are
    accepted and do nothing: the reads recorded after them show what they did live."""

    _follower = None  # the ReadCursor of follow="reads" (bpfnb.follow calls it)

    def __init__(self, path: str | os.PathLike, speed: float | None = None,
                 name: str | None = None, follow: str = "clock"):
        if speed is not None and not speed > 0:
            raise ValueError(f"speed must be a positive number (1.0: the recorded pace), "
                             f"or None to show everything at once; not {speed!r}")
        if follow not in ("clock", "reads"):
            raise ValueError(f"follow must be 'clock' (answer at the replay clock) or "
                             f"'reads' (answer the n-th read as the n-th recorded), "
                             f"not {follow!r}")
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        self.name = name or self.manifest.get("name") or self.path.name
        self.source = self.manifest.get("source")
        self.speed = speed
        self.state = _STATE
        self.lock = threading.RLock()   # a dashboard reads under it; destroy() waits
        self.skipped: dict = {}
        m = self.manifest
        self._timeline_cache = None
        self._globals_table = self._read("globals", (m.get("globals") or {}).get("file"))
        kv, streams = m.get("maps") or {}, m.get("streams") or {}
        maps = {name: ReplayMap(self, name, kv.get(name, {}), streams.get(name))
                for name in [*kv, *(s for s in streams if s not in kv)]}
        self.maps = Namespace("map", maps)
        self.progs = Namespace("program", {p["name"]: ReplayProgram(self, p)
                                           for p in m.get("programs") or []})
        self._sections = {s: ReplayGlobals(self, s) for s in SECTIONS
                          if any(c.startswith(s + ".") for c in self._globals_columns())}
        self.follow = follow
        if follow == "reads":
            info = m.get("reads")
            if not info:
                raise ReplayError(f"{self.describe()} has no read marks, so a replay cannot "
                                  f"follow the notebook's reads: record it with %%bpf NAME "
                                  f"--recording PATH (or obj.record(path, reads=True)), or "
                                  f"replay it with follow='clock'")
            self._follower = ReadCursor(self, self._read("reads", info.get("file")))
        self.t0 = self._first_time()
        self.end = self._last_time()
        self._wall0 = time.monotonic()
        self._clock0 = 0.0 if speed is not None else self.duration

    # --- reading the recording --------------------------------------------------------

    def _read(self, what: str, file: str | None):
        """A pyarrow Table of ``file`` (relative to the recording), or None without one."""
        if not file:
            return None
        return read_table(self.path / file, f"the {what} of {self.describe()}")

    def _globals_row_of(self) -> dict:
        """{snapshot number: its row in globals.parquet}."""
        if self.__dict__.get("_rows_of") is None:
            t = self._globals_table
            ids = [] if t is None or not t.num_rows else t.column("_snapshot").to_pylist()
            object.__setattr__(self, "_rows_of", {k: i for i, k in enumerate(ids)})
        return self._rows_of

    def _globals_columns(self) -> list[str]:
        t = self._globals_table
        return [] if t is None else [c for c in t.column_names if not c.startswith("_")]

    def _times(self) -> list[int]:
        """Every `_time` of the recording's snapshots (maps and globals), in ns."""
        times = []
        for m in self.maps:
            times += m._snapshot_times()
        if self._globals_table is not None and self._globals_table.num_rows:
            times += self._globals_table.column("_time").to_pylist()
        return times

    def _timeline(self):
        """(snapshot numbers, their times) of the whole recording, by time: the numbers
        are shared by every file, and a map empty at a snapshot has no rows for it."""
        if self._timeline_cache is None:
            import numpy as np
            first: dict = {}
            tables = [s for m in self.maps for s in (m._snaps, m._hists) if s is not None]
            pairs = [(s.ids, s.times) for s in tables]
            if self._globals_table is not None and self._globals_table.num_rows:
                g = self._globals_table
                pairs.append((g.column("_snapshot").to_numpy(), g.column("_time").to_numpy()))
            for ids, times in pairs:
                for i, t in zip(ids.tolist(), times.tolist()):
                    first[i] = min(t, first.get(i, t))
            ids = np.array(sorted(first, key=first.get), np.int64)
            self._timeline_cache = (ids, np.array([first[i] for i in ids.tolist()], np.int64))
        return self._timeline_cache

    def _first_time(self) -> int:
        times = self._times()
        if self._follower is not None:
            times += self._follower.times[:1].tolist()
        if times:
            return min(times)
        return _ns(self.manifest.get("started")) or 0

    def _last_time(self) -> int:
        """The end of the recording: its stop time, else its last snapshot or record."""
        times = self._times() + [m._last_record_time() for m in self.maps if m.is_stream]
        last = max([t for t in times if t is not None], default=self.t0)
        stopped = _ns(self.manifest.get("stopped"))
        return max(last, stopped or last)

    def describe(self) -> str:
        return describe(self.manifest, self.path)

    # --- the clock --------------------------------------------------------------------

    @property
    def duration(self) -> float:
        """Seconds from the first snapshot to the end of the recording."""
        return (self.end - self.t0) / 1e9

    @property
    def clock(self) -> float:
        """Seconds since the first snapshot that the replay shows now (0..duration)."""
        if self._follower is not None:
            return (self._follower.clock_ns(self.speed, self.t0, self.end) - self.t0) / 1e9
        if self.speed is None:
            return self._clock0
        now = self._clock0 + (time.monotonic() - self._wall0) * self.speed
        return min(now, self.duration)

    @property
    def time(self):
        """The replay clock as a pandas Timestamp (UTC, the recording's CLOCK_REALTIME)."""
        import pandas as pd
        return pd.Timestamp(self._clock_ns(), unit="ns", tz="UTC")

    def _clock_ns(self) -> int:
        if self._follower is not None:
            return self._follower.clock_ns(self.speed, self.t0, self.end)
        return self.t0 + round(self.clock * 1e9)

    def _snapshot_now(self) -> int | None:
        """The snapshot maps and globals show: the one of the read being answered, else
        the last one taken by the clock."""
        import numpy as np
        if self._follower is not None:
            k = self._follower.snapshot()
            if k is not None:
                return k
        ids, times = self._timeline()
        i = int(np.searchsorted(times, self._clock_ns(), side="right")) - 1
        return int(ids[i]) if i >= 0 else None

    def seek(self, t: float) -> "Replay":
        """Move the clock to ``t`` seconds after the first snapshot (clamped to the
        recording); with a speed, the clock goes on from there at that pace."""
        if isinstance(t, bool) or not isinstance(t, (int, float)):
            raise TypeError(f"seek(t): t is seconds since the first snapshot (a number), "
                            f"not {type(t).__name__}")
        self._check_open()
        if self._follower is not None:
            raise ReplayError("seek(): this replay follows the notebook's reads, which set "
                              "its clock; replay with follow='clock' to move it")
        self._clock0 = min(max(float(t), 0.0), self.duration)
        self._wall0 = time.monotonic()
        return self

    @property
    def finished(self) -> bool:
        """True once the clock reached the end of the recording."""
        return self.clock >= self.duration

    # --- the surface of a live Object -------------------------------------------------

    @property
    def globals(self) -> dict:
        return dict(self._sections)

    def __getattr__(self, name):
        if name in SECTIONS:
            sections = self.__dict__.get("_sections", {})
            if name in sections:
                return sections[name]
            raise AttributeError(f"{self.describe()} has no .{name} variables")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name, value):
        if name in SECTIONS and "_sections" in self.__dict__:
            raise ReadOnlyError(f"{self.name}.{name}", self)
        object.__setattr__(self, name, value)

    def to_dfs(self) -> dict:
        """Every key/value map's snapshot at the clock, by name."""
        return {m.name: m.to_df() for m in self.maps if m.is_tabular}

    def output(self):
        """The recorded bpf_printk lines up to the clock (a DataFrame, empty if none)."""
        import pandas as pd
        info = self.manifest.get("output")
        table = self._read("output", info.get("file")) if info else None
        if table is None:
            return pd.DataFrame(columns=["time", "pid", "comm", "cpu", "text"])
        return _plain(_until(table, self._clock_ns()))

    def live(self, *, interval: float = 1.0):
        """A live dashboard of the maps and numeric globals: with ``speed`` set, it
        animates as the replay clock runs."""
        from . import views
        from .. import live
        return live.live(*views.object_views(self), interval=interval, title=self.name)

    def set(self, **values):
        raise ReadOnlyError(f"{self.name}.set()", self)

    def opened(self) -> "Replay":
        """Stand as an object not loaded yet (``%%bpf NAME --no-load --recording
        PATH``, recorded from its load() on): state "opened", .rodata may be set (and
        is ignored: the recorded run had its values), reads count from load() on."""
        object.__setattr__(self, "_unloaded", self._follower)
        object.__setattr__(self, "_follower", None)
        object.__setattr__(self, "state", "opened")
        return self

    def load(self):
        """Following reads, a no-op (what it did live is in the reads after it)."""
        if self.state == "opened":
            object.__setattr__(self, "_follower", self.__dict__.pop("_unloaded"))
            object.__setattr__(self, "state", _STATE)
            return self
        if self._follower is None:
            raise ReadOnlyError(f"{self.name}.load()", self)
        return self

    def attach(self, on_error=None):
        """Following reads, a no-op (what it did live is in the reads after it)."""
        if self.state == "opened":  # as live: attaching an opened object loads it
            self.load()
        if self._follower is None:
            raise ReadOnlyError(f"{self.name}.attach()", self)
        return self

    def detach(self):
        """Nothing is attached: a no-op, as for a live object that is not attached."""
        return self

    def _check_open(self):
        if self.state == "destroyed":
            raise ReplayError(f"the replay of {self.describe()} was destroyed")

    def destroy(self):
        """Forget the data read (idempotent); the recording itself is left as it is."""
        with self.lock:
            object.__setattr__(self, "state", "destroyed")
            for m in self.maps:
                m._forget()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.destroy()

    def __repr__(self):
        maps = ", ".join(m.name for m in self.maps)
        progs = ", ".join(p.name for p in self.progs)
        at = f"clock {self.clock:.1f}/{self.duration:.1f} s"
        return (f"<bpfnb Replay {self.name!r} {self.state}, {at}: progs [{progs}] "
                f"maps [{maps}] from {self.describe()}>")


def replay(path: str | os.PathLike, speed: float | None = None, *,
           name: str | None = None, follow: str = "clock") -> Replay:
    """The recording at ``path`` as a read-only object with a live one's surface.

    ``speed=None``: the clock stands at the end (everything recorded is visible);
    ``speed=1.0`` (2.0, ...): it starts at the first snapshot and runs with wall time at
    that pace, so ``.live()`` dashboards animate. ``obj.seek(t)`` moves it.
    ``follow="reads"``: the n-th read this thread makes answers as the n-th recorded
    read did (a recording with read marks: ``%%bpf NAME --recording PATH``); the clock
    runs between reads (at ``speed``; without one it stands just before the next read)."""
    return Replay(path, speed=speed, name=name, follow=follow)


def has_reads(path) -> bool:
    """Whether the recording at ``path`` has read marks (follow="reads" can replay it)."""
    try:
        return bool(read_manifest(path).get("reads"))
    except ReplayError:
        return False


def cell_summary(obj: Replay, name: str, cell: str, why: str | None) -> str:
    """What a ``%%bpf NAME --replay``/``--recording`` cell shows: what is replayed, why
    not live, whether the cell's text is the recorded one, the pace and the maps."""
    lines = [f"{name}: replaying {obj.describe()}"]
    if why:
        lines.append(f"not live: {why}")
    recorded = (obj.source or "").strip()
    if cell.strip() and recorded and cell.strip() != recorded:
        lines.append("note: the cell's text differs from the recorded source: what you "
                     "see is what the recorded program did")
    pace = ("at once (clock at the end)" if obj.speed is None
            else f"at {obj.speed:g}x the recorded pace")
    if obj._follower is not None:
        pace = (f"following the notebook's {obj._follower.recorded} recorded reads"
                + ("" if obj.speed is None else f", at {obj.speed:g}x the recorded pace "
                   f"between them"))
    lines.append(f"{obj.duration:.1f} s recorded, shown {pace}; maps: "
                 f"{', '.join(m.name for m in obj.maps) or 'none'}")
    return "\n".join(lines)


def choose(path, rerecord: bool = False) -> tuple[str, str | None]:
    """What ``%%bpf NAME --recording PATH`` does here: ("replay", why not live) where
    this process cannot load BPF (can_load_here); else ("record", None) when PATH does
    not exist yet or ``rerecord``, or ("live", a note saying the recording is kept)."""
    can, why = can_load_here()
    if not can:
        return "replay", why
    if rerecord or not os.path.exists(path):
        return "record", None
    return "live", (f"live (this process can load BPF); recording {path} kept for "
                    f"machines that cannot (--rerecord replaces it)")


def start_recording(obj, path, seconds=None, interval=1.0) -> str:
    """Record a live object to ``path`` for --recording (bpfnb.record, with read
    marks); the note for the cell's summary. An object not loaded yet (--no-load) is
    recorded from its load() on."""
    from ..record import start as recordstart
    try:
        if obj.state == "opened":
            recordstart.record_at_load(obj, path, seconds=seconds, interval=interval,
                                  overwrite=True, reads=True)
            return (f"live (this process can load BPF): recording to {path} from "
                    f"{obj.name}.load() on, for machines that cannot")
        obj.record(path, seconds=seconds, interval=interval, overwrite=True, reads=True)
    except Exception as e:  # the program runs either way: say why there is no recording
        return f"not recorded to {path}: {type(e).__name__}: {e}"
    return f"live (this process can load BPF), recording to {path} for machines that cannot"


def can_load_here() -> tuple[bool, str]:
    """(True, "") when this process could compile and load a cell, else (False, why):
    no CAP_BPF (nor CAP_SYS_ADMIN), no clang, or no loadable libbpf. Cheap: it does not
    load a program (bpfnb.doctor does, for the full answer)."""
    caps = _effective_capabilities()
    if caps is None:
        return False, "cannot read this process's capabilities from /proc/self/status"
    if not (caps >> 39 & 1 or caps >> 21 & 1):   # CAP_BPF, CAP_SYS_ADMIN
        return False, "this process holds no CAP_BPF (nor root's CAP_SYS_ADMIN)"
    clang = os.environ.get("BPFNB_CLANG", "clang")
    if not shutil.which(clang):
        return False, f"no BPF C compiler ({clang}) on PATH"
    try:
        importlib.import_module("..libbpf", __name__)   # opens libbpf.so
    except ImportError as e:
        return False, str(e)
    return True, ""


def _effective_capabilities() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        return None
    return 0


def _ns(iso: str | None) -> int | None:
    """ISO-8601 (the manifest's started/stopped) -> ns since the epoch."""
    if not iso:
        return None
    try:
        t = datetime.fromisoformat(str(iso).replace("Z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return round(t.timestamp() * 1e9)


def _until(table, t_ns: int):
    """The rows of ``table`` with `_time` <= t_ns (rows are in receive order)."""
    return table.slice(0, rows_until(table, t_ns))
