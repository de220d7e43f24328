"""A replay that follows the notebook's reads (``bpfnb.replay(path, follow="reads")``):
its n-th read (as bpfnb.follow counts them) answers with the n-th recorded read, and
its clock runs between reads without passing the next one.

Recorded reads are the rows of reads.parquet (see RECORDING.md, "Read marks"). While
the replay answers read i, every map and global shows the snapshot read i took
(``_snapshot``), and a stream the rows ``first..end`` of its recorded file that the
live stream held then. Between read i and read i+1 the clock runs at ``speed`` from
read i's time up to just before read i+1's (with no speed: it stands there), so a
dashboard animates and never shows what the notebook has not read yet; after the last
read it runs to the end. A read past the last recorded one answers as the last one
did, and says so once (a RuntimeWarning); so does a read of another target than the
recorded one (the notebook no longer does what it did live).
"""

from __future__ import annotations

import threading
import time
import warnings

import numpy as np


class ReadCursor:
    """The recorded reads, the count of the replay's reads, and the clock they set.
    ``thread``: the one whose reads count (the replay's maker's)."""

    def __init__(self, replay, table):
        order = np.argsort(table.column("_read").to_numpy(), kind="stable")
        table = table.take(order)
        self.times = table.column("_time").to_numpy().astype(np.int64)
        self.snapshots = table.column("_snapshot").to_numpy().astype(np.int64)
        self.first = table.column("first").to_numpy().astype(np.int64)
        self.end = table.column("end").to_numpy().astype(np.int64)
        self.targets = table.column("target").to_pylist()
        self.calls = table.column("call").to_pylist()
        self.thread = threading.get_ident()
        self.made = 0            # reads answered
        self.at: int | None = None   # the recorded read answered last
        self._wall = time.monotonic()
        self._pin: int | None = None   # the recorded read being answered
        self._noted: set = set()
        self._replay = replay

    @property
    def recorded(self) -> int:
        return len(self.times)

    def read(self, target, call, part, fn, args, kwargs):
        """bpfnb.follow's hook: answer the next read as the recorded one."""
        n, self.made = self.made, self.made + 1
        if not self.recorded:
            return fn()
        i = min(n, self.recorded - 1)
        if n >= self.recorded:
            self._note("more", f"{self._replay.describe()}: the notebook made more reads "
                               f"than the {self.recorded} recorded; read {n + 1} and "
                               f"those after answer as the last recorded one did")
        elif self.targets[i] != target:
            self._note("other", f"{self._replay.describe()}: read {n + 1} is of {target} "
                                f"({call}) but the recorded read {n + 1} was of "
                                f"{self.targets[i]} ({self.calls[i]}): the notebook no "
                                f"longer reads what it read live, so it may see other "
                                f"numbers")
        self.at, self._wall = i, time.monotonic()
        self._pin = i
        try:
            return fn()
        finally:
            self._pin = None

    def _note(self, kind: str, text: str):
        if kind not in self._noted:
            self._noted.add(kind)
            warnings.warn(text, RuntimeWarning, stacklevel=5)

    def pinned(self) -> int | None:
        """The recorded read answered now by this thread, or None."""
        return self._pin if threading.get_ident() == self.thread else None

    def snapshot(self) -> int | None:
        """The snapshot the read answered now took (None: none, or a stream's read)."""
        i = self.pinned()
        if i is None or self.snapshots[i] < 0:
            return None
        return int(self.snapshots[i])

    def window(self, map_name: str) -> tuple[int, int] | None:
        """Rows of the recorded stream ``map_name`` the read answered now held."""
        i = self.pinned()
        if i is None or self.targets[i] != f"streams/{map_name}" or self.first[i] < 0:
            return None
        return int(self.first[i]), int(self.end[i])

    def clock_ns(self, speed: float | None, start: int, end: int) -> int:
        """The replay clock: a read's time while it is answered; between reads from the
        last one's time at ``speed`` up to just before the next one's."""
        i = self.pinned()
        if i is not None:
            return int(self.times[i])
        nxt = 0 if self.at is None else self.at + 1
        base = start if self.at is None else int(self.times[self.at])
        cap = int(self.times[nxt]) - 1 if nxt < self.recorded else end
        if speed is None:
            return max(cap, base)
        return min(base + round((time.monotonic() - self._wall) * speed * 1e9), max(cap, base))
