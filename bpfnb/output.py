"""Each object's own bpf_printk output: BPF streams where they work, else trace_pipe.

``obj.output()`` is a DataFrame of the lines the object's programs printed (the last
``MAX_LINES``; ``df.attrs["dropped"]`` counts older ones let go). In a notebook the
magic also shows them under the ``%%bpf`` cell while the program runs.

Two routes, chosen at run time
------------------------------
- **BPF streams** (kernel 6.17+): each program has its own stdout and stderr, read
  through BPF_PROG_STREAM_READ_BY_FD (``libbpf/progstream.py``). A probe, run once per
  process (``streams_verdict()``), loads a syscall program that writes one line with
  the kfunc and reads it back. On this kernel (6.18) the kfunc exists and the verifier
  accepts it, but it returns -ENOMEM (tracepoint, raw_tp and syscall programs) and
  reads return 0 bytes, so the verdict is "not working" and the trace_pipe route is
  used. Where the probe passes, ``cflags()`` makes bpf_printk write to the program's
  stdout stream, and stderr (what the kernel reports about the program) is shown
  too; columns are then time, program, stream, text.
- **trace_pipe**: bpf_printk goes to one trace event shared by every program on the
  machine. bpfnb compiles cells and .c files with ``bpf/bpf/bpf_helpers.h`` first on
  the include path, whose bpf_printk puts the fixed-width placeholder
  ``bpfnb:________ `` (``TAG_PLACEHOLDER``) before each format. Formats are
  ``static const char ____fmt[]`` (``___fmt[]`` above 3 arguments, where bpf_printk
  switches to bpf_trace_vprintk); clang 14 puts them in ``.rodata``, and libbpf 1.1.2
  gives the object an initial image of it, writable until load. ``tag(obj)``
  overwrites each placeholder there with 8 random characters unique to that *loaded
  object*, so two objects from one cached .o (two identical cells, or one cell loaded
  twice) still differ. One reader thread per process (``tracepipe.py``: bpfnb's own
  tracefs instance, filtered to tagged lines) hands each object the lines with its
  tag, tag removed; lines of other programs (untagged, or another process's tags)
  are never shown. Not tagged: bpf_trace_printk called directly, a source built
  with BPF_NO_GLOBAL_DATA (its formats are on the stack) or whose own ``-I`` has a
  bpf/bpf_helpers.h; ``obj.output()`` of an object with no tag at all says so in
  ``attrs["note"]``. Columns: time, pid, comm, cpu, text; ``pid`` and
  ``comm`` are the task's as trace_pipe gives them (the thread's id), ``time`` is
  wall clock (from the instance's mono clock; trace-clock seconds where the global
  pipe is read).

Lifetimes: the reader starts when the first tagged object loads (before its programs
can run) and stops, removing the instance, when the last one is destroyed. Each
object keeps at most ``MAX_LINES`` lines; listeners (the magic's display) get batches
at most every ``DELIVER_EVERY`` seconds, at most ``DELIVER_MAX`` lines each, the rest
counted as missed.
"""

from __future__ import annotations

import collections
import ctypes
import errno
import os
import secrets
import select
import string
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Callable

from .libbpf import progstream
from .libbpf._lib import lib

TAG_PLACEHOLDER = b"bpfnb:________ "
_TAG_AT, _TAG_LEN = 6, 8              # the underscores
_TAG_CHARS = string.ascii_lowercase + string.digits
MAX_LINES = 10_000                    # kept per object
DELIVER_EVERY = 0.2                   # seconds between batches to a listener
DELIVER_MAX = 200                     # lines per batch
_POLL = 0.2                           # the reader's longest wait: how soon it stops
_GATHER = 0.05                        # pause after lines came, so they batch
_STREAM_READ = 64 * 1024


# --- the streams probe ----------------------------------------------------------

@dataclass(frozen=True)
class StreamsVerdict:
    working: bool
    reason: str                 # what the probe saw, for people
    kfunc: str | None = None    # the kernel's name of the stream printk kfunc

    def __str__(self):
        return f"BPF streams {'work' if self.working else 'do not work'}: {self.reason}"


