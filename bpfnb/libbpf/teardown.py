"""Fast link teardown: programs stop at once, the kernel's waits happen in the background.

Destroying a link of a perf-event hook (tracepoint/, uprobe/, kprobe/, perf_event)
costs two kernel waits, measured on Linux 6.18 at ~35 ms each:

1. closing the BPF link takes the program out of the tracepoint's program array at
   once, then waits for an RCU-tasks-trace grace period before letting it go;
2. freeing the perf event, when it was the tracepoint's last, unregisters the probe
   and waits again, under a kernel-wide mutex: these waits queue one behind another,
   30 links cost ~2 s.

PERF_EVENT_IOC_DISABLE does not stop a tracepoint's BPF program (the kernel runs the
program array whether the event is enabled or not; measured: 100 of 100 openat calls
still counted after the ioctl). What stops it is step 1's first half. So
``destroy_links`` closes every link on a thread of its own, all at once, so that the
grace periods overlap into about one whatever the number of links, and waits for them
(the programs are gone from the kernel when the object closes). With ``wait=False``
(a re-run, where the user waits) it returns as soon as the kernel shows, for each
tracepoint, that the program has left its array (PERF_EVENT_IOC_QUERY_BPF on the perf
event): no event that happens after the call returns reaches the old program, and the
grace periods run out on those threads.
Each perf link holds a dup of its perf event's fd (``Link.perf_fds``), so closing the
link does not free the event (step 2): the dups go to one closer thread per process,
which frees them one by one soon after. ``wait()`` waits for all of it; at
interpreter exit it is given a bounded time (whatever is left, the kernel closes as
the process exits: no program survives its process).
"""

from __future__ import annotations

import atexit
import ctypes
import fcntl
import os
import queue
import struct
import _thread
import threading
import time

from ._lib import lib

# Sections whose libbpf attach makes a perf link (struct bpf_link_perf).
PERF_HOOKS = ("tracepoint/", "tp/", "kprobe/", "kretprobe/", "ksyscall/", "kretsyscall/",
              "uprobe", "uretprobe")
EXIT_WAIT = 10.0  # seconds the closer gets at interpreter exit
_PERF_EVENT = "anon_inode:[perf_event]"
_PERF_EVENT_IOC_QUERY_BPF = 0xC008240A  # _IOWR('$', 10, struct perf_event_query_bpf *)
_MAX_TRACE_PROGS = 64  # BPF_TRACE_MAX_PROGS: the most a tracepoint's array holds
_LINK_INFO_SIZE = 64  # enough of struct bpf_link_info for its first fields


def perf_fd_of(ptr: int, link_fd: int) -> list[int]:
    """A dup of the perf-event fd behind a libbpf perf link (tracepoint, kprobe,
    uprobe), for the link to hold; none when it cannot be told for sure.

    libbpf keeps that fd in its private ``struct bpf_link_perf`` (libbpf.c, the same
    from 0.4 to 1.5): a ``struct bpf_link`` (detach, dealloc, pin_path, int fd, bool
    disconnected: 32 bytes on 64-bit) then ``int perf_event_fd``. The layout is
    checked before it is trusted: the link's own fd must be where the struct keeps it
    and the next int must be an open perf event. Reading the struct costs no syscall
    (listing /proc/self/fd would open a file, which a program counting this process's
    openat calls would see). Kernels without BPF perf links give a link fd that is
    the perf fd itself: closing it is what detaches the program, so it is not kept.
    """
    if not ptr or link_fd < 0 or ctypes.sizeof(ctypes.c_void_p) != 8:
        return []
    fd_field = ctypes.c_int.from_address(ptr + 24).value
    perf_field = ctypes.c_int.from_address(ptr + 32).value
    if fd_field != link_fd or perf_field == link_fd or not _is_perf_event(perf_field):
        return []
    return [os.dup(perf_field)]


def _is_perf_event(fd: int) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == _PERF_EVENT
    except OSError:
        return False


def hold_perf_fd(pfd: int, link_fd: int) -> list[int]:
    """A dup of a perf fd the caller opened (attach_perf_event), as ``perf_fd_of``."""
    return [] if pfd == link_fd else [os.dup(pfd)]


def _close_all(fds):
    for fd in fds:
        os.close(fd)


def destroy_links(links, wait: bool = True):
    """Destroy links. Every program is detached when this returns (in-flight runs
    aside) and, with ``wait``, gone from the kernel once its object closes; without,
    the grace periods end on background threads soon after. Perf events are freed in
    the background either way (``wait()`` for all of it)."""
    links = [link for link in links if link.attached]
    slow = [link for link in links if link.perf_fds]
    for link in links:
        if not link.perf_fds:
            link._destroy_now()
    watched = []
    for link in slow:
        fds, link.perf_fds = link.perf_fds, []
        prog_id = _link_prog_id(link.fd)
        ptr, link._ptr = link._ptr, None
        thread = _Detach(ptr)
        try:
            _thread.start_new_thread(thread.run, ())
        except RuntimeError:  # no new threads (interpreter shutdown): here, in turn
            thread.run()
            _close_all(fds)
            continue
        watched.append((fds, prog_id, thread))
    if wait:  # the grace periods overlap: about one, whatever the number of links
        for _, _, thread in watched:
            thread.join()
    else:
        _wait_left(watched)
    for fds, _, thread in watched:
        closer.close_later(fds, after=thread)


