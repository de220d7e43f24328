"""bpf_printk lines from trace_pipe: bpfnb's own tracefs instance, else the global pipe.

bpf_trace_printk and bpf_trace_vprintk emit the trace event bpf_trace/bpf_trace_printk.
Trace events can be enabled in any tracefs instance, and every instance where the event
is enabled gets its own copy of each line. So bpfnb makes one instance per process,
``instances/bpfnb-<pid namespace>-<pid>``, enables the event there with a filter that keeps only lines
of tagged formats (``bpf_string ~ "bpfnb:*"``), and reads that instance's trace_pipe:
it takes no line from ``cat /sys/kernel/tracing/trace_pipe`` or any other reader, and
they take none from it. The instance runs on the ``mono`` trace clock (CLOCK_MONOTONIC,
so times convert to wall clock), with a bounded buffer (``BUFFER_KB`` per CPU) whose
overruns the kernel counts. Where no instance can be made (tracefs read-only, not
root), the global trace_pipe is read instead; like every trace_pipe reader it then
takes its lines from other readers of that pipe.

An instance is a directory, not a file descriptor: the kernel does not remove it when
the process dies. ``close()`` removes it; ``open()`` removes those of processes that
are gone.
"""

from __future__ import annotations

import errno
import os
import re
import time
from typing import NamedTuple

from .libbpf import sysfs

INSTANCE_PREFIX = "bpfnb-"
BUFFER_KB = 1024             # per CPU, for this process's instance
READ_BYTES = 1 << 20         # at most per read() of this module
_MAX_PARTIAL = 64 * 1024     # a line longer than this without "\n" is cut
_EVENT = "events/bpf_trace/bpf_trace_printk"
_FILTER = 'bpf_string ~ "bpfnb:*"'

# "   python3-8819    [001] ...21   534.422054: bpf_trace_printk: text", also with the
# record-tgid column "(  8819)" and without the irq-info flags.
_LINE = re.compile(r"^\s*(?P<comm>.*?)-(?P<pid>\d+)\s+(?:\(\s*[\d-]+\)\s+)?"
                   r"\[(?P<cpu>\d+)\]\s+(?:[^\s\d]\S*\s+)?(?P<ts>\d+\.\d+):\s+"
                   r"(?P<event>[\w:]+):\s(?P<msg>.*)$")


class Line(NamedTuple):
    ts: float       # trace clock seconds (CLOCK_MONOTONIC on bpfnb's instance)
    pid: int
    comm: str
    cpu: int
    msg: str


def _tracefs_roots() -> list[str]:
    return [sysfs.TRACEFS, "/sys/kernel/debug/tracing"]


def _write(path: str, value: str):
    with open(path, "w") as f:
        f.write(value)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pid_namespace() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def instance_name(pid: int | None = None) -> str:
    """``bpfnb-<pid namespace>-<pid>``: the namespace keeps a container sharing the
    host's tracefs from taking another namespace's live pid for a dead one."""
    return f"{INSTANCE_PREFIX}{_pid_namespace()}-{os.getpid() if pid is None else pid}"


def remove_stale_instances(root: str) -> list[str]:
    """Remove bpfnb instances of processes (of our pid namespace) that no longer
    exist; their names."""
    gone = []
    try:
        names = os.listdir(os.path.join(root, "instances"))
    except OSError:
        return gone
    ns = _pid_namespace()
    for name in names:
        m = re.fullmatch(re.escape(INSTANCE_PREFIX) + r"(\d+)-(\d+)", name)
        if m is None or int(m.group(1)) != ns:
            continue
        pid = int(m.group(2))
        if pid != os.getpid() and not _pid_alive(pid):
            try:
                os.rmdir(os.path.join(root, "instances", name))
                gone.append(name)
            except OSError:
                pass
    return gone