_PROBE = r"""
char LICENSE[] SEC("license") = "GPL";
extern int %(kfunc)s(int stream_id, const char *fmt__str, const void *args,
                     __u32 len__sz, void *aux__prog) __ksym;
int ret = 1;

SEC("syscall")
int bpfnb_stream_probe(void *ctx)
{
    static const char fmt[] = "bpfnb stream probe %%d\n";
    unsigned long long args[1] = {%(magic)d};

    ret = %(kfunc)s(1, fmt, args, sizeof(args), (void *)0);
    return 0;
}
"""
_PROBE_MAGIC = 4242
_KFUNCS = ("bpf_stream_vprintk_impl", "bpf_stream_vprintk")  # 6.18+, 6.17
_verdict: StreamsVerdict | None = None
_verdict_lock = threading.Lock()


def _stream_kfunc() -> str | None:
    """The stream printk kfunc's name in the running kernel's BTF, if any."""
    try:
        with open("/sys/kernel/btf/vmlinux", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return next((k for k in _KFUNCS if b"\0" + k.encode() + b"\0" in data), None)


def streams_verdict() -> StreamsVerdict:
    """Whether BPF streams carry printk on this machine: probed once per process."""
    global _verdict
    with _verdict_lock:
        if _verdict is None:
            _verdict = _probe()
        return _verdict


def _probe() -> StreamsVerdict:
    kfunc = _stream_kfunc()
    if kfunc is None:
        return StreamsVerdict(False, "the kernel has no stream printk kfunc (needs 6.17+)")
    from . import build, libbpf
    try:
        path = build.compile(_PROBE % {"kfunc": kfunc, "magic": _PROBE_MAGIC},
                             filename="<bpfnb stream probe>")
        obj = libbpf.Object(path, name="bpfnb_probe")
    except (build.CompileError, build.ClangNotFound, OSError, libbpf.BPFError) as e:
        return StreamsVerdict(False, f"the probe could not be built: {e}", kfunc)
    try:
        try:
            obj.load()
        except libbpf.BPFError as e:
            return StreamsVerdict(False, f"the kernel refused the probe: "
                                         f"{str(e).splitlines()[0]}", kfunc)
        fd = obj.progs.bpfnb_stream_probe.fd
        try:
            progstream.run_once(fd)
            ret = obj.data.ret
            got = progstream.read_stream(fd, progstream.BPF_STDOUT)
        except OSError as e:
            return StreamsVerdict(False, f"running or reading the probe failed: {e}", kfunc)
        if ret != 0:
            name = _errno_name(-ret)
            return StreamsVerdict(False, f"{kfunc} returned {ret} ({name}) in the probe; "
                                         f"bpf_printk goes to trace_pipe", kfunc)
        want = f"bpfnb stream probe {_PROBE_MAGIC}".encode()
        if want not in got:
            return StreamsVerdict(False, f"{kfunc} returned 0 but the stream read gave "
                                         f"{len(got)} bytes, not the probe's line", kfunc)
        return StreamsVerdict(True, f"{kfunc} wrote the probe's line and it was read back",
                              kfunc)
    finally:
        obj.destroy()


def _errno_name(err: int) -> str:
    return errno.errorcode.get(err, f"errno {err}")


def cflags(source: str | None = None) -> list[str]:
    """clang flags that send bpf_printk to BPF streams, where the probe says they work.
    C text that never names bpf_printk needs none (and costs no probe)."""
    if isinstance(source, str) and "bpf_printk" not in source:
        return []
    v = streams_verdict()
    return [f"-DBPFNB_PRINTK_STREAM={v.kfunc}"] if v.working else []


# --- one object's lines ---------------------------------------------------------

class Output:
    """The printk lines of one object: kept (bounded), and handed to listeners."""

    def __init__(self, name: str, tag: str | None, route: str, note: str = ""):
        self.name, self.tag, self.route, self.note = name, tag, route, note
        self.lines: collections.deque = collections.deque(maxlen=MAX_LINES)
        self.dropped = 0
        self.received = 0
        # reentrant: garbage collection may destroy an object (and so release it) on
        # the reader thread while it holds this lock
        self._lock = threading.RLock()
        self._listeners: list[Callable] = []
        self._pending: list = []
        self._missed = 0
        self._last_delivery = 0.0
        self.wall_clock = True
        self.prog_fds: list[tuple[str, int]] = []  # streams route: (program, own dup fd)
        self.registered = False  # read by the hub (from load on)
        self.closed = False

    def add(self, rows: list):
        with self._lock:
            over = len(self.lines) + len(rows) - self.lines.maxlen
            if over > 0:
                self.dropped += over
            self.lines.extend(rows)
            self.received += len(rows)
            if self._listeners:
                room = DELIVER_MAX - len(self._pending)
                self._pending.extend(rows[:max(room, 0)])
                self._missed += max(len(rows) - max(room, 0), 0)

    def subscribe(self, callback: Callable[[list[str], int], None]) -> Callable[[], None]:
        """``callback(texts, missed)`` from the reader thread, at most every
        DELIVER_EVERY s; returns the function that unsubscribes."""
        with self._lock:
            self._listeners.append(callback)

        def unsubscribe():
            with self._lock:
                if callback in self._listeners:
                    self._listeners.remove(callback)
        return unsubscribe

    def deliver(self, now: float, force: bool = False):
        with self._lock:
            if not self._listeners or not (self._pending or self._missed):
                return
            if not force and now - self._last_delivery < DELIVER_EVERY:
                return
            batch, missed = [r[-1] for r in self._pending], self._missed
            self._pending, self._missed, self._last_delivery = [], 0, now
            listeners = list(self._listeners)
        for callback in listeners:
            try:
                callback(batch, missed)
            except Exception as e:  # a broken display must not stop the reader
                warnings.warn(f"printk listener of {self.name!r} failed: {e!r}",
                              RuntimeWarning)

    def frame(self):
        import pandas as pd
        with self._lock:
            rows = list(self.lines)
            dropped = self.dropped
        if self.prog_fds or self.route.startswith("streams"):
            df = pd.DataFrame(rows, columns=["time", "program", "stream", "text"])
            df["time"] = pd.to_datetime(df["time"], unit="s")
        else:
            df = pd.DataFrame(rows, columns=["time", "pid", "comm", "cpu", "text"])
            if self.wall_clock:
                df["time"] = pd.to_datetime(df["time"], unit="s")
            df = df.astype({"pid": "int64", "cpu": "int64"})
        df.attrs.update(route=self.route, dropped=dropped, received=self.received)
        lost = _hub.kernel_lost()
        if lost is not None:
            df.attrs["kernel_lost"] = lost
        if self.note:
            df.attrs["note"] = self.note
        if dropped:
            warnings.warn(f"{self.name}.output(): {dropped} older lines were dropped "
                          f"(the last {self.lines.maxlen} are kept)", RuntimeWarning,
                          stacklevel=3)
        return df


# --- tagging and lifetimes (called by bpfnb.loader) -------------------------------

def tag(obj) -> Output:
    """Give a just-opened object its Output: a tag patched into its printk formats
    (trace_pipe route) or, where streams work and it has no tag, the streams route."""
    if getattr(obj, "_output", None) is not None:
        return obj._output
    patched = 0
    tag_ = _hub.new_tag()
    for ptr, size in _rodata_images(obj):
        patched += _patch(ptr, size, tag_.encode())
    name = obj.name
    if patched:
        out = Output(name, tag_, "trace_pipe")
    else:
        _hub.free_tag(tag_)
        if streams_verdict().working:
            out = Output(name, None, "streams")
        else:
            out = Output(name, None, "none",
                         "no bpfnb-tagged bpf_printk in this object (none at all, or built "
                         "outside bpfnb): any printk lines are only in the global trace_pipe")
    obj._output = out
    return out


def loaded(obj):
    """After load, before any program can run: start reading for the object (the
    reader, and bpfnb's tracefs instance, start with the first such object)."""
    out = getattr(obj, "_output", None)
    if out is None or out.closed or out.registered:
        return
    if out.tag is not None:
        try:
            _hub.add(out)
        except OSError as e:
            where = f" ({e.filename})" if e.filename else ""
            hint = ("; reading it needs root (tracefs is mode 0700)"
                    if e.errno in (errno.EACCES, errno.EPERM) else "")
            out.route = "unavailable"
            out.note = f"cannot read trace_pipe{where}: {e.strerror or e}{hint}"
    elif out.route == "streams":
        # our own duplicates of the program fds: valid until release() closes them
        out.prog_fds = [(p.name, os.dup(p.fd)) for p in obj.progs if p.autoload]
        _hub.add(out)


def release(obj):
    """The object is being destroyed: stop its delivery (and the reader if last)."""
    out = obj.__dict__.get("_output")
    if out is not None and not out.closed:
        _hub.remove(out)


def subscribe(obj, callback: Callable[[list[str], int], None]):
    """``callback(texts, missed)`` with the object's new lines, from the reader thread
    (see Output.subscribe) -> the function that unsubscribes; None when the object's
    lines cannot be read (its Output's ``note`` says why)."""
    out = getattr(obj, "_output", None)
    if out is None or out.closed or out.route in ("none", "unavailable"):
        return None
    return out.subscribe(callback)


def describe(obj) -> str:
    """Where the object's printk lines come from, or why there are none, for people."""
    out = getattr(obj, "_output", None)
    if out is None:
        return "not opened by bpfnb.open: no printk route"
    return out.note or out.route


def frame(obj):
    """``obj.output()``: the object's printk lines as a DataFrame."""
    out = getattr(obj, "_output", None)
    if out is None:
        out = Output(obj.name, None, "none", "this object was not opened by bpfnb.open")
    return out.frame()


def _rodata_images(obj):
    """(address, size) of the initial image of each .rodata* map, before load."""
    if obj.state != "opened":
        return
    m = lib.bpf_object__next_map(obj._ptr, None)
    while m:
        name = (lib.bpf_map__name(m) or b"").decode()
        if lib.bpf_map__is_internal(m) and ".rodata" in name:
            size = ctypes.c_size_t()
            ptr = lib.bpf_map__initial_value(m, ctypes.byref(size))
            if ptr and size.value:
                yield ptr, size.value
        m = lib.bpf_object__next_map(obj._ptr, m)


def _patch(ptr: int, size: int, tag_: bytes) -> int:
    """Overwrite every placeholder in one image; how many."""
    image = (ctypes.c_char * size).from_address(ptr)
    data = bytes(image)
    count, at = 0, data.find(TAG_PLACEHOLDER)
    while at >= 0:
        start = at + _TAG_AT
        ctypes.memmove(ptr + start, tag_, _TAG_LEN)
        count += 1
        at = data.find(TAG_PLACEHOLDER, at + len(TAG_PLACEHOLDER))
    return count


# --- the reader -------------------------------------------------------------------

class _Hub:
    """One reader thread per process, running while some object wants output."""

    def __init__(self):
        self._lock = threading.RLock()       # sinks (reentrant: see Output._lock)
        self._life = threading.Lock()        # start and stop
        self._tagged: dict[str, Output] = {}  # read from now on, by tag
        self._tags: set[str] = set()          # given out to live objects
        self._streams: list[Output] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake: tuple[int, int] | None = None
        self.pipe = None
        self.foreign = 0                     # lines with no tag of ours
        self.errors = 0                      # reads that failed

    def new_tag(self) -> str:
        """A tag no live object of this process has. Every bpfnb process's instance
        gets every tagged line; one of another process's objects has the same tag
        with a chance of 1 in 36**8 (2.8e12)."""
        while True:
            t = "".join(secrets.choice(_TAG_CHARS) for _ in range(_TAG_LEN))
            with self._lock:
                if t not in self._tags:
                    self._tags.add(t)
                    return t

    def free_tag(self, t: str):
        with self._lock:
            self._tags.discard(t)

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def kernel_lost(self) -> int | None:
        pipe = self.pipe
        return pipe.overrun() if pipe is not None else None

    def add(self, out: Output):
        with self._life:
            if out.tag is not None and self.pipe is None:
                from .tracepipe import TracePipe
                self.pipe = TracePipe.open()  # before the object's programs can run
            with self._lock:
                out.registered = True
                if out.tag is not None:
                    out.wall_clock = self.pipe.mono
                    out.route = f"trace_pipe ({self.pipe.route}: {self.pipe.path})"
                    self._tagged[out.tag] = out
                else:
                    self._streams.append(out)
            if self._thread is None:
                self._stop.clear()
                self._wake = os.pipe()
                self._thread = threading.Thread(target=self._run, name="bpfnb-output",
                                                daemon=True)
                self._thread.start()

    def remove(self, out: Output):
        out.deliver(time.monotonic(), force=True)  # what came in the last period
        with self._life:
            with self._lock:
                if out.tag is not None:
                    self._tagged.pop(out.tag, None)
                    self._tags.discard(out.tag)
                elif out in self._streams:
                    self._streams.remove(out)
                idle = not self._tagged and not self._streams
            with out._lock:
                out.closed = True
                out._listeners.clear()
                for _, fd in out.prog_fds:
                    os.close(fd)
                out.prog_fds = []
            if idle:
                self._shutdown()

    def _shutdown(self):
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            os.write(self._wake[1], b"x")
            if thread is not threading.current_thread():
                thread.join(timeout=5)
            for fd in self._wake:
                os.close(fd)
            self._wake = None
        if self.pipe is not None:
            self.pipe.close()
            self.pipe = None

    def _run(self):
        wake = self._wake[0]
        while not self._stop.is_set():
            pipe = self.pipe  # opened late when the first objects were streams-only
            try:
                select.select([wake] + ([pipe.fd] if pipe is not None else []), [], [],
                              _POLL)
            except (InterruptedError, OSError):
                pass
            if self._stop.is_set():
                break
            try:
                got = self._read_pipe(pipe) if pipe is not None else 0
                got += self._read_streams()
            except Exception as e:  # keep serving the others; say it once
                if not self.errors:
                    warnings.warn(f"bpfnb's printk reader: {e!r}", RuntimeWarning)
                self.errors += 1
                self._stop.wait(_POLL)
                continue
            now = time.monotonic()
            with self._lock:
                sinks = list(self._tagged.values()) + list(self._streams)
            for out in sinks:
                out.deliver(now)
            if got:
                self._stop.wait(_GATHER)
        now = time.monotonic()
        for out in list(self._tagged.values()) + list(self._streams):
            out.deliver(now, force=True)

    def _read_pipe(self, pipe) -> int:
        lines = pipe.read()
        if not lines:
            return 0
        offset = time.time() - time.monotonic() if pipe.mono else 0.0
        by_sink: dict[str, list] = {}
        foreign = 0
        for line in lines:
            msg = line.msg
            t = msg[_TAG_AT:_TAG_AT + _TAG_LEN]
            if (msg.startswith("bpfnb:") and msg[_TAG_AT + _TAG_LEN:_TAG_AT + _TAG_LEN + 1]
                    == " " and t in self._tagged):
                by_sink.setdefault(t, []).append(
                    (line.ts + offset, line.pid, line.comm, line.cpu,
                     msg[len(TAG_PLACEHOLDER):]))
            else:
                foreign += 1
        self.foreign += foreign
        with self._lock:
            targets = [(self._tagged.get(t), rows) for t, rows in by_sink.items()]
        for out, rows in targets:
            if out is not None:
                out.add(rows)
        return len(lines)

    def _read_streams(self) -> int:
        with self._lock:
            sinks = list(self._streams)
        got = 0
        for out in sinks:
            with out._lock:
                if out.closed:
                    continue
                reads = []
                for prog, fd in out.prog_fds:
                    for sid, stream in ((progstream.BPF_STDOUT, "stdout"),
                                        (progstream.BPF_STDERR, "stderr")):
                        try:
                            data = progstream.read_stream(fd, sid, _STREAM_READ)
                        except OSError:
                            continue
                        if data:
                            reads.append((prog, stream, data))
            now = time.time()
            rows = [(now, prog, stream, text) for prog, stream, data in reads
                    for text in data.decode(errors="replace").splitlines()]
            if rows:
                out.add(rows)
                got += len(rows)
        return got


_hub = _Hub()


def reader_thread() -> threading.Thread | None:
    """The process's reader thread, or None when no object wants output."""
    return _hub.thread