class _Detach:
    """One bpf_link__destroy on a thread of its own. A bare thread, not a
    threading.Thread: start() would wait for the thread to be scheduled, and with 30
    links on a busy machine those waits add up to the cost this module removes."""

    def __init__(self, ptr: int):
        self.ptr = ptr
        self._done = _thread.allocate_lock()
        self._done.acquire()

    def run(self):
        try:
            lib.bpf_link__destroy(self.ptr)
        finally:
            self._done.release()

    def is_alive(self) -> bool:
        return self._done.locked()

    def join(self):
        with self._done:
            pass


def _wait_left(watched, timeout: float = 1.0):
    """Until each program has left its tracepoint's program array, or its link's
    thread is done (hooks the query does not cover, like uprobes, wait that long, as
    do all after ``timeout``)."""
    deadline = time.monotonic() + timeout
    pause = 0.0002
    while watched and time.monotonic() < deadline:
        watched = [(fds, prog_id, thread) for fds, prog_id, thread in watched
                   if thread.is_alive() and not _left(fds[0], prog_id)]
        if watched:
            time.sleep(pause)
            pause = min(pause * 2, 0.001)
    for _, _, thread in watched:
        thread.join()


def _left(perf_fd: int, prog_id: int | None) -> bool:
    """Whether program ``prog_id`` is no longer run by the tracepoint of ``perf_fd``;
    False when the kernel cannot tell (not a tracepoint event)."""
    if prog_id is None:
        return False
    query = ctypes.create_string_buffer(8 + 4 * _MAX_TRACE_PROGS)
    struct.pack_into("<I", query, 0, _MAX_TRACE_PROGS)
    try:
        fcntl.ioctl(perf_fd, _PERF_EVENT_IOC_QUERY_BPF, query)
    except OSError:
        return False
    count = min(struct.unpack_from("<I", query, 4)[0], _MAX_TRACE_PROGS)
    return prog_id not in struct.unpack_from(f"<{count}I", query, 8)


def _link_prog_id(link_fd: int) -> int | None:
    """The program id of a BPF link (struct bpf_link_info: type, id, prog_id)."""
    info = ctypes.create_string_buffer(_LINK_INFO_SIZE)
    size = ctypes.c_uint32(_LINK_INFO_SIZE)
    if link_fd < 0 or lib.bpf_obj_get_info_by_fd(link_fd, info, ctypes.byref(size)) < 0:
        return None
    return struct.unpack_from("<I", info, 8)[0]


def wait(timeout: float | None = None) -> bool:
    """Wait until every detach and every close handed over is done; False if
    ``timeout`` ran out first."""
    return closer.wait(timeout)


def pending() -> int:
    """Detaches and closes handed over and not done yet."""
    return closer.pending


class Closer:
    """A thread that closes the fds handed to it, in order (each batch once the
    thread detaching its link is done), and ends when none is left; ``wait`` for it.

    A bare thread, like the detaching ones: it is not a threading.Thread that code
    counting threads would see come and go, and never one the interpreter joins at
    exit beyond the bounded wait of _at_exit (a close stuck in the kernel must not
    hang it)."""

    def __init__(self):
        self._queue: queue.Queue = queue.Queue()
        self._running = False
        self._lock = threading.Lock()  # the queue's emptiness and the thread's life

    def close_later(self, fds, after: _Detach | None = None):
        if not fds:
            return
        with self._lock:
            if not self._running:
                try:
                    _thread.start_new_thread(self._run, ())
                except RuntimeError:  # no new threads (interpreter shutdown): here
                    if after is not None:
                        after.join()
                    _close_all(fds)
                    return
                self._running = True
            self._queue.put((after, fds))

    def _run(self):
        while True:
            with self._lock:
                if self._queue.empty():
                    self._running = False
                    return
                after, fds = self._queue.get_nowait()
            try:
                if after is not None:
                    after.join()
                for fd in fds:
                    try:
                        os.close(fd)
                    except OSError:
                        pass  # already closed: nothing left to free
            finally:
                self._queue.task_done()

    @property
    def pending(self) -> int:
        """Batches of fds handed over and not closed yet."""
        return self._queue.unfinished_tasks

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every fd handed over is closed; False if ``timeout`` ran out."""
        with self._queue.all_tasks_done:
            return self._queue.all_tasks_done.wait_for(
                lambda: not self._queue.unfinished_tasks, timeout)


closer = Closer()


# Registered when this module is first imported, before object.py's and the
# registry's own hooks: atexit runs it after them, so it also waits for the closes
# their teardown hands over.
@atexit.register
def _at_exit():
    wait(EXIT_WAIT)
