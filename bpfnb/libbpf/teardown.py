"""Fast link teardown: programs stop at once, perf events are closed in the background.

Destroying a link of a perf-event hook (tracepoint/, uprobe/, kprobe/, perf_event)
costs two kernel waits, measured on Linux 6.18 at ~35 ms each:

1. closing the BPF link detaches the program (it leaves the tracepoint's program
   array at once) and then waits for an RCU-tasks-trace grace period;
2. freeing the perf event unregisters its probe and waits again, under a kernel-wide
   mutex, so these waits queue up one behind the other: 30 links cost ~2 s.

PERF_EVENT_IOC_DISABLE does not stop a tracepoint's BPF program (the kernel runs the
program array whether the event is enabled or not; measured: 100 of 100 openat calls
still counted after the ioctl), so the program is stopped by wait 1, and wait 1 is
what ``destroy_links`` keeps on the caller's path: it detaches every link on its own
thread at the same time, so the waits overlap into about one grace period whatever
the number of links. Wait 2 is moved off that path: each perf link holds a dup of its
perf event's fd (``Link.perf_fds``), so the link's detach does not free the event;
the dups go to one closer thread per process, which frees them one by one soon after.
At interpreter exit the closer is given a bounded time to finish; whatever it has not
closed by then, the kernel closes as the process exits (no program is left: the
program was detached before its fd reached the closer).
"""

from __future__ import annotations

import atexit
import ctypes
import os
import queue
import threading

# Sections whose libbpf attach makes a perf link (struct bpf_link_perf).
PERF_HOOKS = ("tracepoint/", "tp/", "kprobe/", "kretprobe/", "ksyscall/", "kretsyscall/",
              "uprobe", "uretprobe")
EXIT_WAIT = 10.0  # seconds the closer gets at interpreter exit
_PERF_EVENT = "anon_inode:[perf_event]"
_MAX_THREADS = 64  # detaching threads at once; more do not overlap better


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
    """A dup of a perf fd the caller opened (attach_perf_event), as ``new_perf_fds``."""
    return [] if pfd == link_fd else [os.dup(pfd)]


def _close_all(fds):
    for fd in fds:
        os.close(fd)


def destroy_links(links):
    """Destroy links; every program is detached when this returns, the perf events
    behind them are freed by the closer thread soon after."""
    links = [link for link in links if link.attached]
    slow = [link for link in links if link.perf_fds]
    for link in links:
        if not link.perf_fds:
            link._destroy_now()
    for start in range(0, len(slow), _MAX_THREADS):
        batch = slow[start:start + _MAX_THREADS]
        if len(batch) == 1:
            batch[0]._destroy_now()
            continue
        threads = []
        for link in batch:
            t = threading.Thread(target=link._destroy_now, name="bpfnb-detach")
            try:
                t.start()
            except RuntimeError:  # no new threads (interpreter shutdown): one by one
                link._destroy_now()
                continue
            threads.append(t)
        for t in threads:
            t.join()
    for link in slow:
        fds, link.perf_fds = link.perf_fds, []
        closer.close_later(fds)


class Closer:
    """One thread that closes fds handed to it, in order; ``wait`` for it to finish."""

    def __init__(self):
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def close_later(self, fds):
        if not fds:
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                # daemon: a close stuck in the kernel must not hang the interpreter's
                # exit beyond the bounded wait of _at_exit.
                thread = threading.Thread(target=self._run, name="bpfnb-closer",
                                          daemon=True)
                try:
                    thread.start()
                except RuntimeError:  # no new threads (interpreter shutdown)
                    _close_all(fds)
                    return
                self._thread = thread
        for fd in fds:
            self._queue.put(fd)

    def _run(self):
        while True:
            fd = self._queue.get()
            try:
                os.close(fd)
            except OSError:
                pass  # already closed: nothing left to free
            finally:
                self._queue.task_done()

    @property
    def pending(self) -> int:
        """Fds handed over and not closed yet."""
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
    closer.wait(EXIT_WAIT)