class TracePipe:
    """One open trace_pipe. ``route`` says which: "instance" (bpfnb's own, gets only
    tagged lines) or "global" (shared with every other reader of it)."""

    def __init__(self, path: str, route: str, instance: str | None, mono: bool):
        self.path, self.route, self.instance, self.mono = path, route, instance, mono
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        self._partial = b""

    @classmethod
    def open(cls) -> "TracePipe":
        """Make and open this process's instance, else open the global trace_pipe.
        Raises OSError (with what to do) when there is no tracefs at all."""
        _, how = sysfs.ensure_tracefs()
        roots = [r for r in _tracefs_roots() if os.path.exists(os.path.join(r, "trace_pipe"))]
        if not roots:
            raise OSError(errno.ENOENT, f"bpf_printk lines cannot be read: {how}")
        root = roots[0]
        remove_stale_instances(root)
        instance = os.path.join(root, "instances", instance_name())
        try:
            try:
                os.mkdir(instance)
            except FileExistsError:
                pass  # ours, left by an earlier reader of this process
            _write(os.path.join(instance, "buffer_size_kb"), str(BUFFER_KB))
            _write(os.path.join(instance, "trace_clock"), "mono")
            if os.path.exists(os.path.join(instance, "buffer_percent")):
                _write(os.path.join(instance, "buffer_percent"), "0")  # poll wakes per line
            _write(os.path.join(instance, _EVENT, "filter"), _FILTER)
            _write(os.path.join(instance, _EVENT, "enable"), "1")
            return cls(os.path.join(instance, "trace_pipe"), "instance", instance, True)
        except OSError:
            _rmdir(instance)
        return cls(os.path.join(root, "trace_pipe"), "global", None,
                   _clock(root) == "mono")

    def read(self) -> list[Line]:
        """The lines that came since the last read, at most about READ_BYTES of them
        (never blocks). trace_pipe gives at most a page per read(): read on until it
        is empty."""
        chunks, size = [self._partial], 0
        while size < READ_BYTES:
            try:
                chunk = os.read(self.fd, READ_BYTES - size)
            except (BlockingIOError, InterruptedError):
                break
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
        cut = data.rfind(b"\n") + 1
        self._partial = data[cut:][-_MAX_PARTIAL:]
        return parse(data[:cut].decode(errors="replace"))

    def overrun(self) -> int | None:
        """Lines the kernel overwrote in this instance's buffer (all its objects), or
        None for the global pipe (other programs' lines count there too)."""
        if self.instance is None:
            return None
        total = 0
        per_cpu = os.path.join(self.instance, "per_cpu")
        try:
            cpus = os.listdir(per_cpu)
        except OSError:
            return None
        for cpu in cpus:
            try:
                with open(os.path.join(per_cpu, cpu, "stats")) as f:
                    for row in f:
                        if row.startswith("overrun:"):
                            total += int(row.split()[1])
            except (OSError, ValueError, IndexError):
                return None
        return total

    def close(self):
        """Close the pipe and remove the instance."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.instance is not None:
            _rmdir(self.instance)
            self.instance = None


def _rmdir(path: str):
    # The kernel refuses (EBUSY) while a reader still holds the pipe: retry briefly.
    for _ in range(20):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY:
                return
            time.sleep(0.01)


def _clock(root: str) -> str | None:
    try:
        with open(os.path.join(root, "trace_clock")) as f:
            m = re.search(r"\[(\w+)\]", f.read())
    except OSError:
        return None
    return m.group(1) if m else None


def parse(text: str) -> list[Line]:
    """trace_pipe text -> Lines of the bpf_trace_printk event. A format with "\\n" in
    it spans several lines: those without a header continue the line before."""
    out: list[Line] = []
    for row in text.split("\n"):
        m = _LINE.match(row)
        if m is None:
            if row and out and out[-1] is not None:  # the rest of a multi-line message
                out[-1] = out[-1]._replace(msg=f"{out[-1].msg}\n{row}")
            continue
        if m["event"] != "bpf_trace_printk":
            out.append(None)  # another event (the global pipe): continuations are its
            continue
        out.append(Line(float(m["ts"]), int(m["pid"]), m["comm"], int(m["cpu"]), m["msg"]))
    return [line for line in out if line is not None]
