"""The threads reading ring buffers and perf buffers for event streams (bpfnb/stream.py):
one per map and record type, however many streams read it, each stream with a bounded
buffer of its own that the thread feeds (a ring buffer has one consumer position, so
two readers would split its records; a perf event array holds one reader's fds)."""

from __future__ import annotations

import collections
import os
import select
import threading

# How soon a waiting thread notices that its Object was destroyed.
POLL_INTERVAL = 0.1
# How long to_df() waits for the thread's read of what was committed before it.
FLUSH_TIMEOUT = 5.0


# Running collectors by (object, map, record dtype), for streams to share.
_shared: dict = {}
_shared_lock = threading.Lock()


def _joinable(obj, map, dtype):
    """The running collector of another stream of ``map`` with the same records."""
    with _shared_lock:
        c = _shared.get((id(obj), map.name, dtype))
        if c is not None and c._obj_ref() is obj and c.joinable():
            return c
    return None


def _share(obj, map, dtype, collector):
    key = (id(obj), map.name, dtype)
    with _shared_lock:
        _shared[key] = collector
    collector.forget = lambda: _unshare(key, collector)


def _unshare(key, collector):
    with _shared_lock:
        if _shared.get(key) is collector:
            del _shared[key]


class _Buffer:
    """One stream's rows: a bounded deque of runs, fed by its collector. ``base`` is
    the collector's row count when it joined and ``added`` the rows it received, so
    row i ever held here is the collector's row ``base + i`` (recordings relate a
    stream's rows to theirs by it: see ``last_span``)."""

    def __init__(self, max_rows: int, base: int):
        self.max_rows = max_rows
        self.base = base
        self.added = 0
        self.runs: collections.deque = collections.deque()
        self.rows = 0
        self.dropped = 0
        self._lock = threading.Lock()

    def add(self, runs: list):
        with self._lock:
            for run in runs:
                self.runs.append(run)
                self.rows += len(run)
                self.added += len(run)
            excess = self.rows - self.max_rows
            while excess > 0:
                first = self.runs[0]
                if len(first) <= excess:
                    self.runs.popleft()
                    cut = len(first)
                else:
                    self.runs[0] = first[excess:]
                    cut = excess
                self.rows -= cut
                self.dropped += cut
                excess -= cut

    def snapshot(self, last: int | None = None) -> list:
        """The runs held (the last ``last`` rows only, if given), oldest first."""
        with self._lock:
            runs = list(self.runs)
            end = self.base + self.added
            held = self.rows
        _spans.span = (self, end - (held if last is None else min(max(last, 0), held)), end)
        if last is None:
            return runs
        out, need = [], max(last, 0)
        for run in reversed(runs):
            if need <= 0:
                break
            out.append(run[-need:] if len(run) > need else run)
            need -= len(out[-1])
        return out[::-1]

    def take(self) -> list:
        """The runs held, oldest first, no longer held (``dropped`` stays)."""
        with self._lock:
            runs = list(self.runs)
            self.runs.clear()
            self.rows = 0
        return runs

    def clear(self):
        with self._lock:
            self.runs.clear()
            self.rows = 0
            self.dropped = 0


# The collector rows [first, end) the last snapshot() of this thread returned.
_spans = threading.local()


def last_span(stream) -> tuple[int, int] | None:
    """(first, end): the collector rows the last to_df()/tail() of ``stream`` in this
    thread returned, None if it made none."""
    span = getattr(_spans, "span", None)
    if span is None or span[0] is not stream._buffer:
        return None
    return span[1], span[2]


class _Collector:
    """The thread and the reader it owns, feeding the buffers of the streams joined."""

    def __init__(self, reader, obj_ref, name: str):
        self.reader = reader
        self.buffers: list[_Buffer] = []
        self.total = 0  # rows read
        self.error: BaseException | None = None
        self.forget = lambda: None  # set by _share: leave the shared table
        self._obj_ref = obj_ref
        self._lock = threading.Lock()
        # Held by the thread from a read() until its runs are added, and to close the
        # reader: with it, flush() sees either all of a read or none of it.
        self._read_lock = threading.Lock()
        self._stopping = False
        # flush(): tickets asked by readers, and the last one a read pass began after
        self._flush = threading.Condition()
        self._asked = 0
        self._done = 0
        self._finished = False
        self._wake_lock = threading.Lock()
        self._wake = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self):
        try:
            self.thread.start()
        except BaseException:
            self._release()
            raise

    def join(self, max_rows: int) -> _Buffer:
        with self._lock:
            buffer = _Buffer(max_rows, self.total)
            self.buffers.append(buffer)
        return buffer

    def joinable(self) -> bool:
        with self._lock:
            return bool(self.buffers) and not self._stopping and not self._finished

    def leave(self, buffer: _Buffer):
        """Stop feeding ``buffer``, once it has what was committed before: the last
        buffer stops the thread (which reads what is left into it)."""
        with self._lock:
            last = self.buffers == [buffer]
            if last:
                self._stopping = True  # no stream joins a collector about to stop
        if last:
            self.forget()
            self.stop()
        else:
            self.flush()
        with self._lock:
            if buffer in self.buffers:
                self.buffers.remove(buffer)

    def _object_alive(self) -> bool:
        obj = self._obj_ref()
        return obj is not None and obj.state != "destroyed"

    def _run(self):
        try:
            with select.epoll() as ep:
                ep.register(self.reader.fileno(), select.EPOLLIN)
                ep.register(self._wake, select.EPOLLIN)
                while not self._stopping and self._object_alive():
                    ticket = self._asked  # before the read: it covers this request
                    with self._read_lock:
                        runs = self.reader.read()
                        if runs:
                            self._add(runs)
                    if ticket != self._done:
                        with self._flush:
                            self._done = ticket
                            self._flush.notify_all()
                    if not runs and ep.poll(POLL_INTERVAL):
                        self._clear_wake()
            with self._read_lock:
                self._add(self.reader.read())  # what was written before the stop
        except Exception as e:  # surfaced by to_df(): a thread's exception is lost
            self.error = e
        finally:
            self.forget()
            self._release()
            with self._flush:  # nothing more will come: no reader waits
                self._finished = True
                self._flush.notify_all()

    def _clear_wake(self):
        with self._wake_lock:
            if self._wake >= 0:
                try:
                    os.eventfd_read(self._wake)
                except BlockingIOError:
                    pass

    def flush(self):
        """Wait until the thread has read the buffer once after this call began; at
        once when it holds nothing (the common case: no wake-up, no wait)."""
        if threading.current_thread() is self.thread:
            return
        with self._read_lock:
            if self._finished or not self.reader.pending():
                return
        with self._flush:
            if self._finished or not self.thread.is_alive():
                return
            self._asked += 1
            ticket = self._asked
        with self._wake_lock:
            if self._wake >= 0:
                os.eventfd_write(self._wake, 1)
        with self._flush:
            self._flush.wait_for(lambda: self._done >= ticket or self._finished,
                                 FLUSH_TIMEOUT)

    def _release(self):
        with self._read_lock:
            self.reader.close()
        with self._wake_lock:
            if self._wake >= 0:
                os.close(self._wake)
                self._wake = -1

    def _add(self, runs: list):
        with self._lock:
            for buffer in self.buffers:
                buffer.add(runs)
            self.total += sum(len(run) for run in runs)

    def stop(self):
        """Signal the thread and wait for it (unless called from the thread itself)."""
        with self._wake_lock:
            self._stopping = True
            if self._wake >= 0:
                os.eventfd_write(self._wake, 1)
        if self.thread.is_alive() and threading.current_thread() is not self.thread:
            self.thread.join()
